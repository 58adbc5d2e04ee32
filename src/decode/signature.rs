//! Two signatures of a picture's luma plane, each a few microseconds to a fraction of a
//! millisecond whatever the resolution:
//! - [`LumaSignature`]: the mean brightness of a coarse grid of cells, read from a sparse
//!   lattice. Enough to tell a frozen picture (two signatures alike) and a covered or dark
//!   lens (one signature near-uniform) from a live scene.
//! - [`ViewSignature`]: the brightness edges between the cells of a grid, each cell averaged
//!   over its pixels. It tells whether a camera still looks at the same ground: edges keep
//!   their direction when the light changes, most of them stay put when a vehicle passes,
//!   and they all move when a PTZ camera is turned or zoomed.

use ffmpeg_next::format::Pixel;
use ffmpeg_next::util::frame::Video as VideoFrame;

use super::Picture;

/// How a picture's luma plane stores its samples.
#[derive(Clone, Copy)]
enum LumaDepth {
    Bits8,
    /// 10 bits at the bottom of 16 (planar formats).
    Bits10Low,
    /// 10 bits at the top of 16 (P010).
    Bits10High,
}

impl LumaDepth {
    fn of(frame: &VideoFrame) -> Option<LumaDepth> {
        Some(match frame.format() {
            Pixel::YUV420P
            | Pixel::YUVJ420P
            | Pixel::YUV422P
            | Pixel::YUVJ422P
            | Pixel::YUV444P
            | Pixel::YUVJ444P
            | Pixel::NV12
            | Pixel::NV21
            | Pixel::GRAY8 => LumaDepth::Bits8,
            Pixel::YUV420P10LE | Pixel::YUV422P10LE | Pixel::YUV444P10LE => LumaDepth::Bits10Low,
            Pixel::P010LE => LumaDepth::Bits10High,
            _ => return None,
        })
    }

    /// Bytes per sample.
    fn width(self) -> usize {
        match self {
            LumaDepth::Bits8 => 1,
            LumaDepth::Bits10Low | LumaDepth::Bits10High => 2,
        }
    }

    /// The sample starting at `bytes[0]`, in 8-bit luma levels.
    fn level(self, bytes: &[u8]) -> f32 {
        match self {
            LumaDepth::Bits8 => f32::from(bytes[0]),
            LumaDepth::Bits10Low => f32::from(u16::from_le_bytes([bytes[0], bytes[1]])) / 4.0,
            LumaDepth::Bits10High => f32::from(u16::from_le_bytes([bytes[0], bytes[1]]) >> 6) / 4.0,
        }
    }

    /// The sum of a row's samples, in this depth's own units (see [`LumaDepth::scale`]).
    fn row_sum(self, row: &[u8]) -> u64 {
        match self {
            LumaDepth::Bits8 => row.iter().map(|&v| u64::from(v)).sum(),
            LumaDepth::Bits10Low => row
                .chunks_exact(2)
                .map(|b| u64::from(u16::from_le_bytes([b[0], b[1]])))
                .sum(),
            LumaDepth::Bits10High => row
                .chunks_exact(2)
                .map(|b| u64::from(u16::from_le_bytes([b[0], b[1]]) >> 6))
                .sum(),
        }
    }

