//! Zones as operators edit them: read one camera's zones from its camera file, validate
//! edited zones with the loader's own rules, and write them back into the file in place,
//! leaving every other camera, comment and default as it was.
//!
//! A camera's zones are read with a version (a hash of the camera's table in the file), and
//! saved only if the camera still has that version: two operators editing the same camera,
//! or an operator and someone editing the file by hand, never overwrite each other.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, Value};

use super::file::{self, FileError};
use crate::geometry::Polygon;
use crate::rules::{EventCatalogue, RuleFields, ZoneRules};

/// A zone as an operator edits it; the same shape as a `[[camera.zone]]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneSpec {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Vertices in normalised picture coordinates (0–1, origin top-left).
    pub polygon: Vec<[f64; 2]>,
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

/// One rule of a zone: an event of the catalogue and the settings it overrides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub event: String,
    #[serde(flatten)]
    pub fields: RuleFields,
}

/// One camera's zones as its camera file has them.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraZones {
    /// The camera file the camera is in.
    pub file: PathBuf,
    pub camera_id: String,
    /// Opaque; changes whenever the camera's table in the file changes. Give it back to
    /// [`save_zones`].
    pub version: String,
    pub zones: Vec<ZoneSpec>,
}

#[derive(Debug, thiserror::Error)]
pub enum ZoneEditError {
    #[error("camera `{0}` is in no camera file")]
    NoSuchCamera(String),
    /// `field` is named from the camera, e.g. ``zone[1] `kerb`.polygon``.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("camera `{camera}` was changed by someone else since you loaded it (in {file}); reload and redo your edit")]
    Conflict { camera: String, file: PathBuf },
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
}

impl From<FileError> for ZoneEditError {
    fn from(e: FileError) -> Self {
        ZoneEditError::Io {
            path: e.path,
            reason: e.reason,
        }
    }
}

/// Validates zones as the camera loader does (it calls this too): every zone needs a
/// non-empty id used once, a simple polygon inside the picture, and at least one rule
/// naming a known event with valid settings.
pub fn validate_zones(
    zones: &[ZoneSpec],
    events: &EventCatalogue,
) -> Result<Vec<ZoneRules>, ZoneEditError> {
    check_zones(zones, events).map_err(|(field, reason)| ZoneEditError::Invalid { field, reason })
}

