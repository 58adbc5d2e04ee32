//! The daemon's blocking stages, each on its own threads fed by crossbeam channels:
//! decode (a pool; one decoder context per camera), detect (batches across cameras),
//! filing (tracking, rules, cases and the store) and outbox delivery.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::camera::{ActiveDecoder, LiveCamera, LiveFrame};
use super::fair::FairQueue;
use super::DaemonMetrics;
use crate::backoff::Backoff;
use crate::cases::Categories;
use crate::decode::Decoder;
use crate::detect::{Detection, Detector};
use crate::models::InputSpec;
use crate::pipeline::Filing;
use crate::sinks::{self, Sink};
use crate::store::Store;

/// Takes cameras with queued units off the ready queue and decodes them. A camera is on
/// the ready queue at most once, and its decoder lock is held while its units drain, so
/// each camera's units are decoded in order by one thread at a time. `None` stops the
/// worker. Decoded frames wait on their camera for the detector.
pub(super) fn decode_worker(
    ready: Receiver<Option<Arc<LiveCamera>>>,
    detect_queue: Arc<FairQueue<Arc<LiveCamera>>>,
    input: InputSpec,
    metrics: Arc<DaemonMetrics>,
) {
    while let Ok(Some(camera)) = ready.recv() {
        let mut slot = camera
            .decoder
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        camera.unschedule();
        while let Ok(queued) = camera.units.receiver().try_recv() {
            if camera.is_stopped() {
                continue;
            }
            let current = slot.as_ref().is_some_and(|d| {
                Arc::ptr_eq(&d.stream, &queued.stream) && d.sampling == queued.sampling
            });
            if !current {
                match Decoder::new(&queued.stream.stream_info(), &input, queued.sampling) {
                    Ok(decoder) => {
                        *slot = Some(ActiveDecoder {
                            stream: queued.stream.clone(),
                            sampling: queued.sampling,
                            decoder,
                        })
                    }
                    Err(e) => {
                        camera.record_error(format!("cannot decode the stream: {e}"));
                        *slot = None;
                        continue;
                    }
                }
            }
            let active = slot.as_mut().expect("decoder set above");
            let before = active.decoder.stats();
            let mut decoded = Vec::new();
            if let Err(e) = active
                .decoder
                .push(&queued.unit, &mut |frame| decoded.push(frame))
            {
                camera.record_error(format!("decode failed: {e}"));
                *slot = None;
                continue;
            }
            let after = active.decoder.stats();
            if queued.sampling.keyframes_only() {
                // Each keyframe decodes on its own: dropping the context between samples
                // frees its picture pools (megabytes per camera) for a fraction of a
                // millisecond of set-up per sample.
                *slot = None;
            }
            metrics
                .decode
                .observe(after.decode_time - before.decode_time);
            if after.frames_analysed > before.frames_analysed {
                metrics
                    .preprocess
                    .observe(after.preprocess_time - before.preprocess_time);
            }
            let new_frames = after.frames_decoded - before.frames_decoded;
            camera.counters.frames_decoded.add(new_frames);
            metrics.frames_decoded.add(new_frames);
            for frame in decoded {
                let (replaced, schedule) = camera.offer_frame(LiveFrame {
                    frame,
                    received: queued.received,
                });
                if replaced {
                    camera.counters.frames_dropped.inc();
                    metrics.frames_dropped.inc();
                }
                if schedule {
                    detect_queue.push(camera.last_served(), camera.clone());
                }
            }
        }
    }
}

/// A frame with its detections, on its way to filing.
pub(super) type Detected = (Arc<LiveCamera>, LiveFrame, Vec<Detection>);

/// Detects on batches of frames from any cameras, least recently served camera first,
/// until the queue is closed and empty.
pub(super) fn detect_worker(
    cameras: Arc<FairQueue<Arc<LiveCamera>>>,
    mut detector: Detector,
    max_wait: Duration,
    out: Sender<Detected>,
    metrics: Arc<DaemonMetrics>,
) {
    let mut services = 0u64;
    while let Some(ready) = cameras.next_batch(detector.batch_size(), max_wait) {
        let batch: Vec<(Arc<LiveCamera>, LiveFrame)> = ready
            .into_iter()
            .filter(|camera| !camera.is_stopped())
            .filter_map(|camera| {
                services += 1;
                camera.take_frame(services).map(|frame| (camera, frame))
            })
            .collect();
        if batch.is_empty() {
            continue;
        }
        let inputs: Vec<_> = batch.iter().map(|(_, f)| &f.frame.input).collect();
        let before = detector.times();
        let results = match detector.detect(&inputs) {
            Ok(results) => results,
            Err(e) => {
                tracing::error!(error = %e, frames = batch.len(), "inference failed");
                metrics.inference_errors.inc();
                continue;
            }
        };
        let after = detector.times();
        metrics
            .inference
            .observe(after.inference - before.inference);
        metrics
            .postprocess
            .observe(after.postprocess - before.postprocess);
        metrics.batch_frames.add(batch.len() as u64);
        metrics.batches.inc();
        for ((camera, frame), found) in batch.into_iter().zip(results) {
            if out.send((camera, frame, found)).is_err() {
                return;
            }
        }
    }
}

