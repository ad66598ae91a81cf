//! TLS, mutual TLS between nodes, tokens and roles, over real gRPC on
//! loopback with certificates made at run time.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

mod common;
#[path = "common/pki.rs"]
mod pki;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use intake_proto::pb;
use intake_proto::pb::admin_service_client::AdminServiceClient;
use intake_proto::pb::intake_service_client::IntakeServiceClient;
use intake_proto::raft::v1::RaftMessage;
use intake_proto::raft::v1::raft_transport_client::RaftTransportClient;
use intake_server::auth::{AuthTable, hash_token};
use intake_server::tls::{PeerFiles, TlsFiles};
use pki::{Ca, Leaf};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_types::StatusExt;

/// A channel that trusts `ca_pem`, presenting `identity` if given.
fn tls_channel(addr: &str, ca_pem: &str, identity: Option<&Leaf>) -> Channel {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some(l) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(&l.cert).unwrap(),
            std::fs::read(&l.key).unwrap(),
        ));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(3))
        .connect_lazy()
}

fn plain_channel(addr: &str) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(3))
        .connect_lazy()
}

const TOKENS: &str = r#"
[[token]]
name = "phone-adapter"
sha256 = "HASH_ADAPTER"
role = "adapter"
channels = ["phone"]

[[token]]
name = "dispatch"
sha256 = "HASH_DOWNSTREAM"
role = "downstream"

[[token]]
name = "slow-adapter"
sha256 = "HASH_SLOW"
role = "adapter"
channels = ["phone"]
rate_per_second = 0.5
"#;

fn table() -> Arc<AuthTable> {
    let text = TOKENS
        .replace("HASH_ADAPTER", &hash_token("adapter-token"))
        .replace("HASH_DOWNSTREAM", &hash_token("downstream-token"))
        .replace("HASH_SLOW", &hash_token("slow-token"));
    Arc::new(AuthTable::parse(&text).unwrap())
}

fn with_token<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(Duration::from_secs(5));
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    req
}

fn submit_req(c: pb::Complaint, token: Option<&str>) -> tonic::Request<pb::SubmitRequest> {
    with_token(pb::SubmitRequest { complaint: Some(c) }, token)
}

/// Submits with retries while the cluster elects, as an adapter would.
async fn submit_with(
    client: &mut IntakeServiceClient<Channel>,
    c: pb::Complaint,
    token: Option<&str>,
) -> Result<pb::SubmitResponse, tonic::Status> {
    let mut last = None;
    for _ in 0..40 {
        match client.submit(submit_req(c.clone(), token)).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s)
                if matches!(
                    s.code(),
                    Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted
                ) =>
            {
                last = Some(s);
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            Err(s) => return Err(s),
        }
    }
    Err(last.unwrap())
}

