//! SVG figures with plotters' SVG backend: text stays text (no font files or
//! fontconfig needed), and the page embeds each figure inline.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Error, Result};

/// One curve of a chart.
pub struct Line {
    pub label: Option<String>,
    pub xs: Vec<f64>,
    pub ys: Vec<f64>,
    /// Standard errors drawn as bars (empty: none).
    pub errors: Vec<f64>,
    /// Drawn thick and dark (a mean); others thin, in palette colours.
    pub emphasis: bool,
    /// Points as well as the line.
    pub markers: bool,
}

impl Line {
    pub fn new(xs: Vec<f64>, ys: Vec<f64>) -> Line {
        Line {
            label: None,
            xs,
            ys,
            errors: Vec::new(),
            emphasis: false,
            markers: false,
        }
    }

    pub fn label(mut self, label: impl Into<String>) -> Line {
        self.label = Some(label.into());
        self
    }

    pub fn emphasis(mut self) -> Line {
        self.emphasis = true;
        self
    }

    pub fn with_errors(mut self, errors: Vec<f64>) -> Line {
        self.errors = errors;
        self.markers = true;
        self
    }

    pub fn markers(mut self) -> Line {
        self.markers = true;
        self
    }
}

/// Axis titles and the chart's caption.
pub struct Axes<'a> {
    pub title: &'a str,
    pub x: &'a str,
    pub y: &'a str,
}

const WIDTH: u32 = 760;
const HEIGHT: u32 = 400;

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("drawing a figure: {e}"))
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo {
        0.05 * (hi - lo)
    } else {
        0.5 * lo.abs().max(1.0)
    };
    (lo - pad, hi + pad)
}

/// A white canvas and a captioned chart frame with room for axis labels.
fn frame<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    axes: &Axes,
) -> Result<ChartBuilder<'a, 'b, SVGBackend<'b>>> {
    root.fill(&WHITE).map_err(plot_err)?;
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(axes.title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(45)
        .y_label_area_size(70);
    Ok(builder)
}

/// Lines (with optional error bars) on shared axes, as an SVG document.
pub fn line_chart(axes: &Axes, lines: &[Line]) -> Result<String> {
    let (x0, x1) = range(lines.iter().flat_map(|l| l.xs.iter().copied()));
    let (y0, y1) = range(lines.iter().flat_map(|l| {
        l.ys.iter().enumerate().flat_map(move |(i, &y)| {
            let e = l.errors.get(i).copied().unwrap_or(0.0);
            [y - e, y + e]
        })
    }));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let mut chart = frame(&root, axes)?
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(axes.x)
            .y_desc(axes.y)
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(plot_err)?;
        let mut labelled = false;
        let mut palette_index = 0;
        for line in lines {
            let color = if line.emphasis {
                BLACK.to_rgba()
            } else {
                palette_index += 1;
                Palette99::pick(palette_index - 1).to_rgba()
            };
            let style = if line.emphasis {
                color.stroke_width(2)
            } else {
                color.mix(0.8).stroke_width(1)
            };
            let points: Vec<(f64, f64)> = line
                .xs
                .iter()
                .zip(&line.ys)
                .map(|(&x, &y)| (x, y))
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            let series = chart
                .draw_series(LineSeries::new(points.clone(), style))
                .map_err(plot_err)?;
            if let Some(label) = &line.label {
                labelled = true;
                series
                    .label(label.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
            }
            if line.markers {
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(plot_err)?;
            }
            if !line.errors.is_empty() {
                chart
                    .draw_series(line.xs.iter().zip(&line.ys).zip(&line.errors).map(
                        |((&x, &y), &e)| {
                            ErrorBar::new_vertical(x, y - e, y, y + e, color.stroke_width(1), 6)
                        },
                    ))
                    .map_err(plot_err)?;
            }
        }
        if labelled {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK.mix(0.3))
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// Bars with category labels under them, values in [0, 1] (acceptance).
pub fn bar_chart(axes: &Axes, labels: &[String], values: &[Option<f64>]) -> Result<String> {
    let n = labels.len().max(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        let mut chart = frame(&root, axes)?
            .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..1.0)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(axes.x)
            .y_desc(axes.y)
            .x_labels(n + 1)
            .x_label_formatter(&|x| match x {
                SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(values.iter().enumerate().filter_map(|(i, v)| {
                v.map(|v| {
                    let mut bar = Rectangle::new(
                        [
                            (SegmentValue::Exact(i), 0.0),
                            (SegmentValue::Exact(i + 1), v),
                        ],
                        BLUE.mix(0.6).filled(),
                    );
                    bar.set_margin(0, 0, 8, 8);
                    bar
                })
            }))
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// Histogram of `values` with `bins` bins over [lo, hi], as a step outline
/// (x: bin edges), normalised to a probability density.
pub fn histogram(values: &[f64], lo: f64, hi: f64, bins: usize) -> (Vec<f64>, Vec<f64>) {
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0usize; bins];
    for &v in values {
        if v.is_finite() && v >= lo && v <= hi && width > 0.0 {
            counts[(((v - lo) / width) as usize).min(bins - 1)] += 1;
        }
    }
    let norm = values.len().max(1) as f64 * width;
    let mut xs = Vec::with_capacity(2 * bins);
    let mut ys = Vec::with_capacity(2 * bins);
    for (i, &c) in counts.iter().enumerate() {
        let y = if norm > 0.0 { c as f64 / norm } else { 0.0 };
        xs.push(lo + i as f64 * width);
        ys.push(y);
        xs.push(lo + (i + 1) as f64 * width);
        ys.push(y);
    }
    (xs, ys)
}

/// A heat map of `values` (row-major, `ny` rows of `nx` cells over the
/// x and y ranges): low values dark blue, `vmax` and above yellow, None
/// (no data) left white. For free-energy surfaces: 0 = most probable.
pub fn heat_map(
    axes: &Axes,
    (nx, ny): (usize, usize),
    (x0, x1, y0, y1): (f64, f64, f64, f64),
    values: &[Option<f64>],
    vmax: f64,
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 600)).into_drawing_area();
        let mut chart = frame(&root, axes)?
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc(axes.x)
            .y_desc(axes.y)
            .disable_mesh()
            .draw()
            .map_err(plot_err)?;
        let (dx, dy) = ((x1 - x0) / nx as f64, (y1 - y0) / ny as f64);
        chart
            .draw_series(
                (0..ny)
                    .flat_map(|j| (0..nx).map(move |i| (i, j)))
                    .filter_map(|(i, j)| {
                        values[j * nx + i].map(|v| {
                            let x = x0 + i as f64 * dx;
                            let y = y0 + j as f64 * dy;
                            Rectangle::new(
                                [(x, y), (x + dx, y + dy)],
                                ramp((v / vmax).clamp(0.0, 1.0)).filled(),
                            )
                        })
                    }),
            )
            .map_err(plot_err)?;
        root.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// Dark blue (0) through teal to yellow (1), as viridis' three anchors.
fn ramp(t: f64) -> RGBColor {
    let anchors = [
        (68.0, 1.0, 84.0),
        (33.0, 145.0, 140.0),
        (253.0, 231.0, 37.0),
    ];
    let (a, b, f) = if t < 0.5 {
        (anchors[0], anchors[1], t * 2.0)
    } else {
        (anchors[1], anchors[2], (t - 0.5) * 2.0)
    };
    let mix = |p: f64, q: f64| (p + (q - p) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}
