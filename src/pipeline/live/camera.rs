//! One live camera: its shared state (what the API shows), its bounded unit queue, and
//! the async task that keeps its RTSP session up or makes one patrol visit.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use tokio::sync::{watch, Notify};

use super::LiveContext;
use crate::backoff::Backoff;
use crate::config::{Camera, StreamChoice};
use crate::decode::{Decoder, Frame, LiveSampler, Sampling};
use crate::metrics::Counter;
use crate::redact::redact_url;
use crate::source::{AccessUnit, LiveStream, RtspError, RtspSession};

// Defined with the API that serves it, so the names exist once.
pub use crate::api::CameraState;

/// Drops the oldest item when full: for live video a fresh frame is worth more than an
/// old one, and a queue that blocks would let latency grow without bound.
pub(super) struct DropOldest<T> {
    tx: Sender<T>,
    rx: Receiver<T>,
}

impl<T> DropOldest<T> {
    pub fn new(capacity: usize) -> Self {
        let (tx, rx) = bounded(capacity.max(1));
        Self { tx, rx }
    }

    /// Queues `item`, returning what had to be dropped to make room.
    pub fn push(&self, mut item: T) -> Vec<T> {
        let mut dropped = Vec::new();
        loop {
            match self.tx.try_send(item) {
                Ok(()) => return dropped,
                Err(TrySendError::Full(back)) => {
                    dropped.extend(self.rx.try_recv().ok());
                    item = back;
                }
                // We hold a receiver, so the channel cannot be disconnected.
                Err(TrySendError::Disconnected(_)) => return dropped,
            }
        }
    }

    pub fn receiver(&self) -> &Receiver<T> {
        &self.rx
    }

    pub fn len(&self) -> usize {
        self.rx.len()
    }
}

/// An access unit on its way to the camera's decoder.
pub(super) struct QueuedUnit {
    pub unit: AccessUnit,
    pub stream: Arc<LiveStream>,
    pub sampling: Sampling,
    pub received: Instant,
}

/// A decoded frame waiting for detection.
pub(super) struct LiveFrame {
    pub frame: Frame,
    /// When the access unit it was decoded from arrived.
    pub received: Instant,
}

/// The decoder of one camera, rebuilt when the stream's parameters or sampling change.
pub(super) struct ActiveDecoder {
    pub stream: Arc<LiveStream>,
    pub sampling: Sampling,
    pub decoder: Decoder,
}

#[derive(Default)]
pub struct CameraCounters {
    pub reconnects: Counter,
    pub frames_received: Counter,
    pub frames_decoded: Counter,
    pub frames_analysed: Counter,
    pub frames_dropped: Counter,
}

/// Window over which the sampled frame rate is computed.
const RATE_WINDOW: Duration = Duration::from_secs(60);

pub struct LiveCamera {
    pub config: Camera,
    /// Bumped when a rotation changes the camera, so per-camera state is rebuilt.
    pub generation: u64,
    url: Option<String>,
    /// The URL as it may be shown: credentials replaced.
    pub shown_url: Option<String>,
    pub counters: CameraCounters,
    state: Mutex<CameraState>,
    last_error: Mutex<Option<String>>,
    last_frame_at: Mutex<Option<f64>>,
    analysed_at: Mutex<VecDeque<Instant>>,
    pub(super) units: DropOldest<QueuedUnit>,
    pub(super) decoder: Mutex<Option<ActiveDecoder>>,
    /// Set while the camera is waiting in the decoders' ready queue.
    scheduled: AtomicBool,
    /// The camera's newest decoded frame not yet detected: a newer one replaces it, so an
    /// overloaded box analyses every camera's freshest frame in turn.
    waiting_frame: Mutex<Option<LiveFrame>>,
    /// Set while the camera is waiting in the detector's queue.
    frame_scheduled: AtomicBool,
    /// When the detector last took a frame of this camera (its service sequence number).
    last_served: AtomicU64,
    stopped: AtomicBool,
    /// Woken for every analysed frame, so a patrol visit ends as soon as it has its samples.
    analysed: Notify,
}

