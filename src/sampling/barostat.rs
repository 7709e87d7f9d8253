//! Constant pressure by Monte Carlo volume moves: OpenMM's
//! MonteCarloBarostat, for every periodic member of the batch at once.
//!
//! Each move proposes for every member its own isotropic volume change
//! ΔV ∈ [−s, s], scales the member's cell by f = (V'/V)^(1/3) and each of
//! its molecules (bond-graph components) by its centre, so bonds keep their
//! lengths; evaluates ALL members' trial energies in one batched force call;
//! and accepts each member with its own Metropolis test on
//! w = ΔE + P ΔV − N_mol kT ln(V'/V) (kT of the member's thermostat, which
//! under replica exchange is its current rung). Rejected members get back
//! their positions, cell, forces and energies bit for bit. The step size s
//! adapts per member every 10 attempts toward 25–75 % acceptance, as
//! OpenMM's does, but is capped at 30 % of the member's volume when the
//! barostat started, not of its current volume as in OpenMM: a cap that
//! follows the volume makes the proposal depend on the state and biases
//! the sampled volume (an ideal gas of 20 molecules, where the cap binds:
//! ⟨V⟩ 1.0 % low, 43 standard errors, in a Monte Carlo model of the scheme;
//! exact with the fixed cap). Every update is in place, so a captured CUDA
//! graph keeps reading the right memory.
//!
//! Anisotropic (OpenMM's MonteCarloAnisotropicBarostat, all three axes):
//! each move picks one Cartesian axis at random per member and scales the
//! cell's and the molecule centres' coordinates along it alone by V'/V;
//! each axis keeps its own step size. A trial cell with a perpendicular
//! width under the model's cutoff is rejected (the neighbour list would
//! miss images).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::force::ForceProvider;
use crate::parallel::Team;
use crate::rng::HostRng;
use crate::state::{to_host_f64, BatchState};
use crate::system::cell::Cell;
use crate::system::chemistry::Molecules;
use crate::units::BAR_IN_EV_PER_A3;

/// Attempts between adaptations of the step size.
const ADAPT_EVERY: u64 = 10;

/// The barostat's state, all of it saved in checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonteCarloBarostat {
    /// Bar.
    pub pressure_bar: f64,
    /// Steps between moves.
    pub interval: u64,
    /// One axis at a time instead of all three together.
    pub anisotropic: bool,
    /// Largest volume change tried, per member and axis (Å³; isotropic
    /// moves use the first).
    pub max_change: Vec<[f64; 3]>,
    /// Each member's volume when the barostat started (Å³): the step
    /// size stays below 30 % of it.
    pub reference_volume: Vec<f64>,
    /// Attempts and acceptances since the last adaptation, per member
    /// and axis.
    pub attempted: Vec<[u64; 3]>,
    pub accepted: Vec<[u64; 3]>,
    /// All attempts and acceptances, per member.
    pub total_attempted: Vec<u64>,
    pub total_accepted: Vec<u64>,
    /// Stream of the proposals and the Metropolis tests.
    pub rng: HostRng,
}

/// Where each atom's molecule is, to scale molecules by their centres
/// (one molecule per member, the same for every member).
pub struct MoleculeScaling {
    /// [n_mol, max atoms] atom index within the member, padded with n (a row
    /// of zeros appended for the gather).
    table: Tensor,
    /// [n_mol, 1] atoms per molecule (float64).
    sizes: Tensor,
    /// [n] molecule of each atom.
    molecule_of_atom: Tensor,
    /// Molecules per member.
    pub count: usize,
}

impl MoleculeScaling {
    pub fn new(n_atoms: usize, bonds: &[[usize; 2]], device: tch::Device) -> MoleculeScaling {
        let molecules = Molecules::new(n_atoms, bonds);
        let lists: Vec<Vec<usize>> = molecules.atoms().map(|a| a.collect()).collect();
        let widest = lists.iter().map(Vec::len).max().unwrap_or(1);
        let mut table = vec![n_atoms as i64; lists.len() * widest];
        let mut of_atom = vec![0i64; n_atoms];
        for (m, atoms) in lists.iter().enumerate() {
            for (k, &a) in atoms.iter().enumerate() {
                table[m * widest + k] = a as i64;
                of_atom[a] = m as i64;
            }
        }
        let sizes: Vec<f64> = lists.iter().map(|l| l.len() as f64).collect();
        MoleculeScaling {
            table: Tensor::from_slice(&table)
                .view([lists.len() as i64, widest as i64])
                .to_device(device),
            sizes: Tensor::from_slice(&sizes).view([-1, 1]).to_device(device),
            molecule_of_atom: Tensor::from_slice(&of_atom).to_device(device),
            count: lists.len(),
        }
    }

