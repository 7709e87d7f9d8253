//! The structure part of a report: Ramachandran map and free energy along φ
//! at the lowest temperature (peptides), and with a reference structure the
//! RMSD per temperature (time series, distributions, fraction folded).
//! Errors use each trajectory's statistical inefficiency, so they count
//! independent frames, not frames.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::data::RunData;
use super::figures::{self, Axes, Line};
use super::mbar::statistical_inefficiency;
use super::structure::{dihedral_deg, read_trajectory, Backbone, Frames, Reference};
use super::{Figure, ReportOptions, MAX_MEMBER_LINES};
use crate::error::Result;

/// Bins of 10° over (−180°, 180°].
const ANGLE_BINS: usize = 36;
/// Free energies above this (kT) are drawn as the top colour.
const MAP_CEILING_KT: f64 = 6.0;

/// Trajectories of one thermodynamic state (a temperature, or the whole
/// ensemble), each file a separate time series.
struct Group {
    label: String,
    temperature: Option<f64>,
    trajectories: Vec<Frames>,
}

/// Trajectory files of the run: per temperature under replica exchange
/// (`temperature_KK_*`, ladders pooled), else every member file together.
fn groups(data: &RunData) -> Result<Vec<Group>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(&data.directory)
        .map_err(|e| crate::Error::input(&data.directory, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let name = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string()
    };
    let production = |f: Frames| -> Frames {
        let keep: Vec<usize> = (0..f.steps.len())
            .filter(|&i| f.steps[i] >= data.production_start_step)
            .collect();
        Frames {
            path: f.path,
            steps: keep.iter().map(|&i| f.steps[i]).collect(),
            positions: keep.iter().map(|&i| f.positions[i].clone()).collect(),
        }
    };
    let mut out = Vec::new();
    if let Some(rec) = &data.exchange {
        for (k, &t) in rec.temperatures.iter().enumerate() {
            let prefix = format!("temperature_{k:02}_");
            let trajectories = files
                .iter()
                .filter(|p| name(p).starts_with(&prefix))
                .map(|p| read_trajectory(p).map(production))
                .collect::<Result<Vec<_>>>()?;
            if !trajectories.is_empty() {
                out.push(Group {
                    label: format!("{t:.1} K"),
                    temperature: Some(t),
                    trajectories,
                });
            }
        }
    } else {
        let trajectories = files
            .iter()
            .filter(|p| name(p).starts_with("member_"))
            .map(|p| read_trajectory(p).map(production))
            .collect::<Result<Vec<_>>>()?;
        if !trajectories.is_empty() {
            out.push(Group {
                label: "all members".into(),
                temperature: None,
                trajectories,
            });
        }
    }
    Ok(out)
}

fn angle_bin(deg: f64) -> usize {
    (((deg + 180.0) / 360.0 * ANGLE_BINS as f64) as usize).min(ANGLE_BINS - 1)
}

/// Largest statistical inefficiency over the given series (1 if none has
/// variance): one g for a whole group keeps its errors conservative.
fn group_inefficiency<'a>(series: impl Iterator<Item = &'a [f64]>) -> f64 {
    series
        .filter_map(statistical_inefficiency)
        .fold(1.0, f64::max)
}

/// Figures and numbers of the structure; None when the run has no
/// trajectories or topology to read.
pub(super) fn section(
    data: &RunData,
    options: &ReportOptions,
    figs: &mut Vec<Figure>,
) -> Result<Option<(Value, String)>> {
    let topology = data.directory.join("topology.pdb");
    if !topology.is_file() {
        return Ok(None);
    }
    let groups = groups(data)?;
    if groups
        .iter()
        .all(|g| g.trajectories.iter().all(|t| t.steps.is_empty()))
    {
        return Ok(None);
    }
    let mut text = String::new();
    let mut out = serde_json::Map::new();
    if let Some(backbone) = Backbone::from_topology(&topology)? {
        let (v, t) = backbone_part(&backbone, &groups[0], figs)?;
        out.insert("backbone".into(), v);
        text.push_str(&t);
    }
    if let Some(reference) = &options.reference {
        let reference = Reference::new(reference, &topology)?;
        let (v, t) = rmsd_part(
            &reference,
            &groups,
            options.folded_below,
            data.timestep_fs,
            figs,
        )?;
        out.insert("rmsd".into(), v);
        text.push_str(&t);
    }
    Ok((!out.is_empty()).then(|| (out.into(), text)))
}

