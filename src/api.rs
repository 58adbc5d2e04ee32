//! The daemon's HTTP API: probes, Prometheus metrics, the cameras' live status and latest
//! pictures, the case store with its evidence images, and the operators' console
//! ([`crate::console`]: its pages and write routes, described in full at
//! `/api/openapi.json`).
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | `200 ok` while the process serves (no token needed) |
//! | `GET /readyz` | `200 ready`, or `503` with the reason, e.g. too few healthy cameras (no token needed) |
//! | `GET /metrics` | Prometheus text exposition 0.0.4 |
//! | `GET /api/cameras?state=` | every camera's [`CameraView`], optionally of one state or problem |
//! | `GET /api/cameras/{id}` | one camera |
//! | `GET /api/replicas` | with `[cluster]`: the live replicas, their capacity and camera counts (`404` without) |
//! | `GET /api/cameras/{id}/snapshot.jpg` | the camera's latest analysed frame, 480 px wide, nothing drawn on it (`404` until it has one); `X-Snapshot-Taken-At` gives the frame's Unix time |
//! | `GET /api/cases?status=&camera=&event=&since=&until=&limit=` | cases, oldest first, each with `overdue` |
//! | `GET /api/cases/{id}` | one case with its evidence and history |
//! | `GET /api/cases/{id}/evidence` | the case's evidence images and their URLs |
//! | `GET /api/cases/{id}/evidence/{kind}.jpg` | one evidence image |
//!
//! Every route but the probes, the sign-in page and the page assets needs `Authorization:
//! Bearer <token>` or a console session (see [`crate::console::auth`]). Errors are
//! `{"error": "..."}` with the status code saying what kind.
//!
//! Cases change through the pipeline and through operator actions (the console's write
//! routes, `cgbot cases set-status/confirm/reject`); the API reaches the store through
//! its own SQLite connection (WAL lets it read while the daemon writes). Camera stream URLs are shown exactly as the daemon hands them over in
//! [`CameraView`], so the daemon must redact RTSP credentials before they get here.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use tokio::sync::Semaphore;

use axum::extract::rejection::QueryRejection;
use axum::extract::DefaultBodyLimit;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::cases::{Case, EvidenceSource, LocalTimes, PublishedEntry, Status};
use crate::console::auth::Auth;
use crate::console::{CameraBook, ConsoleConfig};
pub use crate::pipeline::live::Snapshot;
use crate::store::{CaseFilter, Store};

mod listener;
pub use listener::MAX_CONNECTIONS;

/// What the running daemon exposes to the API. Implemented by the live pipeline.
///
/// The methods are called on the async runtime, so they must answer from state the
/// daemon already holds (no I/O, no long locks).
pub trait DaemonView: Send + Sync + 'static {
    /// Ok when the daemon can do its job (model loaded, store open, camera list loaded, enough
    /// cameras healthy); Err(reason) otherwise.
    fn readiness(&self) -> Result<(), String>;
    /// Prometheus text exposition (version 0.0.4) of all metrics.
    fn metrics_text(&self) -> String;
    /// Every configured camera's live status.
    fn cameras(&self) -> Vec<CameraView>;
    /// The camera's latest analysed frame (a small JPEG with its detections), if one was
    /// taken since it joined the list and is still kept. Views without pictures keep the
    /// default.
    fn snapshot(&self, camera_id: &str) -> Option<Snapshot> {
        let _ = camera_id;
        None
    }
    /// Makes the camera's latest picture its reference view and returns it, to be kept.
    /// `None` for a camera this daemon does not watch, `Some(None)` when it has no picture
    /// yet or its view is not guarded.
    fn rebase_view(&self, camera_id: &str) -> Option<Option<crate::decode::ViewSignature>> {
        let _ = camera_id;
        None
    }
    /// The live replicas sharing the database and the cameras each owns; `None` for a
    /// daemon without `[cluster]`.
    fn replicas(&self) -> Option<Vec<crate::cluster::ReplicaLoad>> {
        None
    }
}

/// A camera's place in its life cycle; what is wrong with it, if anything, is its
/// [`CameraProblem`]. `?state=` takes the names of both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraState {
    Connecting,
    Streaming,
    /// Waiting to reconnect after a failure.
    Backoff,
    /// Given up on after `rtsp.fail_after` failures in a row (or a configuration that
    /// cannot work): retried only every `rtsp.failed_retry`.
    Failed,
    /// Patrol: between visits.
    Waiting,
    Stopped,
    /// Owned by another replica (see `replica`); its status is on that replica's API.
    Elsewhere,
}

