//! The one data path, wired once. Every command is this pipeline with different ends:
//!
//! ```text
//! source ──Unit──▶ intake ─▶ decoding (pool; one decoder per feed) ─Sample─▶ frame queue
//!   (file | RTSP | patrol visit)                                              │ newest / in order
//!                     filing (track → rules → cases → store) ◀─ detection (batches across feeds)
//!                                   └─▶ outlet (the command's end: print, annotate, API figures)
//! ```
//!
//! The queue policy is the difference between a recording and a camera: a file source
//! waits for the stages ([`QueuePolicy::Backpressure`], nothing is dropped), a camera
//! never waits ([`QueuePolicy::Freshness`]: no stage works on a unit or frame of a feed
//! when a newer one is already waiting for it; every skip is counted by stage).
//! `replay` and `detect` are [`run_files`], `run` (and so `bench`) is [`live`].

mod decoding;
mod detection;
mod feed;
mod filing;
pub mod live;
mod outlet;
mod picture;
mod recording;
mod store_health;

pub use feed::{Feed, FeedCounters, Sample, Unit};
pub use filing::{Filing, FilingStats};
pub use outlet::{Analysed, FilingSetup, Outlet, OutletError};
pub use picture::{PictureLimits, PictureWatch};
pub use recording::{recorded_camera, recording_filing, CityFiles, RecordingError};
pub use store_health::StoreHealth;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender, TrySendError};

use crate::cases::CaseError;
use crate::config::Camera;
use crate::decode::{DecodeError, DecodeStats, Decoder, Frame, Sampling};
use crate::detect::{DetectError, DetectTimes, Detector};
use crate::evidence::EvidenceError;
use crate::metrics::{Counter, Histogram};
use crate::models::InputSpec;
use crate::source::{FileSource, FileStream, SourceError, StreamInfo, StreamParameters};
use crate::store::StoreError;

