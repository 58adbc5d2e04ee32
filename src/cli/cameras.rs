//! `cgbot cameras …`: what a new camera list changes, and camera files made from a city's
//! camera point list.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use clap::Subcommand;

use cgbot::config::{self, Camera, CameraDiff, ImportError, ImportOptions};
use cgbot::redact::redact_url;
use cgbot::rules::EventCatalogue;

#[derive(Subcommand)]
pub enum CamerasCommand {
    /// Check camera files without running anything: every error of every file and camera
    /// is listed, not only the first. Exit status 78 when any is found.
    Check {
        /// A camera file, or a directory of them (`*.toml`).
        #[arg(value_name = "FILE|DIR")]
        path: PathBuf,
    },
    /// What NEW changes against OLD: the cameras a rotation starts, stops and restarts.
    Diff {
        /// The camera file or directory in use.
        old: PathBuf,
        /// The camera file or directory to replace it.
        new: PathBuf,
        #[arg(long)]
        json: bool,
        /// Secrets file of the credentials the camera files name (`credentials = "…"`), so
        /// that a changed credential shows; default: $CGBOT_SECRETS.
        #[arg(long, value_name = "FILE")]
        secrets: Option<PathBuf>,
    },
    /// Make a camera file of a city's camera point list (CSV, UTF-8), or merge the list
    /// into the camera file in use. New cameras have no zones until zones are drawn.
    Import {
        /// The point list: CSV in UTF-8 (with or without a BOM), headed in Chinese or English.
        csv: PathBuf,
        /// Where to write the camera file (default: stdout). An existing file is merged
        /// into: cameras that stay keep their zones and settings, those no longer listed
        /// are removed, new ones added.
        #[arg(short, long, value_name = "OUT.toml")]
        output: Option<PathBuf>,
        /// Write OUT.toml afresh from the list, dropping the zones and settings in it.
        #[arg(long, requires = "output")]
        replace: bool,
        /// Give each new camera a zone covering its whole picture, watching these events
        /// (`all`: every event). Without it new cameras file nothing until zones are drawn.
        #[arg(long, alias = "rules", value_delimiter = ',', value_name = "EVENT,...")]
        default_zone: Option<Vec<String>>,
        /// Write the good rows and list the bad ones, instead of failing.
        #[arg(long)]
        skip_invalid: bool,
        /// Move the user names and passwords of the list's stream URLs into this secrets
        /// file (merged into it if it exists; a new one is made mode 0600), as
        /// `[credentials.<camera id>]`; the camera file gets `credentials = "<camera id>"`
        /// and no password.
        #[arg(long, value_name = "OUT.toml")]
        secrets: Option<PathBuf>,
    },
}

impl CamerasCommand {
    pub fn run(&self) -> Result<()> {
        match self {
            CamerasCommand::Check { path } => check(path),
            CamerasCommand::Diff {
                old,
                new,
                json,
                secrets,
            } => diff(old, new, *json, secrets.as_deref()),
            CamerasCommand::Import {
                csv,
                output,
                replace,
                default_zone,
                skip_invalid,
                secrets,
            } => import(
                csv,
                output.as_deref(),
                *replace,
                secrets.as_deref(),
                &ImportOptions {
                    default_zone: default_zone.clone(),
                    skip_invalid: *skip_invalid,
                },
            ),
        }
    }
}

fn check(path: &Path) -> Result<()> {
    match config::check_cameras(path, &EventCatalogue::builtin()) {
        Ok(cameras) => {
            let zones: usize = cameras.iter().map(|c| c.zones.len()).sum();
            println!(
                "{}: {} camera{}, {} zone{}: OK",
                path.display(),
                cameras.len(),
                if cameras.len() == 1 { "" } else { "s" },
                zones,
                if zones == 1 { "" } else { "s" },
            );
            Ok(())
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            Err(CheckFailed {
                path: path.to_path_buf(),
                errors: errors.len(),
            }
            .into())
        }
    }
}

/// `cameras check` found errors (listed as found): a configuration error.
#[derive(Debug, thiserror::Error)]
#[error("{}: {errors} error{} (listed above)", path.display(), if *errors == 1 { "" } else { "s" })]
pub struct CheckFailed {
    path: PathBuf,
    errors: usize,
}

fn diff(old_path: &Path, new_path: &Path, json: bool, secrets: Option<&Path>) -> Result<()> {
    let events = EventCatalogue::builtin();
    let secrets = config::Secrets::file_or_env(secrets);
    let old = config::load_cameras_with(old_path, &events, &secrets)?;
    let new = config::load_cameras_with(new_path, &events, &secrets)?;
    let diff = config::diff_cameras(&old, &new);
    if json {
        println!("{}", serde_json::to_string_pretty(&diff)?);
    } else {
        print!("{}", describe_diff(old_path, new_path, &old, &new, &diff));
    }
    Ok(())
}

