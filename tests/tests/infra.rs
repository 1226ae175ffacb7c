//! The Terraform in `infra/`, checked offline: every file parses; every resource and data source
//! type, argument and block exists in its provider's schema (AWS, TLS: tests/data, extracted by
//! scripts/update-provider-schemas.py) and every required one is given; module calls pass exactly the
//! variables their module declares, and every variable has a type and a description; the stage
//! roots fit env.sh and each other's remote state; checkov passes; infra/README.md names every
//! module's inputs and outputs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use hcl::{Block, Body};
use serde_json::Value;
use tests::repo_root;

/// Arguments Terraform itself understands on every resource and data source.
const META: &[&str] = &[
    "count",
    "for_each",
    "depends_on",
    "provider",
    "lifecycle",
    "provisioner",
    "connection",
];

/// Fails with every problem found, one a line.
fn assert_no_problems(errors: &[String]) {
    assert!(
        errors.is_empty(),
        "{} problems:\n{}",
        errors.len(),
        errors.join("\n")
    );
}

fn tf_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(tf_files(&path));
        } else if path.extension().is_some_and(|e| e == "tf") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn parse(path: &Path) -> Body {
    let text = std::fs::read_to_string(path).unwrap();
    hcl::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn labels(b: &Block) -> Vec<String> {
    b.labels().iter().map(|l| l.as_str().to_string()).collect()
}

/// Checks a body against a schema (argument name -> {required, block}); collects problems.
fn check(body: &Body, schema: &serde_json::Map<String, Value>, at: &str, errors: &mut Vec<String>) {
    let mut given = BTreeSet::new();
    for attr in body.attributes() {
        let key = attr.key();
        given.insert(key.to_string());
        if !META.contains(&key) && !schema.contains_key(key) {
            errors.push(format!("{at}: no argument `{key}` in the provider schema"));
        }
    }
    for block in body.blocks() {
        let (name, content) = if block.identifier() == "dynamic" {
            let name = labels(block).first().cloned().unwrap_or_default();
            let content = block
                .body()
                .blocks()
                .find(|b| b.identifier() == "content")
                .map(|b| b.body().clone());
            (name, content.unwrap_or_default())
        } else {
            (block.identifier().to_string(), block.body().clone())
        };
        given.insert(name.clone());
        if META.contains(&name.as_str()) {
            continue;
        }
        match schema.get(&name).map(|a| &a["block"]) {
            Some(Value::Object(inner)) => check(&content, inner, &format!("{at}.{name}"), errors),
            Some(_) => errors.push(format!("{at}: `{name}` is an argument, not a block")),
            None => errors.push(format!("{at}: no block `{name}` in the provider schema")),
        }
    }
    for (name, arg) in schema {
        if arg["required"] == true && !given.contains(name) {
            errors.push(format!("{at}: required `{name}` is missing"));
        }
    }
}

/// The provider schemas in tests/data (`PROVIDER-provider-schema.json`, extracted by
/// scripts/update-provider-schemas.py), by provider name: the prefix of its resource types.
fn provider_schemas() -> BTreeMap<String, Value> {
    let mut schemas = BTreeMap::new();
    for entry in std::fs::read_dir(repo_root().join("tests/data"))
        .unwrap()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(provider) = name.strip_suffix("-provider-schema.json") {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            let schema: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                schema["provider"],
                format!("hashicorp/{provider}"),
                "{name}"
            );
            schemas.insert(provider.to_string(), schema);
        }
    }
    schemas
}

