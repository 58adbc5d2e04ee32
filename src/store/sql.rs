//! The store's one way to talk SQL, whichever database holds it: typed parameters and
//! rows ([`Value`], [`Row`]), a connection ([`Db`]) to SQLite or PostgreSQL, and
//! transactions ([`Tx`]) that roll back unless committed. Queries are written once with
//! SQLite's `?N` placeholders (PostgreSQL gets them as `$N`); where the dialects differ,
//! the query asks [`Dialect`] for the fragment.

use std::cell::RefCell;
use std::collections::HashMap;

use super::{postgres::Pg, sqlite};

/// One parameter or column value. Booleans travel as integers, as SQLite keeps them.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Bytes(Vec<u8>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(v.into())
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// `vals![a, b]`: query parameters from anything that converts into a [`Value`].
macro_rules! vals {
    ($($v:expr),* $(,)?) => { [$($crate::store::sql::Value::from($v)),*] };
}
pub(crate) use vals;

/// What a query can go wrong with, before the store names its database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", super::postgres::describe(.0))]
    Postgres(#[from] ::postgres::Error),
    #[error("column {index} holds {found}, not {wanted}")]
    Column {
        index: usize,
        wanted: &'static str,
        found: String,
    },
}

/// One result row.
#[derive(Debug, Clone)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn at(&self, index: usize) -> &Value {
        self.0.get(index).unwrap_or(&Value::Null)
    }

    fn mismatch(&self, index: usize, wanted: &'static str) -> DbError {
        DbError::Column {
            index,
            wanted,
            found: format!("{:?}", self.at(index)),
        }
    }

    pub fn opt_text(&self, index: usize) -> Result<Option<String>, DbError> {
        match self.at(index) {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s.clone())),
            _ => Err(self.mismatch(index, "text")),
        }
    }

    pub fn text(&self, index: usize) -> Result<String, DbError> {
        self.opt_text(index)?
            .ok_or_else(|| self.mismatch(index, "text"))
    }

    pub fn opt_int(&self, index: usize) -> Result<Option<i64>, DbError> {
        match self.at(index) {
            Value::Null => Ok(None),
            Value::Int(i) => Ok(Some(*i)),
            _ => Err(self.mismatch(index, "an integer")),
        }
    }

    pub fn int(&self, index: usize) -> Result<i64, DbError> {
        self.opt_int(index)?
            .ok_or_else(|| self.mismatch(index, "an integer"))
    }

    /// A count or sum: never negative, 0 when NULL.
    pub fn count(&self, index: usize) -> Result<u64, DbError> {
        Ok(self.opt_int(index)?.unwrap_or(0).max(0) as u64)
    }

    pub fn opt_real(&self, index: usize) -> Result<Option<f64>, DbError> {
        match self.at(index) {
            Value::Null => Ok(None),
            Value::Real(r) => Ok(Some(*r)),
            Value::Int(i) => Ok(Some(*i as f64)),
            _ => Err(self.mismatch(index, "a number")),
        }
    }

    pub fn real(&self, index: usize) -> Result<f64, DbError> {
        self.opt_real(index)?
            .ok_or_else(|| self.mismatch(index, "a number"))
    }

    pub fn bytes(&self, index: usize) -> Result<Vec<u8>, DbError> {
        match self.at(index) {
            Value::Bytes(b) => Ok(b.clone()),
            _ => Err(self.mismatch(index, "bytes")),
        }
    }
}

/// Where the SQL of the two databases differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The text at `path` (dotted, e.g. `verdict.kind`) of the case document `data`.
    pub fn json_text(self, path: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json_extract(data, '$.{path}')"),
            Dialect::Postgres => format!("(data::jsonb #>> '{{{}}}')", path.replace('.', ",")),
        }
    }

    /// The number at `path` of the case document `data`.
    pub fn json_number(self, path: &str) -> String {
        match self {
            Dialect::Sqlite => self.json_text(path),
            Dialect::Postgres => format!("({})::float8", self.json_text(path)),
        }
    }

    /// `YYYY-MM-DD` of Unix time `seconds` (an SQL expression), in UTC.
    pub fn utc_date(self, seconds: &str) -> String {
        match self {
            Dialect::Sqlite => format!("date({seconds}, 'unixepoch')"),
            Dialect::Postgres => {
                format!("to_char(to_timestamp({seconds}) AT TIME ZONE 'UTC', 'YYYY-MM-DD')")
            }
        }
    }

    /// The column that orders rows of `history` by insertion.
    pub fn history_order(self) -> &'static str {
        match self {
            Dialect::Sqlite => "rowid",
            Dialect::Postgres => "id",
        }
    }
}

