//! Scenario files (`loadtests/scenarios/*.toml`): phases of offered load and
//! faults injected at given times. See `loadtests/README.md` for the format.
//!
//! Parsing is two steps: serde reads the file into raw structs whose fields
//! keep their byte spans (`toml::Spanned`), then `check` turns them into a
//! [`Scenario`]. Every error, syntactic or semantic, names the 1-based line
//! of the offending item, because a person fixes these files by hand.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use intake_core::district::DistrictTable;
use serde::Deserialize;
use toml::Spanned;

/// Largest complaint text a scenario may ask for; the server's own limit is
/// higher, this only keeps a typo from generating megabytes per complaint.
const MAX_TEXT_BYTES: usize = 8192;
/// Longest phase; far beyond any test, and small enough for clock arithmetic.
pub const MAX_DURATION_S: f64 = 7.0 * 86_400.0;
/// SubmitBatch items per request at most (the server's batch limit).
const MAX_BATCH_SIZE: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: line {line}: {message}")]
    Invalid {
        path: String,
        line: usize,
        message: String,
    },
}

/// Arrivals of a phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Open loop: this many requests scheduled per second, whatever happens.
    PerSecond(f64),
    /// Closed loop: `concurrency` workers submitting back to back.
    Max,
}

/// What the complaints of a phase look like.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    /// District code → multiplier over its population weight (1 if absent).
    pub district_weights: BTreeMap<String, f64>,
    /// Channel → relative share.
    pub channel_mix: Vec<(String, f64)>,
    /// Share of complaints in a random emergency category (after `category_mix`).
    pub emergency_share: f64,
    /// Category → share of all complaints; the rest follows `emergency_share`.
    pub category_mix: Vec<(String, f64)>,
    /// Text length in bytes, uniform in `min..=max`.
    pub text_bytes: (usize, usize),
    /// Share of requests sent as SubmitBatch rather than unary Submit.
    pub batch_share: f64,
    /// Complaints per SubmitBatch request.
    pub batch_size: usize,
    /// Share of complaints whose text is a near-duplicate (2 % of its
    /// characters changed) of one of 32 incident texts: callers reporting
    /// the same incident, for incident grouping.
    pub near_duplicate_share: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            district_weights: BTreeMap::new(),
            channel_mix: vec![("phone".into(), 1.0), ("app".into(), 1.0), ("web".into(), 1.0)],
            emergency_share: 0.0,
            category_mix: Vec::new(),
            text_bytes: (400, 400),
            batch_share: 0.0,
            batch_size: 10,
            near_duplicate_share: 0.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    pub name: String,
    pub duration_s: f64,
    pub rate: Rate,
    /// Stop the phase once this many complaints were offered.
    pub total: Option<u64>,
    /// Requests in flight at most (closed loop: the workers).
    pub concurrency: usize,
    pub deadline_ms: u64,
    pub max_attempts: u32,
    pub mix: Mix,
}

/// Which node a fault acts on.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeRef {
    Id(u64),
    /// The node most recently killed by a fault and not yet restarted.
    Killed,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FaultAction {
    /// kill -9 the leader of the shard that holds this district.
    KillLeader {
        district: String,
    },
    RestartNode {
        node: NodeRef,
    },
    /// SIGSTOP: the node freezes, which to its peers is a cut-off.
    CutNode {
        node: u64,
    },
    /// SIGCONT of a node frozen by `cut_node`.
    HealNode {
        node: u64,
    },
    StopSink,
    StartSink,
    /// SIGSTOP the sink, SIGCONT it `for_s` seconds later.
    StallSink {
        for_s: f64,
    },
    /// Restart every node in turn, waiting for all shards to have leaders again.
    RollingRestart {
        interval_s: f64,
    },
    /// Start a new node with `--join` (through a running member); the
    /// cluster rebalances onto it.
    AddNode {
        node: u64,
    },
    /// `intake node remove`: drain the node, wait until it is off the map
    /// and its process has exited.
    RemoveNode {
        node: u64,
    },
}

