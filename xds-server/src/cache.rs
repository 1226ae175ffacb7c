//! The snapshot cache: per proxy, the current resources with their content-hash versions.
//!
//! Versions are hashes of the encoded resources, so two replicas, or one replica before and after
//! a restart, give the same version for the same config. A new set of snapshots is published on a
//! watch channel; each stream compares versions and sends only what changed.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use envoy_types::pb::envoy::service::discovery::v3::Resource;
use envoy_types::pb::google::protobuf::Any;
use tokio::sync::watch;
use tonic::codegen::Bytes;
use xxhash_rust::xxh3::Xxh3;

use crate::catalog::{ProxyName, Zone};
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

/// One resource with its version. Clones share the body and its encodings: a resource that is
/// the same in many snapshots (zones, proxies, see [`Interner`]) is held and encoded once.
#[derive(Debug, Clone)]
pub struct VersionedResource {
    /// Hash of the body.
    pub version: Version,
    inner: Arc<Body>,
}

/// A resource's packed body and its encodings (see [`VersionedResource`]).
#[derive(Debug)]
struct Body {
    any: Any,
    /// The resource as a delta response carries it, encoded when first sent and shared by
    /// every stream that sends it (see [`VersionedResource::delta_item`]).
    delta: OnceLock<Bytes>,
    /// The same for a SotW response (see [`VersionedResource::sotw_item`]).
    sotw: OnceLock<Bytes>,
}

impl PartialEq for VersionedResource {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version && self.body() == other.body()
    }
}

impl VersionedResource {
    /// `body` with its version.
    pub fn new(body: Any) -> VersionedResource {
        VersionedResource {
            version: Version::of(&body),
            inner: Arc::new(Body {
                any: body,
                delta: OnceLock::new(),
                sotw: OnceLock::new(),
            }),
        }
    }

    /// The packed resource.
    pub fn body(&self) -> &Any {
        &self.inner.any
    }

    /// Whether `other` is this very resource, held once (not an equal copy).
    #[cfg(test)]
    pub fn shares_body_with(&self, other: &VersionedResource) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The resource as one entry of a SotW response's `resources` (see
    /// [`VersionedResource::delta_item`]), for a response that carries only some of a
    /// subscription's resources.
    pub fn sotw_item(&self) -> Bytes {
        self.inner
            .sotw
            .get_or_init(|| {
                let mut buf = Vec::with_capacity(resource_item_len(self.body()));
                prost::encoding::message::encode(RESOURCES_FIELD, self.body(), &mut buf);
                Bytes::from(buf)
            })
            .clone()
    }

    /// The resource as one entry of a delta response's `resources` (its field 2, with the
    /// field's key and length): encoded once, then shared. A body is held under one name
    /// only (snapshots key resources by name, and [`Interner`] by name too).
    pub fn delta_item(&self, name: &str) -> Bytes {
        self.inner
            .delta
            .get_or_init(|| {
                let resource = Resource {
                    name: name.to_string(),
                    version: self.version.to_string(),
                    resource: Some(self.body().clone()),
                    ..Default::default()
                };
                let mut buf = Vec::with_capacity(resource_item_len(&resource));
                prost::encoding::message::encode(RESOURCES_FIELD, &resource, &mut buf);
                Bytes::from(buf)
            })
            .clone()
    }
}

/// The field number of `resources` in both `DiscoveryResponse` and `DeltaDiscoveryResponse`.
pub const RESOURCES_FIELD: u32 = 2;

/// The encoded length of `msg` as one entry of a response's `resources`.
fn resource_item_len(msg: &impl prost::Message) -> usize {
    prost::encoding::message::encoded_len(RESOURCES_FIELD, msg)
}

/// What is worked out from a snapshot's content and kept with it, at most `N` entries: not
/// part of what the snapshot is, so equal whatever it holds, and a clone starts empty.
struct Derived<T, const N: usize>(Mutex<Vec<T>>);

impl<T, const N: usize> Default for Derived<T, N> {
    fn default() -> Self {
        Derived(Mutex::new(Vec::new()))
    }
}

impl<T, const N: usize> Clone for Derived<T, N> {
    fn clone(&self) -> Self {
        Derived::default()
    }
}

impl<T, const N: usize> PartialEq for Derived<T, N> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T, const N: usize> fmt::Debug for Derived<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Derived")
    }
}

