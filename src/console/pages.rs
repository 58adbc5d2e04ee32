//! The console's pages: sign-in, the review queue, one case, the cameras, one camera with
//! its zone editor, the statistics, and the Excel export. Rendered on the server; forms
//! post back here and redirect (post/redirect/get), with the outcome in the query.

use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use minijinja::{context, Environment, Value};
use serde::{Deserialize, Serialize};

use super::auth::{self, Principal, Role};
use super::book::{Loaded, DEFAULT_UTC_OFFSET};
use super::i18n::Lang;
use super::writes::{self, event_names, Action};
use super::{charts, export};
use crate::api::{ApiError, AppState, CameraCondition, CameraView};
use crate::cases::{Case, RejectReason, Status, VerdictKind};
use crate::clock::unix_now;
use crate::local_time::{local_date, local_time, offset_label, parse_local_date};
use crate::store::CaseFilter;

const LANG_COOKIE: &str = "cgbot_lang";
/// Cases per page of the queue.
const PAGE_SIZE: usize = 50;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/cases") }))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/lang", get(switch_language))
        .route("/assets/{name}", get(asset))
        .route("/cases", get(queue))
        .route("/cases/bulk", post(bulk))
        .route("/cases/{id}", get(case_page))
        .route("/cases/{id}/action", post(case_action))
        .route("/cameras", get(cameras_page))
        .route("/cameras/{id}", get(camera_page))
        .route("/cameras/{id}/picture.jpg", get(picture))
        .route("/suppressions/{id}/lift", post(lift))
        .route("/stats", get(stats_page))
        .route("/export.xlsx", get(export_xlsx))
}

fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, text) in [
            ("base.html", include_str!("templates/base.html")),
            ("login.html", include_str!("templates/login.html")),
            ("queue.html", include_str!("templates/queue.html")),
            ("case.html", include_str!("templates/case.html")),
            ("cameras.html", include_str!("templates/cameras.html")),
            ("camera.html", include_str!("templates/camera.html")),
            ("stats.html", include_str!("templates/stats.html")),
        ] {
            env.add_template(name, text)
                .expect("the console's templates are valid");
        }
        env
    })
}

/// Renders a page; a template error is our bug, logged and answered with a 500.
fn render(name: &str, context: Value) -> Response {
    match templates()
        .get_template(name)
        .and_then(|t| t.render(context))
    {
        Ok(html) => Html(html).into_response(),
        Err(e) => ApiError::internal("rendering a page", format!("{name}: {e:#}")).into_response(),
    }
}

fn lang_of(headers: &HeaderMap) -> Lang {
    auth::cookie(headers, LANG_COOKIE).map_or(Lang::Zh, |value| Lang::parse(&value))
}

/// Who looks at a page, in which language, from where, with the camera files as they are:
/// what every page handler starts from.
struct Viewer {
    principal: Principal,
    lang: Lang,
    here: String,
    cameras: Arc<Loaded>,
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        // The gate puts the principal there for every route that is not public.
        let principal = parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| {
                ApiError::new(StatusCode::UNAUTHORIZED, "sign in first").into_response()
            })?;
        Ok(Viewer {
            principal,
            lang: lang_of(&parts.headers),
            here: parts
                .uri
                .path_and_query()
                .map_or("/".into(), |p| p.to_string()),
            cameras: state.book.load(),
        })
    }
}

impl Viewer {
    fn frame(&self, nav: &'static str, flash: Flash) -> Frame<'_> {
        Frame {
            principal: &self.principal,
            lang: self.lang,
            nav,
            here: self.here.clone(),
            camera_file_error: self.cameras.error.clone(),
            flash,
        }
    }
}

/// What every page shows around its content.
struct Frame<'a> {
    principal: &'a Principal,
    lang: Lang,
    nav: &'static str,
    here: String,
    flash: Flash,
    camera_file_error: Option<String>,
}

