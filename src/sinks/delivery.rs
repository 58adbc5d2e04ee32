//! Moving the store's outbox to a sink: batches in outbox order, each marked delivered
//! only once the sink acknowledged it.

use std::time::Instant;

use super::Sink;
use crate::backoff::Backoff;
use crate::store::{Store, StoreError};

/// Events taken from the outbox per `Sink::deliver` call.
const BATCH: usize = 100;

/// How long a replica's claim on a batch keeps others off it (PostgreSQL): longer than
/// any sink takes to acknowledge a batch; a dead replica's batch is sent again after it.
const CLAIM_LEASE: std::time::Duration = std::time::Duration::from_secs(120);

/// What one delivery run achieved for a sink.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    pub delivered: u64,
    /// Events still waiting when the run ended.
    pub pending: u64,
    pub last_error: Option<String>,
}

/// Delivers the outbox events `sink` has not acknowledged yet, in batches, retrying
/// failures with backoff, until the backlog is empty or `until` passes. Events stay in
/// the outbox until the sink acknowledged them, so nothing is lost while an endpoint is
/// down. Each batch is claimed first ([`Store::claim`]), so replicas sharing a PostgreSQL
/// database never send the same event.
pub fn deliver(
    store: &mut Store,
    sink: &mut dyn Sink,
    until: Instant,
    backoff: &mut Backoff,
) -> Result<Delivery, StoreError> {
    let name = sink.name().to_string();
    let mut report = Delivery::default();
    loop {
        let batch = store.claim(&name, BATCH, CLAIM_LEASE)?;
        if batch.is_empty() {
            break;
        }
        match sink.deliver(&batch) {
            Ok(()) => {
                store.acknowledge(&name, &batch)?;
                report.delivered += batch.len() as u64;
                backoff.reset();
            }
            Err(e) => {
                // Still retried: an operator may fix the endpoint while we wait.
                if e.retryable() {
                    tracing::warn!(sink = %name, error = %e, "delivery failed; will retry");
                } else {
                    tracing::error!(sink = %name, error = %e, "endpoint refuses the events; check its configuration");
                }
                report.last_error = Some(e.to_string());
                store.release(&name, &batch)?;
                let now = Instant::now();
                if now >= until {
                    break;
                }
                std::thread::sleep(backoff.next_delay().min(until - now));
            }
        }
        if Instant::now() >= until {
            break;
        }
    }
    report.pending = store.backlog(&name)?;
    if report.pending == 0 {
        report.last_error = None;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cases::{Changes, NewEvent};
    use crate::sinks::SinkError;
    use crate::store::test_db::{for_each_backend, TestDb};
    use crate::store::OutboxEvent;

    /// Fails its first `failures` deliveries, then records what it received.
    struct Flaky {
        failures: u32,
        received: Vec<String>,
    }

    impl Sink for Flaky {
        fn name(&self) -> &str {
            "flaky"
        }
        fn deliver(&mut self, batch: &[OutboxEvent]) -> Result<(), SinkError> {
            if self.failures > 0 {
                self.failures -= 1;
                return Err(SinkError::Connect {
                    sink: "flaky".into(),
                    reason: "refused".into(),
                });
            }
            self.received
                .extend(batch.iter().map(|e| e.idempotency_key.clone()));
            Ok(())
        }
    }

    fn write_events(store: &mut Store, keys: impl IntoIterator<Item = String>) {
        let events = keys
            .into_iter()
            .map(|key| NewEvent {
                kind: "case.filed".into(),
                payload: serde_json::json!({ "id": key }),
                key,
            })
            .collect();
        store
            .write(&Changes {
                events,
                ..Changes::default()
            })
            .unwrap();
    }

    #[test]
    fn delivery_retries_until_acknowledged_and_then_stops() {
        for_each_backend(|db| {
            let mut store = db.open();
            write_events(&mut store, ["a", "b", "c"].map(String::from));
            let mut sink = Flaky {
                failures: 3,
                received: vec![],
            };
            let mut backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(5));
            let until = Instant::now() + Duration::from_secs(5);
            let report = deliver(&mut store, &mut sink, until, &mut backoff).unwrap();
            assert_eq!((report.delivered, report.pending), (3, 0));
            assert_eq!(sink.received, ["a", "b", "c"]);
            // Nothing is sent twice on the next run.
            let report = deliver(&mut store, &mut sink, until, &mut backoff).unwrap();
            assert_eq!(report.delivered, 0);
            assert_eq!(sink.received.len(), 3);
        });
    }

    /// Several daemons on one PostgreSQL database each run the sink (failing once first):
    /// every event reaches it once.
    #[test]
    fn replicas_sharing_a_database_deliver_each_event_once() {
        let db = TestDb::postgres();
        let keys: Vec<String> = (0..600).map(|i| format!("k{i:04}")).collect();
        write_events(&mut db.open(), keys.clone());
        let replicas: Vec<Vec<String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let mut store = db.open();
                    scope.spawn(move || {
                        let mut sink = Flaky {
                            failures: 1,
                            received: vec![],
                        };
                        let mut backoff =
                            Backoff::new(Duration::from_millis(1), Duration::from_millis(5));
                        let until = Instant::now() + Duration::from_secs(30);
                        deliver(&mut store, &mut sink, until, &mut backoff).unwrap();
                        sink.received
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut all: Vec<String> = replicas.concat();
        all.sort();
        assert_eq!(all, keys, "each event once, none lost");
        assert_eq!(db.open().backlog("flaky").unwrap(), 0);
    }
}
