//! What the HTTP API sees of the running daemon: readiness, camera status, the cameras'
//! latest pictures and metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::camera::{CameraProblem, CameraState, LiveCamera};
use super::{read, Registry, Snapshot};
use crate::api::{CameraView, DaemonView};
use crate::decode::ViewSignature;
use crate::metrics::Exposition;
use crate::pipeline::{Metrics, QueueDepths, StoreHealth};

pub(super) struct LiveView {
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub depths: QueueDepths,
    pub ready: CameraReadiness,
}

/// Ready only while enough of the cameras are healthy (`api.ready_min_healthy`).
pub(super) struct CameraReadiness {
    pub min_healthy: f64,
    /// Cameras this new count as healthy: they may still be connecting.
    pub grace: Duration,
}

impl CameraReadiness {
    fn check(&self, cameras: &[Arc<LiveCamera>]) -> Result<(), String> {
        let watched: Vec<_> = cameras
            .iter()
            .filter(|c| c.state() != CameraState::Stopped)
            .collect();
        let healthy = watched
            .iter()
            .filter(|c| c.is_healthy() || c.joined.elapsed() < self.grace)
            .count();
        let total = watched.len();
        if total == 0 || healthy as f64 >= self.min_healthy * total as f64 {
            return Ok(());
        }
        Err(format!(
            "only {healthy} of {total} cameras are healthy (api.ready_min_healthy is {})",
            self.min_healthy
        ))
    }
}

impl DaemonView for LiveView {
    fn readiness(&self) -> Result<(), String> {
        if let Some(reason) = self.metrics.store.not_ready() {
            return Err(reason);
        }
        match read(&self.registry.not_ready).clone() {
            Some(reason) => Err(reason),
            None => self.ready.check(&self.registry.cameras()),
        }
    }

    fn cameras(&self) -> Vec<CameraView> {
        let cameras = self.registry.cameras();
        // Looked up at once, so the supervisor waits for the patrol lock only briefly.
        let visits: Vec<_> = {
            let patrol = self.registry.patrol();
            cameras.iter().map(|c| patrol.stats(c.id())).collect()
        };
        let now = Instant::now();
        let cluster = read(&self.registry.cluster);
        let me = cluster.as_ref().map(|c| c.replica.clone());
        let mut views: Vec<CameraView> = cameras
            .iter()
            .zip(visits)
            .map(|(c, visits)| {
                let (feed, counters) = (&c.feed, &c.feed.counters);
                CameraView {
                    id: c.id().to_string(),
                    name: c.config().info.name.clone(),
                    state: c.state(),
                    problem: c.problem(),
                    stream: c.shown_url.clone(),
                    priority: c.config().priority,
                    last_frame_at: feed.last_frame_at(),
                    sampled_fps: feed.sampled_fps(),
                    last_error: feed.last_error(),
                    connection_attempts: c.connection_attempts.get(),
                    reconnects: c.reconnects.get(),
                    consecutive_failures: c.consecutive_failures(),
                    frames_received: counters.frames_received.get(),
                    frames_decoded: counters.frames_decoded.get(),
                    frames_analysed: counters.frames_analysed.get(),
                    frames_skipped: counters.frames_skipped.get(),
                    visits: visits.map_or(0, |v| v.visits),
                    revisit_interval_s: visits.map(|v| v.worst_gap(now).as_secs_f64()),
                    since_visit_s: visits
                        .map(|v| now.saturating_duration_since(v.waiting_since).as_secs_f64()),
                    // Three decimals say all there is to say.
                    view_likeness: feed
                        .view_likeness()
                        .map(|l| (f64::from(l) * 1000.0).round() / 1000.0),
                    replica: me.clone(),
                }
            })
            .collect();
        if let Some(cluster) = cluster.as_ref() {
            views.extend(cluster.elsewhere.iter().map(|c| CameraView {
                state: CameraState::Elsewhere,
                priority: c.priority,
                replica: Some(c.owner.clone()),
                ..CameraView::unwatched(&c.id, &c.name)
            }));
            views.sort_by(|a, b| a.id.cmp(&b.id));
        }
        views
    }

