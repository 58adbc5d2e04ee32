//! Live cameras over RTSP, through `retina`: one [`RtspSession`] per camera connection
//! yields the coded pictures of the camera's H.264 or H.265 video as [`LiveUnit`]s, with
//! the codec parameters they decode with and a wall-clock time for each.
//!
//! Sessions are opened and closed all day (patrol mode), and many cameras — live555-based
//! ones especially — allow only a few sessions and refuse new ones while stale ones
//! linger. So every session is torn down (`TEARDOWN`, retina's teardown policy), and
//! sessions of the same camera URL share a retina [`SessionGroup`]: a new connection
//! first waits, within bounds, for the camera's earlier sessions to be torn down.
//!
//! Cameras differ in the transports they take: VLC's RTSP server answers SETUP over TCP
//! with `461 Unsupported Transport`, and a firewall may drop UDP silently. So a session
//! that cannot have its configured transport tries the other one ([`RtspOptions::transport`]).
//!
//! Camera URLs may carry credentials (`rtsp://user:pass@host/…`). They are taken out of
//! the URL before retina sees it and handed over as Digest credentials; errors and logs
//! only ever name the URL with the user and password replaced by `***`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use ffmpeg_next as ffmpeg;
use futures_util::StreamExt;
use retina::client::{
    Credentials, Demuxed, Described, PlayOptions, Session, SessionGroup, SessionOptions,
    SetupOptions, TeardownPolicy,
};
use retina::codec::{
    CodecItem, FrameFormat, ParameterSetInsertion, ParametersRef, VideoFrame, VideoParameters,
};
use tokio::time::Instant;
use url::Url;

use super::{AccessUnit, StreamInfo};
use crate::redact::redact_url;

/// How RTP reaches us.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Interleaved on the RTSP connection: passes NAT and firewalls, loses nothing.
    #[default]
    Tcp,
    /// RTP and RTCP datagrams: no retransmission delays, but lost packets stay lost, and
    /// retina has no reorder buffer (out-of-order packets count as lost). For LANs.
    Udp,
}

impl Transport {
    pub fn other(self) -> Transport {
        match self {
            Transport::Tcp => Transport::Udp,
            Transport::Udp => Transport::Tcp,
        }
    }

    /// As the configuration writes it.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }

    fn retina(self) -> retina::client::Transport {
        match self {
            Transport::Tcp => retina::client::Transport::Tcp(Default::default()),
            Transport::Udp => retina::client::Transport::Udp(Default::default()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RtspOptions {
    /// The transport tried first. When the camera answers its SETUP with 461 Unsupported
    /// Transport, or (UDP) nothing arrives within `connect_timeout` after PLAY, the session
    /// is made again over the other one; [`RtspSession::transport`] says which worked.
    pub transport: Transport,
    /// DESCRIBE, SETUP and PLAY together must finish within this. It also bounds the
    /// wait for earlier sessions of the camera to be torn down (before connecting) and
    /// for this one's TEARDOWN (on close).
    pub connect_timeout: Duration,
    /// No video frame for this long ends the session with [`RtspError::Stalled`]: a
    /// frozen camera keeps its connection open and goes silent.
    pub frame_timeout: Duration,
}

impl Default for RtspOptions {
    fn default() -> Self {
        RtspOptions {
            transport: Transport::Tcp,
            connect_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(10),
        }
    }
}

/// Every variant names the camera by its URL without credentials.
#[derive(Debug, thiserror::Error)]
pub enum RtspError {
    #[error("{url}: not a camera URL: {reason}")]
    BadUrl { url: String, reason: String },
    /// Refused, unreachable, or closed before answering.
    #[error("{url}: cannot connect: {reason}")]
    Connect { url: String, reason: String },
    /// No answer to a step of the handshake in time.
    #[error("{url}: no answer to {method} within {}", humantime::format_duration(*.after))]
    Timeout {
        url: String,
        method: &'static str,
        after: Duration,
    },
    #[error("{url}: authentication failed: {}", if *.credentials_given {
        "the camera rejected the user name and password"
    } else {
        "the camera asks for a user name and password, and the URL has none"
    })]
    Unauthorized {
        url: String,
        credentials_given: bool,
    },
    /// The camera answered with an error status (other than 401).
    #[error("{url}: the camera answered {method} with {status}{}", status_phrase(*.status))]
    Status {
        url: String,
        method: &'static str,
        status: u16,
    },
    /// The camera sent something that is not the RTSP, SDP or RTP it should have.
    #[error("{url}: not a working RTSP camera: {reason}")]
    Protocol { url: String, reason: String },
    #[error("{url}: no H.264 or H.265 video; the camera offers {offered}")]
    UnsupportedCodec { url: String, offered: String },
    #[error("{url}: no video for {}: the camera stalled", humantime::format_duration(*.after))]
    Stalled { url: String, after: Duration },
    /// A UDP session that received nothing at all: a firewall or NAT drops the datagrams.
    #[error("{url}: nothing arrived over UDP within {} of PLAY", humantime::format_duration(*.after))]
    UdpSilent { url: String, after: Duration },
    /// The camera closed the connection or it broke.
    #[error("{url}: stream ended: {reason}")]
    Ended { url: String, reason: String },
}

/// Codec parameters of a live stream: plain data, `Send + Sync`, so it can travel in an
/// `Arc` with every unit that decodes with it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveStream {
    pub codec: ffmpeg::codec::Id,
    /// `avcC` (H.264) or `hvcC` (H.265) decoder configuration, as retina builds it.
    pub extradata: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub frame_rate: Option<f64>,
}

