//! Cases stage: sightings become cases — one per real problem, however many frames saw
//! it. A case is tied to a place (the box where the problem was first seen) in a zone, for
//! one event; later sightings at that place belong to it unless the tracker or the
//! object's appearance says it is a different object. Events marked one-case-per-zone
//! (litter, stalls) gather every object of the zone into one case. Case ids derive from the camera,
//! zone, event, first-sighting time and place, so re-processing the same input or
//! restarting never creates a second case for the same problem.

mod catalogue;
mod status;

pub use catalogue::{CatalogueError, Categories, Category};
pub use status::Status;

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::annotate;
use crate::config::{CameraInfo, Location};
use crate::decode::Frame;
use crate::detect::nms::iou;
use crate::detect::Detection;
use crate::rules::{Sighting, ZoneRules};
use crate::store::{Changes, Evidence, HistoryEntry, NewEvent};
use crate::track::Appearance;

/// Overlap with a case's place above which a sighting is at the same place.
const SAME_PLACE_IOU: f32 = 0.3;
/// Below this appearance similarity a sighting at the same place is a different object.
const SAME_OBJECT_APPEARANCE: f32 = 0.5;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseCategory {
    pub code: String,
    pub major: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Case {
    pub id: String,
    pub status: Status,
    pub category: CaseCategory,
    pub event: String,
    pub camera_id: String,
    pub camera_name: String,
    pub zone_id: String,
    pub zone_name: String,
    pub location: Location,
    /// Unix seconds.
    pub first_seen: f64,
    pub last_seen: f64,
    pub filed_at: Option<f64>,
    /// `filed_at` plus the category's handling time limit.
    pub deadline: Option<f64>,
    pub closed_at: Option<f64>,
    /// `auto-verified` or `operator`.
    pub close_reason: Option<String>,
    /// Seconds between first and latest sighting.
    pub dwell: f64,
    /// Highest detection score seen.
    pub confidence: f32,
    pub label: String,
    /// Where the problem was first seen (source pixels): the place the case is about.
    pub place: [f32; 4],
    /// Latest box.
    pub bbox: [f32; 4],
    pub reopen_count: u32,
    /// Status to return to when seen again while verifying.
    pub resume_status: Option<Status>,
    /// Time of the latest sample that changed this case; older samples are history.
    pub updated_at: f64,
    #[serde(skip)]
    track_id: Option<u64>,
    #[serde(skip)]
    appearance: Option<Appearance>,
}

#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error(
        "zone `{zone}` event `{event}`: category {code} is not in the catalogue (known: {known})"
    )]
    UnknownCategory {
        zone: String,
        event: String,
        code: String,
        known: String,
    },
    #[error("evidence for case {case}: {reason}")]
    Evidence { case: String, reason: String },
}

/// Turns one camera's sightings into case changes.
pub struct CaseEngine {
    camera: CameraInfo,
    zones: Vec<ZoneRules>,
    categories: Categories,
    cases: Vec<Case>,
    evidence_dir: PathBuf,
}

/// The sample a case engine is processing, and its RGB picture once drawn.
struct Sample<'a> {
    ts: f64,
    frame: &'a Frame,
    detections: &'a [Detection],
    rgb: Option<RgbImage>,
}

impl CaseEngine {
    /// `existing` are the camera's cases from the store, so that a restart continues them.
    pub fn new(
        camera: CameraInfo,
        zones: Vec<ZoneRules>,
        categories: Categories,
        existing: Vec<Case>,
        evidence_dir: &Path,
    ) -> Result<Self, CaseError> {
        for zone in &zones {
            for rule in &zone.rules {
                if categories.get(&rule.category).is_none() {
                    return Err(CaseError::UnknownCategory {
                        zone: zone.id.clone(),
                        event: rule.event.clone(),
                        code: rule.category.clone(),
                        known: categories.codes().join(", "),
                    });
                }
            }
        }
        Ok(Self {
            camera,
            zones,
            categories,
            cases: existing,
            evidence_dir: evidence_dir.to_path_buf(),
        })
    }

