//! Checkpoints: everything needed to continue a run exactly.
//!
//! File layout (little endian): magic `MLFFMDCK`, format version (u32), header
//! length (u64), JSON header, then positions, velocities, forces ([R*N*3]
//! f64 each) and energies ([R] f64), then the SHA-256 of everything before it.
//! Written atomically: a temporary file is written and fsynced, the current
//! checkpoint becomes `checkpoint.prev.bin`, and the temporary file is renamed
//! into place; a crash at any moment leaves at least one complete checkpoint.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::ResumableSettings;
use crate::error::{Error, Result};
use crate::sampling::ReplicaExchange;

const MAGIC: &[u8; 8] = b"MLFFMDCK";
pub const FORMAT_VERSION: u32 = 1;
pub const CHECKPOINT_FILE: &str = "checkpoint.bin";
pub const PREVIOUS_FILE: &str = "checkpoint.prev.bin";
const TEMP_FILE: &str = "checkpoint.tmp";

/// Where each reporter stood when the checkpoint was written, so a resumed
/// run can cut off anything written after it and append from there.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReporterPositions {
    /// Rows in each observables series.
    pub observables_rows: usize,
    /// Rows in the replica-exchange records.
    pub exchange_rows: usize,
    /// Byte length of each trajectory file (file name → bytes).
    pub trajectory_bytes: Vec<(String, u64)>,
}

/// The small part of a checkpoint, stored as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointHeader {
    pub step: u64,
    pub n_members: usize,
    pub n_atoms: usize,
    /// Absolute path of the config the run was started with.
    pub config_path: PathBuf,
    /// The config text, to refuse resuming with a different setup.
    pub config_text: String,
    pub seed: u64,
    /// Draw counter of the integrator's random stream (Langevin).
    pub integrator_rng_counter: Option<u64>,
    /// Written before moves were plug-ins (see `moves`).
    pub replica_exchange: Option<ReplicaExchange>,
    pub reporters: ReporterPositions,
    /// Wall-clock seconds the run has taken up to this checkpoint.
    pub elapsed_seconds: f64,
    pub mlff_md_version: String,
    // The fields below were added after format version 1 was first written;
    // checkpoints without them still load (serde defaults) and behave as
    // they did then.
    /// The step count the run was asked to reach (`--steps` or [run] steps),
    /// so a plain `resume` continues to it.
    #[serde(default)]
    pub target_steps: Option<u64>,
    /// SHA-256 of the model file the state was computed with.
    #[serde(default)]
    pub model_sha256: Option<String>,
    /// Settings a continued run may change, as they were in force.
    #[serde(default)]
    pub settings: Option<ResumableSettings>,
    /// (step, time in fs) from which the current time step counts: the time
    /// of step s is t0 + (s − s0)·dt. (0, 0) unless the time step changed.
    #[serde(default)]
    pub time_origin: Option<(u64, f64)>,
    /// [R·9] rows a, b, c of each member's periodic cell (Å), if periodic.
    #[serde(default)]
    pub cells: Option<Vec<f64>>,
    /// Shape of the force provider's neighbour list (grid and capacities),
    /// so a continued run builds the lists of an uninterrupted one.
    #[serde(default)]
    pub neighbor_list: Option<crate::neighbors::ListShape>,
    /// Written before moves were plug-ins: the replica-exchange and
    /// barostat states, now kept in `moves` (read by [`Self::move_state`]).
    #[serde(default)]
    pub barostat: Option<crate::sampling::MonteCarloBarostat>,
    /// Each move's state by its name ([`crate::sampling::Move::save`]).
    #[serde(default)]
    pub moves: std::collections::BTreeMap<String, serde_json::Value>,
    /// SHA-256 of the compiled package (`mlff-md compile`) the forces came
    /// from, None for the model file itself: a continued run takes the same
    /// path (src/compile.rs).
    #[serde(default)]
    pub package_sha256: Option<String>,
}

impl CheckpointHeader {
    /// The saved state of the move called `name`: from `moves`, or from the
    /// field a checkpoint written before moves were plug-ins kept it in.
    pub fn move_state(&self, name: &str) -> Option<serde_json::Value> {
        if let Some(v) = self.moves.get(name) {
            return Some(v.clone());
        }
        let legacy = match name {
            "replica_exchange" => serde_json::to_value(self.replica_exchange.as_ref()?),
            "barostat" => serde_json::to_value(self.barostat.as_ref()?),
            _ => return None,
        };
        legacy.ok()
    }

    /// The saved state of a move, as its type.
    pub fn move_state_as<T: serde::de::DeserializeOwned>(&self, name: &str) -> Option<T> {
        serde_json::from_value(self.move_state(name)?).ok()
    }
}

/// A complete checkpoint: header plus the state arrays.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub header: CheckpointHeader,
    pub positions: Vec<f64>,
    pub velocities: Vec<f64>,
    pub forces: Vec<f64>,
    pub energies: Vec<f64>,
}

