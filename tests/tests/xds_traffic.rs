//! What Envoy 1.40 does with traffic under the resources xds-server renders: long gRPC streams
//! and their deadlines, HTTP/2 health checks, hosts that discovery removes, retries in a burst.
//! These are properties of the translation, the same over SotW and delta, so each runs once.

use std::sync::Arc;
use std::time::Duration;

use tests::grpc::{self, CallOptions, PeerServer};
use tests::{Backend, Envoy, Mode, TempDir, XdsServer, free_port, http, wait_for};

const PROXY: &str = "traffic";

/// A control plane serving `catalog`, and one Envoy of role [`PROXY`] that has taken it.
fn start(dir: &TempDir, catalog: &str) -> (XdsServer, Envoy) {
    let path = dir.write("catalog.yaml", catalog);
    let server = XdsServer::start(dir, &path, 0);
    server.wait_ready();
    let envoy = Envoy::start(dir, PROXY, server.xds_port, Mode::Sotw);
    envoy.wait_live();
    (server, envoy)
}

/// One HTTP listener on 127.0.0.1:`port` with `routes`, and `upstreams`.
fn catalog(port: u16, routes: &str, upstreams: &str) -> String {
    format!(
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
        routes:
{routes}
upstreams:
{upstreams}
"#
    )
}

/// The body of a 200 answer through Envoy, trimmed.
fn body(port: u16, path: &str) -> Option<String> {
    let r = http::get(port, path, &[]).ok()?;
    (r.status == 200).then(|| r.body.trim().to_string())
}

/// A server-streaming call to a `grpc` upstream outlives Envoy's default 15 s route timeout, and
/// a call's `grpc-timeout` is still enforced by Envoy. The second backend ignores deadlines and
/// the client sends `grpc-timeout` without a timer of its own: grpcio would otherwise end the
/// call itself at its deadline (as server and as client), whatever Envoy does.
#[test]
fn grpc_streams_are_not_cut_and_grpc_timeout_is_enforced() {
    let dir = TempDir::new("grpc");
    let streamer = PeerServer::grpc(&dir);
    let hanger = PeerServer::h2c(&dir, "hanger");
    let port = free_port();
    let (_server, envoy) = start(
        &dir,
        &catalog(
            port,
            "          - { match: { prefix: /test.Stream/Hang }, to: hang }\n\
             \x20         - { match: { prefix: / }, to: stream }",
            &format!(
                "  stream: {{ protocol: grpc, endpoints: {{ static: [\"{}\"] }} }}\n\
                 \x20 hang: {{ protocol: grpc, endpoints: {{ static: [\"{}\"] }} }}",
                streamer.endpoint(),
                hanger.endpoint()
            ),
        ),
    );
    std::thread::scope(|scope| {
        // 30 messages a second apart: about 29 s, past the 15 s Envoy cuts at by default.
        let long = scope.spawn(|| {
            grpc::call(
                &dir,
                port,
                "/test.Stream/Count",
                "30,1000",
                CallOptions::default(),
                Duration::from_secs(90),
            )
        });
        let cut = grpc::call(
            &dir,
            port,
            "/test.Stream/Hang",
            "",
            CallOptions {
                grpc_timeout_header: Some("1S"),
                ..Default::default()
            },
            Duration::from_secs(60),
        );
        let long = long.join().expect("the streaming call ran");
        let log = envoy.process.log.display();
        assert!(
            long.code == "OK" && long.messages == 30,
            "the stream was cut: {long:?} (deadline call: {cut:?}); Envoy's log: {log}"
        );
        assert!(
            cut.code == "DEADLINE_EXCEEDED" && cut.seconds < 3.0,
            "grpc-timeout 1S was not enforced: {cut:?}; Envoy's log: {log}"
        );
    });
}

