//! The HTTP door on a node with `--auth` and TLS: tokens, roles, channels
//! and rate limits decided by the gRPC port's gate, answered as problem
//! documents (401, 403, 429), the public pages open, and TLS with the
//! node's certificate (plain HTTP refused). Real nodes, real HTTPS over
//! loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../intake-server/tests/common/pki.rs"]
mod pki;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{Cluster, Reach, Resp, raw, raw_via, tls_connector};
use intake_server::auth::{AuthTable, hash_token};
use intake_server::tls::{PeerFiles, TlsFiles};
use tokio_rustls::TlsConnector;

const TOKENS: &str = r#"
[[token]]
name = "web-form"
sha256 = "HASH_WEB"
role = "adapter"
channels = ["web", "open311"]

[[token]]
name = "dispatch"
sha256 = "HASH_DOWNSTREAM"
role = "downstream"

[[token]]
name = "slow-form"
sha256 = "HASH_SLOW"
role = "adapter"
channels = ["web"]
rate_per_second = 0.5
"#;

fn table() -> Arc<AuthTable> {
    let text = TOKENS
        .replace("HASH_WEB", &hash_token("web-token"))
        .replace("HASH_DOWNSTREAM", &hash_token("downstream-token"))
        .replace("HASH_SLOW", &hash_token("slow-token"));
    Arc::new(AuthTable::parse(&text).unwrap())
}

/// A complaint's JSON; `channel` as given.
fn complaint(channel: &str, text: &str) -> String {
    format!(r#"{{"district_code":"110105","category":"noise","channel":"{channel}","text":"{text}"}}"#)
}

struct Door<'a> {
    tls: &'a TlsConnector,
    addr: std::net::SocketAddr,
}

impl Door<'_> {
    async fn post(&self, path: &str, token: Option<&str>, key: &str, body: &str) -> Resp {
        let mut head = format!("POST {path} HTTP/1.1\r\nContent-Type: application/json");
        if !key.is_empty() {
            head.push_str(&format!("\r\nIdempotency-Key: {key}"));
        }
        if let Some(t) = token {
            head.push_str(&format!("\r\nAuthorization: Bearer {t}"));
        }
        raw_via(Some(self.tls), self.addr, &head, body.as_bytes()).await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        let mut head = format!("GET {path} HTTP/1.1");
        if let Some(t) = token {
            head.push_str(&format!("\r\nAuthorization: Bearer {t}"));
        }
        raw_via(Some(self.tls), self.addr, &head, b"").await
    }
}

fn assert_problem(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{r:?}"
    );
    let p = r.json();
    assert_eq!(p["status"], status, "{p}");
    assert_eq!(p["code"], code, "{p}");
}

