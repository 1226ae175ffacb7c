//! xds-server against a real Envoy 1.40: routing, live changes, NACKs, restarts, bad input,
//! each in both the state-of-the-world and the delta protocol.

use std::path::PathBuf;
use std::time::Duration;

use tests::{Backend, Envoy, Mode, TempDir, XdsServer, free_port, http, wait_for, workspace_bin};

const PROXY: &str = "demo";

/// A control plane, one Envoy and three backends (blue, green, green2) on loopback.
struct Setup {
    dir: TempDir,
    blue: Backend,
    green: Backend,
    green2: Backend,
    port: u16,
    catalog: PathBuf,
    server: XdsServer,
    envoy: Envoy,
}

/// The test catalog: prefix, header and split routes; `green` comes from an endpoint file.
fn catalog(port: u16, blue: &Backend, split: &str, extra_route: &str) -> String {
    format!(
        r#"
version: 1
defaults:
  connect_timeout: 1s
  route_timeout: 5s
proxies:
  {PROXY}:
    listeners:
      - name: public
        address: 127.0.0.1
        port: {port}
        protocol: http
        routes:{extra_route}
          - match: {{ prefix: /blue/ }}
            to: blue
          - match: {{ prefix: /, headers: {{ x-canary: "1" }} }}
            split: {split}
          - match: {{ prefix: / }}
            to: green
upstreams:
  blue:
    protocol: http1
    endpoints: {{ static: ["{blue}"] }}
  green:
    protocol: http1
    endpoints: {{ file: green.json }}
"#,
        blue = blue.endpoint()
    )
}

const SPLIT_90_10: &str = "{ green: 90, blue: 10 }";

impl Setup {
    fn start(mode: Mode) -> Setup {
        Self::start_with(mode, |_| {})
    }

