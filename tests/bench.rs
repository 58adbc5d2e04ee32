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