impl Frame<'_> {
    fn context(&self, page: Value) -> Value {
        let base = context! {
            tr => self.lang.table(),
            lang => self.lang.code(),
            user => context! { name => self.principal.name, role => role_name(self.principal.role) },
            csrf => self.principal.csrf(),
            nav => self.nav,
            here => self.here,
            error => self.flash.error,
            notice => self.flash.notice,
            camera_file_error => self.camera_file_error,
        };
        context! { ..page, ..base }
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Operator => "operator",
        Role::Admin => "admin",
    }
}

/// The outcome of a form, carried to the next page in its query.
#[derive(Debug, Default, Deserialize)]
struct Flash {
    error: Option<String>,
    notice: Option<String>,
}

/// Only paths on this server are followed after a form or a sign-in.
fn local_path(candidate: Option<&str>, fallback: &str) -> String {
    match candidate {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p.into(),
        _ => fallback.into(),
    }
}

fn with_flash(path: &str, key: &str, message: &str) -> String {
    // Drop an earlier outcome so messages do not pile up in the address.
    let (path_only, query) = path.split_once('?').unwrap_or((path, ""));
    let mut parts: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("error=") && !p.starts_with("notice="))
        .map(str::to_string)
        .collect();
    parts.push(format!(
        "{key}={}",
        percent_encoding::utf8_percent_encode(message, percent_encoding::NON_ALPHANUMERIC)
    ));
    format!("{path_only}?{}", parts.join("&"))
}

// ---------------------------------------------------------------- sign-in

#[derive(Deserialize, Default)]
struct LoginQuery {
    next: Option<String>,
    lang: Option<String>,
}

async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<LoginQuery>,
) -> Response {
    let lang = query.lang.as_deref().map_or(lang_of(&headers), Lang::parse);
    let next = local_path(query.next.as_deref(), "/cases");
    let mut response = render_login(&state, lang, &next, None);
    if let Some(code) = query.lang {
        set_lang_cookie(&mut response, Lang::parse(&code));
    }
    response
}

fn render_login(state: &AppState, lang: Lang, next: &str, error: Option<&str>) -> Response {
    render(
        "login.html",
        context! {
            tr => lang.table(),
            lang => lang.code(),
            next => next,
            error => error,
            has_users => state.auth.has_users(),
        },
    )
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    token: String,
    next: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let lang = lang_of(&headers);
    let next = local_path(form.next.as_deref(), "/cases");
    let auth = state.auth.clone();
    // Argon2 is deliberately slow: off the async threads.
    let checked = tokio::task::spawn_blocking(move || {
        auth.sign_in(form.user.trim(), &form.password, form.token.trim())
    })
    .await
    .ok()
    .flatten();
    let Some((name, role)) = checked else {
        tracing::warn!("console: failed sign-in");
        let mut response = render_login(&state, lang, &next, Some(lang.text("bad_sign_in")));
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        return response;
    };
    let (cookie, _) = state.auth.start_session(&name, role);
    writes::audit(&state, &name, "sign-in", &name, role_name(role)).await;
    let mut response = Redirect::to(&next).into_response();
    auth::set_cookie(&mut response, &cookie);
    response
}

