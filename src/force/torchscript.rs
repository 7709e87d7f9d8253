//! The TorchScript force provider: one batched forward and one autograd
//! backward per step for every member.
//!
//! Model interface: `forward(atomic_numbers int64[N_tot], positions
//! float[N_tot, 3] (Å), batch int64[N_tot]) -> energies[n_structures] (eV)`.
//! Optional exported methods read when present: `supported_elements() ->
//! List[int]` and `metadata() -> str`. A model whose `takes_charge()`
//! returns True gets each structure's total charge as a fourth argument,
//! `charge float32[n_structures]` (and `forward_prepared(positions,
//! charge)`).
//!
//! Models of interface v2 (models/README.md; e.g. models/ani1x_nl.pt)
//! export `cutoffs()` and `forward_pairs(...)`: they take the engine's
//! neighbour list through [`super::pairs::PairForces`], for which this type
//! is a [`PairModel`].
//!
//! Static-shape models (e.g. models/ani1x_static.pt) also export
//! `prepare(atomic_numbers, batch)`, called once for a batch composition,
//! and `forward_prepared(positions) -> energies`, which then does the same
//! work with shapes fixed by that composition and no host synchronisation:
//! the path a CUDA graph can capture (see [`ForceProvider::prepare_static`]).

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use tch::{CModule, Device, IValue, Kind, Tensor};

use super::pairs::{PairInputs, PairModel};
use super::{autograd_forces, ForceOutput, ForceProvider};
use crate::error::{Error, Result};
use crate::state::BatchState;

/// Environment switch for models of interface v2: "0" runs them in
/// libtorch's plain TorchScript interpreter, "1" with its optimising
/// (profiling) executor; unset leaves the process's choice (optimising,
/// unless [`set_executor_optimize`] chose otherwise, as screens do).
pub const JIT_OPTIMIZE_ENV: &str = "MLFF_MD_JIT_OPTIMIZE";

/// Test-only environment switch: "1" keeps a v2 model's executor when its
/// input shapes change (no [`PairModel::renew_executor`]), to show what
/// the renewal is for.
pub const KEEP_EXECUTOR_ENV: &str = "MLFF_MD_TEST_KEEP_EXECUTOR";

/// libtorch's graph-executor setting as this crate last chose it (libtorch
/// has no getter; its own default is the optimising executor).
static OPTIMISING: AtomicBool = AtomicBool::new(true);

/// Choose libtorch's graph executor for the whole process: the optimising
/// (profiling) one, or the plain interpreter.
pub fn set_executor_optimize(on: bool) {
    OPTIMISING.store(on, Ordering::Relaxed);
    tch::jit::set_graph_executor_optimize(on);
}

/// The executor a model of interface v2 runs in (called by
/// [`TorchScriptModel::load`] for such a model, before its first
/// evaluation, so runs, benchmarks, screens and `inspect` agree):
/// [`JIT_OPTIMIZE_ENV`] if set, else the process's choice. Returns whether
/// it optimises.
///
/// The optimising executor specialises a method on the shapes it has
/// seen, and the shapes of a v2 model's inputs change whenever the
/// neighbour list grows. A resumed process has not seen the shapes from
/// before a growth, so with one executor for the whole run its steps
/// differed from the uninterrupted run's in the last bits (measured on an
/// H200: ANI-1x and AIMNet2 neighbour-list models, chignolin x 8, list
/// grown before the checkpoint). So the model gets a fresh executor
/// whenever its shapes change ([`PairModel::renew_executor`]): every shape
/// is then evaluated by an executor that has seen that shape alone, in an
/// uninterrupted run as in a resumed one. The plain interpreter (the
/// engine's choice for v2 models before the renewal) costs 9-24 % more
/// time per graphed step (benches/results/aimnet2_nl_NVIDIA-H200_2026-12-04,
/// benches/results/executor_NVIDIA-H200_2026-12-04).
fn pair_model_executor() -> bool {
    match std::env::var(JIT_OPTIMIZE_ENV).as_deref() {
        Ok("0") => set_executor_optimize(false),
        Ok("1") => set_executor_optimize(true),
        _ => {}
    }
    OPTIMISING.load(Ordering::Relaxed)
}

/// Calls of a TorchScript method before its executor settles on the
/// optimised graph (one profiling run; one more for safety).
const PROFILING_CALLS: usize = 2;

