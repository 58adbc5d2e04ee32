//! Wiring of the stages: source → decode (its own thread) → bounded queue → batched
//! detect → the caller's sink. `detect` and `replay` are this one path with different ends.

mod filing;
pub mod live;

pub use filing::{Filing, FilingStats};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError};

use crate::cases::CaseError;
use crate::decode::{DecodeError, DecodeStats, Decoder, Frame, Sampling};
use crate::detect::{DetectError, DetectTimes, Detection, Detector};
use crate::evidence::EvidenceError;
use crate::models::InputSpec;
use crate::source::{FileSource, SourceError, StreamInfo};
use crate::store::StoreError;

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
    #[error("{path}: {reason}")]
    Sink { path: PathBuf, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cases(#[from] CaseError),
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
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

/// How the decoder thread hands frames to detection.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Frames waiting between decode and detect; the decoder blocks when it is full.
    pub queue: usize,
    /// Longest wait for a batch to fill once its first frame is there.
    pub max_wait: Duration,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            queue: 16,
            max_wait: Duration::from_millis(50),
        }
    }
}

/// Called for every analysed frame, in order, with its detections.
pub type Sink<'a> = dyn FnMut(&Frame, &[Detection]) -> Result<(), String> + 'a;

/// Runs the whole path over one opened file (clip or still image).
pub fn analyse_file(
    (mut source, info): (FileSource, StreamInfo),
    detector: &mut Detector,
    sampling: Sampling,
    batching: Batching,
    sink: &mut Sink<'_>,
) -> Result<Summary, PipelineError> {
    let started = Instant::now();
    let path = source.path().to_path_buf();
    let input_spec = detector.model().spec.input.clone();
    let codec_name = info.codec.name();
    let (tx, rx) = bounded::<Frame>(batching.queue.max(1));
    let detect_before = detector.times();

    let (decode_side, detect_side) = std::thread::scope(|scope| {
        let decoder_thread = scope.spawn(move || -> Result<Summary, DecodeError> {
            let mut decoder = Decoder::new(&info, &input_spec, sampling)?;
            let mut summary = Summary::default();
            let receiver_gone = std::cell::Cell::new(false);
            let mut emit = |frame: Frame| {
                if tx.send(frame).is_err() {
                    receiver_gone.set(true);
                }
            };
            loop {
                let t = Instant::now();
                let unit = source.next_unit();
                summary.demux_time += t.elapsed();
                match unit {
                    Ok(Some(unit)) => {
                        summary.access_units += 1;
                        decoder.push(&unit, &mut emit)?;
                    }
                    Ok(None) => break,
                    // Opening succeeded, so a read error here means an unreadable body.
                    Err(e) => {
                        summary.ended_early = Some(e.to_string());
                        break;
                    }
                }
                if receiver_gone.get() {
                    return Ok(summary);
                }
            }
            decoder.finish(&mut emit)?;
            summary.decode = decoder.stats();
            summary.corrupt_packets = source.corrupt_packets;
            summary.ended_early = summary.ended_early.or(source.ended_early.take());
            Ok(summary)
        });
        let detected = run_detection(&rx, detector, batching, sink);
        drop(rx); // unblocks the decoder if detection stopped early
        let decoded = decoder_thread.join().expect("decoder thread panicked");
        (decoded, detected)
    });

    let mut summary = decode_side.map_err(|source| PipelineError::Decode {
        path: path.clone(),
        source,
    })?;
    let (detections, output_time) = detect_side.map_err(|e| match e {
        StageError::Detect(e) => PipelineError::Detect(e),
        StageError::Sink(reason) => PipelineError::Sink {
            path: path.clone(),
            reason,
        },
    })?;
    if summary.decode.frames_decoded == 0 {
        let detail = match (&summary.ended_early, summary.decode.units_rejected) {
            (Some(e), _) => e.clone(),
            (None, n) if n > 0 => format!(
                "the {} decoder rejected all {n} access units: not valid {} data",
                codec_name, codec_name
            ),
            _ => format!("{} access units read", summary.access_units),
        };
        return Err(PipelineError::NothingDecoded {
            path: path.clone(),
            detail,
        });
    }
    let after = detector.times();
    summary.detect = DetectTimes {
        inference: after.inference - detect_before.inference,
        postprocess: after.postprocess - detect_before.postprocess,
        batches: after.batches - detect_before.batches,
    };
    summary.detections = detections;
    summary.output_time = output_time;
    summary.wall = started.elapsed();
    Ok(summary)
}

enum StageError {
    Detect(DetectError),
    Sink(String),
}

/// Pulls frames in batches, detects, and feeds the sink. Returns the number of
/// detections and the time spent in the sink.
fn run_detection(
    rx: &Receiver<Frame>,
    detector: &mut Detector,
    batching: Batching,
    sink: &mut Sink<'_>,
) -> Result<(u64, Duration), StageError> {
    let mut detections = 0u64;
    let mut output_time = Duration::ZERO;
    while let Some(batch) = next_batch(rx, detector.batch_size(), batching.max_wait) {
        let inputs: Vec<_> = batch.iter().map(|f| &f.input).collect();
        let results = detector.detect(&inputs).map_err(StageError::Detect)?;
        let started = Instant::now();
        for (frame, found) in batch.iter().zip(&results) {
            detections += found.len() as u64;
            sink(frame, found).map_err(StageError::Sink)?;
        }
        output_time += started.elapsed();
    }
    Ok((detections, output_time))
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

/// Blocks for the first frame, then gathers up to `max` within `max_wait`. `None` once
/// the decoder is done and the queue empty.
pub fn next_batch<T>(rx: &Receiver<T>, max: usize, max_wait: Duration) -> Option<Vec<T>> {
    let first = rx.recv().ok()?;
    let mut batch = Vec::with_capacity(max);
    batch.push(first);
    let deadline = Instant::now() + max_wait;
    while batch.len() < max {
        match rx.recv_deadline(deadline) {
            Ok(item) => batch.push(item),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        }
    }
    Some(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_fill_up_to_max_then_drain_the_rest() {
        let (tx, rx) = bounded(10);
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        drop(tx);
        let wait = Duration::from_millis(10);
        assert_eq!(next_batch(&rx, 2, wait), Some(vec![0, 1]));
        assert_eq!(next_batch(&rx, 2, wait), Some(vec![2, 3]));
        assert_eq!(next_batch(&rx, 2, wait), Some(vec![4]));
        assert_eq!(next_batch(&rx, 2, wait), None);
    }

    #[test]
    fn partial_batch_leaves_after_max_wait() {
        let (tx, rx) = bounded(10);
        tx.send(1).unwrap();
        let started = Instant::now();
        assert_eq!(next_batch(&rx, 4, Duration::from_millis(30)), Some(vec![1]));
        assert!(started.elapsed() >= Duration::from_millis(30));
        drop(tx);
    }
}