impl<T: Clone, const N: usize> Derived<T, N> {
    /// The entry `find` picks, else `make`'s, kept in place of the oldest when `N` are (a
    /// client asking for ever new ones must not grow the server, nor keep out the newest).
    fn get_or_add(&self, find: impl Fn(&T) -> bool, make: impl FnOnce() -> T) -> T {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = kept.iter().find(|t| find(t)) {
            return found.clone();
        }
        let made = make();
        if kept.len() == N {
            kept.remove(0);
        }
        kept.push(made.clone());
        made
    }
}

/// One subscription's SotW response: the version and the encoded resources, computed once
/// and shared by every stream of that subscription.
#[derive(Clone)]
struct SotwBody {
    /// `None`: the wildcard.
    names: Option<Arc<BTreeSet<String>>>,
    version: Version,
    resources: Arc<OnceLock<Bytes>>,
}

/// The names that differ between an older type snapshot (by its version) and this one.
#[derive(Clone)]
struct Changes {
    since: Version,
    names: Arc<[String]>,
}

/// The resources of one type for one proxy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TypeSnapshot {
    /// Resource name → resource.
    pub resources: BTreeMap<String, VersionedResource>,
    /// Version of the whole set.
    pub version: Version,
    /// Version of what a wildcard subscriber receives (see [`TypeSnapshot::is_sent`]).
    pub wildcard_version: Version,
    /// The resources sent only to a subscriber that names them (see
    /// [`crate::translate::in_wildcard`]); usually none.
    pub named_only: BTreeSet<String>,
    /// SotW responses built from it so far, one per subscription.
    sotw: Derived<SotwBody, 32>,
    /// Names changed since older snapshots (see [`TypeSnapshot::changed_names`]).
    changes: Derived<Changes, 8>,
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
        let named_only: BTreeSet<String> = resources
            .iter()
            .filter(|(n, r)| !crate::translate::in_wildcard(n, r.body()))
            .map(|(n, _)| n.clone())
            .collect();
        let wildcard_version = match named_only.is_empty() {
            true => version,
            false => Version::of_set(
                resources
                    .iter()
                    .filter(|(n, _)| !named_only.contains(*n))
                    .map(|(n, r)| (n.as_str(), r.version)),
            ),
        };
        TypeSnapshot {
            resources,
            version,
            wildcard_version,
            named_only,
            sotw: Derived::default(),
            changes: Derived::default(),
        }
    }

    /// Whether resource `name` goes to a subscription to `names` (`None`: the wildcard, which
    /// leaves out the named-only resources).
    pub fn is_sent(&self, name: &str, names: Option<&BTreeSet<String>>) -> bool {
        match names {
            None => !self.named_only.contains(name),
            Some(names) => names.contains(name),
        }
    }

    /// The SotW version for a subscription: the wildcard's (`None`) or the named resources'.
    pub fn version_for(&self, names: Option<&BTreeSet<String>>) -> Version {
        match names {
            None => self.wildcard_version,
            Some(names) => Version::of_set(
                names
                    .iter()
                    .filter_map(|n| self.resources.get(n).map(|r| (n.as_str(), r.version))),
            ),
        }
    }

    /// The SotW response to a subscription (`None`: the wildcard): its version, and its
    /// resources encoded as the response's `resources` field. Both are computed once per
    /// subscription and shared by every stream that makes it; `names` is best one of the
    /// server's shared sets, compared by address before content.
    pub fn sotw(&self, names: Option<&Arc<BTreeSet<String>>>) -> (Version, Bytes) {
        let (version, cell) = self.sotw_body(names);
        // Encoded outside the lock; a stream asking meanwhile waits for this one's work.
        let bytes = cell
            .get_or_init(|| {
                let items: Vec<&VersionedResource> = self
                    .sotw_items(names.map(|n| &**n))
                    .map(|(_, r)| r)
                    .collect();
                let len = items.iter().map(|r| resource_item_len(r.body())).sum();
                let mut buf = Vec::with_capacity(len);
                for r in items {
                    prost::encoding::message::encode(RESOURCES_FIELD, r.body(), &mut buf);
                }
                Bytes::from(buf)
            })
            .clone();
        (version, bytes)
    }

    /// The version of the SotW response to a subscription, as [`TypeSnapshot::sotw`] gives it.
    pub fn sotw_version(&self, names: Option<&Arc<BTreeSet<String>>>) -> Version {
        self.sotw_body(names).0
    }

    fn sotw_body(&self, names: Option<&Arc<BTreeSet<String>>>) -> (Version, Arc<OnceLock<Bytes>>) {
        let same = |b: &SotwBody| match (&b.names, names) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
            _ => false,
        };
        let body = self.sotw.get_or_add(same, || SotwBody {
            names: names.cloned(),
            version: self.version_for(names.map(|n| &**n)),
            resources: Arc::new(OnceLock::new()),
        });
        (body.version, body.resources)
    }

    /// The names `old` (an earlier snapshot of the same type) and this one hold at different
    /// versions, or that only one of them holds, in name order. Worked out once per pair and
    /// shared: every stream of a proxy asks the same after a publish.
    pub fn changed_names(&self, old: &TypeSnapshot) -> Arc<[String]> {
        if old.version == self.version {
            return Arc::from([]);
        }
        self.changes
            .get_or_add(
                |c| c.since == old.version,
                || Changes {
                    since: old.version,
                    names: differing(&old.resources, &self.resources).into(),
                },
            )
            .names
    }

    /// The resources a SotW subscription to `names` gets, with their names, in name order.
    pub fn sotw_items<'a>(
        &'a self,
        names: Option<&'a BTreeSet<String>>,
    ) -> Box<dyn Iterator<Item = (&'a str, &'a VersionedResource)> + 'a> {
        match names {
            None => Box::new(
                self.resources
                    .iter()
                    .filter(|(n, _)| self.is_sent(n, None))
                    .map(|(n, r)| (n.as_str(), r)),
            ),
            Some(names) => Box::new(
                names
                    .iter()
                    .filter_map(|n| self.resources.get_key_value(n))
                    .map(|(n, r)| (n.as_str(), r)),
            ),
        }
    }
}

