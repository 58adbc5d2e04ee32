//! `cgbot run` end to end against the camera simulator: many cameras, a simulator that
//! dies and comes back, faulty cameras, patrol through slots, camera rotation while
//! running, and shutdown on SIGTERM.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use cgbot::sim::{SimConfig, SimHandle};
use common::daemon::{camera_file, free_port, start_sim, van_zone, Daemon};
use common::{cgbot, dark_clip, filtered_clip, frozen_clip, ok, sample};
use serde_json::Value;

/// The daemon tests load both cores; run them one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn by_id(cameras: &[Value]) -> BTreeMap<String, Value> {
    cameras
        .iter()
        .map(|c| (c["id"].as_str().unwrap().to_string(), c.clone()))
        .collect()
}

fn count(camera: &Value, field: &str) -> u64 {
    camera[field].as_u64().unwrap_or(0)
}

#[test]
fn two_hundred_cameras_survive_a_simulator_restart_and_faults_are_reported() {
    let _serial = serial();
    let port = free_port();
    let faults = ["stall=3s@cam1", "disconnect=3s@cam2", "garbage@cam3"];
    let sim = start_sim("people-walking.mp4", 200, port, &faults);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cams.toml"), camera_file(port, 0..200, "")).unwrap();
    // 20 frames/s in all: what this 2-core box sustains with the simulator beside it.
    let settings = "[sampling]\ninterval = \"10s\"\n\
                    [rtsp]\nframe_timeout = \"2s\"\nbackoff_initial = \"200ms\"\nbackoff_max = \"2s\"\n\
                    failed_retry = \"2s\"\n";
    let mut daemon = Daemon::start(dir.path(), "cams.toml", settings);
    let faulty = ["cam-1", "cam-2", "cam-3"];
    let healthy = |c: &Value| !faulty.contains(&c["id"].as_str().unwrap());

    daemon.wait_for(
        "every healthy camera to be analysed",
        Duration::from_secs(120),
        |d| {
            let cams = d.cameras();
            cams.len() == 200
                && cams
                    .iter()
                    .filter(|c| healthy(c))
                    .all(|c| count(c, "frames_analysed") >= 1)
        },
    );
    // Healthy cameras keep their rate: one frame per 10 s each.
    let before = by_id(&daemon.cameras());
    std::thread::sleep(Duration::from_secs(30));
    let after = by_id(&daemon.cameras());
    let slow: Vec<&String> = after
        .iter()
        .filter(|(_, c)| healthy(c))
        .filter(|(id, c)| count(c, "frames_analysed") < count(&before[*id], "frames_analysed") + 2)
        .map(|(id, _)| id)
        .collect();
    assert!(slow.is_empty(), "cameras below their sample rate: {slow:?}");
    for c in after.values().filter(|c| healthy(c)) {
        assert_eq!(c["reconnects"], 0, "{c}");
        assert_eq!(c["state"], "streaming", "{c}");
        assert!(c["stream"]
            .as_str()
            .unwrap()
            .starts_with("rtsp://127.0.0.1:"));
    }
    let stalled = &after["cam-1"];
    assert!(count(stalled, "reconnects") >= 1, "{stalled}");
    assert!(
        stalled["last_error"].as_str().unwrap().contains("stall"),
        "{stalled}"
    );
    let dropped = &after["cam-2"];
    assert!(count(dropped, "reconnects") >= 1, "{dropped}");
    assert!(dropped["last_error"].is_string(), "{dropped}");
    let garbage = &after["cam-3"];
    assert_eq!(count(garbage, "frames_analysed"), 0, "{garbage}");
    // It never delivered video: attempts, not reconnects.
    assert!(count(garbage, "connection_attempts") >= 2, "{garbage}");
    assert_eq!(count(garbage, "reconnects"), 0, "{garbage}");
    assert_eq!(garbage["problem"], "error", "{garbage}");
    assert!(garbage["last_error"].is_string(), "{garbage}");
    assert_ne!(garbage["state"], "streaming");

    // The simulator dies: cameras notice and back off; it returns: they all reconnect.
    sim.shutdown();
    daemon.wait_for(
        "cameras to notice the simulator is gone",
        Duration::from_secs(30),
        |d| {
            d.cameras()
                .iter()
                .filter(|c| healthy(c))
                .all(|c| c["state"] != "streaming")
        },
    );
    let down = by_id(&daemon.cameras());
    let sim = start_sim("people-walking.mp4", 200, port, &faults);
    daemon.wait_for(
        "every healthy camera to stream again",
        Duration::from_secs(90),
        |d| {
            d.cameras().iter().filter(|c| healthy(c)).all(|c| {
                let id = c["id"].as_str().unwrap();
                count(c, "frames_analysed") > count(&down[id], "frames_analysed")
                    && count(c, "reconnects") >= 1
            })
        },
    );
    let metrics = daemon.get_text("/metrics");
    assert!(
        metrics.contains("cgbot_cameras{state=\"streaming\"}"),
        "{metrics}"
    );
    assert!(daemon.metric("cgbot_reconnects_total") >= 197.0);
    assert!(daemon.metric("cgbot_frames_analysed_total") >= 800.0);
    let (status, took) = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", daemon.log());
    assert!(took < Duration::from_secs(10), "{took:?}");
    drop(sim);
}

