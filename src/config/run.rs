//! The daemon's own configuration (`cgbot run --config FILE`). Every section and key is
//! optional except `cameras`; relative paths are relative to the file.
//!
//! ```toml
//! cameras = "cameras/"            # camera file or directory, watched for rotation
//! secrets = "secrets.toml"        # camera credentials named by the camera files (else $CGBOT_SECRETS)
//! db = "cgbot.db"                 # SQLite file, or postgres://user@host/db?sslmode=disable
//! # db_file = "/run/secrets/db"   # …or the database URL read from this file (a mounted Secret)
//! catalogue = "categories.toml"   # the city's case categories and time limits
//! calendar = "calendar.toml"      # working hours, holidays: for time limits in working time
//! codes = "city-codes.toml"       # the city platform's codes of the events, in sinks and exports
//! models_dir = "/var/lib/cgbot/models"   # searched first for model files (then $CGBOT_MODEL_DIR)
//! snapshot_every = "10s"          # each camera's latest picture for the console, at most this often
//! snapshot_budget_mib = 128       # memory for those pictures; the oldest go beyond it
//!
//! [detector]
//! model = "yolox_nano"            # catalogue name or ONNX path
//! provider = "cpu"                # cpu, cuda[:N], tensorrt[:N]
//!
//! [sampling]
//! interval = "2s"                 # one analysed frame per camera per interval
//! keyframes = "auto"              # auto | always | never
//!
//! [rtsp]
//! transport = "tcp"               # tcp | udp
//! stream = "main"                 # main | sub: which camera stream is analysed
//! evidence_grabs = 8               # sub: main-stream evidence grabs at a time
//! evidence_grab_timeout = "10s"    # sub: then evidence is drawn on the sub stream
//! fail_after = 5                  # failures in a row before a camera is `failed` …
//! failed_retry = "5m"             # … and retried only this often
//! frozen_after = "60s"            # unchanged picture → `frozen` (0s: never)
//! dark_after = "60s"              # near-uniform picture → `dark` (0s: never)
//! view_guard = true               # other ground than the learned view → `view_changed`
//!
//! [patrol]
//! slots = 50                      # 0: every camera watched continuously
//! samples = 2
//! visit_timeout = "20s"
//! revisit = "5m"
//!
//! [api]
//! listen = "127.0.0.1:8080"       # bearer token from $CGBOT_API_TOKEN or token_file
//! ready_min_healthy = 0.5         # /readyz is 503 below this share of healthy cameras
//! ready_grace = "60s"             # … counting cameras this new as healthy
//!
//! [console]
//! users = "users.toml"            # operators' passwords (cgbot console hash-password)
//! session_ttl = "8h"              # a session ends after this long idle
//! suppress_for = "7d"             # a rejected case's place files nothing this long
//!
//! [retention]                     # 0: keep for good
//! outbox = "30d"                  # delivered case events
//! evidence = "0s"                 # images of cases closed/rejected this long ago
//! cases = "0s"                    # such cases themselves, with their history
//! every = "1h"
//!
//! [sinks]
//! jsonl = "events.jsonl"
//! webhook = "https://city.example/api/cases"   # token from $CGBOT_WEBHOOK_TOKEN
//! webhook_secret_file = "webhook.secret"        # whsec_… signing key (else $CGBOT_WEBHOOK_SECRET)
//!
//! [cluster]                       # absent: this daemon watches every camera alone
//! replica = "cgbot-0"             # unique name among the replicas (default: the host name)
//! capacity = 1.0                  # weight: a replica of 2.0 gets twice the cameras
//! heartbeat = "5s"                # lease renewal and live-set check
//! lease = "15s"                   # a replica silent this long loses its cameras
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use crate::cluster::ClusterConfig;
use crate::decode::KeyframePolicy;
use crate::detect::{DetectorOptions, Provider};
use crate::source::Transport;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub cameras: PathBuf,
    /// Secrets file of the camera credentials the camera files name (else `$CGBOT_SECRETS`).
    pub secrets: Option<PathBuf>,
    /// A SQLite file (`path` or `sqlite:path`) or a PostgreSQL URL (`postgres://…`).
    #[serde(default = "default_db")]
    pub db: PathBuf,
    /// A file holding `db` (a URL with a password, mounted from a secret store); when
    /// given it replaces `db`.
    pub db_file: Option<PathBuf>,
    /// Case category table replacing the built-in one.
    pub catalogue: Option<PathBuf>,
    /// The city's working calendar, for time limits given in working time.
    pub calendar: Option<PathBuf>,
    /// The city platform's code table (see `cases::CodeTable`).
    pub codes: Option<PathBuf>,
    /// Directory searched first for model files and `manifest.toml`.
    pub models_dir: Option<PathBuf>,
    #[serde(default)]
    pub detector: DetectorSettings,
    #[serde(default)]
    pub sampling: SamplingSettings,
    #[serde(default)]
    pub rtsp: RtspSettings,
    #[serde(default)]
    pub queues: QueueSettings,
    #[serde(default)]
    pub patrol: PatrolConfig,
    #[serde(default)]
    pub api: ApiSettings,
    #[serde(default)]
    pub console: ConsoleSettings,
    #[serde(default)]
    pub retention: RetentionSettings,
    #[serde(default)]
    pub sinks: SinkSettings,
    /// Longest a graceful shutdown may take before the process exits anyway.
    #[serde(default = "default_shutdown", with = "crate::duration")]
    pub shutdown_deadline: Duration,
    /// Shortest time between two snapshots (latest pictures) of a camera; 0: every frame.
    #[serde(default = "default_snapshot_every", with = "crate::duration")]
    pub snapshot_every: Duration,
    /// Memory all cameras' snapshots may take, in MiB; 0 keeps none.
    #[serde(default = "default_snapshot_budget_mib")]
    pub snapshot_budget_mib: usize,
    /// Sharing the cameras with other replicas on the same database.
    pub cluster: Option<ClusterConfig>,
}

