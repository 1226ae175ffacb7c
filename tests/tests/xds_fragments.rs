//! Catalog fragments that behave like a mesh, against real Envoy 1.40 and moto's S3: a route to
//! another fragment's upstream, a bad fragment that harms only itself, a replica started while
//! a fragment is bad that serves the same last good version as the others, and
//! `validate FILE --with DIR-or-s3://PREFIX/`, and a last good catalog that cannot be written.

use std::ffi::OsStr;
use std::process::{Command, Output};
use std::time::Duration;

use tests::process::envoy_bin;
use tests::{Backend, Envoy, Mode, Moto, TempDir, XdsServer, free_port, http, wait_for};

/// A service's fragment: proxy `proxy` listens on `port` and routes `/` to upstream `to`; it
/// defines `upstreams`, each with one backend.
fn fragment(proxy: &str, port: u16, to: &str, upstreams: &[(&str, &Backend)]) -> String {
    let mut text = format!(
        r#"version: 1
proxies:
  {proxy}:
    listeners:
      - {{ name: web, address: 127.0.0.1, port: {port}, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: {to} }} ] }}
"#
    );
    if !upstreams.is_empty() {
        text.push_str("upstreams:\n");
    }
    for (name, backend) in upstreams {
        text.push_str(&format!(
            "  {name}: {{ protocol: http1, endpoints: {{ static: [\"{}\"] }} }}\n",
            backend.addr
        ));
    }
    text
}

/// A fragment that is valid YAML but not a valid catalog: port 0.
fn broken(proxy: &str) -> String {
    format!(
        "version: 1\nproxies:\n  {proxy}:\n    listeners:\n      - {{ name: web, port: 0, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: nowhere }} ] }}\n"
    )
}