pub struct TorchScriptModel {
    /// Replaced by [`PairModel::renew_executor`] (a v2 model under the
    /// optimising executor).
    module: RefCell<CModule>,
    /// The file's contents and the device, for a v2 model whose executor
    /// is renewed when its shapes change: the fresh module is the same
    /// file even if the file on disk has changed since.
    renewal: Option<(Vec<u8>, Device)>,
    /// Members per model call; 0 = the whole batch. Set (halving) when a
    /// call runs out of device memory, so large R degrades to several calls
    /// instead of crashing.
    chunk: Cell<usize>,
    path: PathBuf,
    /// Precision of the positions handed to the model.
    dtype: Kind,
    supported: Option<Vec<i64>>,
    metadata: Option<String>,
    /// Rows of the batch `prepare` was called for, while `forward_prepared`
    /// is in use.
    prepared_rows: Cell<Option<i64>>,
    /// `cutoffs()` of a model of interface v2.
    cutoffs: Option<Vec<f64>>,
    /// Rows of the batch a v2 model's `prepare` was called for, while
    /// `forward_pairs_prepared` is in use.
    pairs_prepared_rows: Cell<Option<i64>>,
    /// `takes_charge()` returned True: forward gets the total charges.
    takes_charge: bool,
    /// `periodic()` (optional, default True): whether a v2 model takes
    /// periodic systems.
    periodic: bool,
}