fn default_db() -> PathBuf {
    PathBuf::from("cgbot.db")
}

fn default_shutdown() -> Duration {
    Duration::from_secs(10)
}

fn default_snapshot_every() -> Duration {
    Duration::from_secs(10)
}

fn default_snapshot_budget_mib() -> usize {
    128
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorSettings {
    pub model: Option<String>,
    pub provider: String,
    pub conf: f32,
    pub nms: f32,
    /// Detect workers, each with its own ONNX Runtime session (0: the default; see
    /// [`thread_split`]).
    pub workers: usize,
    /// Intra-op threads of each worker's session (0: the cores the decode threads leave,
    /// shared among the workers, at least one; see [`thread_split`]).
    pub threads: usize,
    /// Largest batch across cameras, for models with a dynamic batch dimension.
    pub batch: usize,
    /// Longest wait for a batch to fill.
    #[serde(with = "crate::duration")]
    pub max_wait: Duration,
}

impl Default for DetectorSettings {
    fn default() -> Self {
        let d = DetectorOptions::default();
        Self {
            model: None,
            provider: "cpu".into(),
            conf: d.conf,
            nms: d.nms_iou,
            workers: 0,
            threads: d.threads,
            batch: d.max_batch,
            max_wait: Duration::from_millis(20),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingSettings {
    #[serde(with = "crate::duration")]
    pub interval: Duration,
    pub keyframes: KeyframePolicy,
}

impl Default for SamplingSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            keyframes: KeyframePolicy::Auto,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamChoice {
    #[default]
    Main,
    Sub,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtspSettings {
    pub transport: Transport,
    /// Which of a camera's streams is analysed (the other is used when it is missing).
    /// Analysed on `sub`, a camera's evidence images come from its main stream.
    pub stream: StreamChoice,
    /// Main-stream evidence grabs at a time across the daemon (with `stream = "sub"`).
    pub evidence_grabs: usize,
    /// A grab that has no keyframe after this (its wait for a slot included) gives up:
    /// the evidence is drawn on the analysed sub-stream frame instead.
    #[serde(with = "crate::duration")]
    pub evidence_grab_timeout: Duration,
    #[serde(with = "crate::duration")]
    pub connect_timeout: Duration,
    /// No frame for this long: the stream is stalled and reconnected.
    #[serde(with = "crate::duration")]
    pub frame_timeout: Duration,
    /// First reconnect delay ceiling; it doubles per failure up to `backoff_max`, and each
    /// delay is drawn uniformly below the ceiling so cameras do not retry in lockstep.
    #[serde(with = "crate::duration")]
    pub backoff_initial: Duration,
    #[serde(with = "crate::duration")]
    pub backoff_max: Duration,
    /// After this many failed attempts in a row a camera is `failed`, and retried only
    /// every `failed_retry`.
    pub fail_after: u32,
    #[serde(with = "crate::duration")]
    pub failed_retry: Duration,
    /// A picture unchanged for this long makes a streaming camera `frozen` (0s: never).
    #[serde(with = "crate::duration")]
    pub frozen_after: Duration,
    /// A near-uniform picture (covered lens, black) for this long makes it `dark` (0s: never).
    #[serde(with = "crate::duration")]
    pub dark_after: Duration,
    /// Compare each analysed picture with the camera's reference view and suspend its
    /// rules while it shows other ground (`view_changed`).
    pub view_guard: bool,
}

impl Default for RtspSettings {
    fn default() -> Self {
        Self {
            transport: Transport::Tcp,
            stream: StreamChoice::Main,
            evidence_grabs: 8,
            evidence_grab_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            fail_after: 5,
            failed_retry: Duration::from_secs(300),
            frozen_after: Duration::from_secs(60),
            dark_after: Duration::from_secs(60),
            view_guard: true,
        }
    }
}

/// Kept only where it saves CPU (H.265: 36 instead of 51 ms per 1080p keyframe), a
/// decoder holds 25.5 MiB between keyframes at 1080p (`cargo bench --bench decoder`): 32
/// of them 0.8 GiB, about the cameras a 2-core box analyses continuously. Patrolled
/// cameras give theirs up when their visit ends.
const KEPT_DECODERS: usize = 32;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    /// Access units waiting per camera before the decoder; the oldest is dropped beyond.
    pub per_camera: usize,
    /// Decoder threads (0: half the cores, at least one).
    pub decode_threads: usize,
    /// H.265 cameras sampled keyframes-only whose decoder is kept between keyframes;
    /// cameras beyond open one per keyframe.
    pub kept_decoders: usize,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            per_camera: 8,
            decode_threads: 0,
            kept_decoders: KEPT_DECODERS,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// File holding the bearer token (else `$CGBOT_API_TOKEN`).
    pub token_file: Option<PathBuf>,
    /// `/readyz` answers 503 when a smaller share of the cameras is healthy (0: never).
    pub ready_min_healthy: f64,
    /// Cameras this new in the list count as healthy: they may still be connecting.
    #[serde(with = "crate::duration")]
    pub ready_grace: Duration,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token_file: None,
            ready_min_healthy: 0.5,
            ready_grace: Duration::from_secs(60),
        }
    }
}

/// What the store lets go of, and how often it looks (see [`crate::store::Retention`]).
/// A zero duration keeps that kind of record for good.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Outbox events every sink acknowledged, after this long.
    #[serde(with = "crate::duration")]
    pub outbox: Duration,
    /// Evidence images of cases closed or rejected this long ago.
    #[serde(with = "crate::duration")]
    pub evidence: Duration,
    /// Cases (with history and evidence) closed or rejected this long ago.
    #[serde(with = "crate::duration")]
    pub cases: Duration,
    #[serde(with = "crate::duration")]
    pub every: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            outbox: Duration::from_secs(30 * 86_400),
            evidence: Duration::ZERO,
            cases: Duration::ZERO,
            every: Duration::from_secs(3600),
        }
    }
}

