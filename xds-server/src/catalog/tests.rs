use super::*;

const GOOD: &str = r#"
version: 1
defaults:
  connect_timeout: 2s
  route_timeout: 15s
  retries: { attempts: 2, on: [connect-failure, refused-stream, unavailable, reset] }
proxies:
  intdemo:
    listeners:
      - name: public
        port: 8080
        protocol: http
        grpc_web: true
        cors: { allow_origins: ["https://example.org"] }
        routes:
          - match: { prefix: /io.iohk.atala.prism.protos.ConnectorService/ }
            to: connector
            timeout: 30s
          - match: { prefix: /, headers: { x-canary: "1" } }
            split: { web-v2: 90, web-v1: 10 }
            retries: { attempts: 3, on: [unavailable] }
          - match: { prefix: / }
            to: web-v1
      - name: bitcoind
        port: 18332
        protocol: tcp
        to: bitcoind
upstreams:
  connector:
    protocol: grpc
    port: 50051
    endpoints: { static: ["10.0.3.1:50051"] }
    health_check: { grpc: {}, interval: 5s }
    outlier_detection: { consecutive_5xx: 5, base_ejection_time: 30s }
    max_requests: 1024
  web-v1:
    protocol: http1
    endpoints: { static: ["10.0.1.5:80", "10.0.2.7:80"] }
  web-v2:
    protocol: http1
    endpoints: { file: endpoints/web-v2.json }
  bitcoind:
    protocol: tcp
    endpoints: { dns: { host: bitcoind.prism-test.atala.local, port: 18332 } }
"#;

fn errors(text: &str) -> Vec<String> {
    match parse("catalog.yaml", text) {
        Ok(_) => vec![],
        Err(e) => e.errors.iter().map(ToString::to_string).collect(),
    }
}

/// Asserts that one of `errs` names `path` and says `words`.
fn has_error(errs: &[String], path: &str, words: &str) {
    assert!(
        errs.iter().any(|e| e.contains(path) && e.contains(words)),
        "{path}: {words} in {errs:?}"
    )
}

#[test]
fn parses_the_design_example() {
    let c = parse("catalog.yaml", GOOD).unwrap();
    assert_eq!(c.proxies.len(), 1);
    assert_eq!(c.upstreams.len(), 4);
    let public = &c.proxies[&ProxyName("intdemo".into())].listeners[0];
    assert_eq!(public.routes[1].split.as_ref().unwrap().len(), 2);
    assert_eq!(
        c.defaults.route_timeout.unwrap().get(),
        std::time::Duration::from_secs(15)
    );
}

#[test]
fn json_parses_like_yaml() {
    let yaml = parse("catalog.yaml", GOOD).unwrap();
    let value: serde_json::Value = serde_saphyr::from_str(GOOD).unwrap();
    let json = parse("catalog.json", &value.to_string()).unwrap();
    assert_eq!(yaml, json);
}

#[test]
fn unknown_field_is_named_with_its_path() {
    let text = GOOD.replace("grpc_web: true", "grpc_web: true\n        colour: blue");
    let e = errors(&text);
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("proxies.intdemo.listeners[0].colour: unknown field `colour`"),
        "{e:?}"
    );
    assert!(!e[0].contains("did you mean"), "{e:?}");
    // A slip gets the nearest valid name.
    let slip = errors(&GOOD.replace("grpc_web: true", "grcp_web: true"));
    assert!(slip[0].ends_with("(did you mean `grpc_web`?)"), "{slip:?}");
}

#[test]
fn bad_duration_is_named_with_its_path() {
    let e = errors(&GOOD.replace("timeout: 30s", "timeout: 30 seconds"));
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with(
            "proxies.intdemo.listeners[0].routes[0].timeout: \"30 seconds\" is not a duration"
        ),
        "{e:?}"
    );
}

#[test]
fn endpoint_without_port_reads_as_the_design_says() {
    let e = errors(&GOOD.replace("\"10.0.2.7:80\"", "\"10.0.2.7\""));
    assert_eq!(
        e,
        vec![r#"upstreams.web-v1.endpoints.static[1]: "10.0.2.7" has no port"#]
    );
}

#[test]
fn every_semantic_error_is_reported_at_once() {
    let text = GOOD
        .replace("to: connector", "to: nowhere")
        .replace(
            "port: 18332\n        protocol: tcp",
            "port: 8080\n        protocol: tcp",
        )
        .replace("web-v1: 10 }", "web-v1: -1 }")
        .replace("max_requests: 1024", "max_requests: 0");
    let e = errors(&text);
    assert_eq!(
        e,
        vec![
            r#"proxies.intdemo.listeners[0].routes[0].to: upstream "nowhere" is not defined in `upstreams`"#,
            r#"proxies.intdemo.listeners[0].routes[1].split.web-v1: weight -1 is not 0-4294967295"#,
            r#"proxies.intdemo.listeners[1].port: port 8080 is already used by listener "public""#,
            r#"upstreams.connector.max_requests: 0 must be a positive whole number"#,
        ]
    );
}

#[test]
fn port_range_and_sources_are_checked() {
    let text = GOOD
        .replace(
            "port: 18332\n        protocol",
            "port: 70000\n        protocol",
        )
        .replace(
            "endpoints: { file: endpoints/web-v2.json }",
            "endpoints: { file: a.json, static: [] }",
        );
    let e = errors(&text);
    assert!(
        e.contains(
            &"proxies.intdemo.listeners[1].port: port 70000 is out of range (1-65535)".to_string()
        ),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m.starts_with("upstreams.web-v2.endpoints: needs exactly one source")),
        "{e:?}"
    );
}

#[test]
fn routes_to_tcp_upstreams_and_bad_regex_are_refused() {
    let text = GOOD.replace(
        "- match: { prefix: / }\n            to: web-v1",
        "- match: { regex: \"(\" }\n            to: bitcoind",
    );
    let e = errors(&text);
    assert!(
        e.iter().any(|m| m.starts_with(
            "proxies.intdemo.listeners[0].routes[2].match.regex: invalid regular expression"
        )),
        "{e:?}"
    );
    assert!(e.iter().any(|m| m.contains("has protocol tcp")), "{e:?}");
}

