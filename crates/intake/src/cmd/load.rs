//! `intake load`: offered load against a cluster, then proof that nothing
//! acknowledged was lost.
//!
//! Without `--rate` each of `--concurrency` workers submits back to back
//! (closed loop: the cluster's maximum). With `--rate` arrivals are scheduled
//! on a fixed clock whatever the cluster does (open loop), and latency is
//! measured from the scheduled arrival, so a stall shows in the numbers
//! instead of hiding (no coordinated omission).
//!
//! The last line of stdout is a contract read by scripts:
//! `acked=N rejected=N errors=N lost=N duplicates=N throughput=X/s p50_ms=X p99_ms=X max_ms=X`,
//! where the latencies are those of acknowledged requests. Lines before it
//! give acceptance per class (emergency, ordinary).

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use intake_core::{CategoryTable, DistrictTable};
use intake_proto::pb;
use intake_proto::pb::intake_service_client::IntakeServiceClient;
use rand::Rng;
use tokio::sync::{Mutex, Semaphore};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::client;

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Nodes to spread requests over: HOST:PORT,HOST:PORT,...
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// Arrivals per second (open loop). Absent: closed loop at full speed.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds to offer load.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Requests in flight at most (closed loop: workers).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Complaints per request; 1 uses unary Submit, more use SubmitBatch.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Deadline of each request in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    deadline_ms: u64,
    /// Bytes of complaint text.
    #[arg(long, default_value_t = 400)]
    text_bytes: usize,
    /// Write `<idempotency_key> <ticket_id>` per acknowledged submission.
    #[arg(long)]
    acked_out: Option<PathBuf>,
    /// Share of complaints (0..1) in emergency categories (flood, fire, ...);
    /// the rest are ordinary. Acceptance per class is printed.
    #[arg(long, default_value_t = 0.0)]
    emergency_share: f64,
    /// Attempts per request at most (retries honour the server's RetryInfo
    /// and reuse the idempotency keys), all within the deadline.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
}

/// Outcomes of one class of complaints.
#[derive(Default, Clone, Copy)]
struct ClassTally {
    offered: u64,
    acked: u64,
    rejected: u64,
    errors: u64,
}

#[derive(Default)]
struct Tally {
    acked: u64,
    rejected: u64,
    errors: u64,
    /// Arrivals dropped by this tool because --concurrency was all in flight.
    dropped: u64,
    /// Errors other than drops, by gRPC code.
    error_codes: std::collections::BTreeMap<String, u64>,
    /// The first message seen per code (refusals included).
    error_samples: std::collections::BTreeMap<String, String>,
    emergency: ClassTally,
    ordinary: ClassTally,
    /// Every ticket id each key was answered with.
    tickets: HashMap<String, Vec<String>>,
}

struct Shared {
    clients: Vec<IntakeServiceClient<Channel>>,
    /// Random lowercase letters that complaint texts are cut from.
    text_pool: String,
    emergencies: Vec<String>,
    ordinary: Vec<String>,
    districts: Vec<(String, u64)>,
    total_population: u64,
    args: LoadArgs,
    tally: Mutex<Tally>,
    latency: Mutex<Histogram<u64>>,
}

impl Shared {
    fn complaint(&self, rng: &mut impl Rng) -> pb::Complaint {
        let mut pick = rng.random_range(0..self.total_population.max(1));
        let mut district = self.districts[0].0.clone();
        for (code, pop) in &self.districts {
            if pick < *pop {
                district = code.clone();
                break;
            }
            pick -= pop;
        }
        // A random window of a pre-made random text: cheap enough that the
        // generator, which shares the machine, does not steal the cluster's CPU.
        let n = self.args.text_bytes.min(self.text_pool.len() / 2);
        let start = rng.random_range(0..=self.text_pool.len() - n);
        let text = self.text_pool[start..start + n].to_string();
        let emergency = rng.random_bool(self.args.emergency_share.clamp(0.0, 1.0));
        let pool = if emergency {
            &self.emergencies
        } else {
            &self.ordinary
        };
        let category = pool
            .get(rng.random_range(0..pool.len().max(1)))
            .cloned()
            .unwrap_or_else(|| "other".to_string());
        pb::Complaint {
            idempotency_key: uuid::Uuid::new_v4().to_string(),
            channel: ["phone", "app", "web"][rng.random_range(0..3)].to_string(),
            district_code: district,
            category,
            text,
            ..Default::default()
        }
    }

    /// Keeps the first message seen for each error code, for the report.
    async fn sample_error(&self, code: Code, message: &str) {
        let mut t = self.tally.lock().await;
        t.error_samples
            .entry(format!("{code:?}"))
            .or_insert_with(|| message.chars().take(200).collect());
    }

    fn is_emergency(&self, c: &pb::Complaint) -> bool {
        self.emergencies.contains(&c.category)
    }

