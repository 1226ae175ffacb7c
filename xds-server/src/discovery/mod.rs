//! Discovery: where the endpoints of each upstream come from.
//!
//! Every distinct source in the catalog ([`SourceKey`]) gets one poller, shared by all upstreams
//! that name it. A poller keeps the last good endpoint set: an error (a timeout included: every
//! poll has a deadline) is recorded next to it and never empties it, and an empty answer after
//! endpoints is believed only when the next poll says the same. Each change is announced on a
//! watch channel, so the snapshot builder wakes only when something moved.
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

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::catalog::EndpointMap;
use crate::catalog::{CloudMapSource, EcsSource, Endpoint, LoadedCatalog, Upstream, UpstreamName};
use crate::metrics::Metrics;

pub use cloud_map::CloudMapPoller;
pub use ecs::EcsPoller;
pub use file::{FileSource, parse_endpoints};

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
    /// An AWS API call failed (throttled, denied, unreachable, timed out); a throttled one
    /// makes the source back off.
    #[error("{0}")]
    Aws(common::aws::ApiError),
    /// The source did not answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl DiscoveryError {
    /// Whether AWS throttled the call (the source then backs off).
    pub fn throttled(&self) -> bool {
        matches!(self, DiscoveryError::Aws(e) if e.throttled)
    }
}

/// The endpoints known without asking anyone: static lists and endpoint files that can be read.
pub fn offline_endpoints(catalog: &LoadedCatalog) -> EndpointMap {
    let mut out = EndpointMap::new();
    for (name, u) in &catalog.catalog.upstreams {
        let eps = match SourceKey::of(catalog, u) {
            Some(SourceKey::Static(eps)) => eps,
            Some(SourceKey::File(path)) => match std::fs::read(&path)
                .ok()
                .and_then(|bytes| parse_endpoints(&path, &bytes).ok())
            {
                Some(mut eps) => {
                    crate::catalog::normalize(&mut eps);
                    eps
                }
                None => continue,
            },
            _ => continue,
        };
        out.insert(name.clone(), std::sync::Arc::new(eps));
    }
    out
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
            let mut eps: Vec<Endpoint> = list.iter().filter_map(|e| e.endpoint().ok()).collect();
            crate::catalog::normalize(&mut eps);
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

    /// A short description for logs, the admin pages and the `source` label of metrics. Polled
    /// sources (files, Cloud Map, ECS) that differ get different descriptions: what sets them
    /// apart besides their name (`health: all`, attributes, the container, ports) is appended.
    pub fn describe(&self) -> String {
        let with = |base: String, details: Vec<String>| {
            if details.is_empty() {
                base
            } else {
                format!("{base} [{}]", details.join(", "))
            }
        };
        let port = |p: &Option<u16>, what: &str| p.map(|p| format!("{what} {p}"));
        match self {
            SourceKey::Static(eps) => format!("static ({} endpoints)", eps.len()),
            SourceKey::File(p) => format!("file {}", p.display()),
            SourceKey::CloudMap(c, default_port) => {
                let mut details: Vec<String> =
                    c.health.iter().map(|h| format!("health {h}")).collect();
                details.extend(c.attributes.iter().map(|(k, v)| format!("{k}={v}")));
                details.extend(port(default_port, "default port"));
                with(format!("cloud_map {}/{}", c.namespace, c.service), details)
            }
            SourceKey::Ecs(c, default_port) => {
                let mut details: Vec<String> = c
                    .container
                    .iter()
                    .map(|n| format!("container {n}"))
                    .collect();
                details.extend(port(&c.port.and_then(|p| u16::try_from(p).ok()), "port"));
                details.extend(port(default_port, "default port"));
                with(format!("ecs {}/{}", c.cluster, c.service), details)
            }
        }
    }
}

