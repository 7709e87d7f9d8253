//! `mlff-md screen`: each molecule's result is what it gives alone, whatever
//! the batch size, the library's order and the in-flight swapping; bad
//! records are skipped with their reason; a stopped screen resumes without
//! recomputing or losing a molecule.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::root;
use common::runs::{bin, ok};
use mlff_md::force::{update_forces, TorchScriptModel};
use mlff_md::minimize::{fire, FireOptions, CHECK_EVERY};
use mlff_md::screen::config::ScreenConfig;
use mlff_md::screen::results::{Outcome, LEDGER_FILE};
use mlff_md::screen::{screen, ScreenOptions, ScreenSummary};
use mlff_md::state::BatchState;
use mlff_md::system::Molecule;
use tch::{Device, Kind};

/// The 17 molecules of the batched-force benchmark (XYZ), in name order.
fn molecules() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("systems/molecules"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "xyz"))
        .collect();
    v.sort();
    v
}

fn config(dir: &Path, model: &str, dtype: &str, batch: &str) -> ScreenConfig {
    let text = format!(
        "[model]\npath = {:?}\ndtype = \"{dtype}\"\ndevice = \"cpu\"\n[minimize]\nmax_force = 0.02\nmax_steps = 400\n[batch]\n{batch}\n",
        root().join(model)
    );
    ScreenConfig::from_toml(&text, &dir.join("screen.toml")).unwrap()
}

/// Screen `inputs` into a fresh directory; the ledger's outcomes by name.
fn run(
    dir: &Path,
    name: &str,
    cfg: &ScreenConfig,
    inputs: &[PathBuf],
) -> (ScreenSummary, BTreeMap<String, Outcome>) {
    let out = dir.join(name);
    let summary = screen(
        cfg,
        &ScreenOptions {
            inputs: inputs.to_vec(),
            output: Some(out.clone()),
            quiet: true,
            ..ScreenOptions::default()
        },
    )
    .unwrap();
    (summary, ledger(&out))
}

fn ledger(out: &Path) -> BTreeMap<String, Outcome> {
    std::fs::read_to_string(out.join(LEDGER_FILE))
        .unwrap()
        .lines()
        .map(|l| {
            let o: Outcome = serde_json::from_str(l).unwrap();
            (o.name.clone(), o)
        })
        // (A molecule's final line comes after its first minimisation's.)
        .filter(|(_, o)| o.is_final())
        .collect()
}

/// Same energies (1e-6 relative), same iterations and convergence, and
/// positions within `tol_x` Å.
fn assert_same(
    label: &str,
    a: &BTreeMap<String, Outcome>,
    b: &BTreeMap<String, Outcome>,
    tol_x: f64,
) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{label}"
    );
    for (name, x) in a {
        let y = &b[name];
        let rel = ((x.energy_ev - y.energy_ev) / y.energy_ev).abs();
        assert!(
            rel <= 1e-6,
            "{label}: {name}: {} vs {} eV",
            x.energy_ev,
            y.energy_ev
        );
        assert_eq!(
            (x.iterations, x.converged),
            (y.iterations, y.converged),
            "{label}: {name}"
        );
        let dx = x
            .positions
            .iter()
            .zip(&y.positions)
            .flat_map(|(p, q)| (0..3).map(move |k| (p[k] - q[k]).abs()))
            .fold(0.0, f64::max);
        assert!(dx <= tol_x, "{label}: {name}: positions differ by {dx} Å");
    }
}

