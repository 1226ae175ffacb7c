//! xds-server on AWS, against moto_server and a real Envoy: endpoints from Cloud Map and ECS,
//! the catalog from S3, an AWS outage and throttling.

use std::ffi::OsStr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aws_sdk_servicediscovery::types::{CustomHealthStatus, HealthCheckCustomConfig};
use tests::process::Envoy;
use tests::throttle::Throttler;
use tests::{Backend, Mode, Moto, TempDir, XdsServer, free_port, http, wait_for};

const NAMESPACE: &str = "prism-test.atala.local";
const PROXY: &str = "edge";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn cloud_map_client(endpoint: &str) -> aws_sdk_servicediscovery::Client {
    let config = aws_sdk_servicediscovery::Config::builder()
        .behavior_version(aws_sdk_servicediscovery::config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_sdk_servicediscovery::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_servicediscovery::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .build();
    aws_sdk_servicediscovery::Client::from_conf(config)
}

/// A Cloud Map namespace and service in moto, and helpers to change its instances.
struct CloudMap {
    client: aws_sdk_servicediscovery::Client,
    service_id: String,
    rt: tokio::runtime::Runtime,
}

impl CloudMap {
    fn create(moto: &Moto, service: &str) -> CloudMap {
        let client = cloud_map_client(&format!("http://moto.test:{}", moto.port));
        let rt = rt();
        let service_id = rt.block_on(async {
            let op = client
                .create_private_dns_namespace()
                .name(NAMESPACE)
                .vpc("vpc-12345")
                .send()
                .await
                .expect("namespace created");
            let op = client
                .get_operation()
                .operation_id(op.operation_id().unwrap())
                .send()
                .await
                .unwrap();
            let ns_id = op.operation().unwrap().targets().unwrap()
                [&aws_sdk_servicediscovery::types::OperationTargetType::Namespace]
                .clone();
            client
                .create_service()
                .name(service)
                .namespace_id(ns_id)
                .health_check_custom_config(HealthCheckCustomConfig::builder().build())
                .send()
                .await
                .expect("service created")
                .service()
                .unwrap()
                .id()
                .unwrap()
                .to_string()
        });
        CloudMap {
            client,
            service_id,
            rt,
        }
    }

    fn register(&self, id: &str, backend: &Backend) {
        self.register_with(id, backend, &[]);
    }

    fn register_with(&self, id: &str, backend: &Backend, attributes: &[(&str, &str)]) {
        let mut req = self
            .client
            .register_instance()
            .service_id(&self.service_id)
            .instance_id(id)
            .attributes("AWS_INSTANCE_IPV4", "127.0.0.1")
            .attributes("AWS_INSTANCE_PORT", backend.addr.port().to_string());
        for (k, v) in attributes {
            req = req.attributes(*k, *v);
        }
        self.rt.block_on(req.send()).expect("instance registered");
    }

    fn deregister(&self, id: &str) {
        self.rt
            .block_on(
                self.client
                    .deregister_instance()
                    .service_id(&self.service_id)
                    .instance_id(id)
                    .send(),
            )
            .expect("instance deregistered");
    }

    fn set_health(&self, id: &str, healthy: bool) {
        let status = if healthy {
            CustomHealthStatus::Healthy
        } else {
            CustomHealthStatus::Unhealthy
        };
        self.rt
            .block_on(
                self.client
                    .update_instance_custom_health_status()
                    .service_id(&self.service_id)
                    .instance_id(id)
                    .status(status)
                    .send(),
            )
            .expect("health updated");
    }
}

fn cloud_map_catalog(port: u16, service: &str) -> String {
    format!(
        r#"
version: 1
proxies:
  {PROXY}:
    listeners:
      - {{ name: web, address: 127.0.0.1, port: {port}, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: web }} ] }}
upstreams:
  web:
    protocol: http1
    endpoints: {{ cloud_map: {{ namespace: {NAMESPACE}, service: {service} }} }}
"#
    )
}

/// The set of backends answering `n` requests through Envoy.
fn answering(port: u16, n: usize) -> std::collections::BTreeSet<String> {
    (0..n)
        .filter_map(|_| http::get(port, "/", &[]).ok())
        .filter(|r| r.status == 200)
        .map(|r| r.body.trim().to_string())
        .collect()
}

