//! Daemon metrics: lock-free counters and histograms, rendered in the Prometheus text
//! format. Labels are fixed and few (stage, state, queue): per-camera figures live in
//! the camera API, since 7,000 camera ids as label values would swamp a Prometheus server.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

/// Upper bounds (seconds) shared by every latency histogram: 1 ms to 30 s, finer around
/// the 2 s a frame → detection latency target.
const BUCKETS: [f64; 18] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0,
    10.0, 30.0,
];

pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds, so it can be an integer atomic.
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| seconds <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(value.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The smallest bucket bound below which at least `q` of the observations fall
    /// (infinity when they are beyond the last bucket).
    pub fn quantile_bound(&self, q: f64) -> f64 {
        let count = self.count();
        let wanted = (q * count as f64).ceil() as u64;
        let mut seen = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            seen += bucket.load(Ordering::Relaxed);
            if seen >= wanted && count > 0 {
                return *bound;
            }
        }
        f64::INFINITY
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count();
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
        h.observe(Duration::from_secs(60));
        let mut out = Exposition::default();
        out.histograms(
            "cgbot_stage_seconds",
            "Time per stage.",
            "stage",
            &[("decode", &h)],
        );
        let text = out.finish();
        assert!(text.contains("# TYPE cgbot_stage_seconds histogram"));
        assert!(text.contains("cgbot_stage_seconds_bucket{stage=\"decode\",le=\"0.005\"} 1"));
        assert!(text.contains("cgbot_stage_seconds_bucket{stage=\"decode\",le=\"0.05\"} 2"));
        assert!(text.contains("cgbot_stage_seconds_bucket{stage=\"decode\",le=\"30\"} 2"));
        assert!(text.contains("cgbot_stage_seconds_bucket{stage=\"decode\",le=\"+Inf\"} 3"));
        assert!(text.contains("cgbot_stage_seconds_sum{stage=\"decode\"} 60.043"));
        assert!(text.contains("cgbot_stage_seconds_count{stage=\"decode\"} 3"));
    }

    #[test]
    fn quantile_bound_finds_the_bucket() {
        let h = Histogram::default();
        for ms in [1, 2, 3, 4, 5, 6, 7, 8, 9, 400] {
            h.observe(Duration::from_millis(ms));
        }
        assert_eq!(h.quantile_bound(0.5), 0.005);
        assert_eq!(h.quantile_bound(0.99), 0.5);
        assert_eq!(Histogram::default().quantile_bound(0.99), f64::INFINITY);
    }
}
