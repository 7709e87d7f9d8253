//! Structure along a run, from its trajectories (read through chemfiles):
//! backbone dihedrals φ/ψ named from the topology's residues and atom
//! names, and the RMSD to a reference after the best superposition
//! (Kabsch, with nalgebra's SVD). Per-frame work runs on rayon.

use std::path::{Path, PathBuf};

use chemfiles::{Frame, Trajectory};
use nalgebra::{Matrix3, Vector3};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// The φ and ψ dihedrals of every residue that has both: φ_i = C(i−1)–N–CA–C,
/// ψ_i = N–CA–C–N(i+1) (capping groups such as ACE and NME supply the outer
/// C and N).
#[derive(Debug, Clone)]
pub struct Backbone {
    /// "ALA2" for each residue with both angles.
    pub labels: Vec<String>,
    pub phi: Vec<[usize; 4]>,
    pub psi: Vec<[usize; 4]>,
}

impl Backbone {
    /// From a topology file (the run's topology.pdb); None when no residue
    /// has both angles (not a peptide).
    pub fn from_topology(path: &Path) -> Result<Option<Backbone>> {
        let frame = read_one(path)?;
        let topology = frame.topology();
        let atom_named = |atoms: &[usize], name: &str| {
            atoms
                .iter()
                .copied()
                .find(|&i| frame.atom(i).name().trim() == name)
        };
        let residues: Vec<(String, Vec<usize>)> = (0..topology.residues_count() as usize)
            .filter_map(|i| topology.residue(i))
            .map(|r| {
                let label = format!(
                    "{}{}",
                    r.name(),
                    r.id().map_or(String::new(), |id| id.to_string())
                );
                (label, r.atoms())
            })
            .collect();
        let mut backbone = Backbone {
            labels: Vec::new(),
            phi: Vec::new(),
            psi: Vec::new(),
        };
        for i in 1..residues.len().saturating_sub(1) {
            let (prev, (label, this), next) =
                (&residues[i - 1].1, &residues[i], &residues[i + 1].1);
            let (Some(c_prev), Some(n), Some(ca), Some(c), Some(n_next)) = (
                atom_named(prev, "C"),
                atom_named(this, "N"),
                atom_named(this, "CA"),
                atom_named(this, "C"),
                atom_named(next, "N"),
            ) else {
                continue;
            };
            backbone.labels.push(label.clone());
            backbone.phi.push([c_prev, n, ca, c]);
            backbone.psi.push([n, ca, c, n_next]);
        }
        Ok((!backbone.labels.is_empty()).then_some(backbone))
    }
}

/// Dihedral angle of four atoms in degrees, in (−180, 180] (IUPAC sign).
pub fn dihedral_deg(x: &[[f64; 3]], [a, b, c, d]: [usize; 4]) -> f64 {
    let p = |i: usize| Vector3::from(x[i]);
    let (b0, b1, b2) = (p(a) - p(b), p(c) - p(b), p(d) - p(c));
    let b1n = b1.normalize();
    let v = b0 - b1n * b0.dot(&b1n);
    let w = b2 - b1n * b2.dot(&b1n);
    let xx = v.dot(&w);
    let yy = b1n.cross(&v).dot(&w);
    yy.atan2(xx).to_degrees()
}

/// RMSD (Å) between two conformations of the same atoms after the best
/// translation and rotation (Kabsch; no reflection).
pub fn kabsch_rmsd(a: &[[f64; 3]], b: &[[f64; 3]]) -> f64 {
    let n = a.len() as f64;
    let centre = |x: &[[f64; 3]]| x.iter().map(|p| Vector3::from(*p)).sum::<Vector3<f64>>() / n;
    let (ca, cb) = (centre(a), centre(b));
    let mut h = Matrix3::zeros();
    let mut sum_sq = 0.0;
    for (p, q) in a.iter().zip(b) {
        let (u, v) = (Vector3::from(*p) - ca, Vector3::from(*q) - cb);
        h += u * v.transpose();
        sum_sq += u.norm_squared() + v.norm_squared();
    }
    let svd = h.svd(true, true);
    let (u, v_t) = (svd.u.expect("u requested"), svd.v_t.expect("v_t requested"));
    let mut s = svd.singular_values;
    // A reflection would fit better but is not a motion: flip the
    // smallest singular value's sign instead.
    if (u * v_t).determinant() < 0.0 {
        let smallest = s.imin();
        s[smallest] = -s[smallest];
    }
    ((sum_sq - 2.0 * s.sum()).max(0.0) / n).sqrt()
}

/// The frames of one trajectory file: positions and MD steps. A file still
/// being written may end in a partial frame: the frames before it are kept.
pub struct Frames {
    pub path: PathBuf,
    pub steps: Vec<u64>,
    pub positions: Vec<Vec<[f64; 3]>>,
}

pub fn read_trajectory(path: &Path) -> Result<Frames> {
    let mut trajectory = Trajectory::open(path, 'r')
        .map_err(|e| Error::input(path, format!("cannot open trajectory: {}", e.message)))?;
    let n = trajectory.nsteps();
    let mut frames = Frames {
        path: path.to_path_buf(),
        steps: Vec::with_capacity(n),
        positions: Vec::with_capacity(n),
    };
    let mut frame = Frame::new();
    for _ in 0..n {
        if trajectory.read(&mut frame).is_err() {
            break;
        }
        frames.steps.push(frame.step() as u64);
        frames.positions.push(frame.positions().to_vec());
    }
    Ok(frames)
}

