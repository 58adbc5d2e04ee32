//! `cgbot sim`: simulated RTSP street cameras.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

/// The shared sample clips beside the source tree the binary was built from.
const SHARED_SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/samples");

/// A clip of the shared samples: `$CGBOT_SAMPLES/NAME`, CGBOT_SAMPLES defaulting to the
/// ../shared/samples beside the source tree.
pub fn default_clip(name: &str) -> PathBuf {
    std::env::var_os("CGBOT_SAMPLES")
        .map_or_else(|| PathBuf::from(SHARED_SAMPLES), PathBuf::from)
        .join(name)
}

#[derive(Args)]
pub struct SimArgs {
    /// H.264 or H.265 clip every camera plays in a loop
    /// [default: $CGBOT_SAMPLES/people-walking-1080p-h264.mp4, CGBOT_SAMPLES defaulting to
    /// the ../shared/samples beside the source tree].
    #[arg(long)]
    clip: Option<PathBuf>,
    /// Cameras to serve, as rtsp://BIND:PORT/cam/0 to cam/N-1.
    #[arg(long, default_value_t = 10)]
    cameras: usize,
    /// RTSP port; 0 takes any free port (printed at start).
    #[arg(long, default_value_t = 8554)]
    port: u16,
    /// Address to listen on (RTSP and the RTP/RTCP UDP ports).
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// Require Digest authentication with this user name and --password.
    #[arg(long, requires = "password")]
    user: Option<String>,
    /// The password that goes with --user.
    #[arg(long, requires = "user")]
    password: Option<String>,
    /// Make cameras misbehave, KIND[=VALUE][@camN|@FRACTION|@PERCENT%]: refuse, garbage,
    /// disconnect=DURATION, stall=DURATION, corrupt=FRACTION, slow=DURATION, udp-only,
    /// udp-blocked, mid-picture. Repeatable,
    /// e.g. --fault stall=10s@0.1 --fault refuse@cam3.
    #[arg(long = "fault", value_name = "SPEC")]
    faults: Vec<cgbot::sim::FaultRule>,
    /// Size of every camera's sub stream, rtsp://BIND:PORT/cam/N/sub: the clip scaled
    /// and encoded again at start-up (H.264, same keyframes and timestamps).
    #[arg(long, default_value = "640x360", value_name = "WIDTHxHEIGHT")]
    sub_size: cgbot::sim::SubStream,
    /// Serve this clip as the sub stream instead of scaling the main one.
    #[arg(long, value_name = "FILE", conflicts_with = "sub_size")]
    sub_clip: Option<PathBuf>,
    /// Stop after this long (default: until Ctrl-C).
    #[arg(long, value_parser = cgbot::duration::parse)]
    duration: Option<Duration>,
}

impl SimArgs {
    pub fn run(self) -> Result<()> {
        let clip = self
            .clip
            .unwrap_or_else(|| default_clip("people-walking-1080p-h264.mp4"));
        let mut config = cgbot::sim::SimConfig::new(&clip, self.cameras);
        config.bind = std::net::SocketAddr::new(self.bind, self.port);
        config.sub_stream = match self.sub_clip {
            Some(path) => cgbot::sim::SubStream::Clip(path),
            None => self.sub_size,
        };
        config.credentials = self
            .user
            .zip(self.password)
            .map(|(user, password)| cgbot::sim::Credentials { user, password });
        config.faults = cgbot::sim::FaultPlan::new(self.faults);
        let sim = cgbot::sim::SimHandle::start(config)?;
        eprintln!(
            "serving {} cameras of {} ({}) at {}, sub streams ({}) at .../cam/N/sub",
            self.cameras,
            clip.display(),
            sim.clip().summary(),
            sim.url_range(),
            sim.sub_clip().summary()
        );
        sim.run_until_stopped(self.duration, Duration::from_secs(10), |line| {
            eprintln!("status: {line}")
        });
        sim.shutdown();
        Ok(())
    }
}