#[test]
fn empty_and_wrong_version_documents_are_refused() {
    assert_eq!(errors(""), vec!["the document is empty"]);
    assert_eq!(
        errors("version: 2\n"),
        vec!["version: version 2 is not supported (only 1)"]
    );
    let e = parse("/etc/catalog.yaml", "version: [").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/etc/catalog.yaml: 1 error\n  invalid YAML"),
        "{e}"
    );
}

const FRAGMENT_B: &str = r#"
version: 1
defaults: { route_timeout: 3s, connect_timeout: 1s }
proxies:
  shop:
    listeners:
      - name: public
        port: 8081
        protocol: http
        routes:
          - match: { prefix: / }
            to: shop-web
          - match: { prefix: /slow }
            to: shop-web
            timeout: 20s
upstreams:
  shop-web:
    protocol: http1
    endpoints: { static: ["10.0.4.1:80"] }
"#;

fn fragments(docs: &[(&str, &str)]) -> Vec<fragments::Document> {
    docs.iter()
        .map(|(n, t)| fragments::Document::new(*n, t.as_bytes()))
        .collect()
}

#[test]
fn fragments_merge_with_their_own_defaults() {
    let merged = merge(
        "catalog.d",
        &fragments(&[("a.yaml", GOOD), ("b.yaml", FRAGMENT_B)]),
    )
    .unwrap();
    let names: Vec<&str> = merged.proxies.keys().map(|p| p.0.as_str()).collect();
    assert_eq!(names, ["intdemo", "shop"]);
    assert_eq!(merged.upstreams.len(), 5);
    assert_eq!(merged.defaults, Defaults::default());
    let shop = &merged.proxies[&ProxyName("shop".into())].listeners[0].routes;
    assert_eq!(shop[0].timeout, Some(secs(3)));
    assert_eq!(shop[1].timeout, Some(secs(20)));
    // B sets no retries; A's defaults do not leak into B.
    assert_eq!(shop[0].retries, None);
    let web = &merged.upstreams[&UpstreamName("shop-web".into())];
    assert_eq!(web.connect_timeout, Some(secs(1)));
    let intdemo = &merged.proxies[&ProxyName("intdemo".into())].listeners[0].routes;
    assert_eq!(intdemo[0].timeout, Some(secs(30)));
    assert_eq!(intdemo[2].timeout, Some(secs(15)));
    assert_eq!(intdemo[2].retries.as_ref().map(|r| r.attempts), Some(2));
}

#[test]
fn a_name_in_two_fragments_is_refused_naming_both() {
    let again = FRAGMENT_B
        .replace("shop-web", "web-v1")
        .replace("shop:", "intdemo-b:");
    let e = merge(
        "catalog.d",
        &fragments(&[("catalog.d/a.yaml", GOOD), ("catalog.d/b.yaml", &again)]),
    )
    .unwrap_err();
    assert_eq!(e.source_name, "catalog.d");
    // Nothing served before says which is right: both are refused, each naming the other.
    let text: Vec<String> = e.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "a.yaml: upstreams.web-v1: also defined in b.yaml",
            "b.yaml: upstreams.web-v1: also defined in a.yaml"
        ]
    );
    let e = merge(
        "catalog.d",
        &fragments(&[("catalog.d/a.yaml", GOOD), ("catalog.d/b.yaml", GOOD)]),
    )
    .unwrap_err();
    assert_eq!(
        e.errors[0].to_string(),
        "a.yaml: proxies.intdemo: also defined in b.yaml"
    );
}

#[test]
fn every_fragments_problems_are_reported_with_its_name() {
    // A route may name any fragment's upstream, but one that no fragment defines is an error.
    let borrowing = FRAGMENT_B.replace(
        "to: shop-web\n          - match: { prefix: /slow }",
        "to: web-v3\n          - match: { prefix: /slow }",
    );
    let e = merge(
        "catalog.d",
        &fragments(&[
            ("catalog.d/a.json", "{"),
            ("catalog.d/b.yaml", GOOD),
            ("catalog.d/c.yaml", &borrowing),
        ]),
    )
    .unwrap_err();
    assert_eq!(e.source_name, "catalog.d");
    let text: Vec<String> = e.errors.iter().map(ToString::to_string).collect();
    assert_eq!(text.len(), 2, "{text:#?}");
    assert!(text[0].starts_with("a.json: invalid JSON"), "{text:#?}");
    assert_eq!(
        text[1],
        r#"c.yaml: proxies.shop.listeners[0].routes[0].to: upstream "web-v3" is not defined in `upstreams`"#,
    );
}

#[test]
fn a_route_may_name_an_upstream_of_another_fragment() {
    let borrowing = FRAGMENT_B.replace(
        "to: shop-web\n          - match: { prefix: /slow }",
        "to: web-v1\n          - match: { prefix: /slow }",
    );
    let merged = merge(
        "catalog.d",
        &fragments(&[("a.yaml", GOOD), ("c.yaml", &borrowing)]),
    )
    .unwrap();
    let shop = &merged.proxies[&ProxyName("shop".into())].listeners[0].routes;
    assert_eq!(shop[0].to, Some(UpstreamName("web-v1".into())));
    // The borrowed upstream keeps its own fragment's defaults (a.yaml: connect_timeout 2s).
    let web = &merged.upstreams[&UpstreamName("web-v1".into())];
    assert_eq!(web.connect_timeout, Some(secs(2)));
}

#[test]
fn no_fragments_give_a_catalog_without_proxies() {
    let empty = merge("catalog.d", &[]).unwrap();
    assert!(empty.proxies.is_empty() && empty.upstreams.is_empty());
}

