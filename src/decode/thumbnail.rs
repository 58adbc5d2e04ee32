//! Small copies of decoded pictures (the daemon's camera snapshots). Planar YUV pictures
//! are box-filtered straight from their planes, each plane's rows summed into column
//! totals first, so a 1080p frame costs one pass over its bytes; the colour conversion, if
//! any, runs at the small size only (a snapshot JPEG takes the YCbCr planes as they are).
//! Other pixel formats go through libswscale's area filter. Measured in
//! `benches/stages.rs` (`snapshot_1080p`) against libswscale and the `image` crate's
//! resize.

use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg::util::color::Range;
use ffmpeg::util::frame::Video as VideoFrame;
use ffmpeg_next as ffmpeg;
use image::RgbImage;

use super::preprocess::planar_yuv;
use super::{DecodeError, Picture};

impl Picture {
    /// The picture scaled down to `width` pixels wide (never up), its aspect kept.
    pub fn thumbnail(&self, width: u32) -> Result<RgbImage, DecodeError> {
        Ok(self.small(width)?.into_rgb())
    }

    /// As [`Picture::thumbnail`], but a planar YUV picture stays YCbCr: a JPEG takes it as
    /// it is, with no RGB made in between.
    pub fn small(&self, width: u32) -> Result<Small, DecodeError> {
        small(self.as_frame(), width)
    }
}

/// A picture scaled down.
pub enum Small {
    /// A planar YUV picture's planes, box-filtered to the small size (chroma too).
    Ycbcr(SmallYcbcr),
    /// Any other pixel format, through libswscale.
    Rgb(RgbImage),
}

pub struct SmallYcbcr {
    width: u32,
    height: u32,
    planes: [Vec<u8>; 3],
    full_range: bool,
}

impl Small {
    pub fn into_rgb(self) -> RgbImage {
        match self {
            Small::Rgb(rgb) => rgb,
            Small::Ycbcr(small) => small.to_rgb(),
        }
    }

    /// A JPEG of `quality`. YCbCr goes in as it is, mapped to JPEG's full range: at a
    /// snapshot's size that is about half the cost of converting to RGB and back.
    pub fn encode_jpeg(&self, quality: u8) -> Result<Vec<u8>, String> {
        match self {
            Small::Rgb(rgb) => crate::annotate::encode_jpeg(rgb, quality),
            Small::Ycbcr(small) => {
                let (width, height) = crate::annotate::jpeg_size((small.width, small.height))?;
                let rows = JpegRows {
                    small,
                    width,
                    height,
                    luma: full_range_levels(small.full_range, (16, 0), 219),
                    chroma: full_range_levels(small.full_range, (128, 128), 224),
                };
                crate::annotate::encode_jpeg_rows(rows, quality)
            }
        }
    }
}

impl SmallYcbcr {
    fn to_rgb(&self) -> RgbImage {
        let [y, u, v] = &self.planes;
        let mut pixels = vec![0u8; 3 * y.len()];
        let k = Bt601::new(self.full_range);
        for (px, ((&y, &u), &v)) in pixels.chunks_exact_mut(3).zip(y.iter().zip(u).zip(v)) {
            px.copy_from_slice(&k.rgb(y, u, v));
        }
        RgbImage::from_raw(self.width, self.height, pixels).expect("3 bytes per pixel")
    }
}

/// Limited-range video levels mapped to JPEG's full range: level `from` becomes `to` and
/// the video's `span` (219 luma levels from 16, 224 chroma levels around 128) stretches to
/// 255. Full-range pictures keep their levels. JPEG's YCbCr is BT.601's, as [`Bt601`]
/// decodes it.
fn full_range_levels(full_range: bool, (from, to): (i32, i32), span: i32) -> [u8; 256] {
    std::array::from_fn(|level| {
        if full_range {
            return level as u8;
        }
        let stretched = (level as i32 - from) * 255;
        let rounded = (stretched + stretched.signum() * span / 2) / span;
        (to + rounded).clamp(0, 255) as u8
    })
}

/// A [`SmallYcbcr`] row by row for the JPEG encoder.
struct JpegRows<'a> {
    small: &'a SmallYcbcr,
    width: u16,
    height: u16,
    luma: [u8; 256],
    chroma: [u8; 256],
}

