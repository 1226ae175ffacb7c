//! Refreshing forever: discover, write the files, publish for http_sd; keep the last good output
//! on any error, back off when throttled. A problem that lasts (AWS unreachable, a cluster not
//! found, a directory that cannot be written) is logged when it starts, changes and ends, not
//! on every refresh; the metrics count every occurrence.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use common::problems::{Change, Problems};

use crate::discover::{ApiError, Discoverer};
use crate::metrics::Metrics;
use crate::output;
use crate::targets::{Discovered, LabelOptions, SKIP_REASONS, TargetGroup, discover};

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
    // Every reason, zero included: a series that vanished would read as "no data", not 0.
    for reason in SKIP_REASONS {
        let count = d.skipped.iter().filter(|s| s.reason == reason).count();
        metrics
            .skipped
            .with_label_values(&[reason])
            .set(count as i64);
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
    let mut backoff = common::backoff::Throttle::new(config.interval, config.max_backoff);
    // The refresh as a whole, and the files.
    let mut failing = Problems::default();
    // What successful refreshes went without (clusters not found, unknown hosts).
    let mut missing = Problems::default();
    let mut first = true;
    loop {
        // A stuck connection must not stop discovery, and SIGTERM must not wait for a refresh.
        let result = tokio::select! {
            r = tokio::time::timeout(REFRESH_TIMEOUT, refresh(&mut discoverer, &config.labels, &metrics)) => {
                r.unwrap_or_else(|_| Err(ApiError::other(
                    "refresh",
                    format!("no answer within {REFRESH_TIMEOUT:?}"),
                )))
            }
            _ = &mut shutdown => return,
        };
        let delay = match result {
            Ok(d) => {
                let d = Arc::new(d);
                // http_sd gets the new targets even if the files cannot be written.
                published.set(d.clone());
                log_missing(&mut missing, discoverer.problems().clone());
                let written = match &config.directory {
                    Some(dir) => output::write_all(dir, &d.by_interval).map_err(|e| {
                        metrics.errors.with_label_values(&["write"]).inc();
                        format!("cannot write the target files in {}: {e}", dir.display())
                    }),
                    None => Ok(Vec::new()),
                };
                match written {
                    Ok(changed) => {
                        log_failing(&mut failing, None, Duration::ZERO);
                        metrics.file_writes.inc_by(changed.len() as u64);
                        metrics
                            .last_success
                            .set(common::duration::since_epoch().as_secs_f64());
                        metrics.last_refresh_successful.set(1);
                        let targets: usize = d.by_interval.values().map(Vec::len).sum();
                        // The first refresh and those that changed a file; others at debug.
                        let quiet = changed.is_empty() && !first;
                        first = false;
                        if quiet {
                            tracing::debug!(
                                targets,
                                skipped = d.skipped.len(),
                                took_ms = d.took.as_millis() as u64,
                                "refreshed; no file changed"
                            );
                        } else {
                            tracing::info!(
                                targets,
                                skipped = d.skipped.len(),
                                files_changed = changed.len(),
                                took_ms = d.took.as_millis() as u64,
                                "refreshed"
                            );
                        }
                    }
                    Err(problem) => {
                        metrics.last_refresh_successful.set(0);
                        log_failing(&mut failing, Some(("write", problem)), config.interval);
                    }
                }
                backoff.after(false)
            }
            Err(e) => {
                let kind = if e.throttled { "throttled" } else { "error" };
                metrics.errors.with_label_values(&[kind]).inc();
                metrics.last_refresh_successful.set(0);
                let delay = backoff.after(e.throttled);
                log_failing(&mut failing, Some(("refresh", e.to_string())), delay);
                delay
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = &mut shutdown => return,
        }
    }
}

/// Logs a failing refresh (`what`: `refresh` or `write`, and the problem) when it starts or
/// changes, and when refreshes work again (`None`).
fn log_failing(failing: &mut Problems, now: Option<(&str, String)>, retry_in: Duration) {
    let now: BTreeMap<String, String> = now
        .into_iter()
        .map(|(what, problem)| (what.to_string(), problem))
        .collect();
    for change in failing.update(now) {
        match change {
            Change::Started { key, message } | Change::Changed { key, message }
                if key == "write" =>
            {
                tracing::error!(error = %message, "the target files cannot be written; the previous ones stay (logged again when the error changes or ends)");
            }
            Change::Started { message, .. } => {
                tracing::warn!(error = %message, retry_in = ?retry_in, "refresh failed; the last good targets stay (logged again when the error changes or ends)");
            }
            Change::Changed { message, .. } => {
                tracing::warn!(error = %message, retry_in = ?retry_in, "refresh still failing, with another error; the last good targets stay");
            }
            Change::Ended { key, message } => {
                tracing::info!(was = %message, "{} works again", if key == "write" { "writing the target files" } else { "refreshing" });
            }
        }
    }
}

/// Logs what a successful refresh went without (clusters not found, unknown hosts) when it
/// starts, changes and ends.
fn log_missing(missing: &mut Problems, now: BTreeMap<String, String>) {
    for change in missing.update(now) {
        match change {
            Change::Started { key, message } | Change::Changed { key, message } => {
                tracing::warn!(subject = %key, "{message}");
            }
            Change::Ended { key, .. } => tracing::info!(subject = %key, "found again"),
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
