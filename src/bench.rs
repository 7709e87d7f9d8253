//! Benchmarks (`mlff-md bench`): the batched-force benchmark (sequential
//! vs batched model calls over a set of molecules) and MD throughput for R
//! replicas. Timings synchronise the device before reading the clock.
//! Results go to JSON and markdown files named with the device and date.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::config::GraphPolicy;
use crate::error::{Error, Result};
use crate::force::aoti::StandIn;
use crate::force::{update_forces, ForceProvider, PairForces, TorchScriptModel};
use crate::integrate::{Integrator, Langevin, VelocityVerlet};
use crate::rng::CounterRng;
use crate::state::{to_host_f64, BatchState};
use crate::stepper::{Stepper, WARMUP_STEPS};
use crate::system::Molecule;
use crate::units::FS_PER_NS;

/// Wait for queued device work (a no-op on the CPU).
pub fn synchronize(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// The device's marketing name (GPU model, or CPU model and threads).
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(_) => crate::device::hardware_name(device),
        _ => format!(
            "CPU {} ({} threads)",
            crate::device::hardware_name(device),
            tch::get_num_threads()
        ),
    }
}

fn nvidia_smi(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("nvidia-smi")
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

/// Peak memory in MiB: GPU memory held by this process (the caching
/// allocator keeps its peak reservation) or, on the CPU, the peak RSS.
pub fn peak_memory_mib(device: Device) -> Option<f64> {
    match device {
        Device::Cuda(_) => {
            let pid = std::process::id().to_string();
            nvidia_smi(&[
                "--query-compute-apps=pid,used_memory",
                "--format=csv,noheader,nounits",
            ])?
            .lines()
            .filter_map(|l| l.split_once(','))
            .find(|(p, _)| p.trim() == pid)
            .and_then(|(_, m)| m.trim().parse().ok())
        }
        _ => std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
                    .map(|kb| kb / 1024.0)
            }),
    }
}

/// Today's date (UTC) as YYYY-MM-DD.
pub fn today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0) as i64;
    // Civil-from-days (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

/// min / median / max of a sample.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stats {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(v: &[f64]) -> Stats {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n == 0 {
            f64::NAN
        } else if n % 2 == 1 {
            s[n / 2]
        } else {
            0.5 * (s[n / 2 - 1] + s[n / 2])
        };
        Stats {
            min: s.first().copied().unwrap_or(f64::NAN),
            median,
            max: s.last().copied().unwrap_or(f64::NAN),
        }
    }
}

/// Write `<out>/<stem>.json` and `<stem>.md`; returns the JSON path.
fn write_report<T: Serialize>(
    out: &Path,
    stem: &str,
    report: &T,
    markdown: &str,
) -> Result<PathBuf> {
    std::fs::create_dir_all(out).map_err(|e| Error::output(out, e))?;
    let json = out.join(format!("{stem}.json"));
    std::fs::write(
        &json,
        serde_json::to_string_pretty(report).expect("report serialises"),
    )
    .map_err(|e| Error::output(&json, e))?;
    let md = out.join(format!("{stem}.md"));
    std::fs::write(&md, markdown).map_err(|e| Error::output(&md, e))?;
    Ok(json)
}

// ---------------------------------------------------------------- forces

