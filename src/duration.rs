//! The one duration syntax, for configuration files (`#[serde(with = ...)]`), command-line
//! options (`value_parser = parse`) and every other place a duration is written: humantime
//! text (`500ms`, `2s`, `1.5s`, `5m`, `1h30m`) or bare seconds (`30`, `1.5`), as people
//! write `--duration 30`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "`{text}` is not a duration: {reason} (write e.g. 500ms, 2s, 5m, 1h30m, or seconds: 30, 1.5)"
)]
pub struct DurationError {
    text: String,
    reason: String,
}

impl DurationError {
    /// What is wrong, without the text and examples, for callers that word their own.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    let bare_seconds =
        !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    // Bare seconds go through humantime too, so both forms share its exact arithmetic.
    let parsed = if bare_seconds {
        humantime::parse_duration(&format!("{trimmed}s"))
    } else {
        humantime::parse_duration(trimmed)
    };
    parsed.map_err(|e| DurationError {
        // Quoted clipped: a huge value must not flood the message.
        text: crate::config::clip(text),
        reason: e.to_string(),
    })
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humantime_text_and_bare_seconds_both_parse() {
        for (text, expected) in [
            ("2s", Duration::from_secs(2)),
            ("500ms", Duration::from_millis(500)),
            ("5m", Duration::from_secs(300)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5s", Duration::from_millis(1500)),
            ("30", Duration::from_secs(30)),
            ("1.5", Duration::from_millis(1500)),
            (" 0.25 ", Duration::from_millis(250)),
            ("0", Duration::ZERO),
        ] {
            assert_eq!(parse(text), Ok(expected), "{text:?}");
        }
    }

    #[test]
    fn errors_show_the_text_and_an_example() {
        for text in ["", "2 parsecs", "-1", "1..5", "1e3", "inf", "s"] {
            let error = parse(text).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("`{text}` is not a duration: ")) && error.contains("2s"),
                "{text:?}: {error}"
            );
        }
    }

    #[test]
    fn configuration_files_use_the_same_syntax() {
        #[derive(Deserialize)]
        struct Settings {
            #[serde(with = "crate::duration")]
            every: Duration,
        }
        let read = |text: &str| toml::from_str::<Settings>(text).map(|s| s.every);
        assert_eq!(read("every = \"90\"").unwrap(), Duration::from_secs(90));
        assert_eq!(read("every = \"2m\"").unwrap(), Duration::from_secs(120));
        let error = read("every = \"soon\"").unwrap_err().to_string();
        assert!(error.contains("`soon` is not a duration"), "{error}");
    }
}
