//! Surge detection: which district, or which category in a district, is
//! suddenly calling far above its normal rate.
//!
//! Complaints are counted per (district, category) in one-second buckets by
//! their `accepted_at` (the leader's stamp, the same on every replica). Each
//! second, once it is `grace_s` old, the detector looks at the last
//! `window_s` seconds and asks, for every district and for every category
//! within it, whether the window's count is far above what its baseline
//! expects.
//!
//! **The test is a Poisson tail, not CUSUM.** Complaints of one cell arrive
//! independently of each other, so a window's count is Poisson around its
//! expected value, and P(X ≥ x) says directly how surprising the count is,
//! for tiny cells (a flood report a minute) and huge ones alike, with one
//! threshold (`alpha`). CUSUM detects small lasting shifts sooner, but needs
//! a target shift size per cell and its alarm level has no meaning an
//! operator can read; a hotline wants large, sudden rises named quickly and
//! nothing else. A rise must also be large (`min_ratio` times the baseline,
//! `min_count` complaints): with thousands of complaints a 20 % rise is
//! "significant" and still nobody's emergency.
//!
//! **The baseline** is an exponentially weighted count per cell (time
//! constant `baseline_tau_s`, five minutes: slow next to a surge), which
//! early on is the plain average of what was seen. Three things keep it from
//! crying wolf:
//! - The city's own curve (night, morning peak) moves every district
//!   together. The expected count is scaled by the upper quartile, over
//!   districts, of now / baseline, so a city-wide rise is not a surge of each district;
//!   a category's expectation is scaled by the rest of its district too, so
//!   a district calling 6x about everything is one district surge, not ten
//!   category surges.
//! - A category's share of its district is shrunk towards its share of the
//!   whole city (`prior_strength` pseudo-complaints of the category, with
//!   the district complaints they stand for), so a cell seen a handful of
//!   times does not get a baseline of zero.
//! - While a cell is in surge its baseline learns at most its expected
//!   count, so a long surge does not become the new normal.
//!
//! A surge clears after `clear_hold_s` seconds in a row below `clear_ratio`
//! times its expectation. Everything is a pure function of the counts and
//! the times given: tests inject both.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::UnixMillis;
use crate::poisson::upper_tail;

/// The category name of a whole district's surge (every category together).
pub const ALL_CATEGORIES: &str = "all";

/// Knobs of the detector; the defaults are what the README's measurements used.
#[derive(Debug, Clone, PartialEq)]
pub struct SurgeConfig {
    /// Seconds summed into one test.
    pub window_s: u32,
    /// A second is evaluated once it is this old, so that replication and
    /// apply have delivered its complaints.
    pub grace_s: u32,
    /// Time constant of the baseline's exponential weighting.
    pub baseline_tau_s: f64,
    /// Seconds of baseline needed before any alert.
    pub warmup_s: f64,
    /// Largest Poisson tail probability that still counts as a surge.
    pub alpha: f64,
    /// A surge is at least this many times its expected count...
    pub min_ratio: f64,
    /// ...and at least this many complaints in the window, for this many
    /// evaluated seconds in a row (a failover's burst lasts one).
    pub min_count: u64,
    pub raise_hold_s: u32,
    /// Below this many times the expectation a second counts as calm...
    pub clear_ratio: f64,
    /// ...and this many calm seconds in a row clear the surge.
    pub clear_hold_s: u32,
    /// Pseudo-complaints of a category in each district, at the category's
    /// share of the whole city: they pull a rarely seen cell's share towards
    /// the city's instead of to zero.
    pub prior_strength: f64,
    /// An `Updated` event when the rate moved by this fraction since the
    /// last event of the surge...
    pub update_change: f64,
    /// ...and at least this long after it.
    pub update_every_s: u32,
}

impl Default for SurgeConfig {
    fn default() -> Self {
        Self {
            window_s: 10,
            grace_s: 2,
            baseline_tau_s: 300.0,
            warmup_s: 10.0,
            alpha: 1e-6,
            min_ratio: 3.0,
            min_count: 10,
            raise_hold_s: 2,
            clear_ratio: 1.5,
            clear_hold_s: 10,
            prior_strength: 5.0,
            update_change: 0.25,
            update_every_s: 5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SurgeKind {
    Started,
    Updated,
    Cleared,
}

impl SurgeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SurgeKind::Started => "started",
            SurgeKind::Updated => "updated",
            SurgeKind::Cleared => "cleared",
        }
    }
}

