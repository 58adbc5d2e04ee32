//! Patrol (轮巡) scheduling: when there are more cameras than the box can watch at once,
//! cameras take turns in a fixed number of slots — connect, take a few samples,
//! disconnect. The camera whose last visit started longest ago goes next, so with N
//! cameras, S slots and visits of at most V, every camera is revisited within about
//! ⌈N / S⌉ × V.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PatrolConfig {
    /// Cameras visited at the same time; 0 watches every camera continuously.
    pub slots: usize,
    /// Analysed frames that complete a visit.
    pub samples: u32,
    /// Longest visit, connecting included.
    #[serde(with = "crate::config::duration")]
    pub visit_timeout: Duration,
    /// The revisit interval the deployment needs; a warning says when the slots cannot
    /// achieve it.
    #[serde(with = "crate::config::duration")]
    pub revisit: Duration,
}

impl Default for PatrolConfig {
    fn default() -> Self {
        Self {
            slots: 0,
            samples: 2,
            visit_timeout: Duration::from_secs(20),
            revisit: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Default)]
struct Visits {
    last_start: Option<Instant>,
    /// Longest time between the starts of two consecutive visits.
    longest_gap: Option<Duration>,
    count: u64,
    active: bool,
}

/// The patrol roster: which cameras take part, which are being visited, and when each
/// was last visited.
#[derive(Debug)]
pub struct Patrol {
    config: PatrolConfig,
    cameras: BTreeMap<String, Visits>,
    active: usize,
}

/// Figures about one camera's visits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VisitStats {
    pub visits: u64,
    pub longest_gap: Option<Duration>,
    pub active: bool,
}

impl Patrol {
    pub fn new(config: PatrolConfig) -> Self {
        Self {
            config,
            cameras: BTreeMap::new(),
            active: 0,
        }
    }

    pub fn config(&self) -> &PatrolConfig {
        &self.config
    }

    pub fn add(&mut self, id: &str) {
        self.cameras.entry(id.to_string()).or_default();
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

    /// A visit ended (samples taken, timed out, or failed): the slot is free again.
    pub fn finish(&mut self, id: &str) {
        if let Some(visits) = self.cameras.get_mut(id).filter(|v| v.active) {
            visits.active = false;
            self.active -= 1;
        }
    }

    pub fn stats(&self, id: &str) -> Option<VisitStats> {
        self.cameras.get(id).map(|v| VisitStats {
            visits: v.count,
            longest_gap: v.longest_gap,
            active: v.active,
        })
    }

    /// The revisit interval the roster guarantees when every visit runs to its timeout.
    pub fn guaranteed_revisit(&self) -> Duration {
        let slots = self.config.slots.max(1);
        let rounds = self.cameras.len().div_ceil(slots).max(1) as u32;
        self.config.visit_timeout * rounds
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

    #[test]
    fn slots_rotate_through_every_camera_oldest_visit_first() {
        let mut patrol = Patrol::new(config(2));
        for id in ["a", "b", "c", "d", "e"] {
            patrol.add(id);
        }
        let t0 = Instant::now();
        assert_eq!(patrol.start_visits(t0), ["a", "b"]);
        assert!(patrol.start_visits(t0).is_empty(), "no free slot");
        patrol.finish("b");
        assert_eq!(patrol.start_visits(t0 + Duration::from_secs(3)), ["c"]);
        patrol.finish("a");
        patrol.finish("c");
        assert_eq!(patrol.start_visits(t0 + Duration::from_secs(5)), ["d", "e"]);
        patrol.finish("d");
        // a and b started earliest (t0); the tie goes by id.
        assert_eq!(patrol.start_visits(t0 + Duration::from_secs(8)), ["a"]);
        let a = patrol.stats("a").unwrap();
        assert_eq!(a.visits, 2);
        assert_eq!(a.longest_gap, Some(Duration::from_secs(8)));
        assert!(a.active);
    }

    #[test]
    fn removing_an_active_camera_frees_its_slot() {
        let mut patrol = Patrol::new(config(1));
        patrol.add("a");
        patrol.add("b");
        assert_eq!(patrol.start_visits(Instant::now()), ["a"]);
        patrol.remove("a");
        assert_eq!(patrol.start_visits(Instant::now()), ["b"]);
        assert_eq!(patrol.len(), 1);
        // Finishing a camera that is gone or idle changes nothing.
        patrol.finish("a");
        patrol.finish("b");
        patrol.finish("b");
        assert_eq!(patrol.start_visits(Instant::now()), ["b"]);
    }

    #[test]
    fn guaranteed_revisit_is_rounds_times_visit_length() {
        let mut patrol = Patrol::new(config(50));
        for i in 0..500 {
            patrol.add(&format!("cam-{i}"));
        }
        assert_eq!(patrol.guaranteed_revisit(), Duration::from_secs(100));
    }
}
