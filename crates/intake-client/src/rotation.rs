//! Which endpoint the next attempt goes to, and which are out of rotation
//! for now. One type for [`crate::Client`] and `intake load`'s engine.
//!
//! Why one, and why it looks at silence. Each used to pick endpoints its own
//! way, and each fault fixed in one (a killed node chosen in turn, issue 19)
//! came back through the other. And both took an endpoint back by sending it
//! a real request after a backoff: fine for a node that refuses connections
//! (the request fails at once and goes elsewhere), fatal for a paused one
//! (`docker pause`, SIGSTOP, a long GC stall), whose kernel still accepts
//! connections while nothing answers. Every such "probe" hung for a whole
//! attempt, and once the live nodes had also let attempts run out (they
//! forward to the paused leader until an election), every endpoint was
//! "down" alike and the turn came round to the paused one again: in the
//! container fault test, 5 % of complaints spent their last attempt there.
//!
//! The rules:
//!
//! - **In turn.** Attempts go round the configured endpoints; the caller's
//!   hint (the shard leader the client's map names) goes first while it is
//!   in rotation; `avoid` (the node that just failed this request, or those
//!   a request that never left has tried) comes after every other endpoint
//!   in rotation.
//! - **Out when nothing is heard** ([`Rotation::heard_nothing`]): a
//!   connection refused or reset, or an attempt that ran out without any
//!   answer. Requests go to an endpoint that is out only when every endpoint
//!   is. A background **health probe** (gRPC health `Check`, at most
//!   [`RotationConfig::probe_timeout`]) asks it again after
//!   `probe_first`, doubling to `probe_max`, one probe at a time; the first
//!   answer of any kind (even NOT_SERVING or UNIMPLEMENTED: the process
//!   answers), or any answer to a real request, puts it back. A probe, not a
//!   request, because a probe of a paused node costs a timer and no
//!   complaint's time.
//! - **Passed over when it answered but could not serve**
//!   ([`Rotation::could_not_serve`]: no leader reachable from it, say): tried
//!   after the endpoints in rotation for `shun_for`, then one request at a
//!   time tries it again (a timed retry of one request: it answers, so it
//!   costs no hang), and an answer that serves puts it back.
//!
//! A request that never reached a server (its connection was refused: see
//! [`never_sent`]) is resent to another endpoint at once by the callers,
//! without spending the retry budget, as gRPC's transparent retries do.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::security::Security;

/// Whether a failed call never reached a server: the connection could not
/// be opened (refused, or its connect timed out), so nothing was sent. Such
/// a call is safe to resend anywhere at once, as gRPC's transparent retries
/// do. tonic reports it as a bare UNAVAILABLE carrying the connector's
/// message; a server's UNAVAILABLE always carries `RetryInfo`, so one
/// relayed from a forwarding node (whose outcome is unknown) is never taken
/// for this; a connect failure that does not match counts as sent, which is
/// the safe side.
pub fn never_sent(status: &Status) -> bool {
    status.code() == Code::Unavailable
        && status.details().is_empty()
        && status.message().starts_with("tcp connect error")
}

/// Whether no server sent `status`: the connection was refused, reset or
/// closed, or the call's own timer ran out (tonic's `Cancelled "Timeout
/// expired"`). tonic keeps the transport's error as the source of such a
/// status; a status read from a server's trailers has none. A stream the
/// server itself reset counts too, which costs that node one probe.
pub fn nothing_heard(status: &Status) -> bool {
    never_sent(status) || std::error::Error::source(status).is_some()
}

/// How long endpoints stay out or passed over, and how they are probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationConfig {
    /// An endpoint that answered but could not serve is tried after the
    /// others for this long, then by one request at a time.
    pub shun_for: Duration,
    /// The first probe of an endpoint taken out comes this long after.
    pub probe_first: Duration,
    /// The wait between probes doubles up to this: an endpoint back from a
    /// restart is in rotation again within about this.
    pub probe_max: Duration,
    /// One probe's limit: an endpoint that has not answered by then is
    /// still out.
    pub probe_timeout: Duration,
}

