//! The last stage, on one thread: each detected frame is filed (track → rules → cases →
//! store) for its feed's camera, then handed to the command's [`Outlet`] — printing and
//! annotating for `replay` and `detect`, each camera's latest picture for the daemon
//! ([`super::live::SnapshotOutlet`]), whose figures the stage keeps itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::{Feed, Filing, FilingStats, Metrics, PipelineError, QueuePolicy, Sample};
use crate::api::CameraProblem;
use crate::cases::Categories;
use crate::decode::Frame;
use crate::detect::Detection;
use crate::evidence::MainStreamGrabs;
use crate::models::InputSpec;
use crate::store::{ReferenceView, Store, StoreError, LEARNED};

/// A frame with its detections, on its way to filing.
pub(super) type Detected = (Sample, Vec<Detection>);

/// Where cases are filed; without one, frames are only detected.
pub struct FilingSetup {
    pub store: Store,
    pub categories: Categories,
    /// Main-stream pictures for the evidence of cameras analysed on their sub stream;
    /// without it (replay, detect) evidence is drawn on the analysed frames.
    pub grabs: Option<Arc<MainStreamGrabs>>,
}

/// One analysed frame, as the outlet sees it after its cases were committed.
pub struct Analysed<'a> {
    pub feed: &'a Arc<Feed>,
    pub frame: &'a Frame,
    /// Unix seconds of the frame.
    pub ts: f64,
    pub detections: &'a [Detection],
}

pub type OutletError = Box<dyn std::error::Error + Send + Sync>;

/// The command's end of the pipeline. Called on the filing thread for every analysed
/// frame, in order within a feed; an error ends the run (with back-pressure) or is
/// recorded on the feed (with freshness).
pub trait Outlet: Send + 'static {
    fn analysed(&mut self, frame: &Analysed<'_>) -> Result<(), OutletError>;

    /// How many cases this outlet's frames filed, by step, when the run ends.
    fn filed(&mut self, _feed: &Feed, _stats: FilingStats) {}
}

/// Frames filed and nothing more.
impl Outlet for () {
    fn analysed(&mut self, _frame: &Analysed<'_>) -> Result<(), OutletError> {
        Ok(())
    }
}

/// How often filing state of stopped feeds (cameras removed by a rotation) is dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// How often case changes the store refused are retried for cameras that send no frames,
/// and the store's health is brought up to date.
const RETRY_EVERY: Duration = Duration::from_secs(1);

