//! `xds-server validate`: warnings, and `--envoy`, which has a real Envoy 1.40 check every
//! proxy's configuration for what the catalog's own checks miss.

use std::path::Path;
use std::process::{Command, Output};

use std::time::Duration;

use tests::cli::assert_envoy_accepts;
use tests::process::envoy_bin;
use tests::{TempDir, XdsServer, wait_for, workspace_bin};

/// A catalog using what translation emits: HTTP and TCP listeners, gRPC-Web, CORS, header and
/// regex matches, splits, retries, timeouts, every kind of health check, outlier detection,
/// circuit breakers, and every endpoint source (Cloud Map and ECS cannot be asked offline; the
/// endpoint file is missing on purpose: both get a placeholder endpoint).
const GOOD: &str = r#"
version: 1
defaults:
  connect_timeout: 2s
  route_timeout: 15s
  retries: { attempts: 2, on: [connect-failure, refused-stream, unavailable, reset] }
proxies:
  edge:
    listeners:
      - name: public
        port: 8080
        protocol: http
        grpc_web: true
        cors: { allow_origins: ["https://example.org", "*"], allow_methods: [GET, POST], max_age: 1h, allow_credentials: true }
        routes:
          - match: { prefix: /api.Service/ }
            to: api
            timeout: 30s
          - match: { prefix: /, headers: { x-canary: "1" } }
            split: { web-v2: 90, web-v1: 10 }
            retries: { attempts: 3, on: [unavailable], per_try_timeout: 2s }
          - match: { regex: "/users/[0-9]+" }
            to: web-v1
          - match: { prefix: / }
            to: web-v1
      - name: db
        port: 5432
        protocol: tcp
        to: db
  shop:
    listeners:
      - { name: web, port: 8081, protocol: http, routes: [ { match: { path: /health }, to: tasks }, { match: { prefix: / }, to: web-v2 } ] }
upstreams:
  api:
    protocol: grpc
    port: 50051
    endpoints: { cloud_map: { namespace: ns.local, service: api } }
    health_check: { grpc: {}, interval: 5s, timeout: 1s }
    outlier_detection: { consecutive_5xx: 5, interval: 10s, base_ejection_time: 30s, max_ejection_percent: 50 }
    max_requests: 1024
  web-v1:
    protocol: http1
    endpoints: { static: ["10.0.1.5:80", "10.0.2.7:80"] }
    health_check: { http: { path: /health } }
  web-v2:
    protocol: http2
    endpoints: { file: web-v2.json }
    health_check: { tcp: {} }
  tasks:
    protocol: http1
    endpoints: { ecs: { cluster: c, service: s, port: 8080 } }
  db:
    protocol: tcp
    endpoints: { dns: { host: db.ns.local, port: 5432 } }
"#;

/// The endpoint file GOOD's web-v2 reads, beside it.
const WEB_V2: &str = r#"["10.0.3.1:80", { "address": "10.0.3.2:80", "zone": "us-east-1b" }]"#;

