//! Mutual TLS between services: each proxy gets its mesh identity (`spiffe://TD/proxy/NAME`,
//! issued by the control plane's CA) and the trust bundle over SDS; a listener with
//! `tls.client_certificate.allow` takes only the proxies it names; certificates rotate in place.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tests::openssl::curl;
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
    // Mesh identities are renewed: in the expiry metric, not among the expiring.
    assert!(
        m.server
            .metric("xds_certificate_expiry_seconds{secret=\"mesh/identity/callee\"}")
            > 0.0
    );
    assert_eq!(
        m.server.admin_json("/readyz")["certificates_expiring"],
        serde_json::json!([])
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
    // The status page lists the certificate with its expiry, and never a key.
    let page = http::get(m.server.debug_port, "/", &[]).unwrap().body;
    let row = tests::browser::table_rows(&page)
        .into_iter()
        .find(|r| r.first().map(String::as_str) == Some("mesh/identity/callee"))
        .unwrap_or_else(|| panic!("no certificate row on the status page:\n{page}"));
    assert!(row[1].starts_with("in "), "{row:?}");
    assert!(!page.contains("PRIVATE KEY"), "{page}");
    let catalog = m.dir.path().join("catalog.yaml");
    let render = |extra: &[&str]| {
        std::process::Command::new(tests::workspace_bin("xds-server"))
            .args(["render", "--proxy", "callee", "--catalog"])
            .arg(&catalog)
            .args(extra)
            .output()
            .unwrap()
    };
    // As the server takes it: its trust domain, which the catalog must agree with.
    let other = render(&[]);
    assert_eq!(other.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&other.stderr).contains("mesh.trust_domain"));
    let render = render(&["--trust-domain", "test.local"]);
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
    // Plaintext has counters of its own: what is left to move before strict.
    assert!(stat_ending(&callee, "http.inbound_plaintext.downstream_cx_total") >= 1);
    // The stranger, over TLS, is still refused.
    let denied = stat_ending(&callee, "rbac.denied");
    let r = http::get(m.ports.stranger, "/", &[]).unwrap();
    assert_ne!(r.status, 200);
    wait_for(
        "the callee to refuse the stranger again",
        Duration::from_secs(10),
        || (stat_ending(&callee, "rbac.denied") > denied).then_some(()),
    );
}

fn catalog_mode(m: &Mesh, mode: &str) {
    catalog(&m.dir, &m.ports, &m.app, mode);
}

/// 30-second mesh certificates rotate for two minutes under a request loop: Envoy swaps them in
/// place and no request fails.
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
    let modified = stat_ending(&callee, "listener_manager.listener_modified");
    let started = Instant::now();
    let (mut ok, mut failed) = (0u32, 0u32);
    let mut seen: Vec<String> = serials(&callee);
    while started.elapsed() < Duration::from_secs(120) {
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
    // The identity and the CA at first; then a renewal about every 15 s (half life, with
    // jitter): at least five in two minutes.
    assert!(seen.len() >= 7, "the callee held only {seen:?}");
    assert_eq!(
        (callee.process.pid(), caller.process.pid()),
        (callee_pid, caller_pid)
    );
    assert!(m.server.process.output().contains("mesh identity issued"));
    // Only the secret changed: the listener was never replaced (no drain).
    assert_eq!(
        stat_ending(&callee, "listener_manager.listener_modified"),
        modified
    );
    // A new handshake now meets a renewed certificate.
    let presented = handshake_serial(&m, m.ports.callee);
    let first = &seen[..2];
    assert!(
        seen.iter().any(|s| s.eq_ignore_ascii_case(&presented))
            && !first.iter().any(|s| s.eq_ignore_ascii_case(&presented)),
        "presented {presented}, seen {seen:?}"
    );
}