impl LiveStream {
    fn new(codec: ffmpeg::codec::Id, video: &VideoParameters, sdp_rate: Option<f32>) -> Self {
        let (width, height) = video.pixel_dimensions();
        // The SDP's `a=framerate` is what the camera says; retina's reading of the SPS
        // timing info is approximate.
        let sps_rate = video.frame_rate().and_then(|(per_frame, clock)| {
            (per_frame > 0).then(|| f64::from(clock) / f64::from(per_frame))
        });
        LiveStream {
            codec,
            extradata: video.extra_data().to_vec(),
            width,
            height,
            frame_rate: sdp_rate.map(f64::from).or(sps_rate),
        }
    }

    /// What the decode stage needs: codec parameters with the extradata, timestamps in
    /// microseconds.
    pub fn stream_info(&self) -> StreamInfo {
        let mut parameters = ffmpeg::codec::Parameters::new();
        parameters.set_medium(ffmpeg::media::Type::Video);
        parameters.set_id(self.codec);
        // SAFETY: `parameters` owns a freshly allocated AVCodecParameters, freed (with its
        // extradata) on drop. FFmpeg requires extradata from av_malloc with zeroed padding
        // after it, which av_mallocz provides.
        unsafe {
            let raw = &mut *parameters.as_mut_ptr();
            raw.width = i32::try_from(self.width).unwrap_or(0);
            raw.height = i32::try_from(self.height).unwrap_or(0);
            let padding = ffmpeg::ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
            let buffer = ffmpeg::ffi::av_mallocz(self.extradata.len() + padding).cast::<u8>();
            if !buffer.is_null() {
                std::ptr::copy_nonoverlapping(
                    self.extradata.as_ptr(),
                    buffer,
                    self.extradata.len(),
                );
                raw.extradata = buffer;
                raw.extradata_size = self.extradata.len() as i32;
            }
        }
        StreamInfo {
            codec: self.codec,
            parameters,
            width: self.width,
            height: self.height,
            time_base: ffmpeg::Rational::new(1, MICROS_PER_SECOND as i32),
            frame_rate: self.frame_rate,
            duration: None,
        }
    }
}

const MICROS_PER_SECOND: i64 = 1_000_000;

/// One coded picture of a live stream.
pub struct LiveUnit {
    /// Unix seconds of this picture's presentation: the wall clock when the session
    /// started playing plus the RTP time elapsed since the first frame. Units come in
    /// decode order, so with B-frames this goes back and forth a little.
    pub wall_time: f64,
    pub keyframe: bool,
    /// The parameters this unit decodes with; a new `Arc` when the camera changes them.
    pub stream: Arc<LiveStream>,
    /// Length-prefixed NAL units (4 bytes, big-endian), decodable with
    /// `stream.extradata`; keyframes also carry the parameter sets.
    pub data: Vec<u8>,
    /// RTP packets lost just before this picture (UDP); the picture may be damaged.
    pub lost_packets: u16,
}

impl LiveUnit {
    /// The unit as the decode stage takes it, timestamped in microseconds of wall time
    /// (see [`LiveStream::stream_info`]). RTP carries presentation times only, so the
    /// packet has no decode timestamp.
    pub fn access_unit(&self) -> AccessUnit {
        let mut packet = ffmpeg::Packet::copy(&self.data);
        packet.set_pts(Some(
            (self.wall_time * MICROS_PER_SECOND as f64).round() as i64
        ));
        if self.keyframe {
            packet.set_flags(ffmpeg::packet::Flags::KEY);
        }
        AccessUnit {
            pts: Some(self.wall_time),
            keyframe: self.keyframe,
            packet,
        }
    }
}

/// A playing camera session. Call [`RtspSession::next_unit`] continually: retina sends
/// the keepalives that hold the session open, and reads the connection, only while it
/// is polled. End it with [`RtspSession::close`].
pub struct RtspSession {
    /// The camera URL without credentials, for errors and logs.
    url: String,
    demuxed: Demuxed,
    transport: Transport,
    /// What the stream yielded while the session waited for UDP to deliver, not yet read.
    first_item: Option<Result<CodecItem, retina::Error>>,
    /// The SDP's parameter sets, read leniently, when retina could not read them: they
    /// are used until the camera sends its own in band.
    sdp_parameters: Option<VideoParameters>,
    /// Fragments skipped because their start never arrived (see [`is_unstarted_fragment`]).
    unstarted_fragments: u64,
    /// The one stream set up.
    stream_index: usize,
    codec: ffmpeg::codec::Id,
    sdp_frame_rate: Option<f32>,
    group: Arc<SessionGroup>,
    options: RtspOptions,
    /// Unix seconds when PLAY succeeded.
    playing_since: f64,
    /// RTP time of the first frame, in clock ticks.
    first_timestamp: Option<i64>,
    stream: Option<Arc<LiveStream>>,
    /// Nothing before the first keyframe can be decoded.
    keyframe_seen: bool,
    last_frame: Instant,
}

