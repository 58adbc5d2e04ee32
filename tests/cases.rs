//! Case filing end to end on real clips: `cgbot replay --camera --db`, `cgbot cases`,
//! `cgbot outbox deliver`. Clips where the van disappears are made at test time with
//! FFmpeg's `delogo` over it.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The van at the right edge of `street-static-h264.mp4` ([520, 213, 640, 337]).
const VAN_ZONE: &str = "[[0.78, 0.40], [1.0, 0.40], [1.0, 0.80], [0.78, 0.80]]";

/// The test's directory and database (see [`Scratch`]), with the van's camera and clips.
type Scene = Scratch;

impl Scene {
    /// A camera with one no-parking zone around the van.
    fn camera(&self, dwell: &str, verify: &str) -> String {
        let path = self.path("camera.toml");
        std::fs::write(
            &path,
            format!(
                "[[camera]]\nid = \"cam-van\"\nname = \"test street\"\n\
                 location = {{ longitude = 120.1, latitude = 30.2, grid = \"330102001001\" }}\n\
                 [[camera.zone]]\nid = \"no-parking\"\npolygon = {VAN_ZONE}\n\
                 rules = [{{ event = \"illegal_parking\", min_dwell = \"{dwell}\", verify_window = \"{verify}\" }}]\n"
            ),
        )
        .unwrap();
        path.display().to_string()
    }

    /// The street clip with the van erased from `from` seconds on.
    fn van_erased_from(&self, from: u32) -> String {
        let path = self.path(&format!("van-gone-{from}.mp4"));
        let filter = format!("delogo=x=512:y=205:w=127:h=140:enable='gte(t,{from})'");
        ffmpeg(&[
            "-i",
            sample("street-static-h264.mp4").to_str().unwrap(),
            "-vf",
            &filter,
            "-c:v",
            "libx264",
            "-g",
            "50",
            "-an",
            path.to_str().unwrap(),
        ]);
        path.display().to_string()
    }

    fn show(&self, id: &str) -> Value {
        serde_json::from_str(&ok(cgbot(&["cases", "show", id, "--db", &self.db()]))).unwrap()
    }
}

/// A command line clap refuses: exit 2 with the reason, no panic.
fn usage_error(out: std::process::Output) -> String {
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("error:") && !err.contains("panicked"), "{err}");
    err
}

