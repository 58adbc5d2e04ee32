//! A feed: one camera's (or one file's) way through the stages. It carries the camera's
//! identity and configuration with every unit and frame, so the stages need no
//! back-reference to whoever started it, and it keeps the counters each stage adds to.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::picture::{PictureLimits, PictureWatch};
use crate::api::CameraProblem;
use crate::config::Camera;
use crate::decode::{DecodeStats, Frame, LumaSignature, Picture, Sampling, ViewSignature};
use crate::metrics::Counter;
use crate::source::{AccessUnit, StreamParameters};

/// Per-feed figures, as the API shows them for a camera.
#[derive(Default)]
pub struct FeedCounters {
    pub frames_received: Counter,
    pub frames_decoded: Counter,
    pub frames_analysed: Counter,
    /// Units and frames left out to stay fresh, at any stage.
    pub frames_skipped: Counter,
    pub detections: Counter,
}

/// Window over which the analysed frame rate is computed.
const RATE_WINDOW: Duration = Duration::from_secs(60);

pub struct Feed {
    pub camera: Camera,
    /// Bumped by the daemon when a rotation changes the camera: per-camera state (the
    /// tracker, the case engine) is rebuilt for a new generation.
    pub generation: u64,
    /// Unix time of stream time 0: a file's recording start. Live streams are stamped in
    /// Unix seconds already (0).
    pub time_offset: f64,
    /// The main stream of a camera analysed on its sub stream: evidence images come
    /// from it.
    pub evidence_stream: Option<String>,
    pub counters: FeedCounters,
    stopped: AtomicBool,
    /// Bumped when a patrol visit ends: units and frames of an earlier epoch are stale.
    epoch: AtomicU64,
    decode: Mutex<DecodeStats>,
    last_error: Mutex<Option<String>>,
    last_frame_at: Mutex<Option<f64>>,
    analysed_at: Mutex<VecDeque<Instant>>,
    /// Judges the analysed pictures; `None` where nobody asked (files).
    picture: Option<Mutex<PictureWatch>>,
    /// Whether the reference view kept in the store was looked for (once per feed).
    view_restored: AtomicBool,
    /// Woken for every analysed frame, so a patrol visit ends as soon as it has its samples.
    analysed: tokio::sync::Notify,
    /// When detection last took a frame of this feed (its service number): the least
    /// recently served feed goes first.
    pub(super) detect_served: AtomicU64,
}

impl Feed {
    pub fn new(camera: Camera, generation: u64, time_offset: f64) -> Self {
        Self {
            camera,
            generation,
            time_offset,
            evidence_stream: None,
            counters: FeedCounters::default(),
            stopped: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            decode: Mutex::new(DecodeStats::default()),
            last_error: Mutex::new(None),
            last_frame_at: Mutex::new(None),
            analysed_at: Mutex::new(VecDeque::new()),
            picture: None,
            view_restored: AtomicBool::new(false),
            analysed: tokio::sync::Notify::new(),
            detect_served: AtomicU64::new(0),
        }
    }

    /// Takes this feed's evidence images from `url`, the camera's main stream.
    pub fn with_evidence_stream(mut self, url: Option<String>) -> Self {
        self.evidence_stream = url;
        self
    }

    /// Judges this feed's analysed pictures for frozen and dark ones.
    pub fn watching_pictures(mut self, limits: PictureLimits) -> Self {
        self.picture = Some(Mutex::new(PictureWatch::new(limits)));
        self
    }

    pub fn id(&self) -> &str {
        &self.camera.info.id
    }

    /// Called by the decode stage for every analysed picture; returns whether the picture
    /// shows the scene (see [`PictureWatch::shows_the_scene`]). A change of the verdict
    /// is logged once.
    pub(super) fn observe_picture(&self, ts: f64, picture: &Picture) -> bool {
        let Some(watch) = &self.picture else {
            return true;
        };
        let signature = LumaSignature::of(picture);
        let mut watch = lock(watch);
        let view = watch
            .guards_the_view()
            .then(|| ViewSignature::of(picture))
            .flatten();
        match watch.observe(ts, signature, view) {
            Some(Some(problem)) => {
                tracing::warn!(
                    camera = self.id(),
                    problem = problem.as_str(),
                    "camera picture is {}",
                    problem.as_str()
                );
            }
            Some(None) => tracing::info!(camera = self.id(), "camera picture is live again"),
            None => {}
        }
        watch.shows_the_scene()
    }

