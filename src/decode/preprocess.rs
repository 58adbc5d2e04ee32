//! Frame → model input. The letterbox resize is bilinear with OpenCV's `INTER_LINEAR`
//! semantics (pixel-centre aligned, no low-pass), because detectors such as YOLOX were
//! trained on pictures resized that way: an area-filtered downscale shifts their scores by
//! up to 0.15. Planar YUV pictures (what H.264/H.265/JPEG decoders give) are sampled
//! straight from their planes and converted to colour per output pixel, so a 1080p frame
//! costs a 416-pixel-wide pass, not a full-resolution conversion. Each output row is made
//! in three passes the compiler vectorises or keeps short: the two source rows blended
//! across their whole width, then the horizontal taps, then the colour conversion of the
//! row. Other pixel formats are first converted to planar RGB at source size with
//! libswscale.

use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg::util::color::Range;
use ffmpeg::util::frame::Video as VideoFrame;
use ffmpeg_next as ffmpeg;

use super::DecodeError;
use crate::models::{ColourOrder, InputSpec};

/// How a source picture was fitted into the model input: scaled by `ratio` and placed at
/// the top-left corner, the rest padded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    pub ratio: f32,
    pub source_width: u32,
    pub source_height: u32,
}

impl Letterbox {
    pub fn new(source_width: u32, source_height: u32, input: &InputSpec) -> Self {
        let ratio = (input.width as f32 / source_width as f32)
            .min(input.height as f32 / source_height as f32);
        Self {
            ratio,
            source_width,
            source_height,
        }
    }

    /// Size of the scaled picture inside the model input (truncated, at least 1 pixel).
    pub fn scaled_size(&self) -> (u32, u32) {
        let scale = |v: u32| ((v as f32 * self.ratio) as u32).max(1);
        (scale(self.source_width), scale(self.source_height))
    }

    /// Maps a box from model-input pixels back to the source picture, clipped to it.
    pub fn to_source(&self, bbox: [f32; 4]) -> [f32; 4] {
        let (w, h) = (self.source_width as f32, self.source_height as f32);
        [
            (bbox[0] / self.ratio).clamp(0.0, w),
            (bbox[1] / self.ratio).clamp(0.0, h),
            (bbox[2] / self.ratio).clamp(0.0, w),
            (bbox[3] / self.ratio).clamp(0.0, h),
        ]
    }
}

/// A model input (`3 × height × width`, channel-major, in the model's channel order) as
/// whole 8-bit levels, and how it was made. The detector scales the levels to the model's
/// value range as it fills its batch: a quarter of the memory of `f32` values while the
/// input waits for the detector, and the same numbers.
#[derive(Debug, Clone)]
pub struct ModelInput {
    pub levels: Vec<u8>,
    pub letterbox: Letterbox,
}

/// Reusable converter for one stream; the fallback RGB converter is rebuilt only when the
/// source size or pixel format changes.
pub struct Preprocessor {
    spec: InputSpec,
    to_planar_rgb: Option<(ScalerKey, Scaler, VideoFrame)>,
    /// Row buffers, kept between frames: two source rows blended, and each plane's output
    /// row.
    blended: Vec<f32>,
    rows: [Vec<f32>; 3],
}

/// A libswscale context that may move to another thread.
struct Scaler(scaling::Context);

// SAFETY: an SwsContext holds no thread-affine state; it is only ever used through
// `&mut`, so one thread at a time. The daemon's decoder pool moves a camera's decoder
// between threads under a mutex.
unsafe impl Send for Scaler {}

#[derive(Debug, Clone, Copy, PartialEq)]
struct ScalerKey {
    format: Pixel,
    width: u32,
    height: u32,
}

/// 8-bit planar YUV formats sampled directly, with their full-range flag.
pub(super) fn planar_yuv(format: Pixel) -> Option<bool> {
    match format {
        Pixel::YUV420P | Pixel::YUV422P | Pixel::YUV444P => Some(false),
        Pixel::YUVJ420P | Pixel::YUVJ422P | Pixel::YUVJ444P => Some(true),
        _ => None,
    }
}

/// One bilinear tap: the two source indices and the weight of the second.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Tap {
    i0: usize,
    i1: usize,
    w: f32,
}

/// OpenCV `INTER_LINEAR` taps for `dst_len` outputs over `src_len` inputs spaced
/// `scale` input pixels per output pixel.
fn taps(src_len: usize, dst_len: usize, scale: f64) -> Vec<Tap> {
    (0..dst_len)
        .map(|d| {
            let f = (d as f64 + 0.5) * scale - 0.5;
            let i = f.floor();
            let (i0, w) = if i < 0.0 {
                (0, 0.0)
            } else if i as usize >= src_len - 1 {
                (src_len - 1, 0.0)
            } else {
                (i as usize, (f - i) as f32)
            };
            Tap {
                i0,
                i1: (i0 + 1).min(src_len - 1),
                w,
            }
        })
        .collect()
}

/// A plane and its taps.
struct Sampled<'a> {
    data: &'a [u8],
    stride: usize,
    width: usize,
    xs: Vec<Tap>,
    ys: Vec<Tap>,
}

