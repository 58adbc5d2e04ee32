//! Rules stage: which tracked objects in which zones count as which city problem. All of
//! it comes from configuration — labels, zones, dwell, confidence, box size, schedules —
//! none of it assumes the embedded COCO model.

mod schedule;

pub use schedule::{parse_utc_offset, Schedule, Window};

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::decode::Frame;
use crate::detect::Detection;
use crate::geometry::{anchor_point, box_area_fraction, Polygon};
use crate::models::InputSpec;
use crate::track::{Appearance, Observation, Tracker, TrackerConfig};

const DEFAULTS: &str = include_str!("defaults.toml");

/// An event's settings as written in TOML; every field optional so that a zone's rule can
/// override only what it changes. Serialised, it has the fields that are set.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub companions: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stationary: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub one_case_per_zone: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_dwell: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_confidence: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_box_area: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_window: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tolerated: Option<Vec<String>>,
}

impl RuleFields {
    /// `self` with the fields `over` sets replaced.
    fn overlaid(&self, over: &RuleFields) -> RuleFields {
        macro_rules! pick {
            ($($f:ident),*) => { RuleFields { $($f: over.$f.clone().or_else(|| self.$f.clone())),* } };
        }
        pick!(
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
            tolerated
        )
    }
}

/// A fully resolved rule for one event in one zone.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRule {
    pub event: String,
    /// Case category code in the catalogue.
    pub category: String,
    pub labels: Vec<String>,
    /// Labels that must be next to the object (people at a stall).
    pub companions: Vec<String>,
    pub stationary: bool,
    /// All objects of this event in the zone are one problem (a litter pile, a stall),
    /// rather than one case per object (each parked car).
    pub one_case_per_zone: bool,
    pub min_dwell: Duration,
    pub min_confidence: f32,
    /// Smallest box, as a fraction of the frame.
    pub min_box_area: f64,
    /// A closed case seen again at the same place within this time is reopened.
    pub cooldown: Duration,
    /// Absent this long after filing, a case closes as auto-verified.
    pub verify_window: Duration,
    pub schedule: Schedule,
}

/// One event of the catalogue as a zone editor offers it: its name, its case category and
/// the settings a rule gets unless it overrides them. The category's display name is in the
/// case category catalogue (`cases::Categories::get(&info.category)`), which a city
/// replaces; the rules stage does not know it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventInfo {
    pub event: String,
    /// Category code, e.g. `0505`.
    pub category: String,
    pub defaults: RuleFields,
}

impl EventRule {
    /// Whether this rule watches a detection of `label` with `score` and `bbox` (source
    /// pixels of a `width`×`height` frame), before companions, dwell and schedule count.
    pub fn admits(&self, label: &str, score: f32, bbox: [f32; 4], width: u32, height: u32) -> bool {
        self.labels.iter().any(|l| l == label)
            && score >= self.min_confidence
            && box_area_fraction(bbox, width, height) >= self.min_box_area
    }
}

/// The known events: built-in defaults, optionally overridden.
#[derive(Debug, Clone)]
pub struct EventCatalogue {
    events: BTreeMap<String, RuleFields>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventFile {
    event: BTreeMap<String, RuleFields>,
}

impl EventCatalogue {
    pub fn builtin() -> Self {
        let file: EventFile = toml::from_str(DEFAULTS).expect("built-in rules are valid");
        Self { events: file.event }
    }

    pub fn names(&self) -> Vec<&str> {
        self.events.keys().map(String::as_str).collect()
    }

    /// Every event with its category code and default settings, sorted by name.
    pub fn events(&self) -> Vec<EventInfo> {
        self.events
            .iter()
            .map(|(event, defaults)| EventInfo {
                event: event.clone(),
                category: defaults.category.clone().unwrap_or_default(),
                defaults: defaults.clone(),
            })
            .collect()
    }

