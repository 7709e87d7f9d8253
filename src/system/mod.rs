//! Loading molecules through chemfiles: atoms, elements, masses, topology and
//! one or more starting structures.
//!
//! All chemfiles conversion of *input* lives here; the engine only sees plain
//! arrays (atomic numbers, masses, positions).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

use chemfiles::{Frame, Trajectory};

use crate::error::{Error, Result};

pub mod cell;
pub mod chemistry;

/// A molecule with one or more starting structures (conformations).
pub struct Molecule {
    /// Atomic number of each atom.
    pub atomic_numbers: Vec<i64>,
    /// Mass of each atom in amu.
    pub masses: Vec<f64>,
    /// Atom names as read (e.g. "CA", "H1").
    pub names: Vec<String>,
    /// Starting structures, each `n_atoms` positions in Å.
    pub structures: Vec<Vec<[f64; 3]>>,
    /// The first frame read, with its topology (residues, bonds): the template
    /// for every frame written.
    pub template: Frame,
    /// Non-fatal findings (e.g. overlapping atoms), for the log.
    pub warnings: Vec<String>,
    /// Files the structures came from.
    pub sources: Vec<PathBuf>,
    /// Total formal charge of the input and where it was read, when the
    /// file gives a nonzero one.
    pub formal_charge: Option<(i64, String)>,
    /// Separate molecules in the bond graph (given or guessed bonds).
    pub components: usize,
    /// The periodic cell the first file gives (CRYST1, ...), if any; used
    /// only with [system] periodic = true.
    pub cell: Option<cell::Cell>,
}

/// Warnings chemfiles printed while reading, held back so that a file that
/// fails to load gives one error line, not a warning and an error.
static CHEMFILES_WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static CAPTURE: Once = Once::new();
/// Bound on held-back warnings (a broken file can warn once per line).
const MAX_HELD_WARNINGS: usize = 100;

/// Route chemfiles' warnings into [`CHEMFILES_WARNINGS`] instead of stderr.
pub fn capture_chemfiles_warnings() {
    CAPTURE.call_once(|| {
        chemfiles::set_warning_callback(|message: &str| {
            if let Ok(mut held) = CHEMFILES_WARNINGS.lock() {
                if held.len() < MAX_HELD_WARNINGS {
                    held.push(message.to_string());
                }
            }
        })
    });
}

fn take_chemfiles_warnings() -> Vec<String> {
    CHEMFILES_WARNINGS
        .lock()
        .map(|mut held| held.drain(..).map(|m| format!("chemfiles: {m}")).collect())
        .unwrap_or_default()
}

/// Distance under which two atoms are reported as overlapping, in Å.
const OVERLAP_DISTANCE: f64 = 0.5;

impl Molecule {
    pub fn n_atoms(&self) -> usize {
        self.atomic_numbers.len()
    }

    /// A molecule from plain arrays (element symbols, one structure), for
    /// tests and programmatic use. Masses come from chemfiles' element data.
    pub fn from_symbols(symbols: &[&str], positions: &[[f64; 3]]) -> Result<Molecule> {
        if symbols.is_empty() || symbols.len() != positions.len() {
            return Err(Error::Invalid(format!(
                "{} symbols for {} positions",
                symbols.len(),
                positions.len()
            )));
        }
        let mut frame = Frame::new();
        for (s, p) in symbols.iter().zip(positions) {
            frame.add_atom(&chemfiles::Atom::new(*s), *p, None);
        }
        let path = PathBuf::from("<arrays>");
        let (atomic_numbers, masses, names) = atoms_of(&frame, &path)?;
        let mut m = Molecule {
            atomic_numbers,
            masses,
            names,
            structures: vec![positions.to_vec()],
            template: frame,
            warnings: vec![],
            sources: vec![path],
            formal_charge: None,
            components: 1,
            cell: None,
        };
        m.warnings = overlap_warnings(&m);
        Ok(m)
    }

