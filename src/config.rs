//! The TOML run configuration: schema, defaults and validation.
//!
//! Every relative path in a config file is resolved against the directory of
//! that file, so a config runs the same from any working directory. Errors
//! name the file, the line and column, and the key.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// A whole run, as read from a config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub system: SystemConfig,
    pub model: ModelConfig,
    pub integrator: IntegratorConfig,
    #[serde(default)]
    pub ensemble: EnsembleConfig,
    pub run: RunConfig,
    #[serde(default)]
    pub output: OutputConfig,
    /// Temperature replica exchange (optional).
    pub replica_exchange: Option<ReplicaExchangeConfig>,
    /// Energy minimisation of every member before MD (optional).
    pub minimize: Option<MinimizeConfig>,
    /// Constant pressure by Monte Carlo volume moves (optional; periodic
    /// systems under Langevin dynamics).
    pub barostat: Option<BarostatConfig>,
    /// Steps at the start of the run that settle the system before anything
    /// is sampled (optional).
    pub equilibration: Option<EquilibrationConfig>,
    /// Where the config came from (not part of the file).
    #[serde(skip)]
    pub source: ConfigSource,
}

/// The file a config was read from and its text (kept for error messages and
/// stored verbatim in the observables file).
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    pub path: PathBuf,
    pub text: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemConfig {
    /// One structure file; a multi-model file (PDB MODEL records, multi-frame
    /// XYZ) gives several starting structures.
    pub structure: Option<PathBuf>,
    /// Several structure files of the same molecule, one starting structure each.
    pub structures: Option<Vec<PathBuf>>,
    /// Run a structure with a nonzero formal charge through a model that
    /// takes no charge (it then sees a neutral molecule), with a warning.
    #[serde(default)]
    pub allow_charged: bool,
    /// Total charge of the molecule (elementary charges), for models that
    /// take one; replaces the structure file's formal charges.
    pub charge: Option<i64>,
    /// A periodic cell for every member: edge lengths [a, b, c] (Å), lengths
    /// and angles [a, b, c, α, β, γ] (degrees), or the three lattice
    /// vectors [[ax, ay, az], [bx, by, bz], [cx, cy, cz]].
    pub cell: Option<CellSpec>,
    /// Use the structure file's cell (PDB CRYST1, ...) as the periodic cell.
    #[serde(default)]
    pub periodic: bool,
}

/// How a config gives a periodic cell.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum CellSpec {
    Numbers(Vec<f64>),
    Vectors(Vec<Vec<f64>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// A TorchScript file honouring the model interface.
    #[default]
    Torchscript,
    /// Every atom tied to its starting position by a spring of constant `k` (eV/Å²).
    Harmonic,
    /// Lennard-Jones between all atom pairs of a structure (`epsilon` eV, `sigma` Å).
    LennardJones,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    #[default]
    Float32,
    Float64,
}

