//! Every camera's latest picture, as the operators' console shows it: a small JPEG of an
//! analysed frame with that frame's detections (in source pixels, for the console to draw
//! over it with the zones).
//!
//! The daemon's [`Outlet`] makes them on the filing thread, one per camera at most every
//! `snapshot_every` (a patrolled camera's visit gives one), so that the cost stays small:
//! a 1080p frame box-filtered to 480 pixels wide and encoded is about 1.4 ms on one core
//! (`cargo bench --bench stages -- snapshot`), some 13–40 kB of JPEG. They are kept in memory within a byte budget: beyond it
//! the least recently refreshed are dropped, and a camera's snapshot goes when the camera
//! is removed from the list.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::super::outlet::{Analysed, Outlet, OutletError};
use super::super::Feed;
use crate::decode::{DecodeError, Picture};
use crate::detect::Detection;
use crate::metrics::{Counter, Histogram};

/// Width of a snapshot JPEG (smaller sources keep their size).
pub const SNAPSHOT_WIDTH: u32 = 480;
/// JPEG quality of a snapshot.
pub const SNAPSHOT_QUALITY: u8 = 75;

/// One camera's latest analysed frame.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The frame scaled down to [`SNAPSHOT_WIDTH`] pixels wide, as JPEG; nothing drawn on it.
    pub jpeg: Arc<Vec<u8>>,
    /// The source frame's size: detections are in these pixels.
    pub width: u32,
    pub height: u32,
    /// Unix seconds of the frame.
    pub taken_at: f64,
    /// Everything the model reported on the frame, every label, in source pixels.
    pub detections: Vec<Detection>,
}

/// What keeping a snapshot costs besides its JPEG: its entry, its camera id and the map
/// slots (an estimate; the budget is about the JPEGs).
const ENTRY_OVERHEAD: usize = 256;

impl Snapshot {
    /// Scales `picture` down to [`SNAPSHOT_WIDTH`] and encodes it.
    pub fn of(
        picture: &Picture,
        taken_at: f64,
        detections: &[Detection],
    ) -> Result<Snapshot, SnapshotError> {
        Ok(Snapshot {
            jpeg: Arc::new(encode(picture, SNAPSHOT_WIDTH, SNAPSHOT_QUALITY)?),
            width: picture.width(),
            height: picture.height(),
            taken_at,
            detections: detections.to_vec(),
        })
    }

    /// Bytes this snapshot is charged against the budget.
    pub fn cost(&self) -> usize {
        self.jpeg.len()
            + ENTRY_OVERHEAD
            + self
                .detections
                .iter()
                .map(|d| std::mem::size_of::<Detection>() + d.label.len())
                .sum::<usize>()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Picture(#[from] DecodeError),
    #[error("JPEG encoding failed: {0}")]
    Encode(String),
}

/// `picture` scaled down to `width` pixels wide (never up) as a JPEG of `quality`.
pub fn encode(picture: &Picture, width: u32, quality: u8) -> Result<Vec<u8>, SnapshotError> {
    let small = picture.small(width)?;
    small.encode_jpeg(quality).map_err(SnapshotError::Encode)
}

/// Every camera's latest snapshot, within a byte budget. Shared by the filing thread
/// (which puts), the API (which gets) and the camera registry (which drops removed
/// cameras').
pub struct Snapshots {
    budget: usize,
    kept: Mutex<Kept>,
    /// Time to make one snapshot (scale and encode).
    pub making: Histogram,
    pub failures: Counter,
    /// Snapshots dropped to stay within the budget.
    pub evicted: Counter,
}

#[derive(Default)]
struct Kept {
    by_camera: HashMap<String, Entry>,
    /// Cameras by when their snapshot was stored, oldest first.
    order: BTreeMap<u64, String>,
    next: u64,
    bytes: usize,
}

struct Entry {
    snapshot: Snapshot,
    stored: u64,
    cost: usize,
}

impl Kept {
    fn remove(&mut self, camera: &str) -> Option<Entry> {
        let entry = self.by_camera.remove(camera)?;
        self.order.remove(&entry.stored);
        self.bytes -= entry.cost;
        Some(entry)
    }
}

impl Snapshots {
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            kept: Mutex::default(),
            making: Histogram::default(),
            failures: Counter::default(),
            evicted: Counter::default(),
        }
    }

    fn kept(&self) -> MutexGuard<'_, Kept> {
        // A panic elsewhere must not take the pictures down with it.
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The camera's latest snapshot, if one is kept.
    pub fn get(&self, camera: &str) -> Option<Snapshot> {
        self.kept()
            .by_camera
            .get(camera)
            .map(|e| e.snapshot.clone())
    }