    /// Read every frame of every file; all must describe the same atoms.
    pub fn load(paths: &[PathBuf]) -> Result<Molecule> {
        capture_chemfiles_warnings();
        let _ = take_chemfiles_warnings();
        let mut molecule: Option<Molecule> = None;
        for path in paths {
            for frame in read_frames(path)? {
                let (z, masses, names) = atoms_of(&frame, path)?;
                let positions = frame.positions().to_vec();
                match molecule.as_mut() {
                    None => {
                        let mut template = frame;
                        if template.topology().bonds_count() == 0 {
                            // XYZ and CONECT-less PDB files carry no bonds; writing
                            // them into the topology PDB lets viewers draw the molecule.
                            template.guess_bonds().map_err(|e| {
                                Error::structure(path, format!("cannot guess bonds: {}", e.message))
                            })?;
                        }
                        let components = chemistry::bond_components(
                            template.size(),
                            &template.topology().bonds(),
                        );
                        let warnings = vec![];
                        let cell = if template.cell().shape() == chemfiles::CellShape::Infinite {
                            None
                        } else {
                            let (lengths, angles) =
                                (template.cell().lengths(), template.cell().angles());
                            Some(
                                cell::Cell::from_lengths_angles(lengths, angles).map_err(|e| {
                                    Error::structure(path, format!("unusable periodic cell: {e}"))
                                })?,
                            )
                        };
                        molecule = Some(Molecule {
                            cell,
                            formal_charge: chemistry::formal_charge(path, &template),
                            atomic_numbers: z,
                            masses,
                            names,
                            structures: vec![positions],
                            template,
                            warnings,
                            sources: vec![path.clone()],
                            components,
                        });
                    }
                    Some(m) => {
                        if z != m.atomic_numbers {
                            return Err(Error::structure(
                                path,
                                format!(
                                    "describes different atoms ({} atoms) than {} ({} atoms); all starting structures must be the same molecule in the same atom order",
                                    z.len(),
                                    m.sources[0].display(),
                                    m.n_atoms()
                                ),
                            ));
                        }
                        m.structures.push(positions);
                        if !m.sources.contains(path) {
                            m.sources.push(path.clone());
                        }
                    }
                }
            }
        }
        let mut molecule =
            molecule.ok_or_else(|| Error::Invalid("no structure file given".to_string()))?;
        let mut warnings = take_chemfiles_warnings();
        warnings.append(&mut molecule.warnings);
        warnings.extend(overlap_warnings(&molecule));
        warnings.extend(molecule.chemistry_warnings());
        molecule.warnings = warnings;
        Ok(molecule)
    }
}

impl Molecule {
    /// Total charge as far as the file says (0 when it says nothing).
    pub fn total_charge(&self) -> i64 {
        self.formal_charge.as_ref().map_or(0, |(q, _)| *q)
    }

    /// Electrons of the molecule at its total charge.
    pub fn electrons(&self) -> i64 {
        self.atomic_numbers.iter().sum::<i64>() - self.total_charge()
    }

    /// Findings a model that assumes one neutral closed-shell molecule
    /// should be told about.
    fn chemistry_warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        let source = self.sources[0].display();
        if self.electrons() % 2 != 0 {
            w.push(format!(
                "{source}: an odd number of electrons ({}) at total charge {}: a radical, or an ion given without its charge; models such as ANI assume a neutral closed-shell molecule",
                self.electrons(),
                self.total_charge()
            ));
        }
        // (A file with a periodic box is a condensed system: many molecules
        // in one box is what it describes.)
        if self.components > 1 && self.cell.is_none() {
            w.push(format!(
                "{source}: the bond graph has {} separate molecules; they are simulated together as one system (one energy per member); to run different molecules as separate members, use one structure file per molecule (batches of different molecules are not supported yet)",
                self.components
            ));
        }
        w
    }
}

fn read_frames(path: &Path) -> Result<Vec<Frame>> {
    if !path.exists() {
        return Err(Error::structure(path, "file not found"));
    }
    if path.is_dir() {
        return Err(Error::structure(
            path,
            "is a directory, expected a structure file",
        ));
    }
    let mut trajectory = Trajectory::open(path, 'r').map_err(|e| {
        Error::structure(
            path,
            format!(
                "cannot open ({}); expected a structure format chemfiles reads (PDB, XYZ, SDF, MOL2, ...)",
                e.message
            ),
        )
    })?;
    let n = trajectory.nsteps();
    if n == 0 {
        return Err(Error::structure(
            path,
            "contains no structure (empty file?)",
        ));
    }
    let mut frames = Vec::with_capacity(n);
    for step in 0..n {
        let mut frame = Frame::new();
        trajectory.read(&mut frame).map_err(|e| {
            Error::structure(
                path,
                format!("cannot read structure {} of {n}: {}", step + 1, e.message),
            )
        })?;
        if frame.size() == 0 {
            return Err(Error::structure(
                path,
                format!("structure {} has zero atoms", step + 1),
            ));
        }
        frames.push(frame);
    }
    Ok(frames)
}

type AtomArrays = (Vec<i64>, Vec<f64>, Vec<String>);