impl LiveCamera {
    pub fn new(config: Camera, generation: u64, choice: StreamChoice, queue: usize) -> Self {
        let (first, second) = match choice {
            StreamChoice::Main => (&config.main_stream, &config.sub_stream),
            StreamChoice::Sub => (&config.sub_stream, &config.main_stream),
        };
        let url = first.clone().or_else(|| second.clone());
        let camera = Self {
            shown_url: url.as_deref().map(redact_url),
            url,
            config,
            generation,
            counters: CameraCounters::default(),
            state: Mutex::new(CameraState::Waiting),
            last_error: Mutex::new(None),
            last_frame_at: Mutex::new(None),
            analysed_at: Mutex::new(VecDeque::new()),
            units: DropOldest::new(queue),
            decoder: Mutex::new(None),
            scheduled: AtomicBool::new(false),
            waiting_frame: Mutex::new(None),
            frame_scheduled: AtomicBool::new(false),
            last_served: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            analysed: Notify::new(),
        };
        if camera.url.is_none() {
            camera.fail("no main_stream or sub_stream configured");
        }
        camera
    }

    pub fn id(&self) -> &str {
        &self.config.info.id
    }

    pub fn state(&self) -> CameraState {
        *lock(&self.state)
    }

    pub fn set_state(&self, state: CameraState) {
        *lock(&self.state) = state;
    }

    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    pub fn record_error(&self, error: impl Into<String>) {
        *lock(&self.last_error) = Some(error.into());
    }

    fn fail(&self, error: &str) {
        self.record_error(error);
        self.set_state(CameraState::Failed);
    }

    pub fn last_frame_at(&self) -> Option<f64> {
        *lock(&self.last_frame_at)
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.set_state(CameraState::Stopped);
        lock(&self.waiting_frame).take();
    }

    /// Puts a decoded frame in line for detection. Returns whether it replaced an older
    /// frame (dropped), and whether the camera must be queued for the detector.
    pub(super) fn offer_frame(&self, frame: LiveFrame) -> (bool, bool) {
        let replaced = lock(&self.waiting_frame).replace(frame).is_some();
        (replaced, !self.frame_scheduled.swap(true, Ordering::SeqCst))
    }

    /// The frame waiting for detection, if any: the camera leaves the detector's queue,
    /// served as the detector's `service`-th camera.
    pub(super) fn take_frame(&self, service: u64) -> Option<LiveFrame> {
        self.frame_scheduled.store(false, Ordering::SeqCst);
        self.last_served.store(service, Ordering::Relaxed);
        lock(&self.waiting_frame).take()
    }

    pub(super) fn last_served(&self) -> u64 {
        self.last_served.load(Ordering::Relaxed)
    }

    /// Takes the camera off the ready queue's books; the decoder then drains its units.
    pub(super) fn unschedule(&self) {
        self.scheduled.store(false, Ordering::SeqCst);
    }

    /// Called by the filing stage for every analysed frame of this camera.
    pub fn record_analysed(&self, frame_time: f64) {
        self.counters.frames_analysed.inc();
        *lock(&self.last_frame_at) = Some(frame_time);
        let now = Instant::now();
        let mut times = lock(&self.analysed_at);
        times.push_back(now);
        while times
            .front()
            .is_some_and(|&t| now.duration_since(t) > RATE_WINDOW)
        {
            times.pop_front();
        }
        drop(times);
        self.analysed.notify_waiters();
    }

