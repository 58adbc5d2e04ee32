//! Camera configuration: TOML files (one file or a directory of them), each a camera
//! group with shared defaults. Every error names the file, the field and the reason.
//!
//! ```toml
//! [defaults]                      # for every camera in this file
//! model = "yolox_nano"
//! utc_offset = "+08:00"
//!
//! [[camera]]
//! id = "cam-0001"
//! name = "人民路东口"
//! main_stream = "rtsp://10.1.2.3/main"
//! sub_stream = "rtsp://10.1.2.3/sub"
//! credentials = "district-7"      # user and password from the secrets file (see `secrets`)
//! location = { longitude = 120.15, latitude = 30.28, address = "人民路 12 号", grid = "330102001001" }
//! tracker = { max_missed = 3 }    # samples an object may go undetected and keep its track
//! scene = { difference = 0.15 }   # what counts as new against the learned empty scene
//! priority = true                 # watched continuously even when the daemon patrols
//! codes = { street_code = "330102001", community_code = "330102001002" }  # city platform fields
//!
//! [[camera.zone]]
//! id = "no-parking"
//! polygon = [[0.1, 0.5], [0.9, 0.5], [0.9, 1.0], [0.1, 1.0]]
//! rules = [{ event = "illegal_parking", min_dwell = "180s" }]
//! ```
//!
//! A camera may have no zones: it is watched and shown, and files nothing until zones are
//! drawn.
//!
//! [`diff_cameras`] says what a new camera list changes; [`import_csv`] makes a camera file
//! of a city's camera point list, and [`merge_import`] merges it into the file in use;
//! [`camera_zones`] and [`save_zones`] read and rewrite one camera's zones in its file for
//! the operators' zone editor, validated by [`validate_zones`] as the loader validates
//! them.

mod diff;
mod file;
mod import;
mod secrets;
mod zones;

pub use diff::{diff_cameras, CameraDiff, ChangedCamera};
pub use import::{
    import_csv, list_bad_rows, merge_import, write_import, write_secrets, BadCell, BadRow,
    ImportError, ImportOptions, Imported, Merged,
};

pub use zones::{
    camera_zones, save_zones, validate_zones, CameraZones, RuleSpec, ZoneEditError, ZoneSpec,
};

#[cfg(test)]
mod fuzz_tests;
mod run;

pub use run::{
    thread_split, webhook_signer, ConsoleSettings, PatrolConfig, RetentionSettings, RtspSettings,
    RunConfig, StreamChoice, ThreadSplit,
};
pub use secrets::{read_secrets_file, Credential, Secrets, SecretsFile, SECRETS_ENV};

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::rules::{parse_utc_offset, EventCatalogue, ZoneRules};
use crate::scene::SceneConfig;
use crate::track::TrackerConfig;

/// A configuration file that cannot be used: it names the file, and the field at fault
/// with the reason. Values quoted from the file are shown clipped (see [`clip`]), so that a
/// huge or binary value never floods the message.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {}", path.display(), clip_lines(reason))]
    Read { path: PathBuf, reason: String },
    #[error("{}: {}: {}", path.display(), clip_lines(field), clip_lines(reason))]
    Invalid {
        path: PathBuf,
        field: String,
        reason: String,
    },
}

/// The most characters of a value from a file that an error message quotes.
const ECHO_MAX: usize = 80;

/// The most characters of one line of an error message: a safeguard for reasons worded
/// elsewhere (TOML's message quotes the line at fault, however long it is).
const LINE_MAX: usize = 240;

/// `value` as an error message quotes it: control characters escaped, and at most
/// [`ECHO_MAX`] characters, then `…`.
pub fn clip(value: &str) -> String {
    clip_to(value, ECHO_MAX)
}

fn clip_to(value: &str, max: usize) -> String {
    let mut out = String::new();
    let mut shown = 0;
    for c in value.chars() {
        // An escaped control character counts as the characters it takes.
        let piece: String = if c.is_control() {
            c.escape_default().collect()
        } else {
            c.to_string()
        };
        shown += piece.chars().count();
        if shown > max {
            out.push('…');
            break;
        }
        out.push_str(&piece);
    }
    out
}

/// Every line of `text` clipped to [`LINE_MAX`] characters.
pub(crate) fn clip_lines(text: &str) -> String {
    text.split('\n')
        .map(|line| clip_to(line, LINE_MAX))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads a configuration file as UTF-8 text; a file that is not says so, and where.
pub(crate) fn read_text(path: &Path) -> Result<String, ConfigError> {
    let read = |reason: String| ConfigError::Read {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| read(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&valid[line_start..])
            .chars()
            .count()
            + 1;
        read(format!(
            "not UTF-8 text (invalid byte at line {line}, column {column}); \
             configuration files are UTF-8: convert it (e.g. `iconv -f GBK -t UTF-8`)"
        ))
    })
}

