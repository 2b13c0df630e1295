//! Gateway benchmarks (bench/README.md), all in one process on 127.0.0.1:
//!
//! (a) overhead: the same chat calls at 500 calls/s sent straight to a sim-server and through a
//!     worker's gateway to that sim-server (a provider of its providers list), latency p50/p99 of
//!     each and the difference; then throughput through the gateway at zero sim latency;
//! (b) rate limits: one gateway declaring 600 rpm to a sim-server enforcing 600 rpm, callers
//!     sending as fast as they can for `--limit-seconds` (default 120): the share of the limit used
//!     and the share of calls the sim-server answered 429;
//! (c) the same calls streamed and unstreamed, and what they cost.
//!
//! Run: cargo run --release -p flotilla-gateway --example gateway_bench [-- --limit-seconds 120]

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_gateway::limits::Limits;
use flotilla_gateway::providers::parse_providers;
use flotilla_gateway::sim::server::SimServerSettings;
use flotilla_gateway::{Gateway, GatewayState, SpendGate};

async fn sim_server(settings: SimServerSettings) -> (String, Arc<GatewayState>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (app, state) = flotilla_gateway::sim_app(settings);
    tokio::spawn(async move { axum::serve(flotilla_gateway::without_nagle(listener), app).await });
    (address, state)
}

async fn gateway_to(sim: &str, limits: &str) -> (Gateway, String) {
    let providers = parse_providers(
        &format!(
            "providers:\n  - {{name: up, api: openai, base_url: 'http://{sim}/v1', limits: {{{limits}}}, prices: {{'sim/echo': {{input: 1, output: 2}}}}}}\n"
        ),
        "bench",
        |_| None,
    )
    .unwrap();
    let gateway = Gateway::start(providers, None).await.unwrap();
    let token = gateway
        .state
        .runs
        .open(
            "bench".into(),
            1,
            SpendGate::Unbounded,
            Default::default(),
            Default::default(),
            Default::default(),
        )
        .unwrap();
    (gateway, token)
}

fn body(stream: bool) -> String {
    format!(
        r#"{{"model": "MODEL", "stream": {stream}, "messages": [{{"role": "user", "content": "The quick brown fox jumps over the lazy dog."}}]}}"#
    )
}

async fn call(client: &reqwest::Client, url: &str, token: &str, body: &str) -> Duration {
    let started = Instant::now();
    let response = client
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("answered");
    assert!(response.status().is_success(), "{}", response.status());
    response.bytes().await.unwrap();
    started.elapsed()
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0
}