impl CameraState {
    pub const ALL: [CameraState; 7] = [
        CameraState::Connecting,
        CameraState::Streaming,
        CameraState::Backoff,
        CameraState::Failed,
        CameraState::Waiting,
        CameraState::Stopped,
        CameraState::Elsewhere,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CameraState::Connecting => "connecting",
            CameraState::Streaming => "streaming",
            CameraState::Backoff => "backoff",
            CameraState::Failed => "failed",
            CameraState::Waiting => "waiting",
            CameraState::Stopped => "stopped",
            CameraState::Elsewhere => "elsewhere",
        }
    }
}

/// What keeps a camera from being watched, or makes its picture useless; the details are
/// in its `last_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraProblem {
    /// Connection refused, host unreachable, or closed before answering.
    Refused,
    /// 401 after Digest: wrong credentials, or none where the camera wants them.
    Unauthorized,
    /// 404: the path names no stream.
    NotFound,
    /// No answer to the handshake in time.
    Timeout,
    /// The session stopped sending video.
    Stalled,
    /// The camera closed a playing session or the connection broke.
    Disconnected,
    /// Any other RTSP failure: an error status, a broken protocol, no H.264/H.265 video.
    Error,
    /// No stream URL, or one that cannot be an RTSP camera: fix the camera file.
    Misconfigured,
    /// The picture has not changed for longer than `rtsp.frozen_after`.
    Frozen,
    /// The picture has been near-uniform (covered lens, black) for longer than
    /// `rtsp.dark_after`.
    Dark,
    /// The picture shows other ground than the camera's reference view (a PTZ camera
    /// turned or zoomed): its rules are suspended until the view returns or an operator
    /// re-bases it (`rtsp.view_guard`).
    ViewChanged,
}

impl CameraProblem {
    pub const ALL: [CameraProblem; 11] = [
        CameraProblem::Refused,
        CameraProblem::Unauthorized,
        CameraProblem::NotFound,
        CameraProblem::Timeout,
        CameraProblem::Stalled,
        CameraProblem::Disconnected,
        CameraProblem::Error,
        CameraProblem::Misconfigured,
        CameraProblem::Frozen,
        CameraProblem::Dark,
        CameraProblem::ViewChanged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CameraProblem::Refused => "refused",
            CameraProblem::Unauthorized => "unauthorized",
            CameraProblem::NotFound => "not_found",
            CameraProblem::Timeout => "timeout",
            CameraProblem::Stalled => "stalled",
            CameraProblem::Disconnected => "disconnected",
            CameraProblem::Error => "error",
            CameraProblem::Misconfigured => "misconfigured",
            CameraProblem::Frozen => "frozen",
            CameraProblem::Dark => "dark",
            CameraProblem::ViewChanged => "view_changed",
        }
    }
}

/// Serialized by their `as_str` names, so the names are written once.
macro_rules! serialize_by_name {
    ($($kind:ty),*) => {$(
        impl Serialize for $kind {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }
    )*};
}
serialize_by_name!(CameraState, CameraProblem);

/// What `?state=` asks for: cameras in a life-cycle state, or with a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraCondition {
    State(CameraState),
    Problem(CameraProblem),
}

