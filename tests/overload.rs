//! The daemon under pressure it did not cause: an open-file limit below what its cameras
//! need, and a burst of API requests while cameras stream.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cgbot::sim::SimHandle;
use common::daemon::{camera_file, free_port, start_sim, Daemon, TOKEN};

/// The tests here measure rates and latencies: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn streaming(daemon: &Daemon) -> usize {
    daemon
        .cameras()
        .iter()
        .filter(|c| c["state"] == "streaming")
        .count()
}

/// `cameras` simulated cameras of people walking, listed in `cams.toml` in the directory.
fn people_walking(cameras: usize) -> (SimHandle, tempfile::TempDir) {
    let port = free_port();
    let sim = start_sim("people-walking.mp4", cameras, port, &[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cams.toml"),
        camera_file(port, 0..cameras, ""),
    )
    .unwrap();
    (sim, dir)
}

#[test]
fn cameras_beyond_the_open_file_limit_wait_for_a_slot_and_the_api_keeps_answering() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    const CAMERAS: usize = 1500;
    let (_sim, dir) = people_walking(CAMERAS);
    let settings = "[sampling]\ninterval = \"30s\"\n\
                    [rtsp]\nbackoff_initial = \"200ms\"\nbackoff_max = \"2s\"\n";
    // The hard limit too: the daemon raises its soft limit to the hard one.
    let mut daemon = Daemon::start_under(
        dir.path(),
        "cams.toml",
        settings,
        &["prlimit", "--nofile=1024:1024", "--"],
    );
    let slots = 1024 - cgbot::limits::RESERVED as usize;
    daemon.wait_for(
        "the sessions that fit to stream",
        Duration::from_secs(120),
        |d| streaming(d) == slots,
    );
    // Ten seconds of asking while every slot is taken: each answer comes at once.
    for _ in 0..10 {
        let asked = Instant::now();
        assert_eq!(daemon.status("/healthz"), Some(200));
        assert_eq!(daemon.cameras().len(), CAMERAS);
        let took = asked.elapsed();
        assert!(took < Duration::from_secs(2), "{took:?}\n{}", daemon.log());
        std::thread::sleep(Duration::from_secs(1));
    }
    let cameras = daemon.cameras();
    let waiting = cameras
        .iter()
        .filter(|c| {
            c["last_error"]
                .as_str()
                .is_some_and(|e| e.starts_with("waiting for a session slot"))
        })
        .count();
    assert_eq!(
        (streaming(&daemon), waiting),
        (slots, CAMERAS - slots),
        "{cameras:?}"
    );
    // Waiting is not failing: no reconnect storm.
    assert_eq!(daemon.metric("cgbot_reconnects_total"), 0.0);
    let log = daemon.log();
    let warning = format!("fits {slots} of the {CAMERAS} camera sessions");
    assert_eq!(log.matches(&warning).count(), 1, "{log}");
    assert!(!log.contains("Too many open files"), "{log}");
    let (status, _) = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", daemon.log());
}

/// What a load generator reports: HTTP status and seconds per request.
struct Served {
    statuses: Vec<u16>,
    seconds: Vec<f64>,
}

impl Served {
    fn parse(text: &str) -> Served {
        let (statuses, seconds) = text
            .lines()
            .filter_map(|line| {
                let (status, seconds) = line.split_once(' ')?;
                Some((status.parse::<u16>().ok()?, seconds.parse::<f64>().ok()?))
            })
            .unzip();
        Served { statuses, seconds }
    }

    fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.seconds.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[((sorted.len() - 1) as f64 * p) as usize]
    }
}

