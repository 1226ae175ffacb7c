//! The admin HTTP servers: metrics, health and readiness for load balancers and Prometheus
//! ([`router`]), and the debug pages that show configuration ([`debug_router`]), which listen
//! apart, on loopback by default.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::cache::{Cache, Role};
use crate::catalog::ProxyName;
use crate::discovery::Discovery;
use crate::load::CatalogStatus;
use crate::metrics::Metrics;
use crate::render;
use crate::server::nodes::Nodes;

/// What the admin pages read.
#[derive(Clone)]
pub struct AdminState {
    /// Exported at `/metrics`.
    pub metrics: Metrics,
    /// The current snapshots.
    pub cache: Cache,
    /// Connected streams.
    pub nodes: Nodes,
    /// Endpoint sources.
    pub discovery: Discovery,
    /// The latest catalog load.
    pub catalog: Arc<Mutex<CatalogStatus>>,
    /// True once the server is shutting down (not ready: load balancers stop sending).
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// The secrets held for SDS.
    pub secrets: tokio::sync::watch::Receiver<Arc<crate::secrets::Material>>,
    /// The catalog served (the last good one).
    pub loaded: tokio::sync::watch::Receiver<Option<Arc<crate::catalog::LoadedCatalog>>>,
}

/// The admin routes: nothing here shows configuration.
pub fn router(state: AdminState) -> Router {
    let (metrics, cache) = (state.metrics.clone(), state.cache.clone());
    // Orphans come and go with streams as well as with catalogs: counted when asked.
    let count_orphans = move || {
        let orphans = cache.current().orphans.len();
        metrics.orphaned_proxies.set(orphans as i64);
    };
    common::admin::router_updating(state.metrics.registry.clone(), count_orphans).merge(
        Router::new()
            .route("/readyz", get(readyz))
            .with_state(state),
    )
}

/// The debug routes: the status page, every proxy's configuration, the connected nodes, the
/// endpoints.
pub fn debug_router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/debug/nodes", get(nodes))
        .route("/debug/config", get(config))
        .route("/debug/endpoints", get(endpoints))
        .with_state(state)
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    stopping: bool,
    catalog: CatalogStatus,
    /// Certificates served over SDS that expire within a day and will not be renewed.
    certificates_expiring: Vec<String>,
    /// Secrets the catalog names that could never be obtained.
    certificates_missing: Vec<String>,
}

async fn readyz(State(s): State<AdminState>) -> Response {
    let stopping = *s.stopping.borrow();
    let ready = s.cache.current().loaded && !stopping;
    let catalog = s.catalog.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(Readiness {
            ready,
            stopping,
            catalog,
            certificates_expiring: s
                .secrets
                .borrow()
                .expiring
                .iter()
                .map(|(name, end)| {
                    let left = end
                        .duration_since(std::time::SystemTime::now())
                        .unwrap_or_default();
                    format!("{name} expires in {}s", left.as_secs())
                })
                .collect(),
            certificates_missing: s.secrets.borrow().missing.clone(),
        }),
    )
        .into_response()
}

async fn status_page(State(s): State<AdminState>) -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-store"),
        ],
        crate::status_page::render(&s),
    )
        .into_response()
}

async fn nodes(State(s): State<AdminState>) -> Response {
    Json(s.nodes.list()).into_response()
}

#[derive(Deserialize)]
struct ConfigQuery {
    proxy: Option<String>,
    /// The caller's zone, for proxies with zone-aware upstreams.
    zone: Option<String>,
}

async fn config(State(s): State<AdminState>, Query(q): Query<ConfigQuery>) -> Response {
    let snapshots = s.cache.current();
    let Some(proxy) = q.proxy else {
        let names: Vec<&str> = snapshots.proxies.keys().map(|p| p.0.as_str()).collect();
        let orphans: Vec<&str> = snapshots.orphans.keys().map(|p| p.0.as_str()).collect();
        return Json(serde_json::json!({ "proxies": names, "orphaned": orphans })).into_response();
    };
    let (snapshot, role) = snapshots.get(&ProxyName(proxy.clone()), q.zone.as_deref());
    if role == Role::Unknown {
        return (
            StatusCode::NOT_FOUND,
            format!("the catalog has no proxy {proxy:?}\n"),
        )
            .into_response();
    }
    match render::snapshot_json(&snapshot) {
        Ok(v) => Json(v).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

#[derive(Serialize)]
struct SourceView {
    source: String,
    endpoints: Option<Vec<String>>,
    last_success: Option<u64>,
    last_error: Option<String>,
    /// An empty answer after endpoints, kept back for one more poll.
    empty_held: bool,
}

async fn endpoints(State(s): State<AdminState>) -> Response {
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
    };
    let view: BTreeMap<usize, SourceView> = s
        .discovery
        .status()
        .into_iter()
        .enumerate()
        .map(|(i, (key, st))| {
            (
                i,
                SourceView {
                    source: key.describe(),
                    endpoints: st
                        .endpoints
                        .map(|eps| eps.iter().map(ToString::to_string).collect()),
                    last_success: st.last_success.map(secs),
                    last_error: st.last_error,
                    empty_held: st.empty_held,
                },
            )
        })
        .collect();
    Json(view.into_values().collect::<Vec<_>>()).into_response()
}
