//! The operators' console over HTTP, served by `cgbot console` over a case database a
//! replay filed: sign-in, sessions, CSRF, escaping, path traversal, zone validation and
//! conflicts, and the Excel export. (Chromium drives the pages in tests/console.rs.)

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::free_port;
use common::*;
use serde_json::{json, Value};

const TOKEN: &str = "console-token-0123456789";
/// A 20-digit GB/T 28181 device code: must stay text in the export.
const CAMERA: &str = "33010200001320000001";
const HOSTILE: &str = "<script>alert('x')</script>";

struct Console {
    child: Child,
    base: String,
    cameras: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A van case filed by replaying the street clip, then `cgbot console` over its database
/// with sessions that end after `ttl`.
fn console(ttl: &str) -> (Console, String) {
    console_with(ttl, None)
}

/// The same, with a users file.
fn console_with(ttl: &str, users: Option<&Path>) -> (Console, String) {
    let dir = tempfile::tempdir().unwrap();
    let cameras = dir.path().join("cameras");
    std::fs::create_dir(&cameras).unwrap();
    std::fs::write(
        cameras.join("street.toml"),
        format!(
            "# hand-written header comment\n[[camera]]\nid = \"{CAMERA}\"\nname = \"{HOSTILE}\"\n\
             location = {{ address = \"演示路 1 号\", grid = \"330102001001\" }}\n\
             [[camera.zone]]\nid = \"kerb\"\nname = \"{HOSTILE}\"\n\
             polygon = [[0.78, 0.40], [1.0, 0.40], [1.0, 0.80], [0.78, 0.80]]\n\
             rules = [{{ event = \"illegal_parking\", min_dwell = \"10s\", verify_window = \"10m\" }}]\n\n\
             # the second camera, untouched by edits of the first\n[[camera]]\nid = \"cam-b\"\n"
        ),
    )
    .unwrap();
    let db = dir.path().join("cases.db");
    ok(cgbot(&[
        "replay",
        sample("street-static-h264.mp4").to_str().unwrap(),
        "--every",
        "2s",
        "--camera",
        cameras.join("street.toml").to_str().unwrap(),
        "--camera-id",
        CAMERA,
        "--db",
        db.to_str().unwrap(),
    ]));
    let port = free_port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_cgbot"));
    command
        .args(["console", "--db", db.to_str().unwrap(), "--cameras"])
        .arg(&cameras)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--session-ttl", ttl]);
    if let Some(users) = users {
        command.arg("--users").arg(users);
    }
    let child = command
        .env("CGBOT_API_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cgbot console");
    let console = Console {
        child,
        base: format!("http://127.0.0.1:{port}"),
        cameras,
        _dir: dir,
    };
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "console did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let cases: Value = serde_json::from_str(&bearer(&console, "/api/cases").1).unwrap();
    let id = cases[0]["id"].as_str().expect("the van's case").to_string();
    (console, id)
}

/// (status, body, headers as `name: value` lines) of a request that follows no redirect.
fn request(
    console: &Console,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    body: Option<(&str, String)>,
) -> (u16, String, String) {
    request_with(console, method, path, cookie, body, &[])
}

fn request_with(
    console: &Console,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    body: Option<(&str, String)>,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .new_agent();
    let url = format!("{}{path}", console.base);
    let mut builder = ureq::http::Request::builder().method(method).uri(&url);
    if let Some(cookie) = cookie {
        builder = builder.header("Cookie", cookie);
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = match body {
        Some((kind, text)) => agent.run(builder.header("Content-Type", kind).body(text).unwrap()),
        None => agent.run(builder.body(()).unwrap()),
    };
    let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let head: String = response
        .headers()
        .iter()
        .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("")))
        .collect();
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    (status, body, head)
}

fn bearer(console: &Console, path: &str) -> (u16, String) {
    let auth = format!("Bearer {TOKEN}");
    let (status, body, _) = request_with(
        console,
        "GET",
        path,
        None,
        None,
        &[("Authorization", &auth)],
    );
    (status, body)
}

