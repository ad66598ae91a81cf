//! Open311 GeoReport v2 against real nodes, driven by a client that is not
//! ours (tests/open311/client.py: PyPI `georeport` for look-ups, FixMyStreet's
//! request shape for POSTs), in JSON and XML; and its error forms.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

mod common;

use common::{Cluster, get, raw};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_party_open311_client_files_and_reads_requests_in_json_and_xml() {
    let c = Cluster::start(1, |_| {}).await;
    let root = format!("http://{}/open311/v2", c.door(1));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/open311/client.py");
    let out = tokio::process::Command::new("python3")
        .args([script, root.as_str()])
        .output()
        .await;
    c.shutdown().await;
    match out {
        Err(e) => println!("SKIPPED: python3 not runnable ({e}); .ci/run installs it"),
        Ok(out) if out.status.code() == Some(77) => println!(
            "SKIPPED: {} (.ci/run installs georeport and requests)",
            String::from_utf8_lossy(&out.stdout).trim()
        ),
        Ok(out) => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "client failed:\n{stdout}\n{stderr}");
            assert!(stdout.contains("open311 client checks passed"), "{stdout}");
            print!("{stdout}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open311_defaults_to_xml_and_answers_errors_in_its_own_form() {
    let c = Cluster::start(1, |_| {}).await;
    let door = c.door(1);

    let r = get(door, "/open311/v2/services").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/xml"));
    assert!(r.text().starts_with("<?xml") && r.text().contains("<services><service>"));

    let r = get(door, "/open311/v2/services.yaml").await;
    assert_eq!(r.status, 404);
    assert!(
        r.text().contains("<errors><error><code>404</code>"),
        "{}",
        r.text()
    );

    let r = get(door, "/open311/v2/services/nosuch.json").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()[0]["code"], 404);

    let r = get(door, "/open311/v2/requests.json").await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()[0]["description"]
            .as_str()
            .unwrap()
            .contains("service_request_id")
    );

    let form = |body: &'static str| {
        raw(
            door,
            "POST /open311/v2/requests.json HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded",
            body.as_bytes(),
        )
    };
    for (body, needle) in [
        ("description=x", "service_code"),
        ("service_code=noise&lat=north&long=1&description=x", "lat"),
        (
            "service_code=noise&lat=31.23&long=121.47&description=x",
            "district",
        ),
        (
            "service_code=noise&attribute%5Bdistrict%5D=999999&description=x",
            "district_code",
        ),
        ("service_code=noise&attribute%5Bdistrict%5D=110101", "text"),
    ] {
        let r = form(body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        let e = r.json();
        assert_eq!(e[0]["code"], 400, "{e}");
        assert!(
            e[0]["description"].as_str().unwrap().contains(needle),
            "{body}: {e}"
        );
    }

    // Bytes that are no form at all, and too many of them.
    let r = raw(
        door,
        "POST /open311/v2/requests.xml HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded",
        b"\xff\xfe%%%&&==\x00",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("<errors>"));
    let r = raw(
        door,
        "POST /open311/v2/requests.json HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded",
        &vec![b'a'; 300 * 1024],
    )
    .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()[0]["code"], 413);

    // A point alone places the report; the look-up shows where.
    let r = form("service_code=road&lat=39.992&long=116.306&description=Pothole").await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()[0]["service_request_id"].as_str().unwrap().to_string();
    let t = get(door, &format!("/v1/tickets/{id}")).await.json();
    assert_eq!(
        t["complaint"]["district_code"], "110108",
        "Peking University is in Haidian"
    );
    assert_eq!(t["complaint"]["channel"], "open311");
    c.shutdown().await;
}
