//! xDS benchmarks.
//!
//! `xds-bench streams`: holds N simulated Envoys (ADS streams, SotW or delta) against a real
//! xds-server process, changes one upstream's endpoint file, and reports how long until every
//! client received and ACKed the change (p50/p99/max), how many resources each update carried,
//! and the server's RSS.
//!
//! `xds-bench rebuild`: times a full snapshot rebuild of a catalog of U upstreams × E endpoints.
//!
//! `xds-bench identity`: how fast the CA signs proxy certificates, and how many identity
//! requests (`xds-server identity`'s, STS round trip to moto included) one replica answers a
//! second, beside what moto's STS alone answers with the same concurrency.
//!
//! `xds-bench appmesh`: how long `xds-server import-appmesh` takes for a mesh of R routes in
//! moto's App Mesh (tests/fixtures/moto_appmesh.py), every resource listed and described.
//!
//! `streams --tls`: the same streams over mutual TLS (`--xds-tls --require-identity`, each
//! client presenting its proxy's certificate), for the cost of TLS.
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
    tls: bool,
    mesh: bool,
    requests: usize,
    concurrency: usize,
    routes: usize,
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
        tls: false,
        mesh: false,
        requests: 1000,
        concurrency: 32,
        routes: 300,
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
            "--tls" => a.tls = true,
            "--mesh" => a.mesh = true,
            "--requests" => a.requests = value()?.parse()?,
            "--concurrency" => a.concurrency = value()?.parse()?,
            "--routes" => a.routes = value()?.parse()?,
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
    if !matches!(
        a.command.as_str(),
        "streams" | "rebuild" | "identity" | "mesh" | "appmesh"
    ) {
        bail!(
            "usage: xds-bench streams [--clients N] [--mode sotw|delta|both] [--proxies P] \
             [--upstreams U] [--endpoints E] [--streams-per-connection S] [--tls] [--mesh]\n       \
             xds-bench rebuild [--upstreams U] [--endpoints E] [--proxies P]\n       \
             xds-bench identity [--requests N] [--concurrency C]\n       \
             xds-bench mesh [--proxies P]\n       \
             xds-bench appmesh [--routes R]"
        );
    }
    Ok(a)
}

