//! Hot-path benchmarks on the shared 1080p samples: decoding only keyframes versus every
//! frame (for the same analysed frames), letterbox preprocessing, and YOLOX-Nano detection
//! of one image on the CPU.
//!
//!     cargo bench --bench pipeline            (or: make bench)

mod common;

use std::time::Duration;

use cgbot::decode::{Decoder, Frame, Preprocessor, Sampling};
use cgbot::detect::{Detector, DetectorOptions};
use cgbot::models::Catalogue;
use cgbot::source::{AccessUnit, FileSource, StreamInfo};
use common::sample;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// 5 GOPs of 2 s: 10 s of a 25 fps clip, 250 access units.
const GOPS: usize = 5;

/// The access units of the first `GOPS` GOPs, in decode order (up to the next keyframe).
fn demux(name: &str) -> (StreamInfo, Vec<AccessUnit>) {
    let (mut source, info) = FileSource::open(&sample(name)).expect("open sample");
    let mut units: Vec<AccessUnit> = Vec::new();
    loop {
        let unit = source.next_unit().expect("read").expect("enough units");
        if unit.keyframe && units.iter().filter(|u| u.keyframe).count() == GOPS {
            return (info, units);
        }
        units.push(unit);
    }
}

fn decode_all(info: &StreamInfo, units: &[AccessUnit], sampling: Sampling) -> Vec<Frame> {
    let input = Catalogue::default_input();
    let mut decoder = Decoder::new(info, &input, sampling).unwrap();
    let mut frames = Vec::new();
    let mut emit = |f: Frame| frames.push(f);
    for unit in units {
        decoder.push(unit, &mut emit).unwrap();
    }
    decoder.finish(&mut emit).unwrap();
    frames
}

/// The same 5 analysed frames (one every 2 s), once decoding all units of 5 GOPs and once
/// decoding only their 5 keyframes.
fn keyframe_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_10s_1080p25_analyse_every_2s");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    for (codec, file) in [
        ("h264", "people-walking-1080p-h264.mp4"),
        ("h265", "people-walking-1080p-h265.mp4"),
    ] {
        let (info, units) = demux(file);
        group.throughput(Throughput::Elements(units.len() as u64));
        for (mode, sampling) in [
            ("all_frames", Sampling::EveryNth(50)),
            ("keyframes_only", Sampling::Keyframes { min_interval: None }),
        ] {
            assert_eq!(decode_all(&info, &units, sampling).len(), GOPS);
            group.bench_with_input(BenchmarkId::new(mode, codec), &units, |b, units| {
                b.iter(|| decode_all(&info, units, sampling))
            });
        }
    }
    group.finish();
}

fn preprocess_and_detect(c: &mut Criterion) {
    let catalogue = Catalogue::load(None).unwrap();
    let model = catalogue
        .resolve(None)
        .expect("default model: run `make setup`");
    // A main stream's 1080p and a sub stream's size (768 × 432, people-walking.mp4).
    for (clip, size) in [
        ("people-walking-1080p-h264.mp4", "1080p"),
        ("people-walking.mp4", "432p"),
    ] {
        let (info, units) = demux(clip);
        let frames = decode_all(&info, &units[..1], Sampling::All);
        let picture = frames[0].picture.as_frame();
        let mut preprocess = Preprocessor::new(model.spec.input.clone());
        c.bench_function(
            &format!("preprocess_letterbox_{size}_yuv420p_to_416"),
            |b| b.iter(|| preprocess.run(picture).unwrap()),
        );
    }

    let image = FileSource::open(&sample("dog-bicycle-truck.jpg"))
        .unwrap()
        .1;
    let input = {
        let (mut source, _) = FileSource::open(&sample("dog-bicycle-truck.jpg")).unwrap();
        let unit = source.next_unit().unwrap().unwrap();
        let mut decoder = Decoder::new(&image, &model.spec.input, Sampling::All).unwrap();
        let mut frames = Vec::new();
        decoder.push(&unit, &mut |f| frames.push(f)).unwrap();
        decoder.finish(&mut |f| frames.push(f)).unwrap();
        frames.remove(0).input
    };
    for threads in [1, 2] {
        let options = DetectorOptions {
            threads,
            ..DetectorOptions::default()
        };
        let mut detector = Detector::new(model.clone(), options).unwrap();
        c.bench_function(
            &format!("detect_yolox_nano_one_image_{threads}_threads"),
            |b| b.iter(|| detector.detect(&[&input]).unwrap()),
        );
    }
}

criterion_group!(benches, keyframe_decode, preprocess_and_detect);
criterion_main!(benches);
