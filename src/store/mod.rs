//! Store stage: cases, their evidence and history, and the outbox that feeds the sinks,
//! in SQLite (one file, the default) or PostgreSQL (shared by several daemons), chosen
//! by the database setting: a path or `sqlite:` path, or a `postgres://` URL. Each
//! analysed sample's changes are one transaction, so a crash leaves either all of a
//! sample's case changes and their outbox events or none of them; case ids are
//! deterministic, so re-processing the same input updates the same rows instead of
//! adding new ones.
//!
//! Operators' actions ([`Store::operator_action`], [`Store::lift_suppression`]) bump a
//! per-camera change number in the same transaction; the daemon writes a camera's samples
//! with [`Store::write_guarded`], which refuses when that number moved since the daemon
//! last loaded the camera's cases, so an operator's decision is never overwritten by a
//! stale in-memory copy.
//!
//! Queries go through [`sql::Db`]: written once where the dialects agree, with a
//! [`sql::Dialect`] fragment where they do not.

mod operator;
mod outbox;
mod postgres;
mod replicas;
mod retention;
mod sql;
mod sqlite;
mod stats;
#[doc(hidden)]
pub mod test_db;
mod views;

pub use self::postgres::{display_url, is_url as is_postgres_url};
pub use operator::AuditEntry;
pub use retention::{Pruned, Retention};
pub use stats::{DayCount, EventPrecision, Stats};
pub use views::{ReferenceView, LEARNED};

pub use crate::cases::{OperatorAction, RejectReason, Suppression};

use std::path::{Path, PathBuf};

use sql::{vals, Db, DbError, Dialect, Row, Value};

