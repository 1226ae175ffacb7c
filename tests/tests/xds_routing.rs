//! Mesh-grade routing through a real Envoy 1.40: virtual hosts chosen by Host, method, header,
//! query and gRPC matches, rewrites and header changes. One control plane and one Envoy serve
//! every case of a test; each route names itself in a response header (`x-route`), so a case
//! sees which route took its request.

use std::time::Duration;

use tests::backend::Backend;
use tests::cli::assert_envoy_accepts;
use tests::{Envoy, Mode, TempDir, XdsServer, free_port, http, wait_for};

const PROXY: &str = "routing";

/// A request (method, path, headers) and the route that should take it.
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);

/// A control plane serving `catalog`, and one Envoy of role [`PROXY`] that has taken it; the
/// catalog passes `validate --envoy` first.
fn start(dir: &TempDir, catalog: &str) -> (XdsServer, Envoy) {
    let path = dir.write("catalog.yaml", catalog);
    assert_envoy_accepts(&path);
    let server = XdsServer::start(dir, &path, 0);
    server.wait_ready();
    let envoy = Envoy::start(dir, PROXY, server.xds_port, Mode::Sotw);
    envoy.wait_live();
    (server, envoy)
}

/// A route (flow-style YAML) that answers from `echo` and names itself `name` in `x-route`.
fn route(name: &str, matcher: &str) -> String {
    format!(
        "              - {{ match: {matcher}, to: echo, response_headers: {{ add: {{ x-route: {name} }} }} }}\n"
    )
}

/// `method` to 127.0.0.1:`port` with Host `host` and `headers`: the status and the `x-route`
/// that answered.
fn via(port: u16, method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut all = vec![("host", host)];
    all.extend_from_slice(headers);
    let r = http::request(method, port, path, &all)
        .unwrap_or_else(|e| panic!("{method} {host}{path}: {e}"));
    (
        r.status,
        r.header("x-route").unwrap_or_default().to_string(),
    )
}

