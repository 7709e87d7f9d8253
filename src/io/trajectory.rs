//! Trajectories through chemfiles, plus one topology PDB beside them (XTC and
//! DCD store no atom names or bonds; MDAnalysis, mdtraj and VMD load
//! `topology.pdb` + `member_0000.xtc`). A file follows either one batch slot
//! (a member or replica) or, for demultiplexed replica exchange, whichever
//! slot currently holds a given temperature.

use std::path::{Path, PathBuf};

use chemfiles::{Frame, Trajectory, UnitCell};

use crate::config::TrajectoryFormat;
use crate::error::{Error, Result};

pub struct TrajectoryWriter {
    frame: Frame,
    n_atoms: usize,
    /// (open file, path), in the order of `create`'s names.
    files: Vec<(Trajectory, PathBuf)>,
}

/// Name (without extension) of the trajectory of member `id`.
pub fn member_file_stem(id: usize) -> String {
    format!("member_{id:04}")
}

/// Write `dir/topology.pdb`: the atoms, residues and bonds of `template`.
pub fn write_topology(dir: &Path, template: &Frame) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::output(dir, e))?;
    let mut frame = template.clone();
    // Gas phase: no periodic box.
    frame.set_cell(&UnitCell::infinite());
    let topology = dir.join("topology.pdb");
    let mut top =
        Trajectory::open(&topology, 'w').map_err(|e| Error::output(&topology, e.message))?;
    top.write(&frame)
        .map_err(|e| Error::output(&topology, e.message))?;
    Ok(topology)
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
        let mut frame = template.clone();
        frame.set_cell(&UnitCell::infinite());
        let mut files = Vec::with_capacity(stems.len());
        for stem in stems {
            let path = dir.join(format!("{stem}.{}", format.extension()));
            let traj = Trajectory::open_with_format(&path, 'w', format.chemfiles_name())
                .map_err(|e| Error::output(&path, e.message))?;
            files.push((traj, path));
        }
        Ok(TrajectoryWriter {
            n_atoms: frame.size(),
            frame,
            files,
        })
    }

    /// Append one frame to every file from host positions `[R*N*3]` (Å):
    /// file `i` gets the member in batch slot `slots[i]`.
    pub fn write(
        &mut self,
        step: u64,
        time_fs: f64,
        positions: &[f64],
        slots: &[usize],
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

    /// Paths of the trajectory files.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.files.iter().map(|(_, p)| p.clone()).collect()
    }
}