/// The serial of the certificate a TLS handshake to `port` presents, as proxy `caller` (a
/// client certificate the test makes with the mesh CA).
fn handshake_serial(m: &Mesh, port: u16) -> String {
    let ca_dir = m.dir.path().join("ca");
    let read = |f: &str| std::fs::read_to_string(ca_dir.join(f)).unwrap();
    let ca =
        xds_server::ca::Ca::from_pem("test", &read("certificate.pem"), &read("private_key.pem"))
            .unwrap();
    let issued = ca
        .issue(&xds_server::ca::Leaf {
            uris: vec!["spiffe://test.local/proxy/caller".into()],
            client: true,
            ttl: Duration::from_secs(600),
            ..Default::default()
        })
        .unwrap();
    let cert = m.dir.write("caller.pem", &issued.certificate_pem);
    let key = m.dir.write("caller-key.pem", &issued.private_key_pem);
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-verify_return_error",
        ])
        .arg("-CAfile")
        .arg(ca_dir.join("certificate.pem"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    let start = text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let end = text.find("-----END CERTIFICATE-----").expect("its end") + 25;
    let pem = m.dir.write("presented.pem", &text[start..end]);
    let serial = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(pem)
        .output()
        .unwrap();
    String::from_utf8_lossy(&serial.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_string()
}

/// A listener serving a certificate from files, read again when they change; upstreams that
/// check a certificate against a file bundle and a name.
#[test]
fn file_certificates_are_served_replaced_in_place_and_checked_by_name() {
    let dir = TempDir::new("tls-files");
    let app = Backend::start("app", 0).unwrap();
    let (first, second) = (
        xds_server::ca::Ca::generate("first").unwrap(),
        xds_server::ca::Ca::generate("second").unwrap(),
    );
    let write_pair = |ca: &xds_server::ca::Ca| {
        let issued = tests::server_certificate(ca, "backend.test", Duration::from_secs(3600));
        dir.write("server-key.pem", &issued.private_key_pem);
        dir.write("server.pem", &issued.certificate_pem);
    };
    write_pair(&first);
    let first_ca = dir.write("first-ca.pem", first.certificate_pem());
    let second_ca = dir.write("second-ca.pem", second.certificate_pem());
    let both = dir.write(
        "both-ca.pem",
        &format!("{}{}", first.certificate_pem(), second.certificate_pem()),
    );
    let (public, good, wrong, system) = (free_port(), free_port(), free_port(), free_port());
    let catalog = dir.write(
        "catalog.yaml",
        &format!(
            r#"
version: 1
proxies:
  edge:
    listeners:
      - name: public
        address: 127.0.0.1
        port: {public}
        protocol: http
        tls: {{ certificate: {{ file: {{ chain: server.pem, key: server-key.pem }} }} }}
        routes: [ {{ match: {{ prefix: / }}, to: app }} ]
  client:
    listeners:
      - {{ name: good, address: 127.0.0.1, port: {good}, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: named }} ] }}
      - {{ name: wrong, address: 127.0.0.1, port: {wrong}, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: misnamed }} ] }}
      - {{ name: system, address: 127.0.0.1, port: {system}, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: public-roots }} ] }}
upstreams:
  app: {{ protocol: http1, endpoints: {{ static: ["{app}"] }} }}
  named: {{ protocol: http1, endpoints: {{ static: ["127.0.0.1:{public}"] }}, tls: {{ sni: backend.test, trust: {{ file: both-ca.pem }} }} }}
  misnamed: {{ protocol: http1, endpoints: {{ static: ["127.0.0.1:{public}"] }}, tls: {{ sni: other.test, trust: {{ file: both-ca.pem }} }} }}
  public-roots: {{ protocol: http1, endpoints: {{ static: ["127.0.0.1:{public}"] }}, tls: {{ sni: backend.test, trust: system }} }}