impl TorchScriptModel {
    /// Load a TorchScript file onto `device`.
    pub fn load(path: &Path, device: Device, dtype: Kind) -> Result<Self> {
        if !path.exists() {
            return Err(Error::model(path, "file not found"));
        }
        if path.is_dir() {
            return Err(Error::model(
                path,
                "is a directory; expected a TorchScript file (written by torch.jit.save)",
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::model(path, e.to_string()))?;
        let module = load_module(&bytes, device).map_err(|e| Error::model(path, e))?;
        // Optional self-description; absence is fine, a wrong type is not.
        let supported = match module.method_is::<IValue>("supported_elements", &[]) {
            Ok(v) => Some(element_list(v).map_err(|e| Error::model(path, e))?),
            Err(_) => None,
        };
        let takes_charge = optional_bool(&module, path, "takes_charge", false)?;
        let periodic = optional_bool(&module, path, "periodic", true)?;
        let metadata = match module.method_is::<IValue>("metadata", &[]) {
            Ok(IValue::String(s)) => Some(s),
            _ => None,
        };
        let cutoffs = match module.method_is::<IValue>("cutoffs", &[]) {
            Ok(v) => Some(cutoff_list(v).map_err(|e| Error::model(path, e))?),
            Err(_) => None,
        };
        // after the describing calls above, before any evaluation
        let renews = cutoffs.is_some()
            && pair_model_executor()
            && !std::env::var(KEEP_EXECUTOR_ENV).is_ok_and(|v| v == "1");
        Ok(TorchScriptModel {
            module: RefCell::new(module),
            renewal: renews.then_some((bytes, device)),
            chunk: Cell::new(0),
            path: path.to_path_buf(),
            dtype,
            supported,
            metadata,
            prepared_rows: Cell::new(None),
            cutoffs,
            pairs_prepared_rows: Cell::new(None),
            takes_charge,
            periodic,
        })
    }

    /// The model's `prepare(atomic_numbers, batch)` for `state`'s batch;
    /// Err says why not (no such method: then `prepared`, the method that
    /// would use it, is missing too, and `hint` says what would do).
    fn call_prepare(
        &self,
        state: &BatchState,
        prepared: &str,
        hint: &str,
    ) -> std::result::Result<(), String> {
        let args = [
            IValue::Tensor(state.atomic_numbers.shallow_clone()),
            IValue::Tensor(state.batch.shallow_clone()),
        ];
        self.module
            .borrow()
            .method_is("prepare", &args)
            .map(|_| ())
            .map_err(|e| {
                let e = e.to_string();
                if e.contains("prepare") && (e.contains("not defined") || e.contains("no method")) {
                    format!(
                    "{} has no prepare()/{prepared} methods: its shapes depend on the data {hint}",
                    self.path.display()
                )
                    .trim_end()
                    .to_string()
                } else {
                    format!(
                        "{}: prepare(atomic_numbers, batch) failed: {}",
                        self.path.display(),
                        error_summary(&e)
                    )
                }
            })
    }

    /// The methods of the contract (models/README.md) this file exports, in
    /// contract order. A method is looked up by calling it without
    /// arguments: one that needs arguments fails its argument check before
    /// running anything, one that takes none (cutoffs(), metadata(), ...)
    /// only describes the model.
    pub fn entry_points(&self) -> Vec<&'static str> {
        CONTRACT_METHODS
            .into_iter()
            .filter(
                |name| match self.module.borrow().method_is::<IValue>(name, &[]) {
                    Ok(_) => true,
                    Err(e) => !e.to_string().contains("is not defined"),
                },
            )
            .collect()
    }

    /// Whether the model takes the engine's pairs (interface v2).
    pub fn takes_pairs(&self) -> bool {
        self.cutoffs.is_some()
    }

    /// Whether a v2 model takes periodic systems (`periodic()`, default
    /// True; a gas-phase model with long-range terms says False).
    pub fn takes_periodic(&self) -> bool {
        self.periodic
    }

    /// Err naming the file when this v2 model does not take periodic
    /// systems and `state` is one.
    pub fn check_periodic(&self, state: &BatchState) -> Result<()> {
        if state.cells.is_some() && !self.periodic {
            return Err(Error::model(
                &self.path,
                "is a model for isolated molecules (its periodic() is False: e.g. long-range terms that a periodic sum would need), and this system is periodic",
            ));
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model's `metadata()` string, if it exports one.
    pub fn metadata(&self) -> Option<&str> {
        self.metadata.as_deref()
    }
}

/// Every method the model contracts name (v1, static v1, v2), in the order
/// models/README.md introduces them.
const CONTRACT_METHODS: [&str; 11] = [
    "forward",
    "prepare",
    "forward_prepared",
    "cutoffs",
    "forward_pairs",
    "forward_pairs_prepared",
    "is_prepared",
    "supported_elements",
    "takes_charge",
    "periodic",
    "metadata",
];

/// Whether `methods` hold both entry points of the static path,
/// prepare() and forward_prepared(): `mlff-md compile` needs both.
fn static_entry_points(methods: &[&str]) -> bool {
    methods.contains(&"prepare") && methods.contains(&"forward_prepared")
}

/// What `supported_elements()` returned, as atomic numbers; Err says what
/// was wrong with it.
fn element_list(v: IValue) -> std::result::Result<Vec<i64>, String> {
    match v {
        IValue::IntList(v) => Ok(v),
        IValue::GenericList(v) => v
            .into_iter()
            .map(|x| match x {
                IValue::Int(i) => Ok(i),
                other => Err(format!(
                    "supported_elements() must return List[int], got an element {other:?}"
                )),
            })
            .collect(),
        other => Err(format!(
            "supported_elements() must return List[int], got {other:?}"
        )),
    }
}

/// What `cutoffs()` returned: a non-empty list of positive distances (Å),
/// largest first (the list's cutoff, then the inner ones); Err says what
/// was wrong with it.
fn cutoff_list(v: IValue) -> std::result::Result<Vec<f64>, String> {
    let values = match v {
        IValue::DoubleList(v) => Some(v),
        IValue::GenericList(v) => v
            .into_iter()
            .map(|x| match x {
                IValue::Double(d) => Some(d),
                _ => None,
            })
            .collect(),
        _ => None,
    };
    match values {
        Some(v)
            if !v.is_empty()
                && v.iter().all(|c| c.is_finite() && *c > 0.0)
                && v.windows(2).all(|w| w[1] <= w[0]) =>
        {
            Ok(v)
        }
        values => Err(format!(
            "cutoffs() must return a non-empty List[float] of positive distances (Å), largest first; got {values:?}"
        )),
    }
}

/// An optional `name() -> bool` method of the model: `default` when it
/// does not export one, an error when it returns something else.
fn optional_bool(module: &CModule, path: &Path, name: &str, default: bool) -> Result<bool> {
    match module.method_is::<IValue>(name, &[]) {
        Ok(IValue::Bool(b)) => Ok(b),
        Ok(other) => Err(Error::model(
            path,
            format!("{name}() must return bool, got {other:?}"),
        )),
        Err(_) => Ok(default),
    }
}

/// A TorchScript module from a file's contents, in eval mode; Err says why
/// not.
fn load_module(bytes: &[u8], device: Device) -> std::result::Result<CModule, String> {
    let mut module = CModule::load_data_on_device(&mut std::io::Cursor::new(bytes), device)
        .map_err(|e| {
            format!(
                "not a loadable TorchScript module (expected a file written by torch.jit.save): {}",
                first_line(&e.to_string())
            )
        })?;
    module.set_eval();
    Ok(module)
}

fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s).trim()
}

/// The line of a libtorch error that says what went wrong. An exception
/// inside TorchScript code arrives as "The following operation failed in
/// the TorchScript interpreter." plus a traceback, with the exception
/// itself ("RuntimeError: CUDA out of memory. ...") at the end; the
/// out-of-memory handling looks for that text, and users need it too.
fn error_summary(s: &str) -> &str {
    let lines = || s.lines().map(str::trim).filter(|l| !l.is_empty());
    lines()
        .find(|l| l.contains("out of memory"))
        .or_else(|| {
            lines()
                .rev()
                .find(|l| l.contains("Error: ") || l.starts_with("Error"))
        })
        .unwrap_or_else(|| first_line(s))
}

impl ForceProvider for TorchScriptModel {
    fn describe(&self) -> String {
        format!(
            "TorchScript {} ({:?} positions)",
            self.path.display(),
            self.dtype
        )
    }

    fn supported_elements(&self) -> Option<Vec<i64>> {
        self.supported.clone()
    }

    fn takes_charge(&self) -> bool {
        self.takes_charge
    }

    fn compilable(&self) -> bool {
        !self.takes_charge && !self.takes_pairs() && static_entry_points(&self.entry_points())
    }