fn validate(path: &Path, extra: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(workspace_bin("xds-server"));
    cmd.arg("validate").arg(path).args(extra);
    cmd.env_remove("XDS_SERVER_VALIDATE_ENVOY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("xds-server validate runs")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_envoy_passes_a_good_catalog_and_catches_what_our_checks_miss() {
    let dir = TempDir::new("validate-envoy");
    dir.write("web-v2.json", WEB_V2);
    let envoy = envoy_bin();
    assert!(
        envoy.exists(),
        "{} is missing: scripts/test.sh installs it",
        envoy.display()
    );
    let envoy_flag = ["--envoy", envoy.to_str().unwrap()];

    let good = dir.write("good.yaml", GOOD);
    let out = validate(&good, &envoy_flag, &[]);
    assert_eq!(text(&out), ("ok\n".into(), String::new()), "{out:?}");
    assert_eq!(out.status.code(), Some(0));

    // Verbose mode: Rust's regex crate (and so our check) accepts it, RE2 does not.
    let verbose = GOOD.replace(r#""/users/[0-9]+""#, r#""(?x) /users/ [0-9]+""#);
    assert_ne!(verbose, GOOD);
    let bad = dir.write("bad.yaml", &verbose);
    let ours = validate(&bad, &[], &[]);
    assert_eq!(text(&ours).0, "ok\n", "our own checks pass it: {ours:?}");
    let out = validate(&bad, &envoy_flag, &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(stdout, "");
    assert_eq!(
        stderr,
        format!(
            "{}: Envoy ({}) refuses 1 of 2 proxies\n  proxies.edge: invalid perl operator: (?x\n",
            bad.display(),
            envoy.display()
        )
    );

    // The flag also comes from the environment.
    let out = validate(&bad, &[], &[("XDS_SERVER_VALIDATE_ENVOY", &envoy)]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out).1.contains("proxies.edge: invalid perl operator"));

    // An upstream named like the generic Envoy's own cluster: Envoy would NACK its CDS.
    let clash = dir.write(
        "clash.yaml",
        &GOOD
            .replace("  db:\n", "  xds_cluster:\n")
            .replace("to: db", "to: xds_cluster"),
    );
    let out = validate(&clash, &envoy_flag, &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out)
            .1
            .contains("proxies.edge: cluster manager: duplicate cluster 'xds_cluster'"),
        "{out:?}"
    );

    // A header name with a NUL byte: our check refuses upper case and spaces only; Envoy's proto
    // constraint (its message comes after a dump of the whole configuration, left out here).
    let nul = dir.write(
        "nul.yaml",
        &GOOD.replace(
            r#"headers: { x-canary: "1" }"#,
            r#"headers: { "x-canary\0": "1" }"#,
        ),
    );
    assert_eq!(text(&validate(&nul, &[], &[])).0, "ok\n");
    let out = validate(&nul, &envoy_flag, &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("  proxies.edge: Proto constraint validation failed (")
            && stderr
                .contains("HeaderMatcherValidationError.Name: value does not match regex pattern")
            && !stderr.contains("static_resources {"),
        "{stderr}"
    );

    // An Envoy that cannot be run is an error, not a pass.
    let out = validate(&good, &["--envoy", "/nonexistent/envoy"], &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out).1.contains("cannot run /nonexistent/envoy"),
        "{out:?}"
    );
}

#[test]
fn shadowed_routes_are_warned_about_and_do_not_fail_validation() {
    let dir = TempDir::new("validate-warnings");
    dir.write("web-v2.json", WEB_V2);
    let shadowed = GOOD.replace(
        "          - match: { prefix: / }\n            to: web-v1\n",
        "          - match: { prefix: / }\n            to: web-v1\n          - match: { prefix: /late/ }\n            to: web-v1\n",
    );
    let path = dir.write("catalog.yaml", &shadowed);
    let out = validate(&path, &[], &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        text(&out),
        (
            "ok\n".into(),
            "warning: proxies.edge.listeners[0].routes[4]: never matches: routes[3] (prefix /, any headers) comes first and takes every request this route would\n".into()
        )
    );
}

