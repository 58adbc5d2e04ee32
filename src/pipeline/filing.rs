//! The track → rules → cases end of the path for one camera: sightings from the rules
//! stage become case changes, committed to the store one analysed frame at a time.

use crate::cases::{CaseEngine, Categories, Status};
use crate::config::Camera;
use crate::decode::Frame;
use crate::detect::Detection;
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
            &store.evidence_dir(),
        )?;
        Ok(Self {
            rules: RuleEngine::new(
                camera.zones.clone(),
                camera.tracker.clone(),
                camera.utc_offset,
            ),
            cases,
            model_input,
            base_time,
            stats: FilingStats::default(),
        })
    }

    /// One analysed frame: its changes are committed in one transaction before returning.
    pub fn on_frame(
        &mut self,
        store: &mut Store,
        frame: &Frame,
        detections: &[Detection],
    ) -> Result<(), PipelineError> {
        let ts = self.base_time + frame.pts;
        let sightings = self.rules.observe(ts, frame, detections, &self.model_input);
        let changes = self.cases.process(ts, &sightings, frame, detections)?;
        if changes.is_empty() {
            return Ok(());
        }
        store.write(&changes)?;
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