#[test]
fn a_directory_merges_its_yaml_and_json_files_only() {
    let dir = std::env::temp_dir().join(format!("xds-catalog-dir-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sub.yaml")).unwrap();
    std::fs::write(dir.join("a.yaml"), GOOD).unwrap();
    std::fs::write(dir.join("b.yml"), FRAGMENT_B).unwrap();
    std::fs::write(dir.join("README.md"), "not a catalog").unwrap();
    std::fs::write(dir.join(".b.yml.swp"), "{").unwrap();
    let loaded = load_path(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    let loaded = loaded.unwrap();
    assert_eq!(loaded.catalog.proxies.len(), 2);
    assert_eq!(loaded.base_dir, dir);
}

fn secs(n: u64) -> Duration {
    Duration(std::time::Duration::from_secs(n))
}

#[test]
fn a_catalog_moved_into_a_directory_gives_envoy_the_same_resources() {
    use crate::catalog::EndpointMap;
    use crate::translate::translate;
    let alone = parse("catalog.yaml", GOOD).unwrap();
    let merged = merge(
        "catalog.d",
        &fragments(&[("a.yaml", GOOD), ("b.yaml", FRAGMENT_B)]),
    )
    .unwrap();
    let proxy = ProxyName("intdemo".into());
    let endpoints = EndpointMap::new();
    assert_eq!(
        translate(&alone, &proxy, &endpoints),
        translate(&merged, &proxy, &endpoints)
    );
}

#[test]
fn format_errors_are_reported_together_several_in_one_entry() {
    let text = GOOD
        .replace("grpc_web: true", "grpc_web: true\n        colour: blue")
        .replace("timeout: 30s", "timeout: 30 seconds")
        .replace(
            "protocol: http1\n    endpoints: { static",
            "protocol: http9\n    endpoints: { static",
        )
        .replace("version: 1", "version: 1\nowner: platform");
    let e = errors(&text);
    assert_eq!(e.len(), 4, "{e:#?}");
    assert!(e[0].starts_with("owner: unknown field `owner`"), "{e:#?}");
    // One proxy, two problems: both.
    assert!(
        e[1].starts_with("proxies.intdemo.listeners[0].colour: unknown field `colour`"),
        "{e:#?}"
    );
    assert!(
        e[2].starts_with("proxies.intdemo.listeners[0].routes[0].timeout: \"30 seconds\""),
        "{e:#?}"
    );
    assert!(
        e[3].starts_with("upstreams.web-v1.protocol: unknown variant `http9`"),
        "{e:#?}"
    );
}

#[test]
fn five_mistakes_are_five_errors_each_with_its_line_and_column() {
    let text = "\
version: 1
proxies:
  web:
    listeners:
      - name: a
        port: 80
        protocl: http
        routes: [ { match: { prefix: / }, to: blue } ]
      - name: b
        port: x
        protocol: http
        routes: [ { match: { prefix: / }, to: blue } ]
upstreams:
  blue:
    protocol: http1
    conect_timeout: 1s
    endpoints: { static: [\"10.0.0.1:80\", \"10.0.0.2\", \"10.0.0.3:80\", \"10.0.0.4\"] }
";
    let e = parse("catalog.yaml", text).unwrap_err();
    let shown = e.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines[0], "catalog.yaml: 5 errors", "{shown}");
    let starts = [
        "  proxies.web.listeners[0].protocl (line 7, column 9): unknown field `protocl`",
        "  proxies.web.listeners[1].port (line 10, column 9): invalid type: string \"x\"",
        "  upstreams.blue.conect_timeout (line 16, column 5): unknown field `conect_timeout`",
        // The items of one list keep their own indices when one before them is wrong too.
        "  upstreams.blue.endpoints.static[1] (line 17, column 42): \"10.0.0.2\" has no port",
        "  upstreams.blue.endpoints.static[3] (line 17, column 69): \"10.0.0.4\" has no port",
    ];
    for (line, start) in lines[1..].iter().zip(starts) {
        assert!(
            line.starts_with(start),
            "{line:?} should start {start:?}\n{shown}"
        );
    }
    assert!(shown.contains("(did you mean `protocol`?)"), "{shown}");
    // JSON has no positions to give, and says the same otherwise.
    let json =
        serde_json::to_string(&serde_saphyr::from_str::<serde_json::Value>(text).unwrap()).unwrap();
    let e = parse("catalog.json", &json).unwrap_err();
    assert_eq!(e.errors.len(), 5);
    assert!(e.errors.iter().all(|e| e.position.is_none()));
}

#[test]
fn re2_program_size_estimates_bound_envoys_own() {
    // (pattern, the program size Envoy 1.40 reports for it), measured with
    // `re2.max_program_size.error_level: 1`, which makes Envoy name every regex's size.
    let measured: &[(&str, u64)] = &[
        ("a", 5),
        ("abc", 7),
        (".", 6),
        ("(?s).", 5),
        ("a*", 5),
        ("a+", 6),
        ("a?", 6),
        ("(a)", 7),
        ("(?:a)", 5),
        ("a|b", 5),
        ("ab|cd", 8),
        (r"\w", 7),
        (r"\d", 5),
        ("[a-z]", 5),
        ("(ab)*", 8),
        ("(ab|cd)*", 10),
        ("a{2,5}", 12),
        ("a{3,}", 8),
        ("(?:abc){0,5}", 24),
        ("x(?:a|b)*y", 7),
        ("^a$", 4),
        (r"\bfoo\b", 9),
        ("[^/]+", 7),
        (".+", 7),
        ("(?i)abc", 7),
        ("é", 6),
        ("[α-ω]", 6),
        ("(?:a|b|c)+d", 7),
        ("(?:foo|bar|baz|qux)", 14),
        ("foo|foobar", 11),
        ("(?:[a-z]+/)*x", 9),
        ("/big/(abc|def)", 17),
        ("/big/(abc|def|ghi){40}", 449),
        (
            "/api/v[0-9]+/users/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            87,
        ),
    ];
    for (pattern, envoy) in measured {
        let estimate = re2::program_size(pattern).unwrap();
        assert!(
            // Never under (that would accept what Envoy refuses), at most a quarter over.
            estimate >= *envoy && estimate <= envoy + envoy / 4 + 4,
            "{pattern:?}: estimated {estimate}, Envoy says {envoy}"
        );
    }
}

#[test]
fn what_envoy_nacks_is_refused_with_its_field_path() {
    let text = GOOD
        .replace("connect_timeout: 2s", "connect_timeout: 0s")
        .replace(
            "health_check: { grpc: {}, interval: 5s }",
            "health_check: { grpc: {}, interval: 0ms, timeout: 0.4ms }\n    connect_timeout: 0ms",
        )
        .replace(
            "outlier_detection: { consecutive_5xx: 5, base_ejection_time: 30s }",
            "outlier_detection: { consecutive_5xx: 5, interval: 0s, base_ejection_time: 0s }",
        )
        .replace(
            "retries: { attempts: 3, on: [unavailable] }",
            "retries: { attempts: 3, on: [] }",
        )
        .replace(
            "retries: { attempts: 2, on: [connect-failure, refused-stream, unavailable, reset] }",
            "retries: { attempts: 2, on: [] }",
        );
    let e = errors(&text);
    let at = |path: &str| {
        e.iter()
            .find(|m| m.starts_with(&format!("{path}: ")))
            .unwrap_or_else(|| panic!("nothing at {path}: {e:#?}"))
            .clone()
    };
    assert_eq!(
        at("defaults.connect_timeout"),
        "defaults.connect_timeout: 0ms is too short: Envoy needs at least 1ms here"
    );
    for path in [
        "upstreams.connector.connect_timeout",
        "upstreams.connector.health_check.interval",
        // 0.4ms is whole milliseconds: 0.
        "upstreams.connector.health_check.timeout",
        "upstreams.connector.outlier_detection.interval",
        "upstreams.connector.outlier_detection.base_ejection_time",
    ] {
        assert!(at(path).ends_with("too short: Envoy needs at least 1ms here"));
    }
    for path in [
        "defaults.retries.on",
        "proxies.intdemo.listeners[0].routes[1].retries.on",
    ] {
        assert!(at(path).contains("lists no retry conditions"), "{e:#?}");
    }
    assert_eq!(e.len(), 8, "{e:#?}");
    // 1ms is enough.
    assert_eq!(
        errors(&GOOD.replace("connect_timeout: 2s", "connect_timeout: 1ms")),
        Vec::<String>::new()
    );
}

fn regex_route(regex: &str) -> String {
    GOOD.replace(
        "- match: { prefix: / }\n            to: web-v1",
        &format!("- match: {{ regex: {regex:?} }}\n            to: web-v1"),
    )
}

#[test]
fn regexes_over_re2s_limits_are_refused() {
    let at = "proxies.intdemo.listeners[0].routes[2].match.regex";
    // Envoy 1.40 says 449 > 100 for this one.
    let e = errors(&regex_route("/big/(abc|def|ghi){40}"));
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].starts_with(&format!("{at}: compiles to about 529 RE2 instructions")),
        "{e:#?}"
    );
    // Counts over 1000, alone or nested (Envoy: "invalid repetition size").
    for re in ["/a{1001}", "/(a{100}){11}", "/(?:(?:a{10}){10}){11}"] {
        let e = errors(&regex_route(re));
        assert_eq!(e.len(), 1, "{re}: {e:#?}");
        assert!(
            e[0].contains("RE2, which Envoy uses, allows at most 1000"),
            "{re}: {e:#?}"
        );
    }
    // Within the repetition limit (Envoy 1.40 accepts these counts): nested counts that multiply
    // to 1000, unbounded ones (`*`) that do not count. Their programs are too big, though.
    for re in ["/(a{100}){10}", "/(?:(?:a*){10}){100}", "/a{2,1000}"] {
        assert!(
            matches!(re2::refusal(re), Some(re2::Refusal::ProgramSize(_))),
            "{re}"
        );
    }
    assert_eq!(
        re2::refusal("/(?:a{3,}){400}"),
        Some(re2::Refusal::Repetition(1200))
    );
    // A long but plain pattern (87 in Envoy), and a short one.
    assert!(errors(&regex_route("/users/[0-9]+")).is_empty());
    assert!(
        errors(&regex_route(
            "/api/v[0-9]+/users/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
        ))
        .is_empty()
    );
}

