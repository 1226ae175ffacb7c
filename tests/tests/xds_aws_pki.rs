//! AWS's certificate services as the mesh's PKI, against moto (`tests/fixtures/moto_pca.py`):
//! AWS Private CA signs the control plane's certificates (`serve --ca acm-pca:ARN`: the xDS
//! server's, the proxies' xDS client certificates and their mesh identities), an ACM private
//! certificate is a listener's certificate, and a private CA's certificate is what client
//! certificates must chain to.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tests::identity::{assume, env_with, identity, plane};
use tests::openssl::{curl, x509_text};
use tests::{Backend, Envoy, Mode, Moto, TempDir, free_port, http, wait_for, workspace_bin};

/// An ACTIVE root CA in moto's AWS Private CA, and its certificate written to `dir`.
fn private_ca(moto: &Moto, dir: &TempDir, name: &str) -> (String, PathBuf) {
    let arn = moto
        .fixture("moto_pca.py", &["create-ca", name])
        .trim()
        .to_string();
    let pem = moto.fixture("moto_pca.py", &["ca-cert", &arn]);
    (arn, dir.write(&format!("{name}.pem"), &pem))
}

/// The certificates of an Envoy (admin `/certs`), as text.
fn envoy_certs(envoy: &Envoy) -> String {
    http::get(envoy.admin_port, "/certs", &[])
        .map(|r| r.body)
        .unwrap_or_default()
}

/// With `--ca acm-pca:ARN` the control plane holds no CA key: AWS Private CA signs the xDS
/// server's certificate, each proxy's xDS client certificate (its attested identity) and each
/// proxy's mesh identity, and two Envoys talk over mutual TLS with them.
#[test]
fn aws_private_ca_signs_every_certificate_of_the_mesh() {
    let dir = TempDir::new("pca-mesh");
    let moto = Moto::start_pca(&dir, 0);
    let (ca_arn, ca_file) = private_ca(&moto, &dir, "Mesh PCA");
    let app = Backend::start("app", 0).unwrap();
    let (callee_port, caller_port) = (free_port(), free_port());
    let catalog = dir.write(
        "catalog.yaml",
        &format!(
            r#"
version: 1
mesh: {{ trust_domain: test.local }}
proxies:
  callee:
    identity: {{ iam_roles: [callee-role] }}
    listeners:
      - name: inbound
        address: 127.0.0.1
        port: {callee_port}
        protocol: http
        tls: {{ certificate: mesh, client_certificate: {{ trust: mesh, allow: [caller] }} }}
        routes: [ {{ match: {{ prefix: / }}, to: app }} ]
  caller:
    identity: {{ iam_roles: [caller-role] }}
    listeners:
      - {{ name: out, address: 127.0.0.1, port: {caller_port}, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: callee }} ] }}
upstreams:
  app: {{ protocol: http1, endpoints: {{ static: ["{app}"] }} }}
  callee: {{ protocol: http1, endpoints: {{ static: ["127.0.0.1:{callee_port}"] }}, tls: {{ mesh: callee }} }}
"#,
            app = app.endpoint(),
        ),
    );
    let server = plane(
        &dir,
        &moto,
        &catalog,
        &format!("acm-pca:{ca_arn}"),
        &["--trust-domain", "test.local"],
    );

    let mut envoys = Vec::new();
    for (proxy, mode) in [("callee", Mode::Sotw), ("caller", Mode::Delta)] {
        let env = env_with(&moto, &assume(&moto, &format!("{proxy}-role"), proxy));
        let out_dir = dir.path().join(format!("{proxy}-identity"));
        let out = identity(&server, &ca_file, &out_dir, &env, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The proxy's xDS client certificate: from the private CA, named by the control plane.
        let cert = x509_text(&out_dir.join("certificate.pem"));
        assert!(cert.contains("Issuer: CN = Mesh PCA"), "{cert}");
        assert!(
            cert.contains(&format!("URI:spiffe://test.local/proxy/{proxy}")),
            "{cert}"
        );
        assert!(cert.contains("TLS Web Client Authentication"), "{cert}");
        let envoy = Envoy::start_opts(
            &dir,
            proxy,
            server.xds_port,
            mode,
            &["--identity-dir", &out_dir.display().to_string()],
            |_| {},
        );
        envoy.wait_live();
        envoys.push(envoy);
    }
    // The caller reaches the callee over mutual TLS: each checked the other's mesh identity
    // against the private CA's certificate, the only CA there is.
    http::wait_for_body(caller_port, "app");
    let certs = envoy_certs(&envoys[0]);
    assert!(
        certs.contains("spiffe://test.local/proxy/callee"),
        "{certs}"
    );
    // A plaintext client is refused by the callee.
    assert!(!http::get(callee_port, "/", &[]).is_ok_and(|r| r.status == 200));
    let debug = http::get(server.debug_port, "/debug/config?proxy=callee", &[]).unwrap();
    assert!(
        debug.body.contains("mesh/identity/callee"),
        "{}",
        debug.body
    );
    for text in [&debug.body, &server.process.output()] {
        assert!(!text.contains("PRIVATE KEY"), "a private key is shown");
    }
    assert_eq!(
        server.metric("xds_identity_requests_total{result=\"issued\"}"),
        2.0
    );
}