#[test]
fn patrol_visits_500_cameras_through_50_slots_and_dwell_spans_visits() {
    let _serial = serial();
    let port = free_port();
    let _sim = start_sim("street-static-h264.mp4", 500, port, &[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cams.toml"),
        camera_file(port, 0..500, &van_zone("20s")),
    )
    .unwrap();
    let settings = "[sampling]\ninterval = \"1s\"\n\
                    [patrol]\nslots = 50\nsamples = 1\nvisit_timeout = \"6s\"\nrevisit = \"60s\"\n";
    let mut daemon = Daemon::start(dir.path(), "cams.toml", settings);
    daemon.wait_for(
        "every camera to be visited twice",
        Duration::from_secs(240),
        |d| d.cameras().iter().all(|c| count(c, "visits") >= 2),
    );
    let cameras = daemon.cameras();
    let worst = cameras
        .iter()
        .filter_map(|c| c["revisit_interval_s"].as_f64())
        .fold(0.0, f64::max);
    assert!(worst > 0.0 && worst <= 60.0, "longest revisit {worst} s");
    let analysed = cameras
        .iter()
        .filter(|c| count(c, "frames_analysed") >= 1)
        .count();
    assert!(analysed >= 490, "{analysed} of 500 cameras analysed");
    // Between visits a camera is disconnected; the van is still where it was.
    daemon.wait_for(
        "a parking case filed across visits",
        Duration::from_secs(120),
        |d| {
            d.get("/api/cases?status=filed")
                .as_array()
                .is_some_and(|c| !c.is_empty())
        },
    );
    let case = &daemon.get("/api/cases?status=filed")[0];
    let camera = case["camera_id"].as_str().unwrap();
    let visits = by_id(&daemon.cameras())[camera]["visits"].as_u64().unwrap();
    assert!(visits >= 2, "{camera} filed after {visits} visit(s)");
    assert!(daemon.metric("cgbot_patrol_revisit_max_seconds") <= 60.0);
    let (status, _) = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "{}", daemon.log());
}

/// A camera directory mounted from a Kubernetes ConfigMap changes the way the kubelet
/// changes it: the files are links through `..data`, which is renamed over to a new
/// version's directory; the daemon applies the new list.
#[test]
fn config_map_update_of_the_camera_directory_rotates_the_list() {
    use std::os::unix::fs::symlink;
    let _serial = serial();
    let port = free_port();
    let _sim = start_sim("street-static-h264.mp4", 2, port, &[]);
    let dir = tempfile::tempdir().unwrap();
    let cameras = dir.path().join("cameras");
    std::fs::create_dir(&cameras).unwrap();
    let version = |name: &str, text: String| {
        std::fs::create_dir(cameras.join(name)).unwrap();
        std::fs::write(cameras.join(name).join("district.toml"), text).unwrap();
    };
    version(
        "..2026_12_01_06_00_00.000000001",
        camera_file(port, [0], ""),
    );
    symlink("..2026_12_01_06_00_00.000000001", cameras.join("..data")).unwrap();
    symlink("..data/district.toml", cameras.join("district.toml")).unwrap();
    let mut daemon = Daemon::start(dir.path(), "cameras/", "[sampling]\ninterval = \"1s\"\n");
    assert_eq!(daemon.cameras().len(), 1);

    version(
        "..2026_12_01_06_05_00.000000002",
        camera_file(port, [0, 1], ""),
    );
    symlink(
        "..2026_12_01_06_05_00.000000002",
        cameras.join("..data_tmp"),
    )
    .unwrap();
    std::fs::rename(cameras.join("..data_tmp"), cameras.join("..data")).unwrap();
    std::fs::remove_dir_all(cameras.join("..2026_12_01_06_00_00.000000001")).unwrap();
    daemon.wait_for("the ConfigMap's new list", Duration::from_secs(30), |d| {
        d.metric("cgbot_rotations_total") >= 1.0 && d.cameras().len() == 2
    });
    let (status, _) = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "{}", daemon.log());
}