/// One change in a surge's life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurgeEvent {
    pub kind: SurgeKind,
    pub district: String,
    /// A category name, or [`ALL_CATEGORIES`] for the district as a whole.
    pub category: String,
    /// Complaints per second over the window just evaluated.
    pub rate: f64,
    /// What the baseline expected per second (scaled by the city's curve).
    pub baseline: f64,
    /// When the surge was raised (the evaluated second, Unix ms).
    pub since: UnixMillis,
    /// The evaluated second this event is about (Unix ms).
    pub at: UnixMillis,
}

/// A surge in progress, as a dashboard lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveSurge {
    pub district: String,
    pub category: String,
    pub rate: f64,
    pub baseline: f64,
    pub since: UnixMillis,
}

/// One district's live rate against its expectation (last evaluated window).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistrictRate {
    pub district: String,
    pub rate: f64,
    pub baseline: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct CellKey {
    district: usize,
    /// `None`: the whole district.
    category: Option<usize>,
}

#[derive(Debug, Clone)]
struct Active {
    since: i64,
    last_rate: f64,
    last_event_s: i64,
    calm_s: u32,
    rate: f64,
    baseline: f64,
}

/// The detector of one node: counts in, events out.
#[derive(Debug, Clone)]
pub struct SurgeDetector {
    cfg: SurgeConfig,
    districts: Vec<String>,
    district_index: HashMap<String, usize>,
    categories: Vec<String>,
    category_index: HashMap<String, usize>,
    /// Per second (Unix seconds), counts per cell (district * C + category).
    buckets: BTreeMap<i64, Vec<u32>>,
    /// Exponentially weighted counts per cell, and the weight of time.
    base: Vec<f64>,
    base_time: f64,
    evaluated: Option<i64>,
    active: HashMap<CellKey, Active>,
    /// Cells significant in the last evaluated second(s), not yet raised.
    pending: HashMap<CellKey, u32>,
    rates: Vec<DistrictRate>,
}

/// Buckets kept beyond the window, for complaints applied late.
const KEEP_EXTRA_S: i64 = 5;
/// Buckets at most (a leader whose clock runs far ahead cannot grow memory).
const MAX_BUCKETS: usize = 120;

impl SurgeDetector {
    /// A detector for these districts and categories; categories not listed
    /// count as the last one (`other` is added when missing), so the label
    /// set stays bounded whatever adapters send.
    pub fn new(
        cfg: SurgeConfig,
        districts: impl IntoIterator<Item = String>,
        categories: impl IntoIterator<Item = String>,
    ) -> Self {
        let districts: Vec<String> = districts.into_iter().collect();
        let mut categories: Vec<String> = categories.into_iter().collect();
        if !categories.iter().any(|c| c == "other") {
            categories.push("other".to_string());
        }
        let district_index = districts
            .iter()
            .enumerate()
            .map(|(i, d)| (d.clone(), i))
            .collect();
        let category_index = categories
            .iter()
            .enumerate()
            .map(|(i, c)| (c.clone(), i))
            .collect();
        let cells = districts.len() * categories.len();
        Self {
            cfg,
            district_index,
            category_index,
            base: vec![0.0; cells],
            base_time: 0.0,
            districts,
            categories,
            buckets: BTreeMap::new(),
            evaluated: None,
            active: HashMap::new(),
            pending: HashMap::new(),
            rates: Vec::new(),
        }
    }

    pub fn config(&self) -> &SurgeConfig {
        &self.cfg
    }

    pub fn categories(&self) -> &[String] {
        &self.categories
    }

    fn cell(&self, district: usize, category: usize) -> usize {
        district * self.categories.len() + category
    }

    /// Counts `n` complaints accepted at `at` (Unix ms). Unknown districts
    /// are ignored (validation keeps them out); unknown categories count as
    /// `other`. Complaints for a second already evaluated still count in
    /// later windows; older than the window they are dropped.
    pub fn observe(&mut self, at: UnixMillis, district: &str, category: &str, n: u32) {
        let Some(&d) = self.district_index.get(district) else {
            return;
        };
        let c = self
            .category_index
            .get(category)
            .or_else(|| self.category_index.get("other"))
            .copied()
            .unwrap_or(0);
        let second = at.div_euclid(1000);
        if let Some(done) = self.evaluated
            && second <= done - i64::from(self.cfg.window_s)
        {
            return;
        }
        if !self.buckets.contains_key(&second) && self.buckets.len() >= MAX_BUCKETS {
            return;
        }
        let cells = self.base.len();
        let cell = self.cell(d, c);
        let bucket = self.buckets.entry(second).or_insert_with(|| vec![0; cells]);
        bucket[cell] = bucket[cell].saturating_add(n);
    }