    fn replicas(&self) -> Option<Vec<crate::cluster::ReplicaLoad>> {
        read(&self.registry.cluster)
            .as_ref()
            .map(|c| c.replicas.clone())
    }

    fn snapshot(&self, camera_id: &str) -> Option<Snapshot> {
        self.registry.snapshots.get(camera_id)
    }

    fn rebase_view(&self, camera_id: &str) -> Option<Option<ViewSignature>> {
        let cameras = self.registry.cameras();
        let camera = cameras.iter().find(|c| c.id() == camera_id)?;
        Some(camera.feed.rebase_view())
    }

    fn metrics_text(&self) -> String {
        let m = &self.metrics;
        let cameras = self.registry.cameras();
        let mut out = Exposition::default();
        let cluster = read(&self.registry.cluster);
        let elsewhere = cluster.as_ref().map_or(0, |c| c.elsewhere.len());
        let by_state: Vec<(&str, f64)> = CameraState::ALL
            .iter()
            .map(|&s| {
                let n = match s {
                    CameraState::Elsewhere => elsewhere,
                    s => cameras.iter().filter(|c| c.state() == s).count(),
                };
                (s.as_str(), n as f64)
            })
            .collect();
        out.labelled(
            "cgbot_cameras",
            "gauge",
            "Configured cameras by state.",
            "state",
            &by_state,
        );
        let by_problem: Vec<(&str, f64)> = CameraProblem::ALL
            .iter()
            .map(|&p| {
                let n = cameras.iter().filter(|c| c.problem() == Some(p)).count();
                (p.as_str(), n as f64)
            })
            .collect();
        out.labelled(
            "cgbot_camera_problems",
            "gauge",
            "Cameras by what is wrong with them or their picture (see a camera's last_error).",
            "problem",
            &by_problem,
        );
        out.labelled(
            "cgbot_queue_depth",
            "gauge",
            "Items waiting between stages.",
            "queue",
            &[
                ("units", m.units_waiting() as f64),
                ("frames", self.depths.frames() as f64),
                ("detections", self.depths.detected() as f64),
            ],
        );
        for (name, help, counter) in [
            (
                "cgbot_frames_received_total",
                "Access units received from cameras.",
                &m.frames_received,
            ),
            (
                "cgbot_frames_decoded_total",
                "Pictures decoded.",
                &m.frames_decoded,
            ),
            (
                "cgbot_frames_analysed_total",
                "Frames through detection, rules and cases.",
                &m.frames_analysed,
            ),
            (
                "cgbot_connection_attempts_total",
                "RTSP handshakes started, first connections and retries alike.",
                &m.connection_attempts,
            ),
            (
                "cgbot_reconnects_total",
                "Camera sessions started after one that delivered video (a working stream lost and re-established).",
                &m.reconnects,
            ),
            ("cgbot_detections_total", "Objects detected.", &m.detections),
            (
                "cgbot_inference_errors_total",
                "Batches whose inference failed.",
                &m.inference_errors,
            ),
            ("cgbot_batches_total", "Inference batches run.", &m.batches),
            (
                "cgbot_batch_frames_total",
                "Frames in inference batches (divide by batches for the mean batch size).",
                &m.batch_frames,
            ),
            ("cgbot_cases_filed_total", "Cases filed.", &m.cases_filed),
            (
                "cgbot_cases_closed_total",
                "Cases closed as auto-verified.",
                &m.cases_closed,
            ),
            (
                "cgbot_patrol_visits_total",
                "Patrol visits started.",
                &m.patrol_visits,
            ),
            (
                "cgbot_rotations_total",
                "Camera list changes applied while running.",
                &m.rotations,
            ),
            (
                "cgbot_rotation_errors_total",
                "Camera list changes refused as invalid.",
                &m.rotation_errors,
            ),
        ] {
            out.counter(name, help, counter.get());
        }
        out.labelled(
            "cgbot_frames_skipped_total",
            "counter",
            "Units and frames left out to stay fresh, by the stage that skipped them: receive (intake full), decode (a newer keyframe of the camera waiting, its queue full, or its patrol visit over), detect (replaced by the camera's newer frame, or stale).",
            "stage",
            &[
                ("receive", m.skipped_receive.get() as f64),
                ("decode", m.skipped_decode.get() as f64),
                ("detect", m.skipped_detect.get() as f64),
            ],
        );
        out.histograms(
            "cgbot_stage_seconds",
            "Time per call of each pipeline stage (decode per access unit, inference per batch).",
            "stage",
            &[
                ("decode", &m.decode),
                ("preprocess", &m.preprocess),
                ("inference", &m.inference),
                ("postprocess", &m.postprocess),
                ("filing", &m.filing),
            ],
        );
        let grabs = &m.evidence_grabs;
        out.labelled(
            "cgbot_evidence_grabs_total",
            "counter",
            "Evidence pictures of cameras analysed on their sub stream: main (a main-stream keyframe) or fallback (the grab failed or timed out; drawn on the sub-stream frame).",
            "result",
            &[
                ("main", grabs.main.get() as f64),
                ("fallback", grabs.fallback.get() as f64),
            ],
        );
        out.histogram(
            "cgbot_evidence_grab_seconds",
            "Time of one main-stream evidence grab (connect, first keyframe, decode), or until it gave up.",
            &grabs.seconds,
        );
        out.histogram(
            "cgbot_frame_latency_seconds",
            "From an access unit's arrival to its frame's cases being committed.",
            &m.latency,
        );
        let snapshots = &self.registry.snapshots;
        out.gauge(
            "cgbot_snapshots",
            "Cameras whose latest picture is kept for the console.",
            snapshots.len() as f64,
        );
        out.gauge(
            "cgbot_snapshot_bytes",
            "Memory the kept pictures are charged (the budget is snapshot_budget_mib).",
            snapshots.bytes() as f64,
        );
        out.counter(
            "cgbot_snapshots_evicted_total",
            "Pictures dropped to stay within the snapshot budget.",
            snapshots.evicted.get(),
        );
        out.counter(
            "cgbot_snapshot_errors_total",
            "Pictures that could not be made.",
            snapshots.failures.get(),
        );
        out.histogram(
            "cgbot_snapshot_seconds",
            "Time to make one camera picture (scale down and encode).",
            &snapshots.making,
        );
        let worst_revisit = self.registry.patrol().worst_revisit(Instant::now());
        out.gauge(
            "cgbot_patrol_revisit_max_seconds",
            "Longest time between two visits of any patrolled camera, or since the last (or joining) of one still waiting.",
            worst_revisit.map_or(0.0, |d| d.as_secs_f64()),
        );
        if let Some(cluster) = cluster.as_ref() {
            out.gauge(
                "cgbot_cluster_replicas",
                "Live replicas sharing the database, this one included, as of its last heartbeat.",
                cluster.replicas.len() as f64,
            );
            out.gauge(
                "cgbot_cluster_cameras_owned",
                "Configured cameras this replica owns.",
                cameras.len() as f64,
            );
            out.counter(
                "cgbot_cluster_handoffs_total",
                "Cameras this replica took over from another (a peer left, failed or was stopped) after its first assignment.",
                cluster.handoffs,
            );
        }
        drop(cluster);
        store_metrics(&mut out, &m.store);
        out.finish()
    }
}

