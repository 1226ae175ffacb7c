//! The registry of connected proxies, for `/debug/nodes`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::cache::Role;
use crate::catalog::ProxyName;
use crate::translate::ResourceType;

/// What one stream has sent and heard for one resource type.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeStatus {
    /// The version last sent.
    pub sent: Option<String>,
    /// The version last acknowledged.
    pub acked: Option<String>,
    /// The version last rejected, with Envoy's error text.
    pub nacked: Option<String>,
    /// Envoy's error text for the last rejection.
    pub last_nack: Option<String>,
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
    /// Per resource type (cds, eds, lds, rds) that the stream subscribed to.
    pub types: BTreeMap<&'static str, TypeStatus>,
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
        id: String,
        proxy: &ProxyName,
        service: &'static str,
        variant: &'static str,
    ) -> NodeGuard {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let connected_at = common::duration::since_epoch().as_secs();
        self.lock().insert(
            key,
            NodeStatus {
                id,
                proxy: proxy.0.clone(),
                known_proxy: false,
                orphaned: false,
                service,
                variant,
                connected_at,
                types: BTreeMap::new(),
            },
        );
        NodeGuard {
            nodes: self.clone(),
            key,
        }
    }

    /// A copy of every connected stream's status.
    pub fn list(&self) -> Vec<NodeStatus> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, NodeStatus>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
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
            f(n.types.entry(t.short()).or_default());
        }
    }

    /// Records how the catalog (now) stands to the stream's proxy.
    pub(crate) fn set_role(&self, role: Role) {
        if let Some(n) = self.nodes.lock().get_mut(&self.key) {
            n.known_proxy = role == Role::Known;
            n.orphaned = role == Role::Orphaned;
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
