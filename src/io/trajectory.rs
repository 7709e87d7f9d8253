//! Per-member trajectories through chemfiles, plus one topology PDB beside
//! them (XTC and DCD store no atom names or bonds; MDAnalysis, mdtraj and VMD
//! load `topology.pdb` + `member_0000.xtc`).

use std::path::{Path, PathBuf};

use chemfiles::{Frame, Trajectory, UnitCell};

use crate::config::TrajectoryFormat;
use crate::error::{Error, Result};

pub struct TrajectoryWriter {
    frame: Frame,
    n_atoms: usize,
    /// (batch slot, open file, path)
    files: Vec<(usize, Trajectory, PathBuf)>,
}

/// Name of the trajectory file of member `id`.
pub fn member_file_name(id: usize, format: TrajectoryFormat) -> String {
    format!("member_{id:04}.{}", format.extension())
}

impl TrajectoryWriter {
    /// Write `dir/topology.pdb` from `template` and open one trajectory per
    /// listed member: `slots[i]` is the batch slot, `ids[i]` its member id.
    pub fn create(
        dir: &Path,
        format: TrajectoryFormat,
        slots: &[usize],
        ids: &[usize],
        template: &Frame,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::output(dir, e))?;
        let mut frame = template.clone();
        // Gas-phase: no periodic box.
        frame.set_cell(&UnitCell::infinite());
        let topology = dir.join("topology.pdb");
        let mut top =
            Trajectory::open(&topology, 'w').map_err(|e| Error::output(&topology, e.message))?;
        top.write(&frame)
            .map_err(|e| Error::output(&topology, e.message))?;
        drop(top);

        let mut files = Vec::with_capacity(slots.len());
        for (&slot, &id) in slots.iter().zip(ids) {
            let path = dir.join(member_file_name(id, format));
            let traj = Trajectory::open_with_format(&path, 'w', format.chemfiles_name())
                .map_err(|e| Error::output(&path, e.message))?;
            files.push((slot, traj, path));
        }
        Ok(TrajectoryWriter {
            n_atoms: frame.size(),
            frame,
            files,
        })
    }

    /// Append one frame per member from host positions `[R*N*3]` (Å).
    pub fn write(&mut self, step: u64, time_fs: f64, positions: &[f64]) -> Result<()> {
        let n = self.n_atoms;
        self.frame.set_step(step as usize);
        // XTC and DCD store time in ps.
        self.frame.set("time", time_fs * 1.0e-3);
        for (slot, traj, path) in &mut self.files {
            let src = &positions[*slot * n * 3..(*slot + 1) * n * 3];
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
        self.files.iter().map(|(_, _, p)| p.clone()).collect()
    }
}
