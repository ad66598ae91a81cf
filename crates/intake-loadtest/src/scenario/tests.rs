use super::*;

fn table() -> DistrictTable {
    DistrictTable::beijing()
}

fn parse_ok(text: &str) -> Scenario {
    match parse(text, "t.toml", &table()) {
        Ok(s) => s,
        Err(e) => panic!("expected to parse, got: {e}"),
    }
}

/// The error message of a bad file; it must name `line`.
fn parse_err(text: &str, line: usize) -> String {
    let e = parse(text, "t.toml", &table())
        .expect_err("expected an error")
        .to_string();
    assert!(e.contains(&format!("line {line}:")), "wanted line {line} in: {e}");
    e
}

const GOOD: &str = r#"
name = "good"
description = "two phases and every kind of fault"

[defaults]
concurrency = 64
channel_mix = { phone = 0.6, app = 0.3, web = 0.1 }
emergency_share = 0.05
text_bytes = [100, 600]

[[phase]]
name = "warm"
duration_s = 5
rate = 100

[[phase]]
name = "flood"
duration_s = 10.5
rate = "max"
total = 1000
district_weights = { "110109" = 50.0, "110111" = 50.0 }
category_mix = { flood = 0.5, waterlogging = 0.2 }
batch_share = 0.25
batch_size = 20

[[fault]]
at_s = 6
action = "kill_leader"
district = "110109"

[[fault]]
at_s = 8
action = "restart_node"
node = "killed"

[[fault]]
at_s = 9
action = "cut_node"
node = 2

[[fault]]
at_s = 10
action = "heal_node"
node = 2

[[fault]]
at_s = 11
action = "stall_sink"
for_s = 2

[[fault]]
at_s = 12
action = "stop_sink"

[[fault]]
at_s = 13
action = "start_sink"

[[fault]]
at_s = 14
action = "rolling_restart"
interval_s = 1
"#;

#[test]
fn good_file_parses_with_defaults_inherited() {
    let s = parse_ok(GOOD);
    assert_eq!(s.name, "good");
    assert_eq!(s.phases.len(), 2);
    assert_eq!(s.phases[0].rate, Rate::PerSecond(100.0));
    assert_eq!(s.phases[0].concurrency, 64);
    assert_eq!(s.phases[0].mix.text_bytes, (100, 600));
    assert_eq!(s.phases[0].mix.emergency_share, 0.05);
    assert_eq!(s.phases[1].rate, Rate::Max);
    assert_eq!(s.phases[1].total, Some(1000));
    assert_eq!(s.phases[1].mix.district_weights.get("110109"), Some(&50.0));
    assert_eq!(s.phases[1].mix.batch_size, 20);
    assert_eq!(s.phases[1].mix.channel_mix.len(), 3);
    assert_eq!(s.duration_s(), 15.5);
    assert_eq!(s.faults.len(), 8);
    assert_eq!(
        s.faults[0].action,
        FaultAction::KillLeader {
            district: "110109".into()
        }
    );
    assert_eq!(
        s.faults[1].action,
        FaultAction::RestartNode {
            node: NodeRef::Killed
        }
    );
    assert_eq!(s.faults[4].action, FaultAction::StallSink { for_s: 2.0 });
    assert_eq!(
        s.faults[7].action,
        FaultAction::RollingRestart { interval_s: 1.0 }
    );
}

#[test]
fn scale_multiplies_rates_and_totals() {
    let s = parse_ok(GOOD).scaled(0.1);
    assert_eq!(s.phases[0].rate, Rate::PerSecond(10.0));
    assert_eq!(s.phases[1].total, Some(100));
    assert_eq!(s.phases[1].duration_s, 10.5);
}

#[test]
fn category_mix_may_be_the_emergency_share() {
    let s = parse_ok(
        "name = \"x\"\ndescription = \"d\"\n[[phase]]\nname = \"p\"\nduration_s = 1\nrate = 5\ncategory_mix = 0.3\n",
    );
    assert_eq!(s.phases[0].mix.emergency_share, 0.3);
}

#[test]
fn every_scenario_file_in_the_repo_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../loadtests/scenarios");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            load(&p, &table()).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 5, "expected the five scenarios in {}", dir.display());
}

const HEAD: &str = "name = \"bad\"\ndescription = \"d\"\n[[phase]]\nname = \"p\"\nduration_s = 10\n";

#[test]
fn unknown_field_names_its_line() {
    // Lines 1-5 are HEAD.
    let e = parse_err(&format!("{HEAD}rate = 5\nrat = 7\n"), 7);
    assert!(e.contains("rat"), "{e}");
}

#[test]
fn syntax_error_names_its_line() {
    parse_err(&format!("{HEAD}rate = 5\nbatch_share = = 1\n"), 7);
}

#[test]
fn unknown_action_names_its_line() {
    let e = parse_err(
        &format!("{HEAD}rate = 5\n\n[[fault]]\nat_s = 1\naction = \"explode\"\n"),
        10,
    );
    assert!(e.contains("unknown fault action \"explode\""), "{e}");
}

#[test]
fn negative_rate_names_its_line() {
    let e = parse_err(&format!("{HEAD}rate = -5\n"), 6);
    assert!(e.contains("rate"), "{e}");
}

#[test]
fn rate_word_other_than_max_is_refused() {
    parse_err(&format!("{HEAD}rate = \"fast\"\n"), 6);
}

#[test]
fn weight_for_unknown_district_names_its_line() {
    let e = parse_err(
        &format!("{HEAD}rate = 5\ndistrict_weights = {{ \"999999\" = 2.0 }}\n"),
        7,
    );
    assert!(e.contains("999999"), "{e}");
}

#[test]
fn fault_after_the_end_names_its_line() {
    let e = parse_err(
        &format!("{HEAD}rate = 5\n\n[[fault]]\naction = \"stop_sink\"\nat_s = 11\n"),
        10,
    );
    assert!(e.contains("after the end"), "{e}");
}

#[test]
fn share_out_of_range_names_its_line() {
    parse_err(&format!("{HEAD}rate = 5\nbatch_share = 1.5\n"), 7);
    parse_err(&format!("{HEAD}rate = 5\nemergency_share = -0.1\n"), 7);
    parse_err(&format!("{HEAD}rate = 5\nchannel_mix = {{ phone = 2.0 }}\n"), 7);
}

#[test]
fn field_of_another_action_names_its_line() {
    let e = parse_err(
        &format!("{HEAD}rate = 5\n\n[[fault]]\nat_s = 1\naction = \"stop_sink\"\nnode = 2\n"),
        11,
    );
    assert!(e.contains("`node` does not apply"), "{e}");
}

#[test]
fn kill_leader_of_unknown_district_names_its_line() {
    parse_err(
        &format!("{HEAD}rate = 5\n\n[[fault]]\nat_s = 1\naction = \"kill_leader\"\ndistrict = \"123\"\n"),
        11,
    );
}

#[test]
fn missing_rate_names_the_phase() {
    // The phase table's span starts at its first key or header; either is
    // within the phase, which is what a reader needs.
    let e = parse(HEAD, "t.toml", &table()).expect_err("no rate").to_string();
    assert!(e.contains("needs a `rate`") && e.contains("line "), "{e}");
}
