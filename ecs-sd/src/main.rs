//! The `ecs-sd` command: flags in, library calls out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use common::cli::LogFormat;
use ecs_sd::discover::Discoverer;
use ecs_sd::metrics::Metrics;
use ecs_sd::run::{self, Published, RunConfig};
use ecs_sd::targets::LabelOptions;

/// Prometheus service discovery for AWS ECS tasks: writes file_sd JSON per scrape interval and
/// serves the same targets over http_sd. Reads the container settings of prometheus-ecs-sd
/// (PROMETHEUS, PROMETHEUS_ENDPOINT, PROMETHEUS_PORT, ...) and prometheus-ecs-discovery's
/// docker labels (PROMETHEUS_EXPORTER_PORT, ...).
#[derive(Parser)]
#[command(version, about, args_override_self = true)]
struct Cli {
    /// Where to write {15s,30s,1m,5m}-tasks.json (required unless --dry-run or --http-listen).
    #[arg(long, env = "ECS_SD_DIRECTORY")]
    directory: Option<PathBuf>,
    /// Time between refreshes, in seconds (as prometheus-ecs-sd) or with a unit (30s, 1m).
    #[arg(long, env = "ECS_SD_INTERVAL", default_value = "60", value_parser = parse_interval)]
    interval: Duration,
    /// The clusters to read (default: every cluster of the account and region).
    #[arg(long, env = "ECS_SD_CLUSTER_ARNS", num_args = 0.., value_delimiter = ',')]
    cluster_arns: Vec<String>,
    /// The file for endpoints without an interval: PREFIX-tasks.json.
    #[arg(
        long,
        env = "ECS_SD_DEFAULT_SCRAPE_INTERVAL_PREFIX",
        default_value = "1m"
    )]
    default_scrape_interval_prefix: String,
    /// Task and task definition tags to add as __meta_ecs_tag_<tag> labels; `*` for all.
    #[arg(long, env = "ECS_SD_TAGS_TO_LABELS", num_args = 0.., value_delimiter = ',')]
    tags_to_labels: Vec<String>,
    /// Serve http_sd (/sd, /sd/{interval}), /metrics and /healthz here.
    #[arg(long, env = "ECS_SD_HTTP_LISTEN")]
    http_listen: Option<SocketAddr>,
    /// The longest delay between refreshes when AWS throttles.
    #[arg(long, env = "ECS_SD_MAX_BACKOFF", default_value = "10m", value_parser = common::duration::parse)]
    max_backoff: Duration,
    /// One refresh; print each target and each skipped container with the reason; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Log filter, e.g. info or debug.
    #[arg(long, env = "ECS_SD_LOG", default_value = "info")]
    log: String,
    /// Log format: text or json.
    #[arg(long, env = "ECS_SD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// Seconds, as prometheus-ecs-sd takes them, or a duration with a unit.
fn parse_interval(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() => Ok(Duration::from_secs_f64(secs)),
        Ok(_) => Err(format!("{s:?}: the interval must be positive")),
        Err(_) => common::duration::parse_positive(s),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    common::cli::init_logs(matches!(cli.log_format, LogFormat::Json), &cli.log)
        .map_err(anyhow::Error::msg)?;
    if cli.directory.is_none() && cli.http_listen.is_none() && !cli.dry_run {
        anyhow::bail!("give --directory (file_sd), --http-listen (http_sd), or --dry-run");
    }
    if let Some(dir) = &cli.directory
        && !dir.is_dir()
    {
        anyhow::bail!(
            "--directory {}: not a directory (it must exist)",
            dir.display()
        );
    }
    let metrics = Metrics::new();
    let config = common::aws::sdk_config().await;
    let labels = LabelOptions {
        default_interval: cli.default_scrape_interval_prefix.clone(),
        tags_to_labels: cli.tags_to_labels.clone(),
    };
    let mut discoverer = Discoverer::new(
        &config,
        metrics.clone(),
        cli.cluster_arns.clone(),
        !cli.tags_to_labels.is_empty(),
    );
    if cli.dry_run {
        let d = run::refresh(&mut discoverer, &labels, &metrics).await?;
        for (interval, groups) in &d.by_interval {
            for g in groups {
                let task = g
                    .labels
                    .get("__meta_ecs_task_arn")
                    .map(String::as_str)
                    .unwrap_or("");
                println!(
                    "{interval}-tasks.json  {}  {}  job={}  {task}",
                    g.targets[0], g.labels["metrics_path"], g.labels["job"]
                );
            }
        }
        for s in &d.skipped {
            println!(
                "skipped  {} {}  {}: {}",
                s.task, s.container, s.reason, s.detail
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let published = Published::default();
    if let Some(addr) = cli.http_listen {
        let router = run::router(published.clone(), metrics.clone());
        tokio::spawn(async move {
            if let Err(e) = common::admin::serve(addr, router).await {
                tracing::error!(%addr, error = %e, "cannot serve HTTP");
                std::process::exit(1);
            }
        });
    }
    let run_config = RunConfig {
        directory: cli.directory,
        interval: cli.interval,
        labels,
        max_backoff: cli.max_backoff,
    };
    run::run(
        discoverer,
        run_config,
        metrics,
        published,
        common::cli::shutdown_signal(),
    )
    .await;
    Ok(ExitCode::SUCCESS)
}