    /// One request (unary or batch), retried on UNAVAILABLE or overload with
    /// the same keys until its deadline, honouring the server's RetryInfo.
    async fn one(&self, idx: usize, scheduled: Instant) {
        let items: Vec<pb::Complaint> = {
            let mut rng = rand::rng();
            (0..self.args.batch.max(1))
                .map(|_| self.complaint(&mut rng))
                .collect()
        };
        let deadline = scheduled + Duration::from_millis(self.args.deadline_ms);
        let mut client = self.clients[idx % self.clients.len()].clone();
        let mut results: Vec<Option<Result<String, Code>>> = vec![None; items.len()];
        let mut backoff = Duration::from_millis(20);
        let mut attempts = 0;
        loop {
            let pending: Vec<usize> = (0..items.len()).filter(|i| needs_retry(&results[*i])).collect();
            let now = Instant::now();
            if pending.is_empty() || now >= deadline || attempts >= self.args.max_attempts.max(1) {
                break;
            }
            attempts += 1;
            let mut retry_after = backoff;
            if self.args.batch <= 1 {
                let mut req = tonic::Request::new(pb::SubmitRequest {
                    complaint: Some(items[0].clone()),
                });
                req.set_timeout(deadline - now);
                results[0] = Some(match client.submit(req).await {
                    Ok(r) => Ok(r.into_inner().ticket_id),
                    Err(s) => {
                        if let Some(d) = s.get_error_details().retry_info().and_then(|r| r.retry_delay) {
                            retry_after = d;
                        }
                        self.sample_error(s.code(), s.message()).await;
                        Err(s.code())
                    }
                });
            } else {
                let batch: Vec<pb::Complaint> = pending.iter().map(|i| items[*i].clone()).collect();
                let mut req = tonic::Request::new(pb::SubmitBatchRequest { complaints: batch });
                req.set_timeout(deadline - now);
                match client.submit_batch(req).await {
                    Ok(r) => {
                        for (i, res) in pending.iter().zip(r.into_inner().results) {
                            results[*i] = Some(match res.outcome {
                                Some(pb::submit_result::Outcome::Accepted(ok)) => Ok(ok.ticket_id),
                                Some(pb::submit_result::Outcome::Error(e)) => {
                                    if e.retry_after_ms > 0 {
                                        retry_after = Duration::from_millis(e.retry_after_ms);
                                    }
                                    let code = Code::from_i32(e.code);
                                    self.sample_error(code, &e.message).await;
                                    Err(code)
                                }
                                None => Err(Code::Internal),
                            });
                        }
                    }
                    Err(s) => {
                        for i in &pending {
                            results[*i] = Some(Err(s.code()));
                        }
                        self.sample_error(s.code(), s.message()).await;
                        {}
                    }
                }
            }
            if !results.iter().any(needs_retry) || Instant::now() + retry_after >= deadline {
                break;
            }
            tokio::time::sleep(retry_after).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
        // Latency is that of acknowledgements, from the scheduled arrival:
        // fast refusals would otherwise flatter the percentiles.
        let elapsed_us = scheduled.elapsed().as_micros() as u64;
        if results.iter().any(|r| matches!(r, Some(Ok(_)))) {
            let mut h = self.latency.lock().await;
            let _ = h.record(elapsed_us.max(1));
        }
        let mut t = self.tally.lock().await;
        for (item, r) in items.iter().zip(results) {
            let emergency = self.is_emergency(item);
            let class = if emergency {
                &mut t.emergency
            } else {
                &mut t.ordinary
            };
            class.offered += 1;
            match r {
                Some(Ok(ticket)) => {
                    class.acked += 1;
                    t.acked += 1;
                    t.tickets
                        .entry(item.idempotency_key.clone())
                        .or_default()
                        .push(ticket);
                }
                Some(Err(Code::ResourceExhausted)) => {
                    class.rejected += 1;
                    t.rejected += 1;
                }
                other => {
                    class.errors += 1;
                    t.errors += 1;
                    // None: this tool got to the request only after its
                    // deadline (it is starved of CPU itself).
                    let code = match other {
                        Some(Err(c)) => format!("{c:?}"),
                        _ => "NotSent".to_string(),
                    };
                    *t.error_codes.entry(code).or_default() += 1;
                }
            }
        }
    }
}

fn needs_retry(r: &Option<Result<String, Code>>) -> bool {
    match r {
        None => true,
        Some(Ok(_)) => false,
        Some(Err(c)) => matches!(
            c,
            Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded
        ),
    }
}

pub async fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let mut clients = Vec::new();
    for e in &args.endpoints {
        clients.push(
            client::intake(e)
                .await?
                .max_decoding_message_size(16 * 1024 * 1024),
        );
    }
    let categories = CategoryTable::default();
    let emergencies: Vec<String> = categories.emergencies().map(String::from).collect();
    let ordinary: Vec<String> = categories.ordinary().map(String::from).collect();
    let table = DistrictTable::beijing();
    let districts: Vec<(String, u64)> = table.iter().map(|d| (d.code.clone(), d.population)).collect();
    let total_population = districts.iter().map(|d| d.1).sum();
    let duration = Duration::from_secs_f64(args.duration.max(0.1));
    let concurrency = args.concurrency.max(1);
    let rate = args.rate;
    let text_pool: String = {
        let mut rng = rand::rng();
        (0..(2 * args.text_bytes).max(4096))
            .map(|_| rng.random_range(b'a'..=b'z') as char)
            .collect()
    };
    let shared = Arc::new(Shared {
        clients,
        text_pool,
        emergencies,
        ordinary,
        districts,
        total_population,
        args,
        tally: Mutex::new(Tally::default()),
        latency: Mutex::new(Histogram::new_with_bounds(1, 120_000_000, 3).context("histogram")?),
    });