impl CameraCondition {
    /// Every name `?state=` takes: the states, then the problems.
    pub fn all() -> impl Iterator<Item = CameraCondition> {
        CameraState::ALL
            .into_iter()
            .map(CameraCondition::State)
            .chain(CameraProblem::ALL.into_iter().map(CameraCondition::Problem))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CameraCondition::State(s) => s.as_str(),
            CameraCondition::Problem(p) => p.as_str(),
        }
    }

    pub fn holds_for(self, camera: &CameraView) -> bool {
        match self {
            CameraCondition::State(s) => camera.state == s,
            CameraCondition::Problem(p) => camera.problem == Some(p),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown camera state or problem `{0}` (one of {names})", names = CameraCondition::all().map(CameraCondition::as_str).collect::<Vec<_>>().join(", "))]
pub struct UnknownCameraState(String);

impl FromStr for CameraCondition {
    type Err = UnknownCameraState;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        CameraCondition::all()
            .find(|c| c.as_str() == text)
            .ok_or_else(|| UnknownCameraState(text.to_string()))
    }
}

/// One camera's live status, served as it is given.
#[derive(Debug, Clone, Serialize)]
pub struct CameraView {
    pub id: String,
    pub name: String,
    pub state: CameraState,
    /// What is wrong with the camera or its picture, if anything.
    pub problem: Option<CameraProblem>,
    /// Stream URL with credentials already redacted by the daemon.
    pub stream: Option<String>,
    pub priority: bool,
    /// Unix seconds.
    pub last_frame_at: Option<f64>,
    /// Analysed frames per second over the last minute.
    pub sampled_fps: f64,
    pub last_error: Option<String>,
    /// Sessions tried (each DESCRIBE/SETUP/PLAY handshake started).
    pub connection_attempts: u64,
    /// New sessions after one that delivered video: how often a working stream was lost.
    pub reconnects: u64,
    /// Failed attempts since the camera last delivered video.
    pub consecutive_failures: u64,
    pub frames_received: u64,
    pub frames_decoded: u64,
    pub frames_analysed: u64,
    pub frames_skipped: u64,
    /// Patrol visits so far.
    pub visits: u64,
    /// Worst revisit interval of a patrolled camera: the longest gap between the starts of
    /// two visits, or the current wait if longer.
    pub revisit_interval_s: Option<f64>,
    /// Seconds since a patrolled camera's last visit started (since it joined the patrol,
    /// if never visited).
    pub since_visit_s: Option<f64>,
    /// How alike the latest picture is to the reference view (1: the same ground), when it
    /// could be judged (`rtsp.view_guard`).
    pub view_likeness: Option<f64>,
    /// The replica that owns the camera when several share the database (`[cluster]`).
    pub replica: Option<String>,
}

impl CameraView {
    /// A configured camera this process does not watch (`cgbot console`).
    pub fn unwatched(id: &str, name: &str) -> Self {
        CameraView {
            id: id.to_string(),
            name: name.to_string(),
            state: CameraState::Stopped,
            problem: None,
            stream: None,
            priority: false,
            last_frame_at: None,
            sampled_fps: 0.0,
            last_error: None,
            connection_attempts: 0,
            reconnects: 0,
            consecutive_failures: 0,
            frames_received: 0,
            frames_decoded: 0,
            frames_analysed: 0,
            frames_skipped: 0,
            visits: 0,
            revisit_interval_s: None,
            since_visit_s: None,
            view_likeness: None,
            replica: None,
        }
    }
}

pub struct ApiConfig {
    /// Where the daemon binds the listener it hands to [`serve`].
    pub listen: SocketAddr,
    /// Bearer token required on every route but the probes.
    pub token: Option<String>,
    /// The case database the daemon writes (evidence images in `<db>.evidence/`).
    pub db: PathBuf,
    /// The operators' console: camera files, users, sessions, suppressions.
    pub console: ConsoleConfig,
}

/// Most cases one `GET /api/cases` returns, and the default when no `limit` is given.
/// Clients page on with `since` set to the last case's `first_seen`.
pub const MAX_CASES: usize = 1000;

/// Refuses to serve on an address others can reach without a token: the API shows
/// where the cameras are and what they saw.
pub fn check_exposure(listen: SocketAddr, token: Option<&str>) -> Result<(), String> {
    match token {
        Some(token) if token.trim().is_empty() => Err(
            "the HTTP API token is empty: set a real token, or none to serve on loopback only"
                .into(),
        ),
        Some(_) => Ok(()),
        None if listen.ip().to_canonical().is_loopback() => Ok(()),
        None => Err(format!(
            "refusing to serve the HTTP API on {listen} without a token: anyone who can \
             reach it would see the cameras and cases. Set an API token (clients then send \
             `Authorization: Bearer <token>`), or listen on 127.0.0.1:{}",
            listen.port()
        )),
    }
}

/// Serves the API on `listener` until `shutdown` completes, then lets requests in
/// flight finish and returns. Fails at once if [`check_exposure`] refuses the address.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: ApiConfig,
    view: Arc<dyn DaemonView>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    check_exposure(addr, config.token.as_deref())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    tracing::info!(%addr, auth = config.token.is_some(), db = %crate::store::display_db(&config.db), "HTTP API listening");
    axum::serve(
        listener::BoundedListener::new(listener, MAX_CONNECTIONS),
        router(config, view)
            .layer(middleware::from_fn(listener::close_unslotted))
            .into_make_service_with_connect_info::<listener::KeepAlive>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    tracing::info!(%addr, "HTTP API stopped");
    Ok(())
}

/// What every route handler gets: the daemon's view, the case store, who may sign in,
/// the camera files and the console's settings.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) view: Arc<dyn DaemonView>,
    pub(crate) cases: Arc<CaseReader>,
    pub(crate) auth: Arc<Auth>,
    pub(crate) book: Arc<CameraBook>,
    pub(crate) console: Arc<ConsoleConfig>,
}

