//! The subcommands: each parses its arguments into the library's options, runs, prints.

pub mod bench;
pub mod cameras;
pub mod cases;
pub mod console;
pub mod detect;
pub mod eval;
pub mod models;
pub mod replay;
pub mod run;
pub mod sim;

use std::path::Path;

use anyhow::{bail, Result};
use clap::Args;

use cgbot::annotate;
use cgbot::decode::Frame;
use cgbot::detect::{Detection, Detector, DetectorOptions, Provider};
use cgbot::models::Catalogue;

#[derive(Args, Clone)]
pub struct DetectorArgs {
    /// Model: a catalogue name or a path to an ONNX file (default: the catalogue's default).
    #[arg(long)]
    pub model: Option<String>,
    /// Minimum detection score.
    #[arg(long, default_value_t = 0.3)]
    conf: f32,
    /// IoU above which a box of the same class is suppressed.
    #[arg(long, default_value_t = 0.45)]
    nms: f32,
    /// Execution provider: cpu, cuda[:N], tensorrt[:N]. A GPU provider that cannot start is an error.
    #[arg(long, default_value = "cpu")]
    provider: Provider,
    /// Inference threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Largest batch for models with a dynamic batch dimension.
    #[arg(long, default_value_t = 8)]
    batch: usize,
}

impl DetectorArgs {
    pub fn build(&self) -> Result<Detector> {
        if !(0.0..=1.0).contains(&self.conf) || !(0.0..=1.0).contains(&self.nms) {
            bail!("--conf and --nms must be between 0 and 1");
        }
        let model = Catalogue::load(None)?.resolve(self.model.as_deref())?;
        let options = DetectorOptions {
            conf: self.conf,
            nms_iou: self.nms,
            provider: self.provider,
            threads: self.threads,
            max_batch: self.batch.max(1),
        };
        Ok(Detector::new(model, options)?)
    }

    /// The detector for a camera: `--model` if given, else the camera's own model.
    pub fn build_for(&self, camera_model: Option<&str>) -> Result<Detector> {
        match (&self.model, camera_model) {
            (None, Some(model)) => DetectorArgs {
                model: Some(model.to_string()),
                ..self.clone()
            }
            .build(),
            _ => self.build(),
        }
    }
}

fn describe(detections: &[Detection]) -> String {
    if detections.is_empty() {
        return "nothing detected".into();
    }
    detections
        .iter()
        .map(|d| {
            let [x1, y1, x2, y2] = d.bbox;
            format!(
                "{} {:.2} [{x1:.0},{y1:.0},{x2:.0},{y2:.0}]",
                d.label, d.score
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `NAME.jpg` for an image, `NAME-000012.000s.jpg` for a frame of a clip.
pub fn annotated_name(source: &Path, pts: Option<f64>) -> String {
    let stem = source
        .file_stem()
        .map_or("frame".into(), |s| s.to_string_lossy());
    match pts {
        Some(pts) => format!("{stem}-{pts:010.3}s.jpg"),
        None => format!("{stem}.jpg"),
    }
}

pub fn write_annotated(frame: &Frame, detections: &[Detection], path: &Path) -> Result<()> {
    let mut image = frame.picture.to_rgb()?;
    annotate::draw_detections(&mut image, detections);
    Ok(annotate::save_jpeg(&image, path)?)
}
