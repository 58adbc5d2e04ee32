//! Which frames are analysed, and which are not even decoded. Decoding only what is
//! analysed is the main saving of this system: a 1080p25 camera analysed every 2 s needs
//! one keyframe in fifty, and non-key frames are dropped before the decoder.

use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// Decode and analyse every frame.
    All,
    /// Decode every frame, analyse every n-th (the first, the n+1-th, …).
    EveryNth(u32),
    /// Decode every frame, analyse one per interval of presentation time.
    Interval(Duration),
    /// Decode only keyframes (others never reach the decoder), at most one per interval.
    Keyframes { min_interval: Option<Duration> },
}

/// Sampling options that do not make sense; each message names the option.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingError {
    #[error("--every must be at least 1 frame")]
    NoFrames,
    #[error("--every must be a positive duration")]
    NoTime,
    #[error(
        "--every `{0}`: a frame count is a whole number; a duration needs its unit (e.g. {0}s)"
    )]
    Fraction(String),
    /// Not the shared duration message: its bare-seconds example means frames here.
    #[error("--every `{text}`: {reason} (give a frame count like 5 or a duration like 2s)")]
    Unreadable { text: String, reason: String },
    #[error("--keyframes-only takes a duration with --every (e.g. 2s)")]
    KeyframesNeedTime,
}

impl Sampling {
    /// Combines the CLI's `--every` (`N` frames or a duration such as `2s`, `500ms`) and
    /// `--keyframes-only`.
    pub fn from_options(every: Option<&str>, keyframes_only: bool) -> Result<Self, SamplingError> {
        let every = every.map(str::parse::<Every>).transpose()?;
        Ok(match (every, keyframes_only) {
            (None, false) => Sampling::All,
            (None, true) => Sampling::Keyframes { min_interval: None },
            (Some(Every::Frames(n)), false) => Sampling::EveryNth(n),
            (Some(Every::Time(d)), false) => Sampling::Interval(d),
            (Some(Every::Time(d)), true) => Sampling::Keyframes {
                min_interval: Some(d),
            },
            (Some(Every::Frames(_)), true) => return Err(SamplingError::KeyframesNeedTime),
        })
    }

    pub fn keyframes_only(&self) -> bool {
        matches!(self, Sampling::Keyframes { .. })
    }
}

enum Every {
    Frames(u32),
    Time(Duration),
}

impl FromStr for Every {
    type Err = SamplingError;
    fn from_str(s: &str) -> Result<Self, SamplingError> {
        if let Ok(n) = s.parse::<u32>() {
            return if n == 0 {
                Err(SamplingError::NoFrames)
            } else {
                Ok(Every::Frames(n))
            };
        }
        // A bare number is a frame count here, so a fraction is neither: ask for a unit.
        if s.parse::<f64>().is_ok_and(|n| n.is_finite() && n > 0.0) {
            return Err(SamplingError::Fraction(s.to_string()));
        }
        match crate::duration::parse(s) {
            Ok(d) if d.is_zero() => Err(SamplingError::NoTime),
            Ok(d) => Ok(Every::Time(d)),
            Err(e) => Err(SamplingError::Unreadable {
                text: s.to_string(),
                reason: e.reason().to_string(),
            }),
        }
    }
}

/// Stateful application of a [`Sampling`] to one stream.
#[derive(Debug)]
pub(crate) struct Sampler {
    sampling: Sampling,
    next_due: Option<f64>,
    frames_seen: u64,
}

/// Slack for timestamp rounding when comparing against the next due time.
const EPSILON: f64 = 1e-6;

impl Sampler {
    pub fn new(sampling: Sampling) -> Self {
        Self {
            sampling,
            next_due: None,
            frames_seen: 0,
        }
    }

    /// Decides before decoding: only keyframe sampling skips access units.
    pub fn decode_wanted(&mut self, keyframe: bool, pts: Option<f64>) -> bool {
        match self.sampling {
            Sampling::Keyframes { min_interval } => {
                // At least the interval apart: keyframes come only every GOP, so catching
                // up on a missed due time would bunch them.
                keyframe && min_interval.is_none_or(|d| self.due(pts, d, false))
            }
            _ => true,
        }
    }

