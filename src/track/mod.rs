//! Tracking stage: follows the objects of one camera from sample to sample, so that rules can
//! ask "how long has this vehicle stood here".
//!
//! Cameras are analysed at 0.2–2 samples/s, not at video rate. Between two samples a moving
//! car jumps far (its boxes do not overlap) while a parked one barely moves, and the detector
//! misses an object for a sample or two. Video-rate trackers (SORT and kin) predict small
//! steps with a Kalman filter; at these rates there is little motion to predict, and what
//! matters is telling "the same car, still parked" from "another car in the same bay" — by
//! overlap, reachable distance and colour [`Appearance`] (see [`Tracker::update`]).

mod appearance;

pub use appearance::Appearance;

use crate::detect::nms::iou;
use crate::detect::Detection;

/// Share of a box trimmed from each side before taking its appearance: a box's edges and
/// corners are mostly road and background, which every car in one bay has in common.
const APPEARANCE_MARGIN: f32 = 0.2;

/// One detection of a sample, with its appearance when the frame's tensor was at hand.
#[derive(Debug, Clone)]
pub struct Observation {
    pub detection: Detection,
    pub appearance: Option<Appearance>,
}

impl Observation {
    /// Takes the appearance from the model input the detection came from: `ratio` is the
    /// letterbox scale from source to model-input pixels (the picture sits at the input's
    /// top-left corner); `width` and `height` are as in [`Appearance::from_levels`].
    pub fn from_frame(
        detection: Detection,
        levels: &[u8],
        width: usize,
        height: usize,
        ratio: f32,
    ) -> Observation {
        let [x1, y1, x2, y2] = detection.bbox.map(|v| v * ratio);
        let (margin_x, margin_y) = ((x2 - x1) * APPEARANCE_MARGIN, (y2 - y1) * APPEARANCE_MARGIN);
        let core = [x1 + margin_x, y1 + margin_y, x2 - margin_x, y2 - margin_y];
        let appearance = Appearance::from_levels(levels, width, height, core);
        Observation {
            detection,
            appearance,
        }
    }
}

/// How detections pair with tracks; the rule itself is described at [`Tracker::update`].
#[derive(Debug, Clone, PartialEq)]
pub struct TrackerConfig {
    /// Samples a track survives without a match.
    pub max_missed: u32,
    /// IoU that alone is enough to pair a (near-)stationary object with its track.
    pub min_iou: f32,
    /// Largest centre displacement per second of a moving object, as a fraction of the frame
    /// diagonal: 0.5 lets a car cross the picture in two seconds.
    pub max_jump: f32,
    /// Appearance similarity below which two boxes are different objects, even in one spot.
    pub min_appearance: f32,
    /// IoU with the box where the object stopped above which it still counts as stationary.
    pub stationary_iou: f32,
    /// Labels that may pair with each other, because detectors flip between them on one
    /// object (car/truck/bus); other labels must be equal. Empty by default: labels come
    /// from the model's configuration, not from COCO.
    pub label_groups: Vec<Vec<String>>,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            max_missed: 3,
            min_iou: 0.3,
            max_jump: 0.5,
            // Histogram intersection: a passer-by hiding up to half of a parked car keeps
            // it, while two distinctly coloured cars share far less than half.
            min_appearance: 0.5,
            stationary_iou: 0.7,
            label_groups: Vec::new(),
        }
    }
}

/// An object followed across samples. Times are sample timestamps in seconds.
#[derive(Debug, Clone)]
pub struct Track {
    /// Unique per [`Tracker`], increasing from 1; never reused.
    pub id: u64,
    /// Label of the latest matched detection.
    pub label: String,
    /// Latest matched box, source pixels.
    pub bbox: [f32; 4],
    pub score: f32,
    pub first_seen: f64,
    pub last_seen: f64,
    /// Since when every matched box stayed within `stationary_iou` of `stationary_bbox`;
    /// equals `first_seen` if the object never moved. This is the dwell clock.
    pub stationary_since: f64,
    /// The box where the object (last) stopped.
    pub stationary_bbox: [f32; 4],
    pub hits: u32,
    /// Consecutive samples without a match; 0 if matched in the latest update.
    pub missed: u32,
    /// Appearance of the latest matched observation that had one.
    pub appearance: Option<Appearance>,
}