impl<'a> Sampled<'a> {
    fn new(frame: &'a VideoFrame, plane: usize, out: (usize, usize), scale: (f64, f64)) -> Self {
        let (w, h) = (
            frame.plane_width(plane) as usize,
            frame.plane_height(plane) as usize,
        );
        Self {
            data: frame.data(plane),
            stride: frame.stride(plane),
            width: w,
            xs: taps(w, out.0, scale.0),
            ys: taps(h, out.1, scale.1),
        }
    }

    /// Output row `y` of this plane into `row`: the two source rows around it blended over
    /// their whole width into `blended` (contiguous, so vectorised), then sampled at the
    /// horizontal taps.
    fn row(&self, y: usize, blended: &mut Vec<f32>, row: &mut Vec<f32>) {
        let t = self.ys[y];
        let top = &self.data[t.i0 * self.stride..][..self.width];
        let bottom = &self.data[t.i1 * self.stride..][..self.width];
        blended.clear();
        blended.extend(top.iter().zip(bottom).map(|(&a, &b)| {
            let a = f32::from(a);
            a + (f32::from(b) - a) * t.w
        }));
        row.clear();
        row.extend(self.xs.iter().map(|x| {
            let a = blended[x.i0];
            a + (blended[x.i1] - a) * x.w
        }));
    }
}

/// A value as a whole 8-bit level: clamped, and rounded by truncating v + 0.5 (v ≥ 0)
/// without a libm call.
#[inline]
fn level(v: f32) -> u8 {
    (v.clamp(0.0, 255.0) + 0.5) as u8
}

impl Preprocessor {
    pub fn new(spec: InputSpec) -> Self {
        Self {
            spec,
            to_planar_rgb: None,
            blended: Vec::new(),
            rows: Default::default(),
        }
    }

    pub fn run(&mut self, frame: &VideoFrame) -> Result<ModelInput, DecodeError> {
        let (src_w, src_h) = (frame.width(), frame.height());
        let letterbox = Letterbox::new(src_w, src_h, &self.spec);
        let (sw, sh) = letterbox.scaled_size();
        let out = (sw as usize, sh as usize);
        let scale = (src_w as f64 / sw as f64, src_h as f64 / sh as f64);
        let (w, h) = (self.spec.width as usize, self.spec.height as usize);
        let mut levels = vec![self.spec.pad; 3 * w * h];
        let (first, rest) = levels.split_at_mut(w * h);
        let (second, third) = rest.split_at_mut(w * h);
        // Model planes for blue, green, red.
        let [b_out, g_out, r_out] = match self.spec.colour {
            ColourOrder::Bgr => [first, second, third],
            ColourOrder::Rgb => [third, second, first],
        };

        if let Some(full_range) = planar_yuv(frame.format()) {
            // Chroma planes cover the picture at their own (subsampled) resolution.
            let chroma_scale = (
                scale.0 * f64::from(frame.plane_width(1)) / f64::from(src_w),
                scale.1 * f64::from(frame.plane_height(1)) / f64::from(src_h),
            );
            let planes = [
                Sampled::new(frame, 0, out, scale),
                Sampled::new(frame, 1, out, chroma_scale),
                Sampled::new(frame, 2, out, chroma_scale),
            ];
            let full_range = full_range || frame.color_range() == Range::JPEG;
            let [ys, us, vs] = &mut self.rows;
            for y in 0..out.1 {
                planes[0].row(y, &mut self.blended, ys);
                planes[1].row(y, &mut self.blended, us);
                planes[2].row(y, &mut self.blended, vs);
                let row = y * w..y * w + out.0;
                let rgb_out = r_out[row.clone()]
                    .iter_mut()
                    .zip(&mut g_out[row.clone()])
                    .zip(&mut b_out[row]);
                for (((r, g), b), ((&luma, &u), &v)) in
                    rgb_out.zip(ys.iter().zip(us.iter()).zip(vs.iter()))
                {
                    let [red, green, blue] = yuv_to_rgb(luma, u, v, full_range);
                    (*r, *g, *b) = (level(red), level(green), level(blue));
                }
            }
        } else {
            let planar = Self::planar_rgb(&mut self.to_planar_rgb, frame)?;
            // GBRP planes: green, blue, red.
            let [g, b, r] = [0, 1, 2].map(|p| Sampled::new(planar, p, out, scale));
            let row_buffer = &mut self.rows[0];
            for y in 0..out.1 {
                let row = y * w..y * w + out.0;
                for (plane, target) in [(&r, &mut *r_out), (&g, &mut *g_out), (&b, &mut *b_out)] {
                    plane.row(y, &mut self.blended, row_buffer);
                    for (t, &v) in target[row.clone()].iter_mut().zip(row_buffer.iter()) {
                        *t = level(v);
                    }
                }
            }
        }
        Ok(ModelInput { levels, letterbox })
    }

