//! Store stage: SQLite (WAL, versioned migrations) holding cases, their evidence and
//! history, and the outbox that feeds the sinks. Each analysed sample's changes are one
//! transaction, so a crash leaves either all of a sample's case changes and their outbox
//! events or none of them; case ids are deterministic, so re-processing the same input
//! updates the same rows instead of adding new ones.
//!
//! Operators' actions ([`Store::operator_action`], [`Store::lift_suppression`]) bump a
//! per-camera change number in the same transaction; the daemon writes a camera's samples
//! with [`Store::write_guarded`], which refuses when that number moved since the daemon
//! last loaded the camera's cases, so an operator's decision is never overwritten by a
//! stale in-memory copy.

mod operator;
mod replicas;
mod retention;
mod stats;

pub use operator::AuditEntry;
pub use retention::{Pruned, Retention};
pub use stats::{DayCount, EventPrecision, Stats};

pub use crate::cases::{OperatorAction, RejectReason, Suppression};

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::cases::{Case, CaseError, Changes, Evidence, HistoryEntry, Status};

/// Schema versions, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: cases as JSON documents with the columns we filter and sort on.
    "CREATE TABLE cases (
        id TEXT PRIMARY KEY,
        camera_id TEXT NOT NULL,
        status TEXT NOT NULL,
        category_code TEXT NOT NULL,
        first_seen REAL NOT NULL,
        updated_at REAL NOT NULL,
        data TEXT NOT NULL
     );
     CREATE INDEX cases_by_camera ON cases(camera_id, status);
     CREATE INDEX cases_by_time ON cases(first_seen);
     CREATE TABLE evidence (
        case_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        path TEXT NOT NULL,
        ts REAL NOT NULL,
        PRIMARY KEY (case_id, kind)
     );
     CREATE TABLE history (
        case_id TEXT NOT NULL,
        ts REAL NOT NULL,
        from_status TEXT,
        to_status TEXT NOT NULL,
        actor TEXT NOT NULL,
        note TEXT
     );
     CREATE INDEX history_by_case ON history(case_id, ts);
     CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at REAL NOT NULL
     );
     CREATE TABLE outbox_cursor (
        sink TEXT PRIMARY KEY,
        delivered_seq INTEGER NOT NULL
     );",
    // 2: operators' decisions. A change number per camera, bumped by every operator
    // action on its cases or suppressions (the daemon's writes check it); false-positive
    // suppressions; every candidate ever found, for statistics (candidates that leave are
    // deleted from `cases`); the audit log. Case events are now numbered by the case's
    // recorded transitions: existing cases start from their history's length, above any
    // number their earlier event keys used.
    "CREATE TABLE operator_changes (
        camera_id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL
     );
     CREATE TABLE suppressions (
        id INTEGER PRIMARY KEY,
        camera_id TEXT NOT NULL,
        zone_id TEXT NOT NULL,
        event TEXT NOT NULL,
        bbox TEXT NOT NULL,
        case_id TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at REAL NOT NULL,
        until REAL NOT NULL,
        lifted_at REAL,
        lifted_by TEXT,
        hits INTEGER NOT NULL DEFAULT 0,
        last_hit REAL
     );
     CREATE INDEX suppressions_by_camera ON suppressions(camera_id, until);
     CREATE TABLE found (
        case_id TEXT PRIMARY KEY,
        camera_id TEXT NOT NULL,
        event TEXT NOT NULL,
        category_code TEXT NOT NULL,
        category_name TEXT NOT NULL,
        first_seen REAL NOT NULL
     );
     CREATE INDEX found_by_time ON found(first_seen);
     INSERT OR IGNORE INTO found (case_id, camera_id, event, category_code, category_name, first_seen)
        SELECT id, camera_id, json_extract(data, '$.event'), category_code,
               json_extract(data, '$.category.name'), first_seen FROM cases;
     CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL
     );
     UPDATE cases SET data = json_set(data, '$.transitions',
        (SELECT COUNT(*) FROM history WHERE history.case_id = cases.id));",
    // 3: replicas sharing the database (see crate::cluster): each renews its lease here.
    "CREATE TABLE replicas (
        name TEXT PRIMARY KEY,
        capacity REAL NOT NULL,
        started REAL NOT NULL,
        heartbeat_at REAL NOT NULL,
        lease_until REAL NOT NULL,
        api TEXT NOT NULL
     );",
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Sql {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database {path}: schema version {found} is newer than this cgbot knows ({known}); upgrade cgbot")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: usize,
    },
    #[error("database {path}: case {id} holds unreadable data: {reason}")]
    Corrupt {
        path: PathBuf,
        id: String,
        reason: String,
    },
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    /// An operator changed the camera's cases or suppressions since the writer loaded
    /// them: reload and process again.
    #[error("database {path}: camera {camera}'s cases were changed by an operator (change {found}, the writer had loaded change {seen}); reload them and retry")]
    Conflict {
        path: PathBuf,
        camera: String,
        seen: i64,
        found: i64,
    },
    /// The lifecycle does not allow an operator's action.
    #[error(transparent)]
    Operator(#[from] CaseError),
    #[error("database {path}: no {what} {id}")]
    NotFound {
        path: PathBuf,
        /// `case` or `suppression`.
        what: &'static str,
        id: String,
    },
}

