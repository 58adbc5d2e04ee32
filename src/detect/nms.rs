//! Class-aware greedy non-maximum suppression.

use super::Candidate;

/// Intersection over union of two `[x1, y1, x2, y2]` boxes; 0 for degenerate boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Keeps, per class, the highest-scoring boxes and drops any box overlapping a kept one of
/// the same class by more than `iou_threshold`. The result is sorted by score, descending;
/// ties keep their input order.
pub fn nms(mut candidates: Vec<Candidate>, iou_threshold: f32) -> Vec<Candidate> {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Candidate> = Vec::with_capacity(candidates.len().min(64));
    for c in candidates {
        let suppressed = kept
            .iter()
            .any(|k| k.class == c.class && iou(&k.bbox, &c.bbox) > iou_threshold);
        if !suppressed {
            kept.push(c);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(class: usize, score: f32, bbox: [f32; 4]) -> Candidate {
        Candidate { class, score, bbox }
    }

    #[test]
    fn iou_of_identical_disjoint_and_half_overlapping_boxes() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &[20.0, 20.0, 30.0, 30.0]), 0.0);
        // 50 overlap / 150 union
        assert!((iou(&a, &[5.0, 0.0, 15.0, 10.0]) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(iou(&[0.0, 0.0, 0.0, 0.0], &[0.0, 0.0, 0.0, 0.0]), 0.0);
    }

    #[test]
    fn suppresses_overlaps_within_a_class_only() {
        let kept = nms(
            vec![
                cand(0, 0.6, [1.0, 0.0, 11.0, 10.0]),
                cand(0, 0.9, [0.0, 0.0, 10.0, 10.0]),
                cand(1, 0.5, [0.0, 0.0, 10.0, 10.0]),
                cand(0, 0.4, [50.0, 50.0, 60.0, 60.0]),
            ],
            0.45,
        );
        let got: Vec<(usize, f32)> = kept.iter().map(|c| (c.class, c.score)).collect();
        assert_eq!(got, [(0, 0.9), (1, 0.5), (0, 0.4)]);
    }

    #[test]
    fn overlap_exactly_at_threshold_is_kept() {
        // IoU = 50/150 = 1/3.
        let kept = nms(
            vec![
                cand(0, 0.9, [0.0, 0.0, 10.0, 10.0]),
                cand(0, 0.8, [5.0, 0.0, 15.0, 10.0]),
            ],
            1.0 / 3.0,
        );
        assert_eq!(kept.len(), 2);
    }
}
