//! Scenario files: a clip (a file, or a recipe that makes one), the camera that recorded
//! it, when it was recorded, and the cases that are due.
//!
//! ```toml
//! name = "park-5min"
//! camera = "cameras/street.toml"         # relative to this file
//! start = "2026-11-24T12:00:00+08:00"    # wall-clock time of the first frame
//! every = "2s"                           # sampling (default 2s)
//! clip = "my-recording.mp4"              # or a [recipe] (see `recipe`)
//!
//! [[expect]]
//! event = "illegal_parking"
//! zone = "no-parking-east"
//! present = ["10s", "330s"]              # when the problem is there
//! file = ["190s", "194s"]                # when filing is correct (default: dwell + 2 samples)
//! close = ["260s", "280s"]               # when its case should close (default: never)
//! case = true                            # false: present, but no case is due
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::recipe::{Recipe, RecipeFile};
use super::score::Window;
use super::EvalError;

/// A scenario as read, before its camera is loaded.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub file: PathBuf,
    pub name: String,
    pub description: String,
    pub camera: PathBuf,
    pub camera_id: Option<String>,
    /// Unix time of the clip's first frame.
    pub start: f64,
    /// The `start` text as written (with its offset), for reports.
    pub start_text: String,
    pub every: Duration,
    pub clip: Clip,
    pub expect: Vec<Expectation>,
}

#[derive(Debug, Clone)]
pub enum Clip {
    File(PathBuf),
    Recipe(Recipe),
}

/// An `[[expect]]` entry; its filing window defaults once the zone's dwell is known.
#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    pub event: String,
    pub zone: String,
    pub present: Window,
    pub case: bool,
    pub file: Option<Window>,
    pub close: Option<Window>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    name: String,
    #[serde(default)]
    description: String,
    camera: PathBuf,
    camera_id: Option<String>,
    start: String,
    every: Option<String>,
    clip: Option<PathBuf>,
    recipe: Option<RecipeFile>,
    #[serde(default)]
    expect: Vec<ExpectFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectFile {
    event: String,
    zone: String,
    present: [String; 2],
    #[serde(default = "due")]
    case: bool,
    file: Option<[String; 2]>,
    close: Option<[String; 2]>,
}

fn due() -> bool {
    true
}

/// Where a scenario's files are looked for, and its errors point.
pub(super) struct Origin<'a> {
    pub file: &'a Path,
    pub samples: &'a Path,
}

