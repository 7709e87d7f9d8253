//! The report of a screen (`mlff-md screen`): its results.csv told as
//! outcome counts, skip reasons, FIRE iterations and relaxation energies.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use super::figures::{self, Axes, Line};
use super::Figure;
use crate::error::{Error, Result};

/// A screen's output directory: results.csv and no run observables.
pub(super) fn is_screen(dir: &Path) -> bool {
    dir.join("results.csv").is_file() && !dir.join("observables.h5").exists()
}

/// Fields of one CSV line (RFC 4180 quoting, as the screen writes it).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    fields.push(field);
    fields
}

struct Row {
    status: String,
    reason: String,
    energy: Option<f64>,
    energy_start: Option<f64>,
    iterations: Option<f64>,
    conformer: String,
}

fn read_rows(path: &Path) -> Result<Vec<Row>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::input(path, e))?;
    // Records may hold quoted newlines in names: join lines until the
    // quotes balance.
    let mut lines = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        if !pending.is_empty() {
            pending.push('\n');
        }
        pending.push_str(line);
        if pending.matches('"').count() % 2 == 0 {
            lines.push(std::mem::take(&mut pending));
        }
    }
    let mut lines = lines.into_iter();
    let header = csv_fields(&lines.next().ok_or_else(|| Error::input(path, "empty"))?);
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| Error::input(path, format!("no column {name:?} in the header")))
    };
    let (status, reason, energy, start, iterations, conformer) = (
        column("status")?,
        column("reason")?,
        column("energy_ev")?,
        column("energy_start_ev")?,
        column("iterations")?,
        column("conformer")?,
    );
    Ok(lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f = csv_fields(&l);
            let get = |i: usize| f.get(i).cloned().unwrap_or_default();
            let num = |i: usize| get(i).trim().parse::<f64>().ok();
            Row {
                status: get(status),
                reason: get(reason),
                energy: num(energy),
                energy_start: num(start),
                iterations: num(iterations),
                conformer: get(conformer),
            }
        })
        .collect())
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    })
}

/// Figures, numbers and text of the screen in `dir`.
pub(super) fn section(dir: &Path, figs: &mut Vec<Figure>) -> Result<(Value, String)> {
    let rows = read_rows(&dir.join("results.csv"))?;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        *counts.entry(r.status.as_str()).or_default() += 1;
        if r.status == "skipped" {
            // The kind of reason, without the record's own details.
            let kind = r.reason.split(':').next().unwrap_or("").trim().to_string();
            *reasons.entry(kind).or_default() += 1;
        }
    }
    let finished: Vec<&Row> = rows.iter().filter(|r| r.iterations.is_some()).collect();
    let iterations: Vec<f64> = finished.iter().filter_map(|r| r.iterations).collect();
    let relaxation: Vec<f64> = finished
        .iter()
        .filter_map(|r| Some(r.energy_start? - r.energy?))
        .collect();
    let from_conformer = finished
        .iter()
        .filter(|r| !r.conformer.is_empty() && r.conformer != "input")
        .count();
    let statuses = ["converged", "not converged", "skipped", "pending"];
    let total = rows.len().max(1) as f64;
    figs.push(Figure {
        file: "screen_outcomes.svg".into(),
        title: "Outcome per record".into(),
        note: format!("{} records of results.csv.", rows.len()),
        svg: figures::bar_chart(
            &Axes {
                title: "Outcomes",
                x: "status",
                y: "fraction of records",
            },
            &statuses.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            &statuses
                .iter()
                .map(|s| Some(*counts.get(s).unwrap_or(&0) as f64 / total))
                .collect::<Vec<_>>(),
        )?,
    });
    for (file, title, x, values) in [
        (
            "screen_iterations.svg",
            "FIRE iterations per molecule",
            "iterations",
            &iterations,
        ),
        (
            "screen_relaxation.svg",
            "Energy lowered by the minimisation",
            "E(start) − E(final) (eV)",
            &relaxation,
        ),
    ] {
        if values.is_empty() {
            continue;
        }
        let (lo, hi) = values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let (xs, ys) = figures::histogram(values, lo, hi.max(lo + 1e-9), 40);
        figs.push(Figure {
            file: file.into(),
            title: title.into(),
            note: format!("{} screened molecules.", values.len()),
            svg: figures::line_chart(
                &Axes {
                    title,
                    x,
                    y: "probability density",
                },
                &[Line::new(xs, ys)],
            )?,
        });
    }
    let count = |s: &str| counts.get(s).copied().unwrap_or(0);
    let mut text = String::new();
    let _ = writeln!(
        text,
        "screen {}: {} records: {} converged, {} not converged, {} skipped, {} pending",
        dir.display(),
        rows.len(),
        count("converged"),
        count("not converged"),
        count("skipped"),
        count("pending")
    );
    if let (Some(mi), Some(mr)) = (median(iterations.clone()), median(relaxation.clone())) {
        let _ = writeln!(
            text,
            "  median FIRE iterations {mi:.0}; median energy lowered {mr:.4} eV{}",
            if from_conformer > 0 {
                format!("; {from_conformer} lowest from a sampled conformer")
            } else {
                String::new()
            }
        );
    }
    for (reason, n) in &reasons {
        let _ = writeln!(text, "  skipped {n}: {reason}");
    }
    Ok((
        json!({
            "records": rows.len(),
            "counts": counts,
            "skipped_reasons": reasons,
            "median_iterations": median(iterations),
            "median_relaxation_ev": median(relaxation),
            "lowest_from_conformer": from_conformer,
        }),
        text,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_follow_rfc_4180() {
        assert_eq!(
            csv_fields("a,\"b,c\",\"d\"\"e\",,f"),
            vec!["a", "b,c", "d\"e", "", "f"]
        );
        assert_eq!(median(vec![3.0, 1.0, 2.0, 10.0]), Some(2.5));
    }
}
