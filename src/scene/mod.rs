//! Scene stage: new stationary things against a camera's learned empty scene, whatever
//! they are. Litter and piles of material are no class of a street model; what they have
//! in common is that they were not there before and stay where they are. At patrol sample
//! rates (a sample every few seconds to a minute) that is the one thing a fixed camera
//! can tell without knowing what they are.
//!
//! Each sample becomes a coarse grid of mean brightness ([`SceneGrid`]) divided by the
//! picture's median brightness, so that a change of light over the whole picture (a
//! cloud, the camera's exposure) cancels out. A cell is learned once it showed the same
//! brightness over a few samples with nothing the model detected on it, and follows slow
//! changes (the sun moving) where nothing new stands. A cell that differs from what was
//! learned and looks the same over consecutive samples holds something new and
//! stationary; people and cars passing look different in the next sample and are never
//! reported. Neighbouring such cells make a region, reported as a detection labelled
//! [`NEW_OBJECT`], which joins the model's detections before the tracker: rules, dwell,
//! cases and verification treat it like any detection.

use crate::decode::{cell_means, Picture};
use crate::detect::Detection;

/// The label of a new stationary thing: what a zone's rule lists to be told about them.
pub const NEW_OBJECT: &str = "new_object";

/// The class number of [`NEW_OBJECT`] detections: no model's.
pub const NEW_OBJECT_CLASS: usize = usize::MAX;

/// Grid of the scene: cells of 30×30 pixels at 1080p, 10×13 at 640×480.
pub const COLUMNS: usize = 64;
pub const ROWS: usize = 36;

/// A region at least this much inside one model detection's box is that detection's
/// thing (a parked car is a car, a person standing is a person): not reported again.
const COVERED: f32 = 0.5;

/// How a camera's scene is learned and what counts as new in it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SceneConfig {
    /// How far a cell's brightness must be from the learned scene to hold something new,
    /// as a fraction of the picture's median brightness. Half of it is how alike two
    /// consecutive samples of a cell must be to show the same thing.
    pub difference: f32,
    /// Consecutive samples that must show a new thing alike before it is reported.
    pub confirm_samples: u32,
    /// Consecutive alike samples with nothing detected on a cell before it is learned.
    pub learn_samples: u32,
    /// How far a learned cell moves toward each sample where nothing new stands: slow
    /// changes of the scene (shadows moving with the sun) are followed, a new thing is not.
    pub learning_rate: f32,
    /// Smallest region reported, in grid cells.
    pub min_cells: u32,
}

impl Default for SceneConfig {
    fn default() -> Self {
        Self {
            // Measured on street-static-h264.mp4 re-encoded (tests/scene.rs): any two
            // samples of the empty street differ by 0.04 at most in any cell.
            difference: 0.15,
            confirm_samples: 3,
            learn_samples: 3,
            learning_rate: 0.05,
            min_cells: 2,
        }
    }
}

impl SceneConfig {
    /// The first unusable field, named, with the reason.
    pub fn check(&self) -> Result<(), String> {
        if !(self.difference > 0.0 && self.difference < 1.0) {
            return Err(format!(
                "`difference` = {} is not a fraction between 0 and 1",
                self.difference
            ));
        }
        if !(0.0..=1.0).contains(&self.learning_rate) {
            return Err(format!(
                "`learning_rate` = {} is not between 0 and 1",
                self.learning_rate
            ));
        }
        for (name, value) in [
            ("confirm_samples", self.confirm_samples),
            ("learn_samples", self.learn_samples),
            ("min_cells", self.min_cells),
        ] {
            if value == 0 {
                return Err(format!("`{name}` must be at least 1"));
            }
        }
        Ok(())
    }
}

/// A picture's brightness per grid cell, divided by its median brightness.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneGrid {
    cells: Vec<f32>,
}

impl SceneGrid {
    /// The grid of a decoded picture; `None` when its luma cannot be read (see
    /// [`cell_means`]) or it is black.
    pub fn of(picture: &Picture) -> Option<SceneGrid> {
        Self::normalised(cell_means(picture, COLUMNS, ROWS)?)
    }

    /// A grid of brightness given per cell (column, row), normalised as a picture's is.
    pub fn from_fn(luma: impl Fn(usize, usize) -> f32) -> Option<SceneGrid> {
        Self::normalised(
            (0..COLUMNS * ROWS)
                .map(|i| luma(i % COLUMNS, i / COLUMNS))
                .collect(),
        )
    }

