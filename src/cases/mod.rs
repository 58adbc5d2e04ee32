//! Cases stage: sightings become cases — one per real problem, however many frames saw
//! it. A case is tied to a place (the box where the problem was first seen) in a zone, for
//! one event; later sightings at that place belong to it unless the tracker or the
//! object's appearance says it is a different object. Events marked one-case-per-zone
//! (litter, stalls) gather every object of the zone into one case. Case ids derive from the camera,
//! zone, event, first-sighting time and place, so re-processing the same input or
//! restarting never creates a second case for the same problem.
//!
//! Operators' decisions bind the engine: it continues from a status an operator set (the
//! store's copy is reloaded into it), never reopens a case an operator closed while the
//! same object stays, and makes no case where an operator rejected one while the
//! rejection's [`Suppression`] lasts.

mod calendar;
mod catalogue;
mod changes;
mod codes;
mod published;
mod status;
mod suppression;
mod verdict;

pub use calendar::{CalendarError, WorkingCalendar};
pub use catalogue::{CatalogueError, Categories, Category, TimeLimit};
pub use changes::{
    Changes, Evidence, EvidenceKind, EvidenceRequest, EvidenceSource, HistoryEntry, NewEvent,
};
pub use codes::{check_fields as check_code_fields, CityCode, CodeTable, CodeTableError};
pub use published::{LocalTimes, PublishedCase, PublishedEntry};
pub use status::{Status, ALL as ALL_STATUSES, SETTABLE as SETTABLE_STATUSES};
pub use suppression::Suppression;
pub use verdict::{OperatorAction, RejectReason, Verdict, VerdictKind};

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{CameraInfo, Location};
use crate::detect::nms::iou;
use crate::rules::{Sighting, ZoneRules};
use crate::track::Appearance;

/// Overlap with a case's place above which a sighting is at the same place (also the
/// overlap with a suppression's box that holds a sighting back).
pub const SAME_PLACE_IOU: f32 = 0.3;
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
    /// `filed_at` plus the category's handling time limit (counted in working time for
    /// a limit in working hours).
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
    /// History entries recorded for this case (its creation included). Each event's key
    /// carries it, so every delivered transition has its own key, and the same input
    /// processed again yields the same keys.
    #[serde(default)]
    pub transitions: u32,
    /// The latest operator verdict (confirmed or rejected).
    #[serde(default)]
    pub verdict: Option<Verdict>,
    /// Time of the latest sample that changed this case; older samples are history.
    pub updated_at: f64,
    /// Seconds east of UTC of the camera's local time, in which the case's times are
    /// published (0 for cases stored before it was recorded).
    #[serde(default)]
    pub utc_offset: i64,
    /// The city platform's code of the event, when a code table is in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city_code: Option<String>,
    /// The platform's extra fields (department, source, street and community codes, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub city_fields: BTreeMap<String, String>,
    #[serde(skip)]
    track_id: Option<u64>,
    #[serde(skip)]
    appearance: Option<Appearance>,
}

impl Case {
    /// Past its deadline and still open (not closed, not rejected).
    pub fn is_overdue(&self, now: f64) -> bool {
        self.status.is_open() && self.deadline.is_some_and(|deadline| now > deadline)
    }

    /// Why an operator rejected it, if they did.
    pub fn reject_reason(&self) -> Option<RejectReason> {
        self.verdict.as_ref().and_then(|v| v.reason)
    }
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
    #[error("{}: no city code for event `{event}` of zone `{zone}`", table.display())]
    NoCityCode {
        table: std::path::PathBuf,
        zone: String,
        event: String,
    },
    #[error("case {id} is {from}; it cannot become {to}")]
    IllegalTransition {
        id: String,
        from: Status,
        to: Status,
    },
    #[error("case {id} is {status}; only a filed case (filed, dispatched, handled, verifying, reopened or closed) can be confirmed")]
    CannotConfirm { id: String, status: Status },
}

