//! `cgbot bench`: simulated cameras through the real daemon, with the figures that size a
//! deployment; optionally beside the usual Python/OpenCV pipeline.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use cgbot::bench::{self, BaselineReport, BenchOptions, Ceiling, PointReport};
use cgbot::metrics::Quantile;
use cgbot::sim::{SimConfig, SimHandle};

use super::sim::default_clip;

#[derive(Args)]
pub struct BenchArgs {
    /// Simulated cameras.
    #[arg(long, default_value_t = 50)]
    cameras: usize,
    /// Measure several camera counts (e.g. 10,25,50,100) and plot them.
    #[arg(long, value_delimiter = ',')]
    sweep: Vec<usize>,
    /// Clip every camera plays [default: people-walking-1080p-h264.mp4 of the shared
    /// samples; people-walking-1080p-h265.mp4 for H.265].
    #[arg(long)]
    clip: Option<PathBuf>,
    /// How long to measure after the warm-up (`60s`, `5m`, or seconds: `90`).
    #[arg(long, default_value = "60s", value_parser = cgbot::duration::parse)]
    duration: Duration,
    /// How long the daemon runs before measuring.
    #[arg(long, default_value = "20s", value_parser = cgbot::duration::parse)]
    warmup: Duration,
    /// One analysed frame per camera per interval.
    #[arg(long, default_value = "2s", value_parser = cgbot::duration::parse)]
    interval: Duration,
    /// Model (catalogue name or ONNX path).
    #[arg(long)]
    model: Option<String>,
    /// Execution provider: cpu, cuda[:N], tensorrt[:N].
    #[arg(long, default_value = "cpu")]
    provider: String,
    /// Largest inference batch across cameras (models with a dynamic batch).
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Inference threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Also run the Python/OpenCV baseline on the same clip, model and sampling.
    #[arg(long)]
    baseline: bool,
    /// Cameras the baseline watches (it decodes every frame, so fewer).
    #[arg(long, default_value_t = 4)]
    baseline_cameras: usize,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    /// Where the sweep plot goes.
    #[arg(long, default_value = "out/bench/sweep.png")]
    plot: PathBuf,
    /// Working directory for the runs' configuration, databases and logs.
    #[arg(long, default_value = "out/bench")]
    work_dir: PathBuf,
}

#[derive(Serialize)]
struct Report {
    clip: String,
    interval_s: f64,
    provider: String,
    machine: String,
    inference_ceiling: Ceiling,
    points: Vec<PointReport>,
    baseline: Option<BaselineReport>,
    /// The baseline's CPU per camera over ours (at the largest camera count).
    cameras_per_core_vs_baseline: Option<f64>,
}

impl BenchArgs {
    pub fn run(&self) -> Result<()> {
        let counts = if self.sweep.is_empty() {
            vec![self.cameras]
        } else {
            self.sweep.clone()
        };
        if counts.contains(&0) {
            bail!("camera counts must be at least 1");
        }
        let clip = self
            .clip
            .clone()
            .unwrap_or_else(|| default_clip("people-walking-1080p-h264.mp4"));
        let options = BenchOptions {
            clip: clip.clone(),
            warmup: self.warmup,
            duration: self.duration,
            interval: self.interval,
            model: self.model.clone(),
            provider: self.provider.clone(),
            batch: self.batch,
            threads: self.threads,
            exe: std::env::current_exe().context("locating the cgbot binary")?,
            work_dir: self.work_dir.clone(),
        };
        if self.baseline {
            bench::baseline_ready()?;
        }
        std::fs::create_dir_all(&self.work_dir)
            .with_context(|| format!("{}", self.work_dir.display()))?;
        let most = counts
            .iter()
            .copied()
            .max()
            .unwrap_or(1)
            .max(self.baseline_cameras);
        let mut sim_config = SimConfig::new(&clip, most);
        sim_config.bind = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let sim = SimHandle::start(sim_config)?;
        let mut progress = |line: String| eprintln!("bench: {line}");

        progress("inference alone (ONNX Runtime on a ready-made input)".into());
        let ceiling = bench::inference_ceiling(&options, Duration::from_secs(5))?;
        let mut points = Vec::new();
        for &cameras in &counts {
            let point = bench::run_point(&sim, &options, cameras, &mut progress)?;
            if !self.json {
                eprintln!("{}", point_line(&point));
            }
            points.push(point);
        }
        let baseline = if self.baseline {
            progress(format!(
                "Python/OpenCV baseline with {} cameras",
                self.baseline_cameras
            ));
            Some(bench::run_baseline(&sim, &options, self.baseline_cameras)?)
        } else {
            None
        };
        sim.shutdown();
        let ours = points.last().expect("at least one count");
        let ratio = baseline
            .as_ref()
            .map(|b| b.cores_per_camera * ours.cameras_per_core);
        let report = Report {
            clip: clip.display().to_string(),
            interval_s: self.interval.as_secs_f64(),
            provider: self.provider.clone(),
            machine: machine(),
            inference_ceiling: ceiling,
            points,
            baseline,
            cameras_per_core_vs_baseline: ratio,
        };
        if counts.len() > 1 {
            if let Some(dir) = self.plot.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let title = format!(
                "cgbot bench: {} every {} s, {} — {}",
                clip.file_name()
                    .map_or(String::new(), |n| n.to_string_lossy().into()),
                self.interval.as_secs_f64(),
                self.provider,
                report.machine
            );
            bench::plot_sweep(&report.points, &title, &self.plot)?;
            eprintln!("plot: {}", self.plot.display());
        }
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", render(&report));
        }
        Ok(())
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split(':')
                    .nth(1)
                    .map(str::trim)
                    .map(String::from)
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores, {model}")
}

