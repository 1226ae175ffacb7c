//! The push-ordering rule and the two variants, driven in process with requests as Envoy sends
//! them and snapshots as the server publishes them: no network, no Envoy.

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::sync::watch;

use super::delta::Delta;
use super::sotw::Sotw;
use super::*;
use crate::catalog::EndpointMap;
use crate::catalog::{self, Endpoint, LoadedCatalog, UpstreamName};

use ResourceType::{Cluster as Cds, Endpoint as Eds, Listener as Lds, Route as Rds};

/// [`super::on_request`], with the responses decoded as the proxy reads them.
fn on_request<V: Variant>(
    variant: &mut V,
    core: &mut StreamCore,
    req: V::Req,
) -> Result<Vec<V::Resp>, Status> {
    super::on_request(variant, core, req).map(|out| decoded::<V>(&out))
}

/// [`super::on_snapshot`], with the responses decoded as the proxy reads them.
fn on_snapshot<V: Variant>(variant: &mut V, core: &mut StreamCore) -> Result<Vec<V::Resp>, Status> {
    super::on_snapshot(variant, core).map(|out| decoded::<V>(&out))
}

fn decoded<V: Variant>(out: &[Encoded]) -> Vec<V::Resp> {
    out.iter()
        .map(|e| e.decode().expect("a response the proxy can read"))
        .collect()
}

// ---- the rule itself ----

const ADS_VIEW: StreamView = StreamView {
    scope: Scope::Aggregated,
    serving: true,
    routes_current: true,
    has_routes: true,
};

fn flows(set: &[(ResourceType, Flow)]) -> [Flow; crate::translate::TYPES] {
    let mut out = [Flow {
        subscribed: true,
        ..Flow::default()
    }; crate::translate::TYPES];
    for (t, f) in set {
        out[t.index()] = *f;
    }
    out
}

const PENDING: Flow = Flow {
    subscribed: true,
    pending: true,
    rejected: false,
};
const REJECTED: Flow = Flow {
    subscribed: true,
    pending: false,
    rejected: true,
};
const OPEN: Gate = Gate::Open {
    keep_removed: false,
};

#[test]
fn nothing_goes_out_before_a_catalog_unsubscribed_or_while_unanswered() {
    let not_serving = StreamView {
        serving: false,
        ..ADS_VIEW
    };
    assert_eq!(gate(not_serving, Cds, &flows(&[])), Gate::Closed);
    let unsubscribed = flows(&[(Rds, Flow::default())]);
    assert_eq!(gate(ADS_VIEW, Rds, &unsubscribed), Gate::Closed);
    assert_eq!(gate(ADS_VIEW, Cds, &flows(&[(Cds, PENDING)])), Gate::Closed);
    assert_eq!(gate(ADS_VIEW, Cds, &flows(&[])), OPEN);
}

#[test]
fn listeners_and_routes_wait_for_clusters_and_endpoints_on_ads_only() {
    for t in [Cds, Eds] {
        let f = flows(&[(t, PENDING)]);
        assert_eq!(gate(ADS_VIEW, Lds, &f), Gate::HeldBack);
        assert_eq!(gate(ADS_VIEW, Rds, &f), Gate::HeldBack);
        let single = StreamView {
            scope: Scope::Single(Rds),
            ..ADS_VIEW
        };
        assert_eq!(gate(single, Rds, &f), OPEN);
    }
}

#[test]
fn a_rejected_cluster_holds_routes_back_only_for_a_proxy_that_runs_routes() {
    let f = flows(&[(Cds, REJECTED)]);
    assert_eq!(gate(ADS_VIEW, Rds, &f), Gate::HeldBack);
    assert_eq!(
        gate(ADS_VIEW, Lds, &flows(&[(Eds, REJECTED)])),
        Gate::HeldBack
    );
    // Clusters themselves may go out again (a fixed catalog).
    assert_eq!(gate(ADS_VIEW, Cds, &f), OPEN);
    let fresh = StreamView {
        has_routes: false,
        ..ADS_VIEW
    };
    assert_eq!(gate(fresh, Rds, &f), OPEN);
}

#[test]
fn removed_clusters_stay_until_the_proxy_runs_the_current_routes() {
    let behind = StreamView {
        routes_current: false,
        ..ADS_VIEW
    };
    let keep = Gate::Open { keep_removed: true };
    assert_eq!(gate(behind, Cds, &flows(&[])), keep);
    assert_eq!(gate(behind, Eds, &flows(&[])), keep);
    assert_eq!(gate(behind, Rds, &flows(&[])), OPEN);
    let single = StreamView {
        scope: Scope::Single(Cds),
        ..behind
    };
    assert_eq!(gate(single, Cds, &flows(&[])), OPEN);
}

// ---- streams driven with requests and snapshots ----

/// The edge proxy routes everything to upstream `to`, the only one in the catalog.
fn catalog(to: &str) -> String {
    format!(
        r#"
version: 1
proxies:
  edge:
    listeners:
      - {{ name: web, port: 8080, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: {to} }} ] }}
upstreams:
  {to}: {{ protocol: http1, endpoints: {{ static: ["127.0.0.1:1001"] }} }}
"#
    )
}

const NO_PROXIES: &str = "version: 1\n";

/// A server's shared state without the network.
struct Plane {
    shared: Arc<Shared>,
    _stop: watch::Sender<bool>,
}

impl Plane {
    fn new() -> Plane {
        let (stop, shutdown) = watch::channel(false);
        Plane {
            shared: Arc::new(Shared {
                cache: Cache::new(),
                metrics: Metrics::new(),
                nodes: Nodes::default(),
                auth: Authorization::default(),
                limits: Limits::default(),
                shutdown,
                name_sets: NameSets::default(),
            }),
            _stop: stop,
        }
    }

    /// Publishes the snapshots of a catalog, with its static endpoints.
    fn publish(&self, text: &str) {
        let catalog = catalog::parse("test.yaml", text).expect("a valid test catalog");
        let mut endpoints = EndpointMap::new();
        for (name, u) in &catalog.upstreams {
            if let Some(list) = &u.endpoints.static_ {
                let eps: Vec<Endpoint> = list.iter().map(|e| e.endpoint().unwrap()).collect();
                endpoints.insert(UpstreamName(name.0.clone()), Arc::new(eps));
            }
        }
        let loaded = LoadedCatalog {
            catalog,
            base_dir: ".".into(),
        };
        self.shared.cache.publish(
            crate::serve::build_all(&loaded, &endpoints, &Default::default()),
            crate::serve::aliases(&loaded.catalog),
        );
    }

