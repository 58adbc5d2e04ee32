//! The case store on PostgreSQL end to end: `cgbot replay --db postgres://…` of the
//! sample van clip, `cgbot cases list` and the evidence image read back from the
//! database, two `outbox deliver` processes sharing the outbox, and the errors a user
//! meets when the server cannot be reached.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use common::postgres::postgres_db;
use common::*;
use serde_json::Value;

const CAMERA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/samples/street-static-camera.toml"
);
const START: &str = "2026-11-24T00:00:00Z";

fn replay(db: &str) {
    let clip = sample("street-static-h264.mp4");
    let out = cgbot(&[
        "replay",
        clip.to_str().unwrap(),
        "--every",
        "2s",
        "--camera",
        CAMERA,
        "--db",
        db,
        "--start",
        START,
    ]);
    assert!(out.status.success(), "replay failed: {}", stderr(&out));
}

fn cases(db: &str) -> Vec<Value> {
    let json = ok(cgbot(&["cases", "list", "--json", "--db", db]));
    serde_json::from_str::<Value>(&json)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// What identifies a case's outcome, whichever database holds it.
fn summary(cases: &[Value]) -> Vec<(String, String, String)> {
    cases
        .iter()
        .map(|c| {
            let text = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (text("id"), text("status"), text("camera_id"))
        })
        .collect()
}

#[test]
fn a_replay_into_postgresql_files_the_van_with_its_evidence_in_the_database() {
    let db = postgres_db();
    let url = db.location().to_str().unwrap().to_string();
    replay(&url);
    let filed = cases(&url);
    assert_eq!(filed.len(), 1, "{filed:#?}");
    assert_eq!(filed[0]["status"], "filed");
    assert_eq!(filed[0]["category"]["code"], "0505");

    // The same clip into SQLite files the same case.
    let sqlite = db.dir().join("cases.db");
    replay(sqlite.to_str().unwrap());
    assert_eq!(summary(&cases(sqlite.to_str().unwrap())), summary(&filed));

    // The images are in the database: any replica reads them back.
    let id = filed[0]["id"].as_str().unwrap();
    for kind in ["first", "filed", "filed-crop"] {
        let out = db.dir().join(format!("{kind}.jpg"));
        ok(cgbot(&[
            "cases",
            "image",
            id,
            kind,
            "--db",
            &url,
            "--out",
            out.to_str().unwrap(),
        ]));
        let image = image::open(&out).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert!(image.width() > 50, "{kind} is {}px wide", image.width());
    }
    let err = fails(cgbot(&["cases", "image", id, "after", "--db", &url]));
    assert!(
        err.contains(&format!("case {id} has no after image")),
        "{err}"
    );

    // Replaying again adds nothing.
    replay(&url);
    assert_eq!(summary(&cases(&url)), summary(&filed));

    // Two deliverers of one webhook on the one outbox: the event reaches it once.
    let (url_hook, keys) = webhook_receiver();
    let deliverers: Vec<_> = (0..2)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_cgbot"))
                .args(["outbox", "deliver", "--db", &url, "--webhook", &url_hook])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in deliverers {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(*keys.lock().unwrap(), [format!("{id}:filed:2")]);
}

/// A webhook endpoint that acknowledges every request and records the event keys.
fn webhook_receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    let keys = Arc::new(Mutex::new(Vec::new()));
    let received = keys.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut reader = BufReader::new(stream.unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap();
                    }
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let batch: Value = serde_json::from_slice(&body).unwrap();
            for event in batch["events"].as_array().unwrap() {
                let key = event["idempotency_key"].as_str().unwrap().to_string();
                received.lock().unwrap().push(key);
            }
            let mut stream = reader.into_inner();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .unwrap();
        }
    });
    (url, keys)
}

#[test]
fn an_unreachable_server_is_a_clear_error_naming_it_without_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://cgbot:s3cret@127.0.0.1:{port}/cases?sslmode=disable");
    let err = fails(cgbot(&["cases", "list", "--db", &url]));
    assert!(
        err.contains(&format!(
            "PostgreSQL database postgres://***@127.0.0.1:{port}/cases"
        )),
        "{err}"
    );
    assert!(err.contains("refused") && !err.contains("s3cret"), "{err}");

    // `run --check` reads the URL from a secret file and tries it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("db-url"), format!("{url}\n")).unwrap();
    std::fs::write(
        dir.path().join("cams.toml"),
        "[[camera]]\nid = \"c1\"\nmain_stream = \"rtsp://10.0.0.1/s\"\n",
    )
    .unwrap();
    let config = dir.path().join("run.toml");
    std::fs::write(&config, "cameras = \"cams.toml\"\ndb_file = \"db-url\"\n").unwrap();
    let out = cgbot(&["run", "--check", "--config", &path_arg(&config)]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("PostgreSQL database postgres://***@") && !err.contains("s3cret"),
        "{err}"
    );

    // A reachable one passes.
    let db = postgres_db();
    std::fs::write(dir.path().join("db-url"), db.location().to_str().unwrap()).unwrap();
    let out = cgbot(&["run", "--check", "--config", &path_arg(&config)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("reachable"), "{}", stdout(&out));
}