    /// The centre (mean position) of each atom's molecule, [R·n, 3], for
    /// positions [R·n, 3] of R members of n atoms. A gather and a sum in a
    /// fixed order: the same bits on any device, every time.
    fn centres(&self, positions: &Tensor, r: i64) -> Tensor {
        let n = self.molecule_of_atom.size()[0];
        let x = positions.to_kind(Kind::Double).view([r, n, 3]);
        let padded = Tensor::cat(&[x.shallow_clone(), x.zeros_like().narrow(1, 0, 1)], 1);
        let (m, w) = (self.table.size()[0], self.table.size()[1]);
        let sums = padded
            .index_select(1, &self.table.view([-1]))
            .view([r, m, w, 3])
            .sum_dim_intlist(2, false, Kind::Double);
        (sums / &self.sizes)
            .index_select(1, &self.molecule_of_atom)
            .view([r * n, 3])
    }
}

/// What one move did.
#[derive(Debug, Clone)]
pub struct BarostatMove {
    /// Per member.
    pub accepted: Vec<bool>,
    /// The neighbour list had to be enlarged for the trial volumes (the
    /// caller captures its step again).
    pub grew_list: bool,
}

impl MonteCarloBarostat {
    /// For `n_members` members of volumes `volumes` (Å³): first step size
    /// 1 % of each volume, as OpenMM's.
    pub fn new(
        pressure_bar: f64,
        interval: u64,
        anisotropic: bool,
        volumes: &[f64],
        seed: u64,
    ) -> Self {
        let r = volumes.len();
        MonteCarloBarostat {
            pressure_bar,
            interval,
            anisotropic,
            max_change: volumes.iter().map(|v| [0.01 * v; 3]).collect(),
            reference_volume: volumes.to_vec(),
            attempted: vec![[0; 3]; r],
            accepted: vec![[0; 3]; r],
            total_attempted: vec![0; r],
            total_accepted: vec![0; r],
            rng: HostRng::new(crate::rng::splitmix64(seed ^ 0x4241_524f_5354_4154)),
        }
    }

