//! `cgbot bench --patrol`: many simulated cameras taking turns in the daemon's patrol
//! slots, with the revisit figures a city plans by, the CPU a visit costs, and cases filed
//! on some cameras so main-stream evidence grabs are part of the load.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{
    camera_list, memory_mib, settled_rss, start_pipeline, BenchError, BenchOptions, CpuWindow,
    StageSplit,
};
use crate::sim::SimHandle;

/// What the patrol run adds to [`BenchOptions`].
#[derive(Debug, Clone)]
pub struct PatrolOptions {
    pub cameras: usize,
    /// Cameras visited at once (`[patrol] slots`).
    pub slots: usize,
    /// Every `parked_every`-th camera has a no-parking zone over the clip's parked
    /// vehicles; the others a zone where nothing stands.
    pub parked_every: usize,
    /// How long a vehicle stands in the no-parking zone before its case is filed.
    pub min_dwell: Duration,
}

/// The figures of one patrol run.
#[derive(Debug, Clone, Serialize)]
pub struct PatrolReport {
    pub cameras: usize,
    pub slots: usize,
    pub duration_s: f64,
    pub visits_per_s: f64,
    pub analysed_fps: f64,
    pub cpu_cores: f64,
    /// CPU milliseconds of the whole process per finished visit.
    pub cpu_ms_per_visit: f64,
    /// CPU milliseconds per analysed frame, by stage.
    pub cpu_ms_per_frame: StageSplit,
    pub non_inference_share: f64,
    /// Time between the starts of two visits of a camera, over the gaps that ended in the
    /// measured window and the ones still open at its end.
    pub revisit: Revisits,
    /// Cameras with a no-parking zone over parked vehicles.
    pub parked_cameras: usize,
    /// Cases filed since the daemon started (filing waits `min_dwell` and then some
    /// revisits, so most fall outside a short window).
    pub cases_filed: u64,
    /// Evidence grabs since the daemon started, from the main stream and those that fell
    /// back to the analysed frame.
    pub evidence_grabs_main: u64,
    pub evidence_grabs_fallback: u64,
    pub base_rss_mib: f64,
    pub peak_rss_mib: f64,
}

/// Revisit gaps in seconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Revisits {
    pub gaps: usize,
    pub p50_s: Option<f64>,
    pub p99_s: Option<f64>,
    pub worst_s: Option<f64>,
    /// Cameras not visited at all in the measured window.
    pub cameras_unvisited: usize,
}

/// The one field of the daemon's camera list a revisit needs.
#[derive(Deserialize)]
struct CameraVisits {
    id: String,
    visits: u64,
    since_visit_s: Option<f64>,
}

/// Visit starts seen by polling the daemon's camera list, and the revisit gaps between
/// them. A poll gives each camera's visit count and the time since its last visit started
/// (or since it joined the patrol), so a start is known to the poll's clock, not rounded
/// to the polling period.
#[derive(Debug, Default)]
struct RevisitLog {
    /// Per camera: visits so far and when the last one started (seconds, harness clock).
    last: HashMap<String, (u64, f64)>,
    /// Cameras whose visit count rose in the measured window.
    visited: HashSet<String>,
    gaps: Vec<f64>,
}

impl RevisitLog {
    /// One poll at `now`; gaps that end now are kept when `measuring`. A camera visited
    /// more than once since the last poll counts the mean of those gaps for each.
    fn observe(&mut self, now: f64, cameras: &[CameraVisits], measuring: bool) {
        for camera in cameras {
            let Some(since) = camera.since_visit_s else {
                continue;
            };
            let start = now - since;
            if let Some(&(visits, last_start)) = self.last.get(&camera.id) {
                let new_visits = camera.visits.saturating_sub(visits);
                if new_visits > 0 && measuring {
                    let gap = (start - last_start) / new_visits as f64;
                    self.gaps
                        .extend(std::iter::repeat_n(gap, new_visits as usize));
                    self.visited.insert(camera.id.clone());
                }
            }
            self.last.insert(camera.id.clone(), (camera.visits, start));
        }
    }

    /// The gaps kept, with the waits still open at `now` (a camera waiting longer than
    /// any gap is the worst revisit so far).
    fn revisits(&self, now: f64) -> Revisits {
        let mut all = self.gaps.clone();
        all.extend(self.last.values().map(|&(_, start)| now - start));
        all.sort_by(f64::total_cmp);
        let quantile =
            |q: f64| (!all.is_empty()).then(|| all[((all.len() - 1) as f64 * q).round() as usize]);
        Revisits {
            gaps: self.gaps.len(),
            p50_s: quantile(0.5),
            p99_s: quantile(0.99),
            worst_s: all.last().copied(),
            cameras_unvisited: self.last.len().saturating_sub(self.visited.len()),
        }
    }
}