    fn prepare_static(&self, state: &BatchState) -> std::result::Result<(), String> {
        self.prepared_rows.set(None);
        self.call_prepare(
            state,
            "forward_prepared()",
            "(a static-shape export such as models/ani1x_static.pt can be captured)",
        )?;
        // TorchScript's profiling executor runs a method's first call
        // unoptimised and every later call through the optimised graph
        // (symbolic autodiff), and the two differ in the last bits of the
        // forces. Spend those calls here, so that every step, in a fresh or a
        // resumed process, sees the optimised numerics: a continued run then
        // matches an uninterrupted one bit for bit.
        for _ in 0..PROFILING_CALLS {
            let _ = self
                .evaluate_prepared(&state.positions, &state.charges, state.n_members as i64)
                .map_err(|e| format!("forward_prepared failed: {e}"))?;
        }
        self.prepared_rows.set(Some(state.positions.size()[0]));
        Ok(())
    }

    fn compute(&self, state: &BatchState) -> Result<ForceOutput> {
        if self.prepared_rows.get() == Some(state.positions.size()[0]) {
            match self.evaluate_prepared(&state.positions, &state.charges, state.n_members as i64) {
                Err(e @ Error::Model { .. }) if e.is_out_of_memory() => {
                    eprintln!(
                        "warning: forward_prepared on {} members ran out of device memory; evaluating with forward() instead",
                        state.n_members
                    );
                    self.prepared_rows.set(None);
                }
                other => {
                    return other.map(|(energies, forces)| ForceOutput {
                        energies,
                        forces: forces.to_kind(state.kind),
                    })
                }
            }
        }
        let r = state.n_members;
        loop {
            let chunk = match self.chunk.get() {
                0 => r,
                c => c.min(r),
            };
            match self.compute_in_chunks(state, chunk) {
                Err(e @ Error::Model { .. }) if e.is_out_of_memory() && chunk > 1 => {
                    let smaller = chunk / 2;
                    eprintln!(
                        "warning: evaluating {chunk} members at once ran out of device memory; evaluating in chunks of {smaller} members (one forward and backward per chunk)"
                    );
                    self.chunk.set(smaller);
                }
                other => return other,
            }
        }
    }
}

impl TorchScriptModel {
    /// Members per call in use (0 = the whole batch in one call).
    pub fn chunk_size(&self) -> usize {
        self.chunk.get()
    }

    /// Energies [S] (float64) and forces [N_tot, 3] of any flat batch of
    /// `n_structures` structures: one forward and one backward. `charges`
    /// ([S] total charges) go to a model that takes them (None: neutral).
    pub fn evaluate(
        &self,
        atomic_numbers: &Tensor,
        positions: &Tensor,
        batch: &Tensor,
        charges: Option<&Tensor>,
        n_structures: i64,
    ) -> Result<(Tensor, Tensor)> {
        let charges = self.charge_argument(charges, n_structures, positions.device());
        let what = match charges {
            Some(_) => "forward(atomic_numbers, positions, batch, charge)",
            None => "forward(atomic_numbers, positions, batch)",
        };
        self.energies_and_forces(positions, n_structures, what, |x| {
            let mut args = vec![atomic_numbers, x, batch];
            args.extend(charges.as_ref());
            self.module.borrow().forward_ts(&args)
        })
    }

    /// Energies and forces through `forward_prepared(positions)` (with
    /// `charges` for a model that takes them), after a successful
    /// [`ForceProvider::prepare_static`] for this batch.
    fn evaluate_prepared(
        &self,
        positions: &Tensor,
        charges: &Tensor,
        n_structures: i64,
    ) -> Result<(Tensor, Tensor)> {
        let charges = self.charge_argument(Some(charges), n_structures, positions.device());
        let what = match charges {
            Some(_) => "forward_prepared(positions, charge)",
            None => "forward_prepared(positions)",
        };
        self.energies_and_forces(positions, n_structures, what, |x| {
            let mut args = vec![x];
            args.extend(charges.as_ref());
            self.module.borrow().method_ts("forward_prepared", &args)
        })
    }

    /// The float32 charges a model that takes them gets (zeros when none
    /// are given); None for a model that takes none.
    fn charge_argument(
        &self,
        charges: Option<&Tensor>,
        n_structures: i64,
        device: Device,
    ) -> Option<Tensor> {
        self.takes_charge.then(|| {
            charges.map_or_else(
                || Tensor::zeros([n_structures], (Kind::Float, device)),
                |q| q.to_kind(Kind::Float),
            )
        })
    }

    /// One model call `call(positions)` (named `what` in errors) and its
    /// backward, with the energies checked.
    fn energies_and_forces(
        &self,
        positions: &Tensor,
        n_structures: i64,
        what: &str,
        call: impl FnOnce(&Tensor) -> std::result::Result<Tensor, tch::TchError>,
    ) -> Result<(Tensor, Tensor)> {
        let positions = positions.to_kind(self.dtype);
        let (energies, forces) = autograd_forces(&positions, |x| {
            let e = call(x).map_err(|e| {
                Error::model(
                    &self.path,
                    format!("{what} failed: {}", error_summary(&e.to_string())),
                )
            })?;
            self.check_energies(&e, n_structures)?;
            Ok(e)
        })?;
        Ok((energies.to_kind(Kind::Double), forces))
    }

