//! AOTInductor packages (.pt2) as force providers.
//!
//! Contract pt2-v2 (a neighbour-list model of contract v2, [`AotiPairs`]):
//! `(neighbors, vectors, mask, inner slots..., inner masks...) ->
//! (energies, −∂E/∂vectors)`, compiled for one molecule × R and for the
//! list capacities the run starts with; the engine assembles the forces
//! over its list as for the TorchScript file, which evaluates any list of
//! other capacities. Contract pt2-v1 ([`AotiForces`]):
//!
//! A package from python/export_pt2.py holds one compiled program,
//! `positions float32[N, 3] (Å) -> (energies float64[R] (eV), forces
//! float32[N, 3] (eV/Å))`, with the backward pass compiled in: no autograd
//! and no TorchScript interpreter at run time. AOTInductor fixes every shape
//! when it compiles, so a package is made for one composition: one molecule
//! times R members, named in its metadata (`mlff_md.atomic_numbers`,
//! `mlff_md.replicas`), and for one device kind (`AOTI_DEVICE_KEY`). Loading
//! checks both against the run and says how to export a matching package.
//!
//! libtorch's C++ loader is reached through src/aoti_shim.cpp (tch has no
//! binding); builds without it (see build.rs) refuse .pt2 files with a
//! message saying so.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use super::{ForceOutput, ForceProvider, PairForces, PairInputs, PairModel, TorchScriptModel};
use crate::error::{Error, Result};
use crate::neighbors::Pairs;
use crate::state::BatchState;

/// The contract of packages of static models (positions in, forces out).
pub const INTERFACE: &str = "pt2-v1";

/// The contract of packages of neighbour-list models (the engine's list
/// in, energies and −∂E/∂vectors out).
pub const PAIRS_INTERFACE: &str = "pt2-v2";

/// Whether `path` names an AOTInductor package (by its extension, as
/// torch._inductor writes them).
pub fn is_package(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "pt2")
}

#[cfg(mlff_aoti)]
mod ffi {
    use std::ffi::{c_char, c_int, c_void, CStr, CString};
    use std::path::Path;

    use tch::Tensor;

    extern "C" {
        fn mlff_aoti_last_error() -> *const c_char;
        fn mlff_aoti_load(path: *const c_char, device_index: c_int) -> *mut c_void;
        fn mlff_aoti_free(loader: *mut c_void);
        fn mlff_aoti_run(
            loader: *mut c_void,
            inputs: *mut *mut c_void,
            n_in: c_int,
            out: *mut *mut c_void,
            max_out: c_int,
            n_out: *mut c_int,
            device_index: c_int,
        ) -> c_int;
        fn mlff_aoti_metadata(loader: *mut c_void) -> *mut c_char;
        fn mlff_aoti_free_string(s: *mut c_char);
    }

    fn last_error() -> String {
        // SAFETY: the shim returns its thread-local, NUL-terminated message.
        let msg = unsafe { CStr::from_ptr(mlff_aoti_last_error()) }.to_string_lossy();
        msg.lines().next().unwrap_or("").trim().to_string()
    }

    pub struct Loader(*mut c_void);

    impl Loader {
        pub fn load(path: &Path, device_index: i32) -> Result<Loader, String> {
            let c = CString::new(path.as_os_str().as_encoded_bytes())
                .map_err(|_| "the path holds a NUL byte".to_string())?;
            // SAFETY: a valid C string; a null handle means failure.
            let raw = unsafe { mlff_aoti_load(c.as_ptr(), device_index) };
            if raw.is_null() {
                return Err(last_error());
            }
            Ok(Loader(raw))
        }

        pub fn metadata(&self) -> Result<String, String> {
            // SAFETY: a live loader; the buffer is freed by the shim below.
            let raw = unsafe { mlff_aoti_metadata(self.0) };
            if raw.is_null() {
                return Err(last_error());
            }
            // SAFETY: the shim wrote a NUL-terminated string.
            let text = unsafe { CStr::from_ptr(raw) }
                .to_string_lossy()
                .into_owned();
            // SAFETY: allocated by the shim, freed once.
            unsafe { mlff_aoti_free_string(raw) };
            Ok(text)
        }