fn wait_answering(port: u16, want: &[&str]) {
    let want: std::collections::BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    wait_for(
        &format!("exactly {want:?} to answer"),
        Duration::from_secs(20),
        || (answering(port, 20) == want).then_some(()),
    );
}

/// xds-server on `catalog` (a path or `s3://`), polling AWS every 200ms, with `env` (moto's).
fn start_server(
    dir: &TempDir,
    env: &[(&str, String)],
    catalog: &OsStr,
    extra: &[&str],
) -> XdsServer {
    let mut args = vec!["--discovery-interval", "200ms"];
    args.extend_from_slice(extra);
    let server = XdsServer::start_env(dir, catalog, 0, &args, env);
    server.wait_ready();
    server
}

/// xds-server and a live Envoy of role PROXY behind it.
fn serve_and_proxy(
    dir: &TempDir,
    env: &[(&str, String)],
    catalog: &OsStr,
    extra: &[&str],
    mode: Mode,
) -> (XdsServer, Envoy) {
    let server = start_server(dir, env, catalog, extra);
    let envoy = Envoy::start(dir, PROXY, server.xds_port, mode);
    envoy.wait_live();
    (server, envoy)
}

/// Backends `a` and `b`, registered as instances i-a and i-b of Cloud Map service `web`.
fn web_with_a_and_b(moto: &Moto) -> (Backend, Backend, CloudMap) {
    let (a, b) = (
        Backend::start("a", 0).unwrap(),
        Backend::start("b", 0).unwrap(),
    );
    let cm = CloudMap::create(moto, "web");
    cm.register("i-a", &a);
    cm.register("i-b", &b);
    (a, b, cm)
}

#[test]
fn cloud_map_instances_become_envoy_endpoints() {
    let dir = TempDir::new("cloudmap");
    let moto = Moto::start(&dir, 0);
    let (_a, b, cm) = web_with_a_and_b(&moto);
    let port = free_port();
    let catalog = dir.write("catalog.yaml", &cloud_map_catalog(port, "web"));
    let (server, _envoy) = serve_and_proxy(&dir, &moto.env(), catalog.as_os_str(), &[], Mode::Sotw);
    wait_answering(port, &["a", "b"]);
    // Deregistered: Envoy stops sending to it.
    cm.deregister("i-b");
    wait_answering(port, &["a"]);
    // Back, then marked unhealthy (custom health): left out with the default `health: healthy`.
    cm.register("i-b", &b);
    wait_answering(port, &["a", "b"]);
    cm.set_health("i-b", false);
    wait_answering(port, &["a"]);
    assert!(
        server.metric(
            "xds_discovery_requests_total{kind=\"cloud_map\",operation=\"DiscoverInstances\"}"
        ) > 0.0
    );
}

#[test]
fn cloud_map_attributes_filter_and_health_all_keeps_unhealthy_instances() {
    let dir = TempDir::new("cloudmap-attrs");
    let moto = Moto::start(&dir, 0);
    let (a, b, c) = (
        Backend::start("a", 0).unwrap(),
        Backend::start("b", 0).unwrap(),
        Backend::start("c", 0).unwrap(),
    );
    let cm = CloudMap::create(&moto, "web");
    cm.register_with("i-a", &a, &[("stage", "blue")]);
    // ECS registers a task's zone as AVAILABILITY_ZONE.
    cm.register_with(
        "i-b",
        &b,
        &[("stage", "green"), ("AVAILABILITY_ZONE", "us-east-1b")],
    );
    cm.register_with("i-c", &c, &[("stage", "green")]);
    cm.set_health("i-c", false);
    let port = free_port();
    // Zone-aware: the upstream whose endpoints reach Envoy with their zones.
    let text = cloud_map_catalog(port, "web")
        .replace(
            "service: web }",
            "service: web, health: all, attributes: { stage: green } }",
        )
        .replace(
            "    protocol: http1\n",
            "    protocol: http1\n    zone_aware: true\n",
        );
    assert!(text.contains("zone_aware"));
    let catalog = dir.write("catalog.yaml", &text);
    let (server, envoy) = serve_and_proxy(&dir, &moto.env(), catalog.as_os_str(), &[], Mode::Sotw);
    // Only the green ones, the unhealthy one included (`health: all`).
    wait_answering(port, &["b", "c"]);
    // Envoy knows the zone of the instance that names one, and none of the other.
    let clusters = http::get(envoy.admin_port, "/clusters", &[]).unwrap().body;
    let zone_of = |backend: &Backend| {
        let key = format!("::{}::zone::", backend.endpoint());
        clusters
            .lines()
            .find_map(|l| Some(l.split_once(&key)?.1.trim().to_string()))
            .unwrap_or_else(|| panic!("no {key:?} in\n{clusters}"))
    };
    assert_eq!(zone_of(&b), "us-east-1b");
    assert_eq!(zone_of(&c), "");
    cm.deregister("i-b");
    wait_answering(port, &["c"]);
    // With `health: all` the revision tells when to look again.
    assert!(server.metric("xds_discovery_requests_total{kind=\"cloud_map\",operation=\"DiscoverInstancesRevision\"}") > 0.0);
}

