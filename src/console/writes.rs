//! What the console changes — case verdicts and statuses, suppressions, zones — as one set
//! of functions shared by the pages and the JSON write API (documented in
//! `openapi.json`, served at `/api/openapi.json`). Every change names who made it.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::auth::{Principal, Role};
use super::i18n::Lang;
use crate::api::{parse_time, ApiError, AppState};
use crate::cases::{Case, Categories, RejectReason, Status};
use crate::clock::unix_now;
use crate::config::{self, ZoneEditError, ZoneSpec};
use crate::rules::EventCatalogue;
use crate::store::{OperatorAction, ReferenceView, StoreError, Suppression};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/openapi.json", get(openapi))
        .route("/api/cases/{id}/status", post(set_status))
        .route("/api/cases/{id}/verdict", post(verdict))
        .route("/api/cameras/{id}/zones", get(get_zones).put(put_zones))
        .route("/api/cameras/{id}/zones/preview", post(preview_zones))
        .route("/api/cameras/{id}/view/rebase", post(rebase_view))
        .route("/api/suppressions", get(list_suppressions))
        .route("/api/suppressions/{id}/lift", post(lift))
        .route("/api/stats", get(stats))
        .route("/api/audit", get(audit_log))
}

/// An operator's decision on a case.
#[derive(Debug, Clone, Copy)]
pub enum Action {
    Confirm,
    Reject(RejectReason),
    SetStatus(Status),
}

fn store_error(what: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound { .. } => ApiError::not_found(e.to_string()),
        StoreError::Operator(_) | StoreError::Conflict { .. } => {
            ApiError::new(StatusCode::CONFLICT, e.to_string())
        }
        e => ApiError::internal(what, e),
    }
}

/// Applies an operator's decision through the store (lifecycle checked, history, outbox
/// event, suppression for a rejection, audit), as `principal`.
pub async fn act(
    state: &AppState,
    principal: &Principal,
    id: &str,
    action: Action,
    note: Option<String>,
) -> Result<Case, ApiError> {
    let action = match action {
        Action::Confirm => OperatorAction::Confirm,
        Action::Reject(reason) => OperatorAction::Reject(reason),
        Action::SetStatus(status) => OperatorAction::SetStatus(status),
    };
    let (id, actor, suppress_for) = (
        id.to_string(),
        principal.name.clone(),
        state.console.suppress_for,
    );
    state
        .cases
        .run(move |store| {
            store
                .operator_action(&id, action, &actor, note, unix_now(), suppress_for)
                .map_err(|e| store_error("recording a decision", e))
        })
        .await
}

/// Records a console action that is not a case change (sign-in, zone edit).
pub async fn audit(state: &AppState, actor: &str, action: &str, target: &str, detail: &str) {
    let (actor, action, target, detail) = (
        actor.to_string(),
        action.to_string(),
        target.to_string(),
        detail.to_string(),
    );
    let recorded = state
        .cases
        .run(move |store| {
            store
                .record_audit(&actor, &action, &target, &detail, unix_now())
                .map_err(|e| ApiError::internal("writing the audit log", e))
        })
        .await;
    if let Err(e) = recorded {
        tracing::error!(error = %e.message, "console: audit entry lost");
    }
}

pub async fn lift_suppression(
    state: &AppState,
    principal: &Principal,
    id: i64,
) -> Result<Suppression, ApiError> {
    principal.require_admin("lifting a suppression")?;
    let actor = principal.name.clone();
    state
        .cases
        .run(move |store| {
            store
                .lift_suppression(id, &actor, unix_now())
                .map_err(|e| store_error("lifting a suppression", e))
        })
        .await
}

/// Every event of the built-in catalogue: (event, category code, category name).
pub fn event_names() -> Vec<(String, String, String)> {
    let categories = Categories::builtin();
    EventCatalogue::builtin()
        .events()
        .into_iter()
        .filter_map(|info| {
            let category = categories.get(&info.category)?;
            Some((info.event, category.code.clone(), category.name.clone()))
        })
        .collect()
}

/// The latest evidence image of any case of the camera, without its caption band: its
/// picture when the daemon has no snapshot (the console without cameras, or a camera not
/// analysed yet), on which the zone editor draws zones in the picture's coordinates.
pub async fn latest_evidence_picture(
    state: &AppState,
    camera: &str,
) -> Result<Option<Vec<u8>>, ApiError> {
    let camera = camera.to_string();
    state
        .cases
        .run(move |store| {
            let Some((case, kind, caption_height)) = store
                .latest_picture(&camera)
                .map_err(|e| ApiError::internal("finding a picture", e))?
            else {
                return Ok(None);
            };
            let jpeg = store
                .evidence_image(&case, &kind)
                .map_err(|e| ApiError::internal("reading a picture", e))?;
            jpeg.map(|jpeg| crate::annotate::without_caption(&jpeg, caption_height))
                .transpose()
                .map_err(|e| ApiError::internal("cutting the caption off a picture", e))
        })
        .await
}

