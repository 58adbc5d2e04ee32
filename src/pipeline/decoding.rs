//! The decode stage: each decode thread owns the decoders of the feeds hashed to it, so a
//! feed's units are decoded in order by one decoder context, with no lock around it.
//! Feeds take turns, least recently served first. With freshness, a feed's older units
//! are skipped when a newer keyframe of it is waiting: decoding restarts there, and the
//! frame analysed is the newest the sampling allows.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};

use super::detection::FrameQueue;
use super::{Feed, Metrics, PipelineError, QueuePolicy, Sample, Unit};
use crate::decode::{DecodeStats, Decoder, Frame, Sampling};
use crate::models::InputSpec;
use crate::source::StreamParameters;

pub(crate) enum Message {
    Unit(Unit),
    /// The feed has no more units: flush its decoder.
    End(Arc<Feed>),
    /// Decode what is queued, then stop.
    Stop,
}

/// How often decoders of idle feeds from ended visits or stopped cameras are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A feed's decoder, rebuilt when the stream's parameters or the sampling change.
struct ActiveDecoder {
    stream: Arc<dyn StreamParameters>,
    sampling: Sampling,
    epoch: u64,
    decoder: Decoder,
    /// Whether keeping the context between keyframes saves CPU: opening an H.265 decoder
    /// costs 15 ms of a 1080p keyframe's 51 (its 25 MiB of picture and motion arrays are
    /// allocated and faulted in anew), an H.264 one nothing measurable
    /// (`cargo bench --bench decoder`).
    keep_between_keyframes: bool,
}

/// One feed as its decode thread sees it.
struct Lane {
    feed: Arc<Feed>,
    units: VecDeque<Unit>,
    decoder: Option<ActiveDecoder>,
    /// Units were lost: the decoder must restart at a keyframe.
    need_keyframe: bool,
    ended: bool,
    last_served: u64,
}

pub(super) struct DecodeWorker {
    policy: QueuePolicy,
    per_feed: usize,
    /// Keyframes-only decoders this thread keeps between keyframes.
    kept_decoders: usize,
    input: InputSpec,
    out: Arc<FrameQueue>,
    metrics: Arc<Metrics>,
    /// Keyed by the feed's address: a rotated camera is a new feed with a new decoder.
    lanes: HashMap<usize, Lane>,
    services: u64,
}

fn key(feed: &Arc<Feed>) -> usize {
    Arc::as_ptr(feed) as usize
}

