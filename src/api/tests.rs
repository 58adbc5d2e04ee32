//! The API over real HTTP on 127.0.0.1: a real server task, a blocking `ureq` client,
//! a real case store filled by the pipeline's filing end, and a fixed stand-in for the
//! daemon's live state.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tokio::sync::oneshot;

use super::*;
use crate::cases::Categories;
use crate::detect::Detection;
use crate::pipeline::test_support::street_sample;
use crate::pipeline::Filing;

const TOKEN: &str = "s3cret-token";
const METRICS: &str = "# HELP cgbot_frames_analysed_total Frames analysed.\n\
# TYPE cgbot_frames_analysed_total counter\n\
cgbot_frames_analysed_total{camera=\"cam-1\"} 42\n";

/// Stands in for the daemon: fixed answers.
struct FixedView {
    ready: Result<(), String>,
    cameras: Vec<CameraView>,
    /// cam-1's latest picture.
    snapshot: Option<Snapshot>,
}

impl DaemonView for FixedView {
    fn readiness(&self) -> Result<(), String> {
        self.ready.clone()
    }
    fn metrics_text(&self) -> String {
        METRICS.into()
    }
    fn cameras(&self) -> Vec<CameraView> {
        self.cameras.clone()
    }
    fn snapshot(&self, camera_id: &str) -> Option<Snapshot> {
        self.snapshot.clone().filter(|_| camera_id == "cam-1")
    }
}

fn camera_view(id: &str, state: CameraState) -> CameraView {
    CameraView {
        id: id.into(),
        name: format!("{id} street"),
        state,
        problem: match state {
            CameraState::Backoff => Some(CameraProblem::Refused),
            CameraState::Failed => Some(CameraProblem::Unauthorized),
            _ => None,
        },
        stream: Some(format!("rtsp://***:***@10.0.0.7:554/{id}")),
        priority: id == "cam-1",
        last_frame_at: Some(1_795_000_000.5),
        sampled_fps: 0.5,
        last_error: (state == CameraState::Backoff).then(|| "connection refused".into()),
        connection_attempts: 4,
        reconnects: 3,
        consecutive_failures: 0,
        frames_received: 1000,
        frames_decoded: 40,
        frames_analysed: 30,
        frames_skipped: 2,
        visits: 7,
        revisit_interval_s: Some(300.0),
        since_visit_s: Some(120.0),
        view_likeness: Some(0.97),
        replica: None,
    }
}

fn fixed_view() -> FixedView {
    FixedView {
        ready: Ok(()),
        cameras: vec![
            camera_view("cam-1", CameraState::Streaming),
            camera_view("cam-2", CameraState::Backoff),
            camera_view("cam-3", CameraState::Waiting),
            camera_view("cam-4", CameraState::Failed),
        ],
        snapshot: None,
    }
}

struct Reply {
    status: u16,
    content_type: String,
    challenge: Option<String>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{e}: {} is not JSON: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Status and `{"error"}` text of an error answer.
    fn error(&self) -> (u16, String) {
        assert_eq!(self.content_type, "application/json");
        let json = self.json();
        let message = json["error"].as_str().expect("an error text").to_string();
        (self.status, message)
    }
}

/// `serve` on its own runtime, as the daemon runs it.
struct Server {
    base: String,
    agent: ureq::Agent,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    runtime: tokio::runtime::Runtime,
}

impl Server {
    fn start(view: impl DaemonView, token: Option<&str>, db: PathBuf) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let listen = listener.local_addr().unwrap();
        let config = ApiConfig {
            listen,
            token: token.map(String::from),
            db,
            console: crate::console::ConsoleConfig::default(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = runtime.spawn(serve(listener, config, Arc::new(view), async {
            let _ = stopped.await;
        }));
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            base: format!("http://{listen}"),
            agent,
            stop,
            task,
            runtime,
        }
    }

