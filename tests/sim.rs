//! End-to-end tests of `cgbot sim`: real RTSP clients (ffprobe, ffmpeg, and a hand-written
//! conversation over a socket) play the simulated cameras over loopback. Every client runs
//! under a time limit, so a broken server fails a test instead of hanging it.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use cgbot::sim::{Credentials, SimConfig, SimHandle};
use common::{fails, fault_plan, ffmpeg, run, sample, Run};

/// `codec,width,height` of the camera's video as ffprobe reports it.
fn ffprobe(url: &str, transport: &str) -> Run {
    run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-rtsp_transport",
            transport,
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
            url,
        ],
        Duration::from_secs(20),
    )
}

/// Decodes `seconds` of the camera with ffmpeg, one framemd5 line per frame. The 1 s
/// socket timeout makes a camera that goes silent end the run (after ffmpeg's retries).
fn decode(url: &str, transport: &str, seconds: u32) -> Run {
    let seconds = seconds.to_string();
    run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-rtsp_transport",
            transport,
            "-timeout",
            "1000000",
            "-i",
            url,
            "-t",
            &seconds,
            "-f",
            "framemd5",
            "-",
        ],
        Duration::from_secs(30),
    )
}

fn start(clip: &Path, cameras: usize) -> SimHandle {
    SimHandle::start(SimConfig::new(clip, cameras)).expect("start simulator")
}

fn assert_plays(sim: &SimHandle, transport: &str, probe: &str, fps: f64) {
    let probe_run = ffprobe(&sim.url(0), transport);
    assert!(
        probe_run.succeeded(),
        "ffprobe over {transport}: {}",
        probe_run.stderr
    );
    assert_eq!(probe_run.stdout.trim(), probe, "over {transport}");
    let decoded = decode(&sim.url(1), transport, 4);
    assert!(
        decoded.succeeded(),
        "ffmpeg over {transport}: {}",
        decoded.stderr
    );
    let expected = (3.0 * fps * 0.8) as usize;
    assert!(
        decoded.frames() >= expected,
        "{} frames over {transport}, expected at least {expected}: {}",
        decoded.frames(),
        decoded.stderr
    );
}

#[test]
fn h264_plays_over_tcp_and_udp() {
    let sim = start(&sample("street-static-h264.mp4"), 2);
    assert_eq!(sim.clip().summary(), "H.264 640x480, 25 fps, GOP 50");
    assert_eq!(sim.sub_clip().summary(), "H.264 640x360, 25 fps, GOP 50");
    assert_plays(&sim, "tcp", "h264,640,480", 25.0);
    assert_plays(&sim, "udp", "h264,640,480", 25.0);
    let stats = sim.stats();
    assert!(
        stats.sessions_started >= 4 && stats.packets_sent > 0,
        "{stats:?}"
    );
}

#[test]
fn h265_plays_over_tcp() {
    let sim = start(&sample("people-walking-1080p-h265.mp4"), 2);
    assert_eq!(sim.clip().summary(), "H.265 1920x1080, 25 fps, GOP 50");
    assert_plays(&sim, "tcp", "hevc,1920,1080", 25.0);
}

/// `/cam/<i>/sub` plays the clip scaled down, on the main stream's keyframes and
/// timeline, and the main stream is unchanged.
#[test]
fn sub_stream_is_a_smaller_rendition_on_the_same_keyframes() {
    let mut config = SimConfig::new(sample("street-static-h264.mp4"), 2);
    config.sub_stream = "320x240".parse().unwrap();
    config.credentials = Some(Credentials {
        user: "admin".into(),
        password: "pw".into(),
    });
    let sim = SimHandle::start(config).expect("start simulator");
    assert_eq!(sim.sub_clip().summary(), "H.264 320x240, 25 fps, GOP 50");
    assert_eq!(sim.sub_clip().duration, sim.clip().duration);
    let with_password = |url: String| url.replace("rtsp://", "rtsp://admin:pw@");
    assert!(!ffprobe(&sim.sub_url(0), "tcp").succeeded(), "no password");
    for (url, expected) in [
        (sim.sub_url(0), "h264,320,240"),
        (sim.url(0), "h264,640,480"),
    ] {
        let probe = ffprobe(&with_password(url), "tcp");
        assert!(probe.succeeded(), "{}", probe.stderr);
        assert_eq!(probe.stdout.trim(), expected);
    }
    let decoded = decode(&with_password(sim.sub_url(1)), "udp", 4);
    assert!(decoded.succeeded(), "{}", decoded.stderr);
    assert!(decoded.frames() >= 60, "{} frames", decoded.frames());
    let bad: Result<cgbot::sim::SubStream, _> = "641x360".parse();
    assert!(bad.unwrap_err().contains("even"));
}