/// Keeps `parallel` requests in flight over the daemon's read routes, from curl processes
/// at the lowest CPU priority (in a deployment clients run elsewhere), until stopped;
/// returns curl's `status seconds` lines. One curl keeps at most 300 in flight, hence
/// several, each started again when it has been through its list.
fn load(daemon: &Daemon, dir: &Path, parallel: usize, stop: Arc<AtomicBool>) -> JoinHandle<String> {
    let routes = [
        "/api/cameras",
        "/api/cases?limit=50",
        "/metrics",
        "/api/cameras?state=streaming",
    ];
    let list = dir.join("load.curl");
    let mut config = std::fs::File::create(&list).unwrap();
    for i in 0..20_000 {
        let route = routes[i % routes.len()];
        writeln!(
            config,
            "url = \"{}{route}\"\noutput = \"/dev/null\"",
            daemon.api
        )
        .unwrap();
    }
    let processes = parallel.div_ceil(250);
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let mut replies = String::new();
        while !stop.load(Ordering::Relaxed) {
            let curls: Vec<_> = (0..processes)
                .map(|i| {
                    // To a file: a pipe read only at the end would fill and stall curl.
                    let path = dir.join(format!("replies-{i}.txt"));
                    let out = std::fs::File::create(&path).unwrap();
                    let curl = Command::new("nice")
                        .args([
                            "-n",
                            "19",
                            "curl",
                            "--silent",
                            "--parallel",
                            "--parallel-immediate",
                        ])
                        .args(["--parallel-max", &(parallel / processes).to_string()])
                        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
                        .args(["--write-out", "%{http_code} %{time_total}\\n"])
                        .arg("--config")
                        .arg(&list)
                        .stdout(out)
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("start curl");
                    (curl, path)
                })
                .collect();
            for (mut curl, path) in curls {
                while curl.try_wait().unwrap().is_none() {
                    if stop.load(Ordering::Relaxed) {
                        let _ = curl.kill();
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                replies += &std::fs::read_to_string(path).unwrap();
            }
        }
        replies
    })
}

#[test]
fn five_hundred_concurrent_api_requests_leave_the_analysed_rate_within_ten_percent() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    const CAMERAS: usize = 50;
    const WINDOW: Duration = Duration::from_secs(30);
    let (_sim, dir) = people_walking(CAMERAS);
    // 10 frames/s in all: well within this machine, so any loss is the API's doing.
    let mut daemon = Daemon::start(dir.path(), "cams.toml", "[sampling]\ninterval = \"5s\"\n");
    daemon.wait_for(
        "every camera to be analysed",
        Duration::from_secs(60),
        |d| {
            d.cameras()
                .iter()
                .all(|c| c["frames_analysed"].as_u64() >= Some(1))
        },
    );
    let analysed_over = |daemon: &Daemon| {
        let before = daemon.metric("cgbot_frames_analysed_total");
        std::thread::sleep(WINDOW);
        daemon.metric("cgbot_frames_analysed_total") - before
    };
    let quiet = analysed_over(&daemon);
    let stop = Arc::new(AtomicBool::new(false));
    let load = load(&daemon, dir.path(), 500, stop.clone());
    let loaded = analysed_over(&daemon);
    stop.store(true, Ordering::Relaxed);
    let replies = load.join().expect("load thread");
    let served = Served::parse(&replies);
    let ok = served.statuses.iter().filter(|&&s| s == 200).count();
    eprintln!(
        "analysed frames in {WINDOW:?}: quiet {quiet}, under 500 concurrent requests {loaded} \
         ({:.1} %); requests answered {} ({ok} with 200, {:.0}/s), latency p50 {:.3} s, p99 {:.3} s",
        100.0 * loaded / quiet,
        served.statuses.len(),
        served.statuses.len() as f64 / WINDOW.as_secs_f64(),
        served.percentile(0.5),
        served.percentile(0.99),
    );
    assert!(
        loaded >= 0.9 * quiet,
        "analysed {loaded} under load against {quiet} quiet\n{}",
        daemon.log()
    );
    assert!(ok >= 1000, "only {ok} requests answered with 200");
    // Refusals under load are explicit (503 busy), never a dropped connection (000).
    assert!(
        served.statuses.iter().all(|&s| s == 200 || s == 503),
        "{:?}",
        served
            .statuses
            .iter()
            .filter(|&&s| s != 200)
            .take(20)
            .collect::<Vec<_>>()
    );
    let (status, _) = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", daemon.log());
}