impl jpeg_encoder::ImageBuffer for JpegRows<'_> {
    fn get_jpeg_color_type(&self) -> jpeg_encoder::JpegColorType {
        jpeg_encoder::JpegColorType::Ycbcr
    }

    fn width(&self) -> u16 {
        self.width
    }

    fn height(&self) -> u16 {
        self.height
    }

    fn fill_buffers(&self, y: u16, buffers: &mut [Vec<u8>; 4]) {
        let width = usize::from(self.width);
        let row = usize::from(y) * width..(usize::from(y) + 1) * width;
        let levels = [&self.luma, &self.chroma, &self.chroma];
        for ((buffer, plane), levels) in buffers.iter_mut().zip(&self.small.planes).zip(levels) {
            buffer.extend(plane[row.clone()].iter().map(|&v| levels[usize::from(v)]));
        }
    }
}

/// The size a `src` picture scales down to at most `width` wide, aspect kept (rounded,
/// at least 1 × 1).
pub fn thumbnail_size(src: (u32, u32), width: u32) -> (u32, u32) {
    let w = width.clamp(1, src.0.max(1));
    let h =
        (u64::from(src.1) * u64::from(w) + u64::from(src.0.max(1)) / 2) / u64::from(src.0.max(1));
    (w, (h as u32).max(1))
}

fn small(frame: &VideoFrame, width: u32) -> Result<Small, DecodeError> {
    let (src_w, src_h) = (frame.width(), frame.height());
    if src_w == 0 || src_h == 0 {
        return Err(DecodeError::Convert {
            reason: "empty picture".into(),
        });
    }
    let (w, h) = thumbnail_size((src_w, src_h), width);
    match planar_yuv(frame.format()) {
        Some(full_range) => {
            let out = (w as usize, h as usize);
            Ok(Small::Ycbcr(SmallYcbcr {
                width: w,
                height: h,
                planes: [0, 1, 2].map(|p| box_plane(frame, p, out)),
                full_range: full_range || frame.color_range() == Range::JPEG,
            }))
        }
        None => swscale_rgb(frame, w, h).map(Small::Rgb),
    }
}

/// BT.601 YUV → RGB in 8-bit fixed point (the coefficients of the preprocessing's
/// `yuv_to_rgb` × 256): within one level of it, at a fraction of the cost.
struct Bt601 {
    y_offset: i32,
    y_scale: i32,
    rv: i32,
    gu: i32,
    gv: i32,
    bu: i32,
}

impl Bt601 {
    fn new(full_range: bool) -> Self {
        if full_range {
            Self {
                y_offset: 0,
                y_scale: 256,
                rv: 359,
                gu: 88,
                gv: 183,
                bu: 454,
            }
        } else {
            Self {
                y_offset: 16,
                y_scale: 298,
                rv: 409,
                gu: 100,
                gv: 208,
                bu: 516,
            }
        }
    }

    #[inline]
    fn rgb(&self, y: u8, u: u8, v: u8) -> [u8; 3] {
        let y = (i32::from(y) - self.y_offset) * self.y_scale + 128;
        let (u, v) = (i32::from(u) - 128, i32::from(v) - 128);
        let level = |c: i32| (c >> 8).clamp(0, 255) as u8;
        [
            level(y + self.rv * v),
            level(y - self.gu * u - self.gv * v),
            level(y + self.bu * u),
        ]
    }
}

/// Half-open source ranges `[start, end)` of `dst` boxes over `src` samples; every box
/// holds at least one sample, even when `dst > src` (a subsampled chroma plane).
fn boxes(src: usize, dst: usize) -> Vec<(usize, usize)> {
    (0..dst)
        .map(|i| {
            let start = (i * src / dst).min(src - 1);
            let end = ((i + 1) * src / dst).clamp(start + 1, src);
            (start, end)
        })
        .collect()
}

