//! Configuration errors as a service manager meets them: `cgbot cameras check` lists every
//! error, a bad configuration exits 78 (EX_CONFIG) so that systemd stops restarting, and
//! `--log-format json` writes one JSON object a line.

mod common;

use common::*;

const EX_CONFIG: i32 = 78;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn cameras_check_lists_every_error_of_two_files_and_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("east.toml"),
        "[[camera]]\nid = \"e1\"\nmain_stream = \"str\"\n\
         [[camera]]\nid = \"e2\"\nmain_stream = \"rtsp://u:p@10.0.0.2/main\"\nutc_offset = \"+99:00\"\n\
         [[camera]]\nid = \"e3\"\nmain_stream = \"rtsp://u:p@10.0.0.3/main\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("west.toml"),
        "[[camera]]\nid = \"w1\"\nmodel = \"yolo_nope\"\n\
         [[camera]]\nid = \"w2\"\nmain_stream = \"http://admin:secret@10.0.1.2/x\"\n",
    )
    .unwrap();
    let out = cgbot(&["cameras", "check", &path_arg(dir.path())]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{err}");
    for expected in [
        "east.toml: camera[0] `e1`.main_stream: `str` is not an rtsp:// or rtsps:// URL",
        "east.toml: camera[1] `e2`.utc_offset",
        "west.toml: camera[0] `w1`.model: unknown model `yolo_nope`",
        "west.toml: camera[1] `w2`.main_stream: `http://***@10.0.1.2/x`",
        ": 4 errors (listed above)",
    ] {
        assert!(err.contains(expected), "{expected:?} missing from:\n{err}");
    }
    assert!(!err.contains("secret"), "{err}");

    // Fixed, the same directory checks clean.
    std::fs::write(
        dir.path().join("east.toml"),
        "[[camera]]\nid = \"e1\"\nmain_stream = \"rtsp://h/1\"\n",
    )
    .unwrap();
    std::fs::remove_file(dir.path().join("west.toml")).unwrap();
    let out = cgbot(&["cameras", "check", &path_arg(dir.path())]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("1 camera, 0 zones: OK"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn run_with_a_bad_config_exits_78_and_other_failures_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "cameras = \"cams.toml\"\n[sinks]\nevery = \"1ns\"\n",
    )
    .unwrap();
    let out = cgbot(&["run", "--config", &path_arg(&config)]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{err}");
    assert!(
        err.contains("bad.toml: sinks.every: 1ns is too short"),
        "{err}"
    );

    // A valid run config naming a broken camera file: a configuration error too.
    std::fs::write(&config, "cameras = \"cams.toml\"\n").unwrap();
    std::fs::write(
        dir.path().join("cams.toml"),
        "[[camera]]\nid = \"c1\"\nmain_stream = \"str\"\n",
    )
    .unwrap();
    let out = cgbot(&["run", "--config", &path_arg(&config)]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{err}");
    assert!(
        err.contains("cams.toml: camera[0] `c1`.main_stream"),
        "{err}"
    );

    // Not a configuration error: a clip that does not exist.
    let out = cgbot(&["replay", &path_arg(&dir.path().join("missing.mp4"))]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn run_check_validates_without_starting_and_exits_78_on_a_bad_camera_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("run.toml");
    std::fs::write(
        &config,
        "cameras = \"cams.toml\"\nmodels_dir = \"models\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("cams.toml"),
        "[[camera]]\nid = \"c1\"\nmain_stream = \"rtsp://10.0.0.1/s\"\n",
    )
    .unwrap();
    let out = cgbot(&["run", "--check", "--config", &path_arg(&config)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("valid, 1 camera(s)"),
        "{}",
        stdout(&out)
    );
    // Nothing was started: no database was created.
    assert!(!dir.path().join("cgbot.db").exists());

    std::fs::write(
        dir.path().join("cams.toml"),
        "[[camera]]\nid = \"c1\"\nmain_stream = \"str\"\n",
    )
    .unwrap();
    let out = cgbot(&["run", "--check", "--config", &path_arg(&config)]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{err}");
    assert!(
        err.contains("cams.toml: camera[0] `c1`.main_stream"),
        "{err}"
    );
}

#[test]
fn run_check_validates_the_citys_calendar_and_code_table() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("run.toml");
    std::fs::write(
        &config,
        "cameras = \"cams.toml\"\ncalendar = \"calendar.toml\"\ncodes = \"codes.toml\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("cams.toml"),
        "[[camera]]\nid = \"c1\"\ncodes = { street_code = \"330102001\" }\n\
         [[camera.zone]]\nid = \"kerb\"\npolygon = [[0, 0], [1, 0], [1, 1]]\n\
         rules = [{ event = \"illegal_parking\" }]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("calendar.toml"),
        "hours = [\"08:30-12:00\", \"13:30-17:30\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("codes.toml"),
        "[event.illegal_parking]\ncity_code = \"605\"\n",
    )
    .unwrap();
    let out = cgbot(&["run", "--check", "--config", &path_arg(&config)]);
    assert!(out.status.success(), "{}", stderr(&out));

    for (file, text, expected) in [
        (
            "calendar.toml",
            "hours = [\"13:30-17:30\", \"08:30-12:00\"]\n",
            "calendar.toml: hours: 08:30-12:00 overlaps or precedes 13:30-17:30",
        ),
        (
            "codes.toml",
            "[event.street_vending]\ncity_code = \"602\"\n",
            "codes.toml: event.illegal_parking: missing",
        ),
    ] {
        let good = std::fs::read_to_string(dir.path().join(file)).unwrap();
        std::fs::write(dir.path().join(file), text).unwrap();
        let out = cgbot(&["run", "--check", "--config", &path_arg(&config)]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(EX_CONFIG), "{err}");
        assert!(err.contains(expected), "{err}");
        std::fs::write(dir.path().join(file), good).unwrap();
    }
}

#[test]
fn log_format_json_writes_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("run.toml");
    std::fs::write(
        &config,
        "cameras = \"cams.toml\"\n[rtsp]\nframe_timeout = \"0s\"\n",
    )
    .unwrap();
    let out = cgbot(&[
        "--log-format",
        "json",
        "run",
        "--config",
        &path_arg(&config),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(!lines.is_empty());
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(value["level"], "ERROR", "{line}");
        let error = value["fields"]["error"].as_str().unwrap();
        assert!(
            error.contains("run.toml: rtsp.frame_timeout: 0s is too short"),
            "{line}"
        );
    }
}
