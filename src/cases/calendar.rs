//! The city's working calendar: handling time limits given in working time (4 working
//! hours for 暴露垃圾) count only the working hours of working days. A working day is a
//! working weekday that is no holiday, or a make-up working day (调休, a Saturday worked
//! to bridge a holiday). Days and hours are local to the camera (its UTC offset).
//!
//! ```toml
//! hours = ["08:30-12:00", "13:30-17:30"]
//! weekdays = ["mon", "tue", "wed", "thu", "fri"]   # the default
//! holidays = ["2026-10-01..2026-10-08", "2027-01-01"]
//! working_days = ["2026-10-10"]
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

const DAY: i64 = 86_400;
const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// A calendar that cannot be used; the message names the file and the field.
#[derive(Debug, thiserror::Error)]
#[error("{}: {field}: {}", file.display(), crate::config::clip_lines(reason))]
pub struct CalendarError {
    pub file: PathBuf,
    pub field: String,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCalendar {
    hours: Vec<String>,
    #[serde(default)]
    weekdays: Option<Vec<String>>,
    #[serde(default)]
    holidays: Vec<String>,
    #[serde(default)]
    working_days: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkingCalendar {
    /// Working periods of a working day: seconds after local midnight, sorted, disjoint,
    /// each of positive length.
    periods: Vec<(i64, i64)>,
    /// Working weekdays, Monday first.
    weekdays: [bool; 7],
    /// Days off by local date (days since 1970-01-01).
    holidays: BTreeSet<i64>,
    /// Make-up working days by local date.
    working_days: BTreeSet<i64>,
}

impl WorkingCalendar {
    /// A calendar from its parts: `periods` as (start, end) seconds after local midnight,
    /// days as local dates counted from 1970-01-01.
    pub fn new(
        periods: Vec<(i64, i64)>,
        weekdays: [bool; 7],
        holidays: BTreeSet<i64>,
        working_days: BTreeSet<i64>,
    ) -> Result<Self, (String, String)> {
        if periods.is_empty() {
            return Err(("hours".into(), "names no working hours".into()));
        }
        for pair in periods.windows(2) {
            if pair[1].0 < pair[0].1 {
                return Err((
                    "hours".into(),
                    format!(
                        "{} overlaps or precedes {}; list the periods in order of the day",
                        period_label(pair[1]),
                        period_label(pair[0])
                    ),
                ));
            }
        }
        if let Some(&(start, end)) = periods.iter().find(|(s, e)| s >= e || *s < 0 || *e > DAY) {
            return Err((
                "hours".into(),
                format!(
                    "{} is not a period within a day",
                    period_label((start, end))
                ),
            ));
        }
        // Without a working weekday the working time would run out after the listed
        // make-up days, and a deadline would never come.
        if !weekdays.contains(&true) {
            return Err(("weekdays".into(), "names no working weekday".into()));
        }
        if let Some(day) = holidays.intersection(&working_days).next() {
            return Err((
                "working_days".into(),
                format!("{} is also a holiday", date_label(*day)),
            ));
        }
        Ok(Self {
            periods,
            weekdays,
            holidays,
            working_days,
        })
    }

    pub fn load(path: &Path) -> Result<Self, CalendarError> {
        let error = |field: &str, reason: String| CalendarError {
            file: path.to_path_buf(),
            field: field.to_string(),
            reason,
        };
        let text = crate::config::read_text(path).map_err(|e| match e {
            crate::config::ConfigError::Read { reason, .. } => error("reading", reason),
            e => error("reading", e.to_string()),
        })?;
        let raw: RawCalendar = toml::from_str(&text).map_err(|e| error("syntax", e.to_string()))?;
        let periods = raw
            .hours
            .iter()
            .map(|h| parse_period(h))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| error("hours", reason))?;
        let weekdays = match raw.weekdays {
            None => [true, true, true, true, true, false, false],
            Some(names) => {
                let mut days = [false; 7];
                for name in &names {
                    let i = WEEKDAYS
                        .iter()
                        .position(|d| d.eq_ignore_ascii_case(name.trim()))
                        .ok_or_else(|| {
                            error(
                                "weekdays",
                                format!(
                                    "`{}` is not a weekday (one of {})",
                                    crate::config::clip(name),
                                    WEEKDAYS.join(", ")
                                ),
                            )
                        })?;
                    days[i] = true;
                }
                days
            }
        };
        let days = |field: &str, texts: &[String]| {
            let mut set = BTreeSet::new();
            for text in texts {
                set.extend(parse_days(text).map_err(|reason| error(field, reason))?);
            }
            Ok(set)
        };
        let holidays = days("holidays", &raw.holidays)?;
        let working_days = days("working_days", &raw.working_days)?;
        Self::new(periods, weekdays, holidays, working_days)
            .map_err(|(field, reason)| error(&field, reason))
    }

    /// Whether local date `day` (days since 1970-01-01) is worked.
    pub fn is_working_day(&self, day: i64) -> bool {
        if self.working_days.contains(&day) {
            return true;
        }
        !self.holidays.contains(&day) && self.weekdays[weekday(day)]
    }

    /// Whether Unix time `unix` falls strictly inside a working period, local to
    /// `utc_offset` seconds east of UTC (a period's start counts, its end does not).
    pub fn is_working_time(&self, unix: f64, utc_offset: i64) -> bool {
        let (day, at) = split_local(unix, utc_offset);
        self.is_working_day(day)
            && self
                .periods
                .iter()
                .any(|&(start, end)| at >= start as f64 && at < end as f64)
    }

    /// When `limit_seconds` of working time have passed since Unix time `start`: the
    /// deadline of a case filed at `start`. A deadline at the end of a working period
    /// stays there (it is not carried to the next period's start).
    pub fn deadline(&self, start: f64, limit_seconds: f64, utc_offset: i64) -> f64 {
        if limit_seconds <= 0.0 {
            return start;
        }
        let (mut day, mut at) = split_local(start, utc_offset);
        let mut remaining = limit_seconds;
        // Ends: every weekday-worked week has working time, and holidays are finite.
        loop {
            if self.is_working_day(day) {
                for &(period_start, period_end) in &self.periods {
                    let from = at.max(period_start as f64);
                    let available = period_end as f64 - from;
                    if available <= 0.0 {
                        continue;
                    }
                    if remaining <= available {
                        return (day * DAY - utc_offset) as f64 + from + remaining;
                    }
                    remaining -= available;
                }
            }
            day += 1;
            at = 0.0;
        }
    }

    /// Working seconds between Unix times `from` and `to` (0 when `to` is not later).
    pub fn working_seconds(&self, from: f64, to: f64, utc_offset: i64) -> f64 {
        if to <= from {
            return 0.0;
        }
        let (first_day, _) = split_local(from, utc_offset);
        let (last_day, _) = split_local(to, utc_offset);
        let mut total = 0.0;
        for day in first_day..=last_day {
            if !self.is_working_day(day) {
                continue;
            }
            let midnight = (day * DAY - utc_offset) as f64;
            for &(start, end) in &self.periods {
                let a = (midnight + start as f64).max(from);
                let b = (midnight + end as f64).min(to);
                total += (b - a).max(0.0);
            }
        }
        total
    }
}

/// Local date (days since 1970-01-01) and seconds into it.
fn split_local(unix: f64, utc_offset: i64) -> (i64, f64) {
    let local = unix + utc_offset as f64;
    let day = (local / DAY as f64).floor() as i64;
    (day, local - (day * DAY) as f64)
}

/// Monday is 0; 1970-01-01 was a Thursday.
fn weekday(day: i64) -> usize {
    (day + 3).rem_euclid(7) as usize
}

/// `08:30-12:00` as seconds after midnight; `24:00` ends a period at midnight.
fn parse_period(text: &str) -> Result<(i64, i64), String> {
    let bad = || {
        format!(
            "`{}` is not a period such as 08:30-12:00",
            crate::config::clip(text)
        )
    };
    let (start, end) = text.split_once('-').ok_or_else(bad)?;
    let clock = |t: &str| -> Option<i64> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
        ((0..=24).contains(&h) && (0..60).contains(&m) && h * 60 + m <= 24 * 60)
            .then_some((h * 60 + m) * 60)
    };
    let period = (clock(start).ok_or_else(bad)?, clock(end).ok_or_else(bad)?);
    if period.0 >= period.1 {
        return Err(format!(
            "`{}` ends before it starts",
            crate::config::clip(text)
        ));
    }
    Ok(period)
}

