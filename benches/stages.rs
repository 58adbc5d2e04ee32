//! Micro-benchmarks of single pipeline stages, each on a realistic input of the size its
//! name says: decoding one 1080p keyframe (H.264, H.265), the YOLOX-Nano postprocess
//! (head-output decode and NMS, without the model), one tracker update, one zone test,
//! one sample through the case engine, and one camera snapshot (a 1080p frame scaled
//! down and encoded as JPEG, with the resizes it was chosen against). The end-to-end comparisons (keyframes-only
//! versus all-frames decode, letterbox preprocessing, model inference) live in
//! `benches/pipeline.rs`.
//!
//!     cargo bench --bench stages
//!
//! Synthetic inputs come from a fixed-seed generator, so every run measures the same work.

mod common;

use std::hint::black_box;
use std::time::Duration;

use cgbot::annotate::encode_jpeg;
use cgbot::cases::{CaseEngine, Categories, Status};
use cgbot::config::CameraInfo;
use cgbot::decode::{Decoder, LumaSignature, Picture, Sampling, ViewSignature};
use cgbot::detect::nms::nms;
use cgbot::detect::{Detection, DetectorOptions, YoloxGrid};
use cgbot::geometry::{anchor_point, Polygon};
use cgbot::models::Catalogue;
use cgbot::pipeline::live::{encode_snapshot, SNAPSHOT_QUALITY, SNAPSHOT_WIDTH};
use cgbot::rules::{EventCatalogue, RuleFields, Sighting, ZoneRules};
use cgbot::scene::{Scene, SceneConfig, SceneGrid};
use cgbot::track::{Appearance, Observation, Tracker, TrackerConfig};
use common::keyframes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode};

const WIDTH: u32 = 1920;
const HEIGHT: u32 = 1080;

/// xorshift64*: a fixed-seed generator, so inputs are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, p: f32) -> bool {
        self.range(0.0, 1.0) < p
    }
}

/// The colour histogram of a 4 × 4 patch of `colour` with ±12 levels of noise, as the
/// tracker gets from a model input (8-bit levels).
fn appearance(rng: &mut Rng, colour: [f32; 3]) -> Appearance {
    let mut patch = vec![0; 3 * 16];
    for (c, plane) in patch.chunks_exact_mut(16).enumerate() {
        plane
            .iter_mut()
            .for_each(|v| *v = (colour[c] + rng.range(-12.0, 12.0)).clamp(0.0, 255.0) as u8);
    }
    Appearance::from_levels(&patch, 4, 4, [0.0, 0.0, 4.0, 4.0]).expect("non-empty patch")
}

fn detection(label: &str, score: f32, bbox: [f32; 4]) -> Detection {
    Detection {
        label: label.to_string(),
        class: 0,
        score,
        bbox,
    }
}

// ---------------------------------------------------------------------------------------
// Decode

/// One keyframe pushed through the decoder keyframes-only, as a camera sampled every GOP
/// or more is decoded. The decoder preprocesses each analysed picture for the model too;
/// what is timed here is decode alone (libavcodec's send/receive, as the decoder's own
/// `decode_time` counts it), the letterbox being `preprocess_letterbox_1080p_yuv420p_to_416`
/// in `benches/pipeline.rs`.
fn keyframe_decode(c: &mut Criterion) {
    let input = Catalogue::default_input();
    let mut group = c.benchmark_group("decode_one_keyframe_1080p");
    group.sampling_mode(SamplingMode::Flat).sample_size(20);
    for (codec, file) in [
        ("h264", "people-walking-1080p-h264.mp4"),
        ("h265", "people-walking-1080p-h265.mp4"),
    ] {
        // A keyframe's decode time follows its size, and the clips open on a small one
        // (117 kB H.264, 19 kB H.265: half the time of the others). Timed is the
        // median-sized of the first five (285 kB H.264, 142 kB H.265), which are the
        // keyframes the 10 s window of `benches/pipeline.rs` decodes.
        let (info, mut units) = keyframes(file, 5);
        units.sort_by_key(|u| u.packet.size());
        let unit = units.swap_remove(2);
        assert_eq!((info.width, info.height), (WIDTH, HEIGHT));
        let sampling = Sampling::Keyframes { min_interval: None };
        let mut decoder = Decoder::new(&info, &input, sampling).unwrap();
        let mut frames = 0;
        decoder.push(&unit, &mut |_| frames += 1).unwrap();
        let stats = decoder.stats();
        assert_eq!(
            (frames, stats.frames_decoded, stats.frames_damaged),
            (1, 1, 0)
        );
        group.bench_function(codec, |b| {
            b.iter_custom(|iters| {
                let before = decoder.stats().decode_time;
                for _ in 0..iters {
                    decoder
                        .push(&unit, &mut |frame| drop(black_box(frame)))
                        .unwrap();
                }
                decoder.stats().decode_time - before
            })
        });
    }
    group.finish();
}