impl Dtype {
    pub fn kind(self) -> tch::Kind {
        match self {
            Dtype::Float32 => tch::Kind::Float,
            Dtype::Float64 => tch::Kind::Double,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    #[serde(default)]
    pub kind: ModelKind,
    /// TorchScript file (kind = "torchscript").
    pub path: Option<PathBuf>,
    /// Precision of the positions handed to the model.
    #[serde(default)]
    pub dtype: Dtype,
    /// "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
    #[serde(default = "default_device")]
    pub device: String,
    /// Spring constant in eV/Å² (kind = "harmonic").
    pub k: Option<f64>,
    /// Well depth in eV (kind = "lennard-jones").
    pub epsilon: Option<f64>,
    /// Zero-crossing distance in Å (kind = "lennard-jones").
    pub sigma: Option<f64>,
    /// Truncation distance in Å (kind = "lennard-jones"; required in a
    /// periodic cell): pairs go through the engine's neighbour list.
    pub cutoff: Option<f64>,
    /// Shifted-force Lennard-Jones (kind = "lennard-jones" with a cutoff):
    /// energy and force both reach zero at the cutoff.
    pub shift: Option<bool>,
    /// Whether a package compiled by `mlff-md compile` for this model,
    /// system, member count and device replaces the TorchScript file.
    #[serde(default)]
    pub compiled: CompiledPolicy,
}

/// [model] compiled: when an AOTInductor package from `mlff-md compile`
/// stands in for a static TorchScript model (src/compile.rs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompiledPolicy {
    /// Use the cached package compiled for exactly this model file,
    /// molecule, member count and device, when there is one.
    #[default]
    Auto,
    /// Always the TorchScript file.
    Off,
    /// Set by a resumed run, never read from a file: the package with this
    /// SHA-256 (None: no package), as the run was started with, so a
    /// continued run takes the same force path as an uninterrupted one.
    #[serde(skip)]
    AsStarted(Option<String>),
}

fn default_device() -> String {
    "auto".to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntegratorKind {
    /// Velocity Verlet (NVE).
    Verlet,
    /// BAOAB Langevin (NVT).
    Langevin,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegratorConfig {
    pub kind: IntegratorKind,
    /// Time step in fs.
    pub timestep: f64,
    /// Thermostat temperature in K (Langevin), and the default for initial velocities.
    pub temperature: Option<f64>,
    /// Langevin friction in 1/ps.
    #[serde(default = "default_friction")]
    pub friction: f64,
    /// Precision of the integrator state (positions, velocities).
    #[serde(default = "default_precision")]
    pub precision: Dtype,
}

fn default_friction() -> f64 {
    1.0
}

fn default_precision() -> Dtype {
    Dtype::Float64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum VelocityInit {
    /// Maxwell-Boltzmann at `initial_temperature` (or the integrator's), zero net momentum.
    #[default]
    MaxwellBoltzmann,
    /// All velocities zero.
    Zero,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleConfig {
    /// Number of members R run in lockstep (default 1; with replica
    /// exchange: temperatures × members_per_temperature).
    pub members: Option<usize>,
    /// Seed of every random number of the run.
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub velocities: VelocityInit,
    /// Temperature of the initial velocities in K (default: the integrator's).
    pub initial_temperature: Option<f64>,
    /// A thermostat temperature per group of members (K), instead of
    /// [integrator] temperature: a temperature scan without exchanges. The
    /// members are split into equal contiguous groups, one per temperature
    /// (default members: one per temperature).
    pub temperatures: Option<Vec<f64>>,
}

fn one() -> usize {
    1
}

/// Batched FIRE minimisation before the first MD step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinimizeConfig {
    /// Converged when every atomic force is below this, eV/Å.
    #[serde(default = "default_min_force")]
    pub max_force: f64,
    /// Iteration limit.
    #[serde(default = "default_min_steps")]
    pub max_steps: u64,
}

fn default_min_force() -> f64 {
    0.05
}

fn default_min_steps() -> u64 {
    2000
}

/// `[barostat]`: OpenMM's MonteCarloBarostat, batched: every `interval`
/// steps each member tries an isotropic volume change.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BarostatConfig {
    /// Pressure in bar.
    pub pressure: f64,
    /// Steps between volume moves.
    #[serde(default = "default_barostat_interval")]
    pub interval: u64,
    /// Scale one axis at a time (OpenMM's MonteCarloAnisotropicBarostat)
    /// instead of the whole cell.
    #[serde(default)]
    pub anisotropic: bool,
}

/// `[equilibration]`: the first `steps` of the run settle the system
/// (thermostat, and barostat when there is one, acting as in production)
/// before anything is sampled from it: no replica exchanges and no
/// trajectory frames until then, so every exchange statistic and frame
/// belongs to production. Observables are recorded throughout (the
/// production start is stored beside them) so the settling can be watched.
/// A stage of the one run: a checkpoint taken during it resumes in it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EquilibrationConfig {
    /// Steps, counted from the start of the run (part of `[run] steps`).
    pub steps: u64,
}

fn default_barostat_interval() -> u64 {
    25
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ExchangeScheme {
    /// Alternating even/odd neighbour pairs (GROMACS, LAMMPS).
    #[default]
    Neighbor,
    /// Repeated Metropolis swaps of random pairs (openmmtools' swap-all).
    AllPairs,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaExchangeConfig {
    /// Explicit ladder in K, ascending.
    pub temperatures: Option<Vec<f64>>,
    /// Geometric ladder from t_min to t_max with n_replicas rungs.
    pub t_min: Option<f64>,
    pub t_max: Option<f64>,
    pub n_replicas: Option<usize>,
    /// Steps between exchange attempts.
    #[serde(default = "default_exchange_interval")]
    pub exchange_interval: u64,
    #[serde(default)]
    pub scheme: ExchangeScheme,
    /// Independent replicas (ladders) at each temperature in the same batch.
    #[serde(default = "one")]
    pub members_per_temperature: usize,
    /// Swap attempts per ladder and exchange for scheme "all-pairs" (default K³).
    pub swap_attempts: Option<usize>,
}

fn default_exchange_interval() -> u64 {
    100
}

impl ReplicaExchangeConfig {
    /// The temperature ladder in K (ascending), as configured.
    pub fn ladder(&self) -> Vec<f64> {
        if let Some(t) = &self.temperatures {
            return t.clone();
        }
        match (self.t_min, self.t_max, self.n_replicas) {
            (Some(lo), Some(hi), Some(n)) if n >= 2 => (0..n)
                .map(|i| lo * (hi / lo).powf(i as f64 / (n - 1) as f64))
                .collect(),
            _ => vec![],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Number of MD steps.
    pub steps: u64,
    /// What to do when a member blows up (non-finite or exploding values).
    #[serde(default)]
    pub on_blowup: BlowupPolicy,
    /// Largest force component (eV/Å) before a member counts as exploding.
    #[serde(default = "default_max_force")]
    pub max_force: f64,
    /// Largest kinetic temperature (K) before a member counts as exploding.
    #[serde(default = "default_max_temperature")]
    pub max_temperature: f64,
    /// Capture each MD step in a CUDA graph and replay it.
    #[serde(default)]
    pub cuda_graphs: GraphPolicy,
    /// Å a neighbour list of a periodic or large system reaches beyond the
    /// model's cutoff, so it is rebuilt every few steps rather than in
    /// every step (0: in every step). Changes no result, only speed.
    #[serde(default = "default_neighbor_skin")]
    pub neighbor_skin: f64,
}

fn default_neighbor_skin() -> f64 {
    crate::neighbors::DEFAULT_SKIN
}

/// Whether MD steps are captured in a CUDA graph and replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum GraphPolicy {
    /// On a CUDA device with a static-shape model; otherwise eager, with one
    /// log line saying why.
    #[default]
    Auto,
    /// Always; an error when capture is impossible.
    On,
    /// Never: every step runs eagerly.
    Off,
}

impl std::str::FromStr for BlowupPolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "stop" => Ok(BlowupPolicy::Stop),
            "reinitialize" | "reinitialise" => Ok(BlowupPolicy::Reinitialize),
            _ => Err(format!(
                "unknown blow-up policy {s:?}; expected \"stop\" or \"reinitialize\""
            )),
        }
    }
}

impl GraphPolicy {
    /// The setting as configs and the command line spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            GraphPolicy::Auto => "auto",
            GraphPolicy::On => "on",
            GraphPolicy::Off => "off",
        }
    }
}

