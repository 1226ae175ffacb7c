//! The registry of connected proxies: what each stream was sent and what its Envoy said, for
//! `/debug/nodes`, the status page, `xds-server status` and CSDS.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::cache::{Role, Snapshot, TypeSnapshot, Version};
use crate::catalog::ProxyName;
use crate::translate::ResourceType;

/// What one stream has sent and heard for one resource type.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeStatus {
    /// `SYNCED` (the version last sent is acknowledged), `STALE` (sent, no answer yet) or
    /// `NACKED` (rejected: Envoy keeps its previous version); `REQUESTED` before anything was
    /// sent.
    pub state: SyncState,
    /// The version last sent.
    pub sent: Option<String>,
    /// The nonce of the response last sent.
    pub sent_nonce: Option<String>,
    /// When it was sent, in seconds since the Unix epoch.
    pub sent_at: Option<u64>,
    /// While `STALE`: for how many seconds the response has awaited its answer (by this
    /// server's clock, so callers need not trust theirs).
    pub stale_for_s: Option<u64>,
    /// The version last acknowledged.
    pub acked: Option<String>,
    /// When it was acknowledged, in seconds since the Unix epoch.
    pub acked_at: Option<u64>,
    /// The version last rejected.
    pub nacked: Option<String>,
    /// Envoy's error text for the last rejection.
    pub last_nack: Option<String>,
    /// When it was rejected, in seconds since the Unix epoch.
    pub nacked_at: Option<u64>,
    /// The resources of the response last sent (for CSDS); never serialized: bodies can hold
    /// keys.
    #[serde(skip)]
    pub(crate) sent_set: Option<ResourceSet>,
    /// The resources the proxy last acknowledged.
    #[serde(skip)]
    pub(crate) acked_set: Option<ResourceSet>,
}

/// Where one resource type stands between the server and one Envoy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SyncState {
    /// Subscribed, nothing sent yet.
    #[default]
    Requested,
    /// The last response is acknowledged.
    Synced,
    /// The last response awaits its ACK or NACK.
    Stale,
    /// The last response was rejected.
    Nacked,
}

impl SyncState {
    /// The word shown in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Requested => "REQUESTED",
            SyncState::Synced => "SYNCED",
            SyncState::Stale => "STALE",
            SyncState::Nacked => "NACKED",
        }
    }
}

/// The resources of one response (or of what a reconnecting proxy had): references into the
/// snapshot they came from, so keeping them costs no copy of the config.
#[derive(Debug, Clone)]
pub(crate) struct ResourceSet {
    /// The resources, whole.
    pub from: SetSource,
    /// The names subscribed to (`None`: all).
    pub names: Option<Arc<BTreeSet<String>>>,
    /// What Envoy shows as each resource's version: the response's (SotW) or the resource's
    /// own (delta).
    pub version: SetVersion,
}

/// Where the resources of a [`ResourceSet`] live.
#[derive(Debug, Clone)]
pub(crate) enum SetSource {
    /// One type of a published snapshot.
    Snapshot(Arc<Snapshot>, ResourceType),
    /// A set built for one response (SotW, with resources still in use kept).
    Own(Arc<TypeSnapshot>),
}

/// The version Envoy records for each resource of a [`ResourceSet`].
#[derive(Debug, Clone)]
pub(crate) enum SetVersion {
    /// The response's `version_info` (SotW).
    Response(Version),
    /// SotW after a response that left some resources as they were: Envoy keeps the version
    /// under which it took each unchanged one. One per resource, in name order.
    Shown(Arc<[Version]>),
    /// Each resource's own version (delta).
    PerResource,
}

impl SetSource {
    /// The resources themselves.
    pub(crate) fn typed(&self) -> &TypeSnapshot {
        match self {
            SetSource::Snapshot(s, t) => s.of(*t),
            SetSource::Own(ts) => ts,
        }
    }
}

impl ResourceSet {
    /// Each resource with the version Envoy records for it.
    pub(crate) fn resources(
        &self,
    ) -> impl Iterator<Item = (&str, Version, &crate::cache::VersionedResource)> {
        let snap = self.from.typed();
        let version = &self.version;
        // Both in name order: a subscription's resources are found walking the two side by
        // side (a lookup per resource was most of a SotW ACK's cost at 200 clusters).
        let mut subscribed = self.names.as_deref().map(|n| n.iter().peekable());
        snap.resources
            .iter()
            .filter(move |(n, _)| match &mut subscribed {
                None => snap.is_sent(n, None),
                Some(names) => {
                    while names.next_if(|s| s < n).is_some() {}
                    names.peek() == Some(n)
                }
            })
            .enumerate()
            .map(move |(i, (n, r))| {
                let v = match version {
                    SetVersion::Response(v) => *v,
                    SetVersion::Shown(shown) => shown.get(i).copied().unwrap_or(r.version),
                    SetVersion::PerResource => r.version,
                };
                (n.as_str(), v, r)
            })
    }

