//! The benchmark harness (`cgbot bench`): simulated cameras served in this process, the
//! real daemon (`cgbot run`, the same code path) as a child process, and the figures a
//! city sizes its servers by, from the OS accounting of that child and its own metrics.

mod plot;
mod probe;

pub use plot::plot_sweep;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::detect::{Detector, DetectorOptions, Provider};
use crate::metrics::Quantile;
use crate::models::Catalogue;
use crate::pipeline::first_keyframe;
use crate::sim::SimHandle;
use probe::{memory_mib, CpuSample, Metrics};

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
    /// Inference threads (0: one per core).
    pub threads: usize,
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
    /// The ONNX Runtime call (the detect thread and ONNX Runtime's own threads).
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
    pub cameras_per_core: f64,
    pub cpu_ms_per_frame: StageSplit,
    /// Share of the process's CPU outside the ONNX Runtime call.
    pub non_inference_share: f64,
    /// Frame → detection latency over the measurement; `None` without analysed frames.
    pub latency_p50: Option<Quantile>,
    pub latency_p99: Option<Quantile>,
    /// Units and frames left out to stay fresh, by stage.
    pub skipped: Skipped,
    pub reconnects: u64,
    /// RSS once the model is loaded, before the cameras' frames flow.
    pub base_rss_mib: f64,
    pub peak_rss_mib: f64,
    /// (peak − base) / cameras.
    pub rss_per_camera_mib: f64,
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