/// Signs in with the token; returns the session cookie and the page's CSRF token.
fn sign_in(console: &Console) -> (String, String) {
    sign_in_with(console, &format!("token={TOKEN}&next=%2Fcases"))
}

fn sign_in_with(console: &Console, form_body: &str) -> (String, String) {
    let (status, _, head) = request(
        console,
        "POST",
        "/login",
        None,
        Some(("application/x-www-form-urlencoded", form_body.to_string())),
    );
    assert_eq!(status, 303, "{head}");
    let set_cookie = head
        .lines()
        .find(|l| l.starts_with("set-cookie: cgbot_session="))
        .expect("a session cookie")
        .to_string();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"));
    let cookie = set_cookie["set-cookie: ".len()..]
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let (_, page, _) = request(console, "GET", "/cases", Some(&cookie), None);
    let csrf = page
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page's CSRF token")
        .to_string();
    (cookie, csrf)
}

fn form(text: String) -> Option<(&'static str, String)> {
    Some(("application/x-www-form-urlencoded", text))
}

fn camera_file(console: &Console) -> String {
    std::fs::read_to_string(console.cameras.join("street.toml")).unwrap()
}

#[test]
fn pages_need_a_session_writes_need_its_csrf_token_and_names_are_text() {
    let (console, id) = console("3s");
    // Nothing without a session: pages redirect to the sign-in, the API and images say 401.
    for page in [
        "/cases",
        &format!("/cases/{id}"),
        "/cameras",
        "/stats",
        "/export.xlsx",
    ] {
        let (status, _, head) = request(&console, "GET", page, None, None);
        assert_eq!(status, 303, "{page}");
        assert!(head.contains("location: /login?next="), "{page}: {head}");
    }
    let evidence = format!("/api/cases/{id}/evidence/first.jpg");
    assert_eq!(request(&console, "GET", &evidence, None, None).0, 401);
    assert_eq!(
        request(&console, "GET", "/api/openapi.json", None, None).0,
        401
    );
    assert_eq!(request(&console, "GET", "/login", None, None).0, 200);
    // A wrong token is refused with the page, not a session.
    let (status, body, head) = request(
        &console,
        "POST",
        "/login",
        None,
        form("token=wrong&next=%2Fcases".into()),
    );
    assert_eq!(status, 401);
    assert!(
        body.contains("令牌不正确") && !head.contains("cgbot_session="),
        "{body}"
    );

    let (cookie, csrf) = sign_in(&console);
    let (status, page, _) = request(&console, "GET", "/cases", Some(&cookie), None);
    assert_eq!(status, 200);
    // Camera and zone names are shown as text, never as markup.
    let (_, case_page, _) = request(
        &console,
        "GET",
        &format!("/cases/{id}"),
        Some(&cookie),
        None,
    );
    for html in [&page, &case_page] {
        assert!(!html.contains(HOSTILE), "unescaped name in\n{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
    }
    assert_eq!(
        request(&console, "GET", &evidence, Some(&cookie), None).0,
        200
    );

    // A write without the session's CSRF token changes nothing.
    let action = format!("/cases/{id}/action");
    for body in [
        "action=dispatched".to_string(),
        "action=dispatched&csrf=forged".into(),
    ] {
        assert_eq!(
            request(&console, "POST", &action, Some(&cookie), form(body)).0,
            403
        );
    }
    let status_of = || {
        let detail: Value =
            serde_json::from_str(&bearer(&console, &format!("/api/cases/{id}")).1).unwrap();
        detail["status"].as_str().unwrap().to_string()
    };
    assert_eq!(status_of(), "filed");
    let (status, _, head) = request(
        &console,
        "POST",
        &action,
        Some(&cookie),
        form(format!("action=dispatched&note=inspector+7&csrf={csrf}")),
    );
    assert_eq!(status, 303, "{head}");
    assert_eq!(status_of(), "dispatched");
    // JSON writes from a session need the header too.
    let zones = format!("/api/cameras/{CAMERA}/zones");
    let body = json!({"version": "x", "zones": []}).to_string();
    let (status, _, _) = request(
        &console,
        "PUT",
        &zones,
        Some(&cookie),
        Some(("application/json", body)),
    );
    assert_eq!(status, 403);

    // Every file route refuses to leave its directory.
    for path in [
        format!("/api/cases/{id}/evidence/..%2F..%2Fcases.db"),
        "/api/cases/..%2F..%2Fetc/evidence/passwd.jpg".into(),
        "/assets/..%2Fmod.rs".into(),
        "/assets/../console/mod.rs".into(),
        "/cameras/..%2F..%2Fetc%2Fpasswd/picture.jpg".into(),
        "/export.xlsx?since=..%2F..%2Fetc".into(),
    ] {
        let (status, body, _) = request(&console, "GET", &path, Some(&cookie), None);
        assert!((400..500).contains(&status), "{path}: {status}");
        assert!(
            !body.contains("root:") && !body.contains("SQLite format"),
            "{path}"
        );
    }

    // Idle past the session's time to live: signed out.
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(
        request(&console, "GET", "/cases", Some(&cookie), None).0,
        303
    );
}

#[test]
fn zone_edits_are_validated_written_atomically_and_conflicts_refused() {
    let (console, _) = console("1h");
    let (cookie, csrf) = sign_in(&console);
    let path = format!("/api/cameras/{CAMERA}/zones");
    let (status, body) = bearer(&console, &path);
    assert_eq!(status, 200, "{body}");
    let current: Value = serde_json::from_str(&body).unwrap();
    let version = current["version"].as_str().unwrap().to_string();
    let before = camera_file(&console);
    let put = |zones: Value, version: &str| {
        let body = json!({ "version": version, "zones": zones }).to_string();
        request_with(
            &console,
            "PUT",
            &path,
            Some(&cookie),
            Some(("application/json", body)),
            &[("X-CSRF-Token", &csrf)],
        )
    };
    let zone = |polygon: Value, event: &str| json!([{ "id": "kerb", "name": "路边", "polygon": polygon, "rules": [{ "event": event }] }]);
    for (zones, reason) in [
        (
            zone(
                json!([[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]]),
                "illegal_parking",
            ),
            "crosses itself",
        ),
        (
            zone(
                json!([[0.1, 0.1], [1.4, 0.1], [0.5, 0.9]]),
                "illegal_parking",
            ),
            "1.4",
        ),
        (
            zone(json!([[0.1, 0.1], [0.9, 0.1]]), "illegal_parking"),
            "3",
        ),
        (
            zone(json!([[0.1, 0.1], [0.9, 0.1], [0.5, 0.9]]), "jaywalking"),
            "jaywalking",
        ),
    ] {
        let (status, body, _) = put(zones, &version);
        assert_eq!(status, 422, "{body}");
        assert!(body.contains(reason), "{reason}: {body}");
        assert_eq!(camera_file(&console), before, "nothing written");
    }
    let good = zone(
        json!([[0.5, 0.4], [1.0, 0.4], [1.0, 0.9], [0.5, 0.9]]),
        "illegal_parking",
    );
    let (status, body, _) = put(good.clone(), &version);
    assert_eq!(status, 200, "{body}");
    let after = camera_file(&console);
    assert!(
        after.contains("[0.5, 0.4]") || after.contains("0.5, 0.4"),
        "{after}"
    );
    assert!(
        after.starts_with("# hand-written header comment"),
        "{after}"
    );
    assert!(after.contains("# the second camera, untouched") && after.contains("id = \"cam-b\""));
    // A second editor still holding the old version gets a conflict, not a lost edit.
    let (status, body, _) = put(
        zone(
            json!([[0.0, 0.0], [0.3, 0.0], [0.3, 0.3]]),
            "illegal_parking",
        ),
        &version,
    );
    assert_eq!(status, 409, "{body}");
    assert_eq!(camera_file(&console), after);
    // The loader reads what the editor wrote.
    ok(cgbot(&[
        "cameras",
        "diff",
        console.cameras.to_str().unwrap(),
        console.cameras.to_str().unwrap(),
    ]));
    let audit: Value = serde_json::from_str(&bearer(&console, "/api/audit").1).unwrap();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "zones-saved" && e["actor"] == "api-token"),
        "{audit}"
    );
}