/// A listener presents an ACM private certificate (exported, its key decrypted by the control
/// plane) and takes only clients whose certificates chain to a private CA it names; another
/// takes the CA bundle from Secrets Manager.
#[test]
fn an_acm_certificate_is_served_and_clients_are_checked_against_a_private_ca() {
    let dir = TempDir::new("acm-listener");
    let moto = Moto::start_pca(&dir, 0);
    let (ca_arn, ca_file) = private_ca(&moto, &dir, "Edge PCA");
    let (other_arn, other_file) = private_ca(&moto, &dir, "Other PCA");
    let request = |ca: &str, domain: &str| {
        moto.fixture("moto_pca.py", &["request-cert", ca, domain])
            .trim()
            .to_string()
    };
    let server_cert = request(&ca_arn, "backend.test");
    let export = |arn: &str, label: &str| {
        let at = dir.path().join(label);
        moto.fixture(
            "moto_pca.py",
            &["export-cert", arn, &at.display().to_string()],
        );
        at
    };
    let good_client = export(&request(&ca_arn, "client.test"), "good-client");
    let other_client = export(&request(&other_arn, "client.test"), "other-client");
    let app = Backend::start("app", 0).unwrap();
    let (port, port_sm, port_later) = (free_port(), free_port(), free_port());
    moto.fixture(
        "moto_pca.py",
        &[
            "trust-secret",
            "tls/edge-ca",
            &ca_file.display().to_string(),
        ],
    );
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
          certificate: {{ acm: {{ arn: "{server_cert}" }} }}
          client_certificate: {{ trust: {{ acm_pca: ["{ca_arn}"] }} }}
        routes: [ {{ match: {{ prefix: / }}, to: app }} ]
      - name: public-sm
        address: 127.0.0.1
        port: {port_sm}
        protocol: http
        tls:
          certificate: {{ acm: {{ arn: "{server_cert}" }} }}
          client_certificate: {{ trust: {{ secrets_manager: {{ secret: tls/edge-ca }} }} }}
        routes: [ {{ match: {{ prefix: / }}, to: app }} ]
      - name: later
        address: 127.0.0.1
        port: {port_later}
        protocol: http
        tls: {{ certificate: {{ secrets_manager: {{ secret: tls/later }} }} }}
        routes: [ {{ match: {{ prefix: / }}, to: app }} ]
upstreams:
  app: {{ protocol: http1, endpoints: {{ static: ["{app}"] }} }}
"#,
            app = app.endpoint(),
        ),
    );
    let server = tests::XdsServer::start_env(&dir, catalog.as_os_str(), 0, &[], &moto.env());
    server.wait_ready();
    let _edge = Envoy::start(&dir, "edge", server.xds_port, Mode::Sotw);
    wait_for(
        "the ACM certificate to be served to a client of the private CA",
        Duration::from_secs(30),
        || curl(port, Some(&ca_file), Some(&good_client)).filter(|b| b == "app"),
    );
    // The server's certificate is the private CA's: a client that trusts another CA refuses it.
    assert_eq!(curl(port, Some(&other_file), Some(&good_client)), None);
    // Clients without a certificate, or with one from another CA, are refused.
    assert_eq!(curl(port, Some(&ca_file), None), None);
    assert_eq!(curl(port, Some(&ca_file), Some(&other_client)), None);
    // The same bundle, from Secrets Manager.
    wait_for(
        "the listener whose client trust is in Secrets Manager",
        Duration::from_secs(30),
        || curl(port_sm, Some(&ca_file), Some(&good_client)).filter(|b| b == "app"),
    );
    assert_eq!(curl(port_sm, Some(&ca_file), Some(&other_client)), None);
    // A secret that is not there yet is asked for again soon (with backoff), not only every
    // --secret-interval (5 minutes here): once made, it is served.
    assert!(
        server.admin_json("/readyz")["certificates_missing"]
            .to_string()
            .contains("secretsmanager/tls/later")
    );
    let server_files = export(&server_cert, "server-files");
    moto.fixture(
        "iam_identity.py",
        &["secret", "tls/later", &server_files.display().to_string()],
    );
    wait_for(
        "the secret made after the start to be served",
        Duration::from_secs(60),
        || curl(port_later, Some(&ca_file), None).filter(|b| b == "app"),
    );
    // What an operator sees names the certificate, never its key.
    let debug = http::get(server.debug_port, "/debug/config?proxy=edge", &[]).unwrap();
    assert!(
        debug.body.contains(&format!("acm/{server_cert}")),
        "{}",
        debug.body
    );
    let render = Command::new(workspace_bin("xds-server"))
        .args(["render", "--proxy", "edge", "--catalog"])
        .arg(&catalog)
        .output()
        .unwrap();
    assert!(render.status.success());
    for text in [
        debug.body.clone(),
        String::from_utf8_lossy(&render.stdout).into_owned(),
        server.process.output(),
    ] {
        assert!(!text.contains("PRIVATE KEY"), "a private key is shown");
    }
    assert!(
        server.metric(&format!(
            "xds_certificate_expiry_seconds{{secret=\"acm/{server_cert}\"}}"
        )) > 0.0
    );
}
