//! Mutual TLS between services: each proxy gets its mesh identity (`spiffe://TD/proxy/NAME`,
//! issued by the control plane's CA) and the trust bundle over SDS; a listener with
//! `tls.client_certificate.allow` takes only the proxies it names; certificates rotate in place.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tests::{Backend, Envoy, Mode, TempDir, XdsServer, ca_init, free_port, http, wait_for};

struct Ports {
    callee: u16,
    caller: u16,
    stranger: u16,
}

/// `callee` serves `app` on a mesh-TLS listener that allows `caller` only; `caller` and
/// `stranger` both route to it through the mesh upstream `callee`.
fn catalog(dir: &TempDir, ports: &Ports, app: &Backend, mode: &str) -> PathBuf {
    dir.write(
        "catalog.yaml",
        &format!(
            r#"
version: 1
mesh: {{ trust_domain: test.local }}
proxies:
  callee:
    listeners:
      - name: inbound
        address: 127.0.0.1
        port: {callee}
        protocol: http
        tls: {{ mode: {mode}, certificate: mesh, client_certificate: {{ trust: mesh, allow: [caller] }} }}
        routes: [ {{ match: {{ prefix: / }}, to: app }} ]
  caller:
    listeners:
      - {{ name: out, address: 127.0.0.1, port: {caller}, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: callee }} ] }}
  stranger:
    listeners:
      - {{ name: out, address: 127.0.0.1, port: {stranger}, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: callee }} ] }}
upstreams:
  app: {{ protocol: http1, endpoints: {{ static: ["{app}"] }} }}
  callee: {{ protocol: http1, endpoints: {{ static: ["127.0.0.1:{callee}"] }}, tls: {{ mesh: callee }} }}
"#,
            callee = ports.callee,
            caller = ports.caller,
            stranger = ports.stranger,
            app = app.endpoint(),
        ),
    )
}

fn ok_through(port: u16) -> bool {
    http::get(port, "/", &[]).is_ok_and(|r| r.status == 200 && r.body.trim() == "app")
}

/// Sum of Envoy counters whose name ends with `suffix`.
fn stat_ending(envoy: &Envoy, suffix: &str) -> u64 {
    let r = http::get(envoy.admin_port, "/stats", &[])
        .map(|r| r.body)
        .unwrap_or_default();
    r.lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(k, _)| k.ends_with(suffix))
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .sum()
}

