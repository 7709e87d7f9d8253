//! Force providers: anything that maps the batched positions to one energy per
//! member and the forces on every atom. Providers know nothing of integrators.

use tch::Tensor;

use crate::error::{Result, TorchContext};
use crate::neighbors::ListShape;
use crate::state::BatchState;

pub mod analytic;
pub mod aoti;
pub mod pairs;
pub mod torchscript;

pub use analytic::{Harmonic, LennardJones};
pub use aoti::AotiForces;
pub use pairs::{LennardJonesPairs, PairForces, PairInputs, PairModel};
pub use torchscript::TorchScriptModel;

/// Energies and forces of the whole batch from one evaluation.
pub struct ForceOutput {
    /// [R] float64, eV.
    pub energies: Tensor,
    /// [R*N, 3] in the state's precision, eV/Å.
    pub forces: Tensor,
}

pub trait ForceProvider {
    /// One line for logs and metadata.
    fn describe(&self) -> String;

    /// Evaluate every member of the batch at `state.positions` in one call.
    /// Must not synchronise with the host: checks of values (finiteness)
    /// happen where observables are pulled.
    fn compute(&self, state: &BatchState) -> Result<ForceOutput>;

    /// Whether [`ForceProvider::virial`] gives each member's virial.
    fn gives_virial(&self) -> bool {
        false
    }

    /// Each member's virial W = −Σ v·∂E/∂v over the pair vectors v the
    /// energy depends on ([R] float64, eV), at `state.positions`, from one
    /// more evaluation: −∂E/∂V under a homogeneous scaling of positions
    /// and cell is W/(3V), so the pressure is (2 K + W)/(3 V). Only
    /// providers that see pair vectors (interface v2) can give it; the
    /// others say so.
    fn virial(&self, _state: &BatchState) -> Result<Tensor> {
        Err(crate::error::Error::Invalid(format!(
            "{} gives no virial (pressure needs a pair model, interface v2)",
            self.describe()
        )))
    }

    /// Elements the provider can handle, if it says (None = any).
    fn supported_elements(&self) -> Option<Vec<i64>> {
        None
    }

    /// Whether the provider takes a total charge per structure
    /// (`state.charges`); a charged input for one that does not is refused
    /// unless allowed explicitly.
    fn takes_charge(&self) -> bool {
        false
    }

    /// Whether python/export_pt2.py can compile the provider into a package
    /// (`mlff-md compile`): a static-shape TorchScript model of positions
    /// alone (prepare() and forward_prepared(), no charge, no pairs).
    fn compilable(&self) -> bool {
        false
    }

    /// Whether `mlff-md compile --kernels triton*` serves the provider: a
    /// neighbour-list ANI file whose AEV layout python/angular_triton.py's
    /// kernels take (4 species, 10 species pairs, 8 x 4 angular terms:
    /// ANI-1x and ANI-1ccx).
    fn triton_kernels(&self) -> bool {
        false
    }

    /// Switch to an evaluation of `state`'s batch whose work and tensor
    /// shapes depend only on the batch composition and that never waits for
    /// the device, so one step can be captured in a CUDA graph. Called once
    /// per batch layout; `Err` says why the provider cannot (it then keeps
    /// working as before). The analytic providers are static already.
    fn prepare_static(&self, _state: &BatchState) -> std::result::Result<(), String> {
        Ok(())
    }

    /// What ran out of room (a neighbour list's capacities) since the list
    /// was sized, if anything: results computed since then may lack pairs.
    /// One small host copy; asked where values leave the device anyway.
    fn overflow(&self) -> Option<String> {
        None
    }

    /// Make room after an overflow, for `state` and everything met so far.
    /// The caller then redoes the steps since its last check (and captures
    /// again: shapes change).
    fn grow(&self, _state: &BatchState) -> Result<()> {
        Ok(())
    }

    /// The batch's members changed (a screen let finished molecules leave
    /// and new ones enter): size whatever depends on the composition (a
    /// neighbour list) for `state`, whose positions are those of the next
    /// evaluation.
    fn rebatch(&self, _state: &BatchState) -> Result<()> {
        Ok(())
    }

