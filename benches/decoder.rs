//! A camera sampled once per GOP or less often is decoded keyframe by keyframe. Two ways
//! to do that, measured in one run on the 15 keyframes of each 30 s 1080p sample clip:
//!
//! - `fresh`: a decoder context opened for each keyframe, fed it, drained and dropped
//!   (what the daemon did until round 2);
//! - `kept`: one decoder context per camera, fed keyframe after keyframe.
//!
//! Timed is the decode thread's whole cost per keyframe in CPU time of the thread (the
//! development machine is shared, so wall time would time the neighbours): opening and
//! dropping the context where there is one, decoding, and the letterbox to the model
//! input (the same in both).
//! The process allocates frame buffers as the daemon does (`mmap` above 128 KiB).
//! Before the timings, the memory a kept decoder holds between keyframes is printed.
//!
//!     cargo bench --bench decoder

mod common;

use std::hint::black_box;
use std::time::Duration;

use cgbot::bench::memory_mib;
use cgbot::decode::{keep_frame_buffers_out_of_the_heap, Decoder, Sampling};
use cgbot::models::{Catalogue, InputSpec};
use cgbot::source::{AccessUnit, StreamInfo};
use common::keyframes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};

const CLIPS: [(&str, &str); 2] = [
    ("h264", "people-walking-1080p-h264.mp4"),
    ("h265", "people-walking-1080p-h265.mp4"),
];
const KEYFRAMES_ONLY: Sampling = Sampling::Keyframes { min_interval: None };

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0, "the thread's CPU clock");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// RSS growth per decoder when `count` decoders are each kept after one keyframe, as a
/// decode thread keeps one per continuous camera.
fn kept_decoder_mib(info: &StreamInfo, unit: &AccessUnit, input: &InputSpec) -> f64 {
    const COUNT: usize = 20;
    let rss = || memory_mib(std::process::id(), "VmRSS").expect("own RSS");
    let before = rss();
    let mut kept = Vec::with_capacity(COUNT);
    for _ in 0..COUNT {
        let mut decoder = Decoder::new(info, input, KEYFRAMES_ONLY).unwrap();
        let mut pictures = 0;
        decoder.push(unit, &mut |_| pictures += 1).unwrap();
        assert_eq!(pictures, 1, "a keyframe decodes to one picture at once");
        kept.push(decoder);
    }
    let per_decoder = (rss() - before) / COUNT as f64;
    drop(black_box(kept));
    per_decoder
}

fn fresh_versus_kept(c: &mut Criterion) {
    keep_frame_buffers_out_of_the_heap();
    let input = Catalogue::default_input();
    let mut group = c.benchmark_group("decode_keyframes_1080p");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    for (codec, file) in CLIPS {
        let (info, units) = keyframes(file, usize::MAX);
        assert_eq!(units.len(), 15, "{file}: one keyframe per 2 s GOP");
        println!(
            "decode_keyframes_1080p/{codec}: a kept decoder holds {:.1} MiB between keyframes",
            kept_decoder_mib(&info, &units[1], &input)
        );
        let next = |i: u64| &units[i as usize % units.len()];
        group.bench_function(BenchmarkId::new("fresh", codec), |b| {
            b.iter_custom(|iters| {
                let started = thread_cpu();
                for i in 0..iters {
                    let mut decoder = Decoder::new(&info, &input, KEYFRAMES_ONLY).unwrap();
                    decoder
                        .push(next(i), &mut |frame| drop(black_box(frame)))
                        .unwrap();
                }
                thread_cpu() - started
            })
        });
        let mut decoder = Decoder::new(&info, &input, KEYFRAMES_ONLY).unwrap();
        group.bench_function(BenchmarkId::new("kept", codec), |b| {
            b.iter_custom(|iters| {
                let started = thread_cpu();
                for i in 0..iters {
                    decoder
                        .push(next(i), &mut |frame| drop(black_box(frame)))
                        .unwrap();
                }
                thread_cpu() - started
            })
        });
        let stats = decoder.stats();
        assert_eq!(
            (stats.units_rejected, stats.frames_damaged),
            (0, 0),
            "{file}: the kept decoder decoded every keyframe cleanly"
        );
        assert_eq!(stats.frames_analysed, stats.units_decoded);
    }
    group.finish();
}

criterion_group! {
    name = decoder;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = fresh_versus_kept
}
criterion_main!(decoder);
