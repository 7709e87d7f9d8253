//! Periodic cells on the host: the restricted lower-triangular form
//! GROMACS and LAMMPS use (a along x, b in the xy plane), volumes and the
//! perpendicular widths that bound what a cutoff may be. Rows of the matrix
//! are the lattice vectors a, b, c (Å); a position is x = f · H for
//! fractional coordinates f.

use nalgebra::{Matrix3, Vector3};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cell {
    /// Rows a, b, c; lower triangular.
    pub matrix: Matrix3<f64>,
}

impl Cell {
    /// From edge lengths (Å) and angles α (b, c), β (a, c), γ (a, b) in
    /// degrees, as in a PDB CRYST1 record.
    pub fn from_lengths_angles(lengths: [f64; 3], angles: [f64; 3]) -> Result<Cell> {
        let [a, b, c] = lengths;
        let [alpha, beta, gamma] = angles.map(f64::to_radians);
        if lengths.iter().any(|l| !(l.is_finite() && *l > 0.0)) {
            return Err(Error::Invalid(format!(
                "cell lengths must be positive, got {lengths:?} Å"
            )));
        }
        let bx = b * gamma.cos();
        let by = b * gamma.sin();
        let cx = c * beta.cos();
        let cy = c * (alpha.cos() - beta.cos() * gamma.cos()) / gamma.sin();
        let cz2 = c * c - cx * cx - cy * cy;
        if !(by.abs() > 1e-12 && cz2 > 1e-12) {
            return Err(Error::Invalid(format!(
                "cell angles {angles:?}° describe no three-dimensional cell"
            )));
        }
        Cell::from_matrix(Matrix3::new(a, 0.0, 0.0, bx, by, 0.0, cx, cy, cz2.sqrt()))
    }

    /// From any three lattice vectors (rows), rotated into the lower-
    /// triangular form (the same lengths and angles, so the same crystal).
    pub fn from_matrix(h: Matrix3<f64>) -> Result<Cell> {
        let (a, b, c) = (
            h.row(0).transpose(),
            h.row(1).transpose(),
            h.row(2).transpose(),
        );
        let (la, lb, lc) = (a.norm(), b.norm(), c.norm());
        let volume = a.dot(&b.cross(&c));
        if !(volume.is_finite() && volume.abs() > 1e-9) {
            return Err(Error::Invalid(format!("cell vectors {h:?} span no volume")));
        }
        if volume < 0.0 {
            return Err(Error::Invalid(
                "cell vectors a, b, c must be right-handed (a · (b × c) > 0)".into(),
            ));
        }
        let cos = |u: &Vector3<f64>, v: &Vector3<f64>, lu: f64, lv: f64| u.dot(v) / (lu * lv);
        let (ca, cb, cg) = (
            cos(&b, &c, lb, lc),
            cos(&a, &c, la, lc),
            cos(&a, &b, la, lb),
        );
        let bx = lb * cg;
        let by = (lb * lb - bx * bx).sqrt();
        let cx = lc * cb;
        let cy = lc * (ca - cb * cg) / (1.0 - cg * cg).sqrt();
        let cz = (lc * lc - cx * cx - cy * cy).max(0.0).sqrt();
        Ok(Cell {
            matrix: Matrix3::new(la, 0.0, 0.0, bx, by, 0.0, cx, cy, cz),
        })
    }

    /// One cell per member from a tensor of rows a, b, c ([R, 3, 3], any
    /// device), each checked and put in the lower-triangular form.
    pub fn all_from_tensor(cells: &tch::Tensor) -> Result<Vec<Cell>> {
        host_rows(cells)?
            .chunks_exact(9)
            .map(|m| Cell::from_matrix(Matrix3::from_row_slice(m)))
            .collect()
    }

    /// One cell per member from a tensor of rows a, b, c ([R, 3, 3]),
    /// exactly as stored (the state's cells are lower triangular already).
    pub fn all_as_stored(cells: &tch::Tensor) -> Result<Vec<Cell>> {
        Ok(Cell::all_from_rows(&host_rows(cells)?))
    }

    /// One cell per member from rows a, b, c on the host ([R · 9],
    /// row-major), exactly as stored.
    pub fn all_from_rows(rows: &[f64]) -> Vec<Cell> {
        rows.chunks_exact(9)
            .map(|m| Cell {
                matrix: Matrix3::from_row_slice(m),
            })
            .collect()
    }

    pub fn volume(&self) -> f64 {
        self.matrix.determinant()
    }

