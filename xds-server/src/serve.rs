//! `xds-server serve`: wires catalog loading, discovery, snapshot building, the xDS server and the
//! admin server together, and shuts them down gracefully.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{self, AdminState};
use crate::ca::{CaSet, CaSource, Signer};
use crate::cache::{Cache, Interner, Snapshot};
use crate::catalog::EndpointMap;
use crate::catalog::LoadedCatalog;
use crate::discovery::{Discovery, DiscoveryConfig};
use crate::identity::Authorization;
use crate::identity::issuer::{Issuer, IssuerConfig};
use crate::load::{CatalogLocation, CatalogStatus, watch_catalog};
use crate::metrics::Metrics;
use crate::secrets::{Material, SecretsConfig};
use crate::server::nodes::Nodes;
use crate::server::{StreamLimits, XdsServer};
use crate::tls::{ServerCertificate, ServerTls};
use crate::translate::ResourceType;
use crate::translate::translate_in;

/// Settings of a running server.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The catalog.
    pub catalog: CatalogLocation,
    /// Where a directory's or prefix's last good catalog is kept (`--last-good`).
    pub last_good: Option<crate::last_good::LastGoodLocation>,
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
    /// How long a mesh identity (a proxy's certificate for service traffic) is valid.
    pub mesh_cert_ttl: Duration,
    /// How often certificates in Secrets Manager are read again.
    pub secret_interval: Duration,
}