"#,
            app = app.endpoint(),
        ),
    );
    // The control plane's "system" roots are the test's two CAs.
    let roots = both.display().to_string();
    let server = XdsServer::start_env(
        &dir,
        catalog.as_os_str(),
        0,
        &[],
        &[("SSL_CERT_FILE", roots)],
    );
    server.wait_ready();
    let edge = Envoy::start(&dir, "edge", server.xds_port, Mode::Sotw);
    let client = Envoy::start(&dir, "client", server.xds_port, Mode::Delta);
    edge.wait_live();
    client.wait_live();
    wait_for(
        "the file certificate to be served",
        Duration::from_secs(20),
        || curl(public, Some(&first_ca), None).filter(|b| b == "app"),
    );
    assert_eq!(
        curl(public, None, None),
        None,
        "an untrusted certificate was accepted"
    );
    assert_eq!(curl(public, Some(&second_ca), None), None);

    // The upstream checked against the bundle and the name: the right name passes, another
    // is refused.
    http::wait_for_body(good, "app");
    let refused = http::get(wrong, "/", &[]).unwrap();
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(stat_ending(&client, "ssl.fail_verify_san") >= 1);
    // `trust: system`: the control plane's own roots, which Envoy accepts and checks against.
    http::wait_for_body(system, "app");
    assert_eq!(server.metric("xds_nacks_total{type=\"cds\"}"), 0.0);
    // HTTP listeners offer h2 over ALPN (gRPC clients insist on it).
    let h2 = std::process::Command::new("curl")
        .args([
            "-sS",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            "--resolve",
        ])
        .arg(format!("backend.test:{public}:127.0.0.1"))
        .arg("--cacert")
        .arg(&first_ca)
        .arg(format!("https://backend.test:{public}/"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&h2.stdout), "2", "{h2:?}");

    // New files: new handshakes present the new certificate; no request fails meanwhile.
    let pid = edge.process.pid();
    write_pair(&second);
    let started = Instant::now();
    let (mut ok, mut failed) = (0, 0);
    let mut switched = false;
    while started.elapsed() < Duration::from_secs(20) && !(switched && ok > 20) {
        match curl(public, Some(&both), None) {
            Some(b) if b == "app" => ok += 1,
            _ => failed += 1,
        }
        switched = switched || curl(public, Some(&second_ca), None).is_some();
    }
    assert!(switched, "the new certificate was never presented");
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    assert_eq!(curl(public, Some(&first_ca), None), None);
    assert_eq!(edge.process.pid(), pid);
    // The key is nowhere an operator looks; what the certificate is, is.
    let debug = http::get(server.debug_port, "/debug/config?proxy=edge", &[]).unwrap();
    assert!(debug.body.contains("file/server.pem") && !debug.body.contains("PRIVATE KEY"));
    let key = std::fs::read_to_string(dir.path().join("server-key.pem")).unwrap();
    let key_body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(
        !debug.body.contains(&key_body[..40]),
        "the key's base64 is shown"
    );
    assert!(
        debug.body.contains("\"serial\"") && debug.body.contains("DNS:backend.test"),
        "{}",
        debug.body
    );

    // A catalog naming a file that is not there is refused, naming the field; the last good
    // one stays served.
    server.expect_catalog_refused(|| {
        let text = std::fs::read_to_string(&catalog).unwrap();
        std::fs::write(
            &catalog,
            text.replace("chain: server.pem", "chain: missing.pem"),
        )
        .unwrap();
    });
    let ready = server.admin_json("/readyz");
    assert!(
        ready["catalog"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("proxies.edge.listeners[0].tls.certificate.file")),
        "{ready}"
    );
    assert_eq!(curl(public, Some(&second_ca), None).as_deref(), Some("app"));
}

/// A listener certificate kept in Secrets Manager (moto's), read again every
/// `--secret-interval`: a new value is served without an Envoy restart; a secret that cannot be
/// read is listed on `/readyz`.
#[test]
fn a_certificate_in_secrets_manager_is_served_and_followed() {
    let dir = TempDir::new("tls-secretsmanager");
    let moto = tests::Moto::start(&dir, 0);
    let app = Backend::start("app", 0).unwrap();
    let (first, second) = (
        xds_server::ca::Ca::generate("first").unwrap(),
        xds_server::ca::Ca::generate("second").unwrap(),
    );
    let leaf_dir = |label: &str, ca: &xds_server::ca::Ca| {
        let issued = tests::server_certificate(ca, "backend.test", Duration::from_secs(7 * 86_400));
        let at = dir.path().join(label);
        std::fs::create_dir_all(&at).unwrap();
        std::fs::write(at.join("certificate.pem"), &issued.certificate_pem).unwrap();
        std::fs::write(at.join("private_key.pem"), &issued.private_key_pem).unwrap();
        dir.path().join(label).display().to_string()
    };
    let first_ca = dir.write("first-ca.pem", first.certificate_pem());
    let second_ca = dir.write("second-ca.pem", second.certificate_pem());
    moto.fixture(
        "iam_identity.py",
        &["secret", "tls/edge", &leaf_dir("one", &first)],
    );
    let (public, broken) = (free_port(), free_port());
    let catalog = dir.write(
        "catalog.yaml",
        &format!(
            r#"
version: 1
proxies:
  edge:
    listeners:
      - name: public
        address: 127.0.0.1
        port: {public}
        protocol: http
        tls: {{ certificate: {{ secrets_manager: {{ secret: tls/edge }} }} }}
        routes: [ {{ match: {{ prefix: / }}, to: app }} ]
      - name: broken
        address: 127.0.0.1
        port: {broken}
        protocol: http
        tls: {{ certificate: {{ secrets_manager: {{ secret: tls/none }} }} }}
        routes: [ {{ match: {{ prefix: / }}, to: app }} ]
upstreams:
  app: {{ protocol: http1, endpoints: {{ static: ["{app}"] }} }}
"#,
            app = app.endpoint(),
        ),
    );
    let server = XdsServer::start_env(
        &dir,
        catalog.as_os_str(),
        0,
        &["--secret-interval", "1s"],
        &moto.env(),
    );
    server.wait_ready();
    let edge = Envoy::start(&dir, "edge", server.xds_port, Mode::Sotw);
    wait_for(
        "the certificate from Secrets Manager",
        Duration::from_secs(20),
        || curl(public, Some(&first_ca), None).filter(|b| b == "app"),
    );
    let ready = server.admin_json("/readyz");
    assert_eq!(
        ready["certificates_missing"],
        serde_json::json!(["secretsmanager/tls/none"]),
        "{ready}"
    );
    let pid = edge.process.pid();
    moto.fixture(
        "iam_identity.py",
        &["put-secret", "tls/edge", &leaf_dir("two", &second)],
    );
    wait_for(
        "the new value to be served",
        Duration::from_secs(20),
        || curl(public, Some(&second_ca), None).filter(|b| b == "app"),
    );
    assert_eq!(edge.process.pid(), pid);
    let log = server.process.output();
    assert!(log.contains("secretsmanager/tls/none") && !log.contains("PRIVATE KEY"));
}

