//! `cgbot bench`: simulated cameras through the real daemon, with the figures that size a
//! deployment; optionally beside the usual Python/OpenCV pipeline.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use cgbot::bench::{
    self, BaselineReport, BenchOptions, InferenceCeiling, PatrolOptions, PatrolReport, PointReport,
};
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
    /// Which stream the cameras are analysed on: main (the clip), or sub (the simulator's
    /// 640×360 /cam/N/sub, with evidence grabbed from the main stream).
    #[arg(long, default_value = "main", value_parser = ["main", "sub"])]
    stream: String,
    /// Model (catalogue name or ONNX path).
    #[arg(long)]
    model: Option<String>,
    /// Execution provider: cpu, cuda[:N], tensorrt[:N].
    #[arg(long, default_value = "cpu")]
    provider: String,
    /// Largest inference batch across cameras (models with a dynamic batch).
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Intra-op threads of each detect worker (0: the daemon's default,
    /// `detector.threads`).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Detect workers, each with its own ONNX Runtime session (0: the daemon's default,
    /// `detector.workers`).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Decode threads (0: the daemon's default, `queues.decode_threads`).
    #[arg(long, default_value_t = 0)]
    decode_threads: usize,
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
    /// Patrol instead of continuous watching: `--cameras` take turns in `--slots`, one
    /// analysed frame a visit; prints revisit figures, CPU per visit, cases filed and
    /// main-stream evidence grabs. The clip defaults to a parked street made from the
    /// shared street-bus-car.jpg (1080p25 H.264, 4 Mbit/s, a keyframe every 2 s).
    #[arg(long)]
    patrol: bool,
    /// Patrol slots: cameras visited at once.
    #[arg(long, default_value_t = 50)]
    slots: usize,
    /// With --patrol, every Nth camera has a no-parking zone over the parked vehicles, so
    /// it files cases and takes evidence (0: none).
    #[arg(long, default_value_t = 20)]
    parked_every: usize,
    /// With --patrol, how long a parked vehicle is seen before its case is filed.
    #[arg(long, default_value = "60s", value_parser = cgbot::duration::parse)]
    min_dwell: Duration,
    /// Working directory for the runs' configuration, databases and logs.
    #[arg(long, default_value = "out/bench")]
    work_dir: PathBuf,
}

#[derive(Serialize)]
struct Report {
    clip: String,
    /// The stream analysed: main or sub.
    stream: String,
    interval_s: f64,
    provider: String,
    machine: String,
    points: Vec<PointReport>,
    baseline: Option<BaselineReport>,
    /// The baseline's cameras served per core, by the same formula as ours.
    baseline_served_cameras_per_core: Option<f64>,
    /// Our served cameras per core (at the largest camera count) over the baseline's.
    served_cameras_per_core_vs_baseline: Option<f64>,
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
        let clip = match (&self.clip, self.patrol) {
            (Some(clip), _) => clip.clone(),
            (None, true) => {
                eprintln!("bench: the parked-street clip (made on first use, then kept in the work directory)");
                bench::parked_street_clip(&default_clip("street-bus-car.jpg"), &self.work_dir)?
            }
            (None, false) => default_clip("people-walking-1080p-h264.mp4"),
        };
        let options = BenchOptions {
            clip: clip.clone(),
            warmup: self.warmup,
            duration: self.duration,
            interval: self.interval,
            model: self.model.clone(),
            provider: self.provider.clone(),
            batch: self.batch,
            threads: self.threads,
            workers: self.workers,
            decode_threads: self.decode_threads,
            stream: if self.stream == "sub" {
                cgbot::config::StreamChoice::Sub
            } else {
                cgbot::config::StreamChoice::Main
            },
            exe: std::env::current_exe().context("locating the cgbot binary")?,
            work_dir: self.work_dir.clone(),
        };
        if self.baseline {
            bench::baseline_ready()?;
        }
        std::fs::create_dir_all(&self.work_dir)
            .with_context(|| format!("{}", self.work_dir.display()))?;
        if self.patrol {
            return self.run_patrol(&options);
        }
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

