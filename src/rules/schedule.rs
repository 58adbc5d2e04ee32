//! Daily time windows in the camera's local time, for rules that apply only at certain
//! hours (or are tolerated at certain hours, like vending in a night market 18:00–22:00).

use std::str::FromStr;

const DAY: i64 = 86_400;

/// `HH:MM-HH:MM`; a window may cross midnight (`22:00-06:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    start: i64,
    end: i64,
}

impl Window {
    /// Whether a second of the day falls inside (start inclusive, end exclusive).
    fn contains(&self, second_of_day: i64) -> bool {
        if self.start <= self.end {
            (self.start..self.end).contains(&second_of_day)
        } else {
            second_of_day >= self.start || second_of_day < self.end
        }
    }
}

fn clock(s: &str) -> Option<i64> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    ((0..=24).contains(&h) && (0..60).contains(&m) && h * 60 + m <= 24 * 60)
        .then_some((h * 60 + m) * 60)
}

impl FromStr for Window {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parsed = s.split_once('-').and_then(|(a, b)| {
            Some(Window {
                start: clock(a)?,
                end: clock(b)?,
            })
        });
        match parsed {
            Some(w) if w.start != w.end => Ok(w),
            _ => Err(format!(
                "time window `{s}` is not HH:MM-HH:MM with distinct ends"
            )),
        }
    }
}

/// When a rule applies: inside any `active` window (all day if none) and outside every
/// `tolerated` window, in local time at `utc_offset_seconds`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Schedule {
    pub active: Vec<Window>,
    pub tolerated: Vec<Window>,
}

impl Schedule {
    pub fn applies_at(&self, unix_seconds: f64, utc_offset_seconds: i64) -> bool {
        let local = (unix_seconds.floor() as i64 + utc_offset_seconds).rem_euclid(DAY);
        (self.active.is_empty() || self.active.iter().any(|w| w.contains(local)))
            && !self.tolerated.iter().any(|w| w.contains(local))
    }
}

/// `+08:00` / `-05:30` / `Z` → seconds east of UTC.
pub fn parse_utc_offset(s: &str) -> Result<i64, String> {
    if s == "Z" || s == "UTC" {
        return Ok(0);
    }
    let bad = || format!("UTC offset `{s}` is not like +08:00");
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => return Err(bad()),
    };
    let seconds = clock(rest).ok_or_else(bad)?;
    if seconds > 14 * 3600 {
        return Err(bad());
    }
    Ok(sign * seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hh: i64, mm: i64) -> f64 {
        // 2026-11-24 00:00 UTC + local time at UTC+8.
        (1_795_478_400 + (hh * 60 + mm) * 60 - 8 * 3600) as f64
    }

    #[test]
    fn night_market_tolerates_vending_in_the_evening_only() {
        let schedule = Schedule {
            active: vec![],
            tolerated: vec!["18:00-22:00".parse().unwrap()],
        };
        let offset = parse_utc_offset("+08:00").unwrap();
        assert!(schedule.applies_at(at(17, 59), offset));
        assert!(!schedule.applies_at(at(18, 0), offset));
        assert!(!schedule.applies_at(at(21, 59), offset));
        assert!(schedule.applies_at(at(22, 0), offset));
    }

    #[test]
    fn windows_may_cross_midnight() {
        let schedule = Schedule {
            active: vec!["22:00-06:00".parse().unwrap()],
            tolerated: vec![],
        };
        assert!(schedule.applies_at(at(23, 30), 8 * 3600));
        assert!(schedule.applies_at(at(5, 59), 8 * 3600));
        assert!(!schedule.applies_at(at(12, 0), 8 * 3600));
    }

    #[test]
    fn rejects_malformed_windows_and_offsets() {
        for bad in ["18:00", "25:00-26:00", "18:00-18:00", "6pm-10pm"] {
            assert!(bad.parse::<Window>().is_err(), "{bad}");
        }
        assert_eq!(parse_utc_offset("-05:30"), Ok(-19_800));
        assert!(parse_utc_offset("8").is_err());
    }
}
