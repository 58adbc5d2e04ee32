//! One live camera: what the API shows of it (state, stream, patrol figures; its
//! pipeline figures are on its [`Feed`]), and the async task that keeps its RTSP session
//! up or makes one patrol visit, handing the sampled units to the pipeline's intake.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::LiveContext;
use crate::backoff::Backoff;
use crate::config::{Camera, RtspSettings, StreamChoice};
use crate::decode::LiveSampler;
use crate::metrics::Counter;
use crate::pipeline::{Feed, PictureLimits, Unit};
use crate::redact::redact_url;
use crate::source::{RtspError, RtspOptions, StreamParameters, Transport};

// Defined with the API that serves it, so the names exist once.
pub use crate::api::{CameraProblem, CameraState};

pub struct LiveCamera {
    /// The camera's way through the pipeline, with its configuration and figures.
    pub feed: Arc<Feed>,
    url: Option<String>,
    /// The URL as it may be shown: credentials replaced.
    pub shown_url: Option<String>,
    /// Handshakes started.
    pub connection_attempts: Counter,
    /// Sessions started after one that delivered video (continuous watching only: patrol
    /// visits end their sessions on purpose).
    pub reconnects: Counter,
    /// The transport that worked when it was not the configured one (VLC's server
    /// refuses TCP; a firewall drops UDP): tried first from then on, for the life of the
    /// process.
    working_transport: Mutex<Option<Transport>>,
    /// When the camera joined the list.
    pub joined: Instant,
    health: Mutex<Health>,
}

/// Where the camera stands, and what was last logged about it.
#[derive(Debug)]
struct Health {
    state: CameraState,
    /// Why connecting or streaming failed; cleared when video arrives.
    problem: Option<CameraProblem>,
    /// Failed attempts since video last arrived.
    failures: u64,
    /// When the camera was last given up on (`failed`), on the runtime's clock.
    failed_at: Option<tokio::time::Instant>,
    /// The condition last logged (see [`Health::condition`]).
    logged: Option<&'static str>,
}

impl Health {
    /// What an operator should hear about: failed, a problem, or streaming; the passing
    /// states between retries are not news.
    fn condition(&self) -> Option<&'static str> {
        match (self.state, self.problem) {
            (CameraState::Failed, _) => Some("failed"),
            (_, Some(problem)) => Some(problem.as_str()),
            (CameraState::Streaming, None) => Some("streaming"),
            _ => None,
        }
    }
}

/// The problem an RTSP failure shows.
pub fn problem_of(error: &RtspError) -> CameraProblem {
    match error {
        RtspError::BadUrl { .. } => CameraProblem::Misconfigured,
        RtspError::Connect { .. } => CameraProblem::Refused,
        RtspError::Timeout { .. } | RtspError::UdpSilent { .. } => CameraProblem::Timeout,
        RtspError::Unauthorized { .. } => CameraProblem::Unauthorized,
        RtspError::Status { status: 404, .. } => CameraProblem::NotFound,
        RtspError::Stalled { .. } => CameraProblem::Stalled,
        RtspError::Ended { .. } => CameraProblem::Disconnected,
        RtspError::Status { .. }
        | RtspError::Protocol { .. }
        | RtspError::UnsupportedCodec { .. } => CameraProblem::Error,
    }
}

impl LiveCamera {
    pub fn new(config: Camera, generation: u64, settings: &RtspSettings) -> Self {
        let (first, second) = match settings.stream {
            StreamChoice::Main => (&config.main_stream, &config.sub_stream),
            StreamChoice::Sub => (&config.sub_stream, &config.main_stream),
        };
        let url = first.clone().or_else(|| second.clone());
        // Analysed on the sub stream: evidence images come from the main stream.
        let evidence_stream = match settings.stream {
            StreamChoice::Sub if first.is_some() => second.clone(),
            _ => None,
        };
        let limits = PictureLimits {
            frozen_after: settings.frozen_after,
            dark_after: settings.dark_after,
            view_guard: settings.view_guard,
        };
        let camera = Self {
            shown_url: url.as_deref().map(redact_url),
            url,
            // Live units are stamped in Unix seconds.
            feed: Arc::new(
                Feed::new(config, generation, 0.0)
                    .watching_pictures(limits)
                    .with_evidence_stream(evidence_stream),
            ),
            connection_attempts: Counter::default(),
            reconnects: Counter::default(),
            working_transport: Mutex::new(None),
            joined: Instant::now(),
            health: Mutex::new(Health {
                state: CameraState::Waiting,
                problem: None,
                failures: 0,
                failed_at: None,
                logged: None,
            }),
        };
        if camera.url.is_none() {
            camera
                .feed
                .record_error("no main_stream or sub_stream configured");
            camera.update(|h| {
                h.state = CameraState::Failed;
                h.problem = Some(CameraProblem::Misconfigured);
            });
        }
        camera
    }

