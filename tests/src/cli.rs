//! What every binary's command line promises: `--version` with the commit, an environment
//! variable for every flag, logs without colour codes when they do not go to a terminal.

use std::process::Command;

use crate::workspace_bin;

/// The flags in a `--help` text that name no environment variable (`--help` and `--version`
/// left out: they have none, on purpose).
pub fn flags_without_env(help: &str) -> Vec<String> {
    // An option's entry starts with its flags, indented, and runs until the next one.
    let mut entries: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if (1..=6).contains(&indent) && trimmed.starts_with('-') {
            let flag = trimmed
                .split([' ', ','])
                .find(|w| w.starts_with("--"))
                .unwrap_or(trimmed)
                .to_string();
            entries.push((flag, String::new()));
        }
        if let Some((_, text)) = entries.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    entries
        .into_iter()
        .filter(|(flag, text)| flag != "--help" && flag != "--version" && !text.contains("[env: "))
        .map(|(flag, _)| flag)
        .collect()
}

/// `BIN --help` (or `BIN SUBCOMMAND --help`), which must succeed.
pub fn help(bin: &str, args: &[&str]) -> String {
    let out = Command::new(workspace_bin(bin))
        .args(args)
        .arg("--help")
        .output()
        .expect("the binary runs");
    assert!(out.status.success(), "{bin} {args:?} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The commit `BIN --version` names (`BIN VERSION (commit COMMIT)`), checked against the
/// workspace's version: 40 hex digits, or "unknown" where the build had no git.
pub fn version_commit(bin: &str) -> String {
    let out = Command::new(workspace_bin(bin))
        .arg("--version")
        .output()
        .expect("the binary runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let pattern = format!(
        r"^{} {} \(commit ([0-9a-f]{{40}}|unknown)\)$",
        regex::escape(bin),
        regex::escape(env!("CARGO_PKG_VERSION"))
    );
    let caps = regex::Regex::new(&pattern)
        .unwrap()
        .captures(&text)
        .unwrap_or_else(|| panic!("{bin} --version printed {text:?}"))
        .get(1)
        .unwrap()
        .as_str()
        .to_string();
    // Built from a git checkout (CI clones one), the commit is known.
    let in_git = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(crate::repo_root())
        .output()
        .is_ok_and(|o| o.status.success());
    if in_git {
        assert_ne!(caps, "unknown", "{bin} was built in a git checkout");
    }
    caps
}

/// Whether `text` holds a terminal escape sequence (colours).
pub fn has_escape_codes(text: &str) -> bool {
    text.contains('\u{1b}')
}

/// `xds-server validate CATALOG --envoy ENVOY` passes: our checks and Envoy 1.40's own.
pub fn assert_envoy_accepts(catalog: &std::path::Path) {
    let out = Command::new(workspace_bin("xds-server"))
        .arg("validate")
        .arg(catalog)
        .arg("--envoy")
        .arg(crate::process::envoy_bin())
        .env_remove("XDS_SERVER_VALIDATE_ENVOY")
        .output()
        .expect("xds-server validate runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout, "ok\n");
}

/// Waits for the admin port `port` of `bin` to serve `/metrics` and asserts that it does from
/// the start: each of `series` (`NAME{LABELS} 0`, before anything happened) and
/// `PREFIX_build_info{commit, version} 1`, the commit `--version` names. The metrics text.
pub fn metrics_from_the_start(port: u16, bin: &str, prefix: &str, series: &[&str]) -> String {
    let what = format!("{bin}'s /metrics");
    crate::wait_for(&what, std::time::Duration::from_secs(20), || {
        crate::http::get(port, "/metrics", &[])
            .ok()
            .filter(|r| r.status == 200)
    });
    let text = crate::http::get(port, "/metrics", &[]).unwrap().body;
    for sample in series {
        assert!(text.contains(sample), "{sample} missing:\n{text}");
    }
    let build_info = format!(
        "{prefix}_build_info{{commit=\"{}\",version=\"{}\"}} 1",
        version_commit(bin),
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.contains(&build_info), "{build_info} missing:\n{text}");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_flags_without_an_environment_variable() {
        let help = "Usage: x [OPTIONS]\n\nOptions:\n      --interval <INTERVAL>\n          Time between passes\n\n          [env: X_INTERVAL=]\n\n      --dry-run\n          One pass\n\n  -h, --help\n          Print help\n  -V, --version\n          Print version\n";
        assert_eq!(flags_without_env(help), ["--dry-run"]);
    }
}
