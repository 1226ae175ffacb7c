//! The xDS port over TLS: the control plane's own CA (`xds-server ca init`), a server
//! certificate it makes for the names proxies dial, Envoy checking that certificate (bootstrap
//! `--xds-ca`), and certificate files reloaded without a restart.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tests::{Backend, Envoy, Mode, TempDir, XdsServer, ca_init, free_port, http, wait_for};

/// `openssl s_client` against `port`, trusting `ca_file`: whether the handshake verified, and
/// what it printed.
fn s_client(port: u16, ca_file: &Path) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-verify_return_error", "-verify_ip", "127.0.0.1", "-CAfile"])
        .arg(ca_file)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.success() && text.contains("Verify return code: 0 (ok)"),
        text,
    )
}

#[test]
fn ca_init_writes_a_ca_once_with_a_private_key_only_its_owner_reads() {
    let dir = TempDir::new("ca-init");
    let ca = dir.path().join("ca");
    let out = ca_init(&ca);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(ca.join("private_key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let cert = std::fs::read_to_string(ca.join("certificate.pem")).unwrap();
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(ca.join("certificate.pem"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("CA:TRUE"), "{text}");
    assert!(
        text.contains("prime256v1") || text.contains("P-256"),
        "{text}"
    );
    // A second init never overwrites the first.
    let again = ca_init(&ca);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    assert_eq!(
        std::fs::read_to_string(ca.join("certificate.pem")).unwrap(),
        cert
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("PRIVATE KEY"));
}

/// A control plane with `--xds-tls` (and `extra` flags) serving proxy `demo` a listener on
/// `port` to `backend`; Envoy connects with `--xds-ca`.
fn tls_plane(dir: &TempDir, ca: &Path, port: u16, backend: &Backend, extra: &[&str]) -> XdsServer {
    let catalog = dir.write(
        "catalog.yaml",
        &format!(
            r#"
version: 1
proxies:
  demo:
    listeners:
      - {{ name: public, address: 127.0.0.1, port: {port}, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: blue }} ] }}
upstreams:
  blue: {{ protocol: http1, endpoints: {{ static: ["{}"] }} }}
"#,
            backend.endpoint()
        ),
    );
    let ca_flag = format!("file:{}", ca.display());
    let mut flags = vec!["--ca", &ca_flag, "--xds-tls", "--xds-tls-name", "127.0.0.1"];
    flags.extend_from_slice(extra);
    XdsServer::start_with(dir, &catalog, 0, &flags)
}

#[test]
fn envoy_reaches_the_control_plane_over_tls_that_it_verifies() {
    let dir = TempDir::new("xds-tls");
    let ca = dir.path().join("ca");
    assert!(ca_init(&ca).status.success());
    let blue = Backend::start("blue", 0).unwrap();
    let port = free_port();
    let server = tls_plane(&dir, &ca, port, &blue, &[]);
    server.wait_ready();
    let bundle = ca.join("certificate.pem");
    let (ok, text) = s_client(server.xds_port, &bundle);
    assert!(ok, "{text}");
    for mode in [Mode::Sotw, Mode::Delta] {
        let envoy = Envoy::start_opts(
            &dir,
            "demo",
            server.xds_port,
            mode,
            &["--xds-ca", &bundle.display().to_string()],
            |_| {},
        );
        envoy.wait_live();
        wait_for("traffic through Envoy", Duration::from_secs(15), || {
            http::get(port, "/", &[])
                .ok()
                .filter(|r| r.body.trim() == "blue")
        });
        assert_eq!(envoy.stat("control_plane.connected_state"), Some(1));
        assert!(
            envoy.stat("cluster.xds_cluster.ssl.handshake").unwrap_or(0) >= 1,
            "{mode:?}"
        );
    }
    // A plaintext client is not served.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = format!("http://127.0.0.1:{}", server.xds_port);
    // Bounded: tonic's client was once seen waiting for good on the refused connection (no
    // answer in that time is not being served either).
    let plain = rt.block_on(async {
        let fetch = async {
            let mut c = envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient::connect(url).await?;
            c.fetch_clusters(envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest {
                node: tests::xds_client::node("demo"),
                ..Default::default()
            })
            .await
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error>)?;
            Ok::<_, Box<dyn std::error::Error>>(())
        };
        match tokio::time::timeout(Duration::from_secs(30), fetch).await {
            Ok(served) => served,
            Err(_) => Err("no answer".into()),
        }
    });
    assert!(plain.is_err(), "a plaintext client was served");
}