    pub fn id(&self) -> &str {
        self.feed.id()
    }

    pub fn config(&self) -> &Camera {
        &self.feed.camera
    }

    pub fn generation(&self) -> u64 {
        self.feed.generation
    }

    pub fn state(&self) -> CameraState {
        lock(&self.health).state
    }

    /// What is wrong: the connection's problem, else (while it delivers or waits for its
    /// next visit) the picture's.
    pub fn problem(&self) -> Option<CameraProblem> {
        let health = lock(&self.health);
        health.problem.or_else(|| match health.state {
            CameraState::Streaming | CameraState::Waiting => self.feed.picture_problem(),
            _ => None,
        })
    }

    /// Failed attempts since video last arrived.
    pub fn consecutive_failures(&self) -> u64 {
        lock(&self.health).failures
    }

    /// Healthy: delivering (or, patrolled, last found delivering) a picture worth
    /// analysing.
    pub fn is_healthy(&self) -> bool {
        matches!(self.state(), CameraState::Streaming | CameraState::Waiting)
            && self.problem().is_none()
    }

    pub fn set_state(&self, state: CameraState) {
        self.update(|h| h.state = state);
    }

    /// The session options for this camera: the configured ones, with the transport
    /// that worked for it last.
    fn rtsp_options(&self, configured: &RtspOptions) -> RtspOptions {
        let mut options = configured.clone();
        if let Some(transport) = *lock(&self.working_transport) {
            options.transport = transport;
        }
        options
    }

    /// Remembers the transport a session plays over when it is not the one tried first.
    fn note_transport(&self, tried: Transport, working: Transport) {
        if tried != working {
            tracing::info!(
                camera = self.id(),
                transport = working.name(),
                "the camera does not work over {}: using {} for it from now on",
                tried.name(),
                working.name()
            );
            *lock(&self.working_transport) = Some(working);
        }
    }

    pub fn stop(&self) {
        self.feed.stop();
        self.set_state(CameraState::Stopped);
    }

    /// Video arrived: whatever was wrong with the connection is over.
    fn delivering(&self) {
        self.update(|h| {
            h.state = CameraState::Streaming;
            h.problem = None;
            h.failures = 0;
            h.failed_at = None;
        });
    }

    /// An attempt or session failed: records why, and gives the camera up (`failed`) after
    /// `fail_after` failures in a row or when its configuration cannot work. Otherwise it
    /// goes to `then`.
    fn failed(&self, error: &RtspError, fail_after: u32, then: CameraState) {
        let problem = problem_of(error);
        self.feed.record_error(error.to_string());
        self.update(|h| {
            h.failures += 1;
            h.problem = Some(problem);
            let give_up =
                h.failures >= u64::from(fail_after) || problem == CameraProblem::Misconfigured;
            if give_up {
                h.failed_at = Some(tokio::time::Instant::now());
                h.state = CameraState::Failed;
            } else {
                h.state = then;
            }
        });
        tracing::debug!(camera = self.id(), error = %error, "camera attempt failed");
    }

    /// Whether a failed camera's slower retry is due.
    fn retry_due(&self, failed_retry: Duration) -> bool {
        let health = lock(&self.health);
        health.state != CameraState::Failed
            || health
                .failed_at
                .is_none_or(|at| at.elapsed() >= failed_retry)
    }

