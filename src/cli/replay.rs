//! `cgbot replay`: a recorded clip through the whole path, optionally filing cases.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use cgbot::config::{self, Camera};
use cgbot::decode::Sampling;
use cgbot::detect::Detection;
use cgbot::pipeline::{
    self, Analysed, CityFiles, Feed, FileFeed, FilingStats, Outlet, OutletError, Summary,
};
use cgbot::source::FileSource;
use cgbot::store::Store;

use super::cases::{DbArg, SinkArgs};
use super::{annotated_name, describe, write_annotated, DetectorArgs};

#[derive(Args)]
pub struct ReplayArgs {
    clip: PathBuf,
    /// Analyse every N-th frame (`5`) or one frame per interval (`2s`, `500ms`).
    #[arg(long, value_name = "N|DURATION")]
    every: Option<String>,
    /// Decode keyframes only; other frames never reach the decoder.
    #[arg(long)]
    keyframes_only: bool,
    #[command(flatten)]
    detector: DetectorArgs,
    /// Print one JSON object per analysed frame: {"pts", "keyframe", "detections"}.
    #[arg(long)]
    json: bool,
    /// Write analysed frames that have detections, with labelled boxes, into this directory.
    #[arg(long, value_name = "DIR")]
    annotate: Option<PathBuf>,
    #[command(flatten)]
    filing: FilingArgs,
}

impl ReplayArgs {
    pub fn run(&self) -> Result<()> {
        let sampling = Sampling::from_options(self.every.as_deref(), self.keyframes_only)?;
        replay(
            &self.clip,
            sampling,
            &self.detector,
            self.json,
            self.annotate.as_deref(),
            &self.filing,
        )
    }
}

/// File cases from a replay: the clip is treated as a recording of one configured camera.
#[derive(Args)]
struct FilingArgs {
    /// Camera configuration (a TOML file or a directory of them); enables case filing.
    #[arg(long, value_name = "FILE|DIR")]
    camera: Option<PathBuf>,
    /// Which camera of the configuration the clip comes from (needed if it has several).
    #[arg(long, value_name = "ID", requires = "camera")]
    camera_id: Option<String>,
    #[command(flatten)]
    db: DbArg,
    /// Wall-clock time of the clip's first frame: RFC 3339 in UTC (2026-11-24T08:00:00Z) or
    /// Unix seconds. Default: the clip's creation_time tag, else its modification time.
    #[arg(long, value_parser = parse_start)]
    start: Option<f64>,
    /// Case category table replacing the built-in one (a city's own codes).
    #[arg(long, value_name = "FILE", requires = "camera")]
    catalogue: Option<PathBuf>,
    /// The city's working calendar, for time limits given in working time.
    #[arg(long, value_name = "FILE", requires = "camera")]
    calendar: Option<PathBuf>,
    /// The city platform's code table: cases and sink events carry `city_code` and its
    /// fields.
    #[arg(long, value_name = "FILE", requires = "camera")]
    codes: Option<PathBuf>,
    #[command(flatten)]
    sinks: SinkArgs,
}

fn parse_start(s: &str) -> Result<f64, String> {
    if let Ok(seconds) = s.parse::<f64>() {
        return Ok(seconds);
    }
    humantime::parse_rfc3339(s)
        .map_err(|e| format!("`{s}`: {e} (use 2026-11-24T08:00:00Z or Unix seconds)"))
        .map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        })
}

#[derive(Serialize)]
struct FrameResult<'a> {
    pts: f64,
    keyframe: bool,
    detections: &'a [Detection],
}

/// The camera a replay files cases for, from `--camera` and `--camera-id`.
fn replay_camera(args: &FilingArgs) -> Result<Option<config::Camera>> {
    args.camera
        .as_deref()
        .map(|path| pipeline::recorded_camera(path, args.camera_id.as_deref()))
        .transpose()
        .map_err(Into::into)
}

/// Prints (or writes as JSON), annotates and reports progress for every analysed frame.
struct ReplayOutlet {
    clip: PathBuf,
    json: bool,
    annotate: Option<PathBuf>,
    progress: ProgressBar,
    terminal: bool,
    last_status: Instant,
    analysed: u64,
    cases: FilingStats,
}

impl Outlet for ReplayOutlet {
    fn analysed(&mut self, a: &Analysed<'_>) -> Result<(), OutletError> {
        let frame = a.frame;
        self.analysed += 1;
        self.progress.set_position((frame.pts * 1000.0) as u64);
        if !self.terminal && self.last_status.elapsed() >= Duration::from_secs(10) {
            self.last_status = Instant::now();
            eprintln!(
                "progress: {:.1} s of {}, {} frames analysed",
                frame.pts,
                self.clip.display(),
                self.analysed
            );
        }
        let mut stdout = std::io::stdout();
        if self.json {
            let line = serde_json::to_string(&FrameResult {
                pts: frame.pts,
                keyframe: frame.keyframe,
                detections: a.detections,
            })?;
            writeln!(stdout, "{line}")?;
        } else if !a.detections.is_empty() {
            self.progress
                .suspend(|| writeln!(stdout, "{:8.2}s  {}", frame.pts, describe(a.detections)))?;
        }
        if let (Some(dir), false) = (&self.annotate, a.detections.is_empty()) {
            let path = dir.join(annotated_name(&self.clip, Some(frame.pts)));
            write_annotated(frame, a.detections, &path)?;
        }
        Ok(())
    }

