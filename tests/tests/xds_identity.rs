//! Identities AWS attests: a task proves its IAM role with a signed `sts:GetCallerIdentity`
//! (`xds-server identity`), the control plane checks it through STS (moto's), maps the role to
//! a proxy through the catalog, and signs a client certificate Envoy then uses for mutual TLS
//! to the control plane, renewed without a restart.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use tests::identity::{assume, env_with, identity, identity_cmd, plane};
use tests::openssl::x509_text;
use tests::process::ChildGuard;
use tests::xds_client::{tls_config, tls_connector};
use tests::{Backend, Envoy, Mode, Moto, TempDir, XdsServer, ca_init, free_port, http, wait_for};

/// The catalog: proxy `demo` (task role `demo-task-role`, by name; alias [`DEMO_ARN`]) listens
/// on `port` and routes to `backend`; proxy `web` (alias [`WEB_ARN`]) belongs to another role.
const DEMO_ARN: &str = "arn:aws:appmesh:us-east-1:123456789012:mesh/m/virtualNode/demo";
const WEB_ARN: &str = "arn:aws:appmesh:us-east-1:123456789012:mesh/m/virtualNode/web";

fn catalog(dir: &TempDir, port: u16, backend: &Backend) -> PathBuf {
    dir.write(
        "catalog.yaml",
        &format!(
            r#"
version: 1
proxies:
  demo:
    aliases: ["{DEMO_ARN}"]
    identity: {{ iam_roles: [demo-task-role] }}
    listeners:
      - {{ name: public, address: 127.0.0.1, port: {port}, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: blue }} ] }}
  web:
    aliases: ["{WEB_ARN}"]
    identity: {{ iam_roles: ["arn:aws:iam::123456789012:role/web-task-role"] }}
upstreams:
  blue: {{ protocol: http1, endpoints: {{ static: ["{}"] }} }}
"#,
            backend.endpoint()
        ),
    )
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Envoy as proxy `demo` on the control plane at `xds_port`, with the certificate `identity`
/// wrote into `out_dir`, serving traffic on `port`.
fn envoy_with_identity(
    dir: &TempDir,
    xds_port: u16,
    mode: Mode,
    out_dir: &Path,
    port: u16,
) -> Envoy {
    let envoy = Envoy::start_opts(
        dir,
        "demo",
        xds_port,
        mode,
        &["--identity-dir", &out_dir.display().to_string()],
        |_| {},
    );
    envoy.wait_live();
    traffic(port);
    envoy
}

fn traffic(port: u16) {
    http::wait_for_body(port, "blue");
}

/// What every test here starts with: moto, a CA made by `ca init`, the app backend and the
/// catalog whose `demo` proxy listens on `port`.
struct Setup {
    dir: TempDir,
    moto: Moto,
    ca: PathBuf,
    ca_file: PathBuf,
    /// Held for the test's length.
    _blue: Backend,
    port: u16,
    catalog: PathBuf,
}

fn setup(label: &str) -> Setup {
    let dir = TempDir::new(label);
    let moto = Moto::start(&dir, 0);
    let ca = dir.path().join("ca");
    assert!(ca_init(&ca).status.success());
    let ca_file = ca.join("certificate.pem");
    let blue = Backend::start("blue", 0).unwrap();
    let port = free_port();
    let catalog = catalog(&dir, port, &blue);
    Setup {
        dir,
        moto,
        ca,
        ca_file,
        _blue: blue,
        port,
        catalog,
    }
}

