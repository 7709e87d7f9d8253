//! MDL SDF (V2000) records, read and written here rather than through
//! chemfiles: a screening library is thousands of records in one file, and
//! each record must keep its name, its SD data items, its bond orders and
//! its formal charges (`M  CHG`, which chemfiles does not read), and a
//! broken record must cost that record only, with the line that broke it.

use std::fmt::Write as _;

/// One molecule of an SDF file, as written.
#[derive(Debug, Clone, PartialEq)]
pub struct SdfMolecule {
    /// The record's first line.
    pub name: String,
    /// Element symbols as written ("C", "Cl").
    pub symbols: Vec<String>,
    pub positions: Vec<[f64; 3]>,
    /// (first atom, second atom, bond type), 0-based atoms.
    pub bonds: Vec<(usize, usize, u8)>,
    /// Formal charge of each atom (`M  CHG` lines, else the atom block).
    pub charges: Vec<i64>,
    /// SD data items (`> <NAME>` and the lines under it), in order.
    pub properties: Vec<(String, String)>,
}

/// A record that could not be read: why, and the 1-based line.
#[derive(Debug, Clone, PartialEq)]
pub struct SdfError {
    pub line: usize,
    pub message: String,
}

/// One record's lines and where it starts (1-based line of its first line).
pub struct RawRecord<'a> {
    pub first_line: usize,
    pub lines: Vec<&'a str>,
}

/// Split SDF text at the `$$$$` lines; a last record without one counts
/// too (unless it is only blank lines).
pub fn records(text: &str) -> Vec<RawRecord<'_>> {
    let mut out = Vec::new();
    let mut current = RawRecord {
        first_line: 1,
        lines: Vec::new(),
    };
    for (i, line) in text.lines().enumerate() {
        if line.trim_end() == "$$$$" {
            let next = RawRecord {
                first_line: i + 2,
                lines: Vec::new(),
            };
            out.push(std::mem::replace(&mut current, next));
        } else {
            current.lines.push(line);
        }
    }
    if current.lines.iter().any(|l| !l.trim().is_empty()) {
        out.push(current);
    }
    out
}

/// Atom-block charge codes of V2000 (0 none, 1 = +3 ... 7 = −3; 4 is a
/// doublet radical, no charge).
fn atom_block_charge(code: i64) -> i64 {
    match code {
        1 => 3,
        2 => 2,
        3 => 1,
        5 => -1,
        6 => -2,
        7 => -3,
        _ => 0,
    }
}

/// Fixed-width field `start..end` of a line (trimmed; empty when short).
fn field(line: &str, start: usize, end: usize) -> &str {
    line.get(start..end.min(line.len())).unwrap_or("").trim()
}