    /// One volume move for every member; `kt` is each member's kT (eV).
    /// Pulls the cells and energies to the host (a check step).
    ///
    /// The barostat's state and `kt` cover every member of the run; `state`
    /// holds `team`'s share of them (all of them in one process). Every rank
    /// draws the whole run's random numbers, decides for its own members and
    /// gathers the outcomes, so all ranks keep the same state, the one a
    /// single process keeps.
    pub fn attempt(
        &mut self,
        state: &mut BatchState,
        force: &dyn ForceProvider,
        kt: &[f64],
        molecules: &MoleculeScaling,
        team: &Team,
    ) -> Result<BarostatMove> {
        let r = state.n_members;
        let total = self.max_change.len();
        let ids = &state.member_ids;
        let Some(cells) = state.cells.as_ref().map(Tensor::shallow_clone) else {
            return Err(Error::Invalid("a barostat needs periodic members".into()));
        };
        let volumes: Vec<f64> = Cell::all_as_stored(&cells)?
            .iter()
            .map(Cell::volume)
            .collect();
        // Two draws per member and move (three when anisotropic: the
        // axis), in member order, used or not: the stream does not depend
        // on the outcomes.
        let draws: Vec<[f64; 2]> = (0..total)
            .map(|_| [self.rng.uniform(), self.rng.uniform()])
            .collect();
        let axes: Vec<usize> = (0..total)
            .map(|_| match self.anisotropic {
                true => ((3.0 * self.rng.uniform()) as usize).min(2),
                false => 0,
            })
            .collect();
        // Slot i holds member ids[i].
        let new_volumes: Vec<f64> = (0..r)
            .map(|i| {
                let m = ids[i];
                volumes[i] + self.max_change[m][axes[m]] * 2.0 * (draws[m][0] - 0.5)
            })
            .collect();
        // Scale of each coordinate, per slot.
        let scales: Vec<[f64; 3]> = (0..r)
            .map(|i| {
                let ratio = new_volumes[i] / volumes[i];
                match (new_volumes[i] > 0.0, self.anisotropic) {
                    (false, _) => [1.0; 3],
                    (true, false) => [ratio.cbrt(); 3],
                    (true, true) => {
                        let mut s = [1.0; 3];
                        s[axes[ids[i]]] = ratio;
                        s
                    }
                }
            })
            .collect();
        let old = (
            state.positions.copy(),
            cells.copy(),
            state.forces.copy(),
            state.energies.copy(),
        );
        let device = state.device;
        let f = Tensor::from_slice(&scales.concat())
            .view([r as i64, 3])
            .to_device(device);
        let per_atom = state.layout.per_atom(&(&f - 1.0));
        let moved = &state.positions
            + (molecules.centres(&state.positions, r as i64) * per_atom).to_kind(state.kind);
        state.positions.copy_(&moved);
        let mut cells_now = cells.shallow_clone();
        // Rows are lattice vectors: scaling coordinate k scales column k.
        cells_now.copy_(&(&old.1 * f.view([-1, 1, 3])));
        // A trial cell narrower than the cutoff somewhere is refused.
        let cutoff = force.list_shape().map_or(0.0, |s| s.cutoffs[0]);
        let wide_enough: Vec<bool> = Cell::all_as_stored(&cells_now)?
            .iter()
            .map(|c| c.perpendicular_widths().iter().all(|&w| w >= cutoff))
            .collect();
        let mut out = force.compute(state)?;
        let mut grew_list = false;
        if force.overflow().is_some() {
            force.grow(state)?;
            out = force.compute(state)?;
            grew_list = true;
        }
        let e_old = to_host_f64(&old.3);
        let e_new = to_host_f64(&out.energies);
        let pressure = self.pressure_bar * BAR_IN_EV_PER_A3;
        let accepted: Vec<bool> = (0..r)
            .map(|i| {
                let m = ids[i];
                if new_volumes[i] <= 0.0 || !wide_enough[i] {
                    return false;
                }
                let dv = new_volumes[i] - volumes[i];
                let w = (e_new[i] - e_old[i]) + pressure * dv
                    - molecules.count as f64 * kt[m] * (new_volumes[i] / volumes[i]).ln();
                w <= 0.0 || draws[m][1] < (-w / kt[m]).exp()
            })
            .collect();
        // Accepted members keep the trial; the others get everything back.
        let keep = Tensor::from_slice(&accepted.iter().map(|&a| a as i64).collect::<Vec<_>>())
            .to_device(device)
            .gt(0);
        let keep_atom = state.layout.per_atom(&keep).unsqueeze(1);
        let positions = state.positions.where_self(&keep_atom, &old.0);
        state.positions.copy_(&positions);
        let forces = out.forces.where_self(&keep_atom, &old.2);
        state.forces.copy_(&forces);
        let energies = out.energies.where_self(&keep, &old.3);
        state.energies.copy_(&energies);
        let restored = cells_now.where_self(&keep.view([-1, 1, 1]), &old.1);
        cells_now.copy_(&restored);
        // Every member's outcome, on every rank.
        let flags: Vec<f64> = accepted.iter().map(|&a| f64::from(u8::from(a))).collect();
        let accepted: Vec<bool> = team
            .all_members(&flags, 1)
            .iter()
            .map(|&a| a != 0.0)
            .collect();
        for (m, &a) in accepted.iter().enumerate() {
            let k = axes[m];
            self.attempted[m][k] += 1;
            self.total_attempted[m] += 1;
            if a {
                self.accepted[m][k] += 1;
                self.total_accepted[m] += 1;
            }
            if self.attempted[m][k] >= ADAPT_EVERY {
                // As OpenMM: shrink below 25 % acceptance, grow above 75 %
                // (at most 30 % of the starting volume: see the module docs).
                let rate = self.accepted[m][k] as f64 / self.attempted[m][k] as f64;
                let step = &mut self.max_change[m][k];
                if rate < 0.25 {
                    *step /= 1.1;
                } else if rate > 0.75 {
                    *step = (*step * 1.1).min(0.3 * self.reference_volume[m]);
                }
                self.attempted[m][k] = 0;
                self.accepted[m][k] = 0;
            }
        }
        Ok(BarostatMove {
            accepted,
            grew_list,
        })
    }

    /// Fraction of all moves accepted, per member.
    pub fn acceptance(&self) -> Vec<f64> {
        self.total_accepted
            .iter()
            .zip(&self.total_attempted)
            .map(|(&a, &n)| a as f64 / (n as f64).max(1.0))
            .collect()
    }
}
