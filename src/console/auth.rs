//! Who is asking: the API token (a bearer header for programs, or typed into the sign-in
//! page), or an operator from the users file with a password hashed with Argon2id. A
//! signed-in browser holds an HttpOnly, SameSite=Strict session cookie, so evidence
//! `<img>` tags work; every write it makes carries the session's CSRF token as well.
//!
//! Without a token and without users the server listens on loopback only (see
//! [`crate::api::check_exposure`]) and everyone who reaches it is the local admin.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::api::{ApiError, AppState};

pub const SESSION_COOKIE: &str = "cgbot_session";
/// The header scripts send the session's CSRF token in; forms send a `csrf` field.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Largest form body read to find its CSRF field.
const MAX_FORM: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reviews cases: verdicts and status changes.
    Operator,
    /// Also edits zones and lifts suppressions.
    Admin,
}

/// How a request proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A browser session; writes need its CSRF token.
    Session { id: String, csrf: String },
    /// `Authorization: Bearer <API token>`, or nobody needs proof (loopback, no token).
    Direct,
}

/// The person or program behind a request, as handlers see it.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub via: Via,
}

impl Principal {
    pub fn csrf(&self) -> &str {
        match &self.via {
            Via::Session { csrf, .. } => csrf,
            Via::Direct => "",
        }
    }

    /// Refuses what only an admin may do.
    pub(crate) fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Operator => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("{what} needs the admin role; {} is an operator", self.name),
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("{path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: user[{index}] `{name}`: {reason}")]
    Invalid {
        path: PathBuf,
        index: usize,
        name: String,
        reason: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    role: Role,
    /// PHC string from `cgbot console hash-password`.
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    user: Vec<UserEntry>,
}

/// The users file:
///
/// ```toml
/// [[user]]
/// name = "wang"
/// role = "operator"               # or "admin"
/// password = "$argon2id$v=19$..." # cgbot console hash-password
/// ```
#[derive(Debug, Clone, Default)]
pub struct Users {
    users: Vec<UserEntry>,
}

