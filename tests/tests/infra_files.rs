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
        std::fs::read_to_string(repo_root().join("infra/modules/envoy-service/task.tf")).unwrap();
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
    listeners:
      - name: web
        address: 127.0.0.1
        port: {port}
        protocol: http
        # Permissive mesh mTLS, as infra's services run: the TLS, plaintext and RBAC stats exist.
        tls: {{ mode: permissive, certificate: mesh, client_certificate: {{ trust: mesh, allow: [demo] }} }}
        routes: [ {{ match: {{ prefix: / }}, to: app }} ]
upstreams:
  app: {{ protocol: http1, endpoints: {{ static: ["{}"] }} }}
"#,
            app.endpoint()
        ),
    );
    let ca = dir.path().join("ca");
    assert!(tests::ca_init(&ca).status.success());
    let server = XdsServer::start_with(
        &dir,
        &catalog,
        0,
        &["--ca", &format!("file:{}", ca.display())],
    );
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
    let mut queries = Vec::new();
    for entry in
        std::fs::read_dir(repo_root().join("infra/modules/monitoring/files/grafana/dashboards"))
            .unwrap()
            .flatten()
    {
        let dash: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(entry.path()).unwrap()).unwrap();
        for panel in dash["panels"].as_array().unwrap() {
            // CloudWatch's panels are checked in grafana_cloudwatch_panels_query_rds_metrics.
            if panel["datasource"]["type"] == "cloudwatch" {
                continue;
            }
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap_or_default();
                queries.push(expr.to_string());
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
    assert!(checked >= 24, "only {checked} metric names checked");
    // And every query parses as PromQL: promtool checks them as recording rules.
    let rules = serde_json::json!({ "groups": [{ "name": "dashboards", "rules": queries
        .iter()
        .enumerate()
        .map(|(i, q)| serde_json::json!({ "record": format!("dashboard:query{i}"), "expr": q }))
        .collect::<Vec<_>>() }] });
    let file = dir.write("dashboard-rules.json", &rules.to_string());
    let (ok, out) = run(Command::new("promtool").args(["check", "rules"]).arg(&file));
    assert!(ok, "a dashboard query is not PromQL:\n{out}");
}

/// The `variable "NAME" { ... }` block of a module's variables.tf, as written.
fn variable_block(variables: &str, name: &str) -> String {
    let start = variables
        .find(&format!("variable \"{name}\" {{"))
        .unwrap_or_else(|| panic!("no variable {name}"));
    let end = variables[start..].find("\n}\n").unwrap() + start + 3;
    variables[start..end].to_string()
}

/// `expr` as `terraform console` evaluates it in `dir` with `tfvars`: `expr` must be a
/// `jsonencode(...)`, whose JSON is returned.
fn terraform_console(dir: &TempDir, tfvars: &str, expr: &str) -> serde_json::Value {
    let out = console_run(dir, tfvars, expr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "terraform console: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The console prints the JSON as a quoted string.
    let json: String =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    serde_json::from_str(&json).unwrap()
}

/// What `terraform console` says when `tfvars` must be refused (it must fail).
fn terraform_console_err(dir: &TempDir, tfvars: &str, expr: &str) -> String {
    let out = console_run(dir, tfvars, expr);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "terraform console took it: {text}");
    text
}