impl std::str::FromStr for GraphPolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(GraphPolicy::Auto),
            "on" => Ok(GraphPolicy::On),
            "off" => Ok(GraphPolicy::Off),
            _ => Err(format!(
                "unknown CUDA-graph setting {s:?}; expected \"auto\", \"on\" or \"off\""
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BlowupPolicy {
    /// Stop, keeping the last checkpoint from before the blow-up.
    #[default]
    Stop,
    /// Restore the member's last good frame with fresh velocities and go on.
    Reinitialize,
}

fn default_max_force() -> f64 {
    1.0e3
}

fn default_max_temperature() -> f64 {
    5.0e4
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TrajectoryFormat {
    #[default]
    Xtc,
    Dcd,
    Pdb,
    Xyz,
}

impl TrajectoryFormat {
    pub fn extension(self) -> &'static str {
        match self {
            TrajectoryFormat::Xtc => "xtc",
            TrajectoryFormat::Dcd => "dcd",
            TrajectoryFormat::Pdb => "pdb",
            TrajectoryFormat::Xyz => "xyz",
        }
    }

    /// The chemfiles format name.
    pub fn chemfiles_name(self) -> &'static str {
        match self {
            TrajectoryFormat::Xtc => "XTC",
            TrajectoryFormat::Dcd => "DCD",
            TrajectoryFormat::Pdb => "PDB",
            TrajectoryFormat::Xyz => "XYZ",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    #[serde(default = "default_output_dir")]
    pub directory: PathBuf,
    #[serde(default)]
    pub trajectory_format: TrajectoryFormat,
    /// Steps between trajectory frames; 0 writes no trajectory.
    #[serde(default = "default_trajectory_interval")]
    pub trajectory_interval: u64,
    /// Members whose trajectories are written (default: all).
    pub trajectory_members: Option<Vec<usize>>,
    /// Steps between observables records (energies, temperatures).
    #[serde(default = "default_observables_interval")]
    pub observables_interval: u64,
    /// Steps between checkpoints (0: only at the end of the run).
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval: u64,
    /// Also checkpoint when this many minutes of wall time have passed.
    pub checkpoint_minutes: Option<f64>,
    /// Name stored as the H5MD author of observables.h5 (default: $USER).
    pub author: Option<String>,
    /// How periodic members' coordinates are written: "molecules" (each
    /// molecule whole, its centre in the cell) or "none" (as integrated).
    #[serde(default)]
    pub wrap: WrapMode,
    /// Record the virial pressure of periodic members (pair models): one
    /// more force evaluation per observables record (about 2 % of the
    /// ANI-1x water run recording every 100 steps); false saves it.
    #[serde(default = "yes")]
    pub pressure: bool,
}

fn yes() -> bool {
    true
}

/// How trajectory frames of periodic members are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WrapMode {
    /// Molecules (bond-graph components) whole, centres inside the cell.
    #[default]
    Molecules,
    /// Unwrapped, as integrated.
    None,
}

fn default_checkpoint_interval() -> u64 {
    10_000
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            directory: default_output_dir(),
            trajectory_format: TrajectoryFormat::default(),
            trajectory_interval: default_trajectory_interval(),
            trajectory_members: None,
            observables_interval: default_observables_interval(),
            checkpoint_interval: default_checkpoint_interval(),
            checkpoint_minutes: None,
            author: None,
            wrap: WrapMode::default(),
            pressure: true,
        }
    }
}

fn default_output_dir() -> PathBuf {
    PathBuf::from("out")
}
fn default_trajectory_interval() -> u64 {
    100
}
fn default_observables_interval() -> u64 {
    10
}

/// Command-line values that replace those of the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub steps: Option<u64>,
    pub output: Option<PathBuf>,
    pub device: Option<String>,
    pub seed: Option<u64>,
    pub cuda_graphs: Option<GraphPolicy>,
    /// [integrator] timestep in fs (may change when a run is continued).
    pub timestep: Option<f64>,
    /// [run] on_blowup (may change when a run is continued).
    pub on_blowup: Option<BlowupPolicy>,
}