async fn logout(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Response {
    let cookie = auth::sign_out(&state.auth, &principal);
    let mut response = Redirect::to("/login").into_response();
    auth::set_cookie(&mut response, &cookie);
    response
}

#[derive(Deserialize)]
struct LangQuery {
    to: String,
    back: Option<String>,
}

async fn switch_language(Query(query): Query<LangQuery>) -> Response {
    let mut response = Redirect::to(&local_path(query.back.as_deref(), "/cases")).into_response();
    set_lang_cookie(&mut response, Lang::parse(&query.to));
    response
}

fn set_lang_cookie(response: &mut Response, lang: Lang) {
    let cookie = format!(
        "{LANG_COOKIE}={}; SameSite=Strict; Path=/; Max-Age=31536000",
        lang.code()
    );
    auth::set_cookie(response, &cookie);
}

async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "console.css" => (
            include_str!("assets/console.css"),
            "text/css; charset=utf-8",
        ),
        "console.js" => (
            include_str!("assets/console.js"),
            "text/javascript; charset=utf-8",
        ),
        "zones.js" => (
            include_str!("assets/zones.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return ApiError::not_found(format!("no asset {name}")).into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

// ---------------------------------------------------------------- cases

#[derive(Debug, Default, Deserialize, Serialize)]
struct QueueQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    event: String,
    #[serde(default)]
    camera: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    overdue: String,
    page: Option<usize>,
    #[serde(flatten, skip_serializing)]
    flash: Flash,
}

/// A case as the queue and the case page show it.
#[derive(Serialize)]
struct CaseRow {
    id: String,
    status: &'static str,
    status_name: &'static str,
    category: String,
    category_code: String,
    event_name: String,
    camera_id: String,
    camera_name: String,
    zone_name: String,
    address: String,
    grid: String,
    first_seen: String,
    last_seen: String,
    filed_at: String,
    deadline: String,
    closed_at: String,
    close_reason: String,
    overdue: bool,
    verdict: String,
    label: String,
    confidence: String,
    dwell: String,
    offset: String,
    thumb: Option<String>,
}

fn status_name(lang: Lang, status: Status) -> &'static str {
    lang.text(&format!("status_{}", status.as_str()))
}

fn verdict_text(lang: Lang, case: &Case, offset: i64) -> String {
    let Some(v) = &case.verdict else {
        return String::new();
    };
    let kind = match v.kind {
        VerdictKind::Confirmed => lang.text("verdict_confirmed"),
        VerdictKind::Rejected => lang.text("verdict_rejected"),
    };
    let reason = v
        .reason
        .map(|r| format!(" ({})", lang.text(&format!("reason_{}", r.as_str()))))
        .unwrap_or_default();
    let note = v
        .note
        .as_deref()
        .map(|n| format!(" — {n}"))
        .unwrap_or_default();
    format!(
        "{kind}{reason} · {} · {}{note}",
        v.by,
        local_time(v.at, offset)
    )
}

fn case_row(lang: Lang, case: &Case, cameras: &Loaded, now: f64, thumb: Option<String>) -> CaseRow {
    let offset = cameras.utc_offset(&case.camera_id);
    let time = |t: Option<f64>| t.map(|t| local_time(t, offset)).unwrap_or_default();
    CaseRow {
        id: case.id.clone(),
        status: case.status.as_str(),
        status_name: status_name(lang, case.status),
        category: format!("{} {}", case.category.code, case.category.name),
        category_code: case.category.code.clone(),
        event_name: case.category.name.clone(),
        camera_id: case.camera_id.clone(),
        camera_name: case.camera_name.clone(),
        zone_name: case.zone_name.clone(),
        address: case.location.address.clone().unwrap_or_default(),
        grid: case.location.grid.clone().unwrap_or_default(),
        first_seen: local_time(case.first_seen, offset),
        last_seen: local_time(case.last_seen, offset),
        filed_at: time(case.filed_at),
        deadline: time(case.deadline),
        closed_at: time(case.closed_at),
        close_reason: case.close_reason.clone().unwrap_or_default(),
        overdue: case.is_overdue(now),
        verdict: verdict_text(lang, case, offset),
        label: case.label.clone(),
        confidence: format!("{:.2}", case.confidence),
        dwell: format!("{:.0} s", case.dwell),
        offset: offset_label(offset),
        thumb,
    }
}

/// The statuses an operator sees in the queue's filter, in lifecycle order.
fn status_options(lang: Lang) -> Vec<Value> {
    crate::cases::ALL_STATUSES
        .iter()
        .map(|s| context! { id => s.as_str(), name => status_name(lang, *s) })
        .collect()
}

fn reason_options(lang: Lang) -> Vec<Value> {
    RejectReason::ALL
        .iter()
        .map(
            |r| context! { id => r.as_str(), name => lang.text(&format!("reason_{}", r.as_str())) },
        )
        .collect()
}

/// Local dates of a form, as Unix times (the end date is inclusive).
fn period(since: &str, until: &str, offset: i64) -> Result<(Option<f64>, Option<f64>), String> {
    let since = (!since.is_empty())
        .then(|| parse_local_date(since, offset))
        .transpose()?;
    let until = (!until.is_empty())
        .then(|| parse_local_date(until, offset).map(|t| t + 86_400.0))
        .transpose()?;
    Ok((since, until))
}

/// The time zone of the centre: the first camera's, else China Standard Time.
fn centre_offset(cameras: &Loaded) -> i64 {
    cameras
        .cameras
        .first()
        .map_or(DEFAULT_UTC_OFFSET, |c| c.utc_offset)
}

async fn queue(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(query): Query<QueueQuery>,
) -> Result<Response, ApiError> {
    let (lang, cameras) = (viewer.lang, viewer.cameras.clone());
    let offset = centre_offset(&cameras);
    let (since, until) =
        period(&query.since, &query.until, offset).map_err(ApiError::bad_request)?;
    let (status, reported_open) = match query.status.as_str() {
        "" => (None, true),
        "all" => (None, false),
        s => (
            Some(s.parse::<Status>().map_err(ApiError::bad_request)?),
            false,
        ),
    };
    let page = query.page.unwrap_or(1).max(1);
    let now = unix_now();
    let filter = CaseFilter {
        status,
        reported_open,
        camera: (!query.camera.is_empty()).then(|| query.camera.clone()),
        event: (!query.event.is_empty()).then(|| query.event.clone()),
        since,
        until,
        overdue: (!query.overdue.is_empty()).then_some(true),
        now: Some(now),
        newest_first: true,
        offset: Some((page - 1) * PAGE_SIZE),
        limit: Some(PAGE_SIZE),
    };
    let (cases, total) = state
        .cases
        .run(move |store| {
            let total = store
                .count_cases(&filter)
                .map_err(|e| ApiError::internal("counting cases", e))?;
            let cases = store
                .cases(&filter)
                .map_err(|e| ApiError::internal("listing cases", e))?;
            let mut rows = Vec::new();
            for case in cases {
                let kinds: Vec<String> = store
                    .evidence(&case.id)
                    .map_err(|e| ApiError::internal("reading evidence", e))?
                    .into_iter()
                    .map(|e| e.kind)
                    .collect();
                let thumb = ["filed-crop", "first-crop", "filed", "first"]
                    .into_iter()
                    .find(|k| kinds.iter().any(|have| have == k))
                    .map(|k| format!("/api/cases/{}/evidence/{k}.jpg", case.id));
                rows.push((case, thumb));
            }
            Ok((rows, total))
        })
        .await?;
    let rows: Vec<CaseRow> = cases
        .iter()
        .map(|(case, thumb)| case_row(lang, case, &cameras, now, thumb.clone()))
        .collect();
    let pages = (total as usize).div_ceil(PAGE_SIZE).max(1);
    let page_link = |p: usize| {
        let mut q = serde_urlencoded::to_string(&query).unwrap_or_default();
        q = q
            .split('&')
            .filter(|kv| !kv.starts_with("page=") && !kv.is_empty())
            .collect::<Vec<_>>()
            .join("&");
        format!("/cases?{q}&page={p}")
    };
    let prev_page = (page > 1).then(|| page_link(page - 1));
    let next_page = (page < pages).then(|| page_link(page + 1));
    let frame = viewer.frame("cases", query.flash);
    Ok(render(
        "queue.html",
        frame.context(context! {
            cases => rows,
            total => total,
            page => page,
            pages => pages,
            prev_page => prev_page,
            next_page => next_page,
            filter => context! {
                status => query.status, event => query.event, camera => query.camera,
                since => query.since, until => query.until, overdue => !query.overdue.is_empty(),
            },
            statuses => status_options(lang),
            events => event_names().into_iter().map(|(id, code, name)| context! { id => id, name => format!("{code} {name}") }).collect::<Vec<_>>(),
            reasons => reason_options(lang),
        }),
    ))
}

async fn case_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(flash): Query<Flash>,
) -> Result<Response, ApiError> {
    let (lang, cameras) = (viewer.lang, viewer.cameras.clone());
    let lookup = id.clone();
    let (case, evidence, history) = state
        .cases
        .run(move |store| {
            let case = store
                .case(&lookup)
                .map_err(|e| ApiError::internal("reading a case", e))?
                .ok_or_else(|| ApiError::not_found(format!("no case {lookup}")))?;
            let evidence = store
                .evidence(&lookup)
                .map_err(|e| ApiError::internal("reading evidence", e))?;
            let history = store
                .history(&lookup)
                .map_err(|e| ApiError::internal("reading history", e))?;
            Ok((case, evidence, history))
        })
        .await?;
    let offset = cameras.utc_offset(&case.camera_id);
    let evidence: Vec<Value> = evidence
        .iter()
        .map(|e| {
            context! {
                kind => e.kind,
                name => lang.text(&format!("evidence_{}", e.kind)),
                url => format!("/api/cases/{}/evidence/{}.jpg", case.id, e.kind),
                time => local_time(e.ts, offset),
            }
        })
        .collect();
    let history: Vec<Value> = history
        .iter()
        .map(|h| {
            let to = status_name(lang, h.to);
            let change = match h.from {
                Some(from) if from != h.to => format!("{} → {to}", status_name(lang, from)),
                Some(_) => to.to_string(),
                None => to.to_string(),
            };
            context! { time => local_time(h.ts, offset), change => change, actor => h.actor, note => h.note }
        })
        .collect();
    let next_statuses: Vec<Value> = crate::cases::ALL_STATUSES
        .iter()
        .filter(|s| s.settable_externally() && case.status.can_become(**s))
        .map(|s| context! { id => s.as_str(), name => status_name(lang, *s) })
        .collect();
    let frame = viewer.frame("cases", flash);
    Ok(render(
        "case.html",
        frame.context(context! {
            case => case_row(lang, &case, &cameras, unix_now(), None),
            evidence => evidence,
            history => history,
            next_statuses => next_statuses,
            reasons => reason_options(lang),
        }),
    ))
}