impl Users {
    pub fn load(path: &Path) -> Result<Self, UsersError> {
        let read = |reason: String| UsersError::Read {
            path: path.to_path_buf(),
            reason,
        };
        let text = crate::config::read_text(path).map_err(|e| match e {
            crate::config::ConfigError::Read { reason, .. } => read(reason),
            other => read(other.to_string()),
        })?;
        let file: UsersFile = toml::from_str(&text).map_err(|e| read(e.to_string()))?;
        for (index, user) in file.user.iter().enumerate() {
            let invalid = |reason: &str| UsersError::Invalid {
                path: path.to_path_buf(),
                index,
                name: user.name.clone(),
                reason: reason.into(),
            };
            if user.name.trim().is_empty() || user.name.chars().any(char::is_control) {
                return Err(invalid("the name must be non-empty printable text"));
            }
            if file.user[..index].iter().any(|u| u.name == user.name) {
                return Err(invalid("the name is used twice"));
            }
            PasswordHash::new(&user.password).map_err(|e| {
                invalid(&format!(
                    "`password` is not a password hash ({e}); make one with `cgbot console hash-password`"
                ))
            })?;
        }
        Ok(Self { users: file.user })
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The user's role if the password is theirs. Unknown names cost the same hashing
    /// as known ones, so timing does not tell which names exist.
    fn check(&self, name: &str, password: &str) -> Option<Role> {
        let user = self.users.iter().find(|u| u.name == name);
        let hash = user.map_or(DUMMY_HASH, |u| u.password.as_str());
        let parsed = PasswordHash::new(hash).ok()?;
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        user.filter(|_| ok).map(|u| u.role)
    }
}

/// Verified against for unknown user names (the hash of a random password).
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$yjYp1Xo6dR5V2s8JqO9oN2o2k3mVQ0Ihh2qQ0e3xv1U";

/// An Argon2id PHC string for the users file.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| format!("no randomness for a salt: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

struct Session {
    name: String,
    role: Role,
    csrf: String,
    expires: Instant,
}

pub struct Auth {
    /// SHA-256 of the API token.
    token: Option<[u8; 32]>,
    users: Users,
    ttl: Duration,
    sessions: Mutex<HashMap<String, Session>>,
}

/// Sessions kept at most; the oldest go first beyond it.
const MAX_SESSIONS: usize = 10_000;

impl Auth {
    pub fn new(token: Option<&str>, users: Users, ttl: Duration) -> Self {
        Self {
            token: token.map(|t| Sha256::digest(t.as_bytes()).into()),
            users,
            ttl,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a users file gives anyone a password.
    pub fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    /// Nobody needs to prove anything: no token, no users (loopback only).
    pub fn is_open(&self) -> bool {
        self.token.is_none() && self.users.is_empty()
    }

    /// Compares SHA-256 digests, all 32 bytes whatever differs, so the time taken tells
    /// nothing about the token (not even its length).
    pub fn token_matches(&self, given: &str) -> bool {
        let Some(expected) = &self.token else {
            return false;
        };
        let digest = Sha256::digest(given.as_bytes());
        expected
            .iter()
            .zip(digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// Checks a sign-in: the API token (as the admin `api-token`), or a user and password.
    pub fn sign_in(&self, user: &str, password: &str, token: &str) -> Option<(String, Role)> {
        if !token.is_empty() {
            return self
                .token_matches(token)
                .then(|| ("api-token".to_string(), Role::Admin));
        }
        self.users
            .check(user, password)
            .map(|role| (user.to_string(), role))
    }

    /// A new session: its `Set-Cookie` value, and who it is.
    pub fn start_session(&self, name: &str, role: Role) -> (String, Principal) {
        let id = random_hex();
        let csrf = random_hex();
        let principal = Principal {
            name: name.to_string(),
            role,
            via: Via::Session {
                id: id.clone(),
                csrf: csrf.clone(),
            },
        };
        let session = Session {
            name: name.to_string(),
            role,
            csrf,
            expires: Instant::now() + self.ttl,
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| id.clone())
            {
                sessions.remove(&oldest);
            }
        }
        let cookie = format!(
            "{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
            self.ttl.as_secs()
        );
        sessions.insert(id, session);
        (cookie, principal)
    }

    pub fn end_session(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// The live session named by the request's cookie; using it extends it.
    fn session(&self, headers: &HeaderMap) -> Option<Principal> {
        let id = session_cookie(headers)?;
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let session = sessions.get_mut(&id)?;
        if session.expires <= now {
            sessions.remove(&id);
            return None;
        }
        session.expires = now + self.ttl;
        Some(Principal {
            name: session.name.clone(),
            role: session.role,
            via: Via::Session {
                csrf: session.csrf.clone(),
                id,
            },
        })
    }

    /// Who a request comes from, by bearer token or session cookie.
    fn principal(&self, headers: &HeaderMap) -> Option<Principal> {
        if let Some(session) = self.session(headers) {
            return Some(session);
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let direct = |name: &str| Principal {
            name: name.into(),
            role: Role::Admin,
            via: Via::Direct,
        };
        match bearer {
            Some(token) if self.token_matches(token) => Some(direct("api-token")),
            _ if self.is_open() => Some(direct("local")),
            _ => None,
        }
    }
}

fn random_hex() -> String {
    let mut bytes = [0u8; 24];
    getrandom::getrandom(&mut bytes).expect("the OS provides randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of the cookie `name` the request carries.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    cookie(headers, SESSION_COOKIE)
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Routes anyone may reach: probes, the sign-in page and the pages' static assets.
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/login") || path.starts_with("/assets/")
}

/// Routes answered in JSON (or metrics text) for programs; the rest are pages.
fn is_api(path: &str) -> bool {
    path.starts_with("/api/") || path == "/api" || path == "/metrics"
}

fn unauthorized(message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(r#"Bearer realm="cgbot""#),
    );
    response
}

/// Lets a request through with its [`Principal`] in the extensions, or answers it: 401
/// for the API, a redirect to the sign-in page for pages, 403 for a write without the
/// session's CSRF token.
pub(crate) async fn gate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    if is_public(&path) {
        return next.run(request).await;
    }
    let auth = &state.auth;
    let principal = auth.principal(request.headers());
    let Some(mut principal) = principal else {
        if is_api(&path) {
            let message = if request.headers().contains_key(header::AUTHORIZATION) {
                "invalid bearer token"
            } else {
                "this route needs `Authorization: Bearer <token>` with the daemon's API token, or a signed-in session"
            };
            return unauthorized(message);
        }
        let next_page = request
            .uri()
            .path_and_query()
            .map_or("/".to_string(), |p| p.to_string());
        let target = format!(
            "/login?next={}",
            percent_encoding::utf8_percent_encode(&next_page, percent_encoding::NON_ALPHANUMERIC)
        );
        return Redirect::to(&target).into_response();
    };
    // An open console gives each browser a session of its own, so that pages work the
    // same way (CSRF tokens included) whether or not anyone signs in.
    let mut new_cookie = None;
    if principal.via == Via::Direct && auth.is_open() && !is_api(&path) {
        let (cookie, session) = auth.start_session("local", Role::Admin);
        principal = session;
        new_cookie = Some(cookie);
    }
    let safe = matches!(*request.method(), Method::GET | Method::HEAD);
    let request = if safe {
        request
    } else {
        match &principal.via {
            Via::Session { csrf, .. } => match checked_csrf(request, csrf).await {
                Ok(request) => request,
                Err(response) => return response,
            },
            // Programs write through the JSON API only: a page's form post needs a session.
            Via::Direct if is_api(&path) => request,
            Via::Direct => {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "pages take writes from a signed-in session only",
                )
                .into_response()
            }
        }
    };
    let mut request = request;
    request.extensions_mut().insert(principal);
    let mut response = next.run(request).await;
    if let Some(cookie) = new_cookie {
        set_cookie(&mut response, &cookie);
    }
    response
}

/// Adds a `Set-Cookie` header to `response`. Our cookies are plain ASCII; one that could
/// not be a header value is left out rather than failing the answer.
pub fn set_cookie(response: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// The request back if it carries the CSRF token in the header or, for a form, in its
/// `csrf` field; a 403 otherwise.
async fn checked_csrf(request: Request, expected: &str) -> Result<Request, Response> {
    let refused = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "missing or wrong CSRF token: reload the page and try again",
        )
        .into_response()
    };
    if let Some(given) = request.headers().get(CSRF_HEADER) {
        return if given.as_bytes() == expected.as_bytes() {
            Ok(request)
        } else {
            Err(refused())
        };
    }
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(refused());
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM)
        .await
        .map_err(|_| ApiError::bad_request("form too large").into_response())?;
    let found = form_urlencoded::parse(&bytes)
        .any(|(name, value)| name == "csrf" && value.as_bytes() == expected.as_bytes());
    if !found {
        return Err(refused());
    }
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}

/// Ends the session of a request, if it has one; returns the cookie that clears it.
pub fn sign_out(auth: &Auth, principal: &Principal) -> String {
    if let Via::Session { id, .. } = &principal.via {
        auth.end_session(id);
    }
    format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `Cookie` header a browser sends back for a `Set-Cookie` value.
    fn cookie_header(set_cookie: &str) -> HeaderMap {
        let pair = set_cookie.split(';').next().unwrap_or_default();
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(pair).unwrap());
        headers
    }

    #[test]
    fn passwords_are_checked_against_argon2_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        std::fs::write(
            &path,
            format!("[[user]]\nname = \"wang\"\nrole = \"operator\"\npassword = \"{hash}\"\n"),
        )
        .unwrap();
        let users = Users::load(&path).unwrap();
        assert_eq!(users.check("wang", "correct horse"), Some(Role::Operator));
        assert_eq!(users.check("wang", "wrong"), None);
        assert_eq!(users.check("li", "correct horse"), None);
    }