    fn normalised(mut cells: Vec<f32>) -> Option<SceneGrid> {
        let mut sorted = cells.clone();
        let mid = sorted.len() / 2;
        let median = *sorted.select_nth_unstable_by(mid, f32::total_cmp).1;
        // A black picture has no brightness to compare.
        if median < 1.0 {
            return None;
        }
        cells.iter_mut().for_each(|c| *c /= median);
        Some(SceneGrid { cells })
    }
}

/// What the scene knows of one cell.
#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    /// The learned brightness of the empty scene, once learned.
    learned: Option<f32>,
    /// While learning: the mean of the alike samples so far, and how many.
    candidate: f32,
    alike: u32,
    /// Consecutive samples the cell differed from the learned scene (alike since the
    /// first of them).
    standing: u32,
}

/// A region of cells holding something new, in grid cells: columns `c0..c1`, rows
/// `r0..r1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    pub c0: usize,
    pub r0: usize,
    pub c1: usize,
    pub r1: usize,
    /// Cells in the region.
    pub cells: u32,
    /// Mean distance of its cells from the learned scene, as a fraction of the median.
    pub contrast: f32,
}

impl Region {
    /// The region's box in the pixels of a `width`×`height` picture.
    pub fn bbox(&self, width: u32, height: u32) -> [f32; 4] {
        let x = |c: usize| (c * width as usize / COLUMNS) as f32;
        let y = |r: usize| (r * height as usize / ROWS) as f32;
        [x(self.c0), y(self.r0), x(self.c1), y(self.r1)]
    }
}

/// One camera's learned empty scene and the new things standing in it.
#[derive(Debug, Clone)]
pub struct Scene {
    config: SceneConfig,
    cells: Vec<Cell>,
    /// The latest sample's grid: what "alike over consecutive samples" compares with.
    previous: Option<SceneGrid>,
}

impl Scene {
    pub fn new(config: SceneConfig) -> Self {
        Self {
            config,
            cells: vec![Cell::default(); COLUMNS * ROWS],
            previous: None,
        }
    }

    /// Forgets everything learned: the camera looks at other ground.
    pub fn reset(&mut self) {
        *self = Self::new(self.config);
    }

    /// Fraction of the cells learned so far.
    pub fn learned(&self) -> f32 {
        let learned = self.cells.iter().filter(|c| c.learned.is_some()).count();
        learned as f32 / self.cells.len() as f32
    }

    /// One analysed picture with the model's detections on it: the new stationary things
    /// in it as [`NEW_OBJECT`] detections, except those inside a model detection's box.
    /// Nothing for a picture whose luma cannot be read.
    pub fn sample(&mut self, picture: &Picture, detections: &[Detection]) -> Vec<Detection> {
        match SceneGrid::of(picture) {
            Some(grid) => self.new_objects(&grid, detections, picture.width(), picture.height()),
            None => Vec::new(),
        }
    }

    /// [`Scene::sample`] on the grid of a `width`×`height` picture.
    pub fn new_objects(
        &mut self,
        grid: &SceneGrid,
        detections: &[Detection],
        width: u32,
        height: u32,
    ) -> Vec<Detection> {
        let boxes: Vec<[f32; 4]> = detections.iter().map(|d| d.bbox).collect();
        let detected = cells_under(&boxes, width, height);
        self.observe(grid, &detected)
            .into_iter()
            .map(|region| (region, region.bbox(width, height)))
            .filter(|(_, bbox)| !boxes.iter().any(|b| inside_fraction(*bbox, *b) >= COVERED))
            .map(|(region, bbox)| Detection {
                label: NEW_OBJECT.to_string(),
                class: NEW_OBJECT_CLASS,
                score: region.score(self.config.difference),
                bbox,
            })
            .collect()
    }

