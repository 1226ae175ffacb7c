//! State-of-the-world streams: every response carries the full set of subscribed resources.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tonic::Status;

use super::nodes::{ResourceSet, SetSource, SetVersion};
use super::wire::Encoded;
use super::{Flow, Sent, Shared, StreamCore, Variant};
use crate::cache::{TypeSnapshot, VersionedResource};
use crate::tls::Peer;
use crate::translate::ResourceType;

/// SotW bookkeeping of one stream.
#[derive(Default)]
pub(crate) struct Sotw {
    types: [TypeState; crate::translate::TYPES],
    /// The clusters last sent (a reference, not a copy): a changed cluster needs its
    /// endpoints again.
    clusters_sent: Option<SetSource>,
}

#[derive(Default)]
struct TypeState {
    subscribed: bool,
    /// `None` subscribes to everything (wildcard); shared with the node registry.
    names: Option<Arc<BTreeSet<String>>>,
    /// Whether the proxy ever named resources of this type: from then on, an empty list means
    /// none of them, not the legacy wildcard.
    named: bool,
    /// The last response (or, after a reconnect, what the proxy said it has).
    sent: Option<Sent>,
    /// Whether `sent` awaits its ACK or NACK.
    pending: bool,
    /// Whether the proxy rejected `sent`.
    rejected: bool,
    /// The version the proxy said it has before this stream sent it anything (a reconnect).
    reported: Option<String>,
    /// Send even when the version is unchanged (EDS after its cluster changed).
    force: bool,
    /// What the proxy runs of this type, as it last acknowledged it (or said it has on a
    /// reconnect), with the names it had subscribed to: what an EDS response may leave out.
    has: Option<ResourceSet>,
    /// What `sent` carried, until the proxy answers it.
    sent_from: Option<ResourceSet>,
}

/// The resources of a subscription to `names` in `now` that the proxy, which runs `had`, lacks
/// or has at another version; `None` when `had` answered another subscription.
fn changed_since<'a>(
    had: &ResourceSet,
    now: &'a TypeSnapshot,
    names: Option<&'a Arc<BTreeSet<String>>>,
) -> Option<Vec<&'a VersionedResource>> {
    let same = match (&had.names, names) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
        _ => false,
    };
    same.then(|| {
        // Worked out once per pair of snapshots, for every stream of the proxy.
        now.changed_names(had.from.typed())
            .iter()
            .filter(|name| now.is_sent(name, names.map(|n| &**n)))
            .filter_map(|name| now.resources.get(name))
            .collect()
    })
}

/// The names a SotW request subscribes to; `None` is the wildcard. An empty list is the
/// wildcard only for LDS and CDS, and only until the proxy has named resources.
fn subscription(t: ResourceType, names: &[String], named: bool) -> Option<BTreeSet<String>> {
    if is_wildcard(t, names, named) {
        None
    } else {
        Some(names.iter().cloned().collect())
    }
}

fn is_wildcard(t: ResourceType, names: &[String], named: bool) -> bool {
    names.iter().any(|n| n == "*") || (names.is_empty() && t.wildcard_by_default() && !named)
}

/// Whether a SotW request subscribes to `current` again, worked out without copying its names:
/// every ACK repeats the whole subscription (200 names for 200 clusters' endpoints).
fn resubscribes(
    t: ResourceType,
    names: &[String],
    named: bool,
    current: Option<&BTreeSet<String>>,
) -> bool {
    match current {
        None => is_wildcard(t, names, named),
        Some(set) => {
            !is_wildcard(t, names, named)
                && names.len() == set.len()
                && names.iter().all(|n| set.contains(n))
                // Each given once: then they are all of the set's.
                && (names.windows(2).all(|w| w[0] < w[1]) || {
                    let once: std::collections::HashSet<&str> =
                        names.iter().map(String::as_str).collect();
                    once.len() == names.len()
                })
        }
    }
}

/// The response carrying `snap`'s resources named in `names` (all for `None`), at the
/// version [`TypeSnapshot::sotw_version`] gives; the resources are encoded once per snapshot
/// and subscription, and shared. With `only`, it carries just those of them (see
/// [`Sotw::send`]), still at the version of the whole set.
fn response(
    t: ResourceType,
    snap: &TypeSnapshot,
    names: Option<&Arc<BTreeSet<String>>>,
    only: Option<Vec<&VersionedResource>>,
    nonce: String,
) -> Encoded {
    let (version, resources) = match only {
        None => {
            let (version, all) = snap.sotw(names);
            (version, vec![all])
        }
        Some(only) => (
            snap.sotw_version(names),
            only.iter().map(|r| r.sotw_item()).collect(),
        ),
    };
    let head = DiscoveryResponse {
        version_info: version.to_string(),
        type_url: t.type_url().to_string(),
        nonce,
        ..Default::default()
    };
    Encoded::new(&head, resources)
}

