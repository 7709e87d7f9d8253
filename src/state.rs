//! The batched simulation state: all members of an ensemble concatenated in
//! one set of tensors on the device (TorchSim's layout), so one force call and
//! one integrator update serve every member.

use tch::{Device, Kind, Tensor};

use crate::rng::CounterRng;
use crate::system::Molecule;
use crate::units::{kt, AMU_A2_PER_FS2_IN_EV, KB_EV_PER_K};

/// Positions, velocities and per-atom constants of R members of one molecule.
///
/// Atom `a` of member slot `r` is row `r * n_atoms + a` of every per-atom
/// tensor; `batch[row] = r`. Per-member reductions reshape to `[R, N, ...]`.
pub struct BatchState {
    pub n_members: usize,
    pub n_atoms: usize,
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
    /// [R*N] int64: the member slot of each atom.
    pub batch: Tensor,
    /// [R*N, 3] int64: globally unique index of each degree of freedom,
    /// `member_id * 3N + 3 * atom + xyz`, used to key random numbers.
    pub noise_index: Tensor,
    /// [R*N, 3] in eV/Å: forces at `positions` (kept up to date by integrators).
    pub forces: Tensor,
    /// [R] in eV: potential energies at `positions`.
    pub energies: Tensor,
    /// Steps taken.
    pub step: u64,
}

impl BatchState {
    /// Members 0..n_members.
    pub fn new(molecule: &Molecule, n_members: usize, device: Device, kind: Kind) -> Self {
        let ids: Vec<usize> = (0..n_members).collect();
        Self::with_members(molecule, &ids, device, kind)
    }

    /// The given members (ids may be any subset, in any order).
    pub fn with_members(
        molecule: &Molecule,
        member_ids: &[usize],
        device: Device,
        kind: Kind,
    ) -> Self {
        let n = molecule.n_atoms();
        let r = member_ids.len();
        let n_struct = molecule.structures.len();
        let mut pos = Vec::with_capacity(r * n * 3);
        for &m in member_ids {
            for p in &molecule.structures[m % n_struct] {
                pos.extend_from_slice(p);
            }
        }
        let rows = (r * n) as i64;
        let opts = (kind, device);
        let positions = Tensor::from_slice(&pos)
            .view([rows, 3])
            .to_device(device)
            .to_kind(kind);
        let masses = Tensor::from_slice(&molecule.masses)
            .repeat([r as i64])
            .view([rows, 1])
            .to_device(device)
            .to_kind(kind);
        let atomic_numbers = Tensor::from_slice(&molecule.atomic_numbers)
            .repeat([r as i64])
            .to_device(device);
        let batch = Tensor::arange(r as i64, (Kind::Int64, device)).repeat_interleave_self_int(
            n as i64,
            Some(0),
            Some(rows),
        );
        let ids = Tensor::from_slice(&member_ids.iter().map(|&m| m as i64).collect::<Vec<_>>())
            .to_device(device);
        let per_member = Tensor::arange(3 * n as i64, (Kind::Int64, device));
        let noise_index =
            (ids.unsqueeze(1) * (3 * n as i64) + per_member.unsqueeze(0)).view([rows, 3]);
        BatchState {
            n_members: r,
            n_atoms: n,
            member_ids: member_ids.to_vec(),
            device,
            kind,
            velocities: Tensor::zeros([rows, 3], opts),
            forces: Tensor::zeros([rows, 3], opts),
            energies: Tensor::zeros([r as i64], (Kind::Double, device)),
            positions,
            masses,
            atomic_numbers,
            batch,
            noise_index,
            step: 0,
        }
    }

    /// Sum a per-atom quantity [R*N] (or [R*N, k]) into one value per member [R].
    pub fn per_member_sum(&self, per_atom: &Tensor) -> Tensor {
        per_atom
            .reshape([self.n_members as i64, -1])
            .sum_dim_intlist(1, false, Kind::Double)
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
        let (r, n) = (self.n_members as i64, self.n_atoms as i64);
        let m = self.masses.view([r, n, 1]);
        let v = self.velocities.view([r, n, 3]);
        let p = (&m * &v).sum_dim_intlist(1, true, self.kind);
        let total = m.sum_dim_intlist(1, true, self.kind);
        self.velocities = (v - p / total).view([r * n, 3]);
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
