//! `Client::submit`: one call, one ticket or one definite error.
//!
//! The idempotency key is fixed before the first attempt and sent unchanged
//! on every retry, so however many attempts reach the cluster, the state
//! machine creates at most one ticket for the complaint.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use intake_proto::pb;
use intake_proto::pb::intake_service_client::IntakeServiceClient;
use tokio::time::Instant;
use tonic::Status;

use crate::config::ClientConfig;
use crate::error::{ClientError, Failure, classify, describe, rejected, retry_after};
use crate::retry::{RetryBudget, backoff};
use crate::routing::Routing;

/// An accepted complaint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// Short readable id, e.g. `0-8A3Q`.
    pub ticket_id: String,
    pub shard: u32,
    /// True when an earlier submission with the same key made the ticket.
    pub duplicate: bool,
    /// The shard leader's clock at acceptance.
    pub accepted_at: Option<SystemTime>,
    /// The key the complaint was sent with (assigned here if it had none).
    pub idempotency_key: String,
    /// Attempts this call made, the successful one included.
    pub attempts: u32,
}

/// A client of an Intake cluster. Cheap to clone; clones share channels, the
/// shard map and the retry budget.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    routing: Arc<Routing>,
    budget: RetryBudget,
}

/// How the call's attempts have failed so far.
struct Trail {
    attempts: u32,
    last: Option<Status>,
    ambiguous: bool,
    overloaded: bool,
    retry_after: Option<Duration>,
}

impl Client {
    /// Builds the client and starts learning the shard map in the
    /// background. Connections are made on first use, so this succeeds while
    /// the cluster is down.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let routing = Arc::new(Routing::new(
            &config.endpoints,
            config.connect_timeout,
            config.map_refresh_interval,
            config.suspect_for,
        )?);
        routing.refresh_soon();
        Ok(Client {
            inner: Arc::new(Inner {
                budget: RetryBudget::new(config.retry_budget),
                config,
                routing,
            }),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Tokens left in the retry budget (for metrics and tests).
    pub fn retry_tokens(&self) -> f64 {
        self.inner.budget.tokens()
    }

    /// The address the client would send a complaint of `district` to first:
    /// its shard's leader, if the cached map knows it.
    pub fn leader_for(&self, district: &str) -> Option<String> {
        self.inner.routing.leader_of(district)
    }

    /// Waits (up to `timeout`) until the shard map names the leader of
    /// `district`'s shard; false if it still does not. Submitting never
    /// requires this — it only saves a forward on the first calls.
    pub async fn wait_for_leader(&self, district: &str, timeout: Duration) -> bool {
        self.inner.routing.wait_for_leader(district, timeout).await
    }

    /// Submits one complaint and returns its ticket, retrying what may be
    /// retried within `call_timeout` and the retry budget. An empty
    /// idempotency key is replaced by a fresh UUID before the first attempt.
    pub async fn submit(&self, mut complaint: pb::Complaint) -> Result<Submitted, ClientError> {
        if complaint.idempotency_key.is_empty() {
            complaint.idempotency_key = uuid::Uuid::new_v4().to_string();
        }
        let cfg = &self.inner.config;
        let routing = &self.inner.routing;
        let deadline = Instant::now() + cfg.call_timeout;
        let district = complaint.district_code.clone();
        let mut trail = Trail {
            attempts: 0,
            last: None,
            ambiguous: false,
            overloaded: false,
            retry_after: None,
        };
        // After a failure, avoid the node that failed and the leader guess.
        let mut failed: Option<String> = None;
        loop {
            let target = match (&failed, routing.leader_of(&district)) {
                (None, Some(leader)) => leader,
                (Some(bad), Some(leader)) if *bad != leader => leader,
                _ => routing.next_endpoint(failed.as_deref()),
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(give_up(&complaint.idempotency_key, trail));
            }
            trail.attempts += 1;
            let result = self
                .attempt(&target, &complaint, cfg.attempt_timeout.min(remaining))
                .await;
            let status = match result {
                Ok(ok) => {
                    self.inner.budget.on_success();
                    if routing.leader_of(&district).as_deref() != Some(target.as_str()) {
                        // Served, but by forwarding: learn the real leader.
                        routing.refresh_soon();
                    }
                    return Ok(Submitted {
                        ticket_id: ok.ticket_id,
                        shard: ok.shard,
                        duplicate: ok.duplicate,
                        accepted_at: ok.accepted_at.and_then(|t| SystemTime::try_from(t).ok()),
                        idempotency_key: complaint.idempotency_key,
                        attempts: trail.attempts,
                    });
                }
                Err(status) => status,
            };
            let failure = classify(&status);
            if failure == Failure::Definite {
                return Err(rejected(&status));
            }
            self.inner.budget.on_failure();
            tracing::debug!(key = %complaint.idempotency_key, %target, %status, "attempt failed");
            trail.ambiguous |= failure == Failure::Ambiguous;
            trail.overloaded |= failure == Failure::Overloaded;
            let server_floor = retry_after(&status);
            trail.retry_after = server_floor.or(trail.retry_after);
            let retry_number = trail.attempts - 1;
            trail.last = Some(status);
            if failure != Failure::Overloaded {
                // A node that answered with RetryInfo is up but found no
                // leader: look again, but do not shun it.
                routing.miss(&district, &target, server_floor.is_none());
                failed = Some(target);
            }
            if !self.inner.budget.allows_retry() {
                return Err(give_up(&complaint.idempotency_key, trail));
            }
            let sleep = backoff(cfg.backoff_base, cfg.backoff_max, retry_number, server_floor);
            if Instant::now() + sleep >= deadline {
                return Err(give_up(&complaint.idempotency_key, trail));
            }
            tokio::time::sleep(sleep).await;
        }
    }

    async fn attempt(
        &self,
        target: &str,
        complaint: &pb::Complaint,
        timeout: Duration,
    ) -> Result<pb::SubmitResponse, Status> {
        let channel = self
            .inner
            .routing
            .channel(target)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut client = IntakeServiceClient::new(channel);
        let mut req = tonic::Request::new(pb::SubmitRequest {
            complaint: Some(complaint.clone()),
        });
        req.set_timeout(timeout);
        // The gRPC deadline covers the server; this covers a connect that
        // hangs before any request is sent.
        match tokio::time::timeout(timeout + Duration::from_millis(50), client.submit(req)).await {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no answer from {target} within {timeout:?}"
            ))),
        }
    }
}

/// The definite end of a call that got no ticket.
fn give_up(key: &str, trail: Trail) -> ClientError {
    let last_error = trail
        .last
        .as_ref()
        .map(describe)
        .unwrap_or_else(|| "no attempt made".into());
    if trail.ambiguous || trail.last.is_none() {
        ClientError::Unknown {
            idempotency_key: key.to_string(),
            last_error,
        }
    } else if trail.overloaded {
        ClientError::Overloaded {
            retry_after: trail.retry_after.unwrap_or(Duration::from_millis(100)),
        }
    } else {
        ClientError::Unreachable { last_error }
    }
}