impl DecodeWorker {
    pub fn new(
        policy: QueuePolicy,
        per_feed: usize,
        kept_decoders: usize,
        input: InputSpec,
        out: Arc<FrameQueue>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            policy,
            per_feed: per_feed.max(1),
            kept_decoders,
            input,
            out,
            metrics,
            lanes: HashMap::new(),
            services: 0,
        }
    }

    /// Decodes until told to stop (or every intake is gone) and everything queued is done.
    /// With back-pressure a decode failure ends the run; with freshness it is recorded on
    /// the feed, and the feed's next keyframe starts afresh.
    pub fn run(mut self, rx: Receiver<Message>) -> Option<PipelineError> {
        let mut stopping = false;
        let mut last_sweep = Instant::now();
        loop {
            if !self.lanes.values().any(|l| !l.units.is_empty()) {
                if stopping {
                    break;
                }
                match rx.recv() {
                    Ok(message) => stopping |= self.take(message),
                    Err(_) => break,
                }
            }
            // Everything that has arrived joins its feed's queue before one is chosen, so
            // the choice sees the newest units.
            while !stopping && self.has_room() {
                match rx.try_recv() {
                    Ok(message) => stopping |= self.take(message),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            let ended: Vec<usize> = self
                .lanes
                .iter()
                .filter(|(_, l)| l.ended && l.units.is_empty())
                .map(|(&k, _)| k)
                .collect();
            // `Err(None)`: detection has stopped, and finishing reports why.
            for lane in ended {
                if let Err(e) = self.flush(lane) {
                    return e;
                }
            }
            if let Some(lane) = self.next_lane() {
                if let Err(e) = self.decode_next(lane) {
                    return e;
                }
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                self.sweep();
                last_sweep = Instant::now();
            }
        }
        let remaining: Vec<usize> = self.lanes.keys().copied().collect();
        for lane in remaining {
            if let Err(e) = self.flush(lane) {
                return e;
            }
        }
        None
    }

    /// With back-pressure the intake channel is the queue: take no more than a feed's
    /// worth, so a fast source waits for the decoder.
    fn has_room(&self) -> bool {
        match self.policy {
            QueuePolicy::Freshness => true,
            QueuePolicy::Backpressure => {
                self.lanes.values().map(|l| l.units.len()).sum::<usize>() < self.per_feed
            }
        }
    }

    /// Files a message; true for `Stop`.
    fn take(&mut self, message: Message) -> bool {
        let unit = match message {
            Message::Unit(unit) => unit,
            Message::End(feed) => {
                if let Some(lane) = self.lanes.get_mut(&key(&feed)) {
                    lane.ended = true;
                }
                return false;
            }
            Message::Stop => return true,
        };
        self.metrics.units_queued.inc();
        let lane = self.lanes.entry(key(&unit.feed)).or_insert_with(|| Lane {
            feed: unit.feed.clone(),
            units: VecDeque::new(),
            decoder: None,
            need_keyframe: false,
            ended: false,
            last_served: 0,
        });
        lane.units.push_back(unit);
        if self.policy == QueuePolicy::Freshness && lane.units.len() > self.per_feed {
            // Its queue overflowed: the oldest goes, and decoding restarts at a keyframe.
            lane.units.pop_front();
            lane.need_keyframe = true;
            skip(&self.metrics, &lane.feed, 1);
        }
        false
    }

    /// The feed with units waiting that was served longest ago.
    fn next_lane(&mut self) -> Option<usize> {
        let (&lane, _) = self
            .lanes
            .iter()
            .filter(|(_, l)| !l.units.is_empty())
            .min_by_key(|(_, l)| l.last_served)?;
        self.services += 1;
        self.lanes.get_mut(&lane).expect("chosen above").last_served = self.services;
        Some(lane)
    }

    /// Decodes the lane's next unit worth decoding. `Err(None)`: detection is gone;
    /// `Err(Some)`: a decode failure that ends a back-pressured run.
    fn decode_next(&mut self, key: usize) -> Result<(), Option<PipelineError>> {
        let lane = self.lanes.get_mut(&key).expect("a chosen lane");
        let mut skipped = 0;
        if self.policy == QueuePolicy::Freshness {
            skipped += coalesce(lane);
        }
        let Some(unit) = lane.units.pop_front() else {
            skip(&self.metrics, &lane.feed, skipped);
            return Ok(());
        };
        if lane.need_keyframe && !unit.unit.keyframe {
            skip(&self.metrics, &lane.feed, skipped + 1);
            return Ok(());
        }
        self.metrics.units_taken.inc();
        lane.need_keyframe = false;
        skip(&self.metrics, &lane.feed, skipped);
        let fresh = self.policy == QueuePolicy::Freshness;
        let kept = self.kept_between_keyframes(key);
        let lane = self.lanes.get_mut(&key).expect("a chosen lane");
        let current = lane
            .decoder
            .as_ref()
            .is_some_and(|d| same_stream(&d.stream, &unit.stream) && d.sampling == unit.sampling);
        if !current {
            lane.decoder = None;
            let info = unit.stream.stream_info();
            match Decoder::new(&info, &self.input, unit.sampling) {
                Ok(decoder) => {
                    lane.decoder = Some(ActiveDecoder {
                        stream: unit.stream.clone(),
                        sampling: unit.sampling,
                        epoch: unit.epoch,
                        decoder,
                        keep_between_keyframes: info.codec == ffmpeg_next::codec::Id::HEVC,
                    })
                }
                Err(e) if fresh => {
                    lane.feed
                        .record_error(format!("cannot decode the stream: {e}"));
                    return Ok(());
                }
                Err(source) => {
                    return Err(Some(PipelineError::Decode {
                        path: lane.feed.id().into(),
                        source,
                    }))
                }
            }
        }
        let active = lane.decoder.as_mut().expect("decoder set above");
        active.epoch = unit.epoch;
        let before = active.decoder.stats();
        let mut decoded = Vec::new();
        if let Err(e) = active
            .decoder
            .push(&unit.unit, &mut |frame| decoded.push(frame))
        {
            lane.decoder = None;
            if fresh {
                lane.feed.record_error(format!("decode failed: {e}"));
                return Ok(());
            }
            return Err(Some(PipelineError::Decode {
                path: lane.feed.id().into(),
                source: e,
            }));
        }
        let delta = active.decoder.stats().since(&before);
        record(&self.metrics, &lane.feed, &delta);
        let feed = lane.feed.clone();
        let between_keyframes = fresh && unit.sampling.keyframes_only() && lane.units.is_empty();
        if between_keyframes
            && !(active.keep_between_keyframes && (current || kept < self.kept_decoders))
        {
            // A camera's next keyframe is seconds away and reopening costs no more than
            // keeping (H.264), or the bound is reached: dropping the context frees its
            // picture pools.
            lane.decoder = None;
        }
        self.emit(&feed, unit.epoch, unit.received, decoded)
            .map_err(|()| None)
    }

    /// Keyframes-only decoders held between keyframes by lanes other than `except`.
    fn kept_between_keyframes(&self, except: usize) -> usize {
        self.lanes
            .iter()
            .filter(|&(&k, l)| k != except && l.units.is_empty())
            .map(|(_, l)| l)
            .filter(|l| {
                l.decoder
                    .as_ref()
                    .is_some_and(|d| d.sampling.keyframes_only())
            })
            .count()
    }

    /// Hands decoded frames to detection; `Err` once detection is gone.
    fn emit(
        &self,
        feed: &Arc<Feed>,
        epoch: u64,
        received: Instant,
        frames: Vec<Frame>,
    ) -> Result<(), ()> {
        for frame in frames {
            let shows_the_scene =
                feed.observe_picture(feed.time_offset + frame.pts, &frame.picture);
            let sample = Sample {
                feed: feed.clone(),
                epoch,
                shows_the_scene,
                frame,
                received,
            };
            match self.out.push(sample) {
                Ok(None) => {}
                Ok(Some(replaced)) => {
                    self.metrics.skipped_detect.inc();
                    replaced.feed.counters.frames_skipped.inc();
                }
                Err(_) => return Err(()),
            }
        }
        Ok(())
    }

    /// Gives up the pictures a lane's decoder still holds (a file's last frames), and
    /// forgets the lane.
    fn flush(&mut self, key: usize) -> Result<(), Option<PipelineError>> {
        let Some(mut lane) = self.lanes.remove(&key) else {
            return Ok(());
        };
        let Some(mut active) = lane.decoder.take() else {
            return Ok(());
        };
        if !lane.feed.wants(active.epoch) {
            return Ok(());
        }
        let before = active.decoder.stats();
        let mut decoded = Vec::new();
        let flushed = active.decoder.finish(&mut |frame| decoded.push(frame));
        let delta = active.decoder.stats().since(&before);
        record(&self.metrics, &lane.feed, &delta);
        if let Err(source) = flushed {
            return Err(Some(PipelineError::Decode {
                path: lane.feed.id().into(),
                source,
            }));
        }
        self.emit(&lane.feed, active.epoch, Instant::now(), decoded)
            .map_err(|()| None)
    }

    /// Forgets idle lanes of stopped feeds and drops decoders left by ended visits.
    fn sweep(&mut self) {
        self.lanes
            .retain(|_, lane| !(lane.units.is_empty() && lane.feed.is_stopped()));
        for lane in self.lanes.values_mut() {
            if lane
                .decoder
                .as_ref()
                .is_some_and(|d| !lane.feed.wants(d.epoch))
            {
                lane.decoder = None;
            }
        }
    }
}

/// Freshness: skips a lane's stale units (stopped feed, ended visit) and everything
/// before its newest waiting keyframe. Returns how many units were skipped.
fn coalesce(lane: &mut Lane) -> u64 {
    let before = lane.units.len();
    let feed = &lane.feed;
    lane.units.retain(|u| feed.wants(u.epoch));
    if let Some(newest_key) = lane.units.iter().rposition(|u| u.unit.keyframe) {
        lane.units.drain(..newest_key);
    }
    (before - lane.units.len()) as u64
}

fn record(metrics: &Metrics, feed: &Feed, delta: &DecodeStats) {
    feed.add_decode_stats(delta);
    metrics.decode.observe(delta.decode_time);
    if delta.frames_analysed > 0 {
        metrics.preprocess.observe(delta.preprocess_time);
    }
    feed.counters.frames_decoded.add(delta.frames_decoded);
    metrics.frames_decoded.add(delta.frames_decoded);
}

fn skip(metrics: &Metrics, feed: &Feed, n: u64) {
    if n > 0 {
        metrics.skipped_decode.add(n);
        metrics.units_taken.add(n);
        feed.counters.frames_skipped.add(n);
    }
}

fn same_stream(a: &Arc<dyn StreamParameters>, b: &Arc<dyn StreamParameters>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Camera;
    use crate::models::Catalogue;
    use crate::source::{FileSource, FileStream};

    fn feed(id: &str) -> Arc<Feed> {
        Arc::new(Feed::new(Camera::unconfigured(id), 0, 0.0))
    }

    /// The first `n` keyframes of a shared sample clip as units of `feed`, sampled
    /// keyframes-only, with the clip's parameters.
    fn keyframes(feed: &Arc<Feed>, clip: &str, n: usize) -> Vec<Unit> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/samples")
            .join(clip);
        let (mut source, info) = FileSource::open(&path).unwrap();
        let stream: Arc<dyn StreamParameters> = Arc::new(FileStream::new(&info));
        let mut units = Vec::new();
        while units.len() < n {
            let unit = source.next_unit().unwrap().expect("enough keyframes");
            if unit.keyframe {
                units.push(Unit {
                    feed: feed.clone(),
                    epoch: feed.epoch(),
                    stream: stream.clone(),
                    sampling: Sampling::Keyframes { min_interval: None },
                    unit,
                    received: Instant::now(),
                });
            }
        }
        units
    }

    fn worker(kept_decoders: usize) -> (DecodeWorker, Arc<FrameQueue>) {
        let input = Catalogue::default_input();
        let out = Arc::new(FrameQueue::new(QueuePolicy::Backpressure, 64));
        let worker = DecodeWorker::new(
            QueuePolicy::Freshness,
            8,
            kept_decoders,
            input,
            out.clone(),
            Arc::new(Metrics::default()),
        );
        (worker, out)
    }

    /// Decodes `unit` as soon as it arrives, as a camera's keyframes seconds apart are.
    /// Returns the size of the picture analysed and, when the feed's decoder is kept, how
    /// many units it has decoded, this one included.
    fn decode(
        worker: &mut DecodeWorker,
        out: &FrameQueue,
        unit: Unit,
    ) -> ((u32, u32), Option<u64>) {
        let lane = key(&unit.feed);
        assert!(!worker.take(Message::Unit(unit)));
        assert_eq!(worker.next_lane(), Some(lane));
        worker.decode_next(lane).map_err(|_| "decode").unwrap();
        let samples = out
            .next_batch(64, Duration::ZERO)
            .expect("a decoded sample")
            .take();
        let [sample] = &samples[..] else {
            panic!("{} samples for one keyframe", samples.len())
        };
        let picture = &sample.frame.picture;
        let kept = worker.lanes[&lane].decoder.as_ref();
        (
            (picture.width(), picture.height()),
            kept.map(|d| d.decoder.stats().units_decoded),
        )
    }

    #[test]
    fn an_h265_camera_keeps_its_decoder_until_the_stream_changes_resolution() {
        let (mut worker, out) = worker(8);
        let camera = feed("cam");
        let mut units = keyframes(&camera, "people-walking-1080p-h265.mp4", 3);
        // The camera's stream comes back at another resolution (new parameters).
        units.extend(keyframes(&camera, "people-walking-h265.mp4", 2));
        let decoded: Vec<_> = units
            .into_iter()
            .map(|unit| decode(&mut worker, &out, unit))
            .collect();
        assert_eq!(
            decoded,
            [
                ((1920, 1080), Some(1)),
                ((1920, 1080), Some(2)),
                ((1920, 1080), Some(3)),
                ((768, 432), Some(1)),
                ((768, 432), Some(2)),
            ]
        );
    }

    #[test]
    fn an_h264_camera_opens_a_decoder_per_keyframe() {
        let (mut worker, out) = worker(8);
        let camera = feed("cam");
        for unit in keyframes(&camera, "people-walking.mp4", 2) {
            assert_eq!(decode(&mut worker, &out, unit), ((768, 432), None));
        }
    }

    #[test]
    fn beyond_the_bound_a_camera_does_not_keep_its_decoder_until_one_is_given_up() {
        let (mut worker, out) = worker(2);
        let cameras = ["a", "b", "c"].map(feed);
        let mut units: Vec<_> = cameras
            .iter()
            .map(|c| keyframes(c, "people-walking-h265.mp4", 3).into_iter())
            .collect();
        let mut next = |worker: &mut DecodeWorker, camera: usize| {
            let unit = units[camera].next().unwrap();
            decode(worker, &out, unit).1
        };
        assert_eq!(next(&mut worker, 0), Some(1));
        assert_eq!(next(&mut worker, 1), Some(1));
        assert_eq!(next(&mut worker, 2), None, "two decoders are kept already");
        assert_eq!(next(&mut worker, 0), Some(2));
        // A stopped camera's lane is forgotten, and its decoder with it.
        cameras[1].stop();
        worker.sweep();
        assert_eq!(next(&mut worker, 2), Some(1));
        assert_eq!(next(&mut worker, 2), Some(2));
    }
}