/// One case event from the outbox. Serialized as is, this is the wire format of the sinks.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OutboxEvent {
    /// Outbox order (increasing).
    pub seq: i64,
    /// Stable per case event: `{case id}:{kind}:{transitions}`, e.g. `C3f2a…:filed:2`.
    pub idempotency_key: String,
    /// e.g. `case.filed`, `case.closed`.
    pub kind: String,
    pub payload: serde_json::Value,
}

/// Which cases to read; every field left `None` matches all.
#[derive(Debug, Clone, Default)]
pub struct CaseFilter {
    pub status: Option<Status>,
    pub camera: Option<String>,
    /// Event name, e.g. `illegal_parking`.
    pub event: Option<String>,
    /// First seen at or after this Unix time.
    pub since: Option<f64>,
    /// First seen before this Unix time.
    pub until: Option<f64>,
    /// At most this many, the oldest first (the newest with `newest_first`).
    pub limit: Option<usize>,
    /// Only cases past their deadline and still open (`Some(true)`), or only the others
    /// (`Some(false)`), at `now`.
    pub overdue: Option<bool>,
    /// Unix time `overdue` is judged at; the clock when `None`.
    pub now: Option<f64>,
    /// Newest first sighting first.
    pub newest_first: bool,
    /// Skip this many (for paging, with `limit`).
    pub offset: Option<usize>,
    /// Only cases reported and not yet finished: filed, dispatched, handled, verifying or
    /// reopened (the operators' review queue).
    pub reported_open: bool,
}

/// A count for SQLite, where a negative limit means none.
fn sql_count(n: Option<usize>) -> i64 {
    n.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX))
}

/// The `WHERE` clause of [`CaseFilter`], its parameters numbered ?1 to ?7.
const CASE_FILTER: &str = "(?1 IS NULL OR status = ?1) AND (?2 IS NULL OR camera_id = ?2)
   AND (?3 IS NULL OR json_extract(data, '$.event') = ?3)
   AND (?4 IS NULL OR first_seen >= ?4) AND (?5 IS NULL OR first_seen < ?5)
   AND (?6 IS NULL OR ?6 = (status NOT IN ('closed', 'rejected')
        AND COALESCE(json_extract(data, '$.deadline') < ?7, 0)))
   AND (?8 = 0 OR status IN ('filed', 'dispatched', 'handled', 'verifying', 'reopened'))";

impl CaseFilter {
    fn sql_params(&self) -> [Box<dyn rusqlite::ToSql>; 8] {
        let now = self
            .overdue
            .map(|_| self.now.unwrap_or_else(crate::clock::unix_now));
        [
            Box::new(self.status.map(Status::as_str)),
            Box::new(self.camera.clone()),
            Box::new(self.event.clone()),
            Box::new(self.since),
            Box::new(self.until),
            Box::new(self.overdue),
            Box::new(now),
            Box::new(self.reported_open),
        ]
    }
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Create {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let sql = |source| StoreError::Sql {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        // WAL with NORMAL sync loses at most the last transactions on power loss, never
        // consistency; a process crash loses nothing committed.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sql)?;
        if version as usize > MIGRATIONS.len() {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found: version,
                known: MIGRATIONS.len(),
            });
        }
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction().map_err(sql)?;
            tx.execute_batch(migration).map_err(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(sql)?;
            tx.commit().map_err(sql)?;
        }
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Where evidence images of this database go: `<db>.evidence/` beside it.
    pub fn evidence_dir(&self) -> PathBuf {
        let mut dir = self.path.as_os_str().to_owned();
        dir.push(".evidence");
        PathBuf::from(dir)
    }