    /// Shape, dtype and gradient of a model's energies: metadata, so checking
    /// them costs no device sync.
    fn check_energies(&self, e: &Tensor, n_structures: i64) -> Result<()> {
        if e.size() != [n_structures] {
            return Err(Error::model(
                &self.path,
                format!(
                    "forward returned shape {:?}; expected energies[n_structures] = [{n_structures}]",
                    e.size()
                ),
            ));
        }
        if !matches!(
            e.kind(),
            Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16
        ) {
            return Err(Error::model(
                &self.path,
                format!(
                    "forward returned {:?} energies; expected a floating-point tensor",
                    e.kind()
                ),
            ));
        }
        if !e.requires_grad() {
            return Err(Error::model(
                &self.path,
                "energies do not depend on positions (no gradient); forces cannot be computed",
            ));
        }
        Ok(())
    }

    /// Evaluate the batch `chunk` members at a time (rows of a member are contiguous).
    fn compute_in_chunks(&self, state: &BatchState, chunk: usize) -> Result<ForceOutput> {
        let r = state.n_members;
        let offsets = &state.layout.offsets;
        if chunk >= r {
            let (energies, forces) = self.evaluate(
                &state.atomic_numbers,
                &state.positions,
                &state.batch,
                Some(&state.charges),
                r as i64,
            )?;
            return Ok(ForceOutput {
                energies,
                forces: forces.to_kind(state.kind),
            });
        }
        let mut energies = Vec::new();
        let mut forces = Vec::new();
        for start in (0..r).step_by(chunk) {
            let m = chunk.min(r - start) as i64;
            let first = offsets[start] as i64;
            let end = offsets
                .get(start + m as usize)
                .map_or(state.layout.n_rows(), |&o| o) as i64;
            let rows = |t: &Tensor| t.narrow(0, first, end - first);
            let batch = rows(&state.batch) - start as i64;
            let (e, f) = self.evaluate(
                &rows(&state.atomic_numbers),
                &rows(&state.positions),
                &batch,
                Some(&state.charges.narrow(0, start as i64, m)),
                m,
            )?;
            energies.push(e);
            forces.push(f.to_kind(state.kind));
        }
        Ok(ForceOutput {
            energies: Tensor::cat(&energies, 0),
            forces: Tensor::cat(&forces, 0),
        })
    }

    /// Force evaluation in chunks of `chunk` members from now on (0 = whole batch).
    pub fn set_chunk_size(&self, chunk: usize) {
        self.chunk.set(chunk);
    }
}

impl PairModel for TorchScriptModel {
    fn describe(&self) -> String {
        format!(
            "TorchScript {} (interface v2: engine neighbour list, {:?} pair vectors)",
            self.path.display(),
            self.dtype
        )
    }

    fn cutoffs(&self) -> Vec<f64> {
        self.cutoffs.clone().unwrap_or_default()
    }

    fn dtype(&self) -> Kind {
        self.dtype
    }

    fn supported_elements(&self) -> Option<Vec<i64>> {
        self.supported.clone()
    }

    fn takes_charge(&self) -> bool {
        self.takes_charge
    }

    fn compilable_pairs(&self) -> bool {
        let methods = self.entry_points();
        !self.takes_charge
            && methods.contains(&"prepare")
            && methods.contains(&"forward_pairs_prepared")
    }

    /// The neighbour-list ANI-1x and ANI-1ccx files, by the name their
    /// exporter (python/export_ani_nl.py) writes into their metadata
    /// (ANI-2xt has 7 species, another AEV layout).
    fn triton_kernels(&self) -> bool {
        let name = self
            .metadata()
            .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
            .and_then(|m| m.get("name")?.as_str().map(str::to_string));
        self.compilable_pairs() && matches!(name.as_deref(), Some("ani1x_nl" | "ani1ccx_nl"))
    }

    fn prepare(&self, state: &BatchState) -> std::result::Result<(), String> {
        self.pairs_prepared_rows.set(None);
        self.call_prepare(state, "forward_pairs_prepared()", "")?;
        self.pairs_prepared_rows
            .set(Some(state.positions.size()[0]));
        Ok(())
    }

    fn renew_executor(&self, state: &BatchState) -> Result<bool> {
        let Some((bytes, device)) = &self.renewal else {
            return Ok(false);
        };
        *self.module.borrow_mut() =
            load_module(bytes, *device).map_err(|e| Error::model(&self.path, e))?;
        if self.pairs_prepared_rows.take().is_some() {
            PairModel::prepare(self, state).map_err(|e| Error::model(&self.path, e))?;
        }
        Ok(true)
    }

