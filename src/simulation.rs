//! One simulation built from a config: system, device, batched state, force
//! provider, integrator and (optionally) replica exchange — the "Context" in
//! OpenMM's terms. It knows nothing of files; `run` drives it and reports.

use std::path::Path;

use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use crate::config::{
    CompiledPolicy, Config, IntegratorKind, ModelKind, VelocityInit, RESUMABLE_KEYS,
};
use crate::device::{describe, parse_device, resolve, DeviceSpec};
use crate::error::{Error, Result};
use crate::force::{
    update_forces, ForceProvider, Harmonic, LennardJones, LennardJonesPairs, PairForces,
    TorchScriptModel,
};
use crate::integrate::{degrees_of_freedom, Integrator, Langevin, VelocityVerlet};
use crate::io::checkpoint::{Checkpoint, CheckpointHeader, ReporterPositions};
use crate::minimize::{fire_with_progress, FireOptions, MinimizeReport};
use crate::parallel::{Communicator, Team};
use crate::reporters::{HostFrame, Wants};
use crate::rng::{splitmix64, CounterRng};
use crate::sampling::moves::{MoveSetup, Pick};
use crate::sampling::{
    BarostatMove, ExchangeOutcome, MonteCarloBarostat, MoveReport, MoveSet, ReplicaExchange,
    ReplicaExchangeMove, VolumeMove,
};
use crate::state::{to_host_f64, BatchState};
use crate::system::cell::Cell;
use crate::system::chemistry::element_symbol;
use crate::system::Molecule;
use crate::units::AMU_PER_A3_IN_G_PER_CM3;

/// Everything a run needs, built and checked from a config.
pub struct Simulation {
    pub config: Config,
    pub molecule: Molecule,
    pub device: Device,
    pub state: BatchState,
    pub force: Box<dyn ForceProvider>,
    pub integrator: Box<dyn Integrator>,
    /// Degrees of freedom per member for the kinetic temperature.
    pub dof: f64,
    /// SHA-256 of the model file (TorchScript models).
    pub model_sha256: Option<String>,
    /// SHA-256 of the compiled package standing in for the model file
    /// (src/compile.rs), if one does.
    pub package_sha256: Option<String>,
    /// Why a package could speed this run up, said once at its start: a
    /// static model on a GPU with none compiled for it.
    pub compile_hint: Option<String>,
    /// What acts between steps (replica exchange, the barostat).
    pub moves: MoveSet,
    /// (step s0, time t0 in fs) from which the current time step counts
    /// (see [`Simulation::time_fs`]); (0, 0) unless a continued run changed
    /// the time step.
    pub time_origin: (u64, f64),
    /// Mass of one member (amu), for densities.
    pub member_mass: f64,
    /// The processes of the run: `state` holds this one's share of the
    /// members (all of them without mpirun).
    pub team: Team,
}

/// What a blow-up check looks at, per member ([R] device tensors).
struct Health {
    energy_finite: Tensor,
    positions_finite: Tensor,
    forces_finite: Tensor,
    velocities_finite: Tensor,
    /// Largest |force component| (eV/Å), float64.
    max_force: Tensor,
    /// Kinetic temperature (K), float64.
    temperature: Tensor,
}

/// Device copies of the dynamical state at one step: the "last good
/// frame" blown-up members are restored from, and the point a run goes
/// back to when a neighbour list ran out of room.
pub struct Snapshot {
    pub step: u64,
    pub positions: Tensor,
    pub velocities: Tensor,
    pub forces: Tensor,
    pub energies: Tensor,
    pub rng_counter: Option<u64>,
}

/// Names and units of the recorded observables, in record order.
pub const OBSERVABLES: [(&str, &str); 4] = [
    ("potential_energy", "eV"),
    ("kinetic_energy", "eV"),
    ("total_energy", "eV"),
    ("temperature", "K"),
];

/// Recorded in addition under replica exchange (each replica's current
/// thermostat temperature) and with [ensemble] temperatures.
pub const THERMOSTAT_TEMPERATURE: (&str, &str) = ("thermostat_temperature", "K");

/// Recorded in addition for periodic members: each member's cell volume
/// and density.
pub const CELL_OBSERVABLES: [(&str, &str); 2] = [("volume", "Å^3"), ("density", "g/cm^3")];

/// Recorded in addition for periodic members of a pair model: each
/// member's pressure from the virial, (2 K + W)/(3 V).
pub const PRESSURE: (&str, &str) = ("pressure", "bar");

impl Simulation {
    /// Load the system and model, place R members on the device, draw initial
    /// velocities and evaluate the initial forces.
    pub fn from_config(config: &Config) -> Result<Simulation> {
        Self::for_rank(config, std::rc::Rc::new(crate::parallel::Solo))
    }

