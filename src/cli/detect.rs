//! `cgbot detect`: objects in still images.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;
use serde::Serialize;

use cgbot::config::Camera;
use cgbot::decode::Sampling;
use cgbot::detect::Detection;
use cgbot::pipeline::{self, Analysed, FileFeed, Outlet, OutletError};
use cgbot::source::FileSource;

use super::{annotated_name, describe, write_annotated, DetectorArgs};

#[derive(Args)]
pub struct DetectArgs {
    #[arg(required = true)]
    images: Vec<PathBuf>,
    #[command(flatten)]
    detector: DetectorArgs,
    /// Print JSON: [{"image", "detections": [{"label", "score", "box"}]}].
    #[arg(long)]
    json: bool,
    /// Write each image with labelled boxes into this directory.
    #[arg(long, value_name = "DIR")]
    annotate: Option<PathBuf>,
}

impl DetectArgs {
    pub fn run(&self) -> Result<()> {
        detect(
            &self.images,
            &self.detector,
            self.json,
            self.annotate.as_deref(),
        )
    }
}

#[derive(Serialize)]
struct ImageResult<'a> {
    image: String,
    detections: &'a [Detection],
}

/// Collects each image's detections (and draws them) as the pipeline analyses it.
struct Collect {
    annotate: Option<PathBuf>,
    found: HashMap<String, Vec<Detection>>,
}

impl Outlet for Collect {
    fn analysed(&mut self, a: &Analysed<'_>) -> Result<(), OutletError> {
        if let Some(dir) = &self.annotate {
            let path = dir.join(annotated_name(Path::new(a.feed.id()), None));
            write_annotated(a.frame, a.detections, &path)?;
        }
        self.found
            .entry(a.feed.id().to_string())
            .or_default()
            .extend_from_slice(a.detections);
        Ok(())
    }
}

fn detect(
    images: &[PathBuf],
    args: &DetectorArgs,
    json: bool,
    annotate: Option<&Path>,
) -> Result<()> {
    let detector = args.build()?;
    let mut failed = 0;
    let mut files = Vec::new();
    for path in images {
        match FileSource::open(path) {
            Ok((source, info)) => files.push(FileFeed {
                source,
                info,
                camera: Camera::unconfigured(&path.display().to_string()),
                start: 0.0,
            }),
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    let names: Vec<String> = files.iter().map(|f| f.camera.info.id.clone()).collect();
    let collect = Collect {
        annotate: annotate.map(Path::to_path_buf),
        found: HashMap::new(),
    };
    let (mut collect, summaries) =
        pipeline::run_files(files, detector, None, Sampling::All, collect)?;
    let mut results = Vec::new();
    for (image, summary) in names.into_iter().zip(summaries) {
        match summary {
            Ok(_) => {
                let found = collect.found.remove(&image).unwrap_or_default();
                results.push((image, found));
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    if json {
        let out: Vec<ImageResult> = results
            .iter()
            .map(|(image, detections)| ImageResult {
                image: image.clone(),
                detections,
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for (image, detections) in &results {
            println!("{image}: {}", describe(detections));
        }
    }
    if failed > 0 {
        bail!("{failed} of {} images could not be analysed", images.len());
    }
    Ok(())
}
