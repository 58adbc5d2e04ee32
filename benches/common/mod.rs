//! What the benchmarks share.
#![allow(dead_code)] // each bench uses a different subset

use std::path::PathBuf;

use cgbot::source::{AccessUnit, FileSource, StreamInfo};

/// A shared sample clip: `$CGBOT_SAMPLES/NAME`, by default `../shared/samples/NAME`.
pub fn sample(name: &str) -> PathBuf {
    std::env::var_os("CGBOT_SAMPLES")
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/samples"),
            PathBuf::from,
        )
        .join(name)
}

/// The first `n` keyframes of a sample clip (`usize::MAX`: all of them); fewer is an
/// error, since a bench would then measure something else than it says.
pub fn keyframes(name: &str, n: usize) -> (StreamInfo, Vec<AccessUnit>) {
    let (mut source, info) = FileSource::open(&sample(name)).expect("open sample");
    let mut keyframes = Vec::new();
    while keyframes.len() < n {
        let Some(unit) = source.next_unit().expect("read") else {
            assert!(n == usize::MAX, "{name}: fewer than {n} keyframes");
            break;
        };
        if unit.keyframe {
            keyframes.push(unit);
        }
    }
    (info, keyframes)
}
