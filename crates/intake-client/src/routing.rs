//! Where to send a complaint: the node leading its district's shard, when the
//! client knows it.
//!
//! Any node would accept it and forward it, but every forward is one more
//! network hop on the leader's critical path during a surge. The client keeps
//! a shard map from `AdminService.ClusterStatus`, refreshed at most once per
//! interval when a miss suggests it is stale, and falls back to the
//! configured endpoints in turn when it knows nothing better.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};
use std::time::Duration;

use intake_proto::pb;
use intake_proto::pb::admin_service_client::AdminServiceClient;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::error::ClientError;
use crate::rotation::{HealthProbe, Rotation, RotationConfig};
use crate::security::Security;

/// What the client knows of the cluster: for each district, the address of
/// its shard's leader.
#[derive(Debug, Default, Clone)]
pub struct ShardMap {
    pub leaders: HashMap<String, String>,
}

impl ShardMap {
    fn from_status(status: &pb::ClusterStatusResponse) -> Self {
        let addrs: HashMap<u64, &str> = status.nodes.iter().map(|n| (n.id, n.addr.as_str())).collect();
        let mut leaders = HashMap::new();
        for shard in &status.shards {
            let Some(addr) = shard.leader.and_then(|l| addrs.get(&l)) else {
                continue;
            };
            for d in &shard.districts {
                leaders.insert(d.clone(), normalize(addr));
            }
        }
        Self { leaders }
    }
}

/// `host:port` whatever the caller wrote, so map addresses and configured
/// endpoints share channels.
fn normalize(addr: &str) -> String {
    addr.trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string()
}

pub(crate) struct Routing {
    connect_timeout: Duration,
    refresh_interval: Duration,
    channels: Mutex<HashMap<String, Channel>>,
    map: RwLock<ShardMap>,
    /// The configured endpoints in turn, and which nodes are out of
    /// rotation or passed over (see `rotation`). A stopped leader stays
    /// named by its followers' views until they elect, so without this
    /// every call would try it first and burn the budget.
    pub rotation: Rotation,
    refreshing: AtomicBool,
    last_refresh: Mutex<Option<Instant>>,
    /// TLS and token for every channel and call.
    security: Security,
}

impl Routing {
    pub fn new(
        endpoints: &[String],
        connect_timeout: Duration,
        refresh_interval: Duration,
        suspect_for: Duration,
        security: Security,
    ) -> Result<Self, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::Config("no endpoints".into()));
        }
        let config = RotationConfig {
            shun_for: suspect_for,
            ..RotationConfig::default()
        };
        let probe = Arc::new(HealthProbe::new(security.clone(), connect_timeout));
        let routing = Self {
            connect_timeout,
            refresh_interval,
            channels: Mutex::new(HashMap::new()),
            map: RwLock::new(ShardMap::default()),
            rotation: Rotation::new(endpoints.iter().map(|e| normalize(e)).collect(), config, probe),
            refreshing: AtomicBool::new(false),
            last_refresh: Mutex::new(None),
            security,
        };
        // Fail now on a malformed endpoint rather than on the first call.
        for e in routing.rotation.endpoints() {
            routing.channel(e)?;
        }
        Ok(routing)
    }

    /// A lazy channel to `addr`, shared by every call to that node.
    pub fn channel(&self, addr: &str) -> Result<Channel, ClientError> {
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let channel = self
            .security
            .endpoint(addr)?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// TLS and token settings of this client's calls.
    pub fn security(&self) -> &Security {
        &self.security
    }

    /// The known leader of `district`'s shard, unless it failed lately
    /// (out of rotation or passed over).
    pub fn leader_of(&self, district: &str) -> Option<String> {
        let map = self.map.read();
        map.leaders
            .get(district)
            .filter(|a| self.rotation.in_rotation(a))
            .cloned()
    }

    /// `addr` failed an attempt for `district`: forget it as the district's
    /// leader, ask for a fresh map, and if it answered but could not serve,
    /// pass it over a while.
    pub fn miss(self: &Arc<Self>, district: &str, addr: &str, could_not_serve: bool) {
        if could_not_serve {
            self.rotation.could_not_serve(addr);
        }
        {
            let mut map = self.map.write();
            map.leaders.remove(district);
        }
        self.refresh_soon();
    }

    /// Fetches the shard map in the background, unless a fetch is running or
    /// one finished less than `refresh_interval` ago.
    pub fn refresh_soon(self: &Arc<Self>) {
        {
            let last = self.last_refresh.lock();
            if last.is_some_and(|t| t.elapsed() < self.refresh_interval) {
                return;
            }
        }
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            this.refresh().await;
            *this.last_refresh.lock() = Some(Instant::now());
            this.refreshing.store(false, Ordering::Release);
        });
    }

    /// Asks one endpoint (in turn) for the cluster status.
    async fn refresh(&self) {
        let addr = self.rotation.pick(None, &[]);
        let Ok(channel) = self.channel(&addr) else {
            return;
        };
        let mut admin = AdminServiceClient::with_interceptor(channel, self.security.interceptor());
        let mut req = tonic::Request::new(pb::ClusterStatusRequest { local: false });
        req.set_timeout(Duration::from_secs(2));
        match tokio::time::timeout(Duration::from_secs(3), admin.cluster_status(req)).await {
            Ok(Ok(resp)) => {
                let fresh = ShardMap::from_status(&resp.into_inner());
                tracing::debug!(districts = fresh.leaders.len(), from = %addr, "shard map refreshed");
                *self.map.write() = fresh;
            }
            Ok(Err(status)) => tracing::debug!(from = %addr, %status, "shard map refresh failed"),
            Err(_) => tracing::debug!(from = %addr, "shard map refresh timed out"),
        }
    }

    /// Waits until the shard map knows `district`'s leader, or `timeout`.
    pub async fn wait_for_leader(self: &Arc<Self>, district: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.leader_of(district).is_some() {
                return true;
            }
            self.refresh_soon();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.leader_of(district).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_names_each_district_leader() {
        let status = pb::ClusterStatusResponse {
            nodes: vec![
                pb::NodeStatus {
                    id: 1,
                    addr: "10.0.0.1:7001".into(),
                    up: true,
                    ..Default::default()
                },
                pb::NodeStatus {
                    id: 2,
                    addr: "http://10.0.0.2:7001".into(),
                    up: true,
                    ..Default::default()
                },
            ],
            shards: vec![
                pb::ShardStatus {
                    id: 0,
                    leader: Some(2),
                    districts: vec!["110105".into(), "110108".into()],
                    ..Default::default()
                },
                pb::ShardStatus {
                    id: 1,
                    leader: None,
                    districts: vec!["110101".into()],
                    ..Default::default()
                },
            ],
            node_id: 1,
            ..Default::default()
        };
        let map = ShardMap::from_status(&status);
        assert_eq!(
            map.leaders.get("110105").map(String::as_str),
            Some("10.0.0.2:7001")
        );
        assert_eq!(
            map.leaders.get("110108").map(String::as_str),
            Some("10.0.0.2:7001")
        );
        assert_eq!(map.leaders.get("110101"), None);
    }
}
