//! The `cgbot` command line: parse arguments, build the library's options, run, print.

mod cli;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use cgbot::annotate;
use cgbot::cases::Categories;
use cgbot::config;
use cgbot::decode::{Frame, Sampling};
use cgbot::detect::{Detection, Detector, DetectorOptions, Provider};
use cgbot::models::{self, Catalogue};
use cgbot::pipeline::{self, Batching, Filing, Summary};
use cgbot::rules::EventCatalogue;
use cgbot::source::FileSource;
use cgbot::store::Store;
use cli::cases::{CasesCommand, DbArg, SinkArgs};

#[derive(Parser)]
#[command(
    name = "cgbot",
    version,
    about = "City-management camera robot: detect problems on street cameras and file them as cases"
)]
struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Detect objects in still images.
    Detect {
        #[arg(required = true)]
        images: Vec<PathBuf>,
        #[command(flatten)]
        detector: DetectorArgs,
        /// Print JSON: [{"image", "detections": [{"label", "score", "box"}]}].
        #[arg(long)]
        json: bool,
        /// Write each image with labelled boxes into this directory.
        #[arg(long, value_name = "DIR")]
        annotate: Option<PathBuf>,
    },
    /// Decode a recorded clip (MP4, MKV, raw H.264/H.265) and detect on sampled frames.
    Replay(Box<ReplayArgs>),
    /// Cases filed by replay or the daemon.
    Cases {
        #[command(subcommand)]
        command: CasesCommand,
    },
    /// Case events waiting for delivery.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// The model catalogue.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
}

