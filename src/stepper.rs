//! Runs MD steps eagerly or by replaying one captured CUDA graph.
//!
//! A step of a small-molecule MLFF on a GPU is thousands of tiny kernels; the
//! host's launch overhead, not the GPU, sets its time. Captured once in a
//! CUDA graph — integrator updates, the model's forward and backward, the
//! thermostat's random numbers — the step replays with a single launch.
//!
//! What makes a step capturable:
//! * the force provider's work and shapes depend only on the batch
//!   composition ([`ForceProvider::prepare_static`]) and never wait for the
//!   device;
//! * the integrator reads its random keys from a device table it advances
//!   itself ([`Integrator::use_device_keys`]);
//! * every tensor the step reads lives at a fixed address: positions and
//!   velocities are updated in place, and the forces and energies the step
//!   produces are copied into the tensors the next step reads. Anything that
//!   replaces one of them between steps (a checkpoint restore, a blown-up
//!   member's reinitialisation) is noticed before the next replay, which
//!   then recaptures.
//!
//! A force provider that keeps a neighbour list between steps
//! ([`ForceProvider::upkeep`]) gets a second graph: the list's rebuild,
//! replayed before the steps the host schedule says need it.
//!
//! Capture records without running, so host counters advanced while
//! recording (step, draw counter) are wound back afterwards; each replay
//! then does one step on the device and [`Integrator::replayed`] its host
//! bookkeeping. Observables, exchanges and checkpoints stay outside the
//! graph, at their intervals.

use tch::{Device, Tensor};

use crate::config::GraphPolicy;
use crate::cuda_graph::{self, CudaGraph, SideStream};
use crate::error::{Error, Result};
use crate::force::ForceProvider;
use crate::integrate::Integrator;
use crate::state::BatchState;

/// Eager steps before capture: lazy initialisation (cuBLAS workspaces,
/// TorchScript's profiling runs and fused kernels) must happen outside it.
pub const WARMUP_STEPS: usize = 5;

enum Mode {
    Eager,
    /// Graph mode, `left` eager steps before the first capture.
    Warmup {
        left: usize,
    },
    Replay(Captured),
}

struct Captured {
    graph: CudaGraph,
    /// The stored neighbour list's rebuild, where the provider keeps one.
    rebuild: Option<CudaGraph>,
    /// Storage addresses of every tensor the graph reads, at capture.
    inputs: Vec<usize>,
}

/// Steps a simulation, eagerly or through a CUDA graph (see the module docs).
pub struct Stepper {
    mode: Mode,
    policy: GraphPolicy,
    /// Why steps run eagerly, or that they are graphed.
    status: String,
    captures: usize,
    // Dropped last: the graph must go before the stream it was captured on.
    _stream: Option<SideStream>,
}

impl Stepper {
    /// Prepare the force provider's static path (always: it is also the
    /// cheaper eager path) and decide whether steps will be graphed.
    /// `policy = On` makes every reason not to graph an error.
    pub fn new(
        policy: GraphPolicy,
        state: &BatchState,
        force: &dyn ForceProvider,
        integrator: &mut dyn Integrator,
    ) -> Result<Stepper> {
        let static_path = force.prepare_static(state);
        let eager = |why: String| -> Result<Stepper> {
            if policy == GraphPolicy::On {
                return Err(Error::Invalid(format!(
                    "[run] cuda_graphs = \"on\" (or --cuda-graphs on), but {why}"
                )));
            }
            Ok(Stepper {
                mode: Mode::Eager,
                policy,
                status: format!("{why}; steps run eagerly"),
                captures: 0,
                _stream: None,
            })
        };
        if policy == GraphPolicy::Off {
            return eager("CUDA graphs are off".into());
        }
        let Device::Cuda(index) = state.device else {
            return eager(format!(
                "CUDA graphs need a CUDA device, and the device is {}",
                crate::device::describe(state.device)
            ));
        };
        if !cuda_graph::AVAILABLE {
            return eager(CudaGraph::new().err().map(|e| e.0).unwrap_or_default());
        }
        if let Err(why) = static_path {
            return eager(format!("the step cannot be captured: {why}"));
        }
        let stream = match SideStream::enter(index) {
            Ok(s) => s,
            Err(e) => return eager(format!("the step cannot be captured: {e}")),
        };
        integrator.use_device_keys(state);
        Ok(Stepper {
            mode: Mode::Warmup { left: WARMUP_STEPS },
            policy,
            status: format!(
                "CUDA graphs: capturing one step after {WARMUP_STEPS} eager warm-up steps"
            ),
            captures: 0,
            _stream: Some(stream),
        })
    }

    /// One line for the log: graphed or why not.
    pub fn status(&self) -> &str {
        &self.status
    }

    /// Whether steps are being replayed from a graph now.
    pub fn graphed(&self) -> bool {
        matches!(self.mode, Mode::Replay(_))
    }

    /// Graph captures so far (more than one after recaptures).
    pub fn captures(&self) -> usize {
        self.captures
    }

    /// Advance the state by one step.
    pub fn step(
        &mut self,
        state: &mut BatchState,
        force: &dyn ForceProvider,
        integrator: &mut dyn Integrator,
    ) -> Result<()> {
        integrator.before_step(state);
        if let Mode::Replay(captured) = &self.mode {
            if captured.inputs != input_addresses(state, force, integrator) {
                // Replaced storage: the old graph would read stale memory.
                self.capture(state, force, integrator)?;
                integrator.before_step(state);
            }
        }
        let upkeep = force.upkeep();
        match &mut self.mode {
            Mode::Eager => eager_step(state, force, integrator),
            Mode::Warmup { left } => {
                eager_step(state, force, integrator)?;
                *left = left.saturating_sub(1);
                if *left == 0 {
                    self.capture(state, force, integrator)?;
                }
                Ok(())
            }
            Mode::Replay(captured) => {
                if let (Some(u), Some(rebuild)) = (upkeep, &captured.rebuild) {
                    if u.due() {
                        rebuild.replay().map_err(graph_error)?;
                        u.rebuilt();
                    }
                }
                captured.graph.replay().map_err(graph_error)?;
                integrator.replayed(state);
                if let Some(u) = upkeep {
                    u.stepped();
                }
                Ok(())
            }
        }
    }