/// An `allow` entry is one SAN of one type: `front.example` lets in a client certificate with
/// that DNS SAN, and refuses one that carries the name only as a URI SAN and its subject (which
/// Envoy's `authenticated.principal_name` would have matched too).
#[test]
fn an_allowed_dns_name_is_matched_only_as_a_dns_san() {
    let dir = TempDir::new("tls-allow-dns");
    let app = Backend::start("app", 0).unwrap();
    let ca = xds_server::ca::Ca::generate("clients").unwrap();
    let server_pair = tests::server_certificate(&ca, "backend.test", Duration::from_secs(3600));
    dir.write("server.pem", &server_pair.certificate_pem);
    dir.write("server-key.pem", &server_pair.private_key_pem);
    let ca_pem = dir.write("ca.pem", ca.certificate_pem());
    // A client certificate in a directory of its own, as `curl` takes it.
    let client = |label: &str, leaf: xds_server::ca::Leaf| {
        let issued = ca
            .issue(&xds_server::ca::Leaf {
                client: true,
                ttl: Duration::from_secs(3600),
                ..leaf
            })
            .unwrap();
        let at = dir.path().join(label);
        std::fs::create_dir(&at).unwrap();
        std::fs::write(at.join("certificate.pem"), &issued.certificate_pem).unwrap();
        std::fs::write(at.join("private_key.pem"), &issued.private_key_pem).unwrap();
        at
    };
    let dns = client(
        "dns",
        xds_server::ca::Leaf {
            names: vec!["front.example".into()],
            ..Default::default()
        },
    );
    // URI SAN `front.example`, and the subject's common name the same.
    let uri = client(
        "uri",
        xds_server::ca::Leaf {
            uris: vec!["front.example".into()],
            ..Default::default()
        },
    );
    let other = client(
        "other",
        xds_server::ca::Leaf {
            names: vec!["back.example".into()],
            ..Default::default()
        },
    );
    assert!(tests::openssl::x509_text(&uri.join("certificate.pem")).contains("URI:front.example"));
    let port = free_port();
    let catalog = dir.write(
        "catalog.yaml",
        &format!(
            r#"
version: 1
proxies:
  edge:
    listeners:
      - name: public
        address: 127.0.0.1
        port: {port}
        protocol: http
        tls:
          certificate: {{ file: {{ chain: server.pem, key: server-key.pem }} }}
          client_certificate: {{ trust: {{ file: ca.pem }}, allow: [front.example] }}
        routes: [ {{ match: {{ prefix: / }}, to: app }} ]
upstreams:
  app: {{ protocol: http1, endpoints: {{ static: ["{app}"] }} }}
"#,
            app = app.endpoint(),
        ),
    );
    let server = XdsServer::start(&dir, &catalog, 0);
    server.wait_ready();
    let edge = Envoy::start(&dir, "edge", server.xds_port, Mode::Delta);
    edge.wait_live();
    wait_for(
        "the DNS-SAN client to be served",
        Duration::from_secs(20),
        || curl(port, Some(&ca_pem), Some(&dns)).filter(|b| b == "app"),
    );
    assert_eq!(
        curl(port, Some(&ca_pem), Some(&uri)),
        None,
        "a client naming front.example only as a URI SAN and in its subject got in"
    );
    assert_eq!(curl(port, Some(&ca_pem), Some(&other)), None);
    wait_for(
        "Envoy to count both refusals",
        Duration::from_secs(10),
        || (stat_ending(&edge, "rbac.denied") >= 2).then_some(()),
    );
    assert_eq!(server.metric("xds_nacks_total{type=\"lds\"}"), 0.0);
    assert_eq!(
        curl(port, Some(&ca_pem), Some(&dns)).as_deref(),
        Some("app")
    );
}
