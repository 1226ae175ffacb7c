//! `xds-server serve`: wires catalog loading, discovery, snapshot building, the xDS server and the
//! admin server together, and shuts them down gracefully.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{self, AdminState};
use crate::ca::{Ca, CaSet, CaSource};
use crate::cache::{Cache, Snapshot};
use crate::catalog::{self, LoadedCatalog};
use crate::discovery::{Discovery, DiscoveryConfig};
use crate::identity::Authorization;
use crate::identity::issuer::{Issuer, IssuerConfig};
use crate::metrics::Metrics;
use crate::server::nodes::Nodes;
use crate::server::{StreamLimits, XdsServer};
use crate::tls::{ServerCertificate, ServerTls};
use crate::translate::{EndpointMap, translate};
use s3_config_loader::S3Location;
use s3_config_loader::sync::{Fetched, fetch_object, list_objects};

/// Where the catalog comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogLocation {
    /// A local file, or a directory whose YAML and JSON files are merged; re-read when it changes.
    File(PathBuf),
    /// An S3 object, polled with conditional GETs (ETag).
    S3(S3Location),
    /// Every YAML and JSON object under an S3 prefix (the location ends in `/`), merged; the
    /// prefix is listed on every poll and read again when a key or ETag changed.
    S3Prefix(S3Location),
}

impl std::str::FromStr for CatalogLocation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("s3://") {
            let loc: S3Location = s.parse().map_err(|e| format!("{e}"))?;
            if loc.key.is_empty() {
                return Err(format!(
                    "{s}: name the catalog object or a prefix ending in /, e.g. s3://BUCKET/xds/catalog.d/"
                ));
            }
            if loc.key.ends_with('/') {
                return Ok(CatalogLocation::S3Prefix(loc));
            }
            return Ok(CatalogLocation::S3(loc));
        }
        if s.is_empty() {
            return Err("the catalog location is empty".into());
        }
        Ok(CatalogLocation::File(PathBuf::from(s)))
    }
}

impl std::fmt::Display for CatalogLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CatalogLocation::File(p) => write!(f, "{}", p.display()),
            CatalogLocation::S3(l) | CatalogLocation::S3Prefix(l) => write!(f, "{l}"),
        }
    }
}

/// A catalog's documents as read: one named document, or the fragments of a directory or
/// prefix (name and bytes, in name order).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Documents {
    One(String, Vec<u8>),
    Fragments(Vec<(String, Vec<u8>)>),
}

impl Documents {
    /// The catalog they make; `location` names a directory's or prefix's errors.
    fn parse(&self, location: &str) -> Result<catalog::Catalog, catalog::CatalogErrors> {
        match self {
            Documents::One(name, bytes) => catalog::parse_bytes(name, bytes),
            Documents::Fragments(fragments) => catalog::merge(location, fragments),
        }
    }
}

/// Reads the catalog's documents when they changed since the last read.
enum CatalogReader {
    File {
        path: PathBuf,
        last: Option<Documents>,
    },
    S3 {
        client: aws_sdk_s3::Client,
        location: S3Location,
        etag: Option<String>,
    },
    S3Prefix {
        client: aws_sdk_s3::Client,
        location: S3Location,
        /// Keys and ETags of the fragments last read.
        listed: Option<Vec<(String, String)>>,
    },
}

/// Catalogs larger than this are refused (they would be a mistake, not a catalog).
const MAX_CATALOG_BYTES: u64 = 64 * 1024 * 1024;

impl CatalogReader {
    async fn new(location: &CatalogLocation) -> CatalogReader {
        match location {
            CatalogLocation::File(path) => CatalogReader::File {
                path: path.clone(),
                last: None,
            },
            CatalogLocation::S3(location) => CatalogReader::S3 {
                client: s3_config_loader::s3_client().await,
                location: location.clone(),
                etag: None,
            },
            CatalogLocation::S3Prefix(location) => CatalogReader::S3Prefix {
                client: s3_config_loader::s3_client().await,
                location: location.clone(),
                listed: None,
            },
        }
    }

