//! Misbehaving cameras on purpose. Street cameras refuse sessions when full, drop
//! connections, freeze with the socket still open, send damaged packets, speak something
//! other than RTSP on port 554, or answer slowly; the robot must survive each, so the
//! simulator can make any camera do any of them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// One way a camera misbehaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultKind {
    /// Answer 503 Service Unavailable and close, as a camera at its session limit does.
    Refuse,
    /// Close the connection this long after PLAY.
    Disconnect(Duration),
    /// This long after PLAY, stop sending media but keep the connection and keep
    /// answering RTSP: the frozen camera that only a media timeout detects.
    Stall(Duration),
    /// Flip bytes in this fraction of RTP payloads: coded picture data is damaged, the
    /// RTP, NAL and fragmentation headers and the parameter sets stay intact.
    Corrupt(f64),
    /// Answer requests with random bytes instead of RTSP, then close.
    Garbage,
    /// Delay every RTSP response by this long.
    Slow(Duration),
    /// Answer SETUP over TCP with 461 Unsupported Transport: media over UDP only, as
    /// VLC's RTSP server does.
    UdpOnly,
    /// Set up UDP sessions but never send their datagrams, as a firewall between camera
    /// and robot that drops UDP does.
    UdpBlocked,
    /// Start each session's media in the middle of a fragmented picture: the first packet
    /// continues a NAL unit whose start was never sent, as VLC's server starts sessions
    /// wherever its running stream is.
    MidPicture,
}

/// Which cameras a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    All,
    Camera(usize),
    /// This fraction of the cameras, spread evenly over the indexes.
    Fraction(f64),
}

/// A fault and the cameras it applies to, written `KIND[=VALUE][@TARGET]`:
/// `refuse@cam3`, `stall=10s@0.1`, `corrupt=0.02@25%`, `slow=2s` (every camera).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultRule {
    pub kind: FaultKind,
    pub target: Target,
}

#[derive(Debug, thiserror::Error)]
#[error("fault `{spec}`: {reason} (write KIND[=VALUE][@camN|@FRACTION|@PERCENT%], KIND one of refuse, disconnect=DURATION, stall=DURATION, corrupt=FRACTION, garbage, slow=DURATION, udp-only, udp-blocked, mid-picture)")]
pub struct FaultParseError {
    spec: String,
    reason: String,
}

impl FromStr for FaultRule {
    type Err = FaultParseError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| FaultParseError {
            spec: spec.to_string(),
            reason,
        };
        let (fault, target) = spec.split_once('@').unwrap_or((spec, ""));
        let (name, value) = fault.split_once('=').unwrap_or((fault, ""));
        let duration = || {
            crate::duration::parse(value)
                .map_err(|e| fail(format!("`{name}` needs a duration: {e}")))
        };
        let kind = match name {
            "refuse" => FaultKind::Refuse,
            "garbage" => FaultKind::Garbage,
            "udp-only" => FaultKind::UdpOnly,
            "udp-blocked" => FaultKind::UdpBlocked,
            "mid-picture" => FaultKind::MidPicture,
            "disconnect" => FaultKind::Disconnect(duration()?),
            "stall" => FaultKind::Stall(duration()?),
            "slow" => FaultKind::Slow(duration()?),
            "corrupt" => FaultKind::Corrupt(
                value
                    .parse()
                    .ok()
                    .filter(|f| (0.0..=1.0).contains(f))
                    .ok_or_else(|| fail("`corrupt` needs a fraction from 0 to 1".into()))?,
            ),
            other => return Err(fail(format!("unknown fault `{other}`"))),
        };
        let takes_value = matches!(
            kind,
            FaultKind::Disconnect(_)
                | FaultKind::Stall(_)
                | FaultKind::Corrupt(_)
                | FaultKind::Slow(_)
        );
        if !takes_value && !value.is_empty() {
            return Err(fail(format!("`{name}` takes no value")));
        }
        let target = if target.is_empty() {
            Target::All
        } else if let Some(index) = target.strip_prefix("cam") {
            Target::Camera(
                index
                    .parse()
                    .map_err(|_| fail(format!("`{target}` is not a camera like cam3")))?,
            )
        } else {
            let (number, scale) = match target.strip_suffix('%') {
                Some(percent) => (percent, 100.0),
                None => (target, 1.0),
            };
            let fraction = number
                .parse::<f64>()
                .ok()
                .map(|n| n / scale)
                .filter(|f| (0.0..=1.0).contains(f))
                .ok_or_else(|| fail(format!("`{target}` is not a fraction of cameras")))?;
            Target::Fraction(fraction)
        };
        Ok(FaultRule { kind, target })
    }
}

/// The faults of one camera, gathered from every rule that selects it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CameraFaults {
    pub refuse: bool,
    pub garbage: bool,
    pub disconnect_after: Option<Duration>,
    pub stall_after: Option<Duration>,
    pub corrupt: Option<f64>,
    pub slow: Option<Duration>,
    pub udp_only: bool,
    pub udp_blocked: bool,
    pub mid_picture: bool,
}

/// Which camera misbehaves how. Assignment is a pure function of the camera index, so a
/// test (or a benchmark run) knows in advance which cameras will fail.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    rules: Vec<FaultRule>,
}

impl FaultPlan {
    pub fn new(rules: Vec<FaultRule>) -> FaultPlan {
        FaultPlan { rules }
    }

