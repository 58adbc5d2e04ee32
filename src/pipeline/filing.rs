//! The track → rules → cases end of the path for one camera: sightings from the rules
//! stage become case changes and evidence images, committed to the store one analysed
//! frame at a time.
//!
//! Operators change cases behind the filing's back (CLI, API, console). Each frame first
//! checks the camera's operator change number (one indexed read) and reloads the camera's
//! cases and suppressions when it moved; the write itself is guarded by that number, and
//! a write refused because an operator acted in between reloads and processes the same
//! sightings again.
//!
//! A store that cannot take the write (a full disk, an I/O error, a read-only or locked
//! database) loses nothing: the changes stay in memory, later samples' changes merge into
//! them, and they are written together once the store takes writes again — retried with
//! backoff on the camera's next samples, or by [`Filing::retry`] when the camera sends
//! none. Case ids and event keys are stable, so nothing is written twice. Evidence images
//! that cannot be written are missing until a later sample of the camera provides them.

use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::cases::{
    CaseEngine, Categories, Changes, EvidenceKind, EvidenceRequest, EvidenceSource, Status,
};
use crate::config::Camera;
use crate::decode::Frame;
use crate::detect::Detection;
use crate::evidence::{
    scale_box, scale_detections, Drawn, EvidenceWriter, MainStreamGrabs, PendingGrab,
};
use crate::models::InputSpec;
use crate::rules::{RuleEngine, Sighting};
use crate::scene::{Scene, NEW_OBJECT};
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

impl FilingStats {
    /// Counts the automatic steps of changes the store took.
    fn count(&mut self, committed: &Changes) {
        for entry in &committed.history {
            let counter = match entry.to {
                Status::Detected => &mut self.candidates,
                Status::Filed if entry.from == Some(Status::Detected) => &mut self.filed,
                Status::Verifying => &mut self.verifying,
                Status::Closed => &mut self.closed,
                Status::Reopened => &mut self.reopened,
                _ => continue,
            };
            *counter += 1;
        }
    }
}

/// How often one frame is processed again when operators keep acting while it is written.
const CONFLICT_RETRIES: u32 = 3;

/// Rows one camera keeps in memory while the store refuses writes. Beyond it, the
/// camera's sightings wait (its frames are still watched) until the rows are written:
/// hours of a busy camera's changes, a few MiB.
const MAX_PENDING_ROWS: usize = 20_000;

/// Pacing of the attempts to write refused changes: the first retry within a second, then
/// at most every 15 s.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_CAP: Duration = Duration::from_secs(15);

/// The track → rules → cases end of the path for one camera, writing to the caller's
/// store: one per camera, kept by the filing stage.
pub struct Filing {
    camera_id: String,
    rules: RuleEngine,
    /// The camera's learned empty scene, where a rule watches for new stationary things.
    scene: Option<Scene>,
    cases: CaseEngine,
    /// The camera's operator change number the engine's cases were loaded at.
    seen_seq: i64,
    /// The engine may hold what the store does not and `pending` does not: reload first.
    stale: bool,
    /// Changes the store refused, in sample order merged into one write; the engine's
    /// cases are ahead of the store by exactly these.
    pending: Changes,
    /// Images wanted and not written yet, drawn from the camera's next sample.
    missing: Vec<EvidenceRequest>,
    /// Sample time (Unix seconds) before which a refused write is not tried again.
    retry_at: f64,
    backoff: Backoff,
    evidence: EvidenceWriter,
    /// Where evidence comes from when the camera is analysed on its sub stream.
    main_stream: Option<MainStream>,
    model_input: InputSpec,
    /// Unix time of presentation time 0.
    base_time: f64,
    pub stats: FilingStats,
}

/// A sub-stream camera's way to its main stream for evidence images.
struct MainStream {
    grabs: Arc<MainStreamGrabs>,
    url: String,
    in_flight: Option<InFlight>,
}

/// A main-stream keyframe on its way, for the images a sample wanted.
struct InFlight {
    pending: PendingGrab,
    /// The requests and detections of that sample, in its (sub-stream) pixels.
    requests: Vec<EvidenceRequest>,
    detections: Vec<Detection>,
    size: (u32, u32),
}