#[test]
fn validate_output_json_gives_ci_every_error_with_its_line_and_column() {
    let dir = TempDir::new("validate-json");
    dir.write("web-v2.json", WEB_V2);
    let json = |path: &Path, extra: &[&str]| {
        let mut args = vec!["--output", "json"];
        args.extend(extra);
        let out = validate(path, &args, &[]);
        let (stdout, stderr) = text(&out);
        assert_eq!(stderr, "", "JSON alone, on stdout");
        let v: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
        (out.status.code(), v)
    };
    let shadowed = GOOD.replace(
        "          - match: { prefix: / }\n            to: web-v1\n",
        "          - match: { prefix: / }\n            to: web-v1\n          - match: { prefix: /late/ }\n            to: web-v1\n",
    );
    let (code, v) = json(&dir.write("warned.yaml", &shadowed), &[]);
    assert_eq!((code, &v["ok"]), (Some(0), &serde_json::json!(true)), "{v}");
    assert_eq!(v["errors"], serde_json::json!([]));
    assert_eq!(
        v["warnings"][0]["path"], "proxies.edge.listeners[0].routes[4]",
        "{v}"
    );

    let bad = GOOD.replacen("port: 8080", "port: none", 1).replacen(
        "protocol: http1",
        "protocol: http1\n    conect_timeout: 1s",
        1,
    );
    let path = dir.write("bad.yaml", &bad);
    let (code, v) = json(&path, &[]);
    assert_eq!(
        (code, &v["ok"]),
        (Some(1), &serde_json::json!(false)),
        "{v}"
    );
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{v}");
    let line_of = |needle: &str| bad.lines().position(|l| l.contains(needle)).unwrap() as u64 + 1;
    assert_eq!(errors[0]["path"], "proxies.edge.listeners[0].port", "{v}");
    assert_eq!(errors[0]["line"], line_of("port: none"), "{v}");
    assert_eq!(errors[0]["column"], 9, "{v}");
    assert!(
        errors[1]["path"]
            .as_str()
            .unwrap()
            .ends_with(".conect_timeout"),
        "{v}"
    );
    assert_eq!(errors[1]["line"], line_of("conect_timeout"), "{v}");
    assert!(
        errors[1]["message"]
            .as_str()
            .unwrap()
            .contains("did you mean `connect_timeout`?"),
        "{v}"
    );
    // What cannot be read at all is an error without a path.
    let (code, v) = json(&dir.path().join("missing.yaml"), &[]);
    assert_eq!(code, Some(1));
    assert_eq!(v["errors"][0]["path"], "", "{v}");
}

#[test]
fn serve_logs_the_warnings_of_each_catalog_it_loads() {
    let dir = TempDir::new("serve-warnings");
    let text = r#"
version: 1
proxies:
  p:
    listeners:
      - name: web
        address: 127.0.0.1
        port: 18080
        protocol: http
        routes:
          - { match: { prefix: / }, to: a }
          - { match: { path: /health }, to: a }
upstreams:
  a: { protocol: http1, endpoints: { static: ["127.0.0.1:9"] } }
"#;
    let path = dir.write("catalog.yaml", text);
    let server = XdsServer::start(&dir, &path, 0);
    server.wait_ready();
    let warned = |n: usize| {
        wait_for("the warning in the log", Duration::from_secs(10), || {
            let log = server.process.output();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("never matches: routes[0] (prefix /, any headers)"))
                .collect();
            (lines.len() == n).then(|| lines.last().map(|l| l.to_string()))
        })
    };
    let line = warned(1).unwrap();
    assert!(line.contains("\"level\":\"WARN\""), "{line}");
    assert!(
        line.contains("\"path\":\"proxies.p.listeners[0].routes[1]\""),
        "{line}"
    );
    // Once per load: a new load (another change) logs it once more.
    dir.write("catalog.yaml", &text.replace("127.0.0.1:9", "127.0.0.1:10"));
    warned(2);
}

/// TLS settings (mesh mTLS both ways, the system's roots) pass Envoy's own check: the secrets
/// that come over SDS at run time stand in as static ones.
#[test]
fn validate_envoy_checks_tls_listeners_and_clusters() {
    let dir = TempDir::new("validate-envoy-tls");
    let catalog = dir.write(
        "tls.yaml",
        r#"
version: 1
proxies:
  callee:
    listeners:
      - name: inbound
        port: 15000
        protocol: http
        tls: { mode: permissive, certificate: mesh, client_certificate: { trust: mesh, allow: [caller] } }
        routes: [ { match: { prefix: / }, to: app } ]
  caller:
    listeners:
      - { name: out, port: 8080, protocol: http, routes: [ { match: { prefix: /x }, to: ext }, { match: { prefix: / }, to: callee } ] }
upstreams:
  app: { protocol: http1, endpoints: { static: ["127.0.0.1:9000"] } }
  callee: { protocol: grpc, endpoints: { static: ["127.0.0.1:15000"] }, tls: { mesh: callee } }
  ext: { protocol: http1, endpoints: { static: ["127.0.0.1:443"] }, tls: { sni: api.example.com, trust: system } }
"#,
    );
    assert_envoy_accepts(&catalog);
}

