//! A real headless Chromium for end-to-end tests of web pages, driven over W3C WebDriver
//! by Debian's `chromedriver` (both installed by `scripts/setup.sh`).
//!
//! The client is the protocol itself, JSON over `ureq` (already a dependency), and
//! synchronous like the tests: the WebDriver client crates weighed for it (`fantoccini`
//! without TLS: 36 more crates and a rebuild of the shared ones with other features;
//! `thirtyfour`: needs a newer Rust than the project's 1.85) cost more than these few
//! hundred lines.
//!
//! ```ignore
//! let browser = Browser::start();
//! browser.goto(&format!("{base}/console/"));
//! browser.find("#name").send_keys("东门路");
//! browser.click_at(&browser.find("#zone-editor"), 120.0, 80.0);
//! browser.screenshot("target/screenshots/zones.png");
//! ```
//!
//! Every method panics with what failed (the command, WebDriver's error and the page's
//! URL), as a test wants; `try_find` and `Browser::try_start_with` return instead.
//! Dropping the browser (also while a failed test unwinds) ends the session and kills
//! chromedriver with the browser it started.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// The key W3C WebDriver names an element reference by.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where the browser is installed on Debian; `$CGBOT_CHROMIUM` overrides.
const DEBIAN_CHROMIUM: &str = "/usr/lib/chromium/chromium";

/// What to run to get the browser and its driver.
pub const SETUP: &str = "bash scripts/setup.sh";

/// Special keys for [`Element::send_keys`] (W3C WebDriver code points).
pub mod keys {
    pub const ENTER: &str = "\u{E007}";
    pub const TAB: &str = "\u{E004}";
    pub const ESCAPE: &str = "\u{E00C}";
    pub const BACKSPACE: &str = "\u{E003}";
}

/// A point inside an element, in CSS pixels from its top-left corner.
pub type Offset = (f64, f64);

pub struct Browser {
    driver: Child,
    /// `http://127.0.0.1:<port>`: chromedriver.
    driver_url: String,
    /// `<driver_url>/session/<id>`, once a session is open.
    session: String,
    agent: ureq::Agent,
    /// The browser profile and chromedriver's log.
    dir: tempfile::TempDir,
}