#[test]
fn results_do_not_depend_on_batching_order_or_swapping() {
    let dir = tempfile::tempdir().unwrap();
    let mols = molecules();
    assert_eq!(mols.len(), 17);
    let cfg = |batch: &str| config(dir.path(), "models/morse_test.pt", "float64", batch);
    let (s, whole) = run(dir.path(), "whole", &cfg(""), &mols);
    assert_eq!((s.screened, s.skipped, s.records), (17, 0, 17));
    // The searches must be real: molecules take different numbers of
    // iterations, and every one gains energy by minimising.
    let iterations: std::collections::BTreeSet<u64> =
        whole.values().map(|o| o.iterations).collect();
    assert!(iterations.len() >= 4, "{iterations:?}");
    assert!(whole.values().all(|o| o.converged && o.max_force < 0.02));
    assert!(whole
        .values()
        .filter(|o| o.iterations > 0)
        .all(|o| o.energy_ev < o.energy_start_ev));

    // Three molecules at a time: members leave and enter at every check.
    let (s3, three) = run(dir.path(), "three", &cfg("max_molecules = 3"), &mols);
    assert!(
        s3.force_calls > s.force_calls,
        "{} vs {}",
        s3.force_calls,
        s.force_calls
    );
    assert_same("max_molecules = 3", &three, &whole, 1e-9);
    // The time split: one force call per refill and CHECK_EVERY per block,
    // and the phases add up to no more than the screen's wall time.
    for x in [&s, &s3] {
        let p = &x.phases;
        assert!(p.refills >= 1 && p.blocks >= 1, "{p:?}");
        assert_eq!(x.force_calls, p.refills + CHECK_EVERY * p.blocks, "{p:?}");
        let sum = p.iterations_seconds + p.refill_seconds + p.check_seconds;
        assert!(
            sum > 0.0 && sum <= x.wall_seconds,
            "{p:?} vs {}",
            x.wall_seconds
        );
        assert!(x.setup_seconds > 0.0 && x.sampling_seconds == 0.0);
    }
    assert!(s3.phases.refills > s.phases.refills, "{:?}", s3.phases);
    // Reversed library, batches of at most 40 atoms.
    let reversed: Vec<PathBuf> = mols.iter().rev().cloned().collect();
    let (_, rev) = run(dir.path(), "reversed", &cfg("max_atoms = 40"), &reversed);
    assert_same("reversed, max_atoms = 40", &rev, &whole, 1e-9);
    // The same search as `mlff-md minimize` (mlff_md::minimize::fire) of
    // the molecule alone, and the recorded energy is the model's at the
    // recorded positions.
    let model = TorchScriptModel::load(
        &root().join("models/morse_test.pt"),
        Device::Cpu,
        Kind::Double,
    )
    .unwrap();
    for m in &mols {
        let molecule = Molecule::load(std::slice::from_ref(m)).unwrap();
        let name = m.file_stem().unwrap().to_str().unwrap();
        let o = &whole[name];
        let mut state = BatchState::new(&molecule, 1, Device::Cpu, Kind::Double);
        let opts = FireOptions {
            max_force: 0.02,
            max_steps: 400,
            max_step: 0.2,
        };
        let report = fire(&mut state, &model, &opts).unwrap();
        assert_eq!(report.iterations, o.iterations, "{name}");
        assert!(
            (report.energy_after[0] - o.energy_ev).abs() <= 1e-6 * o.energy_ev.abs(),
            "{name}"
        );
        let mut at = Molecule::load(std::slice::from_ref(m)).unwrap();
        at.structures = vec![o.positions.clone()];
        let mut state = BatchState::new(&at, 1, Device::Cpu, Kind::Double);
        update_forces(&mut state, &model).unwrap();
        let e = mlff_md::state::to_host_f64(&state.energies)[0];
        assert!(
            (e - o.energy_ev).abs() <= 1e-9 * e.abs(),
            "{name}: {e} vs {}",
            o.energy_ev
        );
    }
    // Each molecule alone.
    for (k, m) in mols.iter().enumerate() {
        let (_, alone) = run(
            dir.path(),
            &format!("alone{k}"),
            &cfg(""),
            std::slice::from_ref(m),
        );
        let name = alone.keys().next().unwrap().clone();
        let one: BTreeMap<String, Outcome> = [(name.clone(), whole[&name].clone())].into();
        assert_same("alone", &alone, &one, 1e-9);
    }
}

#[test]
fn ani2xt_results_do_not_depend_on_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mols: Vec<PathBuf> = [
        "aspirin",
        "caffeine",
        "ethanol",
        "water",
        "paracetamol",
        "hexane",
    ]
    .iter()
    .map(|m| root().join(format!("systems/molecules/{m}.xyz")))
    .collect();
    let cfg = |batch: &str| config(dir.path(), "models/ani2xt_nl.pt", "float32", batch);
    let (_, whole) = run(dir.path(), "whole", &cfg(""), &mols);
    assert!(whole.values().all(|o| o.converged));
    let reversed: Vec<PathBuf> = mols.iter().rev().cloned().collect();
    let (_, pairs) = run(dir.path(), "pairs", &cfg("max_molecules = 2"), &reversed);
    // float32 model: the batch's sums round differently, so positions agree
    // to the force threshold's scale, not to the last bit.
    assert_same("ANI-2xt, two at a time, reversed", &pairs, &whole, 1e-3);
}

