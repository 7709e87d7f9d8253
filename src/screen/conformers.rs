//! Conformer sampling after the first minimisation: `members` copies of
//! each minimised molecule run Langevin dynamics (BAOAB) at a raised
//! temperature, and `frames` structures of each copy, evenly spaced in
//! time, become new minimisations. Copies of many molecules share each
//! force call. Each copy's random numbers are keyed by (record, copy), so a
//! molecule samples the same frames in any batch.

use std::sync::atomic::{AtomicUsize, Ordering};

use tch::{Device, Kind, Tensor};

use super::config::ConformerConfig;
use super::inflight::{evaluate, Task};
use crate::error::Result;
use crate::force::ForceProvider;
use crate::integrate::{Integrator, Langevin};
use crate::rng::{splitmix64, CounterRng};
use crate::state::BatchState;
use crate::system::Molecule;

/// Steps after which copies are sampled: ceil(k · steps / frames), k = 1..frames.
pub fn sample_steps(c: &ConformerConfig) -> Vec<u64> {
    (1..=c.frames)
        .map(|k| (k * c.steps).div_ceil(c.frames))
        .collect()
}

/// What [`sample`] gives back.
pub struct Sampled {
    /// The frames as minimisation tasks (none when stopped).
    pub tasks: Vec<Task>,
    pub force_calls: u64,
    /// The signal that stopped the sampling between two steps, or 0.
    pub stopped_by: usize,
}

/// The frames of every molecule of `starts` ((record, minimised positions)),
/// as minimisation tasks in record order, copy by copy; batches hold at
/// most `budget` atoms (a molecule's copies stay together). A nonzero
/// `stop` (a signal number) is obeyed before the next step, so Ctrl-C
/// during a long sampling stops within one force call; nothing sampled is
/// kept (a resumed screen samples those molecules again, with the same
/// random numbers).
pub fn sample(
    c: &ConformerConfig,
    force: &dyn ForceProvider,
    molecules: &[Option<Molecule>],
    starts: &[(usize, Vec<[f64; 3]>)],
    (budget, device): (usize, Device),
    stop: Option<&AtomicUsize>,
) -> Result<Sampled> {
    let signal = || stop.map_or(0, |s| s.load(Ordering::SeqCst));
    let m = c.members as usize;
    let at = sample_steps(c);
    let mut tasks = Vec::new();
    let mut force_calls = 0;
    let mut i = 0;
    while i < starts.len() {
        // Molecules of this batch.
        let mut atoms = 0;
        let mut j = i;
        while j < starts.len() {
            let n = m * starts[j].1.len();
            if atoms > 0 && atoms + n > budget {
                break;
            }
            atoms += n;
            j += 1;
        }
        let group = &starts[i..j];
        let members: Vec<(&Molecule, usize)> = group
            .iter()
            .flat_map(|(record, _)| {
                let mol = molecules[*record].as_ref().expect("admitted record");
                (0..m).map(move |copy| (mol, record * m + copy))
            })
            .collect();
        let mut state = BatchState::from_members(&members, device, Kind::Double);
        let flat: Vec<f64> = group
            .iter()
            .flat_map(|(_, x)| std::iter::repeat_n(x, m))
            .flat_map(|x| x.iter().flatten().copied())
            .collect();
        state.positions = Tensor::from_slice(&flat)
            .view([state.layout.n_rows() as i64, 3])
            .to_device(device);
        let mut rng = CounterRng::new(splitmix64(c.seed ^ 0x434f_4e46_4f52_4d53));
        state.set_maxwell_boltzmann(c.temperature, &mut rng);
        let mut integrator = Langevin::new(&state, c.timestep, c.friction, c.temperature, c.seed);
        evaluate(force, &mut state)?;
        force_calls += 1;
        let mut frames: Vec<Vec<f64>> = Vec::with_capacity(at.len());
        for step in 1..=c.steps {
            let stopped_by = signal();
            if stopped_by != 0 {
                return Ok(Sampled {
                    tasks: Vec::new(),
                    force_calls,
                    stopped_by,
                });
            }
            integrator.step(&mut state, force)?;
            force_calls += 1;
            if at.contains(&step) {
                frames.push(state.positions_host());
            }
        }
        for (g, (record, _)) in group.iter().enumerate() {
            for copy in 0..m {
                let slot = g * m + copy;
                let (o, n) = (state.layout.offsets[slot], state.layout.counts[slot]);
                for (f, frame) in frames.iter().enumerate() {
                    tasks.push(Task {
                        record: *record,
                        frame: Some(copy * frames.len() + f),
                        start: Some(
                            (o..o + n)
                                .map(|a| [frame[3 * a], frame[3 * a + 1], frame[3 * a + 2]])
                                .collect(),
                        ),
                    });
                }
            }
        }
        i = j;
    }
    Ok(Sampled {
        tasks,
        force_calls,
        stopped_by: 0,
    })
}