fn evidence_kinds(detail: &Value) -> Vec<String> {
    detail["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let path = Path::new(e["path"].as_str().unwrap());
            let image = image::open(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            assert!(image.width() > 50, "{} is too small", path.display());
            // A replay draws on the file's own frames, and `cases show` says so.
            assert_eq!(e["source"], "analysed", "{e}");
            e["kind"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn a_van_parked_past_the_dwell_files_exactly_one_case_with_evidence() {
    let scene = Scene::new();
    let camera = scene.camera("30s", "10s");
    let log = scene.replay(
        sample("street-static-h264.mp4").to_str().unwrap(),
        &camera,
        &[],
    );
    assert!(log.contains("1 filed"), "{log}");
    let cases = scene.cases();
    assert_eq!(cases.len(), 1, "{cases:#?}");
    let case = &cases[0];
    assert_eq!(case["status"], "filed");
    assert_eq!(case["category"]["code"], "0505");
    assert_eq!(case["category"]["name"], "机动车乱停放");
    assert_eq!(case["camera_id"], "cam-van");
    assert_eq!(case["location"]["grid"], "330102001001");
    assert!(case["dwell"].as_f64().unwrap() >= 30.0);
    let detail = scene.show(case["id"].as_str().unwrap());
    let kinds = evidence_kinds(&detail);
    for kind in ["first", "first-crop", "filed", "filed-crop"] {
        assert!(kinds.contains(&kind.to_string()), "{kinds:?}");
    }
    let history: Vec<&str> = detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["to"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["detected", "filed"]);
}

#[test]
fn the_van_leaving_closes_the_case_as_auto_verified_with_an_after_image() {
    let scene = Scene::new();
    let camera = scene.camera("10s", "8s");
    let clip = scene.van_erased_from(20);
    scene.replay(&clip, &camera, &[]);
    let cases = scene.cases();
    assert_eq!(cases.len(), 1, "{cases:#?}");
    assert_eq!(cases[0]["status"], "closed");
    assert_eq!(cases[0]["close_reason"], "auto-verified");
    // Last seen just before the van vanishes at 20 s; closed once absent for the 8 s window.
    let at =
        |field: &str| cases[0][field].as_f64().unwrap() - cases[0]["first_seen"].as_f64().unwrap();
    assert!(
        (16.0..20.0).contains(&at("last_seen")),
        "last seen at {}",
        at("last_seen")
    );
    let absent = at("closed_at") - at("last_seen");
    assert!(
        (8.0..10.0).contains(&absent),
        "closed after {absent} s absent"
    );
    let detail = scene.show(cases[0]["id"].as_str().unwrap());
    assert!(evidence_kinds(&detail).contains(&"after".to_string()));

    // Re-running the same replay adds nothing: no case, no event, no history.
    let before = scene.show(cases[0]["id"].as_str().unwrap());
    scene.replay(&clip, &camera, &[]);
    assert_eq!(scene.cases().len(), 1);
    assert_eq!(
        scene.show(cases[0]["id"].as_str().unwrap())["history"],
        before["history"]
    );
}

#[test]
fn a_clip_without_the_van_files_nothing() {
    let scene = Scene::new();
    let camera = scene.camera("10s", "8s");
    let clip = scene.van_erased_from(0);
    let log = scene.replay(&clip, &camera, &[]);
    assert!(log.contains("cases: 0 candidates, 0 filed"), "{log}");
    assert!(scene.cases().is_empty());
}

#[test]
fn killing_the_process_mid_filing_loses_and_duplicates_nothing() {
    let scene = Scene::new();
    let camera = scene.camera("10s", "8s");
    let clip = scene.van_erased_from(20);
    let jsonl = scene.path("events.jsonl");
    let db = scene.db();
    // Every frame is analysed, so a run takes several seconds; kill it at several points.
    let args = [
        "replay",
        &clip,
        "--every",
        "1",
        "--camera",
        &camera,
        "--db",
        &db,
        "--start",
        REPLAY_START,
        "--jsonl",
        jsonl.to_str().unwrap(),
    ];
    for after_ms in [700, 1500, 2500, 4000] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cgbot"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(after_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let out = cgbot(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let cases = scene.cases();
    assert_eq!(cases.len(), 1, "{cases:#?}");
    assert_eq!(cases[0]["status"], "closed");
    let text = std::fs::read_to_string(&jsonl).unwrap();
    let mut keys: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["idempotency_key"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    keys.sort();
    let id = cases[0]["id"].as_str().unwrap();
    // Keys number the case's recorded transitions: detected 1, filed 2, … closed last.
    let transitions = cases[0]["transitions"].as_u64().unwrap();
    assert_eq!(
        keys,
        [
            format!("{id}:closed:{transitions}"),
            format!("{id}:filed:2")
        ]
    );
}

/// A webhook receiver under test: its URL, the idempotency keys it acknowledged, and the
/// number of requests it got.
struct Receiver {
    url: String,
    acknowledged: Arc<Mutex<Vec<String>>>,
    requests: Arc<Mutex<u32>>,
}

/// A webhook receiver that answers 500 twice, then hangs once, then accepts.
fn flaky_webhook() -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://user:secret@{}/cases",
        listener.local_addr().unwrap()
    );
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let requests = Arc::new(Mutex::new(0u32));
    let (ack, count) = (acknowledged.clone(), requests.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let n = {
                let mut c = count.lock().unwrap();
                *c += 1;
                *c
            };
            let ack = ack.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let status = match n {
                    1 | 2 => "500 Internal Server Error",
                    3 => {
                        std::thread::sleep(Duration::from_secs(4)); // hang past the timeout
                        return;
                    }
                    _ => "200 OK",
                };
                if status.starts_with("200") {
                    let json: Value = serde_json::from_slice(&body).unwrap();
                    for e in json["events"].as_array().unwrap() {
                        ack.lock()
                            .unwrap()
                            .push(e["idempotency_key"].as_str().unwrap().to_string());
                    }
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            });
        }
    });
    Receiver {
        url,
        acknowledged,
        requests,
    }
}