    fn filed(&mut self, _feed: &Feed, stats: FilingStats) {
        self.cases = stats;
    }
}

fn replay(
    clip: &Path,
    sampling: Sampling,
    args: &DetectorArgs,
    json: bool,
    annotate: Option<&Path>,
    filing_args: &FilingArgs,
) -> Result<()> {
    let camera = replay_camera(filing_args)?;
    let detector = args.build_for(camera.as_ref().and_then(|c| c.model.as_deref()))?;
    let (source, info) = FileSource::open(clip)?;
    let city = CityFiles {
        catalogue: filing_args.catalogue.clone(),
        calendar: filing_args.calendar.clone(),
        codes: filing_args.codes.clone(),
    };
    let filing = camera
        .as_ref()
        .map(|camera| pipeline::recording_filing(camera, &filing_args.db.db, &city))
        .transpose()?;
    let start = filing_args
        .start
        .or_else(|| source.recorded_at())
        .unwrap_or(0.0);
    let outlet = ReplayOutlet {
        clip: clip.to_path_buf(),
        json,
        annotate: annotate.map(Path::to_path_buf),
        progress: progress_bar(info.duration),
        terminal: std::io::stderr().is_terminal(),
        last_status: Instant::now(),
        analysed: 0,
        cases: FilingStats::default(),
    };
    let file = FileFeed {
        source,
        info,
        camera: camera.unwrap_or_else(|| Camera::unconfigured(&clip.display().to_string())),
        start,
    };
    let filed = filing.is_some();
    let (outlet, mut summaries) =
        pipeline::run_files(vec![file], detector, filing, sampling, outlet)?;
    outlet.progress.finish_and_clear();
    let summary = summaries.pop().expect("one summary per file")?;
    eprint!("{}", render_summary(clip, &summary));
    if filed {
        let s = outlet.cases;
        eprintln!(
            "  cases: {} candidates, {} filed, {} verifying, {} closed as auto-verified, {} reopened ({})",
            s.candidates,
            s.filed,
            s.verifying,
            s.closed,
            s.reopened,
            cgbot::store::display_db(&filing_args.db.db)
        );
        filing_args
            .sinks
            .deliver(&mut Store::open(&filing_args.db.db)?)?;
    }
    // What the clip held is analysed (and filed) above; a cut clip still fails the command,
    // so a script never takes half a recording for the whole.
    if let Some(reason) = &summary.ended_early {
        bail!(
            "{}: the stream ended early ({reason}); the frames before it were analysed",
            clip.display()
        );
    }
    Ok(())
}

fn progress_bar(duration: Option<f64>) -> ProgressBar {
    let bar = ProgressBar::new(duration.map_or(0, |d| (d * 1000.0) as u64));
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {percent}% of clip, eta {eta}",
        )
        .expect("valid progress template"),
    );
    bar
}

fn render_summary(clip: &Path, s: &Summary) -> String {
    let d = &s.decode;
    let mut out = format!(
        "{}: {} access units read, {} decoded ({} skipped before the decoder, {} rejected as corrupt), \
         {} frames decoded, {} analysed, {} detections in {:.2} s ({} inference batches)\n",
        clip.display(),
        s.access_units,
        d.units_decoded,
        d.units_skipped,
        d.units_rejected,
        d.frames_decoded,
        d.frames_analysed,
        s.detections,
        s.wall.as_secs_f64(),
        s.detect.batches
    );
    if d.frames_damaged > 0 {
        out += &format!(
            "  {} frames decoded with concealed errors\n",
            d.frames_damaged
        );
    }
    if s.corrupt_packets > 0 {
        out += &format!(
            "  {} unreadable packets skipped by the demuxer\n",
            s.corrupt_packets
        );
    }
    if let Some(reason) = &s.ended_early {
        out += &format!("  stream ended early: {reason}\n");
    }
    let per_frame = |t: Duration| t.as_secs_f64() * 1000.0 / d.frames_analysed.max(1) as f64;
    out += "  stage          total s   ms per analysed frame\n";
    for (stage, t) in [
        ("demux", s.demux_time),
        ("decode", d.decode_time),
        ("preprocess", d.preprocess_time),
        ("inference", s.detect.inference),
        ("postprocess", s.detect.postprocess),
        ("output", s.output_time),
    ] {
        out += &format!(
            "  {stage:<12} {:>9.3}   {:>8.2}\n",
            t.as_secs_f64(),
            per_frame(t)
        );
    }
    out
}