#[test]
fn envoy_keeps_serving_while_aws_is_down_and_updates_resume() {
    let dir = TempDir::new("outage");
    let mut moto = Moto::start(&dir, 0);
    let (_a, b, _cm) = web_with_a_and_b(&moto);
    let port = free_port();
    let catalog = dir.write("catalog.yaml", &cloud_map_catalog(port, "web"));
    let (server, _envoy) =
        serve_and_proxy(&dir, &moto.env(), catalog.as_os_str(), &[], Mode::Delta);
    wait_answering(port, &["a", "b"]);
    let moto_port = moto.port;
    moto.process.kill();
    wait_for("errors to be counted", Duration::from_secs(60), || {
        (server.metric("xds_discovery_errors_total{kind=\"cloud_map\",reason=\"error\"}") >= 2.0)
            .then_some(())
    });
    // Traffic keeps flowing to both, and the last good endpoints are still served.
    assert_eq!(
        answering(port, 20),
        ["a", "b"].iter().map(|s| s.to_string()).collect()
    );
    let sources = server.admin_json("/debug/endpoints");
    let src = &sources.as_array().unwrap()[0];
    assert_eq!(src["endpoints"].as_array().unwrap().len(), 2, "{sources}");
    assert!(!src["last_error"].is_null(), "{sources}");
    // moto back (empty after its restart) with only one instance: the update goes through.
    moto = Moto::start(&dir, moto_port);
    let cm = CloudMap::create(&moto, "web");
    cm.register("i-b", &b);
    wait_answering(port, &["b"]);
    // The outage is in the log when it started and when it ended, not at every failed poll.
    let log = server.process.output();
    let count = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    assert_eq!(count("discovery answers again"), 1, "{log}");
    let failed = count("discovery failed");
    assert!(
        (1..=2).contains(&failed),
        "{failed} failure lines for one outage:\n{log}"
    );
}

#[test]
fn throttling_backs_off_without_losing_endpoints() {
    // One series per source, named by its description.
    const BACKOFF: &str = "xds_discovery_backoff_seconds{kind=\"cloud_map\",source=\"cloud_map prism-test.atala.local/web\"}";
    let dir = TempDir::new("throttle");
    let moto = Moto::start(&dir, 0);
    let (_a, _b, cm) = web_with_a_and_b(&moto);
    let throttler = Throttler::start(moto.port);
    let port = free_port();
    let catalog = dir.write("catalog.yaml", &cloud_map_catalog(port, "web"));
    let mut env = moto.env();
    for (k, v) in env.iter_mut() {
        if *k == "AWS_ENDPOINT_URL_SERVICEDISCOVERY" {
            *v = format!("http://moto.test:{}", throttler.port);
        }
    }
    let (server, _envoy) = serve_and_proxy(
        &dir,
        &env,
        catalog.as_os_str(),
        &["--max-backoff", "3s"],
        Mode::Sotw,
    );
    wait_answering(port, &["a", "b"]);
    throttler.throttle.store(true, Ordering::Relaxed);
    wait_for(
        "throttling to be counted and backed off",
        Duration::from_secs(60),
        || {
            let throttled = server
                .metric("xds_discovery_errors_total{kind=\"cloud_map\",reason=\"throttled\"}");
            let backoff = server.metric(BACKOFF);
            (throttled >= 2.0 && backoff >= 0.8).then_some(())
        },
    );
    assert_eq!(
        answering(port, 20),
        ["a", "b"].iter().map(|s| s.to_string()).collect()
    );
    throttler.throttle.store(false, Ordering::Relaxed);
    wait_for("the backoff to end", Duration::from_secs(30), || {
        (server.metric(BACKOFF) == 0.0).then_some(())
    });
    cm.deregister("i-a");
    wait_answering(port, &["b"]);
}

