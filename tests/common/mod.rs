//! Helpers shared by the end-to-end tests: where the shared samples and generated test
//! models are, running the `cgbot` binary, asking `ffprobe`/`ffmpeg` for ground truth, an
//! RTSP server we did not write (GStreamer's, VLC's) to play against, and a real headless
//! Chromium for web pages (`browser`).
#![allow(dead_code)] // each test binary uses a different subset

pub mod browser;
pub mod daemon;
pub mod postgres;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// `../shared/samples`, or `CGBOT_SAMPLES`.
pub fn samples() -> PathBuf {
    std::env::var_os("CGBOT_SAMPLES").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/samples"),
        PathBuf::from,
    )
}

pub fn sample(name: &str) -> PathBuf {
    let path = samples().join(name);
    assert!(
        path.is_file(),
        "sample {} missing: tests read ../shared/samples",
        path.display()
    );
    path
}

/// Synthetic models made by `make test-models`.
pub fn test_model(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-models")
        .join(name);
    assert!(
        path.is_file(),
        "{} missing: run `make test-models` (or `make test`)",
        path.display()
    );
    path
}

pub fn cgbot(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cgbot"))
        .args(args)
        .output()
        .expect("run cgbot")
}

/// `cgbot` with how long the whole process took.
pub fn cgbot_timed(args: &[&str]) -> (Output, Duration) {
    let start = Instant::now();
    let out = cgbot(args);
    (out, start.elapsed())
}

/// A path as a command-line argument.
pub fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(out: Output) -> String {
    assert!(out.status.success(), "cgbot failed: {}", stderr(&out));
    stdout(&out)
}

/// When a [`Scratch::replay`] recording starts (`--start`).
pub const REPLAY_START: &str = "2026-11-24T00:00:00Z";

/// A test's scratch directory with a case database: recordings replayed into it, and the
/// cases they filed. Test files add their own cameras and clips to it.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn db(&self) -> String {
        self.path("cases.db").display().to_string()
    }

    /// `cgbot replay CLIP` of `camera` every 2 s into the database, starting at
    /// [`REPLAY_START`], with `extra` arguments; its log.
    pub fn replay(&self, clip: &str, camera: &str, extra: &[&str]) -> String {
        let db = self.db();
        let mut args = vec![
            "replay",
            clip,
            "--every",
            "2s",
            "--camera",
            camera,
            "--db",
            &db,
            "--start",
            REPLAY_START,
        ];
        args.extend_from_slice(extra);
        let out = cgbot(&args);
        assert!(out.status.success(), "replay failed: {}", stderr(&out));
        stderr(&out)
    }

    /// `cgbot cases list --json` of the database.
    pub fn cases(&self) -> Vec<serde_json::Value> {
        let json: serde_json::Value =
            serde_json::from_str(&ok(cgbot(&["cases", "list", "--json", "--db", &self.db()])))
                .unwrap();
        json.as_array().unwrap().clone()
    }
}

/// Asserts a clean failure (exit 1, an `error:` line, no panic) and returns stderr.
pub fn fails(out: Output) -> String {
    fails_with(out, 1)
}

/// Asserts a clean failure for a configuration error (exit 78, EX_CONFIG, so that systemd
/// stops restarting) and returns stderr.
pub fn fails_config(out: Output) -> String {
    fails_with(out, 78)
}

