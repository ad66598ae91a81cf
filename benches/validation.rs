//! Door-side validation cost (`validate_complaint`) for a typical hotline
//! complaint and for one at every size limit, with the Beijing district table:
//! it runs on every request before anything is proposed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use intake_core::{Complaint, DistrictTable, Limits, Location, validate_complaint};

/// Every field at its limit, while the whole stays under the complaint bound.
fn maximal(l: &Limits) -> Complaint {
    Complaint {
        idempotency_key: "k".repeat(l.max_key_bytes),
        channel: "c".repeat(l.max_short_field_bytes),
        district: "110105".into(),
        category: "noise".into(),
        text: "文".repeat(l.max_text_bytes / 3),
        location: Some(Location {
            lat: 39.9,
            lon: 116.4,
            address: "a".repeat(l.max_address_bytes),
        }),
        contact: "1".repeat(l.max_contact_bytes),
        reported_at: Some(1_700_000_000_000),
        attachments: (0..l.max_attachments)
            .map(|i| format!("https://files.example/{i}/{}", "p".repeat(400)))
            .collect(),
    }
}

fn bench_validation(c: &mut Criterion) {
    let districts = DistrictTable::beijing();
    let limits = Limits::default();
    let (t, m) = (intake_benches::complaint(0), maximal(&limits));
    assert!(validate_complaint(&t, &districts, &limits).is_ok());
    let maximal_ok = validate_complaint(&m, &districts, &limits).is_ok();
    eprintln!(
        "maximal complaint valid: {maximal_ok}, {} bytes",
        m.approx_bytes()
    );

    let mut group = c.benchmark_group("validation");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    group.bench_function("typical", |b| {
        b.iter(|| validate_complaint(black_box(&t), &districts, &limits))
    });
    group.bench_function("maximal", |b| {
        b.iter(|| validate_complaint(black_box(&m), &districts, &limits))
    });
    group.finish();
}

criterion_group!(benches, bench_validation);
criterion_main!(benches);
