//! The case store on PostgreSQL end to end: `cgbot replay --db postgres://…` of the
//! sample van clip, `cgbot cases list` and the evidence image read back from the
//! database, two `outbox deliver` processes sharing the outbox, and the errors a user
//! meets when the server cannot be reached.

mod common;

use std::process::{Command, Stdio};

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

    // Two deliverers on the one outbox: the event reaches exactly one of them.
    let deliverers: Vec<_> = ["a", "b"]
        .iter()
        .map(|name| {
            let jsonl = db.dir().join(format!("{name}.jsonl"));
            let child = Command::new(env!("CARGO_BIN_EXE_cgbot"))
                .args(["outbox", "deliver", "--db", &url, "--jsonl"])
                .arg(&jsonl)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (jsonl, child)
        })
        .collect();
    let mut keys = Vec::new();
    for (jsonl, child) in deliverers {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let text = std::fs::read_to_string(&jsonl).unwrap_or_default();
        for line in text.lines() {
            let event: Value = serde_json::from_str(line).unwrap();
            keys.push(event["idempotency_key"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(keys, [format!("{id}:filed:2")]);
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