/// The settings a continued run may change: none of them is part of the
/// saved state, so the checkpoint stays valid (after a blow-up the usual
/// remedies are a smaller time step or reinitialisation). A checkpoint
/// stores the values in force, so `mlff-md resume DIR` keeps them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct ResumableSettings {
    /// [integrator] timestep, fs.
    pub timestep: f64,
    /// [integrator] friction, 1/ps.
    pub friction: f64,
    /// [run] on_blowup.
    pub on_blowup: BlowupPolicy,
    /// [run] max_force, eV/Å.
    pub max_force: f64,
    /// [run] max_temperature, K.
    pub max_temperature: f64,
}

/// Keys of [`ResumableSettings`] (plus `[run] steps`, `cuda_graphs` and
/// `neighbor_skin`, which do not change the trajectory either), as (table, key).
pub const RESUMABLE_KEYS: [(&str, &str); 8] = [
    ("integrator", "timestep"),
    ("integrator", "friction"),
    ("run", "on_blowup"),
    ("run", "max_force"),
    ("run", "max_temperature"),
    ("run", "steps"),
    ("run", "cuda_graphs"),
    ("run", "neighbor_skin"),
];

/// Largest step count accepted (10¹² steps: ~30 years of 1 fs steps at 1000 steps/s).
pub const MAX_STEPS: u64 = 1_000_000_000_000;

/// Largest member count accepted: beyond this a typo is likelier than intent.
pub const MAX_MEMBERS: usize = 1 << 20;

impl Config {
    /// Read and validate a config file.
    pub fn from_file(path: &Path) -> Result<Config> {
        Config::from_toml(&read_config_file(path)?, path)
    }

