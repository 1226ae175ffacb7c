//! Leaving App Mesh: proxies selected by their App Mesh ARN (`aliases`), and `xds-server
//! import-appmesh` against moto's App Mesh (with tests/fixtures/moto_appmesh.py filling in what
//! moto lacks), its fragments served to real Envoys that route as App Mesh would.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use tests::{
    Backend, Envoy, Mode, Moto, TempDir, XdsServer, free_port, http, wait_for, workspace_bin,
};

const ACCOUNT: &str = "123456789012";

fn arn(path: &str) -> String {
    format!("arn:aws:appmesh:us-east-1:{ACCOUNT}:mesh/color/{path}")
}

/// Envoy's bootstrap edited as App Mesh's own Envoy image writes it: the resource's ARN as both
/// node.cluster and node.id.
fn as_app_mesh(resource_arn: String) -> impl FnOnce(&mut serde_json::Value) {
    move |doc| {
        doc["node"]["cluster"] = serde_json::json!(resource_arn);
        doc["node"]["id"] = serde_json::json!(resource_arn);
    }
}

#[test]
fn an_envoy_presenting_a_virtual_node_arn_gets_that_node_s_proxy() {
    let dir = TempDir::new("appmesh-alias");
    let app = Backend::start("blue-app", 0).unwrap();
    let other = Backend::start("red-app", 0).unwrap();
    let (blue_port, red_port) = (free_port(), free_port());
    let catalog = dir.write(
        "catalog.yaml",
        &format!(
            r#"
version: 1
proxies:
  blue:
    aliases: ["{blue_arn}"]
    listeners:
      - {{ name: ingress, address: 127.0.0.1, port: {blue_port}, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: blue-local }} ] }}
  red:
    listeners:
      - {{ name: ingress, address: 127.0.0.1, port: {red_port}, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: red-local }} ] }}
upstreams:
  blue-local: {{ protocol: http1, endpoints: {{ static: ["{app}"] }} }}
  red-local: {{ protocol: http1, endpoints: {{ static: ["{other}"] }} }}
"#,
            blue_arn = arn("virtualNode/blue"),
            app = app.endpoint(),
            other = other.endpoint(),
        ),
    );
    let server = XdsServer::start(&dir, &catalog, 0);
    server.wait_ready();
    let envoy = Envoy::start_with(
        &dir,
        "blue",
        server.xds_port,
        Mode::Sotw,
        as_app_mesh(arn("virtualNode/blue")),
    );
    envoy.wait_live();
    http::wait_for_body(blue_port, "blue-app");
    assert!(
        http::get(red_port, "/", &[]).is_err(),
        "the red proxy's listener is not on this Envoy"
    );
    assert_eq!(server.metric("xds_unknown_proxy_streams_total"), 0.0);
    // Status names the proxy the alias selects.
    let nodes = server.admin_json("/debug/nodes");
    let node = nodes
        .as_array()
        .and_then(|n| {
            n.iter()
                .find(|n| n["id"] == arn("virtualNode/blue").as_str())
        })
        .cloned()
        .unwrap_or_default();
    assert_eq!(node["proxy"], "blue", "{nodes}");
}

/// moto with the color mesh in it; `instances` are the Cloud Map instances (COLOR=HOST:PORT).
fn color_mesh(dir: &TempDir, gateway_port: u16, instances: &[String], extra: &[&str]) -> Moto {
    let moto = Moto::start_appmesh(dir, 0);
    let mut args: Vec<&str> = Vec::new();
    let gateway = gateway_port.to_string();
    args.push(&gateway);
    args.extend(instances.iter().map(String::as_str));
    args.extend_from_slice(extra);
    moto.fixture("appmesh_colorapp.py", &args);
    moto
}

