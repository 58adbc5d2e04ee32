//! Decides which cameras are watched: continuous tasks for every camera (or only the
//! priority ones when patrolling), patrol visits through the slots, and rotations of the
//! camera list while running.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::Watcher;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::camera::{self, CameraState, LiveCamera, Visit};
use super::{ClusterStatus, LiveContext, OwnedElsewhere, Registry};
use crate::cluster::{self, Assignable, LiveChange, Membership, Replica, ReplicaLoad};
use crate::config::{diff_cameras, load_cameras_with, Camera};
use crate::metrics::HistogramSnapshot;
use crate::patrol::VisitLength;
use crate::rules::EventCatalogue;

/// Quiet time after the last file event before a rotation is applied: editors and
/// deployment tools write in several steps.
const SETTLE: Duration = Duration::from_millis(500);

/// How often free patrol slots are filled.
const PATROL_TICK: Duration = Duration::from_millis(200);

/// How often a status line is logged.
const STATUS_EVERY: Duration = Duration::from_secs(30);

/// How long stopping a camera may take (its TEARDOWN included).
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

struct Watched {
    camera: Arc<LiveCamera>,
    stop: watch::Sender<bool>,
    /// The continuous task; patrol cameras have none between visits.
    task: Option<tokio::task::JoinHandle<()>>,
}

pub(super) struct Supervisor {
    ctx: Arc<LiveContext>,
    registry: Arc<Registry>,
    configured: Vec<Camera>,
    watched: BTreeMap<String, Watched>,
    /// What the last revisit check found; a change is logged.
    revisit_verdict: Option<RevisitVerdict>,
    /// Patrol visits under way; each returns its camera's id and generation.
    visits: JoinSet<(String, u64)>,
    generation: u64,
    /// With `[cluster]`: only the cameras assigned to this replica are watched.
    cluster: Option<Cluster>,
}

/// This replica's membership and the assignment as of its last heartbeat.
struct Cluster {
    membership: Membership,
    live: Vec<Replica>,
    /// Every configured camera's owner.
    owners: BTreeMap<String, String>,
    assigned_once: bool,
    handoffs: u64,
}

impl Supervisor {
    /// Starts watching `cameras`, or with `membership`, none until the first heartbeat
    /// says which are this replica's.
    pub fn new(
        ctx: Arc<LiveContext>,
        registry: Arc<Registry>,
        cameras: Vec<Camera>,
        membership: Option<Membership>,
    ) -> Self {
        let mut supervisor = Self {
            ctx,
            registry,
            configured: Vec::new(),
            watched: BTreeMap::new(),
            revisit_verdict: None,
            visits: JoinSet::new(),
            generation: 0,
            cluster: membership.map(|membership| Cluster {
                membership,
                live: Vec::new(),
                owners: BTreeMap::new(),
                assigned_once: false,
                handoffs: 0,
            }),
        };
        if supervisor.cluster.is_none() {
            for camera in cameras.iter().cloned() {
                supervisor.start(camera);
            }
        }
        supervisor.configured = cameras;
        supervisor.publish();
        supervisor.check_revisit();
        supervisor
    }

    fn patrolling(&self, camera: &Camera) -> bool {
        self.ctx.config.patrol.slots > 0 && !camera.priority
    }

    fn start(&mut self, config: Camera) {
        self.generation += 1;
        let camera = Arc::new(LiveCamera::new(
            config,
            self.generation,
            &self.ctx.config.rtsp,
        ));
        let (stop, stop_rx) = watch::channel(false);
        let id = camera.id().to_string();
        let task = if camera.state() == CameraState::Failed {
            None
        } else if self.patrolling(camera.config()) {
            self.registry.patrol().add(&id, Instant::now());
            None
        } else {
            Some(tokio::spawn(camera::watch_continuously(
                camera.clone(),
                self.ctx.clone(),
                stop_rx,
            )))
        };
        self.watched.insert(id, Watched { camera, stop, task });
    }

    /// Stops a camera's task or visit; its queued units are dropped by the decoders.
    async fn stop(&mut self, id: &str) {
        let Some(watched) = self.watched.remove(id) else {
            return;
        };
        self.registry.patrol().remove(id);
        stop_watched(watched).await;
    }

    fn publish(&self) {
        self.registry.set(
            self.watched
                .iter()
                .map(|(id, w)| (id.clone(), w.camera.clone()))
                .collect(),
        );
        if let Some(cluster) = &self.cluster {
            self.registry.set_cluster(cluster.status(&self.configured));
        }
    }