    fn get_as(&self, path: &str, authorization: Option<&str>) -> Reply {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        let mut response = request.call().unwrap();
        let header = |name| {
            response
                .headers()
                .get(name)
                .map(|v: &axum::http::HeaderValue| v.to_str().unwrap().to_string())
        };
        Reply {
            status: response.status().as_u16(),
            content_type: header("content-type").unwrap_or_default(),
            challenge: header("www-authenticate"),
            body: response.body_mut().read_to_vec().unwrap(),
        }
    }

    /// With the right token.
    fn get(&self, path: &str) -> Reply {
        self.get_as(path, Some(&format!("Bearer {TOKEN}")))
    }

    /// The request line exactly as given, past any client's path normalisation.
    fn raw_get(&self, target: &str) -> String {
        let mut stream = TcpStream::connect(self.base.trim_start_matches("http://")).unwrap();
        write!(
            stream,
            "GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        reply
    }

    /// Completes the shutdown future and waits for `serve` to return.
    fn stop(self) -> std::io::Result<()> {
        self.stop.send(()).unwrap();
        let Self { runtime, task, .. } = self;
        runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(10), task)
                .await
                .expect("serve returns after shutdown")
                .unwrap()
        })
    }
}

const BASE_TIME: f64 = 1_795_000_000.0;

fn bbox(label: &str, bbox: [f32; 4]) -> Detection {
    Detection {
        label: label.into(),
        class: 2,
        score: 0.8,
        bbox,
    }
}

/// Files real cases the way the daemon does: the first picture of the street clip goes
/// through the rules, cases and store stages every 10 s of camera time with the van (and
/// from 10 s on a second car) where a detector finds them; the example camera's zone has
/// a 30 s dwell, so both are filed with evidence. Returns the still open writer.
fn file_cases(db: &Path) -> Store {
    let (camera, input, mut frame) = street_sample();
    let mut store = Store::open(db).unwrap();
    let mut filing = Filing::new(&camera, Categories::builtin(), &store, input, BASE_TIME).unwrap();
    let van = bbox("truck", [520.0, 213.0, 640.0, 337.0]);
    let car = bbox("car", [505.0, 150.0, 575.0, 205.0]);
    for t in (0..=60).step_by(10) {
        frame.pts = f64::from(t);
        let mut found = vec![van.clone()];
        if t >= 10 {
            found.push(car.clone());
        }
        filing.on_frame(&mut store, &frame, &found).unwrap();
    }
    assert_eq!(filing.stats.filed, 2, "{:?}", filing.stats);
    store
}

fn ids(reply: &Reply) -> Vec<String> {
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn probes_need_no_token_and_everything_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(fixed_view(), Some(TOKEN), dir.path().join("cases.db"));
    let health = server.get_as("/healthz", None);
    assert_eq!((health.status, health.text().as_str()), (200, "ok"));
    assert_eq!(server.get_as("/readyz", None).status, 200);

    for path in [
        "/metrics",
        "/api/cameras",
        "/api/cases",
        "/api/cases/C1/evidence/first.jpg",
        "/api/cameras/cam-1/snapshot.jpg",
        "/api/nowhere",
    ] {
        let missing = server.get_as(path, None);
        assert_eq!(missing.error().0, 401, "{path}");
        assert_eq!(
            missing.challenge.as_deref(),
            Some(r#"Bearer realm="cgbot""#)
        );
        for wrong in [
            "Bearer nope",
            "Bearer s3cret-token2",
            "Basic czNjcmV0LXRva2Vu",
            TOKEN,
        ] {
            let refused = server.get_as(path, Some(wrong));
            assert_eq!(refused.error().0, 401, "{path} with {wrong}");
            assert!(refused.challenge.unwrap().starts_with("Bearer"));
        }
    }
    assert_eq!(server.get("/api/cameras").status, 200);
    assert_eq!(
        server
            .get_as("/api/cameras", Some(&format!("bearer  {TOKEN}")))
            .status,
        200
    );
    assert_eq!(
        server.get("/nowhere").error(),
        (404, "no such route".to_string())
    );
    let post = server
        .agent
        .post(format!("{}/api/cameras", server.base))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send("")
        .unwrap();
    assert_eq!(post.status().as_u16(), 405);
    server.stop().unwrap();
}

#[test]
fn oversized_requests_are_refused_with_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(fixed_view(), Some(TOKEN), dir.path().join("cases.db"));
    let long = format!("/api/cases?camera={}", "x".repeat(MAX_URI));
    let refused = server.get(&long);
    assert_eq!(refused.error().0, 414);
    let body = format!(
        "{{\"version\": \"v\", \"zones\": [], \"pad\": \"{}\"}}",
        "x".repeat(MAX_BODY)
    );
    let put = server
        .agent
        .put(format!("{}/api/cameras/cam-1/zones", server.base))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .header("Content-Type", "application/json")
        .send(body)
        .unwrap();
    assert_eq!(put.status().as_u16(), 413);
    // The probes stay outside the API's bounds and answer.
    assert_eq!(server.get_as("/healthz", None).status, 200);
    server.stop().unwrap();
}