        /// Run on `inputs` (borrowed); the outputs are new tensors.
        pub fn run(&self, inputs: &[&Tensor], device_index: i32) -> Result<Vec<Tensor>, String> {
            const MAX_OUT: usize = 8;
            let mut ins: Vec<*mut c_void> =
                inputs.iter().map(|t| t.as_ptr() as *mut c_void).collect();
            let mut outs = [std::ptr::null_mut::<c_void>(); MAX_OUT];
            let mut n_out: c_int = 0;
            // SAFETY: the inputs are live tch tensors (at::Tensor handles)
            // the shim only reads; it writes at most MAX_OUT new handles.
            let rc = unsafe {
                mlff_aoti_run(
                    self.0,
                    ins.as_mut_ptr(),
                    ins.len() as c_int,
                    outs.as_mut_ptr(),
                    MAX_OUT as c_int,
                    &mut n_out,
                    device_index,
                )
            };
            if rc != 0 {
                return Err(last_error());
            }
            Ok(outs[..n_out as usize]
                .iter()
                // SAFETY: each handle is a new at::Tensor the shim allocated;
                // tch's Tensor owns and frees it.
                .map(|&p| unsafe { Tensor::from_ptr(p as *mut torch_sys::C_tensor) })
                .collect())
        }
    }

    impl Drop for Loader {
        fn drop(&mut self) {
            // SAFETY: created by mlff_aoti_load, freed once.
            unsafe { mlff_aoti_free(self.0) }
        }
    }
}

#[cfg(not(mlff_aoti))]
mod ffi {
    use std::path::Path;

    use tch::Tensor;

    const WHY: &str =
        "this build of mlff-md has no AOTInductor loader (libtorch's headers were missing when it was built; see build.rs)";

    pub struct Loader;

    impl Loader {
        pub fn load(_path: &Path, _device_index: i32) -> Result<Loader, String> {
            Err(WHY.into())
        }
        pub fn metadata(&self) -> Result<String, String> {
            Err(WHY.into())
        }
        pub fn run(&self, _inputs: &[&Tensor], _device: i32) -> Result<Vec<Tensor>, String> {
            Err(WHY.into())
        }
    }
}

/// A package opened for a batch: the loader and what its metadata says.
pub struct Package {
    path: PathBuf,
    loader: ffi::Loader,
    /// CUDA device index, or -1 on the CPU.
    device_index: i32,
    compiled: Compiled,
}

impl Package {
    /// Open `path` for `state`'s batch (same molecule, same number of
    /// members, same device kind as the package was compiled for).
    pub fn open(path: &Path, state: &BatchState) -> Result<Package> {
        let bad = |m: String| Error::model(path, m);
        if !path.is_file() {
            return Err(bad("no such file".into()));
        }
        let device_index = match state.device {
            Device::Cuda(i) => i as i32,
            _ => -1,
        };
        let loader = ffi::Loader::load(path, device_index)
            .map_err(|e| bad(format!("is not a loadable AOTInductor package: {e}")))?;
        let compiled = Compiled::from_metadata(&loader.metadata().map_err(bad)?).map_err(bad)?;
        let runs_on = if device_index >= 0 { "cuda" } else { "cpu" };
        let state_numbers = Vec::<i64>::try_from(state.atomic_numbers.to_device(Device::Cpu))
            .map_err(|e| bad(format!("atomic numbers: {e}")))?;
        compiled
            .serves(
                runs_on,
                &state_numbers,
                state.n_members,
                state.layout.uniform_atoms(),
            )
            .map_err(bad)?;
        Ok(Package {
            path: path.to_path_buf(),
            loader,
            device_index,
            compiled,
        })
    }

    /// Whether it is of contract pt2-v2 (the engine's list in).
    pub fn takes_pairs(&self) -> bool {
        self.compiled.pairs.is_some()
    }

    /// Contract pt2-v2: the row and inner capacities of the list it takes.
    pub fn list_capacities(&self) -> Option<(i64, Vec<i64>)> {
        let c = self.compiled.pairs.as_ref()?;
        Some((c.capacity, c.inner.clone()))
    }

    /// What computes the model's terms: "model" (the source file's code) or
    /// the kernel set it was compiled with (`mlff-md compile --kernels`).
    pub fn kernels(&self) -> &str {
        &self.compiled.kernels
    }

