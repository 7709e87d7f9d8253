//! What a report reads: a run's observables.h5, opened read-only without
//! HDF5's file lock, so a report of a running run neither waits for nor
//! disturbs the writer (it flushes after every observables row; a report
//! sees the rows flushed so far, cut to the length every series has).

use std::path::{Path, PathBuf};

use hdf5::types::VarLenUnicode;
use hdf5::{File, Group};
use ndarray::Array2;

use crate::error::{Error, Result};

/// One observable: `value[t][member]` at `time_fs[t]`.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub unit: String,
    pub time_fs: Vec<f64>,
    pub value: Array2<f64>,
}

/// The replica-exchange records (`/replica_exchange`).
#[derive(Debug, Clone)]
pub struct ExchangeRecords {
    pub temperatures: Vec<f64>,
    pub steps: Vec<u64>,
    /// `[E, R]`: temperature index of each replica slot after each exchange.
    pub state_of_replica: Array2<i64>,
    /// `[E, R]`: the potential energies (eV) each exchange decided on.
    pub potential_energy: Array2<f64>,
    /// `[K, K]` attempts and acceptances (upper triangle), written when the
    /// run finishes or stops.
    pub matrices: Option<(Array2<i64>, Array2<i64>)>,
    /// "Neighbor" or "AllPairs".
    pub scheme: String,
}

impl ExchangeRecords {
    pub fn n_states(&self) -> usize {
        self.temperatures.len()
    }

    pub fn n_replicas(&self) -> usize {
        self.state_of_replica.ncols()
    }

    pub fn n_ladders(&self) -> usize {
        self.n_replicas() / self.n_states().max(1)
    }

    pub fn n_exchanges(&self) -> usize {
        self.steps.len()
    }

    /// Temperature index of replica slot `r` just before exchange `e`: the
    /// state its energy in row `e` was sampled in. Slots start at their
    /// initial index (slot = ladder · K + index).
    pub fn state_before(&self, e: usize, r: usize) -> usize {
        if e == 0 {
            r % self.n_states()
        } else {
            self.state_of_replica[(e - 1, r)] as usize
        }
    }
}

/// Everything a report needs from a run directory.
#[derive(Debug, Clone)]
pub struct RunData {
    pub directory: PathBuf,
    pub h5_path: PathBuf,
    pub timestep_fs: f64,
    pub production_start_step: u64,
    /// Whether the run wrote its end-of-run summary (finished or stopped
    /// cleanly); false while it runs or after a crash.
    pub finished: bool,
    pub observables: Vec<Series>,
    pub exchange: Option<ExchangeRecords>,
}

impl RunData {
    pub fn series(&self, name: &str) -> Option<&Series> {
        self.observables.iter().find(|s| s.name == name)
    }

    /// Read `directory/observables.h5`. A file the writer is extending may
    /// be caught between two HDF5 metadata writes: the read is retried a
    /// few times before it counts as unreadable.
    pub fn read(directory: &Path) -> Result<RunData> {
        let h5_path = directory.join("observables.h5");
        if !directory.is_dir() {
            return Err(Error::input(
                directory,
                "not a directory (give the run's output directory, the one holding observables.h5)",
            ));
        }
        if !h5_path.is_file() {
            return Err(Error::input(
                &h5_path,
                "missing: is this a run's output directory? (`mlff-md run` writes observables.h5 there)",
            ));
        }
        let mut last = None;
        for attempt in 0..5 {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            match read_once(directory, &h5_path) {
                Ok(d) => return Ok(d),
                Err(e) => last = Some(e),
            }
        }
        Err(Error::input(
            &h5_path,
            format!(
                "cannot be read: {}",
                last.map_or_else(String::new, |e| e.to_string())
            ),
        ))
    }
}

fn read_once(directory: &Path, h5_path: &Path) -> hdf5::Result<RunData> {
    let file = File::with_options()
        .with_fapl(|p| p.file_locking(false))
        .open(h5_path)?;
    let params = file.group("parameters")?;
    let timestep_fs = string_attr(&params, "timestep_fs")?
        .trim()
        .parse::<f64>()
        .map_err(|e| hdf5::Error::from(format!("parameters/timestep_fs: {e}")))?;
    let production_start_step = string_attr(&params, "production_start_step")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let finished = params.attr("summary").is_ok();
    let obs = file.group("observables")?;
    let mut observables = Vec::new();
    for name in obs.member_names()? {
        let g = obs.group(&name)?;
        let time_fs = g.dataset("time")?.read_1d::<f64>()?.to_vec();
        let value_ds = g.dataset("value")?;
        let unit = string_attr(&value_ds, "unit").unwrap_or_default();
        let value = value_ds.read_2d::<f64>()?;
        observables.push(Series {
            name,
            unit,
            time_fs,
            value,
        });
    }
    // Rows are appended series by series: a report that catches the writer
    // mid-row keeps the rows every series has.
    let rows = observables
        .iter()
        .map(|s| s.time_fs.len().min(s.value.nrows()))
        .min()
        .unwrap_or(0);
    for s in &mut observables {
        s.time_fs.truncate(rows);
        s.value = s.value.slice(ndarray::s![..rows, ..]).to_owned();
    }
    let exchange = if file.link_exists("replica_exchange") {
        Some(read_exchange(&file.group("replica_exchange")?)?)
    } else {
        None
    };
    Ok(RunData {
        directory: directory.to_path_buf(),
        h5_path: h5_path.to_path_buf(),
        timestep_fs,
        production_start_step,
        finished,
        observables,
        exchange,
    })
}

fn read_exchange(g: &Group) -> hdf5::Result<ExchangeRecords> {
    let temperatures = g.dataset("temperatures")?.read_1d::<f64>()?.to_vec();
    let steps: Vec<u64> = g
        .dataset("step")?
        .read_1d::<i64>()?
        .iter()
        .map(|&s| s as u64)
        .collect();
    let state_of_replica = g.dataset("state_of_replica")?.read_2d::<i64>()?;
    let potential_energy = g.dataset("potential_energy")?.read_2d::<f64>()?;
    let rows = steps
        .len()
        .min(state_of_replica.nrows())
        .min(potential_energy.nrows());
    let matrices = if g.link_exists("attempts") && g.link_exists("accepts") {
        Some((
            g.dataset("attempts")?.read_2d::<i64>()?,
            g.dataset("accepts")?.read_2d::<i64>()?,
        ))
    } else {
        None
    };
    let scheme = string_attr(g, "scheme").unwrap_or_default();
    let k = temperatures.len();
    if k < 2 || state_of_replica.ncols() % k != 0 {
        return Err(hdf5::Error::from(format!(
            "replica_exchange: {} replica slots for {k} temperatures",
            state_of_replica.ncols()
        )));
    }
    if state_of_replica.iter().any(|&s| s < 0 || s as usize >= k) {
        return Err(hdf5::Error::from(
            "replica_exchange/state_of_replica: a temperature index outside the ladder",
        ));
    }
    Ok(ExchangeRecords {
        temperatures,
        steps: steps[..rows].to_vec(),
        state_of_replica: state_of_replica.slice(ndarray::s![..rows, ..]).to_owned(),
        potential_energy: potential_energy.slice(ndarray::s![..rows, ..]).to_owned(),
        matrices,
        scheme,
    })
}

fn string_attr(loc: &hdf5::Location, name: &str) -> hdf5::Result<String> {
    let v: VarLenUnicode = loc.attr(name)?.read_scalar()?;
    Ok(v.as_str().to_string())
}