    fn energies(&self, inputs: &PairInputs) -> Result<Tensor> {
        let p = inputs.pairs;
        let list = |v: &[Tensor]| IValue::TensorList(v.iter().map(Tensor::shallow_clone).collect());
        let rows = inputs.atomic_numbers.size()[0];
        let prepared = self.pairs_prepared_rows.get() == Some(rows);
        let mut args = Vec::with_capacity(7);
        if !prepared {
            args.push(IValue::Tensor(inputs.atomic_numbers.shallow_clone()));
            args.push(IValue::Tensor(inputs.batch.shallow_clone()));
        }
        args.extend([
            IValue::Tensor(p.neighbors.shallow_clone()),
            IValue::Tensor(inputs.vectors.shallow_clone()),
            IValue::Tensor(p.mask.shallow_clone()),
            list(&p.inner_slots),
            list(&p.inner_masks),
        ]);
        let n_structures = inputs.layout.n_members() as i64;
        args.extend(
            self.charge_argument(Some(inputs.charges), n_structures, inputs.vectors.device())
                .map(IValue::Tensor),
        );
        let method = if prepared {
            "forward_pairs_prepared"
        } else {
            "forward_pairs"
        };
        let e = match self.module.borrow().method_is(method, &args) {
            Ok(IValue::Tensor(e)) => e,
            Ok(other) => {
                return Err(Error::model(
                    &self.path,
                    format!("{method} returned {other:?}; expected energies[n_structures]"),
                ))
            }
            Err(e) => {
                return Err(Error::model(
                    &self.path,
                    format!("{method} failed: {}", error_summary(&e.to_string())),
                ))
            }
        };
        self.check_energies(&e, n_structures)?;
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::Molecule;

    #[test]
    fn supported_elements_must_be_a_list_of_integers() {
        assert_eq!(element_list(IValue::IntList(vec![1, 6])), Ok(vec![1, 6]));
        let generic = |v: Vec<IValue>| element_list(IValue::GenericList(v));
        assert_eq!(
            generic(vec![IValue::Int(8), IValue::Int(1)]),
            Ok(vec![8, 1])
        );
        let e = generic(vec![IValue::Int(8), IValue::Double(1.0)]).unwrap_err();
        assert!(e.contains("got an element Double(1.0)"), "{e}");
        let e = element_list(IValue::Double(1.0)).unwrap_err();
        assert!(e.contains("must return List[int], got Double(1.0)"), "{e}");
    }

    #[test]
    fn cutoffs_must_be_positive_distances_largest_first() {
        let list = |v: &[f64]| cutoff_list(IValue::DoubleList(v.to_vec()));
        assert_eq!(list(&[5.2, 3.5]), Ok(vec![5.2, 3.5]));
        assert_eq!(list(&[5.0, 5.0]), Ok(vec![5.0, 5.0]));
        assert_eq!(list(&[1e-3]), Ok(vec![1e-3]));
        let generic = |v: Vec<IValue>| cutoff_list(IValue::GenericList(v));
        assert_eq!(
            generic(vec![IValue::Double(4.0), IValue::Double(2.0)]),
            Ok(vec![4.0, 2.0])
        );
        for bad in [
            list(&[]),
            list(&[3.5, 5.2]),
            list(&[0.0]),
            list(&[-1.0]),
            list(&[5.0, -1.0]),
            list(&[f64::INFINITY]),
            list(&[f64::NAN]),
            generic(vec![IValue::Double(4.0), IValue::Int(2)]),
            cutoff_list(IValue::Double(5.0)),
        ] {
            let e = bad.unwrap_err();
            assert!(
                e.starts_with("cutoffs() must return a non-empty List[float]"),
                "{e}"
            );
        }
    }

    #[test]
    fn the_static_path_needs_both_of_its_entry_points() {
        assert!(static_entry_points(&[
            "forward",
            "prepare",
            "forward_prepared"
        ]));
        assert!(!static_entry_points(&["forward", "forward_prepared"]));
        assert!(!static_entry_points(&["forward", "prepare"]));
        assert!(!static_entry_points(&["forward"]));
    }

    /// A file of this repository loaded for the CPU in float32.
    fn load_file(p: &str) -> Result<TorchScriptModel> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        TorchScriptModel::load(&root.join(p), Device::Cpu, Kind::Float)
    }

    /// `members` copies of two argon atoms `distance` Å apart, in float64 on the CPU.
    fn argon_pairs(distance: f64, members: usize) -> BatchState {
        let argon =
            Molecule::from_symbols(&["Ar", "Ar"], &[[0.0; 3], [distance, 0.0, 0.0]]).unwrap();
        let list: Vec<_> = (0..members).map(|k| (&argon, k)).collect();
        BatchState::from_members(&list, Device::Cpu, Kind::Double)
    }

    /// Held by the tests that load TorchScript files: loading a v2 file
    /// reads the executor switches, which the executor test changes.
    static LOADING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn the_triton_kernels_serve_the_ani_1x_and_1ccx_neighbour_list_files_only() {
        let _serial = LOADING.lock().unwrap_or_else(|e| e.into_inner());
        for (file, serves) in [
            ("models/ani1x_nl.pt", true),
            ("models/ani1ccx_nl.pt", true),
            // 7 species: another AEV layout
            ("models/ani2xt_nl.pt", false),
            // no pairs
            ("models/ani1x_static.pt", false),
            ("models/morse_test.pt", false),
        ] {
            let model = load_file(file).unwrap();
            assert_eq!(PairModel::triton_kernels(&model), serves, "{file}");
        }
    }

