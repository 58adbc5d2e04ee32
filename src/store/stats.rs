//! Figures for the city's reports and the console: how many problems were found, filed,
//! closed and rejected in a period, by local day and category, how precise each event's
//! detection is by the operators' verdicts, and which cases are overdue.

use super::sql::{vals, Row};
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

/// `column` in the period `[?1, ?2)` (either end open when NULL; cast so that
/// PostgreSQL knows the type of a NULL).
fn in_period(column: &str) -> String {
    format!(
        "(CAST(?1 AS DOUBLE PRECISION) IS NULL OR {column} >= ?1) \
         AND (CAST(?2 AS DOUBLE PRECISION) IS NULL OR {column} < ?2)"
    )
}

/// 1 where `condition` holds, else 0: for sums in either dialect.
fn one_if(condition: &str) -> String {
    format!("CASE WHEN {condition} THEN 1 ELSE 0 END")
}

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
        let d = self.db.dialect();
        let sql = |e| self.sql(e);
        let filed_at = d.json_number("filed_at");
        let closed_at = d.json_number("closed_at");
        let verdict_at = d.json_number("verdict.at");
        let category_name = d.json_text("category.name");
        let period = vals![since, until];
        let mut stats = Stats {
            found: self
                .db
                .query_one(
                    &format!(
                        "SELECT COUNT(*) FROM found WHERE {}",
                        in_period("first_seen")
                    ),
                    &period,
                )
                .and_then(|r| r.count(0))
                .map_err(sql)?,
            ..Stats::default()
        };
        let filed = format!("{filed_at} IS NOT NULL AND {}", in_period(&filed_at));
        let closed = format!("status = 'closed' AND {}", in_period(&closed_at));
        let rejected = format!("status = 'rejected' AND {}", in_period(&verdict_at));
        let reason = d.json_text("close_reason");
        let totals = format!(
            "SELECT SUM({}), SUM({}), SUM({}), SUM({}), SUM({}) FROM cases",
            one_if(&filed),
            one_if(&closed),
            one_if(&rejected),
            one_if(&format!("{closed} AND {reason} = 'auto-verified'")),
            one_if(&format!("{closed} AND {reason} = 'operator'")),
        );
        let row = self.db.query_one(&totals, &period).map_err(sql)?;
        let count = |i| row.count(i).map_err(sql);
        (
            stats.filed,
            stats.closed,
            stats.rejected,
            stats.closed_auto,
            stats.closed_operator,
        ) = (count(0)?, count(1)?, count(2)?, count(3)?, count(4)?);

        let day = |seconds: &str| d.utc_date(&format!("{seconds} + ?3"));
        let by_day = format!(
            "SELECT day, code, MAX(name), SUM(f), SUM(fi), SUM(cl) FROM (
                SELECT {found_day} AS day, category_code AS code,
                       category_name AS name, 1 AS f, 0 AS fi, 0 AS cl
                  FROM found WHERE {found}
                UNION ALL
                SELECT {filed_day}, category_code, {category_name}, 0, 1, 0
                  FROM cases WHERE {filed}
                UNION ALL
                SELECT {closed_day}, category_code, {category_name}, 0, 0, 1
                  FROM cases WHERE {closed}
             ) AS counts GROUP BY day, code ORDER BY day, code",
            found_day = day("first_seen"),
            filed_day = day(&filed_at),
            closed_day = day(&closed_at),
            found = in_period("first_seen"),
        );
        stats.by_day = self.query_map(&by_day, &vals![since, until, utc_offset], |r: &Row| {
            Ok(DayCount {
                day: r.text(0)?,
                category_code: r.text(1)?,
                category_name: r.opt_text(2)?.unwrap_or_default(),
                found: r.count(3)?,
                filed: r.count(4)?,
                closed: r.count(5)?,
            })
        })?;

        // Events with verdicts in the period, and those found in it without any.
        let kind = d.json_text("verdict.kind");
        let per_event = format!(
            "SELECT event, SUM(confirmed), SUM(rejected) FROM (
                SELECT {event} AS event, {confirmed} AS confirmed, {rejected} AS rejected
                  FROM cases WHERE {verdict} IS NOT NULL AND {in_verdict}
                UNION ALL
                SELECT DISTINCT event, 0, 0 FROM found WHERE {found}
             ) AS verdicts GROUP BY event ORDER BY event",
            event = d.json_text("event"),
            confirmed = one_if(&format!("{kind} = 'confirmed'")),
            rejected = one_if(&format!("{kind} = 'rejected'")),
            verdict = d.json_text("verdict"),
            in_verdict = in_period(&verdict_at),
            found = in_period("first_seen"),
        );
        stats.per_event = self.query_map(&per_event, &period, |r: &Row| {
            let (confirmed, rejected) = (r.count(1)?, r.count(2)?);
            let judged = confirmed + rejected;
            Ok(EventPrecision {
                event: r.text(0)?,
                confirmed,
                rejected,
                false_positive_rate: (judged > 0).then(|| rejected as f64 / judged as f64),
            })
        })?;

        let deadline = d.json_number("deadline");
        stats.overdue = self.query_cases(
            &format!(
                "SELECT id, data FROM cases
                 WHERE status NOT IN ('closed', 'rejected') AND {deadline} < ?1
                 ORDER BY {deadline}, id"
            ),
            &vals![now],
        )?;
        Ok(stats)
    }
}
