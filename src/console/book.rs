//! The camera files as the console reads them: names, places, local time zones and zones
//! of every camera, reloaded when a file changes (an editor's save, a quarterly rotation).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use crate::config::{load_cameras_with, Camera, Secrets};
use crate::rules::EventCatalogue;

/// Local time of cases whose camera is no longer in the files (China Standard Time, the
/// loader's default).
pub const DEFAULT_UTC_OFFSET: i64 = 8 * 3600;

/// The cameras of the configured files, with the error of the latest load if it failed
/// (the previous good list is kept meanwhile).
#[derive(Default)]
pub struct Loaded {
    pub cameras: Vec<Camera>,
    by_id: HashMap<String, usize>,
    pub error: Option<String>,
}

impl Loaded {
    pub fn get(&self, id: &str) -> Option<&Camera> {
        self.by_id.get(id).map(|&i| &self.cameras[i])
    }

    /// The camera's UTC offset, or the default for cameras no longer configured.
    pub fn utc_offset(&self, id: &str) -> i64 {
        self.get(id).map_or(DEFAULT_UTC_OFFSET, |c| c.utc_offset)
    }
}

pub struct CameraBook {
    path: Option<PathBuf>,
    cache: Mutex<(Option<Stamp>, Arc<Loaded>)>,
}

/// What changes when any camera file changes: each file's name, size and mtime.
type Stamp = Vec<(PathBuf, u64, Option<SystemTime>)>;

impl CameraBook {
    pub fn new(path: Option<PathBuf>) -> Self {
        Self {
            path,
            cache: Mutex::new((None, Arc::new(Loaded::default()))),
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The current camera list; reloads only when a file changed since the last call.
    pub fn load(&self) -> Arc<Loaded> {
        let Some(path) = &self.path else {
            return Arc::new(Loaded::default());
        };
        let stamp = stamp(path);
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.0.as_ref() == Some(&stamp) {
            return cache.1.clone();
        }
        // The console shows cameras and never connects to them: no credentials needed.
        let loaded = match load_cameras_with(path, &EventCatalogue::builtin(), &Secrets::Skip) {
            Ok(cameras) => Loaded {
                by_id: cameras
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.info.id.clone(), i))
                    .collect(),
                cameras,
                error: None,
            },
            Err(e) => Loaded {
                cameras: cache.1.cameras.clone(),
                by_id: cache.1.by_id.clone(),
                error: Some(e.to_string()),
            },
        };
        *cache = (Some(stamp), Arc::new(loaded));
        cache.1.clone()
    }
}

fn stamp(path: &Path) -> Stamp {
    let files: Vec<PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect()
    } else {
        vec![path.to_path_buf()]
    };
    let mut stamp: Stamp = files
        .into_iter()
        .map(|file| {
            let meta = std::fs::metadata(&file).ok();
            let size = meta.as_ref().map_or(0, |m| m.len());
            let modified = meta.and_then(|m| m.modified().ok());
            (file, size, modified)
        })
        .collect();
    stamp.sort();
    stamp
}
