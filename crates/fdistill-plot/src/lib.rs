//! PNG figures with `plotters`: 2-D scatter over a density heat map, 1-D histogram over a
//! density curve, and line charts. The text font (DejaVu Sans, Bitstream Vera licence, see
//! `assets/LICENSE-DejaVu.txt`) is compiled in, so figures render the same on every machine.
//!
//! ```
//! use fdistill_plot::{Scatter, scatter_png};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("points.png");
//! let points = [[0.0, 0.0], [1.0, 1.0], [-1.0, 0.5]];
//! let density = |x: f64, y: f64| -(x * x + y * y) / 2.0; // drawn as a heat map behind
//! scatter_png(&path, &Scatter {
//!     title: "three points",
//!     points: &points,
//!     log_density: Some(&density),
//!     x_range: (-2.0, 2.0),
//!     y_range: (-2.0, 2.0),
//! }).unwrap();
//! assert!(std::fs::metadata(&path).unwrap().len() > 0);
//! ```

#![warn(missing_docs)]

use std::path::Path;
use std::sync::Once;

use anyhow::{Context, Result, anyhow};
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const SIZE: (u32, u32) = (640, 600);
/// Margin around every chart (px).
const MARGIN: u32 = 12;
/// Caption size (px) of a title that fits, and the least a long one shrinks to.
const CAPTION_PX: u32 = 20;
const CAPTION_MIN_PX: u32 = 10;
/// Heat-map cells per axis.
const CELLS: usize = 200;

/// A 2-D scatter plot, optionally over a density heat map.
pub struct Scatter<'a> {
    /// Figure title.
    pub title: &'a str,
    /// Points `[x, y]`.
    pub points: &'a [[f64; 2]],
    /// log density on the plane for a background heat map / contours; None for none
    pub log_density: Option<&'a dyn Fn(f64, f64) -> f64>,
    /// Horizontal range.
    pub x_range: (f64, f64),
    /// Vertical range.
    pub y_range: (f64, f64),
}

/// A named polyline for [`line_chart_png`].
pub struct Series<'a> {
    /// Legend entry.
    pub name: &'a str,
    /// `(x, y)` points in order.
    pub points: &'a [(f64, f64)],
}

/// A 1-D histogram of samples over a density curve.
pub struct Histogram1d<'a> {
    /// Figure title.
    pub title: &'a str,
    /// Samples.
    pub samples: &'a [f64],
    /// Density curve drawn over the histogram (the target), if any.
    pub log_density: Option<&'a dyn Fn(f64) -> f64>,
    /// Horizontal range; samples outside are not drawn.
    pub x_range: (f64, f64),
    /// Number of histogram bins over `x_range`.
    pub bins: usize,
}

fn register_fonts() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_font("sans-serif", FontStyle::Normal, FONT)
            .map_err(|_| anyhow!("the bundled DejaVuSans.ttf is not a valid font"));
    });
    result
}

fn canvas(path: &Path) -> Result<DrawingArea<BitMapBackend<'_>, Shift>> {
    register_fonts()?;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    Ok(root)
}

/// The caption size for `title`: [`CAPTION_PX`], or smaller (down to [`CAPTION_MIN_PX`]) so
/// that the title fits between the margins instead of running off both edges (plotters
/// centres a caption and clips what overflows).
fn caption_px<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str) -> u32 {
    let room = SIZE.0 - 2 * MARGIN;
    (CAPTION_MIN_PX..=CAPTION_PX)
        .rev()
        .find(|&px| {
            let style = TextStyle::from(("sans-serif", px as f64).into_font());
            root.estimate_text_size(title, &style)
                .is_ok_and(|(w, _)| w <= room)
        })
        .unwrap_or(CAPTION_MIN_PX)
}

/// Heat-map colour of a log density relative to its maximum, `Δ = log p − max log p ≤ 0`:
/// white at `Δ ≤ −10`, dark blue at the maximum, in 8 bands (the band edges read as contours
/// at every 1.25 nats, so low-weight modes stay visible).
fn heat(delta: f64) -> RGBColor {
    let t = (1.0 + delta / 10.0).clamp(0.0, 1.0);
    let s = (t * 8.0).floor() / 8.0;
    let lerp = |a: f64, b: f64| (a + (b - a) * s).round() as u8;
    RGBColor(lerp(255.0, 30.0), lerp(255.0, 90.0), lerp(255.0, 180.0))
}

/// Writes a scatter plot (points in red over the density heat map) to `path`.
pub fn scatter_png(path: &Path, plot: &Scatter<'_>) -> Result<()> {
    draw_scatter(path, plot, &[])
}

