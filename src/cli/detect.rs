//! `cgbot detect`: objects in still images.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;
use serde::Serialize;

use cgbot::decode::Sampling;
use cgbot::detect::Detection;
use cgbot::pipeline::{self, Batching};
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

fn detect(
    images: &[PathBuf],
    args: &DetectorArgs,
    json: bool,
    annotate: Option<&Path>,
) -> Result<()> {
    let mut detector = args.build()?;
    let mut results = Vec::new();
    let mut failed = 0;
    for path in images {
        let mut found = Vec::new();
        let outcome = FileSource::open(path)
            .map_err(Into::into)
            .and_then(|source| {
                pipeline::analyse_file(
                    source,
                    &mut detector,
                    Sampling::All,
                    Batching::default(),
                    &mut |frame, detections| {
                        if let Some(dir) = annotate {
                            write_annotated(
                                frame,
                                detections,
                                &dir.join(annotated_name(path, None)),
                            )?;
                        }
                        found.extend_from_slice(detections);
                        Ok(())
                    },
                )
            });
        match outcome {
            Ok(_) => results.push((path.display().to_string(), found)),
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
