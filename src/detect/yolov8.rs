//! Ultralytics YOLOv8 export: `(4 + C) × anchors`, channel-major; rows 0–3 are centre
//! x, y, width, height in model-input pixels, the rest class scores (no objectness).

use super::yolox::best_class;
use super::Candidate;

/// Decodes one image's output into candidates with score ≥ `conf`, in model-input pixels.
pub fn decode(output: &[f32], classes: usize, anchors: usize, conf: f32) -> Vec<Candidate> {
    let at = |row: usize, anchor: usize| output[row * anchors + anchor];
    let mut out = Vec::new();
    for a in 0..anchors {
        let (class, score) = best_class((0..classes).map(|c| at(4 + c, a)));
        if score < conf {
            continue;
        }
        let (cx, cy, w, h) = (at(0, a), at(1, a), at(2, a), at(3, a));
        out.push(Candidate {
            class,
            score,
            bbox: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_channel_major_layout() {
        // 2 classes, 2 anchors: anchor 1 is class 0 with 0.9 at centre (20, 30), 10×4.
        let output = [
            0.0, 20.0, // cx
            0.0, 30.0, // cy
            1.0, 10.0, // w
            1.0, 4.0, // h
            0.1, 0.9, // class 0
            0.2, 0.3, // class 1
        ];
        let found = decode(&output, 2, 2, 0.25);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].class, 0);
        assert_eq!(found[0].bbox, [15.0, 28.0, 25.0, 32.0]);
    }
}
