//! Batches of different molecules: every per-member reduction goes through
//! the state's layout (per-member offsets), so members of different sizes
//! get their own sums, maxima, kinetic energies and centre-of-mass motion;
//! forces through the neighbour list never couple members; and one
//! molecule × R keeps the reshape it always had (bit for bit).

mod common;

use common::*;
use mlff_md::force::{ForceProvider, LennardJones, LennardJonesPairs, PairForces};
use mlff_md::rng::CounterRng;
use mlff_md::state::BatchState;
use mlff_md::system::Molecule;
use mlff_md::units::AMU_A2_PER_FS2_IN_EV;
use tch::{Device, Kind, Tensor};

fn water() -> Molecule {
    Molecule::from_symbols(
        &["O", "H", "H"],
        &[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]],
    )
    .unwrap()
}

/// Ethanol (9 atoms), water (3), ethanol again and water again, as members
/// 0..4: rows 0-8, 9-11, 12-20, 21-23.
fn mixed() -> (BatchState, Vec<Molecule>) {
    let mols = vec![ethanol(), water()];
    let members = [(&mols[0], 0), (&mols[1], 1), (&mols[0], 2), (&mols[1], 3)];
    let mut state = BatchState::from_members(&members, Device::Cpu, Kind::Double);
    state.set_maxwell_boltzmann(300.0, &mut CounterRng::new(4));
    (state, mols)
}

#[test]
fn per_member_sums_maxima_and_kinetic_energy_follow_the_layout() {
    let (state, mols) = mixed();
    assert_eq!(state.layout.counts, [9, 3, 9, 3]);
    assert_eq!(state.layout.offsets, [0, 9, 12, 21]);
    assert_eq!(state.layout.uniform_atoms(), None);
    assert_eq!(
        host(&state.batch.to_kind(Kind::Double))[9..13],
        [1.0, 1.0, 1.0, 2.0]
    );
    // Per-atom values 1, 2, 3, ...: sums and maxima by member.
    let rows = Tensor::arange(24, (Kind::Double, Device::Cpu)) + 1.0;
    let sums = host(&state.layout.sum(&rows));
    assert_eq!(sums, [45.0, 33.0, 153.0, 69.0]);
    assert_eq!(host(&state.layout.max(&rows, 0.0)), [9.0, 12.0, 21.0, 24.0]);
    let flags = rows.ne(11.0);
    assert_eq!(
        host(&state.layout.all(&flags).to_kind(Kind::Double)),
        [1.0, 0.0, 1.0, 1.0]
    );
    // Kinetic energy from the velocities and masses, member by member.
    let v = host(&state.velocities);
    let masses: Vec<f64> = [&mols[0], &mols[1], &mols[0], &mols[1]]
        .iter()
        .flat_map(|m| m.masses.clone())
        .collect();
    let ke = host(&state.kinetic_energy());
    for (r, (&o, &c)) in state
        .layout
        .offsets
        .iter()
        .zip(&state.layout.counts)
        .enumerate()
    {
        let want: f64 = (o..o + c)
            .map(|a| 0.5 * masses[a] * (0..3).map(|k| v[3 * a + k].powi(2)).sum::<f64>())
            .sum::<f64>()
            * AMU_A2_PER_FS2_IN_EV;
        assert!(
            (ke[r] - want).abs() < 1e-12 * want,
            "member {r}: {} vs {want}",
            ke[r]
        );
        // Maxwell-Boltzmann velocities have no centre-of-mass motion per member.
        for k in 0..3 {
            let p: f64 = (o..o + c).map(|a| masses[a] * v[3 * a + k]).sum();
            assert!(p.abs() < 1e-12, "member {r}: momentum {p}");
        }
    }
    // A member keeps its random stream whatever batch it is in: member 2
    // (ethanol) alone gets the same velocities.
    let alone = BatchState::from_members(&[(&mols[0], 2)], Device::Cpu, Kind::Double);
    let mut alone = alone;
    alone.set_maxwell_boltzmann(300.0, &mut CounterRng::new(4));
    assert!(alone.velocities.equal(&state.velocities.narrow(0, 12, 9)));
}

/// One molecule × R: the layout sums by the reshape it always used (bit
/// for bit with a plain reshape-and-sum).
#[test]
fn one_molecule_times_r_sums_by_reshape() {
    let state = BatchState::new(&ethanol(), 5, Device::Cpu, Kind::Double);
    assert_eq!(state.layout.uniform_atoms(), Some(9));
    let x = Tensor::randn([45, 3], (Kind::Double, Device::Cpu));
    let want = x.reshape([5, -1]).sum_dim_intlist(1, false, Kind::Double);
    assert!(state.layout.sum(&x).equal(&want));
}

/// Lennard-Jones through the neighbour list (a cutoff beyond every pair)
/// on the mixed batch equals all-pairs Lennard-Jones on each member alone:
/// members do not see each other, and sizes do not matter.
#[test]
fn pair_forces_of_a_mixed_batch_equal_each_member_alone() {
    let (state, mols) = mixed();
    let model = || LennardJonesPairs {
        epsilon: 0.01,
        sigma: 1.2,
        cutoff: 50.0,
        shifted: false,
    };
    let out = PairForces::new(Box::new(model()), &state)
        .unwrap()
        .compute(&state)
        .unwrap();
    let energies = host(&out.energies);
    let forces = host(&out.forces);
    let ids = [0usize, 1, 2, 3];
    for (r, &id) in ids.iter().enumerate() {
        let mol = &mols[r % 2];
        let alone = BatchState::from_members(&[(mol, id)], Device::Cpu, Kind::Double);
        let want = LennardJones {
            epsilon: 0.01,
            sigma: 1.2,
        }
        .compute(&alone)
        .unwrap();
        let e = host(&want.energies)[0];
        assert!(
            (energies[r] - e).abs() < 1e-12 * e.abs().max(1e-3),
            "member {r}"
        );
        let o = state.layout.offsets[r];
        let f = host(&want.forces);
        for (k, fk) in f.iter().enumerate() {
            assert!(
                (forces[3 * o + k] - fk).abs() < 1e-10,
                "member {r} force {k}"
            );
        }
    }
}