impl RtspSession {
    /// DESCRIBE, SETUP of the first H.264 or H.265 video stream, PLAY, over
    /// `options.transport` or, when the camera refuses that or UDP delivers nothing, the
    /// other transport. When earlier sessions of this camera URL are still being torn
    /// down, first waits for that, up to `connect_timeout`.
    pub async fn connect(url: &str, options: &RtspOptions) -> Result<RtspSession, RtspError> {
        let first = options.transport;
        match Self::connect_over(url, options, first).await {
            Err(e) if transport_unusable(&e) => {
                tracing::debug!(error = %e, fallback = first.other().name(), "trying the other transport");
                Self::connect_over(url, options, first.other()).await
            }
            connected => connected,
        }
    }

    /// DESCRIBE, SETUP and PLAY over `transport`; over UDP, also waits for something to
    /// arrive.
    async fn connect_over(
        url: &str,
        options: &RtspOptions,
        transport: Transport,
    ) -> Result<RtspSession, RtspError> {
        let shown = redact_url(url);
        let (target, credentials) = split_credentials(url).map_err(|reason| RtspError::BadUrl {
            url: shown.clone(),
            reason,
        })?;
        let group = session_group(&target);
        let earlier = group.stale_sessions();
        if earlier.num_sessions > 0 {
            tracing::debug!(camera = %shown, sessions = earlier.num_sessions, "waiting for earlier sessions to be torn down");
            let waited = tokio::time::timeout(
                options.connect_timeout,
                group.await_stale_sessions(&earlier),
            );
            if waited.await.is_err() {
                tracing::info!(camera = %shown, "earlier sessions are not torn down yet; connecting anyway");
            }
        }
        let handshake = Handshake {
            url: &shown,
            deadline: Instant::now() + options.connect_timeout,
            timeout: options.connect_timeout,
            credentials_given: credentials.is_some(),
        };
        let session_options = SessionOptions::default()
            .creds(credentials)
            .session_group(group.clone())
            .teardown(TeardownPolicy::Auto)
            .user_agent(format!("cgbot/{}", env!("CARGO_PKG_VERSION")));
        let mut session = handshake
            .step(Step::Describe, Session::describe(target, session_options))
            .await?;
        let (stream_index, codec, sdp_frame_rate) =
            choose_video(&session).ok_or_else(|| RtspError::UnsupportedCodec {
                url: shown.clone(),
                offered: offered_streams(&session),
            })?;
        let sdp_parameters = lenient_sdp_parameters(&session, stream_index);
        if sdp_parameters.is_some() {
            tracing::debug!(camera = %shown, "SDP parameter sets read leniently (retina refused the fmtp)");
        }
        let setup = SetupOptions::default()
            .transport(transport.retina())
            .frame_format(FrameFormat {
                // Length-prefixed NAL units with avcC/hvcC extradata, as FFmpeg takes MP4
                // samples; parameter sets repeated in keyframes, so that a decoder can
                // start at any of them.
                parameter_set_insertion: ParameterSetInsertion::EachKeyFrame,
                ..FrameFormat::MP4
            });
        handshake
            .step(Step::Setup, session.setup(stream_index, setup))
            .await?;
        let playing = handshake
            .step(Step::Play, session.play(PlayOptions::default()))
            .await?;
        let demuxed = playing
            .demuxed()
            .map_err(|e| handshake.error(Step::Play, &e))?;
        tracing::debug!(camera = %shown, transport = transport.name(), ?codec, "RTSP session playing");
        let mut session = RtspSession {
            url: shown,
            demuxed,
            transport,
            first_item: None,
            sdp_parameters,
            unstarted_fragments: 0,
            stream_index,
            codec,
            sdp_frame_rate,
            group,
            options: options.clone(),
            playing_since: crate::clock::unix_now(),
            first_timestamp: None,
            stream: None,
            keyframe_seen: false,
            last_frame: Instant::now(),
        };
        if transport == Transport::Udp {
            // Over TCP, silence is a stall; over UDP it may be a firewall, which the other
            // transport gets through.
            let first = tokio::time::timeout(options.connect_timeout, session.demuxed.next());
            match first.await {
                Ok(item) => session.first_item = item,
                Err(_) => {
                    let error = RtspError::UdpSilent {
                        url: session.url.clone(),
                        after: options.connect_timeout,
                    };
                    session.close().await;
                    return Err(error);
                }
            }
        }
        Ok(session)
    }

