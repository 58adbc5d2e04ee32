//! The shared backend: a PostgreSQL database several daemons use at once. Schema versions
//! are counted in `schema_version`; evidence images live in the database
//! (`evidence_images`) so every replica can serve them; outbox delivery is claimed per
//! sink and event (`outbox_deliveries`) so no two replicas send the same event.
//!
//! The sync `postgres` client runs its own small runtime: call it from dedicated threads
//! or `spawn_blocking`, never directly on an async task.

use std::time::Duration;

use bytes::BytesMut;
use postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use postgres::{Client, NoTls, Statement};

use super::sql::{DbError, Row, StatementCache, Value};

/// Schema versions, applied in order; the one row of `schema_version` records how many
/// ran. Version 1 holds what SQLite's versions 1 and 2 hold, plus the evidence images
/// and the per-sink delivery claims only PostgreSQL needs.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1
    "CREATE TABLE cases (
        id TEXT PRIMARY KEY,
        camera_id TEXT NOT NULL,
        status TEXT NOT NULL,
        category_code TEXT NOT NULL,
        first_seen DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        data TEXT NOT NULL
     );
     CREATE INDEX cases_by_camera ON cases(camera_id, status);
     CREATE INDEX cases_by_time ON cases(first_seen);
     CREATE TABLE evidence (
        case_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        path TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (case_id, kind)
     );
     CREATE TABLE evidence_images (
        case_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        jpeg BYTEA NOT NULL,
        PRIMARY KEY (case_id, kind),
        FOREIGN KEY (case_id, kind) REFERENCES evidence (case_id, kind) ON DELETE CASCADE
     );
     CREATE TABLE history (
        id BIGSERIAL PRIMARY KEY,
        case_id TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL,
        from_status TEXT,
        to_status TEXT NOT NULL,
        actor TEXT NOT NULL,
        note TEXT
     );
     CREATE INDEX history_by_case ON history(case_id, ts);
     CREATE TABLE outbox (
        seq BIGSERIAL PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL
     );
     CREATE TABLE outbox_cursor (
        sink TEXT PRIMARY KEY,
        delivered_seq BIGINT NOT NULL
     );
     CREATE TABLE outbox_deliveries (
        sink TEXT NOT NULL,
        seq BIGINT NOT NULL REFERENCES outbox (seq) ON DELETE CASCADE,
        claimed_by TEXT,
        claimed_until DOUBLE PRECISION,
        delivered_at DOUBLE PRECISION,
        PRIMARY KEY (sink, seq)
     );
     CREATE TABLE operator_changes (
        camera_id TEXT PRIMARY KEY,
        seq BIGINT NOT NULL
     );
     CREATE TABLE suppressions (
        id BIGSERIAL PRIMARY KEY,
        camera_id TEXT NOT NULL,
        zone_id TEXT NOT NULL,
        event TEXT NOT NULL,
        bbox TEXT NOT NULL,
        case_id TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        until DOUBLE PRECISION NOT NULL,
        lifted_at DOUBLE PRECISION,
        lifted_by TEXT,
        hits BIGINT NOT NULL DEFAULT 0,
        last_hit DOUBLE PRECISION
     );
     CREATE INDEX suppressions_by_camera ON suppressions(camera_id, until);
     CREATE TABLE found (
        case_id TEXT PRIMARY KEY,
        camera_id TEXT NOT NULL,
        event TEXT NOT NULL,
        category_code TEXT NOT NULL,
        category_name TEXT NOT NULL,
        first_seen DOUBLE PRECISION NOT NULL
     );
     CREATE INDEX found_by_time ON found(first_seen);
     CREATE TABLE audit (
        seq BIGSERIAL PRIMARY KEY,
        at DOUBLE PRECISION NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL
     );",
    // 2: replicas sharing the database (see crate::cluster): each renews its lease here.
    "CREATE TABLE replicas (
        name TEXT PRIMARY KEY,
        capacity DOUBLE PRECISION NOT NULL,
        started DOUBLE PRECISION NOT NULL,
        heartbeat_at DOUBLE PRECISION NOT NULL,
        lease_until DOUBLE PRECISION NOT NULL,
        api TEXT NOT NULL
     );",
    // 3: each camera's reference view (see crate::pipeline::picture), shared by replicas.
    "CREATE TABLE view_references (
        camera_id TEXT PRIMARY KEY,
        signature BYTEA NOT NULL,
        taken_at DOUBLE PRECISION NOT NULL,
        taken_by TEXT NOT NULL
     );",
    // 4: which picture each evidence image was drawn on, and the height of its caption
    // band (SQLite's version 5).
    "ALTER TABLE evidence ADD COLUMN source TEXT;
     ALTER TABLE evidence ADD COLUMN fallback_reason TEXT;
     ALTER TABLE evidence ADD COLUMN caption_height BIGINT NOT NULL DEFAULT 0;",
];

/// Serialises schema upgrades of replicas that start together (an arbitrary constant).
const MIGRATION_LOCK: i64 = 0x6367_626f_7400;

/// Is `db` (the `db` setting or `--db`) a PostgreSQL URL?
pub fn is_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// `db` as logs and errors may show it: without user information or a `password`
/// parameter.
pub fn display_url(db: &str) -> String {
    let url = crate::redact::redact_url(db);
    match url.split_once('?') {
        Some((base, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_string(),
                })
                .collect();
            format!("{base}?{}", params.join("&"))
        }
        None => url,
    }
}

/// Why a connection could not be made before it was tried.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("not a PostgreSQL URL: {0}")]
    Invalid(String),
    #[error("sslmode=require is not supported: cgbot talks to PostgreSQL without TLS; use sslmode=disable on loopback or a private network (or a TLS tunnel such as stunnel or an SSH tunnel)")]
    TlsRequired,
}

