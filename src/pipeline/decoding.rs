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
        input: InputSpec,
        out: Arc<FrameQueue>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            policy,
            per_feed: per_feed.max(1),
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
        if unit.sampling.keyframes_only() && lane.units.is_empty() && fresh {
            // A camera's next keyframe is seconds away: dropping the context frees its
            // picture pools (megabytes per camera) for a fraction of a millisecond of
            // set-up per sample.
            lane.decoder = None;
        }
        record(&self.metrics, &lane.feed, &delta);
        let feed = lane.feed.clone();
        self.emit(&feed, unit.epoch, unit.received, decoded)
            .map_err(|()| None)
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
