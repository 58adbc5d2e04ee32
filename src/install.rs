//! Where an installed binary finds its files. A city installs `cgbot` on servers that have
//! no source tree: ONNX Runtime sits next to the binary or in the system's library path,
//! and models in `/var/lib/cgbot/models`. The source tree the binary was built from is
//! looked at only while the binary still lives inside it (development and tests), so an
//! installed copy never depends on a build machine's paths.

use std::path::{Path, PathBuf};

/// Models directory of a packaged installation (systemd's `StateDirectory=cgbot`, the
/// container image's volume).
pub const DEFAULT_MODEL_DIR: &str = "/var/lib/cgbot/models";

/// The source tree this binary was built from.
const SOURCE_TREE: &str = env!("CARGO_MANIFEST_DIR");

/// The source tree, when the running executable lies inside it (`target/<profile>/…`).
pub fn development_tree() -> Option<&'static Path> {
    let exe = std::env::current_exe().ok()?;
    let tree = Path::new(SOURCE_TREE);
    exe.starts_with(tree).then_some(tree)
}

/// The directory of the running executable.
pub fn executable_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
}