    fn core(&self, variant: &'static str) -> StreamCore {
        StreamCore::new(self.shared.clone(), Scope::Aggregated, variant)
    }

    fn nodes(&self) -> Vec<nodes::NodeStatus> {
        self.shared.nodes.list()
    }
}

fn node() -> Option<Node> {
    Some(Node {
        id: "edge-1".into(),
        cluster: "edge".into(),
        ..Default::default()
    })
}

fn cluster_names(resources: &[Any]) -> Vec<String> {
    resources
        .iter()
        .map(|any| Cluster::decode(any.value.as_slice()).unwrap().name)
        .collect()
}

fn route_targets(resources: &[Any]) -> Vec<String> {
    let mut out = Vec::new();
    for any in resources {
        let rc = RouteConfiguration::decode(any.value.as_slice()).unwrap();
        for vh in rc.virtual_hosts {
            for r in vh.routes {
                if let Some(Action::Route(a)) = r.action
                    && let Some(ClusterSpecifier::Cluster(c)) = a.cluster_specifier
                {
                    out.push(c);
                }
            }
        }
    }
    out
}

/// An SotW ADS stream answered as Envoy answers: it ACKs (or NACKs, when told) each response
/// and asks for the endpoints of its clusters and the routes of its listeners.
struct SotwStream {
    variant: Sotw,
    core: StreamCore,
    /// Per type: the version accepted last and the nonce answered last.
    state: HashMap<ResourceType, (String, String)>,
    names: HashMap<ResourceType, Vec<String>>,
    node_sent: bool,
    /// The node the first request carries.
    node: Option<Node>,
    /// Every response, in order.
    seen: Vec<DiscoveryResponse>,
}

impl SotwStream {
    fn new(plane: &Plane) -> SotwStream {
        SotwStream {
            variant: Sotw::default(),
            core: plane.core("sotw"),
            state: HashMap::new(),
            names: HashMap::new(),
            node_sent: false,
            node: node(),
            seen: Vec::new(),
        }
    }

    /// A stream whose Envoy sends `cluster` as `node.cluster` and presents `peer`.
    fn of(plane: &Plane, cluster: &str, peer: Peer) -> SotwStream {
        let mut s = SotwStream::new(plane);
        if let Some(n) = s.node.as_mut() {
            n.cluster = cluster.into();
        }
        s.core.peer = Some(peer);
        s
    }

    /// The first request of type `t`, as Envoy sends it; the server's answer or refusal.
    fn try_request(&mut self, t: ResourceType) -> Result<Vec<DiscoveryResponse>, Status> {
        let req = DiscoveryRequest {
            node: (!self.node_sent).then(|| self.node.clone()).flatten(),
            type_url: t.type_url().into(),
            ..Default::default()
        };
        self.node_sent = true;
        let out = on_request(&mut self.variant, &mut self.core, req)?;
        self.seen.extend(out.iter().cloned());
        Ok(out)
    }