    /// The share of the members that this rank of `comm` steps (all of them
    /// for a process on its own), on this rank's device: the configured
    /// one, except that "auto" and "cuda" (no index) under mpirun mean
    /// `cuda:<local rank mod visible devices>`.
    pub fn for_rank(config: &Config, comm: std::rc::Rc<dyn Communicator>) -> Result<Simulation> {
        let team = Team {
            comm,
            total: config.n_members(),
        };
        let ranks = team.comm.size();
        if ranks > team.total {
            return Err(Error::Invalid(format!(
                "{ranks} MPI ranks for {} member(s): every rank needs at least one member; start at most {} rank(s)",
                team.total, team.total
            )));
        }
        let mut molecule = Molecule::load(&config.structure_paths())?;
        if let Some(q) = config.system.charge {
            molecule.formal_charge = Some((q, "[system] charge".into()));
        }
        let cell = run_cell(&mut molecule, config)?;
        let spec = parse_device(&config.model.device).map_err(Error::Invalid)?;
        let spec = per_rank_device(spec, &config.model.device, team.comm.as_ref());
        let device = resolve(spec).map_err(Error::Invalid)?;
        let kind = config.integrator.precision.kind();
        let mine: Vec<usize> = team.mine().collect();
        let mut state = BatchState::with_members(&molecule, &mine, device, kind);
        if let Some(c) = &cell {
            let one = Tensor::from_slice(&c.to_array()).view([1, 3, 3]);
            state.set_cells(&one.repeat([state.n_members as i64, 1, 1]));
        }

        // One key (one hash of the model file, one look at the GPU's name)
        // serves the package choice, the package's check and the hint.
        let key = match config.model.compiled {
            CompiledPolicy::Off | CompiledPolicy::AsStarted(None) => {
                Err("compiled packages are not used by this run".to_string())
            }
            _ => crate::compile::key_for(config, &state, team.comm.size()),
        };
        let package = crate::compile::select(config, &key)?;
        // The model file's hash: the key's, or read here when no key was made.
        let model_sha256 = match &key {
            Ok(key) => Some(key.model_sha256.clone()),
            Err(_) => model_file_sha256(config),
        };
        let force = match (&package, &key) {
            (Some((path, _)), Ok(key)) => compiled_forces(config, path, &state, &key.model_sha256)?,
            _ => force_provider(
                &config.model,
                &config.source,
                &state,
                cell.is_some(),
                config.run.neighbor_skin,
            )?,
        };
        let package_sha256 = package.as_ref().map(|(_, sha)| sha.clone());
        let compile_hint = key
            .as_ref()
            .ok()
            .filter(|_| {
                package.is_none()
                    && config.model.compiled == CompiledPolicy::Auto
                    && matches!(device, Device::Cuda(_))
                    && force.compilable()
            })
            .map(|key| {
                format!(
                    "no compiled package for this model, molecule and {} member(s) on this GPU ({}); `mlff-md compile {}` makes one (steps 1.1-1.4x faster for static models on an H200; 1.7-1.9x for ani1x_nl.pt on an H100, with Triton kernels), which later runs use",
                    key.members,
                    key.hardware,
                    config.source.path.display()
                )
            });
        check_elements(&molecule, force.as_ref(), config)?;
        check_charge(&mut molecule, force.as_ref(), config)?;

        let seed = config.ensemble.seed;
        let moves = MoveSet::from_setup(&MoveSetup {
            config,
            molecule: &molecule,
            state: &state,
            cell: cell.as_ref(),
        })?;
        // Thermostat temperature of each member: its rung of the ladder, its
        // group's temperature, or the one temperature.
        let set_by_moves = moves
            .temperatures()
            .or_else(|| config.member_temperatures());
        let temperatures = match &set_by_moves {
            Some(t) => Tensor::from_slice(&state.mine(t)).to_device(device),
            None => Tensor::full(
                [state.n_members as i64],
                config.integrator.temperature.unwrap_or_default(),
                (Kind::Double, device),
            ),
        };
        let mut rng = CounterRng::new(splitmix64(seed ^ 0x5645_4c4f_4349_5459));
        match (&set_by_moves, config.initial_temperature()) {
            // Replicas start at their own temperatures unless one is given.
            (Some(_), None) if config.ensemble.velocities == VelocityInit::MaxwellBoltzmann => {
                state.set_maxwell_boltzmann_per_member(&temperatures, &mut rng)
            }
            (_, Some(t)) => state.set_maxwell_boltzmann(t, &mut rng),
            _ => {}
        }
        let dt = config.integrator.timestep;
        let integrator: Box<dyn Integrator> = match config.integrator.kind {
            IntegratorKind::Verlet => Box::new(VelocityVerlet::new(&state, dt)),
            IntegratorKind::Langevin => Box::new(Langevin::with_temperatures(
                &state,
                dt,
                config.integrator.friction,
                temperatures,
                seed,
            )),
        };
        update_forces(&mut state, force.as_ref())?;
        if force.overflow().is_some() {
            // Sized on these very positions, a list overflows only if the
            // data defeated the measurement; never start from its forces.
            force.grow(&state)?;
            update_forces(&mut state, force.as_ref())?;
        }
        let dof = degrees_of_freedom(state.n_atoms, integrator.as_ref());
        let member_mass = molecule.masses.iter().sum();
        let sim = Simulation {
            config: config.clone(),
            molecule,
            device,
            state,
            force,
            integrator,
            dof,
            model_sha256,
            package_sha256,
            compile_hint,
            moves,
            time_origin: (0, 0.0),
            member_mass,
            team,
        };
        sim.check_start()?;
        Ok(sim)
    }