    /// Like [`Setup::start`], with Envoy's bootstrap changed by `edit` first.
    fn start_with(mode: Mode, edit: impl FnOnce(&mut serde_json::Value)) -> Setup {
        let dir = TempDir::new(match mode {
            Mode::Sotw => "sotw",
            Mode::Delta => "delta",
        });
        let blue = Backend::start("blue", 0).unwrap();
        let green = Backend::start("green", 0).unwrap();
        let green2 = Backend::start("green2", 0).unwrap();
        let port = free_port();
        dir.write("green.json", &format!(r#"["{}"]"#, green.endpoint()));
        let catalog = dir.write("catalog.yaml", &catalog(port, &blue, SPLIT_90_10, ""));
        let server = XdsServer::start(&dir, &catalog, 0);
        server.wait_ready();
        let envoy = Envoy::start_with(&dir, PROXY, server.xds_port, mode, edit);
        envoy.wait_live();
        let s = Setup {
            dir,
            blue,
            green,
            green2,
            port,
            catalog,
            server,
            envoy,
        };
        s.wait_body("/", &[], "green");
        s
    }

    /// The backend that answered a request through Envoy.
    fn body(&self, path: &str, headers: &[(&str, &str)]) -> Option<String> {
        let r = http::get(self.port, path, headers).ok()?;
        (r.status == 200).then(|| r.body.trim().to_string())
    }

    fn wait_body(&self, path: &str, headers: &[(&str, &str)], want: &str) {
        wait_for(
            &format!("GET {path} to reach {want}"),
            Duration::from_secs(15),
            || (self.body(path, headers).as_deref() == Some(want)).then_some(()),
        );
    }

    fn write_catalog(&self, text: &str) {
        self.dir.write("catalog.yaml", text);
    }

    /// The per-type status of our Envoy in `/debug/nodes`.
    fn node_types(&self) -> serde_json::Value {
        let nodes = self.server.admin_json("/debug/nodes");
        nodes
            .as_array()
            .and_then(|a| a.iter().find(|n| n["proxy"] == PROXY))
            .map(|n| n["types"].clone())
            .unwrap_or_default()
    }

    /// Moves the only route to upstream green (deleting blue) and waits until Envoy has
    /// dropped the blue cluster.
    fn switch_to_green(&self) {
        self.write_catalog(&only(self.port, "green", &self.green, ""));
        wait_for(
            "Envoy to drop the blue cluster",
            Duration::from_secs(15),
            || {
                self.envoy
                    .stat("cluster.blue.membership_total")
                    .is_none()
                    .then_some(())
            },
        );
    }

    /// Waits until Envoy has acknowledged everything the server sent it.
    fn wait_all_acked(&self) -> serde_json::Value {
        wait_for("Envoy to ACK every type", Duration::from_secs(15), || {
            let types = self.node_types();
            let all = ["cds", "eds", "lds", "rds"].iter().all(|t| {
                let s = &types[*t];
                !s["sent"].is_null() && s["sent"] == s["acked"]
            });
            all.then_some(types)
        })
    }
}

fn both(test: fn(Mode)) {
    test(Mode::Sotw);
    test(Mode::Delta);
}

#[test]
fn routes_by_prefix_header_and_weighted_split() {
    both(|mode| {
        let s = Setup::start(mode);
        assert_eq!(s.body("/blue/x", &[]).as_deref(), Some("blue"));
        assert_eq!(s.body("/anything", &[]).as_deref(), Some("green"));
        let n = 500;
        let mut green = 0;
        for _ in 0..n {
            match s.body("/", &[("x-canary", "1")]).as_deref() {
                Some("green") => green += 1,
                Some("blue") => {}
                other => panic!("unexpected answer {other:?}"),
            }
        }
        // 90/10 split: expected 450 green, standard deviation about 6.7.
        assert!(
            (410..=490).contains(&green),
            "{mode:?}: {green} of {n} canary requests went to green"
        );
        assert!(s.blue.hits() > 0 && s.green.hits() > 0 && s.green2.hits() == 0);
        // The bootstrap's overload manager limits downstream connections: Envoy does not warn.
        let log = s.envoy.process.output();
        assert!(
            log.contains("starting main dispatch loop")
                && !log.contains(
                    "no configured limit to the number of allowed active downstream connections"
                ),
            "{log}"
        );
    });
}

#[test]
fn catalog_and_endpoint_file_edits_reach_a_running_envoy() {
    both(|mode| {
        let mut s = Setup::start(mode);
        // A new route.
        let new_route = "\n          - match: { prefix: /new/ }\n            to: blue";
        s.write_catalog(&catalog(s.port, &s.blue, SPLIT_90_10, new_route));
        s.wait_body("/new/x", &[], "blue");
        // A changed split: all canary traffic to blue.
        let rds_before = s.wait_all_acked()["rds"]["acked"].clone();
        s.write_catalog(&catalog(s.port, &s.blue, "{ blue: 1 }", new_route));
        // A blue answer can also come from the old 90/10 split: wait for the new routes' ACK.
        wait_for("the new split to be ACKed", Duration::from_secs(15), || {
            let rds = &s.wait_all_acked()["rds"];
            (rds["acked"] != rds_before).then_some(())
        });
        for _ in 0..20 {
            assert_eq!(s.body("/", &[("x-canary", "1")]).as_deref(), Some("blue"));
        }
        // An endpoint added to the file source: both green backends answer.
        s.dir.write(
            "green.json",
            &format!(r#"["{}", "{}"]"#, s.green.endpoint(), s.green2.endpoint()),
        );
        s.wait_body("/", &[], "green2");
        s.wait_body("/", &[], "green");
        // An upstream no longer used is removed (delta: through `removed_resources`).
        let only_blue = catalog(s.port, &s.blue, "{ blue: 1 }", new_route).replace(
            "          - match: { prefix: / }\n            to: green\n",
            "",
        );
        s.write_catalog(&only_blue);
        wait_for(
            "Envoy to drop the green cluster",
            Duration::from_secs(15),
            || (s.envoy.stat("cluster.green.membership_total").is_none()).then_some(()),
        );
        assert_eq!(
            s.envoy.stat("cluster_manager.active_clusters"),
            Some(2),
            "{mode:?}: xds_cluster and blue"
        );
        // The same Envoy process did all of this: no restart.
        assert!(s.envoy.process.is_running(), "{mode:?}: Envoy exited");
    });
}

#[test]
fn an_endpoint_change_updates_only_its_cluster_in_envoy_and_the_others_keep_their_endpoints() {
    both(|mode| {
        let s = Setup::start(mode);
        s.wait_all_acked();
        // Each EDS cluster counts the updates its subscription takes.
        let blue_updates = s.envoy.stat("cluster.blue.update_attempt");
        let green_updates = s.envoy.stat("cluster.green.update_attempt");
        assert!(
            blue_updates.is_some_and(|n| n > 0),
            "{mode:?}: {blue_updates:?}"
        );
        s.dir
            .write("green.json", &format!(r#"["{}"]"#, s.green2.endpoint()));
        s.wait_body("/", &[], "green2");
        s.wait_all_acked();
        assert!(
            s.envoy.stat("cluster.green.update_attempt") > green_updates,
            "{mode:?}: green's assignment was not sent"
        );
        // SotW too sends only the assignment that changed: EDS is not a full-state type.
        assert_eq!(
            s.envoy.stat("cluster.blue.update_attempt"),
            blue_updates,
            "{mode:?}: blue's unchanged assignment was sent again"
        );
        assert_eq!(s.body("/blue/x", &[]).as_deref(), Some("blue"), "{mode:?}");
        assert_eq!(
            s.envoy.stat("cluster.blue.membership_healthy"),
            Some(1),
            "{mode:?}: blue lost its endpoint"
        );
    });
}

#[test]
fn a_rejected_config_is_recorded_not_resent_and_a_fix_is_accepted() {
    both(|mode| {
        // This Envoy's runtime lowers RE2's program size limit from 100 to 50, as an operator
        // may: what a proxy's bootstrap says is beyond what the control plane can know.
        let s = Setup::start_with(mode, |bootstrap| {
            bootstrap["layered_runtime"] = serde_json::json!({ "layers": [ {
                "name": "static",
                "static_layer": { "re2.max_program_size.error_level": 50 },
            } ] });
        });
        s.wait_all_acked();
        let pushes = |t: &str| {
            let v = match mode {
                Mode::Sotw => "sotw",
                Mode::Delta => "delta",
            };
            s.server
                .metric(&format!("xds_pushes_total{{type=\"{t}\",variant=\"{v}\"}}"))
        };
        // A regex within the default limit, which validation checks (Envoy counts 64, the
        // estimate 74), but over this Envoy's: it rejects the route configuration.
        let big = "\n          - match: { regex: \"/big/(abc|def|ghi){5}\" }\n            to: blue";
        assert_eq!(
            xds_server::catalog::re2::program_size("/big/(abc|def|ghi){5}"),
            Some(74)
        );
        s.write_catalog(&catalog(s.port, &s.blue, SPLIT_90_10, big));
        let nack = wait_for("a NACK in /debug/nodes", Duration::from_secs(15), || {
            s.node_types()["rds"]["last_nack"]
                .as_str()
                .map(String::from)
        });
        assert!(nack.contains("program size"), "{mode:?}: NACK text: {nack}");
        assert!(s.server.metric("xds_nacks_total{type=\"rds\"}") >= 1.0);
        let rds_pushes = pushes("rds");
        // The initial routes and the rejected ones (a misspelt metric would read 0 twice).
        assert!(rds_pushes >= 2.0, "{mode:?}: {rds_pushes} route pushes");
        // Envoy keeps serving its previous routes.
        assert_eq!(s.body("/blue/x", &[]).as_deref(), Some("blue"));
        // Another change (endpoints) goes through; the rejected routes were not sent again.
        s.dir
            .write("green.json", &format!(r#"["{}"]"#, s.green2.endpoint()));
        s.wait_body("/", &[], "green2");
        let types = s.node_types();
        assert_eq!(types["eds"]["sent"], types["eds"]["acked"]);
        assert_eq!(
            pushes("rds"),
            rds_pushes,
            "{mode:?}: the rejected routes were re-sent"
        );
        assert_eq!(
            s.envoy.stat("http.public.rds.public.update_rejected"),
            Some(1)
        );
        // A corrected catalog is sent and accepted.
        let fixed = "\n          - match: { regex: \"/big/(abc|def)\" }\n            to: blue";
        s.write_catalog(&catalog(s.port, &s.blue, SPLIT_90_10, fixed));
        s.wait_body("/big/abc", &[], "blue");
        let types = s.wait_all_acked();
        assert_eq!(types["rds"]["sent"], types["rds"]["acked"]);
    });
}

#[test]
fn envoy_keeps_serving_through_a_control_plane_restart_and_sees_no_change() {
    both(|mode| {
        let mut s = Setup::start(mode);
        let before = s.wait_all_acked();
        let changes = |e: &Envoy| {
            [
                "cluster_manager.cluster_added",
                "cluster_manager.cluster_modified",
                "cluster_manager.cluster_removed",
                "listener_manager.listener_added",
                "listener_manager.listener_modified",
                "listener_manager.listener_removed",
            ]
            .map(|n| e.stat(n))
        };
        let changes_before = changes(&s.envoy);
        let cds_version = s.envoy.text_stat("cluster_manager.cds.version_text");
        s.server.process.kill();
        wait_for(
            "Envoy to notice the lost control plane",
            Duration::from_secs(15),
            || (s.envoy.stat("control_plane.connected_state") == Some(0)).then_some(()),
        );
        for _ in 0..20 {
            assert_eq!(s.body("/blue/x", &[]).as_deref(), Some("blue"));
            assert_eq!(s.body("/", &[]).as_deref(), Some("green"));
        }
        s.server = XdsServer::start(&s.dir, &s.catalog, s.server.xds_port);
        wait_for("Envoy to reconnect", Duration::from_secs(60), || {
            (s.envoy.stat("control_plane.connected_state") == Some(1)).then_some(())
        });
        let after = s.wait_all_acked();
        for t in ["cds", "eds", "lds", "rds"] {
            assert_eq!(
                before[t]["acked"], after[t]["acked"],
                "{mode:?}: {t} version changed"
            );
        }
        assert_eq!(
            changes(&s.envoy),
            changes_before,
            "{mode:?}: Envoy changed its config"
        );
        assert_eq!(
            s.envoy.text_stat("cluster_manager.cds.version_text"),
            cds_version
        );
        assert_eq!(s.body("/blue/x", &[]).as_deref(), Some("blue"));
    });
}

#[test]
fn an_unknown_proxy_gets_an_empty_config_and_a_warning() {
    both(|mode| {
        let s = Setup::start(mode);
        let stranger = Envoy::start(&s.dir, "nobody", s.server.xds_port, mode);
        stranger.wait_live();
        // Answered, not merely timed out into LIVE (Envoy does that after 15 s without answers).
        assert_eq!(stranger.stat("cluster_manager.cds.update_success"), Some(1));
        assert_eq!(
            stranger.stat("listener_manager.lds.update_success"),
            Some(1)
        );
        assert_eq!(stranger.stat("cluster_manager.active_clusters"), Some(1)); // only xds_cluster
        assert_eq!(
            stranger.stat("listener_manager.total_listeners_active"),
            Some(0)
        );
        assert!(s.server.metric("xds_unknown_proxy_streams_total") >= 1.0);
        assert!(
            s.server
                .process
                .output()
                .contains("names no proxy of the catalog")
        );
        // The known proxy is unaffected.
        assert_eq!(s.body("/blue/x", &[]).as_deref(), Some("blue"));
    });
}

/// Invalid catalogs: each gets its own error from `validate`, and a running server refuses it
/// and keeps serving the previous one.
#[test]
fn bad_catalogs_are_refused_with_a_clear_error() {
    let s = Setup::start(Mode::Sotw);
    let good = catalog(s.port, &s.blue, SPLIT_90_10, "");
    let cases = [
        (
            good.replace("protocol: http\n", "protocol: http\n        colour: blue\n"),
            "proxies.demo.listeners[0].colour: unknown field `colour`",
        ),
        (
            good.replace("prefix: /blue/ }\n            to: blue", "prefix: /blue/ }\n            to: purple"),
            "proxies.demo.listeners[0].routes[0].to: upstream \"purple\" is not defined in `upstreams`",
        ),
        (
            good.replace(
                "routes:\n",
                &format!(
                    "routes: [ {{ match: {{ prefix: / }}, to: blue }} ]\n      - name: again\n        port: {}\n        protocol: http\n        routes:\n",
                    s.port
                ),
            ),
            "proxies.demo.listeners[1].port: port",
        ),
        (
            good.replace("route_timeout: 5s", "route_timeout: five seconds"),
            "defaults.route_timeout: \"five seconds\" is not a duration",
        ),
        // What Envoy would NACK.
        (
            good.replace("connect_timeout: 1s", "connect_timeout: 0s"),
            "defaults.connect_timeout: 0ms is too short: Envoy needs at least 1ms here",
        ),
        (
            good.replace(
                "  blue:\n    protocol: http1\n",
                "  blue:\n    protocol: http1\n    health_check: { http: { path: / }, interval: 0s }\n",
            ),
            "upstreams.blue.health_check.interval: 0ms is too short",
        ),
        (
            good.replace(
                "  blue:\n    protocol: http1\n",
                "  blue:\n    protocol: http1\n    outlier_detection: { base_ejection_time: 0.2ms }\n",
            ),
            "upstreams.blue.outlier_detection.base_ejection_time: 0ms is too short",
        ),
        (
            catalog(
                s.port,
                &s.blue,
                SPLIT_90_10,
                "\n          - match: { regex: \"/big/(abc|def|ghi){40}\" }\n            to: blue",
            ),
            "proxies.demo.listeners[0].routes[0].match.regex: compiles to about 529 RE2 instructions (estimated), over Envoy's limit of 100",
        ),
        (
            catalog(
                s.port,
                &s.blue,
                SPLIT_90_10,
                "\n          - match: { regex: \"/a{2000}\" }\n            to: blue",
            ),
            "proxies.demo.listeners[0].routes[0].match.regex: repeats 2000 times",
        ),
        (
            good.replace(
                "  route_timeout: 5s\n",
                "  route_timeout: 5s\n  retries: { attempts: 2, on: [] }\n",
            ),
            "defaults.retries.on: lists no retry conditions",
        ),
    ];
    let position = regex::Regex::new(r" \(line \d+, column \d+\)").unwrap();
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = s.dir.write(&format!("bad-{i}.yaml"), text);
        let out = std::process::Command::new(workspace_bin("xds-server"))
            .arg("validate")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "case {i}: {stderr}");
        // Each error says where it is in the file; the rest is compared without that.
        assert!(
            stderr.contains(" (line "),
            "case {i}: no position in {stderr}"
        );
        let plain = position.replace_all(&stderr, "");
        assert!(
            plain.contains(want),
            "case {i}: want {want:?} in:\n{stderr}"
        );
        assert!(
            stderr.starts_with(&path.display().to_string()),
            "case {i} names no file: {stderr}"
        );

        s.server.expect_catalog_refused(|| s.write_catalog(text));
        let ready = s.server.admin_json("/readyz");
        assert_eq!(ready["ready"], true);
        let last_error = ready["catalog"]["last_error"].as_str().unwrap_or("");
        assert!(
            position.replace_all(last_error, "").contains(want),
            "{ready}"
        );
        // One log event, on one line, names the file and the problem (CloudWatch takes a
        // line for an event).
        let output = s.server.process.output();
        let logged = output
            .lines()
            .rfind(|l| l.contains("catalog rejected"))
            .unwrap_or_else(|| panic!("no rejection logged:\n{output}"));
        // This server logs JSON: the whole error is one field.
        let event: serde_json::Value = serde_json::from_str(logged).expect("a JSON log line");
        let error = event["error"].as_str().unwrap_or_default();
        assert!(
            position.replace_all(error, "").contains(want),
            "case {i}: {want:?} in the rejection's error field: {logged}"
        );
        assert_eq!(s.body("/blue/x", &[]).as_deref(), Some("blue"));
        assert_eq!(s.body("/", &[]).as_deref(), Some("green"));
    }
    let path = s.dir.write("good.yaml", &good);
    let ok = std::process::Command::new(workspace_bin("xds-server"))
        .arg("validate")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "ok\n");
}

/// The debug pages show configuration: they listen apart from /metrics and the health checks,
/// which load balancers and Prometheus reach.
#[test]
fn debug_pages_are_not_on_the_admin_port() {
    let s = Setup::start(Mode::Sotw);
    for path in [
        "/debug/config?proxy=demo",
        "/debug/nodes",
        "/debug/endpoints",
    ] {
        let admin = http::get(s.server.admin_port, path, &[]).unwrap();
        assert_eq!(
            admin.status, 404,
            "{path} on the admin port: {}",
            admin.body
        );
        let debug = http::get(s.server.debug_port, path, &[]).unwrap();
        assert_eq!(debug.status, 200, "{path} on the debug port");
    }
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(
            http::get(s.server.admin_port, path, &[]).unwrap().status,
            200,
            "{path}"
        );
        assert_eq!(
            http::get(s.server.debug_port, path, &[]).unwrap().status,
            404,
            "{path}"
        );
    }
}

#[test]
fn sigterm_closes_streams_and_exits_zero() {
    let mut s = Setup::start(Mode::Sotw);
    s.server.process.signal(libc::SIGTERM);
    assert_eq!(s.server.process.wait_exit(Duration::from_secs(15)), Some(0));
    wait_for(
        "Envoy to see the stream closed",
        Duration::from_secs(10),
        || (s.envoy.stat("control_plane.connected_state") == Some(0)).then_some(()),
    );
    assert_eq!(s.body("/blue/x", &[]).as_deref(), Some("blue"));
}

/// A TCP listener forwarding to a DNS upstream that Envoy resolves itself, and CORS on an HTTP
/// listener.
#[test]
fn tcp_listeners_dns_upstreams_and_cors() {
    both(|mode| {
        let dir = TempDir::new("tcp");
        let blue = Backend::start("blue", 0).unwrap();
        let (http_port, tcp_port) = (free_port(), free_port());
        let text = format!(
            r#"
version: 1
proxies:
  {PROXY}:
    listeners:
      - name: web
        address: 127.0.0.1
        port: {http_port}
        protocol: http
        cors: {{ allow_origins: ["https://app.example"], allow_methods: [GET, POST], max_age: 1m }}
        routes: [ {{ match: {{ prefix: / }}, to: blue }} ]
      - {{ name: raw, address: 127.0.0.1, port: {tcp_port}, protocol: tcp, to: blue-by-name }}
upstreams:
  blue: {{ protocol: http1, endpoints: {{ static: ["{blue}"] }} }}
  blue-by-name: {{ protocol: tcp, endpoints: {{ dns: {{ host: localhost, port: {blue_port} }} }} }}
"#,
            blue = blue.endpoint(),
            blue_port = blue.addr.port()
        );
        let catalog = dir.write("catalog.yaml", &text);
        let server = XdsServer::start(&dir, &catalog, 0);
        let envoy = Envoy::start(&dir, PROXY, server.xds_port, mode);
        envoy.wait_live();
        // Plain bytes through the TCP proxy: an HTTP request that Envoy does not parse.
        let r = wait_for(
            "the TCP listener to forward",
            Duration::from_secs(15),
            || {
                http::get(tcp_port, "/", &[])
                    .ok()
                    .filter(|r| r.status == 200)
            },
        );
        assert_eq!(r.body.trim(), "blue");
        assert_eq!(
            r.header("server"),
            None,
            "{mode:?}: Envoy's HTTP layer answered"
        );
        // A CORS preflight from an allowed origin is answered by Envoy itself.
        let preflight = |origin: &str| {
            http::request(
                "OPTIONS",
                http_port,
                "/",
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                ],
            )
            .unwrap()
        };
        let ok = preflight("https://app.example");
        assert_eq!(
            ok.header("access-control-allow-origin"),
            Some("https://app.example"),
            "{ok:?}"
        );
        assert_eq!(ok.header("access-control-allow-methods"), Some("GET,POST"));
        assert_eq!(ok.header("access-control-max-age"), Some("60"));
        let other = preflight("https://evil.example");
        assert_eq!(
            other.header("access-control-allow-origin"),
            None,
            "{other:?}"
        );
        let get = http::get(http_port, "/", &[("origin", "https://app.example")]).unwrap();
        assert_eq!(get.body.trim(), "blue");
        assert_eq!(
            get.header("access-control-allow-origin"),
            Some("https://app.example")
        );
    });
}

/// Envoy rebuilds a changed cluster and keeps it warming until it receives its endpoints again,
/// without asking for them: the server must send them, or the change waits for Envoy's 15 s
/// initial fetch timeout.
#[test]
fn a_changed_cluster_gets_its_endpoints_again_and_warms_at_once() {
    both(|mode| {
        let s = Setup::start(mode);
        s.wait_all_acked();
        let modified = s
            .envoy
            .stat("cluster_manager.cluster_modified")
            .unwrap_or(0);
        s.write_catalog(
            &catalog(s.port, &s.blue, SPLIT_90_10, "")
                .replace("connect_timeout: 1s", "connect_timeout: 2s"),
        );
        wait_for(
            "both clusters to be rebuilt and warm",
            Duration::from_secs(30),
            || {
                let rebuilt = s
                    .envoy
                    .stat("cluster_manager.cluster_modified")
                    .unwrap_or(0)
                    >= modified + 2;
                (rebuilt && s.envoy.stat("cluster_manager.warming_clusters") == Some(0))
                    .then_some(())
            },
        );
        for c in ["blue", "green"] {
            assert_eq!(
                s.envoy.stat(&format!("cluster.{c}.init_fetch_timeout")),
                Some(0),
                "{mode:?}: {c} warmed only through the initial fetch timeout"
            );
        }
        assert_eq!(s.body("/", &[]).as_deref(), Some("green"));
        assert_eq!(s.body("/blue/x", &[]).as_deref(), Some("blue"));
    });
}

/// An upstream whose new endpoint source has not answered yet keeps the endpoints Envoy has:
/// an error or a missing file never empties it.
#[test]
fn an_unanswered_endpoint_source_never_empties_an_upstream() {
    both(|mode| {
        let s = Setup::start(mode);
        let loads = s.server.metric("xds_catalog_loads_total{result=\"ok\"}");
        s.write_catalog(
            &catalog(s.port, &s.blue, SPLIT_90_10, "")
                .replace("file: green.json", "file: later.json"),
        );
        wait_for("the new catalog", Duration::from_secs(15), || {
            (s.server.metric("xds_catalog_loads_total{result=\"ok\"}") > loads).then_some(())
        });
        let sources = wait_for(
            "the missing file to be reported",
            Duration::from_secs(15),
            || {
                let v = s.server.admin_json("/debug/endpoints");
                v.as_array()?
                    .iter()
                    .any(|src| {
                        src["source"]
                            .as_str()
                            .is_some_and(|d| d.ends_with("later.json"))
                            && !src["last_error"].is_null()
                    })
                    .then_some(v)
            },
        );
        wait_for(
            "/readyz to list the upstream without endpoints",
            Duration::from_secs(15),
            || {
                let ready = s.server.admin_json("/readyz");
                (ready["catalog"]["upstreams_without_endpoints"] == serde_json::json!(["green"]))
                    .then_some(())
            },
        );
        assert_eq!(s.server.metric("xds_upstreams_without_endpoints"), 1.0);
        s.wait_all_acked();
        for _ in 0..20 {
            assert_eq!(
                s.body("/", &[]).as_deref(),
                Some("green"),
                "{mode:?}: {sources}"
            );
        }
        // Once the file appears, its endpoints are used.
        s.dir
            .write("later.json", &format!(r#"["{}"]"#, s.green2.endpoint()));
        s.wait_body("/", &[], "green2");
    });
}

/// Moving every route from one upstream to another and deleting the old one in the same
/// catalog change: requests keep flowing through Envoy the whole time, none fails.
#[test]
fn switching_routes_and_deleting_the_old_upstream_fails_no_request() {
    both(|mode| {
        let s = Setup::start(mode);
        s.write_catalog(&only(s.port, "blue", &s.blue, ""));
        s.wait_body("/x", &[], "blue");
        s.wait_all_acked();
        let load = Load::start(s.port);
        s.switch_to_green();
        load.stop_all_ok(mode, "blue", "green");
    });
}

/// Requests sent through Envoy, one after another, until stopped.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: std::thread::JoinHandle<Vec<(u16, String)>>,
}

impl Load {
    fn start(port: u16) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let thread = {
            let (stop, count) = (stop.clone(), count.clone());
            std::thread::spawn(move || {
                let mut answers: Vec<(u16, String)> = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = http::get(port, "/x", &[]).expect("Envoy accepts the connection");
                    answers.push((r.status, r.body.trim().to_string()));
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                answers
            })
        };
        Load {
            stop,
            count,
            thread,
        }
    }

    /// Waits until `n` more requests have been answered.
    fn wait_more(&self, n: usize) {
        let target = self.count.load(std::sync::atomic::Ordering::Relaxed) + n;
        wait_for(
            &format!("{n} more requests"),
            Duration::from_secs(30),
            || (self.count.load(std::sync::atomic::Ordering::Relaxed) >= target).then_some(()),
        );
    }

    /// Stops; every request succeeded, the first answered by `first`, the last by `last`.
    fn stop_all_ok(self, mode: Mode, first: &str, last: &str) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let answers = self.thread.join().unwrap();
        let failed: Vec<&(u16, String)> = answers
            .iter()
            .filter(|(status, _)| *status != 200)
            .collect();
        assert!(
            failed.is_empty(),
            "{mode:?}: {} of {} failed: {:?}",
            failed.len(),
            answers.len(),
            &failed[..failed.len().min(5)]
        );
        assert_eq!(
            answers.first().map(|a| a.1.as_str()),
            Some(first),
            "{mode:?}"
        );
        assert_eq!(answers.last().map(|a| a.1.as_str()), Some(last), "{mode:?}");
    }
}

/// A catalog whose only route goes to `to` (served by `backend`); `extra` goes into the
/// upstream's definition.
fn only(port: u16, to: &str, backend: &Backend, extra: &str) -> String {
    format!(
        r#"
version: 1
proxies:
  {PROXY}:
    listeners:
      - {{ name: public, address: 127.0.0.1, port: {port}, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: {to} }} ] }}
