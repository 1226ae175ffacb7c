use super::super::fragments::Document;
use super::super::{merge, parse, warnings};

/// The catalog of one proxy `w` with the gRPC service entries `services` (YAML list items at
/// the indentation of `grpc_services`) and a listener `web`.
fn catalog(services: &str) -> String {
    format!(
        r#"
version: 1
defaults: {{ route_timeout: 9s, retries: {{ attempts: 2 }} }}
proxies:
  w:
    listeners:
      - {{ name: web, port: 8080, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: c }} ] }}
    grpc_services:
{services}
  callee:
    listeners:
      - {{ name: in, port: 15000, protocol: http, tls: {{ certificate: mesh }}, routes: [ {{ match: {{ prefix: / }}, to: c }} ] }}
upstreams:
  c: {{ protocol: grpc, endpoints: {{ static: ["10.0.0.1:50051"] }} }}
  c2: {{ protocol: grpc, endpoints: {{ static: ["10.0.0.2:50051"] }}, health_check: {{ grpc: {{}} }} }}
  h1: {{ protocol: http1, endpoints: {{ static: ["10.0.0.3:80"] }} }}
  named: {{ protocol: grpc, endpoints: {{ dns: {{ host: c.local, port: 50051 }} }} }}
  tls: {{ protocol: grpc, endpoints: {{ static: ["10.0.0.4:50051"] }}, tls: {{ trust: system, sni: c.example }} }}
  maglev: {{ protocol: grpc, endpoints: {{ static: ["10.0.0.5:50051"] }}, load_balancing: maglev, hash_on: {{ header: x-user }} }}
  lr: {{ protocol: grpc, endpoints: {{ static: ["10.0.0.6:50051"] }}, load_balancing: least_request }}
  mesh: {{ protocol: grpc, endpoints: {{ static: ["10.0.0.7:50051"] }}, tls: {{ mesh: callee }} }}
  tuned: {{ protocol: grpc, endpoints: {{ static: ["10.0.0.8:50051"] }}, outlier_detection: {{}}, max_connections: 10, connect_timeout: 1s, zone_aware: true }}
  bin: {{ protocol: grpc, endpoints: {{ static: ["10.0.0.9:50051"] }}, load_balancing: ring_hash, hash_on: {{ header: x-id-bin }} }}
"#
    )
}

fn errors(services: &str) -> Vec<String> {
    match parse("c.yaml", &catalog(services)) {
        Ok(_) => vec![],
        Err(e) => e.errors.iter().map(ToString::to_string).collect(),
    }
}

/// The errors of one service `s.example:50051` whose only route is `route`.
fn route_errors(route: &str) -> Vec<String> {
    errors(&format!(
        "      - name: s.example:50051\n        routes:\n          - {route}"
    ))
}

const AT: &str = "proxies.w.grpc_services[0].routes[0]";

#[test]
fn a_grpc_service_parses_beside_listeners() {
    let text = catalog(
        r#"      - name: connector.prism-test.atala.local:50051
        routes:
          - { match: { grpc: { service: a.B } }, to: c, timeout: 3s, retries: { attempts: 3, on: [unavailable] } }
          - { match: { prefix: /, headers: { x-canary: "1" } }, split: { c2: 10, c: 90 } }
          - { match: { prefix: / }, to: c }
      - { name: plain-name, routes: [ { match: { prefix: / }, to: c } ] }"#,
    );
    let c = parse("c.yaml", &text).unwrap();
    let p = c.proxies.iter().find(|(n, _)| n.0 == "w").unwrap().1;
    assert_eq!(p.listeners.len(), 1);
    assert_eq!(p.grpc_services.len(), 2);
    assert_eq!(
        p.grpc_services[0].name,
        "connector.prism-test.atala.local:50051"
    );
    // gRPC clients run no health checks: said, not hidden.
    let w: Vec<String> = warnings(&c)
        .iter()
        .map(ToString::to_string)
        .filter(|w| w.starts_with("proxies."))
        .collect();
    assert_eq!(
        w,
        [
            r#"proxies.w.grpc_services[0].routes[1]: upstream "c2" has a health_check, which gRPC clients do not run: they skip endpoints they cannot connect to (Envoys that route to it still check)"#
        ]
    );
}

