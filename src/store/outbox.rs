//! The outbox as the sinks see it. With SQLite one daemon delivers, and a cursor per sink
//! records how far. With PostgreSQL several replicas deliver at once: each event is
//! claimed per sink for a while (a row in `outbox_deliveries`, taken with
//! `FOR UPDATE SKIP LOCKED` and an upsert that only takes a free or expired claim), so no
//! two replicas send the same event; a replica that dies mid-batch leaves claims that
//! expire and are taken again.

use std::time::Duration;

use super::sql::{vals, Db, DbError, Dialect, Row};
use super::{OutboxEvent, Store, StoreError};

/// Events of `outbox` not acknowledged by sink `?1` (PostgreSQL).
const UNDELIVERED: &str = "NOT EXISTS (SELECT 1 FROM outbox_deliveries d
     WHERE d.sink = ?1 AND d.seq = outbox.seq AND d.delivered_at IS NOT NULL)";

/// Events after sink `?1`'s cursor (SQLite).
const AFTER_CURSOR: &str =
    "seq > COALESCE((SELECT delivered_seq FROM outbox_cursor WHERE sink = ?1), 0)";

fn event(r: &Row) -> Result<OutboxEvent, DbError> {
    let payload = r.text(3)?;
    Ok(OutboxEvent {
        seq: r.int(0)?,
        idempotency_key: r.text(1)?,
        kind: r.text(2)?,
        payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload)),
    })
}

fn waiting(d: Dialect) -> &'static str {
    match d {
        Dialect::Sqlite => AFTER_CURSOR,
        Dialect::Postgres => UNDELIVERED,
    }
}

impl Store {
    /// Outbox events not yet delivered to `sink`, oldest first (claimed or not).
    pub fn pending(&self, sink: &str, limit: usize) -> Result<Vec<OutboxEvent>, StoreError> {
        let sql = format!(
            "SELECT seq, key, kind, payload FROM outbox WHERE {} ORDER BY seq LIMIT ?2",
            waiting(self.db.dialect())
        );
        self.query_map(&sql, &vals![sink, limit as i64], event)
    }

