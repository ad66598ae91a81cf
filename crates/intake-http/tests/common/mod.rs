//! Real nodes (sled in temp dirs, gRPC and Raft on loopback) with the HTTP
//! door served over each one's own `IntakeService` as `intake start --api`
//! serves it (behind the node's gate, over TLS when the node has it), and a
//! raw HTTP/1.1 client that can send any bytes at all, in plain or in TLS.

#![allow(dead_code)]

pub mod webdriver;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use intake_core::{CategoryTable, DistrictTable};
use intake_server::{Node, NodeConfig, RaftTuning};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio_rustls::TlsConnector;

/// How the tests reach the doors: over TLS or not, with a token or not.
#[derive(Clone, Default)]
pub struct Reach {
    pub tls: Option<TlsConnector>,
    pub token: Option<String>,
}

/// A TLS client that trusts the CA certificate `ca_pem` only.
pub fn tls_connector(ca_pem: &str) -> TlsConnector {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut cfg =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    // What curl offers: the door must pick HTTP/1.1.
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(cfg))
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: BTreeMap<u64, Node>,
    /// Each node's door, http://addr.
    pub doors: BTreeMap<u64, SocketAddr>,
    pub reach: Reach,
    stop: watch::Sender<bool>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

impl Cluster {
    /// `n` nodes, one shard of min(3, n) replicas, a door on each; ready
    /// once an ordinary complaint goes through.
    pub async fn start(n: u64, adjust: impl Fn(&mut NodeConfig)) -> Cluster {
        Self::start_probing(n, "other", adjust).await
    }

    /// As `start`, ready once a complaint of `category` goes through (an
    /// emergency where the test sheds every ordinary one).
    pub async fn start_probing(n: u64, category: &str, adjust: impl Fn(&mut NodeConfig)) -> Cluster {
        Self::start_reaching(n, category, Reach::default(), adjust).await
    }

    /// As `start_probing`, for nodes that `adjust` gives tokens or TLS:
    /// the ready probe goes as `reach` says.
    pub async fn start_reaching(
        n: u64,
        category: &str,
        reach: Reach,
        adjust: impl Fn(&mut NodeConfig),
    ) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let addrs: BTreeMap<u64, SocketAddr> = (1..=n)
            .map(|id| (id, SocketAddr::from(([127, 0, 0, 1], free_port()))))
            .collect();
        let initial: BTreeMap<u64, String> = addrs.iter().map(|(id, a)| (*id, a.to_string())).collect();
        let (stop, stopped) = watch::channel(false);
        let mut nodes = BTreeMap::new();
        let mut doors = BTreeMap::new();
        for (id, addr) in &addrs {
            let mut cfg = NodeConfig::new(*id, *addr, dir.path().join(format!("node-{id}")), initial.clone());
            cfg.raft = RaftTuning {
                heartbeat_ms: 50,
                election_timeout_min_ms: 300,
                election_timeout_max_ms: 600,
                ..RaftTuning::default()
            };
            cfg.shards = 1;
            cfg.cache_capacity_bytes = 16 * 1024 * 1024;
            adjust(&mut cfg);
            let node = Node::start(cfg).await.unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            doors.insert(*id, listener.local_addr().unwrap());
            // As crates/intake/src/cmd/api.rs wires it.
            let door = intake_http::Door::new(
                node.gated_intake_service(),
                DistrictTable::beijing(),
                CategoryTable::default(),
            )
            .with_public_lookups(node.intake_service())
            .with_admission(node.intake_service());
            let router = intake_http::router(door);
            let mut stopping = stopped.clone();
            let shutdown = async move {
                let _ = stopping.wait_for(|s| *s).await;
            };
            match node.tls() {
                Some(tls) => {
                    let https =
                        intake_server::tls::HttpsListener::new(listener, tls.clone(), stopped.clone())
                            .unwrap();
                    tokio::spawn(intake_http::serve(https, router, shutdown));
                }
                None => {
                    tokio::spawn(intake_http::serve(listener, router, shutdown));
                }
            }
            nodes.insert(*id, node);
        }
        let c = Cluster {
            dir,
            nodes,
            doors,
            reach,
            stop,
        };
        c.wait_ready(category).await;
        c
    }

    pub fn door(&self, id: u64) -> SocketAddr {
        self.doors[&id]
    }

    /// Until a complaint goes through node 1's door (a leader is elected).
    async fn wait_ready(&self, category: &str) {
        let probe = format!(r#"{{"district_code":"110105","category":"{category}","text":"probe"}}"#);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let bearer = self.reach.token.as_ref().map(|t| format!("Bearer {t}"));
            let mut headers = vec![("Idempotency-Key", "ready-probe")];
            if let Some(b) = &bearer {
                headers.push(("Authorization", b.as_str()));
            }
            let r = post_json_via(
                self.reach.tls.as_ref(),
                self.door(1),
                "/v1/complaints",
                &headers,
                probe.as_bytes(),
            )
            .await;
            if r.status == 201 {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "no leader in 30 s: {r:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The leader of the (only) data shard, as the running nodes see it.
    pub fn leader(&self) -> Option<u64> {
        use openraft::async_runtime::WatchReceiver;
        self.nodes.values().find_map(|n| {
            n.raft(0)
                .and_then(|r| r.metrics().borrow_watched().current_leader)
        })
    }

    pub async fn stop_node(&mut self, id: u64) {
        if let Some(n) = self.nodes.remove(&id) {
            n.shutdown().await;
        }
    }

    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop_node(id).await;
        }
    }
}

/// A response as read off the wire.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `head` (request line and headers, without the blank line) and
/// `body` as they are, with Content-Length and Connection: close added.
pub async fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> Resp {
    raw_via(None, addr, head, body).await
}

/// As `raw`, over TLS when `tls` is given.
pub async fn raw_via(tls: Option<&TlsConnector>, addr: SocketAddr, head: &str, body: &[u8]) -> Resp {
    let mut req = format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n");
    if !body.is_empty() || head.starts_with("POST") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    match tls {
        None => raw_bytes(addr, &bytes).await,
        Some(tls) => {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls_pki_types::ServerName::from(addr.ip());
            let s = tls.connect(name, tcp).await.unwrap();
            exchange(s, &bytes).await
        }
    }
}

/// Writes `bytes` and reads the response: to its Content-Length, or to
/// the end of the connection (chromedriver keeps it open).
pub async fn raw_bytes(addr: SocketAddr, bytes: &[u8]) -> Resp {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    exchange(s, bytes).await
}

async fn exchange(mut s: impl AsyncRead + AsyncWrite + Unpin, bytes: &[u8]) -> Resp {
    // The server may answer (413) and close before reading everything.
    let _ = s.write_all(bytes).await;
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if complete(&buf) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(60), read).await;
    parse(&buf)
}

/// Whether `buf` holds a whole response with a Content-Length.
fn complete(buf: &[u8]) -> bool {
    let Some(split) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|len| buf.len() >= split + 4 + len)
}

fn parse(buf: &[u8]) -> Resp {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = buf[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&b[start..start + size]);
        b = &b[start + size + 2..];
    }
    out
}

pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    raw(addr, &format!("GET {path} HTTP/1.1"), b"").await
}

pub async fn post_json(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    post_json_via(None, addr, path, headers, body).await
}

/// As `post_json`, over TLS when `tls` is given.
pub async fn post_json_via(
    tls: Option<&TlsConnector>,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut head = format!("POST {path} HTTP/1.1\r\nContent-Type: application/json");
    for (k, v) in headers {
        head.push_str(&format!("\r\n{k}: {v}"));
    }
    raw_via(tls, addr, &head, body).await
}
