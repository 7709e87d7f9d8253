//! What the structure file says about the chemistry beyond positions, and
//! what an MLFF needs to know before it is trusted with it: the total formal
//! charge (read from the file where the format has one, since chemfiles
//! reads neither SDF `M  CHG` lines nor PDB charge columns), the electron
//! count, and how many separate molecules the bond graph holds.

use std::path::Path;

use chemfiles::Frame;

/// Total formal charge of the first structure in `path`, and where it was
/// read (None when the format carries no charges or all are zero).
pub fn formal_charge(path: &Path, frame: &Frame) -> Option<(i64, String)> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let text = || std::fs::read_to_string(path).ok();
    let total = match ext.as_str() {
        "sdf" | "mol" | "sd" => text().and_then(|t| sdf_charge(&t)).map(|q| (q, "M  CHG")),
        "pdb" | "ent" => text()
            .and_then(|t| pdb_charge(&t))
            .map(|q| (q, "columns 79-80")),
        _ => None,
    };
    let total = total.map(|(q, s)| (q, s.to_string())).or_else(|| {
        // Formats whose reader sets atom charges (SDF atom block, MOL2).
        let sum: f64 = (0..frame.size()).map(|i| frame.atom(i).charge()).sum();
        (sum.abs() > 0.5).then(|| (sum.round() as i64, "atom charges".to_string()))
    })?;
    (total.0 != 0).then_some(total)
}

/// Sum of the `M  CHG` entries of the first record of an SDF/MOL file
/// (V2000: `M  CHGnn8 aaa vvv ...`), or None when it has none.
fn sdf_charge(text: &str) -> Option<i64> {
    let record = text.split("$$$$").next()?;
    let mut total = None;
    for line in record.lines() {
        let Some(rest) = line.strip_prefix("M  CHG") else {
            continue;
        };
        let fields: Vec<i64> = rest
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let Some((&n, pairs)) = fields.split_first() else {
            continue;
        };
        let charge: i64 = pairs
            .chunks_exact(2)
            .take(n.max(0) as usize)
            .map(|p| p[1])
            .sum();
        *total.get_or_insert(0) += charge;
    }
    total
}

/// Sum of the charge columns (79-80, e.g. `1+`, `2-`) of the ATOM/HETATM
/// records of the first model of a PDB file, or None when none is set.
fn pdb_charge(text: &str) -> Option<i64> {
    let mut total = None;
    for line in text.lines() {
        if line.starts_with("ENDMDL") {
            break;
        }
        if !(line.starts_with("ATOM") || line.starts_with("HETATM")) {
            continue;
        }
        let field = line.get(78..80).unwrap_or("").trim();
        if field.is_empty() {
            continue;
        }
        let (digits, sign) = field.split_at(field.len() - 1);
        let value: i64 = match (digits.parse::<i64>(), sign) {
            (Ok(d), "+") => d,
            (Ok(d), "-") => -d,
            _ => continue,
        };
        *total.get_or_insert(0) += value;
    }
    total
}

/// The molecules of a bond graph (its connected components), each as a
/// walk that reaches every atom from a bonded one: what makes a molecule
/// whole across a periodic boundary, and what a barostat scales by its
/// centre.
#[derive(Debug, Clone)]
pub struct Molecules {
    /// Atoms in walk order, each with the bonded atom it is reached from
    /// (None for the first atom of a molecule).
    pub walk: Vec<(usize, Option<usize>)>,
    /// Ranges of `walk` holding one molecule each.
    pub ranges: Vec<std::ops::Range<usize>>,
}

impl Molecules {
    /// From `n` atoms and their bonds (atom index pairs).
    pub fn new(n: usize, bonds: &[[usize; 2]]) -> Molecules {
        let mut adjacent = vec![Vec::new(); n];
        for &[a, b] in bonds {
            if a < n && b < n && a != b {
                adjacent[a].push(b);
                adjacent[b].push(a);
            }
        }
        let mut seen = vec![false; n];
        let mut walk = Vec::with_capacity(n);
        let mut ranges = Vec::new();
        for root in 0..n {
            if seen[root] {
                continue;
            }
            let start = walk.len();
            seen[root] = true;
            walk.push((root, None));
            let mut next = start;
            while next < walk.len() {
                let (atom, _) = walk[next];
                next += 1;
                for &b in &adjacent[atom] {
                    if !seen[b] {
                        seen[b] = true;
                        walk.push((b, Some(atom)));
                    }
                }
            }
            ranges.push(start..walk.len());
        }
        Molecules { walk, ranges }
    }