#[test]
fn camera_rotation_applies_without_restart_and_keeps_cases() {
    let _serial = serial();
    let port = free_port();
    let _sim = start_sim("street-static-h264.mp4", 6, port, &[]);
    let dir = tempfile::tempdir().unwrap();
    let cams = dir.path().join("cams.toml");
    let write = |text: String| {
        // As deployment tools do: write aside, rename over.
        let tmp = dir.path().join("cams.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &cams).unwrap();
    };
    write(camera_file(port, 0..3, &van_zone("4s")));
    let mut daemon = Daemon::start(dir.path(), "cams.toml", "[sampling]\ninterval = \"1s\"\n");
    daemon.wait_for("a case on cam-0", Duration::from_secs(60), |d| {
        d.get("/api/cases?camera=cam-0")
            .as_array()
            .is_some_and(|c| !c.is_empty())
    });
    let case_id = daemon.get("/api/cases?camera=cam-0")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = by_id(&daemon.cameras());

    // Remove cam-0, change cam-1's zone, keep cam-2, add cam-3.
    let mut text = camera_file(port, [2, 3], &van_zone("4s"));
    text += &camera_file(port, [1], &van_zone("5s"))
        .replace("[defaults]\nutc_offset = \"+08:00\"\n", "");
    write(text);
    daemon.wait_for("the rotation", Duration::from_secs(30), |d| {
        d.metric("cgbot_rotations_total") >= 1.0
    });
    daemon.wait_for("cam-3 to be analysed", Duration::from_secs(60), |d| {
        by_id(&d.cameras())
            .get("cam-3")
            .is_some_and(|c| count(c, "frames_analysed") >= 1)
    });
    let after = by_id(&daemon.cameras());
    assert_eq!(
        after.keys().cloned().collect::<BTreeSet<_>>(),
        ["cam-1", "cam-2", "cam-3"].map(String::from).into()
    );
    // cam-2 went on unchanged; cam-1 restarted with fresh counters.
    assert!(count(&after["cam-2"], "frames_received") > count(&before["cam-2"], "frames_received"));
    assert!(count(&after["cam-1"], "frames_received") < count(&before["cam-1"], "frames_received"));
    // The removed camera's case stays.
    assert_eq!(
        daemon.get(&format!("/api/cases/{case_id}"))["id"],
        case_id.as_str()
    );

    // A broken list is refused and the running set stays.
    write("[[camera]]\nid = \"cam-9\"\nmain_stream = 42\n".into());
    daemon.wait_for("the refused rotation", Duration::from_secs(30), |d| {
        d.metric("cgbot_rotation_errors_total") >= 1.0
    });
    assert_eq!(daemon.cameras().len(), 3);
    assert!(
        daemon.log().contains("cams.toml"),
        "the error names the file"
    );
    let (status, _) = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "{}", daemon.log());
}

/// Each camera's latest picture: 404 until one is taken, then a 480-pixel JPEG of the
/// camera refreshed at most every `snapshot_every`, gone when the camera is removed.
#[test]
fn every_camera_has_its_latest_picture_refreshed_at_most_every_snapshot_every() {
    let _serial = serial();
    let port = free_port();
    let _sim = start_sim("street-static-h264.mp4", 3, port, &[]);
    let dir = tempfile::tempdir().unwrap();
    let cams = dir.path().join("cams.toml");
    let write = |text: String| {
        let tmp = dir.path().join("cams.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &cams).unwrap();
    };
    // cam-9 points where nothing answers: it never has a picture.
    write(
        camera_file(port, 0..3, "")
            + &camera_file(free_port(), [9], "")
                .replace("[defaults]\nutc_offset = \"+08:00\"\n", ""),
    );
    let settings =
        "snapshot_every = \"2s\"\nsnapshot_budget_mib = 8\n[sampling]\ninterval = \"500ms\"\n";
    let mut daemon = Daemon::start(dir.path(), "cams.toml", settings);
    let snapshot = |d: &Daemon, id: &str| d.get_raw(&format!("/api/cameras/{id}/snapshot.jpg"));

    daemon.wait_for(
        "every reachable camera's picture",
        Duration::from_secs(60),
        |d| (0..3).all(|i| snapshot(d, &format!("cam-{i}")).0 == 200),
    );
    let (_, headers, jpeg) = snapshot(&daemon, "cam-0");
    assert_eq!(headers["content-type"], "image/jpeg");
    // For a look: what the console shows.
    let keep = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&keep).unwrap();
    std::fs::write(keep.join("daemon-snapshot.jpg"), &jpeg).unwrap();
    let picture = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg)
        .expect("a JPEG")
        .to_luma8();
    // The 640 × 480 street, 480 pixels wide: a real picture, not a flat one.
    assert_eq!(picture.dimensions(), (480, 360));
    let mean = picture.pixels().map(|p| f64::from(p.0[0])).sum::<f64>() / (480.0 * 360.0);
    let spread = picture
        .pixels()
        .map(|p| (f64::from(p.0[0]) - mean).powi(2))
        .sum::<f64>()
        / (480.0 * 360.0);
    assert!(
        spread.sqrt() > 20.0,
        "mean {mean}, deviation {}",
        spread.sqrt()
    );

    for (id, want) in [
        ("cam-9", "cam-9 has no snapshot yet"),
        ("cam-5", "no camera cam-5"),
    ] {
        let (status, _, body) = snapshot(&daemon, id);
        let error: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 404, "{error}");
        assert!(error["error"].as_str().unwrap().contains(want), "{error}");
    }
    // Without the token, nothing.
    assert_eq!(daemon.status("/api/cameras/cam-0/snapshot.jpg"), Some(401));

    // Two frames a second are analysed; a new picture comes at most every 2 s.
    let mut taken: Vec<f64> = Vec::new();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(9) {
        let (_, headers, _) = snapshot(&daemon, "cam-1");
        let at: f64 = headers["x-snapshot-taken-at"].parse().unwrap();
        if taken.last() != Some(&at) {
            taken.push(at);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let gaps: Vec<f64> = taken.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.len() >= 2, "pictures taken at {taken:?}");
    assert!(
        gaps.iter().all(|g| (1.5..=4.0).contains(g)),
        "gaps {gaps:?}"
    );
    assert_eq!(daemon.metric("cgbot_snapshots"), 3.0);
    assert!(daemon.metric("cgbot_snapshot_bytes") < 8.0 * 1024.0 * 1024.0);

    // cam-1 leaves the list: its picture goes with it.
    write(camera_file(port, [0, 2], ""));
    daemon.wait_for("the rotation", Duration::from_secs(30), |d| {
        d.metric("cgbot_rotations_total") >= 1.0
    });
    let (status, _, _) = snapshot(&daemon, "cam-1");
    assert_eq!(status, 404);
    assert_eq!(daemon.metric("cgbot_snapshots"), 2.0);
    assert_eq!(snapshot(&daemon, "cam-2").0, 200);
    let (status, _) = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "{}", daemon.log());
}

