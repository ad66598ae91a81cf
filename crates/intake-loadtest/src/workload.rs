//! Synthetic complaints: districts weighted by population (times a
//! scenario's multipliers), channels, categories and text lengths drawn from
//! a phase's [`Mix`].

use intake_core::category::CategoryTable;
use intake_core::district::DistrictTable;
use intake_proto::pb;
use rand::Rng;

use crate::scenario::Mix;

/// One request's worth of complaints, and how to send it.
pub struct Request {
    pub items: Vec<pb::Complaint>,
    /// SubmitBatch (even with one item) rather than unary Submit.
    pub batch: bool,
}

pub struct Workload {
    /// (district code, cumulative weight).
    districts: Vec<(String, f64)>,
    channels: Vec<(String, f64)>,
    /// Named categories with their cumulative share of all complaints.
    categories: Vec<(String, f64)>,
    emergency_share: f64,
    emergencies: Vec<String>,
    ordinary: Vec<String>,
    text_bytes: (usize, usize),
    batch_share: f64,
    batch_size: usize,
    /// Random lowercase letters that texts are cut from: cheap enough that
    /// the generator, which shares the machine, does not steal the cluster's CPU.
    text_pool: String,
    near_duplicate_share: f64,
    /// Texts of the incidents that near-duplicates repeat.
    incident_texts: Vec<String>,
}

/// Incident texts a workload's near-duplicates are drawn from.
const INCIDENT_TEXTS: usize = 32;

/// A share as `random_bool` accepts it: NaN and out-of-range values would
/// make it panic.
fn share(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

fn cumulative(items: impl Iterator<Item = (String, f64)>) -> Vec<(String, f64)> {
    let mut sum = 0.0;
    items
        .map(|(k, w)| {
            sum += w;
            (k, sum)
        })
        .collect()
}

/// Picks from cumulative weights; the last item if rounding leaves a gap.
fn draw<'a>(items: &'a [(String, f64)], rng: &mut impl Rng) -> Option<&'a str> {
    let total = items.last()?.1;
    // A sum that overflowed (absurd weights) cannot be sampled from.
    if !total.is_finite() || total <= 0.0 {
        return items.first().map(|i| i.0.as_str());
    }
    let x = rng.random_range(0.0..total);
    items
        .iter()
        .find(|(_, c)| x < *c)
        .or(items.last())
        .map(|i| i.0.as_str())
}

impl Workload {
    pub fn new(mix: &Mix, districts: &DistrictTable, categories: &CategoryTable) -> Workload {
        let weights = districts.iter().map(|d| {
            let m = mix.district_weights.get(&d.code).copied().unwrap_or(1.0);
            (d.code.clone(), d.population as f64 * m)
        });
        let pool_len = (2 * mix.text_bytes.1).max(4096);
        let mut rng = rand::rng();
        let letters = |rng: &mut rand::rngs::ThreadRng, n: usize| -> String {
            (0..n).map(|_| rng.random_range(b'a'..=b'z') as char).collect()
        };
        let incident_texts = (0..INCIDENT_TEXTS)
            .map(|_| {
                let n = rng.random_range(mix.text_bytes.0..=mix.text_bytes.1.max(mix.text_bytes.0));
                letters(&mut rng, n.max(1))
            })
            .collect();
        Workload {
            districts: cumulative(weights),
            channels: cumulative(mix.channel_mix.iter().cloned()),
            categories: cumulative(mix.category_mix.iter().cloned()),
            emergency_share: share(mix.emergency_share),
            emergencies: categories.emergencies().map(String::from).collect(),
            ordinary: categories.ordinary().map(String::from).collect(),
            text_bytes: mix.text_bytes,
            batch_share: share(mix.batch_share),
            batch_size: mix.batch_size.max(1),
            text_pool: letters(&mut rng, pool_len),
            near_duplicate_share: share(mix.near_duplicate_share),
            incident_texts,
        }
    }