/// The names `a` and `b` hold at different versions, or that only one of them holds, in
/// name order.
fn differing(
    a: &BTreeMap<String, VersionedResource>,
    b: &BTreeMap<String, VersionedResource>,
) -> Vec<String> {
    let differs =
        |name: &String, r: &VersionedResource, other: &BTreeMap<String, VersionedResource>| {
            other.get(name).map(|o| o.version) != Some(r.version)
        };
    let names: BTreeSet<&String> = (a.iter().filter(|(n, r)| differs(n, r, b)))
        .chain(b.iter().filter(|(n, r)| differs(n, r, a)))
        .map(|(name, _)| name)
        .collect();
    names.into_iter().cloned().collect()
}

/// Everything one proxy receives.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Indexed by [`ResourceType::index`].
    pub types: [TypeSnapshot; crate::translate::TYPES],
    /// What an Envoy in one of these zones (its `node.locality.zone`) gets instead: the same but
    /// for the endpoints of zone-aware upstreams, which prefer that zone. Envoys of one proxy
    /// run in several zones; an Envoy in any other zone, or in none, gets this snapshot.
    pub zones: BTreeMap<Zone, Arc<Snapshot>>,
}

/// The resources of the snapshots of one build, by type, name and version: a resource that
/// several proxies (or zones) have alike is held, and encoded, once (see [`Snapshot::new_in`]).
#[derive(Default)]
pub struct Interner(HashMap<(ResourceType, String, Version), VersionedResource>);

impl Interner {
    /// `body` as resource `name` of type `t`: the one held already when equal.
    fn intern(&mut self, t: ResourceType, name: &str, body: Any) -> VersionedResource {
        let r = VersionedResource::new(body);
        // The version is a 64-bit hash: equal bodies only, never another proxy's on a collision.
        match self.0.entry((t, name.to_string(), r.version)) {
            Entry::Occupied(held) if held.get().body() == r.body() => held.get().clone(),
            Entry::Occupied(_) => r,
            Entry::Vacant(slot) => slot.insert(r).clone(),
        }
    }
}

impl Snapshot {
    /// Computes the versions of translated resources.
    pub fn new(resources: ProxyResources) -> Snapshot {
        Snapshot::new_in(resources, &mut Interner::default())
    }

    /// [`Snapshot::new`], sharing with the other snapshots of `interner` what they hold alike.
    pub fn new_in(resources: ProxyResources, interner: &mut Interner) -> Snapshot {
        let mut snap = Snapshot::default();
        for (t, by_name) in ResourceType::ALL.into_iter().zip(resources.by_type) {
            snap.replace_in(t, by_name, interner);
        }
        snap
    }

    /// The resources of type `t` replaced by `resources`, with their versions; in the zones'
    /// snapshots too, unless `t` is the endpoints (which differ there).
    pub fn replace(&mut self, t: ResourceType, resources: BTreeMap<String, Any>) {
        self.replace_in(t, resources, &mut Interner::default());
    }