fn backbone_part(
    backbone: &Backbone,
    group: &Group,
    figs: &mut Vec<Figure>,
) -> Result<(Value, String)> {
    let residues = backbone.labels.len();
    let frames: usize = group.trajectories.iter().map(|t| t.steps.len()).sum();
    // φ and ψ of every residue in every frame, per trajectory.
    let angles: Vec<Vec<(Vec<f64>, Vec<f64>)>> = group
        .trajectories
        .iter()
        .map(|t| {
            (0..residues)
                .map(|r| {
                    let phi = t
                        .positions
                        .iter()
                        .map(|x| dihedral_deg(x, backbone.phi[r]))
                        .collect();
                    let psi = t
                        .positions
                        .iter()
                        .map(|x| dihedral_deg(x, backbone.psi[r]))
                        .collect();
                    (phi, psi)
                })
                .collect()
        })
        .collect();
    // The g of cos φ, sin φ, cos ψ and sin ψ (angles wrap; their sines and
    // cosines do not), largest over trajectories and residues.
    let trig: Vec<Vec<f64>> = angles
        .iter()
        .flatten()
        .flat_map(|(phi, psi)| {
            [phi, psi].into_iter().flat_map(|a| {
                [
                    a.iter().map(|d| d.to_radians().cos()).collect::<Vec<f64>>(),
                    a.iter().map(|d| d.to_radians().sin()).collect::<Vec<f64>>(),
                ]
            })
        })
        .collect();
    let g = group_inefficiency(trig.iter().map(Vec::as_slice));
    let independent = frames as f64 / g;

    // Ramachandran map of all residues: −ln p relative to the most probable bin.
    let mut counts = vec![0usize; ANGLE_BINS * ANGLE_BINS];
    for traj in &angles {
        for (phi, psi) in traj {
            for (a, b) in phi.iter().zip(psi) {
                counts[angle_bin(*b) * ANGLE_BINS + angle_bin(*a)] += 1;
            }
        }
    }
    let most = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let map: Vec<Option<f64>> = counts
        .iter()
        .map(|&c| (c > 0).then(|| -(c as f64 / most).ln()))
        .collect();
    figs.push(Figure {
        file: "ramachandran.svg".into(),
        title: format!("Ramachandran map at {}", group.label),
        note: format!(
            "φ/ψ of {} over {frames} production frames; colour −ln p in kT from the most probable 10° bin (yellow ≥ {MAP_CEILING_KT} kT, white: never visited).",
            backbone.labels.join(", ")
        ),
        svg: figures::heat_map(
            &Axes {
                title: &format!("Ramachandran map, {}", group.label),
                x: "φ (degrees)",
                y: "ψ (degrees)",
            },
            (ANGLE_BINS, ANGLE_BINS),
            (-180.0, 180.0, -180.0, 180.0),
            &map,
            MAP_CEILING_KT,
        )?,
    });

    // Free energy along φ per residue, with errors from independent frames:
    // SE(p) = sqrt(p(1 − p)/N_eff), SE(F) = SE(p)/p.
    let centres: Vec<f64> = (0..ANGLE_BINS)
        .map(|b| -180.0 + (b as f64 + 0.5) * 360.0 / ANGLE_BINS as f64)
        .collect();
    let mut per_residue = serde_json::Map::new();
    let mut lines = Vec::new();
    for r in 0..residues {
        let mut hist = vec![0usize; ANGLE_BINS];
        for traj in &angles {
            for a in &traj[r].0 {
                hist[angle_bin(*a)] += 1;
            }
        }
        let total = hist.iter().sum::<usize>().max(1) as f64;
        let p: Vec<f64> = hist.iter().map(|&c| c as f64 / total).collect();
        let pmax = p.iter().copied().fold(0.0, f64::max);
        let f: Vec<Option<f64>> = p
            .iter()
            .map(|&p| (p > 0.0).then(|| -(p / pmax).ln()))
            .collect();
        let se: Vec<Option<f64>> = p
            .iter()
            .map(|&p| (p > 0.0).then(|| (p * (1.0 - p) / independent).sqrt() / p))
            .collect();
        let visited: Vec<usize> = (0..ANGLE_BINS).filter(|&b| f[b].is_some()).collect();
        lines.push(
            Line::new(
                visited.iter().map(|&b| centres[b]).collect(),
                visited.iter().map(|&b| f[b].unwrap_or(0.0)).collect(),
            )
            .with_errors(visited.iter().map(|&b| se[b].unwrap_or(0.0)).collect())
            .label(backbone.labels[r].clone()),
        );
        per_residue.insert(backbone.labels[r].clone(), json!({"f_kt": f, "se_kt": se}));
    }
    figs.push(Figure {
        file: "phi_free_energy.svg".into(),
        title: format!("Free energy along φ at {}", group.label),
        note: format!(
            "F(φ) = −ln p(φ) in kT relative to the most probable bin; errors from {independent:.0} independent frames (statistical inefficiency {g:.1})."
        ),
        svg: figures::line_chart(
            &Axes {
                title: &format!("Free energy along φ, {}", group.label),
                x: "φ (degrees)",
                y: "F (kT)",
            },
            &lines[..residues.min(MAX_MEMBER_LINES)],
        )?,
    });
    let mut text = String::new();
    let _ = writeln!(
        text,
        "backbone at {}: φ/ψ of {} over {frames} frames ({independent:.0} independent)",
        group.label,
        backbone.labels.join(", ")
    );
    Ok((
        json!({
            "temperature_label": group.label,
            "residues": backbone.labels,
            "frames": frames,
            "statistical_inefficiency": g,
            "phi_bin_centres_deg": centres,
            "phi_free_energy": per_residue,
        }),
        text,
    ))
}

