//! The files infra/ hands to running programs, checked by those programs: the generic Envoy's
//! bootstrap template (Envoy), the intdemo catalog fragment (xds-server), the rendered
//! Prometheus configuration (promtool) and the Grafana dashboards' queries (against the metrics
//! a real Envoy and xds-server export), and the command envoy-service runs to validate its
//! fragment before the upload (xds-server against moto's S3). Terraform templates are rendered
//! as Terraform renders them (hcl-rs evaluates the same template language).

use std::path::Path;
use std::process::Command;

use hcl::eval::{Context, Evaluate};
use std::collections::BTreeSet;

use tests::process::envoy_bin;
use tests::{Backend, Envoy, Mode, TempDir, XdsServer, free_port, http, repo_root, workspace_bin};

/// Renders a Terraform template file (`templatefile`) with string variables.
fn templatefile(path: &Path, vars: &[(&str, hcl::Value)]) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let template: hcl::Template = text
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut ctx = Context::new();
    for (name, value) in vars {
        ctx.declare_var(*name, value.clone());
    }
    template
        .evaluate(&ctx)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The identity directory the generic image's entrypoint uses by default: identity/ beside the
/// default bootstrap. The identity template names it.
const IDENTITY_DIR: &str = "/etc/envoy/identity";

/// The templates the xds-server module publishes (without identities, and with) are exactly
/// what `xds-server bootstrap` writes with the placeholders s3-config-loader fills in, as the
/// envoy-service init container runs it, and once filled in, Envoy accepts them.
#[test]
fn the_published_envoy_bootstrap_templates_are_the_generators_and_envoy_accepts_them() {
    let dir = TempDir::new("bootstrap-template");
    for (file, extra) in [
        ("envoy-bootstrap.yaml.tmpl", &[][..]),
        (
            "envoy-bootstrap-identity.yaml.tmpl",
            &["--identity-dir", IDENTITY_DIR][..],
        ),
    ] {
        let path = repo_root()
            .join("infra/modules/xds-server/files")
            .join(file);
        let committed = std::fs::read_to_string(&path).unwrap();
        let out = Command::new(workspace_bin("xds-server"))
            .args([
                "bootstrap",
                "--proxy",
                "${PROXY}",
                "--node-id",
                "${ecs.TaskARN}",
                "--xds",
                "${XDS_HOST}:18000",
                "--stats-listen",
                "0.0.0.0:9902",
            ])
            .args(extra)
            .output()
            .unwrap();
        // Only stdout: the identity files are not there when the template is made, which
        // bootstrap warns about on stderr.
        let (ok, generated) = (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        );

        assert!(ok, "{generated}");
        assert_eq!(
            committed,
            generated,
            "{} is stale: regenerate it with the command in this test",
            path.display()
        );
        check_template_names(&committed);
        // Filled in as s3-config-loader fills it in; the identity files where a task has them
        // (here in the test's directory, with the test CA's certificate and key in them).
        let identity = dir.path().join(file).with_extension("identity");
        let rendered = committed
            .replace("${PROXY}", "intdemo-develop")
            .replace(
                "${ecs.TaskARN}",
                "arn:aws:ecs:us-east-2:123456789012:task/prism-test/0123456789abcdef",
            )
            .replace("${XDS_HOST}", "localhost")
            .replace(IDENTITY_DIR, &identity.display().to_string());
        assert_eq!(
            rendered.contains(&identity.display().to_string()),
            !extra.is_empty()
        );
        if !extra.is_empty() {
            identity_files(&identity);
        }
        let file = dir.write(&format!("{file}.yaml"), &rendered);
        let (ok, out) = run(Command::new(envoy_bin())
            .args(["--mode", "validate", "-c"])
            .arg(&file));
        assert!(ok, "Envoy refused the rendered {file:?}:\n{out}");
    }
    // The module publishes the one its control plane needs.
    let main =
        std::fs::read_to_string(repo_root().join("infra/modules/xds-server/main.tf")).unwrap();
    assert!(
        main.contains(r#"var.require_identity ? "envoy-bootstrap-identity.yaml.tmpl" : "envoy-bootstrap.yaml.tmpl""#),
        "{main}"
    );
    // The entrypoint's default identity directory is the template's.
    let entrypoint =
        std::fs::read_to_string(repo_root().join("infra/docker/envoy/entrypoint.sh")).unwrap();
    assert!(entrypoint.contains(r#"bootstrap=${ENVOY_BOOTSTRAP:-/etc/envoy/envoy.yaml}"#));
    assert!(entrypoint.contains(
        r#"XDS_SERVER_IDENTITY_DIR=${XDS_SERVER_IDENTITY_DIR:-$(dirname "$bootstrap")/identity}"#
    ));
}

/// A template reads the names envoy-service's init container provides, and nothing else.
fn check_template_names(template: &str) {
    let mut names: Vec<&str> = template
        .match_indices("${")
        .map(|(i, _)| &template[i + 2..i + 2 + template[i..].find('}').unwrap() - 2])
        .collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names, ["PROXY", "XDS_HOST", "ecs.TaskARN"]);
    // s3-config-loader lets templates read only the environment variables named to it: the
    // init container names each one it sets for the template.
    let service =
        std::fs::read_to_string(repo_root().join("infra/modules/envoy-service/main.tf")).unwrap();
    for name in names.iter().filter(|n| !n.starts_with("ecs.")) {
        assert!(
            service.contains(&format!("{{ name = \"{name}\", value = ")),
            "envoy-service's init container does not set {name}"
        );
    }
    let allowed = regex::Regex::new(r#"name = "S3_CONFIG_LOADER_TEMPLATE_ENV", value = "([^"]*)""#)
        .unwrap()
        .captures(&service)
        .map(|c| c[1].to_string())
        .unwrap_or_default();
    for name in names
        .iter()
        .filter(|n| !n.starts_with("ecs.") && !n.starts_with("S3CL_"))
    {
        assert!(
            allowed.split(',').any(|a| a == *name),
            "envoy-service's init container does not let templates read {name} (S3_CONFIG_LOADER_TEMPLATE_ENV: {allowed:?})"
        );
    }
}

/// The files `xds-server identity` writes that a bootstrap's SDS reads, in `dir`, holding a
/// throwaway CA's certificate and key (Envoy checks they are a pair, not who signed them).
fn identity_files(dir: &Path) {
    let ca = dir.with_extension("ca");
    assert!(tests::ca_init(&ca).status.success());
    let read = |name: &str| std::fs::read_to_string(ca.join(name)).unwrap();
    let (certificate, key) = (read("certificate.pem"), read("private_key.pem"));
    let secret = |name: &str, body: serde_json::Value| {
        let mut resource = serde_json::json!({
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
            "name": name,
        });
        resource
            .as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        serde_json::json!({ "resources": [resource] }).to_string()
    };
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("sds-certificate.json"),
        secret(
            "xds-identity",
            serde_json::json!({ "tls_certificate": {
                "certificate_chain": { "inline_string": certificate },
                "private_key": { "inline_string": key },
            } }),
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("sds-trust.json"),
        secret(
            "xds-trust",
            serde_json::json!({ "validation_context": { "trusted_ca": { "inline_string": certificate } } }),
        ),
    )
    .unwrap();
}

/// Two deployments of intdemo (two branches in one network) each render their fragment, as
/// envoy-service renders it (with the deployment's task role); the control plane's merge of both
/// validates, and each deployment's proxy gets its own listener and upstreams.
#[test]
fn intdemo_fragments_of_two_deployments_merge_into_a_valid_catalog() {
    let template = repo_root().join("infra/stage/services/intdemo/catalog.yaml.tftpl");
    // The template reads what the stage gives (catalog_vars) and what the module adds.
    let stage = hcl::parse(
        &std::fs::read_to_string(repo_root().join("infra/stage/services/intdemo/main.tf")).unwrap(),
    )
    .unwrap();
    let vars = stage
        .blocks()
        .find(|b| b.identifier() == "module")
        .and_then(|m| {
            m.body()
                .attributes()
                .find(|a| a.key() == "catalog_vars")
                .cloned()
        })
        .expect("intdemo passes catalog_vars");
    let hcl::Expression::Object(vars) = vars.expr() else {
        panic!("catalog_vars is not an object: {vars:?}");
    };
    let mut given: BTreeSet<String> = vars.keys().map(|k| k.to_string()).collect();
    given.insert("task_role_arn".into());
    given.insert("listener_tls".into());
    let used: BTreeSet<String> = regex::Regex::new(r"\$\{(\w+)\}")
        .unwrap()
        .captures_iter(&std::fs::read_to_string(&template).unwrap())
        .map(|c| c[1].to_string())
        .collect();
    assert_eq!(used, given);
    let service =
        std::fs::read_to_string(repo_root().join("infra/modules/envoy-service/main.tf")).unwrap();
    assert!(
        service.contains("task_role_arn = module.base.task_role_arn"),
        "envoy-service does not give its template the task role"
    );
    let dir = TempDir::new("intdemo-catalog");
    let catalog = dir.path().join("catalog.d");
    std::fs::create_dir_all(&catalog).unwrap();
    for env in ["develop", "feature-ata-123"] {
        let proxy = format!("intdemo-{env}");
        let text = templatefile(
            &template,
            &[
                ("proxy", proxy.clone().into()),
                ("port", 8080.into()),
                ("web_v1_port", 5678.into()),
                ("web_v2_port", 5679.into()),
                (
                    "task_role_arn",
                    format!("arn:aws:iam::123456789012:role/prism-test-{proxy}").into(),
                ),
                // What envoy-service gives for intdemo's listener_tls = { mode = "permissive" }.
                (
                    "listener_tls",
                    r#"{"certificate":"mesh","client_certificate":{"allow":[],"trust":"mesh"},"mode":"permissive"}"#.into(),
                ),
            ],
        );
        assert!(
            text.contains(&format!(
                "identity: {{ iam_roles: [\"arn:aws:iam::123456789012:role/prism-test-{proxy}\"] }}"
            )),
            "{text}"
        );
        std::fs::write(catalog.join(format!("{proxy}.yaml")), text).unwrap();
    }
    let (ok, out) = run(Command::new(workspace_bin("xds-server"))
        .arg("validate")
        .arg(&catalog));
    assert!(ok && out.trim() == "ok", "{out}");

    let (ok, out) = run(Command::new(workspace_bin("xds-server"))
        .args(["render", "--proxy", "intdemo-feature-ata-123", "--catalog"])
        .arg(&catalog));
    assert!(ok, "{out}");
    let resources: serde_json::Value = serde_json::from_str(&out).unwrap();
    let text = resources.to_string();
    assert!(text.contains("intdemo-feature-ata-123-web-v2"), "{text}");
    assert!(!text.contains("intdemo-develop"), "{text}");
    assert!(text.contains("\"port_value\":8080"), "{text}");
    // Mesh mTLS, permissive: a TLS chain with the proxy's identity beside a plaintext one.
    assert!(
        text.contains("mesh/identity/intdemo-feature-ata-123"),
        "{text}"
    );
    assert!(text.contains("public_plaintext"), "{text}");
}

/// The Prometheus configuration the monitoring module uploads, rendered as Terraform renders it,
/// passes `promtool check config`, and scrapes each ecs-sd interval file.
#[test]
fn the_rendered_prometheus_config_passes_promtool() {
    let template = repo_root().join("infra/modules/monitoring/files/prometheus.yml.tftpl");
    let text = templatefile(
        &template,
        &[
            ("name", "prism-test".into()),
            ("region", "us-east-2".into()),
            ("vpc_id", "vpc-0123456789abcdef0".into()),
        ],
    );
    let dir = TempDir::new("prometheus-config");
    let file = dir.write("prometheus.yml", &text);
    let (ok, out) = run(Command::new("promtool")
        .args(["check", "config"])
        .arg(&file));
    assert!(
        ok,
        "promtool refused the rendered configuration:\n{out}\n{text}"
    );
    let file_sd = regex::Regex::new(r#"- files: \["([^"]+)"\]"#).unwrap();
    let files: Vec<&str> = file_sd
        .captures_iter(&text)
        .map(|c| c.get(1).unwrap().as_str())
        .collect();
    assert_eq!(
        files,
        ["15s", "30s", "1m", "5m"].map(|i| format!("/etc/monitoring/ecs-sd/{i}-tasks.json"))
    );
}

/// The metric and label names in a Prometheus text exposition.
fn exposed(text: &str) -> BTreeSet<String> {
    let label = regex::Regex::new(r#"[{,]([a-zA-Z_][a-zA-Z0-9_]*)=""#).unwrap();
    let mut names = BTreeSet::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        if let Some(name) = line.split(['{', ' ']).next().filter(|n| !n.is_empty()) {
            names.insert(name.to_string());
        }
        names.extend(label.captures_iter(line).map(|c| c[1].to_string()));
    }
    names
}

/// Every query of the provisioned dashboards names metrics (and labels) that exist: Envoy's as a
/// real Envoy serving traffic through xds-server exposes them, xds-server's as it declares them.
#[test]
fn grafana_dashboards_query_metrics_that_exist() {
    let dir = TempDir::new("dashboards");
    let app = Backend::start("app", 0).unwrap();
    let port = free_port();
    let catalog = dir.write(
        "catalog.yaml",
        &format!(
            r#"
version: 1
proxies:
  demo:
    listeners: [ {{ name: web, address: 127.0.0.1, port: {port}, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: app }} ] }} ]
upstreams:
  app: {{ protocol: http1, endpoints: {{ static: ["{}"] }} }}
"#,
            app.endpoint()
        ),
    );
    let server = XdsServer::start(&dir, &catalog, 0);
    server.wait_ready();
    let envoy = Envoy::start(&dir, "demo", server.xds_port, Mode::Sotw);
    envoy.wait_live();
    tests::wait_for(
        "a request through Envoy",
        std::time::Duration::from_secs(15),
        || http::get(port, "/", &[]).ok().filter(|r| r.status == 200),
    );
    let envoy_metrics = exposed(
        &http::get(envoy.admin_port, "/stats/prometheus", &[])
            .unwrap()
            .body,
    );
    let declared = std::fs::read_to_string(repo_root().join("xds-server/src/metrics.rs")).unwrap();
    let metric = regex::Regex::new(r"\b(?:xds|envoy)_[a-z0-9_]+").unwrap();
    let mut checked = 0;
    for entry in
        std::fs::read_dir(repo_root().join("infra/modules/monitoring/files/grafana/dashboards"))
            .unwrap()
            .flatten()
    {
        let dash: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(entry.path()).unwrap()).unwrap();
        for panel in dash["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap_or_default();
                let names: Vec<&str> = metric.find_iter(expr).map(|m| m.as_str()).collect();
                assert!(
                    !names.is_empty(),
                    "{:?}: {expr:?} names no metric",
                    panel["title"]
                );
                for name in names {
                    let known = if name.starts_with("xds_") {
                        let base = name
                            .trim_end_matches("_bucket")
                            .trim_end_matches("_sum")
                            .trim_end_matches("_count");
                        declared.contains(&format!("\"{base}\""))
                    } else {
                        envoy_metrics.contains(name)
                    };
                    assert!(
                        known,
                        "{}: panel {:?} queries {name}, which nothing exports",
                        entry.path().display(),
                        panel["title"]
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 14, "only {checked} metric names checked");
}

/// envoy-service checks its fragment against the prefix before uploading it: the
/// `terraform_data.validate_catalog` provisioner's command, run as Terraform runs it (`sh -c`,
/// its environment), against moto's S3, passes a fragment that routes to another fragment's
/// upstream and stops, naming the field, one whose upstream no fragment defines.
#[test]
fn envoy_service_validates_its_fragment_against_the_prefix_before_the_upload() {
    let text =
        std::fs::read_to_string(repo_root().join("infra/modules/envoy-service/main.tf")).unwrap();
    let body: hcl::Body = hcl::from_str(&text).unwrap();
    let resource = body
        .blocks()
        .find(|b| {
            let l: Vec<&str> = b.labels().iter().map(|l| l.as_str()).collect();
            b.identifier() == "resource" && l == ["terraform_data", "validate_catalog"]
        })
        .expect("envoy-service has terraform_data.validate_catalog");
    let provisioner = resource
        .body()
        .blocks()
        .find(|b| b.identifier() == "provisioner")
        .expect("it has a provisioner");
    let attr = |key: &str| {
        provisioner
            .body()
            .attributes()
            .find(|a| a.key() == key)
            .map(|a| a.expr().evaluate(&Context::new()).unwrap())
            .unwrap_or_else(|| panic!("the provisioner has no {key}"))
    };
    let hcl::Value::String(command) = attr("command") else {
        panic!("the command is not a string");
    };
    assert_eq!(attr("interpreter"), hcl::Value::from(vec!["/bin/sh", "-c"]));
    assert!(
        text.contains("depends_on = [terraform_data.validate_catalog]"),
        "the upload does not wait for the check"
    );

    let dir = TempDir::new("validate-before-upload");
    let moto = tests::Moto::start(&dir, 0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s3 = moto.s3();
    rt.block_on(async {
        s3.create_bucket().bucket("config").send().await.unwrap();
        let connector = "version: 1\nproxies:\n  connector:\n    listeners: [ { name: web, port: 8080, protocol: http, routes: [ { match: { prefix: / }, to: connector } ] } ]\nupstreams:\n  connector: { protocol: grpc, port: 50051, endpoints: { static: [\"10.0.0.1:50051\"] } }\n";
        s3.put_object()
            .bucket("config")
            .key("xds/catalog.d/connector.yaml")
            .body(connector.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
    });
    let check = |fragment: &str| {
        run(Command::new("/bin/sh")
            .arg("-c")
            .arg(&command)
            .env("FRAGMENT", fragment)
            .env("FRAGMENT_NAME", "wallet.yaml")
            .env("CATALOG_PREFIX", "s3://config/xds/catalog.d/")
            .env("XDS_SERVER", workspace_bin("xds-server"))
            .envs(moto.env()))
    };
    let wallet = |to: &str| {
        format!(
            "version: 1\nproxies:\n  wallet:\n    listeners: [ {{ name: web, port: 8080, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: {to} }} ] }} ]\n"
        )
    };
    let (ok, out) = check(&wallet("connector"));
    assert!(ok && out.trim() == "ok", "{out}");
    let (ok, out) = check(&wallet("connecter"));
    assert!(!ok, "{out}");
    assert!(
        out.contains(r#"wallet.yaml: 1 error joining s3://config/xds/catalog.d/ as wallet.yaml"#)
            && out.contains(
                r#"proxies.wallet.listeners[0].routes[0].to: upstream "connecter" is not defined"#
            ),
        "{out}"
    );
}