#[test]
fn sigterm_under_load_stops_within_the_deadline_and_loses_no_case() {
    let _serial = serial();
    let port = free_port();
    let _sim = start_sim("street-static-h264.mp4", 40, port, &[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cams.toml"),
        camera_file(port, 0..40, &van_zone("3s")),
    )
    .unwrap();
    let settings = "shutdown_deadline = \"8s\"\n[sampling]\ninterval = \"1s\"\n\
                    [sinks]\njsonl = \"events.jsonl\"\nevery = \"1s\"\n";
    let mut daemon = Daemon::start(dir.path(), "cams.toml", settings);
    daemon.wait_for("cases from most cameras", Duration::from_secs(120), |d| {
        d.metric("cgbot_cases_filed_total") >= 20.0
    });
    let filed_before = daemon.metric("cgbot_cases_filed_total") as usize;
    let (status, took) = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}: {}", daemon.log());
    assert!(took < Duration::from_secs(8), "shutdown took {took:?}");

    let db = dir.path().join("cases.db");
    let exported: Vec<Value> = serde_json::from_str(&ok(cgbot(&[
        "cases",
        "export",
        "--format",
        "json",
        "--status",
        "filed",
        "--db",
        db.to_str().unwrap(),
    ])))
    .unwrap();
    assert!(
        exported.len() >= filed_before,
        "{} cases in the store, {filed_before} filed",
        exported.len()
    );
    // Every case reached the sink exactly once: the outbox was flushed on the way out.
    let events = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
    let mut filed = BTreeMap::<String, usize>::new();
    for line in events.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        if event["kind"] == "case.filed" {
            *filed
                .entry(event["payload"]["id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    let ids: BTreeSet<String> = exported
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(filed.keys().cloned().collect::<BTreeSet<_>>(), ids);
    assert!(filed.values().all(|&n| n == 1), "{filed:?}");
}

/// A webhook endpoint that accepts connections and never answers.
fn hung_webhook() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    (listener, url)
}

#[test]
fn a_hung_webhook_never_delays_the_jsonl_sink_beside_it() {
    let _serial = serial();
    let port = free_port();
    let _sim = start_sim("street-static-h264.mp4", 2, port, &[]);
    let dir = tempfile::tempdir().unwrap();
    // cam-1 files about 10 s after cam-0, while the webhook hangs on cam-0's event.
    let cameras = format!(
        "{}\n[[camera]]\nid = \"cam-1\"\nmain_stream = \"rtsp://127.0.0.1:{port}/cam/1\"\n{}",
        camera_file(port, 0..1, &van_zone("3s")),
        van_zone("13s")
    );
    std::fs::write(dir.path().join("cams.toml"), cameras).unwrap();
    // The listener's backlog takes the connections; nothing ever reads or answers.
    let (_hung, url) = hung_webhook();
    let settings = format!(
        "shutdown_deadline = \"3s\"\n[sampling]\ninterval = \"1s\"\n\
         [sinks]\njsonl = \"events.jsonl\"\nwebhook = \"{url}\"\nwebhook_timeout = \"120s\"\nevery = \"1s\"\n"
    );
    let mut daemon = Daemon::start(dir.path(), "cams.toml", &settings);
    daemon.wait_for("both cases filed", Duration::from_secs(90), |d| {
        d.metric("cgbot_cases_filed_total") >= 2.0
    });
    let filed_at = std::time::Instant::now();
    // The webhook has been hanging on cam-0's event since long before cam-1 filed; the
    // JSONL sink delivers on its own within a couple of its 1 s rounds.
    daemon.wait_for(
        "both filings in the JSONL file",
        Duration::from_secs(10),
        |d| {
            let events = std::fs::read_to_string(d.dir.join("events.jsonl")).unwrap_or_default();
            events.matches("\"case.filed\"").count() >= 2
        },
    );
    assert!(filed_at.elapsed() < Duration::from_secs(10));
    daemon.terminate(Duration::from_secs(20));
}

/// The street clip looped: the van parked for the first `present` seconds, then gone
/// (erased) until `length`.
fn van_leaves_after(dir: &std::path::Path, present: u32, length: u32) -> std::path::PathBuf {
    let path = dir.join("van-leaves.mp4");
    let filter = format!("delogo=x=512:y=205:w=127:h=140:enable='gte(t,{present})'");
    filtered_clip(&sample("street-static-h264.mp4"), length, &filter, &path);
    path
}

/// One simulated camera playing `clip`, with the van's kerb as a no-parking zone filing
/// after `dwell` and closing after `verify` gone, watched by a daemon sampling each second
/// and writing its events to `events.jsonl` in `dir`.
fn van_camera_on(
    clip: &std::path::Path,
    dir: &std::path::Path,
    dwell: &str,
    verify: &str,
) -> (SimHandle, Daemon) {
    let port = free_port();
    let mut config = SimConfig::new(clip, 1);
    config.bind = SocketAddr::from(([127, 0, 0, 1], port));
    let sim = SimHandle::start(config).expect("start simulator");
    let zone = format!(
        "[[camera.zone]]\nid = \"no-parking-east\"\n\
         polygon = [[0.78, 0.40], [1.0, 0.40], [1.0, 0.80], [0.78, 0.80]]\n\
         rules = [{{ event = \"illegal_parking\", min_dwell = \"{dwell}\", verify_window = \"{verify}\" }}]\n"
    );
    std::fs::write(dir.join("cams.toml"), camera_file(port, 0..1, &zone)).unwrap();
    let settings =
        "[sampling]\ninterval = \"1s\"\n[sinks]\njsonl = \"events.jsonl\"\nevery = \"1s\"\n";
    (sim, Daemon::start(dir, "cams.toml", settings))
}

/// `cgbot cases show ID` of the daemon's database.
fn show(db: &std::path::Path, id: &str) -> Value {
    serde_json::from_str(&ok(cgbot(&[
        "cases",
        "show",
        id,
        "--db",
        db.to_str().unwrap(),
    ])))
    .unwrap()
}

#[test]
fn an_operators_status_survives_the_running_daemon_and_the_case_closes_from_it() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // The van stands for 50 s, then the street is empty for a minute.
    let clip = van_leaves_after(dir.path(), 50, 110);
    let (_sim, mut daemon) = van_camera_on(&clip, dir.path(), "4s", "5s");
    daemon.wait_for("the van's case to be filed", Duration::from_secs(60), |d| {
        d.get("/api/cases?status=filed")
            .as_array()
            .is_some_and(|c| !c.is_empty())
    });
    let id = daemon.get("/api/cases?status=filed")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // A person dispatches it while the daemon keeps seeing the van.
    let db = dir.path().join("cases.db");
    let out = ok(cgbot(&[
        "cases",
        "set-status",
        &id,
        "dispatched",
        "--by",
        "li",
        "--note",
        "inspector 7",
        "--db",
        db.to_str().unwrap(),
    ]));
    assert!(out.contains("is now dispatched"), "{out}");
    let dispatched_seen = show(&db, &id)["last_seen"].as_f64().unwrap();
    daemon.wait_for(
        "three more samples of the van",
        Duration::from_secs(30),
        |d| {
            d.get(&format!("/api/cases/{id}"))["last_seen"]
                .as_f64()
                .is_some_and(|t| t >= dispatched_seen + 3.0)
        },
    );
    let detail = show(&db, &id);
    assert_eq!(
        detail["status"],
        "dispatched",
        "the daemon reverted the operator's status: {detail:#}\n{}",
        daemon.log()
    );
    let history = detail["history"].as_array().unwrap().clone();
    let last = history.last().unwrap();
    assert_eq!(
        (
            last["to"].as_str(),
            last["actor"].as_str(),
            last["note"].as_str()
        ),
        (Some("dispatched"), Some("li"), Some("inspector 7")),
        "{history:#?}"
    );

    // The van leaves: verifying, then closed as auto-verified, from dispatched.
    daemon.wait_for("the case to close", Duration::from_secs(90), |d| {
        d.get(&format!("/api/cases/{id}"))["status"] == "closed"
    });
    let detail = show(&db, &id);
    assert_eq!(detail["close_reason"], "auto-verified");
    let steps: Vec<(&str, &str, &str)> = detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["from"].as_str().unwrap_or("-"),
                h["to"].as_str().unwrap(),
                h["actor"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("-", "detected", "cgbot"),
            ("detected", "filed", "cgbot"),
            ("filed", "dispatched", "li"),
            ("dispatched", "verifying", "cgbot"),
            ("verifying", "closed", "cgbot"),
        ]
    );
    let (status, _) = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "{}", daemon.log());

    // Every step reached the sink once, each under its own key.
    let events = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
    let mut kinds = Vec::new();
    let mut keys = BTreeSet::new();
    for line in events.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        kinds.push(event["kind"].as_str().unwrap().to_string());
        assert!(keys.insert(event["idempotency_key"].as_str().unwrap().to_string()));
    }
    assert_eq!(kinds, ["case.filed", "case.dispatched", "case.closed"]);
}

