//! Outbox delivery while the daemon runs: its own thread, so a slow or dead endpoint
//! never holds up filing.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::backoff::Backoff;
use crate::sinks::{self, Sink};
use crate::store::Store;

/// Delivers the outbox to every sink every `every`, until `stop` says so; then one last
/// round until `final_deadline`. Undelivered events stay in the outbox for the next run.
pub(super) fn delivery_worker(
    mut store: Store,
    mut sinks: Vec<Box<dyn Sink>>,
    every: Duration,
    stop: Receiver<Instant>,
) {
    let mut backoffs: Vec<Backoff> = sinks
        .iter()
        .map(|_| Backoff::new(Duration::from_millis(200), Duration::from_secs(30)))
        .collect();
    loop {
        let (until, last) = match stop.recv_timeout(every) {
            Err(RecvTimeoutError::Timeout) => (Instant::now() + every, false),
            Ok(deadline) => (deadline, true),
            Err(RecvTimeoutError::Disconnected) => (Instant::now(), true),
        };
        for (sink, backoff) in sinks.iter_mut().zip(&mut backoffs) {
            match sinks::deliver(&mut store, sink.as_mut(), until, backoff) {
                Ok(report) if report.pending > 0 => tracing::warn!(
                    sink = sink.name(),
                    pending = report.pending,
                    error = report.last_error.as_deref().unwrap_or(""),
                    "case events wait in the outbox"
                ),
                Ok(_) => {}
                Err(e) => tracing::error!(sink = sink.name(), error = %e, "outbox unreadable"),
            }
        }
        if last {
            return;
        }
    }
}
