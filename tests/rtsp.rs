//! The RTSP source end to end: `RtspSession` plays simulated cameras (`cgbot::sim`) over
//! loopback, and what it yields goes through the decode stage. Every wait is bounded by
//! the session's own timeouts or by `PATIENCE`, so a broken client fails instead of
//! hanging, and the bounds are generous for a loaded machine.

mod common;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cgbot::decode::{Decoder, Sampling};
use cgbot::models::Catalogue;
use cgbot::sim::{Credentials, SimConfig, SimHandle};
use cgbot::source::{LiveUnit, RtspError, RtspOptions, RtspSession, Transport};
use common::{fault_plan, sample};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The longest any step may take before the test gives up.
const PATIENCE: Duration = Duration::from_secs(60);

/// Runs async test code on a runtime of its own, outside the simulator's.
fn block_on<F: Future>(test: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("test runtime")
        .block_on(async {
            tokio::time::timeout(PATIENCE, test)
                .await
                .expect("test timed out")
        })
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

async fn connect(url: &str, options: &RtspOptions) -> RtspSession {
    RtspSession::connect(url, options)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Plays the camera until the units span `seconds` of stream time, then closes.
async fn receive(url: &str, options: &RtspOptions, seconds: f64) -> Vec<LiveUnit> {
    let mut session = connect(url, options).await;
    let mut units: Vec<LiveUnit> = Vec::new();
    loop {
        let unit = session.next_unit().await.unwrap_or_else(|e| panic!("{e}"));
        let done = units
            .first()
            .is_some_and(|first| unit.wall_time - first.wall_time >= seconds);
        units.push(unit);
        if done {
            break;
        }
    }
    session.close().await;
    units
}

/// What the decode stage made of a run of units.
struct Decoded {
    frames: u64,
    keyframes: u64,
    rejected: u64,
    damaged: u64,
    /// Presentation times in output order.
    pts: Vec<f64>,
    sizes: Vec<(u32, u32)>,
}

fn decode(units: &[LiveUnit]) -> Decoded {
    let info = units[0].stream.stream_info();
    let mut decoder = Decoder::new(&info, &Catalogue::default_input(), Sampling::All).unwrap();
    let (mut keyframes, mut pts, mut sizes) = (0, Vec::new(), Vec::new());
    let mut emit = |frame: cgbot::decode::Frame| {
        keyframes += u64::from(frame.keyframe);
        pts.push(frame.pts);
        sizes.push((frame.picture.width(), frame.picture.height()));
    };
    for unit in units {
        decoder.push(&unit.access_unit(), &mut emit).unwrap();
    }
    decoder.finish(&mut emit).unwrap();
    let stats = decoder.stats();
    Decoded {
        frames: stats.frames_decoded,
        keyframes,
        rejected: stats.units_rejected,
        damaged: stats.frames_damaged,
        pts,
        sizes,
    }
}

/// How the clip is coded, as far as these tests care.
struct Clip {
    size: (u32, u32),
    fps: f64,
    /// Pictures after a keyframe that cannot be decoded when a session starts at it: the
    /// RASL pictures of an open-GOP H.265 CRA, which refer to the GOP before.
    undecodable_at_start: u64,
}

/// Two seconds of the camera decode completely: every unit a clean picture of the
/// clip's size (but the undecodable ones of an open GOP), keyframes flagged as the
/// decoder sees them, times increasing from when the session started.
fn assert_plays(url: &str, transport: Transport, clip: &Clip) {
    let Clip { size, fps, .. } = *clip;
    let options = RtspOptions {
        transport,
        ..RtspOptions::default()
    };
    let before = unix_now();
    let units = block_on(receive(url, &options, 2.0));
    let after = unix_now();

    // In decode order a B-frame's reference comes first, from further ahead in time.
    let minimum = (1.5 * fps) as usize;
    assert!(units.len() >= minimum, "{} units", units.len());
    assert!(units[0].keyframe, "the first unit is a keyframe");
    let stream = &units[0].stream;
    assert_eq!((stream.width, stream.height), size);
    assert!(
        units
            .iter()
            .all(|u| std::sync::Arc::ptr_eq(&u.stream, stream)),
        "parameters never change"
    );
    assert!(units.iter().all(|u| u.lost_packets == 0));

    let decoded = decode(&units);
    assert_eq!(decoded.rejected, 0);
    assert_eq!(decoded.damaged, 0);
    let units_count = units.len() as u64;
    assert!(
        (units_count - clip.undecodable_at_start..=units_count).contains(&decoded.frames),
        "{} of {units_count} units decoded",
        decoded.frames
    );
    assert!(
        decoded.sizes.iter().all(|&s| s == size),
        "{:?}",
        decoded.sizes
    );
    let flagged = units.iter().filter(|u| u.keyframe).count() as u64;
    assert_eq!(decoded.keyframes, flagged, "keyframes flagged as decoded");
    assert!(
        decoded.pts.windows(2).all(|w| w[0] < w[1]),
        "presentation times not increasing: {:?}",
        decoded.pts
    );
    let first = decoded.pts[0];
    assert!(
        (before..=after).contains(&first),
        "first picture at {first}, session ran {before}..{after}"
    );
    let span = decoded.pts[decoded.pts.len() - 1] - first;
    assert!((1.9..2.5).contains(&span), "{span} s of pictures");
}

fn start(config: SimConfig) -> SimHandle {
    SimHandle::start(config).expect("start simulator")
}

#[test]
fn h264_over_tcp() {
    let sim = start(SimConfig::new(sample("people-walking.mp4"), 1));
    let clip = Clip {
        size: (768, 432),
        fps: 10.0,
        undecodable_at_start: 0,
    };
    assert_plays(&sim.url(0), Transport::Tcp, &clip);
}

#[test]
fn h265_over_tcp() {
    // Open GOP: an IDR picture first, CRA pictures with 4 RASL pictures each after.
    let sim = start(SimConfig::new(sample("people-walking-h265.mp4"), 1));
    let clip = Clip {
        size: (768, 432),
        fps: 10.0,
        undecodable_at_start: 4,
    };
    assert_plays(&sim.url(0), Transport::Tcp, &clip);
}

/// UDP sessions outlive their connection on real cameras (and the simulator) unless torn
/// down, so this also checks that closing ends them, again and again as in patrol mode;
/// and they end when no keepalive comes in time, so a long visit checks those.
#[test]
fn h264_over_udp_with_keepalive_and_teardown() {
    let mut config = SimConfig::new(sample("street-static-h264.mp4"), 1);
    config.session_timeout = Duration::from_secs(2);
    let sim = start(config);
    let clip = Clip {
        size: (640, 480),
        fps: 25.0,
        undecodable_at_start: 0,
    };
    for _visit in 0..2 {
        assert_plays(&sim.url(0), Transport::Udp, &clip);
        assert_eq!(
            sim.stats().sessions_playing,
            0,
            "the session plays on after close"
        );
    }
    let options = RtspOptions {
        transport: Transport::Udp,
        frame_timeout: Duration::from_secs(3),
        ..RtspOptions::default()
    };
    let units = block_on(receive(&sim.url(0), &options, 5.0));
    assert!(units.len() > 100, "{} units in 5 s", units.len());
}

/// Cameras whose SDP lacks the parameter sets send them in band only; the session must
/// pick them up there. A proxy takes them out of the simulator's SDP.
#[test]
fn parameter_sets_in_band_only() {
    for (file, undecodable_at_start) in [("people-walking.mp4", 0), ("people-walking-h265.mp4", 4)]
    {
        let sim = start(SimConfig::new(sample(file), 1));
        let proxy = without_sdp_parameter_sets(sim.addr());
        let clip = Clip {
            size: (768, 432),
            fps: 10.0,
            undecodable_at_start,
        };
        assert_plays(&format!("rtsp://{proxy}/cam/0"), Transport::Tcp, &clip);
    }
}

/// Listens for one RTSP connection and relays it to `camera`, taking the `sprop-*`
/// parameters out of the first answer (DESCRIBE's SDP). Interleaved media then passes
/// through unchanged.
fn without_sdp_parameter_sets(camera: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    // On a thread and runtime of its own, which lives as long as the connection.
    std::thread::spawn(move || {
        block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let (client, _) = listener.accept().await.unwrap();
            let server = tokio::net::TcpStream::connect(camera).await.unwrap();
            let (mut from_client, mut to_client) = client.into_split();
            let (from_server, mut to_server) = server.into_split();
            let requests = tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
            });
            let mut from_server = BufReader::new(from_server);
            let mut head = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                from_server.read_line(&mut line).await.unwrap();
                if let Some(value) = line.strip_prefix("Content-Length:") {
                    length = value.trim().parse().unwrap();
                } else {
                    head += &line;
                }
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            let mut sdp = vec![0; length];
            from_server.read_exact(&mut sdp).await.unwrap();
            let sdp: String = String::from_utf8(sdp)
                .unwrap()
                .split_inclusive("\r\n")
                .filter_map(|line| match line.trim_end().split_once(' ') {
                    Some((fmtp, parameters)) if fmtp.starts_with("a=fmtp:") => {
                        let kept: Vec<&str> = parameters
                            .split(';')
                            .filter(|p| !p.starts_with("sprop-"))
                            .collect();
                        (!kept.is_empty()).then(|| format!("{fmtp} {}\r\n", kept.join(";")))
                    }
                    _ => Some(line.to_string()),
                })
                .collect();
            assert!(!sdp.contains("sprop-"), "{sdp}");
            let head = head.trim_end_matches("\r\n");
            let answer = format!("{head}\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len());
            to_client.write_all(answer.as_bytes()).await.unwrap();
            let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
            requests.abort();
        })
    });
    addr
}

