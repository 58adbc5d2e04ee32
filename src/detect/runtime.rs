//! Loading the ONNX Runtime shared library. We load it at run time (ort's `load-dynamic`)
//! from the `onnxruntime` PyPI wheel, because ort's own binary download host is unreachable
//! from the machines we deploy on. An installation ships the library next to the binary or
//! in `/usr/lib/cgbot/`; `make setup` unpacks it into the source tree's `.ort/`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;

const LIBRARY: &str = "libonnxruntime.so";
/// The file the wheel of the release our `ort` API matches ships (`scripts/setup.sh`);
/// `libonnxruntime.so` is a symlink to it.
const VERSIONED_LIBRARY: &str = "libonnxruntime.so.1.31.1";

static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "ONNX Runtime library not found (looked for {searched}); install \
         {VERSIONED_LIBRARY} next to the cgbot binary or in /usr/lib/cgbot/, set ORT_DYLIB_PATH to it, \
         or run `make setup` in the source tree"
    )]
    NotFound { searched: String },
    #[error("cannot load ONNX Runtime from {path}: {reason}")]
    Load { path: PathBuf, reason: String },
}

/// One place the library may be.
#[derive(Debug, Clone, PartialEq)]
enum Candidate {
    /// A file, used when it exists.
    File(PathBuf),
    /// A bare library name the dynamic loader looks up in the system's library path
    /// (`LD_LIBRARY_PATH`, `ld.so.cache`, `/usr/lib`…).
    System(&'static str),
}

impl std::fmt::Display for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Candidate::File(path) => write!(f, "{}", path.display()),
            Candidate::System(name) => write!(f, "{name} in the system library path"),
        }
    }
}

/// Where to look, first match wins: `ORT_DYLIB_PATH` alone when set; else the binary's own
/// directory and `../lib/cgbot/` beside it, the system library path, and last the source
/// tree's `.ort/` while the binary runs from that tree.
fn candidates() -> Vec<Candidate> {
    candidates_from(
        std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from),
        crate::install::executable_dir().as_deref(),
        crate::install::development_tree(),
    )
}

fn candidates_from(
    configured: Option<PathBuf>,
    exe_dir: Option<&Path>,
    source_tree: Option<&Path>,
) -> Vec<Candidate> {
    if let Some(path) = configured {
        return vec![Candidate::File(path)];
    }
    let mut list = Vec::new();
    if let Some(exe_dir) = exe_dir {
        for dir in [exe_dir.to_path_buf(), exe_dir.join("../lib/cgbot")] {
            list.push(Candidate::File(dir.join(VERSIONED_LIBRARY)));
            list.push(Candidate::File(dir.join(LIBRARY)));
        }
    }
    list.push(Candidate::System(VERSIONED_LIBRARY));
    list.push(Candidate::System(LIBRARY));
    if let Some(tree) = source_tree {
        list.push(Candidate::File(tree.join(".ort").join(LIBRARY)));
    }
    list
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
    // Why each system-path name failed, for the error.
    let mut failures = Vec::new();
    let mut loaded = None;
    for candidate in &candidates {
        let (path, attempt) = match candidate {
            Candidate::File(path) if path.is_file() => (path.clone(), ort::init_from(path)),
            Candidate::File(_) => continue,
            Candidate::System(name) => (PathBuf::from(name), ort::init_from(name)),
        };
        match attempt {
            Ok(builder) => {
                loaded = Some((candidate, path, builder));
                break;
            }
            // Not in the system library path: look further.
            Err(ort::LoadDynamicError::Dlopen { error, .. })
                if matches!(candidate, Candidate::System(_)) =>
            {
                // libloading's own message is "dlopen failed"; the loader's is its source.
                let reason = std::error::Error::source(&error)
                    .map_or_else(|| error.to_string(), ToString::to_string);
                failures.push(format!("{candidate}: {reason}"));
            }
            Err(e) => {
                return Err(RuntimeError::Load {
                    path,
                    reason: e.to_string(),
                })
            }
        }
    }
    let Some((candidate, path, builder)) = loaded else {
        return Err(RuntimeError::NotFound {
            searched: candidates
                .iter()
                .filter(|c| matches!(c, Candidate::File(_)))
                .map(ToString::to_string)
                .chain(failures)
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let env = builder
        .with_name("cgbot")
        .build()
        .map_err(|e| RuntimeError::Load {
            path,
            reason: e.to_string(),
        })?;
    tracing::info!(library = %candidate, "loaded ONNX Runtime");
    Ok(ENVIRONMENT.get_or_init(|| env))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_binary_looks_beside_itself_then_system_path_and_never_in_a_source_tree() {
        let found = candidates_from(None, Some(Path::new("/opt/cgbot/bin")), None);
        let shown: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "/opt/cgbot/bin/libonnxruntime.so.1.31.1",
                "/opt/cgbot/bin/libonnxruntime.so",
                "/opt/cgbot/bin/../lib/cgbot/libonnxruntime.so.1.31.1",
                "/opt/cgbot/bin/../lib/cgbot/libonnxruntime.so",
                "libonnxruntime.so.1.31.1 in the system library path",
                "libonnxruntime.so in the system library path",
            ]
        );
    }

    #[test]
    fn source_tree_comes_last_and_ort_dylib_path_alone_overrides() {
        let found = candidates_from(None, None, Some(Path::new("/src/cgbot")));
        assert_eq!(
            found.last(),
            Some(&Candidate::File("/src/cgbot/.ort/libonnxruntime.so".into()))
        );
        let configured = candidates_from(
            Some("/x/libonnxruntime.so".into()),
            Some(Path::new("/opt/cgbot/bin")),
            Some(Path::new("/src/cgbot")),
        );
        assert_eq!(configured, [Candidate::File("/x/libonnxruntime.so".into())]);
    }
}
