//! Response cache benchmarks (bench/README.md), in one process on 127.0.0.1:
//! a coordinator's cache (`ResponseCache` over `cache.db`, served by
//! `CacheService` over gRPC) filled with `--entries` answers (default
//! 1,000,000), a sim-server answering at once, and a worker's gateway that
//! reaches the cache as a worker does (`CoordinatorCache`, over gRPC).
//!
//! (a) latency, one call at a time: 2,000 distinct calls with the cache off
//!     (the gateway's own path to a provider that answers at once), the same
//!     calls recorded, then asked again by another run of the same seed (all
//!     hits): p50 and p99 of each and the difference;
//! (b) hits per second through the one gateway, 64 callers, against the
//!     same calls with the cache off;
//! (c) the database's size on disk against the request and answer bytes it
//!     holds.
//!
//! Run: cargo run --release -p flotilla-coordinator --example cache_bench [-- --entries 1000000]

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_coordinator::cache::db::{self, AnswerRow};
use flotilla_coordinator::cache::service::CacheApi;
use flotilla_coordinator::cache::ResponseCache;
use flotilla_gateway::cache::RunCache;
use flotilla_gateway::providers::parse_providers;
use flotilla_gateway::sim::server::SimServerSettings;
use flotilla_gateway::{Gateway, GatewayState, SpendGate};
use flotilla_shared::cache::{CacheMode, CachePolicy};
use flotilla_shared::calls::CacheUse;
use flotilla_wire::proto::cache_service_server::CacheServiceServer;

const DISTINCT: usize = 2_000;

fn arg(name: &str, default: u64) -> u64 {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

/// A chat request of about 350 bytes, distinct for each `n`.
fn body(n: usize) -> String {
    format!(
        r#"{{"model": "up/sim/echo", "max_tokens": 64, "temperature": 0.7, "messages": [{{"role": "system", "content": "You are a careful assistant who answers in one short sentence."}}, {{"role": "user", "content": "Question {n}: which of the two offers on the table would you accept, and why? Answer briefly."}}]}}"#
    )
}

/// Fills the cache with `count` answers the benchmark never asks for, of
/// the size of the ones it does (a 350-byte request, a 600-byte answer).
fn fill(root: &std::path::Path, count: u64) {
    let mut connection = db::open(root).unwrap();
    let started = Instant::now();
    let mut n = 0u64;
    while n < count {
        let rows: Vec<AnswerRow> = (n..(n + 20_000).min(count))
            .map(|i| {
                let mut key = [0u8; 32];
                key[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
                key[8..16].copy_from_slice(&i.to_le_bytes());
                key[16] = 0xfe;
                AnswerRow {
                    key,
                    endpoint: "/chat/completions".into(),
                    provider: "up".into(),
                    model: "sim/echo".into(),
                    seed: i % 10,
                    occurrence: 0,
                    request: body(1_000_000 + i as usize).into_bytes(),
                    answer: format!(
                        r#"{{"id":"chatcmpl-{i}","object":"chat.completion","created":1796400000,"model":"sim/echo","choices":[{{"index":0,"message":{{"role":"assistant","content":"Question {i}: I would take the second offer, since it pays more over the year and asks for less of my time; the first one is a trap.","refusal":null}},"logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":88,"completion_tokens":31,"total_tokens":119,"prompt_tokens_details":{{"cached_tokens":0}}}},"system_fingerprint":"fp_{i:08x}"}}"#
                    )
                    .into_bytes(),
                    input_tokens: 88,
                    output_tokens: 31,
                    cached_input_tokens: 0,
                    cost_nanos: 150_000,
                    experiment: "filler".into(),
                    run: format!("var-001-run-{:03}", i % 10 + 1),
                    recorded_at_ms: 1_796_400_000_000,
                    replaces_before_ms: 0,
                }
            })
            .collect();
        db::insert(&mut connection, &rows).unwrap();
        n += rows.len() as u64;
    }
    eprintln!(
        "filled {count} answers in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

async fn serve_cache(cache: Arc<ResponseCache>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CacheServiceServer::new(CacheApi { cache }))
            .serve_with_incoming(incoming),
    );
    address
}

async fn sim_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (app, _) = flotilla_gateway::sim_app(SimServerSettings::default());
    tokio::spawn(async move { axum::serve(flotilla_gateway::without_nagle(listener), app).await });
    address
}

fn open_run(gateway: &GatewayState, mode: CacheMode, name: &str) -> String {
    gateway
        .runs
        .open(
            name.into(),
            7,
            SpendGate::Unbounded,
            Default::default(),
            RunCache::new(
                CachePolicy {
                    mode,
                    max_age_ms: None,
                },
                "bench".into(),
                name.into(),
            ),
            Default::default(),
        )
        .unwrap()
}

async fn call(client: &reqwest::Client, url: &str, token: &str, body: String) -> Duration {
    let started = Instant::now();
    let response = client
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("answered");
    assert!(response.status().is_success(), "{}", response.status());
    response.bytes().await.unwrap();
    started.elapsed()
}

/// Each of the distinct calls once, one at a time, in a run of its own; latencies sorted.
async fn one_at_a_time(
    gateway: &Gateway,
    mode: CacheMode,
    name: &str,
) -> (Vec<Duration>, Vec<CacheUse>) {
    let client = reqwest::Client::new();
    let url = format!("http://{}/v1/chat/completions", gateway.address);
    let token = open_run(&gateway.state, mode, name);
    let mut latencies = Vec::with_capacity(DISTINCT);
    for n in 0..DISTINCT {
        latencies.push(call(&client, &url, &token, body(n)).await);
    }
    let (calls, _) = gateway.state.runs.close(&token);
    latencies.sort();
    (latencies, calls.iter().map(|c| c.cache).collect())
}

/// `callers` runs, each asking the distinct calls in order (from the
/// start again when done) for `seconds`; calls answered per second.
async fn flat_out(
    gateway: &Gateway,
    mode: CacheMode,
    callers: usize,
    seconds: f64,
) -> (f64, Vec<CacheUse>) {
    let client = reqwest::Client::new();
    let url = format!("http://{}/v1/chat/completions", gateway.address);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let (client, url) = (client.clone(), url.clone());
        let state = gateway.state.clone();
        let name = format!("caller-{caller}");
        let token = open_run(&gateway.state, mode, &name);
        tasks.push(tokio::spawn(async move {
            let mut answered = 0usize;
            let mut token = token;
            let mut uses = Vec::new();
            'calls: loop {
                for n in 0..DISTINCT {
                    if Instant::now() >= deadline {
                        break 'calls;
                    }
                    call(&client, &url, &token, body(n)).await;
                    answered += 1;
                }
                // A new run of the same seed asks the same calls again.
                let (calls, _) = state.runs.close(&token);
                uses.extend(calls.iter().map(|c| c.cache));
                token = open_run(&state, mode, &name);
            }
            let (calls, _) = state.runs.close(&token);
            uses.extend(calls.iter().map(|c| c.cache));
            (answered, uses)
        }));
    }
    let (mut total, mut uses) = (0, Vec::new());
    for task in tasks {
        let (answered, used) = task.await.unwrap();
        total += answered;
        uses.extend(used);
    }
    (total as f64 / seconds, uses)
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0
}