    /// One analysed sample at Unix time `ts`: its sightings (from the rules stage), the
    /// frame (for evidence) and all detections (drawn on evidence).
    pub fn process(
        &mut self,
        ts: f64,
        sightings: &[Sighting],
        frame: &Frame,
        detections: &[Detection],
    ) -> Result<Changes, CaseError> {
        let mut changes = Changes::default();
        let mut sample = Sample {
            ts,
            frame,
            detections,
            rgb: None,
        };
        let mut seen = vec![false; self.cases.len()];
        for s in sightings {
            match self.matching_case(s, ts) {
                // Already processed up to this time (a re-run of the same input).
                Some(i) if self.cases[i].updated_at >= ts => seen[i] = true,
                Some(i) => {
                    seen[i] = true;
                    self.sighted(i, s, &mut sample, &mut changes)?;
                }
                None => {
                    if let Some(case) = self.new_candidate(s, &mut sample, &mut changes)? {
                        self.cases.push(case);
                        seen.push(true);
                        let i = self.cases.len() - 1;
                        self.maybe_file(i, s, &mut sample, &mut changes)?;
                    }
                }
            }
        }
        for i in (0..seen.len()).rev() {
            if !seen[i] && self.cases[i].updated_at < ts {
                self.absent(i, &mut sample, &mut changes)?;
            }
        }
        Ok(changes)
    }

    /// The case a sighting belongs to: same zone and event, same place, and not a
    /// different object; an open case wins over a closed one at the same place.
    fn matching_case(&self, s: &Sighting, ts: f64) -> Option<usize> {
        let zone = &self.zones[s.zone];
        let rule = &zone.rules[s.rule];
        self.cases
            .iter()
            .enumerate()
            .filter(|(_, c)| c.zone_id == zone.id && c.event == rule.event)
            .filter(|(_, c)| {
                rule.one_case_per_zone
                    || (iou(&c.place, &s.bbox).max(iou(&c.bbox, &s.bbox)) >= SAME_PLACE_IOU
                        && same_object(c, s))
            })
            .filter(|(_, c)| match (c.status, c.closed_at) {
                // Closed longer than the cooldown ago: a new problem at an old place.
                (Status::Closed, Some(closed)) => ts - closed <= rule.cooldown.as_secs_f64(),
                _ => true,
            })
            .max_by(|(_, a), (_, b)| {
                (a.status != Status::Closed)
                    .cmp(&(b.status != Status::Closed))
                    .then(iou(&a.place, &s.bbox).total_cmp(&iou(&b.place, &s.bbox)))
            })
            .map(|(i, _)| i)
    }

    fn new_candidate(
        &self,
        s: &Sighting,
        sample: &mut Sample,
        changes: &mut Changes,
    ) -> Result<Option<Case>, CaseError> {
        let zone = &self.zones[s.zone];
        let rule = &zone.rules[s.rule];
        // A stationary rule counts from when the object stopped, and only once it has
        // been seen standing still (one sighting of a passing car is not a candidate).
        let first_seen = if rule.stationary {
            if s.stationary_since >= sample.ts {
                return Ok(None);
            }
            s.stationary_since
        } else {
            sample.ts
        };
        let category = self
            .categories
            .get(&rule.category)
            .expect("checked in new()");
        let id = case_id(&self.camera.id, &zone.id, &rule.event, first_seen, s.bbox);
        let case = Case {
            id,
            status: Status::Detected,
            category: CaseCategory {
                code: category.code.clone(),
                major: category.major.clone(),
                name: category.name.clone(),
            },
            event: rule.event.clone(),
            camera_id: self.camera.id.clone(),
            camera_name: self.camera.name.clone(),
            zone_id: zone.id.clone(),
            zone_name: zone.name.clone(),
            location: self.camera.location.clone(),
            first_seen,
            last_seen: sample.ts,
            filed_at: None,
            deadline: None,
            closed_at: None,
            close_reason: None,
            dwell: sample.ts - first_seen,
            confidence: s.score,
            label: s.label.clone(),
            place: s.bbox,
            bbox: s.bbox,
            reopen_count: 0,
            resume_status: None,
            updated_at: sample.ts,
            track_id: Some(s.track_id),
            appearance: s.appearance.clone(),
        };
        changes
            .history
            .push(history(&case, None, Status::Detected, sample.ts));
        self.write_evidence(&case, "first", s.zone, sample, changes)?;
        changes.upserts.push(case.clone());
        Ok(Some(case))
    }

