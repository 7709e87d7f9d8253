//! Compiled packages as the default force path of static-shape models.
//!
//! An AOTInductor package (src/force/aoti.rs) steps faster than the
//! TorchScript file it is compiled from (on an H200, graphed against
//! graphed: 1.14–1.36×, benches/results/pt2_NVIDIA-H200_2026-12-04), but
//! it fixes every shape: one molecule, one member count, one kind of
//! hardware. So it cannot be shipped; it is compiled for a run.
//! `mlff-md compile CONFIG` does that (through python/export_pt2.py, which
//! the binary carries, and a Python with torch) and stores the package in a
//! cache under a name derived from everything that fixes it; `mlff-md run`
//! with `[model] compiled = "auto"` (the default) then finds it and uses it
//! in place of the TorchScript file. Nothing is compiled behind the user's
//! back: compiling takes one to three minutes, and a run without a package
//! runs the TorchScript file as before.
//!
//! What a package computes with ([`Kernels`]): Inductor's kernels for the
//! file's own code, or, for the neighbour-list ANI-1x/1ccx files on a GPU
//! (the default there), the file's module rebuilt in Python with the
//! angular AEV's sum and the networks' layers by hand-written Triton
//! kernels (python/ani_nl_triton.py, python/network_triton.py): steps
//! 1.71x (chignolin x 32) and 1.89x (alanine dipeptide x 4096) faster than
//! the file's on an H100, where the file's own code compiled gave 1.22x
//! (benches/results/pt2_nets_NVIDIA-H100_2026-12-06,
//! pt2_kernels_NVIDIA-H100_2026-12-06).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tch::Device;

use crate::config::{CompiledPolicy, Config, Dtype, ModelKind};
use crate::error::{Error, Result};
use crate::force::aoti::{is_package, Package, INTERFACE};
use crate::force::pairs::takes_capacities;
use crate::io::checkpoint::Checkpoint;
use crate::neighbors::ListShape;
use crate::simulation::Simulation;
use crate::state::BatchState;

/// The exporter, carried by the binary so that `compile` works wherever the
/// binary is.
const EXPORTER: &str = include_str!("../python/export_pt2.py");

/// The modules `export_pt2.py --kernels` imports (written beside it): the
/// neighbour-list ANI's Python code and the Triton kernels it is rebuilt
/// with, and what they import in turn.
const KERNEL_MODULES: [(&str, &str); 9] = [
    (
        "ani_nl_triton.py",
        include_str!("../python/ani_nl_triton.py"),
    ),
    (
        "angular_triton.py",
        include_str!("../python/angular_triton.py"),
    ),
    (
        "network_triton.py",
        include_str!("../python/network_triton.py"),
    ),
    (
        "export_ani_nl.py",
        include_str!("../python/export_ani_nl.py"),
    ),
    ("ani_build.py", include_str!("../python/ani_build.py")),
    ("export_ani.py", include_str!("../python/export_ani.py")),
    ("model_files.py", include_str!("../python/model_files.py")),
    ("pypi_archive.py", include_str!("../python/pypi_archive.py")),
    ("deps.py", include_str!("../python/deps.py")),
];

/// What computes a neighbour-list model's terms in its package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// The TorchScript file's own code, compiled by Inductor.
    Model,
    /// The neighbour-list ANI rebuilt with its angular sum by Triton
    /// kernels (python/ani_nl_triton.py): each value copied exactly.
    Triton,
    /// The same on tensor cores with three TF32 products (each value
    /// rounded to about float32's precision).
    TritonTf32x3,
    /// `Triton`'s angular sum, and the networks' layers by Triton kernels
    /// on tensor cores with three TF32 products, CELU fused
    /// (python/network_triton.py): the fastest, the default where it serves.
    TritonNets,
}

impl Kernels {
    /// Every set, in the order `--kernels` lists them.
    pub const ALL: [Kernels; 4] = [
        Kernels::Model,
        Kernels::Triton,
        Kernels::TritonTf32x3,
        Kernels::TritonNets,
    ];

