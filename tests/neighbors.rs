//! The device neighbour list against brute force: identical pair sets
//! (atom, neighbour, image) within the cutoff, for free members of different
//! sizes (cell grid) and of equal size (dense grid), and for periodic members
//! in cubic, triclinic and small cells (where an atom sees several images of
//! one neighbour), with atoms anywhere (unwrapped); every entry's reverse
//! entry is the same pair seen from the neighbour; inner slot lists equal
//! brute force at their cutoff; exceeded capacities are reported and
//! growing the list makes room.

mod common;

use std::collections::BTreeSet;

use mlff_md::neighbors::{Boundary, Grid, NeighborList, Pairs};
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

/// Pair set of a built list; also checks that every used entry's reverse
/// entry names the pair from the other side (neighbour i, vector −v).
fn from_list(pairs: &Pairs, x: &[[f64; 3]]) -> BTreeSet<Pair> {
    let n = x.len();
    let k = pairs.neighbors.size()[1] as usize;
    let nb = Vec::<i64>::try_from(pairs.neighbors.reshape([-1])).unwrap();
    let sh: Vec<f64> = match &pairs.shifts {
        Some(s) => Vec::<f64>::try_from(s.reshape([-1])).unwrap(),
        None => vec![0.0; n * k * 3],
    };
    let mask = Vec::<i64>::try_from(pairs.mask.to_kind(Kind::Int64).reshape([-1])).unwrap();
    let rev = Vec::<i64>::try_from(pairs.reverse.reshape([-1])).unwrap();
    let vector = |e: usize| {
        let (i, j) = (e / k, nb[e] as usize);
        [0, 1, 2].map(|c| x[j][c] + sh[e * 3 + c] - x[i][c])
    };
    let mut set = BTreeSet::new();
    for i in 0..n {
        for e in i * k..(i + 1) * k {
            if mask[e] == 0 {
                assert_eq!(nb[e], i as i64, "unused entries point at their own row");
                assert_eq!(rev[e], (n * k) as i64, "unused entries have no reverse");
                continue;
            }
            let j = nb[e] as usize;
            let d = vector(e);
            let r = rev[e] as usize;
            assert!(
                r < n * k && mask[r] == 1,
                "entry {e} ({i} -> {j}) has no reverse"
            );
            assert_eq!((r / k, nb[r] as usize), (j, i), "reverse of ({i} -> {j})");
            assert_eq!(
                key(vector(r)),
                key(d.map(|v| -v)),
                "reverse vector of ({i} -> {j})"
            );
            let fresh = set.insert((i as i64, j as i64, key(d)));
            assert!(fresh, "pair ({i}, {j}, {d:?}) listed twice");
        }
    }
    set
}