    /// The transport this session plays over.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The next decodable picture. Waits for it; [`RtspError::Stalled`] when no video
    /// frame arrived for `frame_timeout`, [`RtspError::Ended`] when the camera closed the
    /// connection. After an error the session is over: close it.
    pub async fn next_unit(&mut self) -> Result<LiveUnit, RtspError> {
        loop {
            let deadline = self.last_frame + self.options.frame_timeout;
            let next = match self.first_item.take() {
                Some(item) => Ok(Some(item)),
                None => tokio::time::timeout_at(deadline, self.demuxed.next()).await,
            };
            let item = match next {
                Err(_) => {
                    return Err(RtspError::Stalled {
                        url: self.url.clone(),
                        after: self.options.frame_timeout,
                    })
                }
                Ok(None) => {
                    return Err(RtspError::Ended {
                        url: self.url.clone(),
                        reason: "the camera closed the connection".into(),
                    })
                }
                Ok(Some(Err(e))) if is_unstarted_fragment(&e) => {
                    // Joining a stream mid-picture: the picture is lost, not the session.
                    self.unstarted_fragments += 1;
                    if self.unstarted_fragments == 1 {
                        tracing::debug!(camera = %self.url, error = %detail(&e), "skipping a fragment whose start never arrived");
                    }
                    continue;
                }
                Ok(Some(Err(e))) => return Err(stream_error(self.url.clone(), &e)),
                Ok(Some(Ok(item))) => item,
            };
            // RTCP sender reports come through here too; only pictures count.
            if let CodecItem::VideoFrame(frame) = item {
                self.last_frame = Instant::now();
                if let Some(unit) = self.unit(frame) {
                    return Ok(unit);
                }
            }
        }
    }

    /// Tears the session down: retina sends TEARDOWN (on the session's connection, or a
    /// new one for UDP sessions), and this waits up to `connect_timeout` for it to be
    /// done. Retina keeps trying in the background after that, until the session would
    /// have expired on the camera anyway.
    pub async fn close(self) {
        let RtspSession {
            url,
            demuxed,
            group,
            options,
            ..
        } = self;
        drop(demuxed);
        let pending = group.stale_sessions();
        let torn_down = tokio::time::timeout(
            options.connect_timeout,
            group.await_stale_sessions(&pending),
        );
        if torn_down.await.is_err() {
            tracing::debug!(camera = %url, "TEARDOWN not confirmed in time; retina keeps trying");
        }
    }

    /// Turns a depacketised frame into a unit, or `None` while it cannot be decoded yet.
    fn unit(&mut self, frame: VideoFrame) -> Option<LiveUnit> {
        let timestamp = frame.timestamp();
        let first = *self.first_timestamp.get_or_insert(timestamp.elapsed());
        if frame.has_new_parameters() || self.stream.is_none() {
            // Cameras whose SDP lacks the parameter sets send them in band; until then
            // retina has none and nothing can be decoded.
            if let Some(video) = self.video_parameters().or(self.sdp_parameters.as_ref()) {
                let stream = LiveStream::new(self.codec, video, self.sdp_frame_rate);
                if self.stream.as_deref() != Some(&stream) {
                    tracing::debug!(camera = %self.url, width = stream.width, height = stream.height, "stream parameters");
                    self.stream = Some(Arc::new(stream));
                }
            }
        }
        let stream = self.stream.clone()?;
        let keyframe = frame.is_random_access_point()
            || (self.codec == ffmpeg::codec::Id::HEVC && holds_hevc_irap(frame.data()));
        self.keyframe_seen |= keyframe;
        if !self.keyframe_seen {
            return None;
        }
        let elapsed =
            (timestamp.elapsed() - first) as f64 / f64::from(timestamp.clock_rate().get());
        Some(LiveUnit {
            wall_time: self.playing_since + elapsed,
            keyframe,
            stream,
            lost_packets: frame.loss(),
            data: frame.into_data(),
        })
    }

    /// The parameters as of the last frame retina returned.
    fn video_parameters(&self) -> Option<&VideoParameters> {
        match self.demuxed.streams()[self.stream_index].parameters()? {
            ParametersRef::Video(video) => Some(video),
            _ => None,
        }
    }
}

/// Whether length-prefixed H.265 NAL units hold an IRAP picture (BLA, IDR or CRA, NAL
/// types 16–23), where decoding can start. retina counts only IDR pictures as random
/// access points, but open-GOP encoders (x265 by default, and cameras) put CRA pictures
/// at all keyframes after the first.
fn holds_hevc_irap(mut data: &[u8]) -> bool {
    while let Some((length, rest)) = data.split_first_chunk::<4>() {
        let length = u32::from_be_bytes(*length) as usize;
        let Some(nal) = rest.get(..length) else {
            return false;
        };
        if nal
            .first()
            .is_some_and(|header| (16..=23).contains(&((header >> 1) & 0x3f)))
        {
            return true;
        }
        data = &rest[length..];
    }
    false
}

/// Where the handshake is, to say what a timeout or an error status interrupted.
#[derive(Clone, Copy)]
enum Step {
    Describe,
    Setup,
    Play,
}

