//! Constant pressure by Monte Carlo volume moves: OpenMM's
//! MonteCarloBarostat, for every periodic member of the batch at once.
//!
//! Each move proposes for every member its own isotropic volume change
//! ΔV ∈ [−s, s], scales the member's cell by f = (V'/V)^(1/3) and each of
//! its molecules (bond-graph components) by its centre, so bonds keep their
//! lengths; evaluates ALL members' trial energies in one batched force call;
//! and accepts each member with its own Metropolis test on
//! w = ΔE + P ΔV − N_mol kT ln(V'/V) (kT of the member's thermostat, which
//! under replica exchange is its current rung). Rejected members get back
//! their positions, cell, forces and energies bit for bit. The step size s
//! adapts per member every 10 attempts toward 25–75 % acceptance, as
//! OpenMM's does, but is capped at 30 % of the member's volume when the
//! barostat started, not of its current volume as in OpenMM: a cap that
//! follows the volume makes the proposal depend on the state and biases
//! the sampled volume (an ideal gas of 20 molecules, where the cap binds:
//! ⟨V⟩ 1.0 % low, 43 standard errors, in a Monte Carlo model of the scheme;
//! exact with the fixed cap). Every update is in place, so a captured CUDA
//! graph keeps reading the right memory.
//!
//! Anisotropic (OpenMM's MonteCarloAnisotropicBarostat, all three axes):
//! each move picks one Cartesian axis at random per member and scales the
//! cell's and the molecule centres' coordinates along it alone by V'/V;
//! each axis keeps its own step size. A trial cell with a perpendicular
//! width under the model's cutoff is rejected (the neighbour list would
//! miss images).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::force::ForceProvider;
use crate::parallel::Team;
use crate::rng::HostRng;
use crate::state::{to_host_f64, BatchState};
use crate::system::cell::Cell;
use crate::system::chemistry::Molecules;
use crate::units::BAR_IN_EV_PER_A3;

/// Attempts between adaptations of the step size.
const ADAPT_EVERY: u64 = 10;

/// The barostat's state, all of it saved in checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonteCarloBarostat {
    /// Bar.
    pub pressure_bar: f64,
    /// Steps between moves.
    pub interval: u64,
    /// One axis at a time instead of all three together.
    pub anisotropic: bool,
    /// Largest volume change tried, per member and axis (Å³; isotropic
    /// moves use the first).
    pub max_change: Vec<[f64; 3]>,
    /// Each member's volume when the barostat started (Å³): the step
    /// size stays below 30 % of it.
    pub reference_volume: Vec<f64>,
    /// Attempts and acceptances since the last adaptation, per member
    /// and axis.
    pub attempted: Vec<[u64; 3]>,
    pub accepted: Vec<[u64; 3]>,
    /// All attempts and acceptances, per member.
    pub total_attempted: Vec<u64>,
    pub total_accepted: Vec<u64>,
    /// Stream of the proposals and the Metropolis tests.
    pub rng: HostRng,
}

/// Where each atom's molecule is, to scale molecules by their centres
/// (one molecule per member, the same for every member).
pub struct MoleculeScaling {
    /// [n_mol, max atoms] atom index within the member, padded with n (a row
    /// of zeros appended for the gather).
    table: Tensor,
    /// [n_mol, 1] atoms per molecule (float64).
    sizes: Tensor,
    /// [n] molecule of each atom.
    molecule_of_atom: Tensor,
    /// Molecules per member.
    pub count: usize,
}

impl MoleculeScaling {
    pub fn new(n_atoms: usize, bonds: &[[usize; 2]], device: tch::Device) -> MoleculeScaling {
        let molecules = Molecules::new(n_atoms, bonds);
        let lists: Vec<Vec<usize>> = molecules.atoms().map(|a| a.collect()).collect();
        let widest = lists.iter().map(Vec::len).max().unwrap_or(1);
        let mut table = vec![n_atoms as i64; lists.len() * widest];
        let mut of_atom = vec![0i64; n_atoms];
        for (m, atoms) in lists.iter().enumerate() {
            for (k, &a) in atoms.iter().enumerate() {
                table[m * widest + k] = a as i64;
                of_atom[a] = m as i64;
            }
        }
        let sizes: Vec<f64> = lists.iter().map(|l| l.len() as f64).collect();
        MoleculeScaling {
            table: Tensor::from_slice(&table)
                .view([lists.len() as i64, widest as i64])
                .to_device(device),
            sizes: Tensor::from_slice(&sizes).view([-1, 1]).to_device(device),
            molecule_of_atom: Tensor::from_slice(&of_atom).to_device(device),
            count: lists.len(),
        }
    }

