//! The table of case categories (code, major class, name, handling time limit). The
//! default follows the digital city management event classification; cities override it
//! because their codes differ.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

const BUILTIN: &str = include_str!("catalogue.toml");

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Category {
    pub code: String,
    pub major: String,
    pub name: String,
    /// How long the city has to handle a filed case.
    #[serde(with = "humantime_serde_secs")]
    pub time_limit: Duration,
}

mod humantime_serde_secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
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
}

impl Categories {
    pub fn builtin() -> Self {
        Self::parse(BUILTIN, Path::new("built-in catalogue")).expect("built-in catalogue is valid")
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
                crate::duration::parse(&c.time_limit).map_err(|e| CatalogueError::TimeLimit {
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
        Ok(Self { categories })
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