#[test]
fn bad_daemon_configuration_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let err = common::fails_config(cgbot(&["run", "--config", missing.to_str().unwrap()]));
    assert!(err.contains("missing.toml"), "{err}");

    std::fs::write(
        dir.path().join("cams.toml"),
        camera_file(free_port(), 0..1, ""),
    )
    .unwrap();
    let run = dir.path().join("run.toml");
    std::fs::write(
        &run,
        "cameras = \"cams.toml\"\n[patrol]\nslots = 2\nsamples = 0\n",
    )
    .unwrap();
    let err = common::fails_config(cgbot(&["run", "--config", run.to_str().unwrap()]));
    assert!(err.contains("run.toml: patrol.samples"), "{err}");

    // An API open to the network needs a token.
    std::fs::write(
        &run,
        "cameras = \"cams.toml\"\n[api]\nlisten = \"0.0.0.0:0\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cgbot"))
        .args(["run", "--config", run.to_str().unwrap()])
        .env_remove("CGBOT_API_TOKEN")
        .output()
        .unwrap();
    let err = common::fails(out);
    assert!(err.contains("0.0.0.0:0") && err.contains("token"), "{err}");
}

/// A camera file that names its credentials (`credentials = "…"`, resolved from run.toml's
/// `secrets`) connects to `cgbot sim --user --password`; a wrong credential is refused,
/// and no password reaches the API or the log. Each failing camera ends with its own
/// problem, the stale password `failed`; with three of four cameras unhealthy the
/// daemon is not ready.
#[test]
fn cameras_connect_with_credentials_from_the_secrets_file() {
    use std::os::unix::fs::PermissionsExt;
    let _serial = serial();
    let port = free_port();
    let mut sim = std::process::Command::new(env!("CARGO_BIN_EXE_cgbot"))
        .args(["sim", "--cameras", "2", "--port", &port.to_string()])
        .args(["--user", "operator", "--password", "p@ss: w/rd"])
        .arg("--clip")
        .arg(sample("street-static-h264.mp4"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start cgbot sim");
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the simulator never listened"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets.toml");
    std::fs::write(
        &secrets,
        "[credentials.sim]\nuser = \"operator\"\npassword = \"p@ss: w/rd\"\n\
         [credentials.stale]\nuser = \"operator\"\npassword = \"last-quarter\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cams = format!(
        "[defaults]\ncredentials = \"sim\"\n\
         [[camera]]\nid = \"cam-0\"\nmain_stream = \"rtsp://127.0.0.1:{port}/cam/0\"\n\
         [[camera]]\nid = \"cam-1\"\nmain_stream = \"rtsp://127.0.0.1:{port}/cam/1\"\n\
         credentials = \"stale\"\n\
         [[camera]]\nid = \"cam-2\"\nmain_stream = \"rtsp://127.0.0.1:{port}/cam/9\"\n\
         [[camera]]\nid = \"cam-3\"\nmain_stream = \"rtsp://127.0.0.1:{closed}/cam/0\"\n",
        closed = free_port()
    );
    assert!(!cams.contains("p@ss"));
    std::fs::write(dir.path().join("cams.toml"), cams).unwrap();
    let mut daemon = Daemon::start(
        dir.path(),
        "cams.toml",
        "secrets = \"secrets.toml\"\n[sampling]\ninterval = \"1s\"\n\
         [rtsp]\nfail_after = 3\nbackoff_initial = \"100ms\"\nbackoff_max = \"500ms\"\n\
         [api]\nready_grace = \"5s\"\n",
    );
    let problem = |c: &Value| c["problem"].as_str().unwrap_or_default().to_string();
    daemon.wait_for(
        "cam-0 to stream, the others to fail each for its reason",
        Duration::from_secs(60),
        |d| {
            let cameras = by_id(&d.cameras());
            count(&cameras["cam-0"], "frames_analysed") >= 1
                && cameras["cam-1"]["state"] == "failed"
                && problem(&cameras["cam-2"]) == "not_found"
                && problem(&cameras["cam-3"]) == "refused"
        },
    );
    let cameras = by_id(&daemon.cameras());
    assert_eq!(
        problem(&cameras["cam-1"]),
        "unauthorized",
        "{}",
        cameras["cam-1"]
    );
    assert!(cameras["cam-1"]["last_error"]
        .as_str()
        .unwrap()
        .contains("authentication failed"));
    assert_eq!(cameras["cam-1"]["reconnects"], 0);
    assert!(count(&cameras["cam-1"], "connection_attempts") >= 3);
    assert_eq!(cameras["cam-0"]["state"], "streaming");
    assert_eq!(
        cameras["cam-0"]["problem"],
        Value::Null,
        "the street is live"
    );
    let ids = |query: &str| -> Vec<String> {
        daemon
            .get(&format!("/api/cameras?state={query}"))
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids("unauthorized"), ["cam-1"]);
    assert!(ids("failed").contains(&"cam-1".to_string()));
    assert_eq!(ids("not_found"), ["cam-2"]);
    let metrics = daemon.get_text("/metrics");
    for line in [
        "cgbot_camera_problems{problem=\"unauthorized\"} 1",
        "cgbot_camera_problems{problem=\"not_found\"} 1",
        "cgbot_camera_problems{problem=\"refused\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}\n{metrics}");
    }
    daemon.wait_for(
        "readiness to judge the cameras",
        Duration::from_secs(20),
        |d| d.status("/readyz") == Some(503),
    );
    let (_, _, reason) = daemon.get_raw("/readyz");
    let reason = String::from_utf8_lossy(&reason);
    assert!(
        reason.contains("only 1 of 4 cameras are healthy"),
        "{reason}"
    );
    let cameras = daemon.get_text("/api/cameras");
    let (status, _) = daemon.terminate(Duration::from_secs(30));
    let _ = sim.kill();
    let _ = sim.wait();
    assert!(status.success(), "{}", daemon.log());
    for text in [cameras, daemon.log()] {
        assert!(
            !text.contains("p@ss") && !text.contains("p%40ss") && !text.contains("last-quarter"),
            "{text}"
        );
    }
}