#[test]
fn digest_authentication() {
    let mut config = SimConfig::new(sample("people-walking.mp4"), 1);
    config.credentials = Some(Credentials {
        user: "admin".into(),
        password: "s3cret pass".into(),
    });
    let sim = SimHandle::start(config).expect("start simulator");
    let anonymous = ffprobe(&sim.url(0), "tcp");
    assert!(!anonymous.succeeded());
    assert!(anonymous.stderr.contains("401"), "{}", anonymous.stderr);
    let wrong = sim.url(0).replace("rtsp://", "rtsp://admin:guess@");
    assert!(!ffprobe(&wrong, "tcp").succeeded());
    let authorised = sim.url(0).replace("rtsp://", "rtsp://admin:s3cret%20pass@");
    let run = ffprobe(&authorised, "tcp");
    assert!(run.succeeded(), "{}", run.stderr);
    assert_eq!(run.stdout.trim(), "h264,768,432");
}

#[test]
fn short_clip_loops_with_continuous_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("three-seconds.mp4");
    let source = sample("people-walking.mp4");
    ffmpeg(&[
        "-i",
        source.to_str().unwrap(),
        "-t",
        "3",
        "-c",
        "copy",
        clip.to_str().unwrap(),
    ]);
    let sim = start(&clip, 1);
    assert!(
        sim.clip().duration <= Duration::from_millis(3200),
        "{:?}",
        sim.clip().duration
    );
    let decoded = decode(&sim.url(0), "tcp", 7);
    assert!(decoded.succeeded(), "{}", decoded.stderr);
    assert!(
        decoded.frames() >= 60,
        "{} frames of 7 s at 10 fps",
        decoded.frames()
    );
    // framemd5: stream, dts, pts, duration, size, hash. Looping must not send time back.
    let pts: Vec<i64> = decoded
        .stdout
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(',').nth(2).unwrap().trim().parse().unwrap())
        .collect();
    assert!(
        pts.windows(2).all(|w| w[0] < w[1]),
        "pts not increasing: {pts:?}"
    );
}

#[test]
fn fifty_concurrent_sessions() {
    const CAMERAS: usize = 50;
    let sim = start(&sample("people-walking.mp4"), CAMERAS);
    let clients: Vec<_> = (0..CAMERAS)
        .map(|camera| {
            let url = sim.url(camera);
            thread::spawn(move || ffprobe(&url, "tcp"))
        })
        .collect();
    for (camera, client) in clients.into_iter().enumerate() {
        let run = client.join().unwrap();
        assert!(run.succeeded(), "camera {camera}: {}", run.stderr);
        assert_eq!(run.stdout.trim(), "h264,768,432", "camera {camera}");
    }
    assert!(sim.stats().sessions_started >= CAMERAS as u64);
}

#[test]
fn faults_behave_as_configured() {
    let mut config = SimConfig::new(sample("people-walking.mp4"), 6);
    config.faults = fault_plan(&[
        "refuse@cam1",
        "garbage@cam2",
        "stall=1s@cam3",
        "disconnect=2s@cam4",
        "corrupt=0.1@cam5",
    ]);
    let sim = SimHandle::start(config).expect("start simulator");
    let url = |camera| sim.url(camera);
    let [refused, garbage, stalled, disconnected, corrupted, healthy] = thread::scope(|s| {
        let refused = s.spawn(|| ffprobe(&url(1), "tcp"));
        let garbage = s.spawn(|| ffprobe(&url(2), "tcp"));
        let stalled = s.spawn(|| decode(&url(3), "tcp", 8));
        let disconnected = s.spawn(|| decode(&url(4), "tcp", 8));
        let corrupted = s.spawn(|| decode(&url(5), "tcp", 3));
        let healthy = s.spawn(|| decode(&url(0), "tcp", 3));
        [refused, garbage, stalled, disconnected, corrupted, healthy].map(|h| h.join().unwrap())
    });

    assert!(!refused.succeeded() && refused.elapsed < Duration::from_secs(5));
    assert!(refused.stderr.contains("503"), "{}", refused.stderr);
    assert!(
        !garbage.succeeded() && garbage.elapsed < Duration::from_secs(5),
        "{}",
        garbage.stderr
    );

    // 1 s of frames (10 fps), then silence until ffmpeg's socket timeouts give up.
    assert!(stalled.status.is_some(), "ffmpeg hung on a stalled camera");
    assert!(
        (1..40).contains(&stalled.frames()),
        "{} frames: {}",
        stalled.frames(),
        stalled.stderr
    );
    assert!(stalled.elapsed < Duration::from_secs(12));

    // About 2 s of frames, then the connection is gone.
    assert!(
        (1..60).contains(&disconnected.frames()),
        "{} frames",
        disconnected.frames()
    );
    assert!(
        disconnected.elapsed < Duration::from_secs(7),
        "{:?}",
        disconnected.elapsed
    );

    assert!(corrupted.status.is_some(), "ffmpeg hung on corrupt packets");
    assert!(corrupted.frames() > 0, "{}", corrupted.stderr);
    assert!(
        healthy.succeeded() && healthy.frames() >= 25,
        "{}",
        healthy.stderr
    );
}