pub(crate) use decoding::Message;
use detection::FrameQueue;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{path}: {source}")]
    Decode { path: PathBuf, source: DecodeError },
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error("{path}: no picture could be decoded ({detail})")]
    NothingDecoded { path: PathBuf, detail: String },
    #[error("{feed}: {reason}")]
    Output {
        feed: String,
        reason: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cases(#[from] CaseError),
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
    #[error("a pipeline stage stopped unexpectedly ({0})")]
    StageDied(&'static str),
    #[error(transparent)]
    StillBusy(#[from] StillBusy),
}

/// What a stage does when the next one is busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueuePolicy {
    /// Wait: a recording loses nothing.
    Backpressure,
    /// Newest work wins: older units and frames of the same feed are skipped (counted).
    Freshness,
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub policy: QueuePolicy,
    /// Decode threads; feeds are spread over them, each feed decoded by one.
    pub decode_threads: usize,
    /// Units one feed may have waiting for its decoder, and (with back-pressure) decoded
    /// frames waiting for detection.
    pub per_feed: usize,
    /// Keyframes-only decoders kept between keyframes, over all decode threads.
    pub kept_decoders: usize,
    /// Longest wait for an inference batch to fill once its first frame is there.
    pub max_wait: Duration,
}

impl PipelineConfig {
    /// For recordings: nothing dropped, frames of a file batched together.
    pub fn files() -> Self {
        Self {
            policy: QueuePolicy::Backpressure,
            decode_threads: 1,
            per_feed: 16,
            // A run's files are few: each keeps its decoder.
            kept_decoders: usize::MAX,
            max_wait: Duration::from_millis(50),
        }
    }
}

/// Process-wide counters and stage latencies (per-feed figures live on each [`Feed`]).
#[derive(Default)]
pub struct Metrics {
    pub frames_received: Counter,
    pub frames_decoded: Counter,
    pub frames_analysed: Counter,
    /// Units that found the intake full (the decoders far behind).
    pub skipped_receive: Counter,
    /// Units never decoded: a newer keyframe of their feed was waiting, their feed's queue
    /// overflowed, or their patrol visit had ended.
    pub skipped_decode: Counter,
    /// Decoded frames never detected: replaced by a newer frame of their feed, or stale.
    pub skipped_detect: Counter,
    pub units_queued: Counter,
    pub units_taken: Counter,
    /// Frames handed from detection to filing, and taken by filing.
    pub frames_detected: Counter,
    pub frames_filed: Counter,
    /// RTSP handshakes started.
    pub connection_attempts: Counter,
    /// Sessions started after one that delivered video.
    pub reconnects: Counter,
    pub detections: Counter,
    pub inference_errors: Counter,
    pub batches: Counter,
    pub batch_frames: Counter,
    pub cases_filed: Counter,
    pub cases_closed: Counter,
    pub patrol_visits: Counter,
    pub rotations: Counter,
    pub rotation_errors: Counter,
    pub decode: Histogram,
    pub preprocess: Histogram,
    pub inference: Histogram,
    pub postprocess: Histogram,
    pub filing: Histogram,
    /// From an access unit's arrival to its frame's cases being committed.
    pub latency: Histogram,
    /// Whether the filing's writes reach the store.
    pub store: StoreHealth,
    /// Main-stream evidence pictures of cameras analysed on their sub stream.
    pub evidence_grabs: Arc<crate::evidence::GrabStats>,
}

impl Metrics {
    /// Units waiting for a decoder, all feeds together.
    pub fn units_waiting(&self) -> u64 {
        self.units_queued
            .get()
            .saturating_sub(self.units_taken.get())
    }
}

/// The pipeline has stopped taking units.
#[derive(Debug, thiserror::Error)]
#[error("the pipeline is shutting down")]
pub struct Closed;

/// Where sources hand their units in. Cheap to clone; one per source task.
#[derive(Clone)]
pub struct Intake {
    shards: Arc<[Sender<Message>]>,
    policy: QueuePolicy,
    metrics: Arc<Metrics>,
}

impl Intake {
    /// The decode thread of a feed: always the same one, so a feed's units are decoded in
    /// order by one decoder.
    fn shard(&self, feed: &Feed) -> &Sender<Message> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        feed.id().hash(&mut hasher);
        &self.shards[hasher.finish() as usize % self.shards.len()]
    }

    /// Hands a unit to its decoder: waits for room with back-pressure; with freshness a
    /// full intake skips the unit (counted).
    pub fn push(&self, unit: Unit) -> Result<(), Closed> {
        let shard = self.shard(&unit.feed);
        match self.policy {
            QueuePolicy::Backpressure => shard.send(Message::Unit(unit)).map_err(|_| Closed),
            QueuePolicy::Freshness => match shard.try_send(Message::Unit(unit)) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(Message::Unit(unit))) => {
                    self.metrics.skipped_receive.inc();
                    unit.feed.counters.frames_skipped.inc();
                    Ok(())
                }
                Err(_) => Err(Closed),
            },
        }
    }

    /// The feed has no more units: its decoder gives up the pictures it still holds.
    pub fn end(&self, feed: &Arc<Feed>) -> Result<(), Closed> {
        self.shard(feed)
            .send(Message::End(feed.clone()))
            .map_err(|_| Closed)
    }
}

/// Shared fixtures of the crate's tests.
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::Path;

    use crate::config::{load_cameras, Camera};
    use crate::decode::Frame;
    use crate::models::{Catalogue, InputSpec};
    use crate::rules::EventCatalogue;

    /// The example street camera (`samples/street-static-camera.toml`: a no-parking zone
    /// with a 30 s dwell), the default model's input, and the first picture of its clip.
    pub fn street_sample() -> (Camera, InputSpec, Frame) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let camera = load_cameras(
            &root.join("samples/street-static-camera.toml"),
            &EventCatalogue::builtin(),
        )
        .unwrap()
        .remove(0);
        let input = Catalogue::default_input();
        let clip = root.join("../shared/samples/street-static-h264.mp4");
        let frame = super::first_keyframe(&clip, &input).unwrap();
        (camera, input, frame)
    }
}

/// An intake whose units land in the returned channel, for tests of the sources.
#[cfg(test)]
pub(crate) fn test_intake() -> (Intake, crossbeam_channel::Receiver<Message>) {
    let (tx, rx) = bounded(FRESH_INTAKE);
    let intake = Intake {
        shards: vec![tx].into(),
        policy: QueuePolicy::Freshness,
        metrics: Arc::new(Metrics::default()),
    };
    (intake, rx)
}