/// Cameras whose video keeps coming but shows nothing: a frozen picture (a still,
/// re-encoded) and a covered lens (noisy black) end `frozen` and `dark` while streaming;
/// the static street beside them stays healthy.
#[test]
fn frozen_and_dark_cameras_are_told_from_a_static_street() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let frozen = dir.path().join("frozen.mp4");
    frozen_clip(&frozen, 640, 30, 25);
    let dark = dir.path().join("dark.mp4");
    dark_clip(&dark, 640, 30, 25);
    let sims: Vec<SimHandle> = [
        frozen.as_path(),
        dark.as_path(),
        &sample("street-static-h264.mp4"),
    ]
    .into_iter()
    .map(|clip| SimHandle::start(SimConfig::new(clip, 1)).expect("start simulator"))
    .collect();
    let mut cams = String::new();
    for (id, sim) in ["frozen", "dark", "street"].iter().zip(&sims) {
        cams += &format!(
            "[[camera]]\nid = \"{id}\"\nmain_stream = \"rtsp://127.0.0.1:{}/cam/0\"\n",
            sim.port()
        );
    }
    std::fs::write(dir.path().join("cams.toml"), cams).unwrap();
    let mut daemon = Daemon::start(
        dir.path(),
        "cams.toml",
        "[sampling]\ninterval = \"1s\"\n[rtsp]\nfrozen_after = \"4s\"\ndark_after = \"4s\"\n",
    );
    daemon.wait_for(
        "the frozen and the dark camera to be judged, the street seen five times",
        Duration::from_secs(40),
        |d| {
            let cameras = by_id(&d.cameras());
            cameras["frozen"]["problem"] == "frozen"
                && cameras["dark"]["problem"] == "dark"
                && count(&cameras["street"], "frames_analysed") >= 5
        },
    );
    let cameras = by_id(&daemon.cameras());
    for id in ["frozen", "dark"] {
        assert_eq!(cameras[id]["state"], "streaming", "{}", cameras[id]);
    }
    let street = &cameras["street"];
    assert_eq!(street["state"], "streaming", "{street}");
    assert_eq!(street["problem"], Value::Null, "{street}");
    let log = daemon.log();
    assert_eq!(log.matches("camera picture is frozen").count(), 1, "{log}");
    assert_eq!(log.matches("camera picture is dark").count(), 1, "{log}");
    daemon.terminate(Duration::from_secs(20));
}

