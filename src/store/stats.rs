//! Figures for the city's reports and the console: how many problems were found, filed,
//! closed and rejected in a period, by local day and category, how precise each event's
//! detection is by the operators' verdicts, and which cases are overdue.

use rusqlite::params;

use super::{Store, StoreError};
use crate::cases::Case;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    /// Candidates found (first seen in the period), including those that left before
    /// their dwell and were never filed.
    pub found: u64,
    /// Cases filed in the period (also those later rejected or closed).
    pub filed: u64,
    /// Cases closed in the period, and still closed.
    pub closed: u64,
    /// Cases rejected as false positives in the period.
    pub rejected: u64,
    /// `closed` that closed by themselves (auto-verified)…
    pub closed_auto: u64,
    /// …and that an operator closed.
    pub closed_operator: u64,
    /// Local day × category, by day then category code.
    pub by_day: Vec<DayCount>,
    /// By event name, from the verdicts given in the period.
    pub per_event: Vec<EventPrecision>,
    /// Every case past its deadline and still open at `now`, the longest overdue first
    /// (whatever the period).
    pub overdue: Vec<Case>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DayCount {
    /// `YYYY-MM-DD` in local time.
    pub day: String,
    pub category_code: String,
    pub category_name: String,
    /// Found (first seen) that day.
    pub found: u64,
    /// Filed that day.
    pub filed: u64,
    /// Closed that day.
    pub closed: u64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EventPrecision {
    pub event: String,
    pub confirmed: u64,
    pub rejected: u64,
    /// rejected / (confirmed + rejected), None when no verdicts
    pub false_positive_rate: Option<f64>,
}

/// `column` in the period `[?1, ?2)` (either end open when NULL).
fn in_period(column: &str) -> String {
    format!("(?1 IS NULL OR {column} >= ?1) AND (?2 IS NULL OR {column} < ?2)")
}

const FILED_AT: &str = "json_extract(data, '$.filed_at')";
const CLOSED_AT: &str = "json_extract(data, '$.closed_at')";
const VERDICT_AT: &str = "json_extract(data, '$.verdict.at')";

impl Store {
    /// Figures for the period `[since, until)` (Unix seconds; `None` leaves that end
    /// open): what was found by first sighting, filed by filing time, closed by closing
    /// time and rejected by verdict time; days are local to `utc_offset` seconds east of
    /// UTC; `overdue` is judged at `now`.
    pub fn stats(
        &self,
        since: Option<f64>,
        until: Option<f64>,
        utc_offset: i64,
        now: f64,
    ) -> Result<Stats, StoreError> {
        let sql = |e| self.sql(e);
        let mut stats = Stats {
            found: self
                .conn
                .query_row(
                    &format!(
                        "SELECT COUNT(*) FROM found WHERE {}",
                        in_period("first_seen")
                    ),
                    params![since, until],
                    |r| r.get::<_, i64>(0),
                )
                .map_err(sql)? as u64,
            ..Stats::default()
        };
        let totals = format!(
            "SELECT
                COALESCE(SUM({FILED_AT} IS NOT NULL AND {filed}), 0),
                COALESCE(SUM(status = 'closed' AND {closed}), 0),
                COALESCE(SUM(status = 'rejected' AND {rejected}), 0),
                COALESCE(SUM(status = 'closed' AND {closed}
                    AND json_extract(data, '$.close_reason') = 'auto-verified'), 0),
                COALESCE(SUM(status = 'closed' AND {closed}
                    AND json_extract(data, '$.close_reason') = 'operator'), 0)
             FROM cases",
            filed = in_period(FILED_AT),
            closed = in_period(CLOSED_AT),
            rejected = in_period(VERDICT_AT),
        );
        let count = |r: &rusqlite::Row<'_>, i| r.get::<_, i64>(i).map(|n| n.max(0) as u64);
        (
            stats.filed,
            stats.closed,
            stats.rejected,
            stats.closed_auto,
            stats.closed_operator,
        ) = self
            .conn
            .query_row(&totals, params![since, until], |r| {
                Ok((
                    count(r, 0)?,
                    count(r, 1)?,
                    count(r, 2)?,
                    count(r, 3)?,
                    count(r, 4)?,
                ))
            })
            .map_err(sql)?;

        let by_day = format!(
            "SELECT day, code, MAX(name), SUM(f), SUM(fi), SUM(cl) FROM (
                SELECT date(first_seen + ?3, 'unixepoch') AS day, category_code AS code,
                       category_name AS name, 1 AS f, 0 AS fi, 0 AS cl
                  FROM found WHERE {found}
                UNION ALL
                SELECT date({FILED_AT} + ?3, 'unixepoch'), category_code,
                       json_extract(data, '$.category.name'), 0, 1, 0
                  FROM cases WHERE {FILED_AT} IS NOT NULL AND {filed}
                UNION ALL
                SELECT date({CLOSED_AT} + ?3, 'unixepoch'), category_code,
                       json_extract(data, '$.category.name'), 0, 0, 1
                  FROM cases WHERE status = 'closed' AND {closed}
             ) GROUP BY day, code ORDER BY day, code",
            found = in_period("first_seen"),
            filed = in_period(FILED_AT),
            closed = in_period(CLOSED_AT),
        );
        let mut stmt = self.conn.prepare(&by_day).map_err(sql)?;
        stats.by_day = stmt
            .query_map(params![since, until, utc_offset], |r| {
                Ok(DayCount {
                    day: r.get(0)?,
                    category_code: r.get(1)?,
                    category_name: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                    found: count(r, 3)?,
                    filed: count(r, 4)?,
                    closed: count(r, 5)?,
                })
            })
            .map_err(sql)?
            .collect::<Result<_, _>>()
            .map_err(sql)?;

        // Events with verdicts in the period, and those found in it without any.
        let per_event = format!(
            "SELECT event, SUM(confirmed), SUM(rejected) FROM (
                SELECT json_extract(data, '$.event') AS event,
                       json_extract(data, '$.verdict.kind') = 'confirmed' AS confirmed,
                       json_extract(data, '$.verdict.kind') = 'rejected' AS rejected
                  FROM cases WHERE json_extract(data, '$.verdict') IS NOT NULL AND {verdict}
                UNION ALL
                SELECT DISTINCT event, 0, 0 FROM found WHERE {found}
             ) GROUP BY event ORDER BY event",
            verdict = in_period(VERDICT_AT),
            found = in_period("first_seen"),
        );
        let mut stmt = self.conn.prepare(&per_event).map_err(sql)?;
        stats.per_event = stmt
            .query_map(params![since, until], |r| {
                let (confirmed, rejected) = (count(r, 1)?, count(r, 2)?);
                let judged = confirmed + rejected;
                Ok(EventPrecision {
                    event: r.get(0)?,
                    confirmed,
                    rejected,
                    false_positive_rate: (judged > 0).then(|| rejected as f64 / judged as f64),
                })
            })
            .map_err(sql)?
            .collect::<Result<_, _>>()
            .map_err(sql)?;

        stats.overdue = self.query_cases(
            "SELECT id, data FROM cases
             WHERE status NOT IN ('closed', 'rejected')
               AND json_extract(data, '$.deadline') < ?1
             ORDER BY json_extract(data, '$.deadline'), id",
            &[&now],
        )?;
        Ok(stats)
    }
}