fn read_one(path: &Path) -> Result<Frame> {
    let mut trajectory = Trajectory::open(path, 'r')
        .map_err(|e| Error::input(path, format!("cannot open: {}", e.message)))?;
    let mut frame = Frame::new();
    trajectory
        .read(&mut frame)
        .map_err(|e| Error::input(path, format!("cannot read: {}", e.message)))?;
    Ok(frame)
}

/// Atoms compared with a reference structure: the CA atoms when both have
/// the same number of them (≥ 3), else every atom when the counts match.
pub struct Reference {
    pub path: PathBuf,
    /// Indices into the run's atoms.
    pub atoms: Vec<usize>,
    /// The reference's positions of those atoms.
    pub positions: Vec<[f64; 3]>,
    /// "CA atoms" or "all atoms".
    pub selection: &'static str,
}

impl Reference {
    pub fn new(path: &Path, topology: &Path) -> Result<Reference> {
        let reference = read_one(path)?;
        let run = read_one(topology)?;
        let ca = |f: &Frame| -> Vec<usize> {
            (0..f.size())
                .filter(|&i| f.atom(i).name().trim() == "CA")
                .collect()
        };
        let (ref_ca, run_ca) = (ca(&reference), ca(&run));
        let (ref_atoms, run_atoms, selection) = if ref_ca.len() >= 3 && ref_ca.len() == run_ca.len()
        {
            (ref_ca, run_ca, "CA atoms")
        } else if reference.size() == run.size() {
            (
                (0..run.size()).collect(),
                (0..run.size()).collect(),
                "all atoms",
            )
        } else {
            return Err(Error::input(
                path,
                format!(
                    "does not match the run's atoms: {} atoms ({} CA) against the run's {} ({} CA) in {}; give the same molecule (the same CA atoms, or the same atoms)",
                    reference.size(),
                    ref_ca.len(),
                    run.size(),
                    run_ca.len(),
                    topology.display()
                ),
            ));
        };
        let positions = ref_atoms
            .iter()
            .map(|&i| reference.positions()[i])
            .collect();
        Ok(Reference {
            path: path.to_path_buf(),
            atoms: run_atoms,
            positions,
            selection,
        })
    }

    /// RMSD of every frame to the reference.
    pub fn rmsd(&self, frames: &Frames) -> Vec<f64> {
        frames
            .positions
            .par_iter()
            .map(|x| {
                let picked: Vec<[f64; 3]> = self.atoms.iter().map(|&i| x[i]).collect();
                kabsch_rmsd(&picked, &self.positions)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dihedrals_of_known_geometries() {
        // Trans (180°), cis (0°) and +90° (right-handed about b → c).
        let trans = [
            [1.0, 1.0, 0.0],
            [0.0, 0.0, 0.0],
            [0.0, 0.0, 1.0],
            [-1.0, -1.0, 1.0],
        ];
        assert!((dihedral_deg(&trans, [0, 1, 2, 3]).abs() - 180.0).abs() < 1e-9);
        let cis = [
            [1.0, 0.0, 0.0],
            [0.0, 0.0, 0.0],
            [0.0, 0.0, 1.0],
            [1.0, 0.0, 1.0],
        ];
        assert!(dihedral_deg(&cis, [0, 1, 2, 3]).abs() < 1e-9);
        let ninety = [
            [1.0, 0.0, 0.0],
            [0.0, 0.0, 0.0],
            [0.0, 0.0, 1.0],
            [0.0, 1.0, 1.0],
        ];
        assert!((dihedral_deg(&ninety, [0, 1, 2, 3]) - 90.0).abs() < 1e-9);
        let minus = [
            [1.0, 0.0, 0.0],
            [0.0, 0.0, 0.0],
            [0.0, 0.0, 1.0],
            [0.0, -1.0, 1.0],
        ];
        assert!((dihedral_deg(&minus, [0, 1, 2, 3]) + 90.0).abs() < 1e-9);
    }

    #[test]
    fn rmsd_ignores_rigid_motion_and_sees_displacements() {
        let a = [
            [0.0, 0.0, 0.0],
            [1.5, 0.0, 0.0],
            [0.0, 2.0, 0.0],
            [0.3, 0.4, 1.1],
        ];
        let rot = nalgebra::Rotation3::from_euler_angles(0.3, -1.1, 2.0);
        let moved: Vec<[f64; 3]> = a
            .iter()
            .map(|p| (rot * Vector3::from(*p) + Vector3::new(5.0, -2.0, 1.0)).into())
            .collect();
        assert!(kabsch_rmsd(&a, &moved) < 1e-10);
        // A mirror image is not superposable.
        let mirror: Vec<[f64; 3]> = a.iter().map(|p| [p[0], p[1], -p[2]]).collect();
        assert!(kabsch_rmsd(&a, &mirror) > 0.1);
        // One atom of four moved by d along a direction no rigid motion
        // absorbs here: RMSD is positive and at most d/2 (= sqrt(d²/4)).
        let mut b = a;
        b[3][2] += 0.4;
        let r = kabsch_rmsd(&a, &b);
        assert!(r > 0.0 && r <= 0.2 + 1e-12, "{r}");
    }
}
