//! What the benchmarks share.

use std::path::PathBuf;

/// A shared sample clip: `$CGBOT_SAMPLES/NAME`, by default `../shared/samples/NAME`.
pub fn sample(name: &str) -> PathBuf {
    std::env::var_os("CGBOT_SAMPLES")
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/samples"),
            PathBuf::from,
        )
        .join(name)
}
