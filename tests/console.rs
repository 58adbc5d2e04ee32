//! The operators' console end to end: a real headless Chromium (Debian's chromium and
//! chromium-driver) against `cgbot run` watching `cgbot sim` cameras that show the parked
//! van of `street-static-h264.mp4`. An operator signs in, rejects one van case as a false
//! positive (the place then files nothing, also after a restart), confirms and dispatches
//! another (the daemon keeps the dispatch), draws a zone on a camera that had none (the
//! camera file changes and the daemon files there without a restart), is refused a bad
//! polygon and a concurrent edit, and reads the statistics. Screenshots go to
//! `target/screenshots/console-*.png`.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use cgbot::sim::{SimConfig, SimHandle};
use common::browser::{screenshot_path, Browser};
use common::daemon::{free_port, Daemon, TOKEN};
use common::sample;
use serde_json::{json, Value};

/// The zone of samples/street-static-camera.toml around the parked white van.
const VAN_ZONE: &str = "[[camera.zone]]\nid = \"kerb\"\nname = \"东侧禁停区\"\n\
    polygon = [[0.78, 0.40], [1.0, 0.40], [1.0, 0.80], [0.78, 0.80]]\n\
    rules = [{ event = \"illegal_parking\", min_dwell = \"6s\", verify_window = \"10m\" }]\n";

fn camera_file(port: u16) -> String {
    let camera = |i: usize, name: &str, zone: &str| {
        format!(
            "\n[[camera]]\nid = \"cam-{i}\"\nname = \"{name}\"\nmain_stream = \"rtsp://127.0.0.1:{port}/cam/{i}\"\n\
             location = {{ address = \"演示路 {i} 号\", grid = \"330102001001\" }}\n{zone}"
        )
    };
    // cam-3's path is not one the simulator serves: the cameras page shows its problem.
    let wrong_path = camera(3, "站前路南口", "").replace("/cam/3", "/cam/99");
    format!(
        "# cameras of the console test\n[defaults]\nutc_offset = \"+08:00\"\n{}{}\n# new this quarter: no zones yet\n{}{wrong_path}",
        camera(0, "人民路东口", VAN_ZONE),
        camera(1, "解放路北口", VAN_ZONE),
        camera(2, "新华路西口", ""),
    )
}