/// Counts, then the added, removed and changed cameras; stream URLs without credentials.
fn describe_diff(
    old_path: &Path,
    new_path: &Path,
    old: &[Camera],
    new: &[Camera],
    diff: &CameraDiff,
) -> String {
    let (old, new) = (by_id(old), by_id(new));
    let stream = |s: &Option<String>| s.as_deref().map_or("none".into(), redact_url);
    let mut text = format!(
        "{} → {}: {} added, {} removed, {} changed, {} unchanged\n",
        old_path.display(),
        new_path.display(),
        diff.added.len(),
        diff.removed.len(),
        diff.changed.len(),
        diff.unchanged
    );
    if !diff.added.is_empty() {
        text.push_str("added:\n");
        for camera in diff.added.iter().map(|id| new[id.as_str()]) {
            text.push_str(&format!(
                "  {}  {}  {}\n",
                camera.info.id,
                camera.info.name,
                stream(&camera.main_stream)
            ));
        }
    }
    if !diff.removed.is_empty() {
        text.push_str("removed:\n");
        for camera in diff.removed.iter().map(|id| old[id.as_str()]) {
            text.push_str(&format!("  {}  {}\n", camera.info.id, camera.info.name));
        }
    }
    if !diff.changed.is_empty() {
        text.push_str("changed:\n");
        for changed in &diff.changed {
            let (before, after) = (old[changed.id.as_str()], new[changed.id.as_str()]);
            let fields: Vec<String> = changed
                .fields
                .iter()
                .map(|field| {
                    let streams = match field.as_str() {
                        "main_stream" => (&before.main_stream, &after.main_stream),
                        "sub_stream" => (&before.sub_stream, &after.sub_stream),
                        _ => return field.clone(),
                    };
                    let (from, to) = (stream(streams.0), stream(streams.1));
                    if from == to {
                        format!("{field} (credentials changed)")
                    } else {
                        format!("{field} ({from} → {to})")
                    }
                })
                .collect();
            text.push_str(&format!("  {}  {}\n", changed.id, fields.join(", ")));
        }
    }
    text
}

fn by_id(cameras: &[Camera]) -> HashMap<&str, &Camera> {
    cameras.iter().map(|c| (c.info.id.as_str(), c)).collect()
}

fn import(
    csv: &Path,
    output: Option<&Path>,
    replace: bool,
    secrets: Option<&Path>,
    options: &ImportOptions,
) -> Result<()> {
    let mut imported =
        config::import_csv(csv, &EventCatalogue::builtin(), options).map_err(|e| match e {
            ImportError::BadRows { .. } => {
                anyhow!("{e}\n(--skip-invalid writes the good rows and lists the bad ones)")
            }
            e => e.into(),
        })?;
    if !imported.ignored_columns.is_empty() {
        eprintln!(
            "note: {}: columns ignored: {}",
            csv.display(),
            imported.ignored_columns.join(", ")
        );
    }
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let new_cameras = if imported.rules.is_empty() {
        "with no zones yet (nothing is filed until zones are drawn)".to_string()
    } else {
        format!(
            "each watching {} in its whole frame",
            imported.rules.join(", ")
        )
    };
    if let Some(secrets_path) = secrets {
        let mut found = config::SecretsFile::default();
        let moved = imported.move_credentials(&mut found)?;
        // The secrets first: a camera file never names credentials that are nowhere.
        config::write_secrets(secrets_path, &found)?;
        eprintln!(
            "{}: credentials of {moved} camera{} moved to {}",
            csv.display(),
            plural(moved),
            secrets_path.display()
        );
    }
    let merged = match output {
        Some(path) => config::write_import(path, &imported, replace)?,
        None => {
            std::io::stdout().write_all(imported.toml.as_bytes())?;
            None
        }
    };
    let was_merged = merged.is_some();
    match merged {
        Some(merged) => eprintln!(
            "{} → {}: kept zones of {} camera{}, added {}, removed {}; new cameras {}",
            csv.display(),
            output.expect("merged into a file").display(),
            merged.kept,
            plural(merged.kept),
            merged.added.len(),
            merged.removed.len(),
            new_cameras,
        ),
        None => eprintln!(
            "{}: {} camera{} written to {}, {}",
            csv.display(),
            imported.cameras,
            plural(imported.cameras),
            output.map_or("stdout".into(), |p| p.display().to_string()),
            new_cameras,
        ),
    }
    if !imported.skipped.is_empty() {
        eprintln!("skipped {}", config::list_bad_rows(&imported.skipped));
    }
    if let Some(path) = output.filter(|_| was_merged) {
        // A kept camera's hand-drawn zone that the loader refuses (drawn before outlines that
        // cross themselves were refused, say) is kept as it was: tell, don't hide it.
        if let Err(e) =
            config::load_cameras_with(path, &EventCatalogue::builtin(), &config::Secrets::Skip)
        {
            eprintln!("warning: the merged camera file does not load: {e}");
        }
    }
    Ok(())
}