/// A stream URL as the RTSP source needs it: `rtsp://` or `rtsps://` with a host.
/// The reason quotes the URL without its credentials.
fn check_stream_url(url: &str) -> Result<(), String> {
    let shown = || clip(&crate::redact::redact_url(url));
    match url::Url::parse(url) {
        Ok(parsed) if !matches!(parsed.scheme(), "rtsp" | "rtsps") => Err(format!(
            "`{}` is not an rtsp:// or rtsps:// URL (scheme `{}`)",
            shown(),
            clip(parsed.scheme())
        )),
        Ok(parsed) if parsed.host_str().is_none_or(str::is_empty) => {
            Err(format!("`{}` names no host", shown()))
        }
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "`{}` is not an rtsp:// or rtsps:// URL ({e})",
            shown()
        )),
    }
}

/// Checks a model setting against the model catalogue: a catalogue name must be known. A
/// path to an ONNX file (`*.onnx`, anything with a `/`, or an existing file, as
/// [`crate::models::Catalogue::resolve`] reads it) is checked when it is opened.
pub(crate) fn check_model_name(
    model: &str,
    catalogue: &mut Option<Option<crate::models::Catalogue>>,
) -> Result<(), String> {
    if model.ends_with(".onnx") || model.contains('/') || Path::new(model).is_file() {
        return Ok(());
    }
    // A catalogue that does not load is reported when the model is resolved.
    let Some(catalogue) =
        catalogue.get_or_insert_with(|| crate::models::Catalogue::load(None).ok())
    else {
        return Ok(());
    };
    match catalogue.get(model) {
        Ok(_) => Ok(()),
        Err(crate::models::ModelError::Unknown { known, .. }) => Err(format!(
            "unknown model `{}`; known models: {known} (or a path to an .onnx file)",
            clip(model)
        )),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    model: Option<String>,
    utc_offset: Option<String>,
    tracker: Option<TrackerFields>,
    scene: Option<SceneFields>,
    /// Credentials of every camera in the file that names none of its own.
    credentials: Option<String>,
    password_env: Option<String>,
}

/// Tracker settings a camera may tune (see [`TrackerConfig`] for their meaning).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrackerFields {
    max_missed: Option<u32>,
    min_iou: Option<f32>,
    max_jump: Option<f32>,
    min_appearance: Option<f32>,
    stationary_iou: Option<f32>,
}

impl TrackerFields {
    fn resolve(&self, over: Option<&TrackerFields>) -> Result<TrackerConfig, String> {
        let mut config = TrackerConfig::default();
        for fields in std::iter::once(self).chain(over) {
            config.max_missed = fields.max_missed.unwrap_or(config.max_missed);
            config.min_iou = fields.min_iou.unwrap_or(config.min_iou);
            config.max_jump = fields.max_jump.unwrap_or(config.max_jump);
            config.min_appearance = fields.min_appearance.unwrap_or(config.min_appearance);
            config.stationary_iou = fields.stationary_iou.unwrap_or(config.stationary_iou);
        }
        for (name, value) in [
            ("min_iou", config.min_iou),
            ("min_appearance", config.min_appearance),
            ("stationary_iou", config.stationary_iou),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(format!("`{name}` = {value} is not between 0 and 1"));
            }
        }
        if config.max_jump.is_nan() || config.max_jump <= 0.0 {
            return Err(format!("`max_jump` = {} must be positive", config.max_jump));
        }
        Ok(config)
    }
}

/// Scene settings a camera may tune (see [`SceneConfig`] for their meaning); used only by
/// cameras whose rules list the `new_object` label.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SceneFields {
    difference: Option<f32>,
    confirm_samples: Option<u32>,
    learn_samples: Option<u32>,
    learning_rate: Option<f32>,
    min_cells: Option<u32>,
}