#[test]
fn a_proxy_may_have_grpc_services_only() {
    let text = r#"
version: 1
proxies:
  w:
    grpc_services: [ { name: "s:1", routes: [ { match: { prefix: / }, to: c } ] } ]
upstreams:
  c: { protocol: grpc, endpoints: { static: ["10.0.0.1:50051"] } }
"#;
    let c = parse("c.yaml", text).unwrap();
    assert!(c.proxies.values().next().unwrap().listeners.is_empty());
}

#[test]
fn names_are_target_authorities_unique_among_services_and_listeners() {
    let e = errors(
        r#"      - { name: "a b", routes: [ { match: { prefix: / }, to: c } ] }
      - { name: "s:0", routes: [ { match: { prefix: / }, to: c } ] }
      - { name: "s:50051", routes: [ { match: { prefix: / }, to: c } ] }
      - { name: "s:50051", routes: [ { match: { prefix: / }, to: c } ] }
      - { name: web, routes: [ { match: { prefix: / }, to: c } ] }
      - { name: empty, routes: [] }"#,
    );
    assert_eq!(
        e,
        [
            r#"proxies.w.grpc_services[0].name: "a b" is not the authority of an xds:/// target (HOST or HOST:PORT)"#,
            r#"proxies.w.grpc_services[1].name: "s:0" is not the authority of an xds:/// target (HOST or HOST:PORT)"#,
            r#"proxies.w.grpc_services[3].name: "s:50051" is already grpc_services[2]"#,
            r#"proxies.w.grpc_services[4].name: "web" is also the name of listeners[0]: they share the LDS and RDS names of this proxy"#,
            "proxies.w.grpc_services[5].routes: a gRPC service needs at least one route",
        ]
    );
}

#[test]
fn listener_settings_are_refused_with_why() {
    let e = errors(
        r#"      - name: s
        port: 50051
        cors: { allow_origins: ["*"] }
        access_log: { format: json }
        routes: [ { match: { prefix: / }, to: c } ]"#,
    );
    assert_eq!(
        e,
        [
            "proxies.w.grpc_services[0].port: a gRPC client listens on nothing: it dials `xds:///NAME` and sends each call to an endpoint itself",
            "proxies.w.grpc_services[0].cors: gRPC clients do not speak CORS (browsers do): serve them through a proxy listener with `grpc_web` and `cors`",
            "proxies.w.grpc_services[0].access_log: gRPC clients write no access log from xDS: log in the client or the server",
        ]
    );
    // Anything else is an unknown field, as everywhere in the catalog.
    let e =
        errors("      - { name: s, routes: [ { match: { prefix: / }, to: c } ], protcol: http }");
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("proxies.w.grpc_services[0].protcol: unknown field `protcol`"),
        "{e:?}"
    );
}

#[test]
fn route_features_grpc_clients_lack_are_refused_with_their_paths() {
    let e = route_errors(
        r#"{ match: { prefix: /, method: POST, query: { a: b }, headers: { x-id-bin: { present: true } } }, to: c, rewrite: { prefix: /v2/ }, request_headers: { add: { x-a: b } }, response_headers: { remove: [x-b] }, mirror: { to: c2 }, fault: { abort: { status: 503 } } }"#,
    );
    let want: Vec<String> = [
        "rewrite: gRPC clients do not rewrite paths or authorities",
        "request_headers: gRPC clients do not change request headers from xDS: set metadata in the client",
        "response_headers: gRPC clients do not change response headers from xDS",
        "mirror: gRPC clients do not mirror calls",
        "fault: gRPC services get the router filter only: fault injection needs a proxy listener",
        "match.method: every gRPC call is a POST: match the call's path (`grpc: { service, method }`)",
        "match.query: gRPC calls have no query string (gRPC clients skip such routes)",
        "match.headers.x-id-bin: gRPC clients never match binary (`-bin`) metadata",
    ]
    .iter()
    .map(|m| format!("{AT}.{m}"))
    .collect();
    assert_eq!(e, want);
}