fn fails_with(out: Output, code: i32) -> String {
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit {code}, got {:?}: {err}",
        out.status
    );
    assert!(err.contains("error:"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// Runs ffmpeg with the given arguments (quiet, overwrite), panicking on failure.
pub fn ffmpeg(args: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .status()
        .expect("run ffmpeg");
    assert!(status.success(), "ffmpeg {args:?} failed");
}

/// A camera with a hung image pipeline: the same still, re-encoded as 25 fps H.264 of
/// `width` pixels, `seconds` long, a keyframe every `gop` frames.
pub fn frozen_clip(out: &Path, width: u32, seconds: u32, gop: u32) {
    let still = sample("street-bus-car.jpg");
    encode_h264(
        &[
            "-loop",
            "1",
            "-i",
            still.to_str().unwrap(),
            "-t",
            &seconds.to_string(),
            "-r",
            "25",
        ],
        &format!("scale={width}:-2"),
        gop,
        out,
    );
}

/// A covered lens at night: black with sensor noise, 16:9 of `width` pixels.
pub fn dark_clip(out: &Path, width: u32, seconds: u32, gop: u32) {
    let color = format!(
        "color=c=0x101010:s={width}x{}:r=25:d={seconds}",
        width * 9 / 16
    );
    encode_h264(
        &["-f", "lavfi", "-i", &color],
        "noise=alls=12:allf=t",
        gop,
        out,
    );
}

/// `source` looped for `seconds` through the FFmpeg video `filter`, re-encoded as the
/// tests' clips are (H.264, a keyframe every second at 25 fps, no audio).
pub fn filtered_clip(source: &Path, seconds: u32, filter: &str, out: &Path) {
    let seconds = seconds.to_string();
    let input = [
        "-stream_loop",
        "-1",
        "-i",
        source.to_str().unwrap(),
        "-t",
        &seconds,
    ];
    encode_h264(&input, filter, 25, out);
}

fn encode_h264(input: &[&str], filter: &str, gop: u32, out: &Path) {
    let gop = gop.to_string();
    let mut args = input.to_vec();
    args.extend([
        "-vf",
        filter,
        "-an",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        &gop,
        "-pix_fmt",
        "yuv420p",
        out.to_str().unwrap(),
    ]);
    ffmpeg(&args);
}

/// What ffprobe prints about the first video stream of `path` with `entries`, as CSV.
fn ffprobe(path: &Path, entries: &[&str]) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-of", "csv=p=0"])
        .args(entries)
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (packets, keyframe packets) of the first video stream according to ffprobe.
pub fn ffprobe_packets(path: &Path) -> (u64, u64) {
    let text = ffprobe(path, &["-show_entries", "packet=flags"]);
    let flags: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let keys = flags.iter().filter(|f| f.starts_with('K')).count();
    (flags.len() as u64, keys as u64)
}

/// Frames ffprobe decodes from the first video stream.
pub fn ffprobe_frames(path: &Path) -> u64 {
    ffprobe(
        path,
        &["-count_frames", "-show_entries", "stream=nb_read_frames"],
    )
    .trim()
    .parse()
    .expect("frame count")
}

/// What a client process did within its time limit.
pub struct Run {
    /// `None` when it had to be killed at the limit.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Decoded frames, from `-f framemd5 -` output.
    pub fn frames(&self) -> usize {
        self.stdout
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count()
    }
}

/// Runs a command, killing it after `limit`, so that a broken server fails a test instead
/// of hanging it.
pub fn run(program: &str, args: &[&str], limit: Duration) -> Run {
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped")));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for client") {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    Run {
        status,
        stdout: stdout.join().expect("stdout"),
        stderr: stderr.join().expect("stderr"),
        elapsed: started.elapsed(),
    }
}

/// Plays `url` over `transport` (`tcp`, `udp`) with ffprobe for `seconds` of stream time
/// and returns what it prints of `entries` as CSV; panics with ffprobe's messages when it
/// fails or hangs.
fn ffprobe_rtsp_csv(url: &str, transport: &str, seconds: u32, entries: &[&str]) -> String {
    let interval = format!("%+{seconds}");
    let mut args = vec![
        "-v",
        "error",
        "-rtsp_transport",
        transport,
        // Socket timeout (µs): a server that goes silent ends the run.
        "-timeout",
        "5000000",
        "-select_streams",
        "v:0",
        "-read_intervals",
        &interval,
        "-of",
        "csv=p=0",
    ];
    args.extend_from_slice(entries);
    args.push(url);
    let probe = run(
        "ffprobe",
        &args,
        Duration::from_secs(u64::from(seconds) + 40),
    );
    assert!(
        probe.succeeded(),
        "ffprobe {url} over {transport} ({:?} after {:?}): {}",
        probe.status,
        probe.elapsed,
        probe.stderr
    );
    probe.stdout
}

/// What ffprobe saw of an RTSP stream's video in its first seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtspProbe {
    /// ffprobe's codec name: `h264`, `hevc`.
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// Frames decoded.
    pub frames: u64,
}

/// Plays `url` over `transport` (`tcp`, `udp`) with ffprobe for `seconds` of stream time,
/// decoding every frame.
pub fn ffprobe_rtsp(url: &str, transport: &str, seconds: u32) -> RtspProbe {
    let text = ffprobe_rtsp_csv(
        url,
        transport,
        seconds,
        &[
            "-count_frames",
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames",
        ],
    );
    let fields: Vec<&str> = text.trim().split(',').collect();
    let [codec, width, height, frames] = fields[..] else {
        panic!("ffprobe {url}: unexpected output {text:?}");
    };
    let number = |field: &str| -> u64 {
        field
            .parse()
            .unwrap_or_else(|_| panic!("ffprobe {url}: not a number in {text:?}"))
    };
    RtspProbe {
        codec: codec.to_string(),
        width: number(width) as u32,
        height: number(height) as u32,
        frames: number(frames),
    }
}

/// Presentation timestamps (90 kHz) of the frames ffprobe decodes from `url` over TCP in
/// `seconds` of stream time, in presentation order; frames without one are left out.
pub fn ffprobe_rtsp_frame_pts(url: &str, seconds: u32) -> Vec<i64> {
    ffprobe_rtsp_csv(url, "tcp", seconds, &["-show_entries", "frame=pts"])
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect()
}

/// GStreamer's RTSP server (gst-rtsp-server, through `tests/interop/gst_rtsp_server.py`)
/// serving an H.264 clip at `/h264` and an H.265 clip at `/h265` on 127.0.0.1, each looped
/// forever without re-encoding. Stopped (SIGTERM, then SIGKILL) on drop.
pub struct GstServer {
    child: Child,
    base: String,
    log: Arc<Mutex<String>>,
}

impl GstServer {
    /// How long the script may take to print READY on a loaded machine.
    const START_LIMIT: Duration = Duration::from_secs(60);

    /// Starts the server on a free port and waits until it accepts connections; panics,
    /// with the script's messages, when GStreamer is missing or the server does not start.
    pub fn start(h264: &Path, h265: &Path) -> GstServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/gst_rtsp_server.py");
        // python3-gi is a Debian package: it exists for the system interpreter only, which
        // need not be the first `python3` on PATH (pyenv, a virtual environment…).
        let python = std::env::var_os("CGBOT_GST_PYTHON").map_or_else(
            || {
                let system = PathBuf::from("/usr/bin/python3");
                if system.is_file() {
                    system
                } else {
                    PathBuf::from("python3")
                }
            },
            PathBuf::from,
        );
        let mut child = Command::new(&python)
            .arg(&script)
            .args(["--port", "0", "--h264"])
            .arg(h264)
            .arg("--h265")
            .arg(h265)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} {}: {e}; run `make setup` to install GStreamer's RTSP server",
                    python.display(),
                    script.display()
                )
            });
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = BufReader::new(child.stderr.take().expect("piped"));
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let (ready, url) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("READY ") {
                    let _ = ready.send(url.trim().to_string());
                }
            }
        });
        let started = Instant::now();
        let base = loop {
            match url.recv_timeout(Duration::from_millis(100)) {
                Ok(base) => break base,
                Err(mpsc::RecvTimeoutError::Timeout) if started.elapsed() < Self::START_LIMIT => {}
                Err(error) => {
                    // Its stdout closed (it exited) or it is stuck: give its stderr a moment.
                    let exited = error == mpsc::RecvTimeoutError::Disconnected;
                    if exited {
                        thread::sleep(Duration::from_millis(500));
                    }
                    let _ = child.kill();
                    let status = child.wait().expect("wait for the server");
                    let what = if exited {
                        format!("exited ({status}) before it was ready")
                    } else {
                        format!("was not ready after {:?}", started.elapsed())
                    };
                    panic!(
                        "GStreamer RTSP server {what}; run `make setup` if GStreamer is \
                         missing. Its messages:\n{}",
                        log.lock().unwrap()
                    );
                }
            }
        };
        GstServer { child, base, log }
    }

    /// `rtsp://127.0.0.1:PORT/<mount>`; the mounts are `h264` and `h265`.
    pub fn url(&self, mount: &str) -> String {
        format!("{}/{mount}", self.base)
    }

    /// What the server has written to stderr so far (one line per media it builds and per
    /// loop of a clip).
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Asks the server to stop with SIGTERM and returns how it exited (`None`: it had to
    /// be killed after 10 s).
    pub fn stop(mut self) -> Option<ExitStatus> {
        self.terminate()
    }

    fn terminate(&mut self) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        // std has no way to send SIGTERM; the shell's `kill` builtin is always there.
        let _ = Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", self.child.id())])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for GstServer {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// VLC's RTSP server (`cvlc --sout '#rtp{sdp=rtsp://…}'`) serving one clip, looped, at
/// `rtsp://127.0.0.1:PORT/stream`: a restreamer cameras often sit behind. It refuses RTP
/// over TCP (461 Unsupported Transport), sends H.265 parameter sets in the SDP only, and
/// ends its `fmtp` with `;`. VLC will not run as root, so under root it runs as `nobody`.
pub struct VlcServer {
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
    /// The copy of the clip VLC serves, readable by `nobody` wherever the original is.
    _clip: tempfile::TempDir,
}

impl VlcServer {
    /// How long VLC may take to listen on a loaded machine.
    const START_LIMIT: Duration = Duration::from_secs(30);

    /// Starts VLC on a free port and waits until it accepts connections; panics, with
    /// VLC's messages, when VLC is missing or does not start.
    pub fn start(clip: &Path) -> VlcServer {
        use std::os::unix::fs::PermissionsExt;
        // A checkout under a private home directory is out of `nobody`'s reach.
        let copy_dir = tempfile::tempdir().expect("a temporary directory");
        let copy = copy_dir.path().join(clip.file_name().expect("a clip file"));
        std::fs::copy(clip, &copy).expect("copy the clip");
        for (path, mode) in [(copy_dir.path(), 0o755), (copy.as_path(), 0o644)] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let port = daemon::free_port();
        let url = format!("rtsp://127.0.0.1:{port}/stream");
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| out.stdout.trim_ascii() == b"0");
        let mut command = if root {
            let mut setpriv = Command::new("setpriv");
            setpriv.args([
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "cvlc",
            ]);
            setpriv
        } else {
            Command::new("cvlc")
        };
        let mut child = command
            .arg(&copy)
            .args(["--loop", "--sout"])
            .arg(format!("#rtp{{sdp={url}}}"))
            // No configuration of the user's own (nobody has none to write).
            .args(["--ignore-config", "--no-stats"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run cvlc: {e}; run `make setup` to install VLC (vlc-bin, vlc-plugin-base)")
            });
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = BufReader::new(child.stderr.take().expect("piped"));
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let started = Instant::now();
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return VlcServer {
                    child,
                    url,
                    log,
                    _clip: copy_dir,
                };
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || started.elapsed() > Self::START_LIMIT {
                let _ = child.kill();
                let status = child.wait().expect("wait for VLC");
                thread::sleep(Duration::from_millis(200));
                panic!(
                    "VLC's RTSP server did not listen on port {port} ({status}); run `make \
                     setup` if VLC is missing. Its messages:\n{}",
                    log.lock().unwrap()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// What VLC has written to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for VlcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A simulator fault plan from specs such as `stall=1s@cam3`.
pub fn fault_plan(specs: &[&str]) -> cgbot::sim::FaultPlan {
    cgbot::sim::FaultPlan::new(specs.iter().map(|spec| spec.parse().unwrap()).collect())
}