/// P proxies, each routing to all U upstreams; upstream `changing` reads an endpoint file.
/// Endpoints are loopback addresses that nothing ever dials.
fn catalog(a: &Args) -> String {
    let mut s = String::from("version: 1\nproxies:\n");
    for p in 0..a.proxies {
        // With --mesh every proxy's listener presents its mesh identity (and asks for its
        // callers').
        let tls = if a.mesh {
            "        tls: { certificate: mesh, client_certificate: { trust: mesh } }\n"
        } else {
            ""
        };
        s += &format!(
            "  p{p}:\n    listeners:\n      - name: public\n        port: 8080\n        protocol: http\n{tls}        routes:\n"
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

/// The names client `id` subscribes to of type `t` (none: all of that type).
fn subscribed(a: &ArgsLite, id: usize, t: ResourceType) -> Vec<String> {
    match t {
        ResourceType::Endpoint => a.upstream_names.clone(),
        ResourceType::Route => vec!["public".into()],
        ResourceType::Secret => a.secret_names(id),
        _ => vec![],
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
    let names_of = |t: ResourceType| subscribed(&a, id, t);
    let mut first = true;
    for t in ResourceType::ALL {
        let resource_names = names_of(t);
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
    let mut initial = Initial::new(&a);
    while let Some(resp) = responses.message().await? {
        let t = ResourceType::from_type_url(&resp.type_url).context("unknown type")?;
        if t == ResourceType::Secret && !resp.resources.is_empty() {
            initial.secret(&progress);
        }
        if t == ResourceType::Endpoint {
            match &initial_eds {
                None => {
                    initial_eds = Some(resp.version_info.clone());
                    initial.endpoints(&progress);
                }
                Some(v) if !updated && *v != resp.version_info => {
                    record_update(&progress, base, resp.resources.len());
                    updated = true;
                }
                _ => {}
            }
        }
        let resource_names = names_of(t);
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
        let resource_names_subscribe = subscribed(&a, id, t);
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
    let mut initial = Initial::new(&a);
    while let Some(resp) = responses.message().await? {
        let t = ResourceType::from_type_url(&resp.type_url);
        if t == Some(ResourceType::Secret) && !resp.resources.is_empty() {
            initial.secret(&progress);
        }
        if t == Some(ResourceType::Endpoint) {
            if !seen_initial {
                seen_initial = true;
                initial.endpoints(&progress);
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

impl ArgsLite {
    /// The secrets client `id` asks for: its proxy's mesh identity, with `--mesh`.
    fn secret_names(&self, id: usize) -> Vec<String> {
        if self.mesh {
            vec![format!("mesh/identity/p{}", id % self.proxies)]
        } else {
            vec![]
        }
    }
}

/// A client has its initial configuration when it has its endpoints and, with `--mesh`, its
/// mesh identity.
struct Initial {
    endpoints: bool,
    secret: bool,
}

impl Initial {
    fn new(a: &ArgsLite) -> Initial {
        Initial {
            endpoints: false,
            secret: !a.mesh,
        }
    }

    fn endpoints(&mut self, progress: &Progress) {
        self.endpoints = true;
        self.count(progress);
    }

    fn secret(&mut self, progress: &Progress) {
        if !self.secret {
            self.secret = true;
            self.count(progress);
        }
    }

    fn count(&self, progress: &Progress) {
        if self.endpoints && self.secret {
            progress.initial.fetch_add(1, Ordering::Relaxed);
        }
    }
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
    /// Each client also asks for its proxy's mesh identity (SDS).
    mesh: bool,
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
    let ca_dir = dir.path().join("ca");
    let ca_flag = format!("file:{}", ca_dir.display());
    let mut flags = vec![
        "--file-interval",
        "10ms",
        "--debounce",
        "10ms",
        "--log",
        "warn",
    ];
    if a.tls || a.mesh {
        tls::write_ca(&ca_dir)?;
    }
    if a.mesh && !a.tls {
        flags.extend(["--ca", &ca_flag]);
    }
    let tls = if a.tls {
        flags.extend([
            "--ca",
            &ca_flag,
            "--xds-tls",
            "--xds-tls-name",
            "127.0.0.1",
            "--require-identity",
        ]);
        Some(tls::Clients::new(&ca_dir, a.proxies)?)
    } else {
        None
    };
    let server = tokio::task::block_in_place(|| {
        let s = XdsServer::start_with(&dir, &catalog, 0, &flags);
        s.wait_ready();
        s
    });
    let rss_idle = rss_mib(server.process.pid());
    let lite = Arc::new(ArgsLite {
        proxies: a.proxies,
        mesh: a.mesh,
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
            let endpoint = Endpoint::from_shared(url.clone())?;
            channel = Some(match &tls {
                Some(clients) => {
                    endpoint
                        .connect_with_connector(tests::xds_client::tls_connector(
                            clients.config(id % a.proxies),
                            server.xds_port,
                        ))
                        .await?
                }
                None => endpoint.connect().await?,
            });
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
        "| {:?}{} | {} | {:.0} ms | {:.0} | {:.0} | {:.0} | {:.0} ms | {:.1} | {:.0} | {:.0} |",
        mode,
        match (a.tls, a.mesh) {
            (true, true) => " mTLS, mesh identities",
            (true, false) => " mTLS",
            (false, true) => " mesh identities",
            (false, false) => "",
        },
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
        let snaps = xds_server::serve::build_all(
            &loaded,
            &discovery.endpoints(&loaded).0,
            &Default::default(),
        );
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
        "identity" => identity::run(&a).await?,
        "mesh" => mesh::run(&a).await?,
        "appmesh" => appmesh::run(&a)?,
        _ => {
            println!("| proxies | upstreams | endpoints each | rebuild min | median | max |");
            println!("| --- | --- | --- | --- | --- | --- |");
            rebuild(&a).await?;
        }
    }
    Ok(())
}

/// Mutual TLS for the simulated clients: a certificate per proxy from the bench's CA.
mod tls {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use tests::xds_client::tls_config;
    use xds_server::ca::{Ca, Leaf};

    pub fn write_ca(dir: &Path) -> anyhow::Result<()> {
        Ca::generate("bench")?.write(dir)?;
        Ok(())
    }

    /// One TLS client configuration per proxy.
    pub struct Clients {
        configs: Vec<Arc<rustls::ClientConfig>>,
    }

    impl Clients {
        pub fn new(ca_dir: &Path, proxies: usize) -> anyhow::Result<Clients> {
            let read = |name: &str| std::fs::read_to_string(ca_dir.join(name));
            let ca = Ca::from_pem(
                "bench",
                &read("certificate.pem")?,
                &read("private_key.pem")?,
            )?;
            let mut configs = Vec::new();
            for p in 0..proxies {
                let issued = ca.issue(&Leaf {
                    uris: vec![format!("spiffe://mesh.local/proxy/p{p}")],
                    client: true,
                    ttl: Duration::from_secs(3600),
                    ..Leaf::default()
                })?;
                configs.push(tls_config(
                    ca.certificate_pem(),
                    Some((&issued.certificate_pem, &issued.private_key_pem)),
                )?);
            }
            Ok(Clients { configs })
        }

        /// The TLS configuration of proxy `proxy`'s clients.
        pub fn config(&self, proxy: usize) -> Arc<rustls::ClientConfig> {
            self.configs[proxy].clone()
        }
    }
}

/// The identity endpoint's throughput, and the CA's signing speed.
mod identity {
    use std::sync::Arc;
    use std::time::{Duration, Instant, SystemTime};

    use anyhow::Context;
    use tests::{Moto, TempDir, XdsServer};
    use xds_server::ca::{Ca, Leaf};
    use xds_server::identity::client::{IdentityClient, key_and_csr};
    use xds_server::identity::issuer::CertificateRequest;
    use xds_server::identity::sts::{self, Sts};

    use super::{Args, percentile};

    fn csrs(n: usize) -> anyhow::Result<Vec<String>> {
        (0..n)
            .map(|_| {
                key_and_csr()
                    .map(|(_, csr)| csr)
                    .map_err(anyhow::Error::msg)
            })
            .collect()
    }

    /// Runs `n` jobs, `concurrency` at a time: the wall time and each job's latency (µs).
    async fn run_all<F, Fut>(
        n: usize,
        concurrency: usize,
        job: F,
    ) -> anyhow::Result<(Duration, Vec<u64>)>
    where
        F: Fn(usize) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
    {
        let job = Arc::new(job);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..concurrency {
            let (job, next) = (job.clone(), next.clone());
            workers.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return Ok::<_, anyhow::Error>(latencies);
                    }
                    let t = Instant::now();
                    job(i).await?;
                    latencies.push(t.elapsed().as_micros() as u64);
                }
            }));
        }
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.await??);
        }
        all.sort_unstable();
        Ok((started.elapsed(), all))
    }

    fn row(what: &str, n: usize, wall: Duration, lat: &[u64]) {
        println!(
            "| {what} | {n} | {:.0} ms | {:.0}/s | {:.1} | {:.1} |",
            wall.as_secs_f64() * 1000.0,
            n as f64 / wall.as_secs_f64(),
            percentile(lat, 0.5),
            percentile(lat, 0.99),
        );
    }

    pub async fn run(a: &Args) -> anyhow::Result<()> {
        let n = a.requests;
        println!("{n} requests, {} at a time; latencies in ms", a.concurrency);
        println!();
        println!("| what | requests | wall | rate | p50 (ms) | p99 (ms) |");
        println!("| --- | --- | --- | --- | --- | --- |");

        // The CA alone: 1,000 CSRs signed in one thread.
        let ca = Ca::generate("bench")?;
        let pending = csrs(n)?;
        let leaf = Leaf {
            uris: vec!["spiffe://mesh.local/proxy/bench".into()],
            client: true,
            ttl: Duration::from_secs(86_400),
            ..Leaf::default()
        };
        let started = Instant::now();
        let mut lat = Vec::new();
        for csr in &pending {
            let t = Instant::now();
            std::hint::black_box(ca.sign_request(csr, &leaf)?);
            lat.push(t.elapsed().as_micros() as u64);
        }
        lat.sort_unstable();
        row(
            "CA signs a CSR (in process, one thread)",
            n,
            started.elapsed(),
            &lat,
        );

        // A replica, with moto as STS.
        let dir = TempDir::new("identity-bench");
        let (moto, server, ca_file) = tokio::task::block_in_place(|| {
            let moto = Moto::start(&dir, 0);
            let ca_dir = dir.path().join("ca");
            Ca::generate("bench")
                .and_then(|ca| ca.write(&ca_dir))
                .expect("a CA");
            let catalog = dir.write(
                "catalog.yaml",
                "version: 1\nproxies:\n  bench: { identity: { iam_roles: [bench-task-role] } }\n",
            );
            let ca_flag = format!("file:{}", ca_dir.display());
            let server = XdsServer::start_env(
                &dir,
                catalog.as_os_str(),
                0,
                &[
                    "--ca",
                    &ca_flag,
                    "--xds-tls",
                    "--xds-tls-name",
                    "127.0.0.1",
                    "--identity-rate",
                    "100000000",
                    "--log",
                    "warn",
                ],
                &moto.env(),
            );
            server.wait_ready();
            (moto, server, ca_dir.join("certificate.pem"))
        });
        let out = moto.fixture("iam_identity.py", &["role", "bench-task-role", "bench"]);
        let v: serde_json::Value = serde_json::from_str(out.trim())?;
        let field = |k: &str| v[k].as_str().map(str::to_string).context("credentials");
        let creds = aws_credential_types::Credentials::new(
            field("AccessKeyId")?,
            field("SecretAccessKey")?,
            Some(field("SessionToken")?),
            None,
            "bench",
        );
        let endpoint = moto.endpoint();
        let signed = |csr: &str| {
            sts::sign_request(
                &creds,
                "us-east-1",
                &endpoint,
                "127.0.0.1",
                csr,
                SystemTime::now(),
            )
            .map_err(anyhow::Error::msg)
        };

        // moto's STS alone, the peer in the same run.
        let presigned: Arc<Vec<_>> =
            Arc::new((0..n).map(|_| signed("")).collect::<anyhow::Result<_>>()?);
        let sts_client = Sts::new().map_err(anyhow::Error::msg)?;
        let reqs = presigned.clone();
        let (wall, lat) = run_all(n, a.concurrency, move |i| {
            let (client, reqs) = (sts_client.clone(), reqs.clone());
            async move {
                client.caller_arn(&reqs[i]).await?;
                Ok(())
            }
        })
        .await?;
        row("moto STS GetCallerIdentity alone (the peer)", n, wall, &lat);

        // The replica: TLS handshake, checks, STS, mapping, signing.
        let requests: Arc<Vec<CertificateRequest>> = Arc::new(
            csrs(n)?
                .into_iter()
                .map(|csr| {
                    Ok(CertificateRequest {
                        sts: signed(&csr)?,
                        csr,
                        proxy: None,
                    })
                })
                .collect::<anyhow::Result<_>>()?,
        );
        let client = Arc::new(IdentityClient {
            xds_host: "127.0.0.1".into(),
            xds_port: server.xds_port,
            xds_ca: Some(ca_file),
            out: dir.path().join("unused"),
            proxy: None,
            server_id: "127.0.0.1".into(),
        });
        let (wall, lat) = run_all(n, a.concurrency, move |i| {
            let (client, requests) = (client.clone(), requests.clone());
            async move {
                client.request(&requests[i]).await?;
                Ok(())
            }
        })
        .await?;
        row(
            "identity requests to one replica (new TLS connection each)",
            n,
            wall,
            &lat,
        );
        let issued = server.metric("xds_identity_requests_total{result=\"issued\"}");
        anyhow::ensure!(issued as usize == n, "the replica issued {issued} of {n}");
        Ok(())
    }
}

/// Mesh identities at start: how long a control plane takes, from its start, until every one
/// of P proxies holds its mesh identity, with its own CA and with AWS Private CA (moto's, the
/// peer, also timed alone).
mod mesh {
    use std::time::{Duration, Instant};

    use tests::{Moto, TempDir, XdsServer, http};
    use xds_server::ca::{Ca, Leaf, Signer};

    use super::Args;

    /// P proxies, each with a mesh-TLS listener.
    fn catalog(proxies: usize) -> String {
        let mut s = String::from("version: 1\nproxies:\n");
        for p in 0..proxies {
            s += &format!(
                "  p{p}:\n    listeners:\n      - {{ name: in, port: 15000, protocol: tcp, to: app, tls: {{ certificate: mesh }} }}\n"
            );
        }
        s += "upstreams:\n  app: { protocol: tcp, endpoints: { static: [\"127.0.0.1:9\"] } }\n";
        s
    }

    /// How many mesh identities the server holds (its expiry metric's series).
    fn held(server: &XdsServer) -> usize {
        http::get(server.admin_port, "/metrics", &[])
            .map(|r| {
                r.body
                    .lines()
                    .filter(|l| {
                        l.starts_with("xds_certificate_expiry_seconds{secret=\"mesh/identity/")
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// Starts a server with `flags` and times it until all `proxies` identities are held.
    fn time_start(
        dir: &TempDir,
        proxies: usize,
        flags: &[&str],
        env: &[(&str, String)],
    ) -> Duration {
        let catalog = dir.write("catalog.yaml", &catalog(proxies));
        let started = Instant::now();
        let server = XdsServer::start_env(dir, catalog.as_os_str(), 0, flags, env);
        let deadline = started + Duration::from_secs(600);
        while held(&server) < proxies {
            assert!(
                Instant::now() < deadline,
                "identities not all issued in 10 minutes"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        started.elapsed()
    }

    fn row(what: &str, n: usize, wall: Duration) {
        println!(
            "| {what} | {n} | {} ms | {:.0}/s |",
            wall.as_millis(),
            n as f64 / wall.as_secs_f64()
        );
    }

    pub async fn run(a: &Args) -> anyhow::Result<()> {
        let n = a.proxies;
        println!("{n} proxies, each with one mesh-TLS listener; wall time from the server's start");
        println!();
        println!("| what | identities | wall | rate |");
        println!("| --- | --- | --- | --- |");
        tokio::task::block_in_place(|| -> anyhow::Result<()> {
            let dir = TempDir::new("mesh-bench-own");
            let ca_dir = dir.path().join("ca");
            Ca::generate("bench")?.write(&ca_dir)?;
            let flag = format!("file:{}", ca_dir.display());
            let wall = time_start(&dir, n, &["--ca", &flag], &[]);
            row("control plane, its own CA", n, wall);
            Ok(())
        })?;

        let dir = TempDir::new("mesh-bench-pca");
        let moto = tokio::task::block_in_place(|| Moto::start_pca(&dir, 0));
        let arn = tokio::task::block_in_place(|| {
            moto.fixture("moto_pca.py", &["create-ca", "Bench PCA"])
                .trim()
                .to_string()
        });
        // The peer alone: the same calls one at a time, in process.
        for (k, v) in moto.env() {
            // SAFETY: set before any other thread of this process reads the environment.
            unsafe { std::env::set_var(k, v) };
        }
        let source = format!("acm-pca:{arn}").parse()?;
        let signer = Signer::load(&source).await?;
        let started = Instant::now();
        for p in 0..n {
            signer
                .issue(&Leaf {
                    uris: vec![format!("spiffe://mesh.local/proxy/p{p}")],
                    server: true,
                    client: true,
                    ttl: Duration::from_secs(86_400),
                    ..Leaf::default()
                })
                .await?;
        }
        row(
            "AWS Private CA (moto) alone: IssueCertificate + GetCertificate, one at a time",
            n,
            started.elapsed(),
        );
        let flag = format!("acm-pca:{arn}");
        let wall =
            tokio::task::block_in_place(|| time_start(&dir, n, &["--ca", &flag], &moto.env()));
        row("control plane, AWS Private CA (moto)", n, wall);
        Ok(())
    }
}

mod appmesh {
    use std::process::Command;
    use std::time::Instant;

    use anyhow::bail;
    use tests::{Moto, TempDir, workspace_bin};

    use super::Args;

    /// Routes of the color mesh besides the extra ones (tests/fixtures/appmesh_colorapp.py).
    const BASE_ROUTES: usize = 7;

    /// How many resources of `kind` the import's progress says it described.
    fn described(progress: &str, kind: &str) -> anyhow::Result<usize> {
        let prefix = format!("{kind}: ");
        progress
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.strip_suffix(" described"))
            .ok_or_else(|| anyhow::anyhow!("no \"{kind}: N described\" line in: {progress}"))?
            .parse()
            .map_err(Into::into)
    }

    pub fn run(a: &Args) -> anyhow::Result<()> {
        let dir = TempDir::new("bench-appmesh");
        let moto = Moto::start_appmesh(&dir, 0);
        let extra = a.routes.saturating_sub(BASE_ROUTES).to_string();
        let made = Instant::now();
        moto.fixture("appmesh_colorapp.py", &["9080", "--routes", &extra]);
        let made = made.elapsed();
        let out = dir.path().join("catalog.d");
        let started = Instant::now();
        let run = Command::new(workspace_bin("xds-server"))
            .args(["import-appmesh", "--mesh", "color", "--out"])
            .arg(&out)
            .envs(moto.env())
            .output()?;
        let took = started.elapsed();
        if !run.status.success() {
            bail!("import failed: {}", String::from_utf8_lossy(&run.stderr));
        }
        let progress = String::from_utf8_lossy(&run.stderr);
        print!("{progress}");
        println!();
        println!(
            "| routes | virtual nodes | import (list + describe + map + validate + write) | mesh created in moto |"
        );
        println!("| --- | --- | --- | --- |");
        println!(
            "| {} | {} | {} ms | {} ms |",
            described(&progress, "routes")?,
            described(&progress, "virtual nodes")?,
            took.as_millis(),
            made.as_millis()
        );
        Ok(())
    }
}
