//! Two replicas of the control plane on one S3 catalog (moto), behind a TCP balancer (an Envoy
//! with a plain TCP proxy to both), and an Envoy connected through it: the replica it is
//! connected to dies, the Envoy reconnects to the other and gets the same versions, so nothing
//! in its configuration changes, and requests through it never fail.

use std::ffi::OsStr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tests::process::{ChildGuard, envoy_bin};
use tests::{Backend, Envoy, Mode, Moto, TempDir, XdsServer, free_port, http, wait_for};

const PROXY: &str = "demo";

/// The sum of a metric's series on a replica, e.g. its open xDS streams (`xds_streams`).
fn total(server: &XdsServer, metric: &str) -> f64 {
    http::get(server.admin_port, "/metrics", &[])
        .map(|r| {
            r.body
                .lines()
                .filter(|l| l.starts_with(&format!("{metric}{{")))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        })
        .unwrap_or(0.0)
}

/// An Envoy that forwards TCP on `port` to the replicas' xDS ports, as an NLB would: round
/// robin, a dead replica taken out by a TCP health check, a failed connect tried on another.
fn balancer(dir: &TempDir, port: u16, replicas: &[u16]) -> ChildGuard {
    let endpoints: Vec<serde_json::Value> = replicas
        .iter()
        .map(|p| {
            serde_json::json!({ "endpoint": { "address": { "socket_address": {
                "address": "127.0.0.1", "port_value": p } } } })
        })
        .collect();
    let config = serde_json::json!({
        "admin": { "address": { "socket_address": {
            "address": "127.0.0.1", "port_value": free_port() } } },
        "static_resources": {
            "listeners": [{
                "name": "xds",
                "address": { "socket_address": { "address": "127.0.0.1", "port_value": port } },
                "filter_chains": [{ "filters": [{
                    "name": "envoy.filters.network.tcp_proxy",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                        "stat_prefix": "xds",
                        "cluster": "replicas",
                        "max_connect_attempts": 3
                    }
                }] }]
            }],
            "clusters": [{
                "name": "replicas",
                "type": "STATIC",
                "connect_timeout": "1s",
                "lb_policy": "ROUND_ROBIN",
                "load_assignment": { "cluster_name": "replicas",
                                     "endpoints": [{ "lb_endpoints": endpoints }] },
                "health_checks": [{
                    "timeout": "1s",
                    "interval": "0.5s",
                    "no_traffic_interval": "0.5s",
                    "unhealthy_threshold": 1,
                    "healthy_threshold": 1,
                    "tcp_health_check": {}
                }]
            }]
        }
    });
    let path = dir.write("balancer.json", &config.to_string());
    let mut cmd = Command::new(envoy_bin());
    cmd.arg("-c")
        .arg(path)
        .args(["--disable-hot-restart", "-l", "info", "--concurrency", "1"]);
    let envoy = ChildGuard::spawn(cmd, dir.path().join("balancer.log"));
    wait_for("the balancer to listen", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    });
    envoy
}

/// What would show a configuration change in Envoy: the versions it holds and the counts of
/// listeners and clusters it added, changed or removed.
fn config_state(envoy: &Envoy) -> Vec<(String, String)> {
    let text = [
        "cluster_manager.cds.version_text",
        "listener_manager.lds.version_text",
    ];
    let counters = [
        "cluster_manager.cluster_added",
        "cluster_manager.cluster_modified",
        "cluster_manager.cluster_removed",
        "listener_manager.listener_added",
        "listener_manager.listener_modified",
        "listener_manager.listener_removed",
        "listener_manager.lds.update_rejected",
        "cluster_manager.cds.update_rejected",
    ];
    text.iter()
        .map(|s| (s.to_string(), envoy.text_stat(s).unwrap_or_default()))
        .chain(
            counters
                .iter()
                .map(|s| (s.to_string(), envoy.stat(s).unwrap_or(0).to_string())),
        )
        .collect()
}

