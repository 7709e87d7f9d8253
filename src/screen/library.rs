//! A screening library: every record of every input (SDF files, gzipped
//! or not; any other structure format chemfiles reads, one record per
//! frame; folders of such files), numbered in input order. A record that
//! cannot be used is kept as a [`Entry::Bad`] with its reason, so the run
//! goes on and the summary and the results table can name it.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::sdf::{self, SdfMolecule};
use crate::error::{Error, Result};

/// A usable record.
#[derive(Debug, Clone)]
pub struct Record {
    /// Position in the library (0-based, over all inputs in order).
    pub index: usize,
    /// Where it was read ("lib.sdf:118", "mols/x.xyz frame 2").
    pub source: String,
    pub mol: SdfMolecule,
    /// Total charge (elementary charges).
    pub charge: i64,
}

/// A record that cannot be screened.
#[derive(Debug, Clone)]
pub struct BadRecord {
    pub index: usize,
    pub name: String,
    pub source: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub enum Entry {
    Good(Record),
    Bad(BadRecord),
}

impl Entry {
    pub fn index(&self) -> usize {
        match self {
            Entry::Good(r) => r.index,
            Entry::Bad(b) => b.index,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Entry::Good(r) => &r.mol.name,
            Entry::Bad(b) => &b.name,
        }
    }

    /// Mark a readable record unusable (e.g. an element the model lacks).
    pub fn reject(&mut self, reason: String) {
        if let Entry::Good(r) = self {
            *self = Entry::Bad(BadRecord {
                index: r.index,
                name: r.mol.name.clone(),
                source: r.source.clone(),
                reason,
            });
        }
    }
}

/// Extensions read as SDF (after an optional `.gz`).
const SDF_EXTENSIONS: [&str; 3] = ["sdf", "sd", "mol"];
/// Extensions a folder contributes (others, such as index.json, are skipped).
const FOLDER_EXTENSIONS: [&str; 9] = [
    "sdf", "sd", "mol", "xyz", "pdb", "mol2", "cif", "mmcif", "gro",
];

/// (stem-extension, gzipped) of a path: "a.sdf.gz" → ("sdf", true).
fn kind_of(path: &Path) -> (String, bool) {
    let lower = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let (stem, gz) = match lower.strip_suffix(".gz") {
        Some(s) => (s.to_string(), true),
        None => (lower, false),
    };
    let ext = Path::new(&stem)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_string();
    (ext, gz)
}

/// The files `inputs` stand for: files as given, folders as their
/// structure files sorted by name.
pub fn expand(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(input)
                .map_err(|e| Error::structure(input, format!("cannot list the folder: {e}")))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file() && FOLDER_EXTENSIONS.contains(&kind_of(p).0.as_str()))
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(Error::structure(
                    input,
                    format!(
                        "the folder holds no structure files (looked for .{})",
                        FOLDER_EXTENSIONS.join(", .")
                    ),
                ));
            }
            files.extend(found);
        } else if input.is_file() {
            files.push(input.clone());
        } else {
            return Err(Error::structure(input, "no such file or folder"));
        }
    }
    Ok(files)
}

/// Every record of `inputs`, in order. Fails (exit 2) only for an input
/// that cannot be opened at all; a broken record becomes [`Entry::Bad`].
pub fn read(inputs: &[PathBuf]) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for path in expand(inputs)? {
        let (ext, gz) = kind_of(&path);
        if SDF_EXTENSIONS.contains(&ext.as_str()) {
            let text = read_text(&path, gz)?;
            for raw in sdf::records(&text) {
                let index = entries.len();
                let source = format!("{}:{}", path.display(), raw.first_line);
                entries.push(match sdf::parse(&raw) {
                    Ok(mol) => {
                        let charge = mol.charges.iter().sum();
                        Entry::Good(Record {
                            index,
                            source,
                            mol,
                            charge,
                        })
                    }
                    Err(e) => Entry::Bad(BadRecord {
                        index,
                        name: raw.lines.first().map_or("", |l| l.trim()).to_string(),
                        source: format!("{}:{}", path.display(), e.line),
                        reason: e.message,
                    }),
                });
            }
        } else if gz {
            return Err(Error::structure(
                &path,
                "gzipped input is read for SDF only (.sdf.gz); unpack other formats first",
            ));
        } else {
            let frames = crate::system::library_frames(&path)?;
            let several = frames.len() > 1;
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("record")
                .to_string();
            for (k, frame) in frames.into_iter().enumerate() {
                let index = entries.len();
                let source = format!("{} frame {}", path.display(), k + 1);
                let name = if several {
                    format!("{stem}_{}", k + 1)
                } else {
                    stem.clone()
                };
                entries.push(match frame {
                    Ok(f) => Entry::Good(Record {
                        index,
                        source,
                        charge: f.charge,
                        mol: SdfMolecule {
                            name,
                            charges: vec![0; f.symbols.len()],
                            symbols: f.symbols,
                            positions: f.positions,
                            bonds: f.bonds,
                            properties: Vec::new(),
                        },
                    }),
                    Err(reason) => Entry::Bad(BadRecord {
                        index,
                        name,
                        source,
                        reason,
                    }),
                });
            }
        }
    }
    Ok(entries)
}

fn read_text(path: &Path, gz: bool) -> Result<String> {
    let file = std::fs::File::open(path)
        .map_err(|e| Error::structure(path, format!("cannot open: {e}")))?;
    let mut text = String::new();
    let read = if gz {
        flate2::read::MultiGzDecoder::new(file).read_to_string(&mut text)
    } else {
        std::io::BufReader::new(file).read_to_string(&mut text)
    };
    read.map_err(|e| Error::structure(path, format!("cannot read: {e}")))?;
    Ok(text)
}
