//! What a screen keeps: a ledger with one JSON line per finished molecule,
//! appended and flushed as each leaves the batch (so an interrupted screen
//! loses nothing and a resumed one skips what is done), and the tables made
//! from it: `results.csv` (one row per input record, skipped ones with
//! their reason) and `minimized.sdf` (the final structures with their
//! energies as SD data items). Both are rewritten whole, atomically, at
//! the end and when a screen stops.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::library::Entry;
use super::sdf;
use crate::error::{Error, Result};
use crate::units::EV_IN_KCAL_PER_MOL;

pub const LEDGER_FILE: &str = "ledger.jsonl";
pub const CSV_FILE: &str = "results.csv";
pub const SDF_FILE: &str = "minimized.sdf";

/// One finished molecule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Outcome {
    pub index: usize,
    pub name: String,
    /// Potential energy at the start and at the end (eV).
    pub energy_start_ev: f64,
    pub energy_ev: f64,
    /// Largest atomic force norm at the end (eV/Å).
    pub max_force: f64,
    pub converged: bool,
    pub iterations: u64,
    /// Final positions (Å).
    pub positions: Vec<[f64; 3]>,
    /// "final", or "minimized" for a first minimisation whose conformer
    /// sampling is still to come.
    #[serde(default = "final_stage")]
    pub stage: String,
    /// The sampled frame (copy · frames + frame) the kept structure was
    /// minimised from; None for the molecule's own structure.
    #[serde(default)]
    pub conformer: Option<usize>,
}

fn final_stage() -> String {
    FINAL.to_string()
}

/// [`Outcome::stage`] of a molecule that is done.
pub const FINAL: &str = "final";
/// [`Outcome::stage`] of a first minimisation before conformer sampling.
pub const MINIMIZED: &str = "minimized";

impl Outcome {
    pub fn is_final(&self) -> bool {
        self.stage == FINAL
    }
}

/// The ledger of an output directory, open for appending.
pub struct Ledger {
    path: PathBuf,
    file: std::fs::File,
    pub done: BTreeMap<usize, Outcome>,
}

impl Ledger {
    /// Open `dir`'s ledger, keeping the outcomes already in it (a torn last
    /// line, from a process killed mid-write, is dropped and the file
    /// rewritten without it).
    pub fn open(dir: &Path) -> Result<Ledger> {
        let path = dir.join(LEDGER_FILE);
        let mut done = BTreeMap::new();
        let mut torn = false;
        if path.exists() {
            let text = std::fs::read_to_string(&path).map_err(|e| Error::output_path(&path, e))?;
            for (k, line) in text.lines().enumerate() {
                match serde_json::from_str::<Outcome>(line) {
                    Ok(o) => {
                        done.insert(o.index, o);
                    }
                    Err(e) if k + 1 == text.lines().count() => {
                        eprintln!(
                            "warning: {}:{}: dropping a torn last line ({e}); that molecule is screened again",
                            path.display(),
                            k + 1
                        );
                        torn = true;
                    }
                    Err(e) => {
                        return Err(Error::output_path(
                            &path,
                            format!(
                                "line {}: not a screen outcome ({e}); the ledger is damaged",
                                k + 1
                            ),
                        ))
                    }
                }
            }
        }
        if torn {
            let text: String = done
                .values()
                .map(|o| serde_json::to_string(o).expect("outcomes serialise") + "\n")
                .collect();
            write_atomically(&path, text.as_bytes())?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::output_path(&path, format!("cannot open for appending: {e}")))?;
        Ok(Ledger { path, file, done })
    }

    /// Record a finished molecule (flushed to the file before returning).
    pub fn record(&mut self, outcome: Outcome) -> Result<()> {
        let mut line = serde_json::to_string(&outcome).expect("outcomes serialise");
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|e| Error::output(&self.path, e))?;
        self.done.insert(outcome.index, outcome);
        Ok(())
    }
}

/// Write `bytes` to `path` through a temporary file and a rename, so a
/// reader never sees half a file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| Error::output(path, e))
}

/// A CSV field, quoted when it must be (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

const CSV_HEADER: &str = "index,name,source,status,reason,atoms,charge,energy_ev,energy_kcal_mol,energy_start_ev,max_force_ev_per_a,converged,iterations,conformer";