/// One plane box-filtered to `out` (width, height): each output sample is the rounded mean
/// of the plane samples its box covers.
fn box_plane(frame: &VideoFrame, plane: usize, out: (usize, usize)) -> Vec<u8> {
    let (pw, ph) = (
        frame.plane_width(plane) as usize,
        frame.plane_height(plane) as usize,
    );
    let (data, stride) = (frame.data(plane), frame.stride(plane));
    let (xs, ys) = (boxes(pw, out.0), boxes(ph, out.1));
    // The usual case (1920 → 480): every box as wide as the others, side by side.
    let even = (pw % out.0 == 0).then_some(pw / out.0);
    let widest = xs.iter().map(|&(x0, x1)| x1 - x0).max().unwrap_or(1);
    let (mut reciprocals, mut reciprocal_rows) = (Vec::with_capacity(widest + 1), 0);
    let mut columns = vec![0u16; pw];
    let mut result = Vec::with_capacity(out.0 * out.1);
    for &(y0, y1) in &ys {
        // 255 × 257 rows still fit u16: more rows than that only in a 65,000-pixel-high
        // picture scaled to one row.
        let rows = (y1 - y0).min(257);
        let first = &data[y0 * stride..y0 * stride + pw];
        for (c, &v) in columns.iter_mut().zip(first) {
            *c = u16::from(v);
        }
        for row in y0 + 1..y0 + rows {
            let line = &data[row * stride..row * stride + pw];
            for (c, &v) in columns.iter_mut().zip(line) {
                *c += u16::from(v);
            }
        }
        // Dividing by a box's size is multiplying by its reciprocal (32.32 fixed point,
        // exact for 8-bit means): a division per sample was most of the time. The table
        // (by box width) changes only with the band's height.
        if reciprocal_rows != rows {
            reciprocals.clear();
            reciprocals
                .extend((0..=widest).map(|k| (1u64 << 32).div_ceil((rows * k.max(1)) as u64)));
            reciprocal_rows = rows;
        }
        let mean = |sum: u64, width: usize| {
            let n = (rows * width) as u64;
            (((sum + n / 2) * reciprocals[width]) >> 32).min(255) as u8
        };
        let total = |columns: &[u16]| columns.iter().map(|&v| u64::from(v)).sum::<u64>();
        match even {
            Some(k) => result.extend(columns.chunks_exact(k).map(|c| mean(total(c), k))),
            // A sub stream's boxes (768 → 480, or chroma growing) are one or two columns
            // wide: summed directly, not through a loop per box.
            None => result.extend(xs.iter().map(|&(x0, x1)| {
                let sum = match x1 - x0 {
                    1 => u64::from(columns[x0]),
                    2 => u64::from(columns[x0]) + u64::from(columns[x0 + 1]),
                    _ => total(&columns[x0..x1]),
                };
                mean(sum, x1 - x0)
            })),
        }
    }
    result
}

