//! The batched simulation state: all members of an ensemble concatenated in
//! one set of tensors on the device (TorchSim's layout: flat atoms, a
//! per-atom member index, a per-member cell), so one force call and one
//! integrator update serve every member.

use tch::{Device, Kind, Tensor};

use crate::neighbors::Boundary;
use crate::rng::CounterRng;
use crate::system::Molecule;
use crate::units::{kt, AMU_A2_PER_FS2_IN_EV, KB_EV_PER_K};

/// Where each member's atoms lie in the flat per-atom tensors, and the
/// per-member reductions built on that. Members are contiguous blocks of
/// rows. One molecule × R (every member the same size) is the common case:
/// its reductions are reshapes to [R, N·k]; members of different sizes sum
/// through a padded gather of their rows ([R, Nmax]), which is
/// deterministic on a GPU (no atomic adds, unlike index_add).
#[derive(Debug)]
pub struct Layout {
    /// First row of each member.
    pub offsets: Vec<usize>,
    /// Atoms of each member.
    pub counts: Vec<usize>,
    /// [N] int64: the member slot of each row.
    pub batch: Tensor,
    /// [R, Nmax] int64 rows of each member, padded with N (the index of a
    /// row appended for the gather); None when every member has the same
    /// size (then a reshape does).
    padded_rows: Option<Tensor>,
}

impl Layout {
    /// Members of `counts` atoms each, in that order.
    pub fn from_counts(counts: &[usize], device: Device) -> Layout {
        let mut offsets = Vec::with_capacity(counts.len());
        let mut total = 0;
        for &c in counts {
            offsets.push(total);
            total += c;
        }
        let batch: Vec<i64> = counts
            .iter()
            .enumerate()
            .flat_map(|(r, &c)| std::iter::repeat_n(r as i64, c))
            .collect();
        let uniform = counts.windows(2).all(|w| w[0] == w[1]);
        let padded_rows = (!uniform).then(|| {
            let n_max = counts.iter().copied().max().unwrap_or(0);
            let mut rows = vec![total as i64; counts.len() * n_max];
            for (r, (&o, &c)) in offsets.iter().zip(counts).enumerate() {
                for a in 0..c {
                    rows[r * n_max + a] = (o + a) as i64;
                }
            }
            Tensor::from_slice(&rows)
                .view([counts.len() as i64, n_max as i64])
                .to_device(device)
        });
        Layout {
            offsets,
            counts: counts.to_vec(),
            batch: Tensor::from_slice(&batch).to_device(device),
            padded_rows,
        }
    }

    pub fn n_members(&self) -> usize {
        self.counts.len()
    }

    /// Rows of all members together.
    pub fn n_rows(&self) -> usize {
        self.counts.iter().sum()
    }

    /// Atoms per member when every member has the same number.
    pub fn uniform_atoms(&self) -> Option<usize> {
        self.padded_rows
            .is_none()
            .then(|| self.counts.first().copied().unwrap_or(0))
    }

    /// Each member's values of a per-atom tensor ([N] or [N, k]) as one row
    /// of `[R, L]`: its atoms' values in order, padded with `pad` up to the
    /// largest member (L = Nmax·k).
    pub fn member_rows(&self, per_atom: &Tensor, pad: f64) -> Tensor {
        let r = self.n_members() as i64;
        match &self.padded_rows {
            None => per_atom.reshape([r, -1]),
            Some(rows) => {
                let flat = per_atom.reshape([per_atom.size()[0], -1]);
                let k = flat.size()[1];
                let padded = Tensor::cat(
                    &[flat.shallow_clone(), flat.full_like(pad).narrow(0, 0, 1)],
                    0,
                );
                padded
                    .index_select(0, &rows.view([-1]))
                    .view([r, -1, k])
                    .reshape([r, -1])
            }
        }
    }

    /// Sum of a per-atom quantity ([N] or [N, k]) over each member's
    /// atoms: [R] float64.
    pub fn sum(&self, per_atom: &Tensor) -> Tensor {
        self.member_rows(per_atom, 0.0)
            .sum_dim_intlist(1, false, Kind::Double)
    }

    /// Sum of a per-atom vector quantity [N, 3] over each member: [R, 3],
    /// in the input's kind.
    pub fn sum_vectors(&self, per_atom: &Tensor) -> Tensor {
        let r = self.n_members() as i64;
        self.member_rows(per_atom, 0.0)
            .view([r, -1, 3])
            .sum_dim_intlist(1, false, per_atom.kind())
    }

    /// Largest value of a per-atom quantity over each member (padding
    /// counts as `floor`): [R] in the input's kind.
    pub fn max(&self, per_atom: &Tensor, floor: f64) -> Tensor {
        self.member_rows(per_atom, floor)
            .amax([1].as_slice(), false)
    }

    /// Whether a per-atom condition holds for every atom of each member: [R] bool.
    pub fn all(&self, per_atom: &Tensor) -> Tensor {
        self.member_rows(&per_atom.to_kind(Kind::Uint8), 1.0)
            .to_kind(Kind::Bool)
            .all_dim(1, false)
    }

