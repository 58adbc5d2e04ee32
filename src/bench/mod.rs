//! The benchmark harness (`cgbot bench`): simulated cameras served in this process, the
//! real daemon (`cgbot run`, the same code path) as a child process, and the figures a
//! city sizes its servers by, from the OS accounting of that child and its own metrics.

mod patrol;
pub(crate) mod plot;
mod probe;

pub use patrol::{parked_street_clip, run_patrol, shown_seconds, PatrolOptions, PatrolReport};
pub use plot::plot_sweep;
pub use probe::memory_mib;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::detect::{Detector, DetectorOptions, Provider};
use crate::metrics::Quantile;
use crate::models::Catalogue;
use crate::pipeline::first_keyframe;
use crate::sim::SimHandle;
use probe::{CpuSample, Metrics};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Setup(String),
    #[error("the pipeline process: {0}")]
    Daemon(String),
    #[error("the baseline: {0}")]
    Baseline(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What to measure and how.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub clip: PathBuf,
    pub warmup: Duration,
    pub duration: Duration,
    /// One analysed frame per camera per interval.
    pub interval: Duration,
    pub model: Option<String>,
    pub provider: String,
    pub batch: usize,
    /// Intra-op threads of each detect worker (0: the daemon's default).
    pub threads: usize,
    /// Detect workers (0: the daemon's default).
    pub workers: usize,
    /// Decode threads (0: the daemon's default).
    pub decode_threads: usize,
    /// `sub`: cameras are analysed on the simulator's `/cam/<i>/sub`, their main stream
    /// kept for evidence.
    pub stream: crate::config::StreamChoice,
    /// The `cgbot` binary that runs the pipeline.
    pub exe: PathBuf,
    /// Where camera lists, configurations, databases and logs of the runs go.
    pub work_dir: PathBuf,
}

/// CPU milliseconds per analysed frame, by stage.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageSplit {
    /// RTSP sessions and depacketising (the async I/O threads).
    pub receive: f64,
    pub decode: f64,
    pub preprocess: f64,
    /// The ONNX Runtime call (the detect workers and ONNX Runtime's own threads).
    pub inference: f64,
    /// Decoding the model output, NMS, tracking, rules, cases and the store.
    pub postprocess_rules: f64,
    /// Everything else (API, supervisor, outbox).
    pub other: f64,
}

/// One measured camera count.
#[derive(Debug, Clone, Serialize)]
pub struct PointReport {
    pub cameras: usize,
    pub duration_s: f64,
    pub analysed_fps: f64,
    pub wanted_fps: f64,
    /// CPU cores the pipeline process used (user + system time / wall time).
    pub cpu_cores: f64,
    /// Cameras counted by the share of their wanted frames that were analysed: frames
    /// skipped to stay fresh are cameras not served.
    pub served_cameras: f64,
    /// `served_cameras / cpu_cores`: what a city can size servers by.
    pub served_cameras_per_core: f64,
    pub cpu_ms_per_frame: StageSplit,
    /// Share of the process's CPU outside the ONNX Runtime call.
    pub non_inference_share: f64,
    /// Frame → detection latency over the measurement; `None` without analysed frames.
    pub latency_p50: Option<Quantile>,
    pub latency_p99: Option<Quantile>,
    /// Units and frames left out to stay fresh, by stage.
    pub skipped: Skipped,
    pub reconnects: u64,
    /// RSS once start-up has settled: the model has run (ONNX Runtime's buffers exist) and
    /// the RSS stopped climbing; the camera sessions open by then are in it.
    pub base_rss_mib: f64,
    pub peak_rss_mib: f64,
    /// (peak − base) / cameras.
    pub rss_per_camera_mib: f64,
    /// RSS at the end of the window: with cameras that are mostly idle (a long
    /// `--interval`), two camera counts' difference is what an idle camera holds.
    pub end_rss_mib: f64,
    /// CPU cores ÷ cameras, in percent of a core.
    pub cpu_percent_per_camera: f64,
    /// ONNX Runtime alone on the same frames, measured right after this point's window
    /// (same machine load), so the two rates compare.
    pub inference_alone: Ceiling,
    /// Analysed frames/s over the inference-alone rate at the pipeline's batch.
    pub share_of_inference_alone: f64,
}

