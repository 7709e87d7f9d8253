//! Replica-exchange records in the observables file, under `/replica_exchange`:
//! per exchange the step, the replica → temperature-index map, the potential
//! energies the decision used and the number of accepted swaps; at the end the
//! attempt/acceptance matrices, occupancy and a JSON summary.

use hdf5::Group;

use super::observables::{string_attr, ObservablesWriter, Table};
use crate::error::{Error, Result};
use crate::sampling::{ExchangeOutcome, ReplicaExchange};

pub struct ExchangeRecorder {
    group: Group,
    path: std::path::PathBuf,
    step: Table,
    state_of_replica: Table,
    potential_energy: Table,
    accepted: Table,
}

impl ExchangeRecorder {
    pub fn create(obs: &ObservablesWriter, rex: &ReplicaExchange) -> Result<Self> {
        let path = obs.path().to_path_buf();
        let e = |err: hdf5::Error| Error::output(&path, err);
        let group = obs.create_group("replica_exchange")?;
        let r = rex.n_replicas();
        let k = rex.n_states();
        group
            .new_dataset_builder()
            .with_data(&rex.temperatures)
            .create("temperatures")
            .and_then(|d| string_attr(&d, "unit", "K"))
            .map_err(e)?;
        string_attr(&group, "scheme", &format!("{:?}", rex.scheme)).map_err(e)?;
        string_attr(
            &group,
            "layout",
            &format!(
                "replica slot r = ladder * {k} + initial temperature index; {} ladder(s)",
                rex.n_ladders
            ),
        )
        .map_err(e)?;
        Ok(ExchangeRecorder {
            step: Table::create::<i64>(&group, "step", None, None).map_err(e)?,
            state_of_replica: Table::create::<i64>(&group, "state_of_replica", Some(r), None)
                .map_err(e)?,
            potential_energy: Table::create::<f64>(&group, "potential_energy", Some(r), Some("eV"))
                .map_err(e)?,
            accepted: Table::create::<i64>(&group, "accepted", None, None).map_err(e)?,
            group,
            path,
        })
    }

    /// Reopen the records of an earlier run, cut to `rows` exchanges.
    pub fn open_existing(obs: &ObservablesWriter, rows: usize) -> Result<Self> {
        let path = obs.path().to_path_buf();
        let e = |err: hdf5::Error| Error::output(&path, err);
        let group = obs.group("replica_exchange")?;
        Ok(ExchangeRecorder {
            step: Table::open(&group, "step", rows).map_err(e)?,
            state_of_replica: Table::open(&group, "state_of_replica", rows).map_err(e)?,
            potential_energy: Table::open(&group, "potential_energy", rows).map_err(e)?,
            accepted: Table::open(&group, "accepted", rows).map_err(e)?,
            group,
            path,
        })
    }

    pub fn rows(&self) -> usize {
        self.step.rows()
    }

    /// Record one exchange: the map after it and the energies it used.
    pub fn record(
        &mut self,
        step: u64,
        rex: &ReplicaExchange,
        energies: &[f64],
        outcome: &ExchangeOutcome,
    ) -> Result<()> {
        let e = |err: hdf5::Error| Error::output(&self.path, err);
        let states: Vec<i64> = rex.state_of.iter().map(|&s| s as i64).collect();
        self.step.append(&[step as i64]).map_err(e)?;
        self.state_of_replica.append(&states).map_err(e)?;
        self.potential_energy.append(energies).map_err(e)?;
        self.accepted
            .append(&[outcome.accepted as i64])
            .map_err(e)?;
        Ok(())
    }

    /// Final statistics: matrices [K, K], occupancy [R, K], summary JSON.
    pub fn finish(&self, rex: &ReplicaExchange, summary_json: &str) -> Result<()> {
        let e = |err: hdf5::Error| Error::output(&self.path, err);
        let k = rex.n_states();
        let r = rex.n_replicas();
        let attempts = ndarray::Array2::from_shape_vec(
            (k, k),
            rex.attempts.iter().map(|&x| x as i64).collect(),
        )
        .expect("K*K entries");
        let accepts = ndarray::Array2::from_shape_vec(
            (k, k),
            rex.accepts.iter().map(|&x| x as i64).collect(),
        )
        .expect("K*K entries");
        let occupancy = ndarray::Array2::from_shape_vec(
            (r, k),
            rex.occupancy.iter().map(|&x| x as i64).collect(),
        )
        .expect("R*K entries");
        for (name, data) in [
            ("attempts", &attempts),
            ("accepts", &accepts),
            ("occupancy", &occupancy),
        ] {
            if self.group.link_exists(name) {
                self.group.unlink(name).map_err(e)?;
            }
            self.group
                .new_dataset_builder()
                .with_data(data)
                .create(name)
                .map_err(e)?;
        }
        string_attr(&self.group, "summary", summary_json).map_err(e)
    }
}
