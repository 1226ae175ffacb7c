//! `xds-server serve`: wires catalog loading, discovery, snapshot building, the xDS server and the
//! admin server together, and shuts them down gracefully.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{self, AdminState};
use crate::cache::{Cache, Snapshot};
use crate::catalog::{self, LoadedCatalog};
use crate::discovery::{Discovery, DiscoveryConfig};
use crate::metrics::Metrics;
use crate::server::XdsServer;
use crate::server::nodes::Nodes;
use crate::translate::translate;

/// Where the catalog comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogLocation {
    /// A local file, re-read when it changes.
    File(PathBuf),
}

impl std::str::FromStr for CatalogLocation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("s3://") {
            return Err(format!(
                "{s}: reading the catalog from S3 is not supported by this build yet; \
                 use s3-config-loader to fetch it to a file"
            ));
        }
        if s.is_empty() {
            return Err("the catalog location is empty".into());
        }
        Ok(CatalogLocation::File(PathBuf::from(s)))
    }
}

/// Settings of a running server.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The catalog.
    pub catalog: CatalogLocation,
    /// Address of the xDS gRPC server.
    pub xds_listen: SocketAddr,
    /// Address of the admin HTTP server.
    pub admin_listen: SocketAddr,
    /// How often the catalog file is checked for changes.
    pub catalog_interval: Duration,
    /// Quiet time gathered before a rebuild, so that a burst of changes gives one push.
    pub debounce: Duration,
    /// Discovery settings.
    pub discovery: DiscoveryConfig,
    /// How long streams get to close at shutdown.
    pub drain: Duration,
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
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Runs the server until `shutdown` completes, then drains streams and returns.
pub async fn serve(
    config: ServeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let metrics = Metrics::new();
    let cache = Cache::new();
    let nodes = Nodes::default();
    let discovery = Discovery::new(config.discovery);
    let CatalogLocation::File(path) = config.catalog.clone();
    let status = Arc::new(Mutex::new(CatalogStatus {
        location: path.display().to_string(),
        ..Default::default()
    }));

    let xds = TcpListener::bind(config.xds_listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.xds_listen,
            what: "xds",
            source,
        })?;
    let admin_listener = TcpListener::bind(config.admin_listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.admin_listen,
            what: "admin",
            source,
        })?;
    tracing::info!(
        xds = %xds.local_addr().unwrap_or(config.xds_listen),
        admin = %admin_listener.local_addr().unwrap_or(config.admin_listen),
        catalog = %path.display(),
        "xds-server listening"
    );

    let (catalog_tx, catalog_rx) = watch::channel::<Option<Arc<LoadedCatalog>>>(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let watcher = tokio::spawn(watch_catalog_file(
        path,
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
    let mut admin_stop = stop_rx.clone();
    let admin_task = tokio::spawn(async move {
        let app = admin::router(admin_state);
        let _ = axum::serve(admin_listener, app)
            .with_graceful_shutdown(async move {
                let _ = admin_stop.wait_for(|s| *s).await;
            })
            .await;
    });

    let server = XdsServer::new(cache, metrics, nodes, stop_rx.clone());
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(xds);
    let mut grpc_stop = stop_rx.clone();
    let grpc = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_routes(server.router())
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
    let _ = tokio::time::timeout(Duration::from_secs(2), admin_task).await;
    result
}

/// Re-reads the catalog file whenever its content changes; accepted catalogs go to `tx`.
async fn watch_catalog_file(
    path: PathBuf,
    interval: Duration,
    tx: watch::Sender<Option<Arc<LoadedCatalog>>>,
    metrics: Metrics,
    status: Arc<Mutex<CatalogStatus>>,
) {
    let mut last: Option<Vec<u8>> = None;
    loop {
        match tokio::fs::read(&path).await {
            Ok(bytes) if last.as_deref() != Some(&bytes[..]) => {
                let name = path.display().to_string();
                let loaded = std::str::from_utf8(&bytes)
                    .map_err(|_| catalog::CatalogErrors {
                        source_name: name.clone(),
                        errors: vec![catalog::CatalogError {
                            path: String::new(),
                            message: "the file is not UTF-8 text".into(),
                        }],
                    })
                    .and_then(|text| catalog::parse(&name, text))
                    .map(|catalog| LoadedCatalog {
                        catalog,
                        base_dir: path
                            .parent()
                            .map(|p| p.to_path_buf())
                            .unwrap_or_else(|| PathBuf::from(".")),
                    });
                let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
                match loaded {
                    Ok(c) => {
                        metrics.catalog_loads.with_label_values(&["ok"]).inc();
                        tracing::info!(catalog = %name, proxies = c.catalog.proxies.len(), upstreams = c.catalog.upstreams.len(), "catalog loaded");
                        st.last_success = Some(unix_now());
                        st.last_error = None;
                        tx.send_replace(Some(Arc::new(c)));
                    }
                    Err(e) => {
                        metrics.catalog_loads.with_label_values(&["error"]).inc();
                        tracing::error!(error = %e, "catalog rejected; still serving the last good catalog");
                        st.last_error = Some(e.to_string());
                    }
                }
                last = Some(bytes);
            }
            Ok(_) => {}
            Err(e) => {
                let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
                let text = format!("cannot read {}: {e}", path.display());
                if st.last_error.as_deref() != Some(&text) {
                    metrics.catalog_loads.with_label_values(&["error"]).inc();
                    tracing::error!(error = %text, "catalog unreadable; still serving the last good catalog");
                    st.last_error = Some(text);
                }
                // Read it again once it is back, even if unchanged.
                last = None;
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
        let snapshots = build_all(&catalog, &discovery);
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

/// Translates the catalog for every proxy with the current endpoints.
pub fn build_all(
    catalog: &LoadedCatalog,
    discovery: &Discovery,
) -> BTreeMap<crate::catalog::ProxyName, Snapshot> {
    let endpoints = discovery.endpoints(catalog);
    catalog
        .catalog
        .proxies
        .keys()
        .map(|name| {
            (
                name.clone(),
                Snapshot::new(translate(&catalog.catalog, name, &endpoints)),
            )
        })
        .collect()
}
