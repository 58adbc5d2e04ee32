//! The detect stage: decoded frames wait per feed, and the detector batches across feeds,
//! least recently served feed first. With freshness a feed's newer frame replaces the one
//! waiting (an overloaded box analyses every camera's freshest frame in turn; a FIFO locks
//! into the cameras' frame phases and starves some); with back-pressure a feed's frames
//! queue in order and the decoder waits for room. Several detect workers may take
//! batches; a feed whose frames one of them holds waits until that batch is handed on, so
//! each feed's frames reach filing in order.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::outlet::Detected;
use super::{Feed, Metrics, QueuePolicy, Sample};
use crate::detect::{DetectError, Detector};

/// What waits in the queue: it names its feed.
pub(super) trait OfFeed {
    fn feed(&self) -> &Arc<Feed>;
}

impl OfFeed for Sample {
    fn feed(&self) -> &Arc<Feed> {
        &self.feed
    }
}

pub(super) struct FrameQueue<T = Sample> {
    policy: QueuePolicy,
    per_feed: usize,
    state: Mutex<State<T>>,
    available: Condvar,
    space: Condvar,
}

/// (when the feed was last served, arrival order, feed): smallest first.
type Ticket = (u64, u64, usize);

struct State<T> {
    slots: HashMap<usize, VecDeque<T>>,
    ready: BTreeSet<Ticket>,
    /// Feeds with frames in a worker's batch: not ready until it is handed on.
    taken: HashSet<usize>,
    waiting: usize,
    /// Of the frames waiting, those of taken feeds.
    held: usize,
    arrivals: u64,
    services: u64,
    closed: bool,
}

impl<T: OfFeed> FrameQueue<T> {
    pub fn new(policy: QueuePolicy, per_feed: usize) -> Self {
        Self {
            policy,
            per_feed: per_feed.max(1),
            state: Mutex::new(State {
                slots: HashMap::new(),
                ready: BTreeSet::new(),
                taken: HashSet::new(),
                waiting: 0,
                held: 0,
                arrivals: 0,
                services: 0,
                closed: false,
            }),
            available: Condvar::new(),
            space: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame. Freshness: returns the older frame of the feed it replaced.
    /// Back-pressure: waits while the feed has `per_feed` frames waiting. `Err` once closed.
    pub fn push(&self, sample: T) -> Result<Option<T>, T> {
        let key = Arc::as_ptr(sample.feed()) as usize;
        let mut guard = self.lock();
        loop {
            if guard.closed {
                return Err(sample);
            }
            let full = self.policy == QueuePolicy::Backpressure
                && guard
                    .slots
                    .get(&key)
                    .is_some_and(|s| s.len() >= self.per_feed);
            if !full {
                break;
            }
            guard = self.space.wait(guard).unwrap_or_else(|p| p.into_inner());
        }
        let state = &mut *guard;
        let served = sample.feed().detect_served.load(Ordering::Relaxed);
        let taken = state.taken.contains(&key);
        let slot = state.slots.entry(key).or_default();
        if slot.is_empty() && !taken {
            state.arrivals += 1;
            state.ready.insert((served, state.arrivals, key));
        }
        let replaced = match self.policy {
            QueuePolicy::Freshness => slot.pop_front(),
            QueuePolicy::Backpressure => None,
        };
        if replaced.is_none() {
            state.waiting += 1;
            state.held += usize::from(taken);
        }
        slot.push_back(sample);
        drop(guard);
        self.available.notify_one();
        Ok(replaced)
    }

    /// No more frames will come (or none are wanted): takers get what is left, then
    /// `None`; pushes fail.
    pub fn close(&self) {
        self.lock().closed = true;
        self.available.notify_all();
        self.space.notify_all();
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.lock().waiting
    }

    /// Blocks for the first frame of a feed no other batch holds, then waits up to
    /// `max_wait` for the batch to fill to `max`. `None` once closed and empty. The batch's
    /// feeds are held until it is dropped.
    pub fn next_batch(&self, max: usize, max_wait: Duration) -> Option<Batch<'_, T>> {
        let mut guard = self.lock();
        while guard.ready.is_empty() {
            if guard.closed && guard.waiting == 0 {
                return None;
            }
            guard = self
                .available
                .wait(guard)
                .unwrap_or_else(|p| p.into_inner());
        }
        let deadline = Instant::now() + max_wait;
        while guard.waiting - guard.held < max && !guard.closed {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            guard = self
                .available
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let state = &mut *guard;
        let mut batch = Batch {
            queue: self,
            samples: Vec::with_capacity(max),
            feeds: Vec::new(),
        };
        while batch.samples.len() < max {
            let Some((_, _, key)) = state.ready.pop_first() else {
                break;
            };
            let slot = state.slots.get_mut(&key).expect("a ready feed has a slot");
            state.services += 1;
            while batch.samples.len() < max {
                let Some(sample) = slot.pop_front() else {
                    break;
                };
                sample
                    .feed()
                    .detect_served
                    .store(state.services, Ordering::Relaxed);
                batch.samples.push(sample);
                state.waiting -= 1;
            }
            // Frames left behind wait for this batch to be handed on.
            state.held += slot.len();
            state.taken.insert(key);
            batch.feeds.push(key);
        }
        drop(guard);
        self.space.notify_all();
        Some(batch)
    }

    /// The batch holding `feeds` is handed on: their waiting frames are ready again.
    fn release(&self, feeds: &[usize]) {
        let mut guard = self.lock();
        let state = &mut *guard;
        for key in feeds {
            state.taken.remove(key);
            let Some(slot) = state.slots.get(key) else {
                continue;
            };
            if slot.is_empty() {
                state.slots.remove(key);
                continue;
            }
            state.held -= slot.len();
            let served = slot[0].feed().detect_served.load(Ordering::Relaxed);
            state.arrivals += 1;
            state.ready.insert((served, state.arrivals, *key));
        }
        drop(guard);
        self.available.notify_all();
    }
}

/// Frames taken for detection. Their feeds' later frames wait until it is dropped.
pub(super) struct Batch<'a, T: OfFeed> {
    queue: &'a FrameQueue<T>,
    samples: Vec<T>,
    feeds: Vec<usize>,
}

impl<T: OfFeed> Batch<'_, T> {
    /// The frames, in the order to detect them; the feeds stay held.
    pub fn take(&mut self) -> Vec<T> {
        std::mem::take(&mut self.samples)
    }
}

