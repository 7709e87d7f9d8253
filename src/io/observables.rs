//! Observables in HDF5, laid out the H5MD way: `/observables/<name>/{step,
//! time, value}` with `value[T, R]` (one column per member) and a `unit`
//! attribute; run metadata (config text, versions, device) as attributes of
//! `/parameters`. h5py, MDAnalysis and pandas read it without help.

use std::path::{Path, PathBuf};

use hdf5::types::VarLenUnicode;
use hdf5::{Dataset, File, Location};
use ndarray::{s, ArrayView2};

use crate::error::{Error, Result};

/// One observable time series.
struct Series {
    step: Dataset,
    time: Dataset,
    value: Dataset,
}

pub struct ObservablesWriter {
    file: File,
    path: PathBuf,
    names: Vec<String>,
    series: Vec<Series>,
    n_members: usize,
    n_records: usize,
}

fn h5err(path: &Path) -> impl Fn(hdf5::Error) -> Error + '_ {
    move |e| Error::output(path, e)
}

fn string_attr(loc: &Location, name: &str, value: &str) -> hdf5::Result<()> {
    let v: VarLenUnicode = value
        .parse()
        .unwrap_or_else(|_| "(not representable)".parse().expect("ASCII parses"));
    loc.new_attr::<VarLenUnicode>()
        .create(name)?
        .write_scalar(&v)
}

impl ObservablesWriter {
    /// Create `path` with one series per `(name, unit)` for `n_members`
    /// members, and string attributes `metadata` on `/parameters`.
    pub fn create(
        path: &Path,
        n_members: usize,
        observables: &[(&str, &str)],
        metadata: &[(&str, String)],
    ) -> Result<Self> {
        let e = h5err(path);
        let file = File::create(path).map_err(&e)?;
        let h5md = file.create_group("h5md").map_err(&e)?;
        h5md.new_attr::<i32>()
            .shape(2)
            .create("version")
            .and_then(|a| a.write(&[1, 1]))
            .map_err(&e)?;
        let creator = h5md.create_group("creator").map_err(&e)?;
        string_attr(&creator, "name", "mlff-md").map_err(&e)?;
        string_attr(&creator, "version", env!("CARGO_PKG_VERSION")).map_err(&e)?;
        let author = h5md.create_group("author").map_err(&e)?;
        string_attr(
            &author,
            "name",
            &std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
        )
        .map_err(&e)?;
        let params = file.create_group("parameters").map_err(&e)?;
        for (k, v) in metadata {
            string_attr(&params, k, v).map_err(&e)?;
        }
        let obs = file.create_group("observables").map_err(&e)?;
        let chunk_rows = 64;
        let chunk_cols = n_members.clamp(1, 4096);
        let mut series = Vec::new();
        for (name, unit) in observables {
            let g = obs.create_group(name).map_err(&e)?;
            let step = g
                .new_dataset::<i64>()
                .chunk(chunk_rows)
                .shape(0..)
                .create("step")
                .map_err(&e)?;
            let time = g
                .new_dataset::<f64>()
                .chunk(chunk_rows)
                .shape(0..)
                .create("time")
                .map_err(&e)?;
            string_attr(&time, "unit", "fs").map_err(&e)?;
            let value = g
                .new_dataset::<f64>()
                .chunk((chunk_rows, chunk_cols))
                .shape((0.., n_members))
                .create("value")
                .map_err(&e)?;
            string_attr(&value, "unit", unit).map_err(&e)?;
            series.push(Series { step, time, value });
        }
        Ok(ObservablesWriter {
            file,
            path: path.to_path_buf(),
            names: observables.iter().map(|(n, _)| n.to_string()).collect(),
            series,
            n_members,
            n_records: 0,
        })
    }

    /// Append one record: `values[i]` (length R) for observable `i`.
    pub fn append(&mut self, step: u64, time_fs: f64, values: &[&[f64]]) -> Result<()> {
        let e = h5err(&self.path);
        assert_eq!(
            values.len(),
            self.series.len(),
            "one value slice per observable"
        );
        let n = self.n_records;
        for ((series, vals), name) in self.series.iter().zip(values).zip(&self.names) {
            if vals.len() != self.n_members {
                return Err(Error::output(
                    &self.path,
                    format!(
                        "{name}: {} values for {} members",
                        vals.len(),
                        self.n_members
                    ),
                ));
            }
            series.step.resize(n + 1).map_err(&e)?;
            series
                .step
                .write_slice(&[step as i64], s![n..n + 1])
                .map_err(&e)?;
            series.time.resize(n + 1).map_err(&e)?;
            series
                .time
                .write_slice(&[time_fs], s![n..n + 1])
                .map_err(&e)?;
            series.value.resize((n + 1, self.n_members)).map_err(&e)?;
            let row =
                ArrayView2::from_shape((1, self.n_members), vals).expect("length checked above");
            series
                .value
                .write_slice(row, s![n..n + 1, ..])
                .map_err(&e)?;
        }
        self.n_records += 1;
        Ok(())
    }

    /// Push buffered data to disk, so an interrupted run keeps what it recorded.
    pub fn flush(&self) -> Result<()> {
        self.file.flush().map_err(h5err(&self.path))
    }

    /// Add a string attribute to `/parameters` (e.g. a run summary).
    pub fn set_parameter(&self, name: &str, value: &str) -> Result<()> {
        let e = h5err(&self.path);
        let params = self.file.group("parameters").map_err(&e)?;
        if params.attr(name).is_ok() {
            params.delete_attr(name).map_err(&e)?;
        }
        string_attr(&params, name, value).map_err(&e)
    }
}
