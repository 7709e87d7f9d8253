//! Observables in HDF5, laid out the H5MD way: `/observables/<name>/{step,
//! time, value}` with `value[T, R]` (one column per member) and a `unit`
//! attribute; run metadata (config text, versions, device) as attributes of
//! `/parameters`; replica-exchange records under `/replica_exchange`. h5py,
//! MDAnalysis and pandas read it without help.

use std::path::{Path, PathBuf};

use hdf5::types::VarLenUnicode;
use hdf5::{Dataset, File, Group, H5Type, Location};
use ndarray::{s, ArrayView1, ArrayView2};

use crate::error::{Error, Result};

fn h5err(path: &Path) -> impl Fn(hdf5::Error) -> Error + '_ {
    move |e| Error::output(path, e)
}

/// Why the observables of a run to resume cannot be reopened. HDF5 locks
/// the files it opens; a lock held elsewhere (a notebook's h5py handle, or a
/// run still going) is a different cause from damage, and closing the reader
/// is the whole remedy, so the message says which it is.
fn reopen_failure(err: &hdf5::Error) -> String {
    let text = err.to_string();
    if text.contains("unable to lock file") {
        format!(
            "cannot reopen observables to resume: another process has the file open \
             (an h5py, HDFView or other reader, or a run still going); close it there \
             and resume again ({text})"
        )
    } else {
        format!(
            "cannot reopen observables to resume ({text}); the file may have been damaged by a crash"
        )
    }
}

/// Write a string attribute.
pub fn string_attr(loc: &Location, name: &str, value: &str) -> hdf5::Result<()> {
    let v: VarLenUnicode = value
        .parse()
        .unwrap_or_else(|_| "(not representable)".parse().expect("ASCII parses"));
    if loc.attr(name).is_ok() {
        loc.delete_attr(name)?;
    }
    loc.new_attr::<VarLenUnicode>()
        .create(name)?
        .write_scalar(&v)
}

/// A growable dataset: `[T]` (columns = None) or `[T, columns]`, appended one
/// row at a time, chunked so appends stay cheap.
pub struct Table {
    ds: Dataset,
    columns: Option<usize>,
    rows: usize,
}

impl Table {
    pub fn create<T: H5Type>(
        group: &Group,
        name: &str,
        columns: Option<usize>,
        unit: Option<&str>,
    ) -> hdf5::Result<Table> {
        const CHUNK_ROWS: usize = 64;
        let ds = match columns {
            None => group
                .new_dataset::<T>()
                .chunk(CHUNK_ROWS)
                .shape(0..)
                .create(name)?,
            Some(c) => group
                .new_dataset::<T>()
                .chunk((CHUNK_ROWS, c.clamp(1, 4096)))
                .shape((0.., c))
                .create(name)?,
        };
        if let Some(unit) = unit {
            string_attr(&ds, "unit", unit)?;
        }
        Ok(Table {
            ds,
            columns,
            rows: 0,
        })
    }

    /// Reopen an existing table, cutting it to its first `rows` rows.
    pub fn open(group: &Group, name: &str, rows: usize) -> hdf5::Result<Table> {
        let ds = group.dataset(name)?;
        let shape = ds.shape();
        let columns = match shape.len() {
            1 => None,
            2 => Some(shape[1]),
            n => {
                return Err(hdf5::Error::from(format!(
                    "{name}: expected 1 or 2 dimensions, found {n}"
                )))
            }
        };
        if shape[0] < rows {
            return Err(hdf5::Error::from(format!(
                "{name}: has {} rows but the checkpoint recorded {rows}",
                shape[0]
            )));
        }
        match columns {
            None => ds.resize(rows)?,
            Some(c) => ds.resize((rows, c))?,
        }
        Ok(Table { ds, columns, rows })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Append one row (one value for a 1-D table).
    pub fn append<T: H5Type>(&mut self, row: &[T]) -> hdf5::Result<()> {
        let n = self.rows;
        match self.columns {
            None => {
                self.ds.resize(n + 1)?;
                self.ds.write_slice(ArrayView1::from(row), s![n..n + 1])?;
            }
            Some(c) => {
                self.ds.resize((n + 1, c))?;
                let view = ArrayView2::from_shape((1, c), row).map_err(|e| {
                    hdf5::Error::from(format!("row of {} values for {c} columns: {e}", row.len()))
                })?;
                self.ds.write_slice(view, s![n..n + 1, ..])?;
            }
        }
        self.rows += 1;
        Ok(())
    }
}

/// One H5MD observable: step, time and value series.
struct Series {
    step: Table,
    time: Table,
    value: Table,
}

pub struct ObservablesWriter {
    file: File,
    path: PathBuf,
    names: Vec<String>,
    /// One per name; None for a series an existing file lacks (an
    /// observable added after it was written), which appends skip.
    series: Vec<Option<Series>>,
    n_members: usize,
}

impl ObservablesWriter {
    /// Create `path` with one series per `(name, unit)` for `n_members`
    /// members, and string attributes `metadata` on `/parameters`.
    pub fn create(
        path: &Path,
        n_members: usize,
        observables: &[(&str, &str)],
        metadata: &[(&str, String)],
        author: &str,
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
        let author_group = h5md.create_group("author").map_err(&e)?;
        string_attr(&author_group, "name", author).map_err(&e)?;
        // H5MD units module: every `step`/`time`/`value` dataset with a
        // physical unit carries a `unit` attribute (eV, K, fs), in the
        // units MD codes use rather than SI.
        let modules = h5md.create_group("modules").map_err(&e)?;
        let units = modules.create_group("units").map_err(&e)?;
        units
            .new_attr::<i32>()
            .shape(2)
            .create("version")
            .and_then(|a| a.write(&[1, 0]))
            .map_err(&e)?;
        string_attr(&units, "system", "non-SI").map_err(&e)?;
        let params = file.create_group("parameters").map_err(&e)?;
        for (k, v) in metadata {
            string_attr(&params, k, v).map_err(&e)?;
        }
        let obs = file.create_group("observables").map_err(&e)?;
        let mut series = Vec::new();
        for (name, unit) in observables {
            let g = obs.create_group(name).map_err(&e)?;
            series.push(Some(Series {
                step: Table::create::<i64>(&g, "step", None, None).map_err(&e)?,
                time: Table::create::<f64>(&g, "time", None, Some("fs")).map_err(&e)?,
                value: Table::create::<f64>(&g, "value", Some(n_members), Some(unit))
                    .map_err(&e)?,
            }));
        }
        Ok(ObservablesWriter {
            file,
            path: path.to_path_buf(),
            names: observables.iter().map(|(n, _)| n.to_string()).collect(),
            series,
            n_members,
        })
    }

