//! Delta (incremental) streams: only changed resources and removals are sent.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};

use super::nodes::{ResourceSet, SetSource, SetVersion};
use super::wire::Encoded;
use super::{Flow, Sent, StreamCore, Variant};
use crate::cache::{TypeSnapshot, Version, VersionedResource};
use crate::translate::ResourceType;

/// Delta bookkeeping of one stream.
#[derive(Default)]
pub(crate) struct Delta {
    types: [TypeState; crate::translate::TYPES],
}

#[derive(Default)]
struct TypeState {
    subscribed: bool,
    wildcard: bool,
    /// Shared with every stream that subscribes to the same names (see `NameSets`).
    names: Arc<BTreeSet<String>>,
    /// What the proxy has (or was last sent): name → version.
    known: Known,
    pending: Option<Sent>,
    /// The names the pending response carries (added or removed), with the version `known`
    /// had for each before: a NACK puts those back.
    in_flight: Vec<(String, Option<Version>)>,
    /// Resources the proxy rejected: name → the version it refused. Not sent again at that
    /// version; while the snapshot still holds it, listeners and routes wait (see `gate`).
    rejected: BTreeMap<String, Version>,
    /// Whether the first request of this type got its answer (sent even when empty).
    answered: bool,
    /// `names` shared with the node registry (`None`: wildcard), built again after a
    /// subscription change.
    shared_names: Option<Option<Arc<BTreeSet<String>>>>,
}

impl TypeState {
    /// Whether a version the proxy rejected is still what `snap` holds for its name.
    fn still_rejected(&self, snap: &TypeSnapshot) -> bool {
        self.rejected
            .iter()
            .any(|(name, v)| snap.resources.get(name).map(|r| r.version) == Some(*v))
    }

    /// Whether the subscription takes `name` of `snap`: named, or in the wildcard (which
    /// leaves out named-only resources).
    fn wants(&self, snap: &TypeSnapshot, name: &str) -> bool {
        wants(&self.names, self.wildcard, snap, name)
    }

    /// When the proxy has exactly what an earlier snapshot held for this subscription, the
    /// names that can differ in `now`: those changed since (see [`Known::candidates`]).
    fn candidates(&self, now: &TypeSnapshot) -> Option<Arc<[String]>> {
        self.known.candidates(now, &self.names, self.wildcard)
    }

    /// Whether what the proxy has is exactly what `snap` holds for the subscription. `among`:
    /// the only names that can differ (see [`TypeState::candidates`]).
    fn has_all_of(&self, snap: &TypeSnapshot, among: Option<&[String]>) -> bool {
        let has = |name: &str| {
            let wanted = snap.resources.get(name).filter(|_| self.wants(snap, name));
            self.known.get(name) == wanted.map(|r| r.version)
        };
        match among {
            Some(names) => names.iter().all(|name| has(name)),
            None => {
                snap.resources.keys().all(|name| has(name))
                    && self
                        .known
                        .names()
                        .all(|name| snap.resources.contains_key(name) && self.wants(snap, name))
            }
        }
    }

    /// The proxy has exactly what `snapshot` holds of type `t` for the subscription.
    fn rebase_on(&mut self, snapshot: &Arc<crate::cache::Snapshot>, t: ResourceType) {
        self.known.rebase(Subscribed {
            snapshot: snapshot.clone(),
            t,
            names: self.names.clone(),
            wildcard: self.wildcard,
        });
    }

    /// Whether the proxy runs what `snap` holds for the subscription, with nothing pending;
    /// resources it has beyond it (from an earlier server) do not count.
    fn runs(&self, snap: &TypeSnapshot) -> bool {
        let current = |name: &str| match snap.resources.get(name) {
            Some(r) => !self.wants(snap, name) || self.known.get(name) == Some(r.version),
            None => self.known.get(name).is_none(),
        };
        self.pending.is_none()
            && match self.candidates(snap) {
                Some(changed) => changed.iter().all(|name| current(name)),
                None => {
                    snap.resources.keys().all(|name| current(name))
                        && self
                            .known
                            .names()
                            .all(|name| snap.resources.contains_key(name))
                }
            }
    }
}