    /// Parse and validate config text; `path` is used for messages and to
    /// resolve relative paths.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config> {
        let mut config: Config = parse_toml(text, path)?;
        config.source = ConfigSource {
            path: normalize(path),
            text: text.to_string(),
        };
        config.validate()?;
        Ok(config)
    }

    /// The config a checkpoint was written with: its text, with the settings
    /// in force then (a continued run may have changed some).
    pub fn from_checkpoint(header: &crate::io::checkpoint::CheckpointHeader) -> Result<Config> {
        let mut c = Config::from_toml(&header.config_text, &header.config_path)?;
        if let Some(settings) = &header.settings {
            c.apply_resumable(settings)?;
        }
        Ok(c)
    }

    /// Apply command-line overrides and validate again.
    /// The step production starts at: after `[equilibration]`, else 0.
    pub fn production_start(&self) -> u64 {
        self.equilibration.as_ref().map_or(0, |e| e.steps)
    }

    pub fn apply(&mut self, overrides: &Overrides) -> Result<()> {
        if let Some(steps) = overrides.steps {
            self.run.steps = steps;
        }
        if let Some(dir) = &overrides.output {
            // Relative to the working directory, as any command-line path.
            self.output.directory = normalize(
                &std::env::current_dir()
                    .map(|cwd| cwd.join(dir))
                    .unwrap_or_else(|_| dir.clone()),
            );
        }
        if let Some(device) = &overrides.device {
            self.model.device = device.clone();
        }
        if let Some(seed) = overrides.seed {
            self.ensemble.seed = seed;
        }
        if let Some(policy) = overrides.cuda_graphs {
            self.run.cuda_graphs = policy;
        }
        if let Some(dt) = overrides.timestep {
            self.integrator.timestep = dt;
        }
        if let Some(policy) = overrides.on_blowup {
            self.run.on_blowup = policy;
        }
        self.validate()
    }

    /// The settings a continued run may change, as this config has them.
    pub fn resumable(&self) -> ResumableSettings {
        ResumableSettings {
            timestep: self.integrator.timestep,
            friction: self.integrator.friction,
            on_blowup: self.run.on_blowup,
            max_force: self.run.max_force,
            max_temperature: self.run.max_temperature,
        }
    }

    /// Take over settings stored in a checkpoint (see [`ResumableSettings`]).
    pub fn apply_resumable(&mut self, s: &ResumableSettings) -> Result<()> {
        self.integrator.timestep = s.timestep;
        self.integrator.friction = s.friction;
        self.run.on_blowup = s.on_blowup;
        self.run.max_force = s.max_force;
        self.run.max_temperature = s.max_temperature;
        self.validate()
    }

    /// The directory relative paths in the file are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        self.source
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// Resolve a path from the config file (normalised: `a/../b` is `b`).
    pub fn resolve(&self, p: &Path) -> PathBuf {
        self.source.resolve(p)
    }

    /// The structure files, resolved.
    pub fn structure_paths(&self) -> Vec<PathBuf> {
        match (&self.system.structure, &self.system.structures) {
            (Some(p), _) => vec![self.resolve(p)],
            (None, Some(list)) => list.iter().map(|p| self.resolve(p)).collect(),
            (None, None) => vec![],
        }
    }

    pub fn output_dir(&self) -> PathBuf {
        self.resolve(&self.output.directory)
    }

    /// The periodic cell given in [system] cell, checked and in the
    /// lower-triangular form, or None.
    pub fn cell(&self) -> Result<Option<crate::system::cell::Cell>> {
        use crate::system::cell::Cell;
        let bad = |m: String| self.err(&["system", "cell"], m);
        let cell = match &self.system.cell {
            None => return Ok(None),
            Some(CellSpec::Numbers(v)) if v.len() == 3 => {
                Cell::from_lengths_angles([v[0], v[1], v[2]], [90.0; 3])
            }
            Some(CellSpec::Numbers(v)) if v.len() == 6 => {
                Cell::from_lengths_angles([v[0], v[1], v[2]], [v[3], v[4], v[5]])
            }
            Some(CellSpec::Vectors(rows)) if rows.len() == 3 && rows.iter().all(|r| r.len() == 3) => {
                let flat: Vec<f64> = rows.iter().flatten().copied().collect();
                Cell::from_matrix(nalgebra::Matrix3::from_row_slice(&flat))
            }
            Some(_) => {
                return Err(bad(
                    "expected [a, b, c], [a, b, c, alpha, beta, gamma] or three vectors [[ax, ay, az], [bx, by, bz], [cx, cy, cz]]".into(),
                ))
            }
        };
        cell.map(Some).map_err(|e| bad(e.to_string()))
    }

    /// The H5MD author: [output] author, else $USER, else "unknown".
    pub fn author(&self) -> String {
        self.output
            .author
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "unknown".into())
    }

    /// Number of members R.
    /// The same run with a single member (under replica exchange, a plain
    /// Langevin member at the lowest temperature), for a quick check of a
    /// large config: every part is built as for the whole batch.
    pub fn one_member(&self) -> Config {
        let mut c = self.clone();
        if let Some(rex) = c.replica_exchange.take() {
            c.integrator.temperature = rex.ladder().first().copied();
        }
        if let Some(t) = c.ensemble.temperatures.take() {
            c.integrator.temperature = t.first().copied();
        }
        c.ensemble.members = Some(1);
        c
    }

    pub fn n_members(&self) -> usize {
        match (&self.replica_exchange, self.ensemble.members) {
            (Some(rex), _) => rex.ladder().len() * rex.members_per_temperature,
            (None, Some(m)) => m,
            (None, None) => self.ensemble.temperatures.as_ref().map_or(1, Vec::len),
        }
    }

    /// Each member's thermostat temperature from [ensemble] temperatures
    /// (contiguous equal groups), if given.
    pub fn member_temperatures(&self) -> Option<Vec<f64>> {
        let t = self.ensemble.temperatures.as_ref()?;
        let per = (self.n_members() / t.len().max(1)).max(1);
        Some(
            t.iter()
                .flat_map(|&x| std::iter::repeat_n(x, per))
                .collect(),
        )
    }

    /// Temperature of the initial velocities, if any.
    pub fn initial_temperature(&self) -> Option<f64> {
        match self.ensemble.velocities {
            VelocityInit::Zero => None,
            VelocityInit::MaxwellBoltzmann => self
                .ensemble
                .initial_temperature
                .or(self.integrator.temperature),
        }
    }

    /// [ensemble] temperatures: a Langevin run without replica exchange or
    /// [integrator] temperature, positive values, members a multiple of them.
    fn validate_member_temperatures(&self, t: &[f64], members: usize) -> Result<()> {
        let key = ["ensemble", "temperatures"];
        let problem = if t.is_empty() {
            Some("expected at least one temperature in K".to_string())
        } else if t.iter().any(|x| !x.is_finite() || *x <= 0.0) {
            Some("expected positive temperatures in K".into())
        } else if self.replica_exchange.is_some() {
            Some("with replica exchange the temperatures come from [replica_exchange]; remove this key".into())
        } else if self.integrator.temperature.is_some() {
            Some("give either [integrator] temperature (every member) or [ensemble] temperatures (one per member group), not both".into())
        } else if self.integrator.kind != IntegratorKind::Langevin {
            Some(
                "per-member temperatures need a thermostat: [integrator] kind = \"langevin\""
                    .into(),
            )
        } else if members % t.len() != 0 {
            Some(format!(
                "{members} members cannot be split evenly over {} temperatures (members must be a multiple of them)",
                t.len()
            ))
        } else {
            None
        };
        match problem {
            Some(message) => Err(self.err(&key, message)),
            None => Ok(()),
        }
    }

    fn err(&self, key: &[&str], message: String) -> Error {
        self.source.key_error(key, message)
    }

    /// Semantic checks that serde cannot express.
    pub fn validate(&self) -> Result<()> {
        match (&self.system.structure, &self.system.structures) {
            (Some(_), Some(_)) => {
                return Err(self.err(
                    &["system"],
                    "give either `structure` or `structures`, not both".into(),
                ))
            }
            (None, None) => {
                return Err(self.err(
                    &["system"],
                    "expected `structure = \"file\"` or `structures = [\"a\", \"b\"]`".into(),
                ))
            }
            (None, Some(list)) if list.is_empty() => {
                return Err(self.err(
                    &["system", "structures"],
                    "expected at least one file".into(),
                ))
            }
            _ => {}
        }

        let m = &self.model;
        let unexpected = |name: &str, set: bool| -> Result<()> {
            if set {
                Err(self.err(
                    &["model", name],
                    format!("not a parameter of model kind {:?}", m.kind),
                ))
            } else {
                Ok(())
            }
        };
        match m.kind {
            ModelKind::Torchscript => {
                if m.path.is_none() {
                    return Err(self.err(
                        &["model"],
                        "expected `path = \"model.pt\"` (a TorchScript file)".into(),
                    ));
                }
                unexpected("k", m.k.is_some())?;
                unexpected("epsilon", m.epsilon.is_some())?;
                unexpected("sigma", m.sigma.is_some())?;
                unexpected("cutoff", m.cutoff.is_some())?;
            }
            ModelKind::Harmonic => {
                positive(self, &["model", "k"], m.k, "eV/Å²", true)?;
                unexpected("path", m.path.is_some())?;
                unexpected("epsilon", m.epsilon.is_some())?;
                unexpected("sigma", m.sigma.is_some())?;
                unexpected("cutoff", m.cutoff.is_some())?;
            }
            ModelKind::LennardJones => {
                positive(self, &["model", "epsilon"], m.epsilon, "eV", true)?;
                positive(self, &["model", "sigma"], m.sigma, "Å", true)?;
                positive(self, &["model", "cutoff"], m.cutoff, "Å", false)?;
                unexpected("path", m.path.is_some())?;
                unexpected("k", m.k.is_some())?;
            }
        }
        crate::device::parse_device(&m.device)
            .map_err(|msg| self.err(&["model", "device"], msg))?;
        let cell = self.cell()?;
        if self.system.cell.is_some() && self.system.periodic {
            return Err(self.err(
                &["system", "periodic"],
                "give either `cell = [...]` or `periodic = true` (the structure file's cell), not both".into(),
            ));
        }
        let periodic = cell.is_some() || self.system.periodic;
        if periodic && m.kind == ModelKind::Harmonic {
            return Err(self.err(
                &["model", "kind"],
                "a periodic system needs a model that takes pairs: a TorchScript model of interface v2 (models/README.md, e.g. models/ani1x_nl.pt) or kind = \"lennard-jones\" with a cutoff".into(),
            ));
        }
        if m.kind == ModelKind::LennardJones && periodic && m.cutoff.is_none() {
            return Err(self.err(
                &["model", "cutoff"],
                "a periodic Lennard-Jones system needs `cutoff` (Å)".into(),
            ));
        }
        if m.shift.is_some() && (m.kind != ModelKind::LennardJones || m.cutoff.is_none()) {
            return Err(self.err(
                &["model", "shift"],
                "`shift` is for kind = \"lennard-jones\" with a cutoff".into(),
            ));
        }
        if let (Some(c), Some(rc)) = (&cell, m.cutoff) {
            c.check_cutoff(rc)
                .map_err(|e| self.err(&["system", "cell"], e.to_string()))?;
        }

        let i = &self.integrator;
        positive(
            self,
            &["integrator", "timestep"],
            Some(i.timestep),
            "fs",
            true,
        )?;
        if i.timestep > 100.0 {
            return Err(self.err(
                &["integrator", "timestep"],
                format!(
                    "{} fs is far beyond any stable MD time step (expected ≤ 100 fs)",
                    i.timestep
                ),
            ));
        }
        positive(
            self,
            &["integrator", "temperature"],
            i.temperature,
            "K",
            false,
        )?;
        if i.kind == IntegratorKind::Langevin
            && i.temperature.is_none()
            && self.replica_exchange.is_none()
            && self.ensemble.temperatures.is_none()
        {
            return Err(self.err(
                &["integrator"],
                "the Langevin integrator needs `temperature` (K), or one per member group in [ensemble] temperatures".into(),
            ));
        }
        if !i.friction.is_finite() || i.friction < 0.0 {
            return Err(self.err(
                &["integrator", "friction"],
                format!("expected a friction ≥ 0 in 1/ps, got {}", i.friction),
            ));
        }

        if let Some(b) = &self.barostat {
            positive(
                self,
                &["barostat", "pressure"],
                Some(b.pressure),
                "bar",
                true,
            )?;
            if b.interval == 0 {
                return Err(self.err(
                    &["barostat", "interval"],
                    "expected at least 1 step between volume moves".into(),
                ));
            }
            if !periodic {
                return Err(self.err(
                    &["barostat"],
                    "a barostat needs a periodic system ([system] cell or periodic = true)".into(),
                ));
            }
            if self.integrator.kind != IntegratorKind::Langevin {
                return Err(self.err(
                    &["barostat"],
                    "a barostat samples at the thermostat's temperature: it needs [integrator] kind = \"langevin\"".into(),
                ));
            }
        }
        if let Some(rex) = &self.replica_exchange {
            self.validate_replica_exchange(rex)?;
        }
        let e = &self.ensemble;
        let members = self.n_members();
        if members == 0 || members > MAX_MEMBERS {
            return Err(self.err(
                &["ensemble", "members"],
                format!("expected 1 to {MAX_MEMBERS} members, got {members}"),
            ));
        }
        if let Some(t) = &e.temperatures {
            self.validate_member_temperatures(t, members)?;
        }
        positive(
            self,
            &["ensemble", "initial_temperature"],
            e.initial_temperature,
            "K",
            false,
        )?;
        if e.velocities == VelocityInit::MaxwellBoltzmann
            && self.initial_temperature().is_none()
            && self.replica_exchange.is_none()
            && e.temperatures.is_none()
        {
            return Err(self.err(
                &["ensemble", "velocities"],
                "Maxwell-Boltzmann velocities need `initial_temperature` here or `temperature` in [integrator]; use velocities = \"zero\" otherwise".into(),
            ));
        }

        positive(
            self,
            &["run", "max_force"],
            Some(self.run.max_force),
            "eV/Å",
            true,
        )?;
        positive(
            self,
            &["run", "max_temperature"],
            Some(self.run.max_temperature),
            "K",
            true,
        )?;
        if !(self.run.neighbor_skin.is_finite() && self.run.neighbor_skin >= 0.0) {
            return Err(self.err(
                &["run", "neighbor_skin"],
                format!(
                    "expected a distance of 0 Å or more, got {}",
                    self.run.neighbor_skin
                ),
            ));
        }
        let o = &self.output;
        positive(
            self,
            &["output", "checkpoint_minutes"],
            o.checkpoint_minutes,
            "minutes",
            false,
        )?;
        if self.run.steps > MAX_STEPS {
            return Err(self.err(
                &["run", "steps"],
                format!("expected at most {MAX_STEPS} steps, got {}", self.run.steps),
            ));
        }
        if o.observables_interval == 0 {
            return Err(self.err(
                &["output", "observables_interval"],
                "expected a positive number of steps".into(),
            ));
        }
        if let Some(members) = &o.trajectory_members {
            if let Some(bad) = members.iter().find(|&&r| r >= self.n_members()) {
                return Err(self.err(
                    &["output", "trajectory_members"],
                    format!(
                        "member {bad} does not exist (members are 0..{})",
                        self.n_members()
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    fn validate_replica_exchange(&self, rex: &ReplicaExchangeConfig) -> Result<()> {
        let key = |k: &'static str| ["replica_exchange", k];
        if self.integrator.kind != IntegratorKind::Langevin {
            return Err(self.err(
                &["integrator", "kind"],
                "replica exchange needs kind = \"langevin\" (each replica is thermostatted at its temperature)".into(),
            ));
        }
        match (&rex.temperatures, rex.t_min, rex.t_max, rex.n_replicas) {
            (Some(t), None, None, None) => {
                if t.len() < 2 {
                    return Err(self.err(
                        &key("temperatures"),
                        "expected at least 2 temperatures".into(),
                    ));
                }
                if t.iter().any(|x| !(x.is_finite() && *x > 0.0)) {
                    return Err(self.err(
                        &key("temperatures"),
                        "expected positive temperatures in K".into(),
                    ));
                }
                if t.windows(2).any(|w| w[1] <= w[0]) {
                    return Err(self.err(
                        &key("temperatures"),
                        "expected strictly increasing temperatures".into(),
                    ));
                }
            }
            (None, Some(lo), Some(hi), Some(n)) => {
                positive(self, &key("t_min"), Some(lo), "K", true)?;
                positive(self, &key("t_max"), Some(hi), "K", true)?;
                if hi <= lo {
                    return Err(self.err(
                        &key("t_max"),
                        format!("expected t_max > t_min = {lo} K, got {hi}"),
                    ));
                }
                if !(2..=MAX_MEMBERS).contains(&n) {
                    return Err(self.err(
                        &key("n_replicas"),
                        format!("expected at least 2 replicas, got {n}"),
                    ));
                }
            }
            _ => {
                return Err(self.err(
                    &["replica_exchange"],
                    "give either `temperatures = [...]` or all of `t_min`, `t_max`, `n_replicas`"
                        .into(),
                ))
            }
        }
        if rex.exchange_interval == 0 {
            return Err(self.err(
                &key("exchange_interval"),
                "expected a positive number of steps".into(),
            ));
        }
        if rex.members_per_temperature == 0 {
            return Err(self.err(
                &key("members_per_temperature"),
                "expected at least 1".into(),
            ));
        }
        if rex.swap_attempts == Some(0) {
            return Err(self.err(&key("swap_attempts"), "expected at least 1".into()));
        }
        if rex.swap_attempts.is_some() && rex.scheme != ExchangeScheme::AllPairs {
            return Err(self.err(
                &key("swap_attempts"),
                "only used with scheme = \"all-pairs\"".into(),
            ));
        }
        let r = rex
            .ladder()
            .len()
            .saturating_mul(rex.members_per_temperature);
        if let Some(m) = self.ensemble.members {
            if m != r {
                return Err(self.err(
                    &["ensemble", "members"],
                    format!("replica exchange runs temperatures × members_per_temperature = {r} members; got members = {m} (omit it)"),
                ));
            }
        }
        if self.integrator.temperature.is_some() {
            return Err(self.err(
                &["integrator", "temperature"],
                "with replica exchange the temperatures come from [replica_exchange]; remove this key".into(),
            ));
        }
        Ok(())
    }
}

/// Check an optional number is finite and positive (when present, or when required).
fn positive(cfg: &Config, key: &[&str], v: Option<f64>, unit: &str, required: bool) -> Result<()> {
    match v {
        None if required => {
            Err(cfg.err(key, format!("missing; expected a positive value in {unit}")))
        }
        None => Ok(()),
        Some(x) if !(x.is_finite() && x > 0.0) => {
            Err(cfg.err(key, format!("expected a positive value in {unit}, got {x}")))
        }
        Some(_) => Ok(()),
    }
}

/// A path with `.` and `name/..` components removed, without touching the
/// file system (symbolic links stay as the user wrote them); what is printed
/// and stored (summary.json, /parameters) reads as the user would write it.
pub fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                // `/..` is `/`.
                Some(Component::RootDir) | Some(Component::Prefix(_)) => {}
                _ => out.push(c),
            },
            other => out.push(other),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}

/// The text of a config file (an unreadable one is an error about the file).
pub(crate) fn read_config_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        line: 0,
        column: 0,
        message: format!("cannot read config file: {e}"),
    })
}