/// Everything the filing stage needs besides its input.
pub(super) struct FilingContext {
    pub store: Store,
    pub categories: Categories,
    pub model_input: InputSpec,
    pub metrics: Arc<DaemonMetrics>,
}

/// Tracks, applies rules and files cases, one camera at a time, committing each frame's
/// changes before the next. Per-camera state survives patrol visits (dwell rules work
/// across them) and is rebuilt when a rotation changes the camera.
pub(super) fn filing_worker(input: Receiver<Detected>, mut ctx: FilingContext) {
    let mut filings: HashMap<String, (Arc<LiveCamera>, Filing)> = HashMap::new();
    let mut last_sweep = Instant::now();
    for (camera, live, detections) in input {
        let camera = &camera;
        if camera.is_stopped() {
            continue;
        }
        let started = Instant::now();
        let stale = filings
            .get(camera.id())
            .is_none_or(|(known, _)| !Arc::ptr_eq(known, camera));
        if stale {
            let filing = Filing::new(
                &camera.config,
                ctx.categories.clone(),
                &ctx.store,
                ctx.model_input.clone(),
                0.0,
            );
            match filing {
                Ok(filing) => {
                    filings.insert(camera.id().to_string(), (camera.clone(), filing));
                }
                Err(e) => {
                    camera.record_error(format!("cannot file cases: {e}"));
                    continue;
                }
            }
        }
        let (_, filing) = filings.get_mut(camera.id()).expect("inserted above");
        let before = filing.stats;
        if let Err(e) = filing.on_frame(&mut ctx.store, &live.frame, &detections) {
            tracing::error!(camera = camera.id(), error = %e, "filing failed");
            camera.record_error(format!("filing failed: {e}"));
        }
        let after = filing.stats;
        ctx.metrics.cases_filed.add(after.filed - before.filed);
        ctx.metrics.cases_closed.add(after.closed - before.closed);
        ctx.metrics.filing.observe(started.elapsed());
        ctx.metrics.latency.observe(live.received.elapsed());
        ctx.metrics.frames_analysed.inc();
        ctx.metrics.detections.add(detections.len() as u64);
        camera.record_analysed(live.frame.pts);
        if last_sweep.elapsed() > Duration::from_secs(60) {
            // Cameras removed by a rotation: their cases stay in the store.
            filings.retain(|_, (camera, _)| !camera.is_stopped());
            last_sweep = Instant::now();
        }
    }
}

/// Delivers the outbox to every sink every `every`, until `stop` says so; then one last
/// round until `final_deadline`. Undelivered events stay in the outbox for the next run.
pub(super) fn delivery_worker(
    mut store: Store,
    mut sinks: Vec<Box<dyn Sink>>,
    every: Duration,
    stop: Receiver<Instant>,
) {
    let mut backoffs: Vec<Backoff> = sinks
        .iter()
        .map(|_| Backoff::new(Duration::from_millis(200), Duration::from_secs(30)))
        .collect();
    loop {
        let (until, last) = match stop.recv_timeout(every) {
            Err(RecvTimeoutError::Timeout) => (Instant::now() + every, false),
            Ok(deadline) => (deadline, true),
            Err(RecvTimeoutError::Disconnected) => (Instant::now(), true),
        };
        for (sink, backoff) in sinks.iter_mut().zip(&mut backoffs) {
            match sinks::deliver(&mut store, sink.as_mut(), until, backoff) {
                Ok(report) if report.pending > 0 => tracing::warn!(
                    sink = sink.name(),
                    pending = report.pending,
                    error = report.last_error.as_deref().unwrap_or(""),
                    "case events wait in the outbox"
                ),
                Ok(_) => {}
                Err(e) => tracing::error!(sink = sink.name(), error = %e, "outbox unreadable"),
            }
        }
        if last {
            return;
        }
    }
}