    /// Simulated time of the current step in fs: t0 + (step − s0)·dt, which
    /// is exactly step·dt for a run whose time step never changed.
    pub fn time_fs(&self) -> f64 {
        let (s0, t0) = self.time_origin;
        t0 + (self.state.step - s0) as f64 * self.integrator.timestep()
    }

    /// The observables recorded for this run, (name, unit) in record order.
    pub fn observable_names(&self) -> Vec<(&'static str, &'static str)> {
        let mut names = OBSERVABLES.to_vec();
        if self.per_member_temperatures().is_some() {
            names.push(THERMOSTAT_TEMPERATURE);
        }
        if self.state.cells.is_some() {
            names.extend(CELL_OBSERVABLES);
        }
        if self.records_pressure() {
            names.push(PRESSURE);
        }
        names
    }

    /// Whether the observables include the pressure: periodic members, a
    /// force provider that gives the virial, and [output] pressure on.
    pub fn records_pressure(&self) -> bool {
        self.config.output.pressure && self.state.cells.is_some() && self.force.gives_virial()
    }

    /// Each member's cell on the host, for periodic members (one copy).
    pub fn cells(&self) -> Result<Option<Vec<crate::system::cell::Cell>>> {
        self.state
            .cells
            .as_ref()
            .map(crate::system::cell::Cell::all_as_stored)
            .transpose()
    }

    /// Each member's cell volume (Å³), for periodic members.
    pub fn volumes(&self) -> Result<Option<Vec<f64>>> {
        Ok(self
            .cells()?
            .map(|cells| cells.iter().map(|c| c.volume()).collect()))
    }

    /// Each member's thermostat temperature (K): its rung under replica
    /// exchange, else the configured temperature; every member of the run
    /// (under mpirun too).
    pub fn thermostat_temperatures(&self) -> Vec<f64> {
        self.per_member_temperatures().unwrap_or_else(|| {
            vec![self.config.integrator.temperature.unwrap_or_default(); self.team.total]
        })
    }

    /// Thermostat temperatures that differ between members: the rungs under
    /// replica exchange, or [ensemble] temperatures.
    fn per_member_temperatures(&self) -> Option<Vec<f64>> {
        self.moves
            .temperatures()
            .or_else(|| self.config.member_temperatures())
    }

    /// Attempt every move due at the current step (call at a check step;
    /// `producing`: past the equilibration).
    pub fn attempt_moves(&mut self, producing: bool) -> Result<MoveReport> {
        Ok(self.attempt(Pick::Due { producing })?.unwrap_or_default())
    }

    /// Attempt the moves `pick` selects, at the members' thermostat
    /// temperatures; None when it selects none.
    fn attempt(&mut self, pick: Pick) -> Result<Option<MoveReport>> {
        let temperatures = self.thermostat_temperatures();
        let report = self.moves.attempt(
            pick,
            (
                &mut self.state,
                self.force.as_ref(),
                self.integrator.as_mut(),
            ),
            &self.team,
            &temperatures,
        )?;
        // A move may have changed positions or cells without a force call
        // (one of a library user's): the next step rebuilds a stored list.
        if let (Some(_), Some(u)) = (&report, self.force.upkeep()) {
            u.invalidate();
        }
        Ok(report)
    }

    /// One Monte Carlo volume move for every member, now (None without a
    /// barostat).
    pub fn barostat_move(&mut self) -> Result<Option<BarostatMove>> {
        if self.attempt(Pick::Named("barostat"))?.is_none() {
            return Ok(None);
        }
        Ok(self.moves.get::<VolumeMove>().and_then(|m| m.last.clone()))
    }

    /// The replica-exchange sampler, if the run has one.
    pub fn replica_exchange(&self) -> Option<&ReplicaExchange> {
        self.moves.get::<ReplicaExchangeMove>().map(|m| &m.rex)
    }

    /// The Monte Carlo barostat, if the run has one.
    pub fn barostat(&self) -> Option<&MonteCarloBarostat> {
        self.moves.get::<VolumeMove>().map(|m| &m.barostat)
    }

    pub fn barostat_mut(&mut self) -> Option<&mut MonteCarloBarostat> {
        self.moves.get_mut::<VolumeMove>().map(|m| &mut m.barostat)
    }

    /// Host copies of the observables ([R] each, in `observable_names` order),
    /// from one device→host transfer.
    pub fn observables(&self) -> Result<Vec<Vec<f64>>> {
        let wants = Wants {
            virial: true,
            ..Wants::default()
        };
        Ok(self.observables_from(&HostFrame::pull(self, wants)?))
    }

    /// The observables ([R] each, in `observable_names` order) of `frame`.
    pub fn observables_from(&self, frame: &HostFrame) -> Vec<Vec<f64>> {
        let (epot, ke) = (&frame.potential, &frame.kinetic);
        let total: Vec<f64> = epot.iter().zip(ke).map(|(a, b)| a + b).collect();
        let mut values = vec![
            epot.to_vec(),
            ke.to_vec(),
            total,
            frame.temperatures(self.dof),
        ];
        if let Some(t) = self.per_member_temperatures() {
            values.push(t);
        }
        if let Some(cells) = &frame.cells {
            let v: Vec<f64> = cells.iter().map(|c| c.volume()).collect();
            let density = v
                .iter()
                .map(|v| self.member_mass / v * AMU_PER_A3_IN_G_PER_CM3)
                .collect();
            values.push(v);
            values.push(density);
        }
        if self.records_pressure() {
            values.push(
                frame
                    .pressures_bar()
                    .expect("frames for the observables hold the virial"),
            );
        }
        values
    }