/// Open loop: a call every 1/rate s for `count` calls; latencies sorted.
async fn at_rate(
    url: String,
    token: String,
    body: String,
    rate: f64,
    count: usize,
) -> Vec<Duration> {
    let client = reqwest::Client::new();
    let mut tasks = Vec::with_capacity(count);
    let start = Instant::now();
    for n in 0..count {
        let due = start + Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let (client, url, token, body) = (client.clone(), url.clone(), token.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            call(&client, &url, &token, &body).await
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    for task in tasks {
        latencies.push(task.await.unwrap());
    }
    latencies.sort();
    latencies
}

/// Closed loop: `callers` calling back to back for `seconds`; calls answered
/// within the window (calls still waiting at its end are not counted).
async fn flat_out(url: String, token: String, body: String, callers: usize, seconds: f64) -> usize {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let (client, url, token, body) = (client.clone(), url.clone(), token.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut answered = 0;
            while Instant::now() < deadline {
                call(&client, &url, &token, &body).await;
                if Instant::now() <= deadline {
                    answered += 1;
                }
            }
            answered
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    total
}

#[tokio::main]
async fn main() {
    let limit_seconds: f64 = std::env::args()
        .skip_while(|a| a != "--limit-seconds")
        .nth(1)
        .map(|v| v.parse().expect("seconds"))
        .unwrap_or(120.0);

    // (a) overhead at 500 calls/s, non-streaming and streaming.
    let (sim, _) = sim_server(SimServerSettings::default()).await;
    let (gateway, token) = gateway_to(&sim, "").await;
    let direct = format!("http://{sim}/v1/chat/completions");
    let through = format!("http://{}/v1/chat/completions", gateway.address);
    println!("| measurement | figure | baseline (same run) | ratio / difference |");
    println!("| --- | --- | --- | --- |");
    for stream in [false, true] {
        let direct_body = body(stream).replace("MODEL", "sim/echo");
        let gateway_body = body(stream).replace("MODEL", "up/sim/echo");
        // Warm both paths' connections.
        at_rate(direct.clone(), "x".into(), direct_body.clone(), 500.0, 200).await;
        at_rate(
            through.clone(),
            token.clone(),
            gateway_body.clone(),
            500.0,
            200,
        )
        .await;
        let baseline = at_rate(direct.clone(), "x".into(), direct_body, 500.0, 5000).await;
        let measured = at_rate(through.clone(), token.clone(), gateway_body, 500.0, 5000).await;
        for (name, q) in [("p50", 0.5), ("p99", 0.99)] {
            let (g, d) = (percentile(&measured, q), percentile(&baseline, q));
            println!(
                "| gateway latency {name}, {}, 500 calls/s | {g:.3} ms | sim-server directly: {d:.3} ms | added {:.3} ms |",
                if stream { "streamed" } else { "not streamed" },
                g - d
            );
        }
    }
    let throughput_body = body(false).replace("MODEL", "up/sim/echo");
    let direct_calls = flat_out(
        direct.clone(),
        "x".into(),
        body(false).replace("MODEL", "sim/echo"),
        64,
        5.0,
    )
    .await;
    let gateway_calls = flat_out(through.clone(), token.clone(), throughput_body, 64, 5.0).await;
    println!(
        "| throughput through the gateway, 64 callers, zero sim latency | {:.0} calls/s | sim-server directly: {:.0} calls/s | {:.2} × |",
        gateway_calls as f64 / 5.0,
        direct_calls as f64 / 5.0,
        gateway_calls as f64 / direct_calls as f64
    );

    // (c) the same calls streamed and not: what they cost.
    let (calls_before, _) = gateway.state.runs.close(&token);
    drop(calls_before);
    let token = gateway
        .state
        .runs
        .open(
            "cost".into(),
            1,
            SpendGate::Unbounded,
            Default::default(),
            Default::default(),
            Default::default(),
        )
        .unwrap();
    let client = reqwest::Client::new();
    for stream in [false, true] {
        for _ in 0..100 {
            call(
                &client,
                &through,
                &token,
                &body(stream).replace("MODEL", "up/sim/echo"),
            )
            .await;
        }
    }
    let (calls, _) = gateway.state.runs.close(&token);
    let cost = |streamed: bool| -> f64 {
        calls
            .iter()
            .filter(|c| c.streamed == streamed)
            .map(|c| c.cost_usd)
            .sum()
    };
    println!(
        "| 100 calls streamed vs the same 100 not streamed | ${:.9} | ${:.9} | equal to the cent: {} |",
        cost(true),
        cost(false),
        (cost(true) * 100.0).round() == (cost(false) * 100.0).round() && (cost(true) - cost(false)).abs() < 1e-12
    );

    // (b) 600 rpm declared by the worker, enforced by the provider.
    let (sim, sim_state) = sim_server(SimServerSettings {
        limits: Limits {
            requests_per_minute: Some(600),
            ..Limits::default()
        },
        latency: Duration::ZERO,
        models: Vec::new(),
    })
    .await;
    // One gateway, no coordinator to share the limit: it is this worker's own.
    let (gateway, token) = gateway_to(&sim, "rpm: 600, scope: worker").await;
    let through = format!("http://{}/v1/chat/completions", gateway.address);
    let answered = flat_out(
        through,
        token,
        body(false).replace("MODEL", "up/sim/echo"),
        8,
        limit_seconds,
    )
    .await;
    let server = sim_state.sim_server.as_ref().unwrap();
    let refused = server.refused.load(Ordering::Relaxed);
    let sent = server.served.load(Ordering::Relaxed) + refused;
    let limit = 600.0 * limit_seconds / 60.0;
    println!(
        "| calls answered in {limit_seconds:.0} s under a 600 rpm limit (8 callers flat out) | {answered} | the limit: {limit:.0} | {:.1} % used; {refused} of {sent} calls answered 429 ({:.2} %) |",
        answered as f64 / limit * 100.0,
        refused as f64 / sent.max(1) as f64 * 100.0
    );
}
