//! AOTInductor packages (.pt2) as a force provider.
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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use super::{ForceOutput, ForceProvider};
use crate::error::{Error, Result};
use crate::state::BatchState;

/// The contract a package's metadata must name.
pub const INTERFACE: &str = "pt2-v1";

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

/// A loaded .pt2 package, checked against the batch it will evaluate.
pub struct AotiForces {
    path: PathBuf,
    loader: ffi::Loader,
    /// CUDA device index, or -1 on the CPU.
    device_index: i32,
    replicas: usize,
    atoms: usize,
    elements: Vec<i64>,
    /// SHA-256 of the TorchScript file it was compiled from (metadata
    /// `mlff_md.source_sha256`).
    source_sha256: Option<String>,
}

impl AotiForces {
    /// Load `path` for `state`'s batch (same molecule, same number of
    /// members, same device kind as the package was compiled for).
    pub fn load(path: &Path, state: &BatchState) -> Result<AotiForces> {
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
        let meta = parse_metadata(&loader.metadata().map_err(bad)?);
        let get = |k: &str| {
            meta.get(k).ok_or_else(|| {
                bad(format!(
                    "has no `{k}` in its metadata: not a package from python/export_pt2.py (contract {INTERFACE})"
                ))
            })
        };
        let interface = get("mlff_md.interface")?;
        if interface != INTERFACE {
            return Err(bad(format!(
                "names contract {interface:?}; this engine reads {INTERFACE}"
            )));
        }
        let numbers: Vec<i64> = get("mlff_md.atomic_numbers")?
            .split(',')
            .map(|z| z.trim().parse::<i64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad("has unreadable mlff_md.atomic_numbers".into()))?;
        let replicas: usize = get("mlff_md.replicas")?
            .parse()
            .map_err(|_| bad("has an unreadable mlff_md.replicas".into()))?;
        let compiled_for = meta.get("AOTI_DEVICE_KEY").map_or("cpu", String::as_str);
        let runs_on = if device_index >= 0 { "cuda" } else { "cpu" };
        if compiled_for != runs_on {
            return Err(bad(format!(
                "was compiled for {compiled_for} and this run is on {runs_on}; export a package for it: python python/export_pt2.py ... --device {runs_on}"
            )));
        }
        let state_numbers = Vec::<i64>::try_from(state.atomic_numbers.to_device(Device::Cpu))
            .map_err(|e| bad(format!("atomic numbers: {e}")))?;
        let n = numbers.len();
        let same = state.n_members == replicas
            && state_numbers.len() == n * replicas
            && state_numbers
                .chunks(n.max(1))
                .all(|m| m == numbers.as_slice())
            && state.layout.uniform_atoms() == Some(n);
        if !same {
            return Err(bad(format!(
                "was compiled for {replicas} member(s) of one {n}-atom molecule, and this run has {} member(s) of {} atoms in all (or other elements); a package fixes its shapes: export one for this system with python/export_pt2.py --structure ... --replicas {}",
                state.n_members,
                state_numbers.len(),
                state.n_members
            )));
        }
        let mut elements = numbers.clone();
        elements.sort_unstable();
        elements.dedup();
        Ok(AotiForces {
            path: path.to_path_buf(),
            loader,
            device_index,
            replicas,
            atoms: n,
            elements,
            source_sha256: meta.get("mlff_md.source_sha256").cloned(),
        })
    }
}

impl AotiForces {
    /// SHA-256 of the TorchScript file the package was compiled from, as its
    /// metadata records it.
    pub fn source_sha256(&self) -> Option<&str> {
        self.source_sha256.as_deref()
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
        format!(
            "AOTInductor package {} (compiled for {} × {} atoms, forces inside)",
            self.path.display(),
            self.replicas,
            self.atoms
        )
    }

    fn compute(&self, state: &BatchState) -> Result<ForceOutput> {
        let x = state.positions.to_kind(Kind::Float).contiguous();
        let out = self
            .loader
            .run(&[&x], self.device_index)
            .map_err(|e| Error::model(&self.path, format!("failed to run: {e}")))?;
        let [energies, forces] = <[Tensor; 2]>::try_from(out).map_err(|o| {
            Error::model(
                &self.path,
                format!("returned {} outputs, not (energies, forces)", o.len()),
            )
        })?;
        Ok(ForceOutput {
            energies: energies.to_kind(Kind::Double),
            forces: forces.to_kind(state.kind),
        })
    }

    fn supported_elements(&self) -> Option<Vec<i64>> {
        Some(self.elements.clone())
    }

    /// Every shape is fixed at compile time and the loader runs
    /// single-threaded (src/aoti_shim.cpp), so a step is capturable: on an
    /// H200 a graphed run gave the eager run's energies and frames bit for
    /// bit (benches/gpu_pt2_check.sh, benches/results/pt2_NVIDIA-H200_2026-12-04).
    fn prepare_static(&self, _state: &BatchState) -> std::result::Result<(), String> {
        Ok(())
    }
}
