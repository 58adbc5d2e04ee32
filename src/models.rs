//! The model catalogue: which detection models we know, where their files are and how
//! to feed them. Nothing here assumes COCO: labels, input geometry and output layout all
//! come from the manifest, so a city can bring its own detector.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The manifest shipped with the source tree, compiled in so the binary works anywhere.
const BUILTIN_MANIFEST: &str = include_str!("../models/manifest.toml");

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model manifest {path}: {reason}")]
    Manifest { path: String, reason: String },
    #[error("unknown model `{name}`; known models: {known}")]
    Unknown { name: String, known: String },
    #[error(
        "model file {} for `{}` not found (looked in {searched}); {}",
        spec.file, spec.name, remedy(spec)
    )]
    Missing {
        spec: Box<ModelSpec>,
        searched: String,
    },
    #[error(
        "model file {} has sha256 {actual}, expected {} for `{}`; replace it with the file from {}",
        path.display(), spec.sha256.as_deref().unwrap_or_default(), spec.name, origin(spec)
    )]
    HashMismatch {
        spec: Box<ModelSpec>,
        path: PathBuf,
        actual: String,
    },
    #[error(
        "no manifest entry for model file {path}: add a [[model]] entry (format, input, labels) \
         to {sidecar} or to a manifest.toml in CGBOT_MODEL_DIR"
    )]
    NoEntry { path: PathBuf, sidecar: PathBuf },
    #[error("cannot read model file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where to get a model file, for error messages.
fn origin(spec: &ModelSpec) -> &str {
    spec.source.as_deref().unwrap_or("its publisher")
}

/// How to get a missing model file: its recipe for files made locally, else the download.
fn remedy(spec: &ModelSpec) -> String {
    match &spec.recipe {
        Some(recipe) => format!("it is made locally: run `{recipe}`"),
        None => format!(
            "run `make setup`, or download {} (sha256 {}) into one of those directories \
             (models_dir in run.toml or CGBOT_MODEL_DIR name another)",
            origin(spec),
            spec.sha256.as_deref().unwrap_or("not recorded")
        ),
    }
}

/// Output layouts we can decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// YOLOX raw head output, `N×A×(5+C)`: grid offsets, log sizes, objectness, class scores.
    Yolox,
    /// Ultralytics YOLOv8 export, `N×(4+C)×A`: centre boxes in input pixels, class scores.
    Yolov8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ColourOrder {
    Bgr,
    Rgb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Nchw,
}

/// How a frame becomes the model's input tensor.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    pub colour: ColourOrder,
    /// Factor applied to 0–255 pixel values.
    pub scale: f32,
    /// Letterbox fill value, 0–255, before scaling.
    pub pad: u8,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub name: String,
    pub file: String,
    #[serde(default)]
    pub default: bool,
    /// Expected sha256 of the file; custom models may leave it out.
    pub sha256: Option<String>,
    pub size: Option<u64>,
    pub license: Option<String>,
    /// Official download URL.
    pub source: Option<String>,
    /// The command that makes the file locally (e.g. an INT8 model quantised from another
    /// entry), for files that have no download.
    pub recipe: Option<String>,
    pub description: Option<String>,
    pub format: OutputFormat,
    /// Feature-map strides of a YOLOX head.
    #[serde(default = "default_strides")]
    pub strides: Vec<u32>,
    pub input: InputSpec,
    pub labels: Vec<String>,
}

fn default_strides() -> Vec<u32> {
    vec![8, 16, 32]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    model: Vec<ModelSpec>,
}

/// A model spec together with the file that was found for it.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    pub spec: ModelSpec,
    pub path: PathBuf,
}

/// The known models: the built-in manifest plus any `manifest.toml` in the search path.
#[derive(Debug, Clone)]
pub struct Catalogue {
    models: Vec<ModelSpec>,
    search_dirs: Vec<PathBuf>,
}