/// How the identity endpoint on the xDS port issues certificates.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// The ids proxies may sign into their requests (`--identity-server-id`, else the
    /// `--xds-tls-name` names); no endpoint without one.
    pub server_ids: Vec<String>,
    /// How long a proxy certificate is valid.
    pub ttl: Duration,
    /// Requests per source address per minute.
    pub per_ip_per_minute: u32,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        IdentitySettings {
            server_ids: Vec::new(),
            ttl: Duration::from_secs(24 * 3600),
            per_ip_per_minute: 60,
        }
    }
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
            let current = Signer::load(source).await?;
            let next = match &config.ca_next {
                Some(next) => Some(Signer::load(next).await?),
                None => None,
            };
            tracing::info!(ca = %source, next = ?config.ca_next.as_ref().map(|n| n.to_string()), "CA loaded");
            Some(Arc::new(CaSet { current, next }))
        }
        None => None,
    };
    if !config.auth.require_identity {
        tracing::warn!(
            "without --require-identity, any client that names a proxy gets its configuration, and with mesh TLS its private key"
        );
    }
    let tls = match &config.xds_tls {
        Some(cert) => Some(ServerTls::new(cert, cas.clone()).await?),
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
    let identity = match (&cas, &tls, config.identity.server_ids.is_empty()) {
        (Some(cas), Some(_), false) => {
            let issuer = Issuer::new(
                IssuerConfig {
                    server_ids: config.identity.server_ids.clone(),
                    ttl: config.identity.ttl,
                    per_ip_per_minute: config.identity.per_ip_per_minute,
                    trust_domain: config.auth.trust_domain.clone(),
                },
                cas.clone(),
                catalog_rx.clone(),
                metrics.clone(),
            )
            .map_err(ServeError::Identity)?;
            tracing::info!(server_ids = ?config.identity.server_ids, ttl = ?config.identity.ttl, "identity endpoint on the xDS port");
            Ok(Arc::new(issuer))
        }
        (Some(_), Some(_), true) => Err(
            "this control plane issues no identities: serve has no --identity-server-id (or --xds-tls-name)",
        ),
        (None, Some(_), _) => Err("this control plane issues no identities: serve has no --ca"),
        _ => Err("this control plane issues no identities"),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let watcher = tokio::spawn(watch_catalog(
        config.catalog.clone(),
        config.catalog_interval,
        catalog_tx,
        metrics.clone(),
        status.clone(),
        crate::secrets::ServerSide {
            has_ca: cas.is_some(),
            trust_domain: config.auth.trust_domain.clone(),
        },
        config.last_good.clone(),
    ));
    let (material_tx, material_rx) = watch::channel(Arc::new(Material::default()));
    let secrets_task = tokio::spawn(crate::secrets::run(
        catalog_rx.clone(),
        SecretsConfig {
            cas: cas.clone(),
            ttl: config.mesh_cert_ttl,
            interval: config.discovery.file_interval,
            secret_interval: config.secret_interval,
        },
        material_tx,
        metrics.clone(),
    ));
    let loaded = catalog_rx.clone();
    let builder = tokio::spawn(build_snapshots(
        catalog_rx,
        material_rx.clone(),
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
        secrets: material_rx,
        loaded,
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
    let with_tls = tls.is_some();
    let incoming = crate::tls::incoming(xds, tls);
    let mut grpc_stop = stop_rx.clone();
    // With TLS, the identity endpoint answers on the xDS port, over HTTP/1.1 too (curl, the
    // `identity` command); without one, it says why not.
    let routes = if with_tls {
        let identity = match identity {
            Ok(issuer) => crate::identity::issuer::router(issuer),
            Err(why) => crate::identity::issuer::unavailable_router(why),
        };
        tonic::service::Routes::from(server.router().into_axum_router().merge(identity))
    } else {
        server.router()
    };
    let grpc = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .accept_http1(with_tls)
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
    secrets_task.abort();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = tokio::join!(admin_task, debug_task);
    })
    .await;
    result
}

/// Rebuilds every proxy's snapshot when the catalog or any endpoints change.
async fn build_snapshots(
    mut catalog_rx: watch::Receiver<Option<Arc<LoadedCatalog>>>,
    mut material_rx: watch::Receiver<Arc<Material>>,
    discovery: Discovery,
    cache: Cache,
    metrics: Metrics,
    status: Arc<Mutex<CatalogStatus>>,
    debounce: Duration,
) {
    let mut endpoints_rx = discovery.subscribe();
    let mut current: Option<Arc<LoadedCatalog>> = None;
    // What the last full build was made of: when only secrets change (a renewal), the other
    // resources are kept and only the secrets are put in again.
    let mut built_from: Option<(Arc<LoadedCatalog>, crate::catalog::EndpointMap)> = None;
    loop {
        tokio::select! {
            r = catalog_rx.changed() => if r.is_err() { return },
            r = endpoints_rx.changed() => if r.is_err() { return },
            r = material_rx.changed() => if r.is_err() { return },
        }
        // Gather the rest of a burst (an editor's several writes, many tasks starting at once).
        tokio::time::sleep(debounce).await;
        let latest = catalog_rx.borrow_and_update().clone();
        endpoints_rx.borrow_and_update();
        let material = material_rx.borrow_and_update().clone();
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
        let same = built_from
            .as_ref()
            .is_some_and(|(c, e)| Arc::ptr_eq(c, &catalog) && *e == endpoints);
        let snapshots = if same {
            let published = cache.current();
            with_secrets(&catalog, |p| published.proxies.get(p).cloned(), &material)
                .unwrap_or_else(|| build_all(&catalog, &endpoints, &material))
        } else {
            let all = build_all(&catalog, &endpoints, &material);
            built_from = Some((catalog.clone(), endpoints));
            all
        };
        let changed = cache.publish(snapshots, aliases(&catalog.catalog));
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

/// The snapshots of `previous` (by proxy) with each proxy's secrets taken from `material` again:
/// what [`build_all`] gives when only secrets changed, without translating the rest. `None`
/// when a proxy of the catalog has no previous snapshot.
pub fn with_secrets(
    catalog: &LoadedCatalog,
    previous: impl Fn(&crate::catalog::ProxyName) -> Option<Arc<Snapshot>>,
    material: &Material,
) -> Option<BTreeMap<crate::catalog::ProxyName, Snapshot>> {
    let mut interner = Interner::default();
    catalog
        .catalog
        .proxies
        .keys()
        .map(|name| {
            let mut snapshot = Snapshot::clone(previous(name)?.as_ref());
            let secrets = crate::translate::tls::secrets(&catalog.catalog, name, material);
            snapshot.replace_in(ResourceType::Secret, secrets, &mut interner);
            Some((name.clone(), snapshot))
        })
        .collect()
}

/// Every proxy alias of the catalog, with the proxy it selects.
pub fn aliases(
    catalog: &crate::catalog::Catalog,
) -> BTreeMap<crate::catalog::ProxyName, crate::catalog::ProxyName> {
    catalog
        .proxies
        .iter()
        .flat_map(|(name, p)| p.aliases.iter().map(move |a| (a.clone(), name.clone())))
        .collect()
}

/// Translates the catalog for every proxy with the given endpoints and secrets.
pub fn build_all(
    catalog: &LoadedCatalog,
    endpoints: &EndpointMap,
    material: &Material,
) -> BTreeMap<crate::catalog::ProxyName, Snapshot> {
    // What proxies have alike is translated once and held once.
    let (mut memo, mut interner) = Default::default();
    catalog
        .catalog
        .proxies
        .keys()
        .map(|name| {
            let mut snapshot =
                proxy_snapshot(&catalog.catalog, name, endpoints, &mut memo, &mut interner);
            let secrets = crate::translate::tls::secrets(&catalog.catalog, name, material);
            snapshot.replace_in(ResourceType::Secret, secrets, &mut interner);
            (name.clone(), snapshot)
        })
        .collect()
}

/// The snapshot of `proxy`, in every zone its Envoys get endpoints of their own, without its
/// secrets; sharing with the other proxies of `memo` and `interner` what they have alike.
pub fn proxy_snapshot(
    catalog: &crate::catalog::Catalog,
    proxy: &crate::catalog::ProxyName,
    endpoints: &EndpointMap,
    memo: &mut crate::translate::Memo,
    interner: &mut Interner,
) -> Snapshot {
    let resources = translate_in(catalog, proxy, endpoints, memo);
    let mut snapshot = Snapshot::new_in(resources, interner);
    for (zone, eds) in crate::translate::zoned_endpoints(catalog, proxy, endpoints, memo) {
        snapshot.add_zone_in(zone, eds, interner);
    }
    snapshot
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::Pem;

    #[test]
    fn a_secrets_only_rebuild_gives_what_a_full_one_gives() {
        let catalog = crate::catalog::parse(
            "catalog.yaml",
            r#"
version: 1
proxies:
  api:
    listeners:
      - name: in
        port: 15000
        protocol: http
        tls: { certificate: mesh, client_certificate: { trust: mesh } }
        routes: [ { match: { prefix: / }, to: app } ]
upstreams:
  app: { protocol: http1, endpoints: { static: ["127.0.0.1:9000"] } }
"#,
        )
        .unwrap();
        let loaded = LoadedCatalog {
            catalog,
            base_dir: ".".into(),
        };
        let pem = |chain: &str| Pem {
            chain: chain.into(),
            key: Some("key".into()),
        };
        let before = Material::default()
            .with("mesh/identity/api", pem("one"))
            .with("mesh/trust", pem("ca"));
        let after = Material::default()
            .with("mesh/identity/api", pem("two"))
            .with("mesh/trust", pem("ca"));
        let endpoints = crate::catalog::EndpointMap::new();
        let first = build_all(&loaded, &endpoints, &before);
        let quick = with_secrets(&loaded, |p| first.get(p).cloned().map(Arc::new), &after).unwrap();
        let full = build_all(&loaded, &endpoints, &after);
        assert_eq!(quick, full);
        assert_ne!(quick, first, "the new identity is in");
        // A proxy without a previous snapshot needs a full build.
        assert!(with_secrets(&loaded, |_| None, &after).is_none());
    }

    #[test]
    fn proxies_share_what_translates_alike_and_keep_what_is_their_own() {
        let catalog = crate::catalog::parse(
            "catalog.yaml",
            r#"
version: 1
proxies:
  db:
    listeners:
      - name: in
        port: 15000
        protocol: tcp
        tls: { certificate: mesh }
        to: app
  web:
    listeners:
      - name: in
        port: 15000
        protocol: http
        routes: [ { match: { prefix: /near }, to: near }, { match: { prefix: /db }, to: db }, { match: { prefix: / }, to: app } ]
  api:
    listeners:
      - name: in
        port: 15000
        protocol: http
        routes: [ { match: { prefix: /near }, to: near }, { match: { prefix: /db }, to: db }, { match: { prefix: / }, to: app } ]
upstreams:
  app: { protocol: http1, endpoints: { static: ["10.0.0.1:80", "10.0.0.2:80"] } }
  near:
    protocol: http1
    zone_aware: true
    endpoints: { static: [ { address: "10.0.1.1:80", zone: us-east-1a }, { address: "10.0.2.1:80", zone: us-east-1b } ] }
  db:
    protocol: http1
    endpoints: { static: ["10.0.0.3:5432"] }
    tls: { mesh: db }
"#,
        )
        .unwrap();
        let loaded = LoadedCatalog {
            catalog,
            base_dir: ".".into(),
        };
        let endpoints = crate::discovery::offline_endpoints(&loaded);
        let built = build_all(&loaded, &endpoints, &Material::default());
        let proxy = |name: &str| crate::catalog::ProxyName(name.into());
        let (web, api) = (&built[&proxy("web")], &built[&proxy("api")]);
        let get = |s: &Snapshot, t: ResourceType, name: &str| s.of(t).resources[name].clone();
        let (cds, eds) = (ResourceType::Cluster, ResourceType::Endpoint);
        // An upstream without TLS is the same cluster for every proxy: held once.
        assert!(get(web, cds, "app").shares_body_with(&get(api, cds, "app")));
        assert!(get(web, eds, "app").shares_body_with(&get(api, eds, "app")));
        // Mesh TLS presents the proxy's own certificate: each keeps its own cluster.
        assert_ne!(get(web, cds, "db").version, get(api, cds, "db").version);
        // A zone's endpoints differ from the zone-less ones, and are shared between proxies.
        let zone = crate::catalog::Zone::new("us-east-1a");
        let (web_a, api_a) = (&web.zones[&zone], &api.zones[&zone]);
        assert_ne!(
            get(web_a, eds, "near").version,
            get(web, eds, "near").version
        );
        assert!(get(web_a, eds, "near").shares_body_with(&get(api_a, eds, "near")));
        // What a proxy alone gets is what it gets in a shared build.
        let mut alone = loaded.catalog.clone();
        alone.proxies.retain(|name, _| name.0 == "api");
        let alone = LoadedCatalog {
            catalog: alone,
            base_dir: ".".into(),
        };
        let api_alone = build_all(&alone, &endpoints, &Material::default());
        assert_eq!(&api_alone[&proxy("api")], api);
    }
}