#[test]
fn the_catalog_follows_s3_and_an_invalid_upload_is_refused() {
    let dir = TempDir::new("s3catalog");
    let moto = Moto::start(&dir, 0);
    let (blue, green) = (
        Backend::start("blue", 0).unwrap(),
        Backend::start("green", 0).unwrap(),
    );
    let port = free_port();
    let catalog = |to: &str| {
        format!(
            r#"
version: 1
proxies:
  {PROXY}:
    listeners:
      - {{ name: web, address: 127.0.0.1, port: {port}, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: {to} }} ] }}
upstreams:
  blue: {{ protocol: http1, endpoints: {{ static: ["{}"] }} }}
  green: {{ protocol: http1, endpoints: {{ static: ["{}"] }} }}
"#,
            blue.endpoint(),
            green.endpoint()
        )
    };
    let rt = rt();
    let s3 = moto.s3();
    let put = |text: String| {
        rt.block_on(
            s3.put_object()
                .bucket("config")
                .key("xds/catalog.yaml")
                .body(text.into_bytes().into())
                .send(),
        )
        .expect("catalog uploaded");
    };
    rt.block_on(s3.create_bucket().bucket("config").send())
        .unwrap();
    put(catalog("blue"));
    let (server, _envoy) = serve_and_proxy(
        &dir,
        &moto.env(),
        OsStr::new("s3://config/xds/catalog.yaml"),
        &["--catalog-interval", "200ms"],
        Mode::Delta,
    );
    wait_answering(port, &["blue"]);
    put(catalog("green"));
    wait_answering(port, &["green"]);
    server.expect_catalog_refused(|| put(catalog("purple")));
    let ready = server.admin_json("/readyz");
    let why = ready["catalog"]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        why.starts_with("s3://config/xds/catalog.yaml: 1 error"),
        "{ready}"
    );
    assert!(why.contains(r#"upstream "purple" is not defined"#), "{why}");
    assert!(server.process.output().contains("catalog rejected"));
    assert_eq!(
        answering(port, 20),
        ["green".to_string()].into_iter().collect()
    );

    // validate and render read the same location as serve, and say the same of it.
    let tool = |args: &[&str]| {
        let out = std::process::Command::new(tests::workspace_bin("xds-server"))
            .args(args)
            .envs(moto.env())
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let location = "s3://config/xds/catalog.yaml";
    let (code, _, err) = tool(&["validate", location]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.starts_with("s3://config/xds/catalog.yaml: 1 error")
            && err.contains(r#"upstream "purple" is not defined"#),
        "{err}"
    );
    put(catalog("blue"));
    let (code, out, err) = tool(&["validate", location]);
    assert_eq!((code, out.trim()), (Some(0), "ok"), "{err}");
    let (code, out, err) = tool(&["render", "--catalog", location, "--proxy", PROXY]);
    assert_eq!(code, Some(0), "{err}");
    let blue_port = blue.endpoint().rsplit_once(':').unwrap().1.to_string();
    assert!(
        out.contains(&format!("\"port_value\": {blue_port}")),
        "blue's endpoint: {out}"
    );
}

#[test]
fn a_catalog_prefix_merges_each_services_fragment_and_follows_uploads_and_deletions() {
    let dir = TempDir::new("s3prefix");
    let moto = Moto::start(&dir, 0);
    let (blue, green) = (
        Backend::start("blue", 0).unwrap(),
        Backend::start("green", 0).unwrap(),
    );
    let (edge_port, shop_port) = (free_port(), free_port());
    let fragment = |proxy: &str, port: u16, upstream: &str, backend: &Backend| {
        format!(
            r#"
version: 1
proxies:
  {proxy}:
    listeners:
      - {{ name: web, address: 127.0.0.1, port: {port}, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: {upstream} }} ] }}
upstreams:
  {upstream}: {{ protocol: http1, endpoints: {{ static: ["{}"] }} }}
"#,
            backend.endpoint()
        )
    };
    let rt = rt();
    let s3 = moto.s3();
    let put = |key: &str, text: String| {
        rt.block_on(
            s3.put_object()
                .bucket("config")
                .key(key)
                .body(text.into_bytes().into())
                .send(),
        )
        .expect("fragment uploaded");
    };
    rt.block_on(s3.create_bucket().bucket("config").send())
        .unwrap();
    put(
        "xds/catalog.d/edge.yaml",
        fragment(PROXY, edge_port, "blue", &blue),
    );
    put("xds/catalog.d/README.txt", "not a catalog".into());
    let (server, edge) = serve_and_proxy(
        &dir,
        &moto.env(),
        OsStr::new("s3://config/xds/catalog.d/"),
        &["--catalog-interval", "200ms"],
        Mode::Delta,
    );
    wait_answering(edge_port, &["blue"]);

    // Another service's fragment that takes an upstream name edge.yaml owns is refused alone,
    // naming the owner; edge keeps its upstream.
    server.expect_catalog_refused(|| {
        put(
            "xds/catalog.d/shop.yaml",
            fragment("shop", shop_port, "blue", &green),
        )
    });
    let ready = server.admin_json("/readyz");
    let why = ready["catalog"]["last_error"].as_str().unwrap_or_default();
    assert_eq!(
        why,
        "s3://config/xds/catalog.d/: 1 fragment refused (each keeps its last good version, if any)\n  shop.yaml: upstreams.blue: already defined in edge.yaml",
        "{ready}"
    );
    let refused = &ready["catalog"]["refused_fragments"]["shop.yaml"];
    assert_eq!(
        refused["error"],
        "upstreams.blue: already defined in edge.yaml"
    );
    assert_eq!(refused["serving"], serde_json::Value::Null, "{ready}");
    assert_eq!(answering(edge_port, 10), ["blue".to_string()].into());

    // Fixed, it joins the catalog and its own proxy is served.
    put(
        "xds/catalog.d/shop.yaml",
        fragment("shop", shop_port, "green", &green),
    );
    let shop = Envoy::start(&dir, "shop", server.xds_port, Mode::Sotw);
    shop.wait_live();
    wait_answering(shop_port, &["green"]);

    // Dropping a service's deployment deletes its fragment first: its Envoys, still draining,
    // keep their config (the role is orphaned) until the last of them is gone.
    rt.block_on(
        s3.delete_object()
            .bucket("config")
            .key("xds/catalog.d/edge.yaml")
            .send(),
    )
    .expect("fragment deleted");
    wait_for(
        "the edge role to be orphaned",
        Duration::from_secs(20),
        || {
            let config = server.admin_json("/debug/config");
            (config["orphaned"] == serde_json::json!([PROXY])).then_some(())
        },
    );
    assert_eq!(answering(edge_port, 10), ["blue".to_string()].into());
    assert_eq!(answering(shop_port, 10), ["green".to_string()].into());
    drop(edge);
    wait_for(
        "the edge role to be forgotten",
        Duration::from_secs(20),
        || {
            let config = server.admin_json("/debug/config");
            (config["orphaned"] == serde_json::json!([])).then_some(())
        },
    );

    // The last fragment gone too: an emptied prefix is refused, the last good catalog stays.
    server.expect_catalog_refused(|| {
        rt.block_on(
            s3.delete_object()
                .bucket("config")
                .key("xds/catalog.d/shop.yaml")
                .send(),
        )
        .expect("fragment deleted");
    });
    let ready = server.admin_json("/readyz");
    let why = ready["catalog"]["last_error"].as_str().unwrap_or_default();
    assert!(why.contains("lists no catalog files any more"), "{ready}");
    assert_eq!(answering(shop_port, 10), ["green".to_string()].into());
}

