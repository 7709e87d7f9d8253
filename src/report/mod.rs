//! `mlff-md report DIR`: a run told in figures and numbers. Reads the run's
//! observables.h5 (read-only, also while the run is writing it), writes
//! DIR/report/index.html (self-contained: figures inline as SVG, no
//! scripts), each figure as an .svg beside it, report.json with every
//! number the page shows, and returns a short text summary.
//!
//! A screen's output directory (results.csv) gets its outcome counts, skip
//! reasons, FIRE iterations and relaxation energies instead.
//!
//! Replica-exchange runs also get acceptance, replica walks, round trips,
//! energy histograms per temperature, a suggested ladder, and MBAR free
//! energies and heat capacities over the ladder ([`mbar`]).

mod conformations;
pub mod data;
pub mod figures;
pub mod mbar;
pub mod remd;
mod screening;
pub mod structure;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::error::{Error, Result};
use data::{RunData, Series};
use figures::{Axes, Line};
use mbar::Mbar;

/// How many members' curves a time-series figure draws (besides the mean).
pub(crate) const MAX_MEMBER_LINES: usize = 8;
/// Exchanges shown in the replica-walk figure.
const MAX_WALK_EXCHANGES: usize = 200;
/// Bootstrap resamples behind the heat-capacity errors, and their seed.
const BOOTSTRAP_RESAMPLES: usize = 100;
const BOOTSTRAP_SEED: u64 = 2026;
/// Temperatures at which the heat capacity is drawn.
const HEAT_CAPACITY_POINTS: usize = 41;

#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Where to write (default DIR/report).
    pub output: Option<PathBuf>,
    /// A reference structure (e.g. the folded peptide) for RMSD figures.
    pub reference: Option<PathBuf>,
    /// RMSD (Å) below which a frame counts as folded.
    pub folded_below: f64,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            output: None,
            reference: None,
            folded_below: 2.0,
        }
    }
}

/// What `report` wrote and the text summary to print.
#[derive(Debug, Clone)]
pub struct ReportSummary {
    pub directory: PathBuf,
    pub figures: Vec<String>,
    pub text: String,
}

pub(crate) struct Figure {
    file: String,
    title: String,
    note: String,
    svg: String,
}

/// Write the report of the run in `run_dir`.
pub fn report(run_dir: &Path, options: &ReportOptions) -> Result<ReportSummary> {
    let out = options
        .output
        .clone()
        .unwrap_or_else(|| run_dir.join("report"));
    if screening::is_screen(run_dir) {
        let mut figures = Vec::new();
        let (screen_json, text) = screening::section(run_dir, &mut figures)?;
        let mut json = serde_json::Map::new();
        json.insert("screen".into(), screen_json);
        return write_report(run_dir, &out, text, json, figures);
    }
    let data = RunData::read(run_dir)?;

    // Time series go last on the page: replica exchange and structure,
    // what a user opens the report for, first.
    let mut figures = Vec::new();
    let mut time_series = Vec::new();
    let mut text = String::new();
    let mut json = serde_json::Map::new();
    let rows = data.observables.first().map_or(0, |s| s.time_fs.len());
    let members = data.observables.first().map_or(0, |s| s.value.ncols());
    let last_ps = data
        .observables
        .first()
        .and_then(|s| s.time_fs.last())
        .map_or(0.0, |t| t * 1e-3);
    let _ = writeln!(
        text,
        "run {}: {members} member(s), {rows} observable rows up to {last_ps:.3} ps ({})",
        run_dir.display(),
        if data.finished {
            "finished or stopped cleanly"
        } else {
            "running, or ended without its summary"
        }
    );
    json.insert(
        "run".into(),
        json!({
            "directory": run_dir.display().to_string(),
            "members": members,
            "observable_rows": rows,
            "last_time_ps": last_ps,
            "timestep_fs": data.timestep_fs,
            "production_start_step": data.production_start_step,
            "finished": data.finished,
        }),
    );

    let mut observables_json = serde_json::Map::new();
    for (name, title) in [
        ("potential_energy", "Potential energy"),
        ("kinetic_energy", "Kinetic energy"),
        ("total_energy", "Total energy"),
        ("temperature", "Temperature (kinetic)"),
        ("volume", "Volume"),
        ("density", "Density"),
        ("pressure", "Pressure (virial)"),
    ] {
        let Some(series) = data.series(name) else {
            continue;
        };
        if series.time_fs.is_empty() {
            continue;
        }
        let (mean, spread) = last_half_mean(series);
        let _ = writeln!(
            text,
            "  {title}: {mean:.6} {} (second half, mean over members; spread between members {spread:.3e})",
            series.unit
        );
        observables_json.insert(
            name.into(),
            json!({"unit": series.unit, "second_half_mean": mean, "member_spread": spread}),
        );
        time_series.push(Figure {
            file: format!("{name}.svg"),
            title: title.into(),
            note: member_note(series.value.ncols()),
            svg: figures::line_chart(
                &Axes {
                    title,
                    x: "time (ps)",
                    y: &format!("{} ({})", title.to_lowercase(), series.unit),
                },
                &time_lines(series),
            )?,
        });
    }
    json.insert("observables".into(), observables_json.into());

    if let Some(rec) = &data.exchange {
        let (remd_json, remd_text) = replica_exchange_section(&data, rec, &mut figures)?;
        json.insert("replica_exchange".into(), remd_json);
        text.push_str(&remd_text);
    }

    if let Some((structure_json, structure_text)) =
        conformations::section(&data, options, &mut figures)?
    {
        json.insert("structure".into(), structure_json);
        text.push_str(&structure_text);
    } else if options.reference.is_some() {
        return Err(Error::Invalid(format!(
            "--reference: the run in {} has no topology.pdb or trajectory frames to compare",
            run_dir.display()
        )));
    }

    figures.append(&mut time_series);
    write_report(run_dir, &out, text, json, figures)
}