#[test]
fn the_excel_export_keeps_codes_as_text_with_chinese_headers() {
    let (console, id) = console("1h");
    let (cookie, _) = sign_in(&console);
    let dir = tempfile::tempdir().unwrap();
    let agent = ureq::Agent::config_builder()
        .max_redirects(0)
        .build()
        .new_agent();
    let mut response = agent
        .get(format!(
            "{}/export.xlsx?since=2000-01-01&until=2100-01-01",
            console.base
        ))
        .header("Cookie", &cookie)
        .call()
        .unwrap();
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(kind.contains("spreadsheetml"), "{kind}");
    let bytes = response.body_mut().read_to_vec().unwrap();
    let file = dir.path().join("cases.xlsx");
    std::fs::write(&file, &bytes).unwrap();
    let shared = unzip(&file, "xl/sharedStrings.xml");
    for text in [
        "案件编号",
        "处置时限",
        CAMERA,
        "330102001001",
        &id,
        "已立案",
        "0505",
    ] {
        assert!(shared.contains(text), "{text} not a text cell:\n{shared}");
    }
    // Nothing of it is written as a number (which Excel would show as 3.30102E+19).
    let sheet = unzip(&file, "xl/worksheets/sheet1.xml");
    assert!(!sheet.contains("<v>33010200001320000001</v>"), "{sheet}");
}