impl SceneFields {
    fn resolve(&self, over: Option<&SceneFields>) -> Result<SceneConfig, String> {
        let mut config = SceneConfig::default();
        for fields in std::iter::once(self).chain(over) {
            config.difference = fields.difference.unwrap_or(config.difference);
            config.confirm_samples = fields.confirm_samples.unwrap_or(config.confirm_samples);
            config.learn_samples = fields.learn_samples.unwrap_or(config.learn_samples);
            config.learning_rate = fields.learning_rate.unwrap_or(config.learning_rate);
            config.min_cells = fields.min_cells.unwrap_or(config.min_cells);
        }
        config.check()?;
        Ok(config)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CameraFile {
    #[serde(default)]
    defaults: Defaults,
    #[serde(default)]
    camera: Vec<RawCamera>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCamera {
    id: String,
    name: Option<String>,
    main_stream: Option<String>,
    sub_stream: Option<String>,
    #[serde(default)]
    location: Location,
    model: Option<String>,
    utc_offset: Option<String>,
    tracker: Option<TrackerFields>,
    scene: Option<SceneFields>,
    /// The name of the stream credentials in the secrets file.
    credentials: Option<String>,
    /// The environment variable holding the stream password.
    password_env: Option<String>,
    #[serde(default)]
    priority: bool,
    /// The city platform's fields of the camera's place (`street_code`, `community_code`).
    #[serde(default)]
    codes: BTreeMap<String, String>,
    /// None: the camera is connected and shown, but files nothing until zones are drawn.
    #[serde(default)]
    zone: Vec<ZoneSpec>,
}

/// Where a camera is; every case it files carries this.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub longitude: Option<f64>,
    pub latitude: Option<f64>,
    pub address: Option<String>,
    /// Grid-cell code of the city's management grid (单元网格).
    pub grid: Option<String>,
}

/// What a camera's cases say about it: id, display name, place and the city platform's
/// codes of the place.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CameraInfo {
    pub id: String,
    pub name: String,
    pub location: Location,
    /// Fields the city's platform wants with every case of the camera (`[camera.codes]`:
    /// street and community codes, …); they override the code table's.
    pub codes: BTreeMap<String, String>,
}

/// One camera, validated.
#[derive(Debug, Clone)]
pub struct Camera {
    pub info: CameraInfo,
    /// Stream URLs; they may carry credentials, so never log them unredacted.
    pub main_stream: Option<String>,
    pub sub_stream: Option<String>,
    /// Model name or path; `None` for the default model.
    pub model: Option<String>,
    /// Seconds east of UTC of the camera's local time (schedules use it).
    pub utc_offset: i64,
    /// How the camera's objects are tracked between samples.
    pub tracker: TrackerConfig,
    /// How the camera's empty scene is learned, for rules on new stationary things.
    pub scene: SceneConfig,
    pub zones: Vec<ZoneRules>,
    /// Watched continuously even when the daemon patrols the other cameras.
    pub priority: bool,
    /// The file the camera came from.
    pub source: PathBuf,
}

/// The events the cameras' zones file, each once, sorted.
pub fn events_used(cameras: &[Camera]) -> Vec<&str> {
    let mut events: Vec<&str> = cameras
        .iter()
        .flat_map(|c| &c.zones)
        .flat_map(|z| &z.rules)
        .map(|r| r.event.as_str())
        .collect();
    events.sort_unstable();
    events.dedup();
    events
}

/// Default local time of the reference deployment (China Standard Time).
const DEFAULT_UTC_OFFSET: &str = "+08:00";

impl Camera {
    /// A camera known only by its id, with no streams and no zones: what a recording
    /// analysed for detections alone comes from.
    pub fn unconfigured(id: &str) -> Self {
        Camera {
            info: CameraInfo {
                id: id.to_string(),
                ..CameraInfo::default()
            },
            main_stream: None,
            sub_stream: None,
            model: None,
            utc_offset: 8 * 3600,
            tracker: TrackerConfig::default(),
            scene: SceneConfig::default(),
            zones: Vec::new(),
            priority: false,
            source: PathBuf::new(),
        }
    }
}

/// Loads a camera file, or every `*.toml` in a directory (sorted by name); credentials
/// come from the secrets file of `$CGBOT_SECRETS` and the environment. The first error
/// found stops it (see [`check_cameras`] for all of them).
pub fn load_cameras(path: &Path, events: &EventCatalogue) -> Result<Vec<Camera>, ConfigError> {
    load_cameras_with(path, events, &Secrets::from_env())
}

/// Loads cameras as [`load_cameras`] does, with credentials from `secrets`.
pub fn load_cameras_with(
    path: &Path,
    events: &EventCatalogue,
    secrets: &Secrets,
) -> Result<Vec<Camera>, ConfigError> {
    check_cameras_with(path, events, secrets).map_err(|errors| {
        errors
            .into_iter()
            .next()
            .expect("a failed check has an error")
    })
}

/// Loads the camera files `path` names as [`load_cameras`] does, but goes on past an
/// error: every error of every file and every camera, in file order. A file TOML cannot
/// read is one error; a camera with several faults has one error for each.
pub fn check_cameras(
    path: &Path,
    events: &EventCatalogue,
) -> Result<Vec<Camera>, Vec<ConfigError>> {
    check_cameras_with(path, events, &Secrets::from_env())
}

/// [`check_cameras`] with credentials from `secrets`.
pub fn check_cameras_with(
    path: &Path,
    events: &EventCatalogue,
    secrets: &Secrets,
) -> Result<Vec<Camera>, Vec<ConfigError>> {
    let files = file::camera_files(path).map_err(|e| {
        vec![ConfigError::Read {
            path: e.path,
            reason: e.reason,
        }]
    })?;
    let mut errors = Vec::new();
    let mut cameras: Vec<Camera> = Vec::new();
    let mut ids = HashSet::new();
    for file in files {
        let text = match read_text(&file) {
            Ok(text) => text,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        for camera in load_text_all(&file, &text, events, secrets, &mut errors) {
            if !ids.insert(camera.info.id.clone()) {
                errors.push(ConfigError::Invalid {
                    path: file.clone(),
                    field: format!("camera `{}`", clip(&camera.info.id)),
                    reason: "id is used by another camera".into(),
                });
                continue;
            }
            cameras.push(camera);
        }
    }
    if errors.is_empty() {
        Ok(cameras)
    } else {
        Err(errors)
    }
}

/// The cameras of a camera file's text, credential references checked but not resolved;
/// `path` names the file in errors and becomes each camera's source. The first error
/// found is returned.
fn load_text(path: &Path, text: &str, events: &EventCatalogue) -> Result<Vec<Camera>, ConfigError> {
    let mut errors = Vec::new();
    let cameras = load_text_all(path, text, events, &Secrets::Skip, &mut errors);
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(cameras),
    }
}

/// The valid cameras of a camera file's text, credentials from `secrets`; every error
/// found goes to `errors`.
fn load_text_all(
    path: &Path,
    text: &str,
    events: &EventCatalogue,
    secrets: &Secrets,
    errors: &mut Vec<ConfigError>,
) -> Vec<Camera> {
    // toml's message carries the line and column.
    let file: CameraFile = match toml::from_str(text) {
        Ok(file) => file,
        Err(e) => {
            errors.push(ConfigError::Read {
                path: path.to_path_buf(),
                reason: e.to_string(),
            });
            return Vec::new();
        }
    };
    let invalid = |field: String, reason: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        field,
        reason,
    };
    if file.camera.is_empty() {
        errors.push(invalid(
            "camera".into(),
            "the file defines no [[camera]]".into(),
        ));
    }
    let mut catalogue = None;
    let defaults_model_ok = match &file.defaults.model {
        Some(model) => match check_model_name(model, &mut catalogue) {
            Ok(()) => true,
            Err(reason) => {
                errors.push(invalid("defaults.model".into(), reason));
                false
            }
        },
        None => true,
    };
    let default_ref = secrets::CredentialRef {
        credentials: file.defaults.credentials.clone(),
        password_env: file.defaults.password_env.clone(),
    };
    let mut resolver = secrets::Resolver::new(secrets);
    let mut cameras = Vec::new();
    for (ci, mut raw) in file.camera.into_iter().enumerate() {
        let at = format!("camera[{ci}] `{}`", clip(&raw.id));
        if raw.id.trim().is_empty() || raw.id.contains(char::is_whitespace) {
            errors.push(invalid(
                format!("camera[{ci}].id"),
                "must be a non-empty word".into(),
            ));
            continue;
        }
        let before = errors.len();
        let offset_text = raw.utc_offset.or(file.defaults.utc_offset.clone());
        let utc_offset = parse_utc_offset(offset_text.as_deref().unwrap_or(DEFAULT_UTC_OFFSET))
            .map_err(|e| errors.push(invalid(format!("{at}.utc_offset"), e)));
        let tracker = file
            .defaults
            .tracker
            .clone()
            .unwrap_or_default()
            .resolve(raw.tracker.as_ref())
            .map_err(|e| errors.push(invalid(format!("{at}.tracker"), e)));
        let scene = file
            .defaults
            .scene
            .clone()
            .unwrap_or_default()
            .resolve(raw.scene.as_ref())
            .map_err(|e| errors.push(invalid(format!("{at}.scene"), e)));
        if let (Some(lon), Some(lat)) = (raw.location.longitude, raw.location.latitude) {
            if !(-180.0..=180.0).contains(&lon) || !(-90.0..=90.0).contains(&lat) {
                errors.push(invalid(
                    format!("{at}.location"),
                    format!("({lon}, {lat}) is not a longitude/latitude"),
                ));
            }
        }
        for (field, url) in [
            ("main_stream", &raw.main_stream),
            ("sub_stream", &raw.sub_stream),
        ] {
            if let Some(Err(reason)) = url.as_deref().map(check_stream_url) {
                errors.push(invalid(format!("{at}.{field}"), reason));
            }
        }
        if let Some(model) = &raw.model {
            if let Err(reason) = check_model_name(model, &mut catalogue) {
                errors.push(invalid(format!("{at}.model"), reason));
            }
        }
        if let Err((key, reason)) = crate::cases::check_code_fields(&raw.codes) {
            errors.push(invalid(format!("{at}.codes.{key}"), reason));
        }
        let zones = zones::check_zones(&raw.zone, events)
            .map_err(|(field, reason)| errors.push(invalid(format!("{at}.{field}"), reason)));
        let own_ref = secrets::CredentialRef {
            credentials: raw.credentials.take(),
            password_env: raw.password_env.take(),
        };
        match secrets::CredentialRef::pick(&own_ref, &default_ref) {
            Err((is_default, reason)) => errors.push(invalid(
                if is_default {
                    "defaults".into()
                } else {
                    at.clone()
                },
                reason,
            )),
            Ok(Some(reference)) => {
                let from = if std::ptr::eq(reference, &own_ref) {
                    at.clone()
                } else {
                    "defaults".into()
                };
                let applied = resolver.apply(
                    reference,
                    [
                        ("main_stream", &mut raw.main_stream),
                        ("sub_stream", &mut raw.sub_stream),
                    ],
                );
                if let Err((field, reason)) = applied {
                    errors.push(match field.as_str() {
                        "credentials" | "password_env" => {
                            invalid(format!("{from}.{field}"), reason)
                        }
                        _ => invalid(format!("{at}.{field}"), reason),
                    });
                }
            }
            Ok(None) => {}
        }
        let (Ok(utc_offset), Ok(tracker), Ok(scene), Ok(zones)) =
            (utc_offset, tracker, scene, zones)
        else {
            continue;
        };
        if errors.len() > before || !defaults_model_ok {
            continue;
        }
        cameras.push(Camera {
            info: CameraInfo {
                name: raw.name.unwrap_or_else(|| raw.id.clone()),
                id: raw.id,
                location: raw.location,
                codes: raw.codes,
            },
            main_stream: raw.main_stream,
            sub_stream: raw.sub_stream,
            model: raw.model.or(file.defaults.model.clone()),
            utc_offset,
            tracker,
            scene,
            zones,
            priority: raw.priority,
            source: path.to_path_buf(),
        });
    }
    cameras
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Vec<Camera>, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cams.toml");
        std::fs::write(&path, text).unwrap();
        load_cameras(&path, &EventCatalogue::builtin()).map_err(|e| e.to_string())
    }

    /// A valid camera file; also the seed the fuzz tests damage.
    pub(super) const GOOD: &str = r#"