/// systems/screen/bad_records.sdf (systems/README.md): one good record
/// among unreadable ones and ones ANI-2xt cannot take.
#[test]
fn bad_records_are_skipped_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let lib = root().join("systems/screen/bad_records.sdf");
    let cfg = dir.path().join("screen.toml");
    std::fs::write(
        &cfg,
        format!(
            "[model]\npath = {:?}\ndevice = \"cpu\"\n",
            root().join("models/ani2xt_nl.pt")
        ),
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = ok(bin()
        .args([
            "screen",
            lib.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
            "--output",
        ])
        .arg(&out)
        .output()
        .unwrap());
    let stderr = String::from_utf8_lossy(&o.stderr);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("5 of 6 records skipped"), "{stdout}");
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 6, "{csv}");
    // (title, where, why): the line of a parse error is the line that broke it.
    let expect = [
        (
            "bad_unknown_element",
            "bad_records.sdf:1,",
            "is not a known chemical element",
        ),
        (
            "bad_truncated_atoms",
            "bad_records.sdf:51,",
            "promises 5 atoms, the atom block ends after 3",
        ),
        (
            "acetate",
            "bad_records.sdf:56,",
            "charged (-1) and the model takes no charge",
        ),
        (
            "bromomethane",
            "bad_records.sdf:79,",
            "does not know element(s) Br",
        ),
        (
            "bad_zero_atoms",
            "bad_records.sdf:100,",
            "the record has zero atoms",
        ),
    ];
    for (name, line, reason) in expect {
        let row = rows
            .iter()
            .find(|r| r.contains(&format!(",{name},")))
            .unwrap();
        assert!(
            row.contains(",skipped,") && row.contains(reason) && row.contains(line),
            "{row}"
        );
        // One line on stderr per skipped record, naming it and why.
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("skipped record") && l.contains(name) && l.contains(reason)),
            "{name}: {stderr}"
        );
    }
    let methanol = rows.iter().find(|r| r.contains(",methanol,")).unwrap();
    assert!(
        methanol.starts_with("1,") && methanol.contains(",converged,,6,0,"),
        "{methanol}"
    );
    // The good record's data items survive, quoting and all, followed by
    // the screen's.
    let sdf = std::fs::read_to_string(out.join("minimized.sdf")).unwrap();
    assert_eq!(sdf.matches("$$$$").count(), 1, "{sdf}");
    assert!(
        sdf.starts_with("methanol\n") && sdf.contains(">  <id>\nm1, \"the\" methanol\n"),
        "{sdf}"
    );
    for item in [
        "mlff_md_energy_ev",
        "mlff_md_energy_kcal_mol",
        "mlff_md_max_force_ev_per_a",
        "mlff_md_converged",
        "mlff_md_iterations",
    ] {
        assert!(sdf.contains(&format!(">  <{item}>")), "{item}");
    }
}

fn screen_cmd(lib: &[PathBuf], cfg: &Path, out: &Path) -> std::process::Command {
    let mut c = bin();
    c.arg("screen")
        .args(lib)
        .arg("--config")
        .arg(cfg)
        .arg("--output")
        .arg(out)
        .arg("--quiet");
    c
}