impl Default for RotationConfig {
    fn default() -> Self {
        Self {
            shun_for: Duration::from_secs(3),
            probe_first: Duration::from_millis(100),
            probe_max: Duration::from_secs(2),
            probe_timeout: Duration::from_millis(500),
        }
    }
}

/// How an endpoint that is out of rotation is asked whether it answers.
pub trait Probe: Send + Sync + 'static {
    /// True if `addr` answered anything at all. The rotation bounds the
    /// wait by [`RotationConfig::probe_timeout`].
    fn probe(&self, addr: &str) -> Pin<Box<dyn Future<Output = bool> + Send + 'static>>;
}

/// The gRPC health service's `Check`, which every node serves (open to
/// callers without a token), on a channel of the probe's own per address.
pub struct HealthProbe {
    security: Security,
    connect_timeout: Duration,
    channels: Mutex<HashMap<String, Channel>>,
}

impl HealthProbe {
    pub fn new(security: Security, connect_timeout: Duration) -> Self {
        Self {
            security,
            connect_timeout,
            channels: Mutex::new(HashMap::new()),
        }
    }

    fn channel(&self, addr: &str) -> Option<Channel> {
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(addr) {
            return Some(c.clone());
        }
        let channel = self
            .security
            .endpoint(addr)
            .ok()?
            .connect_timeout(self.connect_timeout)
            .connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Some(channel)
    }
}

impl Probe for HealthProbe {
    fn probe(&self, addr: &str) -> Pin<Box<dyn Future<Output = bool> + Send + 'static>> {
        let channel = self.channel(addr);
        let interceptor = self.security.interceptor();
        Box::pin(async move {
            let Some(channel) = channel else { return false };
            let mut health = HealthClient::with_interceptor(channel, interceptor);
            match health.check(HealthCheckRequest::default()).await {
                Ok(_) => true,
                Err(status) => !nothing_heard(&status),
            }
        })
    }
}

/// What the rotation knows of an endpoint that is not plainly in it.
#[derive(Debug, Clone, Copy)]
enum Trouble {
    /// Answered but could not serve: passed over until `until`; after that
    /// the next request to pick it tries it and moves `until` on.
    Shunned { until: Instant },
    /// Nothing heard: out until it answers. `probe` names this spell out,
    /// so that one probe loop at a time asks.
    Out { probe: u64 },
}

struct Inner {
    endpoints: Vec<String>,
    config: RotationConfig,
    probe: Arc<dyn Probe>,
    /// Where the next turn starts.
    next: AtomicUsize,
    troubles: Mutex<Troubles>,
}

#[derive(Default)]
struct Troubles {
    by_addr: HashMap<String, Trouble>,
    /// Numbers each spell out, for its probe loop.
    spells: u64,
}

/// The endpoints of one client (or load run), in turn. Cheap to clone;
/// clones share the rotation.
#[derive(Clone)]
pub struct Rotation {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Rotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rotation")
            .field("endpoints", &self.inner.endpoints)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// How good a choice an endpoint is now; lower is better.
fn rank(trouble: Option<&Trouble>, avoided: bool, now: Instant) -> u8 {
    let shunned = matches!(trouble, Some(Trouble::Shunned { until }) if *until > now);
    let out = matches!(trouble, Some(Trouble::Out { .. }));
    match (out, shunned, avoided) {
        (false, false, false) => 0,
        (false, true, false) => 1,
        (false, _, true) => 2,
        (true, _, false) => 3,
        (true, _, true) => 4,
    }
}

impl Rotation {
    /// `endpoints` in the order they take turns; out-of-rotation endpoints
    /// are asked by `probe`.
    pub fn new(endpoints: Vec<String>, config: RotationConfig, probe: Arc<dyn Probe>) -> Self {
        Self {
            inner: Arc::new(Inner {
                endpoints,
                config,
                probe,
                next: AtomicUsize::new(0),
                troubles: Mutex::new(Troubles::default()),
            }),
        }
    }

    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    pub fn config(&self) -> RotationConfig {
        self.inner.config
    }