#[test]
fn readyz_says_why_the_daemon_is_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let view = FixedView {
        ready: Err("model yolox_nano not loaded".into()),
        ..fixed_view()
    };
    let server = Server::start(view, None, dir.path().join("cases.db"));
    let (status, message) = server.get_as("/readyz", None).error();
    assert_eq!(status, 503);
    assert_eq!(message, "not ready: model yolox_nano not loaded");
    assert_eq!(server.get_as("/healthz", None).status, 200);
    server.stop().unwrap();
}

#[test]
fn metrics_are_the_daemons_prometheus_text() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(fixed_view(), None, dir.path().join("cases.db"));
    let metrics = server.get_as("/metrics", None);
    assert_eq!(metrics.status, 200);
    assert_eq!(
        metrics.content_type,
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(metrics.text(), METRICS);
    server.stop().unwrap();
}

#[test]
fn camera_states_and_problems_serialize_and_parse_by_one_name() {
    for state in CameraState::ALL {
        assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        assert_eq!(
            state.as_str().parse::<CameraCondition>().unwrap(),
            CameraCondition::State(state)
        );
    }
    for problem in CameraProblem::ALL {
        assert_eq!(serde_json::to_value(problem).unwrap(), problem.as_str());
        assert_eq!(
            problem.as_str().parse::<CameraCondition>().unwrap(),
            CameraCondition::Problem(problem)
        );
    }
    let error = "Streaming"
        .parse::<CameraCondition>()
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "unknown camera state or problem `Streaming` (one of connecting, streaming, backoff, failed, waiting, stopped, \
         elsewhere, refused, unauthorized, not_found, timeout, stalled, disconnected, error, misconfigured, frozen, dark, view_changed)"
    );
}

/// The API shows cameras exactly as the daemon gives them (the daemon redacts stream
/// credentials): nothing added, nothing changed.
#[test]
fn cameras_are_listed_as_given_filtered_by_state_and_looked_up() {
    let dir = tempfile::tempdir().unwrap();
    let view = fixed_view();
    let expected = serde_json::to_value(&view.cameras).unwrap();
    let server = Server::start(view, Some(TOKEN), dir.path().join("cases.db"));
    let all = server.get("/api/cameras");
    assert_eq!(all.content_type, "application/json");
    assert_eq!(all.json(), expected);
    assert_eq!(all.json()[0]["stream"], "rtsp://***:***@10.0.0.7:554/cam-1");

    assert_eq!(ids(&server.get("/api/cameras?state=backoff")), ["cam-2"]);
    assert_eq!(ids(&server.get("/api/cameras?state=failed")), ["cam-4"]);
    assert_eq!(ids(&server.get("/api/cameras?state=refused")), ["cam-2"]);
    assert_eq!(
        ids(&server.get("/api/cameras?state=unauthorized")),
        ["cam-4"]
    );
    assert!(ids(&server.get("/api/cameras?state=frozen")).is_empty());
    let (status, message) = server.get("/api/cameras?state=broken").error();
    assert_eq!(status, 400);
    assert!(
        message.contains("one of connecting, streaming"),
        "{message}"
    );
    assert_eq!(server.get("/api/cameras?colour=red").error().0, 400);

    let one = server.get("/api/cameras/cam-3");
    assert_eq!(one.json(), expected[2]);
    assert_eq!(
        server.get("/api/cameras/cam-9").error(),
        (404, "no camera cam-9".to_string())
    );
    server.stop().unwrap();
}

