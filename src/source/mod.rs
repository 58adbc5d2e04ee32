//! Source stage: where access units come from. Files (MP4, MKV, raw Annex-B, still
//! images) are demuxed with FFmpeg's libavformat, live cameras are played over RTSP with
//! retina ([`rtsp`]); every source yields the same [`AccessUnit`]s and [`StreamInfo`] for
//! the decode stage.

mod file;
pub mod rtsp;

pub use file::FileSource;
pub use rtsp::{LiveStream, LiveUnit, RtspError, RtspOptions, RtspSession, Transport};

use futures_util::future::BoxFuture;

use ffmpeg_next as ffmpeg;
use std::path::PathBuf;

/// One coded picture (or still image) of a stream, as the demuxer or depacketiser gave it.
pub struct AccessUnit {
    /// Presentation time in seconds, when the container records one.
    pub pts: Option<f64>,
    pub keyframe: bool,
    pub packet: ffmpeg::Packet,
}

/// What the decoder needs to know about a stream.
pub struct StreamInfo {
    pub codec: ffmpeg::codec::Id,
    pub parameters: ffmpeg::codec::Parameters,
    pub width: u32,
    pub height: u32,
    /// Seconds per tick of the stream's timestamps.
    pub time_base: ffmpeg::Rational,
    pub frame_rate: Option<f64>,
    /// Length in seconds, when the container says.
    pub duration: Option<f64>,
}

/// A playing live session, as the daemon uses it: [`RtspSession`], or a scripted one in
/// tests that drive reconnects, stalls and patrol visits in simulated time.
pub trait LiveSession: Send {
    /// The next decodable picture; an error ends the session.
    fn next_unit(&mut self) -> BoxFuture<'_, Result<LiveUnit, RtspError>>;
    /// The transport the session plays over, which may be the other one than asked for.
    fn transport(&self) -> Transport;
    /// Ends the session (TEARDOWN for a camera).
    fn close(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// Opens live sessions: the daemon's seam between its camera tasks and the network.
pub trait Opener: Send + Sync {
    fn connect<'a>(
        &'a self,
        url: &'a str,
        options: &'a RtspOptions,
    ) -> BoxFuture<'a, Result<Box<dyn LiveSession>, RtspError>>;
}

/// Opens real RTSP sessions with retina.
pub struct RtspOpener;

impl Opener for RtspOpener {
    fn connect<'a>(
        &'a self,
        url: &'a str,
        options: &'a RtspOptions,
    ) -> BoxFuture<'a, Result<Box<dyn LiveSession>, RtspError>> {
        Box::pin(async move {
            let session = RtspSession::connect(url, options).await?;
            Ok(Box::new(session) as Box<dyn LiveSession>)
        })
    }
}

impl LiveSession for RtspSession {
    fn next_unit(&mut self) -> BoxFuture<'_, Result<LiveUnit, RtspError>> {
        Box::pin(RtspSession::next_unit(self))
    }

    fn transport(&self) -> Transport {
        RtspSession::transport(self)
    }

    fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(RtspSession::close(*self))
    }
}

/// A stream's decoder parameters, shareable across threads: every unit carries them, so
/// a decoder is rebuilt exactly when a camera changes its parameters.
pub trait StreamParameters: Send + Sync {
    fn stream_info(&self) -> StreamInfo;
}

impl StreamParameters for LiveStream {
    fn stream_info(&self) -> StreamInfo {
        LiveStream::stream_info(self)
    }
}

/// A file's stream parameters. FFmpeg's parameter struct may move between threads but not
/// be shared, so readers get a copy.
pub struct FileStream(std::sync::Mutex<StreamInfo>);

impl FileStream {
    pub fn new(info: &StreamInfo) -> Self {
        Self(std::sync::Mutex::new(info.copy()))
    }
}

impl StreamParameters for FileStream {
    fn stream_info(&self) -> StreamInfo {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).copy()
    }
}

impl StreamInfo {
    /// A copy owning its own codec parameters.
    fn copy(&self) -> StreamInfo {
        StreamInfo {
            codec: self.codec,
            parameters: self.parameters.clone(),
            width: self.width,
            height: self.height,
            time_base: self.time_base,
            frame_rate: self.frame_rate,
            duration: self.duration,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: no such file")]
    Missing { path: PathBuf },
    #[error("{path}: cannot open as video or image: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("{path}: contains no video stream")]
    NoVideo { path: PathBuf },
    #[error("{path}: read failed before any frame: {reason}")]
    Read { path: PathBuf, reason: String },
}

/// A timestamp in seconds. One division of exact integers, so 300 ticks of 1/10 s print
/// as 30.0, not 30.000000000000004.
pub fn seconds(ticks: i64, time_base: ffmpeg::Rational) -> f64 {
    (ticks as f64 * f64::from(time_base.numerator())) / f64::from(time_base.denominator())
}

/// Process-wide FFmpeg setup: quiet its own logging, since we report decode problems
/// ourselves with the file and timestamp attached.
pub fn init_ffmpeg() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ffmpeg::init();
        let level = if std::env::var_os("CGBOT_FFMPEG_LOG").is_some() {
            ffmpeg::util::log::Level::Warning
        } else {
            ffmpeg::util::log::Level::Quiet
        };
        ffmpeg::util::log::set_level(level);
    });
}
