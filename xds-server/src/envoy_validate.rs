//! `xds-server validate --envoy ENVOY`: Envoy's own judgement of what a catalog renders, before
//! it is deployed, for whatever the catalog's own checks miss.
//!
//! Envoy's validate mode (`envoy --mode validate -c FILE`) checks a bootstrap, so each proxy's
//! resources become one: the generic Envoy's bootstrap ([`crate::bootstrap`], the one every
//! proxy really starts from, its `xds_cluster` included) with the proxy's listeners and clusters
//! as static resources. Route configurations, which arrive over RDS, are inlined into their
//! listener as `route_config`; EDS clusters become STATIC clusters holding the load assignment
//! they would be sent, or one placeholder endpoint when their source cannot be read offline
//! (Cloud Map, ECS; an endpoint file that is not there).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::bootstrap::{self, BootstrapConfig};
use crate::cache::Snapshot;
use crate::catalog::{LoadedCatalog, ProxyName};
use crate::discovery::offline_endpoints;
use crate::render::{RenderError, snapshot_json};
use crate::translate::{ResourceType, translate};

/// A resource as a bootstrap holds it: without its `@type`.
fn untyped(mut resource: Value) -> Value {
    if let Some(o) = resource.as_object_mut() {
        o.remove("@type");
    }
    resource
}

