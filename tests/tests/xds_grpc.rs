//! Proxyless gRPC: a grpcio client dialling `xds:///NAME`, configured only by the bootstrap
//! `xds-server bootstrap --grpc` prints, takes its routes, clusters and endpoints from the
//! proxy's `grpc_services` and calls the backends directly, while an Envoy of the same proxy,
//! on the same server at the same time, still gets and serves its own listeners.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tests::cli::assert_envoy_accepts;
use tests::grpc::{self, Batch, CallOptions, CallTls, PeerServer, XdsGrpcClient};
use tests::identity::{assume, env_with, identity, plane};
use tests::{
    Backend, Envoy, Mode, Moto, TempDir, XdsServer, ca_init, free_port, http, wait_for,
    workspace_bin,
};
use xds_server::ca::{Ca, Leaf};

const PROXY: &str = "wallet-backend";
const TARGET: &str = "connector.prism-test.atala.local:50051";

/// A batch is generous: the time for `n` calls once the client is configured (each waits for
/// readiness up to 10 s).
const BATCH: Duration = Duration::from_secs(60);
/// A second target of the mesh TLS test, whose endpoint presents another proxy's identity.
const IMPOSTOR: &str = "impostor.prism-test.atala.local:50051";
/// The same endpoint as [`IMPOSTOR`], called as the proxy whose identity it has.
const OTHER: &str = "other.prism-test.atala.local:50051";

/// Writes the gRPC bootstrap `xds-server bootstrap --grpc` prints for node `node_id`.
fn grpc_bootstrap(dir: &TempDir, xds_port: u16, node_id: &str) -> PathBuf {
    grpc_bootstrap_with(dir, xds_port, node_id, &[])
}