    /// Applies a change, and logs once when the camera's condition changed.
    fn update(&self, change: impl FnOnce(&mut Health)) {
        let mut health = lock(&self.health);
        change(&mut health);
        let Some(now) = health.condition() else {
            return;
        };
        let before = health.logged.replace(now);
        if before == Some(now) {
            return;
        }
        let id = self.id();
        let error = self.feed.last_error().unwrap_or_default();
        match (now, before) {
            // Streaming from the start is not news.
            ("streaming", None) => {}
            ("streaming", Some(before)) => {
                tracing::info!(camera = id, was = before, "camera streaming again")
            }
            ("failed", _) => tracing::warn!(
                camera = id,
                problem = health.problem.map_or("", CameraProblem::as_str),
                failures = health.failures,
                %error,
                "camera failed: retried only every rtsp.failed_retry"
            ),
            (problem, _) => tracing::warn!(camera = id, problem, %error, "camera problem"),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere must not take the camera's status down with it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A continuous session's deadline: none in practice, but still an `Instant` the timer takes.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Why streaming from a session ended.
enum Ended {
    Stopped,
    VisitDone,
    /// A visit admitted its samples; they may still be on their way through the stages.
    IntakeDone,
    Failed(RtspError),
}

/// What a patrol visit asks of a session.
#[derive(Clone, Copy)]
pub(super) struct Visit {
    pub samples: u64,
    pub timeout: Duration,
}

/// Keeps the camera's session up until `stop`: reconnects with jittered exponential
/// backoff after failures, stalls and disconnects, and only every `rtsp.failed_retry` once
/// the camera has failed `rtsp.fail_after` times in a row.
pub(super) async fn watch_continuously(
    camera: Arc<LiveCamera>,
    ctx: Arc<LiveContext>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(url) = camera.url.clone() else {
        return;
    };
    let settings = &ctx.config.rtsp;
    let mut backoff = Backoff::new(settings.backoff_initial, settings.backoff_max);
    let mut delivered = false;
    loop {
        if delivered {
            camera.reconnects.inc();
            ctx.metrics.reconnects.inc();
        }
        if camera.state() != CameraState::Failed {
            camera.set_state(CameraState::Connecting);
        }
        let received_before = camera.feed.counters.frames_received.get();
        let forever = tokio::time::Instant::now() + FOREVER;
        match session(&camera, &ctx, &url, None, forever, &mut stop).await {
            Ended::Stopped | Ended::VisitDone | Ended::IntakeDone => break,
            Ended::Failed(e) => camera.failed(&e, settings.fail_after, CameraState::Backoff),
        }
        delivered = camera.feed.counters.frames_received.get() > received_before;
        if delivered {
            backoff.reset();
        }
        let delay = if camera.state() == CameraState::Failed {
            settings.failed_retry
        } else {
            backoff.next_delay()
        };
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    camera.set_state(CameraState::Stopped);
}

/// One patrol visit: connect, admit `visit.samples` sampled units, disconnect, and wait
/// (within the visit's time) until they are analysed. Whatever of the visit is still
/// queued when it ends is skipped by the stages. A failed camera is visited only every
/// `rtsp.failed_retry`; its other visits end at once.
pub(super) async fn visit(
    camera: Arc<LiveCamera>,
    ctx: Arc<LiveContext>,
    mut stop: watch::Receiver<bool>,
    visit: Visit,
) {
    let Some(url) = camera.url.clone() else {
        return;
    };
    let settings = &ctx.config.rtsp;
    if !camera.retry_due(settings.failed_retry) {
        return;
    }
    if camera.state() != CameraState::Failed {
        camera.set_state(CameraState::Connecting);
    }
    let deadline = tokio::time::Instant::now() + visit.timeout;
    let target = camera.feed.counters.frames_analysed.get() + visit.samples;
    let ended = match session(&camera, &ctx, &url, Some(visit), deadline, &mut stop).await {
        Ended::IntakeDone => {
            camera.set_state(CameraState::Waiting);
            wait_for_analysis(&camera.feed, target, deadline, &mut stop).await
        }
        ended => ended,
    };
    camera.feed.next_epoch();
    match ended {
        Ended::Stopped => camera.set_state(CameraState::Stopped),
        Ended::Failed(e) => camera.failed(&e, settings.fail_after, CameraState::Waiting),
        Ended::VisitDone | Ended::IntakeDone => camera.set_state(CameraState::Waiting),
    }
}

/// How often a visit re-checks its analysed count (besides being woken for each frame).
const ANALYSIS_POLL: Duration = Duration::from_millis(100);

/// Waits until the feed has `target` analysed frames, the deadline passes or `stop` is set.
async fn wait_for_analysis(
    feed: &Feed,
    target: u64,
    deadline: tokio::time::Instant,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    while feed.counters.frames_analysed.get() < target {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return Ended::Stopped,
            _ = tokio::time::sleep_until(deadline) => return Ended::VisitDone,
            _ = feed.analysed() => {}
            _ = tokio::time::sleep(ANALYSIS_POLL) => {}
        }
    }
    Ended::VisitDone
}

/// Connects and hands the units the sampler admits to the pipeline, until the session
/// fails, `stop` is set, the deadline passes, or (for a visit) enough units are admitted —
/// with keyframe sampling each admitted unit is one sample — or analysed. The session is
/// always closed with a TEARDOWN: cameras limit their sessions.
async fn session(
    camera: &Arc<LiveCamera>,
    ctx: &Arc<LiveContext>,
    url: &str,
    visit: Option<Visit>,
    deadline: tokio::time::Instant,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let options = camera.rtsp_options(&ctx.rtsp_options);
    // Held until the session closes: its sockets count against the open-file limit.
    let descriptors = crate::limits::descriptors_per_session(options.transport) as u32;
    let _slot = match ctx
        .sessions
        .descriptors
        .clone()
        .try_acquire_many_owned(descriptors)
    {
        Ok(slot) => slot,
        Err(_) => {
            camera.feed.record_error(format!(
                "waiting for a session slot: the open-file limit leaves room for {} camera sessions",
                ctx.sessions.count
            ));
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return Ended::Stopped,
                _ = tokio::time::sleep_until(deadline) => return Ended::VisitDone,
                slot = ctx.sessions.descriptors.clone().acquire_many_owned(descriptors) => {
                    slot.expect("the session slots are never closed")
                }
            }
        }
    };
    camera.connection_attempts.inc();
    ctx.metrics.connection_attempts.inc();
    let connected = tokio::select! {
        _ = stop.wait_for(|s| *s) => return Ended::Stopped,
        _ = tokio::time::sleep_until(deadline) => return Ended::VisitDone,
        connected = ctx.opener.connect(url, &options) => connected,
    };
    let mut session = match connected {
        Ok(s) => s,
        Err(e) => return Ended::Failed(e),
    };
    camera.note_transport(options.transport, session.transport());
    let feed = &camera.feed;
    let target = visit.map(|v| feed.counters.frames_analysed.get() + v.samples);
    let mut admitted = 0;
    let mut sampler = LiveSampler::new(ctx.config.sampling.interval, ctx.config.sampling.keyframes);
    let ended = loop {
        if target.is_some_and(|t| feed.counters.frames_analysed.get() >= t) {
            break Ended::VisitDone;
        }
        if visit.is_some_and(|v| sampler.keyframes_only() && admitted >= v.samples) {
            break Ended::IntakeDone;
        }
        let unit = tokio::select! {
            _ = stop.wait_for(|s| *s) => break Ended::Stopped,
            _ = tokio::time::sleep_until(deadline) => break Ended::VisitDone,
            // Re-check the visit's target when a frame has been analysed.
            _ = feed.analysed(), if target.is_some() => continue,
            unit = session.next_unit() => unit,
        };
        let unit = match unit {
            Ok(unit) => unit,
            Err(e) => break Ended::Failed(e),
        };
        if camera.state() != CameraState::Streaming {
            camera.delivering();
        }
        feed.counters.frames_received.inc();
        ctx.metrics.frames_received.inc();
        if !sampler.admit(unit.keyframe, unit.wall_time) {
            continue;
        }
        admitted += 1;
        let stream: Arc<dyn StreamParameters> = unit.stream.clone();
        let queued = Unit {
            feed: feed.clone(),
            epoch: feed.epoch(),
            stream,
            sampling: sampler.sampling(),
            unit: unit.access_unit(),
            received: Instant::now(),
        };
        // The intake is gone only during shutdown, when nothing needs decoding.
        if ctx.intake.push(queued).is_err() {
            break Ended::Stopped;
        }
    };
    session.close().await;
    ended
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::future::BoxFuture;

    use super::*;
    use crate::config::RunConfig;
    use crate::pipeline::live::SessionSlots;
    use crate::pipeline::{test_intake, Message};
    use crate::source::{LiveSession, LiveStream, LiveUnit, Opener, RtspOptions};

    /// What a scripted camera does once connected.
    #[derive(Clone, Copy)]
    enum Script {
        /// Connecting fails.
        Refuse,
        /// Connecting fails this many times, then keyframes every second.
        RefuseFirst(usize),
        /// Keyframes every `every`, forever.
        Keyframes { every: Duration },
        /// One keyframe, then silence until the session stalls after `after`.
        OneThenStall { after: Duration },
    }

    struct ScriptedOpener {
        script: Script,
        /// The transport the camera plays over, whatever is asked for.
        plays_over: Transport,
        connects: AtomicUsize,
        /// The transport asked for, by connection.
        asked: Mutex<Vec<Transport>>,
        closes: Arc<AtomicUsize>,
    }

    struct ScriptedSession {
        script: Script,
        transport: Transport,
        sent: u32,
        closes: Arc<AtomicUsize>,
    }

    fn unit(n: u32) -> LiveUnit {
        LiveUnit {
            wall_time: 1_700_000_000.0 + f64::from(n) * 2.0,
            keyframe: true,
            stream: Arc::new(LiveStream {
                codec: ffmpeg_next::codec::Id::H264,
                extradata: Vec::new(),
                width: 640,
                height: 480,
                frame_rate: Some(25.0),
            }),
            data: vec![0, 0, 0, 1, 0x65],
            lost_packets: 0,
        }
    }

    impl LiveSession for ScriptedSession {
        fn next_unit(&mut self) -> BoxFuture<'_, Result<LiveUnit, RtspError>> {
            Box::pin(async move {
                match self.script {
                    Script::Keyframes { every } => tokio::time::sleep(every).await,
                    Script::OneThenStall { after } if self.sent > 0 => {
                        tokio::time::sleep(after).await;
                        return Err(RtspError::Stalled {
                            url: "rtsp://cam".into(),
                            after,
                        });
                    }
                    _ => {}
                }
                self.sent += 1;
                Ok(unit(self.sent))
            })
        }

        fn transport(&self) -> Transport {
            self.transport
        }

        fn close(self: Box<Self>) -> BoxFuture<'static, ()> {
            self.closes.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {})
        }
    }

    impl Opener for ScriptedOpener {
        fn connect<'a>(
            &'a self,
            _url: &'a str,
            options: &'a RtspOptions,
        ) -> BoxFuture<'a, Result<Box<dyn LiveSession>, RtspError>> {
            let earlier = self.connects.fetch_add(1, Ordering::SeqCst);
            lock(&self.asked).push(options.transport);
            let script = match self.script {
                Script::RefuseFirst(n) if earlier < n => Script::Refuse,
                Script::RefuseFirst(_) => Script::Keyframes {
                    every: Duration::from_secs(1),
                },
                script => script,
            };
            let transport = self.plays_over;
            let closes = self.closes.clone();
            Box::pin(async move {
                if let Script::Refuse = script {
                    return Err(RtspError::Connect {
                        url: "rtsp://cam".into(),
                        reason: "connection refused".into(),
                    });
                }
                Ok(Box::new(ScriptedSession {
                    script,
                    transport,
                    sent: 0,
                    closes,
                }) as Box<dyn LiveSession>)
            })
        }
    }

    fn setup(
        script: Script,
        rtsp: &str,
    ) -> (
        Arc<LiveCamera>,
        Arc<LiveContext>,
        Arc<ScriptedOpener>,
        crossbeam_channel::Receiver<Message>,
    ) {
        setup_over(script, rtsp, Transport::Tcp)
    }

    fn setup_over(
        script: Script,
        rtsp: &str,
        plays_over: Transport,
    ) -> (
        Arc<LiveCamera>,
        Arc<LiveContext>,
        Arc<ScriptedOpener>,
        crossbeam_channel::Receiver<Message>,
    ) {
        let config: RunConfig = toml::from_str(&format!(
            "cameras = \"cams.toml\"\n\
             [sampling]\ninterval = \"2s\"\n\
             [rtsp]\nbackoff_initial = \"1s\"\nbackoff_max = \"8s\"\n{rtsp}",
        ))
        .expect("a valid run config");
        let opener = Arc::new(ScriptedOpener {
            script,
            plays_over,
            connects: AtomicUsize::new(0),
            asked: Mutex::new(Vec::new()),
            closes: Arc::new(AtomicUsize::new(0)),
        });
        let (intake, units) = test_intake();
        let ctx = Arc::new(LiveContext {
            rtsp_options: RtspOptions::default(),
            config,
            metrics: Arc::default(),
            intake,
            opener: opener.clone(),
            sessions: SessionSlots::new(4, 4),
        });
        let mut camera = Camera::unconfigured("cam-1");
        camera.main_stream = Some("rtsp://user:secret@cam/main".into());
        let camera = Arc::new(LiveCamera::new(camera, 1, &ctx.config.rtsp));
        (camera, ctx, opener, units)
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusing_camera_backs_off_then_fails_and_is_retried_slowly() {
        let (camera, ctx, opener, _units) =
            setup(Script::Refuse, "fail_after = 5\nfailed_retry = \"30s\"\n");
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(watch_continuously(camera.clone(), ctx.clone(), stop_rx));
        let wall = std::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(camera.state(), CameraState::Backoff);
        assert_eq!(camera.problem(), Some(CameraProblem::Refused));
        tokio::time::sleep(Duration::from_secs(120)).await;
        // Five attempts within the backoff (delays below 1 + 2 + 4 + 8 s), then one per
        // failed_retry: three or four more in the rest of the 120 s.
        let attempts = opener.connects.load(Ordering::SeqCst);
        assert!((8..=9).contains(&attempts), "{attempts} attempts in 120 s");
        assert_eq!(camera.connection_attempts.get() as usize, attempts);
        assert_eq!(ctx.metrics.connection_attempts.get() as usize, attempts);
        assert_eq!(camera.consecutive_failures() as usize, attempts);
        assert_eq!(camera.reconnects.get(), 0, "it never delivered video");
        assert_eq!(camera.state(), CameraState::Failed);
        assert_eq!(camera.problem(), Some(CameraProblem::Refused));
        assert!(!camera.is_healthy());
        let error = camera.feed.last_error().unwrap();
        assert!(error.contains("connection refused"), "{error}");
        stop.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(camera.state(), CameraState::Stopped);
        assert!(
            wall.elapsed() < Duration::from_secs(1),
            "simulated, not slept"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_camera_that_heals_streams_again() {
        let (camera, ctx, opener, _units) = setup(
            Script::RefuseFirst(3),
            "fail_after = 2\nfailed_retry = \"30s\"\n",
        );
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(watch_continuously(camera.clone(), ctx, stop_rx));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(camera.state(), CameraState::Failed);
        assert_eq!(opener.connects.load(Ordering::SeqCst), 2);
        // The third attempt, 30 s later, fails too; the fourth, 30 s after it, works.
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(camera.state(), CameraState::Failed);
        assert_eq!(opener.connects.load(Ordering::SeqCst), 3);
        tokio::time::sleep(Duration::from_secs(33)).await;
        assert_eq!(camera.state(), CameraState::Streaming);
        assert_eq!(camera.problem(), None);
        assert_eq!(camera.consecutive_failures(), 0);
        assert_eq!(camera.reconnects.get(), 0);
        assert!(camera.is_healthy());
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    #[test]
    fn rtsp_failures_name_their_problem() {
        let url = || "rtsp://cam".to_string();
        for (error, problem) in [
            (
                RtspError::Connect {
                    url: url(),
                    reason: "Connection refused".into(),
                },
                CameraProblem::Refused,
            ),
            (
                RtspError::Timeout {
                    url: url(),
                    method: "DESCRIBE",
                    after: Duration::from_secs(10),
                },
                CameraProblem::Timeout,
            ),
            (
                RtspError::Unauthorized {
                    url: url(),
                    credentials_given: false,
                },
                CameraProblem::Unauthorized,
            ),
            (
                RtspError::Status {
                    url: url(),
                    method: "DESCRIBE",
                    status: 404,
                },
                CameraProblem::NotFound,
            ),
            (
                RtspError::Status {
                    url: url(),
                    method: "SETUP",
                    status: 461,
                },
                CameraProblem::Error,
            ),
            (
                RtspError::Stalled {
                    url: url(),
                    after: Duration::from_secs(10),
                },
                CameraProblem::Stalled,
            ),
            (
                RtspError::Ended {
                    url: url(),
                    reason: "closed".into(),
                },
                CameraProblem::Disconnected,
            ),
            (
                RtspError::BadUrl {
                    url: url(),
                    reason: "no host".into(),
                },
                CameraProblem::Misconfigured,
            ),
        ] {
            assert_eq!(problem_of(&error), problem, "{error}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn patrol_visits_classify_failures_and_skip_a_failed_camera_until_its_retry() {
        let (camera, ctx, opener, _units) =
            setup(Script::Refuse, "fail_after = 2\nfailed_retry = \"60s\"\n");
        let (_stop, stop_rx) = watch::channel(false);
        let one = Visit {
            samples: 1,
            timeout: Duration::from_secs(5),
        };
        visit(camera.clone(), ctx.clone(), stop_rx.clone(), one).await;
        assert_eq!(camera.state(), CameraState::Waiting);
        assert_eq!(camera.problem(), Some(CameraProblem::Refused));
        visit(camera.clone(), ctx.clone(), stop_rx.clone(), one).await;
        assert_eq!(camera.state(), CameraState::Failed);
        visit(camera.clone(), ctx.clone(), stop_rx.clone(), one).await;
        assert_eq!(opener.connects.load(Ordering::SeqCst), 2, "not due yet");
        tokio::time::sleep(Duration::from_secs(61)).await;
        visit(camera.clone(), ctx, stop_rx, one).await;
        assert_eq!(
            opener.connects.load(Ordering::SeqCst),
            3,
            "retried when due"
        );
        assert_eq!(camera.state(), CameraState::Failed);
        assert_eq!(camera.reconnects.get(), 0, "patrol sessions end on purpose");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_session_is_closed_reported_and_reconnected() {
        let after = Duration::from_secs(10);
        let (camera, ctx, opener, units) = setup(Script::OneThenStall { after }, "");
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(watch_continuously(camera.clone(), ctx, stop_rx));
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert!(
            camera.reconnects.get() >= 1,
            "a session that delivered video was re-established"
        );
        assert!(opener.connects.load(Ordering::SeqCst) >= 2, "reconnected");
        assert!(
            opener.closes.load(Ordering::SeqCst) >= 1,
            "the stalled session was torn down"
        );
        assert!(camera.feed.last_error().unwrap().contains("stalled"));
        assert!(
            units.try_iter().count() >= 2,
            "each session's keyframe reached the intake"
        );
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    /// A camera that plays over UDP when TCP is configured (the session fell back) is
    /// asked for UDP first on every later connection, patrol visits included.
    #[tokio::test(start_paused = true)]
    async fn the_transport_that_worked_is_tried_first_from_then_on() {
        let after = Duration::from_secs(10);
        let (camera, ctx, opener, _units) =
            setup_over(Script::OneThenStall { after }, "", Transport::Udp);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(watch_continuously(camera.clone(), ctx.clone(), stop_rx));
        tokio::time::sleep(Duration::from_secs(25)).await;
        stop.send(true).unwrap();
        task.await.unwrap();
        let (_stop, stop_rx) = watch::channel(false);
        let samples = Visit {
            samples: 1,
            timeout: Duration::from_secs(5),
        };
        visit(camera, ctx, stop_rx, samples).await;
        let asked = lock(&opener.asked).clone();
        assert!(asked.len() >= 3, "{asked:?}");
        assert_eq!(asked[0], Transport::Tcp, "the configured transport first");
        assert!(
            asked[1..].iter().all(|&t| t == Transport::Udp),
            "then the one that worked: {asked:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_patrol_visit_stops_intake_at_its_samples_and_ends_its_epoch() {
        let every = Duration::from_millis(500);
        let (camera, ctx, opener, units) = setup(Script::Keyframes { every }, "");
        let (_stop, stop_rx) = watch::channel(false);
        let started = tokio::time::Instant::now();
        let timeout = Duration::from_secs(10);
        visit(
            camera.clone(),
            ctx,
            stop_rx,
            Visit {
                samples: 1,
                timeout,
            },
        )
        .await;
        // Nothing analyses here: the visit waits out its time after admitting one unit.
        let took = started.elapsed();
        assert!(
            took >= timeout && took < timeout + Duration::from_secs(1),
            "{took:?}"
        );
        let admitted: Vec<Message> = units.try_iter().collect();
        assert_eq!(
            admitted.len(),
            1,
            "intake stopped at the visit's one sample"
        );
        assert_eq!(
            opener.closes.load(Ordering::SeqCst),
            1,
            "disconnected at once"
        );
        let Message::Unit(unit) = &admitted[0] else {
            panic!("a unit")
        };
        assert!(
            !camera.feed.wants(unit.epoch),
            "the visit's leftovers are stale"
        );
        assert_eq!(camera.state(), CameraState::Waiting);
    }
}