    /// The set of a `--kernels` name (None for any other, e.g. `auto`).
    pub fn from_name(name: &str) -> Option<Kernels> {
        Kernels::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The name `--kernels` takes and the package's metadata records.
    pub fn name(self) -> &'static str {
        match self {
            Kernels::Model => "model",
            Kernels::Triton => "triton",
            Kernels::TritonTf32x3 => "triton-tf32x3",
            Kernels::TritonNets => "triton-nets",
        }
    }
}

/// The kernel set a package is compiled with: `wanted` (None: auto, the
/// fastest that serves: `TritonNets` where the Triton kernels serve the
/// model and device, `Model` elsewhere); a Triton set where they do not
/// serve is an input error.
fn choose_kernels(wanted: Option<Kernels>, triton_serves: bool) -> Result<Kernels> {
    match wanted {
        None if triton_serves => Ok(Kernels::TritonNets),
        None => Ok(Kernels::Model),
        Some(k) if k == Kernels::Model || triton_serves => Ok(k),
        Some(k) => Err(Error::Invalid(format!(
            "--kernels {}: the Triton kernels serve the neighbour-list ANI-1x and ANI-1ccx files (models/ani1x_nl.pt, models/ani1ccx_nl.pt) on a CUDA device; this config's model is another or runs on the CPU",
            k.name()
        ))),
    }
}

/// The libtorch the engine links, which must load what the exporter's torch
/// compiled (build.rs pins both to 2.11).
const TORCH: &str = "2.11.0";

/// What fixes a package: the model's contents, the molecule, the member
/// count and the hardware it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageKey {
    /// SHA-256 of the TorchScript file the package is compiled from.
    pub model_sha256: String,
    /// The model file's name without extension, for a readable file name.
    pub model_stem: String,
    /// One member's atomic numbers.
    pub atomic_numbers: Vec<i64>,
    pub members: usize,
    /// "cuda" or "cpu".
    pub device_kind: &'static str,
    /// GPU or CPU model name: the compiled kernels are specific to it.
    pub hardware: String,
}

impl PackageKey {
    /// The package's file name in the cache: readable parts, then 16 hex
    /// digits of a hash over every part of the key.
    pub fn file_name(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            INTERFACE,
            TORCH,
            &self.model_sha256,
            &self
                .atomic_numbers
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(","),
            &self.members.to_string(),
            self.device_kind,
            &self.hardware,
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        let digest: String = h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!(
            "{}_{}x{}_{}_{digest}.pt2",
            self.model_stem,
            self.members,
            self.atomic_numbers.len(),
            self.device_kind
        )
    }

    /// Where the package for this key lives (whether or not it exists).
    pub fn path(&self) -> PathBuf {
        cache_dir().join(self.file_name())
    }
}

/// The package cache: $MLFF_MD_CACHE, else $XDG_CACHE_HOME/mlff-md, else
/// ~/.cache/mlff-md, else .mlff-md-cache in the working directory.
pub fn cache_dir() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = var("MLFF_MD_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = var("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("mlff-md");
    }
    match var("HOME") {
        Some(h) => PathBuf::from(h).join(".cache").join("mlff-md"),
        None => PathBuf::from(".mlff-md-cache"),
    }
}

/// The key a package for `config`'s model and `state`'s batch would have,
/// or why no package can stand in for it: the model is not a TorchScript
/// file taking float32 positions, the system is not one molecule × R, or
/// the run has several processes (each holds a share of
/// the members; packages fix the member count).
pub fn key_for(
    config: &Config,
    state: &BatchState,
    ranks: usize,
) -> std::result::Result<PackageKey, String> {
    let model = &config.model;
    let path = match (&model.kind, &model.path) {
        (ModelKind::Torchscript, Some(p)) => config.resolve(p),
        _ => return Err("only TorchScript model files can be compiled".into()),
    };
    key_for_file(&path, model.dtype, state, ranks)
}