    /// [`Snapshot::replace`], sharing what `interner` holds alike.
    pub fn replace_in(
        &mut self,
        t: ResourceType,
        resources: BTreeMap<String, Any>,
        interner: &mut Interner,
    ) {
        let resources: BTreeMap<String, VersionedResource> = resources
            .into_iter()
            .map(|(name, body)| {
                let r = interner.intern(t, &name, body);
                (name, r)
            })
            .collect();
        let typed = TypeSnapshot::new(resources);
        if t != ResourceType::Endpoint {
            for zoned in self.zones.values_mut() {
                Arc::make_mut(zoned).types[t.index()] = typed.clone();
            }
        }
        self.types[t.index()] = typed;
    }

    /// Adds what an Envoy in `zone` gets: this snapshot with `endpoints` as its endpoints.
    pub fn add_zone(&mut self, zone: Zone, endpoints: BTreeMap<String, Any>) {
        self.add_zone_in(zone, endpoints, &mut Interner::default());
    }

    /// [`Snapshot::add_zone`], sharing what `interner` holds alike.
    pub fn add_zone_in(
        &mut self,
        zone: Zone,
        endpoints: BTreeMap<String, Any>,
        interner: &mut Interner,
    ) {
        let mut zoned = Snapshot {
            types: self.types.clone(),
            zones: BTreeMap::new(),
        };
        zoned.replace_in(ResourceType::Endpoint, endpoints, interner);
        self.zones.insert(zone, Arc::new(zoned));
    }

    /// The snapshot an Envoy in `zone` gets.
    pub fn in_zone(self: &Arc<Self>, zone: Option<&str>) -> Arc<Snapshot> {
        zone.and_then(|z| self.zones.get(z)).unwrap_or(self).clone()
    }

    /// Whether `other` has the same content, for every zone: versions are content hashes.
    pub fn same_as(&self, other: &Snapshot) -> bool {
        self.versions() == other.versions()
            && self.zones.len() == other.zones.len()
            && self
                .zones
                .iter()
                .zip(&other.zones)
                .all(|((za, a), (zb, b))| za == zb && a.same_as(b))
    }

    /// The version of each type, in [`ResourceType::index`] order.
    pub fn versions(&self) -> [Version; crate::translate::TYPES] {
        self.types.each_ref().map(|t| t.version)
    }

    /// The resources of one type.
    pub fn of(&self, t: ResourceType) -> &TypeSnapshot {
        &self.types[t.index()]
    }
}

/// How the catalog stands to a proxy role a stream asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The catalog names it.
    Known,
    /// A valid catalog dropped it while Envoys of the role were connected: they keep the last
    /// snapshot it had, until the last of them disconnects.
    Orphaned,
    /// Never served (or forgotten): an empty config.
    Unknown,
}

/// The snapshots of all proxies at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshots {
    /// Proxies the catalog names.
    pub proxies: BTreeMap<ProxyName, Arc<Snapshot>>,
    /// Roles the catalog dropped while Envoys of theirs were connected, with their last snapshot.
    pub orphans: BTreeMap<ProxyName, Arc<Snapshot>>,
    /// Whether a catalog has been loaded at all (streams wait for it before answering).
    pub loaded: bool,
    /// Served to proxies the catalog does not name.
    pub empty: Arc<Snapshot>,
    /// Other `node.cluster` values that select a proxy (`proxies.NAME.aliases`): alias → proxy.
    pub aliases: BTreeMap<ProxyName, ProxyName>,
}

impl Snapshots {
    /// The proxy a `node.cluster` selects: itself, or the proxy it is an alias of.
    pub fn resolve<'a>(&'a self, proxy: &'a ProxyName) -> &'a ProxyName {
        self.aliases.get(proxy).unwrap_or(proxy)
    }

    /// The snapshot for an Envoy of `proxy` (or an alias of one) in `zone` (its
    /// `node.locality.zone`), and how the catalog stands to the proxy.
    pub fn get(&self, proxy: &ProxyName, zone: Option<&str>) -> (Arc<Snapshot>, Role) {
        let proxy = self.resolve(proxy);
        if let Some(s) = self.proxies.get(proxy) {
            return (s.in_zone(zone), Role::Known);
        }
        match self.orphans.get(proxy) {
            Some(s) => (s.in_zone(zone), Role::Orphaned),
            None => (self.empty.clone(), Role::Unknown),
        }
    }
}

