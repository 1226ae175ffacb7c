//! State-of-the-world streams: every response carries the full set of subscribed resources.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tonic::Status;

use super::nodes::{ResourceSet, SetSource, SetVersion};
use super::{Flow, Sent, Shared, StreamCore, Variant};
use crate::cache::{TypeSnapshot, Version};
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
}

/// The names a SotW request subscribes to; `None` is the wildcard. An empty list is the
/// wildcard only for LDS and CDS, and only until the proxy has named resources.
fn subscription(t: ResourceType, names: &[String], named: bool) -> Option<BTreeSet<String>> {
    if names.iter().any(|n| n == "*") || (names.is_empty() && t.wildcard_by_default() && !named) {
        None
    } else {
        Some(names.iter().cloned().collect())
    }
}

/// The response carrying `snap`'s resources named in `names` (all for `None`); `version` is
/// `snap.version_for(names)`, which the caller has already computed.
fn response(
    t: ResourceType,
    snap: &TypeSnapshot,
    names: Option<&BTreeSet<String>>,
    version: Version,
    nonce: String,
) -> DiscoveryResponse {
    let resources = match names {
        None => snap
            .resources
            .iter()
            .filter(|(n, _)| snap.is_sent(n, None))
            .map(|(_, r)| r.body.clone())
            .collect(),
        Some(names) => names
            .iter()
            .filter_map(|n| snap.resources.get(n))
            .map(|r| r.body.clone())
            .collect(),
    };
    DiscoveryResponse {
        version_info: version.to_string(),
        resources,
        type_url: t.type_url().to_string(),
        nonce,
        ..Default::default()
    }
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
                    match &req.error_detail {
                        Some(err) => core.record_nack(t, sent.version, sent.at, &err.message),
                        None => core.record_ack(t, sent.version, sent.at),
                    }
                }
            }
        }
        ts.subscribed = true;
        let names = subscription(t, &req.resource_names, ts.named);
        if ts.names.as_deref() != names.as_ref() {
            ts.names = names.map(|n| core.shared.name_sets.share(n));
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
                    sent.version == core.snapshot.of(t).version_for(ts.names.as_deref())
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
    ) -> Option<DiscoveryResponse> {
        let snapshot = core.snapshot.clone();
        let retiring = keep_removed
            .then(|| super::with_retiring(core, t))
            .flatten()
            .map(Arc::new);
        let snap = retiring.as_deref().unwrap_or_else(|| snapshot.of(t));
        let first = self.types.iter().all(|ts| ts.sent.is_none());
        let ts = &mut self.types[t.index()];
        let version = snap.version_for(ts.names.as_deref());
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
                core.record_already_has(t, version, set);
                self.note_sent(core, t, &from);
                return None;
            }
            _ => {}
        }
        ts.force = false;
        let nonce = core.next_nonce();
        let resp = response(t, snap, ts.names.as_deref(), version, nonce.clone());
        let from = set.from.clone();
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
    let names = subscription(t, &req.resource_names, false);
    let version = snap.version_for(names.as_ref());
    if req.version_info == version.to_string() {
        // Like a REST 304: the caller is up to date.
        return Err(Status::already_exists("the requested version is current"));
    }
    Ok(response(t, snap, names.as_ref(), version, String::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