    /// Decides for a decoded frame whether it is analysed.
    pub fn analyse_wanted(&mut self, pts: Option<f64>) -> bool {
        let index = self.frames_seen;
        self.frames_seen += 1;
        match self.sampling {
            Sampling::All | Sampling::Keyframes { .. } => true,
            Sampling::EveryNth(n) => index % u64::from(n) == 0,
            Sampling::Interval(d) => self.due(pts, d, true),
        }
    }

    /// True when `pts` reached the next due time. The due time then advances by `interval`
    /// from the previous due time (`steady`: no drift at a fixed frame rate) or from `pts`
    /// (and from `pts` after a gap either way). Frames without a timestamp are always due.
    fn due(&mut self, pts: Option<f64>, interval: Duration, steady: bool) -> bool {
        let Some(pts) = pts else { return true };
        let interval = interval.as_secs_f64();
        match self.next_due {
            Some(due) if pts + EPSILON < due => false,
            Some(due) if steady && pts - due < interval => {
                self.next_due = Some(due + interval);
                true
            }
            _ => {
                self.next_due = Some(pts + interval);
                true
            }
        }
    }
}

/// When a live stream is decoded keyframes-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyframePolicy {
    /// Keyframes only while the stream's keyframe interval (GOP) is no longer than the
    /// sample interval; every frame from a keyframe on when it is longer.
    #[default]
    Auto,
    Always,
    Never,
}

/// Chooses which access units of a live stream reach its decoder. A live stream's GOP is
/// not known up front, so it is measured from the keyframes that pass by.
#[derive(Debug, Clone)]
pub struct LiveSampler {
    interval: Duration,
    policy: KeyframePolicy,
    last_keyframe: Option<f64>,
    gop: Option<f64>,
    last_admitted_key: Option<f64>,
    /// In decode-all mode, a keyframe has been admitted since the last gap.
    in_sync: bool,
}

impl LiveSampler {
    pub fn new(interval: Duration, policy: KeyframePolicy) -> Self {
        Self {
            interval,
            policy,
            last_keyframe: None,
            gop: None,
            last_admitted_key: None,
            in_sync: false,
        }
    }

    /// Whether the decoder gets keyframes only (else every frame, analysed once per interval).
    pub fn keyframes_only(&self) -> bool {
        match self.policy {
            KeyframePolicy::Always => true,
            KeyframePolicy::Never => false,
            // Until the GOP is known, keyframes only: no frame before the first keyframe
            // can be decoded anyway.
            KeyframePolicy::Auto => self
                .gop
                .is_none_or(|gop| gop <= self.interval.as_secs_f64() * 1.25),
        }
    }

    /// How the decoder for the admitted units samples: rate limiting of keyframes has
    /// already happened here.
    pub fn sampling(&self) -> Sampling {
        if self.keyframes_only() {
            Sampling::Keyframes { min_interval: None }
        } else {
            Sampling::Interval(self.interval)
        }
    }

    /// The keyframe interval measured so far, in seconds.
    pub fn gop(&self) -> Option<f64> {
        self.gop
    }

    /// Decides for one access unit (presentation time `t`, seconds).
    pub fn admit(&mut self, keyframe: bool, t: f64) -> bool {
        if keyframe {
            if let Some(previous) = self.last_keyframe.filter(|&p| t > p) {
                self.gop = Some(t - previous);
            }
            self.last_keyframe = Some(t);
        }
        if !self.keyframes_only() {
            self.in_sync |= keyframe;
            return self.in_sync;
        }
        // Timestamps jitter: a 2 s GOP sampled every 2 s must not skip every other keyframe.
        let slack = (self.interval.as_secs_f64() * 0.1).min(0.25);
        let due = self
            .last_admitted_key
            .is_none_or(|last| t - last >= self.interval.as_secs_f64() - slack || t < last);
        if keyframe && due {
            self.last_admitted_key = Some(t);
            return true;
        }
        false
    }

