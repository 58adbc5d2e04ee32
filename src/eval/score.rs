//! Scoring one scenario: the cases a run filed against the cases that were due. Pure: the
//! run's cases, its per-sample sightings and the expectations in, tallies and the reasons
//! for every miss out. All times are seconds from the clip's start.

use std::collections::BTreeMap;

use serde::Serialize;

/// A span of the clip, in seconds from its start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Window {
    pub from: f64,
    pub until: f64,
}

impl Window {
    pub fn contains(&self, t: f64) -> bool {
        (self.from..=self.until).contains(&t)
    }
}

/// One expected problem (or, with `case == false`, something there that must not be
/// filed: a car stopping briefly, a stall in its tolerated hours).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Expected {
    pub event: String,
    pub zone: String,
    /// When the problem is in the zone.
    pub present: Window,
    pub case: bool,
    /// When filing it is correct (from `present.from` + dwell to two samples later unless
    /// the scenario says otherwise).
    pub file: Window,
    /// When its case should close; `None` when it stays to the end of the clip.
    pub close: Option<Window>,
}

/// A case the run left in the store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseRecord {
    pub id: String,
    pub event: String,
    pub zone: String,
    pub label: String,
    pub first_seen: f64,
    /// `None`: a candidate that never reached its dwell.
    pub filed: Option<f64>,
    /// Every time it was closed (a reopened case can close more than once).
    pub closes: Vec<f64>,
}

/// What the detector saw in one analysed sample: the (zone, event) pairs that a detection
/// would count for (label, score, size and place admitted by the zone's rule).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    pub t: f64,
    pub seen: Vec<(String, String)>,
}

/// Which stage a miss is put down to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    /// The model did not see it (or saw something that is not there).
    Detector,
    /// Sightings were not kept on one object: ids switched, duplicates, lost matches.
    Tracker,
    /// Seen, but dwell, schedule or verification decided wrongly.
    Rules,
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cause::Detector => "detector",
            Cause::Tracker => "tracker",
            Cause::Rules => "rules",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    pub cause: Cause,
    pub what: String,
}

