//! What every binary's `main` does the same way: logs and graceful shutdown.

/// How logs are written (`--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text, for people.
    #[default]
    Text,
    /// JSON, one object a line, for CloudWatch and other collectors.
    Json,
}

/// Logs to stderr: `json` for CloudWatch and other collectors, text otherwise; `filter` is an
/// env-filter expression such as `info` or `xds_server=debug`.
pub fn init_logs(json: bool, filter: &str) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| format!("invalid log filter {filter:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
    Ok(())
}

/// Completes on SIGTERM (what ECS sends to stop a task) or Ctrl-C.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
