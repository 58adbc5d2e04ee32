//! The table of case categories (code, major class, name, handling time limit). The
//! default follows the digital city management event classification; cities override it
//! because their codes differ. A city also brings its working calendar (for time limits
//! in working hours) and its platform's code table; they travel with the categories to
//! every camera's case engine.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::calendar::{CalendarError, WorkingCalendar};
use super::codes::{CityCode, CodeTable, CodeTableError};

use serde::Deserialize;

const BUILTIN: &str = include_str!("catalogue.toml");

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Category {
    pub code: String,
    pub major: String,
    pub name: String,
    /// How long the city has to handle a filed case.
    pub time_limit: TimeLimit,
}

/// A handling time limit: on the wall clock (`2h`), or in working time (`4 working
/// hours`, `4h working`) counted through the city's working calendar only.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TimeLimit {
    Elapsed(Duration),
    Working(Duration),
}

impl TimeLimit {
    /// The word `working` anywhere makes it working time; the rest is a duration.
    fn parse(text: &str) -> Result<Self, crate::duration::DurationError> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let rest: Vec<&str> = words.iter().copied().filter(|w| *w != "working").collect();
        let duration = crate::duration::parse(&rest.join(" "));
        if rest.len() == words.len() {
            duration.map(TimeLimit::Elapsed)
        } else {
            duration.map(TimeLimit::Working)
        }
    }
}

impl std::fmt::Display for TimeLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TimeLimit::Elapsed(d) => write!(f, "{}", humantime::format_duration(*d)),
            TimeLimit::Working(d) => write!(f, "{} working", humantime::format_duration(*d)),
        }
    }
}