impl Track {
    fn start(id: u64, ts: f64, observation: Observation) -> Track {
        let Observation {
            detection,
            appearance,
        } = observation;
        Track {
            id,
            label: detection.label,
            bbox: detection.bbox,
            score: detection.score,
            first_seen: ts,
            last_seen: ts,
            stationary_since: ts,
            stationary_bbox: detection.bbox,
            hits: 1,
            missed: 0,
            appearance,
        }
    }

    /// Seen more than once where it stopped.
    fn is_parked(&self) -> bool {
        self.last_seen > self.stationary_since
    }

    fn absorb(&mut self, ts: f64, observation: Observation, config: &TrackerConfig) {
        let Observation {
            detection,
            appearance,
        } = observation;
        if iou(&self.stationary_bbox, &detection.bbox) < config.stationary_iou {
            self.stationary_bbox = detection.bbox;
            self.stationary_since = ts;
        }
        if appearance.is_some() {
            self.appearance = appearance;
        }
        self.label = detection.label;
        self.bbox = detection.bbox;
        self.score = detection.score;
        self.last_seen = ts;
        self.hits += 1;
        self.missed = 0;
    }
}

/// An admissible (track, observation) pair.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    score: f32,
    track: usize,
    observation: usize,
}

/// Tracks of one camera.
pub struct Tracker {
    config: TrackerConfig,
    /// Frame diagonal, source pixels.
    diagonal: f32,
    tracks: Vec<Track>,
    next_id: u64,
    // Scratch space kept between updates, so that a steady state allocates nothing.
    candidates: Vec<Candidate>,
    observation_groups: Vec<Option<usize>>,
    track_matched: Vec<bool>,
    assignment: Vec<Option<usize>>,
}

impl Tracker {
    /// `frame_width` and `frame_height` are the source picture's, in which boxes are given.
    pub fn new(config: TrackerConfig, frame_width: u32, frame_height: u32) -> Self {
        Self {
            config,
            diagonal: f64::from(frame_width).hypot(f64::from(frame_height)) as f32,
            tracks: Vec::new(),
            next_id: 1,
            candidates: Vec::new(),
            observation_groups: Vec::new(),
            track_matched: Vec::new(),
            assignment: Vec::new(),
        }
    }

    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    /// One analysed sample at time `ts` (seconds, increasing). Returns the live tracks:
    /// those matched now (`missed == 0`) and those missed at most `max_missed` times.
    ///
    /// A track and an observation are admissible when their labels are compatible, and
    /// their boxes overlap by `min_iou` or their centres lie within the distance the track
    /// can cover since it was last seen (`max_jump` × diagonal × seconds), and — when both
    /// have an appearance — their similarity reaches `min_appearance`.
    ///
    /// A parked track (seen more than once where it stopped) is admissible by overlap only.
    /// A long jump from a parked spot is far more often another car passing while the parked
    /// one was missed than the parked one driving off — and if it did drive off, a new id
    /// costs nothing, since its dwell time would restart anyway.
    ///
    /// Admissible pairs are scored IoU + closeness + similarity (each 0..1; closeness is
    /// 1 − distance / diagonal; a missing appearance counts as `min_appearance`, neither for
    /// nor against), so position weighs twice as much as colour, which light and occlusion
    /// disturb more. Pairs are then taken greedily, best score first. Gating leaves few
    /// conflicts at street-camera densities, and greedy settles the common one — a parked
    /// car with a passer-by nearby — the right way round (the overlapping pair wins), where
    /// an optimal assignment could trade that pair for two mediocre ones.
    pub fn update(&mut self, ts: f64, observations: Vec<Observation>) -> &[Track] {
        self.associate(ts, &observations);
        // Matched tracks are reset to 0 as they absorb their observation.
        self.tracks.iter_mut().for_each(|track| track.missed += 1);
        let mut assignment = std::mem::take(&mut self.assignment);
        for (observation, track) in observations.into_iter().zip(assignment.drain(..)) {
            match track {
                Some(t) => self.tracks[t].absorb(ts, observation, &self.config),
                None => {
                    self.tracks
                        .push(Track::start(self.next_id, ts, observation));
                    self.next_id += 1;
                }
            }
        }
        self.assignment = assignment;
        let max_missed = self.config.max_missed;
        self.tracks.retain(|track| track.missed <= max_missed);
        &self.tracks
    }