fn unzip(file: &Path, member: &str) -> String {
    let out = Command::new("unzip")
        .args(["-p", file.to_str().unwrap(), member])
        .output()
        .expect("unzip (installed by scripts/setup.sh)");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn an_operator_from_the_users_file_reviews_but_may_not_edit_zones() {
    let dir = tempfile::tempdir().unwrap();
    let hash = {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_cgbot"))
            .args(["console", "--hash-password"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"zhang-mima-2026\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let users = dir.path().join("users.toml");
    std::fs::write(
        &users,
        format!("[[user]]\nname = \"zhang\"\nrole = \"operator\"\npassword = \"{hash}\"\n"),
    )
    .unwrap();
    let (console, id) = console_with("1h", Some(&users));
    // A wrong password is refused like a wrong token.
    let (status, _, _) = request(
        &console,
        "POST",
        "/login",
        None,
        form("user=zhang&password=wrong&next=%2Fcases".into()),
    );
    assert_eq!(status, 401);
    let (cookie, csrf) = sign_in_with(
        &console,
        "user=zhang&password=zhang-mima-2026&next=%2Fcases",
    );
    let (_, page, _) = request(&console, "GET", "/cases", Some(&cookie), None);
    assert!(page.contains("zhang (操作员)"), "{page}");
    // An operator gives verdicts, recorded under their name...
    let (status, _, _) = request(
        &console,
        "POST",
        &format!("/cases/{id}/action"),
        Some(&cookie),
        form(format!("action=confirm&csrf={csrf}")),
    );
    assert_eq!(status, 303);
    let detail: Value =
        serde_json::from_str(&bearer(&console, &format!("/api/cases/{id}")).1).unwrap();
    assert_eq!(detail["verdict"]["by"], "zhang", "{detail}");
    // ...but zones are the admins' (the page says so, the API refuses).
    let (_, camera_page, _) = request(
        &console,
        "GET",
        &format!("/cameras/{CAMERA}"),
        Some(&cookie),
        None,
    );
    assert!(
        camera_page.contains("只有管理员可以编辑区域"),
        "{camera_page}"
    );
    let body = json!({"version": "x", "zones": []}).to_string();
    let (status, body, _) = request_with(
        &console,
        "PUT",
        &format!("/api/cameras/{CAMERA}/zones"),
        Some(&cookie),
        Some(("application/json", body)),
        &[("X-CSRF-Token", &csrf)],
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("admin"), "{body}");
}