impl Browser {
    /// chromedriver and Chromium from `$CGBOT_CHROMEDRIVER` / `$CGBOT_CHROMIUM`, else the
    /// Debian packages; panics, naming what is missing and how to install it, if they are
    /// not there.
    pub fn start() -> Browser {
        let missing = |what: &str, variable: &str| -> ! {
            panic!(
                "{what} not found (not in PATH, ${variable} unset): browser tests need \
                 Debian's chromium and chromium-driver: install them with `{SETUP}`"
            )
        };
        let driver = std::env::var_os("CGBOT_CHROMEDRIVER")
            .map(PathBuf::from)
            .or_else(|| find_in_path("chromedriver"))
            .unwrap_or_else(|| missing("chromedriver", "CGBOT_CHROMEDRIVER"));
        let chromium = std::env::var_os("CGBOT_CHROMIUM")
            .map(PathBuf::from)
            .or_else(|| Some(PathBuf::from(DEBIAN_CHROMIUM)).filter(|p| p.is_file()))
            .or_else(|| find_in_path("chromium"))
            .unwrap_or_else(|| missing("Chromium", "CGBOT_CHROMIUM"));
        Browser::try_start_with(&driver, &chromium).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `driver` on a free port and opens a headless session of `chromium`
    /// (`--headless=new --no-sandbox --disable-gpu --window-size=1400,1000 --lang=zh-CN`,
    /// a fresh profile).
    pub fn try_start_with(driver: &Path, chromium: &Path) -> Result<Browser, String> {
        for (what, path) in [("chromedriver", driver), ("Chromium", chromium)] {
            if !path.is_file() {
                return Err(format!(
                    "{what} not found at {}: browser tests need Debian's chromium and \
                     chromium-driver: install them with `{SETUP}`",
                    path.display()
                ));
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("cgbot-browser-")
            .tempdir()
            .map_err(|e| format!("browser profile directory: {e}"))?;
        let port = super::daemon::free_port();
        let log = dir.path().join("chromedriver.log");
        let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new(driver)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                // Its own process group: the browsers it starts go with it on drop.
                .process_group(0)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}; run `{SETUP}`", driver.display()))?
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .new_agent();
        let mut browser = Browser {
            driver: child,
            driver_url: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            agent,
            dir,
        };
        browser.wait_for_driver()?;
        browser.open_session(chromium)?;
        Ok(browser)
    }

    fn wait_for_driver(&mut self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.driver.try_wait() {
                return Err(format!(
                    "chromedriver exited ({status}) at start\n{}",
                    self.driver_log()
                ));
            }
            let ready = self
                .request("GET", &format!("{}/status", self.driver_url), None)
                .is_ok_and(|v| v["ready"] == true);
            if ready {
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(20) {
                return Err(format!(
                    "chromedriver not ready after 20 s\n{}",
                    self.driver_log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn open_session(&mut self, chromium: &Path) -> Result<(), String> {
        let profile = self.dir.path().join("profile");
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    // Alerts stay open until a test handles them.
                    "unhandledPromptBehavior": "ignore",
                    "goog:chromeOptions": {
                        "binary": chromium,
                        "args": [
                            "--headless=new",
                            // Tests run as root, where Chromium's sandbox cannot start.
                            "--no-sandbox",
                            "--disable-gpu",
                            "--window-size=1400,1000",
                            "--lang=zh-CN",
                            // Containers give /dev/shm a few MiB.
                            "--disable-dev-shm-usage",
                            "--no-first-run",
                            "--no-default-browser-check",
                            "--disable-extensions",
                            "--disable-background-networking",
                            format!("--user-data-dir={}", profile.display()),
                        ],
                        "prefs": { "intl.accept_languages": "zh-CN,zh" },
                    },
                }
            }
        });
        let url = format!("{}/session", self.driver_url);
        let value = self
            .request("POST", &url, Some(&capabilities))
            .map_err(|e| {
                format!(
                    "no Chromium session ({}): {e}\n{}",
                    chromium.display(),
                    self.driver_log()
                )
            })?;
        let id = value["sessionId"]
            .as_str()
            .ok_or_else(|| format!("new session without an id: {value}"))?;
        self.session = format!("{}/session/{id}", self.driver_url);
        self.command(
            "POST",
            "/timeouts",
            Some(json!({ "pageLoad": 30_000, "script": 30_000, "implicit": 0 })),
        );
        Ok(())
    }

    /// The tail of chromedriver's log, for error messages.
    pub fn driver_log(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default();
        let start = log.len().saturating_sub(4000);
        let start = (start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(log.len());
        format!("--- chromedriver log (tail) ---\n{}", &log[start..])
    }

    /// One HTTP exchange with chromedriver: the response's `value`, or WebDriver's error.
    fn request(&self, method: &str, url: &str, body: Option<&Value>) -> Result<Value, String> {
        let response = match method {
            "GET" => self.agent.get(url).call(),
            "DELETE" => self.agent.delete(url).call(),
            _ => self
                .agent
                .post(url)
                .header("Content-Type", "application/json; charset=utf-8")
                .send(body.unwrap_or(&json!({})).to_string()),
        };
        let mut response = response.map_err(|e| format!("{method} {url}: {e}"))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_string()
            .map_err(|e| format!("{method} {url}: reading the answer: {e}"))?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{method} {url}: {status} with no JSON ({e}): {text}"))?;
        let value = json.get("value").cloned().unwrap_or(Value::Null);
        if status >= 400 || value.get("error").is_some_and(|e| e.is_string()) {
            return Err(format!(
                "{method} {url}: {status} {}: {}",
                value["error"].as_str().unwrap_or("error"),
                value["message"].as_str().unwrap_or(&text)
            ));
        }
        Ok(value)
    }

    /// A session command; panics with what failed.
    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.session);
        self.request(method, &url, body.as_ref())
            .unwrap_or_else(|e| panic!("WebDriver {e}{}", self.where_now(path)))
    }

    /// Where the page is, for a failure message (nothing if that cannot be asked).
    fn where_now(&self, failed: &str) -> String {
        if failed == "/url" {
            return String::new();
        }
        match self.request("GET", &format!("{}/url", self.session), None) {
            Ok(Value::String(url)) => format!(" (page {url})"),
            _ => String::new(),
        }
    }

    pub fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn current_url(&self) -> String {
        self.command("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn title(&self) -> String {
        self.command("GET", "/title", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn refresh(&self) {
        self.command("POST", "/refresh", None);
    }

    /// The page's HTML as it is now.
    pub fn source(&self) -> String {
        self.command("GET", "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn element(&self, value: &Value) -> Element<'_> {
        let id = value[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("not an element reference: {value}"));
        Element {
            browser: self,
            id: id.to_string(),
        }
    }

    /// The first element matching the CSS selector, now; panics if there is none.
    pub fn find(&self, css: &str) -> Element<'_> {
        self.try_find(css)
            .unwrap_or_else(|| panic!("no element matches `{css}`{}", self.where_now("/element")))
    }

    /// The first element matching the CSS selector, if any.
    pub fn try_find(&self, css: &str) -> Option<Element<'_>> {
        self.find_all(css).into_iter().next()
    }

    /// Every element matching the CSS selector, in document order.
    pub fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let found = self.command(
            "POST",
            "/elements",
            Some(json!({ "using": "css selector", "value": css })),
        );
        found
            .as_array()
            .map(|all| all.iter().map(|v| self.element(v)).collect())
            .unwrap_or_default()
    }

    /// Waits (polling every 50 ms) until an element matches the CSS selector; panics with
    /// the page's URL after `timeout`.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Element<'_> {
        let started = Instant::now();
        loop {
            if let Some(found) = self.try_find(css) {
                return found;
            }
            if started.elapsed() > timeout {
                panic!(
                    "no element matches `{css}` after {timeout:?}{}",
                    self.where_now("/element")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (polling every 50 ms) until `condition` holds; panics naming `what`.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut condition: impl FnMut(&Browser) -> bool,
    ) {
        let started = Instant::now();
        while !condition(self) {
            if started.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {what}{}",
                    self.where_now("")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `js` as a function body with `args` as `arguments` (an element as
    /// [`Element::json`]) and returns what it returns (`return ...;`); a promise is
    /// awaited.
    pub fn execute(&self, js: &str, args: &[Value]) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({ "script": js, "args": args })),
        )
    }

    /// The visible viewport as PNG at `path` (directories created); returns the PNG.
    pub fn screenshot(&self, path: impl AsRef<Path>) -> Vec<u8> {
        let encoded = self.command("GET", "/screenshot", None);
        save_png(&encoded, path.as_ref())
    }

    /// Sets a cookie for the current page's host, path `/`.
    pub fn add_cookie(&self, name: &str, value: &str) {
        self.command(
            "POST",
            "/cookie",
            Some(json!({ "cookie": { "name": name, "value": value, "path": "/" } })),
        );
    }

    /// The current page's cookies, as WebDriver gives them (`name`, `value`, `path`…).
    pub fn cookies(&self) -> Vec<Value> {
        self.command("GET", "/cookie", None)
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn delete_cookies(&self) {
        self.command("DELETE", "/cookie", None);
    }

    /// The open alert, confirm or prompt's text; panics if none is open.
    pub fn alert_text(&self) -> String {
        self.command("GET", "/alert/text", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Accepts (OK) the open alert, confirm or prompt; panics if none is open.
    pub fn accept_alert(&self) {
        self.command("POST", "/alert/accept", None);
    }

    /// Dismisses (Cancel) the open confirm or prompt.
    pub fn dismiss_alert(&self) {
        self.command("POST", "/alert/dismiss", None);
    }

    /// Clicks at `at` (CSS pixels from the element's top-left corner) with the mouse, as
    /// a user clicks on a canvas or SVG.
    pub fn click_at(&self, element: &Element<'_>, x: f64, y: f64) {
        let origin = element.centre_offset((x, y));
        self.perform(vec![
            element.pointer_move(origin, 0),
            json!({ "type": "pointerDown", "button": 0 }),
            json!({ "type": "pointerUp", "button": 0 }),
        ]);
    }

    /// Presses the mouse at `from`, moves it in steps to `to` and releases it (both in CSS
    /// pixels from the element's top-left corner): what dragging a zone's vertex is.
    pub fn drag(&self, element: &Element<'_>, from: Offset, to: Offset) {
        const STEPS: u32 = 8;
        let mut actions = vec![
            element.pointer_move(element.centre_offset(from), 0),
            json!({ "type": "pointerDown", "button": 0 }),
        ];
        for step in 1..=STEPS {
            let t = f64::from(step) / f64::from(STEPS);
            let at = (from.0 + (to.0 - from.0) * t, from.1 + (to.1 - from.1) * t);
            actions.push(element.pointer_move(element.centre_offset(at), 20));
        }
        actions.push(json!({ "type": "pointerUp", "button": 0 }));
        self.perform(actions);
    }

    /// Runs mouse actions, then releases whatever they left pressed.
    fn perform(&self, actions: Vec<Value>) {
        self.command(
            "POST",
            "/actions",
            Some(json!({ "actions": [{
                "type": "pointer",
                "id": "mouse",
                "parameters": { "pointerType": "mouse" },
                "actions": actions,
            }]})),
        );
        self.command("DELETE", "/actions", None);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            // Closes the browser; a hung one goes with the process group below.
            let _ = self.agent.delete(&self.session).call();
        }
        // chromedriver and the Chromium processes it started share its process group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// An element of the page the browser shows.
pub struct Element<'b> {
    browser: &'b Browser,
    id: String,
}

/// Where an element is, in CSS pixels of the page.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

impl<'b> Element<'b> {
    fn path(&self, rest: &str) -> String {
        format!("/element/{}{rest}", self.id)
    }

    /// The element as an argument of [`Browser::execute`].
    pub fn json(&self) -> Value {
        json!({ ELEMENT_KEY: self.id })
    }

    pub fn click(&self) {
        self.browser.command("POST", &self.path("/click"), None);
    }

    /// Types `text` into the element (CJK included; see [`keys`] for Enter and such).
    pub fn send_keys(&self, text: &str) {
        self.browser
            .command("POST", &self.path("/value"), Some(json!({ "text": text })));
    }

    pub fn clear(&self) {
        self.browser.command("POST", &self.path("/clear"), None);
    }

    /// The rendered text.
    pub fn text(&self) -> String {
        self.browser
            .command("GET", &self.path("/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// An attribute (or the property of that name, as WebDriver looks it up).
    pub fn attr(&self, name: &str) -> Option<String> {
        self.browser
            .command("GET", &self.path(&format!("/attribute/{name}")), None)
            .as_str()
            .map(String::from)
    }

    /// A DOM property (`value`, `checked`…).
    pub fn prop(&self, name: &str) -> Value {
        self.browser
            .command("GET", &self.path(&format!("/property/{name}")), None)
    }

    pub fn tag_name(&self) -> String {
        self.browser
            .command("GET", &self.path("/name"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn is_displayed(&self) -> bool {
        self.browser.command("GET", &self.path("/displayed"), None) == true
    }

    pub fn is_enabled(&self) -> bool {
        self.browser.command("GET", &self.path("/enabled"), None) == true
    }

    pub fn rect(&self) -> Rect {
        let r = self.browser.command("GET", &self.path("/rect"), None);
        let n = |k: &str| r[k].as_f64().unwrap_or(0.0);
        Rect {
            x: n("x"),
            y: n("y"),
            width: n("width"),
            height: n("height"),
        }
    }

    /// The first descendant matching the CSS selector; panics if there is none.
    pub fn find(&self, css: &str) -> Element<'b> {
        self.find_all(css)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no element inside matches `{css}`"))
    }

    pub fn find_all(&self, css: &str) -> Vec<Element<'b>> {
        let found = self.browser.command(
            "POST",
            &self.path("/elements"),
            Some(json!({ "using": "css selector", "value": css })),
        );
        found
            .as_array()
            .map(|all| all.iter().map(|v| self.browser.element(v)).collect())
            .unwrap_or_default()
    }

    /// This element alone as PNG at `path`; returns the PNG.
    pub fn screenshot(&self, path: impl AsRef<Path>) -> Vec<u8> {
        let encoded = self.browser.command("GET", &self.path("/screenshot"), None);
        save_png(&encoded, path.as_ref())
    }

    /// `at` (from the top-left corner) as WebDriver's offset from the element's centre,
    /// in whole pixels.
    fn centre_offset(&self, at: Offset) -> (i64, i64) {
        let r = self.rect();
        (
            (at.0 - r.width / 2.0).round() as i64,
            (at.1 - r.height / 2.0).round() as i64,
        )
    }

    fn pointer_move(&self, (x, y): (i64, i64), duration_ms: u64) -> Value {
        json!({
            "type": "pointerMove",
            "origin": self.json(),
            "x": x,
            "y": y,
            "duration": duration_ms,
        })
    }
}

fn save_png(encoded: &Value, path: &Path) -> Vec<u8> {
    let png = base64::engine::general_purpose::STANDARD
        .decode(encoded.as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("screenshot is not base64: {e}"));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    }
    std::fs::write(path, &png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    png
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `target/screenshots/<name>` in this checkout.
pub fn screenshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/screenshots")
        .join(name)
}