    /// Frozen, dark or a changed view, when the analysed pictures say so.
    pub fn picture_problem(&self) -> Option<CameraProblem> {
        self.picture.as_ref().and_then(|w| lock(w).problem())
    }

    /// The latest analysed picture becomes the camera's reference view, returned to be
    /// kept; `None` when the view is not guarded or no picture was analysed yet.
    pub fn rebase_view(&self) -> Option<ViewSignature> {
        let rebased = self.view_guard().and_then(|mut w| w.rebase_view());
        if rebased.is_some() {
            tracing::info!(
                camera = self.id(),
                "reference view re-based on the latest picture"
            );
        }
        rebased
    }

    /// The first call for a feed that guards its view answers true: its reference view
    /// is to be looked up in the store (and [`Feed::restore_view`]d).
    pub(super) fn wants_its_kept_view(&self) -> bool {
        self.view_guard().is_some() && !self.view_restored.swap(true, Ordering::AcqRel)
    }

    /// See [`PictureWatch::restore_view`].
    pub(super) fn restore_view(&self, reference: ViewSignature) {
        if let Some(mut watch) = self.view_guard() {
            watch.restore_view(reference);
        }
    }

    /// See [`PictureWatch::take_learned_view`].
    pub(super) fn take_learned_view(&self) -> Option<ViewSignature> {
        self.view_guard().and_then(|mut w| w.take_learned_view())
    }

    /// The picture watch, where it guards the view.
    fn view_guard(&self) -> Option<MutexGuard<'_, PictureWatch>> {
        self.picture
            .as_ref()
            .map(lock)
            .filter(|w| w.guards_the_view())
    }

    /// Likeness of the latest picture to the reference view, when judged.
    pub fn view_likeness(&self) -> Option<f32> {
        self.picture.as_ref().and_then(|w| lock(w).view_likeness())
    }

    /// No more of this feed is wanted: what is queued is skipped.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Ends the current epoch (a patrol visit): its units and frames still queued are
    /// skipped, so nothing of a finished visit is decoded or detected.
    pub fn next_epoch(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether work stamped with `epoch` is still wanted.
    pub fn wants(&self, epoch: u64) -> bool {
        !self.is_stopped() && epoch == self.epoch()
    }

    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    pub fn record_error(&self, error: impl Into<String>) {
        *lock(&self.last_error) = Some(error.into());
    }

    /// Decode figures of this feed so far.
    pub fn decode_stats(&self) -> DecodeStats {
        *lock(&self.decode)
    }

    pub(super) fn add_decode_stats(&self, delta: &DecodeStats) {
        lock(&self.decode).add(delta);
    }

    /// Unix time of the latest analysed frame.
    pub fn last_frame_at(&self) -> Option<f64> {
        *lock(&self.last_frame_at)
    }

    /// Called by the filing stage for every analysed frame of this feed.
    pub(super) fn record_analysed(&self, ts: f64, detections: usize) {
        self.counters.frames_analysed.inc();
        self.counters.detections.add(detections as u64);
        *lock(&self.last_frame_at) = Some(ts);
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

    /// Resolves at the next analysed frame of this feed.
    pub async fn analysed(&self) {
        self.analysed.notified().await;
    }

    /// Analysed frames per second over the last minute.
    pub fn sampled_fps(&self) -> f64 {
        let now = Instant::now();
        let recent = lock(&self.analysed_at)
            .iter()
            .filter(|&&t| now.duration_since(t) <= RATE_WINDOW)
            .count();
        recent as f64 / RATE_WINDOW.as_secs_f64()
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take a feed's figures down with it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An access unit on its way to decoding.
pub struct Unit {
    pub feed: Arc<Feed>,
    /// The feed's epoch when the unit arrived.
    pub epoch: u64,
    /// The parameters the unit decodes with; a new `Arc` when the stream changes them.
    pub stream: Arc<dyn StreamParameters>,
    /// How the feed's decoder samples.
    pub sampling: Sampling,
    pub unit: AccessUnit,
    pub received: Instant,
}

/// A decoded frame on its way to detection and filing.
pub struct Sample {
    pub feed: Arc<Feed>,
    pub epoch: u64,
    pub frame: Frame,
    /// Whether the picture can count as evidence (not frozen, not uniform): cases are
    /// filed and verified only on such frames.
    pub shows_the_scene: bool,
    /// When the access unit it was decoded from arrived.
    pub received: Instant,
}

impl Sample {
    /// Unix seconds of the frame's presentation.
    pub fn ts(&self) -> f64 {
        self.feed.time_offset + self.frame.pts
    }
}