/// Publishes snapshots, and wakes the streams of the proxies a publish changes.
#[derive(Debug, Clone)]
pub struct Cache {
    tx: watch::Sender<Arc<Snapshots>>,
    /// Connected streams per proxy role (see [`Cache::attach`]).
    attached: Arc<Mutex<HashMap<ProxyName, usize>>>,
    /// Per `node.cluster` streams asked with (see [`Cache::watch`]): woken by a publish that
    /// changes what it selects.
    wakers: Arc<Mutex<HashMap<ProxyName, watch::Sender<()>>>>,
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
            attached: Arc::default(),
            wakers: Arc::default(),
        }
    }

    /// Changes when a publish may change what an Envoy whose `node.cluster` is `asked` (a
    /// proxy or an alias) gets: its proxy's snapshot, the proxy its alias selects, or the
    /// first catalog. Publishes that change only other proxies leave it alone, so thousands
    /// of streams of other proxies sleep through them.
    pub fn watch(&self, asked: &ProxyName) -> watch::Receiver<()> {
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        wakers
            .entry(asked.clone())
            .or_insert_with(|| watch::channel(()).0)
            .subscribe()
    }

    /// Wakes the streams of `proxies` and of the aliases that select them in `aliases` (all
    /// streams, for `None`); forgets the names no stream watches any more.
    fn wake<'a>(
        &self,
        proxies: Option<&BTreeSet<&ProxyName>>,
        aliases: impl Iterator<Item = (&'a ProxyName, &'a ProxyName)>,
    ) {
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        wakers.retain(|_, w| w.receiver_count() > 0);
        let Some(proxies) = proxies else {
            for w in wakers.values() {
                w.send_replace(());
            }
            return;
        };
        let by_alias = aliases
            .filter(|(_, p)| proxies.contains(p))
            .map(|(alias, _)| alias);
        for name in proxies.iter().copied().chain(by_alias) {
            if let Some(w) = wakers.get(name) {
                w.send_replace(());
            }
        }
    }

    /// The current snapshots.
    pub fn current(&self) -> Arc<Snapshots> {
        self.tx.borrow().clone()
    }

    /// Counts a stream of `proxy` until the returned guard drops: a role that leaves the catalog
    /// keeps its last snapshot while streams of it are attached.
    /// The guard also wakes the stream (see [`Attached::wake`]).
    pub fn attach(&self, proxy: &ProxyName) -> Attached {
        *self.lock_attached().entry(proxy.clone()).or_default() += 1;
        Attached {
            cache: self.clone(),
            proxy: proxy.clone(),
            wake: self.watch(proxy),
        }
    }

    fn lock_attached(&self) -> std::sync::MutexGuard<'_, HashMap<ProxyName, usize>> {
        self.attached.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces all snapshots. Proxies whose content did not change keep their `Arc`, so streams
    /// of unchanged proxies see no difference; nothing is published when nothing changed. A
    /// proxy the new set drops while streams of it are attached becomes an orphan, served its
    /// last snapshot (a deleted or renamed fragment must not wipe the Envoys still running it).
    /// `aliases` maps other `node.cluster` values to the proxy they select. Only the streams
    /// of proxies whose snapshot changed (or went) are woken (see [`Cache::watch`]), and
    /// theirs by alias; all of them on the first catalog or when aliases change.
    pub fn publish(
        &self,
        new: BTreeMap<ProxyName, Snapshot>,
        aliases: BTreeMap<ProxyName, ProxyName>,
    ) -> usize {
        let old = self.current();
        let mut changed = BTreeSet::new();
        let proxies: BTreeMap<ProxyName, Arc<Snapshot>> = new
            .into_iter()
            .map(|(name, snap)| match old.proxies.get(&name) {
                // Versions are content hashes: equal versions, equal content.
                Some(prev) if prev.same_as(&snap) => (name, prev.clone()),
                _ => {
                    changed.insert(name.clone());
                    (name, Arc::new(snap))
                }
            })
            .collect();
        let removed: BTreeSet<&ProxyName> = old
            .proxies
            .keys()
            .filter(|k| !proxies.contains_key(*k))
            .collect();
        // Held until the new set is out, so a stream leaving meanwhile sees it (see
        // `forget_orphan`).
        let attached = self.lock_attached();
        let mut aliases = aliases;
        let orphans = {
            // Envoys attach by the `node.cluster` they sent, which may be an alias.
            let connected = |name: &ProxyName| {
                let by = |n: &ProxyName| attached.get(n).is_some_and(|n| *n > 0);
                by(name) || old.aliases.iter().any(|(a, p)| p == name && by(a))
            };
            let mut orphans: BTreeMap<ProxyName, Arc<Snapshot>> = old
                .orphans
                .iter()
                .filter(|(name, _)| !proxies.contains_key(*name) && connected(name))
                .map(|(n, s)| (n.clone(), s.clone()))
                .collect();
            for (name, snap) in &old.proxies {
                if !proxies.contains_key(name) && connected(name) {
                    tracing::warn!(
                        proxy = %name,
                        streams = attached.get(name).copied().unwrap_or_default(),
                        "proxy role is gone from the catalog; its connected Envoys keep their last config until they disconnect"
                    );
                    orphans.insert(name.clone(), snap.clone());
                }
            }
            // An orphan's aliases keep selecting it, unless the catalog gives them to another.
            for (alias, proxy) in &old.aliases {
                if orphans.contains_key(proxy) && !proxies.contains_key(alias) {
                    aliases
                        .entry(alias.clone())
                        .or_insert_with(|| proxy.clone());
                }
            }
            orphans
        };
        let orphans_changed = orphans.keys().ne(old.orphans.keys());
        let aliases_changed = aliases != old.aliases;
        let count = changed.len() + removed.len();
        if count == 0 && !orphans_changed && !aliases_changed && old.loaded {
            return 0;
        }
        let first = !old.loaded;
        let new = Arc::new(Snapshots {
            proxies,
            orphans,
            loaded: true,
            empty: old.empty.clone(),
            aliases,
        });
        self.tx.send_replace(new.clone());
        drop(attached);
        // A proxy that became an orphan is among the removed; one that stopped being one had
        // no stream left. Aliases moving may change what any stream selects.
        let touched: BTreeSet<&ProxyName> = changed.iter().chain(removed).collect();
        let everyone = first || aliases_changed;
        self.wake(
            (!everyone).then_some(&touched),
            old.aliases.iter().chain(&new.aliases),
        );
        count
    }

    /// Forgets the orphan `proxy` once no stream of it is attached.
    /// `attached_as` is the `node.cluster` the stream sent: the proxy or one of its aliases.
    fn forget_orphan(&self, attached_as: &ProxyName) {
        // Held throughout, so a stream attaching meanwhile keeps the role.
        let attached = self.lock_attached();
        self.tx.send_if_modified(|snapshots| {
            let proxy = snapshots.resolve(attached_as).clone();
            let connected = attached.contains_key(&proxy)
                || snapshots
                    .aliases
                    .iter()
                    .any(|(a, p)| *p == proxy && attached.contains_key(a));
            if !snapshots.orphans.contains_key(&proxy) || connected {
                return false;
            }
            tracing::info!(proxy = %proxy, "the last Envoy of a role gone from the catalog disconnected; the role is forgotten");
            let mut next = (**snapshots).clone();
            next.orphans.remove(&proxy);
            next.aliases.retain(|_, p| *p != proxy);
            *snapshots = Arc::new(next);
            true
        });
    }
}