fn replicas_behind_a_balancer(mode: Mode) {
    let dir = TempDir::new(match mode {
        Mode::Sotw => "replicas-sotw",
        Mode::Delta => "replicas-delta",
    });
    let moto = Moto::start(&dir, 0);
    let blue = Backend::start("blue", 0).unwrap();
    let port = free_port();
    let catalog = format!(
        r#"
version: 1
proxies:
  {PROXY}:
    listeners:
      - {{ name: web, address: 127.0.0.1, port: {port}, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: blue }} ] }}
upstreams:
  blue: {{ protocol: http1, endpoints: {{ static: ["{}"] }} }}
"#,
        blue.endpoint()
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s3 = moto.s3();
    rt.block_on(async {
        s3.create_bucket().bucket("config").send().await?;
        s3.put_object()
            .bucket("config")
            .key("xds/catalog.yaml")
            .body(catalog.into_bytes().into())
            .send()
            .await?;
        anyhow::Ok(())
    })
    .expect("the catalog is uploaded");
    let location = OsStr::new("s3://config/xds/catalog.yaml");
    let flags = ["--catalog-interval", "200ms"];
    let mut replicas = vec![
        XdsServer::start_env(&dir, location, 0, &flags, &moto.env()),
        XdsServer::start_env(&dir, location, 0, &flags, &moto.env()),
    ];
    for r in &replicas {
        r.wait_ready();
    }
    let lb_port = free_port();
    let ports: Vec<u16> = replicas.iter().map(|r| r.xds_port).collect();
    let _balancer = balancer(&dir, lb_port, &ports);
    let envoy = Envoy::start(&dir, PROXY, lb_port, mode);
    envoy.wait_live();
    http::wait_for_body(port, "blue");
    let connected = wait_for(
        "the Envoy's stream on one replica",
        Duration::from_secs(20),
        || replicas.iter().position(|r| total(r, "xds_streams") >= 1.0),
    );
    let before = config_state(&envoy);
    assert!(
        !before[0].1.is_empty(),
        "Envoy holds a CDS version: {before:?}"
    );

    // Requests through the Envoy, one after another, for as long as the switch takes.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let requests = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            let mut errors = Vec::new();
            // Bounded: at most 10,000 requests, which at loopback speed is some seconds.
            for _ in 0..10_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match http::get(port, "/", &[]) {
                    Ok(r) if r.status == 200 && r.body.trim() == "blue" => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        errors.push(format!("{other:?}"));
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            errors
        })
    };
    wait_for("requests to go through", Duration::from_secs(10), || {
        (ok.load(Ordering::Relaxed) >= 20).then_some(())
    });

    let mut dead = replicas.remove(connected);
    dead.process.kill();
    let other = &replicas[0];
    wait_for(
        "the Envoy to reconnect to the other replica",
        Duration::from_secs(30),
        || {
            (total(other, "xds_streams") >= 1.0
                && envoy.stat("control_plane.connected_state") == Some(1))
            .then_some(())
        },
    );
    // A SotW stream's first response goes out even to a proxy that already has it (Envoy resets
    // its reconnect backoff only on a response) and is acknowledged; the other types, at the
    // versions Envoy names, get nothing. A delta server may send nothing at all.
    if mode == Mode::Sotw {
        wait_for(
            "Envoy to ACK the other replica",
            Duration::from_secs(20),
            || (total(other, "xds_acks_total") >= 1.0).then_some(()),
        );
    }
    let served = ok.load(Ordering::Relaxed);
    wait_for(
        "more requests after the switch",
        Duration::from_secs(10),
        || (ok.load(Ordering::Relaxed) >= served + 100).then_some(()),
    );
    stop.store(true, Ordering::Relaxed);
    let errors = requests.join().unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests: {errors:?}"
    );
    assert_eq!(
        config_state(&envoy),
        before,
        "the other replica gave the same versions: nothing changed in Envoy"
    );
    assert!(
        envoy.stat("control_plane.connected_state") == Some(1),
        "connected to the other replica"
    );
}

#[test]
fn envoy_moves_to_the_other_replica_without_a_change_sotw() {
    replicas_behind_a_balancer(Mode::Sotw);
}

#[test]
fn envoy_moves_to_the_other_replica_without_a_change_delta() {
    replicas_behind_a_balancer(Mode::Delta);
}
