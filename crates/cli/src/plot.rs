//! `skipgrad plot`: training and test error curves of runs, like the paper's Fig. 6: training
//! error dashed and thin, test error bold, one colour per run, over iterations; SVG and PNG.

use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// What `plot` is given.
#[derive(Clone, Debug, clap::Args)]
pub struct PlotArgs {
    /// Run directories written by `train` (each has metrics.jsonl).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Output path without extension: writes OUT.svg and OUT.png (default: errors, beside the
    /// first run).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// One run's curves: (iteration, training error %) averaged over windows, (iteration, test
/// error %) per epoch.
pub struct Curves {
    name: String,
    train: Vec<(f64, f64)>,
    test: Vec<(f64, f64)>,
}

/// Reads a run's metrics.
pub fn curves(run: &Path) -> Result<Curves, String> {
    let path = run.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (mut steps, mut test) = (vec![], vec![]);
    for (n, line) in text.lines().enumerate() {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("{}: line {}: {e}", path.display(), n + 1))?;
        let iteration = v["iteration"].as_f64();
        match (iteration, v["train_error"].as_f64(), v["test_accuracy"].as_f64()) {
            (Some(i), Some(e), _) => steps.push((i, 100.0 * e)),
            (Some(i), _, Some(a)) => test.push((i, 100.0 * (1.0 - a))),
            _ => return Err(format!("{}: line {}: neither a step nor an epoch", path.display(), n + 1)),
        }
    }
    if steps.is_empty() {
        return Err(format!("{}: no training steps", path.display()));
    }
    // Training error is one batch's: average it over windows of about 1% of the run.
    let window = (steps.len() / 100).max(1);
    let train =
        steps.chunks(window).map(|c| (c[c.len() - 1].0, c.iter().map(|s| s.1).sum::<f64>() / c.len() as f64)).collect();
    let name = run.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| run.display().to_string());
    Ok(Curves { name, train, test })
}

/// Draws panels side by side, each (caption, runs), on any plotters backend.
fn draw<B: DrawingBackend>(
    root: DrawingArea<B, plotters::coord::Shift>,
    panels: &[(String, Vec<Curves>)],
) -> Result<(), String>
where
    B::ErrorType: 'static,
{
    let fail = |e: &dyn std::fmt::Display| format!("drawing the plot: {e}");
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    for ((caption, runs), area) in panels.iter().zip(root.split_evenly((1, panels.len().max(1)))) {
        draw_panel(&area, caption, runs)?;
    }
    root.present().map_err(|e| fail(&e))
}

/// One panel: each run's training error dashed, its test error bold with a dot per epoch.
fn draw_panel<B: DrawingBackend>(
    area: &DrawingArea<B, plotters::coord::Shift>,
    caption: &str,
    runs: &[Curves],
) -> Result<(), String>
where
    B::ErrorType: 'static,
{
    let fail = |e: &dyn std::fmt::Display| format!("drawing the plot: {e}");
    let last = runs.iter().flat_map(|r| r.train.iter().chain(&r.test)).map(|p| p.0).fold(1.0, f64::max);
    let top = runs.iter().flat_map(|r| r.train.iter().chain(&r.test)).map(|p| p.1).fold(1.0, f64::max).min(100.0);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..last, 0.0..top * 1.05)
        .map_err(|e| fail(&e))?;
    chart.configure_mesh().x_desc("iterations").y_desc("error (%)").draw().map_err(|e| fail(&e))?;
    for (k, run) in runs.iter().enumerate() {
        let colour = Palette99::pick(k).to_rgba();
        let dashed = DashedLineSeries::new(run.train.iter().copied(), 4, 3, colour.stroke_width(1));
        chart.draw_series(dashed).map_err(|e| fail(&e))?;
        chart
            .draw_series(LineSeries::new(run.test.iter().copied(), colour.stroke_width(3)))
            .map_err(|e| fail(&e))?
            .label(run.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3)));
        // Each epoch's test error as a dot too (a run of one epoch has no line).
        chart.draw_series(run.test.iter().map(|&p| Circle::new(p, 4, colour.filled()))).map_err(|e| fail(&e))?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(|e| fail(&e))
}

/// Writes `panels` side by side to `stem.svg` and `stem.png`; returns the two paths.
pub fn write(stem: &Path, panels: &[(String, Vec<Curves>)]) -> Result<(PathBuf, PathBuf), String> {
    let (svg, png) = (stem.with_extension("svg"), stem.with_extension("png"));
    let size = (if panels.len() > 1 { 600 * panels.len() as u32 } else { 900 }, 600);
    draw(SVGBackend::new(&svg, size).into_drawing_area(), panels).map_err(|e| format!("{}: {e}", svg.display()))?;
    draw(BitMapBackend::new(&png, size).into_drawing_area(), panels).map_err(|e| format!("{}: {e}", png.display()))?;
    Ok((svg, png))
}

/// Writes the plot of `args.runs`; returns where.
pub fn plot(args: PlotArgs) -> Result<String, String> {
    let runs = args.runs.iter().map(|r| curves(r)).collect::<Result<Vec<_>, _>>()?;
    let stem = args.out.unwrap_or_else(|| args.runs[0].join("errors"));
    let (svg, png) = write(&stem, &[("error (%): training dashed, test bold".into(), runs)])?;
    Ok(format!("wrote {} and {}\n", svg.display(), png.display()))
}
