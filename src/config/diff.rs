//! What a camera rotation changes: which cameras to start, stop and restart when a camera
//! list is replaced (the reference deployment swaps its shared cameras every quarter).
//!
//! Everything that affects how a camera is watched or analysed counts as a change; the
//! file a camera comes from and the order of cameras, or of a camera's zones, do not, so
//! moving cameras between files or re-sorting a list restarts nothing.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::Camera;

/// The difference between two camera lists, by camera id.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CameraDiff {
    /// Cameras only in the new list (to start), sorted.
    pub added: Vec<String>,
    /// Cameras only in the old list (to stop), sorted.
    pub removed: Vec<String>,
    /// Cameras in both lists whose settings differ (to restart), sorted by id.
    pub changed: Vec<ChangedCamera>,
    /// Cameras in both lists with the same settings.
    pub unchanged: usize,
}

/// A camera whose settings differ between the two lists.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangedCamera {
    pub id: String,
    /// What differs, named as in the camera file: `main_stream`, `tracker`,
    /// ``zone `east` `` (its polygon, name or rules), ``zone `east` added``, …
    pub fields: Vec<String>,
}

impl CameraDiff {
    /// Nothing to start, stop or restart.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Compares two camera lists whose ids are unique within each list (as
/// [`load_cameras`](super::load_cameras) guarantees). Linear in the number of cameras.
pub fn diff_cameras(old: &[Camera], new: &[Camera]) -> CameraDiff {
    let old_by_id: HashMap<&str, &Camera> = old.iter().map(|c| (c.info.id.as_str(), c)).collect();
    let new_ids: HashSet<&str> = new.iter().map(|c| c.info.id.as_str()).collect();
    let mut diff = CameraDiff::default();
    for camera in new {
        let Some(before) = old_by_id.get(camera.info.id.as_str()) else {
            diff.added.push(camera.info.id.clone());
            continue;
        };
        let fields = changed_fields(before, camera);
        if fields.is_empty() {
            diff.unchanged += 1;
        } else {
            diff.changed.push(ChangedCamera {
                id: camera.info.id.clone(),
                fields,
            });
        }
    }
    diff.removed = old
        .iter()
        .filter(|c| !new_ids.contains(c.info.id.as_str()))
        .map(|c| c.info.id.clone())
        .collect();
    diff.added.sort_unstable();
    diff.removed.sort_unstable();
    diff.changed.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    diff
}

/// The settings of one camera that differ, in camera-file order; zones are matched by id.
fn changed_fields(old: &Camera, new: &Camera) -> Vec<String> {
    let same = [
        ("name", old.info.name == new.info.name),
        ("main_stream", old.main_stream == new.main_stream),
        ("sub_stream", old.sub_stream == new.sub_stream),
        ("location", old.info.location == new.info.location),
        ("codes", old.info.codes == new.info.codes),
        ("model", old.model == new.model),
        ("utc_offset", old.utc_offset == new.utc_offset),
        ("tracker", old.tracker == new.tracker),
        ("scene", old.scene == new.scene),
        ("priority", old.priority == new.priority),
    ];
    let mut fields: Vec<String> = same
        .into_iter()
        .filter(|(_, same)| !same)
        .map(|(name, _)| name.to_string())
        .collect();
    for zone in &new.zones {
        match old.zones.iter().find(|z| z.id == zone.id) {
            None => fields.push(format!("zone `{}` added", zone.id)),
            Some(before) if before != zone => fields.push(format!("zone `{}`", zone.id)),
            Some(_) => {}
        }
    }
    for zone in &old.zones {
        if !new.zones.iter().any(|z| z.id == zone.id) {
            fields.push(format!("zone `{}` removed", zone.id));
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::config::{CameraInfo, Location};
    use crate::geometry::Polygon;
    use crate::rules::{EventCatalogue, RuleFields, ZoneRules};
    use crate::scene::SceneConfig;
    use crate::track::TrackerConfig;

    fn zone(id: &str, events: &[&str]) -> ZoneRules {
        let catalogue = EventCatalogue::builtin();
        ZoneRules {
            id: id.into(),
            name: id.into(),
            polygon: Polygon::new(vec![[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]).unwrap(),
            rules: events
                .iter()
                .map(|e| catalogue.resolve(e, &RuleFields::default()).unwrap())
                .collect(),
        }
    }

    fn camera(id: &str) -> Camera {
        Camera {
            info: CameraInfo {
                id: id.into(),
                name: format!("路口 {id}"),
                location: Location {
                    longitude: Some(120.15),
                    latitude: Some(30.28),
                    address: Some("人民路 12 号".into()),
                    grid: Some("330102001001".into()),
                },
                codes: Default::default(),
            },
            main_stream: Some(format!("rtsp://u:p@10.0.0.1/{id}/main")),
            sub_stream: Some(format!("rtsp://u:p@10.0.0.1/{id}/sub")),
            model: None,
            utc_offset: 8 * 3600,
            tracker: TrackerConfig::default(),
            scene: SceneConfig::default(),
            zones: vec![
                zone("east", &["illegal_parking"]),
                zone("west", &["exposed_litter", "street_vending"]),
            ],
            priority: false,
            source: PathBuf::from("cams.toml"),
        }
    }

    fn list(ids: &[&str]) -> Vec<Camera> {
        ids.iter().map(|id| camera(id)).collect()
    }

    /// The fields reported for one camera changed by `change`.
    fn fields_after(change: impl Fn(&mut Camera)) -> Vec<String> {
        let old = list(&["a"]);
        let mut new = old.clone();
        change(&mut new[0]);
        let diff = diff_cameras(&old, &new);
        assert_eq!((diff.unchanged, diff.changed.len()), (0, 1), "{diff:?}");
        assert!(diff.added.is_empty() && diff.removed.is_empty());
        diff.changed.into_iter().next().unwrap().fields
    }

    #[test]
    fn identical_lists_differ_in_nothing() {
        let diff = diff_cameras(&list(&["a", "b"]), &list(&["a", "b"]));
        assert!(diff.is_empty());
        assert_eq!(diff.unchanged, 2);
        assert!(diff_cameras(&[], &[]).is_empty());
    }

    #[test]
    fn order_and_source_file_are_not_changes() {
        let old = list(&["a", "b", "c"]);
        let mut new = list(&["c", "a", "b"]);
        for camera in &mut new {
            camera.source = PathBuf::from("cams.d/moved.toml");
            camera.zones.reverse();
        }
        let diff = diff_cameras(&old, &new);
        assert!(diff.is_empty(), "{diff:?}");
        assert_eq!(diff.unchanged, 3);
    }

    #[test]
    fn added_and_removed_cameras_are_sorted_ids() {
        let diff = diff_cameras(&list(&["z", "b", "m"]), &list(&["m", "y", "a"]));
        assert_eq!(diff.added, ["a", "y"]);
        assert_eq!(diff.removed, ["b", "z"]);
        assert_eq!(diff.unchanged, 1);
        assert!(diff.changed.is_empty() && !diff.is_empty());
    }

    #[test]
    fn each_camera_setting_is_a_named_change() {
        assert_eq!(fields_after(|c| c.info.name = "新名字".into()), ["name"]);
        assert_eq!(
            fields_after(|c| c.main_stream = Some("rtsp://u:new@10.0.0.1/a/main".into())),
            ["main_stream"]
        );
        assert_eq!(fields_after(|c| c.sub_stream = None), ["sub_stream"]);
        assert_eq!(
            fields_after(|c| c.info.location.grid = Some("330102001002".into())),
            ["location"]
        );
        assert_eq!(
            fields_after(|c| c.info.location.longitude = Some(120.16)),
            ["location"]
        );
        assert_eq!(
            fields_after(|c| c.model = Some("yolox_s".into())),
            ["model"]
        );
        assert_eq!(fields_after(|c| c.utc_offset = 0), ["utc_offset"]);
        assert_eq!(
            fields_after(|c| {
                c.info.codes.insert("street_code".into(), "1".into());
            }),
            ["codes"]
        );
        assert_eq!(fields_after(|c| c.tracker.max_missed = 9), ["tracker"]);
        assert_eq!(fields_after(|c| c.scene.difference = 0.2), ["scene"]);
        assert_eq!(fields_after(|c| c.priority = true), ["priority"]);
        assert_eq!(
            fields_after(|c| {
                c.priority = true;
                c.main_stream = None;
            }),
            ["main_stream", "priority"]
        );
    }

    #[test]
    fn zone_changes_name_the_zone() {
        let polygon = Polygon::new(vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]).unwrap();
        assert_eq!(
            fields_after(|c| c.zones[0].polygon = polygon.clone()),
            ["zone `east`"]
        );
        assert_eq!(
            fields_after(|c| c.zones[1].name = "西侧".into()),
            ["zone `west`"]
        );
        assert_eq!(
            fields_after(|c| c.zones[0].rules[0].min_dwell = Duration::from_secs(30)),
            ["zone `east`"]
        );
        assert_eq!(
            fields_after(|c| {
                c.zones[1].rules.pop();
            }),
            ["zone `west`"]
        );
        assert_eq!(
            fields_after(
                |c| c.zones[0].rules[0].schedule.tolerated = vec!["18:00-22:00".parse().unwrap()]
            ),
            ["zone `east`"]
        );
        assert_eq!(
            fields_after(|c| c.zones.push(zone("north", &["exposed_litter"]))),
            ["zone `north` added"]
        );
        assert_eq!(
            fields_after(|c| {
                c.zones.remove(0);
            }),
            ["zone `east` removed"]
        );
    }
}
