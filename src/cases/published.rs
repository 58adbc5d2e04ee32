//! Case times as they leave cgbot (API, sink payloads, exports): every time field keeps
//! its Unix seconds and gains a sibling `<field>_rfc3339` in the camera's local time
//! (`"filed_at": 1796112300.0, "filed_at_rfc3339": "2026-12-01T16:05:00+08:00"`), the form
//! city platforms take. Existing consumers of the numbers are unaffected.

use serde::Serialize;

use super::Case;
use crate::local_time::rfc3339;

/// Flattened next to a case wherever it is published.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocalTimes {
    pub first_seen_rfc3339: String,
    pub last_seen_rfc3339: String,
    pub filed_at_rfc3339: Option<String>,
    pub deadline_rfc3339: Option<String>,
    pub closed_at_rfc3339: Option<String>,
    pub updated_at_rfc3339: String,
    /// When the operator's latest verdict was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict_at_rfc3339: Option<String>,
}

impl LocalTimes {
    pub fn of(case: &Case) -> Self {
        let at = |t: f64| rfc3339(t, case.utc_offset);
        Self {
            first_seen_rfc3339: at(case.first_seen),
            last_seen_rfc3339: at(case.last_seen),
            filed_at_rfc3339: case.filed_at.map(at),
            deadline_rfc3339: case.deadline.map(at),
            closed_at_rfc3339: case.closed_at.map(at),
            updated_at_rfc3339: at(case.updated_at),
            verdict_at_rfc3339: case.verdict.as_ref().map(|v| at(v.at)),
        }
    }
}

/// A case with its local times, as the sinks and exports publish it.
#[derive(Debug, Serialize)]
pub struct PublishedCase<'a> {
    #[serde(flatten)]
    pub case: &'a Case,
    #[serde(flatten)]
    pub times: LocalTimes,
}

impl<'a> PublishedCase<'a> {
    pub fn of(case: &'a Case) -> Self {
        Self {
            case,
            times: LocalTimes::of(case),
        }
    }
}

/// A history entry with its time in the case camera's local time, as the API shows it.
#[derive(Debug, Serialize)]
pub struct PublishedEntry {
    #[serde(flatten)]
    pub entry: super::HistoryEntry,
    pub ts_rfc3339: String,
}

impl PublishedEntry {
    pub fn of(entry: super::HistoryEntry, utc_offset: i64) -> Self {
        Self {
            ts_rfc3339: rfc3339(entry.ts, utc_offset),
            entry,
        }
    }
}