/// The bootstrap that holds `proxy`'s resources statically (see the module documentation).
pub fn bootstrap_for(catalog: &LoadedCatalog, proxy: &ProxyName) -> Result<Value, RenderError> {
    let endpoints = offline_endpoints(catalog);
    let snap = Snapshot::new(translate(&catalog.catalog, proxy, &endpoints));
    let snapshot = snapshot_json(&snap)?;
    // What an Envoy is sent: the wildcard of LDS and CDS leaves out what is made for
    // proxyless gRPC clients (`grpc_services`), which Envoy's validation has no part in.
    let named_only = |t: &str| {
        ResourceType::ALL
            .into_iter()
            .find(|rt| rt.short() == t)
            .map(|rt| &snap.of(rt).named_only)
    };
    let resources = |t: &str| -> Vec<Value> {
        let skip = named_only(t);
        snapshot[t]["resources"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(untyped)
            .filter(|r| {
                let name = r["name"].as_str().unwrap_or_default();
                skip.is_none_or(|skip| !skip.contains(name))
            })
            .collect()
    };
    let by_name = |t: &str, key: &str| -> BTreeMap<String, Value> {
        resources(t)
            .into_iter()
            .filter_map(|r| Some((r[key].as_str()?.to_string(), r)))
            .collect()
    };
    let routes = by_name("rds", "name");
    let assignments = by_name("eds", "cluster_name");

    let mut listeners: Vec<Value> = resources("lds");
    for listener in &mut listeners {
        let chains = listener["filter_chains"].as_array_mut();
        for filter in chains
            .into_iter()
            .flatten()
            .filter_map(|c| c["filters"].as_array_mut())
            .flatten()
        {
            let config = &mut filter["typed_config"];
            let Some(name) = config
                .get("rds")
                .and_then(|rds| rds["route_config_name"].as_str())
                .map(String::from)
            else {
                continue;
            };
            if let Some(o) = config.as_object_mut() {
                o.remove("rds");
                o.insert(
                    "route_config".into(),
                    routes
                        .get(&name)
                        .cloned()
                        .unwrap_or_else(|| json!({ "name": name })),
                );
            }
        }
    }

    let mut clusters = resources("cds");
    for cluster in &mut clusters {
        let Some(o) = cluster.as_object_mut() else {
            continue;
        };
        if o.remove("eds_cluster_config").is_none() && o.get("type") != Some(&json!("EDS")) {
            continue;
        }
        let name = o
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let port = catalog
            .catalog
            .upstreams
            .iter()
            .find(|(n, _)| n.0 == name)
            .and_then(|(_, u)| u.port)
            .filter(|p| (1..=65535).contains(p))
            .unwrap_or(80);
        let assignment = assignments.get(&name).cloned().unwrap_or_else(|| {
            json!({
                "cluster_name": name,
                "endpoints": [ { "lb_endpoints": [ { "endpoint": { "address": {
                    "socket_address": { "address": "127.0.0.1", "port_value": port }
                } } } ] } ],
            })
        });
        o.insert("type".into(), json!("STATIC"));
        o.insert("load_assignment".into(), assignment);
    }

    let mut doc = bootstrap::bootstrap(&BootstrapConfig {
        proxy: proxy.0.clone(),
        node_id: format!("{}-validate", proxy.0),
        zone: None,
        xds_host: "127.0.0.1".into(),
        xds_port: 18000,
        admin: "127.0.0.1:9901".parse().expect("a socket address"),
        stats_listen: None,
        delta: false,
        retry_max: std::time::Duration::from_secs(2),
        xds_ca: None,
        identity_dir: None,
        max_connections: bootstrap::MAX_CONNECTIONS,
    });
    let mut listeners = Value::Array(listeners);
    let mut clusters = Value::Array(clusters);
    // Secrets come over ADS at run time; here they are static secrets of the bootstrap (a
    // throwaway certificate, or a CA): Envoy's validation cannot follow SDS on ADS.
    let mut secrets = BTreeMap::new();
    static_secrets(&mut listeners, &mut secrets);
    static_secrets(&mut clusters, &mut secrets);
    let statics = &mut doc["static_resources"];
    if let (Some(own), Value::Array(clusters)) = (statics["clusters"].as_array_mut(), clusters) {
        own.extend(clusters);
    }
    statics["listeners"] = listeners;
    if !secrets.is_empty() {
        statics["secrets"] = Value::Array(placeholder_secrets(&secrets));
    }
    Ok(doc)
}

/// Replaces every SDS reference below `v` by one to a static secret of the same name, and
/// notes its name: `true` for a certificate, `false` for a trust bundle.
fn static_secrets(v: &mut Value, found: &mut BTreeMap<String, bool>) {
    match v {
        Value::Object(o) => {
            for (key, certificate) in [
                ("tls_certificate_sds_secret_configs", true),
                ("validation_context_sds_secret_config", false),
            ] {
                let mut refs: Vec<&mut Value> = match o.get_mut(key) {
                    Some(Value::Array(a)) => a.iter_mut().collect(),
                    Some(one @ Value::Object(_)) => vec![one],
                    _ => Vec::new(),
                };
                for r in refs.iter_mut() {
                    if let Some(r) = r.as_object_mut() {
                        r.remove("sds_config");
                        if let Some(name) = r.get("name").and_then(Value::as_str) {
                            found.insert(name.to_string(), certificate);
                        }
                    }
                }
            }
            for child in o.values_mut() {
                static_secrets(child, found);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| static_secrets(c, found)),
        _ => {}
    }
}

/// Static secrets standing in for `names`: one throwaway CA and a certificate it signed.
fn placeholder_secrets(names: &BTreeMap<String, bool>) -> Vec<Value> {
    let Ok(ca) = crate::ca::Ca::generate("xds-server validate") else {
        return Vec::new();
    };
    let Ok(leaf) = ca.issue(&crate::ca::Leaf {
        names: vec!["validate.invalid".into()],
        server: true,
        client: true,
        ttl: std::time::Duration::from_secs(3600),
        ..Default::default()
    }) else {
        return Vec::new();
    };
    names
        .iter()
        .map(|(name, certificate)| {
            if *certificate {
                json!({ "name": name, "tls_certificate": {
                    "certificate_chain": { "inline_string": leaf.certificate_pem },
                    "private_key": { "inline_string": leaf.private_key_pem },
                } })
            } else {
                json!({ "name": name, "validation_context": {
                    "trusted_ca": { "inline_string": ca.certificate_pem() },
                } })
            }
        })
        .collect()
}

/// Envoy's verdict on one proxy: `Ok`, or what it said.
pub type Verdict = Result<(), String>;

/// Runs `envoy --mode validate` on the bootstrap of every proxy of the catalog (a few at a time),
/// in proxy order. Each Envoy runs with `--disable-hot-restart`, so they never share a base id.
pub fn validate_all(envoy: &Path, catalog: &LoadedCatalog) -> Vec<(ProxyName, Verdict)> {
    let proxies: Vec<&ProxyName> = catalog.catalog.proxies.keys().collect();
    let mut verdicts: Vec<(ProxyName, Verdict)> = Vec::with_capacity(proxies.len());
    // A fresh directory of an unpredictable name (mode 0700), removed when done: nobody can
    // plant a file or a link where the bootstraps go.
    let dir = match tempfile::Builder::new()
        .prefix("xds-server-validate-")
        .tempdir()
    {
        Ok(d) => d,
        Err(e) => {
            let why = format!("cannot create a temporary directory: {e}");
            return proxies
                .into_iter()
                .map(|p| (p.clone(), Err(why.clone())))
                .collect();
        }
    };
    let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
    for batch in proxies.chunks(parallel) {
        std::thread::scope(|scope| {
            let running: Vec<_> = batch
                .iter()
                .enumerate()
                .map(|(i, proxy)| {
                    let file = dir.path().join(format!("{i}.json"));
                    scope.spawn(move || {
                        ((*proxy).clone(), validate_one(envoy, catalog, proxy, &file))
                    })
                })
                .collect();
            for r in running {
                verdicts.push(r.join().expect("a validation thread does not panic"));
            }
        });
    }
    verdicts
}

/// How long one Envoy may take to validate a bootstrap before it is killed.
const ENVOY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs `cmd` to its end, or kills it after `deadline`; its output is read as it comes, so a
/// chatty child never blocks on a full pipe.
fn run_with_deadline(
    mut cmd: Command,
    deadline: std::time::Duration,
) -> std::io::Result<(std::process::ExitStatus, String)> {
    use std::io::Read;
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let out = read(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = read(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {}s; killed", deadline.as_secs()),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let text = format!(
        "{}{}",
        err.join().unwrap_or_default(),
        out.join().unwrap_or_default()
    );
    Ok((status, text))
}

fn validate_one(
    envoy: &Path,
    catalog: &LoadedCatalog,
    proxy: &ProxyName,
    file: &PathBuf,
) -> Verdict {
    let doc = bootstrap_for(catalog, proxy).map_err(|e| e.to_string())?;
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    std::fs::write(file, text).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    let mut cmd = Command::new(envoy);
    cmd.args(["--mode", "validate", "--disable-hot-restart"])
        .args(["--log-level", "error", "--log-format", "%v"])
        .arg("-c")
        .arg(file);
    let (status, said) = run_with_deadline(cmd, ENVOY_DEADLINE)
        .map_err(|e| format!("cannot run {}: {e}", envoy.display()))?;
    if status.success() {
        return Ok(());
    }
    Err(reason(&said, file).unwrap_or_else(|| {
        let text = said.trim();
        if text.is_empty() {
            format!("envoy exited with {status}")
        } else {
            text.to_string()
        }
    }))
}

/// What Envoy's validate mode says is wrong with `file`, from its output: the text after
/// `error initializing configuration 'FILE': `. A failed proto constraint comes after a dump of
/// the whole configuration (`goo.gle/debug… <config>\n: Proto constraint validation failed …`):
/// only the constraint is kept.
fn reason(output: &str, file: &Path) -> Option<String> {
    let prefix = format!("error initializing configuration '{}': ", file.display());
    let rest = &output[output.find(&prefix)? + prefix.len()..];
    let rest = match rest.rfind("\n: ") {
        Some(i) => &rest[i + 3..],
        None => rest,
    };
    Some(rest.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;

    #[test]
    fn envoys_reason_is_found_in_its_output() {
        let file = Path::new("/tmp/v/0.json");
        let plain =
            "error initializing configuration '/tmp/v/0.json': invalid perl operator: (?x\n";
        assert_eq!(
            reason(plain, file).as_deref(),
            Some("invalid perl operator: (?x")
        );
        let proto = "error initializing configuration '/tmp/v/0.json': goo.gle/debugonly  \n\
            static_resources {\n  clusters {\n    name: \"c\"\n  }\n}\n\
            : Proto constraint validation failed (ClusterValidationError.ConnectTimeout: value must be greater than 0s)\n";
        assert_eq!(
            reason(proto, file).as_deref(),
            Some(
                "Proto constraint validation failed (ClusterValidationError.ConnectTimeout: value must be greater than 0s)"
            )
        );
        assert_eq!(reason("Segmentation fault", file), None);
    }

    #[test]
    fn routes_are_inlined_and_eds_clusters_made_static() {
        let dir = common::files::scratch_dir("xds-envoy-validate");
        std::fs::write(dir.join("web.json"), r#"["10.0.0.7:8080"]"#).unwrap();
        let text = r#"
version: 1
proxies:
  edge:
    listeners:
      - { name: web, port: 8080, protocol: http, routes: [ { match: { prefix: /a }, to: files }, { match: { prefix: / }, to: tasks } ] }
      - { name: raw, port: 9000, protocol: tcp, to: fixed }
upstreams:
  files: { protocol: http1, endpoints: { file: web.json } }
  tasks: { protocol: grpc, port: 50051, endpoints: { ecs: { cluster: c, service: s } } }
  fixed: { protocol: tcp, endpoints: { static: ["10.0.0.9:9000"] } }
"#;
        let loaded = LoadedCatalog {
            catalog: catalog::parse("c.yaml", text).unwrap(),
            base_dir: dir.clone(),
        };
        let doc = bootstrap_for(&loaded, &ProxyName("edge".into())).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let statics = &doc["static_resources"];
        let listener = statics["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == "web")
            .unwrap();
        let hcm = &listener["filter_chains"][0]["filters"][0]["typed_config"];
        assert!(hcm.get("rds").is_none(), "{hcm}");
        assert_eq!(hcm["route_config"]["name"], "web");
        assert!(hcm["route_config"].get("@type").is_none());
        assert!(listener.get("@type").is_none());
        let cluster = |name: &str| {
            statics["clusters"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == name)
                .unwrap_or_else(|| panic!("no cluster {name}: {statics}"))
                .clone()
        };
        let address = |c: &Value| {
            c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["socket_address"]
                .clone()
        };
        // The bootstrap's own cluster stays: a catalog upstream of its name would clash.
        assert_eq!(cluster("xds_cluster")["type"], "STATIC");
        let files = cluster("files");
        assert_eq!(files["type"], "STATIC");
        assert!(files.get("eds_cluster_config").is_none());
        assert_eq!(address(&files)["address"], "10.0.0.7");
        // ECS is not asked: a placeholder on the upstream's port.
        let tasks = cluster("tasks");
        assert_eq!(
            address(&tasks),
            json!({ "address": "127.0.0.1", "port_value": 50051 })
        );
        assert_eq!(address(&cluster("fixed"))["port_value"], 9000);
    }
}
