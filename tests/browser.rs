//! The headless Chromium harness (`common::browser`) against a page served from a local
//! HTTP server: a form typed into in Chinese and submitted, a canvas clicked at offsets,
//! an SVG vertex dragged as in the zone editor, a confirm dialog, cookies, scripts, an
//! element that appears late, and a screenshot in `target/screenshots/`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::browser::{keys, screenshot_path, Browser};
use serde_json::json;

const PAGE: &str = r#"<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>城管机器人 · 浏览器测试</title>
<style>
  body { font: 16px sans-serif; margin: 16px; }
  canvas, svg { border: 1px solid #444; display: block; margin: 8px 0; }
  svg { background: #eef; touch-action: none; }
</style></head>
<body>
<h1 id="title">违章停车、暴露垃圾、占道经营</h1>
<form id="case" action="/submitted" method="get">
  <label>地点 <input id="place" name="place" value="旧地址"></label>
  <label>备注 <input id="note" name="note"></label>
  <button id="submit" type="submit">提交案件</button>
</form>
<ul id="events"><li>机动车乱停放</li><li>暴露垃圾</li><li>无照经营游商</li></ul>
<canvas id="pad" width="400" height="120"></canvas>
<p id="clicks">[]</p>
<svg id="zone" width="400" height="200">
  <polygon id="poly" points="40,40 160,40 160,120 40,120" fill="rgba(255,0,0,0.3)" stroke="red"/>
  <circle id="vertex" cx="160" cy="120" r="8" fill="red"/>
</svg>
<p id="dragged">未拖动</p>
<button id="delete" type="button">删除区域</button> <span id="deleted"></span>
<button id="later" type="button">稍后显示</button>
<script>
const pad = document.getElementById('pad');
const ctx = pad.getContext('2d');
ctx.font = '20px sans-serif';
ctx.fillText('点击画布：标出禁停区', 10, 30);
const clicks = [];
pad.addEventListener('click', e => {
  const r = pad.getBoundingClientRect();
  const x = Math.round(e.clientX - r.left), y = Math.round(e.clientY - r.top);
  clicks.push([x, y]);
  ctx.fillStyle = 'blue';
  ctx.beginPath(); ctx.arc(x, y, 5, 0, 7); ctx.fill();
  document.getElementById('clicks').textContent = JSON.stringify(clicks);
});
const svg = document.getElementById('zone');
const vertex = document.getElementById('vertex');
const poly = document.getElementById('poly');
let dragging = false;
vertex.addEventListener('pointerdown', e => { dragging = true; svg.setPointerCapture(e.pointerId); });
svg.addEventListener('pointermove', e => {
  if (!dragging) return;
  const r = svg.getBoundingClientRect();
  const x = Math.round(e.clientX - r.left), y = Math.round(e.clientY - r.top);
  vertex.setAttribute('cx', x); vertex.setAttribute('cy', y);
  poly.setAttribute('points', `40,40 160,40 ${x},${y} 40,120`);
});
svg.addEventListener('pointerup', () => {
  if (!dragging) return;
  dragging = false;
  document.getElementById('dragged').textContent =
    '顶点移到 ' + vertex.getAttribute('cx') + ',' + vertex.getAttribute('cy');
});
document.getElementById('delete').addEventListener('click', () => {
  document.getElementById('deleted').textContent =
    confirm('确定删除这个区域吗？') ? '已删除' : '已取消';
});
document.getElementById('later').addEventListener('click', () => setTimeout(() => {
  const p = document.createElement('p');
  p.id = 'late'; p.textContent = '迟到的元素';
  document.body.appendChild(p);
}, 300));
</script>
</body></html>
"#;

/// Answers one request: the page at `/`, the submitted form (and the cookies sent with
/// it) at `/submitted`, 404 otherwise.
fn answer(stream: TcpStream) {
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut cookie = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("cookie") {
                cookie = value.trim().to_string();
            }
        }
    }
    let target = request_line.split(' ').nth(1).unwrap_or("/");
    let url = url::Url::parse(&format!("http://page{target}")).unwrap();
    let (status, body) = match url.path() {
        "/" => ("200 OK", PAGE.to_string()),
        "/submitted" => {
            let field = |name: &str| {
                url.query_pairs()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            (
                "200 OK",
                format!(
                    "<!doctype html><html><head><meta charset=\"utf-8\"><title>已提交</title></head>\
                     <body><p id=\"got\">地点：{}</p><p id=\"note\">备注：{}</p><p id=\"cookie\">{}</p></body></html>",
                    field("place"),
                    field("note"),
                    cookie
                ),
            )
        }
        _ => ("404 Not Found", "not here".to_string()),
    };
    let _ = write!(
        &stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Serves [`answer`] on 127.0.0.1 from a background thread; returns the base URL.
fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || answer(stream));
        }
    });
    base
}