/// Deserialise TOML text, errors naming `path`, line and column.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
        Error::Config {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })
}

impl ConfigSource {
    /// An error about `key` (dotted path), at its line in the file.
    pub(crate) fn key_error(&self, key: &[&str], message: String) -> Error {
        let (line, column) = locate_key(&self.text, key).unwrap_or((0, 0));
        Error::Config {
            path: self.path.clone(),
            line,
            column,
            message: format!("{}: {message}", key.join(".")),
        }
    }

    /// Resolve a path written in the file against the file's directory.
    pub(crate) fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            normalize(p)
        } else {
            normalize(&self.path.parent().unwrap_or(Path::new("")).join(p))
        }
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Line and column of a dotted key (or of its table) in TOML text.
fn locate_key(text: &str, key: &[&str]) -> Option<(usize, usize)> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut found = None;
    for part in key {
        let (k, v) = table.iter().find(|(k, _)| k.get_ref().as_ref() == *part)?;
        found = Some(k.span().start);
        match v.get_ref() {
            DeValue::Table(t) => table = t,
            _ => break,
        }
    }
    found.map(|off| line_col(text, off))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[system]
structure = "mol.xyz"

[model]
path = "m.pt"

[integrator]
kind = "langevin"
timestep = 0.5
temperature = 300.0