fn router(config: ApiConfig, view: Arc<dyn DaemonView>) -> Router {
    let console = config.console;
    let state = AppState {
        view,
        cases: Arc::new(CaseReader {
            db: config.db,
            store: Mutex::new(None),
        }),
        auth: Arc::new(Auth::new(
            config.token.as_deref(),
            console.users.clone(),
            console.session_ttl,
        )),
        book: Arc::new(CameraBook::new(console.cameras.clone())),
        console: Arc::new(console),
    };
    let probes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .method_not_allowed_fallback(method_not_allowed);
    let api = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/cameras", get(cameras))
        .route("/api/cameras/{id}", get(camera))
        .route("/api/replicas", get(replicas))
        .route("/api/cameras/{id}/snapshot.jpg", get(camera_snapshot))
        .route("/api/cases", get(cases))
        .route("/api/cases/{id}", get(case))
        .route("/api/cases/{id}/evidence", get(evidence_list))
        .route("/api/cases/{id}/evidence/{name}", get(evidence_image))
        .merge(crate::console::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(
            Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            bounded,
        ));
    // Unknown paths are behind the gate too: without a token nothing about the API is told.
    probes
        .merge(api)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::console::auth::gate,
        ))
        .with_state(state)
}

/// Requests the API works on at once beyond the probes; more are refused at once (503)
/// rather than queued, so a burst of requests cannot take the daemon's threads.
const MAX_IN_FLIGHT: usize = 64;
/// Longest a request may take before it is answered 503.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest path and query.
const MAX_URI: usize = 4096;
/// Largest request body: forms and zone edits are small.
const MAX_BODY: usize = 1 << 20;

/// Keeps every request within the bounds above.
async fn bounded(
    State(in_flight): State<Arc<Semaphore>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let uri = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if uri > MAX_URI {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            format!("the path and query are {uri} bytes; at most {MAX_URI}"),
        )
        .into_response();
    }
    let Ok(_permit) = in_flight.try_acquire() else {
        let mut response = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_IN_FLIGHT} requests are being answered; retry in a moment"),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return response;
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the request took longer than {REQUEST_TIMEOUT:?}"),
        )
        .into_response(),
    }
}

/// An error answer: `{"error": message}` with its status.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// Logs the cause; the client learns only that it was our fault.
    pub(crate) fn internal(what: &str, cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "HTTP API: {what}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error while {what}; the daemon log has the details"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route (see /api/openapi.json)",
    )
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    state.view.readiness().map(|()| "ready").map_err(|reason| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}"),
        )
    })
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.view.metrics_text(),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CameraQuery {
    state: Option<String>,
}

async fn cameras(
    State(state): State<AppState>,
    query: Result<Query<CameraQuery>, QueryRejection>,
) -> Result<Json<Vec<CameraView>>, ApiError> {
    let Query(query) = query?;
    let mut cameras = state.view.cameras();
    if let Some(wanted) = query.state {
        let wanted: CameraCondition = wanted
            .parse()
            .map_err(|e: UnknownCameraState| ApiError::bad_request(e.to_string()))?;
        cameras.retain(|c| wanted.holds_for(c));
    }
    Ok(Json(cameras))
}

async fn replicas(
    State(state): State<AppState>,
) -> Result<Json<Vec<crate::cluster::ReplicaLoad>>, ApiError> {
    state.view.replicas().map(Json).ok_or_else(|| {
        ApiError::not_found("this daemon runs alone: run.toml has no [cluster] section")
    })
}

