//! Patrol (轮巡) scheduling: when there are more cameras than the box can watch at once,
//! cameras take turns in a fixed number of slots — connect, take a few samples,
//! disconnect. The camera whose last visit started longest ago goes next, so with N
//! cameras, S slots and visits of at most V, every camera is revisited within about
//! ⌈N / S⌉ × V.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::config::PatrolConfig;

#[derive(Debug)]
struct Visits {
    /// When the camera joined the roster: a camera never visited waits since then.
    joined: Instant,
    last_start: Option<Instant>,
    /// Longest time between the starts of two consecutive visits.
    longest_gap: Option<Duration>,
    count: u64,
    active: bool,
}

/// Visits the measured mean visit length is averaged over: exact for the first ones, then
/// a moving average, so it follows the cameras' current behaviour.
const VISIT_MEAN_SPAN: u32 = 500;

/// The patrol roster: which cameras take part, which are being visited, when each was
/// last visited, and how long visits take.
#[derive(Debug)]
pub struct Patrol {
    config: PatrolConfig,
    cameras: BTreeMap<String, Visits>,
    active: usize,
    finished_visits: u64,
    /// Mean visit length in seconds, once a visit has finished.
    mean_visit_s: Option<f64>,
}

/// Figures about one camera's visits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VisitStats {
    pub visits: u64,
    /// Longest completed gap between the starts of two visits.
    pub longest_gap: Option<Duration>,
    pub active: bool,
    /// Start of the gap still open: the last visit's start, or when the camera joined the
    /// roster if it was never visited.
    pub waiting_since: Instant,
}

impl From<&Visits> for VisitStats {
    fn from(v: &Visits) -> Self {
        VisitStats {
            visits: v.count,
            longest_gap: v.longest_gap,
            active: v.active,
            waiting_since: v.last_start.unwrap_or(v.joined),
        }
    }
}

impl VisitStats {
    /// The worst revisit interval so far: the longest completed gap, or the open one when
    /// the camera has been waiting longer than that.
    pub fn worst_gap(&self, now: Instant) -> Duration {
        let open = now.saturating_duration_since(self.waiting_since);
        self.longest_gap.map_or(open, |gap| gap.max(open))
    }
}

/// The visit length a revisit promise rests on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum VisitLength {
    /// No visit has finished yet: every visit is assumed to run to `visit_timeout`.
    Timeout(Duration),
    /// The mean length of the visits finished lately.
    Measured(Duration),
}

impl VisitLength {
    pub fn duration(self) -> Duration {
        match self {
            VisitLength::Timeout(d) | VisitLength::Measured(d) => d,
        }
    }
}

impl std::fmt::Display for VisitLength {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            VisitLength::Timeout(d) => write!(f, "visit_timeout {}", format_seconds(d)),
            VisitLength::Measured(d) => write!(f, "measured mean visit {}", format_seconds(d)),
        }
    }
}

/// Whole milliseconds below a second, else seconds to a tenth: humantime would print the
/// nanoseconds of a measured mean.
fn format_seconds(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// How often the roster can revisit every camera: ⌈cameras / slots⌉ rounds of `visit`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RevisitPromise {
    pub interval: Duration,
    pub rounds: u32,
    pub visit: VisitLength,
}

impl std::fmt::Display for RevisitPromise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({} rounds of {})",
            format_seconds(self.interval),
            self.rounds,
            self.visit
        )
    }
}

impl Patrol {
    pub fn new(config: PatrolConfig) -> Self {
        Self {
            config,
            cameras: BTreeMap::new(),
            active: 0,
            finished_visits: 0,
            mean_visit_s: None,
        }
    }

    /// Puts a camera on the roster; it waits for its first visit from `now`.
    pub fn add(&mut self, id: &str, now: Instant) {
        self.cameras.entry(id.to_string()).or_insert(Visits {
            joined: now,
            last_start: None,
            longest_gap: None,
            count: 0,
            active: false,
        });
    }

    /// Takes a camera out of the roster; its slot (if it was being visited) is freed.
    pub fn remove(&mut self, id: &str) {
        if self.cameras.remove(id).is_some_and(|v| v.active) {
            self.active -= 1;
        }
    }

    pub fn len(&self) -> usize {
        self.cameras.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cameras.is_empty()
    }

