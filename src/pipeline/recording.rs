//! A recording filed as one configured camera: what `replay --camera` and `eval` share
//! (which camera of a file the clip comes from, and where its cases go).

use std::path::{Path, PathBuf};

use crate::cases::{CatalogueError, Categories};
use crate::config::{self, Camera, ConfigError};
use crate::rules::EventCatalogue;
use crate::store::{Store, StoreError};

use super::FilingSetup;

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{}: no camera `{}`", path.display(), config::clip(id))]
    NoSuchCamera { path: PathBuf, id: String },
    #[error("{}: defines {count} cameras: say which one the clip is from (--camera-id, or `camera_id` in a scenario)", path.display())]
    WhichCamera { path: PathBuf, count: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Catalogue(#[from] CatalogueError),
}

/// The camera `id` of the configuration at `path` (a file or a directory), or its only
/// camera. A recording is read, not streamed: the zones count, credentials do not.
pub fn recorded_camera(path: &Path, id: Option<&str>) -> Result<Camera, RecordingError> {
    let cameras =
        config::load_cameras_with(path, &EventCatalogue::builtin(), &config::Secrets::Skip)?;
    match id {
        Some(id) => cameras
            .into_iter()
            .find(|c| c.info.id == id)
            .ok_or_else(|| RecordingError::NoSuchCamera {
                path: path.to_path_buf(),
                id: id.to_string(),
            }),
        None if cameras.len() == 1 => Ok(cameras.into_iter().next().expect("one camera")),
        None => Err(RecordingError::WhichCamera {
            path: path.to_path_buf(),
            count: cameras.len(),
        }),
    }
}

/// A city's own tables for filing; each optional (the built-in catalogue otherwise).
#[derive(Debug, Clone, Default)]
pub struct CityFiles {
    pub catalogue: Option<PathBuf>,
    pub calendar: Option<PathBuf>,
    pub codes: Option<PathBuf>,
}

/// Filing into the store at `db` for `camera`, with the city's tables. A file is its own
/// evidence: its analysed frames are drawn on, no main stream is grabbed.
pub fn recording_filing(
    camera: &Camera,
    db: &Path,
    city: &CityFiles,
) -> Result<FilingSetup, RecordingError> {
    let categories = Categories::load_city(
        city.catalogue.as_deref(),
        city.calendar.as_deref(),
        city.codes.as_deref(),
        (
            &EventCatalogue::builtin().names(),
            &config::events_used(std::slice::from_ref(camera)),
        ),
    )?;
    Ok(FilingSetup {
        store: Store::open(db)?,
        categories,
        grabs: None,
    })
}
