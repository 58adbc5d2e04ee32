//! The track → rules → cases end of the path for one camera: sightings from the rules
//! stage become case changes and evidence images, committed to the store one analysed
//! frame at a time.

use crate::cases::{CaseEngine, Categories, Status};
use crate::config::Camera;
use crate::decode::Frame;
use crate::detect::Detection;
use crate::evidence::EvidenceWriter;
use crate::models::InputSpec;
use crate::rules::RuleEngine;
use crate::store::{CaseFilter, Store};

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

/// The track → rules → cases end of the path for one camera, writing to the caller's
/// store: one per camera, kept by the filing stage.
pub struct Filing {
    rules: RuleEngine,
    cases: CaseEngine,
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
        let existing = store.cases(&CaseFilter {
            camera: Some(camera.info.id.clone()),
            ..CaseFilter::default()
        })?;
        let cases = CaseEngine::new(
            camera.info.clone(),
            camera.zones.clone(),
            categories,
            existing,
        )?;
        Ok(Self {
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
        })
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
        let mut changes = self.cases.process(ts, &sightings);
        if changes.is_empty() {
            return Ok(());
        }
        let evidence = self
            .evidence
            .write(&frame.picture, detections, &changes.evidence_wanted)?;
        changes.evidence.extend_from_slice(evidence.rows());
        // On an error `evidence` is dropped, which deletes the images it wrote.
        store.write(&changes)?;
        evidence.commit(&changes.deletes);
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
}