impl FaultAction {
    pub fn name(&self) -> &'static str {
        match self {
            FaultAction::KillLeader { .. } => "kill_leader",
            FaultAction::RestartNode { .. } => "restart_node",
            FaultAction::CutNode { .. } => "cut_node",
            FaultAction::HealNode { .. } => "heal_node",
            FaultAction::StopSink => "stop_sink",
            FaultAction::StartSink => "start_sink",
            FaultAction::StallSink { .. } => "stall_sink",
            FaultAction::RollingRestart { .. } => "rolling_restart",
            FaultAction::AddNode { .. } => "add_node",
            FaultAction::RemoveNode { .. } => "remove_node",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// Seconds from the start of the scenario.
    pub at_s: f64,
    pub action: FaultAction,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// Factor applied to rates and totals by [`Scenario::scaled`] (file's
    /// `[defaults] scale`, 1 if absent; `--scale` overrides it).
    pub scale: f64,
    pub phases: Vec<Phase>,
    pub faults: Vec<Fault>,
}

impl Scenario {
    /// Seconds from the start to the end of the last phase (at most).
    pub fn duration_s(&self) -> f64 {
        self.phases.iter().map(|p| p.duration_s).sum()
    }

    /// The scenario with every open-loop rate and every `total` multiplied by
    /// `factor` (durations and fault times unchanged), so a quick run keeps
    /// the shape of a long one.
    pub fn scaled(mut self, factor: f64) -> Scenario {
        self.scale = factor;
        for p in &mut self.phases {
            if let Rate::PerSecond(r) = &mut p.rate {
                *r *= factor;
            }
            if let Some(t) = &mut p.total {
                *t = ((*t as f64) * factor).ceil().max(1.0) as u64;
            }
        }
        self
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    description: String,
    defaults: Option<Spanned<RawSection>>,
    #[serde(default)]
    phase: Vec<Spanned<RawSection>>,
    #[serde(default)]
    fault: Vec<Spanned<RawFault>>,
}

/// `[defaults]` and `[[phase]]` share one shape: a phase takes what it does
/// not set from the defaults. Fields that make sense in only one of them are
/// refused in the other by `check`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSection {
    name: Option<Spanned<String>>,
    duration_s: Option<Spanned<f64>>,
    rate: Option<Spanned<RawRate>>,
    total: Option<Spanned<u64>>,
    concurrency: Option<Spanned<usize>>,
    deadline_ms: Option<Spanned<u64>>,
    max_attempts: Option<Spanned<u32>>,
    scale: Option<Spanned<f64>>,
    district_weights: Option<Spanned<BTreeMap<String, Spanned<f64>>>>,
    channel_mix: Option<Spanned<BTreeMap<String, Spanned<f64>>>>,
    emergency_share: Option<Spanned<f64>>,
    category_mix: Option<Spanned<RawCategoryMix>>,
    text_bytes: Option<Spanned<(usize, usize)>>,
    batch_share: Option<Spanned<f64>>,
    batch_size: Option<Spanned<usize>>,
    near_duplicate_share: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawRate {
    Number(f64),
    Word(String),
}

/// `category_mix = 0.1` is the emergency share; a table names categories.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum RawCategoryMix {
    EmergencyShare(f64),
    Table(BTreeMap<String, f64>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    at_s: Spanned<f64>,
    action: Spanned<String>,
    district: Option<Spanned<String>>,
    node: Option<Spanned<RawNode>>,
    for_s: Option<Spanned<f64>>,
    interval_s: Option<Spanned<f64>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawNode {
    Id(u64),
    Word(String),
}

const ACTIONS: &str = "kill_leader, restart_node, cut_node, heal_node, stop_sink, start_sink, stall_sink, rolling_restart, add_node, remove_node";

/// Reads and checks a scenario file.
pub fn load(path: &Path, districts: &DistrictTable) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text, &path.display().to_string(), districts)
}

/// Parses scenario text; `path` only names the file in errors.
pub fn parse(text: &str, path: &str, districts: &DistrictTable) -> Result<Scenario, ScenarioError> {
    let cx = Cx { text, path };
    let raw: RawScenario = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| cx.line(&s));
        cx.err_at_line(line, e.message().trim())
    })?;
    check(raw, &cx, districts)
}

struct Cx<'a> {
    text: &'a str,
    path: &'a str,
}