/// Units a decode thread's intake holds with freshness before skipping (its feeds' own
/// queues are bounded by `per_feed` besides).
const FRESH_INTAKE: usize = 1024;
/// Detected frames waiting for the filing thread; detection blocks beyond.
const DETECTED_QUEUE: usize = 64;

/// The running stages. Hand units in through [`Pipeline::intake`]; [`Pipeline::finish`]
/// drains every stage in order.
pub struct Pipeline<O: Outlet> {
    intake: Intake,
    decoders: Vec<JoinHandle<Option<PipelineError>>>,
    detection: Vec<JoinHandle<(Detector, Option<DetectError>)>>,
    filing: JoinHandle<(O, Result<(), PipelineError>)>,
    frames: Arc<FrameQueue>,
    pub metrics: Arc<Metrics>,
}

/// What the stages hand back when they have drained.
pub struct Finished<O> {
    /// One per detect worker, in the order they were given.
    pub detectors: Vec<Detector>,
    pub outlet: O,
}

impl<O> Finished<O> {
    /// The detect stage's times, all workers together.
    pub fn detect_times(&self) -> DetectTimes {
        self.detectors
            .iter()
            .map(Detector::times)
            .fold(DetectTimes::default(), |sum, t| DetectTimes {
                inference: sum.inference + t.inference,
                postprocess: sum.postprocess + t.postprocess,
                batches: sum.batches + t.batches,
            })
    }
}

/// A stage still busy when the deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("{0} still busy")]
pub struct StillBusy(pub String);

impl<O: Outlet> Pipeline<O> {
    /// Starts the stages, with a detect worker for each of `detectors` (at least one; each
    /// its own ONNX Runtime session, all of the same model).
    pub fn start(
        config: &PipelineConfig,
        detectors: Vec<Detector>,
        filing: Option<FilingSetup>,
        outlet: O,
        metrics: Arc<Metrics>,
    ) -> Self {
        let input = detectors
            .first()
            .expect("a pipeline needs a detector")
            .model()
            .spec
            .input
            .clone();
        let frames = Arc::new(FrameQueue::new(config.policy, config.per_feed));
        let (detected_tx, detected_rx) = bounded(DETECTED_QUEUE);
        let capacity = match config.policy {
            QueuePolicy::Backpressure => config.per_feed,
            QueuePolicy::Freshness => FRESH_INTAKE,
        };
        let mut shards = Vec::new();
        let mut decoders = Vec::new();
        let threads = config.decode_threads.max(1);
        for i in 0..threads {
            let (tx, rx) = bounded(capacity.max(1));
            shards.push(tx);
            let worker = decoding::DecodeWorker::new(
                config.policy,
                config.per_feed,
                config.kept_decoders.div_ceil(threads),
                input.clone(),
                frames.clone(),
                metrics.clone(),
            );
            decoders.push(spawn(&format!("decode-{i}"), move || worker.run(rx)));
        }
        let detection = detectors
            .into_iter()
            .enumerate()
            .map(|(i, detector)| {
                let (frames, metrics, out) = (frames.clone(), metrics.clone(), detected_tx.clone());
                let (max_wait, policy) = (config.max_wait, config.policy);
                spawn(&format!("detect-{i}"), move || {
                    detection::detect_worker(frames, detector, max_wait, policy, out, metrics)
                })
            })
            .collect();
        drop(detected_tx);
        // The filing thread holds the only receiver: when it stops, detection's sends fail
        // and the stages before it stop in turn.
        let filing = {
            let (rx, metrics, policy) = (detected_rx, metrics.clone(), config.policy);
            spawn("filing", move || {
                outlet::filing_worker(rx, filing, input, outlet, policy, metrics)
            })
        };
        Self {
            intake: Intake {
                shards: shards.into(),
                policy: config.policy,
                metrics: metrics.clone(),
            },
            decoders,
            detection,
            filing,
            frames,
            metrics,
        }
    }

    pub fn intake(&self) -> Intake {
        self.intake.clone()
    }