    /// Resolves `event` with a zone's overrides; the error names the offending field.
    pub fn resolve(&self, event: &str, over: &RuleFields) -> Result<EventRule, String> {
        let base = self.events.get(event).ok_or_else(|| {
            format!(
                "unknown event `{event}` (known: {})",
                self.names().join(", ")
            )
        })?;
        let f = base.overlaid(over);
        let duration = |name: &str, v: &Option<String>| -> Result<Duration, String> {
            let v = v
                .as_deref()
                .ok_or_else(|| format!("`{name}` is required"))?;
            crate::duration::parse(v).map_err(|e| format!("`{name}`: {e}"))
        };
        let windows = |name: &str, v: &Option<Vec<String>>| -> Result<Vec<Window>, String> {
            v.iter()
                .flatten()
                .map(|w| w.parse().map_err(|e| format!("`{name}`: {e}")))
                .collect()
        };
        let labels = f.labels.clone().unwrap_or_default();
        if labels.is_empty() {
            return Err("`labels` must name at least one model label".into());
        }
        let min_confidence = f.min_confidence.unwrap_or(0.3);
        if !(0.0..=1.0).contains(&min_confidence) {
            return Err(format!(
                "`min_confidence` = {min_confidence} is not between 0 and 1"
            ));
        }
        let min_box_area = f.min_box_area.unwrap_or(0.0);
        if !(0.0..1.0).contains(&min_box_area) {
            return Err(format!(
                "`min_box_area` = {min_box_area} is not a fraction of the frame"
            ));
        }
        Ok(EventRule {
            event: event.to_string(),
            category: f.category.clone().ok_or("`category` is required")?,
            labels,
            companions: f.companions.clone().unwrap_or_default(),
            stationary: f.stationary.unwrap_or(false),
            one_case_per_zone: f.one_case_per_zone.unwrap_or(false),
            min_dwell: duration("min_dwell", &f.min_dwell)?,
            min_confidence,
            min_box_area,
            cooldown: duration("cooldown", &f.cooldown)?,
            verify_window: duration("verify_window", &f.verify_window)?,
            schedule: Schedule {
                active: windows("active", &f.active)?,
                tolerated: windows("tolerated", &f.tolerated)?,
            },
        })
    }
}

/// A zone with its rules.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneRules {
    pub id: String,
    pub name: String,
    pub polygon: Polygon,
    pub rules: Vec<EventRule>,
}

impl ZoneRules {
    /// The events of this zone a detection would count for now: its anchor point inside
    /// the polygon and admitted by the event's rule. What the zone editor's preview shows.
    pub fn events_for(
        &self,
        label: &str,
        score: f32,
        bbox: [f32; 4],
        width: u32,
        height: u32,
    ) -> Vec<&str> {
        if !self.polygon.contains(anchor_point(bbox, width, height)) {
            return Vec::new();
        }
        self.rules
            .iter()
            .filter(|r| r.admits(label, score, bbox, width, height))
            .map(|r| r.event.as_str())
            .collect()
    }
}

/// An object that satisfies a rule's static conditions in this sample (label, zone,
/// confidence, size, companions). Dwell and lifecycle are the cases stage's business.
#[derive(Debug, Clone)]
pub struct Sighting {
    pub zone: usize,
    pub rule: usize,
    pub track_id: u64,
    pub label: String,
    pub score: f32,
    pub bbox: [f32; 4],
    pub appearance: Option<Appearance>,
    /// Since when the object has stood still (Unix seconds; the sample time if moving).
    pub stationary_since: f64,
    /// Whether the rule's schedule applies now (outside it, nothing is filed).
    pub applies: bool,
}

/// Per-camera tracking and rule evaluation.
pub struct RuleEngine {
    zones: Vec<ZoneRules>,
    utc_offset: i64,
    tracker_config: TrackerConfig,
    tracker: Option<Tracker>,
    /// Every label any rule looks at, objects and companions.
    watched: Vec<String>,
}

impl RuleEngine {
    pub fn new(
        zones: Vec<ZoneRules>,
        mut tracker_config: TrackerConfig,
        utc_offset_seconds: i64,
    ) -> Self {
        let mut watched: Vec<String> = Vec::new();
        for rule in zones.iter().flat_map(|z| &z.rules) {
            for label in rule.labels.iter().chain(&rule.companions) {
                if !watched.contains(label) {
                    watched.push(label.clone());
                }
            }
            // A detector flips between an event's labels on one object (car/truck/bus).
            if rule.labels.len() > 1 && !tracker_config.label_groups.contains(&rule.labels) {
                tracker_config.label_groups.push(rule.labels.clone());
            }
        }
        Self {
            zones,
            utc_offset: utc_offset_seconds,
            tracker_config,
            tracker: None,
            watched,
        }
    }