fn point_line(p: &PointReport) -> String {
    format!(
        "bench: {} cameras: {:.1} of {:.1} frames/s analysed, {:.2} cores, p99 {} s, skipped {} (decode {}, detect {})",
        p.cameras,
        p.analysed_fps,
        p.wanted_fps,
        p.cpu_cores,
        shown(p.latency_p99),
        p.skipped.total(),
        p.skipped.decode,
        p.skipped.detect
    )
}

/// A latency quantile for the tables: seconds, `>1000` beyond the histogram, `-` without frames.
fn shown(latency: Option<Quantile>) -> String {
    latency.map_or("-".into(), |l| format!("{l:.2}"))
}

fn render(r: &Report) -> String {
    let mut out = format!(
        "clip {}, one frame per camera every {} s, provider {}, {}\n\n",
        r.clip, r.interval_s, r.provider, r.machine
    );
    out += "cameras  analysed/s  wanted/s  cores  cams/core  p50 s  p99 s  skipped: receive  decode  detect  peak RSS MiB  RSS/camera MiB\n";
    for p in &r.points {
        out += &format!(
            "{:>7}  {:>10.1}  {:>8.1}  {:>5.2}  {:>9.1}  {:>5}  {:>5}  {:>16}  {:>6}  {:>6}  {:>12.0}  {:>14.2}\n",
            p.cameras,
            p.analysed_fps,
            p.wanted_fps,
            p.cpu_cores,
            p.cameras_per_core,
            shown(p.latency_p50),
            shown(p.latency_p99),
            p.skipped.receive,
            p.skipped.decode,
            p.skipped.detect,
            p.peak_rss_mib,
            p.rss_per_camera_mib
        );
    }
    out += "\nCPU ms per analysed frame\ncameras  receive  decode  preprocess  inference  post+rules  other  non-inference share\n";
    for p in &r.points {
        let s = &p.cpu_ms_per_frame;
        out += &format!(
            "{:>7}  {:>7.2}  {:>6.2}  {:>10.2}  {:>9.2}  {:>10.2}  {:>5.2}  {:>18.0}%\n",
            p.cameras,
            s.receive,
            s.decode,
            s.preprocess,
            s.inference,
            s.postprocess_rules,
            s.other,
            p.non_inference_share * 100.0
        );
    }
    let c = &r.inference_ceiling;
    out += &format!(
        "\ninference alone: {:.1} frames/s at batch 1{}\n",
        c.batch1_fps,
        c.batch_fps
            .map_or(String::new(), |f| format!(", {f:.1} at batch {}", c.batch))
    );
    if let Some(last) = r.points.last() {
        out += &format!(
            "pipeline at {} cameras: {:.0}% of the inference-alone rate\n",
            last.cameras,
            100.0 * last.analysed_fps / c.batch_fps.unwrap_or(c.batch1_fps).max(f64::MIN_POSITIVE)
        );
    }
    if let (Some(b), Some(ratio), Some(ours)) =
        (&r.baseline, r.cameras_per_core_vs_baseline, r.points.last())
    {
        out += &format!(
            "\nbaseline (Python, OpenCV decodes every frame, onnxruntime): {} cameras, {:.1} of {:.1} frames/s, {:.2} cores = {:.3} cores per camera ({:.1} cameras per core)\n\
             cgbot: {:.3} cores per camera ({:.1} cameras per core): {ratio:.1}× the baseline's cameras per core\n",
            b.cameras,
            b.analysed_fps,
            b.wanted_fps,
            b.cpu_cores,
            b.cores_per_camera,
            1.0 / b.cores_per_camera.max(f64::MIN_POSITIVE),
            1.0 / ours.cameras_per_core.max(f64::MIN_POSITIVE),
            ours.cameras_per_core,
        );
    }
    out
}