/// How often the harness reads the camera list: well under a revisit, so each visit's
/// start is seen.
const POLL: Duration = Duration::from_secs(5);

/// The patrol clip: the shared street still (a parked bus, car and van) as a 1080p25 H.264
/// camera main stream, 4 Mbit/s, a keyframe every 2 s, with sensor noise so frames are
/// not free to encode. Made with the FFmpeg CLI into `dir` once.
pub fn parked_street_clip(still: &Path, dir: &Path) -> Result<PathBuf, BenchError> {
    let clip = dir.join("street-parked-1080p-h264.mp4");
    if clip.exists() {
        return Ok(clip);
    }
    if !still.exists() {
        return Err(BenchError::Setup(format!(
            "{}: no such file (the shared samples; or give --clip)",
            still.display()
        )));
    }
    std::fs::create_dir_all(dir)?;
    let partial = dir.join("street-parked-1080p-h264.partial.mp4");
    let out = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-nostdin",
            "-y",
            "-loop",
            "1",
            "-framerate",
            "25",
        ])
        .args(["-t", "30", "-i"])
        .arg(still)
        .args([
            "-vf",
            "scale=1920:1080,setsar=1,noise=alls=4:allf=t+u,format=yuv420p",
        ])
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-b:v", "4M", "-maxrate", "4M",
        ])
        .args([
            "-bufsize",
            "8M",
            "-g",
            "50",
            "-keyint_min",
            "50",
            "-sc_threshold",
            "0",
        ])
        .arg(&partial)
        .output()
        .map_err(|e| BenchError::Setup(format!("cannot run ffmpeg: {e}")))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&partial);
        return Err(BenchError::Setup(format!(
            "ffmpeg could not make {}: {}",
            clip.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    std::fs::rename(&partial, &clip)?;
    Ok(clip)
}

/// A no-parking zone over the whole picture, filing after `dwell`.
fn parked_zone(dwell: Duration) -> String {
    format!(
        "[[camera.zone]]\nid = \"kerb\"\npolygon = [[0, 0], [1, 0], [1, 1], [0, 1]]\n\
         rules = [{{ event = \"illegal_parking\", min_dwell = \"{}s\" }}]\n",
        dwell.as_secs()
    )
}

/// A no-parking zone in the top-left corner of the picture, where nothing stands: the
/// rules run, nothing is filed.
const EMPTY_ZONE: &str =
    "[[camera.zone]]\nid = \"corner\"\npolygon = [[0, 0], [0.1, 0], [0.1, 0.1], [0, 0.1]]\n\
     rules = [{ event = \"illegal_parking\" }]\n";

/// Runs the patrol: warm-up, then `duration` with the camera list polled every
/// [`POLL`]; `progress` gets a status line every 10 s.
pub fn run_patrol(
    sim: &SimHandle,
    options: &BenchOptions,
    patrol: &PatrolOptions,
    progress: &mut dyn FnMut(String),
) -> Result<PatrolReport, BenchError> {
    let parked = |i: usize| patrol.parked_every > 0 && i % patrol.parked_every == 0;
    let list = camera_list(sim, patrol.cameras, |i| {
        if parked(i) {
            parked_zone(patrol.min_dwell)
        } else {
            EMPTY_ZONE.into()
        }
    });
    let extra = format!(
        "[patrol]\nslots = {}\nsamples = 1\nvisit_timeout = \"10s\"\nrevisit = \"60s\"\n",
        patrol.slots
    );
    let name = format!("patrol-{}-cameras", patrol.cameras);
    let pipeline = start_pipeline(options, &name, &list, &extra)?;
    let pid = pipeline.pid();
    let clock = Instant::now();
    let now = || clock.elapsed().as_secs_f64();
    let mut log = RevisitLog::default();
    let poll = |log: &mut RevisitLog, measuring: bool| -> Result<(), BenchError> {
        let text = pipeline.get("/api/cameras")?;
        let cameras: Vec<CameraVisits> = serde_json::from_str(&text)
            .map_err(|e| BenchError::Daemon(format!("unreadable camera list: {e}")))?;
        log.observe(now(), &cameras, measuring);
        Ok(())
    };
    let base_rss = settled_rss(&pipeline, options.warmup)?;
    while clock.elapsed() < options.warmup {
        poll(&mut log, false)?;
        progress(format!(
            "patrol of {} cameras: warming up, {} s left",
            patrol.cameras,
            options.warmup.saturating_sub(clock.elapsed()).as_secs()
        ));
        std::thread::sleep(POLL.min(options.warmup.saturating_sub(clock.elapsed())));
    }
    poll(&mut log, false)?;
    let (before, started) = (pipeline.reading()?, Instant::now());
    let mut last_line = Instant::now();
    while started.elapsed() < options.duration {
        std::thread::sleep(POLL.min(options.duration.saturating_sub(started.elapsed())));
        poll(&mut log, true)?;
        if last_line.elapsed() >= Duration::from_secs(10) {
            last_line = Instant::now();
            let so_far = log.revisits(now());
            let visits = pipeline
                .metrics()?
                .delta(&before.metrics, "cgbot_patrol_visits_total");
            progress(format!(
                "patrol of {} cameras: {:.1} visits/s, revisit p99 {} s, worst {} s, {} s left",
                patrol.cameras,
                visits / started.elapsed().as_secs_f64(),
                shown_seconds(so_far.p99_s),
                shown_seconds(so_far.worst_s),
                options.duration.saturating_sub(started.elapsed()).as_secs()
            ));
        }
    }
    let after = pipeline.reading()?;
    let wall = started.elapsed().as_secs_f64();
    let revisit = log.revisits(now());
    let peak_rss = memory_mib(pid, "VmHWM").unwrap_or(0.0);
    pipeline.stop()?;

    let delta = |key: &str| after.metrics.delta(&before.metrics, key);
    let (analysed, visits) = (
        delta("cgbot_frames_analysed_total"),
        delta("cgbot_patrol_visits_total"),
    );
    let cpu = CpuWindow::split(&before, &after, analysed);
    Ok(PatrolReport {
        cameras: patrol.cameras,
        slots: patrol.slots,
        duration_s: wall,
        visits_per_s: visits / wall,
        analysed_fps: analysed / wall,
        cpu_cores: cpu.total / wall,
        cpu_ms_per_visit: cpu.total * 1000.0 / visits.max(1.0),
        non_inference_share: cpu.non_inference_share(),
        cpu_ms_per_frame: cpu.per_frame,
        revisit,
        parked_cameras: (0..patrol.cameras).filter(|&i| parked(i)).count(),
        cases_filed: after.metrics.get("cgbot_cases_filed_total") as u64,
        evidence_grabs_main: after
            .metrics
            .get("cgbot_evidence_grabs_total{result=\"main\"}") as u64,
        evidence_grabs_fallback: after
            .metrics
            .get("cgbot_evidence_grabs_total{result=\"fallback\"}")
            as u64,
        base_rss_mib: base_rss,
        peak_rss_mib: peak_rss,
    })
}

/// Seconds for a status line or table, `-` when there is no figure.
pub fn shown_seconds(figure: Option<f64>) -> String {
    figure.map_or("-".into(), |s| format!("{s:.1}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn camera(id: &str, visits: u64, since: f64) -> CameraVisits {
        CameraVisits {
            id: id.into(),
            visits,
            since_visit_s: Some(since),
        }
    }

    #[test]
    fn gaps_are_measured_between_visit_starts_seen_in_the_window() {
        let mut log = RevisitLog::default();
        // Warm-up: a visited at 8 s, b not yet visited (joined at 0 s).
        log.observe(10.0, &[camera("a", 1, 2.0), camera("b", 0, 10.0)], false);
        // a visited again at 38 s, b for the first time at 31 s: 30 s and 31 s gaps.
        log.observe(40.0, &[camera("a", 2, 2.0), camera("b", 1, 9.0)], true);
        let r = log.revisits(40.0);
        assert_eq!(r.gaps, 2);
        // The open waits at 40 s (2 s and 9 s) count too, and the worst is b's 31 s.
        assert_eq!(r.worst_s, Some(31.0));
        assert_eq!(r.cameras_unvisited, 0);
    }

    #[test]
    fn a_camera_left_waiting_is_the_worst_revisit_and_counts_as_unvisited() {
        let mut log = RevisitLog::default();
        log.observe(10.0, &[camera("a", 1, 1.0), camera("c", 3, 5.0)], false);
        // c waits on: 5 s at 10 s, 95 s at 100 s; a was revisited once, 20 s apart.
        log.observe(100.0, &[camera("a", 2, 71.0), camera("c", 3, 95.0)], true);
        let r = log.revisits(100.0);
        assert_eq!(r.worst_s, Some(95.0));
        assert_eq!(r.cameras_unvisited, 1);
        assert_eq!(r.gaps, 1);
    }

    #[test]
    fn two_visits_between_polls_count_as_two_mean_gaps_and_warm_up_gaps_are_not_kept() {
        let mut log = RevisitLog::default();
        log.observe(0.0, &[camera("a", 0, 0.0)], false);
        log.observe(20.0, &[camera("a", 1, 5.0)], false);
        assert_eq!(log.revisits(20.0).gaps, 0);
        // Two visits since: the last began at 55 s, 40 s after 15 s: two gaps of 20 s.
        log.observe(60.0, &[camera("a", 3, 5.0)], true);
        let r = log.revisits(60.0);
        assert_eq!(r.gaps, 2);
        assert_eq!(r.p50_s, Some(20.0));
    }
}