/// An action chosen on a page: a verdict or a status.
fn action_of(name: &str, reason: Option<&str>) -> Result<Action, String> {
    match name {
        "confirm" => Ok(Action::Confirm),
        "reject" => {
            let reason = reason.unwrap_or("not_a_violation");
            Ok(Action::Reject(reason.parse::<RejectReason>()?))
        }
        status => Ok(Action::SetStatus(status.parse::<Status>()?)),
    }
}

#[derive(Deserialize)]
struct ActionForm {
    action: String,
    reason: Option<String>,
    note: Option<String>,
}

async fn case_action(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    let lang = lang_of(&headers);
    let back = format!("/cases/{id}");
    let note = form.note.filter(|n| !n.trim().is_empty());
    let outcome = match action_of(&form.action, form.reason.as_deref()) {
        Ok(action) => writes::act(&state, &principal, &id, action, note).await,
        Err(e) => Err(ApiError::bad_request(e)),
    };
    match outcome {
        Ok(case) => Redirect::to(&with_flash(&back, "notice", status_name(lang, case.status)))
            .into_response(),
        Err(e) => Redirect::to(&with_flash(&back, "error", &e.message)).into_response(),
    }
}

/// The queue's bulk form: `ids` repeated, one action for all of them.
async fn bulk(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let lang = lang_of(&headers);
    let mut ids = Vec::new();
    let (mut action, mut reason, mut back) = (None, None, None);
    for (name, value) in form_urlencoded::parse(&body) {
        match &*name {
            "ids" => ids.push(value.into_owned()),
            "action" => action = Some(value.into_owned()),
            "reason" => reason = Some(value.into_owned()),
            "back" => back = Some(value.into_owned()),
            _ => {}
        }
    }
    let back = local_path(back.as_deref(), "/cases");
    let action = match action_of(action.as_deref().unwrap_or_default(), reason.as_deref()) {
        Ok(action) => action,
        Err(e) => return Redirect::to(&with_flash(&back, "error", &e)).into_response(),
    };
    let mut done = 0;
    let mut errors = Vec::new();
    for id in &ids {
        match writes::act(&state, &principal, id, action, None).await {
            Ok(_) => done += 1,
            Err(e) => errors.push(e.message),
        }
    }
    let notice = lang.text("done_count").replace("{n}", &done.to_string());
    if errors.is_empty() {
        Redirect::to(&with_flash(&back, "notice", &notice)).into_response()
    } else {
        Redirect::to(&with_flash(
            &back,
            "error",
            &format!("{notice}; {}", errors.join("; ")),
        ))
        .into_response()
    }
}