#[test]
fn a_failing_then_hanging_webhook_gets_every_event_exactly_once_after_it_recovers() {
    let scene = Scene::new();
    let camera = scene.camera("10s", "8s");
    let clip = scene.van_erased_from(20);
    scene.replay(&clip, &camera, &[]);
    let Receiver {
        url,
        acknowledged,
        requests,
    } = flaky_webhook();
    let started = Instant::now();
    let out = cgbot(&[
        "outbox",
        "deliver",
        "--db",
        &scene.db(),
        "--webhook",
        &url,
        "--webhook-timeout",
        "1s",
        "--deliver-for",
        "30s",
    ]);
    let log = ok(out.clone()) + &stderr(&out);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "delivery took {:?}",
        started.elapsed()
    );
    assert!(log.contains("2 case events delivered"), "{log}");
    assert!(!log.contains("secret"), "credentials leaked: {log}");
    let keys = acknowledged.lock().unwrap().clone();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(
        keys[0].ends_with(":filed:2") && keys[1].contains(":closed:"),
        "{keys:?}"
    );
    assert_eq!(*requests.lock().unwrap(), 4);
    // Nothing is pending, so another run sends nothing.
    ok(cgbot(&[
        "outbox",
        "deliver",
        "--db",
        &scene.db(),
        "--webhook",
        &url,
        "--deliver-for",
        "5s",
    ]));
    assert_eq!(acknowledged.lock().unwrap().len(), 2);
    assert_eq!(*requests.lock().unwrap(), 4);
}

#[test]
fn operators_record_dispatch_and_handling_and_illegal_steps_are_refused() {
    let scene = Scene::new();
    let camera = scene.camera("30s", "10s");
    scene.replay(
        sample("street-static-h264.mp4").to_str().unwrap(),
        &camera,
        &[],
    );
    let id = scene.cases()[0]["id"].as_str().unwrap().to_string();
    assert!(ok(cgbot(&[
        "cases",
        "set-status",
        &id,
        "dispatched",
        "--note",
        "inspector 7",
        "--db",
        &scene.db()
    ]))
    .contains("dispatched"));
    // Dispatching a dispatched case is refused.
    let err = fails(cgbot(&[
        "cases",
        "set-status",
        &id,
        "dispatched",
        "--db",
        &scene.db(),
    ]));
    assert!(
        err.contains("is dispatched; it cannot become dispatched"),
        "{err}"
    );
    // Only the statuses a person sets are taken, and `--help` lists exactly those.
    for status in ["detected", "verifying", "filed"] {
        let err = usage_error(cgbot(&[
            "cases",
            "set-status",
            &id,
            status,
            "--db",
            &scene.db(),
        ]));
        assert!(
            err.contains(&format!("status `{status}` cannot be set by hand (one of dispatched, handled, closed, reopened)")),
            "{err}"
        );
    }
    let err = usage_error(cgbot(&[
        "cases",
        "set-status",
        &id,
        "rejected",
        "--db",
        &scene.db(),
    ]));
    assert!(err.contains("cgbot cases reject ID --reason"), "{err}");
    let help = ok(cgbot(&["cases", "set-status", "--help"]));
    assert!(
        help.contains("[possible values: dispatched, handled, closed, reopened]"),
        "{help}"
    );
    let csv = ok(cgbot(&[
        "cases",
        "export",
        "--format",
        "csv",
        "--db",
        &scene.db(),
    ]));
    assert!(
        csv.lines()
            .nth(1)
            .unwrap()
            .contains(",dispatched,0505,街面秩序,机动车乱停放,"),
        "{csv}"
    );
    let history = scene.show(&id)["history"].clone();
    assert_eq!(history[2]["actor"], "operator");
    assert_eq!(history[2]["note"], "inspector 7");

    // Handled by a named inspector, then closed: each step its own outbox event.
    for status in ["handled", "closed"] {
        ok(cgbot(&[
            "cases",
            "set-status",
            &id,
            status,
            "--by",
            "wang",
            "--db",
            &scene.db(),
        ]));
    }
    let history = scene.show(&id)["history"].clone();
    assert_eq!(history[4]["actor"], "wang");
    assert_eq!(history[4]["to"], "closed");
    let jsonl = scene.path("events.jsonl");
    ok(cgbot(&[
        "outbox",
        "deliver",
        "--db",
        &scene.db(),
        "--jsonl",
        jsonl.to_str().unwrap(),
    ]));
    let kinds: Vec<String> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "case.filed",
            "case.dispatched",
            "case.handled",
            "case.closed"
        ]
    );
}