/// Three nodes with mutual TLS between them and tokens; the door of a
/// node that is not the leader, so accepted complaints are forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_and_tls_guard_the_http_door() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::Ca::new("intake cluster CA");
    let ca_path = ca.write(&dir.path().join("ca.crt"));
    let leaves: BTreeMap<u64, pki::Leaf> = (1..=3)
        .map(|id| (id, ca.leaf(dir.path(), &format!("node{id}"))))
        .collect();
    let auth = table();
    let tls = tls_connector(&ca.pem);
    let reach = Reach {
        tls: Some(tls.clone()),
        token: Some("web-token".into()),
    };
    let c = Cluster::start_reaching(3, "other", reach, |cfg| {
        let leaf = &leaves[&cfg.node_id];
        cfg.tls = TlsFiles {
            server: None,
            peer: Some(PeerFiles {
                ca: ca_path.clone(),
                cert: leaf.cert.clone(),
                key: leaf.key.clone(),
            }),
        };
        cfg.auth = Some(auth.clone());
    })
    .await;
    let follower = (1..=3).find(|id| Some(*id) != c.leader()).unwrap();
    let door = Door {
        tls: &tls,
        addr: c.door(follower),
    };
    let body = complaint("web", "Loud music at 2am");

    // No token, a token we do not know, a malformed header: 401.
    let r = door.post("/v1/complaints", None, "k1", &body).await;
    assert_problem(&r, 401, "UNAUTHENTICATED");
    assert!(
        r.header("www-authenticate").unwrap().starts_with("Bearer"),
        "{r:?}"
    );
    let r = door
        .post("/v1/complaints", Some("not-a-token"), "k1", &body)
        .await;
    assert_problem(&r, 401, "UNAUTHENTICATED");
    assert_eq!(r.json()["detail"], "unknown token");

    // A role that may not submit, a channel not the token's: 403.
    let r = door
        .post("/v1/complaints", Some("downstream-token"), "k1", &body)
        .await;
    assert_problem(&r, 403, "PERMISSION_DENIED");
    let phone = complaint("phone", "Loud music at 2am");
    let r = door.post("/v1/complaints", Some("web-token"), "k1", &phone).await;
    assert_problem(&r, 403, "PERMISSION_DENIED");
    let batch = format!(r#"{{"complaints":[{body},{phone}]}}"#);
    let r = door
        .post("/v1/complaints:batch", Some("web-token"), "", &batch)
        .await;
    assert_problem(&r, 403, "PERMISSION_DENIED");
    assert!(
        r.json()["detail"].as_str().unwrap().contains("complaints[1]"),
        "{r:?}"
    );

    // The right token: 201, forwarded to the leader with its token.
    let r = door.post("/v1/complaints", Some("web-token"), "k1", &body).await;
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.json()["ticket_id"].as_str().unwrap().to_string();
    let keyed = body.replacen('{', r#"{"idempotency_key":"b1","#, 1);
    let batch = format!(r#"{{"complaints":[{keyed}]}}"#);
    let r = door
        .post("/v1/complaints:batch", Some("web-token"), "", &batch)
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.json()["results"][0]["accepted"]["ticket_id"].is_string(),
        "{r:?}"
    );

    // Reading a ticket through the API needs a token too.
    let path = format!("/v1/tickets/{id}");
    assert_problem(&door.get(&path, None).await, 401, "UNAUTHENTICATED");
    let r = door.get(&path, Some("downstream-token")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["complaint"]["text"], "Loud music at 2am");

    // The citizen pages and the API's description stay public.
    let r = door.get("/", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = door.get(&format!("/t/{id}"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.text().contains(&id), "{}", r.text());
    let r = door.get("/v1/openapi.json", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = door.get("/open311/v2/services.json", None).await;
    assert_eq!(r.status, 200, "{r:?}");

    // Open311: the token is the form's api_key.
    let form = "service_code=noise&attribute%5Bdistrict%5D=110105&description=Drilling";
    let post311 = |extra: &str| {
        format!(
            "POST /open311/v2/requests.json HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded{extra}"
        )
    };
    let r = raw_via(Some(&tls), door.addr, &post311(""), form.as_bytes()).await;
    assert_eq!(r.status, 401, "{r:?}");
    let keyed = format!("{form}&api_key=web-token");
    let r = raw_via(Some(&tls), door.addr, &post311(""), keyed.as_bytes()).await;
    assert_eq!(r.status, 201, "{r:?}");

    // A token over its rate: 429 with Retry-After, the gate's own delay.
    let r = door.post("/v1/complaints", Some("slow-token"), "s1", &body).await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = door.post("/v1/complaints", Some("slow-token"), "s2", &body).await;
    assert_problem(&r, 429, "RESOURCE_EXHAUSTED");
    assert!(r.header("retry-after").is_some(), "{r:?}");
    assert!(r.json()["retry_after_ms"].as_u64().unwrap() > 0, "{r:?}");

    // Plain HTTP at the TLS door: told so, never served.
    let r = raw(door.addr, "GET / HTTP/1.1", b"").await;
    assert_problem(&r, 400, "FAILED_PRECONDITION");
    assert!(
        r.json()["detail"].as_str().unwrap().contains("HTTPS only"),
        "{r:?}"
    );
    let head =
        "POST /v1/complaints HTTP/1.1\r\nContent-Type: application/json\r\nAuthorization: Bearer web-token";
    let r = raw(door.addr, head, body.as_bytes()).await;
    assert_eq!(r.status, 400, "{r:?}");

    // A client that does not trust the node's CA fails the handshake.
    let stranger = tls_connector(&pki::Ca::new("another CA").pem);
    let tcp = tokio::net::TcpStream::connect(door.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::from(door.addr.ip());
    assert!(stranger.connect(name, tcp).await.is_err());

    c.shutdown().await;
}

/// A city's public form on a node with tokens: the `[public]` entry lets
/// callers without a token submit for its channels at its rate (plain
/// HTTP here: tokens do not need TLS to be checked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_channel_takes_complaints_without_a_token_at_its_rate() {
    let text = format!(
        "{}\n[public]\nchannels = [\"web\"]\nrate_per_second = 2\n",
        TOKENS
            .replace("HASH_WEB", &hash_token("web-token"))
            .replace("HASH_DOWNSTREAM", &hash_token("downstream-token"))
            .replace("HASH_SLOW", &hash_token("slow-token"))
    );
    let auth = Arc::new(AuthTable::parse(&text).unwrap());
    let reach = Reach {
        tls: None,
        token: Some("web-token".into()),
    };
    let c = Cluster::start_reaching(1, "other", reach, |cfg| cfg.auth = Some(auth.clone())).await;
    let post = |key: &str, token: Option<&str>, body: String| {
        let addr = c.door(1);
        let key = key.to_string();
        let token = token
            .map(|t| format!("\r\nAuthorization: Bearer {t}"))
            .unwrap_or_default();
        async move {
            let head = format!(
                "POST /v1/complaints HTTP/1.1\r\nContent-Type: application/json\r\nIdempotency-Key: {key}{token}"
            );
            raw(addr, &head, body.as_bytes()).await
        }
    };
    // Another channel than the public one: 403.
    let r = post("p0", None, complaint("phone", "Drilling")).await;
    assert_problem(&r, 403, "PERMISSION_DENIED");
    let r = post("p1", None, complaint("web", "Drilling")).await;
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.json()["ticket_id"].as_str().unwrap().to_string();
    // The rate (a burst of 2) is spent by any call, refused or not, as on
    // the gRPC port: the gate counts before the channel check.
    let r = post("p2", None, complaint("web", "Drilling again")).await;
    assert_problem(&r, 429, "RESOURCE_EXHAUSTED");
    // A token that is sent is still checked, whatever [public] allows.
    let r = post("p3", Some("not-a-token"), complaint("web", "Drilling")).await;
    assert_problem(&r, 401, "UNAUTHENTICATED");
    // Reading tickets through the API still needs a token.
    let r = raw(c.door(1), &format!("GET /v1/tickets/{id} HTTP/1.1"), b"").await;
    assert_problem(&r, 401, "UNAUTHENTICATED");
    c.shutdown().await;
}