#[test]
fn a_stopped_screen_resumes_without_recomputing_or_losing_a_molecule() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("screen.toml");
    std::fs::write(
        &cfg,
        format!(
            "[model]\npath = {:?}\ndtype = \"float64\"\ndevice = \"cpu\"\n[batch]\nmax_molecules = 4\n",
            root().join("models/morse_test.pt")
        ),
    )
    .unwrap();
    let mols = molecules();
    let whole = dir.path().join("whole");
    ok(screen_cmd(&mols, &cfg, &whole).output().unwrap());
    let reference = ledger(&whole);

    for (fault, status) in [("sigint@5", Some(130)), ("kill@5", None)] {
        let out = dir.path().join(fault.replace('@', "_"));
        let o = screen_cmd(&mols, &cfg, &out)
            .env("MLFF_MD_TEST_FAULT", fault)
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            status,
            "{fault}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let before = std::fs::read_to_string(out.join(LEDGER_FILE)).unwrap();
        let n_before = before.lines().count();
        // A kill lands right after the 5th molecule is written; a SIGINT
        // stops at the next check (molecules finishing at that same check
        // are written too).
        match status {
            None => assert_eq!(n_before, 5, "{before}"),
            Some(_) => assert!((5..17).contains(&n_before), "{n_before}"),
        }
        if status.is_some() {
            let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
            assert_eq!(csv.matches(",pending,").count(), 17 - n_before, "{csv}");
        }
        // Without --resume the directory is refused (exit 2).
        let again = screen_cmd(&mols, &cfg, &out).output().unwrap();
        assert_eq!(again.status.code(), Some(2));
        ok(screen_cmd(&mols, &cfg, &out)
            .arg("--resume")
            .output()
            .unwrap());
        let after = std::fs::read_to_string(out.join(LEDGER_FILE)).unwrap();
        // Nothing recomputed: the lines written before the stop are still
        // the first ones, and every molecule appears once.
        assert!(after.starts_with(&before), "{fault}");
        assert_eq!(after.lines().count(), 17, "{fault}");
        assert_same(fault, &ledger(&out), &reference, 1e-9);
    }

    // A resume with other [minimize] settings is refused.
    let other = dir.path().join("other.toml");
    let text = std::fs::read_to_string(&cfg).unwrap() + "[minimize]\nmax_force = 0.01\n";
    std::fs::write(&other, text).unwrap();
    let o = screen_cmd(&mols, &other, &whole)
        .arg("--resume")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("differs"),
        "{:?}",
        o
    );
}

#[test]
fn conformer_sampling_keeps_the_lowest_minimum_in_any_batching() {
    let dir = tempfile::tempdir().unwrap();
    let mols = molecules();
    let conformers =
        "[conformers]\nmembers = 3\nsteps = 60\nframes = 2\ntemperature = 600.0\nseed = 4\n";
    let cfg = |batch: &str, extra: &str| {
        let text = format!(
            "[model]\npath = {:?}\ndtype = \"float64\"\ndevice = \"cpu\"\n[minimize]\nmax_force = 0.02\nmax_steps = 400\n{extra}[batch]\n{batch}\n",
            root().join("models/morse_test.pt")
        );
        ScreenConfig::from_toml(&text, &dir.path().join("screen.toml")).unwrap()
    };
    let (_, plain) = run(dir.path(), "plain", &cfg("", ""), &mols);
    let (s, whole) = run(dir.path(), "whole", &cfg("", conformers), &mols);
    assert_eq!(s.screened, 17);
    // Never above the molecule's own minimum (the same first search), and
    // below it for most.
    let mut lower = 0;
    for (name, o) in &whole {
        let p = &plain[name];
        assert!(
            o.energy_ev <= p.energy_ev + 1e-12,
            "{name}: {} > {}",
            o.energy_ev,
            p.energy_ev
        );
        assert_eq!(o.energy_start_ev, p.energy_start_ev, "{name}");
        match o.conformer {
            Some(k) => {
                assert!(k < 6, "{name}: frame {k}");
                lower += 1;
            }
            None => assert_eq!(o.positions, p.positions, "{name}"),
        }
    }
    assert!(lower >= 10, "{lower} of 17 improved by conformer sampling");
    // MD batches of one molecule's copies, FIRE batches of three.
    let (_, small) = run(
        dir.path(),
        "small",
        &cfg("max_molecules = 3\nmax_atoms = 40", conformers),
        &mols,
    );
    assert_same("conformers, small batches", &small, &whole, 1e-9);
    for (name, o) in &small {
        assert_eq!(o.conformer, whole[name].conformer, "{name}");
    }
}

