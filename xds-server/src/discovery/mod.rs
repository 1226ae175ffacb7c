//! Discovery: where the endpoints of each upstream come from.
//!
//! Every distinct source in the catalog ([`SourceKey`]) gets one poller, shared by all upstreams
//! that name it. A poller keeps the last good endpoint set: an error is recorded next to it and
//! never empties it. Each change is announced on a watch channel, so the snapshot builder wakes
//! only when something moved.
//!
//! A new kind of source implements [`Source`] and gets a [`SourceKey`] variant; the polling loop,
//! status keeping and sharing come for free.

mod aws;
mod cloud_map;
mod ecs;
mod file;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::catalog::{CloudMapSource, EcsSource, Endpoint, LoadedCatalog, Upstream, UpstreamName};
use crate::metrics::Metrics;
use crate::translate::EndpointMap;

pub use cloud_map::CloudMapPoller;
pub use ecs::EcsPoller;
pub use file::FileSource;

/// Why a source could not answer this time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// An endpoint file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// An endpoint file was read but is not a list of `ip:port` strings.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the position.
        reason: String,
    },
    /// An AWS API call failed (throttled, denied, unreachable, timed out).
    #[error("{operation}: {message}")]
    Aws {
        /// The API operation.
        operation: &'static str,
        /// The service's error code and message, or the transport problem.
        message: String,
        /// Whether AWS throttled the call (the source then backs off).
        throttled: bool,
    },
    /// The source did not answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Identity of an endpoint source: upstreams naming the same source share one poller.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKey {
    /// Fixed endpoints from the catalog.
    Static(Vec<Endpoint>),
    /// A JSON endpoint file (absolute path, resolved against the catalog's directory).
    File(PathBuf),
    /// A Cloud Map service, with the upstream's default port.
    CloudMap(CloudMapSource, Option<u16>),
    /// An ECS service, with the upstream's default port.
    Ecs(EcsSource, Option<u16>),
}

impl SourceKey {
    /// The source of an upstream, or `None` when Envoy resolves it itself (`dns`).
    pub fn of(catalog: &LoadedCatalog, upstream: &Upstream) -> Option<SourceKey> {
        let e = &upstream.endpoints;
        if let Some(list) = &e.static_ {
            let mut eps: Vec<Endpoint> = list
                .iter()
                .filter_map(|s| Endpoint::parse(s).ok())
                .collect();
            eps.sort();
            eps.dedup();
            return Some(SourceKey::Static(eps));
        }
        let port = upstream.port.and_then(|p| u16::try_from(p).ok());
        if let Some(f) = &e.file {
            return Some(SourceKey::File(catalog.resolve(f)));
        }
        if let Some(c) = &e.cloud_map {
            return Some(SourceKey::CloudMap(c.clone(), port));
        }
        e.ecs.as_ref().map(|c| SourceKey::Ecs(c.clone(), port))
    }

    /// The kind, for metrics: `static`, `file`, `cloud_map`, `ecs`.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceKey::Static(_) => "static",
            SourceKey::File(_) => "file",
            SourceKey::CloudMap(..) => "cloud_map",
            SourceKey::Ecs(..) => "ecs",
        }
    }

    /// A short description for logs and the admin pages.
    pub fn describe(&self) -> String {
        match self {
            SourceKey::Static(eps) => format!("static ({} endpoints)", eps.len()),
            SourceKey::File(p) => format!("file {}", p.display()),
            SourceKey::CloudMap(c, _) => format!("cloud_map {}/{}", c.namespace, c.service),
            SourceKey::Ecs(c, _) => format!("ecs {}/{}", c.cluster, c.service),
        }
    }
}

/// A pollable endpoint source.
pub trait Source: Send + 'static {
    /// The current endpoints, or `Ok(None)` when they did not change since the last call.
    fn fetch(
        &mut self,
    ) -> impl Future<Output = Result<Option<Vec<Endpoint>>, DiscoveryError>> + Send;
}

/// What is known about one source.
#[derive(Debug, Clone, Default)]
pub struct SourceStatus {
    /// The last good endpoint set; `None` until the source first answered.
    pub endpoints: Option<Arc<Vec<Endpoint>>>,
    /// When the source last answered.
    pub last_success: Option<SystemTime>,
    /// The last error, cleared by the next success.
    pub last_error: Option<String>,
}