upstreams:
  {to}: {{ protocol: http1, endpoints: {{ static: ["{}"] }}{extra} }}
"#,
        backend.endpoint(),
    )
}

/// Envoy 1.40 refuses a health check whose path holds a carriage return, which our validation
/// lets through: a cluster the control plane sends and the proxy rejects.
const REJECTED_HEALTH_CHECK: &str = r#", health_check: { http: { path: "/health\r" } }"#;

/// Moving the only route to a new upstream that Envoy rejects, and deleting the old one in the
/// same change: the routes wait, the old cluster stays, no request fails; once the new
/// upstream is fixed the switch completes, still without a failed request.
#[test]
fn a_rejected_cluster_during_a_route_switch_fails_no_request() {
    both(|mode| {
        let s = Setup::start(mode);
        let bad = only(s.port, "green", &s.green, REJECTED_HEALTH_CHECK);
        let path = s.dir.write("bad.yaml", &bad);
        let out = std::process::Command::new(workspace_bin("xds-server"))
            .arg("validate")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "validation now refuses the test's rejected cluster; pick another that only Envoy refuses: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        s.write_catalog(&only(s.port, "blue", &s.blue, ""));
        s.wait_body("/x", &[], "blue");
        s.wait_all_acked();
        let load = Load::start(s.port);
        s.write_catalog(&bad);
        wait_for(
            "Envoy to reject the cluster",
            Duration::from_secs(15),
            || {
                s.node_types()["cds"]["last_nack"]
                    .as_str()
                    .map(String::from)
            },
        );
        // Requests keep flowing through the old cluster while the new one is rejected.
        load.wait_more(200);
        assert_eq!(
            s.envoy.stat("cluster.blue.membership_total"),
            Some(1),
            "{mode:?}"
        );
        s.switch_to_green();
        load.stop_all_ok(mode, "blue", "green");
    });
}

