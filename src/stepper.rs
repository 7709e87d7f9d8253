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
    /// Set by [`Stepper::keep_room_for_eager_forces`]: the captured step
    /// must leave room for one eager force evaluation, whose peak is
    /// measured in the last warm-up step.
    keep_room: bool,
    eager_peak: Option<u64>,
    /// The CUDA device of a stepper that may capture.
    cuda_index: Option<usize>,
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
                keep_room: false,
                eager_peak: None,
                cuda_index: None,
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
            keep_room: false,
            eager_peak: None,
            cuda_index: Some(index),
            _stream: Some(stream),
        })
    }

    /// Force evaluations will also run outside the captured step (a
    /// barostat's trial volumes, the pressure): they cannot use the
    /// graph's private memory pool, so under policy Auto a graph that
    /// leaves too little room for one of them is dropped and steps run
    /// eagerly (chignolin in water x 32 on an H200 after a list regrowth:
    /// an 85.5 GiB pool and a 58.3 GiB eager evaluation do not fit in
    /// 140 GiB). Under policy On the graph is kept, with a warning.
    pub fn keep_room_for_eager_forces(&mut self) {
        self.keep_room = true;
    }

    /// The device whose memory must keep that room, when it must.
    fn room_device(&self) -> Option<usize> {
        self.cuda_index.filter(|_| self.keep_room)
    }

    /// Why the graph just captured leaves too little free memory for one
    /// eager force evaluation, if it does. `before`: (bytes reserved by
    /// the allocator, bytes free on the device) before the capture.
    fn too_little_room(&self, before: Option<(u64, u64)>) -> Option<String> {
        let (index, peak, (held, free_before)) = (self.room_device()?, self.eager_peak?, before?);
        let (free, _) = cuda_graph::device_memory(index)?;
        room_verdict(peak, held, free_before, free)
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
        let room = self.room_device();
        match &mut self.mode {
            Mode::Eager => eager_step(state, force, integrator),
            Mode::Warmup { left } => {
                let last = *left <= 1;
                if let (true, Some(index)) = (last, room) {
                    cuda_graph::reset_peak_memory(index);
                }
                eager_step(state, force, integrator)?;
                *left = left.saturating_sub(1);
                if last {
                    if let Some(index) = room {
                        self.eager_peak = cuda_graph::memory_stats(index).map(|(peak, _)| peak);
                    }
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
        let before = self.room_device().and_then(|i| {
            Some((
                cuda_graph::memory_stats(i)?.1,
                cuda_graph::device_memory(i)?.0,
            ))
        });
        match record(state, force, integrator) {
            Ok(captured) => {
                if let Some(why) = self.too_little_room(before) {
                    if self.policy != GraphPolicy::On {
                        drop(captured);
                        cuda_graph::release_cached_memory();
                        self.status = format!("CUDA graphs: off ({why}); steps run eagerly");
                        eprintln!("note: {}", self.status);
                        return Ok(());
                    }
                    eprintln!("warning: {why}; kept because CUDA graphs are \"on\"");
                }
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

/// The rule of [`Stepper::keep_room_for_eager_forces`]: an eager force
/// evaluation needs its measured peak less what was already held when it
/// was measured (`peak - held`, bytes), and a tenth more (the allocator
/// rounds and fragments); None when the `free` bytes left after capture
/// (`free_before` before it) are enough, else why not.
pub fn room_verdict(peak: u64, held: u64, free_before: u64, free: u64) -> Option<String> {
    let need = peak.saturating_sub(held);
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    ((free as f64) < 1.1 * need as f64).then(|| {
        format!(
            "the captured step holds {:.1} GiB of GPU memory, and a force evaluation outside it (barostat, pressure) needs about {:.1} GiB more, with {:.1} GiB free",
            gib(free_before.saturating_sub(free)),
            gib(need),
            gib(free)
        )
    })
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

#[cfg(test)]
mod tests {
    use super::room_verdict;

    const GIB: f64 = (1u64 << 30) as f64;

    fn bytes(gib: f64) -> u64 {
        (gib * GIB) as u64
    }

    /// The two captures of chignolin in water x 32 on an H200 (memory
    /// read by the engine, 2026-12-04): with 34 inner neighbours the
    /// graph fitted beside an eager evaluation (it ran for thousands of
    /// steps); with 35 the eager barostat evaluation ran out of memory.
    #[test]
    fn room_verdict_matches_what_the_h200_allowed() {
        assert_eq!(
            room_verdict(bytes(48.79), bytes(1.625), bytes(137.37), bytes(60.49)),
            None
        );
        let why = room_verdict(bytes(60.13), bytes(1.82), bytes(137.17), bytes(51.72))
            .expect("too little room");
        assert!(
            why.contains("holds 85.5 GiB")
                && why.contains("58.3 GiB more")
                && why.contains("51.7 GiB free"),
            "{why}"
        );
    }

    #[test]
    fn room_verdict_keeps_a_tenth_in_reserve() {
        assert!(room_verdict(bytes(11.0), bytes(1.0), bytes(100.0), bytes(10.5)).is_some());
        assert!(room_verdict(bytes(11.0), bytes(1.0), bytes(100.0), bytes(11.5)).is_none());
    }
}