impl Cx<'_> {
    /// 1-based line of a byte offset.
    fn line(&self, span: &Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        1 + self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
    }

    fn err_at_line(&self, line: usize, message: impl Into<String>) -> ScenarioError {
        ScenarioError::Invalid {
            path: self.path.to_string(),
            line,
            message: message.into(),
        }
    }

    fn err<T>(&self, at: &Spanned<T>, message: impl Into<String>) -> ScenarioError {
        self.err_at_line(self.line(&at.span()), message)
    }

    /// A share must lie in 0..=1.
    fn share(&self, v: &Spanned<f64>, what: &str) -> Result<f64, ScenarioError> {
        let x = *v.get_ref();
        if !(0.0..=1.0).contains(&x) {
            return Err(self.err(v, format!("{what} = {x} is not a share in 0..1")));
        }
        Ok(x)
    }

    fn positive(&self, v: &Spanned<f64>, what: &str) -> Result<f64, ScenarioError> {
        let x = *v.get_ref();
        if !x.is_finite() || x < 0.0 {
            return Err(self.err(v, format!("{what} = {x} must be a finite number >= 0")));
        }
        Ok(x)
    }
}

/// Built-in defaults of the knobs a scenario may leave out.
const DEFAULT_CONCURRENCY: usize = 512;
const DEFAULT_DEADLINE_MS: u64 = 5_000;
const DEFAULT_MAX_ATTEMPTS: u32 = 3;

fn check(raw: RawScenario, cx: &Cx, districts: &DistrictTable) -> Result<Scenario, ScenarioError> {
    let defaults = match &raw.defaults {
        Some(d) => {
            let inner = d.get_ref();
            for (present, field) in [
                (inner.name.as_ref().map(|s| s.span()), "name"),
                (inner.duration_s.as_ref().map(|s| s.span()), "duration_s"),
                (inner.total.as_ref().map(|s| s.span()), "total"),
            ] {
                if let Some(span) = present {
                    return Err(cx.err_at_line(
                        cx.line(&span),
                        format!("`{field}` belongs in a [[phase]], not in [defaults]"),
                    ));
                }
            }
            inner
        }
        None => &RawSection::default(),
    };
    let scale = match &defaults.scale {
        Some(s) => {
            let x = cx.positive(s, "scale")?;
            if x == 0.0 {
                return Err(cx.err(s, "scale must be > 0"));
            }
            x
        }
        None => 1.0,
    };
    let base_mix = mix(defaults, &Mix::default(), cx, districts)?;
    if raw.phase.is_empty() {
        return Err(cx.err_at_line(1, "a scenario needs at least one [[phase]]"));
    }
    let mut phases = Vec::new();
    for p in &raw.phase {
        let inner = p.get_ref();
        if let Some(s) = &inner.scale {
            return Err(cx.err(s, "`scale` belongs in [defaults], not in a [[phase]]"));
        }
        let name = match &inner.name {
            Some(n) => n.get_ref().clone(),
            None => return Err(cx.err(p, "a [[phase]] needs a `name`")),
        };
        let duration_s = match &inner.duration_s {
            Some(d) => {
                let x = cx.positive(d, "duration_s")?;
                if x == 0.0 || x > MAX_DURATION_S {
                    return Err(cx.err(
                        d,
                        format!("duration_s = {x} must be > 0 and at most {MAX_DURATION_S} (a week)"),
                    ));
                }
                x
            }
            None => return Err(cx.err(p, format!("phase {name:?} needs `duration_s`"))),
        };
        let rate_field = inner.rate.as_ref().or(defaults.rate.as_ref()).ok_or_else(|| {
            cx.err(
                p,
                format!("phase {name:?} needs a `rate` (arrivals per second, or \"max\")"),
            )
        })?;
        let rate = match rate_field.get_ref() {
            RawRate::Number(r) if r.is_finite() && *r > 0.0 => Rate::PerSecond(*r),
            RawRate::Number(r) => {
                return Err(cx.err(rate_field, format!("rate = {r} must be a number > 0 or \"max\"")));
            }
            RawRate::Word(w) if w == "max" => Rate::Max,
            RawRate::Word(w) => {
                return Err(cx.err(
                    rate_field,
                    format!("rate = {w:?} must be a number > 0 or \"max\""),
                ));
            }
        };
        let total = inner.total.as_ref().map(|t| *t.get_ref());
        if let Some(t) = &inner.total
            && *t.get_ref() == 0
        {
            return Err(cx.err(t, "total must be > 0"));
        }
        let concurrency = pick(&inner.concurrency, &defaults.concurrency).unwrap_or(DEFAULT_CONCURRENCY);
        if concurrency == 0 {
            let at = inner.concurrency.as_ref().or(defaults.concurrency.as_ref());
            return Err(at.map_or_else(
                || cx.err(p, "concurrency must be > 0"),
                |c| cx.err(c, "concurrency must be > 0"),
            ));
        }
        phases.push(Phase {
            name,
            duration_s,
            rate,
            total,
            concurrency,
            deadline_ms: pick(&inner.deadline_ms, &defaults.deadline_ms).unwrap_or(DEFAULT_DEADLINE_MS),
            max_attempts: pick(&inner.max_attempts, &defaults.max_attempts).unwrap_or(DEFAULT_MAX_ATTEMPTS),
            mix: mix(inner, &base_mix, cx, districts)?,
        });
    }
    let end: f64 = phases.iter().map(|p| p.duration_s).sum();
    let mut faults = Vec::new();
    for f in &raw.fault {
        faults.push(fault(f, end, cx, districts)?);
    }
    faults.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    Ok(Scenario {
        name: raw.name,
        description: raw.description,
        scale,
        phases,
        faults,
    })
}