/// The first keyframe of a sample clip, decoded as the daemon samples it.
fn first_picture(clip: &str) -> Picture {
    let (info, units) = keyframes(clip, 1);
    let sampling = Sampling::Keyframes { min_interval: None };
    let mut decoder = Decoder::new(&info, &Catalogue::default_input(), sampling).unwrap();
    let mut picture = None;
    let mut keep = |frame: cgbot::decode::Frame| {
        picture.get_or_insert(frame.picture);
    };
    decoder.push(&units[0], &mut keep).unwrap();
    decoder.finish(&mut keep).unwrap();
    picture.expect("a decoded keyframe")
}

/// What a camera watching for new stationary things (`new_object`) adds to each analysed
/// 1080p sample: the scene grid read from the picture, and the whole scene step (grid,
/// learning, regions, boxes) on a learned scene with ten model detections.
fn scene_sample(c: &mut Criterion) {
    let picture = first_picture("people-walking-1080p-h264.mp4");
    let mut rng = Rng(7);
    let detections: Vec<Detection> = (0..10)
        .map(|_| {
            let (x, y) = (rng.below(1700) as f32, rng.below(900) as f32);
            Detection {
                label: "person".into(),
                class: 0,
                score: 0.7,
                bbox: [x, y, x + 120.0, y + 180.0],
            }
        })
        .collect();
    let mut scene = Scene::new(SceneConfig::default());
    for _ in 0..SceneConfig::default().learn_samples {
        scene.sample(&picture, &detections);
    }
    let mut group = c.benchmark_group("scene_1080p");
    group.bench_function("grid", |b| b.iter(|| SceneGrid::of(black_box(&picture))));
    group.bench_function("sample", |b| {
        b.iter(|| scene.sample(black_box(&picture), black_box(&detections)))
    });
    group.finish();
}