    /// The centre (mean position) of each atom's molecule, [R·n, 3], for
    /// positions [R·n, 3] of R members of n atoms. A gather and a sum in a
    /// fixed order: the same bits on any device, every time.
    fn centres(&self, positions: &Tensor, r: i64) -> Tensor {
        let n = self.molecule_of_atom.size()[0];
        let x = positions.to_kind(Kind::Double).view([r, n, 3]);
        let padded = Tensor::cat(&[x.shallow_clone(), x.zeros_like().narrow(1, 0, 1)], 1);
        let (m, w) = (self.table.size()[0], self.table.size()[1]);
        let sums = padded
            .index_select(1, &self.table.view([-1]))
            .view([r, m, w, 3])
            .sum_dim_intlist(2, false, Kind::Double);
        (sums / &self.sizes)
            .index_select(1, &self.molecule_of_atom)
            .view([r * n, 3])
    }
}

/// What one move did.
#[derive(Debug, Clone)]
pub struct BarostatMove {
    /// Per member.
    pub accepted: Vec<bool>,
    /// The neighbour list had to be enlarged for the trial volumes (the
    /// caller captures its step again).
    pub grew_list: bool,
}

impl MonteCarloBarostat {
    /// For `n_members` members of volumes `volumes` (Å³): first step size
    /// 1 % of each volume, as OpenMM's.
    pub fn new(
        pressure_bar: f64,
        interval: u64,
        anisotropic: bool,
        volumes: &[f64],
        seed: u64,
    ) -> Self {
        let r = volumes.len();
        MonteCarloBarostat {
            pressure_bar,
            interval,
            anisotropic,
            max_change: volumes.iter().map(|v| [0.01 * v; 3]).collect(),
            reference_volume: volumes.to_vec(),
            attempted: vec![[0; 3]; r],
            accepted: vec![[0; 3]; r],
            total_attempted: vec![0; r],
            total_accepted: vec![0; r],
            rng: HostRng::new(crate::rng::splitmix64(seed ^ 0x4241_524f_5354_4154)),
        }
    }