    /// Figures the live view reads while the pipeline runs.
    pub fn depths(&self) -> QueueDepths {
        QueueDepths {
            frames: self.frames.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// Stops intake, lets the decoders drain what is queued, then detection, then filing.
    /// With a `deadline`, a stage still busy then is reported instead of waited for.
    pub fn finish(
        self,
        deadline: Option<Instant>,
    ) -> Result<Result<Finished<O>, PipelineError>, StillBusy> {
        for shard in self.intake.shards.iter() {
            let _ = shard.send(Message::Stop);
        }
        drop(self.intake);
        let mut busy = Vec::new();
        let mut decode_error = None;
        for handle in self.decoders {
            match join_until(handle, deadline) {
                None => busy.push("decoders"),
                Some(Ok(error)) => decode_error = decode_error.or(error),
                Some(Err(_)) => decode_error = Some(PipelineError::StageDied("decoding")),
            }
        }
        // The decoders are done (or out of time): detection takes what is left and ends.
        self.frames.close();
        let detection: Vec<_> = self
            .detection
            .into_iter()
            .map(|handle| join_until(handle, deadline))
            .collect();
        if detection.iter().any(Option::is_none) {
            busy.push("detection");
        }
        let filing = join_until(self.filing, deadline);
        if filing.is_none() {
            busy.push("filing");
        }
        if !busy.is_empty() {
            busy.dedup();
            return Err(StillBusy(busy.join(", ")));
        }
        let (Some(Ok(detection)), Some(Ok((outlet, filed)))) = (
            detection
                .into_iter()
                .collect::<Option<std::thread::Result<Vec<_>>>>(),
            filing,
        ) else {
            return Ok(Err(PipelineError::StageDied("detection or filing")));
        };
        if let Some(e) = decode_error {
            return Ok(Err(e));
        }
        let (detectors, detect_errors): (Vec<_>, Vec<_>) = detection.into_iter().unzip();
        if let Some(e) = detect_errors.into_iter().flatten().next() {
            return Ok(Err(e.into()));
        }
        Ok(filed.map(|()| Finished { detectors, outlet }))
    }
}

/// Queue depths for the API, without holding the pipeline.
#[derive(Clone)]
pub struct QueueDepths {
    frames: Arc<FrameQueue>,
    metrics: Arc<Metrics>,
}

impl QueueDepths {
    pub fn frames(&self) -> usize {
        self.frames.len()
    }

    pub fn detected(&self) -> u64 {
        let m = &self.metrics;
        m.frames_detected.get().saturating_sub(m.frames_filed.get())
    }
}

pub(crate) fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .expect("spawning a pipeline thread")
}

/// Waits for a thread, until `deadline` if there is one: `None` if it is still running
/// then, `Some(Err)` if it panicked.
pub(crate) fn join_until<T>(
    handle: JoinHandle<T>,
    deadline: Option<Instant>,
) -> Option<std::thread::Result<T>> {
    if let Some(deadline) = deadline {
        while !handle.is_finished() {
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let joined = handle.join();
    if joined.is_err() {
        tracing::error!("a pipeline thread panicked");
    }
    Some(joined)
}

/// One recording to analyse: its opened source, and the camera it was recorded by (for
/// filing; [`Camera::unconfigured`] when only detections are wanted).
pub struct FileFeed {
    pub source: FileSource,
    pub info: StreamInfo,
    pub camera: Camera,
    /// Unix time of the file's first frame.
    pub start: f64,
}

/// What one pass over a file did and where the time went.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub access_units: u64,
    pub corrupt_packets: u64,
    pub ended_early: Option<String>,
    pub decode: DecodeStats,
    pub detect: DetectTimes,
    pub detections: u64,
    pub demux_time: Duration,
    pub output_time: Duration,
    pub wall: Duration,
}

/// Runs recordings through the pipeline, one after the other, with back-pressure: every
/// sampled frame is analysed. Returns the outlet and a summary (or why nothing could be
/// decoded) per file, in order.
pub fn run_files<O: Outlet>(
    files: Vec<FileFeed>,
    detector: Detector,
    filing: Option<FilingSetup>,
    sampling: Sampling,
    outlet: O,
) -> Result<(O, Vec<Result<Summary, PipelineError>>), PipelineError> {
    let started = Instant::now();
    let detect_before = detector.times();
    let metrics = Arc::new(Metrics::default());
    // Filed recordings have their view guarded like live cameras.
    let pictures = filing.is_some().then_some(PictureLimits::RECORDING);
    let pipeline = Pipeline::start(
        &PipelineConfig::files(),
        vec![detector],
        filing,
        outlet,
        metrics.clone(),
    );
    let intake = pipeline.intake();
    let mut fed = Vec::new();
    for mut file in files {
        let feed = Feed::new(file.camera, 0, file.start);
        let feed = Arc::new(match pictures {
            Some(limits) => feed.watching_pictures(limits),
            None => feed,
        });
        let stream: Arc<dyn StreamParameters> = Arc::new(FileStream::new(&file.info));
        let mut summary = Summary::default();
        let mut closed = false;
        loop {
            let t = Instant::now();
            let unit = file.source.next_unit();
            summary.demux_time += t.elapsed();
            match unit {
                Ok(Some(unit)) => {
                    summary.access_units += 1;
                    feed.counters.frames_received.inc();
                    let unit = Unit {
                        feed: feed.clone(),
                        epoch: 0,
                        stream: stream.clone(),
                        sampling,
                        unit,
                        received: Instant::now(),
                    };
                    if intake.push(unit).is_err() {
                        closed = true;
                        break;
                    }
                }
                Ok(None) => break,
                // Opening succeeded, so a read error here means an unreadable body.
                Err(e) => {
                    summary.ended_early = Some(e.to_string());
                    break;
                }
            }
        }
        summary.corrupt_packets = file.source.corrupt_packets;
        summary.ended_early = summary.ended_early.or(file.source.ended_early.take());
        let path = file.source.path().to_path_buf();
        let codec = file.info.codec.name();
        fed.push((feed.clone(), path, codec, summary));
        // A stage has stopped with an error: finishing reports it.
        if closed || intake.end(&feed).is_err() {
            break;
        }
    }
    drop(intake);
    // Without a deadline every stage is waited for, so none is reported busy.
    let finished = pipeline.finish(None)??;
    let after = finished.detect_times();
    let detect = DetectTimes {
        inference: after.inference - detect_before.inference,
        postprocess: after.postprocess - detect_before.postprocess,
        batches: after.batches - detect_before.batches,
    };
    let output_time = metrics.filing.sum();
    let summaries = fed
        .into_iter()
        .map(|(feed, path, codec, mut summary)| {
            summary.decode = feed.decode_stats();
            if let Some(detail) = nothing_decoded(&summary, codec) {
                return Err(PipelineError::NothingDecoded { path, detail });
            }
            summary.detections = feed.counters.detections.get();
            summary.detect = detect;
            summary.output_time = output_time;
            summary.wall = started.elapsed();
            Ok(summary)
        })
        .collect();
    Ok((finished.outlet, summaries))
}

/// Why a file gave no picture, if it gave none.
fn nothing_decoded(summary: &Summary, codec: &str) -> Option<String> {
    if summary.decode.frames_decoded > 0 {
        return None;
    }
    Some(
        match (&summary.ended_early, summary.decode.units_rejected) {
            (Some(e), _) => e.clone(),
            (None, n) if n > 0 => {
                format!("the {codec} decoder rejected all {n} access units: not valid {codec} data")
            }
            _ => format!("{} access units read", summary.access_units),
        },
    )
}

/// The first keyframe of a clip, decoded and preprocessed for a model with `input`: a
/// realistic frame for benchmarks and tests of the later stages.
pub fn first_keyframe(path: &Path, input: &InputSpec) -> Result<Frame, PipelineError> {
    let (mut source, info) = FileSource::open(path)?;
    let decode_error = |source| PipelineError::Decode {
        path: path.to_path_buf(),
        source,
    };
    let mut decoder = Decoder::new(&info, input, Sampling::Keyframes { min_interval: None })
        .map_err(decode_error)?;
    let mut frame = None;
    while frame.is_none() {
        let unit = source
            .next_unit()?
            .ok_or_else(|| PipelineError::NothingDecoded {
                path: path.to_path_buf(),
                detail: "no keyframe in the file".into(),
            })?;
        decoder
            .push(&unit, &mut |f| {
                frame.get_or_insert(f);
            })
            .map_err(decode_error)?;
    }
    Ok(frame.expect("the loop ends with a frame"))
}
