//! Clips made to order with the FFmpeg CLI from shared stills and clips: a background
//! (looped), regions of it erased, overlays that appear, leave and move, a camera turned
//! away and back, a light change with sensor noise; H.264 or H.265 at a given size, frame
//! rate and GOP. Made clips are cached by a hash of the FFmpeg command and its inputs.
//!
//! ```toml
//! [recipe]
//! background = "street-static-h264.mp4"   # a still or a clip, looped to `duration`
//! duration = "330s"
//! size = [640, 480]                       # default 640×480
//! fps = 2                                 # default 2 (enough for a sample every 2 s)
//! gop = "2s"                              # default: the sampling interval
//! codec = "h264"                          # or "h265"
//! erase = [[512, 205, 127, 140]]          # x, y, w, h painted over (FFmpeg delogo)
//!
//! [[recipe.overlay]]
//! image = "street-bus-car.jpg"
//! crop = [409, 167, 91, 99]               # x, y, w, h of the image (default: all of it)
//! width = 120                             # scaled to this width (default: as cropped)
//! at = [515, 235]                         # top-left corner in the clip
//! to = [700, 235]                         # moves there by `until` (default: stays)
//! from = "10s"                            # appears (default: at the start)
//! until = "310s"                          # leaves (default: at the end)
//!
//! [recipe.pan]                            # the camera turned away and back (a PTZ preset)
//! from = "60s"
//! until = "120s"
//! view = [0.0, 0.15, 0.7, 0.7]            # x, y, w, h of the frame seen meanwhile
//!
//! [recipe.light]                          # dusk: darker, flatter, noisier
//! brightness = -0.3                       # -1 … 1
//! contrast = 0.7                          # default 1
//! noise = 20                              # 0 … 100 (default 0)
//! from = "0s"                             # default: all of the clip
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::scenario::Origin;
use super::score::Window;
use super::EvalError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    H264,
    H265,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RecipeFile {
    background: PathBuf,
    duration: String,
    size: Option<[u32; 2]>,
    fps: Option<u32>,
    gop: Option<String>,
    codec: Option<Codec>,
    #[serde(default)]
    erase: Vec<[u32; 4]>,
    #[serde(default)]
    overlay: Vec<OverlayFile>,
    pan: Option<PanFile>,
    light: Option<LightFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverlayFile {
    image: PathBuf,
    crop: Option<[u32; 4]>,
    width: Option<u32>,
    at: [i32; 2],
    to: Option<[i32; 2]>,
    from: Option<String>,
    until: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PanFile {
    from: String,
    until: String,
    view: [f64; 4],
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LightFile {
    brightness: f64,
    contrast: Option<f64>,
    noise: Option<u32>,
    from: Option<String>,
    until: Option<String>,
}

/// A checked recipe, its inputs found.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    pub background: PathBuf,
    pub duration: f64,
    pub size: [u32; 2],
    pub fps: u32,
    /// Frames from one keyframe to the next.
    pub gop: u32,
    pub codec: Codec,
    pub erase: Vec<[u32; 4]>,
    pub overlays: Vec<Overlay>,
    pub pan: Option<(Window, [f64; 4])>,
    pub light: Option<Light>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Overlay {
    pub image: PathBuf,
    pub crop: Option<[u32; 4]>,
    pub width: Option<u32>,
    pub at: [i32; 2],
    pub to: Option<[i32; 2]>,
    pub shown: Window,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Light {
    pub brightness: f64,
    pub contrast: f64,
    pub noise: u32,
    pub during: Window,
}

impl RecipeFile {
    pub(super) fn resolve(self, origin: &Origin<'_>, every: Duration) -> Result<Recipe, EvalError> {
        let field = |name: &str| format!("recipe.{name}");
        let duration = origin.seconds(&field("duration"), &self.duration)?;
        if duration <= 0.0 {
            return Err(origin.invalid(field("duration"), "must be longer than zero"));
        }
        let [w, h] = self.size.unwrap_or([640, 480]);
        if w < 16 || h < 16 || w % 2 == 1 || h % 2 == 1 {
            return Err(origin.invalid(
                field("size"),
                format!("{w}×{h}: give even sides of 16 pixels or more"),
            ));
        }
        let fps = self.fps.unwrap_or(2);
        if !(1..=60).contains(&fps) {
            return Err(origin.invalid(field("fps"), format!("{fps}: give 1 to 60")));
        }
        let gop_seconds = match &self.gop {
            Some(text) => origin.seconds(&field("gop"), text)?,
            None => every.as_secs_f64(),
        };
        let gop = (gop_seconds * f64::from(fps)).round().max(1.0) as u32;
        let span = |name: &str,
                    from: &Option<String>,
                    until: &Option<String>|
         -> Result<Window, EvalError> {
            let window = Window {
                from: from
                    .as_deref()
                    .map(|t| origin.seconds(name, t))
                    .transpose()?
                    .unwrap_or(0.0),
                until: until
                    .as_deref()
                    .map(|t| origin.seconds(name, t))
                    .transpose()?
                    .unwrap_or(duration),
            };
            if window.until < window.from {
                return Err(origin.invalid(name, "`until` comes before `from`"));
            }
            Ok(window)
        };
        for (i, &[x, y, ew, eh]) in self.erase.iter().enumerate() {
            // delogo needs a border of picture around what it paints over.
            if x < 1 || y < 1 || x + ew >= w || y + eh >= h || ew == 0 || eh == 0 {
                return Err(origin.invalid(
                    format!("recipe.erase[{i}]"),
                    format!("[{x}, {y}, {ew}, {eh}] must lie inside the {w}×{h} frame, one pixel from its edges"),
                ));
            }
        }
        let overlays = self
            .overlay
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let name = format!("recipe.overlay[{i}]");
                if o.crop.is_some_and(|[_, _, cw, ch]| cw == 0 || ch == 0) || o.width == Some(0) {
                    return Err(origin.invalid(&name, "crop and width must be larger than zero"));
                }
                Ok(Overlay {
                    image: origin.find(&format!("{name}.image"), &o.image)?,
                    crop: o.crop,
                    width: o.width,
                    at: o.at,
                    to: o.to,
                    shown: span(&name, &o.from, &o.until)?,
                })
            })
            .collect::<Result<_, _>>()?;
        let pan = match self.pan {
            Some(p) => {
                let [x, y, pw, ph] = p.view;
                if !(pw > 0.0 && ph > 0.0 && x >= 0.0 && y >= 0.0 && x + pw <= 1.0 && y + ph <= 1.0)
                {
                    return Err(origin.invalid(
                        field("pan.view"),
                        "x, y, w, h are fractions of the frame: w and h above 0, x + w and y + h at most 1",
                    ));
                }
                Some((span(&field("pan"), &Some(p.from), &Some(p.until))?, p.view))
            }
            None => None,
        };
        let light = match self.light {
            Some(l) => {
                let contrast = l.contrast.unwrap_or(1.0);
                let noise = l.noise.unwrap_or(0);
                if !(-1.0..=1.0).contains(&l.brightness)
                    || !(0.0..=2.0).contains(&contrast)
                    || noise > 100
                {
                    return Err(origin.invalid(
                        field("light"),
                        "brightness is -1 … 1, contrast 0 … 2, noise 0 … 100",
                    ));
                }
                Some(Light {
                    brightness: l.brightness,
                    contrast,
                    noise,
                    during: span(&field("light"), &l.from, &l.until)?,
                })
            }
            None => None,
        };
        Ok(Recipe {
            background: origin.find(&field("background"), &self.background)?,
            duration,
            size: [w, h],
            fps,
            gop,
            codec: self.codec.unwrap_or(Codec::H264),
            erase: self.erase,
            overlays,
            pan,
            light,
        })
    }
}

fn is_still(path: &Path) -> bool {
    path.extension().and_then(|x| x.to_str()).is_some_and(|x| {
        ["jpg", "jpeg", "png", "bmp", "webp"].contains(&x.to_ascii_lowercase().as_str())
    })
}

/// An FFmpeg filter graph built as one main chain (`v0`, `v1`, …) with side chains
/// joining it.
struct Graph {
    chains: Vec<String>,
    /// The main chain's latest label.
    last: String,
    n: usize,
}

impl Graph {
    fn new(first: String) -> Self {
        Graph {
            chains: vec![format!("{first}[v0]")],
            last: "v0".into(),
            n: 0,
        }
    }

    fn next(&mut self) -> String {
        self.n += 1;
        format!("v{}", self.n)
    }

    /// A filter on the main chain. Its own outputs (a `split`) are named in `filter`.
    fn then(&mut self, filter: &str) {
        let from = std::mem::take(&mut self.last);
        if filter.contains('[') {
            self.chains.push(format!("[{from}]{filter}"));
        } else {
            let to = self.next();
            self.chains.push(format!("[{from}]{filter}[{to}]"));
            self.last = to;
        }
    }

    /// A chain of its own (an overlay's image, a cut-out view).
    fn side(&mut self, chain: String) {
        self.chains.push(chain);
    }

    /// Continues the main chain from `label` (one output of a split).
    fn pick(&mut self, label: &str) {
        self.last = label.to_string();
    }

    /// A two-input filter of the main chain and `other`.
    fn join(&mut self, other: &str, filter: &str) {
        let to = self.next();
        self.chains
            .push(format!("[{}][{other}]{filter}[{to}]", self.last));
        self.last = to;
    }

    fn finish(self) -> (String, String) {
        (self.chains.join(";"), self.last)
    }
}

fn enabled(w: &Window) -> String {
    format!("enable='between(t,{},{})'", w.from, w.until)
}

impl Recipe {
    /// The FFmpeg arguments that write this clip to `out`.
    pub fn ffmpeg_args(&self, out: &Path) -> Vec<String> {
        let [w, h] = self.size;
        let (fps, duration) = (self.fps.to_string(), self.duration.to_string());
        let mut args: Vec<String> = Vec::new();
        let mut push = |more: &[&str]| args.extend(more.iter().map(|a| a.to_string()));
        push(&["-v", "error", "-nostdin", "-y"]);
        let inputs =
            std::iter::once(&self.background).chain(self.overlays.iter().map(|o| &o.image));
        for path in inputs {
            if is_still(path) {
                push(&["-loop", "1", "-framerate", &fps]);
            } else {
                push(&["-stream_loop", "-1"]);
            }
            push(&["-t", &duration, "-i", &path.display().to_string()]);
        }
        let mut graph = Graph::new(format!("[0:v]scale={w}:{h},fps={},setsar=1", self.fps));
        for [x, y, ew, eh] in &self.erase {
            graph.then(&format!("delogo=x={x}:y={y}:w={ew}:h={eh}"));
        }
        for (i, o) in self.overlays.iter().enumerate() {
            let mut prepare = Vec::new();
            if let Some([cx, cy, cw, ch]) = o.crop {
                prepare.push(format!("crop={cw}:{ch}:{cx}:{cy}"));
            }
            if let Some(width) = o.width {
                prepare.push(format!("scale={width}:-2"));
            }
            prepare.push("format=yuva420p".into());
            let image = format!("o{}", i + 1);
            graph.side(format!("[{}:v]{}[{image}]", i + 1, prepare.join(",")));
            // Moving: from `at` when it appears to `to` when it leaves, at a steady pace.
            let along = |a: i32, b: i32| {
                if a == b {
                    a.to_string()
                } else {
                    let s = &o.shown;
                    format!(
                        "{a}+({})*clip((t-{})/{},0,1)",
                        b - a,
                        s.from,
                        (s.until - s.from).max(1e-3)
                    )
                }
            };
            let to = o.to.unwrap_or(o.at);
            graph.join(
                &image,
                &format!(
                    "overlay=x='{}':y='{}':eof_action=repeat:{}",
                    along(o.at[0], to[0]),
                    along(o.at[1], to[1]),
                    enabled(&o.shown)
                ),
            );
        }
        if let Some((during, [x, y, pw, ph])) = &self.pan {
            // The picture split: the preset view, and the turned view cut from it.
            graph.then("split[preset][turn]");
            graph.side(format!(
                "[turn]crop=iw*{pw}:ih*{ph}:iw*{x}:ih*{y},scale={w}:{h},setsar=1[turned]"
            ));
            graph.pick("preset");
            graph.join("turned", &format!("overlay={}", enabled(during)));
        }
        if let Some(l) = &self.light {
            graph.then(&format!(
                "eq=brightness={}:contrast={}:{}",
                l.brightness,
                l.contrast,
                enabled(&l.during)
            ));
            if l.noise > 0 {
                graph.then(&format!(
                    "noise=alls={}:allf=t+u:{}",
                    l.noise,
                    enabled(&l.during)
                ));
            }
        }
        graph.then("format=yuv420p");
        let (graph, last) = graph.finish();
        let gop = self.gop.to_string();
        push(&["-filter_complex", &graph, "-map", &format!("[{last}]")]);
        push(&["-an", "-t", &duration, "-r", &fps]);
        match self.codec {
            Codec::H264 => push(&[
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-g",
                &gop,
                "-keyint_min",
                &gop,
                "-sc_threshold",
                "0",
            ]),
            Codec::H265 => push(&[
                "-c:v",
                "libx265",
                "-preset",
                "ultrafast",
                "-x265-params",
                &format!("keyint={gop}:min-keyint={gop}:scenecut=0:log-level=error"),
                "-tag:v",
                "hvc1",
            ]),
        }
        push(&["-pix_fmt", "yuv420p", &out.display().to_string()]);
        args
    }

    /// Where this recipe's clip is cached in `dir`: named by a hash of its FFmpeg command
    /// and of its inputs' sizes and modification times.
    pub fn cached_path(&self, dir: &Path) -> PathBuf {
        let mut hash = Sha256::new();
        for arg in self.ffmpeg_args(Path::new("out.mp4")) {
            hash.update(arg.as_bytes());
            hash.update([0]);
        }
        let inputs =
            std::iter::once(&self.background).chain(self.overlays.iter().map(|o| &o.image));
        for input in inputs {
            if let Ok(meta) = std::fs::metadata(input) {
                hash.update(meta.len().to_le_bytes());
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
                hash.update(modified.unwrap_or_default().as_nanos().to_le_bytes());
            }
        }
        let digest = hash.finalize();
        let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        dir.join(format!("{name}.mp4"))
    }

    /// The clip, made with FFmpeg unless `dir` has it already. `Ok((path, true))` when it
    /// was made now.
    pub fn make(&self, dir: &Path, scenario: &Path) -> Result<(PathBuf, bool), EvalError> {
        let path = self.cached_path(dir);
        if path.exists() {
            return Ok((path, false));
        }
        let failed = |reason: String| EvalError::Recipe {
            file: scenario.to_path_buf(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| failed(format!("{}: {e}", dir.display())))?;
        // Written aside and renamed: an interrupted run leaves no half clip in the cache.
        let partial = path.with_extension("partial.mp4");
        let out = Command::new("ffmpeg")
            .args(self.ffmpeg_args(&partial))
            .output()
            .map_err(|e| {
                failed(format!(
                    "cannot run ffmpeg: {e} (install the ffmpeg package)"
                ))
            })?;
        if !out.status.success() {
            let _ = std::fs::remove_file(&partial);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(4).collect();
            return Err(failed(
                tail.into_iter().rev().collect::<Vec<_>>().join("; "),
            ));
        }
        std::fs::rename(&partial, &path).map_err(|e| failed(format!("{}: {e}", path.display())))?;
        Ok((path, true))
    }
}