    /// One volume move for every member; `kt` is each member's kT (eV).
    /// Pulls the cells and energies to the host (a check step).
    ///
    /// The barostat's state and `kt` cover every member of the run; `state`
    /// holds `team`'s share of them (all of them in one process). Every rank
    /// draws the whole run's random numbers, decides for its own members and
    /// gathers the outcomes, so all ranks keep the same state, the one a
    /// single process keeps.
    pub fn attempt(
        &mut self,
        state: &mut BatchState,
        force: &dyn ForceProvider,
        kt: &[f64],
        molecules: &MoleculeScaling,
        team: &Team,
    ) -> Result<BarostatMove> {
        let r = state.n_members;
        let total = self.max_change.len();
        let ids = &state.member_ids;
        let Some(cells) = state.cells.as_ref().map(Tensor::shallow_clone) else {
            return Err(Error::Invalid("a barostat needs periodic members".into()));
        };
        let volumes: Vec<f64> = Cell::all_as_stored(&cells)?
            .iter()
            .map(Cell::volume)
            .collect();
        // Two draws per member and move (three when anisotropic: the
        // axis), in member order, used or not: the stream does not depend
        // on the outcomes.
        let draws: Vec<[f64; 2]> = (0..total)
            .map(|_| [self.rng.uniform(), self.rng.uniform()])
            .collect();
        let axes: Vec<usize> = (0..total)
            .map(|_| match self.anisotropic {
                true => ((3.0 * self.rng.uniform()) as usize).min(2),
                false => 0,
            })
            .collect();
        // Slot i holds member ids[i].
        let new_volumes: Vec<f64> = (0..r)
            .map(|i| {
                let m = ids[i];
                volumes[i] + self.max_change[m][axes[m]] * 2.0 * (draws[m][0] - 0.5)
            })
            .collect();
        // Scale of each coordinate, per slot.
        let scales: Vec<[f64; 3]> = (0..r)
            .map(|i| {
                let ratio = new_volumes[i] / volumes[i];
                match (new_volumes[i] > 0.0, self.anisotropic) {
                    (false, _) => [1.0; 3],
                    (true, false) => [ratio.cbrt(); 3],
                    (true, true) => {
                        let mut s = [1.0; 3];
                        s[axes[ids[i]]] = ratio;
                        s
                    }
                }
            })
            .collect();
        let old = (
            state.positions.copy(),
            cells.copy(),
            state.forces.copy(),
            state.energies.copy(),
        );
        let device = state.device;
        let f = Tensor::from_slice(&scales.concat())
            .view([r as i64, 3])
            .to_device(device);
        let per_atom = state.layout.per_atom(&(&f - 1.0));
        let moved = &state.positions
            + (molecules.centres(&state.positions, r as i64) * per_atom).to_kind(state.kind);
        state.positions.copy_(&moved);
        let mut cells_now = cells.shallow_clone();
        // Rows are lattice vectors: scaling coordinate k scales column k.
        cells_now.copy_(&(&old.1 * f.view([-1, 1, 3])));
        // A trial cell narrower than the cutoff somewhere is refused.
        let cutoff = force.list_shape().map_or(0.0, |s| s.cutoffs[0]);
        let wide_enough: Vec<bool> = Cell::all_as_stored(&cells_now)?
            .iter()
            .map(|c| c.perpendicular_widths().iter().all(|&w| w >= cutoff))
            .collect();
        let mut out = force.compute(state)?;
        let mut grew_list = false;
        if force.overflow().is_some() {
            force.grow(state)?;
            out = force.compute(state)?;
            grew_list = true;
        }
        let e_old = to_host_f64(&old.3);
        let e_new = to_host_f64(&out.energies);
        let pressure = self.pressure_bar * BAR_IN_EV_PER_A3;
        let accepted: Vec<bool> = (0..r)
            .map(|i| {
                let m = ids[i];
                if new_volumes[i] <= 0.0 || !wide_enough[i] {
                    return false;
                }
                let dv = new_volumes[i] - volumes[i];
                let w = (e_new[i] - e_old[i]) + pressure * dv
                    - molecules.count as f64 * kt[m] * (new_volumes[i] / volumes[i]).ln();
                w <= 0.0 || draws[m][1] < (-w / kt[m]).exp()
            })
            .collect();
        // Accepted members keep the trial; the others get everything back.
        let keep = Tensor::from_slice(&accepted.iter().map(|&a| a as i64).collect::<Vec<_>>())
            .to_device(device)
            .gt(0);
        let keep_atom = state.layout.per_atom(&keep).unsqueeze(1);
        let positions = state.positions.where_self(&keep_atom, &old.0);
        state.positions.copy_(&positions);
        let forces = out.forces.where_self(&keep_atom, &old.2);
        state.forces.copy_(&forces);
        let energies = out.energies.where_self(&keep, &old.3);
        state.energies.copy_(&energies);
        let restored = cells_now.where_self(&keep.view([-1, 1, 1]), &old.1);
        cells_now.copy_(&restored);
        // Every member's outcome, on every rank.
        let flags: Vec<f64> = accepted.iter().map(|&a| f64::from(u8::from(a))).collect();
        let accepted: Vec<bool> = team
            .all_members(&flags, 1)
            .iter()
            .map(|&a| a != 0.0)
            .collect();
        for (m, &a) in accepted.iter().enumerate() {
            let k = axes[m];
            self.attempted[m][k] += 1;
            self.total_attempted[m] += 1;
            if a {
                self.accepted[m][k] += 1;
                self.total_accepted[m] += 1;
            }
            if self.attempted[m][k] >= ADAPT_EVERY {
                // As OpenMM: shrink below 25 % acceptance, grow above 75 %
                // (at most 30 % of the starting volume: see the module docs).
                let rate = self.accepted[m][k] as f64 / self.attempted[m][k] as f64;
                let step = &mut self.max_change[m][k];
                if rate < 0.25 {
                    *step /= 1.1;
                } else if rate > 0.75 {
                    *step = (*step * 1.1).min(0.3 * self.reference_volume[m]);
                }
                self.attempted[m][k] = 0;
                self.accepted[m][k] = 0;
            }
        }
        Ok(BarostatMove {
            accepted,
            grew_list,
        })
    }

