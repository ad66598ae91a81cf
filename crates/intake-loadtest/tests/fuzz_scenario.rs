//! Property tests (fuzzing on the stable toolchain) of scenario TOML
//! parsing: any text, and the shipped scenarios with one value swapped for
//! an odd one, a line dropped or the end cut off, is a scenario or an
//! error naming its line, never a panic. A scenario that parses can be
//! scaled and timed. 256 cases per property; `PROPTEST_CASES=N` for more.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

use intake_core::DistrictTable;
use intake_loadtest::scenario::parse;
use proptest::prelude::*;

const SHIPPED: [&str; 5] = [
    include_str!("../../../loadtests/scenarios/rainstorm.toml"),
    include_str!("../../../loadtests/scenarios/epidemic.toml"),
    include_str!("../../../loadtests/scenarios/nyc-record-day.toml"),
    include_str!("../../../loadtests/scenarios/smoke.toml"),
    include_str!("../../../loadtests/scenarios/steady.toml"),
];

fn odd_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        Just("nan".to_string()),
        Just("inf".to_string()),
        Just("-inf".to_string()),
        Just("1e308".to_string()),
        Just("-0.0".to_string()),
        Just("0".to_string()),
        Just("18446744073709551615".to_string()),
        ".{0,12}".prop_map(|s| format!("{s:?}")),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("[1e308, -1]".to_string()),
    ]
}

/// A shipped scenario with the value of one `key = value` line replaced,
/// one line dropped, and the text cut at a character boundary.
fn damaged_scenario() -> impl Strategy<Value = String> {
    (
        prop::sample::select(SHIPPED.to_vec()),
        any::<prop::sample::Index>(),
        odd_value(),
        prop::option::of(any::<prop::sample::Index>()),
        prop::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(|(text, at, value, drop, cut)| {
            let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
            let values: Vec<usize> = (0..lines.len()).filter(|i| lines[*i].contains(" = ")).collect();
            if !values.is_empty() {
                let i = values[at.index(values.len())];
                let key = lines[i].split(" = ").next().unwrap_or_default().to_string();
                lines[i] = format!("{key} = {value}");
            }
            if let Some(d) = drop.filter(|_| !lines.is_empty()) {
                let i = d.index(lines.len());
                lines.remove(i);
            }
            let mut out = lines.join("\n");
            if let Some(c) = cut {
                let bounds: Vec<usize> = out.char_indices().map(|(i, _)| i).chain([out.len()]).collect();
                out.truncate(bounds[c.index(bounds.len())]);
            }
            out
        })
}

fn check(text: &str, factor: f64) {
    if let Ok(s) = parse(text, "fuzz.toml", &DistrictTable::beijing()) {
        let _ = s.duration_s();
        let _ = s.scaled(factor).duration_s();
    }
}

proptest! {
    #[test]
    fn any_text_is_a_scenario_or_an_error(text in any::<String>(), factor in 0.001f64..1000.0) {
        check(&text, factor);
    }

    #[test]
    fn damaged_shipped_scenarios_are_scenarios_or_errors(text in damaged_scenario(), factor in 0.001f64..1000.0) {
        check(&text, factor);
    }
}
