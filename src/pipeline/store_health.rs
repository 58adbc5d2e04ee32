//! Whether the store takes the filing stage's writes. A full disk, an I/O error or a
//! read-only or locked database is an outage: the filing keeps the case changes in memory
//! and retries them, and this says so — once in the log when it starts and once when it
//! ends (not once per frame), on `/readyz` while it lasts, and in the metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metrics::Counter;

/// An outage ends once nothing waits in memory and no write failed for this long, so a
/// camera whose images still cannot be written keeps it open between its samples.
const QUIET: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct StoreHealth {
    /// Case writes and evidence images that failed.
    pub write_failures: Counter,
    pending_rows: AtomicU64,
    missing_images: AtomicU64,
    /// Case events each sink has not acknowledged yet, as of its last delivery round.
    outbox_pending: Mutex<BTreeMap<String, u64>>,
    outage: Mutex<Option<Outage>>,
}

struct Outage {
    /// The first failure's error.
    reason: String,
    since: Instant,
    last_failure: Instant,
    failures_before: u64,
}

impl StoreHealth {
    /// A write of case changes or of an evidence image failed with `error`.
    pub fn failed(&self, error: &dyn std::fmt::Display) {
        self.write_failures.inc();
        let now = Instant::now();
        let mut outage = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        match outage.as_mut() {
            Some(outage) => outage.last_failure = now,
            None => {
                tracing::error!(
                    error = %error,
                    "the store cannot be written; case changes are kept in memory and retried"
                );
                *outage = Some(Outage {
                    reason: error.to_string(),
                    since: now,
                    last_failure: now,
                    failures_before: self.write_failures.get() - 1,
                });
            }
        }
    }

    /// What waits in memory for the store now, all cameras together; ends an outage once
    /// nothing does and the writes have succeeded for a while.
    pub fn waiting(&self, pending_rows: usize, missing_images: usize) {
        self.pending_rows
            .store(pending_rows as u64, Ordering::Relaxed);
        self.missing_images
            .store(missing_images as u64, Ordering::Relaxed);
        let mut outage = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        let over = outage
            .as_ref()
            .is_some_and(|o| pending_rows == 0 && o.last_failure.elapsed() >= QUIET);
        if over {
            let outage = outage.take().expect("checked above");
            tracing::info!(
                lasted_s = outage.since.elapsed().as_secs(),
                failed_writes = self.write_failures.get() - outage.failures_before,
                missing_images,
                "the store takes writes again; the changes kept in memory are written"
            );
        }
    }

    /// Why the daemon is not ready while the store cannot be written.
    pub fn not_ready(&self) -> Option<String> {
        let outage = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        outage.as_ref().map(|o| {
            format!(
                "the store cannot be written ({}); {} rows of case changes wait in memory",
                o.reason,
                self.pending_rows()
            )
        })
    }

    /// Rows of case changes waiting in memory for the store.
    pub fn pending_rows(&self) -> u64 {
        self.pending_rows.load(Ordering::Relaxed)
    }

    /// Evidence images wanted and not written yet.
    pub fn missing_images(&self) -> u64 {
        self.missing_images.load(Ordering::Relaxed)
    }

    /// A delivery round to `sink` ended with `pending` events still in the outbox.
    pub fn set_outbox_pending(&self, sink: &str, pending: u64) {
        let mut backlog = self
            .outbox_pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        backlog.insert(sink.to_string(), pending);
    }

    /// Undelivered case events by sink.
    pub fn outbox_pending(&self) -> Vec<(String, u64)> {
        let backlog = self
            .outbox_pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        backlog.iter().map(|(s, n)| (s.clone(), *n)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_says_why_and_ends_only_when_nothing_waits() {
        let health = StoreHealth::default();
        assert_eq!(health.not_ready(), None);
        health.failed(&"database or disk is full");
        health.failed(&"another error of the same outage");
        health.waiting(12, 1);
        let reason = health.not_ready().unwrap();
        assert!(
            reason.contains("database or disk is full") && reason.contains("12 rows"),
            "{reason}"
        );
        assert_eq!(health.write_failures.get(), 2);
        // Written, but the last failure is recent: still out.
        health.waiting(0, 1);
        assert!(health.not_ready().is_some());
        health.outage.lock().unwrap().as_mut().unwrap().last_failure -= QUIET;
        health.waiting(3, 0);
        assert!(health.not_ready().is_some(), "rows still wait");
        health.waiting(0, 0);
        assert_eq!(health.not_ready(), None);
        assert_eq!((health.pending_rows(), health.missing_images()), (0, 0));
    }
}
