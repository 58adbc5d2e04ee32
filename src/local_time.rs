//! Times as people and city platforms read them: in the camera's local time (pages,
//! RFC 3339 with the camera's offset in the API, sinks and exports), and local dates in forms.

use std::time::{Duration, UNIX_EPOCH};

/// `2026-12-01 10:20:30` in the time zone `utc_offset` seconds east of UTC.
pub fn local_time(unix: f64, utc_offset: i64) -> String {
    let shifted = (unix + utc_offset as f64).max(0.0);
    let text = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs_f64(shifted))
        .to_string();
    text.trim_end_matches('Z').replacen('T', " ", 1)
}

/// `2026-12-01T10:20:30+08:00`: RFC 3339 in the time zone `utc_offset` seconds east of
/// UTC, to the second.
pub fn rfc3339(unix: f64, utc_offset: i64) -> String {
    format!(
        "{}{}",
        local_time(unix, utc_offset).replacen(' ', "T", 1),
        offset_label(utc_offset)
    )
}

/// `+08:00` for 28,800 seconds.
pub fn offset_label(utc_offset: i64) -> String {
    let sign = if utc_offset < 0 { '-' } else { '+' };
    let minutes = utc_offset.abs() / 60;
    format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

/// The Unix time a local date (`YYYY-MM-DD`) starts at.
pub fn parse_local_date(text: &str, utc_offset: i64) -> Result<f64, String> {
    let at_midnight = format!("{}T00:00:00Z", text.trim());
    let utc = humantime::parse_rfc3339(&at_midnight)
        .map_err(|_| format!("`{text}` is not a date such as 2026-12-01"))?;
    let secs = utc
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("`{text}` is before 1970"))?
        .as_secs_f64();
    Ok(secs - utc_offset as f64)
}

/// The Unix time of an RFC 3339 timestamp with its offset (`2026-11-24T12:00:00+08:00`,
/// `…Z`), and the offset in seconds east of UTC.
pub fn parse_rfc3339(text: &str) -> Result<(f64, i64), String> {
    let text = text.trim();
    let bad = || format!("`{text}` is not an RFC 3339 time such as 2026-11-24T12:00:00+08:00");
    let split = if text.ends_with(['Z', 'z']) {
        text.len() - 1
    } else {
        // The offset's sign comes after the time (the date's dashes come before the `T`).
        let time_at = text.find(['T', 't', ' ']).ok_or_else(bad)?;
        time_at + text[time_at..].rfind(['+', '-']).ok_or_else(bad)?
    };
    let (local, offset) = text.split_at(split);
    let offset = crate::rules::parse_utc_offset(&offset.to_uppercase()).map_err(|_| bad())?;
    let as_if_utc = humantime::parse_rfc3339_weak(local).map_err(|_| bad())?;
    let secs = as_if_utc
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("`{text}` is before 1970"))?
        .as_secs_f64();
    Ok((secs - offset as f64, offset))
}

/// The local date (`YYYY-MM-DD`) of a Unix time.
pub fn local_date(unix: f64, utc_offset: i64) -> String {
    local_time(unix, utc_offset)[..10].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CST: i64 = 8 * 3600;

    #[test]
    fn times_are_shown_in_the_cameras_zone() {
        // 2026-12-01T02:00:00Z is 10:00 in Beijing.
        assert_eq!(local_time(1_796_090_400.0, CST), "2026-12-01 10:00:00");
        assert_eq!(offset_label(CST), "+08:00");
        assert_eq!(offset_label(-(5 * 3600 + 1800)), "-05:30");
    }

    #[test]
    fn rfc3339_carries_the_cameras_offset_and_names_the_same_instant() {
        let unix = 1_796_090_400.0;
        assert_eq!(rfc3339(unix, CST), "2026-12-01T10:00:00+08:00");
        assert_eq!(rfc3339(unix, 0), "2026-12-01T02:00:00+00:00");
        assert_eq!(
            rfc3339(unix, -(5 * 3600 + 1800)),
            "2026-11-30T20:30:00-05:30"
        );
    }

    #[test]
    fn rfc3339_with_an_offset_parses_to_the_same_instant_it_prints() {
        let unix = 1_796_090_400.0;
        assert_eq!(parse_rfc3339("2026-12-01T10:00:00+08:00"), Ok((unix, CST)));
        assert_eq!(parse_rfc3339("2026-12-01T02:00:00Z"), Ok((unix, 0)));
        assert_eq!(
            parse_rfc3339("2026-11-30T20:30:00-05:30"),
            Ok((unix, -(5 * 3600 + 1800)))
        );
        for bad in [
            "2026-12-01",
            "2026-12-01T10:00:00",
            "noon",
            "2026-12-01T10:00:00+25:00",
        ] {
            assert!(
                parse_rfc3339(bad).unwrap_err().contains("RFC 3339"),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_local_date_starts_at_local_midnight() {
        let start = parse_local_date("2026-12-01", CST).unwrap();
        assert_eq!(local_time(start, CST), "2026-12-01 00:00:00");
        assert_eq!(local_date(start + 86_399.0, CST), "2026-12-01");
        assert!(parse_local_date("12/01/2026", CST)
            .unwrap_err()
            .contains("not a date"));
    }
}
