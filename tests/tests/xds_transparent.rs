//! App Mesh style transparent egress and ingress through a real Envoy 1.40: in network
//! namespaces of the test's own, iptables redirects a task's TCP as ECS does for a
//! `proxyConfiguration` of type APPMESH, Envoy runs as the ignored UID 1337, and listeners with
//! `original_destination` route what the app dialled: by Host (HTTP) or by destination port
//! (TCP `ports`).
//!
//! The task is namespace `app` (the app, its Envoy and the control plane, on its loopback;
//! 10.99.0.0/24 is routed out of it, addresses the app dials that no one holds); the other
//! tasks are namespace `peer`, behind a veth pair (10.99.1.1 here, 10.99.1.2 there).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use tests::backend::Backend;
use tests::cli::assert_envoy_accepts;
use tests::netns::Netns;
use tests::{Envoy, TempDir, XdsServer, http, wait_for, workspace_bin};

/// The address of the other tasks.
const PEER: [u8; 4] = [10, 99, 1, 2];

/// A task's namespace and its peers' ([`tests::netns::ecs_task`]), the redirect for app ports
/// 8080 and 8081.
fn task(label: &str) -> (Netns, Netns) {
    tests::netns::ecs_task(label, &[8080, 8081])
}

/// A control plane on `catalog` and an Envoy of role `proxy` as UID 1337, in the calling
/// thread's namespace; the catalog passes `validate --envoy` first.
fn start(dir: &TempDir, catalog: &str, proxy: &str) -> (XdsServer, Envoy) {
    let path = dir.write("catalog.yaml", catalog);
    assert_envoy_accepts(&path);
    let server = XdsServer::start(dir, &path, 0);
    server.wait_ready();
    let envoy = Envoy::start_as_user(dir, proxy, server.xds_port, 1337);
    envoy.wait_live();
    (server, envoy)
}

/// `GET /` to `addr` with Host `host`: the status and the body.
fn get(addr: SocketAddr, host: &str) -> (u16, String) {
    let r = http::request_to(addr, "GET", "/", &[("host", host)])
        .unwrap_or_else(|e| panic!("GET http://{host}/ dialled at {addr}: {e}"));
    (r.status, r.body.trim().to_string())
}

