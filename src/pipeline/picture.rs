//! Whether a camera's analysed pictures can be trusted: a camera can keep streaming while
//! its picture is frozen (an encoder repeating its last image), useless (a covered,
//! painted-over or dark lens), or of other ground than its zones were drawn on (a PTZ dome
//! turned or zoomed by a police operator). Judged on signatures of each analysed frame, in
//! the frames' own time, so patrol visits minutes apart count as well.

use std::time::Duration;

use crate::api::CameraProblem;
use crate::decode::{LumaSignature, ViewSignature};

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
    /// Compare each picture with the camera's reference view.
    pub view_guard: bool,
}

impl PictureLimits {
    /// A recording filed as a camera (`replay --camera`, `eval`): its view is guarded, as a
    /// live camera's is; frozen and dark pictures are not judged, since a clip made from a
    /// still or recorded at night is what it is.
    pub const RECORDING: PictureLimits = PictureLimits {
        frozen_after: Duration::ZERO,
        dark_after: Duration::ZERO,
        view_guard: true,
    };
}

/// Likeness to the reference view ([`ViewSignature::likeness`]) below this: other ground.
/// Measured (tests/decode.rs): the same ground 0.90 or more in any light, with noise and
/// people walking; panned by a tenth of the picture 0.44 at most, zoomed 0.16.
const OTHER_GROUND: f32 = 0.6;
/// At or above this: the reference view (again). Between the two, nothing changes.
const SAME_GROUND: f32 = 0.8;
/// Pictures in a row of other ground before the view counts as changed: one picture
/// filled by a passing bus is not a turned camera.
const TURNED_AFTER: u32 = 2;
/// Pictures in a row of the same ground that make the reference when there is none.
const LEARN_FROM: u32 = 3;

/// The camera's reference view, learned from its first steady pictures (or re-based by an
/// operator, or restored from the store), and whether it looks elsewhere now.
#[derive(Debug, Default)]
struct ViewGuard {
    reference: Option<ViewSignature>,
    /// A reference learned from steady pictures that the store does not have yet.
    learned: Option<ViewSignature>,
    /// The picture being learned as the reference, and how many in a row were alike.
    learning: Option<(ViewSignature, u32)>,
    /// Pictures in a row of other ground.
    elsewhere: u32,
    turned: bool,
    latest: Option<ViewSignature>,
    /// Likeness of the latest picture to the reference, when judged.
    likeness: Option<f32>,
}

impl ViewGuard {
    fn observe(&mut self, now: Option<ViewSignature>) {
        self.likeness = None;
        let Some(now) = now else {
            self.latest = None;
            return;
        };
        match &self.reference {
            None => self.learn(&now),
            Some(reference) => {
                // A picture with too little in it to judge changes nothing.
                if let Some(likeness) = reference.likeness(&now) {
                    self.likeness = Some(likeness);
                    if likeness < OTHER_GROUND {
                        self.elsewhere += 1;
                        self.turned |= self.elsewhere >= TURNED_AFTER;
                    } else if likeness >= SAME_GROUND {
                        self.elsewhere = 0;
                        self.turned = false;
                    }
                }
            }
        }
        self.latest = Some(now);
    }

    fn learn(&mut self, now: &ViewSignature) {
        let alike = match &self.learning {
            Some((candidate, _)) => candidate.likeness(now).is_some_and(|l| l >= SAME_GROUND),
            None => false,
        };
        match (&mut self.learning, alike) {
            (Some((_, count)), true) => *count += 1,
            _ => self.learning = Some((now.clone(), 1)),
        }
        if let Some((candidate, count)) = &self.learning {
            if *count >= LEARN_FROM {
                self.reference = Some(candidate.clone());
                self.learned = Some(candidate.clone());
                self.learning = None;
            }
        }
    }

    /// The latest picture becomes the reference: the operator says this is the view the
    /// zones are for. `None` when there is no picture to take.
    fn rebase(&mut self) -> Option<ViewSignature> {
        let latest = self.latest.clone()?;
        self.set(latest.clone());
        self.likeness = Some(1.0);
        Some(latest)
    }

    /// `reference` is the camera's reference view from now on; the latest picture is
    /// judged against it from the next one.
    fn set(&mut self, reference: ViewSignature) {
        self.reference = Some(reference);
        self.learned = None;
        self.learning = None;
        self.elsewhere = 0;
        self.turned = false;
    }
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
    view: ViewGuard,
}