impl Origin<'_> {
    pub fn invalid(&self, field: impl Into<String>, reason: impl Into<String>) -> EvalError {
        EvalError::Invalid {
            file: self.file.to_path_buf(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// `name` next to the scenario file, else in the samples directory.
    pub fn find(&self, field: &str, name: &Path) -> Result<PathBuf, EvalError> {
        let here = self.file.parent().unwrap_or(Path::new(".")).join(name);
        if here.exists() {
            return Ok(here);
        }
        let sample = self.samples.join(name);
        if sample.exists() {
            return Ok(sample);
        }
        Err(self.invalid(
            field,
            format!(
                "`{}` is neither next to the scenario nor in the samples directory {} (--samples, CGBOT_SAMPLES)",
                name.display(),
                self.samples.display()
            ),
        ))
    }

    pub fn seconds(&self, field: &str, text: &str) -> Result<f64, EvalError> {
        crate::duration::parse(text)
            .map(|d| d.as_secs_f64())
            .map_err(|e| self.invalid(field, e.to_string()))
    }

    fn window(&self, field: &str, [from, until]: &[String; 2]) -> Result<Window, EvalError> {
        let window = Window {
            from: self.seconds(field, from)?,
            until: self.seconds(field, until)?,
        };
        if window.until < window.from {
            return Err(self.invalid(field, format!("ends ({until}) before it starts ({from})")));
        }
        Ok(window)
    }
}

impl Scenario {
    /// Reads and checks a scenario file; recipe inputs are found in `samples` unless they
    /// lie next to the file.
    pub fn load(file: &Path, samples: &Path) -> Result<Scenario, EvalError> {
        let text = std::fs::read_to_string(file).map_err(|e| EvalError::Read {
            path: file.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::parse(&text, file, samples)
    }

    pub fn parse(text: &str, file: &Path, samples: &Path) -> Result<Scenario, EvalError> {
        let origin = Origin { file, samples };
        let raw: ScenarioFile = toml::from_str(text).map_err(|e| EvalError::Read {
            path: file.to_path_buf(),
            reason: e.to_string(),
        })?;
        let (start, _) = crate::local_time::parse_rfc3339(&raw.start)
            .map_err(|reason| origin.invalid("start", reason))?;
        let every = crate::duration::parse(raw.every.as_deref().unwrap_or("2s"))
            .map_err(|e| origin.invalid("every", e.to_string()))?;
        if every.is_zero() {
            return Err(origin.invalid("every", "must be longer than zero"));
        }
        let clip = match (raw.clip, raw.recipe) {
            (Some(path), None) => Clip::File(origin.find("clip", &path)?),
            (None, Some(recipe)) => Clip::Recipe(recipe.resolve(&origin, every)?),
            (Some(_), Some(_)) => {
                return Err(origin.invalid("clip", "give either `clip` or `[recipe]`, not both"))
            }
            (None, None) => {
                return Err(origin.invalid("clip", "missing: give `clip` (a file) or `[recipe]`"))
            }
        };
        let camera = file.parent().unwrap_or(Path::new(".")).join(&raw.camera);
        if !camera.exists() {
            return Err(origin.invalid("camera", format!("{} does not exist", camera.display())));
        }
        let expect = raw
            .expect
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let field = |name: &str| format!("expect[{i}].{name}");
                if !e.case && (e.file.is_some() || e.close.is_some()) {
                    return Err(origin.invalid(
                        field("case"),
                        "`file` and `close` windows need a case (`case = true`)",
                    ));
                }
                Ok(Expectation {
                    event: e.event.clone(),
                    zone: e.zone.clone(),
                    present: origin.window(&field("present"), &e.present)?,
                    case: e.case,
                    file: e
                        .file
                        .as_ref()
                        .map(|w| origin.window(&field("file"), w))
                        .transpose()?,
                    close: e
                        .close
                        .as_ref()
                        .map(|w| origin.window(&field("close"), w))
                        .transpose()?,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Scenario {
            file: file.to_path_buf(),
            name: raw.name,
            description: raw.description.trim().to_string(),
            camera,
            camera_id: raw.camera_id,
            start,
            start_text: raw.start,
            every,
            clip,
            expect,
        })
    }
}

/// The scenario files named: files as given, directories' `*.toml` files (not their
/// subdirectories, where camera files live), sorted by name.
pub fn scenario_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, EvalError> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|e| EvalError::Read {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
                .collect();
            if found.is_empty() {
                return Err(EvalError::Read {
                    path: path.clone(),
                    reason: "no scenario (*.toml) in this directory".into(),
                });
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, EvalError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cam.toml"), "").unwrap();
        std::fs::write(dir.path().join("clip.mp4"), "").unwrap();
        Scenario::parse(text, &dir.path().join("s.toml"), dir.path())
    }

    const HEAD: &str =
        "name = \"s\"\ncamera = \"cam.toml\"\nstart = \"2026-11-24T12:00:00+08:00\"\n";

    #[test]
    fn a_scenario_reads_its_clip_windows_and_local_start() {
        let s = parse(&format!(
            "{HEAD}clip = \"clip.mp4\"\nevery = \"1s\"\n[[expect]]\nevent = \"illegal_parking\"\n\
             zone = \"z\"\npresent = [\"10s\", \"5m\"]\nclose = [\"310\", \"330\"]\n"
        ))
        .unwrap();
        assert_eq!(s.start, 1_795_492_800.0); // 2026-11-24T04:00:00Z
        assert_eq!(s.every, Duration::from_secs(1));
        assert!(matches!(s.clip, Clip::File(_)));
        let e = &s.expect[0];
        assert_eq!(
            e.present,
            Window {
                from: 10.0,
                until: 300.0
            }
        );
        assert_eq!(
            e.close,
            Some(Window {
                from: 310.0,
                until: 330.0
            })
        );
        assert!(e.case && e.file.is_none());
    }

    #[test]
    fn bad_scenarios_name_the_file_and_field() {
        let cases = [
            (format!("{HEAD}clip = \"clip.mp4\"\ncolour = 1\n"), "unknown field `colour`"),
            (HEAD.to_string(), "clip: missing"),
            (format!("{HEAD}clip = \"nope.mp4\"\n"), "clip: `nope.mp4` is neither"),
            (
                "name = \"s\"\ncamera = \"cam.toml\"\nstart = \"2026-11-24 12:00\"\nclip = \"clip.mp4\"\n".into(),
                "start: `2026-11-24 12:00` is not an RFC 3339 time",
            ),
            (format!("{HEAD}clip = \"clip.mp4\"\nevery = \"soon\"\n"), "every: `soon` is not a duration"),
            (
                format!("{HEAD}clip = \"clip.mp4\"\n[[expect]]\nevent = \"e\"\nzone = \"z\"\npresent = [\"20s\", \"10s\"]\n"),
                "expect[0].present: ends (10s) before it starts (20s)",
            ),
            (
                format!("{HEAD}clip = \"clip.mp4\"\n[[expect]]\nevent = \"e\"\nzone = \"z\"\npresent = [\"1s\", \"2s\"]\ncase = false\nclose = [\"3s\", \"4s\"]\n"),
                "expect[0].case: `file` and `close` windows need a case",
            ),
            (
                "name = \"s\"\ncamera = \"other.toml\"\nstart = \"2026-11-24T12:00:00Z\"\nclip = \"clip.mp4\"\n".into(),
                "camera: ",
            ),
        ];
        for (text, wanted) in cases {
            let message = parse(&text).unwrap_err().to_string();
            assert!(message.contains("s.toml"), "{message}");
            assert!(message.contains(wanted), "wanted `{wanted}` in: {message}");
        }
    }
}
