//! The CI definitions in infra/ci/ (GitHub Actions and CircleCI), parsed as their CI parses
//! them: both build and apply environments for exactly develop, infra* and test*, nothing for
//! other branches, drop deleted branches' environments on a schedule, and call only scripts
//! that exist in the repository.

use serde_json::Value;
use tests::repo_root;

fn yaml(name: &str) -> Value {
    let path = repo_root().join("infra/ci").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Branch names and whether CI makes their environment (the seed's rule).
const BRANCHES: &[(&str, bool)] = &[
    ("develop", true),
    ("infra1", true),
    ("infra2", true),
    ("infra/tls", true),
    ("test", true),
    ("test3", true),
    ("testing-ui", true),
    ("main", false),
    ("master", false),
    ("develop2", false),
    ("feature/ATA-1-infra", false),
    ("my-test", false),
    ("hotfix/test1", false),
    ("Infra1", false),
];

/// GitHub's branch filter patterns: `*` matches anything but `/`, `**` anything.
fn github_matches(pattern: &str, branch: &str) -> bool {
    let mut re = String::from("^");
    let mut rest = pattern;
    while let Some(c) = rest.chars().next() {
        if let Some(r) = rest.strip_prefix("**") {
            re.push_str(".*");
            rest = r;
        } else if let Some(r) = rest.strip_prefix('*') {
            re.push_str("[^/]*");
            rest = r;
        } else {
            re.push_str(&regex::escape(&c.to_string()));
            rest = &rest[c.len_utf8()..];
        }
    }
    re.push('$');
    regex::Regex::new(&re).unwrap().is_match(branch)
}

/// CircleCI's branch filters: a name, or a /regex/ that must match the whole name.
fn circleci_matches(filter: &str, branch: &str) -> bool {
    match filter.strip_prefix('/').and_then(|f| f.strip_suffix('/')) {
        Some(re) => regex::Regex::new(&format!("^(?:{re})$"))
            .unwrap()
            .is_match(branch),
        None => filter == branch,
    }
}

/// Every `infra/....sh` a command names exists and is executable; returns them in order.
fn scripts_called(commands: &[&str]) -> Vec<String> {
    let script = regex::Regex::new(r"infra/[A-Za-z0-9_/.-]+\.sh").unwrap();
    let mut out = Vec::new();
    for command in commands {
        for m in script.find_iter(command) {
            let path = repo_root().join(m.as_str());
            let meta = std::fs::metadata(&path)
                .unwrap_or_else(|e| panic!("{command}: {}: {e}", path.display()));
            use std::os::unix::fs::PermissionsExt;
            assert!(
                meta.permissions().mode() & 0o111 != 0,
                "{} is not executable",
                path.display()
            );
            out.push(m.as_str().to_string());
        }
    }
    out
}

#[test]
fn github_actions_makes_environments_for_exactly_develop_infra_and_test_branches() {
    let w = yaml("github-actions.yml");
    let on = &w["on"];
    let patterns: Vec<&str> = on["push"]["branches"]
        .as_array()
        .unwrap_or_else(|| panic!("no on.push.branches: {on}"))
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for (branch, built) in BRANCHES {
        assert_eq!(
            patterns.iter().any(|p| github_matches(p, branch)),
            *built,
            "{branch} with {patterns:?}"
        );
    }
    assert!(on["push"].get("branches-ignore").is_none());
    assert!(on["schedule"][0]["cron"].is_string(), "{on}");

    let jobs = w["jobs"].as_object().unwrap();
    let runs = |job: &str| -> Vec<&str> {
        jobs[job]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["run"].as_str())
            .collect()
    };
    // Pushes build and apply; the schedule only drops.
    assert_eq!(jobs["environment"]["if"], "github.event_name == 'push'");
    assert_eq!(
        scripts_called(&runs("environment")),
        ["infra/build-images.sh", "infra/ci/apply-branch.sh"]
    );
    assert!(
        jobs["drop-deleted-branches"]["if"]
            .as_str()
            .unwrap()
            .contains("github.event_name == 'schedule'")
    );
    assert_eq!(
        scripts_called(&runs("drop-deleted-branches")),
        ["infra/ci/drop-deleted-branches.sh"]
    );
    // The image tag counts revisions: the checkout must hold the whole history.
    for job in ["environment", "drop-deleted-branches"] {
        let checkout = &jobs[job]["steps"][0];
        assert_eq!(checkout["uses"], "actions/checkout@v4", "{job}");
        assert_eq!(checkout["with"]["fetch-depth"], 0, "{job}");
    }
    assert_eq!(
        jobs["environment"]["env"]["BRANCH"],
        "${{ github.ref_name }}"
    );
    // One apply per branch at a time, and the nightly job in a group of its own: a group keeps
    // one running and one pending run, so a shared one would let the nightly run's pending
    // entry cancel a pending develop deploy.
    assert!(w.get("concurrency").is_none(), "a workflow-wide group: {w}");
    let group = |job: &str| {
        jobs[job]["concurrency"]["group"]
            .as_str()
            .unwrap_or_default()
    };
    assert_eq!(group("environment"), "environment-${{ github.ref_name }}");
    assert_eq!(
        jobs["environment"]["concurrency"]["cancel-in-progress"],
        false
    );
    assert!(
        !group("drop-deleted-branches").is_empty()
            && group("drop-deleted-branches") != group("environment")
            && !group("drop-deleted-branches").contains("ref_name"),
        "{}",
        group("drop-deleted-branches")
    );
}

#[test]
fn circleci_makes_environments_for_exactly_develop_infra_and_test_branches() {
    let c = yaml("circleci-config.yml");
    assert_eq!(c["version"], 2.1);
    let workflow = &c["workflows"]["environments"]["jobs"];
    let jobs: Vec<&serde_json::Map<String, Value>> = workflow
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j.as_object().unwrap())
        .collect();
    assert_eq!(jobs.len(), 1, "{workflow}");
    let filters: Vec<&str> = jobs[0]["environment"]["filters"]["branches"]["only"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    for (branch, built) in BRANCHES {
        assert_eq!(
            filters.iter().any(|f| circleci_matches(f, branch)),
            *built,
            "{branch} with {filters:?}"
        );
    }
    let nightly = &c["workflows"]["nightly"];
    assert!(
        nightly["triggers"][0]["schedule"]["cron"].is_string(),
        "{nightly}"
    );
    assert!(
        nightly["jobs"][0]
            .as_object()
            .unwrap()
            .contains_key("drop-deleted-branches")
    );
    let commands = |job: &str| -> Vec<&str> {
        c["jobs"][job]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["run"]["command"].as_str())
            .collect()
    };
    let environment = commands("environment");
    assert_eq!(
        scripts_called(&environment),
        ["infra/build-images.sh", "infra/ci/apply-branch.sh"]
    );
    assert!(
        environment
            .iter()
            .all(|c| c.starts_with("BRANCH=\"$CIRCLE_BRANCH\"")),
        "{environment:?}"
    );
    assert_eq!(
        scripts_called(&commands("drop-deleted-branches")),
        ["infra/ci/drop-deleted-branches.sh"]
    );
    // One apply per branch at a time, across pipelines.
    assert_eq!(
        jobs[0]["environment"]["serial-group"],
        "<< pipeline.project.slug >>/environment-<< pipeline.git.branch >>"
    );
    assert!(nightly["jobs"][0]["drop-deleted-branches"]["serial-group"].is_string());
    // AWS credentials by OIDC when the context names a role: the token goes to the file the
    // AWS CLI, SDKs and Terraform read, before anything calls AWS.
    let oidc = c["commands"]["aws-credentials"]["steps"][0]["run"]["command"]
        .as_str()
        .unwrap_or_default();
    assert!(
        oidc.contains("$CIRCLE_OIDC_TOKEN_V2") && oidc.contains("AWS_WEB_IDENTITY_TOKEN_FILE"),
        "{oidc}"
    );
    for job in ["environment", "drop-deleted-branches"] {
        let steps: Vec<&str> = c["jobs"][job]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s.as_str())
            .collect();
        assert_eq!(steps[..2], ["checkout", "aws-credentials"], "{job}");
    }
    // Every step names a command the config defines, or CircleCI's own checkout.
    for job in ["environment", "drop-deleted-branches"] {
        for step in c["jobs"][job]["steps"].as_array().unwrap() {
            if let Some(name) = step.as_str() {
                assert!(
                    name == "checkout" || c["commands"].get(name).is_some(),
                    "{job}: unknown step {name}"
                );
            }
        }
    }
}