fn suppressions(scene: &Scene) -> Vec<Value> {
    let json = ok(cgbot(&[
        "cases",
        "suppressions",
        "--json",
        "--db",
        &scene.db(),
    ]));
    serde_json::from_str::<Value>(&json)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn a_rejected_case_suppresses_its_place_until_the_suppression_is_lifted() {
    let scene = Scene::new();
    let camera = scene.camera("30s", "10s");
    let clip = sample("street-static-h264.mp4");
    scene.replay(clip.to_str().unwrap(), &camera, &[]);
    let id = scene.cases()[0]["id"].as_str().unwrap().to_string();
    let db = scene.db();

    // A real violation first, by a named operator.
    let out = ok(cgbot(&[
        "cases", "confirm", &id, "--by", "li", "--note", "towed", "--db", &db,
    ]));
    assert!(out.contains("confirmed"), "{out}");
    let detail = scene.show(&id);
    assert_eq!(detail["status"], "filed");
    assert_eq!(detail["verdict"]["kind"], "confirmed");
    assert_eq!(detail["verdict"]["by"], "li");
    let last = detail["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        (last["from"].as_str(), last["to"].as_str()),
        (Some("filed"), Some("filed"))
    );
    assert_eq!(last["note"], "confirmed: towed");

    // On second thoughts a false positive: an unknown reason is refused with the list.
    let err = usage_error(cgbot(&[
        "cases", "reject", &id, "--reason", "ugly", "--db", &db,
    ]));
    assert!(
        err.contains("not_a_violation, wrong_class, duplicate"),
        "{err}"
    );
    let out = ok(cgbot(&[
        "cases",
        "reject",
        &id,
        "--reason",
        "not_a_violation",
        "--note",
        "loading bay",
        "--by",
        "li",
        "--suppress-for",
        "7d",
        "--db",
        &db,
    ]));
    assert!(out.contains("is now rejected (not_a_violation)"), "{out}");
    assert!(out.contains("suppression 1"), "{out}");
    let detail = scene.show(&id);
    assert_eq!(detail["status"], "rejected");
    assert_eq!(detail["verdict"]["kind"], "rejected");
    assert_eq!(detail["verdict"]["reason"], "not_a_violation");
    assert_eq!(detail["verdict"]["note"], "loading bay");
    let last = detail["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        (last["to"].as_str(), last["actor"].as_str()),
        (Some("rejected"), Some("li"))
    );
    let err = fails(cgbot(&[
        "cases",
        "set-status",
        &id,
        "dispatched",
        "--db",
        &db,
    ]));
    assert!(
        err.contains(&format!(
            "case {id} is rejected; it cannot become dispatched"
        )),
        "{err}"
    );
    let err = fails(cgbot(&["cases", "confirm", &id, "--db", &db]));
    assert!(err.contains("can be confirmed"), "{err}");

    let list = suppressions(&scene);
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(list[0]["case_id"], id.as_str());
    assert_eq!(list[0]["zone_id"], "no-parking");
    assert_eq!(list[0]["created_by"], "li");
    assert_eq!(list[0]["hits"], 0);
    let table = ok(cgbot(&[
        "cases",
        "suppressions",
        "--camera",
        "cam-van",
        "--db",
        &db,
    ]));
    assert!(table.contains("active") && table.contains(&id), "{table}");
    let csv = ok(cgbot(&["cases", "export", "--format", "csv", "--db", &db]));
    let header = csv.lines().next().unwrap();
    assert!(header.ends_with(",overdue,verdict,reject_reason"), "{csv}");
    assert!(
        csv.lines()
            .nth(1)
            .unwrap()
            .ends_with(",false,rejected,not_a_violation"),
        "{csv}"
    );
    let json: Value = serde_json::from_str(&ok(cgbot(&[
        "cases", "export", "--format", "json", "--db", &db,
    ])))
    .unwrap();
    assert_eq!(json[0]["reject_reason"], "not_a_violation");
    assert_eq!(json[0]["overdue"], false);

    // The van is still there in the same footage: no new case, every sample counted.
    scene.replay(clip.to_str().unwrap(), &camera, &[]);
    assert_eq!(scene.cases().len(), 1);
    let hits = suppressions(&scene)[0]["hits"].as_u64().unwrap();
    assert!(hits >= 10, "{hits} hits");

    // Lifted: the place files again.
    let out = ok(cgbot(&[
        "cases",
        "lift-suppression",
        "1",
        "--by",
        "wang",
        "--db",
        &db,
    ]));
    assert!(out.contains("suppression 1 lifted"), "{out}");
    let lifted = &suppressions(&scene)[0];
    assert_eq!(lifted["lifted_by"], "wang");
    assert!(
        ok(cgbot(&["cases", "suppressions", "--active", "--db", &db])).contains("0 suppressions")
    );
    let err = fails(cgbot(&["cases", "lift-suppression", "9", "--db", &db]));
    assert!(err.contains("no suppression 9"), "{err}");
    scene.replay(clip.to_str().unwrap(), &camera, &[]);
    let cases = scene.cases();
    assert_eq!(cases.len(), 2, "{cases:#?}");
    assert_eq!(suppressions(&scene)[0]["hits"].as_u64().unwrap(), hits);
}

#[test]
fn a_malformed_camera_file_names_file_and_field() {
    let scene = Scene::new();
    let path = scene.path("broken.toml");
    std::fs::write(&path, "[[camera]]\nid = \"cam-1\"\n[[camera.zone]]\nid = \"z\"\npolygon = [[0.1, 0.1], [0.2, 0.1]]\nrules = [{ event = \"illegal_parking\" }]\n").unwrap();
    let clip = sample("street-static-h264.mp4");
    let err = fails_config(cgbot(&[
        "replay",
        clip.to_str().unwrap(),
        "--camera",
        path.to_str().unwrap(),
        "--db",
        &scene.db(),
    ]));
    assert!(
        err.contains("broken.toml: camera[0] `cam-1`.zone[0] `z`.polygon"),
        "{err}"
    );
}

#[test]
fn the_shipped_example_cameras_file_their_cases() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    for (config, clip, code) in [
        (
            "street-static-camera.toml",
            "street-static-h264.mp4",
            "0505",
        ),
        ("bottles-camera.toml", "bottles.mp4", "0102"),
    ] {
        let scene = Scene::new();
        let camera = examples.join(config).display().to_string();
        scene.replay(sample(clip).to_str().unwrap(), &camera, &[]);
        let cases = scene.cases();
        assert_eq!(cases.len(), 1, "{config}: {cases:#?}");
        assert_eq!(cases[0]["status"], "filed", "{config}");
        assert_eq!(cases[0]["category"]["code"], code, "{config}");
    }
}

