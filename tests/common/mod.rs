#![allow(dead_code)]

use std::path::PathBuf;

use mlff_md::system::Molecule;
use tch::Tensor;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn ethanol() -> Molecule {
    Molecule::load(&[root().join("systems/ethanol.xyz")]).expect("ethanol loads")
}

pub fn host(t: &Tensor) -> Vec<f64> {
    mlff_md::state::to_host_f64(t)
}

pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Standard error of the mean of independent samples.
pub fn standard_error(v: &[f64]) -> f64 {
    let m = mean(v);
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() as f64 - 1.0);
    (var / v.len() as f64).sqrt()
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}