/// What the zone editor starts from: the camera's zones and their version, the picture's
/// detections (normalised boxes), the events to choose from and the editor's words.
pub fn editor_data(
    state: &AppState,
    principal: &Principal,
    camera: &str,
    lang: Lang,
) -> serde_json::Value {
    let snapshot = state.view.snapshot(camera);
    let detections: Vec<serde_json::Value> = snapshot
        .as_ref()
        .map(|s| {
            s.detections
                .iter()
                .map(|d| {
                    let (w, h) = (s.width as f32, s.height as f32);
                    json!({
                        "label": d.label, "score": d.score,
                        "box": [d.bbox[0] / w, d.bbox[1] / h, d.bbox[2] / w, d.bbox[3] / h],
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let picture = if snapshot.is_some() {
        "live"
    } else {
        "evidence"
    };
    let events: Vec<serde_json::Value> = event_names()
        .into_iter()
        .map(|(id, code, name)| json!({ "id": id, "name": format!("{code} {name}") }))
        .collect();
    let texts: serde_json::Map<String, serde_json::Value> = [
        "zone_id",
        "zone_name",
        "events",
        "min_dwell",
        "active_hours",
        "min_confidence",
        "delete_zone",
        "select_zone",
        "saved",
        "would_count",
        "placeholder_dwell",
        "placeholder_hours",
    ]
    .into_iter()
    .map(|k| (k.to_string(), json!(lang.text(k))))
    .collect();
    let mut data = json!({
        "camera": camera, "detections": detections, "events": events, "texts": texts,
        "picture": picture, "editable": false, "zones": [], "version": "",
    });
    let Some(path) = state.book.path() else {
        return data;
    };
    match config::camera_zones(path, camera) {
        Ok(zones) => {
            data["zones"] = json!(zones.zones);
            data["version"] = json!(zones.version);
            data["editable"] = json!(principal.role == Role::Admin);
        }
        Err(e) => data["error"] = json!(e.to_string()),
    }
    data
}

fn zone_error(e: ZoneEditError) -> ApiError {
    let status = match &e {
        ZoneEditError::NoSuchCamera(_) => StatusCode::NOT_FOUND,
        ZoneEditError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        ZoneEditError::Conflict { .. } => StatusCode::CONFLICT,
        ZoneEditError::Io { .. } => {
            return ApiError::internal("writing the camera file", e);
        }
    };
    ApiError::new(status, e.to_string())
}

fn camera_files(state: &AppState) -> Result<std::path::PathBuf, ApiError> {
    state.book.path().map(|p| p.to_path_buf()).ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "no camera files are configured here, so zones cannot be edited",
        )
    })
}

// ---------------------------------------------------------------- JSON routes

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    status: Status,
    note: Option<String>,
}

async fn set_status(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Json(body): Json<StatusBody>,
) -> Result<Json<Case>, ApiError> {
    act(
        &state,
        &principal,
        &id,
        Action::SetStatus(body.status),
        body.note,
    )
    .await
    .map(Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
enum VerdictName {
    Confirm,
    Reject,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerdictBody {
    verdict: VerdictName,
    reason: Option<RejectReason>,
    note: Option<String>,
}

async fn verdict(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Json(body): Json<VerdictBody>,
) -> Result<Json<Case>, ApiError> {
    let action = match body.verdict {
        VerdictName::Confirm => Action::Confirm,
        VerdictName::Reject => Action::Reject(body.reason.ok_or_else(|| {
            ApiError::bad_request(format!(
                "a rejection needs a `reason`: one of {}",
                RejectReason::ALL.map(RejectReason::as_str).join(", ")
            ))
        })?),
    };
    act(&state, &principal, &id, action, body.note)
        .await
        .map(Json)
}

async fn get_zones(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let path = camera_files(&state)?;
    let zones = tokio::task::spawn_blocking(move || config::camera_zones(&path, &id))
        .await
        .map_err(|e| ApiError::internal("reading the camera file", e))?
        .map_err(zone_error)?;
    Ok(Json(
        json!({ "camera": zones.camera_id, "version": zones.version, "zones": zones.zones }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ZonesBody {
    version: String,
    zones: Vec<ZoneSpec>,
}

async fn put_zones(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Json(body): Json<ZonesBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.require_admin("editing zones")?;
    let path = camera_files(&state)?;
    let camera = id.clone();
    let count = body.zones.len();
    let version = tokio::task::spawn_blocking(move || {
        config::save_zones(
            &path,
            &camera,
            &body.zones,
            &body.version,
            &EventCatalogue::builtin(),
        )
    })
    .await
    .map_err(|e| ApiError::internal("writing the camera file", e))?
    .map_err(zone_error)?;
    audit(
        &state,
        &principal.name,
        "zones-saved",
        &id,
        &format!("{count} zones, version {version}"),
    )
    .await;
    Ok(Json(json!({ "camera": id, "version": version })))
}

/// The camera's latest picture becomes its reference view: the operator turned it for
/// good, or its zones were redrawn on the new view.
async fn rebase_view(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal.require_admin("re-basing a camera's view")?;
    let signature = match state.view.rebase_view(&id) {
        None => {
            return Err(ApiError::not_found(format!(
                "camera {id} is not watched by this daemon"
            )))
        }
        Some(None) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("camera {id} has no analysed picture yet, or rtsp.view_guard is off"),
            ))
        }
        Some(Some(signature)) => signature,
    };
    // Kept, so that a restart or another replica judges the camera against this view.
    let view = ReferenceView {
        signature,
        taken_at: unix_now(),
        taken_by: principal.name.clone(),
    };
    let camera = id.clone();
    state
        .cases
        .run(move |store| {
            store
                .set_reference_view(&camera, &view)
                .map_err(|e| store_error("keeping the reference view", e))
        })
        .await?;
    audit(&state, &principal.name, "view-rebased", &id, "").await;
    Ok(Json(json!({ "camera": id, "rebased": true })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewBody {
    zones: Vec<ZoneSpec>,
}

/// Which of the picture's detections each zone would count, by the loader's rules.
async fn preview_zones(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<PreviewBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let zones =
        config::validate_zones(&body.zones, &EventCatalogue::builtin()).map_err(zone_error)?;
    let snapshot = state.view.snapshot(&id);
    let counted: Vec<serde_json::Value> = zones
        .iter()
        .map(|zone| {
            let hits: Vec<serde_json::Value> = snapshot
                .iter()
                .flat_map(|s| s.detections.iter().enumerate().map(move |(i, d)| (s, i, d)))
                .filter_map(|(s, i, d)| {
                    let events = zone.events_for(&d.label, d.score, d.bbox, s.width, s.height);
                    (!events.is_empty())
                        .then(|| json!({ "detection": i, "label": d.label, "events": events }))
                })
                .collect();
            json!({ "zone": zone.id, "counted": hits })
        })
        .collect();
    Ok(Json(
        json!({ "camera": id, "has_picture": snapshot.is_some(), "zones": counted }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SuppressionQuery {
    camera: Option<String>,
    #[serde(default)]
    active: bool,
}

async fn list_suppressions(
    State(state): State<AppState>,
    Query(query): Query<SuppressionQuery>,
) -> Result<Json<Vec<Suppression>>, ApiError> {
    let at = query.active.then(unix_now);
    state
        .cases
        .run(move |store| {
            store
                .suppressions(query.camera.as_deref(), at)
                .map_err(|e| ApiError::internal("reading suppressions", e))
        })
        .await
        .map(Json)
}

async fn lift(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<i64>,
) -> Result<Json<Suppression>, ApiError> {
    lift_suppression(&state, &principal, id).await.map(Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    since: Option<String>,
    until: Option<String>,
    /// Seconds east of UTC for the days (default +08:00).
    utc_offset: Option<i64>,
}

async fn stats(
    State(state): State<AppState>,
    Query(query): Query<StatsQuery>,
) -> Result<Json<crate::store::Stats>, ApiError> {
    let since = query
        .since
        .as_deref()
        .map(|t| parse_time("since", t))
        .transpose()?;
    let until = query
        .until
        .as_deref()
        .map(|t| parse_time("until", t))
        .transpose()?;
    let offset = query.utc_offset.unwrap_or(super::book::DEFAULT_UTC_OFFSET);
    state
        .cases
        .run(move |store| {
            store
                .stats(since, until, offset, unix_now())
                .map_err(|e| ApiError::internal("counting cases", e))
        })
        .await
        .map(Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<usize>,
}

async fn audit_log(
    State(state): State<AppState>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Vec<crate::store::AuditEntry>>, ApiError> {
    let limit = query.limit.unwrap_or(200).min(10_000);
    state
        .cases
        .run(move |store| {
            store
                .audit_log(limit)
                .map_err(|e| ApiError::internal("reading the audit log", e))
        })
        .await
        .map(Json)
}