pub(super) fn filing_worker<O: Outlet>(
    input: Receiver<Detected>,
    mut setup: Option<FilingSetup>,
    model_input: InputSpec,
    mut outlet: O,
    policy: QueuePolicy,
    metrics: Arc<Metrics>,
) -> (O, Result<(), PipelineError>) {
    // Per-camera state survives patrol visits (dwell rules work across them) and is
    // rebuilt for a camera's new generation. Its cases stay in the store either way.
    let mut filings: HashMap<String, (Arc<Feed>, Filing)> = HashMap::new();
    let mut last_sweep = Instant::now();
    let mut last_retry = Instant::now();
    loop {
        let (sample, mut detections) = match input.recv_timeout(RETRY_EVERY) {
            Ok(detected) => detected,
            Err(RecvTimeoutError::Timeout) => {
                retry_refused(&mut filings, setup.as_mut(), &metrics);
                last_retry = Instant::now();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        metrics.frames_filed.inc();
        let feed = &sample.feed;
        if feed.is_stopped() {
            continue;
        }
        let started = Instant::now();
        if let Some(setup) = setup.as_mut() {
            keep_reference_view(feed, &mut setup.store);
        }
        let ts = sample.ts();
        // A frozen or blank picture says nothing about the street: it neither files nor
        // verifies (closes) a case.
        let filed = match setup.as_mut() {
            Some(setup) if sample.shows_the_scene => {
                file(&mut filings, setup, &model_input, &sample, &mut detections)
            }
            Some(_) => {
                // Other ground: what was learned of the camera's scene is not this one.
                if feed.picture_problem() == Some(CameraProblem::ViewChanged) {
                    if let Some((_, filing)) = filings.get_mut(feed.id()) {
                        filing.forget_scene();
                    }
                }
                Ok(FilingStats::default())
            }
            None => Ok(FilingStats::default()),
        };
        let outcome = filed.and_then(|filed| {
            metrics.cases_filed.add(filed.filed);
            metrics.cases_closed.add(filed.closed);
            outlet
                .analysed(&Analysed {
                    feed,
                    frame: &sample.frame,
                    ts,
                    detections: &detections,
                })
                .map_err(|reason| PipelineError::Output {
                    feed: feed.id().to_string(),
                    reason,
                })
        });
        match outcome {
            Err(e) if policy == QueuePolicy::Backpressure => return (outlet, Err(e)),
            // Kept in memory by the filing and retried; reported once per outage.
            Err(e) if is_write_failure(&e) => metrics.store.failed(&e),
            Err(e) => {
                tracing::error!(camera = feed.id(), error = %e, "filing failed");
                feed.record_error(format!("filing failed: {e}"));
            }
            Ok(()) => {}
        }
        metrics.filing.observe(started.elapsed());
        metrics.latency.observe(sample.received.elapsed());
        metrics.frames_analysed.inc();
        metrics.detections.add(detections.len() as u64);
        feed.record_analysed(ts, detections.len());
        if last_retry.elapsed() > RETRY_EVERY {
            retry_refused(&mut filings, setup.as_mut(), &metrics);
            last_retry = Instant::now();
        }
        if last_sweep.elapsed() > SWEEP_EVERY {
            // A stopped camera's filing goes once the store has its changes.
            filings.retain(|_, (feed, filing)| !feed.is_stopped() || filing.pending_rows() > 0);
            last_sweep = Instant::now();
        }
    }
    if let Some(setup) = setup.as_mut() {
        retry_refused(&mut filings, Some(setup), &metrics);
        let lost: usize = filings.values().map(|(_, f)| f.pending_rows()).sum();
        if lost > 0 {
            tracing::error!(
                rows = lost,
                "stopping with case changes the store did not take; they are found again from the cameras' next samples"
            );
        }
    }
    for (feed, filing) in filings.values() {
        outlet.filed(feed, filing.stats);
    }
    (outlet, Ok(()))
}

/// The store or the evidence folder could not be written: the filing keeps what it could
/// not write and tries again.
fn is_write_failure(e: &PipelineError) -> bool {
    match e {
        PipelineError::Store(StoreError::Conflict { .. }) => false,
        PipelineError::Store(_) | PipelineError::Evidence(_) => true,
        _ => false,
    }
}

/// Retries the writes the store refused of every camera whose retry is due, and brings
/// the store's health up to date.
fn retry_refused(
    filings: &mut HashMap<String, (Arc<Feed>, Filing)>,
    setup: Option<&mut FilingSetup>,
    metrics: &Metrics,
) {
    let Some(setup) = setup else {
        return;
    };
    let now = crate::clock::unix_now();
    let (mut pending, mut missing) = (0, 0);
    for (_, filing) in filings.values_mut() {
        let before = filing.stats;
        if let Err(e) = filing.retry(&mut setup.store, now) {
            metrics.store.failed(&e);
        }
        metrics.cases_filed.add(filing.stats.filed - before.filed);
        metrics
            .cases_closed
            .add(filing.stats.closed - before.closed);
        pending += filing.pending_rows();
        missing += filing.missing_images();
    }
    metrics.store.waiting(pending, missing);
}

/// A feed's first sample restores the camera's reference view from the store (kept by an
/// earlier run, or by the replica that watched the camera before); a view learned since is
/// kept there. A failure costs only a relearned view, so it is logged, not retried.
fn keep_reference_view(feed: &Feed, store: &mut Store) {
    if feed.wants_its_kept_view() {
        match store.reference_view(feed.id()) {
            Ok(Some(kept)) => feed.restore_view(kept.signature),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(camera = feed.id(), error = %e, "reference view not read")
            }
        }
    }
    if let Some(signature) = feed.take_learned_view() {
        let view = ReferenceView {
            signature,
            taken_at: crate::clock::unix_now(),
            taken_by: LEARNED.to_string(),
        };
        if let Err(e) = store.set_reference_view(feed.id(), &view) {
            tracing::warn!(camera = feed.id(), error = %e, "reference view not kept");
        }
    }
}

/// Files one frame for its feed's camera, starting the camera's filing state if needed;
/// the camera's new stationary things join `detections`. Returns the filed and closed
/// counts this frame added.
fn file(
    filings: &mut HashMap<String, (Arc<Feed>, Filing)>,
    setup: &mut FilingSetup,
    model_input: &InputSpec,
    sample: &Sample,
    detections: &mut Vec<Detection>,
) -> Result<FilingStats, PipelineError> {
    let feed = &sample.feed;
    let current = filings
        .get(feed.id())
        .is_some_and(|(known, _)| Arc::ptr_eq(known, feed));
    if !current {
        let filing = Filing::new(
            &feed.camera,
            setup.categories.clone(),
            &setup.store,
            model_input.clone(),
            feed.time_offset,
        )?;
        let filing = match (&setup.grabs, &feed.evidence_stream) {
            (Some(grabs), Some(url)) => filing.with_main_stream(grabs.clone(), url.clone()),
            _ => filing,
        };
        filings.insert(feed.id().to_string(), (feed.clone(), filing));
    }
    let (_, filing) = filings.get_mut(feed.id()).expect("inserted above");
    let before = filing.stats;
    filing.add_new_objects(&sample.frame, detections);
    filing.on_frame(&mut setup.store, &sample.frame, detections)?;
    Ok(FilingStats {
        filed: filing.stats.filed - before.filed,
        closed: filing.stats.closed - before.closed,
        ..FilingStats::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::{Categories, Status};
    use crate::pipeline::test_support::street_sample;
    use crate::store::CaseFilter;

    /// A case of a parked van is filed; then the picture goes black (or freezes) with the
    /// van gone from it: nothing is verified or closed until the scene is seen again.
    #[test]
    fn frames_that_do_not_show_the_scene_neither_file_nor_verify() {
        let dir = tempfile::tempdir().unwrap();
        let (camera, input, _) = street_sample();
        let feed = Arc::new(Feed::new(camera, 0, 0.0));
        let van = vec![Detection {
            label: "truck".into(),
            class: 7,
            score: 0.8,
            bbox: [520.0, 213.0, 640.0, 337.0],
        }];
        // (time, van seen, picture shows the scene)
        let frames = [
            (0.0, true, true),
            (10.0, true, true),
            (40.0, true, true),
            (42.0, false, false),
            (60.0, false, false),
            (300.0, false, false),
        ];
        let run = |frames: &[(f64, bool, bool)]| {
            let (tx, rx) = crossbeam_channel::unbounded();
            for &(t, seen, shows_the_scene) in frames {
                let (_, _, mut frame) = street_sample();
                frame.pts = t;
                let sample = Sample {
                    feed: feed.clone(),
                    epoch: 0,
                    frame,
                    shows_the_scene,
                    received: Instant::now(),
                };
                tx.send((sample, if seen { van.clone() } else { Vec::new() }))
                    .unwrap();
            }
            drop(tx);
            let setup = FilingSetup {
                store: Store::open(&dir.path().join("cases.db")).unwrap(),
                categories: Categories::builtin(),
                grabs: None,
            };
            let policy = QueuePolicy::Freshness;
            let (_, done) =
                filing_worker(rx, Some(setup), input.clone(), (), policy, Arc::default());
            done.unwrap();
            let store = Store::open(&dir.path().join("cases.db")).unwrap();
            store.cases(&CaseFilter::default()).unwrap()
        };
        let cases = run(&frames);
        assert_eq!(cases.len(), 1);
        assert_eq!(
            cases[0].status,
            Status::Filed,
            "a blank picture verifies nothing"
        );
        assert_eq!(cases[0].last_seen, 40.0);
        // The scene again, without the van: now it is verified.
        let cases = run(&[(302.0, false, true), (400.0, false, true)]);
        assert_ne!(cases[0].status, Status::Filed);
    }
}