/// What a Standard Webhooks receiver checks: the signature of `{id}.{timestamp}.{body}`
/// under the shared key, and a timestamp within five minutes.
fn signature_holds(
    key: &[u8],
    headers: &std::collections::HashMap<String, String>,
    body: &[u8],
) -> bool {
    use base64::Engine;
    use hmac::Mac;
    let (Some(id), Some(timestamp), Some(signature)) = (
        headers.get("webhook-id"),
        headers.get("webhook-timestamp"),
        headers.get("webhook-signature"),
    ) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if timestamp
        .parse::<u64>()
        .map_or(true, |t| now.abs_diff(t) > 300)
    {
        return false;
    }
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    signature
        .split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
}

/// Reads one request: lower-cased headers and the body.
fn read_http_request(
    reader: &mut BufReader<std::net::TcpStream>,
) -> (std::collections::HashMap<String, String>, Vec<u8>) {
    let mut headers = std::collections::HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.trim_end().split_once(':') {
            headers.insert(name.to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let length = headers
        .get("content-length")
        .map_or(0, |l| l.parse().unwrap());
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (headers, body)
}

#[test]
fn signed_webhook_deliveries_verify_and_a_tampered_body_is_rejected() {
    use base64::Engine;
    let scene = Scene::new();
    let camera = scene.camera("30s", "10s");
    scene.replay(
        sample("street-static-h264.mp4").to_str().unwrap(),
        &camera,
        &[],
    );
    let key = b"a 32-byte key for signing hooks!".to_vec();
    let secret_file = scene.path("webhook.secret");
    std::fs::write(
        &secret_file,
        format!(
            "whsec_{}\n",
            base64::engine::general_purpose::STANDARD.encode(&key)
        ),
    )
    .unwrap();

    // The receiver: 204 for a request whose signature holds, 401 for any other.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (headers, body) = read_http_request(&mut reader);
            let valid = signature_holds(&key, &headers, &body);
            let status = if valid {
                "204 No Content"
            } else {
                "401 Unauthorized"
            };
            // Recorded before the answer, so that whoever got the answer finds it.
            log.lock().unwrap().push((headers, body, valid));
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    let url = format!("http://{addr}/cases");
    let out = cgbot(&[
        "outbox",
        "deliver",
        "--db",
        &scene.db(),
        "--webhook",
        &url,
        "--webhook-secret-file",
        secret_file.to_str().unwrap(),
        "--deliver-for",
        "10s",
    ]);
    let stderr_text = stderr(&out);
    assert!(out.status.success(), "{stderr_text}");
    assert!(
        stderr_text.contains("case events delivered"),
        "{stderr_text}"
    );
    assert!(
        !stderr_text.contains("still in the outbox"),
        "{stderr_text}"
    );
    let deliveries = received.lock().unwrap().clone();
    assert!(
        deliveries.iter().all(|(_, _, valid)| *valid),
        "{deliveries:?}"
    );
    let (headers, body, _) = deliveries[0].clone();
    assert!(headers["webhook-id"].starts_with("msg_"), "{headers:?}");
    let events: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(events["events"][0]["kind"], "case.filed");

    // The same headers on a changed body: refused.
    let tampered = String::from_utf8(body)
        .unwrap()
        .replace("illegal_parking", "exposed_litter");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let mut request = format!(
        "POST /cases HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        tampered.len()
    );
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        request += &format!("{name}: {}\r\n", headers[name]);
    }
    request += "\r\n";
    request += &tampered;
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer:?}");
    assert!(!received.lock().unwrap().last().unwrap().2);

    // A secret that is not whsec_<base64> is refused, naming the file and not the secret.
    std::fs::write(&secret_file, "whsec_not base64!").unwrap();
    let err = fails_config(cgbot(&[
        "outbox",
        "deliver",
        "--db",
        &scene.db(),
        "--webhook",
        &url,
        "--webhook-secret-file",
        secret_file.to_str().unwrap(),
    ]));
    assert!(
        err.contains("webhook.secret") && !err.contains("not base64!"),
        "{err}"
    );
}