/// A PTZ camera turned away from its zones and back: while it looks elsewhere it is
/// `view_changed`, its case neither closes (the van is out of sight, not gone) nor does
/// anything new get filed; on the preset again its rules resume.
#[test]
fn a_turned_camera_suspends_its_rules_until_its_view_returns() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // The street looped: 15 s on the preset, 20 s turned left (the van's kerb out of the
    // picture), 15 s back.
    let clip = dir.path().join("turned.mp4");
    filtered_clip(
        &sample("street-static-h264.mp4"),
        50,
        "split[preset][turn];[turn]crop=iw*0.7:ih*0.7:0:ih*0.15,scale=640:480[left];\
         [preset][left]overlay=enable='between(t,15,35)'",
        &clip,
    );
    let (_sim, mut daemon) = van_camera_on(&clip, dir.path(), "3s", "4s");
    let problem = |d: &Daemon| d.get("/api/cameras/cam-0")["problem"].clone();
    daemon.wait_for("the van's case to be filed", Duration::from_secs(90), |d| {
        d.metric("cgbot_cases_filed_total") >= 1.0
    });
    daemon.wait_for("the camera to be turned", Duration::from_secs(60), |d| {
        problem(d) == "view_changed"
    });
    assert!(daemon.get("/api/cameras/cam-0")["view_likeness"].as_f64() < Some(0.6));
    daemon.wait_for(
        "the camera back on its preset",
        Duration::from_secs(40),
        |d| problem(d).is_null(),
    );
    // Long enough on the preset for a close or a new filing to show.
    std::thread::sleep(Duration::from_secs(6));
    let cases = daemon.get("/api/cases");
    let cases = cases.as_array().unwrap();
    assert_eq!(cases.len(), 1, "{cases:?}");
    assert_eq!(cases[0]["status"], "filed", "{cases:?}");
    let log = daemon.log();
    assert_eq!(
        log.matches("camera picture is view_changed").count(),
        1,
        "{log}"
    );
    daemon.terminate(Duration::from_secs(20));
    let events = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
    assert!(!events.contains("case.closed"), "{events}");
}

/// The `<kind>.jpg` evidence images under the daemon's evidence folder, with their sizes.
fn evidence_sizes(dir: &std::path::Path) -> Vec<(String, (u32, u32))> {
    let mut found = Vec::new();
    for case in std::fs::read_dir(dir.join("cases.db.evidence"))
        .into_iter()
        .flatten()
    {
        for file in std::fs::read_dir(case.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            // Images being written have another extension until they are complete.
            if name.ends_with(".jpg") {
                found.push((name, image::image_dimensions(&path).unwrap()));
            }
        }
    }
    found.sort();
    found
}