impl Sotw {
    /// Envoy rebuilds a changed cluster and keeps it warming until it gets a load assignment,
    /// without asking for one: mark the endpoints of changed clusters to be sent again.
    fn note_clusters_sent(&mut self, core: &StreamCore, sent: &SetSource) {
        let clusters = &sent.typed().resources;
        let retiring = super::with_retiring(core, ResourceType::Endpoint);
        let endpoints = &retiring
            .as_ref()
            .unwrap_or_else(|| core.snapshot.of(ResourceType::Endpoint))
            .resources;
        let before = self.clusters_sent.as_ref().map(|s| &s.typed().resources);
        let changed = before.is_some_and(|before| {
            clusters.iter().any(|(name, r)| {
                before.get(name).is_some_and(|b| b.version != r.version)
                    && endpoints.contains_key(name)
            })
        });
        if changed {
            self.types[ResourceType::Endpoint.index()].force = true;
        }
        self.clusters_sent = Some(sent.clone());
    }

    /// After sending (or finding the proxy has) the resources `sent` of type `t`.
    fn note_sent(&mut self, core: &mut StreamCore, t: ResourceType, sent: &SetSource) {
        match t {
            ResourceType::Cluster => self.note_clusters_sent(core, sent),
            ResourceType::Listener | ResourceType::Route => core.note_routes_sent(),
            ResourceType::Endpoint | ResourceType::Secret => {}
        }
    }
}

impl Variant for Sotw {
    type Req = DiscoveryRequest;
    type Resp = DiscoveryResponse;
    const NAME: &'static str = "sotw";

