//! The xDS services as a client other than Envoy sees them: the standalone CDS, EDS and LDS
//! services (SotW, delta and fetch) and the order of ADS pushes, of a real xds-server process,
//! through a gRPC client.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::{RouteAction, RouteConfiguration};
use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::envoy::service::endpoint::v3::endpoint_discovery_service_client::EndpointDiscoveryServiceClient;
use envoy_types::pb::envoy::service::listener::v3::listener_discovery_service_client::ListenerDiscoveryServiceClient;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use tests::{TempDir, XdsServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use xds_server::translate::ResourceType;

const CATALOG: &str = r#"
version: 1
proxies:
  edge:
    listeners:
      - { name: web, port: 8080, protocol: http, routes: [ { match: { prefix: /a/ }, to: a }, { match: { prefix: / }, to: b } ] }
upstreams:
  a: { protocol: http1, endpoints: { static: ["127.0.0.1:1001"] } }
  b: { protocol: http1, endpoints: { static: ["127.0.0.1:1002", "127.0.0.1:1003"] } }
"#;

fn node() -> Option<Node> {
    Some(Node {
        id: "tool-1".into(),
        cluster: "edge".into(),
        ..Default::default()
    })
}

fn start() -> (TempDir, XdsServer, String) {
    let dir = TempDir::new("protocol");
    let catalog = dir.write("catalog.yaml", CATALOG);
    let server = XdsServer::start(&dir, &catalog, 0);
    server.wait_ready();
    let url = format!("http://127.0.0.1:{}", server.xds_port);
    (dir, server, url)
}

async fn next<T>(s: &mut tonic::Streaming<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("a response within 10s")
        .expect("no stream error")
        .expect("the stream stays open")
}

#[tokio::test(flavor = "multi_thread")]
async fn fetch_answers_once_then_says_up_to_date() {
    let (_dir, _server, url) = start();
    let mut lds = ListenerDiscoveryServiceClient::connect(url).await.unwrap();
    let req = DiscoveryRequest {
        node: node(),
        type_url: ResourceType::Listener.type_url().into(),
        ..Default::default()
    };
    let resp = lds.fetch_listeners(req.clone()).await.unwrap().into_inner();
    assert_eq!(resp.resources.len(), 1);
    assert!(!resp.version_info.is_empty());
    let again = DiscoveryRequest {
        version_info: resp.version_info,
        ..req
    };
    let status = lds.fetch_listeners(again).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::AlreadyExists);
}