/// Three nodes with mutual TLS and tokens: complaints go in through every
/// node (forwards between nodes need no token); a client cannot reach the
/// Raft transport, a certificate from another CA is refused at the
/// handshake, a plaintext client fails, and a client's hop header opens
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutual_tls_cluster_takes_complaints_and_refuses_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("intake cluster CA");
    let ca_path = ca.write(&dir.path().join("ca.crt"));
    let leaves: BTreeMap<u64, Leaf> = (1..=3)
        .map(|id| (id, ca.leaf(dir.path(), &format!("node{id}"))))
        .collect();
    let auth = table();
    let c = TestCluster::start_configured(3, 1, fast_tuning(), |cfg| {
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
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();

    // Through a follower: it forwards to the leader over mutual TLS.
    let mut client = IntakeServiceClient::new(tls_channel(&c.addr(follower), &ca.pem, None));
    let r = submit_with(
        &mut client,
        complaint("tls-1", "110105", "over TLS"),
        Some("adapter-token"),
    )
    .await
    .expect("an adapter token over TLS submits through a follower");
    assert!(!r.ticket_id.is_empty());

    // No token, even with a forged hop header: refused.
    let mut req = submit_req(complaint("tls-2", "110105", "forged"), None);
    req.metadata_mut().insert("x-intake-hops", "1".parse().unwrap());
    let err = client.submit(req).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // A client (no cluster certificate) cannot speak Raft.
    let mut raft = RaftTransportClient::new(tls_channel(&c.addr(leader), &ca.pem, None));
    let err = raft
        .vote(RaftMessage {
            group: 0,
            payload: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // A node's certificate is a peer's: it reaches the transport (the
    // empty payload is then a decoding error, not a refusal) and needs no
    // token for forwarded calls.
    let mut raft = RaftTransportClient::new(tls_channel(&c.addr(leader), &ca.pem, Some(&leaves[&follower])));
    let err = raft
        .vote(RaftMessage {
            group: 0,
            payload: vec![],
        })
        .await
        .unwrap_err();
    assert_ne!(err.code(), Code::Unauthenticated, "{err:?}");
    let mut as_peer =
        IntakeServiceClient::new(tls_channel(&c.addr(leader), &ca.pem, Some(&leaves[&follower])));
    let mut req = submit_req(complaint("tls-3", "110105", "from a peer"), None);
    req.metadata_mut().insert("x-intake-hops", "1".parse().unwrap());
    as_peer
        .submit(req)
        .await
        .expect("a peer forwards without a token");

    // A certificate another CA signed: refused at the handshake.
    let other = Ca::new("someone else's CA");
    let intruder = other.leaf(dir.path(), "intruder");
    let mut raft = RaftTransportClient::new(tls_channel(&c.addr(leader), &ca.pem, Some(&intruder)));
    let err = raft
        .vote(RaftMessage {
            group: 0,
            payload: vec![],
        })
        .await
        .unwrap_err();
    // (Under TLS 1.3 the client finishes its side of the handshake first
    // and sees the server's refusal as the connection closing.)
    assert!(
        matches!(err.code(), Code::Unavailable | Code::Unknown | Code::Cancelled),
        "a foreign certificate must not get an answer from the service: {err:?}"
    );

    // A plaintext client against the TLS port is told to use TLS.
    let mut plain = IntakeServiceClient::new(plain_channel(&c.addr(leader)));
    let answer = tokio::time::timeout(
        Duration::from_secs(15),
        plain.submit(submit_req(
            complaint("tls-4", "110105", "plaintext"),
            Some("adapter-token"),
        )),
    )
    .await
    .expect("a plaintext client gets an answer, not a hang");
    let err = answer.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("TLS"), "{err:?}");

    // Every acknowledged complaint is there.
    let mut admin = AdminServiceClient::new(tls_channel(&c.addr(leader), &ca.pem, None));
    let err = admin
        .cluster_status(with_token(pb::ClusterStatusRequest { local: false }, None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let status = admin
        .cluster_status(with_token(
            pb::ClusterStatusRequest { local: false },
            Some("downstream-token"),
        ))
        .await
        .expect("any token reads the cluster map")
        .into_inner();
    assert_eq!(
        status.nodes.len(),
        3,
        "every node answered its peers over mutual TLS"
    );
    let got = client
        .get_ticket(with_token(
            pb::GetTicketRequest {
                ticket_id: r.ticket_id.clone(),
                local: false,
            },
            Some("downstream-token"),
        ))
        .await
        .expect("the acknowledged ticket");
    assert_eq!(got.into_inner().ticket.unwrap().ticket_id, r.ticket_id);
    c.shutdown().await;
}

/// Roles and channels without TLS: a follower forwards with the caller's
/// token and the leader checks it again, so the hop header opens nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_roles_channels_and_rate_limits() {
    let auth = table();
    let c = TestCluster::start_configured(3, 1, fast_tuning(), |cfg| cfg.auth = Some(auth.clone())).await;
    let leader = c.wait_leader(Duration::from_secs(30)).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let mut client = c.client(follower).await;

    let ok = submit_with(
        &mut client,
        complaint("auth-1", "110105", "fine"),
        Some("adapter-token"),
    )
    .await
    .expect("adapter token, its channel, through a follower");

    let code = |r: Result<tonic::Response<pb::SubmitResponse>, tonic::Status>| r.unwrap_err().code();
    let c1 = complaint("auth-2", "110105", "x");
    assert_eq!(
        code(client.submit(submit_req(c1.clone(), None)).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(client.submit(submit_req(c1.clone(), Some("nobody"))).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(
            client
                .submit(submit_req(c1.clone(), Some("downstream-token")))
                .await
        ),
        Code::PermissionDenied
    );
    let mut forged = submit_req(c1.clone(), None);
    forged
        .metadata_mut()
        .insert("x-intake-hops", "1".parse().unwrap());
    assert_eq!(code(client.submit(forged).await), Code::Unauthenticated);
    let mut app = c1.clone();
    app.channel = "app".into();
    let err = client
        .submit(submit_req(app.clone(), Some("adapter-token")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("\"app\""), "{}", err.message());

    // A batch with one item of another channel is refused whole.
    let batch = pb::SubmitBatchRequest {
        complaints: vec![complaint("auth-3", "110105", "a"), app],
    };
    let err = client
        .submit_batch(with_token(batch, Some("adapter-token")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("complaints[1]"), "{}", err.message());

    // Status updates are the downstream's.
    let update = || pb::UpdateStatusRequest {
        ticket_id: ok.ticket_id.clone(),
        status: pb::TicketStatus::Dispatched as i32,
        department: "noise-control".into(),
        ..Default::default()
    };
    let err = client
        .update_status(with_token(update(), Some("adapter-token")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let answer = client
        .update_status(with_token(update(), Some("downstream-token")))
        .await;
    assert!(
        !matches!(
            answer.as_ref().map_err(tonic::Status::code),
            Err(Code::Unauthenticated | Code::PermissionDenied)
        ),
        "{answer:?}"
    );

    // Tickets: adapters read their channels' tickets.
    let get = |token| {
        with_token(
            pb::GetTicketRequest {
                ticket_id: ok.ticket_id.clone(),
                local: false,
            },
            Some(token),
        )
    };
    client
        .get_ticket(get("adapter-token"))
        .await
        .expect("own channel");
    client
        .get_ticket(get("downstream-token"))
        .await
        .expect("downstream reads");

    // Rate limit: half a call a second, a burst of one.
    let mut leader_client = c.client(leader).await;
    submit_with(
        &mut leader_client,
        complaint("auth-4", "110105", "a"),
        Some("slow-token"),
    )
    .await
    .expect("first call within the limit");
    let err = leader_client
        .submit(submit_req(complaint("auth-5", "110105", "b"), Some("slow-token")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let retry = err.get_error_details().retry_info().and_then(|r| r.retry_delay);
    assert!(retry.is_some_and(|d| d > Duration::ZERO), "{err:?}");

    // Health stays open.
    let mut health = tonic_health::pb::health_client::HealthClient::new(plain_channel(&c.addr(leader)));
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health needs no token");
    c.shutdown().await;
}

/// Replaced certificate files take effect for new connections without a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_certificates_serve_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (Ca::new("old CA"), Ca::new("new CA"));
    let served = old_ca.leaf(dir.path(), "server");
    let files = served.clone();
    let c = TestCluster::start_configured(1, 1, fast_tuning(), |cfg| {
        cfg.tls = TlsFiles {
            server: Some((files.cert.clone(), files.key.clone())),
            peer: None,
        };
    })
    .await;
    c.wait_leader(Duration::from_secs(30)).await;
    let addr = c.addr(1);
    let status = |channel: Channel| async move {
        AdminServiceClient::new(channel)
            .cluster_status(with_token(pb::ClusterStatusRequest { local: true }, None))
            .await
    };
    status(tls_channel(&addr, &old_ca.pem, None))
        .await
        .expect("the old certificate serves");

    let (cert, key) = new_ca.leaf_pem("server");
    pki::write_padded(&served.key, &key);
    pki::write_padded(&served.cert, &cert);
    let mut reloaded = false;
    for _ in 0..100 {
        if status(tls_channel(&addr, &new_ca.pem, None)).await.is_ok() {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reloaded, "new connections never saw the new certificate");
    assert!(
        status(tls_channel(&addr, &old_ca.pem, None)).await.is_err(),
        "a new connection still got the old certificate"
    );
    c.shutdown().await;
}