use crate::cases::{Case, CaseError, Changes, Evidence, EvidenceSource, HistoryEntry, Status};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Sql { path: PathBuf, source: DbError },
    /// A PostgreSQL database could not be reached or refused a statement; `url` is
    /// shown without credentials.
    #[error("PostgreSQL database {url}: {source}")]
    Postgres { url: String, source: DbError },
    #[error("PostgreSQL database {url}: {reason}")]
    PostgresUrl { url: String, reason: String },
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
    #[error("database {path}: evidence image {case}/{kind}: {source}")]
    Image {
        path: PathBuf,
        case: String,
        kind: String,
        source: std::io::Error,
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

/// A count for `LIMIT`/`OFFSET`; none is the largest.
fn sql_count(n: Option<usize>) -> i64 {
    n.map_or(i64::MAX, |n| i64::try_from(n).unwrap_or(i64::MAX))
}

impl CaseFilter {
    /// The `WHERE` clause, its parameters numbered ?1 to ?8 ([`CaseFilter::sql_params`]).
    /// (A parameter only tested for NULL is cast: PostgreSQL must know its type.)
    fn sql(d: Dialect) -> String {
        format!(
            "(CAST(?1 AS TEXT) IS NULL OR status = ?1)
             AND (CAST(?2 AS TEXT) IS NULL OR camera_id = ?2)
             AND (CAST(?3 AS TEXT) IS NULL OR {event} = ?3)
             AND (CAST(?4 AS DOUBLE PRECISION) IS NULL OR first_seen >= ?4)
             AND (CAST(?5 AS DOUBLE PRECISION) IS NULL OR first_seen < ?5)
             AND (CAST(?6 AS BOOLEAN) IS NULL OR ?6 = (status NOT IN ('closed', 'rejected')
                  AND COALESCE({deadline} < ?7, FALSE)))
             AND (?8 = 0 OR status IN ('filed', 'dispatched', 'handled', 'verifying', 'reopened'))",
            event = d.json_text("event"),
            deadline = d.json_number("deadline"),
        )
    }

    fn sql_params(&self) -> [Value; 8] {
        let now = self
            .overdue
            .map(|_| self.now.unwrap_or_else(crate::clock::unix_now));
        vals![
            self.status.map(Status::as_str),
            self.camera.clone(),
            self.event.clone(),
            self.since,
            self.until,
            self.overdue,
            now,
            self.reported_open,
        ]
    }
}

/// `db` (a path or URL) as logs, errors and messages may show it: without credentials.
pub fn display_db(db: &Path) -> String {
    let text = db.to_string_lossy();
    if postgres::is_url(&text) {
        postgres::display_url(&text)
    } else {
        db.display().to_string()
    }
}

/// Whether there may be a database at `db` to read without creating one: a SQLite file
/// that exists, or any PostgreSQL URL (the connection tells).
pub fn may_exist(db: &Path) -> bool {
    postgres::is_url(&db.to_string_lossy()) || db.exists()
}

pub struct Store {
    db: Db,
    /// The file, or for PostgreSQL the URL without credentials: what errors name.
    path: PathBuf,
    /// Where evidence images are written: beside the SQLite file, where they stay; for
    /// PostgreSQL a private spool folder they leave once the database holds them.
    evidence_dir: PathBuf,
    /// Keeps the PostgreSQL spool folder for as long as the store is open.
    _spool: Option<tempfile::TempDir>,
    /// Names this process's outbox claims (PostgreSQL).
    replica: String,
}

impl Store {
    /// Opens the database `db` names: a PostgreSQL URL (`postgres://…`), or a SQLite file
    /// path (optionally written `sqlite:path`), created with its folder if missing.
    pub fn open(db: &Path) -> Result<Self, StoreError> {
        let text = db.to_string_lossy();
        if postgres::is_url(&text) {
            return Self::open_postgres(&text);
        }
        let path = match text.strip_prefix("sqlite:") {
            Some(rest) => PathBuf::from(rest),
            None => db.to_path_buf(),
        };
        Self::open_sqlite(&path)
    }

    fn open_sqlite(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Create {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let conn = sqlite::open(path)
            .map_err(|e| StoreError::Sql {
                path: path.to_path_buf(),
                source: e.into(),
            })?
            .map_err(|found| StoreError::TooNew {
                path: path.to_path_buf(),
                found,
                known: sqlite::MIGRATIONS.len(),
            })?;
        let mut evidence_dir = path.as_os_str().to_owned();
        evidence_dir.push(".evidence");
        Ok(Self {
            db: Db::Sqlite(conn),
            path: path.to_path_buf(),
            evidence_dir: PathBuf::from(evidence_dir),
            _spool: None,
            replica: String::new(),
        })
    }

    fn open_postgres(url: &str) -> Result<Self, StoreError> {
        let shown = postgres::display_url(url);
        let pg = postgres::open(url)
            .map_err(|e| match e {
                postgres::OpenError::Url(e) => StoreError::PostgresUrl {
                    url: shown.clone(),
                    reason: e.to_string(),
                },
                postgres::OpenError::Db(source) => StoreError::Postgres {
                    url: shown.clone(),
                    source,
                },
            })?
            .map_err(|found| StoreError::TooNew {
                path: PathBuf::from(&shown),
                found,
                known: postgres::MIGRATIONS.len(),
            })?;
        let spool = tempfile::Builder::new()
            .prefix("cgbot-evidence-")
            .tempdir()
            .map_err(|source| StoreError::Create {
                path: std::env::temp_dir(),
                source,
            })?;
        let host = std::env::var("HOSTNAME").unwrap_or_default();
        Ok(Self {
            db: Db::Postgres(Box::new(pg)),
            path: PathBuf::from(shown),
            evidence_dir: spool.path().to_path_buf(),
            _spool: Some(spool),
            replica: format!("{host}/{}/{}", std::process::id(), crate::clock::unix_now()),
        })
    }

    /// Is this a PostgreSQL database (shared; evidence images inside it)?
    pub fn is_postgres(&self) -> bool {
        self.db.dialect() == Dialect::Postgres
    }

    /// Where the evidence writer puts images of this database: `<db>.evidence/` beside
    /// a SQLite file (where readers find them); a private spool folder for PostgreSQL,
    /// whose images move into the database with their rows. Read images with
    /// [`Store::evidence_image`], never from here.
    pub fn evidence_dir(&self) -> PathBuf {
        self.evidence_dir.clone()
    }

    fn sql(&self, source: DbError) -> StoreError {
        match self.db.dialect() {
            Dialect::Sqlite => StoreError::Sql {
                path: self.path.clone(),
                source,
            },
            Dialect::Postgres => StoreError::Postgres {
                url: self.path.to_string_lossy().into_owned(),
                source,
            },
        }
    }

    /// Applies one sample's changes atomically, whatever operators did meanwhile (replays
    /// and tests; the filing stage uses [`Store::write_guarded`]).
    pub fn write(&mut self, changes: &Changes) -> Result<(), StoreError> {
        let written = self.db.transaction().and_then(|tx| {
            self.apply(&tx, changes)?;
            tx.commit()
        });
        written.map_err(|e| self.sql(e))?;
        self.unspool(changes);
        Ok(())
    }

    /// The change number of `camera_id`'s operator actions (0 before the first).
    pub fn operator_seq(&self, camera_id: &str) -> Result<i64, StoreError> {
        operator_seq(&self.db, camera_id).map_err(|e| self.sql(e))
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
        let tx = self.db.locked(&[camera_id]).map_err(|e| self.sql(e))?;
        let found = operator_seq(&tx, camera_id).map_err(|e| self.sql(e))?;
        if found != seen_seq {
            return Err(StoreError::Conflict {
                path: self.path.clone(),
                camera: camera_id.to_string(),
                seen: seen_seq,
                found,
            });
        }
        self.apply(&tx, changes)
            .and_then(|()| tx.commit())
            .map_err(|e| self.sql(e))?;
        self.unspool(changes);
        Ok(())
    }

    /// Writes one sample's or operator action's changes inside `tx`. With PostgreSQL the
    /// evidence images go in too, read from the spool where the writer put them.
    fn apply(&self, tx: &Db, changes: &Changes) -> Result<(), DbError> {
        let d = tx.dialect();
        for case in &changes.upserts {
            let data = serde_json::to_string(case).expect("cases serialise");
            tx.execute(
                "INSERT INTO cases (id, camera_id, status, category_code, first_seen, updated_at, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(id) DO UPDATE SET status = ?3, updated_at = ?6, data = ?7",
                &vals![
                    &case.id,
                    &case.camera_id,
                    case.status.as_str(),
                    &case.category.code,
                    case.first_seen,
                    case.updated_at,
                    data
                ],
            )?;
            // Every candidate counts once in the statistics, even one deleted later.
            tx.execute(
                "INSERT INTO found (case_id, camera_id, event, category_code, category_name, first_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                &vals![
                    &case.id,
                    &case.camera_id,
                    &case.event,
                    &case.category.code,
                    &case.category.name,
                    case.first_seen
                ],
            )?;
        }
        for id in &changes.deletes {
            for table in [
                "cases WHERE id",
                "evidence WHERE case_id",
                "history WHERE case_id",
            ] {
                tx.execute(&format!("DELETE FROM {table} = ?1"), &vals![id])?;
            }
        }
        for h in &changes.history {
            tx.execute(
                "INSERT INTO history (case_id, ts, from_status, to_status, actor, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                &vals![&h.case_id, h.ts, h.from.map(Status::as_str), h.to.as_str(), &h.actor, h.note.clone()],
            )?;
        }
        for e in &changes.evidence {
            tx.execute(
                "INSERT INTO evidence (case_id, kind, path, ts, source, fallback_reason, caption_height)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(case_id, kind) DO UPDATE SET path = excluded.path, ts = excluded.ts,
                    source = excluded.source, fallback_reason = excluded.fallback_reason,
                    caption_height = excluded.caption_height",
                &vals![
                    &e.case_id,
                    &e.kind,
                    e.path.to_string_lossy().into_owned(),
                    e.ts,
                    e.source.map(EvidenceSource::as_str),
                    e.fallback_reason.clone(),
                    i64::from(e.caption_height)
                ],
            )?;
            if d == Dialect::Postgres {
                self.store_image(tx, e)?;
            }
        }
        let now = crate::clock::unix_now();
        for event in &changes.events {
            // The key makes a re-processed event a no-op.
            tx.execute(
                "INSERT INTO outbox (key, kind, payload, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT DO NOTHING",
                &vals![&event.key, &event.kind, event.payload.to_string(), now],
            )?;
        }
        for (id, ts) in &changes.suppressed_hits {
            // Once per sample: processing the same input again counts nothing twice.
            tx.execute(
                "UPDATE suppressions SET hits = hits + 1, last_hit = ?2
                 WHERE id = ?1 AND (last_hit IS NULL OR last_hit < ?2)",
                &vals![*id, *ts],
            )?;
        }
        Ok(())
    }

    /// Moves the spooled image of evidence row `e` into the database (PostgreSQL).
    fn store_image(&self, tx: &Db, e: &Evidence) -> Result<(), DbError> {
        // An image the writer could not keep has no row: it never gets here. One that
        // vanished from the spool is a fault of this host, reported as a missing file.
        let jpeg = std::fs::read(&e.path).map_err(|source| DbError::Column {
            index: 0,
            wanted: "a spooled evidence image",
            found: format!("{}: {source}", e.path.display()),
        })?;
        tx.execute(
            "INSERT INTO evidence_images (case_id, kind, jpeg) VALUES (?1, ?2, ?3)
             ON CONFLICT (case_id, kind) DO UPDATE SET jpeg = excluded.jpeg",
            &vals![&e.case_id, &e.kind, jpeg],
        )
        .map(drop)
    }

    /// After a PostgreSQL commit: the spooled images are in the database now.
    fn unspool(&self, changes: &Changes) {
        if !self.is_postgres() {
            return;
        }
        for e in &changes.evidence {
            if e.path.starts_with(&self.evidence_dir) {
                let _ = std::fs::remove_file(&e.path);
            }
        }
    }

    fn parse_case(&self, row: &Row) -> Result<Case, StoreError> {
        let (id, data) = (row.text(0), row.text(1));
        let (id, data) = (id.map_err(|e| self.sql(e))?, data.map_err(|e| self.sql(e))?);
        serde_json::from_str(&data).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            id,
            reason: e.to_string(),
        })
    }

    /// Cases from a query whose columns are `id, data`.
    fn query_cases(&self, sql: &str, args: &[Value]) -> Result<Vec<Case>, StoreError> {
        let rows = self.db.query(sql, args).map_err(|e| self.sql(e))?;
        rows.iter().map(|r| self.parse_case(r)).collect()
    }

    /// Rows of `sql`, each made into a `T` by `read`.
    fn query_map<T>(
        &self,
        sql: &str,
        args: &[Value],
        read: impl Fn(&Row) -> Result<T, DbError>,
    ) -> Result<Vec<T>, StoreError> {
        self.db
            .query(sql, args)
            .and_then(|rows| rows.iter().map(read).collect())
            .map_err(|e| self.sql(e))
    }

    /// Cases in order of first sighting (the newest first with `newest_first`).
    pub fn cases(&self, filter: &CaseFilter) -> Result<Vec<Case>, StoreError> {
        let order = if filter.newest_first {
            "first_seen DESC, id DESC"
        } else {
            "first_seen, id"
        };
        let sql = format!(
            "SELECT id, data FROM cases WHERE {} ORDER BY {order} LIMIT ?9 OFFSET ?10",
            CaseFilter::sql(self.db.dialect())
        );
        let mut args = filter.sql_params().to_vec();
        args.extend(vals![
            sql_count(filter.limit),
            sql_count(filter.offset.or(Some(0)))
        ]);
        self.query_cases(&sql, &args)
    }

    /// How many cases `filter` matches, ignoring its `limit` and `offset` (for paging).
    pub fn count_cases(&self, filter: &CaseFilter) -> Result<u64, StoreError> {
        let sql = format!(
            "SELECT COUNT(*) FROM cases WHERE {}",
            CaseFilter::sql(self.db.dialect())
        );
        self.db
            .query_one(&sql, &filter.sql_params())
            .and_then(|r| r.count(0))
            .map_err(|e| self.sql(e))
    }

    /// The newest whole-frame evidence image of any case of `camera`, as (case id, kind,
    /// height of its caption band): the picture the console shows for a camera the daemon
    /// has no snapshot of. Read it with [`Store::evidence_image`].
    pub fn latest_picture(
        &self,
        camera: &str,
    ) -> Result<Option<(String, String, u32)>, StoreError> {
        let found = self
            .db
            .query_opt(
                "SELECT e.case_id, e.kind, e.caption_height FROM evidence e
                 JOIN cases c ON c.id = e.case_id
                 WHERE c.camera_id = ?1 AND e.kind IN ('first', 'filed', 'reopened', 'after')
                 ORDER BY e.ts DESC LIMIT 1",
                &vals![camera],
            )
            .and_then(|row| {
                row.map(|r| {
                    let band = r.int(2)?.clamp(0, u32::MAX.into()) as u32;
                    Ok((r.text(0)?, r.text(1)?, band))
                })
                .transpose()
            })
            .map_err(|e| self.sql(e))?;
        Ok(found)
    }

    /// The JPEG of evidence image `kind` of `case`, wherever this database keeps it
    /// (files beside SQLite, the database itself with PostgreSQL); `None` without one.
    pub fn evidence_image(&self, case: &str, kind: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.db.dialect() {
            Dialect::Sqlite => {
                // Built from the case id and kind, never from a path stored in the
                // database; callers check both are names, not paths.
                let path = self.evidence_dir.join(case).join(format!("{kind}.jpg"));
                match std::fs::read(&path) {
                    Ok(jpeg) => Ok(Some(jpeg)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(source) => Err(StoreError::Image {
                        path: self.path.clone(),
                        case: case.to_string(),
                        kind: kind.to_string(),
                        source,
                    }),
                }
            }
            Dialect::Postgres => self
                .db
                .query_opt(
                    "SELECT jpeg FROM evidence_images WHERE case_id = ?1 AND kind = ?2",
                    &vals![case, kind],
                )
                .and_then(|row| row.map(|r| r.bytes(0)).transpose())
                .map_err(|e| self.sql(e)),
        }
    }

    pub fn case(&self, id: &str) -> Result<Option<Case>, StoreError> {
        Ok(self
            .query_cases("SELECT id, data FROM cases WHERE id = ?1", &vals![id])?
            .pop())
    }

    pub fn evidence(&self, case_id: &str) -> Result<Vec<Evidence>, StoreError> {
        self.query_map(
            "SELECT kind, path, ts, source, fallback_reason, caption_height FROM evidence
             WHERE case_id = ?1 ORDER BY ts, kind",
            &vals![case_id],
            |r| {
                Ok(Evidence {
                    case_id: case_id.to_string(),
                    kind: r.text(0)?,
                    path: PathBuf::from(r.text(1)?),
                    ts: r.real(2)?,
                    source: r
                        .opt_text(3)?
                        .as_deref()
                        .and_then(EvidenceSource::from_name),
                    fallback_reason: r.opt_text(4)?,
                    caption_height: r.int(5)?.clamp(0, u32::MAX.into()) as u32,
                })
            },
        )
    }

    pub fn history(&self, case_id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        let sql = format!(
            "SELECT ts, from_status, to_status, actor, note FROM history WHERE case_id = ?1 ORDER BY ts, {}",
            self.db.dialect().history_order()
        );
        self.query_map(&sql, &vals![case_id], |r| {
            let status = |s: Option<String>| s.and_then(|s| s.parse().ok());
            Ok(HistoryEntry {
                case_id: case_id.to_string(),
                ts: r.real(0)?,
                from: status(r.opt_text(1)?),
                to: status(r.opt_text(2)?).unwrap_or(Status::Detected),
                actor: r.text(3)?,
                note: r.opt_text(4)?,
            })
        })
    }
}