    /// One replica-exchange attempt now (None without replica exchange):
    /// the outcome and the potential energies it saw.
    pub fn exchange(&mut self) -> Result<Option<(ExchangeOutcome, Vec<f64>)>> {
        if self.attempt(Pick::Named("replica_exchange"))?.is_none() {
            return Ok(None);
        }
        Ok(self
            .moves
            .get::<ReplicaExchangeMove>()
            .and_then(|m| m.last.clone())
            .map(|a| (a.outcome, a.energies)))
    }

    /// Per-member health on the device, [R] each: the one definition of a
    /// blow-up, shared by the check and by its description.
    fn health(&self) -> Health {
        let layout = &self.state.layout;
        let finite = |t: &Tensor| layout.all(&t.isfinite());
        Health {
            energy_finite: self.state.energies.isfinite(),
            positions_finite: finite(&self.state.positions),
            forces_finite: finite(&self.state.forces),
            velocities_finite: finite(&self.state.velocities),
            max_force: layout
                .max(&self.state.forces.abs(), 0.0)
                .to_kind(Kind::Double),
            temperature: self.state.temperature(self.dof),
        }
    }

    /// Slots of members that blew up: non-finite energy, forces or
    /// positions, a force component beyond `max_force`, or a kinetic
    /// temperature beyond `max_temperature`. One [R] reduction on the device
    /// and one small copy to the host.
    pub fn unhealthy_members(&self) -> Vec<usize> {
        self.failing_members(true)
    }

    /// Slots of the members whose values cross a line: non-finite values,
    /// forces above [run] max_force and (if `temperature`) a kinetic
    /// temperature above [run] max_temperature.
    fn failing_members(&self, temperature: bool) -> Vec<usize> {
        let h = self.health();
        let run = &self.config.run;
        let mut bad = h
            .energy_finite
            .logical_not()
            .logical_or(&h.forces_finite.logical_not())
            .logical_or(&h.positions_finite.logical_not())
            .logical_or(&h.velocities_finite.logical_not())
            .logical_or(&h.max_force.gt(run.max_force));
        if temperature {
            bad = bad.logical_or(&h.temperature.gt(run.max_temperature));
        }
        to_host_f64(&bad.to_kind(Kind::Double))
            .iter()
            .enumerate()
            .filter(|(_, &f)| f != 0.0)
            .map(|(i, _)| i)
            .collect()
    }

    /// Describe blown-up members for an error or log line: which ones, and
    /// for each what crossed the line (copies a few [R] arrays to the host;
    /// called only after a blow-up).
    pub fn describe_blowup(&self, slots: &[usize]) -> String {
        let h = self.health();
        let host = |t: &Tensor| to_host_f64(&t.to_kind(Kind::Double));
        let energies = to_host_f64(&self.state.energies);
        let forces_ok = host(&h.forces_finite);
        let positions_ok = host(&h.positions_finite);
        let velocities_ok = host(&h.velocities_finite);
        let fmax = host(&h.max_force);
        let temps = host(&h.temperature);
        let run = &self.config.run;
        let reasons: Vec<String> = slots
            .iter()
            .map(|&s| {
                let mut why = Vec::new();
                if !energies[s].is_finite() {
                    why.push(format!("energy {}", energies[s]));
                }
                if positions_ok[s] == 0.0 {
                    why.push("non-finite positions".to_string());
                }
                if forces_ok[s] == 0.0 {
                    why.push("non-finite forces".to_string());
                } else if fmax[s] > run.max_force {
                    why.push(format!(
                        "a force component of {:.4} eV/Å > max_force = {}",
                        fmax[s], run.max_force
                    ));
                }
                if velocities_ok[s] == 0.0 {
                    why.push("non-finite velocities".to_string());
                } else if temps[s] > run.max_temperature {
                    why.push(format!(
                        "temperature {:.1} K > max_temperature = {}",
                        temps[s], run.max_temperature
                    ));
                }
                format!("member {}: {}", self.state.member_ids[s], why.join(", "))
            })
            .collect();
        let ids: Vec<usize> = slots.iter().map(|&s| self.state.member_ids[s]).collect();
        format!(
            "member(s) {} blew up at step {} ({}) with {}",
            list(&ids),
            self.state.step,
            reasons.join("; "),
            self.force.describe()
        )
    }