fn cases_of(daemon: &Daemon, camera: &str) -> Vec<Value> {
    daemon
        .get(&format!("/api/cases?camera={camera}"))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn filed(daemon: &Daemon, camera: &str) -> Option<String> {
    cases_of(daemon, camera)
        .into_iter()
        .find(|c| c["status"] == "filed")
        .and_then(|c| c["id"].as_str().map(str::to_string))
}

fn shot(browser: &Browser, name: &str) {
    browser.screenshot(screenshot_path(&format!("console-{name}.png")));
}

/// Whether every `<img>` matching `css` has loaded a picture.
fn images_loaded(browser: &Browser, css: &str) -> bool {
    browser.execute(
        "const imgs = Array.from(document.querySelectorAll(arguments[0]));\
         return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);",
        &[json!(css)],
    ) == json!(true)
}

/// The text of the element `css` on the page as it is now (asked in one script, so a page
/// replaced by a form's answer never leaves a stale element behind).
fn text_of(browser: &Browser, css: &str) -> Option<String> {
    browser
        .execute(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
            &[json!(css)],
        )
        .as_str()
        .map(str::to_string)
}

fn wait_browser(
    browser: &Browser,
    what: &str,
    limit: Duration,
    mut done: impl FnMut(&Browser) -> bool,
) {
    let started = Instant::now();
    while !done(browser) {
        assert!(
            started.elapsed() < limit,
            "timed out waiting for {what} on {}",
            browser.current_url()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn events(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Clicks the zone editor's picture at a fraction of its size.
fn click_picture(browser: &Browser, x: f64, y: f64) {
    let overlay = browser.find("#overlay");
    let rect = overlay.rect();
    browser.click_at(&overlay, rect.width * x, rect.height * y);
}

#[test]
fn an_operator_reviews_rejects_dispatches_and_draws_a_zone_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut sim_config = SimConfig::new(sample("street-static-h264.mp4"), 3);
    sim_config.bind = SocketAddr::from(([127, 0, 0, 1], port));
    let _sim = SimHandle::start(sim_config).expect("start simulator");
    std::fs::create_dir(dir.path().join("cameras")).unwrap();
    let cameras = dir.path().join("cameras/street.toml");
    std::fs::write(&cameras, camera_file(port)).unwrap();
    let settings = "snapshot_every = \"2s\"\n[sampling]\ninterval = \"2s\"\n\
                    [console]\nsuppress_for = \"1h\"\n[sinks]\njsonl = \"events.jsonl\"\nevery = \"1s\"\n";
    let mut daemon = Daemon::start(dir.path(), "cameras", settings);
    let browser = Browser::start();
    let api = daemon.api.clone();
    let page = |path: &str| format!("{api}{path}");

    // Sign in: pages send a stranger to the sign-in form.
    browser.goto(&page("/cases"));
    browser.wait_for("#login-form", Duration::from_secs(10));
    assert!(
        browser.current_url().contains("/login?next="),
        "{}",
        browser.current_url()
    );
    shot(&browser, "login");
    browser.find("#token").send_keys(TOKEN);
    browser.find("#sign-in").click();
    browser.wait_for("#queue", Duration::from_secs(10));

    // Both van cameras file their case; the queue shows them with thumbnails.
    daemon.wait_for("both van cases filed", Duration::from_secs(120), |d| {
        filed(d, "cam-0").is_some() && filed(d, "cam-1").is_some()
    });
    let rejected_id = filed(&daemon, "cam-0").unwrap();
    let dispatched_id = filed(&daemon, "cam-1").unwrap();
    browser.refresh();
    wait_browser(
        &browser,
        "the queue's thumbnails",
        Duration::from_secs(20),
        |b| b.find_all("tr.case-row").len() >= 2 && images_loaded(b, "img.thumb"),
    );
    shot(&browser, "queue");

    // Reject the first as a false positive, with a reason and a note.
    browser.goto(&page(&format!("/cases/{rejected_id}")));
    wait_browser(
        &browser,
        "the evidence images",
        Duration::from_secs(20),
        |b| images_loaded(b, "img.evidence-img"),
    );
    let kinds: Vec<String> = browser
        .find_all("img.evidence-img")
        .iter()
        .filter_map(|i| i.attr("data-kind"))
        .collect();
    assert!(
        kinds.contains(&"filed".to_string()) && kinds.contains(&"first-crop".to_string()),
        "{kinds:?}"
    );
    shot(&browser, "case");
    browser.execute(
        "document.getElementById('reason').value = arguments[0];",
        &[json!("not_a_violation")],
    );
    browser.find("#note").send_keys("公交站旁的合法停靠");
    browser.find("#reject").click();
    wait_browser(
        &browser,
        "the rejected status",
        Duration::from_secs(10),
        |b| text_of(b, "#case-status[data-status=rejected]").is_some(),
    );
    let detail = daemon.get(&format!("/api/cases/{rejected_id}"));
    assert_eq!(detail["status"], "rejected");
    assert_eq!(detail["verdict"]["reason"], "not_a_violation");
    let history = detail["history"].as_array().unwrap();
    assert_eq!(history.last().unwrap()["actor"], "api-token", "{history:?}");
    daemon.wait_for(
        "the case.rejected event delivered",
        Duration::from_secs(20),
        |d| {
            events(&d.dir)
                .iter()
                .any(|e| e["kind"] == "case.rejected" && e["payload"]["id"] == rejected_id.as_str())
        },
    );

    // Confirm and dispatch the other; the running daemon keeps the operator's status.
    browser.goto(&page(&format!("/cases/{dispatched_id}")));
    browser.find("#confirm").click();
    wait_browser(&browser, "the verdict", Duration::from_secs(10), |b| {
        text_of(b, "#case-verdict").is_some_and(|v| v.contains("已确认"))
    });
    browser.find("#set-dispatched").click();
    wait_browser(
        &browser,
        "the dispatched status",
        Duration::from_secs(10),
        |b| text_of(b, "#case-status[data-status=dispatched]").is_some(),
    );
    assert!(browser.find("#case-verdict").text().contains("已确认"));
    shot(&browser, "case-dispatched");

    // The zone editor: a camera from this quarter's rotation, with no zones yet.
    browser.goto(&page("/cameras"));
    wait_browser(&browser, "cam-3's problem", Duration::from_secs(30), |b| {
        b.refresh();
        b.wait_for("#cameras", Duration::from_secs(5));
        text_of(b, ".problem-not_found").is_some()
    });
    // It has no picture: the page says so instead of a broken image.
    assert_eq!(
        text_of(&browser, "tr[data-id=cam-3] .no-picture").as_deref(),
        Some("暂无画面")
    );
    shot(&browser, "cameras");
    browser.goto(&page("/cameras/cam-2"));
    browser.wait_for("#no-zones", Duration::from_secs(5));
    wait_browser(&browser, "cam-2's picture", Duration::from_secs(30), |b| {
        b.refresh();
        b.wait_for("#picture", Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(300));
        images_loaded(b, "#picture")
    });
    browser.find("#add-zone").click();
    click_picture(&browser, 0.78, 0.40);
    click_picture(&browser, 0.99, 0.40);
    // Two vertices are not a zone: the save is refused with the reason, nothing written.
    let before = std::fs::read_to_string(&cameras).unwrap();
    browser
        .find(".zone-item input[value='illegal_parking']")
        .click();
    browser.find("#save-zones").click();
    wait_browser(&browser, "the refusal", Duration::from_secs(10), |b| {
        b.find("#editor-message").text().contains("3")
    });
    assert_eq!(std::fs::read_to_string(&cameras).unwrap(), before);
    click_picture(&browser, 0.99, 0.80);
    click_picture(&browser, 0.78, 0.80);
    // Drag the last vertex a little further out, as an operator refines a corner.
    let overlay = browser.find("#overlay");
    let size = overlay.rect();
    browser.drag(
        &overlay,
        (size.width * 0.78, size.height * 0.80),
        (size.width * 0.76, size.height * 0.82),
    );
    let points = text_of(&browser, "#overlay polygon.current")
        .map(|_| {
            browser.execute(
                "return document.querySelector('#overlay polygon.current').getAttribute('points');",
                &[],
            )
        })
        .unwrap();
    let last: Vec<f64> = points
        .as_str()
        .and_then(|p| p.split(' ').next_back())
        .map(|p| p.split(',').map(|v| v.parse().unwrap()).collect())
        .unwrap();
    assert!(last[0] < 0.77 && last[1] > 0.81, "dragged: {points}");
    let dwell = browser
        .find_all(".zone-item input[type=text]")
        .into_iter()
        .nth(2)
        .expect("the min dwell field");
    dwell.send_keys("6s");
    browser.find("#zone-panel h2").click(); // leaving the field commits it
    browser.find("#preview").click();
    wait_browser(&browser, "the preview", Duration::from_secs(10), |b| {
        b.find("#editor-message").text().contains(": ")
    });
    shot(&browser, "zone-editor");
    browser.find("#save-zones").click();
    wait_browser(&browser, "the save", Duration::from_secs(10), |b| {
        b.find("#editor-message").text().contains("已保存")
    });
    // The zones fit this picture: the admin makes it the camera's reference view.
    wait_browser(
        &browser,
        "the view likeness",
        Duration::from_secs(30),
        |b| {
            b.refresh();
            b.wait_for("#zone-panel", Duration::from_secs(5));
            text_of(b, "#view-likeness").is_some_and(|l| l.parse::<f64>().is_ok())
        },
    );
    browser.find("#rebase-view").click();
    assert!(browser.alert_text().contains("参考画面"));
    browser.accept_alert();
    wait_browser(&browser, "the re-base", Duration::from_secs(10), |b| {
        b.find("#view-message").text().contains("已设为参考画面")
    });
    browser.execute(
        "document.getElementById('view-line').scrollIntoView({block: 'center'});",
        &[],
    );
    shot(&browser, "camera-view-rebased");
    // The vertex handles stay round on screen when the picture changes shape (as it does
    // when it loads after the page drew them).
    let round_handle = |b: &Browser| {
        let size = b.execute(
            "const r = document.querySelector('#overlay ellipse.vertex').getBoundingClientRect();\
             return [r.width, r.height];",
            &[],
        );
        (size[0].as_f64().unwrap() - size[1].as_f64().unwrap()).abs() < 1.0
    };
    assert!(round_handle(&browser));
    browser.execute(
        "document.querySelector('#stage img').style.height = '300px';",
        &[],
    );
    browser.wait_until(
        "round vertex handles on a reshaped picture",
        Duration::from_secs(5),
        round_handle,
    );
    browser.execute(
        "document.querySelector('#stage img').style.height = '';",
        &[],
    );
    let audit = daemon.get("/api/audit");
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "view-rebased"),
        "{audit}"
    );
    let after = std::fs::read_to_string(&cameras).unwrap();
    assert!(
        after.starts_with("# cameras of the console test"),
        "{after}"
    );
    assert!(
        after.contains("# new this quarter: no zones yet"),
        "{after}"
    );
    let reloaded =
        cgbot::config::load_cameras(&cameras, &cgbot::rules::EventCatalogue::builtin()).unwrap();
    let cam2 = reloaded.iter().find(|c| c.info.id == "cam-2").unwrap();
    assert_eq!(cam2.zones.len(), 1);
    assert_eq!(cam2.zones[0].rules[0].min_dwell, Duration::from_secs(6));
    // Someone else changes the camera meanwhile: the next save is a conflict.
    let version = daemon.get("/api/cameras/cam-2/zones")["version"]
        .as_str()
        .unwrap()
        .to_string();
    let mut zones = daemon.get("/api/cameras/cam-2/zones")["zones"].clone();
    zones[0]["name"] = json!("另一位操作员改的名字");
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let put = agent
        .put(page("/api/cameras/cam-2/zones"))
        .header("Authorization", &format!("Bearer {TOKEN}"))
        .header("Content-Type", "application/json")
        .send(json!({ "version": version, "zones": zones }).to_string())
        .unwrap();
    assert_eq!(put.status().as_u16(), 200);
    browser.find("#save-zones").click();
    wait_browser(&browser, "the conflict", Duration::from_secs(10), |b| {
        b.find("#editor-message")
            .text()
            .contains("changed by someone else")
    });
    // The daemon applies the drawn zone without a restart: the van there becomes a case.
    daemon.wait_for("a case in the drawn zone", Duration::from_secs(90), |d| {
        filed(d, "cam-2").is_some()
    });

    // The operator's dispatch survived every sample since.
    assert_eq!(
        daemon.get(&format!("/api/cases/{dispatched_id}"))["status"],
        "dispatched"
    );
    // The rejected place files nothing while its suppression lasts, and counts the hits.
    let hits = |d: &Daemon| {
        d.get("/api/suppressions?camera=cam-0")[0]["hits"]
            .as_u64()
            .unwrap_or(0)
    };
    daemon.wait_for("suppressed sightings", Duration::from_secs(30), |d| {
        hits(d) >= 2
    });
    assert_eq!(cases_of(&daemon, "cam-0").len(), 1);
    // A second run over the same scene: still no new case there.
    let hits_before = hits(&daemon);
    daemon.terminate(Duration::from_secs(20));
    let mut daemon = Daemon::start(dir.path(), "cameras", settings);
    daemon.wait_for(
        "the place seen again after the restart",
        Duration::from_secs(60),
        |d| hits(d) > hits_before,
    );
    std::thread::sleep(Duration::from_secs(8)); // past the 6 s dwell
    assert_eq!(
        cases_of(&daemon, "cam-0").len(),
        1,
        "{:?}",
        cases_of(&daemon, "cam-0")
    );
    assert_eq!(
        daemon.get(&format!("/api/cases/{dispatched_id}"))["status"],
        "dispatched"
    );

    // Statistics show what the database holds. (The browser signs in again: sessions
    // live in the daemon process, which restarted.)
    let api = daemon.api.clone();
    let page = |path: &str| format!("{api}{path}");
    browser.goto(&page("/stats"));
    browser
        .wait_for("#token", Duration::from_secs(10))
        .send_keys(TOKEN);
    browser.find("#sign-in").click();
    browser.wait_for("#funnel", Duration::from_secs(10));
    let stats = daemon.get("/api/stats");
    for (field, css) in [
        ("found", "#found"),
        ("filed", "#filed"),
        ("closed", "#closed"),
        ("rejected", "#rejected"),
    ] {
        assert_eq!(
            browser.find(css).text(),
            stats[field].to_string(),
            "{field}: {stats}"
        );
    }
    assert_eq!(stats["rejected"], 1);
    assert!(stats["filed"].as_u64().unwrap() >= 3, "{stats}");
    shot(&browser, "stats");
    // The English switch.
    browser.find("#lang-switch").click();
    browser.wait_for("#funnel", Duration::from_secs(10));
    assert!(browser.find("header nav").text().contains("Review"));
    shot(&browser, "stats-en");
    // Every other page in English too, for the screenshots.
    for (path, name, ready) in [
        ("/cases?status=all".to_string(), "queue-en", "#queue"),
        (
            format!("/cases/{dispatched_id}"),
            "case-en",
            "#verdict-form",
        ),
        ("/cameras".to_string(), "cameras-en", "#cameras"),
        ("/cameras/cam-2".to_string(), "camera-en", "#zone-panel"),
    ] {
        browser.goto(&page(&path));
        browser.wait_for(ready, Duration::from_secs(10));
        shot(&browser, name);
    }
    // The camera page's view line, below the picture.
    browser.goto(&page("/cameras/cam-2"));
    browser.wait_for("#view-line", Duration::from_secs(10));
    browser.execute(
        "document.getElementById('view-line').scrollIntoView({block: 'center'});",
        &[],
    );
    shot(&browser, "camera-view-en");
    browser.find("#sign-out").click();
    browser.wait_for("#login-form", Duration::from_secs(10));
    shot(&browser, "login-en");
}