/// A role that a valid catalog no longer has (a fragment deleted, a key misspelt) keeps serving
/// the Envoys still connected with it.
#[test]
fn a_role_gone_from_the_catalog_keeps_its_envoy_serving() {
    both(|mode| {
        let s = Setup::start(mode);
        s.wait_all_acked();
        let good = catalog(s.port, &s.blue, SPLIT_90_10, "");
        let loads = s.server.metric("xds_catalog_loads_total{result=\"ok\"}");
        s.write_catalog(&good.replace(&format!("\n  {PROXY}:\n"), "\n  renamed:\n"));
        wait_for("the new catalog", Duration::from_secs(15), || {
            (s.server.metric("xds_catalog_loads_total{result=\"ok\"}") > loads).then_some(())
        });
        let node = wait_for("the node to show orphaned", Duration::from_secs(15), || {
            let nodes = s.server.admin_json("/debug/nodes");
            nodes
                .as_array()?
                .iter()
                .find(|n| n["proxy"] == PROXY && n["orphaned"] == true)
                .cloned()
        });
        assert_eq!(node["known_proxy"], false);
        assert_eq!(s.server.metric("xds_orphaned_proxies"), 1.0);
        assert!(s.server.process.output().contains("gone from the catalog"));
        for _ in 0..20 {
            assert_eq!(s.body("/blue/x", &[]).as_deref(), Some("blue"), "{mode:?}");
            assert_eq!(s.body("/", &[]).as_deref(), Some("green"), "{mode:?}");
        }
        assert_eq!(
            s.envoy.stat("listener_manager.total_listeners_active"),
            Some(1),
            "{mode:?}"
        );
        // Back in the catalog, it is served as before.
        s.write_catalog(&good);
        wait_for(
            "the node to be known again",
            Duration::from_secs(15),
            || {
                let nodes = s.server.admin_json("/debug/nodes");
                nodes
                    .as_array()?
                    .iter()
                    .any(|n| n["proxy"] == PROXY && n["known_proxy"] == true)
                    .then_some(())
            },
        );
        assert_eq!(s.server.metric("xds_orphaned_proxies"), 0.0);
    });
}