#[test]
fn a_task_role_gets_its_proxy_certificate_and_envoy_serves_over_mutual_tls() {
    let Setup {
        dir,
        moto,
        ca,
        ca_file,
        _blue,
        port,
        catalog,
    } = setup("identity-mtls");
    let server = plane(
        &dir,
        &moto,
        &catalog,
        &format!("file:{}", ca.display()),
        &[],
    );
    let creds = assume(&moto, "demo-task-role", "task-1");
    let env = env_with(&moto, &creds);

    let out_dir = dir.path().join("identity");
    let out = identity(&server, &ca_file, &out_dir, &env, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let cert = x509_text(&out_dir.join("certificate.pem"));
    assert!(
        cert.contains("URI:spiffe://mesh.local/proxy/demo"),
        "{cert}"
    );
    assert!(cert.contains("TLS Web Client Authentication"), "{cert}");
    // The subject names the proxy, not rcgen's placeholder.
    assert!(
        cert.contains("spiffe://mesh.local/proxy/demo") && !cert.contains("rcgen"),
        "{cert}"
    );
    assert_eq!(mode(&out_dir.join("private_key.pem")), 0o600);
    assert_eq!(mode(&out_dir.join("sds-certificate.json")), 0o600);
    assert_eq!(
        std::fs::read_to_string(out_dir.join("trust_bundle.pem")).unwrap(),
        std::fs::read_to_string(&ca_file).unwrap()
    );
    // Neither side logs the task's session token or a private key.
    for log in [text(&out), server.process.output()] {
        assert!(!log.contains(&creds.token), "a session token in a log");
        assert!(!log.contains(&creds.secret), "a secret key in a log");
        assert!(!log.contains("PRIVATE KEY"), "a private key in a log");
    }
    assert!(server.process.output().contains("identity issued"));
    assert_eq!(
        server.metric("xds_identity_requests_total{result=\"issued\"}"),
        1.0
    );

    for mode in [Mode::Sotw, Mode::Delta] {
        let envoy = envoy_with_identity(&dir, server.xds_port, mode, &out_dir, port);
        assert_eq!(
            envoy.stat("control_plane.connected_state"),
            Some(1),
            "{mode:?}"
        );
    }
    assert_eq!(
        server.metric("xds_identity_refusals_total{reason=\"no_certificate\"}"),
        0.0
    );

    // A gRPC client: without a certificate it is unauthenticated; with demo's certificate,
    // asking for web is denied and gets nothing; asking for demo it is served.
    let ca_pem = std::fs::read_to_string(&ca_file).unwrap();
    let chain = std::fs::read_to_string(out_dir.join("certificate.pem")).unwrap();
    let key = std::fs::read_to_string(out_dir.join("private_key.pem")).unwrap();
    let anonymous = tls_config(&ca_pem, None).unwrap();
    let as_demo = tls_config(&ca_pem, Some((&chain, &key))).unwrap();
    let ask = |config, proxy: &str| fetch_clusters(server.xds_port, config, proxy);
    let status = ask(anonymous, "demo").unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
    let status = ask(as_demo.clone(), "web").unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
    assert!(
        status.message().contains("not for proxy \"web\""),
        "{status}"
    );
    let clusters = ask(as_demo.clone(), "demo").unwrap();
    assert_eq!(clusters, ["blue"]);
    // Presenting the alias (an Envoy started the App Mesh way), it is served demo too.
    assert_eq!(ask(as_demo, DEMO_ARN).unwrap(), ["blue"]);

    // Asked for by its alias (the entrypoint's XDS_SERVER_PROXY=$APPMESH_RESOURCE_ARN), the
    // certificate names the proxy the alias selects; another proxy's alias is refused.
    let by_alias = dir.path().join("identity-by-alias");
    let out = identity(&server, &ca_file, &by_alias, &env, &["--proxy", DEMO_ARN]);
    assert!(out.status.success(), "{}", text(&out));
    let cert = x509_text(&by_alias.join("certificate.pem"));
    assert!(
        cert.contains("URI:spiffe://mesh.local/proxy/demo"),
        "{cert}"
    );
    let out = identity(&server, &ca_file, &by_alias, &env, &["--proxy", WEB_ARN]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("is not an identity of proxy \"web\""),
        "{}",
        text(&out)
    );
}

/// A CDS fetch over TLS with `config` as proxy `proxy`: the cluster names, or the status.
fn fetch_clusters(
    port: u16,
    config: std::sync::Arc<rustls::ClientConfig>,
    proxy: &str,
) -> Result<Vec<String>, tonic::Status> {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect_with_connector(tls_connector(config, port))
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let answer = ClusterDiscoveryServiceClient::new(channel)
            .fetch_clusters(DiscoveryRequest {
                node: tests::xds_client::node(proxy),
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok(answer
            .resources
            .iter()
            .map(|any| {
                <Cluster as prost::Message>::decode(any.value.as_slice())
                    .unwrap()
                    .name
            })
            .collect())
    })
}

#[test]
fn requests_that_prove_nothing_get_no_certificate() {
    let Setup {
        dir,
        moto,
        ca,
        ca_file,
        _blue,
        catalog,
        ..
    } = setup("identity-refused");
    let server = plane(
        &dir,
        &moto,
        &catalog,
        &format!("file:{}", ca.display()),
        &[],
    );
    let result = |r: &str| server.metric(&format!("xds_identity_requests_total{{result=\"{r}\"}}"));

    // A role that is no proxy's identity: refused at once, nothing written.
    let stranger = env_with(&moto, &assume(&moto, "batch-task-role", "task-2"));
    let out_dir = dir.path().join("stranger");
    let started = Instant::now();
    let out = identity(&server, &ca_file, &out_dir, &stranger, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("assumed-role/batch-task-role/task-2) is no proxy's identity"),
        "{}",
        text(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a refusal was retried"
    );
    assert!(
        !text(&out).contains("no identity certificate yet"),
        "{}",
        text(&out)
    );
    assert!(!out_dir.join("certificate.pem").exists());
    assert_eq!(result("unknown_role"), 1.0);

    // The demo role asking to be another proxy.
    let demo = assume(&moto, "demo-task-role", "task-3");
    let out = identity(
        &server,
        &ca_file,
        &out_dir,
        &env_with(&moto, &demo),
        &["--proxy", "web"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("is not an identity of proxy \"web\""),
        "{}",
        text(&out)
    );

    // An IAM user, not a task role.
    let user = identity(&server, &ca_file, &out_dir, &moto.env(), &[]);
    assert_eq!(user.status.code(), Some(1));
    assert!(
        text(&user).contains("is not an assumed IAM role"),
        "{}",
        text(&user)
    );

    // Another client (botocore and cryptography): fresh and for this server it is served; 6
    // minutes old, or signed for another control plane, it is not.
    let url = format!(
        "https://127.0.0.1:{}/identity/v1/certificate",
        server.xds_port
    );
    let python = |server_id: &str, age: &str| -> serde_json::Value {
        let ca_arg = ca_file.display().to_string();
        let out = moto.fixture(
            "iam_identity.py",
            &[
                "request",
                &url,
                &ca_arg,
                server_id,
                age,
                &demo.key,
                &demo.secret,
                &demo.token,
            ],
        );
        serde_json::from_str(out.trim()).expect("the fixture prints JSON")
    };
    let fresh = python("127.0.0.1", "0");
    assert_eq!(fresh["status"], 200, "{fresh}");
    assert_eq!(fresh["body"]["proxy"], "demo");
    assert_eq!(fresh["body"]["spiffe_id"], "spiffe://mesh.local/proxy/demo");
    let old = python("127.0.0.1", "360");
    assert_eq!(old["status"], 401, "{old}");
    assert!(
        old["body"]["error"]
            .as_str()
            .unwrap()
            .contains("at most 300s"),
        "{old}"
    );
    assert_eq!(result("stale"), 1.0);
    let elsewhere = python("xds.other.internal", "0");
    assert_eq!(elsewhere["status"], 401, "{elsewhere}");
    assert!(
        elsewhere["body"]["error"]
            .as_str()
            .unwrap()
            .contains("signed for control plane \"xds.other.internal\""),
        "{elsewhere}"
    );
    assert_eq!(result("wrong_server"), 1.0);
    assert_eq!(result("issued"), 1.0);
    // Refusals are logged, and their logs hold no credential either.
    let log = server.process.output();
    assert!(log.contains("identity request refused"), "{log}");
    assert!(!log.contains(&demo.token) && !log.contains(&demo.secret));
}

/// A control plane with TLS but no CA issues nothing: `identity` says so at once instead of
/// retrying.
#[test]
fn a_control_plane_without_identities_says_so() {
    let dir = TempDir::new("identity-none");
    let ca = xds_server::ca::Ca::generate("files").unwrap();
    let issued = tests::server_certificate(&ca, "127.0.0.1", Duration::from_secs(3600));
    let cert = dir.write("server.pem", &issued.certificate_pem);
    let key = dir.write("server-key.pem", &issued.private_key_pem);
    let ca_file = dir.write("ca.pem", ca.certificate_pem());
    let catalog = dir.write("catalog.yaml", "version: 1\n");
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let server = XdsServer::start_with(
        &dir,
        &catalog,
        0,
        &["--xds-tls-cert", &cert, "--xds-tls-key", &key],
    );
    server.wait_ready();
    let started = Instant::now();
    let env = [
        ("AWS_ACCESS_KEY_ID", "testing".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ];
    let out = identity(&server, &ca_file, &dir.path().join("id"), &env, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("issues no identities: serve has no --ca"),
        "{}",
        text(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Replicas share the CA through Secrets Manager: a certificate one issued is accepted by the
/// other, whose own server certificate the bundle of the first checks.
#[test]
fn replicas_reading_one_secrets_manager_ca_accept_each_others_certificates() {
    let Setup {
        dir,
        moto,
        ca,
        _blue,
        port,
        catalog,
        ..
    } = setup("identity-replicas");
    moto.fixture(
        "iam_identity.py",
        &["secret", "xds/ca", &ca.display().to_string()],
    );
    let a = plane(&dir, &moto, &catalog, "secretsmanager:xds/ca", &[]);
    let b = plane(&dir, &moto, &catalog, "secretsmanager:xds/ca", &[]);
    let env = env_with(&moto, &assume(&moto, "demo-task-role", "task-4"));
    let out_dir = dir.path().join("identity");
    let out = identity(&a, &ca.join("certificate.pem"), &out_dir, &env, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let _envoy = envoy_with_identity(&dir, b.xds_port, Mode::Sotw, &out_dir, port);
    let nodes = b.admin_json("/debug/nodes");
    assert_eq!(nodes.as_array().map(|n| n.len()), Some(1), "{nodes}");
    assert_eq!(
        a.metric("xds_identity_requests_total{result=\"issued\"}"),
        1.0
    );
}

/// The serial numbers of the certificates Envoy's xDS cluster presents (admin `/certs`).
fn envoy_cert_serials(envoy: &Envoy) -> Vec<String> {
    let certs = http::get(envoy.admin_port, "/certs", &[])
        .map(|r| r.body)
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&certs).unwrap_or_default();
    v["certificates"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["cert_chain"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["serial_number"].as_str().map(str::to_string))
        .collect()
}

/// With 40-second certificates, `identity --renew` beside Envoy replaces them at half life:
/// Envoy picks each up from its files without a restart, serves every request meanwhile, and
/// after the first certificate expired still connects to a restarted control plane.
#[test]
fn certificates_renew_at_half_life_while_envoy_serves() {
    let Setup {
        dir,
        moto,
        ca,
        ca_file,
        _blue,
        port,
        catalog,
    } = setup("identity-renew");
    let ca_flag = format!("file:{}", ca.display());
    let flags = ["--identity-ttl", "40s"];
    let server = plane(&dir, &moto, &catalog, &ca_flag, &flags);
    let env = env_with(&moto, &assume(&moto, "demo-task-role", "task-5"));
    let out_dir = dir.path().join("identity");
    let out = identity(&server, &ca_file, &out_dir, &env, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let mut renew_cmd = identity_cmd(&server, &ca_file, &out_dir, &env);
    renew_cmd.arg("--renew");
    let renewer = ChildGuard::spawn(renew_cmd, dir.path().join("identity-renew.log"));
    let mut envoy = envoy_with_identity(&dir, server.xds_port, Mode::Sotw, &out_dir, port);
    let pid = envoy.process.pid();
    let first = envoy_cert_serials(&envoy);
    assert_eq!(first.len(), 1, "{first:?}");

    // Requests for 50 s: two renewals, the first certificate expired.
    let started = Instant::now();
    let (mut ok, mut failed) = (0, 0);
    let mut seen = vec![first[0].clone()];
    while started.elapsed() < Duration::from_secs(50) {
        match http::get(port, "/", &[]) {
            Ok(r) if r.status == 200 && r.body.trim() == "blue" => ok += 1,
            _ => failed += 1,
        }
        if let Some(serial) = envoy_cert_serials(&envoy).pop()
            && !seen.contains(&serial)
        {
            seen.push(serial);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    assert!(seen.len() >= 3, "Envoy presented only {seen:?}");
    assert_eq!(envoy.process.pid(), pid);
    assert!(envoy.process.is_running());
    let renewals = renewer.output();
    assert!(
        renewals.matches("identity certificate written").count() >= 2,
        "{renewals}"
    );

    // A new handshake with what Envoy holds now: the first certificate has expired, so only a
    // renewed one gets through a restarted control plane's --require-identity.
    let xds_port = server.xds_port.to_string();
    drop(server);
    let again = XdsServer::start_env(
        &dir,
        catalog.as_os_str(),
        xds_port.parse().unwrap(),
        &[
            "--ca",
            &ca_flag,
            "--xds-tls",
            "--xds-tls-name",
            "127.0.0.1",
            "--require-identity",
            "--identity-ttl",
            "40s",
        ],
        &moto.env(),
    );
    wait_for(
        "Envoy to reconnect with its renewed certificate",
        Duration::from_secs(30),
        || (again.admin_json("/debug/nodes").as_array().map(|n| n.len()) == Some(1)).then_some(()),
    );
    assert_eq!(
        again.metric("xds_identity_refusals_total{reason=\"no_certificate\"}"),
        0.0
    );
    traffic(port);
}