    pub fn count(&self) -> usize {
        self.ranges.len()
    }

    /// The atoms of each molecule.
    pub fn atoms(&self) -> impl Iterator<Item = impl Iterator<Item = usize> + '_> + '_ {
        self.ranges
            .iter()
            .map(|r| self.walk[r.clone()].iter().map(|&(a, _)| a))
    }
}

/// Number of connected components of the bond graph over `n` atoms.
pub fn bond_components(n: usize, bonds: &[[usize; 2]]) -> usize {
    let mut parent: Vec<usize> = (0..n).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut components = n;
    for &[a, b] in bonds {
        if a >= n || b >= n {
            continue;
        }
        let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
        if ra != rb {
            parent[ra] = rb;
            components -= 1;
        }
    }
    components
}

/// Element symbols by atomic number (index Z − 1), H to Og.
const ELEMENT_SYMBOLS: [&str; 118] = [
    "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P", "S", "Cl",
    "Ar", "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "As",
    "Se", "Br", "Kr", "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In",
    "Sn", "Sb", "Te", "I", "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb",
    "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg", "Tl",
    "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th", "Pa", "U", "Np", "Pu", "Am", "Cm", "Bk",
    "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf", "Db", "Sg", "Bh", "Hs", "Mt", "Ds", "Rg", "Cn", "Nh",
    "Fl", "Mc", "Lv", "Ts", "Og",
];

/// The symbol of element `z` ("Z=0" and the like outside H..Og).
pub fn element_symbol(z: i64) -> String {
    usize::try_from(z - 1)
        .ok()
        .and_then(|i| ELEMENT_SYMBOLS.get(i))
        .map_or_else(|| format!("Z={z}"), |s| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdf_charges_from_m_chg_lines() {
        let text = "x\n\n\n  2  1  0  0  0  0  0  0  0  0999 V2000\n\
M  CHG  2   1  -1   3   1\nM  CHG  1   4  -1\nM  END\n$$$$\nM  CHG  1   1   2\n";
        assert_eq!(sdf_charge(text), Some(-1));
        assert_eq!(sdf_charge("no charges\nM  END\n"), None);
    }

    #[test]
    fn pdb_charges_from_columns_79_80() {
        let atom = |q: &str| {
            format!(
                "{:<78}{q:>2}\n",
                "ATOM      1  N   ALA A   1       0.000   0.000   0.000  1.00  0.00           N"
            )
        };
        let text = atom("1+") + &atom("  ") + &atom("2-") + "ENDMDL\n" + &atom("3+");
        assert_eq!(pdb_charge(&text), Some(-1));
        assert_eq!(pdb_charge(&atom("  ")), None);
    }

    #[test]
    fn components_of_a_bond_graph() {
        assert_eq!(bond_components(4, &[[0, 1], [2, 3]]), 2);
        assert_eq!(bond_components(4, &[[0, 1], [1, 2], [2, 3]]), 1);
        assert_eq!(bond_components(3, &[]), 3);
    }

    /// The table agrees with chemfiles' element data wherever chemfiles
    /// knows the element.
    #[test]
    fn symbols_match_chemfiles() {
        for z in 1..=118 {
            let symbol = element_symbol(z);
            let atom = chemfiles::Atom::new(symbol.as_str());
            let known = atom.atomic_number();
            assert!(
                known == 0 || known as i64 == z,
                "{symbol}: chemfiles says {known}, table {z}"
            );
        }
        assert_eq!(element_symbol(0), "Z=0");
        assert_eq!(element_symbol(119), "Z=119");
    }
}
