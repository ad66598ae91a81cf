//! Client settings, with defaults fit for an adapter in front of a hotline:
//! a complaint call may take seconds during an election, never minutes.

use std::time::Duration;

use intake_core::category::CategoryTable;

use crate::retry::RetryBudgetConfig;
use crate::security::Security;
use crate::throttle::ThrottleConfig;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Node addresses, `host:port` or `http://host:port`. Any node accepts
    /// any request; more than one lets the client ride out a dead node.
    pub endpoints: Vec<String>,
    /// The whole `submit` call, all attempts and sleeps included.
    pub call_timeout: Duration,
    /// One attempt, sent as its gRPC deadline (bounded by what remains of
    /// `call_timeout`).
    pub attempt_timeout: Duration,
    pub connect_timeout: Duration,
    /// Backoff window of the first retry; it doubles up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub retry_budget: RetryBudgetConfig,
    /// The shard map is fetched again at most this often, so a storm of
    /// misses costs one `ClusterStatus` call, not one per miss.
    pub map_refresh_interval: Duration,
    /// A node that answered an attempt but could not serve it (no leader
    /// reachable from it) is passed over for this long, then tried by one
    /// request at a time. It should outlast an election. (A node that said
    /// nothing at all is out of rotation until a health probe hears it:
    /// `rotation.rs`.)
    pub suspect_for: Duration,
    /// TLS (the nodes' CA, a client certificate) and the bearer token.
    pub security: Security,
    /// Client-side throttling of ordinary complaints while the cluster turns
    /// most of them away at capacity ([`crate::Throttle`]); `None` sends
    /// every complaint.
    pub throttle: Option<ThrottleConfig>,
    /// Which categories are emergencies, never throttled here: the table the
    /// cluster runs with (`intake start --categories`; the embedded default
    /// unless set).
    pub categories: CategoryTable,
}

impl ClientConfig {
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            call_timeout: Duration::from_secs(15),
            attempt_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            retry_budget: RetryBudgetConfig::default(),
            map_refresh_interval: Duration::from_millis(500),
            suspect_for: Duration::from_secs(3),
            security: Security::default(),
            throttle: Some(ThrottleConfig::default()),
            categories: CategoryTable::default(),
        }
    }
}
