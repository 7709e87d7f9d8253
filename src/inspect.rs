//! `mlff-md inspect MODEL`: what a model file is and what it costs, before
//! a config names it. The file is loaded and evaluated exactly as a run
//! would (the same loading checks, the same force provider: the engine's
//! neighbour list for interface v2), on a small probe molecule, so a file
//! that `inspect` accepts is one `run` can use.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use tch::{Device, Kind};

use crate::bench::synchronize;
use crate::error::{Error, Result};
use crate::force::pairs::PairForces;
use crate::force::torchscript::TorchScriptModel;
use crate::force::{ForceOutput, ForceProvider};
use crate::simulation::file_sha256;
use crate::state::{to_host_f64, BatchState};
use crate::system::chemistry::element_symbol;
use crate::system::Molecule;

/// Timed calls after the first (the median is reported).
const TIMED_CALLS: usize = 5;

/// Glycine (systems/molecules/glycine.xyz): H, C, N and O in 10 atoms.
const GLYCINE: [(&str, [f64; 3]); 10] = [
    ("N", [-1.483015, 0.282791, 0.290891]),
    ("C", [-0.519347, -0.683553, -0.275040]),
    ("C", [0.916731, -0.176412, -0.213552]),
    ("O", [1.885438, -0.706664, -0.733865]),
    ("O", [1.072389, 0.951465, 0.514593]),
    ("H", [-1.403630, 1.152357, -0.239059]),
    ("H", [-1.146848, 0.536780, 1.223270]),
    ("H", [-0.778481, -0.867768, -1.321392]),
    ("H", [-0.578686, -1.617991, 0.289859]),
    ("H", [2.035450, 1.128994, 0.464296]),
];

/// What `inspect` found (printed as text, or as JSON with --json).
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    pub path: PathBuf,
    pub sha256: String,
    pub size_bytes: u64,
    /// 1: forward(atomic_numbers, positions, batch), isolated molecules;
    /// 2: the engine's neighbour list (cutoffs(), forward_pairs(...)).
    pub contract: u32,
    /// Methods of the contracts the file exports.
    pub entry_points: Vec<String>,
    /// Element symbols, when the model says (supported_elements()).
    pub elements: Option<Vec<String>>,
    /// Å, largest first (interface v2).
    pub cutoffs: Option<Vec<f64>>,
    /// Whether it can simulate periodic systems (interface v2 whose
    /// `periodic()`, if exported, is True).
    pub periodic: bool,
    /// Whether it has a static-shape path a CUDA graph can capture...
    pub capturable: bool,
    /// ...and if not, why.
    pub not_capturable_because: Option<String>,
    /// What it takes besides elements and geometry.
    pub charge_and_spin: String,
    pub metadata: Option<String>,
    pub device: String,
    pub positions_dtype: String,
    /// The molecule the timings are for.
    pub probe: String,
    pub probe_energy_ev: f64,
    /// Largest force component on the probe (eV/Å).
    pub probe_max_force_ev_per_a: f64,
    /// The first forward + backward (loading, lazy initialisation,
    /// TorchScript's profiling run), then the median of the next calls.
    pub first_call_ms: f64,
    pub call_ms: f64,
}