    /// Records that `sink` acknowledged every event up to `seq`.
    pub fn mark_delivered(&mut self, sink: &str, seq: i64) -> Result<(), StoreError> {
        let now = crate::clock::unix_now();
        let sql = match self.db.dialect() {
            Dialect::Sqlite => {
                "INSERT INTO outbox_cursor (sink, delivered_seq) VALUES (?1, ?2)
                 ON CONFLICT(sink) DO UPDATE SET delivered_seq =
                    MAX(outbox_cursor.delivered_seq, excluded.delivered_seq)"
            }
            Dialect::Postgres => {
                "INSERT INTO outbox_deliveries (sink, seq, delivered_at)
                 SELECT ?1, seq, ?3 FROM outbox WHERE seq <= ?2
                 ON CONFLICT (sink, seq) DO UPDATE
                 SET delivered_at = COALESCE(outbox_deliveries.delivered_at, excluded.delivered_at)"
            }
        };
        let args = match self.db.dialect() {
            Dialect::Sqlite => vals![sink, seq].to_vec(),
            Dialect::Postgres => vals![sink, seq, now].to_vec(),
        };
        self.db
            .execute(sql, &args)
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// Events waiting for `sink`.
    pub fn backlog(&self, sink: &str) -> Result<u64, StoreError> {
        let sql = format!(
            "SELECT COUNT(*) FROM outbox WHERE {}",
            waiting(self.db.dialect())
        );
        self.db
            .query_one(&sql, &vals![sink])
            .and_then(|r| r.count(0))
            .map_err(|e| self.sql(e))
    }

    /// Up to `limit` events for `sink` that this process, and no other, is to send now,
    /// oldest first. With PostgreSQL each is claimed for `lease`: acknowledge them with
    /// [`Store::acknowledge`] once the sink has them, or [`Store::release`] them on a
    /// failure; claims not acknowledged within `lease` go to whichever replica asks next.
    pub fn claim(
        &mut self,
        sink: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        if self.db.dialect() == Dialect::Sqlite {
            return self.pending(sink, limit);
        }
        let now = crate::clock::unix_now();
        let claimed = self.db.transaction().and_then(|tx| {
            let events = claim(
                &tx,
                sink,
                &self.replica,
                limit,
                now,
                now + lease.as_secs_f64(),
            )?;
            tx.commit()?;
            Ok(events)
        });
        claimed.map_err(|e| self.sql(e))
    }

    /// Records that `sink` acknowledged `events` (claimed with [`Store::claim`]).
    pub fn acknowledge(&mut self, sink: &str, events: &[OutboxEvent]) -> Result<(), StoreError> {
        let Some(last) = events.iter().map(|e| e.seq).max() else {
            return Ok(());
        };
        if self.db.dialect() == Dialect::Sqlite {
            return self.mark_delivered(sink, last);
        }
        let now = crate::clock::unix_now();
        let done = self.db.transaction().and_then(|tx| {
            for e in events {
                tx.execute(
                    "UPDATE outbox_deliveries SET delivered_at = ?3 WHERE sink = ?1 AND seq = ?2",
                    &vals![sink, e.seq, now],
                )?;
            }
            tx.commit()
        });
        done.map_err(|e| self.sql(e))
    }

    /// Gives back this process's claims on `events` that `sink` did not acknowledge, so
    /// the next attempt (here or on another replica) takes them in order.
    pub fn release(&mut self, sink: &str, events: &[OutboxEvent]) -> Result<(), StoreError> {
        if self.db.dialect() == Dialect::Sqlite {
            return Ok(());
        }
        let done = self.db.transaction().and_then(|tx| {
            for e in events {
                tx.execute(
                    "DELETE FROM outbox_deliveries
                     WHERE sink = ?1 AND seq = ?2 AND claimed_by = ?3 AND delivered_at IS NULL",
                    &vals![sink, e.seq, &self.replica],
                )?;
            }
            tx.commit()
        });
        done.map_err(|e| self.sql(e))
    }
}

/// Claims for `replica` until `until` up to `limit` of `sink`'s events that are neither
/// delivered nor claimed by a live claim at `now`. Rows another replica is claiming at
/// this moment are skipped, not waited for; the upsert takes a claim only if it is
/// still free or expired when it runs, so two replicas never both hold one.
fn claim(
    tx: &Db,
    sink: &str,
    replica: &str,
    limit: usize,
    now: f64,
    until: f64,
) -> Result<Vec<OutboxEvent>, DbError> {
    let candidates = tx.query(
        "SELECT seq, key, kind, payload FROM outbox
         WHERE NOT EXISTS (SELECT 1 FROM outbox_deliveries d
            WHERE d.sink = ?1 AND d.seq = outbox.seq
              AND (d.delivered_at IS NOT NULL OR d.claimed_until > ?2))
         ORDER BY seq LIMIT ?3 FOR UPDATE SKIP LOCKED",
        &vals![sink, now, limit as i64],
    )?;
    let mut claimed = Vec::new();
    for row in &candidates {
        let event = event(row)?;
        let taken = tx.query(
            "INSERT INTO outbox_deliveries (sink, seq, claimed_by, claimed_until)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (sink, seq) DO UPDATE
             SET claimed_by = excluded.claimed_by, claimed_until = excluded.claimed_until
             WHERE outbox_deliveries.delivered_at IS NULL
               AND (outbox_deliveries.claimed_until IS NULL OR outbox_deliveries.claimed_until <= ?5)
             RETURNING seq",
            &vals![sink, event.seq, replica, until, now],
        )?;
        if !taken.is_empty() {
            claimed.push(event);
        }
    }
    Ok(claimed)
}
