//! Discovery: where the endpoints of each upstream come from.
//!
//! Every distinct source in the catalog ([`SourceKey`]) gets one poller, shared by all upstreams
//! that name it. A poller keeps the last good endpoint set: an error is recorded next to it and
//! never empties it. Each change is announced on a watch channel, so the snapshot builder wakes
//! only when something moved.
//!
//! A new kind of source implements [`Source`] and gets a [`SourceKey`] variant; the polling loop,
//! status keeping and sharing come for free.

mod file;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::catalog::{Endpoint, LoadedCatalog, Upstream};
use crate::translate::EndpointMap;

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
}

/// Identity of an endpoint source: upstreams naming the same source share one poller.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceKey {
    /// Fixed endpoints from the catalog.
    Static(Vec<Endpoint>),
    /// A JSON endpoint file (absolute path, resolved against the catalog's directory).
    File(PathBuf),
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
        e.file.as_ref().map(|f| SourceKey::File(catalog.resolve(f)))
    }

    /// A short description for logs and the admin pages.
    pub fn describe(&self) -> String {
        match self {
            SourceKey::Static(eps) => format!("static ({} endpoints)", eps.len()),
            SourceKey::File(p) => format!("file {}", p.display()),
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
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            file_interval: Duration::from_secs(1),
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
    pub fn new(config: DiscoveryConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
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
            match &key {
                SourceKey::Static(eps) => self.inner.record(&key, Ok(Some(eps.clone()))),
                SourceKey::File(path) => {
                    let mut source = FileSource::new(path.clone());
                    let first = source.fetch().await;
                    self.inner.record(&key, first);
                    let task =
                        self.spawn_poller(key.clone(), source, self.inner.config.file_interval);
                    self.inner
                        .pollers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key, task);
                }
            }
        }
    }

    fn spawn_poller<S: Source>(
        &self,
        key: SourceKey,
        mut source: S,
        interval: Duration,
    ) -> JoinHandle<()> {
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let result = source.fetch().await;
                let Some(inner) = inner.upgrade() else { return };
                inner.record(&key, result);
            }
        })
    }

    /// The last good endpoints of every upstream that has a source.
    pub fn endpoints(&self, catalog: &LoadedCatalog) -> EndpointMap {
        let status = self.inner.status.read().unwrap_or_else(|e| e.into_inner());
        catalog
            .catalog
            .upstreams
            .iter()
            .filter_map(|(name, u)| {
                let key = SourceKey::of(catalog, u)?;
                let eps = status.get(&key)?.endpoints.clone()?;
                Some((name.clone(), eps))
            })
            .collect()
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
                let text = e.to_string();
                if s.last_error.as_deref() != Some(&text) {
                    tracing::warn!(source = %key.describe(), error = %text, "discovery failed; keeping the last good endpoints");
                }
                s.last_error = Some(text);
            }
        }
    }
}
