//! A picture's luma signature: the mean brightness of a coarse grid of cells, read from a
//! sparse lattice of the decoded luma plane. It costs a few microseconds per picture
//! (a few thousand byte reads whatever the resolution), and is enough to tell a frozen
//! picture (two signatures alike) and a covered or dark lens (one signature near-uniform)
//! from a live scene.

use ffmpeg_next::format::Pixel;

use super::Picture;

/// Grid cells across and down.
const COLUMNS: usize = 32;
const ROWS: usize = 18;
/// Luma points read per cell, across and down.
const POINTS: usize = 4;

#[derive(Debug, Clone, PartialEq)]
pub struct LumaSignature {
    /// Mean luma (0–255) of each cell, row by row.
    cells: Vec<f32>,
}

impl LumaSignature {
    /// The signature of a decoded picture; `None` for pixel formats without a plain 8- or
    /// 10-bit luma plane (nothing is judged for those).
    pub fn of(picture: &Picture) -> Option<LumaSignature> {
        let frame = picture.as_frame();
        let high_depth = match frame.format() {
            Pixel::YUV420P
            | Pixel::YUVJ420P
            | Pixel::YUV422P
            | Pixel::YUVJ422P
            | Pixel::YUV444P
            | Pixel::YUVJ444P
            | Pixel::NV12
            | Pixel::NV21
            | Pixel::GRAY8 => false,
            Pixel::YUV420P10LE | Pixel::YUV422P10LE | Pixel::YUV444P10LE | Pixel::P010LE => true,
            _ => return None,
        };
        let (width, height) = (frame.width() as usize, frame.height() as usize);
        let plane = frame.data(0);
        let stride = frame.stride(0);
        let luma = |x: usize, y: usize| -> Option<f32> {
            if high_depth {
                let at = y * stride + 2 * x;
                let bytes = plane.get(at..at + 2)?;
                let value = u16::from_le_bytes([bytes[0], bytes[1]]);
                // P010 keeps its 10 bits at the top; the planar formats at the bottom.
                let ten_bits = if frame.format() == Pixel::P010LE {
                    value >> 6
                } else {
                    value
                };
                Some(f32::from(ten_bits) / 4.0)
            } else {
                plane.get(y * stride + x).map(|&v| f32::from(v))
            }
        };
        Self::sampled(width, height, luma)
    }

    /// Reads `POINTS`×`POINTS` evenly spaced points per cell through `luma(x, y)`.
    fn sampled(
        width: usize,
        height: usize,
        luma: impl Fn(usize, usize) -> Option<f32>,
    ) -> Option<LumaSignature> {
        if width == 0 || height == 0 {
            return None;
        }
        let (across, down) = (COLUMNS * POINTS, ROWS * POINTS);
        let mut cells = vec![0.0f32; COLUMNS * ROWS];
        for j in 0..down {
            // The centre of each lattice step.
            let y = (2 * j + 1) * height / (2 * down);
            for i in 0..across {
                let x = (2 * i + 1) * width / (2 * across);
                cells[(j / POINTS) * COLUMNS + i / POINTS] += luma(x, y)?;
            }
        }
        let per_cell = (POINTS * POINTS) as f32;
        cells.iter_mut().for_each(|c| *c /= per_cell);
        Some(LumaSignature { cells })
    }

    /// Mean absolute difference of the cells' brightness, in luma levels: below one for a
    /// picture that repeats, several for a live scene (noise, light, anything moving).
    pub fn difference(&self, other: &LumaSignature) -> f32 {
        let total: f32 = self
            .cells
            .iter()
            .zip(&other.cells)
            .map(|(a, b)| (a - b).abs())
            .sum();
        total / self.cells.len() as f32
    }

    /// Standard deviation of the cells' brightness, in luma levels: a few for a covered
    /// lens or a black picture, tens for a scene.
    pub fn spread(&self) -> f32 {
        let n = self.cells.len() as f32;
        let mean = self.cells.iter().sum::<f32>() / n;
        let variance = self.cells.iter().map(|c| (c - mean).powi(2)).sum::<f32>() / n;
        variance.sqrt()
    }

    /// A signature of cells alternating between `mean - spread` and `mean + spread`.
    #[cfg(test)]
    pub(crate) fn test_pattern(mean: f32, spread: f32) -> LumaSignature {
        let cells = (0..COLUMNS * ROWS)
            .map(|i| {
                if i % 2 == 0 {
                    mean - spread
                } else {
                    mean + spread
                }
            })
            .collect();
        LumaSignature { cells }
    }

    /// Mean brightness, in luma levels.
    pub fn mean(&self) -> f32 {
        self.cells.iter().sum::<f32>() / self.cells.len() as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signature(width: usize, height: usize, luma: impl Fn(usize, usize) -> f32) -> LumaSignature {
        LumaSignature::sampled(width, height, |x, y| Some(luma(x, y))).unwrap()
    }

    #[test]
    fn a_uniform_picture_has_no_spread_and_a_gradient_has_much() {
        let grey = signature(1920, 1080, |_, _| 40.0);
        assert_eq!(grey.spread(), 0.0);
        assert_eq!(grey.mean(), 40.0);
        let gradient = signature(1920, 1080, |x, _| (x * 255 / 1920) as f32);
        assert!(gradient.spread() > 50.0, "{}", gradient.spread());
        assert!(grey.difference(&gradient) > 50.0);
        assert_eq!(gradient.difference(&gradient), 0.0);
    }

    #[test]
    fn tiny_and_empty_pictures_are_handled() {
        let one = signature(1, 1, |_, _| 9.0);
        assert_eq!(one.mean(), 9.0);
        assert!(LumaSignature::sampled(0, 10, |_, _| Some(0.0)).is_none());
        // A plane shorter than its size says is no signature, not a panic.
        assert!(LumaSignature::sampled(64, 64, |_, y| (y < 32).then_some(1.0)).is_none());
    }
}
