//! `cgbot eval` end to end: scenario recipes made into clips with FFmpeg, run through the
//! real pipeline (decoding, YOLOX-Nano, tracking, rules, cases, SQLite) and scored.

mod common;

use std::path::Path;

use common::{cgbot, fails, ok, path_arg, samples};

fn suite(name: &str) -> String {
    path_arg(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("eval")
            .join(name),
    )
}

/// Two short scenarios of the shipped suite: a car parked in an H.265 clip is filed once,
/// within the dwell plus two samples; a car stopping for 60 s under the city's 180 s dwell
/// is not. A second run takes the clips from the cache.
#[test]
fn the_suite_files_the_parked_car_and_not_the_brief_stop() {
    let dir = tempfile::tempdir().unwrap();
    let clips = path_arg(&dir.path().join("clips"));
    let plot = dir.path().join("eval.png");
    let (h265, stop) = (suite("h265.toml"), suite("stop-60s.toml"));
    let args = [
        "eval",
        h265.as_str(),
        stop.as_str(),
        "--samples",
        &path_arg(&samples()),
        "--clips",
        &clips,
        "--json",
        "--plot",
        &path_arg(&plot),
    ];
    let out = cgbot(&args);
    let table = common::stderr(&out);
    let report: serde_json::Value = serde_json::from_str(&ok(out)).unwrap();
    assert!(
        table.contains("h265") && table.contains("illegal_parking"),
        "{table}"
    );
    let scenarios = report["scenarios"].as_array().unwrap();
    let (h265, stop) = (&scenarios[0], &scenarios[1]);
    assert_eq!(h265["name"], "h265");
    assert_eq!(h265["passed"], true, "{h265:#}");
    let parking = &h265["events"]["illegal_parking"];
    assert_eq!(
        (
            &parking["expected"],
            &parking["found"],
            &parking["filed"],
            &parking["duplicates"]
        ),
        (&1.into(), &1.into(), &1.into(), &0.into()),
        "{h265:#}"
    );
    // Parked at 10 s, a 30 s dwell, one sample every 2 s.
    let delay = parking["delays"][0].as_f64().unwrap();
    assert!((30.0..=34.0).contains(&delay), "filing delay {delay} s");
    assert_eq!(h265["samples"], 50);
    assert_eq!(stop["name"], "stop-60s");
    assert_eq!(stop["passed"], true, "{stop:#}");
    assert_eq!(stop["cases"].as_array().unwrap().len(), 0, "{stop:#}");
    assert_eq!(report["passed"], 2);
    let totals = &report["totals"][0];
    assert_eq!(
        (&totals["event"], &totals["precision"], &totals["recall"]),
        (&"illegal_parking".into(), &1.0.into(), &1.0.into())
    );
    assert!(std::fs::metadata(&plot).unwrap().len() > 10_000);
    let cached = std::fs::read_dir(dir.path().join("clips")).unwrap().count();
    assert_eq!(cached, 2, "one cached clip per recipe");
    // Again: the same figures, from the cached clips.
    let again: serde_json::Value = serde_json::from_str(&ok(cgbot(&args))).unwrap();
    assert_eq!(again["totals"], report["totals"]);
    assert_eq!(
        std::fs::read_dir(dir.path().join("clips")).unwrap().count(),
        cached
    );
}

/// A scenario whose recipe names a sample that is not there is an error naming the
/// scenario file and field, before anything runs.
#[test]
fn a_missing_sample_is_an_error_naming_the_scenario_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("broken.toml");
    std::fs::write(
        &scenario,
        format!(
            "name = \"broken\"\ncamera = \"{}\"\nstart = \"2026-11-24T10:00:00+08:00\"\n\
             [recipe]\nbackground = \"no-such-street.mp4\"\nduration = \"10s\"\n",
            suite("cameras/street.toml").replace('\\', "/")
        ),
    )
    .unwrap();
    let err = fails(cgbot(&[
        "eval",
        &path_arg(&scenario),
        "--samples",
        &path_arg(&samples()),
    ]));
    assert!(
        err.contains("broken.toml: recipe.background: `no-such-street.mp4` is neither"),
        "{err}"
    );
}
