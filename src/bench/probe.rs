//! What the harness reads about the pipeline process: CPU time per thread from the OS
//! (`/proc/PID/task/*/stat`), memory from `/proc/PID/status`, and the daemon's own
//! Prometheus metrics.

use std::collections::BTreeMap;
use std::path::Path;

use crate::metrics::HistogramSnapshot;

/// CPU seconds of a process, in all and per thread.
#[derive(Debug, Clone, Default)]
pub struct CpuSample {
    pub total: f64,
    /// By thread id: the thread's name and CPU seconds.
    pub by_thread: BTreeMap<u32, (String, f64)>,
}

impl CpuSample {
    pub fn read(pid: u32) -> std::io::Result<CpuSample> {
        let ticks = clock_ticks();
        let proc = Path::new("/proc").join(pid.to_string());
        let total = stat_seconds(&std::fs::read_to_string(proc.join("stat"))?, ticks);
        let mut by_thread = BTreeMap::new();
        for task in std::fs::read_dir(proc.join("task"))?.flatten() {
            // Threads may end between listing and reading: skip them.
            let (Some(tid), Ok(stat), Ok(name)) = (
                task.file_name().to_str().and_then(|t| t.parse().ok()),
                std::fs::read_to_string(task.path().join("stat")),
                std::fs::read_to_string(task.path().join("comm")),
            ) else {
                continue;
            };
            by_thread.insert(tid, (name.trim().to_string(), stat_seconds(&stat, ticks)));
        }
        Ok(CpuSample { total, by_thread })
    }

    /// CPU seconds since `earlier`, for threads whose name satisfies `matches`. Threads
    /// are told apart by id, so one that ended in between (a pool's idle thread) takes
    /// nothing away; what it used since `earlier` is only in the process's total.
    pub fn since(&self, earlier: &CpuSample, matches: impl Fn(&str) -> bool) -> f64 {
        self.by_thread
            .iter()
            .filter(|(_, (name, _))| matches(name))
            .map(|(tid, (_, s))| s - earlier.by_thread.get(tid).map_or(0.0, |(_, s)| *s))
            .sum::<f64>()
            .max(0.0)
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf reads a constant of the running system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// utime + stime of a `stat` line, in seconds. The command name may hold spaces and
/// parentheses, so fields are counted from the last ')'.
fn stat_seconds(stat: &str, ticks: f64) -> f64 {
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (field(11) + field(12)) / ticks
}

/// A `/proc/PID/status` memory figure (`VmRSS`, `VmHWM`) in MiB.
pub fn memory_mib(pid: u32, key: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let kib: f64 = line
            .strip_prefix(key)?
            .strip_prefix(':')?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    })
}

/// One scrape of the daemon's metrics: every sample by its name and labels.
#[derive(Debug, Clone, Default)]
pub struct Metrics(BTreeMap<String, f64>);

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        Metrics(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let (key, value) = l.rsplit_once(' ')?;
                    Some((key.to_string(), value.parse().ok()?))
                })
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> f64 {
        self.0.get(key).copied().unwrap_or(0.0)
    }

    /// The increase of a counter (or histogram sum) since `earlier`.
    pub fn delta(&self, earlier: &Metrics, key: &str) -> f64 {
        self.get(key) - earlier.get(key)
    }

    /// A histogram's buckets as the daemon rendered them (`None` when it has no such
    /// histogram, or one of other bounds).
    pub fn histogram(&self, name: &str) -> Option<HistogramSnapshot> {
        let prefix = format!("{name}_bucket{{le=\"");
        let mut buckets: Vec<(f64, u64)> = self
            .0
            .iter()
            .filter_map(|(key, &count)| {
                let bound = key.strip_prefix(&prefix)?.strip_suffix("\"}")?;
                let bound = if bound == "+Inf" {
                    f64::INFINITY
                } else {
                    bound.parse().ok()?
                };
                Some((bound, count as u64))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        HistogramSnapshot::from_cumulative(&buckets)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::{Exposition, Histogram};

    #[test]
    fn stat_seconds_counts_from_the_last_parenthesis() {
        let stat = "42 (odd (name) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(stat_seconds(stat, 100.0), 3.0);
    }

    #[test]
    fn the_own_process_is_readable() {
        let sample = CpuSample::read(std::process::id()).unwrap();
        assert!(sample.total >= 0.0 && !sample.by_thread.is_empty());
        assert!(memory_mib(std::process::id(), "VmRSS").unwrap() > 1.0);
    }

    #[test]
    fn a_scraped_histogram_gives_the_quantiles_of_the_window() {
        let latency = Histogram::default();
        let scrape = |h: &Histogram| {
            let mut out = Exposition::default();
            out.histogram("lat", "Latency.", h);
            Metrics::parse(&out.finish())
        };
        for _ in 0..100 {
            latency.observe(Duration::from_secs(60));
        }
        let before = scrape(&latency);
        for _ in 0..100 {
            latency.observe(Duration::from_millis(150));
        }
        let after = scrape(&latency);
        let window = after
            .histogram("lat")
            .unwrap()
            .since(&before.histogram("lat").unwrap());
        assert_eq!(window.count(), 100);
        let p99 = window.quantile(0.99).unwrap().seconds();
        assert!((0.1..=0.15).contains(&p99), "{p99}");
        assert_eq!(after.histogram("missing"), None);
    }
}
