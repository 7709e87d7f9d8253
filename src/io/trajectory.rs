//! Trajectories through chemfiles, plus one topology PDB beside them (XTC and
//! DCD store no atom names or bonds; MDAnalysis, mdtraj and VMD load
//! `topology.pdb` + `member_0000.xtc`). A file follows either one batch slot
//! (a member or replica) or, for demultiplexed replica exchange, whichever
//! slot currently holds a given temperature.

use std::path::{Path, PathBuf};

use chemfiles::{Frame, Trajectory};

use crate::config::TrajectoryFormat;
use crate::error::{Error, Result};
use crate::system::cell::Cell;

pub struct TrajectoryWriter {
    frame: Frame,
    n_atoms: usize,
    format: TrajectoryFormat,
    /// (open file, path), in the order of `create`'s names.
    files: Vec<(Trajectory, PathBuf)>,
}

fn open_traj(path: &Path, mode: char, format: TrajectoryFormat) -> Result<Trajectory> {
    Trajectory::open_with_format(path, mode, format.chemfiles_name()).map_err(|e| {
        let hint = if e.message.contains("Too many open files") {
            " (one file per member: list fewer in [output] trajectory_members, or raise `ulimit -n`)"
        } else {
            ""
        };
        Error::output(path, format!("{}{hint}", e.message))
    })
}

/// Name (without extension) of the trajectory of member `id`.
pub fn member_file_stem(id: usize) -> String {
    format!("member_{id:04}")
}

/// Write `dir/topology.pdb`: the atoms, residues and bonds of `template`.
pub fn write_topology(dir: &Path, template: &Frame) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::output(dir, e))?;
    // The template carries the run's cell (or none, for isolated molecules).
    let frame = template.clone();
    let topology = dir.join("topology.pdb");
    let mut top =
        Trajectory::open(&topology, 'w').map_err(|e| Error::output(&topology, e.message))?;
    top.write(&frame)
        .map_err(|e| Error::output(&topology, e.message))?;
    drop(top);
    let text = std::fs::read_to_string(&topology).map_err(|e| Error::output(&topology, e))?;
    let text = with_all_conect(&text, &frame.topology().bonds());
    std::fs::write(&topology, text).map_err(|e| Error::output(&topology, e))?;
    Ok(topology)
}

/// PDB text with a CONECT record for every bond. chemfiles writes CONECT
/// only for bonds that involve a HETATM, since readers infer bonds within
/// standard residues; MDAnalysis and VMD do not, so a peptide's topology
/// would have no bonds. Serial numbers are taken from the ATOM/HETATM
/// records as written (they skip the numbers TER records use).
fn with_all_conect(text: &str, bonds: &[[usize; 2]]) -> String {
    let mut serials = Vec::new();
    let mut body = Vec::new();
    let mut tail = Vec::new();
    for line in text.lines() {
        if line.starts_with("ATOM") || line.starts_with("HETATM") {
            serials.push(line.get(6..11).unwrap_or("").to_string());
        }
        if line.starts_with("CONECT") {
            continue;
        }
        // CONECT records go before ENDMDL/END and whatever follows them.
        if !tail.is_empty() || line.starts_with("END") {
            tail.push(line);
        } else {
            body.push(line);
        }
    }
    let mut neighbours = vec![Vec::new(); serials.len()];
    for &[a, b] in bonds {
        if a < serials.len() && b < serials.len() {
            neighbours[a].push(b);
            neighbours[b].push(a);
        }
    }
    let mut out = String::with_capacity(text.len() + 32 * bonds.len());
    for line in body {
        out.push_str(line);
        out.push('\n');
    }
    for (i, n) in neighbours.iter_mut().enumerate() {
        n.sort_unstable();
        for group in n.chunks(4) {
            out.push_str("CONECT");
            out.push_str(&serials[i]);
            for &j in group {
                out.push_str(&serials[j]);
            }
            out.push('\n');
        }
    }
    for line in tail {
        out.push_str(line);
        out.push('\n');
    }
    out
}