/// One event's figures in one scenario (or summed over several).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Tally {
    /// Problems that were due a case.
    pub expected: u32,
    /// Of those, how many got one.
    pub found: u32,
    /// Cases filed.
    pub filed: u32,
    /// Filed cases that are the first case of an expected problem.
    pub correct: u32,
    /// Further cases for a problem that already had one.
    pub duplicates: u32,
    /// Seconds from a problem's appearance to its case being filed.
    pub delays: Vec<f64>,
    /// Closed while the problem was still there.
    pub false_closes: u32,
    /// Not closed within the expected window after the problem left.
    pub missed_closes: u32,
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        self.expected += other.expected;
        self.found += other.found;
        self.filed += other.filed;
        self.correct += other.correct;
        self.duplicates += other.duplicates;
        self.delays.extend(&other.delays);
        self.false_closes += other.false_closes;
        self.missed_closes += other.missed_closes;
    }

    /// Correct cases among those filed; `None` when nothing was filed.
    pub fn precision(&self) -> Option<f64> {
        (self.filed > 0).then(|| f64::from(self.correct) / f64::from(self.filed))
    }

    /// Expected problems that got a case; `None` when none was due.
    pub fn recall(&self) -> Option<f64> {
        (self.expected > 0).then(|| f64::from(self.found) / f64::from(self.expected))
    }

    pub fn median_delay(&self) -> Option<f64> {
        let mut d = self.delays.clone();
        d.sort_by(f64::total_cmp);
        match d.len() {
            0 => None,
            n if n % 2 == 1 => Some(d[n / 2]),
            n => Some((d[n / 2 - 1] + d[n / 2]) / 2.0),
        }
    }

    pub fn max_delay(&self) -> Option<f64> {
        self.delays.iter().copied().reduce(f64::max)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Score {
    pub events: BTreeMap<String, Tally>,
    pub failures: Vec<Failure>,
}

impl Score {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Below this share of samples with a sighting, a problem counts as unseen by the model.
const SEEN_ENOUGH: f64 = 0.5;

/// Scores a run. `every` is the sampling interval: a case's first sighting may fall up to
/// one sample either side of the window its problem was present in.
pub fn score(expected: &[Expected], cases: &[CaseRecord], samples: &[Sample], every: f64) -> Score {
    let mut events: BTreeMap<String, Tally> = BTreeMap::new();
    let mut failures = Vec::new();
    let about = |e: &Expected, c: &CaseRecord| {
        c.event == e.event
            && c.zone == e.zone
            && c.first_seen >= e.present.from - every
            && c.first_seen <= e.present.until + every
    };
    let filed: Vec<&CaseRecord> = cases.iter().filter(|c| c.filed.is_some()).collect();
    for c in &filed {
        events.entry(c.event.clone()).or_default().filed += 1;
    }
    // Each expected problem takes its earliest-filed case; what is left is a duplicate
    // or a false case.
    let mut taken = vec![false; filed.len()];
    for e in expected.iter().filter(|e| e.case) {
        let t = events.entry(e.event.clone()).or_default();
        t.expected += 1;
        let first = filed
            .iter()
            .enumerate()
            .filter(|(i, c)| !taken[*i] && about(e, c))
            .min_by(|(_, a), (_, b)| a.filed.unwrap_or(0.0).total_cmp(&b.filed.unwrap_or(0.0)));
        let Some((i, case)) = first else {
            failures.push(missed(e, cases, samples, about));
            continue;
        };
        taken[i] = true;
        t.found += 1;
        t.correct += 1;
        let filed_at = case.filed.expect("filed cases only");
        t.delays.push(filed_at - e.present.from);
        if !e.file.contains(filed_at) {
            failures.push(filed_outside(e, filed_at, samples));
        }
        for &close in &case.closes {
            if close < e.present.until {
                t.false_closes += 1;
                failures.push(false_close(e, close, samples, every));
            }
        }
        if let Some(window) = e.close {
            let closed = case.closes.iter().copied().find(|&t| t >= e.present.until);
            if !closed.is_some_and(|t| window.contains(t)) {
                t.missed_closes += 1;
                failures.push(missed_close(e, window, closed, samples, every));
            }
        }
    }
    let left = filed.iter().zip(&taken).filter(|(_, taken)| !**taken);
    for (c, _) in left {
        let filed_at = c.filed.expect("filed cases only");
        if let Some(e) = expected.iter().find(|e| e.case && about(e, c)) {
            events.entry(c.event.clone()).or_default().duplicates += 1;
            failures.push(Failure {
                cause: Cause::Tracker,
                what: format!(
                    "a second {} case in {} at {filed_at:.0} s for the problem present from {:.0} s (ids switched)",
                    e.event, e.zone, e.present.from
                ),
            });
        } else if let Some(e) = expected.iter().find(|e| !e.case && about(e, c)) {
            failures.push(Failure {
                cause: Cause::Rules,
                what: format!(
                    "filed {} in {} at {filed_at:.0} s although no case is due (dwell or schedule)",
                    e.event, e.zone
                ),
            });
        } else {
            failures.push(unexpected(c, filed_at, samples));
        }
    }
    Score { events, failures }
}

/// A case no expectation accounts for. Seen in most samples until it was filed, the model
/// saw something standing there; seen only now and then, the tracker made one object of
/// several passing ones.
fn unexpected(c: &CaseRecord, filed_at: f64, samples: &[Sample]) -> Failure {
    let until_filed = samples
        .iter()
        .filter(|s| (c.first_seen..=filed_at).contains(&s.t));
    let (mut seen, mut of) = (0, 0);
    for s in until_filed {
        of += 1;
        seen += usize::from(s.seen.iter().any(|(z, e)| *z == c.zone && *e == c.event));
    }
    let (cause, why) = if (seen as f64) < SEEN_ENOUGH * of as f64 {
        (
            Cause::Tracker,
            "sightings of different objects joined into one",
        )
    } else {
        (Cause::Detector, "something no expectation has there")
    };
    Failure {
        cause,
        what: format!(
            "filed {} in {} at {filed_at:.0} s for a `{}` first seen at {:.0} s: {why} (seen in {seen} of {of} samples until filed)",
            c.event, c.zone, c.label, c.first_seen
        ),
    }
}

/// Samples in `window` and how many saw the expectation's event in its zone.
fn coverage(e: &Expected, window: Window, samples: &[Sample]) -> (usize, usize) {
    let inside: Vec<&Sample> = samples.iter().filter(|s| window.contains(s.t)).collect();
    let seen = inside.iter().filter(|s| sees(s, e)).count();
    (seen, inside.len())
}

fn sees(s: &Sample, e: &Expected) -> bool {
    s.seen.iter().any(|(z, ev)| *z == e.zone && *ev == e.event)
}

fn missed(
    e: &Expected,
    cases: &[CaseRecord],
    samples: &[Sample],
    about: impl Fn(&Expected, &CaseRecord) -> bool,
) -> Failure {
    let (seen, of) = coverage(e, e.present, samples);
    let candidates = cases
        .iter()
        .filter(|c| c.filed.is_none() && about(e, c))
        .count();
    let (cause, why) = if (seen as f64) < SEEN_ENOUGH * of as f64 {
        (Cause::Detector, "the model hardly saw it")
    } else if candidates > 1 {
        (
            Cause::Tracker,
            "its sightings were split over several candidates",
        )
    } else {
        (Cause::Rules, "seen, yet not filed (dwell or schedule)")
    };
    Failure {
        cause,
        what: format!(
            "no {} case in {} for the problem present {:.0}–{:.0} s: {why} (seen in {seen} of {of} samples, {candidates} unfiled candidates)",
            e.event, e.zone, e.present.from, e.present.until
        ),
    }
}

fn filed_outside(e: &Expected, filed_at: f64, samples: &[Sample]) -> Failure {
    let (seen, of) = coverage(
        e,
        Window {
            from: e.present.from,
            until: e.file.until,
        },
        samples,
    );
    let cause = if filed_at > e.file.until && (seen as f64) < SEEN_ENOUGH * of as f64 {
        Cause::Detector
    } else {
        Cause::Rules
    };
    Failure {
        cause,
        what: format!(
            "{} in {} filed at {filed_at:.0} s, outside {:.0}–{:.0} s (seen in {seen} of {of} samples until then)",
            e.event, e.zone, e.file.from, e.file.until
        ),
    }
}

fn false_close(e: &Expected, close: f64, samples: &[Sample], every: f64) -> Failure {
    let last_seen = samples
        .iter()
        .filter(|s| s.t <= close && sees(s, e))
        .map(|s| s.t)
        .reduce(f64::max);
    let (cause, why) = match last_seen {
        Some(t) if close - t <= 2.0 * every => (
            Cause::Tracker,
            "while the model still saw it: its sightings no longer matched the case".to_string(),
        ),
        Some(t) => (
            Cause::Detector,
            format!("unseen since {t:.0} s (occluded or missed by the model)"),
        ),
        None => (Cause::Detector, "never seen in the zone".to_string()),
    };
    Failure {
        cause,
        what: format!(
            "{} in {} closed at {close:.0} s while still there until {:.0} s: {why}",
            e.event, e.zone, e.present.until
        ),
    }
}

fn missed_close(
    e: &Expected,
    window: Window,
    closed: Option<f64>,
    samples: &[Sample],
    every: f64,
) -> Failure {
    let after = Window {
        from: e.present.until + every,
        until: window.until,
    };
    let (seen, of) = coverage(e, after, samples);
    let when = closed.map_or("not closed".to_string(), |t| format!("closed at {t:.0} s"));
    let early = closed.is_some_and(|t| t < window.from);
    let (cause, why) = if early {
        // Verified from the last sighting: the model lost it before it left.
        (
            Cause::Detector,
            "closed early, the model lost it before it left",
        )
    } else if seen > 0 {
        (Cause::Detector, "the model still sees something there")
    } else {
        (Cause::Rules, "unseen, yet not verified in time")
    };
    Failure {
        cause,
        what: format!(
            "{} in {} {when}, expected {:.0}–{:.0} s: {why} (seen in {seen} of {of} samples after it left)",
            e.event, e.zone, window.from, window.until
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EVERY: f64 = 2.0;

    fn w(from: f64, until: f64) -> Window {
        Window { from, until }
    }

    /// A car in zone `z` from `from` to `until`, due a case 30 s after it appears.
    fn parked(from: f64, until: f64) -> Expected {
        Expected {
            event: "illegal_parking".into(),
            zone: "z".into(),
            present: w(from, until),
            case: true,
            file: w(from + 30.0, from + 34.0),
            close: None,
        }
    }

    fn case(id: &str, first_seen: f64, filed: Option<f64>, closes: &[f64]) -> CaseRecord {
        CaseRecord {
            id: id.into(),
            event: "illegal_parking".into(),
            zone: "z".into(),
            label: "car".into(),
            first_seen,
            filed,
            closes: closes.to_vec(),
        }
    }

    /// One sample every 2 s over `0..end`, seeing the car whenever `seen(t)`.
    fn samples(end: f64, seen: impl Fn(f64) -> bool) -> Vec<Sample> {
        (0..)
            .map(|i| f64::from(i) * EVERY)
            .take_while(|&t| t < end)
            .map(|t| Sample {
                t,
                seen: if seen(t) {
                    vec![("z".into(), "illegal_parking".into())]
                } else {
                    vec![]
                },
            })
            .collect()
    }

    fn parking(score: &Score) -> &Tally {
        &score.events["illegal_parking"]
    }

    #[test]
    fn a_case_filed_in_its_window_is_correct_and_on_time() {
        let score = score(
            &[parked(10.0, 100.0)],
            &[case("a", 10.0, Some(42.0), &[])],
            &samples(100.0, |t| t >= 10.0),
            EVERY,
        );
        assert!(score.passed(), "{:?}", score.failures);
        let t = parking(&score);
        assert_eq!(
            (t.expected, t.found, t.filed, t.correct, t.duplicates),
            (1, 1, 1, 1, 0)
        );
        assert_eq!((t.precision(), t.recall()), (Some(1.0), Some(1.0)));
        assert_eq!((t.median_delay(), t.max_delay()), (Some(32.0), Some(32.0)));
    }

    #[test]
    fn a_second_case_for_one_car_is_a_duplicate_put_down_to_the_tracker() {
        let score = score(
            &[parked(10.0, 200.0)],
            &[
                case("a", 10.0, Some(42.0), &[]),
                case("b", 110.0, Some(142.0), &[]),
            ],
            &samples(200.0, |t| t >= 10.0),
            EVERY,
        );
        let t = parking(&score);
        assert_eq!((t.filed, t.correct, t.duplicates), (2, 1, 1));
        assert_eq!(t.precision(), Some(0.5));
        assert_eq!(t.recall(), Some(1.0));
        assert_eq!(score.failures.len(), 1);
        assert_eq!(score.failures[0].cause, Cause::Tracker);
    }

    #[test]
    fn closing_while_the_car_is_there_is_a_false_close_and_says_why() {
        // Hidden from 60 s to 90 s (a bus in front), closed at 85 s.
        let occluded = samples(200.0, |t| t >= 10.0 && !(60.0..90.0).contains(&t));
        let score1 = score(
            &[parked(10.0, 200.0)],
            &[case("a", 10.0, Some(42.0), &[85.0])],
            &occluded,
            EVERY,
        );
        assert_eq!(parking(&score1).false_closes, 1);
        assert_eq!(score1.failures[0].cause, Cause::Detector);
        assert!(
            score1.failures[0].what.contains("unseen since 58 s"),
            "{:?}",
            score1.failures
        );
        // Closed although the model saw it all along: sightings not matched to the case.
        let seen = samples(200.0, |t| t >= 10.0);
        let score2 = score(
            &[parked(10.0, 200.0)],
            &[case("a", 10.0, Some(42.0), &[85.0])],
            &seen,
            EVERY,
        );
        assert_eq!(score2.failures[0].cause, Cause::Tracker);
        // Closed after it left: no false close.
        let gone = samples(200.0, |t| (10.0..100.0).contains(&t));
        let score3 = score(
            &[parked(10.0, 100.0)],
            &[case("a", 10.0, Some(42.0), &[130.0])],
            &gone,
            EVERY,
        );
        assert!(score3.passed(), "{:?}", score3.failures);
    }

    #[test]
    fn a_close_outside_its_window_is_missed() {
        let mut leaves = parked(10.0, 100.0);
        leaves.close = Some(w(120.0, 130.0));
        let gone = samples(200.0, |t| (10.0..100.0).contains(&t));
        let on_time = score(
            &[leaves.clone()],
            &[case("a", 10.0, Some(42.0), &[122.0])],
            &gone,
            EVERY,
        );
        assert!(on_time.passed(), "{:?}", on_time.failures);
        for closes in [&[][..], &[170.0]] {
            let late = score(
                &[leaves.clone()],
                &[case("a", 10.0, Some(42.0), closes)],
                &gone,
                EVERY,
            );
            assert_eq!(parking(&late).missed_closes, 1);
            assert_eq!(late.failures[0].cause, Cause::Rules);
        }
        // Something still seen there after the car left: the detector's doing.
        let ghost = samples(200.0, |t| t >= 10.0);
        let stuck = score(
            &[leaves],
            &[case("a", 10.0, Some(42.0), &[])],
            &ghost,
            EVERY,
        );
        assert_eq!(stuck.failures[0].cause, Cause::Detector);
    }

    #[test]
    fn a_missed_case_is_put_down_to_the_stage_that_lost_it() {
        let e = [parked(10.0, 100.0)];
        let unseen = score(&e, &[], &samples(100.0, |t| t == 20.0), EVERY);
        assert_eq!(parking(&unseen).recall(), Some(0.0));
        assert_eq!(parking(&unseen).precision(), None);
        assert_eq!(unseen.failures[0].cause, Cause::Detector);
        let seen = samples(100.0, |t| t >= 10.0);
        let split = [case("a", 10.0, None, &[]), case("b", 40.0, None, &[])];
        assert_eq!(
            score(&e, &split, &seen, EVERY).failures[0].cause,
            Cause::Tracker
        );
        assert_eq!(score(&e, &[], &seen, EVERY).failures[0].cause, Cause::Rules);
        // Filed late although seen all along: the rules.
        let late = score(&e, &[case("a", 10.0, Some(60.0), &[])], &seen, EVERY);
        assert_eq!(late.failures[0].cause, Cause::Rules);
        assert_eq!(parking(&late).found, 1);
    }

    #[test]
    fn filing_what_is_not_due_lowers_precision() {
        let mut brief = parked(10.0, 70.0);
        brief.case = false;
        let seen = samples(100.0, |t| (10.0..70.0).contains(&t));
        let s = score(&[brief], &[case("a", 10.0, Some(42.0), &[])], &seen, EVERY);
        assert_eq!(parking(&s).precision(), Some(0.0));
        assert_eq!(parking(&s).recall(), None);
        assert_eq!(s.failures[0].cause, Cause::Rules);
        // Nothing expected at all: the detector saw something there, or (seen now and then)
        // the tracker joined passing cars into one.
        let s = score(&[], &[case("a", 10.0, Some(42.0), &[])], &seen, EVERY);
        assert_eq!(s.failures[0].cause, Cause::Detector);
        let now_and_then = samples(100.0, |t| (t as u32) % 12 == 0);
        let s = score(
            &[],
            &[case("a", 10.0, Some(42.0), &[])],
            &now_and_then,
            EVERY,
        );
        assert_eq!(s.failures[0].cause, Cause::Tracker);
    }

    #[test]
    fn two_cars_side_by_side_take_one_case_each() {
        let e = [parked(0.0, 100.0), parked(10.0, 100.0)];
        let cases = [
            case("a", 0.0, Some(32.0), &[]),
            case("b", 10.0, Some(42.0), &[]),
        ];
        let s = score(&e, &cases, &samples(100.0, |_| true), EVERY);
        assert!(s.passed(), "{:?}", s.failures);
        assert_eq!((parking(&s).found, parking(&s).duplicates), (2, 0));
    }

    proptest! {
        /// Whatever a run files, the figures stay consistent: every filed case is correct,
        /// a duplicate or false; a scenario passes only with full precision and recall.
        #[test]
        fn tallies_are_consistent(
            problems in prop::collection::vec((0.0..200.0f64, 1.0..200.0f64, any::<bool>()), 0..4),
            cases in prop::collection::vec((0.0..400.0f64, prop::option::of(0.0..100.0f64), prop::option::of(0.0..200.0f64)), 0..6),
        ) {
            let expected: Vec<Expected> = problems
                .iter()
                .map(|&(from, length, due)| Expected { case: due, ..parked(from, from + length) })
                .collect();
            let cases: Vec<CaseRecord> = cases
                .iter()
                .enumerate()
                .map(|(i, &(first, filed_after, closed_after))| {
                    let filed = filed_after.map(|d| first + d);
                    let closes: Vec<f64> = filed.zip(closed_after).map(|(f, d)| f + d).into_iter().collect();
                    case(&i.to_string(), first, filed, &closes)
                })
                .collect();
            let s = score(&expected, &cases, &samples(400.0, |t| t < 200.0), EVERY);
            let filed = cases.iter().filter(|c| c.filed.is_some()).count() as u32;
            let due = expected.iter().filter(|e| e.case).count() as u32;
            let t = s.events.get("illegal_parking").cloned().unwrap_or_default();
            prop_assert_eq!(t.filed, filed);
            prop_assert_eq!(t.expected, due);
            prop_assert!(t.found <= t.expected);
            prop_assert_eq!(t.correct, t.found);
            prop_assert!(t.correct + t.duplicates <= t.filed);
            prop_assert_eq!(t.delays.len() as u32, t.found);
            // Each missed problem, duplicate and false case is one failure at least.
            prop_assert!(s.failures.len() as u32 >= (t.expected - t.found) + (t.filed - t.correct));
            if s.passed() {
                prop_assert!(t.precision().is_none_or(|p| p == 1.0));
                prop_assert!(t.recall().is_none_or(|r| r == 1.0));
            }
        }
    }
}
