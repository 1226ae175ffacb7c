//! The snapshot cache: per proxy, the current resources with their content-hash versions.
//!
//! Versions are hashes of the encoded resources, so two replicas, or one replica before and after
//! a restart, give the same version for the same config. A new set of snapshots is published on a
//! watch channel; each stream compares versions and sends only what changed.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use tokio::sync::watch;
use xxhash_rust::xxh3::Xxh3;

use crate::catalog::ProxyName;
use crate::translate::{ProxyResources, ResourceType};

/// A content hash, as sent in `version_info` and in per-resource versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u64);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl Version {
    /// The version of one packed resource.
    pub fn of(any: &Any) -> Version {
        let mut h = Xxh3::new();
        h.update(any.type_url.as_bytes());
        h.update(&[0]);
        h.update(&any.value);
        Version(h.digest())
    }

    /// The version of a set of named resources (a SotW response): a hash of names and versions.
    pub fn of_set<'a>(items: impl IntoIterator<Item = (&'a str, Version)>) -> Version {
        let mut h = Xxh3::new();
        for (name, v) in items {
            h.update(name.as_bytes());
            h.update(&[0]);
            h.update(&v.0.to_le_bytes());
        }
        Version(h.digest())
    }
}

/// One resource with its version.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionedResource {
    /// Hash of `body`.
    pub version: Version,
    /// The packed resource.
    pub body: Any,
}

/// The resources of one type for one proxy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TypeSnapshot {
    /// Resource name → resource.
    pub resources: BTreeMap<String, VersionedResource>,
    /// Version of the whole set (what a wildcard subscriber receives).
    pub version: Version,
}

impl Default for Version {
    fn default() -> Self {
        Version::of_set([])
    }
}

impl TypeSnapshot {
    /// A set of resources with its version.
    pub fn new(resources: BTreeMap<String, VersionedResource>) -> TypeSnapshot {
        let version = Version::of_set(resources.iter().map(|(n, r)| (n.as_str(), r.version)));
        TypeSnapshot { resources, version }
    }

    /// The SotW version for a subscription: all resources (`None`) or the named ones.
    pub fn version_for(&self, names: Option<&std::collections::BTreeSet<String>>) -> Version {
        match names {
            None => self.version,
            Some(names) => Version::of_set(
                names
                    .iter()
                    .filter_map(|n| self.resources.get(n).map(|r| (n.as_str(), r.version))),
            ),
        }
    }
}

/// Everything one proxy receives.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Indexed by [`ResourceType::index`].
    pub types: [TypeSnapshot; 4],
}

impl Snapshot {
    /// Computes the versions of translated resources.
    pub fn new(resources: ProxyResources) -> Snapshot {
        let mut snap = Snapshot::default();
        for (i, by_name) in resources.by_type.into_iter().enumerate() {
            let resources: BTreeMap<String, VersionedResource> = by_name
                .into_iter()
                .map(|(name, body)| {
                    let version = Version::of(&body);
                    (name, VersionedResource { version, body })
                })
                .collect();
            snap.types[i] = TypeSnapshot::new(resources);
        }
        snap
    }

    /// The version of each type, in [`ResourceType::index`] order.
    pub fn versions(&self) -> [Version; 4] {
        self.types.each_ref().map(|t| t.version)
    }

    /// The resources of one type.
    pub fn of(&self, t: ResourceType) -> &TypeSnapshot {
        &self.types[t.index()]
    }
}

/// The snapshots of all proxies at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshots {
    /// Proxies the catalog names.
    pub proxies: BTreeMap<ProxyName, Arc<Snapshot>>,
    /// Whether a catalog has been loaded at all (streams wait for it before answering).
    pub loaded: bool,
    /// Served to proxies the catalog does not name.
    pub empty: Arc<Snapshot>,
}

impl Snapshots {
    /// The snapshot for a proxy, and whether the catalog knows it.
    pub fn get(&self, proxy: &ProxyName) -> (Arc<Snapshot>, bool) {
        match self.proxies.get(proxy) {
            Some(s) => (s.clone(), true),
            None => (self.empty.clone(), false),
        }
    }
}

/// Publishes snapshots to every stream.
#[derive(Debug, Clone)]
pub struct Cache {
    tx: watch::Sender<Arc<Snapshots>>,
}

impl Default for Cache {
    fn default() -> Self {
        Self::new()
    }
}

impl Cache {
    /// A cache with no catalog loaded yet.
    pub fn new() -> Self {
        Self {
            tx: watch::channel(Arc::new(Snapshots::default())).0,
        }
    }

    /// Receives every new set of snapshots.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshots>> {
        self.tx.subscribe()
    }

    /// The current snapshots.
    pub fn current(&self) -> Arc<Snapshots> {
        self.tx.borrow().clone()
    }

    /// Replaces all snapshots. Proxies whose content did not change keep their `Arc`, so streams
    /// of unchanged proxies see no difference; nothing is published when nothing changed.
    pub fn publish(&self, new: BTreeMap<ProxyName, Snapshot>) -> usize {
        let old = self.current();
        let mut changed = 0;
        let proxies: BTreeMap<ProxyName, Arc<Snapshot>> = new
            .into_iter()
            .map(|(name, snap)| match old.proxies.get(&name) {
                // Versions are content hashes: equal versions, equal content.
                Some(prev) if prev.versions() == snap.versions() => (name, prev.clone()),
                _ => {
                    changed += 1;
                    (name, Arc::new(snap))
                }
            })
            .collect();
        let removed = old
            .proxies
            .keys()
            .filter(|k| !proxies.contains_key(*k))
            .count();
        if changed == 0 && removed == 0 && old.loaded {
            return 0;
        }
        self.tx.send_replace(Arc::new(Snapshots {
            proxies,
            loaded: true,
            empty: old.empty.clone(),
        }));
        changed + removed
    }
}