fn route_match(text: &str) -> RouteMatch {
    serde_saphyr::from_str(text).unwrap()
}

#[test]
fn a_route_is_shadowed_by_an_earlier_one_that_takes_all_its_requests() {
    use super::validate::shadows;
    let m = route_match;
    let root = m("{ prefix: / }");
    // Anything after `prefix: /` without headers.
    for later in [
        "{ prefix: /api }",
        "{ path: /health }",
        "{ regex: \"/users/[0-9]+\" }",
        "{ prefix: /, headers: { x-canary: \"1\" } }",
    ] {
        assert!(shadows(&root, &m(later)), "{later}");
    }
    // A prefix shadows longer prefixes and paths under it, not shorter ones or other paths.
    let api = m("{ prefix: /api/ }");
    assert!(shadows(&api, &m("{ prefix: /api/v1/ }")));
    assert!(shadows(&api, &m("{ path: /api/health }")));
    assert!(!shadows(&api, &m("{ prefix: /api }")));
    assert!(!shadows(&api, &m("{ path: /apiary }")));
    assert!(!shadows(&api, &m("{ regex: \"/api/.*\" }")), "cannot tell");
    // Paths and regexes shadow only the same path or regex.
    assert!(shadows(&m("{ path: /a }"), &m("{ path: /a }")));
    assert!(!shadows(&m("{ path: /a }"), &m("{ prefix: /a }")));
    assert!(shadows(
        &m("{ regex: \"/a.*\" }"),
        &m("{ regex: \"/a.*\" }")
    ));
    // Header conditions: an earlier route with some shadows only later ones that have them too.
    let canary = m("{ prefix: /, headers: { x-canary: \"1\" } }");
    assert!(!shadows(&canary, &m("{ prefix: /api }")));
    assert!(!shadows(
        &canary,
        &m("{ prefix: /api, headers: { x-canary: \"2\" } }")
    ));
    assert!(shadows(
        &canary,
        &m("{ prefix: /api, headers: { x-canary: \"1\", x-user: a } }")
    ));
}

#[test]
fn warnings_name_the_shadowed_route_and_do_not_reject_the_catalog() {
    let c = parse("catalog.yaml", GOOD).unwrap();
    assert_eq!(warnings(&c), vec![]);
    let text = GOOD.replace(
        "          - match: { prefix: / }\n            to: web-v1",
        "          - match: { prefix: / }\n            to: web-v1\n          - match: { prefix: /late/ }\n            to: web-v1\n          - match: { path: /io.iohk.atala.prism.protos.ConnectorService/Ping }\n            to: connector",
    );
    let c = parse("catalog.yaml", &text).unwrap();
    let w: Vec<String> = warnings(&c).iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        vec![
            "proxies.intdemo.listeners[0].routes[3]: never matches: routes[2] (prefix /, any headers) comes first and takes every request this route would",
            "proxies.intdemo.listeners[0].routes[4]: never matches: routes[0] (prefix /io.iohk.atala.prism.protos.ConnectorService/, any headers) comes first and takes every request this route would",
        ]
    );
}