async fn camera(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CameraView>, ApiError> {
    state
        .view
        .cameras()
        .into_iter()
        .find(|c| c.id == id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no camera {id}")))
}

/// The JPEG as it is kept; the frame it shows may be replaced at any moment, so it is
/// never cached.
async fn camera_snapshot(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match state.view.snapshot(&id) {
        Some(snapshot) => {
            let taken_at = header::HeaderValue::from_str(&format!("{:.3}", snapshot.taken_at))
                .map_err(|e| ApiError::internal("stamping a snapshot", e))?;
            Ok((
                [
                    (header::CONTENT_TYPE, header::HeaderValue::from_static("image/jpeg")),
                    (header::CACHE_CONTROL, header::HeaderValue::from_static("no-store")),
                    (header::HeaderName::from_static("x-snapshot-taken-at"), taken_at),
                ],
                snapshot.jpeg.as_ref().clone(),
            )
                .into_response())
        }
        None if state.view.cameras().iter().any(|c| c.id == id) => Err(ApiError::not_found(
            format!("camera {id} has no snapshot yet: none of its frames analysed since it joined the list (or it was dropped to stay within the snapshot budget)"),
        )),
        None => Err(ApiError::not_found(format!("no camera {id}"))),
    }
}

/// The API's own read connection to the case store, opened on first use (the daemon
/// creates the database) and kept: one connection keeps its prepared statements, and
/// API traffic is light enough that requests taking turns on it cost nothing noticeable.
pub(crate) struct CaseReader {
    db: PathBuf,
    store: Mutex<Option<Store>>,
}

impl CaseReader {
    /// Runs `work` on a blocking thread: SQLite calls block (up to the store's busy
    /// timeout while the daemon checkpoints), and must not stall the async runtime.
    pub(crate) async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&mut Store) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut slot = this.store.lock().unwrap_or_else(PoisonError::into_inner);
            let store = match slot.as_mut() {
                Some(store) => store,
                None => {
                    if !crate::store::may_exist(&this.db) {
                        return Err(ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("no case database at {} yet", this.db.display()),
                        ));
                    }
                    let store = Store::open(&this.db)
                        .map_err(|e| ApiError::internal("opening the case store", e))?;
                    slot.insert(store)
                }
            };
            work(store)
        })
        .await
        .map_err(|e| ApiError::internal("reading the case store", e))?
    }
}

impl CaseReader {
    /// The cases `filter` matches.
    pub(crate) async fn list(self: &Arc<Self>, filter: CaseFilter) -> Result<Vec<Case>, ApiError> {
        self.run(move |store| {
            store
                .cases(&filter)
                .map_err(|e| ApiError::internal("listing cases", e))
        })
        .await
    }
}

/// `since`/`until` take Unix seconds or an RFC 3339 UTC time.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseQuery {
    status: Option<Status>,
    camera: Option<String>,
    event: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
}

pub(crate) fn parse_time(field: &str, text: &str) -> Result<f64, ApiError> {
    if let Ok(secs) = text.parse::<f64>() {
        if secs.is_finite() {
            return Ok(secs);
        }
    }
    humantime::parse_rfc3339_weak(text)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{field}: `{text}` is neither Unix seconds nor an RFC 3339 UTC time such as 2026-11-24T08:00:00Z"
            ))
        })
}

/// A case as listed: with whether it is overdue now.
#[derive(Serialize)]
struct CaseItem {
    #[serde(flatten)]
    case: Case,
    /// Each time also as RFC 3339 in the camera's local time.
    #[serde(flatten)]
    times: LocalTimes,
    /// Past its deadline and still open.
    overdue: bool,
}

impl CaseItem {
    fn at(case: Case, now: f64) -> Self {
        CaseItem {
            overdue: case.is_overdue(now),
            times: LocalTimes::of(&case),
            case,
        }
    }
}

async fn cases(
    State(state): State<AppState>,
    query: Result<Query<CaseQuery>, QueryRejection>,
) -> Result<Json<Vec<CaseItem>>, ApiError> {
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(MAX_CASES);
    if limit > MAX_CASES {
        return Err(ApiError::bad_request(format!(
            "limit {limit} is above {MAX_CASES}; page with `since` instead"
        )));
    }
    let filter = CaseFilter {
        status: query.status,
        camera: query.camera,
        event: query.event,
        since: query
            .since
            .as_deref()
            .map(|t| parse_time("since", t))
            .transpose()?,
        until: query
            .until
            .as_deref()
            .map(|t| parse_time("until", t))
            .transpose()?,
        limit: Some(limit),
        ..CaseFilter::default()
    };
    let cases = state.cases.list(filter).await?;
    let now = crate::clock::unix_now();
    Ok(Json(
        cases
            .into_iter()
            .map(|case| CaseItem::at(case, now))
            .collect(),
    ))
}