fn operator_seq(db: &Db, camera_id: &str) -> Result<i64, DbError> {
    db.query_opt(
        "SELECT seq FROM operator_changes WHERE camera_id = ?1",
        &vals![camera_id],
    )?
    .map_or(Ok(0), |r| r.int(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::NewEvent;
    use crate::store::test_db::for_each_backend;

    fn event(key: &str) -> NewEvent {
        NewEvent {
            key: key.into(),
            kind: "case.filed".into(),
            payload: serde_json::json!({ "id": key }),
        }
    }

    /// The schema version each backend records.
    fn schema_version(store: &Store) -> i64 {
        let sql = match store.db.dialect() {
            Dialect::Sqlite => "PRAGMA user_version",
            Dialect::Postgres => "SELECT version FROM schema_version",
        };
        store.db.query_one(sql, &[]).unwrap().int(0).unwrap()
    }

    #[test]
    fn migrations_run_once_and_wal_is_on() {
        for_each_backend(|db| {
            drop(db.open());
            let store = db.open();
            let known = match &store.db {
                Db::Sqlite(conn) => {
                    let mode: String = conn
                        .pragma_query_value(None, "journal_mode", |r| r.get(0))
                        .unwrap();
                    assert_eq!(mode, "wal");
                    sqlite::MIGRATIONS.len()
                }
                Db::Postgres(_) => postgres::MIGRATIONS.len(),
            };
            assert_eq!(schema_version(&store) as usize, known);
        });
    }

    #[test]
    fn a_database_from_a_newer_cgbot_is_refused() {
        for_each_backend(|db| {
            let store = db.open();
            store
                .db
                .batch(match store.db.dialect() {
                    Dialect::Sqlite => "PRAGMA user_version = 99",
                    Dialect::Postgres => "UPDATE schema_version SET version = 99",
                })
                .unwrap();
            drop(store);
            let err = db.try_open().err().unwrap().to_string();
            assert!(err.contains("schema version 99 is newer"), "{err}");
        });
    }

    #[test]
    fn an_unreachable_postgresql_server_is_a_clear_error_without_the_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("postgres://cgbot:s3cret@127.0.0.1:{port}/cases?sslmode=disable");
        let err = Store::open(Path::new(&url)).err().unwrap();
        assert!(matches!(err, StoreError::Postgres { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "PostgreSQL database postgres://***@127.0.0.1:{port}/cases"
            )) && text.contains("refused"),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
        let tls = "postgres://cgbot:s3cret@db.example/cases?sslmode=require";
        let err = Store::open(Path::new(tls)).err().unwrap().to_string();
        assert!(err.contains("sslmode=require is not supported"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn outbox_events_are_deduplicated_by_key_and_tracked_per_sink() {
        for_each_backend(|db| {
            let mut store = db.open();
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
        });
    }
}

#[cfg(test)]
mod operator_tests {
    use std::time::Duration;

    use rusqlite::{params, Connection};

    use super::*;
    use crate::cases::{RejectReason, VerdictKind};
    use crate::store::test_db::{for_each_backend, TestDb};

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

    fn store_with(db: &TestDb, cases: Vec<Case>) -> Store {
        let mut store = db.open();
        store
            .write(&Changes {
                upserts: cases,
                ..Changes::default()
            })
            .unwrap();
        store
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
        for_each_backend(|db| {
            let mut store = store_with(&db, vec![filed("C1", DAY)]);
            store
                .db
                .batch("ALTER TABLE outbox RENAME TO outbox_away")
                .unwrap();
            let dispatch = OperatorAction::SetStatus(Status::Dispatched);
            let err = store.operator_action("C1", dispatch, "li", None, DAY + HOUR, WEEK);
            assert!(
                matches!(
                    err,
                    Err(StoreError::Sql { .. } | StoreError::Postgres { .. })
                ),
                "{err:?}"
            );
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
        });
    }

    #[test]
    fn an_operator_action_records_history_event_and_audit_and_bumps_the_cameras_change() {
        for_each_backend(|db| {
            let mut store = store_with(&db, vec![filed("C1", DAY)]);
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
        });
    }

    #[test]
    fn a_write_from_before_an_operator_action_is_refused_and_changes_nothing() {
        for_each_backend(|db| {
            let mut store = store_with(&db, vec![filed("C1", DAY)]);
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
        });
    }

    #[test]
    fn rejecting_suppresses_the_place_which_counts_hits_until_lifted() {
        for_each_backend(|db| {
            let mut store = store_with(
                &db,
                vec![filed("C1", DAY), filed("C2", DAY), {
                    let mut c = filed("C3", DAY);
                    c.status = Status::Closed;
                    c
                }],
            );
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
        });
    }

    #[test]
    fn confirming_keeps_the_status_and_records_the_verdict() {
        for_each_backend(|db| {
            let mut store = store_with(&db, vec![filed("C1", DAY)]);
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
        });
    }

    #[test]
    fn stats_count_found_filed_closed_and_rejected_by_local_day_and_event() {
        for_each_backend(|db| {
            let evening = DAY + 20.0 * HOUR; // 2026-11-24 20:00 UTC, 25 Nov 04:00 in UTC+8
            let mut closed = filed("C2", evening);
            closed.status = Status::Closed;
            closed.closed_at = Some(evening + 5.0 * HOUR);
            closed.close_reason = Some("auto-verified".into());
            let litter = case("C6", "exposed_litter", Status::Detected, evening);
            let mut store = store_with(
                &db,
                vec![
                    case("C0", "illegal_parking", Status::Detected, evening),
                    filed("C1", evening),
                    closed,
                    filed("C3", evening),
                    filed("C4", evening),
                    filed("C5", evening),
                    litter,
                ],
            );
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
        });
    }

    #[test]
    fn filters_page_newest_first_and_find_overdue_cases() {
        for_each_backend(|db| {
            let mut cases: Vec<Case> = (0..5)
                .map(|i| filed(&format!("C{i}"), DAY + i as f64))
                .collect();
            cases[1].status = Status::Closed;
            cases[2].deadline = None;
            let store = store_with(&db, cases);
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
        });
    }

    #[test]
    fn a_version_1_database_upgrades_and_numbers_events_after_its_history() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cases.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(sqlite::MIGRATIONS[0]).unwrap();
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

    /// An evidence row of case C1 whose image is spooled where the writer puts it.
    fn evidence_row(
        store: &Store,
        kind: &str,
        source: EvidenceSource,
        reason: Option<&str>,
    ) -> Evidence {
        let folder = store.evidence_dir().join("C1");
        std::fs::create_dir_all(&folder).unwrap();
        let path = folder.join(format!("{kind}.jpg"));
        std::fs::write(&path, b"jpeg").unwrap();
        Evidence {
            case_id: "C1".into(),
            kind: kind.into(),
            path,
            ts: DAY,
            source: Some(source),
            fallback_reason: reason.map(String::from),
            caption_height: 96,
        }
    }

    #[test]
    fn evidence_rows_keep_the_picture_they_were_drawn_on() {
        for_each_backend(|db| {
            let mut store = store_with(&db, vec![filed("C1", DAY)]);
            let reason = "main stream: rtsp://cam/0: connection refused";
            let rows = vec![
                evidence_row(&store, "filed", EvidenceSource::Fallback, Some(reason)),
                evidence_row(&store, "filed-crop", EvidenceSource::Fallback, Some(reason)),
            ];
            store
                .write(&Changes {
                    evidence: rows.clone(),
                    ..Changes::default()
                })
                .unwrap();
            assert_eq!(store.evidence("C1").unwrap(), rows);
            assert_eq!(
                store.latest_picture("cam-1").unwrap(),
                Some(("C1".into(), "filed".into(), 96))
            );
            // Drawn again (a later grab worked): the row says so, and no reason stays.
            let again = evidence_row(&store, "filed", EvidenceSource::MainStream, None);
            store
                .write(&Changes {
                    evidence: vec![again.clone()],
                    ..Changes::default()
                })
                .unwrap();
            assert_eq!(store.evidence("C1").unwrap(), [again, rows[1].clone()]);
        });
    }

    #[test]
    fn evidence_stored_before_sources_were_recorded_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cases.db");
        {
            let conn = Connection::open(&path).unwrap();
            for migration in &sqlite::MIGRATIONS[..3] {
                conn.execute_batch(migration).unwrap();
            }
            conn.pragma_update(None, "user_version", 3).unwrap();
            conn.execute(
                "INSERT INTO evidence (case_id, kind, path, ts) VALUES ('C1', 'filed', '/old/filed.jpg', ?1)",
                params![DAY],
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let [old] = &store.evidence("C1").unwrap()[..] else {
            panic!("one row")
        };
        assert_eq!(
            (
                old.source,
                old.fallback_reason.as_deref(),
                old.caption_height
            ),
            (None, None, 0)
        );
        let shown = serde_json::to_value(old).unwrap();
        assert_eq!(shown["source"], serde_json::Value::Null, "{shown}");
    }
}