/// Cameras served per CPU core: each camera counts by the share of its wanted frames that
/// were analysed (`analysed ÷ wanted`, at most 1), so a pipeline that keeps up with only
/// part of its cameras does not claim them all.
pub fn served_cameras_per_core(
    cameras: usize,
    analysed_fps: f64,
    wanted_fps: f64,
    cpu_cores: f64,
) -> f64 {
    served_cameras(cameras, analysed_fps, wanted_fps) / cpu_cores.max(f64::MIN_POSITIVE)
}

fn served_cameras(cameras: usize, analysed_fps: f64, wanted_fps: f64) -> f64 {
    let served_share = (analysed_fps / wanted_fps.max(f64::MIN_POSITIVE)).clamp(0.0, 1.0);
    cameras as f64 * served_share
}

/// What each stage skipped to stay fresh (the daemon's `cgbot_frames_skipped_total`).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Skipped {
    pub receive: u64,
    pub decode: u64,
    pub detect: u64,
}

impl Skipped {
    pub fn total(&self) -> u64 {
        self.receive + self.decode + self.detect
    }
}

impl BaselineReport {
    /// The same figure as [`PointReport::served_cameras_per_core`], from the baseline's own.
    pub fn served_cameras_per_core(&self) -> f64 {
        served_cameras_per_core(
            self.cameras,
            self.analysed_fps,
            self.wanted_fps,
            self.cpu_cores,
        )
    }
}

/// ONNX Runtime alone on a ready-made model input: the pipeline's upper bound.
#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    pub batch1_fps: f64,
    /// The batch the pipeline uses, when the model takes more than one.
    pub batch: usize,
    pub batch_fps: Option<f64>,
}

/// What the Python/OpenCV baseline script reports (`benches/baseline/baseline.py --json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaselineReport {
    pub cameras: usize,
    pub analysed_fps: f64,
    pub wanted_fps: f64,
    pub cpu_cores: f64,
    pub cores_per_camera: f64,
    #[serde(default)]
    pub peak_rss_mb: Option<f64>,
    #[serde(default)]
    pub latency_p50_s: Option<f64>,
    #[serde(default)]
    pub latency_p99_s: Option<f64>,
}

/// The source tree this binary was built from: the baseline script lives there.
const SOURCE_TREE: &str = env!("CARGO_MANIFEST_DIR");

const TOKEN: &str = "cgbot-bench";

