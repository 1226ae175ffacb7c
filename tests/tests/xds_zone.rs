//! Zone-aware upstreams through real Envoys 1.40: endpoints carry their availability zone, each
//! Envoy names its own (`xds-server bootstrap --zone`, or the ECS task metadata), and requests
//! stay in the caller's zone until its endpoints fail their health checks, then go to the
//! other zones, and come back when they recover.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tests::backend::Backend;
use tests::cli::assert_envoy_accepts;
use tests::{Envoy, Mode, TempDir, XdsServer, free_port, http, wait_for};

const PROXY: &str = "zoned";

/// Which backends answered `n` requests through Envoy's listener on `port`; a request that
/// failed counts as `error STATUS`.
fn answered_by(port: u16, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|_| match http::get(port, "/", &[]) {
            Ok(r) if r.status == 200 => r.body.trim().to_string(),
            Ok(r) => format!("error {}", r.status),
            Err(e) => format!("error {e}"),
        })
        .collect()
}

/// The set of `names`.
fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// Waits until 40 requests in a row are answered by the backends of `expected` alone, each of
/// them answering some.
fn wait_answered_by(what: &str, port: u16, expected: &[&str]) -> BTreeSet<String> {
    let expected = set(expected);
    wait_for(what, Duration::from_secs(60), || {
        let seen = answered_by(port, 40);
        (seen == expected).then_some(seen)
    })
}