    /// Complaints counted for `second` (Unix seconds), per (district,
    /// category) with a count: what `/metrics` adds once a second is final.
    pub fn counts_of(&self, second: i64) -> Vec<(&str, &str, u32)> {
        let Some(bucket) = self.buckets.get(&second) else {
            return Vec::new();
        };
        let c = self.categories.len();
        bucket
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| {
                (
                    self.districts[i / c].as_str(),
                    self.categories[i % c].as_str(),
                    *n,
                )
            })
            .collect()
    }

    /// Evaluates every second up to `now - grace_s` not evaluated yet and
    /// returns the events, oldest first, with the seconds evaluated. Before
    /// the first complaint nothing is evaluated; after a long pause (no
    /// calls for a while) the gap is walked second by second, at most the
    /// last 10 minutes of it.
    pub fn advance(&mut self, now: UnixMillis) -> (Vec<SurgeEvent>, Vec<i64>) {
        let last = now.div_euclid(1000) - i64::from(self.cfg.grace_s);
        let first = match self.evaluated {
            Some(done) => (done + 1).max(last - 600),
            None => match self.buckets.keys().next() {
                Some(&s) => s,
                None => return (Vec::new(), Vec::new()),
            },
        };
        let mut events = Vec::new();
        let mut seconds = Vec::new();
        for s in first..=last {
            self.evaluate(s, &mut events);
            seconds.push(s);
            self.evaluated = Some(s);
        }
        let keep_from = last - i64::from(self.cfg.window_s) - KEEP_EXTRA_S;
        self.buckets.retain(|s, _| *s > keep_from);
        (events, seconds)
    }

    /// Surges in progress, largest rate first.
    pub fn active(&self) -> Vec<ActiveSurge> {
        let mut out: Vec<ActiveSurge> = self
            .active
            .iter()
            .map(|(k, a)| ActiveSurge {
                district: self.districts[k.district].clone(),
                category: self.category_name(k.category).to_string(),
                rate: a.rate,
                baseline: a.baseline,
                since: a.since * 1000,
            })
            .collect();
        out.sort_by(|a, b| b.rate.total_cmp(&a.rate).then(a.district.cmp(&b.district)));
        out
    }

    /// Every district's rate and expectation over the last evaluated window.
    pub fn district_rates(&self) -> &[DistrictRate] {
        &self.rates
    }

    fn category_name(&self, c: Option<usize>) -> &str {
        c.map_or(ALL_CATEGORIES, |c| self.categories[c].as_str())
    }

    /// Window sums per cell ending at second `s` (inclusive).
    fn window(&self, s: i64) -> Vec<u64> {
        let mut sums = vec![0u64; self.base.len()];
        let from = s - i64::from(self.cfg.window_s);
        for (_, bucket) in self.buckets.range(from + 1..=s) {
            for (sum, n) in sums.iter_mut().zip(bucket) {
                *sum += u64::from(*n);
            }
        }
        sums
    }

    fn evaluate(&mut self, s: i64, events: &mut Vec<SurgeEvent>) {
        let nc = self.categories.len();
        let nd = self.districts.len();
        let w = f64::from(self.cfg.window_s);
        let x = self.window(s);
        let x_d: Vec<u64> = (0..nd).map(|d| x[d * nc..(d + 1) * nc].iter().sum()).collect();
        let warm = self.base_time >= self.cfg.warmup_s;
        // Baseline rates per second: per cell and per district.
        let t = self.base_time.max(1e-9);
        let n_d: Vec<f64> = (0..nd)
            .map(|d| self.base[d * nc..(d + 1) * nc].iter().sum())
            .collect();
        let total: f64 = n_d.iter().sum();
        let city_share: Vec<f64> = (0..nc)
            .map(|c| {
                let n: f64 = (0..nd).map(|d| self.base[d * nc + c]).sum();
                if total > 0.0 { n / total } else { 1.0 / nc as f64 }
            })
            .collect();
        // The city's curve: the upper quartile of now / baseline over
        // districts with data. Not the median: when a shard's leader fails
        // over, its districts' counts pause for seconds and then arrive in
        // a burst; with a third of the districts paused the median sank and
        // every other district looked high (seen in rainstorm.toml).
        let mut ratios: Vec<f64> = (0..nd)
            .filter_map(|d| {
                let mu = w * n_d[d] / t;
                (mu >= 5.0).then(|| x_d[d] as f64 / mu)
            })
            .collect();
        ratios.sort_by(f64::total_cmp);
        let k = match ratios.len() {
            0 => 1.0,
            n => ratios[(3 * n / 4).min(n - 1)],
        };
        let m = self.cfg.prior_strength;
        let mut learn_cap = vec![0.0f64; self.base.len()];
        let mut rates = Vec::with_capacity(nd);
        for d in 0..nd {
            let mu_d = w * n_d[d] / t;
            let exp_d = (k * mu_d).max(0.5);
            rates.push(DistrictRate {
                district: self.districts[d].clone(),
                rate: x_d[d] as f64 / w,
                baseline: exp_d / w,
            });
            if warm && mu_d > 0.0 {
                self.judge(
                    CellKey {
                        district: d,
                        category: None,
                    },
                    x_d[d],
                    exp_d,
                    s,
                    events,
                );
            }
            for (c, &city) in city_share.iter().enumerate() {
                let i = d * nc + c;
                // `m` pseudo-complaints of this category, and the district
                // complaints they stand for at the city's share.
                let share = if city > 0.0 {
                    (self.base[i] + m) / (n_d[d] + m / city)
                } else {
                    self.base[i] / n_d[d].max(1e-9)
                };
                let mu_c = mu_d * share;
                let rest = mu_d - mu_c;
                let k_rest = if rest >= 5.0 {
                    (x_d[d] - x[i]) as f64 / rest
                } else {
                    k
                };
                let exp_c = (k.max(k_rest) * mu_c).max(0.5);
                // Learning is capped by the city's curve alone: capped by
                // the district's own rise, a surge would teach itself.
                learn_cap[i] = k * mu_c / w;
                if warm && mu_d > 0.0 {
                    self.judge(
                        CellKey {
                            district: d,
                            category: Some(c),
                        },
                        x[i],
                        exp_c,
                        s,
                        events,
                    );
                }
            }
        }
        self.rates = rates;
        // Learn from second s itself; a cell in surge learns at most its expectation.
        let decay = (-1.0 / self.cfg.baseline_tau_s).exp();
        let now = self.buckets.get(&s);
        for d in 0..nd {
            // Cells in surge, or significant and waiting to be raised, learn
            // at most their expectation.
            let held = |k: CellKey| self.active.contains_key(&k) || self.pending.contains_key(&k);
            let district_surging = held(CellKey {
                district: d,
                category: None,
            });
            for c in 0..nc {
                let i = d * nc + c;
                let mut seen = now.map_or(0.0, |b| f64::from(b[i]));
                if district_surging
                    || held(CellKey {
                        district: d,
                        category: Some(c),
                    })
                {
                    seen = seen.min(learn_cap[i]);
                }
                self.base[i] = self.base[i] * decay + seen;
            }
        }
        self.base_time = self.base_time * decay + 1.0;
    }

    fn judge(&mut self, key: CellKey, x: u64, expected: f64, s: i64, events: &mut Vec<SurgeEvent>) {
        let cfg = &self.cfg;
        let w = f64::from(cfg.window_s);
        let rate = x as f64 / w;
        let baseline = expected / w;
        let surging = x >= cfg.min_count
            && x as f64 >= cfg.min_ratio * expected
            && upper_tail(x, expected) <= cfg.alpha;
        let event = |kind, since: i64, this: &Self| SurgeEvent {
            kind,
            district: this.districts[key.district].clone(),
            category: this.category_name(key.category).to_string(),
            rate,
            baseline,
            since: since * 1000,
            at: s * 1000,
        };
        let held = if surging && !self.active.contains_key(&key) {
            let n = self.pending.entry(key).or_insert(0);
            *n += 1;
            *n >= cfg.raise_hold_s
        } else {
            self.pending.remove(&key);
            false
        };
        match self.active.get_mut(&key) {
            None if held => {
                self.pending.remove(&key);
                self.active.insert(
                    key,
                    Active {
                        since: s,
                        last_rate: rate,
                        last_event_s: s,
                        calm_s: 0,
                        rate,
                        baseline,
                    },
                );
                events.push(event(SurgeKind::Started, s, self));
            }
            None => {}
            Some(a) => {
                a.rate = rate;
                a.baseline = baseline;
                if (x as f64) < cfg.clear_ratio * expected {
                    a.calm_s += 1;
                } else {
                    a.calm_s = 0;
                }
                let since = a.since;
                if a.calm_s >= cfg.clear_hold_s {
                    self.active.remove(&key);
                    events.push(event(SurgeKind::Cleared, since, self));
                } else if (rate - a.last_rate).abs() >= cfg.update_change * a.last_rate.max(1e-9)
                    && s - a.last_event_s >= i64::from(cfg.update_every_s)
                {
                    a.last_rate = rate;
                    a.last_event_s = s;
                    events.push(event(SurgeKind::Updated, since, self));
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "surge_tests.rs"]
mod tests;