/// Pairs of every row's inner slot list `c`.
fn inner_set(pairs: &Pairs, x: &[[f64; 3]], c: usize) -> BTreeSet<Pair> {
    let n = x.len();
    let k = pairs.neighbors.size()[1] as usize;
    let kc = pairs.inner_slots[c].size()[1] as usize;
    let slots = Vec::<i64>::try_from(pairs.inner_slots[c].reshape([-1])).unwrap();
    let used =
        Vec::<i64>::try_from(pairs.inner_masks[c].to_kind(Kind::Int64).reshape([-1])).unwrap();
    let all: Vec<Pair> = {
        // Entry-by-entry pairs, in entry order, for lookup by (row, entry).
        let nb = Vec::<i64>::try_from(pairs.neighbors.reshape([-1])).unwrap();
        let sh: Vec<f64> = match &pairs.shifts {
            Some(s) => Vec::<f64>::try_from(s.reshape([-1])).unwrap(),
            None => vec![0.0; n * k * 3],
        };
        (0..n * k)
            .map(|e| {
                let (i, j) = (e / k, nb[e] as usize);
                (
                    i as i64,
                    j as i64,
                    key([0, 1, 2].map(|q| x[j][q] + sh[e * 3 + q] - x[i][q])),
                )
            })
            .collect()
    };
    let mut set = BTreeSet::new();
    for i in 0..n {
        let mut last = -1;
        for m in 0..kc {
            if used[i * kc + m] == 0 {
                continue;
            }
            let entry = slots[i * kc + m];
            assert!(
                entry > last,
                "inner slots of row {i} in increasing entry order"
            );
            last = entry;
            assert!(set.insert(all[i * k + entry as usize]));
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

/// `per_cell` random atoms in each cell (member m in cells[m]), at
/// fractional coordinates in [-0.6, 1.6): many outside the cell.
fn atoms_in_cells(rng: &mut HostRng, cells: &[Cell], per_cell: usize) -> (Vec<[f64; 3]>, Vec<i64>) {
    let mut x = Vec::new();
    let mut member = Vec::new();
    for (m, cell) in cells.iter().enumerate() {
        for _ in 0..per_cell {
            let f = [0; 3].map(|_| rng.uniform() * 2.2 - 0.6);
            let h = cell.matrix;
            x.push([0, 1, 2].map(|k| f[0] * h[(0, k)] + f[1] * h[(1, k)] + f[2] * h[(2, k)]));
            member.push(m as i64);
        }
    }
    (x, member)
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
    for (cutoff, skin) in [(2.5, 0.0), (4.0, 0.0), (2.5, 1.0), (4.0, 1.5)] {
        let nl = NeighborList::allocate(&xt, &bt, 3, None, &Boundary::Free, &[cutoff, 2.0], skin)
            .unwrap();
        assert!(matches!(nl.shape.grid, Grid::Cells { .. }));
        let pairs = nl.update(&xt, &bt, &Boundary::Free);
        assert_eq!(nl.overflow(), None);
        let want = brute_force(&x, &member, None, cutoff);
        assert!(!want.is_empty());
        assert_eq!(from_list(&pairs, &x), want, "cutoff {cutoff}, skin {skin}");
        assert_eq!(
            inner_set(&pairs, &x, 0),
            brute_force(&x, &member, None, 2.0)
        );
    }
}

#[test]
fn free_members_of_different_sizes_are_listed_densely() {
    let mut rng = HostRng::new(11);
    // Contiguous members of 10, 25, 1 and 7 atoms (a screen's batch of
    // different molecules): the dense grid, padded to 25 candidates.
    let sizes = [(10, 6.0), (25, 9.0), (1, 1.0), (7, 3.0)];
    let mut x = Vec::new();
    let mut member = Vec::new();
    for (m, &(count, spread)) in sizes.iter().enumerate() {
        for _ in 0..count {
            x.push([0; 3].map(|_| rng.uniform() * spread + 25.0 * m as f64));
            member.push(m as i64);
        }
    }
    let (xt, bt) = tensors(&x, &member);
    // Rows compacted (4 Å), and whole (14 Å: every atom of the largest
    // member is a neighbour, so rows hold all 25 candidates in place).
    for (cutoffs, whole) in [([4.0, 2.5], false), ([14.0, 2.5], true)] {
        let dense =
            NeighborList::allocate(&xt, &bt, 4, Some(25), &Boundary::Free, &cutoffs, 0.0).unwrap();
        assert_eq!(dense.shape.grid, Grid::Dense { atoms: 25 });
        assert_eq!(dense.shape.rows_whole(), whole, "{:?}", dense.shape);
        let pairs = dense.update(&xt, &bt, &Boundary::Free);
        assert_eq!(dense.overflow(), None);
        let want = brute_force(&x, &member, None, cutoffs[0]);
        assert!(want.len() > 100, "{}", want.len());
        if whole {
            assert_eq!(pairs.neighbors.size(), [43, 25]);
        }
        assert_eq!(from_list(&pairs, &x), want);
        assert_eq!(
            inner_set(&pairs, &x, 0),
            brute_force(&x, &member, None, cutoffs[1])
        );
        assert!(pairs.differences.is_none(), "padded rows take gathers");
        forces_assemble_pairs(&pairs, &xt, &x, &member, cutoffs[0]);
    }
}

/// Forces assembled through the reverse entries: with every entry's
/// −dE/dv set to its own vector, atom i gets Σ_j 2 (x_i − x_j) over its
/// pairs (its entries and their reverses).
fn forces_assemble_pairs(pairs: &Pairs, xt: &Tensor, x: &[[f64; 3]], member: &[i64], cutoff: f64) {
    let f = common::host(&pairs.forces(&pairs.vectors(xt, Kind::Double)));
    let all = brute_force(x, member, None, cutoff);
    for (i, xi) in x.iter().enumerate() {
        let mut want = [0.0; 3];
        for &(_, j, _) in all.iter().filter(|p| p.0 == i as i64) {
            for k in 0..3 {
                want[k] += 2.0 * (xi[k] - x[j as usize][k]);
            }
        }
        for k in 0..3 {
            assert!(
                (f[3 * i + k] - want[k]).abs() < 1e-9,
                "atom {i}: {:?} vs {want:?}",
                &f[3 * i..3 * i + 3]
            );
        }
    }
}

#[test]
fn equal_free_members_are_listed_densely_with_the_same_pairs() {
    let mut rng = HostRng::new(5);
    // Four members of 12 atoms, contiguous: the dense grid.
    let x: Vec<[f64; 3]> = (0..48)
        .map(|i| [0; 3].map(|_| rng.uniform() * 7.0 + 30.0 * (i / 12) as f64))
        .collect();
    let member: Vec<i64> = (0..48).map(|i| i / 12).collect();
    let (xt, bt) = tensors(&x, &member);
    // Rows compacted (3.5 Å) and whole (9 Å: rows hold every candidate).
    for (cutoffs, whole) in [([3.5, 2.2], false), ([9.0, 2.2], true)] {
        let dense =
            NeighborList::allocate(&xt, &bt, 4, Some(12), &Boundary::Free, &cutoffs, 0.0).unwrap();
        assert_eq!(dense.shape.grid, Grid::Dense { atoms: 12 });
        assert_eq!(dense.shape.rows_whole(), whole, "{:?}", dense.shape);
        let cells =
            NeighborList::allocate(&xt, &bt, 4, None, &Boundary::Free, &cutoffs, 0.0).unwrap();
        let (dp, cp) = (
            dense.update(&xt, &bt, &Boundary::Free),
            cells.update(&xt, &bt, &Boundary::Free),
        );
        let want = brute_force(&x, &member, None, cutoffs[0]);
        assert_eq!(from_list(&dp, &x), want);
        assert_eq!(from_list(&cp, &x), want);
        let inner = brute_force(&x, &member, None, cutoffs[1]);
        assert_eq!(inner_set(&dp, &x, 0), inner);
        assert_eq!(inner_set(&cp, &x, 0), inner);
        // Whole rows of equal members take their vectors and forces from
        // the refine's differences and the square's transpose: the same
        // vectors bit for bit as the gathers, and the same forces.
        assert_eq!(dp.differences.is_some(), whole);
        forces_assemble_pairs(&dp, &xt, &x, &member, cutoffs[0]);
        if whole {
            let mut gathered = dense.update(&xt, &bt, &Boundary::Free);
            gathered.differences = None;
            for kind in [Kind::Double, Kind::Float] {
                let (v, w) = (dp.vectors(&xt, kind), gathered.vectors(&xt, kind));
                assert!(v.equal(&w), "vectors in {kind:?}");
            }
            tch::manual_seed(3);
            let h = Tensor::randn([48, 12, 3], (Kind::Double, Device::Cpu));
            let (f, g) = (dp.forces(&h), gathered.forces(&h));
            let scale = g.abs().max().double_value(&[]);
            let diff = (&f - &g).abs().max().double_value(&[]);
            assert!(
                diff <= 1e-14 * scale,
                "forces differ by {diff} (largest {scale})"
            );
        }
        // A list made from a stored shape (a checkpoint's) builds the same
        // entries, bit for bit.
        for list in [&dense, &cells] {
            let again = NeighborList::with_shape(list.shape.clone(), &bt, 4, &Boundary::Free);
            let (a, b) = (
                list.update(&xt, &bt, &Boundary::Free),
                again.update(&xt, &bt, &Boundary::Free),
            );
            assert!(a.neighbors.equal(&b.neighbors) && a.reverse.equal(&b.reverse));
            assert!(a.inner_slots[0].equal(&b.inner_slots[0]));
        }
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
    let (x, member) = atoms_in_cells(&mut rng, &cells, 40);
    let (xt, bt) = tensors(&x, &member);
    let ct = cells_tensor(&cells);
    let cutoff = 4.0;
    let boundary = Boundary::Periodic(&ct);
    for skin in [0.0, 1.0] {
        let nl =
            NeighborList::allocate(&xt, &bt, 3, None, &boundary, &[cutoff, 3.0], skin).unwrap();
        let pairs = nl.update(&xt, &bt, &boundary);
        assert_eq!(nl.overflow(), None);
        let want = brute_force(&x, &member, Some(&cells), cutoff);
        let got = from_list(&pairs, &x);
        assert_eq!(
            inner_set(&pairs, &x, 0),
            brute_force(&x, &member, Some(&cells), 3.0)
        );
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
        let pairs = nl.update(&mt, &bt, &boundary);
        assert_eq!(nl.overflow(), None);
        assert_eq!(
            from_list(&pairs, &moved),
            brute_force(&moved, &member, Some(&cells), cutoff)
        );
    }
}

#[test]
fn exceeded_capacities_are_reported_and_growing_makes_room() {
    let mut rng = HostRng::new(3);
    let x: Vec<[f64; 3]> = (0..30)
        .map(|_| [0; 3].map(|_| rng.uniform() * 10.0))
        .collect();
    let member = vec![0i64; 30];
    let (xt, bt) = tensors(&x, &member);
    for uniform in [None, Some(30)] {
        let mut nl =
            NeighborList::allocate(&xt, &bt, 1, uniform, &Boundary::Free, &[3.0, 2.0], 0.0)
                .unwrap();
        let _ = nl.update(&xt, &bt, &Boundary::Free);
        assert_eq!(nl.overflow(), None);
        // Everything squeezed into one corner: bins and rows overflow.
        let squeezed = (&xt * 0.05).to_device(Device::Cpu);
        let _ = nl.update(&squeezed, &bt, &Boundary::Free);
        let what = nl.overflow().expect("overflow reported");
        // A cell grid runs out of bin room first (rows then see only what
        // the bins held); the dense grid out of row room.
        let first = if uniform.is_some() {
            "neighbours in a row"
        } else {
            "atoms in a bin"
        };
        assert!(what.contains(first), "{what}");
        assert!(what.contains("within 2 Å"), "{what}");
        // The report stays until the list is grown. Growing makes room for
        // what was seen; a full bin hides how full the rows would be (and
        // full rows how full the inner rows), so the cell grid takes more
        // rounds, as the engine's rollback loop does.
        let _ = nl.update(&xt, &bt, &Boundary::Free);
        assert!(nl.overflow().is_some());
        let mut rounds = 0;
        let pairs = loop {
            nl.grow(&xt, &bt, 1, uniform, &Boundary::Free).unwrap();
            rounds += 1;
            let pairs = nl.update(&squeezed, &bt, &Boundary::Free);
            if nl.overflow().is_none() {
                break pairs;
            }
        };
        assert!(rounds <= 3, "{rounds} rounds: {:?}", nl.shape);
        let small: Vec<[f64; 3]> = x.iter().map(|p| p.map(|v| v * 0.05)).collect();
        assert_eq!(
            from_list(&pairs, &small),
            brute_force(&small, &member, None, 3.0)
        );
    }
    // A periodic cell that shrinks below the bins' width overflows too.
    let cell = [Cell::from_lengths_angles([10.0; 3], [90.0; 3]).unwrap()];
    let ct = cells_tensor(&cell);
    let nl =
        NeighborList::allocate(&xt, &bt, 1, None, &Boundary::Periodic(&ct), &[3.0], 0.0).unwrap();
    let _ = nl.update(&xt, &bt, &Boundary::Periodic(&ct));
    assert_eq!(nl.overflow(), None);
    let smaller = cells_tensor(&[Cell::from_lengths_angles([8.0; 3], [90.0; 3]).unwrap()]);
    let _ = nl.update(&xt, &bt, &Boundary::Periodic(&smaller));
    assert!(nl.overflow().unwrap().contains("shrank"));
    // A cell narrower than the cutoff is refused at allocation.
    let narrow = cells_tensor(&[Cell::from_lengths_angles([10.0, 10.0, 2.5], [90.0; 3]).unwrap()]);
    let e = NeighborList::allocate(&xt, &bt, 1, None, &Boundary::Periodic(&narrow), &[3.0], 0.0)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("along c is 2.500 Å, less than the cutoff"),
        "{e}"
    );
}

/// A stored (skin) list refined for moved positions gives exactly the
/// entries a list built at those positions gives (same neighbours, shifts,
/// reverse entries and inner slots, bit for bit), in periodic cubic,
/// triclinic and small cells and for free members, also after the cells
/// change (a barostat's scaling); the check reports the displacement and
/// an atom beyond half the skin.
#[test]
fn a_stored_list_refined_for_moved_atoms_equals_a_fresh_build() {
    let mut rng = HostRng::new(23);
    let cells = [
        Cell::from_lengths_angles([13.0, 13.0, 13.0], [90.0; 3]).unwrap(),
        Cell::from_lengths_angles([12.0, 12.5, 13.0], [80.0, 95.0, 105.0]).unwrap(),
        Cell::from_lengths_angles([8.0, 8.5, 9.0], [90.0, 100.0, 90.0]).unwrap(),
    ];
    let (x, member) = atoms_in_cells(&mut rng, &cells, 50);
    let (xt, bt) = tensors(&x, &member);
    let ct = cells_tensor(&cells);
    let same = |a: &Pairs, b: &Pairs| {
        assert!(a.neighbors.equal(&b.neighbors), "neighbours");
        assert!(a.mask.equal(&b.mask), "mask");
        assert!(a.reverse.equal(&b.reverse), "reverse");
        match (&a.shifts, &b.shifts) {
            (Some(p), Some(q)) => assert!(p.equal(q), "shifts"),
            (None, None) => {}
            _ => panic!("shifts on one side only"),
        }
        for (p, q) in a.inner_slots.iter().zip(&b.inner_slots) {
            assert!(p.equal(q), "inner slots");
        }
    };
    let skin = 1.0;
    for periodic in [true, false] {
        let boundary = match periodic {
            true => Boundary::Periodic(&ct),
            false => Boundary::Free,
        };
        let nl = NeighborList::allocate(&xt, &bt, 3, None, &boundary, &[4.0, 3.0], skin).unwrap();
        assert_eq!(nl.shape.skin, skin);
        let outer = nl
            .build(&xt, &bt, &boundary)
            .expect("a cell grid stores its list");
        // Every atom moved by less than half the skin.
        let moved: Vec<[f64; 3]> = x
            .iter()
            .map(|p| p.map(|v| v + 0.55 * (rng.uniform() - 0.5)))
            .collect();
        let (mt, _) = tensors(&moved, &member);
        let refined = nl.refine(Some(&outer), &mt, &bt, &boundary);
        let (problem, by) = nl.check();
        assert_eq!(problem, None);
        assert!(by > 0.1 && by < 0.5 * skin, "moved {by}");
        let fresh = nl.update(&mt, &bt, &boundary);
        same(&refined, &fresh);
        let cutoffs_pairs = brute_force(&moved, &member, periodic.then_some(&cells[..]), 4.0);
        assert_eq!(from_list(&refined, &moved), cutoffs_pairs);
        if periodic {
            // Cells and positions scaled by 0.99 (as a barostat does), then
            // the list rebuilt: the same entries as a fresh build.
            let scaled_cells = &ct * 0.99;
            let sb = Boundary::Periodic(&scaled_cells);
            let sx = &mt * 0.99;
            let stored = nl.build(&sx, &bt, &sb).unwrap();
            same(
                &nl.refine(Some(&stored), &sx, &bt, &sb),
                &nl.update(&sx, &bt, &sb),
            );
        }
        // One atom beyond half the skin: reported.
        let mut far = x.clone();
        far[7][0] += 0.6 * skin;
        let (ft, _) = tensors(&far, &member);
        let _ = nl.refine(Some(&outer), &ft, &bt, &boundary);
        let (problem, by) = nl.check();
        assert!(
            problem
                .as_deref()
                .is_some_and(|p| p.contains("an atom moved 0.600 Å")),
            "{problem:?}"
        );
        assert!((by - 0.6).abs() < 1e-9);
    }
}

/// A [`PairModel`] that counts its evaluations and executor renewals
/// (Lennard-Jones inside).
struct Counting {
    inner: mlff_md::force::LennardJonesPairs,
    renews: bool,
    calls: std::rc::Rc<std::cell::Cell<usize>>,
    renewals: std::rc::Rc<std::cell::Cell<usize>>,
}

impl mlff_md::force::PairModel for Counting {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn cutoffs(&self) -> Vec<f64> {
        self.inner.cutoffs()
    }
    fn dtype(&self) -> Kind {
        self.inner.dtype()
    }
    fn energies(&self, inputs: &mlff_md::force::PairInputs) -> mlff_md::error::Result<Tensor> {
        self.calls.set(self.calls.get() + 1);
        self.inner.energies(inputs)
    }
    fn renew_executor(&self, _state: &mlff_md::state::BatchState) -> mlff_md::error::Result<bool> {
        self.renewals.set(self.renewals.get() + 1);
        Ok(self.renews)
    }
}

/// Whenever the list's shapes change (a checkpoint's shape, a growth) the
/// model is told before it sees them, so TorchScript's optimising executor
/// can start afresh (a resumed run then evaluates every shape as the
/// uninterrupted run did; the GPU test
/// gpu_list_grown_before_checkpoint_resumes_byte_for_byte shows what
/// breaks otherwise), and a renewed model's first two calls are spent
/// before the next evaluation, as after a preparation. The spent calls
/// change no result.
#[test]
fn new_list_shapes_renew_the_model_and_spend_its_first_calls() {
    use mlff_md::force::{ForceProvider, PairForces};
    use std::{cell::Cell as Count, rc::Rc};
    let state = mlff_md::state::BatchState::new(&common::ethanol(), 2, Device::Cpu, Kind::Double);
    for renews in [true, false] {
        let (calls, renewals) = (Rc::new(Count::new(0)), Rc::new(Count::new(0)));
        let model = Counting {
            inner: mlff_md::force::LennardJonesPairs {
                epsilon: 0.01,
                sigma: 1.2,
                cutoff: 20.0,
                shifted: false,
            },
            renews,
            calls: calls.clone(),
            renewals: renewals.clone(),
        };
        let spent = if renews { 2 } else { 0 };
        let forces = PairForces::new(Box::new(model), &state).unwrap();
        let first = forces.compute(&state).unwrap();
        assert_eq!((calls.get(), renewals.get()), (1, 0));

        let mut shape = forces.list_shape().unwrap();
        shape.capacity = 2;
        forces.set_list_shape(shape, &state).unwrap();
        assert_eq!(renewals.get(), 1, "a checkpoint's shape renews");
        forces.compute(&state).unwrap();
        assert_eq!(calls.get(), 2 + spent);
        assert!(forces.overflow().is_some(), "8 neighbours, room for 2");

        forces.grow(&state).unwrap();
        assert_eq!(renewals.get(), 2, "a growth renews");
        let grown = forces.compute(&state).unwrap();
        assert_eq!(calls.get(), 3 + 2 * spent);
        assert!(forces.overflow().is_none());
        assert!(grown.energies.equal(&first.energies));
        assert!(grown.forces.equal(&first.forces));

        forces.compute(&state).unwrap();
        assert_eq!(calls.get(), 4 + 2 * spent, "no renewal, no spent calls");
    }
}