/// An open database of either kind.
pub enum Db {
    Sqlite(rusqlite::Connection),
    Postgres(Box<Pg>),
}

impl Db {
    pub fn dialect(&self) -> Dialect {
        match self {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }

    pub fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        match self {
            Db::Sqlite(conn) => sqlite::query(conn, sql, params),
            Db::Postgres(pg) => pg.query(sql, params),
        }
    }

    /// The first row, if any.
    pub fn query_opt(&self, sql: &str, params: &[Value]) -> Result<Option<Row>, DbError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// Exactly one row (aggregates).
    pub fn query_one(&self, sql: &str, params: &[Value]) -> Result<Row, DbError> {
        self.query_opt(sql, params)?.ok_or(DbError::Column {
            index: 0,
            wanted: "a row",
            found: "none".into(),
        })
    }

    /// Runs one statement; the number of rows it changed.
    pub fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        match self {
            Db::Sqlite(conn) => sqlite::execute(conn, sql, params),
            Db::Postgres(pg) => pg.execute(sql, params),
        }
    }

    /// Statements without parameters, separated by `;`.
    pub fn batch(&self, sql: &str) -> Result<(), DbError> {
        match self {
            Db::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Db::Postgres(pg) => pg.batch(sql),
        }
    }

    /// A transaction that reads what it will write under a lock: SQLite takes the
    /// database's write lock at once (`IMMEDIATE`); PostgreSQL, where many writers work
    /// at once, locks each of `locks` — camera ids, typically — for the transaction, so
    /// two writers of the same camera take turns and others go on. The locks are taken in
    /// order, so two transactions locking overlapping sets cannot deadlock.
    pub fn locked(&self, locks: &[&str]) -> Result<Tx<'_>, DbError> {
        match self {
            Db::Sqlite(conn) => conn.execute_batch("BEGIN IMMEDIATE")?,
            Db::Postgres(pg) => {
                pg.batch("BEGIN")?;
                let tx = Tx {
                    db: self,
                    open: true,
                };
                let mut locks = locks.to_vec();
                locks.sort_unstable();
                locks.dedup();
                for lock in locks {
                    pg.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &vals![lock])?;
                }
                return Ok(tx);
            }
        }
        Ok(Tx {
            db: self,
            open: true,
        })
    }

    /// A plain transaction: all of it or nothing.
    pub fn transaction(&self) -> Result<Tx<'_>, DbError> {
        self.batch("BEGIN")?;
        Ok(Tx {
            db: self,
            open: true,
        })
    }
}

/// An open transaction; dropped without [`Tx::commit`] it rolls back.
pub struct Tx<'a> {
    db: &'a Db,
    open: bool,
}

impl Tx<'_> {
    pub fn commit(mut self) -> Result<(), DbError> {
        self.open = false;
        let committed = self.db.batch("COMMIT");
        if committed.is_err() {
            // A failed COMMIT may leave the transaction open on SQLite.
            let _ = self.db.batch("ROLLBACK");
        }
        committed
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Db;
    fn deref(&self) -> &Db {
        self.db
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            if let Err(e) = self.db.batch("ROLLBACK") {
                tracing::warn!(error = %e, "rolling back a store transaction failed");
            }
        }
    }
}

/// Prepared statements by their text, for backends whose client does not cache them.
pub struct StatementCache<S>(RefCell<HashMap<String, S>>);

impl<S> Default for StatementCache<S> {
    fn default() -> Self {
        Self(RefCell::new(HashMap::new()))
    }
}

impl<S: Clone> StatementCache<S> {
    pub fn get_or_prepare<E>(
        &self,
        sql: &str,
        prepare: impl FnOnce(&str) -> Result<S, E>,
    ) -> Result<S, E> {
        if let Some(s) = self.0.borrow().get(sql) {
            return Ok(s.clone());
        }
        let statement = prepare(sql)?;
        self.0
            .borrow_mut()
            .insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    pub fn clear(&self) {
        self.0.borrow_mut().clear();
    }
}