    #[test]
    fn a_model_is_described_by_what_it_exports() {
        let _serial = LOADING.lock().unwrap_or_else(|e| e.into_inner());
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let load = load_file;
        let path = |p: &str| root.join(p).display().to_string();
        // v1 with the optional self-description
        let v1 = load("models/morse_test.pt").unwrap();
        assert_eq!(v1.path(), root.join("models/morse_test.pt"));
        assert_eq!(
            ForceProvider::describe(&v1),
            format!(
                "TorchScript {} (Float positions)",
                path("models/morse_test.pt")
            )
        );
        let h_to_ar: Vec<i64> = (1..=18).collect();
        assert_eq!(
            ForceProvider::supported_elements(&v1),
            Some(h_to_ar.clone())
        );
        assert!(v1
            .metadata()
            .is_some_and(|m| m.contains("\"name\": \"morse_test\"")));
        assert_eq!(
            v1.entry_points(),
            ["forward", "supported_elements", "metadata"]
        );
        assert!(!ForceProvider::takes_charge(&v1));
        assert!(!v1.takes_pairs() && v1.takes_periodic() && !v1.compilable());
        // v1 with prepare() and forward_prepared(): can be compiled
        let prepared = load("tests/data/oom_above_3.pt").unwrap();
        assert_eq!(
            prepared.entry_points(),
            ["forward", "prepare", "forward_prepared"]
        );
        assert!(prepared.compilable());
        assert_eq!(ForceProvider::supported_elements(&prepared), None);
        assert_eq!(prepared.metadata(), None);
        // charge
        let charged = load("tests/data/charged_morse.pt").unwrap();
        assert!(ForceProvider::takes_charge(&charged) && PairModel::takes_charge(&charged));
        assert!(!charged.compilable());
        // v2
        let v2 = load("tests/data/lj_pairs_v2.pt").unwrap();
        assert!(v2.takes_pairs() && !v2.compilable());
        // prepare() and forward_pairs_prepared(), no charge: a pt2-v2 package
        assert!(v2.compilable_pairs() && !charged.compilable_pairs());
        assert_eq!(PairModel::cutoffs(&v2), [8.5, 4.5]);
        assert_eq!(PairModel::dtype(&v2), Kind::Float);
        assert!(!PairModel::takes_charge(&v2));
        assert_eq!(
            PairModel::describe(&v2),
            format!(
                "TorchScript {} (interface v2: engine neighbour list, Float pair vectors)",
                path("tests/data/lj_pairs_v2.pt")
            )
        );
        assert_eq!(
            v2.entry_points(),
            [
                "forward",
                "prepare",
                "cutoffs",
                "forward_pairs",
                "forward_pairs_prepared"
            ]
        );
        assert_eq!(PairModel::supported_elements(&v1), Some(h_to_ar));
        // not there, not a file, not TorchScript
        for (p, expected) in [
            ("tests/data/missing.pt", "file not found"),
            ("tests/data", "is a directory"),
            (
                "tests/data/not_torchscript.pt",
                "not a loadable TorchScript module",
            ),
        ] {
            let e = load(p).err().unwrap().to_string();
            assert!(e.contains(expected) && e.contains(&path(p)), "{e}");
        }
    }

    #[test]
    fn a_static_path_needs_prepare_and_forward_prepared() {
        let _serial = LOADING.lock().unwrap_or_else(|e| e.into_inner());
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let load = load_file;
        let state = argon_pairs(3.8, 1);
        let e = load("models/morse_test.pt")
            .unwrap()
            .prepare_static(&state)
            .unwrap_err();
        assert_eq!(
            e,
            format!(
                "{} has no prepare()/forward_prepared() methods: its shapes depend on the data \
                 (a static-shape export such as models/ani1x_static.pt can be captured)",
                root.join("models/morse_test.pt").display()
            )
        );
        assert_eq!(
            load("tests/data/oom_above_3.pt")
                .unwrap()
                .prepare_static(&state),
            Ok(())
        );
        // a prepare() that refuses the batch: its own reason (ANI has no argon)
        let e = load("models/ani1x_static.pt")
            .unwrap()
            .prepare_static(&state)
            .unwrap_err();
        let head = format!(
            "{}: prepare(atomic_numbers, batch) failed: ",
            root.join("models/ani1x_static.pt").display()
        );
        assert!(
            e.starts_with(&head) && e.ends_with("unsupported atomic number(s) [18]"),
            "{e}"
        );
        // a v2 file's prepare() is for forward_pairs_prepared(), which
        // serves batches of the prepared number of rows from then on
        let v2 = load("tests/data/lj_pairs_v2.pt").unwrap();
        assert_eq!(v2.pairs_prepared_rows.get(), None);
        assert_eq!(PairModel::prepare(&v2, &state), Ok(()));
        assert_eq!(v2.pairs_prepared_rows.get(), Some(2));
        let e = v2.prepare_static(&state).unwrap_err();
        assert!(e.starts_with("forward_prepared failed:"), "{e}");
    }

