//! The `xds-server` command: flags in, library calls out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use common::cli::LogFormat;
use xds_server::bootstrap::{self, BootstrapConfig};
use xds_server::ca::{Ca, CaSource};
use xds_server::catalog::{self, ProxyName};
use xds_server::discovery::DiscoveryConfig;
use xds_server::identity::Authorization;
use xds_server::identity::client::IdentityClient;
use xds_server::last_good::LastGoodLocation;
use xds_server::load::CatalogLocation;
use xds_server::render;
use xds_server::serve::{self, IdentitySettings, ServeConfig};
use xds_server::server::StreamLimits;
use xds_server::tls::ServerCertificate;

/// gRPC xDS control plane for generic Envoy proxies on AWS ECS.
#[derive(Parser)]
#[command(version = common::version::describe(), about, args_override_self = true)]
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

// Parsed once at start: the size of the biggest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Serve xDS to Envoy proxies from a catalog, following its changes.
    Serve {
        /// The catalog: a YAML or JSON file, or s3://BUCKET/KEY; or a directory, or
        /// s3://BUCKET/PREFIX/, whose YAML and JSON files are fragments merged into one catalog
        /// (each a whole catalog on its own, names unique across them, routes to any
        /// fragment's upstreams; a bad fragment keeps its last good version). Re-read when it
        /// changes.
        #[arg(long, env = "XDS_SERVER_CATALOG")]
        catalog: CatalogLocation,
        /// Where the last good catalog of a directory or prefix is kept, a file or
        /// s3://BUCKET/KEY (default: .last-good.json beside the directory, or under the
        /// prefix): every fragment at the version served, so a replica that starts while a
        /// fragment is bad serves that fragment's last good version, as the others do.
        #[arg(long, env = "XDS_SERVER_LAST_GOOD")]
        last_good: Option<LastGoodLocation>,
        /// Address of the xDS gRPC server (ADS and CDS/EDS/LDS/RDS, SotW and delta; CSDS).
        #[arg(long, env = "XDS_SERVER_XDS_LISTEN", default_value = "0.0.0.0:18000")]
        xds_listen: SocketAddr,
        /// Address of the admin HTTP server (/metrics, /healthz, /readyz), for load balancers
        /// and Prometheus.
        #[arg(long, env = "XDS_SERVER_ADMIN_LISTEN", default_value = "0.0.0.0:18001")]
        admin_listen: SocketAddr,
        /// Address of the status page (/) and the debug pages (/debug/nodes, /debug/config,
        /// /debug/endpoints), which show every proxy's configuration: keep it on loopback.
        #[arg(
            long,
            env = "XDS_SERVER_DEBUG_LISTEN",
            default_value = "127.0.0.1:18002"
        )]
        debug_listen: SocketAddr,
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
        /// The longest one poll of an endpoint source may take before it counts as failed (each
        /// AWS call also has its own timeouts).
        #[arg(long, env = "XDS_SERVER_DISCOVERY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
        discovery_timeout: Duration,
        /// Quiet time gathered before pushing, so a burst of changes gives one push.
        #[arg(long, env = "XDS_SERVER_DEBOUNCE", default_value = "100ms", value_parser = parse_duration)]
        debounce: Duration,
        /// How long streams get to close on SIGTERM before the server exits.
        #[arg(long, env = "XDS_SERVER_DRAIN", default_value = "5s", value_parser = parse_duration)]
        drain: Duration,
        /// The control plane's CA: file:DIR (as `xds-server ca init` writes it),
        /// secretsmanager:NAME-OR-ARN (a JSON secret {"certificate": PEM, "private_key": PEM}),
        /// or acm-pca:ARN (AWS Private CA signs; no CA key here). Every replica must use the
        /// same one.
        #[arg(long, env = "XDS_SERVER_CA")]
        ca: Option<CaSource>,
        /// The CA that signs next: trusted everywhere the current one is, so that switching
        /// to it is a configuration change.
        #[arg(long, env = "XDS_SERVER_CA_NEXT", requires = "ca")]
        ca_next: Option<CaSource>,
        /// TLS on the xDS port, with a server certificate the CA makes (and renews) for the
        /// --xds-tls-name names.
        #[arg(long, env = "XDS_SERVER_XDS_TLS")]
        xds_tls: bool,
        /// A name (DNS name or IP address) proxies dial, for the server certificate; repeat it
        /// or separate names with commas.
        #[arg(long, env = "XDS_SERVER_XDS_TLS_NAME", value_delimiter = ',')]
        xds_tls_name: Vec<String>,
        /// TLS on the xDS port with this certificate chain (PEM), re-read when it changes.
        #[arg(long, env = "XDS_SERVER_XDS_TLS_CERT")]
        xds_tls_cert: Option<PathBuf>,
        /// The private key (PEM) of --xds-tls-cert.
        #[arg(long, env = "XDS_SERVER_XDS_TLS_KEY")]
        xds_tls_key: Option<PathBuf>,
        /// Every xDS stream must present a client certificate from the CA naming the proxy it
        /// asks for (spiffe://TRUST_DOMAIN/proxy/NAME): UNAUTHENTICATED without one,
        /// PERMISSION_DENIED for another proxy's. Needs --ca and TLS on the xDS port.
        #[arg(long, env = "XDS_SERVER_REQUIRE_IDENTITY")]
        require_identity: bool,
        /// The SPIFFE trust domain of proxy identities.
        #[arg(long, env = "XDS_SERVER_TRUST_DOMAIN", default_value = "mesh.local")]
        trust_domain: String,
        /// The most xDS streams this server holds at once (0: no cap); more are refused with
        /// RESOURCE_EXHAUSTED, and Envoy retries, through the load balancer, another replica.
        #[arg(long, env = "XDS_SERVER_MAX_STREAMS", default_value_t = 0)]
        max_streams: usize,
        /// The most xDS streams from one source address at once (0: no cap). Behind an NLB
        /// that does not preserve client addresses every stream comes from the NLB's: leave 0.
        #[arg(long, env = "XDS_SERVER_MAX_STREAMS_PER_IP", default_value_t = 0)]
        max_streams_per_ip: usize,
        /// The id proxies sign into their identity requests (X-Xds-Server-Id), so that a request
        /// made for another control plane is refused here; default: any --xds-tls-name (the
        /// name a proxy dials is the id it signs). The identity endpoint (POST
        /// /identity/v1/certificate on the xDS port) needs --ca and TLS on the xDS port.
        #[arg(long, env = "XDS_SERVER_IDENTITY_SERVER_ID")]
        identity_server_id: Option<String>,
        /// How long a proxy certificate is valid; `xds-server identity --renew` renews at half
        /// life.
        #[arg(long, env = "XDS_SERVER_IDENTITY_TTL", default_value = "24h", value_parser = parse_duration)]
        identity_ttl: Duration,
        /// Identity requests one source address may make per minute (a burst of as many, then
        /// one every 60/N seconds); more are answered 429. 0: no limit (behind a load balancer
        /// that hides client addresses).
        #[arg(long, env = "XDS_SERVER_IDENTITY_RATE", default_value_t = 60)]
        identity_rate: u32,
        /// How long a proxy's mesh certificate (for service traffic, `tls.certificate: mesh`)
        /// is valid; the control plane renews it at half life and Envoy swaps it in place.
        #[arg(long, env = "XDS_SERVER_MESH_CERT_TTL", default_value = "24h", value_parser = parse_duration)]
        mesh_cert_ttl: Duration,
        /// How often certificates and bundles kept in AWS (Secrets Manager, ACM, AWS Private
        /// CA) are read again.
        #[arg(long, env = "XDS_SERVER_SECRET_INTERVAL", default_value = "5m", value_parser = parse_duration)]
        secret_interval: Duration,
    },
    /// Get this task's proxy certificate from the control plane, proving the task role to it
    /// through AWS STS, and write it (with its key and the trust bundle) into a directory that
    /// `bootstrap --identity-dir` points Envoy at.
    Identity {
        /// The control plane, HOST:PORT (its certificate must name HOST).
        #[arg(long, env = "XDS_SERVER_XDS")]
        xds: String,
        /// The directory to write.
        #[arg(long, env = "XDS_SERVER_IDENTITY_DIR")]
        out: PathBuf,
        /// The CA bundle (PEM) that signed the control plane's certificate (default: the
        /// system's root certificates).
        #[arg(long, env = "XDS_SERVER_XDS_CA")]
        xds_ca: Option<PathBuf>,
        /// The proxy role to be; needed when the task role is the identity of several.
        #[arg(long, env = "XDS_SERVER_PROXY")]
        proxy: Option<String>,
        /// The control plane's id (its --identity-server-id); default: the --xds host.
        #[arg(long, env = "XDS_SERVER_IDENTITY_SERVER_ID")]
        server_id: Option<String>,
        /// Keep running: renew the certificate at half life (beside Envoy, which reads the new
        /// files without a restart). Without it, get one and exit.
        #[arg(long, env = "XDS_SERVER_IDENTITY_RENEW")]
        renew: bool,
        /// Without --renew: how long to keep trying while the control plane or STS cannot be
        /// reached (a refusal ends it at once).
        #[arg(long, env = "XDS_SERVER_IDENTITY_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// The control plane's own certificate authority.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Check a catalog: prints "ok", or every error found and exits 1. Warnings (routes that can
    /// never match) go to stderr and do not fail it.
    Validate {
        /// The catalog: a file, a directory of fragments, s3://BUCKET/KEY or
        /// s3://BUCKET/PREFIX/ (read as `serve` reads it); with --with, one fragment file.
        #[arg(value_name = "CATALOG")]
        path: CatalogLocation,
        /// Check PATH as a fragment joining the fragments of this directory or
        /// s3://BUCKET/PREFIX/ (replacing the one of the same name, see --as), as the server
        /// would take it: its references may name the others' upstreams, and it must not take
        /// their names or remove what they use. The others' own problems are warnings; one
        /// refused now counts with its version in the server's last good catalog (see
        /// --last-good), as on the server. Given again, the later directories hold fragments written together with this one (the
        /// same apply or commit), which replace those of the same name in the first.
        #[arg(
            long,
            env = "XDS_SERVER_VALIDATE_WITH",
            value_name = "DIR-or-s3://PREFIX/",
            value_delimiter = ','
        )]
        with: Vec<CatalogLocation>,
        /// The fragment's name in the --with set: its path or key relative to the directory or
        /// prefix, e.g. team/wallet.yaml for s3://BUCKET/catalog.d/team/wallet.yaml (default:
        /// PATH's file name).
        #[arg(long = "as", env = "XDS_SERVER_VALIDATE_AS", value_name = "NAME")]
        join_as: Option<String>,
        /// With --with: where the server keeps the last good catalog of the (first) --with
        /// directory or prefix, a file or s3://BUCKET/KEY, as serve's --last-good (default:
        /// .last-good.json beside the directory, or under the prefix). One that does not exist
        /// or was written for another catalog is not used (a warning says why); the flag
        /// without --with is a warning, the environment variable alone is not.
        #[arg(
            long,
            env = "XDS_SERVER_LAST_GOOD",
            value_name = "PATH|s3://BUCKET/KEY"
        )]
        last_good: Option<LastGoodLocation>,
        /// Also have this Envoy binary check every proxy's configuration (`envoy --mode
        /// validate`), for what the catalog's own checks miss.
        #[arg(long, env = "XDS_SERVER_VALIDATE_ENVOY")]
        envoy: Option<PathBuf>,
        /// The trust domain the control plane serves with (its --trust-domain), for the
        /// SPIFFE IDs in TLS settings when the catalog sets none.
        #[arg(long, env = "XDS_SERVER_TRUST_DOMAIN", default_value = "mesh.local")]
        trust_domain: String,
        /// `text`: problems on stderr, `ok` on stdout; `json`: one object on stdout
        /// (`ok`, `errors` and `warnings`, each with path, line, column and message), for CI.
        #[arg(long, env = "XDS_SERVER_VALIDATE_OUTPUT", default_value = "text")]
        output: ValidateOutput,
    },
    /// Print the resources a proxy would get (listeners, routes, clusters, endpoints).
    Render {
        /// The catalog: a file, a directory of fragments, s3://BUCKET/KEY or
        /// s3://BUCKET/PREFIX/.
        #[arg(long, env = "XDS_SERVER_CATALOG")]
        catalog: CatalogLocation,
        /// The proxy (a key of `proxies`).
        #[arg(long, env = "XDS_SERVER_PROXY")]
        proxy: String,
        /// The trust domain the control plane serves with (its --trust-domain), for the
        /// SPIFFE IDs in TLS settings when the catalog sets none.
        #[arg(long, env = "XDS_SERVER_TRUST_DOMAIN", default_value = "mesh.local")]
        trust_domain: String,
        /// Also ask Cloud Map and ECS for the endpoints of their upstreams (AWS credentials
        /// from the standard chain); without it, render works offline and lists those sources
        /// under eds.not_resolved.
        #[arg(long, env = "XDS_SERVER_RENDER_DISCOVER")]
        discover: bool,
        /// Output format.
        #[arg(long, env = "XDS_SERVER_RENDER_FORMAT", default_value = "json")]
        format: Format,
    },
    /// What a catalog change does to every proxy: the listeners, routes, clusters and
    /// endpoints (of static and file sources) it adds, removes or modifies, as a diff of the
    /// resources rendered as YAML. Exits 2 when there is a difference, 0 when there is none,
    /// 1 when a catalog cannot be read or is invalid.
    Diff {
        /// The catalog as it is: a file, a directory of fragments, s3://BUCKET/KEY or
        /// s3://BUCKET/PREFIX/.
        #[arg(long, env = "XDS_SERVER_CATALOG")]
        catalog: CatalogLocation,
        /// The catalog as it would be (same forms).
        #[arg(long, env = "XDS_SERVER_CATALOG_NEW")]
        catalog_new: CatalogLocation,
        /// Only this proxy.
        #[arg(long, env = "XDS_SERVER_DIFF_PROXY")]
        proxy: Option<String>,
        /// The trust domain the control plane serves with (its --trust-domain).
        #[arg(long, env = "XDS_SERVER_TRUST_DOMAIN", default_value = "mesh.local")]
        trust_domain: String,
    },
    /// Every connected Envoy and where each resource type stands with it: SYNCED, STALE (sent,
    /// not yet acknowledged, for how long) or NACKED (with Envoy's error text), read from the
    /// debug pages of one or more replicas. Exits 1 when an Envoy is NACKED or STALE for longer
    /// than --stale-after, or a replica cannot be read.
    Status {
        /// A replica's debug pages (its --debug-listen), http://HOST:PORT. Repeat it (or separate
        /// URLs with commas) for each replica; a name with several addresses stands for one
        /// replica per address.
        #[arg(
            long,
            env = "XDS_SERVER_DEBUG",
            value_delimiter = ',',
            default_value = "http://127.0.0.1:18002"
        )]
        debug: Vec<String>,
        /// Only the Envoys of this proxy.
        #[arg(long, env = "XDS_SERVER_STATUS_PROXY")]
        proxy: Option<String>,
        /// `table` for people, `json` for scripts.
        #[arg(long, env = "XDS_SERVER_STATUS_OUTPUT", default_value = "table")]
        output: StatusOutput,
        /// Whole NACK texts instead of their first 60 characters.
        #[arg(long, env = "XDS_SERVER_STATUS_WIDE")]
        wide: bool,
        /// How long a response may await its ACK before it counts as failing.
        #[arg(long, env = "XDS_SERVER_STALE_AFTER", default_value = "30s", value_parser = parse_duration)]
        stale_after: Duration,
    },
    /// Read an App Mesh mesh (every ACTIVE virtual node, virtual service, virtual router,
    /// route, virtual gateway and gateway route) and write one catalog fragment per virtual
    /// node and per virtual gateway into --out, ready for `serve --catalog DIR`, with
    /// IMPORT-REPORT.md: every App Mesh field mapped, mapped with a loss, or not mapped. Checks
    /// the fragments with the catalog loader first and writes nothing when they do not
    /// validate. AWS credentials from the standard chain (AWS_ENDPOINT_URL* are honoured).
    ImportAppmesh {
        /// The mesh's name.
        #[arg(long, env = "XDS_SERVER_APPMESH_MESH")]
        mesh: String,
        /// The account that owns the mesh, for a mesh shared with this account.
        #[arg(long, env = "XDS_SERVER_APPMESH_MESH_OWNER")]
        mesh_owner: Option<String>,
        /// The directory to write the fragments and IMPORT-REPORT.md into (created when
        /// missing; files of the same names are replaced).
        #[arg(
            long,
            env = "XDS_SERVER_APPMESH_OUT",
            required_unless_present = "dry_run"
        )]
        out: Option<PathBuf>,
        /// The trust domain written as the fragments' `mesh.trust_domain`.
        #[arg(long, env = "XDS_SERVER_TRUST_DOMAIN")]
        trust_domain: Option<String>,
        /// Print the report only; write nothing. With --out, the very report that would be
        /// written there (checked beside that directory's other fragments, which fails as the
        /// import would), and on stderr what would be removed.
        #[arg(long, env = "XDS_SERVER_APPMESH_DRY_RUN")]
        dry_run: bool,
        /// The mesh did not have App Mesh's default retry policy (accounts whose first mesh
        /// predates 2020-07-29): routes without a retry policy of their own do not retry.
        #[arg(long, env = "XDS_SERVER_APPMESH_NO_DEFAULT_RETRIES")]
        no_default_retries: bool,
        /// The proxies' inbound port: ProxyIngressPort of the tasks' proxyConfiguration.
        #[arg(long, env = "XDS_SERVER_APPMESH_INGRESS_PORT", default_value_t = xds_server::appmesh::map::INGRESS_PORT)]
        ingress_port: u16,
        /// The proxies' outbound port: ProxyEgressPort of the tasks' proxyConfiguration.
        #[arg(long, env = "XDS_SERVER_APPMESH_EGRESS_PORT", default_value_t = xds_server::appmesh::map::EGRESS_PORT)]
        egress_port: u16,
        /// The address the proxies' listeners bind (default: every interface of the task). The
        /// egress keeps 127.0.0.1 unless this is a loopback address too: ECS's REDIRECT hands
        /// it the task's own outbound connections on loopback, and nothing else should reach it.
        #[arg(long, env = "XDS_SERVER_APPMESH_LISTEN_ADDRESS")]
        listen_address: Option<String>,
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
        /// The availability zone Envoy runs in (`node.locality.zone`), which zone-aware
        /// upstreams prefer (default: the task's AvailabilityZone from the task metadata
        /// endpoint, when ECS_CONTAINER_METADATA_URI_V4 is set; else none).
        #[arg(long, env = "XDS_SERVER_ZONE")]
        zone: Option<String>,
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
        /// TLS to the control plane: the CA bundle (PEM) that signed its certificate, which must
        /// name the --xds host (xds-server serve --xds-tls makes such a certificate).
        #[arg(long, env = "XDS_SERVER_XDS_CA")]
        xds_ca: Option<PathBuf>,
        /// Mutual TLS to the control plane with the certificate `xds-server identity` keeps in
        /// this directory (read through SDS, and again when renewed); without --xds-ca the
        /// control plane is checked against the trust bundle kept there too.
        #[arg(long, env = "XDS_SERVER_IDENTITY_DIR")]
        identity_dir: Option<PathBuf>,
        /// The most downstream connections Envoy holds at once, over all its listeners (its
        /// overload manager refuses more).
        #[arg(long, env = "XDS_SERVER_ENVOY_MAX_CONNECTIONS", default_value_t = xds_server::bootstrap::MAX_CONNECTIONS)]
        max_connections: u64,
        /// Print the bootstrap of a proxyless gRPC client instead (JSON, for GRPC_XDS_BOOTSTRAP):
        /// the server, its credentials (TLS with --xds-ca, mutual TLS with --identity-dir) and
        /// the node; with --identity-dir also the certificate provider `mesh` (the identity's
        /// files) that clusters of mesh TLS upstreams name. The proxy's `grpc_services` are
        /// its targets (xds:///NAME). Node's grpc-js-xds takes only the plaintext one (see
        /// docs/proxyless-grpc.md).
        #[arg(long, env = "XDS_SERVER_BOOTSTRAP_GRPC", conflicts_with_all = ["delta", "stats_listen"])]
        grpc: bool,
        /// Output format (a gRPC bootstrap is always JSON).
        #[arg(long, env = "XDS_SERVER_BOOTSTRAP_FORMAT", default_value = "yaml")]
        format: Format,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ValidateOutput {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum StatusOutput {
    Table,
    Json,
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create a new root CA (ECDSA P-256, valid for 10 years) in DIR: certificate.pem and
    /// private_key.pem (mode 0600). Never overwrites.
    Init {
        /// The directory to write.
        #[arg(long, env = "XDS_SERVER_CA_DIR")]
        out: PathBuf,
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

/// Reads a catalog as `serve` would take it (the CA aside: nothing is issued here), printing
/// its errors when it cannot be taken.
async fn load_offline(
    location: &CatalogLocation,
    trust_domain: String,
) -> Option<catalog::LoadedCatalog> {
    let server = xds_server::secrets::ServerSide {
        has_ca: true,
        trust_domain,
    };
    xds_server::load::load_once(location, &server)
        .await
        .inspect_err(|e| eprintln!("{e}"))
        .ok()
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let log_format = cli.log_format;
    let logs =
        |filter: &str| common::cli::init_logs(log_format, filter).map_err(anyhow::Error::msg);
    match cli.command {
        Command::Serve {
            catalog,
            last_good,
            xds_listen,
            admin_listen,
            debug_listen,
            catalog_interval,
            file_interval,
            discovery_interval,
            max_backoff,
            discovery_timeout,
            debounce,
            drain,
            ca,
            ca_next,
            xds_tls,
            xds_tls_name,
            xds_tls_cert,
            xds_tls_key,
            require_identity,
            trust_domain,
            max_streams,
            max_streams_per_ip,
            identity_server_id,
            identity_ttl,
            identity_rate,
            mesh_cert_ttl,
            secret_interval,
        } => {
            logs(&cli.log)?;
            let xds_tls = ServerCertificate::from_flags(
                xds_tls,
                &xds_tls_name,
                xds_tls_cert,
                xds_tls_key,
                ca.is_some(),
            )
            .map_err(anyhow::Error::msg)?;
            if require_identity && (ca.is_none() || xds_tls.is_none()) {
                anyhow::bail!(
                    "--require-identity needs --ca and TLS on the xDS port (--xds-tls or --xds-tls-cert/--xds-tls-key)"
                );
            }
            let last_good = match last_good {
                Some(_) if !catalog.holds_fragments() => {
                    anyhow::bail!(
                        "--last-good keeps the fragments of a directory or s3://BUCKET/PREFIX/ catalog; {catalog} is one document"
                    );
                }
                Some(l) => Some(l),
                None => LastGoodLocation::default_for(&catalog),
            };
            let config = ServeConfig {
                catalog,
                last_good,
                xds_listen,
                admin_listen,
                debug_listen,
                catalog_interval,
                debounce,
                discovery: DiscoveryConfig {
                    file_interval,
                    aws_interval: discovery_interval,
                    max_backoff,
                    poll_timeout: discovery_timeout,
                    ..DiscoveryConfig::default()
                },
                drain,
                ca,
                ca_next,
                xds_tls,
                auth: Authorization {
                    require_identity,
                    trust_domain,
                },
                limits: StreamLimits {
                    max_streams,
                    max_streams_per_ip,
                },
                identity: IdentitySettings {
                    server_ids: identity_server_id.map_or(xds_tls_name, |id| vec![id]),
                    ttl: identity_ttl,
                    per_ip_per_minute: identity_rate,
                },
                mesh_cert_ttl,
                secret_interval,
            };
            serve::serve(config, common::cli::shutdown_signal()).await?;
        }
        Command::Ca {
            command: CaCommand::Init { out },
        } => {
            let ca = Ca::generate("xds-server CA")?;
            ca.write(&out)?;
            println!(
                "wrote {} and {} (mode 0600); keep the key secret (e.g. in Secrets Manager)",
                out.join(xds_server::ca::CERTIFICATE_FILE).display(),
                out.join(xds_server::ca::PRIVATE_KEY_FILE).display()
            );
        }
        Command::Validate {
            path,
            envoy,
            with,
            join_as,
            last_good,
            trust_domain,
            output,
        } => {
            // XDS_SERVER_LAST_GOOD exported for `serve` names the served catalog's document:
            // only --with reads it, and without --with it is no mistake (the flag would be).
            let from_env = matches
                .subcommand_matches("validate")
                .and_then(|m| m.value_source("last_good"))
                == Some(clap::parser::ValueSource::EnvVariable);
            let last_good = last_good.filter(|_| !(from_env && with.is_empty()));
            let options = xds_server::check::Options {
                with,
                join_as,
                last_good,
                envoy,
                trust_domain,
            };
            let report = xds_server::check::check(&path, options).await;
            match output {
                ValidateOutput::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                ValidateOutput::Text => {
                    eprint!("{}", report.text());
                    if report.ok {
                        println!("ok");
                    }
                }
            }
            return Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Command::Render {
            catalog,
            proxy,
            trust_domain,
            discover,
            format,
        } => {
            let Some(loaded) = load_offline(&catalog, trust_domain).await else {
                return Ok(ExitCode::FAILURE);
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
                    "{catalog}: no proxy {:?} (the catalog has: {})",
                    proxy.0,
                    known.join(", ")
                );
                return Ok(ExitCode::FAILURE);
            }
            logs("warn")?;
            print(
                &render::render_proxy(&loaded, &proxy, discover).await?,
                format,
            )?;
        }
        Command::Diff {
            catalog,
            catalog_new,
            proxy,
            trust_domain,
        } => {
            logs("warn")?;
            let server = xds_server::secrets::ServerSide {
                has_ca: true,
                trust_domain,
            };
            let mut loaded = Vec::new();
            for location in [&catalog, &catalog_new] {
                match xds_server::load::load_once(location, &server).await {
                    Ok(c) => loaded.push(c),
                    Err(e) => {
                        eprintln!("{e}");
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
            let proxy = proxy.map(ProxyName);
            if let Some(p) = &proxy
                && loaded.iter().all(|c| !c.catalog.proxies.contains_key(p))
            {
                eprintln!("neither catalog has a proxy {:?}", p.0);
                return Ok(ExitCode::FAILURE);
            }
            let diffs = xds_server::diff::diff(&loaded[0], &loaded[1], proxy.as_ref()).await?;
            print!("{}", xds_server::diff::text(&diffs));
            return Ok(if diffs.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            });
        }
        Command::Status {
            debug,
            proxy,
            output,
            wide,
            stale_after,
        } => return status(debug, proxy, output, wide, stale_after).await,
        Command::ImportAppmesh {
            mesh,
            mesh_owner,
            out,
            trust_domain,
            dry_run,
            no_default_retries,
            ingress_port,
            egress_port,
            listen_address,
        } => {
            logs("warn")?;
            let mesh = xds_server::appmesh::MeshRef {
                name: mesh,
                owner: mesh_owner,
            };
            let options = xds_server::appmesh::Options {
                ingress_port,
                egress_port,
                address: listen_address,
                default_retries: !no_default_retries,
                trust_domain,
            };
            let mapped = xds_server::appmesh::import(&mesh, &options).await?;
            match (out, dry_run) {
                // Checked all the same: a dry run says whether the import would be written.
                (None, _) => {
                    let rendered = xds_server::appmesh::render(&mapped, std::path::Path::new("."))?;
                    print!("{}", rendered.report.to_markdown());
                }
                // Into a directory: the report that would be written there, checked beside
                // its other fragments.
                (Some(dir), true) => {
                    let plan = xds_server::appmesh::plan(&mapped, &dir)?;
                    print!("{}", plan.rendered.report.to_markdown());
                    for path in &plan.stale {
                        eprintln!(
                            "would remove {} (a resource no longer in the mesh)",
                            path.display()
                        );
                    }
                    eprintln!(
                        "would write {} fragments and {} to {}; nothing written (--dry-run)",
                        plan.rendered.fragments.len(),
                        xds_server::appmesh::REPORT_FILE,
                        dir.display()
                    );
                }
                (Some(dir), false) => {
                    xds_server::appmesh::write(&mapped, &dir)?;
                    eprintln!(
                        "wrote {} fragments and {} to {}",
                        mapped.fragments.len(),
                        xds_server::appmesh::REPORT_FILE,
                        dir.display()
                    );
                }
            }
        }
        Command::Bootstrap {
            proxy,
            xds,
            node_id,
            zone,
            admin,
            stats_listen,
            delta,
            xds_retry_max,
            xds_ca,
            identity_dir,
            max_connections,
            grpc,
            format,
        } => {
            let (xds_host, xds_port) = bootstrap::parse_host_port(&xds).context("--xds")?;
            // Asked once, for whatever the flags leave to it.
            let meta = if (node_id.is_none() || zone.is_none())
                && std::env::var_os("ECS_CONTAINER_METADATA_URI_V4").is_some()
            {
                match s3_config_loader::template::ecs_metadata().await {
                    Ok(meta) => Some(meta),
                    Err(e) if node_id.is_none() => {
                        return Err(e).context("node.id from the ECS task metadata");
                    }
                    // Without a zone Envoy still gets every endpoint, only none preferred.
                    Err(e) => {
                        eprintln!("warning: no zone from the ECS task metadata: {e}");
                        None
                    }
                }
            } else {
                None
            };
            // A task without an AvailabilityZone (an old agent, ECS Anywhere) names none.
            let zone = zone
                .or_else(|| meta.as_ref()?.get("ecs.AvailabilityZone").cloned())
                .filter(|z| !z.is_empty());
            let node_id = match (node_id, &meta) {
                (Some(id), _) => id,
                (None, Some(meta)) => meta
                    .get("ecs.TaskARN")
                    .cloned()
                    .context("the ECS task metadata has no TaskARN")?,
                (None, None) => {
                    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                        .map(|h| h.trim().to_string())
                        .unwrap_or_else(|_| "envoy".into());
                    format!("{proxy}-{host}")
                }
            };
            let config = BootstrapConfig {
                proxy,
                node_id,
                zone,
                xds_host,
                xds_port,
                admin,
                stats_listen,
                delta,
                retry_max: xds_retry_max,
                xds_ca,
                identity_dir,
                max_connections,
            };
            if grpc {
                let files = config
                    .identity_dir
                    .as_deref()
                    .map(bootstrap::grpc_identity_files);
                for missing in files.iter().flatten().filter(|f| !f.exists()) {
                    eprintln!(
                        "warning: {} is missing: the gRPC client reaches neither the control plane nor mesh upstreams until `xds-server identity` has written it",
                        missing.display()
                    );
                }
                print(&bootstrap::grpc_bootstrap(&config), Format::Json)?;
                return Ok(ExitCode::SUCCESS);
            }
            for missing in bootstrap::missing_identity_files(&config) {
                eprintln!(
                    "warning: {} is missing: Envoy refuses the bootstrap until `xds-server identity` has written it",
                    missing.display()
                );
            }
            print(&bootstrap::bootstrap(&config), format)?;
        }
        Command::Identity {
            xds,
            out,
            xds_ca,
            proxy,
            server_id,
            renew,
            timeout,
        } => {
            logs(&cli.log)?;
            let (xds_host, xds_port) = bootstrap::parse_host_port(&xds).context("--xds")?;
            let client = IdentityClient {
                server_id: server_id.unwrap_or_else(|| xds_host.clone()),
                xds_host,
                xds_port,
                xds_ca,
                out,
                proxy,
            };
            if renew {
                client.renew(common::cli::shutdown_signal()).await?;
            } else {
                let deadline = std::time::Instant::now() + timeout;
                client.fetch_retrying(Some(deadline)).await?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `xds-server status`: the merged table of every replica's Envoys.
async fn status(
    debug: Vec<String>,
    proxy: Option<String>,
    output: StatusOutput,
    wide: bool,
    stale_after: Duration,
) -> anyhow::Result<ExitCode> {
    use xds_server::status;
    let mut failed = false;
    let mut replicas = Vec::new();
    for url in &debug {
        match status::replicas(url).await {
            Ok(r) => replicas.extend(r),
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    replicas.retain(|r| seen.insert(r.clone()));
    let mut rows = Vec::new();
    for replica in &replicas {
        match status::fetch(replica).await {
            Ok(r) => rows.extend(r),
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    let rows = status::select(rows, proxy.as_deref());
    match output {
        StatusOutput::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        StatusOutput::Table => {
            let now = common::duration::since_epoch().as_secs();
            print!("{}", status::table(&rows, replicas.len() > 1, wide, now));
        }
    }
    let failing = rows.iter().filter(|r| r.failing(stale_after)).count();
    if failing > 0 {
        eprintln!(
            "{failing} of {} Envoys NACKED or STALE for longer than {}s",
            rows.len(),
            stale_after.as_secs()
        );
    }
    Ok(if failed || failing > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
