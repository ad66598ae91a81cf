//! Grouping precision on a synthetic set with known groups: base texts
//! (English-like and Chinese) and near-duplicates of them with a few
//! characters changed, mixed with unrelated texts, grouped as the state
//! machine does (band index, then `choose`).

use std::collections::HashMap;

use super::*;
use crate::TicketId;

fn mix(z: u64) -> u64 {
    super::mix(z)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const WORDS: &[&str] = &[
    "water", "pipe", "burst", "street", "flooded", "car", "stuck", "under", "bridge", "north", "gate",
    "since", "morning", "basement", "smell", "gas", "building", "lift", "broken", "noise", "night", "school",
    "road", "hole", "light", "tree", "fallen", "power", "out", "whole", "block", "please", "send", "help",
    "elderly", "resident", "third", "floor", "sewage", "overflow", "market",
];
const HANZI: &str = "水管爆裂街道被淹汽车困在桥下北门从早上地下室有煤气味楼电梯坏了噪音夜里学校路面坑灯树倒停电整栋请派人帮助老人住户三层污水溢出市场小区积水严重无法出行";

/// Mostly the complaint words above, with a made-up name or number now and
/// then (street names, building numbers), as real complaints have.
fn english(rng: &mut Rng, words: usize) -> String {
    const SYL: &[&str] = &[
        "ka", "lo", "mi", "ten", "sha", "gu", "an", "zhe", "ping", "yu", "li", "do",
    ];
    (0..words)
        .map(|_| {
            if rng.below(4) == 0 {
                (0..2 + rng.below(2))
                    .map(|_| SYL[rng.below(SYL.len())])
                    .collect::<String>()
            } else {
                WORDS[rng.below(WORDS.len())].to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn chinese(rng: &mut Rng, chars: usize) -> String {
    let pool: Vec<char> = HANZI.chars().collect();
    (0..chars).map(|_| pool[rng.below(pool.len())]).collect()
}

/// English-like for even `n`, Chinese for odd.
fn text(rng: &mut Rng, n: usize) -> String {
    if n.is_multiple_of(2) {
        let words = 20 + rng.below(60);
        english(rng, words)
    } else {
        let chars = 30 + rng.below(120);
        chinese(rng, chars)
    }
}

/// A near-duplicate: `edits` characters replaced, inserted or deleted.
fn variant(rng: &mut Rng, base: &str, edits: usize) -> String {
    let mut chars: Vec<char> = base.chars().collect();
    let pool: Vec<char> = if base.is_ascii() {
        "abcdefghijklmnopqrstuvwxyz ".chars().collect()
    } else {
        HANZI.chars().collect()
    };
    for _ in 0..edits {
        let i = rng.below(chars.len().max(1));
        let c = pool[rng.below(pool.len())];
        match rng.below(3) {
            0 => chars[i] = c,
            1 => chars.insert(i, c),
            _ if chars.len() > 1 => {
                chars.remove(i);
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

/// Groups texts in arrival order as apply does; returns each text's incident.
fn group(texts: &[(String, i64)]) -> Vec<Option<TicketId>> {
    let mut index: HashMap<(u8, u32), Vec<IncidentEntry>> = HashMap::new();
    let mut out = Vec::new();
    for (i, (text, at)) in texts.iter().enumerate() {
        let id = TicketId::new(0, i as u64 + 1, 0);
        let Some(sig) = fingerprint(text) else {
            out.push(None);
            continue;
        };
        let candidates: Vec<IncidentEntry> = bands(&sig)
            .iter()
            .flat_map(|b| index.get(b).cloned().unwrap_or_default())
            .collect();
        let entry = match choose(&sig, *at, &candidates) {
            Some(mut e) => {
                e.last_at = *at;
                e.count += 1;
                e
            }
            None => IncidentEntry {
                incident: id,
                signature: sig,
                last_at: *at,
                count: 1,
            },
        };
        for b in bands(&entry.signature) {
            let list = index.entry(b).or_default();
            list.retain(|e| e.incident != entry.incident);
            list.push(entry);
        }
        out.push(Some(entry.incident));
    }
    out
}

/// Pairwise precision and recall of a grouping against the truth.
fn score(truth: &[usize], got: &[Option<TicketId>]) -> (f64, f64) {
    let (mut tp, mut fp, mut fneg) = (0u64, 0u64, 0u64);
    for i in 0..truth.len() {
        for j in i + 1..truth.len() {
            let same_truth = truth[i] == truth[j];
            let same_got = got[i].is_some() && got[i] == got[j];
            match (same_truth, same_got) {
                (true, true) => tp += 1,
                (false, true) => fp += 1,
                (true, false) => fneg += 1,
                _ => {}
            }
        }
    }
    (
        tp as f64 / (tp + fp).max(1) as f64,
        tp as f64 / (tp + fneg).max(1) as f64,
    )
}

/// 40 groups of 2-12 near-duplicates (3 % of characters edited) and 400
/// unrelated texts, English-like and Chinese, shuffled over an hour.
fn synthetic(seed: u64, edit_share: f64) -> (Vec<(String, i64)>, Vec<usize>) {
    let mut rng = Rng(seed);
    let mut items: Vec<(String, usize)> = Vec::new();
    for g in 0..40 {
        let base = text(&mut rng, g);
        let n = 2 + rng.below(11);
        for _ in 0..n {
            let edits = ((base.chars().count() as f64) * edit_share).round() as usize;
            items.push((variant(&mut rng, &base, edits), g));
        }
    }
    for u in 0..400 {
        items.push((text(&mut rng, u), 1000 + u));
    }
    // Shuffle (Fisher-Yates), then spread over an hour.
    for i in (1..items.len()).rev() {
        let j = rng.below(i + 1);
        items.swap(i, j);
    }
    let n = items.len() as i64;
    let texts = items
        .iter()
        .enumerate()
        .map(|(i, (t, _))| (t.clone(), i as i64 * 3_600_000 / n))
        .collect();
    (texts, items.into_iter().map(|(_, g)| g).collect())
}

#[test]
fn near_duplicates_group_with_high_precision() {
    let mut report = Vec::new();
    for (seed, edits) in [(1, 0.0), (2, 0.01), (3, 0.03), (4, 0.05)] {
        let (texts, truth) = synthetic(seed, edits);
        let (precision, recall) = score(&truth, &group(&texts));
        report.push(format!(
            "edits={:.0}% precision={precision:.3} recall={recall:.3}",
            edits * 100.0
        ));
        assert!(precision >= 0.99, "{report:?}");
        if edits <= 0.03 {
            assert!(recall >= 0.85, "{report:?}");
        }
    }
    println!("{}", report.join("\n"));
    // Exact repeats always group.
    let (texts, truth) = synthetic(1, 0.0);
    assert_eq!(score(&truth, &group(&texts)).1, 1.0);
}

#[test]
fn chinese_and_english_fingerprints_ignore_spacing_and_punctuation() {
    let a = fingerprint("北京市门头沟区 水管爆裂，街道被淹！").unwrap();
    let b = fingerprint("北京市门头沟区水管爆裂 街道被淹").unwrap();
    assert_eq!(a, b);
    let c = fingerprint("Water pipe burst, street flooded near the north gate").unwrap();
    let d = fingerprint("water pipe burst street flooded near the north gate!!").unwrap();
    assert_eq!(c, d);
    assert!(agreement(&a, &c) < MIN_AGREE);
    assert_eq!(fingerprint("flood!"), None);
}

#[test]
fn an_incident_closes_after_the_window() {
    let sig = fingerprint("water pipe burst street flooded north gate").unwrap();
    let other = fingerprint("loud music from the karaoke bar every night").unwrap();
    let open = IncidentEntry {
        incident: TicketId::new(1, 5, 0),
        signature: sig,
        last_at: 0,
        count: 3,
    };
    assert_eq!(choose(&sig, WINDOW_MS, &[open]), Some(open));
    assert_eq!(choose(&sig, WINDOW_MS + 1, &[open]), None);
    assert_eq!(choose(&other, 10, &[open]), None);
}

/// The fingerprint as first written, without skipping repeated shingles:
/// the signature must not change (replicas of either version group alike).
fn fingerprint_without_skipping(text: &str) -> Option<Signature> {
    let chars: Vec<char> = text
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect();
    if chars.len() < SHINGLE + MIN_SHINGLES - 1 {
        return None;
    }
    let mut sig = [u32::MAX; HASHES];
    let mut buf = [0u8; 4];
    for w in chars.windows(SHINGLE) {
        let mut bytes = Vec::new();
        for c in w {
            bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
        let base = fnv1a(&bytes);
        for (i, slot) in sig.iter_mut().enumerate() {
            let h = (mix(base ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 32) as u32;
            *slot = (*slot).min(h);
        }
    }
    Some(sig)
}

#[test]
fn skipping_repeated_shingles_changes_no_signature() {
    let mut rng = Rng(11);
    let mut texts: Vec<String> = vec![
        "x".repeat(400),
        "ab".repeat(300),
        "水".repeat(50),
        String::new(),
        "İSTANBUL Straße ÄÖÜ 水管爆裂 Water MAIN burst, ΣΊΣΥΦΟΣ".repeat(3),
    ];
    for _ in 0..300 {
        let n = 5 + rng.below(120);
        let alphabet = 1 + rng.below(26);
        texts.push(
            (0..n)
                .map(|_| char::from(b'a' + rng.below(alphabet) as u8))
                .collect(),
        );
        let words: Vec<&str> = (0..1 + rng.below(40))
            .map(|_| WORDS[rng.below(WORDS.len())])
            .collect();
        texts.push(words.join(" "));
    }
    for t in &texts {
        assert_eq!(fingerprint(t), fingerprint_without_skipping(t), "{t:?}");
    }
}