[run]
steps = 10
"#;

    fn parse(text: &str) -> Result<Config> {
        Config::from_toml(text, Path::new("/tmp/c.toml"))
    }

    #[test]
    fn defaults_are_filled() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.n_members(), 1);
        assert_eq!(c.output.trajectory_format, TrajectoryFormat::Xtc);
        assert_eq!(c.integrator.precision, Dtype::Float64);
        assert_eq!(c.structure_paths(), vec![PathBuf::from("/tmp/mol.xyz")]);
        assert_eq!(c.initial_temperature(), Some(300.0));
    }

    #[test]
    fn unknown_key_names_line() {
        let text = GOOD.replace("steps = 10", "steps = 10\nstpes = 3");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("c.toml:15:"), "{e}");
        assert!(e.contains("stpes"), "{e}");
    }

    #[test]
    fn semantic_error_names_key_and_line() {
        let text = GOOD.replace("timestep = 0.5", "timestep = -0.5");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("c.toml:10:1: integrator.timestep"), "{e}");
    }

    #[test]
    fn replica_exchange_ladder() {
        let text = GOOD.replace("temperature = 300.0", "")
            + "[replica_exchange]\nt_min = 300.0\nt_max = 600.0\nn_replicas = 3\nmembers_per_temperature = 2\n";
        let c = parse(&text).unwrap();
        let ladder = c.replica_exchange.as_ref().unwrap().ladder();
        assert!((ladder[1] - 300.0 * 2f64.sqrt()).abs() < 1e-9);
        assert_eq!(c.n_members(), 6);
        let bad = text.replace("t_max = 600.0", "t_max = 200.0");
        assert!(parse(&bad)
            .unwrap_err()
            .to_string()
            .contains("replica_exchange.t_max"));
        let verlet = text.replace("kind = \"langevin\"", "kind = \"verlet\"");
        assert!(parse(&verlet).unwrap_err().to_string().contains("langevin"));
    }

    #[test]
    fn paths_are_normalised() {
        assert_eq!(
            normalize(Path::new("configs/../out/x")),
            PathBuf::from("out/x")
        );
        assert_eq!(normalize(Path::new("/a/./b/../../c")), PathBuf::from("/c"));
        assert_eq!(normalize(Path::new("../x")), PathBuf::from("../x"));
        assert_eq!(normalize(Path::new("/..")), PathBuf::from("/"));
        assert_eq!(normalize(Path::new("a/..")), PathBuf::from("."));
        let c = Config::from_toml(GOOD, Path::new("/tmp/p/../c.toml")).unwrap();
        assert_eq!(
            c.resolve(Path::new("../models/m.pt")),
            PathBuf::from("/models/m.pt")
        );
    }

    #[test]
    fn resumable_settings_round_trip() {
        let mut c = parse(GOOD).unwrap();
        let mut s = c.resumable();
        s.timestep = 0.25;
        s.on_blowup = BlowupPolicy::Reinitialize;
        c.apply_resumable(&s).unwrap();
        assert_eq!(c.integrator.timestep, 0.25);
        assert_eq!(c.run.on_blowup, BlowupPolicy::Reinitialize);
        s.timestep = -1.0;
        assert!(c.apply_resumable(&s).is_err());
    }

    #[test]
    fn langevin_needs_temperature() {
        let text = GOOD.replace("temperature = 300.0", "");
        assert!(parse(&text).is_err());
    }
}