    /// Starts visits in the free slots: never-visited cameras first, then the ones whose
    /// last visit started longest ago. Returns the cameras to visit now.
    pub fn start_visits(&mut self, now: Instant) -> Vec<String> {
        let free = self.config.slots.saturating_sub(self.active);
        if free == 0 {
            return Vec::new();
        }
        let mut waiting: Vec<(&String, Option<Instant>)> = self
            .cameras
            .iter()
            .filter(|(_, v)| !v.active)
            .map(|(id, v)| (id, v.last_start))
            .collect();
        // None sorts first: cameras never visited.
        waiting.sort_by_key(|&(_, last)| last);
        let chosen: Vec<String> = waiting
            .into_iter()
            .take(free)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &chosen {
            let visits = self.cameras.get_mut(id).expect("chosen from the roster");
            if let Some(last) = visits.last_start {
                let gap = now.saturating_duration_since(last);
                visits.longest_gap = Some(visits.longest_gap.map_or(gap, |g| g.max(gap)));
            }
            visits.last_start = Some(now);
            visits.count += 1;
            visits.active = true;
        }
        self.active += chosen.len();
        chosen
    }

    /// A visit ended (samples taken, timed out, or failed): the slot is free again, and
    /// the visit's length counts towards the measured mean.
    pub fn finish(&mut self, id: &str, now: Instant) {
        let Some(visits) = self.cameras.get_mut(id).filter(|v| v.active) else {
            return;
        };
        visits.active = false;
        self.active -= 1;
        let length = visits
            .last_start
            .map_or(Duration::ZERO, |start| now.saturating_duration_since(start));
        self.finished_visits += 1;
        let weight = self.finished_visits.min(u64::from(VISIT_MEAN_SPAN)) as f64;
        let mean = self.mean_visit_s.unwrap_or(0.0);
        self.mean_visit_s = Some(mean + (length.as_secs_f64() - mean) / weight);
    }

    pub fn stats(&self, id: &str) -> Option<VisitStats> {
        self.cameras.get(id).map(VisitStats::from)
    }

    /// The worst revisit interval of any camera on the roster, counting the cameras still
    /// waiting for their next (or first) visit; `None` without cameras.
    pub fn worst_revisit(&self, now: Instant) -> Option<Duration> {
        self.cameras
            .values()
            .map(|visits| VisitStats::from(visits).worst_gap(now))
            .max()
    }