    fn node(req: &DiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn type_url(req: &DiscoveryRequest) -> &str {
        &req.type_url
    }

    fn on_request(&mut self, core: &mut StreamCore, t: ResourceType, req: DiscoveryRequest) {
        let ts = &mut self.types[t.index()];
        match &ts.sent {
            // What the proxy says it has counts only before this stream sent it anything.
            None => {
                core.resumed |= !req.version_info.is_empty();
                ts.reported = Some(req.version_info.clone());
            }
            Some(sent) => {
                if sent.nonce != req.response_nonce {
                    // Answers a response that a newer one replaced; the next request will
                    // carry the newest nonce and the full subscription.
                    return;
                }
                if ts.pending {
                    ts.pending = false;
                    ts.rejected = req.error_detail.is_some();
                    let answered = ts.sent_from.take();
                    match &req.error_detail {
                        Some(err) => core.record_nack(t, sent.version, sent.at, &err.message),
                        None => {
                            ts.has = answered;
                            core.record_ack(t, sent.version, sent.at)
                        }
                    }
                }
            }
        }
        ts.subscribed = true;
        if !resubscribes(t, &req.resource_names, ts.named, ts.names.as_deref()) {
            let names = subscription(t, &req.resource_names, ts.named);
            if ts.names.as_deref() != names.as_ref() {
                ts.names = names.map(|n| core.shared.name_sets.share(n));
            }
        }
        ts.named |= ts.names.as_ref().is_some_and(|n| !n.is_empty());
    }

    fn flow(&self, _core: &StreamCore, t: ResourceType) -> Flow {
        let ts = &self.types[t.index()];
        Flow {
            subscribed: ts.subscribed,
            pending: ts.pending,
            rejected: ts.rejected,
        }
    }

    fn runs_current(&self, core: &StreamCore, t: ResourceType) -> Option<bool> {
        let ts = &self.types[t.index()];
        ts.subscribed.then(|| {
            !ts.pending
                && !ts.rejected
                && ts.sent.as_ref().is_some_and(|sent| {
                    sent.version == core.snapshot.of(t).sotw_version(ts.names.as_ref())
                })
        })
    }

    /// Sends the current resources of `t` (with those still in use, when `keep_removed`)
    /// unless the proxy has them.
    fn send(
        &mut self,
        core: &mut StreamCore,
        t: ResourceType,
        keep_removed: bool,
    ) -> Option<Encoded> {
        let snapshot = core.snapshot.clone();
        let retiring = keep_removed
            .then(|| super::with_retiring(core, t))
            .flatten()
            .map(Arc::new);
        let snap = retiring.as_deref().unwrap_or_else(|| snapshot.of(t));
        let first = self.types.iter().all(|ts| ts.sent.is_none());
        let ts = &mut self.types[t.index()];
        let version = snap.sotw_version(ts.names.as_ref());
        let set = ResourceSet {
            from: match &retiring {
                Some(own) => SetSource::Own(own.clone()),
                None => SetSource::Snapshot(snapshot.clone(), t),
            },
            names: ts.names.clone(),
            version: SetVersion::Response(version),
        };
        match &ts.sent {
            // Unchanged, or exactly the version the proxy rejected: nothing to send.
            Some(sent) if sent.version == version && !ts.force => return None,
            // A reconnecting proxy that already runs this config: no churn. The stream's first
            // response still goes out: Envoy resets its reconnect backoff only when a stream
            // receives something, and would otherwise wait longer after every restart.
            None if !first && ts.reported.as_deref() == Some(version.to_string().as_str()) => {
                ts.sent = Some(Sent {
                    version,
                    nonce: String::new(),
                    at: Instant::now(),
                });
                let from = set.from.clone();
                ts.has = Some(set.clone());
                core.record_already_has(t, version, set);
                self.note_sent(core, t, &from);
                return None;
            }
            _ => {}
        }
        // EDS is not a full-state type: Envoy takes a response that leaves assignments out as
        // leaving them as they are. So a change of endpoints sends only the assignments that
        // changed since what the proxy acknowledged, not all of them to every Envoy. After a
        // cluster changed, Envoy waits for its assignment again: then everything goes.
        let only = (t == ResourceType::Endpoint && !ts.force)
            .then(|| changed_since(ts.has.as_ref()?, snap, ts.names.as_ref()))
            .flatten()
            .filter(|changed| !changed.is_empty());
        ts.force = false;
        let nonce = core.next_nonce();
        let resp = response(t, snap, ts.names.as_ref(), only, nonce.clone());
        let from = set.from.clone();
        ts.sent_from = Some(set.clone());
        core.record_sent(t, version, &nonce, set);
        ts.sent = Some(Sent {
            version,
            nonce,
            at: Instant::now(),
        });
        ts.pending = true;
        self.note_sent(core, t, &from);
        Some(resp)
    }
}

/// Answers a unary fetch: the current resources of `t` for the requesting node.
pub(super) fn fetch(
    shared: &Shared,
    peer: Option<&Peer>,
    t: ResourceType,
    req: DiscoveryRequest,
) -> Result<DiscoveryResponse, Status> {
    let admitted = super::admit(shared, peer, req.node.as_ref())?;
    let zone = super::zone_of(admitted.node);
    // The snapshots the request was authorized in: a catalog published meanwhile may make its
    // `node.cluster` select another proxy.
    let snapshots = &admitted.snapshots;
    if !snapshots.loaded {
        return Err(Status::unavailable("no catalog loaded yet"));
    }
    let (snapshot, _) = snapshots.get(&admitted.asked, zone);
    let snap = snapshot.of(t);
    let names = subscription(t, &req.resource_names, false).map(Arc::new);
    let version = snap.sotw_version(names.as_ref());
    if req.version_info == version.to_string() {
        // Like a REST 304: the caller is up to date.
        return Err(Status::already_exists("the requested version is current"));
    }
    response(t, snap, names.as_ref(), None, String::new()).decode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_repeating_the_subscription_is_told_without_copying_it() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<String>>();
        let set = |n: &[&str]| {
            n.iter()
                .map(|s| s.to_string())
                .collect::<BTreeSet<String>>()
        };
        let e = ResourceType::Endpoint;
        let current = set(&["a", "b", "c"]);
        assert!(resubscribes(
            e,
            &names(&["a", "b", "c"]),
            true,
            Some(&current)
        ));
        // In any order.
        assert!(resubscribes(
            e,
            &names(&["c", "a", "b"]),
            true,
            Some(&current)
        ));
        // Another subscription: worked out in full.
        for other in [
            &["a", "b"][..],
            &["a", "b", "d"],
            &["a", "b", "c", "d"],
            &["a", "a", "b"],
            &["b", "a", "a"],
            &["*"],
        ] {
            assert!(
                !resubscribes(e, &names(other), true, Some(&current)),
                "{other:?}"
            );
        }
        // The wildcard again, and not.
        let l = ResourceType::Listener;
        assert!(resubscribes(l, &[], false, None));
        assert!(resubscribes(l, &names(&["*"]), true, None));
        assert!(!resubscribes(l, &names(&["web"]), true, None));
    }

    #[test]
    fn an_empty_secret_or_endpoint_request_is_no_wildcard() {
        for t in [
            ResourceType::Secret,
            ResourceType::Endpoint,
            ResourceType::Route,
        ] {
            assert_eq!(subscription(t, &[], false), Some(BTreeSet::new()), "{t:?}");
        }
        assert_eq!(subscription(ResourceType::Cluster, &[], false), None);
        let named = ["mesh/trust".to_string()];
        assert_eq!(
            subscription(ResourceType::Secret, &named, false),
            Some(BTreeSet::from(["mesh/trust".to_string()]))
        );
    }
}