    /// Record one step; on failure fall back to eager steps (or fail under
    /// policy On). The state is left exactly as it was: capture runs nothing.
    fn capture(
        &mut self,
        state: &mut BatchState,
        force: &dyn ForceProvider,
        integrator: &mut dyn Integrator,
    ) -> Result<()> {
        // The graph records into a private pool that cannot reuse blocks
        // cached by the eager warm-up steps or by a previous graph's pool:
        // drop the old graph and give those blocks back first, or a large
        // batch needs twice its memory (chignolin in water x 32 on an H200:
        // 53 GB of an old pool plus 77 GB cached made the recapture after a
        // neighbour-list regrowth fail for lack of 12 GB).
        self.mode = Mode::Eager;
        cuda_graph::release_cached_memory();
        match record(state, force, integrator) {
            Ok(captured) => {
                self.captures += 1;
                self.mode = Mode::Replay(captured);
                self.status = "CUDA graphs: on (one captured step replayed per step)".into();
                Ok(())
            }
            Err(why) if self.policy != GraphPolicy::On => {
                self.mode = Mode::Eager;
                self.status = format!("CUDA graph capture failed ({why}); steps run eagerly");
                eprintln!("warning: {}", self.status);
                Ok(())
            }
            Err(why) => Err(Error::Simulation(format!(
                "CUDA graph capture failed: {why}"
            ))),
        }
    }
}

/// One step run eagerly, the stored neighbour list rebuilt first if due.
fn eager_step(
    state: &mut BatchState,
    force: &dyn ForceProvider,
    integrator: &mut dyn Integrator,
) -> Result<()> {
    let Some(u) = force.upkeep() else {
        return integrator.step(state, force);
    };
    u.rebuild_if_due(state)?;
    let stepped = as_step(force, || integrator.step(state, force));
    u.stepped();
    stepped
}

/// Run `step` as a step's force call: a stored neighbour list is read as
/// it is, not rebuilt.
fn as_step<T>(force: &dyn ForceProvider, step: impl FnOnce() -> T) -> T {
    let upkeep = force.upkeep();
    if let Some(u) = upkeep {
        u.stepping(true);
    }
    let out = step();
    if let Some(u) = upkeep {
        u.stepping(false);
    }
    out
}

fn graph_error(e: cuda_graph::GraphError) -> Error {
    Error::Simulation(format!("CUDA graph: {e}"))
}

fn address(t: &Tensor) -> usize {
    t.data_ptr() as usize
}

fn input_addresses(
    state: &BatchState,
    force: &dyn ForceProvider,
    integrator: &dyn Integrator,
) -> Vec<usize> {
    let mut v: Vec<usize> = [
        &state.positions,
        &state.velocities,
        &state.forces,
        &state.energies,
        &state.noise_index,
    ]
    .into_iter()
    .map(address)
    .collect();
    v.extend(state.cells.iter().map(address));
    v.extend(integrator.captured_inputs().into_iter().map(address));
    if let Some(u) = force.upkeep() {
        v.extend(u.inputs().iter().map(address));
    }
    v
}

/// Capture one step (and the stored neighbour list's rebuild). Forces and
/// energies computed inside the graph are copied into the tensors the step
/// read them from, so each replay leaves them where the next one (and the
/// reporters) look.
fn record(
    state: &mut BatchState,
    force: &dyn ForceProvider,
    integrator: &mut dyn Integrator,
) -> std::result::Result<Captured, String> {
    // The stored list must exist (the rebuild graph writes into it) and be
    // fresh for the steps replayed before its next rebuild.
    let rebuild = match force.upkeep() {
        Some(u) => {
            u.rebuild_if_due(state).map_err(|e| e.to_string())?;
            let mut graph = CudaGraph::new().map_err(|e| e.0)?;
            graph.capture_begin().map_err(|e| e.0)?;
            match u.rebuild(state) {
                Ok(()) => graph.capture_end().map_err(|e| e.0)?,
                Err(e) => {
                    graph.abort();
                    return Err(e.to_string());
                }
            }
            Some(graph)
        }
        None => None,
    };
    let step = state.step;
    let counter = integrator.rng_counter();
    let forces = state.forces.shallow_clone();
    let energies = state.energies.shallow_clone();
    let mut graph = CudaGraph::new().map_err(|e| e.0)?;
    graph.capture_begin().map_err(|e| e.0)?;
    let stepped = as_step(force, || integrator.step(state, force)).map(|()| {
        let (mut f, mut e) = (forces.shallow_clone(), energies.shallow_clone());
        f.copy_(&state.forces);
        e.copy_(&state.energies);
    });
    let ended = match stepped {
        Ok(()) => graph.capture_end().map_err(|e| e.0),
        Err(e) => {
            graph.abort();
            Err(e.to_string())
        }
    };
    // Nothing ran: put back what recording advanced on the host.
    state.forces = forces;
    state.energies = energies;
    state.step = step;
    if let Some(c) = counter {
        integrator.set_rng_counter(c);
    }
    ended?;
    Ok(Captured {
        graph,
        rebuild,
        inputs: input_addresses(state, force, integrator),
    })
}