#[test]
fn every_resource_and_data_source_matches_its_provider_schema() {
    let schemas = provider_schemas();
    assert!(
        schemas.contains_key("aws") && schemas.contains_key("tls"),
        "{:?}",
        schemas.keys()
    );
    let files = tf_files(&repo_root().join("infra"));
    assert!(files.len() >= 10, "{files:?}");
    let mut errors = Vec::new();
    let mut checked: BTreeMap<&str, usize> = BTreeMap::new();
    for path in &files {
        let rel = path
            .strip_prefix(repo_root())
            .unwrap()
            .display()
            .to_string();
        for block in parse(path).blocks() {
            let kind = match block.identifier() {
                "resource" => "resources",
                "data" => "data_sources",
                _ => continue,
            };
            let l = labels(block);
            let (ty, name) = (l[0].as_str(), l[1].as_str());
            let at = format!("{rel}: {ty}.{name}");
            // Terraform's own (terraform_remote_state) has no provider to download.
            let provider = ty.split('_').next().unwrap_or_default();
            if provider == "terraform" {
                continue;
            }
            let Some((provider, schema)) = schemas.get_key_value(provider) else {
                errors.push(format!(
                    "{at}: no schema of provider {provider:?} in tests/data (add it to scripts/update-provider-schemas.py)"
                ));
                continue;
            };
            match schema[kind][ty].as_object() {
                None => errors.push(format!(
                    "{at}: unknown {kind} type (run scripts/update-provider-schemas.py after adding one)"
                )),
                Some(args) => check(block.body(), args, &at, &mut errors),
            }
            *checked.entry(provider.as_str()).or_default() += 1;
        }
    }
    assert_no_problems(&errors);
    assert!(checked["aws"] > 20, "only {checked:?} resources checked");
    assert_eq!(checked["tls"], 2, "{checked:?}");
}

/// A module directory's variables (name -> has a default) and outputs.
struct Interface {
    variables: BTreeMap<String, bool>,
    outputs: BTreeSet<String>,
}

fn interface(dir: &Path, errors: &mut Vec<String>) -> Interface {
    let mut i = Interface {
        variables: BTreeMap::new(),
        outputs: BTreeSet::new(),
    };
    for path in tf_files(dir)
        .into_iter()
        .filter(|p| p.parent() == Some(dir))
    {
        for block in parse(&path).blocks() {
            let name = labels(block).first().cloned().unwrap_or_default();
            match block.identifier() {
                "variable" => {
                    let keys: BTreeSet<&str> = block.body().attributes().map(|a| a.key()).collect();
                    for needed in ["type", "description"] {
                        if !keys.contains(needed) {
                            errors.push(format!(
                                "{}: variable {name} has no {needed}",
                                path.display()
                            ));
                        }
                    }
                    i.variables.insert(name, keys.contains("default"));
                }
                "output" => {
                    i.outputs.insert(name);
                }
                _ => {}
            }
        }
    }
    i
}

/// The text of a module's own .tf files (not its subdirectories').
fn module_text(dir: &Path) -> String {
    tf_files(dir)
        .into_iter()
        .filter(|p| p.parent() == Some(dir))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

fn module_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for f in tf_files(root) {
        dirs.insert(f.parent().unwrap().to_path_buf());
    }
    dirs.into_iter().collect()
}

#[test]
fn module_calls_variables_and_outputs_fit_together() {
    let var_ref = regex::Regex::new(r"\bvar\.([A-Za-z0-9_]+)").unwrap();
    let module_ref = regex::Regex::new(r"\bmodule\.([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)").unwrap();
    let mut errors = Vec::new();
    for dir in module_dirs(&repo_root().join("infra")) {
        let me = interface(&dir, &mut errors);
        let text = module_text(&dir);
        for used in var_ref.captures_iter(&text) {
            if !me.variables.contains_key(&used[1]) {
                errors.push(format!(
                    "{}: var.{} is not declared",
                    dir.display(),
                    &used[1]
                ));
            }
        }
        let mut calls: BTreeMap<String, Interface> = BTreeMap::new();
        for path in tf_files(&dir)
            .into_iter()
            .filter(|p| p.parent() == Some(dir.as_path()))
        {
            for block in parse(&path).blocks().filter(|b| b.identifier() == "module") {
                let name = labels(block).first().cloned().unwrap_or_default();
                let source = block
                    .body()
                    .attributes()
                    .find(|a| a.key() == "source")
                    .map(|a| a.expr().to_string().trim_matches('"').to_string())
                    .unwrap_or_default();
                let target = dir.join(&source);
                let callee = interface(&target, &mut Vec::new());
                let passed: BTreeSet<&str> = block
                    .body()
                    .attributes()
                    .map(|a| a.key())
                    .filter(|k| {
                        ![
                            "source",
                            "version",
                            "count",
                            "for_each",
                            "providers",
                            "depends_on",
                        ]
                        .contains(k)
                    })
                    .collect();
                for p in &passed {
                    if !callee.variables.contains_key(*p) {
                        errors.push(format!(
                            "{}: module {name} ({source}) has no variable {p}",
                            path.display()
                        ));
                    }
                }
                for (v, has_default) in &callee.variables {
                    if !has_default && !passed.contains(v.as_str()) {
                        errors.push(format!(
                            "{}: module {name} ({source}) needs variable {v}",
                            path.display()
                        ));
                    }
                }
                calls.insert(name, callee);
            }
        }
        for used in module_ref.captures_iter(&text) {
            match calls.get(&used[1]) {
                None => errors.push(format!(
                    "{}: module.{} is not called here",
                    dir.display(),
                    &used[1]
                )),
                Some(callee) if !callee.outputs.contains(&used[2]) => errors.push(format!(
                    "{}: module.{} has no output {}",
                    dir.display(),
                    &used[1],
                    &used[2]
                )),
                Some(_) => {}
            }
        }
    }
    assert_no_problems(&errors);
}

