//! The admin port every binary serves: `/metrics` in Prometheus' text format and `/healthz`.
//! A binary merges its own routes into [`router`].

use std::net::SocketAddr;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::Registry;

/// Registers `collector` in `registry` and gives it back. The toolkit's metric names are
/// constants, so a clash is a bug caught by the first test that builds the metrics.
pub fn register<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: T,
) -> T {
    registry
        .register(Box::new(collector.clone()))
        .expect("metric names are unique");
    collector
}

/// Registers `NAME{version, commit} 1` (e.g. `s3cl_build_info`), so that dashboards and alerts
/// can tell which build runs where, as Prometheus' own `prometheus_build_info` does.
pub fn register_build_info(registry: &Registry, name: &str) {
    let help = "The version and commit of this binary (always 1)";
    let gauge = register(
        registry,
        prometheus::IntGaugeVec::new(prometheus::Opts::new(name, help), &["version", "commit"])
            .expect("valid metric"),
    );
    gauge
        .with_label_values(&[crate::version::VERSION, crate::version::COMMIT])
        .set(1);
}

/// Everything in `registry`, in the text exposition format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    let _ = prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut out);
    out
}

/// A `/metrics` response of `registry`.
pub fn metrics_response(registry: &Registry) -> axum::response::Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(registry),
    )
        .into_response()
}

/// `/metrics` (everything in `registry`) and `/healthz` (`ok`).
pub fn router(registry: Registry) -> Router {
    router_updating(registry, || {})
}

/// [`router`], running `update` before each `/metrics` answer: for gauges counted only when
/// asked.
pub fn router_updating(
    registry: Registry,
    update: impl Fn() + Clone + Send + Sync + 'static,
) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                update();
                let response = metrics_response(&registry);
                async move { response }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
}

/// Serves `router` on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, router: Router) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router).await
}