/// After every xds-server restart (a deploy), the first catalog change is complete and safe:
/// a changed cluster gets its endpoints at once, and moving a route while deleting its old
/// upstream fails no request.
#[test]
fn the_first_change_after_a_control_plane_restart_is_complete_and_safe() {
    both(|mode| {
        let mut s = Setup::start(mode);
        s.write_catalog(&only(s.port, "blue", &s.blue, ""));
        s.wait_body("/x", &[], "blue");
        s.wait_all_acked();
        restart(&mut s, 0);
        let modified = s
            .envoy
            .stat("cluster_manager.cluster_modified")
            .unwrap_or(0);
        s.write_catalog(&only(s.port, "blue", &s.blue, ", connect_timeout: 2s"));
        wait_for(
            "the blue cluster to be rebuilt and warm",
            Duration::from_secs(30),
            || {
                let rebuilt = s
                    .envoy
                    .stat("cluster_manager.cluster_modified")
                    .unwrap_or(0)
                    > modified;
                (rebuilt && s.envoy.stat("cluster_manager.warming_clusters") == Some(0))
                    .then_some(())
            },
        );
        assert_eq!(
            s.envoy.stat("cluster.blue.init_fetch_timeout"),
            Some(0),
            "{mode:?}: the rebuilt cluster warmed only through the initial fetch timeout"
        );
        restart(&mut s, 0);
        let load = Load::start(s.port);
        load.wait_more(20);
        s.switch_to_green();
        load.stop_all_ok(mode, "blue", "green");
    });
}