    /// Minimise every member with batched FIRE ([minimize] settings, or
    /// defaults); velocities are kept, forces are up to date afterwards.
    /// With `show_progress`, a line per ~10 % of the iteration limit (at
    /// most one every 2 s) says how far it got.
    pub fn minimize(&mut self, show_progress: bool) -> Result<MinimizeReport> {
        let mut opts = FireOptions::default();
        if let Some(m) = &self.config.minimize {
            opts.max_force = m.max_force;
            opts.max_steps = m.max_steps;
        }
        let threshold = opts.max_force;
        let mut last: Option<std::time::Instant> = None;
        let mut next = 0;
        fire_with_progress(&mut self.state, self.force.as_ref(), &opts, |p| {
            let due = p.iteration >= next
                && last.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(2));
            if show_progress && due {
                eprintln!(
                    "minimising (FIRE): iteration {}/{}, largest force {:.4} eV/Å (threshold {threshold}), {}/{} member(s) still above it",
                    p.iteration, p.max_steps, p.max_force, p.active, p.members
                );
                last = Some(std::time::Instant::now());
                next = p.iteration + (p.max_steps / 10).max(1);
            }
        })
    }

    /// A device copy of positions and velocities: the "last good frame"
    /// members are restored from when they blow up (policy "reinitialize").
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            step: self.state.step,
            positions: self.state.positions.copy(),
            velocities: self.state.velocities.copy(),
            forces: self.state.forces.copy(),
            energies: self.state.energies.copy(),
            rng_counter: self.integrator.rng_counter(),
        }
    }

    /// Go back to `snapshot` exactly (positions, velocities, forces,
    /// energies, step and the thermostat's random stream), so the steps
    /// after it run again as they would have. Thermostat temperatures are
    /// not part of it: they change only at exchanges, which come after the
    /// checks at which snapshots are taken.
    pub fn rewind(&mut self, snapshot: &Snapshot) {
        self.state.positions = snapshot.positions.copy();
        self.state.velocities = snapshot.velocities.copy();
        self.state.forces = snapshot.forces.copy();
        self.state.energies = snapshot.energies.copy();
        self.state.step = snapshot.step;
        if let Some(c) = snapshot.rng_counter {
            self.integrator.set_rng_counter(c);
        }
    }

    /// Whether the force provider keeps a neighbour list that can run out
    /// of room (then the run keeps a snapshot at every check to go back to).
    pub fn can_overflow(&self) -> bool {
        self.force.list_shape().is_some()
    }

    /// Put the members in `slots` back to their positions in `snapshot`
    /// with fresh Maxwell-Boltzmann velocities at their temperature (a
    /// repeat of the same velocities would repeat the blow-up under NVE),
    /// then recompute forces.
    pub fn reinitialize(&mut self, slots: &[usize], snapshot: &Snapshot) -> Result<()> {
        let r = self.state.n_members;
        let device = self.device;
        let mut flags = vec![0.0f64; r];
        for &s in slots {
            flags[s] = 1.0;
        }
        let mask = Tensor::from_slice(&flags)
            .to_device(device)
            .index_select(0, &self.state.batch)
            .gt(0.5)
            .unsqueeze(1);
        let temps: Vec<f64> = match (
            self.per_member_temperatures(),
            self.config.integrator.temperature,
            self.config.initial_temperature(),
        ) {
            (Some(t), _, _) => self.state.mine(&t),
            (None, Some(t), _) | (None, None, Some(t)) => vec![t; r],
            (None, None, None) => vec![0.0; r],
        };
        let temps = Tensor::from_slice(&temps).to_device(device);
        // A stream of its own, keyed by the step: deterministic, no extra state.
        let mut rng = CounterRng {
            seed: splitmix64(self.config.ensemble.seed ^ 0x5245_494e_4954),
            counter: self.state.step,
        };
        let old_velocities = self.state.velocities.shallow_clone();
        self.state
            .set_maxwell_boltzmann_per_member(&temps, &mut rng);
        self.state.velocities = self.state.velocities.where_self(&mask, &old_velocities);
        self.state.positions = snapshot.positions.where_self(&mask, &self.state.positions);
        update_forces(&mut self.state, self.force.as_ref())
    }

    /// At set-up: a model that gives non-finite energies or forces on the
    /// starting structures is bad input.
    fn check_start(&self) -> Result<()> {
        // What the model gave: the temperature is the initial velocities'
        // (a Maxwell-Boltzmann draw may exceed a low [run] max_temperature;
        // the first health check in the run handles that as a blow-up).
        let bad = self.failing_members(false);
        if bad.is_empty() {
            return Ok(());
        }
        let ids: Vec<usize> = bad.iter().map(|&s| self.state.member_ids[s]).collect();
        let msg = format!(
            "non-finite energy or forces (or forces above {} eV/Å) for member(s) {} on the starting structures",
            self.config.run.max_force,
            list(&ids)
        );
        match &self.config.model.path {
            Some(p) => Err(Error::model(&self.config.resolve(p), msg)),
            None => Err(Error::Invalid(msg)),
        }
    }

    /// A checkpoint of the current state (one device→host copy).
    pub fn checkpoint(
        &self,
        reporters: ReporterPositions,
        elapsed_seconds: f64,
    ) -> Result<Checkpoint> {
        let frame = HostFrame::pull(
            self,
            Wants {
                positions: true,
                dynamics: true,
                virial: false,
            },
        )?;
        Ok(self.checkpoint_from(&frame, reporters, elapsed_seconds))
    }

    /// A checkpoint of the state in `frame`, pulled with positions and
    /// dynamics at the current step.
    pub fn checkpoint_from(
        &self,
        frame: &HostFrame,
        reporters: ReporterPositions,
        elapsed_seconds: f64,
    ) -> Checkpoint {
        let all = |v: &Option<Vec<f64>>| v.clone().expect("a checkpoint frame holds the dynamics");
        let source = &self.config.source.path;
        let config_path = std::fs::canonicalize(source).unwrap_or_else(|_| source.clone());
        Checkpoint {
            header: CheckpointHeader {
                step: self.state.step,
                n_members: self.team.total,
                n_atoms: self.state.n_atoms,
                config_path,
                config_text: self.config.source.text.clone(),
                seed: self.config.ensemble.seed,
                integrator_rng_counter: self.integrator.rng_counter(),
                replica_exchange: None,
                reporters,
                elapsed_seconds,
                mlff_md_version: env!("CARGO_PKG_VERSION").to_string(),
                target_steps: Some(self.config.run.steps),
                model_sha256: self.model_sha256.clone(),
                settings: Some(self.config.resumable()),
                time_origin: Some(self.time_origin),
                cells: frame
                    .cells
                    .as_ref()
                    .map(|c| c.iter().flat_map(Cell::to_array).collect()),
                neighbor_list: self.force.list_shape(),
                barostat: None,
                moves: self.moves.save(),
                package_sha256: self.package_sha256.clone(),
            },
            positions: all(&frame.positions),
            velocities: all(&frame.velocities),
            forces: all(&frame.forces),
            energies: frame.potential.clone(),
        }
    }

    /// Continue from a checkpoint: the state, random streams and exchange
    /// statistics become exactly those saved. Refuses a checkpoint of a
    /// different setup ([`check_resume_setup`], and a different number of
    /// members or atoms).
    pub fn restore(&mut self, ck: &Checkpoint, allow_model_change: bool) -> Result<()> {
        let h = &ck.header;
        check_resume_setup(
            &self.config,
            h,
            self.model_sha256.as_deref(),
            allow_model_change,
        )?;
        if h.n_members != self.team.total || h.n_atoms != self.state.n_atoms {
            return Err(Error::Invalid(format!(
                "cannot resume: the checkpoint holds {} members of {} atoms, the config {} of {}",
                h.n_members, h.n_atoms, self.team.total, self.state.n_atoms
            )));
        }
        // A checkpoint holds every member; this rank takes its own.
        let (rows, kind, device) = (self.state.positions.size(), self.state.kind, self.device);
        let per_atom = 3 * self.state.n_atoms;
        let state = &self.state;
        let load = |v: &[f64]| {
            Tensor::from_slice(&state.mine_rows(v, per_atom))
                .view(rows.as_slice())
                .to_kind(kind)
                .to_device(device)
        };
        let (positions, velocities, forces) =
            (load(&ck.positions), load(&ck.velocities), load(&ck.forces));
        self.state.positions = positions;
        self.state.velocities = velocities;
        self.state.forces = forces;
        self.state.energies = Tensor::from_slice(&self.state.mine(&ck.energies)).to_device(device);
        if let Some(cells) = &h.cells {
            let r = self.state.n_members as i64;
            let cells = &self.state.mine_rows(cells, 9);
            if cells.len() != 9 * r as usize || self.state.cells.is_none() {
                return Err(Error::Invalid(format!(
                    "cannot resume: the checkpoint holds {} cell numbers for a system that is {}",
                    cells.len(),
                    if self.state.cells.is_some() {
                        "periodic"
                    } else {
                        "not periodic"
                    }
                )));
            }
            self.state
                .set_cells(&Tensor::from_slice(cells).view([r, 3, 3]));
        }
        if let Some(shape) = &h.neighbor_list {
            self.force.set_list_shape(shape.clone(), &self.state)?;
        }
        self.moves.load(|name| h.move_state(name))?;
        self.state.step = h.step;
        // The clock goes on from the checkpoint's time, at the new time step
        // if it changed.
        let origin = h.time_origin.unwrap_or((0, 0.0));
        let old_dt = h.settings.as_ref().map(|s| s.timestep);
        self.time_origin = match old_dt {
            Some(dt) if dt != self.integrator.timestep() => {
                (h.step, origin.1 + (h.step - origin.0) as f64 * dt)
            }
            _ => origin,
        };
        if let Some(counter) = h.integrator_rng_counter {
            self.integrator.set_rng_counter(counter);
        }
        if let Some(t) = self.moves.temperatures() {
            let temps = Tensor::from_slice(&self.state.mine(&t)).to_device(device);
            self.integrator.set_temperatures(&self.state, &temps);
        }
        Ok(())
    }

    /// Metadata stored with the observables.
    pub fn metadata(&self) -> Vec<(&'static str, String)> {
        let c = &self.config;
        vec![
            ("config", c.source.text.clone()),
            ("config_path", c.source.path.display().to_string()),
            ("model", self.force.describe()),
            (
                "package_sha256",
                self.package_sha256.clone().unwrap_or_default(),
            ),
            (
                "model_sha256",
                self.model_sha256.clone().unwrap_or_default(),
            ),
            ("integrator", self.integrator.describe()),
            ("device", describe(self.device)),
            ("members", self.team.total.to_string()),
            ("atoms_per_member", self.state.n_atoms.to_string()),
            ("degrees_of_freedom_per_member", self.dof.to_string()),
            ("timestep_fs", self.integrator.timestep().to_string()),
            ("seed", c.ensemble.seed.to_string()),
            (
                "replica_exchange",
                self.replica_exchange()
                    .map(|r| {
                        format!(
                            "{:?} scheme, {} temperatures, {} ladder(s)",
                            r.scheme,
                            r.n_states(),
                            r.n_ladders
                        )
                    })
                    .unwrap_or_default(),
            ),
            ("mlff_md_version", env!("CARGO_PKG_VERSION").to_string()),
            ("libtorch", "tch 0.24.0 / libtorch 2.11.0".to_string()),
            ("chemfiles_version", chemfiles::version()),
        ]
    }
}