    /// Keeps `snapshot` as the camera's latest (replacing its previous one), then drops
    /// the least recently stored snapshots until all fit the budget (the new one too, if
    /// it alone is larger).
    pub fn put(&self, camera: &str, snapshot: Snapshot) {
        self.put_unless(camera, snapshot, || false);
    }

    /// [`Snapshots::put`] for a frame of `feed`, unless the feed was stopped meanwhile:
    /// checked under the lock that [`Snapshots::retain`] takes, so a removed camera's last
    /// frame cannot bring its snapshot back after the registry dropped it.
    fn put_for(&self, feed: &Feed, snapshot: Snapshot) {
        self.put_unless(feed.id(), snapshot, || feed.is_stopped());
    }

    fn put_unless(&self, camera: &str, snapshot: Snapshot, stopped: impl FnOnce() -> bool) {
        let mut kept = self.kept();
        if stopped() {
            return;
        }
        kept.remove(camera);
        let cost = snapshot.cost();
        let stored = kept.next;
        kept.next += 1;
        kept.bytes += cost;
        kept.order.insert(stored, camera.to_string());
        kept.by_camera.insert(
            camera.to_string(),
            Entry {
                snapshot,
                stored,
                cost,
            },
        );
        while kept.bytes > self.budget {
            let Some((_, oldest)) = kept.order.pop_first() else {
                break;
            };
            let entry = kept
                .by_camera
                .remove(&oldest)
                .expect("ordered entries are kept");
            kept.bytes -= entry.cost;
            self.evicted.inc();
        }
    }

    /// Drops the snapshots of cameras `keep` says no to.
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        let mut kept = self.kept();
        let gone: Vec<String> = kept
            .by_camera
            .keys()
            .filter(|id| !keep(id))
            .cloned()
            .collect();
        for id in gone {
            kept.remove(&id);
        }
    }

    /// Snapshots kept.
    pub fn len(&self) -> usize {
        self.kept().by_camera.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes charged against the budget.
    pub fn bytes(&self) -> usize {
        self.kept().bytes
    }

    pub fn budget(&self) -> usize {
        self.budget
    }
}

/// How often the refresh times of cameras not seen for a while are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The daemon's outlet: makes each camera's snapshot at most every `every`.
pub struct SnapshotOutlet {
    store: Arc<Snapshots>,
    every: Duration,
    /// When each camera's last snapshot was attempted. Kept here rather than with the
    /// snapshots, so that one dropped for the budget is not remade at every frame.
    attempted: HashMap<String, Instant>,
    last_sweep: Instant,
}

impl SnapshotOutlet {
    pub fn new(store: Arc<Snapshots>, every: Duration) -> Self {
        Self {
            store,
            every,
            attempted: HashMap::new(),
            last_sweep: Instant::now(),
        }
    }

    /// Whether the camera is due a snapshot at `now`; if so, counts it as attempted.
    fn due(&mut self, camera: &str, now: Instant) -> bool {
        if self.store.budget() == 0 {
            return false;
        }
        if now.saturating_duration_since(self.last_sweep) >= SWEEP_EVERY {
            let every = self.every;
            self.attempted
                .retain(|_, at| now.saturating_duration_since(*at) < every);
            self.last_sweep = now;
        }
        match self.attempted.get_mut(camera) {
            Some(at) if now.saturating_duration_since(*at) < self.every => false,
            Some(at) => {
                *at = now;
                true
            }
            None => {
                self.attempted.insert(camera.to_string(), now);
                true
            }
        }
    }
}