    /// New documents, `Ok(None)` when unchanged, or why they could not be read.
    async fn read(&mut self) -> Result<Option<Documents>, String> {
        match self {
            CatalogReader::File { path, last } => {
                let read = if path.is_dir() {
                    catalog::read_dir_fragments(path).map(Documents::Fragments)
                } else {
                    std::fs::read(&*path).map(|b| Documents::One(path.display().to_string(), b))
                };
                match read {
                    Ok(docs) if last.as_ref() == Some(&docs) => Ok(None),
                    Ok(docs) => {
                        *last = Some(docs.clone());
                        Ok(Some(docs))
                    }
                    Err(e) => {
                        // Read it again once it is back, even if unchanged.
                        *last = None;
                        Err(format!("cannot read {}: {e}", path.display()))
                    }
                }
            }
            CatalogReader::S3 {
                client,
                location,
                etag,
            } => {
                let fetched = fetch_object(
                    client,
                    &location.bucket,
                    &location.key,
                    etag.clone(),
                    MAX_CATALOG_BYTES,
                )
                .await
                .map_err(|e| format!("cannot read {location}: {}", e.message))?;
                match fetched {
                    (Fetched::NotModified, _) => Ok(None),
                    (Fetched::Body(bytes), new_etag) => {
                        *etag = new_etag;
                        Ok(Some(Documents::One(location.to_string(), bytes)))
                    }
                }
            }
            CatalogReader::S3Prefix {
                client,
                location,
                listed,
            } => {
                let objects = list_objects(client, &location.bucket, &location.key)
                    .await
                    .map_err(|e| format!("cannot list {location}: {e}"))?;
                let now: Vec<(String, String)> = objects
                    .into_iter()
                    .filter(|o| catalog::is_fragment_name(&o.key))
                    .map(|o| (o.key, o.etag))
                    .collect();
                if listed.as_ref() == Some(&now) {
                    return Ok(None);
                }
                let mut fragments = Vec::with_capacity(now.len());
                let mut read = Vec::with_capacity(now.len());
                for (key, listed_etag) in now {
                    let fetched =
                        fetch_object(client, &location.bucket, &key, None, MAX_CATALOG_BYTES).await;
                    let name = format!("s3://{}/{key}", location.bucket);
                    let (bytes, etag) = match fetched {
                        Ok((Fetched::Body(bytes), etag)) => (bytes, etag),
                        Ok((Fetched::NotModified, _)) => {
                            return Err(format!(
                                "cannot read {name}: not modified, yet it was not asked conditionally"
                            ));
                        }
                        Err(e) => return Err(format!("cannot read {name}: {}", e.message)),
                    };
                    // The ETag of what was read, so a change between listing and reading is
                    // seen on the next poll.
                    read.push((key, etag.unwrap_or(listed_etag)));
                    fragments.push((name, bytes));
                }
                *listed = Some(read);
                Ok(Some(Documents::Fragments(fragments)))
            }
        }
    }

    fn base_dir(&self) -> PathBuf {
        match self {
            CatalogReader::File { path, .. } if path.is_dir() => path.clone(),
            CatalogReader::File { path, .. } => path
                .parent()
                .map(|p| p.to_path_buf())
                .unwrap_or_else(|| PathBuf::from(".")),
            // Relative endpoint files of an S3 catalog are relative to the working directory.
            CatalogReader::S3 { .. } | CatalogReader::S3Prefix { .. } => PathBuf::from("."),
        }
    }
}

/// Settings of a running server.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The catalog.
    pub catalog: CatalogLocation,
    /// Address of the xDS gRPC server.
    pub xds_listen: SocketAddr,
    /// Address of the admin HTTP server (metrics, health, readiness).
    pub admin_listen: SocketAddr,
    /// Address of the debug pages, which show configuration.
    pub debug_listen: SocketAddr,
    /// How often the catalog file is checked for changes.
    pub catalog_interval: Duration,
    /// Quiet time gathered before a rebuild, so that a burst of changes gives one push.
    pub debounce: Duration,
    /// Discovery settings.
    pub discovery: DiscoveryConfig,
    /// How long streams get to close at shutdown.
    pub drain: Duration,
    /// The control plane's CA, and the next one (trusted, not yet signing).
    pub ca: Option<CaSource>,
    /// See [`ServeConfig::ca`].
    pub ca_next: Option<CaSource>,
    /// TLS on the xDS port; `None` is plaintext.
    pub xds_tls: Option<ServerCertificate>,
    /// Who may read which proxy's config.
    pub auth: Authorization,
    /// Caps on open streams.
    pub limits: StreamLimits,
    /// The identity endpoint (`xds-server identity`), served with a CA and TLS.
    pub identity: IdentitySettings,
}

