//! The device neighbour list against brute force: identical pair sets
//! (atom, neighbour, image) within the cutoff, for free members of different
//! sizes and for periodic members in cubic, triclinic and small cells (where
//! an atom sees several images of one neighbour), with atoms anywhere
//! (unwrapped); and the overflow flag when capacities are exceeded.

use std::collections::BTreeSet;

use mlff_md::neighbors::{Boundary, NeighborList};
use mlff_md::rng::HostRng;
use mlff_md::system::cell::Cell;
use tch::{Device, Kind, Tensor};

type Pair = (i64, i64, [i64; 3]);

/// Pair vectors rounded to 1e-6 Å, so pair sets compare exactly.
fn key(d: [f64; 3]) -> [i64; 3] {
    d.map(|x| (x * 1e6).round() as i64)
}

fn brute_force(
    x: &[[f64; 3]],
    member: &[i64],
    cells: Option<&[Cell]>,
    cutoff: f64,
) -> BTreeSet<Pair> {
    let mut set = BTreeSet::new();
    let images: Vec<[f64; 3]> = match cells {
        None => vec![[0.0; 3]],
        Some(_) => (-2..=2)
            .flat_map(|a| {
                (-2..=2).flat_map(move |b| (-2..=2).map(move |c| [a as f64, b as f64, c as f64]))
            })
            .collect(),
    };
    for i in 0..x.len() {
        for j in 0..x.len() {
            if member[i] != member[j] {
                continue;
            }
            for n in &images {
                let shift = match cells {
                    None => [0.0; 3],
                    Some(cs) => {
                        let h = cs[member[i] as usize].matrix;
                        [0, 1, 2].map(|k| n[0] * h[(0, k)] + n[1] * h[(1, k)] + n[2] * h[(2, k)])
                    }
                };
                if i == j && *n == [0.0; 3] {
                    continue;
                }
                let d = [0, 1, 2].map(|k| x[j][k] + shift[k] - x[i][k]);
                if d.iter().map(|v| v * v).sum::<f64>() < cutoff * cutoff {
                    set.insert((i as i64, j as i64, key(d)));
                }
            }
        }
    }
    set
}

fn from_list(nl: &NeighborList, x: &[[f64; 3]]) -> BTreeSet<Pair> {
    let n = x.len();
    let k = nl.max_neighbors as usize;
    let nb = Vec::<i64>::try_from(nl.neighbors.reshape([-1])).unwrap();
    let sh = Vec::<f64>::try_from(nl.shifts.reshape([-1])).unwrap();
    let mask = Vec::<i64>::try_from(nl.mask.to_kind(Kind::Int64).reshape([-1])).unwrap();
    let mut set = BTreeSet::new();
    for i in 0..n {
        for e in 0..k {
            if mask[i * k + e] == 0 {
                continue;
            }
            let j = nb[i * k + e] as usize;
            let s = &sh[(i * k + e) * 3..(i * k + e) * 3 + 3];
            let d = [0, 1, 2].map(|c| x[j][c] + s[c] - x[i][c]);
            let fresh = set.insert((i as i64, j as i64, key(d)));
            assert!(fresh, "pair ({i}, {j}, {d:?}) listed twice");
        }
    }
    set
}

fn tensors(x: &[[f64; 3]], member: &[i64]) -> (Tensor, Tensor) {
    let flat: Vec<f64> = x.iter().flatten().copied().collect();
    (
        Tensor::from_slice(&flat).view([x.len() as i64, 3]),
        Tensor::from_slice(member),
    )
}

fn cells_tensor(cells: &[Cell]) -> Tensor {
    let flat: Vec<f64> = cells.iter().flat_map(|c| c.to_array()).collect();
    Tensor::from_slice(&flat).view([cells.len() as i64, 3, 3])
}