/// The force provider `model` describes (paths resolved against `source`)
/// for `state`'s batch ([`model_sha256`] gives its file's hash):
/// TorchScript files of contract v2 and Lennard-Jones with a cutoff go
/// through the engine's neighbour list (reaching `skin` Å beyond the cutoff
/// between rebuilds in cell grids).
pub fn force_provider(
    model: &crate::config::ModelConfig,
    source: &crate::config::ConfigSource,
    state: &BatchState,
    periodic: bool,
    skin: f64,
) -> Result<Box<dyn ForceProvider>> {
    let force: Box<dyn ForceProvider> = match model.kind {
        ModelKind::Torchscript => {
            let path = source.resolve(model.path.as_deref().unwrap_or(Path::new("")));
            let package = crate::force::aoti::is_package(&path);
            let force: Box<dyn ForceProvider> = if package && periodic {
                return Err(Error::model(
                    &path,
                    "is an AOTInductor package of contract pt2-v1 (isolated molecules), and this system is periodic",
                ));
            } else if package {
                Box::new(crate::force::AotiForces::load(&path, state)?)
            } else {
                let loaded = TorchScriptModel::load(&path, state.device, model.dtype.kind())?;
                if loaded.takes_pairs() {
                    loaded.check_periodic(state)?;
                    Box::new(PairForces::with_skin(Box::new(loaded), state, skin)?)
                } else if periodic {
                    return Err(Error::model(
                        &path,
                        "is a model of interface v1 (forward(atomic_numbers, positions, batch): isolated molecules), and this system is periodic; use a model of interface v2, which takes the engine's neighbour list (cutoffs() and forward_pairs(), see models/README.md), e.g. models/ani1x_nl.pt",
                    ));
                } else {
                    Box::new(loaded)
                }
            };
            force
        }
        ModelKind::Harmonic => Box::new(Harmonic::at_current_positions(
            state,
            model.k.unwrap_or_default(),
        )),
        ModelKind::LennardJones => {
            let (epsilon, sigma) = (
                model.epsilon.unwrap_or_default(),
                model.sigma.unwrap_or_default(),
            );
            match model.cutoff {
                Some(cutoff) => {
                    let pairs = LennardJonesPairs {
                        epsilon,
                        sigma,
                        cutoff,
                        shifted: model.shift.unwrap_or(false),
                    };
                    Box::new(PairForces::with_skin(Box::new(pairs), state, skin)?)
                }
                None => Box::new(LennardJones { epsilon, sigma }),
            }
        }
    };
    Ok(force)
}