/// The picture a sample's images are drawn on.
enum Drawing {
    /// This sample's frame, with these requests; for a sub-stream camera, because its
    /// main-stream grab failed (why).
    Sample {
        requests: Vec<EvidenceRequest>,
        fallback: Option<String>,
    },
    /// A main-stream keyframe grabbed for an earlier sample, its boxes moved onto it.
    Main {
        picture: crate::decode::Picture,
        requests: Vec<EvidenceRequest>,
        detections: Vec<Detection>,
    },
    /// Nothing yet: the grab is still under way.
    Waiting,
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
            camera.utc_offset,
            camera.zones.clone(),
            categories,
            Vec::new(),
        )?;
        let mut filing = Self {
            camera_id: camera.info.id.clone(),
            seen_seq: 0,
            stale: true,
            pending: Changes::default(),
            missing: Vec::new(),
            retry_at: f64::NEG_INFINITY,
            backoff: Backoff::new(RETRY_FIRST, RETRY_CAP),
            rules: RuleEngine::new(
                camera.zones.clone(),
                camera.tracker.clone(),
                camera.utc_offset,
            ),
            scene: camera
                .zones
                .iter()
                .flat_map(|z| &z.rules)
                .any(|r| r.labels.iter().any(|l| l == NEW_OBJECT))
                .then(|| Scene::new(camera.scene)),
            cases,
            evidence: EvidenceWriter::new(
                store.evidence_dir(),
                camera.info.clone(),
                camera.utc_offset,
            ),
            main_stream: None,
            model_input,
            base_time,
            stats: FilingStats::default(),
        };
        filing.reload(store)?;
        Ok(filing)
    }

    /// Takes the camera's evidence images from `url`, its main stream, through `grabs`:
    /// for a camera analysed on its sub stream.
    pub fn with_main_stream(mut self, grabs: Arc<MainStreamGrabs>, url: String) -> Self {
        self.main_stream = Some(MainStream {
            grabs,
            url,
            in_flight: None,
        });
        self
    }

    /// Adds the new stationary things of the frame to its model `detections`, for a
    /// camera whose rules watch for them (see [`crate::scene`]); nothing otherwise.
    pub fn add_new_objects(&mut self, frame: &Frame, detections: &mut Vec<Detection>) {
        if let Some(scene) = self.scene.as_mut() {
            let found = scene.sample(&frame.picture, detections);
            detections.extend(found);
        }
    }

    /// Forgets the camera's learned scene: it looks at other ground now, and learns the
    /// scene again once it shows its own.
    pub fn forget_scene(&mut self) {
        if let Some(scene) = self.scene.as_mut() {
            if scene.learned() > 0.0 {
                tracing::info!(
                    camera = self.camera_id,
                    "view changed: the learned scene is forgotten"
                );
            }
            scene.reset();
        }
    }

    /// Rows of case changes waiting in memory for the store.
    pub fn pending_rows(&self) -> usize {
        self.pending.rows()
    }

    /// Evidence images wanted and not written yet.
    pub fn missing_images(&self) -> usize {
        self.missing.len()
    }

    /// Loads the camera's cases and suppressions from the store into the case engine,
    /// giving up changes the store has not taken (they are found again from the store's
    /// state and the next samples).
    fn reload(&mut self, store: &Store) -> Result<(), PipelineError> {
        self.stale = true;
        self.pending = Changes::default();
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

    /// One analysed frame: its changes and evidence images, with any the store refused
    /// before, are committed in one transaction before returning. On an error the
    /// changes wait in memory for a later attempt, and the images are not kept.
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

    /// Writes the changes the store refused before, without images, if their retry is
    /// due at Unix time `now`: for a camera whose samples stopped coming.
    pub fn retry(&mut self, store: &mut Store, now: f64) -> Result<(), PipelineError> {
        if self.pending.rows() == 0 || now < self.retry_at {
            return Ok(());
        }
        match self.commit(store, now, None) {
            Err(PipelineError::Store(StoreError::Conflict { .. })) => {
                // An operator acted on the camera meanwhile: its next sample starts from
                // the store.
                self.stale = true;
                Ok(())
            }
            other => other,
        }
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
        loop {
            if self.pending.rows() < MAX_PENDING_ROWS {
                let mut changes = self.cases.process(ts, sightings);
                self.want_images(std::mem::take(&mut changes.evidence_wanted));
                self.pending.merge(changes);
            } else {
                tracing::debug!(
                    camera = self.camera_id,
                    "the store has not taken this camera's changes for long; sightings wait"
                );
            }
            if self.pending.rows() == 0 && self.missing.is_empty() {
                return Ok(());
            }
            if ts < self.retry_at {
                return Ok(());
            }
            match self.commit(store, ts, Some((frame, detections))) {
                Err(PipelineError::Store(StoreError::Conflict { .. }))
                    if conflicts < CONFLICT_RETRIES =>
                {
                    conflicts += 1;
                    tracing::debug!(
                        camera = self.camera_id,
                        "an operator changed the camera's cases; filing the frame again"
                    );
                    self.reload(store)?;
                }
                done => return done,
            }
        }
    }

    /// Images wanted by a sample: a newer request for a case's image of a kind replaces
    /// an older one still missing.
    fn want_images(&mut self, requests: Vec<EvidenceRequest>) {
        for request in requests {
            self.missing
                .retain(|m| (&m.case_id, m.kind) != (&request.case_id, request.kind));
            self.missing.push(request);
        }
    }

    /// Writes the pending changes with the missing images drawn from `sample` (none
    /// without one) in one transaction. An error other than a conflict keeps the changes
    /// for a retry after a backoff; an image that could not be written stays missing and
    /// its error is returned once the changes are in.
    fn commit(
        &mut self,
        store: &mut Store,
        ts: f64,
        sample: Option<(&Frame, &[Detection])>,
    ) -> Result<(), PipelineError> {
        let requests = match sample {
            Some(_) => self.images_at(ts),
            None => Vec::new(),
        };
        let drawing = match sample {
            Some((frame, detections)) => self.drawing(requests.clone(), frame, detections),
            None => Drawing::Waiting,
        };
        let mut written = match (&drawing, sample) {
            (Drawing::Sample { requests, fallback }, Some((frame, detections))) => {
                let drawn = match fallback {
                    Some(reason) => Drawn {
                        source: EvidenceSource::Fallback,
                        fallback_reason: Some(reason.clone()),
                    },
                    None => Drawn::analysed(),
                };
                Some(
                    self.evidence
                        .write(&frame.picture, detections, requests, &drawn),
                )
            }
            (
                Drawing::Main {
                    picture,
                    requests,
                    detections,
                },
                _,
            ) => {
                let drawn = Drawn {
                    source: EvidenceSource::MainStream,
                    fallback_reason: None,
                };
                Some(self.evidence.write(picture, detections, requests, &drawn))
            }
            _ => None,
        };
        let (unwritten, evidence_error) =
            written.as_mut().map(|w| w.unwritten()).unwrap_or_default();
        self.pending.evidence = written
            .as_ref()
            .map(|w| w.rows().to_vec())
            .unwrap_or_default();
        let outcome = if self.pending.rows() == 0 {
            Ok(())
        } else {
            store.write_guarded(&self.pending, &self.camera_id, self.seen_seq)
        };
        if let Err(e) = outcome {
            // Dropping `written` deletes the images it wrote: all are wanted again.
            self.pending.evidence.clear();
            if sample.is_some() {
                self.missing = requests;
            }
            if !matches!(e, StoreError::Conflict { .. }) {
                self.retry_at = ts + self.backoff.next_delay().as_secs_f64();
            }
            return Err(e.into());
        }
        if let Some(written) = written {
            written.commit(&self.pending.deletes);
        }
        let committed = std::mem::take(&mut self.pending);
        self.stats.count(&committed);
        if sample.is_some() {
            // Requests a main-stream picture did not cover, or that wait for one, stay
            // missing with those it could not write.
            let drawn: Vec<(&str, EvidenceKind)> = match &drawing {
                Drawing::Sample {
                    requests: drawn, ..
                }
                | Drawing::Main {
                    requests: drawn, ..
                } => drawn.iter().map(|r| (r.case_id.as_str(), r.kind)).collect(),
                Drawing::Waiting => Vec::new(),
            };
            let mut still = unwritten;
            still.extend(
                requests
                    .into_iter()
                    .filter(|r| !drawn.contains(&(r.case_id.as_str(), r.kind))),
            );
            self.missing = still;
        }
        self.backoff.reset();
        self.retry_at = f64::NEG_INFINITY;
        match evidence_error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// What this sample's wanted images are drawn on. A camera without a main stream to
    /// grab: this sample. Otherwise a grab is started for them and they wait; when the
    /// grab brought a keyframe, the requests it was started for (those still wanted) are
    /// drawn on it with their boxes moved to its pixels; when it failed, on this sample.
    fn drawing(
        &mut self,
        requests: Vec<EvidenceRequest>,
        frame: &Frame,
        detections: &[Detection],
    ) -> Drawing {
        let Some(main) = self.main_stream.as_mut() else {
            return Drawing::Sample {
                requests,
                fallback: None,
            };
        };
        if requests.is_empty() {
            return Drawing::Waiting;
        }
        let Some(in_flight) = main.in_flight.as_ref() else {
            main.in_flight = Some(InFlight {
                pending: main.grabs.start(&main.url),
                requests,
                detections: detections.to_vec(),
                size: (frame.picture.width(), frame.picture.height()),
            });
            return Drawing::Waiting;
        };
        let Some(result) = in_flight.pending.poll() else {
            return Drawing::Waiting;
        };
        let in_flight = main.in_flight.take().expect("polled above");
        match result {
            Ok(picture) => {
                let to = (picture.width(), picture.height());
                let wanted = |r: &EvidenceRequest| {
                    requests
                        .iter()
                        .any(|w| (&w.case_id, w.kind) == (&r.case_id, r.kind))
                };
                let requests = in_flight
                    .requests
                    .into_iter()
                    .filter(wanted)
                    .map(|mut r| {
                        r.bbox = scale_box(r.bbox, in_flight.size, to);
                        r.crop = r.crop.map(|c| scale_box(c, in_flight.size, to));
                        r
                    })
                    .collect();
                Drawing::Main {
                    detections: scale_detections(&in_flight.detections, in_flight.size, to),
                    picture,
                    requests,
                }
            }
            Err(error) => {
                tracing::warn!(
                    camera = self.camera_id,
                    %error,
                    "no main-stream picture for evidence: drawing it on the analysed sub-stream frame"
                );
                Drawing::Sample {
                    requests,
                    fallback: Some(format!("main stream: {error}")),
                }
            }
        }
    }

    /// The missing images this sample at `ts` is to provide: those of cases the engine
    /// still holds (a deleted candidate needs none), showing the case's box where this
    /// sample saw it.
    fn images_at(&self, ts: f64) -> Vec<EvidenceRequest> {
        self.missing
            .iter()
            .filter_map(|request| {
                let case = self
                    .cases
                    .cases()
                    .iter()
                    .find(|c| c.id == request.case_id)?;
                let mut request = request.clone();
                if request.ts < ts && request.kind != EvidenceKind::After && case.last_seen == ts {
                    request.bbox = case.bbox;
                    request.crop = request.crop.map(|_| case.bbox);
                }
                request.ts = ts;
                Some(request)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::cases::OperatorAction;
    use crate::pipeline::test_support::street_sample;
    use crate::store::test_db::{for_each_backend, TestDb};

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
    fn van_seen_twice(db: &TestDb) -> (Filing, Frame, Store) {
        let (camera, input, mut frame) = street_sample();
        let mut store = db.open();
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

    /// Renames a table of `db` behind the store's back: its writes fail until the table
    /// has its name back.
    fn rename_table(db: &TestDb, from: &str, to: &str) {
        db.batch(&format!("ALTER TABLE {from} RENAME TO {to}"));
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
        // Evidence files beside SQLite (with PostgreSQL they move into the database).
        let db = TestDb::sqlite();
        let (mut filing, mut frame, mut store) = van_seen_twice(&db);
        let id = &store.cases(&CaseFilter::default()).unwrap()[0].id;
        let evidence = store.evidence_dir();
        let candidate = [format!("{id}/first-crop.jpg"), format!("{id}/first.jpg")];
        assert_eq!(images(&evidence), candidate);

        // At 30 s the van's dwell is reached: filing it wants new images.
        rename_table(&db, "history", "history_away");
        let err = filing.on_frame(&mut store, at(&mut frame, 30.0), &van());
        assert!(matches!(err, Err(PipelineError::Store(_))), "{err:?}");
        assert_eq!(images(&evidence), candidate);
        assert_eq!(store.evidence(id).unwrap().len(), 2);
    }

    #[test]
    fn a_deleted_candidates_images_stay_until_the_commit() {
        // Evidence files beside SQLite (with PostgreSQL they move into the database).
        let db = TestDb::sqlite();
        let (mut filing, mut frame, mut store) = van_seen_twice(&db);
        let id = store.cases(&CaseFilter::default()).unwrap()[0].id.clone();
        let evidence = store.evidence_dir();
        assert_eq!(images(&evidence).len(), 2);

        // Gone for the 8 s window: the candidate is deleted, but the commit fails.
        rename_table(&db, "history", "history_away");
        assert!(filing
            .on_frame(&mut store, at(&mut frame, 20.0), &[])
            .is_err());
        assert!(store.case(&id).unwrap().is_some());
        assert_eq!(images(&evidence).len(), 2, "the rows still name them");

        // After a restart with a healthy database the deletion commits.
        rename_table(&db, "history_away", "history");
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
        for_each_backend(|db| {
            let (mut filing, mut frame, mut store) = van_seen_twice(&db);
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
        });
    }

    #[test]
    fn after_a_failed_write_the_next_frame_starts_from_the_store() {
        for_each_backend(|db| {
            let (mut filing, mut frame, mut store) = van_seen_twice(&db);
            rename_table(&db, "history", "history_away");
            assert!(filing
                .on_frame(&mut store, at(&mut frame, 30.0), &van())
                .is_err());
            rename_table(&db, "history_away", "history");
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
        });
    }

    #[test]
    fn a_write_refused_for_an_operators_change_is_filed_again_from_the_store() {
        for_each_backend(|db| {
            let (mut filing, mut frame, mut store) = van_seen_twice(&db);
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
        });
    }

    /// An operator acting as fast as they can while frames are filed: no operator step is
    /// ever overwritten (the case's transition count always matches its history).
    #[test]
    fn operators_acting_during_filing_lose_nothing() {
        for_each_backend(|db| {
            let (mut filing, mut frame, mut store) = van_seen_twice(&db);
            filing
                .on_frame(&mut store, at(&mut frame, 30.0), &van())
                .unwrap();
            let id = store.cases(&CaseFilter::default()).unwrap()[0].id.clone();
            let operator = {
                let id = id.clone();
                let path = db.location().to_path_buf();
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
        });
    }

    /// What a run left in the store, ignoring when images were drawn: each case's id,
    /// status and transitions with its history, evidence kinds and events.
    fn outcome(store: &Store) -> Vec<String> {
        let mut rows = Vec::new();
        for case in store.cases(&CaseFilter::default()).unwrap() {
            rows.push(format!(
                "{} {:?} {}",
                case.id, case.status, case.transitions
            ));
            for h in store.history(&case.id).unwrap() {
                rows.push(format!(
                    "  {:?} → {:?} at {} by {}",
                    h.from, h.to, h.ts, h.actor
                ));
            }
            let mut images: Vec<_> = store.evidence(&case.id).unwrap();
            images.sort_by(|a, b| a.kind.cmp(&b.kind));
            for e in images {
                let image = store.evidence_image(&case.id, &e.kind).unwrap();
                let present = image.is_some_and(|jpeg| !jpeg.is_empty());
                rows.push(format!("  image {} present {present}", e.kind));
            }
        }
        for e in store.pending("test", 100).unwrap() {
            rows.push(format!("event {} {}", e.idempotency_key, e.kind));
        }
        rows
    }

    /// The van parked until 34 s (filed at 30 s), gone from 36 s (closed at 44 s): the
    /// samples' times and whether the van is in them.
    const VAN_PARKS_AND_LEAVES: [(f64, bool); 10] = [
        (0.0, true),
        (10.0, true),
        (20.0, true),
        (30.0, true),
        (32.0, true),
        (34.0, true),
        (36.0, false),
        (44.0, false),
        (46.0, false),
        (100.0, false),
    ];

    /// Files `samples` (time, van there) while the store refuses writes at the times in
    /// `refused`: what the store holds then, the failed writes and the steps counted.
    fn run_refusing(
        db: TestDb,
        samples: &[(f64, bool)],
        refused: std::ops::Range<f64>,
    ) -> (Vec<String>, u32, FilingStats) {
        let (camera, input, mut frame) = street_sample();
        let mut store = db.open();
        let mut filing = Filing::new(&camera, Categories::builtin(), &store, input, 0.0).unwrap();
        let mut failures = 0;
        let mut refusing = false;
        for &(t, van_there) in samples {
            if refused.contains(&t) != refusing {
                refusing = !refusing;
                let (from, to) = if refusing {
                    ("history", "history_away")
                } else {
                    ("history_away", "history")
                };
                rename_table(&db, from, to);
            }
            let seen = if van_there { van() } else { Vec::new() };
            match filing.on_frame(&mut store, at(&mut frame, t), &seen) {
                Ok(()) => {}
                Err(PipelineError::Store(StoreError::Sql { .. } | StoreError::Postgres { .. })) => {
                    failures += 1
                }
                Err(e) => panic!("{e}"),
            }
            if refusing && failures > 0 {
                assert!(filing.pending_rows() > 0, "kept in memory at {t}");
            }
        }
        assert_eq!(filing.pending_rows(), 0);
        assert_eq!(filing.missing_images(), 0);
        (outcome(&store), failures, filing.stats)
    }

    #[test]
    fn changes_the_store_refused_are_written_later_with_nothing_lost_or_doubled() {
        for_each_backend(|db| {
            let postgres = db.is_postgres();
            let fresh = move || {
                if postgres {
                    TestDb::postgres()
                } else {
                    TestDb::sqlite()
                }
            };
            let (healthy, none, stats) = run_refusing(db, &VAN_PARKS_AND_LEAVES, 0.0..0.0);
            assert_eq!(none, 0);
            // Refused from the filing through the close.
            let (recovered, failures, recovered_stats) =
                run_refusing(fresh(), &VAN_PARKS_AND_LEAVES, 30.0..46.0);
            assert!(failures >= 1);
            assert_eq!(recovered, healthy);
            assert_eq!(recovered_stats, stats);
            assert!(
                healthy.iter().any(|r| r.ends_with(":filed:2 case.filed"))
                    && healthy.iter().any(|r| r.ends_with(":closed:4 case.closed")),
                "{healthy:#?}"
            );
        });
    }

    #[test]
    fn a_candidate_that_came_and_went_while_the_store_refused_leaves_no_rows() {
        for_each_backend(|db| {
            let postgres = db.is_postgres();
            let fresh = move || {
                if postgres {
                    TestDb::postgres()
                } else {
                    TestDb::sqlite()
                }
            };
            let samples = [(0.0, true), (10.0, true), (20.0, false), (30.0, false)];
            let (healthy, _, stats) = run_refusing(db, &samples, 0.0..0.0);
            assert_eq!(stats.candidates, 1);
            let (recovered, failures, _) = run_refusing(fresh(), &samples, 10.0..30.0);
            assert!(failures >= 1);
            assert_eq!(recovered, healthy);
            assert!(healthy.is_empty(), "{healthy:?}");
        });
    }

    #[test]
    fn a_retry_without_samples_writes_what_the_store_refused() {
        for_each_backend(|db| {
            let (mut filing, mut frame, mut store) = van_seen_twice(&db);
            rename_table(&db, "outbox", "outbox_away");
            assert!(filing
                .on_frame(&mut store, at(&mut frame, 30.0), &van())
                .is_err());
            let pending = filing.pending_rows();
            assert!(pending > 0);
            rename_table(&db, "outbox_away", "outbox");
            filing
                .retry(&mut store, 30.0 + RETRY_CAP.as_secs_f64())
                .unwrap();
            assert_eq!(filing.pending_rows(), 0);
            let events = store.pending("test", 10).unwrap();
            assert_eq!(events.len(), 1);
            assert_eq!(events[0].kind, "case.filed");
            // Written without a sample, the filed image is drawn from the next one.
            assert_eq!(filing.missing_images(), 1);
            filing
                .on_frame(&mut store, at(&mut frame, 50.0), &van())
                .unwrap();
            let id = &store.cases(&CaseFilter::default()).unwrap()[0].id;
            let kinds: Vec<_> = store
                .evidence(id)
                .unwrap()
                .into_iter()
                .map(|e| (e.kind, e.ts))
                .collect();
            assert!(kinds.contains(&("filed".to_string(), 50.0)), "{kinds:?}");
        });
    }

    #[test]
    fn an_image_that_cannot_be_written_is_missing_until_a_later_sample_provides_it() {
        for_each_backend(|db| {
            let (mut filing, mut frame, mut store) = van_seen_twice(&db);
            let id = store.cases(&CaseFilter::default()).unwrap()[0].id.clone();
            // A folder where the filed image's partial file goes: it cannot be written.
            let blocker = store.evidence_dir().join(&id).join("filed.jpg.partial");
            std::fs::create_dir(&blocker).unwrap();
            let err = filing.on_frame(&mut store, at(&mut frame, 30.0), &van());
            assert!(matches!(err, Err(PipelineError::Evidence(_))), "{err:?}");
            // The case is filed with its history and event all the same.
            assert_eq!(store.case(&id).unwrap().unwrap().status, Status::Filed);
            assert_eq!(store.pending("test", 10).unwrap().len(), 1);
            let kinds = |store: &Store| -> Vec<String> {
                let images = store.evidence(&id).unwrap().into_iter();
                images.map(|e| e.kind).collect()
            };
            assert_eq!(kinds(&store), ["first", "first-crop"]);
            assert_eq!(filing.missing_images(), 1);

            std::fs::remove_dir(&blocker).unwrap();
            filing
                .on_frame(&mut store, at(&mut frame, 32.0), &van())
                .unwrap();
            assert_eq!(
                kinds(&store),
                ["first", "first-crop", "filed", "filed-crop"]
            );
            assert_eq!(filing.missing_images(), 0);
            for image in store.evidence(&id).unwrap() {
                let jpeg = store.evidence_image(&id, &image.kind).unwrap().unwrap();
                assert!(jpeg.starts_with(&[0xff, 0xd8]), "{} is a JPEG", image.kind);
            }
            assert_eq!(store.history(&id).unwrap().len(), 2);
        });
    }

    /// The source stored on each of the case's evidence rows, with the fallback reason.
    fn sources(store: &Store, id: &str) -> Vec<(String, Option<EvidenceSource>, Option<String>)> {
        let rows = store.evidence(id).unwrap().into_iter();
        rows.map(|e| (e.kind, e.source, e.fallback_reason))
            .collect()
    }

    #[test]
    fn evidence_rows_say_which_picture_the_images_were_drawn_on() {
        for_each_backend(|db| {
            // A camera analysed on its only stream: the analysed frame, as intended.
            let (_, _, store) = van_seen_twice(&db);
            let id = store.cases(&CaseFilter::default()).unwrap()[0].id.clone();
            for (kind, source, reason) in sources(&store, &id) {
                assert_eq!(
                    (source, reason),
                    (Some(EvidenceSource::Analysed), None),
                    "{kind}"
                );
            }
        });
        for_each_backend(|db| {
            // A sub-stream camera whose main stream refuses connections: the images fall
            // back to the analysed frame, and the rows say so and why.
            let runtime = tokio::runtime::Runtime::new().unwrap();
            let stats = Arc::new(crate::evidence::GrabStats::default());
            let grabs = MainStreamGrabs::new(
                runtime.handle().clone(),
                1,
                Duration::from_secs(10),
                crate::source::RtspOptions::default(),
                stats.clone(),
            );
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let (camera, input, mut frame) = street_sample();
            let mut store = db.open();
            let mut filing = Filing::new(&camera, Categories::builtin(), &store, input, 0.0)
                .unwrap()
                .with_main_stream(Arc::new(grabs), format!("rtsp://127.0.0.1:{port}/main"));
            let mut t = 0.0;
            let id = loop {
                filing
                    .on_frame(&mut store, at(&mut frame, t), &van())
                    .unwrap();
                let cases = store.cases(&CaseFilter::default()).unwrap();
                if let Some(case) = cases.first() {
                    if !store.evidence(&case.id).unwrap().is_empty() {
                        break case.id.clone();
                    }
                }
                assert!(t < 60.0, "no evidence after {t} s of samples");
                std::thread::sleep(Duration::from_millis(100));
                t += 1.0;
            };
            assert!(stats.fallback.get() >= 1);
            let rows = sources(&store, &id);
            assert_eq!(rows.len(), 2, "{rows:?}");
            for (kind, source, reason) in rows {
                assert_eq!(source, Some(EvidenceSource::Fallback), "{kind}");
                let reason = reason.unwrap_or_default();
                assert!(
                    reason.starts_with("main stream: ") && reason.contains(&port.to_string()),
                    "{kind}: {reason}"
                );
            }
        });
    }
}
