//! `cgbot run` with its case database and evidence on a small tmpfs that fills up while
//! cameras file cases: the daemon keeps watching, says it is not ready and why, counts the
//! failures and logs the outage once; once space is back, every filed case has its
//! history, its images and its event delivered — nothing lost, nothing twice.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cgbot::store::{CaseFilter, Store};
use common::daemon::{camera_file, free_port, start_sim, van_zone, Daemon};
use serde_json::Value;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs -o size={size} tmpfs {} failed (this test needs root): {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a daemon still holding files there must not keep the mount behind.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes `path` until the file system has no space left; returns the bytes written.
fn fill(path: &Path) -> usize {
    let mut file = std::fs::File::create(path).unwrap();
    let mut written = 0;
    for chunk in [1 << 16, 1 << 12, 1] {
        let zeros = vec![0u8; chunk];
        while let Ok(n @ 1..) = file.write(&zeros) {
            written += n;
        }
    }
    written
}

/// Every file under `dir`, with its size.
fn files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            let size = std::fs::metadata(&path).unwrap().len();
            found.push((path, size));
        }
    }
    found
}

#[test]
fn a_full_disk_loses_no_case_and_the_daemon_says_so_until_space_returns() {
    const CAMERAS: usize = 4;
    let port = free_port();
    let _sim = start_sim("street-static-h264.mp4", CAMERAS, port, &[]);
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let _tmpfs = Tmpfs::mount(&store_dir, "16m");
    std::fs::write(
        dir.path().join("cams.toml"),
        camera_file(port, 0..CAMERAS, &van_zone("3s")),
    )
    .unwrap();
    // The sink's file lies outside the tmpfs: delivery itself is not what fails.
    let settings = "shutdown_deadline = \"5s\"\n[sampling]\ninterval = \"1s\"\n\
                    [sinks]\njsonl = \"events.jsonl\"\nevery = \"1s\"\n";
    let db = Path::new("store/cases.db");
    let mut daemon = Daemon::start_with_db(dir.path(), "cams.toml", settings, db);

    // Full before the vans' dwell is reached: their filings meet a full disk. The
    // write-ahead log is emptied first, or the database would write into its old pages.
    rusqlite::Connection::open(store_dir.join("cases.db"))
        .and_then(|db| db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())))
        .unwrap();
    let filler = store_dir.join("filler");
    assert!(fill(&filler) > 0);
    daemon.wait_for("/readyz to say 503", Duration::from_secs(30), |d| {
        d.get_raw("/readyz").0 == 503
    });
    let (_, _, body) = daemon.get_raw("/readyz");
    let reason = String::from_utf8_lossy(&body).to_string();
    assert!(
        reason.contains("the store cannot be written")
            && (reason.contains("full") || reason.contains("No space left")),
        "{reason}"
    );
    assert!(daemon.metric("cgbot_store_write_failures_total") > 0.0);
    // Each camera's filing (case, history entry, event) waits in memory.
    daemon.wait_for(
        "the cameras' filings kept in memory",
        Duration::from_secs(30),
        |d| d.metric("cgbot_store_pending_changes") >= (3 * CAMERAS) as f64,
    );
    assert_eq!(daemon.get_raw("/readyz").0, 503);
    assert_eq!(daemon.metric("cgbot_cases_filed_total"), 0.0);

    std::fs::remove_file(&filler).unwrap();
    daemon.wait_for(
        "the kept changes written and /readyz 200",
        Duration::from_secs(40),
        |d| d.metric("cgbot_store_pending_changes") == 0.0 && d.status("/readyz") == Some(200),
    );
    daemon.wait_for(
        "every filing delivered to the JSONL sink",
        Duration::from_secs(20),
        |d| {
            let events = std::fs::read_to_string(d.dir.join("events.jsonl")).unwrap_or_default();
            events.matches("\"case.filed\"").count() >= CAMERAS
        },
    );
    assert_eq!(daemon.metric("cgbot_cases_filed_total"), CAMERAS as f64);
    // Images missing during the outage are drawn from the cameras' next samples.
    daemon.wait_for("no image missing", Duration::from_secs(20), |d| {
        d.metric("cgbot_evidence_missing") == 0.0
    });
    let (status, _) = daemon.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status}");

    // Logged once when the outage began and once when it ended, not per frame.
    let log = daemon.log();
    let lines = |text: &str| log.lines().filter(|l| l.contains(text)).count();
    assert_eq!(lines("the store cannot be written"), 1, "{log}");
    assert_eq!(lines("the store takes writes again"), 1, "{log}");
    assert_eq!(lines("ERROR"), 1, "{log}");

    // What a run with enough space files: one case per camera, each with its history,
    // its four images and one delivered event.
    let store = Store::open(&store_dir.join("cases.db")).unwrap();
    let cases = store.cases(&CaseFilter::default()).unwrap();
    let per_camera: BTreeMap<&str, usize> = cases.iter().fold(BTreeMap::new(), |mut m, c| {
        *m.entry(c.camera_id.as_str()).or_default() += 1;
        m
    });
    assert_eq!(per_camera.len(), CAMERAS, "{per_camera:?}");
    assert!(per_camera.values().all(|&n| n == 1), "{per_camera:?}");
    let events = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
    let mut delivered = BTreeMap::<String, usize>::new();
    for line in events.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        if event["kind"] == "case.filed" {
            let id = event["payload"]["id"].as_str().unwrap().to_string();
            *delivered.entry(id).or_default() += 1;
        }
    }
    for case in &cases {
        assert_eq!(case.status.as_str(), "filed", "{}", case.id);
        assert_eq!(delivered.get(&case.id), Some(&1), "{delivered:?}");
        let history: Vec<&str> = store
            .history(&case.id)
            .unwrap()
            .iter()
            .map(|h| h.to.as_str())
            .collect();
        assert_eq!(history, ["detected", "filed"], "{}", case.id);
        let mut kinds: Vec<String> = store
            .evidence(&case.id)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        kinds.sort();
        assert_eq!(kinds, ["filed", "filed-crop", "first", "first-crop"]);
    }
    assert_eq!(delivered.len(), cases.len());
    // No empty or partial image anywhere.
    let images = files(&store_dir.join("cases.db.evidence"));
    assert_eq!(images.len(), 4 * CAMERAS, "{images:?}");
    assert!(
        images
            .iter()
            .all(|(path, size)| *size > 0 && path.extension().is_some_and(|e| e == "jpg")),
        "{images:?}"
    );
}