#[tokio::test(flavor = "multi_thread")]
async fn standalone_cds_stream_serves_every_cluster_and_nothing_the_client_has() {
    let (_dir, server, url) = start();
    let mut cds = ClusterDiscoveryServiceClient::connect(url).await.unwrap();
    let (tx, rx) = mpsc::channel(4);
    // The standalone services accept requests without a type URL.
    tx.send(DiscoveryRequest {
        node: node(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut stream = cds
        .stream_clusters(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let resp = next(&mut stream).await;
    assert_eq!(resp.type_url, ResourceType::Cluster.type_url());
    assert_eq!(resp.resources.len(), 2);
    tx.send(DiscoveryRequest {
        version_info: resp.version_info.clone(),
        response_nonce: resp.nonce.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    // A second stream that says it already has this version (a reconnect) is not sent it again.
    let (tx2, rx2) = mpsc::channel(4);
    tx2.send(DiscoveryRequest {
        node: node(),
        version_info: resp.version_info.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let _stream2 = cds
        .stream_clusters(ReceiverStream::new(rx2))
        .await
        .unwrap()
        .into_inner();
    let version = resp.version_info.clone();
    tokio::task::spawn_blocking(move || {
        tests::wait_for(
            "both streams to hold the version",
            Duration::from_secs(10),
            || {
                let nodes = server.admin_json("/debug/nodes");
                let acked = nodes
                    .as_array()?
                    .iter()
                    .filter(|n| n["types"]["cds"]["acked"] == version.as_str())
                    .count();
                (acked == 2).then_some(())
            },
        );
        // One response in all: the ACK and the reconnect were not answered.
        assert_eq!(
            server.metric("xds_pushes_total{type=\"cds\",variant=\"sotw\"}"),
            1.0
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn delta_eds_sends_what_is_subscribed_and_nothing_twice() {
    let (_dir, _server, url) = start();
    let mut eds = EndpointDiscoveryServiceClient::connect(url).await.unwrap();
    let (tx, rx) = mpsc::channel(4);
    let type_url = ResourceType::Endpoint.type_url().to_string();
    tx.send(DeltaDiscoveryRequest {
        node: node(),
        type_url: type_url.clone(),
        resource_names_subscribe: vec!["a".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut stream = eds
        .delta_endpoints(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut stream).await;
    let names: Vec<&str> = first.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["a"]);
    // ACK and subscribe to b in one request: only b comes.
    tx.send(DeltaDiscoveryRequest {
        type_url: type_url.clone(),
        response_nonce: first.nonce.clone(),
        resource_names_subscribe: vec!["b".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let second = next(&mut stream).await;
    let names: Vec<&str> = second.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["b"]);
    assert!(second.removed_resources.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_without_a_node_is_refused() {
    let (_dir, _server, url) = start();
    let mut lds = ListenerDiscoveryServiceClient::connect(url).await.unwrap();
    let (tx, rx) = mpsc::channel(4);
    tx.send(DiscoveryRequest::default()).await.unwrap();
    let mut stream = lds
        .stream_listeners(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let err = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("node"), "{}", err.message());
}

/// The edge proxy routes everything to `to`, the only upstream of the catalog.
fn switch_catalog(to: &str) -> String {
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

/// What an ADS client saw, in order: (type, names it has after the response, route targets).
type Seen = Vec<(ResourceType, Vec<String>, Vec<String>)>;

fn cluster_names(resources: &[Any]) -> Vec<String> {
    resources
        .iter()
        .map(|any| Cluster::decode(any.value.as_slice()).unwrap().name)
        .collect()
}

/// Switching the only route from upstream a to upstream b and deleting a in one catalog change:
/// the proxy keeps cluster a until it has acknowledged routes that no longer use it, so no
/// request meets a route to a cluster it has removed (SotW over ADS, as Envoy speaks it: EDS
/// names follow the clusters).
#[tokio::test(flavor = "multi_thread")]
async fn sotw_ads_removes_a_cluster_only_after_the_routes_that_used_it() {
    let dir = TempDir::new("break-after-make-sotw");
    let catalog = dir.write("catalog.yaml", &switch_catalog("a"));
    let server = XdsServer::start(&dir, &catalog, 0);
    server.wait_ready();
    let url = format!("http://127.0.0.1:{}", server.xds_port);
    let mut ads = AggregatedDiscoveryServiceClient::connect(url)
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(16);
    let request =
        |t: ResourceType, names: Vec<String>, version: String, nonce: String| DiscoveryRequest {
            node: node(),
            type_url: t.type_url().into(),
            resource_names: names,
            version_info: version,
            response_nonce: nonce,
            ..Default::default()
        };
    tx.send(request(
        ResourceType::Cluster,
        vec![],
        String::new(),
        String::new(),
    ))
    .await
    .unwrap();
    tx.send(request(
        ResourceType::Listener,
        vec![],
        String::new(),
        String::new(),
    ))
    .await
    .unwrap();
    let mut stream = ads
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut seen: Seen = Vec::new();
    let mut changed_at = None;
    let mut eds_names: Vec<String> = Vec::new();
    let mut eds_version = String::new();
    loop {
        let resp = next(&mut stream).await;
        let t = ResourceType::from_type_url(&resp.type_url).unwrap();
        let (names, targets) = match t {
            ResourceType::Cluster => (cluster_names(&resp.resources), vec![]),
            ResourceType::Route => (vec![], route_targets(&resp.resources)),
            _ => (vec![], vec![]),
        };
        seen.push((t, names.clone(), targets));
        // ACK, as Envoy does, with the names it wants.
        let wanted = match t {
            ResourceType::Endpoint => eds_names.clone(),
            ResourceType::Route => vec!["web".to_string()],
            _ => vec![],
        };
        if t == ResourceType::Endpoint {
            eds_version = resp.version_info.clone();
        }
        tx.send(request(
            t,
            wanted,
            resp.version_info.clone(),
            resp.nonce.clone(),
        ))
        .await
        .unwrap();
        if t == ResourceType::Cluster && names != eds_names {
            // New clusters: Envoy asks for their endpoints.
            eds_names = names.clone();
            tx.send(request(
                ResourceType::Endpoint,
                eds_names.clone(),
                eds_version.clone(),
                String::new(),
            ))
            .await
            .unwrap();
        }
        if t == ResourceType::Listener && seen.iter().all(|(t, ..)| *t != ResourceType::Route) {
            tx.send(request(
                ResourceType::Route,
                vec!["web".into()],
                String::new(),
                String::new(),
            ))
            .await
            .unwrap();
        }
        let routed_to_a = seen
            .iter()
            .any(|(t, _, to)| *t == ResourceType::Route && to == &["a"]);
        if changed_at.is_none() && routed_to_a {
            changed_at = Some(seen.len());
            std::fs::write(&catalog, switch_catalog("b")).unwrap();
        }
        if changed_at.is_some() && t == ResourceType::Cluster && names == ["b"] {
            break;
        }
    }
    let after = &seen[changed_at.unwrap()..];
    let first_cds = after
        .iter()
        .find(|(t, ..)| *t == ResourceType::Cluster)
        .unwrap();
    assert_eq!(first_cds.1, ["a", "b"], "{after:?}");
    let routes_to_b = after
        .iter()
        .position(|(t, _, to)| *t == ResourceType::Route && to == &["b"])
        .unwrap_or_else(|| panic!("no route to b in {after:?}"));
    let a_removed = after
        .iter()
        .position(|(t, names, _)| *t == ResourceType::Cluster && names == &["b"])
        .unwrap();
    assert!(routes_to_b < a_removed, "{after:?}");
}

/// One delta response as the client saw it.
#[derive(Debug)]
struct DeltaSeen {
    t: ResourceType,
    added: Vec<String>,
    removed: Vec<String>,
    targets: Vec<String>,
}

/// The same switch over delta ADS: cluster a is removed only after the routes to b are
/// acknowledged.
#[tokio::test(flavor = "multi_thread")]
async fn delta_ads_removes_a_cluster_only_after_the_routes_that_used_it() {
    let dir = TempDir::new("break-after-make-delta");
    let catalog = dir.write("catalog.yaml", &switch_catalog("a"));
    let server = XdsServer::start(&dir, &catalog, 0);
    server.wait_ready();
    let url = format!("http://127.0.0.1:{}", server.xds_port);
    let mut ads = AggregatedDiscoveryServiceClient::connect(url)
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(16);
    let subscribe = |t: ResourceType, names: Vec<String>, first: bool| DeltaDiscoveryRequest {
        node: if first { node() } else { None },
        type_url: t.type_url().into(),
        resource_names_subscribe: names,
        ..Default::default()
    };
    tx.send(subscribe(ResourceType::Cluster, vec![], true))
        .await
        .unwrap();
    tx.send(subscribe(ResourceType::Listener, vec![], false))
        .await
        .unwrap();
    tx.send(subscribe(ResourceType::Route, vec!["web".into()], false))
        .await
        .unwrap();
    let mut stream = ads
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut seen: Vec<DeltaSeen> = Vec::new();
    let mut changed_at = None;
    loop {
        let resp = next(&mut stream).await;
        let t = ResourceType::from_type_url(&resp.type_url).unwrap();
        let added: Vec<String> = resp.resources.iter().map(|r| r.name.clone()).collect();
        let bodies: Vec<Any> = resp
            .resources
            .iter()
            .filter_map(|r| r.resource.clone())
            .collect();
        let targets = if t == ResourceType::Route {
            route_targets(&bodies)
        } else {
            vec![]
        };
        seen.push(DeltaSeen {
            t,
            added: added.clone(),
            removed: resp.removed_resources.clone(),
            targets,
        });
        tx.send(DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        if t == ResourceType::Cluster {
            // Envoy follows its clusters' endpoints.
            let mut req = subscribe(ResourceType::Endpoint, added.clone(), false);
            req.resource_names_unsubscribe = resp.removed_resources.clone();
            if !req.resource_names_subscribe.is_empty()
                || !req.resource_names_unsubscribe.is_empty()
            {
                tx.send(req).await.unwrap();
            }
        }
        if changed_at.is_none()
            && seen
                .iter()
                .any(|s| s.t == ResourceType::Route && s.targets == ["a"])
        {
            changed_at = Some(seen.len());
            std::fs::write(&catalog, switch_catalog("b")).unwrap();
        }
        if changed_at.is_some()
            && t == ResourceType::Cluster
            && resp.removed_resources.contains(&"a".to_string())
        {
            break;
        }
    }
    let after = &seen[changed_at.unwrap()..];
    let first_cds = after.iter().find(|s| s.t == ResourceType::Cluster).unwrap();
    assert_eq!(first_cds.added, ["b"], "{after:?}");
    assert!(first_cds.removed.is_empty(), "{after:?}");
    let routes_to_b = after
        .iter()
        .position(|s| s.t == ResourceType::Route && s.targets == ["b"])
        .unwrap_or_else(|| panic!("no route to b in {after:?}"));
    let a_removed = after
        .iter()
        .position(|s| s.t == ResourceType::Cluster && s.removed == ["a"])
        .unwrap();
    assert!(routes_to_b < a_removed, "{after:?}");
}