// ---------------------------------------------------------------- cameras

#[derive(Debug, Default, Deserialize)]
struct CamerasQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    no_zones: String,
    #[serde(default)]
    q: String,
    #[serde(flatten)]
    flash: Flash,
}

#[derive(Serialize)]
struct CameraRow {
    id: String,
    name: String,
    address: String,
    state: &'static str,
    state_name: &'static str,
    /// What is wrong, if anything ("" when nothing).
    problem: &'static str,
    problem_name: &'static str,
    last_frame: String,
    last_error: String,
    revisit: String,
    /// The replica owning the camera ("" for a daemon running alone).
    replica: String,
    /// Likeness of the latest picture to the reference view ("" when not judged).
    view_likeness: String,
    zones: usize,
    suppressions: usize,
}

/// Every camera: the daemon's live view, with what only the camera files know.
fn camera_rows(
    lang: Lang,
    views: &[CameraView],
    cameras: &Loaded,
    active: &[(String, usize)],
) -> Vec<CameraRow> {
    let mut rows: Vec<CameraRow> = views
        .iter()
        .map(|v| {
            let camera = cameras.get(&v.id);
            let offset = cameras.utc_offset(&v.id);
            CameraRow {
                id: v.id.clone(),
                name: v.name.clone(),
                address: camera
                    .and_then(|c| c.info.location.address.clone())
                    .unwrap_or_default(),
                state: v.state.as_str(),
                state_name: lang.text(&format!("state_{}", v.state.as_str())),
                problem: v.problem.map_or("", |p| p.as_str()),
                problem_name: v
                    .problem
                    .map_or("", |p| lang.text(&format!("state_{}", p.as_str()))),
                last_frame: v
                    .last_frame_at
                    .map(|t| local_time(t, offset))
                    .unwrap_or_default(),
                last_error: v.last_error.clone().unwrap_or_default(),
                revisit: v
                    .revisit_interval_s
                    .map(|s| format!("{s:.0} s"))
                    .unwrap_or_default(),
                replica: v.replica.clone().unwrap_or_default(),
                view_likeness: v
                    .view_likeness
                    .map(|l| format!("{l:.2}"))
                    .unwrap_or_default(),
                zones: camera.map_or(0, |c| c.zones.len()),
                suppressions: active
                    .iter()
                    .find(|(id, _)| *id == v.id)
                    .map_or(0, |(_, n)| *n),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    rows
}

async fn active_suppressions(
    state: &AppState,
    camera: Option<String>,
) -> Result<Vec<crate::store::Suppression>, ApiError> {
    let at = unix_now();
    state
        .cases
        .run(move |store| {
            store
                .suppressions(camera.as_deref(), Some(at))
                .map_err(|e| ApiError::internal("reading suppressions", e))
        })
        .await
}

async fn cameras_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(query): Query<CamerasQuery>,
) -> Result<Response, ApiError> {
    let (lang, cameras) = (viewer.lang, viewer.cameras.clone());
    let mut counts: Vec<(String, usize)> = Vec::new();
    for s in active_suppressions(&state, None).await? {
        match counts.iter_mut().find(|(id, _)| *id == s.camera_id) {
            Some((_, n)) => *n += 1,
            None => counts.push((s.camera_id, 1)),
        }
    }
    let mut rows = camera_rows(lang, &state.view.cameras(), &cameras, &counts);
    let total = rows.len();
    let without_zones = rows.iter().filter(|r| r.zones == 0).count();
    if !query.state.is_empty() {
        rows.retain(|r| r.state == query.state || r.problem == query.state);
    }
    if !query.no_zones.is_empty() {
        rows.retain(|r| r.zones == 0);
    }
    let needle = query.q.trim().to_lowercase();
    if !needle.is_empty() {
        rows.retain(|r| {
            [&r.id, &r.name, &r.address]
                .iter()
                .any(|f| f.to_lowercase().contains(&needle))
        });
    }
    let summary = match lang {
        Lang::Zh => format!("共 {total} 路，{without_zones} 路未划区域"),
        Lang::En => format!("{total} cameras, {without_zones} without zones"),
    };
    let states: Vec<Value> = CameraCondition::all()
        .map(|s| context! { id => s.as_str(), name => lang.text(&format!("state_{}", s.as_str())) })
        .collect();
    let frame = viewer.frame("cameras", query.flash);
    Ok(render(
        "cameras.html",
        frame.context(context! {
            cameras => rows,
            states => states,
            summary => summary,
            filter => context! { state => query.state, no_zones => !query.no_zones.is_empty(), q => query.q },
        }),
    ))
}

async fn camera_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(flash): Query<Flash>,
) -> Result<Response, ApiError> {
    let (lang, cameras) = (viewer.lang, viewer.cameras.clone());
    let views = state.view.cameras();
    let view = views
        .iter()
        .find(|v| v.id == id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no camera {id}")))?;
    let offset = cameras.utc_offset(&id);
    let now = unix_now();
    let stored = {
        let camera = id.clone();
        state
            .cases
            .run(move |store| {
                store
                    .suppressions(Some(&camera), None)
                    .map_err(|e| ApiError::internal("reading suppressions", e))
            })
            .await?
    };
    let active_count = stored.iter().filter(|s| s.is_active(now)).count();
    let suppressions: Vec<Value> = stored
        .into_iter()
        .map(|s| {
            let ended = if s.lifted_at.is_some() {
                format!(
                    "{} {}",
                    lang.text("lifted"),
                    s.lifted_by.clone().unwrap_or_default()
                )
            } else {
                lang.text("expired").to_string()
            };
            context! {
                id => s.id, zone_id => s.zone_id, event => s.event, case_id => s.case_id,
                created_by => s.created_by, until => local_time(s.until, offset), hits => s.hits,
                active => s.is_active(now), ended => ended,
            }
        })
        .collect();
    let row = camera_rows(lang, &[view], &cameras, &[(id.clone(), active_count)])
        .pop()
        .expect("one view in, one row out");
    let editor = writes::editor_data(&state, &viewer.principal, &id, lang);
    let editable = editor
        .get("editable")
        .and_then(|e| e.as_bool())
        .unwrap_or(false);
    let editor_unavailable = if state.book.path().is_none() {
        lang.text("editor_offline").to_string()
    } else if viewer.principal.role != Role::Admin {
        lang.text("editor_admin_only").to_string()
    } else {
        editor
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let picture_note = match editor.get("picture").and_then(|p| p.as_str()) {
        Some("live") => lang.text("picture_live"),
        Some("evidence") => lang.text("picture_evidence"),
        _ => lang.text("picture_none"),
    };
    let frame = viewer.frame("cameras", flash);
    Ok(render(
        "camera.html",
        frame.context(context! {
            camera => row,
            suppressions => suppressions,
            editor => Value::from_serialize(&editor),
            editable => editable,
            editor_unavailable => editor_unavailable,
            picture_note => picture_note,
            admin => viewer.principal.role == Role::Admin,
            now => now as u64,
        }),
    ))
}

/// The camera's latest picture: the daemon's snapshot, else its latest evidence image.
async fn picture(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if let Some(snapshot) = state.view.snapshot(&id) {
        return Ok((
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            snapshot.jpeg.to_vec(),
        )
            .into_response());
    }
    let jpeg = writes::latest_evidence_picture(&state, &id).await?;
    match jpeg {
        Some(bytes) => Ok(([(header::CONTENT_TYPE, "image/jpeg")], bytes).into_response()),
        None => Err(ApiError::not_found(format!(
            "no picture of camera {id} yet"
        ))),
    }
}

#[derive(Deserialize)]
struct LiftForm {
    back: Option<String>,
}

async fn lift(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<i64>,
    Form(form): Form<LiftForm>,
) -> Response {
    let back = local_path(form.back.as_deref(), "/cameras");
    match writes::lift_suppression(&state, &principal, id).await {
        Ok(_) => Redirect::to(&with_flash(&back, "notice", "✓")).into_response(),
        Err(e) => Redirect::to(&with_flash(&back, "error", &e.message)).into_response(),
    }
}

// ---------------------------------------------------------------- statistics

#[derive(Debug, Default, Deserialize)]
struct PeriodQuery {
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
}

/// The chosen period, defaulting to the last 30 local days.
fn chosen_period(
    query: &PeriodQuery,
    offset: i64,
) -> Result<(String, String, Option<f64>, Option<f64>), ApiError> {
    let today = local_date(unix_now(), offset);
    let since = if query.since.is_empty() {
        local_date(unix_now() - 29.0 * 86_400.0, offset)
    } else {
        query.since.clone()
    };
    let until = if query.until.is_empty() {
        today
    } else {
        query.until.clone()
    };
    let (from, to) = period(&since, &until, offset).map_err(ApiError::bad_request)?;
    Ok((since, until, from, to))
}

async fn stats_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(query): Query<PeriodQuery>,
) -> Result<Response, ApiError> {
    let (lang, cameras) = (viewer.lang, viewer.cameras.clone());
    let offset = centre_offset(&cameras);
    let (since_text, until_text, since, until) = chosen_period(&query, offset)?;
    let now = unix_now();
    let stats = state
        .cases
        .run(move |store| {
            store
                .stats(since, until, offset, now)
                .map_err(|e| ApiError::internal("counting cases", e))
        })
        .await?;
    let names = event_names();
    let precision: Vec<Value> = stats
        .per_event
        .iter()
        .map(|p| {
            let name = names
                .iter()
                .find(|(id, _, _)| *id == p.event)
                .map_or(p.event.clone(), |(_, code, name)| format!("{code} {name}"));
            context! {
                name => name, confirmed => p.confirmed, rejected => p.rejected,
                rate => p.false_positive_rate.map_or("–".into(), |r| format!("{:.1} %", r * 100.0)),
            }
        })
        .collect();
    let overdue: Vec<CaseRow> = stats
        .overdue
        .iter()
        .map(|c| case_row(lang, c, &cameras, now, None))
        .collect();
    let funnel_svg = charts::funnel(&[
        (lang.text("found"), stats.found),
        (lang.text("filed"), stats.filed),
        (lang.text("closed"), stats.closed),
        (lang.text("rejected"), stats.rejected),
    ]);
    let days_svg = charts::days(&stats.by_day);
    let frame = viewer.frame("stats", Flash::default());
    Ok(render(
        "stats.html",
        frame.context(context! {
            stats => Value::from_serialize(&stats),
            precision => precision,
            overdue => overdue,
            funnel_svg => funnel_svg,
            days_svg => days_svg,
            period => context! { since => since_text, until => until_text },
        }),
    ))
}

async fn export_xlsx(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<PeriodQuery>,
) -> Result<Response, ApiError> {
    let lang = lang_of(&headers);
    let cameras = state.book.load();
    let offset = centre_offset(&cameras);
    let (since_text, until_text, since, until) = chosen_period(&query, offset)?;
    let filter = CaseFilter {
        since,
        until,
        ..CaseFilter::default()
    };
    let cases = state.cases.list(filter).await?;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    let bytes = export::workbook(
        &cases,
        &cameras,
        lang,
        &format!("http://{host}"),
        unix_now(),
    )
    .map_err(|e| ApiError::internal("writing the Excel file", e))?;
    let name = format!("cgbot-cases-{since_text}-{until_text}.xlsx");
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        bytes,
    )
        .into_response())
}
