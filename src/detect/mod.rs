//! Detect stage: an ONNX Runtime session over letterboxed model inputs, decoded by the
//! model's output adapter, class-aware NMS, boxes mapped back to source pixels.

pub mod nms;
pub mod runtime;
mod yolov8;
mod yolox;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use ort::ep;
use ort::session::{builder::GraphOptimizationLevel, Session};
use ort::value::{TensorRef, ValueType};
use serde::Serialize;

use crate::decode::ModelInput;
use crate::models::{OutputFormat, ResolvedModel};
/// Public for the stage benchmarks (`benches/stages.rs`), which time the YOLOX
/// postprocess without running the model.
pub use yolox::YoloxGrid;

/// One detected object, box in source-image pixels `[x1, y1, x2, y2]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    pub label: String,
    #[serde(skip)]
    pub class: usize,
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

/// A decoded box before NMS, in model-input pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub class: usize,
    pub score: f32,
    pub bbox: [f32; 4],
}

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    #[error("cannot load model {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("model {path} does not fit its manifest entry: {reason}")]
    Mismatch { path: PathBuf, reason: String },
    #[error(
        "{provider} execution provider could not be registered for {path}: {reason} \
         (the CPU-only ONNX Runtime lacks it: run `ORT_WHEEL=onnxruntime-gpu make setup` on a GPU machine)"
    )]
    Provider {
        provider: Provider,
        path: PathBuf,
        reason: String,
    },
    #[error("inference with {path} failed: {reason}")]
    Inference { path: PathBuf, reason: String },
    #[error(
        "model {path} returned output of shape {got:?}, expected {expected} for format {format:?}"
    )]
    OutputShape {
        path: PathBuf,
        got: Vec<i64>,
        expected: String,
        format: OutputFormat,
    },
}

/// Where inference runs. A requested GPU provider that cannot register is an error,
/// never a silent fall-back to CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Provider {
    #[default]
    Cpu,
    Cuda {
        device: i32,
    },
    TensorRt {
        device: i32,
    },
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Provider::Cpu => write!(f, "cpu"),
            Provider::Cuda { device } => write!(f, "cuda:{device}"),
            Provider::TensorRt { device } => write!(f, "tensorrt:{device}"),
        }
    }
}

