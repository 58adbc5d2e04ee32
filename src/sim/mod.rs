//! Camera simulator: a real RTSP server that plays a recorded clip as any number of
//! street cameras, so that the robot (and its tests and benchmarks) can be run against
//! thousands of cameras without one.
//!
//! Every camera `i` is `rtsp://HOST:PORT/cam/<i>` on one port, and its sub stream
//! `rtsp://HOST:PORT/cam/<i>/sub`: a lower-resolution rendition of the clip made once at
//! start-up (or a second clip), on the same timeline and keyframes. The clip is demuxed and cut
//! into RTP packets once ([`Clip`]) and shared by every session; a session only writes its
//! own RTP headers and paces the packets by the wall clock, looping the clip with
//! continuous sequence numbers and timestamps. Cameras play the clip at different offsets
//! (as real cameras show different moments), and a new session starts at a keyframe so
//! that the client can decode at once. Media goes interleaved on the RTSP connection or
//! over UDP; Digest authentication and a [`FaultPlan`] make cameras behave like the
//! difficult ones of a real deployment.
//!
//! ```no_run
//! # fn main() -> Result<(), cgbot::sim::SimError> {
//! let mut config = cgbot::sim::SimConfig::new("people-walking.mp4", 100);
//! config.faults = cgbot::sim::FaultPlan::new(vec!["stall=10s@0.1".parse().unwrap()]);
//! let sim = cgbot::sim::SimHandle::start(config)?;
//! println!("camera 7 is {}", sim.url(7));
//! sim.shutdown();
//! # Ok(())
//! # }
//! ```

mod auth;
mod clip;
mod faults;
mod rendition;
mod rtp;
mod rtsp;

pub use auth::Credentials;
pub use clip::Clip;
pub use faults::{CameraFaults, FaultKind, FaultParseError, FaultPlan, FaultRule, Target};
pub use rtp::Codec;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::source::SourceError;

/// What to serve and how.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// An H.264 or H.265 clip (MP4, MKV, raw Annex-B…), played in a loop by every camera.
    pub clip: PathBuf,
    pub cameras: usize,
    /// Where to listen for RTSP; port 0 takes any free port (see [`SimHandle::port`]).
    pub bind: SocketAddr,
    /// Require Digest authentication with these credentials.
    pub credentials: Option<Credentials>,
    pub faults: FaultPlan,
    /// How long a UDP session plays on without a request from its client.
    pub session_timeout: Duration,
    /// What `/cam/<i>/sub` serves.
    pub sub_stream: SubStream,
}

/// The cameras' sub stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubStream {
    /// The clip scaled to this size (even numbers), encoded again as H.264.
    Scaled { width: u32, height: u32 },
    /// A second clip, played on the same timeline as the main one.
    Clip(PathBuf),
}

impl Default for SubStream {
    /// 640×360, the commonest sub-stream size of street cameras.
    fn default() -> Self {
        SubStream::Scaled {
            width: 640,
            height: 360,
        }
    }
}

impl std::str::FromStr for SubStream {
    type Err = String;

    /// `WIDTHxHEIGHT`, e.g. `640x360`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a size like 640x360");
        let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
        let width: u32 = w.trim().parse().map_err(|_| bad())?;
        let height: u32 = h.trim().parse().map_err(|_| bad())?;
        if width == 0 || height == 0 || width % 2 == 1 || height % 2 == 1 {
            return Err(format!("`{s}`: both sides must be even and not zero"));
        }
        Ok(SubStream::Scaled { width, height })
    }
}

/// Sub-stream renditions made in this process, by clip and size: tests and benches start
/// many simulators on the same clip, and encoding it again each time would cost seconds.
fn rendition(path: &std::path::Path, width: u32, height: u32) -> Result<Arc<Clip>, SimError> {
    type Key = (PathBuf, u32, u32);
    static MADE: Mutex<Vec<(Key, Arc<Clip>)>> = Mutex::new(Vec::new());
    let key = (path.to_path_buf(), width, height);
    let mut made = MADE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, clip)) = made.iter().find(|(k, _)| *k == key) {
        return Ok(clip.clone());
    }
    let clip = Arc::new(rendition::prepare(path, width, height)?);
    made.push((key, clip.clone()));
    Ok(clip)
}