    pub fn for_camera(&self, camera: usize) -> CameraFaults {
        let mut faults = CameraFaults::default();
        for (rule_index, rule) in self.rules.iter().enumerate() {
            if !selects(rule.target, rule_index, camera) {
                continue;
            }
            match rule.kind {
                FaultKind::Refuse => faults.refuse = true,
                FaultKind::Garbage => faults.garbage = true,
                FaultKind::Disconnect(after) => faults.disconnect_after = Some(after),
                FaultKind::Stall(after) => faults.stall_after = Some(after),
                FaultKind::Corrupt(fraction) => faults.corrupt = Some(fraction),
                FaultKind::Slow(delay) => faults.slow = Some(delay),
                FaultKind::UdpOnly => faults.udp_only = true,
                FaultKind::UdpBlocked => faults.udp_blocked = true,
                FaultKind::MidPicture => faults.mid_picture = true,
            }
        }
        faults
    }
}

/// Whether rule number `rule_index` picks `camera`. A fraction f picks camera i when
/// ⌊(i+1)·f⌋ > ⌊i·f⌋: every (1/f)-th camera, exactly ⌊n·f⌋ of the first n. Each rule is
/// shifted by its index so that two rules with the same fraction pick different cameras.
fn selects(target: Target, rule_index: usize, camera: usize) -> bool {
    match target {
        Target::All => true,
        Target::Camera(c) => c == camera,
        Target::Fraction(f) => {
            let i = (camera + rule_index) as f64;
            ((i + 1.0) * f).floor() > (i * f).floor()
        }
    }
}

impl fmt::Display for CameraFaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.refuse {
            parts.push("refuse".to_string());
        }
        if self.garbage {
            parts.push("garbage".to_string());
        }
        let human = |d: Duration| humantime::format_duration(d).to_string();
        if let Some(d) = self.disconnect_after {
            parts.push(format!("disconnect after {}", human(d)));
        }
        if let Some(d) = self.stall_after {
            parts.push(format!("stall after {}", human(d)));
        }
        if let Some(fraction) = self.corrupt {
            parts.push(format!("corrupt {fraction} of packets"));
        }
        if let Some(d) = self.slow {
            parts.push(format!("answer {} late", human(d)));
        }
        if self.udp_only {
            parts.push("refuse TCP transport".to_string());
        }
        if self.udp_blocked {
            parts.push("UDP blocked".to_string());
        }
        if self.mid_picture {
            parts.push("start mid-picture".to_string());
        }
        f.write_str(&parts.join(", "))
    }
}

/// A small, fast, seedable generator (SplitMix64) for ids and fault decisions: corrupted
/// packets repeat from run to run for the same camera, which makes failures replayable.
pub(super) struct Rng(u64);

impl Rng {
    pub fn seeded(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Seeded from the clock, for ids that must differ between runs and sessions.
    pub fn from_clock() -> Rng {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Rng(nanos ^ count.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n; n must not be 0.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(specs: &[&str]) -> FaultPlan {
        FaultPlan::new(specs.iter().map(|s| s.parse().unwrap()).collect())
    }

    #[test]
    fn parses_specs() {
        let rule: FaultRule = "stall=10s@0.1".parse().unwrap();
        assert_eq!(rule.kind, FaultKind::Stall(Duration::from_secs(10)));
        assert_eq!(rule.target, Target::Fraction(0.1));
        let rule: FaultRule = "refuse@cam3".parse().unwrap();
        assert_eq!(
            (rule.kind, rule.target),
            (FaultKind::Refuse, Target::Camera(3))
        );
        let rule: FaultRule = "corrupt=0.02@25%".parse().unwrap();
        assert_eq!(
            (rule.kind, rule.target),
            (FaultKind::Corrupt(0.02), Target::Fraction(0.25))
        );
        let rule: FaultRule = "slow=500ms".parse().unwrap();
        assert_eq!(rule.target, Target::All);
        for (spec, kind) in [
            ("udp-only@cam0", FaultKind::UdpOnly),
            ("udp-blocked@cam0", FaultKind::UdpBlocked),
            ("mid-picture@cam0", FaultKind::MidPicture),
        ] {
            assert_eq!(spec.parse::<FaultRule>().unwrap().kind, kind);
        }
        for bad in [
            "stall",
            "stall=soon",
            "melt@cam1",
            "refuse=1s",
            "udp-only=yes",
            "corrupt=2",
            "garbage@cam",
            "refuse@150%",
        ] {
            let err = bad.parse::<FaultRule>().unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn fraction_picks_evenly_spread_cameras() {
        let plan = plan(&["stall=1s@0.1", "refuse@10%", "garbage@cam5"]);
        let stalled: Vec<usize> = (0..100)
            .filter(|&c| plan.for_camera(c).stall_after.is_some())
            .collect();
        assert_eq!(stalled.len(), 10);
        assert_eq!(&stalled[..3], [9, 19, 29]);
        let refused: Vec<usize> = (0..100).filter(|&c| plan.for_camera(c).refuse).collect();
        assert_eq!(refused.len(), 10);
        assert!(
            refused.iter().all(|c| !stalled.contains(c)),
            "same fraction, different cameras"
        );
        assert!(plan.for_camera(5).garbage);
        assert_eq!(plan.for_camera(4), CameraFaults::default());
        let third: Vec<usize> = (0..9)
            .filter(|&c| self::plan(&["slow=1s@0.34"]).for_camera(c).slow.is_some())
            .collect();
        assert_eq!(third, [2, 5, 8]);
        assert!((0..50).all(|c| self::plan(&["garbage@1"]).for_camera(c).garbage));
        assert!((0..50).all(|c| !self::plan(&["garbage@0"]).for_camera(c).garbage));
    }

    #[test]
    fn rng_is_deterministic_per_seed() {
        let draws = |seed| {
            let mut rng = Rng::seeded(seed);
            (0..4).map(|_| rng.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draws(3), draws(3));
        assert_ne!(draws(3), draws(4));
        let mut rng = Rng::seeded(1);
        assert!((0..1000)
            .map(|_| rng.unit())
            .all(|u| (0.0..1.0).contains(&u)));
    }
}