/// How the identity endpoint on the xDS port issues certificates.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// The id proxies sign into their requests; no endpoint without one.
    pub server_id: Option<String>,
    /// How long a proxy certificate is valid.
    pub ttl: Duration,
    /// Requests per source address per minute.
    pub per_ip_per_minute: u32,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        IdentitySettings {
            server_id: None,
            ttl: Duration::from_secs(24 * 3600),
            per_ip_per_minute: 60,
        }
    }
}

/// The outcome of the latest catalog load, for `/readyz` and the logs.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CatalogStatus {
    /// Where it comes from.
    pub location: String,
    /// When a catalog was last accepted (seconds since the Unix epoch).
    pub last_success: Option<u64>,
    /// The errors of the last rejected catalog, cleared when a good one is accepted.
    pub last_error: Option<String>,
    /// Upstreams whose endpoint source has not answered yet: they have no endpoints.
    pub upstreams_without_endpoints: Vec<String>,
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listen address could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Which server.
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("xDS server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The CA could not be read.
    #[error("CA: {0}")]
    Ca(#[from] crate::ca::CaError),
    /// TLS could not be set up.
    #[error("xDS TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The identity endpoint could not be set up.
    #[error("identity endpoint: {0}")]
    Identity(String),
}

/// Runs the server until `shutdown` completes, then drains streams and returns.
pub async fn serve(
    config: ServeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let metrics = Metrics::new();
    let cache = Cache::new();
    let nodes = Nodes::default();
    let discovery = Discovery::new(config.discovery, metrics.clone());
    let status = Arc::new(Mutex::new(CatalogStatus {
        location: config.catalog.to_string(),
        ..Default::default()
    }));

    let cas = match &config.ca {
        Some(source) => {
            let current = Ca::load(source).await?;
            let next = match &config.ca_next {
                Some(next) => Some(Ca::load(next).await?),
                None => None,
            };
            tracing::info!(ca = %source, next = ?config.ca_next.as_ref().map(|n| n.to_string()), "CA loaded");
            Some(Arc::new(CaSet { current, next }))
        }
        None => None,
    };
    let tls = match &config.xds_tls {
        Some(cert) => Some(ServerTls::new(cert, cas.clone())?),
        None => {
            tracing::warn!(
                "the xDS port is plaintext: anyone who reaches it can read any proxy's configuration (see --xds-tls)"
            );
            None
        }
    };
    let xds = TcpListener::bind(config.xds_listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.xds_listen,
            what: "xds",
            source,
        })?;
    let bind = |addr: SocketAddr, what: &'static str| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, what, source })
    };
    let admin_listener = bind(config.admin_listen, "admin").await?;
    let debug_listener = bind(config.debug_listen, "debug").await?;
    tracing::info!(
        xds = %xds.local_addr().unwrap_or(config.xds_listen),
        admin = %admin_listener.local_addr().unwrap_or(config.admin_listen),
        debug = %debug_listener.local_addr().unwrap_or(config.debug_listen),
        catalog = %config.catalog,
        "xds-server listening"
    );
    if !config.debug_listen.ip().is_loopback() {
        tracing::warn!(debug = %config.debug_listen, "the debug pages show every proxy's configuration and listen beyond loopback");
    }

    let (catalog_tx, catalog_rx) = watch::channel::<Option<Arc<LoadedCatalog>>>(None);
    let identity = match (&cas, &tls, &config.identity.server_id) {
        (Some(cas), Some(_), Some(server_id)) => {
            let region = common::aws::sdk_config()
                .await
                .region()
                .map(|r| r.to_string())
                .unwrap_or_else(|| "us-east-1".into());
            let issuer = Issuer::new(
                IssuerConfig {
                    server_id: server_id.clone(),
                    ttl: config.identity.ttl,
                    per_ip_per_minute: config.identity.per_ip_per_minute,
                    trust_domain: config.auth.trust_domain.clone(),
                    region,
                },
                cas.clone(),
                catalog_rx.clone(),
                metrics.clone(),
            )
            .map_err(ServeError::Identity)?;
            tracing::info!(server_id = %server_id, sts = %issuer.sts_endpoint(), ttl = ?config.identity.ttl, "identity endpoint on the xDS port");
            Some(Arc::new(issuer))
        }
        (Some(_), Some(_), None) => {
            tracing::info!("no identity endpoint: set --identity-server-id (or --xds-tls-name)");
            None
        }
        _ => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let watcher = tokio::spawn(watch_catalog(
        config.catalog.clone(),
        config.catalog_interval,
        catalog_tx,
        metrics.clone(),
        status.clone(),
    ));
    let builder = tokio::spawn(build_snapshots(
        catalog_rx,
        discovery.clone(),
        cache.clone(),
        metrics.clone(),
        status.clone(),
        config.debounce,
    ));

    let admin_state = AdminState {
        metrics: metrics.clone(),
        cache: cache.clone(),
        nodes: nodes.clone(),
        discovery: discovery.clone(),
        catalog: status.clone(),
        stopping: stop_rx.clone(),
    };
    let http_server = |listener: TcpListener, app: axum::Router| {
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        })
    };
    let admin_task = http_server(admin_listener, admin::router(admin_state.clone()));
    let debug_task = http_server(debug_listener, admin::debug_router(admin_state));

    let server = XdsServer::new(
        cache,
        metrics,
        nodes,
        config.auth.clone(),
        config.limits,
        stop_rx.clone(),
    );
    let incoming = crate::tls::incoming(xds, tls);
    let mut grpc_stop = stop_rx.clone();
    let routes = match identity {
        // HTTP/1.1 too, for the identity endpoint's clients (curl among them).
        Some(issuer) => tonic::service::Routes::from(
            server
                .router()
                .into_axum_router()
                .merge(crate::identity::issuer::router(issuer)),
        ),
        None => server.router(),
    };
    let grpc = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .accept_http1(true)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = grpc_stop.wait_for(|s| *s).await;
        });
    let mut grpc = std::pin::pin!(grpc);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut result = Ok(());
    tokio::select! {
        r = &mut grpc => {
            result = r.map_err(ServeError::from);
        }
        _ = &mut shutdown => {
            tracing::info!("shutting down: closing xDS streams so proxies reconnect to another replica");
            let _ = stop_tx.send(true);
            if tokio::time::timeout(config.drain, &mut grpc).await.is_err() {
                tracing::warn!("streams did not close within {:?}; exiting anyway", config.drain);
            }
        }
    }
    let _ = stop_tx.send(true);
    watcher.abort();
    builder.abort();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = tokio::join!(admin_task, debug_task);
    })
    .await;
    result
}