#[test]
fn ecs_tasks_become_endpoints_and_stopped_tasks_leave() {
    let dir = TempDir::new("ecs");
    let moto = Moto::start_ecs(&dir, 0, "");
    let fixture = |args: &[&str]| -> Vec<String> {
        moto.fixture("ecs_tasks.py", args)
            .lines()
            .map(String::from)
            .collect()
    };
    // The first line is a task of another service in the same cluster.
    let tasks = fixture(&["service", "node-develop", "2", "50053"]);
    assert_eq!(tasks.len(), 3);
    let text = r#"
version: 1
proxies:
  edge:
    listeners:
      - { name: grpc, address: 127.0.0.1, port: 8443, protocol: http, routes: [ { match: { prefix: / }, to: node } ] }
upstreams:
  node:
    protocol: grpc
    zone_aware: true
    endpoints: { ecs: { cluster: prism-test, service: node-develop, container: app } }
"#;
    let catalog = dir.write("catalog.yaml", text);
    let server = start_server(&dir, &moto.env(), catalog.as_os_str(), &[]);
    // The endpoints are the tasks' ENI addresses with the task definition's container port.
    // (These 10.99.x.x addresses exist only in moto: no Envoy is pointed at them.)
    let endpoints = || -> Vec<String> {
        let config = server.admin_json("/debug/config?proxy=edge");
        let mut eps: Vec<String> = config["eds"]["resources"][0]["endpoints"][0]["lb_endpoints"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        let sa = &e["endpoint"]["address"]["socket_address"];
                        format!(
                            "{}:{}",
                            sa["address"].as_str().unwrap_or(""),
                            sa["port_value"]
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        eps.sort();
        eps
    };
    let two = wait_for("two task endpoints", Duration::from_secs(20), || {
        let eps = endpoints();
        (eps.len() == 2).then_some(eps)
    });
    assert!(
        two.iter()
            .all(|e| e.starts_with("10.") && e.ends_with(":50053")),
        "{two:?}"
    );
    // They carry their tasks' availabilityZone (the fixture's one subnet's zone) as locality
    // (the upstream is zone-aware).
    let config = server.admin_json("/debug/config?proxy=edge");
    let zone = config["eds"]["resources"][0]["endpoints"][0]["locality"]["zone"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        zone.len() > "us-east-1".len() && zone.starts_with("us-east-1"),
        "{config}"
    );
    // A stopped task leaves; a new one arrives.
    fixture(&["stop", &tasks[1]]);
    wait_for("the stopped task to leave", Duration::from_secs(20), || {
        (endpoints().len() == 1).then_some(())
    });
    fixture(&["run", "node-develop"]);
    wait_for("the new task to arrive", Duration::from_secs(20), || {
        (endpoints().len() == 2).then_some(())
    });
    assert!(
        server.metric(
            "xds_discovery_requests_total{kind=\"ecs\",operation=\"DescribeTaskDefinition\"}"
        ) >= 1.0
    );
}

/// A task whose task definition has a health check gets traffic only once ECS says it is
/// HEALTHY: in its start period (UNKNOWN) it is no endpoint. A task without a health check is an
/// endpoint while UNKNOWN, as before.
#[test]
fn ecs_a_health_checked_task_gets_no_traffic_until_it_is_healthy() {
    let dir = TempDir::new("ecs-health");
    let moto = Moto::start_ecs(&dir, 0, "127.0.0.1");
    let (a, b) = (
        Backend::start("a", 0).unwrap(),
        Backend::start("b", 0).unwrap(),
    );
    let fixture = |args: &[&str]| -> Vec<String> {
        moto.fixture("ecs_tasks.py", args)
            .lines()
            .map(String::from)
            .collect()
    };
    // Revision 1 (no health check) runs on a's port; revision 2 adds a health check and runs on
    // b's: a deployment in progress.
    let a_port = a.addr.port().to_string();
    let b_port = b.addr.port().to_string();
    let old = fixture(&["service", "web", "1", &a_port]);
    assert_eq!(old.len(), 2);
    fixture(&["revise", "web", &b_port]);
    let starting = fixture(&["run", "web"]).remove(0);
    let port = free_port();
    let text = format!(
        r#"
version: 1
proxies:
  {PROXY}:
    listeners:
      - {{ name: web, address: 127.0.0.1, port: {port}, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: web }} ] }}
upstreams:
  web:
    protocol: http1
    endpoints: {{ ecs: {{ cluster: prism-test, service: web, container: app }} }}
"#
    );
    let catalog = dir.write("catalog.yaml", &text);
    let (server, _envoy) = serve_and_proxy(&dir, &moto.env(), catalog.as_os_str(), &[], Mode::Sotw);
    let listed = || -> Vec<String> {
        let sources = server.admin_json("/debug/endpoints");
        let mut eps: Vec<String> = sources[0]["endpoints"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        eps.sort();
        eps
    };
    wait_answering(port, &["a"]);
    let polls =
        || server.metric("xds_discovery_requests_total{kind=\"ecs\",operation=\"DescribeTasks\"}");
    // Through several polls (every 200ms), the starting task gets nothing.
    let before = polls();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while polls() < before + 5.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the ECS source stopped polling"
        );
        assert_eq!(listed(), vec![a.endpoint()]);
        assert_eq!(answering(port, 10), ["a".to_string()].into());
    }
    assert_eq!(b.hits(), 0);
    // Its health check passed: it joins.
    fixture(&["health", &starting, "HEALTHY"]);
    wait_answering(port, &["a", "b"]);
    let mut both = vec![a.endpoint(), b.endpoint()];
    both.sort();
    assert_eq!(listed(), both);
    // And leaves when it fails.
    fixture(&["health", &starting, "UNHEALTHY"]);
    wait_answering(port, &["a"]);
    // One DescribeTaskDefinition per revision, however many polls.
    assert_eq!(
        server.metric(
            "xds_discovery_requests_total{kind=\"ecs\",operation=\"DescribeTaskDefinition\"}"
        ),
        2.0
    );
}