/// `2026-10-01` or an inclusive range `2026-10-01..2026-10-08`, as local dates.
fn parse_days(text: &str) -> Result<std::ops::RangeInclusive<i64>, String> {
    let date = |t: &str| {
        crate::local_time::parse_local_date(t, 0)
            .map(|secs| (secs / DAY as f64).floor() as i64)
            .map_err(|reason| format!("{reason} (or a range 2026-10-01..2026-10-08)"))
    };
    match text.split_once("..") {
        Some((first, last)) => {
            let (first, last) = (date(first)?, date(last)?);
            if last < first {
                return Err(format!(
                    "`{}` ends before it starts",
                    crate::config::clip(text)
                ));
            }
            Ok(first..=last)
        }
        None => {
            let day = date(text)?;
            Ok(day..=day)
        }
    }
}

fn period_label((start, end): (i64, i64)) -> String {
    let clock = |s: i64| format!("{:02}:{:02}", s / 3600, s % 3600 / 60);
    format!("{}-{}", clock(start), clock(end))
}

fn date_label(day: i64) -> String {
    crate::local_time::local_date((day * DAY) as f64, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CST: i64 = 8 * 3600;
    const HOUR: f64 = 3600.0;

    fn day_of(date: &str) -> i64 {
        *parse_days(date).unwrap().start()
    }

    /// Unix time of a local (CST) date and clock time.
    fn at(date: &str, clock: &str) -> f64 {
        let (h, m) = clock.split_once(':').unwrap();
        let secs = h.parse::<i64>().unwrap() * 3600 + m.parse::<i64>().unwrap() * 60;
        (day_of(date) * DAY + secs - CST) as f64
    }

    /// The hours of the worked examples: 08:30–12:00 and 13:30–17:30, Monday to Friday.
    fn office(holidays: &[&str], working_days: &[&str]) -> WorkingCalendar {
        WorkingCalendar::new(
            vec![
                (8 * 3600 + 1800, 12 * 3600),
                (13 * 3600 + 1800, 17 * 3600 + 1800),
            ],
            [true, true, true, true, true, false, false],
            holidays
                .iter()
                .flat_map(|d| parse_days(d).unwrap())
                .collect(),
            working_days
                .iter()
                .flat_map(|d| parse_days(d).unwrap())
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn worked_examples() {
        let cal = office(&[], &[]);
        // 2026-12-04 is a Friday: one hour and a half on Friday, the rest on Monday.
        assert_eq!(
            cal.deadline(at("2026-12-04", "16:00"), 4.0 * HOUR, CST),
            at("2026-12-07", "11:00")
        );
        // The lunch break does not count.
        assert_eq!(
            cal.deadline(at("2026-12-01", "11:00"), 2.0 * HOUR, CST),
            at("2026-12-01", "14:30")
        );
        // Filed at night: the clock starts at 08:30.
        assert_eq!(
            cal.deadline(at("2026-12-01", "22:10"), HOUR, CST),
            at("2026-12-02", "09:30")
        );
        // Exactly the rest of the morning: due at noon, not at 13:30.
        assert_eq!(
            cal.deadline(at("2026-12-01", "10:00"), 2.0 * HOUR, CST),
            at("2026-12-01", "12:00")
        );
        // Filed on Saturday: due Monday.
        assert_eq!(
            cal.deadline(at("2026-12-05", "09:00"), 4.0 * HOUR, CST),
            at("2026-12-07", "14:00")
        );
    }

    #[test]
    fn national_day_holidays_and_the_make_up_saturday() {
        // 2026: 1–7 October off, Saturday 10 October worked.
        let cal = office(&["2026-10-01..2026-10-07"], &["2026-10-10"]);
        // Wednesday 30 September 16:00 + 4 working hours: 1.5 h that day, then Thursday
        // 8 October from 08:30.
        assert_eq!(
            cal.deadline(at("2026-09-30", "16:00"), 4.0 * HOUR, CST),
            at("2026-10-08", "11:00")
        );
        // Friday 9 October 16:00: the make-up Saturday counts.
        assert_eq!(
            cal.deadline(at("2026-10-09", "16:00"), 4.0 * HOUR, CST),
            at("2026-10-10", "11:00")
        );
    }

    #[test]
    fn a_calendar_file_is_read_and_its_mistakes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("calendar.toml");
        std::fs::write(
            &path,
            "hours = [\"08:30-12:00\", \"13:30-17:30\"]\n\
             holidays = [\"2026-10-01..2026-10-07\"]\nworking_days = [\"2026-10-10\"]\n",
        )
        .unwrap();
        let cal = WorkingCalendar::load(&path).unwrap();
        assert_eq!(cal, office(&["2026-10-01..2026-10-07"], &["2026-10-10"]));

        for (text, expected) in [
            ("hours = [\"8.30-12\"]\n", "calendar.toml: hours: `8.30-12` is not a period"),
            ("hours = [\"12:00-08:30\"]\n", "calendar.toml: hours: `12:00-08:30` ends before it starts"),
            ("hours = [\"13:00-17:00\", \"08:00-12:00\"]\n", "calendar.toml: hours: 08:00-12:00 overlaps or precedes 13:00-17:00"),
            ("hours = [\"08:00-12:00\"]\nweekdays = [\"monday\"]\n", "calendar.toml: weekdays: `monday` is not a weekday"),
            ("hours = [\"08:00-12:00\"]\nweekdays = []\n", "calendar.toml: weekdays: names no working weekday"),
            ("hours = [\"08:00-12:00\"]\nholidays = [\"10/01/2026\"]\n", "calendar.toml: holidays: `10/01/2026` is not a date"),
            ("hours = [\"08:00-12:00\"]\nholidays = [\"2026-10-01\"]\nworking_days = [\"2026-10-01\"]\n", "calendar.toml: working_days: 2026-10-01 is also a holiday"),
            ("hours = []\n", "calendar.toml: hours: names no working hours"),
            ("hours = [\"08:00-12:00\"]\nholiday = []\n", "calendar.toml: syntax: "),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = WorkingCalendar::load(&path).unwrap_err().to_string();
            let err = err.replace(&format!("{}/", dir.path().display()), "");
            assert!(err.starts_with(expected), "{text}: {err}");
        }
    }

    /// Calendars with one or two working periods, random working weekdays (at least one),
    /// holidays and make-up days within the first 60 days after a start in 2026.
    fn calendars() -> impl Strategy<Value = WorkingCalendar> {
        let base = day_of("2026-01-01");
        (
            (0i64..20, 1i64..8, 0i64..4, 1i64..8),
            proptest::array::uniform7(any::<bool>()),
            0usize..7,
            proptest::collection::btree_set(0i64..60, 0..15),
            proptest::collection::btree_set(0i64..60, 0..6),
        )
            .prop_map(
                move |((a, len_a, gap, len_b), mut weekdays, forced, holidays, working)| {
                    weekdays[forced] = true;
                    let half_hour = 1800;
                    let first = (a * half_hour, (a + len_a) * half_hour);
                    let second = (
                        first.1 + gap * half_hour,
                        first.1 + (gap + len_b) * half_hour,
                    );
                    let periods = if gap == 0 {
                        vec![first]
                    } else {
                        vec![first, second]
                    };
                    let working: BTreeSet<i64> =
                        working.difference(&holidays).map(|d| base + d).collect();
                    WorkingCalendar::new(
                        periods,
                        weekdays,
                        holidays.into_iter().map(|d| base + d).collect(),
                        working,
                    )
                    .unwrap()
                },
            )
    }

    /// Starts over the first 60 days of 2026, at any second.
    fn starts() -> impl Strategy<Value = f64> {
        let base = (day_of("2026-01-01") * DAY - CST) as f64;
        (0i64..60 * DAY).prop_map(move |s| base + s as f64)
    }

    /// Limits from a minute to 40 working hours.
    fn limits() -> impl Strategy<Value = f64> {
        (1i64..2400).prop_map(|minutes| minutes as f64 * 60.0)
    }

    proptest! {
        #[test]
        fn a_deadline_counts_exactly_the_limit_in_working_time(
            cal in calendars(), start in starts(), limit in limits()
        ) {
            let deadline = cal.deadline(start, limit, CST);
            prop_assert!(deadline >= start);
            prop_assert!((cal.working_seconds(start, deadline, CST) - limit).abs() < 1e-6);
            // In a working period, or exactly at a period's end (the instant before is worked).
            prop_assert!(
                cal.is_working_time(deadline, CST) || cal.is_working_time(deadline - 0.5, CST),
                "deadline {} outside working time", crate::local_time::rfc3339(deadline, CST)
            );
        }

        #[test]
        fn days_off_add_no_working_time_and_working_days_do(
            cal in calendars(), start in starts(), limit in limits()
        ) {
            let deadline = cal.deadline(start, limit, CST);
            let (first, _) = split_local(start, CST);
            let (last, _) = split_local(deadline, CST);
            for day in first..=last {
                let midnight = (day * DAY - CST) as f64;
                let worked = cal.working_seconds(midnight, midnight + DAY as f64, CST);
                if !cal.is_working_day(day) {
                    prop_assert_eq!(worked, 0.0);
                } else {
                    prop_assert!(worked > 0.0);
                }
            }
        }

        #[test]
        fn adding_a_holiday_never_makes_a_deadline_earlier(
            cal in calendars(), start in starts(), limit in limits(), extra in 0i64..60
        ) {
            let day = day_of("2026-01-01") + extra;
            let mut more = cal.clone();
            more.working_days.remove(&day);
            more.holidays.insert(day);
            let before = cal.deadline(start, limit, CST);
            let after = more.deadline(start, limit, CST);
            prop_assert!(after >= before);
            // A make-up day on a weekend off: counted, so the deadline is no later.
            let mut made_up = cal.clone();
            made_up.holidays.remove(&day);
            made_up.working_days.insert(day);
            prop_assert!(made_up.is_working_day(day));
            prop_assert!(made_up.deadline(start, limit, CST) <= before);
            if cal.is_working_day(day) && before < (day * DAY - CST) as f64 {
                // The new holiday lay after the deadline: nothing changes.
                prop_assert_eq!(after, before);
            }
        }

        #[test]
        fn a_longer_limit_never_ends_earlier(
            cal in calendars(), start in starts(), a in limits(), b in limits()
        ) {
            let (short, long) = (a.min(b), a.max(b));
            prop_assert!(cal.deadline(start, short, CST) <= cal.deadline(start, long, CST));
        }
    }
}
