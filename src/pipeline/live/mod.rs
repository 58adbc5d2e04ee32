//! The daemon (`cgbot run`): the pipeline with freshness, fed by RTSP sessions on tokio
//! (one task per watched camera, or patrol visits through a fixed number of slots), with
//! hot camera rotation, outbox delivery and the HTTP API around it.

mod camera;
mod delivery;
mod snapshots;
mod supervisor;
mod view;

pub use camera::{CameraProblem, CameraState, LiveCamera};
pub use snapshots::{
    encode as encode_snapshot, Snapshot, SnapshotError, SnapshotOutlet, Snapshots,
    SNAPSHOT_QUALITY, SNAPSHOT_WIDTH,
};

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;

use crate::api::{self, ApiConfig};
use crate::cases::Categories;
use crate::cluster::Membership;
use crate::config::{PatrolConfig, RunConfig};
use crate::console::{ConsoleConfig, Users};
use crate::detect::Detector;
use crate::evidence::MainStreamGrabs;
use crate::models::Catalogue;
use crate::patrol::Patrol;
use crate::pipeline::{
    join_until, spawn, FilingSetup, Intake, Metrics, Pipeline, PipelineConfig, QueuePolicy,
};
use crate::rules::EventCatalogue;
use crate::sinks::{JsonlSink, Sink, WebhookSink};
use crate::source::{Opener, RtspOpener, RtspOptions};
use crate::store::Store;

