//! `cgbot bench` end to end: simulated cameras through the real daemon, a report with
//! every figure, and a fast, clear refusal when the baseline cannot run.

mod common;

use common::{fails, ok, sample};
use serde_json::Value;

#[test]
fn bench_reports_throughput_cpu_latency_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cgbot"))
        .args([
            "bench",
            "--cameras",
            "2",
            "--warmup",
            "3s",
            "--duration",
            "6s",
            "--interval",
            "1s",
            "--json",
        ])
        .arg("--clip")
        .arg(sample("people-walking.mp4"))
        .arg("--work-dir")
        .arg(&work)
        .output()
        .unwrap();
    let report: Value = serde_json::from_str(&ok(out)).unwrap();
    let point = &report["points"][0];
    assert_eq!(point["cameras"], 2);
    assert_eq!(point["wanted_fps"], 2.0);
    let analysed = point["analysed_fps"].as_f64().unwrap();
    assert!((1.0..=3.0).contains(&analysed), "{point}");
    assert!(point["cpu_cores"].as_f64().unwrap() > 0.0);
    let stages = &point["cpu_ms_per_frame"];
    // The OS counts CPU in 10 ms ticks: two small cameras for 6 s may not fill one for
    // receiving, but decode and inference do.
    for stage in ["decode", "inference"] {
        assert!(stages[stage].as_f64().unwrap() > 0.0, "{stage}: {stages}");
    }
    assert!(stages["receive"].as_f64().unwrap() >= 0.0, "{stages}");
    assert!(point["latency_p99"]["seconds"].as_f64().is_some());
    assert!(point["peak_rss_mib"].as_f64().unwrap() >= point["base_rss_mib"].as_f64().unwrap());
    // Served cameras count the analysed share of the wanted frames, per core.
    let (served, cores) = (
        point["served_cameras"].as_f64().unwrap(),
        point["cpu_cores"].as_f64().unwrap(),
    );
    assert!(
        (served - 2.0 * (analysed / 2.0).min(1.0)).abs() < 1e-9,
        "{point}"
    );
    let per_core = point["served_cameras_per_core"].as_f64().unwrap();
    assert!((per_core - served / cores).abs() < 1e-9, "{point}");
    for stage in ["receive", "decode", "detect"] {
        assert!(point["skipped"][stage].as_u64().is_some(), "{point}");
    }
    // Inference alone is measured with the point, and the pipeline's share of it given.
    let alone = &point["inference_alone"];
    assert!(alone["batch1_fps"].as_f64().unwrap() > 1.0, "{alone}");
    let share = point["share_of_inference_alone"].as_f64().unwrap();
    assert!(share > 0.0 && share < 1.0, "{point}");
    // Without a baseline there is nothing to compare with.
    assert!(report["served_cameras_per_core_vs_baseline"].is_null());
    assert!(work.join("2-cameras/daemon.log").is_file());
}

#[test]
fn baseline_without_its_environment_is_refused_before_measuring() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cgbot"))
        .args(["bench", "--baseline", "--cameras", "1"])
        .env("CGBOT_BASELINE_PYTHON", "/nonexistent/python")
        .output()
        .unwrap();
    let err = fails(out);
    assert!(err.contains("make baseline-env"), "{err}");
}

#[test]
fn patrol_reports_revisits_and_files_cases_with_main_stream_evidence() {
    let dir = tempfile::tempdir().unwrap();
    // Six cameras of the parked street (a bus and a van), two slots, analysed on the
    // simulator's 640×360 sub stream; every second camera has a no-parking zone over them.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cgbot"))
        .args(["bench", "--patrol", "--cameras", "6", "--slots", "2"])
        .args([
            "--parked-every",
            "2",
            "--min-dwell",
            "4s",
            "--stream",
            "sub",
        ])
        .args(["--warmup", "8", "--duration", "12", "--json"])
        .arg("--clip")
        .arg(sample("street-static-h264.mp4"))
        .arg("--work-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let report: Value = serde_json::from_str(&ok(out)).unwrap();
    assert_eq!(report["stream"], "sub");
    let patrol = &report["patrol"];
    assert_eq!(patrol["cameras"], 6);
    assert_eq!(patrol["parked_cameras"], 3);
    assert!(patrol["visits_per_s"].as_f64().unwrap() > 0.0, "{patrol}");
    let revisit = &patrol["revisit"];
    let worst = revisit["worst_s"].as_f64().unwrap();
    let p50 = revisit["p50_s"].as_f64().unwrap();
    assert!(revisit["gaps"].as_u64().unwrap() > 0, "{revisit}");
    // Every camera took its turn, and no revisit took longer than the whole run.
    assert_eq!(revisit["cameras_unvisited"], 0, "{revisit}");
    assert!(0.0 < p50 && p50 <= worst && worst < 20.0, "{revisit}");
    assert!(
        patrol["cpu_ms_per_visit"].as_f64().unwrap() > 0.0,
        "{patrol}"
    );
    // The parked vehicles were filed on the parked cameras only, and their evidence came
    // from the main stream.
    let filed = patrol["cases_filed"].as_u64().unwrap();
    assert!(filed >= 3, "{patrol}");
    assert!(
        patrol["evidence_grabs_main"].as_u64().unwrap() > 0,
        "{patrol}"
    );
    let cameras = std::process::Command::new(env!("CARGO_BIN_EXE_cgbot"))
        .args(["cases", "list", "--json", "--db"])
        .arg(dir.path().join("patrol-6-cameras/cases.db"))
        .output()
        .unwrap();
    let cases: Value = serde_json::from_str(&ok(cameras)).unwrap();
    let cases = cases.as_array().unwrap();
    // The daemon may file one more between the last scrape and its stop.
    assert!(
        cases.len() as u64 >= filed,
        "{} cases, {filed} counted",
        cases.len()
    );
    for case in cases {
        let camera = case["camera_id"].as_str().unwrap();
        let n: usize = camera.trim_start_matches("bench-").parse().unwrap();
        assert_eq!(n % 2, 0, "{camera} has no parked zone");
    }
}