#[test]
fn chromium_types_clicks_drags_and_screenshots_a_chinese_page() {
    let base = serve();
    let browser = Browser::start();
    browser.goto(&format!("{base}/"));
    assert_eq!(browser.title(), "城管机器人 · 浏览器测试");
    assert_eq!(
        browser.find("#title").text(),
        "违章停车、暴露垃圾、占道经营"
    );
    let events: Vec<String> = browser
        .find_all("#events li")
        .iter()
        .map(|e| e.text())
        .collect();
    assert_eq!(events, ["机动车乱停放", "暴露垃圾", "无照经营游商"]);
    assert!(browser.try_find("#nothing-here").is_none());
    let list = browser.find("#events");
    assert_eq!(list.find("li:last-child").text(), "无照经营游商");

    // Scripts: arguments in, values out; elements as arguments.
    let got = browser.execute(
        "return [document.title.length, arguments[0] + 1, arguments[1].tagName, navigator.language];",
        &[json!(41), list.json()],
    );
    assert_eq!(got, json!([13, 42, "UL", "zh-CN"]));

    // Canvas clicks at offsets from its top-left corner arrive where they were aimed.
    let pad = browser.find("#pad");
    assert_eq!((pad.rect().width, pad.rect().height), (402.0, 122.0)); // with the border
    browser.click_at(&pad, 50.0, 40.0);
    browser.click_at(&pad, 300.0, 100.0);
    let clicks: Vec<[f64; 2]> =
        serde_json::from_str(&browser.find("#clicks").text()).expect("clicks as JSON");
    assert_eq!(clicks.len(), 2, "{clicks:?}");
    for (got, want) in clicks.iter().zip([[50.0, 40.0], [300.0, 100.0]]) {
        assert!(
            (got[0] - want[0]).abs() <= 1.0 && (got[1] - want[1]).abs() <= 1.0,
            "clicked {got:?}, aimed at {want:?}"
        );
    }

    // A zone vertex dragged on the SVG follows the pointer.
    let zone = browser.find("#zone");
    browser.drag(&zone, (161.0, 121.0), (301.0, 171.0));
    let vertex = browser.find("#vertex");
    let at = |name: &str| vertex.attr(name).unwrap().parse::<f64>().unwrap();
    assert!(
        (at("cx") - 301.0).abs() <= 1.0 && (at("cy") - 171.0).abs() <= 1.0,
        "vertex at {}, {}",
        at("cx"),
        at("cy")
    );
    assert!(browser.find("#dragged").text().starts_with("顶点移到 "));
    assert!(browser
        .find("#poly")
        .attr("points")
        .unwrap()
        .contains(&format!("{},{}", at("cx"), at("cy"))));

    // A confirm dialog: its text, then OK.
    browser.find("#delete").click();
    assert_eq!(browser.alert_text(), "确定删除这个区域吗？");
    browser.accept_alert();
    assert_eq!(browser.find("#deleted").text(), "已删除");

    // An element that appears later is waited for.
    browser.find("#later").click();
    let late = browser.wait_for("#late", Duration::from_secs(5));
    assert_eq!(late.text(), "迟到的元素");

    // Typing in Chinese, after clearing what was there.
    let place = browser.find("#place");
    assert_eq!(place.prop("value"), "旧地址");
    place.clear();
    place.send_keys("东门路 12 号");
    browser.find("#note").send_keys("白色面包车占用人行道");
    assert_eq!(place.prop("value"), "东门路 12 号");

    let shot = screenshot_path("browser-harness.png");
    let png = browser.screenshot(&shot);
    let image = image::load_from_memory(&png).expect("a PNG screenshot");
    assert!(
        image.width() >= 1000,
        "{}x{}",
        image.width(),
        image.height()
    );
    assert!(Path::new(&shot).is_file());
    let zone_shot = zone.screenshot(screenshot_path("browser-harness-zone.png"));
    let zone_image = image::load_from_memory(&zone_shot).unwrap();
    assert_eq!(zone_image.width(), 402);

    // Cookies go with the next request; the form is submitted with Enter.
    browser.add_cookie("cgbot_session", "s-42");
    assert!(browser
        .cookies()
        .iter()
        .any(|c| c["name"] == "cgbot_session" && c["value"] == "s-42"));
    browser.find("#note").send_keys(keys::ENTER);
    let got = browser.wait_for("#got", Duration::from_secs(10));
    assert_eq!(got.text(), "地点：东门路 12 号");
    assert_eq!(browser.find("#note").text(), "备注：白色面包车占用人行道");
    assert_eq!(browser.find("#cookie").text(), "cgbot_session=s-42");
    assert!(
        browser
            .current_url()
            .starts_with(&format!("{base}/submitted?place=")),
        "{}",
        browser.current_url()
    );
    browser.delete_cookies();
    assert!(browser.cookies().is_empty());
    browser.goto(&format!("{base}/"));
    assert_eq!(browser.execute("return document.cookie;", &[]), json!(""));
}

#[test]
fn a_missing_browser_is_named_with_the_setup_command() {
    let error = match Browser::try_start_with(
        Path::new("/nonexistent/chromedriver"),
        Path::new("/usr/lib/chromium/chromium"),
    ) {
        Ok(_) => panic!("a browser started without chromedriver"),
        Err(e) => e,
    };
    assert!(
        error.contains("chromedriver not found at /nonexistent/chromedriver")
            && error.contains("scripts/setup.sh")
            && error.contains("chromium-driver"),
        "{error}"
    );
}
