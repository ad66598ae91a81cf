//! `intake start --help` as a user reads it: each flag's text under that
//! flag. A doc comment placed above the wrong field once put `--cache-mb`'s
//! text under `--dispatch` and left `--cache-mb` without any.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_intake");

/// The lines clap prints for `flag` in `help`: its own line and its
/// description, up to the next flag.
fn section<'a>(help: &'a str, flag: &str) -> Vec<&'a str> {
    let mut lines = help.lines();
    let starts = |l: &str| {
        let l = l.trim_start();
        l.starts_with('-')
    };
    let mut out = Vec::new();
    for line in lines.by_ref() {
        if starts(line) && line.split_whitespace().any(|w| w.trim_end_matches(',') == flag) {
            out.push(line);
            break;
        }
    }
    assert!(!out.is_empty(), "no {flag} in the help:\n{help}");
    out.extend(lines.take_while(|l| !starts(l)));
    out
}

#[test]
fn start_help_puts_each_text_under_its_own_flag() {
    let out = Command::new(BIN)
        .args(["start", "--help"])
        .output()
        .expect("run intake start --help");
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout);

    let cache = section(&help, "--cache-mb").join("\n");
    assert!(
        cache.contains("sled cache size"),
        "--cache-mb has no text:\n{cache}"
    );
    assert!(cache.contains("INTAKE_CACHE_MB"), "{cache}");

    let dispatch = section(&help, "--dispatch").join("\n");
    assert!(dispatch.contains("downstream dispatch system"), "{dispatch}");
    assert!(
        !dispatch.contains("cache"),
        "--dispatch shows another flag's text:\n{dispatch}"
    );
}