#[test]
fn retries_without_conditions_retry_what_is_safe_to_retry() {
    // Valid before `on: []` was refused, and still valid: the default conditions apply.
    let text = GOOD.replace(
        "retries: { attempts: 2, on: [connect-failure, refused-stream, unavailable, reset] }",
        "retries: { attempts: 2 }",
    );
    let c = parse("c.yaml", &text).unwrap();
    let r = c.defaults.retries.unwrap();
    assert_eq!(r.on, None);
    assert_eq!(r.retry_on(), "connect-failure,refused-stream");
}

#[test]
fn a_regex_that_may_be_over_envoys_limit_is_a_warning_not_an_error() {
    // Some repetition count puts the estimate just over the limit without making it sure.
    let pattern = (5..40)
        .map(|n| format!("/x/(abc|def|ghi){{{n}}}"))
        .find(|p| re2::may_be_too_big(p).is_some())
        .expect("a count in the grey zone");
    assert_eq!(re2::refusal(&pattern), None, "{pattern}");
    let c = parse("c.yaml", &regex_route(&pattern)).unwrap();
    let w = warnings(&c);
    assert!(
        w.iter()
            .any(|w| w.path.ends_with(".match.regex") && w.message.contains("validate --envoy")),
        "{w:?}"
    );
    // Far over it is an error, as before.
    assert!(re2::refusal("/big/(abc|def|ghi){40}").is_some());
}

#[test]
fn identity_roles_are_names_or_role_arns() {
    let good = "version: 1\nproxies:\n  edge: { identity: { iam_roles: [edge-task-role, \"arn:aws:iam::123456789012:role/svc/edge\"] } }\n";
    assert_eq!(errors(good), Vec::<String>::new());
    let bad = "version: 1\nproxies:\n  edge: { identity: { iam_roles: [ok, \"arn:aws:iam::123456789012:user/bob\", \"two words\"] } }\n";
    let errs = errors(bad);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].contains("proxies.edge.identity.iam_roles[1]"),
        "{errs:?}"
    );
    assert!(errs[0].contains("not an IAM role ARN"), "{errs:?}");
    assert!(
        errs[1].contains("proxies.edge.identity.iam_roles[2]"),
        "{errs:?}"
    );
    let unknown = errors("version: 1\nproxies:\n  edge: { identity: { roles: [x] } }\n");
    assert!(unknown.iter().any(|e| e.contains("roles")), "{unknown:?}");
}

#[test]
fn tls_settings_are_checked_with_their_paths() {
    let text = r#"
version: 1
proxies:
  api:
    listeners:
      - name: in
        port: 15000
        protocol: http
        tls: { certificate: mesh, min_version: "1.1", client_certificate: { trust: system, allow: [nobody] } }
        routes: [ { match: { prefix: / }, to: app } ]
  web:
    listeners:
      - { name: out, port: 8080, protocol: http, routes: [ { match: { prefix: / }, to: a }, { match: { prefix: /b }, to: b }, { match: { prefix: /c }, to: c } ] }
upstreams:
  app: { protocol: http1, endpoints: { static: ["127.0.0.1:9000"] } }
  a: { protocol: http1, endpoints: { static: ["10.0.0.1:80"] }, tls: { mesh: web } }
  b: { protocol: http1, endpoints: { static: ["10.0.0.1:80"] }, tls: { sni: b.example } }
  c: { protocol: http1, endpoints: { static: ["10.0.0.1:80"] }, tls: { mesh: api, sni: x } }
"#;
    let errs = errors(text);
    let has = |path: &str, words: &str| has_error(&errs, path, words);
    has(
        "proxies.api.listeners[0].tls.min_version",
        "\"1.2\" or \"1.3\"",
    );
    has(
        "proxies.api.listeners[0].tls.client_certificate.trust",
        "not to the system",
    );
    has(
        "proxies.api.listeners[0].tls.client_certificate.allow[0]",
        "names no proxy",
    );
    has(
        "upstreams.a.tls.mesh",
        "has no listener with `tls.certificate: mesh`",
    );
    has("upstreams.b.tls.trust", "always checks its peer");
    has("upstreams.c.tls", "sets everything itself");
    assert_eq!(errs.len(), 6, "{errs:?}");
    // A DNS name never matches a mesh certificate: under `trust: mesh` it is a misspelt proxy.
    let misspelt = errors(&text.replace(
        "client_certificate: { trust: system, allow: [nobody] }",
        "client_certificate: { trust: mesh, allow: [web.v2] }",
    ));
    assert!(
        misspelt
            .iter()
            .any(|e| e.contains("allow[0]") && e.contains("no DNS names")),
        "{misspelt:?}"
    );
    let dns = errors(&text.replace(
        "client_certificate: { trust: system, allow: [nobody] }",
        "client_certificate: { trust: { file: ca.pem }, allow: [web.v2] }",
    ));
    assert!(!dns.iter().any(|e| e.contains("allow[0]")), "{dns:?}");
    // A single-label DNS SAN is written `dns:NAME`: taken as written, never as a proxy.
    let single = errors(&text.replace(
        "client_certificate: { trust: system, allow: [nobody] }",
        "client_certificate: { trust: { file: ca.pem }, allow: [\"dns:front\"] }",
    ));
    assert!(!single.iter().any(|e| e.contains("allow[0]")), "{single:?}");
    for (allow, words) in [
        (
            "client_certificate: { trust: mesh, allow: [\"dns:front\"] }",
            "mesh certificates carry no DNS names",
        ),
        (
            "client_certificate: { trust: { file: ca.pem }, allow: [\"dns:\"] }",
            "is no DNS name",
        ),
    ] {
        let errs = errors(&text.replace(
            "client_certificate: { trust: system, allow: [nobody] }",
            allow,
        ));
        assert!(
            errs.iter()
                .any(|e| e.contains("allow[0]") && e.contains(words)),
            "{allow}: {errs:?}"
        );
    }
    // Unknown certificate sources are named.
    let unknown = errors(&text.replace("certificate: mesh,", "certificate: { vault: x },"));
    assert!(unknown.iter().any(|e| e.contains("vault")), "{unknown:?}");
}