/// [`validate_zones`] with the error as (field from the camera, reason), for the loader to
/// prefix with file and camera.
pub(super) fn check_zones(
    zones: &[ZoneSpec],
    events: &EventCatalogue,
) -> Result<Vec<ZoneRules>, (String, String)> {
    let mut checked: Vec<ZoneRules> = Vec::with_capacity(zones.len());
    for (zi, zone) in zones.iter().enumerate() {
        if zone.id.trim().is_empty() {
            return Err((format!("zone[{zi}].id"), "must not be empty".into()));
        }
        let at = format!("zone[{zi}] `{}`", zone.id);
        if let Some(first) = checked.iter().position(|z| z.id == zone.id) {
            return Err((
                at,
                format!("zone id is used twice in this camera (zone[{first}] has it too)"),
            ));
        }
        let polygon = Polygon::new(zone.polygon.clone())
            .map_err(|e| (format!("{at}.polygon"), e.to_string()))?;
        let rules = zone
            .rules
            .iter()
            .enumerate()
            .map(|(ri, rule)| {
                events
                    .resolve(&rule.event, &rule.fields)
                    .map_err(|e| (format!("{at}.rules[{ri}]"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if rules.is_empty() {
            return Err((at, "a zone needs at least one rule".into()));
        }
        // One new stationary thing would be filed once for each such rule.
        let agnostic: Vec<usize> = (0..rules.len())
            .filter(|&ri| {
                rules[ri]
                    .labels
                    .iter()
                    .any(|l| l == crate::scene::NEW_OBJECT)
            })
            .collect();
        if let [first, second, ..] = agnostic[..] {
            return Err((
                format!("{at}.rules[{second}]"),
                format!(
                    "`{}` and rules[{first}] (`{}`) both take `{}`: one new thing would be filed \
                     as both; give each its own zone",
                    rules[second].event,
                    rules[first].event,
                    crate::scene::NEW_OBJECT
                ),
            ));
        }
        checked.push(ZoneRules {
            id: zone.id.clone(),
            name: zone.name.clone().unwrap_or_else(|| zone.id.clone()),
            polygon,
            rules,
        });
    }
    Ok(checked)
}

/// The zones of camera `camera_id` and their version; `cameras` is the camera file or
/// directory the daemon is configured with.
pub fn camera_zones(cameras: &Path, camera_id: &str) -> Result<CameraZones, ZoneEditError> {
    let (path, text) = find_camera(cameras, camera_id)?;
    let doc = parse(&path, &text)?;
    let table = camera_table(&doc, camera_id)
        .ok_or_else(|| ZoneEditError::NoSuchCamera(camera_id.to_string()))?;
    let (version, zones) = read_camera(table, camera_id)?;
    Ok(CameraZones {
        file: path,
        camera_id: camera_id.to_string(),
        version,
        zones: zones.unwrap_or_default(),
    })
}

/// Validates `zones` with exactly the loader's rules, then rewrites only the camera's
/// `[[camera.zone]]` tables in its file (other cameras, comments and defaults stay as they
/// were, byte for byte) through a temporary file renamed over it. Refused with
/// [`ZoneEditError::Conflict`], writing nothing, when the camera's version is no longer
/// `expected_version`. Returns the new version.
pub fn save_zones(
    cameras: &Path,
    camera_id: &str,
    zones: &[ZoneSpec],
    expected_version: &str,
    events: &EventCatalogue,
) -> Result<String, ZoneEditError> {
    validate_zones(zones, events)?;
    let (path, _) = find_camera(cameras, camera_id)?;
    let conflict = || ZoneEditError::Conflict {
        camera: camera_id.to_string(),
        file: path.clone(),
    };
    file::rewrite(&path, |text| {
        let mut doc = parse(&path, text)?;
        let table = camera_table_mut(&mut doc, camera_id).ok_or_else(conflict)?;
        if version_of(table) != expected_version {
            return Err(conflict());
        }
        // Zones the file has now, to keep the tables of those that stay the same; zones
        // that do not even parse are simply replaced.
        let old_zones = read_camera(table, camera_id)
            .ok()
            .and_then(|(_, zones)| zones);
        replace_zones(table, zones, old_zones.as_deref());
        let new_text = doc.to_string();
        // The file as a whole must still load: the daemon reads all of it.
        super::load_text(&path, &new_text, events).map_err(|e| ZoneEditError::Invalid {
            field: "camera file".into(),
            reason: format!("it would not load after this edit: {e}"),
        })?;
        let doc = parse(&path, &new_text)?;
        let table = camera_table(&doc, camera_id).ok_or_else(conflict)?;
        Ok((new_text.clone(), version_of(table)))
    })
}

/// The camera file holding `camera_id`, and its text.
fn find_camera(cameras: &Path, camera_id: &str) -> Result<(PathBuf, String), ZoneEditError> {
    let mut unreadable: Option<ZoneEditError> = None;
    for path in file::camera_files(cameras)? {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                unreadable.get_or_insert(FileError::new(&path, e).into());
                continue;
            }
        };
        // Most files of a directory do not mention the id at all: skip parsing them.
        if !text.contains(camera_id) {
            continue;
        }
        match parse(&path, &text) {
            Ok(doc) if camera_table(&doc, camera_id).is_some() => return Ok((path, text)),
            Ok(doc) if in_inline_array(&doc, camera_id) => {
                return Err(ZoneEditError::Io {
                    path,
                    reason: format!(
                        "camera `{camera_id}` is written inline (`camera = [{{ … }}]`); \
                         write it as a [[camera]] table to edit its zones"
                    ),
                })
            }
            Ok(_) => {}
            Err(e) => {
                unreadable.get_or_insert(e);
            }
        }
    }
    // A file that cannot be read may be the one holding the camera: say so.
    Err(unreadable.unwrap_or_else(|| ZoneEditError::NoSuchCamera(camera_id.to_string())))
}

fn parse(path: &Path, text: &str) -> Result<DocumentMut, ZoneEditError> {
    text.parse()
        .map_err(|e: toml_edit::TomlError| ZoneEditError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

/// The `[[camera]]` table with id `camera_id`.
pub(super) fn camera_table<'d>(doc: &'d DocumentMut, camera_id: &str) -> Option<&'d Table> {
    doc.get("camera")?
        .as_array_of_tables()?
        .iter()
        .find(|t| t.get("id").and_then(Item::as_str) == Some(camera_id))
}

/// Whether the cameras are written as an inline array holding `camera_id`, which the
/// loader reads but zones cannot be written into.
fn in_inline_array(doc: &DocumentMut, camera_id: &str) -> bool {
    doc.get("camera")
        .and_then(Item::as_array)
        .is_some_and(|cameras| {
            cameras.iter().any(|c| {
                c.as_inline_table()
                    .and_then(|t| t.get("id"))
                    .and_then(Value::as_str)
                    == Some(camera_id)
            })
        })
}

fn camera_table_mut<'d>(doc: &'d mut DocumentMut, camera_id: &str) -> Option<&'d mut Table> {
    doc.get_mut("camera")?
        .as_array_of_tables_mut()?
        .iter_mut()
        .find(|t| t.get("id").and_then(Item::as_str) == Some(camera_id))
}

/// The camera's table alone, as a camera file of one camera.
fn camera_text(table: &Table) -> String {
    let mut cameras = ArrayOfTables::new();
    cameras.push(table.clone());
    let mut doc = DocumentMut::new();
    doc.insert("camera", Item::ArrayOfTables(cameras));
    doc.to_string()
}

/// A short hash of the camera's table: its keys, values, zones and comments as written.
fn version_of(table: &Table) -> String {
    hash(&camera_text(table))
}

fn hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The camera's version and its zones as written (`None` when there is no `zone` key).
fn read_camera(
    table: &Table,
    camera_id: &str,
) -> Result<(String, Option<Vec<ZoneSpec>>), ZoneEditError> {
    #[derive(Deserialize)]
    struct OneFile {
        camera: Vec<OneCamera>,
    }
    #[derive(Deserialize)]
    struct OneCamera {
        zone: Option<Vec<ZoneSpec>>,
    }
    let text = camera_text(table);
    let zones = toml::from_str::<OneFile>(&text)
        .map_err(|e| ZoneEditError::Invalid {
            field: format!("camera `{camera_id}`.zone"),
            reason: e.message().to_string(),
        })?
        .camera
        .pop()
        .and_then(|c| c.zone);
    Ok((hash(&text), zones))
}

/// Replaces the camera's zones. A zone that is unchanged keeps its table as written (with
/// its comments); a changed one keeps the comments above its header.
fn replace_zones(camera: &mut Table, zones: &[ZoneSpec], old_specs: Option<&[ZoneSpec]>) {
    let old_tables: Vec<Table> = match camera.remove("zone") {
        Some(Item::ArrayOfTables(tables)) => tables.into_iter().collect(),
        _ => Vec::new(),
    };
    // Only tables that were read as `old_specs` pair up with them.
    let old: Vec<(&ZoneSpec, &Table)> = match old_specs {
        Some(specs) if specs.len() == old_tables.len() => specs.iter().zip(&old_tables).collect(),
        _ => Vec::new(),
    };
    if zones.is_empty() {
        return;
    }
    let mut tables = ArrayOfTables::new();
    for zone in zones {
        let before = old.iter().find(|(spec, _)| spec.id == zone.id);
        let mut table = match before {
            Some((spec, table)) if *spec == zone => (*table).clone(),
            _ => {
                let mut table = zone_table(zone);
                if let Some((_, before)) = before {
                    *table.decor_mut() = before.decor().clone();
                }
                table
            }
        };
        // All at the camera's place in the file, so that they are written after it, in
        // this order, before whatever followed the camera.
        if let Some(position) = camera.position() {
            table.set_position(position);
        }
        tables.push(table);
    }
    camera.insert("zone", Item::ArrayOfTables(tables));
}

/// A `[[camera.zone]]` table: id, name, polygon, and the rules as inline tables.
pub(super) fn zone_table(zone: &ZoneSpec) -> Table {
    let mut table = Table::new();
    table.insert("id", toml_edit::value(zone.id.as_str()));
    if let Some(name) = &zone.name {
        table.insert("name", toml_edit::value(name.as_str()));
    }
    let mut polygon = Array::new();
    for &[x, y] in &zone.polygon {
        let mut vertex = Array::new();
        vertex.push(x);
        vertex.push(y);
        polygon.push(vertex);
    }
    polygon.fmt();
    table.insert("polygon", toml_edit::value(polygon));
    let mut rules = Array::new();
    for rule in &zone.rules {
        rules.push(rule_table(rule));
    }
    rules.fmt();
    table.insert("rules", toml_edit::value(rules));
    table
}

/// `{ event = "…", <the fields set, in RuleFields order> }`.
fn rule_table(rule: &RuleSpec) -> InlineTable {
    // Every field named, so that a field added to RuleFields cannot be forgotten here.
    let RuleFields {
        category,
        labels,
        companions,
        stationary,
        one_case_per_zone,
        min_dwell,
        min_confidence,
        min_box_area,
        cooldown,
        verify_window,
        active,
        tolerated,
    } = &rule.fields;
    let strings = |list: &Vec<String>| -> Value { Array::from_iter(list.iter()).into() };
    let mut table = InlineTable::new();
    table.insert("event", rule.event.as_str().into());
    let fields: [(&str, Option<Value>); 12] = [
        ("category", category.as_deref().map(Value::from)),
        ("labels", labels.as_ref().map(strings)),
        ("companions", companions.as_ref().map(strings)),
        ("stationary", stationary.map(Value::from)),
        ("one_case_per_zone", one_case_per_zone.map(Value::from)),
        ("min_dwell", min_dwell.as_deref().map(Value::from)),
        // An f32 written as its shortest decimal (0.35, not 0.3499999940395355).
        (
            "min_confidence",
            min_confidence.map(|v| Value::from(v.to_string().parse::<f64>().unwrap_or(v.into()))),
        ),
        ("min_box_area", min_box_area.map(Value::from)),
        ("cooldown", cooldown.as_deref().map(Value::from)),
        ("verify_window", verify_window.as_deref().map(Value::from)),
        ("active", active.as_ref().map(strings)),
        ("tolerated", tolerated.as_ref().map(strings)),
    ];
    for (key, value) in fields {
        if let Some(value) = value {
            table.insert(key, value);
        }
    }
    table.fmt();
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_cameras;

    /// Three cameras with comments everywhere; `cam-2` is the one edited.
    const FILE: &str = r#"# Cameras of 西湖区, drawn by hand.

[defaults]
model = "yolox_nano"   # the default detector
utc_offset = "+08:00"

# First camera.
[[camera]]
id = "cam-1"
name = "人民路东口"
main_stream = "rtsp://u:p@10.0.0.1/main"

[[camera.zone]]
id = "east"   # kerb by the bank
polygon = [[0.1, 0.5], [0.9, 0.5], [0.9, 1.0], [0.1, 1.0]]
rules = [{ event = "illegal_parking" }]

# Second camera: the one edited.
[[camera]]
id = "cam-2"
main_stream = "rtsp://u:p@10.0.0.2/main"
location = { longitude = 120.15, latitude = 30.28 }

# The bus stop: keep it clear.
[[camera.zone]]
id = "bus-stop"
polygon = [[0.0, 0.6], [0.5, 0.6], [0.5, 1.0], [0.0, 1.0]]   # drawn 2025-03
rules = [{ event = "illegal_parking", min_dwell = "60s" }]

[[camera.zone]]
id = "pavement"
polygon = [[0.5, 0.6], [1.0, 0.6], [1.0, 1.0], [0.5, 1.0]]
rules = [{ event = "exposed_litter" }]

# Third camera, after the edited one.
[[camera]]
id = "cam-3"
main_stream = "rtsp://u:p@10.0.0.3/main"
# no zones yet
"#;

    const SECOND_START: &str = "# Second camera";
    const THIRD_START: &str = "# Third camera";

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cams.toml");
        std::fs::write(&path, FILE).unwrap();
        (dir, path)
    }

    fn events() -> EventCatalogue {
        EventCatalogue::builtin()
    }

    fn square(id: &str, x: f64, event: &str) -> ZoneSpec {
        ZoneSpec {
            id: id.into(),
            name: None,
            polygon: vec![[x, 0.2], [x + 0.2, 0.2], [x + 0.2, 0.4], [x, 0.4]],
            rules: vec![RuleSpec {
                event: event.into(),
                fields: RuleFields::default(),
            }],
        }
    }

    /// The text before `start` and from `end` on, which an edit of what lies between must
    /// leave as it was.
    fn outside<'t>(text: &'t str, start: &str, end: &str) -> (&'t str, &'t str) {
        let (a, b) = (text.find(start).unwrap(), text.find(end).unwrap());
        (&text[..a], &text[b..])
    }

    #[test]
    fn zones_are_read_as_written_with_a_version() {
        let (_dir, path) = setup();
        let cam = camera_zones(&path, "cam-2").unwrap();
        assert_eq!(cam.file, path);
        assert_eq!(cam.camera_id, "cam-2");
        assert_eq!(cam.version.len(), 16);
        let ids: Vec<&str> = cam.zones.iter().map(|z| z.id.as_str()).collect();
        assert_eq!(ids, ["bus-stop", "pavement"]);
        assert_eq!(
            cam.zones[0].rules[0].fields.min_dwell.as_deref(),
            Some("60s")
        );
        assert_eq!(cam.zones[0].polygon[1], [0.5, 0.6]);
        // Reading again gives the same version; a camera with no zones has none.
        assert_eq!(camera_zones(&path, "cam-2").unwrap().version, cam.version);
        assert!(camera_zones(&path, "cam-3").unwrap().zones.is_empty());
        // Another camera's edit leaves this one's version alone.
        let cam1 = camera_zones(&path, "cam-1").unwrap();
        save_zones(&path, "cam-1", &[], &cam1.version, &events()).unwrap();
        assert_eq!(camera_zones(&path, "cam-2").unwrap().version, cam.version);
        assert!(matches!(
            camera_zones(&path, "cam-9"),
            Err(ZoneEditError::NoSuchCamera(id)) if id == "cam-9"
        ));
        let err = camera_zones(&path.with_file_name("missing.toml"), "cam-1").unwrap_err();
        assert!(matches!(err, ZoneEditError::Io { .. }), "{err}");
    }

    #[test]
    fn a_save_rewrites_only_the_cameras_zones() {
        let (dir, path) = setup();
        let before = camera_zones(&path, "cam-2").unwrap();
        // The bus stop as it was, the pavement redrawn with a rule setting, a new kerb.
        let mut pavement = square("pavement", 0.6, "exposed_litter");
        pavement.name = Some("人行道".into());
        pavement.rules[0].fields.min_confidence = Some(0.35);
        pavement.rules[0].fields.active = Some(vec!["07:00-20:00".into()]);
        let zones = vec![
            before.zones[0].clone(),
            square("kerb", 0.1, "illegal_parking"),
            pavement,
        ];
        let version = save_zones(&path, "cam-2", &zones, &before.version, &events()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();

        // Everything outside the camera is as it was, byte for byte.
        assert_eq!(
            outside(&text, SECOND_START, THIRD_START),
            outside(FILE, SECOND_START, THIRD_START),
            "{text}"
        );
        // The unchanged zone keeps its comments; the changed one the comment above it.
        assert!(text.contains(
            "# The bus stop: keep it clear.\n[[camera.zone]]\nid = \"bus-stop\"\n\
             polygon = [[0.0, 0.6], [0.5, 0.6], [0.5, 1.0], [0.0, 1.0]]   # drawn 2025-03\n"
        ));
        assert!(text.contains(
            "[[camera.zone]]\nid = \"pavement\"\nname = \"人行道\"\n\
             polygon = [[0.6, 0.2], [0.8, 0.2], [0.8, 0.4], [0.6, 0.4]]\n\
             rules = [{ event = \"exposed_litter\", min_confidence = 0.35, active = [\"07:00-20:00\"] }]\n"
        ), "{text}");
        // Read back: the same zones, in order, at the new version; the file loads.
        let after = camera_zones(&path, "cam-2").unwrap();
        assert_eq!(after.zones, zones);
        assert_eq!(after.version, version);
        assert_ne!(version, before.version);
        let cams = load_cameras(&path, &events()).unwrap();
        assert_eq!(cams[1].zones.len(), 3);
        assert_eq!(cams[1].zones[2].rules[0].min_confidence, 0.35);
        // Written through a temporary file that is gone.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        // No zones at all: the camera stays, with nothing to file.
        let version = save_zones(&path, "cam-2", &[], &version, &events()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("bus-stop"), "{text}");
        assert_eq!(
            outside(&text, SECOND_START, THIRD_START),
            outside(FILE, SECOND_START, THIRD_START)
        );
        assert_eq!(camera_zones(&path, "cam-2").unwrap().version, version);
        assert!(load_cameras(&path, &events()).unwrap()[1].zones.is_empty());

        // Zones for a camera that had none, the last in the file.
        let cam3 = camera_zones(&path, "cam-3").unwrap();
        let zones = [square("kerb", 0.1, "illegal_parking")];
        save_zones(&path, "cam-3", &zones, &cam3.version, &events()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        // (The comment at the end of the file stays at the end.)
        assert!(text.ends_with(
            "main_stream = \"rtsp://u:p@10.0.0.3/main\"\n\n[[camera.zone]]\nid = \"kerb\"\n\
             polygon = [[0.1, 0.2], [0.30000000000000004, 0.2], [0.30000000000000004, 0.4], [0.1, 0.4]]\n\
             rules = [{ event = \"illegal_parking\" }]\n# no zones yet\n"
        ), "{text}");
        assert_eq!(camera_zones(&path, "cam-3").unwrap().zones, zones);
    }

    #[test]
    fn a_save_on_an_old_version_is_a_conflict_and_writes_nothing() {
        let (_dir, path) = setup();
        let loaded = camera_zones(&path, "cam-2").unwrap();
        let first = [square("kerb", 0.1, "illegal_parking")];
        let second = [square("corner", 0.5, "exposed_litter")];
        save_zones(&path, "cam-2", &first, &loaded.version, &events()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let err = save_zones(&path, "cam-2", &second, &loaded.version, &events()).unwrap_err();
        assert!(matches!(&err, ZoneEditError::Conflict { camera, file }
            if camera == "cam-2" && file == &path));
        assert_eq!(
            err.to_string(),
            format!(
                "camera `cam-2` was changed by someone else since you loaded it (in {}); \
                 reload and redo your edit",
                path.display()
            )
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);

        // A hand edit of the camera's other settings is a change too.
        let loaded = camera_zones(&path, "cam-2").unwrap();
        std::fs::write(&path, text.replace("10.0.0.2", "10.0.0.22")).unwrap();
        assert!(matches!(
            save_zones(&path, "cam-2", &second, &loaded.version, &events()),
            Err(ZoneEditError::Conflict { .. })
        ));
    }

    #[test]
    fn concurrent_saves_from_one_version_let_exactly_one_through() {
        let (_dir, path) = setup();
        let loaded = camera_zones(&path, "cam-2").unwrap();
        let results: Vec<Result<String, ZoneEditError>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..6)
                .map(|i| {
                    let (path, version) = (&path, &loaded.version);
                    s.spawn(move || {
                        let zones = [square(&format!("zone-{i}"), 0.1, "illegal_parking")];
                        save_zones(path, "cam-2", &zones, version, &events())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let saved: Vec<usize> = (0..6).filter(|&i| results[i].is_ok()).collect();
        assert_eq!(saved.len(), 1, "{results:?}");
        assert!(results
            .iter()
            .filter(|r| r.is_err())
            .all(|r| matches!(r, Err(ZoneEditError::Conflict { .. }))));
        let now = camera_zones(&path, "cam-2").unwrap();
        assert_eq!(now.zones[0].id, format!("zone-{}", saved[0]));
    }

    #[test]
    fn invalid_zones_are_refused_with_the_reason_and_nothing_is_written() {
        let (dir, path) = setup();
        let version = camera_zones(&path, "cam-2").unwrap().version;
        let good = || square("kerb", 0.1, "illegal_parking");
        let with_polygon = |polygon: Vec<[f64; 2]>| ZoneSpec { polygon, ..good() };
        let cases: Vec<(Vec<ZoneSpec>, &str, &str)> = vec![
            (
                vec![
                    square("corner", 0.5, "exposed_litter"),
                    with_polygon(vec![[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]]),
                ],
                "zone[1] `kerb`.polygon",
                "the outline crosses itself: edge 1–2 meets edge 3–4",
            ),
            (
                vec![with_polygon(vec![[0.1, 0.1], [0.9, 0.9]])],
                "zone[0] `kerb`.polygon",
                "a polygon needs at least 3 vertices, got 2",
            ),
            (
                vec![with_polygon(vec![[0.1, 0.1], [1.2, 0.1], [0.5, 0.5]])],
                "zone[0] `kerb`.polygon",
                "vertex 2 (1.2, 0.1) is outside 0..1",
            ),
            (
                vec![with_polygon(vec![[0.1, f64::NAN], [0.9, 0.1], [0.5, 0.5]])],
                "zone[0] `kerb`.polygon",
                "vertex 1 (0.1, NaN) is not a finite number",
            ),
            (
                vec![ZoneSpec {
                    id: " ".into(),
                    ..good()
                }],
                "zone[0].id",
                "must not be empty",
            ),
            (
                vec![good(), square("kerb", 0.5, "exposed_litter")],
                "zone[1] `kerb`",
                "zone id is used twice in this camera (zone[0] has it too)",
            ),
            (
                vec![ZoneSpec {
                    rules: vec![],
                    ..good()
                }],
                "zone[0] `kerb`",
                "a zone needs at least one rule",
            ),
            (
                vec![square("kerb", 0.1, "jaywalking")],
                "zone[0] `kerb`.rules[0]",
                "unknown event `jaywalking`",
            ),
            (
                {
                    let mut zone = square("kerb", 0.1, "material_piles");
                    let mut litter = zone.rules[0].clone();
                    litter.event = "exposed_litter".into();
                    litter.fields.labels = Some(vec!["bottle".into(), "new_object".into()]);
                    zone.rules.push(litter);
                    vec![zone]
                },
                "zone[0] `kerb`.rules[1]",
                "`exposed_litter` and rules[0] (`material_piles`) both take `new_object`: one new thing would be filed as both; give each its own zone",
            ),
            (
                {
                    let mut zone = good();
                    zone.rules[0].fields.min_dwell = Some("a while".into());
                    vec![zone]
                },
                "zone[0] `kerb`.rules[0]",
                "`min_dwell`",
            ),
        ];
        for (zones, field, reason) in cases {
            let check = |err: ZoneEditError| match err {
                ZoneEditError::Invalid {
                    field: f,
                    reason: r,
                } => {
                    assert_eq!(f, field);
                    assert!(r.starts_with(reason), "{r}");
                }
                other => panic!("{field}: {other}"),
            };
            check(validate_zones(&zones, &events()).unwrap_err());
            check(save_zones(&path, "cam-2", &zones, &version, &events()).unwrap_err());
            assert_eq!(std::fs::read_to_string(&path).unwrap(), FILE);
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        }
        // The loader says the same, named from the file and camera.
        let bow_tie = FILE.replace(
            "[[0.5, 0.6], [1.0, 0.6], [1.0, 1.0], [0.5, 1.0]]",
            "[[0.5, 0.6], [1.0, 1.0], [1.0, 0.6], [0.5, 1.0]]",
        );
        std::fs::write(&path, bow_tie).unwrap();
        let err = load_cameras(&path, &events()).unwrap_err().to_string();
        assert!(
            err.ends_with(
                "cams.toml: camera[1] `cam-2`.zone[1] `pavement`.polygon: the outline crosses \
                 itself: edge 1–2 meets edge 3–4 (draw the vertices in order around the zone)"
            ),
            "{err}"
        );
    }

    #[test]
    fn zones_are_found_and_saved_in_a_directory_of_camera_files() {
        let dir = tempfile::tempdir().unwrap();
        let other = "[[camera]]\nid = \"cam-9\"   # elsewhere\nmain_stream = \"rtsp://h/9\"\n";
        std::fs::write(dir.path().join("a.toml"), other).unwrap();
        std::fs::write(dir.path().join("b.toml"), FILE).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "cam-2 is in b.toml").unwrap();
        let cam = camera_zones(dir.path(), "cam-2").unwrap();
        assert_eq!(cam.file, dir.path().join("b.toml"));
        let zones = [square("kerb", 0.1, "illegal_parking")];
        save_zones(dir.path(), "cam-2", &zones, &cam.version, &events()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a.toml")).unwrap(),
            other
        );
        assert_eq!(camera_zones(dir.path(), "cam-2").unwrap().zones, zones);
        assert_eq!(load_cameras(dir.path(), &events()).unwrap().len(), 4);
        assert!(matches!(
            camera_zones(dir.path(), "cam-7"),
            Err(ZoneEditError::NoSuchCamera(_))
        ));
        // Cameras written inline cannot take zone tables: said, not "no such camera".
        std::fs::write(
            dir.path().join("d.toml"),
            "camera = [{ id = \"cam-8\", main_stream = \"rtsp://h/8\" }]\n",
        )
        .unwrap();
        let err = camera_zones(dir.path(), "cam-8").unwrap_err().to_string();
        assert!(err.contains("written inline"), "{err}");
        // A file that does not parse may hold the camera: its error is the answer.
        std::fs::write(dir.path().join("c.toml"), "[[camera]\nid = \"cam-7\"").unwrap();
        let err = camera_zones(dir.path(), "cam-7").unwrap_err();
        assert!(
            matches!(&err, ZoneEditError::Io { path, .. } if path.ends_with("c.toml")),
            "{err}"
        );
    }

    #[test]
    fn zone_specs_read_json_from_an_editor() {
        let zone: ZoneSpec = serde_json::from_str(
            r#"{"id": "kerb", "polygon": [[0.1, 0.2], [0.3, 0.2], [0.3, 0.4]],
                "rules": [{"event": "illegal_parking", "min_dwell": "60s"}]}"#,
        )
        .unwrap();
        assert_eq!(zone.rules[0].fields.min_dwell.as_deref(), Some("60s"));
        assert_eq!(zone.name, None);
        let json = serde_json::to_string(&zone).unwrap();
        assert_eq!(
            json,
            r#"{"id":"kerb","name":null,"polygon":[[0.1,0.2],[0.3,0.2],[0.3,0.4]],"rules":[{"event":"illegal_parking","min_dwell":"60s"}]}"#
        );
        // A misspelt setting is refused, not ignored.
        let typo = serde_json::from_str::<ZoneSpec>(
            r#"{"id": "k", "polygon": [], "rules": [{"event": "x", "min_dwel": "1s"}]}"#,
        );
        assert!(typo.is_err());
    }

    /// The zone editor rewrites a camera file that names its credentials without needing
    /// the secrets, and keeps the reference: it never writes a password into the file.
    #[test]
    fn zone_edits_keep_credential_references_and_write_no_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cams.toml");
        let text = "[defaults]\npassword_env = \"CGBOT_TEST_ZONES_UNSET\"\n\n[[camera]]\n\
                    id = \"cam-1\"\nmain_stream = \"rtsp://admin@10.0.0.1/main\"\n\
                    credentials = \"district-7\"\n";
        std::fs::write(&path, text).unwrap();
        let before = camera_zones(&path, "cam-1").unwrap();
        let zones = [square("kerb", 0.1, "illegal_parking")];
        save_zones(&path, "cam-1", &zones, &before.version, &events()).unwrap();
        let after = std::fs::read_to_string(&path).unwrap();
        assert!(after.starts_with(text), "{after}");
        assert!(after.contains("id = \"kerb\""), "{after}");
        assert!(!after.contains("admin:"), "{after}");
    }
}
