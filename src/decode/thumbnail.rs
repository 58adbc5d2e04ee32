//! Small RGB copies of decoded pictures (the daemon's camera snapshots). Planar YUV
//! pictures are box-filtered straight from their planes, each plane's rows summed into
//! column totals first, so a 1080p frame costs one pass over its bytes and the colour
//! conversion runs at the small size only; other pixel formats go through libswscale's
//! area filter. Measured in `benches/stages.rs` (`snapshot_1080p`) against libswscale and
//! the `image` crate's resize.

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
        thumbnail(self.as_frame(), width)
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

fn thumbnail(frame: &VideoFrame, width: u32) -> Result<RgbImage, DecodeError> {
    let (src_w, src_h) = (frame.width(), frame.height());
    if src_w == 0 || src_h == 0 {
        return Err(DecodeError::Convert {
            reason: "empty picture".into(),
        });
    }
    let (w, h) = thumbnail_size((src_w, src_h), width);
    match planar_yuv(frame.format()) {
        Some(full_range) => {
            let full_range = full_range || frame.color_range() == Range::JPEG;
            let out = (w as usize, h as usize);
            let [y, u, v] = [0, 1, 2].map(|p| box_plane(frame, p, out));
            let mut pixels = vec![0u8; 3 * out.0 * out.1];
            let k = Bt601::new(full_range);
            for (px, ((&y, &u), &v)) in pixels.chunks_exact_mut(3).zip(y.iter().zip(&u).zip(&v)) {
                px.copy_from_slice(&k.rgb(y, u, v));
            }
            Ok(RgbImage::from_raw(w, h, pixels).expect("3 bytes per pixel"))
        }
        None => swscale_rgb(frame, w, h),
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
        match even {
            Some(k) => {
                // Dividing by the box's size is multiplying by its reciprocal (32.32 fixed
                // point, exact for 8-bit means): a division per sample was most of the time.
                let n = (rows * k) as u64;
                let reciprocal = (1u64 << 32).div_ceil(n);
                result.extend(columns.chunks_exact(k).map(|c| {
                    let sum: u64 = c.iter().map(|&v| u64::from(v)).sum();
                    (((sum + n / 2) * reciprocal) >> 32).min(255) as u8
                }));
            }
            None => result.extend(xs.iter().map(|&(x0, x1)| {
                let n = (rows * (x1 - x0)) as u32;
                let sum: u32 = columns[x0..x1].iter().map(|&v| u32::from(v)).sum();
                ((sum + n / 2) / n) as u8
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
        let small = thumbnail(&frame, 4).unwrap();
        assert_eq!(small.dimensions(), (4, 2));
        for (x, want) in [(0, 0), (1, 0), (2, 255), (3, 255)] {
            let px = small.get_pixel(x, 1).0;
            assert!(px.iter().all(|&c| c.abs_diff(want) <= 1), "{x}: {px:?}");
        }
        // A red picture stays red.
        let red = thumbnail(&yuv420(16, 8, |_, _| 81, 90, 240), 4).unwrap();
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
        let small = thumbnail(&frame, 8).unwrap();
        assert_eq!(small.dimensions(), (8, 4));
        assert_eq!(small.get_pixel(3, 2).0, [0, 0, 200]);
    }
}