/// Two virtual hosts take their Hosts (also with a port, also by wildcard); a Host neither
/// takes gets 404. Every match kind routes its positive case to its route and its negative case
/// past it. A prefix rewrite, a path and Host rewrite and added and removed headers show in what
/// the backend received and what the client got back.
#[test]
fn virtual_hosts_matches_rewrites_and_header_changes() {
    let dir = TempDir::new("routing");
    let echo = Backend::start_echo("echo").unwrap();
    let port = free_port();
    let mut main = String::new();
    for (name, matcher) in [
        ("method", "{ prefix: /m/, method: [POST, PUT] }"),
        ("one-method", "{ prefix: /m/, method: DELETE }"),
        ("exact", r#"{ prefix: /h/, headers: { x-e: "1" } }"#),
        (
            "prefix",
            "{ prefix: /h/, headers: { x-p: { prefix: te- } } }",
        ),
        (
            "suffix",
            "{ prefix: /h/, headers: { x-s: { suffix: -z } } }",
        ),
        (
            "regex",
            r#"{ prefix: /h/, headers: { x-r: { regex: "[0-9]+" } } }"#,
        ),
        (
            "present",
            "{ prefix: /h/, headers: { x-present: { present: true } } }",
        ),
        (
            "absent",
            "{ prefix: /h/absent, headers: { x-gone: { absent: true } } }",
        ),
        (
            "query",
            r#"{ prefix: /q/, query: { debug: "1", tenant: { present: true } } }"#,
        ),
        (
            "query-prefix",
            "{ prefix: /q/, query: { v: { prefix: beta } } }",
        ),
        (
            "grpc-method",
            "{ grpc: { service: test.Svc, method: Only } }",
        ),
        ("grpc-service", "{ grpc: { service: test.Svc } }"),
        ("fallback", "{ prefix: / }"),
    ] {
        main.push_str(&route(name, matcher));
    }
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
        virtual_hosts:
          - name: main
            domains: [main.test, "main.test:*", "*.wild.test"]
            routes:
{main}          - name: api
            domains: [api.test]
            routes:
              - match: {{ prefix: /api/ }}
                to: echo
                rewrite: {{ prefix: / }}
                request_headers: {{ add: {{ x-via: mesh }}, remove: [x-internal] }}
                response_headers: {{ add: {{ x-served-by: routing }}, remove: [x-backend] }}
              - match: {{ path: /old }}
                to: echo
                rewrite: {{ path: /new, host: new.test }}
upstreams:
  echo: {{ protocol: http1, endpoints: {{ static: ["{}"] }} }}
"#,
        echo.endpoint()
    );
    let (_server, envoy) = start(&dir, &catalog);
    wait_for("the listener to route", Duration::from_secs(20), || {
        (via(port, "GET", "main.test", "/", &[]).1 == "fallback").then_some(())
    });

    // Virtual hosts: by name, with a port, by wildcard; anything else is 404.
    for host in ["main.test", "MAIN.test", "main.test:8080", "x.wild.test"] {
        assert_eq!(
            via(port, "GET", host, "/", &[]),
            (200, "fallback".into()),
            "{host}"
        );
    }
    for host in ["other.test", "wild.test", "main.test.evil"] {
        let (status, route) = via(port, "GET", host, "/", &[]);
        assert_eq!((status, route.as_str()), (404, ""), "Host {host}");
    }
    assert_eq!(
        via(port, "GET", "api.test", "/", &[]).0,
        404,
        "api has no `/`"
    );

    // Each match kind: (method, path, headers) → the route expected.
    let grpc = [("content-type", "application/grpc")];
    let cases: &[Case] = &[
        ("POST", "/m/x", &[], "method"),
        ("PUT", "/m/x", &[], "method"),
        ("DELETE", "/m/x", &[], "one-method"),
        ("GET", "/m/x", &[], "fallback"),
        ("GET", "/h/x", &[("x-e", "1")], "exact"),
        ("GET", "/h/x", &[("x-e", "10")], "fallback"),
        ("GET", "/h/x", &[("x-p", "te-1")], "prefix"),
        ("GET", "/h/x", &[("x-p", "xte-1")], "fallback"),
        ("GET", "/h/x", &[("x-s", "a-z")], "suffix"),
        ("GET", "/h/x", &[("x-s", "a-z1")], "fallback"),
        ("GET", "/h/x", &[("x-r", "123")], "regex"),
        ("GET", "/h/x", &[("x-r", "12a")], "fallback"),
        ("GET", "/h/x", &[("x-present", "any")], "present"),
        ("GET", "/h/x", &[("x-presents", "1")], "fallback"),
        ("GET", "/h/absent", &[], "absent"),
        ("GET", "/h/absent", &[("x-gone", "1")], "fallback"),
        ("GET", "/q/x?debug=1&tenant=a", &[], "query"),
        ("GET", "/q/x?debug=1&tenant", &[], "query"),
        ("GET", "/q/x?debug=1", &[], "fallback"),
        ("GET", "/q/x?debug=2&tenant=a", &[], "fallback"),
        ("GET", "/q/x?v=beta2", &[], "query-prefix"),
        ("GET", "/q/x?v=2beta", &[], "fallback"),
        ("POST", "/test.Svc/Only", &grpc, "grpc-method"),
        ("POST", "/test.Svc/Other", &grpc, "grpc-service"),
        ("POST", "/test.Svc/Only", &[], "fallback"),
        ("POST", "/test.SvcX/Only", &grpc, "fallback"),
    ];
    let mut wrong = Vec::new();
    for (method, path, headers, expected) in cases {
        let got = via(port, method, "main.test", path, headers);
        if got != (200, expected.to_string()) {
            wrong.push(format!(
                "{method} {path} {headers:?}: {got:?}, not {expected}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "routed wrongly:\n{}\nEnvoy's log: {}",
        wrong.join("\n"),
        envoy.process.log.display()
    );

    // A prefix rewrite and header changes, as the backend and the client see them.
    let r = http::get(
        port,
        "/api/x?k=v",
        &[("host", "api.test"), ("x-internal", "secret")],
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let seen = r.body.to_ascii_lowercase();
    assert!(
        seen.starts_with("echo\nget /x?k=v http/1.1\n"),
        "{}",
        r.body
    );
    assert!(seen.contains("\nx-via: mesh\n"), "{}", r.body);
    assert!(!seen.contains("x-internal"), "{}", r.body);
    assert_eq!(r.header("x-served-by"), Some("routing"));
    assert_eq!(r.header("x-backend"), None, "removed from the response");
    // Without changes, the backend's own header reaches the client.
    let plain = http::get(port, "/", &[("host", "main.test")]).unwrap();
    assert_eq!(plain.header("x-backend"), Some("echo"));
    assert_eq!(plain.header("x-served-by"), None);

    // A whole-path rewrite keeps the query; the Host is replaced.
    let r = http::get(port, "/old?q=1", &[("host", "api.test")]).unwrap();
    let seen = r.body.to_ascii_lowercase();
    assert!(
        seen.starts_with("echo\nget /new?q=1 http/1.1\n"),
        "{}",
        r.body
    );
    assert!(seen.contains("\nhost: new.test\n"), "{}", r.body);
}

/// The JSON lines of an access log (other lines, such as Envoy's own log, left out).
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `access_log: { format: json }` writes one JSON line per request on Envoy's stdout, with
/// method, path, status, upstream and duration; with `path`, a TCP listener logs each
/// connection to that file. An HTTP stream idle past `idle_timeout` is ended (504).
#[test]
fn access_logs_are_json_lines_and_idle_streams_time_out() {
    let dir = TempDir::new("access-log");
    let echo = Backend::start_echo("echo").unwrap();
    let hang = Backend::start_with(
        "hang",
        0,
        std::sync::Arc::new(|_: &str| {
            std::thread::sleep(Duration::from_secs(30));
            "late\n".into()
        }),
    )
    .unwrap();
    let (port, tcp_port) = (free_port(), free_port());
    let tcp_log = dir.path().join("tcp.log");
    let catalog = format!(
        r#"
version: 1
proxies:
  {PROXY}:
    listeners:
      - name: public
        address: 127.0.0.1
        port: {port}
        protocol: http
        idle_timeout: 1s
        access_log: {{ format: json }}
        routes:
          - {{ match: {{ prefix: /hang }}, to: hang, timeout: 60s }}
          - {{ match: {{ prefix: / }}, to: echo }}
      - name: raw
        address: 127.0.0.1
        port: {tcp_port}
        protocol: tcp
        idle_timeout: 10s
        access_log: {{ format: json, path: {} }}
        to: echo
upstreams:
  echo: {{ protocol: http1, endpoints: {{ static: ["{}"] }} }}
  hang: {{ protocol: http1, endpoints: {{ static: ["{}"] }} }}
"#,
        tcp_log.display(),
        echo.endpoint(),
        hang.endpoint()
    );
    let (_server, envoy) = start(&dir, &catalog);
    wait_for("the listener to route", Duration::from_secs(20), || {
        http::get(port, "/", &[]).ok().filter(|r| r.status == 200)
    });
    let r = http::request("POST", port, "/logged?x=1", &[]).unwrap();
    assert_eq!(r.status, 200);
    let line = wait_for("the request's JSON line", Duration::from_secs(20), || {
        json_lines(&envoy.process.output())
            .into_iter()
            .find(|l| l["path"] == "/logged?x=1")
    });
    assert_eq!(line["method"], "POST", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["upstream"], "echo", "{line}");
    assert_eq!(line["upstream_host"], echo.endpoint(), "{line}");
    assert!(line["duration"].is_number(), "{line}");

    let r = http::get(port, "/hang", &[]).unwrap();
    // Envoy's answer to a stream idle while it waits for the upstream (a route timeout says
    // "upstream request timeout").
    assert_eq!(
        (r.status, r.body.as_str()),
        (504, "stream timeout"),
        "an idle stream is cut: {r:?}"
    );

    // Through the TCP listener: one line per connection, in the file.
    let r = http::get(tcp_port, "/via-tcp", &[]).unwrap();
    assert!(r.body.starts_with("echo\nGET /via-tcp"), "{r:?}");
    let line = wait_for(
        "the connection's JSON line",
        Duration::from_secs(20),
        || {
            let text = std::fs::read_to_string(&tcp_log).ok()?;
            json_lines(&text).into_iter().next()
        },
    );
    assert_eq!(line["upstream"], "echo", "{line}");
    assert!(line["bytes_sent"].as_u64() > Some(0), "{line}");
}

/// `n` `GET path` through 127.0.0.1:`port`, `parallel` at a time: how many got each (status,
/// body).
fn tally(
    port: u16,
    path: &str,
    n: usize,
    parallel: usize,
) -> std::collections::BTreeMap<(u16, String), usize> {
    let threads: Vec<_> = (0..parallel)
        .map(|t| {
            let path = path.to_string();
            std::thread::spawn(move || {
                let mut seen: std::collections::BTreeMap<(u16, String), usize> =
                    std::collections::BTreeMap::new();
                for _ in (t..n).step_by(parallel) {
                    let r =
                        http::get(port, &path, &[]).unwrap_or_else(|e| panic!("GET {path}: {e}"));
                    *seen
                        .entry((r.status, r.body.trim().to_string()))
                        .or_default() += 1;
                }
                seen
            })
        })
        .collect();
    let mut seen = std::collections::BTreeMap::new();
    for t in threads {
        for (k, c) in t.join().expect("the request thread ran") {
            *seen.entry(k).or_default() += c;
        }
    }
    seen
}

/// Mirroring and fault injection at their percentages. Each count is binomial; its bounds are
/// more than 5.1 standard deviations from the expected value, so a correct proxy falls outside
/// them less than once in 10^6 runs, and a proxy that ignores the percentage (0 or 100) never
/// falls inside.
#[test]
fn mirrors_and_faults_hold_their_percentages() {
    let dir = TempDir::new("mirror-fault");
    let primary = Backend::start("primary", 0).unwrap();
    let shadow = Backend::start("shadow", 0).unwrap();
    let port = free_port();
    let catalog = format!(
        r#"
version: 1
proxies:
  {PROXY}:
    listeners:
      - name: public
        address: 127.0.0.1
        port: {port}
        protocol: http
        routes:
          - {{ match: {{ prefix: /mirror }}, to: primary, mirror: {{ to: shadow, percent: 10 }} }}
          - {{ match: {{ prefix: /abort }}, to: primary, fault: {{ abort: {{ status: 503, percent: 20 }} }} }}
          - {{ match: {{ prefix: /delay }}, to: primary, fault: {{ delay: {{ fixed: 1ms, percent: 30 }} }} }}
          - {{ match: {{ prefix: /slow }}, to: primary, fault: {{ delay: {{ fixed: 300ms }} }} }}
          - {{ match: {{ prefix: / }}, to: primary }}
upstreams:
  primary: {{ protocol: http1, endpoints: {{ static: ["{}"] }} }}
  shadow: {{ protocol: http1, endpoints: {{ static: ["{}"] }} }}
"#,
        primary.endpoint(),
        shadow.endpoint()
    );
    let (_server, envoy) = start(&dir, &catalog);
    http::wait_for_body(port, "primary");

    // Mirror, 10 % of 1000: expected 100, standard deviation 9.5.
    let n = 1000;
    let seen = tally(port, "/mirror", n, 8);
    assert_eq!(
        seen,
        [((200, "primary".to_string()), n)].into(),
        "only the primary answers"
    );
    // Copies are sent without waiting: count them once Envoy has finished every one.
    let copies = wait_for("the copies to finish", Duration::from_secs(20), || {
        let total = envoy.stat("cluster.shadow.upstream_rq_total")?;
        let done = envoy.stat("cluster.shadow.upstream_rq_completed")?;
        (total == done && shadow.hits() == total).then_some(total)
    });
    assert!(
        (50..=150).contains(&copies),
        "{copies} of {n} mirrored, not about 10 %"
    );

    // Abort, 20 % of 600: expected 120, standard deviation 9.8. Aborted requests never reach
    // the upstream.
    let n = 600;
    let before = primary.hits();
    let seen = tally(port, "/abort", n, 8);
    let aborted = seen
        .iter()
        .filter(|((status, _), _)| *status == 503)
        .map(|(_, c)| *c)
        .sum::<usize>();
    assert_eq!(
        seen.get(&(200, "primary".into())),
        Some(&(n - aborted)),
        "{seen:?}"
    );
    assert!(
        (68..=172).contains(&aborted),
        "{aborted} of {n} aborted, not about 20 %"
    );
    assert_eq!(primary.hits() - before, (n - aborted) as u64);

    // Delay, 30 % of 600: expected 180, standard deviation 11.2; Envoy counts what it delayed.
    let seen = tally(port, "/delay", n, 8);
    assert_eq!(seen, [((200, "primary".to_string()), n)].into());
    let delayed = envoy.stat("http.public.fault.delays_injected").unwrap_or(0);
    assert!(
        (122..=238).contains(&delayed),
        "{delayed} of {n} delayed, not about 30 %"
    );

    // A request on the 100 % route is delayed, and takes about the delay (Envoy's timers may
    // fire a little early: a bound well below 300 ms, never a timing upper bound).
    let delays = envoy.stat("http.public.fault.delays_injected").unwrap_or(0);
    let start = std::time::Instant::now();
    assert_eq!(http::get(port, "/slow", &[]).unwrap().status, 200);
    let took = start.elapsed();
    assert_eq!(
        envoy.stat("http.public.fault.delays_injected").unwrap_or(0),
        delays + 1
    );
    assert!(took >= Duration::from_millis(250), "{took:?}");
}

/// A weighted TCP listener spreads connections by weight, within bounds (50 % of 600: expected
/// 300, standard deviation 12.2, bounds 5.2 of them away), and a member at weight 0 gets none.
#[test]
fn a_tcp_split_spreads_connections_by_weight_and_skips_weight_zero() {
    let dir = TempDir::new("tcp-split");
    let a = Backend::start("a", 0).unwrap();
    let b = Backend::start("b", 0).unwrap();
    let parked = Backend::start("parked", 0).unwrap();
    let port = free_port();
    let catalog = format!(
        r#"
version: 1
proxies:
  {PROXY}:
    listeners:
      - name: raw
        address: 127.0.0.1
        port: {port}
        protocol: tcp
        split: {{ a: 1, b: 1, parked: 0 }}
upstreams:
  a: {{ protocol: tcp, endpoints: {{ static: ["{}"] }} }}
  b: {{ protocol: tcp, endpoints: {{ static: ["{}"] }} }}
  parked: {{ protocol: tcp, endpoints: {{ static: ["{}"] }} }}
"#,
        a.endpoint(),
        b.endpoint(),
        parked.endpoint()
    );
    let (_server, envoy) = start(&dir, &catalog);
    wait_for("the listener to forward", Duration::from_secs(20), || {
        http::get(port, "/", &[]).ok().filter(|r| r.status == 200)
    });
    let n = 600;
    let seen = tally(port, "/", n, 8);
    let count = |name: &str| seen.get(&(200, name.to_string())).copied().unwrap_or(0);
    assert_eq!(count("a") + count("b"), n, "{seen:?}");
    assert!(
        (236..=364).contains(&count("a")),
        "{seen:?}; Envoy's log: {}",
        envoy.process.log.display()
    );
    assert_eq!(parked.hits(), 0, "a weight-0 member got connections");
}

/// A backend that answers `/slow` only once `release` is set (counting in `arrived` that such
/// a request came), anything else at once, with its name.
fn holding_backend(
    name: &str,
    release: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    arrived: &std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Backend {
    use std::sync::atomic::Ordering;
    let (release, arrived) = (release.clone(), arrived.clone());
    let body = format!("{name}\n");
    Backend::start_with(
        name,
        0,
        std::sync::Arc::new(move |path: &str| {
            if path.starts_with("/slow") {
                arrived.fetch_add(1, Ordering::SeqCst);
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                while !release.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            body.clone()
        }),
    )
    .unwrap()
}

/// `least_request`: while one of two hosts holds a request, most new requests go to the other
/// (Envoy compares two random picks, so the busy host still gets the requests where both picks
/// were it: a quarter; of 200, expected 50, standard deviation 6.1; round robin would give it
/// 100, the bound is 80). `ring_hash` on a header: each value goes to one backend every time,
/// and the values spread over the backends.
#[test]
fn least_request_avoids_a_busy_host_and_ring_hash_keeps_a_header_on_one_backend() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let dir = TempDir::new("lb");
    let release = std::sync::Arc::new(AtomicBool::new(false));
    let arrived = std::sync::Arc::new(AtomicU64::new(0));
    let busy = [
        holding_backend("l1", &release, &arrived),
        holding_backend("l2", &release, &arrived),
    ];
    let ring: Vec<Backend> = (1..=3)
        .map(|i| Backend::start(&format!("r{i}"), 0).unwrap())
        .collect();
    let list = |b: &[Backend]| {
        b.iter()
            .map(|b| format!("\"{}\"", b.endpoint()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let port = free_port();
    let catalog = format!(
        r#"
version: 1
proxies:
  {PROXY}:
    listeners:
      - name: public
        address: 127.0.0.1
        port: {port}
        protocol: http
        routes:
          - {{ match: {{ prefix: /ring }}, to: ring }}
          - {{ match: {{ prefix: / }}, to: least, timeout: 90s }}
upstreams:
  least:
    protocol: http1
    endpoints: {{ static: [{}] }}
    load_balancing: least_request
    max_connections: 100
    max_pending_requests: 100
  ring:
    protocol: http1
    endpoints: {{ static: [{}] }}
    load_balancing: ring_hash
    hash_on: {{ header: x-user }}
"#,
        list(&busy),
        list(&ring)
    );
    let (_server, envoy) = start(&dir, &catalog);
    wait_for("both hosts of `least`", Duration::from_secs(20), || {
        (envoy.stat("cluster.least.membership_total")? == 2
            && envoy.stat("cluster.ring.membership_total")? == 3)
            .then_some(())
    });

    let slow = std::thread::spawn(move || http::get(port, "/slow", &[]));
    wait_for(
        "the slow request to arrive",
        Duration::from_secs(20),
        || (arrived.load(Ordering::SeqCst) == 1).then_some(()),
    );
    let seen = tally(port, "/", 200, 1);
    release.store(true, Ordering::SeqCst);
    let slow = slow.join().expect("the slow request ran").unwrap();
    let held = slow.body.trim().to_string();
    let on_busy = seen.get(&(200, held.clone())).copied().unwrap_or(0);
    assert_eq!(seen.values().sum::<usize>(), 200, "{seen:?}");
    assert!(
        on_busy <= 80,
        "{on_busy} of 200 went to {held}, which held a request: {seen:?}"
    );

    let mut used = std::collections::BTreeSet::new();
    for user in 0..20 {
        let user = format!("user-{user}");
        let answers: std::collections::BTreeSet<String> = (0..4)
            .map(|_| {
                let r = http::get(port, "/ring", &[("x-user", &user)]).unwrap();
                assert_eq!(r.status, 200);
                r.body.trim().to_string()
            })
            .collect();
        assert_eq!(answers.len(), 1, "{user} went to {answers:?}");
        used.extend(answers);
    }
    assert!(used.len() >= 2, "20 users all went to {used:?}");
}

/// `xds-server render` shows every routing setting, as Envoy gets it (and `validate --envoy`
/// passes the catalog).
#[test]
fn render_shows_the_routing_settings() {
    let dir = TempDir::new("render-routing");
    let path = dir.write(
        "catalog.yaml",
        &format!(
            r#"
version: 1
proxies:
  {PROXY}:
    listeners:
      - name: public
        port: 8080
        protocol: http
        idle_timeout: 5m
        access_log: {{ format: json, path: /tmp/access.log }}
        virtual_hosts:
          - name: web
            domains: [web.local, "web.local:*"]
            routes:
              - match: {{ grpc: {{ service: a.B }}, method: POST, headers: {{ x-u: {{ suffix: z }} }}, query: {{ q: {{ present: true }} }} }}
                to: web
                rewrite: {{ prefix: /, host: web.internal }}
                request_headers: {{ add: {{ x-via: mesh }} }}
                mirror: {{ to: shadow, percent: 10 }}
                fault: {{ abort: {{ status: 503, percent: 1 }} }}
      - {{ name: raw, port: 9000, protocol: tcp, access_log: {{ format: text }}, split: {{ web: 1, shadow: 0 }} }}
upstreams:
  web: {{ protocol: http1, endpoints: {{ static: ["10.0.0.1:80"] }}, load_balancing: maglev, hash_on: {{ cookie: s, ttl: 1h }}, max_connections: 7 }}
  shadow: {{ protocol: http1, endpoints: {{ static: ["10.0.0.2:80"] }}, load_balancing: least_request }}
"#
        ),
    );
    assert_envoy_accepts(&path);
    let out = std::process::Command::new(tests::workspace_bin("xds-server"))
        .args(["render", "--proxy", PROXY, "--format", "json", "--catalog"])
        .arg(&path)
        .output()
        .expect("xds-server render runs");
    assert!(out.status.success(), "{out:?}");
    // Compact, to look for the fields as JSON writes them.
    let rendered: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("render prints JSON");
    let text = rendered.to_string();
    for shown in [
        r#""domains":["web.local","web.local:*"]"#,
        r#""grpc":{}"#,
        r#""present_match":true"#,
        r#""prefix_rewrite":"/""#,
        r#""host_rewrite_literal":"web.internal""#,
        r#""request_mirror_policies":[{"cluster":"shadow""#,
        r#""envoy.filters.http.fault""#,
        r#""http_status":503"#,
        r#""stream_idle_timeout":"300s""#,
        r#""envoy.access_loggers.file""#,
        r#""path":"/tmp/access.log""#,
        r#""duration":"%DURATION%""#,
        r#""envoy.access_loggers.stdout""#,
        r#""weighted_clusters":{"clusters":[{"name":"web","weight":1}]}"#,
        r#""lb_policy":"MAGLEV""#,
        r#""lb_policy":"LEAST_REQUEST""#,
        r#""cookie":{"name":"s","ttl":"3600s"}"#,
        r#""max_connections":7"#,
    ] {
        assert!(text.contains(shown), "render lacks {shown}: {text}");
    }
}