/// A stream counted against its proxy role; see [`Cache::attach`].
#[derive(Debug)]
pub struct Attached {
    cache: Cache,
    proxy: ProxyName,
    /// Changes when a publish may change what the stream gets (see [`Cache::watch`]).
    pub wake: watch::Receiver<()>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        let last = {
            let mut attached = self.cache.lock_attached();
            let n = attached.entry(self.proxy.clone()).or_default();
            *n = n.saturating_sub(1);
            let last = *n == 0;
            if last {
                attached.remove(&self.proxy);
            }
            last
        };
        if last {
            self.cache.forget_orphan(&self.proxy);
        }
        // The last stream of a name takes its wake-up with it (this one's is still counted):
        // names that come and go must not pile up while nothing is published.
        let mut wakers = self.cache.wakers.lock().unwrap_or_else(|e| e.into_inner());
        if wakers
            .get(&self.proxy)
            .is_some_and(|w| w.receiver_count() <= 1)
        {
            wakers.remove(&self.proxy);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster_snapshot(cluster: &str) -> Snapshot {
        let mut s = Snapshot::default();
        let body = Any {
            type_url: ResourceType::Cluster.type_url().into(),
            value: cluster.as_bytes().to_vec(),
        };
        s.replace(
            ResourceType::Cluster,
            BTreeMap::from([(cluster.to_string(), body)]),
        );
        s
    }

    fn name(n: &str) -> ProxyName {
        ProxyName(n.into())
    }

    #[test]
    fn an_alias_gets_its_proxy_s_snapshot_and_keeps_it_while_connected() {
        let cache = Cache::new();
        let arn = name("arn:aws:appmesh:us-east-1:111122223333:mesh/m/virtualNode/blue");
        cache.publish(
            BTreeMap::from([
                (name("blue"), cluster_snapshot("a")),
                (name("red"), cluster_snapshot("b")),
            ]),
            BTreeMap::from([(arn.clone(), name("blue"))]),
        );
        let now = cache.current();
        let (by_alias, role) = now.get(&arn, None);
        assert_eq!(role, Role::Known);
        assert!(Arc::ptr_eq(&by_alias, &now.get(&name("blue"), None).0));
        assert_eq!(now.get(&name("nobody"), None).1, Role::Unknown);

        // The proxy leaves the catalog while an Envoy presenting the alias is connected: that
        // Envoy keeps its last config until it disconnects.
        let attached = cache.attach(&arn);
        cache.publish(
            BTreeMap::from([(name("red"), cluster_snapshot("b"))]),
            BTreeMap::new(),
        );
        let (kept, role) = cache.current().get(&arn, None);
        assert_eq!(role, Role::Orphaned);
        assert!(Arc::ptr_eq(&kept, &by_alias));
        drop(attached);
        assert_eq!(cache.current().get(&arn, None).1, Role::Unknown);
        assert!(cache.current().aliases.is_empty());
    }

    fn resources(names: &[(&str, u8)]) -> BTreeMap<String, Any> {
        names
            .iter()
            .map(|(n, b)| {
                let any = Any {
                    type_url: "t".into(),
                    value: vec![*b],
                };
                (n.to_string(), any)
            })
            .collect()
    }

    fn snapshot(in_a: u8) -> Snapshot {
        let mut s = Snapshot::default();
        s.replace(ResourceType::Cluster, resources(&[("c", 1)]));
        s.replace(ResourceType::Endpoint, resources(&[("c", 2)]));
        s.add_zone(Zone::new("a"), resources(&[("c", in_a)]));
        s
    }

    #[test]
    fn an_envoy_gets_the_snapshot_of_its_zone_and_changes_there_are_published() {
        let cache = Cache::new();
        let p = ProxyName("p".into());
        cache.publish(BTreeMap::from([(p.clone(), snapshot(3))]), BTreeMap::new());
        let now = cache.current();
        let eds = |zone: Option<&str>| {
            let (s, role) = now.get(&p, zone);
            assert_eq!(role, Role::Known);
            s.of(ResourceType::Endpoint).resources["c"]
                .body()
                .value
                .clone()
        };
        assert_eq!(eds(None), [2]);
        assert_eq!(eds(Some("a")), [3]);
        // A zone without a snapshot of its own: the proxy's.
        assert_eq!(eds(Some("b")), [2]);
        let (in_a, _) = now.get(&p, Some("a"));
        assert_eq!(
            in_a.of(ResourceType::Cluster).version,
            now.get(&p, None).0.of(ResourceType::Cluster).version
        );
        // Same content: nothing is published. A change only in a zone's endpoints is.
        assert_eq!(
            cache.publish(BTreeMap::from([(p.clone(), snapshot(3))]), BTreeMap::new()),
            0
        );
        assert_eq!(
            cache.publish(BTreeMap::from([(p.clone(), snapshot(4))]), BTreeMap::new()),
            1
        );
        let (in_a, _) = cache.current().get(&p, Some("a"));
        assert_eq!(
            in_a.of(ResourceType::Endpoint).resources["c"].body().value,
            [4]
        );
    }

    #[test]
    fn replacing_other_types_replaces_them_in_every_zone() {
        let mut s = snapshot(3);
        s.replace(ResourceType::Secret, resources(&[("k", 9)]));
        let a = &s.zones["a"];
        assert_eq!(a.of(ResourceType::Secret), s.of(ResourceType::Secret));
        assert_ne!(a.of(ResourceType::Endpoint), s.of(ResourceType::Endpoint));
    }

    #[test]
    fn a_sotw_response_is_encoded_once_per_subscription_and_reads_as_its_resources() {
        use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
        use prost::Message;
        let s = snapshot(3);
        let typed = s.of(ResourceType::Cluster);
        let names = Arc::new(BTreeSet::from(["c".to_string(), "missing".to_string()]));
        let (v1, a) = typed.sotw(Some(&names));
        // Another stream with an equal set (not the same allocation) shares the encoding.
        let (v2, b) = typed.sotw(Some(&Arc::new((*names).clone())));
        assert_eq!((v1, a.as_ptr()), (v2, b.as_ptr()));
        assert_eq!(v1, typed.version_for(Some(&names)));
        let read = DiscoveryResponse::decode(a).unwrap();
        assert_eq!(read.resources, [typed.resources["c"].body().clone()]);
        // The wildcard is a subscription of its own.
        let (w, _) = typed.sotw(None);
        assert_eq!(w, typed.wildcard_version);
        // A clone (another snapshot) starts with no encodings, and is still equal.
        assert_eq!(typed.clone(), *typed);
    }

    #[test]
    fn a_delta_item_is_the_resource_with_its_name_and_version() {
        use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;
        use prost::Message;
        let s = snapshot(3);
        let r = &s.of(ResourceType::Cluster).resources["c"];
        let item = r.delta_item("c");
        assert_eq!(item.as_ptr(), r.delta_item("c").as_ptr(), "encoded once");
        let read = DeltaDiscoveryResponse::decode(item).unwrap();
        assert_eq!(read.resources.len(), 1);
        assert_eq!(read.resources[0].name, "c");
        assert_eq!(read.resources[0].version, r.version.to_string());
        assert_eq!(read.resources[0].resource.as_ref(), Some(r.body()));
    }

    #[test]
    fn changed_names_are_the_added_removed_and_changed_ones_worked_out_once() {
        let typed = |names: &[(&str, u8)]| {
            let mut s = Snapshot::default();
            s.replace(ResourceType::Cluster, resources(names));
            s.of(ResourceType::Cluster).clone()
        };
        let old = typed(&[("a", 1), ("b", 2), ("c", 3)]);
        let now = typed(&[("a", 1), ("b", 9), ("d", 4)]);
        let changed = now.changed_names(&old);
        assert_eq!(&*changed, ["b", "c", "d"]);
        assert!(
            Arc::ptr_eq(&changed, &now.changed_names(&old)),
            "the second stream to ask shares the first one's answer"
        );
        assert_eq!(&*old.changed_names(&now), ["b", "c", "d"]);
        assert!(now.changed_names(&now.clone()).is_empty());
        assert!(
            now.changed_names(&typed(&[("a", 1), ("b", 9), ("d", 4)]))
                .is_empty()
        );
    }

    #[test]
    fn a_publish_wakes_only_the_streams_of_proxies_it_changes() {
        let cache = Cache::new();
        let (blue, red, green) = (name("blue"), name("red"), name("green"));
        let alias = name("arn:aws:appmesh:us-east-1:111122223333:mesh/m/virtualNode/blue");
        let aliases = BTreeMap::from([(alias.clone(), blue.clone())]);
        let mut by_blue = cache.watch(&blue);
        let mut by_alias = cache.watch(&alias);
        let mut by_red = cache.watch(&red);
        let mut by_unknown = cache.watch(&green);
        let woken = |w: &mut watch::Receiver<()>| {
            let woken = w.has_changed().unwrap();
            w.mark_unchanged();
            woken
        };
        // The first catalog wakes every stream, those of proxies it does not name too.
        let publish = |blue_cluster: &str, with_red: bool| {
            let mut proxies = BTreeMap::from([(blue.clone(), cluster_snapshot(blue_cluster))]);
            if with_red {
                proxies.insert(red.clone(), cluster_snapshot("r"));
            }
            cache.publish(proxies, aliases.clone())
        };
        publish("a", true);
        let all = [&mut by_blue, &mut by_alias, &mut by_red, &mut by_unknown];
        assert_eq!(all.map(woken), [true; 4]);

        // Blue changes: its streams wake, by name or by alias; red's sleep.
        assert_eq!(publish("b", true), 1);
        let all = [&mut by_blue, &mut by_alias, &mut by_red, &mut by_unknown];
        assert_eq!(all.map(woken), [true, true, false, false]);

        // Nothing changes: no one wakes. Red leaves the catalog: only red's streams wake.
        assert_eq!(publish("b", true), 0);
        assert_eq!(publish("b", false), 1);
        let all = [&mut by_blue, &mut by_alias, &mut by_red, &mut by_unknown];
        assert_eq!(all.map(woken), [false, false, true, false]);

        // An alias that moves may change what anyone selects: everyone wakes.
        cache.publish(
            BTreeMap::from([(blue.clone(), cluster_snapshot("b"))]),
            BTreeMap::new(),
        );
        let all = [&mut by_blue, &mut by_alias, &mut by_red, &mut by_unknown];
        assert_eq!(all.map(woken), [true; 4]);

        // A name no stream watches any more is forgotten at the next publish.
        drop(by_unknown);
        cache.publish(
            BTreeMap::from([(blue.clone(), cluster_snapshot("c"))]),
            BTreeMap::new(),
        );
        assert!(!cache.wakers.lock().unwrap().contains_key(&green));
        assert!(woken(&mut by_blue));

        // A stream's wake-up goes with its last stream, publish or not.
        let passing = name("passing-by");
        let (one, two) = (cache.attach(&passing), cache.attach(&passing));
        drop(one);
        assert!(cache.wakers.lock().unwrap().contains_key(&passing));
        drop(two);
        assert!(!cache.wakers.lock().unwrap().contains_key(&passing));
    }
}
