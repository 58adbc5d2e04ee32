//! The embedded backend: one SQLite file in WAL mode, its schema versions counted by
//! `PRAGMA user_version`.

use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::Connection;

use super::sql::{DbError, Row, Value};

/// Schema versions, applied in order; `PRAGMA user_version` records how many ran.
pub(super) const MIGRATIONS: &[&str] = &[
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
    // 4: each camera's reference view (see crate::pipeline::picture), kept across
    // restarts.
    "CREATE TABLE view_references (
        camera_id TEXT PRIMARY KEY,
        signature BLOB NOT NULL,
        taken_at REAL NOT NULL,
        taken_by TEXT NOT NULL
     );",
    // 5: which picture each evidence image was drawn on (issue 10: a sub-stream camera's
    // evidence falls back to the analysed frame when its main stream fails), and the
    // height of the caption band under the picture. Older rows: source unknown, no band.
    "ALTER TABLE evidence ADD COLUMN source TEXT;
     ALTER TABLE evidence ADD COLUMN fallback_reason TEXT;
     ALTER TABLE evidence ADD COLUMN caption_height INTEGER NOT NULL DEFAULT 0;",
];

/// Opens (creating) the database file and brings its schema up to date. `Ok(Err(found))`
/// when the file comes from a newer cgbot (schema version `found`).
pub(super) fn open(path: &Path) -> Result<Result<Connection, i64>, rusqlite::Error> {
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // WAL with NORMAL sync loses at most the last transactions on power loss, never
    // consistency; a process crash loses nothing committed.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version as usize > MIGRATIONS.len() {
        return Ok(Err(version));
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(Ok(conn))
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::ToSqlOutput::Borrowed;
        Ok(Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Real(r) => ValueRef::Real(*r),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Bytes(b) => ValueRef::Blob(b),
        }))
    }
}

fn row(r: &rusqlite::Row<'_>, columns: usize) -> rusqlite::Result<Row> {
    (0..columns)
        .map(|i| {
            Ok(match r.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(i) => Value::Int(i),
                ValueRef::Real(r) => Value::Real(r),
                ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
            })
        })
        .collect::<rusqlite::Result<_>>()
        .map(Row)
}

pub(super) fn query(conn: &Connection, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let columns = stmt.column_count();
    let rows = stmt
        .query_map(rusqlite::params_from_iter(params), |r| row(r, columns))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

pub(super) fn execute(conn: &Connection, sql: &str, params: &[Value]) -> Result<u64, DbError> {
    let mut stmt = conn.prepare_cached(sql)?;
    Ok(stmt.execute(rusqlite::params_from_iter(params))? as u64)
}