/// A proxy with two gRPC services (two API listeners, one calling a mesh TLS upstream through
/// the gRPC clients' own cluster) beside an HTTP listener passes Envoy's check: what is made for
/// proxyless clients is not what its Envoys are sent, and Envoy does not see it.
#[test]
fn validate_envoy_passes_a_proxy_with_two_grpc_services() {
    let dir = TempDir::new("validate-envoy-grpc");
    let catalog = dir.write(
        "grpc.yaml",
        r#"
version: 1
proxies:
  wallet-backend:
    listeners:
      - { name: web, port: 8080, protocol: http, routes: [ { match: { prefix: / }, to: connector } ] }
    grpc_services:
      - name: connector.prism-test.atala.local:50051
        routes:
          - { match: { grpc: { service: io.Connector } }, to: connector, retries: { attempts: 2, on: [unavailable] } }
          - { match: { prefix: / }, split: { connector: 90, node: 10 } }
      - name: node.prism-test.atala.local:50053
        routes: [ { match: { prefix: / }, to: node, timeout: 5s } ]
  node:
    listeners:
      - { name: inbound, port: 15000, protocol: http, tls: { certificate: mesh, client_certificate: { trust: mesh, allow: [wallet-backend] } }, routes: [ { match: { prefix: / }, to: node-app } ] }
upstreams:
  node-app: { protocol: grpc, endpoints: { static: ["127.0.0.1:50050"] } }
  connector: { protocol: grpc, endpoints: { static: ["127.0.0.1:50051"] } }
  node: { protocol: grpc, endpoints: { static: ["127.0.0.1:50053"] }, tls: { mesh: node } }
"#,
    );
    assert_envoy_accepts(&catalog);
}

/// `--version` names the build's commit, and the admin port exports it.
#[test]
fn the_build_is_named_by_version_and_metric() {
    let commit = tests::cli::version_commit("xds-server");
    assert!(!commit.is_empty());
    let dir = TempDir::new("build-info");
    let catalog = dir.write("catalog.yaml", "version: 1\n");
    let server = tests::XdsServer::start(&dir, &catalog, 0);
    let sample = format!(
        "xds_server_build_info{{commit=\"{commit}\",version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(server.metric(&sample), 1.0, "{sample}");
    // Known series exist from the start, at 0, so alerts can be written before the first event.
    server.wait_ready();
    let text = tests::http::get(server.admin_port, "/metrics", &[])
        .unwrap()
        .body;
    for series in [
        "xds_nacks_total{type=\"sds\"} 0",
        "xds_pushes_total{type=\"cds\",variant=\"delta\"} 0",
        "xds_discovery_errors_total{kind=\"ecs\",reason=\"throttled\"} 0",
        "xds_catalog_last_load_success 1",
    ] {
        assert!(text.contains(series), "{series} missing from:\n{text}");
    }
    // A refused catalog turns the gauge to 0 (the last good one stays served).
    server.expect_catalog_refused(|| {
        dir.write("catalog.yaml", "version: 2\n");
    });
    assert_eq!(server.metric("xds_catalog_last_load_success"), 0.0);
}

/// A canary parked at weight 0, and `protocol: http` on an upstream, pass our checks and
/// Envoy's.
#[test]
fn a_parked_canary_and_an_http_upstream_pass_envoy() {
    let dir = TempDir::new("validate-parked");
    let catalog = dir.write(
        "split.yaml",
        r#"
version: 1
proxies:
  edge:
    listeners:
      - { name: web, port: 8080, protocol: http, routes: [ { match: { prefix: / }, split: { stable: 100, canary: 0 } } ] }
upstreams:
  stable: { protocol: http, endpoints: { static: ["127.0.0.1:9000"] } }
  canary: { protocol: http1, endpoints: { static: ["127.0.0.1:9001"] } }
"#,
    );
    assert_envoy_accepts(&catalog);
}

/// `render` works offline: Cloud Map and ECS are not asked (no credentials, no SDK errors);
/// their upstreams are named under `eds.not_resolved`.
#[test]
fn render_is_offline_unless_asked_to_discover() {
    let dir = TempDir::new("render-offline");
    let catalog = dir.write(
        "catalog.yaml",
        r#"
version: 1
proxies:
  edge:
    listeners:
      - { name: web, port: 8080, protocol: http, routes: [ { match: { prefix: /a }, to: fixed }, { match: { prefix: / }, to: mapped } ] }
upstreams:
  fixed: { protocol: http1, endpoints: { static: ["10.0.0.1:80"] } }
  mapped: { protocol: http1, port: 80, endpoints: { cloud_map: { namespace: ns.local, service: web } } }
"#,
    );
    let out = Command::new(workspace_bin("xds-server"))
        .args(["render", "--proxy", "edge", "--catalog"])
        .arg(&catalog)
        // Nowhere to reach AWS: an attempt would fail loudly.
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr, "", "render wrote to stderr");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["eds"]["resources"][0]["cluster_name"], "fixed");
    assert_eq!(v["eds"]["not_resolved"][0]["upstream"], "mapped");
    assert!(
        v["eds"]["not_resolved"][0]["source"]
            .as_str()
            .is_some_and(|s| s.contains("cloud_map")),
        "{stdout}"
    );
}

