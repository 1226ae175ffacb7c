//! The xDS gRPC services: ADS (state of the world and delta), the standalone CDS, EDS, LDS and
//! RDS services, and CSDS (what each connected Envoy was sent and answered), all on one port.
//!
//! Each stream runs in its own task. It learns its proxy from `node.cluster` on the first request,
//! then answers requests and follows snapshot changes. At most one response per type is
//! unacknowledged at a time: a change that arrives meanwhile is sent once the ACK (or NACK) comes,
//! which debounces bursts per stream and keeps a rejected version from being re-sent in a loop.

mod csds;
mod delta;
pub mod nodes;
mod sotw;
mod wire;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_server::{
    ClusterDiscoveryService, ClusterDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::endpoint::v3::endpoint_discovery_service_server::{
    EndpointDiscoveryService, EndpointDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::listener::v3::listener_discovery_service_server::{
    ListenerDiscoveryService, ListenerDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::route::v3::route_discovery_service_server::{
    RouteDiscoveryService, RouteDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_server::ClientStatusDiscoveryServiceServer;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::cache::{Attached, Cache, Role, Snapshot, Snapshots, TypeSnapshot, Version};
use crate::catalog::ProxyName;
use crate::identity::{Authorization, Refusal};
use crate::metrics::Metrics;
use crate::tls::Peer;
use crate::translate::ResourceType;
use nodes::{NodeGuard, Nodes, ResourceSet, SyncState};
use wire::Encoded;

/// What every stream shares.
#[derive(Clone)]
pub struct XdsServer {
    shared: Arc<Shared>,
}

struct Shared {
    cache: Cache,
    metrics: Metrics,
    nodes: Nodes,
    auth: Authorization,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
    name_sets: NameSets,
}

/// Subscribed name sets, shared by every stream that subscribes to the same names: the
/// thousands of Envoys of one proxy name the same hundreds of resources, and a stream's memory
/// must not grow with the config's size.
#[derive(Debug, Default)]
struct NameSets(
    std::sync::Mutex<std::collections::HashSet<Arc<std::collections::BTreeSet<String>>>>,
);

impl NameSets {
    /// The shared set equal to `names`.
    fn share(
        &self,
        names: std::collections::BTreeSet<String>,
    ) -> Arc<std::collections::BTreeSet<String>> {
        let mut sets = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = sets.get(&names) {
            return shared.clone();
        }
        // Sets no stream holds any more go whenever the count doubles: at most twice the live
        // ones are kept, at an amortised constant cost.
        if sets.len() >= 64 && sets.len().is_power_of_two() {
            sets.retain(|s| Arc::strong_count(s) > 1);
        }
        let shared = Arc::new(names);
        sets.insert(shared.clone());
        shared
    }
}

/// Caps on open streams (0: none).
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamLimits {
    /// Streams the server holds at once.
    pub max_streams: usize,
    /// Streams from one source address at once.
    pub max_streams_per_ip: usize,
}

/// Counts open streams against [`StreamLimits`].
#[derive(Debug, Default)]
struct Limits {
    caps: StreamLimits,
    open: std::sync::Mutex<(usize, std::collections::HashMap<std::net::IpAddr, usize>)>,
}

/// One stream counted in [`Limits`] while it lives.
struct Slot<'a> {
    limits: &'a Limits,
    ip: Option<std::net::IpAddr>,
}

impl Limits {
    /// Counts a new stream from `ip`, or says which cap it would exceed.
    fn admit(&self, ip: Option<std::net::IpAddr>) -> Result<(), &'static str> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if self.caps.max_streams > 0 && open.0 >= self.caps.max_streams {
            return Err("max_streams");
        }
        if let Some(ip) = ip {
            let n = open.1.get(&ip).copied().unwrap_or_default();
            if self.caps.max_streams_per_ip > 0 && n >= self.caps.max_streams_per_ip {
                return Err("max_streams_per_ip");
            }
            open.1.insert(ip, n + 1);
        }
        open.0 += 1;
        Ok(())
    }

    fn release(&self, ip: Option<std::net::IpAddr>) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(ip) = ip
            && let Some(n) = open.1.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&ip);
            }
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.limits.release(self.ip);
    }
}