impl Step {
    fn method(self) -> &'static str {
        match self {
            Step::Describe => "DESCRIBE",
            Step::Setup => "SETUP",
            Step::Play => "PLAY",
        }
    }
}

/// DESCRIBE, SETUP and PLAY, all within one deadline.
struct Handshake<'a> {
    url: &'a str,
    deadline: Instant,
    timeout: Duration,
    credentials_given: bool,
}

impl Handshake<'_> {
    async fn step<T>(
        &self,
        step: Step,
        request: impl std::future::Future<Output = Result<T, retina::Error>>,
    ) -> Result<T, RtspError> {
        match tokio::time::timeout_at(self.deadline, request).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(self.error(step, &e)),
            Err(_) => Err(RtspError::Timeout {
                url: self.url.to_string(),
                method: step.method(),
                after: self.timeout,
            }),
        }
    }

    fn error(&self, step: Step, e: &retina::Error) -> RtspError {
        let url = self.url.to_string();
        match e.status_code() {
            Some(401) => RtspError::Unauthorized {
                url,
                credentials_given: self.credentials_given,
            },
            // retina also reports answers it cannot use, with their success status.
            Some(status) if !(200..300).contains(&status) => RtspError::Status {
                url,
                method: step.method(),
                status,
            },
            _ => match RetinaFailure::of(e) {
                RetinaFailure::Connect | RetinaFailure::Io => RtspError::Connect {
                    url,
                    reason: detail(e),
                },
                RetinaFailure::Other => RtspError::Protocol {
                    url,
                    reason: detail(e),
                },
            },
        }
    }
}

/// The first H.264 or H.265 video stream: its index, codec and the SDP's frame rate.
fn choose_video(session: &Session<Described>) -> Option<(usize, ffmpeg::codec::Id, Option<f32>)> {
    session.streams().iter().enumerate().find_map(|(i, s)| {
        let codec = match (s.media(), s.encoding_name()) {
            ("video", "h264") => ffmpeg::codec::Id::H264,
            ("video", "h265") => ffmpeg::codec::Id::HEVC,
            _ => return None,
        };
        Some((i, codec, s.framerate()))
    })
}

/// "video/jpeg, audio/pcma": what a camera without usable video offers.
fn offered_streams(session: &Session<Described>) -> String {
    let offered: Vec<String> = session
        .streams()
        .iter()
        .map(|s| format!("{}/{}", s.media(), s.encoding_name()))
        .collect();
    if offered.is_empty() {
        "no streams".into()
    } else {
        offered.join(", ")
    }
}

/// Whether the camera cannot use the transport just tried: it answered SETUP with 461
/// Unsupported Transport (VLC's server over TCP), or UDP delivered nothing.
fn transport_unusable(e: &RtspError) -> bool {
    matches!(
        e,
        RtspError::Status {
            method: "SETUP",
            status: 461,
            ..
        } | RtspError::UdpSilent { .. }
    )
}

/// Whether retina refused a packet for continuing a fragmented NAL unit whose start it
/// never saw. retina 0.4.21 counts no loss before a session's first packet, so a session
/// that joins a stream in the middle of a fragmented picture (VLC's server starts UDP
/// sessions wherever its stream is) gets this error instead of a lost picture; the
/// depacketiser recovers at the next NAL unit.
fn is_unstarted_fragment(e: &retina::Error) -> bool {
    format!("{e:?}").starts_with("RtpPacketError")
        && e.to_string()
            .contains("start bit unset while no frag in progress")
}

/// The SDP's parameter sets for the stream, when retina could not read them from the
/// `fmtp` attribute but they are there: retina 0.4.21 refuses an `fmtp` with an empty
/// parameter, such as VLC's, which end in `;`. VLC sends the H.265 parameter sets in the
/// SDP only, so without them nothing could be decoded.
fn lenient_sdp_parameters(
    session: &Session<Described>,
    stream_index: usize,
) -> Option<VideoParameters> {
    let stream = &session.streams()[stream_index];
    if stream.parameters().is_some() {
        return None;
    }
    let sdp = std::str::from_utf8(session.sdp()).ok()?;
    sdp_video_parameters(
        sdp,
        stream.encoding_name(),
        stream.rtp_payload_type(),
        stream.clock_rate_hz(),
    )
}

/// The video parameters of the `fmtp` for `payload_type` in `sdp`, its empty parameters
/// left out.
fn sdp_video_parameters(
    sdp: &str,
    encoding_name: &str,
    payload_type: u8,
    clock_rate: u32,
) -> Option<VideoParameters> {
    let fmtp = sdp_fmtp(sdp, "video", payload_type)?;
    let parameters: Vec<&str> = fmtp
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let depacketizer = retina::codec::Depacketizer::new(
        "video",
        encoding_name,
        clock_rate,
        None,
        Some(&parameters.join(";")),
    )
    .ok()?;
    match depacketizer.parameters()? {
        ParametersRef::Video(video) => Some(video.clone()),
        _ => None,
    }
}