[defaults]
model = "yolox_nano"
utc_offset = "+08:00"
tracker = { max_missed = 5 }

[[camera]]
id = "cam-1"
tracker = { min_appearance = 0.6 }
name = "人民路东口"
main_stream = "rtsp://u:p@127.0.0.1/main"
location = { longitude = 120.15, latitude = 30.28, grid = "330102001001" }

[[camera.zone]]
id = "east"
polygon = [[0.1, 0.5], [0.9, 0.5], [0.9, 1.0], [0.1, 1.0]]
rules = [{ event = "illegal_parking", min_dwell = "30s", active = ["07:00-20:00"] }, { event = "exposed_litter" }]
"#;

    #[test]
    fn a_camera_file_resolves_zones_rules_and_group_defaults() {
        let cams = load(GOOD).unwrap();
        assert_eq!(cams.len(), 1);
        let cam = &cams[0];
        assert_eq!(cam.model.as_deref(), Some("yolox_nano"));
        assert_eq!(cam.utc_offset, 8 * 3600);
        assert_eq!(cam.info.location.grid.as_deref(), Some("330102001001"));
        assert_eq!(cam.zones[0].rules[0].min_dwell.as_secs(), 30);
        assert_eq!(cam.zones[0].rules[1].event, "exposed_litter");
        // Group defaults and the camera's own settings both apply.
        assert_eq!(cam.tracker.max_missed, 5);
        assert_eq!(cam.tracker.min_appearance, 0.6);
        assert_eq!(cam.scene, crate::scene::SceneConfig::default());
        let tuned = GOOD.replace(
            "tracker = { max_missed = 5 }",
            "tracker = { max_missed = 5 }\nscene = { difference = 0.2, confirm_samples = 5 }",
        );
        let scene = load(&tuned).unwrap()[0].scene;
        assert_eq!((scene.difference, scene.confirm_samples), (0.2, 5));
    }

    #[test]
    fn a_camera_without_zones_loads_and_watches_nothing() {
        let cams = load("[[camera]]\nid = \"cam-1\"\nmain_stream = \"rtsp://h/1\"\n").unwrap();
        assert!(cams[0].zones.is_empty());
        // Nothing to watch: the rules stage never sees a sighting for it.
        let engine = crate::rules::RuleEngine::new(
            cams[0].zones.clone(),
            cams[0].tracker.clone(),
            cams[0].utc_offset,
        );
        assert!(engine.watches_nothing());
    }

    #[test]
    fn zone_ids_must_be_given_and_used_once() {
        let empty = GOOD.replace("id = \"east\"", "id = \"\"");
        assert!(load(&empty)
            .unwrap_err()
            .ends_with("cams.toml: camera[0] `cam-1`.zone[0].id: must not be empty"));
        let twice = format!(
            "{GOOD}\n[[camera.zone]]\nid = \"east\"\npolygon = [[0.0, 0.0], [0.5, 0.0], [0.5, 0.5]]\n\
             rules = [{{ event = \"exposed_litter\" }}]\n"
        );
        let err = load(&twice).unwrap_err();
        assert!(
            err.ends_with(
                "camera[0] `cam-1`.zone[1] `east`: zone id is used twice in this camera \
                 (zone[0] has it too)"
            ),
            "{err}"
        );
    }

    #[test]
    fn errors_name_file_field_and_reason() {
        let bad_polygon = GOOD.replace("[0.9, 1.0], [0.1, 1.0]", "[0.9, 1.7]");
        let err = load(&bad_polygon).unwrap_err();
        assert!(
            err.contains("cams.toml: camera[0] `cam-1`.zone[0] `east`.polygon"),
            "{err}"
        );
        let bad_event = GOOD.replace("exposed_litter", "jaywalking");
        let err = load(&bad_event).unwrap_err();
        assert!(
            err.contains("zone[0] `east`.rules[1]: unknown event `jaywalking`"),
            "{err}"
        );
        let bad_dwell = GOOD.replace("\"30s\"", "\"thirty\"");
        assert!(load(&bad_dwell)
            .unwrap_err()
            .contains("rules[0]: `min_dwell`"));
        let typo = GOOD.replace("main_stream", "mian_stream");
        let err = load(&typo).unwrap_err();
        assert!(
            err.contains("cams.toml") && err.contains("mian_stream"),
            "{err}"
        );
        let bad_scene = GOOD.replace(
            "tracker = { min_appearance = 0.6 }",
            "tracker = { min_appearance = 0.6 }\nscene = { difference = 1.5 }",
        );
        assert!(load(&bad_scene)
            .unwrap_err()
            .contains("`cam-1`.scene: `difference` = 1.5 is not a fraction between 0 and 1"));
        let bad_tracker = GOOD.replace("min_appearance = 0.6", "min_appearance = 6.0");
        assert!(load(&bad_tracker)
            .unwrap_err()
            .contains("`cam-1`.tracker: `min_appearance` = 6"));
        let codes = |table: &str| {
            GOOD.replace(
                "location = {",
                &format!("codes = {{ {table} }}\nlocation = {{"),
            )
        };
        let cams = load(&codes("street_code = \"330102001\"")).unwrap();
        assert_eq!(cams[0].info.codes["street_code"], "330102001");
        assert!(load(&codes("Street = \"330102001\""))
            .unwrap_err()
            .contains("`cam-1`.codes.Street: a field name is made of a-z"));
        assert!(load(&codes("street_code = \"\""))
            .unwrap_err()
            .contains("`cam-1`.codes.street_code: is empty"));
        let twice = format!("{GOOD}\n[[camera]]\nid = \"cam-1\"\n");
        assert!(load(&twice)
            .unwrap_err()
            .contains("id is used by another camera"));
    }

    /// `text` as cams.toml beside a secrets file of `secrets` (mode 0600), loaded with it.
    fn load_with_secrets(text: &str, secrets: &str) -> Result<Vec<Camera>, String> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cams.toml");
        std::fs::write(&path, text).unwrap();
        let secrets_path = dir.path().join("secrets.toml");
        std::fs::write(&secrets_path, secrets).unwrap();
        std::fs::set_permissions(&secrets_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        load_cameras_with(
            &path,
            &EventCatalogue::builtin(),
            &Secrets::Resolve(Some(secrets_path)),
        )
        .map_err(|e| e.to_string())
    }

    const SECRETS: &str = "[credentials.district-7]\nuser = \"admin\"\npassword = \"p@ss word\"\n\
                           [credentials.other]\npassword = \"x\"\n";

    #[test]
    fn credentials_named_by_a_camera_or_the_defaults_go_into_its_streams() {
        let text = "[defaults]\ncredentials = \"district-7\"\n\
                    [[camera]]\nid = \"a\"\nmain_stream = \"rtsp://10.0.0.1/main\"\n\
                    sub_stream = \"rtsp://10.0.0.1:554/sub\"\n\
                    [[camera]]\nid = \"b\"\nmain_stream = \"rtsp://viewer@10.0.0.2/main\"\n\
                    credentials = \"other\"\n\
                    [[camera]]\nid = \"c\"\nmain_stream = \"rtsp://ops@10.0.0.3/main\"\n\
                    password_env = \"CGBOT_TEST_CAM_C_PASSWORD\"\n";
        std::env::set_var("CGBOT_TEST_CAM_C_PASSWORD", "c/pass");
        let cams = load_with_secrets(text, SECRETS).unwrap();
        assert_eq!(
            cams[0].main_stream.as_deref(),
            Some("rtsp://admin:p%40ss%20word@10.0.0.1/main")
        );
        assert_eq!(
            cams[0].sub_stream.as_deref(),
            Some("rtsp://admin:p%40ss%20word@10.0.0.1:554/sub")
        );
        // No user in the credential: the URL's stays.
        assert_eq!(
            cams[1].main_stream.as_deref(),
            Some("rtsp://viewer:x@10.0.0.2/main")
        );
        assert_eq!(
            cams[2].main_stream.as_deref(),
            Some("rtsp://ops:c%2Fpass@10.0.0.3/main")
        );

        // Skipped (console, zone edits): the references are read, nothing is put in.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cams.toml");
        std::fs::write(&path, text).unwrap();
        let cams = load_cameras_with(&path, &EventCatalogue::builtin(), &Secrets::Skip).unwrap();
        assert_eq!(cams[0].main_stream.as_deref(), Some("rtsp://10.0.0.1/main"));
    }

    #[test]
    fn credential_errors_name_file_field_and_reason() {
        let cam = |extra: &str| {
            format!("[[camera]]\nid = \"a\"\nmain_stream = \"rtsp://10.0.0.1/main\"\n{extra}")
        };
        let err = load_with_secrets(&cam("credentials = \"nope\"\n"), SECRETS).unwrap_err();
        assert!(
            err.contains("cams.toml: camera[0] `a`.credentials: unknown credential `nope`")
                && err.contains("secrets.toml"),
            "{err}"
        );
        let err = load_with_secrets(
            "[defaults]\ncredentials = \"nope\"\n[[camera]]\nid = \"a\"\n",
            SECRETS,
        )
        .unwrap_err();
        assert!(
            err.contains("cams.toml: defaults.credentials: unknown credential"),
            "{err}"
        );
        let err = load_with_secrets(
            &cam("credentials = \"other\"\npassword_env = \"X\"\n"),
            SECRETS,
        )
        .unwrap_err();
        assert!(
            err.contains("camera[0] `a`: give `credentials` or `password_env`"),
            "{err}"
        );
        let err = load_with_secrets(
            "[[camera]]\nid = \"a\"\nmain_stream = \"rtsp://u:old@h/m\"\ncredentials = \"other\"\n",
            SECRETS,
        )
        .unwrap_err();
        assert!(
            err.contains("`a`.main_stream: the URL carries a password"),
            "{err}"
        );
        // Neither the credential's nor the URL's user.
        let err = load_with_secrets(&cam("credentials = \"other\"\n"), SECRETS).unwrap_err();
        assert!(err.contains("`a`.main_stream: no user name"), "{err}");
        let err = load_with_secrets(&cam("password_env = \"CGBOT_TEST_UNSET_VAR\"\n"), SECRETS)
            .unwrap_err();
        assert!(
            err.contains("`a`.password_env: environment variable `CGBOT_TEST_UNSET_VAR`"),
            "{err}"
        );
        let err = load_with_secrets(
            &cam("credentials = \"other\"\n"),
            "[credentials.other]\nuser = 1\n",
        )
        .unwrap_err();
        assert!(
            err.contains("`a`.credentials: secrets file") && err.contains("secrets.toml"),
            "{err}"
        );

        // A missing secrets file, and none given.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cams.toml");
        std::fs::write(&path, cam("credentials = \"other\"\n")).unwrap();
        let missing = dir.path().join("missing.toml");
        let err = load_cameras_with(
            &path,
            &EventCatalogue::builtin(),
            &Secrets::Resolve(Some(missing)),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`a`.credentials: secrets file") && err.contains("missing.toml"),
            "{err}"
        );
        let err = load_cameras_with(&path, &EventCatalogue::builtin(), &Secrets::Resolve(None))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`other` needs a secrets file"), "{err}");
    }

    #[test]
    fn stream_urls_must_be_rtsp_with_a_host() {
        let with = |url: &str| GOOD.replace("rtsp://u:p@127.0.0.1/main", url);
        let err = load(&with("str")).unwrap_err();
        assert!(
            err.contains("cams.toml: camera[0] `cam-1`.main_stream: `str` is not an rtsp://"),
            "{err}"
        );
        let err = load(&with("http://user:secret@host/x")).unwrap_err();
        assert!(
            err.contains("scheme `http`") && !err.contains("secret"),
            "{err}"
        );
        let err = load(&with("rtsp:///path")).unwrap_err();
        assert!(err.contains("main_stream"), "{err}");
        assert!(load(&with("rtsps://u:p@cam.example:322/Streaming/Channels/101")).is_ok());
        let sub = GOOD.replace("name = ", "sub_stream = \"file.mp4\"\nname = ");
        assert!(load(&sub).unwrap_err().contains("`cam-1`.sub_stream"));
    }

    #[test]
    fn unknown_models_name_the_field() {
        let err = load(&GOOD.replace("\"yolox_nano\"", "\"yolo_nope\"")).unwrap_err();
        assert!(
            err.contains("cams.toml: defaults.model: unknown model `yolo_nope`"),
            "{err}"
        );
        let own = GOOD.replace("name = ", "model = \"nope\"\nname = ");
        let err = load(&own).unwrap_err();
        assert!(
            err.contains("camera[0] `cam-1`.model: unknown model `nope`"),
            "{err}"
        );
        // A path is checked when the model is opened.
        assert!(load(&GOOD.replace("\"yolox_nano\"", "\"models/mine.onnx\"")).is_ok());
    }

    #[test]
    fn a_file_that_is_not_utf8_says_so() {
        let mut bytes = GOOD.as_bytes().to_vec();
        bytes.splice(0..0, b"# \xc8\xcb\xc3\xf1\n".iter().copied());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cams.toml");
        std::fs::write(&path, bytes).unwrap();
        let err = load_cameras(&path, &EventCatalogue::builtin())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "{}: not UTF-8 text (invalid byte at line 1, column 3)",
                path.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn huge_values_are_not_echoed_whole() {
        let nul = format!("[[camera]]\nid = \"{}\"\n", "\0".repeat(100_000));
        let err = load(&nul).unwrap_err();
        assert!(
            err.len() < 1000 && err.contains("cams.toml") && err.contains('…'),
            "{err}"
        );
        assert!(!err.contains('\0'));
        let long_id = format!(
            "[[camera]]\nid = \"{}\"\nutc_offset = \"{}\"\n",
            "x".repeat(100_000),
            "9".repeat(100_000)
        );
        let err = load(&long_id).unwrap_err();
        assert!(err.len() < 1000 && err.contains('…'), "{err}");
        let dwell = GOOD.replace("\"30s\"", &format!("\"{}\"", "9".repeat(100_000)));
        let err = load(&dwell).unwrap_err();
        assert!(err.len() < 1000 && err.contains("min_dwell"), "{err}");
        assert_eq!(clip(&"é".repeat(100)).chars().count(), ECHO_MAX + 1);
        assert_eq!(clip("a\0b"), "a\\u{0}b");
    }

    #[test]
    fn a_check_lists_every_error_of_every_file_and_camera() {
        let dir = tempfile::tempdir().unwrap();
        let second = GOOD.replace("cam-1", "cam-2");
        let bad_one = format!(
            "{}\n[[camera]]\nid = \"cam-3\"\nmain_stream = \"str\"\nutc_offset = \"+99:00\"\n",
            GOOD.replace("exposed_litter", "jaywalking")
        );
        std::fs::write(dir.path().join("a.toml"), bad_one).unwrap();
        std::fs::write(dir.path().join("b.toml"), "[[camera]\n").unwrap();
        std::fs::write(dir.path().join("c.toml"), second).unwrap();
        let errors: Vec<String> = check_cameras(dir.path(), &EventCatalogue::builtin())
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(errors.len(), 4, "{errors:#?}");
        assert!(
            errors[0].contains("a.toml: camera[0] `cam-1`.zone[0]"),
            "{errors:#?}"
        );
        assert!(
            errors[1].contains("a.toml: camera[1] `cam-3`.utc_offset"),
            "{errors:#?}"
        );
        assert!(
            errors[2].contains("a.toml: camera[1] `cam-3`.main_stream"),
            "{errors:#?}"
        );
        assert!(
            errors[3].contains("b.toml: TOML parse error"),
            "{errors:#?}"
        );
        // The loader stops at the first of them.
        let first = load_cameras(dir.path(), &EventCatalogue::builtin()).unwrap_err();
        assert_eq!(first.to_string(), errors[0]);
        // Ids are unique across files, and checked past other errors.
        std::fs::write(dir.path().join("d.toml"), GOOD.replace("cam-1", "cam-2")).unwrap();
        let errors = check_cameras(dir.path(), &EventCatalogue::builtin()).unwrap_err();
        assert!(errors
            .last()
            .unwrap()
            .to_string()
            .contains("d.toml: camera `cam-2`: id is used by another camera"));
    }
}