/// Any other pixel format: libswscale's area filter to RGB at the small size.
fn swscale_rgb(frame: &VideoFrame, w: u32, h: u32) -> Result<RgbImage, DecodeError> {
    let convert = |reason: String| DecodeError::Convert { reason };
    let mut scaler = scaling::Context::get(
        frame.format(),
        frame.width(),
        frame.height(),
        Pixel::RGB24,
        w,
        h,
        scaling::Flags::AREA,
    )
    .map_err(|e| {
        convert(format!(
            "no conversion from {:?} {}x{}: {e}",
            frame.format(),
            frame.width(),
            frame.height()
        ))
    })?;
    let mut rgb = VideoFrame::new(Pixel::RGB24, w, h);
    scaler
        .run(frame, &mut rgb)
        .map_err(|e| convert(e.to_string()))?;
    let (stride, row) = (rgb.stride(0), 3 * w as usize);
    let mut pixels = Vec::with_capacity(row * h as usize);
    for line in rgb.data(0).chunks(stride).take(h as usize) {
        pixels.extend_from_slice(&line[..row]);
    }
    RgbImage::from_raw(w, h, pixels).ok_or_else(|| convert("RGB buffer size".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_keep_the_aspect_and_never_grow() {
        assert_eq!(thumbnail_size((1920, 1080), 480), (480, 270));
        assert_eq!(thumbnail_size((704, 576), 480), (480, 393));
        assert_eq!(thumbnail_size((320, 240), 480), (320, 240));
        assert_eq!(thumbnail_size((4000, 1), 480), (480, 1));
    }

    #[test]
    fn boxes_cover_every_sample_once_when_shrinking() {
        let b = boxes(1920, 480);
        assert_eq!(b[0], (0, 4));
        assert_eq!(b[479], (1916, 1920));
        assert!(b.windows(2).all(|w| w[0].1 == w[1].0));
        // Growing (a 320-wide chroma plane under a 480-wide output): one sample each.
        let g = boxes(320, 480);
        assert!(g.iter().all(|&(s, e)| e == s + 1 && e <= 320));
    }

    fn yuv420(w: u32, h: u32, luma: impl Fn(u32, u32) -> u8, u: u8, v: u8) -> VideoFrame {
        let mut frame = VideoFrame::new(Pixel::YUV420P, w, h);
        for y in 0..h {
            let stride = frame.stride(0);
            for x in 0..w {
                frame.data_mut(0)[y as usize * stride + x as usize] = luma(x, y);
            }
        }
        for (plane, value) in [(1, u), (2, v)] {
            frame.data_mut(plane).iter_mut().for_each(|b| *b = value);
        }
        frame
    }

    #[test]
    fn planar_yuv_is_box_filtered_and_converted() {
        ffmpeg::init().unwrap();
        // Left half black, right half white (limited range), grey chroma: a 4 × 2
        // thumbnail of a 16 × 8 picture has two black and two white columns.
        let frame = yuv420(16, 8, |x, _| if x < 8 { 16 } else { 235 }, 128, 128);
        let halves = small(&frame, 4).unwrap().into_rgb();
        assert_eq!(halves.dimensions(), (4, 2));
        for (x, want) in [(0, 0), (1, 0), (2, 255), (3, 255)] {
            let px = halves.get_pixel(x, 1).0;
            assert!(px.iter().all(|&c| c.abs_diff(want) <= 1), "{x}: {px:?}");
        }
        // A red picture stays red.
        let red = small(&yuv420(16, 8, |_, _| 81, 90, 240), 4)
            .unwrap()
            .into_rgb();
        let px = red.get_pixel(2, 1).0;
        assert!(px[0] > 250 && px[1] < 5 && px[2] < 5, "{px:?}");
    }

    #[test]
    fn fixed_point_colour_is_within_a_level_of_the_preprocessing() {
        for full_range in [false, true] {
            let k = Bt601::new(full_range);
            for y in (0..=255).step_by(5) {
                for u in (0..=255).step_by(15) {
                    for v in (0..=255).step_by(15) {
                        let want = super::super::preprocess::yuv_to_rgb(
                            f32::from(y),
                            f32::from(u),
                            f32::from(v),
                            full_range,
                        )
                        .map(|c| (c.clamp(0.0, 255.0) + 0.5) as u8);
                        let got = k.rgb(y, u, v);
                        for (g, w) in got.iter().zip(want) {
                            assert!(
                                g.abs_diff(w) <= 1,
                                "{y} {u} {v} {full_range}: {got:?} {want:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn other_formats_go_through_swscale() {
        ffmpeg::init().unwrap();
        let mut frame = VideoFrame::new(Pixel::RGB24, 16, 8);
        let stride = frame.stride(0);
        for y in 0..8 {
            for x in 0..16 {
                let i = y * stride + 3 * x;
                frame.data_mut(0)[i..i + 3].copy_from_slice(&[0, 0, 200]);
            }
        }
        let blue = small(&frame, 8).unwrap().into_rgb();
        assert_eq!(blue.dimensions(), (8, 4));
        assert_eq!(blue.get_pixel(3, 2).0, [0, 0, 200]);
    }

    #[test]
    fn video_levels_stretch_to_jpeg_full_range() {
        let luma = full_range_levels(false, (16, 0), 219);
        let chroma = full_range_levels(false, (128, 128), 224);
        assert_eq!(
            [luma[0], luma[16], luma[126], luma[235], luma[255]],
            [0, 0, 128, 255, 255]
        );
        assert_eq!([chroma[16], chroma[128], chroma[240]], [0, 128, 255]);
        assert_eq!(full_range_levels(true, (16, 0), 219)[100], 100);
    }

    #[test]
    fn a_ycbcr_jpeg_shows_what_the_rgb_thumbnail_shows() {
        ffmpeg::init().unwrap();
        // Smooth gradients and a coloured half (JPEG keeps those close): 96 × 48 → 48 × 24.
        let mut frame = yuv420(96, 48, |x, y| (20 + x * 2 + y) as u8, 128, 128);
        for plane in [1, 2] {
            let stride = frame.stride(plane);
            for y in 0..24 {
                for x in 24..48 {
                    frame.data_mut(plane)[y * stride + x] = if plane == 1 { 90 } else { 200 };
                }
            }
        }
        let picture = small(&frame, 48).unwrap();
        let jpeg = picture.encode_jpeg(90).unwrap();
        let shown = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg)
            .unwrap()
            .to_rgb8();
        let rgb = picture.into_rgb();
        assert_eq!(shown.dimensions(), rgb.dimensions());
        let diffs: Vec<u32> = shown
            .as_raw()
            .iter()
            .zip(rgb.as_raw())
            .map(|(a, b)| u32::from(a.abs_diff(*b)))
            .collect();
        let mean = diffs.iter().sum::<u32>() as f64 / diffs.len() as f64;
        // Chroma is subsampled and the coloured edge rings a little; the levels agree.
        assert!(mean < 3.0, "mean difference {mean}");
        let inside = shown.get_pixel(40, 12).0.map(i32::from);
        let want = rgb.get_pixel(40, 12).0.map(i32::from);
        assert!(
            inside.iter().zip(want).all(|(a, b)| (a - b).abs() <= 6),
            "{inside:?} against {want:?}"
        );
    }
}