/// Parse one record (V2000 molfile + data items).
pub fn parse(record: &RawRecord) -> Result<SdfMolecule, SdfError> {
    let at = |k: usize, message: String| SdfError {
        line: record.first_line + k,
        message,
    };
    let lines = &record.lines;
    let name = lines
        .first()
        .map(|l| l.trim().to_string())
        .unwrap_or_default();
    let counts = lines.get(3).ok_or_else(|| {
        at(
            lines.len().saturating_sub(1),
            "the record ends before its counts line (line 4 of a molfile)".into(),
        )
    })?;
    if counts.contains("V3000") {
        return Err(at(
            3,
            "a V3000 molfile; only V2000 records are read (convert with RDKit or Open Babel)"
                .into(),
        ));
    }
    let count = |s: usize, what: &str| -> Result<usize, SdfError> {
        field(counts, s, s + 3).parse::<usize>().map_err(|_| {
            at(
                3,
                format!("expected the number of {what} in columns {}-{} of the counts line, found {counts:?}", s + 1, s + 3),
            )
        })
    };
    let (n_atoms, n_bonds) = (count(0, "atoms")?, count(3, "bonds")?);
    if n_atoms == 0 {
        return Err(at(3, "the record has zero atoms".into()));
    }
    // Line k of an atom or bond block (`done` lines of it read so far).
    let block_line = |k: usize, (promised, what): (usize, &str), done: usize| {
        lines
            .get(k)
            .filter(|l| !l.starts_with("M  "))
            .ok_or_else(|| {
                at(
                    k.min(lines.len()),
                    format!(
                        "the counts line promises {promised} {what}s, the {what} block ends after {done}"
                    ),
                )
            })
    };
    let mut symbols = Vec::with_capacity(n_atoms);
    let mut positions = Vec::with_capacity(n_atoms);
    let mut charges = Vec::with_capacity(n_atoms);
    for a in 0..n_atoms {
        let k = 4 + a;
        let line = block_line(k, (n_atoms, "atom"), a)?;
        let f: Vec<&str> = line.split_whitespace().collect();
        let xyz: Option<Vec<f64>> = f.iter().take(3).map(|v| v.parse().ok()).collect();
        match (xyz, f.get(3)) {
            (Some(p), Some(symbol)) if p.len() == 3 && p.iter().all(|v| v.is_finite()) => {
                positions.push([p[0], p[1], p[2]]);
                symbols.push(symbol.to_string());
            }
            _ => {
                return Err(at(
                    k,
                    format!("expected an atom line (x y z symbol ...), found {line:?}"),
                ))
            }
        }
        charges.push(atom_block_charge(field(line, 36, 39).parse().unwrap_or(0)));
    }
    let mut bonds = Vec::with_capacity(n_bonds);
    for b in 0..n_bonds {
        let k = 4 + n_atoms + b;
        let line = block_line(k, (n_bonds, "bond"), b)?;
        let parsed = (
            field(line, 0, 3).parse::<usize>(),
            field(line, 3, 6).parse::<usize>(),
            field(line, 6, 9).parse::<u8>(),
        );
        match parsed {
            (Ok(i), Ok(j), Ok(order))
                if (1..=n_atoms).contains(&i) && (1..=n_atoms).contains(&j) && i != j =>
            {
                bonds.push((i - 1, j - 1, order))
            }
            _ => {
                return Err(at(
                    k,
                    format!(
                    "expected a bond line (two atoms of 1..{n_atoms}, a bond type), found {line:?}"
                ),
                ))
            }
        }
    }
    // Properties block: M  CHG supersedes the atom block's charges.
    let mut k = 4 + n_atoms + n_bonds;
    let mut chg_seen = false;
    let mut ended = false;
    while let Some(line) = lines.get(k) {
        k += 1;
        if line.starts_with("M  END") {
            ended = true;
            break;
        }
        if let Some(rest) = line.strip_prefix("M  CHG") {
            if !chg_seen {
                charges.iter_mut().for_each(|c| *c = 0);
                chg_seen = true;
            }
            let v: Vec<i64> = rest
                .split_whitespace()
                .map(|t| t.parse::<i64>())
                .collect::<Result<_, _>>()
                .map_err(|_| {
                    at(
                        k - 1,
                        format!("expected `M  CHG n atom charge ...`, found {line:?}"),
                    )
                })?;
            let pairs = v.get(1..).unwrap_or(&[]);
            for p in pairs.chunks_exact(2) {
                let atom = p[0];
                if !(1..=n_atoms as i64).contains(&atom) {
                    return Err(at(
                        k - 1,
                        format!("`M  CHG` names atom {atom}, the record has {n_atoms}"),
                    ));
                }
                charges[atom as usize - 1] = p[1];
            }
        }
    }
    if !ended {
        return Err(at(k.min(lines.len()), "no `M  END` line".into()));
    }
    let mut properties = Vec::new();
    while let Some(line) = lines.get(k) {
        k += 1;
        let Some(header) = line.strip_prefix('>') else {
            continue;
        };
        let name = header
            .split_once('<')
            .and_then(|(_, rest)| rest.split_once('>'))
            .map(|(n, _)| n.to_string())
            .unwrap_or_else(|| header.trim().to_string());
        let mut value = Vec::new();
        while let Some(v) = lines.get(k) {
            if v.trim().is_empty() {
                break;
            }
            value.push(*v);
            k += 1;
        }
        properties.push((name, value.join("\n")));
    }
    Ok(SdfMolecule {
        name,
        symbols,
        positions,
        bonds,
        charges,
        properties,
    })
}