    fn sighted(
        &mut self,
        i: usize,
        s: &Sighting,
        sample: &mut Sample,
        changes: &mut Changes,
    ) -> Result<(), CaseError> {
        let ts = sample.ts;
        let case = &mut self.cases[i];
        case.last_seen = ts;
        case.dwell = ts - case.first_seen;
        case.confidence = case.confidence.max(s.score);
        case.bbox = s.bbox;
        case.label = s.label.clone();
        case.track_id = Some(s.track_id);
        if case.appearance.is_none() {
            case.appearance = s.appearance.clone();
        }
        case.updated_at = ts;
        match case.status {
            Status::Detected => return self.maybe_file(i, s, sample, changes),
            Status::Verifying => {
                let back = case.resume_status.take().unwrap_or(Status::Filed);
                transition(case, back, ts, changes);
            }
            // Matched within the cooldown (see matching_case): the problem is back.
            Status::Closed if s.applies => {
                case.reopen_count += 1;
                case.closed_at = None;
                case.close_reason = None;
                transition(case, Status::Reopened, ts, changes);
                let case = case.clone();
                self.write_evidence(&case, "reopened", s.zone, sample, changes)?;
                changes.events.push(event(&case, "reopened"));
            }
            _ => {}
        }
        changes.upserts.push(self.cases[i].clone());
        Ok(())
    }

    /// Files a candidate whose dwell reached the rule's minimum while the rule applies.
    fn maybe_file(
        &mut self,
        i: usize,
        s: &Sighting,
        sample: &mut Sample,
        changes: &mut Changes,
    ) -> Result<(), CaseError> {
        let rule = &self.zones[s.zone].rules[s.rule];
        let case = &mut self.cases[i];
        if case.status == Status::Detected
            && s.applies
            && case.dwell >= rule.min_dwell.as_secs_f64()
        {
            let limit = self
                .categories
                .get(&rule.category)
                .map(|c| c.time_limit.as_secs_f64());
            case.filed_at = Some(sample.ts);
            case.deadline = limit.map(|l| sample.ts + l);
            transition(case, Status::Filed, sample.ts, changes);
            let case = case.clone();
            self.write_evidence(&case, "filed", s.zone, sample, changes)?;
            changes.events.push(event(&case, "filed"));
        }
        changes.upserts.retain(|c| c.id != self.cases[i].id);
        changes.upserts.push(self.cases[i].clone());
        Ok(())
    }

    /// Not seen in this sample.
    fn absent(
        &mut self,
        i: usize,
        sample: &mut Sample,
        changes: &mut Changes,
    ) -> Result<(), CaseError> {
        let ts = sample.ts;
        let Some(zi) = self
            .zones
            .iter()
            .position(|z| z.id == self.cases[i].zone_id)
        else {
            return Ok(()); // the zone was removed from the configuration
        };
        let Some(rule) = self.zones[zi]
            .rules
            .iter()
            .find(|r| r.event == self.cases[i].event)
        else {
            return Ok(());
        };
        let window = rule.verify_window.as_secs_f64();
        let case = &mut self.cases[i];
        let gone_for = ts - case.last_seen;
        match case.status {
            // A candidate that left before its dwell was never a case.
            Status::Detected if gone_for >= window => {
                changes.deletes.push(case.id.clone());
                // Best effort: a leftover image is harmless, the row is what counts.
                let _ = std::fs::remove_dir_all(self.evidence_dir.join(&case.id));
                self.cases.remove(i);
                return Ok(());
            }
            Status::Filed | Status::Dispatched | Status::Handled | Status::Reopened => {
                case.resume_status = Some(case.status);
                case.updated_at = ts;
                transition(case, Status::Verifying, ts, changes);
            }
            Status::Verifying if gone_for >= window => {
                case.closed_at = Some(ts);
                case.close_reason = Some("auto-verified".into());
                case.resume_status = None;
                case.updated_at = ts;
                transition(case, Status::Closed, ts, changes);
                let case = case.clone();
                self.write_evidence(&case, "after", zi, sample, changes)?;
                changes.events.push(event(&case, "closed"));
            }
            _ => return Ok(()),
        }
        changes.upserts.push(self.cases[i].clone());
        Ok(())
    }

    /// Writes the full frame (zone, detections, the case's box) and, except for the
    /// "after" image, a crop of the box.
    fn write_evidence(
        &self,
        case: &Case,
        kind: &str,
        zone: usize,
        sample: &mut Sample,
        changes: &mut Changes,
    ) -> Result<(), CaseError> {
        let fail = |reason: String| CaseError::Evidence {
            case: case.id.clone(),
            reason,
        };
        if sample.rgb.is_none() {
            sample.rgb = Some(
                sample
                    .frame
                    .picture
                    .to_rgb()
                    .map_err(|e| fail(e.to_string()))?,
            );
        }
        let clean = sample.rgb.as_ref().expect("converted above");
        let mut full = clean.clone();
        annotate::draw_zone(
            &mut full,
            self.zones[zone].polygon.vertices(),
            Rgb([255, 255, 0]),
        );
        annotate::draw_detections(&mut full, sample.detections);
        let place = Detection {
            label: format!("{} {}", case.category.code, case.category.name),
            class: 0,
            score: case.confidence,
            bbox: if kind == "after" {
                case.place
            } else {
                case.bbox
            },
        };
        annotate::draw_detections(&mut full, std::slice::from_ref(&place));
        let dir = self.evidence_dir.join(&case.id);
        let mut images = vec![(kind.to_string(), full)];
        if kind != "after" {
            images.push((format!("{kind}-crop"), annotate::crop(clean, case.bbox)));
        }
        for (name, image) in images {
            let path = dir.join(format!("{name}.jpg"));
            annotate::save_jpeg(&image, &path).map_err(|e| fail(e.to_string()))?;
            changes.evidence.push(Evidence {
                case_id: case.id.clone(),
                kind: name,
                path,
                ts: sample.ts,
            });
        }
        Ok(())
    }
}