impl XdsServer {
    /// A server over `cache`; streams end when `shutdown` turns true.
    pub fn new(
        cache: Cache,
        metrics: Metrics,
        nodes: Nodes,
        auth: Authorization,
        limits: StreamLimits,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                cache,
                metrics,
                nodes,
                auth,
                limits: Limits {
                    caps: limits,
                    open: Default::default(),
                },
                shutdown,
                name_sets: NameSets::default(),
            }),
        }
    }

    /// A router with ADS (see [`wire`]), the four standalone services and CSDS.
    pub fn router(&self) -> tonic::service::Routes {
        // Envoy's biggest responses (all clusters of a large catalog) exceed tonic's 4 MiB
        // default; its requests (names and versions) stay well under it, which bounds what one
        // client can make the server buffer.
        const MAX: usize = 64 * 1024 * 1024;
        const MAX_REQUEST: usize = 4 * 1024 * 1024;
        tonic::service::Routes::new(wire::Ads {
            server: self.clone(),
            max_request: MAX_REQUEST,
            max_response: MAX,
        })
        .add_service(
            ClusterDiscoveryServiceServer::new(self.clone()).max_encoding_message_size(MAX),
        )
        .add_service(
            EndpointDiscoveryServiceServer::new(self.clone()).max_encoding_message_size(MAX),
        )
        .add_service(
            ListenerDiscoveryServiceServer::new(self.clone()).max_encoding_message_size(MAX),
        )
        .add_service(RouteDiscoveryServiceServer::new(self.clone()).max_encoding_message_size(MAX))
        .add_service(
            ClientStatusDiscoveryServiceServer::new(self.clone())
                .max_decoding_message_size(MAX_REQUEST)
                .max_encoding_message_size(MAX),
        )
    }

    /// Starts the task of one stream that `requests` feeds; its responses come out of the
    /// returned channel, or the status says why the stream was refused.
    fn spawn<V: Variant>(
        &self,
        scope: Scope,
        peer: Option<Peer>,
        requests: Streaming<V::Req>,
    ) -> Result<mpsc::Receiver<Outgoing>, Status> {
        let ip = peer.as_ref().and_then(|p| p.remote).map(|a| a.ip());
        if let Err(limit) = self.shared.limits.admit(ip) {
            self.shared
                .metrics
                .limit_refusals
                .with_label_values(&[limit])
                .inc();
            tracing::warn!(peer = ?ip, limit, "xDS stream refused: too many open streams");
            return Err(Status::resource_exhausted(format!(
                "too many xDS streams ({limit}); try another replica or later"
            )));
        }
        let (tx, rx) = mpsc::channel(16);
        let mut core = StreamCore::new(self.shared.clone(), scope, V::NAME);
        core.peer = peer;
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let _slot = Slot {
                limits: &shared.limits,
                ip,
            };
            run::<V>(core, requests, tx).await;
        });
        Ok(rx)
    }

    /// A standalone service's stream, through tonic.
    fn spawn_standalone<V: Variant>(
        &self,
        t: ResourceType,
        request: Request<Streaming<V::Req>>,
    ) -> Result<Response<ResponseStream<V::Resp>>, Status> {
        let peer = request.extensions().get::<Peer>().cloned();
        let rx = self.spawn::<V>(Scope::Single(t), peer, request.into_inner())?;
        // tonic encodes these itself: the rare standalone streams pay a decode per response.
        let messages = ReceiverStream::new(rx).map(|r| r.map_err(|s| *s).and_then(|e| e.decode()));
        Ok(Response::new(Box::pin(messages)))
    }
}

/// What a stream's task hands to the wire: a response, or the status that ends the stream.
/// Both are boxed so that the slots of each stream's channel, which it allocates 32 at a time,
/// stay one pointer each (unboxed, 1.8 KiB per stream).
pub(crate) type Outgoing = Result<Box<Encoded>, Box<Status>>;

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Which resource types a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// All four (ADS).
    Aggregated,
    /// One type (a standalone service).
    Single(ResourceType),
}

impl Scope {
    fn service(self) -> &'static str {
        match self {
            Scope::Aggregated => "ads",
            Scope::Single(t) => t.short(),
        }
    }
}

/// A protocol variant: state of the world or delta.
pub(crate) trait Variant: Default + Send + 'static {
    type Req: prost::Message + Default + Send + 'static;
    /// The response message; streams send it encoded (see [`Encoded`]).
    type Resp: prost::Message + Default + Send + 'static;
    /// `sotw` or `delta`, for metrics and the admin pages.
    const NAME: &'static str;
    fn node(req: &Self::Req) -> Option<&Node>;
    fn type_url(req: &Self::Req) -> &str;
    /// Takes in one request for type `t` (subscriptions, ACK or NACK).
    fn on_request(&mut self, core: &mut StreamCore, t: ResourceType, req: Self::Req);
    /// Where type `t` stands on this stream, for [`gate`].
    fn flow(&self, core: &StreamCore, t: ResourceType) -> Flow;
    /// Whether the proxy runs the current snapshot's resources of `t`: `None` when it does not
    /// subscribe to them, `Some(false)` while they are unanswered or after it rejected them.
    fn runs_current(&self, core: &StreamCore, t: ResourceType) -> Option<bool>;
    /// The response for type `t`, if the proxy lacks something of the current snapshot; only
    /// called when [`gate`] opens. With `keep_removed`, resources the snapshot dropped stay
    /// with the proxy (break after make).
    fn send(
        &mut self,
        core: &mut StreamCore,
        t: ResourceType,
        keep_removed: bool,
    ) -> Option<Encoded>;
}