    /// After units were lost (queue overflow, reconnect): decoding restarts at a keyframe.
    pub fn resync(&mut self) {
        self.in_sync = false;
        self.last_keyframe = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analysed(sampling: Sampling, frames: usize, fps: f64, gop: usize) -> Vec<usize> {
        let mut sampler = Sampler::new(sampling);
        (0..frames)
            .filter(|&i| {
                let pts = Some(i as f64 / fps);
                sampler.decode_wanted(i % gop == 0, pts) && sampler.analyse_wanted(pts)
            })
            .collect()
    }

    #[test]
    fn every_nth_frame() {
        assert_eq!(analysed(Sampling::EveryNth(3), 10, 25.0, 50), [0, 3, 6, 9]);
    }

    #[test]
    fn one_frame_per_interval_without_drift() {
        let got = analysed(Sampling::Interval(Duration::from_millis(400)), 50, 25.0, 50);
        assert_eq!(got, [0, 10, 20, 30, 40]);
    }

    #[test]
    fn keyframes_only_skips_non_key_units_and_honours_interval() {
        let all_keys = analysed(Sampling::Keyframes { min_interval: None }, 200, 25.0, 50);
        assert_eq!(all_keys, [0, 50, 100, 150]);
        let sparse = Sampling::Keyframes {
            min_interval: Some(Duration::from_secs(3)),
        };
        assert_eq!(analysed(sparse, 400, 25.0, 50), [0, 100, 200, 300]);
    }

    fn admitted(sampler: &mut LiveSampler, seconds: f64, fps: f64, gop: usize) -> Vec<usize> {
        (0..(seconds * fps) as usize)
            .filter(|&i| sampler.admit(i % gop == 0, 1000.0 + i as f64 / fps))
            .collect()
    }

    #[test]
    fn live_sampler_keeps_keyframes_while_the_gop_fits_the_interval() {
        let mut sampler = LiveSampler::new(Duration::from_secs(2), KeyframePolicy::Auto);
        // 25 fps, GOP 1 s: every other keyframe.
        assert_eq!(admitted(&mut sampler, 6.0, 25.0, 25), [0, 50, 100]);
        assert_eq!(sampler.gop(), Some(1.0));
        assert!(sampler.keyframes_only());
        // GOP exactly the interval: every keyframe, despite timestamp jitter.
        let mut sampler = LiveSampler::new(Duration::from_secs(2), KeyframePolicy::Auto);
        assert_eq!(admitted(&mut sampler, 6.0, 25.0, 50), [0, 50, 100]);
    }

    #[test]
    fn live_sampler_decodes_everything_when_the_gop_is_longer_than_the_interval() {
        let mut sampler = LiveSampler::new(Duration::from_secs(2), KeyframePolicy::Auto);
        let got = admitted(&mut sampler, 12.0, 10.0, 40);
        // The first keyframe, then (GOP 4 s measured at the second) every unit.
        assert_eq!(got[0], 0);
        assert_eq!(got[1], 40);
        assert_eq!(got.len(), 1 + 80);
        assert_eq!(
            sampler.sampling(),
            Sampling::Interval(Duration::from_secs(2))
        );
        // A gap: nothing until the next keyframe.
        sampler.resync();
        assert!(!sampler.admit(false, 2000.0));
        assert!(sampler.admit(true, 2000.1));
        assert!(sampler.admit(false, 2000.2));
    }

    #[test]
    fn parses_every_as_frames_or_duration() {
        assert_eq!(
            Sampling::from_options(Some("5"), false),
            Ok(Sampling::EveryNth(5))
        );
        assert_eq!(
            Sampling::from_options(Some("2s"), false),
            Ok(Sampling::Interval(Duration::from_secs(2)))
        );
        assert_eq!(
            Sampling::from_options(None, true),
            Ok(Sampling::Keyframes { min_interval: None })
        );
        assert_eq!(
            Sampling::from_options(Some("1.5s"), false),
            Ok(Sampling::Interval(Duration::from_millis(1500)))
        );
        assert!(Sampling::from_options(Some("0"), false).is_err());
        assert!(Sampling::from_options(Some("5"), true).is_err());
        let soon = Sampling::from_options(Some("soon"), false)
            .unwrap_err()
            .to_string();
        assert!(soon.starts_with("--every `soon`: ") && soon.contains("frame count like 5"));
        assert!(!soon.contains("seconds"), "{soon}");
        // A bare number is frames here, never seconds: a fraction asks for a unit.
        let fraction = Sampling::from_options(Some("1.5"), false)
            .unwrap_err()
            .to_string();
        assert!(fraction.contains("e.g. 1.5s"), "{fraction}");
    }
}
