//! Break after make on ADS, through a gRPC client that answers as Envoy does: when one catalog
//! change moves the only route from upstream a to upstream b and deletes a, the proxy keeps
//! cluster a until it runs routes that no longer use it — in SotW and delta, when the routes
//! are still in flight as the catalog changes again, after a reconnect, and after a rejection.

use std::collections::HashMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::{RouteAction, RouteConfiguration};
use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use tests::xds_client::next;
use tests::{TempDir, XdsServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use xds_server::translate::ResourceType;

fn node() -> Option<Node> {
    tests::xds_client::node("edge")
}

/// The edge proxy routes everything to `to`, the only upstream of the catalog.
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

/// A control plane on catalog(a).
struct Plane {
    dir: TempDir,
    /// Kept so the server lives (and stops) with the test.
    _server: XdsServer,
    url: String,
}

impl Plane {
    fn start(label: &str) -> Plane {
        let dir = TempDir::new(label);
        let path = dir.write("catalog.yaml", &catalog("a"));
        let server = XdsServer::start(&dir, &path, 0);
        server.wait_ready();
        let url = format!("http://127.0.0.1:{}", server.xds_port);
        Plane {
            dir,
            _server: server,
            url,
        }
    }

    /// Switches the catalog to route to `to` and waits until the server serves it.
    async fn switch(&self, to: &str) {
        self.dir.write("catalog.yaml", &catalog(to));
        let mut cds = ClusterDiscoveryServiceClient::connect(self.url.clone())
            .await
            .unwrap();
        for _ in 0..200 {
            let req = DiscoveryRequest {
                node: node(),
                ..Default::default()
            };
            let resp = cds.fetch_clusters(req).await.unwrap().into_inner();
            if cluster_names(&resp.resources) == [to] {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server never served catalog({to})");
    }
}

fn cluster_names(resources: &[Any]) -> Vec<String> {
    resources
        .iter()
        .map(|any| Cluster::decode(any.value.as_slice()).unwrap().name)
        .collect()
}

/// The clusters the route configurations in `resources` send requests to.
fn route_targets(resources: &[Any]) -> Vec<String> {
    let mut out = Vec::new();
    for any in resources {
        let rc = RouteConfiguration::decode(any.value.as_slice()).unwrap();
        for vh in rc.virtual_hosts {
            for r in vh.routes {
                if let Some(Action::Route(RouteAction {
                    cluster_specifier: Some(ClusterSpecifier::Cluster(c)),
                    ..
                })) = r.action
                {
                    out.push(c);
                }
            }
        }
    }
    out
}

/// What a client saw: the type, the clusters it has after a CDS response (SotW) or the
/// resources added and removed (delta), and where routes go.
#[derive(Debug, Clone, Default)]
struct Seen {
    t: Option<ResourceType>,
    names: Vec<String>,
    removed: Vec<String>,
    targets: Vec<String>,
}

impl Seen {
    fn is(&self, t: ResourceType) -> bool {
        self.t == Some(t)
    }
}

/// Where in `seen` the first entry matching `f` is.
fn first(seen: &[Seen], what: &str, f: impl Fn(&Seen) -> bool) -> usize {
    seen.iter()
        .position(f)
        .unwrap_or_else(|| panic!("no {what} in {seen:#?}"))
}

/// A SotW ADS client that subscribes and acknowledges as Envoy does (EDS names follow the
/// clusters, RDS after the first listeners).
struct Sotw {
    tx: mpsc::Sender<DiscoveryRequest>,
    stream: tonic::Streaming<DiscoveryResponse>,
    eds_names: Vec<String>,
    asked_routes: bool,
    seen: Vec<Seen>,
}

impl Sotw {
    async fn connect(url: &str) -> Sotw {
        let mut ads = AggregatedDiscoveryServiceClient::connect(url.to_string())
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(16);
        for t in [ResourceType::Cluster, ResourceType::Listener] {
            tx.send(Self::request(t, vec![], String::new(), String::new()))
                .await
                .unwrap();
        }
        let stream = ads
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Sotw {
            tx,
            stream,
            eds_names: Vec::new(),
            asked_routes: false,
            seen: Vec::new(),
        }
    }

    fn request(
        t: ResourceType,
        names: Vec<String>,
        version: String,
        nonce: String,
    ) -> DiscoveryRequest {
        DiscoveryRequest {
            node: node(),
            type_url: t.type_url().into(),
            resource_names: names,
            version_info: version,
            response_nonce: nonce,
            ..Default::default()
        }
    }

    /// The next response, recorded, not answered yet.
    async fn receive(&mut self) -> DiscoveryResponse {
        let resp = next(&mut self.stream).await;
        let t = ResourceType::from_type_url(&resp.type_url).unwrap();
        self.seen.push(Seen {
            t: Some(t),
            names: if t == ResourceType::Cluster {
                cluster_names(&resp.resources)
            } else {
                vec![]
            },
            removed: vec![],
            targets: if t == ResourceType::Route {
                route_targets(&resp.resources)
            } else {
                vec![]
            },
        });
        resp
    }

    /// Answers `resp` (an ACK, or a NACK with `error`), then asks for what it now needs.
    async fn answer(&mut self, resp: &DiscoveryResponse) {
        let t = ResourceType::from_type_url(&resp.type_url).unwrap();
        let names = match t {
            ResourceType::Endpoint => self.eds_names.clone(),
            ResourceType::Route => vec!["web".into()],
            _ => vec![],
        };
        let req = Self::request(t, names, resp.version_info.clone(), resp.nonce.clone());
        self.tx.send(req).await.unwrap();
        if t == ResourceType::Cluster && cluster_names(&resp.resources) != self.eds_names {
            self.eds_names = cluster_names(&resp.resources);
            let req = Self::request(
                ResourceType::Endpoint,
                self.eds_names.clone(),
                String::new(),
                String::new(),
            );
            self.tx.send(req).await.unwrap();
        }
        if t == ResourceType::Listener && !self.asked_routes {
            self.asked_routes = true;
            let req = Self::request(
                ResourceType::Route,
                vec!["web".into()],
                String::new(),
                String::new(),
            );
            self.tx.send(req).await.unwrap();
        }
    }

    /// Receives and acknowledges until a response matches `until`.
    async fn run_until(&mut self, until: impl Fn(&Seen) -> bool) {
        loop {
            let resp = self.receive().await;
            self.answer(&resp).await;
            if until(self.seen.last().unwrap()) {
                return;
            }
        }
    }
}

fn routes_to(to: &'static str) -> impl Fn(&Seen) -> bool {
    move |s: &Seen| s.is(ResourceType::Route) && s.targets == [to]
}

#[tokio::test(flavor = "multi_thread")]
async fn sotw_keeps_the_old_cluster_until_the_new_routes_are_acknowledged() {
    let plane = Plane::start("bam-sotw");
    let mut c = Sotw::connect(&plane.url).await;
    c.run_until(routes_to("a")).await;
    plane.switch("b").await;
    let from = c.seen.len();
    c.run_until(|s| s.is(ResourceType::Cluster) && s.names == ["b"])
        .await;
    let after = &c.seen[from..];
    let first_cds = &after[first(after, "CDS", |s| s.is(ResourceType::Cluster))];
    assert_eq!(first_cds.names, ["a", "b"], "{after:#?}");
    assert!(
        first(after, "routes to b", routes_to("b"))
            < first(after, "CDS without a", |s| s.is(ResourceType::Cluster)
                && s.names == ["b"]),
        "{after:#?}"
    );
}

/// S1 routes to a; S2 moves the routes to b; while S2's routes are still unacknowledged, S3
/// moves them back to a and drops b. The proxy may be running S2's routes by then: b stays
/// until it runs S3's.
#[tokio::test(flavor = "multi_thread")]
async fn sotw_keeps_the_cluster_of_routes_still_in_flight() {
    let plane = Plane::start("bam-sotw-flight");
    let mut c = Sotw::connect(&plane.url).await;
    c.run_until(routes_to("a")).await;
    plane.switch("b").await;
    // Everything up to the routes to b, which stay unanswered for now.
    let in_flight = loop {
        let resp = c.receive().await;
        if routes_to("b")(c.seen.last().unwrap()) {
            break resp;
        }
        c.answer(&resp).await;
    };
    plane.switch("a").await;
    let from = c.seen.len();
    c.answer(&in_flight).await;
    c.run_until(|s| s.is(ResourceType::Cluster) && s.names == ["a"])
        .await;
    let after = &c.seen[from..];
    assert!(
        first(after, "routes back to a", routes_to("a"))
            < first(after, "CDS without b", |s| s.is(ResourceType::Cluster)
                && s.names == ["a"]),
        "{after:#?}"
    );
}

/// A delta ADS client that subscribes and acknowledges as Envoy does.
struct Delta {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    stream: tonic::Streaming<DeltaDiscoveryResponse>,
    seen: Vec<Seen>,
    /// What it has, per type: name → version (for a reconnect).
    has: HashMap<ResourceType, HashMap<String, String>>,
    subscribed: Vec<ResourceType>,
}

impl Delta {
    /// Connects; `initial` says what the proxy already has (a reconnect), `types` what it
    /// subscribes to first.
    async fn connect(
        url: &str,
        initial: &HashMap<ResourceType, HashMap<String, String>>,
        types: &[ResourceType],
    ) -> Delta {
        let mut ads = AggregatedDiscoveryServiceClient::connect(url.to_string())
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(16);
        let stream_rx = ReceiverStream::new(rx);
        let mut c = Delta {
            tx,
            stream: ads
                .delta_aggregated_resources(stream_rx)
                .await
                .unwrap()
                .into_inner(),
            seen: Vec::new(),
            has: initial.clone(),
            subscribed: Vec::new(),
        };
        for t in types {
            c.subscribe(*t, initial.get(t).cloned().unwrap_or_default())
                .await;
        }
        c
    }

    async fn subscribe(&mut self, t: ResourceType, initial: HashMap<String, String>) {
        let names = match t {
            ResourceType::Route => vec!["web".to_string()],
            ResourceType::Endpoint => {
                let mut n: Vec<String> = self
                    .has
                    .get(&ResourceType::Cluster)
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default();
                n.sort();
                n
            }
            _ => vec![],
        };
        self.subscribed.push(t);
        let req = DeltaDiscoveryRequest {
            node: node(),
            type_url: t.type_url().into(),
            resource_names_subscribe: names,
            initial_resource_versions: initial,
            ..Default::default()
        };
        self.tx.send(req).await.unwrap();
    }

    async fn receive(&mut self) -> DeltaDiscoveryResponse {
        let resp = next(&mut self.stream).await;
        let t = ResourceType::from_type_url(&resp.type_url).unwrap();
        let bodies: Vec<Any> = resp
            .resources
            .iter()
            .filter_map(|r| r.resource.clone())
            .collect();
        self.seen.push(Seen {
            t: Some(t),
            names: resp.resources.iter().map(|r| r.name.clone()).collect(),
            removed: resp.removed_resources.clone(),
            targets: if t == ResourceType::Route {
                route_targets(&bodies)
            } else {
                vec![]
            },
        });
        resp
    }

    /// ACKs `resp`, or NACKs it with `error`; follows its clusters' endpoints.
    async fn answer(&mut self, resp: &DeltaDiscoveryResponse, error: Option<&str>) {
        let t = ResourceType::from_type_url(&resp.type_url).unwrap();
        self.tx
            .send(DeltaDiscoveryRequest {
                type_url: resp.type_url.clone(),
                response_nonce: resp.nonce.clone(),
                error_detail: error.map(|e| RpcStatus {
                    code: 3,
                    message: e.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap();
        if error.is_some() {
            return;
        }
        let has = self.has.entry(t).or_default();
        for r in &resp.resources {
            has.insert(r.name.clone(), r.version.clone());
        }
        for name in &resp.removed_resources {
            has.remove(name);
        }
        if t == ResourceType::Cluster && self.subscribed.contains(&ResourceType::Endpoint) {
            self.tx
                .send(DeltaDiscoveryRequest {
                    type_url: ResourceType::Endpoint.type_url().into(),
                    resource_names_subscribe: resp
                        .resources
                        .iter()
                        .map(|r| r.name.clone())
                        .collect(),
                    resource_names_unsubscribe: resp.removed_resources.clone(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    }

    async fn run_until(&mut self, until: impl Fn(&Seen) -> bool) {
        loop {
            let resp = self.receive().await;
            self.answer(&resp, None).await;
            if until(self.seen.last().unwrap()) {
                return;
            }
        }
    }
}

const ALL: [ResourceType; 4] = [
    ResourceType::Cluster,
    ResourceType::Endpoint,
    ResourceType::Listener,
    ResourceType::Route,
];

fn removes(name: &'static str) -> impl Fn(&Seen) -> bool {
    move |s: &Seen| s.is(ResourceType::Cluster) && s.removed == [name]
}

#[tokio::test(flavor = "multi_thread")]
async fn delta_removes_the_old_cluster_after_the_new_routes_are_acknowledged() {
    let plane = Plane::start("bam-delta");
    let mut c = Delta::connect(&plane.url, &HashMap::new(), &ALL).await;
    c.run_until(routes_to("a")).await;
    plane.switch("b").await;
    let from = c.seen.len();
    c.run_until(removes("a")).await;
    let after = &c.seen[from..];
    let first_cds = &after[first(after, "CDS", |s| s.is(ResourceType::Cluster))];
    assert_eq!(
        (&first_cds.names[..], &first_cds.removed[..]),
        (&["b".to_string()][..], &[][..])
    );
    assert!(
        first(after, "routes to b", routes_to("b")) < first(after, "removal of a", removes("a")),
        "{after:#?}"
    );
}

/// A proxy that reconnects (to another replica, say) after the catalog moved on still runs its
/// old routes: a leaves only after it runs the new ones, even though it asks for clusters first.
#[tokio::test(flavor = "multi_thread")]
async fn delta_keeps_the_old_cluster_of_a_reconnecting_proxy_until_it_runs_new_routes() {
    let plane = Plane::start("bam-delta-resume");
    let mut first_stream = Delta::connect(&plane.url, &HashMap::new(), &ALL).await;
    first_stream.run_until(routes_to("a")).await;
    // It goes away with what it has.
    let has = first_stream.has.clone();
    drop(first_stream);
    plane.switch("b").await;
    // Clusters first, as Envoy asks: nothing about the routes is known to this stream yet.
    let mut c = Delta::connect(&plane.url, &has, &[ResourceType::Cluster]).await;
    let resp = c.receive().await;
    c.answer(&resp, None).await;
    assert_eq!(
        (&c.seen[0].names[..], &c.seen[0].removed[..]),
        (&["b".to_string()][..], &[][..]),
        "{:#?}",
        c.seen
    );
    for t in [
        ResourceType::Endpoint,
        ResourceType::Listener,
        ResourceType::Route,
    ] {
        c.subscribe(t, has.get(&t).cloned().unwrap_or_default())
            .await;
    }
    c.run_until(removes("a")).await;
    assert!(
        first(&c.seen, "routes to b", routes_to("b"))
            < first(&c.seen, "removal of a", removes("a")),
        "{:#?}",
        c.seen
    );
}

/// A proxy that rejects the new routes keeps running the old ones: a stays.
#[tokio::test(flavor = "multi_thread")]
async fn delta_keeps_the_old_cluster_while_the_new_routes_are_rejected() {
    let plane = Plane::start("bam-delta-nack");
    let mut c = Delta::connect(&plane.url, &HashMap::new(), &ALL).await;
    c.run_until(routes_to("a")).await;
    plane.switch("b").await;
    let rejected = loop {
        let resp = c.receive().await;
        if routes_to("b")(c.seen.last().unwrap()) {
            break resp;
        }
        c.answer(&resp, None).await;
    };
    c.answer(&rejected, Some("route rejected for the test"))
        .await;
    // Whatever else comes (the endpoints of b) is taken; the removal of a is not among it.
    while let Ok(more) = tokio::time::timeout(Duration::from_secs(2), c.stream.message()).await {
        let resp = more.unwrap().expect("the stream stays open");
        let t = ResourceType::from_type_url(&resp.type_url);
        assert_ne!(
            t,
            Some(ResourceType::Route),
            "the rejected routes came again"
        );
        assert!(
            !resp.removed_resources.contains(&"a".to_string()),
            "{resp:?}"
        );
        c.answer(&resp, None).await;
    }
}