impl serde::Serialize for TimeLimit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCategory {
    code: String,
    major: String,
    name: String,
    time_limit: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalogue {
    category: Vec<RawCategory>,
}

#[derive(Debug, Clone)]
pub struct Categories {
    categories: Vec<Category>,
    /// Where the categories came from, for messages.
    file: PathBuf,
    calendar: Option<Arc<WorkingCalendar>>,
    codes: Option<Arc<CodeTable>>,
}

/// A catalogue that cannot be used; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("{}: {}", file.display(), crate::config::clip_lines(reason))]
    Read { file: PathBuf, reason: String },
    #[error("{}: {}", file.display(), crate::config::clip_lines(reason))]
    Syntax { file: PathBuf, reason: String },
    #[error("{}: category[{index}] ({}) time_limit: {}", file.display(), crate::config::clip(code), crate::config::clip_lines(reason))]
    TimeLimit {
        file: PathBuf,
        index: usize,
        code: String,
        reason: String,
    },
    #[error("{}: category code {} appears twice", file.display(), crate::config::clip(code))]
    DuplicateCode { file: PathBuf, code: String },
    #[error("{}: category {} has a time limit in working time ({limit}); give the city's working calendar (`calendar` in the run file, --calendar on replay)", file.display(), crate::config::clip(code))]
    NeedsCalendar {
        file: PathBuf,
        code: String,
        limit: TimeLimit,
    },
    #[error(transparent)]
    Calendar(#[from] CalendarError),
    #[error(transparent)]
    Codes(#[from] CodeTableError),
}

impl Categories {
    pub fn builtin() -> Self {
        Self::parse(BUILTIN, Path::new("built-in catalogue")).expect("built-in catalogue is valid")
    }

    /// A city's setup: its catalogue (else the built-in one), working calendar and code
    /// table, each optional. A time limit in working time needs the calendar; the code
    /// table knows only `known` events and needs an entry for every one of `used`.
    pub fn load_city(
        catalogue: Option<&Path>,
        calendar: Option<&Path>,
        codes: Option<&Path>,
        (known, used): (&[&str], &[&str]),
    ) -> Result<Self, CatalogueError> {
        let mut categories = match catalogue {
            Some(path) => Self::load(path)?,
            None => Self::builtin(),
        };
        categories.calendar = calendar
            .map(WorkingCalendar::load)
            .transpose()?
            .map(Arc::new);
        categories.codes = codes
            .map(|path| CodeTable::load(path, known, used))
            .transpose()?
            .map(Arc::new);
        if categories.calendar.is_none() {
            if let Some(c) = categories
                .categories
                .iter()
                .find(|c| matches!(c.time_limit, TimeLimit::Working(_)))
            {
                return Err(CatalogueError::NeedsCalendar {
                    file: categories.file.clone(),
                    code: c.code.clone(),
                    limit: c.time_limit,
                });
            }
        }
        Ok(categories)
    }

    /// The same categories with this working calendar.
    pub fn with_calendar(mut self, calendar: WorkingCalendar) -> Self {
        self.calendar = Some(Arc::new(calendar));
        self
    }

    /// The same categories with this code table.
    pub fn with_codes(mut self, codes: CodeTable) -> Self {
        self.codes = Some(Arc::new(codes));
        self
    }

    /// When a case of category `code` filed at Unix time `filed_at` is due, counting
    /// working time in the time zone `utc_offset` seconds east of UTC; `None` for an
    /// unknown category, or one in working time without a calendar.
    pub fn deadline(&self, code: &str, filed_at: f64, utc_offset: i64) -> Option<f64> {
        match self.get(code)?.time_limit {
            TimeLimit::Elapsed(limit) => Some(filed_at + limit.as_secs_f64()),
            TimeLimit::Working(limit) => Some(self.calendar.as_ref()?.deadline(
                filed_at,
                limit.as_secs_f64(),
                utc_offset,
            )),
        }
    }

    /// The code table in use that has no entry for `event`.
    pub fn code_table_without(&self, event: &str) -> Option<&Path> {
        self.codes
            .as_deref()
            .filter(|table| !table.knows(event))
            .map(CodeTable::file)
    }

    /// The city platform's code of `event` at a camera with `camera_codes`, when a code
    /// table is in use.
    pub fn city_code(
        &self,
        event: &str,
        camera_codes: &std::collections::BTreeMap<String, String>,
    ) -> Option<CityCode> {
        self.codes.as_ref()?.city_code(event, camera_codes)
    }

    pub fn load(path: &Path) -> Result<Self, CatalogueError> {
        let text = crate::config::read_text(path).map_err(|e| CatalogueError::Read {
            file: path.to_path_buf(),
            reason: match e {
                crate::config::ConfigError::Read { reason, .. } => reason,
                e => e.to_string(),
            },
        })?;
        Self::parse(&text, path)
    }

    fn parse(text: &str, file: &Path) -> Result<Self, CatalogueError> {
        let raw: RawCatalogue = toml::from_str(text).map_err(|e| CatalogueError::Syntax {
            file: file.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut categories = Vec::new();
        for (index, c) in raw.category.into_iter().enumerate() {
            let time_limit =
                TimeLimit::parse(&c.time_limit).map_err(|e| CatalogueError::TimeLimit {
                    file: file.to_path_buf(),
                    index,
                    code: c.code.clone(),
                    reason: e.to_string(),
                })?;
            if categories.iter().any(|k: &Category| k.code == c.code) {
                return Err(CatalogueError::DuplicateCode {
                    file: file.to_path_buf(),
                    code: c.code,
                });
            }
            categories.push(Category {
                code: c.code,
                major: c.major,
                name: c.name,
                time_limit,
            });
        }
        Ok(Self {
            categories,
            file: file.to_path_buf(),
            calendar: None,
            codes: None,
        })
    }

    pub fn get(&self, code: &str) -> Option<&Category> {
        self.categories.iter().find(|c| c.code == code)
    }

    pub fn codes(&self) -> Vec<&str> {
        self.categories.iter().map(|c| c.code.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_has_the_mission_categories() {
        let c = Categories::builtin();
        assert_eq!(c.get("0505").unwrap().name, "机动车乱停放");
        assert_eq!(c.get("0102").unwrap().major, "市容环境");
        assert_eq!(c.get("0501").unwrap().name, "无照经营游商");
        assert_eq!(c.get("0504").unwrap().name, "店外经营");
    }

    #[test]
    fn a_city_catalogue_with_a_bad_time_limit_names_the_entry() {
        let err = Categories::parse(
            "[[category]]\ncode = \"A1\"\nmajor = \"x\"\nname = \"y\"\ntime_limit = \"soon\"\n",
            Path::new("city.toml"),
        )
        .unwrap_err();
        assert!(
            matches!(&err, CatalogueError::TimeLimit { index: 0, code, .. } if code == "A1"),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("city.toml: category[0] (A1) time_limit: "),
            "{err}"
        );
    }

    #[test]
    fn a_time_limit_in_working_time_needs_a_calendar() {
        let dir = tempfile::tempdir().unwrap();
        let catalogue = dir.path().join("city.toml");
        std::fs::write(
            &catalogue,
            "[[category]]\ncode = \"0102\"\nmajor = \"x\"\nname = \"y\"\ntime_limit = \"4 working hours\"\n\
             [[category]]\ncode = \"0505\"\nmajor = \"x\"\nname = \"z\"\ntime_limit = \"1h\"\n",
        )
        .unwrap();
        let err = Categories::load_city(Some(&catalogue), None, None, (&[], &[])).unwrap_err();
        assert!(
            err.to_string().ends_with(
                "city.toml: category 0102 has a time limit in working time (4h working); give the city's working calendar (`calendar` in the run file, --calendar on replay)"
            ),
            "{err}"
        );
        let calendar = dir.path().join("calendar.toml");
        std::fs::write(&calendar, "hours = [\"08:30-12:00\", \"13:30-17:30\"]\n").unwrap();
        let city =
            Categories::load_city(Some(&catalogue), Some(&calendar), None, (&[], &[])).unwrap();
        // Tuesday 2026-12-01 11:00 CST: an hour before noon, three after 13:30.
        let filed = 1_796_094_000.0;
        assert_eq!(
            crate::local_time::rfc3339(city.deadline("0102", filed, 8 * 3600).unwrap(), 8 * 3600),
            "2026-12-01T16:30:00+08:00"
        );
        assert_eq!(city.deadline("0505", filed, 8 * 3600), Some(filed + 3600.0));
        assert_eq!(city.deadline("0999", filed, 8 * 3600), None);
        for text in ["4 working hours", "4h working", "working 4h"] {
            assert_eq!(
                TimeLimit::parse(text).unwrap(),
                TimeLimit::Working(Duration::from_secs(4 * 3600)),
                "{text}"
            );
        }
        assert_eq!(
            TimeLimit::parse("2h").unwrap(),
            TimeLimit::Elapsed(Duration::from_secs(7200))
        );
        assert!(TimeLimit::parse("working").is_err());
    }

    #[test]
    fn a_code_given_twice_is_refused() {
        let entry =
            "[[category]]\ncode = \"A1\"\nmajor = \"x\"\nname = \"y\"\ntime_limit = \"1d\"\n";
        let err = Categories::parse(&entry.repeat(2), Path::new("city.toml")).unwrap_err();
        assert_eq!(err.to_string(), "city.toml: category code A1 appears twice");
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = Categories::load(Path::new("/nonexistent/city.toml")).unwrap_err();
        assert!(matches!(err, CatalogueError::Read { .. }), "{err:?}");
        assert!(
            err.to_string().starts_with("/nonexistent/city.toml: "),
            "{err}"
        );
    }

    #[test]
    fn a_binary_file_or_a_huge_value_is_named_briefly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("city.toml");
        std::fs::write(&path, b"[[category]]\ncode = \"\xb3\xc7\"\n").unwrap();
        let err = Categories::load(&path).unwrap_err().to_string();
        assert!(err.contains("city.toml: not UTF-8 text"), "{err}");
        let huge = format!(
            "[[category]]\ncode = \"A1\"\nmajor = \"x\"\nname = \"y\"\ntime_limit = \"{}\"\n",
            "9".repeat(100_000)
        );
        let err = Categories::parse(&huge, Path::new("city.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.len() < 1000 && err.contains("time_limit"), "{err}");
    }
}