fn push_f64s(buf: &mut Vec<u8>, v: &[f64]) {
    buf.reserve(v.len() * 8);
    for x in v {
        buf.extend_from_slice(&x.to_le_bytes());
    }
}

fn read_f64s(bytes: &[u8], n: usize, at: &mut usize) -> Option<Vec<f64>> {
    let end = at.checked_add(n.checked_mul(8)?)?;
    let slice = bytes.get(*at..end)?;
    *at = end;
    Some(
        slice
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunk")))
            .collect(),
    )
}

impl Checkpoint {
    /// Serialise to bytes, checksum included.
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = serde_json::to_vec(&self.header).expect("header serialises");
        let mut buf = Vec::with_capacity(
            header.len() + 8 * (3 * self.positions.len() + self.energies.len()) + 64,
        );
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        buf.extend_from_slice(&(header.len() as u64).to_le_bytes());
        buf.extend_from_slice(&header);
        push_f64s(&mut buf, &self.positions);
        push_f64s(&mut buf, &self.velocities);
        push_f64s(&mut buf, &self.forces);
        push_f64s(&mut buf, &self.energies);
        let digest = Sha256::digest(&buf);
        buf.extend_from_slice(&digest);
        buf
    }

    /// Parse and verify bytes written by [`Checkpoint::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Checkpoint, String> {
        if bytes.len() < 8 + 4 + 8 + 32 || &bytes[..8] != MAGIC {
            return Err("not an mlff-md checkpoint".into());
        }
        let (body, digest) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != digest {
            return Err("checksum mismatch (file truncated or corrupted)".into());
        }
        let version = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
        if version != FORMAT_VERSION {
            return Err(format!(
                "checkpoint format version {version}; this mlff-md reads version {FORMAT_VERSION}"
            ));
        }
        let header_len = u64::from_le_bytes(body[12..20].try_into().expect("8 bytes")) as usize;
        let header_end = 20usize
            .checked_add(header_len)
            .filter(|&e| e <= body.len())
            .ok_or("header length out of range")?;
        let header: CheckpointHeader = serde_json::from_slice(&body[20..header_end])
            .map_err(|e| format!("bad header: {e}"))?;
        let rows = header.n_members * header.n_atoms * 3;
        let mut at = header_end;
        let mut next = |n| read_f64s(body, n, &mut at).ok_or("state arrays truncated");
        let positions = next(rows)?;
        let velocities = next(rows)?;
        let forces = next(rows)?;
        let energies = next(header.n_members)?;
        if at != body.len() {
            return Err("trailing bytes after the state arrays".into());
        }
        Ok(Checkpoint {
            header,
            positions,
            velocities,
            forces,
            energies,
        })
    }

    /// Write atomically into `dir` (see the module documentation).
    pub fn write_atomic(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join(TEMP_FILE);
        let current = dir.join(CHECKPOINT_FILE);
        let previous = dir.join(PREVIOUS_FILE);
        let bytes = self.to_bytes();
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            drop(f);
            if current.exists() {
                std::fs::rename(&current, &previous)?;
            }
            std::fs::rename(&tmp, &current)?;
            // Make the renames durable.
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::output(
                &current,
                format!("cannot write checkpoint: {e}; the previous checkpoint is untouched"),
            )
        })
    }

    /// Read the newest valid checkpoint in `dir`, falling back to the previous
    /// one if the newest is missing or damaged. Returns it and its path.
    pub fn read_latest(dir: &Path) -> Result<(Checkpoint, PathBuf)> {
        Self::read_latest_noting(dir).map(|(c, p, _)| (c, p))
    }

    /// [`Checkpoint::read_latest`], plus, when the newest checkpoint had to
    /// be skipped, a sentence saying why and how many steps that costs.
    pub fn read_latest_noting(dir: &Path) -> Result<(Checkpoint, PathBuf, Option<String>)> {
        let mut problems = Vec::new();
        // Step of a damaged newest checkpoint, when its header still reads.
        let mut skipped_step = None;
        for name in [CHECKPOINT_FILE, PREVIOUS_FILE] {
            let path = dir.join(name);
            match std::fs::read(&path) {
                Ok(bytes) => match Checkpoint::from_bytes(&bytes) {
                    Ok(c) => {
                        let note = (!problems.is_empty()).then(|| {
                            let lost = match skipped_step {
                                Some(s) if s > c.header.step => format!(
                                    "it was at step {s}, so the {} steps after step {} are run again",
                                    s - c.header.step,
                                    c.header.step
                                ),
                                _ => format!(
                                    "its step is unreadable, so the steps after step {} (up to one checkpoint interval) are run again",
                                    c.header.step
                                ),
                            };
                            format!(
                                "the newest checkpoint could not be used ({}); resuming from {name} at step {} instead: {lost}",
                                problems.join("; "),
                                c.header.step
                            )
                        });
                        return Ok((c, path, note));
                    }
                    Err(e) => {
                        skipped_step = skipped_step.or_else(|| peek_step(&bytes));
                        problems.push(format!("{name}: {e}"))
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if name == CHECKPOINT_FILE && dir.join(PREVIOUS_FILE).exists() {
                        problems.push(format!("{name} is missing"));
                    }
                }
                Err(e) => problems.push(format!("{name}: {e}")),
            }
        }
        Err(Error::Invalid(if problems.is_empty() {
            format!("no checkpoint in {} to resume from", dir.display())
        } else {
            format!(
                "no usable checkpoint in {}: {}",
                dir.display(),
                problems.join("; ")
            )
        }))
    }
}