#[test]
fn a_rejected_catalog_is_one_text_log_line_off_a_terminal() {
    let dir = TempDir::new("one-line");
    let path = dir.write(
        "catalog.yaml",
        "version: 1\nproxies:\n  p:\n    listeners:\n      - { name: a, port: 0, protocol: http, routes: [ { match: { prefix: / }, to: nowhere } ] }\n",
    );
    let mut cmd = Command::new(workspace_bin("xds-server"));
    cmd.args(["serve", "--catalog"])
        .arg(&path)
        .args(["--log-format", "text"]);
    for (flag, port) in [
        ("--xds-listen", tests::free_port()),
        ("--admin-listen", tests::free_port()),
        ("--debug-listen", tests::free_port()),
    ] {
        cmd.arg(flag).arg(format!("127.0.0.1:{port}"));
    }
    // Its stderr is a file, as under ECS: no terminal.
    let server = tests::process::ChildGuard::spawn(cmd, dir.path().join("xds-server.log"));
    let line = wait_for("the rejection logged", Duration::from_secs(20), || {
        server
            .output()
            .lines()
            .find(|l| l.contains("catalog rejected"))
            .map(String::from)
    });
    assert!(
        line.contains("2 errors\\n  proxies.p.listeners[0].port")
            && line.contains("\\n  proxies.p.listeners[0].routes[0].to"),
        "both problems on the event's one line: {line}"
    );
    assert!(!line.contains('\x1b'), "no colour codes in a file: {line}");
}

#[test]
fn an_endpoint_file_that_cannot_be_read_is_warned_about() {
    let dir = TempDir::new("validate-endpoint-file");
    let path = dir.write(
        "catalog.yaml",
        "version: 1\nproxies:\n  p:\n    listeners:\n      - { name: a, port: 8080, protocol: http, routes: [ { match: { prefix: /v/ }, to: v }, { match: { prefix: / }, to: u } ] }\nupstreams:\n  u: { protocol: http1, endpoints: { file: missing.json } }\n  v: { protocol: http1, endpoints: { file: bad.json } }\n",
    );
    dir.write("bad.json", r#"["10.0.0.1"]"#);
    let out = validate(&path, &[], &[]);
    let (stdout, stderr) = text(&out);
    // Not an error: serve takes the catalog, and the upstreams have no endpoints until then.
    assert_eq!(
        (out.status.code(), stdout.as_str()),
        (Some(0), "ok\n"),
        "{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("warning: upstreams.u.endpoints.file: ")
                && l.contains("missing.json cannot be read")),
        "{stderr}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("warning: upstreams.v.endpoints.file: ")
                && l.contains("has no port")),
        "{stderr}"
    );
    // Once the files are good, nothing to say.
    dir.write("missing.json", r#"["10.0.0.2:80"]"#);
    dir.write("bad.json", r#"["10.0.0.1:80"]"#);
    let out = validate(&path, &[], &[]);
    assert_eq!(text(&out), ("ok\n".into(), String::new()));
}