#[test]
fn a_split_may_park_an_upstream_at_zero_and_http_is_http1() {
    let parked = GOOD.replace("web-v1: 10 }", "web-v1: 0 }");
    assert_eq!(errors(&parked), Vec::<String>::new());
    let none = GOOD.replace("{ web-v2: 90, web-v1: 10 }", "{ web-v2: 0, web-v1: 0 }");
    assert_eq!(
        errors(&none),
        [
            "proxies.intdemo.listeners[0].routes[1].split: at least one weight must be greater than 0"
        ]
    );
    let http = GOOD.replace(
        "protocol: http1\n    endpoints: { static",
        "protocol: http\n    endpoints: { static",
    );
    assert_ne!(http, GOOD);
    let c = parse("catalog.yaml", &http).unwrap();
    assert_eq!(
        c.upstreams[&UpstreamName("web-v1".into())].protocol,
        UpstreamProtocol::Http1
    );
}

#[test]
fn aws_certificate_sources_name_arns_of_their_kind() {
    let text = r#"
version: 1
proxies:
  edge:
    listeners:
      - name: in
        port: 443
        protocol: http
        tls:
          certificate: { acm: { arn: "arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/x" } }
          client_certificate: { trust: { acm_pca: ["arn:aws:acm:eu-west-1:123456789012:certificate/x", "arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/ok"] } }
        routes: [ { match: { prefix: / }, to: app } ]
upstreams:
  app: { protocol: http1, endpoints: { static: ["10.0.0.1:80"] }, tls: { sni: app.test, trust: { acm_pca: [] } } }
"#;
    let errs = errors(text);
    let has = |path: &str, words: &str| has_error(&errs, path, words);
    has(
        "proxies.edge.listeners[0].tls.certificate.acm.arn",
        "not an ACM certificate ARN",
    );
    has(
        "proxies.edge.listeners[0].tls.client_certificate.trust.acm_pca[0]",
        "not an AWS Private CA ARN",
    );
    has("upstreams.app.tls.trust.acm_pca", "at least one");
    assert_eq!(errs.len(), 3, "{errs:?}");
    let good = text
        .replace(
            "acm: { arn: \"arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/x\" }",
            "acm: { arn: \"arn:aws:acm:eu-west-1:123456789012:certificate/0f1e\" }",
        )
        .replace("\"arn:aws:acm:eu-west-1:123456789012:certificate/x\", ", "")
        .replace("acm_pca: [] }", "secrets_manager: { secret: tls/app-ca } }");
    assert_eq!(errors(&good), Vec::<String>::new());
}

#[test]
fn an_upstream_nothing_uses_is_warned_about() {
    let text = r#"
version: 1
proxies:
  edge:
    listeners:
      - { name: web, port: 8080, protocol: http, routes: [ { match: { prefix: / }, to: app, mirror: { to: shadow } } ] }
      - { name: db, port: 5432, protocol: tcp, split: { pg-a: 1, pg-b: 0 } }
upstreams:
  app: { protocol: http1, endpoints: { static: ["10.0.0.1:80"] } }
  shadow: { protocol: http1, endpoints: { static: ["10.0.0.2:80"] } }
  pg-a: { protocol: tcp, endpoints: { static: ["10.0.0.3:5432"] } }
  pg-b: { protocol: tcp, endpoints: { static: ["10.0.0.4:5432"] } }
  forgotten: { protocol: http1, endpoints: { static: ["10.0.0.5:80"] } }
"#;
    let c = parse("catalog.yaml", text).unwrap();
    let w: Vec<String> = warnings(&c).iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].starts_with("upstreams.forgotten: no route"), "{w:?}");
}

/// Two proxies `a` and `b`, with the aliases given.
fn aliased(a: &str, b: &str) -> String {
    let proxy = |name: &str, aliases: &str| {
        format!(
            "  {name}:\n    aliases: {aliases}\n    listeners: [ {{ name: web, port: 8080, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: app }} ] }} ]\n"
        )
    };
    format!(
        "version: 1\nproxies:\n{}{}upstreams:\n  app: {{ protocol: http1, endpoints: {{ static: [\"127.0.0.1:80\"] }} }}\n",
        proxy("a", a),
        proxy("b", b)
    )
}

const ARN: &str = "arn:aws:appmesh:eu-west-1:111122223333:mesh/m/virtualNode/a";