/// Load `path` on `device` and evaluate it on a probe molecule; every
/// reason the file cannot be used is an input error (exit 2) naming it.
pub fn inspect(path: &Path, device: Device, dtype: Kind) -> Result<ModelReport> {
    if crate::force::aoti::is_package(path) {
        return Err(Error::model(
            path,
            "is an AOTInductor package (.pt2): compiled for one molecule and member count (python/export_pt2.py), it cannot be probed on another molecule; `mlff-md inspect` reads TorchScript models, and a run with this file as [model] path checks it against its system",
        ));
    }
    let model = TorchScriptModel::load(path, device, dtype)?;
    let cannot_read = |e: std::io::Error| Error::model(path, format!("cannot read: {e}"));
    let sha256 = file_sha256(path).map_err(cannot_read)?;
    let size_bytes = std::fs::metadata(path).map_err(cannot_read)?.len();
    let entry_points: Vec<String> = model.entry_points().into_iter().map(String::from).collect();
    let supported = model.supported_elements();
    let cutoffs = model.takes_pairs().then(|| {
        use crate::force::pairs::PairModel;
        PairModel::cutoffs(&model)
    });
    let metadata = model.metadata().map(str::to_string);
    let takes_periodic = model.takes_periodic();
    let charge_and_spin = match model.takes_charge() {
        true => "total charge: takes_charge() = True, forward gets each structure's charge ([system] charge or the file's formal charges); no spin".to_string(),
        false => "none: the model takes no charge or spin; a charged structure is refused unless [system] allow_charged = true".to_string(),
    };
    let (molecule, probe) = probe_molecule(supported.as_deref())?;
    let state = BatchState::new(&molecule, 1, device, Kind::Double);
    let force: Box<dyn ForceProvider> = if model.takes_pairs() {
        Box::new(PairForces::new(Box::new(model), &state)?)
    } else {
        Box::new(model)
    };
    let capturable = force.prepare_static(&state);
    let unusable = |e: Error| match e {
        Error::Model { .. } => e,
        other => Error::model(path, format!("evaluating it on {probe} failed: {other}")),
    };
    let call = || -> Result<(ForceOutput, f64)> {
        let t0 = Instant::now();
        let out = force.compute(&state).map_err(unusable)?;
        synchronize(device);
        Ok((out, t0.elapsed().as_secs_f64() * 1e3))
    };
    let (first, first_call_ms) = call()?;
    let mut times = Vec::with_capacity(TIMED_CALLS);
    for _ in 0..TIMED_CALLS {
        times.push(call()?.1);
    }
    times.sort_by(f64::total_cmp);
    let energy = to_host_f64(&first.energies)[0];
    let max_force = to_host_f64(&first.forces.abs().max())[0];
    if !(energy.is_finite() && max_force.is_finite()) {
        return Err(Error::model(
            path,
            format!("gives a non-finite energy ({energy}) or forces on {probe}"),
        ));
    }
    let contract = if cutoffs.is_some() { 2 } else { 1 };
    Ok(ModelReport {
        path: path.to_path_buf(),
        sha256,
        size_bytes,
        contract,
        entry_points,
        elements: supported.map(|zs| zs.iter().map(|&z| element_symbol(z)).collect()),
        periodic: contract == 2 && takes_periodic,
        cutoffs,
        capturable: capturable.is_ok(),
        not_capturable_because: capturable.err(),
        charge_and_spin,
        metadata,
        device: crate::device::describe(device),
        positions_dtype: if dtype == Kind::Double {
            "float64"
        } else {
            "float32"
        }
        .into(),
        probe,
        probe_energy_ev: energy,
        probe_max_force_ev_per_a: max_force,
        first_call_ms,
        call_ms: times[TIMED_CALLS / 2],
    })
}

/// Glycine when the model takes H, C, N and O (or does not say); else a
/// small cluster of its lightest element (8 atoms on a cube of 2.5 Å edges).
fn probe_molecule(supported: Option<&[i64]>) -> Result<(Molecule, String)> {
    let organic = supported.is_none_or(|s| [1, 6, 7, 8].iter().all(|z| s.contains(z)));
    if organic {
        let (symbols, positions): (Vec<&str>, Vec<[f64; 3]>) = GLYCINE.iter().copied().unzip();
        return Ok((
            Molecule::from_symbols(&symbols, &positions)?,
            "glycine (10 atoms)".into(),
        ));
    }
    let z = supported
        .and_then(|s| s.iter().copied().filter(|&z| z > 0).min())
        .ok_or_else(|| Error::Invalid("supported_elements() lists no element".into()))?;
    let symbol = element_symbol(z);
    let positions: Vec<[f64; 3]> = (0..8)
        .map(|i| {
            [
                2.5 * (i & 1) as f64,
                2.5 * ((i >> 1) & 1) as f64,
                2.5 * ((i >> 2) & 1) as f64,
            ]
        })
        .collect();
    let symbols = vec![symbol.as_str(); 8];
    Ok((
        Molecule::from_symbols(&symbols, &positions)?,
        format!("a cube of 8 {symbol} atoms, 2.5 Å edges"),
    ))
}