    /// Takes one sample's grid, with the cells a model detection covers (they are not
    /// learned: a parked car is not the empty road), and returns the regions of cells
    /// that hold something new, alike over `confirm_samples` samples.
    pub fn observe(&mut self, grid: &SceneGrid, detected: &[bool]) -> Vec<Region> {
        let config = self.config;
        let alike = config.difference / 2.0;
        for (i, cell) in self.cells.iter_mut().enumerate() {
            let now = grid.cells[i];
            let before = self.previous.as_ref().map(|p| p.cells[i]);
            let steady = before.is_some_and(|b| (now - b).abs() <= alike);
            match cell.learned {
                None if detected[i] => cell.alike = 0,
                None => {
                    if cell.alike > 0 && (now - cell.candidate).abs() <= alike {
                        cell.alike += 1;
                        cell.candidate += (now - cell.candidate) / cell.alike as f32;
                    } else {
                        (cell.candidate, cell.alike) = (now, 1);
                    }
                    if cell.alike >= config.learn_samples {
                        cell.learned = Some(cell.candidate);
                    }
                }
                Some(learned) if (now - learned).abs() > config.difference => {
                    cell.standing = if steady && cell.standing > 0 {
                        cell.standing + 1
                    } else {
                        1
                    };
                }
                Some(learned) => {
                    cell.standing = 0;
                    if !detected[i] {
                        cell.learned = Some(learned + config.learning_rate * (now - learned));
                    }
                }
            }
        }
        self.previous = Some(grid.clone());
        self.regions(grid)
    }

    /// Connected (8-neighbour) groups of confirmed cells, large enough.
    fn regions(&self, grid: &SceneGrid) -> Vec<Region> {
        let confirmed = |i: usize| self.cells[i].standing >= self.config.confirm_samples;
        let mut seen = vec![false; self.cells.len()];
        let mut regions = Vec::new();
        let mut stack = Vec::new();
        for start in 0..self.cells.len() {
            if seen[start] || !confirmed(start) {
                continue;
            }
            seen[start] = true;
            stack.push(start);
            let (mut c0, mut r0, mut c1, mut r1) = (COLUMNS, ROWS, 0, 0);
            let (mut cells, mut contrast) = (0u32, 0.0f32);
            while let Some(i) = stack.pop() {
                let (c, r) = (i % COLUMNS, i / COLUMNS);
                (c0, r0, c1, r1) = (c0.min(c), r0.min(r), c1.max(c + 1), r1.max(r + 1));
                cells += 1;
                let learned = self.cells[i].learned.unwrap_or(grid.cells[i]);
                contrast += (grid.cells[i] - learned).abs();
                for (dc, dr) in NEIGHBOURS {
                    let (nc, nr) = (c as isize + dc, r as isize + dr);
                    if nc < 0 || nr < 0 || nc >= COLUMNS as isize || nr >= ROWS as isize {
                        continue;
                    }
                    let n = nr as usize * COLUMNS + nc as usize;
                    if !seen[n] && confirmed(n) {
                        seen[n] = true;
                        stack.push(n);
                    }
                }
            }
            if cells >= self.config.min_cells {
                regions.push(Region {
                    c0,
                    r0,
                    c1,
                    r1,
                    cells,
                    contrast: contrast / cells as f32,
                });
            }
        }
        regions
    }
}

const NEIGHBOURS: [(isize, isize); 8] = [
    (-1, -1),
    (0, -1),
    (1, -1),
    (-1, 0),
    (1, 0),
    (-1, 1),
    (0, 1),
    (1, 1),
];

impl Region {
    /// How clearly the region stands out of the learned scene: 0.5 at the `difference`
    /// that makes a cell new, 1 at twice that or more.
    fn score(&self, difference: f32) -> f32 {
        (self.contrast / (2.0 * difference)).clamp(0.0, 1.0)
    }
}

/// Which grid cells of a `width`×`height` picture have their centre inside one of `boxes`.
fn cells_under(boxes: &[[f32; 4]], width: u32, height: u32) -> Vec<bool> {
    let mut under = vec![false; COLUMNS * ROWS];
    let (cw, ch) = (width as f32 / COLUMNS as f32, height as f32 / ROWS as f32);
    for b in boxes {
        // Cells whose centre (c + 0.5) · cw lies in [b0, b2].
        let first = |lo: f32, size: f32| (lo / size - 0.5).ceil().max(0.0) as usize;
        let last = |hi: f32, size: f32, n: usize| {
            ((hi / size - 0.5).floor() + 1.0).clamp(0.0, n as f32) as usize
        };
        for r in first(b[1], ch)..last(b[3], ch, ROWS) {
            for c in first(b[0], cw)..last(b[2], cw, COLUMNS) {
                under[r * COLUMNS + c] = true;
            }
        }
    }
    under
}

/// The fraction of box `a`'s area that lies inside box `b`.
fn inside_fraction(a: [f32; 4], b: [f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let area = (a[2] - a[0]) * (a[3] - a[1]);
    if area <= 0.0 {
        0.0
    } else {
        w * h / area
    }
}

#[cfg(test)]
mod tests;