fn atoms_of(frame: &Frame, path: &Path) -> Result<AtomArrays> {
    let n = frame.size();
    let mut z = Vec::with_capacity(n);
    let mut masses = Vec::with_capacity(n);
    let mut names = Vec::with_capacity(n);
    for i in 0..n {
        let atom = frame.atom(i);
        let number = atom.atomic_number();
        if number == 0 {
            return Err(Error::structure(
                path,
                format!(
                    "atom {} ({:?}, type {:?}) is not a known chemical element",
                    i + 1,
                    atom.name(),
                    atom.atomic_type()
                ),
            ));
        }
        let mass = atom.mass();
        if !(mass.is_finite() && mass > 0.0) {
            return Err(Error::structure(
                path,
                format!(
                    "atom {} ({:?}) has no usable mass ({mass})",
                    i + 1,
                    atom.name()
                ),
            ));
        }
        z.push(number as i64);
        masses.push(mass);
        names.push(atom.name());
    }
    Ok((z, masses, names))
}

fn overlap_warnings(m: &Molecule) -> Vec<String> {
    let mut warnings = Vec::new();
    for (s, positions) in m.structures.iter().enumerate() {
        for i in 0..positions.len() {
            for j in (i + 1)..positions.len() {
                let d: f64 = (0..3)
                    .map(|k| (positions[i][k] - positions[j][k]).powi(2))
                    .sum::<f64>()
                    .sqrt();
                if d < OVERLAP_DISTANCE {
                    warnings.push(format!(
                        "structure {}: atoms {} and {} are only {d:.3} Å apart",
                        s + 1,
                        i + 1,
                        j + 1
                    ));
                }
            }
        }
    }
    warnings
}

/// One frame of a structure file read as a screening-library record.
pub struct LibraryFrame {
    pub symbols: Vec<String>,
    pub positions: Vec<[f64; 3]>,
    /// (atom, atom, MDL bond type: 1, 2, 3, 4 aromatic), given or guessed.
    pub bonds: Vec<(usize, usize, u8)>,
    /// Total formal charge (the file's, as for `run`).
    pub charge: i64,
}

/// Every frame of `path` as a library record, each a frame or the reason it
/// cannot be used (a zero-atom frame, an unknown element, a frame chemfiles
/// cannot read); Err only when the file cannot be opened at all.
pub fn library_frames(path: &Path) -> Result<Vec<std::result::Result<LibraryFrame, String>>> {
    capture_chemfiles_warnings();
    let mut trajectory = Trajectory::open(path, 'r').map_err(|e| {
        Error::structure(
            path,
            format!(
                "cannot open ({}); expected SDF or a structure format chemfiles reads",
                e.message
            ),
        )
    })?;
    let n = trajectory.nsteps();
    let single = n == 1;
    let mut out = Vec::with_capacity(n);
    for step in 0..n {
        let mut frame = Frame::new();
        let read = trajectory
            .read_step(step, &mut frame)
            .map_err(|e| format!("cannot read this frame: {}", e.message))
            .and_then(|()| {
                if frame.size() == 0 {
                    return Err("the frame has zero atoms".to_string());
                }
                atoms_of(&frame, path).map_err(|e| match e {
                    Error::Structure { message, .. } => message,
                    other => other.to_string(),
                })?;
                if frame.topology().bonds_count() == 0 {
                    frame
                        .guess_bonds()
                        .map_err(|e| format!("cannot guess bonds: {}", e.message))?;
                }
                let topology = frame.topology();
                let bonds = topology
                    .bonds()
                    .into_iter()
                    .zip(topology.bond_orders())
                    .map(|([i, j], order)| {
                        let mdl = match order {
                            chemfiles::BondOrder::Double => 2,
                            chemfiles::BondOrder::Triple => 3,
                            chemfiles::BondOrder::Aromatic => 4,
                            _ => 1,
                        };
                        (i, j, mdl)
                    })
                    .collect();
                let charge = if single {
                    chemistry::formal_charge(path, &frame).map_or(0, |(q, _)| q)
                } else {
                    let sum: f64 = (0..frame.size()).map(|i| frame.atom(i).charge()).sum();
                    sum.round() as i64
                };
                Ok(LibraryFrame {
                    symbols: (0..frame.size())
                        .map(|i| frame.atom(i).atomic_type())
                        .collect(),
                    positions: frame.positions().to_vec(),
                    bonds,
                    charge,
                })
            });
        out.push(read);
    }
    let _ = take_chemfiles_warnings();
    Ok(out)
}