    /// SHA-256 of the TorchScript file the package was compiled from, as its
    /// metadata records it.
    pub fn source_sha256(&self) -> Option<&str> {
        self.compiled.source_sha256.as_deref()
    }

    /// The package's outputs for `inputs` (in its contract's order).
    fn run<const N: usize>(&self, inputs: &[&Tensor], names: &str) -> Result<[Tensor; N]> {
        let out = self
            .loader
            .run(inputs, self.device_index)
            .map_err(|e| Error::model(&self.path, format!("failed to run: {e}")))?;
        <[Tensor; N]>::try_from(out).map_err(|o| {
            Error::model(
                &self.path,
                format!("returned {} outputs, not ({names})", o.len()),
            )
        })
    }

    /// The elements of its molecule, sorted.
    fn elements(&self) -> Vec<i64> {
        let mut elements = self.compiled.numbers.clone();
        elements.sort_unstable();
        elements.dedup();
        elements
    }
}

/// A loaded .pt2 package of contract pt2-v1, checked against the batch it
/// will evaluate.
pub struct AotiForces {
    package: Package,
}

impl AotiForces {
    /// Load `path` for `state`'s batch (same molecule, same number of
    /// members, same device kind as the package was compiled for).
    pub fn load(path: &Path, state: &BatchState) -> Result<AotiForces> {
        Self::from_package(Package::open(path, state)?)
    }

    /// An opened package of contract pt2-v1.
    pub fn from_package(package: Package) -> Result<AotiForces> {
        let path = &package.path;
        if package.compiled.pairs.is_some() {
            return Err(Error::model(
                path,
                format!(
                    "is a package of contract {PAIRS_INTERFACE} (a neighbour-list model compiled for fixed list capacities), which runs beside the TorchScript file it was compiled from: `mlff-md compile CONFIG` puts it in the package cache, where runs of that file with [model] compiled = \"auto\" find it"
                ),
            ));
        }
        Ok(AotiForces { package })
    }

    /// SHA-256 of the TorchScript file the package was compiled from, as its
    /// metadata records it.
    pub fn source_sha256(&self) -> Option<&str> {
        self.package.source_sha256()
    }
}

/// A cached package standing in for its TorchScript file: the provider of
/// a pt2-v1 package, or the engine's neighbour list over a pt2-v2 package
/// with the file beside it.
pub enum StandIn {
    Forces(AotiForces),
    Pairs(Box<PairForces>),
}

impl StandIn {
    /// The package at `path` for `state`'s batch, standing in for the
    /// TorchScript file at `source` (SHA-256 `source_sha`, which the
    /// package's metadata must name), that file run in `dtype`; a pt2-v2
    /// package's list reaches `skin` Å beyond the cutoff.
    pub fn open(
        path: &Path,
        source: &Path,
        source_sha: &str,
        state: &BatchState,
        dtype: Kind,
        skin: f64,
    ) -> Result<StandIn> {
        let package = Package::open(path, state)?;
        if package.source_sha256() != Some(source_sha) {
            return Err(Error::model(
                path,
                format!(
                    "is in the package cache under {}'s name but was compiled from a file with SHA-256 {}, not {source_sha}; delete it, or run `mlff-md compile --force`",
                    source.display(),
                    package.source_sha256().unwrap_or("(none recorded)")
                ),
            ));
        }
        if !package.takes_pairs() {
            return Ok(StandIn::Forces(AotiForces::from_package(package)?));
        }
        // The file evaluates the lists the package was not compiled for.
        let file = TorchScriptModel::load(source, state.device, dtype)?;
        file.check_periodic(state)?;
        let pairs = AotiPairs::from_package(package, file)?;
        Ok(StandIn::Pairs(Box::new(PairForces::with_skin(
            Box::new(pairs),
            state,
            skin,
        )?)))
    }

    pub fn into_provider(self) -> Box<dyn ForceProvider> {
        match self {
            StandIn::Forces(f) => Box::new(f),
            StandIn::Pairs(p) => p,
        }
    }
}