    /// What Envoy records once it has taken `self` after `before`: a SotW response names
    /// every resource, but Envoy leaves one whose content did not change as it was, with the
    /// version it was taken under (its config dump shows that older version).
    pub(crate) fn taken_after(self, before: Option<&ResourceSet>) -> ResourceSet {
        let (SetVersion::Response(v), Some(before)) = (&self.version, before) else {
            return self;
        };
        let v = *v;
        let mut kept = before.resources().peekable();
        let mut shown = Vec::new();
        for (name, _, r) in self.resources() {
            while kept.next_if(|(n, _, _)| *n < name).is_some() {}
            shown.push(match kept.peek() {
                Some((n, was, old)) if *n == name && old.version == r.version => *was,
                _ => v,
            });
        }
        if shown.iter().all(|s| *s == v) {
            return self;
        }
        ResourceSet {
            version: SetVersion::Shown(shown.into()),
            ..self
        }
    }
}

/// One connected stream.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// Envoy's `node.id`.
    pub id: String,
    /// Envoy's `node.cluster`: the proxy it asks for.
    pub proxy: String,
    /// Whether the catalog names that proxy.
    pub known_proxy: bool,
    /// Whether the catalog dropped that proxy while this Envoy was connected: it keeps being
    /// served the last snapshot the proxy had.
    pub orphaned: bool,
    /// `ads`, `cds`, `eds`, `lds` or `rds`.
    pub service: &'static str,
    /// `sotw` or `delta`.
    pub variant: &'static str,
    /// Seconds since the Unix epoch.
    pub connected_at: u64,
    /// Per resource type (cds, eds, lds, rds, sds) that the stream subscribed to.
    pub types: TypeStatuses,
    /// Envoy's whole `node` (for CSDS); not serialized.
    #[serde(skip)]
    pub(crate) node: Option<Arc<envoy_types::pb::envoy::config::core::v3::Node>>,
}