    /// Converts a picture of any other pixel format to planar RGB at its own size.
    /// `converter` is the preprocessor's own, kept apart from its row buffers so both can
    /// be borrowed at once.
    fn planar_rgb<'a>(
        converter: &'a mut Option<(ScalerKey, Scaler, VideoFrame)>,
        frame: &VideoFrame,
    ) -> Result<&'a VideoFrame, DecodeError> {
        let key = ScalerKey {
            format: frame.format(),
            width: frame.width(),
            height: frame.height(),
        };
        let convert = |reason: String| DecodeError::Convert { reason };
        if converter.as_ref().is_none_or(|(k, _, _)| *k != key) {
            let context = scaling::Context::get(
                key.format,
                key.width,
                key.height,
                Pixel::GBRP,
                key.width,
                key.height,
                scaling::Flags::POINT,
            )
            .map_err(|e| {
                convert(format!(
                    "no conversion from {:?} {}x{}: {e}",
                    key.format, key.width, key.height
                ))
            })?;
            let planar = VideoFrame::new(Pixel::GBRP, key.width, key.height);
            *converter = Some((key, Scaler(context), planar));
        }
        let (_, context, planar) = converter.as_mut().expect("converter was just set");
        context
            .0
            .run(frame, planar)
            .map_err(|e| convert(e.to_string()))?;
        Ok(planar)
    }
}

/// BT.601 YUV → RGB, what FFmpeg and OpenCV pipelines apply by default.
#[inline]
pub(super) fn yuv_to_rgb(y: f32, u: f32, v: f32, full_range: bool) -> [f32; 3] {
    let (u, v) = (u - 128.0, v - 128.0);
    if full_range {
        [
            y + 1.402 * v,
            y - 0.344_136 * u - 0.714_136 * v,
            y + 1.772 * u,
        ]
    } else {
        let y = (y - 16.0) * 1.164_383;
        [
            y + 1.596_027 * v,
            y - 0.391_762 * u - 0.812_968 * v,
            y + 2.017_232 * u,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Layout;

    fn spec(colour: ColourOrder) -> InputSpec {
        InputSpec {
            width: 8,
            height: 8,
            layout: Layout::Nchw,
            colour,
            scale: 1.0,
            pad: 114,
        }
    }

    #[test]
    fn letterbox_fits_the_long_side_and_maps_boxes_back() {
        let lb = Letterbox::new(1920, 1080, &spec(ColourOrder::Bgr));
        assert_eq!(lb.ratio, 8.0 / 1920.0);
        assert_eq!(lb.scaled_size(), (8, 4));
        let mapped = lb.to_source([1.0, 1.0, 2.0, 9.0]);
        for (got, want) in mapped.iter().zip([240.0, 240.0, 480.0, 1080.0]) {
            assert!((got - want).abs() < 1e-3, "{mapped:?}");
        }
    }

    #[test]
    fn taps_follow_opencv_pixel_centres() {
        // Halving: output pixel d samples between input pixels 2d and 2d+1.
        let t = taps(8, 4, 2.0);
        assert_eq!(
            t[1],
            Tap {
                i0: 2,
                i1: 3,
                w: 0.5
            }
        );
        // Edges clamp instead of reading outside.
        let up = taps(2, 4, 0.5);
        assert_eq!(
            up[0],
            Tap {
                i0: 0,
                i1: 1,
                w: 0.0
            }
        );
        assert_eq!(
            up[3],
            Tap {
                i0: 1,
                i1: 1,
                w: 0.0
            }
        );
    }

    #[test]
    fn limited_range_yuv_grey_and_red_convert_to_rgb() {
        let grey = yuv_to_rgb(126.0, 128.0, 128.0, false);
        assert!(grey.iter().all(|c| (c - 128.0).abs() < 0.5), "{grey:?}");
        let red = yuv_to_rgb(81.0, 90.0, 240.0, false);
        assert!(
            (red[0] - 255.0).abs() < 1.5 && red[1].abs() < 1.5 && red[2].abs() < 1.5,
            "{red:?}"
        );
    }

    #[test]
    fn solid_colour_lands_in_model_channel_order_with_padding() {
        crate::source::init_ffmpeg();
        // A 16×8 RGB picture of pure (200, 100, 50) → 8×4 inside the 8×8 input.
        let mut frame = VideoFrame::new(Pixel::RGB24, 16, 8);
        let stride = frame.stride(0);
        for y in 0..8 {
            for x in 0..16 {
                frame.data_mut(0)[y * stride + x * 3..][..3].copy_from_slice(&[200, 100, 50]);
            }
        }
        for (colour, first) in [(ColourOrder::Bgr, 50), (ColourOrder::Rgb, 200)] {
            let input = Preprocessor::new(spec(colour)).run(&frame).unwrap();
            assert_eq!(input.letterbox.scaled_size(), (8, 4));
            let t = &input.levels;
            assert_eq!(t.len(), 3 * 64);
            assert!(t[0].abs_diff(first) <= 1, "{colour:?}: {}", t[0]);
            assert!(t[64 + 7].abs_diff(100) <= 1);
            // Row 4 onwards is letterbox padding.
            assert_eq!(t[4 * 8], 114);
            assert_eq!(t[2 * 64 + 63], 114);
        }
    }
}