    /// Whether the patrol can keep the configured revisit interval: at start-up with every
    /// visit assumed to run to its timeout, once visits have finished with their measured
    /// mean. Logs when the answer, or what it rests on, changes.
    fn check_revisit(&mut self) {
        let (cameras, promise) = {
            let patrol = self.registry.patrol();
            (patrol.len(), patrol.promised_revisit())
        };
        if cameras == 0 {
            return;
        }
        let wanted = self.ctx.config.patrol.revisit;
        let verdict = RevisitVerdict {
            reachable: promise.interval <= wanted,
            measured: matches!(promise.visit, VisitLength::Measured(_)),
        };
        if self.revisit_verdict.replace(verdict) == Some(verdict) {
            return;
        }
        let (slots, wanted) = (
            self.ctx.config.patrol.slots,
            humantime::format_duration(wanted),
        );
        if !verdict.reachable {
            tracing::warn!(
                cameras,
                slots,
                promised = %promise,
                %wanted,
                "patrol cannot promise the configured revisit interval; add slots or shorten visits"
            );
        } else if verdict.measured {
            tracing::info!(
                cameras,
                slots,
                promised = %promise,
                %wanted,
                "patrol keeps the configured revisit interval with the visits measured"
            );
        }
    }

    fn start_visits(&mut self) {
        let visit = Visit {
            samples: u64::from(self.ctx.config.patrol.samples),
            timeout: self.ctx.config.patrol.visit_timeout,
        };
        // Taken first, so the patrol lock is not held while visits are spawned.
        let started = self.registry.patrol().start_visits(Instant::now());
        for id in started {
            let Some(watched) = self.watched.get(&id) else {
                continue;
            };
            self.ctx.metrics.patrol_visits.inc();
            let (camera, ctx, stop) = (
                watched.camera.clone(),
                self.ctx.clone(),
                watched.stop.subscribe(),
            );
            self.visits.spawn(async move {
                let done = (camera.id().to_string(), camera.generation());
                camera::visit(camera, ctx, stop, visit).await;
                done
            });
        }
    }