/// Where one resource type stands on one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Flow {
    /// The proxy asked for this type.
    pub subscribed: bool,
    /// A response of this type awaits its ACK or NACK.
    pub pending: bool,
    /// The proxy rejected the last response of this type.
    pub rejected: bool,
}

/// What the stream state says of the proxy as a whole, for [`gate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamView {
    /// ADS or one standalone type.
    pub scope: Scope,
    /// Whether there is something to serve: a catalog is loaded, and the role is one the server
    /// serves (or, for a proxy that connected with a config of its own, one it ever served).
    pub serving: bool,
    /// Whether the proxy runs the current snapshot's listeners and routes (see [`routes_current`]).
    pub routes_current: bool,
    /// Whether the proxy runs listeners or routes worth protecting: it connected with a config,
    /// or acknowledged some on this stream.
    pub has_routes: bool,
}

/// What a stream may send now for one resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Nothing: no catalog yet, not subscribed, or a response of this type is unanswered (one
    /// at a time, which also debounces bursts per stream).
    Closed,
    /// Listeners and routes wait while clusters or endpoints are unanswered, or rejected by a
    /// proxy that runs routes already (make before break: a route never points at a cluster
    /// the proxy has not built).
    HeldBack,
    /// The current resources may go out; with `keep_removed`, clusters and endpoints the
    /// snapshot dropped stay with the proxy until it runs routes that no longer use them
    /// (break after make).
    Open { keep_removed: bool },
}

/// The push-ordering rule of every stream: what may be sent now for type `t`, given where
/// each type stands. Everything about order, NACKs and reconnects is decided here.
pub(crate) fn gate(
    view: StreamView,
    t: ResourceType,
    flows: &[Flow; crate::translate::TYPES],
) -> Gate {
    let flow = flows[t.index()];
    if !view.serving || !flow.subscribed || flow.pending {
        return Gate::Closed;
    }
    let ads = view.scope == Scope::Aggregated;
    let clusters = [ResourceType::Cluster, ResourceType::Endpoint].map(|c| flows[c.index()]);
    match t {
        ResourceType::Listener | ResourceType::Route if ads => {
            let unanswered = clusters.iter().any(|f| f.pending);
            // A rejected cluster must not lose its predecessor to routes that moved to it; a
            // proxy that runs no routes yet has nothing to lose and gets what works.
            let rejected = view.has_routes && clusters.iter().any(|f| f.rejected);
            if unanswered || rejected {
                Gate::HeldBack
            } else {
                Gate::Open {
                    keep_removed: false,
                }
            }
        }
        ResourceType::Cluster | ResourceType::Endpoint => Gate::Open {
            keep_removed: ads && !view.routes_current,
        },
        ResourceType::Listener | ResourceType::Route => Gate::Open {
            keep_removed: false,
        },
        // Secrets are answered as soon as asked: listeners and clusters that name them wait
        // for them (warming), and nothing waits on secrets in turn.
        ResourceType::Secret => Gate::Open {
            keep_removed: false,
        },
    }
}

/// What a stream sends now, in push order (after a request, or after a new snapshot).
fn push<V: Variant>(variant: &mut V, core: &mut StreamCore) -> Vec<Encoded> {
    let mut out = Vec::new();
    for t in ResourceType::ALL {
        // Again before each type: what an earlier type sent (or found the proxy has) counts.
        core.note_routes_state(variant);
        let flows = ResourceType::ALL.map(|t| variant.flow(core, t));
        if let Gate::Open { keep_removed } = gate(core.view(), t, &flows)
            && let Some(resp) = variant.send(core, t, keep_removed)
        {
            out.push(resp);
        }
    }
    core.note_routes_state(variant);
    out
}

