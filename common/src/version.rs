//! Which build a binary is: its version and the git commit it was built from, for `--version`
//! and the `*_build_info` metric.

/// The git commit the toolkit was built from (captured by `build.rs`), or "unknown".
pub const COMMIT: &str = env!("TOOLKIT_COMMIT");

/// The toolkit's version: every crate of the workspace has the workspace's.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `VERSION (commit COMMIT)`, for clap's `--version` of every binary.
pub fn describe() -> &'static str {
    // Built once per process, when the command line is parsed.
    Box::leak(format!("{VERSION} (commit {COMMIT})").into_boxed_str())
}
