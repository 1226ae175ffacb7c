//! The `s3-config-loader` command: flags in, library calls out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use common::cli::LogFormat;
use common::files::FileOptions;
use s3_config_loader::hooks::{Hooks, SignalTarget};
use s3_config_loader::metrics::Metrics;
use s3_config_loader::run::{self, RunConfig};
use s3_config_loader::sync::{SyncConfig, Syncer, Target};
use s3_config_loader::template::EnvPolicy;
use s3_config_loader::{S3Location, s3_client};

/// Fetches configuration from S3 to local files, keeps it fresh, swaps files atomically and
/// runs reload hooks when they change. Every flag also reads the environment variable shown.
#[derive(Parser)]
#[command(version = common::version::describe(), about, args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch one object to a file (once; with --interval, keep it fresh).
    Get {
        /// s3://BUCKET/KEY
        source: S3Location,
        /// The file to write.
        file: PathBuf,
        /// Keep running and re-check every INTERVAL (default: fetch once and exit).
        #[arg(long, env = "S3_CONFIG_LOADER_INTERVAL", value_parser = common::duration::parse_positive)]
        interval: Option<Duration>,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Mirror every object under a prefix into a directory, keeping it fresh.
    Sync {
        /// s3://BUCKET/PREFIX/
        source: S3Location,
        /// The directory to write into.
        dir: PathBuf,
        /// One pass, then exit: 0 when every object is in place, 1 otherwise, also when the
        /// prefix lists no objects unless --allow-empty (init containers).
        #[arg(long, env = "S3_CONFIG_LOADER_ONCE")]
        once: bool,
        /// Time between passes, 30s when not given (±10% jitter); not with --once.
        #[arg(long, env = "S3_CONFIG_LOADER_INTERVAL", value_parser = common::duration::parse_positive)]
        interval: Option<Duration>,
        /// Remove files this loader wrote whose objects are gone.
        #[arg(long, env = "S3_CONFIG_LOADER_DELETE")]
        delete: bool,
        /// Publish each changed set of files together: files live in a generation directory
        /// behind the `..data` symlink (as Kubernetes ConfigMap volumes), swapped in one rename.
        #[arg(long, env = "S3_CONFIG_LOADER_ATOMIC_SET")]
        atomic_set: bool,
        /// Accept a prefix that lists no objects (by default an error: more likely a wrong
        /// bucket or prefix than a wish for an empty directory); with --delete, its files go.
        #[arg(long, env = "S3_CONFIG_LOADER_ALLOW_EMPTY")]
        allow_empty: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
}

/// Time between `sync` passes when --interval is not given.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Args)]
struct CommonArgs {
    /// With a single pass: exit 0 from the files already in place when S3 cannot be reached.
    #[arg(long, env = "S3_CONFIG_LOADER_ALLOW_STALE")]
    allow_stale: bool,
    /// Check each new file before it replaces the old one (a shell command); `{}` is the
    /// staged file's path, passed as $1 and never pasted into the command, e.g.
    /// "envoy --mode validate -c {}". A failure keeps the old file.
    #[arg(long, env = "S3_CONFIG_LOADER_VALIDATE")]
    validate: Option<String>,
    /// Run this shell command after a pass that changed files (S3CL_CHANGED lists them).
    #[arg(long, env = "S3_CONFIG_LOADER_ON_CHANGE")]
    on_change: Option<String>,
    /// Time allowed for --validate and --on-change commands.
    #[arg(long, env = "S3_CONFIG_LOADER_HOOK_TIMEOUT", default_value = "30s", value_parser = common::duration::parse)]
    hook_timeout: Duration,
    /// Signal a process after a change: PID[:SIGNAL] or pidfile:PATH[:SIGNAL] (default HUP).
    #[arg(long, env = "S3_CONFIG_LOADER_SIGNAL", value_delimiter = ',')]
    signal: Vec<SignalTarget>,
    /// POST to this http:// URL after a change (e.g. http://127.0.0.1:9090/-/reload).
    #[arg(long, env = "S3_CONFIG_LOADER_POST", value_delimiter = ',')]
    post: Vec<String>,
    /// Templates read only environment variables whose names start with this ('' for none:
    /// then only those given with --template-env).
    #[arg(
        long,
        env = "S3_CONFIG_LOADER_TEMPLATE_ENV_PREFIX",
        default_value = "S3CL_",
        value_name = "PREFIX"
    )]
    template_env_prefix: String,
    /// An environment variable templates may read without the prefix (repeatable).
    #[arg(
        long = "template-env",
        env = "S3_CONFIG_LOADER_TEMPLATE_ENV",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    template_env: Vec<String>,
    /// Refuse objects larger than this: bytes, or with a unit (10MiB, 512KiB, 1GB).
    #[arg(long, env = "S3_CONFIG_LOADER_MAX_SIZE", default_value = "10MiB", value_parser = s3_config_loader::size::parse)]
    max_size: u64,
    /// Permission bits of written files, in octal (e.g. 644).
    #[arg(long, env = "S3_CONFIG_LOADER_MODE", value_parser = parse_mode)]
    mode: Option<u32>,
    /// Owner user id of written files.
    #[arg(long, env = "S3_CONFIG_LOADER_UID")]
    uid: Option<u32>,
    /// Owner group id of written files.
    #[arg(long, env = "S3_CONFIG_LOADER_GID")]
    gid: Option<u32>,
    /// Objects handled at once: downloaded, rendered, validated and written side by side.
    #[arg(long, env = "S3_CONFIG_LOADER_CONCURRENCY", default_value_t = 32)]
    concurrency: usize,
    /// Serve /metrics and /healthz here.
    #[arg(long, env = "S3_CONFIG_LOADER_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// Log format: text or json.
    #[arg(long, env = "S3_CONFIG_LOADER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter, e.g. info or debug.
    #[arg(long, env = "S3_CONFIG_LOADER_LOG", default_value = "info")]
    log: String,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not an octal file mode like 644"))
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let (source, target, once, interval, delete, atomic_set, allow_empty, c) = match cli.command {
        Command::Get {
            source,
            file,
            interval,
            common,
        } => {
            if source.key.is_empty() || source.key.ends_with('/') {
                anyhow::bail!(
                    "{source}: `get` needs the key of one object (use `sync` for a prefix)"
                );
            }
            let once = interval.is_none();
            (
                source,
                Target::File(file),
                once,
                interval.unwrap_or_default(),
                false,
                false,
                false,
                common,
            )
        }
        Command::Sync {
            source,
            dir,
            once,
            interval,
            delete,
            atomic_set,
            allow_empty,
            common,
        } => {
            // Checked here, not by clap: S3_CONFIG_LOADER_ONCE=false is not --once.
            if once && interval.is_some() {
                Cli::command()
                    .error(
                        clap::error::ErrorKind::ArgumentConflict,
                        "--once makes one pass: --interval (S3_CONFIG_LOADER_INTERVAL) cannot be used with it",
                    )
                    .exit();
            }
            (
                source,
                Target::Dir(dir),
                once,
                interval.unwrap_or(DEFAULT_INTERVAL),
                delete,
                atomic_set,
                allow_empty,
                common,
            )
        }
    };
    common::cli::init_logs(c.log_format, &c.log).map_err(anyhow::Error::msg)?;
    let metrics = Metrics::new();
    if let Some(addr) = c.admin_listen {
        let router = common::admin::router(metrics.registry.clone());
        tokio::spawn(async move {
            if let Err(e) = common::admin::serve(addr, router).await {
                tracing::error!(%addr, error = %e, "cannot serve the admin port");
            }
        });
    }
    let config = SyncConfig {
        source,
        target,
        delete,
        max_size: c.max_size,
        file: FileOptions {
            mode: c.mode,
            uid: c.uid,
            gid: c.gid,
        },
        validate: c.validate,
        validate_timeout: c.hook_timeout,
        concurrency: c.concurrency,
        atomic_set,
        allow_empty,
        template_env: EnvPolicy {
            prefix: c.template_env_prefix,
            allow: c
                .template_env
                .into_iter()
                .filter(|n| !n.is_empty())
                .collect(),
        },
    };
    let run_config = RunConfig {
        once,
        interval,
        allow_stale: c.allow_stale,
        hooks: Hooks {
            on_change: c.on_change,
            timeout: c.hook_timeout,
            signals: c.signal,
            posts: c.post,
        },
    };
    let mut syncer = Syncer::new(s3_client().await, config, metrics.clone());
    match run::run(
        &mut syncer,
        &run_config,
        &metrics,
        common::cli::shutdown_signal(),
    )
    .await
    {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("s3-config-loader: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