impl Catalogue {
    /// Loads the built-in manifest and overlays those found in the model directories:
    /// `configured` (run.toml's `models_dir`), `CGBOT_MODEL_DIR`, the installation's
    /// `/var/lib/cgbot/models`, `./models`, and last the source tree's `models/` while the
    /// binary runs from that tree (after `make setup`, from any working directory).
    pub fn load(configured: Option<&Path>) -> Result<Self, ModelError> {
        Self::with_dirs(model_dirs(
            configured,
            std::env::var_os("CGBOT_MODEL_DIR").map(PathBuf::from),
            crate::install::development_tree(),
        ))
    }

    pub fn with_dirs(search_dirs: Vec<PathBuf>) -> Result<Self, ModelError> {
        let mut models = parse_manifest(BUILTIN_MANIFEST, "built-in models/manifest.toml")?;
        // Later directories have lower priority, so overlay them first.
        for dir in search_dirs.iter().rev() {
            let path = dir.join("manifest.toml");
            if let Ok(text) = std::fs::read_to_string(&path) {
                for spec in parse_manifest(&text, &path.display().to_string())? {
                    models.retain(|m| m.name != spec.name);
                    models.push(spec);
                }
            }
        }
        Ok(Self {
            models,
            search_dirs,
        })
    }

    pub fn models(&self) -> &[ModelSpec] {
        &self.models
    }

    pub fn get(&self, name: &str) -> Result<&ModelSpec, ModelError> {
        self.models
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| ModelError::Unknown {
                name: name.to_string(),
                known: self.names(),
            })
    }

    fn names(&self) -> String {
        let names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
        names.join(", ")
    }

    /// The input the embedded default model takes, which needs no model file: what a
    /// decoder prepares frames for in tests and benchmarks. The embedded catalogue is
    /// checked by this module's tests, so it cannot fail here.
    pub fn default_input() -> InputSpec {
        Catalogue::with_dirs(vec![])
            .expect("the embedded model catalogue")
            .default_model()
            .expect("the embedded catalogue's default model")
            .input
            .clone()
    }

    pub fn default_model(&self) -> Result<&ModelSpec, ModelError> {
        self.models
            .iter()
            .find(|m| m.default)
            .ok_or_else(|| ModelError::Unknown {
                name: "(default)".into(),
                known: self.names(),
            })
    }

    /// Resolves `--model`: a path to an ONNX file, a model name, or the default model.
    /// A path is described by its sidecar `PATH.toml`, or by the catalogue entry with the
    /// same file name; a named or default model is looked up in the search directories and
    /// its hash verified.
    pub fn resolve(&self, model: Option<&str>) -> Result<ResolvedModel, ModelError> {
        let Some(model) = model else {
            return self.locate(self.default_model()?);
        };
        let as_path = Path::new(model);
        if as_path.extension().is_some_and(|e| e == "onnx") || as_path.is_file() {
            return self.describe_path(as_path);
        }
        self.locate(self.get(model)?)
    }

    fn describe_path(&self, path: &Path) -> Result<ResolvedModel, ModelError> {
        if !path.is_file() {
            return Err(ModelError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let mut sidecar = path.as_os_str().to_owned();
        sidecar.push(".toml");
        let sidecar = PathBuf::from(sidecar);
        if let Ok(text) = std::fs::read_to_string(&sidecar) {
            let mut specs = parse_manifest(&text, &sidecar.display().to_string())?;
            if specs.len() != 1 {
                return Err(ModelError::Manifest {
                    path: sidecar.display().to_string(),
                    reason: format!(
                        "a sidecar holds exactly one [[model]], found {}",
                        specs.len()
                    ),
                });
            }
            let spec = specs.remove(0);
            verify_hash(&spec, path)?;
            return Ok(ResolvedModel {
                spec,
                path: path.to_path_buf(),
            });
        }
        let file_name = path.file_name().map(|f| f.to_string_lossy().into_owned());
        let spec = self
            .models
            .iter()
            .find(|m| Some(&m.file) == file_name.as_ref())
            .ok_or_else(|| ModelError::NoEntry {
                path: path.to_path_buf(),
                sidecar: sidecar.clone(),
            })?;
        verify_hash(spec, path)?;
        Ok(ResolvedModel {
            spec: spec.clone(),
            path: path.to_path_buf(),
        })
    }

    /// Finds the file of a catalogue model in the search directories and verifies it.
    pub fn locate(&self, spec: &ModelSpec) -> Result<ResolvedModel, ModelError> {
        let path = self.find_file(spec).ok_or_else(|| ModelError::Missing {
            spec: Box::new(spec.clone()),
            searched: self
                .search_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        verify_hash(spec, &path)?;
        Ok(ResolvedModel {
            spec: spec.clone(),
            path,
        })
    }

    /// Like [`Catalogue::locate`], but a locally made model (one with a `recipe`) whose file
    /// was never made is `None` rather than an error: it is optional until asked for.
    pub fn locate_if_made(&self, spec: &ModelSpec) -> Result<Option<ResolvedModel>, ModelError> {
        if spec.recipe.is_some() && self.find_file(spec).is_none() {
            return Ok(None);
        }
        self.locate(spec).map(Some)
    }

    /// The first existing file for `spec` in the search directories.
    pub fn find_file(&self, spec: &ModelSpec) -> Option<PathBuf> {
        self.search_dirs
            .iter()
            .map(|dir| dir.join(&spec.file))
            .find(|p| p.is_file())
    }
}

/// The model search path, most specific first.
fn model_dirs(
    configured: Option<&Path>,
    from_env: Option<PathBuf>,
    source_tree: Option<&Path>,
) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = configured.map(Path::to_path_buf).into_iter().collect();
    dirs.extend(from_env);
    dirs.push(PathBuf::from(crate::install::DEFAULT_MODEL_DIR));
    dirs.push(PathBuf::from("models"));
    dirs.extend(source_tree.map(|tree| tree.join("models")));
    dirs
}

fn parse_manifest(text: &str, origin: &str) -> Result<Vec<ModelSpec>, ModelError> {
    let file: ManifestFile = toml::from_str(text).map_err(|e| ModelError::Manifest {
        path: origin.to_string(),
        reason: e.to_string(),
    })?;
    for spec in &file.model {
        validate(spec).map_err(|reason| ModelError::Manifest {
            path: origin.to_string(),
            reason: format!("model `{}`: {reason}", spec.name),
        })?;
    }
    Ok(file.model)
}

fn validate(spec: &ModelSpec) -> Result<(), String> {
    if spec.labels.is_empty() {
        return Err("`labels` is empty".into());
    }
    if spec.input.width == 0 || spec.input.height == 0 {
        return Err("`input.width` and `input.height` must be positive".into());
    }
    if spec.format == OutputFormat::Yolox {
        if spec.strides.is_empty() || spec.strides.contains(&0) {
            return Err("`strides` must be non-empty and positive".into());
        }
        if let Some(s) = spec
            .strides
            .iter()
            .find(|s| spec.input.width % *s != 0 || spec.input.height % *s != 0)
        {
            return Err(format!("input size is not a multiple of stride {s}"));
        }
    }
    if let Some(hash) = &spec.sha256 {
        if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("`sha256` {hash:?} is not 64 hex digits"));
        }
    }
    Ok(())
}

/// Hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Checks a file against the spec's sha256, when the spec records one.
pub fn verify_hash(spec: &ModelSpec, path: &Path) -> Result<(), ModelError> {
    let Some(expected) = &spec.sha256 else {
        return Ok(());
    };
    let actual = sha256_file(path)?;
    if !actual.eq_ignore_ascii_case(expected) {
        return Err(ModelError::HashMismatch {
            spec: Box::new(spec.clone()),
            path: path.to_path_buf(),
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_search_path_puts_configured_dirs_first_and_source_tree_last() {
        let dirs = model_dirs(
            Some(Path::new("/etc/cgbot/models")),
            Some("/env/models".into()),
            Some(Path::new("/src/cgbot")),
        );
        let expected: Vec<PathBuf> = [
            "/etc/cgbot/models",
            "/env/models",
            "/var/lib/cgbot/models",
            "models",
            "/src/cgbot/models",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(dirs, expected);
        assert_eq!(
            model_dirs(None, None, None),
            [
                PathBuf::from("/var/lib/cgbot/models"),
                PathBuf::from("models")
            ]
        );
    }

    #[test]
    fn builtin_manifest_describes_yolox_nano_with_coco_labels() {
        let catalogue = Catalogue::with_dirs(vec![]).unwrap();
        let spec = catalogue.default_model().unwrap();
        assert_eq!(spec.name, "yolox_nano");
        assert_eq!(spec.format, OutputFormat::Yolox);
        assert_eq!(spec.labels.len(), 80);
        assert_eq!(spec.labels[16], "dog");
        assert_eq!(
            (spec.input.width, spec.input.colour),
            (416, ColourOrder::Bgr)
        );
    }

    #[test]
    fn missing_model_error_names_file_hash_and_remedy() {
        let dir = tempfile::tempdir().unwrap();
        let catalogue = Catalogue::with_dirs(vec![dir.path().to_path_buf()]).unwrap();
        let err = catalogue.resolve(None).unwrap_err().to_string();
        assert!(err.contains("yolox_nano.onnx"), "{err}");
        assert!(err.contains("4903c9058f6e2553"), "{err}");
        assert!(err.contains("make setup"), "{err}");
    }

    #[test]
    fn a_locally_made_model_not_yet_made_is_optional_until_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let catalogue = Catalogue::with_dirs(vec![dir.path().to_path_buf()]).unwrap();
        let int8 = catalogue.get("yolox_nano_int8").unwrap();
        assert!(catalogue.locate_if_made(int8).unwrap().is_none());
        // A downloaded model that is missing is still an error.
        let fp32 = catalogue.get("yolox_nano").unwrap();
        assert!(catalogue.locate_if_made(fp32).is_err());
        std::fs::write(dir.path().join("yolox_nano_int8.onnx"), b"made").unwrap();
        assert!(catalogue.locate_if_made(int8).unwrap().is_some());
    }

    #[test]
    fn missing_locally_made_model_names_its_recipe() {
        let dir = tempfile::tempdir().unwrap();
        let catalogue = Catalogue::with_dirs(vec![dir.path().to_path_buf()]).unwrap();
        let err = catalogue
            .resolve(Some("yolox_nano_int8"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("yolox_nano_int8.onnx"), "{err}");
        assert!(err.contains("make int8-model"), "{err}");
    }

    #[test]
    fn mismatching_hash_is_reported_with_both_hashes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("yolox_nano.onnx"), b"not the model").unwrap();
        let catalogue = Catalogue::with_dirs(vec![dir.path().to_path_buf()]).unwrap();
        let err = catalogue
            .resolve(Some("yolox_nano"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected 4903c9058f6e"), "{err}");
        assert!(err.contains(&sha256_file(&dir.path().join("yolox_nano.onnx")).unwrap()));
    }

    #[test]
    fn directory_manifest_overrides_and_extends_builtin() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("manifest.toml"),
            r#"[[model]]
name = "city_litter"
file = "litter.onnx"
format = "yolov8"
input = { width = 640, height = 640, layout = "nchw", colour = "rgb", scale = 0.00392156862, pad = 114 }
labels = ["garbage_pile", "vendor_cart"]
"#,
        )
        .unwrap();
        let catalogue = Catalogue::with_dirs(vec![dir.path().to_path_buf()]).unwrap();
        let spec = catalogue.get("city_litter").unwrap();
        assert_eq!(spec.labels, ["garbage_pile", "vendor_cart"]);
        assert!(catalogue.get("yolox_nano").is_ok());
    }

    #[test]
    fn malformed_manifest_names_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("manifest.toml"),
            "[[model]]\nname = \"x\"\nfile = \"x.onnx\"\nformat = \"ssd\"\n",
        )
        .unwrap();
        let err = Catalogue::with_dirs(vec![dir.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("manifest.toml"), "{err}");
        assert!(err.contains("format"), "{err}");
    }

    #[test]
    fn unknown_model_file_asks_for_a_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mystery.onnx");
        std::fs::write(&path, b"x").unwrap();
        let catalogue = Catalogue::with_dirs(vec![]).unwrap();
        let err = catalogue
            .resolve(Some(path.to_str().unwrap()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("mystery.onnx.toml"), "{err}");
    }
}