    /// The revisit interval the roster can promise: with the measured mean visit once
    /// visits have finished, before that with every visit running to its timeout.
    pub fn promised_revisit(&self) -> RevisitPromise {
        let slots = self.config.slots.max(1);
        let rounds = self.cameras.len().div_ceil(slots).max(1) as u32;
        let visit = match self.mean_visit_s {
            Some(mean) => VisitLength::Measured(Duration::from_secs_f64(mean)),
            None => VisitLength::Timeout(self.config.visit_timeout),
        };
        RevisitPromise {
            interval: visit.duration() * rounds,
            rounds,
            visit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(slots: usize) -> PatrolConfig {
        PatrolConfig {
            slots,
            samples: 1,
            visit_timeout: Duration::from_secs(10),
            revisit: Duration::from_secs(60),
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn roster(slots: usize, ids: &[&str], joined: Instant) -> Patrol {
        let mut patrol = Patrol::new(config(slots));
        for id in ids {
            patrol.add(id, joined);
        }
        patrol
    }

    #[test]
    fn slots_rotate_through_every_camera_oldest_visit_first() {
        let t0 = Instant::now();
        let mut patrol = roster(2, &["a", "b", "c", "d", "e"], t0);
        assert_eq!(patrol.start_visits(t0), ["a", "b"]);
        assert!(patrol.start_visits(t0).is_empty(), "no free slot");
        patrol.finish("b", t0 + secs(1));
        assert_eq!(patrol.start_visits(t0 + secs(3)), ["c"]);
        patrol.finish("a", t0 + secs(4));
        patrol.finish("c", t0 + secs(4));
        assert_eq!(patrol.start_visits(t0 + secs(5)), ["d", "e"]);
        patrol.finish("d", t0 + secs(6));
        // a and b started earliest (t0); the tie goes by id.
        assert_eq!(patrol.start_visits(t0 + secs(8)), ["a"]);
        let a = patrol.stats("a").unwrap();
        assert_eq!(a.visits, 2);
        assert_eq!(a.longest_gap, Some(secs(8)));
        assert_eq!(a.waiting_since, t0 + secs(8));
        assert!(a.active);
    }

    #[test]
    fn removing_an_active_camera_frees_its_slot() {
        let t0 = Instant::now();
        let mut patrol = roster(1, &["a", "b"], t0);
        assert_eq!(patrol.start_visits(t0), ["a"]);
        patrol.remove("a");
        assert_eq!(patrol.start_visits(t0), ["b"]);
        assert_eq!(patrol.len(), 1);
        // Finishing a camera that is gone or idle changes nothing.
        patrol.finish("a", t0);
        patrol.finish("b", t0);
        patrol.finish("b", t0);
        assert_eq!(patrol.start_visits(t0), ["b"]);
    }

    #[test]
    fn cameras_still_waiting_count_in_the_worst_revisit() {
        let t0 = Instant::now();
        let mut patrol = roster(1, &["a", "b", "c"], t0);
        assert_eq!(patrol.worst_revisit(t0), Some(Duration::ZERO));
        // a is visited at once; b and c wait, never visited, since they joined.
        assert_eq!(patrol.start_visits(t0), ["a"]);
        patrol.finish("a", t0 + secs(5));
        assert_eq!(patrol.stats("c").unwrap().waiting_since, t0);
        assert_eq!(patrol.worst_revisit(t0 + secs(90)), Some(secs(90)));
        // Nothing is completed yet, but the gauge no longer reads 0 while cameras wait.
        assert!(patrol.cameras.values().all(|v| v.longest_gap.is_none()));
        assert_eq!(patrol.start_visits(t0 + secs(100)), ["b"]);
        patrol.finish("b", t0 + secs(105));
        assert_eq!(patrol.start_visits(t0 + secs(110)), ["c"]);
        patrol.finish("c", t0 + secs(115));
        // a's visit started at t0 and it still waits: its open gap is the worst.
        assert_eq!(patrol.worst_revisit(t0 + secs(120)), Some(secs(120)));
        assert_eq!(patrol.start_visits(t0 + secs(130)), ["a"]);
        let a = patrol.stats("a").unwrap();
        assert_eq!(a.longest_gap, Some(secs(130)));
        // A completed gap longer than the open one is kept.
        assert_eq!(a.worst_gap(t0 + secs(140)), secs(130));
        assert_eq!(patrol.worst_revisit(t0 + secs(140)), Some(secs(130)));
        // b's open gap (since t0 + 100) overtakes it.
        assert_eq!(patrol.worst_revisit(t0 + secs(240)), Some(secs(140)));
        assert_eq!(Patrol::new(config(1)).worst_revisit(t0), None);
    }

    #[test]
    fn a_camera_joining_later_waits_from_when_it_joined() {
        let t0 = Instant::now();
        let mut patrol = roster(1, &["a"], t0);
        patrol.add("late", t0 + secs(50));
        // Adding it again (a restart of the same id is remove + add) keeps its clock.
        patrol.add("late", t0 + secs(60));
        assert_eq!(
            patrol.stats("late").unwrap().worst_gap(t0 + secs(80)),
            secs(30)
        );
    }

    #[test]
    fn the_revisit_promise_uses_the_timeout_until_visits_are_measured() {
        let t0 = Instant::now();
        let ids: Vec<String> = (0..500).map(|i| format!("cam-{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut patrol = roster(50, &ids, t0);
        // 10 rounds of the 10 s timeout: beyond nothing, as no visit has finished.
        assert_eq!(
            patrol.promised_revisit(),
            RevisitPromise {
                interval: secs(100),
                rounds: 10,
                visit: VisitLength::Timeout(secs(10)),
            }
        );
        // Visits of 2 s and 4 s: a mean of 3 s, so 10 rounds take 30 s.
        let started = patrol.start_visits(t0);
        for (i, id) in started.iter().enumerate() {
            patrol.finish(id, t0 + secs(if i % 2 == 0 { 2 } else { 4 }));
        }
        let promise = patrol.promised_revisit();
        assert!(matches!(promise.visit, VisitLength::Measured(_)));
        assert!(
            (promise.interval.as_secs_f64() - 30.0).abs() < 1e-6,
            "{promise:?}"
        );
        assert_eq!(
            promise.to_string(),
            "30.0s (10 rounds of measured mean visit 3.0s)"
        );
        assert_eq!(
            VisitLength::Timeout(secs(20)).to_string(),
            "visit_timeout 20.0s"
        );
        assert_eq!(
            VisitLength::Measured(Duration::from_micros(42_600)).to_string(),
            "measured mean visit 42ms"
        );
    }

    #[test]
    fn the_measured_mean_follows_recent_visits() {
        let t0 = Instant::now();
        let mut patrol = roster(1, &["a"], t0);
        let mut now = t0;
        for length in [secs(1); VISIT_MEAN_SPAN as usize]
            .into_iter()
            .chain([secs(9); 4 * VISIT_MEAN_SPAN as usize])
        {
            assert_eq!(patrol.start_visits(now), ["a"]);
            now += length;
            patrol.finish("a", now);
        }
        let mean = patrol.promised_revisit().visit.duration().as_secs_f64();
        assert!(mean > 8.8 && mean < 9.0, "{mean}");
    }
}