        progress("loading the model for the inference-alone runs".into());
        let mut ceiling = InferenceCeiling::new(&options)?;
        let mut points = Vec::new();
        for &cameras in &counts {
            let point = bench::run_point(&sim, &options, cameras, &mut ceiling, &mut progress)?;
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
        let baseline_served = baseline
            .as_ref()
            .map(BaselineReport::served_cameras_per_core);
        let ratio = baseline_served
            .map(|theirs| ours.served_cameras_per_core / theirs.max(f64::MIN_POSITIVE));
        let report = Report {
            clip: clip.display().to_string(),
            stream: self.stream.clone(),
            interval_s: self.interval.as_secs_f64(),
            provider: self.provider.clone(),
            machine: machine(),
            points,
            baseline,
            baseline_served_cameras_per_core: baseline_served,
            served_cameras_per_core_vs_baseline: ratio,
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

impl BenchArgs {
    fn run_patrol(&self, options: &BenchOptions) -> Result<()> {
        if self.slots == 0 {
            bail!("--slots must be at least 1");
        }
        let mut sim_config = SimConfig::new(&options.clip, self.cameras);
        sim_config.bind = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let sim = SimHandle::start(sim_config)?;
        let patrol = PatrolOptions {
            cameras: self.cameras,
            slots: self.slots,
            parked_every: self.parked_every,
            min_dwell: self.min_dwell,
        };
        let report = bench::run_patrol(&sim, options, &patrol, &mut |line| {
            eprintln!("bench: {line}")
        })?;
        sim.shutdown();
        if self.json {
            let report = PatrolRun {
                clip: options.clip.display().to_string(),
                stream: self.stream.clone(),
                interval_s: self.interval.as_secs_f64(),
                provider: self.provider.clone(),
                machine: machine(),
                patrol: report,
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", render_patrol(&report, &self.stream));
        }
        Ok(())
    }
}

#[derive(Serialize)]
struct PatrolRun {
    clip: String,
    stream: String,
    interval_s: f64,
    provider: String,
    machine: String,
    patrol: PatrolReport,
}

fn render_patrol(p: &PatrolReport, stream: &str) -> String {
    let r = &p.revisit;
    let c = &p.cpu_ms_per_frame;
    format!(
        "patrol: {} cameras ({stream} stream analysed), {} slots, one analysed frame a visit, \
         {}\n\n\
         over {:.0} s: {:.1} visits/s, {:.1} analysed frames/s, {:.2} cores, {:.1} ms CPU a visit\n\
         revisit (start to start, {} gaps and the waits still open): p50 {} s, p99 {} s, \
         worst {} s; {} cameras not visited in the window\n\
         CPU ms per analysed frame: receive {:.1}, decode {:.1}, preprocess {:.1}, inference \
         {:.1}, post+rules {:.1}, other {:.1}; {:.0} % outside ONNX Runtime\n\
         cases filed since the start: {} (on {} cameras with parked vehicles); evidence grabs: {} from the \
         main stream, {} fell back to the analysed frame\n\
         RSS: {:.0} MiB settled, {:.0} MiB peak\n",
        p.cameras,
        p.slots,
        machine(),
        p.duration_s,
        p.visits_per_s,
        p.analysed_fps,
        p.cpu_cores,
        p.cpu_ms_per_visit,
        r.gaps,
        bench::shown_seconds(r.p50_s),
        bench::shown_seconds(r.p99_s),
        bench::shown_seconds(r.worst_s),
        r.cameras_unvisited,
        c.receive,
        c.decode,
        c.preprocess,
        c.inference,
        c.postprocess_rules,
        c.other,
        p.non_inference_share * 100.0,
        p.cases_filed,
        p.parked_cameras,
        p.evidence_grabs_main,
        p.evidence_grabs_fallback,
        p.base_rss_mib,
        p.peak_rss_mib,
    )
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
        "bench: {} cameras: {:.1} of {:.1} frames/s analysed ({:.1} cameras served), {:.2} cores, \
         p99 {} s, skipped {} (receive {}, decode {}, detect {}), inference alone {:.1} frames/s",
        p.cameras,
        p.analysed_fps,
        p.wanted_fps,
        p.served_cameras,
        p.cpu_cores,
        shown(p.latency_p99),
        p.skipped.total(),
        p.skipped.receive,
        p.skipped.decode,
        p.skipped.detect,
        p.inference_alone.at_batch()
    )
}

/// A latency quantile for the tables: seconds, `>1000` beyond the histogram, `-` without frames.
fn shown(latency: Option<Quantile>) -> String {
    latency.map_or("-".into(), |l| format!("{l:.2}"))
}

fn render(r: &Report) -> String {
    let mut out = format!(
        "clip {} ({} stream analysed), one frame per camera every {} s, provider {}, {}\n\n",
        r.clip, r.stream, r.interval_s, r.provider, r.machine
    );
    out += "cameras  analysed/s  wanted/s  served  cores  served/core  p50 s  p99 s  skipped: receive  decode  detect  base RSS MiB  peak RSS MiB  RSS/camera MiB  end RSS MiB  CPU %/camera\n";
    for p in &r.points {
        out += &format!(
            "{:>7}  {:>10.1}  {:>8.1}  {:>6.1}  {:>5.2}  {:>11.1}  {:>5}  {:>5}  {:>16}  {:>6}  {:>6}  {:>12.0}  {:>12.0}  {:>14.2}  {:>11.0}  {:>12.4}\n",
            p.cameras,
            p.analysed_fps,
            p.wanted_fps,
            p.served_cameras,
            p.cpu_cores,
            p.served_cameras_per_core,
            shown(p.latency_p50),
            shown(p.latency_p99),
            p.skipped.receive,
            p.skipped.decode,
            p.skipped.detect,
            p.base_rss_mib,
            p.peak_rss_mib,
            p.rss_per_camera_mib,
            p.end_rss_mib,
            p.cpu_percent_per_camera
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
    out += "\ninference alone (ONNX Runtime on the same frames, right after each point)\ncameras  batch 1 frames/s  at batch  frames/s  pipeline share\n";
    for p in &r.points {
        let c = &p.inference_alone;
        out += &format!(
            "{:>7}  {:>16.1}  {:>8}  {:>8.1}  {:>13.0}%\n",
            p.cameras,
            c.batch1_fps,
            c.batch,
            c.at_batch(),
            100.0 * p.share_of_inference_alone
        );
    }
    if let (Some(b), Some(theirs), Some(ratio), Some(ours)) = (
        &r.baseline,
        r.baseline_served_cameras_per_core,
        r.served_cameras_per_core_vs_baseline,
        r.points.last(),
    ) {
        out += &format!(
            "\nserved cameras per core = cameras × (analysed ÷ wanted) ÷ cores\n\
             baseline (Python, OpenCV decodes every frame, onnxruntime): {} cameras, {:.1} of {:.1} frames/s, {:.2} cores: {theirs:.2} served cameras per core\n\
             cgbot at {} cameras: {:.1} of {:.1} frames/s, {:.2} cores: {:.2} served cameras per core = {ratio:.1}× the baseline's\n",
            b.cameras,
            b.analysed_fps,
            b.wanted_fps,
            b.cpu_cores,
            ours.cameras,
            ours.analysed_fps,
            ours.wanted_fps,
            ours.cpu_cores,
            ours.served_cameras_per_core,
        );
    }
    out
}
