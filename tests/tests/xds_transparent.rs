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
use std::time::Duration;

use tests::backend::Backend;
use tests::cli::assert_envoy_accepts;
use tests::netns::{AppMeshProxyConfiguration, Netns};
use tests::{Envoy, TempDir, XdsServer, http, wait_for};

/// The address of the other tasks.
const PEER: [u8; 4] = [10, 99, 1, 2];

/// A task's namespace and its peers', linked, with ECS's APPMESH redirect in the task for
/// app port 8080; the peer also holds 169.254.170.2 (the task metadata endpoint ECS ignores).
fn task(label: &str) -> (Netns, Netns) {
    let app = Netns::new(&format!("{label}-app"));
    let peer = Netns::new(&format!("{label}-peer"));
    app.link("eth0", "10.99.1.1/24", &peer, "eth0", "10.99.1.2/24");
    // Routed, but held by no one: only the redirect makes them answer. (This kernel has no
    // dummy interfaces.)
    app.exec(&["ip", "route", "add", "10.99.0.0/24", "dev", "eth0"]);
    peer.exec(&["ip", "addr", "add", "169.254.170.2/32", "dev", "eth0"]);
    app.exec(&["ip", "route", "add", "169.254.170.2/32", "dev", "eth0"]);
    app.redirect_like_ecs(&AppMeshProxyConfiguration {
        app_ports: vec![8080],
        ..Default::default()
    });
    (app, peer)
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
/// Envoy's egress listener (15001), which routes it by Host: each virtual host's upstream in
/// the peer task answers, a Host no virtual host names gets Envoy's 404, and even a connection
/// to one upstream's own address goes where its Host says. Envoy's own connections (UID 1337)
/// and those to the metadata address are not redirected. From the peer, the app's port 8080
/// is served through Envoy's ingress listener (15000).
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
        routes: [ { match: { prefix: / }, to: local-app } ]
      - name: egress
        port: 15001
        protocol: http
        original_destination: true
        virtual_hosts:
          - { name: web, domains: ["web.mesh.test:8080"], routes: [ { match: { prefix: / }, to: web } ] }
          - { name: api, domains: ["api.mesh.test:8080"], routes: [ { match: { prefix: / }, to: api } ] }
upstreams:
  local-app: { protocol: http1, endpoints: { static: ["127.0.0.1:8080"] } }
  web: { protocol: http1, endpoints: { static: ["10.99.1.2:8080"] } }
  api: { protocol: http1, endpoints: { static: ["10.99.1.2:8081"] } }
"#;
    let peers = peer.run(|| {
        [
            ("web", addr(PEER, 8080)),
            ("api", addr(PEER, 8081)),
            ("metadata", addr([169, 254, 170, 2], 80)),
        ]
        .map(|(name, at)| Backend::start_at(name, at).expect("a peer backend starts"))
    });
    app.run(|| {
        let local = Backend::start_at("local-app", addr([0, 0, 0, 0], 8080)).unwrap();
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
            hits(&peers),
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
        let delta: Vec<u64> = hits(&peers)
            .iter()
            .zip(&hits_before)
            .map(|(a, b)| a - b)
            .collect();
        assert_eq!(delta, [2, 1, 1]);
        // The app itself answered none of that.
        assert_eq!(local.hits(), 0);

        // The peer dials the app's port; iptables hands it to the ingress listener.
        let (status, body, via_envoy) = peer.run(|| {
            let r = http::request_to(addr([10, 99, 1, 1], 8080), "GET", "/", &[])
                .expect("the peer reaches the app's port");
            let via = r.header("x-envoy-upstream-service-time").is_some();
            (r.status, r.body.trim().to_string(), via)
        });
        assert_eq!((status, body.as_str(), via_envoy), (200, "local-app", true));
        assert_eq!(envoy.stat("http.ingress.downstream_rq_completed"), Some(1));
        assert_eq!(local.hits(), 1);
    });
    // Each backend stops where it listens.
    peer.run(move || drop(peers));
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
    let peers = peer.run(|| {
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
            envoy.stat("listener.0.0.0.0_15001.no_filter_chain_match"),
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
    peer.run(move || drop(peers));
}
