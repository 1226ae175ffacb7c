//! What README promises of the command lines: every flag of every tool and subcommand can be
//! given as an environment variable (ECS task definitions set environment, not arguments), and
//! the flags the docs name exist.

use std::collections::BTreeSet;
use std::process::Command;

use tests::workspace_bin;

/// The tools and their `--help` texts, one per command path (`["ca", "init"]`).
fn help_texts(bin: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut todo = vec![Vec::<String>::new()];
    while let Some(path) = todo.pop() {
        let o = Command::new(workspace_bin(bin))
            .args(&path)
            .arg("--help")
            .output()
            .expect("the tool runs");
        assert!(o.status.success(), "{bin} {path:?} --help");
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        for sub in subcommands(&text) {
            let mut p = path.clone();
            p.push(sub);
            todo.push(p);
        }
        out.push((format!("{bin} {}", path.join(" ")), text));
    }
    out
}

/// The names under `Commands:`, without `help`.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(String::from)
        .collect()
}

/// Each `--flag` of a help text with the text that describes it.
fn options(help: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let t = line.trim_start();
        let starts = line.starts_with("  ") && (t.starts_with("--") || t.starts_with('-'));
        let flag = t
            .split([' ', ','])
            .find(|w| w.starts_with("--"))
            .map(|w| w.trim_end_matches(['=', '.']).to_string());
        match (starts, flag) {
            (true, Some(flag)) => out.push((flag, line.to_string())),
            _ => {
                if let Some(last) = out.last_mut() {
                    last.1.push('\n');
                    last.1.push_str(line);
                }
            }
        }
    }
    out
}

const TOOLS: [&str; 3] = ["xds-server", "s3-config-loader", "ecs-sd"];

#[test]
fn every_flag_of_every_command_reads_an_environment_variable() {
    let mut missing = Vec::new();
    let mut seen = 0;
    for bin in TOOLS {
        for (command, help) in help_texts(bin) {
            for (flag, text) in options(&help) {
                if matches!(flag.as_str(), "--help" | "--version") {
                    continue;
                }
                seen += 1;
                if !text.contains("[env: ") {
                    missing.push(format!("{command} {flag}"));
                }
            }
        }
    }
    assert!(seen > 60, "the help texts were read ({seen} flags)");
    assert!(missing.is_empty(), "flags without [env: …]: {missing:#?}");
}

/// Flags the docs name that belong to other programs (Envoy, the AWS CLI, Terraform, …).
const OTHER_PROGRAMS: &[&str] = &[
    "--admin-address-path",
    "--base-id",
    "--bucket",
    "--cluster",
    "--config-path",
    "--config-yaml",
    "--delete",
    "--disable-background-networking",
    "--disable-hot-restart",
    "--disable-gpu",
    "--dump-dom",
    "--endpoint-url",
    "--exact-timestamps",
    "--file-flush-interval-msec",
    "--headless",
    "--key",
    "--mode",
    "--no-sandbox",
    "--region",
    "--service-cluster",
    "--service-node",
    "--task",
    "--tasks",
    "--web.enable-lifecycle",
    "--config.file",
];

#[test]
fn the_flags_the_docs_name_exist() {
    let mut known: BTreeSet<String> = BTreeSet::new();
    for bin in TOOLS.iter().chain(&["demo"]) {
        for (_, help) in help_texts(bin) {
            known.extend(options(&help).into_iter().map(|(f, _)| f));
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut docs = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "md") {
            docs.push(p);
        }
    }
    let flag = regex::Regex::new(r"(?:^|[\s`(\[])(--[a-z][a-z0-9.-]*[a-z0-9])").unwrap();
    let mut unknown = Vec::new();
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap();
        for (n, line) in text.lines().enumerate() {
            for c in flag.captures_iter(line) {
                let f = &c[1];
                if !known.contains(f) && !OTHER_PROGRAMS.contains(&f) {
                    unknown.push(format!("{}:{}: {f}", doc.display(), n + 1));
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "flags the docs name that no --help lists: {unknown:#?}"
    );
}