/// The `a=fmtp` value for `payload_type` in the first `m=<media>` section whose first
/// payload type it is (the one retina plays).
fn sdp_fmtp<'a>(sdp: &'a str, media: &str, payload_type: u8) -> Option<&'a str> {
    let payload_type = payload_type.to_string();
    let mut in_section = false;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(description) = line.strip_prefix("m=") {
            // m=<media> <port> <proto> <fmt> ...
            let mut fields = description.split_ascii_whitespace();
            in_section =
                fields.next() == Some(media) && fields.nth(2) == Some(payload_type.as_str());
        } else if let Some(fmtp) = line.strip_prefix("a=fmtp:").filter(|_| in_section) {
            if let Some((format, value)) = fmtp.split_once(' ') {
                if format == payload_type {
                    return Some(value.trim());
                }
            }
        }
    }
    None
}

/// The camera's URL for retina, without user and password, and those as credentials
/// (percent-decoded: `s3cret%20pass` is the password `s3cret pass`).
fn split_credentials(url: &str) -> Result<(Url, Option<Credentials>), String> {
    let mut parsed = Url::parse(url).map_err(|e| e.to_string())?;
    if parsed.scheme() != "rtsp" {
        return Err(format!("the scheme is {}:, not rtsp:", parsed.scheme()));
    }
    if parsed.host().is_none() {
        return Err("no host".into());
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let credentials =
        (!parsed.username().is_empty() || parsed.password().is_some()).then(|| Credentials {
            username: decode(parsed.username()),
            password: decode(parsed.password().unwrap_or_default()),
        });
    // Both only fail for URLs without a host, excluded above.
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    Ok((parsed, credentials))
}

/// The session group of a camera URL (without credentials), shared by all its sessions,
/// so that a new session can wait for the TEARDOWN of earlier ones.
fn session_group(url: &Url) -> Arc<SessionGroup> {
    static GROUPS: OnceLock<Mutex<HashMap<String, Arc<SessionGroup>>>> = OnceLock::new();
    let mut groups = GROUPS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    // A group held by nothing else has no session and no TEARDOWN in flight: forget it,
    // so the map only holds cameras in use.
    groups.retain(|_, group| Arc::strong_count(group) > 1);
    groups
        .entry(url.to_string())
        .or_insert_with(|| Arc::new(SessionGroup::default().named(url.to_string())))
        .clone()
}

/// What went wrong while playing.
fn stream_error(url: String, e: &retina::Error) -> RtspError {
    match RetinaFailure::of(e) {
        RetinaFailure::Connect | RetinaFailure::Io => RtspError::Ended {
            url,
            reason: detail(e),
        },
        RetinaFailure::Other => RtspError::Protocol {
            url,
            reason: detail(e),
        },
    }
}

/// retina's error is opaque but for its status code; its `Debug` form starts with the
/// kind of failure, which is all that is needed here.
enum RetinaFailure {
    /// No TCP connection.
    Connect,
    /// The connection broke or closed, or a UDP socket failed.
    Io,
    /// Everything else: unparsable messages, bad packets, unusable answers.
    Other,
}

impl RetinaFailure {
    fn of(e: &retina::Error) -> RetinaFailure {
        let debug = format!("{e:?}");
        if debug.starts_with("ConnectError") {
            RetinaFailure::Connect
        } else if ["RtspReadError", "WriteError", "UdpRecvError"]
            .iter()
            .any(|kind| debug.starts_with(kind))
        {
            RetinaFailure::Io
        } else {
            RetinaFailure::Other
        }
    }
}

/// A retina error's whole text, on one line: its description and the connection and
/// message context below it (addresses, byte positions, the packet), enough to find the
/// offending packet in a capture. URLs in it carry no credentials: they are taken out
/// before retina sees the URL.
fn detail(e: &retina::Error) -> String {
    let text = e.to_string();
    let text = text
        .strip_prefix("Unable to connect to RTSP server: ")
        .unwrap_or(&text);
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// " Service Unavailable" after 503, for the statuses cameras commonly answer with.
fn status_phrase(status: u16) -> &'static str {
    match status {
        400 => " Bad Request",
        403 => " Forbidden",
        404 => " Not Found",
        405 => " Method Not Allowed",
        453 => " Not Enough Bandwidth",
        454 => " Session Not Found",
        455 => " Method Not Valid in This State",
        461 => " Unsupported Transport",
        500 => " Internal Server Error",
        501 => " Not Implemented",
        503 => " Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// retina's error is opaque: the daemon tells failures apart by its `Debug` text.
    /// Real failures from retina pin that reading until retina offers an error kind.
    #[test]
    fn retina_failures_are_classified_by_kind_and_keep_their_context() {
        use std::io::{Read, Write};
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let describe = |port: u16| {
            runtime.block_on(async move {
                let url = url::Url::parse(&format!("rtsp://127.0.0.1:{port}/cam")).unwrap();
                retina::client::Session::describe(url, retina::client::SessionOptions::default())
                    .await
                    .err()
                    .expect("describe fails")
            })
        };
        let closed_port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let refused = describe(closed_port);
        assert!(matches!(
            RetinaFailure::of(&refused),
            RetinaFailure::Connect
        ));
        assert!(detail(&refused).contains("refused"), "{}", detail(&refused));

        // A server that answers with something that is not RTSP.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let _ = conn.read(&mut request);
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            std::thread::sleep(std::time::Duration::from_millis(200));
        });
        let garbage = describe(port);
        server.join().unwrap();
        assert!(matches!(RetinaFailure::of(&garbage), RetinaFailure::Other));
        // The whole context, on one line: what failed, the bytes, the connection.
        let text = detail(&garbage);
        assert!(!text.contains('\n'), "{text}");
        assert!(text.contains("HTTP/1.1 200 OK"), "{text}");
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    }

    /// VLC's SDP, as its RTSP server writes it: every `fmtp` ends in `;`, which retina
    /// 0.4.21 refuses ("key without value"), and VLC sends the H.265 parameter sets
    /// nowhere else.
    const VLC_SDP: &str = "v=0\r\no=- 1 1 IN IP4 vm\r\ns=Unnamed\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
        a=tool:vlc 3.0.24\r\na=control:rtsp://127.0.0.1:8554/x\r\n\
        m=audio 0 RTP/AVP 96\r\na=rtpmap:96 mpeg4-generic/48000/2\r\n\
        a=fmtp:96 streamtype=5; profile-level-id=15; mode=AAC-hbr; config=1190;\r\n\
        m=video 0 RTP/AVP 96\r\nb=AS:128\r\na=rtpmap:96 H265/90000\r\n\
        a=fmtp:96 tx-mode=SRST;profile-id=1;level-id=90;tier-flag=0;profile-space=0;\
        sprop-vps=QAEMAf//AWAAAAMAkAAAAwAAAwBalZgJ;\
        sprop-sps=QgEBAWAAAAMAkAAAAwAAAwBaoAYCAbFllZpJMrmoMDA3CAAAAwAIAAADAFBA;\
        sprop-pps=RAHBcrRiQA==;\r\n\
        a=control:rtsp://127.0.0.1:8554/x/trackID=1\r\n";

    #[test]
    fn vlc_sdp_parameter_sets_are_read_despite_the_trailing_semicolon() {
        let fmtp = sdp_fmtp(VLC_SDP, "video", 96).expect("the video section's fmtp");
        assert!(
            fmtp.starts_with("tx-mode=SRST;") && fmtp.ends_with("=;"),
            "{fmtp}"
        );
        // retina alone reads nothing from it (when it does, the lenient reading can go).
        let retina_alone =
            retina::codec::Depacketizer::new("video", "h265", 90_000, None, Some(fmtp)).unwrap();
        assert!(retina_alone.parameters().is_none());

        let video = sdp_video_parameters(VLC_SDP, "h265", 96, 90_000).expect("parameters");
        assert_eq!(video.pixel_dimensions(), (768, 432));
        assert_eq!(video.rfc6381_codec(), "hvc1.1.6.L90.90");
        let stream = LiveStream::new(ffmpeg::codec::Id::HEVC, &video, None);
        assert_eq!(
            stream.extradata[0], 1,
            "an hvcC record: {:?}",
            stream.extradata
        );

        let h264 = "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
            a=fmtp:96 packetization-mode=1;profile-level-id=4d401f;\
            sprop-parameter-sets=Z01AH5ZSgYBvTUGBgZAAAAMAEAAAAwFIQA==,aOkJNSA=;\r\n";
        let video = sdp_video_parameters(h264, "h264", 96, 90_000).expect("parameters");
        assert_eq!(video.pixel_dimensions(), (768, 432));

        assert!(sdp_fmtp(VLC_SDP, "video", 97).is_none());
        assert!(sdp_video_parameters("m=video 0 RTP/AVP 96\r\n", "h265", 96, 90_000).is_none());
    }

    #[test]
    fn only_a_refused_transport_or_silent_udp_calls_for_the_other_one() {
        let url = || "rtsp://cam/x".to_string();
        let status = |method, status| RtspError::Status {
            url: url(),
            method,
            status,
        };
        assert!(transport_unusable(&status("SETUP", 461)));
        assert!(transport_unusable(&RtspError::UdpSilent {
            url: url(),
            after: Duration::from_secs(10),
        }));
        assert!(!transport_unusable(&status("SETUP", 454)));
        assert!(!transport_unusable(&status("DESCRIBE", 461)));
        assert!(!transport_unusable(&RtspError::Stalled {
            url: url(),
            after: Duration::from_secs(10),
        }));
        assert_eq!(Transport::Tcp.other(), Transport::Udp);
        assert_eq!(Transport::Udp.other().name(), "tcp");
    }

    #[test]
    fn credentials_leave_the_url() {
        let (url, credentials) =
            split_credentials("rtsp://admin:s3cret%20pass@10.0.0.7:554/Streaming/101").unwrap();
        assert_eq!(url.as_str(), "rtsp://10.0.0.7:554/Streaming/101");
        let credentials = credentials.unwrap();
        assert_eq!(credentials.username, "admin");
        assert_eq!(credentials.password, "s3cret pass");

        // An unencoded '@' in the password: the host starts after the last one.
        let (url, credentials) = split_credentials("rtsp://u:p@ss@cam/x").unwrap();
        assert_eq!(url.as_str(), "rtsp://cam/x");
        assert_eq!(credentials.unwrap().password, "p@ss");

        let (url, credentials) = split_credentials("rtsp://cam/x").unwrap();
        assert_eq!(url.as_str(), "rtsp://cam/x");
        assert!(credentials.is_none());
    }

    #[test]
    fn transport_reads_from_config() {
        let read = |text: &str| serde_json::from_str::<Transport>(text);
        assert_eq!(read("\"tcp\"").unwrap(), Transport::Tcp);
        assert_eq!(read("\"udp\"").unwrap(), Transport::Udp);
        assert!(read("\"http\"").is_err());
        assert_eq!(RtspOptions::default().transport, Transport::Tcp);
    }

    #[test]
    fn bad_urls_are_refused_without_the_password() {
        for url in [
            "http://u:topsecret@cam/x",
            "rtsp://u:topsecret@:554/x",
            "cam/x",
        ] {
            let reason = split_credentials(url).unwrap_err();
            assert!(!reason.contains("topsecret"), "{reason}");
        }
    }

    /// The daemon runs each camera in a task of its own and hands units to decode threads.
    #[test]
    fn sessions_and_their_futures_can_move_between_threads() {
        fn assert_send<T: Send>(_: &T) {}
        fn assert_send_sync<T: Send + Sync>() {}
        let options = RtspOptions::default();
        assert_send(&RtspSession::connect("rtsp://cam/x", &options));
        assert_send_sync::<LiveStream>();
        // Type-checked, never run.
        let _futures_of = |mut session: RtspSession| {
            assert_send(&session.next_unit());
            assert_send(&session.close());
        };
    }

    #[test]
    fn stream_info_carries_the_extradata() {
        let stream = LiveStream {
            codec: ffmpeg::codec::Id::H264,
            extradata: vec![1, 0x64, 0, 0x1f, 0xff],
            width: 640,
            height: 480,
            frame_rate: Some(25.0),
        };
        let info = stream.stream_info();
        assert_eq!(info.parameters.id(), ffmpeg::codec::Id::H264);
        assert_eq!((info.width, info.height), (640, 480));
        // SAFETY: reading fields of parameters `info` owns.
        let (extradata, width) = unsafe {
            let raw = &*info.parameters.as_ptr();
            let data = std::slice::from_raw_parts(raw.extradata, raw.extradata_size as usize);
            (data.to_vec(), raw.width)
        };
        assert_eq!(extradata, stream.extradata);
        assert_eq!(width, 640);
        assert_eq!(info.time_base, ffmpeg::Rational::new(1, 1_000_000));
    }

    #[test]
    fn hevc_keyframes_include_cra_pictures() {
        let nal = |nal_type: u8, body: &[u8]| {
            let mut unit = ((body.len() + 2) as u32).to_be_bytes().to_vec();
            unit.extend([nal_type << 1, 1]);
            unit.extend(body);
            unit
        };
        let vps_then = |slice: u8| [nal(32, &[7; 9]), nal(slice, &[1, 2, 3])].concat();
        assert!(holds_hevc_irap(&vps_then(21)), "CRA");
        assert!(holds_hevc_irap(&vps_then(19)), "IDR_W_RADL");
        assert!(holds_hevc_irap(&vps_then(16)), "BLA_W_LP");
        assert!(!holds_hevc_irap(&vps_then(1)), "TRAIL_R");
        assert!(!holds_hevc_irap(&vps_then(9)), "RASL_R");
        // A length running past the end, and nothing at all.
        let mut truncated = nal(1, &[0; 4]);
        truncated.extend([0, 0, 0, 200, 21 << 1, 1]);
        assert!(!holds_hevc_irap(&truncated));
        assert!(!holds_hevc_irap(&[]));
        assert!(!holds_hevc_irap(&[0, 0, 0, 0]));
    }

    #[test]
    fn units_are_timestamped_in_microseconds() {
        let stream = Arc::new(LiveStream {
            codec: ffmpeg::codec::Id::HEVC,
            extradata: Vec::new(),
            width: 1,
            height: 1,
            frame_rate: None,
        });
        let unit = LiveUnit {
            wall_time: 1_700_000_000.25,
            keyframe: true,
            stream,
            data: vec![0, 0, 0, 1, 0x26],
            lost_packets: 0,
        };
        let access = unit.access_unit();
        assert_eq!(access.packet.pts(), Some(1_700_000_000_250_000));
        assert!(access.packet.is_key() && access.keyframe);
        assert_eq!(access.pts, Some(1_700_000_000.25));
        assert_eq!(access.packet.data(), Some(&unit.data[..]));
    }
}