    /// A per-member quantity [R, ...] spread to every row [N, ...].
    pub fn per_atom(&self, per_member: &Tensor) -> Tensor {
        per_member.index_select(0, &self.batch)
    }
}

/// Positions, velocities and per-atom constants of R members.
///
/// Member slot `r` holds rows `layout.offsets[r] ..` of every per-atom
/// tensor; `batch[row] = r`. Per-member reductions go through
/// [`Layout`]. Each member is free (isolated) or periodic in its own cell.
pub struct BatchState {
    pub n_members: usize,
    /// Atoms per member (the largest member's count when they differ: see
    /// `layout.counts`).
    pub n_atoms: usize,
    pub layout: Layout,
    /// Global id of the member in each slot: it picks the starting structure
    /// and the random stream, so a member behaves the same in any batch.
    pub member_ids: Vec<usize>,
    pub device: Device,
    /// Precision of positions, velocities and forces.
    pub kind: Kind,
    /// [R*N, 3] in Å.
    pub positions: Tensor,
    /// [R*N, 3] in Å/fs.
    pub velocities: Tensor,
    /// [R*N, 1] in amu.
    pub masses: Tensor,
    /// [R*N] int64.
    pub atomic_numbers: Tensor,
    /// [R*N] int64: the member slot of each atom (= `layout.batch`).
    pub batch: Tensor,
    /// [R*N, 3] int64: globally unique index of each degree of freedom,
    /// `member_id · 2³² + 3 · atom + xyz`, used to key random numbers (the
    /// generator hashes the two 32-bit halves in turn), so a member draws
    /// the same numbers alone or in any batch.
    pub noise_index: Tensor,
    /// [R*N, 3] in eV/Å: forces at `positions` (kept up to date by integrators).
    pub forces: Tensor,
    /// [R] in eV: potential energies at `positions`.
    pub energies: Tensor,
    /// [R, 3, 3] float64, rows a, b, c of each member's periodic cell (Å,
    /// lower triangular); None for free (isolated) members. A device
    /// tensor, so a barostat can change it per member in place.
    pub cells: Option<Tensor>,
    /// [R] float32: each member's total charge (elementary charges), from
    /// its molecule (`[system] charge` or the file's formal charges); read
    /// by models that take a charge.
    pub charges: Tensor,
    /// Steps taken.
    pub step: u64,
}

impl BatchState {
    /// This batch's share of one number per member of the whole run (the
    /// numbers indexed by member id): all of them for a run in one process.
    pub fn mine(&self, all: &[f64]) -> Vec<f64> {
        self.mine_rows(all, 1)
    }

    /// The same for `per_member` numbers per member; members beyond `all`
    /// give none (a caller checks the length).
    pub fn mine_rows(&self, all: &[f64], per_member: usize) -> Vec<f64> {
        self.member_ids
            .iter()
            .filter_map(|&m| all.get(m * per_member..(m + 1) * per_member))
            .flatten()
            .copied()
            .collect()
    }

    /// Members 0..n_members.
    pub fn new(molecule: &Molecule, n_members: usize, device: Device, kind: Kind) -> Self {
        let ids: Vec<usize> = (0..n_members).collect();
        Self::with_members(molecule, &ids, device, kind)
    }

    /// The given members of one molecule (ids may be any subset, in any
    /// order); member `m` starts from structure `m mod (number of structures)`.
    pub fn with_members(
        molecule: &Molecule,
        member_ids: &[usize],
        device: Device,
        kind: Kind,
    ) -> Self {
        let members: Vec<(&Molecule, usize)> = member_ids.iter().map(|&m| (molecule, m)).collect();
        Self::from_members(&members, device, kind)
    }