/// Lists two items a page, and a mesh with an INACTIVE virtual node and route: every page of
/// every kind is read (seven virtual nodes, routes of one router over four pages), and the report
/// names what was left out for its status.
#[test]
fn every_page_is_read_and_resources_that_are_not_active_are_reported() {
    let dir = TempDir::new("appmesh-pages");
    let moto = Moto::start_appmesh_paged(&dir, 2);
    moto.fixture("appmesh_colorapp.py", &["9080", "--inactive"]);
    let out = dir.path().join("catalog.d");
    let run = import(&moto, &["--out", out.to_str().unwrap()]);
    let stderr = text(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    for line in [
        "virtual nodes: 8 described",
        "virtual services: 3 described",
        "routes: 7 described",
        "gateway routes: 1 described",
    ] {
        assert!(stderr.contains(line), "{line:?} missing from {stderr}");
    }
    for fragment in [
        "black",
        "blue",
        "front",
        "green",
        "red",
        "tcpclient",
        "tcpecho",
        "tcplegacy",
    ] {
        assert!(out.join(format!("{fragment}.yaml")).is_file(), "{fragment}");
    }
    assert!(!out.join("white.yaml").exists());
    let report = std::fs::read_to_string(out.join("IMPORT-REPORT.md")).unwrap();
    for line in [
        "- virtual node `white`: INACTIVE, left out (App Mesh serves only ACTIVE resources)",
        "- route `colorteller/retired`: INACTIVE, left out (App Mesh serves only ACTIVE resources)",
    ] {
        assert!(report.contains(line), "{line:?} missing from {report}");
    }
    let checked = validate(&out);
    assert!(checked.status.success(), "{}", text(&checked.stderr));
}

/// `--dry-run --out DIR` prints the report the import then writes into DIR, byte for byte:
/// checked beside DIR's other fragments (whose warnings it carries), naming what it would
/// remove, and failing as the import would on a file that is not the import's.
#[test]
fn a_dry_run_into_a_directory_prints_the_report_the_import_writes_there() {
    let dir = TempDir::new("appmesh-plan");
    let moto = color_mesh(&dir, 9080, &[], &[]);
    let out = dir.path().join("catalog.d");
    std::fs::create_dir_all(&out).unwrap();
    // A fragment of the team's own beside the import, with a route that never matches.
    let extra = "version: 1\nproxies:\n  extra:\n    listeners:\n      - { name: web, port: 8080, protocol: http, routes: [ { match: { prefix: / }, to: extra }, { match: { prefix: /x }, to: extra } ] }\nupstreams:\n  extra: { protocol: http1, endpoints: { static: [\"10.0.0.1:80\"] } }\n";
    std::fs::write(out.join("extra.yaml"), extra).unwrap();
    // A fragment an earlier import of this mesh wrote, of a node deleted since.
    let gone = "# Imported from App Mesh mesh color by `xds-server import-appmesh`; see IMPORT-REPORT.md.\nversion: 1\n";
    std::fs::write(out.join("gone.yaml"), gone).unwrap();
    let listed = || {
        let mut files: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        files
    };

    let dry = import(&moto, &["--dry-run", "--out", out.to_str().unwrap()]);
    let stderr = text(&dry.stderr);
    assert!(dry.status.success(), "{stderr}");
    let planned = text(&dry.stdout);
    assert!(
        planned.contains("proxies.extra.listeners[0].routes[1]: never matches"),
        "{planned}"
    );
    assert!(
        stderr.contains(&format!(
            "would remove {} (a resource no longer in the mesh)",
            out.join("gone.yaml").display()
        )),
        "{stderr}"
    );
    assert_eq!(listed(), ["extra.yaml", "gone.yaml"], "nothing written");

    let run = import(&moto, &["--out", out.to_str().unwrap()]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let written = std::fs::read_to_string(out.join("IMPORT-REPORT.md")).unwrap();
    assert_eq!(written, planned);
    assert!(!out.join("gone.yaml").exists());

    // A file of the import's name that is not the import's: the dry run fails as the import
    // would, naming it.
    let other = dir.path().join("other.d");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("front.yaml"), extra).unwrap();
    let dry = import(&moto, &["--dry-run", "--out", other.to_str().unwrap()]);
    assert!(!dry.status.success());
    assert!(
        text(&dry.stderr).contains(&format!(
            "{} exists and was not written by an import of this mesh",
            other.join("front.yaml").display()
        )),
        "{}",
        text(&dry.stderr)
    );
    assert!(text(&dry.stdout).is_empty(), "{}", text(&dry.stdout));
}

/// Step 4 of docs/migrating-from-app-mesh.md, tried against the test mesh: `front` moves to
/// the generic Envoy, its task keeping App Mesh's `proxyConfiguration` (ECS's redirect: app
/// port 8080 to the ingress on 15000, every outbound connection to the egress on 15001, UID and
/// GID 1337 ignored). Its Envoy, named the App Mesh way (its ARN as node.cluster), is
/// configured from the import with the default ports. The app calls `colorteller.color.local`
/// as before and reaches the colors, which have not moved (plain HTTP servers at their Cloud
/// Map addresses stand for their App Mesh Envoys, which take plain HTTP); a caller that has not
/// moved (an App Mesh Envoy sends plain HTTP to the task's app port) reaches front's app
/// through the ingress.
#[test]
fn a_service_moved_off_app_mesh_keeps_its_proxy_configuration_and_reaches_the_rest() {
    use std::net::SocketAddr;
    let dir = TempDir::new("appmesh-move");
    let (app, peer) = tests::netns::ecs_task("move", &[8080]);
    let colors = ["red", "blue", "green", "black"];
    let peer_at = |k: usize| SocketAddr::from(([10, 99, 1, 2], 9001 + k as u16));
    let _colors = peer.hold(|| {
        colors
            .iter()
            .enumerate()
            .map(|(k, c)| Backend::start_at(c, peer_at(k)).expect("a color starts"))
            .collect::<Vec<_>>()
    });
    let _front_app = app.hold(|| {
        Backend::start_at("front-app", SocketAddr::from(([127, 0, 0, 1], 8080)))
            .expect("front's app starts")
    });
    let instances: Vec<String> = colors
        .iter()
        .enumerate()
        .map(|(k, c)| format!("{c}={}", peer_at(k)))
        .collect();
    app.run(|| {
        let moto = color_mesh(&dir, free_port(), &instances, &[]);
        let out = dir.path().join("catalog.d");
        let run = import(&moto, &["--out", out.to_str().unwrap()]);
        assert!(run.status.success(), "{}", text(&run.stderr));
        let server = XdsServer::start_env(&dir, out.as_os_str(), 0, &[], &moto.env());
        server.wait_ready();
        let envoy = Envoy::start_as_user_with(
            &dir,
            "front",
            server.xds_port,
            1337,
            as_app_mesh(arn("virtualNode/front")),
        );
        envoy.wait_live();
        // The app dials the address Cloud Map DNS gave it (any: ECS hands every outbound
        // connection to the egress listener) with the name it always used.
        let call = |headers: &[(&str, &str)]| {
            http::request_to(
                SocketAddr::from(([10, 99, 0, 5], 8080)),
                "GET",
                "/",
                headers,
            )
        };
        wait_for(
            "colorteller through front's egress",
            Duration::from_secs(30),
            || {
                call(&[
                    ("host", "colorteller.color.local:8080"),
                    ("x-color", "blue"),
                ])
                .ok()
                .filter(|r| r.body.trim() == "blue")
            },
        );
        // App Mesh's routes, now front's Envoy's: the exact path route and the weights.
        let r = http::request_to(
            SocketAddr::from(([10, 99, 0, 5], 8080)),
            "GET",
            "/green",
            &[("host", "colorteller.color.local")],
        )
        .unwrap();
        assert_eq!(r.body.trim(), "green");
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..30 {
            let r = call(&[("host", "colorteller.color.local:8080")]).unwrap();
            seen.insert(r.body.trim().to_string());
        }
        assert_eq!(
            seen,
            ["blue", "red"].map(String::from).into(),
            "the weighted route (red 2, blue 1, green 0)"
        );
        assert!(
            envoy
                .stat("listener.127.0.0.1_15001.downstream_cx_total")
                .is_some_and(|n| n >= 32),
            "through the egress listener"
        );
        // A caller not moved yet dials front's task on its app port: the ingress takes it to
        // the app.
        let r = peer
            .run(|| {
                http::request_to(
                    SocketAddr::from(([10, 99, 1, 1], 8080)),
                    "GET",
                    "/",
                    &[("host", "front.color.local:8080")],
                )
            })
            .unwrap();
        assert_eq!((r.status, r.body.trim()), (200, "front-app"));
        assert!(
            envoy
                .stat("listener.0.0.0.0_15000.downstream_cx_total")
                .is_some_and(|n| n >= 1),
            "through the ingress listener"
        );
    });
}

fn import(moto: &Moto, args: &[&str]) -> Output {
    Command::new(workspace_bin("xds-server"))
        .args(["import-appmesh", "--mesh", "color"])
        .args(args)
        .envs(moto.env())
        .output()
        .expect("xds-server import-appmesh runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn validate(dir: &Path) -> Output {
    Command::new(workspace_bin("xds-server"))
        .arg("validate")
        .arg(dir)
        .output()
        .expect("xds-server validate runs")
}

#[test]
fn the_color_mesh_imports_into_fragments_that_validate_and_a_report_of_what_was_not_mapped() {
    let dir = TempDir::new("appmesh-import");
    let moto = color_mesh(&dir, 9080, &[], &[]);
    let out = dir.path().join("catalog.d");

    // A dry run prints the report and writes nothing.
    let dry = import(&moto, &["--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry.stderr));
    assert!(text(&dry.stdout).starts_with("# App Mesh import report: mesh `color`"));
    assert!(!out.exists());

    let run = import(&moto, &["--out", out.to_str().unwrap()]);
    let stderr = text(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    for line in [
        "virtual nodes: 8 described",
        "virtual services: 3 described",
        "virtual routers: 3 described",
        "routes: 7 described",
        "virtual gateways: 1 described",
        "gateway routes: 1 described",
    ] {
        assert!(stderr.contains(line), "{line:?} missing from {stderr}");
    }
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "IMPORT-REPORT.md",
            "black.yaml",
            "blue.yaml",
            "colorgateway.yaml",
            "front.yaml",
            "green.yaml",
            "red.yaml",
            "tcpclient.yaml",
            "tcpecho.yaml",
            "tcplegacy.yaml"
        ]
    );
    let checked = validate(&out);
    assert!(
        checked.status.success(),
        "{}{}",
        text(&checked.stdout),
        text(&checked.stderr)
    );

    let front = std::fs::read_to_string(out.join("front.yaml")).unwrap();
    assert!(front.contains(&arn("virtualNode/front")), "{front}");
    let report = std::fs::read_to_string(out.join("IMPORT-REPORT.md")).unwrap();
    // front's tcp backend on a port of its own: a TCP chain of its HTTP egress listener.
    let doc: serde_json::Value = serde_saphyr::from_str(&front).unwrap();
    let egress = &doc["proxies"]["front"]["listeners"][1];
    assert_eq!(egress["protocol"], "http", "{front}");
    assert_eq!(
        egress["ports"],
        serde_json::json!({ "2701": "tcpecho" }),
        "{front}"
    );
    assert!(
        report.contains("| `spec.backends[1].virtualService` | mapped | ports [2701] of the egress listener (TCP, by the port dialled), to virtual node tcpecho |"),
        "{report}"
    );
    // Its tcp backend on the port it dials an HTTP one on: reported as not mapped.
    assert!(
        report.contains("| `spec.backends[2].virtualService` | **not mapped**: port 8080 is also HTTP virtual service colorteller.color.local's: the egress listener takes a port as TCP or as HTTP by Host, not both, so it stays HTTP |"),
        "{report}"
    );
    // The gateway hop sets no timeout of its own: the target service's route times the
    // request; the hop to the `mesh` listener has App Mesh's circuit breakers, not Envoy's.
    let gateway = std::fs::read_to_string(out.join("colorgateway.yaml")).unwrap();
    let doc: serde_json::Value = serde_saphyr::from_str(&gateway).unwrap();
    let routes = doc["proxies"]["colorgateway"]["listeners"][0]["routes"]
        .as_array()
        .unwrap_or_else(|| panic!("{gateway}"));
    assert!(!routes.is_empty(), "{gateway}");
    for route in routes {
        assert_eq!(route["timeout"], "0s", "{gateway}");
    }
    for (name, u) in doc["upstreams"].as_object().unwrap() {
        assert_eq!(u["max_requests"], 2_147_483_647, "{name}: {gateway}");
        assert_eq!(u["max_connections"], 2_147_483_647, "{name}: {gateway}");
    }
    assert!(
        report.contains("| `timeout` | mapped | none on the gateway hop (0s)"),
        "{report}"
    );
    // A caller whose backends are all tcp: the tcp route, on a tcp egress by the port dialled.
    let tcpclient = std::fs::read_to_string(out.join("tcpclient.yaml")).unwrap();
    let doc: serde_json::Value = serde_saphyr::from_str(&tcpclient).unwrap();
    let egress = &doc["proxies"]["tcpclient"]["listeners"][1];
    assert_eq!(egress["protocol"], "tcp", "{tcpclient}");
    assert_eq!(
        egress["ports"],
        serde_json::json!({ "2701": "tcpecho" }),
        "{tcpclient}"
    );
    assert!(
        report.contains("| `spec.backends[0].virtualService` | mapped | ports [2701] of the egress listener (TCP, by the port dialled), to virtual node tcpecho |"),
        "{report}"
    );
    // LOADBALANCER DNS is a logical DNS upstream.
    let tcpecho = std::fs::read_to_string(out.join("tcpecho.yaml")).unwrap();
    assert!(tcpecho.contains("resolve: logical"), "{tcpecho}");
}

#[test]
fn a_missing_mesh_is_an_error_naming_it_and_nothing_is_written() {
    let dir = TempDir::new("appmesh-missing");
    let moto = Moto::start_appmesh(&dir, 0);
    let out = dir.path().join("catalog.d");
    let run = Command::new(workspace_bin("xds-server"))
        .args(["import-appmesh", "--mesh", "nope", "--out"])
        .arg(&out)
        .envs(moto.env())
        .output()
        .unwrap();
    assert!(!run.status.success());
    let stderr = text(&run.stderr);
    assert!(stderr.contains("App Mesh DescribeMesh (nope)"), "{stderr}");
    assert!(!out.exists());
}

/// Counts which backend answered `n` requests (by status and name).
fn tally(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> std::collections::BTreeMap<String, usize> {
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..n {
        let r = http::get(port, path, headers).expect("the gateway answers");
        // The echo backends answer their name first.
        let name = r.body.lines().next().unwrap_or_default().to_string();
        *seen.entry(format!("{} {name}", r.status)).or_insert(0) += 1;
    }
    seen
}

#[test]
fn envoys_configured_from_the_import_route_as_app_mesh_would() {
    let dir = TempDir::new("appmesh-traffic");
    let red = Backend::start_echo("red").unwrap();
    let blue = Backend::start_echo("blue").unwrap();
    let green = Backend::start_echo("green").unwrap();
    let black = Backend::start_failing("black", 0, 500).unwrap();
    let gateway_port = free_port();
    let instances: Vec<String> = [
        ("red", &red),
        ("blue", &blue),
        ("green", &green),
        ("black", &black),
    ]
    .iter()
    .map(|(c, b)| format!("{c}={}", b.endpoint()))
    .collect();
    let moto = color_mesh(&dir, gateway_port, &instances, &[]);
    let out = dir.path().join("catalog.d");
    let (ingress, egress) = (free_port(), free_port());
    let run = import(
        &moto,
        &[
            "--out",
            out.to_str().unwrap(),
            "--ingress-port",
            &ingress.to_string(),
            "--egress-port",
            &egress.to_string(),
            "--listen-address",
            "127.0.0.1",
        ],
    );
    assert!(run.status.success(), "{}", text(&run.stderr));

    let server = XdsServer::start_env(&dir, out.as_os_str(), 0, &[], &moto.env());
    server.wait_ready();
    // The gateway's Envoy started the App Mesh way: its ARN as node.cluster.
    let gateway = Envoy::start_with(
        &dir,
        "colorgateway",
        server.xds_port,
        Mode::Delta,
        as_app_mesh(arn("virtualGateway/colorgateway")),
    );
    gateway.wait_live();
    wait_for(
        "the colors' endpoints from Cloud Map",
        Duration::from_secs(30),
        || {
            http::get(gateway_port, "/color/", &[("x-color", "blue")])
                .ok()
                .filter(|r| r.body.starts_with("blue"))
        },
    );

    // The gateway rewrote the prefix to / and the Host to the service's name.
    let r = http::get(gateway_port, "/color/hello", &[("x-color", "blue")]).unwrap();
    let head = r.body.to_ascii_lowercase();
    assert!(head.contains("get /hello http/1.1"), "{}", r.body);
    assert!(head.contains("host: colorteller.color.local"), "{}", r.body);

    // The header route: always blue.
    let by_header: Vec<String> = tally(gateway_port, "/color/", &[("x-color", "blue")], 20)
        .into_keys()
        .collect();
    assert_eq!(by_header, ["200 blue"]);

    // The exact path route, after the rewrite: /color/green is /green.
    let r = http::get(gateway_port, "/color/green", &[]).unwrap();
    assert!(r.body.starts_with("green"), "{}", r.body);

    // A header in a range, another not matching a prefix (App Mesh's `invert`): green.
    let r = http::get(
        gateway_port,
        "/color/",
        &[("x-canary", "5"), ("x-user", "ann")],
    )
    .unwrap();
    assert!(r.body.starts_with("green"), "{}", r.body);
    for not_canary in [
        [("x-canary", "10"), ("x-user", "ann")],
        [("x-canary", "5"), ("x-user", "test-ann")],
    ] {
        let r = http::get(gateway_port, "/color/", &not_canary).unwrap();
        assert!(!r.body.starts_with("green"), "{not_canary:?}: {}", r.body);
    }

    // The weighted route: red 2, blue 1, green 0 (never).
    let n = 300;
    let seen = tally(gateway_port, "/color/", &[], n);
    let count = |c: &str| {
        seen.iter()
            .filter(|(k, _)| k.starts_with(&format!("200 {c}")))
            .map(|(_, v)| *v)
            .sum::<usize>()
    };
    assert_eq!(count("red") + count("blue"), n, "{seen:?}");
    assert_eq!(count("green"), 0, "{seen:?}");
    // Expected 200 and 100 (a standard deviation of 8): these bounds are more than 3.5 of them
    // wide, and exclude 150, what 1:1 weights would give.
    assert!((170..=230).contains(&count("red")), "{seen:?}");
    assert!((70..=130).contains(&count("blue")), "{seen:?}");

    // The retrying route: a failing backend is tried 1 + 3 times (maxRetries 3, server-error).
    let before = black.hits();
    let r = http::get(gateway_port, "/color/flaky", &[]).unwrap();
    assert_eq!(r.status, 500);
    wait_for(
        "the retries to reach the failing backend",
        Duration::from_secs(10),
        || (black.hits() - before >= 4).then_some(()),
    );
    assert_eq!(black.hits() - before, 4);
}

/// A mesh with SPIRE-style mutual TLS (SDS certificates and trust) imports as the catalog's
/// mesh mTLS: the report says what changed, the fragments validate, and the gateway's Envoy
/// reaches blue's Envoy over mutual TLS with the identities of the control plane's CA, while
/// plaintext to blue's listener is refused.
#[test]
fn a_mesh_with_sds_mutual_tls_imports_as_mesh_mtls_that_envoys_speak() {
    let dir = TempDir::new("appmesh-tls");
    let ca = dir.path().join("ca");
    assert!(tests::ca_init(&ca).status.success());
    let blue_app = Backend::start_echo("blue").unwrap();
    let red = Backend::start_echo("red").unwrap();
    let (gateway_port, ingress, egress) = (free_port(), free_port(), free_port());
    let blue_app_port = blue_app.endpoint().rsplit(':').next().unwrap().to_string();
    // Blue's Cloud Map instance is its Envoy's ingress listener; red's is the app itself.
    let instances = [
        format!("blue=127.0.0.1:{ingress}"),
        format!("red={}", red.endpoint()),
    ];
    let moto = color_mesh(&dir, gateway_port, &instances, &["--tls", &blue_app_port]);
    let out = dir.path().join("catalog.d");
    let run = import(
        &moto,
        &[
            "--out",
            out.to_str().unwrap(),
            "--ingress-port",
            &ingress.to_string(),
            "--egress-port",
            &egress.to_string(),
            "--listen-address",
            "127.0.0.1",
        ],
    );
    assert!(run.status.success(), "{}", text(&run.stderr));
    let checked = validate(&out);
    assert!(
        checked.status.success(),
        "{}{}",
        text(&checked.stdout),
        text(&checked.stderr)
    );
    let report = std::fs::read_to_string(out.join("IMPORT-REPORT.md")).unwrap();
    for line in [
        "| virtual node `blue` | `spec.listeners[0].tls.certificate.sds` | mapped with a loss: certificate: mesh: the proxy's identity spiffe://TRUST_DOMAIN/proxy/NAME from the control plane's CA (serve --ca), not SDS secret \"spiffe://color.local/blue\"",
        "| virtual node `blue` | `spec.listeners[0].tls.validation.subjectAlternativeNames` | mapped with a loss: left out: clients present mesh identities",
        // Mapped fields are in each resource's own table.
        "| `spec.listeners[0].tls.certificate.acm` | mapped | certificate { acm: { arn } }",
        "| `spec.listeners[0].tls.mode` | mapped | mode: permissive",
        "| `spec.backendDefaults.clientPolicy.tls` | mapped | tls of upstream blue (service colorteller.color.local) |",
        "| virtual gateway `colorgateway` | `spec.backendDefaults.clientPolicy.tls` | **not mapped**: to virtual node red: SDS trust \"spiffe://color.local\", but virtual node red does not present an SDS certificate",
    ] {
        assert!(report.contains(line), "{line:?} missing from {report}");
    }
    let blue = std::fs::read_to_string(out.join("blue.yaml")).unwrap();
    let doc: serde_json::Value = serde_saphyr::from_str(&blue).unwrap();
    assert_eq!(
        doc["proxies"]["blue"]["listeners"][0]["tls"],
        serde_json::json!({ "mode": "strict", "certificate": "mesh", "client_certificate": { "trust": "mesh" } }),
        "{blue}"
    );
    assert_eq!(
        doc["upstreams"]["blue"]["tls"],
        serde_json::json!({ "mesh": "blue" }),
        "{blue}"
    );

    let ca_flag = format!("file:{}", ca.display());
    let server = XdsServer::start_env(&dir, out.as_os_str(), 0, &["--ca", &ca_flag], &moto.env());
    server.wait_ready();
    let gateway = Envoy::start_with(
        &dir,
        "colorgateway",
        server.xds_port,
        Mode::Delta,
        as_app_mesh(arn("virtualGateway/colorgateway")),
    );
    // Blue's Envoy as an older App Mesh image names itself (APPMESH_VIRTUAL_NODE_NAME): the
    // resource name, not the ARN, as node.cluster and node.id.
    let blue_envoy = Envoy::start_with(
        &dir,
        "blue",
        server.xds_port,
        Mode::Sotw,
        as_app_mesh("mesh/color/virtualNode/blue".to_string()),
    );
    gateway.wait_live();
    blue_envoy.wait_live();
    wait_for(
        "blue through its Envoy, over mutual TLS",
        Duration::from_secs(30),
        || {
            http::get(gateway_port, "/color/", &[("x-color", "blue")])
                .ok()
                .filter(|r| r.status == 200 && r.body.starts_with("blue"))
        },
    );
    let stats = http::get(blue_envoy.admin_port, "/stats", &[])
        .unwrap()
        .body;
    let handshakes: u64 = stats
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(k, _)| k.starts_with("listener.") && k.ends_with(".ssl.handshake"))
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .sum();
    assert!(handshakes >= 1, "{stats}");
    let certs = http::get(blue_envoy.admin_port, "/certs", &[])
        .unwrap()
        .body;
    assert!(certs.contains("spiffe://mesh.local/proxy/blue"), "{certs}");
    // Plaintext to blue's listener (what an App Mesh caller without the policy would send) is
    // refused: the listener is STRICT, as in App Mesh.
    assert!(
        !http::get(ingress, "/", &[]).is_ok_and(|r| r.status == 200),
        "plaintext got through"
    );
}