impl Outlet for SnapshotOutlet {
    /// Never fails: a snapshot that cannot be made is logged and counted, and the frame's
    /// cases are filed all the same.
    fn analysed(&mut self, frame: &Analysed<'_>) -> Result<(), OutletError> {
        let started = Instant::now();
        if !self.due(frame.feed.id(), started) {
            return Ok(());
        }
        match Snapshot::of(&frame.frame.picture, frame.ts, frame.detections) {
            Ok(snapshot) => {
                self.store.making.observe(started.elapsed());
                self.store.put_for(frame.feed, snapshot);
            }
            Err(e) => {
                self.store.failures.inc();
                tracing::warn!(camera = frame.feed.id(), error = %e, "no snapshot");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(bytes: usize, taken_at: f64) -> Snapshot {
        Snapshot {
            jpeg: Arc::new(vec![0xff; bytes]),
            width: 1920,
            height: 1080,
            taken_at,
            detections: vec![Detection {
                label: "car".into(),
                class: 2,
                score: 0.9,
                bbox: [10.0, 20.0, 300.0, 400.0],
            }],
        }
    }

    #[test]
    fn a_camera_keeps_only_its_latest_snapshot() {
        let store = Snapshots::new(1 << 20);
        assert!(store.get("cam-1").is_none());
        store.put("cam-1", snapshot(1000, 1.0));
        store.put("cam-1", snapshot(2000, 2.0));
        let got = store.get("cam-1").unwrap();
        assert_eq!((got.taken_at, got.jpeg.len()), (2.0, 2000));
        assert_eq!(got.detections[0].label, "car");
        assert_eq!(store.len(), 1);
        assert_eq!(store.bytes(), snapshot(2000, 2.0).cost());
    }

    #[test]
    fn beyond_the_budget_the_least_recently_stored_go() {
        let cost = snapshot(10_000, 0.0).cost();
        let store = Snapshots::new(3 * cost);
        for (i, camera) in ["a", "b", "c"].iter().enumerate() {
            store.put(camera, snapshot(10_000, i as f64));
        }
        assert_eq!((store.len(), store.bytes()), (3, 3 * cost));
        // Refreshing `a` makes `b` the oldest: it goes when `d` arrives.
        store.put("a", snapshot(10_000, 3.0));
        store.put("d", snapshot(10_000, 4.0));
        assert!(store.get("b").is_none());
        for camera in ["a", "c", "d"] {
            assert!(store.get(camera).is_some(), "{camera}");
        }
        assert_eq!(store.evicted.get(), 1);
        // A larger one pushes out as many as it needs.
        store.put("e", snapshot(25_000, 5.0));
        assert!(store.bytes() <= store.budget());
        assert_eq!(store.len(), 1);
        assert!(store.get("e").is_some());
        // One larger than the whole budget is not kept at all.
        store.put("f", snapshot(40_000, 6.0));
        assert!(store.is_empty() && store.bytes() == 0);
    }

    #[test]
    fn seven_thousand_cameras_stay_within_the_budget() {
        let store = Snapshots::new(64 << 20);
        for i in 0..7000 {
            store.put(&format!("cam-{i}"), snapshot(20_000, i as f64));
        }
        assert!(store.bytes() <= 64 << 20);
        let per = snapshot(20_000, 0.0).cost();
        assert_eq!(store.len(), (64 << 20) / per);
        assert!(store.get("cam-6999").is_some() && store.get("cam-0").is_none());
    }

    #[test]
    fn removed_cameras_lose_their_snapshots() {
        let store = Snapshots::new(1 << 20);
        for camera in ["a", "b", "c"] {
            store.put(camera, snapshot(100, 0.0));
        }
        store.retain(|id| id != "b");
        assert!(store.get("b").is_none());
        assert_eq!(store.len(), 2);
        assert_eq!(store.bytes(), 2 * snapshot(100, 0.0).cost());
        // The order stays consistent: later evictions still work.
        store.put("d", snapshot(1 << 19, 1.0));
        store.put("e", snapshot(1 << 19, 2.0));
        assert!(store.bytes() <= store.budget());
        assert!(store.get("e").is_some());
    }

    #[test]
    fn a_stopped_feed_does_not_bring_its_snapshot_back() {
        let store = Snapshots::new(1 << 20);
        store.put_unless("gone", snapshot(100, 0.0), || true);
        assert!(store.get("gone").is_none());
    }

    #[test]
    fn snapshots_are_due_once_per_interval_per_camera() {
        let store = Arc::new(Snapshots::new(1 << 20));
        let mut outlet = SnapshotOutlet::new(store, Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(outlet.due("a", at(0)));
        assert!(outlet.due("b", at(1)));
        assert!(!outlet.due("a", at(5)));
        assert!(!outlet.due("a", at(9)));
        assert!(outlet.due("a", at(10)));
        assert!(!outlet.due("b", at(10)));
        assert!(outlet.due("b", at(11)));
        // A patrolled camera seen again minutes later is due at once.
        assert!(outlet.due("a", at(300)));
        // Forgotten refresh times (swept after a minute) change nothing.
        assert!(!outlet.due("a", at(305)));
        assert!(outlet.attempted.len() <= 2);
    }

    #[test]
    fn zero_interval_takes_every_frame_and_zero_budget_none() {
        let mut every = SnapshotOutlet::new(Arc::new(Snapshots::new(1 << 20)), Duration::ZERO);
        let now = Instant::now();
        assert!(every.due("a", now) && every.due("a", now));
        let mut none = SnapshotOutlet::new(Arc::new(Snapshots::new(0)), Duration::ZERO);
        assert!(!none.due("a", now));
    }
}
