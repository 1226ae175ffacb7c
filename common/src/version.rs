//! Which build a binary is: its version and the git commit it was built from, for `--version`
//! and the `*_build_info` metric.

/// The git commit the toolkit was built from (captured by `build.rs`), or "unknown".
pub const COMMIT: &str = env!("TOOLKIT_COMMIT");

/// `VERSION (commit COMMIT)`, for clap's `--version` (pass `env!("CARGO_PKG_VERSION")`).
pub fn describe(version: &str) -> &'static str {
    // Built once per process, when the command line is parsed.
    Box::leak(format!("{version} (commit {COMMIT})").into_boxed_str())
}