/// The compiled package at `path` standing in for `config`'s model file,
/// whose SHA-256 is `model_sha`: the package must say it was compiled from
/// that very file.
fn compiled_forces(
    config: &Config,
    path: &Path,
    state: &BatchState,
    model_sha: &str,
) -> Result<Box<dyn ForceProvider>> {
    let model = config.resolve(config.model.path.as_deref().unwrap_or(Path::new("")));
    let stand_in = crate::force::aoti::StandIn::open(
        path,
        &model,
        model_sha,
        state,
        config.model.dtype.kind(),
        config.run.neighbor_skin,
    )?;
    Ok(stand_in.into_provider())
}

/// SHA-256 of the config's model file (TorchScript models), as hex.
pub fn model_file_sha256(config: &Config) -> Option<String> {
    model_sha256(&config.model, &config.source)
}

/// SHA-256 of `model`'s file (TorchScript models; paths resolved against
/// `source`), as hex.
pub fn model_sha256(
    model: &crate::config::ModelConfig,
    source: &crate::config::ConfigSource,
) -> Option<String> {
    if model.kind != ModelKind::Torchscript {
        return None;
    }
    file_sha256(&source.resolve(model.path.as_deref()?)).ok()
}

/// SHA-256 of a file's contents, as hex.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    std::fs::read(path).map(|b| hex(&Sha256::digest(b)))
}

/// Whether a run set up by `config` may continue from a checkpoint with
/// `header`: the same config apart from the settings a continued run may
/// change ([`RESUMABLE_KEYS`]), the same seed, and (unless
/// `allow_model_change`) a model file with the same contents. Cheap: run
/// before anything is built.
pub fn check_resume_setup(
    config: &Config,
    h: &CheckpointHeader,
    model_sha256: Option<&str>,
    allow_model_change: bool,
) -> Result<()> {
    let mismatch = |what: String| {
        Err(Error::Invalid(format!(
            "cannot resume: {what}; resume with the config the run was started with (only {} may change)",
            RESUMABLE_KEYS.map(|(t, k)| format!("[{t}] {k}")).join(", ")
        )))
    };
    if let (Some(then), Some(now)) = (&h.model_sha256, model_sha256) {
        if then != now && !allow_model_change {
            let path = config.resolve(config.model.path.as_deref().unwrap_or(Path::new("")));
            return Err(Error::model(
                &path,
                format!(
                    "has changed since the checkpoint was written (SHA-256 then {then}, now {now}); put the original file back, or pass --allow-model-change to continue with this one"
                ),
            ));
        }
    }
    if !same_setup(&h.config_text, &config.source.text) {
        return mismatch("the config differs from the one the checkpoint was written with".into());
    }
    if h.seed != config.ensemble.seed {
        return mismatch(format!(
            "the checkpoint used seed {}, this run seed {}",
            h.seed, config.ensemble.seed
        ));
    }
    Ok(())
}

