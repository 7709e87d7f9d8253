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
    pub replica_exchange: Option<ReplicaExchange>,
    pub reporters: ReporterPositions,
    /// Wall-clock seconds the run has taken up to this checkpoint.
    pub elapsed_seconds: f64,
    pub mlff_md_version: String,
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
        let mut problems = Vec::new();
        for name in [CHECKPOINT_FILE, PREVIOUS_FILE] {
            let path = dir.join(name);
            match std::fs::read(&path) {
                Ok(bytes) => match Checkpoint::from_bytes(&bytes) {
                    Ok(c) => return Ok((c, path)),
                    Err(e) => problems.push(format!("{name}: {e}")),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
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

    #[test]
    fn damaged_newest_falls_back_to_previous() {
        let dir = std::env::temp_dir().join(format!("mlffmd-ck-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = sample();
        c.write_atomic(&dir).unwrap();
        c.header.step = 43;
        c.write_atomic(&dir).unwrap();
        assert_eq!(Checkpoint::read_latest(&dir).unwrap().0.header.step, 43);
        std::fs::write(dir.join(CHECKPOINT_FILE), b"garbage").unwrap();
        let (back, path) = Checkpoint::read_latest(&dir).unwrap();
        assert_eq!(back.header.step, 42);
        assert!(path.ends_with(PREVIOUS_FILE));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
