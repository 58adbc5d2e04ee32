//! Outbox delivery while the daemon runs: a thread per sink, so a slow or dead endpoint
//! never holds up filing, nor another sink (a hung webhook must not delay the JSONL audit
//! trail beside it). Each sink keeps its own cursor in the outbox.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::backoff::Backoff;
use crate::sinks::{self, Sink};
use crate::store::Store;

/// Delivers the outbox to `sink` every `every`, until `stop` says so; then one last round
/// until its deadline. Undelivered events stay in the outbox for the next run.
pub(super) fn delivery_worker(
    mut store: Store,
    mut sink: Box<dyn Sink>,
    every: Duration,
    stop: Receiver<Instant>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        let (until, last) = match stop.recv_timeout(every) {
            Err(RecvTimeoutError::Timeout) => (Instant::now() + every, false),
            Ok(deadline) => (deadline, true),
            Err(RecvTimeoutError::Disconnected) => (Instant::now(), true),
        };
        match sinks::deliver(&mut store, sink.as_mut(), until, &mut backoff) {
            Ok(report) if report.pending > 0 => tracing::warn!(
                sink = sink.name(),
                pending = report.pending,
                error = report.last_error.as_deref().unwrap_or(""),
                "case events wait in the outbox"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(sink = sink.name(), error = %e, "outbox unreadable"),
        }
        if last {
            return;
        }
    }
}