    /// Luma levels per unit of [`LumaDepth::row_sum`].
    fn scale(self) -> f32 {
        match self {
            LumaDepth::Bits8 => 1.0,
            LumaDepth::Bits10Low | LumaDepth::Bits10High => 0.25,
        }
    }
}

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
        let depth = LumaDepth::of(frame)?;
        let (width, height) = (frame.width() as usize, frame.height() as usize);
        let plane = frame.data(0);
        let stride = frame.stride(0);
        let luma = |x: usize, y: usize| -> Option<f32> {
            let at = y * stride + depth.width() * x;
            plane.get(at..at + depth.width()).map(|b| depth.level(b))
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

/// Grid of the view signature: cells of about 60×60 pixels at 1080p.
const VIEW_COLUMNS: usize = 32;
const VIEW_ROWS: usize = 18;
/// The grid is judged in regions of 8×6 cells, so that something large passing in front
/// of the camera spoils a few regions, never the verdict.
const REGION_COLUMNS: usize = 8;
const REGION_ROWS: usize = 6;
/// A region whose edges add up to less than this (luma levels) shows nothing to compare
/// (sky, a blank wall, night).
const FLAT_REGION: f32 = 20.0;

#[derive(Debug, Clone, PartialEq)]
pub struct ViewSignature {
    /// Mean luma of each cell, row by row, over every other row of pixels.
    cells: Vec<f32>,
}

impl ViewSignature {
    /// The signature of a decoded picture; `None` for pixel formats without a plain 8- or
    /// 10-bit luma plane, or a picture smaller than the grid.
    pub fn of(picture: &Picture) -> Option<ViewSignature> {
        cell_means(picture, VIEW_COLUMNS, VIEW_ROWS).map(|cells| ViewSignature { cells })
    }

    /// The horizontal and vertical brightness steps out of each cell of `region`.
    fn edges(&self, region: usize) -> Vec<f32> {
        let across = VIEW_COLUMNS / REGION_COLUMNS;
        let (r0, c0) = (
            (region / across) * REGION_ROWS,
            (region % across) * REGION_COLUMNS,
        );
        let cell = |r: usize, c: usize| self.cells[r * VIEW_COLUMNS + c];
        let mut edges = Vec::with_capacity(2 * REGION_ROWS * REGION_COLUMNS);
        for r in r0..r0 + REGION_ROWS {
            for c in c0..c0 + REGION_COLUMNS {
                if c + 1 < VIEW_COLUMNS {
                    edges.push(cell(r, c + 1) - cell(r, c));
                }
                if r + 1 < VIEW_ROWS {
                    edges.push(cell(r + 1, c) - cell(r, c));
                }
            }
        }
        edges
    }

    /// How alike the two pictures' layouts are, from -1 to 1: the median over the regions
    /// with something to compare of the cosine between their edges. About 1 for the same
    /// ground under any light, near 0 for different ground. `None` when fewer than half of
    /// the regions show anything in both (a dark or blank picture, bare asphalt from
    /// above): a few edges can be anything.
    pub fn likeness(&self, other: &ViewSignature) -> Option<f32> {
        let regions = (VIEW_COLUMNS / REGION_COLUMNS) * (VIEW_ROWS / REGION_ROWS);
        let mut cosines: Vec<f32> = (0..regions)
            .filter_map(|region| {
                let (a, b) = (self.edges(region), other.edges(region));
                let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
                let (na, nb) = (norm(&a), norm(&b));
                (na >= FLAT_REGION && nb >= FLAT_REGION)
                    .then(|| a.iter().zip(&b).map(|(x, y)| x * y).sum::<f32>() / (na * nb))
            })
            .collect();
        if cosines.len() * 2 < regions {
            return None;
        }
        cosines.sort_by(f32::total_cmp);
        let mid = cosines.len() / 2;
        Some(if cosines.len() % 2 == 0 {
            (cosines[mid - 1] + cosines[mid]) / 2.0
        } else {
            cosines[mid]
        })
    }

    /// The cells as little-endian `f32`s, for keeping the reference view in the store.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.cells.iter().flat_map(|c| c.to_le_bytes()).collect()
    }

    /// The signature [`ViewSignature::to_bytes`] wrote; `None` for bytes of another grid
    /// (written by a cgbot with a different one) or not finite, which are learned anew.
    pub fn from_bytes(bytes: &[u8]) -> Option<ViewSignature> {
        if bytes.len() != VIEW_COLUMNS * VIEW_ROWS * 4 {
            return None;
        }
        let cells: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        cells
            .iter()
            .all(|c| c.is_finite())
            .then_some(ViewSignature { cells })
    }

    /// A signature from cell values given row by row (tests).
    #[cfg(test)]
    pub(crate) fn from_cells(cell: impl Fn(usize, usize) -> f32) -> ViewSignature {
        let cells = (0..VIEW_COLUMNS * VIEW_ROWS)
            .map(|i| cell(i % VIEW_COLUMNS, i / VIEW_COLUMNS))
            .collect();
        ViewSignature { cells }
    }
}

