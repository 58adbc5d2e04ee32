//! Loading the ONNX Runtime shared library. We load it at run time (ort's `load-dynamic`)
//! from the `onnxruntime` PyPI wheel that `make setup` unpacks into `.ort/`, because ort's
//! own binary download host is unreachable from the machines we deploy on.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;

/// `.ort/` of the source tree the binary was built from.
const SOURCE_ORT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/.ort");
const LIBRARY: &str = "libonnxruntime.so";

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "ONNX Runtime library not found (looked for {LIBRARY} in {searched}); run `make setup` \
         or set ORT_DYLIB_PATH to a libonnxruntime.so 1.31"
    )]
    NotFound { searched: String },
    #[error("cannot load ONNX Runtime from {path}: {reason}")]
    Load { path: PathBuf, reason: String },
}

/// Candidate library paths, most specific first: `ORT_DYLIB_PATH`, `.ort/` next to the
/// executable's source tree (cargo's `target/<profile>/cgbot` → `../../.ort`), then the
/// tree it was built from.
fn candidates() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        paths.push(PathBuf::from(p));
        return paths;
    }
    if let Ok(exe) = std::env::current_exe() {
        for up in exe.ancestors().skip(1).take(4) {
            paths.push(up.join(".ort").join(LIBRARY));
        }
    }
    paths.push(PathBuf::from(SOURCE_ORT_DIR).join(LIBRARY));
    paths
}

/// The process-wide ONNX Runtime environment, created on first use.
pub fn environment() -> Result<&'static Environment, RuntimeError> {
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let candidates = candidates();
    let path = candidates
        .iter()
        .find(|p| p.is_file())
        .ok_or_else(|| RuntimeError::NotFound {
            searched: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let load = |reason: String| RuntimeError::Load {
        path: path.clone(),
        reason,
    };
    let env = ort::init_from(path)
        .map_err(|e| load(e.to_string()))?
        .with_name("cgbot")
        .build()
        .map_err(|e| load(e.to_string()))?;
    tracing::debug!(path = %path.display(), "loaded ONNX Runtime");
    Ok(ENVIRONMENT.get_or_init(|| env))
}
