//! Refreshing forever: discover, write the files, publish for http_sd; keep the last good output
//! on any error, back off when throttled.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::discover::{ApiError, Discoverer};
use crate::metrics::Metrics;
use crate::output;
use crate::targets::{Discovered, LabelOptions, TargetGroup, discover};

/// The longest a refresh may take before it counts as failed.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(300);

/// How refreshes run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Where the files go (none: http_sd only).
    pub directory: Option<PathBuf>,
    /// Time between refreshes.
    pub interval: Duration,
    /// Labels and files.
    pub labels: LabelOptions,
    /// The longest delay after throttling.
    pub max_backoff: Duration,
}

/// The latest good targets, shared with the HTTP server.
#[derive(Clone, Default)]
pub struct Published {
    inner: Arc<RwLock<Option<Arc<Discovered>>>>,
}

impl Published {
    fn set(&self, d: Arc<Discovered>) {
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = Some(d);
    }

    fn get(&self) -> Option<Arc<Discovered>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One refresh: discover and account for it in the metrics.
pub async fn refresh(
    discoverer: &mut Discoverer,
    labels: &LabelOptions,
    metrics: &Metrics,
) -> Result<Discovered, ApiError> {
    let started = Instant::now();
    let tasks = discoverer.refresh().await?;
    let mut d = discover(&tasks, labels);
    d.took = started.elapsed();
    metrics.refresh.observe(d.took.as_secs_f64());
    metrics.tasks.set(tasks.len() as i64);
    for (interval, groups) in &d.by_interval {
        metrics
            .targets
            .with_label_values(&[interval])
            .set(groups.len() as i64);
    }
    metrics.skipped.reset();
    for s in &d.skipped {
        metrics.skipped.with_label_values(&[s.reason]).inc();
    }
    Ok(d)
}

/// Refreshes until `shutdown` completes.
pub async fn run(
    mut discoverer: Discoverer,
    config: RunConfig,
    metrics: Metrics,
    published: Published,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff = Duration::ZERO;
    loop {
        // A stuck connection must not stop discovery, and SIGTERM must not wait for a refresh.
        let result = tokio::select! {
            r = tokio::time::timeout(REFRESH_TIMEOUT, refresh(&mut discoverer, &config.labels, &metrics)) => {
                r.unwrap_or_else(|_| Err(ApiError {
                    operation: "refresh",
                    message: format!("no answer within {REFRESH_TIMEOUT:?}"),
                    throttled: false,
                }))
            }
            _ = &mut shutdown => return,
        };
        let delay = match result {
            Ok(d) => {
                backoff = Duration::ZERO;
                let d = Arc::new(d);
                // http_sd gets the new targets even if the files cannot be written.
                published.set(d.clone());
                let written = match &config.directory {
                    Some(dir) => output::write_all(dir, &d.by_interval).map_err(|e| {
                        metrics.errors.with_label_values(&["write"]).inc();
                        tracing::error!(dir = %dir.display(), error = %e, "cannot write the target files; the previous ones stay");
                    }),
                    None => Ok(Vec::new()),
                };
                if let Ok(changed) = written {
                    metrics.file_writes.inc_by(changed.len() as u64);
                    metrics
                        .last_success
                        .set(common::duration::since_epoch().as_secs_f64());
                    let targets: usize = d.by_interval.values().map(Vec::len).sum();
                    tracing::info!(
                        targets,
                        skipped = d.skipped.len(),
                        files_changed = changed.len(),
                        took_ms = d.took.as_millis() as u64,
                        "refreshed"
                    );
                }
                common::duration::jitter(config.interval)
            }
            Err(e) => {
                let kind = if e.throttled { "throttled" } else { "error" };
                metrics.errors.with_label_values(&[kind]).inc();
                backoff = if e.throttled {
                    common::backoff::after_throttle(backoff, config.interval, config.max_backoff)
                } else {
                    Duration::ZERO
                };
                let delay = backoff.max(config.interval);
                tracing::warn!(error = %e, retry_in = ?delay, "refresh failed; the last good targets stay");
                delay
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = &mut shutdown => return,
        }
    }
}

/// `/sd` (every target), `/sd/{interval}` (one file's targets), `/metrics`, `/healthz`.
pub fn router(published: Published, metrics: Metrics) -> Router {
    Router::new()
        .route("/sd", get(sd_all))
        .route("/sd/{interval}", get(sd_interval))
        .with_state(published)
        .merge(common::admin::router(metrics.registry))
}

async fn sd_all(State(p): State<Published>) -> Response {
    match p.get() {
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no refresh has succeeded yet\n",
        )
            .into_response(),
        Some(d) => {
            let all: Vec<&TargetGroup> = d.by_interval.values().flatten().collect();
            Json(all).into_response()
        }
    }
}

async fn sd_interval(State(p): State<Published>, Path(interval): Path<String>) -> Response {
    match p.get() {
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no refresh has succeeded yet\n",
        )
            .into_response(),
        Some(d) => match d.by_interval.get(&interval) {
            Some(groups) => Json(groups).into_response(),
            None => (
                StatusCode::NOT_FOUND,
                format!(
                    "no interval {interval:?}; known: {}\n",
                    d.by_interval.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
                .into_response(),
        },
    }
}