/// [`key_for`] of the TorchScript file at `path`, run in `dtype`.
pub fn key_for_file(
    path: &Path,
    dtype: Dtype,
    state: &BatchState,
    ranks: usize,
) -> std::result::Result<PackageKey, String> {
    if is_package(path) {
        return Err(format!("{} is a package already", path.display()));
    }
    if dtype != Dtype::Float32 {
        return Err("packages take float32 positions; this model is run in float64".into());
    }
    if ranks > 1 {
        return Err(format!(
            "this run has {ranks} MPI ranks, each with its own share of the members"
        ));
    }
    let n = state
        .layout
        .uniform_atoms()
        .ok_or("packages serve one molecule × R members; this batch mixes molecules")?;
    let numbers = Vec::<i64>::try_from(
        state
            .atomic_numbers
            .narrow(0, 0, n as i64)
            .to_device(Device::Cpu),
    )
    .map_err(|e| format!("atomic numbers: {e}"))?;
    let model_sha256 =
        crate::simulation::file_sha256(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (device_kind, hardware) = match state.device {
        Device::Cuda(_) => ("cuda", crate::device::hardware_name(state.device)),
        _ => ("cpu", crate::device::hardware_name(Device::Cpu)),
    };
    Ok(PackageKey {
        model_sha256,
        model_stem: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        atomic_numbers: numbers,
        members: state.n_members,
        device_kind,
        hardware,
    })
}

/// The package a run of `config` uses under its [model] compiled policy:
/// Some((path, SHA-256)) of the cached package, None for the TorchScript
/// file. `key` is [`key_for`]'s answer for the run's batch (computed once
/// by the caller, which also needs it for the model's hash and the GPU
/// hint). A resumed run (`AsStarted`) must find the package it was started
/// with, unchanged.
pub fn select(
    config: &Config,
    key: &std::result::Result<PackageKey, String>,
) -> Result<Option<(PathBuf, String)>> {
    match &config.model.compiled {
        CompiledPolicy::Off | CompiledPolicy::AsStarted(None) => Ok(None),
        CompiledPolicy::Auto => {
            let Some(path) = key.as_ref().ok().map(|k| k.path()).filter(|p| p.is_file()) else {
                return Ok(None);
            };
            let sha = crate::simulation::file_sha256(&path)
                .map_err(|e| Error::model(&path, e.to_string()))?;
            Ok(Some((path, sha)))
        }
        CompiledPolicy::AsStarted(Some(sha)) => {
            let key = key.as_ref().map_err(|why| {
                Error::Invalid(format!(
                    "cannot resume: the run was started with a compiled package (SHA-256 {sha}), and no package can serve it now: {why}"
                ))
            })?;
            let path = key.path();
            let now = crate::simulation::file_sha256(&path).ok();
            if now.as_deref() != Some(sha.as_str()) {
                let found = match now {
                    Some(other) => format!("holds a different package (SHA-256 {other})"),
                    None => "is missing".into(),
                };
                return Err(Error::model(
                    &path,
                    format!(
                        "the run was started with this compiled package (SHA-256 {sha}) and it {found}; a continued run uses the same force path to stay bit-identical: put the package back (or pass --allow-model-change to continue with what `[model] compiled` picks now)"
                    ),
                ));
            }
            Ok(Some((path, sha.clone())))
        }
    }
}

/// How `mlff-md compile` is asked to work.
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    /// Python with torch 2.11 (default $MLFF_MD_PYTHON, else python3).
    pub python: Option<PathBuf>,
    /// Compile even when the cache holds a package for this key.
    pub force: bool,
    pub quiet: bool,
    /// Compile for the state of the checkpoint in the config's output
    /// directory: the neighbour list it holds (grown since the run
    /// started, say), which a continued run keeps.
    pub resume: bool,
    /// Neighbour-list models: factors by which rows, then each inner list's
    /// rows, are longer than the run starts with (None: 1; an inner list
    /// without its own factor takes the last one given), for a system whose
    /// list will grow (a peptide folding: chignolin's atoms have up to 39
    /// neighbours within 5.2 Å extended, 63 folded).
    pub room: Option<Vec<f64>>,
    /// What computes the model's terms; None (auto): Triton kernels where
    /// they serve the model (the neighbour-list ANI-1x/1ccx files on a
    /// CUDA device), the model's own code elsewhere.
    pub kernels: Option<Kernels>,
}

/// What `compile` did.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub path: PathBuf,
    /// False when the cache already held it.
    pub compiled: bool,
    pub seconds: f64,
}

