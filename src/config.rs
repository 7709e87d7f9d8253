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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleConfig {
    /// Number of members R run in lockstep.
    #[serde(default = "one")]
    pub members: usize,
    /// Seed of every random number of the run.
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub velocities: VelocityInit,
    /// Temperature of the initial velocities in K (default: the integrator's).
    pub initial_temperature: Option<f64>,
}

impl Default for EnsembleConfig {
    fn default() -> Self {
        EnsembleConfig {
            members: 1,
            seed: 0,
            velocities: VelocityInit::default(),
            initial_temperature: None,
        }
    }
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Number of MD steps.
    pub steps: u64,
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
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            directory: default_output_dir(),
            trajectory_format: TrajectoryFormat::default(),
            trajectory_interval: default_trajectory_interval(),
            trajectory_members: None,
            observables_interval: default_observables_interval(),
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
}

/// Largest member count accepted: beyond this a typo is likelier than intent.
pub const MAX_MEMBERS: usize = 1 << 20;

impl Config {
    /// Read and validate a config file.
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read config file: {e}"),
        })?;
        Config::from_toml(&text, path)
    }

    /// Parse and validate config text; `path` is used for messages and to
    /// resolve relative paths.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            Error::Config {
                path: path.to_path_buf(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        config.source = ConfigSource {
            path: path.to_path_buf(),
            text: text.to_string(),
        };
        config.validate()?;
        Ok(config)
    }

    /// Apply command-line overrides and validate again.
    pub fn apply(&mut self, overrides: &Overrides) -> Result<()> {
        if let Some(steps) = overrides.steps {
            self.run.steps = steps;
        }
        if let Some(dir) = &overrides.output {
            // Relative to the working directory, as any command-line path.
            self.output.directory = std::env::current_dir()
                .map(|cwd| cwd.join(dir))
                .unwrap_or_else(|_| dir.clone());
        }
        if let Some(device) = &overrides.device {
            self.model.device = device.clone();
        }
        if let Some(seed) = overrides.seed {
            self.ensemble.seed = seed;
        }
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

    /// Resolve a path from the config file.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir().join(p)
        }
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

    fn err(&self, key: &[&str], message: String) -> Error {
        let (line, column) = locate_key(&self.source.text, key).unwrap_or((0, 0));
        Error::Config {
            path: self.source.path.clone(),
            line,
            column,
            message: format!("{}: {message}", key.join(".")),
        }
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
            }
            ModelKind::Harmonic => {
                positive(self, &["model", "k"], m.k, "eV/Å²", true)?;
                unexpected("path", m.path.is_some())?;
                unexpected("epsilon", m.epsilon.is_some())?;
                unexpected("sigma", m.sigma.is_some())?;
            }
            ModelKind::LennardJones => {
                positive(self, &["model", "epsilon"], m.epsilon, "eV", true)?;
                positive(self, &["model", "sigma"], m.sigma, "Å", true)?;
                unexpected("path", m.path.is_some())?;
                unexpected("k", m.k.is_some())?;
            }
        }
        crate::device::parse_device(&m.device)
            .map_err(|msg| self.err(&["model", "device"], msg))?;

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
        if i.kind == IntegratorKind::Langevin && i.temperature.is_none() {
            return Err(self.err(
                &["integrator"],
                "the Langevin integrator needs `temperature` (K)".into(),
            ));
        }
        if !i.friction.is_finite() || i.friction < 0.0 {
            return Err(self.err(
                &["integrator", "friction"],
                format!("expected a friction ≥ 0 in 1/ps, got {}", i.friction),
            ));
        }

        let e = &self.ensemble;
        if e.members == 0 || e.members > MAX_MEMBERS {
            return Err(self.err(
                &["ensemble", "members"],
                format!("expected 1 to {MAX_MEMBERS} members, got {}", e.members),
            ));
        }
        positive(
            self,
            &["ensemble", "initial_temperature"],
            e.initial_temperature,
            "K",
            false,
        )?;
        if e.velocities == VelocityInit::MaxwellBoltzmann && self.initial_temperature().is_none() {
            return Err(self.err(
                &["ensemble", "velocities"],
                "Maxwell-Boltzmann velocities need `initial_temperature` here or `temperature` in [integrator]; use velocities = \"zero\" otherwise".into(),
            ));
        }

        let o = &self.output;
        if o.observables_interval == 0 {
            return Err(self.err(
                &["output", "observables_interval"],
                "expected a positive number of steps".into(),
            ));
        }
        if let Some(members) = &o.trajectory_members {
            if let Some(bad) = members.iter().find(|&&r| r >= e.members) {
                return Err(self.err(
                    &["output", "trajectory_members"],
                    format!("member {bad} does not exist (members are 0..{})", e.members),
                ));
            }
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
        assert_eq!(c.ensemble.members, 1);
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
    fn langevin_needs_temperature() {
        let text = GOOD.replace("temperature = 300.0", "");
        assert!(parse(&text).is_err());
    }
}