impl<T: OfFeed> Drop for Batch<'_, T> {
    fn drop(&mut self) {
        self.queue.release(&self.feeds);
    }
}

/// Detects on batches until the queue is closed and empty, or filing is gone. Returns the
/// detector, and with back-pressure the inference error that ended the run.
pub(super) fn detect_worker(
    frames: Arc<FrameQueue>,
    mut detector: Detector,
    max_wait: Duration,
    policy: QueuePolicy,
    out: Sender<Detected>,
    metrics: Arc<Metrics>,
) -> (Detector, Option<DetectError>) {
    while let Some(mut taken) = frames.next_batch(detector.batch_size(), max_wait) {
        let (batch, stale): (Vec<Sample>, Vec<Sample>) = taken
            .take()
            .into_iter()
            .partition(|s| s.feed.wants(s.epoch));
        for sample in &stale {
            metrics.skipped_detect.inc();
            sample.feed.counters.frames_skipped.inc();
        }
        if batch.is_empty() {
            continue;
        }
        let inputs: Vec<_> = batch.iter().map(|s| &s.frame.input).collect();
        let before = detector.times();
        let results = match detector.detect(&inputs) {
            Ok(results) => results,
            Err(e) if policy == QueuePolicy::Freshness => {
                tracing::error!(error = %e, frames = batch.len(), "inference failed");
                metrics.inference_errors.inc();
                for sample in &batch {
                    sample.feed.record_error(format!("inference failed: {e}"));
                }
                continue;
            }
            Err(e) => {
                frames.close();
                return (detector, Some(e));
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
        for (sample, found) in batch.into_iter().zip(results) {
            metrics.frames_detected.inc();
            if out.send((sample, found)).is_err() {
                // Filing stopped: nothing more is wanted upstream either.
                frames.close();
                return (detector, None);
            }
        }
    }
    (detector, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Camera;

    /// A numbered frame of a feed.
    struct Numbered(Arc<Feed>, u32);

    impl OfFeed for Numbered {
        fn feed(&self) -> &Arc<Feed> {
            &self.0
        }
    }

    fn feed(id: &str) -> Arc<Feed> {
        Arc::new(Feed::new(Camera::unconfigured(id), 0, 0.0))
    }

    fn ids(mut batch: Batch<'_, Numbered>) -> Vec<(String, u32)> {
        batch
            .take()
            .iter()
            .map(|n| (n.0.id().to_string(), n.1))
            .collect()
    }

    #[test]
    fn freshness_keeps_the_newest_frame_per_feed_and_serves_feeds_in_turn() {
        let queue = FrameQueue::new(QueuePolicy::Freshness, 1);
        let (a, b) = (feed("a"), feed("b"));
        assert!(matches!(queue.push(Numbered(a.clone(), 1)), Ok(None)));
        let replaced = queue.push(Numbered(a.clone(), 2));
        assert!(matches!(replaced, Ok(Some(Numbered(_, 1)))));
        assert!(matches!(queue.push(Numbered(b.clone(), 3)), Ok(None)));
        assert_eq!(queue.len(), 2);
        let wait = Duration::from_millis(1);
        assert_eq!(ids(queue.next_batch(1, wait).unwrap()), [("a".into(), 2)]);
        // a was just served: b goes first although a's next frame is newer.
        assert!(matches!(queue.push(Numbered(a.clone(), 4)), Ok(None)));
        assert_eq!(
            ids(queue.next_batch(2, wait).unwrap()),
            [("b".into(), 3), ("a".into(), 4)]
        );
        queue.close();
        assert!(queue.next_batch(1, wait).is_none());
        assert!(queue.push(Numbered(a, 5)).is_err());
    }

    #[test]
    fn backpressure_keeps_every_frame_in_order_and_makes_the_producer_wait() {
        let queue = Arc::new(FrameQueue::new(QueuePolicy::Backpressure, 2));
        let clip = feed("clip");
        let producer = {
            let (queue, clip) = (queue.clone(), clip.clone());
            std::thread::spawn(move || {
                for i in 0..6 {
                    assert!(matches!(queue.push(Numbered(clip.clone(), i)), Ok(None)));
                }
            })
        };
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(queue.len(), 2, "the producer waits for room");
        let mut seen = Vec::new();
        while seen.len() < 6 {
            let mut batch = queue.next_batch(4, Duration::from_millis(5)).unwrap();
            seen.extend(batch.take().iter().map(|n| n.1));
        }
        producer.join().unwrap();
        assert_eq!(seen, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_feed_held_by_one_batch_waits_for_it_so_its_frames_stay_in_order() {
        let queue = Arc::new(FrameQueue::new(QueuePolicy::Freshness, 1));
        let (a, b) = (feed("a"), feed("b"));
        let wait = Duration::from_millis(1);
        assert!(queue.push(Numbered(a.clone(), 1)).is_ok());
        let mut first = queue.next_batch(1, wait).unwrap();
        assert_eq!(first.take().len(), 1);
        // While a's first frame is detected, its next one waits; b's is served.
        assert!(queue.push(Numbered(a.clone(), 2)).is_ok());
        assert!(queue.push(Numbered(b.clone(), 3)).is_ok());
        assert_eq!(ids(queue.next_batch(2, wait).unwrap()), [("b".into(), 3)]);
        // A newer frame of the held feed still replaces the waiting one.
        assert!(matches!(
            queue.push(Numbered(a.clone(), 4)),
            Ok(Some(Numbered(_, 2)))
        ));
        queue.close();
        // Closed with a's frame held: a second taker waits for the release, then gets it.
        let taker = {
            let queue = queue.clone();
            std::thread::spawn(move || {
                let batch = queue.next_batch(2, wait).map(ids);
                (batch, queue.next_batch(2, wait).is_none())
            })
        };
        std::thread::sleep(Duration::from_millis(30));
        assert!(!taker.is_finished(), "nothing is ready while a is held");
        drop(first);
        let (batch, then_none) = taker.join().unwrap();
        assert_eq!(batch, Some(vec![("a".into(), 4)]));
        assert!(then_none);
        assert_eq!(queue.len(), 0);
    }
}