fn console_run(dir: &TempDir, tfvars: &str, expr: &str) -> std::process::Output {
    dir.write("test.tfvars", tfvars);
    let mut child = Command::new("terraform")
        .args(["console", "-var-file=test.tfvars"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("terraform");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{expr}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// envoy-service's app containers as Terraform renders them (`terraform console` on the module's
/// provider-free containers.tf and the variables it reads): a container using the database takes
/// its password from the secret through ECS `secrets`, never as a plain environment variable, and
/// the execution role may read exactly that secret and decrypt with exactly its key.
#[test]
fn a_service_using_the_database_gets_its_password_through_ecs_secrets_only() {
    let module = repo_root().join("infra/modules/envoy-service");
    let main = std::fs::read_to_string(module.join("main.tf")).unwrap();
    let task = std::fs::read_to_string(module.join("task.tf")).unwrap();
    // What is rendered here is what the task definition and the execution role get.
    assert!(
        main.contains("container_definitions = jsonencode(local.container_definitions)")
            && task.contains("for c in local.app_container_definitions : merge(c, {"),
        "main.tf no longer renders the app containers from containers.tf"
    );
    assert!(main.contains("execution_policy_json = local.app_secrets_policy_json"));
    let variables = std::fs::read_to_string(module.join("variables.tf")).unwrap();
    let dir = TempDir::new("containers");
    std::fs::copy(
        module.join("containers.tf"),
        dir.path().join("containers.tf"),
    )
    .unwrap();
    dir.write(
        "variables.tf",
        &format!(
            "{}\n{}\nlocals {{\n  log_options = {{ awslogs-group = \"/ecs/prism-test/api\" }}\n}}\n",
            variable_block(&variables, "app_containers"),
            variable_block(&variables, "secrets_kms_key_arns"),
        ),
    );
    let secret = "arn:aws:secretsmanager:us-east-2:111122223333:secret:rds!db-0f1e2d3c-AbCdEf";
    let key = "arn:aws:kms:us-east-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let render = |tfvars: &str| {
        terraform_console(
            &dir,
            tfvars,
            "jsonencode({ containers = local.app_container_definitions, policy = local.app_secrets_policy_json })",
        )
    };

    let rendered = render(&format!(
        r#"app_containers = [
  {{
    name        = "api"
    image       = "api:1"
    environment = {{ PGHOST = "prism-test.abc.us-east-2.rds.amazonaws.com", PGSSLMODE = "require" }}
    secrets     = {{ PGPASSWORD = "{secret}:password::", PGUSER = "{secret}:username::" }}
  }},
  {{ name = "worker", image = "worker:1" }},
]
secrets_kms_key_arns = ["{key}"]
"#
    ));
    let api = &rendered["containers"][0];
    assert_eq!(api["name"], "api");
    assert_eq!(
        api["secrets"],
        serde_json::json!([
            { "name": "PGPASSWORD", "valueFrom": format!("{secret}:password::") },
            { "name": "PGUSER", "valueFrom": format!("{secret}:username::") },
        ])
    );
    let names: Vec<&str> = api["environment"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["PGHOST", "PGSSLMODE"]);
    assert!(
        !api["environment"].to_string().contains(secret),
        "{}",
        api["environment"]
    );
    assert_eq!(rendered["containers"][1]["secrets"], serde_json::json!([]));
    let policy: serde_json::Value =
        serde_json::from_str(rendered["policy"].as_str().unwrap()).unwrap();
    assert_eq!(
        policy["Statement"],
        serde_json::json!([
            { "Sid": "ReadContainerSecrets", "Effect": "Allow",
              "Action": ["secretsmanager:GetSecretValue"], "Resource": [secret] },
            { "Sid": "DecryptContainerSecrets", "Effect": "Allow",
              "Action": ["kms:Decrypt"], "Resource": [key] },
        ])
    );

    // No secrets: the execution role gets no extra permission at all.
    let plain = render("app_containers = [{ name = \"web\", image = \"web:1\" }]\n");
    assert_eq!(plain["policy"], "");

    // An SSM parameter (ECS takes those too) is read by its whole ARN, with SSM's action.
    let parameter = "arn:aws:ssm:us-east-2:111122223333:parameter/prism-test/api/token";
    let rendered = render(&format!(
        "app_containers = [{{ name = \"api\", image = \"api:1\", secrets = {{ TOKEN = \"{parameter}\", PGPASSWORD = \"{secret}:password::\" }} }}]\n"
    ));
    let policy: serde_json::Value =
        serde_json::from_str(rendered["policy"].as_str().unwrap()).unwrap();
    assert_eq!(
        policy["Statement"],
        serde_json::json!([
            { "Sid": "ReadContainerSecrets", "Effect": "Allow",
              "Action": ["secretsmanager:GetSecretValue"], "Resource": [secret] },
            { "Sid": "ReadContainerParameters", "Effect": "Allow",
              "Action": ["ssm:GetParameters"], "Resource": [parameter] },
        ])
    );
    // Anything else is refused by the variable's validation, naming the field.
    let refused = terraform_console_err(
        &dir,
        "app_containers = [{ name = \"api\", image = \"api:1\", secrets = { TOKEN = \"plain-text\" } }]\n",
        "local.app_secrets_policy_json",
    );
    assert!(refused.contains("app_containers[*].secrets"), "{refused}");
}

/// The metrics CloudWatch publishes for an RDS instance (AWS/RDS, by DBInstanceIdentifier), as
/// the RDS user guide lists them.
const RDS_METRICS: &[&str] = &[
    "BinLogDiskUsage",
    "BurstBalance",
    "CPUCreditBalance",
    "CPUCreditUsage",
    "CPUUtilization",
    "DatabaseConnections",
    "DiskQueueDepth",
    "FreeStorageSpace",
    "FreeableMemory",
    "MaximumUsedTransactionIDs",
    "NetworkReceiveThroughput",
    "NetworkTransmitThroughput",
    "OldestReplicationSlotLag",
    "ReadIOPS",
    "ReadLatency",
    "ReadThroughput",
    "ReplicaLag",
    "SwapUsage",
    "TransactionLogsDiskUsage",
    "WriteIOPS",
    "WriteLatency",
    "WriteThroughput",
];

/// The dashboards' CloudWatch panels use the provisioned CloudWatch datasource and query RDS
/// metrics that exist, of the instance the dashboard's variable picks; the database's CPU,
/// connections, free storage and read/write latency are shown; and Grafana's task role may read
/// metrics and do nothing else in CloudWatch.
#[test]
fn grafana_cloudwatch_panels_query_rds_metrics() {
    let grafana = repo_root().join("infra/modules/monitoring/files/grafana");
    let provisioned: serde_json::Value = serde_saphyr::from_str(
        &std::fs::read_to_string(grafana.join("provisioning/datasources/cloudwatch.yaml")).unwrap(),
    )
    .unwrap();
    let source = &provisioned["datasources"][0];
    assert_eq!(source["type"], "cloudwatch");
    // The task role's credentials, not keys in a file.
    assert_eq!(source["jsonData"]["authType"], "default");
    let uid = source["uid"].as_str().unwrap();

    let mut shown = BTreeSet::new();
    for entry in std::fs::read_dir(grafana.join("dashboards"))
        .unwrap()
        .flatten()
    {
        let dash: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(entry.path()).unwrap()).unwrap();
        let variables: Vec<&serde_json::Value> = dash["templating"]["list"]
            .as_array()
            .map(|l| l.iter().collect())
            .unwrap_or_default();
        for panel in dash["panels"].as_array().unwrap() {
            if panel["datasource"]["type"] != "cloudwatch" {
                continue;
            }
            let at = format!("{}: {}", entry.path().display(), panel["title"]);
            assert_eq!(panel["datasource"]["uid"], uid, "{at}");
            for target in panel["targets"].as_array().unwrap() {
                assert_eq!(target["datasource"]["uid"], uid, "{at}");
                assert_eq!(target["namespace"], "AWS/RDS", "{at}");
                let metric = target["metricName"].as_str().unwrap_or_default();
                assert!(
                    RDS_METRICS.contains(&metric),
                    "{at}: no RDS metric {metric:?}"
                );
                assert!(
                    ["Average", "Minimum", "Maximum", "Sum", "SampleCount"]
                        .contains(&target["statistic"].as_str().unwrap_or_default()),
                    "{at}: statistic {}",
                    target["statistic"]
                );
                let dimensions = target["dimensions"].as_object().unwrap();
                assert_eq!(
                    dimensions.keys().collect::<Vec<_>>(),
                    ["DBInstanceIdentifier"],
                    "{at}"
                );
                // The instance is the dashboard's variable, listing the instances CloudWatch has.
                let name = dimensions["DBInstanceIdentifier"]
                    .as_str()
                    .and_then(|v| v.strip_prefix('$'))
                    .unwrap_or_else(|| panic!("{at}: a fixed instance"));
                let variable = variables
                    .iter()
                    .find(|v| v["name"] == name)
                    .unwrap_or_else(|| panic!("{at}: no variable {name}"));
                assert_eq!(variable["datasource"]["uid"], uid, "{at}");
                assert_eq!(variable["query"]["namespace"], "AWS/RDS", "{at}");
                assert_eq!(
                    variable["query"]["dimensionKey"], "DBInstanceIdentifier",
                    "{at}"
                );
                shown.insert(metric.to_string());
            }
        }
    }
    for wanted in [
        "CPUUtilization",
        "DatabaseConnections",
        "FreeStorageSpace",
        "ReadLatency",
        "WriteLatency",
    ] {
        assert!(shown.contains(wanted), "no panel shows {wanted}: {shown:?}");
    }

    let main =
        std::fs::read_to_string(repo_root().join("infra/modules/monitoring/main.tf")).unwrap();
    let actions: BTreeSet<&str> = regex::Regex::new(r#""cloudwatch:[A-Za-z*]+""#)
        .unwrap()
        .find_iter(&main)
        .map(|m| m.as_str())
        .collect();
    assert_eq!(
        actions,
        BTreeSet::from(["\"cloudwatch:GetMetricData\"", "\"cloudwatch:ListMetrics\""])
    );
}

/// The database module's protection rule as Terraform evaluates it (its `locals` on the module's
/// own variables): test names (test*, infra*, *-test) get no deletion protection or final
/// snapshot by default, every other name both, and `deletion_protection` overrides either way.
#[test]
fn databases_are_protected_unless_their_name_is_a_test_name() {
    let module = repo_root().join("infra/modules/database");
    let main = std::fs::read_to_string(module.join("main.tf")).unwrap();
    let start = main.find("\nlocals {").expect("the module's locals");
    let end = main[start..].find("\n}\n").unwrap() + start + 3;
    let locals = &main[start..end];
    assert!(
        main.contains("deletion_protection                 = local.deletion_protection")
            && main.contains("skip_final_snapshot                 = !local.keep_snapshot")
            && main.contains("delete_automated_backups            = !local.keep_snapshot"),
        "the instance no longer follows local.deletion_protection and local.keep_snapshot"
    );
    let variables = std::fs::read_to_string(module.join("variables.tf")).unwrap();
    let dir = TempDir::new("database-protection");
    dir.write(
        "main.tf",
        &format!(
            "{}\n{}\n{}\n{locals}",
            variable_block(&variables, "name"),
            variable_block(&variables, "deletion_protection"),
            variable_block(&variables, "engine_version"),
        ),
    );
    let evaluate = |name: &str, setting: &str, expression: &str| -> bool {
        let mut args = vec!["console".to_string(), format!("-var=name={name}")];
        if !setting.is_empty() {
            args.push(format!("-var=deletion_protection={setting}"));
        }
        let out = Command::new("terraform")
            .args(&args)
            .current_dir(dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin
                    .take()
                    .unwrap()
                    .write_all(format!("{expression}\n").as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success(),
            "{name}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        match text.as_str() {
            "true" => true,
            "false" => false,
            _ => panic!("{name}: {text}"),
        }
    };
    let protected =
        |name: &str, setting: &str| evaluate(name, setting, "local.deletion_protection");
    let snapshot = |name: &str, setting: &str| evaluate(name, setting, "local.keep_snapshot");
    for name in ["prism-test", "test", "test2", "infra1", "infra-tls"] {
        assert!(!protected(name, ""), "{name} is a test name");
        assert!(protected(name, "true"), "{name} asked for protection");
        assert!(
            !snapshot(name, ""),
            "{name} is a test name: no final snapshot"
        );
    }
    for name in ["prism", "prod", "staging", "contest", "latest-x"] {
        assert!(protected(name, ""), "{name} is not a test name");
        assert!(!protected(name, "false"), "{name} asked for none");
        // Turning protection off to drop it keeps its final snapshot and backups.
        assert!(
            snapshot(name, "false"),
            "{name} dropped without a final snapshot"
        );
    }
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
    let connector = "version: 1\nproxies:\n  connector:\n    listeners: [ { name: web, port: 8080, protocol: http, routes: [ { match: { prefix: / }, to: connector } ] } ]\nupstreams:\n  connector: { protocol: grpc, port: 50051, endpoints: { static: [\"10.0.0.1:50051\"] } }\n";
    rt.block_on(async {
        s3.create_bucket().bucket("config").send().await.unwrap();
        s3.put_object()
            .bucket("config")
            .key("xds/catalog.d/connector.yaml")
            .body(connector.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
    });
    // The module's PENDING, evaluated as Terraform would for `catalog_fragments_in_apply`.
    let environment = provisioner
        .body()
        .attributes()
        .find(|a| a.key() == "environment")
        .expect("the provisioner has an environment");
    let hcl::Expression::Object(env) = environment.expr() else {
        panic!("the environment is not an object");
    };
    let pending_expr = env
        .iter()
        .find(|(k, _)| k.to_string() == "PENDING")
        .map(|(_, v)| v.clone())
        .expect("the environment sets PENDING");
    let pending = |in_apply: &[(&str, &str)]| {
        let mut ctx = Context::new();
        let map: hcl::Map<String, hcl::Value> = in_apply
            .iter()
            .map(|(k, v)| (k.to_string(), hcl::Value::from(*v)))
            .collect();
        let mut var = hcl::Map::new();
        var.insert(
            "catalog_fragments_in_apply".to_string(),
            hcl::Value::from(map),
        );
        ctx.declare_var("var", hcl::Value::from(var));
        let base64 = hcl::eval::FuncDef::builder()
            .param(hcl::eval::ParamType::String)
            .build(|args: hcl::eval::FuncArgs| {
                let text = args[0].as_str().unwrap_or_default().to_string();
                let out = Command::new("sh")
                    .arg("-c")
                    .arg("printf '%s' \"$T\" | base64 -w0")
                    .env("T", text)
                    .output()
                    .map_err(|e| e.to_string())?;
                Ok(hcl::Value::from(
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                ))
            });
        ctx.declare_func("base64encode", base64);
        let join = hcl::eval::FuncDef::builder()
            .param(hcl::eval::ParamType::String)
            .param(hcl::eval::ParamType::Array(Box::new(
                hcl::eval::ParamType::String,
            )))
            .build(|args: hcl::eval::FuncArgs| {
                let sep = args[0].as_str().unwrap_or_default().to_string();
                let parts: Vec<String> = args[1]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .collect();
                Ok(hcl::Value::from(parts.join(&sep)))
            });
        ctx.declare_func("join", join);
        match pending_expr.evaluate(&ctx).expect("PENDING evaluates") {
            hcl::Value::String(s) => s,
            other => panic!("PENDING is {other:?}"),
        }
    };
    let check_in_apply = |fragment: &str, in_apply: &[(&str, &str)]| {
        run(Command::new("/bin/sh")
            .arg("-c")
            .arg(&command)
            .env("PENDING", pending(in_apply))
            .env("FRAGMENT", fragment)
            .env("FRAGMENT_NAME", "wallet.yaml")
            .env("CATALOG_PREFIX", "s3://config/xds/catalog.d/")
            .env("XDS_SERVER", workspace_bin("xds-server"))
            .envs(moto.env()))
    };
    let check = |fragment: &str| check_in_apply(fragment, &[]);
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

    // One apply changes two services: the connector gains an upstream `ledger`, and wallet
    // routes to it. Against the prefix alone wallet fails; with the connector's new version
    // from the same apply (catalog_fragments_in_apply) it passes, as the control plane will
    // serve both once both are uploaded.
    let connector_v2 = format!(
        "{connector}  ledger: {{ protocol: http1, endpoints: {{ static: [\"10.0.0.2:80\"] }} }}\n"
    );
    let (ok, out) = check(&wallet("ledger"));
    assert!(!ok, "{out}");
    assert!(out.contains(r#"upstream "ledger" is not defined"#), "{out}");
    let (ok, out) = check_in_apply(&wallet("ledger"), &[("connector.yaml", &connector_v2)]);
    assert!(ok, "{out}");
}

/// envoy-service with `transparent_egress`, as Terraform renders its provider-free task.tf,
/// proxy.tf and containers.tf: the task's proxyConfiguration is ECS's APPMESH with the properties
/// ECS expects (the ignored UID and GID, Envoy's ingress and egress ports, the app's ports once
/// each, the metadata endpoints among the ignored IPs, 443 among the ignored ports unless told
/// otherwise); the task definition carries it and Envoy runs as that UID. Every init container
/// that needs the network before Envoy listens runs in the ignored group (ECS redirects from
/// the start); with identity a root init container gives Envoy its volume first. Envoy has a
/// health check (its /ready) and the app containers wait until it is healthy. Without the
/// variable: none of it.
#[test]
fn transparent_egress_adds_the_appmesh_proxy_configuration_and_envoy_runs_as_its_uid() {
    let module = repo_root().join("infra/modules/envoy-service");
    let main = std::fs::read_to_string(module.join("main.tf")).unwrap();
    for wiring in [
        "for_each = local.proxy_configuration == null ? [] : [local.proxy_configuration]",
        "properties     = proxy_configuration.value.properties",
        "container_definitions = jsonencode(local.container_definitions)",
        "network_mode             = \"awsvpc\"",
        "for_each = local.app_ports",
    ] {
        assert!(main.contains(wiring), "main.tf lacks {wiring:?}");
    }
    let variables = std::fs::read_to_string(module.join("variables.tf")).unwrap();
    let dir = TempDir::new("proxy-configuration");
    for file in ["proxy.tf", "task.tf", "containers.tf"] {
        std::fs::copy(module.join(file), dir.path().join(file)).unwrap();
    }
    let declared: Vec<String> = [
        "transparent_egress",
        "identity",
        "loader_image",
        "envoy_image",
        "service_name",
        "xds_host",
        "xds_ca_certificate",
        "config_bucket",
        "bootstrap_key",
        "listener_ports",
        "app_containers",
        "secrets_kms_key_arns",
    ]
    .iter()
    .map(|name| variable_block(&variables, name))
    .collect();
    dir.write(
        "variables.tf",
        &format!(
            "{}\nlocals {{\n  log_options = {{ awslogs-group = \"/ecs/prism-test/api\" }}\n}}\n",
            declared.join("\n")
        ),
    );
    let given = "loader_image = \"loader:1\"\nenvoy_image = \"envoy:1\"\nservice_name = \"api\"\nxds_host = \"xds.mesh.test\"\nconfig_bucket = \"config\"\napp_containers = [{ name = \"api\", image = \"api:1\" }]\n";
    // listener_ports = [8443] unless `tfvars` gives them (a tfvars file sets each name once).
    let tfvars = |more: &str| {
        let ports = if more.contains("listener_ports") {
            ""
        } else {
            "listener_ports = [8443]\n"
        };
        format!("{given}{ports}{more}\n")
    };
    let render = |more: &str| {
        terraform_console(
            &dir,
            &tfvars(more),
            "jsonencode({ proxy = local.proxy_configuration, containers = local.container_definitions })",
        )
    };
    let container = |r: &serde_json::Value, name: &str| {
        r["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no container {name}: {r}"))
            .clone()
    };
    let names = |r: &serde_json::Value| -> Vec<String> {
        r["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };

    // Without identity: the bootstrap container fetches from S3 before Envoy listens.
    let r = render("identity = false\ntransparent_egress = { app_ports = [8080, 50051, 8080] }\n");
    assert_eq!(
        r["proxy"],
        serde_json::json!({
            "type": "APPMESH",
            "container_name": "envoy",
            "properties": {
                "IgnoredUID": "1337",
                "IgnoredGID": "1337",
                "ProxyIngressPort": "15000",
                "ProxyEgressPort": "15001",
                "AppPorts": "8080,50051",
                "EgressIgnoredIPs": "169.254.170.2,169.254.169.254",
                "EgressIgnoredPorts": "443",
            },
        })
    );
    assert_eq!(names(&r), ["bootstrap", "envoy", "api"]);
    assert_eq!(container(&r, "bootstrap")["user"], "0:1337");
    let envoy = container(&r, "envoy");
    assert_eq!(envoy["user"], "1337");
    assert_eq!(
        envoy["dependsOn"],
        serde_json::json!([{ "containerName": "bootstrap", "condition": "SUCCESS" }])
    );
    assert_eq!(
        container(&r, "api")["dependsOn"],
        serde_json::json!([{ "containerName": "envoy", "condition": "HEALTHY" }])
    );
    health_check_answers_by_envoy_ready(&envoy["healthCheck"]);

    // With identity: Envoy's own container fetches (as UID 1337); the one init container
    // only changes the volume's owner, without the network.
    let r = render(
        "transparent_egress = { app_ports = [8080], egress_ignored_ips = [\"10.0.0.2\"], egress_ignored_ports = [443, 5432, 443] }\n",
    );
    assert_eq!(
        r["proxy"]["properties"]["EgressIgnoredIPs"],
        "169.254.170.2,169.254.169.254,10.0.0.2"
    );
    assert_eq!(r["proxy"]["properties"]["EgressIgnoredPorts"], "443,5432");
    assert_eq!(names(&r), ["envoy-config-owner", "envoy", "api"]);
    let owner = container(&r, "envoy-config-owner");
    assert_eq!(
        owner["entryPoint"],
        serde_json::json!(["chown", "1337:1337", "/etc/envoy"])
    );
    assert_eq!(owner["user"], "0");
    let envoy = container(&r, "envoy");
    assert_eq!(envoy["user"], "1337");
    assert!(
        envoy["environment"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({ "name": "XDS_SERVER_IDENTITY", "value": "1" })),
        "{envoy}"
    );
    // Told no ports at all: nothing is ignored but the metadata endpoints.
    let r = render("transparent_egress = { app_ports = [8080], egress_ignored_ports = [] }\n");
    assert_eq!(r["proxy"]["properties"].get("EgressIgnoredPorts"), None);

    // Without the variable: no redirect, the image's user, no health check to wait for.
    let r = render("identity = false\n");
    assert_eq!(r["proxy"], serde_json::Value::Null);
    assert_eq!(container(&r, "bootstrap")["user"], "0");
    assert_eq!(container(&r, "envoy")["user"], serde_json::Value::Null);
    assert_eq!(
        container(&r, "envoy")["healthCheck"],
        serde_json::Value::Null
    );
    assert_eq!(container(&r, "api")["dependsOn"], serde_json::Value::Null);

    // What ECS would refuse, or what would redirect Envoy's own ports, fails the plan here.
    // Terraform wraps its messages in a box, with colours.
    let colour = regex::Regex::new("\x1b\\[[0-9;]*m").unwrap();
    for (more, message) in [
        (
            "transparent_egress = { app_ports = [] }",
            "transparent_egress.app_ports lists the ports",
        ),
        (
            "transparent_egress = { app_ports = [15001] }",
            "transparent_egress ports are whole numbers",
        ),
        (
            "transparent_egress = { app_ports = [8080] }\nlistener_ports = [15001]",
            "listener_ports: leave out 15000 and 15001 with transparent_egress",
        ),
        (
            "transparent_egress = { app_ports = [8080] }\nlistener_ports = [15000, 8443]",
            "listener_ports: leave out 15000 and 15001 with transparent_egress",
        ),
        (
            "transparent_egress = { app_ports = [8443] }",
            "transparent_egress.app_ports: a port the app listens on cannot also be one of Envoy's",
        ),
        (
            "transparent_egress = { app_ports = [8080, 9902] }",
            "transparent_egress.app_ports: a port the app listens on cannot also be one of Envoy's",
        ),
    ] {
        dir.write("test.tfvars", &tfvars(more));
        // The console reports the refusal, yet exits 0.
        let (_, out) = run(Command::new("terraform")
            .args(["console", "-var-file=test.tfvars"])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null()));
        let flat = colour.replace_all(&out, "").replace('│', " ");
        let flat = flat.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains("Invalid value for variable") && flat.contains(message),
            "{more}: {out}"
        );
    }
    // Without transparent egress, 15001 is a port like any other.
    render("listener_ports = [15001]\n");
}

/// The Envoy container's `healthCheck`, as ECS runs it (`CMD` and its arguments), asks
/// `/ready` on the stats listener: healthy while it answers 200, unhealthy with nothing
/// listening. (Run here against a backend on another port, as 9902 may be taken.)
fn health_check_answers_by_envoy_ready(check: &serde_json::Value) {
    let command: Vec<String> = check["command"]
        .as_array()
        .unwrap_or_else(|| panic!("no healthCheck command: {check}"))
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(command[0], "CMD", "{command:?}");
    assert!(
        command
            .iter()
            .any(|a| a.contains("/127.0.0.1/9902") && a.contains("GET /ready ")),
        "{command:?}"
    );
    let port = free_port();
    let probe = || {
        let args: Vec<String> = command[1..]
            .iter()
            .map(|a| a.replace("/9902", &format!("/{port}")))
            .collect();
        Command::new(&args[0])
            .args(&args[1..])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(!probe(), "healthy with nothing on the stats port");
    let ready = Backend::start_at("LIVE", ([127, 0, 0, 1], port).into()).unwrap();
    assert!(probe(), "unhealthy while /ready answers 200");
    assert!(ready.hits() >= 1);
    assert!(check["interval"].as_u64().unwrap() >= 5 && check["startPeriod"].as_u64().is_some());
}

/// The ECR lifecycle policy as Terraform renders it (`terraform console` on the module's
/// provider-free policy.tf): develop keeps a budget of its own, and every other branch's image
/// goes only when nobody pulled it for a while, so one busy infra* branch cannot expire the
/// image another infra* branch's environment runs (a count over `infra*` is one shared budget).
#[test]
fn image_lifecycle_gives_no_budget_that_several_branches_share() {
    let module = repo_root().join("infra/modules/ecr");
    let dir = TempDir::new("ecr-policy");
    for f in ["policy.tf", "variables.tf"] {
        std::fs::copy(module.join(f), dir.path().join(f)).unwrap();
    }
    let policy = terraform_console(&dir, "", "local.lifecycle_policy");
    let rules = policy["rules"].as_array().unwrap();
    let priorities: Vec<i64> = rules
        .iter()
        .map(|r| r["rulePriority"].as_i64().unwrap())
        .collect();
    assert_eq!(priorities, [1, 2, 3], "{policy}");
    assert_eq!(rules[0]["selection"]["tagStatus"], "untagged");
    let develop = &rules[1]["selection"];
    assert_eq!(develop["tagPatternList"], serde_json::json!(["develop-*"]));
    assert_eq!(develop["countType"], "imageCountMoreThan");
    assert_eq!(develop["countNumber"], 20);
    // ECR wants the rule over every tag last.
    let other = &rules[2]["selection"];
    assert_eq!(other["tagStatus"], "any", "{policy}");
    assert_eq!(other["countType"], "sinceImagePulled");
    assert_eq!(other["countUnit"], "days");
    assert_eq!(other["countNumber"], 30);
    // A count rule names one branch (BRANCH-*), never a prefix of several.
    let policy = terraform_console(
        &dir,
        "counted_branches = [\"develop\", \"main\"]\nkeep_per_branch = 5\n",
        "local.lifecycle_policy",
    );
    let rules = policy["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 4, "{policy}");
    assert_eq!(
        rules[2]["selection"]["tagPatternList"],
        serde_json::json!(["main-*"])
    );
    assert_eq!(rules[2]["selection"]["countNumber"], 5);
    assert_eq!(rules[3]["rulePriority"], 4);
    assert!(
        terraform_console_err(&dir, "unpulled_days = 0\n", "local.lifecycle_policy")
            .contains("unpulled_days is at least 1")
    );
}

/// The CI role's trust policy as Terraform renders it (provider-free trust.tf): GitHub's token
/// only from the CI's branches of one repository (a pull request, a tag or another branch has
/// another `sub`, and a fork another repository), CircleCI's only from one project.
#[test]
fn the_ci_role_trusts_only_the_ci_branches_of_its_repository() {
    let module = repo_root().join("infra/modules/ci-role");
    let dir = TempDir::new("ci-role");
    for f in ["trust.tf", "variables.tf"] {
        std::fs::copy(module.join(f), dir.path().join(f)).unwrap();
    }
    // main.tf names the providers it makes, or the given ones: here the given ones.
    dir.write(
        "providers.tf",
        "locals {\n  github_provider = var.github_oidc_provider_arn\n  circle_provider = var.circleci_oidc_provider_arn\n}\n",
    );
    let github = "arn:aws:iam::111122223333:oidc-provider/token.actions.githubusercontent.com";
    let circle = "arn:aws:iam::111122223333:oidc-provider/oidc.circleci.com/org/0f1e";
    let base = format!(
        "repository_arns = [\"arn:aws:ecr:us-east-2:111122223333:repository/envoy\"]\nstate_bucket = \"atala-cvp\"\ngithub_oidc_provider_arn = \"{github}\"\ncircleci_oidc_provider_arn = \"{circle}\"\n"
    );
    let trust = terraform_console(
        &dir,
        &format!(
            "{base}github_repository = \"example/mesh\"\ncircleci_org_id = \"0f1e\"\ncircleci_project_id = \"9a8b\"\n"
        ),
        "local.trust_policy",
    );
    let statements = trust["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 2, "{trust}");
    let gh = &statements[0];
    assert_eq!(gh["Principal"]["Federated"], github);
    assert_eq!(gh["Action"], "sts:AssumeRoleWithWebIdentity");
    assert_eq!(
        gh["Condition"]["StringEquals"]["token.actions.githubusercontent.com:aud"],
        "sts.amazonaws.com"
    );
    // The `sub` patterns of a statement.
    let subjects = |statement: &serde_json::Value, issuer: &str| -> Vec<String> {
        statement["Condition"]["StringLike"][format!("{issuer}:sub")]
            .as_array()
            .unwrap_or_else(|| panic!("no sub patterns: {statement}"))
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let subs = subjects(gh, "token.actions.githubusercontent.com");
    assert_eq!(
        subs,
        [
            "repo:example/mesh:ref:refs/heads/develop",
            "repo:example/mesh:ref:refs/heads/infra*",
            "repo:example/mesh:ref:refs/heads/test*",
        ]
    );
    // What IAM's StringLike does with those patterns, for the subjects GitHub sends.
    let like = |pattern: &str, s: &str| {
        regex::Regex::new(&format!(
            "^{}$",
            regex::escape(pattern).replace(r"\*", ".*")
        ))
        .unwrap()
        .is_match(s)
    };
    for (sub, allowed) in [
        // A push to develop, and the nightly run (scheduled runs run on the default branch).
        ("repo:example/mesh:ref:refs/heads/develop", true),
        ("repo:example/mesh:ref:refs/heads/infra-42", true),
        ("repo:example/mesh:ref:refs/heads/test1", true),
        ("repo:example/mesh:ref:refs/heads/feature/x", false),
        ("repo:example/mesh:ref:refs/heads/developer", false),
        ("repo:example/mesh:pull_request", false),
        ("repo:example/mesh:ref:refs/tags/infra1", false),
        ("repo:fork/mesh:ref:refs/heads/develop", false),
    ] {
        assert_eq!(subs.iter().any(|p| like(p, sub)), allowed, "{sub}");
    }
    let cc = &statements[1];
    assert_eq!(cc["Principal"]["Federated"], circle);
    assert_eq!(
        cc["Condition"]["StringEquals"]["oidc.circleci.com/org/0f1e:aud"],
        "0f1e"
    );
    let circle_subs = subjects(cc, "oidc.circleci.com/org/0f1e");
    // CIRCLE_OIDC_TOKEN_V2's subjects, which name the branch.
    let circle = |rest: &str| {
        format!("org/0f1e/project/9a8b/user/5c6d/vcs-origin/github.com/example/mesh/vcs-ref/{rest}")
    };
    for (sub, allowed) in [
        (circle("refs/heads/develop"), true),
        (circle("refs/heads/test-7"), true),
        (circle("refs/heads/feature/x"), false),
        (circle("refs/tags/infra1"), false),
        (
            "org/0f1e/project/ffff/user/5c6d/vcs-origin/github.com/example/other/vcs-ref/refs/heads/develop".to_string(),
            false,
        ),
    ] {
        assert_eq!(circle_subs.iter().any(|p| like(p, &sub)), allowed, "{sub}");
    }
    // Only GitHub: one statement; an organization without its project is refused.
    let trust = terraform_console(
        &dir,
        &format!("{base}github_repository = \"example/mesh\"\n"),
        "local.trust_policy",
    );
    assert_eq!(trust["Statement"].as_array().unwrap().len(), 1, "{trust}");
    assert!(
        terraform_console_err(
            &dir,
            &format!("{base}circleci_org_id = \"0f1e\"\n"),
            "local.trust_policy"
        )
        .contains("circleci_org_id and circleci_project_id are given together")
    );
}