#[test]
fn header_matches_a_call_never_has_are_refused() {
    let e = route_errors(
        r#"{ match: { prefix: /, headers: { ":authority": a.example, host: { present: true }, x-user: u1 } }, to: c }"#,
    );
    let why = "gRPC clients match their call's metadata only, which has no pseudo-headers or host: match the service and method with `prefix` or `path`";
    assert_eq!(
        e,
        [
            format!("{AT}.match.headers.:authority: {why}"),
            format!("{AT}.match.headers.host: {why}"),
        ]
    );
    let e = route_errors("{ match: { prefix: / }, to: bin }");
    assert_eq!(
        e,
        [format!(
            r#"{AT}.to: upstream "bin" hashes on a header gRPC clients never have (a pseudo-header, host, or `-bin` metadata): hash on plain metadata"#
        )]
    );
}

#[test]
fn settings_grpc_clients_ignore_are_warned_about() {
    let c = parse(
        "c.yaml",
        &catalog(
            "      - { name: s.example:50051, routes: [ { match: { prefix: / }, to: tuned } ] }",
        ),
    )
    .unwrap();
    let w: Vec<String> = warnings(&c)
        .iter()
        .map(ToString::to_string)
        .filter(|w| w.starts_with("proxies.w.grpc"))
        .collect();
    let at = "proxies.w.grpc_services[0].routes[0]: upstream \"tuned\"";
    assert_eq!(
        w,
        [
            format!(
                "{at} has outlier_detection, of which gRPC clients ignore consecutive_5xx: they eject on success rate only (gRFC A50, with Envoy's defaults, which need 5 endpoints of 100 calls each per interval), taking its interval, base_ejection_time and max_ejection_percent"
            ),
            format!(
                "{at} sets max_connections or max_pending_requests, which gRPC clients ignore: of the circuit breakers they honour max_requests only"
            ),
            format!(
                "{at} sets connect_timeout, which gRPC clients ignore: they connect with their own backoff"
            ),
            format!(
                "{at} is zone_aware: gRPC clients send to the other zones only when no endpoint of their own zone is reachable, not when too few are healthy as Envoy does"
            ),
        ]
    );
}

#[test]
fn retries_take_the_shape_of_grpc_a44() {
    let e = route_errors(
        "{ match: { prefix: / }, to: c, retries: { attempts: 0, on: [unavailable, connect-failure], per_try_timeout: 1s } }",
    );
    assert_eq!(
        e,
        [
            format!(
                "{AT}.retries.attempts: gRPC clients refuse a retry policy of 0 retries: leave `retries` out"
            ),
            format!(
                "{AT}.retries.per_try_timeout: gRPC clients have no per-try timeout: the call's deadline (or the route's `timeout`) bounds all attempts"
            ),
            format!(
                r#"{AT}.retries.on[1]: gRPC clients retry on status codes only (cancelled, deadline-exceeded, internal, resource-exhausted, unavailable), not on "connect-failure""#
            ),
        ]
    );
    // At most 5 attempts: a larger number would be capped without a word.
    let e = route_errors(
        "{ match: { prefix: / }, to: c, retries: { attempts: 5, on: [unavailable] } }",
    );
    assert_eq!(
        e,
        [format!(
            "{AT}.retries.attempts: gRPC clients make at most 5 attempts, so at most 4 retries (they cap a larger number silently)"
        )]
    );
    assert_eq!(
        route_errors(
            "{ match: { prefix: / }, to: c, retries: { attempts: 4, on: [unavailable] } }"
        ),
        Vec::<String>::new()
    );
    let e = route_errors("{ match: { prefix: / }, to: c, retries: { attempts: 2 } }");
    assert_eq!(
        e,
        [format!(
            "{AT}.retries.on: required for a gRPC service: the status codes to retry, of cancelled, deadline-exceeded, internal, resource-exhausted, unavailable (gRPC clients retry connection failures by themselves)"
        )]
    );
    // The catalog's default retries (connection failures) are a proxy's: a service without
    // `retries` is valid.
    assert_eq!(
        route_errors("{ match: { prefix: / }, to: c }"),
        Vec::<String>::new()
    );
}