#[test]
fn a_cameras_snapshot_is_served_as_kept_and_404_until_there_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let jpeg = vec![0xff, 0xd8, 0xff, 0xe0, 1, 2, 3, 0xff, 0xd9];
    let view = FixedView {
        snapshot: Some(Snapshot {
            jpeg: Arc::new(jpeg.clone()),
            width: 1920,
            height: 1080,
            taken_at: BASE_TIME,
            detections: vec![],
        }),
        ..fixed_view()
    };
    let server = Server::start(view, Some(TOKEN), dir.path().join("cases.db"));
    let picture = server.get("/api/cameras/cam-1/snapshot.jpg");
    assert_eq!(
        (picture.status, picture.content_type.as_str()),
        (200, "image/jpeg")
    );
    assert_eq!(picture.body, jpeg);
    let stamped = server
        .agent
        .get(format!("{}/api/cameras/cam-1/snapshot.jpg", server.base))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .call()
        .unwrap();
    let header = |name: &str| {
        stamped
            .headers()
            .get(name)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(header("x-snapshot-taken-at"), "1795000000.000");
    assert_eq!(header("cache-control"), "no-store");
    let (status, message) = server.get("/api/cameras/cam-2/snapshot.jpg").error();
    assert_eq!(status, 404);
    assert!(message.contains("cam-2 has no snapshot yet"), "{message}");
    assert_eq!(
        server.get("/api/cameras/cam-9/snapshot.jpg").error(),
        (404, "no camera cam-9".to_string())
    );
    server.stop().unwrap();
}

#[test]
fn cases_are_listed_with_the_store_filters() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cases.db");
    let _writer = file_cases(&db);
    let server = Server::start(fixed_view(), Some(TOKEN), db);

    let all = server.get("/api/cases");
    let cases = all.json();
    assert_eq!(cases.as_array().unwrap().len(), 2, "{cases:#}");
    let (van, car) = (&cases[0], &cases[1]);
    assert_eq!(van["first_seen"], BASE_TIME);
    assert_eq!(car["first_seen"], BASE_TIME + 10.0);
    assert_eq!(van["status"], "filed");
    assert_eq!(van["category"]["code"], "0505");
    assert_eq!(van["camera_id"], "demo-street-01");
    let (van, car) = (
        van["id"].as_str().unwrap().to_string(),
        car["id"].as_str().unwrap().to_string(),
    );
    let both = [van.as_str(), car.as_str()];

    let listed = |query: &str| ids(&server.get(&format!("/api/cases?{query}")));
    assert_eq!(listed("status=filed"), both);
    assert!(listed("status=closed").is_empty());
    assert_eq!(listed("camera=demo-street-01&event=illegal_parking"), both);
    assert!(listed("camera=cam-9").is_empty());
    assert!(listed("event=exposed_litter").is_empty());
    assert_eq!(
        listed(&format!("since={}", BASE_TIME + 5.0)),
        [car.as_str()]
    );
    assert_eq!(
        listed(&format!("until={}", BASE_TIME + 5.0)),
        [van.as_str()]
    );
    // 1_795_000_000 is 2026-11-18T11:06:40Z.
    assert_eq!(listed("since=2026-11-18T11:06:45Z"), [car.as_str()]);
    assert_eq!(listed("limit=1"), [van.as_str()]);
    assert_eq!(listed(&format!("limit=1&since={}", BASE_TIME + 0.5)), [car]);

    for (query, complaint) in [
        ("status=fild", "unknown variant `fild`"),
        ("since=yesterday", "since: `yesterday` is neither"),
        ("limit=-1", "limit"),
        ("limit=1001", "limit 1001 is above 1000"),
        ("camra=x", "unknown field `camra`"),
    ] {
        let (status, message) = server.get(&format!("/api/cases?{query}")).error();
        assert_eq!(status, 400, "{query}");
        assert!(message.contains(complaint), "{query}: {message}");
    }
    server.stop().unwrap();
}