/// Polling settings.
#[derive(Debug, Clone, Copy)]
pub struct DiscoveryConfig {
    /// How often endpoint files are re-read.
    pub file_interval: Duration,
    /// How often Cloud Map and ECS sources are polled (±10% jitter).
    pub aws_interval: Duration,
    /// The longest delay between polls of a throttled source.
    pub max_backoff: Duration,
    /// How long building a snapshot waits for a new source's first answer.
    pub first_answer_wait: Duration,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            file_interval: Duration::from_secs(1),
            aws_interval: Duration::from_secs(5),
            max_backoff: Duration::from_secs(300),
            first_answer_wait: Duration::from_secs(5),
        }
    }
}

/// The set of running sources and their last known endpoints.
#[derive(Clone)]
pub struct Discovery {
    inner: Arc<Inner>,
}

struct Inner {
    config: DiscoveryConfig,
    metrics: Metrics,
    clients: aws::Clients,
    status: RwLock<BTreeMap<SourceKey, SourceStatus>>,
    pollers: Mutex<HashMap<SourceKey, JoinHandle<()>>>,
    changed: watch::Sender<u64>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(pollers) = self.pollers.get_mut() {
            for (_, task) in pollers.drain() {
                task.abort();
            }
        }
    }
}

impl Discovery {
    /// An empty set of sources.
    pub fn new(config: DiscoveryConfig, metrics: Metrics) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                metrics,
                clients: aws::Clients::default(),
                status: RwLock::new(BTreeMap::new()),
                pollers: Mutex::new(HashMap::new()),
                changed: watch::channel(0).0,
            }),
        }
    }

    /// Notified (the value counts changes) whenever any source's endpoints change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// Starts the sources a catalog names and stops those it no longer names. Sources that stay
    /// keep their poller and their endpoints. A new source is asked once before this returns, so
    /// the first snapshot built from a catalog already has its endpoints (a restarted server then
    /// serves the same versions as before).
    pub async fn reconcile(&self, catalog: &LoadedCatalog) {
        let wanted: BTreeSet<SourceKey> = catalog
            .catalog
            .upstreams
            .values()
            .filter_map(|u| SourceKey::of(catalog, u))
            .collect();
        let new: Vec<SourceKey> = {
            let mut pollers = self.inner.pollers.lock().unwrap_or_else(|e| e.into_inner());
            let mut status = self.inner.status.write().unwrap_or_else(|e| e.into_inner());
            status.retain(|k, _| wanted.contains(k));
            pollers.retain(|k, task| {
                let keep = wanted.contains(k);
                if !keep {
                    task.abort();
                }
                keep
            });
            let new: Vec<SourceKey> = wanted
                .into_iter()
                .filter(|k| !status.contains_key(k))
                .collect();
            for key in &new {
                status.insert(key.clone(), SourceStatus::default());
            }
            new
        };
        for key in new {
            let config = self.inner.config;
            let metrics = self.inner.metrics.clone();
            let clients = &self.inner.clients;
            let task = match &key {
                SourceKey::Static(eps) => {
                    self.inner.record(&key, Ok(Some(eps.clone())));
                    continue;
                }
                SourceKey::File(path) => {
                    self.start(
                        key.clone(),
                        FileSource::new(path.clone()),
                        config.file_interval,
                    )
                    .await
                }
                SourceKey::CloudMap(src, port) => {
                    let limiter = clients.cloud_map_limit.get(aws::CLOUD_MAP_RATE);
                    let poller = CloudMapPoller::new(
                        clients.cloud_map().await,
                        src.clone(),
                        *port,
                        limiter,
                        metrics,
                    );
                    self.start(key.clone(), poller, config.aws_interval).await
                }
                SourceKey::Ecs(src, port) => {
                    let limiter = clients.ecs_limit.get(aws::ECS_RATE);
                    let poller =
                        EcsPoller::new(clients.ecs().await, src.clone(), *port, limiter, metrics);
                    self.start(key.clone(), poller, config.aws_interval).await
                }
            };
            self.inner
                .pollers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, task);
        }
    }

    /// Asks a new source once (bounded by `first_answer_wait`), then polls it in a task.
    async fn start<S: Source>(
        &self,
        key: SourceKey,
        mut source: S,
        interval: Duration,
    ) -> JoinHandle<()> {
        let wait = self.inner.config.first_answer_wait;
        let first = match tokio::time::timeout(wait, source.fetch()).await {
            Ok(r) => r,
            Err(_) => Err(DiscoveryError::Timeout(wait)),
        };
        self.inner.record(&key, first);
        self.spawn_poller(key, source, interval)
    }

    fn spawn_poller<S: Source>(
        &self,
        key: SourceKey,
        mut source: S,
        interval: Duration,
    ) -> JoinHandle<()> {
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut delay = common::duration::jitter(interval);
            let mut backoff = Duration::ZERO;
            loop {
                tokio::time::sleep(delay).await;
                let result = source.fetch().await;
                let Some(inner) = inner.upgrade() else { return };
                let throttled = matches!(
                    result,
                    Err(DiscoveryError::Aws {
                        throttled: true,
                        ..
                    })
                );
                // Throttled: back off exponentially (2×, 4×, … the interval, up to the maximum).
                backoff = if throttled {
                    (backoff.max(interval) * 2).min(inner.config.max_backoff)
                } else {
                    Duration::ZERO
                };
                inner
                    .metrics
                    .discovery_backoff
                    .with_label_values(&[key.kind()])
                    .set(backoff.as_secs_f64());
                delay = if throttled {
                    backoff
                } else {
                    common::duration::jitter(interval)
                };
                inner.record(&key, result);
            }
        })
    }

    /// The last good endpoints of every upstream that has a source, and the upstreams whose
    /// source has not answered yet (they have no endpoints), in one pass over the catalog.
    pub fn endpoints(&self, catalog: &LoadedCatalog) -> (EndpointMap, Vec<UpstreamName>) {
        let status = self.inner.status.read().unwrap_or_else(|e| e.into_inner());
        let mut found = EndpointMap::new();
        let mut waiting = Vec::new();
        for (name, u) in &catalog.catalog.upstreams {
            let Some(key) = SourceKey::of(catalog, u) else {
                continue;
            };
            match status.get(&key).and_then(|s| s.endpoints.clone()) {
                Some(eps) => {
                    found.insert(name.clone(), eps);
                }
                None => waiting.push(name.clone()),
            }
        }
        (found, waiting)
    }

    /// Every source with its status, for the admin pages.
    pub fn status(&self) -> Vec<(SourceKey, SourceStatus)> {
        let status = self.inner.status.read().unwrap_or_else(|e| e.into_inner());
        status.iter().map(|(k, s)| (k.clone(), s.clone())).collect()
    }
}