/// A package of contract pt2-v2 standing in for the TorchScript file of
/// contract v2 it was compiled from: `(neighbors, vectors, mask, inner
/// slots..., inner masks...) -> (energies, −∂E/∂vectors)`, the backward
/// pass compiled in. It serves lists of the capacities it was compiled for;
/// when the engine's list has others (it grew after an overflow, or came
/// from a checkpoint), the TorchScript file evaluates, with autograd.
pub struct AotiPairs {
    package: Package,
    capacities: ListCapacities,
    fallback: TorchScriptModel,
    /// The file has evaluated since (said once).
    fell_back: Cell<bool>,
}

impl AotiPairs {
    /// An opened package of contract pt2-v2, with `fallback`, the
    /// TorchScript file it was compiled from (the caller checks the hash).
    pub fn from_package(package: Package, fallback: TorchScriptModel) -> Result<AotiPairs> {
        let path = &package.path;
        let Some(capacities) = package.compiled.pairs.clone() else {
            return Err(Error::model(
                path,
                format!(
                    "is a package of contract {INTERFACE} (positions in), not {PAIRS_INTERFACE}"
                ),
            ));
        };
        let cutoffs = PairModel::cutoffs(&fallback);
        if capacities.cutoffs != cutoffs {
            return Err(Error::model(
                path,
                format!(
                    "was compiled for cutoffs {:?} Å and {} has {cutoffs:?} Å",
                    capacities.cutoffs,
                    fallback.path().display()
                ),
            ));
        }
        Ok(AotiPairs {
            package,
            capacities,
            fallback,
            fell_back: Cell::new(false),
        })
    }

    /// Whether the package takes `pairs`' shapes.
    fn fits(&self, pairs: &Pairs) -> bool {
        pairs.neighbors.size()[1] == self.capacities.capacity
            && pairs.inner_slots.len() == self.capacities.inner.len()
            && pairs
                .inner_slots
                .iter()
                .zip(&self.capacities.inner)
                .all(|(t, &k)| t.size()[1] == k)
    }
}

impl PairModel for AotiPairs {
    fn describe(&self) -> String {
        let c = &self.package.compiled;
        format!(
            "AOTInductor package {} (contract {PAIRS_INTERFACE}: compiled for {} × {} atoms, list rows of {} entries, inner {:?}, kernels {}, gradient inside; {} evaluates other lists)",
            self.package.path.display(),
            c.replicas,
            c.numbers.len(),
            self.capacities.capacity,
            self.capacities.inner,
            c.kernels,
            self.fallback.path().display()
        )
    }

    fn cutoffs(&self) -> Vec<f64> {
        self.capacities.cutoffs.clone()
    }

    fn dtype(&self) -> Kind {
        Kind::Float
    }

    fn energies(&self, inputs: &PairInputs) -> Result<Tensor> {
        self.fallback.energies(inputs)
    }

    fn energies_and_minus_grad(&self, inputs: &PairInputs) -> Result<(Tensor, Tensor)> {
        let p = inputs.pairs;
        if !self.fits(p) {
            if !self.fell_back.replace(true) {
                eprintln!(
                    "warning: the neighbour list has rows of {} entries (inner {:?}) and the package {} was compiled for {} (inner {:?}): the TorchScript file evaluates while the list has other shapes (`mlff-md compile CONFIG --resume` compiles a package for the list the latest checkpoint holds, and `mlff-md run CONFIG --resume --allow-model-change` continues on it; `mlff-md compile CONFIG --room 1.6,1.3` gives fresh runs longer rows)",
                    p.neighbors.size()[1],
                    p.inner_slots.iter().map(|t| t.size()[1]).collect::<Vec<_>>(),
                    self.package.path.display(),
                    self.capacities.capacity,
                    self.capacities.inner
                );
            }
            return self.fallback.energies_and_minus_grad(inputs);
        }
        let mut owned = vec![
            p.neighbors.contiguous(),
            inputs.vectors.to_kind(Kind::Float).contiguous(),
            p.mask.contiguous(),
        ];
        owned.extend(p.inner_slots.iter().map(Tensor::contiguous));
        owned.extend(p.inner_masks.iter().map(Tensor::contiguous));
        let args: Vec<&Tensor> = owned.iter().collect();
        let [energies, minus_grad] = self.package.run(&args, "energies, -dE/dvectors")?;
        Ok((energies, minus_grad))
    }

