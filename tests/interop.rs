//! Interop with RTSP software we did not write, in both directions:
//! - FFmpeg's RTSP client (ffprobe) plays our camera simulator, `cgbot sim`;
//! - GStreamer's RTSP server (gst-rtsp-server, `tests/interop/gst_rtsp_server.py`) serves
//!   the H.264 and H.265 samples, looped, for the daemon's RTSP client to be checked
//!   against; ffprobe checks here that the server itself serves what it should;
//! - VLC's RTSP server (`cvlc --sout '#rtp{…}'`) serves them too, the way it differs from
//!   cameras: it refuses RTP over TCP, and sends the H.265 parameter sets in an SDP
//!   `fmtp` that retina does not read.
//!
//! GStreamer and VLC come from Debian packages that `make setup` installs; without them
//! these tests fail (saying so), they do not skip.

mod common;

use std::thread;

use cgbot::sim::{SimConfig, SimHandle};
use common::daemon::Daemon;
use common::{
    ffmpeg, ffprobe_rtsp, ffprobe_rtsp_frame_pts, sample, GstServer, RtspProbe, VlcServer,
};

/// Seconds of stream each ffprobe run reads.
const SECONDS: u32 = 3;
/// Frames ffprobe must decode from `SECONDS` of a 10 fps sample (30 when all goes well;
/// a client that joins a shared stream mid-GOP, or a loaded machine, loses a few).
const MIN_FRAMES: u64 = 15;
/// 90 kHz ticks per second (ffprobe's time base for RTSP video).
const TICKS: i64 = 90_000;

fn assert_stream(probe: &RtspProbe, codec: &str, what: &str) {
    assert_eq!(
        (probe.codec.as_str(), probe.width, probe.height),
        (codec, 768, 432),
        "{what}: {probe:?}"
    );
    assert!(
        probe.frames >= MIN_FRAMES,
        "{what}: {} frames in {SECONDS} s, expected at least {MIN_FRAMES}",
        probe.frames
    );
}

#[test]
fn ffprobe_plays_cgbot_sim_h264_and_h265() {
    let start = |clip: &str| {
        SimHandle::start(SimConfig::new(sample(clip), 2)).expect("start the simulator")
    };
    let h264 = start("people-walking.mp4");
    let h265 = start("people-walking-h265.mp4");
    assert_eq!(h264.clip().summary(), "H.264 768x432, 10 fps, GOP 10");
    assert_eq!(h265.clip().summary(), "H.265 768x432, 10 fps, GOP 20");
    let [h264_tcp, h264_udp, h265_tcp] = thread::scope(|s| {
        [
            s.spawn(|| ffprobe_rtsp(&h264.url(0), "tcp", SECONDS)),
            s.spawn(|| ffprobe_rtsp(&h264.url(1), "udp", SECONDS)),
            s.spawn(|| ffprobe_rtsp(&h265.url(0), "tcp", SECONDS)),
        ]
        .map(|client| client.join().expect("ffprobe thread"))
    });
    assert_stream(&h264_tcp, "h264", "sim H.264 over TCP");
    assert_stream(&h264_udp, "h264", "sim H.264 over UDP");
    assert_stream(&h265_tcp, "hevc", "sim H.265 over TCP");
    assert!(h264.stats().sessions_started >= 2 && h265.stats().sessions_started >= 1);
}

#[test]
fn gstreamer_server_serves_h264_and_h265() {
    let server = GstServer::start(
        &sample("people-walking.mp4"),
        &sample("people-walking-h265.mp4"),
    );
    // Two clients on /h264 at once: the media is shared, as a camera's stream is.
    let [h264_tcp, h264_udp, h265_tcp] = thread::scope(|s| {
        [
            s.spawn(|| ffprobe_rtsp(&server.url("h264"), "tcp", SECONDS)),
            s.spawn(|| ffprobe_rtsp(&server.url("h264"), "udp", SECONDS)),
            s.spawn(|| ffprobe_rtsp(&server.url("h265"), "tcp", SECONDS)),
        ]
        .map(|client| client.join().expect("ffprobe thread"))
    });
    let log = server.log();
    assert_stream(
        &h264_tcp,
        "h264",
        &format!("GStreamer /h264 over TCP; {log}"),
    );
    assert_stream(
        &h264_udp,
        "h264",
        &format!("GStreamer /h264 over UDP; {log}"),
    );
    assert_stream(
        &h265_tcp,
        "hevc",
        &format!("GStreamer /h265 over TCP; {log}"),
    );
    let status = server.stop();
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM should stop the server cleanly, got {status:?}"
    );
}

