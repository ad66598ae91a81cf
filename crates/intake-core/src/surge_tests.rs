//! The detector against the shipped scenarios' traffic, simulated second by
//! second with injected time and a seeded generator drawing districts by
//! population and categories as `intake load` does.

use super::*;
use crate::{CategoryTable, DistrictTable};

/// SplitMix64: a small seeded generator, so the simulations repeat exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One phase of traffic: `rate` complaints a second for `secs` seconds.
struct Phase {
    secs: i64,
    rate: u32,
    /// District code → weight multiplier over its population.
    weights: &'static [(&'static str, f64)],
    /// Named categories' shares; the rest follows `emergency_share`.
    mix: &'static [(&'static str, f64)],
    emergency_share: f64,
}

const START_MS: i64 = 1_800_000_000_000;

fn detector() -> SurgeDetector {
    let table = CategoryTable::default();
    let cats = table.emergencies().chain(table.ordinary()).map(String::from);
    SurgeDetector::new(
        SurgeConfig::default(),
        DistrictTable::beijing().iter().map(|d| d.code.clone()),
        cats,
    )
}

/// Runs the phases; returns every event with its offset in seconds from the start.
fn simulate(phases: &[Phase], seed: u64) -> Vec<(i64, SurgeEvent)> {
    let table = DistrictTable::beijing();
    let cats = CategoryTable::default();
    let emergencies: Vec<&str> = cats.emergencies().collect();
    let ordinary: Vec<&str> = cats.ordinary().collect();
    let mut det = detector();
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    let mut t = 0i64;
    for p in phases {
        let weights: Vec<(String, f64)> = table
            .iter()
            .map(|d| {
                let m = p.weights.iter().find(|w| w.0 == d.code).map_or(1.0, |w| w.1);
                (d.code.clone(), d.population as f64 * m)
            })
            .collect();
        let total: f64 = weights.iter().map(|w| w.1).sum();
        let named: f64 = p.mix.iter().map(|m| m.1).sum();
        for _ in 0..p.secs {
            for i in 0..p.rate {
                let at = START_MS + t * 1000 + i64::from(i) * 1000 / i64::from(p.rate);
                let mut x = rng.next() * total;
                let district = weights
                    .iter()
                    .find(|w| {
                        x -= w.1;
                        x < 0.0
                    })
                    .map_or("110105", |w| w.0.as_str());
                let y = rng.next();
                let category = if y < named {
                    let mut z = y;
                    p.mix
                        .iter()
                        .find(|m| {
                            z -= m.1;
                            z < 0.0
                        })
                        .map_or("other", |m| m.0)
                } else {
                    let pool = if rng.next() < p.emergency_share {
                        &emergencies
                    } else {
                        &ordinary
                    };
                    pool[(rng.next() * pool.len() as f64) as usize % pool.len()]
                };
                det.observe(at, district, category, 1);
            }
            t += 1;
            // The node ticks a little after each second ends.
            let (events, _) = det.advance(START_MS + t * 1000 + 300);
            out.extend(events.into_iter().map(|e| ((e.at - START_MS) / 1000, e)));
        }
    }
    out
}

fn normal(secs: i64, rate: u32) -> Phase {
    Phase {
        secs,
        rate,
        weights: &[],
        mix: &[],
        emergency_share: 0.05,
    }
}

fn started(events: &[(i64, SurgeEvent)]) -> Vec<(i64, String, String)> {
    events
        .iter()
        .filter(|(_, e)| e.kind == SurgeKind::Started)
        .map(|(t, e)| (*t, e.district.clone(), e.category.clone()))
        .collect()
}

