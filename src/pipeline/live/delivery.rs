//! The store's upkeep while the daemon runs, off the filing thread. Outbox delivery: a
//! thread per sink, so a slow or dead endpoint never holds up filing, nor another sink (a
//! hung webhook must not delay the JSONL audit trail beside it); each sink keeps its own
//! cursor in the outbox. Retention: what the store may let go of, pruned in small steps.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::backoff::Backoff;
use crate::config::RetentionSettings;
use crate::pipeline::StoreHealth;
use crate::sinks::{self, Sink};
use crate::store::Store;

/// Records of each kind removed in one transaction: short enough that filing, which
/// waits for the database meanwhile, hardly notices.
const PRUNE_BATCH: usize = 500;

/// Delivers the outbox to `sink` every `every`, until `stop` says so; then one last round
/// until its deadline. Undelivered events stay in the outbox for the next run. A store
/// that cannot record the delivery (a full disk) is reported to `health`, once per outage;
/// the sink gets the events again, and skips them by their keys.
pub(super) fn delivery_worker(
    mut store: Store,
    mut sink: Box<dyn Sink>,
    every: Duration,
    stop: Receiver<Instant>,
    health: &StoreHealth,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        let (until, last) = match stop.recv_timeout(every) {
            Err(RecvTimeoutError::Timeout) => (Instant::now() + every, false),
            Ok(deadline) => (deadline, true),
            Err(RecvTimeoutError::Disconnected) => (Instant::now(), true),
        };
        match sinks::deliver(&mut store, sink.as_mut(), until, &mut backoff) {
            Ok(report) => {
                health.set_outbox_pending(sink.name(), report.pending);
                if report.pending > 0 {
                    tracing::warn!(
                        sink = sink.name(),
                        pending = report.pending,
                        error = report.last_error.as_deref().unwrap_or(""),
                        "case events wait in the outbox"
                    );
                }
            }
            Err(e) => health.failed(&e),
        }
        if last {
            return;
        }
    }
}

/// Prunes what `settings` lets go every `settings.every` (the first round at start), until
/// `stop` is dropped or sends.
pub(super) fn retention_worker(
    mut store: Store,
    settings: RetentionSettings,
    sinks: Vec<String>,
    stop: Receiver<Instant>,
) {
    let retention = settings.retention();
    if retention == crate::store::Retention::default() {
        return;
    }
    loop {
        let mut total = crate::store::Pruned::default();
        loop {
            match store.prune(&retention, &sinks, crate::clock::unix_now(), PRUNE_BATCH) {
                Ok(step) if step.is_empty() => break,
                Ok(step) => {
                    total.outbox_events += step.outbox_events;
                    total.evidence_of += step.evidence_of;
                    total.cases += step.cases;
                }
                Err(e) => {
                    tracing::error!(error = %e, "retention: pruning failed; retried next round");
                    break;
                }
            }
            if !matches!(stop.try_recv(), Err(crossbeam_channel::TryRecvError::Empty)) {
                return;
            }
        }
        if !total.is_empty() {
            tracing::info!(
                outbox_events = total.outbox_events,
                evidence_of_cases = total.evidence_of,
                cases = total.cases,
                "retention: pruned"
            );
        }
        match stop.recv_timeout(settings.every) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}