impl FromStr for Provider {
    type Err = String;
    /// `cpu`, `cuda`, `cuda:1`, `tensorrt`, `tensorrt:0`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, device) = match s.split_once(':') {
            Some((k, d)) => (
                k,
                d.parse::<i32>()
                    .map_err(|_| format!("bad device number in `{s}`"))?,
            ),
            None => (s, 0),
        };
        match kind {
            "cpu" => Ok(Provider::Cpu),
            "cuda" => Ok(Provider::Cuda { device }),
            "tensorrt" | "trt" => Ok(Provider::TensorRt { device }),
            _ => Err(format!(
                "unknown execution provider `{s}` (cpu, cuda[:N], tensorrt[:N])"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DetectorOptions {
    /// Minimum score kept.
    pub conf: f32,
    /// IoU above which a same-class box is suppressed.
    pub nms_iou: f32,
    pub provider: Provider,
    /// Intra-op threads; 0 lets ONNX Runtime choose (one per core).
    pub threads: usize,
    /// Largest batch sent to a model with a dynamic batch dimension.
    pub max_batch: usize,
}

impl Default for DetectorOptions {
    fn default() -> Self {
        Self {
            conf: 0.3,
            nms_iou: 0.45,
            provider: Provider::Cpu,
            threads: 0,
            max_batch: 8,
        }
    }
}

/// Time spent in the detect stage, accumulated over calls.
#[derive(Debug, Clone, Copy, Default)]
pub struct DetectTimes {
    pub inference: Duration,
    pub postprocess: Duration,
    pub batches: u64,
}

enum Adapter {
    Yolox(YoloxGrid),
    Yolov8,
}

pub struct Detector {
    session: Session,
    model: ResolvedModel,
    options: DetectorOptions,
    input_name: String,
    /// Images per `run`: the model's fixed batch, or `max_batch` when it is dynamic.
    batch: usize,
    dynamic_batch: bool,
    adapter: Adapter,
    /// Reused batch tensor storage.
    staging: Vec<f32>,
    times: DetectTimes,
}

impl Detector {
    pub fn new(model: ResolvedModel, options: DetectorOptions) -> Result<Self, DetectError> {
        let env = runtime::environment()?;
        let path = model.path.clone();
        let load = |e: ort::Error| DetectError::Load {
            path: path.clone(),
            reason: e.to_string(),
        };
        let mut builder = Session::builder(env)
            .map_err(load)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| load(e.into()))?
            // Idle intra-op threads would otherwise spin for a while after each run: at
            // one frame per camera every few seconds that is CPU burnt for nothing.
            .with_intra_op_spinning(false)
            .map_err(|e| load(e.into()))?;
        if options.threads > 0 {
            builder = builder
                .with_intra_threads(options.threads)
                .map_err(|e| load(e.into()))?;
        }
        let providers = match options.provider {
            Provider::Cpu => vec![],
            Provider::Cuda { device } => {
                vec![ep::CUDA::default()
                    .with_device_id(device)
                    .build()
                    .error_on_failure()]
            }
            Provider::TensorRt { device } => vec![
                ep::TensorRT::default()
                    .with_device_id(device)
                    .with_engine_cache(true)
                    .with_engine_cache_path(std::env::temp_dir().join("cgbot-trt").display())
                    .build()
                    .error_on_failure(),
                // Nodes TensorRT cannot take run on CUDA, not on the CPU.
                ep::CUDA::default()
                    .with_device_id(device)
                    .build()
                    .error_on_failure(),
            ],
        };
        if !providers.is_empty() {
            builder =
                builder
                    .with_execution_providers(providers)
                    .map_err(|e| DetectError::Provider {
                        provider: options.provider,
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
        }
        let session = builder.commit_from_file(&model.path).map_err(load)?;
        let (input_name, batch_dim) = check_io(&session, &model)?;
        let dynamic_batch = batch_dim < 1;
        let batch = if dynamic_batch {
            options.max_batch.max(1)
        } else {
            batch_dim as usize
        };
        let spec = &model.spec;
        let adapter = match spec.format {
            OutputFormat::Yolox => Adapter::Yolox(YoloxGrid::new(
                spec.input.width,
                spec.input.height,
                &spec.strides,
            )),
            OutputFormat::Yolov8 => Adapter::Yolov8,
        };
        tracing::info!(
            model = %model.path.display(),
            provider = %options.provider,
            threads = options.threads,
            batch,
            dynamic_batch,
            "detector ready"
        );
        Ok(Self {
            session,
            model,
            options,
            input_name,
            batch,
            dynamic_batch,
            adapter,
            staging: Vec::new(),
            times: DetectTimes::default(),
        })
    }

    /// `count` detectors of one model, each its own ONNX Runtime session: one per detect
    /// worker.
    pub fn sessions(
        model: &ResolvedModel,
        options: &DetectorOptions,
        count: usize,
    ) -> Result<Vec<Self>, DetectError> {
        (0..count)
            .map(|_| Self::new(model.clone(), options.clone()))
            .collect()
    }

    pub fn model(&self) -> &ResolvedModel {
        &self.model
    }

    /// Images the detector sends to the model at once.
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    pub fn times(&self) -> DetectTimes {
        self.times
    }

    /// Detects objects in each input; one result list per input, in order.
    pub fn detect(&mut self, inputs: &[&ModelInput]) -> Result<Vec<Vec<Detection>>, DetectError> {
        let mut results = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(self.batch) {
            results.extend(self.detect_batch(chunk)?);
        }
        Ok(results)
    }

    fn detect_batch(&mut self, inputs: &[&ModelInput]) -> Result<Vec<Vec<Detection>>, DetectError> {
        let spec = &self.model.spec;
        let (w, h) = (spec.input.width as usize, spec.input.height as usize);
        let per_image = 3 * w * h;
        // A fixed batch larger than what we have is padded with zeros; a dynamic one is not.
        let rows = if self.dynamic_batch {
            inputs.len()
        } else {
            self.batch
        };
        self.staging.clear();
        self.staging.resize(rows * per_image, 0.0);
        let scale = spec.input.scale;
        for (slot, input) in self.staging.chunks_exact_mut(per_image).zip(inputs) {
            for (value, &level) in slot.iter_mut().zip(&input.levels) {
                *value = f32::from(level) * scale;
            }
        }

        let started = Instant::now();
        let path = &self.model.path;
        let fail = |e: ort::Error| DetectError::Inference {
            path: path.clone(),
            reason: e.to_string(),
        };
        let tensor =
            TensorRef::from_array_view(([rows, 3, h, w], self.staging.as_slice())).map_err(fail)?;
        let outputs = self
            .session
            .run(ort::inputs![self.input_name.as_str() => tensor])
            .map_err(fail)?;
        let (shape, data) = outputs[0].try_extract_tensor::<f32>().map_err(fail)?;
        let inference = started.elapsed();

        let started = Instant::now();
        let classes = spec.labels.len();
        let shape: Vec<i64> = shape.iter().copied().collect();
        let per_output = match &self.adapter {
            Adapter::Yolox(grid) => (shape
                == [rows as i64, grid.anchors() as i64, 5 + classes as i64])
            .then_some(grid.anchors() * (5 + classes)),
            Adapter::Yolov8 => {
                (shape.len() == 3 && shape[0] == rows as i64 && shape[1] == 4 + classes as i64)
                    .then(|| (4 + classes) * shape[2] as usize)
            }
        };
        let Some(per_output) = per_output else {
            let expected = match &self.adapter {
                Adapter::Yolox(grid) => format!("[{rows}, {}, {}]", grid.anchors(), 5 + classes),
                Adapter::Yolov8 => format!("[{rows}, {}, anchors]", 4 + classes),
            };
            return Err(DetectError::OutputShape {
                path: path.clone(),
                got: shape,
                expected,
                format: spec.format,
            });
        };
        let conf = self.options.conf;
        let results = data
            .chunks_exact(per_output)
            .zip(inputs)
            .map(|(output, input)| {
                let candidates = match &self.adapter {
                    Adapter::Yolox(grid) => grid.decode(output, classes, conf),
                    Adapter::Yolov8 => {
                        yolov8::decode(output, classes, per_output / (4 + classes), conf)
                    }
                };
                nms::nms(candidates, self.options.nms_iou)
                    .into_iter()
                    .map(|c| Detection {
                        label: spec.labels[c.class].clone(),
                        class: c.class,
                        score: c.score,
                        bbox: input.letterbox.to_source(c.bbox),
                    })
                    .collect()
            })
            .collect();
        self.times.inference += inference;
        self.times.postprocess += started.elapsed();
        self.times.batches += 1;
        Ok(results)
    }
}

/// Checks the session's input against the manifest; returns the input name and its batch
/// dimension (-1 when dynamic).
fn check_io(session: &Session, model: &ResolvedModel) -> Result<(String, i64), DetectError> {
    let mismatch = |reason: String| DetectError::Mismatch {
        path: model.path.clone(),
        reason,
    };
    let [input] = session.inputs() else {
        return Err(mismatch(format!(
            "expected one input, the model has {}",
            session.inputs().len()
        )));
    };
    if session.outputs().is_empty() {
        return Err(mismatch("the model has no outputs".into()));
    }
    let ValueType::Tensor { shape, .. } = input.dtype() else {
        return Err(mismatch(format!(
            "input `{}` is not a tensor",
            input.name()
        )));
    };
    let spec = &model.spec.input;
    let dims: Vec<i64> = shape.iter().copied().collect();
    let fits = |dim: i64, want: u32| dim < 1 || dim == want as i64;
    if dims.len() != 4
        || !fits(dims[1], 3)
        || !fits(dims[2], spec.height)
        || !fits(dims[3], spec.width)
    {
        return Err(mismatch(format!(
            "input `{}` has shape {dims:?}, the manifest says [N, 3, {}, {}]",
            input.name(),
            spec.height,
            spec.width
        )));
    }
    Ok((input.name().to_string(), dims[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_parses_kind_and_device() {
        assert_eq!("cpu".parse(), Ok(Provider::Cpu));
        assert_eq!("cuda".parse(), Ok(Provider::Cuda { device: 0 }));
        assert_eq!("tensorrt:1".parse(), Ok(Provider::TensorRt { device: 1 }));
        assert!("opencl".parse::<Provider>().is_err());
        assert!("cuda:x".parse::<Provider>().is_err());
    }
}
