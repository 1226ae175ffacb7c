//! The `xds-server` command: flags in, library calls out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use common::cli::LogFormat;
use xds_server::bootstrap::{self, BootstrapConfig};
use xds_server::catalog::{self, ProxyName};
use xds_server::discovery::DiscoveryConfig;
use xds_server::render;
use xds_server::serve::{self, CatalogLocation, ServeConfig};

/// gRPC xDS control plane for generic Envoy proxies on AWS ECS.
#[derive(Parser)]
#[command(version, about, args_override_self = true)]
struct Cli {
    /// Log format: `text` for people, `json` for CloudWatch and other collectors.
    #[arg(
        long,
        global = true,
        env = "XDS_SERVER_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    /// Log filter, e.g. `info` or `xds_server=debug`.
    #[arg(long, global = true, env = "XDS_SERVER_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Yaml,
}

#[derive(Subcommand)]
enum Command {
    /// Serve xDS to Envoy proxies from a catalog, following its changes.
    Serve {
        /// The catalog: a YAML or JSON file, or s3://BUCKET/KEY; or a directory, or
        /// s3://BUCKET/PREFIX/, whose YAML and JSON files are fragments merged into one catalog
        /// (each a whole catalog on its own, names unique across them). Re-read when it changes.
        #[arg(long, env = "XDS_SERVER_CATALOG")]
        catalog: CatalogLocation,
        /// Address of the xDS gRPC server (ADS and CDS/EDS/LDS/RDS, SotW and delta).
        #[arg(long, env = "XDS_SERVER_XDS_LISTEN", default_value = "0.0.0.0:18000")]
        xds_listen: SocketAddr,
        /// Address of the admin HTTP server (/metrics, /healthz, /readyz, /debug/...).
        #[arg(long, env = "XDS_SERVER_ADMIN_LISTEN", default_value = "0.0.0.0:18001")]
        admin_listen: SocketAddr,
        /// How often the catalog (file, directory, object or prefix) is checked for changes.
        #[arg(long, env = "XDS_SERVER_CATALOG_INTERVAL", default_value = "1s", value_parser = parse_duration)]
        catalog_interval: Duration,
        /// How often endpoint files are checked for changes.
        #[arg(long, env = "XDS_SERVER_FILE_INTERVAL", default_value = "1s", value_parser = parse_duration)]
        file_interval: Duration,
        /// How often Cloud Map and ECS sources are polled (±10% jitter).
        #[arg(long, env = "XDS_SERVER_DISCOVERY_INTERVAL", default_value = "5s", value_parser = parse_duration)]
        discovery_interval: Duration,
        /// The longest delay between polls of a source that AWS throttles.
        #[arg(long, env = "XDS_SERVER_MAX_BACKOFF", default_value = "5m", value_parser = parse_duration)]
        max_backoff: Duration,
        /// Quiet time gathered before pushing, so a burst of changes gives one push.
        #[arg(long, env = "XDS_SERVER_DEBOUNCE", default_value = "100ms", value_parser = parse_duration)]
        debounce: Duration,
        /// How long streams get to close on SIGTERM before the server exits.
        #[arg(long, env = "XDS_SERVER_DRAIN", default_value = "5s", value_parser = parse_duration)]
        drain: Duration,
    },
    /// Check a catalog: prints "ok", or every error found and exits 1.
    Validate {
        /// The catalog: a file, or a directory of fragments.
        path: PathBuf,
    },
    /// Print the resources a proxy would get (listeners, routes, clusters, endpoints).
    Render {
        /// The catalog: a file, or a directory of fragments.
        #[arg(long, env = "XDS_SERVER_CATALOG")]
        catalog: PathBuf,
        /// The proxy (a key of `proxies`).
        #[arg(long)]
        proxy: String,
        /// Output format.
        #[arg(long, default_value = "json")]
        format: Format,
    },
    /// Print the bootstrap of the generic Envoy image for one proxy role.
    Bootstrap {
        /// The proxy role; becomes `node.cluster`.
        #[arg(long, env = "XDS_SERVER_PROXY")]
        proxy: String,
        /// The control plane, HOST:PORT.
        #[arg(long, env = "XDS_SERVER_XDS")]
        xds: String,
        /// This Envoy's `node.id` (default: the ECS task ARN, from the task metadata endpoint, when
        /// ECS_CONTAINER_METADATA_URI_V4 is set; else PROXY-HOSTNAME).
        #[arg(long, env = "XDS_SERVER_NODE_ID")]
        node_id: Option<String>,
        /// Envoy's admin address.
        #[arg(long, env = "XDS_SERVER_ENVOY_ADMIN", default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// Also open a listener here that serves only GET /stats/prometheus and GET /ready from
        /// the admin interface (404 for the rest), so the admin can stay on loopback.
        #[arg(long, env = "XDS_SERVER_ENVOY_STATS_LISTEN")]
        stats_listen: Option<SocketAddr>,
        /// Use the delta (incremental) xDS protocol.
        #[arg(long, env = "XDS_SERVER_DELTA")]
        delta: bool,
        /// The longest pause between Envoy's attempts to reach the control plane again (the
        /// first is 250ms, then doubling), so proxies are back within seconds of a deploy.
        #[arg(long, env = "XDS_SERVER_XDS_RETRY_MAX", default_value = "2s", value_parser = parse_duration)]
        xds_retry_max: Duration,
        /// Output format.
        #[arg(long, default_value = "yaml")]
        format: Format,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    common::duration::parse_positive(s)
}

fn print(value: &serde_json::Value, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => print!("{}", serde_saphyr::to_string(value)?),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            catalog,
            xds_listen,
            admin_listen,
            catalog_interval,
            file_interval,
            discovery_interval,
            max_backoff,
            debounce,
            drain,
        } => {
            common::cli::init_logs(matches!(cli.log_format, LogFormat::Json), &cli.log)
                .map_err(anyhow::Error::msg)?;
            let config = ServeConfig {
                catalog,
                xds_listen,
                admin_listen,
                catalog_interval,
                debounce,
                discovery: DiscoveryConfig {
                    file_interval,
                    aws_interval: discovery_interval,
                    max_backoff,
                    ..DiscoveryConfig::default()
                },
                drain,
            };
            serve::serve(config, common::cli::shutdown_signal()).await?;
        }
        Command::Validate { path } => match catalog::load_path(&path) {
            Ok(_) => println!("ok"),
            Err(e) => {
                eprintln!("{e}");
                return Ok(ExitCode::FAILURE);
            }
        },
        Command::Render {
            catalog,
            proxy,
            format,
        } => {
            let loaded = match catalog::load_path(&catalog) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::FAILURE);
                }
            };
            let proxy = ProxyName(proxy);
            if !loaded.catalog.proxies.contains_key(&proxy) {
                let known: Vec<&str> = loaded
                    .catalog
                    .proxies
                    .keys()
                    .map(|p| p.0.as_str())
                    .collect();
                eprintln!(
                    "{}: no proxy {:?} (the catalog has: {})",
                    catalog.display(),
                    proxy.0,
                    known.join(", ")
                );
                return Ok(ExitCode::FAILURE);
            }
            common::cli::init_logs(matches!(cli.log_format, LogFormat::Json), "warn")
                .map_err(anyhow::Error::msg)?;
            print(&render::render_proxy(&loaded, &proxy).await?, format)?;
        }
        Command::Bootstrap {
            proxy,
            xds,
            node_id,
            admin,
            stats_listen,
            delta,
            xds_retry_max,
            format,
        } => {
            let (xds_host, xds_port) = bootstrap::parse_host_port(&xds).context("--xds")?;
            let node_id = match node_id {
                Some(id) => id,
                None if std::env::var_os("ECS_CONTAINER_METADATA_URI_V4").is_some() => {
                    let meta = s3_config_loader::template::ecs_metadata()
                        .await
                        .context("node.id from the ECS task metadata")?;
                    meta.get("ecs.TaskARN")
                        .cloned()
                        .context("the ECS task metadata has no TaskARN")?
                }
                None => {
                    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                        .map(|h| h.trim().to_string())
                        .unwrap_or_else(|_| "envoy".into());
                    format!("{proxy}-{host}")
                }
            };
            let config = BootstrapConfig {
                proxy,
                node_id,
                xds_host,
                xds_port,
                admin,
                stats_listen,
                delta,
                retry_max: xds_retry_max,
            };
            print(&bootstrap::bootstrap(&config), format)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
