//! Delta (incremental) streams: only changed resources and removals are sent.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};

use super::nodes::{ResourceSet, SetSource, SetVersion};
use super::{Flow, Sent, StreamCore, Variant};
use crate::cache::Version;
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
    known: BTreeMap<String, Version>,
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
    fn still_rejected(&self, snap: &crate::cache::TypeSnapshot) -> bool {
        self.rejected
            .iter()
            .any(|(name, v)| snap.resources.get(name).map(|r| r.version) == Some(*v))
    }

    /// Whether the subscription takes `name` of `snap`: named, or in the wildcard (which
    /// leaves out named-only resources).
    fn wants(&self, snap: &crate::cache::TypeSnapshot, name: &str) -> bool {
        self.names.contains(name) || (self.wildcard && snap.is_sent(name, None))
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
                            ts.rejected.insert(name.clone(), *refused);
                        }
                        match before {
                            Some(v) => ts.known.insert(name, v),
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
            ts.known = req
                .initial_resource_versions
                .iter()
                .filter_map(|(name, v)| {
                    Some((name.clone(), Version(u64::from_str_radix(v, 16).ok()?)))
                })
                .collect();
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
            ts.known.retain(|n, _| names.contains(n));
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
        let typed = core.snapshot.of(t);
        let snap = &typed.resources;
        ts.subscribed.then(|| {
            ts.pending.is_none()
                && snap.iter().all(|(name, r)| {
                    !ts.wants(typed, name) || ts.known.get(name) == Some(&r.version)
                })
                && ts.known.keys().all(|name| snap.contains_key(name))
        })
    }

    fn send(
        &mut self,
        core: &mut StreamCore,
        t: ResourceType,
        keep_removed: bool,
    ) -> Option<DeltaDiscoveryResponse> {
        let snapshot = core.snapshot.clone();
        let snap = snapshot.of(t);
        let ts = &mut self.types[t.index()];
        let resources: Vec<Resource> = snap
            .resources
            .iter()
            .filter(|(name, r)| {
                ts.wants(snap, name)
                    && ts.known.get(*name) != Some(&r.version)
                    && ts.rejected.get(*name) != Some(&r.version)
            })
            .map(|(name, r)| Resource {
                name: name.clone(),
                version: r.version.to_string(),
                resource: Some(r.body.clone()),
                ..Default::default()
            })
            .collect();
        // Break after make: clusters and endpoints leave only once the proxy runs routes that
        // no longer use them (see `Gate::Open`).
        let removed: Vec<String> = ts
            .known
            .keys()
            .filter(|name| {
                (!keep_removed && !snap.resources.contains_key(*name))
                    // Had from an earlier server, but not part of this subscription.
                    || (snap.resources.contains_key(*name) && !ts.wants(snap, name))
            })
            .cloned()
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
            return None;
        }
        // Clusters the proxy had and now gets anew: it rebuilds them and keeps them warming
        // until their load assignment comes again, without asking for it.
        let rebuilt: Vec<String> = if t == ResourceType::Cluster {
            resources
                .iter()
                .filter(|r| ts.known.contains_key(&r.name))
                .map(|r| r.name.clone())
                .collect()
        } else {
            Vec::new()
        };
        ts.in_flight.clear();
        for r in &resources {
            if let Some(v) = snap.resources.get(&r.name) {
                let before = ts.known.insert(r.name.clone(), v.version);
                ts.in_flight.push((r.name.clone(), before));
            }
        }
        for name in &removed {
            let before = ts.known.remove(name);
            ts.in_flight.push((name.clone(), before));
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
        Some(DeltaDiscoveryResponse {
            system_version_info: snap.version.to_string(),
            resources,
            type_url: t.type_url().to_string(),
            removed_resources: removed,
            nonce,
            ..Default::default()
        })
    }
}