/// An `http` health check of `http2` and `grpc` upstreams speaks HTTP/2: h2c-only servers stay
/// healthy (over HTTP/1.1 every check fails and all hosts go to panic routing).
#[test]
fn http_health_checks_of_http2_upstreams_speak_http2() {
    let dir = TempDir::new("h2hc");
    let plain = PeerServer::h2c(&dir, "plain-h2");
    let rpc = PeerServer::h2c(&dir, "grpc-h2");
    let port = free_port();
    let check = "health_check: { http: { path: /health }, interval: 1s, timeout: 500ms }";
    let (_server, envoy) = start(
        &dir,
        &catalog(
            port,
            "          - { match: { prefix: /h2/ }, to: plain }\n\
             \x20         - { match: { prefix: / }, to: rpc }",
            &format!(
                "  plain: {{ protocol: http2, endpoints: {{ static: [\"{}\"] }}, {check} }}\n\
                 \x20 rpc: {{ protocol: grpc, endpoints: {{ static: [\"{}\"] }}, {check} }}",
                plain.endpoint(),
                rpc.endpoint()
            ),
        ),
    );
    for cluster in ["plain", "rpc"] {
        let stat = |s: &str| envoy.stat(&format!("cluster.{cluster}.{s}"));
        // A cluster without traffic is checked once a minute (Envoy's `no_traffic_interval`):
        // the first check is the one to see.
        wait_for(
            &format!("{cluster}'s health check to pass"),
            Duration::from_secs(20),
            || (stat("health_check.success")? >= 1).then_some(()),
        );
        assert_eq!(stat("health_check.failure"), Some(0), "{cluster}");
        assert_eq!(stat("membership_healthy"), Some(1), "{cluster}");
    }
    assert_eq!(body(port, "/h2/x").as_deref(), Some("plain-h2"));
    assert_eq!(body(port, "/x").as_deref(), Some("grpc-h2"));
}

/// A host that its endpoint source drops leaves rotation at once, even though its health check
/// still passes (an awsvpc address reused by another task must not keep this upstream's traffic).
#[test]
fn a_removed_host_leaves_rotation_while_its_health_check_passes() {
    let dir = TempDir::new("removal");
    let kept = Backend::start("kept", 0).unwrap();
    let removed = Backend::start("removed", 0).unwrap();
    let port = free_port();
    dir.write(
        "web.json",
        &format!(r#"["{}", "{}"]"#, kept.endpoint(), removed.endpoint()),
    );
    let (_server, envoy) = start(
        &dir,
        &catalog(
            port,
            "          - { match: { prefix: / }, to: web }",
            "  web: { protocol: http1, endpoints: { file: web.json }, \
             health_check: { http: { path: /health }, interval: 1s, timeout: 500ms } }",
        ),
    );
    wait_for("both hosts healthy", Duration::from_secs(20), || {
        (envoy.stat("cluster.web.membership_healthy")? == 2).then_some(())
    });
    wait_for("both hosts to answer", Duration::from_secs(10), || {
        let _ = body(port, "/");
        (kept.hits() > 0 && removed.hits() > 0).then_some(())
    });
    dir.write("web.json", &format!(r#"["{}"]"#, kept.endpoint()));
    wait_for(
        "20 requests in a row to reach the remaining host",
        Duration::from_secs(15),
        || {
            (0..20)
                .all(|_| body(port, "/").as_deref() == Some("kept"))
                .then_some(())
        },
    );
    let hits = removed.hits();
    for _ in 0..20 {
        assert_eq!(body(port, "/").as_deref(), Some("kept"));
    }
    assert_eq!(
        removed.hits(),
        hits,
        "the removed host still gets requests (its health checks do not count)"
    );
}

/// A burst of requests to an upstream with one failing host: each failure is retried once, on the
/// other host, and none is refused by the circuit breaker (Envoy's default allows 3 concurrent
/// retries per cluster).
#[test]
fn retries_in_a_burst_go_to_another_host_and_are_not_refused() {
    let dir = TempDir::new("retries");
    let good = Backend::start("good", 0).unwrap();
    let bad = Backend::start_failing("bad", 0, 503).unwrap();
    let port = free_port();
    let (_server, envoy) = start(
        &dir,
        &catalog(
            port,
            "          - { match: { prefix: / }, to: web, retries: { attempts: 1, on: [5xx] } }",
            &format!(
                "  web: {{ protocol: http1, endpoints: {{ static: [\"{}\", \"{}\"] }} }}",
                good.endpoint(),
                bad.endpoint()
            ),
        ),
    );
    wait_for("both hosts in the cluster", Duration::from_secs(15), || {
        (envoy.stat("cluster.web.membership_total")? == 2).then_some(())
    });
    let mut failed = Vec::new();
    for _ in 0..3 {
        let start = Arc::new(std::sync::Barrier::new(30));
        let burst: Vec<_> = (0..30)
            .map(|_| {
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    http::get(port, "/", &[]).map(|r| (r.status, r.body.trim().to_string()))
                })
            })
            .collect();
        for t in burst {
            match t.join().expect("the request thread ran") {
                Ok((200, b)) if b == "good" => {}
                other => failed.push(format!("{other:?}")),
            }
        }
    }
    assert!(bad.hits() > 0, "the failing host got no request");
    assert!(
        failed.is_empty(),
        "{} of 90 failed: {:?}; retry overflows: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)],
        envoy.stat("cluster.web.upstream_rq_retry_overflow")
    );
    assert_eq!(
        envoy
            .stat("cluster.web.upstream_rq_retry_overflow")
            .unwrap_or(0),
        0
    );
}