/// A camera analysed on its 640×360 sub stream files the van with evidence drawn on its
/// 640×480 main stream, the van's box moved to main-stream pixels; with its main stream
/// refused (a path the simulator does not serve), the evidence falls back to the sub
/// stream's frame, counted as such.
#[test]
fn sub_stream_cameras_take_evidence_from_the_main_stream() {
    let _serial = serial();
    let port = free_port();
    let sim = start_sim("street-static-h264.mp4", 1, port, &[]);
    assert_eq!(sim.sub_clip().summary(), "H.264 640x360, 25 fps, GOP 50");
    let settings = "shutdown_deadline = \"3s\"\n[sampling]\ninterval = \"1s\"\n\
                    [rtsp]\nstream = \"sub\"\nevidence_grab_timeout = \"5s\"\n";
    for (main, expected, result) in [
        ("cam/0", (640, 480), "main"),
        ("cam/9", (640, 360), "fallback"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let cameras = format!(
            "[[camera]]\nid = \"cam-0\"\nmain_stream = \"rtsp://127.0.0.1:{port}/{main}\"\n\
             sub_stream = \"rtsp://127.0.0.1:{port}/cam/0/sub\"\n{}",
            van_zone("3s")
        );
        std::fs::write(dir.path().join("cams.toml"), cameras).unwrap();
        let mut daemon = Daemon::start(dir.path(), "cams.toml", settings);
        daemon.wait_for(
            "the van filed with its image",
            Duration::from_secs(90),
            |d| {
                evidence_sizes(&d.dir)
                    .iter()
                    .any(|(name, _)| name == "filed.jpg")
            },
        );
        let grabs = daemon.metric(&format!(
            "cgbot_evidence_grabs_total{{result=\"{result}\"}}"
        ));
        assert!(grabs >= 1.0, "{result} grabs: {grabs}");
        let images = evidence_sizes(dir.path());
        for (name, (width, height)) in &images {
            if !name.contains("crop") {
                // The picture, and a caption band of a few lines under it.
                assert_eq!(*width, expected.0, "{name} with the main stream at {main}");
                let band = height - expected.1;
                assert!((40..200).contains(&band), "{name}: {height} px high");
            }
        }
        let source = match result {
            "main" => "main_stream",
            _ => "fallback",
        };
        let cases = daemon.get("/api/cases");
        let id = cases[0]["id"].as_str().unwrap();
        let detail = daemon.get(&format!("/api/cases/{id}"));
        for item in detail["evidence"].as_array().unwrap() {
            assert_eq!(item["source"], source, "{item}");
            assert_eq!(item.get("fallback_reason").is_some(), result == "fallback");
        }
        if result == "main" {
            let case = dir.path().join("cases.db.evidence").join(id);
            // The case's red box on the main picture: its bottom edge where the van's is
            // in main-stream pixels (336), not where the sub stream's box would be (252).
            let filed = image::open(case.join("filed.jpg")).unwrap().to_rgb8();
            let red = |y: &u32| {
                let p = filed.get_pixel(580, *y);
                p[0] > 170 && p[1] < 90 && p[2] < 130
            };
            let bottom = (0..expected.1).filter(red).max();
            assert!(
                bottom.is_some_and(|y| (315..350).contains(&y)),
                "red box bottom at {bottom:?}"
            );
            // The van, 123 px high: the 320 px minimum close-up, under its caption.
            let (_, crop) = images.iter().find(|(n, _)| n == "filed-crop.jpg").unwrap();
            assert!(crop.0 == 320 && crop.1 > 320, "crop {crop:?}");
            let kept = std::env::var_os("CGBOT_KEEP_EVIDENCE").map(std::path::PathBuf::from);
            if let Some(keep) = kept {
                std::fs::copy(case.join("filed.jpg"), keep).unwrap();
            }
        }
        daemon.terminate(Duration::from_secs(20));
    }
}

/// The reference view is kept in the database: a daemon restarted while the camera looks
/// elsewhere says so at once instead of learning the turned view as the new reference.
#[test]
fn the_reference_view_outlives_a_restart() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let view_likeness = |d: &Daemon| d.get("/api/cameras/cam-0")["view_likeness"].as_f64();
    let (sim, mut daemon) =
        van_camera_on(&sample("street-static-h264.mp4"), dir.path(), "600s", "60s");
    daemon.wait_for(
        "the reference view to be learned",
        Duration::from_secs(60),
        |d| view_likeness(d).is_some_and(|l| l > 0.9),
    );
    daemon.terminate(Duration::from_secs(20));
    drop(sim);

    // Restarted with the camera turned left for good.
    let turned = dir.path().join("turned.mp4");
    filtered_clip(
        &sample("street-static-h264.mp4"),
        50,
        "crop=iw*0.7:ih*0.7:0:ih*0.15,scale=640:480",
        &turned,
    );
    let (_sim, mut daemon) = van_camera_on(&turned, dir.path(), "600s", "60s");
    daemon.wait_for("the turned view to be told", Duration::from_secs(60), |d| {
        d.get("/api/cameras/cam-0")["problem"] == "view_changed"
    });
    assert!(view_likeness(&daemon) < Some(0.6));
    daemon.terminate(Duration::from_secs(20));
}
