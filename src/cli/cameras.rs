//! `cgbot cameras …`: what a new camera list changes, and camera files made from a city's
//! camera point list.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use clap::Subcommand;

use cgbot::config::{self, Camera, CameraDiff, ImportError, ImportOptions};
use cgbot::redact::redact_url;
use cgbot::rules::EventCatalogue;

#[derive(Subcommand)]
pub enum CamerasCommand {
    /// What NEW changes against OLD: the cameras a rotation starts, stops and restarts.
    Diff {
        /// The camera file or directory in use.
        old: PathBuf,
        /// The camera file or directory to replace it.
        new: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Make a camera file of a city's camera point list (CSV, UTF-8), one whole-frame zone
    /// per camera.
    Import {
        /// The point list: CSV in UTF-8 (with or without a BOM), headed in Chinese or English.
        csv: PathBuf,
        /// Where to write the camera file (default: stdout).
        #[arg(short, long, value_name = "OUT.toml")]
        output: Option<PathBuf>,
        /// Events each camera's zone watches (default: every built-in event).
        #[arg(long, value_delimiter = ',', value_name = "EVENT,...")]
        rules: Option<Vec<String>>,
        /// Write the good rows and list the bad ones, instead of failing.
        #[arg(long)]
        skip_invalid: bool,
    },
}

impl CamerasCommand {
    pub fn run(&self) -> Result<()> {
        match self {
            CamerasCommand::Diff { old, new, json } => diff(old, new, *json),
            CamerasCommand::Import {
                csv,
                output,
                rules,
                skip_invalid,
            } => import(
                csv,
                output.as_deref(),
                &ImportOptions {
                    rules: rules.clone(),
                    skip_invalid: *skip_invalid,
                },
            ),
        }
    }
}

fn diff(old_path: &Path, new_path: &Path, json: bool) -> Result<()> {
    let events = EventCatalogue::builtin();
    let old = config::load_cameras(old_path, &events)?;
    let new = config::load_cameras(new_path, &events)?;
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

fn import(csv: &Path, output: Option<&Path>, options: &ImportOptions) -> Result<()> {
    let imported =
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
    match output {
        Some(path) => write_replacing(path, &imported.toml)?,
        None => std::io::stdout().write_all(imported.toml.as_bytes())?,
    }
    eprintln!(
        "{}: {} camera{} written to {}, each watching {} in its whole frame",
        csv.display(),
        imported.cameras,
        if imported.cameras == 1 { "" } else { "s" },
        output.map_or("stdout".into(), |p| p.display().to_string()),
        imported.rules.join(", "),
    );
    if !imported.skipped.is_empty() {
        eprintln!("skipped {}", config::list_bad_rows(&imported.skipped));
    }
    Ok(())
}

/// Writes `path` through a temporary file beside it, so that a daemon watching the camera
/// directory never reads half a file (it reads only `*.toml`).
fn write_replacing(path: &Path, text: &str) -> Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file name", path.display()))?;
    let temporary = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, path))
        .with_context(|| format!("{}: cannot write", path.display()))
}
