use super::super::{parse, warnings};

/// The errors of a catalog with one HTTP listener whose body (after `protocol: http`) is
/// `listener`, as `path: message` lines.
fn errors(listener: &str) -> Vec<String> {
    match parse("c.yaml", &catalog(listener)) {
        Ok(_) => vec![],
        Err(e) => e.errors.iter().map(ToString::to_string).collect(),
    }
}

fn catalog(listener: &str) -> String {
    format!(
        r#"
version: 1
proxies:
  p:
    listeners:
      - name: l
        port: 8080
        protocol: http
{listener}
upstreams:
  web: {{ protocol: http1, endpoints: {{ static: ["10.0.0.1:80"] }} }}
  named: {{ protocol: http1, endpoints: {{ dns: {{ host: web.local, port: 80 }} }} }}
"#
    )
}

fn one_route(route: &str) -> Vec<String> {
    errors(&format!("        routes:\n          - {route}"))
}

#[test]
fn virtual_hosts_parse_and_validate() {
    let good = r#"        virtual_hosts:
          - { name: a, domains: [a.local, "a.local:*", "*.a.local"], routes: [ { match: { prefix: / }, to: web } ] }
          - { name: b, domains: ["*"], routes: [ { match: { prefix: / }, to: named } ] }"#;
    assert_eq!(errors(good), Vec::<String>::new());
    let c = parse("c.yaml", &catalog(good)).unwrap();
    let l = &c.proxies.values().next().unwrap().listeners[0];
    assert_eq!(l.virtual_hosts.len(), 2);
    assert_eq!(l.all_routes().count(), 2);
}

#[test]
fn virtual_host_problems_are_named_with_their_paths() {
    let both = r#"        routes: [ { match: { prefix: / }, to: web } ]
        virtual_hosts: [ { name: a, domains: [a], routes: [ { match: { prefix: / }, to: web } ] } ]"#;
    assert_eq!(
        errors(both),
        [
            "proxies.p.listeners[0].virtual_hosts: give `routes` (any Host) or `virtual_hosts`, not both"
        ]
    );
    let bad = r#"        virtual_hosts:
          - { name: a, domains: [A.local, "a*b", "**"], routes: [ { match: { prefix: / }, to: nowhere } ] }
          - { name: a, domains: [a.LOCAL], routes: [] }
          - { name: c, domains: [], routes: [ { match: { prefix: / }, to: web } ] }"#;
    assert_eq!(
        errors(bad),
        [
            r#"proxies.p.listeners[0].virtual_hosts[0].domains[1]: "a*b": a wildcard `*` stands once, first (`*.example.com`) or last (`example.*`), or alone"#,
            r#"proxies.p.listeners[0].virtual_hosts[0].domains[2]: "**": a wildcard `*` stands once, first (`*.example.com`) or last (`example.*`), or alone"#,
            r#"proxies.p.listeners[0].virtual_hosts[1].name: virtual host name "a" is already used by virtual_hosts[0]"#,
            r#"proxies.p.listeners[0].virtual_hosts[1].domains[0]: domain "a.LOCAL" is already taken by virtual_hosts[0] of this listener"#,
            "proxies.p.listeners[0].virtual_hosts[1].routes: a virtual host needs at least one route",
            "proxies.p.listeners[0].virtual_hosts[2].domains: needs at least one domain (`*` takes any Host)",
            r#"proxies.p.listeners[0].virtual_hosts[0].routes[0].to: upstream "nowhere" is not defined in `upstreams`"#,
        ]
    );
}