/// Whether a subscription to `names` (and the wildcard, with `wildcard`) takes `name` of `snap`.
fn wants(names: &BTreeSet<String>, wildcard: bool, snap: &TypeSnapshot, name: &str) -> bool {
    names.contains(name) || (wildcard && snap.is_sent(name, None))
}

/// What a proxy has of one type: name → version. Most of the time that is exactly what one
/// snapshot holds for the subscription; then it is kept as that snapshot, shared by every
/// stream of the proxy, and only names that differ from it are kept per stream. Thousands of
/// streams of a proxy with hundreds of resources would otherwise each hold a copy of every
/// name.
#[derive(Default)]
struct Known {
    base: Option<Subscribed>,
    /// Where the proxy differs from `base`: the version it has, or `None` for none.
    diff: BTreeMap<String, Option<Version>>,
}

/// One type of a snapshot, as a subscription sees it.
struct Subscribed {
    snapshot: Arc<crate::cache::Snapshot>,
    t: ResourceType,
    names: Arc<BTreeSet<String>>,
    wildcard: bool,
}

impl Subscribed {
    fn get(&self, name: &str) -> Option<Version> {
        let snap = self.snapshot.of(self.t);
        let r = snap.resources.get(name)?;
        wants(&self.names, self.wildcard, snap, name).then_some(r.version)
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        let snap = self.snapshot.of(self.t);
        snap.resources
            .keys()
            .filter(move |name| wants(&self.names, self.wildcard, snap, name))
            .map(String::as_str)
    }
}

impl Known {
    fn from_map(versions: BTreeMap<String, Version>) -> Known {
        Known {
            base: None,
            diff: versions.into_iter().map(|(n, v)| (n, Some(v))).collect(),
        }
    }

    fn get(&self, name: &str) -> Option<Version> {
        match self.diff.get(name) {
            Some(v) => *v,
            None => self.base.as_ref().and_then(|b| b.get(name)),
        }
    }

    /// Records that the proxy has `version` of `name`; returns what it had.
    fn insert(&mut self, name: &str, version: Version) -> Option<Version> {
        let before = self.get(name);
        self.diff.insert(name.to_string(), Some(version));
        before
    }

    /// Records that the proxy has no `name`; returns what it had.
    fn remove(&mut self, name: &str) -> Option<Version> {
        let before = self.get(name);
        if before.is_some() {
            match self.base.as_ref().and_then(|b| b.get(name)) {
                Some(_) => self.diff.insert(name.to_string(), None),
                None => self.diff.remove(name),
            };
        }
        before
    }

    /// The names the proxy has.
    fn names(&self) -> impl Iterator<Item = &str> {
        let base = self
            .base
            .iter()
            .flat_map(|b| b.names())
            .filter(|name| !self.diff.contains_key(*name));
        let own = self
            .diff
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(n, _)| n.as_str());
        base.chain(own)
    }

    /// Forgets the names `keep` refuses.
    fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        let gone: Vec<String> = self
            .names()
            .filter(|n| !keep(n))
            .map(str::to_string)
            .collect();
        for name in gone {
            self.remove(&name);
        }
    }

    /// When the proxy has exactly what its base holds, and the base is a snapshot of the same
    /// subscription: the names that differ between the base and `now`. Only those need
    /// comparing after a publish, not every resource of the proxy. `None`: compare them all.
    fn candidates(
        &self,
        now: &TypeSnapshot,
        names: &Arc<BTreeSet<String>>,
        wildcard: bool,
    ) -> Option<Arc<[String]>> {
        let base = self.base.as_ref().filter(|_| self.diff.is_empty())?;
        let same =
            base.wildcard == wildcard && (Arc::ptr_eq(&base.names, names) || base.names == *names);
        same.then(|| now.changed_names(base.snapshot.of(base.t)))
    }

    /// The proxy has exactly what `base` holds.
    fn rebase(&mut self, base: Subscribed) {
        self.base = Some(base);
        self.diff.clear();
    }
}

