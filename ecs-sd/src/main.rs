//! The `ecs-sd` command: flags in, library calls out.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use common::cli::LogFormat;
use ecs_sd::discover::Discoverer;
use ecs_sd::metrics::Metrics;
use ecs_sd::output;
use ecs_sd::run::{self, Published, RunConfig};
use ecs_sd::targets::{LabelOptions, TargetGroup};

/// Prometheus service discovery for AWS ECS tasks: writes file_sd JSON per scrape interval and
/// serves the same targets over http_sd. Reads the container settings of prometheus-ecs-sd
/// (PROMETHEUS, PROMETHEUS_ENDPOINT, PROMETHEUS_PORT, ...) and prometheus-ecs-discovery's
/// docker labels (PROMETHEUS_EXPORTER_PORT, ...). Every flag also reads the environment
/// variable shown.
#[derive(Parser)]
#[command(version = common::version::describe(), about, args_override_self = true)]
struct Cli {
    /// Where to write {15s,30s,1m,5m}-tasks.json, created when missing (required unless
    /// --dry-run or --http-listen).
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
    /// One refresh; print each target, each skipped container with the reason, and a summary;
    /// write nothing. A cluster of --cluster-arns that is not found makes it fail.
    #[arg(long, env = "ECS_SD_DRY_RUN")]
    dry_run: bool,
    /// What --dry-run prints: text (targets, skipped containers, a summary; the default) or
    /// json (exactly the file_sd JSON of each file, by file name; the summary goes to stderr).
    #[arg(long, env = "ECS_SD_OUTPUT", value_enum)]
    output: Option<Output>,
    /// Log filter, e.g. info or debug.
    #[arg(long, env = "ECS_SD_LOG", default_value = "info")]
    log: String,
    /// Log format: text or json.
    #[arg(long, env = "ECS_SD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// What `--dry-run` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    /// Targets, skipped containers and a summary, for people.
    Text,
    /// `{"FILE": [target groups], ...}`: each file's JSON as ecs-sd would write it.
    Json,
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
    // Checked here, not by clap: ECS_SD_DRY_RUN=false is no --dry-run.
    if cli.output.is_some() && !cli.dry_run {
        Cli::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--output (ECS_SD_OUTPUT) says what --dry-run prints: give --dry-run too",
            )
            .exit();
    }
    common::cli::init_logs(cli.log_format, &cli.log).map_err(anyhow::Error::msg)?;
    if cli.directory.is_none() && cli.http_listen.is_none() && !cli.dry_run {
        anyhow::bail!("give --directory (file_sd), --http-listen (http_sd), or --dry-run");
    }
    // A dry run writes nothing, not even the directory.
    if let Some(dir) = cli.directory.as_ref().filter(|_| !cli.dry_run) {
        std::fs::create_dir_all(dir).with_context(|| format!("--directory {}", dir.display()))?;
    }
    let metrics = Metrics::with_intervals(&[cli.default_scrape_interval_prefix.as_str()]);
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
        let format = cli.output.unwrap_or(Output::Text);
        return dry_run(&mut discoverer, &labels, &metrics, format).await;
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

/// One refresh, printed; exit 1 when a cluster is not found (a typo in --cluster-arns must not
/// look like a cluster without tasks).
async fn dry_run(
    discoverer: &mut Discoverer,
    labels: &LabelOptions,
    metrics: &Metrics,
    format: Output,
) -> anyhow::Result<ExitCode> {
    let d = run::refresh(discoverer, labels, metrics).await?;
    match format {
        Output::Json => {
            let files: BTreeMap<String, &[TargetGroup]> = d
                .by_interval
                .iter()
                .map(|(interval, groups)| (output::file_name(interval), groups.as_slice()))
                .collect();
            println!("{}", String::from_utf8_lossy(&output::pretty(&files)));
            eprintln!("{}", d.summary());
        }
        Output::Text => {
            for (interval, groups) in &d.by_interval {
                for g in groups {
                    let task = g
                        .labels
                        .get("__meta_ecs_task_arn")
                        .map(String::as_str)
                        .unwrap_or("");
                    println!(
                        "{}  {}  {}  job={}  {task}",
                        output::file_name(interval),
                        g.targets[0],
                        g.labels["metrics_path"],
                        g.labels["job"]
                    );
                }
            }
            for s in &d.skipped {
                println!(
                    "skipped  {} {}  {}: {}",
                    s.task, s.container, s.reason, s.detail
                );
            }
            println!("{}", d.summary());
        }
    }
    let missing = discoverer.missing_clusters();
    // What the refresh went without besides those clusters (hosts SSM does not know).
    let clusters: Vec<String> = missing.iter().map(|c| format!("cluster {c}")).collect();
    for (subject, problem) in discoverer.problems() {
        if !clusters.contains(subject) {
            eprintln!("warning: {subject}: {problem}");
        }
    }
    if missing.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("ecs-sd: cluster not found: {}", missing.join(", "));
        Ok(ExitCode::FAILURE)
    }
}
