//! Case quality, measured: scenario clips with ground truth run through the real pipeline
//! (decoding, the model, tracking, rules, the case engine, a throw-away SQLite store), and
//! the cases they leave scored against the cases that were due — precision, recall,
//! duplicates, filing delay, false and missed closes — with every miss put down to the
//! detector, the tracker or the rules.

mod plot;
pub mod recipe;
mod report;
pub mod scenario;
pub mod score;

pub use plot::plot_report;
pub use report::{render_table, EventTotals, Report, ScenarioReport};
pub use scenario::{scenario_files, Clip, Scenario};

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::ProgressBar;

use crate::config::Camera;
use crate::decode::Sampling;
use crate::detect::Detector;
use crate::pipeline::{
    self, Analysed, CityFiles, FileFeed, Outlet, OutletError, PipelineError, RecordingError,
};
use crate::rules::ZoneRules;
use crate::source::FileSource;
use crate::store::{CaseFilter, Store, StoreError};

use score::{CaseRecord, Expected, Sample, Window};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{}: {}", path.display(), crate::config::clip_lines(reason))]
    Read { path: PathBuf, reason: String },
    #[error("{}: {field}: {}", file.display(), crate::config::clip_lines(reason))]
    Invalid {
        file: PathBuf,
        field: String,
        reason: String,
    },
    #[error("{}: the recipe's clip cannot be made: {}", file.display(), crate::config::clip_lines(reason))]
    Recipe { file: PathBuf, reason: String },
    #[error("{}: {}: {reason}", file.display(), clip.display())]
    Clip {
        file: PathBuf,
        clip: PathBuf,
        reason: String,
    },
    // The scenario file first, then what went wrong (its message names the camera file,
    // clip or store); not a `source`, so that a report prints it once.
    #[error("{}: {error}", file.display())]
    Recording {
        file: PathBuf,
        error: Box<RecordingError>,
    },
    #[error("{}: {error}", file.display())]
    Pipeline {
        file: PathBuf,
        error: Box<PipelineError>,
    },
    #[error("{}: the scenario's store: {error}", file.display())]
    Store {
        file: PathBuf,
        error: Box<StoreError>,
    },
    #[error("{}: {reason}", path.display())]
    Plot { path: PathBuf, reason: String },
}

/// A scenario ready to run: its camera loaded, its expectations checked against the
/// camera's zones, its clip at hand.
pub struct Prepared {
    pub scenario: Scenario,
    pub camera: Camera,
    pub clip: PathBuf,
    pub expected: Vec<Expected>,
}

/// Loads the scenario's camera, checks its expectations name zones and events the camera
/// has (filling in their filing windows from the dwell), and makes its clip (cached in
/// `clips`). `making` is called before a clip is generated, so a caller can show it.
pub fn prepare(
    scenario: Scenario,
    clips: &Path,
    making: impl FnOnce(&Scenario),
) -> Result<Prepared, EvalError> {
    let file = scenario.file.clone();
    let camera = pipeline::recorded_camera(&scenario.camera, scenario.camera_id.as_deref())
        .map_err(|error| EvalError::Recording {
            file: file.clone(),
            error: Box::new(error),
        })?;
    let every = scenario.every.as_secs_f64();
    let expected = scenario
        .expect
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let invalid = |field: &str, reason: String| EvalError::Invalid {
                file: file.clone(),
                field: format!("expect[{i}].{field}"),
                reason,
            };
            let zone = camera
                .zones
                .iter()
                .find(|z| z.id == e.zone)
                .ok_or_else(|| {
                    invalid(
                        "zone",
                        format!(
                            "camera `{}` ({}) has no zone `{}`",
                            camera.info.id,
                            camera.source.display(),
                            e.zone
                        ),
                    )
                })?;
            let rule = zone
                .rules
                .iter()
                .find(|r| r.event == e.event)
                .ok_or_else(|| {
                    invalid(
                        "event",
                        format!("zone `{}` has no rule for `{}`", zone.id, e.event),
                    )
                })?;
            let dwell = rule.min_dwell.as_secs_f64();
            // First sighting up to one sample after it appears, filing on the first sample
            // past the dwell: at most two samples after the dwell.
            let file_window = e.file.unwrap_or(Window {
                from: e.present.from + dwell,
                until: e.present.from + dwell + 2.0 * every,
            });
            Ok(Expected {
                event: e.event.clone(),
                zone: e.zone.clone(),
                present: e.present,
                case: e.case,
                file: file_window,
                close: e.close,
            })
        })
        .collect::<Result<_, _>>()?;
    let clip = match &scenario.clip {
        Clip::File(path) => path.clone(),
        Clip::Recipe(recipe) => {
            if !recipe.cached_path(clips).exists() {
                making(&scenario);
            }
            recipe.make(clips, &file)?.0
        }
    };
    Ok(Prepared {
        scenario,
        camera,
        clip,
        expected,
    })
}