#[test]
fn a_screen_stopped_during_conformer_sampling_resumes_to_the_same_results() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("screen.toml");
    std::fs::write(
        &cfg,
        format!(
            "[model]\npath = {:?}\ndtype = \"float64\"\ndevice = \"cpu\"\n[conformers]\nmembers = 2\nsteps = 40\ntemperature = 500.0\n[batch]\nmax_molecules = 6\n",
            root().join("models/morse_test.pt")
        ),
    )
    .unwrap();
    let mols = molecules();
    let whole = dir.path().join("whole");
    ok(screen_cmd(&mols, &cfg, &whole).output().unwrap());
    let out = dir.path().join("stopped");
    let o = screen_cmd(&mols, &cfg, &out)
        .env("MLFF_MD_TEST_FAULT", "sigint@3")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let before = std::fs::read_to_string(out.join(LEDGER_FILE)).unwrap();
    // Every first minimisation is in the ledger, and some finals.
    assert_eq!(
        before.matches("\"stage\":\"minimized\"").count(),
        17,
        "{before}"
    );
    let finals = before.matches("\"stage\":\"final\"").count();
    assert!((3..17).contains(&finals), "{finals}");
    ok(screen_cmd(&mols, &cfg, &out)
        .arg("--resume")
        .output()
        .unwrap());
    let after = std::fs::read_to_string(out.join(LEDGER_FILE)).unwrap();
    assert!(after.starts_with(&before));
    // No first minimisation again; every molecule final once.
    assert_eq!(after.matches("\"stage\":\"minimized\"").count(), 17);
    assert_eq!(after.matches("\"stage\":\"final\"").count(), 17);
    assert_same("resumed conformers", &ledger(&out), &ledger(&whole), 1e-9);
}

/// A batch too big for the device (tests/data/oom_pairs_above_80.pt raises
/// the CUDA allocator's out-of-memory error whenever one call holds more
/// than 80 atoms; a pair model is evaluated whole, so the screen itself
/// must react): the screen halves its batches until they fit (400 → 200 →
/// 100 → 50 atoms), loses no molecule, and gets the results of a screen
/// whose batches fit from the start.
#[test]
fn a_batch_that_runs_out_of_memory_is_halved_without_changing_results() {
    let dir = tempfile::tempdir().unwrap();
    let mols = molecules();
    let cfg = |model: &str, batch: &str| config(dir.path(), model, "float64", batch);
    let (s, halved) = run(
        dir.path(),
        "oom",
        &cfg("tests/data/oom_pairs_above_80.pt", "max_atoms = 400"),
        &mols,
    );
    assert_eq!((s.screened, s.skipped), (17, 0));
    // Only an out-of-memory error shrinks the budget below the 400 asked for.
    assert_eq!(s.batch_atoms, 50);
    let (_, fitting) = run(
        dir.path(),
        "fitting",
        &cfg("tests/data/lj_pairs_v2.pt", "max_atoms = 50"),
        &mols,
    );
    assert_same("halved vs fitting", &halved, &fitting, 1e-9);
}

/// Ctrl-C during conformer sampling is obeyed before the next MD step, not
/// after the whole sampling of every molecule: with the stop flag raised,
/// sampling returns at once with the signal and no frames; without it, the
/// same call gives every frame.
#[test]
fn conformer_sampling_stops_between_steps() {
    use mlff_md::screen::config::ConformerConfig;
    use mlff_md::screen::conformers::sample;
    use std::sync::atomic::AtomicUsize;

    let model = TorchScriptModel::load(
        &root().join("models/morse_test.pt"),
        Device::Cpu,
        Kind::Double,
    )
    .unwrap();
    let mols: Vec<Option<Molecule>> = molecules()[..3]
        .iter()
        .map(|p| Some(Molecule::load(std::slice::from_ref(p)).unwrap()))
        .collect();
    let starts: Vec<(usize, Vec<[f64; 3]>)> = mols
        .iter()
        .enumerate()
        .map(|(i, m)| (i, m.as_ref().unwrap().structures[0].clone()))
        .collect();
    let c = ConformerConfig {
        members: 2,
        steps: 1000,
        frames: 2,
        temperature: 500.0,
        timestep: 0.5,
        friction: 10.0,
        seed: 1,
    };
    let raised = AtomicUsize::new(2);
    let s = sample(
        &c,
        &model,
        &mols,
        &starts,
        (100_000, Device::Cpu),
        Some(&raised),
    )
    .unwrap();
    assert_eq!((s.stopped_by, s.tasks.len()), (2, 0));
    assert_eq!(s.force_calls, 1, "no MD step after the stop");
    let c = ConformerConfig { steps: 20, ..c };
    let calm = AtomicUsize::new(0);
    let s = sample(
        &c,
        &model,
        &mols,
        &starts,
        (100_000, Device::Cpu),
        Some(&calm),
    )
    .unwrap();
    assert_eq!((s.stopped_by, s.tasks.len()), (0, 3 * 2 * 2));
}
