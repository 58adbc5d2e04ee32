//! Helpers shared by the end-to-end tests: where the shared samples and generated test
//! models are, running the `cgbot` binary, and asking `ffprobe`/`ffmpeg` for ground truth.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// The input the default model takes: what a decoder needs to prepare frames for it.
pub fn default_model_input() -> cgbot::models::InputSpec {
    cgbot::models::Catalogue::with_dirs(vec![])
        .expect("built-in model catalogue")
        .default_model()
        .expect("a default model")
        .input
        .clone()
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

/// Asserts a clean failure (exit 1, an `error:` line, no panic) and returns stderr.
pub fn fails(out: Output) -> String {
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit 1, got {:?}: {err}",
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