/// Write the figures, report.json and the page to `out`.
fn write_report(
    run_dir: &Path,
    out: &Path,
    mut text: String,
    json: serde_json::Map<String, serde_json::Value>,
    figures: Vec<Figure>,
) -> Result<ReportSummary> {
    std::fs::create_dir_all(out).map_err(|e| Error::output_path(out, e))?;
    for f in &figures {
        let path = out.join(&f.file);
        std::fs::write(&path, &f.svg).map_err(|e| Error::output(&path, e))?;
    }
    let json_path = out.join("report.json");
    let json_text = serde_json::to_string_pretty(&serde_json::Value::Object(json))
        .map_err(|e| Error::output(&json_path, e))?;
    std::fs::write(&json_path, json_text).map_err(|e| Error::output(&json_path, e))?;
    let html_path = out.join("index.html");
    std::fs::write(&html_path, html_page(run_dir, &text, &figures))
        .map_err(|e| Error::output(&html_path, e))?;
    let _ = writeln!(text, "report: {}", html_path.display());
    Ok(ReportSummary {
        directory: out.to_path_buf(),
        figures: figures.iter().map(|f| f.file.clone()).collect(),
        text,
    })
}

fn replica_exchange_section(
    data: &RunData,
    rec: &data::ExchangeRecords,
    figures: &mut Vec<Figure>,
) -> Result<(serde_json::Value, String)> {
    let mut text = String::new();
    let k = rec.n_states();
    let temps = &rec.temperatures;
    let dt_ps = data.timestep_fs * 1e-3;
    let _ = writeln!(
        text,
        "replica exchange: {k} temperatures {:.1}-{:.1} K, {} ladder(s), {} exchanges",
        temps[0],
        temps[k - 1],
        rec.n_ladders(),
        rec.n_exchanges()
    );
    let mut out = serde_json::Map::new();
    out.insert("temperatures_k".into(), json!(temps));
    out.insert("n_ladders".into(), json!(rec.n_ladders()));
    out.insert("exchanges".into(), json!(rec.n_exchanges()));

    if let Some(acc) = remd::acceptance(rec) {
        let _ = writeln!(
            text,
            "  neighbour acceptance ({}): {}",
            acc.source,
            acc.rate
                .iter()
                .map(|r| r.map_or("-".into(), |r| format!("{r:.2}")))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let labels: Vec<String> = (0..k - 1)
            .map(|a| format!("{:.0}-{:.0}", temps[a], temps[a + 1]))
            .collect();
        figures.push(Figure {
            file: "exchange_acceptance.svg".into(),
            title: "Exchange acceptance per neighbour pair".into(),
            note: format!("From the {}.", acc.source),
            svg: figures::bar_chart(
                &Axes {
                    title: "Exchange acceptance",
                    x: "temperature pair (K)",
                    y: "accepted fraction",
                },
                &labels,
                &acc.rate,
            )?,
        });
        out.insert(
            "acceptance".into(),
            serde_json::to_value(&acc).unwrap_or_default(),
        );
    }

    let (trips, lengths) = remd::round_trips(rec);
    let total: u64 = trips.iter().sum();
    let trip_steps: u64 = lengths.iter().sum();
    let mean_trip_ps = (total > 0).then(|| trip_steps as f64 / total as f64 * dt_ps);
    if lengths.len() >= 2 {
        let times: Vec<f64> = lengths.iter().map(|&l| l as f64 * dt_ps).collect();
        let hi = times.iter().copied().fold(0.0, f64::max);
        let (xs, ys) = figures::histogram(&times, 0.0, hi, 30);
        figures.push(Figure {
            file: "round_trips.svg".into(),
            title: "Round-trip times".into(),
            note: format!(
                "Times of the {} completed T_min → T_max → T_min trips of all replicas (mean {:.3} ps); short trips mean a well-mixed ladder.",
                lengths.len(),
                mean_trip_ps.unwrap_or(0.0)
            ),
            svg: figures::line_chart(
                &Axes {
                    title: "Round-trip times",
                    x: "round-trip time (ps)",
                    y: "probability density (1/ps)",
                },
                &[Line::new(xs, ys)],
            )?,
        });
    }
    let _ = writeln!(
        text,
        "  round trips T_min -> T_max -> T_min: {total} over {} replicas{}",
        trips.len(),
        mean_trip_ps.map_or(String::new(), |t| format!(", mean {t:.3} ps"))
    );
    out.insert("round_trips_per_replica".into(), json!(trips));
    out.insert("mean_round_trip_ps".into(), json!(mean_trip_ps));

    // Walks of two replicas of the first ladder (those starting at the
    // ends) over the first exchanges: more lines or exchanges are a blur.
    let shown_exchanges = rec.n_exchanges().min(MAX_WALK_EXCHANGES);
    let times: Vec<f64> = rec.steps[..shown_exchanges]
        .iter()
        .map(|&s| s as f64 * dt_ps)
        .collect();
    let walks: Vec<Line> = [0, k - 1]
        .iter()
        .map(|&r| {
            Line::new(
                times.clone(),
                (0..shown_exchanges)
                    .map(|e| temps[rec.state_of_replica[(e, r)] as usize])
                    .collect(),
            )
            .label(format!("replica {r}"))
        })
        .collect();
    figures.push(Figure {
        file: "replica_walks.svg".into(),
        title: "Replica walks through the ladder".into(),
        note: format!(
            "Thermostat temperature of replicas 0 and {} (ladder 0, starting at the ends) after each of the first {shown_exchanges} exchanges; a good ladder lets each cross from end to end often.",
            k - 1
        ),
        svg: figures::line_chart(
            &Axes {
                title: "Replica walks",
                x: "time (ps)",
                y: "temperature (K)",
            },
            &walks,
        )?,
    });

    let samples = remd::samples(rec, data.production_start_step);
    let produced: usize = samples.energies_by_state.iter().map(Vec::len).sum();
    if produced == 0 {
        let _ = writeln!(
            text,
            "  no exchanges after the production start (step {}) yet: no histograms or free energies",
            data.production_start_step
        );
        return Ok((out.into(), text));
    }
    let (lo, hi) = samples
        .energies_by_state
        .iter()
        .flatten()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let hist_lines: Vec<Line> = (0..k)
        .map(|s| {
            let (xs, ys) = figures::histogram(&samples.energies_by_state[s], lo, hi, 40);
            Line::new(xs, ys).label(format!("{:.1} K", temps[s]))
        })
        .collect();
    figures.push(Figure {
        file: "energy_histograms.svg".into(),
        title: "Potential energy per temperature".into(),
        note: "Production samples at each exchange; neighbouring histograms must overlap for swaps to be accepted.".into(),
        svg: figures::line_chart(
            &Axes {
                title: "Potential energy histograms",
                x: "potential energy (eV)",
                y: "probability density (1/eV)",
            },
            &hist_lines,
        )?,
    });

    let sigma: Vec<f64> = samples
        .energies_by_state
        .iter()
        .map(|x| standard_deviation(x))
        .collect();
    let suggested = remd::suggested_ladder(temps, &sigma);
    let _ = writeln!(
        text,
        "  suggested ladder (even acceptance):\n    [replica_exchange]\n    temperatures = [{}]",
        suggested
            .iter()
            .map(|t| format!("{t:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    out.insert("suggested_temperatures_k".into(), json!(suggested));

    let inefficiency = samples.inefficiency.clone();
    // Energies from the lowest production energy U0: a model's absolute
    // energies (−13,000 eV for a dipeptide) would put every f_k at
    // −β_k·U ≈ 10⁵ kT. The reduced free energies are those of U − U0,
    // f'_k = f_k − β_k U0.
    let energy_zero = lo;
    let mut shifted = samples.samples.clone();
    shifted.energies.iter_mut().for_each(|u| *u -= energy_zero);
    let mbar = Mbar::solve(shifted)?;
    let mean_energy: Vec<f64> = samples
        .samples
        .betas
        .iter()
        .map(|&b| mbar.mean_energy(b) + energy_zero)
        .collect();
    let grid_t: Vec<f64> = (0..HEAT_CAPACITY_POINTS)
        .map(|i| {
            temps[0] + (temps[k - 1] - temps[0]) * i as f64 / (HEAT_CAPACITY_POINTS - 1) as f64
        })
        .collect();
    let grid_b: Vec<f64> = grid_t.iter().map(|&t| 1.0 / crate::units::kt(t)).collect();
    let cv: Vec<f64> = grid_b.iter().map(|&b| mbar.heat_capacity(b)).collect();
    let cv_se = mbar.heat_capacity_errors(&grid_b, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)?;
    let peak = cv.iter().enumerate().fold(
        (0, f64::NEG_INFINITY),
        |m, (i, &c)| if c > m.1 { (i, c) } else { m },
    );
    let _ = writeln!(
        text,
        "  MBAR over {} independent samples (statistical inefficiency {:.1}-{:.1}), energies from U0 = {energy_zero:.4} eV: f_k - f_0 = {} kT",
        samples.samples.counts.iter().sum::<usize>(),
        inefficiency.iter().copied().fold(f64::INFINITY, f64::min),
        inefficiency.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        mbar.f
            .iter()
            .zip(&mbar.df)
            .map(|(f, d)| format!("{f:.3}±{d:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let _ = writeln!(
        text,
        "  configurational heat capacity: largest {:.2} ± {:.2} kB at {:.1} K",
        peak.1, cv_se[peak.0], grid_t[peak.0]
    );
    figures.push(Figure {
        file: "free_energy.svg".into(),
        title: "Free energy over the ladder (MBAR)".into(),
        note: format!("Reduced free energy f = −ln Z of U − U0 (U0 = {energy_zero:.4} eV, the lowest production energy) relative to the lowest temperature, with asymptotic standard errors."),
        svg: figures::line_chart(
            &Axes {
                title: "Reduced free energy f_k - f_0",
                x: "temperature (K)",
                y: "f_k - f_0 (kT)",
            },
            &[Line::new(temps.clone(), mbar.f.clone()).with_errors(mbar.df.clone())],
        )?,
    });
    figures.push(Figure {
        file: "heat_capacity.svg".into(),
        title: "Heat capacity (MBAR)".into(),
        note: format!(
            "Configurational C_v = Var(U)/(kB T²) in units of kB, reweighted between the rungs; errors from {BOOTSTRAP_RESAMPLES} bootstrap resamples of the independent samples."
        ),
        svg: figures::line_chart(
            &Axes {
                title: "Configurational heat capacity",
                x: "temperature (K)",
                y: "C_v (kB)",
            },
            &[Line::new(grid_t.clone(), cv.clone()).with_errors(cv_se.clone())],
        )?,
    });
    out.insert(
        "mbar".into(),
        json!({
            "production_start_step": data.production_start_step,
            "energy_zero_ev": energy_zero,
            "samples_per_state": samples.samples.counts,
            "statistical_inefficiency": inefficiency,
            "f_k": mbar.f,
            "df_k": mbar.df,
            "mean_potential_energy_ev": mean_energy,
            "heat_capacity": {
                "temperatures_k": grid_t,
                "cv_kb": cv,
                "cv_kb_se": cv_se,
                "bootstrap_resamples": BOOTSTRAP_RESAMPLES,
            },
        }),
    );
    Ok((out.into(), text))
}

/// Mean over members of each member's second-half mean, and the standard
/// deviation of those member means.
fn last_half_mean(series: &Series) -> (f64, f64) {
    let rows = series.value.nrows();
    let tail = series.value.slice(ndarray::s![rows / 2.., ..]);
    let member_means: Vec<f64> = tail
        .columns()
        .into_iter()
        .map(|c| c.iter().sum::<f64>() / c.len().max(1) as f64)
        .collect();
    let mean = member_means.iter().sum::<f64>() / member_means.len().max(1) as f64;
    (mean, standard_deviation(&member_means))
}

fn standard_deviation(x: &[f64]) -> f64 {
    if x.len() < 2 {
        return 0.0;
    }
    let m = x.iter().sum::<f64>() / x.len() as f64;
    (x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (x.len() - 1) as f64).sqrt()
}

/// Evenly chosen members plus the mean over all members.
fn time_lines(series: &Series) -> Vec<Line> {
    let times: Vec<f64> = series.time_fs.iter().map(|t| t * 1e-3).collect();
    let members = series.value.ncols();
    let shown = members.min(MAX_MEMBER_LINES);
    let mut lines: Vec<Line> = (0..shown)
        .map(|i| {
            let m = i * members / shown;
            Line::new(times.clone(), series.value.column(m).to_vec())
        })
        .collect();
    if members > 1 {
        let mean: Vec<f64> = series
            .value
            .rows()
            .into_iter()
            .map(|r| r.iter().sum::<f64>() / members as f64)
            .collect();
        lines.push(
            Line::new(times, mean)
                .label("mean of all members")
                .emphasis(),
        );
    }
    lines
}

fn member_note(members: usize) -> String {
    if members > MAX_MEMBER_LINES {
        format!("{MAX_MEMBER_LINES} of {members} members (evenly chosen) and the mean of all.")
    } else if members > 1 {
        format!("All {members} members and their mean.")
    } else {
        "The single member.".into()
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The page: the text summary, then every figure inline.
fn html_page(run_dir: &Path, text: &str, figures: &[Figure]) -> String {
    let mut page = String::new();
    let title = escape(&format!("mlff-md report: {}", run_dir.display()));
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\n<style>body{{font-family:sans-serif;max-width:800px;margin:2em auto;color:#222}}pre{{background:#f4f4f4;padding:1em;white-space:pre-wrap}}figure{{margin:2em 0}}figcaption{{color:#555;font-size:90%}}</style></head><body>\n<h1>{title}</h1>\n<h2>Summary</h2>\n<pre>{}</pre>\n",
        escape(text)
    );
    for f in figures {
        let _ = write!(
            page,
            "<figure id=\"{}\"><h2>{}</h2>\n{}\n<figcaption>{} (also <a href=\"{}\">{}</a>)</figcaption></figure>\n",
            escape(f.file.trim_end_matches(".svg")),
            escape(&f.title),
            strip_xml_declaration(&f.svg),
            escape(&f.note),
            escape(&f.file),
            escape(&f.file),
        );
    }
    page.push_str("<p>Numbers behind the figures: <a href=\"report.json\">report.json</a>.</p>\n</body></html>\n");
    page
}

fn strip_xml_declaration(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    }
}