/// The daemon under measurement; killed if the harness stops early.
struct Pipeline {
    child: Child,
    api: String,
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Pipeline {
    fn get(&self, path: &str) -> Result<String, BenchError> {
        ureq::get(format!("{}{path}", self.api))
            .header("Authorization", &format!("Bearer {TOKEN}"))
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
            .map_err(|e| BenchError::Daemon(format!("GET {path}: {e}")))
    }

    fn metrics(&self) -> Result<Metrics, BenchError> {
        Ok(Metrics::parse(&self.get("/metrics")?))
    }

    /// The process's CPU and the daemon's metrics now: one end of a measured window.
    fn reading(&self) -> Result<Reading, BenchError> {
        Ok(Reading {
            cpu: CpuSample::read(self.pid())?,
            metrics: self.metrics()?,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) -> Result<(), BenchError> {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let status = self.child.wait()?;
        if status.success() {
            Ok(())
        } else {
            Err(BenchError::Daemon(format!("exited with {status}")))
        }
    }
}

fn free_port() -> Result<u16, BenchError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The camera list of a run: cameras 0..n of the simulator with both streams, each with
/// the zone `zone(i)` gives (TOML of one `[[camera.zone]]` table).
fn camera_list(sim: &SimHandle, cameras: usize, zone: impl Fn(usize) -> String) -> String {
    (0..cameras)
        .map(|i| {
            format!(
                "[[camera]]\nid = \"bench-{i}\"\nmain_stream = \"{}\"\nsub_stream = \"{}\"\n{}\n",
                sim.url(i),
                sim.sub_url(i),
                zone(i)
            )
        })
        .collect()
}

/// A whole-frame parking zone, so tracking, rules and cases run on every camera.
const WHOLE_FRAME_PARKING: &str =
    "[[camera.zone]]\nid = \"all\"\npolygon = [[0, 0], [1, 0], [1, 1], [0, 1]]\n\
     rules = [{ event = \"illegal_parking\" }]\n";

/// Starts `cgbot run` in `work_dir/name` on the camera list `list`, with `extra` appended
/// to its configuration, and waits until it is ready.
fn start_pipeline(
    options: &BenchOptions,
    name: &str,
    list: &str,
    extra: &str,
) -> Result<Pipeline, BenchError> {
    let dir = options.work_dir.join(name);
    std::fs::create_dir_all(&dir)?;
    // Cases and evidence of an earlier run would be counted with this one's.
    for stale in ["cases.db", "cases.db-wal", "cases.db-shm"] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    let _ = std::fs::remove_dir_all(dir.join("cases.db.evidence"));
    std::fs::write(dir.join("cameras.toml"), list)?;
    let port = free_port()?;
    let model = options
        .model
        .as_ref()
        .map_or(String::new(), |m| format!("model = {m:?}\n"));
    let config = format!(
        "cameras = \"cameras.toml\"\ndb = \"cases.db\"\n\n[detector]\n{model}provider = {:?}\nbatch = {}\nthreads = {}\nworkers = {}\n\n\
         [queues]\ndecode_threads = {}\n\n[sampling]\ninterval = \"{}ms\"\n\n[rtsp]\nstream = \"{}\"\n\n[api]\nlisten = \"127.0.0.1:{port}\"\n\n{extra}",
        options.provider,
        options.batch,
        options.threads,
        options.workers,
        options.decode_threads,
        options.interval.as_millis(),
        match options.stream {
            crate::config::StreamChoice::Main => "main",
            crate::config::StreamChoice::Sub => "sub",
        }
    );
    std::fs::write(dir.join("run.toml"), config)?;
    let child = Command::new(&options.exe)
        .args(["run", "--config"])
        .arg(dir.join("run.toml"))
        .env("CGBOT_API_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("daemon.log"))?)
        .spawn()
        .map_err(|e| BenchError::Daemon(format!("{}: {e}", options.exe.display())))?;
    let mut pipeline = Pipeline {
        child,
        api: format!("http://127.0.0.1:{port}"),
    };
    let started = Instant::now();
    loop {
        if let Some(status) = pipeline.child.try_wait()? {
            let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
            return Err(BenchError::Daemon(format!("exited with {status}: {log}")));
        }
        if ureq::get(format!("{}/readyz", pipeline.api)).call().is_ok() {
            return Ok(pipeline);
        }
        if started.elapsed() > Duration::from_secs(60) {
            pipeline.child.kill()?;
            return Err(BenchError::Daemon("not ready after 60 s".into()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Measures the pipeline with `cameras` simulated cameras: warm-up, then `duration`, then
/// `ceiling` (ONNX Runtime alone) right after, under the same load of the machine.
/// `progress` gets a line every 10 s.
pub fn run_point(
    sim: &SimHandle,
    options: &BenchOptions,
    cameras: usize,
    ceiling: &mut InferenceCeiling,
    progress: &mut dyn FnMut(String),
) -> Result<PointReport, BenchError> {
    let list = camera_list(sim, cameras, |_| WHOLE_FRAME_PARKING.into());
    let pipeline = start_pipeline(options, &format!("{cameras}-cameras"), &list, "")?;
    let pid = pipeline.pid();
    let warmup_started = Instant::now();
    let base_rss = settled_rss(&pipeline, options.warmup)?;
    wait_showing(
        options.warmup.saturating_sub(warmup_started.elapsed()),
        &format!("{cameras} cameras: warming up"),
        progress,
    );
    let (before, started) = (pipeline.reading()?, Instant::now());
    wait_showing(
        options.duration,
        &format!("{cameras} cameras: measuring"),
        progress,
    );
    let after = pipeline.reading()?;
    let wall = started.elapsed().as_secs_f64();
    let (end_rss, peak_rss) = (
        memory_mib(pid, "VmRSS").unwrap_or(0.0),
        memory_mib(pid, "VmHWM").unwrap_or(0.0),
    );
    pipeline.stop()?;
    progress(format!("{cameras} cameras: inference alone"));
    let inference_alone = ceiling.measure(ceiling_budget(options.duration))?;

    let delta = |key: &str| after.metrics.delta(&before.metrics, key);
    let latency_histogram = |m: &Metrics| m.histogram("cgbot_frame_latency_seconds");
    let latency = latency_histogram(&after.metrics)
        .zip(latency_histogram(&before.metrics))
        .map(|(after, before)| after.since(&before));
    let analysed = delta("cgbot_frames_analysed_total");
    let cpu = CpuWindow::split(&before, &after, analysed);
    let total_cpu = cpu.total;
    let cpu_cores = total_cpu / wall;
    let (analysed_fps, wanted_fps) = (
        analysed / wall,
        cameras as f64 / options.interval.as_secs_f64(),
    );
    Ok(PointReport {
        cameras,
        duration_s: wall,
        analysed_fps,
        wanted_fps,
        cpu_cores,
        served_cameras: served_cameras(cameras, analysed_fps, wanted_fps),
        served_cameras_per_core: served_cameras_per_core(
            cameras,
            analysed_fps,
            wanted_fps,
            cpu_cores,
        ),
        non_inference_share: cpu.non_inference_share(),
        cpu_ms_per_frame: cpu.per_frame,
        latency_p50: latency.as_ref().and_then(|l| l.quantile(0.5)),
        latency_p99: latency.as_ref().and_then(|l| l.quantile(0.99)),
        skipped: {
            let skipped =
                |stage: &str| delta(&format!("cgbot_frames_skipped_total{{stage=\"{stage}\"}}"));
            Skipped {
                receive: skipped("receive") as u64,
                decode: skipped("decode") as u64,
                detect: skipped("detect") as u64,
            }
        },
        reconnects: delta("cgbot_reconnects_total") as u64,
        base_rss_mib: base_rss,
        peak_rss_mib: peak_rss,
        rss_per_camera_mib: (peak_rss - base_rss).max(0.0) / cameras.max(1) as f64,
        end_rss_mib: end_rss,
        cpu_percent_per_camera: 100.0 * cpu_cores / cameras.max(1) as f64,
        share_of_inference_alone: analysed_fps / inference_alone.at_batch().max(f64::MIN_POSITIVE),
        inference_alone,
    })
}

/// How long ONNX Runtime alone runs after a point: long enough to average over the noise
/// of a shared machine, short beside the pipeline's window.
fn ceiling_budget(duration: Duration) -> Duration {
    (duration / 5).clamp(Duration::from_secs(2), Duration::from_secs(10))
}

/// One end of a measured window.
struct Reading {
    cpu: CpuSample,
    metrics: Metrics,
}

/// The pipeline process's CPU over a measured window, split by stage.
struct CpuWindow {
    /// CPU seconds of the whole process.
    total: f64,
    /// CPU seconds of the ONNX Runtime call.
    inference: f64,
    per_frame: StageSplit,
}

impl CpuWindow {
    /// From the readings at both ends of the window, per analysed frame.
    fn split(before: &Reading, after: &Reading, analysed: f64) -> CpuWindow {
        let (metrics_before, metrics_after) = (&before.metrics, &after.metrics);
        let (before, after) = (&before.cpu, &after.cpu);
        let total = (after.total - before.total).max(0.0);
        let thread_cpu = |matches: &dyn Fn(&str) -> bool| after.since(before, matches);
        let stage_sum = |stage: &str| {
            metrics_after.delta(
                metrics_before,
                &format!("cgbot_stage_seconds_sum{{stage=\"{stage}\"}}"),
            )
        };
        // Decode threads decode and preprocess; split their CPU by the stages' timings.
        let decode_threads = thread_cpu(&|n| n.starts_with("decode-"));
        let (decode_s, preprocess_s) = (stage_sum("decode"), stage_sum("preprocess"));
        let decode_share = decode_s / (decode_s + preprocess_s).max(f64::MIN_POSITIVE);
        // ONNX Runtime's threads are created by the main thread and carry its name.
        let detect_threads = thread_cpu(&|n| n.starts_with("detect-") || n == "cgbot");
        let postprocess_s = stage_sum("postprocess").min(detect_threads);
        let filing = thread_cpu(&|n| n == "filing");
        let receive = thread_cpu(&|n| n.starts_with("cgbot-io"));
        let per_frame = |seconds: f64| seconds * 1000.0 / analysed.max(1.0);
        let inference = detect_threads - postprocess_s;
        let accounted = decode_threads + detect_threads + filing + receive;
        CpuWindow {
            total,
            inference,
            per_frame: StageSplit {
                receive: per_frame(receive),
                decode: per_frame(decode_threads * decode_share),
                preprocess: per_frame(decode_threads * (1.0 - decode_share)),
                inference: per_frame(inference),
                postprocess_rules: per_frame(postprocess_s + filing),
                other: per_frame((total - accounted).max(0.0)),
            },
        }
    }

    /// Share of the process's CPU outside the ONNX Runtime call.
    fn non_inference_share(&self) -> f64 {
        1.0 - self.inference / self.total.max(f64::MIN_POSITIVE)
    }
}

/// The RSS once start-up has settled: the first frame analysed (the model's buffers are
/// allocated on its first run) and two samples 500 ms apart within 1 MiB, or at the end
/// of `limit`, whichever comes first.
fn settled_rss(pipeline: &Pipeline, limit: Duration) -> Result<f64, BenchError> {
    let started = Instant::now();
    let rss = || memory_mib(pipeline.pid(), "VmRSS").unwrap_or(0.0);
    let mut last = rss();
    let mut model_ran = false;
    while started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(500));
        model_ran = model_ran || pipeline.metrics()?.get("cgbot_frames_analysed_total") > 0.0;
        let now = rss();
        if model_ran && (now - last).abs() < 1.0 {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}

fn wait_showing(total: Duration, what: &str, progress: &mut dyn FnMut(String)) {
    let started = Instant::now();
    while started.elapsed() < total {
        let left = total.saturating_sub(started.elapsed());
        progress(format!("{what}, {} s left", left.as_secs()));
        std::thread::sleep(left.min(Duration::from_secs(10)));
    }
}

impl Ceiling {
    /// The rate at the batch the pipeline uses.
    pub fn at_batch(&self) -> f64 {
        self.batch_fps.unwrap_or(self.batch1_fps)
    }
}

/// ONNX Runtime alone on a real preprocessed frame of the clip, with the pipeline's model,
/// provider, workers and threads: loaded once, measured after each point.
pub struct InferenceCeiling {
    /// One per detect worker, run side by side.
    detectors: Vec<Detector>,
    input: crate::decode::ModelInput,
}

impl InferenceCeiling {
    pub fn new(options: &BenchOptions) -> Result<Self, BenchError> {
        let setup = |e: String| BenchError::Setup(e);
        let provider: Provider = options.provider.parse().map_err(setup)?;
        let model = Catalogue::load(None)
            .and_then(|c| c.resolve(options.model.as_deref()))
            .map_err(|e| setup(e.to_string()))?;
        // The daemon's own split, so both rates run on as many threads.
        let split =
            crate::config::thread_split(options.decode_threads, options.workers, options.threads);
        let detector_options = DetectorOptions {
            provider,
            threads: split.inference,
            max_batch: options.batch.max(1),
            ..DetectorOptions::default()
        };
        let detectors = Detector::sessions(&model, &detector_options, split.workers)
            .map_err(|e| setup(e.to_string()))?;
        let spec = detectors[0].model().spec.input.clone();
        let input = first_keyframe(&options.clip, &spec)
            .map_err(|e| setup(e.to_string()))?
            .input;
        Ok(Self { detectors, input })
    }

    /// Frames/s at batch 1 and at the pipeline's batch, about `budget` each.
    pub fn measure(&mut self, budget: Duration) -> Result<Ceiling, BenchError> {
        let batch = self.detectors[0].batch_size();
        Ok(Ceiling {
            batch1_fps: self.rate(1, budget)?,
            batch,
            batch_fps: if batch > 1 {
                Some(self.rate(batch, budget)?)
            } else {
                None
            },
        })
    }

    /// Every worker's session detecting at once for `budget`: frames/s, all together.
    fn rate(&mut self, batch: usize, budget: Duration) -> Result<f64, BenchError> {
        let inputs = vec![&self.input; batch];
        std::thread::scope(|scope| {
            let runs: Vec<_> = self
                .detectors
                .iter_mut()
                .map(|detector| {
                    let inputs = &inputs;
                    scope.spawn(move || {
                        let mut run = || {
                            detector
                                .detect(inputs)
                                .map_err(|e| BenchError::Setup(e.to_string()))
                        };
                        for _ in 0..3 {
                            run()?;
                        }
                        let (started, mut frames) = (Instant::now(), 0);
                        while started.elapsed() < budget {
                            run()?;
                            frames += batch;
                        }
                        Ok::<_, BenchError>(frames as f64 / started.elapsed().as_secs_f64())
                    })
                })
                .collect();
            runs.into_iter()
                .map(|run| run.join().expect("an inference ceiling thread panicked"))
                .sum()
        })
    }
}

/// The baseline's interpreter and script, once they are known to work: checked before a
/// long run rather than after it.
pub fn baseline_ready() -> Result<(PathBuf, PathBuf), BenchError> {
    let tree = Path::new(SOURCE_TREE);
    let python = std::env::var_os("CGBOT_BASELINE_PYTHON")
        .map_or_else(|| tree.join(".venv/bin/python"), PathBuf::from);
    let script = tree.join("benches/baseline/baseline.py");
    let importable = Command::new(&python)
        .args(["-c", "import cv2, numpy, onnxruntime"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !importable || !script.exists() {
        return Err(BenchError::Baseline(format!(
            "{} with OpenCV, numpy and onnxruntime, and {}, are needed: run `make baseline-env`",
            python.display(),
            script.display()
        )));
    }
    Ok((python, script))
}

/// Runs the Python/OpenCV baseline (`benches/baseline/baseline.py`) on cameras 0..n of
/// the same simulator, with the same model and sampling interval.
pub fn run_baseline(
    sim: &SimHandle,
    options: &BenchOptions,
    cameras: usize,
) -> Result<BaselineReport, BenchError> {
    let (python, script) = baseline_ready()?;
    let model = Catalogue::load(None)
        .and_then(|c| c.resolve(options.model.as_deref()))
        .map_err(|e| BenchError::Baseline(e.to_string()))?;
    let template = sim.url(0).replace("/cam/0", "/cam/{i}");
    let out = Command::new(&python)
        .arg(&script)
        .args([
            "--url-template",
            &template,
            "--cameras",
            &cameras.to_string(),
        ])
        .arg("--model")
        .arg(&model.path)
        .args([
            "--every",
            &format!("{}s", options.interval.as_secs_f64()),
            "--warmup",
            &options.warmup.as_secs().to_string(),
            "--duration",
            &options.duration.as_secs().to_string(),
            "--json",
        ])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(BenchError::Baseline(format!(
            "exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let json = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(json)
        .map_err(|e| BenchError::Baseline(format!("unreadable report ({e}): {text}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shortfall_of_analysed_frames_counts_as_cameras_not_served() {
        // 60 cameras wanting 30 frames/s on 2 cores, 20 of them analysed: 40 cameras served.
        assert_eq!(served_cameras_per_core(60, 20.0, 30.0, 2.0), 20.0);
        // Keeping up in full (or a little over, timing) counts every camera, no more.
        assert_eq!(served_cameras_per_core(60, 30.0, 30.0, 2.0), 30.0);
        assert_eq!(served_cameras_per_core(60, 31.0, 30.0, 2.0), 30.0);
        // Nothing analysed or nothing wanted: no camera served, and no division by zero.
        assert_eq!(served_cameras_per_core(60, 0.0, 30.0, 2.0), 0.0);
        assert_eq!(served_cameras_per_core(0, 0.0, 0.0, 0.0), 0.0);
    }

    #[test]
    fn the_baseline_is_held_to_the_same_formula() {
        let baseline = BaselineReport {
            cameras: 4,
            analysed_fps: 1.5,
            wanted_fps: 2.0,
            cpu_cores: 1.0,
            cores_per_camera: 0.25,
            peak_rss_mb: None,
            latency_p50_s: None,
            latency_p99_s: None,
        };
        assert_eq!(baseline.served_cameras_per_core(), 3.0);
    }
}