    /// Reopen a file written by [`ObservablesWriter::create`] to append to
    /// it, cutting every series to its first `rows` records (those a
    /// checkpoint vouches for). A series named in `may_lack` that the file
    /// does not have (it was written before that observable existed) is
    /// left out of every append ([`ObservablesWriter::lacking`]); any other
    /// missing series is an error.
    pub fn open_existing(
        path: &Path,
        n_members: usize,
        observables: &[(&str, &str)],
        rows: usize,
        may_lack: &[&str],
    ) -> Result<Self> {
        let e = h5err(path);
        let file = File::open_rw(path).map_err(|err| Error::output(path, reopen_failure(&err)))?;
        let obs = file.group("observables").map_err(&e)?;
        let mut series = Vec::new();
        for (name, _) in observables {
            if may_lack.contains(name) && !obs.link_exists(name) {
                series.push(None);
                continue;
            }
            let g = obs.group(name).map_err(&e)?;
            series.push(Some(Series {
                step: Table::open(&g, "step", rows).map_err(&e)?,
                time: Table::open(&g, "time", rows).map_err(&e)?,
                value: Table::open(&g, "value", rows).map_err(&e)?,
            }));
        }
        Ok(ObservablesWriter {
            file,
            path: path.to_path_buf(),
            names: observables.iter().map(|(n, _)| n.to_string()).collect(),
            series,
            n_members,
        })
    }

    /// Records written so far.
    pub fn rows(&self) -> usize {
        self.series
            .iter()
            .flatten()
            .next()
            .map_or(0, |s| s.step.rows())
    }

    /// The observables this (existing) file has no series for.
    pub fn lacking(&self) -> impl Iterator<Item = &str> {
        self.names
            .iter()
            .zip(&self.series)
            .filter(|(_, s)| s.is_none())
            .map(|(n, _)| n.as_str())
    }

    /// An existing top-level group.
    pub fn group(&self, name: &str) -> Result<Group> {
        self.file.group(name).map_err(h5err(&self.path))
    }

    /// Append one record: `values[i]` (length R) for observable `i` (those
    /// the file lacks are checked and skipped).
    pub fn append(&mut self, step: u64, time_fs: f64, values: &[&[f64]]) -> Result<()> {
        let e = h5err(&self.path);
        assert_eq!(
            values.len(),
            self.series.len(),
            "one value slice per observable"
        );
        for ((series, vals), name) in self.series.iter_mut().zip(values).zip(&self.names) {
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
            let Some(series) = series else {
                continue;
            };
            series.step.append(&[step as i64]).map_err(&e)?;
            series.time.append(&[time_fs]).map_err(&e)?;
            series.value.append(vals).map_err(&e)?;
        }
        Ok(())
    }

    /// Push buffered data to disk, so an interrupted run keeps what it recorded.
    pub fn flush(&self) -> Result<()> {
        self.file.flush().map_err(h5err(&self.path))
    }

    /// Add (or replace) a string attribute of `/parameters`.
    pub fn set_parameter(&self, name: &str, value: &str) -> Result<()> {
        let e = h5err(&self.path);
        let params = self.file.group("parameters").map_err(&e)?;
        string_attr(&params, name, value).map_err(&e)
    }

    /// Create a top-level group for other records (e.g. replica exchange).
    pub fn create_group(&self, name: &str) -> Result<Group> {
        self.file.create_group(name).map_err(h5err(&self.path))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
