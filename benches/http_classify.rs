//! What the HTTP door spends on a submission before admission can refuse
//! it, three ways: the typed parse the door does (the body parsed once into
//! `ComplaintIn`, its category looked up), a byte scan for the category that
//! would precede the parse (the cheapest conceivable classification; not in
//! the door: it reads JSON a second way), and what the door did before it
//! admitted early (parse, conversion to protobuf and the node's conversion
//! and validation, all before the service's `admit_call`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // benches: a failure is the answer

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use intake_core::{CategoryTable, DistrictTable, Limits, Priority, validate_complaint};
use intake_http::json::ComplaintIn;

/// A body as `intake load --protocol http` sends it (400 bytes of text).
fn body() -> Vec<u8> {
    serde_json::json!({
        "idempotency_key": "load-3-0000001234-5c1f",
        "channel": "phone",
        "district_code": "110105",
        "category": "noise",
        "text": "x".repeat(400),
        "contact": "13800000000",
        "location": { "lat": 39.909, "lon": 116.461, "address": "Guomao" },
    })
    .to_string()
    .into_bytes()
}

/// The category's value found by scanning for `"category"` (no escapes).
fn scan_category(body: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = b"\"category\"";
    let at = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = &body[at..];
    let colon = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = rest.get(colon..)?.strip_prefix(b":")?;
    let open = rest.iter().position(|b| *b == b'"')? + 1;
    let len = rest[open..].iter().position(|b| *b == b'"')?;
    Some(&rest[open..open + len])
}

fn bench_classify(c: &mut Criterion) {
    let categories = CategoryTable::default();
    let districts = DistrictTable::beijing();
    let limits = Limits::default();
    let body = body();
    assert_eq!(scan_category(&body), Some(&b"noise"[..]));

    let mut group = c.benchmark_group("http_classify");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    group.bench_function("typed_parse", |b| {
        b.iter(|| {
            let c: ComplaintIn = intake_http::body::parse(black_box(&body)).unwrap();
            categories.priority(&c.category) == Priority::Emergency
        })
    });
    group.bench_function("byte_scan", |b| {
        b.iter(|| {
            let cat = scan_category(black_box(&body)).unwrap();
            categories.priority(std::str::from_utf8(cat).unwrap()) == Priority::Emergency
        })
    });
    group.bench_function("parse_convert_validate", |b| {
        b.iter(|| {
            let c: ComplaintIn = intake_http::body::parse(black_box(&body)).unwrap();
            let c = intake_server::convert::complaint_from_pb(c.into_pb("").unwrap());
            validate_complaint(&c, &districts, &limits).is_ok()
                && categories.priority(&c.category) == Priority::Ordinary
        })
    });
    group.finish();
}

criterion_group!(benches, bench_classify);
criterion_main!(benches);