impl PictureWatch {
    pub fn new(limits: PictureLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Whether this watch wants view signatures ([`PictureWatch::observe`]).
    pub fn guards_the_view(&self) -> bool {
        self.limits.view_guard
    }

    /// Takes an analysed frame's signatures (`None`: a picture that cannot be judged,
    /// which ends any run of alike pictures). Returns the problem when it changed.
    pub fn observe(
        &mut self,
        ts: f64,
        signature: Option<LumaSignature>,
        view: Option<ViewSignature>,
    ) -> Option<Option<CameraProblem>> {
        let before = self.problem();
        if self.limits.view_guard {
            self.view.observe(view);
        }
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

    /// The latest picture becomes the reference view, which is returned to be kept;
    /// `None` when there is no picture yet.
    pub fn rebase_view(&mut self) -> Option<ViewSignature> {
        self.view.rebase()
    }

    /// The reference view kept in the store replaces whatever was learned since the
    /// camera started: the kept one is what the zones were drawn for.
    pub fn restore_view(&mut self, reference: ViewSignature) {
        self.view.set(reference);
    }

    /// A reference view learned from steady pictures since the last call, to be kept.
    pub fn take_learned_view(&mut self) -> Option<ViewSignature> {
        self.view.learned.take()
    }

    /// Likeness of the latest picture to the reference view, when judged.
    pub fn view_likeness(&self) -> Option<f32> {
        self.view.likeness
    }

    /// Whether a reference view has been learned.
    pub fn knows_the_view(&self) -> bool {
        self.view.reference.is_some()
    }

    /// `Dark` before `Frozen`: a black picture is also an unchanging one; either before
    /// `ViewChanged`, which cannot be told on such pictures.
    pub fn problem(&self) -> Option<CameraProblem> {
        let lasted = |since: Option<f64>, limit: Duration| {
            !limit.is_zero() && since.is_some_and(|t| self.latest - t >= limit.as_secs_f64())
        };
        if lasted(self.uniform_since, self.limits.dark_after) {
            Some(CameraProblem::Dark)
        } else if lasted(self.unchanged_since, self.limits.frozen_after) {
            Some(CameraProblem::Frozen)
        } else if self.view.turned {
            Some(CameraProblem::ViewChanged)
        } else {
            None
        }
    }

    /// Whether the latest picture may count for the camera's rules, as a sighting or as
    /// evidence that something is gone: not a uniform picture (nothing can be seen in
    /// it), not a frozen one (it shows the past), not one of other ground than the zones
    /// were drawn on — nor one that already looks elsewhere before the view is called
    /// changed.
    pub fn shows_the_scene(&self) -> bool {
        let uniform = self.uniform_since.is_some() && !self.limits.dark_after.is_zero();
        let elsewhere = self.view.elsewhere > 0 || self.view.turned;
        !uniform && !elsewhere && self.problem() != Some(CameraProblem::Frozen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> PictureLimits {
        PictureLimits {
            frozen_after: Duration::from_secs(10),
            dark_after: Duration::from_secs(6),
            view_guard: true,
        }
    }

    #[test]
    fn a_repeating_picture_is_frozen_after_its_time_and_heals_at_once() {
        let mut watch = PictureWatch::new(limits());
        let scene = LumaSignature::test_pattern(100.0, 40.0);
        for t in 0..10 {
            assert_eq!(watch.observe(f64::from(t), Some(scene.clone()), None), None);
            assert!(watch.shows_the_scene());
        }
        assert_eq!(
            watch.observe(10.0, Some(scene.clone()), None),
            Some(Some(CameraProblem::Frozen))
        );
        assert!(!watch.shows_the_scene());
        let moved = LumaSignature::test_pattern(103.0, 40.0);
        assert_eq!(watch.observe(12.0, Some(moved), None), Some(None));
        assert!(watch.shows_the_scene());
    }

    #[test]
    fn a_uniform_picture_is_dark_after_its_time_and_never_evidence() {
        let mut watch = PictureWatch::new(limits());
        let black = LumaSignature::test_pattern(16.0, 0.5);
        assert_eq!(watch.observe(0.0, Some(black.clone()), None), None);
        assert!(
            !watch.shows_the_scene(),
            "nothing to see before it is judged"
        );
        assert_eq!(watch.observe(5.0, Some(black.clone()), None), None);
        assert_eq!(
            watch.observe(6.0, Some(black.clone()), None),
            Some(Some(CameraProblem::Dark))
        );
        // Still dark when it would be frozen too.
        assert_eq!(watch.observe(20.0, Some(black), None), None);
        assert_eq!(watch.problem(), Some(CameraProblem::Dark));
        assert_eq!(
            watch.observe(21.0, Some(LumaSignature::test_pattern(90.0, 30.0)), None),
            Some(None)
        );
    }

    #[test]
    fn zero_limits_judge_nothing_and_unjudgeable_pictures_reset() {
        let mut off = PictureWatch::new(PictureLimits::default());
        let black = LumaSignature::test_pattern(16.0, 0.0);
        for t in 0..100 {
            off.observe(f64::from(t), Some(black.clone()), None);
        }
        assert_eq!(off.problem(), None);
        assert!(off.shows_the_scene());

        let mut watch = PictureWatch::new(limits());
        let scene = LumaSignature::test_pattern(100.0, 40.0);
        watch.observe(0.0, Some(scene.clone()), None);
        watch.observe(9.0, None, None);
        watch.observe(10.0, Some(scene.clone()), None);
        assert_eq!(watch.observe(15.0, Some(scene), None), None);
    }

    /// A street scene, or the same street turned aside by `turn` cells.
    fn street(turn: usize) -> ViewSignature {
        ViewSignature::from_cells(|c, r| {
            let c = c + turn;
            100.0 + 40.0 * ((c * 7 + r * 3) % 5) as f32 + 25.0 * ((c / 3 + r) % 2) as f32
        })
    }

    fn look(
        watch: &mut PictureWatch,
        t: f64,
        view: ViewSignature,
    ) -> Option<Option<CameraProblem>> {
        let luma = LumaSignature::test_pattern(100.0 + t as f32, 40.0);
        watch.observe(t, Some(luma), Some(view))
    }

    #[test]
    fn a_turned_camera_is_told_after_two_pictures_and_rules_resume_on_the_preset() {
        let mut watch = PictureWatch::new(limits());
        for t in 0..3 {
            look(&mut watch, f64::from(t), street(0));
            assert!(watch.shows_the_scene());
        }
        assert!(watch.knows_the_view());
        // Turned: the first picture of other ground already counts for nothing…
        assert_eq!(look(&mut watch, 3.0, street(3)), None);
        assert!(!watch.shows_the_scene());
        // …the second makes it a changed view.
        assert_eq!(
            look(&mut watch, 4.0, street(3)),
            Some(Some(CameraProblem::ViewChanged))
        );
        assert!(!watch.shows_the_scene());
        // Back on the preset.
        assert_eq!(look(&mut watch, 5.0, street(0)), Some(None));
        assert!(watch.shows_the_scene());
        // One odd picture (a bus in front) and back: never a changed view.
        look(&mut watch, 6.0, street(3));
        assert_eq!(look(&mut watch, 7.0, street(0)), None);
        assert_eq!(watch.problem(), None);
    }

    #[test]
    fn the_reference_is_learned_from_steady_pictures_and_an_operator_can_rebase_it() {
        let mut watch = PictureWatch::new(limits());
        // Someone is still turning the camera at start: nothing steady, nothing learned.
        for t in 0..6 {
            look(&mut watch, f64::from(t), street(t as usize % 2 * 3));
        }
        assert!(!watch.knows_the_view());
        for t in 6..9 {
            look(&mut watch, f64::from(t), street(3));
        }
        assert!(watch.knows_the_view());
        assert_eq!(watch.take_learned_view(), Some(street(3)));
        assert_eq!(watch.take_learned_view(), None, "kept once");
        look(&mut watch, 9.0, street(0));
        look(&mut watch, 10.0, street(0));
        assert_eq!(watch.problem(), Some(CameraProblem::ViewChanged));
        // The operator says this is the view now.
        assert_eq!(watch.rebase_view(), Some(street(0)));
        assert_eq!(watch.problem(), None);
        assert_eq!(look(&mut watch, 11.0, street(0)), None);
        assert!(watch.shows_the_scene());
        // Without the guard nothing of this is judged.
        let mut off = PictureWatch::new(PictureLimits {
            view_guard: false,
            ..limits()
        });
        for t in 0..10 {
            look(&mut off, f64::from(t), street(t as usize));
        }
        assert!(!off.knows_the_view());
        assert_eq!(off.problem(), None);
    }

    #[test]
    fn a_kept_reference_replaces_the_learned_one_and_judges_at_once() {
        let mut watch = PictureWatch::new(limits());
        // The daemon restarted while the camera was turned: it learns the turned view…
        for t in 0..3 {
            look(&mut watch, f64::from(t), street(3));
        }
        assert!(watch.shows_the_scene());
        // …until the view kept in the store is restored; that one is not to be kept again.
        watch.restore_view(street(0));
        assert_eq!(watch.take_learned_view(), None);
        look(&mut watch, 3.0, street(3));
        assert!(!watch.shows_the_scene());
        assert_eq!(
            look(&mut watch, 4.0, street(3)),
            Some(Some(CameraProblem::ViewChanged))
        );
        assert_eq!(look(&mut watch, 5.0, street(0)), Some(None));
    }
}
