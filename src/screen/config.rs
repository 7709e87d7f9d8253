//! The TOML config of `mlff-md screen`: the model, the minimisation, how
//! batches are sized and where results go. The library itself is named on
//! the command line, so one config serves many libraries.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::{parse_toml, read_config_file, ConfigSource, ModelConfig, ModelKind};
use crate::error::Result;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScreenConfig {
    /// As in a run config ([model] path, dtype, device).
    pub model: ModelConfig,
    #[serde(default)]
    pub minimize: ScreenMinimize,
    /// Conformer sampling after the first minimisation (optional).
    pub conformers: Option<ConformerConfig>,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub output: ScreenOutput,
    #[serde(skip)]
    pub source: ConfigSource,
}

/// `[minimize]`: FIRE per molecule (ASE's parameters).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScreenMinimize {
    /// Converged when every atomic force is below this (eV/Å).
    #[serde(default = "default_max_force")]
    pub max_force: f64,
    /// Iterations a molecule may take before it leaves unconverged.
    #[serde(default = "default_max_steps")]
    pub max_steps: u64,
    /// Largest displacement of a molecule per iteration (Å, whole-molecule norm).
    #[serde(default = "default_max_step")]
    pub max_step: f64,
}

impl Default for ScreenMinimize {
    fn default() -> Self {
        ScreenMinimize {
            max_force: default_max_force(),
            max_steps: default_max_steps(),
            max_step: default_max_step(),
        }
    }
}

fn default_max_force() -> f64 {
    0.05
}
fn default_max_steps() -> u64 {
    2000
}
fn default_max_step() -> f64 {
    0.2
}

/// `[conformers]`: after its first minimisation, each molecule runs
/// `members` copies of Langevin dynamics for `steps` steps; `frames`
/// structures of each copy, evenly spaced, are minimised too, and the
/// lowest energy of all is kept.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConformerConfig {
    pub members: u64,
    pub steps: u64,
    #[serde(default = "one_frame")]
    pub frames: u64,
    /// K.
    pub temperature: f64,
    /// fs.
    #[serde(default = "default_timestep")]
    pub timestep: f64,
    /// 1/ps.
    #[serde(default = "default_friction")]
    pub friction: f64,
    #[serde(default)]
    pub seed: u64,
}

fn one_frame() -> u64 {
    1
}
fn default_timestep() -> f64 {
    0.5
}
fn default_friction() -> f64 {
    10.0
}

/// `[batch]`: how many molecules are minimised at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Hard cap on the atoms of one batch (all molecules together).
    #[serde(default = "default_max_atoms")]
    pub max_atoms: usize,
    /// Hard cap on the molecules of one batch.
    #[serde(default = "default_max_molecules")]
    pub max_molecules: usize,
    /// On a GPU, the share of the device memory free at the start that the
    /// batch may plan to use, from a probe call's measured bytes per atom.
    #[serde(default = "default_memory_fraction")]
    pub memory_fraction: f64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_atoms: default_max_atoms(),
            max_molecules: default_max_molecules(),
            memory_fraction: default_memory_fraction(),
        }
    }
}

fn default_max_atoms() -> usize {
    100_000
}
fn default_max_molecules() -> usize {
    4096
}
fn default_memory_fraction() -> f64 {
    0.5
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScreenOutput {
    #[serde(default = "default_output_dir")]
    pub directory: PathBuf,
}

impl Default for ScreenOutput {
    fn default() -> Self {
        ScreenOutput {
            directory: default_output_dir(),
        }
    }
}

fn default_output_dir() -> PathBuf {
    PathBuf::from("out/screen")
}

impl ScreenConfig {
    pub fn from_file(path: &Path) -> Result<ScreenConfig> {
        Self::from_toml(&read_config_file(path)?, path)
    }

    pub fn from_toml(text: &str, path: &Path) -> Result<ScreenConfig> {
        let mut c: ScreenConfig = parse_toml(text, path)?;
        c.source = ConfigSource {
            path: crate::config::normalize(path),
            text: text.to_string(),
        };
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<()> {
        let err = |key: &[&str], m: String| Err(self.source.key_error(key, m));
        match self.model.kind {
            ModelKind::Torchscript if self.model.path.is_none() => {
                return err(&["model"], "expected `path = \"model.pt\"` (a TorchScript file)".into())
            }
            ModelKind::Harmonic => {
                return err(
                    &["model", "kind"],
                    "a harmonic restraint has its minimum at the start: nothing to screen; use a TorchScript model".into(),
                )
            }
            ModelKind::LennardJones if self.model.cutoff.is_none() => {
                return err(
                    &["model", "cutoff"],
                    "screening takes Lennard-Jones through the engine's neighbour list: give a cutoff (Å)".into(),
                )
            }
            _ => {}
        }
        let positive = |key: &[&str], v: f64, unit: &str| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                err(key, format!("expected a positive value in {unit}, got {v}"))
            }
        };
        positive(&["minimize", "max_force"], self.minimize.max_force, "eV/Å")?;
        positive(&["minimize", "max_step"], self.minimize.max_step, "Å")?;
        if self.minimize.max_steps == 0 {
            return err(
                &["minimize", "max_steps"],
                "expected at least 1 iteration".into(),
            );
        }
        if let Some(c) = &self.conformers {
            if c.members == 0 || c.steps == 0 || c.frames == 0 || c.frames > c.steps {
                return err(
                    &["conformers"],
                    format!(
                        "expected members >= 1, steps >= 1 and 1 <= frames <= steps; got members = {}, steps = {}, frames = {}",
                        c.members, c.steps, c.frames
                    ),
                );
            }
            positive(&["conformers", "temperature"], c.temperature, "K")?;
            positive(&["conformers", "timestep"], c.timestep, "fs")?;
            positive(&["conformers", "friction"], c.friction, "1/ps")?;
        }
        if self.batch.max_atoms == 0 || self.batch.max_molecules == 0 {
            return err(
                &["batch"],
                "max_atoms and max_molecules must be at least 1".into(),
            );
        }
        if !(self.batch.memory_fraction > 0.0 && self.batch.memory_fraction <= 0.95) {
            return err(
                &["batch", "memory_fraction"],
                format!(
                    "expected a share of the free device memory in (0, 0.95], got {}",
                    self.batch.memory_fraction
                ),
            );
        }
        Ok(())
    }

    pub fn output_dir(&self) -> PathBuf {
        self.source.resolve(&self.output.directory)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ScreenConfig> {
        ScreenConfig::from_toml(text, Path::new("/tmp/s/screen.toml"))
    }

    #[test]
    fn defaults_and_paths() {
        let c = parse("[model]\npath = \"../m.pt\"\n").unwrap();
        assert_eq!(c.minimize.max_force, 0.05);
        assert_eq!(c.batch.max_molecules, 4096);
        assert_eq!(c.output_dir(), PathBuf::from("/tmp/s/out/screen"));
        assert_eq!(
            c.source.resolve(c.model.path.as_deref().unwrap()),
            PathBuf::from("/tmp/m.pt")
        );
    }

    #[test]
    fn bad_values_name_their_line() {
        let e = parse("[model]\npath = \"m.pt\"\n[minimize]\nmax_force = -1\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("screen.toml:4") && e.contains("minimize.max_force"),
            "{e}"
        );
        let e = parse("[model]\npath = \"m.pt\"\n[batch]\nmax_atom = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("screen.toml:4") && e.contains("max_atom"), "{e}");
        let e = parse("[model]\nkind = \"harmonic\"\nk = 1.0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("screen.toml:2"), "{e}");
    }
}
