//! xDS benchmarks.
//!
//! `xds-bench streams`: holds N simulated Envoys (ADS streams, SotW or delta) against a real
//! xds-server process, changes one upstream's endpoint file, and reports how long until every
//! client received and ACKed the change (p50/p99/max), how many resources each update carried,
//! and the server's RSS.
//!
//! `xds-bench rebuild`: times a full snapshot rebuild of a catalog of U upstreams × E endpoints.
//!
//! Run in release mode, e.g. `cargo run --release -p tests --bin xds-bench -- streams --clients 10000`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use tests::{TempDir, XdsServer};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use xds_server::translate::ResourceType;

const CHANGING: &str = "changing";

struct Args {
    command: String,
    clients: usize,
    modes: Vec<Mode>,
    proxies: usize,
    upstreams: usize,
    endpoints: usize,
    per_connection: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Sotw,
    Delta,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        command: String::new(),
        clients: 1000,
        modes: vec![Mode::Sotw, Mode::Delta],
        proxies: 10,
        upstreams: 20,
        endpoints: 20,
        per_connection: 1,
    };
    let mut it = std::env::args().skip(1);
    a.command = it.next().unwrap_or_default();
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--clients" => a.clients = value()?.parse()?,
            "--proxies" => a.proxies = value()?.parse()?,
            "--upstreams" => a.upstreams = value()?.parse()?,
            "--endpoints" => a.endpoints = value()?.parse()?,
            "--streams-per-connection" => a.per_connection = value()?.parse()?,
            "--mode" => {
                a.modes = match value()?.as_str() {
                    "sotw" => vec![Mode::Sotw],
                    "delta" => vec![Mode::Delta],
                    "both" => vec![Mode::Sotw, Mode::Delta],
                    m => bail!("--mode {m}: use sotw, delta or both"),
                }
            }
            _ => bail!("unknown flag {flag}"),
        }
    }
    if !matches!(a.command.as_str(), "streams" | "rebuild") {
        bail!(
            "usage: xds-bench streams [--clients N] [--mode sotw|delta|both] [--proxies P] \
             [--upstreams U] [--endpoints E] [--streams-per-connection S]\n       \
             xds-bench rebuild [--upstreams U] [--endpoints E] [--proxies P]"
        );
    }
    Ok(a)
}

/// P proxies, each routing to all U upstreams; upstream `changing` reads an endpoint file.
/// Endpoints are loopback addresses that nothing ever dials.
fn catalog(a: &Args) -> String {
    let mut s = String::from("version: 1\nproxies:\n");
    for p in 0..a.proxies {
        s += &format!(
            "  p{p}:\n    listeners:\n      - name: public\n        port: 8080\n        protocol: http\n        routes:\n"
        );
        for u in 0..a.upstreams {
            let name = if u == 0 {
                CHANGING.to_string()
            } else {
                format!("u{u}")
            };
            s += &format!("          - {{ match: {{ prefix: /{name}/ }}, to: {name} }}\n");
        }
    }
    s += "upstreams:\n";
    s += &format!("  {CHANGING}:\n    protocol: http1\n    endpoints: {{ file: changing.json }}\n");
    for u in 1..a.upstreams {
        let eps: Vec<String> = (0..a.endpoints)
            .map(|e| format!("\"127.{}.{}.{}:8080\"", u / 256, u % 256, e + 1))
            .collect();
        s += &format!(
            "  u{u}:\n    protocol: http2\n    health_check: {{ tcp: {{}} }}\n    endpoints: {{ static: [{}] }}\n",
            eps.join(", ")
        );
    }
    s
}

fn endpoint_file(n: usize) -> String {
    let eps: Vec<String> = (0..n)
        .map(|e| format!("\"127.255.0.{}:8080\"", e + 1))
        .collect();
    format!("[{}]", eps.join(", "))
}