/// One V2000 record (ending in `$$$$`): `mol`'s atoms at `positions`,
/// its bonds and charges, then its own data items followed by `extra`.
pub fn write(mol: &SdfMolecule, positions: &[[f64; 3]], extra: &[(String, String)]) -> String {
    let mut s = String::new();
    let name: String = mol.name.chars().filter(|c| *c != '\n').collect();
    let _ = writeln!(s, "{name}");
    let _ = writeln!(s, "  mlff-md 3D");
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:>3}{:>3}  0  0  0  0  0  0  0  0999 V2000",
        mol.symbols.len(),
        mol.bonds.len()
    );
    for (p, sym) in positions.iter().zip(&mol.symbols) {
        let _ = writeln!(
            s,
            "{:>10.4}{:>10.4}{:>10.4} {:<3} 0  0  0  0  0  0  0  0  0  0  0  0",
            p[0], p[1], p[2], sym
        );
    }
    for &(i, j, order) in &mol.bonds {
        let _ = writeln!(s, "{:>3}{:>3}{:>3}  0", i + 1, j + 1, order);
    }
    let charged: Vec<(usize, i64)> = mol
        .charges
        .iter()
        .enumerate()
        .filter(|(_, &q)| q != 0)
        .map(|(a, &q)| (a, q))
        .collect();
    for chunk in charged.chunks(8) {
        let _ = write!(s, "M  CHG{:>3}", chunk.len());
        for (a, q) in chunk {
            let _ = write!(s, " {:>3} {:>3}", a + 1, q);
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "M  END");
    for (k, v) in mol.properties.iter().chain(extra) {
        let _ = writeln!(s, ">  <{k}>\n{v}\n");
    }
    let _ = writeln!(s, "$$$$");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACETATE: &str = "acetate\n  RDKit          3D\n\n  4  3  0  0  0  0  0  0  0  0999 V2000\n    0.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0\n    1.5000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0\n    2.1000    1.1000    0.0000 O   0  0  0  0  0  0  0  0  0  0  0  0\n    2.1000   -1.1000    0.0000 O   0  5  0  0  0  0  0  0  0  0  0  0\n  1  2  1  0\n  2  3  2  0\n  2  4  1  0\nM  CHG  1   4  -1\nM  END\n>  <smiles>\nCC(=O)[O-]\n\n$$$$\n";

    #[test]
    fn reads_atoms_bonds_charges_and_data_items() {
        let r = records(ACETATE);
        assert_eq!(r.len(), 1);
        let m = parse(&r[0]).unwrap();
        assert_eq!(m.name, "acetate");
        assert_eq!(m.symbols, ["C", "C", "O", "O"]);
        assert_eq!(m.positions[2], [2.1, 1.1, 0.0]);
        assert_eq!(m.bonds, vec![(0, 1, 1), (1, 2, 2), (1, 3, 1)]);
        assert_eq!(m.charges, vec![0, 0, 0, -1]);
        assert_eq!(m.properties, vec![("smiles".into(), "CC(=O)[O-]".into())]);
    }

    #[test]
    fn written_records_read_back() {
        let m = parse(&records(ACETATE)[0]).unwrap();
        let extra = vec![("energy_ev".to_string(), "-1.5".to_string())];
        let text = write(&m, &m.positions, &extra);
        let back = parse(&records(&text)[0]).unwrap();
        assert_eq!(back.symbols, m.symbols);
        assert_eq!(back.bonds, m.bonds);
        assert_eq!(back.charges, m.charges);
        assert_eq!(back.positions, m.positions);
        assert_eq!(back.properties.len(), 2);
        assert_eq!(back.properties[1], extra[0]);
    }

    #[test]
    fn broken_records_name_their_line() {
        let truncated =
            "t\n\n\n  3  0  0  0  0  0  0  0  0  0999 V2000\n    0.0 0.0 0.0 C\nM  END\n$$$$\n";
        let text = format!("{ACETATE}{truncated}{ACETATE}");
        let r = records(&text);
        assert_eq!(r.len(), 3);
        assert!(parse(&r[0]).is_ok() && parse(&r[2]).is_ok());
        let e = parse(&r[1]).unwrap_err();
        // The acetate record is 17 lines; the second atom line (18 + 5) is `M  END`.
        assert_eq!(e.line, 23, "{e:?}");
        assert!(e.message.contains("promises 3 atoms"), "{e:?}");
        let zero = "z\n\n\n  0  0  0  0  0  0  0  0  0  0999 V2000\nM  END\n";
        let e = parse(&records(zero)[0]).unwrap_err();
        assert_eq!(
            (e.line, e.message.as_str()),
            (4, "the record has zero atoms")
        );
    }
}