#[derive(Debug, Clone)]
pub struct ForcesOptions {
    pub model: PathBuf,
    /// Folder with `index.json` listing the molecules.
    pub molecules: PathBuf,
    pub device: Device,
    pub batch_sizes: Vec<usize>,
    pub warmup: usize,
    pub trials: usize,
    /// Random displacement (Å) applied to every atom before each trial, so no
    /// layer can cache a previous result.
    pub perturbation: f64,
    pub out: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct ForcesRow {
    pub batch_size: usize,
    pub atoms: usize,
    /// One batched forward + backward.
    pub ms_per_call: Stats,
    pub ms_per_molecule: f64,
    /// The same molecules one call each (sum of their median call times).
    pub sequential_ms: f64,
    pub speedup: f64,
    pub molecules_per_second: f64,
    /// Largest |E_batched − E_alone| / |E_alone| over the batch's molecules
    /// (unperturbed structures): the batched call computes what the
    /// sequential calls compute.
    pub max_relative_energy_deviation: f64,
    /// Largest |F_batched − F_alone| over the batch's atoms (eV/Å).
    pub max_force_deviation_ev_per_a: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ForcesReport {
    pub benchmark: &'static str,
    pub device: String,
    pub date: String,
    pub model: String,
    pub molecules: Vec<(String, usize)>,
    pub warmup: usize,
    pub trials: usize,
    /// Median ms of one forward + backward of each molecule alone.
    pub sequential_ms_per_molecule: Vec<(String, f64)>,
    pub rows: Vec<ForcesRow>,
}

struct FlatBatch {
    z: Tensor,
    positions: Tensor,
    batch: Tensor,
    n: i64,
}

fn flat_batch(mols: &[&Molecule], device: Device) -> FlatBatch {
    let mut z: Vec<i64> = Vec::new();
    let mut pos: Vec<f64> = Vec::new();
    let mut batch: Vec<i64> = Vec::new();
    for (i, m) in mols.iter().enumerate() {
        z.extend_from_slice(&m.atomic_numbers);
        pos.extend(m.structures[0].iter().flatten());
        batch.extend(std::iter::repeat_n(i as i64, m.n_atoms()));
    }
    let atoms = z.len() as i64;
    FlatBatch {
        z: Tensor::from_slice(&z).to_device(device),
        positions: Tensor::from_slice(&pos)
            .view([atoms, 3])
            .to_kind(Kind::Float)
            .to_device(device),
        batch: Tensor::from_slice(&batch).to_device(device),
        n: mols.len() as i64,
    }
}

/// Time `trials` forward + backward calls on freshly perturbed positions (ms each).
fn time_calls(
    model: &TorchScriptModel,
    b: &FlatBatch,
    warmup: usize,
    trials: usize,
    perturbation: f64,
    rng: &mut CounterRng,
) -> Result<Vec<f64>> {
    let index = Tensor::arange(
        b.positions.numel() as i64,
        (Kind::Int64, b.positions.device()),
    )
    .view([-1, 3]);
    let mut times = Vec::with_capacity(trials);
    for t in 0..warmup + trials {
        let x = &b.positions + (rng.normal(&index) * perturbation).to_kind(Kind::Float);
        synchronize(b.positions.device());
        let start = Instant::now();
        let (e, f) = model.evaluate(&b.z, &x, &b.batch, None, b.n)?;
        synchronize(b.positions.device());
        let ms = start.elapsed().as_secs_f64() * 1e3;
        drop((e, f));
        if t >= warmup {
            times.push(ms);
        }
    }
    Ok(times)
}

/// Load the molecules listed in `<dir>/index.json` (their PDB files).
pub fn load_molecule_set(dir: &Path) -> Result<Vec<(String, Molecule)>> {
    let index = dir.join("index.json");
    let text = std::fs::read_to_string(&index)
        .map_err(|e| Error::structure(&index, format!("cannot read: {e}")))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::structure(&index, format!("not JSON: {e}")))?;
    let list = v["molecules"]
        .as_array()
        .ok_or_else(|| Error::structure(&index, "expected a `molecules` list"))?;
    list.iter()
        .map(|m| {
            let name = m["name"].as_str().unwrap_or("?").to_string();
            let file = m["pdb"]
                .as_str()
                .ok_or_else(|| Error::structure(&index, format!("{name}: no `pdb` entry")))?;
            Ok((name, Molecule::load(&[dir.join(file)])?))
        })
        .collect()
}

pub fn bench_forces(opts: &ForcesOptions) -> Result<(ForcesReport, PathBuf)> {
    let set = load_molecule_set(&opts.molecules)?;
    if set.is_empty() {
        return Err(Error::Invalid("the molecule set is empty".into()));
    }
    let model = TorchScriptModel::load(&opts.model, opts.device, Kind::Float)?;
    let mut rng = CounterRng::new(20_261_126);
    // Sequential: each molecule alone, one forward + backward per call.
    let mut single = Vec::new();
    let mut alone = Vec::new();
    for (name, m) in &set {
        let b = flat_batch(&[m], opts.device);
        let (e, f) = model.evaluate(&b.z, &b.positions, &b.batch, None, b.n)?;
        alone.push((to_host_f64(&e)[0], to_host_f64(&f)));
        let t = time_calls(
            &model,
            &b,
            opts.warmup,
            opts.trials,
            opts.perturbation,
            &mut rng,
        )?;
        single.push((name.clone(), Stats::of(&t).median));
    }
    let mut rows = Vec::new();
    for &size in &opts.batch_sizes {
        let mols: Vec<&Molecule> = (0..size).map(|i| &set[i % set.len()].1).collect();
        let b = flat_batch(&mols, opts.device);
        let t = time_calls(
            &model,
            &b,
            opts.warmup,
            opts.trials,
            opts.perturbation,
            &mut rng,
        )?;
        let stats = Stats::of(&t);
        let sequential: f64 = (0..size).map(|i| single[i % set.len()].1).sum();
        let (e, f) = model.evaluate(&b.z, &b.positions, &b.batch, None, b.n)?;
        let (e, f) = (to_host_f64(&e), to_host_f64(&f));
        let mut energy_dev = 0.0f64;
        let mut force_dev = 0.0f64;
        let mut at = 0;
        for (i, e_batched) in e.iter().enumerate() {
            let (e_alone, f_alone) = &alone[i % set.len()];
            energy_dev = energy_dev.max((e_batched - e_alone).abs() / e_alone.abs().max(1e-300));
            for (x, y) in f[at..at + f_alone.len()].iter().zip(f_alone) {
                force_dev = force_dev.max((x - y).abs());
            }
            at += f_alone.len();
        }
        rows.push(ForcesRow {
            batch_size: size,
            atoms: mols.iter().map(|m| m.n_atoms()).sum(),
            ms_per_call: stats,
            ms_per_molecule: stats.median / size as f64,
            sequential_ms: sequential,
            speedup: sequential / stats.median,
            molecules_per_second: size as f64 / (stats.median * 1e-3),
            max_relative_energy_deviation: energy_dev,
            max_force_deviation_ev_per_a: force_dev,
        });
    }
    let device = device_name(opts.device);
    let report = ForcesReport {
        benchmark: "forces",
        device: device.clone(),
        date: today(),
        model: opts.model.display().to_string(),
        molecules: set.iter().map(|(n, m)| (n.clone(), m.n_atoms())).collect(),
        warmup: opts.warmup,
        trials: opts.trials,
        sequential_ms_per_molecule: single,
        rows,
    };
    let mut md = format!(
        "# Batched-force benchmark — {device}, {}\n\nModel `{}`; {} molecules cycled into each batch; one forward + one backward per call; {} warm-up + {} timed trials, positions perturbed by {} Å every trial; device synchronised before reading the clock. Sequential = the same molecules one call each (sum of per-molecule median times).\n\n| batch | atoms | ms/call median (min–max) | ms/molecule | sequential ms | speedup | molecules/s |\n|---|---|---|---|---|---|---|\n",
        report.date,
        report.model,
        set.len(),
        opts.warmup,
        opts.trials,
        opts.perturbation
    );
    for r in &report.rows {
        md += &format!(
            "| {} | {} | {:.3} ({:.3}–{:.3}) | {:.4} | {:.2} | {:.1}× | {:.0} |\n",
            r.batch_size,
            r.atoms,
            r.ms_per_call.median,
            r.ms_per_call.min,
            r.ms_per_call.max,
            r.ms_per_molecule,
            r.sequential_ms,
            r.speedup,
            r.molecules_per_second
        );
    }
    let path = write_report(
        &opts.out,
        &format!("forces_{}_{}", slug(&device), report.date),
        &report,
        &md,
    )?;
    Ok((report, path))
}

// ---------------------------------------------------------------- md

#[derive(Debug, Clone)]
pub struct MdOptions {
    pub model: PathBuf,
    pub structures: Vec<PathBuf>,
    pub device: Device,
    pub replicas: Vec<usize>,
    pub steps: usize,
    pub warmup: usize,
    pub timestep: f64,
    pub temperature: f64,
    pub friction: f64,
    pub out: PathBuf,
    /// Each row is measured once per setting, side by side.
    pub cuda_graphs: Vec<GraphPolicy>,
    /// BAOAB Langevin; false: velocity Verlet (no thermostat noise).
    pub thermostat: bool,
    /// Precision of the integrator state.
    pub state_kind: Kind,
    /// Å beyond the cutoff a stored neighbour list reaches.
    pub skin: f64,
    /// Use the package cache's package for a row where it holds one.
    pub compiled: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct MdRow {
    pub structure: String,
    pub atoms: usize,
    pub replicas: usize,
    /// A periodic box (the file's cell).
    pub periodic: bool,
    /// Whether the timed steps were CUDA-graph replays.
    pub cuda_graph: bool,
    pub steps: usize,
    pub ms_per_step: f64,
    pub replica_steps_per_second: f64,
    pub atom_steps_per_second: f64,
    pub aggregate_ns_per_day: f64,
    pub ns_per_day_per_replica: f64,
    /// One bare forward + backward of the same batch (for a model of
    /// interface v2 with the neighbour-list build).
    pub ms_per_force_call: f64,
    /// One neighbour-list build alone (interface v2), eagerly.
    pub ms_per_list_build: Option<f64>,
    /// The same, replayed from a CUDA graph (as inside the captured step).
    pub ms_per_list_build_graphed: Option<f64>,
    /// The list's grid and capacities (interface v2).
    pub neighbor_list: Option<crate::neighbors::ListShape>,
    /// Steps between rebuilds of the stored (skin) list at the end of the
    /// timed steps (cell grids with a skin; None where every force call
    /// builds its list).
    pub list_rebuild_every: Option<u64>,
    /// Full MD step time / bare forward + backward time.
    pub engine_overhead_ratio: f64,
    pub peak_memory_mib: Option<f64>,
    /// Largest memory held by tensors during the row (CUDA allocator
    /// statistics; graph pools included), MiB.
    pub peak_allocated_mib: Option<f64>,
    /// Members per model call when the batch had to be split (0 = one call).
    pub chunk_size: usize,
    /// The compiled package that stood in for the model file (its name in
    /// the package cache), if one did.
    pub package: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MdReport {
    pub benchmark: &'static str,
    pub device: String,
    pub date: String,
    pub model: String,
    pub integrator: String,
    /// Precision of the integrator state.
    pub state_precision: String,
    pub rows: Vec<MdRow>,
    /// Points that ran out of device memory (skipped; the sweep went on).
    pub did_not_fit: Vec<PointDidNotFit>,
}

/// A point of `bench md` that did not fit in device memory.
#[derive(Debug, Clone, Serialize)]
pub struct PointDidNotFit {
    pub structure: String,
    pub replicas: usize,
    /// The CUDA-graph setting it was measured under (on, off, auto).
    pub cuda_graphs: String,
    /// libtorch's message.
    pub error: String,
}

/// Seconds per replay of `work` captured in a CUDA graph on `device`
/// (after two eager warm-up calls), over `steps` replays.
fn time_graphed(
    device: usize,
    steps: usize,
    mut work: impl FnMut(),
) -> std::result::Result<f64, crate::cuda_graph::GraphError> {
    use crate::cuda_graph::{CudaGraph, SideStream};
    let _stream = SideStream::enter(device)?;
    work();
    work();
    let mut graph = CudaGraph::new()?;
    graph.capture_begin()?;
    work();
    graph.capture_end()?;
    let dev = Device::Cuda(device);
    synchronize(dev);
    let start = Instant::now();
    for _ in 0..steps.max(1) {
        graph.replay()?;
    }
    synchronize(dev);
    Ok(start.elapsed().as_secs_f64() / steps.max(1) as f64)
}

/// The model of a bench row, behind the engine path it takes.
enum RowModel {
    /// Interface v1: positions in.
    Positions(TorchScriptModel),
    /// Interface v2: the engine's neighbour list in (boxed: with the
    /// list's tables it is twice the size of the other variants).
    Pairs(Box<PairForces>),
    /// An AOTInductor package (compiled for this row's molecule and R).
    Package(crate::force::AotiForces),
}

impl RowModel {
    /// The row's model: with `compiled`, the cached package for `state`'s
    /// batch where there is one (Some(its path) beside the model).
    fn load_compiled(
        path: &Path,
        state: &BatchState,
        skin: f64,
        compiled: bool,
    ) -> Result<(RowModel, Option<PathBuf>)> {
        let cached = compiled
            .then(|| crate::compile::key_for_file(path, crate::config::Dtype::Float32, state, 1))
            .and_then(|key| key.ok())
            .filter(|key| key.path().is_file());
        let Some(key) = cached else {
            return Ok((Self::load(path, state, skin)?, None));
        };
        let package_path = key.path();
        let stand_in = StandIn::open(
            &package_path,
            path,
            &key.model_sha256,
            state,
            Kind::Float,
            skin,
        )?;
        let model = match stand_in {
            StandIn::Forces(f) => RowModel::Package(f),
            StandIn::Pairs(p) => RowModel::Pairs(p),
        };
        Ok((model, Some(package_path)))
    }

    fn load(path: &Path, state: &BatchState, skin: f64) -> Result<RowModel> {
        if crate::force::aoti::is_package(path) {
            return Ok(RowModel::Package(crate::force::AotiForces::load(
                path, state,
            )?));
        }
        let model = TorchScriptModel::load(path, state.device, Kind::Float)?;
        Ok(if model.takes_pairs() {
            RowModel::Pairs(Box::new(PairForces::with_skin(
                Box::new(model),
                state,
                skin,
            )?))
        } else {
            RowModel::Positions(model)
        })
    }

    fn provider(&self) -> &dyn ForceProvider {
        match self {
            RowModel::Positions(m) => m,
            RowModel::Pairs(p) => p.as_ref(),
            RowModel::Package(p) => p,
        }
    }
}

/// How many times bench md grows an overflowing neighbour list and times
/// again before giving up.
const BENCH_LIST_ATTEMPTS: usize = 4;

/// A structure's file name (its path's last part).
fn file_name(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("?")
        .to_string()
}

/// One point of `bench md`: `molecule` x `r` under `policy`, timed; the
/// row and the integrator's description.
fn md_row(
    opts: &MdOptions,
    path: &Path,
    molecule: &Molecule,
    r: usize,
    policy: GraphPolicy,
) -> Result<(MdRow, String)> {
    let mut state = BatchState::new(molecule, r, opts.device, opts.state_kind);
    if let Some(cell) = &molecule.cell {
        // A file with a cell (CRYST1, ...) is a periodic box.
        let one = Tensor::from_slice(&cell.to_array()).view([1, 3, 3]);
        state.set_cells(&one.repeat([r as i64, 1, 1]));
    }
    if let Device::Cuda(i) = opts.device {
        crate::cuda_graph::reset_peak_memory(i);
    }
    let (row_model, package) =
        RowModel::load_compiled(&opts.model, &state, opts.skin, opts.compiled)?;
    let model = row_model.provider();
    state.set_maxwell_boltzmann(opts.temperature, &mut CounterRng::new(1));
    update_forces(&mut state, model)?;
    let mut integrator: Box<dyn Integrator> = if opts.thermostat {
        Box::new(Langevin::new(
            &state,
            opts.timestep,
            opts.friction,
            opts.temperature,
            1,
        ))
    } else {
        Box::new(VelocityVerlet::new(&state, opts.timestep))
    };
    let integrator_name = integrator.describe();
    // A start far from equilibrium (a fresh solvated box) can pack
    // more neighbours than the list was sized for. The warm-up runs
    // eagerly and a list that overflowed in it is grown before any
    // graph exists (a dropped graph's pool of a large batch can hold
    // on to its memory); one that overflows in the timed steps is
    // grown and the steps are timed again. Never a figure of a list
    // missing pairs.
    let mut attempts = 0;
    let (md, graphed) = loop {
        attempts += 1;
        let mut eager = Stepper::new(GraphPolicy::Off, &state, model, integrator.as_mut())?;
        for _ in 0..opts.warmup {
            eager.step(&mut state, model, integrator.as_mut())?;
        }
        drop(eager);
        let timed = match model.overflow() {
            Some(what) => Err(what),
            None => {
                let mut stepper = Stepper::new(policy, &state, model, integrator.as_mut())?;
                // The stepper's own warm-up and capture, so timed
                // steps are replays.
                for _ in 0..=WARMUP_STEPS {
                    stepper.step(&mut state, model, integrator.as_mut())?;
                }
                synchronize(opts.device);
                let start = Instant::now();
                for _ in 0..opts.steps {
                    stepper.step(&mut state, model, integrator.as_mut())?;
                }
                synchronize(opts.device);
                let md = start.elapsed().as_secs_f64() / opts.steps.max(1) as f64;
                match model.overflow() {
                    None => Ok((md, stepper.graphed())),
                    Some(what) => Err(what),
                }
            }
        };
        match timed {
            Ok(figures) => break figures,
            Err(what) if attempts >= BENCH_LIST_ATTEMPTS => {
                return Err(Error::Simulation(format!(
                    "bench md: the neighbour list ran out of room in {attempts} attempts in a row ({what}); the timing would be of a list missing pairs"
                )));
            }
            Err(what) => {
                eprintln!(
                    "note: {}: the neighbour list ran out of room ({what}); enlarged it and timing again",
                    path.display()
                );
                crate::cuda_graph::release_cached_memory();
                model.grow(&state)?;
            }
        }
    };
    // Bare forward + backward of the same batch, same number of calls
    // (for a pair model: list build included).
    synchronize(opts.device);
    let start = Instant::now();
    for _ in 0..opts.steps {
        let out = model.compute(&state)?;
        drop(out);
    }
    synchronize(opts.device);
    let ff = start.elapsed().as_secs_f64() / opts.steps.max(1) as f64;
    // The neighbour-list build alone: what rebuilding it every step
    // costs, i.e. the most a skin and a rebuild schedule could save.
    let list = match &row_model {
        RowModel::Pairs(p) => {
            synchronize(opts.device);
            let start = Instant::now();
            for _ in 0..opts.steps {
                drop(p.build_list(&state));
            }
            synchronize(opts.device);
            Some(start.elapsed().as_secs_f64() / opts.steps.max(1) as f64)
        }
        RowModel::Positions(_) | RowModel::Package(_) => None,
    };
    // The same build captured in a CUDA graph, as it runs inside the
    // captured step.
    let list_graphed = match (&row_model, opts.device) {
        (RowModel::Pairs(p), Device::Cuda(i)) => {
            time_graphed(i, opts.steps, || drop(p.build_list(&state))).ok()
        }
        _ => None,
    };
    let sps = 1.0 / md;
    let row = MdRow {
        structure: file_name(path),
        atoms: molecule.n_atoms(),
        replicas: r,
        periodic: state.cells.is_some(),
        cuda_graph: graphed,
        steps: opts.steps,
        ms_per_step: md * 1e3,
        replica_steps_per_second: sps * r as f64,
        atom_steps_per_second: sps * (r * molecule.n_atoms()) as f64,
        aggregate_ns_per_day: sps * r as f64 * opts.timestep * 86_400.0 / FS_PER_NS,
        ns_per_day_per_replica: sps * opts.timestep * 86_400.0 / FS_PER_NS,
        ms_per_force_call: ff * 1e3,
        ms_per_list_build: list.map(|l| l * 1e3),
        ms_per_list_build_graphed: list_graphed.map(|l| l * 1e3),
        neighbor_list: match &row_model {
            RowModel::Pairs(p) => p.list_shape(),
            RowModel::Positions(_) | RowModel::Package(_) => None,
        },
        list_rebuild_every: match &row_model {
            RowModel::Pairs(p) => p.upkeep().map(|_| p.rebuild_every()),
            RowModel::Positions(_) | RowModel::Package(_) => None,
        },
        engine_overhead_ratio: md / ff,
        peak_memory_mib: peak_memory_mib(opts.device),
        peak_allocated_mib: match opts.device {
            Device::Cuda(i) => {
                crate::cuda_graph::memory_stats(i).map(|(peak, _)| peak as f64 / (1 << 20) as f64)
            }
            _ => None,
        },
        chunk_size: match &row_model {
            RowModel::Positions(m) => m.chunk_size(),
            RowModel::Pairs(_) | RowModel::Package(_) => 0,
        },
        package: package.map(|p| file_name(&p)),
    };
    Ok((row, integrator_name))
}

pub fn bench_md(opts: &MdOptions) -> Result<(MdReport, PathBuf)> {
    let mut rows = Vec::new();
    let mut did_not_fit = Vec::new();
    let mut integrator_name = String::new();
    for path in &opts.structures {
        let molecule = Molecule::load(std::slice::from_ref(path))?;
        for (&r, &policy) in opts
            .replicas
            .iter()
            .flat_map(|r| opts.cuda_graphs.iter().map(move |p| (r, p)))
        {
            match md_row(opts, path, &molecule, r, policy) {
                Ok((row, name)) => {
                    rows.push(row);
                    integrator_name = name;
                }
                // A sweep over R is meant to find where the GPU fills up:
                // a point that does not fit is reported, not the end of the
                // sweep. (On the CPU only a test model says this: a failed
                // host allocation aborts the process.)
                Err(e) if e.is_out_of_memory() => {
                    eprintln!(
                        "note: {} x {r} (CUDA graphs {}): does not fit in device memory; skipped",
                        path.display(),
                        policy.as_str()
                    );
                    crate::cuda_graph::release_cached_memory();
                    did_not_fit.push(PointDidNotFit {
                        structure: file_name(path),
                        replicas: r,
                        cuda_graphs: policy.as_str().to_string(),
                        error: e.to_string(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }
    let device = device_name(opts.device);
    let report = MdReport {
        benchmark: "md",
        device: device.clone(),
        date: today(),
        model: opts.model.display().to_string(),
        integrator: integrator_name,
        state_precision: format!("{:?}", opts.state_kind),
        rows,
        did_not_fit,
    };
    let mut md = format!(
        "# MD throughput — {device}, {}\n\nModel `{}`; {}; {} K; {:?} integrator state, float32 model; {} eager warm-up steps + the graph's warm-up and capture + {} timed steps per row; device synchronised at both ends. Overhead ratio = full MD step / bare (eager) forward + backward of the same batch; below 1 when graph replay saves launch overhead. For models of interface v2, isolated molecules of up to 256 atoms get their neighbour list built in every force call (in the captured step); larger and periodic systems keep a list reaching a skin beyond the cutoff, rebuilt every N steps (the number in brackets after the build time, at the end of the timed steps) and filtered at every step. ms/list build is one full build alone, eagerly (and in parentheses replayed from a CUDA graph). Peak MiB: GPU memory held by the process so far (nvidia-smi: the CUDA context, the allocator's cache and graph pools; the largest row of a run dominates later ones), or peak RSS on the CPU. Peak allocated: the most memory held by tensors during the row (CUDA allocator statistics).\n\n| structure | atoms | R | CUDA graph | ms/step | replica-steps/s | atom-steps/s | aggregate ns/day | ns/day per replica | ms/force call | ms/list build (graphed) | overhead ratio | peak MiB | peak allocated MiB | chunk | compiled package |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        report.date, report.model, report.integrator, opts.temperature, opts.state_kind, opts.warmup, opts.steps
    );
    for r in &report.rows {
        md += &format!(
            "| {}{} | {} | {} | {} | {:.3} | {:.0} | {:.0} | {:.2} | {:.3} | {:.3} | {} | {:.3} | {} | {} | {} | {} |\n",
            r.structure,
            if r.periodic { " (periodic)" } else { "" },
            r.atoms,
            r.replicas,
            if r.cuda_graph { "yes" } else { "no" },
            r.ms_per_step,
            r.replica_steps_per_second,
            r.atom_steps_per_second,
            r.aggregate_ns_per_day,
            r.ns_per_day_per_replica,
            r.ms_per_force_call,
            match (r.ms_per_list_build, r.ms_per_list_build_graphed) {
                (Some(e), Some(g)) => format!("{e:.3} ({g:.3})"),
                (Some(e), None) => format!("{e:.3}"),
                _ => "-".into(),
            } + &r
                .list_rebuild_every
                .map_or(String::new(), |n| format!(" [{n}]")),
            r.engine_overhead_ratio,
            r.peak_memory_mib
                .map_or("n/a".into(), |m| format!("{m:.0}")),
            r.peak_allocated_mib
                .map_or("n/a".into(), |m| format!("{m:.0}")),
            if r.chunk_size == 0 {
                "-".to_string()
            } else {
                r.chunk_size.to_string()
            },
            r.package.as_deref().unwrap_or("-")
        );
    }
    for p in &report.did_not_fit {
        md += &format!(
            "| {} | | {} | {} | did not fit in device memory | | | | | | | | | | |\n",
            p.structure, p.replicas, p.cuda_graphs
        );
    }
    let path = write_report(
        &opts.out,
        &format!("md_{}_{}", slug(&device), report.date),
        &report,
        &md,
    )?;
    Ok((report, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_and_date() {
        let s = Stats::of(&[3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.min, s.median, s.max), (1.0, 2.5, 10.0));
        let d = today();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"));
        assert_eq!(slug("NVIDIA H200 (x)"), "NVIDIA-H200-x");
    }
}
