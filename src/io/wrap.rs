//! Periodic coordinates as viewers want them: each molecule whole (bonded
//! atoms at their nearest image of one another, following the topology's
//! bond graph) and its centre inside the cell. The engine integrates
//! unwrapped coordinates; only written frames are wrapped, on the host,
//! one member per task (rayon).

use nalgebra::{Matrix3, Vector3};
use rayon::prelude::*;

use crate::system::cell::Cell;
use crate::system::chemistry::Molecules;

/// Makes each molecule of one member whole and puts its centre in the cell.
#[derive(Debug, Clone)]
pub struct MoleculeWrapper {
    molecules: Molecules,
}

impl MoleculeWrapper {
    /// From `n_atoms` and their bonds (atom index pairs).
    pub fn new(n_atoms: usize, bonds: &[[usize; 2]]) -> MoleculeWrapper {
        MoleculeWrapper {
            molecules: Molecules::new(n_atoms, bonds),
        }
    }

    /// Wrap `positions` ([R·N·3], members of N atoms each) in place, member
    /// r in `cells[r]`.
    pub fn wrap(&self, positions: &mut [f64], cells: &[Cell]) {
        let n = self.molecules.walk.len();
        positions
            .par_chunks_mut(3 * n)
            .zip(cells.par_iter())
            .for_each(|(member, cell)| self.wrap_member(member, cell));
    }

    fn wrap_member(&self, x: &mut [f64], cell: &Cell) {
        // Rows of H are the lattice vectors: x = f H, f = x H⁻¹.
        let h: Matrix3<f64> = cell.matrix;
        let Some(h_inv) = h.try_inverse() else {
            return;
        };
        let get = |x: &[f64], i: usize| Vector3::new(x[3 * i], x[3 * i + 1], x[3 * i + 2]);
        let frac = |v: &Vector3<f64>| (v.transpose() * h_inv).transpose();
        let cart = |f: &Vector3<f64>| (f.transpose() * h).transpose();
        let walk = &self.molecules.walk;
        for range in &self.molecules.ranges {
            // Whole: each atom at the image nearest (in fractional terms)
            // to the atom it was reached from.
            for &(atom, from) in &walk[range.clone()] {
                if let Some(p) = from {
                    let d = get(x, atom) - get(x, p);
                    let image = frac(&d).map(f64::round);
                    let placed = get(x, p) + d - cart(&image);
                    x[3 * atom..3 * atom + 3].copy_from_slice(placed.as_slice());
                }
            }
            // Centre in the cell: shift the molecule by whole lattice vectors.
            let count = range.len() as f64;
            let centre = walk[range.clone()]
                .iter()
                .fold(Vector3::zeros(), |s, &(a, _)| s + get(x, a))
                / count;
            let shift = cart(&frac(&centre).map(f64::floor));
            for &(atom, _) in &walk[range.clone()] {
                let moved = get(x, atom) - shift;
                x[3 * atom..3 * atom + 3].copy_from_slice(moved.as_slice());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A water split across the boundary of a triclinic cell, and a lone
    /// atom far outside, come back whole with their centres inside.
    #[test]
    fn molecules_come_back_whole_and_inside() {
        let cell = Cell::from_lengths_angles([10.0, 11.0, 12.0], [80.0, 95.0, 105.0]).unwrap();
        let h = cell.matrix;
        let at = |f: [f64; 3]| {
            let v = Vector3::new(f[0], f[1], f[2]).transpose() * h;
            [v[0], v[1], v[2]]
        };
        // O just inside face a = 0; one H bonded across it (an image away),
        // the other one cell further (+b). Atom 3 alone, 2 cells out.
        let o = at([0.01, 0.5, 0.5]);
        let h1_true = [o[0] - 0.95, o[1] + 0.1, o[2]];
        let h2_true = [o[0] + 0.3, o[1] + 0.9, o[2]];
        let plus = |p: [f64; 3], f: [f64; 3]| {
            let s = at(f);
            [p[0] + s[0], p[1] + s[1], p[2] + s[2]]
        };
        let h1 = plus(h1_true, [1.0, 0.0, 0.0]);
        let h2 = plus(h2_true, [0.0, 1.0, 0.0]);
        let lone = at([2.4, -1.3, 0.7]);
        let mut x: Vec<f64> = [o, h1, h2, lone].concat();
        let w = MoleculeWrapper::new(4, &[[0, 1], [0, 2]]);
        w.wrap(&mut x, &[cell]);
        let p = |i: usize| Vector3::new(x[3 * i], x[3 * i + 1], x[3 * i + 2]);
        let dist = |a: usize, b: usize| (p(a) - p(b)).norm();
        let d1 = (Vector3::from(h1_true) - Vector3::from(o)).norm();
        let d2 = (Vector3::from(h2_true) - Vector3::from(o)).norm();
        assert!((dist(0, 1) - d1).abs() < 1e-12 && (dist(0, 2) - d2).abs() < 1e-12);
        let h_inv = h.try_inverse().unwrap();
        let inside = |v: Vector3<f64>| {
            let f = v.transpose() * h_inv;
            f.iter().all(|&c| (0.0..1.0).contains(&c))
        };
        assert!(inside((p(0) + p(1) + p(2)) / 3.0));
        assert!(inside(p(3)));
        // The lone atom moved by whole lattice vectors only.
        let moved = (p(3) - Vector3::from(lone)).transpose() * h_inv;
        assert!(
            moved.iter().all(|c| (c - c.round()).abs() < 1e-9),
            "{moved}"
        );
    }
}