/// `health: healthy` is healthy-or-else-all: when every instance fails its health check at once,
/// all of them keep their traffic (as Envoy's panic routing would), and a metric says so.
#[test]
fn cloud_map_serves_every_instance_while_none_is_healthy_and_says_so() {
    const ALL_UNHEALTHY: &str = "xds_discovery_all_unhealthy{kind=\"cloud_map\",source=\"cloud_map prism-test.atala.local/web\"}";
    let dir = TempDir::new("cloudmap-unhealthy");
    let moto = Moto::start(&dir, 0);
    let (_a, _b, cm) = web_with_a_and_b(&moto);
    let port = free_port();
    let catalog = dir.write("catalog.yaml", &cloud_map_catalog(port, "web"));
    let (server, _envoy) = serve_and_proxy(&dir, &moto.env(), catalog.as_os_str(), &[], Mode::Sotw);
    wait_answering(port, &["a", "b"]);
    assert_eq!(server.metric(ALL_UNHEALTHY), 0.0);
    cm.set_health("i-a", false);
    wait_answering(port, &["b"]);
    // The last healthy one fails too: both are served again, and the metric says why.
    cm.set_health("i-b", false);
    wait_answering(port, &["a", "b"]);
    wait_for("the all-unhealthy gauge", Duration::from_secs(10), || {
        (server.metric(ALL_UNHEALTHY) == 1.0).then_some(())
    });
    assert!(
        server
            .process
            .output()
            .contains("no instance is healthy; serving all of them until one is")
    );
    // One recovers: only it.
    cm.set_health("i-a", true);
    wait_answering(port, &["a"]);
    assert_eq!(server.metric(ALL_UNHEALTHY), 0.0);
}