impl RetentionSettings {
    pub fn retention(&self) -> crate::store::Retention {
        let keep = |d: Duration| (!d.is_zero()).then_some(d);
        crate::store::Retention {
            outbox: keep(self.outbox),
            evidence: keep(self.evidence),
            cases: keep(self.cases),
        }
    }
}

/// The operators' console served with the API (see [`crate::console`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSettings {
    /// Users who sign in with a password; the API token always signs in as admin.
    pub users: Option<PathBuf>,
    #[serde(with = "crate::duration")]
    pub session_ttl: Duration,
    #[serde(with = "crate::duration")]
    pub suppress_for: Duration,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            users: None,
            session_ttl: Duration::from_secs(8 * 3600),
            suppress_for: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkSettings {
    pub jsonl: Option<PathBuf>,
    /// Webhook URL; its bearer token comes from `$CGBOT_WEBHOOK_TOKEN`.
    pub webhook: Option<String>,
    /// File holding the webhook signing secret, `whsec_<base64>` (else
    /// `$CGBOT_WEBHOOK_SECRET`); deliveries are signed when one is given.
    pub webhook_secret_file: Option<PathBuf>,
    #[serde(with = "crate::duration")]
    pub webhook_timeout: Duration,
    /// How often the outbox is delivered.
    #[serde(with = "crate::duration")]
    pub every: Duration,
}