/// Writes a scatter plot of the points (red) over `data` (grey, e.g. the training data when
/// there is no density to draw), and over the density heat map when the plot has one.
pub fn scatter_over_data_png(path: &Path, plot: &Scatter<'_>, data: &[[f64; 2]]) -> Result<()> {
    draw_scatter(path, plot, data)
}

fn draw_scatter(path: &Path, plot: &Scatter<'_>, data: &[[f64; 2]]) -> Result<()> {
    let root = canvas(path)?;
    let (x0, x1) = plot.x_range;
    let (y0, y1) = plot.y_range;
    let mut chart = ChartBuilder::on(&root)
        .caption(plot.title, ("sans-serif", caption_px(&root, plot.title)))
        .margin(MARGIN)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart.configure_mesh().disable_mesh().draw()?;
    if let Some(log_density) = plot.log_density {
        let (dx, dy) = ((x1 - x0) / CELLS as f64, (y1 - y0) / CELLS as f64);
        let mut cells = Vec::with_capacity(CELLS * CELLS);
        for i in 0..CELLS {
            for j in 0..CELLS {
                let (x, y) = (x0 + i as f64 * dx, y0 + j as f64 * dy);
                cells.push((x, y, log_density(x + dx / 2.0, y + dy / 2.0)));
            }
        }
        let max = cells.iter().map(|c| c.2).fold(f64::NEG_INFINITY, f64::max);
        chart.draw_series(cells.iter().map(|&(x, y, l)| {
            Rectangle::new([(x, y), (x + dx, y + dy)], heat(l - max).filled())
        }))?;
    }
    chart.draw_series(
        data.iter()
            .map(|p| Circle::new((p[0], p[1]), 2, RGBColor(120, 120, 120).mix(0.35).filled())),
    )?;
    chart.draw_series(
        plot.points
            .iter()
            .map(|p| Circle::new((p[0], p[1]), 2, RED.mix(0.45).filled())),
    )?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Writes a histogram of samples (normalised to a density) with the target density curve.
pub fn histogram_png(path: &Path, plot: &Histogram1d<'_>) -> Result<()> {
    let root = canvas(path)?;
    let (x0, x1) = plot.x_range;
    let width = (x1 - x0) / plot.bins.max(1) as f64;
    let mut counts = vec![0usize; plot.bins.max(1)];
    for &s in plot.samples {
        if (x0..x1).contains(&s) {
            let i = ((s - x0) / width) as usize;
            counts[i.min(plot.bins.max(1) - 1)] += 1;
        }
    }
    let n = plot.samples.len().max(1) as f64;
    let heights: Vec<f64> = counts.iter().map(|&c| c as f64 / (n * width)).collect();
    let curve: Vec<(f64, f64)> = match plot.log_density {
        Some(f) => (0..=400)
            .map(|i| {
                let x = x0 + (x1 - x0) * i as f64 / 400.0;
                (x, f(x).exp())
            })
            .collect(),
        None => Vec::new(),
    };
    let top = heights
        .iter()
        .chain(curve.iter().map(|p| &p.1))
        .fold(0.0f64, |a, &b| a.max(b))
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(plot.title, ("sans-serif", caption_px(&root, plot.title)))
        .margin(MARGIN)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(x0..x1, 0.0..top.max(1e-9))?;
    chart
        .configure_mesh()
        .disable_mesh()
        .y_desc("density")
        .draw()?;
    chart.draw_series(heights.iter().enumerate().map(|(i, &h)| {
        let x = x0 + i as f64 * width;
        Rectangle::new([(x, 0.0), (x + width, h)], RED.mix(0.45).filled())
    }))?;
    if !curve.is_empty() {
        chart.draw_series(LineSeries::new(curve, BLUE.stroke_width(2)))?;
    }
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Writes a line chart of several series; `log_y` puts y on a log scale (non-positive
/// values are then left out of the range computation).
pub fn line_chart_png(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series<'_>],
    log_y: bool,
) -> Result<()> {
    let root = canvas(path)?;
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut xr, mut yr) = (
        (f64::INFINITY, f64::NEG_INFINITY),
        (f64::INFINITY, f64::NEG_INFINITY),
    );
    for &(x, y) in all {
        if x.is_finite() {
            xr = (xr.0.min(x), xr.1.max(x));
        }
        if y.is_finite() && (!log_y || y > 0.0) {
            yr = (yr.0.min(y), yr.1.max(y));
        }
    }
    if !(xr.0.is_finite() && yr.0.is_finite()) {
        return Err(anyhow!("line chart `{title}` has no finite points to draw"));
    }
    if xr.0 == xr.1 {
        xr = (xr.0 - 1.0, xr.1 + 1.0);
    }
    if yr.0 == yr.1 {
        yr = if log_y {
            (yr.0 / 2.0, yr.1 * 2.0)
        } else {
            (yr.0 - 1.0, yr.1 + 1.0)
        };
    }
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", caption_px(&root, title)))
        .margin(MARGIN)
        .x_label_area_size(40)
        .y_label_area_size(60);
    if log_y {
        // log₁₀ y on a linear axis, labelled with y itself. plotters 0.3.7's own
        // `log_scale()` draws no tick labels below 1 (a range such as 0.15..0.7 gets none;
        // plotters-rs/plotters#654); this keeps every label. Non-positive values are left out.
        let log: Vec<Vec<(f64, f64)>> = series
            .iter()
            .map(|s| {
                s.points
                    .iter()
                    .filter(|p| p.1 > 0.0)
                    .map(|&(x, y)| (x, y.log10()))
                    .collect()
            })
            .collect();
        let logged: Vec<Series<'_>> = series
            .iter()
            .zip(&log)
            .map(|(s, points)| Series {
                name: s.name,
                points,
            })
            .collect();
        let chart = builder.build_cartesian_2d(xr.0..xr.1, yr.0.log10()..yr.1.log10())?;
        draw_lines(chart, x_label, y_label, &logged, Some(&log_axis_label))?;
    } else {
        let chart = builder.build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)?;
        draw_lines(chart, x_label, y_label, series, None)?;
    }
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The label of a tick at `v = log₁₀ y` on a log axis: y with three significant digits.
fn log_axis_label(v: &f64) -> String {
    let y = 10f64.powf(*v);
    // the decade of y, robust to 10^1 evaluating to 9.999…
    let decade = (y.abs().log10() + 1e-9).floor() as i32;
    let digits = (2 - decade).max(0) as usize;
    format!("{y:.digits$}")
}

fn draw_lines<'a>(
    mut chart: ChartContext<'a, BitMapBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    x_label: &str,
    y_label: &str,
    series: &[Series<'_>],
    y_formatter: Option<&dyn Fn(&f64) -> String>,
) -> Result<()> {
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(x_label).y_desc(y_label);
    if let Some(f) = y_formatter {
        mesh.y_label_formatter(f);
    }
    mesh.draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(s.name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path inside a fresh `tempfile` directory, removed when this value drops.
    struct Scratch(#[allow(dead_code)] tempfile::TempDir, std::path::PathBuf);

    impl std::ops::Deref for Scratch {
        type Target = std::path::Path;
        fn deref(&self) -> &std::path::Path {
            &self.1
        }
    }

    impl AsRef<std::path::Path> for Scratch {
        fn as_ref(&self) -> &std::path::Path {
            &self.1
        }
    }

    fn tmp(name: &str) -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        Scratch(dir, path)
    }

    /// The data of `scatter_over_data_png` shows as grey dots behind the red samples.
    #[test]
    fn data_is_drawn_grey_behind_the_points() {
        let data: Vec<[f64; 2]> = (0..200).map(|i| [-2.0 + 0.02 * i as f64, 1.0]).collect();
        let plot = Scatter {
            title: "over data",
            points: &[[0.0, -1.0]],
            log_density: None,
            x_range: (-3.0, 3.0),
            y_range: (-3.0, 3.0),
        };
        let count = |p: &std::path::Path| {
            let img = image::open(p).unwrap().to_rgb8();
            let grey = img
                .pixels()
                .filter(|px| {
                    let [r, g, b] = px.0;
                    r == g && g == b && (150..240).contains(&r)
                })
                .count();
            let red = img
                .pixels()
                .filter(|px| px.0[0] > 200 && px.0[1] < 200 && px.0[2] < 200)
                .count();
            (grey, red)
        };
        let (with, without) = (tmp("with.png"), tmp("without.png"));
        scatter_over_data_png(&with, &plot, &data).unwrap();
        scatter_png(&without, &plot).unwrap();
        let ((g1, r1), (g0, r0)) = (count(&with), count(&without));
        assert!(g1 > g0 + 200, "grey pixels {g1} vs {g0}");
        assert!(r1 > 0 && r0 > 0, "the sample is drawn in both");
    }

    /// A long title (a study's scatter: target, candidate, divergence, NFE, seed) is drawn
    /// smaller so that it stays inside the canvas: no dark pixel of the caption touches the
    /// left or right edge (at 20 px this title ran off both), and a short title keeps 20 px.
    #[test]
    fn a_long_title_shrinks_to_fit_the_canvas() {
        let title = "ring8-unbalanced: student steps-24000-hold-0.5, jensen-shannon, 1 NFE, seed 3";
        let plot = Scatter {
            title,
            points: &[[0.0, 0.0]],
            log_density: None,
            x_range: (-1.0, 1.0),
            y_range: (-1.0, 1.0),
        };
        let path = tmp("long.png");
        scatter_png(&path, &plot).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let dark_at = |x: u32| (0..40).any(|y| img.get_pixel(x, y).0.iter().all(|&c| c < 128));
        for x in (0..MARGIN / 2).chain(SIZE.0 - MARGIN / 2..SIZE.0) {
            assert!(!dark_at(x), "caption pixels at the edge, column {x}");
        }
        assert!((1..SIZE.0).any(dark_at), "the caption is drawn");
        register_fonts().unwrap();
        let root = BitMapBackend::new(&path, SIZE).into_drawing_area();
        let px = caption_px(&root, title);
        assert!((CAPTION_MIN_PX..CAPTION_PX).contains(&px), "{px}");
        assert_eq!(caption_px(&root, "scatter"), CAPTION_PX);
    }

    /// Rows of `png` with dark pixels in columns `x0..x1`, grouped into bands of adjacent rows
    /// (one band per line of text there).
    fn text_bands(png: &std::path::Path, x0: u32, x1: u32) -> usize {
        let img = image::open(png).unwrap().to_rgb8();
        let dark = |y: u32| (x0..x1).any(|x| img.get_pixel(x, y).0.iter().all(|&c| c < 128));
        let rows: Vec<bool> = (0..img.height()).map(dark).collect();
        rows.windows(2).filter(|w| w[1] && !w[0]).count() + usize::from(rows[0])
    }

    /// A one-series chart of `points` with a log y axis.
    fn log_chart(path: &std::path::Path, points: &[(f64, f64)]) {
        let series = [Series { name: "a", points }];
        line_chart_png(path, "t", "x", "y", &series, true).unwrap();
    }

    /// A log y axis is labelled below 1 too (plotters' own log scale leaves a range such as
    /// 0.15..0.7 without a single label); the labels read y, not log₁₀ y.
    #[test]
    fn log_axis_has_labels_below_one() {
        let pts = [(0.0, 0.15), (1.0, 0.7), (2.0, 0.3)];
        let path = tmp("log.png");
        log_chart(&path, &pts);
        // the tick labels sit right of the rotated axis title, left of the axis (x = 72)
        let bands = text_bands(&path, 40, 70);
        assert!(bands >= 4, "{bands} labelled ticks on the log axis");
        assert_eq!(log_axis_label(&0.15f64.log10()), "0.150");
        assert_eq!(log_axis_label(&0.0), "1.00");
        assert_eq!(log_axis_label(&1.0), "10.0");
        assert_eq!(log_axis_label(&-1.0), "0.100");
        assert_eq!(log_axis_label(&2.0), "100");
        assert_eq!(log_axis_label(&-2.5), "0.00316");
    }

    #[test]
    fn figures_are_png_of_the_expected_size() {
        let density = |x: f64, y: f64| -0.5 * (x * x + y * y);
        let scatter = tmp("s.png");
        scatter_png(
            &scatter,
            &Scatter {
                title: "scatter",
                points: &[[0.0, 0.0], [1.0, -1.0]],
                log_density: Some(&density),
                x_range: (-3.0, 3.0),
                y_range: (-3.0, 3.0),
            },
        )
        .unwrap();
        let hist = tmp("h.png");
        let d1 = |x: f64| -0.5 * x * x;
        histogram_png(
            &hist,
            &Histogram1d {
                title: "hist",
                samples: &[0.1, -0.2, 0.3],
                log_density: Some(&d1),
                x_range: (-3.0, 3.0),
                bins: 20,
            },
        )
        .unwrap();
        let lines = tmp("l.png");
        let pts = [(0.0, 1.0), (1.0, 0.1), (2.0, 0.01)];
        log_chart(&lines, &pts);
        for p in [scatter, hist, lines] {
            let img = image::open(&p).unwrap();
            assert_eq!((img.width(), img.height()), SIZE, "{}", p.display());
        }
        let err = line_chart_png(&tmp("e.png"), "t", "x", "y", &[], false).unwrap_err();
        assert!(err.to_string().contains("no finite points"));
    }
}