#[derive(Args)]
struct ReplayArgs {
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

#[derive(Subcommand)]
enum OutboxCommand {
    /// Deliver pending case events to the given sinks.
    Deliver {
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        sinks: SinkArgs,
    },
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

#[derive(Subcommand)]
enum ModelsCommand {
    /// List known models and whether their files are present.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Check model files against their recorded sha256 (all models by default).
    Verify { names: Vec<String> },
}

#[derive(Args, Clone)]
struct DetectorArgs {
    /// Model: a catalogue name or a path to an ONNX file (default: the catalogue's default).
    #[arg(long)]
    model: Option<String>,
    /// Minimum detection score.
    #[arg(long, default_value_t = 0.3)]
    conf: f32,
    /// IoU above which a box of the same class is suppressed.
    #[arg(long, default_value_t = 0.45)]
    nms: f32,
    /// Execution provider: cpu, cuda[:N], tensorrt[:N]. A GPU provider that cannot start is an error.
    #[arg(long, default_value = "cpu")]
    provider: Provider,
    /// Inference threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Largest batch for models with a dynamic batch dimension.
    #[arg(long, default_value_t = 8)]
    batch: usize,
}

impl DetectorArgs {
    fn build(&self) -> Result<Detector> {
        if !(0.0..=1.0).contains(&self.conf) || !(0.0..=1.0).contains(&self.nms) {
            bail!("--conf and --nms must be between 0 and 1");
        }
        let model = Catalogue::load()?.resolve(self.model.as_deref())?;
        let options = DetectorOptions {
            conf: self.conf,
            nms_iou: self.nms,
            provider: self.provider,
            threads: self.threads,
            max_batch: self.batch.max(1),
        };
        Ok(Detector::new(model, options)?)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = ["warn", "info", "debug"][usize::from(cli.verbose.min(2))];
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .init();
    let result = match cli.command {
        Command::Detect {
            images,
            detector,
            json,
            annotate,
        } => detect(&images, &detector, json, annotate.as_deref()),
        Command::Replay(args) => Sampling::from_options(args.every.as_deref(), args.keyframes_only)
            .map_err(anyhow::Error::msg)
            .and_then(|sampling| {
                replay(
                    &args.clip,
                    sampling,
                    &args.detector,
                    args.json,
                    args.annotate.as_deref(),
                    &args.filing,
                )
            }),
        Command::Cases { command } => cli::cases::run(command),
        Command::Outbox {
            command: OutboxCommand::Deliver { db, sinks },
        } => cli::cases::deliver(&db.db, &sinks),
        Command::Models { command } => match command {
            ModelsCommand::List { json } => models_list(json),
            ModelsCommand::Verify { names } => models_verify(&names),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Serialize)]
struct ImageResult<'a> {
    image: String,
    detections: &'a [Detection],
}

fn detect(
    images: &[PathBuf],
    args: &DetectorArgs,
    json: bool,
    annotate: Option<&Path>,
) -> Result<()> {
    let mut detector = args.build()?;
    let mut results = Vec::new();
    let mut failed = 0;
    for path in images {
        let mut found = Vec::new();
        let outcome = FileSource::open(path)
            .map_err(Into::into)
            .and_then(|source| {
                pipeline::analyse_file(
                    source,
                    &mut detector,
                    Sampling::All,
                    Batching::default(),
                    &mut |frame, detections| {
                        if let Some(dir) = annotate {
                            write_annotated(
                                frame,
                                detections,
                                &dir.join(annotated_name(path, None)),
                            )?;
                        }
                        found.extend_from_slice(detections);
                        Ok(())
                    },
                )
            });
        match outcome {
            Ok(_) => results.push((path.display().to_string(), found)),
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    if json {
        let out: Vec<ImageResult> = results
            .iter()
            .map(|(image, detections)| ImageResult {
                image: image.clone(),
                detections,
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for (image, detections) in &results {
            println!("{image}: {}", describe(detections));
        }
    }
    if failed > 0 {
        bail!("{failed} of {} images could not be analysed", images.len());
    }
    Ok(())
}

#[derive(Serialize)]
struct FrameResult<'a> {
    pts: f64,
    keyframe: bool,
    detections: &'a [Detection],
}

/// The camera a replay files cases for, from `--camera` and `--camera-id`.
fn replay_camera(args: &FilingArgs) -> Result<Option<config::Camera>> {
    let Some(path) = &args.camera else {
        return Ok(None);
    };
    let cameras = config::load_cameras(path, &EventCatalogue::builtin())?;
    let camera = match &args.camera_id {
        Some(id) => cameras
            .into_iter()
            .find(|c| &c.info.id == id)
            .with_context(|| format!("{}: no camera `{id}`", path.display()))?,
        None if cameras.len() == 1 => cameras.into_iter().next().expect("one camera"),
        None => bail!(
            "{} defines {} cameras: say which one the clip is from with --camera-id",
            path.display(),
            cameras.len()
        ),
    };
    Ok(Some(camera))
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
    let mut detector = match (&args.model, camera.as_ref().and_then(|c| c.model.clone())) {
        (None, Some(model)) => DetectorArgs {
            model: Some(model),
            ..args.clone()
        }
        .build()?,
        _ => args.build()?,
    };
    let source = FileSource::open(clip)?;
    let mut filing = match &camera {
        Some(camera) => {
            let categories = match &filing_args.catalogue {
                Some(path) => Categories::load(path).map_err(anyhow::Error::msg)?,
                None => Categories::builtin(),
            };
            let store = Store::open(&filing_args.db.db)?;
            let base = filing_args
                .start
                .or_else(|| source.0.recorded_at())
                .unwrap_or(0.0);
            let input = detector.model().spec.input.clone();
            Some(Filing::new(camera, categories, store, input, base)?)
        }
        None => None,
    };
    let progress = progress_bar(source.1.duration);
    let terminal = std::io::stderr().is_terminal();
    let mut last_status = Instant::now();
    let mut stdout = std::io::stdout().lock();
    let mut analysed = 0u64;
    let summary = pipeline::analyse_file(
        source,
        &mut detector,
        sampling,
        Batching::default(),
        &mut |frame, detections| {
            analysed += 1;
            progress.set_position((frame.pts * 1000.0) as u64);
            if !terminal && last_status.elapsed() >= Duration::from_secs(10) {
                last_status = Instant::now();
                eprintln!(
                    "progress: {:.1} s of {}, {analysed} frames analysed",
                    frame.pts,
                    clip.display()
                );
            }
            if json {
                let line = serde_json::to_string(&FrameResult {
                    pts: frame.pts,
                    keyframe: frame.keyframe,
                    detections,
                })
                .map_err(|e| e.to_string())?;
                writeln!(stdout, "{line}").map_err(|e| e.to_string())?;
            } else if !detections.is_empty() {
                progress
                    .suspend(|| writeln!(stdout, "{:8.2}s  {}", frame.pts, describe(detections)))
                    .map_err(|e| e.to_string())?;
            }
            if let (Some(dir), false) = (annotate, detections.is_empty()) {
                write_annotated(
                    frame,
                    detections,
                    &dir.join(annotated_name(clip, Some(frame.pts))),
                )?;
            }
            if let Some(filing) = filing.as_mut() {
                filing
                    .on_frame(frame, detections)
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        },
    );
    progress.finish_and_clear();
    let summary = summary?;
    eprint!("{}", render_summary(clip, &summary));
    if let Some(filing) = filing.as_mut() {
        let s = filing.stats;
        eprintln!(
            "  cases: {} candidates, {} filed, {} verifying, {} closed as auto-verified, {} reopened ({})",
            s.candidates,
            s.filed,
            s.verifying,
            s.closed,
            s.reopened,
            filing_args.db.db.display()
        );
        filing_args.sinks.deliver(filing.store())?;
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

fn describe(detections: &[Detection]) -> String {
    if detections.is_empty() {
        return "nothing detected".into();
    }
    detections
        .iter()
        .map(|d| {
            let [x1, y1, x2, y2] = d.bbox;
            format!(
                "{} {:.2} [{x1:.0},{y1:.0},{x2:.0},{y2:.0}]",
                d.label, d.score
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `NAME.jpg` for an image, `NAME-000012.000s.jpg` for a frame of a clip.
fn annotated_name(source: &Path, pts: Option<f64>) -> String {
    let stem = source
        .file_stem()
        .map_or("frame".into(), |s| s.to_string_lossy());
    match pts {
        Some(pts) => format!("{stem}-{pts:010.3}s.jpg"),
        None => format!("{stem}.jpg"),
    }
}

fn write_annotated(frame: &Frame, detections: &[Detection], path: &Path) -> Result<(), String> {
    let mut image = frame.picture.to_rgb().map_err(|e| e.to_string())?;
    annotate::draw_detections(&mut image, detections);
    annotate::save_jpeg(&image, path).map_err(|e| e.to_string())
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

#[derive(Serialize)]
struct ModelRow<'a> {
    #[serde(flatten)]
    spec: &'a models::ModelSpec,
    path: Option<PathBuf>,
}

fn models_list(json: bool) -> Result<()> {
    let catalogue = Catalogue::load()?;
    let rows: Vec<ModelRow> = catalogue
        .models()
        .iter()
        .map(|spec| ModelRow {
            spec,
            path: catalogue.find_file(spec),
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    for row in &rows {
        let s = row.spec;
        println!(
            "{}{}  {:?} {}x{} {:?}, {} labels, {}\n    {}\n    file: {}",
            s.name,
            if s.default { " (default)" } else { "" },
            s.format,
            s.input.width,
            s.input.height,
            s.input.colour,
            s.labels.len(),
            s.license.as_deref().unwrap_or("license not recorded"),
            s.description.as_deref().unwrap_or(""),
            row.path.as_ref().map_or_else(
                || format!("{} missing (run `make setup`)", s.file),
                |p| p.display().to_string()
            ),
        );
    }
    Ok(())
}

fn models_verify(names: &[String]) -> Result<()> {
    let catalogue = Catalogue::load()?;
    let specs: Vec<_> = if names.is_empty() {
        catalogue.models().iter().collect()
    } else {
        names
            .iter()
            .map(|n| catalogue.get(n))
            .collect::<Result<_, _>>()?
    };
    let mut failed = 0;
    for spec in specs {
        match catalogue.locate(spec) {
            Ok(found) => println!("ok      {}  {}", spec.name, found.path.display()),
            Err(e) => {
                failed += 1;
                println!("FAILED  {}  {e}", spec.name);
            }
        }
    }
    if failed > 0 {
        bail!("{failed} model(s) failed verification");
    }
    Ok(())
}