    /// Runs until `shutdown` completes, then stops every camera.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let (changes_tx, mut changes) = mpsc::unbounded_channel();
        let _watcher = watch_camera_files(&self.ctx.config.cameras, changes_tx);
        let mut tick = tokio::time::interval(PATROL_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut status =
            tokio::time::interval_at(tokio::time::Instant::now() + STATUS_EVERY, STATUS_EVERY);
        let mut window = StatusWindow::default();
        // Without a cluster the arm below is disabled; the period is then unused.
        let mut heartbeat = tokio::time::interval(
            self.cluster
                .as_ref()
                .map_or(STATUS_EVERY, |c| c.membership.config().heartbeat),
        );
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            let patrolling = !self.registry.patrol().is_empty();
            tokio::select! {
                _ = &mut shutdown => break,
                Some(done) = self.visits.join_next(), if !self.visits.is_empty() => {
                    // A visit of a camera replaced by a rotation frees nothing: the
                    // replacement's slot accounting started afresh.
                    if let Ok((id, generation)) = done {
                        if self.watched.get(&id).is_some_and(|w| w.camera.generation() == generation) {
                            self.registry.patrol().finish(&id, Instant::now());
                        }
                    }
                }
                _ = tick.tick(), if patrolling => self.start_visits(),
                _ = heartbeat.tick(), if self.cluster.is_some() => self.beat().await,
                _ = status.tick() => {
                    window = self.log_status(&window);
                    self.check_revisit();
                }
                Some(()) = changes.recv() => {
                    // Let the writer finish, then take all the events at once.
                    tokio::time::sleep(SETTLE).await;
                    while changes.try_recv().is_ok() {}
                    self.rotate().await;
                }
            }
        }
        let ids: Vec<String> = self.watched.keys().cloned().collect();
        self.stop_all(ids).await;
        let _ = tokio::time::timeout(STOP_TIMEOUT, async {
            while self.visits.join_next().await.is_some() {}
        })
        .await;
        if let Some(cluster) = self.cluster.as_mut() {
            // The others take this replica's cameras at their next beat, not after its lease.
            match cluster.membership.leave().await {
                Ok(()) => tracing::info!(replica = cluster.membership.name(), "left the cluster"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot leave the cluster; the others take its cameras when its lease runs out")
                }
            }
        }
    }

    /// Stops cameras all at once: each may take up to `STOP_TIMEOUT`.
    async fn stop_all(&mut self, ids: Vec<String>) {
        let mut stopping = JoinSet::new();
        for id in ids {
            if let Some(watched) = self.watched.remove(&id) {
                self.registry.patrol().remove(&id);
                stopping.spawn(stop_watched(watched));
            }
        }
        while stopping.join_next().await.is_some() {}
    }

    /// One heartbeat: renews the lease and follows the live set. When the database stays
    /// out of reach until the lease runs out, another replica may own the cameras by now,
    /// so all of them stop.
    async fn beat(&mut self) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let error = match cluster.membership.beat().await {
            Ok(live) => return self.reassign(live).await,
            Err(e) => e,
        };
        let now = crate::clock::unix_now();
        if cluster.membership.lease_holds(now) {
            tracing::warn!(error = %error, lease_left_s = cluster.membership.lease_until().map(|u| u - now), "heartbeat failed; the lease still holds");
        } else if !cluster.live.is_empty() || !self.watched.is_empty() {
            tracing::error!(
                error = %error,
                cameras = self.watched.len(),
                "own lease lapsed (database out of reach); stopping every camera, as another replica may own them now"
            );
            self.reassign(Vec::new()).await;
        }
    }

    /// Watches exactly the configured cameras that `live` assigns to this replica: stops
    /// those it lost, marks those it gained as taken (so a previous owner's late writes
    /// conflict) and starts them. Logs a line when the live set changed.
    async fn reassign(&mut self, live: Vec<Replica>) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        let cameras: Vec<Assignable<'_>> = self.configured.iter().map(assignable).collect();
        let owners = cluster::assign(&cameras, &live);
        let change = LiveChange::between(&cluster.live, &live);
        let moved = cluster::moved(&cluster.owners, &owners);
        if !change.is_empty() {
            tracing::info!(
                joined = ?change.joined,
                left = ?change.left,
                replicas = live.len(),
                cameras_moved = moved,
                "live replicas changed"
            );
        }
        let me = cluster.membership.name().to_string();
        let mine = |id: &str| owners.get(id) == Some(&me);
        let lost: Vec<String> = self
            .watched
            .keys()
            .filter(|id| !mine(id))
            .cloned()
            .collect();
        let gained: Vec<Camera> = self
            .configured
            .iter()
            .filter(|c| mine(&c.info.id) && !self.watched.contains_key(&c.info.id))
            .cloned()
            .collect();
        cluster.live = live;
        cluster.owners = owners;
        let first = !std::mem::replace(&mut cluster.assigned_once, true);
        let taken = if gained.is_empty() {
            Ok(())
        } else {
            let ids = gained.iter().map(|c| c.info.id.clone()).collect();
            cluster.membership.take(ids).await
        };
        let gained = match taken {
            Ok(()) => {
                if !first {
                    cluster.handoffs += gained.len() as u64;
                }
                gained
            }
            Err(e) => {
                tracing::warn!(error = %e, cameras = gained.len(), "cannot mark gained cameras as taken; starting them at the next heartbeat");
                Vec::new()
            }
        };
        if !lost.is_empty() || !gained.is_empty() {
            tracing::info!(
                lost = lost.len(),
                gained = gained.len(),
                "cameras handed over"
            );
        }
        self.stop_all(lost).await;
        for camera in gained {
            self.start(camera);
        }
        self.publish();
    }

    /// One line for the operator, with rates and latency over the window since the last
    /// line; returns where the next window starts.
    fn log_status(&self, since: &StatusWindow) -> StatusWindow {
        let mut states: BTreeMap<&str, usize> = BTreeMap::new();
        for watched in self.watched.values() {
            *states.entry(watched.camera.state().as_str()).or_default() += 1;
        }
        let states: Vec<String> = states.iter().map(|(s, n)| format!("{n} {s}")).collect();
        let m = &self.ctx.metrics;
        let now = StatusWindow {
            analysed: m.frames_analysed.get(),
            latency: m.latency.snapshot(),
        };
        let p99 = now.latency.since(&since.latency).quantile(0.99);
        tracing::info!(
            "status: {} cameras ({}); {:.1} frames/s analysed; skipped {} at receive, {} at decode, {} at detect; {} reconnects; {} cases filed; p99 latency {}",
            self.watched.len(),
            states.join(", "),
            (now.analysed - since.analysed) as f64 / STATUS_EVERY.as_secs_f64(),
            m.skipped_receive.get(),
            m.skipped_decode.get(),
            m.skipped_detect.get(),
            m.reconnects.get(),
            m.cases_filed.get(),
            p99.map_or("- (no frames)".into(), |q| format!("{q:.2} s")),
        );
        now
    }

    /// Applies a changed camera list: added cameras start, removed ones stop, changed ones
    /// restart. A list that fails to load leaves everything as it was.
    async fn rotate(&mut self) {
        let path = self.ctx.config.cameras.clone();
        let secrets = self.ctx.config.camera_secrets();
        let loaded = tokio::task::spawn_blocking(move || {
            load_cameras_with(&path, &EventCatalogue::builtin(), &secrets)
        })
        .await;
        let cameras = match loaded {
            Ok(Ok(cameras)) => cameras,
            Ok(Err(e)) => {
                self.ctx.metrics.rotation_errors.inc();
                tracing::error!(error = %e, "camera list not applied; still watching the previous one");
                return;
            }
            Err(e) => {
                self.ctx.metrics.rotation_errors.inc();
                tracing::error!(error = %e, "camera list reload failed");
                return;
            }
        };
        let diff = diff_cameras(&self.configured, &cameras);
        if diff.is_empty() {
            return;
        }
        let changed: Vec<String> = diff.changed.iter().map(|c| c.id.clone()).collect();
        for id in diff.removed.iter().chain(&changed) {
            self.stop(id).await;
        }
        if let Some(live) = self.cluster.as_ref().map(|c| c.live.clone()) {
            // Only the added and changed cameras can change hands.
            self.configured = cameras;
            self.reassign(live).await;
        } else {
            let by_id: BTreeMap<&str, &Camera> =
                cameras.iter().map(|c| (c.info.id.as_str(), c)).collect();
            for id in diff.added.iter().chain(&changed) {
                if let Some(camera) = by_id.get(id.as_str()) {
                    self.start((*camera).clone());
                }
            }
            self.configured = cameras;
            self.publish();
        }
        self.ctx.metrics.rotations.inc();
        tracing::info!(
            added = diff.added.len(),
            removed = diff.removed.len(),
            changed = changed.len(),
            unchanged = diff.unchanged,
            "camera list rotated"
        );
        // The roster changed: say again where it stands.
        self.revisit_verdict = None;
        self.check_revisit();
    }
}