/// An open PostgreSQL connection with its prepared statements.
pub struct Pg {
    client: std::cell::RefCell<Client>,
    statements: StatementCache<Statement>,
}

/// Connects to `url` and brings the schema up to date. `Ok(Err(found))` when the
/// database comes from a newer cgbot (schema version `found`).
pub(super) fn open(url: &str) -> Result<Result<Pg, i64>, OpenError> {
    let mut config: postgres::Config = url
        .parse()
        .map_err(|e: postgres::Error| UrlError::Invalid(e.to_string()))?;
    if config.get_ssl_mode() == postgres::config::SslMode::Require {
        return Err(UrlError::TlsRequired.into());
    }
    // `prefer` (the default) falls back to plain connections; say so rather than try.
    config.ssl_mode(postgres::config::SslMode::Disable);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    if config.get_application_name().is_none() {
        config.application_name("cgbot");
    }
    let client = config.connect(NoTls).map_err(DbError::from)?;
    let pg = Pg {
        client: std::cell::RefCell::new(client),
        statements: StatementCache::default(),
    };
    pg.batch("BEGIN")?;
    let version = (|| {
        pg.execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[Value::Int(MIGRATION_LOCK)],
        )?;
        pg.batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
        let found = pg.query("SELECT version FROM schema_version", &[])?;
        let version = match found.first() {
            Some(row) => row.int(0)?,
            None => {
                pg.execute("INSERT INTO schema_version (version) VALUES (0)", &[])?;
                0
            }
        };
        if version as usize > MIGRATIONS.len() {
            return Ok(Err(version));
        }
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            pg.batch(migration)?;
            pg.execute(
                "UPDATE schema_version SET version = $1",
                &[Value::Int(i as i64 + 1)],
            )?;
        }
        Ok(Ok(()))
    })();
    match version {
        Ok(Ok(())) => {
            pg.batch("COMMIT")?;
            Ok(Ok(pg))
        }
        Ok(Err(found)) => Ok(Err(found)),
        Err(e) => {
            let _ = pg.batch("ROLLBACK");
            Err(OpenError::Db(e))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(super) enum OpenError {
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// `?N` placeholders as PostgreSQL's `$N` (the store's SQL has no other `?`).
fn numbered(sql: &str) -> String {
    sql.replace('?', "$")
}

impl Pg {
    fn prepare(&self, sql: &str) -> Result<Statement, DbError> {
        self.statements
            .get_or_prepare(sql, |sql| self.client.borrow_mut().prepare(&numbered(sql)))
            .map_err(DbError::from)
    }

    pub(super) fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        let statement = self.prepare(sql)?;
        let args: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        let rows = self.client.borrow_mut().query(&statement, &args)?;
        rows.iter().map(row).collect()
    }

    pub(super) fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let statement = self.prepare(sql)?;
        let args: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as _).collect();
        Ok(self.client.borrow_mut().execute(&statement, &args)?)
    }

    pub(super) fn batch(&self, sql: &str) -> Result<(), DbError> {
        let done = self.client.borrow_mut().batch_execute(sql);
        if sql.contains("CREATE") || sql.contains("ALTER") || sql.contains("DROP") {
            // Prepared statements may refer to what the schema change replaced.
            self.statements.clear();
        }
        Ok(done?)
    }
}

fn row(r: &postgres::Row) -> Result<Row, DbError> {
    r.columns()
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let ty = column.type_();
            Ok(if *ty == Type::BOOL {
                Value::from(r.try_get::<_, Option<bool>>(i)?)
            } else if *ty == Type::INT2 {
                Value::from(r.try_get::<_, Option<i16>>(i)?.map(i64::from))
            } else if *ty == Type::INT4 {
                Value::from(r.try_get::<_, Option<i32>>(i)?.map(i64::from))
            } else if *ty == Type::INT8 {
                Value::from(r.try_get::<_, Option<i64>>(i)?)
            } else if *ty == Type::FLOAT4 {
                Value::from(r.try_get::<_, Option<f32>>(i)?.map(f64::from))
            } else if *ty == Type::FLOAT8 {
                Value::from(r.try_get::<_, Option<f64>>(i)?)
            } else if *ty == Type::BYTEA {
                Value::from(r.try_get::<_, Option<Vec<u8>>>(i)?)
            } else {
                Value::from(r.try_get::<_, Option<String>>(i)?)
            })
        })
        .collect::<Result<_, DbError>>()
        .map(Row)
}

/// A parameter takes the type PostgreSQL inferred for its place: the store's integers
/// serve as booleans or floats where the query compares them with such.
impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::FLOAT4 => (*i as f32).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().to_sql(ty, out),
                _ => i.to_sql(ty, out),
            },
            Value::Real(r) => match *ty {
                Type::FLOAT4 => (*r as f32).to_sql(ty, out),
                _ => r.to_sql(ty, out),
            },
            Value::Text(s) => s.to_sql(ty, out),
            Value::Bytes(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A PostgreSQL error as one line: the server's message with its SQLSTATE, or why the
/// connection failed.
pub(super) fn describe(e: &postgres::Error) -> String {
    let Some(db) = e.as_db_error() else {
        // `error connecting to server: Connection refused (os error 111)`.
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            text += &format!(": {cause}");
            source = cause.source();
        }
        return text;
    };
    let mut text = format!("{} ({})", db.message(), db.code().code());
    if let Some(detail) = db.detail() {
        text += &format!(": {detail}");
    }
    text
}