fn addr(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

/// The app dials an address nothing answers, 10.99.0.5:8080; iptables hands the connection to
/// Envoy's egress listener (127.0.0.1:15001, as docs/catalog.md recommends), which routes it by Host: each virtual host's upstream in
/// the peer task answers, a Host no virtual host names gets Envoy's 404, and even a connection
/// to one upstream's own address goes where its Host says. Envoy's own connections (UID 1337)
/// and those to the metadata address are not redirected. From the peer, the app's ports 8080
/// and 8081 are served through Envoy's ingress listener (15000), told apart by the port in the
/// Host (virtual hosts `*:PORT`, as docs/catalog.md suggests).
#[test]
fn egress_routes_redirected_connections_by_host_and_ingress_reaches_the_app() {
    let dir = TempDir::new("transparent-http");
    let (app, peer) = task("http");
    let catalog = r#"
version: 1
proxies:
  app:
    listeners:
      - name: ingress
        port: 15000
        protocol: http
        original_destination: true
        virtual_hosts:
          - { name: app, domains: ["*:8080"], routes: [ { match: { prefix: / }, to: local-app } ] }
          - { name: admin, domains: ["*:8081"], routes: [ { match: { prefix: / }, to: local-admin } ] }
      - name: egress
        port: 15001
        address: 127.0.0.1
        protocol: http
        original_destination: true
        virtual_hosts:
          - { name: web, domains: ["web.mesh.test:8080"], routes: [ { match: { prefix: / }, to: web } ] }
          - { name: api, domains: ["api.mesh.test:8080"], routes: [ { match: { prefix: / }, to: api } ] }
upstreams:
  local-app: { protocol: http1, endpoints: { static: ["127.0.0.1:8080"] } }
  local-admin: { protocol: http1, endpoints: { static: ["127.0.0.1:8081"] } }
  web: { protocol: http1, endpoints: { static: ["10.99.1.2:8080"] } }
  api: { protocol: http1, endpoints: { static: ["10.99.1.2:8081"] } }
"#;
    // Dropped in the peer's namespace, where they listen, even when the test fails.
    let peers = peer.hold(|| {
        [
            ("web", addr(PEER, 8080)),
            ("api", addr(PEER, 8081)),
            ("metadata", addr([169, 254, 170, 2], 80)),
        ]
        .map(|(name, at)| Backend::start_at(name, at).expect("a peer backend starts"))
    });
    app.run(|| {
        let local = Backend::start_at("local-app", addr([0, 0, 0, 0], 8080)).unwrap();
        let admin = Backend::start_at("local-admin", addr([0, 0, 0, 0], 8081)).unwrap();
        let (_server, envoy) = start(&dir, catalog, "app");
        let service = addr([10, 99, 0, 5], 8080);
        wait_for(
            "web through the egress listener",
            Duration::from_secs(20),
            || {
                http::request_to(service, "GET", "/", &[("host", "web.mesh.test:8080")])
                    .ok()
                    .filter(|r| r.status == 200)
            },
        );
        let hits = |backends: &[Backend]| backends.iter().map(Backend::hits).collect::<Vec<_>>();
        let (hits_before, completed_before) = (
            hits(&peers[..]),
            envoy
                .stat("http.egress.downstream_rq_completed")
                .unwrap_or_default(),
        );
        assert_eq!(get(service, "web.mesh.test:8080"), (200, "web".into()));
        assert_eq!(get(service, "api.mesh.test:8080"), (200, "api".into()));
        assert_eq!(get(service, "nobody.mesh.test:8080").0, 404);
        // The api backend's own address, but the Host of web: Envoy decides, by Host.
        assert_eq!(
            get(addr(PEER, 8081), "web.mesh.test:8080"),
            (200, "web".into())
        );
        // ECS's EgressIgnoredIPs: straight to the metadata endpoint, not to Envoy (which would
        // have answered 404 for this Host).
        assert_eq!(
            get(addr([169, 254, 170, 2], 80), "169.254.170.2"),
            (200, "metadata".into())
        );
        assert_eq!(
            envoy.stat("http.egress.downstream_rq_completed"),
            Some(completed_before + 4)
        );
        let delta: Vec<u64> = hits(&peers[..])
            .iter()
            .zip(&hits_before)
            .map(|(a, b)| a - b)
            .collect();
        assert_eq!(delta, [2, 1, 1]);
        // The app itself answered none of that.
        assert_eq!((local.hits(), admin.hits()), (0, 0));

        // The peer dials the app's ports; iptables hands them to the ingress listener.
        let ingress = |port: u16| {
            peer.run(|| {
                let host = format!("app.mesh.test:{port}");
                let r =
                    http::request_to(addr([10, 99, 1, 1], port), "GET", "/", &[("host", &host)])
                        .expect("the peer reaches the app's port");
                let via = r.header("x-envoy-upstream-service-time").is_some();
                (r.status, r.body.trim().to_string(), via)
            })
        };
        assert_eq!(ingress(8080), (200, "local-app".into(), true));
        assert_eq!(ingress(8081), (200, "local-admin".into(), true));
        assert_eq!(envoy.stat("http.ingress.downstream_rq_completed"), Some(2));
        assert_eq!((local.hits(), admin.hits()), (1, 1));
    });
}

/// A tcp egress listener with `ports` sends each connection to the upstream of the port the
/// app dialled; a port it does not list is closed (Envoy's `no_filter_chain_match`) until the
/// listener gets a `to` for the other ports.
#[test]
fn tcp_egress_chooses_the_upstream_by_destination_port() {
    let dir = TempDir::new("transparent-tcp");
    let (app, peer) = task("tcp");
    let catalog = |default: &str| {
        format!(
            r#"
version: 1
proxies:
  app:
    listeners:
      - name: egress
        port: 15001
        address: 127.0.0.1
        protocol: tcp
        original_destination: true
        ports: {{ 5432: postgres, 18332: bitcoind }}{default}
upstreams:
  postgres: {{ protocol: tcp, endpoints: {{ static: ["10.99.1.2:5432"] }} }}
  bitcoind: {{ protocol: tcp, endpoints: {{ static: ["10.99.1.2:18332"] }} }}
  other: {{ protocol: tcp, endpoints: {{ static: ["10.99.1.2:7000"] }} }}
"#
        )
    };
    let peers = peer.hold(|| {
        [("postgres", 5432), ("bitcoind", 18332), ("other", 7000)].map(|(name, port)| {
            Backend::start_at(name, addr(PEER, port)).expect("a peer backend starts")
        })
    });
    app.run(|| {
        let (_server, envoy) = start(&dir, &catalog(""), "app");
        // The backends speak HTTP; the TCP proxy carries it as bytes.
        wait_for(
            "postgres through the egress listener",
            Duration::from_secs(20),
            || {
                http::request_to(addr([10, 99, 0, 5], 5432), "GET", "/", &[])
                    .ok()
                    .filter(|r| r.status == 200)
            },
        );
        let hits = || peers.iter().map(Backend::hits).collect::<Vec<_>>();
        let before = hits();
        assert_eq!(get(addr([10, 99, 0, 5], 5432), "db").1, "postgres");
        assert_eq!(get(addr([10, 99, 0, 7], 18332), "node").1, "bitcoind");
        // Port 6379 has no chain: the connection is accepted (by iptables' redirect) and
        // closed without an answer.
        let closed = http::request_to(addr([10, 99, 0, 5], 6379), "GET", "/", &[]);
        assert!(closed.is_err(), "{closed:?}");
        assert_eq!(
            envoy.stat("listener.127.0.0.1_15001.no_filter_chain_match"),
            Some(1)
        );
        let delta: Vec<u64> = hits().iter().zip(&before).map(|(a, b)| a - b).collect();
        assert_eq!(delta, [1, 1, 0]);

        // `to` takes every port `ports` does not list.
        dir.write("catalog.yaml", &catalog("\n        to: other"));
        wait_for(
            "port 6379 to reach `other`",
            Duration::from_secs(20),
            || {
                http::request_to(addr([10, 99, 0, 5], 6379), "GET", "/", &[])
                    .ok()
                    .filter(|r| r.body.trim() == "other")
            },
        );
        assert_eq!(get(addr([10, 99, 0, 5], 5432), "db").1, "postgres");
    });
}

/// An http egress listener with `ports`: a connection to a port listed is TCP to its
/// upstream, any other port is HTTP routed by Host, all through the one port ECS redirects
/// the task's egress to (an App Mesh caller with HTTP and tcp backends).
#[test]
fn an_http_egress_listener_s_ports_carry_tcp_beside_http_by_host() {
    let dir = TempDir::new("transparent-mixed");
    let (app, peer) = task("mixed");
    let catalog = r#"
version: 1
proxies:
  app:
    listeners:
      - name: egress
        port: 15001
        address: 127.0.0.1
        protocol: http
        original_destination: true
        ports: { 5432: postgres }
        virtual_hosts:
          - { name: web, domains: ["web.mesh.test:8080"], routes: [ { match: { prefix: / }, to: web } ] }
upstreams:
  web: { protocol: http1, endpoints: { static: ["10.99.1.2:8080"] } }
  postgres: { protocol: tcp, endpoints: { static: ["10.99.1.2:5432"] } }
"#;
    let peers = peer.hold(|| {
        [("web", 8080), ("postgres", 5432)].map(|(name, port)| {
            Backend::start_at(name, addr(PEER, port)).expect("a peer backend starts")
        })
    });
    app.run(|| {
        let (_server, envoy) = start(&dir, catalog, "app");
        wait_for(
            "web through the egress listener",
            Duration::from_secs(20),
            || {
                http::request_to(
                    addr([10, 99, 0, 5], 8080),
                    "GET",
                    "/",
                    &[("host", "web.mesh.test:8080")],
                )
                .ok()
                .filter(|r| r.status == 200)
            },
        );
        // Port 5432: TCP, whatever the Host says (the backend answers HTTP, carried as bytes).
        assert_eq!(
            get(addr([10, 99, 0, 9], 5432), "web.mesh.test:8080").1,
            "postgres"
        );
        assert_eq!(envoy.stat("tcp.egress_5432.downstream_cx_total"), Some(1));
        // Any other port: HTTP by Host; a Host no virtual host takes gets Envoy's 404.
        assert_eq!(
            get(addr([10, 99, 0, 9], 8080), "web.mesh.test:8080"),
            (200, "web".into())
        );
        assert_eq!(get(addr([10, 99, 0, 9], 6379), "db.mesh.test").0, 404);
        assert_eq!(peers[1].hits(), 1);
    });
}

/// `passthrough`: what the catalog does not name goes on to the address the app dialled, as
/// App Mesh's egress filter ALLOW_ALL did. On the HTTP egress listener a Host no virtual host
/// takes reaches the address dialled (a backend outside the catalog); on a tcp one, a port no
/// `ports` entry takes. Both through Envoy's PassthroughCluster; named Hosts and ports still go
/// to their upstreams.
#[test]
fn passthrough_sends_what_the_catalog_does_not_name_to_the_address_dialled() {
    let dir = TempDir::new("transparent-passthrough");
    let (app, peer) = task("pass");
    let http_catalog = r#"
version: 1
proxies:
  app:
    listeners:
      - name: egress
        port: 15001
        address: 127.0.0.1
        protocol: http
        original_destination: true
        passthrough: true
        virtual_hosts:
          - { name: web, domains: ["web.mesh.test:8080"], routes: [ { match: { prefix: / }, to: web } ] }
upstreams:
  web: { protocol: http1, endpoints: { static: ["10.99.1.2:8080"] } }
"#;
    let tcp_catalog = r#"
version: 1
proxies:
  app:
    listeners:
      - name: egress
        port: 15001
        address: 127.0.0.1
        protocol: tcp
        original_destination: true
        passthrough: true
        ports: { 5432: web }
upstreams:
  web: { protocol: tcp, endpoints: { static: ["10.99.1.2:8080"] } }
"#;
    let peers = peer.hold(|| {
        [("web", 8080), ("outside", 8082)].map(|(name, port)| {
            Backend::start_at(name, addr(PEER, port)).expect("a peer backend starts")
        })
    });
    app.run(|| {
        let (_server, envoy) = start(&dir, http_catalog, "app");
        wait_for(
            "web through the egress listener",
            Duration::from_secs(20),
            || {
                http::request_to(
                    addr([10, 99, 0, 5], 8080),
                    "GET",
                    "/",
                    &[("host", "web.mesh.test:8080")],
                )
                .ok()
                .filter(|r| r.status == 200)
            },
        );
        assert_eq!(
            get(addr([10, 99, 0, 5], 8080), "web.mesh.test:8080"),
            (200, "web".into())
        );
        // A Host the catalog does not name, to a peer's own address: on to that address.
        assert_eq!(
            get(addr(PEER, 8082), "outside.example:8082"),
            (200, "outside".into())
        );
        assert_eq!(
            envoy.stat("cluster.PassthroughCluster.upstream_rq_completed"),
            Some(1)
        );
        // A Host the catalog does not name, to an address no one holds: nothing answers there.
        assert!(
            get(addr([10, 99, 0, 5], 8080), "nobody.example:8080").0 >= 500,
            "the passthrough dials the address the app dialled"
        );

        // A tcp listener: a port `ports` names goes to its upstream, another on as dialled.
        let path = dir.write("catalog.yaml", tcp_catalog);
        assert_envoy_accepts(&path);
        // Only the tcp listener sends port 5432 to web (the http one passed it on to an
        // address no one holds).
        wait_for("the tcp egress listener", Duration::from_secs(20), || {
            http::request_to(addr([10, 99, 0, 5], 5432), "GET", "/", &[])
                .ok()
                .filter(|r| r.body.trim() == "web")
        });
        let before = (
            peers[1].hits(),
            envoy
                .stat("tcp.egress.downstream_cx_total")
                .unwrap_or_default(),
        );
        assert_eq!(get(addr(PEER, 8082), "any").1, "outside");
        assert_eq!(peers[1].hits(), before.0 + 1);
        assert_eq!(
            envoy.stat("tcp.egress.downstream_cx_total"),
            Some(before.1 + 1),
            "through the tcp listener's passthrough chain"
        );
    });
}

/// ECS installs its redirect before any container of the task starts, so without identity the
/// bootstrap init container (s3-config-loader) fetches Envoy's bootstrap from S3 while nothing
/// listens on the egress port. envoy-service runs it as root in the ignored group (`0:1337`,
/// `IgnoredGID`): its GET reaches S3 directly. In root's own group it is redirected to 15001
/// and fails, and the task would never start.
#[test]
fn the_bootstrap_container_reaches_s3_before_envoy_listens_in_the_ignored_group() {
    use std::os::unix::process::CommandExt;
    let dir = TempDir::new("transparent-bootstrap");
    let (app, peer) = task("boot");
    // S3 in the peer task: every GET answers the object's body, "s3".
    let _s3 = peer.hold(|| Backend::start_at("s3", addr(PEER, 9000)).expect("S3 starts"));
    let loader = workspace_bin("s3-config-loader");
    let get = |gid: u32, file: &str| {
        let out = dir.path().join(file);
        let result = app.run(|| {
            Command::new(&loader)
                .args(["get", "s3://config/envoy/bootstrap.yaml"])
                .arg(&out)
                .env("AWS_ENDPOINT_URL", "http://10.99.1.2:9000")
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .env("AWS_REGION", "us-east-1")
                .env("AWS_MAX_ATTEMPTS", "1")
                .uid(0)
                .gid(gid)
                .output()
                .expect("s3-config-loader runs")
        });
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&result.stderr)
        );
        (
            result.status.success(),
            std::fs::read_to_string(out).ok(),
            log,
        )
    };
    let (ok, written, log) = get(1337, "ignored-group.yaml");
    assert!(ok, "as 0:1337: {log}");
    assert_eq!(written.as_deref().map(str::trim), Some("s3"), "{log}");
    let (ok, written, log) = get(0, "root-group.yaml");
    assert!(
        !ok && written.is_none(),
        "as 0:0 the GET was not redirected: {log}"
    );
}