/// checkov, offline, finds nothing; each skipped check carries its reason beside the resource
/// (`#checkov:skip=ID:reason`).
#[test]
fn checkov_passes_offline_with_every_skip_explained() {
    let checkov = repo_root().join(".venv/checkov/bin/checkov");
    assert!(
        checkov.exists(),
        "{} is missing: scripts/setup.sh installs it",
        checkov.display()
    );
    let out = std::process::Command::new(&checkov)
        .args([
            "-d",
            "infra",
            "--framework",
            "terraform",
            "--skip-download",
            "--compact",
            "--quiet",
        ])
        .current_dir(repo_root())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "checkov found problems:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for path in tf_files(&repo_root().join("infra")) {
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            if let Some(skip) = line.trim().strip_prefix("#checkov:skip=") {
                let reason = skip.split_once(':').map(|(_, r)| r.trim()).unwrap_or("");
                assert!(
                    reason.len() > 10,
                    "{}: a skip without a reason: {line}",
                    path.display()
                );
            }
        }
    }
}

/// Grafana's provisioning files are where Grafana reads them (the dashboards' queries are checked
/// against real metrics in tests/tests/infra_files.rs).
#[test]
fn grafana_provisioning_is_laid_out_as_grafana_reads_it() {
    let dir = repo_root().join("infra/modules/monitoring/files/grafana/dashboards");
    // Grafana reads provisioning files only from these subdirectories of GF_PATHS_PROVISIONING;
    // the dashboards provider points where s3-config-loader puts the dashboards.
    let provisioning = dir.parent().unwrap().join("provisioning");
    let mut kinds = Vec::new();
    for entry in std::fs::read_dir(&provisioning).unwrap().flatten() {
        let kind = entry.file_name().to_string_lossy().to_string();
        assert!(
            entry.path().is_dir()
                && ["datasources", "dashboards", "plugins", "alerting"].contains(&kind.as_str()),
            "{}: Grafana ignores this",
            entry.path().display()
        );
        kinds.push(kind);
    }
    kinds.sort();
    assert_eq!(kinds, ["dashboards", "datasources"]);
    let provider = std::fs::read_to_string(provisioning.join("dashboards/toolkit.yaml")).unwrap();
    let main = std::fs::read_to_string(dir.join("../../../main.tf")).unwrap();
    assert!(main.contains(r#"config_dir = "/etc/monitoring""#), "{main}");
    assert!(main.contains(r#"key      = "${local.prefix}grafana/${each.value}""#));
    assert!(
        provider.contains("path: /etc/monitoring/grafana/dashboards"),
        "{provider}"
    );
}

/// The stage roots are what env.sh drives and what the README promises: each declares the
/// variables env.sh passes and an S3 backend env.sh configures; nothing in them is a hard-coded
/// AWS id; what they take from another root comes through remote state at the key env.sh gives
/// that root, and names outputs that root has.
#[test]
fn stage_roots_take_ids_from_remote_state_and_their_settings_from_env_sh() {
    let infra = repo_root().join("infra");
    let roots = module_dirs(&infra.join("stage"));
    let names: Vec<String> = roots
        .iter()
        .map(|d| d.strip_prefix(&infra).unwrap().display().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "stage/base/database",
            "stage/base/ecr",
            "stage/base/monitoring",
            "stage/base/vpc",
            "stage/services/intdemo"
        ]
    );
    let hard_coded = regex::Regex::new(
        r#"\b(vpc|subnet|sg|igw|nat|rtb|eni|ami|i|lt)-[0-9a-f]{8,17}\b|\b\d{12}\b|"arn:aws:"#,
    )
    .unwrap();
    let remote = regex::Regex::new(
        r#"(?s)data "terraform_remote_state" "(\w+)" \{.*?bucket\s*=\s*var\.state_bucket\s*key\s*=\s*"infra/(stage/[^"$]+)/\$\{var\.\w+\}/terraform\.tfstate""#,
    )
    .unwrap();
    let alias =
        regex::Regex::new(r"(?m)^\s*(\w+)\s*=\s*data\.terraform_remote_state\.(\w+)\.outputs\s*$")
            .unwrap();
    let direct = regex::Regex::new(r"data\.terraform_remote_state\.(\w+)\.outputs\.(\w+)").unwrap();
    let mut errors = Vec::new();
    for dir in &roots {
        let me = interface(dir, &mut errors);
        for v in ["env_name", "image_tags", "state_bucket", "region"] {
            if !me.variables.contains_key(v) {
                errors.push(format!(
                    "{}: no variable {v} (env.sh passes it)",
                    dir.display()
                ));
            }
        }
        let text = module_text(dir);
        if !text.contains("backend \"s3\" {}") {
            errors.push(format!(
                "{}: no empty backend \"s3\" {{}} for env.sh to configure",
                dir.display()
            ));
        }
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            if let Some(m) = hard_coded.find(line) {
                errors.push(format!(
                    "{}: hard-coded {:?}: {line}",
                    dir.display(),
                    m.as_str()
                ));
            }
        }
        // Remote state name -> the root it reads.
        let mut sources: BTreeMap<String, PathBuf> = BTreeMap::new();
        for c in remote.captures_iter(&text) {
            let target = infra.join(&c[2]);
            if !roots.contains(&target) {
                errors.push(format!(
                    "{}: remote state {} of no root {}",
                    dir.display(),
                    &c[1],
                    &c[2]
                ));
            }
            sources.insert(c[1].to_string(), target);
        }
        if text.contains("terraform_remote_state") && sources.is_empty() {
            errors.push(format!(
                "{}: remote state not read from var.state_bucket at env.sh's key",
                dir.display()
            ));
        }
        let mut used: Vec<(String, String)> = direct
            .captures_iter(&text)
            .map(|c| (c[1].to_string(), c[2].to_string()))
            .collect();
        for a in alias.captures_iter(&text) {
            let uses = regex::Regex::new(&format!(r"\blocal\.{}\.(\w+)", &a[1])).unwrap();
            used.extend(
                uses.captures_iter(&text)
                    .map(|u| (a[2].to_string(), u[1].to_string())),
            );
        }
        for (state, output) in used {
            match sources.get(&state) {
                None => errors.push(format!("{}: no remote state {state}", dir.display())),
                Some(target) if !interface(target, &mut Vec::new()).outputs.contains(&output) => {
                    errors.push(format!(
                        "{}: {} has no output {output}",
                        dir.display(),
                        target.display()
                    ))
                }
                Some(_) => {}
            }
        }
    }
    assert_no_problems(&errors);
}

/// infra/README.md says what each module takes and gives: every variable and output of every
/// module is named under the module's heading, and every module has one.
#[test]
fn the_readme_names_every_modules_inputs_and_outputs() {
    let infra = repo_root().join("infra");
    let readme = std::fs::read_to_string(infra.join("README.md")).unwrap();
    let mut errors = Vec::new();
    for dir in module_dirs(&infra.join("modules")) {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let heading = format!("\n### {name}\n");
        let Some(start) = readme.find(&heading) else {
            errors.push(format!("no section \"### {name}\""));
            continue;
        };
        let section = &readme[start + heading.len()..];
        let section = &section[..section.find("\n#").unwrap_or(section.len())];
        let me = interface(&dir, &mut errors);
        for (v, has_default) in &me.variables {
            let named = format!("`{v}{}`", if *has_default { "?" } else { "" });
            if !section.contains(&named) {
                errors.push(format!("{name}: input {named} not named"));
            }
        }
        for o in &me.outputs {
            if !section.contains(&format!("`{o}`")) {
                errors.push(format!("{name}: output `{o}` not named"));
            }
        }
    }
    assert!(
        errors.is_empty(),
        "infra/README.md is out of date:\n{}",
        errors.join("\n")
    );
}