#[test]
fn rainstorm_flags_both_flooded_districts_within_30_s_and_nothing_else() {
    const FLOOD: &[(&str, f64)] = &[("110109", 10.0), ("110111", 10.0)];
    const PEAK: &[(&str, f64)] = &[("110109", 50.0), ("110111", 50.0)];
    let phases = [
        normal(20, 200),
        Phase {
            secs: 10,
            rate: 340,
            weights: FLOOD,
            mix: &[("flood", 0.2), ("waterlogging", 0.2)],
            emergency_share: 0.05,
        },
        Phase {
            secs: 30,
            rate: 964,
            weights: PEAK,
            mix: &[("flood", 0.4), ("waterlogging", 0.3)],
            emergency_share: 0.05,
        },
        normal(40, 200),
    ];
    let events = simulate(&phases, 7);
    let raised = started(&events);
    for district in ["110109", "110111"] {
        let first = raised.iter().find(|r| r.1 == district && r.2 == "flood");
        let Some((t, _, _)) = first else {
            panic!("{district} flood not raised: {raised:?}");
        };
        assert!((20..50).contains(t), "{district} raised at {t} s: {raised:?}");
    }
    // The scenario raises flood and waterlogging shares city-wide, so other
    // districts' flood calls do surge; but only the two districts as a whole.
    let whole: Vec<_> = raised
        .iter()
        .filter(|r| r.2 == ALL_CATEGORIES)
        .map(|r| r.1.as_str())
        .collect();
    assert!(
        whole.iter().all(|d| *d == "110109" || *d == "110111"),
        "{raised:?}"
    );
    let odd: Vec<_> = raised
        .iter()
        .filter(|r| !["flood", "waterlogging", ALL_CATEGORIES].contains(&r.2.as_str()))
        .collect();
    assert!(odd.is_empty(), "false alerts: {odd:?}");
    // Once the rain stops everything clears.
    let cleared = events
        .iter()
        .filter(|(_, e)| e.kind == SurgeKind::Cleared)
        .count();
    assert_eq!(cleared, raised.len(), "{events:?}");
}

#[test]
fn a_steady_day_raises_nothing() {
    // steady.toml's daily curve, then again for ten minutes in total.
    let day = [75, 180, 480, 450, 390, 225];
    let phases: Vec<Phase> = day
        .iter()
        .cycle()
        .take(17)
        .map(|r| Phase {
            emergency_share: 0.03,
            ..normal(36, *r)
        })
        .collect();
    for seed in [11, 12, 13] {
        let events = simulate(&phases, seed);
        assert!(
            events.is_empty(),
            "seed {seed}, false alerts: {:?}",
            started(&events)
        );
    }
}

#[test]
fn an_epidemic_flags_its_category_not_the_citys_curve() {
    let phases = [
        Phase {
            emergency_share: 0.0,
            ..normal(15, 200)
        },
        Phase {
            secs: 10,
            rate: 600,
            weights: &[],
            mix: &[("epidemic", 0.25)],
            emergency_share: 0.0,
        },
        Phase {
            secs: 20,
            rate: 1200,
            weights: &[],
            mix: &[("epidemic", 0.4)],
            emergency_share: 0.0,
        },
    ];
    let raised = started(&simulate(&phases, 3));
    assert!(!raised.is_empty());
    assert!(raised.iter().all(|r| r.2 == "epidemic"), "{raised:?}");
    // The largest districts are flagged while it rises.
    let chaoyang = raised.iter().find(|r| r.1 == "110105");
    assert!(matches!(chaoyang, Some((t, _, _)) if *t < 25), "{raised:?}");
}

#[test]
fn nothing_is_raised_before_the_baseline_warms_up() {
    let mut det = detector();
    for s in 0..5 {
        det.observe(START_MS + s * 1000, "110109", "flood", 200);
        let (events, _) = det.advance(START_MS + (s + 1) * 1000 + 300);
        assert!(events.is_empty());
    }
}

#[test]
fn a_late_complaint_counts_in_later_windows_and_an_ancient_one_is_dropped() {
    let mut det = detector();
    det.observe(START_MS, "110105", "noise", 1);
    det.advance(START_MS + 20_000);
    // Applied late, but inside the window of the next evaluation.
    det.observe(START_MS + 17_000, "110105", "noise", 3);
    assert_eq!(det.counts_of(17), Vec::new());
    assert_eq!(det.counts_of(START_MS / 1000 + 17), vec![("110105", "noise", 3)]);
    det.observe(START_MS - 60_000, "110105", "noise", 3);
    assert!(det.counts_of(START_MS / 1000 - 60).is_empty());
    // Unknown categories count as "other", unknown districts not at all.
    det.observe(START_MS + 18_000, "110105", "made-up", 1);
    det.observe(START_MS + 18_000, "999999", "noise", 1);
    assert_eq!(det.counts_of(START_MS / 1000 + 18), vec![("110105", "other", 1)]);
}