/// When a test fails inside the task's namespace, what the peer's namespace holds is still
/// stopped there: its backends' listeners close (their port is free again in the peer), rather
/// than their stop reaching for the peer's address from the machine's own network.
#[test]
fn a_failing_test_stops_the_peers_backends_inside_the_peer() {
    let (app, peer) = task("drop");
    let held = peer.hold(|| Backend::start_at("web", addr(PEER, 8080)).unwrap());
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Owned here: dropped as the panic unwinds, on the test's own thread and namespace.
        let _held = held;
        app.run(|| -> () { panic!("a failing assertion in the task") });
    }));
    assert!(failed.is_err());
    wait_for(
        "the peer's port 8080 to be free",
        Duration::from_secs(10),
        || peer.run(|| std::net::TcpListener::bind(addr(PEER, 8080)).ok()),
    );
}

/// A run killed before its handles dropped leaves its namespaces behind; the next run deletes
/// those whose test process is gone, and leaves those of running tests alone.
#[test]
fn namespaces_of_a_test_process_that_is_gone_are_swept() {
    // A pid that no process has any more: a child that has exited and been reaped.
    let mut child = Command::new("true").spawn().unwrap();
    let gone = child.id();
    child.wait().unwrap();
    let stale = format!("xds-e2e-stale-{gone}-0");
    let alive = format!("xds-e2e-alive-{}-99", std::process::id());
    let list = || {
        String::from_utf8_lossy(
            &Command::new("ip")
                .args(["netns", "list"])
                .output()
                .unwrap()
                .stdout,
        )
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect::<Vec<_>>()
    };
    for name in [&stale, &alive] {
        assert!(
            Command::new("ip")
                .args(["netns", "add", name])
                .status()
                .unwrap()
                .success()
        );
    }
    // This process's first namespace sweeps.
    let _first = Netns::new("sweep");
    let names = list();
    let _ = Command::new("ip").args(["netns", "del", &alive]).status();
    let _ = Command::new("ip").args(["netns", "del", &stale]).status();
    assert!(!names.contains(&stale), "{stale} is still there: {names:?}");
    assert!(names.contains(&alive), "{alive} was swept: {names:?}");
}