    /// Members of possibly different molecules, each `(molecule, member
    /// id)`; member `m` starts from its molecule's structure `m mod (number
    /// of structures)`. Member ids must be distinct (they key the random
    /// streams).
    pub fn from_members(members: &[(&Molecule, usize)], device: Device, kind: Kind) -> Self {
        let counts: Vec<usize> = members.iter().map(|(m, _)| m.n_atoms()).collect();
        let layout = Layout::from_counts(&counts, device);
        let n_max = counts.iter().copied().max().unwrap_or(0);
        let rows = layout.n_rows() as i64;
        let mut pos = Vec::with_capacity(3 * rows as usize);
        let (mut masses, mut numbers, mut noise) = (Vec::new(), Vec::new(), Vec::new());
        for &(molecule, m) in members {
            for p in &molecule.structures[m % molecule.structures.len()] {
                pos.extend_from_slice(p);
            }
            masses.extend_from_slice(&molecule.masses);
            numbers.extend_from_slice(&molecule.atomic_numbers);
            // The member id in the high 32 bits, the degree of freedom in
            // the low ones: a member's stream depends on nothing else in
            // the batch.
            let base = (m as i64) << 32;
            noise.extend((0..3 * molecule.n_atoms() as i64).map(|d| base + d));
        }
        let opts = (kind, device);
        let positions = Tensor::from_slice(&pos)
            .view([rows, 3])
            .to_device(device)
            .to_kind(kind);
        let masses = Tensor::from_slice(&masses)
            .view([rows, 1])
            .to_device(device)
            .to_kind(kind);
        let r = members.len();
        BatchState {
            n_members: r,
            n_atoms: n_max,
            member_ids: members.iter().map(|&(_, m)| m).collect(),
            device,
            kind,
            velocities: Tensor::zeros([rows, 3], opts),
            forces: Tensor::zeros([rows, 3], opts),
            energies: Tensor::zeros([r as i64], (Kind::Double, device)),
            positions,
            masses,
            atomic_numbers: Tensor::from_slice(&numbers).to_device(device),
            batch: layout.batch.shallow_clone(),
            noise_index: Tensor::from_slice(&noise).view([rows, 3]).to_device(device),
            layout,
            cells: None,
            charges: Tensor::from_slice(
                &members
                    .iter()
                    .map(|(m, _)| m.total_charge() as f32)
                    .collect::<Vec<_>>(),
            )
            .to_device(device),
            step: 0,
        }
    }

    /// Give every member a periodic cell ([R, 3, 3] rows a, b, c in Å,
    /// any float kind; stored as float64 on the state's device).
    pub fn set_cells(&mut self, cells: &Tensor) {
        self.cells = Some(cells.to_kind(Kind::Double).to_device(self.device));
    }

    /// Free, or periodic in `cells`.
    pub fn boundary(&self) -> Boundary<'_> {
        match &self.cells {
            Some(c) => Boundary::Periodic(c),
            None => Boundary::Free,
        }
    }

    /// Sum a per-atom quantity [R*N] (or [R*N, k]) into one value per member [R].
    pub fn per_member_sum(&self, per_atom: &Tensor) -> Tensor {
        self.layout.sum(per_atom)
    }

    /// Kinetic energy of each member in eV, [R] float64 (on the device).
    pub fn kinetic_energy(&self) -> Tensor {
        let mv2 = (&self.masses * self.velocities.square()).to_kind(Kind::Double);
        self.per_member_sum(&mv2) * (0.5 * AMU_A2_PER_FS2_IN_EV)
    }

    /// Instantaneous kinetic temperature of each member in K, [R] float64.
    pub fn temperature(&self, dof_per_member: f64) -> Tensor {
        self.kinetic_energy() * (2.0 / (dof_per_member * KB_EV_PER_K))
    }

    /// Standard deviation of one velocity component, sqrt(kT/m) in Å/fs, for
    /// per-member temperatures `temps` ([R], K): [R*N, 1].
    pub fn thermal_velocity_scale(&self, temps: &Tensor) -> Tensor {
        let kt_per_atom = temps.to_kind(Kind::Double).index_select(0, &self.batch) * kt(1.0);
        (kt_per_atom.unsqueeze(1) / self.masses.to_kind(Kind::Double) / AMU_A2_PER_FS2_IN_EV)
            .sqrt()
            .to_kind(self.kind)
    }

    /// Draw Maxwell-Boltzmann velocities at `temperature` (K) and remove each
    /// member's centre-of-mass motion.
    pub fn set_maxwell_boltzmann(&mut self, temperature: f64, rng: &mut CounterRng) {
        let temps = Tensor::full(
            [self.n_members as i64],
            temperature,
            (Kind::Double, self.device),
        );
        self.set_maxwell_boltzmann_per_member(&temps, rng);
    }

    /// Maxwell-Boltzmann velocities with one temperature per member ([R], K).
    pub fn set_maxwell_boltzmann_per_member(&mut self, temps: &Tensor, rng: &mut CounterRng) {
        let z = rng.normal(&self.noise_index).to_kind(self.kind);
        self.velocities = z * self.thermal_velocity_scale(temps);
        self.remove_com_motion();
    }

    /// Subtract each member's centre-of-mass velocity.
    pub fn remove_com_motion(&mut self) {
        let p = self.layout.sum_vectors(&(&self.masses * &self.velocities));
        let total = self.layout.sum_vectors(&self.masses.expand([-1, 3], false));
        let v_com = self.layout.per_atom(&(p / total));
        self.velocities = &self.velocities - v_com;
    }

    /// Positions copied to the host as float64, row-major [R*N*3].
    pub fn positions_host(&self) -> Vec<f64> {
        to_host_f64(&self.positions)
    }
}

/// Copy any tensor to a flat host vector of f64 (one device→host transfer).
pub fn to_host_f64(t: &Tensor) -> Vec<f64> {
    let flat = t
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Double)
        .contiguous()
        .view([-1]);
    Vec::<f64>::try_from(&flat).expect("a contiguous CPU float64 tensor converts to Vec<f64>")
}