#[test]
fn digest_authentication() {
    let mut config = SimConfig::new(sample("people-walking.mp4"), 1);
    config.credentials = Some(Credentials {
        user: "admin".into(),
        password: "s3cret pass".into(),
    });
    let sim = start(config);
    let with = |user_info: &str| {
        sim.url(0)
            .replace("rtsp://", &format!("rtsp://{user_info}@"))
    };
    let options = RtspOptions::default();
    block_on(async {
        let mut session = connect(&with("admin:s3cret%20pass"), &options).await;
        let unit = session.next_unit().await.unwrap();
        assert!(unit.keyframe && !unit.data.is_empty());
        session.close().await;

        let wrong = RtspSession::connect(&with("admin:guess-this"), &options).await;
        let Err(error @ RtspError::Unauthorized { .. }) = wrong else {
            panic!("expected Unauthorized");
        };
        let message = error.to_string();
        assert!(message.contains("authentication failed"), "{message}");
        assert!(message.contains("rtsp://***@127.0.0.1:"), "{message}");
        assert!(!message.contains("guess-this"), "{message}");

        let anonymous = RtspSession::connect(&sim.url(0), &options).await;
        let Err(error @ RtspError::Unauthorized { .. }) = anonymous else {
            panic!("expected Unauthorized");
        };
        assert!(error.to_string().contains("URL has none"), "{error}");
    });
}