fn pick<T: Copy>(own: &Option<Spanned<T>>, default: &Option<Spanned<T>>) -> Option<T> {
    own.as_ref().or(default.as_ref()).map(|s| *s.get_ref())
}

/// The section's mix fields over `base` (the defaults' mix, or built-ins).
fn mix(s: &RawSection, base: &Mix, cx: &Cx, districts: &DistrictTable) -> Result<Mix, ScenarioError> {
    let mut m = base.clone();
    if let Some(w) = &s.district_weights {
        m.district_weights.clear();
        for (code, weight) in w.get_ref() {
            if !districts.contains(code) {
                return Err(cx.err(
                    weight,
                    format!("district_weights names unknown district {code:?}"),
                ));
            }
            m.district_weights.insert(
                code.clone(),
                cx.positive(weight, &format!("district_weights.{code}"))?,
            );
        }
    }
    if let Some(c) = &s.channel_mix {
        let mut mixv = Vec::new();
        for (channel, share) in c.get_ref() {
            mixv.push((
                channel.clone(),
                cx.share(share, &format!("channel_mix.{channel}"))?,
            ));
        }
        if mixv.iter().map(|c| c.1).sum::<f64>() <= 0.0 {
            return Err(cx.err(c, "channel_mix needs a share > 0"));
        }
        m.channel_mix = mixv;
    }
    if let Some(e) = &s.emergency_share {
        m.emergency_share = cx.share(e, "emergency_share")?;
    }
    if let Some(c) = &s.category_mix {
        match c.get_ref() {
            RawCategoryMix::EmergencyShare(x) => {
                m.emergency_share = cx.share(&Spanned::new(c.span(), *x), "category_mix")?;
                m.category_mix.clear();
            }
            RawCategoryMix::Table(t) => {
                let mut v = Vec::new();
                for (name, share) in t {
                    v.push((
                        name.clone(),
                        cx.share(&Spanned::new(c.span(), *share), &format!("category_mix.{name}"))?,
                    ));
                }
                if v.iter().map(|c| c.1).sum::<f64>() > 1.0 + 1e-9 {
                    return Err(cx.err(c, "category_mix shares add up to more than 1"));
                }
                m.category_mix = v;
            }
        }
    }
    if let Some(t) = &s.text_bytes {
        let (lo, hi) = *t.get_ref();
        if lo == 0 || lo > hi || hi > MAX_TEXT_BYTES {
            return Err(cx.err(
                t,
                format!(
                    "text_bytes = [{lo}, {hi}] must be [min, max] with 1 <= min <= max <= {MAX_TEXT_BYTES}"
                ),
            ));
        }
        m.text_bytes = (lo, hi);
    }
    if let Some(b) = &s.batch_share {
        m.batch_share = cx.share(b, "batch_share")?;
    }
    if let Some(n) = &s.near_duplicate_share {
        m.near_duplicate_share = cx.share(n, "near_duplicate_share")?;
    }
    if let Some(b) = &s.batch_size {
        let n = *b.get_ref();
        if n == 0 || n > MAX_BATCH_SIZE {
            return Err(cx.err(b, format!("batch_size = {n} must be in 1..={MAX_BATCH_SIZE}")));
        }
        m.batch_size = n;
    }
    Ok(m)
}