    let start = Instant::now();
    let end = start + duration;
    match rate {
        None => {
            let mut workers = Vec::new();
            for w in 0..concurrency {
                let s = shared.clone();
                workers.push(tokio::spawn(async move {
                    let mut i = w;
                    while Instant::now() < end {
                        s.one(i, Instant::now()).await;
                        i += concurrency;
                    }
                }));
            }
            for w in workers {
                let _ = w.await;
            }
        }
        Some(rate) => {
            // In-flight requests are bounded; an arrival that finds no room
            // is counted as an error rather than queued without bound.
            let slots = Arc::new(Semaphore::new(concurrency));
            let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
            let mut tasks = tokio::task::JoinSet::new();
            let mut n: u64 = 0;
            loop {
                let scheduled = start + interval.mul_f64(n as f64);
                if scheduled >= end {
                    break;
                }
                tokio::time::sleep_until(scheduled.into()).await;
                match slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let s = shared.clone();
                        let idx = n as usize;
                        tasks.spawn(async move {
                            s.one(idx, scheduled).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        let mut t = shared.tally.lock().await;
                        t.errors += shared.args.batch.max(1) as u64;
                        t.dropped += shared.args.batch.max(1) as u64;
                    }
                }
                n += 1;
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
        }
    }
    let elapsed = start.elapsed();

    let tally = std::mem::take(&mut *shared.tally.lock().await);
    let (lost, duplicates) = verify(&shared.clients, &tally).await;
    if let Some(path) = &shared.args.acked_out {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        for (key, tickets) in &tally.tickets {
            for t in tickets {
                writeln!(f, "{key} {t}")?;
            }
        }
        f.flush()?;
    }
    let h = shared.latency.lock().await;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    for (name, c) in [("emergency", tally.emergency), ("ordinary", tally.ordinary)] {
        if c.offered > 0 {
            println!(
                "class={name} offered={} acked={} rejected={} errors={} acceptance={:.2}%",
                c.offered,
                c.acked,
                c.rejected,
                c.errors,
                100.0 * c.acked as f64 / c.offered as f64
            );
        }
    }
    if !tally.error_codes.is_empty() {
        let codes: Vec<String> = tally
            .error_codes
            .iter()
            .map(|(c, n)| format!("{c}:{n}"))
            .collect();
        println!("errors_by_code={}", codes.join(","));
        for (code, message) in &tally.error_samples {
            if tally.error_codes.contains_key(code) {
                println!("error_sample code={code} message={message:?}");
            }
        }
    }
    if tally.dropped > 0 {
        println!(
            "client_dropped={} (arrivals found all --concurrency slots busy; counted as errors)",
            tally.dropped
        );
    }
    println!(
        "acked={} rejected={} errors={} lost={} duplicates={} throughput={:.0}/s p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        tally.acked,
        tally.rejected,
        tally.errors,
        lost,
        duplicates,
        tally.acked as f64 / elapsed.as_secs_f64(),
        ms(0.5),
        ms(0.99),
        h.max() as f64 / 1000.0,
    );
    Ok(if lost == 0 && duplicates == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Every acknowledged key must resolve, through the cluster, to a ticket that
/// carries that key; a key answered with two different ids is a duplicate.
async fn verify(clients: &[IntakeServiceClient<Channel>], tally: &Tally) -> (u64, u64) {
    let mut lost = 0;
    let mut duplicates = 0;
    let mut checks = Vec::new();
    for (key, tickets) in &tally.tickets {
        let mut distinct = tickets.clone();
        distinct.sort();
        distinct.dedup();
        if distinct.len() > 1 {
            duplicates += 1;
        }
        checks.push((key.clone(), distinct[0].clone()));
    }
    let sem = Arc::new(Semaphore::new(64));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (key, ticket)) in checks.into_iter().enumerate() {
        let mut client = clients[i % clients.len()].clone();
        let sem = sem.clone();
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            for _ in 0..5 {
                let req = pb::GetTicketRequest {
                    ticket_id: ticket.clone(),
                    local: false,
                };
                match client.get_ticket(req).await {
                    Ok(r) => {
                        let found = r
                            .into_inner()
                            .ticket
                            .and_then(|t| t.complaint)
                            .map(|c| c.idempotency_key);
                        return found.as_deref() == Some(key.as_str());
                    }
                    Err(s) if s.code() == Code::NotFound => return false,
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
            false
        });
    }
    while let Some(ok) = tasks.join_next().await {
        if !matches!(ok, Ok(true)) {
            lost += 1;
        }
    }
    (lost, duplicates)
}
