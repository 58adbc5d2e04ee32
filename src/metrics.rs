//! Daemon metrics: lock-free counters and histograms, rendered in the Prometheus text
//! format. Labels are fixed and few (stage, state, queue): per-camera figures live in
//! the camera API, since 7,000 camera ids as label values would swamp a Prometheus server.

use std::fmt::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds (seconds) shared by every latency histogram: 1 ms to 1,000 s in steps of
/// 1, 1.5, 2, 3, 4, 5, 7 per decade, so neighbours are at most 1.5× apart and a quantile
/// read from the buckets is off by less than one step. Latency under overload and patrol
/// revisits reach minutes, hence the long top end.
const BUCKETS: [f64; 43] = [
    0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.007, //
    0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.07, //
    0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.7, //
    1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0, //
    10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 70.0, //
    100.0, 150.0, 200.0, 300.0, 400.0, 500.0, 700.0, //
    1000.0,
];

/// One counter per bucket, the last for observations beyond every bound.
const SLOTS: usize = BUCKETS.len() + 1;

pub struct Histogram {
    counts: [AtomicU64; SLOTS],
    /// Sum in microseconds, so it can be an integer atomic.
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        let slot = BUCKETS.partition_point(|&bound| bound < seconds);
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(value.as_micros() as u64, Ordering::Relaxed);
    }

    /// Everything observed, added up.
    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_micros.load(Ordering::Relaxed))
    }

    /// The bucket counts now; `later.since(&earlier)` gives the observations in between.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
        }
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let snapshot = self.snapshot();
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(&snapshot.counts) {
            cumulative += count;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = snapshot.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {count}", braces(labels));
    }
}

/// A histogram's bucket counts at one moment. The difference of two gives the
/// distribution over a window (the status line's last 30 s, a benchmark's measurement).
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Observations per bucket (not cumulative), the last beyond every bound.
    counts: [u64; SLOTS],
}

impl Default for HistogramSnapshot {
    fn default() -> Self {
        Self { counts: [0; SLOTS] }
    }
}

/// A quantile read from histogram buckets, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantile {
    /// Interpolated within its bucket.
    Seconds(f64),
    /// Beyond the largest bucket bound (this many seconds): only a lower bound is known.
    Over(f64),
}

impl Quantile {
    /// The figure in seconds; for `Over`, the bound it lies beyond.
    pub fn seconds(self) -> f64 {
        match self {
            Quantile::Seconds(s) | Quantile::Over(s) => s,
        }
    }
}

/// Seconds with the formatter's precision (3 places by default); `>1000` when over.
impl fmt::Display for Quantile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match *self {
            Quantile::Seconds(s) => format!("{s:.*}", f.precision().unwrap_or(3)),
            Quantile::Over(bound) => format!(">{bound}"),
        };
        f.write_str(&text)
    }
}

impl HistogramSnapshot {
    /// Rebuilds a snapshot from Prometheus cumulative bucket counts `(le, count)` in
    /// ascending order, `+Inf` last, as [`Exposition`] writes them. `None` unless the
    /// bounds are this build's.
    pub fn from_cumulative(buckets: &[(f64, u64)]) -> Option<Self> {
        let bounds_match = buckets.len() == SLOTS
            && buckets.iter().zip(&BUCKETS).all(|(&(le, _), &b)| le == b)
            && buckets[SLOTS - 1].0 == f64::INFINITY;
        if !bounds_match {
            return None;
        }
        let mut previous = 0;
        Some(Self {
            counts: std::array::from_fn(|i| {
                let count = buckets[i].1.saturating_sub(previous);
                previous = buckets[i].1;
                count
            }),
        })
    }

    /// The observations made after `earlier` was taken.
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: std::array::from_fn(|i| self.counts[i].saturating_sub(earlier.counts[i])),
        }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile (0 to 1), interpolated linearly within its bucket as Prometheus'
    /// `histogram_quantile` does; `Over` when it lies beyond the largest bound; `None`
    /// without observations.
    pub fn quantile(&self, q: f64) -> Option<Quantile> {
        let rank = q.clamp(0.0, 1.0) * self.count() as f64;
        let mut below = 0;
        for (slot, &count) in self.counts.iter().enumerate() {
            let through = below + count;
            // Empty buckets are skipped so that q = 0 lands on the first observation.
            if count > 0 && through as f64 >= rank {
                let Some(&upper) = BUCKETS.get(slot) else {
                    return Some(Quantile::Over(BUCKETS[BUCKETS.len() - 1]));
                };
                let lower = slot.checked_sub(1).map_or(0.0, |i| BUCKETS[i]);
                let share = (rank - below as f64) / count as f64;
                return Some(Quantile::Seconds(lower + (upper - lower) * share));
            }
            below = through;
        }
        None
    }
}