/// Whether the proxy runs the current snapshot's listeners and routes: only then may clusters
/// and endpoints the snapshot dropped leave it (see [`Gate::Open`]). Delta holds back the
/// removals; SotW, which has no removals but what a response leaves out, keeps sending those
/// resources (see [`with_retiring`]).
fn routes_current<V: Variant>(variant: &V, core: &StreamCore) -> bool {
    let has_routes = !core.snapshot.of(ResourceType::Route).resources.is_empty();
    match (
        variant.runs_current(core, ResourceType::Listener),
        variant.runs_current(core, ResourceType::Route),
    ) {
        (Some(false), _) | (_, Some(false)) => false,
        // A proxy that connected with a config runs listeners and routes this stream has not
        // confirmed yet; a new one runs none, so nothing it has can point at a removed cluster.
        (None, _) => !core.resumed,
        (Some(true), None) => !(core.resumed && has_routes),
        (Some(true), Some(true)) => true,
    }
}

/// For SotW: the current resources of `t` plus those that listeners and routes the proxy runs,
/// or was sent and has not acknowledged, may still use; `None` when there are none such.
fn with_retiring(core: &StreamCore, t: ResourceType) -> Option<TypeSnapshot> {
    let now = core.snapshot.of(t);
    let current = &now.resources;
    let sources: Vec<&Arc<Snapshot>> = std::iter::once(&core.routes_from)
        .chain(&core.routes_in_flight)
        .collect();
    // Only a name that differs between the two can be missing now: those are worked out once
    // per pair of snapshots for every stream (looking up each of the older one's names took
    // every stream's wake-up a lookup per resource).
    let missing = |s: &&Arc<Snapshot>| {
        now.changed_names(s.of(t))
            .iter()
            .any(|name| !current.contains_key(name))
    };
    if !sources.iter().any(missing) {
        return None;
    }
    let mut resources = current.clone();
    // The newest first: a resource that changed between them is kept as last sent.
    for s in sources.iter().rev() {
        for (name, r) in &s.of(t).resources {
            resources.entry(name.clone()).or_insert_with(|| r.clone());
        }
    }
    Some(TypeSnapshot::new(resources))
}

/// How many snapshots of unacknowledged listeners and routes a stream remembers.
const IN_FLIGHT: usize = 4;

/// How much of a NACK's error text is logged and kept for the admin pages.
const MAX_NACK_TEXT: usize = 4096;

/// `text` cut to at most `max` bytes at a character boundary, marked when cut.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes cut)", &text[..end], text.len() - end)
}

fn now_secs() -> u64 {
    common::duration::since_epoch().as_secs()
}

/// Longest `node.id` accepted: it is kept per stream and shown on the admin pages.
const MAX_NODE_ID: usize = 1024;

/// Per-stream state both variants use: who the proxy is, its snapshot, bookkeeping.
pub(crate) struct StreamCore {
    shared: Arc<Shared>,
    scope: Scope,
    variant: &'static str,
    proxy: Option<ProxyName>,
    /// The proxy `proxy` selected when first resolved with a catalog loaded, which the stream
    /// was authorized for: it is served that proxy's config only (see [`StreamCore::refresh`]).
    pinned: Option<ProxyName>,
    /// The proxy's `node.locality.zone`, which zone-aware upstreams prefer.
    zone: Option<String>,
    guard: Option<NodeGuard>,
    /// Counts the stream against its proxy, and wakes it (see [`Attached::wake`]).
    attached: Option<Attached>,
    snapshot: Arc<Snapshot>,
    /// The snapshot whose listeners and routes the proxy runs (see [`routes_current`]).
    routes_from: Arc<Snapshot>,
    /// Snapshots whose listeners or routes were sent since then (at most [`IN_FLIGHT`]).
    routes_in_flight: Vec<Arc<Snapshot>>,
    /// Whether the proxy runs the current snapshot's listeners and routes.
    routes_current: bool,
    /// Whether the proxy acknowledged listeners or routes on this stream.
    routes_acked: bool,
    /// Whether the proxy connected with a config of its own (a reconnect).
    resumed: bool,
    loaded: bool,
    role: Role,
    nonce: u64,
    opened: Instant,
    /// Who is on the other end (TLS client certificate), when known.
    peer: Option<Peer>,
}

impl StreamCore {
    fn new(shared: Arc<Shared>, scope: Scope, variant: &'static str) -> Self {
        Self {
            shared,
            scope,
            variant,
            proxy: None,
            pinned: None,
            zone: None,
            guard: None,
            attached: None,
            snapshot: Arc::new(Snapshot::default()),
            routes_from: Arc::new(Snapshot::default()),
            routes_in_flight: Vec::new(),
            routes_current: true,
            routes_acked: false,
            resumed: false,
            loaded: false,
            role: Role::Unknown,
            nonce: 0,
            opened: Instant::now(),
            peer: None,
        }
    }

