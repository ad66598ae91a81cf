//! Just enough of the W3C WebDriver protocol (JSON over HTTP) to drive a
//! real headless Chromium through Debian's chromedriver: no WebDriver crate
//! (and its TLS stack) to build for four commands.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::raw;

/// The W3C key under which an element reference travels.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .map(|d| d.join(n))
            .find(|p| p.is_file())
    })
}

/// chromedriver and a Chromium binary, or why not.
pub fn find_browser() -> Result<(PathBuf, PathBuf), String> {
    let driver =
        on_path(&["chromedriver"]).ok_or("chromedriver is not on PATH (apt-get install chromium-driver)")?;
    let browser = on_path(&["chromium", "chromium-browser", "google-chrome"])
        .ok_or("chromium is not on PATH (apt-get install chromium)")?;
    Ok((driver, browser))
}

pub struct Browser {
    driver: tokio::process::Child,
    addr: SocketAddr,
    session: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with a phone-sized window.
    pub async fn start(driver: &Path, browser: &Path) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let child = tokio::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            // Its own process group, so that Drop can end the browser it
            // starts too, even when the test fails half-way.
            .process_group(0)
            .spawn()
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": browser.to_string_lossy(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=412,915", "--lang=zh-CN"]
            }
        }}});
        let mut b = Browser {
            driver: child,
            addr,
            session: String::new(),
        };
        let v = b.call("POST", "/session", Some(caps)).await;
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        b
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let head = format!("{method} {path} HTTP/1.1\r\nContent-Type: application/json");
        let r = raw(self.addr, &head, body.as_bytes()).await;
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
        v["value"].clone()
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub async fn goto(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({ "url": url })))
            .await;
    }

    pub async fn url(&self) -> String {
        self.call("GET", &self.s("/url"), None)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// The element matching `css`, waiting up to 10 s for it to be displayed.
    pub async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let head = format!(
                "POST {} HTTP/1.1\r\nContent-Type: application/json",
                self.s("/element")
            );
            let body = json!({"using": "css selector", "value": css}).to_string();
            let r = raw(self.addr, &head, body.as_bytes()).await;
            if r.status == 200 {
                let id = r.json()["value"][ELEMENT].as_str().unwrap().to_string();
                // Not `call`: the page may replace the element between the
                // two requests (a navigation, a re-render), and chromedriver
                // then answers 500 "does not belong to the document"; the
                // next round finds the new one.
                let head = format!(
                    "GET {} HTTP/1.1\r\nContent-Type: application/json",
                    self.s(&format!("/element/{id}/displayed"))
                );
                let shown = raw(self.addr, &head, b"").await;
                if shown.status == 200 && shown.json()["value"] == json!(true) {
                    return id;
                }
            }
            assert!(Instant::now() < deadline, "no visible {css}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.call("POST", &self.s(&format!("/element/{id}/click")), Some(json!({})))
            .await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.call(
            "POST",
            &self.s(&format!("/element/{id}/value")),
            Some(json!({ "text": text })),
        )
        .await;
    }

    pub async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        self.call("GET", &self.s(&format!("/element/{id}/text")), None)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Runs `script` in the page (a returned promise is awaited).
    pub async fn run(&self, script: &str) -> Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let b64 = self.call("GET", &self.s("/screenshot"), None).await;
        base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or(""))
            .unwrap()
    }

    pub async fn quit(self) {
        let path = self.s("");
        self.call("DELETE", &path, None).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id().and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) on the process group this test started.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}
