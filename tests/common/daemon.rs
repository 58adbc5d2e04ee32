//! Running `cgbot run` as a child process and asking its HTTP API.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use cgbot::sim::{SimConfig, SimHandle};
use serde_json::Value;

pub const TOKEN: &str = "test-token-0123456789";

/// A free TCP port on 127.0.0.1 (free now; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `count` cameras `cam-<i>` reading `rtsp://127.0.0.1:<port>/cam/<i>`, each with the
/// given zone block (TOML text appended to every camera).
pub fn camera_file(port: u16, ids: impl IntoIterator<Item = usize>, zone: &str) -> String {
    let mut text = String::from("[defaults]\nutc_offset = \"+08:00\"\n");
    for i in ids {
        text += &format!(
            "\n[[camera]]\nid = \"cam-{i}\"\nmain_stream = \"rtsp://127.0.0.1:{port}/cam/{i}\"\n{zone}"
        );
    }
    text
}

/// The simulator serving `clip` as `cameras` cameras on 127.0.0.1:`port`, with faults.
pub fn start_sim(clip: &str, cameras: usize, port: u16, faults: &[&str]) -> SimHandle {
    let mut config = SimConfig::new(super::sample(clip), cameras);
    config.bind = SocketAddr::from(([127, 0, 0, 1], port));
    config.faults = super::fault_plan(faults);
    SimHandle::start(config).expect("start simulator")
}

/// The zone of samples/street-static-camera.toml around the parked white van.
pub fn van_zone(dwell: &str) -> String {
    format!(
        "[[camera.zone]]\nid = \"no-parking-east\"\npolygon = [[0.78, 0.40], [1.0, 0.40], [1.0, 0.80], [0.78, 0.80]]\n\
         rules = [{{ event = \"illegal_parking\", min_dwell = \"{dwell}\", verify_window = \"10m\" }}]\n"
    )
}

/// The `cgbot` binary cargo built for these tests.
fn built_binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cgbot"))
}

pub struct Daemon {
    child: Option<Child>,
    pub api: String,
    pub dir: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Writes `run.toml` (with `settings` after the generated `cameras` and `db`, and the
    /// `[api]` listen address)
    /// into `dir` and starts the daemon; waits until /readyz answers.
    pub fn start(dir: &Path, cameras: &str, settings: &str) -> Daemon {
        Self::launch(
            dir,
            cameras,
            settings,
            Path::new("cases.db"),
            built_binary(),
        )
    }

    /// [`Daemon::start`] with the case database at `db` (relative to `dir`).
    pub fn start_with_db(dir: &Path, cameras: &str, settings: &str, db: &Path) -> Daemon {
        Self::launch(dir, cameras, settings, db, built_binary())
    }

    /// [`Daemon::start`] with the daemon run by `wrapper` (a command and its arguments,
    /// e.g. `prlimit --nofile=1024:1024 --`).
    pub fn start_under(dir: &Path, cameras: &str, settings: &str, wrapper: &[&str]) -> Daemon {
        let (program, args) = wrapper.split_first().expect("a wrapper command");
        let mut command = Command::new(program);
        command.args(args).arg(env!("CARGO_BIN_EXE_cgbot"));
        Self::launch(dir, cameras, settings, Path::new("cases.db"), command)
    }

    /// [`Daemon::start`] of an installed copy of the binary, run from `dir` with nothing of
    /// the test's environment but PATH and HOME.
    pub fn start_installed(dir: &Path, cameras: &str, settings: &str, binary: &Path) -> Daemon {
        let mut command = Command::new(binary);
        command.env_clear().current_dir(dir);
        for name in ["PATH", "HOME"] {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        Self::launch(dir, cameras, settings, Path::new("cases.db"), command)
    }

    fn launch(
        dir: &Path,
        cameras: &str,
        settings: &str,
        db: &Path,
        mut command: Command,
    ) -> Daemon {
        let port = free_port();
        // Into the settings' own [api] table, if they have one.
        let listen = format!("[api]\nlisten = \"127.0.0.1:{port}\"\n");
        let settings = match settings.split_once("[api]\n") {
            Some((before, after)) => format!("{before}{listen}{after}"),
            None => format!("{settings}\n{listen}"),
        };
        let config = format!(
            "cameras = \"{cameras}\"\ndb = \"{}\"\n{settings}",
            db.display()
        );
        std::fs::write(dir.join("run.toml"), config).unwrap();
        let log = dir.join("daemon.log");
        let child = command
            .args(["run", "--config"])
            .arg(dir.join("run.toml"))
            .env("CGBOT_API_TOKEN", TOKEN)
            .env("RUST_LOG", "cgbot=info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start cgbot run");
        let mut daemon = Daemon {
            child: Some(child),
            api: format!("http://127.0.0.1:{port}"),
            dir: dir.to_path_buf(),
            log,
        };
        daemon.wait_for("the API to answer /readyz", Duration::from_secs(60), |d| {
            d.status("/readyz") == Some(200)
        });
        daemon
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// HTTP status of an unauthenticated GET, `None` if nothing answers.
    pub fn status(&self, path: &str) -> Option<u16> {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .new_agent();
        agent
            .get(format!("{}{path}", self.api))
            .call()
            .ok()
            .map(|r| r.status().as_u16())
    }

    /// GET with the bearer token; panics (with the daemon's log) on failure.
    pub fn get(&self, path: &str) -> Value {
        let text = self.get_text(path);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
    }

    pub fn get_text(&self, path: &str) -> String {
        let response = ureq::get(format!("{}{path}", self.api))
            .header("Authorization", &format!("Bearer {TOKEN}"))
            .call();
        match response {
            Ok(mut r) => r.body_mut().read_to_string().unwrap(),
            Err(e) => panic!("GET {path}: {e}\n--- daemon log ---\n{}", self.log()),
        }
    }

    /// GET with the bearer token, whatever the status: status, headers (lower-case names)
    /// and body bytes.
    pub fn get_raw(&self, path: &str) -> (u16, BTreeMap<String, String>, Vec<u8>) {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .new_agent();
        let mut response = agent
            .get(format!("{}{path}", self.api))
            .header("Authorization", &format!("Bearer {TOKEN}"))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n--- daemon log ---\n{}", self.log()));
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let body = response.body_mut().read_to_vec().unwrap();
        (response.status().as_u16(), headers, body)
    }

    pub fn cameras(&self) -> Vec<Value> {
        self.get("/api/cameras")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn metric(&self, name: &str) -> f64 {
        let text = self.get_text("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing"))
    }

    /// Polls `condition` every 500 ms until it holds; panics with the daemon's log after
    /// `limit`.
    pub fn wait_for(
        &mut self,
        what: &str,
        limit: Duration,
        mut condition: impl FnMut(&Daemon) -> bool,
    ) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                panic!(
                    "daemon exited ({status}) while waiting for {what}\n{}",
                    self.log()
                );
            }
            if condition(self) {
                return;
            }
            if started.elapsed() > limit {
                panic!(
                    "timed out after {limit:?} waiting for {what}\n--- daemon log ---\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Kills the daemon with SIGKILL (no clean shutdown: a crash or a lost server).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for the exit; returns its status and how long it took.
    pub fn terminate(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let child = self.child.as_mut().expect("running");
        let started = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return (status, started.elapsed());
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                panic!(
                    "daemon still running {limit:?} after SIGTERM\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