    #[test]
    fn a_users_file_with_a_plain_password_is_refused_naming_the_user() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        std::fs::write(
            &path,
            "[[user]]\nname = \"wang\"\nrole = \"admin\"\npassword = \"hunter2\"\n",
        )
        .unwrap();
        let err = Users::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("users.toml: user[0] `wang`: `password` is not a password hash"),
            "{err}"
        );
        std::fs::write(&path, b"[[user]]\nname = \"\xff\"\n").unwrap();
        let err = Users::load(&path).unwrap_err().to_string();
        assert!(
            err.ends_with("users.toml: not UTF-8 text (invalid byte at line 2, column 9); configuration files are UTF-8: convert it (e.g. `iconv -f GBK -t UTF-8`)"),
            "{err}"
        );
    }

    #[test]
    fn sessions_expire_and_sign_out_ends_them() {
        let auth = Auth::new(Some("t0ken"), Users::default(), Duration::from_millis(50));
        assert!(auth.sign_in("", "", "nope").is_none());
        let (name, role) = auth.sign_in("", "", "t0ken").unwrap();
        let (cookie, _) = auth.start_session(&name, role);
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        let headers = cookie_header(&cookie);
        let principal = auth.principal(&headers).unwrap();
        assert_eq!(principal.name, "api-token");
        assert_eq!(principal.csrf().len(), 48);
        std::thread::sleep(Duration::from_millis(80));
        assert!(auth.principal(&headers).is_none(), "expired");

        let (cookie, _) = auth.start_session("wang", Role::Operator);
        let headers = cookie_header(&cookie);
        let principal = auth.principal(&headers).unwrap();
        sign_out(&auth, &principal);
        assert!(auth.principal(&headers).is_none(), "signed out");
    }
}