/// The mean luma (0–255) of each cell of a `columns`×`rows` grid over the picture, row
/// by row, read from every other row of pixels: a fraction of a millisecond at 1080p.
/// `None` for pixel formats without a plain 8- or 10-bit luma plane, or a picture smaller
/// than the grid.
pub fn cell_means(picture: &Picture, columns: usize, rows: usize) -> Option<Vec<f32>> {
    let frame = picture.as_frame();
    let depth = LumaDepth::of(frame)?;
    let (width, height) = (frame.width() as usize, frame.height() as usize);
    if columns == 0 || rows == 0 || width < columns || height < rows {
        return None;
    }
    let (plane, stride) = (frame.data(0), frame.stride(0));
    let mut sums = vec![0u64; columns * rows];
    let mut rows_per_cell = vec![0u64; rows];
    for y in (0..height).step_by(2) {
        let row = y * rows / height;
        let line = plane.get(y * stride..y * stride + width * depth.width())?;
        for column in 0..columns {
            let (x0, x1) = (column * width / columns, (column + 1) * width / columns);
            sums[row * columns + column] +=
                depth.row_sum(&line[x0 * depth.width()..x1 * depth.width()]);
        }
        rows_per_cell[row] += 1;
    }
    let cells = sums
        .iter()
        .enumerate()
        .map(|(i, &sum)| {
            let column = i % columns;
            let pixels = (column + 1) * width / columns - column * width / columns;
            let samples = rows_per_cell[i / columns] * pixels as u64;
            sum as f32 * depth.scale() / samples.max(1) as f32
        })
        .collect();
    Some(cells)
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

    /// A scene with structure everywhere: a pattern of stripes and blobs across the grid.
    fn scene(shift: usize) -> ViewSignature {
        ViewSignature::from_cells(|c, r| {
            let c = c + shift;
            100.0 + 40.0 * ((c * 7 + r * 3) % 5) as f32 + 25.0 * ((c / 3 + r) % 2) as f32
        })
    }

    #[test]
    fn the_same_ground_is_alike_under_other_light_and_with_a_vehicle_in_front() {
        let day = scene(0);
        assert!(day.likeness(&day).unwrap() > 0.999);
        // Dusk: half as bright, a little lifted blacks.
        let dusk = ViewSignature::from_cells(|c, r| 0.5 * day.cells[r * VIEW_COLUMNS + c] + 12.0);
        assert!(day.likeness(&dusk).unwrap() > 0.99);
        // A bus over the left third of the picture.
        let bus = ViewSignature::from_cells(|c, r| {
            if c < 11 {
                60.0 + (r % 3) as f32 * 50.0
            } else {
                day.cells[r * VIEW_COLUMNS + c]
            }
        });
        assert!(
            day.likeness(&bus).unwrap() > 0.9,
            "{:?}",
            day.likeness(&bus)
        );
    }

    #[test]
    fn other_ground_is_unlike_and_a_blank_picture_is_not_judged() {
        let day = scene(0);
        let turned = scene(2);
        assert!(
            day.likeness(&turned).unwrap() < 0.5,
            "{:?}",
            day.likeness(&turned)
        );
        let black = ViewSignature::from_cells(|_, _| 16.0);
        assert_eq!(day.likeness(&black), None);
    }

    #[test]
    fn a_view_survives_its_bytes_and_other_grids_are_refused() {
        let day = scene(0);
        assert_eq!(
            ViewSignature::from_bytes(&day.to_bytes()),
            Some(day.clone())
        );
        let bytes = day.to_bytes();
        assert_eq!(ViewSignature::from_bytes(&bytes[..bytes.len() - 4]), None);
        let mut nan = bytes;
        nan[..4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert_eq!(ViewSignature::from_bytes(&nan), None);
    }
}
