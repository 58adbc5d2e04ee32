//! The operators' console: web pages where the city-management centre reviews cases
//! (confirm, reject as a false positive, dispatch), sees every camera with its latest
//! picture, draws zones on it, and reads the statistics it reports. Served by the same
//! HTTP server as the API (`cgbot run`, or `cgbot console` over a case database alone).
//!
//! Pages are rendered on the server ([`pages`], minijinja templates compiled into the
//! binary) with a little JavaScript of our own for keyboard review and the zone editor;
//! nothing is fetched from elsewhere. Every write goes through the store's operator
//! actions or the camera-file editor, which check the lifecycle and the zone rules, and
//! is recorded with who and when ([`auth`] says who).

pub mod auth;
mod book;
mod charts;
mod export;
mod i18n;
mod pages;
mod writes;

use std::path::PathBuf;
use std::time::Duration;

use axum::Router;

pub use crate::local_time::local_time;
pub use auth::{hash_password, Role, Users, UsersError};
pub use book::CameraBook;

use crate::api::AppState;

/// What the console needs besides the API's state.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// The camera file or directory (zones are edited there); `None` when unknown.
    pub cameras: Option<PathBuf>,
    /// Operators and admins who sign in with a password; the API token signs in too.
    pub users: Users,
    /// A session ends after this long without a request.
    pub session_ttl: Duration,
    /// How long a rejected case's place stops producing cases.
    pub suppress_for: Duration,
}

/// The daemon's defaults (run.toml `[console]` left out), without camera files or users.
impl Default for ConsoleConfig {
    fn default() -> Self {
        let settings = crate::config::ConsoleSettings::default();
        Self {
            cameras: None,
            users: Users::default(),
            session_ttl: settings.session_ttl,
            suppress_for: settings.suppress_for,
        }
    }
}

/// The console's pages, assets and write API, to be merged into the API router.
pub(crate) fn routes() -> Router<AppState> {
    pages::routes().merge(writes::routes())
}

/// What a review station (`cgbot console`) shows as its "daemon": the camera files'
/// cameras, none of them watched here, and no live pictures.
pub struct ReviewStation {
    book: CameraBook,
}

impl ReviewStation {
    pub fn new(cameras: Option<PathBuf>) -> Self {
        Self {
            book: CameraBook::new(cameras),
        }
    }
}

impl crate::api::DaemonView for ReviewStation {
    fn readiness(&self) -> Result<(), String> {
        Ok(())
    }

    fn metrics_text(&self) -> String {
        "# cgbot console: a review station watches no cameras\n".into()
    }

    fn cameras(&self) -> Vec<crate::api::CameraView> {
        self.book
            .load()
            .cameras
            .iter()
            .map(|c| crate::api::CameraView::unwatched(&c.info.id, &c.info.name))
            .collect()
    }
}