/// A stream's [`TypeStatus`] per resource type, in name order; shown as a JSON object keyed by
/// type. A sorted list rather than a map: a stream has at most five entries, and a `BTreeMap`
/// node sized for eleven cost each stream 3.4 KiB (10,000 Envoys: 34 MiB).
#[derive(Debug, Clone, Default)]
pub struct TypeStatuses(Vec<(&'static str, TypeStatus)>);

impl TypeStatuses {
    /// The status of type `short` (`cds`, `eds`, ...), if the stream subscribed to it.
    pub fn get(&self, short: &str) -> Option<&TypeStatus> {
        self.0
            .binary_search_by(|(t, _)| (*t).cmp(short))
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// Each type with its status, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &TypeStatus)> {
        self.0.iter().map(|(t, s)| (*t, s))
    }

    /// The status of type `short`, added as [`SyncState::Requested`] when missing.
    fn entry(&mut self, short: &'static str) -> &mut TypeStatus {
        let i = match self.0.binary_search_by(|(t, _)| (*t).cmp(short)) {
            Ok(i) => i,
            Err(i) => {
                self.0.insert(i, (short, TypeStatus::default()));
                i
            }
        };
        &mut self.0[i].1
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut TypeStatus> {
        self.0.iter_mut().map(|(_, s)| s)
    }
}

impl std::ops::Index<&str> for TypeStatuses {
    type Output = TypeStatus;

    fn index(&self, short: &str) -> &TypeStatus {
        self.get(short)
            .unwrap_or_else(|| panic!("the stream has no {short} status"))
    }
}

impl Serialize for TypeStatuses {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

/// Connected streams, keyed by a stream id.
#[derive(Debug, Clone, Default)]
pub struct Nodes {
    inner: Arc<Mutex<BTreeMap<u64, NodeStatus>>>,
    next: Arc<AtomicU64>,
}

impl Nodes {
    /// Registers a stream; it stays listed until the returned guard is dropped.
    pub(crate) fn register(
        &self,
        node: &envoy_types::pb::envoy::config::core::v3::Node,
        proxy: &ProxyName,
        service: &'static str,
        variant: &'static str,
    ) -> NodeGuard {
        let node = Arc::new(as_kept(node));
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let connected_at = common::duration::since_epoch().as_secs();
        self.lock().insert(
            key,
            NodeStatus {
                id: node.id.clone(),
                proxy: proxy.0.clone(),
                known_proxy: false,
                orphaned: false,
                service,
                variant,
                connected_at,
                types: TypeStatuses::default(),
                node: Some(node),
            },
        );
        NodeGuard {
            nodes: self.clone(),
            key,
        }
    }

    /// A copy of every connected stream's status.
    pub fn list(&self) -> Vec<NodeStatus> {
        let now = common::duration::since_epoch().as_secs();
        let mut list: Vec<NodeStatus> = self.lock().values().cloned().collect();
        for t in list.iter_mut().flat_map(|n| n.types.values_mut()) {
            t.stale_for_s =
                (t.state == SyncState::Stale).then(|| now.saturating_sub(t.sent_at.unwrap_or(now)));
        }
        list
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, NodeStatus>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The part of an Envoy's `node` kept while it is connected: all but the list of extensions it
/// was built with (hundreds of entries, the same for every Envoy of a build, and most of the
/// message: kept per stream it would grow the server by tens of KiB per Envoy).
fn as_kept(
    node: &envoy_types::pb::envoy::config::core::v3::Node,
) -> envoy_types::pb::envoy::config::core::v3::Node {
    envoy_types::pb::envoy::config::core::v3::Node {
        extensions: Vec::new(),
        ..node.clone()
    }
}

/// Keeps a stream listed; updates its status.
#[derive(Debug)]
pub(crate) struct NodeGuard {
    nodes: Nodes,
    key: u64,
}

impl NodeGuard {
    /// Changes one type's status.
    pub(crate) fn update(&self, t: ResourceType, f: impl FnOnce(&mut TypeStatus)) {
        if let Some(n) = self.nodes.lock().get_mut(&self.key) {
            f(n.types.entry(t.short()));
        }
    }

    /// Records how the catalog (now) stands to the stream's proxy.
    pub(crate) fn set_role(&self, role: Role) {
        if let Some(n) = self.nodes.lock().get_mut(&self.key) {
            n.known_proxy = role == Role::Known;
            n.orphaned = role == Role::Orphaned;
        }
    }

    /// Records the proxy the stream is served (resolved once the first catalog came).
    pub(crate) fn set_proxy(&self, proxy: &ProxyName) {
        if let Some(n) = self.nodes.lock().get_mut(&self.key) {
            n.proxy = proxy.0.clone();
        }
    }

    /// The stream's `node.id`.
    pub(crate) fn id(&self) -> String {
        self.nodes
            .lock()
            .get(&self.key)
            .map(|n| n.id.clone())
            .unwrap_or_default()
    }
}

impl Drop for NodeGuard {
    fn drop(&mut self) {
        self.nodes.lock().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::{Extension, Node};
    use prost::Message;

    use super::*;

    #[test]
    fn a_connected_envoy_is_kept_without_its_extension_list() {
        let node = Node {
            id: "web-1".into(),
            cluster: "web".into(),
            extensions: (0..300)
                .map(|i| Extension {
                    name: format!("envoy.filters.http.example_{i}"),
                    category: "envoy.filters.http".into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let nodes = Nodes::default();
        let _guard = nodes.register(&node, &ProxyName("web".into()), "ads", "sotw");
        let kept = nodes.list()[0].node.clone().unwrap();
        assert_eq!((kept.id.as_str(), kept.cluster.as_str()), ("web-1", "web"));
        assert!(kept.extensions.is_empty());
        assert!(
            kept.encoded_len() * 50 < node.encoded_len(),
            "most of it dropped"
        );
    }

    #[test]
    fn a_stream_s_types_are_listed_as_an_object_that_status_reads() {
        let nodes = Nodes::default();
        let node = Node {
            id: "web-1".into(),
            cluster: "web".into(),
            ..Default::default()
        };
        let guard = nodes.register(&node, &ProxyName("web".into()), "ads", "sotw");
        guard.update(ResourceType::Route, |s| s.state = SyncState::Stale);
        guard.update(ResourceType::Cluster, |s| s.sent = Some("v1".into()));
        guard.update(ResourceType::Cluster, |s| s.state = SyncState::Synced);
        let listed = &nodes.list()[0];
        let order: Vec<&str> = listed.types.iter().map(|(t, _)| t).collect();
        assert_eq!(order, ["cds", "rds"]);
        assert_eq!(listed.types["cds"].sent.as_deref(), Some("v1"));
        assert!(listed.types.get("lds").is_none());
        let json = serde_json::to_value(listed).unwrap();
        let types = json["types"].as_object().expect("an object keyed by type");
        assert_eq!(types.keys().collect::<Vec<_>>(), ["cds", "rds"]);
        let row: crate::status::NodeRow = serde_json::from_value(json).unwrap();
        assert_eq!(row.types["cds"].state, SyncState::Synced);
        assert_eq!(row.types["rds"].state, SyncState::Stale);
    }
}