/// An answer with no instances after some (a namespace emptied by mistake, a deregistration
/// script run against the wrong service) is believed only when the next poll says the same.
#[test]
fn cloud_map_an_empty_answer_is_held_for_one_poll_before_it_is_believed() {
    let dir = TempDir::new("cloudmap-empty");
    let moto = Moto::start(&dir, 0);
    let (_a, _b, cm) = web_with_a_and_b(&moto);
    let port = free_port();
    let catalog = dir.write("catalog.yaml", &cloud_map_catalog(port, "web"));
    // Polls two seconds apart, so the held poll can be seen.
    let (server, _envoy) = serve_and_proxy(
        &dir,
        &moto.env(),
        catalog.as_os_str(),
        &["--discovery-interval", "2s"],
        Mode::Sotw,
    );
    wait_answering(port, &["a", "b"]);
    cm.deregister("i-a");
    cm.deregister("i-b");
    wait_for("the held empty answer", Duration::from_secs(10), || {
        server
            .process
            .output()
            .contains(
                "the source answered with no endpoints; keeping the last ones for one more poll",
            )
            .then_some(())
    });
    // Still served after the first empty answer ...
    let sources = server.admin_json("/debug/endpoints");
    assert_eq!(
        sources[0]["endpoints"].as_array().map(Vec::len),
        Some(2),
        "{sources}"
    );
    // ... and emptied after the second.
    wait_for(
        "the empty answer to be believed",
        Duration::from_secs(10),
        || {
            let sources = server.admin_json("/debug/endpoints");
            (sources[0]["endpoints"].as_array().map(Vec::len) == Some(0)).then_some(())
        },
    );
    assert!(
        server
            .process
            .output()
            .contains("the source answered with no endpoints again; it has none now")
    );
}