/// Compile `config`'s model for its system, member count and device into
/// the package cache (python/export_pt2.py, run by `python`), unless the
/// cache holds that package already.
pub fn compile(config: &Config, options: &CompileOptions) -> Result<Compiled> {
    let mut config = config.clone();
    config.model.compiled = CompiledPolicy::Off;
    // The run's own set-up: every check a run makes on the config, the
    // structure and the model, and the batch exactly as a run builds it.
    let mut sim = Simulation::from_config(&config)?;
    if options.resume {
        restore_for_compile(&mut sim, &config, options.quiet)?;
    }
    let key = key_for(&config, &sim.state, 1)
        .map_err(|why| Error::Invalid(format!("cannot compile this config's model: {why}")))?;
    let model_path = config.resolve(config.model.path.as_deref().unwrap_or(Path::new("")));
    if !sim.force.compilable() {
        return Err(Error::model(
            &model_path,
            "has neither prepare()/forward_prepared() nor prepare()/forward_pairs_prepared() (or takes a charge): only static-shape models (e.g. models/ani1x_static.pt, models/ani1x_nl.pt) can be compiled into packages",
        ));
    }
    // A neighbour-list model's package takes the list this run starts
    // (or, with `resume`, continues) with, and `room` more.
    let shape = sim.force.list_shape();
    let wanted = match (&shape, &options.room) {
        (None, Some(_)) => return Err(Error::Invalid(
            "--room: this config's model takes no neighbour list (its package fixes no list shape)"
                .into(),
        )),
        (Some(shape), room) => Some(with_room(shape, room.as_deref().unwrap_or(&[1.0]))?),
        (None, None) => None,
    };
    let triton_serves = wanted.is_some() && sim.device != Device::Cpu && sim.force.triton_kernels();
    let kernels = choose_kernels(options.kernels, triton_serves)?;
    let list = wanted.as_ref().map(|wanted| {
        let inner: Vec<String> = wanted.inner_capacities.iter().map(i64::to_string).collect();
        [
            "--capacity".to_string(),
            wanted.capacity.to_string(),
            "--inner-capacities".to_string(),
            inner.join(","),
        ]
    });
    let target = key.path();
    // A continued run keeps its checkpoint's list, so only a package of
    // exactly that shape serves it; a fresh run's list takes any package
    // with room enough for it (PairForces::with_skin), and `room` asks for
    // at least the rows wanted.
    let cached_serves = || match &wanted {
        Some(wanted) => Package::open(&target, &sim.state)
            .ok()
            .filter(|p| p.kernels() == kernels.name())
            .and_then(|p| p.list_capacities())
            .is_some_and(|(k, ka)| match options.resume {
                true => (k, &ka) == (wanted.capacity, &wanted.inner_capacities),
                false => takes_capacities(wanted, k, &ka),
            }),
        None => true,
    };
    if target.is_file() && !options.force && cached_serves() {
        return Ok(Compiled {
            path: target,
            compiled: false,
            seconds: 0.0,
        });
    }
    let dir = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::OutputPath {
        path: dir.to_path_buf(),
        message: format!("cannot create the package cache: {e}"),
    })?;
    let work = WorkDir::create()?;
    let script = work.0.join("export_pt2.py");
    let system = work.0.join("system.json");
    let n = key.atomic_numbers.len() as i64;
    let positions = Vec::<f64>::try_from(
        sim.state
            .positions
            .narrow(0, 0, n)
            .to_kind(tch::Kind::Double)
            .to_device(Device::Cpu)
            .reshape([-1]),
    )
    .map_err(|e| Error::Invalid(format!("positions: {e}")))?;
    let json = serde_json::json!({
        "atomic_numbers": key.atomic_numbers,
        "positions": positions.chunks(3).collect::<Vec<_>>(),
    });
    let written = std::fs::write(&script, EXPORTER)
        .and_then(|_| std::fs::write(&system, json.to_string()))
        .and_then(|_| {
            KERNEL_MODULES
                .iter()
                .try_for_each(|(name, text)| std::fs::write(work.0.join(name), text))
        });
    written.map_err(|e| Error::Invalid(format!("temporary files: {e}")))?;
    // Written beside the target and renamed into place, so the cache never
    // holds half a package.
    let partial = dir.join(format!(".{}.{}.pt2", key.file_name(), std::process::id()));
    let device = match sim.device {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    };
    let python = options
        .python
        .clone()
        .or_else(|| std::env::var_os("MLFF_MD_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("python3"));
    if !options.quiet {
        eprintln!(
            "compiling {} for {} × {} atoms on {} ({}), kernels {}; this takes one to three minutes",
            model_path.display(),
            key.members,
            n,
            device,
            key.hardware,
            kernels.name()
        );
    }
    let started = std::time::Instant::now();
    let mut command = std::process::Command::new(&python);
    command
        .arg(&script)
        .arg("--model")
        .arg(&model_path)
        .arg("--structure")
        .arg(&system)
        .args(["--replicas", &key.members.to_string(), "--device", &device])
        .arg("--out")
        .arg(&partial)
        .args(list.iter().flatten())
        .args(["--kernels", kernels.name()]);
    if options.quiet {
        command.stdout(std::process::Stdio::null());
    }
    let status = command.status().map_err(|e| {
        Error::Invalid(format!(
            "cannot start {} ({e}): compiling runs python/export_pt2.py with a Python that has torch {TORCH}; name one with --python or MLFF_MD_PYTHON (e.g. .venv/bin/python)",
            python.display()
        ))
    })?;
    if !status.success() {
        let _ = std::fs::remove_file(&partial);
        return Err(Error::Invalid(format!(
            "compiling failed: {} exited with {status} (its messages are above)",
            python.display()
        )));
    }
    std::fs::rename(&partial, &target).map_err(|e| Error::OutputPath {
        path: target.clone(),
        message: format!("cannot move the package into the cache: {e}"),
    })?;
    Ok(Compiled {
        path: target,
        compiled: true,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `shape` with row and inner capacities times `room` (rows, then each
/// inner list; the last factor serves the lists after it), rounded up,
/// inner rows no longer than rows. Whole rows (a dense grid's rows in
/// place, the whole molecule) keep their length: only their inner rows grow.
fn with_room(shape: &ListShape, room: &[f64]) -> Result<ListShape> {
    if room.is_empty() || room.iter().any(|f| !(f.is_finite() && *f >= 1.0)) {
        return Err(Error::Invalid(format!(
            "--room {}: expected factors of 1 or more, for rows then inner rows (e.g. 1.6,1.3)",
            room.iter()
                .map(f64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )));
    }
    // The product as written in decimal, rounded up: 50 x 1.1 is
    // 55.00000000000001 in binary floating point, and 55 rows were asked.
    let more = |k: i64, f: f64| (k as f64 * f * (1.0 - 1e-12)).ceil() as i64;
    let capacity = match shape.rows_whole() {
        true => shape.capacity,
        false => more(shape.capacity, room[0]),
    };
    let inner = shape
        .inner_capacities
        .iter()
        .enumerate()
        .map(|(i, &k)| more(k, room[(i + 1).min(room.len() - 1)]).min(capacity))
        .collect();
    Ok(ListShape {
        capacity,
        inner_capacities: inner,
        ..shape.clone()
    })
}

/// Put `sim` in the state of the latest checkpoint in `config`'s output
/// directory (its positions and neighbour list), after the checks a
/// resumed run makes, except the model file's hash: the run that continues
/// on the package says whether the file may have changed.
fn restore_for_compile(sim: &mut Simulation, config: &Config, quiet: bool) -> Result<()> {
    let (ck, path, _) = Checkpoint::read_latest_noting(&config.output_dir())?;
    sim.restore(&ck, true)?;
    if !quiet {
        let list = match sim.force.list_shape() {
            Some(s) => format!(
                "its neighbour list (rows of {}, inner {:?})",
                s.capacity, s.inner_capacities
            ),
            None => "its positions".into(),
        };
        eprintln!(
            "compiling for the checkpoint {} (step {}): {list}",
            path.display(),
            ck.header.step
        );
    }
    Ok(())
}

/// A private temporary directory for the exporter's inputs, removed when
/// dropped (on every return path).
struct WorkDir(PathBuf);

impl WorkDir {
    fn create() -> Result<WorkDir> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("mlff-md-compile-{}-{stamp}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| Error::OutputPath {
            path: dir.clone(),
            message: format!("cannot create a temporary directory: {e}"),
        })?;
        Ok(WorkDir(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::neighbors::Grid;

    /// auto takes the fastest set that serves (triton-nets, else the
    /// model's code); an explicit Triton set where they do not serve is
    /// refused, `model` never.
    #[test]
    fn auto_kernels_are_triton_nets_where_triton_serves() {
        assert_eq!(choose_kernels(None, true).unwrap(), Kernels::TritonNets);
        assert_eq!(choose_kernels(None, false).unwrap(), Kernels::Model);
        assert_eq!(Kernels::from_name("auto"), None);
        for k in Kernels::ALL {
            assert_eq!(Kernels::from_name(k.name()), Some(k));
            assert_eq!(choose_kernels(Some(k), true).unwrap(), k);
            let alone = choose_kernels(Some(k), false);
            if k == Kernels::Model {
                assert_eq!(alone.unwrap(), k);
            } else {
                let why = alone.unwrap_err().to_string();
                assert!(
                    why.contains(k.name()) && why.contains("CUDA device"),
                    "{why}"
                );
            }
        }
    }

    /// --room lengthens rows and inner rows (rounded up, inner rows no
    /// longer than rows); whole rows keep their length; factors below 1
    /// (or not numbers) are refused.
    #[test]
    fn room_lengthens_rows_except_whole_ones() {
        let shape = |grid: Grid, capacity: i64, inner: i64, whole_rows: bool| ListShape {
            cutoffs: vec![5.2, 3.5],
            skin: 0.0,
            grid,
            capacity,
            outer_capacity: 0,
            inner_capacities: vec![inner],
            whole_rows,
        };
        let cells = Grid::Cells {
            bins: [2, 2, 2],
            max_per_bin: 40,
        };
        let capacities = |s: ListShape| (s.capacity, s.inner_capacities);
        let cell_rows = shape(cells, 43, 21, false);
        let more = |room: &[f64]| capacities(with_room(&cell_rows, room).unwrap());
        assert_eq!(more(&[1.6]), (69, vec![34]));
        assert_eq!(more(&[1.6, 1.3]), (69, vec![28]));
        assert_eq!(with_room(&cell_rows, &[1.0]).unwrap(), cell_rows);
        let fifty = shape(cells, 50, 20, false);
        assert_eq!(
            capacities(with_room(&fifty, &[1.1]).unwrap()),
            (55, vec![22])
        );
        let whole = shape(Grid::Dense { atoms: 22 }, 22, 19, true);
        assert!(whole.rows_whole());
        let longer = with_room(&whole, &[1.1]).unwrap();
        assert!(longer.rows_whole());
        assert_eq!(capacities(longer), (22, vec![21]));
        assert_eq!(
            capacities(with_room(&whole, &[1.6]).unwrap()),
            (22, vec![22])
        );
        for bad in [&[0.9][..], &[1.2, f64::NAN], &[f64::INFINITY], &[]] {
            let e = with_room(&whole, bad).unwrap_err().to_string();
            assert!(e.contains("expected factors of 1 or more"), "{e}");
        }
    }

    fn key() -> PackageKey {
        PackageKey {
            model_sha256: "ab".repeat(32),
            model_stem: "ani1x_static".into(),
            atomic_numbers: vec![6, 1, 1, 8],
            members: 64,
            device_kind: "cuda",
            hardware: "NVIDIA H200".into(),
        }
    }

    #[test]
    fn the_file_name_changes_with_every_part_of_the_key() {
        let base = key();
        let name = base.file_name();
        assert!(name.starts_with("ani1x_static_64x4_cuda_") && name.ends_with(".pt2"));
        let variants = [
            PackageKey {
                model_sha256: "cd".repeat(32),
                ..base.clone()
            },
            PackageKey {
                atomic_numbers: vec![6, 1, 8, 1],
                ..base.clone()
            },
            PackageKey {
                members: 32,
                ..base.clone()
            },
            PackageKey {
                device_kind: "cpu",
                ..base.clone()
            },
            PackageKey {
                hardware: "NVIDIA H100 80GB HBM3".into(),
                ..base.clone()
            },
        ];
        for v in variants {
            assert_ne!(v.file_name(), name, "{v:?}");
        }
        assert_eq!(key().file_name(), name);
    }
}