/// Writes Prometheus text exposition, one metric family at a time.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, "counter", help);
        let _ = writeln!(self.text, "{name} {value}");
    }

    /// One family with a single label, e.g. `stage="decode"`.
    pub fn labelled(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        label: &str,
        values: &[(&str, f64)],
    ) {
        self.header(name, kind, help);
        for (value_label, value) in values {
            let _ = writeln!(self.text, "{name}{{{label}=\"{value_label}\"}} {value}");
        }
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.header(name, "gauge", help);
        let _ = writeln!(self.text, "{name} {value}");
    }

    pub fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) {
        self.header(name, "histogram", help);
        histogram.render(&mut self.text, name, "");
    }

    /// One histogram family split by a label, e.g. per pipeline stage.
    pub fn histograms(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        parts: &[(&str, &Histogram)],
    ) {
        self.header(name, "histogram", help);
        for (value, histogram) in parts {
            histogram.render(&mut self.text, name, &format!("{label}=\"{value}\""));
        }
    }

    pub fn finish(self) -> String {
        self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_sum_in_seconds() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(40));
        h.observe(Duration::from_secs(2000));
        let mut out = Exposition::default();
        out.histograms(
            "cgbot_stage_seconds",
            "Time per stage.",
            "stage",
            &[("decode", &h)],
        );
        let text = out.finish();
        assert!(text.contains("# TYPE cgbot_stage_seconds histogram"));
        assert!(text.contains("cgbot_stage_seconds_bucket{stage=\"decode\",le=\"0.003\"} 1"));
        assert!(text.contains("cgbot_stage_seconds_bucket{stage=\"decode\",le=\"0.04\"} 2"));
        assert!(text.contains("cgbot_stage_seconds_bucket{stage=\"decode\",le=\"1000\"} 2"));
        assert!(text.contains("cgbot_stage_seconds_bucket{stage=\"decode\",le=\"+Inf\"} 3"));
        assert!(text.contains("cgbot_stage_seconds_sum{stage=\"decode\"} 2000.043"));
        assert!(text.contains("cgbot_stage_seconds_count{stage=\"decode\"} 3"));
    }

    #[test]
    fn buckets_leave_no_gap_wider_than_half_again() {
        assert_eq!(BUCKETS[0], 0.001);
        assert!(BUCKETS[BUCKETS.len() - 1] >= 300.0);
        for pair in BUCKETS.windows(2) {
            let ratio = pair[1] / pair[0];
            assert!(ratio > 1.0 && ratio <= 1.5, "{} → {}", pair[0], pair[1]);
        }
    }

    /// The bucket `(lower, upper]` holding `seconds`.
    fn bucket_of(seconds: f64) -> (f64, f64) {
        let slot = BUCKETS.partition_point(|&b| b < seconds);
        (
            slot.checked_sub(1).map_or(0.0, |i| BUCKETS[i]),
            BUCKETS[slot],
        )
    }

    #[test]
    fn quantiles_of_a_known_distribution_fall_in_the_true_bucket() {
        // Uniform over 2 ms … 20 s: the true p50 is 10 s, the p99 19.8 s.
        let h = Histogram::default();
        for i in 1..=10_000 {
            h.observe(Duration::from_millis(2 * i));
        }
        for (q, truth) in [(0.5, 10.0), (0.9, 18.0), (0.99, 19.8)] {
            let Some(Quantile::Seconds(answer)) = h.snapshot().quantile(q) else {
                panic!("p{q} not within the buckets");
            };
            let (lower, upper) = bucket_of(truth);
            assert!(
                (lower..=upper).contains(&answer),
                "p{q}: {answer} outside ({lower}, {upper}]"
            );
        }
    }

    #[test]
    fn a_15_s_tail_reads_as_15_s_not_as_the_next_coarse_bound() {
        // The old buckets (10 s, then 30 s) answered 29 s for this.
        let h = Histogram::default();
        for _ in 0..985 {
            h.observe(Duration::from_millis(100));
        }
        for _ in 0..15 {
            h.observe(Duration::from_secs(15));
        }
        let p99 = h.snapshot().quantile(0.99).unwrap();
        assert!(
            matches!(p99, Quantile::Seconds(s) if (10.0..=15.0).contains(&s)),
            "{p99:?}"
        );
        let p50 = h.snapshot().quantile(0.5).unwrap().seconds();
        assert!((0.07..=0.1).contains(&p50), "{p50}");
    }

    #[test]
    fn a_quantile_beyond_the_buckets_says_so() {
        let h = Histogram::default();
        h.observe(Duration::from_secs(1));
        h.observe(Duration::from_secs(5000));
        let p99 = h.snapshot().quantile(0.99).unwrap();
        assert_eq!(p99, Quantile::Over(1000.0));
        assert_eq!(p99.to_string(), ">1000");
        assert_eq!(format!("{:.2}", Quantile::Seconds(1.234)), "1.23");
        assert_eq!(Histogram::default().snapshot().quantile(0.99), None);
    }

    #[test]
    fn a_window_holds_only_the_observations_after_its_start() {
        let h = Histogram::default();
        for _ in 0..100 {
            h.observe(Duration::from_secs(60));
        }
        let start = h.snapshot();
        for _ in 0..10 {
            h.observe(Duration::from_millis(20));
        }
        let window = h.snapshot().since(&start);
        assert_eq!(window.count(), 10);
        let p99 = window.quantile(0.99).unwrap().seconds();
        assert!((0.015..=0.02).contains(&p99), "{p99}");
        assert_eq!(start.since(&start).quantile(0.5), None);
    }

    #[test]
    fn a_rendered_histogram_reads_back_as_its_snapshot() {
        let h = Histogram::default();
        for ms in [1, 3, 40, 400, 4000, 4_000_000] {
            h.observe(Duration::from_millis(ms));
        }
        let mut cumulative = 0;
        let mut buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .zip(&h.snapshot().counts)
            .map(|(&b, &n)| {
                cumulative += n;
                (b, cumulative)
            })
            .collect();
        buckets.push((f64::INFINITY, h.snapshot().count()));
        assert_eq!(
            HistogramSnapshot::from_cumulative(&buckets),
            Some(h.snapshot())
        );
        buckets.remove(3);
        assert_eq!(HistogramSnapshot::from_cumulative(&buckets), None);
    }
}