/// Same tracked object, or — after a restart or a lost track — a similar-looking one.
fn same_object(case: &Case, s: &Sighting) -> bool {
    if case.track_id == Some(s.track_id) {
        return true;
    }
    match (&case.appearance, &s.appearance) {
        (Some(a), Some(b)) => a.similarity(b) >= SAME_OBJECT_APPEARANCE,
        _ => true,
    }
}

fn transition(case: &mut Case, to: Status, ts: f64, changes: &mut Changes) {
    debug_assert!(case.status.can_become(to), "{} → {to}", case.status);
    changes
        .history
        .push(history(case, Some(case.status), to, ts));
    case.status = to;
}

fn history(case: &Case, from: Option<Status>, to: Status, ts: f64) -> HistoryEntry {
    HistoryEntry {
        case_id: case.id.clone(),
        ts,
        from,
        to,
        actor: "cgbot".into(),
        note: None,
    }
}

/// A case event for the sinks; the key is unique per case, kind and reopening, so the
/// same event processed twice is one event.
fn event(case: &Case, kind: &str) -> NewEvent {
    NewEvent {
        key: format!("{}:{kind}:{}", case.id, case.reopen_count),
        kind: format!("case.{kind}"),
        payload: serde_json::to_value(case).expect("cases serialise"),
    }
}

/// An operator's status change, as store changes.
pub fn external_transition(case: &mut Case, to: Status, note: Option<String>, at: f64) -> Changes {
    let mut changes = Changes::default();
    match to {
        Status::Closed => {
            case.closed_at = Some(at);
            case.close_reason = Some("operator".into());
        }
        Status::Reopened => {
            case.reopen_count += 1;
            case.closed_at = None;
            case.close_reason = None;
        }
        _ => {}
    }
    let mut entry = history(case, Some(case.status), to, at);
    entry.actor = "operator".into();
    entry.note = note;
    changes.history.push(entry);
    case.status = to;
    case.resume_status = None;
    case.updated_at = case.updated_at.max(at);
    changes.events.push(event(case, to.as_str()));
    changes.upserts.push(case.clone());
    changes
}

/// `C` + 16 hex digits of a hash of what makes the problem unique.
fn case_id(camera: &str, zone: &str, event: &str, first_seen: f64, place: [f32; 4]) -> String {
    let mut hasher = Sha256::new();
    let place = place.map(|v| (v / 8.0).round() as i64);
    hasher.update(format!(
        "{camera}\n{zone}\n{event}\n{}\n{place:?}",
        (first_seen * 1000.0).round() as i64
    ));
    let digest = hasher.finalize();
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("C{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_ids_are_stable_and_distinguish_place_time_and_event() {
        let id = case_id(
            "cam-1",
            "east",
            "illegal_parking",
            1000.0,
            [10.0, 10.0, 50.0, 50.0],
        );
        assert_eq!(
            id,
            case_id(
                "cam-1",
                "east",
                "illegal_parking",
                1000.0,
                [10.0, 10.0, 50.0, 50.0]
            )
        );
        assert_eq!(id.len(), 17);
        assert_ne!(
            id,
            case_id(
                "cam-1",
                "east",
                "illegal_parking",
                1002.0,
                [10.0, 10.0, 50.0, 50.0]
            )
        );
        assert_ne!(
            id,
            case_id(
                "cam-1",
                "east",
                "exposed_litter",
                1000.0,
                [10.0, 10.0, 50.0, 50.0]
            )
        );
        assert_ne!(
            id,
            case_id(
                "cam-1",
                "east",
                "illegal_parking",
                1000.0,
                [210.0, 10.0, 250.0, 50.0]
            )
        );
    }
}