impl TrajectoryWriter {
    /// Open one trajectory `dir/<stem>.<ext>` per stem. Frames take their
    /// atoms and topology from `template`.
    pub fn create(
        dir: &Path,
        format: TrajectoryFormat,
        stems: &[String],
        template: &Frame,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::output(dir, e))?;
        let frame = template.clone();
        let mut files = Vec::with_capacity(stems.len());
        for stem in stems {
            let path = dir.join(format!("{stem}.{}", format.extension()));
            files.push((open_traj(&path, 'w', format)?, path));
        }
        Ok(TrajectoryWriter {
            n_atoms: frame.size(),
            frame,
            format,
            files,
        })
    }

    /// Reopen trajectories of an earlier run for appending, first cutting
    /// each file to the byte length a checkpoint recorded (dropping frames
    /// written after it).
    pub fn append(
        dir: &Path,
        format: TrajectoryFormat,
        stems: &[String],
        template: &Frame,
        recorded: &[(String, u64)],
    ) -> Result<Self> {
        let frame = template.clone();
        let mut files = Vec::with_capacity(stems.len());
        for stem in stems {
            let name = format!("{stem}.{}", format.extension());
            let path = dir.join(&name);
            let bytes = recorded
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, b)| *b)
                .ok_or_else(|| {
                    Error::output(&path, "the checkpoint has no record of this trajectory")
                })?;
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| Error::output(&path, format!("cannot reopen to resume: {e}")))?;
            let len = file.metadata().map_err(|e| Error::output(&path, e))?.len();
            if len < bytes {
                return Err(Error::output(
                    &path,
                    format!(
                        "is {len} bytes, shorter than the {bytes} bytes the checkpoint recorded"
                    ),
                ));
            }
            file.set_len(bytes).map_err(|e| Error::output(&path, e))?;
            drop(file);
            files.push((open_traj(&path, 'a', format)?, path));
        }
        Ok(TrajectoryWriter {
            n_atoms: frame.size(),
            frame,
            format,
            files,
        })
    }

    /// Close and reopen every file (in append mode) so that everything
    /// written is on disk, and return each file's name and byte length.
    pub fn sync(&mut self) -> Result<Vec<(String, u64)>> {
        let mut sizes = Vec::with_capacity(self.files.len());
        for (traj, path) in &mut self.files {
            // Replace the open file by a fresh append handle; dropping the old
            // one closes it, which flushes chemfiles' buffers.
            let placeholder =
                Trajectory::memory_writer("XYZ").map_err(|e| Error::output(path, e.message))?;
            drop(std::mem::replace(traj, placeholder));
            let len = std::fs::metadata(&*path)
                .map_err(|e| Error::output(path, e))?
                .len();
            *traj = open_traj(path, 'a', self.format)?;
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            sizes.push((name, len));
        }
        Ok(sizes)
    }

    /// Append one frame to every file from host positions `[R*N*3]` (Å):
    /// file `i` gets the member in batch slot `slots[i]`, with that
    /// member's cell when `cells` (one per batch slot) is given (periodic
    /// members whose cells change).
    pub fn write(
        &mut self,
        step: u64,
        time_fs: f64,
        positions: &[f64],
        slots: &[usize],
        cells: Option<&[Cell]>,
    ) -> Result<()> {
        assert_eq!(
            slots.len(),
            self.files.len(),
            "one slot per trajectory file"
        );
        let n = self.n_atoms;
        self.frame.set_step(step as usize);
        // XTC and DCD store time in ps.
        self.frame.set("time", time_fs * 1.0e-3);
        for ((traj, path), &slot) in self.files.iter_mut().zip(slots) {
            if let Some(cell) = cells.and_then(|c| c.get(slot)) {
                self.frame.set_cell(&cell.to_chemfiles());
            }
            let src = &positions[slot * n * 3..(slot + 1) * n * 3];
            for (dst, p) in self
                .frame
                .positions_mut()
                .iter_mut()
                .zip(src.chunks_exact(3))
            {
                dst.copy_from_slice(p);
            }
            traj.write(&self.frame)
                .map_err(|e| Error::output(path, e.message))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::with_all_conect;

    #[test]
    fn every_bond_gets_a_conect_record() {
        let text =
            "ATOM      1  N   ALA A   1       0.000   0.000   0.000  1.00  0.00           N\n\
ATOM      2  CA  ALA A   1       1.000   0.000   0.000  1.00  0.00           C\n\
TER       3      ALA A   1\n\
HETATM    4  O   HOH B   2       2.000   0.000   0.000  1.00  0.00           O\n\
CONECT    2    4\n\
CONECT    4    2\n\
ENDMDL\nEND\n";
        let out = with_all_conect(text, &[[0, 1], [1, 2]]);
        let conect: Vec<&str> = out.lines().filter(|l| l.starts_with("CONECT")).collect();
        assert_eq!(
            conect,
            [
                "CONECT    1    2",
                "CONECT    2    1    4",
                "CONECT    4    2"
            ]
        );
        assert!(out.ends_with("CONECT    4    2\nENDMDL\nEND\n"), "{out}");
    }
}
