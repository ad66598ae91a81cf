//! `intake health`: the container healthcheck, since the image has no shell
//! (Docker's HEALTHCHECK and Kubernetes' exec probes run it).
//!
//! Ready (the default) means the node serves: its gRPC health service says
//! `intake.v1.IntakeService` is SERVING and it knows a leader for every
//! shard it holds, so a complaint sent to it can be committed now. `--live`
//! asks only whether the process answers at all: a node cut off from its
//! peers is not ready but must not be restarted for that (it would lose
//! nothing, but gain nothing either), as etcd's and CockroachDB's liveness
//! probes also ask only the process.
//!
//! Prints one line (`healthy: ...` or `unhealthy: ...`); exits 0 only when
//! healthy.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use intake_proto::pb;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::client;

#[derive(Args, Debug)]
pub struct HealthArgs {
    /// The node to check, HOST:PORT. Default: this node's `INTAKE_LISTEN`
    /// port on 127.0.0.1 (so inside a container the bare command works),
    /// else 127.0.0.1:7001.
    #[arg(long, env = "INTAKE_HEALTH_ENDPOINT")]
    endpoint: Option<String>,
    #[command(flatten)]
    conn: client::Conn,
    /// Only check that the node's gRPC server answers (a liveness probe).
    #[arg(long)]
    live: bool,
    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
}

/// Where `intake start` in the same container listens, as a local address.
fn default_endpoint(listen: Option<&str>) -> String {
    match listen.and_then(|l| l.parse::<SocketAddr>().ok()) {
        Some(a) if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
        Some(a) => a.to_string(),
        None => "127.0.0.1:7001".to_string(),
    }
}

/// `Ok(what)` when healthy, `Err(why)` when not; the outer error when the
/// node could not be reached at all.
async fn check(
    endpoint: &str,
    live: bool,
    security: &intake_client::Security,
) -> anyhow::Result<Result<String, String>> {
    let channel = client::channel(endpoint, security).await?;
    let health = HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "intake.v1.IntakeService".to_string(),
        })
        .await;
    let serving = match health {
        Ok(r) => r.into_inner().status == ServingStatus::Serving as i32,
        Err(e) => return Ok(Err(format!("health check failed: {}", e.message()))),
    };
    if !serving {
        return Ok(Err("the intake service is not serving".to_string()));
    }
    if live {
        return Ok(Ok("serving".to_string()));
    }
    let status = pb::admin_service_client::AdminServiceClient::new(channel)
        .cluster_status(pb::ClusterStatusRequest { local: true })
        .await;
    let shards = match status {
        Ok(r) => r.into_inner().shards,
        Err(e) => return Ok(Err(format!("cluster status failed: {}", e.message()))),
    };
    Ok(verdict(&shards))
}

/// Ready when the node holds shards and knows a leader for each.
fn verdict(shards: &[pb::ShardStatus]) -> Result<String, String> {
    if shards.is_empty() {
        return Err("no shards yet (the cluster map is not known)".to_string());
    }
    let leaderless: Vec<String> = shards
        .iter()
        .filter(|s| s.leader.is_none())
        .map(|s| s.id.to_string())
        .collect();
    if leaderless.is_empty() {
        Ok(format!("serving, {n}/{n} shards led", n = shards.len()))
    } else {
        Err(format!("no leader known for shard(s) {}", leaderless.join(",")))
    }
}

pub async fn run(a: HealthArgs) -> anyhow::Result<ExitCode> {
    let endpoint = a
        .endpoint
        .unwrap_or_else(|| default_endpoint(std::env::var("INTAKE_LISTEN").ok().as_deref()));
    let outcome = tokio::time::timeout(
        Duration::from_millis(a.timeout_ms),
        check(&endpoint, a.live, &a.conn.security()?),
    )
    .await;
    let verdict = match outcome {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err(format!("no answer from {endpoint} within {} ms", a.timeout_ms)),
    };
    match verdict {
        Ok(what) => {
            println!("healthy: {endpoint} {what}");
            Ok(ExitCode::SUCCESS)
        }
        Err(why) => {
            println!("unhealthy: {endpoint} {why}");
            Ok(ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_endpoint_follows_intake_listen() {
        assert_eq!(default_endpoint(Some("0.0.0.0:7005")), "127.0.0.1:7005");
        assert_eq!(default_endpoint(Some("10.1.2.3:7001")), "10.1.2.3:7001");
        assert_eq!(default_endpoint(Some("garbage")), "127.0.0.1:7001");
        assert_eq!(default_endpoint(None), "127.0.0.1:7001");
    }

    #[test]
    fn ready_only_with_a_leader_for_every_shard() {
        let shard = |id, leader| pb::ShardStatus {
            id,
            leader,
            ..Default::default()
        };
        assert!(verdict(&[]).is_err());
        assert!(verdict(&[shard(0, Some(1)), shard(1, Some(2))]).is_ok());
        let e = verdict(&[shard(0, Some(1)), shard(1, None)]).unwrap_err();
        assert!(e.contains("shard(s) 1"), "{e}");
    }
}