#[test]
fn a_case_comes_with_history_and_evidence_images_and_nothing_outside_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cases.db");
    let writer = file_cases(&db);
    let evidence_dir = Store::open(&db).unwrap().evidence_dir();
    let cases = writer.cases(&CaseFilter::default()).unwrap();
    let id = cases[0].id.clone();
    let server = Server::start(fixed_view(), Some(TOKEN), db.clone());

    let detail = server.get(&format!("/api/cases/{id}")).json();
    assert_eq!(detail["id"], id.as_str());
    assert_eq!(detail["status"], "filed");
    let steps: Vec<_> = detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["to"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["detected", "filed"]);
    // Each step's time also in the camera's local time, as the case's own times are.
    let filed = &detail["history"][1];
    assert_eq!(
        filed["ts_rfc3339"].as_str(),
        Some(
            crate::local_time::rfc3339(filed["ts"].as_f64().unwrap(), cases[0].utc_offset).as_str()
        )
    );
    assert!(detail["verdict_at_rfc3339"].is_null(), "no verdict yet");
    let list = server.get(&format!("/api/cases/{id}/evidence")).json();
    assert_eq!(detail["evidence"], list);
    let kinds: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["first", "first-crop", "filed", "filed-crop"]);
    for item in list.as_array().unwrap() {
        // A camera without a main stream to grab: drawn on the analysed frame.
        assert_eq!(item["source"], "analysed", "{item}");
        assert!(item.get("fallback_reason").is_none(), "{item}");
    }
    assert!(
        !list.to_string().contains(dir.path().to_str().unwrap()),
        "disk paths stay private"
    );

    for item in list.as_array().unwrap() {
        let url = item["url"].as_str().unwrap();
        let image = server.get(url);
        assert_eq!(
            (image.status, image.content_type.as_str()),
            (200, "image/jpeg"),
            "{url}"
        );
        let kind = item["kind"].as_str().unwrap();
        let on_disk = std::fs::read(evidence_dir.join(&id).join(format!("{kind}.jpg"))).unwrap();
        assert_eq!(image.body, on_disk, "{url}");
        assert_eq!(&image.body[..2], [0xff, 0xd8]);
    }

    // An operator confirms it: the verdict's time is published in local time too.
    let at = cases[0].last_seen + 60.0;
    Store::open(&db)
        .unwrap()
        .operator_action(
            &id,
            crate::cases::OperatorAction::Confirm,
            "op",
            None,
            at,
            Duration::ZERO,
        )
        .unwrap();
    let detail = server.get(&format!("/api/cases/{id}")).json();
    assert_eq!(
        detail["verdict_at_rfc3339"].as_str(),
        Some(crate::local_time::rfc3339(at, cases[0].utc_offset).as_str())
    );

    let evidence = |name: &str| server.get(&format!("/api/cases/{id}/evidence/{name}"));
    assert_eq!(evidence("after.jpg").error().0, 404);
    assert_eq!(evidence("first.png").error().0, 400);
    // A name that would lead back to a real image through a naive join.
    assert_eq!(evidence(&format!("..%2F{id}%2Ffirst.jpg")).error().0, 400);
    for id_or_name in [
        "%2e%2e%2f%2e%2e%2fcases.db",
        "..%2F..%2Fcases.db",
        "first.jpg%00",
        "%2e%2e.jpg",
        ".jpg",
    ] {
        assert_eq!(evidence(id_or_name).error().0, 400, "{id_or_name}");
        let (status, _) = server
            .get(&format!("/api/cases/{id_or_name}/evidence/first.jpg"))
            .error();
        assert!(status == 400 || status == 404, "{id_or_name}: {status}");
    }
    let raw = server.raw_get(&format!("/api/cases/{id}/evidence/../../../cases.db"));
    assert!(raw.starts_with("HTTP/1.1 404"), "{raw}");
    assert!(!raw.contains("SQLite"), "{raw}");

    // An image the store lists but the disk lost.
    std::fs::remove_file(evidence_dir.join(&id).join("first.jpg")).unwrap();
    assert_eq!(evidence("first.jpg").error().0, 404);

    for path in ["", "/evidence", "/evidence/first.jpg"] {
        let (status, message) = server.get(&format!("/api/cases/C0000{path}")).error();
        assert_eq!((status, message.as_str()), (404, "no case C0000"), "{path}");
    }
    server.stop().unwrap();
}