/// The two picture signatures every analysed 1080p frame gets while a camera is watched
/// live: the luma lattice (frozen/dark) and the view grid (the view guard).
fn picture_signatures(c: &mut Criterion) {
    let picture = first_picture("people-walking-1080p-h264.mp4");
    let mut group = c.benchmark_group("picture_signature_1080p");
    group.bench_function("luma", |b| {
        b.iter(|| LumaSignature::of(black_box(&picture)))
    });
    group.bench_function("view", |b| {
        b.iter(|| ViewSignature::of(black_box(&picture)))
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------
// Detect: YOLOX postprocess

const OBJECTS: usize = 20;
/// Candidates above the threshold per object: the model gives 6–7 on the sample clips
/// and images at the default threshold 0.3.
const CANDIDATES_PER_OBJECT: usize = 7;
const STRIDES: [u32; 3] = [8, 16, 32];
const INPUT: u32 = 416;

/// Index of grid cell (`gx`, `gy`) of `level` in the head output (stride order).
fn anchor_index(level: usize, gx: i64, gy: i64) -> Option<usize> {
    let side = |l: usize| (INPUT / STRIDES[l]) as i64;
    let n = side(level);
    if !(0..n).contains(&gx) || !(0..n).contains(&gy) {
        return None;
    }
    let before: i64 = (0..level).map(|l| side(l) * side(l)).sum();
    Some((before + gy * n + gx) as usize)
}

/// A YOLOX-Nano head output (3549 × 85) for a busy 1080p street letterboxed to 416 × 234:
/// `OBJECTS` objects of 8 classes and 3 scales, each decoding to `CANDIDATES_PER_OBJECT`
/// candidates on neighbouring cells with slightly different boxes; 20 cells whose
/// objectness passes the threshold but whose score does not; background elsewhere.
fn yolox_head_output(classes: usize, rng: &mut Rng) -> Vec<f32> {
    let row = 5 + classes;
    let anchors: usize = STRIDES
        .iter()
        .map(|s| ((INPUT / s) * (INPUT / s)) as usize)
        .sum();
    let mut output = vec![0.0f32; anchors * row];
    for values in output.chunks_exact_mut(row) {
        values[0] = rng.range(0.0, 1.0);
        values[1] = rng.range(0.0, 1.0);
        values[2] = rng.range(-1.0, 1.0);
        values[3] = rng.range(-1.0, 1.0);
        values[4] = rng.range(0.0, 0.05);
        values[5..]
            .iter_mut()
            .for_each(|v| *v = rng.range(0.0, 0.3));
    }
    let mut used = vec![false; anchors];
    // The 3 × 3 neighbourhood less two corners.
    let cells = [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1), (1, -1), (-1, 1)];
    let object_classes = [0, 0, 0, 2, 2, 1, 3, 7]; // person, car, bicycle, motorcycle, truck
    let mut placed = 0;
    while placed < OBJECTS {
        let level = placed % STRIDES.len();
        let stride = STRIDES[level] as f32;
        let (w, h) = (stride * rng.range(2.0, 5.0), stride * rng.range(2.0, 5.0));
        let (cx, cy) = (
            rng.range(w / 2.0, 416.0 - w / 2.0),
            rng.range(h / 2.0, 234.0),
        );
        let (gx, gy) = ((cx / stride) as i64, (cy / stride) as i64);
        let indices: Option<Vec<usize>> = cells
            .iter()
            .map(|(dx, dy)| anchor_index(level, gx + dx, gy + dy).filter(|&i| !used[i]))
            .collect();
        let Some(indices) = indices else { continue };
        let class = object_classes[placed % object_classes.len()];
        for (k, (&i, (dx, dy))) in indices.iter().zip(cells).enumerate() {
            used[i] = true;
            let values = &mut output[i * row..(i + 1) * row];
            let jitter = |rng: &mut Rng, size: f32| rng.range(-0.04, 0.04) * size;
            values[0] = (cx + jitter(rng, w)) / stride - (gx + dx) as f32;
            values[1] = (cy + jitter(rng, h)) / stride - (gy + dy) as f32;
            values[2] = ((w + jitter(rng, w)) / stride).ln();
            values[3] = ((h + jitter(rng, h)) / stride).ln();
            // Objectness ≥ 0.55 and class score ≥ 0.6: every candidate scores ≥ 0.33.
            values[4] = if k == 0 {
                rng.range(0.7, 0.95)
            } else {
                rng.range(0.55, 0.8)
            };
            values[5 + class] = rng.range(0.6, 0.9);
        }
        placed += 1;
    }
    let mut near_misses = 0;
    while near_misses < 20 {
        let i = rng.below(anchors);
        if used[i] {
            continue;
        }
        used[i] = true;
        let values = &mut output[i * row..(i + 1) * row];
        values[4] = rng.range(0.3, 0.5);
        values[5 + rng.below(classes)] = rng.range(0.3, 0.55); // score < 0.28
        near_misses += 1;
    }
    output
}

fn yolox_postprocess(c: &mut Criterion) {
    let input = Catalogue::default_input();
    let classes = Catalogue::with_dirs(vec![])
        .unwrap()
        .default_model()
        .unwrap()
        .labels
        .len();
    let options = DetectorOptions::default();
    let (conf, iou) = (options.conf, options.nms_iou);
    let grid = YoloxGrid::new(input.width, input.height, &STRIDES);
    assert_eq!((grid.anchors(), classes), (3549, 80));
    let output = yolox_head_output(classes, &mut Rng(0x5eed_1234));
    let candidates = grid.decode(&output, classes, conf);
    assert_eq!(candidates.len(), OBJECTS * CANDIDATES_PER_OBJECT);
    assert_eq!(nms(candidates.clone(), iou).len(), OBJECTS);

    let mut group = c.benchmark_group("yolox_nano_postprocess_416");
    group.bench_function("decode_3549x85_to_140_candidates", |b| {
        b.iter(|| grid.decode(black_box(&output), classes, conf))
    });
    group.bench_function("nms_140_candidates_to_20", |b| {
        b.iter_batched(
            || candidates.clone(),
            |candidates| nms(candidates, iou),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("decode_and_nms_3549x85_to_20", |b| {
        b.iter(|| nms(grid.decode(black_box(&output), classes, conf), iou))
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------
// Track

/// One object of a simulated street, in 1080p source pixels.
struct Object {
    label: &'static str,
    bbox: [f32; 4],
    /// Pixels per sample.
    velocity: [f32; 2],
    colour: [f32; 3],
}

/// A street sampled once a second: parked cars, a few moving cars and pedestrians. Each
/// sample, every object moves by its velocity (parked ones jitter by a pixel or two), 3 %
/// leave and are replaced by newcomers elsewhere, and the detector misses 5 %.
struct Street {
    rng: Rng,
    objects: Vec<Object>,
    ts: f64,
}

impl Street {
    fn new(seed: u64, objects: usize) -> Street {
        let mut rng = Rng(seed);
        let objects = (0..objects).map(|_| Street::spawn(&mut rng)).collect();
        Street {
            rng,
            objects,
            ts: 0.0,
        }
    }

    fn spawn(rng: &mut Rng) -> Object {
        let kind = rng.range(0.0, 1.0);
        let (label, w, h, velocity) = if kind < 0.3 {
            let (w, h) = (rng.range(180.0, 260.0), rng.range(100.0, 150.0));
            ("car", w, h, [0.0, 0.0])
        } else if kind < 0.4 {
            let speed = rng.range(60.0, 150.0) * if rng.chance(0.5) { 1.0 } else { -1.0 };
            let (w, h) = (rng.range(180.0, 260.0), rng.range(100.0, 150.0));
            ("car", w, h, [speed, rng.range(-5.0, 5.0)])
        } else {
            let speed = rng.range(10.0, 40.0) * if rng.chance(0.5) { 1.0 } else { -1.0 };
            let (w, h) = (rng.range(40.0, 70.0), rng.range(100.0, 180.0));
            ("person", w, h, [speed, rng.range(-10.0, 10.0)])
        };
        let x = rng.range(0.0, WIDTH as f32 - w);
        let y = rng.range(300.0, HEIGHT as f32 - h);
        let colour = [
            rng.range(0.0, 255.0),
            rng.range(0.0, 255.0),
            rng.range(0.0, 255.0),
        ];
        Object {
            label,
            bbox: [x, y, x + w, y + h],
            velocity,
            colour,
        }
    }

    /// The next sample: its time and what the detector reports.
    fn step(&mut self) -> (f64, Vec<Observation>) {
        self.ts += 1.0;
        let rng = &mut self.rng;
        let mut observations = Vec::with_capacity(self.objects.len());
        for object in &mut self.objects {
            let [dx, dy] = object.velocity;
            let (dx, dy) = (dx + rng.range(-2.0, 2.0), dy + rng.range(-2.0, 2.0));
            object.bbox = [
                object.bbox[0] + dx,
                object.bbox[1] + dy,
                object.bbox[2] + dx,
                object.bbox[3] + dy,
            ];
            let [x1, y1, x2, y2] = object.bbox;
            let outside = x2 < 0.0 || x1 > WIDTH as f32 || y2 < 0.0 || y1 > HEIGHT as f32;
            if outside || rng.chance(0.03) {
                *object = Street::spawn(rng);
            }
            if rng.chance(0.05) {
                continue;
            }
            let bbox = object.bbox.map(|v| v + rng.range(-3.0, 3.0));
            observations.push(Observation {
                detection: detection(object.label, rng.range(0.4, 0.9), bbox),
                appearance: Some(appearance(rng, object.colour)),
            });
        }
        (self.ts, observations)
    }
}

fn track_update(c: &mut Criterion) {
    let config = TrackerConfig {
        // What the rules stage adds for the illegal-parking labels.
        label_groups: vec![["car", "truck", "bus", "motorcycle"]
            .map(String::from)
            .to_vec()],
        ..TrackerConfig::default()
    };
    let mut tracker = Tracker::new(config, WIDTH, HEIGHT);
    let mut street = Street::new(0x7ac_4e4, 50);
    for _ in 0..30 {
        let (ts, observations) = street.step();
        tracker.update(ts, observations);
    }
    assert!((45..=70).contains(&tracker.tracks().len()));

    let mut group = c.benchmark_group("track_update_1080p_1_sample_per_s");
    group.bench_function("50_objects", |b| {
        b.iter_batched(
            || street.step(),
            |(ts, observations)| tracker.update(ts, observations).len(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------
// Rules: zone test

/// A kerbside zone with a saw-tooth inner edge and a notch: concave, 12 vertices.
fn concave_zone() -> Polygon {
    Polygon::new(vec![
        [0.04, 0.62],
        [0.22, 0.55],
        [0.30, 0.66],
        [0.42, 0.58],
        [0.50, 0.70],
        [0.62, 0.60],
        [0.74, 0.72],
        [0.96, 0.64],
        [0.96, 0.98],
        [0.60, 0.86],
        [0.40, 0.98],
        [0.04, 0.90],
    ])
    .unwrap()
}

/// Which of 50 boxes stand in the zone, as the rules stage tests them: the box's
/// bottom-centre, normalised, in the polygon.
fn zone_test(c: &mut Criterion) {
    let zone = concave_zone();
    assert_eq!(zone.vertices().len(), 12);
    let mut rng = Rng(0x20e);
    let boxes: Vec<[f32; 4]> = (0..50)
        .map(|_| {
            let (w, h) = (rng.range(40.0, 260.0), rng.range(100.0, 180.0));
            let (x, y) = (
                rng.range(0.0, WIDTH as f32 - w),
                rng.range(300.0, 1080.0 - h),
            );
            [x, y, x + w, y + h]
        })
        .collect();
    let inside = |boxes: &[[f32; 4]]| {
        boxes
            .iter()
            .filter(|b| zone.contains(anchor_point(**b, WIDTH, HEIGHT)))
            .count()
    };
    assert!((10..=40).contains(&inside(&boxes)), "a mix of in and out");

    let mut group = c.benchmark_group("zone_test_concave_12_vertices");
    group.bench_function("50_boxes", |b| b.iter(|| inside(black_box(&boxes))));
    group.finish();
}

// ---------------------------------------------------------------------------------------
// Cases

/// One sample through the case engine in steady state: 20 sightings (8 and 6 parked cars
/// on two kerbs, 6 litter items on a plaza) matching 15 cases that are already filed, so
/// the sample updates them and wants no evidence (evidence is wanted when a case is
/// first seen, filed, reopened or closed — all of which happen in the setup).
fn cases_steady_state(c: &mut Criterion) {
    let events = EventCatalogue::builtin();
    let zone = |id: &str, vertices: Vec<[f64; 2]>, event: &str| ZoneRules {
        id: id.to_string(),
        name: id.to_string(),
        polygon: Polygon::new(vertices).unwrap(),
        rules: vec![events.resolve(event, &RuleFields::default()).unwrap()],
    };
    let zones = vec![
        zone(
            "kerb-north",
            vec![[0.0, 0.3], [1.0, 0.3], [1.0, 0.5], [0.0, 0.5]],
            "illegal_parking",
        ),
        zone(
            "kerb-south",
            vec![[0.0, 0.8], [1.0, 0.8], [1.0, 1.0], [0.0, 1.0]],
            "illegal_parking",
        ),
        zone(
            "plaza",
            vec![[0.1, 0.55], [0.9, 0.55], [0.9, 0.75], [0.1, 0.75]],
            "exposed_litter",
        ),
    ];
    let t0 = 1.7e9;
    let mut rng = Rng(0xca5e);
    let mut sightings = Vec::new();
    let rows = [
        (0, 8, "car", 0.40, 220.0, 120.0),
        (1, 6, "truck", 0.92, 230.0, 140.0),
        (2, 6, "bottle", 0.70, 30.0, 60.0),
    ];
    for (zone, count, label, bottom, w, h) in rows {
        for k in 0..count {
            let x = 40.0 + k as f32 * (WIDTH as f32 - 80.0) / count as f32;
            let y2 = bottom * HEIGHT as f32;
            let colour = [rng.range(0.0, 255.0), rng.range(0.0, 255.0), 128.0];
            sightings.push(Sighting {
                zone,
                rule: 0,
                track_id: sightings.len() as u64 + 1,
                label: label.to_string(),
                score: rng.range(0.5, 0.9),
                bbox: [x, y2 - h, x + w, y2],
                appearance: Some(appearance(&mut rng, colour)),
                stationary_since: t0,
                applies: true,
            });
        }
    }
    assert_eq!(sightings.len(), 20);

    let camera = CameraInfo {
        id: "bench-cam".into(),
        name: "Bench street".into(),
        ..CameraInfo::default()
    };
    let categories = Categories::builtin();
    let mut engine = CaseEngine::new(camera, 8 * 3600, zones, categories, vec![]).unwrap();
    // A sample every 2 s until the parked cars reach their 180 s dwell and are filed.
    let mut ts = t0;
    while ts <= t0 + 200.0 {
        engine.process(ts, &sightings);
        ts += 2.0;
    }
    let changes = engine.process(ts, &sightings);
    assert_eq!(changes.upserts.len(), 15);
    assert!(changes.upserts.iter().all(|c| c.status == Status::Filed));
    assert!(changes.evidence_wanted.is_empty() && changes.events.is_empty());

    let mut group = c.benchmark_group("cases_process_steady_state");
    group.bench_function("20_sightings_3_zones_15_filed_cases", |b| {
        b.iter(|| {
            ts += 2.0;
            engine.process(ts, black_box(&sightings))
        })
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------
// Snapshot: the daemon's latest picture of a camera

/// One camera snapshot from a decoded 1080p H.264 keyframe (YUV 4:2:0): scaled down to
/// 480 × 270 and encoded at quality 75 (`total`), and its parts; the same from a 768 × 432
/// keyframe, a sub stream's size, whose boxes are of uneven widths. The scaling candidates:
/// the box filter over the YUV planes that the daemon uses; libswscale straight from YUV
/// to RGB at the small size (area, fast bilinear; a new context per call, as the outlet
/// would need one per source size and format); the full-size RGB conversion the evidence
/// images use, then the `image` crate's resize (triangle) or thumbnail (box). The
/// encoders: `jpeg-encoder` (`annotate::encode_jpeg`), which the daemon uses for snapshots and
/// evidence, given RGB or the YCbCr planes, and the `image` crate's; and both on the whole
/// 1080p frame an evidence image is.
fn snapshot(c: &mut Criterion) {
    use ffmpeg_next::format::Pixel;
    use ffmpeg_next::software::scaling;
    use ffmpeg_next::util::frame::Video as VideoFrame;
    use image::imageops::{self, FilterType};

    let picture = &first_picture("people-walking-1080p-h264.mp4");
    assert_eq!((picture.width(), picture.height()), (WIDTH, HEIGHT));
    let source = picture.as_frame();
    let (w, h) = (SNAPSHOT_WIDTH, SNAPSHOT_WIDTH * HEIGHT / WIDTH);
    let small = picture.thumbnail(SNAPSHOT_WIDTH).unwrap();
    assert_eq!(small.dimensions(), (w, h));

    let mut group = c.benchmark_group("snapshot_1080p");
    group.bench_function("total", |b| {
        b.iter(|| encode_snapshot(black_box(picture), SNAPSHOT_WIDTH, SNAPSHOT_QUALITY).unwrap())
    });
    // A sub stream's size: boxes of uneven widths (768 → 480).
    let sub_picture = &first_picture("people-walking.mp4");
    group.bench_function("total_768x432", |b| {
        b.iter(|| {
            encode_snapshot(black_box(sub_picture), SNAPSHOT_WIDTH, SNAPSHOT_QUALITY).unwrap()
        })
    });
    group.bench_function("scale_box_yuv_768x432", |b| {
        b.iter(|| black_box(sub_picture).thumbnail(SNAPSHOT_WIDTH).unwrap())
    });
    group.bench_function("scale_box_yuv", |b| {
        b.iter(|| black_box(picture).thumbnail(SNAPSHOT_WIDTH).unwrap())
    });
    for (name, flags) in [
        ("scale_swscale_area", scaling::Flags::AREA),
        ("scale_swscale_fast_bilinear", scaling::Flags::FAST_BILINEAR),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut scaler = scaling::Context::get(
                    source.format(),
                    WIDTH,
                    HEIGHT,
                    Pixel::RGB24,
                    w,
                    h,
                    flags,
                )
                .unwrap();
                let mut rgb = VideoFrame::new(Pixel::RGB24, w, h);
                scaler.run(black_box(source), &mut rgb).unwrap();
                rgb
            })
        });
    }
    group.bench_function("scale_to_rgb_then_image_resize_triangle", |b| {
        b.iter(|| {
            let rgb = black_box(picture).to_rgb().unwrap();
            imageops::resize(&rgb, w, h, FilterType::Triangle)
        })
    });
    group.bench_function("scale_to_rgb_then_image_thumbnail", |b| {
        b.iter(|| {
            let rgb = black_box(picture).to_rgb().unwrap();
            imageops::thumbnail(&rgb, w, h)
        })
    });
    group.bench_function("encode_image_crate", |b| {
        b.iter(|| {
            let mut jpeg = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, SNAPSHOT_QUALITY)
                .encode_image(black_box(&small))
                .unwrap();
            jpeg
        })
    });
    group.bench_function("encode_jpeg_encoder", |b| {
        b.iter(|| encode_jpeg(black_box(&small), SNAPSHOT_QUALITY).unwrap())
    });
    // The same encoder given the box-filtered YCbCr planes, with no RGB in between.
    let small_ycbcr = picture.small(SNAPSHOT_WIDTH).unwrap();
    group.bench_function("encode_jpeg_encoder_ycbcr", |b| {
        b.iter(|| {
            black_box(&small_ycbcr)
                .encode_jpeg(SNAPSHOT_QUALITY)
                .unwrap()
        })
    });
    // An evidence image is the whole frame: the same two encoders at 1080p, quality 85.
    let full = picture.to_rgb().unwrap();
    group.bench_function("evidence_encode_image_crate", |b| {
        b.iter(|| {
            let mut jpeg = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
                .encode_image(black_box(&full))
                .unwrap();
            jpeg
        })
    });
    group.bench_function("evidence_encode_jpeg_encoder", |b| {
        b.iter(|| encode_jpeg(black_box(&full), 85).unwrap())
    });
    let size = encode_snapshot(picture, SNAPSHOT_WIDTH, SNAPSHOT_QUALITY)
        .unwrap()
        .len();
    println!("snapshot_1080p: {w} x {h} JPEG of {size} bytes");
    group.finish();
}

criterion_group! {
    name = stages;
    // Short runs: these are sub-millisecond stages (decode aside, which uses flat sampling
    // of 20 samples); `cargo bench --bench stages` takes well under a minute.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = keyframe_decode, picture_signatures, scene_sample, yolox_postprocess, track_update, zone_test, cases_steady_state, snapshot
}
criterion_main!(stages);