fn fault(
    f: &Spanned<RawFault>,
    end: f64,
    cx: &Cx,
    districts: &DistrictTable,
) -> Result<Fault, ScenarioError> {
    let r = f.get_ref();
    let at_s = cx.positive(&r.at_s, "at_s")?;
    if at_s > end {
        return Err(cx.err(
            &r.at_s,
            format!("fault at_s = {at_s} is after the end of the scenario ({end} s)"),
        ));
    }
    let action_name = r.action.get_ref().as_str();
    // Which optional fields the action takes; any other one is an error, so
    // a misplaced field never silently does nothing.
    let allowed: &[&str] = match action_name {
        "kill_leader" => &["district"],
        "restart_node" | "cut_node" | "heal_node" | "add_node" | "remove_node" => &["node"],
        "stall_sink" => &["for_s"],
        "rolling_restart" => &["interval_s"],
        "stop_sink" | "start_sink" => &[],
        other => {
            return Err(cx.err(
                &r.action,
                format!("unknown fault action {other:?} (known: {ACTIONS})"),
            ));
        }
    };
    let present = [
        ("district", r.district.as_ref().map(|s| s.span())),
        ("node", r.node.as_ref().map(|s| s.span())),
        ("for_s", r.for_s.as_ref().map(|s| s.span())),
        ("interval_s", r.interval_s.as_ref().map(|s| s.span())),
    ];
    for (field, span) in present {
        if let Some(span) = span
            && !allowed.contains(&field)
        {
            return Err(cx.err_at_line(
                cx.line(&span),
                format!("`{field}` does not apply to action {action_name:?}"),
            ));
        }
    }
    let missing = |field: &str| cx.err(&r.action, format!("action {action_name:?} needs `{field}`"));
    let node_ref = || -> Result<NodeRef, ScenarioError> {
        let n = r.node.as_ref().ok_or_else(|| missing("node"))?;
        match n.get_ref() {
            RawNode::Id(0) => Err(cx.err(n, "node ids start at 1")),
            RawNode::Id(id) => Ok(NodeRef::Id(*id)),
            RawNode::Word(w) if w == "killed" => Ok(NodeRef::Killed),
            RawNode::Word(w) => Err(cx.err(n, format!("node = {w:?} must be a node id or \"killed\""))),
        }
    };
    let node_id = || -> Result<u64, ScenarioError> {
        match node_ref()? {
            NodeRef::Id(id) => Ok(id),
            NodeRef::Killed => Err(cx.err(
                f,
                format!("action {action_name:?} needs a node id, not \"killed\""),
            )),
        }
    };
    let action = match action_name {
        "kill_leader" => {
            let d = r.district.as_ref().ok_or_else(|| missing("district"))?;
            if !districts.contains(d.get_ref()) {
                return Err(cx.err(d, format!("unknown district {:?}", d.get_ref())));
            }
            FaultAction::KillLeader {
                district: d.get_ref().clone(),
            }
        }
        "restart_node" => FaultAction::RestartNode { node: node_ref()? },
        "cut_node" => FaultAction::CutNode { node: node_id()? },
        "heal_node" => FaultAction::HealNode { node: node_id()? },
        "add_node" => FaultAction::AddNode { node: node_id()? },
        "remove_node" => FaultAction::RemoveNode { node: node_id()? },
        "stop_sink" => FaultAction::StopSink,
        "start_sink" => FaultAction::StartSink,
        "stall_sink" => {
            let s = r.for_s.as_ref().ok_or_else(|| missing("for_s"))?;
            FaultAction::StallSink {
                for_s: cx.positive(s, "for_s")?,
            }
        }
        _ => FaultAction::RollingRestart {
            interval_s: match &r.interval_s {
                Some(i) => cx.positive(i, "interval_s")?,
                None => 0.0,
            },
        },
    };
    Ok(Fault { at_s, action })
}

#[cfg(test)]
mod tests;
