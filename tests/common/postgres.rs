//! PostgreSQL for the end-to-end tests: one throw-away cluster per test binary (started
//! on first use, stopped when the binary exits) and a fresh database per test. The
//! harness is the library's, so unit and end-to-end tests start clusters the same way.

pub use cgbot::store::test_db::TestDb;

/// A fresh database's URL, for `--db` and `db =`.
pub fn postgres_db() -> TestDb {
    TestDb::postgres()
}