/// Shared counters of all simulated clients.
#[derive(Default)]
struct Progress {
    initial: AtomicUsize,
    updated: AtomicUsize,
    /// Nanoseconds since `base` when the change was written; 0 before.
    change_at: AtomicU64,
    latencies_us: std::sync::Mutex<Vec<u64>>,
    update_resources: AtomicUsize,
    failed: AtomicUsize,
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn node(id: usize, proxies: usize) -> Node {
    Node {
        id: format!("bench-{id}"),
        cluster: format!("p{}", id % proxies),
        ..Default::default()
    }
}

async fn sotw_client(
    channel: Channel,
    id: usize,
    a: Arc<ArgsLite>,
    progress: Arc<Progress>,
    base: Instant,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(16);
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let eds_names: Vec<String> = a.upstream_names.clone();
    let mut first = true;
    for t in ResourceType::ALL {
        let resource_names = match t {
            ResourceType::Endpoint => eds_names.clone(),
            ResourceType::Route => vec!["public".into()],
            _ => vec![],
        };
        tx.send(DiscoveryRequest {
            node: first.then(|| node(id, a.proxies)),
            type_url: t.type_url().into(),
            resource_names,
            ..Default::default()
        })
        .await?;
        first = false;
    }
    let mut responses = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut initial_eds: Option<String> = None;
    let mut updated = false;
    while let Some(resp) = responses.message().await? {
        let t = ResourceType::from_type_url(&resp.type_url).context("unknown type")?;
        if t == ResourceType::Endpoint {
            match &initial_eds {
                None => {
                    initial_eds = Some(resp.version_info.clone());
                    progress.initial.fetch_add(1, Ordering::Relaxed);
                }
                Some(v) if !updated && *v != resp.version_info => {
                    record_update(&progress, base, resp.resources.len());
                    updated = true;
                }
                _ => {}
            }
        }
        let resource_names = match t {
            ResourceType::Endpoint => eds_names.clone(),
            ResourceType::Route => vec!["public".into()],
            _ => vec![],
        };
        tx.send(DiscoveryRequest {
            type_url: resp.type_url,
            version_info: resp.version_info,
            response_nonce: resp.nonce,
            resource_names,
            ..Default::default()
        })
        .await?;
    }
    Ok(())
}

async fn delta_client(
    channel: Channel,
    id: usize,
    a: Arc<ArgsLite>,
    progress: Arc<Progress>,
    base: Instant,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(16);
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let mut first = true;
    for t in ResourceType::ALL {
        let resource_names_subscribe = match t {
            ResourceType::Endpoint => a.upstream_names.clone(),
            ResourceType::Route => vec!["public".into()],
            _ => vec![],
        };
        tx.send(DeltaDiscoveryRequest {
            node: first.then(|| node(id, a.proxies)),
            type_url: t.type_url().into(),
            resource_names_subscribe,
            ..Default::default()
        })
        .await?;
        first = false;
    }
    let mut responses = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut seen_initial = false;
    let mut updated = false;
    while let Some(resp) = responses.message().await? {
        if ResourceType::from_type_url(&resp.type_url) == Some(ResourceType::Endpoint) {
            if !seen_initial {
                seen_initial = true;
                progress.initial.fetch_add(1, Ordering::Relaxed);
            } else if !updated && resp.resources.iter().any(|r| r.name == CHANGING) {
                record_update(&progress, base, resp.resources.len());
                updated = true;
            }
        }
        tx.send(DeltaDiscoveryRequest {
            type_url: resp.type_url,
            response_nonce: resp.nonce,
            ..Default::default()
        })
        .await?;
    }
    Ok(())
}

fn record_update(progress: &Progress, base: Instant, resources: usize) {
    let at = progress.change_at.load(Ordering::Relaxed);
    let now = base.elapsed().as_nanos() as u64;
    if at == 0 {
        return;
    }
    progress
        .latencies_us
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(now.saturating_sub(at) / 1000);
    progress
        .update_resources
        .fetch_add(resources, Ordering::Relaxed);
    progress.updated.fetch_add(1, Ordering::Relaxed);
}

struct ArgsLite {
    proxies: usize,
    upstream_names: Vec<String>,
}

async fn wait_count(
    what: &str,
    counter: &AtomicUsize,
    want: usize,
    failed: &AtomicUsize,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let n = counter.load(Ordering::Relaxed);
        if n >= want {
            return Ok(start.elapsed());
        }
        if start.elapsed() > limit {
            bail!(
                "{what}: only {n} of {want} after {limit:?} ({} clients failed)",
                failed.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn streams(a: &Args, mode: Mode) -> anyhow::Result<()> {
    let dir = TempDir::new("bench");
    dir.write("changing.json", &endpoint_file(a.endpoints));
    let catalog = dir.write("catalog.yaml", &catalog(a));
    let server = tokio::task::block_in_place(|| {
        let s = XdsServer::start_with(
            &dir,
            &catalog,
            0,
            &[
                "--file-interval",
                "10ms",
                "--debounce",
                "10ms",
                "--log",
                "warn",
            ],
        );
        s.wait_ready();
        s
    });
    let rss_idle = rss_mib(server.process.pid());
    let lite = Arc::new(ArgsLite {
        proxies: a.proxies,
        upstream_names: std::iter::once(CHANGING.to_string())
            .chain((1..a.upstreams).map(|u| format!("u{u}")))
            .collect(),
    });
    let progress = Arc::new(Progress::default());
    let base = Instant::now();
    let url = format!("http://127.0.0.1:{}", server.xds_port);
    let connect_start = Instant::now();
    let connecting = Arc::new(Semaphore::new(200));
    let mut channel: Option<Channel> = None;
    for id in 0..a.clients {
        if id % a.per_connection == 0 {
            let _permit = connecting.acquire().await?;
            channel = Some(Endpoint::from_shared(url.clone())?.connect().await?);
        }
        let ch = channel.clone().context("a channel")?;
        let (lite, progress) = (lite.clone(), progress.clone());
        tokio::spawn(async move {
            let r = match mode {
                Mode::Sotw => sotw_client(ch, id, lite, progress.clone(), base).await,
                Mode::Delta => delta_client(ch, id, lite, progress.clone(), base).await,
            };
            if r.is_err() {
                progress.failed.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let limit = Duration::from_secs(300);
    wait_count(
        "initial config",
        &progress.initial,
        a.clients,
        &progress.failed,
        limit,
    )
    .await?;
    let initial = connect_start.elapsed();
    // Let the initial ACKs settle before measuring.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_streams = rss_mib(server.process.pid());

    progress
        .change_at
        .store(base.elapsed().as_nanos() as u64, Ordering::Relaxed);
    dir.write("changing.json", &endpoint_file(a.endpoints + 1));
    let all = wait_count(
        "the endpoint change",
        &progress.updated,
        a.clients,
        &progress.failed,
        limit,
    )
    .await?;
    let mut lat = progress
        .latencies_us
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    lat.sort_unstable();
    let per_update = progress.update_resources.load(Ordering::Relaxed) as f64 / a.clients as f64;
    println!(
        "| {:?} | {} | {:.0} ms | {:.0} | {:.0} | {:.0} | {:.0} ms | {:.1} | {:.0} | {:.0} |",
        mode,
        a.clients,
        initial.as_secs_f64() * 1000.0,
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
        all.as_secs_f64() * 1000.0,
        per_update,
        rss_idle,
        rss_streams,
    );
    Ok(())
}

async fn rebuild(a: &Args) -> anyhow::Result<()> {
    let dir = TempDir::new("rebuild");
    dir.write("changing.json", &endpoint_file(a.endpoints));
    let path = dir.write("catalog.yaml", &catalog(a));
    let loaded = xds_server::catalog::load_path(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let discovery = xds_server::discovery::Discovery::new(
        Default::default(),
        xds_server::metrics::Metrics::new(),
    );
    discovery.reconcile(&loaded).await;
    let mut times = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        let snaps = xds_server::serve::build_all(&loaded, &discovery.endpoints(&loaded).0);
        times.push(start.elapsed());
        std::hint::black_box(snaps);
    }
    times.sort();
    println!(
        "| {} | {} | {} | {:.1} ms | {:.1} ms | {:.1} ms |",
        a.proxies,
        a.upstreams,
        a.endpoints,
        times[0].as_secs_f64() * 1000.0,
        times[times.len() / 2].as_secs_f64() * 1000.0,
        times[times.len() - 1].as_secs_f64() * 1000.0
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let a = parse_args()?;
    let command: Vec<String> = std::env::args().skip(1).collect();
    println!(
        "command: cargo run --release -p tests --bin xds-bench -- {}",
        command.join(" ")
    );
    match a.command.as_str() {
        "streams" => {
            println!(
                "catalog: {} proxies, {} upstreams x {} endpoints; clients spread over the proxies, {} stream(s) per connection",
                a.proxies, a.upstreams, a.endpoints, a.per_connection
            );
            println!(
                "latency: from writing the endpoint file (server polls it every 10ms, debounce 10ms) to the client's ACK"
            );
            println!();
            println!(
                "| mode | clients | initial config, all | change p50 (ms) | p99 (ms) | max (ms) | all ACKed | resources per update | server RSS idle (MiB) | RSS with streams (MiB) |"
            );
            println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
            for mode in &a.modes {
                streams(&a, *mode).await?;
            }
        }
        _ => {
            println!("| proxies | upstreams | endpoints each | rebuild min | median | max |");
            println!("| --- | --- | --- | --- | --- | --- |");
            rebuild(&a).await?;
        }
    }
    Ok(())
}