    /// Takes the proxy from the first request's node.
    fn identify(&mut self, node: Option<&Node>) -> Result<(), Status> {
        let admitted = admit(&self.shared, self.peer.as_ref(), node)?;
        let (node, proxy) = (admitted.node, admitted.asked);
        self.attached = Some(self.shared.cache.attach(&proxy));
        // Status pages, CSDS and `xds-server status` name the proxy an alias selects.
        self.guard = Some(self.shared.nodes.register(
            node,
            &admitted.resolved,
            self.scope.service(),
            self.variant,
        ));
        tracing::info!(
            node = ?node.id,
            proxy = ?proxy.0,
            service = self.scope.service(),
            variant = self.variant,
            "xDS stream opened"
        );
        self.proxy = Some(proxy);
        self.zone = zone_of(node).map(str::to_string);
        // Pins the proxy `node.cluster` selects in the snapshots read now, after `attach`
        // (authorized again there): one published since `admit` read them wakes the stream,
        // and an alias moved meanwhile is followed, not taken for an orphan.
        self.refresh()?;
        Ok(())
    }

    /// Reads the newest snapshot of this stream's proxy; false when it is the one the stream
    /// already has (a false alarm: a publish that changed nothing it selects), so nothing
    /// needs comparing.
    ///
    /// The stream is pinned to the proxy its `node.cluster` selected when it was authorized
    /// (or, for one that connected before any catalog, when the first catalog came: that
    /// resolution is authorized then, and a refusal ends the stream). When a catalog edit makes
    /// `node.cluster` select another proxy (an alias moved or removed), the stream is an
    /// orphan: it keeps the last config it was served until it disconnects, and its Envoy is
    /// authorized for the new proxy when it connects again.
    fn refresh(&mut self) -> Result<bool, Status> {
        let Some(proxy) = &self.proxy else {
            return Ok(false);
        };
        if let Some(attached) = &mut self.attached {
            attached.wake.mark_unchanged();
        }
        let snapshots = self.shared.cache.current();
        let resolved = snapshots.resolve(proxy);
        if snapshots.loaded && self.pinned.is_none() {
            let id = self.guard.as_ref().map(|g| g.id()).unwrap_or_default();
            authorize(&self.shared, self.peer.as_ref(), &id, proxy, Some(resolved))?;
            if let Some(g) = &self.guard {
                g.set_proxy(resolved);
            }
            self.pinned = Some(resolved.clone());
        }
        let (snapshot, role) = match &self.pinned {
            Some(pinned) if pinned != resolved => {
                if self.role != Role::Orphaned {
                    tracing::warn!(
                        proxy = ?proxy.0,
                        was = ?pinned.0,
                        now = ?resolved.0,
                        "node.cluster selects another proxy than the one this stream was admitted for; it keeps its last config until it reconnects"
                    );
                }
                (self.snapshot.clone(), Role::Orphaned)
            }
            _ => snapshots.get(proxy, self.zone.as_deref()),
        };
        if Arc::ptr_eq(&snapshot, &self.snapshot)
            && snapshots.loaded == self.loaded
            && role == self.role
        {
            return Ok(false);
        }
        if snapshots.loaded && role == Role::Unknown && (self.role != Role::Unknown || !self.loaded)
        {
            tracing::warn!(
                proxy = ?proxy.0,
                resumed = self.resumed,
                "node.cluster names no proxy of the catalog; serving an empty config (nothing, to a proxy that reconnected with a config of its own)"
            );
            self.shared.metrics.unknown_proxy_streams.inc();
        }
        self.loaded = snapshots.loaded;
        self.role = role;
        self.snapshot = snapshot;
        if let Some(g) = &self.guard {
            g.set_role(role);
        }
        Ok(true)
    }

    /// The stream as [`gate`] sees it.
    fn view(&self) -> StreamView {
        StreamView {
            scope: self.scope,
            // A proxy of an unknown role that connected with a config keeps that config: the
            // empty one would wipe it (a role removed while the server was restarting).
            serving: self.loaded && !(self.role == Role::Unknown && self.resumed),
            routes_current: self.routes_current,
            has_routes: self.resumed || self.routes_acked,
        }
    }

    /// Follows whether the proxy runs the current listeners and routes; once it does, what it
    /// was sent before no longer needs keeping.
    fn note_routes_state<V: Variant>(&mut self, variant: &V) {
        if self.scope != Scope::Aggregated {
            return;
        }
        self.routes_current = routes_current(variant, self);
        if self.routes_current {
            self.routes_from = self.snapshot.clone();
            self.routes_in_flight.clear();
        }
    }