    /// Distances between opposite faces along each lattice direction: the
    /// largest sphere that fits has diameter min(widths).
    pub fn perpendicular_widths(&self) -> [f64; 3] {
        let r = |i: usize| self.matrix.row(i).transpose();
        let (a, b, c) = (r(0), r(1), r(2));
        let v = self.volume();
        [
            v / b.cross(&c).norm(),
            v / c.cross(&a).norm(),
            v / a.cross(&b).norm(),
        ]
    }

    /// A cell too small for `cutoff`: some perpendicular width below the
    /// cutoff. (Widths between one and two cutoffs are fine: the neighbour
    /// list gives an atom every image of a neighbour within the cutoff, so
    /// it may see several; below one cutoff it would need images beyond
    /// the neighbouring cells.)
    pub fn check_cutoff(&self, cutoff: f64) -> Result<()> {
        let w = self.perpendicular_widths();
        for (axis, width) in ["a", "b", "c"].iter().zip(w) {
            if width < cutoff {
                return Err(Error::Invalid(format!(
                    "the cell's perpendicular width along {axis} is {width:.3} Å, less than the cutoff ({cutoff} Å); use a larger cell (a supercell) or a smaller cutoff"
                )));
            }
        }
        Ok(())
    }

    /// The cell for chemfiles (which takes the lattice vectors as columns).
    pub fn to_chemfiles(&self) -> chemfiles::UnitCell {
        let m = self.matrix.transpose();
        chemfiles::UnitCell::from_matrix([0, 1, 2].map(|i| [0, 1, 2].map(|j| m[(i, j)])))
    }

    /// Rows as a flat row-major array.
    pub fn to_array(&self) -> [f64; 9] {
        let m = &self.matrix;
        [
            m[(0, 0)],
            m[(0, 1)],
            m[(0, 2)],
            m[(1, 0)],
            m[(1, 1)],
            m[(1, 2)],
            m[(2, 0)],
            m[(2, 1)],
            m[(2, 2)],
        ]
    }
}

/// The numbers of a [R, 3, 3] cell tensor on the host, row-major.
fn host_rows(cells: &tch::Tensor) -> Result<Vec<f64>> {
    Vec::<f64>::try_from(
        cells
            .to_kind(tch::Kind::Double)
            .to_device(tch::Device::Cpu)
            .reshape([-1]),
    )
    .map_err(|e| Error::Invalid(format!("cells: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_angles_give_the_lower_triangular_cell() {
        let c = Cell::from_lengths_angles([10.0, 11.0, 12.0], [90.0, 90.0, 90.0]).unwrap();
        assert!((c.volume() - 1320.0).abs() < 1e-9);
        assert_eq!(
            c.perpendicular_widths().map(|w| (w * 1e9).round() / 1e9),
            [10.0, 11.0, 12.0]
        );
        // Triclinic: volume a b c sqrt(1 − cos²α − cos²β − cos²γ + 2 cosα cosβ cosγ).
        let (al, be, ga) = (80f64, 95f64, 105f64);
        let t = Cell::from_lengths_angles([9.0, 10.0, 11.0], [al, be, ga]).unwrap();
        let [ca, cb, cg] = [al, be, ga].map(|x| x.to_radians().cos());
        let v = 990.0 * (1.0 - ca * ca - cb * cb - cg * cg + 2.0 * ca * cb * cg).sqrt();
        assert!((t.volume() - v).abs() < 1e-9 * v);
        let m = t.matrix;
        assert_eq!((m[(0, 1)], m[(0, 2)], m[(1, 2)]), (0.0, 0.0, 0.0));
        // The same vectors rotated arbitrarily come back to the same form.
        let rot = nalgebra::Rotation3::from_euler_angles(0.3, -1.1, 2.0);
        let rotated = (rot.matrix() * m.transpose()).transpose();
        let back = Cell::from_matrix(rotated).unwrap();
        assert!((back.matrix - m).abs().max() < 1e-9, "{back:?} vs {m:?}");
    }

    #[test]
    fn small_or_degenerate_cells_are_refused() {
        let c = Cell::from_lengths_angles([10.0, 10.0, 10.0], [90.0, 90.0, 60.0]).unwrap();
        // Width along a: 10 sin 60° = 8.66 Å.
        let e = c.check_cutoff(8.7).unwrap_err().to_string();
        assert!(e.contains("along a is 8.660 Å"), "{e}");
        assert!(c.check_cutoff(8.6).is_ok());
        assert!(Cell::from_lengths_angles([10.0, 10.0, 10.0], [90.0, 90.0, 180.0]).is_err());
        assert!(Cell::from_lengths_angles([10.0, -1.0, 10.0], [90.0; 3]).is_err());
        let left = Matrix3::new(10.0, 0.0, 0.0, 0.0, 10.0, 0.0, 0.0, 0.0, -10.0);
        assert!(Cell::from_matrix(left).is_err());
    }
}
