//! Whether a camera's analysed pictures can be trusted: a camera can keep streaming while
//! its picture is frozen (an encoder repeating its last image) or useless (a covered,
//! painted-over or dark lens). Judged on the luma signature of each analysed frame, in
//! the frames' own time, so patrol visits minutes apart count as well.

use std::time::Duration;

use crate::api::CameraProblem;
use crate::decode::LumaSignature;

/// Two signatures closer than this (mean luma levels per cell) show the same picture.
/// Measured a second apart (tests/decode.rs): a re-encoded still 0.27 while the encoder
/// settles, then 0.00; the static street sample never under 0.63, people walking never
/// under 0.33.
const SAME_PICTURE: f32 = 0.25;
/// A signature spreading less than this (luma levels) is near-uniform. Measured: black
/// with sensor noise 1.4; the street samples 46 or more.
const UNIFORM: f32 = 6.0;

/// How long a picture may stay unchanged or uniform before the camera is judged; zero
/// turns that judgement off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PictureLimits {
    pub frozen_after: Duration,
    pub dark_after: Duration,
}

#[derive(Debug, Default)]
pub struct PictureWatch {
    limits: PictureLimits,
    last: Option<LumaSignature>,
    /// Frame time (Unix seconds) since when the picture has not changed.
    unchanged_since: Option<f64>,
    /// Frame time since when the picture has been near-uniform.
    uniform_since: Option<f64>,
    latest: f64,
}

impl PictureWatch {
    pub fn new(limits: PictureLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Takes an analysed frame's signature (`None`: a picture that cannot be judged,
    /// which ends any run of alike pictures). Returns the problem when it changed.
    pub fn observe(
        &mut self,
        ts: f64,
        signature: Option<LumaSignature>,
    ) -> Option<Option<CameraProblem>> {
        let before = self.problem();
        match &signature {
            Some(now) => {
                let same = self
                    .last
                    .as_ref()
                    .is_some_and(|last| last.difference(now) < SAME_PICTURE);
                if !same {
                    self.unchanged_since = Some(ts);
                }
                if now.spread() >= UNIFORM {
                    self.uniform_since = None;
                } else if self.uniform_since.is_none() {
                    self.uniform_since = Some(ts);
                }
            }
            None => {
                self.unchanged_since = None;
                self.uniform_since = None;
            }
        }
        self.last = signature;
        self.latest = ts;
        let after = self.problem();
        (after != before).then_some(after)
    }

    /// `Dark` before `Frozen`: a black picture is also an unchanging one.
    pub fn problem(&self) -> Option<CameraProblem> {
        let lasted = |since: Option<f64>, limit: Duration| {
            !limit.is_zero() && since.is_some_and(|t| self.latest - t >= limit.as_secs_f64())
        };
        if lasted(self.uniform_since, self.limits.dark_after) {
            Some(CameraProblem::Dark)
        } else if lasted(self.unchanged_since, self.limits.frozen_after) {
            Some(CameraProblem::Frozen)
        } else {
            None
        }
    }

    /// Whether the latest picture may count as evidence that something is gone: not a
    /// uniform picture (nothing can be seen in it), not a frozen one (it shows the past).
    pub fn shows_the_scene(&self) -> bool {
        let uniform = self.uniform_since.is_some() && !self.limits.dark_after.is_zero();
        !uniform && self.problem() != Some(CameraProblem::Frozen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> PictureLimits {
        PictureLimits {
            frozen_after: Duration::from_secs(10),
            dark_after: Duration::from_secs(6),
        }
    }

    #[test]
    fn a_repeating_picture_is_frozen_after_its_time_and_heals_at_once() {
        let mut watch = PictureWatch::new(limits());
        let scene = LumaSignature::test_pattern(100.0, 40.0);
        for t in 0..10 {
            assert_eq!(watch.observe(f64::from(t), Some(scene.clone())), None);
            assert!(watch.shows_the_scene());
        }
        assert_eq!(
            watch.observe(10.0, Some(scene.clone())),
            Some(Some(CameraProblem::Frozen))
        );
        assert!(!watch.shows_the_scene());
        let moved = LumaSignature::test_pattern(103.0, 40.0);
        assert_eq!(watch.observe(12.0, Some(moved)), Some(None));
        assert!(watch.shows_the_scene());
    }

    #[test]
    fn a_uniform_picture_is_dark_after_its_time_and_never_evidence() {
        let mut watch = PictureWatch::new(limits());
        let black = LumaSignature::test_pattern(16.0, 0.5);
        assert_eq!(watch.observe(0.0, Some(black.clone())), None);
        assert!(
            !watch.shows_the_scene(),
            "nothing to see before it is judged"
        );
        assert_eq!(watch.observe(5.0, Some(black.clone())), None);
        assert_eq!(
            watch.observe(6.0, Some(black.clone())),
            Some(Some(CameraProblem::Dark))
        );
        // Still dark when it would be frozen too.
        assert_eq!(watch.observe(20.0, Some(black)), None);
        assert_eq!(watch.problem(), Some(CameraProblem::Dark));
        assert_eq!(
            watch.observe(21.0, Some(LumaSignature::test_pattern(90.0, 30.0))),
            Some(None)
        );
    }

    #[test]
    fn zero_limits_judge_nothing_and_unjudgeable_pictures_reset() {
        let mut off = PictureWatch::new(PictureLimits::default());
        let black = LumaSignature::test_pattern(16.0, 0.0);
        for t in 0..100 {
            off.observe(f64::from(t), Some(black.clone()));
        }
        assert_eq!(off.problem(), None);
        assert!(off.shows_the_scene());

        let mut watch = PictureWatch::new(limits());
        let scene = LumaSignature::test_pattern(100.0, 40.0);
        watch.observe(0.0, Some(scene.clone()));
        watch.observe(9.0, None);
        watch.observe(10.0, Some(scene.clone()));
        assert_eq!(watch.observe(15.0, Some(scene)), None);
    }
}