#[test]
fn gstreamer_server_loops_a_short_clip_with_increasing_timestamps() {
    const CLIP_SECONDS: i64 = 3;
    const PLAY_SECONDS: u32 = 8;
    let dir = tempfile::tempdir().unwrap();
    let cut = |source: &str, name: &str| {
        let clip = dir.path().join(name);
        let source = sample(source);
        ffmpeg(&[
            "-i",
            source.to_str().unwrap(),
            "-t",
            &CLIP_SECONDS.to_string(),
            "-c",
            "copy",
            clip.to_str().unwrap(),
        ]);
        clip
    };
    let h264 = cut("people-walking.mp4", "three-seconds-h264.mp4");
    let h265 = cut("people-walking-h265.mp4", "three-seconds-h265.mp4");
    let server = GstServer::start(&h264, &h265);
    let [h264_pts, h265_pts] = thread::scope(|s| {
        [
            s.spawn(|| ffprobe_rtsp_frame_pts(&server.url("h264"), PLAY_SECONDS)),
            s.spawn(|| ffprobe_rtsp_frame_pts(&server.url("h265"), PLAY_SECONDS)),
        ]
        .map(|client| client.join().expect("ffprobe thread"))
    });
    let log = server.log();
    for (mount, pts) in [("h264", &h264_pts), ("h265", &h265_pts)] {
        assert!(
            pts.len() >= 50,
            "/{mount}: {} frames in {PLAY_SECONDS} s of a 10 fps clip; server: {log}",
            pts.len()
        );
        assert!(
            pts.windows(2).all(|w| w[0] < w[1]),
            "/{mount}: timestamps not increasing across the loop: {pts:?}"
        );
        let span = pts.last().unwrap() - pts.first().unwrap();
        assert!(
            span > CLIP_SECONDS * 3 / 2 * TICKS,
            "/{mount}: {span} ticks of a {CLIP_SECONDS} s clip, so it did not loop: {pts:?}"
        );
    }
    // H.264 cuts cleanly, so the loop must not skip a frame. (The H.265 cut does not: its
    // last B-frames are gone with the part that was cut off, leaving a gap in every pass.)
    let gap = h264_pts.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        gap <= 2 * TICKS / 10,
        "/h264: a {gap}-tick gap between frames: {h264_pts:?}"
    );
    assert!(log.contains("looping"), "server did not loop: {log}");
}

#[test]
fn daemon_analyses_h264_and_h265_from_gstreamer() {
    let server = GstServer::start(
        &sample("people-walking.mp4"),
        &sample("people-walking-h265.mp4"),
    );
    let dir = tempfile::tempdir().unwrap();
    let cameras = format!(
        "[[camera]]\nid = \"gst-h264\"\nmain_stream = \"{}\"\n\n[[camera]]\nid = \"gst-h265\"\nmain_stream = \"{}\"\n",
        server.url("h264"),
        server.url("h265")
    );
    std::fs::write(dir.path().join("cams.toml"), cameras).unwrap();
    let mut daemon = Daemon::start(dir.path(), "cams.toml", "[sampling]\ninterval = \"1s\"\n");
    daemon.wait_for(
        "frames analysed from both GStreamer streams",
        std::time::Duration::from_secs(60),
        |d| {
            d.cameras()
                .iter()
                .all(|c| c["frames_analysed"].as_u64().unwrap_or(0) >= 3)
        },
    );
    for camera in daemon.cameras() {
        assert_eq!(camera["state"], "streaming", "{camera}");
        assert_eq!(camera["reconnects"], 0, "{camera}");
    }
    let (status, _) = daemon.terminate(std::time::Duration::from_secs(30));
    assert!(status.success(), "{}", daemon.log());
}

/// VLC answers SETUP over TCP with 461: the daemon, configured for TCP, falls back to UDP
/// once per camera and remembers it; over UDP it must read VLC's H.265 parameter sets from
/// an SDP that retina refuses, and join VLC's running stream mid-picture.
#[test]
fn daemon_analyses_h264_and_h265_from_vlc_over_udp_when_tcp_is_refused() {
    let h264 = VlcServer::start(&sample("people-walking.mp4"));
    let h265 = VlcServer::start(&sample("people-walking-h265.mp4"));
    // Join the streams after their first GOPs, as cameras are joined: VLC sends the
    // parameter sets in band only at the start of the clip, later they are in its SDP only.
    thread::sleep(std::time::Duration::from_secs(5));
    let dir = tempfile::tempdir().unwrap();
    let cameras = format!(
        "[[camera]]\nid = \"vlc-h264\"\nmain_stream = \"{}\"\n\n[[camera]]\nid = \"vlc-h265\"\nmain_stream = \"{}\"\n",
        h264.url(),
        h265.url()
    );
    std::fs::write(dir.path().join("cams.toml"), cameras).unwrap();
    let mut daemon = Daemon::start(
        dir.path(),
        "cams.toml",
        "[sampling]\ninterval = \"1s\"\n[rtsp]\ntransport = \"tcp\"\n",
    );
    let analysed = |d: &Daemon| {
        d.cameras()
            .iter()
            .all(|c| c["frames_analysed"].as_u64().unwrap_or(0) >= 3)
    };
    let waited = std::time::Instant::now();
    while !analysed(&daemon) && waited.elapsed() < std::time::Duration::from_secs(60) {
        thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(
        analysed(&daemon),
        "frames analysed from both VLC streams: {:?}\n--- daemon ---\n{}\n--- VLC H.264 ---\n{}\n--- VLC H.265 ---\n{}",
        daemon.cameras(),
        daemon.log(),
        h264.log(),
        h265.log()
    );
    let (status, _) = daemon.terminate(std::time::Duration::from_secs(30));
    assert!(status.success(), "{}", daemon.log());
    let log = daemon.log();
    for camera in ["vlc-h264", "vlc-h265"] {
        let fallbacks = log
            .lines()
            .filter(|l| l.contains("does not work over tcp: using udp") && l.contains(camera))
            .count();
        assert_eq!(fallbacks, 1, "{camera} fell back to UDP once: {log}");
    }
}