/// [`grpc_bootstrap`] with `extra` flags (e.g. `--identity-dir DIR`).
fn grpc_bootstrap_with(dir: &TempDir, xds_port: u16, node_id: &str, extra: &[&str]) -> PathBuf {
    let out = Command::new(workspace_bin("xds-server"))
        .args([
            "bootstrap",
            "--grpc",
            "--proxy",
            PROXY,
            "--node-id",
            node_id,
        ])
        .args(["--xds", &format!("127.0.0.1:{xds_port}")])
        .args(extra)
        .output()
        .expect("xds-server bootstrap runs");
    assert!(
        out.status.success(),
        "bootstrap --grpc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("the gRPC bootstrap is JSON");
    assert_eq!(doc["node"]["cluster"], PROXY);
    let path = dir.path().join(format!("grpc-bootstrap-{node_id}.json"));
    std::fs::write(&path, doc.to_string()).expect("the bootstrap can be written");
    path
}

/// Writes `endpoints` as the JSON endpoint file at `path` (atomically: the server may read it
/// at any moment).
fn write_endpoints(path: &Path, endpoints: &[String]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_string(endpoints).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Calls in batches of `n` until one is answered by exactly the servers in `names`, none
/// failing; returns that batch.
fn wait_answered_by(client: &mut XdsGrpcClient, what: &str, n: u32, names: &[&str]) -> Batch {
    let mut last = Batch::default();
    wait_for(what, Duration::from_secs(90), || {
        last = client.calls(n, BATCH);
        let who: Vec<&str> = last.answers.keys().map(String::as_str).collect();
        (who == names && last.errors.is_empty()).then(|| last.clone())
    })
}

/// Two grpcio backends behind an 80/20 split (a third parked at weight 0) reached through
/// `xds:///TARGET`, then one of them replaced by a fourth through an endpoint change, the client
/// never restarted; an Envoy of the same proxy serves its HTTP listener all along.
#[test]
fn a_grpcio_client_follows_a_split_and_an_endpoint_change_beside_an_envoy() {
    let dir = TempDir::new("xds-grpc");
    let one = PeerServer::grpc_named(&dir, "one");
    let two = PeerServer::grpc_named(&dir, "two");
    let three = PeerServer::grpc_named(&dir, "three");
    // A canary at rest (weight 0) gets no calls.
    let parked = PeerServer::grpc_named(&dir, "parked");
    let web = Backend::start("web", 0).unwrap();
    let one_file = dir.path().join("one.json");
    write_endpoints(&one_file, &[one.endpoint()]);
    let web_port = free_port();
    let catalog = dir.write(
        "catalog.yaml",
        &format!(
            r#"
version: 1
proxies:
  {PROXY}:
    listeners:
      - {{ name: web, port: {web_port}, address: 127.0.0.1, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: web }} ] }}
    grpc_services:
      - name: {TARGET}
        routes:
          - match: {{ prefix: / }}
            split: {{ connector: 80, connector-v2: 20, parked: 0 }}
upstreams:
  web: {{ protocol: http1, endpoints: {{ static: ["{web}"] }} }}
  connector: {{ protocol: grpc, endpoints: {{ file: one.json }} }}
  connector-v2: {{ protocol: grpc, endpoints: {{ static: ["{two}"] }} }}
  parked: {{ protocol: grpc, endpoints: {{ static: ["{parked}"] }} }}
"#,
            web = web.endpoint(),
            parked = parked.endpoint(),
            two = two.endpoint(),
        ),
    );
    // Envoy's own check of the proxy's Envoy resources passes (the API listener is not Envoy's).
    assert_envoy_accepts(&catalog);
    let server = XdsServer::start(&dir, &catalog, 0);
    server.wait_ready();
    let envoy = Envoy::start(&dir, PROXY, server.xds_port, Mode::Sotw);
    let bootstrap = grpc_bootstrap(&dir, server.xds_port, "grpcio-1");
    let mut client = XdsGrpcClient::start(&dir, &format!("xds:///{TARGET}"), &bootstrap);

    // One call first: if the client refuses a resource, its status details say which.
    let warm = client.calls(1, BATCH);
    assert!(
        warm.errors.is_empty(),
        "a call through xds:/// failed: {warm:?}\n{}",
        client.process.output()
    );

    // The split: both answer, `two` about a fifth of 400 calls (binomial sd 8; bounds at 5 sd,
    // which an even split, or weights ignored, falls outside).
    let first = client.calls(400, BATCH);
    assert!(
        first.errors.is_empty(),
        "calls through xds:/// failed: {first:?}\n{}",
        client.process.output()
    );
    let (a, b) = (first.answers.get("one"), first.answers.get("two"));
    let total: u64 = first.answers.values().sum();
    assert_eq!(total, 400, "{first:?}");
    assert!(!first.answers.contains_key("parked"), "{first:?}");
    for (name, n, bounds) in [("one", a, 280..=360), ("two", b, 40..=120)] {
        let n = n.copied().unwrap_or_default();
        assert!(
            bounds.contains(&n),
            "{name} answered {n} of 400 calls: not an 80/20 split ({first:?})"
        );
    }
    assert_no_nacks(&server);

    // The Envoy on the same server still gets its listener, and serves it.
    envoy.wait_live();
    wait_for("Envoy to route to web", Duration::from_secs(30), || {
        http::get(web_port, "/", &[])
            .ok()
            .filter(|r| r.status == 200 && r.body.trim() == "web")
    });
    assert_eq!(
        envoy.stat("listener_manager.lds.update_rejected"),
        Some(0),
        "Envoy refused the listeners of a snapshot that also serves gRPC clients:\n{}",
        envoy.process.output()
    );

    // API listeners go only to streams that name them: Envoy's wildcard LDS has none, so it
    // neither runs nor warns about them.
    let dump = http::get(envoy.admin_port, "/config_dump", &[])
        .unwrap()
        .body;
    assert!(
        !dump.contains("api_listener") && !dump.contains(TARGET),
        "Envoy was sent the gRPC service's API listener:\n{dump}"
    );
    // Nor the clusters only gRPC clients call: it neither warms nor checks them.
    for cluster in ["connector", "connector-v2", "parked"] {
        assert_eq!(
            envoy.stat(&format!("cluster.{cluster}.membership_total")),
            None,
            "Envoy was sent cluster {cluster}, which only gRPC clients call"
        );
    }
    assert!(envoy.stat("cluster.web.membership_total").is_some());
    assert!(
        !envoy.process.output().contains("ApiListener"),
        "Envoy warned about an API listener:\n{}",
        envoy.process.output()
    );

    // An endpoint change reaches the running client: `three` replaces `one`.
    let pid = client.process.pid();
    write_endpoints(&one_file, &[three.endpoint()]);
    let after = wait_answered_by(
        &mut client,
        "the client to call three instead of one",
        100,
        &["three", "two"],
    );
    assert!(!after.answers.contains_key("one"), "{after:?}");
    assert_eq!(client.process.pid(), pid);
    assert!(client.process.is_running(), "the client was restarted");
    drop(one);
}