    /// Fills `assignment`: the index of the track each observation continues, if any.
    fn associate(&mut self, ts: f64, observations: &[Observation]) {
        let config = &self.config;
        self.observation_groups.clear();
        self.observation_groups.extend(
            observations
                .iter()
                .map(|o| label_group(config, &o.detection.label)),
        );
        self.candidates.clear();
        for (t, track) in self.tracks.iter().enumerate() {
            let track_group = label_group(config, &track.label);
            let reach = if track.is_parked() {
                0.0
            } else {
                config.max_jump * self.diagonal * (ts - track.last_seen).max(0.0) as f32
            };
            for (o, observation) in observations.iter().enumerate() {
                let detection = &observation.detection;
                let compatible = track.label == detection.label
                    || (track_group.is_some() && track_group == self.observation_groups[o]);
                if !compatible {
                    continue;
                }
                let overlap = iou(&track.bbox, &detection.bbox);
                let distance = centre_distance(&track.bbox, &detection.bbox);
                if overlap < config.min_iou && distance > reach {
                    continue;
                }
                let similarity = match (&track.appearance, &observation.appearance) {
                    (Some(mine), Some(theirs)) => mine.similarity(theirs),
                    _ => config.min_appearance,
                };
                if similarity < config.min_appearance {
                    continue;
                }
                let closeness = 1.0 - (distance / self.diagonal).min(1.0);
                self.candidates.push(Candidate {
                    score: overlap + closeness + similarity,
                    track: t,
                    observation: o,
                });
            }
        }
        // Indices break ties, so equal scores resolve the same way on every run.
        self.candidates.sort_unstable_by(|a, b| {
            (b.score.total_cmp(&a.score))
                .then(a.track.cmp(&b.track))
                .then(a.observation.cmp(&b.observation))
        });
        self.track_matched.clear();
        self.track_matched.resize(self.tracks.len(), false);
        self.assignment.clear();
        self.assignment.resize(observations.len(), None);
        for c in &self.candidates {
            if !self.track_matched[c.track] && self.assignment[c.observation].is_none() {
                self.track_matched[c.track] = true;
                self.assignment[c.observation] = Some(c.track);
            }
        }
    }
}

/// Index of the label group holding `label`, if any.
fn label_group(config: &TrackerConfig, label: &str) -> Option<usize> {
    config
        .label_groups
        .iter()
        .position(|group| group.iter().any(|l| l == label))
}