impl Default for SinkSettings {
    fn default() -> Self {
        Self {
            jsonl: None,
            webhook: None,
            webhook_secret_file: None,
            webhook_timeout: Duration::from_secs(10),
            every: Duration::from_secs(2),
        }
    }
}

impl RunConfig {
    /// Reads and checks the file; relative paths become relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let read = |reason: String| ConfigError::Read {
            path: path.to_path_buf(),
            reason,
        };
        let text = super::read_text(path)?;
        let mut config: RunConfig = toml::from_str(&text).map_err(|e| read(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        rebase(&mut config.cameras);
        if let Some(file) = config.db_file.as_mut() {
            rebase(file);
            let url = std::fs::read_to_string(&*file).map_err(|e| ConfigError::Read {
                path: file.clone(),
                reason: format!("db_file: {e}"),
            })?;
            config.db = PathBuf::from(url.trim());
        }
        let db = config.db.to_string_lossy().into_owned();
        if let Some(file) = db.strip_prefix("sqlite:") {
            config.db = PathBuf::from(file);
        }
        if !crate::store::is_postgres_url(&db) {
            rebase(&mut config.db);
        }
        for p in [
            config.catalogue.as_mut(),
            config.calendar.as_mut(),
            config.codes.as_mut(),
            config.models_dir.as_mut(),
            config.sinks.jsonl.as_mut(),
            config.api.token_file.as_mut(),
            config.console.users.as_mut(),
            config.secrets.as_mut(),
            config.sinks.webhook_secret_file.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            rebase(p);
        }
        config
            .check()
            .map_err(|(field, reason)| ConfigError::Invalid {
                path: path.to_path_buf(),
                field: field.into(),
                reason,
            })?;
        Ok(config)
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        self.detector_options()?;
        if let Some(model) = &self.detector.model {
            let catalogue = crate::models::Catalogue::load(self.models_dir.as_deref()).ok();
            super::check_model_name(model, &mut Some(catalogue))
                .map_err(|e| ("detector.model", e))?;
        }
        self.check_durations()?;
        if self.sampling.interval.is_zero() {
            return Err(("sampling.interval", "must be positive".into()));
        }
        if self.queues.per_camera == 0 {
            return Err(("queues.per_camera", "must be at least 1".into()));
        }
        if self.retention.every < Duration::from_secs(1) {
            return Err((
                "retention.every",
                "must be at least 1s (each round reads the database)".into(),
            ));
        }
        if self.patrol.slots > 0 && self.patrol.samples == 0 {
            return Err(("patrol.samples", "a visit needs at least one sample".into()));
        }
        if self.rtsp.backoff_initial.is_zero() || self.rtsp.backoff_max < self.rtsp.backoff_initial
        {
            return Err((
                "rtsp.backoff_initial",
                "must be positive and at most rtsp.backoff_max".into(),
            ));
        }
        if self.rtsp.fail_after == 0 {
            return Err((
                "rtsp.fail_after",
                "must be at least 1 (failed attempts in a row)".into(),
            ));
        }
        if let Some(cluster) = &self.cluster {
            cluster.check()?;
        }
        let share = self.api.ready_min_healthy;
        if !(0.0..=1.0).contains(&share) {
            return Err((
                "api.ready_min_healthy",
                format!("{share} is not a share between 0 and 1"),
            ));
        }
        Ok(())
    }

    /// Durations in their sensible ranges: a zero timeout would fail every connection, and
    /// a huge one overflows the clock arithmetic (a year is the most any may be).
    fn check_durations(&self) -> Result<(), (&'static str, String)> {
        const SECOND: Duration = Duration::from_secs(1);
        const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
        let ms = Duration::from_millis;
        // (field, value, least, why the least)
        let limits: [(&'static str, Duration, Duration, &str); 18] = [
            (
                "sampling.interval",
                self.sampling.interval,
                ms(1),
                "a camera needs time between samples",
            ),
            (
                "detector.max_wait",
                self.detector.max_wait,
                Duration::ZERO,
                "",
            ),
            (
                "rtsp.connect_timeout",
                self.rtsp.connect_timeout,
                ms(100),
                "no camera connects faster; 0 would fail every connection",
            ),
            (
                "rtsp.frame_timeout",
                self.rtsp.frame_timeout,
                ms(100),
                "0 would call every stream stalled",
            ),
            (
                "rtsp.backoff_initial",
                self.rtsp.backoff_initial,
                ms(1),
                "reconnecting at once hammers a camera that refuses",
            ),
            (
                "rtsp.backoff_max",
                self.rtsp.backoff_max,
                ms(1),
                "reconnecting at once hammers a camera that refuses",
            ),
            (
                "patrol.visit_timeout",
                self.patrol.visit_timeout,
                ms(100),
                "a visit must have time to connect and sample",
            ),
            (
                "patrol.revisit",
                self.patrol.revisit,
                SECOND,
                "0 asks every camera to be watched at once",
            ),
            (
                "console.session_ttl",
                self.console.session_ttl,
                SECOND,
                "a session would end as it starts",
            ),
            (
                "console.suppress_for",
                self.console.suppress_for,
                Duration::ZERO,
                "",
            ),
            (
                "sinks.webhook_timeout",
                self.sinks.webhook_timeout,
                ms(100),
                "0 would fail every delivery",
            ),
            (
                "sinks.every",
                self.sinks.every,
                ms(100),
                "delivering the outbox more often only burns a core polling it",
            ),
            (
                "shutdown_deadline",
                self.shutdown_deadline,
                ms(100),
                "0 leaves no time to flush cases and the outbox",
            ),
            ("snapshot_every", self.snapshot_every, Duration::ZERO, ""),
            (
                "rtsp.failed_retry",
                self.rtsp.failed_retry,
                SECOND,
                "a failed camera is retried more slowly than a failing one",
            ),
            (
                "rtsp.frozen_after",
                self.rtsp.frozen_after,
                Duration::ZERO,
                "",
            ),
            ("rtsp.dark_after", self.rtsp.dark_after, Duration::ZERO, ""),
            ("api.ready_grace", self.api.ready_grace, Duration::ZERO, ""),
        ];
        let shown = |d: Duration| humantime::format_duration(d).to_string();
        for (field, value, least, why) in limits {
            if value < least {
                return Err((
                    field,
                    format!(
                        "{} is too short: it must be at least {} ({why})",
                        shown(value),
                        shown(least)
                    ),
                ));
            }
            if value > YEAR {
                return Err((
                    field,
                    format!(
                        "{} is too long: at most a year (365d) is allowed",
                        shown(value)
                    ),
                ));
            }
        }
        Ok(())
    }

    pub fn detector_options(&self) -> Result<DetectorOptions, (&'static str, String)> {
        let d = &self.detector;
        let provider: Provider = d.provider.parse().map_err(|e| ("detector.provider", e))?;
        for (field, value) in [("detector.conf", d.conf), ("detector.nms", d.nms)] {
            if !(0.0..=1.0).contains(&value) {
                return Err((field, format!("{value} is not between 0 and 1")));
            }
        }
        Ok(DetectorOptions {
            conf: d.conf,
            nms_iou: d.nms,
            provider,
            threads: self.threads().inference,
            max_batch: d.batch.max(1),
        })
    }

    /// Decode threads, detect workers and their intra-op threads (see [`thread_split`]).
    pub fn threads(&self) -> ThreadSplit {
        let d = &self.detector;
        thread_split(self.queues.decode_threads, d.workers, d.threads)
    }

    /// Where the camera files' credentials come from: `secrets`, else `$CGBOT_SECRETS`.
    pub fn camera_secrets(&self) -> super::Secrets {
        super::Secrets::file_or_env(self.secrets.as_deref())
    }

    /// The webhook signer of `sinks.webhook_secret_file`, else of `$CGBOT_WEBHOOK_SECRET`
    /// (`whsec_<base64>`); none: deliveries are not signed.
    pub fn webhook_signer(&self) -> Result<Option<crate::sinks::WebhookSigner>, ConfigError> {
        webhook_signer(self.sinks.webhook_secret_file.as_deref())
    }

    /// The API's bearer token, if one is configured.
    pub fn api_token(&self) -> Result<Option<String>, ConfigError> {
        match &self.api.token_file {
            Some(path) => std::fs::read_to_string(path)
                .map(|t| Some(t.trim().to_string()))
                .map_err(|e| ConfigError::Read {
                    path: path.clone(),
                    reason: format!("api.token_file: {e}"),
                }),
            None => Ok(std::env::var("CGBOT_API_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())),
        }
    }
}

/// The webhook signer of the secret in `file` (`whsec_<base64>`), else of
/// `$CGBOT_WEBHOOK_SECRET`; none when neither is given. Errors name the file or variable.
pub fn webhook_signer(
    file: Option<&Path>,
) -> Result<Option<crate::sinks::WebhookSigner>, ConfigError> {
    let (secret, source) = match file {
        Some(path) => (
            std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                path: path.to_path_buf(),
                reason: format!("webhook secret: {e}"),
            })?,
            path.to_path_buf(),
        ),
        None => match std::env::var("CGBOT_WEBHOOK_SECRET") {
            Ok(secret) if !secret.is_empty() => (secret, PathBuf::from("$CGBOT_WEBHOOK_SECRET")),
            _ => return Ok(None),
        },
    };
    crate::sinks::WebhookSigner::from_secret(&secret)
        .map(Some)
        .map_err(|reason| ConfigError::Read {
            path: source,
            reason,
        })
}

/// Patrol (轮巡): cameras taking turns in a fixed number of slots (see [`crate::patrol`]).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PatrolConfig {
    /// Cameras visited at the same time; 0 watches every camera continuously.
    pub slots: usize,
    /// Analysed frames that complete a visit.
    pub samples: u32,
    /// Longest visit, connecting included.
    #[serde(with = "crate::duration")]
    pub visit_timeout: Duration,
    /// The revisit interval the deployment needs; a warning says when the slots cannot
    /// achieve it.
    #[serde(with = "crate::duration")]
    pub revisit: Duration,
}