/// Turns one camera's sightings into case changes.
pub struct CaseEngine {
    camera: CameraInfo,
    /// Seconds east of UTC of the camera's local time (working hours, published times).
    utc_offset: i64,
    zones: Vec<ZoneRules>,
    categories: Categories,
    cases: Vec<Case>,
    suppressions: Vec<Suppression>,
}

impl CaseEngine {
    /// `existing` are the camera's cases from the store, so that a restart continues them.
    pub fn new(
        camera: CameraInfo,
        utc_offset: i64,
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
                if let Some(table) = categories.code_table_without(&rule.event) {
                    return Err(CaseError::NoCityCode {
                        table: table.to_path_buf(),
                        zone: zone.id.clone(),
                        event: rule.event.clone(),
                    });
                }
            }
        }
        Ok(Self {
            camera,
            utc_offset,
            zones,
            categories,
            cases: existing,
            suppressions: Vec::new(),
        })
    }

    /// Replaces the engine's cases and suppressions with the store's (after an operator
    /// changed them, or after a failed write let memory run ahead of the store). The
    /// tracker's identity and appearance of cases the engine already had are kept.
    pub fn reload(&mut self, cases: Vec<Case>, suppressions: Vec<Suppression>) {
        let mut known: HashMap<String, (Option<u64>, Option<Appearance>)> = self
            .cases
            .drain(..)
            .map(|c| (c.id, (c.track_id, c.appearance)))
            .collect();
        self.cases = cases
            .into_iter()
            .filter(|c| c.camera_id == self.camera.id)
            .map(|mut c| {
                if let Some((track_id, appearance)) = known.remove(&c.id) {
                    c.track_id = track_id;
                    c.appearance = appearance;
                }
                c
            })
            .collect();
        self.suppressions = suppressions
            .into_iter()
            .filter(|s| s.camera_id == self.camera.id)
            .collect();
    }

    /// The camera's cases as the engine holds them.
    pub fn cases(&self) -> &[Case] {
        &self.cases
    }

    /// One analysed sample at Unix time `ts` with its sightings (from the rules stage).
    /// The changes name the evidence images of this sample that the cases need.
    pub fn process(&mut self, ts: f64, sightings: &[Sighting]) -> Changes {
        let mut changes = Changes::default();
        let mut seen = vec![false; self.cases.len()];
        for s in sightings {
            let found = self.matching_case(s, ts);
            // A filed case that is still open goes on wherever it is.
            let filed_open = found.filter(|&i| {
                let status = self.cases[i].status;
                status.is_open() && status != Status::Detected
            });
            if let Some(i) = filed_open {
                seen[i] = true;
                // Already processed up to this time (a re-run of the same input).
                if self.cases[i].updated_at < ts {
                    self.sighted(i, s, ts, &mut changes);
                }
                continue;
            }
            // Where an operator rejected a case: no candidate, no filing, no reopening.
            // A held-back candidate is not seen, so it ages out.
            if let Some(id) = self.held_back(s, found, ts) {
                if !changes.suppressed_hits.contains(&(id, ts)) {
                    changes.suppressed_hits.push((id, ts));
                }
                if let Some(i) = found.filter(|&i| !self.cases[i].status.is_open()) {
                    seen[i] = true;
                }
                continue;
            }
            match found {
                Some(i) if self.cases[i].updated_at >= ts => seen[i] = true,
                // An operator closed it: the same object staying is no new problem (after
                // the cooldown it no longer matches, and a new case may start).
                Some(i) if closed_by_operator(&self.cases[i]) => seen[i] = true,
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

    /// The suppression that holds a sighting back: one covering its place, or that of the
    /// rejected case it matched.
    fn held_back(&self, s: &Sighting, found: Option<usize>, ts: f64) -> Option<i64> {
        let zone = &self.zones[s.zone];
        let event = &zone.rules[s.rule].event;
        self.suppressions
            .iter()
            .find(|sup| sup.covers(&zone.id, event, &s.bbox, ts))
            .map(|sup| sup.id)
            .or_else(|| {
                let case = &self.cases[found?];
                (case.status == Status::Rejected)
                    .then(|| self.suppression_of(case, ts))
                    .flatten()
            })
    }

    /// The active suppression made when `case` was rejected.
    fn suppression_of(&self, case: &Case, ts: f64) -> Option<i64> {
        self.suppressions
            .iter()
            .find(|sup| sup.case_id == case.id && sup.is_active(ts))
            .map(|sup| sup.id)
    }

    /// The case a sighting belongs to: same zone and event, same place, and not a
    /// different object; an open case wins over a closed or rejected one at the same place.
    /// A closed case matches within the cooldown, a rejected one while its suppression
    /// lasts.
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
                (Status::Rejected, _) => self.suppression_of(c, ts).is_some(),
                _ => true,
            })
            .max_by(|(_, a), (_, b)| {
                (a.status.is_open())
                    .cmp(&b.status.is_open())
                    .then(iou(&a.place, &s.bbox).total_cmp(&iou(&b.place, &s.bbox)))
            })
            .map(|(i, _)| i)
    }

    fn new_candidate(&self, s: &Sighting, ts: f64, changes: &mut Changes) -> Option<Case> {
        let zone = &self.zones[s.zone];
        let rule = &zone.rules[s.rule];
        // A stationary rule counts from when the object stopped, and only once it has
        // been seen standing still (one sighting of a passing car is not a candidate).
        let mut first_seen = if rule.stationary {
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
        let mut id = case_id(&self.camera.id, &zone.id, &rule.event, first_seen, s.bbox);
        // The same object still standing where a case of it ended (closed by an operator
        // or rejected, and no longer holding its place): that case keeps its id, and the
        // new one counts its dwell from now.
        if first_seen < ts && self.cases.iter().any(|c| c.id == id) {
            first_seen = ts;
            id = case_id(&self.camera.id, &zone.id, &rule.event, first_seen, s.bbox);
        }
        let mut case = Case {
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
            transitions: 0,
            verdict: None,
            updated_at: ts,
            utc_offset: self.utc_offset,
            city_code: None,
            city_fields: BTreeMap::new(),
            track_id: Some(s.track_id),
            appearance: s.appearance.clone(),
        };
        if let Some(city) = self.categories.city_code(&rule.event, &self.camera.codes) {
            case.city_code = Some(city.code);
            case.city_fields = city.fields;
        }
        record(
            &mut case,
            None,
            Status::Detected,
            ts,
            AUTOMATIC,
            None,
            changes,
        );
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
            case.filed_at = Some(ts);
            case.deadline = self
                .categories
                .deadline(&rule.category, ts, self.utc_offset);
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
            seen: (case.first_seen, case.last_seen),
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

/// The history actor of the engine's own steps.
const AUTOMATIC: &str = "cgbot";

/// Closed by an operator (not auto-verified).
fn closed_by_operator(case: &Case) -> bool {
    case.status == Status::Closed && case.close_reason.as_deref() == Some("operator")
}

fn transition(case: &mut Case, to: Status, ts: f64, changes: &mut Changes) {
    debug_assert!(case.status.can_become(to), "{} → {to}", case.status);
    let from = case.status;
    record(case, Some(from), to, ts, AUTOMATIC, None, changes);
    case.status = to;
}

/// Appends a history entry for `case` and counts it in `case.transitions`.
fn record(
    case: &mut Case,
    from: Option<Status>,
    to: Status,
    ts: f64,
    actor: &str,
    note: Option<String>,
    changes: &mut Changes,
) {
    case.transitions += 1;
    changes.history.push(HistoryEntry {
        case_id: case.id.clone(),
        ts,
        from,
        to,
        actor: actor.to_string(),
        note,
    });
}

/// A case event for the sinks, sent after the transition it reports was recorded. The
/// key is unique per case and transition (`{id}:{kind}:{transitions}`), so a repeated
/// step (dispatched twice) is a new event, while the same input processed twice is one.
fn event(case: &Case, kind: &str) -> NewEvent {
    NewEvent {
        key: format!("{}:{kind}:{}", case.id, case.transitions),
        kind: format!("case.{kind}"),
        payload: serde_json::to_value(PublishedCase::of(case)).expect("cases serialise"),
    }
}

/// An operator's action on `case` by user `actor` at Unix time `at`, checked against the
/// lifecycle: `case` takes it, and the changes record it (the case, a history entry with
/// the actor and note, and the event for the sinks; confirming sends no event).
///
/// - `SetStatus`: dispatched, handled, closed (close reason `operator`) or reopened.
/// - `Confirm`: keeps the status; records the verdict and a history entry from the status
///   to itself, its note starting `confirmed`. Not for candidates or rejected cases.
/// - `Reject`: from filed, dispatched, handled, verifying or reopened to `rejected`, with
///   the verdict and a `case.rejected` event. The store adds the suppression.
pub fn operator_transition(
    case: &mut Case,
    action: OperatorAction,
    actor: &str,
    note: Option<String>,
    at: f64,
) -> Result<Changes, CaseError> {
    let mut changes = Changes::default();
    let from = case.status;
    match action {
        OperatorAction::SetStatus(to) => {
            if !to.settable_externally() || !from.can_become(to) {
                return Err(CaseError::IllegalTransition {
                    id: case.id.clone(),
                    from,
                    to,
                });
            }
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
            record(case, Some(from), to, at, actor, note, &mut changes);
            case.status = to;
            case.resume_status = None;
            changes.events.push(event(case, to.as_str()));
        }
        OperatorAction::Confirm => {
            if matches!(from, Status::Detected | Status::Rejected) {
                return Err(CaseError::CannotConfirm {
                    id: case.id.clone(),
                    status: from,
                });
            }
            let text = match &note {
                Some(note) => format!("confirmed: {note}"),
                None => "confirmed".to_string(),
            };
            record(case, Some(from), from, at, actor, Some(text), &mut changes);
            case.verdict = Some(Verdict {
                kind: VerdictKind::Confirmed,
                reason: None,
                by: actor.to_string(),
                at,
                note,
            });
        }
        OperatorAction::Reject(reason) => {
            if !from.can_become(Status::Rejected) {
                return Err(CaseError::IllegalTransition {
                    id: case.id.clone(),
                    from,
                    to: Status::Rejected,
                });
            }
            let text = match &note {
                Some(note) => format!("{reason}: {note}"),
                None => reason.to_string(),
            };
            record(
                case,
                Some(from),
                Status::Rejected,
                at,
                actor,
                Some(text),
                &mut changes,
            );
            case.status = Status::Rejected;
            case.resume_status = None;
            case.verdict = Some(Verdict {
                kind: VerdictKind::Rejected,
                reason: Some(reason),
                by: actor.to_string(),
                at,
                note,
            });
            changes.events.push(event(case, "rejected"));
        }
    }
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
    use OperatorAction::{Confirm, Reject, SetStatus};

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
        CaseEngine::new(camera, 8 * 3600, vec![zone], Categories::builtin(), vec![]).unwrap()
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
                seen: (case.first_seen, T0 + 10.0),
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
        let changes = operator_transition(
            &mut case,
            SetStatus(Status::Closed),
            "li",
            Some("towed".into()),
            T0 + 99.0,
        )
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
            (Some(Status::Filed), Status::Closed, "li", Some("towed"))
        );
        assert_eq!(changes.events[0].kind, "case.closed");
        assert_eq!(changes.upserts[0].status, Status::Closed);
        assert!(changes.evidence_wanted.is_empty());
    }

    #[test]
    fn an_operator_cannot_leave_the_lifecycle_or_set_automatic_steps() {
        let mut case = filed_case();
        for to in [Status::Detected, Status::Verifying, Status::Reopened] {
            let err =
                operator_transition(&mut case, SetStatus(to), "li", None, T0 + 99.0).unwrap_err();
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

    const PLACE: [f32; 4] = [100.0, 300.0, 200.0, 380.0];

    /// The kerb engine with the car filed at T0 + 30.
    fn filed_engine() -> CaseEngine {
        let mut engine = kerb_engine();
        for t in [0.0, 10.0, 30.0] {
            engine.process(T0 + t, &[parked_car(PLACE)]);
        }
        assert_eq!(engine.cases()[0].status, Status::Filed);
        engine
    }

    /// What the store does for an operator: the action on its copy of the case, which the
    /// engine then reloads (with `suppressions`).
    fn operator_acts(
        engine: &mut CaseEngine,
        action: OperatorAction,
        at: f64,
        suppressions: Vec<Suppression>,
    ) -> Changes {
        let mut stored: Vec<Case> = engine
            .cases()
            .iter()
            .map(|c| serde_json::from_value(serde_json::to_value(c).unwrap()).unwrap())
            .collect();
        let changes =
            operator_transition(&mut stored[0], action, "li", Some("seen".into()), at).unwrap();
        engine.reload(stored, suppressions);
        changes
    }

    fn suppression(case: &Case, until: f64) -> Suppression {
        Suppression {
            id: 7,
            camera_id: case.camera_id.clone(),
            zone_id: case.zone_id.clone(),
            event: case.event.clone(),
            bbox: case.place,
            case_id: case.id.clone(),
            created_by: "li".into(),
            created_at: T0 + 40.0,
            until,
            lifted_at: None,
            lifted_by: None,
            hits: 0,
            last_hit: None,
        }
    }

    fn statuses(changes: &Changes) -> Vec<(Option<Status>, Status, String)> {
        changes
            .history
            .iter()
            .map(|h| (h.from, h.to, h.actor.clone()))
            .collect()
    }

    #[test]
    fn an_operators_status_survives_later_samples_and_the_lifecycle_continues_from_it() {
        let mut engine = filed_engine();
        operator_acts(
            &mut engine,
            SetStatus(Status::Dispatched),
            T0 + 35.0,
            vec![],
        );
        // Still parked: the case stays dispatched; nothing is recorded.
        let changes = engine.process(T0 + 40.0, &[parked_car(PLACE)]);
        assert_eq!(changes.upserts[0].status, Status::Dispatched);
        assert!(changes.history.is_empty() && changes.events.is_empty());
        // Gone: verifying from dispatched, then closed as auto-verified.
        let gone = engine.process(T0 + 42.0, &[]);
        assert_eq!(
            statuses(&gone),
            [(
                Some(Status::Dispatched),
                Status::Verifying,
                "cgbot".to_string()
            )]
        );
        assert_eq!(gone.upserts[0].resume_status, Some(Status::Dispatched));
        let closed = engine.process(T0 + 53.0, &[]);
        assert_eq!(closed.upserts[0].status, Status::Closed);
        assert_eq!(closed.events[0].kind, "case.closed");
    }

    #[test]
    fn a_reload_keeps_the_trackers_identity_of_known_cases() {
        let mut engine = filed_engine();
        operator_acts(&mut engine, SetStatus(Status::Handled), T0 + 35.0, vec![]);
        assert_eq!(engine.cases()[0].track_id, Some(1));
    }

    #[test]
    fn a_case_an_operator_closed_is_not_reopened_by_the_same_object_until_the_cooldown_ends() {
        let mut engine = filed_engine();
        let id = engine.cases()[0].id.clone();
        operator_acts(&mut engine, SetStatus(Status::Closed), T0 + 35.0, vec![]);
        for t in [40.0, 600.0, 1800.0] {
            let changes = engine.process(T0 + t, &[parked_car(PLACE)]);
            assert!(changes.is_empty(), "at +{t}: {changes:?}");
        }
        // 30 minutes after the close: a new problem at the place, with its own id and a
        // dwell counted from now.
        let later = T0 + 35.0 + 1801.0;
        let changes = engine.process(later, &[parked_car(PLACE)]);
        let [case] = &changes.upserts[..] else {
            panic!("{changes:?}")
        };
        assert_ne!(case.id, id);
        assert_eq!((case.status, case.first_seen), (Status::Detected, later));
        let filed = engine.process(later + 30.0, &[parked_car(PLACE)]);
        assert_eq!(filed.upserts[0].status, Status::Filed);
        assert_eq!(
            engine.cases()[0].status,
            Status::Closed,
            "the old case stays"
        );
    }

    #[test]
    fn a_rejected_case_and_its_suppression_absorb_the_same_place() {
        let mut engine = filed_engine();
        let case = engine.cases()[0].clone();
        let sup = suppression(&case, T0 + 1000.0);
        let rejected = operator_acts(
            &mut engine,
            Reject(RejectReason::NotAViolation),
            T0 + 40.0,
            vec![sup.clone()],
        );
        assert_eq!(rejected.events[0].kind, "case.rejected");
        assert_eq!(
            statuses(&rejected),
            [(Some(Status::Filed), Status::Rejected, "li".to_string())]
        );
        assert_eq!(
            rejected.history[0].note.as_deref(),
            Some("not_a_violation: seen")
        );

        // The same car: absorbed and counted, every sample.
        for t in [50.0, 60.0] {
            let changes = engine.process(T0 + t, &[parked_car(PLACE)]);
            assert!(changes.upserts.is_empty() && changes.history.is_empty());
            assert_eq!(changes.suppressed_hits, [(7, T0 + t)]);
        }
        // Another object at the place (a new track, stationary since now): no candidate.
        let other = Sighting {
            track_id: 9,
            stationary_since: T0 + 60.0,
            bbox: [104.0, 302.0, 204.0, 382.0],
            ..parked_car(PLACE)
        };
        for t in [70.0, 120.0] {
            let changes = engine.process(T0 + t, std::slice::from_ref(&other));
            assert!(changes.upserts.is_empty(), "{changes:?}");
            assert_eq!(changes.suppressed_hits, [(7, T0 + t)]);
        }
        // Elsewhere on the kerb: a case as usual.
        let elsewhere = Sighting {
            track_id: 3,
            bbox: [400.0, 300.0, 500.0, 380.0],
            ..parked_car(PLACE)
        };
        let changes = engine.process(T0 + 130.0, &[elsewhere]);
        assert_eq!(changes.upserts.len(), 1);
        assert!(changes.suppressed_hits.is_empty());
        assert_eq!(engine.cases()[0].status, Status::Rejected);
    }

    #[test]
    fn a_lifted_or_expired_suppression_lets_a_new_case_through() {
        for lifted in [false, true] {
            let mut engine = filed_engine();
            let case = engine.cases()[0].clone();
            let mut sup = suppression(&case, T0 + 100.0);
            operator_acts(
                &mut engine,
                Reject(RejectReason::WrongClass),
                T0 + 40.0,
                vec![sup.clone()],
            );
            assert!(engine
                .process(T0 + 50.0, &[parked_car(PLACE)])
                .upserts
                .is_empty());
            let next = if lifted {
                sup.lifted_at = Some(T0 + 55.0);
                let cases = engine.cases().to_vec();
                engine.reload(cases, vec![sup.clone()]);
                T0 + 60.0
            } else {
                T0 + 100.0
            };
            let changes = engine.process(next, &[parked_car(PLACE)]);
            let [new] = &changes.upserts[..] else {
                panic!("lifted {lifted}: {changes:?}")
            };
            assert_ne!(new.id, case.id);
            assert_eq!(new.status, Status::Detected);
            assert!(changes.suppressed_hits.is_empty());
            let filed = engine.process(next + 30.0, &[parked_car(PLACE)]);
            assert_eq!(filed.upserts[0].status, Status::Filed, "lifted {lifted}");
        }
    }

    #[test]
    fn a_suppressed_place_makes_no_candidate_and_files_none() {
        let mut engine = kerb_engine();
        let mut case = filed_case();
        case.id = "Cother".into();
        case.status = Status::Rejected;
        let sup = suppression(&case, T0 + 1000.0);
        engine.reload(vec![], vec![sup]);
        for t in [0.0, 10.0, 30.0, 60.0] {
            let changes = engine.process(T0 + t, &[parked_car(PLACE)]);
            assert!(changes.upserts.is_empty(), "{changes:?}");
            assert_eq!(changes.suppressed_hits, [(7, T0 + t)]);
        }
    }

    #[test]
    fn every_transition_has_its_own_event_key_and_the_same_input_gives_the_same_keys() {
        let run = || {
            let mut engine = filed_engine();
            let mut keys = vec![];
            let mut take = |c: Changes| keys.extend(c.events.into_iter().map(|e| e.key));
            take(operator_acts(
                &mut engine,
                SetStatus(Status::Dispatched),
                T0 + 31.0,
                vec![],
            ));
            take(engine.process(T0 + 40.0, &[])); // verifying
            take(engine.process(T0 + 41.0, &[parked_car(PLACE)])); // back to dispatched
                                                                   // Dispatched again by hand after it went verifying.
            take(engine.process(T0 + 42.0, &[]));
            take(operator_acts(
                &mut engine,
                SetStatus(Status::Dispatched),
                T0 + 43.0,
                vec![],
            ));
            take(engine.process(T0 + 44.0, &[]));
            take(engine.process(T0 + 60.0, &[])); // closed
            take(engine.process(T0 + 70.0, &[parked_car(PLACE)])); // reopened
            keys
        };
        let keys = run();
        let id = filed_case().id;
        assert_eq!(
            keys,
            // After detected (1) and filed (2).
            [
                format!("{id}:dispatched:3"),
                format!("{id}:dispatched:7"),
                format!("{id}:closed:9"),
                format!("{id}:reopened:10"),
            ]
        );
        assert_eq!(run(), keys, "deterministic");
    }

    #[test]
    fn confirming_records_a_verdict_and_rejecting_ends_the_case() {
        let mut case = filed_case();
        let confirmed = operator_transition(&mut case, Confirm, "li", None, T0 + 50.0).unwrap();
        assert_eq!(case.status, Status::Filed);
        assert_eq!(
            statuses(&confirmed),
            [(Some(Status::Filed), Status::Filed, "li".to_string())]
        );
        assert_eq!(confirmed.history[0].note.as_deref(), Some("confirmed"));
        assert!(confirmed.events.is_empty());
        let verdict = case.verdict.clone().unwrap();
        assert_eq!(
            (verdict.kind, verdict.by.as_str()),
            (VerdictKind::Confirmed, "li")
        );
        assert_eq!(case.transitions, 3);

        let reason = RejectReason::Duplicate;
        operator_transition(&mut case, Reject(reason), "wang", None, T0 + 60.0).unwrap();
        assert_eq!(
            (case.status, case.reject_reason()),
            (Status::Rejected, Some(reason))
        );
        assert!(
            !case.is_overdue(f64::MAX),
            "a rejected case is never overdue"
        );
        for action in [Confirm, Reject(reason), SetStatus(Status::Reopened)] {
            let err = operator_transition(&mut case, action, "li", None, T0 + 70.0).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with(&format!("case {} is rejected", case.id)),
                "{err}"
            );
        }

        let mut candidate = filed_case();
        candidate.status = Status::Detected;
        let err = operator_transition(&mut candidate, Confirm, "li", None, T0).unwrap_err();
        assert!(
            matches!(
                err,
                CaseError::CannotConfirm {
                    status: Status::Detected,
                    ..
                }
            ),
            "{err}"
        );
        let err = operator_transition(&mut candidate, Reject(reason), "li", None, T0).unwrap_err();
        assert!(
            matches!(
                err,
                CaseError::IllegalTransition {
                    to: Status::Rejected,
                    ..
                }
            ),
            "{err}"
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