/// A pollable endpoint source.
pub trait Source: Send + 'static {
    /// The current endpoints, or `Ok(None)` when they did not change since the last call.
    fn fetch(
        &mut self,
    ) -> impl Future<Output = Result<Option<Vec<Endpoint>>, DiscoveryError>> + Send;

    /// Whether the last answer serves unhealthy endpoints because none was healthy (as Envoy's
    /// panic routing would, rather than none at all); `xds_discovery_all_unhealthy` shows it.
    fn all_unhealthy(&self) -> bool {
        false
    }
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
    /// The source answered with no endpoints after having had some: `endpoints` still holds the
    /// last set, until the next answer confirms the empty one (or brings endpoints back).
    pub empty_held: bool,
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
    /// How long building a snapshot waits for the first answers of new sources (asked all at
    /// once, so this is one deadline however many sources are new).
    pub first_answer_wait: Duration,
    /// The longest one poll may take; a poll that takes longer fails with
    /// [`DiscoveryError::Timeout`], like any other error.
    pub poll_timeout: Duration,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            file_interval: Duration::from_secs(1),
            aws_interval: Duration::from_secs(5),
            max_backoff: Duration::from_secs(300),
            first_answer_wait: Duration::from_secs(5),
            poll_timeout: Duration::from_secs(30),
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
    /// keep their poller and their endpoints. New sources are all asked at once, and this returns
    /// when each has answered or `first_answer_wait` has passed, whichever is first: the first
    /// snapshot built from a catalog then already has their endpoints (a restarted server serves
    /// the same versions as before), and many slow sources cost one wait, not one each. A source
    /// that answers later is published when it does.
    pub async fn reconcile(&self, catalog: &LoadedCatalog) {
        let wanted: BTreeSet<SourceKey> = catalog
            .catalog
            .upstreams
            .values()
            .filter_map(|u| SourceKey::of(catalog, u))
            .collect();
        let new = self.retain_and_register(wanted);
        let config = self.inner.config;
        let clients = &self.inner.clients;
        let mut answers = Vec::new();
        for key in new {
            let metrics = self.inner.metrics.clone();
            let answer = match &key {
                SourceKey::Static(eps) => {
                    self.inner.record(&key, Ok(Some(eps.clone())));
                    continue;
                }
                SourceKey::File(path) => self.start(
                    key.clone(),
                    FileSource::new(path.clone()),
                    config.file_interval,
                ),
                SourceKey::CloudMap(src, port) => {
                    let limiter = clients.cloud_map_limit.get(aws::CLOUD_MAP_RATE);
                    let calls = aws::Calls::new("cloud_map", limiter, metrics);
                    let client = clients.cloud_map().await;
                    let poller = CloudMapPoller::new(client, src.clone(), *port, calls);
                    self.start(key.clone(), poller, config.aws_interval)
                }
                SourceKey::Ecs(src, port) => {
                    let limiter = clients.ecs_limit.get(aws::ECS_RATE);
                    let calls = aws::Calls::new("ecs", limiter, metrics);
                    let poller = EcsPoller::new(clients.ecs().await, src.clone(), *port, calls);
                    self.start(key.clone(), poller, config.aws_interval)
                }
            };
            answers.push(answer);
        }
        self.wait_first_answers(answers).await;
    }

    /// Keeps the sources in `wanted` and stops the others (their status and metric series go
    /// too); returns the sources of `wanted` that are new, now registered without endpoints.
    fn retain_and_register(&self, wanted: BTreeSet<SourceKey>) -> Vec<SourceKey> {
        let mut pollers = self.inner.pollers.lock().unwrap_or_else(|e| e.into_inner());
        let mut status = self.inner.status.write().unwrap_or_else(|e| e.into_inner());
        status.retain(|k, _| {
            let keep = wanted.contains(k);
            if !keep {
                self.inner.forget_series(k);
            }
            keep
        });
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
    }

    /// Starts polling a registered source at once; the receiver hears of its first answer.
    fn start<S: Source>(
        &self,
        key: SourceKey,
        source: S,
        interval: Duration,
    ) -> oneshot::Receiver<()> {
        let (answered, answer) = oneshot::channel();
        let task = self.spawn_poller(key.clone(), source, interval, answered);
        self.inner
            .pollers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, task);
        answer
    }

    /// Waits until every source has answered once, or `first_answer_wait` has passed.
    async fn wait_first_answers(&self, answers: Vec<oneshot::Receiver<()>>) {
        let deadline = tokio::time::Instant::now() + self.inner.config.first_answer_wait;
        for answer in answers {
            // The pollers run on their own: waiting for them one after another costs the
            // slowest one's time, bounded by the one deadline.
            let _ = tokio::time::timeout_at(deadline, answer).await;
        }
    }

    fn spawn_poller<S: Source>(
        &self,
        key: SourceKey,
        mut source: S,
        interval: Duration,
        answered: oneshot::Sender<()>,
    ) -> JoinHandle<()> {
        let inner = Arc::downgrade(&self.inner);
        let DiscoveryConfig {
            poll_timeout,
            max_backoff,
            ..
        } = self.inner.config;
        tokio::spawn(async move {
            let mut answered = Some(answered);
            let mut backoff = common::backoff::Throttle::new(interval, max_backoff);
            loop {
                let result = match tokio::time::timeout(poll_timeout, source.fetch()).await {
                    Ok(r) => r,
                    Err(_) => Err(DiscoveryError::Timeout(poll_timeout)),
                };
                let throttled = result.as_ref().is_err_and(DiscoveryError::throttled);
                // Throttled: back off exponentially (2×, 4×, … the interval, up to the maximum).
                let delay = backoff.after(throttled);
                {
                    // Not held across the sleep: dropping the last `Discovery` stops the pollers.
                    let Some(inner) = inner.upgrade() else { return };
                    inner.record_poll(&key, result, backoff.current(), source.all_unhealthy());
                }
                if let Some(answered) = answered.take() {
                    let _ = answered.send(());
                }
                tokio::time::sleep(delay).await;
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
    /// The `kind` and `source` labels of a source's metric series.
    fn series(key: &SourceKey) -> [String; 2] {
        [key.kind().to_string(), key.describe()]
    }

    /// Removes the per-source metric series of a source that went away (status write-locked, so
    /// that a poller still finishing a poll cannot bring them back: see `record_poll`).
    fn forget_series(&self, key: &SourceKey) {
        let labels = Self::series(key);
        let labels = [labels[0].as_str(), labels[1].as_str()];
        let _ = self.metrics.discovery_backoff.remove_label_values(&labels);
        let _ = self
            .metrics
            .discovery_all_unhealthy
            .remove_label_values(&labels);
    }

    /// Records one poll of a running source: its per-source gauges, then its answer.
    fn record_poll(
        &self,
        key: &SourceKey,
        result: Result<Option<Vec<Endpoint>>, DiscoveryError>,
        backoff: Duration,
        all_unhealthy: bool,
    ) {
        {
            let status = self.status.read().unwrap_or_else(|e| e.into_inner());
            if !status.contains_key(key) {
                return; // stopped meanwhile
            }
            let labels = Self::series(key);
            let labels = [labels[0].as_str(), labels[1].as_str()];
            self.metrics
                .discovery_backoff
                .with_label_values(&labels)
                .set(backoff.as_secs_f64());
            let gauge = self
                .metrics
                .discovery_all_unhealthy
                .with_label_values(&labels);
            let was = gauge.get() == 1;
            // Only a successful poll says anything about health.
            if result.is_ok() && was != all_unhealthy {
                if all_unhealthy {
                    tracing::warn!(source = %key.describe(), "no instance is healthy; serving all of them until one is");
                } else {
                    tracing::info!(source = %key.describe(), "healthy instances again; serving only those");
                }
                gauge.set(i64::from(all_unhealthy));
            }
        }
        self.record(key, result);
    }

    /// Records an answer of a source. The one rule for every kind of source: an empty answer
    /// after endpoints (a Cloud Map namespace emptied by mistake, a file truncated mid-write, an
    /// ECS service between deployments for a moment) keeps the last set for one more poll, and
    /// is accepted when the next answer is empty too.
    fn record(&self, key: &SourceKey, result: Result<Option<Vec<Endpoint>>, DiscoveryError>) {
        let mut status = self.status.write().unwrap_or_else(|e| e.into_inner());
        let Some(s) = status.get_mut(key) else { return };
        match result {
            Ok(found) => {
                s.last_success = Some(SystemTime::now());
                // A failure is logged when it starts, changes and ends, not at every poll.
                if s.last_error.take().is_some() {
                    tracing::info!(source = %key.describe(), "discovery answers again");
                }
                let found = match found {
                    Some(mut eps) => {
                        crate::catalog::normalize(&mut eps);
                        Some(eps)
                    }
                    // "Unchanged since the last answer", and the last answer was the empty one.
                    None if s.empty_held => Some(Vec::new()),
                    None => None,
                };
                let Some(eps) = found else { return };
                let had = s.endpoints.as_ref().map_or(0, |e| e.len());
                if eps.is_empty() && had > 0 {
                    if !s.empty_held {
                        s.empty_held = true;
                        tracing::warn!(source = %key.describe(), kept = had, "the source answered with no endpoints; keeping the last ones for one more poll");
                        return;
                    }
                    tracing::warn!(source = %key.describe(), "the source answered with no endpoints again; it has none now");
                }
                s.empty_held = false;
                if s.endpoints.as_deref() != Some(&eps) {
                    tracing::info!(source = %key.describe(), endpoints = eps.len(), "endpoints changed");
                    s.endpoints = Some(Arc::new(eps));
                    drop(status);
                    self.changed.send_modify(|n| *n += 1);
                }
            }
            Err(e) => {
                let reason = match &e {
                    e if e.throttled() => "throttled",
                    DiscoveryError::Timeout(_) => "timeout",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        Endpoint::parse(s).unwrap()
    }

    fn discovery(config: DiscoveryConfig) -> Discovery {
        Discovery::new(config, Metrics::new())
    }

    /// Registers `keys` as reconcile does, without starting anything.
    fn register(d: &Discovery, keys: &[&SourceKey]) -> Vec<SourceKey> {
        d.retain_and_register(keys.iter().map(|k| (*k).clone()).collect())
    }

    fn endpoints(d: &Discovery, key: &SourceKey) -> Option<Vec<Endpoint>> {
        let status = d.inner.status.read().unwrap();
        status[key].endpoints.as_deref().cloned()
    }

    fn file_key(name: &str) -> SourceKey {
        SourceKey::File(PathBuf::from(format!("/fake/{name}.json")))
    }

    #[test]
    fn an_empty_answer_after_endpoints_is_believed_only_when_repeated() {
        let d = discovery(DiscoveryConfig::default());
        let key = file_key("web");
        register(&d, &[&key]);
        let changes = d.subscribe();
        let two = vec![ep("10.0.0.1:80"), ep("10.0.0.2:80")];
        let record = |r: Result<Option<Vec<Endpoint>>, DiscoveryError>| d.inner.record(&key, r);

        // A first answer is taken as it is, empty or not.
        record(Ok(Some(two.clone())));
        assert_eq!(endpoints(&d, &key), Some(two.clone()));
        // Empty once: the last set stays, nothing is announced.
        let before = *changes.borrow();
        record(Ok(Some(vec![])));
        assert_eq!(endpoints(&d, &key), Some(two.clone()));
        assert!(d.status()[0].1.empty_held);
        assert_eq!(*changes.borrow(), before);
        // An error in between decides nothing.
        record(Err(DiscoveryError::Timeout(Duration::from_secs(1))));
        assert_eq!(endpoints(&d, &key), Some(two.clone()));
        // Empty again: accepted.
        record(Ok(Some(vec![])));
        assert_eq!(endpoints(&d, &key), Some(vec![]));
        assert!(!d.status()[0].1.empty_held);
        assert_eq!(*changes.borrow(), before + 1);

        // Endpoints back, then empty once, then back: the blip never reaches a proxy.
        record(Ok(Some(two.clone())));
        record(Ok(Some(vec![])));
        record(Ok(Some(two.clone())));
        assert_eq!(endpoints(&d, &key), Some(two.clone()));
        assert!(!d.status()[0].1.empty_held);
        // The next empty answer is held again (the blip did not count as the first of two).
        record(Ok(Some(vec![])));
        assert_eq!(endpoints(&d, &key), Some(two.clone()));
        // "Unchanged" after an empty answer (a file that stays `[]`) repeats it: accepted.
        record(Ok(None));
        assert_eq!(endpoints(&d, &key), Some(vec![]));
        // ... and "unchanged" otherwise changes nothing.
        record(Ok(None));
        assert_eq!(endpoints(&d, &key), Some(vec![]));
    }

    /// A fake source: answers `endpoints` after `delay`, or never.
    struct Fake {
        delay: Option<Duration>,
        endpoints: Vec<Endpoint>,
        error: Option<DiscoveryError>,
    }

    impl Source for Fake {
        async fn fetch(&mut self) -> Result<Option<Vec<Endpoint>>, DiscoveryError> {
            match self.delay {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
            match &self.error {
                Some(e) => Err(e.clone()),
                None => Ok(Some(self.endpoints.clone())),
            }
        }
    }

    fn fake(delay: Option<Duration>, endpoint: &str) -> Fake {
        Fake {
            delay,
            endpoints: vec![ep(endpoint)],
            error: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn new_sources_are_asked_at_once_with_one_deadline() {
        let config = DiscoveryConfig {
            first_answer_wait: Duration::from_secs(5),
            poll_timeout: Duration::from_secs(30),
            ..DiscoveryConfig::default()
        };
        let d = discovery(config);
        let slow: Vec<SourceKey> = (0..4).map(|i| file_key(&format!("slow{i}"))).collect();
        let refs: Vec<&SourceKey> = slow.iter().collect();
        assert_eq!(register(&d, &refs).len(), 4);

        // Four sources that each take 2 s: one wait of 2 s, not 8 s.
        let started = tokio::time::Instant::now();
        let answers = slow
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let source = fake(
                    Some(Duration::from_secs(2)),
                    &format!("10.0.0.{}:80", i + 1),
                );
                d.start(k.clone(), source, Duration::from_secs(60))
            })
            .collect();
        d.wait_first_answers(answers).await;
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(3),
            "{took:?}"
        );
        for k in &slow {
            assert_eq!(endpoints(&d, k).map(|e| e.len()), Some(1), "{k:?}");
        }

        // With one that never answers: the wait ends at the deadline, the others are in.
        let (fast, hung) = (file_key("fast"), file_key("hung"));
        let mut all: Vec<&SourceKey> = slow.iter().collect();
        all.extend([&fast, &hung]);
        assert_eq!(register(&d, &all), vec![fast.clone(), hung.clone()]);
        let started = tokio::time::Instant::now();
        let answers = vec![
            d.start(
                hung.clone(),
                fake(None, "10.0.1.1:80"),
                Duration::from_secs(60),
            ),
            d.start(
                fast.clone(),
                fake(Some(Duration::from_millis(10)), "10.0.1.2:80"),
                Duration::from_secs(60),
            ),
        ];
        d.wait_first_answers(answers).await;
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(endpoints(&d, &fast), Some(vec![ep("10.0.1.2:80")]));
        assert_eq!(endpoints(&d, &hung), None);
        let (_, waiting) = d.endpoints(&LoadedCatalog {
            catalog: crate::catalog::parse(
                "c.yaml",
                "version: 1\nupstreams:\n  h: { protocol: http1, endpoints: { file: /fake/hung.json } }\n",
            )
            .unwrap(),
            base_dir: PathBuf::from("/"),
        });
        assert_eq!(waiting, vec![UpstreamName("h".into())]);

        // The hung poll is an error like any other once the poll timeout has passed.
        tokio::time::sleep(Duration::from_secs(26)).await;
        let status: BTreeMap<SourceKey, SourceStatus> = d.status().into_iter().collect();
        assert_eq!(
            status[&hung].last_error.as_deref(),
            Some("no answer within 30s")
        );
        assert!(status[&fast].last_error.is_none());
        assert_eq!(
            d.inner
                .metrics
                .discovery_errors
                .with_label_values(&["file", "timeout"])
                .get(),
            1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_is_per_source_and_leaves_with_its_source() {
        let config = DiscoveryConfig {
            max_backoff: Duration::from_secs(300),
            ..DiscoveryConfig::default()
        };
        let d = discovery(config);
        let throttled = || Fake {
            delay: Some(Duration::from_millis(1)),
            endpoints: vec![],
            error: Some(DiscoveryError::Aws(common::aws::ApiError {
                operation: "DiscoverInstances",
                message: "ThrottlingException: slow down".into(),
                throttled: true,
            })),
        };
        let (a, b) = (file_key("a"), file_key("b"));
        register(&d, &[&a, &b]);
        let interval = Duration::from_secs(5);
        let answers = vec![
            d.start(a.clone(), throttled(), interval),
            d.start(
                b.clone(),
                fake(Some(Duration::from_millis(1)), "10.0.0.1:80"),
                interval,
            ),
        ];
        d.wait_first_answers(answers).await;
        let backoff = |k: &SourceKey| {
            d.inner
                .metrics
                .discovery_backoff
                .with_label_values(&["file", &k.describe()])
                .get()
        };
        // A throttled source backs off (2× the interval), the other, of the same kind, does not.
        assert_eq!(backoff(&a), 10.0);
        assert_eq!(backoff(&b), 0.0);
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(backoff(&a), 20.0);
        assert_eq!(backoff(&b), 0.0);
        // A source the catalog drops takes its series with it.
        register(&d, &[&b]);
        let text = d.inner.metrics.render();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("xds_discovery_backoff_seconds{"))
            .collect();
        assert_eq!(
            series,
            vec!["xds_discovery_backoff_seconds{kind=\"file\",source=\"file /fake/b.json\"} 0"]
        );
        // And its poller is gone: the series does not come back.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!d.inner.metrics.render().contains("/fake/a.json"));
    }

    #[test]
    fn polled_sources_that_differ_are_described_differently() {
        let cm = |health: Option<&str>, stage: Option<&str>| {
            SourceKey::CloudMap(
                CloudMapSource {
                    namespace: "ns".into(),
                    service: "web".into(),
                    health: health.map(String::from),
                    attributes: stage
                        .map(|s| BTreeMap::from([("stage".to_string(), s.to_string())]))
                        .unwrap_or_default(),
                },
                None,
            )
        };
        assert_eq!(cm(None, None).describe(), "cloud_map ns/web");
        assert_eq!(
            cm(Some("all"), Some("green")).describe(),
            "cloud_map ns/web [health all, stage=green]"
        );
        let ecs = SourceKey::Ecs(
            EcsSource {
                cluster: "c".into(),
                service: "s".into(),
                container: Some("app".into()),
                port: None,
            },
            Some(8080),
        );
        assert_eq!(ecs.describe(), "ecs c/s [container app, default port 8080]");
    }
}