    #[test]
    fn only_running_out_of_memory_sends_the_prepared_path_back_to_forward() {
        let _serial = LOADING.lock().unwrap_or_else(|e| e.into_inner());
        let load = load_file;
        let state = argon_pairs(2.0, 1);
        let reference = load("models/morse_test.pt")
            .unwrap()
            .compute(&state)
            .unwrap();
        // out of memory on its third prepared call: forward() takes over
        let oom = load("tests/data/oom_above_3.pt").unwrap();
        assert_eq!(oom.prepare_static(&state), Ok(()));
        let out = oom.compute(&state).unwrap();
        assert_eq!(
            Vec::<f64>::try_from(&out.energies).unwrap(),
            Vec::<f64>::try_from(&reference.energies).unwrap()
        );
        assert!(out.forces.allclose(&reference.forces, 0.0, 0.0, false));
        // any other failure is the run's error
        let broken = load("tests/data/prepared_fails_after_2.pt").unwrap();
        assert_eq!(broken.prepare_static(&state), Ok(()));
        let e = broken.compute(&state).err().unwrap().to_string();
        assert!(
            e.ends_with("forward_prepared(positions) failed: builtins.RuntimeError: forward_prepared broke (test model: PreparedFailsAfter)"),
            "{e}"
        );
    }

    #[test]
    fn a_member_that_does_not_fit_alone_is_the_runs_error() {
        let _serial = LOADING.lock().unwrap_or_else(|e| e.into_inner());
        let model = load_file("tests/data/oom_always.pt").unwrap();
        let state = argon_pairs(2.0, 2);
        // halved from both members to one, then given up: no chunk of none
        let e = model.compute(&state).err().unwrap().to_string();
        assert!(
            e.contains("forward(atomic_numbers, positions, batch) failed:")
                && e.contains("CUDA out of memory. Tried to allocate 20.00 GiB"),
            "{e}"
        );
        assert_eq!(model.chunk_size(), 1);
    }

    /// Whether a model loaded now renews its executor when its shapes change.
    fn renews(path: &Path, state: &BatchState) -> bool {
        let model = TorchScriptModel::load(path, Device::Cpu, Kind::Float).unwrap();
        model.renew_executor(state).unwrap()
    }

    #[test]
    fn a_pair_model_renews_its_executor_only_under_the_optimising_one() {
        // The executor is a process-wide setting, and so are the switches:
        // the other unit tests that load TorchScript files wait (LOADING),
        // and this one leaves both as the process started (optimising,
        // switches unset).
        let _serial = LOADING.lock().unwrap_or_else(|e| e.into_inner());
        let data = Path::new(env!("CARGO_MANIFEST_DIR"));
        let v2 = data.join("tests/data/lj_pairs_v2.pt");
        let v1 = data.join("models/morse_test.pt");
        let state = argon_pairs(3.8, 1);
        std::env::remove_var(JIT_OPTIMIZE_ENV);
        std::env::remove_var(KEEP_EXECUTOR_ENV);
        assert!(renews(&v2, &state));
        assert!(
            !renews(&v1, &state),
            "a v1 model has no shapes to renew for"
        );
        set_executor_optimize(false);
        assert!(!renews(&v2, &state));
        std::env::set_var(JIT_OPTIMIZE_ENV, "1");
        assert!(renews(&v2, &state));
        std::env::set_var(JIT_OPTIMIZE_ENV, "0");
        assert!(!renews(&v2, &state));
        std::env::set_var(JIT_OPTIMIZE_ENV, "1");
        std::env::set_var(KEEP_EXECUTOR_ENV, "1");
        assert!(!renews(&v2, &state), "the test switch keeps the executor");
        std::env::remove_var(KEEP_EXECUTOR_ENV);
        std::env::remove_var(JIT_OPTIMIZE_ENV);
        // the last switch's choice stays the process's
        assert!(renews(&v2, &state));
        set_executor_optimize(true);
    }

    #[test]
    fn the_exception_line_of_a_torchscript_error_is_kept() {
        let e = "Internal torch error: The following operation failed in the TorchScript interpreter.\n\
Traceback of TorchScript, serialized code (most recent call last):\n  File \"code/__torch__.py\", line 30, in forward\n    _0 = torch.zeros([n])\n\
RuntimeError: CUDA out of memory. Tried to allocate 20.00 GiB\n";
        assert_eq!(
            error_summary(e),
            "RuntimeError: CUDA out of memory. Tried to allocate 20.00 GiB"
        );
        let e = "The following operation failed in the TorchScript interpreter.\nTraceback...\nRuntimeError: got unsupported atomic number(s) [16]\n";
        assert_eq!(
            error_summary(e),
            "RuntimeError: got unsupported atomic number(s) [16]"
        );
        assert_eq!(error_summary("plain message\nsecond"), "plain message");
    }
}