    /// The shape of the provider's neighbour list, if it has one: part of
    /// the checkpoint, so a continued run builds the same lists.
    fn list_shape(&self) -> Option<ListShape> {
        None
    }

    /// Take a neighbour-list shape from a checkpoint.
    fn set_list_shape(&self, _shape: ListShape, _state: &BatchState) -> Result<()> {
        Ok(())
    }

    /// The provider's stored neighbour list, if it keeps one between steps
    /// (a skin): the stepper rebuilds it on its schedule.
    fn upkeep(&self) -> Option<&dyn ListUpkeep> {
        None
    }
}

/// A neighbour list kept between steps and rebuilt on a host schedule.
/// Force calls inside [`ListUpkeep::stepping`] read the stored list; any
/// other call (a minimiser's, a barostat's trial) rebuilds it first and
/// leaves it due, so the next step rebuilds it for its own positions.
pub trait ListUpkeep {
    /// Whether the next step must rebuild the list first.
    fn due(&self) -> bool;

    /// Rebuild the list for `state` into the tensors steps read (no host
    /// sync, capturable; no bookkeeping: see [`ListUpkeep::rebuilt`]).
    fn rebuild(&self, state: &BatchState) -> Result<()>;

    /// A rebuild ran.
    fn rebuilt(&self);

    /// Force calls from now until `stepping(false)` are a step's.
    fn stepping(&self, on: bool);

    /// A step ran.
    fn stepped(&self);

    /// Positions or cells changed outside the steps: rebuild before the
    /// next one.
    fn invalidate(&self);

    /// The tensors a captured step reads (their storage must not change
    /// between capture and replay).
    fn inputs(&self) -> Vec<Tensor>;

    /// Rebuild now if due (eagerly), with the bookkeeping.
    fn rebuild_if_due(&self, state: &BatchState) -> Result<()> {
        if self.due() {
            self.rebuild(state)?;
            self.rebuilt();
        }
        Ok(())
    }
}

/// Evaluate energies and forces and store them in the state.
pub fn update_forces(state: &mut BatchState, provider: &dyn ForceProvider) -> Result<()> {
    let out = provider.compute(state)?;
    state.energies = out.energies;
    state.forces = out.forces;
    Ok(())
}

/// Forces by autograd of a per-member energy function: one backward for the
/// whole batch. `energy` maps positions (requiring grad) to energies [R].
pub(crate) fn autograd_forces(
    positions: &Tensor,
    energy: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<(Tensor, Tensor)> {
    tch::with_grad(|| {
        let x = positions.detach().set_requires_grad(true);
        let e = energy(&x)?;
        let grads = Tensor::f_run_backward(&[e.sum(None)], &[&x], false, false)
            .torch_context(|| "computing forces by autograd".into())?;
        let forces = -grads
            .into_iter()
            .next()
            .expect("run_backward returns one gradient per input");
        Ok((e.detach(), forces))
    })
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind};

    use super::{ForceProvider, Harmonic};
    use crate::state::BatchState;
    use crate::system::Molecule;

    /// What a provider claims when it says nothing: no virial (and an
    /// error naming why), any element, no charge, not compilable, no list.
    #[test]
    fn a_provider_that_says_nothing_claims_nothing() {
        let m = Molecule::from_symbols(&["O", "H"], &[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]).unwrap();
        let state = BatchState::new(&m, 1, Device::Cpu, Kind::Double);
        let h = Harmonic::at_current_positions(&state, 1.0);
        assert!(!h.gives_virial());
        let err = h.virial(&state).unwrap_err().to_string();
        assert!(err.contains("gives no virial"), "{err}");
        assert_eq!(h.supported_elements(), None);
        assert!(!h.takes_charge());
        assert!(!h.compilable());
        assert!(h.list_shape().is_none() && h.overflow().is_none() && h.upkeep().is_none());
    }
}
