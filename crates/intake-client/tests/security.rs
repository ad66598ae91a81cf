//! The client over TLS with a token: it submits through a node that serves
//! TLS and checks tokens, and a missing token is a definite refusal, not
//! something to retry.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

#[path = "../../intake-server/tests/common/mod.rs"]
mod common;
#[path = "../../intake-server/tests/common/pki.rs"]
mod pki;

use std::sync::Arc;
use std::time::Duration;

use common::{TestCluster, complaint, fast_tuning};
use intake_client::{Client, ClientConfig, ClientError, Security};
use intake_server::auth::{AuthTable, hash_token};
use intake_server::tls::TlsFiles;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submits_over_tls_with_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::Ca::new("client test CA");
    let ca_path = ca.write(&dir.path().join("ca.crt"));
    let leaf = ca.leaf(dir.path(), "node");
    let auth = Arc::new(
        AuthTable::parse(&format!(
            "[[token]]\nname = \"phone\"\nsha256 = \"{}\"\nrole = \"adapter\"\nchannels = [\"phone\"]\n",
            hash_token("phone-token")
        ))
        .unwrap(),
    );
    let c = TestCluster::start_configured(1, 1, fast_tuning(), |cfg| {
        cfg.tls = TlsFiles {
            server: Some((leaf.cert.clone(), leaf.key.clone())),
            peer: None,
        };
        cfg.auth = Some(auth.clone());
    })
    .await;
    c.wait_leader(Duration::from_secs(30)).await;

    let config = |token: Option<&str>| {
        let mut cfg = ClientConfig::new([c.addr(1)]);
        cfg.security = Security::from_files(Some(&ca_path), None, None, token).unwrap();
        cfg
    };
    let client = Client::connect(config(Some("phone-token"))).await.unwrap();
    let t = client
        .submit(complaint("client-tls-1", "110105", "over TLS"))
        .await
        .expect("a ticket over TLS with the token");
    assert!(!t.ticket_id.is_empty());

    let anonymous = Client::connect(config(None)).await.unwrap();
    match anonymous
        .submit(complaint("client-tls-2", "110105", "no token"))
        .await
    {
        Err(ClientError::Rejected { code, .. }) => assert_eq!(code, Code::Unauthenticated),
        other => panic!("expected a definite refusal, got {other:?}"),
    }
    c.shutdown().await;
}