    /// Whether the camera has no zones (yet): nothing it sees can be a sighting, so its
    /// samples need no detection for filing.
    pub fn watches_nothing(&self) -> bool {
        self.zones.iter().all(|z| z.rules.is_empty())
    }

    /// Tracks the sample's detections and returns what satisfies each zone's rules.
    /// `ts` is the sample's wall-clock time in Unix seconds.
    /// `model` describes the frame's model input, where appearance is sampled.
    pub fn observe(
        &mut self,
        ts: f64,
        frame: &Frame,
        detections: &[Detection],
        model: &InputSpec,
    ) -> Vec<Sighting> {
        let (w, h) = (frame.picture.width(), frame.picture.height());
        let relevant: Vec<&Detection> = detections
            .iter()
            .filter(|d| self.watched.contains(&d.label))
            .collect();
        let input = &frame.input;
        let (tw, th) = (model.width as usize, model.height as usize);
        let observations = relevant
            .iter()
            .map(|d| {
                Observation::from_frame((*d).clone(), &input.levels, tw, th, input.letterbox.ratio)
            })
            .collect();
        let tracker = self
            .tracker
            .get_or_insert_with(|| Tracker::new(self.tracker_config.clone(), w, h));
        let tracks = tracker.update(ts, observations);

        let mut sightings = Vec::new();
        for track in tracks.iter().filter(|t| t.missed == 0) {
            let anchor = anchor_point(track.bbox, w, h);
            for (zi, zone) in self.zones.iter().enumerate() {
                if !zone.polygon.contains(anchor) {
                    continue;
                }
                for (ri, rule) in zone.rules.iter().enumerate() {
                    let qualifies = rule.admits(&track.label, track.score, track.bbox, w, h)
                        && (rule.companions.is_empty()
                            || relevant.iter().any(|c| {
                                rule.companions.contains(&c.label) && beside(track.bbox, c.bbox)
                            }));
                    if qualifies {
                        sightings.push(Sighting {
                            zone: zi,
                            rule: ri,
                            track_id: track.id,
                            label: track.label.clone(),
                            score: track.score,
                            bbox: track.bbox,
                            appearance: track.appearance.clone(),
                            stationary_since: track.stationary_since,
                            applies: rule.schedule.applies_at(ts, self.utc_offset),
                        });
                    }
                }
            }
        }
        sightings
    }
}