impl Delta {
    /// Names with versions this stream keeps of its own, beyond the snapshots it shares.
    #[cfg(test)]
    pub(super) fn names_kept(&self) -> usize {
        self.types.iter().map(|ts| ts.known.diff.len()).sum()
    }
}

impl Variant for Delta {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaDiscoveryResponse;
    const NAME: &'static str = "delta";

    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn type_url(req: &DeltaDiscoveryRequest) -> &str {
        &req.type_url
    }

    fn on_request(&mut self, core: &mut StreamCore, t: ResourceType, req: DeltaDiscoveryRequest) {
        let ts = &mut self.types[t.index()];
        if let Some(sent) = &ts.pending
            && sent.nonce == req.response_nonce
        {
            match &req.error_detail {
                Some(err) => {
                    core.record_nack(t, sent.version, sent.at, &err.message);
                    // The proxy kept what it had: it does not run what this response carried.
                    for (name, before) in std::mem::take(&mut ts.in_flight) {
                        if let Some(refused) = ts.known.get(&name) {
                            ts.rejected.insert(name.clone(), refused);
                        }
                        match before {
                            Some(v) => ts.known.insert(&name, v),
                            None => ts.known.remove(&name),
                        };
                    }
                }
                None => {
                    core.record_ack(t, sent.version, sent.at);
                    for (name, _) in std::mem::take(&mut ts.in_flight) {
                        ts.rejected.remove(&name);
                    }
                    if ts.still_rejected(core.snapshot.of(t)) {
                        core.record_still_rejected(t);
                    }
                }
            }
            ts.pending = None;
        }
        // Subscription changes count whatever nonce they carry: each request is a delta.
        let first = !ts.subscribed;
        let resubscribed = first
            || !req.resource_names_subscribe.is_empty()
            || !req.resource_names_unsubscribe.is_empty();
        if resubscribed {
            ts.shared_names = None;
        }
        if first {
            ts.subscribed = true;
            // An empty first subscription is the (legacy) wildcard, for LDS and CDS only.
            ts.wildcard = t.wildcard_by_default() && req.resource_names_subscribe.is_empty();
            // After a reconnect the proxy says what it has, so unchanged resources are not re-sent.
            core.resumed |= !req.initial_resource_versions.is_empty();
            ts.known = Known::from_map(
                req.initial_resource_versions
                    .iter()
                    .filter_map(|(name, v)| {
                        Some((name.clone(), Version(u64::from_str_radix(v, 16).ok()?)))
                    })
                    .collect(),
            );
        }
        for name in req.resource_names_subscribe {
            if name == "*" {
                ts.wildcard = true;
            } else {
                // A name subscribed (again) after the first request is sent whatever the proxy
                // had: it may have dropped it when unsubscribing, as the protocol allows.
                if !first {
                    ts.known.remove(&name);
                }
                Arc::make_mut(&mut ts.names).insert(name);
            }
        }
        for name in req.resource_names_unsubscribe {
            if name == "*" {
                ts.wildcard = false;
            } else {
                Arc::make_mut(&mut ts.names).remove(&name);
                ts.known.remove(&name);
            }
        }
        if !ts.wildcard {
            let names = &ts.names;
            ts.known.retain(|n| names.contains(n));
        }
        if resubscribed {
            let names = Arc::unwrap_or_clone(std::mem::take(&mut ts.names));
            ts.names = core.shared.name_sets.share(names);
        }
    }