/// The body Envoy's listener on `port` answers `/` with, if it answers.
fn body(port: u16) -> Option<String> {
    http::get(port, "/", &[])
        .ok()
        .map(|r| r.body.trim().to_string())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn put(rt: &tokio::runtime::Runtime, s3: &aws_sdk_s3::Client, key: &str, text: &str) {
    rt.block_on(
        s3.put_object()
            .bucket("config")
            .key(key)
            .body(text.as_bytes().to_vec().into())
            .send(),
    )
    .expect("object uploaded");
}

fn get(rt: &tokio::runtime::Runtime, s3: &aws_sdk_s3::Client, key: &str) -> Option<String> {
    let out = rt
        .block_on(s3.get_object().bucket("config").key(key).send())
        .ok()?;
    let bytes = rt.block_on(out.body.collect()).ok()?.into_bytes();
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// `xds-server validate ARGS` with `env`.
fn validate(args: &[&OsStr], env: &[(&str, String)]) -> Output {
    Command::new(tests::workspace_bin("xds-server"))
        .arg("validate")
        .args(args)
        .env_remove("XDS_SERVER_VALIDATE_ENVOY")
        .env_remove("XDS_SERVER_VALIDATE_WITH")
        .env_remove("XDS_SERVER_LAST_GOOD")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("xds-server validate runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Replaces `catalog.d/NAME` under `dir` atomically (a staged file renamed over it).
fn write(dir: &TempDir, name: &str, content: &str) {
    let catalog = dir.path().join("catalog.d");
    std::fs::create_dir_all(&catalog).unwrap();
    let staged = catalog.join(format!(".{name}.tmp"));
    std::fs::write(&staged, content).unwrap();
    std::fs::rename(&staged, catalog.join(name)).unwrap();
}

/// The catalog status of `/readyz`.
fn status(server: &XdsServer) -> serde_json::Value {
    server.admin_json("/readyz")["catalog"].clone()
}

#[test]
fn a_route_to_an_upstream_of_another_fragment_is_served() {
    let dir = TempDir::new("fragments-shared");
    let connector = Backend::start("connector", 0).unwrap();
    let (connector_port, wallet_port) = (free_port(), free_port());
    write(
        &dir,
        "connector.yaml",
        &fragment(
            "connector",
            connector_port,
            "connector",
            &[("connector", &connector)],
        ),
    );
    // The wallet service calls the connector through the connector's own upstream.
    write(
        &dir,
        "wallet.yaml",
        &fragment("wallet", wallet_port, "connector", &[]),
    );
    let server = XdsServer::start(&dir, &dir.path().join("catalog.d"), 0);
    server.wait_ready();
    let wallet = Envoy::start(&dir, "wallet", server.xds_port, Mode::Delta);
    wallet.wait_live();
    http::wait_for_body(wallet_port, "connector");
    assert!(
        status(&server)["refused_fragments"]
            .as_object()
            .is_some_and(|r| r.is_empty())
    );
    // One cluster: the connector's, shared, not a copy under the wallet's name.
    let config = server.admin_json("/debug/config?proxy=wallet");
    let clusters = config.to_string();
    assert!(clusters.contains("\"connector\""), "{config}");
}

#[test]
fn a_bad_fragment_keeps_its_last_good_config_while_the_others_change() {
    let dir = TempDir::new("fragments-bad");
    let (a1, b1, b2) = (
        Backend::start("a1", 0).unwrap(),
        Backend::start("b1", 0).unwrap(),
        Backend::start("b2", 0).unwrap(),
    );
    let (a_port, b_port) = (free_port(), free_port());
    let good_a = fragment("a", a_port, "a-web", &[("a-web", &a1)]);
    write(&dir, "a.yaml", &good_a);
    write(
        &dir,
        "b.yaml",
        &fragment("b", b_port, "b-web", &[("b-web", &b1), ("b-web-2", &b2)]),
    );
    let server = XdsServer::start(&dir, &dir.path().join("catalog.d"), 0);
    server.wait_ready();
    let a = Envoy::start(&dir, "a", server.xds_port, Mode::Sotw);
    let b = Envoy::start(&dir, "b", server.xds_port, Mode::Delta);
    a.wait_live();
    b.wait_live();
    http::wait_for_body(a_port, "a1");
    http::wait_for_body(b_port, "b1");
    let good_version = status(&server)["fragments"]["a.yaml"].clone();
    assert!(good_version.is_string(), "{}", status(&server));

    // A's team breaks its fragment; B's team changes its route.
    server.expect_catalog_refused(|| {
        write(&dir, "a.yaml", &broken("a"));
    });
    assert_eq!(
        server.metric("xds_catalog_fragment_refused{fragment=\"a.yaml\"}"),
        1.0
    );
    assert_eq!(
        server.metric("xds_catalog_fragment_refused{fragment=\"b.yaml\"}"),
        0.0
    );
    write(
        &dir,
        "b.yaml",
        &fragment("b", b_port, "b-web-2", &[("b-web", &b1), ("b-web-2", &b2)]),
    );
    http::wait_for_body(b_port, "b2");
    for _ in 0..10 {
        assert_eq!(body(a_port).as_deref(), Some("a1"));
    }

    // /readyz stays ready, and names A, its error and the version still served.
    let ready = http::get(server.admin_port, "/readyz", &[]).unwrap();
    assert_eq!(ready.status, 200, "{}", ready.body);
    let st = status(&server);
    let refused = &st["refused_fragments"]["a.yaml"];
    let error = refused["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("proxies.a.listeners[0].port: port 0 is out of range (1-65535)"),
        "{st}"
    );
    assert_eq!(refused["serving"], good_version, "{st}");
    assert_eq!(st["fragments"]["a.yaml"], good_version, "{st}");
    assert!(refused["offered"].is_string() && refused["offered"] != good_version);
    assert!(st["refused_fragments"].get("b.yaml").is_none(), "{st}");
    // Logged once, not at every load (B's change was one more).
    let log = server.process.output();
    let logged = log
        .lines()
        .filter(|l| l.contains("catalog fragment refused") && l.contains("a.yaml"))
        .count();
    assert_eq!(logged, 1, "{log}");

    // Fixed, A's change goes out too.
    write(
        &dir,
        "a.yaml",
        &good_a.replace("to: a-web }", "to: a-web, timeout: 5s }"),
    );
    wait_for("a.yaml accepted again", Duration::from_secs(20), || {
        (server.metric("xds_catalog_fragment_refused{fragment=\"a.yaml\"}") == 0.0).then_some(())
    });
    assert!(
        server
            .process
            .output()
            .contains("catalog fragment accepted again")
    );
    http::wait_for_body(a_port, "a1");
}

/// The versions an Envoy reports for its listeners and clusters.
fn envoy_versions(envoy: &Envoy) -> (String, String) {
    let get = |name: &str| envoy.text_stat(name).unwrap_or_default();
    (
        get("listener_manager.lds.version_text"),
        get("cluster_manager.cds.version_text"),
    )
}

#[test]
fn a_replica_started_while_a_fragment_is_bad_serves_its_last_good_version() {
    let dir = TempDir::new("fragments-replicas");
    let moto = Moto::start(&dir, 0);
    let rt = rt();
    let s3 = moto.s3();
    rt.block_on(s3.create_bucket().bucket("config").send())
        .unwrap();
    let (a1, b1) = (
        Backend::start("a1", 0).unwrap(),
        Backend::start("b1", 0).unwrap(),
    );
    let (a_port, b_port) = (free_port(), free_port());
    let good_a = fragment("a", a_port, "a-web", &[("a-web", &a1)]);
    put(&rt, &s3, "xds/catalog.d/a.yaml", &good_a);
    put(
        &rt,
        &s3,
        "xds/catalog.d/b.yaml",
        &fragment("b", b_port, "b-web", &[("b-web", &b1)]),
    );
    let prefix = OsStr::new("s3://config/xds/catalog.d/");
    let start = || {
        XdsServer::start_env(
            &dir,
            prefix,
            0,
            &["--catalog-interval", "200ms"],
            &moto.env(),
        )
    };
    let first = start();
    first.wait_ready();
    // The default last good catalog, under the prefix, is written once a catalog is served.
    let digest = wait_for(
        "the last good catalog written",
        Duration::from_secs(20),
        || {
            status(&first)["last_good"]["digest"]
                .as_str()
                .map(String::from)
        },
    );
    assert_eq!(
        status(&first)["last_good"]["location"],
        "s3://config/xds/catalog.d/.last-good.json"
    );
    let envoy_first = Envoy::start(&dir, "a", first.xds_port, Mode::Delta);
    envoy_first.wait_live();
    http::wait_for_body(a_port, "a1");

    first.expect_catalog_refused(|| put(&rt, &s3, "xds/catalog.d/a.yaml", &broken("a")));
    let persisted = get(&rt, &s3, "xds/catalog.d/.last-good.json").expect("persisted");
    // It holds A's good version, with its ETag and upload time, and it is the document the
    // first replica wrote.
    let doc: serde_json::Value = serde_json::from_str(&persisted).unwrap();
    assert_eq!(doc["digest"], digest.as_str());
    assert_eq!(doc["fragments"]["a.yaml"]["text"], good_a.as_str());
    assert!(
        doc["fragments"]["a.yaml"]["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("ETag ") && s.contains(", modified ")),
        "{doc}"
    );
    // The hidden object is no fragment of the prefix.
    assert!(status(&first)["fragments"].get(".last-good.json").is_none());

    // A second replica starts while A is bad: it serves A's last good version, like the first.
    let second = start();
    second.wait_ready();
    let st = status(&second);
    assert_eq!(
        st["refused_fragments"]["a.yaml"]["serving"],
        status(&first)["refused_fragments"]["a.yaml"]["serving"],
        "{st}"
    );
    assert!(
        st["refused_fragments"]["a.yaml"]["serving"].is_string(),
        "{st}"
    );
    assert_eq!(st["last_good"]["digest"], digest.as_str(), "{st}");
    assert_eq!(
        second.admin_json("/debug/config?proxy=a"),
        first.admin_json("/debug/config?proxy=a")
    );
    // An Envoy of A moving to the second replica gets the same versions, and A's traffic.
    let versions = envoy_versions(&envoy_first);
    assert!(
        !versions.0.is_empty() && !versions.1.is_empty(),
        "{versions:?}"
    );
    drop(envoy_first);
    let envoy_second = Envoy::start(&dir, "a", second.xds_port, Mode::Delta);
    envoy_second.wait_live();
    http::wait_for_body(a_port, "a1");
    assert_eq!(envoy_versions(&envoy_second), versions);

    // A corrupt last good catalog is ignored, said so, and never stands in for anything.
    // (With no replica left that serves A's last good version: one would write it back.)
    drop(envoy_second);
    drop(second);
    drop(first);
    put(&rt, &s3, "xds/catalog.d/.last-good.json", "{ not json");
    let third = start();
    wait_for("the third replica to load", Duration::from_secs(20), || {
        status(&third)["refused_fragments"].get("a.yaml").cloned()
    });
    let st = status(&third);
    assert_eq!(
        st["refused_fragments"]["a.yaml"]["serving"],
        serde_json::Value::Null,
        "{st}"
    );
    assert!(
        third
            .process
            .output()
            .contains("last good catalog ignored: not a last good catalog"),
        "{st}"
    );
    wait_for(
        "B alone served by the third replica",
        Duration::from_secs(20),
        || (third.admin_json("/debug/config")["proxies"] == serde_json::json!(["b"])).then_some(()),
    );
    // While A is served by none of its versions here, the document is not replaced by one
    // without A: a replica that has A's last good version may still need to put it back.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        get(&rt, &s3, "xds/catalog.d/.last-good.json").as_deref(),
        Some("{ not json")
    );
    assert_eq!(
        status(&third)["last_good"]["digest"],
        serde_json::Value::Null
    );
}

#[test]
fn validate_with_checks_a_fragment_against_the_fragments_it_joins() {
    let dir = TempDir::new("fragments-validate");
    let connector = Backend::start("connector", 0).unwrap();
    std::fs::create_dir(dir.path().join("empty.d")).unwrap();
    write(
        &dir,
        "connector.yaml",
        &fragment("connector", 8081, "connector", &[("connector", &connector)]),
    );
    let wallet = dir.write("wallet.yaml", &fragment("wallet", 8080, "connector", &[]));
    let with = |location: &OsStr, env: &[(&str, String)]| {
        validate(&[wallet.as_os_str(), OsStr::new("--with"), location], env)
    };

    let out = with(dir.path().join("catalog.d").as_os_str(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    let out = with(dir.path().join("empty.d").as_os_str(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 error joining"), "{stderr}");
    assert!(
        stderr.contains(r#"proxies.wallet.listeners[0].routes[0].to: upstream "connector" is not defined in `upstreams`"#),
        "{stderr}"
    );
    // Alone, it is no catalog: plain `validate` says so too.
    assert_eq!(validate(&[wallet.as_os_str()], &[]).status.code(), Some(1));
    // Envoy itself accepts the wallet proxy with the connector's cluster.
    let envoy = envoy_bin();
    let out = validate(
        &[
            wallet.as_os_str(),
            OsStr::new("--with"),
            dir.path().join("catalog.d").as_os_str(),
            OsStr::new("--envoy"),
            envoy.as_os_str(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));

    // The same against an S3 prefix, where the fragments are before an upload.
    let moto = Moto::start(&dir, 0);
    let rt = rt();
    let s3 = moto.s3();
    rt.block_on(s3.create_bucket().bucket("config").send())
        .unwrap();
    let connector_text =
        std::fs::read_to_string(dir.path().join("catalog.d/connector.yaml")).unwrap();
    put(&rt, &s3, "xds/catalog.d/connector.yaml", &connector_text);
    let out = with(OsStr::new("s3://config/xds/catalog.d/"), &moto.env());
    assert!(out.status.success(), "{}", text(&out));
    let out = with(OsStr::new("s3://config/xds/empty.d/"), &moto.env());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(r#"upstream "connector" is not defined"#)
    );
    // A fragment taking a name another fragment owns is refused, naming the owner.
    let taker = dir.write(
        "taker.yaml",
        &fragment("taker", 8082, "connector", &[("connector", &connector)]),
    );
    let out = validate(
        &[
            taker.as_os_str(),
            OsStr::new("--with"),
            OsStr::new("s3://config/xds/catalog.d/"),
        ],
        &moto.env(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("upstreams.connector: already defined in connector.yaml"),
        "{}",
        text(&out)
    );
}

#[test]
fn validate_with_reads_the_last_good_catalog_where_last_good_says() {
    let dir = TempDir::new("fragments-validate-last-good");
    let connector = Backend::start("connector", 0).unwrap();
    let good = fragment(
        "connector",
        free_port(),
        "connector",
        &[("connector", &connector)],
    );
    write(&dir, "connector.yaml", &good);
    // The server keeps its last good catalog elsewhere than beside the directory.
    let kept = dir.path().join("state").join("last-good.json");
    let catalog = dir.path().join("catalog.d");
    let server = XdsServer::start_with(
        &dir,
        &catalog,
        0,
        &[
            "--catalog-interval",
            "100ms",
            "--last-good",
            kept.to_str().unwrap(),
        ],
    );
    server.wait_ready();
    wait_for(
        "the last good catalog written",
        Duration::from_secs(20),
        || kept.is_file().then_some(()),
    );
    // The connector's fragment breaks; the server still serves its last good version.
    write(&dir, "connector.yaml", &broken("connector"));
    wait_for("connector.yaml refused", Duration::from_secs(20), || {
        status(&server)["refused_fragments"]
            .get("connector.yaml")
            .map(drop)
    });
    let wallet = dir.write("wallet.yaml", &fragment("wallet", 8080, "connector", &[]));
    let with = |extra: &[&OsStr]| {
        let mut args = vec![
            wallet.as_os_str(),
            OsStr::new("--with"),
            catalog.as_os_str(),
        ];
        args.extend_from_slice(extra);
        validate(&args, &[])
    };
    // Without --last-good, no document at the default place: the connector's upstream is
    // not there.
    let out = with(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(r#"upstream "connector" is not defined"#),
        "{}",
        text(&out)
    );
    // With it, as the server: the connector's last good version counts.
    let out = with(&[OsStr::new("--last-good"), kept.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("connector.yaml is refused"),
        "{}",
        text(&out)
    );
    // It reads the environment variable serve reads too.
    let out = validate(
        &[
            wallet.as_os_str(),
            OsStr::new("--with"),
            catalog.as_os_str(),
        ],
        &[("XDS_SERVER_LAST_GOOD", kept.display().to_string())],
    );
    assert!(out.status.success(), "{}", text(&out));
    // Exported for serve, it is no mistake where validate does not read it (no --with);
    // given as a flag there, it is one.
    let unused = "is read only with --with";
    let alone = dir.write("alone.yaml", &good);
    let out = validate(
        &[alone.as_os_str()],
        &[("XDS_SERVER_LAST_GOOD", kept.display().to_string())],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(unused), "{}", text(&out));
    let out = validate(
        &[
            alone.as_os_str(),
            OsStr::new("--last-good"),
            kept.as_os_str(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(unused), "{}", text(&out));
}

#[test]
fn a_replica_started_while_its_directory_is_missing_serves_the_last_good_catalog() {
    let dir = TempDir::new("fragments-missing-dir");
    let a1 = Backend::start("a1", 0).unwrap();
    let a_port = free_port();
    write(
        &dir,
        "a.yaml",
        &fragment("a", a_port, "a-web", &[("a-web", &a1)]),
    );
    let catalog = dir.path().join("catalog.d");
    let path = dir.path().join(".last-good.json");
    {
        let first = XdsServer::start(&dir, &catalog, 0);
        first.wait_ready();
        wait_for(
            "the last good catalog written",
            Duration::from_secs(20),
            || path.is_file().then_some(()),
        );
    }
    // The directory is not there (a volume not mounted yet): a new replica still serves.
    std::fs::rename(&catalog, dir.path().join("aside")).unwrap();
    let second = XdsServer::start(&dir, &catalog, 0);
    second.wait_ready();
    let st = status(&second);
    let error = st["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!(
            "serving the last good catalog read from {}",
            path.display()
        )),
        "{st}"
    );
    let envoy = Envoy::start(&dir, "a", second.xds_port, Mode::Delta);
    envoy.wait_live();
    http::wait_for_body(a_port, "a1");
}

/// Keeps a process stopped (SIGSTOP) until dropped (SIGCONT), so a replica misses what
/// happens meanwhile, as one whose poll comes late would.
struct Paused(u32);

impl Paused {
    fn new(server: &XdsServer) -> Paused {
        let pid = server.process.pid();
        // SAFETY: kill(2) on the pid of a child this test started.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}

/// Two replicas that saw different versions of a fragment before it went bad serve the same
/// last good version (the one the persisted document shares), a fragment one replica added is
/// kept when the other writes, and a document that lost a fragment gets it back.
#[test]
fn replicas_that_saw_different_versions_of_a_bad_fragment_serve_the_same_one() {
    let dir = TempDir::new("fragments-converge");
    let moto = Moto::start(&dir, 0);
    let rt = rt();
    let s3 = moto.s3();
    rt.block_on(s3.create_bucket().bucket("config").send())
        .unwrap();
    let (a1, a2, b1, c1) = (
        Backend::start("a1", 0).unwrap(),
        Backend::start("a2", 0).unwrap(),
        Backend::start("b1", 0).unwrap(),
        Backend::start("c1", 0).unwrap(),
    );
    let (a_port, b_port, c_port) = (free_port(), free_port(), free_port());
    let a_v1 = fragment("a", a_port, "a-web", &[("a-web", &a1)]);
    let a_v2 = fragment("a", a_port, "a-web", &[("a-web", &a2)]);
    let b = fragment("b", b_port, "b-web", &[("b-web", &b1)]);
    let c = fragment("c", c_port, "c-web", &[("c-web", &c1)]);
    put(&rt, &s3, "xds/catalog.d/a.yaml", &a_v1);
    put(&rt, &s3, "xds/catalog.d/b.yaml", &b);
    let prefix = OsStr::new("s3://config/xds/catalog.d/");
    let start = || {
        XdsServer::start_env(
            &dir,
            prefix,
            0,
            &["--catalog-interval", "200ms"],
            &moto.env(),
        )
    };
    let doc = || -> serde_json::Value {
        get(&rt, &s3, "xds/catalog.d/.last-good.json")
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    };
    let text_of = |doc: &serde_json::Value, name: &str| {
        doc["fragments"][name]["text"].as_str().map(String::from)
    };
    let first = start();
    first.wait_ready();
    let second = start();
    second.wait_ready();
    wait_for(
        "A's first version persisted",
        Duration::from_secs(20),
        || (text_of(&doc(), "a.yaml").as_deref() == Some(a_v1.as_str())).then_some(()),
    );

    // The second replica misses A's second version and C's arrival; the first serves both
    // and writes them.
    {
        let _paused = Paused::new(&second);
        put(&rt, &s3, "xds/catalog.d/a.yaml", &a_v2);
        put(&rt, &s3, "xds/catalog.d/c.yaml", &c);
        wait_for(
            "A's second version and C persisted",
            Duration::from_secs(20),
            || {
                let d = doc();
                (text_of(&d, "a.yaml").as_deref() == Some(a_v2.as_str())
                    && text_of(&d, "c.yaml").is_some())
                .then_some(())
            },
        );
        first.expect_catalog_refused(|| put(&rt, &s3, "xds/catalog.d/a.yaml", &broken("a")));
    }
    // Back, the second replica reads A broken: it falls back to the version the replicas
    // share, not to the one it saw last.
    let serving = |server: &XdsServer| {
        status(server)["refused_fragments"]["a.yaml"]["serving"]
            .as_str()
            .map(String::from)
    };
    let shared = wait_for(
        "the second replica refuses A",
        Duration::from_secs(20),
        || serving(&second),
    );
    assert_eq!(Some(shared.clone()), serving(&first));
    // The same resources, endpoints too (those follow the catalog a moment later).
    wait_for(
        "the replicas' resources for A to match",
        Duration::from_secs(20),
        || {
            (second.admin_json("/debug/config?proxy=a")
                == first.admin_json("/debug/config?proxy=a"))
            .then_some(())
        },
    );
    let envoy = Envoy::start(&dir, "a", second.xds_port, Mode::Delta);
    envoy.wait_live();
    http::wait_for_body(a_port, "a2");
    let d = doc();
    assert_eq!(text_of(&d, "a.yaml").as_deref(), Some(a_v2.as_str()), "{d}");
    assert!(text_of(&d, "c.yaml").is_some(), "C lost: {d}");

    // A document that lost a fragment (a writer that knew less, a hand edit) gets it back.
    let check: xds_server::catalog::fragments::Check<'_> = &|_| Vec::new();
    let kept: xds_server::catalog::fragments::Fragments = [("a.yaml", &a_v2), ("b.yaml", &b)]
        .into_iter()
        .map(|(name, text)| {
            let doc = xds_server::catalog::fragments::Document::new(name, text.as_bytes());
            let accepted = xds_server::catalog::fragments::accept(&doc, check).unwrap();
            (name.to_string(), accepted)
        })
        .collect();
    let (without_c, _) =
        xds_server::last_good::encode("s3://config/xds/catalog.d/", &kept).unwrap();
    put(
        &rt,
        &s3,
        "xds/catalog.d/.last-good.json",
        std::str::from_utf8(&without_c).unwrap(),
    );
    wait_for("C written back", Duration::from_secs(20), || {
        text_of(&doc(), "c.yaml").map(|_| ())
    });
    assert_eq!(serving(&first), Some(shared.clone()));
    assert_eq!(serving(&second), Some(shared));
}

#[test]
fn a_read_error_clears_once_the_catalog_reads_again_unchanged() {
    let dir = TempDir::new("fragments-read-error");
    let moto = Moto::start(&dir, 0);
    let rt = rt();
    let s3 = moto.s3();
    let a1 = Backend::start("a1", 0).unwrap();
    let a = fragment("a", free_port(), "a-web", &[("a-web", &a1)]);
    let upload = |last_good: Option<&str>| {
        rt.block_on(s3.create_bucket().bucket("config").send())
            .unwrap();
        put(&rt, &s3, "xds/catalog.d/a.yaml", &a);
        put(&rt, &s3, "xds/catalog.yaml", &a);
        if let Some(doc) = last_good {
            put(&rt, &s3, "xds/catalog.d/.last-good.json", doc);
        }
    };
    upload(None);
    let start = |catalog: &str| {
        XdsServer::start_env(
            &dir,
            OsStr::new(catalog),
            0,
            &["--catalog-interval", "200ms"],
            &moto.env(),
        )
    };
    // A prefix of fragments and a single object read the same bucket.
    let servers = [
        start("s3://config/xds/catalog.d/"),
        start("s3://config/xds/catalog.yaml"),
    ];
    for server in &servers {
        server.wait_ready();
    }
    wait_for(
        "the last good catalog written",
        Duration::from_secs(20),
        || {
            status(&servers[0])["last_good"]["digest"]
                .as_str()
                .map(drop)
        },
    );
    let doc = get(&rt, &s3, "xds/catalog.d/.last-good.json").expect("persisted");
    // The bucket goes away for a while (moto forgets everything), then comes back as it was,
    // every object with the same ETag.
    let reset = http::request("POST", moto.port, "/moto-api/reset", &[]).unwrap();
    assert_eq!(reset.status, 200, "{reset:?}");
    for server in &servers {
        wait_for("the read error shown", Duration::from_secs(60), || {
            status(server)["last_error"]
                .as_str()
                .filter(|e| e.contains("cannot "))
                .map(drop)
        });
        assert_eq!(server.metric("xds_catalog_last_load_success"), 0.0);
    }
    upload(Some(&doc));
    for server in &servers {
        wait_for("the read error cleared", Duration::from_secs(20), || {
            status(server)["last_error"].is_null().then_some(())
        });
        assert_eq!(server.metric("xds_catalog_last_load_success"), 1.0);
        assert!(
            status(server)["refused_fragments"]
                .as_object()
                .is_none_or(|r| r.is_empty())
        );
    }
}

#[test]
fn a_fragment_that_gains_a_private_key_is_refused_and_its_last_good_version_served_and_kept() {
    let dir = TempDir::new("fragments-key");
    let a1 = Backend::start("a1", 0).unwrap();
    let k1 = Backend::start("k1", 0).unwrap();
    let k2 = Backend::start("k2", 0).unwrap();
    let (a_port, k_port) = (free_port(), free_port());
    let a = |to: &str| fragment("a", a_port, to, &[("a-web", &a1), ("a-web-2", &a1)]);
    write(&dir, "a.yaml", &a("a-web"));
    let k = fragment("k", k_port, "k-web", &[("k-web", &k1)]);
    write(&dir, "k.yaml", &k);
    let catalog = dir.path().join("catalog.d");
    let server = XdsServer::start(&dir, &catalog, 0);
    server.wait_ready();
    let path = dir.path().join(".last-good.json");
    let persisted = |name: &str, text: &str| {
        let doc = std::fs::read_to_string(&path).ok()?;
        let doc: serde_json::Value = serde_json::from_str(&doc).ok()?;
        (doc["fragments"][name]["text"] == text).then_some(doc)
    };
    wait_for("k.yaml persisted", Duration::from_secs(20), || {
        persisted("k.yaml", &k)
    });
    let envoy = Envoy::start(&dir, "k", server.xds_port, Mode::Delta);
    envoy.wait_live();
    http::wait_for_body(k_port, "k1");
    // k.yaml's next version routes to k2, with a key pasted into a comment.
    let key_body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC";
    let keyed = format!(
        "{}# -----BEGIN PRIVATE KEY-----\n# {key_body}\n# -----END PRIVATE KEY-----\n",
        fragment("k", k_port, "k-web", &[("k-web", &k2)])
    );
    write(&dir, "k.yaml", &keyed);
    let refused = wait_for("k.yaml refused", Duration::from_secs(20), || {
        let st = status(&server);
        st["refused_fragments"]
            .get("k.yaml")
            .is_some()
            .then_some(st)
    });
    let error = refused["refused_fragments"]["k.yaml"]["error"]
        .as_str()
        .unwrap();
    assert!(error.contains("holds a private key"), "{error}");
    assert!(
        !refused["refused_fragments"]["k.yaml"]["serving"].is_null(),
        "{refused}"
    );
    // The others' changes still go out and are persisted; k.yaml's last good version stays.
    write(&dir, "a.yaml", &a("a-web-2"));
    let doc = wait_for("a.yaml's change persisted", Duration::from_secs(20), || {
        persisted("a.yaml", &a("a-web-2"))
    });
    assert_eq!(doc["fragments"]["k.yaml"]["text"], k.as_str(), "{doc}");
    // A replica that starts now serves k.yaml's last good version too.
    let second = XdsServer::start(&dir, &catalog, 0);
    second.wait_ready();
    assert_eq!(
        status(&second)["refused_fragments"]["k.yaml"]["serving"],
        refused["refused_fragments"]["k.yaml"]["serving"]
    );
    // k's Envoy still routes to k1.
    assert_eq!(body(k_port).as_deref(), Some("k1"));
    // The key is nowhere: not in the document, the logs, /readyz; the refusal said once.
    assert!(!std::fs::read_to_string(&path).unwrap().contains(key_body));
    for s in [&server, &second] {
        assert!(!status(s).to_string().contains(key_body));
        let log = s.process.output();
        assert!(!log.contains(key_body), "{log}");
        assert_eq!(log.matches("catalog fragment refused").count(), 1, "{log}");
    }
}

#[test]
fn an_unreadable_object_is_fetched_again_alone_and_nothing_reloads_while_nothing_changes() {
    let dir = TempDir::new("fragments-archived");
    let moto = Moto::start(&dir, 0);
    let rt = rt();
    let s3 = moto.s3();
    let a1 = Backend::start("a1", 0).unwrap();
    let b1 = Backend::start("b1", 0).unwrap();
    let (a_port, b_port) = (free_port(), free_port());
    rt.block_on(s3.create_bucket().bucket("config").send())
        .unwrap();
    put(
        &rt,
        &s3,
        "xds/catalog.d/a.yaml",
        &fragment("a", a_port, "a-web", &[("a-web", &a1)]),
    );
    // b.yaml is archived: it is listed, and GetObject refuses it (InvalidObjectState).
    rt.block_on(
        s3.put_object()
            .bucket("config")
            .key("xds/catalog.d/b.yaml")
            .storage_class(aws_sdk_s3::types::StorageClass::Glacier)
            .body(
                fragment("b", b_port, "b-web", &[("b-web", &b1)])
                    .into_bytes()
                    .into(),
            )
            .send(),
    )
    .expect("archived object uploaded");
    let server = XdsServer::start_env(
        &dir,
        OsStr::new("s3://config/xds/catalog.d/"),
        0,
        &["--catalog-interval", "100ms"],
        &moto.env(),
    );
    server.wait_ready();
    let st = wait_for("b.yaml refused", Duration::from_secs(20), || {
        let st = status(&server);
        st["refused_fragments"]
            .get("b.yaml")
            .is_some()
            .then_some(st)
    });
    let refused = &st["refused_fragments"]["b.yaml"];
    assert!(
        refused["error"].as_str().unwrap().contains("cannot read"),
        "{refused}"
    );
    // What was read is nothing: no version is offered, and it says it could not be read.
    assert!(refused["offered"].is_null(), "{refused}");
    assert_eq!(refused["unreadable"], true, "{refused}");
    // Many polls later: loaded once, not once a poll.
    std::thread::sleep(Duration::from_secs(2));
    let log = server.process.output();
    assert_eq!(log.matches("catalog loaded").count(), 1, "{log}");
    assert_eq!(
        server.metric("xds_catalog_loads_total{result=\"error\"}"),
        1.0
    );
    // a.yaml changes: it goes out, b.yaml still refused.
    put(
        &rt,
        &s3,
        "xds/catalog.d/a.yaml",
        &fragment("a", a_port, "a-web", &[("a-web", &b1)]),
    );
    wait_for("loaded again", Duration::from_secs(20), || {
        (server.process.output().matches("catalog loaded").count() == 2).then_some(())
    });
    assert!(status(&server)["refused_fragments"].get("b.yaml").is_some());
}

#[test]
fn a_last_good_catalog_that_cannot_be_written_is_tried_again_at_each_poll_without_loading_again() {
    let dir = TempDir::new("fragments-unwritable");
    let a1 = Backend::start("a1", 0).unwrap();
    let a_port = free_port();
    write(
        &dir,
        "a.yaml",
        &fragment("a", a_port, "a-web", &[("a-web", &a1)]),
    );
    // The document's directory is a link to one not made yet: there is no document, and no
    // write succeeds (as for a task role without s3:PutObject).
    std::os::unix::fs::symlink(dir.path().join("missing"), dir.path().join("store")).unwrap();
    let path = dir.path().join("store").join("last-good.json");
    let server = XdsServer::start_with(
        &dir,
        &dir.path().join("catalog.d"),
        0,
        &[
            "--catalog-interval",
            "100ms",
            "--last-good",
            path.to_str().unwrap(),
        ],
    );
    server.wait_ready();
    let error = wait_for("the write error shown", Duration::from_secs(20), || {
        status(&server)["last_good"]["error"]
            .as_str()
            .map(String::from)
    });
    assert!(error.starts_with("cannot write"), "{error}");
    let envoy = Envoy::start(&dir, "a", server.xds_port, Mode::Delta);
    envoy.wait_live();
    http::wait_for_body(a_port, "a1");
    // Many polls later: the catalog was loaded once, the error logged once, and still shown.
    std::thread::sleep(Duration::from_secs(2));
    let log = server.process.output();
    assert_eq!(log.matches("catalog loaded").count(), 1, "{log}");
    assert_eq!(
        log.matches("last good catalog not written").count(),
        1,
        "{log}"
    );
    assert_eq!(server.metric("xds_catalog_loads_total{result=\"ok\"}"), 1.0);
    assert_eq!(status(&server)["last_good"]["error"], error.as_str());
    // Once it can be, it is written at the next poll, though the catalog did not change.
    std::fs::create_dir(dir.path().join("missing")).unwrap();
    wait_for("the document written", Duration::from_secs(20), || {
        status(&server)["last_good"]["digest"].as_str().map(drop)
    });
    let st = status(&server);
    assert!(st["last_good"]["error"].is_null(), "{st}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(doc["digest"], st["last_good"]["digest"]);
    assert!(doc["fragments"].get("a.yaml").is_some(), "{doc}");
    assert_eq!(server.process.output().matches("catalog loaded").count(), 1);
    http::wait_for_body(a_port, "a1");
}