/// The serials of the certificates an Envoy holds (admin `/certs`).
fn serials(envoy: &Envoy) -> Vec<String> {
    let body = http::get(envoy.admin_port, "/certs", &[])
        .map(|r| r.body)
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let mut out: Vec<String> = v["certificates"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["cert_chain"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["serial_number"].as_str().map(str::to_string))
        .collect();
    out.sort();
    out.dedup();
    out
}

struct Mesh {
    dir: TempDir,
    ports: Ports,
    app: Backend,
    server: XdsServer,
}

fn mesh(label: &str, extra: &[&str]) -> Mesh {
    let dir = TempDir::new(label);
    let ca = dir.path().join("ca");
    assert!(ca_init(&ca).status.success());
    let app = Backend::start("app", 0).unwrap();
    let ports = Ports {
        callee: free_port(),
        caller: free_port(),
        stranger: free_port(),
    };
    let catalog = catalog(&dir, &ports, &app, "strict");
    let ca_flag = format!("file:{}", ca.display());
    let mut flags = vec!["--ca", ca_flag.as_str(), "--trust-domain", "test.local"];
    flags.extend_from_slice(extra);
    let server = XdsServer::start_with(&dir, &catalog, 0, &flags);
    server.wait_ready();
    Mesh {
        dir,
        ports,
        app,
        server,
    }
}

#[test]
fn services_talk_over_mutual_tls_and_only_allowed_callers_get_through() {
    let m = mesh("mesh-mtls", &[]);
    let callee = Envoy::start(&m.dir, "callee", m.server.xds_port, Mode::Sotw);
    let caller = Envoy::start(&m.dir, "caller", m.server.xds_port, Mode::Delta);
    let stranger = Envoy::start(&m.dir, "stranger", m.server.xds_port, Mode::Sotw);
    for e in [&callee, &caller, &stranger] {
        e.wait_live();
    }
    wait_for(
        "a request from caller to callee",
        Duration::from_secs(20),
        || ok_through(m.ports.caller).then_some(()),
    );
    assert!(stat_ending(&callee, "ssl.handshake") >= 1);
    // The callee presents its own identity; the caller checks it is callee's.
    let certs = http::get(callee.admin_port, "/certs", &[]).unwrap().body;
    assert!(
        certs.contains("spiffe://test.local/proxy/callee"),
        "{certs}"
    );

    // A proxy with an identity of its own, but not in `allow`: refused by the callee.
    let r = http::get(m.ports.stranger, "/", &[]).unwrap();
    assert_ne!(r.status, 200, "the stranger got through: {}", r.body);
    wait_for(
        "the callee to count the refusal",
        Duration::from_secs(10),
        || (stat_ending(&callee, "rbac.denied") >= 1).then_some(()),
    );
    // A plaintext client is refused in strict mode.
    assert!(
        !ok_through(m.ports.callee),
        "a plaintext client was served in strict mode"
    );

    // No private key anywhere an operator looks.
    let debug = http::get(m.server.debug_port, "/debug/config?proxy=callee", &[]).unwrap();
    assert!(
        debug.body.contains("mesh/identity/callee"),
        "{}",
        debug.body
    );
    assert!(debug.body.contains("[redacted]"), "{}", debug.body);
    let catalog = m.dir.path().join("catalog.yaml");
    let render = std::process::Command::new(tests::workspace_bin("xds-server"))
        .args(["render", "--proxy", "callee", "--catalog"])
        .arg(&catalog)
        .output()
        .unwrap();
    let rendered = String::from_utf8_lossy(&render.stdout);
    assert!(render.status.success(), "{rendered}");
    assert!(rendered.contains("mesh/identity/callee"), "{rendered}");
    for text in [
        &debug.body,
        &rendered.to_string(),
        &m.server.process.output(),
    ] {
        assert!(!text.contains("PRIVATE KEY"), "a private key is shown");
    }

    // Permissive: plaintext clients are served too, and mutual TLS still works.
    catalog_mode(&m, "permissive");
    wait_for(
        "plaintext to be served in permissive mode",
        Duration::from_secs(20),
        || ok_through(m.ports.callee).then_some(()),
    );
    assert!(ok_through(m.ports.caller));
    assert!(stat_ending(&callee, "ssl.handshake") >= 1);
}

fn catalog_mode(m: &Mesh, mode: &str) {
    catalog(&m.dir, &m.ports, &m.app, mode);
}

/// 30-second mesh certificates rotate under a request loop: Envoy swaps them in place and no
/// request fails.
#[test]
fn mesh_certificates_rotate_in_place_without_failed_requests() {
    let m = mesh("mesh-rotate", &["--mesh-cert-ttl", "30s"]);
    let callee = Envoy::start(&m.dir, "callee", m.server.xds_port, Mode::Sotw);
    let caller = Envoy::start(&m.dir, "caller", m.server.xds_port, Mode::Delta);
    callee.wait_live();
    caller.wait_live();
    wait_for(
        "a request from caller to callee",
        Duration::from_secs(20),
        || ok_through(m.ports.caller).then_some(()),
    );
    let (callee_pid, caller_pid) = (callee.process.pid(), caller.process.pid());
    let started = Instant::now();
    let (mut ok, mut failed) = (0u32, 0u32);
    let mut seen: Vec<String> = serials(&callee);
    while started.elapsed() < Duration::from_secs(70) {
        if ok_through(m.ports.caller) {
            ok += 1;
        } else {
            failed += 1;
        }
        for s in serials(&callee) {
            if !seen.contains(&s) {
                seen.push(s);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    // The identity and the CA at first; then at least three renewals of the identity.
    assert!(seen.len() >= 4, "the callee held only {seen:?}");
    assert_eq!(
        (callee.process.pid(), caller.process.pid()),
        (callee_pid, caller_pid)
    );
    assert!(m.server.process.output().contains("mesh identity issued"));
}