    fn flow(&self, core: &StreamCore, t: ResourceType) -> Flow {
        let ts = &self.types[t.index()];
        let snap = &core.snapshot.of(t).resources;
        Flow {
            subscribed: ts.subscribed,
            pending: ts.pending.is_some(),
            // Still refused: the snapshot holds a version the proxy rejected.
            rejected: ts
                .rejected
                .iter()
                .any(|(name, v)| snap.get(name).is_some_and(|r| r.version == *v)),
        }
    }

    fn runs_current(&self, core: &StreamCore, t: ResourceType) -> Option<bool> {
        let ts = &self.types[t.index()];
        ts.subscribed.then(|| ts.runs(core.snapshot.of(t)))
    }

    fn send(
        &mut self,
        core: &mut StreamCore,
        t: ResourceType,
        keep_removed: bool,
    ) -> Option<Encoded> {
        let snapshot = core.snapshot.clone();
        let snap = snapshot.of(t);
        let ts = &mut self.types[t.index()];
        // Usually the proxy has what the snapshot before held: then only what changed since
        // needs looking at, not every resource of the proxy on every stream.
        let candidates = ts.candidates(snap);
        let considered: Box<dyn Iterator<Item = (&String, &VersionedResource)>> = match &candidates
        {
            Some(changed) => Box::new(
                changed
                    .iter()
                    .filter_map(|name| snap.resources.get_key_value(name)),
            ),
            None => Box::new(snap.resources.iter()),
        };
        let resources: Vec<(&String, &VersionedResource)> = considered
            .filter(|(name, r)| {
                ts.wants(snap, name)
                    && ts.known.get(name) != Some(r.version)
                    && ts.rejected.get(*name) != Some(&r.version)
            })
            .collect();
        // Break after make: clusters and endpoints leave only once the proxy runs routes that
        // no longer use them (see `Gate::Open`).
        let had: Box<dyn Iterator<Item = &str>> = match &candidates {
            Some(changed) => Box::new(
                changed
                    .iter()
                    .map(String::as_str)
                    .filter(|name| ts.known.get(name).is_some()),
            ),
            None => Box::new(ts.known.names()),
        };
        let removed: Vec<String> = had
            .filter(|name| {
                (!keep_removed && !snap.resources.contains_key(*name))
                    // Had from an earlier server, but not part of this subscription.
                    || (snap.resources.contains_key(*name) && !ts.wants(snap, name))
            })
            .map(str::to_string)
            .collect();
        if resources.is_empty() && removed.is_empty() && ts.answered {
            // A rejected change rolled back: the proxy runs what the snapshot holds.
            if ts.pending.is_none() && !ts.rejected.is_empty() && !ts.still_rejected(snap) {
                ts.rejected.clear();
                let names = ts
                    .shared_names
                    .get_or_insert_with(|| (!ts.wildcard).then(|| ts.names.clone()))
                    .clone();
                core.record_resolved(
                    t,
                    snap.version,
                    ResourceSet {
                        from: SetSource::Snapshot(snapshot.clone(), t),
                        names,
                        version: SetVersion::PerResource,
                    },
                );
            }
            // It may have what the snapshot holds again (a rolled back change): then share it,
            // and compare only what changes from here.
            if candidates.is_none() && ts.pending.is_none() && ts.has_all_of(snap, None) {
                ts.rebase_on(&snapshot, t);
            }
            return None;
        }
        // Clusters the proxy had and now gets anew: it rebuilds them and keeps them warming
        // until their load assignment comes again, without asking for it.
        let rebuilt: Vec<String> = if t == ResourceType::Cluster {
            resources
                .iter()
                .filter(|(name, _)| ts.known.get(name).is_some())
                .map(|(name, _)| (*name).clone())
                .collect()
        } else {
            Vec::new()
        };
        ts.in_flight.clear();
        for (name, r) in &resources {
            let before = ts.known.insert(name, r.version);
            ts.in_flight.push(((*name).clone(), before));
        }
        for name in &removed {
            let before = ts.known.remove(name);
            ts.in_flight.push((name.clone(), before));
        }
        // Usually the proxy now has exactly what the snapshot holds for it: then that is what
        // the stream keeps, shared, rather than a copy of every name and version.
        if ts.has_all_of(snap, candidates.as_deref()) {
            ts.rebase_on(&snapshot, t);
        }
        ts.answered = true;
        let nonce = core.next_nonce();
        ts.pending = Some(Sent {
            version: snap.version,
            nonce: nonce.clone(),
            at: Instant::now(),
        });
        let names = ts
            .shared_names
            .get_or_insert_with(|| (!ts.wildcard).then(|| ts.names.clone()))
            .clone();
        core.record_sent(
            t,
            snap.version,
            &nonce,
            ResourceSet {
                from: SetSource::Snapshot(snapshot.clone(), t),
                names,
                version: SetVersion::PerResource,
            },
        );
        let eds = &mut self.types[ResourceType::Endpoint.index()];
        for name in rebuilt {
            eds.known.remove(&name);
        }
        let head = DeltaDiscoveryResponse {
            system_version_info: snap.version.to_string(),
            type_url: t.type_url().to_string(),
            removed_resources: removed,
            nonce,
            ..Default::default()
        };
        let items = resources
            .iter()
            .map(|(name, r)| r.delta_item(name))
            .collect();
        Some(Encoded::new(&head, items))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use envoy_types::pb::google::protobuf::Any;

    use super::*;
    use crate::cache::Snapshot;

    fn snapshot(names: &[(&str, u8)]) -> Arc<Snapshot> {
        let mut s = Snapshot::default();
        let resources: BTreeMap<String, Any> = names
            .iter()
            .map(|(n, b)| {
                let body = Any {
                    type_url: "t".into(),
                    value: vec![*b],
                };
                (n.to_string(), body)
            })
            .collect();
        s.replace(ResourceType::Cluster, resources);
        Arc::new(s)
    }

    fn version(snap: &Snapshot, name: &str) -> Option<Version> {
        snap.of(ResourceType::Cluster)
            .resources
            .get(name)
            .map(|r| r.version)
    }

    #[test]
    fn known_reads_through_the_shared_snapshot_and_keeps_only_differences() {
        let snap = snapshot(&[("a", 1), ("b", 2), ("c", 3)]);
        let mut known = Known::default();
        known.rebase(Subscribed {
            snapshot: snap.clone(),
            t: ResourceType::Cluster,
            names: Arc::new(BTreeSet::from(["a".to_string(), "b".to_string()])),
            wildcard: false,
        });
        // Only the subscribed names count as had.
        assert_eq!(known.get("a"), version(&snap, "a"));
        assert_eq!(known.get("c"), None);
        let mut names: Vec<&str> = known.names().collect();
        names.sort();
        assert_eq!(names, ["a", "b"]);

        assert_eq!(known.insert("a", Version(9)), version(&snap, "a"));
        assert_eq!(known.insert("z", Version(8)), None);
        assert_eq!(known.remove("b"), version(&snap, "b"));
        assert_eq!(known.remove("b"), None, "removed once");
        assert_eq!(known.get("a"), Some(Version(9)));
        let mut names: Vec<&str> = known.names().collect();
        names.sort();
        assert_eq!(names, ["a", "z"]);
        known.retain(|n| n != "z");
        assert_eq!(known.names().collect::<Vec<_>>(), ["a"]);
        // A name had only of the stream's own goes entirely; one of the base is masked.
        assert_eq!(known.diff.len(), 2);

        // The wildcard takes every resource of the snapshot.
        known.rebase(Subscribed {
            snapshot: snap.clone(),
            t: ResourceType::Cluster,
            names: Arc::default(),
            wildcard: true,
        });
        assert!(known.diff.is_empty());
        assert_eq!(known.names().count(), 3);
    }
}
