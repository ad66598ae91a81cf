//! Connecting to a node and explaining its errors to a person.

use std::time::Duration;

use anyhow::Context;
use intake_proto::pb::admin_service_client::AdminServiceClient;
use intake_proto::pb::intake_service_client::IntakeServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt;

pub async fn channel(endpoint: &str) -> anyhow::Result<Channel> {
    let url = if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    Endpoint::from_shared(url.clone())
        .with_context(|| format!("bad endpoint {endpoint:?}"))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {endpoint}"))
}

pub async fn intake(endpoint: &str) -> anyhow::Result<IntakeServiceClient<Channel>> {
    Ok(IntakeServiceClient::new(channel(endpoint).await?))
}

pub async fn admin(endpoint: &str) -> anyhow::Result<AdminServiceClient<Channel>> {
    Ok(AdminServiceClient::new(channel(endpoint).await?))
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
    if let Some(delay) = details.retry_info().and_then(|r| r.retry_delay) {
        out.push_str(&format!("\n  retry after {} ms", delay.as_millis()));
    }
    out
}
