//! A real browser for tests: headless Chromium driven through chromedriver
//! with the W3C WebDriver protocol (JSON over HTTP, spoken here with hyper;
//! the few commands a page test needs). `scripts/install-deps.sh --tests`
//! installs Debian's `chromium` and `chromium-driver`.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tokio::net::TcpStream;

use crate::servers::free_port;

/// The key W3C WebDriver names element references with.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A WebDriver error answer (its `error` and `message`).
#[derive(Debug)]
pub struct WebDriverError {
    /// The error code (`no such element`, `stale element reference`, ...).
    pub error: String,
    /// What the driver said.
    pub message: String,
}

/// chromedriver with one headless Chromium session.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium window of 1280x900.
    pub async fn start() -> Self {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver must be installed (scripts/install-deps.sh --tests: chromium-driver)");
        let mut browser = Self {
            driver,
            port,
            session: String::new(),
        };
        let ready = crate::wait_until(Duration::from_secs(20), || async {
            matches!(browser.raw("GET", "/status", None).await, Ok(v) if v["value"]["ready"] == true)
        })
        .await;
        assert!(ready, "chromedriver did not come up on port {port}");
        let binary = [
            "/usr/bin/chromium",
            "/usr/bin/chromium-browser",
            "/usr/bin/google-chrome",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists());
        let mut options = json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900", "--no-first-run", "--disable-extensions"],
        });
        if let Some(binary) = binary {
            options["binary"] = json!(binary);
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": options,
            // confirm() dialogs stay open until the test answers them.
            "unhandledPromptBehavior": "ignore",
        }}});
        let created = browser
            .raw("POST", "/session", Some(capabilities))
            .await
            .expect("a Chromium session starts");
        browser.session = created["value"]["sessionId"].as_str().unwrap().to_owned();
        browser
    }

    async fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, WebDriverError> {
        let fail = |message: String| WebDriverError {
            error: "transport".into(),
            message,
        };
        let stream = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .map_err(|e| fail(e.to_string()))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| fail(e.to_string()))?;
        tokio::spawn(connection);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("127.0.0.1:{}", self.port))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(30), sender.send_request(request))
            .await
            .map_err(|_| fail("no answer in 30 s".into()))?
            .map_err(|e| fail(e.to_string()))?;
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| fail(e.to_string()))?
            .to_bytes();
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| fail(e.to_string()))?;
        if let Some(error) = value["value"]["error"].as_str() {
            return Err(WebDriverError {
                error: error.to_owned(),
                message: value["value"]["message"].as_str().unwrap_or_default().to_owned(),
            });
        }
        Ok(value)
    }

    async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, WebDriverError> {
        let value = self
            .raw(method, &format!("/session/{}{path}", self.session), body)
            .await?;
        Ok(value["value"].clone())
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })))
            .await
            .unwrap_or_else(|e| panic!("cannot open {url}: {e:?}"));
    }

    /// The element references matching a CSS selector (none: empty).
    pub async fn find_all(&self, css: &str) -> Vec<String> {
        let found = self
            .command(
                "POST",
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
            .unwrap_or_default();
        found
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits up to `timeout` for an element matching `css`; its reference.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(first) = self.find_all(css).await.into_iter().next() {
                return Some(first);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits up to `timeout` until nothing matches `css`.
    pub async fn wait_gone(&self, css: &str, timeout: Duration) -> bool {
        crate::wait_until(timeout, || async { self.find_all(css).await.is_empty() }).await
    }

    /// Clicks the first element matching `css`, retrying while the page
    /// replaces it (a live refresh makes references stale).
    pub async fn click(&self, css: &str, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let last = match self.wait_for(css, Duration::from_millis(500)).await {
                Some(element) => match self
                    .command("POST", &format!("/element/{element}/click"), Some(json!({})))
                    .await
                {
                    Ok(_) => return,
                    Err(error) => format!("{error:?}"),
                },
                None => "not found".to_owned(),
            };
            assert!(std::time::Instant::now() < deadline, "cannot click {css}: {last}");
        }
    }

    /// Types `text` into the first element matching `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self
            .wait_for(css, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("no {css}"));
        self.command(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot type into {css}: {e:?}"));
    }

    /// The visible text of the first element matching `css` ("" if none).
    pub async fn text(&self, css: &str) -> String {
        let Some(element) = self.find_all(css).await.into_iter().next() else {
            return String::new();
        };
        self.command("GET", &format!("/element/{element}/text"), None)
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Runs `script` in the page; its return value.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.command("POST", "/execute/sync", Some(json!({"script": script, "args": args})))
            .await
            .unwrap_or_else(|e| panic!("script failed: {e:?}"))
    }

    /// The text of the open dialog (confirm, alert), once one is open.
    pub async fn dialog_text(&self, timeout: Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(text) = self.command("GET", "/alert/text", None).await {
                return text.as_str().map(str::to_owned);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Answers the open dialog with OK.
    pub async fn accept_dialog(&self) {
        self.command("POST", "/alert/accept", Some(json!({})))
            .await
            .unwrap_or_else(|e| panic!("no dialog to accept: {e:?}"));
    }

    /// Saves a PNG screenshot of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let data = self
            .command("GET", "/screenshot", None)
            .await
            .unwrap_or_else(|e| panic!("no screenshot: {e:?}"));
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .unwrap();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session (and Chromium) before chromedriver itself.
        let (port, session) = (self.port, self.session.clone());
        if !session.is_empty() {
            let _ = std::process::Command::new("curl")
                .args(["-s", "-m", "5", "-X", "DELETE"])
                .arg(format!("http://127.0.0.1:{port}/session/{session}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