    /// Analysed frames per second over the last minute.
    pub fn sampled_fps(&self) -> f64 {
        let now = Instant::now();
        let times = lock(&self.analysed_at);
        let recent = times
            .iter()
            .filter(|&&t| now.duration_since(t) <= RATE_WINDOW)
            .count();
        recent as f64 / RATE_WINDOW.as_secs_f64()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere must not take the camera's status down with it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A continuous session's deadline: none in practice, but still an `Instant` the timer takes.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Why streaming from a session ended.
enum Ended {
    Stopped,
    VisitDone,
    Failed(RtspError),
}

/// What a patrol visit asks of a session.
#[derive(Clone, Copy)]
pub(super) struct Visit {
    pub samples: u64,
    pub timeout: Duration,
}

/// Keeps the camera's session up until `stop`: reconnects with jittered exponential
/// backoff after failures, stalls and disconnects.
pub(super) async fn watch_continuously(
    camera: Arc<LiveCamera>,
    ctx: Arc<LiveContext>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(url) = camera.url.clone() else {
        return;
    };
    let settings = &ctx.config.rtsp;
    let mut backoff = Backoff::new(settings.backoff_initial, settings.backoff_max);
    loop {
        camera.set_state(CameraState::Connecting);
        let received_before = camera.counters.frames_received.get();
        match session(&camera, &ctx, &url, None, &mut stop).await {
            Ended::Stopped | Ended::VisitDone => break,
            Ended::Failed(e) => {
                let stalled = matches!(e, RtspError::Stalled { .. });
                tracing::warn!(camera = camera.id(), error = %e, "camera session ended");
                camera.record_error(e.to_string());
                camera.set_state(if stalled {
                    CameraState::Stalled
                } else {
                    CameraState::Backoff
                });
            }
        }
        if camera.counters.frames_received.get() > received_before {
            backoff.reset();
        }
        camera.counters.reconnects.inc();
        ctx.metrics.reconnects.inc();
        let delay = backoff.next_delay();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    camera.set_state(CameraState::Stopped);
}

/// One patrol visit: connect, take `visit.samples` analysed frames, disconnect.
pub(super) async fn visit(
    camera: Arc<LiveCamera>,
    ctx: Arc<LiveContext>,
    mut stop: watch::Receiver<bool>,
    visit: Visit,
) {
    let Some(url) = camera.url.clone() else {
        return;
    };
    camera.set_state(CameraState::Connecting);
    match session(&camera, &ctx, &url, Some(visit), &mut stop).await {
        Ended::Stopped => camera.set_state(CameraState::Stopped),
        Ended::VisitDone => camera.set_state(CameraState::Waiting),
        Ended::Failed(e) => {
            tracing::warn!(camera = camera.id(), error = %e, "patrol visit failed");
            camera.record_error(e.to_string());
            camera.set_state(CameraState::Waiting);
        }
    }
}

/// Connects and forwards the units the sampler admits to the camera's queue, until the
/// session fails, `stop` is set, or (for a visit) enough frames were analysed or its time
/// is up. The session is always closed with a TEARDOWN: cameras limit their sessions.
async fn session(
    camera: &Arc<LiveCamera>,
    ctx: &Arc<LiveContext>,
    url: &str,
    visit: Option<Visit>,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let deadline = tokio::time::Instant::now() + visit.map_or(FOREVER, |v| v.timeout);
    let connected = tokio::select! {
        _ = stop.wait_for(|s| *s) => return Ended::Stopped,
        _ = tokio::time::sleep_until(deadline) => return Ended::VisitDone,
        connected = RtspSession::connect(url, &ctx.rtsp_options) => connected,
    };
    let mut session = match connected {
        Ok(s) => s,
        Err(e) => return Ended::Failed(e),
    };
    let target = visit.map(|v| camera.counters.frames_analysed.get() + v.samples);
    let mut sampler = LiveSampler::new(ctx.config.sampling.interval, ctx.config.sampling.keyframes);
    let ended = loop {
        if target.is_some_and(|t| camera.counters.frames_analysed.get() >= t) {
            break Ended::VisitDone;
        }
        let unit = tokio::select! {
            _ = stop.wait_for(|s| *s) => break Ended::Stopped,
            _ = tokio::time::sleep_until(deadline) => break Ended::VisitDone,
            // Re-check the visit's target when a frame has been analysed.
            _ = camera.analysed.notified(), if target.is_some() => continue,
            unit = session.next_unit() => unit,
        };
        let unit = match unit {
            Ok(unit) => unit,
            Err(e) => break Ended::Failed(e),
        };
        if camera.state() != CameraState::Streaming {
            camera.set_state(CameraState::Streaming);
        }
        camera.counters.frames_received.inc();
        ctx.metrics.frames_received.inc();
        if !sampler.admit(unit.keyframe, unit.wall_time) {
            continue;
        }
        let queued = QueuedUnit {
            unit: unit.access_unit(),
            stream: unit.stream.clone(),
            sampling: sampler.sampling(),
            received: Instant::now(),
        };
        let dropped = camera.units.push(queued).len() as u64;
        if dropped > 0 {
            camera.counters.frames_dropped.add(dropped);
            ctx.metrics.units_dropped.add(dropped);
            sampler.resync();
        }
        if !camera.scheduled.swap(true, Ordering::SeqCst) {
            // The decoders are gone only during shutdown, when nothing needs decoding.
            let _ = ctx.ready.send(Some(camera.clone()));
        }
    };
    session.close().await;
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_oldest_keeps_the_newest_items() {
        let queue = DropOldest::new(2);
        assert!(queue.push(1).is_empty());
        assert!(queue.push(2).is_empty());
        assert_eq!(queue.push(3), [1]);
        assert_eq!(queue.len(), 2);
        let rest: Vec<_> = queue.receiver().try_iter().collect();
        assert_eq!(rest, [2, 3]);
    }
}