/// A city's setup end to end: its catalogue gives illegal parking one *working* hour, its
/// calendar works 08:30–12:00 and 13:30–17:30 on weekdays, and its code table and the
/// camera's codes give the platform's fields. The van is filed on Friday 2026-12-04 just
/// before 17:30 (+08:00): due one working hour later, on Monday.
#[test]
fn a_city_replay_publishes_its_codes_local_times_and_a_working_hour_deadline() {
    let scene = Scene::new();
    let camera = scene.path("camera.toml");
    std::fs::write(
        &camera,
        format!(
            "[[camera]]\nid = \"cam-van\"\nutc_offset = \"+08:00\"\n\
             codes = {{ street_code = \"330102001\", community_code = \"330102001002\" }}\n\
             [[camera.zone]]\nid = \"no-parking\"\npolygon = {VAN_ZONE}\n\
             rules = [{{ event = \"illegal_parking\", min_dwell = \"30s\" }}]\n"
        ),
    )
    .unwrap();
    let catalogue = scene.path("categories.toml");
    std::fs::write(
        &catalogue,
        "[[category]]\ncode = \"0505\"\nmajor = \"街面秩序\"\nname = \"机动车乱停放\"\n\
         time_limit = \"1 working hour\"\n",
    )
    .unwrap();
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    let calendar = samples.join("calendar.toml");
    let codes = samples.join("city-codes.toml");
    let jsonl = scene.path("events.jsonl");
    let clip = sample("street-static-h264.mp4");
    let db = scene.db();
    let city_args = |codes: &Path| {
        vec![
            "replay".to_string(),
            clip.display().to_string(),
            "--every".into(),
            "2s".into(),
            "--camera".into(),
            camera.display().to_string(),
            "--db".into(),
            db.clone(),
            "--start".into(),
            "2026-12-04T09:29:00Z".into(),
            "--catalogue".into(),
            catalogue.display().to_string(),
            "--calendar".into(),
            calendar.display().to_string(),
            "--codes".into(),
            codes.display().to_string(),
            "--jsonl".into(),
            jsonl.display().to_string(),
        ]
    };

    // A table without the camera's event is refused before anything is filed.
    let partial = scene.path("partial-codes.toml");
    std::fs::write(&partial, "[event.street_vending]\ncity_code = \"602\"\n").unwrap();
    let args = city_args(&partial);
    let out = cgbot(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("partial-codes.toml: event.illegal_parking: missing"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    let args = city_args(&codes);
    let out = cgbot(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "replay failed: {}", stderr(&out));
    let events: Vec<Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let filed = events
        .iter()
        .find(|e| e["kind"] == "case.filed")
        .unwrap_or_else(|| panic!("no case.filed in {events:#?}"));
    let case = &filed["payload"];
    assert_eq!(case["city_code"], "605");
    assert_eq!(
        case["city_fields"],
        serde_json::json!({
            "community_code": "330102001002",
            "department": "区交警大队",
            "source": "智能视频发现",
            "street_code": "330102001",
        })
    );
    let filed_at = case["filed_at"].as_f64().unwrap();
    let filed_local = case["filed_at_rfc3339"].as_str().unwrap();
    assert!(
        filed_local.starts_with("2026-12-04T17:29:") && filed_local.ends_with("+08:00"),
        "{filed_local}"
    );
    // What is left of Friday, the weekend and the night (63 h), then the rest of the
    // working hour on Monday morning.
    assert_eq!(case["deadline"].as_f64().unwrap() - filed_at, 64.0 * 3600.0);
    let deadline_local = case["deadline_rfc3339"].as_str().unwrap();
    assert!(
        deadline_local.starts_with("2026-12-07T09:29:") && deadline_local.ends_with("+08:00"),
        "{deadline_local}"
    );
    assert!(case["first_seen_rfc3339"]
        .as_str()
        .unwrap()
        .starts_with("2026-12-04T17:2"));

    // The API's JSON and the exports carry the same.
    let listed = &scene.cases()[0];
    assert_eq!(listed["deadline_rfc3339"], deadline_local);
    assert_eq!(listed["city_code"], "605");
    let csv = ok(cgbot(&["cases", "export", "--db", &db]));
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    let column = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
    assert_eq!(column("city_code"), "605");
    assert_eq!(column("street_code"), "330102001");
    assert_eq!(column("deadline"), deadline_local);
    // Re-mapped at export with another table: its code and fields, the camera's kept.
    let other = scene.path("other-codes.toml");
    std::fs::write(
        &other,
        "[defaults]\nsource = \"巡查\"\n\
         [event.illegal_parking]\ncity_code = \"0605\"\n\
         [event.street_vending]\ncity_code = \"0602\"\n\
         [event.exposed_litter]\ncity_code = \"0101\"\n",
    )
    .unwrap();
    let json: Value = serde_json::from_str(&ok(cgbot(&[
        "cases",
        "export",
        "--format",
        "json",
        "--db",
        &db,
        "--codes",
        other.to_str().unwrap(),
    ])))
    .unwrap();
    assert_eq!(json[0]["city_code"], "0605");
    assert_eq!(json[0]["city_fields"]["source"], "巡查");
    assert_eq!(json[0]["city_fields"]["street_code"], "330102001");
    assert_eq!(json[0]["filed_at_rfc3339"], filed_local);
}