/// One request/response exchange of a hand-written RTSP client.
struct RtspClient {
    reader: BufReader<TcpStream>,
    cseq: u32,
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl RtspClient {
    fn connect(sim: &SimHandle) -> RtspClient {
        let stream = TcpStream::connect(sim.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        RtspClient {
            reader: BufReader::new(stream),
            cseq: 0,
        }
    }

    fn send_raw(&mut self, request: &str) -> Response {
        self.reader.get_mut().write_all(request.as_bytes()).unwrap();
        self.read_response()
    }

    fn request(&mut self, method: &str, url: &str, headers: &[&str]) -> Response {
        self.cseq += 1;
        let mut request = format!("{method} {url} RTSP/1.0\r\nCSeq: {}\r\n", self.cseq);
        for header in headers {
            request += &format!("{header}\r\n");
        }
        let response = self.send_raw(&(request + "\r\n"));
        assert_eq!(
            response.header("CSeq"),
            Some(self.cseq.to_string().as_str()),
            "CSeq echoed"
        );
        response
    }

    fn read_response(&mut self) -> Response {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status = line
            .strip_prefix("RTSP/1.0 ")
            .and_then(|rest| rest.get(..3))
            .unwrap_or_else(|| panic!("not an RTSP response: {line:?}"))
            .parse()
            .unwrap();
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            let Some((name, value)) = line.trim_end().split_once(':') else {
                break;
            };
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        let mut response = Response {
            status,
            headers,
            body: String::new(),
        };
        let length: usize = response
            .header("Content-Length")
            .map_or(0, |l| l.parse().unwrap());
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        response.body = String::from_utf8(body).unwrap();
        response
    }
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn rtsp_conversation_and_teardown_from_another_connection() {
    let sim = start(&sample("people-walking-h265.mp4"), 2);
    let url = sim.url(1);
    let mut client = RtspClient::connect(&sim);

    let options = client.request("OPTIONS", &url, &[]);
    assert_eq!(options.status, 200);
    assert!(options.header("Public").unwrap().contains("DESCRIBE"));

    let describe = client.request("DESCRIBE", &url, &["Accept: application/sdp"]);
    assert_eq!(describe.status, 200);
    assert_eq!(
        describe.header("Content-Base"),
        Some(format!("{url}/").as_str())
    );
    assert_eq!(describe.header("Content-Type"), Some("application/sdp"));
    for line in [
        "m=video 0 RTP/AVP 96",
        "a=rtpmap:96 H265/90000",
        "a=control:trackID=0",
        "sprop-vps=",
    ] {
        assert!(
            describe.body.contains(line),
            "{line} missing from\n{}",
            describe.body
        );
    }

    assert_eq!(client.request("DESCRIBE", &sim.url(2), &[]).status, 404);
    assert_eq!(
        client
            .request("DESCRIBE", &format!("rtsp://{}/other", sim.addr()), &[])
            .status,
        404
    );
    assert_eq!(client.request("FLY", &url, &[]).status, 501);
    assert_eq!(
        client.request("PLAY", &url, &[]).status,
        455,
        "PLAY before SETUP"
    );

    // UDP to ports nobody listens on: the server neither knows nor cares.
    let setup = client.request(
        "SETUP",
        &format!("{url}/trackID=0"),
        &["Transport: RTP/AVP;unicast;client_port=9-10"],
    );
    assert_eq!(setup.status, 200);
    let transport = setup.header("Transport").unwrap();
    assert!(
        transport.contains("client_port=9-10;server_port="),
        "{transport}"
    );
    let session = setup.header("Session").unwrap().to_string();
    assert!(session.ends_with(";timeout=60"), "{session}");
    let session_id = session.split(';').next().unwrap().to_string();

    let play = client.request(
        "PLAY",
        &format!("{url}/"),
        &[&format!("Session: {session_id}")],
    );
    assert_eq!(play.status, 200);
    let rtp_info = play.header("RTP-Info").unwrap();
    assert!(
        rtp_info.starts_with(&format!("url={url}/trackID=0;seq=")),
        "{rtp_info}"
    );
    wait_for("the session to play", || sim.stats().sessions_playing == 1);

    assert_eq!(
        client
            .request("GET_PARAMETER", &url, &[&format!("Session: {session_id}")])
            .status,
        200
    );

    // Without CSeq the request cannot be answered properly.
    let no_cseq = client.send_raw(&format!("OPTIONS {url} RTSP/1.0\r\n\r\n"));
    assert_eq!(no_cseq.status, 400);

    // A UDP session outlives its connection, as on real cameras, until TEARDOWN, which
    // may come on a new connection.
    drop(client);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(
        sim.stats().sessions_playing,
        1,
        "UDP session ended with its connection"
    );
    let mut other = RtspClient::connect(&sim);
    let unknown = other.request("TEARDOWN", &url, &["Session: 0000"]);
    assert_eq!(unknown.status, 454);
    let teardown = other.request("TEARDOWN", &url, &[&format!("Session: {session_id}")]);
    assert_eq!(teardown.status, 200);
    wait_for("the session to end", || sim.stats().sessions_playing == 0);
}

#[test]
fn cli_serves_until_its_duration_and_reports_bad_input() {
    let clip = sample("people-walking.mp4");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cgbot"))
        .args([
            "sim",
            "--clip",
            clip.to_str().unwrap(),
            "--cameras",
            "3",
            "--port",
            "0",
            "--duration",
            "20s",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    let expected = format!(
        "serving 3 cameras of {} (H.264 768x432, 10 fps, GOP 10) at rtsp://127.0.0.1:",
        clip.display()
    );
    assert!(banner.starts_with(&expected), "{banner}");
    let (main, sub) = banner
        .trim_end()
        .split_once(", sub streams ")
        .expect("the sub streams named");
    assert!(main.ends_with("/cam/0..2"), "{banner}");
    assert!(sub.ends_with("at .../cam/N/sub"), "{banner}");
    let url = main.rsplit(' ').next().unwrap().replace("0..2", "2");
    let probe = ffprobe(&url, "tcp");
    let _ = child.kill();
    let _ = child.wait();
    assert!(probe.succeeded(), "{}", probe.stderr);

    let image = sample("street-bus-car.jpg");
    let err = fails(common::cgbot(&[
        "sim",
        "--clip",
        image.to_str().unwrap(),
        "--port",
        "0",
    ]));
    assert!(
        err.contains("street-bus-car.jpg") && err.contains("mjpeg"),
        "{err}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let err = fails(common::cgbot(&[
        "sim",
        "--clip",
        clip.to_str().unwrap(),
        "--port",
        &port,
    ]));
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");

    let bad_fault = common::cgbot(&[
        "sim",
        "--clip",
        clip.to_str().unwrap(),
        "--fault",
        "melt@cam1",
    ]);
    assert!(!bad_fault.status.success());
    assert!(common::stderr(&bad_fault).contains("unknown fault `melt`"));
}

#[test]
fn udp_session_without_keepalive_times_out() {
    let mut config = SimConfig::new(sample("people-walking.mp4"), 1);
    config.session_timeout = Duration::from_secs(1);
    let sim = SimHandle::start(config).expect("start simulator");
    let url = sim.url(0);
    let mut client = RtspClient::connect(&sim);
    let setup = client.request(
        "SETUP",
        &format!("{url}/trackID=0"),
        &["Transport: RTP/AVP;unicast;client_port=9-10"],
    );
    let session = setup.header("Session").unwrap().to_string();
    assert!(session.ends_with(";timeout=1"), "{session}");
    let session_id = session.split(';').next().unwrap().to_string();
    let play = client.request("PLAY", &url, &[&format!("Session: {session_id}")]);
    assert_eq!(play.status, 200);
    assert_eq!(sim.stats().sessions_playing, 1);
    // The connection stays open, but no request keeps the session alive.
    wait_for("the session to time out", || {
        sim.stats().sessions_playing == 0
    });
    let late = client.request("GET_PARAMETER", &url, &[&format!("Session: {session_id}")]);
    assert_eq!(late.status, 454);
}
