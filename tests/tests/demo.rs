//! The demo binary's command line: help without starting anything, and a clear word when Envoy
//! is missing.

use std::process::Command;

use tests::workspace_bin;

#[test]
fn demo_help_prints_usage_and_starts_nothing() {
    let out = Command::new(workspace_bin("demo"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("usage: demo [--serve]"), "{text}");
    let bad = Command::new(workspace_bin("demo"))
        .arg("--serv")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown argument \"--serv\""));
}

#[test]
fn demo_says_how_to_get_envoy_when_it_is_missing() {
    let out = Command::new(workspace_bin("demo"))
        .env("ENVOY_BIN", "/nonexistent/envoy")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("Envoy not found at /nonexistent/envoy") && text.contains("ENVOY_BIN"),
        "{text}"
    );
}
