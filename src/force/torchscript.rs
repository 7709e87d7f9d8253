//! The TorchScript force provider: one batched forward and one autograd
//! backward per step for every member.
//!
//! Model interface: `forward(atomic_numbers int64[N_tot], positions
//! float[N_tot, 3] (Å), batch int64[N_tot]) -> energies[n_structures] (eV)`.
//! Optional exported methods read when present: `supported_elements() ->
//! List[int]` and `metadata() -> str`.

use std::path::{Path, PathBuf};

use tch::{CModule, Device, IValue, Kind};

use super::{autograd_forces, ForceOutput, ForceProvider};
use crate::error::{Error, Result};
use crate::state::BatchState;

pub struct TorchScriptModel {
    module: CModule,
    path: PathBuf,
    /// Precision of the positions handed to the model.
    dtype: Kind,
    supported: Option<Vec<i64>>,
    metadata: Option<String>,
}

impl TorchScriptModel {
    /// Load a TorchScript file onto `device`.
    pub fn load(path: &Path, device: Device, dtype: Kind) -> Result<Self> {
        if !path.exists() {
            return Err(Error::model(path, "file not found"));
        }
        let mut module = CModule::load_on_device(path, device).map_err(|e| {
            Error::model(
                path,
                format!(
                    "not a loadable TorchScript module (expected a file written by torch.jit.save): {}",
                    first_line(&e.to_string())
                ),
            )
        })?;
        module.set_eval();
        // Optional self-description; absence is fine, a wrong type is not.
        let supported = match module.method_is::<IValue>("supported_elements", &[]) {
            Ok(IValue::IntList(v)) => Some(v),
            Ok(IValue::GenericList(v)) => Some(
                v.into_iter()
                    .map(|x| match x {
                        IValue::Int(i) => Ok(i),
                        other => Err(Error::model(
                            path,
                            format!("supported_elements() must return List[int], got an element {other:?}"),
                        )),
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
            Ok(other) => {
                return Err(Error::model(
                    path,
                    format!("supported_elements() must return List[int], got {other:?}"),
                ))
            }
            Err(_) => None,
        };
        let metadata = match module.method_is::<IValue>("metadata", &[]) {
            Ok(IValue::String(s)) => Some(s),
            _ => None,
        };
        Ok(TorchScriptModel {
            module,
            path: path.to_path_buf(),
            dtype,
            supported,
            metadata,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model's `metadata()` string, if it exports one.
    pub fn metadata(&self) -> Option<&str> {
        self.metadata.as_deref()
    }
}

fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s).trim()
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

    fn compute(&self, state: &BatchState) -> Result<ForceOutput> {
        let r = state.n_members as i64;
        let positions = state.positions.to_kind(self.dtype);
        let (energies, forces) = autograd_forces(&positions, |x| {
            let e = self
                .module
                .forward_ts(&[&state.atomic_numbers, x, &state.batch])
                .map_err(|e| {
                    Error::model(
                        &self.path,
                        format!(
                            "forward(atomic_numbers, positions, batch) failed: {}",
                            first_line(&e.to_string())
                        ),
                    )
                })?;
            // Shape and dtype are metadata: checking them costs no device sync.
            if e.size() != [r] {
                return Err(Error::model(
                    &self.path,
                    format!(
                        "forward returned shape {:?}; expected energies[n_structures] = [{r}]",
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
            Ok(e)
        })?;
        Ok(ForceOutput {
            energies: energies.to_kind(Kind::Double),
            forces: forces.to_kind(state.kind),
        })
    }
}
