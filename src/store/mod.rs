//! Store stage: SQLite (WAL, versioned migrations) holding cases, their evidence and
//! history, and the outbox that feeds the sinks. Each analysed sample's changes are one
//! transaction, so a crash leaves either all of a sample's case changes and their outbox
//! events or none of them; case ids are deterministic, so re-processing the same input
//! updates the same rows instead of adding new ones.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};

use crate::cases::{Case, Changes, Evidence, HistoryEntry, Status};

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
}

/// One case event from the outbox. Serialized as is, this is the wire format of the sinks.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OutboxEvent {
    /// Outbox order (increasing).
    pub seq: i64,
    /// Stable per case event, e.g. `case-3f2a…:filed:1`.
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
    /// At most this many, the oldest first.
    pub limit: Option<usize>,
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

    /// Applies one sample's changes atomically.
    pub fn write(&mut self, changes: &Changes) -> Result<(), StoreError> {
        let path = self.path.clone();
        let sql = |source| StoreError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        for case in &changes.upserts {
            let data = serde_json::to_string(case).expect("cases serialise");
            tx.execute(
                "INSERT INTO cases (id, camera_id, status, category_code, first_seen, updated_at, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(id) DO UPDATE SET status = ?3, updated_at = ?6, data = ?7",
                params![case.id, case.camera_id, case.status.as_str(), case.category.code, case.first_seen, case.updated_at, data],
            )
            .map_err(sql)?;
        }
        for id in &changes.deletes {
            tx.execute("DELETE FROM cases WHERE id = ?1", [id])
                .map_err(sql)?;
            tx.execute("DELETE FROM evidence WHERE case_id = ?1", [id])
                .map_err(sql)?;
            tx.execute("DELETE FROM history WHERE case_id = ?1", [id])
                .map_err(sql)?;
        }
        for h in &changes.history {
            tx.execute(
                "INSERT INTO history (case_id, ts, from_status, to_status, actor, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![h.case_id, h.ts, h.from.map(Status::as_str), h.to.as_str(), h.actor, h.note],
            )
            .map_err(sql)?;
        }
        for e in &changes.evidence {
            tx.execute(
                "INSERT OR REPLACE INTO evidence (case_id, kind, path, ts) VALUES (?1, ?2, ?3, ?4)",
                params![e.case_id, e.kind, e.path.to_string_lossy(), e.ts],
            )
            .map_err(sql)?;
        }
        for event in &changes.events {
            // The key makes a re-processed event a no-op.
            tx.execute(
                "INSERT OR IGNORE INTO outbox (key, kind, payload, created_at) VALUES (?1, ?2, ?3, unixepoch('subsec'))",
                params![event.key, event.kind, event.payload.to_string()],
            )
            .map_err(sql)?;
        }
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

    /// Cases in order of first sighting.
    pub fn cases(&self, filter: &CaseFilter) -> Result<Vec<Case>, StoreError> {
        let status = filter.status.map(Status::as_str);
        // SQLite reads a negative limit as none.
        let limit = filter
            .limit
            .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        self.query_cases(
            "SELECT id, data FROM cases
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR camera_id = ?2)
               AND (?3 IS NULL OR json_extract(data, '$.event') = ?3)
               AND (?4 IS NULL OR first_seen >= ?4) AND (?5 IS NULL OR first_seen < ?5)
             ORDER BY first_seen, id LIMIT ?6",
            &[
                &status,
                &filter.camera,
                &filter.event,
                &filter.since,
                &filter.until,
                &limit,
            ],
        )
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