fn assignable(camera: &Camera) -> Assignable<'_> {
    Assignable {
        id: &camera.info.id,
        priority: camera.priority,
    }
}

impl Cluster {
    /// The live replicas with their camera counts, and the cameras others own.
    fn status(&self, configured: &[Camera]) -> ClusterStatus {
        let me = self.membership.name();
        let replicas = self
            .live
            .iter()
            .map(|r| {
                let owned = configured
                    .iter()
                    .filter(|c| self.owners.get(&c.info.id) == Some(&r.name));
                let (cameras, priority_cameras) =
                    owned.fold((0, 0), |(n, p), c| (n + 1, p + usize::from(c.priority)));
                ReplicaLoad {
                    replica: r.clone(),
                    cameras,
                    priority_cameras,
                }
            })
            .collect();
        let elsewhere = configured
            .iter()
            .filter_map(|c| {
                let owner = self.owners.get(&c.info.id)?;
                (owner != me).then(|| OwnedElsewhere {
                    id: c.info.id.clone(),
                    name: c.info.name.clone(),
                    priority: c.priority,
                    owner: owner.clone(),
                })
            })
            .collect();
        ClusterStatus {
            replica: me.to_string(),
            replicas,
            elsewhere,
            handoffs: self.handoffs,
        }
    }
}

/// The outcome of a revisit check.
#[derive(Clone, Copy, PartialEq)]
struct RevisitVerdict {
    reachable: bool,
    /// Based on measured visits rather than the visit timeout.
    measured: bool,
}

/// Where the status line's window started: figures that are reported as rates or
/// quantiles over the window rather than since start.
#[derive(Default)]
struct StatusWindow {
    analysed: u64,
    latency: HistogramSnapshot,
}

/// Signals a camera's task or visit to end and waits for it (TEARDOWN included), at most
/// `STOP_TIMEOUT`.
async fn stop_watched(watched: Watched) {
    let _ = watched.stop.send(true);
    if let Some(task) = watched.task {
        let _ = tokio::time::timeout(STOP_TIMEOUT, task).await;
    }
    watched.camera.stop();
}