    /// Where the next attempt goes: `hint` if it is in rotation and not
    /// avoided, else the best endpoint in turn — in rotation and not in
    /// `avoid`; then passed over; then avoided; then out (when every
    /// endpoint is out, attempts still go somewhere, in turn). An endpoint
    /// passed over whose time is up is tried by this attempt alone.
    pub fn pick(&self, hint: Option<&str>, avoid: &[String]) -> String {
        let now = Instant::now();
        let avoided = |e: &str| avoid.iter().any(|a| a == e);
        let mut troubles = self.inner.troubles.lock();
        let rank_of = |e: &str| rank(troubles.by_addr.get(e), avoided(e), now);
        let chosen = match hint {
            Some(h) if rank_of(h) == 0 => h.to_string(),
            _ => {
                let n = self.inner.endpoints.len();
                let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
                let best = (0..n)
                    .map(|i| &self.inner.endpoints[(start + i) % n])
                    .min_by_key(|e| rank_of(e.as_str()));
                match best {
                    Some(e) => e.clone(),
                    None => return hint.unwrap_or_default().to_string(),
                }
            }
        };
        if let Some(Trouble::Shunned { until }) = troubles.by_addr.get_mut(&chosen)
            && *until <= now
        {
            *until = now + self.inner.config.shun_for;
        }
        chosen
    }

    /// Whether `addr` is in rotation now: not out, not passed over.
    pub fn in_rotation(&self, addr: &str) -> bool {
        rank(
            self.inner.troubles.lock().by_addr.get(addr),
            false,
            Instant::now(),
        ) == 0
    }

    /// Whether `addr` is out: nothing heard from it since it last failed.
    pub fn is_out(&self, addr: &str) -> bool {
        matches!(
            self.inner.troubles.lock().by_addr.get(addr),
            Some(Trouble::Out { .. })
        )
    }

    /// `addr` answered (anything at all): it is in rotation again.
    pub fn answered(&self, addr: &str) {
        let mut troubles = self.inner.troubles.lock();
        if !troubles.by_addr.is_empty() {
            troubles.by_addr.remove(addr);
        }
    }

    /// `addr` answered but could not serve: passed over for `shun_for`. An
    /// endpoint that is out stays out (only an answer brings it back).
    pub fn could_not_serve(&self, addr: &str) {
        let until = Instant::now() + self.inner.config.shun_for;
        let mut troubles = self.inner.troubles.lock();
        if !matches!(troubles.by_addr.get(addr), Some(Trouble::Out { .. })) {
            troubles
                .by_addr
                .insert(addr.to_string(), Trouble::Shunned { until });
        }
    }

    /// Nothing was heard from `addr`: its connection was refused or broke,
    /// or an attempt ran out without an answer. It is out of rotation until
    /// a probe (or a request) finds it answering.
    pub fn heard_nothing(&self, addr: &str) {
        let spell = {
            let mut troubles = self.inner.troubles.lock();
            if matches!(troubles.by_addr.get(addr), Some(Trouble::Out { .. })) {
                return;
            }
            troubles.spells += 1;
            let spell = troubles.spells;
            troubles
                .by_addr
                .insert(addr.to_string(), Trouble::Out { probe: spell });
            spell
        };
        tracing::debug!(%addr, "nothing heard: out of rotation until it answers");
        // Without a runtime there is no probe; a request that finds it
        // answering (when every endpoint is out) still brings it back.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(probe_until_back(
                Arc::downgrade(&self.inner),
                addr.to_string(),
                spell,
            ));
        }
    }
}