fn centre_distance(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let dx = (a[0] + a[2] - b[0] - b[2]) / 2.0;
    let dy = (a[1] + a[3] - b[1] - b[3]) / 2.0;
    dx.hypot(dy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const WIDTH: u32 = 640;
    const HEIGHT: u32 = 480;
    /// The model input is half the source size, as a letterbox would make it.
    const RATIO: f32 = 0.5;
    const RED: [u8; 3] = [200, 30, 30];
    const BLUE: [u8; 3] = [30, 40, 200];
    const BAY: [f32; 4] = [200.0, 200.0, 320.0, 280.0];

    fn detection(label: &str, bbox: [f32; 4]) -> Detection {
        Detection {
            label: label.into(),
            class: 0,
            score: 0.9,
            bbox,
        }
    }

    /// Observations of `cars` (label, box in source pixels, colour), with appearances taken
    /// from one synthetic frame: a grey road with each car a flat patch of its colour.
    fn observe(cars: &[(&str, [f32; 4], [u8; 3])]) -> Vec<Observation> {
        let (w, h) = (
            (WIDTH as f32 * RATIO) as usize,
            (HEIGHT as f32 * RATIO) as usize,
        );
        let mut levels = vec![110; 3 * w * h];
        for (_, bbox, colour) in cars {
            let [x1, y1, x2, y2] = bbox.map(|v| (v * RATIO) as usize);
            for (channel, level) in colour.iter().enumerate() {
                for y in y1..y2.min(h) {
                    for x in x1..x2.min(w) {
                        levels[channel * w * h + y * w + x] = *level;
                    }
                }
            }
        }
        cars.iter()
            .map(|(label, bbox, _)| {
                Observation::from_frame(detection(label, *bbox), &levels, w, h, RATIO)
            })
            .collect()
    }

    /// Observations without appearance: position and label only.
    fn blind(cars: &[(&str, [f32; 4])]) -> Vec<Observation> {
        cars.iter()
            .map(|(label, bbox)| Observation {
                detection: detection(label, *bbox),
                appearance: None,
            })
            .collect()
    }

    /// A few pixels of deterministic detector jitter, different for every sample `i`.
    fn jitter(bbox: [f32; 4], i: usize) -> [f32; 4] {
        let (dx, dy) = (3.0 * (i as f32 * 1.7).sin(), 3.0 * (i as f32 * 2.3).cos());
        [bbox[0] + dx, bbox[1] + dy, bbox[2] - dy, bbox[3] + dx]
    }

    /// (id, missed) of each live track.
    fn states(tracks: &[Track]) -> Vec<(u64, u32)> {
        tracks.iter().map(|t| (t.id, t.missed)).collect()
    }

    fn tracker() -> Tracker {
        Tracker::new(TrackerConfig::default(), WIDTH, HEIGHT)
    }

    #[test]
    fn parked_car_keeps_its_id_across_jittery_samples() {
        let mut tracker = tracker();
        for i in 0..20 {
            let tracks = tracker.update(i as f64 * 2.0, observe(&[("car", jitter(BAY, i), RED)]));
            assert_eq!(states(tracks), [(1, 0)], "sample {i}");
        }
        let track = &tracker.tracks()[0];
        assert_eq!(track.hits, 20);
        assert_eq!(
            (track.first_seen, track.last_seen, track.stationary_since),
            (0.0, 38.0, 0.0)
        );
    }

    #[test]
    fn track_survives_max_missed_samples_and_is_dropped_after() {
        let mut tracker = tracker();
        // Whether the car is detected, and its track's `missed` afterwards (None: dropped).
        let samples = [
            (true, Some(0)),
            (true, Some(0)),
            (false, Some(1)),
            (false, Some(2)),
        ]
        .into_iter()
        .chain([
            (true, Some(0)),
            (false, Some(1)),
            (false, Some(2)),
            (false, Some(3)),
        ])
        .chain([(false, None)]);
        for (i, (seen, missed)) in samples.enumerate() {
            let cars = if seen {
                observe(&[("car", BAY, RED)])
            } else {
                Vec::new()
            };
            let tracks = tracker.update(i as f64 * 2.0, cars);
            assert_eq!(
                states(tracks),
                Vec::from_iter(missed.map(|m| (1, m))),
                "sample {i}"
            );
            if seen {
                assert_eq!(tracks[0].stationary_since, 0.0);
            }
        }
    }

    #[test]
    fn differently_coloured_car_in_the_same_bay_is_a_new_object() {
        let run = |first: Vec<Observation>, second: Vec<Observation>| {
            let mut tracker = tracker();
            for i in 0..5 {
                tracker.update(i as f64 * 2.0, first.clone());
            }
            tracker.update(10.0, Vec::new());
            let track = tracker.update(12.0, second).last().unwrap().clone();
            (track.id, track.stationary_since)
        };
        let red = observe(&[("car", BAY, RED)]);
        let blue = observe(&[("car", BAY, BLUE)]);
        assert_eq!(run(red.clone(), blue), (2, 12.0));
        assert_eq!(run(red.clone(), red), (1, 0.0), "same colour, same car");
        // Without appearance, positions alone cannot tell the two apart.
        let blind_bay = blind(&[("car", BAY)]);
        assert_eq!(run(blind_bay.clone(), blind_bay), (1, 0.0));
    }

    #[test]
    fn fast_cars_keep_their_ids_across_long_jumps() {
        let mut tracker = tracker();
        for i in 0..4 {
            // 150 px/s at 1 sample/s: consecutive boxes (60 px wide) never overlap.
            let step = 150.0 * i as f32;
            let eastbound = [20.0 + step, 100.0, 80.0 + step, 140.0];
            let westbound = [560.0 - step, 300.0, 620.0 - step, 340.0];
            let cars = observe(&[("car", eastbound, RED), ("car", westbound, RED)]);
            let tracks = tracker.update(i as f64, cars);
            let boxes: Vec<_> = tracks.iter().map(|t| (t.id, t.bbox, t.missed)).collect();
            assert_eq!(boxes, [(1, eastbound, 0), (2, westbound, 0)], "sample {i}");
        }
    }

    #[test]
    fn label_flips_keep_the_id_only_within_a_label_group() {
        let vehicles = TrackerConfig {
            label_groups: vec![vec!["car".into(), "truck".into(), "bus".into()]],
            ..TrackerConfig::default()
        };
        let mut grouped = Tracker::new(vehicles, WIDTH, HEIGHT);
        let mut ungrouped = tracker();
        for tracker in [&mut grouped, &mut ungrouped] {
            tracker.update(0.0, observe(&[("car", BAY, RED)]));
            tracker.update(2.0, observe(&[("truck", jitter(BAY, 1), RED)]));
        }
        assert_eq!(states(grouped.tracks()), [(1, 0)]);
        assert_eq!(grouped.tracks()[0].label, "truck");
        assert_eq!(states(ungrouped.tracks()), [(1, 1), (2, 0)]);
    }

    #[test]
    fn stationary_since_restarts_when_moving_and_holds_while_jittering() {
        let moved = |dx: f32| [BAY[0] + dx, BAY[1], BAY[2] + dx, BAY[3]];
        // Parked, then creeping 25 px a sample (each box overlaps the last by IoU 0.66, so the
        // track follows, but not its stop box), then parked again.
        let parked = (0..5).map(|i| jitter(BAY, i));
        let creeping = (1..=3).map(|step| moved(25.0 * step as f32));
        let parked_again = (0..5).map(|i| jitter(moved(75.0), i));
        let mut tracker = tracker();
        let mut stationary_since = Vec::new();
        for (i, bbox) in parked.chain(creeping).chain(parked_again).enumerate() {
            let track = &tracker.update(i as f64 * 2.0, observe(&[("car", bbox, RED)]))[0];
            assert_eq!(track.id, 1);
            stationary_since.push(track.stationary_since);
        }
        let expected = [
            0.0, 0.0, 0.0, 0.0, 0.0, 10.0, 12.0, 14.0, 14.0, 14.0, 14.0, 14.0, 14.0,
        ];
        assert_eq!(stationary_since, expected);
    }

    #[test]
    fn parked_car_is_not_taken_over_by_a_passing_car_while_missed() {
        let mut tracker = tracker();
        for ts in [0.0, 2.0, 4.0] {
            tracker.update(ts, blind(&[("car", BAY)]));
        }
        // The parked car is missed; a car passes 200 px away, well within a jump's reach.
        let passing = tracker.update(6.0, blind(&[("car", [400.0, 220.0, 520.0, 300.0])]));
        assert_eq!(states(passing), [(1, 1), (2, 0)]);
        let passed = [550.0, 220.0, 630.0, 300.0];
        let tracks = tracker.update(8.0, blind(&[("car", BAY), ("car", passed)]));
        assert_eq!(states(tracks), [(1, 0), (2, 0)]);
        assert_eq!((tracks[0].stationary_since, tracks[1].bbox), (0.0, passed));
    }

    proptest! {
        #[test]
        fn ids_are_never_reused_and_live_tracks_are_within_max_missed(
            samples in prop::collection::vec(
                prop::collection::vec(
                    (0..3usize, 0.0..560f32, 0.0..400f32, 10.0..80f32, 10.0..80f32, prop::option::of(0..=255u8)),
                    0..8,
                ),
                1..30,
            ),
            interval in 0.5..5.0f64,
        ) {
            let labels = ["car", "truck", "person"];
            let config = TrackerConfig {
                label_groups: vec![vec!["car".into(), "truck".into()]],
                ..TrackerConfig::default()
            };
            let max_missed = config.max_missed;
            let mut tracker = Tracker::new(config, WIDTH, HEIGHT);
            let (mut live, mut issued): (Vec<u64>, u64) = (Vec::new(), 0);
            for (i, sample) in samples.iter().enumerate() {
                let observations: Vec<Observation> = sample
                    .iter()
                    .map(|&(label, x, y, w, h, level)| Observation {
                        detection: detection(labels[label], [x, y, x + w, y + h]),
                        // A uniform 2 × 2 patch of grey `level`.
                        appearance: level.and_then(|level| {
                            Appearance::from_levels(&[level; 12], 2, 2, [0.0, 0.0, 2.0, 2.0])
                        }),
                    })
                    .collect();
                let tracks = tracker.update(i as f64 * interval, observations);
                prop_assert_eq!(tracks.iter().filter(|t| t.missed == 0).count(), sample.len());
                prop_assert!(tracks.iter().all(|t| t.missed <= max_missed));
                let now: Vec<u64> = tracks.iter().map(|t| t.id).collect();
                prop_assert!(now.windows(2).all(|w| w[0] < w[1]));
                for &id in now.iter().filter(|&id| !live.contains(id)) {
                    prop_assert!(id > issued, "id {} reused (issued up to {})", id, issued);
                }
                issued = issued.max(now.last().copied().unwrap_or(0));
                live = now;
            }
        }
    }
}