/// Kills the control plane and starts it again on the same port once Envoy has failed to
/// reach it `failed_attempts` times (as during a deploy, when the old task is gone before the
/// new one is up); returns once Envoy is connected again and has acknowledged everything, with
/// how long reconnecting took from the new server's start.
fn restart(s: &mut Setup, failed_attempts: u64) -> Duration {
    const CONNECT_FAIL: &str = "cluster.xds_cluster.upstream_cx_connect_fail";
    let failed_before = s.envoy.stat(CONNECT_FAIL).unwrap_or(0);
    s.server.process.kill();
    wait_for(
        "Envoy to notice the lost control plane",
        Duration::from_secs(15),
        || (s.envoy.stat("control_plane.connected_state") == Some(0)).then_some(()),
    );
    wait_for(
        "Envoy's attempts to reconnect to fail",
        Duration::from_secs(120),
        || {
            (s.envoy.stat(CONNECT_FAIL).unwrap_or(0) >= failed_before + failed_attempts)
                .then_some(())
        },
    );
    let started = std::time::Instant::now();
    s.server = XdsServer::start(&s.dir, &s.catalog, s.server.xds_port);
    wait_for("Envoy to reconnect", Duration::from_secs(60), || {
        (s.envoy.stat("control_plane.connected_state") == Some(1)).then_some(())
    });
    let took = started.elapsed();
    s.wait_all_acked();
    took
}

/// The bootstrap's retry back-off (0.25 s up to 2 s) brings Envoy back within seconds of every
/// restart; with Envoy's default (0.5 s up to 30 s, never reset by a stream that receives
/// nothing) it took up to 27 s.
#[test]
fn envoy_reconnects_within_seconds_after_each_of_five_restarts() {
    both(|mode| {
        let mut s = Setup::start(mode);
        s.wait_all_acked();
        let mut took = Vec::new();
        for _ in 0..5 {
            took.push(restart(&mut s, 3));
        }
        eprintln!("{mode:?}: reconnected after {took:?}");
        // The issue's 3 s plus a second for a loaded machine (measured here: at most 1.7 s);
        // Envoy's default back-off grows to 30 s, and SotW streams that received nothing never
        // reset it (measured: 1 s, 4 s, 17 s, 24 s, 15 s).
        assert!(
            took.iter().all(|t| *t < Duration::from_secs(4)),
            "{mode:?}: {took:?}"
        );
        assert_eq!(s.body("/blue/x", &[]).as_deref(), Some("blue"));
    });
}