/// Records what the model saw in each sample, zone by zone, and shows progress.
struct Watch {
    zones: Vec<ZoneRules>,
    start: f64,
    samples: Vec<Sample>,
    progress: ProgressBar,
}

impl Outlet for Watch {
    fn analysed(&mut self, a: &Analysed<'_>) -> Result<(), OutletError> {
        let (w, h) = (a.frame.picture.width(), a.frame.picture.height());
        let mut seen: Vec<(String, String)> = Vec::new();
        for d in a.detections {
            for zone in &self.zones {
                for event in zone.events_for(&d.label, d.score, d.bbox, w, h) {
                    let pair = (zone.id.clone(), event.to_string());
                    if !seen.contains(&pair) {
                        seen.push(pair);
                    }
                }
            }
        }
        self.samples.push(Sample {
            t: a.ts - self.start,
            seen,
        });
        self.progress.set_position((a.frame.pts * 1000.0) as u64);
        Ok(())
    }
}

/// Runs a prepared scenario through the pipeline into a throw-away store and scores the
/// cases it filed. `progress` advances in milliseconds of the clip.
pub fn run(
    prepared: Prepared,
    detector: Detector,
    progress: &ProgressBar,
) -> Result<ScenarioReport, EvalError> {
    let started = Instant::now();
    let Prepared {
        scenario,
        camera,
        clip,
        expected,
    } = prepared;
    let file = scenario.file.clone();
    let pipeline_error = |error| EvalError::Pipeline {
        file: file.clone(),
        error: Box::new(error),
    };
    let dir = tempfile::tempdir().map_err(|e| EvalError::Read {
        path: std::env::temp_dir(),
        reason: e.to_string(),
    })?;
    let db = dir.path().join("cases.db");
    let filing =
        pipeline::recording_filing(&camera, &db, &CityFiles::default()).map_err(|error| {
            EvalError::Recording {
                file: file.clone(),
                error: Box::new(error),
            }
        })?;
    let (source, info) =
        FileSource::open(&clip).map_err(|e| pipeline_error(PipelineError::Source(e)))?;
    let clip_seconds = info.duration.unwrap_or(0.0);
    progress.set_length((clip_seconds * 1000.0) as u64);
    progress.set_position(0);
    let watch = Watch {
        zones: camera.zones.clone(),
        start: scenario.start,
        samples: Vec::new(),
        progress: progress.clone(),
    };
    let camera_id = camera.info.id.clone();
    let feed = FileFeed {
        source,
        info,
        camera,
        start: scenario.start,
    };
    let sampling = Sampling::Interval(scenario.every);
    let (watch, mut summaries) =
        pipeline::run_files(vec![feed], detector, Some(filing), sampling, watch)
            .map_err(pipeline_error)?;
    let summary = summaries
        .pop()
        .expect("one summary per file")
        .map_err(pipeline_error)?;
    if let Some(reason) = summary.ended_early {
        return Err(EvalError::Clip {
            file,
            clip,
            reason: format!("the stream ended early ({reason})"),
        });
    }
    let store_error = |error| EvalError::Store {
        file: file.clone(),
        error: Box::new(error),
    };
    let store = Store::open(&db).map_err(store_error)?;
    let start = scenario.start;
    let cases = store
        .cases(&CaseFilter::default())
        .map_err(store_error)?
        .into_iter()
        .map(|c| {
            let closes = store
                .history(&c.id)?
                .into_iter()
                .filter(|h| h.to == crate::cases::Status::Closed)
                .map(|h| h.ts - start)
                .collect();
            Ok(CaseRecord {
                id: c.id,
                event: c.event,
                zone: c.zone_id,
                label: c.label,
                first_seen: c.first_seen - start,
                filed: c.filed_at.map(|t| t - start),
                closes,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()
        .map_err(store_error)?;
    let every = scenario.every.as_secs_f64();
    let score = score::score(&expected, &cases, &watch.samples, every);
    Ok(ScenarioReport {
        name: scenario.name,
        file: scenario.file,
        description: scenario.description,
        camera: camera_id,
        start: scenario.start_text,
        every_s: every,
        clip,
        clip_s: clip_seconds,
        samples: watch.samples.len(),
        wall_s: started.elapsed().as_secs_f64(),
        passed: score.passed(),
        failures: score.failures,
        events: score.events,
        expected,
        cases,
    })
}