/// The step in a checkpoint's header, read without trusting the checksum
/// (for messages about a damaged file only).
fn peek_step(bytes: &[u8]) -> Option<u64> {
    if bytes.get(..8)? != MAGIC {
        return None;
    }
    let len = u64::from_le_bytes(bytes.get(12..20)?.try_into().ok()?) as usize;
    let header: serde_json::Value =
        serde_json::from_slice(bytes.get(20..20usize.checked_add(len)?)?).ok()?;
    header.get("step")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            header: CheckpointHeader {
                step: 42,
                n_members: 2,
                n_atoms: 1,
                config_path: "/x.toml".into(),
                config_text: "a = 1".into(),
                seed: 7,
                integrator_rng_counter: Some(41),
                replica_exchange: None,
                reporters: ReporterPositions::default(),
                elapsed_seconds: 1.5,
                mlff_md_version: "0".into(),
                target_steps: Some(100),
                model_sha256: None,
                settings: None,
                time_origin: None,
                cells: None,
                neighbor_list: None,
                barostat: None,
                moves: Default::default(),
                package_sha256: None,
            },
            positions: vec![1.0, 2.0, 3.0, 4.0, 5.0, f64::MIN_POSITIVE],
            velocities: vec![0.1; 6],
            forces: vec![-0.5; 6],
            energies: vec![-1.0, -2.0],
        }
    }

    #[test]
    fn round_trip_is_exact_and_damage_is_detected() {
        let c = sample();
        let bytes = c.to_bytes();
        let back = Checkpoint::from_bytes(&bytes).unwrap();
        assert_eq!(back.positions, c.positions);
        assert_eq!(back.energies, c.energies);
        assert_eq!(back.header.step, 42);
        let mut bad = bytes.clone();
        bad[30] ^= 1;
        assert!(Checkpoint::from_bytes(&bad)
            .unwrap_err()
            .contains("checksum"));
        assert!(Checkpoint::from_bytes(&bytes[..bytes.len() - 5]).is_err());
    }

    /// A header written before target_steps, model_sha256, settings and
    /// time_origin existed still reads (they default to None).
    #[test]
    fn headers_without_the_newer_fields_still_read() {
        let mut json = serde_json::to_value(&sample().header).unwrap();
        for key in ["target_steps", "model_sha256", "settings", "time_origin"] {
            json.as_object_mut().unwrap().remove(key).unwrap();
        }
        let h: CheckpointHeader = serde_json::from_value(json).unwrap();
        assert_eq!(h.step, 42);
        assert!(h.target_steps.is_none() && h.model_sha256.is_none());
        assert!(h.settings.is_none() && h.time_origin.is_none());
    }

    #[test]
    fn damaged_newest_falls_back_to_previous() {
        let dir = std::env::temp_dir().join(format!("mlffmd-ck-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = sample();
        c.write_atomic(&dir).unwrap();
        c.header.step = 43;
        c.write_atomic(&dir).unwrap();
        assert_eq!(Checkpoint::read_latest(&dir).unwrap().0.header.step, 43);
        // Damage the tail (the arrays): the header still names the step lost.
        let mut bytes = std::fs::read(dir.join(CHECKPOINT_FILE)).unwrap();
        let n = bytes.len();
        bytes[n - 40] ^= 0xff;
        std::fs::write(dir.join(CHECKPOINT_FILE), &bytes).unwrap();
        let (back, path, note) = Checkpoint::read_latest_noting(&dir).unwrap();
        assert_eq!(back.header.step, 42);
        assert!(path.ends_with(PREVIOUS_FILE));
        let note = note.expect("a note on the skipped checkpoint");
        assert!(note.contains("checksum mismatch"), "{note}");
        assert!(
            note.contains("it was at step 43, so the 1 steps after step 42"),
            "{note}"
        );
        std::fs::write(dir.join(CHECKPOINT_FILE), b"garbage").unwrap();
        let note = Checkpoint::read_latest_noting(&dir).unwrap().2.unwrap();
        assert!(note.contains("its step is unreadable"), "{note}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