#[test]
fn free_members_match_brute_force() {
    let mut rng = HostRng::new(7);
    // Three members of 10, 25 and 7 atoms, spread over 6, 14 and 3 Å, and
    // listed interleaved (the layout need not be contiguous).
    let sizes = [(10, 6.0), (25, 14.0), (7, 3.0)];
    let mut x = Vec::new();
    let mut member = Vec::new();
    for (m, &(count, spread)) in sizes.iter().enumerate() {
        for _ in 0..count {
            x.push([0; 3].map(|_| rng.uniform() * spread - 20.0 * m as f64));
            member.push(m as i64);
        }
    }
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by_key(|&i| (i * 7919) % x.len());
    let x: Vec<[f64; 3]> = order.iter().map(|&i| x[i]).collect();
    let member: Vec<i64> = order.iter().map(|&i| member[i]).collect();
    let (xt, bt) = tensors(&x, &member);
    for cutoff in [2.5, 4.0] {
        let nl = NeighborList::allocate(&xt, &bt, 3, &Boundary::Free, cutoff).unwrap();
        assert!(!nl.overflowed());
        let want = brute_force(&x, &member, None, cutoff);
        assert!(!want.is_empty());
        assert_eq!(from_list(&nl, &x), want, "cutoff {cutoff}");
    }
}

#[test]
fn periodic_members_match_brute_force() {
    let mut rng = HostRng::new(11);
    let cells = [
        Cell::from_lengths_angles([12.0, 12.0, 12.0], [90.0; 3]).unwrap(),
        Cell::from_lengths_angles([10.0, 11.0, 12.0], [80.0, 95.0, 105.0]).unwrap(),
        // Smaller than twice the cutoff: several images of one neighbour.
        Cell::from_lengths_angles([7.0, 7.5, 8.0], [90.0, 100.0, 90.0]).unwrap(),
    ];
    let mut x = Vec::new();
    let mut member = Vec::new();
    for (m, cell) in cells.iter().enumerate() {
        for _ in 0..40 {
            // Fractional coordinates in [-0.6, 1.6): atoms outside the cell.
            let f = [0; 3].map(|_| rng.uniform() * 2.2 - 0.6);
            let h = cell.matrix;
            x.push([0, 1, 2].map(|k| f[0] * h[(0, k)] + f[1] * h[(1, k)] + f[2] * h[(2, k)]));
            member.push(m as i64);
        }
    }
    let (xt, bt) = tensors(&x, &member);
    let ct = cells_tensor(&cells);
    let cutoff = 4.0;
    let nl = NeighborList::allocate(&xt, &bt, 3, &Boundary::Periodic(&ct), cutoff).unwrap();
    assert!(!nl.overflowed());
    let want = brute_force(&x, &member, Some(&cells), cutoff);
    let got = from_list(&nl, &x);
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
    // The small cell really has pairs seen through two images.
    let mut counts = std::collections::HashMap::new();
    for (i, j, _) in &want {
        *counts.entry((*i, *j)).or_insert(0) += 1;
    }
    assert!(counts.values().any(|&c| c > 1));

    // Moved atoms: an update with the same shapes gives the new pairs.
    let moved: Vec<[f64; 3]> = x
        .iter()
        .map(|p| p.map(|v| v + 0.3 * (rng.uniform() - 0.5)))
        .collect();
    let (mt, _) = tensors(&moved, &member);
    let mut nl = nl;
    nl.update(&mt, &bt, &Boundary::Periodic(&ct));
    assert!(!nl.overflowed());
    assert_eq!(
        from_list(&nl, &moved),
        brute_force(&moved, &member, Some(&cells), cutoff)
    );
}

#[test]
fn exceeded_capacities_raise_the_overflow_flag() {
    let mut rng = HostRng::new(3);
    let x: Vec<[f64; 3]> = (0..30)
        .map(|_| [0; 3].map(|_| rng.uniform() * 10.0))
        .collect();
    let member = vec![0i64; 30];
    let (xt, bt) = tensors(&x, &member);
    let mut nl = NeighborList::allocate(&xt, &bt, 1, &Boundary::Free, 3.0).unwrap();
    assert!(!nl.overflowed());
    // Everything squeezed into one corner: bins and atoms overflow.
    let squeezed = (&xt * 0.05).to_device(Device::Cpu);
    nl.update(&squeezed, &bt, &Boundary::Free);
    assert!(nl.overflowed());
    // A periodic cell that shrinks below the bins' width overflows too.
    let cell = [Cell::from_lengths_angles([10.0; 3], [90.0; 3]).unwrap()];
    let ct = cells_tensor(&cell);
    let mut nl = NeighborList::allocate(&xt, &bt, 1, &Boundary::Periodic(&ct), 3.0).unwrap();
    assert!(!nl.overflowed());
    let smaller = cells_tensor(&[Cell::from_lengths_angles([8.0; 3], [90.0; 3]).unwrap()]);
    nl.update(&xt, &bt, &Boundary::Periodic(&smaller));
    assert!(nl.overflowed());
}