    /// Listeners or routes of the current snapshot were sent, or found to be what the proxy
    /// has: until it runs them, the clusters they use must stay.
    fn note_routes_sent(&mut self) {
        if self
            .routes_in_flight
            .last()
            .is_some_and(|s| Arc::ptr_eq(s, &self.snapshot))
        {
            return;
        }
        if self.routes_in_flight.len() == IN_FLIGHT {
            self.routes_in_flight.remove(0);
        }
        self.routes_in_flight.push(self.snapshot.clone());
    }

    fn next_nonce(&mut self) -> String {
        self.nonce += 1;
        self.nonce.to_string()
    }

    fn record_sent(&self, t: ResourceType, version: Version, nonce: &str, set: ResourceSet) {
        self.shared
            .metrics
            .pushes
            .with_label_values(&[t.short(), self.variant])
            .inc();
        if let Some(g) = &self.guard {
            g.update(t, |s| {
                s.state = SyncState::Stale;
                s.sent = Some(version.to_string());
                s.sent_nonce = Some(nonce.to_string());
                s.sent_at = Some(now_secs());
                s.sent_set = Some(set);
            });
        }
    }

    /// A reconnecting proxy already has `version`: shown as sent and ACKed, but nothing was pushed.
    fn record_already_has(&self, t: ResourceType, version: Version, set: ResourceSet) {
        if let Some(g) = &self.guard {
            g.update(t, |s| {
                let now = Some(now_secs());
                s.state = SyncState::Synced;
                s.sent = Some(version.to_string());
                s.sent_at = now;
                s.acked = Some(version.to_string());
                s.acked_at = now;
                s.acked_set = Some(set.clone());
                s.sent_set = Some(set);
            });
        }
    }

    fn record_ack(&mut self, t: ResourceType, version: Version, sent_at: Instant) {
        if matches!(t, ResourceType::Listener | ResourceType::Route) {
            self.routes_acked = true;
        }
        let m = &self.shared.metrics;
        m.acks.with_label_values(&[t.short()]).inc();
        m.push_to_ack
            .with_label_values(&[t.short()])
            .observe(sent_at.elapsed().as_secs_f64());
        if let Some(g) = &self.guard {
            g.update(t, |s| {
                s.state = SyncState::Synced;
                s.acked = Some(version.to_string());
                s.acked_at = Some(now_secs());
                s.acked_set = s
                    .sent_set
                    .clone()
                    .map(|sent| sent.taken_after(s.acked_set.as_ref()));
            });
        }
    }

    /// Delta: what the proxy runs is what the snapshot holds again (a rejected change rolled
    /// back, or replaced by one it took), with nothing pending: SYNCED, as `set`.
    fn record_resolved(&self, t: ResourceType, version: Version, set: ResourceSet) {
        if let Some(g) = &self.guard {
            g.update(t, |s| {
                s.state = SyncState::Synced;
                s.acked = Some(version.to_string());
                s.acked_at = Some(now_secs());
                s.acked_set = Some(set);
            });
        }
    }

    /// Delta: an ACK of other resources while one the proxy rejected is still the snapshot's:
    /// still NACKED (the text of the rejection stays).
    fn record_still_rejected(&self, t: ResourceType) {
        if let Some(g) = &self.guard {
            g.update(t, |s| s.state = SyncState::Nacked);
        }
    }

    fn record_nack(&self, t: ResourceType, version: Version, sent_at: Instant, message: &str) {
        // Envoy's text can quote a whole resource: keep what a person reads.
        let message = truncate(message, MAX_NACK_TEXT);
        let message = message.as_str();
        let m = &self.shared.metrics;
        m.nacks.with_label_values(&[t.short()]).inc();
        m.push_to_ack
            .with_label_values(&[t.short()])
            .observe(sent_at.elapsed().as_secs_f64());
        tracing::warn!(
            proxy = %self.proxy.as_ref().map(|p| p.0.as_str()).unwrap_or(""),
            r#type = t.short(),
            version = %version,
            error = message,
            "proxy rejected the config (NACK); it keeps its previous version, and this one is not re-sent"
        );
        if let Some(g) = &self.guard {
            g.update(t, |s| {
                s.state = SyncState::Nacked;
                s.nacked = Some(version.to_string());
                s.last_nack = Some(message.to_string());
                s.nacked_at = Some(now_secs());
            });
        }
    }
}

impl Drop for StreamCore {
    fn drop(&mut self) {
        if let Some(proxy) = &self.proxy {
            tracing::info!(
                node = ?self.guard.as_ref().map(|g| g.id()).unwrap_or_default(),
                proxy = ?proxy.0,
                service = self.scope.service(),
                variant = self.variant,
                lived_s = self.opened.elapsed().as_secs_f64(),
                "xDS stream closed"
            );
        }
    }
}

