//! Connecting to a node and explaining its errors to a person.

use std::time::Duration;

use std::path::PathBuf;

use clap::Args;
use intake_client::{Authorize, Security};
use intake_proto::pb::admin_service_client::AdminServiceClient;
use intake_proto::pb::intake_service_client::IntakeServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_types::StatusExt;

/// How the CLI reaches a node: TLS and a token, on every client subcommand.
#[derive(Args, Clone, Default)]
pub struct Conn {
    /// CA certificate (PEM) that signed the nodes' certificates: speak TLS.
    #[arg(long, env = "INTAKE_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM), with --key, for nodes that ask for one.
    #[arg(long, env = "INTAKE_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, env = "INTAKE_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Bearer token for nodes started with --auth.
    #[arg(long, env = "INTAKE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Never prints the token.
impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl Conn {
    pub fn security(&self) -> anyhow::Result<Security> {
        Ok(Security::from_files(
            self.ca.as_deref(),
            self.cert.as_deref(),
            self.key.as_deref(),
            self.token.as_deref(),
        )?)
    }
}

pub type Intake = IntakeServiceClient<InterceptedService<Channel, Authorize>>;
pub type Admin = AdminServiceClient<InterceptedService<Channel, Authorize>>;

pub async fn channel(endpoint: &str, security: &Security) -> anyhow::Result<Channel> {
    security
        .endpoint(endpoint)?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {endpoint}: {}", transport_cause(&e, security)))
}

/// The innermost cause, which says what went wrong (refused, certificate,
/// TLS against a plaintext node...), with a hint when TLS is the likely fault.
fn transport_cause(e: &tonic::transport::Error, security: &Security) -> String {
    let mut cause: &dyn std::error::Error = e;
    let mut text = e.to_string();
    while let Some(next) = cause.source() {
        text = format!("{text}: {next}");
        cause = next;
    }
    let tls_fault = [
        "certificate",
        "tls",
        "handshake",
        "InvalidContentType",
        "CorruptMessage",
    ]
    .iter()
    .any(|w| text.to_lowercase().contains(&w.to_lowercase()));
    if tls_fault && !security.tls() {
        text.push_str(" (is the node serving TLS? give --ca)");
    } else if security.tls() && !tls_fault && text.contains("connection") {
        text.push_str(" (if the node does not serve TLS, leave out --ca)");
    }
    text
}

pub async fn intake(endpoint: &str, conn: &Security) -> anyhow::Result<Intake> {
    Ok(IntakeServiceClient::with_interceptor(
        channel(endpoint, conn).await?,
        conn.interceptor(),
    ))
}

pub async fn admin(endpoint: &str, conn: &Security) -> anyhow::Result<Admin> {
    Ok(AdminServiceClient::with_interceptor(
        channel(endpoint, conn).await?,
        conn.interceptor(),
    ))
}

/// A status as a person reads it: the message, each field violation on its
/// own line, and when to retry.
pub fn explain(status: &tonic::Status) -> String {
    let details = status.get_error_details();
    let mut out = match details.bad_request() {
        Some(_) => "invalid argument:".to_string(),
        None => format!("{:?}: {}", status.code(), status.message()),
    };
    if let Some(bad) = details.bad_request() {
        for v in &bad.field_violations {
            out.push_str(&format!("\n  {}: {}", v.field, v.description));
        }
    }
    if let Some(delay) = intake_proto::wire::retry_delay(status) {
        out.push_str(&format!("\n  retry after {} ms", delay.as_millis()));
    }
    out
}
