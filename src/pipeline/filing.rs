//! The track → rules → cases end of the path for one camera: sightings from the rules
//! stage become case changes and evidence images, committed to the store one analysed
//! frame at a time.
//!
//! Operators change cases behind the filing's back (CLI, API, console). Each frame first
//! checks the camera's operator change number (one indexed read) and reloads the camera's
//! cases and suppressions when it moved; the write itself is guarded by that number, and
//! a write refused because an operator acted in between reloads and processes the same
//! sightings again. After any failed write the next frame starts from the store too, so
//! memory never runs ahead of the database.

use crate::cases::{CaseEngine, Categories, Status};
use crate::config::Camera;
use crate::decode::Frame;
use crate::detect::Detection;
use crate::evidence::EvidenceWriter;
use crate::models::InputSpec;
use crate::rules::{RuleEngine, Sighting};
use crate::store::{CaseFilter, Store, StoreError};

use super::PipelineError;

/// How many cases each automatic step touched during a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilingStats {
    pub candidates: u64,
    pub filed: u64,
    pub verifying: u64,
    pub closed: u64,
    pub reopened: u64,
}

/// How often one frame is processed again when operators keep acting while it is written.
const CONFLICT_RETRIES: u32 = 3;

/// The track → rules → cases end of the path for one camera, writing to the caller's
/// store: one per camera, kept by the filing stage.
pub struct Filing {
    camera_id: String,
    rules: RuleEngine,
    cases: CaseEngine,
    /// The camera's operator change number the engine's cases were loaded at.
    seen_seq: i64,
    /// The engine may hold what the store does not (a write failed): reload first.
    stale: bool,
    evidence: EvidenceWriter,
    model_input: InputSpec,
    /// Unix time of presentation time 0.
    base_time: f64,
    pub stats: FilingStats,
}

impl Filing {
    /// Continues the camera's cases already in the store.
    pub fn new(
        camera: &Camera,
        categories: Categories,
        store: &Store,
        model_input: InputSpec,
        base_time: f64,
    ) -> Result<Self, PipelineError> {
        let cases = CaseEngine::new(
            camera.info.clone(),
            camera.zones.clone(),
            categories,
            Vec::new(),
        )?;
        let mut filing = Self {
            camera_id: camera.info.id.clone(),
            seen_seq: 0,
            stale: true,
            rules: RuleEngine::new(
                camera.zones.clone(),
                camera.tracker.clone(),
                camera.utc_offset,
            ),
            cases,
            evidence: EvidenceWriter::new(store.evidence_dir()),
            model_input,
            base_time,
            stats: FilingStats::default(),
        };
        filing.reload(store)?;
        Ok(filing)
    }

    /// Loads the camera's cases and suppressions from the store into the case engine.
    fn reload(&mut self, store: &Store) -> Result<(), PipelineError> {
        // The number first: an operator acting between the two reads makes the next write
        // conflict and reload again, never overwrite.
        let seq = store.operator_seq(&self.camera_id)?;
        let cases = store.cases(&CaseFilter {
            camera: Some(self.camera_id.clone()),
            ..CaseFilter::default()
        })?;
        let suppressions = store
            .suppressions(Some(&self.camera_id), None)?
            .into_iter()
            .filter(|s| s.lifted_at.is_none())
            .collect();
        self.cases.reload(cases, suppressions);
        self.seen_seq = seq;
        self.stale = false;
        Ok(())
    }

    /// One analysed frame: its changes and evidence images are committed in one
    /// transaction before returning; on an error neither is kept.
    pub fn on_frame(
        &mut self,
        store: &mut Store,
        frame: &Frame,
        detections: &[Detection],
    ) -> Result<(), PipelineError> {
        let ts = self.base_time + frame.pts;
        let sightings = self.rules.observe(ts, frame, detections, &self.model_input);
        if self.stale || store.operator_seq(&self.camera_id)? != self.seen_seq {
            self.reload(store)?;
        }
        self.file(store, ts, &sightings, frame, detections)
    }