/// The zone an Envoy says it runs in, if any.
fn zone_of(node: &Node) -> Option<&str> {
    node.locality
        .as_ref()
        .map(|l| l.zone.as_str())
        .filter(|z| !z.is_empty())
}

/// A request's node, checked, and the proxy it was authorized for.
struct Admitted<'n> {
    node: &'n Node,
    /// `node.cluster`: the proxy or one of its aliases.
    asked: ProxyName,
    /// The proxy `asked` selects in `snapshots`, which the certificate (with
    /// `--require-identity`) names.
    resolved: ProxyName,
    /// The snapshots the resolution was made in: what a fetch answers from.
    snapshots: Arc<Snapshots>,
}

/// Who a request says it is, checked: a node with a proxy name of sane length, whose client
/// certificate (with `--require-identity`) names the proxy it selects. Streams and fetches alike.
fn admit<'n>(
    shared: &Shared,
    peer: Option<&Peer>,
    node: Option<&'n Node>,
) -> Result<Admitted<'n>, Status> {
    let node =
        node.ok_or_else(|| Status::invalid_argument("the first request must carry a node"))?;
    if node.cluster.is_empty() {
        return Err(Status::invalid_argument(
            "node.cluster is empty: it must name the proxy (as in the catalog's `proxies`)",
        ));
    }
    if node.id.len() > MAX_NODE_ID || node.cluster.len() > MAX_NODE_ID {
        return Err(Status::invalid_argument(format!(
            "node.id and node.cluster may be at most {MAX_NODE_ID} bytes long"
        )));
    }
    let asked = ProxyName(node.cluster.clone());
    // An alias speaks for the proxy it selects: the certificate must name that proxy.
    let snapshots = shared.cache.current();
    let resolved = snapshots.resolve(&asked).clone();
    // Before the first catalog, aliases are unknown: the certificate is required now, and
    // checked against the proxy once the catalog says which one `node.cluster` selects
    // (nothing is served before).
    let proxy = snapshots.loaded.then_some(&resolved);
    authorize(shared, peer, &node.id, &asked, proxy)?;
    Ok(Admitted {
        node,
        asked,
        resolved,
        snapshots,
    })
}

/// Whether the peer may be served `proxy`'s config (`None`: any proxy, for now); a refusal is
/// counted and logged.
fn authorize(
    shared: &Shared,
    peer: Option<&Peer>,
    node_id: &str,
    asked: &ProxyName,
    proxy: Option<&ProxyName>,
) -> Result<(), Status> {
    let refusal = match shared.auth.check(peer, proxy.unwrap_or(asked)) {
        Ok(()) => return Ok(()),
        Err(Refusal::WrongProxy { .. }) if proxy.is_none() => return Ok(()),
        Err(refusal) => refusal,
    };
    let proxy = proxy.unwrap_or(asked);
    shared
        .metrics
        .identity_refusals
        .with_label_values(&[refusal.reason()])
        .inc();
    tracing::warn!(
        node = ?node_id,
        node_cluster = ?asked.0,
        proxy = ?proxy.0,
        peer = ?peer.and_then(|p| p.remote),
        error = %refusal,
        "xDS request refused"
    );
    Err(match refusal {
        Refusal::NoCertificate => Status::unauthenticated(refusal.to_string()),
        Refusal::WrongProxy { .. } => Status::permission_denied(refusal.to_string()),
    })
}

/// A response that was sent and not yet answered.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub version: Version,
    pub nonce: String,
    pub at: Instant,
}

/// Counts a stream in the `xds_streams` gauge while it lives.
struct StreamGauge(prometheus::IntGauge);

impl Drop for StreamGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn run<V: Variant>(
    mut core: StreamCore,
    mut requests: Streaming<V::Req>,
    tx: mpsc::Sender<Outgoing>,
) {
    let gauge = core
        .shared
        .metrics
        .streams
        .with_label_values(&[core.scope.service(), V::NAME]);
    gauge.inc();
    let _gauge = StreamGauge(gauge);
    let mut shutdown = core.shared.shutdown.clone();
    let mut variant = V::default();
    loop {
        let out: Vec<Encoded> = tokio::select! {
            _ = async { shutdown.wait_for(|stop| *stop).await.map(|_| ()) } => break,
            msg = requests.message() => match msg {
                Ok(Some(req)) => match on_request(&mut variant, &mut core, req) {
                    Ok(out) => out,
                    Err(status) => {
                        let _ = tx.send(Err(Box::new(status))).await;
                        break;
                    }
                },
                Ok(None) => break,
                Err(status) => {
                    // A request too big to decode, say: tell the client why.
                    tracing::debug!(%status, "stream ended with an error");
                    let _ = tx.send(Err(Box::new(status))).await;
                    break;
                }
            },
            changed = woken(core.attached.as_mut()) => {
                if changed.is_err() {
                    break;
                }
                match on_snapshot(&mut variant, &mut core) {
                    Ok(out) => out,
                    Err(status) => {
                        let _ = tx.send(Err(Box::new(status))).await;
                        break;
                    }
                }
            }
        };
        for resp in out {
            // A proxy that stops reading must not keep this stream past shutdown.
            tokio::select! {
                sent = tx.send(Ok(Box::new(resp))) => if sent.is_err() { return },
                _ = async { shutdown.wait_for(|stop| *stop).await.map(|_| ()) } => return,
            }
        }
    }
}