/// Kubernetes updates a mounted ConfigMap by writing a new hidden directory and renaming a
/// `..data` symlink to it over the old one; the visible `*.toml` files are symlinks through
/// `..data`, so they themselves see no event.
const CONFIG_MAP_DATA: &str = "..data";

/// Watches the camera file (or directory) and signals on any change. Without a watcher
/// (inotify limits reached, say) rotation needs a restart, which is logged.
fn watch_camera_files(
    path: &Path,
    changes: mpsc::UnboundedSender<()>,
) -> Option<notify::RecommendedWatcher> {
    // Watch the directory holding a file: tools replace files by renaming over them.
    let (dir, file): (PathBuf, Option<PathBuf>) = if path.is_dir() {
        (path.to_path_buf(), None)
    } else {
        (
            path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            Some(path.to_path_buf()),
        )
    };
    let file_name = file
        .as_ref()
        .and_then(|f| f.file_name().map(|n| n.to_owned()));
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        let relevant = event.paths.iter().any(|p| {
            p.file_name() == Some(OsStr::new(CONFIG_MAP_DATA))
                || match &file_name {
                    Some(name) => p.file_name() == Some(name.as_os_str()),
                    None => p.extension().is_some_and(|x| x == "toml"),
                }
        });
        if relevant {
            let _ = changes.send(());
        }
    };
    let watcher = notify::recommended_watcher(handler).and_then(|mut w| {
        w.watch(&dir, notify::RecursiveMode::NonRecursive)
            .map(|()| w)
    });
    match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!(path = %dir.display(), error = %e, "cannot watch the camera list; rotations need a restart");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A ConfigMap volume as the kubelet writes it: `..<timestamp>/` holding the files,
    /// `..data -> ..<timestamp>`, and `name -> ..data/name` for each key.
    fn write_config_map_version(dir: &Path, version: &str, files: &[(&str, &str)]) {
        let data = dir.join(version);
        std::fs::create_dir(&data).unwrap();
        for (name, text) in files {
            std::fs::write(data.join(name), text).unwrap();
        }
    }

    /// The kubelet's atomic update: a new `..data_tmp` symlink renamed over `..data`.
    fn swap_config_map_data(dir: &Path, version: &str) {
        let tmp = dir.join("..data_tmp");
        symlink(version, &tmp).unwrap();
        std::fs::rename(&tmp, dir.join(CONFIG_MAP_DATA)).unwrap();
    }

    fn config_map(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write_config_map_version(dir.path(), "..2026_12_01_06_00_00.000000001", files);
        symlink(
            "..2026_12_01_06_00_00.000000001",
            dir.path().join(CONFIG_MAP_DATA),
        )
        .unwrap();
        for (name, _) in files {
            symlink(format!("..data/{name}"), dir.path().join(name)).unwrap();
        }
        dir
    }

    /// Whether a change is signalled within a few seconds.
    fn signalled(changes: &mut mpsc::UnboundedReceiver<()>) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if changes.try_recv().is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn config_map_swap_of_a_camera_directory_is_noticed() {
        let dir = config_map(&[("street.toml", "# one camera")]);
        let (sender, mut changes) = mpsc::unbounded_channel();
        let _watcher = watch_camera_files(dir.path(), sender).expect("a watcher");
        write_config_map_version(
            dir.path(),
            "..2026_12_01_06_05_00.000000002",
            &[("street.toml", "# two cameras")],
        );
        swap_config_map_data(dir.path(), "..2026_12_01_06_05_00.000000002");
        assert!(signalled(&mut changes), "the ..data swap went unnoticed");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("street.toml")).unwrap(),
            "# two cameras"
        );
    }

    #[test]
    fn config_map_swap_under_a_single_camera_file_is_noticed() {
        let dir = config_map(&[("cameras.toml", "# one camera")]);
        let (sender, mut changes) = mpsc::unbounded_channel();
        let _watcher =
            watch_camera_files(&dir.path().join("cameras.toml"), sender).expect("a watcher");
        write_config_map_version(
            dir.path(),
            "..2026_12_01_06_05_00.000000002",
            &[("cameras.toml", "# two cameras")],
        );
        swap_config_map_data(dir.path(), "..2026_12_01_06_05_00.000000002");
        assert!(signalled(&mut changes), "the ..data swap went unnoticed");
    }
}