/// No client of `server` (the gRPC clients, an Envoy) refused any of its responses, and
/// responses of every type were acknowledged.
fn assert_no_nacks(server: &XdsServer) {
    for t in ["lds", "rds", "cds", "eds"] {
        assert!(
            server.metric(&format!("xds_acks_total{{type=\"{t}\"}}")) >= 1.0,
            "no {t} response was acknowledged"
        );
        assert_eq!(
            server.metric(&format!("xds_nacks_total{{type=\"{t}\"}}")),
            0.0,
            "a client refused a {t} response"
        );
    }
}

/// A route's retry policy (gRFC A44) is the client's own: with `retries: { on: [unavailable] }`
/// every call succeeds although one of the two endpoints fails every call it gets with
/// UNAVAILABLE, and that endpoint did get calls (so retries, not luck, made them succeed).
/// Without the policy the same endpoints fail calls.
#[test]
fn a_route_retry_policy_is_honoured_against_a_failing_backend() {
    let dir = TempDir::new("xds-grpc-retry");
    let good = PeerServer::grpc_named(&dir, "good");
    let bad = PeerServer::grpc_failing(&dir, "bad", "UNAVAILABLE");
    let catalog_text = |retries: &str| {
        format!(
            r#"
version: 1
proxies:
  {PROXY}:
    grpc_services:
      - name: {TARGET}
        routes:
          - {{ match: {{ prefix: / }}, to: connector{retries} }}
upstreams:
  connector: {{ protocol: grpc, endpoints: {{ static: ["{good}", "{bad}"] }} }}
"#,
            good = good.endpoint(),
            bad = bad.endpoint(),
        )
    };
    let catalog = dir.write("catalog.yaml", &catalog_text(""));
    let server = XdsServer::start(&dir, &catalog, 0);
    server.wait_ready();
    let bootstrap = grpc_bootstrap(&dir, server.xds_port, "grpcio-retry");
    let mut client = XdsGrpcClient::start(&dir, &format!("xds:///{TARGET}"), &bootstrap);

    // Without retries, round robin over both gives the failing one its share.
    let plain = client.calls(40, BATCH);
    assert!(
        plain.errors.keys().any(|e| e.starts_with("UNAVAILABLE")),
        "no call failed without a retry policy: {plain:?}\n{}",
        client.process.output()
    );

    dir.write(
        "catalog.yaml",
        &catalog_text(", retries: { attempts: 3, on: [unavailable] }"),
    );
    let retried = wait_answered_by(
        &mut client,
        "every call to succeed once the route retries",
        40,
        &["good"],
    );
    assert_eq!(retried.answers["good"], 40);
    let failed_before = bad.failed_calls();
    let batch = client.calls(100, BATCH);
    assert_eq!(batch.answers.get("good"), Some(&100), "{batch:?}");
    assert!(batch.errors.is_empty(), "{batch:?}");
    assert!(
        bad.failed_calls() > failed_before,
        "the failing backend got no calls: the retries were never needed"
    );
}