/// Probes `addr` while it is out for spell `spell`, with a doubling wait,
/// until it answers, comes back by another way, or the rotation is gone.
async fn probe_until_back(rotation: Weak<Inner>, addr: String, spell: u64) {
    let mut wait = match rotation.upgrade() {
        Some(r) => r.config.probe_first,
        None => return,
    };
    loop {
        tokio::time::sleep(wait).await;
        let (probe, config) = match rotation.upgrade() {
            Some(r) if still_out(&r, &addr, spell) => (r.probe.clone(), r.config),
            _ => return,
        };
        let answered = tokio::time::timeout(config.probe_timeout, probe.probe(&addr))
            .await
            .unwrap_or(false);
        let Some(r) = rotation.upgrade() else { return };
        if answered {
            let mut troubles = r.troubles.lock();
            if matches!(troubles.by_addr.get(&addr), Some(Trouble::Out { probe }) if *probe == spell) {
                troubles.by_addr.remove(&addr);
                tracing::debug!(%addr, "answered a probe: back in rotation");
            }
            return;
        }
        wait = (wait * 2).min(config.probe_max);
    }
}

fn still_out(r: &Inner, addr: &str, spell: u64) -> bool {
    matches!(r.troubles.lock().by_addr.get(addr), Some(Trouble::Out { probe }) if *probe == spell)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use tonic_types::StatusExt;

    const MS: Duration = Duration::from_millis(1);

    /// Endpoints that answer probes or not, as the test says; counts probes.
    #[derive(Default)]
    struct Fake {
        answering: Mutex<HashMap<String, bool>>,
        /// A probe of a silent endpoint hangs (a paused node) rather than
        /// failing at once (a refused connection).
        hang: AtomicBool,
        probes: AtomicUsize,
    }

    impl Fake {
        fn set(&self, addr: &str, answers: bool) {
            self.answering.lock().insert(addr.to_string(), answers);
        }
    }

    impl Probe for Fake {
        fn probe(&self, addr: &str) -> Pin<Box<dyn Future<Output = bool> + Send + 'static>> {
            self.probes.fetch_add(1, Ordering::Relaxed);
            let answers = self.answering.lock().get(addr).copied().unwrap_or(true);
            let hang = self.hang.load(Ordering::Relaxed);
            Box::pin(async move {
                if !answers && hang {
                    std::future::pending::<()>().await;
                }
                answers
            })
        }
    }

    fn rotation(fake: &Arc<Fake>) -> Rotation {
        let eps = ["a", "b", "c"].map(String::from).to_vec();
        Rotation::new(eps, RotationConfig::default(), fake.clone())
    }

    fn picks(r: &Rotation, n: usize) -> Vec<String> {
        (0..n).map(|_| r.pick(None, &[])).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn endpoints_take_turns_and_the_hint_goes_first_unless_avoided() {
        let r = rotation(&Arc::new(Fake::default()));
        assert_eq!(picks(&r, 4), ["a", "b", "c", "a"]);
        assert_eq!(r.pick(Some("c"), &[]), "c");
        // A hint outside the configured endpoints (the map's leader) too.
        assert_eq!(r.pick(Some("d:7001"), &[]), "d:7001");
        // The node that just failed this request comes after the others.
        let avoid = ["c".to_string()];
        assert_ne!(r.pick(Some("c"), &avoid), "c");
        for _ in 0..3 {
            assert_ne!(r.pick(None, &avoid), "c");
        }
        let all = ["a", "b", "c"].map(String::from);
        assert!(["a", "b", "c"].contains(&r.pick(None, &all).as_str()));
    }

    /// A paused node: the first attempt that ran out takes it out; requests
    /// then go only to the others, and its probes, not requests, ask it
    /// again — each bounded by the probe timeout — until it answers.
    #[tokio::test(start_paused = true)]
    async fn a_silent_endpoint_is_out_until_a_probe_hears_it_and_no_request_goes_there() {
        let fake = Arc::new(Fake::default());
        fake.hang.store(true, Ordering::Relaxed);
        fake.set("b", false);
        let r = rotation(&fake);
        r.heard_nothing("b");
        assert!(r.is_out("b") && !r.in_rotation("b"));
        assert_ne!(r.pick(Some("b"), &[]), "b", "not even as the hint");
        // Ten seconds of pause: no request there, probes with a doubling
        // wait (100, 200, 400, 800, 1600, then 2000 ms), each given up
        // after 500 ms.
        for _ in 0..100 {
            tokio::time::sleep(100 * MS).await;
            assert!(!picks(&r, 3).contains(&"b".to_string()));
        }
        let probes = fake.probes.load(Ordering::Relaxed);
        assert!((5..=8).contains(&probes), "{probes} probes in 10 s");
        // Thawed: the next probe hears it, within the longest wait.
        fake.set("b", true);
        tokio::time::sleep(2500 * MS).await;
        assert!(r.in_rotation("b"));
        assert!(picks(&r, 3).contains(&"b".to_string()));
    }

    #[tokio::test(start_paused = true)]
    async fn any_answer_to_a_request_brings_an_endpoint_back_and_stops_its_probes() {
        let fake = Arc::new(Fake::default());
        fake.set("a", false);
        let r = rotation(&fake);
        r.heard_nothing("a");
        tokio::time::sleep(150 * MS).await;
        assert_eq!(fake.probes.load(Ordering::Relaxed), 1);
        r.answered("a");
        assert!(r.in_rotation("a"));
        tokio::time::sleep(10_000 * MS).await;
        assert_eq!(fake.probes.load(Ordering::Relaxed), 1, "no probe once back");
        // Out again: one new probe loop, not two.
        r.heard_nothing("a");
        r.heard_nothing("a");
        tokio::time::sleep(150 * MS).await;
        assert_eq!(fake.probes.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_endpoint_out_requests_still_go_in_turn() {
        let fake = Arc::new(Fake::default());
        for e in ["a", "b", "c"] {
            fake.set(e, false);
        }
        let r = rotation(&fake);
        for e in ["a", "b", "c"] {
            r.heard_nothing(e);
        }
        let mut seen = picks(&r, 3);
        seen.sort();
        assert_eq!(seen, ["a", "b", "c"]);
        // An endpoint that is passed over still beats one that is out.
        fake.set("a", true);
        r.answered("a");
        r.could_not_serve("a");
        assert_eq!(picks(&r, 3), ["a", "a", "a"]);
    }

    /// A node that answers but cannot serve (cut off from its peers) is
    /// passed over for `shun_for`, then tried by one request at a time.
    #[tokio::test(start_paused = true)]
    async fn an_endpoint_that_could_not_serve_is_passed_over_then_tried_by_one_request() {
        let r = rotation(&Arc::new(Fake::default()));
        r.could_not_serve("a");
        assert!(!r.in_rotation("a") && !r.is_out("a"));
        assert!(!picks(&r, 6).contains(&"a".to_string()));
        tokio::time::sleep(3000 * MS).await;
        let tried: Vec<String> = picks(&r, 6).into_iter().filter(|e| e == "a").collect();
        assert_eq!(tried.len(), 1, "one request tries it");
        // It served: in rotation again.
        r.answered("a");
        assert!(picks(&r, 3).contains(&"a".to_string()));
        // Passed over does not bring back what is out.
        r.heard_nothing("b");
        r.could_not_serve("b");
        assert!(r.is_out("b"));
    }

    #[test]
    fn only_a_connect_failure_counts_as_never_sent() {
        assert!(never_sent(&Status::unavailable(
            "tcp connect error: Connection refused (os error 111)"
        )));
        assert!(!never_sent(&Status::unavailable("node 2 does not lead shard 1")));
        assert!(!never_sent(&Status::unknown("tcp connect error")));
        let relayed = Status::with_error_details(
            Code::Unavailable,
            "tcp connect error",
            tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_millis(50))),
        );
        assert!(!never_sent(&relayed));
    }

    #[test]
    fn a_status_from_the_transport_is_nothing_heard_and_one_from_a_server_is_an_answer() {
        let timer = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert_eq!(timer.code(), Code::Cancelled);
        assert!(nothing_heard(&timer));
        let reset = Status::from_error(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert!(nothing_heard(&reset));
        assert!(!nothing_heard(&Status::deadline_exceeded("may have committed")));
        assert!(!nothing_heard(&Status::cancelled("Timeout expired")));
    }
}