    fn sql(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    /// Starts an `IMMEDIATE` transaction: it holds the write lock from the start, so
    /// what it reads stays true until it commits.
    fn immediate(&mut self) -> Result<Transaction<'_>, StoreError> {
        let path = self.path.clone();
        self.conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|source| StoreError::Sql { path, source })
    }

    /// Applies one sample's changes atomically, whatever operators did meanwhile (replays
    /// and tests; the filing stage uses [`Store::write_guarded`]).
    pub fn write(&mut self, changes: &Changes) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.immediate()?;
        apply(&tx, changes)
            .and_then(|()| tx.commit())
            .map_err(|source| StoreError::Sql { path, source })
    }

    /// The change number of `camera_id`'s operator actions (0 before the first).
    pub fn operator_seq(&self, camera_id: &str) -> Result<i64, StoreError> {
        operator_seq(&self.conn, camera_id).map_err(|e| self.sql(e))
    }

    /// Applies one sample's changes for `camera_id` atomically, unless an operator acted
    /// on the camera's cases or suppressions since the writer loaded them at change
    /// `seen_seq` ([`Store::operator_seq`]): then nothing is written and the answer is
    /// [`StoreError::Conflict`].
    pub fn write_guarded(
        &mut self,
        changes: &Changes,
        camera_id: &str,
        seen_seq: i64,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let sql = |source| StoreError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self.immediate()?;
        let found = operator_seq(&tx, camera_id).map_err(sql)?;
        if found != seen_seq {
            return Err(StoreError::Conflict {
                path: path.clone(),
                camera: camera_id.to_string(),
                seen: seen_seq,
                found,
            });
        }
        apply(&tx, changes).map_err(sql)?;
        tx.commit().map_err(sql)
    }
    fn parse_case(&self, id: String, data: String) -> Result<Case, StoreError> {
        serde_json::from_str(&data).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            id,
            reason: e.to_string(),
        })
    }

    fn query_cases(
        &self,
        sql: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<Case>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map(args, |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.sql(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sql(e))?;
        rows.into_iter()
            .map(|(id, data)| self.parse_case(id, data))
            .collect()
    }

    /// Cases in order of first sighting (the newest first with `newest_first`).
    pub fn cases(&self, filter: &CaseFilter) -> Result<Vec<Case>, StoreError> {
        let order = if filter.newest_first {
            "first_seen DESC, id DESC"
        } else {
            "first_seen, id"
        };
        let sql = format!(
            "SELECT id, data FROM cases WHERE {CASE_FILTER} ORDER BY {order} LIMIT ?9 OFFSET ?10"
        );
        let [p1, p2, p3, p4, p5, p6, p7, p8] = filter.sql_params();
        // SQLite reads a negative limit as none.
        let limit = sql_count(filter.limit);
        let offset = sql_count(filter.offset).max(0);
        self.query_cases(
            &sql,
            &[&p1, &p2, &p3, &p4, &p5, &p6, &p7, &p8, &limit, &offset],
        )
    }

    /// How many cases `filter` matches, ignoring its `limit` and `offset` (for paging).
    pub fn count_cases(&self, filter: &CaseFilter) -> Result<u64, StoreError> {
        let sql = format!("SELECT COUNT(*) FROM cases WHERE {CASE_FILTER}");
        let [p1, p2, p3, p4, p5, p6, p7, p8] = filter.sql_params();
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.sql(e))?;
        stmt.query_row(rusqlite::params![p1, p2, p3, p4, p5, p6, p7, p8], |r| {
            r.get::<_, i64>(0)
        })
        .map(|n| n as u64)
        .map_err(|e| self.sql(e))
    }

    /// The newest whole-frame evidence image of any case of `camera`: the picture the
    /// console shows for a camera the daemon has no snapshot of.
    pub fn latest_picture(&self, camera: &str) -> Result<Option<PathBuf>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT e.case_id, e.kind FROM evidence e JOIN cases c ON c.id = e.case_id
                 WHERE c.camera_id = ?1 AND e.kind IN ('first', 'filed', 'reopened', 'after')
                 ORDER BY e.ts DESC LIMIT 1",
            )
            .map_err(|e| self.sql(e))?;
        let found = stmt
            .query_row([camera], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .optional()
            .map_err(|e| self.sql(e))?;
        // Built from the case id and kind, never from a path stored in the database.
        Ok(found.map(|(case, kind)| self.evidence_dir().join(case).join(format!("{kind}.jpg"))))
    }

    pub fn case(&self, id: &str) -> Result<Option<Case>, StoreError> {
        Ok(self
            .query_cases("SELECT id, data FROM cases WHERE id = ?1", &[&id])?
            .pop())
    }

    pub fn evidence(&self, case_id: &str) -> Result<Vec<Evidence>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT kind, path, ts FROM evidence WHERE case_id = ?1 ORDER BY ts, kind",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([case_id], |r| {
                Ok(Evidence {
                    case_id: case_id.to_string(),
                    kind: r.get(0)?,
                    path: PathBuf::from(r.get::<_, String>(1)?),
                    ts: r.get(2)?,
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }

    pub fn history(&self, case_id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT ts, from_status, to_status, actor, note FROM history WHERE case_id = ?1 ORDER BY ts, rowid")
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([case_id], |r| {
                let status = |s: Option<String>| s.and_then(|s| s.parse().ok());
                Ok(HistoryEntry {
                    case_id: case_id.to_string(),
                    ts: r.get(0)?,
                    from: status(r.get(1)?),
                    to: status(r.get(2)?).unwrap_or(Status::Detected),
                    actor: r.get(3)?,
                    note: r.get(4)?,
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }

    /// Outbox events not yet delivered to `sink`, oldest first.
    pub fn pending(&self, sink: &str, limit: usize) -> Result<Vec<OutboxEvent>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, key, kind, payload FROM outbox
                 WHERE seq > COALESCE((SELECT delivered_seq FROM outbox_cursor WHERE sink = ?1), 0)
                 ORDER BY seq LIMIT ?2",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map(params![sink, limit as i64], |r| {
                let payload: String = r.get(3)?;
                Ok(OutboxEvent {
                    seq: r.get(0)?,
                    idempotency_key: r.get(1)?,
                    kind: r.get(2)?,
                    payload: serde_json::from_str(&payload)
                        .unwrap_or(serde_json::Value::String(payload)),
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }

    /// Records that `sink` acknowledged every event up to `seq`.
    pub fn mark_delivered(&mut self, sink: &str, seq: i64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO outbox_cursor (sink, delivered_seq) VALUES (?1, ?2)
                 ON CONFLICT(sink) DO UPDATE SET delivered_seq = MAX(delivered_seq, ?2)",
                params![sink, seq],
            )
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// Events waiting for `sink`.
    pub fn backlog(&self, sink: &str) -> Result<u64, StoreError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE seq > COALESCE((SELECT delivered_seq FROM outbox_cursor WHERE sink = ?1), 0)",
                [sink],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.sql(e))
    }
}

/// Writes one sample's or operator action's changes inside `tx`.
fn apply(tx: &Transaction<'_>, changes: &Changes) -> Result<(), rusqlite::Error> {
    for case in &changes.upserts {
        let data = serde_json::to_string(case).expect("cases serialise");
        tx.execute(
            "INSERT INTO cases (id, camera_id, status, category_code, first_seen, updated_at, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(id) DO UPDATE SET status = ?3, updated_at = ?6, data = ?7",
            params![
                case.id,
                case.camera_id,
                case.status.as_str(),
                case.category.code,
                case.first_seen,
                case.updated_at,
                data
            ],
        )?;
        // Every candidate counts once in the statistics, even one deleted later.
        tx.execute(
                "INSERT OR IGNORE INTO found (case_id, camera_id, event, category_code, category_name, first_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![case.id, case.camera_id, case.event, case.category.code, case.category.name, case.first_seen],
            )?;
    }
    for id in &changes.deletes {
        tx.execute("DELETE FROM cases WHERE id = ?1", [id])?;
        tx.execute("DELETE FROM evidence WHERE case_id = ?1", [id])?;
        tx.execute("DELETE FROM history WHERE case_id = ?1", [id])?;
    }
    for h in &changes.history {
        tx.execute(
                "INSERT INTO history (case_id, ts, from_status, to_status, actor, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![h.case_id, h.ts, h.from.map(Status::as_str), h.to.as_str(), h.actor, h.note],
            )
            ?;
    }
    for e in &changes.evidence {
        tx.execute(
            "INSERT OR REPLACE INTO evidence (case_id, kind, path, ts) VALUES (?1, ?2, ?3, ?4)",
            params![e.case_id, e.kind, e.path.to_string_lossy(), e.ts],
        )?;
    }
    for event in &changes.events {
        // The key makes a re-processed event a no-op.
        tx.execute(
                "INSERT OR IGNORE INTO outbox (key, kind, payload, created_at) VALUES (?1, ?2, ?3, unixepoch('subsec'))",
                params![event.key, event.kind, event.payload.to_string()],
            )
            ?;
    }
    for (id, ts) in &changes.suppressed_hits {
        // Once per sample: processing the same input again counts nothing twice.
        tx.execute(
            "UPDATE suppressions SET hits = hits + 1, last_hit = ?2
                 WHERE id = ?1 AND (last_hit IS NULL OR last_hit < ?2)",
            params![id, ts],
        )?;
    }
    Ok(())
}

fn operator_seq(conn: &Connection, camera_id: &str) -> Result<i64, rusqlite::Error> {
    let mut stmt = conn.prepare_cached("SELECT seq FROM operator_changes WHERE camera_id = ?1")?;
    let mut rows = stmt.query([camera_id])?;
    Ok(match rows.next()? {
        Some(row) => row.get(0)?,
        None => 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::NewEvent;

    fn event(key: &str) -> NewEvent {
        NewEvent {
            key: key.into(),
            kind: "case.filed".into(),
            payload: serde_json::json!({ "id": key }),
        }
    }

    #[test]
    fn migrations_run_once_and_wal_is_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cases.db");
        drop(Store::open(&path).unwrap());
        let store = Store::open(&path).unwrap();
        let mode: String = store
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let version: i64 = store
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version as usize, MIGRATIONS.len());
    }

    #[test]
    fn a_database_from_a_newer_cgbot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cases.db");
        let store = Store::open(&path).unwrap();
        store.conn.pragma_update(None, "user_version", 99).unwrap();
        drop(store);
        let err = Store::open(&path).err().unwrap().to_string();
        assert!(err.contains("schema version 99 is newer"), "{err}");
    }

    #[test]
    fn outbox_events_are_deduplicated_by_key_and_tracked_per_sink() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("cases.db")).unwrap();
        let changes = Changes {
            events: vec![event("a"), event("b")],
            ..Changes::default()
        };
        store.write(&changes).unwrap();
        store.write(&changes).unwrap(); // the same sample processed twice
        assert_eq!(store.pending("hook", 10).unwrap().len(), 2);
        store
            .mark_delivered("hook", store.pending("hook", 1).unwrap()[0].seq)
            .unwrap();
        assert_eq!(store.backlog("hook").unwrap(), 1);
        assert_eq!(store.backlog("file").unwrap(), 2);
    }
}