/// Four backends, two in the first Envoy's zone (us-east-1a), one in us-east-1b, one in
/// us-east-1c. The Envoy in us-east-1a (`--zone`) sends everything to its two; the Envoy in
/// us-east-1b (zone from the task metadata) sends everything to its one. When both us-east-1a
/// backends fail their health checks, the first Envoy's requests go to the other zones, and
/// come back when they recover. Envoy's `/clusters` shows each endpoint's zone and priority, and
/// `xds-server status` shows the zoned Envoy in sync.
#[test]
fn requests_stay_in_the_callers_zone_and_fail_over_when_it_is_unhealthy() {
    let dir = TempDir::new("zone");
    let backends: Vec<(Backend, &str)> = [
        ("a1", "us-east-1a"),
        ("a2", "us-east-1a"),
        ("b1", "us-east-1b"),
        ("c1", "us-east-1c"),
    ]
    .into_iter()
    .map(|(name, zone)| (Backend::start(name, 0).unwrap(), zone))
    .collect();
    let endpoints: String = backends
        .iter()
        .map(|(b, zone)| {
            format!(
                "        - {{ address: \"{}\", zone: {zone} }}\n",
                b.endpoint()
            )
        })
        .collect();
    let port = free_port();
    let catalog = format!(
        r#"
version: 1
defaults: {{ connect_timeout: 1s }}
proxies:
  {PROXY}:
    listeners:
      - name: public
        address: 127.0.0.1
        port: {port}
        protocol: http
        routes: [ {{ match: {{ prefix: / }}, to: web-api }} ]
upstreams:
  web-api:
    protocol: http1
    zone_aware: true
    health_check: {{ http: {{ path: /health }}, interval: 1s, timeout: 1s, unhealthy_threshold: 1, healthy_threshold: 1 }}
    endpoints:
      static:
{endpoints}"#
    );
    let path = dir.write("catalog.yaml", &catalog);
    assert_envoy_accepts(&path);
    let server = XdsServer::start(&dir, &path, 0);
    server.wait_ready();

    // The ECS task metadata endpoint (v4) of a task in us-east-1b.
    let metadata = Backend::start_with(
        "metadata",
        0,
        Arc::new(|path: &str| {
            if path.ends_with("/task") {
                r#"{"TaskARN": "arn:aws:ecs:us-east-1:123456789012:task/c/0b1", "AvailabilityZone": "us-east-1b"}"#.into()
            } else {
                r#"{"Networks": [{"IPv4Addresses": ["10.0.2.9"]}]}"#.into()
            }
        }),
    )
    .unwrap();
    let metadata_uri = format!("http://{}/v4/0b1", metadata.endpoint());

    // One Envoy at a time: both would take the listener's port.
    {
        let in_b = Envoy::start_env(
            &dir,
            PROXY,
            server.xds_port,
            Mode::Delta,
            &[],
            &[("ECS_CONTAINER_METADATA_URI_V4", &metadata_uri)],
            |doc| assert_eq!(doc["node"]["locality"]["zone"], "us-east-1b", "{doc}"),
        );
        in_b.wait_live();
        wait_answered_by("the us-east-1b Envoy to use b1 alone", port, &["b1"]);
        let priorities = host_priorities(&in_b, &backends);
        assert_eq!(
            priorities,
            [("a1", 1), ("a2", 1), ("b1", 0), ("c1", 1)].map(|(n, p)| (n.to_string(), p)),
            "{priorities:?}"
        );
    }

    let in_a = Envoy::start_opts(
        &dir,
        PROXY,
        server.xds_port,
        Mode::Sotw,
        &["--zone", "us-east-1a"],
        |doc| assert_eq!(doc["node"]["locality"]["zone"], "us-east-1a", "{doc}"),
    );
    in_a.wait_live();
    wait_answered_by("the us-east-1a Envoy to use a1 and a2", port, &["a1", "a2"]);
    // Once there, it stays there.
    assert_eq!(answered_by(port, 200), set(&["a1", "a2"]));
    let clusters = http::get(in_a.admin_port, "/clusters", &[]).unwrap().body;
    for (b, zone) in &backends {
        let line = format!("web-api::{}::zone::{zone}", b.endpoint());
        assert!(clusters.contains(&line), "no {line:?} in\n{clusters}");
    }
    let priorities = host_priorities(&in_a, &backends);
    assert_eq!(
        priorities,
        [("a1", 0), ("a2", 0), ("b1", 1), ("c1", 1)].map(|(n, p)| (n.to_string(), p)),
        "{priorities:?}"
    );
    // The debug page shows what an Envoy in each zone gets, and what one in a given zone gets.
    let config = server.admin_json(&format!("/debug/config?proxy={PROXY}"));
    let by_zone: Vec<&str> = config["eds"]["by_zone"]
        .as_array()
        .map(|a| a.iter().filter_map(|z| z["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        by_zone,
        [
            "us-east-1a/web-api",
            "us-east-1b/web-api",
            "us-east-1c/web-api"
        ],
        "{config}"
    );
    let in_c = server.admin_json(&format!("/debug/config?proxy={PROXY}&zone=us-east-1c"));
    let first: Vec<&str> = in_c["eds"]["resources"][0]["endpoints"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|l| l["priority"].as_u64().unwrap_or(0) == 0)
                .filter_map(|l| l["locality"]["zone"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(first, ["us-east-1c"], "{in_c}");
    let (code, table) = status(&server);
    assert_eq!(code, 0, "{table}");
    assert!(
        table.contains(&format!("{PROXY}-{}", in_a.admin_port)),
        "{table}"
    );

    // Envoy checks a cluster that had no traffic yet once a minute (its `no_traffic_interval`):
    // wait for a round of checks at the catalog's `interval`, which now has traffic.
    let attempts = || {
        in_a.stat("cluster.web-api.health_check.attempt")
            .unwrap_or(0)
    };
    let before = attempts();
    wait_for(
        "a round of health checks after traffic",
        Duration::from_secs(120),
        || (attempts() >= before + 4).then_some(()),
    );
    // The zone's endpoints fail their health checks: the other zones take over.
    for (b, _) in &backends[..2] {
        b.set_healthy(false);
    }
    wait_answered_by(
        "the us-east-1a Envoy to fail over to b1 and c1",
        port,
        &["b1", "c1"],
    );
    for (b, _) in &backends[..2] {
        b.set_healthy(true);
    }
    wait_answered_by(
        "the us-east-1a Envoy to come back to a1 and a2",
        port,
        &["a1", "a2"],
    );
}

/// Each backend's priority in Envoy's `web-api` cluster, from `/clusters`.
fn host_priorities(envoy: &Envoy, backends: &[(Backend, &str)]) -> Vec<(String, u64)> {
    let clusters = http::get(envoy.admin_port, "/clusters", &[]).unwrap().body;
    backends
        .iter()
        .map(|(b, _)| {
            let key = format!("web-api::{}::priority::", b.endpoint());
            let priority = clusters
                .lines()
                .find_map(|l| l.strip_prefix(&key)?.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {key:?} in\n{clusters}"));
            (b.name.clone(), priority)
        })
        .collect()
}

/// `xds-server status` against the server's debug listener: exit code and table.
fn status(server: &XdsServer) -> (i32, String) {
    let out = std::process::Command::new(tests::workspace_bin("xds-server"))
        .args(["status", "--debug"])
        .arg(format!("http://127.0.0.1:{}", server.debug_port))
        .output()
        .expect("xds-server status runs");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
