//! Seeing the fleet: three real Envoys (two state-of-the-world, one delta), one of which rejects
//! its routes, seen through CSDS, `xds-server status` and the status page in headless Chromium.
//! One set-up serves every check, in the order an operator would look.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use envoy_types::pb::envoy::service::status::v3::ClientStatusRequest;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::envoy::r#type::matcher::v3::{NodeMatcher, StringMatcher};
use tests::{
    Backend, Envoy, Mode, TempDir, XdsServer, browser, free_port, http, wait_for, workspace_bin,
};

/// The route that Envoy "c" refuses: its runtime lowers RE2's program size limit to 50, and
/// this regex needs 64 (within the default limit, so the catalog is valid).
const BIG_REGEX: &str =
    "\n          - match: { regex: \"/big/(abc|def|ghi){5}\" }\n            to: blue";

fn listener(name: &str, port: u16, extra: &str) -> String {
    format!(
        r#"
  {name}:
    listeners:
      - name: public
        address: 127.0.0.1
        port: {port}
        protocol: http
        routes:{extra}
          - match: {{ prefix: /green/ }}
            to: green
          - match: {{ prefix: / }}
            to: blue"#
    )
}

/// Proxies a, b and c, each with one listener; `blue` has two static endpoints (one of them a
/// port nobody listens on), `green` one from a file.
fn catalog(ports: [u16; 3], blue: &Backend, extra_c: &str) -> String {
    format!(
        r#"
version: 1
defaults:
  connect_timeout: 1s
proxies:{a}{b}{c}
upstreams:
  blue:
    protocol: http1
    endpoints: {{ static: ["{blue}", "127.0.0.1:9"] }}
  green:
    protocol: http1
    endpoints: {{ file: green.json }}
"#,
        a = listener("a", ports[0], ""),
        b = listener("b", ports[1], ""),
        c = listener("c", ports[2], extra_c),
        blue = blue.endpoint()
    )
}

/// `xds-server status ARGS`: exit code and stdout.
fn status(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(workspace_bin("xds-server"))
        .arg("status")
        .args(args)
        .output()
        .expect("xds-server status runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The line of the table that names `node`.
fn line<'a>(table: &'a str, node: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.starts_with(node))
        .unwrap_or_else(|| panic!("no line for {node} in\n{table}"))
}

/// Resource name → version_info, per type, as Envoy's own `/config_dump` shows them.
fn envoy_versions(envoy: &Envoy) -> BTreeMap<&'static str, BTreeMap<String, String>> {
    let r = http::get(envoy.admin_port, "/config_dump?include_eds", &[]).unwrap();
    let dump: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let mut out: BTreeMap<&'static str, BTreeMap<String, String>> = BTreeMap::new();
    for config in dump["configs"].as_array().unwrap() {
        let t = config["@type"].as_str().unwrap_or_default();
        let (short, list, name, version): (&str, &str, &str, &str) = match t {
            t if t.ends_with("ClustersConfigDump") => (
                "cds",
                "dynamic_active_clusters",
                "/cluster/name",
                "/version_info",
            ),
            t if t.ends_with("ListenersConfigDump") => (
                "lds",
                "dynamic_listeners",
                "/active_state/listener/name",
                "/active_state/version_info",
            ),
            t if t.ends_with("RoutesConfigDump") => (
                "rds",
                "dynamic_route_configs",
                "/route_config/name",
                "/version_info",
            ),
            t if t.ends_with("EndpointsConfigDump") => (
                "eds",
                "dynamic_endpoint_configs",
                "/endpoint_config/cluster_name",
                "/version_info",
            ),
            _ => continue,
        };
        let entries = out.entry(short).or_default();
        for item in config[list].as_array().into_iter().flatten() {
            let n = item.pointer(name).and_then(|v| v.as_str());
            let v = item.pointer(version).and_then(|v| v.as_str());
            if let Some(n) = n {
                entries.insert(n.to_string(), v.unwrap_or_default().to_string());
            }
        }
    }
    out
}