    fn fixed_capacities(&self) -> Option<(i64, Vec<i64>)> {
        Some((self.capacities.capacity, self.capacities.inner.clone()))
    }

    fn prepare(&self, state: &BatchState) -> std::result::Result<(), String> {
        PairModel::prepare(&self.fallback, state)
    }

    fn renew_executor(&self, state: &BatchState) -> Result<bool> {
        self.fallback.renew_executor(state)
    }

    fn supported_elements(&self) -> Option<Vec<i64>> {
        Some(self.package.elements())
    }
}

/// The list shape a pt2-v2 package was compiled for.
#[derive(Debug, Clone, PartialEq)]
struct ListCapacities {
    /// Entries per row (K).
    capacity: i64,
    /// Slots per row of each inner list.
    inner: Vec<i64>,
    /// Å, descending: the model's cutoffs.
    cutoffs: Vec<f64>,
}

/// What a package's metadata says it was compiled for.
#[derive(Debug, PartialEq)]
struct Compiled {
    /// The molecule's atomic numbers (each member's).
    numbers: Vec<i64>,
    replicas: usize,
    /// "cpu" or "cuda" (AOTI_DEVICE_KEY; "cpu" when absent).
    device: String,
    source_sha256: Option<String>,
    /// Contract pt2-v2: the list shape it takes.
    pairs: Option<ListCapacities>,
    /// What computes the model's terms (`mlff_md.kernels`): "model" (the
    /// source file's own code; also packages from before the key existed)
    /// or a kernel set of `mlff-md compile --kernels`.
    kernels: String,
}

impl Compiled {
    /// From the package's metadata ("key=value" lines); Err says what is
    /// missing or unreadable.
    fn from_metadata(text: &str) -> std::result::Result<Compiled, String> {
        let meta = parse_metadata(text);
        let get = |k: &str| {
            meta.get(k).ok_or_else(|| {
                format!(
                    "has no `{k}` in its metadata: not a package from python/export_pt2.py (contract {INTERFACE} or {PAIRS_INTERFACE})"
                )
            })
        };
        let interface = get("mlff_md.interface")?;
        if interface != INTERFACE && interface != PAIRS_INTERFACE {
            return Err(format!(
                "names contract {interface:?}; this engine reads {INTERFACE} and {PAIRS_INTERFACE}"
            ));
        }
        let list = |k: &str| -> std::result::Result<Vec<String>, String> {
            Ok(get(k)?
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect())
        };
        let pairs = if interface == PAIRS_INTERFACE {
            let unreadable = |k: &str| format!("has an unreadable {k}");
            let capacity = get("mlff_md.capacity")?
                .parse::<i64>()
                .ok()
                .filter(|&k| k > 0)
                .ok_or_else(|| unreadable("mlff_md.capacity"))?;
            let inner = list("mlff_md.inner_capacities")?
                .iter()
                .map(|v| v.parse::<i64>().ok().filter(|&k| k > 0))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| unreadable("mlff_md.inner_capacities"))?;
            let cutoffs = list("mlff_md.cutoffs")?
                .iter()
                .map(|v| v.parse::<f64>().ok().filter(|&c| c > 0.0))
                .collect::<Option<Vec<_>>>()
                .filter(|c| c.len() == inner.len() + 1)
                .ok_or_else(|| unreadable("mlff_md.cutoffs"))?;
            Some(ListCapacities {
                capacity,
                inner,
                cutoffs,
            })
        } else {
            None
        };
        let numbers = get("mlff_md.atomic_numbers")?
            .split(',')
            .map(|z| z.trim().parse::<i64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| "has unreadable mlff_md.atomic_numbers".to_string())?;
        let replicas = get("mlff_md.replicas")?
            .parse()
            .map_err(|_| "has an unreadable mlff_md.replicas".to_string())?;
        Ok(Compiled {
            numbers,
            replicas,
            device: meta
                .get("AOTI_DEVICE_KEY")
                .map_or("cpu", String::as_str)
                .to_string(),
            source_sha256: meta.get("mlff_md.source_sha256").cloned(),
            pairs,
            kernels: meta
                .get("mlff_md.kernels")
                .map_or("model", String::as_str)
                .to_string(),
        })
    }

    /// Whether the package can evaluate a batch on `runs_on` ("cpu" or
    /// "cuda") of `n_members` members with these atomic numbers (all
    /// members' atoms in order) and `uniform_atoms` atoms in each member
    /// (None: members differ in size); Err says why not and what to do.
    fn serves(
        &self,
        runs_on: &str,
        numbers: &[i64],
        n_members: usize,
        uniform_atoms: Option<usize>,
    ) -> std::result::Result<(), String> {
        if self.device != runs_on {
            return Err(format!(
                "was compiled for {} and this run is on {runs_on}; export a package for it: python python/export_pt2.py ... --device {runs_on}",
                self.device
            ));
        }
        let n = self.numbers.len();
        let same = n_members == self.replicas
            && numbers.len() == n * self.replicas
            && numbers
                .chunks(n.max(1))
                .all(|m| m == self.numbers.as_slice())
            && uniform_atoms == Some(n);
        if !same {
            return Err(format!(
                "was compiled for {} member(s) of one {n}-atom molecule, and this run has {n_members} member(s) of {} atoms in all (or other elements); a package fixes its shapes: export one for this system with python/export_pt2.py --structure ... --replicas {n_members}",
                self.replicas,
                numbers.len(),
            ));
        }
        Ok(())
    }
}

