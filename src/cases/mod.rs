//! Cases stage: sightings become cases — one per real problem, however many frames saw
//! it. A case is tied to a place (the box where the problem was first seen) in a zone, for
//! one event; later sightings at that place belong to it unless the tracker or the
//! object's appearance says it is a different object. Events marked one-case-per-zone
//! (litter, stalls) gather every object of the zone into one case. Case ids derive from the camera,
//! zone, event, first-sighting time and place, so re-processing the same input or
//! restarting never creates a second case for the same problem.

mod catalogue;
mod changes;
mod status;

pub use catalogue::{CatalogueError, Categories, Category};
pub use changes::{Changes, Evidence, EvidenceKind, EvidenceRequest, HistoryEntry, NewEvent};
pub use status::Status;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{CameraInfo, Location};
use crate::detect::nms::iou;
use crate::rules::{Sighting, ZoneRules};
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
    #[error("case {id} is {from}; it cannot become {to}")]
    IllegalTransition {
        id: String,
        from: Status,
        to: Status,
    },
}

/// Turns one camera's sightings into case changes.
pub struct CaseEngine {
    camera: CameraInfo,
    zones: Vec<ZoneRules>,
    categories: Categories,
    cases: Vec<Case>,
}

impl CaseEngine {
    /// `existing` are the camera's cases from the store, so that a restart continues them.
    pub fn new(
        camera: CameraInfo,
        zones: Vec<ZoneRules>,
        categories: Categories,
        existing: Vec<Case>,
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
        })
    }

    /// One analysed sample at Unix time `ts` with its sightings (from the rules stage).
    /// The changes name the evidence images of this sample that the cases need.
    pub fn process(&mut self, ts: f64, sightings: &[Sighting]) -> Changes {
        let mut changes = Changes::default();
        let mut seen = vec![false; self.cases.len()];
        for s in sightings {
            match self.matching_case(s, ts) {
                // Already processed up to this time (a re-run of the same input).
                Some(i) if self.cases[i].updated_at >= ts => seen[i] = true,
                Some(i) => {
                    seen[i] = true;
                    self.sighted(i, s, ts, &mut changes);
                }
                None => {
                    if let Some(case) = self.new_candidate(s, ts, &mut changes) {
                        self.cases.push(case);
                        seen.push(true);
                        let i = self.cases.len() - 1;
                        self.maybe_file(i, s, ts, &mut changes);
                    }
                }
            }
        }
        for i in (0..seen.len()).rev() {
            if !seen[i] && self.cases[i].updated_at < ts {
                self.absent(i, ts, &mut changes);
            }
        }
        changes
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

    fn new_candidate(&self, s: &Sighting, ts: f64, changes: &mut Changes) -> Option<Case> {
        let zone = &self.zones[s.zone];
        let rule = &zone.rules[s.rule];
        // A stationary rule counts from when the object stopped, and only once it has
        // been seen standing still (one sighting of a passing car is not a candidate).
        let first_seen = if rule.stationary {
            if s.stationary_since >= ts {
                return None;
            }
            s.stationary_since
        } else {
            ts
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
            last_seen: ts,
            filed_at: None,
            deadline: None,
            closed_at: None,
            close_reason: None,
            dwell: ts - first_seen,
            confidence: s.score,
            label: s.label.clone(),
            place: s.bbox,
            bbox: s.bbox,
            reopen_count: 0,
            resume_status: None,
            updated_at: ts,
            track_id: Some(s.track_id),
            appearance: s.appearance.clone(),
        };
        changes
            .history
            .push(history(&case, None, Status::Detected, ts));
        changes
            .evidence_wanted
            .push(self.evidence(&case, EvidenceKind::First, s.zone, ts));
        changes.upserts.push(case.clone());
        Some(case)
    }

    fn sighted(&mut self, i: usize, s: &Sighting, ts: f64, changes: &mut Changes) {
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
            Status::Detected => return self.maybe_file(i, s, ts, changes),
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
                changes.events.push(event(case, "reopened"));
                let request = self.evidence(&self.cases[i], EvidenceKind::Reopened, s.zone, ts);
                changes.evidence_wanted.push(request);
            }
            _ => {}
        }
        changes.upserts.push(self.cases[i].clone());
    }

    /// Files a candidate whose dwell reached the rule's minimum while the rule applies.
    fn maybe_file(&mut self, i: usize, s: &Sighting, ts: f64, changes: &mut Changes) {
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
            case.filed_at = Some(ts);
            case.deadline = limit.map(|l| ts + l);
            transition(case, Status::Filed, ts, changes);
            changes.events.push(event(case, "filed"));
            let request = self.evidence(&self.cases[i], EvidenceKind::Filed, s.zone, ts);
            changes.evidence_wanted.push(request);
        }
        changes.upserts.retain(|c| c.id != self.cases[i].id);
        changes.upserts.push(self.cases[i].clone());
    }

    /// Not seen in this sample.
    fn absent(&mut self, i: usize, ts: f64, changes: &mut Changes) {
        let Some(zi) = self
            .zones
            .iter()
            .position(|z| z.id == self.cases[i].zone_id)
        else {
            return; // the zone was removed from the configuration
        };
        let Some(rule) = self.zones[zi]
            .rules
            .iter()
            .find(|r| r.event == self.cases[i].event)
        else {
            return;
        };
        let window = rule.verify_window.as_secs_f64();
        let case = &mut self.cases[i];
        let gone_for = ts - case.last_seen;
        match case.status {
            // A candidate that left before its dwell was never a case.
            Status::Detected if gone_for >= window => {
                changes.deletes.push(case.id.clone());
                self.cases.remove(i);
                return;
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
                changes.events.push(event(case, "closed"));
                let request = self.evidence(&self.cases[i], EvidenceKind::After, zi, ts);
                changes.evidence_wanted.push(request);
            }
            _ => return,
        }
        changes.upserts.push(self.cases[i].clone());
    }

    /// The image of `case` in this sample: the frame with the zone, every detection and
    /// the case's box; the "after" image marks where the problem was and needs no crop.
    fn evidence(&self, case: &Case, kind: EvidenceKind, zone: usize, ts: f64) -> EvidenceRequest {
        let after = kind == EvidenceKind::After;
        EvidenceRequest {
            case_id: case.id.clone(),
            kind,
            ts,
            zone: self.zones[zone].polygon.vertices().to_vec(),
            bbox: if after { case.place } else { case.bbox },
            label: format!("{} {}", case.category.code, case.category.name),
            score: case.confidence,
            crop: (!after).then_some(case.bbox),
        }
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

/// An operator's status change (dispatched, handled, closed, reopened) at Unix time `at`,
/// checked against the lifecycle: `case` takes it, and the changes record it.
pub fn operator_transition(
    case: &mut Case,
    to: Status,
    note: Option<String>,
    at: f64,
) -> Result<Changes, CaseError> {
    if !to.settable_externally() || !case.status.can_become(to) {
        return Err(CaseError::IllegalTransition {
            id: case.id.clone(),
            from: case.status,
            to,
        });
    }
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
    Ok(changes)
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
    use crate::geometry::Polygon;
    use crate::rules::{EventCatalogue, RuleFields};

    const T0: f64 = 1.7e9;
    const KERB: [[f64; 2]; 4] = [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]];

    /// A camera with one kerb zone: parking is filed after 30 s, closed after 10 s away.
    fn kerb_engine() -> CaseEngine {
        let fields = RuleFields {
            min_dwell: Some("30s".into()),
            verify_window: Some("10s".into()),
            ..RuleFields::default()
        };
        let zone = ZoneRules {
            id: "kerb".into(),
            name: "kerb".into(),
            polygon: Polygon::new(KERB.to_vec()).unwrap(),
            rules: vec![EventCatalogue::builtin()
                .resolve("illegal_parking", &fields)
                .unwrap()],
        };
        let camera = CameraInfo {
            id: "cam-1".into(),
            ..CameraInfo::default()
        };
        CaseEngine::new(camera, vec![zone], Categories::builtin(), vec![]).unwrap()
    }

    fn parked_car(bbox: [f32; 4]) -> Sighting {
        Sighting {
            zone: 0,
            rule: 0,
            track_id: 1,
            label: "car".into(),
            score: 0.8,
            bbox,
            appearance: None,
            stationary_since: T0,
            applies: true,
        }
    }

    #[test]
    fn the_engine_asks_for_evidence_at_each_step_of_a_case() {
        let mut engine = kerb_engine();
        let place = [100.0, 300.0, 200.0, 380.0];
        assert!(engine.process(T0, &[parked_car(place)]).is_empty());

        let first = engine.process(T0 + 10.0, &[parked_car(place)]);
        let [wanted] = &first.evidence_wanted[..] else {
            panic!("{:?}", first.evidence_wanted)
        };
        let case = &first.upserts[0];
        assert_eq!(
            wanted,
            &EvidenceRequest {
                case_id: case.id.clone(),
                kind: EvidenceKind::First,
                ts: T0 + 10.0,
                zone: KERB.to_vec(),
                bbox: place,
                label: "0505 机动车乱停放".into(),
                score: 0.8,
                crop: Some(place),
            }
        );
        assert!(
            first.evidence.is_empty(),
            "rows come from the evidence writer"
        );

        let moved = [104.0, 302.0, 204.0, 382.0];
        let filed = engine.process(T0 + 30.0, &[parked_car(moved)]);
        let kinds = |c: &Changes| c.evidence_wanted.iter().map(|r| r.kind).collect::<Vec<_>>();
        assert_eq!(kinds(&filed), [EvidenceKind::Filed]);
        assert_eq!(filed.evidence_wanted[0].crop, Some(moved));

        assert!(
            kinds(&engine.process(T0 + 40.0, &[])).is_empty(),
            "verifying"
        );
        let closed = engine.process(T0 + 50.0, &[]);
        assert_eq!(kinds(&closed), [EvidenceKind::After]);
        // The after image marks where the problem was, without a crop of an empty kerb.
        assert_eq!(closed.evidence_wanted[0].bbox, place);
        assert_eq!(closed.evidence_wanted[0].crop, None);
    }

    /// A case filed at T0 + 30.
    fn filed_case() -> Case {
        let mut engine = kerb_engine();
        let place = [100.0, 300.0, 200.0, 380.0];
        for t in [0.0, 10.0, 30.0] {
            engine.process(T0 + t, &[parked_car(place)]);
        }
        let case = engine.cases.pop().unwrap();
        assert_eq!(case.status, Status::Filed);
        case
    }

    #[test]
    fn an_operator_closes_a_case_with_a_note() {
        let mut case = filed_case();
        let changes =
            operator_transition(&mut case, Status::Closed, Some("towed".into()), T0 + 99.0)
                .unwrap();
        assert_eq!(case.status, Status::Closed);
        assert_eq!(case.close_reason.as_deref(), Some("operator"));
        assert_eq!(case.closed_at, Some(T0 + 99.0));
        let [entry] = &changes.history[..] else {
            panic!("{:?}", changes.history)
        };
        assert_eq!(
            (
                entry.from,
                entry.to,
                entry.actor.as_str(),
                entry.note.as_deref()
            ),
            (
                Some(Status::Filed),
                Status::Closed,
                "operator",
                Some("towed")
            )
        );
        assert_eq!(changes.events[0].kind, "case.closed");
        assert_eq!(changes.upserts[0].status, Status::Closed);
        assert!(changes.evidence_wanted.is_empty());
    }

    #[test]
    fn an_operator_cannot_leave_the_lifecycle_or_set_automatic_steps() {
        let mut case = filed_case();
        for to in [Status::Detected, Status::Verifying, Status::Reopened] {
            let err = operator_transition(&mut case, to, None, T0 + 99.0).unwrap_err();
            assert!(
                matches!(
                    err,
                    CaseError::IllegalTransition {
                        from: Status::Filed,
                        ..
                    }
                ),
                "{err}"
            );
        }
        assert_eq!(
            case.status,
            Status::Filed,
            "a refused change leaves the case"
        );
    }

    #[test]
    fn a_candidate_that_leaves_is_deleted_without_images() {
        let mut engine = kerb_engine();
        let place = [100.0, 300.0, 200.0, 380.0];
        engine.process(T0, &[parked_car(place)]);
        let id = engine.process(T0 + 10.0, &[parked_car(place)]).upserts[0]
            .id
            .clone();
        let gone = engine.process(T0 + 20.0, &[]);
        assert_eq!(gone.deletes, [id]);
        assert!(gone.evidence_wanted.is_empty());
    }

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