#[test]
fn unreachable_and_silent_cameras() {
    let options = RtspOptions {
        connect_timeout: Duration::from_secs(1),
        ..RtspOptions::default()
    };
    // A port nobody listens on any more.
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Accepts connections (the kernel does, from the backlog) and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    block_on(async {
        let url = format!("rtsp://admin:hunter2@127.0.0.1:{closed_port}/cam/0");
        let refused = RtspSession::connect(&url, &options).await;
        let Err(error @ RtspError::Connect { .. }) = refused else {
            panic!("expected Connect");
        };
        let message = error.to_string();
        assert!(
            message.starts_with(&format!(
                "rtsp://***@127.0.0.1:{closed_port}/cam/0: cannot connect"
            )),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");

        let url = format!("rtsp://admin:hunter2@127.0.0.1:{silent_port}/cam/0");
        let started = Instant::now();
        let silent = RtspSession::connect(&url, &options).await;
        let Err(error @ RtspError::Timeout { .. }) = silent else {
            panic!("expected Timeout");
        };
        assert!(started.elapsed() < Duration::from_secs(10));
        let message = error.to_string();
        assert!(
            message.contains("no answer to DESCRIBE within 1s"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
    });
}

#[test]
fn camera_faults() {
    let mut config = SimConfig::new(sample("people-walking.mp4"), 6);
    config.faults = fault_plan(&[
        "refuse@cam1",
        "garbage@cam2",
        "stall=1s@cam3",
        "disconnect=1s@cam4",
        "corrupt=0.2@cam5",
    ]);
    let sim = start(config);
    let options = RtspOptions {
        frame_timeout: Duration::from_secs(1),
        ..RtspOptions::default()
    };
    block_on(async {
        let refused = RtspSession::connect(&sim.url(1), &options).await;
        let Err(error @ RtspError::Status { status: 503, .. }) = refused else {
            panic!("expected 503");
        };
        assert!(
            error
                .to_string()
                .ends_with("answered DESCRIBE with 503 Service Unavailable"),
            "{error}"
        );

        let garbage = RtspSession::connect(&sim.url(2), &options).await;
        assert!(
            matches!(garbage, Err(RtspError::Protocol { .. })),
            "{:?}",
            garbage.err()
        );

        // A second of pictures, then silence on an open connection.
        let mut stalled = connect(&sim.url(3), &options).await;
        let (units, error, silence) = play_until_error(&mut stalled).await;
        assert!(units > 0);
        assert!(matches!(error, RtspError::Stalled { .. }), "{error}");
        assert!(
            (Duration::from_millis(900)..Duration::from_secs(6)).contains(&silence),
            "stalled after {silence:?} of silence"
        );
        assert!(error.to_string().contains("no video for 1s"), "{error}");
        stalled.close().await;

        let mut disconnected = connect(&sim.url(4), &options).await;
        let (units, error, _) = play_until_error(&mut disconnected).await;
        assert!(units > 0);
        assert!(matches!(error, RtspError::Ended { .. }), "{error}");
        disconnected.close().await;

        // Damaged pictures are the decoder's business; the session plays on.
        let mut corrupted = connect(&sim.url(5), &options).await;
        for _ in 0..30 {
            corrupted
                .next_unit()
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        corrupted.close().await;
    });
}

/// Cameras that cannot have the configured transport: VLC's server refuses TCP (461), a
/// firewall drops UDP. The session is made over the other one.
#[test]
fn the_other_transport_when_one_is_refused_or_silent() {
    let mut config = SimConfig::new(sample("people-walking.mp4"), 2);
    config.faults = fault_plan(&["udp-only@cam0", "udp-blocked@cam1"]);
    let sim = start(config);
    let options = |transport| RtspOptions {
        transport,
        connect_timeout: Duration::from_secs(2),
        ..RtspOptions::default()
    };
    block_on(async {
        let mut tcp_refused = connect(&sim.url(0), &options(Transport::Tcp)).await;
        assert_eq!(tcp_refused.transport(), Transport::Udp);
        tcp_refused
            .next_unit()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        tcp_refused.close().await;

        let asked = Instant::now();
        let mut udp_silent = connect(&sim.url(1), &options(Transport::Udp)).await;
        assert_eq!(udp_silent.transport(), Transport::Tcp);
        assert!(
            asked.elapsed() >= Duration::from_secs(2),
            "gave UDP its connect timeout, not {:?}",
            asked.elapsed()
        );
        udp_silent
            .next_unit()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        udp_silent.close().await;
    });
    assert_eq!(sim.stats().sessions_playing, 0, "every session torn down");
}

/// VLC's server starts a session wherever its stream is, often inside a fragmented
/// picture, and retina refuses a fragment whose start it never saw: that must cost the
/// picture, not the session.
#[test]
fn sessions_joining_mid_picture_play_on() {
    for file in ["people-walking.mp4", "people-walking-h265.mp4"] {
        let mut config = SimConfig::new(sample(file), 1);
        config.faults = fault_plan(&["mid-picture@cam0"]);
        let sim = start(config);
        for transport in [Transport::Tcp, Transport::Udp] {
            let options = RtspOptions {
                transport,
                ..RtspOptions::default()
            };
            let units = block_on(receive(&sim.url(0), &options, 2.0));
            assert!(
                units.len() >= 15 && units[0].keyframe,
                "{file} over {}: {} units",
                transport.name(),
                units.len()
            );
        }
    }
}

/// Plays until the first error: units received, the error, and how long it came after
/// the last unit.
async fn play_until_error(session: &mut RtspSession) -> (usize, RtspError, Duration) {
    let mut units = 0;
    let mut last = Instant::now();
    loop {
        match session.next_unit().await {
            Ok(_) => {
                units += 1;
                last = Instant::now();
            }
            Err(e) => return (units, e, last.elapsed()),
        }
    }
}

/// A camera with only MJPEG video and G.711 audio: one DESCRIBE answered, nothing else.
#[test]
fn unsupported_codec_is_named() {
    block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("rtsp://{}/mjpeg", listener.local_addr().unwrap());
        let base = url.clone();
        let camera = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                let mut byte = [0];
                stream.read_exact(&mut byte).await.unwrap();
                request.push(byte[0]);
            }
            let request = String::from_utf8(request).unwrap();
            let cseq = request
                .lines()
                .find_map(|l| l.strip_prefix("CSeq: "))
                .unwrap();
            let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=mjpeg\r\nt=0 0\r\n\
                       m=video 0 RTP/AVP 26\r\na=control:trackID=0\r\n\
                       m=audio 0 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=control:trackID=1\r\n";
            let response = format!(
                "RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nContent-Base: {base}/\r\n\
                 Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            );
            stream.write_all(response.as_bytes()).await.unwrap();
            // Hold the connection until the client is done with it.
            let _ = stream.read(&mut [0; 64]).await;
        });
        let result = RtspSession::connect(&url, &RtspOptions::default()).await;
        let Err(error @ RtspError::UnsupportedCodec { .. }) = result else {
            panic!("expected UnsupportedCodec");
        };
        assert!(
            error
                .to_string()
                .ends_with("the camera offers video/jpeg, audio/pcma"),
            "{error}"
        );
        camera.await.unwrap();
    });
}