/// "key=value" lines into a map.
fn parse_metadata(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl ForceProvider for AotiForces {
    fn describe(&self) -> String {
        let c = &self.package.compiled;
        format!(
            "AOTInductor package {} (compiled for {} × {} atoms, forces inside)",
            self.package.path.display(),
            c.replicas,
            c.numbers.len()
        )
    }

    fn compute(&self, state: &BatchState) -> Result<ForceOutput> {
        let x = state.positions.to_kind(Kind::Float).contiguous();
        let [energies, forces] = self.package.run(&[&x], "energies, forces")?;
        Ok(ForceOutput {
            energies: energies.to_kind(Kind::Double),
            forces: forces.to_kind(state.kind),
        })
    }

    fn supported_elements(&self) -> Option<Vec<i64>> {
        Some(self.package.elements())
    }

    /// Every shape is fixed at compile time and the loader runs
    /// single-threaded (src/aoti_shim.cpp), so a step is capturable: on an
    /// H200 a graphed run gave the eager run's energies and frames bit for
    /// bit (benches/gpu_pt2_check.sh, benches/results/pt2_NVIDIA-H200_2026-12-04).
    fn prepare_static(&self, _state: &BatchState) -> std::result::Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WATER_X2: &str = "AOTI_DEVICE_KEY=cuda\nmlff_md.interface=pt2-v1\n\
        mlff_md.atomic_numbers=8, 1,1\nmlff_md.replicas=2\nmlff_md.source_sha256=ab=cd\nnot a pair\n";

    #[test]
    fn the_metadata_names_what_a_package_was_compiled_for() {
        assert_eq!(
            Compiled::from_metadata(WATER_X2),
            Ok(Compiled {
                numbers: vec![8, 1, 1],
                replicas: 2,
                device: "cuda".into(),
                source_sha256: Some("ab=cd".into()),
                pairs: None,
                kernels: "model".into(),
            })
        );
        // no device key: a CPU package; no source hash: none recorded
        let cpu = "mlff_md.interface=pt2-v1\nmlff_md.atomic_numbers=18\nmlff_md.replicas=1";
        let c = Compiled::from_metadata(cpu).unwrap();
        assert_eq!((c.device.as_str(), c.source_sha256), ("cpu", None));
        // a kernel set, as `compile --kernels` records it
        let triton = Compiled::from_metadata(&format!("{WATER_X2}mlff_md.kernels=triton\n"));
        assert_eq!(triton.unwrap().kernels, "triton");
        let without = |key: &str| -> String {
            WATER_X2
                .lines()
                .filter(|l| !l.starts_with(key))
                .collect::<Vec<_>>()
                .join("\n")
        };
        for key in [
            "mlff_md.interface",
            "mlff_md.atomic_numbers",
            "mlff_md.replicas",
        ] {
            assert_eq!(
                Compiled::from_metadata(&without(key)),
                Err(format!(
                    "has no `{key}` in its metadata: not a package from python/export_pt2.py (contract pt2-v1 or pt2-v2)"
                ))
            );
        }
        let with = |from: &str, to: &str| Compiled::from_metadata(&WATER_X2.replace(from, to));
        assert_eq!(
            with("pt2-v1", "pt2-v3"),
            Err("names contract \"pt2-v3\"; this engine reads pt2-v1 and pt2-v2".into())
        );
        assert_eq!(
            with("8, 1,1", "8,H,1"),
            Err("has unreadable mlff_md.atomic_numbers".into())
        );
        assert_eq!(
            with("replicas=2", "replicas=-2"),
            Err("has an unreadable mlff_md.replicas".into())
        );
    }

    #[test]
    fn a_pair_package_names_the_list_shape_it_takes() {
        let v2 = WATER_X2.replace("pt2-v1", "pt2-v2")
            + "mlff_md.capacity=43\nmlff_md.inner_capacities=22\nmlff_md.cutoffs=5.2,3.5\n";
        assert_eq!(
            Compiled::from_metadata(&v2).unwrap().pairs,
            Some(ListCapacities {
                capacity: 43,
                inner: vec![22],
                cutoffs: vec![5.2, 3.5],
            })
        );
        // no inner lists: an empty entry
        let plain = v2
            .replace("inner_capacities=22", "inner_capacities=")
            .replace("cutoffs=5.2,3.5", "cutoffs=6");
        let c = Compiled::from_metadata(&plain).unwrap().pairs.unwrap();
        assert_eq!((c.inner, c.cutoffs), (vec![], vec![6.0]));
        for (from, to, key) in [
            ("capacity=43", "capacity=0", "mlff_md.capacity"),
            ("capacity=43", "capacity=x", "mlff_md.capacity"),
            (
                "inner_capacities=22",
                "inner_capacities=22,-1",
                "mlff_md.inner_capacities",
            ),
            ("cutoffs=5.2,3.5", "cutoffs=5.2", "mlff_md.cutoffs"),
            ("cutoffs=5.2,3.5", "cutoffs=5.2,nan", "mlff_md.cutoffs"),
        ] {
            assert_eq!(
                Compiled::from_metadata(&v2.replace(from, to)).map(|c| c.pairs),
                Err(format!("has an unreadable {key}")),
                "{to}"
            );
        }
        let missing = v2.replace("mlff_md.capacity=43\n", "");
        assert!(Compiled::from_metadata(&missing)
            .unwrap_err()
            .starts_with("has no `mlff_md.capacity`"));
        // a v1 package names none
        assert_eq!(Compiled::from_metadata(WATER_X2).unwrap().pairs, None);
    }

    #[test]
    fn a_package_serves_only_the_batch_it_was_compiled_for() {
        let water = Compiled::from_metadata(WATER_X2).unwrap();
        let two = [8, 1, 1, 8, 1, 1];
        assert_eq!(water.serves("cuda", &two, 2, Some(3)), Ok(()));
        assert_eq!(
            water.serves("cpu", &two, 2, Some(3)),
            Err("was compiled for cuda and this run is on cpu; export a package for it: python python/export_pt2.py ... --device cpu".into())
        );
        let refused = |numbers: &[i64], members: usize, uniform: Option<usize>| {
            let e = water.serves("cuda", numbers, members, uniform).unwrap_err();
            assert!(
                e.starts_with(&format!(
                    "was compiled for 2 member(s) of one 3-atom molecule, and this run has {members} member(s) of {} atoms in all",
                    numbers.len()
                )) && e.ends_with(&format!("--replicas {members}")),
                "{e}"
            );
        };
        refused(&[8, 1, 1], 1, Some(3)); // fewer members
        refused(&[8, 1, 1, 8, 1, 1, 8, 1, 1], 3, Some(3)); // more
        refused(&[8, 1, 1, 1, 8, 1], 2, Some(3)); // other order
        refused(&[8, 1, 1, 8, 1, 1, 1], 2, None); // members of other sizes
        refused(&[8, 1, 1, 8, 1, 1], 2, None);
        refused(&[8, 1, 8, 1, 1, 1], 2, Some(3)); // a member of another molecule
    }
}