#[test]
fn match_conditions_are_checked_with_their_paths() {
    assert_eq!(
        one_route(
            r#"{ match: { grpc: { service: a.B, method: C }, method: [GET, POST], headers: { x-a: { regex: "[0-9]+" }, x-b: { absent: true } }, query: { q: "1", r: { present: true } } }, to: web }"#
        ),
        Vec::<String>::new()
    );
    let at = "proxies.p.listeners[0].routes[0].match";
    assert_eq!(
        one_route(
            r#"{ match: { prefix: /, grpc: { service: "a/B", method: "C.D" }, method: [GET, get], headers: { x-a: { regex: "(" }, x-b: { prefix: "" } }, query: { q: { absent: true } } }, to: web }"#
        ),
        [
            format!("{at}: needs exactly one of `prefix`, `path`, `regex`, `grpc`"),
            format!(r#"{at}.grpc.service: "a/B" is not a gRPC service name (package.Service)"#),
            format!(r#"{at}.grpc.method: "C.D" is not a gRPC method name"#),
            format!(
                r#"{at}.method[1]: "get" is not an HTTP method (GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH)"#
            ),
            format!(
                "{at}.headers.x-a.regex: invalid regular expression: regex parse error:\n    (\n    ^\nerror: unclosed group"
            ),
            format!(
                "{at}.headers.x-b: an empty prefix or suffix matches anything: use `present: true`"
            ),
            format!(
                "{at}.query.q: Envoy cannot match a missing query parameter; match what is there instead"
            ),
        ]
    );
    // Format errors: two kinds at once, `present: false`, a method that is no string (each
    // alone: the rest of the match is still checked).
    for (m, message) in [
        (
            "{ prefix: /, headers: { x-a: { prefix: a, suffix: b } } }",
            "headers.x-a: needs exactly one of prefix, suffix, regex, present, absent, not, range (2 given)",
        ),
        (
            "{ prefix: /, headers: { x-a: { present: false } } }",
            "headers.x-a: write `absent: true`, not `present: false`",
        ),
        (
            "{ prefix: /, method: 3 }",
            "method: expected a method (GET) or a list ([GET, POST])",
        ),
        (
            "{ prefix: /, headers: { x-a: { exact: a } } }",
            "headers.x-a: unknown field `exact`",
        ),
    ] {
        let got = one_route(&format!("{{ match: {m}, to: web }}"));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with(&format!("proxies.p.listeners[0].routes[0].match.{message}")),
            "{got:?}"
        );
    }
}

#[test]
fn rewrites_and_header_changes_are_checked_with_their_paths() {
    assert_eq!(
        one_route(
            "{ match: { prefix: /api/ }, to: named, rewrite: { prefix: /, host: auto }, request_headers: { add: { x-a: b }, remove: [x-c] }, response_headers: { add: { x-d: e } } }"
        ),
        Vec::<String>::new()
    );
    let at = "proxies.p.listeners[0].routes[0]";
    assert_eq!(
        one_route(
            r#"{ match: { regex: "/a.*" }, to: web, rewrite: { prefix: a, path: "/x?y", host: auto }, request_headers: { add: { host: b, X-A: c }, remove: [":path"] }, response_headers: { remove: [""] } }"#
        ),
        [
            format!("{at}.rewrite: give `prefix` or `path`, not both"),
            format!(r#"{at}.rewrite.prefix: "a" must start with '/'"#),
            format!(
                "{at}.rewrite.prefix: a regex match has no prefix to replace: use `rewrite.path`"
            ),
            format!(r#"{at}.rewrite.path: "/x?y" must start with '/' and hold no '?', '#' or '\'"#),
            format!(
                r#"{at}.rewrite.host: `auto` takes the upstream's DNS name, and upstream "web" has no `endpoints.dns`: give the name instead"#
            ),
            format!(
                "{at}.request_headers.add.X-A: header names must be non-empty lower case without spaces"
            ),
            format!(
                r#"{at}.request_headers.add.host: "host" cannot be changed here (the Host: `rewrite.host`)"#
            ),
            format!(
                r#"{at}.request_headers.remove[0]: ":path" cannot be changed here (the Host: `rewrite.host`)"#
            ),
            format!(
                "{at}.response_headers.remove[0]: header names must be non-empty lower case without spaces"
            ),
        ]
    );
    assert_eq!(
        one_route("{ match: { prefix: / }, to: web, rewrite: {} }"),
        [format!(
            "{at}.rewrite: sets nothing: give `prefix`, `path` or `host`"
        )]
    );
}

#[test]
fn shadowing_knows_methods_queries_grpc_and_virtual_hosts() {
    let warned = |routes: &str| -> Vec<String> {
        let c = parse("c.yaml", &catalog(&format!("        routes:\n{routes}"))).unwrap();
        // Shadowed routes only (the catalog's spare upstreams are warned about too).
        warnings(&c)
            .iter()
            .map(ToString::to_string)
            .filter(|w| w.contains("never matches"))
            .collect()
    };
    // A method list covers a route with fewer methods; a gRPC service covers its methods.
    let w = warned(
        "          - { match: { prefix: /, method: [GET, POST] }, to: web }\n          - { match: { prefix: /a, method: GET }, to: web }\n          - { match: { grpc: { service: a.B } }, to: web }\n          - { match: { grpc: { service: a.B, method: C } }, to: web }\n          - { match: { prefix: /a.B/, query: { q: \"1\" } }, to: web }",
    );
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[0].starts_with("proxies.p.listeners[0].routes[1]: never matches: routes[0] (prefix /, method GET|POST, any headers)"), "{w:?}");
    assert!(
        w[1].starts_with("proxies.p.listeners[0].routes[3]: never matches: routes[2] (grpc /a.B/"),
        "{w:?}"
    );
    // Not shadowed: more methods later, a condition the later route lacks, gRPC after a
    // prefix route with a gRPC-only condition.
    let w = warned(
        "          - { match: { prefix: /, method: GET }, to: web }\n          - { match: { prefix: /a, method: [GET, POST] }, to: web }\n          - { match: { prefix: /b, query: { q: \"1\" } }, to: web }\n          - { match: { prefix: /b/c }, to: web }\n          - { match: { grpc: { service: x.Y } }, to: web }\n          - { match: { prefix: /x.Y/ }, to: web }",
    );
    assert_eq!(w, Vec::<String>::new());
    // In virtual hosts, each one's routes on their own, with their paths.
    let c = parse(
        "c.yaml",
        &catalog(
            "        virtual_hosts:\n          - { name: a, domains: [a], routes: [ { match: { prefix: / }, to: web } ] }\n          - { name: b, domains: [b], routes: [ { match: { prefix: / }, to: web }, { match: { path: /x }, to: web } ] }",
        ),
    )
    .unwrap();
    let w: Vec<String> = warnings(&c)
        .iter()
        .filter(|w| w.path.starts_with("proxies."))
        .map(|w| w.path.clone())
        .collect();
    assert_eq!(w, ["proxies.p.listeners[0].virtual_hosts[1].routes[1]"]);
}

#[test]
fn mirrors_and_faults_are_checked_with_their_paths() {
    assert_eq!(
        one_route(
            "{ match: { prefix: / }, to: web, mirror: { to: named, percent: 0.5 }, fault: { delay: { fixed: 2s, percent: 5 }, abort: { status: 503 } } }"
        ),
        Vec::<String>::new()
    );
    let at = "proxies.p.listeners[0].routes[0]";
    assert_eq!(
        one_route(
            "{ match: { prefix: / }, to: web, mirror: { to: nowhere, percent: 101 }, fault: { delay: { fixed: 0s, percent: -1 }, abort: { status: 99 } } }"
        ),
        [
            format!(r#"{at}.mirror.to: upstream "nowhere" is not defined in `upstreams`"#),
            format!("{at}.mirror.percent: 101 is not a percentage (0-100)"),
            format!("{at}.fault.delay.fixed: 0ms is too short: Envoy needs at least 1ms here"),
            format!("{at}.fault.delay.percent: -1 is not a percentage (0-100)"),
            format!(
                "{at}.fault.abort.status: 99 is not an HTTP status Envoy answers with (200-599)"
            ),
        ]
    );
    assert_eq!(
        one_route("{ match: { prefix: / }, to: web, fault: {} }"),
        [format!(
            "{at}.fault: sets nothing: give `delay`, `abort` or both"
        )]
    );
}

#[test]
fn a_tcp_split_follows_the_route_split_rule() {
    let tcp = |body: &str| -> Vec<String> {
        let text = catalog("        routes: [ { match: { prefix: / }, to: web } ]").replace(
            "upstreams:\n",
            &format!("      - {{ name: t, port: 9, protocol: tcp, {body} }}\nupstreams:\n"),
        );
        match parse("c.yaml", &text) {
            Ok(_) => vec![],
            Err(e) => e.errors.iter().map(ToString::to_string).collect(),
        }
    };
    assert_eq!(tcp("split: { web: 1, named: 0 }"), Vec::<String>::new());
    let at = "proxies.p.listeners[1]";
    assert_eq!(
        tcp("split: { web: 0, named: 0 }"),
        [format!(
            "{at}.split: at least one weight must be greater than 0"
        )]
    );
    assert_eq!(
        tcp("to: web, split: { web: 1 }"),
        [format!("{at}: needs exactly one of `to` and `split`")]
    );
    assert_eq!(
        tcp(""),
        [format!(
            "{at}.to: a tcp listener needs `to` (or `split`, or `ports`)"
        )]
    );
    assert_eq!(
        errors("        split: { web: 1 }\n        routes: [ { match: { prefix: / }, to: web } ]"),
        ["proxies.p.listeners[0].split: an http listener splits in its routes, not with `split`"]
    );
}

#[test]
fn hash_on_goes_with_the_hashing_policies_only() {
    let upstream = |body: &str| -> Vec<String> {
        let text = catalog("        routes: [ { match: { prefix: / }, to: u } ]").replace(
            "upstreams:\n",
            &format!("upstreams:\n  u: {{ protocol: http1, endpoints: {{ static: [\"10.0.0.1:80\"] }}, {body} }}\n"),
        );
        match parse("c.yaml", &text) {
            Ok(_) => vec![],
            Err(e) => e.errors.iter().map(ToString::to_string).collect(),
        }
    };
    for good in [
        "load_balancing: least_request, max_connections: 10, max_pending_requests: 5",
        "load_balancing: random",
        "load_balancing: ring_hash, hash_on: { header: x-user }",
        "load_balancing: maglev, hash_on: { cookie: s, ttl: 1h }",
        "load_balancing: ring_hash, hash_on: { source_ip: true }",
    ] {
        assert_eq!(upstream(good), Vec::<String>::new(), "{good}");
    }
    for (bad, error) in [
        (
            "load_balancing: ring_hash",
            "upstreams.u.hash_on: ring_hash and maglev need `hash_on`",
        ),
        (
            "hash_on: { header: x-user }",
            "upstreams.u.hash_on: only ring_hash and maglev hash",
        ),
        (
            "load_balancing: maglev, hash_on: { header: x, source_ip: true }",
            "upstreams.u.hash_on: needs exactly one of",
        ),
        (
            "load_balancing: maglev, hash_on: { header: x, ttl: 1h }",
            "upstreams.u.hash_on.ttl: `ttl` is the lifetime of a `cookie`",
        ),
        (
            "load_balancing: maglev, hash_on: { header: X-User }",
            "upstreams.u.hash_on.header: header names must be",
        ),
        (
            "max_connections: 0",
            "upstreams.u.max_connections: 0 must be a positive whole number",
        ),
        (
            "max_pending_requests: -1",
            "upstreams.u.max_pending_requests: -1 must be a positive whole number",
        ),
        (
            "load_balancing: fastest",
            "upstreams.u.load_balancing: unknown variant `fastest`",
        ),
    ] {
        let got = upstream(bad);
        assert!(
            got.len() == 1 && got[0].starts_with(error),
            "{bad}: {got:?}"
        );
    }
}

#[test]
fn not_and_range_match_headers_only() {
    assert_eq!(
        one_route(
            r#"{ match: { prefix: /, headers: { x-a: { not: red }, x-b: { not: { prefix: t- } }, x-n: { range: { start: 1, end: 10 } } } }, to: web }"#
        ),
        Vec::<String>::new()
    );
    let at = "proxies.p.listeners[0].routes[0].match";
    assert_eq!(
        one_route(
            r#"{ match: { prefix: /, headers: { x-a: { not: { regex: "(" } }, x-n: { range: { start: 5, end: 5 } } }, query: { q: { not: a }, r: { range: { start: 1, end: 2 } } } }, to: web }"#
        ),
        [
            format!(
                "{at}.headers.x-a.not.regex: invalid regular expression: regex parse error:\n    (\n    ^\nerror: unclosed group"
            ),
            format!("{at}.headers.x-n.range: start 5 is not below end 5: the range takes nothing"),
            format!(
                "{at}.query.q: `not` and `range` match headers only (Envoy's query matches have neither)"
            ),
            format!(
                "{at}.query.r: `not` and `range` match headers only (Envoy's query matches have neither)"
            ),
        ]
    );
}