/// Re-reads the catalog whenever its content changes; accepted catalogs go to `tx`.
async fn watch_catalog(
    location: CatalogLocation,
    interval: Duration,
    tx: watch::Sender<Option<Arc<LoadedCatalog>>>,
    metrics: Metrics,
    status: Arc<Mutex<CatalogStatus>>,
) {
    let name = location.to_string();
    let mut reader = CatalogReader::new(&location).await;
    loop {
        match reader.read().await {
            Ok(Some(docs)) => {
                // A directory or prefix that had proxies and now lists nothing is more likely a
                // mistake (a wrong prefix, a moved folder) than every service going away.
                let emptied = matches!(&docs, Documents::Fragments(f) if f.is_empty())
                    && tx
                        .borrow()
                        .as_ref()
                        .is_some_and(|c| !c.catalog.proxies.is_empty());
                let loaded = if emptied {
                    Err(catalog::CatalogErrors {
                        source_name: name.clone(),
                        errors: vec![catalog::CatalogError {
                            path: String::new(),
                            message: "lists no catalog files any more; the last good catalog stays (an emptied folder is more likely a mistake than every proxy going away)".into(),
                        }],
                    })
                } else {
                    docs.parse(&name).map(|catalog| LoadedCatalog {
                        catalog,
                        base_dir: reader.base_dir(),
                    })
                };
                let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
                match loaded {
                    Ok(c) => {
                        metrics.catalog_loads.with_label_values(&["ok"]).inc();
                        tracing::info!(catalog = %name, proxies = c.catalog.proxies.len(), upstreams = c.catalog.upstreams.len(), "catalog loaded");
                        for w in catalog::warnings(&c.catalog) {
                            tracing::warn!(catalog = %name, path = %w.path, "{}", w.message);
                        }
                        st.last_success = Some(common::duration::since_epoch().as_secs());
                        st.last_error = None;
                        tx.send_replace(Some(Arc::new(c)));
                    }
                    Err(e) => {
                        metrics.catalog_loads.with_label_values(&["error"]).inc();
                        tracing::error!(error = %e, "catalog rejected; still serving the last good catalog");
                        st.last_error = Some(e.to_string());
                    }
                }
            }
            Ok(None) => {}
            Err(text) => {
                let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
                if st.last_error.as_deref() != Some(&text) {
                    metrics.catalog_loads.with_label_values(&["error"]).inc();
                    tracing::error!(error = %text, "catalog unreadable; still serving the last good catalog");
                    st.last_error = Some(text);
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Rebuilds every proxy's snapshot when the catalog or any endpoints change.
async fn build_snapshots(
    mut catalog_rx: watch::Receiver<Option<Arc<LoadedCatalog>>>,
    discovery: Discovery,
    cache: Cache,
    metrics: Metrics,
    status: Arc<Mutex<CatalogStatus>>,
    debounce: Duration,
) {
    let mut endpoints_rx = discovery.subscribe();
    let mut current: Option<Arc<LoadedCatalog>> = None;
    loop {
        tokio::select! {
            r = catalog_rx.changed() => if r.is_err() { return },
            r = endpoints_rx.changed() => if r.is_err() { return },
        }
        // Gather the rest of a burst (an editor's several writes, many tasks starting at once).
        tokio::time::sleep(debounce).await;
        let latest = catalog_rx.borrow_and_update().clone();
        endpoints_rx.borrow_and_update();
        let Some(catalog) = latest else { continue };
        if current.as_ref().is_none_or(|c| !Arc::ptr_eq(c, &catalog)) {
            discovery.reconcile(&catalog).await;
            current = Some(catalog.clone());
        }
        let started = Instant::now();
        let (endpoints, waiting) = discovery.endpoints(&catalog);
        let waiting: Vec<String> = waiting.into_iter().map(|n| n.0).collect();
        metrics
            .upstreams_without_endpoints
            .set(waiting.len() as i64);
        status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .upstreams_without_endpoints = waiting;
        let snapshots = build_all(&catalog, &endpoints);
        let changed = cache.publish(snapshots);
        let took = started.elapsed();
        metrics.snapshot_build.observe(took.as_secs_f64());
        if changed > 0 {
            tracing::info!(
                proxies_changed = changed,
                took_ms = took.as_millis() as u64,
                "new snapshots published"
            );
        }
    }
}

/// Translates the catalog for every proxy with the given endpoints.
pub fn build_all(
    catalog: &LoadedCatalog,
    endpoints: &EndpointMap,
) -> BTreeMap<crate::catalog::ProxyName, Snapshot> {
    catalog
        .catalog
        .proxies
        .keys()
        .map(|name| {
            (
                name.clone(),
                Snapshot::new(translate(&catalog.catalog, name, endpoints)),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::CatalogLocation;

    #[test]
    fn catalog_locations() {
        assert!(matches!(
            "s3://config/xds/catalog.yaml".parse(),
            Ok(CatalogLocation::S3(_))
        ));
        assert!(matches!(
            "s3://config/xds/catalog.d/".parse(),
            Ok(CatalogLocation::S3Prefix(_))
        ));
        let bare: Result<CatalogLocation, String> = "s3://config".parse();
        assert!(bare.unwrap_err().contains("prefix ending in /"));
        assert!(matches!(
            "examples/catalog.yaml".parse(),
            Ok(CatalogLocation::File(_))
        ));
    }
}
