//! Colour appearance of a detected object, to tell two vehicles in the same spot apart.
//!
//! At 0.2–2 samples/s, position alone cannot say whether the car in a parking bay is the one
//! seen there a minute ago; its colours usually can. The descriptor is a coarse colour
//! histogram: the exact shade of a car drifts with light, noise and compression, but "red",
//! "white" or "dark blue" does not.

/// Bins per colour channel: 4 × 4 × 4 = 64 bins in all.
const BINS_PER_CHANNEL: usize = 4;
const BINS: usize = BINS_PER_CHANNEL * BINS_PER_CHANNEL * BINS_PER_CHANNEL;

/// Width of one bin on the 8-bit level scale.
const LEVELS_PER_BIN: f32 = 256.0 / BINS_PER_CHANNEL as f32;

/// At most this many pixels per side of a region are sampled: 1,024 samples estimate 64 bins
/// well, and a camera server computing thousands of these a second cannot afford to read
/// every pixel of a bus that fills half the frame.
const SAMPLES_PER_SIDE: usize = 32;

/// A normalised colour histogram (bins sum to 1) over the three planes of a model input.
/// Planes are taken in the tensor's order, RGB or BGR, so only compare appearances taken
/// from tensors of the same model.
#[derive(Debug, Clone, PartialEq)]
pub struct Appearance {
    bins: [f32; BINS],
}

impl Appearance {
    /// Histogram of the region `[x1, y1, x2, y2]` (model-input pixels, clipped to the input)
    /// of a `3 × height × width` channel-major model input of 8-bit levels. `None` for an
    /// empty region or an input too short for its stated size.
    ///
    /// Each pixel is split between the two nearest bins of each channel (trilinear soft
    /// binning), so a colour near a bin border does not flip bins with sensor noise or a
    /// passing cloud.
    pub fn from_levels(
        levels: &[u8],
        width: usize,
        height: usize,
        region: [f32; 4],
    ) -> Option<Appearance> {
        let plane = width * height;
        if levels.len() < 3 * plane {
            return None;
        }
        // `as usize` maps NaN and negatives to 0, so a garbage region comes out empty.
        let span = |low: f32, high: f32, size: usize| {
            let limit = size as f32;
            (
                low.clamp(0.0, limit).floor() as usize,
                high.clamp(0.0, limit).ceil() as usize,
            )
        };
        let (x0, x1) = span(region[0], region[2], width);
        let (y0, y1) = span(region[1], region[3], height);
        if x1 <= x0 || y1 <= y0 {
            return None;
        }
        let step_x = (x1 - x0).div_ceil(SAMPLES_PER_SIDE);
        let step_y = (y1 - y0).div_ceil(SAMPLES_PER_SIDE);

        let mut bins = [0.0f32; BINS];
        let mut samples = 0u32;
        for y in (y0..y1).step_by(step_y) {
            for x in (x0..x1).step_by(step_x) {
                let i = y * width + x;
                let [c0, c1, c2] =
                    [i, i + plane, i + 2 * plane].map(|j| soft_bin(f32::from(levels[j])));
                for (b0, w0) in c0 {
                    for (b1, w1) in c1 {
                        for (b2, w2) in c2 {
                            bins[(b0 * BINS_PER_CHANNEL + b1) * BINS_PER_CHANNEL + b2] +=
                                w0 * w1 * w2;
                        }
                    }
                }
                samples += 1;
            }
        }
        let total = samples as f32;
        bins.iter_mut().for_each(|b| *b /= total);
        Some(Appearance { bins })
    }

    /// Histogram intersection: the share of colour mass the two have in common, 1.0 for
    /// identical distributions and 0.0 for disjoint ones. Chosen over the Bhattacharyya
    /// coefficient because it reads directly: a passer-by hiding 40 % of a car leaves ~0.6.
    pub fn similarity(&self, other: &Appearance) -> f32 {
        self.bins
            .iter()
            .zip(&other.bins)
            .map(|(a, b)| a.min(*b))
            .sum()
    }
}

/// A level's two nearest bins (by their centres) and the share of the level each gets.
fn soft_bin(level: f32) -> [(usize, f32); 2] {
    let last = (BINS_PER_CHANNEL - 1) as f32;
    // `max` before `min` turns a NaN level into bin 0 instead of poisoning the histogram.
    let position = (level / LEVELS_PER_BIN - 0.5).max(0.0).min(last);
    let lower = position as usize;
    let upper_share = position - lower as f32;
    [
        (lower, 1.0 - upper_share),
        ((lower + 1).min(BINS_PER_CHANNEL - 1), upper_share),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEFT_HALF: [f32; 4] = [0.0, 0.0, 20.0, 30.0];

    /// Appearance of `region` in a 40 × 30 grey model input whose left half is `left`.
    fn appearance(left: [u8; 3], region: [f32; 4]) -> Option<Appearance> {
        let (width, height) = (40, 30);
        let mut data = vec![128; 3 * width * height];
        for (i, value) in data.iter_mut().enumerate() {
            if i % width < width / 2 {
                *value = left[i / (width * height)];
            }
        }
        Appearance::from_levels(&data, width, height, region)
    }

    #[test]
    fn same_colours_are_similar_and_different_colours_are_not() {
        let red = appearance([220, 30, 30], LEFT_HALF).unwrap();
        let brighter_red = appearance([230, 40, 40], LEFT_HALF).unwrap();
        let blue = appearance([30, 40, 200], LEFT_HALF).unwrap();
        let red_and_grey = appearance([220, 30, 30], [-5.0, -5.0, 99.0, 99.0]).unwrap();

        assert!((red.bins.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!((red.similarity(&red) - 1.0).abs() < 1e-5);
        // Ten levels brighter (a cloud passing) still shares three quarters.
        assert!(
            red.similarity(&brighter_red) > 0.7,
            "{}",
            red.similarity(&brighter_red)
        );
        assert!(red.similarity(&blue) < 0.1, "{}", red.similarity(&blue));
        // The whole tensor (the region is clipped to it) is half red, half grey.
        assert!((red.similarity(&red_and_grey) - 0.5).abs() < 0.01);
    }

    #[test]
    fn empty_or_invalid_regions_have_no_appearance() {
        let black = |region| appearance([0; 3], region);
        assert!(black([10.0, 10.0, 10.0, 20.0]).is_none(), "zero width");
        assert!(
            black([50.0, 0.0, 60.0, 30.0]).is_none(),
            "outside the tensor"
        );
        assert!(black([f32::NAN, 0.0, f32::NAN, 30.0]).is_none());
        assert!(
            black([10.2, 10.2, 10.4, 10.4]).is_some(),
            "a sliver covers one pixel"
        );
        let too_short = [0; 100];
        assert!(Appearance::from_levels(&too_short, 40, 30, [0.0, 0.0, 5.0, 5.0]).is_none());
    }
}
