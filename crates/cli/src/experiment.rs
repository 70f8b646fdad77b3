//! `skipgrad experiment`: the paper's comparisons, each run trained with one recipe, then a table
//! and a figure. `degradation` trains the plain and residual net of each depth (Fig. 6: plain
//! left, residual right); `shortcuts` compares options A, B and C.

use crate::plot::{Curves, curves, write};
use crate::train::{Recipe, TrainArgs, run};
use skipgrad_dist::Single;
use skipgrad_nn::Shortcut;
use std::path::PathBuf;

/// The experiments.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum Experiment {
    /// Plain against residual nets of each depth (Fig. 6).
    Degradation {
        /// Depths (6n+2), comma separated.
        #[arg(long, value_delimiter = ',', default_value = "20,32,44,56")]
        depths: Vec<usize>,
        #[command(flatten)]
        recipe: Recipe,
        /// Where the runs, the table and the figure go.
        #[arg(long, default_value = "runs/degradation")]
        out: PathBuf,
    },
    /// Shortcut options A, B and C on one residual net.
    Shortcuts {
        /// The residual net.
        #[arg(long, default_value = "resnet20")]
        model: String,
        #[command(flatten)]
        recipe: Recipe,
        /// Where the runs, the table and the figure go.
        #[arg(long, default_value = "runs/shortcuts")]
        out: PathBuf,
    },
}

/// Runs an experiment; returns its table.
pub fn experiment(e: Experiment) -> Result<String, String> {
    match e {
        Experiment::Degradation { depths, recipe, out } => {
            let mut table = String::from(
                "| depth | plain: training error | plain: test error | residual: training error | residual: test error |\n|---|---|---|---|---|\n",
            );
            let mut panels: Vec<(String, Vec<Curves>)> =
                vec![("plain: training dashed, test bold".into(), vec![]), ("residual".into(), vec![])];
            for &depth in &depths {
                let mut row = format!("| {depth} ");
                for (k, kind) in ["plain", "resnet"].into_iter().enumerate() {
                    let dir = out.join(format!("{kind}{depth}"));
                    let r = run(TrainArgs::for_run(&recipe, &format!("{kind}{depth}"), None, dir.clone()), &Single)?;
                    row += &format!(
                        "| {:.2}% | {:.2}% ",
                        100.0 * r.train_error,
                        100.0 * (1.0 - r.test.map_or(f64::NAN, |t| t.accuracy))
                    );
                    panels[k].1.push(curves(&dir)?);
                }
                table += &format!("{row}|\n");
            }
            finish(&out, "degradation", table, &panels)
        }
        Experiment::Shortcuts { model, recipe, out } => {
            let mut table = String::from("| shortcut | training error | test error |\n|---|---|---|\n");
            let mut runs = vec![];
            for (name, option) in [("A", Shortcut::A), ("B", Shortcut::B), ("C", Shortcut::C)] {
                let dir = out.join(format!("{model}-{name}"));
                let r = run(TrainArgs::for_run(&recipe, &model, Some(option), dir.clone()), &Single)?;
                table += &format!(
                    "| {name} | {:.2}% | {:.2}% |\n",
                    100.0 * r.train_error,
                    100.0 * (1.0 - r.test.map_or(f64::NAN, |t| t.accuracy))
                );
                runs.push(curves(&dir)?);
            }
            finish(&out, "shortcuts", table, &[(format!("{model}: options A, B, C"), runs)])
        }
    }
}

/// Writes the table (`name.md`) and the figure (`name.svg`, `name.png`) into `out`.
fn finish(
    out: &std::path::Path,
    name: &str,
    table: String,
    panels: &[(String, Vec<Curves>)],
) -> Result<String, String> {
    let md = out.join(format!("{name}.md"));
    std::fs::write(&md, &table).map_err(|e| format!("{}: {e}", md.display()))?;
    let (svg, png) = write(&out.join(name), panels)?;
    Ok(format!("{table}\nwrote {}, {} and {}\n", md.display(), svg.display(), png.display()))
}
