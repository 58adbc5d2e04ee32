//! What the case engine outputs: the rows one sample (or one operator action) changes,
//! written by the store in one transaction, and the evidence images it wants drawn.

use std::path::PathBuf;

use serde::Serialize;

use super::{Case, Status};

/// One change of status, for the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEntry {
    pub case_id: String,
    pub ts: f64,
    pub from: Option<Status>,
    pub to: Status,
    /// `cgbot` for automatic steps, otherwise the operator's user name.
    pub actor: String,
    pub note: Option<String>,
}

/// A stored evidence image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    pub case_id: String,
    /// `first`, `first-crop`, `filed`, `filed-crop`, `reopened`, `reopened-crop`, `after`.
    pub kind: String,
    pub path: PathBuf,
    pub ts: f64,
    /// The picture it was drawn on; `None` for images stored before cgbot recorded it.
    pub source: Option<EvidenceSource>,
    /// Why the main-stream grab failed, for [`EvidenceSource::Fallback`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
    /// Height in pixels of the caption band under the picture (0: none), so the picture
    /// alone can be cut out of the image (the console's camera picture).
    #[serde(skip)]
    pub caption_height: u32,
}

/// The picture an evidence image was drawn on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceSource {
    /// The frame the detections came from: a camera analysed on the stream it keeps
    /// evidence from, or a replayed file.
    Analysed,
    /// A keyframe grabbed from the main stream of a camera analysed on its sub stream.
    MainStream,
    /// The analysed sub-stream frame, because the main-stream grab failed.
    Fallback,
}

impl EvidenceSource {
    /// The name stored in the evidence row and shown in the case JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            EvidenceSource::Analysed => "analysed",
            EvidenceSource::MainStream => "main_stream",
            EvidenceSource::Fallback => "fallback",
        }
    }

    /// The source stored as `name`; `None` for a name this cgbot does not know.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Analysed, Self::MainStream, Self::Fallback]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// A case event for the sinks.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub key: String,
    pub kind: String,
    pub payload: serde_json::Value,
}

/// The moment in a case's life an evidence image shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvidenceKind {
    First,
    Filed,
    Reopened,
    /// The place after the problem left (auto-verified close).
    After,
}

impl EvidenceKind {
    /// The image's name, also its file name without `.jpg`.
    pub fn as_str(self) -> &'static str {
        match self {
            EvidenceKind::First => "first",
            EvidenceKind::Filed => "filed",
            EvidenceKind::Reopened => "reopened",
            EvidenceKind::After => "after",
        }
    }
}

/// An evidence image of the current sample that the engine wants: the frame with the
/// zone, every detection and the case's box, and maybe a close-up of the object.
#[derive(Debug, Clone, PartialEq)]
pub struct EvidenceRequest {
    pub case_id: String,
    pub kind: EvidenceKind,
    pub ts: f64,
    /// The zone's outline (normalised vertices).
    pub zone: Vec<[f64; 2]>,
    /// The case's box (source pixels), drawn over the detections with `label`.
    pub bbox: [f32; 4],
    pub label: String,
    pub score: f32,
    /// Box to cut out as `<kind>-crop`, if a close-up is wanted.
    pub crop: Option<[f32; 4]>,
    /// When the case's object was first and last seen (Unix seconds): the after-image
    /// labels the place it left with them.
    pub seen: (f64, f64),
}

/// Everything one sample or operator action changed, written in one transaction.
#[derive(Debug, Default)]
pub struct Changes {
    pub upserts: Vec<Case>,
    /// Candidates that left before becoming cases; their rows and images go.
    pub deletes: Vec<String>,
    pub history: Vec<HistoryEntry>,
    /// Rows of the images written for `evidence_wanted`, filled in by whoever wrote them.
    pub evidence: Vec<Evidence>,
    pub evidence_wanted: Vec<EvidenceRequest>,
    pub events: Vec<NewEvent>,
    /// Sightings held back by a suppression: its id and the sample's Unix time.
    pub suppressed_hits: Vec<(i64, f64)>,
}

impl Changes {
    /// Evidence only ever comes with an upsert, so it does not count on its own.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty()
            && self.deletes.is_empty()
            && self.history.is_empty()
            && self.events.is_empty()
            && self.suppressed_hits.is_empty()
    }

    /// Rows this holds for the store: what a writer that cannot write keeps in memory.
    pub fn rows(&self) -> usize {
        self.upserts.len()
            + self.deletes.len()
            + self.history.len()
            + self.evidence.len()
            + self.events.len()
            + self.suppressed_hits.len()
    }

    /// Adds the changes of a later sample, so that writing the result in one transaction
    /// leaves the store as writing both in turn would: a case's latest row and evidence
    /// image of each kind win, history and events add up (an event once per key), and a
    /// candidate deleted later takes its earlier rows with it. Requests for images are
    /// left to the caller.
    pub fn merge(&mut self, later: Changes) {
        for id in &later.deletes {
            self.history.retain(|h| &h.case_id != id);
            self.evidence.retain(|e| &e.case_id != id);
            self.events
                .retain(|e| !e.key.starts_with(&format!("{id}:")));
        }
        for case in later.upserts {
            // A case written again after its deletion lives on.
            self.deletes.retain(|id| *id != case.id);
            self.upserts.retain(|c| c.id != case.id);
            self.upserts.push(case);
        }
        self.deletes.extend(later.deletes);
        self.history.extend(later.history);
        for image in later.evidence {
            self.evidence
                .retain(|e| (&e.case_id, &e.kind) != (&image.case_id, &image.kind));
            self.evidence.push(image);
        }
        for event in later.events {
            if !self.events.iter().any(|e| e.key == event.key) {
                self.events.push(event);
            }
        }
        self.suppressed_hits.extend(later.suppressed_hits);
    }
}
