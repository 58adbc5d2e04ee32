//! `cgbot eval`: scenario clips through the real pipeline, scored against the cases that
//! were due.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use cgbot::eval::{self, Report, Scenario};

use super::DetectorArgs;

#[derive(Args)]
pub struct EvalArgs {
    /// Scenario files, or directories of them (their `*.toml` files).
    #[arg(required = true, value_name = "SCENARIO|DIR")]
    scenarios: Vec<PathBuf>,
    /// Where recipes find their stills and clips (and scenarios their `clip`, unless it
    /// lies next to the scenario).
    #[arg(long, env = "CGBOT_SAMPLES", default_value = "../shared/samples")]
    samples: PathBuf,
    /// Cache of the clips made from recipes.
    #[arg(long, value_name = "DIR", default_value = "target/eval-clips")]
    clips: PathBuf,
    /// Print the report as JSON on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// Draw the scenarios' timelines with their cases into this PNG.
    #[arg(long, value_name = "FILE.png")]
    plot: Option<PathBuf>,
    /// Exit non-zero when a scenario misses its targets (otherwise only on errors).
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    detector: DetectorArgs,
}

impl EvalArgs {
    pub fn run(&self) -> Result<()> {
        // Every scenario is read before any runs: a typo fails in a second, not at the end.
        let scenarios = eval::scenario_files(&self.scenarios)?
            .iter()
            .map(|file| Scenario::load(file, &self.samples))
            .collect::<Result<Vec<_>, _>>()?;
        let count = scenarios.len();
        let mut reports = Vec::new();
        for (i, scenario) in scenarios.into_iter().enumerate() {
            let label = format!("[{}/{count}] {}", i + 1, scenario.name);
            let spinner =
                ProgressBar::new_spinner().with_message(format!("{label}: making its clip"));
            let prepared = eval::prepare(scenario, &self.clips, |_| {
                spinner.enable_steady_tick(std::time::Duration::from_millis(120));
            })?;
            spinner.finish_and_clear();
            let detector = self.detector.build_for(prepared.camera.model.as_deref())?;
            let progress = ProgressBar::new(0)
                .with_style(
                    ProgressStyle::with_template("{msg} {wide_bar} {percent}% of clip, eta {eta}")
                        .expect("valid progress template"),
                )
                .with_message(label);
            let report = eval::run(prepared, detector, &progress)?;
            progress.finish_and_clear();
            reports.push(report);
        }
        let report = Report::new(reports);
        let table = eval::render_table(&report);
        if self.json {
            eprint!("{table}");
            let mut stdout = std::io::stdout();
            serde_json::to_writer_pretty(&mut stdout, &report)?;
            writeln!(stdout)?;
        } else {
            print!("{table}");
        }
        if let Some(path) = &self.plot {
            eval::plot_report(&report, path)?;
        }
        if self.strict && report.failed > 0 {
            bail!(
                "{} of {} scenarios miss their targets",
                report.failed,
                count
            );
        }
        Ok(())
    }
}