#[test]
fn envoy_refuses_a_control_plane_its_ca_did_not_sign() {
    let dir = TempDir::new("xds-tls-wrong-ca");
    let (ca, other) = (dir.path().join("ca"), dir.path().join("other"));
    assert!(ca_init(&ca).status.success());
    assert!(ca_init(&other).status.success());
    let blue = Backend::start("blue", 0).unwrap();
    let port = free_port();
    let server = tls_plane(&dir, &ca, port, &blue, &[]);
    server.wait_ready();
    let other_bundle = other.join("certificate.pem");
    let (ok, _) = s_client(server.xds_port, &other_bundle);
    assert!(!ok, "openssl accepted a certificate another CA signed");
    let envoy = Envoy::start_opts(
        &dir,
        "demo",
        server.xds_port,
        Mode::Sotw,
        &["--xds-ca", &other_bundle.display().to_string()],
        |_| {},
    );
    wait_for(
        "Envoy to refuse the server certificate",
        Duration::from_secs(20),
        || {
            (envoy
                .stat("cluster.xds_cluster.ssl.fail_verify_error")
                .unwrap_or(0)
                >= 1)
                .then_some(())
        },
    );
    assert_eq!(envoy.stat("control_plane.connected_state"), Some(0));
    assert_eq!(
        envoy.stat("listener_manager.total_listeners_active"),
        Some(0)
    );
    // And a name the certificate does not carry is refused too (the bootstrap checks the SAN).
    let envoy = Envoy::start_opts(
        &dir,
        "demo",
        server.xds_port,
        Mode::Sotw,
        &[
            "--xds-ca",
            &ca.join("certificate.pem").display().to_string(),
        ],
        |b| {
            let tls = &mut b["static_resources"]["clusters"][0]["transport_socket"]["typed_config"];
            tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"][0]["matcher"]
                ["exact"] = serde_json::json!("10.9.9.9");
        },
    );
    wait_for(
        "Envoy to refuse a certificate for another name",
        Duration::from_secs(20),
        || {
            (envoy
                .stat("cluster.xds_cluster.ssl.fail_verify_san")
                .unwrap_or(0)
                >= 1)
                .then_some(())
        },
    );
    assert_eq!(envoy.stat("control_plane.connected_state"), Some(0));
}

#[test]
fn certificate_files_are_reloaded_without_a_restart() {
    let dir = TempDir::new("xds-tls-files");
    let first = xds_server::ca::Ca::generate("first").unwrap();
    let second = xds_server::ca::Ca::generate("second").unwrap();
    let leaf = |ca: &xds_server::ca::Ca| {
        tests::server_certificate(ca, "127.0.0.1", Duration::from_secs(3600))
    };
    let write_pair = |issued: &xds_server::ca::Issued| {
        dir.write("server.pem", &issued.certificate_pem);
        dir.write("server-key.pem", &issued.private_key_pem);
    };
    write_pair(&leaf(&first));
    let first_ca = dir.write("first-ca.pem", first.certificate_pem());
    let second_ca = dir.write("second-ca.pem", second.certificate_pem());
    let catalog = dir.write("catalog.yaml", "version: 1\n");
    let cert = dir.path().join("server.pem").display().to_string();
    let key = dir.path().join("server-key.pem").display().to_string();
    let server = XdsServer::start_with(
        &dir,
        &catalog,
        0,
        &["--xds-tls-cert", &cert, "--xds-tls-key", &key],
    );
    server.wait_ready();
    assert!(s_client(server.xds_port, &first_ca).0);
    assert!(!s_client(server.xds_port, &second_ca).0);
    let pid = server.process.pid();
    write_pair(&leaf(&second));
    wait_for(
        "new handshakes to present the new certificate",
        Duration::from_secs(20),
        || s_client(server.xds_port, &second_ca).0.then_some(()),
    );
    assert!(!s_client(server.xds_port, &first_ca).0);
    assert_eq!(server.process.pid(), pid);
    // A broken replacement keeps the certificate served so far.
    dir.write("server-key.pem", "not a key");
    wait_for(
        "the server to refuse the broken key",
        Duration::from_secs(20),
        || {
            server
                .process
                .output()
                .contains("cannot use the changed xDS server certificate")
                .then_some(())
        },
    );
    assert!(s_client(server.xds_port, &second_ca).0);
}

/// Writes a client certificate of the test CA for `uri` into `dir`: (chain, key) paths.
fn client_cert(dir: &TempDir, ca_dir: &Path, name: &str, uri: &str) -> (String, String) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ca = rt
        .block_on(xds_server::ca::Ca::load(&xds_server::ca::CaSource::File(
            ca_dir.to_path_buf(),
        )))
        .unwrap();
    let issued = ca
        .issue(&xds_server::ca::Leaf {
            uris: vec![uri.into()],
            client: true,
            ttl: Duration::from_secs(3600),
            ..Default::default()
        })
        .unwrap();
    let chain = dir.write(&format!("{name}.pem"), &issued.certificate_pem);
    let key = dir.write(&format!("{name}-key.pem"), &issued.private_key_pem);
    (chain.display().to_string(), key.display().to_string())
}