/// An evidence image as the API shows it: where to fetch it, not where it lies on disk.
#[derive(Debug, Serialize)]
struct EvidenceItem {
    /// `first`, `first-crop`, `filed`, `filed-crop`, `reopened`, `after`.
    kind: String,
    ts: f64,
    url: String,
    /// `analysed`, `main_stream` or `fallback` (the analysed frame because the main-stream
    /// grab failed); `null` for images stored before cgbot recorded it.
    source: Option<EvidenceSource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fallback_reason: Option<String>,
}

#[derive(Serialize)]
struct CaseDetail {
    #[serde(flatten)]
    case: CaseItem,
    evidence: Vec<EvidenceItem>,
    history: Vec<PublishedEntry>,
}

/// The case's evidence, or 404 when there is no such case.
fn evidence_of(store: &Store, id: &str) -> Result<Vec<EvidenceItem>, ApiError> {
    let items = store
        .evidence(id)
        .map_err(|e| ApiError::internal("reading evidence", e))?;
    Ok(items
        .into_iter()
        .map(|e| EvidenceItem {
            url: format!("/api/cases/{id}/evidence/{}.jpg", e.kind),
            kind: e.kind,
            ts: e.ts,
            source: e.source,
            fallback_reason: e.fallback_reason,
        })
        .collect())
}

fn find_case(store: &Store, id: &str) -> Result<Case, ApiError> {
    store
        .case(id)
        .map_err(|e| ApiError::internal("reading a case", e))?
        .ok_or_else(|| ApiError::not_found(format!("no case {id}")))
}

async fn case(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CaseDetail>, ApiError> {
    let detail = state
        .cases
        .run(move |store| {
            let case = find_case(store, &id)?;
            let history = store
                .history(&id)
                .map_err(|e| ApiError::internal("reading case history", e))?
                .into_iter()
                .map(|entry| PublishedEntry::of(entry, case.utc_offset))
                .collect();
            Ok(CaseDetail {
                evidence: evidence_of(store, &id)?,
                history,
                case: CaseItem::at(case, crate::clock::unix_now()),
            })
        })
        .await?;
    Ok(Json(detail))
}

async fn evidence_list(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<EvidenceItem>>, ApiError> {
    let items = state
        .cases
        .run(move |store| {
            find_case(store, &id)?;
            evidence_of(store, &id)
        })
        .await?;
    Ok(Json(items))
}

/// Case ids and evidence kinds are made of these; anything else (`/`, `..`, `\`) could
/// lead out of the evidence directory and is refused before the disk is touched.
fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Serves evidence image `kind` of a case, for an evidence kind the store lists for the
/// case, from wherever the store keeps it (files beside SQLite, the database with
/// PostgreSQL); a file is found from checked names, never from the request or the
/// database as is.
async fn evidence_image(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let kind = name
        .strip_suffix(".jpg")
        .filter(|kind| plain_name(kind) && plain_name(&id))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "`{name}` is not an evidence image name such as first.jpg"
            ))
        })?
        .to_string();
    let image = state
        .cases
        .run(move |store| {
            find_case(store, &id)?;
            let listed = store
                .evidence(&id)
                .map_err(|e| ApiError::internal("reading evidence", e))?
                .iter()
                .any(|e| e.kind == kind);
            if !listed {
                return Err(ApiError::not_found(format!(
                    "case {id} has no {kind} image"
                )));
            }
            let image = store
                .evidence_image(&id, &kind)
                .map_err(|e| ApiError::internal("reading an evidence image", e))?;
            if image.is_none() {
                tracing::warn!(case = %id, kind = %kind, "evidence image listed in the store is missing");
            }
            Ok(image)
        })
        .await?;
    match image {
        Some(bytes) => Ok(([(header::CONTENT_TYPE, "image/jpeg")], bytes).into_response()),
        None => Err(ApiError::not_found(format!("{name} is missing"))),
    }
}

#[cfg(test)]
mod tests;
