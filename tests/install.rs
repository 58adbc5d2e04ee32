//! An installed binary leaves its build tree: copied with ONNX Runtime and the model into
//! a directory outside the source tree, in the packaged layout (`bin/cgbot`,
//! `lib/cgbot/libonnxruntime.so*`), and run with nothing of our environment but PATH and
//! HOME, it must find both by itself. The logs name the library and model files used, so
//! a fallback to the source tree cannot pass for success.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::daemon::{camera_file, free_port, start_sim, Daemon};
use common::*;

/// The model file the tests use: `$CGBOT_MODEL_DIR`, else `../shared/models`.
fn shared_model() -> PathBuf {
    let dir = std::env::var_os("CGBOT_MODEL_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/models"),
        PathBuf::from,
    );
    let path = dir.join("yolox_nano.onnx");
    assert!(path.is_file(), "{} missing", path.display());
    path
}

/// The directory of the ONNX Runtime this checkout uses: `$ORT_DYLIB_PATH`'s, else `.ort/`.
fn ort_dir() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(".ort"),
        |lib| PathBuf::from(lib).parent().unwrap().to_path_buf(),
    )
}

/// `root/bin/cgbot` and `root/lib/cgbot/libonnxruntime.so*` (files and symlinks as the
/// wheel ships them), copied, not linked, so nothing points back into the source tree.
fn install(root: &Path) -> PathBuf {
    let bin = root.join("bin");
    let lib = root.join("lib/cgbot");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&lib).unwrap();
    let binary = bin.join("cgbot");
    std::fs::copy(env!("CARGO_BIN_EXE_cgbot"), &binary).unwrap();
    let mut copied = 0;
    for entry in std::fs::read_dir(ort_dir()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with("libonnxruntime.so") {
            // `copy` follows a symlink: the copy is a plain file.
            std::fs::copy(entry.path(), lib.join(&name)).unwrap();
            copied += 1;
        }
    }
    assert!(
        copied > 0,
        "no libonnxruntime.so* in {}",
        ort_dir().display()
    );
    binary
}

fn copy_model(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(shared_model(), dir.join("yolox_nano.onnx")).unwrap();
}

fn assert_outside_source_tree(root: &Path) {
    let tree = Path::new(env!("CARGO_MANIFEST_DIR"))
        .canonicalize()
        .unwrap();
    assert!(
        !root.canonicalize().unwrap().starts_with(&tree),
        "{} is inside the source tree",
        root.display()
    );
}

#[test]
fn installed_copy_detects_and_runs_without_source_tree_or_environment() {
    let root = tempfile::tempdir().unwrap();
    assert_outside_source_tree(root.path());
    let binary = install(root.path());
    let installed_lib = root.path().join("bin/../lib/cgbot");

    // `cgbot detect` from a working directory holding `models/`.
    let work = root.path().join("work");
    copy_model(&work.join("models"));
    let out = Command::new(&binary)
        .args(["-v", "detect", "--json"])
        .arg(sample("dog-bicycle-truck.jpg"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .current_dir(&work)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(stdout(&out).contains("\"dog\""), "{}", stdout(&out));
    assert!(
        log.contains(&format!("{}/libonnxruntime.so", installed_lib.display())),
        "ONNX Runtime not loaded from the installation:\n{log}"
    );
    assert!(
        log.contains("model=models/yolox_nano.onnx"),
        "model not taken from ./models:\n{log}"
    );

    // `cgbot run` with run.toml's `models_dir`, streaming one simulated camera.
    let daemon_dir = root.path().join("etc");
    std::fs::create_dir_all(&daemon_dir).unwrap();
    let models = root.path().join("state/models");
    copy_model(&models);
    let port = free_port();
    let _sim = start_sim("street-static-h264.mp4", 1, port, &[]);
    std::fs::write(daemon_dir.join("cameras.toml"), camera_file(port, [0], "")).unwrap();
    let mut daemon = Daemon::start_installed(
        &daemon_dir,
        "cameras.toml",
        "models_dir = \"../state/models\"\n[sampling]\ninterval = \"500ms\"\n",
        &binary,
    );
    daemon.wait_for("a frame analysed", Duration::from_secs(60), |d| {
        d.metric("cgbot_frames_analysed_total") >= 1.0
    });
    let log = daemon.log();
    assert!(
        log.contains(&format!("{}/libonnxruntime.so", installed_lib.display())),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "{}/yolox_nano.onnx",
            daemon_dir.join("../state/models").display()
        )),
        "model not taken from models_dir:\n{log}"
    );
    let (status, _) = daemon.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", daemon.log());
}

#[test]
fn installed_copy_finds_onnx_runtime_through_the_dynamic_loader_search_path() {
    let root = tempfile::tempdir().unwrap();
    assert_outside_source_tree(root.path());
    // The library in a directory named on LD_LIBRARY_PATH, neither beside the binary nor
    // in its ../lib/cgbot.
    install(root.path());
    let system_lib = root.path().join("system-lib");
    std::fs::rename(root.path().join("lib/cgbot"), &system_lib).unwrap();
    let elsewhere = root.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let binary = elsewhere.join("cgbot");
    std::fs::rename(root.path().join("bin/cgbot"), &binary).unwrap();
    copy_model(&elsewhere.join("models"));
    let out = Command::new(&binary)
        .args(["-v", "detect"])
        .arg(sample("street-bus-car.jpg"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LD_LIBRARY_PATH", &system_lib)
        .current_dir(&elsewhere)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("libonnxruntime.so.1.31.1 in the system library path"),
        "{log}"
    );

    // Without it, the error lists every place looked.
    let out = Command::new(&binary)
        .args(["detect"])
        .arg(sample("street-bus-car.jpg"))
        .env_clear()
        .current_dir(&elsewhere)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for place in [
        format!("{}/libonnxruntime.so.1.31.1", elsewhere.display()),
        format!("{}/../lib/cgbot/libonnxruntime.so", elsewhere.display()),
        "libonnxruntime.so in the system library path: ".to_string(),
    ] {
        assert!(err.contains(&place), "{place} not in: {err}");
    }
    assert!(!err.contains(".ort"), "a source tree was searched: {err}");
}