/// Whether the filing's writes reach the store.
fn store_metrics(out: &mut Exposition, store: &StoreHealth) {
    out.counter(
        "cgbot_store_write_failures_total",
        "Writes of case changes or evidence images that failed (full disk, I/O error, read-only or locked database); the changes are kept in memory and retried.",
        store.write_failures.get(),
    );
    out.gauge(
        "cgbot_store_pending_changes",
        "Rows of case changes (cases, history, events) waiting in memory for the store.",
        store.pending_rows() as f64,
    );
    out.gauge(
        "cgbot_evidence_missing",
        "Evidence images not written yet, wanted from their cameras' next samples.",
        store.missing_images() as f64,
    );
    let backlog = store.outbox_pending();
    let by_sink: Vec<(&str, f64)> = backlog
        .iter()
        .map(|(sink, n)| (sink.as_str(), *n as f64))
        .collect();
    out.labelled(
        "cgbot_outbox_pending",
        "gauge",
        "Case events a sink has not acknowledged yet (after its last delivery round).",
        "sink",
        &by_sink,
    );
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::{Camera, PatrolConfig, RtspSettings};
    use crate::pipeline::detection::FrameQueue;
    use crate::pipeline::live::Snapshots;
    use crate::pipeline::{QueueDepths, QueuePolicy};

    /// A view of cameras `cam-0…` in the given states, all joined just now.
    fn view(states: &[CameraState], grace: Duration) -> LiveView {
        let registry = Arc::new(Registry::new(
            PatrolConfig::default(),
            Arc::new(Snapshots::new(1 << 20)),
        ));
        let settings = RtspSettings::default();
        let cameras = states
            .iter()
            .enumerate()
            .map(|(i, &state)| {
                let mut config = Camera::unconfigured(&format!("cam-{i}"));
                config.main_stream = Some(format!("rtsp://cam/{i}"));
                let camera = Arc::new(LiveCamera::new(config, 1, &settings));
                camera.set_state(state);
                (camera.id().to_string(), camera)
            })
            .collect();
        registry.set(cameras);
        let metrics = Arc::new(Metrics::default());
        LiveView {
            registry,
            depths: QueueDepths {
                frames: Arc::new(FrameQueue::new(QueuePolicy::Freshness, 1)),
                metrics: metrics.clone(),
            },
            metrics,
            ready: CameraReadiness {
                min_healthy: 0.5,
                grace,
            },
        }
    }

    #[test]
    fn readiness_needs_a_share_of_healthy_cameras_after_the_grace() {
        use CameraState::*;
        let no_grace = Duration::ZERO;
        let reason = view(&[Streaming, Backoff, Failed, Connecting], no_grace)
            .readiness()
            .unwrap_err();
        assert_eq!(
            reason,
            "only 1 of 4 cameras are healthy (api.ready_min_healthy is 0.5)"
        );
        // Half is enough; patrolled cameras between visits and stopped ones do not count against.
        assert!(view(&[Streaming, Waiting, Failed, Backoff], no_grace)
            .readiness()
            .is_ok());
        assert!(view(&[Streaming, Stopped, Stopped, Failed], no_grace)
            .readiness()
            .is_ok());
        // Cameras still within their grace are not judged yet.
        let young = view(&[Connecting, Backoff, Failed], Duration::from_secs(60));
        assert!(young.readiness().is_ok());
        assert!(view(&[], no_grace).readiness().is_ok());
    }

    #[test]
    fn metrics_count_cameras_by_state_and_by_problem() {
        use CameraState::*;
        let view = view(&[Streaming, Streaming, Failed], Duration::ZERO);
        // A camera without a stream URL is failed and misconfigured from the start.
        let mut config = Camera::unconfigured("cam-9");
        config.main_stream = None;
        let unconfigured = Arc::new(LiveCamera::new(config, 1, &RtspSettings::default()));
        let mut cameras: BTreeMap<String, Arc<LiveCamera>> = view
            .registry
            .cameras()
            .into_iter()
            .map(|c| (c.id().to_string(), c))
            .collect();
        cameras.insert("cam-9".into(), unconfigured);
        view.registry.set(cameras);
        view.metrics.store.set_outbox_pending("webhook", 3);
        let text = view.metrics_text();
        for line in [
            "cgbot_cameras{state=\"streaming\"} 2",
            "cgbot_cameras{state=\"failed\"} 2",
            "cgbot_cameras{state=\"backoff\"} 0",
            "cgbot_camera_problems{problem=\"misconfigured\"} 1",
            "cgbot_camera_problems{problem=\"unauthorized\"} 0",
            "cgbot_connection_attempts_total 0",
            "cgbot_reconnects_total 0",
            "cgbot_outbox_pending{sink=\"webhook\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
