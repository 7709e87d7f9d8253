//! The Monte Carlo barostat: an ideal gas samples ⟨V⟩ = (N + 1) kT / P;
//! molecules are scaled by their centres (bond lengths kept); a rejected
//! move gives back positions, cell, forces and energies bit for bit; an NPT
//! run continued from a checkpoint equals the uninterrupted one bit for bit,
//! and its frames carry each member's changing cell; bad input is refused.

mod common;

use std::path::{Path, PathBuf};

use common::runs::*;
use common::*;
use mlff_md::config::Config;
use mlff_md::sampling::{MonteCarloBarostat, Move, VolumeMove};
use mlff_md::simulation::Simulation;
use mlff_md::system::cell::Cell;

/// 20 argon atoms (the first of tests/data/lj_fluid.xyz) as an XYZ file.
fn gas_xyz(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(root().join("tests/data/lj_fluid.xyz")).unwrap();
    let atoms: Vec<&str> = text.lines().skip(2).take(20).collect();
    let p = dir.join("gas.xyz");
    std::fs::write(&p, format!("20\n20 argon atoms\n{}\n", atoms.join("\n"))).unwrap();
    p
}

/// NPT config: `structure`, `cell`, the model lines, `members`, the pressure.
fn npt_config(
    dir: &Path,
    structure: &Path,
    system_extra: &str,
    model: &str,
    members: usize,
    pressure: f64,
    out: &Path,
) -> PathBuf {
    let text = format!(
        r#"[system]
structure = "{}"
{system_extra}
[model]
{model}
device = "cpu"
[integrator]
kind = "langevin"
timestep = 2.0
temperature = 300.0
friction = 5.0
[ensemble]
members = {members}
seed = 11
[barostat]
pressure = {pressure}
interval = 5
[run]
steps = 60
[output]
directory = "{}"
trajectory_interval = 20
observables_interval = 10
checkpoint_interval = 30
"#,
        structure.display(),
        out.display()
    );
    let p = dir.join("npt.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// The periodic water box (systems/water/water_1k.pdb) under a barostat
/// (1 bar, a move every 5 steps; `barostat_extra` lines added to its
/// section), with Lennard-Jones of strength `epsilon` (eV, σ = 1 Å, cutoff
/// 6 Å) between all atoms and `members` members.
fn water_box_npt(dir: &Path, epsilon: f64, members: usize, barostat_extra: &str) -> Simulation {
    let cfg = npt_config(
        dir,
        &root().join("systems/water/water_1k.pdb"),
        "periodic = true",
        &format!("kind = \"lennard-jones\"\nepsilon = {epsilon}\nsigma = 1.0\ncutoff = 6.0"),
        members,
        1.0,
        &dir.join("out"),
    );
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("interval = 5\n", &format!("interval = 5\n{barostat_extra}"));
    std::fs::write(&cfg, text).unwrap();
    Simulation::from_config(&Config::from_file(&cfg).unwrap()).unwrap()
}

/// Non-interacting atoms (Lennard-Jones with ε = 1e-9 eV and σ = 0.01 Å)
/// sample V^N exp(−PV/kT): ⟨V⟩ = (N + 1) kT / P exactly (N = 20 molecules).
/// 256 members, 700 moves each (the first 100 discarded); each member's
/// mean volume is one sample, so the standard error comes from their
/// spread. The step size adapts as OpenMM's; with OpenMM's cap on it (30 %
/// of the current volume) ⟨V⟩ would be 1 % low, about 10 standard errors
/// here.
#[test]
fn an_ideal_gas_samples_the_isobaric_volume() {
    let tmp = tempfile::tempdir().unwrap();
    let gas = gas_xyz(tmp.path());
    let kt = BOLTZMANN_J_PER_K * 300.0 / ELEMENTARY_CHARGE_C; // eV
    let bar = 1.0e5 / ELEMENTARY_CHARGE_C / 1.0e30; // eV/Å³
    let target = 27_000.0; // Å³
    let pressure = 21.0 * kt / target / bar;
    let cfg = npt_config(
        tmp.path(),
        &gas,
        "cell = [30.0, 30.0, 30.0]",
        "kind = \"lennard-jones\"\nepsilon = 1e-9\nsigma = 0.01\ncutoff = 7.4",
        256,
        pressure,
        &tmp.path().join("out"),
    );
    let mut sim = Simulation::from_config(&Config::from_file(&cfg).unwrap()).unwrap();
    // Start with a step of about the volume's spread (σ_V = V/√21)
    // instead of adapting from 1 % of V for hundreds of moves: the
    // distribution sampled does not depend on the step.
    start_with_step(&mut sim, 0.2 * target);
    let t0 = std::time::Instant::now();
    let mut sums = vec![0.0; 256];
    let mut samples = 0.0;
    for k in 0..700 {
        sim.barostat_move().unwrap().unwrap();
        if k >= 100 {
            for (s, v) in sums.iter_mut().zip(sim.volumes().unwrap().unwrap()) {
                *s += v;
            }
            samples += 1.0;
        }
    }
    let means: Vec<f64> = sums.iter().map(|s| s / samples).collect();
    let (m, se) = (mean(&means), standard_error(&means));
    eprintln!(
        "ideal gas: <V> = {m:.1} ± {se:.1} Å³, (N + 1) kT / P = {target} ({:.1} s)",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        se < 0.003 * target,
        "standard error {se} too wide to see a 1 % bias"
    );
    assert!(
        (m - target).abs() < 6.0 * se,
        "<V> = {m} ± {se}, expected {target}"
    );
}

/// The barostat as one of the run's moves: due every `interval` steps,
/// during equilibration too; it hands its pressure to the other moves (an
/// NPT exchange weighs U + P·V with it), and its log line names what was
/// configured.
#[test]
fn the_volume_move_acts_at_its_interval_and_in_equilibration() {
    let tmp = tempfile::tempdir().unwrap();
    let gas = gas_xyz(tmp.path());
    let cfg = npt_config(
        tmp.path(),
        &gas,
        "cell = [30.0, 30.0, 30.0]",
        "kind = \"lennard-jones\"\nepsilon = 1e-9\nsigma = 0.01\ncutoff = 7.4",
        2,
        250.0,
        &tmp.path().join("out"),
    );
    let mut sim = Simulation::from_config(&Config::from_file(&cfg).unwrap()).unwrap();
    assert_eq!(sim.moves.pressure_bar(), Some(250.0));
    assert_eq!(
        sim.moves.get::<VolumeMove>().unwrap().describe(),
        "Monte Carlo barostat: 250 bar, isotropic, every 5 steps"
    );
    // (step, past equilibration, moves made by then)
    for (step, producing, total) in [
        (0, false, 1),
        (3, false, 1),
        (5, false, 2),
        (7, true, 2),
        (10, true, 3),
    ] {
        sim.state.step = step;
        let report = sim.attempt_moves(producing).unwrap();
        assert!(!report.new_list_shape, "step {step}");
        let b = sim.barostat().unwrap();
        assert_eq!(b.total_attempted, vec![total; 2], "step {step}");
    }
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("interval = 5\n", "interval = 5\nanisotropic = true\n");
    std::fs::write(&cfg, text).unwrap();
    let sim = Simulation::from_config(&Config::from_file(&cfg).unwrap()).unwrap();
    assert_eq!(
        sim.moves.get::<VolumeMove>().unwrap().describe(),
        "Monte Carlo barostat: 250 bar, one axis at a time, every 5 steps"
    );
}

/// Set every member's barostat step (Å³, every axis).
fn start_with_step(sim: &mut Simulation, step: f64) {
    let barostat = sim.barostat_mut().unwrap();
    for s in barostat.max_change.iter_mut() {
        *s = [step; 3];
    }
}

/// Temperature replica exchange under NPT weighs swaps by the enthalpy
/// U + PV: for an ideal gas (U ≈ 0) the P·ΔV term is all there is, and each
/// rung must keep ⟨V⟩ = (N + 1) kT / P of its own temperature. Without it
/// every swap would be accepted and the rungs' volumes would mix (the 300 K
/// rung's ⟨V⟩ would rise by tens of percent). 4 rungs 300–600 K, 24
/// independent ladders, a volume move and an exchange attempt alternately;
/// each (ladder, rung) time average is one sample.
#[test]
fn replica_exchange_under_npt_keeps_each_rungs_volume() {
    let tmp = tempfile::tempdir().unwrap();
    let gas = gas_xyz(tmp.path());
    let kt300 = BOLTZMANN_J_PER_K * 300.0 / ELEMENTARY_CHARGE_C; // eV
    let bar = 1.0e5 / ELEMENTARY_CHARGE_C / 1.0e30; // eV/Å³
    let v300 = 27_000.0; // Å³ at 300 K
    let pressure = 21.0 * kt300 / v300 / bar;
    let (rungs, ladders) = (4usize, 24usize);
    let text = format!(
        r#"[system]
structure = "{}"
cell = [30.0, 30.0, 30.0]
[model]
kind = "lennard-jones"
epsilon = 1e-9
sigma = 0.01
cutoff = 7.4
device = "cpu"
[integrator]
kind = "langevin"
timestep = 2.0
friction = 5.0
[replica_exchange]
t_min = 300.0
t_max = 600.0
n_replicas = {rungs}
exchange_interval = 1
members_per_temperature = {ladders}
[ensemble]
seed = 5
[barostat]
pressure = {pressure}
interval = 1
[run]
steps = 1
"#,
        gas.display()
    );
    let config = Config::from_toml(&text, &tmp.path().join("rex.toml")).unwrap();
    let mut sim = Simulation::from_config(&config).unwrap();
    // Steps at the cap (30 % of the starting volume) from the start: the
    // hot rungs' boxes have twice as far to grow.
    start_with_step(&mut sim, 0.3 * v300);
    let temperatures = sim.replica_exchange().unwrap().temperatures.clone();
    let (moves, discard) = (900, 300);
    let mut sums = vec![0.0; rungs * ladders];
    let mut swaps = 0;
    for k in 0..moves {
        sim.barostat_move().unwrap().unwrap();
        sim.state.step += 1;
        swaps += sim.exchange().unwrap().unwrap().0.accepted;
        if k >= discard {
            let rex = sim.replica_exchange().unwrap();
            let v = sim.volumes().unwrap().unwrap();
            for l in 0..ladders {
                for r in 0..rungs {
                    sums[l * rungs + r] += v[rex.replica_at(l, r)];
                }
            }
        }
    }
    assert!(swaps > 100, "only {swaps} swaps");
    let samples = (moves - discard) as f64;
    for (r, t) in temperatures.iter().enumerate() {
        let means: Vec<f64> = (0..ladders)
            .map(|l| sums[l * rungs + r] / samples)
            .collect();
        let (m, se) = (mean(&means), standard_error(&means));
        let want = v300 * t / 300.0;
        eprintln!("{t:.1} K: <V> = {m:.0} ± {se:.0} Å³, expected {want:.0}");
        assert!(se < 0.01 * want, "standard error {se} too wide");
        assert!(
            (m - want).abs() < 6.0 * se,
            "{t} K: <V> = {m} ± {se}, expected {want}"
        );
    }
}

/// One volume move on a periodic water box: each water is moved rigidly
/// (its O-H bonds keep their lengths), each member's cell scales with its
/// own factor, and a member whose move is rejected gets everything back
/// bit for bit.
#[test]
fn molecules_move_whole_and_rejected_moves_restore_every_bit() {
    let tmp = tempfile::tempdir().unwrap();
    // Strong Lennard-Jones between everything: most trial volumes are
    // rejected, some accepted.
    let mut sim = water_box_npt(tmp.path(), 0.01, 8, "");
    let bonds = sim.molecule.template.topology().bonds();
    assert_eq!(bonds.len(), 666);
    let bond_lengths = |sim: &Simulation| -> Vec<f64> {
        let x = host(&sim.state.positions);
        let n = sim.molecule.n_atoms();
        (0..sim.state.n_members)
            .flat_map(|m| {
                let x = &x;
                bonds.iter().map(move |&[a, b]| {
                    let (a, b) = (3 * (m * n + a), 3 * (m * n + b));
                    (0..3)
                        .map(|k| (x[a + k] - x[b + k]).powi(2))
                        .sum::<f64>()
                        .sqrt()
                })
            })
            .collect()
    };
    let before = bond_lengths(&sim);
    let (x0, f0, e0, c0) = (
        host(&sim.state.positions),
        host(&sim.state.forces),
        host(&sim.state.energies),
        host(sim.state.cells.as_ref().unwrap()),
    );
    let moved = sim.barostat_move().unwrap().unwrap();
    let accepted = &moved.accepted;
    assert!(
        accepted.iter().any(|&a| a) && accepted.iter().any(|&a| !a),
        "{accepted:?}"
    );
    let after = bond_lengths(&sim);
    let worst = before
        .iter()
        .zip(&after)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-12, "a bond changed length by {worst} Å");
    let (x1, f1, e1, c1) = (
        host(&sim.state.positions),
        host(&sim.state.forces),
        host(&sim.state.energies),
        host(sim.state.cells.as_ref().unwrap()),
    );
    let n3 = 3 * sim.molecule.n_atoms();
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for (m, &a) in accepted.iter().enumerate() {
        let rows = m * n3..(m + 1) * n3;
        let cell = m * 9..(m + 1) * 9;
        if a {
            assert_ne!(
                c1[cell.start], c0[cell.start],
                "member {m}: accepted, same cell"
            );
            // The cell scales isotropically.
            let f = c1[cell.start] / c0[cell.start];
            assert!((c1[cell.start + 8] / c0[cell.start + 8] - f).abs() < 1e-12);
        } else {
            assert_eq!(
                bits(&x1[rows.clone()]),
                bits(&x0[rows.clone()]),
                "member {m}"
            );
            assert_eq!(bits(&f1[rows.clone()]), bits(&f0[rows]), "member {m}");
            assert_eq!(e1[m].to_bits(), e0[m].to_bits(), "member {m}");
            assert_eq!(bits(&c1[cell.clone()]), bits(&c0[cell]), "member {m}");
        }
    }
}

/// NPT (Lennard-Jones fluid, a move every 5 steps) for 60 steps equals 30 +
/// resume + 30 bit for bit, including the barostat's state; volumes and
/// densities are recorded and every frame carries its member's cell.
#[test]
fn an_npt_run_continues_bit_for_bit_and_writes_its_cells() {
    let tmp = tempfile::tempdir().unwrap();
    let fluid = root().join("tests/data/lj_fluid.xyz");
    let model = "kind = \"lennard-jones\"\nepsilon = 0.0104\nsigma = 3.4\ncutoff = 8.5";
    let cell = "cell = [23.2, 23.2, 23.2]";
    let (whole, split) = (tmp.path().join("whole"), tmp.path().join("split"));
    std::fs::create_dir_all(tmp.path().join("a")).unwrap();
    std::fs::create_dir_all(tmp.path().join("b")).unwrap();
    let c1 = npt_config(&tmp.path().join("a"), &fluid, cell, model, 2, 500.0, &whole);
    let c2 = npt_config(&tmp.path().join("b"), &fluid, cell, model, 2, 500.0, &split);
    run_whole_and_split(&c1, &c2, 30, 60);
    assert_bit_identical(
        &fingerprint(&whole, false),
        &fingerprint(&split, false),
        "NPT",
    );
    // The same from a checkpoint written before moves were plug-ins (the
    // barostat's state in its own header field).
    let legacy = tmp.path().join("legacy");
    std::fs::create_dir_all(tmp.path().join("c")).unwrap();
    let c3 = npt_config(
        &tmp.path().join("c"),
        &fluid,
        cell,
        model,
        2,
        500.0,
        &legacy,
    );
    run_split(&c3, 30, 60, || rewrite_checkpoint_as_before_moves(&legacy));
    assert_bit_identical(
        &fingerprint(&whole, false),
        &fingerprint(&legacy, false),
        "NPT from a checkpoint written before moves",
    );
    let read = |d: &Path| {
        mlff_md::io::checkpoint::Checkpoint::read_latest(d)
            .unwrap()
            .0
    };
    let (a, b) = (read(&whole), read(&split));
    assert_eq!(a.header.moves, b.header.moves);
    assert!(
        a.header.barostat.is_none(),
        "the barostat is saved as a move"
    );
    assert_eq!(a.header.cells, b.header.cells);
    let baro: MonteCarloBarostat = a.header.move_state_as("barostat").unwrap();
    assert_eq!(baro.total_attempted, vec![12, 12]);
    let h5 = common::h5_open(whole.join("observables.h5"));
    let volume = read_f64(&h5, "observables/volume/value");
    let density = read_f64(&h5, "observables/density/value");
    assert_eq!(volume.len(), 2 * 7);
    assert!((volume[0] - 23.2f64.powi(3)).abs() < 1e-6);
    assert!(
        volume.iter().any(|&v| (v - volume[0]).abs() > 1.0),
        "the volume never moved"
    );
    // 256 argon atoms (39.948 amu) in 23.2 Å: 1.6532 g/cm³.
    let want = 256.0 * 39.948 / 23.2f64.powi(3) * 1.660_539_066_60;
    assert!((density[0] - want).abs() < 1e-3, "{} vs {want}", density[0]);
    // The last frame of member 1 carries its cell at step 60.
    let final_cells =
        Cell::all_as_stored(&tch::Tensor::from_slice(&a.header.cells.unwrap()).view([2, 3, 3]))
            .unwrap();
    let mut t = chemfiles::Trajectory::open(whole.join("member_0001.xtc"), 'r').unwrap();
    let mut f = chemfiles::Frame::new();
    let last = t.nsteps() - 1;
    t.read_step(last, &mut f).unwrap();
    let want = final_cells[1].matrix[(0, 0)];
    assert!(
        (f.cell().lengths()[0] - want).abs() < 1e-3,
        "{:?} vs {want}",
        f.cell().lengths()
    );
}

#[test]
fn a_barostat_needs_a_periodic_langevin_run() {
    let tmp = tempfile::tempdir().unwrap();
    let gas = gas_xyz(tmp.path());
    let out = tmp.path().join("out");
    let model = "kind = \"lennard-jones\"\nepsilon = 0.0104\nsigma = 3.4\ncutoff = 8.5";
    let cases = [
        ("", 1.0, "needs a periodic system"),
        ("cell = [30.0, 30.0, 30.0]", -1.0, "barostat.pressure"),
    ];
    for (system, pressure, expected) in cases {
        let cfg = npt_config(tmp.path(), &gas, system, model, 1, pressure, &out);
        let text = std::fs::read_to_string(&cfg).unwrap();
        let o = bin()
            .args(["validate", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{text}");
        assert!(stderr(&o).contains(expected), "{}", stderr(&o));
    }
    let verlet = npt_config(
        tmp.path(),
        &gas,
        "cell = [30.0, 30.0, 30.0]",
        model,
        1,
        1.0,
        &out,
    );
    let text = std::fs::read_to_string(&verlet)
        .unwrap()
        .replace("kind = \"langevin\"", "kind = \"verlet\"")
        .replace("temperature = 300.0\nfriction = 5.0\n", "")
        .replace("seed = 11\n", "seed = 11\ninitial_temperature = 300.0\n");
    std::fs::write(&verlet, text).unwrap();
    let o = bin()
        .args(["validate", verlet.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("it needs [integrator] kind = \"langevin\""),
        "{}",
        stderr(&o)
    );
}

/// Anisotropic moves (OpenMM's MonteCarloAnisotropicBarostat): an accepted
/// move scales exactly one axis of a member's cell, by V'/V, and moves its
/// molecules whole; rejected members keep every bit. Over many moves every
/// axis moves.
#[test]
fn anisotropic_moves_scale_one_axis_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sim = water_box_npt(tmp.path(), 0.0001, 4, "anisotropic = true\n");
    let mut moved_axes = [false; 3];
    for _ in 0..30 {
        let c0 = host(sim.state.cells.as_ref().unwrap());
        let accepted = sim.barostat_move().unwrap().unwrap().accepted;
        let c1 = host(sim.state.cells.as_ref().unwrap());
        for (m, &a) in accepted.iter().enumerate() {
            let (before, after) = (&c0[m * 9..m * 9 + 9], &c1[m * 9..m * 9 + 9]);
            // Columns (Cartesian axes) of the row-vector cell that changed.
            let changed: Vec<usize> = (0..3)
                .filter(|&k| (0..3).any(|i| before[3 * i + k] != after[3 * i + k]))
                .collect();
            if a {
                assert_eq!(changed.len(), 1, "member {m}: {before:?} -> {after:?}");
                let k = changed[0];
                let ratio = after[4 * k] / before[4 * k];
                let volume = |c: &[f64]| c[0] * c[4] * c[8];
                assert!((volume(after) / volume(before) - ratio).abs() < 1e-12);
                moved_axes[k] = true;
            } else {
                assert!(changed.is_empty(), "member {m}: rejected, cell changed");
            }
        }
    }
    assert_eq!(moved_axes, [true; 3], "some axis never moved");
    let v = sim.volumes().unwrap().unwrap();
    let cells = Cell::all_as_stored(sim.state.cells.as_ref().unwrap()).unwrap();
    for (c, v) in cells.iter().zip(&v) {
        let m = &c.matrix;
        assert!((m[(0, 0)] * m[(1, 1)] * m[(2, 2)] - v).abs() < 1e-6 * v);
    }
}
