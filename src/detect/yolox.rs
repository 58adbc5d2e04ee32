//! YOLOX head output: per anchor point `[x, y, log w, log h, objectness, C class scores]`
//! on a grid per stride, raw offsets relative to the grid cell (sigmoids already applied
//! to objectness and classes in the official ONNX export).

use super::Candidate;

/// Precomputed grid of one model's input size and strides.
#[derive(Debug, Clone)]
pub struct YoloxGrid {
    /// (grid x, grid y, stride) per anchor point, in output order.
    points: Vec<(f32, f32, f32)>,
}

impl YoloxGrid {
    pub fn new(width: u32, height: u32, strides: &[u32]) -> Self {
        let mut points = Vec::new();
        for &stride in strides {
            for gy in 0..height / stride {
                for gx in 0..width / stride {
                    points.push((gx as f32, gy as f32, stride as f32));
                }
            }
        }
        Self { points }
    }

    pub fn anchors(&self) -> usize {
        self.points.len()
    }

    /// Decodes one image's output (`anchors × (5 + classes)` values) into candidates with
    /// score ≥ `conf`, in model-input pixels.
    pub fn decode(&self, output: &[f32], classes: usize, conf: f32) -> Vec<Candidate> {
        let row = 5 + classes;
        let mut out = Vec::new();
        for (values, &(gx, gy, stride)) in output.chunks_exact(row).zip(&self.points) {
            let objectness = values[4];
            if objectness < conf {
                continue; // score = objectness × class score ≤ objectness
            }
            let (class, class_score) = best_class(values[5..].iter().copied());
            let score = objectness * class_score;
            if score < conf {
                continue;
            }
            let cx = (values[0] + gx) * stride;
            let cy = (values[1] + gy) * stride;
            let w = values[2].exp() * stride;
            let h = values[3].exp() * stride;
            out.push(Candidate {
                class,
                score,
                bbox: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0],
            });
        }
        out
    }
}

/// Index and value of the highest score (first on ties).
pub(super) fn best_class(scores: impl IntoIterator<Item = f32>) -> (usize, f32) {
    scores
        .into_iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, s)| {
            if s > best.1 {
                (i, s)
            } else {
                best
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_of_416_has_3549_points_in_stride_order() {
        let grid = YoloxGrid::new(416, 416, &[8, 16, 32]);
        assert_eq!(grid.anchors(), 52 * 52 + 26 * 26 + 13 * 13);
        assert_eq!(grid.points[1], (1.0, 0.0, 8.0));
        assert_eq!(grid.points[52], (0.0, 1.0, 8.0));
        assert_eq!(grid.points[52 * 52], (0.0, 0.0, 16.0));
    }

    #[test]
    fn decodes_offsets_log_sizes_and_scores() {
        let grid = YoloxGrid::new(32, 32, &[16, 32]); // 4 + 1 points
        let classes = 2;
        let mut output = vec![0.0; grid.anchors() * (5 + classes)];
        // Point 3 is (gx 1, gy 1) at stride 16: centre (1.5·16, 1.5·16) = (24, 24), size 16·e.
        let p = 3 * 7;
        output[p..p + 7].copy_from_slice(&[0.5, 0.5, 1.0, 0.0, 0.8, 0.25, 0.5]);
        let found = grid.decode(&output, classes, 0.3);
        assert_eq!(found.len(), 1);
        let c = &found[0];
        assert_eq!(c.class, 1);
        assert!((c.score - 0.4).abs() < 1e-6);
        let w = 16.0 * 1f32.exp();
        assert!((c.bbox[0] - (24.0 - w / 2.0)).abs() < 1e-4);
        assert!((c.bbox[1] - 16.0).abs() < 1e-4 && (c.bbox[3] - 32.0).abs() < 1e-4);
    }
}