    pub fn complaint(&self, rng: &mut impl Rng) -> pb::Complaint {
        let district = draw(&self.districts, rng).unwrap_or("110105").to_string();
        let channel = draw(&self.channels, rng).unwrap_or("web").to_string();
        let named = self.categories.last().map_or(0.0, |c| c.1);
        let x: f64 = rng.random_range(0.0..1.0);
        let category = if x < named {
            draw(&self.categories, rng).unwrap_or("other").to_string()
        } else {
            let pool = if rng.random_bool(self.emergency_share) {
                &self.emergencies
            } else {
                &self.ordinary
            };
            pool.get(rng.random_range(0..pool.len().max(1)))
                .cloned()
                .unwrap_or_else(|| "other".to_string())
        };
        if !self.incident_texts.is_empty() && rng.random_bool(self.near_duplicate_share) {
            let i = rng.random_range(0..self.incident_texts.len());
            let text = near_duplicate(&self.incident_texts[i], rng);
            return pb::Complaint {
                idempotency_key: intake_client::mint_key(&district),
                channel,
                district_code: district,
                category,
                text,
                ..Default::default()
            };
        }
        let (lo, hi) = self.text_bytes;
        let n = rng
            .random_range(lo..=hi.max(lo))
            .min(self.text_pool.len() / 2)
            .max(1);
        let start = rng.random_range(0..=self.text_pool.len() - n);
        pb::Complaint {
            idempotency_key: intake_client::mint_key(&district),
            channel,
            district_code: district,
            category,
            text: self.text_pool[start..start + n].to_string(),
            ..Default::default()
        }
    }

    /// A unary request, or with `batch_share` a SubmitBatch of `batch_size`.
    pub fn request(&self, rng: &mut impl Rng) -> Request {
        let batch = rng.random_bool(self.batch_share);
        let n = if batch { self.batch_size } else { 1 };
        Request {
            items: (0..n).map(|_| self.complaint(rng)).collect(),
            batch,
        }
    }

    /// Complaints in a request of this workload, on average (for `total`).
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    pub fn is_emergency(&self, category: &str) -> bool {
        self.emergencies.iter().any(|e| e == category)
    }
}

/// `text` with about 2 % of its characters replaced (at least one).
fn near_duplicate(text: &str, rng: &mut impl Rng) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let edits = (chars.len() / 50).max(1);
    for _ in 0..edits {
        let i = rng.random_range(0..chars.len().max(1));
        if let Some(c) = chars.get_mut(i) {
            *c = rng.random_range(b'a'..=b'z') as char;
        }
    }
    chars.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn district_weights_multiply_population_shares() {
        let table = DistrictTable::beijing();
        let mut mix = Mix::default();
        mix.district_weights.insert("110109".into(), 50.0);
        mix.district_weights.insert("110111".into(), 50.0);
        let w = Workload::new(&mix, &table, &CategoryTable::default());
        let total: f64 = table.iter().map(|d| d.population as f64).sum();
        let flood: f64 = ["110109", "110111"]
            .iter()
            .filter_map(|c| table.get(c))
            .map(|d| d.population as f64)
            .sum();
        let expected = 50.0 * flood / (total - flood + 50.0 * flood);
        let mut rng = rand::rng();
        let n = 20_000;
        let hits = (0..n)
            .filter(|_| {
                let c = w.complaint(&mut rng);
                c.district_code == "110109" || c.district_code == "110111"
            })
            .count();
        let got = hits as f64 / n as f64;
        assert!(
            (got - expected).abs() < 0.02,
            "share {got:.3}, expected {expected:.3}"
        );
    }

    #[test]
    fn near_duplicates_group_as_intake_groups_them() {
        let mix = Mix {
            near_duplicate_share: 1.0,
            text_bytes: (80, 600),
            ..Mix::default()
        };
        let w = Workload::new(&mix, &DistrictTable::beijing(), &CategoryTable::default());
        let mut rng = rand::rng();
        let texts: Vec<String> = (0..200).map(|_| w.complaint(&mut rng).text).collect();
        // Nearly every text is close to one of the incident texts: an edit
        // can, rarely, land on enough shingles to drop one below the bar
        // (seen once in a few hundred runs: 13 of 24 agreeing).
        let close = texts
            .iter()
            .filter(|t| {
                let Some(sig) = intake_core::incident::fingerprint(t) else {
                    return false;
                };
                w.incident_texts
                    .iter()
                    .filter_map(|s| intake_core::incident::fingerprint(s))
                    .map(|s| intake_core::incident::agreement(&sig, &s))
                    .max()
                    .is_some_and(|best| best >= intake_core::incident::MIN_AGREE)
            })
            .count();
        assert!(
            close >= texts.len() * 95 / 100,
            "{close} of {} close",
            texts.len()
        );
    }

    #[test]
    fn batch_share_and_text_bytes_are_honoured() {
        let mix = Mix {
            batch_share: 1.0,
            batch_size: 7,
            text_bytes: (10, 20),
            ..Mix::default()
        };
        let w = Workload::new(&mix, &DistrictTable::beijing(), &CategoryTable::default());
        let r = w.request(&mut rand::rng());
        assert!(r.batch);
        assert_eq!(r.items.len(), 7);
        assert!(r.items.iter().all(|c| (10..=20).contains(&c.text.len())));
    }
}