impl Default for PatrolConfig {
    fn default() -> Self {
        Self {
            slots: 0,
            samples: 2,
            visit_timeout: Duration::from_secs(20),
            revisit: Duration::from_secs(300),
        }
    }
}

/// The cores this process may run on.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Detect workers when not told (see [`thread_split`]).
const WORKERS_DEFAULT: usize = 2;

/// How a box's cores are shared between decoding and inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadSplit {
    pub decode: usize,
    /// Detect workers, each with its own ONNX Runtime session.
    pub workers: usize,
    /// ONNX Runtime intra-op threads of each worker's session.
    pub inference: usize,
}

/// Decode threads, detect workers and their intra-op threads from their settings, 0 meaning
/// the default: half the cores decode (at least one); [`WORKERS_DEFAULT`] detect workers; and
/// the cores decoding leaves are shared out among the workers (at least one thread each).
/// On the 2-core box one intra-op thread served 18 % more cameras per core than two
/// (medians of 3, `cgbot bench --threads 1|2`): a second intra-op thread contends with
/// decoding for the same cores and spends more CPU per frame waiting.
pub fn thread_split(decode: usize, workers: usize, inference: usize) -> ThreadSplit {
    let decode = match decode {
        0 => (cores() / 2).max(1),
        n => n,
    };
    let workers = match workers {
        0 => WORKERS_DEFAULT,
        n => n,
    };
    let inference = match inference {
        0 => (cores().saturating_sub(decode) / workers).max(1),
        n => n,
    };
    ThreadSplit {
        decode,
        workers,
        inference,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<RunConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        std::fs::write(&path, text).unwrap();
        RunConfig::load(&path).map_err(|e| e.to_string())
    }

    #[test]
    fn inference_takes_the_cores_decoding_leaves_unless_told() {
        let cores = cores();
        let config = load("cameras = \"c\"\n[queues]\ndecode_threads = 1\n").unwrap();
        let split = config.threads();
        assert_eq!((split.decode, split.workers), (1, WORKERS_DEFAULT));
        let each = ((cores - 1) / WORKERS_DEFAULT).max(1);
        assert_eq!(split.inference, each);
        assert_eq!(config.detector_options().unwrap().threads, each);
        // Decoding on every core still leaves each worker one thread.
        let busy = load(&format!(
            "cameras = \"c\"\n[queues]\ndecode_threads = {cores}\n"
        ))
        .unwrap();
        assert_eq!(busy.threads().inference, 1);
        let told = load("cameras = \"c\"\n[detector]\nthreads = 3\nworkers = 1\n").unwrap();
        assert_eq!(
            told.threads(),
            ThreadSplit {
                decode: (cores / 2).max(1),
                workers: 1,
                inference: 3
            }
        );
    }

    #[test]
    fn retention_takes_durations_and_zero_keeps() {
        let config = load(
            "cameras = \"c\"\n[retention]\noutbox = \"0s\"\nevidence = \"365d\"\ncases = \"3y\"\n",
        )
        .unwrap();
        let retention = config.retention.retention();
        assert_eq!(retention.outbox, None);
        assert_eq!(retention.evidence, Some(Duration::from_secs(365 * 86_400)));
        assert!(retention.cases.is_some());
        let err = load("cameras = \"c\"\n[retention]\nevery = \"10ms\"\n").unwrap_err();
        assert!(err.contains("retention.every"), "{err}");
    }

    #[test]
    fn defaults_fill_everything_but_the_camera_list() {
        let config = load("cameras = \"cams\"\n").unwrap();
        assert!(config.cameras.ends_with("cams") && config.cameras.is_absolute());
        assert_eq!(config.sampling.interval, Duration::from_secs(2));
        assert_eq!(config.patrol.slots, 0);
        assert_eq!(config.rtsp.transport, Transport::Tcp);
        assert_eq!(config.shutdown_deadline, Duration::from_secs(10));
        assert_eq!(config.snapshot_every, Duration::from_secs(10));
        assert_eq!(config.snapshot_budget_mib, 128);
        // Delivered events go after 30 days; evidence and cases stay unless asked.
        let retention = config.retention.retention();
        assert_eq!(retention.outbox, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!((retention.evidence, retention.cases), (None, None));
        let err = load("db = \"x.db\"\n").unwrap_err();
        assert!(err.contains("missing field `cameras`"), "{err}");
    }

    #[test]
    fn errors_name_the_field() {
        let err = load("cameras = \"c\"\n[sampling]\ninterval = \"soon\"\n").unwrap_err();
        assert!(err.contains("run.toml") && err.contains("soon"), "{err}");
        let err = load("cameras = \"c\"\n[detector]\nprovider = \"tpu\"\n").unwrap_err();
        assert!(
            err.contains("detector.provider: unknown execution provider"),
            "{err}"
        );
        let err = load("cameras = \"c\"\n[patrol]\nslots = 5\nsamples = 0\n").unwrap_err();
        assert!(err.contains("patrol.samples"), "{err}");
        let err = load("cameras = \"c\"\n[rtsp]\ntransprot = \"udp\"\n").unwrap_err();
        assert!(err.contains("transprot"), "{err}");
    }

    #[test]
    fn camera_health_settings_are_checked() {
        let config = load("cameras = \"c\"\n").unwrap();
        assert_eq!(config.rtsp.fail_after, 5);
        assert_eq!(config.rtsp.failed_retry, Duration::from_secs(300));
        assert_eq!(config.api.ready_min_healthy, 0.5);
        for (text, says) in [
            (
                "[rtsp]\nfail_after = 0\n",
                "run.toml: rtsp.fail_after: must be at least 1",
            ),
            ("[rtsp]\nfail_after = -1\n", "fail_after"),
            (
                "[api]\nready_min_healthy = 1.5\n",
                "run.toml: api.ready_min_healthy: 1.5 is not a share between 0 and 1",
            ),
            (
                "[api]\nready_min_healthy = nan\n",
                "api.ready_min_healthy: NaN",
            ),
        ] {
            let err = load(&format!("cameras = \"c\"\n{text}")).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
        // Zero turns the picture checks and the readiness share off.
        load("cameras = \"c\"\n[rtsp]\nfrozen_after = \"0s\"\ndark_after = \"0s\"\n[api]\nready_min_healthy = 0\n")
            .unwrap();
    }

    #[test]
    fn secrets_paths_are_relative_to_the_file() {
        let config = load(
            "cameras = \"c\"\nsecrets = \"secrets.toml\"\n\
             [sinks]\nwebhook = \"http://h/x\"\nwebhook_secret_file = \"hook.secret\"\n",
        )
        .unwrap();
        assert!(config.secrets.as_ref().unwrap().is_absolute());
        assert!(config.camera_secrets() == crate::config::Secrets::Resolve(config.secrets.clone()));
        let err = config.webhook_signer().unwrap_err().to_string();
        assert!(
            err.contains("hook.secret") && err.contains("webhook secret"),
            "{err}"
        );
    }

    #[test]
    fn zero_and_absurd_durations_are_refused() {
        for (section, key, value, says) in [
            ("sinks", "every", "1ns", "at least 100ms"),
            ("sinks", "webhook_timeout", "0s", "at least"),
            ("rtsp", "connect_timeout", "0s", "at least 100ms"),
            ("rtsp", "frame_timeout", "0s", "at least 100ms"),
            ("rtsp", "backoff_max", "0s", "at least"),
            ("patrol", "revisit", "0s", "at least 1s"),
            ("patrol", "visit_timeout", "0s", "at least 100ms"),
            ("console", "session_ttl", "0s", "at least 1s"),
            ("sampling", "interval", "0s", "at least"),
            ("rtsp", "connect_timeout", "100000000h", "at most a year"),
            ("detector", "max_wait", "9999999999h", "at most a year"),
            ("rtsp", "failed_retry", "0s", "at least 1s"),
            ("rtsp", "frozen_after", "100000000h", "at most a year"),
            ("api", "ready_grace", "100000000h", "at most a year"),
        ] {
            let err = load(&format!(
                "cameras = \"c\"\n[{section}]\n{key} = \"{value}\"\n"
            ))
            .unwrap_err();
            assert!(
                err.contains(&format!("run.toml: {section}.{key}: ")) && err.contains(says),
                "{err}"
            );
        }
        let err = load("cameras = \"c\"\nshutdown_deadline = \"0s\"\n").unwrap_err();
        assert!(
            err.contains("run.toml: shutdown_deadline: 0s is too short"),
            "{err}"
        );
        // Zero where it means something is fine.
        load(
            "cameras = \"c\"\nsnapshot_every = \"0s\"\n[detector]\nmax_wait = \"0s\"\n\
              [console]\nsuppress_for = \"0s\"\n[sinks]\nevery = \"100ms\"\n",
        )
        .unwrap();
    }

    #[test]
    fn an_unknown_model_a_binary_file_and_a_huge_value_name_the_file() {
        let err = load("cameras = \"c\"\n[detector]\nmodel = \"yolo_nope\"\n").unwrap_err();
        assert!(
            err.contains("run.toml: detector.model: unknown model `yolo_nope`"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        std::fs::write(&path, b"cameras = \"\xff\"\n").unwrap();
        let err = RunConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("run.toml: not UTF-8 text"), "{err}");
        let huge = format!(
            "cameras = \"c\"\n[sinks]\nevery = \"{}\"\n",
            "\0".repeat(100_000)
        );
        let err = load(&huge).unwrap_err();
        assert!(err.len() < 1000 && err.contains("run.toml"), "{err}");
        let huge = format!(
            "cameras = \"c\"\n[sinks]\nevery = \"{}\"\n",
            "7".repeat(100_000)
        );
        let err = load(&huge).unwrap_err();
        assert!(
            err.len() < 1000 && err.contains("run.toml") && err.contains('…'),
            "{err}"
        );
    }
}