#[cfg(test)]
mod operator_tests {
    use std::time::Duration;

    use super::*;
    use crate::cases::{RejectReason, VerdictKind};

    /// 2026-11-24T00:00:00Z.
    const DAY: f64 = 1_795_478_400.0;
    const HOUR: f64 = 3600.0;
    const WEEK: Duration = Duration::from_secs(7 * 86_400);

    fn case(id: &str, event: &str, status: Status, first_seen: f64) -> Case {
        serde_json::from_value(serde_json::json!({
            "id": id, "status": status,
            "category": {"code": "0505", "major": "街面秩序", "name": "机动车乱停放"},
            "event": event, "camera_id": "cam-1", "camera_name": "", "zone_id": "kerb",
            "zone_name": "kerb", "location": {}, "first_seen": first_seen,
            "last_seen": first_seen, "filed_at": null, "deadline": null, "closed_at": null,
            "close_reason": null, "dwell": 0.0, "confidence": 0.8, "label": "car",
            "place": [100.0, 300.0, 200.0, 380.0], "bbox": [100.0, 300.0, 200.0, 380.0],
            "reopen_count": 0, "resume_status": null, "updated_at": first_seen
        }))
        .unwrap()
    }

    /// Filed an hour after it was first seen, due a day later.
    fn filed(id: &str, first_seen: f64) -> Case {
        let mut c = case(id, "illegal_parking", Status::Filed, first_seen);
        c.filed_at = Some(first_seen + HOUR);
        c.deadline = Some(first_seen + 25.0 * HOUR);
        c
    }