#[test]
fn reads_go_on_while_the_daemon_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cases.db");
    let mut writer = file_cases(&db);
    let server = Server::start(fixed_view(), Some(TOKEN), db);
    let done = std::sync::atomic::AtomicBool::new(false);
    let writes = std::thread::scope(|scope| {
        let writing = scope.spawn(|| {
            let mut writes = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let mut case = writer.cases(&CaseFilter::default()).unwrap().remove(0);
                case.updated_at += 1.0;
                let changes = crate::cases::Changes {
                    upserts: vec![case],
                    ..Default::default()
                };
                writer.write(&changes).unwrap();
                writes += 1;
            }
            writes
        });
        for _ in 0..100 {
            assert_eq!(ids(&server.get("/api/cases")).len(), 2);
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        writing.join().unwrap()
    });
    assert!(writes > 0);
    server.stop().unwrap();
}

#[test]
fn without_a_database_case_routes_answer_503() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cases.db");
    let server = Server::start(fixed_view(), None, db.clone());
    let (status, message) = server.get_as("/api/cases", None).error();
    assert_eq!(status, 503);
    assert!(message.contains("no case database"), "{message}");
    assert!(
        !db.exists(),
        "the API does not create the daemon's database"
    );
    server.stop().unwrap();
}

#[test]
fn serve_returns_once_shutdown_completes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(fixed_view(), None, dir.path().join("cases.db"));
    let addr = server.base.trim_start_matches("http://").to_string();
    assert_eq!(server.get_as("/healthz", None).status, 200);
    server.stop().unwrap();
    assert!(TcpStream::connect(addr).is_err(), "the listener is closed");
}

#[test]
fn reachable_addresses_need_a_token() {
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
    for local in ["127.0.0.1:8080", "[::1]:8080", "[::ffff:127.0.0.1]:8080"] {
        assert_eq!(check_exposure(addr(local), None), Ok(()), "{local}");
    }
    let err = check_exposure(addr("0.0.0.0:8080"), None).unwrap_err();
    assert!(err.contains("without a token"), "{err}");
    assert!(err.contains("127.0.0.1:8080"), "{err}");
    assert!(check_exposure(addr("10.1.2.3:80"), None).is_err());
    assert_eq!(check_exposure(addr("0.0.0.0:8080"), Some(TOKEN)), Ok(()));
    assert!(check_exposure(addr("127.0.0.1:8080"), Some(" ")).is_err());

    // serve itself refuses, so a caller cannot forget the check.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = runtime
        .block_on(async {
            let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
            let config = ApiConfig {
                listen: listener.local_addr().unwrap(),
                token: None,
                db: PathBuf::from("unused.db"),
                console: crate::console::ConsoleConfig::default(),
            };
            serve(listener, config, Arc::new(fixed_view()), async {}).await
        })
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}