    /// Files one sample's sightings: case changes and their images, written unless an
    /// operator acted on the camera since the engine was loaded; then the engine reloads
    /// and the same sightings are processed again.
    fn file(
        &mut self,
        store: &mut Store,
        ts: f64,
        sightings: &[Sighting],
        frame: &Frame,
        detections: &[Detection],
    ) -> Result<(), PipelineError> {
        let mut conflicts = 0;
        let changes = loop {
            // Until the write commits, the engine is ahead of the store.
            self.stale = true;
            let mut changes = self.cases.process(ts, sightings);
            if changes.is_empty() {
                self.stale = false;
                return Ok(());
            }
            let evidence =
                self.evidence
                    .write(&frame.picture, detections, &changes.evidence_wanted)?;
            changes.evidence.extend_from_slice(evidence.rows());
            // On an error `evidence` is dropped, which deletes the images it wrote.
            match store.write_guarded(&changes, &self.camera_id, self.seen_seq) {
                Ok(()) => {
                    evidence.commit(&changes.deletes);
                    self.stale = false;
                    break changes;
                }
                Err(StoreError::Conflict { .. }) if conflicts < CONFLICT_RETRIES => {
                    conflicts += 1;
                    drop(evidence);
                    tracing::debug!(
                        camera = self.camera_id,
                        "an operator changed the camera's cases; filing the frame again"
                    );
                    self.reload(store)?;
                }
                Err(e) => return Err(e.into()),
            }
        };
        for entry in &changes.history {
            let counter = match entry.to {
                Status::Detected => &mut self.stats.candidates,
                Status::Filed if entry.from == Some(Status::Detected) => &mut self.stats.filed,
                Status::Verifying => &mut self.stats.verifying,
                Status::Closed => &mut self.stats.closed,
                Status::Reopened => &mut self.stats.reopened,
                _ => continue,
            };
            *counter += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::cases::OperatorAction;
    use crate::pipeline::test_support::street_sample;

    /// The parked van in the zone.
    fn van() -> Vec<Detection> {
        vec![Detection {
            label: "truck".into(),
            class: 7,
            score: 0.8,
            bbox: [520.0, 213.0, 640.0, 337.0],
        }]
    }

    /// The van seen at 0 and 10 s: a candidate with its first images.
    fn van_seen_twice(dir: &Path) -> (Filing, Frame, Store) {
        let (camera, input, mut frame) = street_sample();
        let mut store = Store::open(&dir.join("cases.db")).unwrap();
        let mut filing = Filing::new(&camera, Categories::builtin(), &store, input, 0.0).unwrap();
        for t in [0.0, 10.0] {
            filing
                .on_frame(&mut store, at(&mut frame, t), &van())
                .unwrap();
        }
        (filing, frame, store)
    }

    fn at(frame: &mut Frame, t: f64) -> &Frame {
        frame.pts = t;
        frame
    }

    /// Renames a table of the database in `dir` behind the store's back: its writes
    /// fail until the table has its name back.
    fn rename_table(dir: &Path, from: &str, to: &str) {
        let conn = rusqlite::Connection::open(dir.join("cases.db")).unwrap();
        conn.execute_batch(&format!("ALTER TABLE {from} RENAME TO {to}"))
            .unwrap();
    }

    /// The `<case id>/<file>` names under an evidence folder, sorted.
    fn images(evidence: &Path) -> Vec<String> {
        let mut names = Vec::new();
        for case in std::fs::read_dir(evidence).into_iter().flatten() {
            for file in std::fs::read_dir(case.unwrap().path()).unwrap() {
                let path = file.unwrap().path();
                names.push(path.strip_prefix(evidence).unwrap().display().to_string());
            }
        }
        names.sort();
        names
    }

    #[test]
    fn a_failed_commit_leaves_no_new_image() {
        let dir = tempfile::tempdir().unwrap();
        let (mut filing, mut frame, mut store) = van_seen_twice(dir.path());
        let id = &store.cases(&CaseFilter::default()).unwrap()[0].id;
        let evidence = store.evidence_dir();
        let candidate = [format!("{id}/first-crop.jpg"), format!("{id}/first.jpg")];
        assert_eq!(images(&evidence), candidate);

        // At 30 s the van's dwell is reached: filing it wants new images.
        rename_table(dir.path(), "history", "history_away");
        let err = filing.on_frame(&mut store, at(&mut frame, 30.0), &van());
        assert!(matches!(err, Err(PipelineError::Store(_))), "{err:?}");
        assert_eq!(images(&evidence), candidate);
        assert_eq!(store.evidence(id).unwrap().len(), 2);
    }

    #[test]
    fn a_deleted_candidates_images_stay_until_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (mut filing, mut frame, mut store) = van_seen_twice(dir.path());
        let id = store.cases(&CaseFilter::default()).unwrap()[0].id.clone();
        let evidence = store.evidence_dir();
        assert_eq!(images(&evidence).len(), 2);

        // Gone for the 8 s window: the candidate is deleted, but the commit fails.
        rename_table(dir.path(), "history", "history_away");
        assert!(filing
            .on_frame(&mut store, at(&mut frame, 20.0), &[])
            .is_err());
        assert!(store.case(&id).unwrap().is_some());
        assert_eq!(images(&evidence).len(), 2, "the rows still name them");

        // After a restart with a healthy database the deletion commits.
        rename_table(dir.path(), "history_away", "history");
        let (camera, input, _) = street_sample();
        let mut filing = Filing::new(&camera, Categories::builtin(), &store, input, 0.0).unwrap();
        filing
            .on_frame(&mut store, at(&mut frame, 20.0), &[])
            .unwrap();
        assert!(store.case(&id).unwrap().is_none());
        assert!(!evidence.join(&id).exists());
    }

    fn statuses(store: &Store, id: &str) -> Vec<(Status, String)> {
        store
            .history(id)
            .unwrap()
            .into_iter()
            .map(|h| (h.to, h.actor))
            .collect()
    }

    #[test]
    fn an_operators_status_is_picked_up_and_the_case_continues_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut filing, mut frame, mut store) = van_seen_twice(dir.path());
        filing
            .on_frame(&mut store, at(&mut frame, 30.0), &van())
            .unwrap();
        let id = store.cases(&CaseFilter::default()).unwrap()[0].id.clone();
        let dispatch = OperatorAction::SetStatus(Status::Dispatched);
        let none = std::time::Duration::ZERO;
        store
            .operator_action(&id, dispatch, "li", None, 31.0, none)
            .unwrap();
        for t in [32.0, 34.0] {
            filing
                .on_frame(&mut store, at(&mut frame, t), &van())
                .unwrap();
        }
        let case = store.case(&id).unwrap().unwrap();
        assert_eq!((case.status, case.last_seen), (Status::Dispatched, 34.0));
        // The van leaves: verifying, then closed, from dispatched.
        for t in [36.0, 44.0] {
            filing.on_frame(&mut store, at(&mut frame, t), &[]).unwrap();
        }
        let by = |s: Status, a: &str| (s, a.to_string());
        assert_eq!(
            statuses(&store, &id),
            [
                by(Status::Detected, "cgbot"),
                by(Status::Filed, "cgbot"),
                by(Status::Dispatched, "li"),
                by(Status::Verifying, "cgbot"),
                by(Status::Closed, "cgbot"),
            ]
        );
        let keys: Vec<String> = store
            .pending("test", 10)
            .unwrap()
            .into_iter()
            .map(|e| e.idempotency_key)
            .collect();
        assert_eq!(
            keys,
            [
                format!("{id}:filed:2"),
                format!("{id}:dispatched:3"),
                format!("{id}:closed:5")
            ]
        );
    }

    #[test]
    fn after_a_failed_write_the_next_frame_starts_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (mut filing, mut frame, mut store) = van_seen_twice(dir.path());
        rename_table(dir.path(), "history", "history_away");
        assert!(filing
            .on_frame(&mut store, at(&mut frame, 30.0), &van())
            .is_err());
        rename_table(dir.path(), "history_away", "history");
        // Memory had filed the case; the store had not. Filing it again records it.
        filing
            .on_frame(&mut store, at(&mut frame, 32.0), &van())
            .unwrap();
        let id = store.cases(&CaseFilter::default()).unwrap()[0].id.clone();
        assert_eq!(
            statuses(&store, &id),
            [
                (Status::Detected, "cgbot".to_string()),
                (Status::Filed, "cgbot".to_string())
            ]
        );
        let events = store.pending("test", 10).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, "case.filed");
    }

    #[test]
    fn a_write_refused_for_an_operators_change_is_filed_again_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (mut filing, mut frame, mut store) = van_seen_twice(dir.path());
        filing
            .on_frame(&mut store, at(&mut frame, 30.0), &van())
            .unwrap();
        let id = store.cases(&CaseFilter::default()).unwrap()[0].id.clone();
        // The next sample's sightings are ready when the operator acts.
        let frame = at(&mut frame, 32.0);
        let sightings = filing
            .rules
            .observe(32.0, frame, &van(), &filing.model_input);
        let dispatch = OperatorAction::SetStatus(Status::Dispatched);
        store
            .operator_action(&id, dispatch, "li", None, 31.0, std::time::Duration::ZERO)
            .unwrap();
        filing
            .file(&mut store, 32.0, &sightings, frame, &van())
            .unwrap();
        let case = store.case(&id).unwrap().unwrap();
        assert_eq!((case.status, case.last_seen), (Status::Dispatched, 32.0));
        assert_eq!(filing.seen_seq, 1);
    }

    /// An operator acting as fast as they can while frames are filed: no operator step is
    /// ever overwritten (the case's transition count always matches its history).
    #[test]
    fn operators_acting_during_filing_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut filing, mut frame, mut store) = van_seen_twice(dir.path());
        filing
            .on_frame(&mut store, at(&mut frame, 30.0), &van())
            .unwrap();
        let id = store.cases(&CaseFilter::default()).unwrap()[0].id.clone();
        let path = dir.path().join("cases.db");
        let operator = {
            let id = id.clone();
            std::thread::spawn(move || {
                let mut store = Store::open(&path).unwrap();
                let none = std::time::Duration::ZERO;
                for i in 0..40 {
                    let at = 31.0 + f64::from(i);
                    store
                        .operator_action(&id, OperatorAction::Confirm, "li", None, at, none)
                        .unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            })
        };
        let mut conflicts = 0;
        for i in 0..80 {
            let t = 31.0 + f64::from(i);
            match filing.on_frame(&mut store, at(&mut frame, t), &van()) {
                Ok(()) => {}
                Err(PipelineError::Store(StoreError::Conflict { .. })) => conflicts += 1,
                Err(e) => panic!("{e}"),
            }
        }
        operator.join().unwrap();
        filing
            .on_frame(&mut store, at(&mut frame, 200.0), &van())
            .unwrap();
        let case = store.case(&id).unwrap().unwrap();
        let history = store.history(&id).unwrap();
        assert_eq!(history.iter().filter(|h| h.actor == "li").count(), 40);
        assert_eq!(
            case.transitions as usize,
            history.len(),
            "{conflicts} conflicts"
        );
        assert_eq!((case.status, case.last_seen), (Status::Filed, 200.0));
        assert!(case.verdict.is_some());
    }
}