fn rmsd_part(
    reference: &Reference,
    groups: &[Group],
    folded_below: f64,
    timestep_fs: f64,
    figs: &mut Vec<Figure>,
) -> Result<(Value, String)> {
    let mut text = String::new();
    let mut means = Vec::new();
    let mut mean_squares = Vec::new();
    let mut folded = Vec::new();
    let mut folded_se = Vec::new();
    let mut time_lines = Vec::new();
    let mut all_rmsd = Vec::new();
    for group in groups {
        let per_file: Vec<Vec<f64>> = group
            .trajectories
            .iter()
            .map(|t| reference.rmsd(t))
            .collect();
        let values: Vec<f64> = per_file.iter().flatten().copied().collect();
        let n = values.len().max(1) as f64;
        let indicator: Vec<Vec<f64>> = per_file
            .iter()
            .map(|v| {
                v.iter()
                    .map(|&r| f64::from(u8::from(r < folded_below)))
                    .collect()
            })
            .collect();
        let g = group_inefficiency(per_file.iter().chain(indicator.iter()).map(Vec::as_slice));
        let f = values.iter().filter(|&&r| r < folded_below).count() as f64 / n;
        means.push(values.iter().sum::<f64>() / n);
        mean_squares.push(values.iter().map(|r| r * r).sum::<f64>() / n);
        folded.push(f);
        // At least one (pseudo-)count either way, so 0 and 1 get an error.
        let f_err = f.clamp(1.0 / n, 1.0 - 1.0 / n);
        folded_se.push((f_err * (1.0 - f_err) * g / n).sqrt());
        if let (Some(first), true) = (
            group.trajectories.first(),
            time_lines.len() < MAX_MEMBER_LINES,
        ) {
            time_lines.push(
                Line::new(
                    first
                        .steps
                        .iter()
                        .map(|&s| s as f64 * timestep_fs * 1e-3)
                        .collect(),
                    per_file[0].clone(),
                )
                .label(group.label.clone()),
            );
        }
        all_rmsd.push(values);
    }
    let (lo, hi) = all_rmsd
        .iter()
        .flatten()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let histograms: Vec<Line> = groups
        .iter()
        .zip(&all_rmsd)
        .take(MAX_MEMBER_LINES * 2)
        .map(|(g, v)| {
            let (xs, ys) = figures::histogram(v, lo, hi.max(lo + 1e-6), 40);
            Line::new(xs, ys).label(g.label.clone())
        })
        .collect();
    let what = format!(
        "RMSD of the {} to {} after superposition",
        reference.selection,
        reference.path.display()
    );
    figs.push(Figure {
        file: "rmsd_time.svg".into(),
        title: "RMSD to the reference".into(),
        note: format!(
            "{what}; the first trajectory of each temperature (up to {MAX_MEMBER_LINES})."
        ),
        svg: figures::line_chart(
            &Axes {
                title: "RMSD to the reference",
                x: "time (ps)",
                y: "RMSD (Å)",
            },
            &time_lines,
        )?,
    });
    figs.push(Figure {
        file: "rmsd_histograms.svg".into(),
        title: "RMSD distribution per temperature".into(),
        note: format!("{what}, production frames."),
        svg: figures::line_chart(
            &Axes {
                title: "RMSD distributions",
                x: "RMSD (Å)",
                y: "probability density (1/Å)",
            },
            &histograms,
        )?,
    });
    let temps: Vec<f64> = groups.iter().filter_map(|g| g.temperature).collect();
    if temps.len() == groups.len() && temps.len() > 1 {
        figs.push(Figure {
            file: "fraction_folded.svg".into(),
            title: "Fraction folded (melting curve)".into(),
            note: format!(
                "Fraction of frames with RMSD below {folded_below} Å, errors from the statistical inefficiency of each temperature's series."
            ),
            svg: figures::line_chart(
                &Axes {
                    title: "Fraction folded",
                    x: "temperature (K)",
                    y: &format!("fraction with RMSD < {folded_below} Å"),
                },
                &[Line::new(temps.clone(), folded.clone()).with_errors(folded_se.clone())],
            )?,
        });
    }
    let _ = writeln!(
        text,
        "RMSD to {} ({}): mean {} Å; fraction below {folded_below} Å: {}",
        reference.path.display(),
        reference.selection,
        means
            .iter()
            .map(|m| format!("{m:.3}"))
            .collect::<Vec<_>>()
            .join(" "),
        folded
            .iter()
            .map(|f| format!("{f:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok((
        json!({
            "reference": reference.path.display().to_string(),
            "selection": reference.selection,
            "folded_below_a": folded_below,
            "groups": groups.iter().map(|g| g.label.clone()).collect::<Vec<_>>(),
            "temperatures_k": temps,
            "mean_a": means,
            "mean_square_a2": mean_squares,
            "fraction_folded": folded,
            "fraction_folded_se": folded_se,
        }),
        text,
    ))
}