impl SimConfig {
    /// `cameras` cameras playing `clip` on 127.0.0.1, any free port, no authentication,
    /// no faults, 60 s session timeout.
    pub fn new(clip: impl Into<PathBuf>, cameras: usize) -> SimConfig {
        SimConfig {
            clip: clip.into(),
            cameras,
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            credentials: None,
            faults: FaultPlan::default(),
            session_timeout: Duration::from_secs(60),
            sub_stream: SubStream::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{path}: the video is {codec}; the simulator serves H.264 and H.265 only")]
    UnsupportedCodec { path: PathBuf, codec: String },
    #[error("{path}: cannot be served: {reason}")]
    Clip { path: PathBuf, reason: String },
    #[error("cannot listen for RTSP on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("cannot open UDP ports for RTP and RTCP on {ip}: {source}")]
    UdpPorts { ip: IpAddr, source: io::Error },
    #[error("cannot start the simulator's runtime: {0}")]
    Runtime(io::Error),
    #[error("the simulator needs at least one camera")]
    NoCameras,
}

/// Counters shared by all connections; updated once per access unit, not per packet.
#[derive(Default)]
struct Stats {
    connections: AtomicU64,
    sessions_started: AtomicU64,
    sessions_playing: AtomicU64,
    packets: AtomicU64,
    bytes: AtomicU64,
}

/// The simulator's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// TCP connections accepted so far.
    pub connections: u64,
    /// Sessions that reached PLAY so far.
    pub sessions_started: u64,
    /// Sessions sending media now.
    pub sessions_playing: u64,
    /// RTP packets sent so far.
    pub packets_sent: u64,
    /// RTP bytes (headers and payloads) sent so far.
    pub bytes_sent: u64,
}

/// A running simulator. It serves on its own threads until [`SimHandle::shutdown`] or drop.
pub struct SimHandle {
    addr: SocketAddr,
    cameras: usize,
    clip: Arc<Clip>,
    sub_clip: Arc<Clip>,
    stats: Arc<Stats>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl SimHandle {
    /// Prepares the clip (reading the whole file), binds the RTSP port and the shared
    /// RTP/RTCP UDP ports, and starts serving.
    pub fn start(config: SimConfig) -> Result<SimHandle, SimError> {
        if config.cameras == 0 {
            return Err(SimError::NoCameras);
        }
        let clip = Arc::new(Clip::prepare(&config.clip)?);
        let sub_clip = match &config.sub_stream {
            SubStream::Scaled { width, height } => rendition(&config.clip, *width, *height)?,
            SubStream::Clip(path) => Arc::new(Clip::prepare(path)?),
        };
        let listener =
            std::net::TcpListener::bind(config.bind).map_err(|source| SimError::Listen {
                addr: config.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SimError::Listen {
            addr: config.bind,
            source,
        })?;
        let udp_error = |source| SimError::UdpPorts {
            ip: config.bind.ip(),
            source,
        };
        let (udp_rtp, udp_rtcp) = bind_udp_pair(config.bind.ip()).map_err(udp_error)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("cgbot-sim")
            .build()
            .map_err(SimError::Runtime)?;
        let stats = Arc::new(Stats::default());
        // Turning std sockets into tokio ones registers them with this runtime.
        let entered = runtime.enter();
        let listener =
            tokio_listener(listener).map_err(|source| SimError::Listen { addr, source })?;
        let server = Arc::new(rtsp::Server {
            clip: clip.clone(),
            sub_clip: sub_clip.clone(),
            cameras: config.cameras,
            credentials: config.credentials,
            faults: config.faults,
            session_timeout: config.session_timeout,
            started: tokio::time::Instant::now(),
            udp_rtp: tokio_udp(udp_rtp).map_err(udp_error)?,
            udp_rtcp: tokio_udp(udp_rtcp).map_err(udp_error)?,
            stats: stats.clone(),
            sessions: Mutex::new(HashMap::new()),
        });
        drop(entered);
        runtime.spawn(rtsp::serve(server, listener));
        tracing::info!(%addr, cameras = config.cameras, clip = %clip.path.display(), sub = %sub_clip.summary(), "camera simulator started");
        Ok(SimHandle {
            addr,
            cameras: config.cameras,
            clip,
            sub_clip,
            stats,
            runtime: Some(runtime),
        })
    }

    /// The address RTSP is served on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The URL of camera `camera` (without credentials).
    pub fn url(&self, camera: usize) -> String {
        format!("rtsp://{}/cam/{camera}", self.addr)
    }

    /// The URL of camera `camera`'s sub stream (without credentials).
    pub fn sub_url(&self, camera: usize) -> String {
        format!("rtsp://{}/cam/{camera}/sub", self.addr)
    }

    /// All cameras, for people: `rtsp://127.0.0.1:8554/cam/0..9`.
    pub fn url_range(&self) -> String {
        format!("rtsp://{}/cam/0..{}", self.addr, self.cameras - 1)
    }

    pub fn clip(&self) -> &Clip {
        &self.clip
    }

    /// What the sub streams play.
    pub fn sub_clip(&self) -> &Clip {
        &self.sub_clip
    }

    pub fn stats(&self) -> StatsSnapshot {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StatsSnapshot {
            connections: read(&self.stats.connections),
            sessions_started: read(&self.stats.sessions_started),
            sessions_playing: read(&self.stats.sessions_playing),
            packets_sent: read(&self.stats.packets),
            bytes_sent: read(&self.stats.bytes),
        }
    }

    /// Serves until SIGINT or SIGTERM, or until `limit` has passed, calling `status` with
    /// a one-line report every `status_every`. Blocks; call it outside any async runtime.
    pub fn run_until_stopped(
        &self,
        limit: Option<Duration>,
        status_every: Duration,
        mut status: impl FnMut(String),
    ) {
        let Some(runtime) = &self.runtime else {
            return;
        };
        runtime.block_on(async {
            let stop = async {
                let limit = async {
                    match limit {
                        Some(limit) => tokio::time::sleep(limit).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    () = terminated() => {}
                    () = limit => {}
                }
            };
            tokio::pin!(stop);
            let mut ticker = tokio::time::interval(status_every);
            ticker.tick().await;
            let mut previous = (self.stats(), Instant::now());
            loop {
                tokio::select! {
                    () = &mut stop => break,
                    _ = ticker.tick() => {
                        let now = (self.stats(), Instant::now());
                        status(status_line(&previous.0, &now.0, now.1 - previous.1));
                        previous = now;
                    }
                }
            }
        });
    }

    /// Stops serving: every connection is closed, every session ends.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Dropping the tasks closes their sockets. Waiting is not allowed inside
            // another runtime, where the tasks are dropped in the background instead.
            if tokio::runtime::Handle::try_current().is_ok() {
                runtime.shutdown_background();
            } else {
                runtime.shutdown_timeout(Duration::from_secs(1));
            }
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// "12 sessions playing, 3100 packets/s, 4.1 MB/s, 40 connections so far".
fn status_line(before: &StatsSnapshot, after: &StatsSnapshot, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64().max(1e-3);
    let packets = (after.packets_sent - before.packets_sent) as f64 / seconds;
    let bytes = (after.bytes_sent - before.bytes_sent) as f64 / seconds;
    format!(
        "{} sessions playing, {packets:.0} packets/s, {:.1} MB/s, {} connections so far",
        after.sessions_playing,
        bytes / 1e6,
        after.connections
    )
}

/// Resolves on SIGTERM (what service managers send); never elsewhere than Unix.
async fn terminated() {
    #[cfg(unix)]
    if let Ok(mut signal) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        signal.recv().await;
        return;
    }
    std::future::pending::<()>().await
}

fn tokio_listener(listener: std::net::TcpListener) -> io::Result<tokio::net::TcpListener> {
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

fn tokio_udp(socket: std::net::UdpSocket) -> io::Result<tokio::net::UdpSocket> {
    socket.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(socket)
}

/// Two UDP sockets on adjacent ports, RTP on the lower, as RTSP's `server_port=a-b` says.
fn bind_udp_pair(ip: IpAddr) -> io::Result<(std::net::UdpSocket, std::net::UdpSocket)> {
    let mut last_error = None;
    for _ in 0..64 {
        let rtp = std::net::UdpSocket::bind((ip, 0))?;
        let port = rtp.local_addr()?.port();
        if port == u16::MAX {
            continue;
        }
        match std::net::UdpSocket::bind((ip, port + 1)) {
            Ok(rtcp) => return Ok((rtp, rtcp)),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::ErrorKind::AddrInUse.into()))
}