    fn store_with(cases: Vec<Case>) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("cases.db")).unwrap();
        store
            .write(&Changes {
                upserts: cases,
                ..Changes::default()
            })
            .unwrap();
        (dir, store)
    }

    fn keys(store: &Store) -> Vec<String> {
        store
            .pending("test", 100)
            .unwrap()
            .into_iter()
            .map(|e| e.idempotency_key)
            .collect()
    }

    /// A status change, its history entry and its event are one write: when the event
    /// cannot be written (its table gone here, a full disk in the field), neither is the
    /// rest, for the filing's writes and for operators' actions alike.
    #[test]
    fn a_status_change_whose_event_cannot_be_written_is_not_written_either() {
        let (_dir, mut store) = store_with(vec![filed("C1", DAY)]);
        store
            .conn
            .execute_batch("ALTER TABLE outbox RENAME TO outbox_away")
            .unwrap();
        let dispatch = OperatorAction::SetStatus(Status::Dispatched);
        let err = store.operator_action("C1", dispatch, "li", None, DAY + HOUR, WEEK);
        assert!(matches!(err, Err(StoreError::Sql { .. })), "{err:?}");
        assert_eq!(store.case("C1").unwrap().unwrap().status, Status::Filed);
        assert!(store.history("C1").unwrap().is_empty());
        assert!(store.audit_log(10).unwrap().is_empty());
        assert_eq!(store.operator_seq("cam-1").unwrap(), 0);

        let c2 = filed("C2", DAY);
        let changes = Changes {
            history: vec![HistoryEntry {
                case_id: "C2".into(),
                ts: DAY + HOUR,
                from: Some(Status::Detected),
                to: Status::Filed,
                actor: "cgbot".into(),
                note: None,
            }],
            events: vec![crate::cases::NewEvent {
                key: "C2:filed:2".into(),
                kind: "case.filed".into(),
                payload: serde_json::json!({ "id": "C2" }),
            }],
            upserts: vec![c2],
            ..Changes::default()
        };
        assert!(store.write_guarded(&changes, "cam-1", 0).is_err());
        assert!(store.case("C2").unwrap().is_none());
        assert!(store.history("C2").unwrap().is_empty());
    }

    #[test]
    fn an_operator_action_records_history_event_and_audit_and_bumps_the_cameras_change() {
        let (_dir, mut store) = store_with(vec![filed("C1", DAY)]);
        assert_eq!(store.operator_seq("cam-1").unwrap(), 0);
        let at = DAY + 2.0 * HOUR;
        let note = Some("inspector 7".to_string());
        let case = store
            .operator_action(
                "C1",
                OperatorAction::SetStatus(Status::Dispatched),
                "li",
                note,
                at,
                WEEK,
            )
            .unwrap();
        assert_eq!(case.status, Status::Dispatched);
        assert_eq!(
            store.case("C1").unwrap().unwrap().status,
            Status::Dispatched
        );
        let history = store.history("C1").unwrap();
        let last = history.last().unwrap();
        assert_eq!(
            (
                last.from,
                last.to,
                last.actor.as_str(),
                last.note.as_deref()
            ),
            (
                Some(Status::Filed),
                Status::Dispatched,
                "li",
                Some("inspector 7")
            )
        );
        assert_eq!(keys(&store), ["C1:dispatched:1"]);
        let audit = store.audit_log(10).unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(
            (
                audit[0].actor.as_str(),
                audit[0].action.as_str(),
                audit[0].target.as_str()
            ),
            ("li", "case.set_status", "C1")
        );
        assert!(
            audit[0].detail.contains("filed → dispatched"),
            "{:?}",
            audit[0]
        );
        assert!(audit[0].detail.contains("inspector 7"), "{:?}", audit[0]);
        assert_eq!(store.operator_seq("cam-1").unwrap(), 1);
        assert_eq!(store.operator_seq("cam-2").unwrap(), 0);
        assert!(
            store.suppressions(None, None).unwrap().is_empty(),
            "not a rejection"
        );

        // A refused step writes nothing.
        let err = store
            .operator_action(
                "C1",
                OperatorAction::SetStatus(Status::Detected),
                "li",
                None,
                at,
                WEEK,
            )
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Operator(CaseError::IllegalTransition {
                    from: Status::Dispatched,
                    to: Status::Detected,
                    ..
                })
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("case C1 is dispatched; it cannot become detected"),
            "{err}"
        );
        assert_eq!(store.operator_seq("cam-1").unwrap(), 1);
        assert_eq!(store.audit_log(10).unwrap().len(), 1);
        assert_eq!(store.history("C1").unwrap().len(), history.len());

        let err = store
            .operator_action("C404", OperatorAction::Confirm, "li", None, at, WEEK)
            .unwrap_err();
        assert!(
            matches!(err, StoreError::NotFound { what: "case", .. }),
            "{err}"
        );
        assert!(err.to_string().ends_with("no case C404"), "{err}");
    }

    #[test]
    fn a_write_from_before_an_operator_action_is_refused_and_changes_nothing() {
        let (_dir, mut store) = store_with(vec![filed("C1", DAY)]);
        let seen = store.operator_seq("cam-1").unwrap();
        // The daemon's copy, one sample later: still filed.
        let mut stale = store.case("C1").unwrap().unwrap();
        stale.last_seen += 2.0;
        let changes = Changes {
            upserts: vec![stale],
            ..Changes::default()
        };
        let at = DAY + 2.0 * HOUR;
        store
            .operator_action(
                "C1",
                OperatorAction::SetStatus(Status::Dispatched),
                "li",
                None,
                at,
                WEEK,
            )
            .unwrap();
        let err = store.write_guarded(&changes, "cam-1", seen).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Conflict {
                    seen: 0,
                    found: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("camera cam-1's cases were changed by an operator"),
            "{err}"
        );
        assert_eq!(
            store.case("C1").unwrap().unwrap().status,
            Status::Dispatched
        );
        // Another camera's writes go on; so does a writer that reloaded.
        store
            .write_guarded(&Changes::default(), "cam-2", 0)
            .unwrap();
        store.write_guarded(&changes, "cam-1", 1).unwrap();
    }

    #[test]
    fn rejecting_suppresses_the_place_which_counts_hits_until_lifted() {
        let (_dir, mut store) = store_with(vec![filed("C1", DAY), filed("C2", DAY), {
            let mut c = filed("C3", DAY);
            c.status = Status::Closed;
            c
        }]);
        let at = DAY + 2.0 * HOUR;
        let reject = OperatorAction::Reject(RejectReason::NotAViolation);
        let note = Some("loading bay".to_string());
        let case = store
            .operator_action("C1", reject, "li", note, at, WEEK)
            .unwrap();
        assert_eq!(case.status, Status::Rejected);
        let verdict = case.verdict.clone().unwrap();
        assert_eq!(verdict.kind, VerdictKind::Rejected);
        assert_eq!(verdict.reason, Some(RejectReason::NotAViolation));
        assert_eq!((verdict.by.as_str(), verdict.at), ("li", at));
        assert_eq!(keys(&store), ["C1:rejected:1"]);
        let [sup] = &store.suppressions(Some("cam-1"), Some(at + 1.0)).unwrap()[..] else {
            panic!("one active suppression")
        };
        assert_eq!(
            (
                sup.zone_id.as_str(),
                sup.event.as_str(),
                sup.case_id.as_str()
            ),
            ("kerb", "illegal_parking", "C1")
        );
        assert_eq!((sup.bbox, sup.until), (case.place, at + WEEK.as_secs_f64()));
        assert_eq!(sup.created_by, "li");
        let audit = &store.audit_log(1).unwrap()[0];
        assert_eq!(audit.action, "case.reject");
        assert!(
            audit.detail.contains("not_a_violation") && audit.detail.contains("suppression"),
            "{audit:?}"
        );

        // Hits count once per sample, however often the sample is written.
        let hit = |ts: f64| Changes {
            suppressed_hits: vec![(sup.id, ts)],
            ..Changes::default()
        };
        for ts in [at + 5.0, at + 5.0, at + 7.0] {
            store.write(&hit(ts)).unwrap();
        }
        let now = store.suppression(sup.id).unwrap().unwrap();
        assert_eq!((now.hits, now.last_hit), (2, Some(at + 7.0)));

        let lifted = store.lift_suppression(sup.id, "wang", at + 10.0).unwrap();
        assert_eq!(lifted.lifted_by.as_deref(), Some("wang"));
        assert!(store
            .suppressions(None, Some(at + 11.0))
            .unwrap()
            .is_empty());
        assert_eq!(store.suppressions(None, None).unwrap().len(), 1);
        assert_eq!(store.operator_seq("cam-1").unwrap(), 2);
        assert_eq!(store.audit_log(1).unwrap()[0].action, "suppression.lift");
        // Lifting again changes nothing.
        let again = store.lift_suppression(sup.id, "zhao", at + 20.0).unwrap();
        assert_eq!(again.lifted_by.as_deref(), Some("wang"));
        assert_eq!(store.operator_seq("cam-1").unwrap(), 2);
        let err = store.lift_suppression(999, "wang", at).unwrap_err();
        assert!(err.to_string().ends_with("no suppression 999"), "{err}");

        // No suppression asked for: none made.
        store
            .operator_action("C2", reject, "li", None, at, Duration::ZERO)
            .unwrap();
        assert_eq!(store.suppressions(None, None).unwrap().len(), 1);
        // A closed case is not rejected.
        let err = store
            .operator_action("C3", reject, "li", None, at, WEEK)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("case C3 is closed; it cannot become rejected"),
            "{err}"
        );
    }

    #[test]
    fn confirming_keeps_the_status_and_records_the_verdict() {
        let (_dir, mut store) = store_with(vec![filed("C1", DAY)]);
        let at = DAY + 2.0 * HOUR;
        let case = store
            .operator_action(
                "C1",
                OperatorAction::Confirm,
                "li",
                Some("towed".into()),
                at,
                WEEK,
            )
            .unwrap();
        assert_eq!(case.status, Status::Filed);
        assert_eq!(case.verdict.as_ref().unwrap().kind, VerdictKind::Confirmed);
        let last = store.history("C1").unwrap().pop().unwrap();
        assert_eq!((last.from, last.to), (Some(Status::Filed), Status::Filed));
        assert_eq!(last.note.as_deref(), Some("confirmed: towed"));
        assert!(keys(&store).is_empty(), "a verdict is no workflow event");
        assert_eq!(store.audit_log(1).unwrap()[0].action, "case.confirm");
        assert_eq!(store.operator_seq("cam-1").unwrap(), 1);
    }

    #[test]
    fn stats_count_found_filed_closed_and_rejected_by_local_day_and_event() {
        let evening = DAY + 20.0 * HOUR; // 2026-11-24 20:00 UTC, 25 Nov 04:00 in UTC+8
        let mut closed = filed("C2", evening);
        closed.status = Status::Closed;
        closed.closed_at = Some(evening + 5.0 * HOUR);
        closed.close_reason = Some("auto-verified".into());
        let litter = case("C6", "exposed_litter", Status::Detected, evening);
        let (_dir, mut store) = store_with(vec![
            case("C0", "illegal_parking", Status::Detected, evening),
            filed("C1", evening),
            closed,
            filed("C3", evening),
            filed("C4", evening),
            filed("C5", evening),
            litter,
        ]);
        // The first candidate left before its dwell: deleted, still found.
        store
            .write(&Changes {
                deletes: vec!["C0".into()],
                ..Changes::default()
            })
            .unwrap();
        let at = evening + 3.0 * HOUR;
        let act = |store: &mut Store, id: &str, action| {
            store
                .operator_action(id, action, "li", None, at, WEEK)
                .unwrap();
        };
        act(&mut store, "C3", OperatorAction::SetStatus(Status::Closed));
        act(
            &mut store,
            "C4",
            OperatorAction::Reject(RejectReason::WrongClass),
        );
        act(&mut store, "C5", OperatorAction::Confirm);

        let now = evening + 30.0 * HOUR; // past the deadlines (filed + 24 h)
        let stats = store.stats(None, None, 8 * 3600, now).unwrap();
        assert_eq!(
            (stats.found, stats.filed, stats.closed, stats.rejected),
            (7, 5, 2, 1)
        );
        assert_eq!((stats.closed_auto, stats.closed_operator), (1, 1));
        fn day(d: &DayCount) -> (&str, &str, u64, u64, u64) {
            (
                d.day.as_str(),
                d.category_code.as_str(),
                d.found,
                d.filed,
                d.closed,
            )
        }
        assert_eq!(
            stats.by_day.iter().map(day).collect::<Vec<_>>(),
            [("2026-11-25", "0505", 7, 5, 2)],
            "local days in UTC+8"
        );
        assert_eq!(stats.by_day[0].category_name, "机动车乱停放");
        let utc = store.stats(None, None, 0, now).unwrap();
        assert_eq!(
            utc.by_day.iter().map(day).collect::<Vec<_>>(),
            [
                ("2026-11-24", "0505", 7, 5, 1),
                ("2026-11-25", "0505", 0, 0, 1)
            ],
            "filed at 21:00 UTC on the 24th, closed at 23:00 on the 24th and 01:00 on the 25th"
        );
        let events: Vec<_> = stats
            .per_event
            .iter()
            .map(|e| {
                (
                    e.event.as_str(),
                    e.confirmed,
                    e.rejected,
                    e.false_positive_rate,
                )
            })
            .collect();
        assert_eq!(
            events,
            [
                ("exposed_litter", 0, 0, None),
                ("illegal_parking", 1, 1, Some(0.5))
            ]
        );
        let overdue: Vec<&str> = stats.overdue.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(overdue, ["C1", "C5"], "open and past the deadline");
        assert!(stats.overdue.iter().all(|c| c.is_overdue(now)));

        // A period that ends before the filing: found only.
        let early = store
            .stats(Some(evening), Some(evening + 0.5 * HOUR), 0, now)
            .unwrap();
        assert_eq!(
            (early.found, early.filed, early.closed, early.rejected),
            (7, 0, 0, 0)
        );
        let late = store.stats(Some(evening + HOUR), None, 0, now).unwrap();
        assert_eq!(
            (late.found, late.filed, late.closed, late.rejected),
            (0, 5, 2, 1)
        );
    }

    #[test]
    fn filters_page_newest_first_and_find_overdue_cases() {
        let mut cases: Vec<Case> = (0..5)
            .map(|i| filed(&format!("C{i}"), DAY + i as f64))
            .collect();
        cases[1].status = Status::Closed;
        cases[2].deadline = None;
        let (_dir, store) = store_with(cases);
        let now = DAY + 30.0 * HOUR;
        let ids = |f: &CaseFilter| -> Vec<String> {
            store.cases(f).unwrap().into_iter().map(|c| c.id).collect()
        };
        let overdue = CaseFilter {
            overdue: Some(true),
            now: Some(now),
            ..CaseFilter::default()
        };
        assert_eq!(ids(&overdue), ["C0", "C3", "C4"]);
        assert_eq!(store.count_cases(&overdue).unwrap(), 3);
        let not_overdue = CaseFilter {
            overdue: Some(false),
            ..overdue.clone()
        };
        assert_eq!(ids(&not_overdue), ["C1", "C2"]);
        let before_deadlines = CaseFilter {
            now: Some(DAY),
            ..overdue.clone()
        };
        assert!(ids(&before_deadlines).is_empty());
        let page = CaseFilter {
            newest_first: true,
            limit: Some(2),
            offset: Some(1),
            ..CaseFilter::default()
        };
        assert_eq!(ids(&page), ["C3", "C2"]);
        assert_eq!(
            store.count_cases(&page).unwrap(),
            5,
            "limit and offset ignored"
        );
        let oldest = CaseFilter {
            limit: Some(2),
            ..CaseFilter::default()
        };
        assert_eq!(ids(&oldest), ["C0", "C1"]);
    }

    #[test]
    fn a_version_1_database_upgrades_and_numbers_events_after_its_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cases.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            let mut old = serde_json::to_value(filed("C1", DAY)).unwrap();
            let fields = old.as_object_mut().unwrap();
            fields.remove("transitions");
            fields.remove("verdict");
            conn.execute(
                "INSERT INTO cases (id, camera_id, status, category_code, first_seen, updated_at, data)
                 VALUES ('C1', 'cam-1', 'filed', '0505', ?1, ?1, ?2)",
                params![DAY, old.to_string()],
            )
            .unwrap();
            for (from, to) in [(None, "detected"), (Some("detected"), "filed")] {
                conn.execute(
                    "INSERT INTO history (case_id, ts, from_status, to_status, actor) VALUES ('C1', ?1, ?2, ?3, 'cgbot')",
                    params![DAY, from, to],
                )
                .unwrap();
            }
            conn.execute(
                "INSERT INTO outbox (key, kind, payload, created_at) VALUES ('C1:filed:0', 'case.filed', '{}', 0)",
                [],
            )
            .unwrap();
        }
        let mut store = Store::open(&path).unwrap();
        let case = store.case("C1").unwrap().unwrap();
        assert_eq!((case.transitions, case.verdict), (2, None));
        assert_eq!(store.stats(None, None, 0, DAY).unwrap().found, 1);
        let at = DAY + HOUR;
        store
            .operator_action(
                "C1",
                OperatorAction::SetStatus(Status::Dispatched),
                "li",
                None,
                at,
                WEEK,
            )
            .unwrap();
        assert_eq!(keys(&store), ["C1:filed:0", "C1:dispatched:3"]);
    }
}