use supervisor::Supervisor;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Model(#[from] crate::models::ModelError),
    #[error(transparent)]
    Detect(#[from] crate::detect::DetectError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Sink(#[from] crate::sinks::SinkError),
    #[error(transparent)]
    Catalogue(#[from] crate::cases::CatalogueError),
    #[error(transparent)]
    Users(#[from] crate::console::UsersError),
    #[error("API on {listen}: {reason}")]
    Api { listen: String, reason: String },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("shutdown took longer than {deadline:?}: {pending}")]
    ShutdownDeadline { deadline: Duration, pending: String },
}

/// What every camera task shares.
pub(crate) struct LiveContext {
    pub config: RunConfig,
    pub rtsp_options: RtspOptions,
    pub metrics: Arc<Metrics>,
    pub intake: Intake,
    pub opener: Arc<dyn Opener>,
    pub sessions: SessionSlots,
}

/// The descriptors camera sessions may hold under the open-file limit (see
/// [`crate::limits`]); a session holds its transport's share from before it connects until
/// it closes.
pub(crate) struct SessionSlots {
    pub descriptors: Arc<tokio::sync::Semaphore>,
    /// Sessions that fit over the configured transport, for messages.
    pub count: usize,
}

impl SessionSlots {
    pub fn new(descriptors: u64, count: usize) -> Self {
        let descriptors = usize::try_from(descriptors)
            .unwrap_or(usize::MAX)
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        Self {
            descriptors: Arc::new(tokio::sync::Semaphore::new(descriptors)),
            count,
        }
    }

    pub fn unlimited() -> Self {
        Self::new(u64::MAX, usize::MAX)
    }
}

/// The cameras currently configured, as the API and metrics see them.
pub struct Registry {
    cameras: RwLock<BTreeMap<String, Arc<LiveCamera>>>,
    /// `Some(reason)` while the daemon cannot do its job.
    not_ready: RwLock<Option<String>>,
    /// Kept by the supervisor; read by the API for revisit figures.
    patrol: Mutex<Patrol>,
    /// Every camera's latest picture; a camera's goes when it leaves the list.
    snapshots: Arc<Snapshots>,
    /// With `[cluster]`: the live replicas and the cameras they own.
    cluster: RwLock<Option<ClusterStatus>>,
}

/// What this replica knows of the others, as of its last heartbeat.
#[derive(Default)]
struct ClusterStatus {
    replica: String,
    replicas: Vec<crate::cluster::ReplicaLoad>,
    /// Configured cameras other replicas own.
    elsewhere: Vec<OwnedElsewhere>,
    /// Cameras this replica took over from another after its first assignment.
    handoffs: u64,
}

struct OwnedElsewhere {
    id: String,
    name: String,
    priority: bool,
    owner: String,
}

impl Registry {
    fn new(patrol: PatrolConfig, snapshots: Arc<Snapshots>) -> Self {
        Self {
            cameras: RwLock::default(),
            not_ready: RwLock::default(),
            patrol: Mutex::new(Patrol::new(patrol)),
            snapshots,
            cluster: RwLock::default(),
        }
    }

    pub fn cameras(&self) -> Vec<Arc<LiveCamera>> {
        read(&self.cameras).values().cloned().collect()
    }

    /// Publishes the camera list. Removed cameras have been stopped by now, so their
    /// snapshots can go for good (see [`Snapshots`]).
    fn set(&self, cameras: BTreeMap<String, Arc<LiveCamera>>) {
        self.snapshots.retain(|id| cameras.contains_key(id));
        *self.cameras.write().unwrap_or_else(|p| p.into_inner()) = cameras;
    }

    fn set_cluster(&self, status: ClusterStatus) {
        *self.cluster.write().unwrap_or_else(|p| p.into_inner()) = Some(status);
    }

    fn set_not_ready(&self, reason: Option<String>) {
        *self.not_ready.write().unwrap_or_else(|p| p.into_inner()) = reason;
    }

    fn patrol(&self) -> MutexGuard<'_, Patrol> {
        self.patrol.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

/// What a finished run reports.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub frames_analysed: u64,
    pub cases_filed: u64,
    pub shutdown: Duration,
}

/// Runs the daemon until `shutdown` completes, then stops intake, drains the queues,
/// flushes cases and the outbox, and returns within the configured deadline.
pub fn run(
    config: RunConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunReport, DaemonError> {
    let events = EventCatalogue::builtin();
    let cameras =
        crate::config::load_cameras_with(&config.cameras, &events, &config.camera_secrets())?;
    let categories = Categories::load_city(
        config.catalogue.as_deref(),
        config.calendar.as_deref(),
        config.codes.as_deref(),
        (&events.names(), &crate::config::events_used(&cameras)),
    )?;
    let options = config.detector_options().map_err(|(field, reason)| {
        crate::config::ConfigError::Invalid {
            path: config.cameras.clone(),
            field: field.into(),
            reason,
        }
    })?;
    let model =
        Catalogue::load(config.models_dir.as_deref())?.resolve(config.detector.model.as_deref())?;
    let threads = config.threads();
    let detectors = Detector::sessions(&model, &options, threads.workers)?;
    let store = Store::open(&config.db)?;
    let sinks = build_sinks(&config)?;
    let token = config.api_token()?;
    if let Err(reason) = api::check_exposure(config.api.listen, token.as_deref()) {
        return Err(DaemonError::Api {
            listen: config.api.listen.to_string(),
            reason: format!("{reason} (the token comes from $CGBOT_API_TOKEN or api.token_file)"),
        });
    }

    let console = ConsoleConfig {
        cameras: Some(config.cameras.clone()),
        users: match &config.console.users {
            Some(path) => Users::load(path)?,
            None => Users::default(),
        },
        session_ttl: config.console.session_ttl,
        suppress_for: config.console.suppress_for,
    };
    let api_error = |reason: String| DaemonError::Api {
        listen: config.api.listen.to_string(),
        reason,
    };
    // Bind before any thread starts, so a taken port fails the start cleanly.
    let listener = std::net::TcpListener::bind(config.api.listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| api_error(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cgbot-io")
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;

    crate::decode::keep_frame_buffers_out_of_the_heap();
    let metrics = Arc::new(Metrics::default());
    let snapshots = Arc::new(Snapshots::new(
        config.snapshot_budget_mib.saturating_mul(1 << 20),
    ));
    let registry = Arc::new(Registry::new(config.patrol.clone(), snapshots.clone()));
    let pipeline = Pipeline::start(
        &PipelineConfig {
            policy: QueuePolicy::Freshness,
            decode_threads: threads.decode,
            per_feed: config.queues.per_camera,
            kept_decoders: config.queues.kept_decoders,
            max_wait: config.detector.max_wait,
        },
        detectors,
        Some(FilingSetup {
            store,
            categories,
            grabs: Some(Arc::new(MainStreamGrabs::new(
                runtime.handle().clone(),
                config.rtsp.evidence_grabs,
                config.rtsp.evidence_grab_timeout,
                RtspOptions {
                    transport: config.rtsp.transport,
                    connect_timeout: config.rtsp.connect_timeout,
                    frame_timeout: config.rtsp.frame_timeout,
                },
                metrics.evidence_grabs.clone(),
            ))),
        }),
        SnapshotOutlet::new(snapshots, config.snapshot_every),
        metrics.clone(),
    );
    let sink_names: Vec<String> = sinks.iter().map(|s| s.name().to_string()).collect();
    let (retention_stop, retention_stop_rx) = bounded::<Instant>(1);
    let retention = {
        let store = Store::open(&config.db)?;
        let settings = config.retention.clone();
        spawn("retention", move || {
            delivery::retention_worker(store, settings, sink_names, retention_stop_rx)
        })
    };
    let mut deliveries = Vec::new();
    for sink in sinks {
        let (stop, stop_rx) = bounded(1);
        let store = Store::open(&config.db)?;
        let every = config.sinks.every;
        let metrics = metrics.clone();
        let handle = spawn("delivery", move || {
            delivery::delivery_worker(store, sink, every, stop_rx, &metrics.store)
        });
        deliveries.push((stop, handle));
    }

    let ctx = Arc::new(LiveContext {
        rtsp_options: RtspOptions {
            transport: config.rtsp.transport,
            connect_timeout: config.rtsp.connect_timeout,
            frame_timeout: config.rtsp.frame_timeout,
        },
        config: config.clone(),
        metrics: metrics.clone(),
        intake: pipeline.intake(),
        opener: Arc::new(RtspOpener),
        sessions: session_slots(&config, &cameras),
    });
    let membership = match &config.cluster {
        Some(cluster) => {
            let api = format!("http://{}", config.api.listen);
            let membership = Membership::open(cluster.clone(), api, &config.db)?;
            tracing::info!(
                replica = membership.name(),
                capacity = cluster.capacity,
                "sharing the cameras with the other replicas of the database"
            );
            Some(membership)
        }
        None => None,
    };
    let deadline = config.shutdown_deadline;
    let shutdown_started = runtime.block_on(async {
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(|e| api_error(e.to_string()))?;
        tracing::info!(listen = %config.api.listen, "HTTP API listening");
        let (api_stop, api_stopped) = tokio::sync::oneshot::channel::<()>();
        let view = Arc::new(view::LiveView {
            registry: registry.clone(),
            metrics: metrics.clone(),
            depths: pipeline.depths(),
            ready: view::CameraReadiness {
                min_healthy: config.api.ready_min_healthy,
                grace: config.api.ready_grace,
            },
        });
        let api_task = tokio::spawn(api::serve(
            listener,
            ApiConfig {
                listen: config.api.listen,
                token,
                db: config.db.clone(),
                console,
            },
            view,
            async {
                let _ = api_stopped.await;
            },
        ));
        let supervisor = Supervisor::new(ctx.clone(), registry.clone(), cameras, membership);
        supervisor.run(shutdown).await;
        let shutdown_started = Instant::now();
        registry.set_not_ready(Some("shutting down".into()));
        let _ = api_stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(2), api_task).await;
        Ok::<_, DaemonError>(shutdown_started)
    })?;
    // Intake has stopped: the stages drain in order.
    drop(ctx);
    let final_deadline = shutdown_started + deadline;
    let mut pending = Vec::new();
    match pipeline.finish(Some(final_deadline)) {
        Err(busy) => pending.push(busy.to_string()),
        Ok(Err(e)) => tracing::error!(error = %e, "the pipeline stopped with an error"),
        Ok(Ok(_)) => {}
    }
    // Every case is committed now: the last delivery round takes them all.
    drop(retention_stop);
    if join_until(retention, Some(final_deadline)).is_none() {
        pending.push("retention still busy".into());
    }
    for (stop, _) in &deliveries {
        let _ = stop.send(final_deadline);
    }
    for (_, handle) in deliveries {
        if join_until(handle, Some(final_deadline)).is_none() {
            pending.push("outbox delivery still busy".into());
        }
    }
    runtime.shutdown_timeout(Duration::from_millis(200));
    let report = RunReport {
        frames_analysed: metrics.frames_analysed.get(),
        cases_filed: metrics.cases_filed.get(),
        shutdown: shutdown_started.elapsed(),
    };
    if !pending.is_empty() {
        pending.dedup();
        return Err(DaemonError::ShutdownDeadline {
            deadline,
            pending: pending.join(", "),
        });
    }
    Ok(report)
}

/// Raises the open-file limit and says how many camera sessions fit under it, warning
/// (with the numbers and the fix) when the camera list needs more.
fn session_slots(config: &RunConfig, cameras: &[crate::config::Camera]) -> SessionSlots {
    let transport = config.rtsp.transport;
    let files = match crate::limits::raise_open_files() {
        Ok(files) => files,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit; camera sessions are not capped");
            return SessionSlots::unlimited();
        }
    };
    if let Some(from) = files.raised_from {
        tracing::info!(
            from,
            to = files.soft,
            "raised the open-file limit to the hard limit"
        );
    }
    let priority = cameras.iter().filter(|c| c.priority).count();
    let wanted = match config.patrol.slots {
        0 => cameras.len(),
        slots => priority + slots.min(cameras.len() - priority),
    };
    match crate::limits::shortfall(files, transport, wanted) {
        Some(warning) => tracing::warn!("{warning}"),
        None => tracing::info!(
            open_files = files.soft,
            sessions = wanted,
            "the camera sessions fit under the open-file limit"
        ),
    }
    SessionSlots::new(
        files.soft.saturating_sub(crate::limits::RESERVED),
        crate::limits::session_slots(files.soft, transport),
    )
}

fn build_sinks(config: &RunConfig) -> Result<Vec<Box<dyn Sink>>, DaemonError> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(path) = &config.sinks.jsonl {
        sinks.push(Box::new(JsonlSink::open(path)?));
    }
    if let Some(url) = &config.sinks.webhook {
        let token = std::env::var("CGBOT_WEBHOOK_TOKEN").ok();
        sinks.push(Box::new(
            WebhookSink::new(url, token, config.sinks.webhook_timeout)?
                .signed(config.webhook_signer()?),
        ));
    }
    Ok(sinks)
}