/// The same, as this server's CSDS answers for the node `node_id`; with `synced`, every
/// resource must be SYNCED and carry its body.
async fn csds_versions(
    xds_port: u16,
    node_id: &str,
    synced: bool,
) -> BTreeMap<&'static str, BTreeMap<String, String>> {
    let mut client =
        ClientStatusDiscoveryServiceClient::connect(format!("http://127.0.0.1:{xds_port}"))
            .await
            .expect("CSDS answers on the xDS port");
    let req = ClientStatusRequest {
        node_matchers: vec![NodeMatcher {
            node_id: Some(StringMatcher {
                match_pattern: Some(MatchPattern::Exact(node_id.into())),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let resp = client.fetch_client_status(req).await.unwrap().into_inner();
    assert_eq!(resp.config.len(), 1, "one node matches {node_id}");
    let config = &resp.config[0];
    assert_eq!(config.node.as_ref().map(|n| n.id.as_str()), Some(node_id));
    let mut out: BTreeMap<&'static str, BTreeMap<String, String>> = BTreeMap::new();
    for c in &config.generic_xds_configs {
        let t = xds_server::translate::ResourceType::from_type_url(&c.type_url)
            .expect("a type this server serves");
        if synced {
            assert_eq!(c.config_status, 1, "{} {} is SYNCED", c.type_url, c.name);
            assert!(c.xds_config.is_some(), "{} carries its resource", c.name);
        }
        out.entry(t.short())
            .or_default()
            .insert(c.name.clone(), c.version_info.clone());
    }
    out
}

fn node_id(envoy: &Envoy, proxy: &str) -> String {
    format!("{proxy}-{}", envoy.admin_port)
}

#[tokio::test(flavor = "multi_thread")]
async fn status_csds_and_the_page_show_every_envoy_and_what_it_rejected() {
    let dir = TempDir::new("status");
    let blue = Backend::start("blue", 0).unwrap();
    let green = Backend::start("green", 0).unwrap();
    dir.write("green.json", &format!(r#"["{}"]"#, green.endpoint()));
    let ports = [free_port(), free_port(), free_port()];
    let path = dir.write("catalog.yaml", &catalog(ports, &blue, ""));
    let server = XdsServer::start(&dir, &path, 0);
    server.wait_ready();
    let a = Envoy::start(&dir, "a", server.xds_port, Mode::Sotw);
    let b = Envoy::start(&dir, "b", server.xds_port, Mode::Delta);
    let c = Envoy::start_with(&dir, "c", server.xds_port, Mode::Sotw, |bootstrap| {
        bootstrap["layered_runtime"] = serde_json::json!({ "layers": [ {
            "name": "static",
            "static_layer": { "re2.max_program_size.error_level": 50 },
        } ] });
    });
    for (envoy, port) in [(&a, ports[0]), (&b, ports[1]), (&c, ports[2])] {
        envoy.wait_live();
        http::wait_for_body(port, "blue");
    }
    let debug = format!("http://127.0.0.1:{}", server.debug_port);
    // CDS, EDS, LDS and RDS; these Envoys use no secrets.
    let synced = |out: &str, node: &str| {
        out.lines()
            .find(|l| l.starts_with(node))
            .is_some_and(|l| l.matches("SYNCED").count() == 4)
    };
    let (code, out, err) = wait_for("every Envoy SYNCED", Duration::from_secs(20), || {
        let r = status(&["--debug", &debug]);
        [("a", &a), ("b", &b), ("c", &c)]
            .iter()
            .all(|(p, e)| synced(&r.1, &node_id(e, p)))
            .then_some(r)
    });
    assert_eq!(code, 0, "all in sync: exit 0\n{out}\n{err}");
    assert!(line(&out, &node_id(&b, "b")).contains("delta"), "{out}");
    assert!(line(&out, &node_id(&a, "a")).contains("sotw"), "{out}");

    // CSDS, per node, gives the versions Envoy's own config dump shows, SotW and delta alike.
    for (envoy, proxy) in [(&a, "a"), (&b, "b")] {
        let id = node_id(envoy, proxy);
        let from_envoy = envoy_versions(envoy);
        let from_csds = csds_versions(server.xds_port, &id, true).await;
        for t in ["cds", "lds", "rds"] {
            assert!(
                !from_envoy.get(t).map(BTreeMap::is_empty).unwrap_or(true),
                "{proxy}: Envoy shows {t} resources"
            );
            assert_eq!(
                from_csds.get(t),
                from_envoy.get(t),
                "{proxy} ({id}): {t} versions"
            );
        }
        // Envoy's dump gives endpoints no version: the same load assignments, then.
        let names = |m: Option<&BTreeMap<String, String>>| -> Vec<String> {
            m.map(|m| m.keys().cloned().collect()).unwrap_or_default()
        };
        assert_eq!(names(from_csds.get("eds")), ["blue", "green"], "{proxy}");
        assert_eq!(
            names(from_csds.get("eds")),
            names(from_envoy.get("eds")),
            "{proxy}"
        );
    }

    // Envoy c rejects the routes with the big regex; a and b take theirs.
    let fine = catalog(ports, &blue, "");
    dir.write("catalog.yaml", &catalog(ports, &blue, BIG_REGEX));
    let c_id = node_id(&c, "c");
    let (code, out, _) = wait_for("c NACKED in status", Duration::from_secs(20), || {
        let r = status(&["--debug", &debug, "--wide"]);
        r.1.lines()
            .any(|l| l.starts_with(&c_id) && l.contains("NACKED"))
            .then_some(r)
    });
    assert_eq!(code, 1, "a NACK fails the check\n{out}");
    let c_line = line(&out, &c_id);
    assert!(
        c_line.contains("program size"),
        "the error text, whole with --wide: {c_line}"
    );
    assert_eq!(
        c_line.matches("SYNCED").count(),
        3,
        "only RDS rejected: {c_line}"
    );
    for (envoy, proxy) in [(&a, "a"), (&b, "b")] {
        assert!(
            synced(&out, &node_id(envoy, proxy)),
            "{proxy} stays SYNCED:\n{out}"
        );
    }
    // --proxy narrows the table, --output json says the same to scripts.
    let (code, only_a, _) = status(&["--debug", &debug, "--proxy", "a"]);
    assert_eq!((code, only_a.lines().count()), (0, 2), "{only_a}");
    let (code, json, _) = status(&["--debug", &debug, "--output", "json", "--proxy", "c"]);
    assert_eq!(code, 1);
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(rows[0]["types"]["rds"]["state"], "NACKED", "{json}");
    assert!(
        rows[0]["types"]["rds"]["last_nack"]
            .as_str()
            .unwrap()
            .contains("program size")
    );
    // CSDS says the same of c's routes: an error, with Envoy's text.
    let mut client = ClientStatusDiscoveryServiceClient::connect(format!(
        "http://127.0.0.1:{}",
        server.xds_port
    ))
    .await
    .unwrap();
    let all = client
        .fetch_client_status(ClientStatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.config.len(), 3, "no matcher: every node");
    // The streaming form answers each request.
    let mut answers = client
        .stream_client_status(tokio_stream::iter([ClientStatusRequest::default()]))
        .await
        .unwrap()
        .into_inner();
    let streamed = tests::xds_client::next(&mut answers).await;
    assert_eq!(streamed.config.len(), 3);
    let c_config = all
        .config
        .iter()
        .find(|n| n.node.as_ref().is_some_and(|n| n.id == c_id))
        .unwrap();
    let rejected: Vec<_> = c_config
        .generic_xds_configs
        .iter()
        .filter(|g| g.config_status == 4)
        .collect();
    assert_eq!(rejected.len(), 1, "one route configuration in ERROR");
    let error = rejected[0].error_state.as_ref().unwrap();
    assert!(error.details.contains("program size"), "{error:?}");
    // Envoy runs the routes it kept: CSDS names their version, as Envoy's dump does, and
    // the rejected version only in the error.
    let kept = envoy_versions(&c);
    let from_csds = csds_versions(server.xds_port, &c_id, false).await;
    assert_eq!(
        from_csds.get("rds"),
        kept.get("rds"),
        "c's routes: the kept version"
    );
    assert!(rejected[0].xds_config.is_some(), "the kept routes, whole");
    let kept_version = &rejected[0].version_info;
    assert_ne!(
        &error.version_info, kept_version,
        "the rejected version is another"
    );

    // The status page, as headless Chromium renders it: c's NACK text, whole, and the
    // endpoint counts per upstream.
    let nack = server
        .admin_json("/debug/nodes")
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == c_id.as_str())
        .and_then(|n| n["types"]["rds"]["last_nack"].as_str().map(String::from))
        .unwrap();
    let dom = browser::dump_dom(&format!("{debug}/"));
    let read = browser::text(&dom);
    assert!(read.contains(&nack), "the page shows {nack:?}:\n{read}");
    assert!(read.contains(&format!("{c_id} rejected RDS")), "{read}");
    let rows = browser::table_rows(&dom);
    let upstream = |name: &str| {
        rows.iter()
            .find(|r| r.first().map(String::as_str) == Some(name))
            .unwrap_or_else(|| panic!("no row for upstream {name}: {rows:?}"))
            .clone()
    };
    assert_eq!(upstream("blue")[2], "2", "{:?}", upstream("blue"));
    assert_eq!(upstream("green")[2], "1", "{:?}", upstream("green"));
    assert!(
        upstream("green")[1].starts_with("file "),
        "{:?}",
        upstream("green")
    );
    let envoy_row = rows
        .iter()
        .find(|r| r.first() == Some(&c_id))
        .expect("c's row");
    assert_eq!(envoy_row[6], "NACKED", "RDS of c: {envoy_row:?}");
    assert_eq!(envoy_row[3], "SYNCED", "CDS of c: {envoy_row:?}");
    assert!(
        dom.contains("http-equiv=\"refresh\""),
        "the page refreshes itself"
    );
    assert!(
        !dom.contains("<script") && !dom.contains("src=\"http"),
        "no external assets"
    );

    // Two replicas behind one balancer: the second holds no Envoy, the table says which does.
    let replica = XdsServer::start(&dir, &path, 0);
    let second = format!("http://127.0.0.1:{}", replica.debug_port);
    let (code, merged, _) = status(&["--debug", &debug, "--debug", &second]);
    assert_eq!(code, 1);
    assert!(
        merged.lines().next().unwrap().contains("REPLICA"),
        "{merged}"
    );
    assert!(line(&merged, &c_id).contains(&debug), "{merged}");
    // A replica that cannot be read fails the check too.
    drop(replica);
    let (code, _, err) = status(&["--debug", &second, "--proxy", "a"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&second), "{err}");

    // The fix: every Envoy SYNCED again, exit 0.
    dir.write("catalog.yaml", &fine);
    let (code, out, err) = wait_for("c SYNCED again", Duration::from_secs(20), || {
        let r = status(&["--debug", &debug]);
        synced(&r.1, &c_id).then_some(r)
    });
    assert_eq!(code, 0, "{out}\n{err}");

    // A change of one cluster of two: Envoy takes the new response's version for green only
    // and keeps blue's older one; CSDS says the same, SotW and delta alike.
    let green_only = fine.replace(
        "    endpoints: { file: green.json }\n",
        "    endpoints: { file: green.json }\n    max_connections: 100\n",
    );
    assert_ne!(green_only, fine);
    dir.write("catalog.yaml", &green_only);
    for (envoy, proxy) in [(&a, "a"), (&b, "b")] {
        let from_envoy = wait_for("green changed in Envoy", Duration::from_secs(20), || {
            let v = envoy_versions(envoy);
            let cds = v.get("cds")?;
            (cds.get("green")? != cds.get("blue")?).then_some(v)
        });
        let id = node_id(envoy, proxy);
        let from_csds = wait_for("CSDS hears the ACK", Duration::from_secs(20), || {
            let v = futures_block(csds_versions(server.xds_port, &id, false));
            (v.get("cds") == from_envoy.get("cds")).then_some(v)
        });
        assert_eq!(from_csds.get("lds"), from_envoy.get("lds"), "{proxy}");
    }
}

/// Runs `f` to completion from synchronous code inside the test's runtime.
fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}