/// A companion stands beside an object: their boxes are within one object-width of each
/// other horizontally and overlap vertically.
fn beside(object: [f32; 4], companion: [f32; 4]) -> bool {
    let reach = object[2] - object[0];
    companion[0] <= object[2] + reach
        && companion[2] >= object[0] - reach
        && companion[1] <= object[3]
        && companion[3] >= object[1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_events_resolve_to_the_mission_defaults() {
        let events = EventCatalogue::builtin();
        let parking = events
            .resolve("illegal_parking", &RuleFields::default())
            .unwrap();
        assert_eq!(parking.category, "0505");
        assert_eq!(parking.min_dwell, Duration::from_secs(180));
        assert!(parking.stationary);
        let litter = events
            .resolve("exposed_litter", &RuleFields::default())
            .unwrap();
        assert_eq!(litter.min_dwell, Duration::from_secs(60));
        let stall = events
            .resolve("street_vending", &RuleFields::default())
            .unwrap();
        assert_eq!(stall.companions, ["person"]);
    }

    #[test]
    fn bicycles_and_e_bikes_are_non_motor_parking_not_motor_vehicle_parking() {
        let events = EventCatalogue::builtin();
        let rule = |e: &str| events.resolve(e, &RuleFields::default()).unwrap();
        let (non_motor, parking) = (rule("non_motor_parking"), rule("illegal_parking"));
        assert_eq!(non_motor.category, "0506");
        assert!(non_motor.stationary && non_motor.one_case_per_zone);
        // A parked bicycle on a 640×480 picture: 60×80 pixels.
        let bike = [100.0, 100.0, 160.0, 180.0];
        for label in ["bicycle", "motorcycle"] {
            assert!(non_motor.admits(label, 0.6, bike, 640, 480), "{label}");
            assert!(!parking.admits(label, 0.6, bike, 640, 480), "{label}");
        }
        assert!(!non_motor.admits("car", 0.9, bike, 640, 480));
        assert!(
            !non_motor.admits("bicycle", 0.2, bike, 640, 480),
            "too unsure"
        );
    }

    #[test]
    fn material_piles_take_new_objects_and_litter_may_add_them() {
        let events = EventCatalogue::builtin();
        let piles = events
            .resolve("material_piles", &RuleFields::default())
            .unwrap();
        assert_eq!(piles.category, "0507");
        assert_eq!(piles.labels, [crate::scene::NEW_OBJECT]);
        assert!(piles.stationary && piles.one_case_per_zone);
        assert_eq!(piles.min_dwell, Duration::from_secs(600));
        // A heap of 80×60 pixels on a 640×480 picture.
        let heap = [100.0, 300.0, 180.0, 360.0];
        assert!(piles.admits("new_object", 0.6, heap, 640, 480));
        assert!(!piles.admits("new_object", 0.6, [100.0, 300.0, 110.0, 310.0], 640, 480));
        // Exposed litter seen by the model or as something new in the zone.
        let litter = events
            .resolve(
                "exposed_litter",
                &RuleFields {
                    labels: Some(vec!["bottle".into(), "new_object".into()]),
                    ..RuleFields::default()
                },
            )
            .unwrap();
        assert_eq!(litter.category, "0102");
        assert!(litter.admits("new_object", 0.6, heap, 640, 480));
        assert!(litter.admits("bottle", 0.6, heap, 640, 480));
    }

    #[test]
    fn events_list_names_categories_and_defaults() {
        let events = EventCatalogue::builtin().events();
        let summary: Vec<(&str, &str)> = events
            .iter()
            .map(|e| (e.event.as_str(), e.category.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("exposed_litter", "0102"),
                ("illegal_parking", "0505"),
                ("material_piles", "0507"),
                ("non_motor_parking", "0506"),
                ("street_vending", "0501")
            ]
        );
        assert_eq!(events[1].defaults.min_dwell.as_deref(), Some("180s"));
        // Serialised for an editor, only what is set, f32s as written.
        let json = serde_json::to_string(&events[0]).unwrap();
        assert!(json.contains(r#""min_confidence":0.3,"#), "{json}");
        assert!(!json.contains("companions"), "{json}");
    }

    #[test]
    fn zone_overrides_replace_only_what_they_set() {
        let events = EventCatalogue::builtin();
        let over = RuleFields {
            min_dwell: Some("30s".into()),
            labels: Some(vec!["parked_car".into()]),
            tolerated: Some(vec!["18:00-22:00".into()]),
            ..RuleFields::default()
        };
        let rule = events.resolve("illegal_parking", &over).unwrap();
        assert_eq!(rule.min_dwell, Duration::from_secs(30));
        assert_eq!(rule.labels, ["parked_car"]);
        assert_eq!(rule.category, "0505");
        assert_eq!(rule.schedule.tolerated.len(), 1);
    }

    #[test]
    fn bad_overrides_name_the_field() {
        let events = EventCatalogue::builtin();
        let bad_dwell = RuleFields {
            min_dwell: Some("a while".into()),
            ..RuleFields::default()
        };
        assert!(events
            .resolve("illegal_parking", &bad_dwell)
            .unwrap_err()
            .contains("`min_dwell`"));
        assert!(events
            .resolve("jaywalking", &RuleFields::default())
            .unwrap_err()
            .contains("unknown event"));
        let bad_conf = RuleFields {
            min_confidence: Some(3.0),
            ..RuleFields::default()
        };
        assert!(events
            .resolve("exposed_litter", &bad_conf)
            .unwrap_err()
            .contains("min_confidence"));
    }

    #[test]
    fn companions_must_stand_beside_the_object() {
        let umbrella = [100.0, 100.0, 200.0, 200.0];
        assert!(beside(umbrella, [210.0, 120.0, 260.0, 300.0]));
        assert!(!beside(umbrella, [400.0, 120.0, 450.0, 300.0]));
        assert!(!beside(umbrella, [150.0, 300.0, 180.0, 400.0]));
    }
}