/// Resolves when a publish may have changed the stream's snapshot (never before the proxy is
/// known); an error when the cache is gone.
async fn woken(attached: Option<&mut Attached>) -> Result<(), watch::error::RecvError> {
    match attached {
        Some(attached) => attached.wake.changed().await,
        None => std::future::pending().await,
    }
}

/// What a stream sends after a request; an error ends the stream.
fn on_request<V: Variant>(
    variant: &mut V,
    core: &mut StreamCore,
    req: V::Req,
) -> Result<Vec<Encoded>, Status> {
    if core.proxy.is_none() {
        core.identify(V::node(&req))?;
    }
    let url = V::type_url(&req);
    let t = match (ResourceType::from_type_url(url), core.scope) {
        (Some(t), Scope::Aggregated) => t,
        (Some(t), Scope::Single(s)) if t == s => t,
        (None, Scope::Single(s)) if url.is_empty() => s,
        _ => {
            // e.g. secrets (SDS): not ours to serve; Envoy's own timeout applies.
            tracing::debug!(
                type_url = url,
                "ignoring a request for a type this server does not serve"
            );
            return Ok(Vec::new());
        }
    };
    // Answer from the newest snapshot, not one a pending change replaces.
    if core
        .attached
        .as_ref()
        .is_some_and(|a| a.wake.has_changed().unwrap_or(false))
    {
        core.refresh()?;
    }
    variant.on_request(core, t, req);
    Ok(push(variant, core))
}

/// What a stream sends after a publish; an error ends the stream.
fn on_snapshot<V: Variant>(variant: &mut V, core: &mut StreamCore) -> Result<Vec<Encoded>, Status> {
    // Woken when the proxy may have changed; false alarms (an alias's proxy) are cheap.
    Ok(if core.refresh()? {
        push(variant, core)
    } else {
        Vec::new()
    })
}

macro_rules! standalone {
    ($trait:ident, $t:expr, $stream:ident, $stream_fn:ident, $delta:ident, $delta_fn:ident, $fetch_fn:ident) => {
        #[tonic::async_trait]
        impl $trait for XdsServer {
            type $stream = ResponseStream<DiscoveryResponse>;
            type $delta = ResponseStream<DeltaDiscoveryResponse>;

            async fn $stream_fn(
                &self,
                request: Request<Streaming<DiscoveryRequest>>,
            ) -> Result<Response<Self::$stream>, Status> {
                self.spawn_standalone::<sotw::Sotw>($t, request)
            }

            async fn $delta_fn(
                &self,
                request: Request<Streaming<DeltaDiscoveryRequest>>,
            ) -> Result<Response<Self::$delta>, Status> {
                self.spawn_standalone::<delta::Delta>($t, request)
            }

            async fn $fetch_fn(
                &self,
                request: Request<DiscoveryRequest>,
            ) -> Result<Response<DiscoveryResponse>, Status> {
                let peer = request.extensions().get::<Peer>().cloned();
                sotw::fetch(&self.shared, peer.as_ref(), $t, request.into_inner())
                    .map(Response::new)
            }
        }
    };
}

standalone!(
    ClusterDiscoveryService,
    ResourceType::Cluster,
    StreamClustersStream,
    stream_clusters,
    DeltaClustersStream,
    delta_clusters,
    fetch_clusters
);
standalone!(
    EndpointDiscoveryService,
    ResourceType::Endpoint,
    StreamEndpointsStream,
    stream_endpoints,
    DeltaEndpointsStream,
    delta_endpoints,
    fetch_endpoints
);
standalone!(
    ListenerDiscoveryService,
    ResourceType::Listener,
    StreamListenersStream,
    stream_listeners,
    DeltaListenersStream,
    delta_listeners,
    fetch_listeners
);
standalone!(
    RouteDiscoveryService,
    ResourceType::Route,
    StreamRoutesStream,
    stream_routes,
    DeltaRoutesStream,
    delta_routes,
    fetch_routes
);

#[cfg(test)]
mod tests;