impl ModelReport {
    /// The report for a terminal.
    pub fn text(&self) -> String {
        let or_unknown = |v: &Option<Vec<String>>| {
            v.as_ref()
                .map_or("not declared (supported_elements() absent)".into(), |v| {
                    v.join(" ")
                })
        };
        let contract = match self.contract {
            2 if self.periodic => {
                "v2 (takes the engine's neighbour list: free and periodic systems)"
            }
            2 => "v2 (takes the engine's neighbour list; isolated molecules: periodic() is False)",
            _ => "v1 (forward(atomic_numbers, positions, batch): isolated molecules only)",
        };
        let mut lines = vec![
            format!("model      {}", self.path.display()),
            format!("sha256     {}", self.sha256),
            format!("size       {}", size(self.size_bytes)),
            format!("contract   {contract}"),
            format!("methods    {}", self.entry_points.join(", ")),
            format!("elements   {}", or_unknown(&self.elements)),
        ];
        if let Some(c) = &self.cutoffs {
            let c: Vec<String> = c.iter().map(|x| format!("{x} Å")).collect();
            lines.push(format!("cutoffs    {}", c.join(", ")));
        }
        lines.push(format!(
            "periodic   {}",
            if self.periodic { "yes" } else { "no" }
        ));
        lines.push(format!(
            "CUDA graph {}",
            match &self.not_capturable_because {
                None => "capturable (static-shape path: prepare() and a prepared forward)".into(),
                Some(why) => format!("not capturable: {why}"),
            }
        ));
        lines.push(format!("charge     {}", self.charge_and_spin));
        if let Some(m) = &self.metadata {
            lines.push(format!("metadata   {}", one_line(m, 300)));
        }
        lines.push(format!(
            "probe      {} on {}, {} positions: E = {:.6} eV, max |F| = {:.4} eV/Å",
            self.probe,
            self.device,
            self.positions_dtype,
            self.probe_energy_ev,
            self.probe_max_force_ev_per_a
        ));
        lines.push(format!(
            "timing     forward + backward: first call {:.2} ms, then {:.3} ms (median of {TIMED_CALLS})",
            self.first_call_ms, self.call_ms
        ));
        lines.join("\n")
    }
}

/// "12.7 MB", "3.2 kB".
fn size(bytes: u64) -> String {
    if bytes >= 1_000_000 {
        format!("{:.1} MB", bytes as f64 / 1e6)
    } else {
        format!("{:.1} kB", bytes as f64 / 1e3)
    }
}

/// `s` on one line, cut to `max` characters.
fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    let cut: String = flat.chars().take(max).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::probe_molecule;

    #[test]
    fn the_probe_is_made_of_elements_the_model_takes() {
        let (m, what) = probe_molecule(None).unwrap();
        assert_eq!((m.n_atoms(), what.as_str()), (10, "glycine (10 atoms)"));
        let (m, _) = probe_molecule(Some(&[1, 6, 7, 8, 16])).unwrap();
        assert_eq!(m.n_atoms(), 10);
        // A model without hydrogen (a silicon potential, say): its lightest element.
        let (m, what) = probe_molecule(Some(&[32, 14])).unwrap();
        assert_eq!(m.atomic_numbers, vec![14; 8]);
        assert!(what.contains("8 Si atoms"), "{what}");
        assert!(probe_molecule(Some(&[])).is_err());
    }
}