#[test]
fn upstreams_grpc_clients_cannot_reach_are_refused() {
    let e = route_errors(
        "{ match: { prefix: / }, split: { h1: 1, named: 1, tls: 1, maglev: 1, lr: 1 } }",
    );
    assert_eq!(
        e,
        [
            format!(
                r#"{AT}.split.h1: upstream "h1" must have protocol grpc (or http2): gRPC clients call its endpoints directly"#
            ),
            format!(
                r#"{AT}.split.lr: upstream "lr" has a load_balancing policy gRPC clients do not take from a cluster (they take round_robin and ring_hash)"#
            ),
            format!(
                r#"{AT}.split.maglev: upstream "maglev" has a load_balancing policy gRPC clients do not take from a cluster (they take round_robin and ring_hash)"#
            ),
            format!(
                r#"{AT}.split.named: upstream "named" takes its endpoints from `dns`, which Envoy resolves itself: gRPC clients need endpoints the control plane discovers (static, file, cloud_map, ecs)"#
            ),
            format!(
                r#"{AT}.split.tls: upstream "tls" has `tls` other than `{{ mesh: NAME }}`: gRPC clients take their certificate and trust from the certificate provider of their bootstrap (`xds-server bootstrap --grpc --identity-dir`), which holds their mesh identity only"#
            ),
        ]
    );
    // Mesh TLS is what they take.
    assert_eq!(
        route_errors("{ match: { prefix: / }, to: mesh }"),
        Vec::<String>::new()
    );
    // The checks every route gets apply too.
    let e = route_errors("{ match: { prefix: nope }, to: missing }");
    assert_eq!(
        e,
        [
            format!(r#"{AT}.match.prefix: "nope" must start with '/'"#),
            format!(r#"{AT}.to: upstream "missing" is not defined in `upstreams`"#),
        ]
    );
}

#[test]
fn an_upstream_of_another_fragment_is_checked_too() {
    let wallet = r#"
version: 1
proxies:
  w:
    grpc_services: [ { name: "s:1", routes: [ { match: { prefix: / }, to: c } ] } ]
"#;
    let upstream = |endpoints: &str| {
        format!("version: 1\nupstreams:\n  c: {{ protocol: grpc, endpoints: {endpoints} }}\n")
    };
    let good = [
        Document::new("dir/wallet.yaml", wallet),
        Document::new("dir/c.yaml", upstream(r#"{ static: ["10.0.0.1:50051"] }"#)),
    ];
    assert!(merge("dir", &good).is_ok());
    let bad = [
        Document::new("dir/wallet.yaml", wallet),
        Document::new(
            "dir/c.yaml",
            upstream("{ dns: { host: c.local, port: 50051 } }"),
        ),
    ];
    let e = merge("dir", &bad).unwrap_err().to_string();
    assert!(
        e.contains(r#"proxies.w.grpc_services[0].routes[0].to: upstream "c" takes its endpoints from `dns`"#),
        "{e}"
    );
}

#[test]
fn did_you_mean_proposes_no_field_refused_under_a_grpc_service() {
    let service = errors(
        "      - { name: s.example:50051, prot: 1, routes: [ { match: { prefix: / }, to: c } ] }",
    );
    assert_eq!(service.len(), 1, "{service:?}");
    assert!(service[0].contains("unknown field `prot`"), "{service:?}");
    for refused in ["`port`", "`cors`", "`tls`", "did you mean"] {
        assert!(!service[0].contains(refused), "{service:?}");
    }
    let route = route_errors("{ match: { prefix: / }, to: c, mirorr: { to: c2 } }");
    assert_eq!(route.len(), 1, "{route:?}");
    assert!(!route[0].contains("mirror"), "{route:?}");
    assert!(route[0].contains("`retries`"), "{route:?}");
    let matcher = route_errors("{ match: { prefix: /, methd: [GET] }, to: c }");
    assert!(!matcher[0].contains("did you mean `method`"), "{matcher:?}");
    // The same slip under an HTTP listener still gets its suggestion.
    let listener = parse(
        "c.yaml",
        &catalog("      - { name: s.example:50051, routes: [ { match: { prefix: / }, to: c } ] }")
            .replace(
                "to: c } ] }\n    grpc",
                "to: c, mirorr: { to: c2 } } ] }\n    grpc",
            ),
    )
    .unwrap_err()
    .errors[0]
        .to_string();
    assert!(listener.contains("did you mean `mirror`"), "{listener}");
}