/// Whether two config texts describe the same run, ignoring the settings a
/// continued run may change ([`RESUMABLE_KEYS`]).
fn same_setup(a: &str, b: &str) -> bool {
    let normalise = |text: &str| -> Option<toml::Table> {
        let mut t: toml::Table = text.parse().ok()?;
        for (table, key) in RESUMABLE_KEYS {
            if let Some(toml::Value::Table(section)) = t.get_mut(table) {
                section.remove(key);
            }
        }
        Some(t)
    };
    match (normalise(a), normalise(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Under mpirun, "auto" and "cuda" without an index pick this rank's GPU,
/// `cuda:<local rank mod visible devices>`; anything else is kept.
fn per_rank_device(spec: DeviceSpec, written: &str, comm: &dyn Communicator) -> DeviceSpec {
    let unpinned = matches!(
        written.trim().to_ascii_lowercase().as_str(),
        "auto" | "cuda" | "gpu"
    );
    if comm.size() == 1 || !unpinned || !tch::Cuda::is_available() {
        return spec;
    }
    let visible = tch::Cuda::device_count().max(1) as usize;
    DeviceSpec::Cuda(comm.local_rank() % visible)
}

pub(crate) fn list(v: &[usize]) -> String {
    let shown: Vec<String> = v.iter().take(10).map(|x| x.to_string()).collect();
    if v.len() > 10 {
        format!("{} and {} more", shown.join(", "), v.len() - 10)
    } else {
        shown.join(", ")
    }
}

/// The run's periodic cell ([system] cell, or the file's with periodic =
/// true), or None; the molecule's template frame, which every trajectory
/// frame copies, gets that cell (or none), and a file's cell that is not
/// used is reported.
fn run_cell(molecule: &mut Molecule, config: &Config) -> Result<Option<crate::system::cell::Cell>> {
    let source = molecule.sources[0].clone();
    let cell = match (config.cell()?, config.system.periodic) {
        (Some(c), _) => Some(c),
        (None, true) => Some(molecule.cell.ok_or_else(|| {
            Error::structure(&source, "[system] periodic = true, but the file gives no cell (CRYST1, ...); give [system] cell = [a, b, c] instead")
        })?),
        (None, false) => None,
    };
    let chem_cell = match &cell {
        Some(c) => c.to_chemfiles(),
        None => chemfiles::UnitCell::infinite(),
    };
    molecule.template.set_cell(&chem_cell);
    if let (None, Some(file_cell)) = (&cell, &molecule.cell) {
        let [a, b, c] = [0, 1, 2].map(|i| file_cell.matrix.row(i).norm());
        molecule.warnings.push(format!(
            "{} has a periodic box ({a:.3} × {b:.3} × {c:.3} Å); it is ignored and the molecule simulated in isolation (set [system] periodic = true to use it, with a model that takes a cell)",
            source.display()
        ));
    }
    Ok(cell)
}

/// Refuse a charged input for a provider that takes no charge (it would
/// silently simulate the neutral species), unless `[system] allow_charged`.
fn check_charge(molecule: &mut Molecule, force: &dyn ForceProvider, config: &Config) -> Result<()> {
    let Some((q, source)) = molecule.formal_charge.clone() else {
        return Ok(());
    };
    if force.takes_charge() || q == 0 {
        return Ok(());
    }
    let what = format!(
        "has a total formal charge of {q:+} ({source}), but {} takes no charge: it would simulate the neutral molecule",
        force.describe()
    );
    if config.system.allow_charged {
        molecule.warnings.push(format!(
            "{}: {what} ([system] allow_charged = true)",
            molecule.sources[0].display()
        ));
        Ok(())
    } else {
        Err(Error::structure(
            &molecule.sources[0],
            format!("{what}; set [system] allow_charged = true to run it anyway"),
        ))
    }
}

/// Refuse systems with elements the model says it does not support.
fn check_elements(molecule: &Molecule, force: &dyn ForceProvider, config: &Config) -> Result<()> {
    let Some(supported) = force.supported_elements() else {
        return Ok(());
    };
    let mut missing: Vec<i64> = molecule
        .atomic_numbers
        .iter()
        .copied()
        .filter(|z| !supported.contains(z))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = missing.iter().map(|&z| element_symbol(z)).collect();
    let path = config.resolve(config.model.path.as_deref().unwrap_or(Path::new("")));
    Err(Error::model(
        &path,
        format!(
            "does not support element(s) {} present in {}",
            names.join(", "),
            molecule.sources[0].display()
        ),
    ))
}