impl Inner {
    fn record(&self, key: &SourceKey, result: Result<Option<Vec<Endpoint>>, DiscoveryError>) {
        let mut status = self.status.write().unwrap_or_else(|e| e.into_inner());
        let Some(s) = status.get_mut(key) else { return };
        match result {
            Ok(found) => {
                s.last_success = Some(SystemTime::now());
                s.last_error = None;
                if let Some(mut eps) = found {
                    eps.sort();
                    eps.dedup();
                    if s.endpoints.as_deref() != Some(&eps) {
                        tracing::info!(source = %key.describe(), endpoints = eps.len(), "endpoints changed");
                        s.endpoints = Some(Arc::new(eps));
                        drop(status);
                        self.changed.send_modify(|n| *n += 1);
                    }
                }
            }
            Err(e) => {
                let reason = match e {
                    DiscoveryError::Aws {
                        throttled: true, ..
                    } => "throttled",
                    _ => "error",
                };
                self.metrics
                    .discovery_errors
                    .with_label_values(&[key.kind(), reason])
                    .inc();
                let text = e.to_string();
                if s.last_error.as_deref() != Some(&text) {
                    tracing::warn!(source = %key.describe(), error = %text, "discovery failed; keeping the last good endpoints");
                }
                s.last_error = Some(text);
            }
        }
    }
}