#[test]
fn an_alias_selects_one_proxy_only() {
    let c = parse("catalog.yaml", &aliased(&format!("[{ARN}]"), "[]")).unwrap();
    assert_eq!(
        c.proxies[&ProxyName("a".into())].aliases,
        [ProxyName(ARN.into())]
    );
    assert_eq!(
        errors(&aliased(&format!("[{ARN}, b, {ARN}]"), &format!("[{ARN}]"))),
        [
            r#"proxies.a.aliases[1]: "b" is the name of proxy "b""#.to_string(),
            format!(r#"proxies.a.aliases[2]: "{ARN}" is already aliases[0]"#),
            format!(r#"proxies.b.aliases[0]: "{ARN}" is already an alias of proxy "a""#),
        ]
    );
    assert_eq!(
        errors(&aliased(r#"["", "a b"]"#, "[]")),
        [
            r#"proxies.a.aliases[0]: "" is not a valid alias (1-1024 printable characters, no spaces)"#,
            r#"proxies.a.aliases[1]: "a b" is not a valid alias (1-1024 printable characters, no spaces)"#,
        ]
    );
}

#[test]
fn an_alias_is_owned_across_fragments_like_a_proxy_name() {
    let one = "version: 1\nproxies:\n  a:\n    aliases: [shared]\n    listeners: [ { name: web, port: 8080, protocol: http, routes: [ { match: { prefix: / }, to: app } ] } ]\nupstreams:\n  app: { protocol: http1, endpoints: { static: [\"127.0.0.1:80\"] } }\n";
    let two = "version: 1\nproxies:\n  shared:\n    listeners: [ { name: web, port: 8080, protocol: http, routes: [ { match: { prefix: / }, to: app2 } ] } ]\nupstreams:\n  app2: { protocol: http1, endpoints: { static: [\"127.0.0.1:81\"] } }\n";
    let err = merge("dir", &fragments(&[("one.yaml", one), ("two.yaml", two)])).unwrap_err();
    let text: Vec<String> = err.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "one.yaml: proxies.shared: also defined in two.yaml",
            "two.yaml: proxies.shared: also defined in one.yaml",
        ]
    );
}

const EGRESS: &str = r#"
version: 1
proxies:
  app:
    listeners:
      - name: egress
        port: 15001
        protocol: http
        original_destination: true
        virtual_hosts:
          - { name: connector, domains: ["connector.prism-test.atala.local:50051"], routes: [ { match: { prefix: / }, to: connector } ] }
      - name: egress-tcp
        port: 15002
        protocol: tcp
        original_destination: true
        ports: { 18332: bitcoind, 5432: postgres }
upstreams:
  connector: { protocol: grpc, endpoints: { static: ["10.0.3.1:50051"] } }
  bitcoind: { protocol: tcp, endpoints: { static: ["10.0.3.2:18332"] } }
  postgres: { protocol: tcp, endpoints: { static: ["10.0.3.3:5432"] } }
"#;

#[test]
fn original_destination_listeners_parse_with_their_ports() {
    let c = parse("catalog.yaml", EGRESS).unwrap();
    let listeners = &c.proxies[&ProxyName("app".into())].listeners;
    assert!(listeners[0].original_destination);
    let ports = listeners[1].ports.as_ref().unwrap();
    assert_eq!(ports[&18332], UpstreamName("bitcoind".into()));
    assert_eq!(ports[&5432], UpstreamName("postgres".into()));
    // JSON keys are strings; they read as the same ports.
    let value: serde_json::Value = serde_saphyr::from_str(EGRESS).unwrap();
    assert_eq!(parse("catalog.json", &value.to_string()).unwrap(), c);
    assert!(warnings(&c).is_empty(), "{:?}", warnings(&c));
}

#[test]
fn ports_need_a_listener_with_original_destination() {
    let at = "proxies.app.listeners";
    let e = errors(&EGRESS.replace("original_destination: true\n        ports", "ports"));
    assert_eq!(
        e,
        vec![format!(
            "{at}[1].ports: `ports` chooses by the port the app dialled, which only a listener with `original_destination: true` knows"
        )]
    );
    // An http listener takes `ports` too: TCP chains beside its HTTP one.
    let mixed = EGRESS.replace(
        "original_destination: true\n        virtual_hosts",
        "original_destination: true\n        ports: { 18332: bitcoind }\n        virtual_hosts",
    );
    let c = parse("catalog.yaml", &mixed).unwrap();
    let http = &c.proxies[&ProxyName("app".into())].listeners[0];
    assert_eq!(http.protocol, ListenerProtocol::Http);
    assert_eq!(
        http.ports.as_ref().unwrap()[&18332],
        UpstreamName("bitcoind".into())
    );
    assert!(warnings(&c).is_empty(), "{:?}", warnings(&c));
    // A Host of a port a TCP chain takes is never read: a warning names the domain.
    let dead = mixed.replace("{ 18332: bitcoind }", "{ 50051: bitcoind }");
    let w: Vec<String> = warnings(&parse("catalog.yaml", &dead).unwrap())
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        w,
        [
            "proxies.app.listeners[0].virtual_hosts[0].domains[0]: never reached: `ports` takes connections to port 50051 as TCP before any Host is read"
        ]
    );
    let e = errors(&mixed.replace(
        "protocol: http\n        original_destination: true\n",
        "protocol: http\n",
    ));
    assert_eq!(
        e,
        vec![format!(
            "{at}[0].ports: `ports` chooses by the port the app dialled, which only a listener with `original_destination: true` knows"
        )]
    );
    // A port given twice is an error, not the last one silently.
    let e = errors(&EGRESS.replace(
        "{ 18332: bitcoind, 5432: postgres }",
        "{ 5432: bitcoind, 5432: postgres }",
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("duplicate mapping key: 5432"), "{e:?}");
    let json = r#"{"version": 1, "proxies": {"app": {"listeners": [{"name": "egress", "port": 15001, "protocol": "tcp", "original_destination": true, "ports": {"5432": "a", "5432": "b"}}]}}, "upstreams": {"a": {"protocol": "tcp", "endpoints": {"static": ["10.0.0.1:1"]}}, "b": {"protocol": "tcp", "endpoints": {"static": ["10.0.0.2:1"]}}}}"#;
    let e = parse("catalog.json", json).unwrap_err().to_string();
    assert!(e.contains("invalid JSON: duplicate key \"5432\""), "{e}");
    let e = errors(&EGRESS.replace(
        "{ 18332: bitcoind, 5432: postgres }",
        "{ 70000: bitcoind, 5432: postgres, 6379: redis }",
    ));
    assert_eq!(
        e,
        vec![
            format!("{at}[1].ports.6379: upstream \"redis\" is not defined in `upstreams`"),
            format!("{at}[1].ports.70000: port 70000 is out of range (1-65535)"),
        ]
    );
    let e = errors(&EGRESS.replace("{ 18332: bitcoind, 5432: postgres }", "{}"));
    assert_eq!(e, vec![format!("{at}[1].ports: needs at least one port")]);
    let e = errors(&EGRESS.replace("{ 18332: bitcoind, 5432: postgres }", "{ x: bitcoind }"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with(&format!("{at}[1].ports")), "{e:?}");
}

#[test]
fn a_ports_chain_may_not_share_its_stats_with_another_listener() {
    // egress-tcp's chain for 5432 counts under tcp.egress-tcp_5432.
    let text = EGRESS.replace(
        "upstreams:",
        "      - name: egress-tcp_5432\n        port: 15003\n        protocol: tcp\n        to: postgres\nupstreams:",
    );
    assert_eq!(
        errors(&text),
        vec![
            "proxies.app.listeners[1].ports.5432: its stats (tcp.egress-tcp_5432.) would be those of listener \"egress-tcp_5432\" (listeners[2]); rename one of the listeners"
        ]
    );
    // Another port of the same listener, or a name without a port, is fine.
    assert_eq!(
        errors(&text.replace("egress-tcp_5432", "egress-tcp_6432")),
        Vec::<String>::new()
    );
}

#[test]
fn ports_take_a_default_for_the_other_ports() {
    let text = EGRESS.replace(
        "ports: { 18332: bitcoind, 5432: postgres }",
        "ports: { 18332: bitcoind }\n        to: postgres",
    );
    assert_eq!(errors(&text), Vec::<String>::new());
    let text = EGRESS.replace(
        "ports: { 18332: bitcoind, 5432: postgres }",
        "ports: { 18332: bitcoind }\n        split: { postgres: 0 }",
    );
    assert_eq!(
        errors(&text),
        vec!["proxies.app.listeners[1].split: at least one weight must be greater than 0"]
    );
}

#[test]
fn zone_aware_needs_endpoints_that_carry_zones() {
    let doc = |endpoints: &str| {
        format!(
            "version: 1\nproxies: {{ p: {{ listeners: [ {{ name: t, port: 1, protocol: tcp, to: u }} ] }} }}\nupstreams:\n  u: {{ protocol: tcp, zone_aware: true, port: 5, endpoints: {endpoints} }}\n"
        )
    };
    let err = parse("c.yaml", &doc("{ dns: { host: u.internal } }"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("upstreams.u.zone_aware")
            && err.contains("needs endpoints that carry their zone"),
        "{err}"
    );
    let err = parse(
        "c.yaml",
        &doc(r#"{ static: [ { address: "10.0.0.1:5", zone: "" } ] }"#),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("upstreams.u.endpoints.static[0]")
            && err.contains(r#""10.0.0.1:5" has an empty zone"#),
        "{err}"
    );
    let err = parse(
        "c.yaml",
        &doc(r#"{ static: [ { address: "10.0.0.1:5", az: a } ] }"#),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("upstreams.u.endpoints.static[0]") && err.contains("unknown field `az`"),
        "{err}"
    );
    let c = parse("c.yaml", &doc(r#"{ static: [ "10.0.0.1:5" ] }"#)).unwrap();
    let found = warnings(&c);
    assert!(
        found.iter().any(|w| w.path == "upstreams.u.zone_aware"
            && w.message.contains("no static endpoint names its zone")),
        "{found:?}"
    );
    parse("c.yaml", &doc(r#"{ ecs: { cluster: c, service: s } }"#)).unwrap();
}

#[test]
fn passthrough_needs_an_original_destination_listener_and_something_left_to_take() {
    let at = "proxies.app.listeners";
    let on = |t: &str| {
        t.replace(
            "original_destination: true\n        virtual_hosts",
            "original_destination: true\n        passthrough: true\n        virtual_hosts",
        )
        .replace(
            "ports: { 18332: bitcoind, 5432: postgres }",
            "ports: { 18332: bitcoind, 5432: postgres }\n        passthrough: true",
        )
    };
    let good = parse("catalog.yaml", &on(EGRESS)).unwrap();
    let listeners = &good.proxies[&ProxyName("app".into())].listeners;
    assert!(listeners[0].passthrough && listeners[1].passthrough);
    let e = errors(&on(EGRESS).replace("        original_destination: true\n", ""));
    assert_eq!(
        e,
        vec![
            format!(
                "{at}[0].passthrough: passes connections on to the address the app dialled, which only a listener with `original_destination: true` knows"
            ),
            format!(
                "{at}[1].passthrough: passes connections on to the address the app dialled, which only a listener with `original_destination: true` knows"
            ),
            format!(
                "{at}[1].ports: `ports` chooses by the port the app dialled, which only a listener with `original_destination: true` knows"
            ),
        ]
    );
    let e = errors(&on(EGRESS).replace(
        "domains: [\"connector.prism-test.atala.local:50051\"]",
        "domains: [\"*\"]",
    ));
    assert_eq!(
        e,
        vec![format!(
            "{at}[0].virtual_hosts[0].domains: \"*\" takes every Host, so nothing would reach the listener's passthrough"
        )]
    );
    let e = errors(&on(EGRESS).replace(
        "passthrough: true\n        virtual_hosts",
        "passthrough: true\n        to: bitcoind\n        virtual_hosts",
    ));
    assert!(
        e.iter()
            .any(|e| e.starts_with(&format!("{at}[0].to: an http listener"))),
        "{e:?}"
    );
    let e = errors(&on(EGRESS).replace(
        "ports: { 18332: bitcoind, 5432: postgres }",
        "ports: { 18332: bitcoind }\n        to: postgres",
    ));
    assert_eq!(
        e,
        vec![format!(
            "{at}[1].passthrough: a tcp listener's passthrough takes the ports `ports` does not: not with `to` or `split`"
        )]
    );
    let e = errors(&on(EGRESS).replace("  postgres:", "  PassthroughCluster: { protocol: tcp, endpoints: { static: [\"10.0.3.4:1\"] } }\n  postgres:"));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].ends_with("would share the passthrough's Envoy cluster name: rename it"),
        "{e:?}"
    );
}

#[test]
fn a_fragment_s_dns_allow_that_is_no_dns_name_is_an_error_as_in_one_file() {
    let text = r#"
version: 1
proxies:
  api:
    listeners:
      - name: in
        port: 15000
        protocol: http
        tls: { certificate: mesh, client_certificate: { trust: { file: ca.pem }, allow: ["dns:svc_a"] } }
        routes: [ { match: { prefix: / }, to: app } ]
upstreams:
  app: { protocol: http1, endpoints: { static: ["127.0.0.1:9000"] } }
"#;
    let Err(e) = merge("catalog.d", &fragments(&[("a.yaml", text)])) else {
        panic!("dns:svc_a was taken");
    };
    let errs: Vec<String> = e.errors.iter().map(ToString::to_string).collect();
    has_error(
        &errs,
        "proxies.api.listeners[0].tls.client_certificate.allow[0]",
        "is no DNS name",
    );
}
