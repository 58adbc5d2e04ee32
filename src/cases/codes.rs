//! The city platform's code table: each of our events under the code the city's digital
//! management platform files it as (602 无照经营游商, 605 机动车乱停放, …) with the extra
//! fields the platform wants (disposal department 处置部门, source 来源, …). Street and
//! community codes belong to the place: they come from each camera's `[camera.codes]`.
//!
//! ```toml
//! [defaults]                     # fields of every event, unless the event sets them
//! source = "智能视频发现"
//!
//! [event.illegal_parking]
//! city_code = "605"
//! department = "交警大队"
//! ```
//!
//! A case carries the event's `city_code` and the merged fields: the table's defaults,
//! then the event's own, then the camera's codes (the more specific one wins).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A code table that cannot be used; the message names the file and the entry.
#[derive(Debug, thiserror::Error)]
#[error("{}: {field}: {}", file.display(), crate::config::clip_lines(reason))]
pub struct CodeTableError {
    pub file: PathBuf,
    pub field: String,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    #[serde(default)]
    defaults: BTreeMap<String, String>,
    #[serde(default)]
    event: BTreeMap<String, BTreeMap<String, String>>,
}

/// One event's entry: the platform's code and the fields that go with it.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    city_code: String,
    fields: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CodeTable {
    file: PathBuf,
    defaults: BTreeMap<String, String>,
    events: BTreeMap<String, Entry>,
}

/// What a case says in the city platform's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct CityCode {
    pub code: String,
    pub fields: BTreeMap<String, String>,
}

impl CodeTable {
    /// Reads the table; every one of `used` (the events the cameras file) needs an entry,
    /// and an entry for an event not among `known` is refused as a misspelling.
    pub fn load(path: &Path, known: &[&str], used: &[&str]) -> Result<Self, CodeTableError> {
        let error = |field: String, reason: String| CodeTableError {
            file: path.to_path_buf(),
            field,
            reason,
        };
        let text = crate::config::read_text(path).map_err(|e| match e {
            crate::config::ConfigError::Read { reason, .. } => error("reading".into(), reason),
            e => error("reading".into(), e.to_string()),
        })?;
        let raw: RawTable =
            toml::from_str(&text).map_err(|e| error("syntax".into(), e.to_string()))?;
        if raw.defaults.contains_key("city_code") {
            return Err(error(
                "defaults.city_code".into(),
                "the platform's code is given per event, under [event.NAME]".into(),
            ));
        }
        check_fields(&raw.defaults)
            .map_err(|(key, reason)| error(format!("defaults.{key}"), reason))?;
        let mut events_out = BTreeMap::new();
        for (event, mut fields) in raw.event {
            let at = format!("event.{event}");
            if !known.contains(&event.as_str()) {
                return Err(error(
                    at,
                    format!("no such event (known: {})", known.join(", ")),
                ));
            }
            let city_code = fields
                .remove("city_code")
                .filter(|c| !c.trim().is_empty())
                .ok_or_else(|| error(at.clone(), "gives no city_code".into()))?;
            check_fields(&fields).map_err(|(key, reason)| error(format!("{at}.{key}"), reason))?;
            events_out.insert(event, Entry { city_code, fields });
        }
        if let Some(missing) = used.iter().find(|e| !events_out.contains_key(**e)) {
            return Err(error(
                format!("event.{missing}"),
                format!(
                    "missing: every event needs the city's code (add [event.{missing}] with city_code = \"…\")"
                ),
            ));
        }
        Ok(Self {
            file: path.to_path_buf(),
            defaults: raw.defaults,
            events: events_out,
        })
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn knows(&self, event: &str) -> bool {
        self.events.contains_key(event)
    }

    /// The city's code and fields of `event` at a camera with `camera_codes`; `None` for
    /// an event the table does not know.
    pub fn city_code(
        &self,
        event: &str,
        camera_codes: &BTreeMap<String, String>,
    ) -> Option<CityCode> {
        let entry = self.events.get(event)?;
        let mut fields = self.defaults.clone();
        fields.extend(entry.fields.clone());
        fields.extend(camera_codes.clone());
        Some(CityCode {
            code: entry.city_code.clone(),
            fields,
        })
    }
}

/// Field names are words (`street_code`), so they can be CSV columns and JSON keys any
/// platform adapter can address; values are not empty.
pub fn check_fields(fields: &BTreeMap<String, String>) -> Result<(), (String, String)> {
    for (key, value) in fields {
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err((
                crate::config::clip(key),
                "a field name is made of a-z, 0-9 and _ (e.g. street_code)".into(),
            ));
        }
        if value.trim().is_empty() {
            return Err((key.clone(), "is empty".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: [&str; 2] = ["illegal_parking", "street_vending"];

    fn load(text: &str) -> Result<CodeTable, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("city-codes.toml");
        std::fs::write(&path, text).unwrap();
        CodeTable::load(&path, &EVENTS, &EVENTS).map_err(|e| {
            let text = e.to_string();
            text[text.find("city-codes.toml").unwrap()..].to_string()
        })
    }

    const TABLE: &str = "[defaults]\nsource = \"智能视频发现\"\ndepartment = \"城管执法中队\"\n\
        [event.illegal_parking]\ncity_code = \"605\"\ndepartment = \"交警大队\"\n\
        [event.street_vending]\ncity_code = \"602\"\n";

    #[test]
    fn the_event_then_the_camera_override_the_defaults() {
        let table = load(TABLE).unwrap();
        let camera = BTreeMap::from([
            ("street_code".to_string(), "110105001".to_string()),
            ("source".to_string(), "公安共享视频".to_string()),
        ]);
        let parking = table.city_code("illegal_parking", &camera).unwrap();
        assert_eq!(parking.code, "605");
        assert_eq!(
            parking.fields,
            BTreeMap::from([
                ("department".to_string(), "交警大队".to_string()),
                ("source".to_string(), "公安共享视频".to_string()),
                ("street_code".to_string(), "110105001".to_string()),
            ])
        );
        let vending = table.city_code("street_vending", &BTreeMap::new()).unwrap();
        assert_eq!(
            (vending.code.as_str(), vending.fields["department"].as_str()),
            ("602", "城管执法中队")
        );
        assert!(table.city_code("exposed_litter", &camera).is_none());
    }

    #[test]
    fn mistakes_name_the_file_and_the_event() {
        let missing = "[event.illegal_parking]\ncity_code = \"605\"\n";
        for (text, expected) in [
            (missing, "city-codes.toml: event.street_vending: missing: every event needs the city's code"),
            ("[event.illegal_parking]\ndepartment = \"x\"\n", "city-codes.toml: event.illegal_parking: gives no city_code"),
            (&format!("{TABLE}[event.ilegal_parking]\ncity_code = \"605\"\n"), "city-codes.toml: event.ilegal_parking: no such event (known: illegal_parking, street_vending)"),
            (&format!("{TABLE}[event.street_vending.x]\n"), "city-codes.toml: syntax: "),
            (&TABLE.replace("department = \"交警", "Department = \"交警"), "city-codes.toml: event.illegal_parking.Department: a field name is made of"),
            (&TABLE.replace("source = \"智能视频发现\"", "source = \" \""), "city-codes.toml: defaults.source: is empty"),
            (&TABLE.replace("[defaults]\n", "[defaults]\ncity_code = \"1\"\n"), "city-codes.toml: defaults.city_code: the platform's code is given per event"),
        ] {
            let err = load(text).unwrap_err();
            assert!(err.starts_with(expected), "{text}\n→ {err}");
        }
    }
}