/// `results.csv`: every record of the library in input order; records not
/// screened (yet) say why.
pub fn write_csv(
    dir: &Path,
    entries: &[Entry],
    done: &BTreeMap<usize, Outcome>,
) -> Result<PathBuf> {
    let mut text = String::from(CSV_HEADER);
    text.push('\n');
    for e in entries {
        let mut row: Vec<String> = vec![e.index().to_string(), csv_field(e.name())];
        match e {
            Entry::Bad(b) => {
                row.extend([csv_field(&b.source), "skipped".into(), csv_field(&b.reason)])
            }
            Entry::Good(r) => {
                let status = match done.get(&r.index).filter(|o| o.is_final()) {
                    Some(o) if o.converged => "converged",
                    Some(_) => "not converged",
                    None => "pending",
                };
                row.extend([csv_field(&r.source), status.into(), String::new()]);
            }
        }
        match (e, done.get(&e.index()).filter(|o| o.is_final())) {
            (Entry::Good(r), Some(o)) => row.extend([
                r.mol.symbols.len().to_string(),
                r.charge.to_string(),
                format!("{:.6}", o.energy_ev),
                format!("{:.4}", o.energy_ev * EV_IN_KCAL_PER_MOL),
                format!("{:.6}", o.energy_start_ev),
                format!("{:.5}", o.max_force),
                o.converged.to_string(),
                o.iterations.to_string(),
                o.conformer.map_or("input".to_string(), |c| c.to_string()),
            ]),
            (Entry::Good(r), None) => {
                row.extend([r.mol.symbols.len().to_string(), r.charge.to_string()]);
                row.extend(std::iter::repeat_n(String::new(), 7));
            }
            (Entry::Bad(_), _) => row.extend(std::iter::repeat_n(String::new(), 9)),
        }
        text.push_str(&row.join(","));
        text.push('\n');
    }
    let path = dir.join(CSV_FILE);
    write_atomically(&path, text.as_bytes())?;
    Ok(path)
}

/// `minimized.sdf`: each screened molecule at its final positions, in input
/// order, with its own data items followed by the screen's.
pub fn write_sdf(
    dir: &Path,
    entries: &[Entry],
    done: &BTreeMap<usize, Outcome>,
) -> Result<PathBuf> {
    let mut text = String::new();
    for e in entries {
        let (Entry::Good(r), Some(o)) = (e, done.get(&e.index()).filter(|o| o.is_final())) else {
            continue;
        };
        let extra = [
            ("mlff_md_energy_ev", format!("{:.6}", o.energy_ev)),
            (
                "mlff_md_energy_kcal_mol",
                format!("{:.4}", o.energy_ev * EV_IN_KCAL_PER_MOL),
            ),
            ("mlff_md_max_force_ev_per_a", format!("{:.5}", o.max_force)),
            ("mlff_md_converged", o.converged.to_string()),
            ("mlff_md_iterations", o.iterations.to_string()),
            (
                "mlff_md_conformer",
                o.conformer.map_or("input".to_string(), |c| c.to_string()),
            ),
            ("mlff_md_record", r.index.to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v));
        text.push_str(&sdf::write(&r.mol, &o.positions, &extra));
    }
    let path = dir.join(SDF_FILE);
    write_atomically(&path, text.as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(index: usize) -> Outcome {
        Outcome {
            index,
            name: format!("m{index}"),
            energy_start_ev: -1.0,
            energy_ev: -2.0,
            max_force: 0.01,
            converged: true,
            iterations: 30,
            positions: vec![[0.0, 0.0, 0.0]],
            stage: FINAL.into(),
            conformer: None,
        }
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut l = Ledger::open(dir.path()).unwrap();
            l.record(outcome(3)).unwrap();
            l.record(outcome(1)).unwrap();
        }
        let path = dir.path().join(LEDGER_FILE);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"index\":7,\"na");
        std::fs::write(&path, text).unwrap();
        let mut l = Ledger::open(dir.path()).unwrap();
        assert_eq!(l.done.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
        l.record(outcome(7)).unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        assert_eq!(l.done.keys().copied().collect::<Vec<_>>(), vec![1, 3, 7]);
        assert_eq!(l.done[&3], outcome(3));
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