    /// Fraction of all moves accepted, per member.
    pub fn acceptance(&self) -> Vec<f64> {
        self.total_accepted
            .iter()
            .zip(&self.total_attempted)
            .map(|(&a, &n)| a as f64 / (n as f64).max(1.0))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell as Counter;
    use std::rc::Rc;

    use tch::{Device, Kind, Tensor};

    use super::{MoleculeScaling, MonteCarloBarostat};
    use crate::error::Result;
    use crate::force::{ForceOutput, ForceProvider, Harmonic};
    use crate::neighbors::{Grid, ListShape};
    use crate::parallel::{Solo, Team};
    use crate::state::{to_host_f64, BatchState};
    use crate::system::cell::Cell;
    use crate::system::Molecule;
    use crate::units::BAR_IN_EV_PER_A3;

    const R: usize = 6;
    const N: usize = 5;
    /// Atoms 0-1 and 3-4 bonded, 2 alone: three molecules.
    const BONDS: [[usize; 2]; 2] = [[0, 1], [3, 4]];
    const MOLECULES: [&[usize]; 3] = [&[0, 1], &[2], &[3, 4]];
    const K: f64 = 0.05;
    const BAR: f64 = 2000.0;

    /// Six members of a five-atom system in different cells (one
    /// triclinic), each atom on a spring to a point 0.3 Å off its start, so
    /// every volume move changes the energy by a known amount.
    fn setup() -> (BatchState, Harmonic) {
        let atoms = [
            [1.0, 2.0, 3.0],
            [1.9, 2.4, 3.1],
            [5.0, 1.0, 7.0],
            [7.0, 6.0, 2.0],
            [7.5, 6.8, 2.6],
        ];
        let m = Molecule::from_symbols(&["O", "H", "Ar", "C", "O"], &atoms).unwrap();
        let mut state = BatchState::new(&m, R, Device::Cpu, Kind::Double);
        let shift: Vec<f64> = (0..R * N * 3)
            .map(|i| 0.1 * ((i * 7 % 11) as f64))
            .collect();
        let x = &state.positions + Tensor::from_slice(&shift).view([(R * N) as i64, 3]);
        state.positions.copy_(&x);
        let cells: Vec<f64> = (0..R)
            .flat_map(|m| {
                let a = 10.0 + m as f64;
                let bx = if m == 4 { 2.5 } else { 0.0 };
                [a, 0.0, 0.0, bx, 11.0, 0.0, 0.0, 0.0, 12.0]
            })
            .collect();
        state.set_cells(&Tensor::from_slice(&cells).view([R as i64, 3, 3]));
        let springs = Harmonic {
            k: K,
            reference: &state.positions - 0.3,
        };
        let out = springs.compute(&state).unwrap();
        state.energies.copy_(&out.energies);
        state.forces.copy_(&out.forces);
        (state, springs)
    }

    fn energy(x: &[f64], x0: &[f64], m: usize) -> f64 {
        let rows = m * N * 3..(m + 1) * N * 3;
        0.5 * K
            * x[rows.clone()]
                .iter()
                .zip(&x0[rows])
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
    }

    /// The whole run in this process, and the molecules of [`BONDS`].
    fn one_process() -> (Team, MoleculeScaling) {
        let team = Team {
            comm: Rc::new(Solo),
            total: R,
        };
        (team, MoleculeScaling::new(N, &BONDS, Device::Cpu))
    }

    /// What the host transcription says of one member's move.
    struct Want {
        accepted: bool,
        axis: usize,
        /// V' ≤ 0 proposed.
        negative: bool,
        /// The trial cell is narrower than the cutoff, and the Metropolis
        /// test alone would have accepted it.
        narrow: bool,
    }

    /// One move as OpenMM's MonteCarloBarostat(Anisotropic) makes it,
    /// written out on the host: ΔV uniform in ±max_change (one random axis
    /// when anisotropic), molecule centres scaled, w = ΔE + P ΔV −
    /// N_mol kT ln(V'/V), accepted when w ≤ 0 or u < exp(−w/kT); V' ≤ 0
    /// and a trial cell narrower than `cutoff` refused. Returns each
    /// member's outcome and the expected positions and cells.
    fn expected_move(
        b: &MonteCarloBarostat,
        (x, x0, cells): (&[f64], &[f64], &[f64]),
        kt: &[f64],
        cutoff: f64,
    ) -> (Vec<Want>, Vec<f64>, Vec<f64>) {
        let mut rng = b.rng;
        let u: Vec<[f64; 2]> = (0..R).map(|_| [rng.uniform(), rng.uniform()]).collect();
        let axes: Vec<usize> = (0..R)
            .map(|_| match b.anisotropic {
                true => ((3.0 * rng.uniform()) as usize).min(2),
                false => 0,
            })
            .collect();
        let (mut xs, mut cs, mut out) = (x.to_vec(), cells.to_vec(), Vec::new());
        for m in 0..R {
            let c = &cells[9 * m..9 * m + 9];
            let v = c[0] * c[4] * c[8];
            let v_new = v + b.max_change[m][axes[m]] * 2.0 * (u[m][0] - 0.5);
            let mut want = Want {
                accepted: false,
                axis: axes[m],
                negative: v_new <= 0.0,
                narrow: false,
            };
            if want.negative {
                out.push(want);
                continue;
            }
            let s = match b.anisotropic {
                false => [(v_new / v).cbrt(); 3],
                true => {
                    let mut s = [1.0; 3];
                    s[axes[m]] = v_new / v;
                    s
                }
            };
            let mut trial = x.to_vec();
            for atoms in MOLECULES {
                for k in 0..3 {
                    let centre = atoms.iter().map(|&a| x[(m * N + a) * 3 + k]).sum::<f64>()
                        / atoms.len() as f64;
                    for &a in atoms {
                        trial[(m * N + a) * 3 + k] += centre * (s[k] - 1.0);
                    }
                }
            }
            let trial_cell: Vec<f64> = (0..9).map(|e| c[e] * s[e % 3]).collect();
            let w = energy(&trial, x0, m) - energy(x, x0, m) + BAR * BAR_IN_EV_PER_A3 * (v_new - v)
                - 3.0 * kt[m] * (v_new / v).ln();
            let metropolis = w <= 0.0 || u[m][1] < (-w / kt[m]).exp();
            let widths = Cell::all_from_rows(&trial_cell)[0].perpendicular_widths();
            let wide = widths.iter().all(|&w| w >= cutoff);
            want.narrow = metropolis && !wide;
            want.accepted = metropolis && wide;
            if want.accepted {
                let rows = m * N * 3..(m + 1) * N * 3;
                xs[rows.clone()].copy_from_slice(&trial[rows]);
                cs[9 * m..9 * m + 9].copy_from_slice(&trial_cell);
            }
            out.push(want);
        }
        (out, xs, cs)
    }

    fn close(a: &[f64], b: &[f64], what: &str) {
        for (i, (p, q)) in a.iter().zip(b).enumerate() {
            assert!(
                (p - q).abs() <= 1e-12 * q.abs().max(1.0),
                "{what}[{i}]: {p} vs {q}"
            );
        }
    }

    /// What a series of moves met (so a test knows it covered each case).
    #[derive(Default)]
    struct Seen {
        accept: bool,
        reject: bool,
        negative: bool,
        narrow: bool,
        grow: bool,
        cap: bool,
        shrink: bool,
        axes: [bool; 3],
    }

    /// `moves` moves of `b` on `state`, each checked against
    /// [`expected_move`]: the same members accepted; positions, cells,
    /// energies and forces of accepted members the trial's and of rejected
    /// ones unchanged bit for bit; the counters; the step sizes adapted
    /// every 10 attempts per axis as OpenMM's (÷1.1 below 25 % acceptance,
    /// ×1.1 above 75 %, capped at 30 % of the starting volume). Returns
    /// whether each move grew the list.
    fn check_moves(
        b: &mut MonteCarloBarostat,
        (state, force, x0): (&mut BatchState, &dyn ForceProvider, &[f64]),
        (kt, cutoff): (&[f64], f64),
        moves: usize,
        seen: &mut Seen,
    ) -> Vec<bool> {
        let (team, molecules) = one_process();
        assert_eq!(molecules.count, 3);
        let start = b.reference_volume.clone();
        let mut expected = b.clone();
        let mut grew = Vec::new();
        for _ in 0..moves {
            let x = to_host_f64(&state.positions);
            let cells = to_host_f64(state.cells.as_ref().unwrap());
            let (e0, f0) = (to_host_f64(&state.energies), to_host_f64(&state.forces));
            let (want, xs, cs) = expected_move(b, (&x, x0, &cells), kt, cutoff);
            let got = b.attempt(state, force, kt, &molecules, &team).unwrap();
            grew.push(got.grew_list);
            let accepted: Vec<bool> = want.iter().map(|w| w.accepted).collect();
            assert_eq!(got.accepted, accepted);
            let (x1, c1) = (
                to_host_f64(&state.positions),
                to_host_f64(state.cells.as_ref().unwrap()),
            );
            let (e1, f1) = (to_host_f64(&state.energies), to_host_f64(&state.forces));
            close(&x1, &xs, "positions");
            close(&c1, &cs, "cells");
            for (m, w) in want.iter().enumerate() {
                let rows = m * N * 3..(m + 1) * N * 3;
                if w.accepted {
                    close(&[e1[m]], &[energy(&x1, x0, m)], "energy");
                    let f: Vec<f64> = rows.clone().map(|i| -K * (x1[i] - x0[i])).collect();
                    close(&f1[rows], &f, "forces");
                    seen.axes[w.axis] = true;
                } else {
                    assert_eq!(x1[rows.clone()], x[rows.clone()], "member {m}");
                    assert_eq!(f1[rows.clone()], f0[rows], "member {m}");
                    assert_eq!(e1[m].to_bits(), e0[m].to_bits(), "member {m}");
                    assert_eq!(c1[9 * m..9 * m + 9], cells[9 * m..9 * m + 9]);
                }
                seen.accept |= w.accepted;
                seen.reject |= !w.accepted;
                seen.negative |= w.negative;
                seen.narrow |= w.narrow;
                let (e, k) = (&mut expected, w.axis);
                e.attempted[m][k] += 1;
                e.total_attempted[m] += 1;
                e.accepted[m][k] += u64::from(w.accepted);
                e.total_accepted[m] += u64::from(w.accepted);
                if e.attempted[m][k] == 10 {
                    let rate = e.accepted[m][k] as f64 / 10.0;
                    let step = e.max_change[m][k];
                    if rate < 0.25 {
                        e.max_change[m][k] = step / 1.1;
                        seen.shrink = true;
                    } else if rate > 0.75 {
                        let cap = 0.3 * start[m];
                        e.max_change[m][k] = (step * 1.1).min(cap);
                        seen.grow |= step * 1.1 < cap;
                        seen.cap |= step * 1.1 > cap;
                    }
                    e.attempted[m][k] = 0;
                    e.accepted[m][k] = 0;
                }
            }
            expected.rng = b.rng;
            assert_eq!(*b, expected);
        }
        grew
    }

    fn volumes(state: &BatchState) -> Vec<f64> {
        let c = to_host_f64(state.cells.as_ref().unwrap());
        (0..R)
            .map(|m| c[9 * m] * c[9 * m + 4] * c[9 * m + 8])
            .collect()
    }

    /// Forty moves, isotropic then anisotropic, each member with its own
    /// kT and step size (one large enough to propose V' ≤ 0), against the
    /// host transcription of OpenMM's rule ([`check_moves`]), with step
    /// counters preset so that the adaptation shrinks, grows and caps.
    #[test]
    fn each_move_follows_openmms_rule_member_by_member() {
        let kt = [0.01, 0.025, 0.05, 0.1, 0.4, 2.0];
        let mut seen = Seen::default();
        for anisotropic in [false, true] {
            let (mut state, springs) = setup();
            let x0 = to_host_f64(&springs.reference);
            let v = volumes(&state);
            let mut b = MonteCarloBarostat::new(BAR, 1, anisotropic, &v, 7);
            assert_eq!(b.acceptance(), vec![0.0; R]);
            for (m, f) in [0.01, 0.05, 0.2, 0.29, 0.1, 1.6].iter().enumerate() {
                b.max_change[m] = [f * v[m]; 3];
            }
            // Members 0 and 3 (where the cap binds) have accepted 9 of 9,
            // member 1 none of 9.
            for m in [0, 3] {
                b.attempted[m] = [9; 3];
                b.accepted[m] = [9; 3];
            }
            b.attempted[1] = [9; 3];
            let grew = check_moves(
                &mut b,
                (&mut state, &springs, &x0),
                (&kt, 0.0),
                20,
                &mut seen,
            );
            assert_eq!(grew, vec![false; 20]);
            let rates: Vec<f64> = (0..R)
                .map(|m| b.total_accepted[m] as f64 / b.total_attempted[m] as f64)
                .collect();
            assert_eq!(b.acceptance(), rates);
        }
        let s = &seen;
        assert!(s.accept && s.reject && s.negative && s.grow && s.cap && s.shrink);
        assert_eq!(s.axes, [true; 3]);
    }

    /// Springs behind a neighbour list of cutoff `cutoff` that overflows
    /// at the first evaluation, until grown.
    struct Listed {
        springs: Harmonic,
        cutoff: f64,
        grown: Counter<u32>,
        computed: Counter<u32>,
    }

    impl ForceProvider for Listed {
        fn describe(&self) -> String {
            "springs behind a list".into()
        }

        fn compute(&self, state: &BatchState) -> Result<ForceOutput> {
            self.computed.set(self.computed.get() + 1);
            self.springs.compute(state)
        }

        fn overflow(&self) -> Option<String> {
            (self.grown.get() == 0).then(|| "pairs".into())
        }

        fn grow(&self, _state: &BatchState) -> Result<()> {
            self.grown.set(self.grown.get() + 1);
            Ok(())
        }

        fn list_shape(&self) -> Option<ListShape> {
            Some(ListShape {
                cutoffs: vec![self.cutoff, 1.0],
                skin: 0.0,
                grid: Grid::Dense { atoms: N as i64 },
                capacity: N as i64,
                outer_capacity: 0,
                inner_capacities: vec![N as i64],
                whole_rows: false,
            })
        }
    }

    /// With a provider whose list has a 10.9 Å cutoff, a trial cell
    /// narrower than that is refused even where the Metropolis test would
    /// accept it, and the members whose cells stay wide enough move as
    /// before; an overflow during the trial grows the list, evaluates the
    /// trial again and says so.
    #[test]
    fn a_trial_narrower_than_the_cutoff_is_refused_and_an_overflow_grows_the_list() {
        let (mut state, springs) = setup();
        let x0 = to_host_f64(&springs.reference);
        let v = volumes(&state);
        let listed = Listed {
            springs,
            cutoff: 10.9,
            grown: Counter::new(0),
            computed: Counter::new(0),
        };
        let mut b = MonteCarloBarostat::new(BAR, 1, true, &v, 3);
        for (m, step) in b.max_change.iter_mut().enumerate() {
            *step = [0.1 * v[m]; 3];
        }
        let kt = [2.0; R];
        let mut seen = Seen::default();
        let grew = check_moves(
            &mut b,
            (&mut state, &listed, &x0),
            (&kt, 10.9),
            10,
            &mut seen,
        );
        assert!(seen.narrow && seen.accept, "no narrow trial refused");
        let mut want = vec![false; 10];
        want[0] = true;
        assert_eq!(grew, want);
        assert_eq!((listed.grown.get(), listed.computed.get()), (1, 11));
    }

    #[test]
    fn a_free_system_is_refused() {
        let (mut state, springs) = setup();
        state.cells = None;
        let (team, molecules) = one_process();
        let mut b = MonteCarloBarostat::new(BAR, 1, false, &[1000.0; R], 7);
        let err = b
            .attempt(&mut state, &springs, &[0.1; R], &molecules, &team)
            .err()
            .unwrap();
        assert!(err.to_string().contains("needs periodic members"), "{err}");
    }
}
