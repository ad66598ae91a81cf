//! Ticket-id codec cost: formatting happens on every acknowledgement,
//! parsing on every status lookup read aloud over the phone.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use intake_core::TicketId;

fn bench_ticket_id(c: &mut Criterion) {
    let id = TicketId::new(7, 1_234_567, 42);
    let text = id.to_string();
    assert_eq!(text.parse::<TicketId>().unwrap(), id);
    let lower = text.to_lowercase();

    let mut group = c.benchmark_group("ticket_id");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    group.bench_function("format", |b| b.iter(|| black_box(&id).to_string()));
    group.bench_function("parse", |b| {
        b.iter(|| black_box(text.as_str()).parse::<TicketId>())
    });
    group.bench_function("parse_lowercase", |b| {
        b.iter(|| black_box(lower.as_str()).parse::<TicketId>())
    });
    group.finish();
}

criterion_group!(benches, bench_ticket_id);
criterion_main!(benches);
