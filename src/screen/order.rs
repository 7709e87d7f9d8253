//! The order in which a screen's molecules enter the batch.
//!
//! A model of interface v2 gets each atom's neighbours as a row padded to
//! the longest row of the batch, and ANI-style models compute every slot
//! pair of every row (models/README.md): a batch costs about N x Ka^2 for
//! N atoms and Ka slots, Ka set by the most crowded atom in any member.
//! Drug-like molecules differ: in the MOSES library the most crowded atom
//! of a molecule has 13 to 24 neighbours within ANI's 3.5 Å, so a batch of
//! a few thousand molecules in library order always pads to nearly the
//! library's worst row. Entering molecules in order of their most crowded
//! row keeps each batch's rows close to what its members need. Results do
//! not depend on the order (each molecule's minimisation is its own), only
//! the cost does; a model without a neighbour list keeps the library order.

use std::collections::VecDeque;

use rayon::prelude::*;

use super::inflight::Task;
use crate::system::Molecule;

/// For each cutoff (Å), the largest number of other atoms within it of any
/// one atom of `positions`.
pub fn densest_rows(positions: &[[f64; 3]], cutoffs: &[f64]) -> Vec<usize> {
    let mut most = vec![0; cutoffs.len()];
    let squared: Vec<f64> = cutoffs.iter().map(|c| c * c).collect();
    let mut counts = vec![0; cutoffs.len()];
    for (i, a) in positions.iter().enumerate() {
        counts.fill(0);
        for (j, b) in positions.iter().enumerate() {
            if i == j {
                continue;
            }
            let d2: f64 = (0..3).map(|k| (a[k] - b[k]).powi(2)).sum();
            for (count, c2) in counts.iter_mut().zip(&squared) {
                *count += usize::from(d2 < *c2);
            }
        }
        for (m, c) in most.iter_mut().zip(&counts) {
            *m = (*m).max(*c);
        }
    }
    most
}

/// `tasks` in order of their molecules' most crowded rows, innermost cutoff
/// first (then the next cutoff out), ties in their given order; unchanged
/// when `cutoffs` is None (a model that takes no neighbour list).
pub fn crowded_last(
    tasks: VecDeque<Task>,
    molecules: &[Option<Molecule>],
    cutoffs: Option<&[f64]>,
) -> VecDeque<Task> {
    let Some(cutoffs) = cutoffs else {
        return tasks;
    };
    let innermost_first: Vec<f64> = cutoffs.iter().rev().copied().collect();
    // (Molecule holds a chemfiles frame, which is not Sync: the positions
    // are picked out before the parallel part.)
    let starts: Vec<Option<&[[f64; 3]]>> = tasks
        .iter()
        .map(|task| {
            let m = molecules[task.record].as_ref()?;
            Some(task.start.as_ref().unwrap_or(&m.structures[0]).as_slice())
        })
        .collect();
    let keys: Vec<Vec<usize>> = starts
        .par_iter()
        .map(|start| start.map_or_else(Vec::new, |x| densest_rows(x, &innermost_first)))
        .collect();
    let mut keyed: Vec<(Vec<usize>, Task)> = keys.into_iter().zip(tasks).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed.into_iter().map(|(_, task)| task).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn densest_rows_counts_the_most_crowded_atom_per_cutoff() {
        // A chain 1 Å apart: the middle atoms see 2 within 1.5 Å, 4 within 2.5 Å.
        let chain: Vec<[f64; 3]> = (0..5).map(|i| [i as f64, 0.0, 0.0]).collect();
        assert_eq!(densest_rows(&chain, &[2.5, 1.5]), vec![4, 2]);
        // exactly at the cutoff is outside (the engine's list keeps d < rc)
        assert_eq!(densest_rows(&chain, &[1.0]), vec![0]);
        assert_eq!(densest_rows(&[[0.0; 3]], &[5.0]), vec![0]);
    }

    fn task(record: usize) -> Task {
        Task {
            record,
            start: None,
            frame: None,
        }
    }

    #[test]
    fn molecules_with_crowded_rows_enter_last() {
        let line = |n: usize, gap: f64| -> Vec<[f64; 3]> {
            (0..n).map(|i| [i as f64 * gap, 0.0, 0.0]).collect()
        };
        let molecule = |positions: Vec<[f64; 3]>| {
            let symbols = vec!["C"; positions.len()];
            Some(Molecule::from_symbols(&symbols, &positions).unwrap())
        };
        // keys (within 1.5 Å, within 2.5 Å): (2, 4), (0, 2), (2, 2), not
        // screened, (0, 2), (2, 3)
        let molecules = vec![
            molecule(line(5, 1.0)),
            molecule(line(3, 2.0)),
            molecule(line(3, 1.0)),
            None,
            molecule(line(6, 2.0)),
            molecule(line(4, 1.0)),
        ];
        let cutoffs = [2.5, 1.5];
        let tasks: VecDeque<Task> = [0, 1, 2, 4, 5].map(task).into();
        let order = |tasks: VecDeque<Task>, cutoffs| -> Vec<usize> {
            crowded_last(tasks, &molecules, cutoffs)
                .iter()
                .map(|t| t.record)
                .collect()
        };
        assert_eq!(order(tasks.clone(), Some(&cutoffs)), [1, 4, 2, 5, 0]);
        // no list: the given order
        assert_eq!(order(tasks.clone(), None), [0, 1, 2, 4, 5]);
        // a task that starts elsewhere is keyed by where it starts
        let mut spread = task(0);
        spread.start = Some(line(5, 3.0));
        let tasks: VecDeque<Task> = vec![task(2), spread].into();
        assert_eq!(order(tasks, Some(&cutoffs)), [0, 2]);
    }
}