/// Starts `cgbot run` for cameras 0..n of the simulator and waits until it is ready.
fn start_pipeline(
    sim: &SimHandle,
    options: &BenchOptions,
    cameras: usize,
) -> Result<Pipeline, BenchError> {
    let dir = options.work_dir.join(format!("{cameras}-cameras"));
    std::fs::create_dir_all(&dir)?;
    let _ = std::fs::remove_file(dir.join("cases.db"));
    // A whole-frame parking zone on every camera, so tracking, rules and cases run.
    let mut list = String::new();
    for i in 0..cameras {
        list += &format!(
            "[[camera]]\nid = \"bench-{i}\"\nmain_stream = \"{}\"\n\
             [[camera.zone]]\nid = \"all\"\npolygon = [[0, 0], [1, 0], [1, 1], [0, 1]]\n\
             rules = [{{ event = \"illegal_parking\" }}]\n\n",
            sim.url(i)
        );
    }
    std::fs::write(dir.join("cameras.toml"), list)?;
    let port = free_port()?;
    let model = options
        .model
        .as_ref()
        .map_or(String::new(), |m| format!("model = {m:?}\n"));
    let config = format!(
        "cameras = \"cameras.toml\"\ndb = \"cases.db\"\n\n[detector]\n{model}provider = {:?}\nbatch = {}\nthreads = {}\n\n\
         [sampling]\ninterval = \"{}ms\"\n\n[api]\nlisten = \"127.0.0.1:{port}\"\n",
        options.provider,
        options.batch,
        options.threads,
        options.interval.as_millis()
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

/// Measures the pipeline with `cameras` simulated cameras: warm-up, then `duration`.
/// `progress` gets a line every 10 s.
pub fn run_point(
    sim: &SimHandle,
    options: &BenchOptions,
    cameras: usize,
    progress: &mut dyn FnMut(String),
) -> Result<PointReport, BenchError> {
    let pipeline = start_pipeline(sim, options, cameras)?;
    let pid = pipeline.pid();
    let base_rss = memory_mib(pid, "VmRSS").unwrap_or(0.0);
    wait_showing(
        options.warmup,
        &format!("{cameras} cameras: warming up"),
        progress,
    );
    let (cpu_before, metrics_before, started) =
        (CpuSample::read(pid)?, pipeline.metrics()?, Instant::now());
    wait_showing(
        options.duration,
        &format!("{cameras} cameras: measuring"),
        progress,
    );
    let (cpu_after, metrics_after) = (CpuSample::read(pid)?, pipeline.metrics()?);
    let wall = started.elapsed().as_secs_f64();
    let peak_rss = memory_mib(pid, "VmHWM").unwrap_or(0.0);
    pipeline.stop()?;

    let delta = |key: &str| metrics_after.delta(&metrics_before, key);
    let latency_histogram = |m: &Metrics| m.histogram("cgbot_frame_latency_seconds");
    let latency = latency_histogram(&metrics_after)
        .zip(latency_histogram(&metrics_before))
        .map(|(after, before)| after.since(&before));
    let analysed = delta("cgbot_frames_analysed_total");
    let total_cpu = (cpu_after.total - cpu_before.total).max(0.0);
    let thread_cpu = |matches: &dyn Fn(&str) -> bool| cpu_after.since(&cpu_before, matches);
    let stage_sum = |stage: &str| delta(&format!("cgbot_stage_seconds_sum{{stage=\"{stage}\"}}"));
    // Decode threads decode and preprocess; split their CPU by the stages' timings.
    let decode_threads = thread_cpu(&|n| n.starts_with("decode-"));
    let (decode_s, preprocess_s) = (stage_sum("decode"), stage_sum("preprocess"));
    let decode_share = decode_s / (decode_s + preprocess_s).max(f64::MIN_POSITIVE);
    // ONNX Runtime's threads are created by the main thread and carry its name.
    let detect_threads = thread_cpu(&|n| n == "detect" || n == "cgbot");
    let postprocess_s = stage_sum("postprocess").min(detect_threads);
    let filing = thread_cpu(&|n| n == "filing");
    let receive = thread_cpu(&|n| n.starts_with("cgbot-io"));
    let per_frame = |seconds: f64| seconds * 1000.0 / analysed.max(1.0);
    let inference = detect_threads - postprocess_s;
    let accounted = decode_threads + detect_threads + filing + receive;
    let split = StageSplit {
        receive: per_frame(receive),
        decode: per_frame(decode_threads * decode_share),
        preprocess: per_frame(decode_threads * (1.0 - decode_share)),
        inference: per_frame(inference),
        postprocess_rules: per_frame(postprocess_s + filing),
        other: per_frame((total_cpu - accounted).max(0.0)),
    };
    let cpu_cores = total_cpu / wall;
    Ok(PointReport {
        cameras,
        duration_s: wall,
        analysed_fps: analysed / wall,
        wanted_fps: cameras as f64 / options.interval.as_secs_f64(),
        cpu_cores,
        cameras_per_core: cameras as f64 / cpu_cores.max(f64::MIN_POSITIVE),
        cpu_ms_per_frame: split,
        non_inference_share: 1.0 - inference / total_cpu.max(f64::MIN_POSITIVE),
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
    })
}

fn wait_showing(total: Duration, what: &str, progress: &mut dyn FnMut(String)) {
    let started = Instant::now();
    while started.elapsed() < total {
        let left = total.saturating_sub(started.elapsed());
        progress(format!("{what}, {} s left", left.as_secs()));
        std::thread::sleep(left.min(Duration::from_secs(10)));
    }
}

/// ONNX Runtime alone, on a real preprocessed frame of the clip, for about `budget` per
/// batch size.
pub fn inference_ceiling(options: &BenchOptions, budget: Duration) -> Result<Ceiling, BenchError> {
    let setup = |e: String| BenchError::Setup(e);
    let provider: Provider = options.provider.parse().map_err(setup)?;
    let model = Catalogue::load(None)
        .and_then(|c| c.resolve(options.model.as_deref()))
        .map_err(|e| setup(e.to_string()))?;
    let mut detector = Detector::new(
        model,
        DetectorOptions {
            provider,
            threads: options.threads,
            max_batch: options.batch.max(1),
            ..DetectorOptions::default()
        },
    )
    .map_err(|e| setup(e.to_string()))?;
    let spec = detector.model().spec.input.clone();
    let input = first_keyframe(&options.clip, &spec)
        .map_err(|e| setup(e.to_string()))?
        .input;
    let batch = detector.batch_size();
    let mut rate = |batch: usize| -> Result<f64, BenchError> {
        let inputs = vec![&input; batch];
        for _ in 0..3 {
            detector.detect(&inputs).map_err(|e| setup(e.to_string()))?;
        }
        let (started, mut frames) = (Instant::now(), 0);
        while started.elapsed() < budget {
            detector.detect(&inputs).map_err(|e| setup(e.to_string()))?;
            frames += batch;
        }
        Ok(frames as f64 / started.elapsed().as_secs_f64())
    };
    Ok(Ceiling {
        batch1_fps: rate(1)?,
        batch,
        batch_fps: if batch > 1 { Some(rate(batch)?) } else { None },
    })
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
