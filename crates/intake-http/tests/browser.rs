//! The citizen web page in a real headless Chromium: fill the form, submit,
//! read the ticket id, open the look-up page and see the ticket. Skips, with
//! the reason printed, where chromium or chromedriver is absent (.ci/run
//! installs both).
//!
//! `INTAKE_WRITE_SCREENSHOTS=1` writes the pages' screenshots to docs/.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

mod common;

use common::Cluster;
use common::webdriver::{Browser, find_browser};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_citizen_reports_a_problem_and_looks_the_ticket_up_in_a_real_browser() {
    let (driver, chromium) = match find_browser() {
        Ok(found) => found,
        Err(why) => {
            println!("SKIPPED: {why}");
            return;
        }
    };
    let c = Cluster::start(1, |_| {}).await;
    let base = format!("http://{}", c.door(1));
    let b = Browser::start(&driver, &chromium).await;

    b.goto(&format!("{base}/")).await;
    assert!(b.text("h1").await.contains("Report a problem"));
    b.click("#district option[value='110105']").await;
    b.click("#category option[value='noise']").await;
    b.type_into("#text", "楼上装修噪音到深夜 Drilling upstairs until midnight")
        .await;
    b.type_into("#contact", "13800000000").await;
    let form_png = b.screenshot().await;

    // Count what the page sends and gets back, then double-click submit.
    b.run(
        "window.__answers = []; const f = window.fetch;
         window.fetch = async (...a) => { const r = await f(...a);
           r.clone().json().then(j => window.__answers.push(j)); return r; };",
    )
    .await;
    b.run("const s = document.getElementById('submit'); s.click(); s.click();")
        .await;
    let ticket = b.text("#ticket-id").await;
    assert!(!ticket.is_empty(), "no ticket id shown");
    let done_png = b.screenshot().await;

    // Every answer the page got names that one ticket, and a retry with the
    // page's key (as after a lost answer) finds it too: no second ticket.
    let answers = b.run("return window.__answers;").await;
    let answers = answers.as_array().unwrap();
    assert!(!answers.is_empty());
    assert!(
        answers.iter().all(|a| a["ticket_id"] == ticket.as_str()),
        "{answers:?}"
    );
    let retry = b
        .run(
            "return fetch('/v1/complaints', {method: 'POST',
               headers: {'Content-Type': 'application/json', 'Idempotency-Key': key},
               body: JSON.stringify({district_code: '110105', category: 'noise', channel: 'web',
                 text: document.getElementById('text').value, contact: '13800000000'})})
             .then(r => r.json());",
        )
        .await;
    assert_eq!(retry["ticket_id"], ticket.as_str(), "{retry}");
    assert_eq!(retry["duplicate"], true);

    // The link to the look-up page, and the look-up form.
    b.click("#ticket-link").await;
    assert_eq!(b.text("#ticket-id").await, ticket);
    assert!(b.text("#status").await.contains("received"));
    assert!(b.text("#text").await.contains("Drilling upstairs"));
    assert!(b.text("#history").await.contains("已受理"));
    let ticket_png = b.screenshot().await;

    b.goto(&format!("{base}/")).await;
    b.type_into("#lookup-id", &ticket).await;
    b.click("#lookup button").await;
    assert_eq!(b.text("#ticket-id").await, ticket);
    assert!(b.url().await.ends_with(&format!("/t/{ticket}")));

    b.goto(&format!("{base}/t/0-00000-0")).await;
    assert!(b.text(".error").await.contains("No such ticket"));

    if std::env::var_os("INTAKE_WRITE_SCREENSHOTS").is_some() {
        let docs = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/screenshots");
        std::fs::create_dir_all(docs).unwrap();
        std::fs::write(format!("{docs}/web-form.png"), &form_png).unwrap();
        std::fs::write(format!("{docs}/web-ticket-received.png"), &done_png).unwrap();
        std::fs::write(format!("{docs}/web-ticket-lookup.png"), &ticket_png).unwrap();
    }
    for png in [&form_png, &done_png, &ticket_png] {
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    }
    b.quit().await;
    c.shutdown().await;
}