/// Envoy over TLS to the control plane, presenting `cert` (chain, key) when given.
fn envoy_with_cert(
    dir: &TempDir,
    server: &XdsServer,
    bundle: &Path,
    cert: Option<&(String, String)>,
) -> Envoy {
    Envoy::start_opts(
        dir,
        "demo",
        server.xds_port,
        Mode::Sotw,
        &["--xds-ca", &bundle.display().to_string()],
        |b| {
            if let Some((chain, key)) = cert {
                let tls =
                    &mut b["static_resources"]["clusters"][0]["transport_socket"]["typed_config"];
                tls["common_tls_context"]["tls_certificates"] = serde_json::json!([{
                    "certificate_chain": { "filename": chain },
                    "private_key": { "filename": key },
                }]);
            }
        },
    )
}

/// With `--require-identity`, a stream reads only the proxy its client certificate names:
/// without a certificate it is refused as unauthenticated, with another proxy's as denied.
#[test]
fn require_identity_serves_a_proxy_only_to_its_own_certificate() {
    let dir = TempDir::new("xds-identity");
    let ca = dir.path().join("ca");
    assert!(ca_init(&ca).status.success());
    let blue = Backend::start("blue", 0).unwrap();
    let port = free_port();
    let server = tls_plane(
        &dir,
        &ca,
        port,
        &blue,
        &["--require-identity", "--trust-domain", "test.local"],
    );
    server.wait_ready();
    let bundle = ca.join("certificate.pem");
    let refused = |reason: &str| {
        server.metric(&format!(
            "xds_identity_refusals_total{{reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(refused("no_certificate"), 0.0);

    // No certificate: refused, nothing served.
    let anonymous = envoy_with_cert(&dir, &server, &bundle, None);
    wait_for(
        "the anonymous stream to be refused",
        Duration::from_secs(20),
        || (refused("no_certificate") >= 1.0).then_some(()),
    );
    assert_eq!(
        anonymous.stat("listener_manager.total_listeners_active"),
        Some(0)
    );
    drop(anonymous);

    // Another proxy's certificate: denied, nothing served.
    let web = client_cert(&dir, &ca, "web", "spiffe://test.local/proxy/web");
    let impostor = envoy_with_cert(&dir, &server, &bundle, Some(&web));
    wait_for("the impostor to be denied", Duration::from_secs(20), || {
        (refused("wrong_proxy") >= 1.0).then_some(())
    });
    assert_eq!(
        impostor.stat("listener_manager.total_listeners_active"),
        Some(0)
    );
    assert!(server.process.output().contains("xDS request refused"));
    drop(impostor);

    // The right certificate in another trust domain names nothing.
    let elsewhere = client_cert(&dir, &ca, "elsewhere", "spiffe://other.local/proxy/demo");
    let before = refused("no_certificate");
    let stranger = envoy_with_cert(&dir, &server, &bundle, Some(&elsewhere));
    wait_for(
        "the other trust domain to be refused",
        Duration::from_secs(20),
        || (refused("no_certificate") > before).then_some(()),
    );
    drop(stranger);

    // Its own certificate: served.
    let demo = client_cert(&dir, &ca, "demo", "spiffe://test.local/proxy/demo");
    let envoy = envoy_with_cert(&dir, &server, &bundle, Some(&demo));
    envoy.wait_live();
    wait_for(
        "traffic through the identified Envoy",
        Duration::from_secs(15),
        || {
            http::get(port, "/", &[])
                .ok()
                .filter(|r| r.body.trim() == "blue")
        },
    );
    let nodes = server.admin_json("/debug/nodes");
    assert_eq!(nodes.as_array().map(|n| n.len()), Some(1), "{nodes}");

    // CSDS on the same port asks the same: no certificate, refused; a certificate hears only
    // of its own proxy's Envoys.
    let ca_pem = std::fs::read_to_string(&bundle).unwrap();
    let csds = |cert: Option<&(String, String)>| {
        let read = |p: &str| std::fs::read_to_string(p).unwrap();
        let pems = cert.map(|(c, k)| (read(c), read(k)));
        let config = tests::xds_client::tls_config(
            &ca_pem,
            pems.as_ref().map(|(c, k)| (c.as_str(), k.as_str())),
        )
        .unwrap();
        csds_node_ids(server.xds_port, config)
    };
    let anonymous = csds(None).unwrap_err();
    assert_eq!(
        anonymous.code(),
        tonic::Code::Unauthenticated,
        "{anonymous}"
    );
    assert_eq!(csds(Some(&web)).unwrap(), Vec::<String>::new());
    assert_eq!(
        csds(Some(&demo)).unwrap(),
        [format!("demo-{}", envoy.admin_port)]
    );
}

/// The node ids a CSDS fetch over TLS with `config` answers about.
fn csds_node_ids(
    port: u16,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> Result<Vec<String>, tonic::Status> {
    use envoy_types::pb::envoy::service::status::v3::ClientStatusRequest;
    use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_client::ClientStatusDiscoveryServiceClient;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect_with_connector(tests::xds_client::tls_connector(config, port))
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let answer = ClientStatusDiscoveryServiceClient::new(channel)
            .fetch_client_status(ClientStatusRequest::default())
            .await?
            .into_inner();
        Ok(answer
            .config
            .into_iter()
            .filter_map(|c| c.node.map(|n| n.id))
            .collect())
    })
}