/// Mesh TLS to a backend (gRFC A29): a grpcio backend serves TLS with the mesh identity of
/// proxy `connector` and requires client certificates from the mesh CA. The proxyless client,
/// whose bootstrap (`--identity-dir`) holds the identity `xds-server identity` got for its task
/// role, reaches the control plane over mutual TLS and the backend through its cluster's
/// certificate provider; a client without that identity is refused by the backend, and a
/// server of the same CA with another proxy's identity is refused by the client.
#[test]
fn a_grpcio_client_reaches_a_mesh_tls_backend_with_its_identity() {
    let dir = TempDir::new("xds-grpc-tls");
    let moto = Moto::start(&dir, 0);
    let ca_dir = dir.path().join("ca");
    assert!(ca_init(&ca_dir).status.success());
    let ca_file = ca_dir.join("certificate.pem");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    let ca = Ca::from_pem(
        "ca",
        &read(&ca_file),
        &read(&ca_dir.join("private_key.pem")),
    )
    .unwrap();
    // A backend serving the mesh identity of `proxy` (certificate and key files in `dir`).
    let serving_as = |name: &str, proxy: &str| {
        let issued = ca
            .issue(&Leaf {
                names: vec!["127.0.0.1".into()],
                uris: vec![format!("spiffe://mesh.local/proxy/{proxy}")],
                server: true,
                ttl: Duration::from_secs(3600),
                ..Default::default()
            })
            .unwrap();
        let cert = dir.write(&format!("{proxy}.pem"), &issued.certificate_pem);
        let key = dir.write(&format!("{proxy}-key.pem"), &issued.private_key_pem);
        PeerServer::grpc_tls(&dir, name, &cert, &key, &ca_file)
    };
    let backend = serving_as("connector", "connector");
    // An impostor: a certificate of the same CA, for another proxy's identity.
    let impostor = serving_as("impostor", "other");
    let catalog = dir.write(
        "catalog.yaml",
        &format!(
            r#"
version: 1
proxies:
  {PROXY}:
    identity: {{ iam_roles: [wallet-task-role] }}
    grpc_services:
      - {{ name: {TARGET}, routes: [ {{ match: {{ prefix: / }}, to: connector }} ] }}
      - {{ name: {IMPOSTOR}, routes: [ {{ match: {{ prefix: / }}, to: impostor }} ] }}
      - {{ name: {OTHER}, routes: [ {{ match: {{ prefix: / }}, to: other }} ] }}
  other:
    listeners:
      - {{ name: inbound, port: 15000, protocol: http, tls: {{ certificate: mesh }}, routes: [ {{ match: {{ prefix: / }}, to: other }} ] }}
  connector:                      # the backend serves its mesh identity itself
    listeners:
      - {{ name: inbound, port: 15000, protocol: http, tls: {{ certificate: mesh }}, routes: [ {{ match: {{ prefix: / }}, to: connector }} ] }}
upstreams:
  connector: {{ protocol: grpc, endpoints: {{ static: ["{}"] }}, tls: {{ mesh: connector }} }}
  impostor: {{ protocol: grpc, endpoints: {{ static: ["{}"] }}, tls: {{ mesh: connector }} }}
  other: {{ protocol: grpc, endpoints: {{ static: ["{}"] }}, tls: {{ mesh: other }} }}
"#,
            backend.endpoint(),
            impostor.endpoint(),
            impostor.endpoint(),
        ),
    );
    let server = plane(
        &dir,
        &moto,
        &catalog,
        &format!("file:{}", ca_dir.display()),
        &[],
    );
    let creds = assume(&moto, "wallet-task-role", "task-1");
    let identity_dir = dir.path().join("identity");
    let out = identity(
        &server,
        &ca_file,
        &identity_dir,
        &env_with(&moto, &creds),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bootstrap = grpc_bootstrap_with(
        &dir,
        server.xds_port,
        "grpcio-tls",
        &["--identity-dir", &identity_dir.display().to_string()],
    );
    let mut client = XdsGrpcClient::start(&dir, &format!("xds:///{TARGET}"), &bootstrap);
    let batch = client.calls(20, BATCH);
    assert_eq!(
        batch.answers.get("connector"),
        Some(&20),
        "{batch:?}\n{}\n{}",
        client.process.output(),
        backend.process.output()
    );

    // A server of the same CA that is not `connector` is refused: the client checks the
    // SPIFFE ID the cluster names, not only the chain. Called as what it is, it answers.
    let mut right = XdsGrpcClient::start(&dir, &format!("xds:///{OTHER}"), &bootstrap);
    let answered = right.calls(1, BATCH);
    assert_eq!(
        answered.answers.get("impostor"),
        Some(&1),
        "{answered:?}\n{}",
        right.process.output()
    );
    let mut wrong = XdsGrpcClient::start(&dir, &format!("xds:///{IMPOSTOR}"), &bootstrap);
    let refused = wrong.calls(1, BATCH);
    assert!(
        refused.answers.is_empty() && refused.errors.values().sum::<u64>() == 1,
        "a server with another identity was trusted as connector: {refused:?}\n{}",
        wrong.process.output()
    );
    // Refused by the handshake, not for its configuration: every client took every response.
    assert_no_nacks(&server);
    // (Node's grpc-js-xds 1.14 cannot take this bootstrap: it has no `tls` channel credentials
    // for the control plane; docs/proxyless-grpc.md says so.)

    // The backend refuses a client without the mesh identity, and takes one with it.
    let call = |client_cert| {
        grpc::call(
            &dir,
            backend.port,
            "/test.Stream/Who",
            "",
            CallOptions {
                tls: Some(CallTls {
                    ca: &ca_file,
                    name: "127.0.0.1",
                    client: client_cert,
                }),
                ..Default::default()
            },
            BATCH,
        )
    };
    let anonymous = call(None);
    assert_eq!(anonymous.code, "UNAVAILABLE", "{anonymous:?}");
    let identity = (
        identity_dir.join("certificate.pem"),
        identity_dir.join("private_key.pem"),
    );
    let with_identity = call(Some((identity.0.as_path(), identity.1.as_path())));
    assert_eq!(with_identity.code, "OK", "{with_identity:?}");
}

/// A second independent client: Node's `@grpc/grpc-js-xds` (npm), with the same bootstrap,
/// calls through `xds:///TARGET` and is answered by both backends of a split.
#[test]
fn a_node_client_calls_through_the_target_with_our_bootstrap() {
    let dir = TempDir::new("xds-grpc-node");
    let one = PeerServer::grpc_named(&dir, "one");
    let two = PeerServer::grpc_named(&dir, "two");
    let catalog = dir.write(
        "catalog.yaml",
        &format!(
            r#"
version: 1
proxies:
  {PROXY}:
    grpc_services:
      - name: {TARGET}
        routes:
          - {{ match: {{ prefix: / }}, split: {{ connector: 50, connector-v2: 50 }} }}
upstreams:
  connector: {{ protocol: grpc, endpoints: {{ static: ["{}"] }} }}
  connector-v2: {{ protocol: grpc, endpoints: {{ static: ["{}"] }} }}
"#,
            one.endpoint(),
            two.endpoint()
        ),
    );
    let server = XdsServer::start(&dir, &catalog, 0);
    server.wait_ready();
    let bootstrap = grpc_bootstrap(&dir, server.xds_port, "node-1");
    let batch = grpc::node_xds_calls(&dir, &format!("xds:///{TARGET}"), &bootstrap, 100, BATCH);
    assert!(batch.errors.is_empty(), "{batch:?}");
    assert_eq!(batch.answers.values().sum::<u64>(), 100, "{batch:?}");
    // Binomial sd 5; bounds at 8 sd: both answer, neither takes nearly all.
    for name in ["one", "two"] {
        let n = batch.answers.get(name).copied().unwrap_or_default();
        assert!(
            (10..=90).contains(&n),
            "{name} answered {n} of 100: {batch:?}"
        );
    }
}
