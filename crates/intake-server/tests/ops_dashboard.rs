//! The `/ops` dashboard in a real headless Chromium, driven over the
//! WebDriver protocol (chromedriver): the page loads from a real 3-node
//! cluster's `--http` port, shows the 16 districts, and shows a surge the
//! test raises by submitting a burst of flood reports in one district.
//! Skips, saying why, when chromedriver or Chromium is not installed
//! (`.ci/run` installs both).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{TestCluster, complaint, fast_tuning, submit};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn progress(what: &str) {
    println!("ops_dashboard: {what}");
}

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// One WebDriver call over HTTP/1.1; the JSON `value`. The body is read by
/// its Content-Length (chromedriver may keep the connection open), and the
/// whole call is bounded.
async fn wd(port: u16, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
    tokio::time::timeout(Duration::from_secs(60), wd_call(port, method, path, body))
        .await
        .map_err(|_| format!("{method} {path}: no answer in 60 s"))?
}

async fn wd_call(port: u16, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if let Some(len) = len
                && buf.len() >= end + 4 + len
            {
                let text = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                let v: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
                if v["value"]["error"].is_string() {
                    return Err(v["value"].to_string());
                }
                return Ok(v["value"].clone());
            }
        }
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("connection closed: {}", String::from_utf8_lossy(&buf)));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Runs `script` in the page; its return value.
async fn eval(port: u16, session: &str, script: &str) -> Value {
    wd(
        port,
        "POST",
        &format!("/session/{session}/execute/sync"),
        Some(json!({"script": script, "args": []})),
    )
    .await
    .unwrap_or(Value::Null)
}

/// Polls `script` until it returns true, for up to `limit`.
async fn wait_until(port: u16, session: &str, script: &str, limit: Duration) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if eval(port, session, script).await == Value::Bool(true) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ops_page_shows_the_districts_and_a_surge_raised_during_the_test() {
    for tool in [CHROMEDRIVER, CHROMIUM] {
        if !std::path::Path::new(tool).exists() {
            println!("SKIPPED: {tool} is not installed (apt-get install chromium chromium-driver)");
            return;
        }
    }
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let cluster = TestCluster::start_configured(3, 2, fast_tuning(), move |cfg| {
        if cfg.node_id == 1 {
            cfg.http = Some(http);
        }
    })
    .await;
    for shard in 0..2 {
        cluster.wait_shard_leader(shard, Duration::from_secs(30)).await;
    }

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    progress("cluster up");
    let mut driver = tokio::process::Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    let mut ready = false;
    for _ in 0..50 {
        if wd(port, "GET", "/status", None)
            .await
            .is_ok_and(|v| v["ready"] == true)
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ready, "chromedriver did not come up on port {port}");
    let caps = json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"]
        }
    }}});
    let session = wd(port, "POST", "/session", Some(caps))
        .await
        .expect("a browser session");
    let session = session["sessionId"].as_str().expect("a session id").to_string();
    wd(
        port,
        "POST",
        &format!("/session/{session}/url"),
        Some(json!({"url": format!("http://{http}/ops")})),
    )
    .await
    .expect("the page loads");

    progress("page requested");
    // The page renders every district of the table from its first poll.
    assert!(
        wait_until(
            port,
            &session,
            "return document.querySelectorAll('#districts .district').length === 16",
            Duration::from_secs(20),
        )
        .await,
        "the 16 districts never showed: {}",
        eval(port, &session, "return document.body.innerText").await
    );
    let title = eval(port, &session, "return document.title").await;
    assert_eq!(title, "Intake ops");
    assert!(
        eval(
            port,
            &session,
            "return document.querySelector('[data-code=\"110109\"]').innerText"
        )
        .await
        .as_str()
        .is_some_and(|t| t.contains("Mentougou"))
    );

    progress("districts shown");
    // A baseline: a trickle over every district for the detector's warm-up.
    let mut client = cluster.client(1).await;
    let districts = [
        "110101", "110102", "110105", "110106", "110108", "110109", "110111", "110112",
    ];
    for round in 0..14 {
        for (i, d) in districts.iter().enumerate() {
            let mut c = complaint(&format!("base-{round}-{i}"), d, "street light out on the corner");
            c.category = "road".into();
            submit(&mut client, c).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    progress("baseline submitted");
    // Then Mentougou floods: 30 reports a second for a few seconds.
    let flood = async {
        for round in 0..8 {
            for i in 0..30 {
                let mut c = complaint(&format!("flood-{round}-{i}"), "110109", "water in the street");
                c.category = "flood".into();
                submit(&mut client, c).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let seen = async {
        wait_until(
            port,
            &session,
            "return document.querySelector('#surges tr[data-district=\"110109\"]') !== null \
             && document.querySelector('[data-code=\"110109\"]').classList.contains('surge')",
            Duration::from_secs(30),
        )
        .await
    };
    let ((), shown) = tokio::join!(flood, seen);
    let text = eval(port, &session, "return document.body.innerText").await;
    assert!(shown, "the surge never showed on the page:\n{text}");
    let _ = wd(port, "DELETE", &format!("/session/{session}"), None).await;
    let _ = driver.kill().await;
    cluster.shutdown().await;
}