fn share_of(uses: &[CacheUse], wanted: CacheUse) -> f64 {
    uses.iter().filter(|u| **u == wanted).count() as f64 / uses.len().max(1) as f64
}

#[tokio::main]
async fn main() {
    let entries = arg("--entries", 1_000_000);
    let seconds = arg("--seconds", 10) as f64;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fill(root, entries.saturating_sub(DISTINCT as u64));
    let cache = ResponseCache::open(root).unwrap();
    let cache_address = serve_cache(cache).await;
    let sim = sim_server().await;
    let providers = parse_providers(
        &format!(
            "providers:\n  - {{name: up, api: openai, base_url: 'http://{sim}/v1', prices: {{'sim/echo': {{input: 1, output: 2}}}}}}\n"
        ),
        "bench",
        |_| None,
    )
    .unwrap();
    let link = flotilla_worker::CoordinatorLink::new(&cache_address, "bench", &Default::default())
        .unwrap();
    let store = flotilla_worker::answer_cache::CoordinatorCache::new(&link, "bench".into());
    let gateway = Gateway::start(providers, Some(Arc::new(store)))
        .await
        .unwrap();

    // Warm connections, then (a).
    one_at_a_time(&gateway, CacheMode::Off, "warm").await;
    let (own, _) = one_at_a_time(&gateway, CacheMode::Off, "own-path").await;
    let (_, recorded) = one_at_a_time(&gateway, CacheMode::ReadWrite, "record").await;
    assert!(recorded.iter().all(|u| *u == CacheUse::Miss));
    tokio::time::sleep(Duration::from_secs(1)).await; // the records land
    let (hits, used) = one_at_a_time(&gateway, CacheMode::ReadWrite, "hits").await;
    assert!(
        used.iter().all(|u| *u == CacheUse::Hit),
        "every call of the second run is a hit"
    );
    let stored = db::open_read_only(root).unwrap();
    let (count, bytes): (i64, i64) = stored
        .query_row(
            "SELECT COUNT(*), SUM(LENGTH(request) + LENGTH(answer)) FROM answers",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    println!("| measurement | figure | baseline (same run) | ratio / difference |");
    println!("| --- | --- | --- | --- |");
    for (name, q) in [("p50", 0.5), ("p99", 0.99)] {
        let (h, o) = (percentile(&hits, q), percentile(&own, q));
        println!(
            "| a hit's latency {name}, one call at a time, cache of {count} answers | {h:.3} ms | the gateway's own path (cache off, provider answering at once): {o:.3} ms | added {:.3} ms |",
            h - o
        );
    }

    // (b)
    let (off_rate, _) = flat_out(&gateway, CacheMode::Off, 64, seconds).await;
    let (hit_rate, uses) = flat_out(&gateway, CacheMode::ReadWrite, 64, seconds).await;
    println!(
        "| hits per second through one gateway, 64 callers | {hit_rate:.0} /s ({:.1} % hits) | the same calls, cache off, provider answering at once: {off_rate:.0} /s | {:.2} × |",
        share_of(&uses, CacheUse::Hit) * 100.0,
        hit_rate / off_rate
    );

    // (c)
    stored
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .ok();
    drop(stored);
    let file_bytes: u64 = ["cache.db", "cache.db-wal"]
        .iter()
        .filter_map(|name| std::fs::metadata(root.join(name)).ok())
        .map(|m| m.len())
        .sum();
    println!(
        "| cache.db on disk, {count} answers | {:.1} MiB | request and answer bytes: {:.1} MiB | {:.2} × |",
        file_bytes as f64 / 1048576.0,
        bytes as f64 / 1048576.0,
        file_bytes as f64 / bytes as f64
    );
}