    fn request(&mut self, t: ResourceType, error: Option<&str>) -> Vec<DiscoveryResponse> {
        let (version, nonce) = self.state.get(&t).cloned().unwrap_or_default();
        let req = DiscoveryRequest {
            node: (!self.node_sent).then(|| self.node.clone()).flatten(),
            version_info: version,
            response_nonce: nonce,
            resource_names: self.names.get(&t).cloned().unwrap_or_default(),
            type_url: t.type_url().into(),
            error_detail: error.map(|m| RpcStatus {
                code: 3,
                message: m.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.node_sent = true;
        let out =
            on_request(&mut self.variant, &mut self.core, req).expect("the request is served");
        self.seen.extend(out.iter().cloned());
        out
    }

    /// A reconnect: the first request of each type carries what the proxy has.
    fn resume(&mut self, versions: &[(ResourceType, &str)]) {
        for (t, v) in versions {
            self.state.insert(*t, (v.to_string(), String::new()));
        }
    }

    fn on_snapshot(&mut self) -> Vec<DiscoveryResponse> {
        let out = on_snapshot(&mut self.variant, &mut self.core).expect("the stream goes on");
        self.seen.extend(out.iter().cloned());
        out
    }

    /// Answers every response (a NACK for type `reject`), following subscriptions, until
    /// the stream has nothing more to send.
    fn settle(&mut self, mut queue: Vec<DiscoveryResponse>, reject: Option<ResourceType>) {
        while let Some(resp) = (!queue.is_empty()).then(|| queue.remove(0)) {
            let t = ResourceType::from_type_url(&resp.type_url).unwrap();
            let rejected = reject == Some(t);
            let version = if rejected {
                self.state.get(&t).map(|s| s.0.clone()).unwrap_or_default()
            } else {
                resp.version_info.clone()
            };
            self.state.insert(t, (version, resp.nonce.clone()));
            if !rejected {
                match t {
                    Cds => {
                        let names = cluster_names(&resp.resources);
                        self.names.insert(Eds, names);
                    }
                    Lds => {
                        self.names.insert(Rds, vec!["web".into()]);
                    }
                    _ => {}
                }
            }
            queue.extend(self.request(t, rejected.then_some("rejected by the test")));
            // Envoy asks for the types that follow once it has clusters and listeners.
            for next in [Eds, Rds] {
                if self.names.contains_key(&next) && !self.state.contains_key(&next) {
                    self.state.insert(next, Default::default());
                    queue.extend(self.request(next, None));
                }
            }
        }
    }

    /// Connects: CDS and LDS requests, then settles.
    fn connect(&mut self) {
        let mut out = self.request(Cds, None);
        out.extend(self.request(Lds, None));
        self.settle(out, None);
    }

    fn last(&self, t: ResourceType) -> &DiscoveryResponse {
        self.seen
            .iter()
            .rev()
            .find(|r| r.type_url == t.type_url())
            .expect("a response of that type")
    }

    /// Changes the protocol of upstream `to` (so its cluster changes) and checks that its
    /// endpoints are sent again: Envoy keeps a rebuilt cluster warming until they come.
    fn change_cluster_expect_endpoints(&mut self, plane: &Plane, to: &str) {
        let before = self.seen.len();
        plane.publish(&catalog(to).replace("protocol: http1", "protocol: http2"));
        let out = self.on_snapshot();
        self.settle(out, None);
        let sent = types_of(&self.seen[before..]);
        assert!(sent.contains(&Eds), "{sent:?}");
    }

    /// A new stream of the Envoy `self` was, as after a control plane restart: its first
    /// requests say what it has, and it asks for the endpoints and routes it had.
    fn reconnect(self, plane: &Plane) -> SotwStream {
        let versions = self.versions();
        let names = self.names.clone();
        drop(self);
        let mut s = SotwStream::new(plane);
        for (t, v) in versions {
            s.state.insert(t, (v, String::new()));
        }
        for t in [Eds, Rds] {
            if let Some(n) = names.get(&t) {
                s.names.insert(t, n.clone());
            }
        }
        s
    }

    fn versions(&self) -> Vec<(ResourceType, String)> {
        ResourceType::ALL
            .into_iter()
            .filter_map(|t| Some((t, self.state.get(&t)?.0.clone())))
            .collect()
    }
}

fn types_of(responses: &[DiscoveryResponse]) -> Vec<ResourceType> {
    responses
        .iter()
        .map(|r| ResourceType::from_type_url(&r.type_url).unwrap())
        .collect()
}

/// The edge proxy routes /a/ to upstream a and the rest to b; a's endpoint is `a_endpoint`.
fn two_upstreams(a_endpoint: &str, b_protocol: &str) -> String {
    format!(
        r#"
version: 1
proxies:
  edge:
    listeners:
      - name: web
        port: 8080
        protocol: http
        routes: [ {{ match: {{ prefix: /a/ }}, to: a }}, {{ match: {{ prefix: / }}, to: b }} ]
upstreams:
  a: {{ protocol: http1, endpoints: {{ static: ["{a_endpoint}"] }} }}
  b: {{ protocol: {b_protocol}, endpoints: {{ static: ["127.0.0.1:1002"] }} }}
"#
    )
}

fn assignment_names(resources: &[Any]) -> Vec<String> {
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    resources
        .iter()
        .map(|any| {
            ClusterLoadAssignment::decode(any.value.as_slice())
                .unwrap()
                .cluster_name
        })
        .collect()
}

#[test]
fn sotw_sends_only_the_changed_assignments_at_the_version_of_the_whole_set() {
    let plane = Plane::new();
    plane.publish(&two_upstreams("127.0.0.1:1001", "http1"));
    let mut s = SotwStream::new(&plane);
    s.connect();
    assert_eq!(assignment_names(&s.last(Eds).resources), ["a", "b"]);

    plane.publish(&two_upstreams("127.0.0.1:2001", "http1"));
    let out = s.on_snapshot();
    assert_eq!(types_of(&out), [Eds]);
    assert_eq!(assignment_names(&out[0].resources), ["a"]);
    // The version names the whole set, as a full response would: a proxy that reconnects
    // with it has everything.
    let full = sotw::fetch(
        &plane.shared,
        None,
        Eds,
        DiscoveryRequest {
            node: node(),
            resource_names: vec!["a".into(), "b".into()],
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(out[0].version_info, full.version_info);
    s.settle(out, None);
    let mut s = s.reconnect(&plane);
    s.connect();
    let out = s.request(Eds, None);
    assert!(
        out.is_empty(),
        "a proxy with the current version was sent its endpoints again"
    );

    // A changed cluster waits for its assignment again: every assignment goes.
    plane.publish(&two_upstreams("127.0.0.1:2001", "http2"));
    let out = s.on_snapshot();
    s.settle(out, None);
    assert_eq!(assignment_names(&s.last(Eds).resources), ["a", "b"]);
}

#[test]
fn sotw_ignores_an_answer_to_a_replaced_response() {
    let plane = Plane::new();
    plane.publish(&catalog("a"));
    let mut s = SotwStream::new(&plane);
    s.connect();
    let cds = s.last(Cds).clone();
    plane.publish(&catalog("b"));
    let out = s.on_snapshot();
    assert_eq!(types_of(&out), [Cds]);
    // An ACK that carries the nonce of the response before: stale, it settles nothing.
    s.state
        .insert(Cds, (cds.version_info.clone(), cds.nonce.clone()));
    assert!(s.request(Cds, None).is_empty());
    let node = &plane.nodes()[0];
    assert_ne!(node.types["cds"].sent, node.types["cds"].acked);
}

#[test]
fn sotw_keeps_the_old_cluster_until_the_new_routes_are_acknowledged() {
    let plane = Plane::new();
    plane.publish(&catalog("a"));
    let mut s = SotwStream::new(&plane);
    s.connect();
    assert_eq!(route_targets(&s.last(Rds).resources), ["a"]);
    plane.publish(&catalog("b"));
    let out = s.on_snapshot();
    assert_eq!(cluster_names(&out[0].resources), ["a", "b"]);
    s.settle(out, None);
    assert_eq!(route_targets(&s.last(Rds).resources), ["b"]);
    assert_eq!(cluster_names(&s.last(Cds).resources), ["b"]);
}

#[test]
fn sotw_holds_routes_back_while_their_new_cluster_is_rejected() {
    let plane = Plane::new();
    plane.publish(&catalog("a"));
    let mut s = SotwStream::new(&plane);
    s.connect();
    let routes_before = s.last(Rds).clone();
    plane.publish(&catalog("b"));
    let out = s.on_snapshot();
    s.settle(out, Some(Cds));
    // The routes to b never went out, so cluster a is still wanted and was not dropped.
    assert_eq!(s.last(Rds).nonce, routes_before.nonce);
    assert_eq!(cluster_names(&s.last(Cds).resources), ["a", "b"]);
    assert_eq!(
        plane.nodes()[0].types["cds"].last_nack.as_deref(),
        Some("rejected by the test")
    );
    // A fixed catalog (b changed) is accepted; only then do routes move and a leave.
    plane.publish(&catalog("b").replace("protocol: http1", "protocol: http2"));
    let out = s.on_snapshot();
    assert_eq!(types_of(&out)[0], Cds);
    assert!(
        !types_of(&out).contains(&Rds),
        "routes before their cluster"
    );
    s.settle(out, None);
    assert_eq!(route_targets(&s.last(Rds).resources), ["b"]);
    assert_eq!(cluster_names(&s.last(Cds).resources), ["b"]);
}

#[test]
fn sotw_after_a_reconnect_sends_one_response_keeps_old_clusters_and_resends_endpoints() {
    let plane = Plane::new();
    plane.publish(&catalog("a"));
    let mut first = SotwStream::new(&plane);
    first.connect();
    // The same Envoy after a control plane restart: it says what it has.
    let mut s = first.reconnect(&plane);
    let mut out = s.request(Cds, None);
    for t in [Eds, Lds, Rds] {
        out.extend(s.request(t, None));
    }
    // One response (so Envoy resets its reconnect backoff), the rest it already has.
    assert_eq!(types_of(&out), [Cds]);
    s.settle(out, None);
    assert_eq!(types_of(&s.seen), [Cds]);

    // The first change after the reconnect moves the route and deletes a.
    plane.publish(&catalog("b"));
    let out = s.on_snapshot();
    assert_eq!(
        cluster_names(&out[0].resources),
        ["a", "b"],
        "a left before the routes moved"
    );
    s.settle(out, None);
    assert_eq!(route_targets(&s.last(Rds).resources), ["b"]);

    // A changed cluster gets its endpoints again, also on a resumed stream.
    s.change_cluster_expect_endpoints(&plane, "b");
}

#[test]
fn sotw_an_empty_list_after_names_means_none() {
    let plane = Plane::new();
    plane.publish(&catalog("a"));
    let mut s = SotwStream::new(&plane);
    s.names.insert(Cds, vec!["a".into()]);
    let out = s.request(Cds, None);
    assert_eq!(cluster_names(&out[0].resources), ["a"]);
    s.state
        .insert(Cds, (out[0].version_info.clone(), out[0].nonce.clone()));
    s.names.insert(Cds, Vec::new());
    let out = s.request(Cds, None);
    assert_eq!(out.len(), 1);
    assert!(
        out[0].resources.is_empty(),
        "an empty list was read as the wildcard"
    );
}

#[test]
fn a_role_gone_from_the_catalog_keeps_its_envoys_config_while_they_are_connected() {
    let plane = Plane::new();
    plane.publish(&catalog("a"));
    let mut s = SotwStream::new(&plane);
    s.connect();
    let seen = s.seen.len();
    plane.publish(NO_PROXIES);
    assert!(
        s.on_snapshot().is_empty(),
        "the vanished role's config was replaced"
    );
    assert_eq!(s.seen.len(), seen);
    let node = &plane.nodes()[0];
    assert!(node.orphaned && !node.known_proxy, "{node:?}");
    assert_eq!(plane.shared.cache.current().orphans.len(), 1);

    // Another Envoy of the role, while the first is connected, gets the last config too.
    let mut second = SotwStream::new(&plane);
    second.connect();
    assert_eq!(route_targets(&second.last(Rds).resources), ["a"]);
    drop(second);
    // A catalog change elsewhere does not forget the role while an Envoy of it is connected.
    plane.publish("version: 1\nproxies: { other: {} }\n");
    assert_eq!(plane.shared.cache.current().orphans.len(), 1);

    // Once the last one is gone, the role is forgotten: a new Envoy gets an empty config.
    drop(s);
    assert!(plane.shared.cache.current().orphans.is_empty());
    let mut third = SotwStream::new(&plane);
    third.connect();
    assert!(third.last(Cds).resources.is_empty());
    assert!(third.last(Lds).resources.is_empty());
}

#[test]
fn a_reconnecting_envoy_of_an_unknown_role_keeps_its_config() {
    let plane = Plane::new();
    plane.publish(NO_PROXIES);
    let mut s = SotwStream::new(&plane);
    s.resume(&[(Cds, "0123456789abcdef"), (Lds, "0123456789abcdef")]);
    let mut out = s.request(Cds, None);
    out.extend(s.request(Lds, None));
    assert!(out.is_empty(), "an empty config would wipe what it runs");
    // A new one gets the empty config at once (Envoy would otherwise wait for it).
    let mut fresh = SotwStream::new(&plane);
    fresh.connect();
    assert!(fresh.last(Cds).resources.is_empty());
}

// ---- delta ----

/// A delta ADS stream answered as Envoy answers.
struct DeltaStream {
    variant: Delta,
    core: StreamCore,
    node_sent: bool,
    seen: Vec<DeltaDiscoveryResponse>,
}

impl DeltaStream {
    fn new(plane: &Plane) -> DeltaStream {
        DeltaStream {
            variant: Delta::default(),
            core: plane.core("delta"),
            node_sent: false,
            seen: Vec::new(),
        }
    }

    fn request(
        &mut self,
        t: ResourceType,
        nonce: &str,
        subscribe: &[&str],
        unsubscribe: &[&str],
    ) -> Vec<DeltaDiscoveryResponse> {
        let req = DeltaDiscoveryRequest {
            node: (!self.node_sent).then(node).flatten(),
            type_url: t.type_url().into(),
            response_nonce: nonce.into(),
            resource_names_subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
            resource_names_unsubscribe: unsubscribe.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        self.node_sent = true;
        let out = on_request(&mut self.variant, &mut self.core, req).expect("served");
        self.seen.extend(out.iter().cloned());
        out
    }

    /// Connects as Envoy does: clusters and listeners (wildcard), then the endpoints `eds` and
    /// the routes, each answer acknowledged.
    fn connect(&mut self, eds: &[&str]) {
        let mut out = self.request(Cds, "", &[], &[]);
        out.extend(self.request(Lds, "", &[], &[]));
        self.ack_all(out);
        let out = self.request(Eds, "", eds, &[]);
        self.ack_all(out);
        let out = self.request(Rds, "", &["web"], &[]);
        self.ack_all(out);
    }

    /// ACKs each response in turn.
    fn ack_all(&mut self, mut queue: Vec<DeltaDiscoveryResponse>) {
        while let Some(resp) = (!queue.is_empty()).then(|| queue.remove(0)) {
            let t = ResourceType::from_type_url(&resp.type_url).unwrap();
            queue.extend(self.request(t, &resp.nonce, &[], &[]));
        }
    }
}

fn names(r: &DeltaDiscoveryResponse) -> Vec<&str> {
    r.resources.iter().map(|r| r.name.as_str()).collect()
}

#[test]
fn delta_a_name_unsubscribed_and_subscribed_again_is_sent_again() {
    let plane = Plane::new();
    plane.publish(&catalog("a"));
    let mut s = DeltaStream::new(&plane);
    let out = s.request(Cds, "", &[], &[]);
    s.ack_all(out);
    let out = s.request(Eds, "", &["a"], &[]);
    assert_eq!(names(&out[0]), ["a"]);
    s.ack_all(out);
    assert!(s.request(Eds, "", &[], &["a"]).is_empty());
    let out = s.request(Eds, "", &["a"], &[]);
    assert_eq!(out.len(), 1, "the resubscribed assignment was not sent");
    assert_eq!(names(&out[0]), ["a"]);
}

#[test]
fn delta_a_connected_stream_keeps_no_copy_of_the_names_it_has_and_still_follows_changes() {
    let plane = Plane::new();
    plane.publish(&catalog("a"));
    let mut s = DeltaStream::new(&plane);
    s.connect(&["a"]);
    assert_eq!(s.variant.names_kept(), 0);
    // A change is sent as the one resource that changed; then the stream shares the new
    // snapshot.
    plane.publish(&catalog("b"));
    let out = on_snapshot(&mut s.variant, &mut s.core).expect("the stream goes on");
    assert!(!out.is_empty());
    s.ack_all(out);
    let out = s.request(Eds, "", &["b"], &["a"]);
    s.ack_all(out);
    assert_eq!(s.variant.names_kept(), 0);
    assert!(on_snapshot(&mut s.variant, &mut s.core).unwrap().is_empty());
}

#[test]
fn delta_wildcard_subscribe_and_unsubscribe() {
    let plane = Plane::new();
    plane.publish(&catalog("a"));
    let mut s = DeltaStream::new(&plane);
    // Naming a resource first: no wildcard, only what is named.
    let out = s.request(Cds, "", &["zzz"], &[]);
    assert!(out[0].resources.is_empty());
    s.ack_all(out);
    let out = s.request(Cds, "", &["*"], &[]);
    assert_eq!(names(&out[0]), ["a"]);
    s.ack_all(out);
    // Leaving the wildcard keeps only the named ones (the proxy forgets the rest itself):
    // a change of a no longer reaches it.
    assert!(s.request(Cds, "", &[], &["*"]).is_empty());
    plane.publish(&catalog("a").replace("protocol: http1", "protocol: http2"));
    let out = on_snapshot(&mut s.variant, &mut s.core).expect("the stream goes on");
    assert!(out.iter().all(|r| r.type_url != Cds.type_url()), "{out:?}");
}

#[test]
fn delta_holds_routes_back_while_their_new_cluster_is_rejected() {
    let plane = Plane::new();
    plane.publish(&catalog("a"));
    let mut s = DeltaStream::new(&plane);
    s.connect(&["a"]);
    plane.publish(&catalog("b"));
    let out = s.on_snapshot_nack_cds();
    assert!(
        out.is_empty(),
        "routes went out after the cluster was rejected: {out:?}"
    );
    assert!(
        s.seen.iter().all(|r| r.removed_resources.is_empty()),
        "a was removed"
    );
}

/// The state the registry shows for the stream's clusters.
fn cds_state(plane: &Plane) -> nodes::SyncState {
    plane.nodes()[0].types["cds"].state
}

#[test]
fn delta_a_rejected_change_rolled_back_or_left_behind_shows_as_such() {
    let plane = Plane::new();
    plane.publish(&catalog("a"));
    let mut s = DeltaStream::new(&plane);
    s.connect(&["a"]);
    assert_eq!(cds_state(&plane), nodes::SyncState::Synced);
    plane.publish(&catalog("b"));
    s.on_snapshot_nack_cds();
    assert_eq!(cds_state(&plane), nodes::SyncState::Nacked);
    // Rolled back: nothing is sent (the proxy runs a), and it is in sync again.
    plane.publish(&catalog("a"));
    let out = on_snapshot(&mut s.variant, &mut s.core).expect("the stream goes on");
    assert!(out.iter().all(|r| r.type_url != Cds.type_url()), "{out:?}");
    assert_eq!(cds_state(&plane), nodes::SyncState::Synced);

    // Rejected, then another cluster changes and is taken: the rejected one is still the
    // catalog's, so the type stays NACKED.
    let plane = Plane::new();
    plane.publish(&catalog_with_c("a", 2001));
    let mut s = DeltaStream::new(&plane);
    s.connect(&["a", "c"]);
    plane.publish(&catalog_with_c("b", 2001));
    s.on_snapshot_nack_cds();
    plane.publish(&catalog_with_c("b", 2002));
    let out = on_snapshot(&mut s.variant, &mut s.core).expect("the stream goes on");
    s.ack_all(out);
    assert_eq!(cds_state(&plane), nodes::SyncState::Nacked);
}

impl DeltaStream {
    /// A publish whose CDS response the proxy rejects; returns what follows the NACK.
    fn on_snapshot_nack_cds(&mut self) -> Vec<DeltaDiscoveryResponse> {
        let out = on_snapshot(&mut self.variant, &mut self.core).expect("the stream goes on");
        self.seen.extend(out.iter().cloned());
        assert_eq!(out.len(), 1);
        assert_eq!(names(&out[0]), ["b"]);
        let req = DeltaDiscoveryRequest {
            type_url: Cds.type_url().into(),
            response_nonce: out[0].nonce.clone(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: "rejected by the test".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let out = on_request(&mut self.variant, &mut self.core, req).expect("served");
        self.seen.extend(out.iter().cloned());
        out
    }
}

#[test]
fn node_ids_longer_than_the_cap_are_refused() {
    let plane = Plane::new();
    let mut core = plane.core("sotw");
    let mut node = node();
    if let Some(n) = node.as_mut() {
        n.id = "x".repeat(MAX_NODE_ID + 1);
    }
    let err = core.identify(node.as_ref()).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(plane.nodes().is_empty());
}

#[test]
fn sotw_reconnect_in_any_request_order_keeps_old_clusters_and_resends_endpoints() {
    let plane = Plane::new();
    plane.publish(&catalog("a"));
    let mut first = SotwStream::new(&plane);
    first.connect();
    let mut s = first.reconnect(&plane);
    // Clusters, endpoints and listeners asked for, its routes not yet.
    s.names.remove(&Rds);
    let mut out = s.request(Cds, None);
    out.extend(s.request(Eds, None));
    out.extend(s.request(Lds, None));
    assert_eq!(types_of(&out), [Cds]);
    s.settle(out, None);
    assert_eq!(types_of(&s.seen), [Cds]);
    // A change before the routes request: the listeners it runs use a, which must stay.
    plane.publish(&catalog("b"));
    let out = s.on_snapshot();
    let cds = out
        .iter()
        .find(|r| r.type_url == Cds.type_url())
        .expect("clusters");
    assert_eq!(cluster_names(&cds.resources), ["a", "b"]);
    s.settle(out, None);
    // Listeners asked first (so they get the stream's one response), then the rest: a
    // cluster the proxy had before the reconnect changes, and its endpoints go again.
    let plane2 = Plane::new();
    plane2.publish(&catalog("a"));
    let mut first = SotwStream::new(&plane2);
    first.connect();
    let mut s = first.reconnect(&plane2);
    let mut out = s.request(Lds, None);
    for t in [Cds, Eds, Rds] {
        out.extend(s.request(t, None));
    }
    s.settle(out, None);
    s.change_cluster_expect_endpoints(&plane2, "a");
}

#[test]
fn delta_a_name_subscribed_again_is_sent_again() {
    let plane = Plane::new();
    plane.publish(&catalog("a"));
    let mut s = DeltaStream::new(&plane);
    let out = s.request(Eds, "", &["a"], &[]);
    s.ack_all(out);
    // The proxy dropped it (a rebuilt cluster, say) and asks again.
    let out = s.request(Eds, "", &["a"], &[]);
    assert_eq!(out.len(), 1, "a subscribed again was not sent");
    assert_eq!(names(&out[0]), ["a"]);
}

/// The edge proxy routes `/c/` to upstream c (whose endpoint is `c_port`) and the rest to `to`.
fn catalog_with_c(to: &str, c_port: u16) -> String {
    format!(
        r#"
version: 1
proxies:
  edge:
    listeners:
      - name: web
        port: 8080
        protocol: http
        routes:
          - {{ match: {{ prefix: /c/ }}, to: c }}
          - {{ match: {{ prefix: / }}, to: {to} }}
upstreams:
  {to}: {{ protocol: http1, endpoints: {{ static: ["127.0.0.1:1001"] }} }}
  c: {{ protocol: http1, endpoints: {{ static: ["127.0.0.1:{c_port}"] }}, connect_timeout: {c_port}ms }}
"#
    )
}

#[test]
fn delta_after_a_publish_sends_just_what_changed_since_the_snapshot_the_proxy_has() {
    let plane = Plane::new();
    plane.publish(&catalog_with_c("a", 2001));
    let mut s = DeltaStream::new(&plane);
    s.connect(&["a", "c"]);
    assert_eq!(s.variant.names_kept(), 0);
    // c changes (its timeout and its endpoint), a does not: only c goes, in both types.
    plane.publish(&catalog_with_c("a", 2002));
    let out = on_snapshot(&mut s.variant, &mut s.core).expect("the stream goes on");
    let sent: Vec<(&str, Vec<&str>)> = out
        .iter()
        .map(|r| {
            (
                ResourceType::from_type_url(&r.type_url).unwrap().short(),
                names(r),
            )
        })
        .collect();
    assert_eq!(sent, [("cds", vec!["c"]), ("eds", vec!["c"])]);
    s.ack_all(out);
    assert!(s.seen.iter().all(|r| r.removed_resources.is_empty()));
    assert_eq!(
        s.variant.names_kept(),
        0,
        "the stream shares the new snapshot"
    );
    // a goes and b comes: b is sent, a removed (once routes no longer use it).
    plane.publish(&catalog_with_c("b", 2002));
    let out = on_snapshot(&mut s.variant, &mut s.core).expect("the stream goes on");
    let mut cds: Vec<DeltaDiscoveryResponse> = out
        .iter()
        .filter(|r| r.type_url == Cds.type_url())
        .cloned()
        .collect();
    s.ack_all(out);
    let out = s.request(Eds, "", &["b"], &["a"]);
    s.ack_all(out);
    cds.extend(
        s.seen
            .iter()
            .filter(|r| r.type_url == Cds.type_url())
            .cloned(),
    );
    assert!(cds.iter().any(|r| names(r) == ["b"]), "{cds:?}");
    assert!(cds.iter().any(|r| r.removed_resources == ["a"]), "{cds:?}");
    assert!(on_snapshot(&mut s.variant, &mut s.core).unwrap().is_empty());
}

#[test]
fn delta_a_rejected_cluster_keeps_routes_back_when_another_cluster_changes() {
    let plane = Plane::new();
    plane.publish(&catalog_with_c("a", 2001));
    let mut s = DeltaStream::new(&plane);
    s.connect(&["a", "c"]);
    plane.publish(&catalog_with_c("b", 2001));
    assert!(s.on_snapshot_nack_cds().is_empty());
    // Another cluster changes: it goes out alone, is accepted, and the routes to the refused
    // b still wait, with a kept.
    plane.publish(&catalog_with_c("b", 2002));
    let out = on_snapshot(&mut s.variant, &mut s.core).expect("the stream goes on");
    s.seen.extend(out.iter().cloned());
    assert_eq!(out[0].type_url, Cds.type_url());
    assert_eq!(names(&out[0]), ["c"], "the refused b was sent again");
    s.ack_all(out);
    assert_eq!(
        s.seen
            .iter()
            .filter(|r| r.type_url == Rds.type_url())
            .count(),
        1,
        "routes went out while b is refused"
    );
    assert!(
        s.seen.iter().all(|r| r.removed_resources.is_empty()),
        "a was removed"
    );
    // b fixed: sent, accepted, then the routes move and a goes.
    plane.publish(&catalog_with_c("b", 2002).replace(
        "protocol: http1, endpoints: { static: [\"127.0.0.1:1001\"] }",
        "protocol: http2, endpoints: { static: [\"127.0.0.1:1001\"] }",
    ));
    let out = on_snapshot(&mut s.variant, &mut s.core).expect("the stream goes on");
    assert_eq!(names(&out[0]), ["b"]);
    s.seen.extend(out.iter().cloned());
    s.ack_all(out);
    assert_eq!(
        s.seen
            .iter()
            .filter(|r| r.type_url == Rds.type_url())
            .count(),
        2
    );
    assert!(
        s.seen
            .iter()
            .any(|r| r.type_url == Cds.type_url() && r.removed_resources == ["a"])
    );
}

#[test]
fn a_fetch_is_checked_like_a_stream() {
    let (_stop, shutdown) = watch::channel(false);
    let shared = Shared {
        cache: Cache::new(),
        metrics: Metrics::new(),
        nodes: Nodes::default(),
        auth: Authorization {
            require_identity: true,
            trust_domain: "mesh.local".into(),
        },
        limits: Limits::default(),
        shutdown,
        name_sets: NameSets::default(),
    };
    let req = DiscoveryRequest {
        node: node(),
        ..Default::default()
    };
    let err = sotw::fetch(&shared, None, Cds, req).unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut long = node();
    if let Some(n) = long.as_mut() {
        n.cluster = "x".repeat(MAX_NODE_ID + 1);
    }
    let req = DiscoveryRequest {
        node: long,
        ..Default::default()
    };
    let err = sotw::fetch(&shared, None, Cds, req).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[test]
fn nack_texts_are_cut_at_a_character_boundary() {
    assert_eq!(truncate("short", 10), "short");
    let cut = truncate(&"é".repeat(10), 5);
    assert!(cut.starts_with("éé…"), "{cut}");
    assert!(cut.ends_with("(16 bytes cut)"), "{cut}");
}

#[test]
fn stream_caps_count_in_total_and_per_source_address() {
    let limits = Limits {
        caps: StreamLimits {
            max_streams: 3,
            max_streams_per_ip: 2,
        },
        open: Default::default(),
    };
    let a: std::net::IpAddr = "10.0.0.1".parse().unwrap();
    let b: std::net::IpAddr = "10.0.0.2".parse().unwrap();
    assert_eq!(limits.admit(Some(a)), Ok(()));
    assert_eq!(limits.admit(Some(a)), Ok(()));
    assert_eq!(limits.admit(Some(a)), Err("max_streams_per_ip"));
    assert_eq!(limits.admit(Some(b)), Ok(()));
    assert_eq!(limits.admit(Some(b)), Err("max_streams"));
    limits.release(Some(a));
    assert_eq!(limits.admit(Some(b)), Ok(()));
    let none = Limits::default();
    for _ in 0..100 {
        assert_eq!(none.admit(Some(a)), Ok(()));
    }
}

#[test]
fn an_envoy_gets_the_endpoints_of_its_own_zone() {
    let plane = Plane::new();
    plane.publish(
        r#"
version: 1
proxies:
  edge:
    listeners:
      - { name: web, port: 8080, protocol: http, routes: [ { match: { prefix: / }, to: app } ] }
upstreams:
  app:
    protocol: http1
    zone_aware: true
    endpoints:
      static:
        - { address: "127.0.0.1:1001", zone: a }
        - { address: "127.0.0.1:1002", zone: b }
"#,
    );
    let in_zone = |zone: &str| {
        let mut n = node();
        if let Some(n) = n.as_mut() {
            n.locality = Some(envoy_types::pb::envoy::config::core::v3::Locality {
                zone: zone.into(),
                ..Default::default()
            });
        }
        n
    };
    // The first-priority zone of the endpoints a stream of an Envoy in `zone` holds.
    let preferred = |zone: &str| {
        let mut core = plane.core("sotw");
        core.identify(in_zone(zone).as_ref()).unwrap();
        let eds = core.snapshot.of(Eds).resources["app"].body().clone();
        let cla = envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::decode(
            eds.value.as_slice(),
        )
        .unwrap();
        let first: Vec<String> = cla
            .endpoints
            .iter()
            .filter(|l| l.priority == 0)
            .filter_map(|l| Some(l.locality.as_ref()?.zone.clone()))
            .collect();
        (first, core.snapshot.of(Cds).version)
    };
    let (a, cds_a) = preferred("a");
    let (b, cds_b) = preferred("b");
    let (none, cds_none) = preferred("");
    let (elsewhere, _) = preferred("c");
    assert_eq!(a, ["a"]);
    assert_eq!(b, ["b"]);
    assert_eq!(none, ["a", "b"]);
    assert_eq!(elsewhere, ["a", "b"]);
    // Only the endpoints differ.
    assert_eq!(cds_a, cds_none);
    assert_eq!(cds_b, cds_none);
    // The REST fetch answers by zone as well.
    let req = DiscoveryRequest {
        node: in_zone("b"),
        resource_names: vec!["app".into()],
        type_url: Eds.type_url().into(),
        ..Default::default()
    };
    let in_b = sotw::fetch(&plane.shared, None, Eds, req.clone()).unwrap();
    let req_none = DiscoveryRequest {
        node: node(),
        ..req
    };
    let plain = sotw::fetch(&plane.shared, None, Eds, req_none).unwrap();
    assert_ne!(in_b.version_info, plain.version_info);
}

// ---- aliases with --require-identity ----

const ARN: &str = "arn:aws:appmesh:us-east-1:111122223333:mesh/m/virtualNode/blue";

/// Proxies `blue` (to upstream `b`) and `red` (to `r`); `alias_of` (if any) has the ARN alias.
fn two_proxies(alias_of: Option<&str>) -> String {
    let proxy = |name: &str, to: &str| {
        let aliases = if alias_of == Some(name) {
            format!("\n    aliases: [\"{ARN}\"]")
        } else {
            String::new()
        };
        format!(
            "  {name}:{aliases}\n    listeners: [ {{ name: web, port: 8080, protocol: http, routes: [ {{ match: {{ prefix: / }}, to: {to} }} ] }} ]\n"
        )
    };
    format!(
        "version: 1\nproxies:\n{}{}upstreams:\n  b: {{ protocol: http1, endpoints: {{ static: [\"127.0.0.1:1001\"] }} }}\n  r: {{ protocol: http1, endpoints: {{ static: [\"127.0.0.1:1002\"] }} }}\n",
        proxy("blue", "b"),
        proxy("red", "r")
    )
}

fn peer_for(proxy: &str) -> Peer {
    let ca = crate::ca::Ca::generate("test").unwrap();
    let issued = ca
        .issue(&crate::ca::Leaf {
            uris: vec![format!("spiffe://mesh.local/proxy/{proxy}")],
            client: true,
            ttl: std::time::Duration::from_secs(60),
            ..Default::default()
        })
        .unwrap();
    let der = CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes()).unwrap();
    Peer {
        remote: None,
        certificates: Some(Arc::new(vec![der])),
    }
}

impl Plane {
    fn requiring_identity() -> Plane {
        let mut plane = Plane::new();
        Arc::get_mut(&mut plane.shared).unwrap().auth = Authorization {
            require_identity: true,
            trust_domain: "mesh.local".into(),
        };
        plane
    }
}

#[test]
fn an_alias_moved_to_another_proxy_does_not_stream_that_proxy_s_config() {
    let plane = Plane::requiring_identity();
    plane.publish(&two_proxies(Some("blue")));
    let mut s = SotwStream::of(&plane, ARN, peer_for("blue"));
    s.connect();
    assert_eq!(route_targets(&s.last(Rds).resources), ["b"]);
    assert_eq!(plane.nodes()[0].proxy, "blue");

    // The ARN now selects red, whose identity this Envoy never proved: it is sent nothing
    // and keeps blue's config, as an orphan, until it reconnects.
    let seen = s.seen.len();
    plane.publish(&two_proxies(Some("red")));
    assert!(s.on_snapshot().is_empty(), "red's config was streamed");
    let mut out = s.request(Cds, None);
    out.extend(s.request(Lds, None));
    assert!(out.is_empty(), "red's config was answered: {out:?}");
    assert_eq!(s.seen.len(), seen);
    let node = plane.nodes()[0].clone();
    assert!(node.orphaned && node.proxy == "blue", "{node:?}");

    // Connecting again, it is refused: the certificate names blue, the ARN selects red.
    let mut again = SotwStream::of(&plane, ARN, peer_for("blue"));
    let err = again.try_request(Cds).unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    assert!(err.message().contains("red"), "{err}");
    // A fetch is refused the same way.
    let fetch = |peer: &Peer| {
        let req = DiscoveryRequest {
            node: SotwStream::of(&plane, ARN, peer.clone()).node,
            ..Default::default()
        };
        sotw::fetch(&plane.shared, Some(peer), Cds, req)
    };
    assert_eq!(
        fetch(&peer_for("blue")).unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    let red = fetch(&peer_for("red")).expect("red's certificate is served red");
    assert_eq!(cluster_names(&red.resources), ["r"]);

    // Red's Envoys are served red, and follow it.
    let mut red = SotwStream::of(&plane, ARN, peer_for("red"));
    red.connect();
    assert_eq!(route_targets(&red.last(Rds).resources), ["r"]);
}

#[test]
fn a_stream_admitted_before_the_catalog_is_authorized_for_the_proxy_its_alias_selects() {
    let plane = Plane::requiring_identity();
    let mut blue = SotwStream::of(&plane, ARN, peer_for("blue"));
    let mut red = SotwStream::of(&plane, ARN, peer_for("red"));
    assert!(blue.try_request(Cds).unwrap().is_empty());
    assert!(red.try_request(Cds).unwrap().is_empty());
    // Without any certificate, it is refused at once.
    let mut none = SotwStream::new(&plane);
    none.core.peer = Some(Peer::default());
    assert_eq!(
        none.try_request(Cds).unwrap_err().code(),
        tonic::Code::Unauthenticated
    );

    plane.publish(&two_proxies(Some("blue")));
    let out = on_snapshot(&mut blue.variant, &mut blue.core).expect("blue may have blue's");
    assert_eq!(cluster_names(&out[0].resources), ["b"]);
    assert_eq!(
        blue.core
            .shared
            .nodes
            .list()
            .iter()
            .filter(|n| n.proxy == "blue")
            .count(),
        1
    );
    let err = on_snapshot(&mut red.variant, &mut red.core).unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
}

#[test]
fn an_alias_removed_while_its_proxy_stays_keeps_its_envoys_config() {
    let plane = Plane::new();
    plane.publish(&two_proxies(Some("blue")));
    let mut s = SotwStream::of(&plane, ARN, Peer::default());
    s.connect();
    let seen = s.seen.len();
    plane.publish(&two_proxies(None));
    assert!(
        s.on_snapshot().is_empty(),
        "the empty config replaced blue's"
    );
    assert_eq!(s.seen.len(), seen);
    let node = &plane.nodes()[0];
    assert!(node.orphaned && !node.known_proxy, "{node:?}");
    // Blue's own changes no longer reach it; a new Envoy presenting the ARN gets nothing.
    plane.publish(&two_proxies(None).replace("to: b", "to: r"));
    assert!(s.on_snapshot().is_empty());
    let mut fresh = SotwStream::of(&plane, ARN, Peer::default());
    fresh.connect();
    assert!(fresh.last(Cds).resources.is_empty());
}

/// `catalog("a")` with a gRPC service beside the Envoy listener.
fn catalog_with_grpc_service() -> String {
    catalog("a").replace(
        "upstreams:",
        "    grpc_services:\n      - { name: \"a.local:50051\", routes: [ { match: { prefix: / }, to: b } ] }\nupstreams:\n  b: { protocol: grpc, endpoints: { static: [\"127.0.0.1:1002\"] } }",
    )
}

fn listener_names(resources: &[Any]) -> Vec<String> {
    resources
        .iter()
        .map(|a| {
            envoy_types::pb::envoy::config::listener::v3::Listener::decode(a.value.as_slice())
                .unwrap()
                .name
        })
        .collect()
}

#[test]
fn sotw_api_listeners_go_only_to_streams_that_name_them() {
    let plane = Plane::new();
    plane.publish(&catalog_with_grpc_service());
    let mut envoy = SotwStream::new(&plane);
    let out = envoy.request(Lds, None);
    assert_eq!(listener_names(&out[0].resources), ["web"]);
    // Its version is the wildcard set's: a change of the gRPC service alone is no change here.
    let before = out[0].version_info.clone();
    let mut grpc = SotwStream::new(&plane);
    grpc.names.insert(Lds, vec!["a.local:50051".into()]);
    let out = grpc.request(Lds, None);
    assert_eq!(listener_names(&out[0].resources), ["a.local:50051"]);
    plane.publish(&catalog_with_grpc_service().replace("a.local:50051", "c.local:50051"));
    let out = on_snapshot(&mut envoy.variant, &mut envoy.core).expect("the stream goes on");
    assert!(out.iter().all(|r| r.type_url != Lds.type_url()), "{out:?}");
    assert_eq!(envoy.last(Lds).version_info, before);
}

#[test]
fn delta_api_listeners_go_only_to_streams_that_name_them() {
    let plane = Plane::new();
    plane.publish(&catalog_with_grpc_service());
    let mut envoy = DeltaStream::new(&plane);
    let out = envoy.request(Lds, "", &[], &[]);
    assert_eq!(names(&out[0]), ["web"]);
    let acked = out[0].nonce.clone();
    let mut grpc = DeltaStream::new(&plane);
    let out = grpc.request(Lds, "", &["a.local:50051"], &[]);
    assert_eq!(names(&out[0]), ["a.local:50051"]);
    // A wildcard that also names the API listener gets it.
    let out = envoy.request(Lds, &acked, &["a.local:50051"], &[]);
    assert_eq!(names(&out[0]), ["a.local:50051"]);
}
