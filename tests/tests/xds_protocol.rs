//! The xDS services as a client other than Envoy sees them: the standalone CDS, EDS and LDS
//! services (SotW, delta and fetch) of a real xds-server process, through a gRPC client.

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::envoy::service::endpoint::v3::endpoint_discovery_service_client::EndpointDiscoveryServiceClient;
use envoy_types::pb::envoy::service::listener::v3::listener_discovery_service_client::ListenerDiscoveryServiceClient;
use tests::xds_client::next;
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
    tests::xds_client::node("edge")
}

fn start() -> (TempDir, XdsServer, String) {
    let dir = TempDir::new("protocol");
    let catalog = dir.write("catalog.yaml", CATALOG);
    let server = XdsServer::start(&dir, &catalog, 0);
    server.wait_ready();
    let url = format!("http://127.0.0.1:{}", server.xds_port);
    (dir, server, url)
}

/// Opens a standalone CDS stream of proxy `edge` (its first request carries no type URL, as
/// the standalone services allow): the sender for more requests, and the server's answer.
async fn cds_stream(
    url: String,
) -> (
    mpsc::Sender<DiscoveryRequest>,
    Result<
        tonic::Response<
            tonic::Streaming<envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse>,
        >,
        tonic::Status,
    >,
) {
    cds_stream_having(url, String::new()).await
}

/// [`cds_stream`], the first request saying the client has `version` (a reconnect).
async fn cds_stream_having(
    url: String,
    version: String,
) -> (
    mpsc::Sender<DiscoveryRequest>,
    Result<
        tonic::Response<
            tonic::Streaming<envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse>,
        >,
        tonic::Status,
    >,
) {
    let mut cds = ClusterDiscoveryServiceClient::connect(url).await.unwrap();
    let (tx, rx) = mpsc::channel(4);
    tx.send(DiscoveryRequest {
        node: node(),
        version_info: version,
        ..Default::default()
    })
    .await
    .unwrap();
    let r = cds.stream_clusters(ReceiverStream::new(rx)).await;
    (tx, r)
}

/// ACKs `resp` on the stream `tx` sends to.
async fn ack(
    tx: &mpsc::Sender<DiscoveryRequest>,
    resp: &envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse,
) {
    tx.send(DiscoveryRequest {
        version_info: resp.version_info.clone(),
        response_nonce: resp.nonce.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
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
    let (tx, stream) = cds_stream(url.clone()).await;
    let mut stream = stream.unwrap().into_inner();
    let resp = next(&mut stream).await;
    assert_eq!(resp.type_url, ResourceType::Cluster.type_url());
    assert_eq!(resp.resources.len(), 2);
    ack(&tx, &resp).await;
    // A second stream that says it already has this version (a reconnect) gets it once more,
    // unchanged: Envoy resets its reconnect backoff only when a new stream receives something.
    let (tx2, stream2) = cds_stream_having(url, resp.version_info.clone()).await;
    let mut stream2 = stream2.unwrap().into_inner();
    let again = next(&mut stream2).await;
    assert_eq!(again.version_info, resp.version_info);
    assert_eq!(again.resources, resp.resources);
    ack(&tx2, &again).await;
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
        // One response per stream: the ACKs were not answered.
        assert_eq!(
            server.metric("xds_pushes_total{type=\"cds\",variant=\"sotw\"}"),
            2.0
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

/// A request over 4 MiB ends the stream with an error the client can read; streams opening
/// and closing are logged with the node, the proxy and how long they lived.
#[tokio::test(flavor = "multi_thread")]
async fn oversized_requests_are_refused_and_streams_are_logged() {
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    let (_dir, server, url) = start();
    let mut ads = AggregatedDiscoveryServiceClient::connect(url.clone())
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(4);
    tx.send(DiscoveryRequest {
        node: node(),
        type_url: ResourceType::Cluster.type_url().into(),
        // 5 MiB of names.
        resource_names: (0..5 * 1024).map(|i| format!("{i:01023}")).collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut stream = ads
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let err = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::ResourceExhausted | tonic::Code::OutOfRange
        ),
        "{err:?}"
    );
    // A normal stream still works, and is logged when it opens and closes.
    let (tx, stream) = cds_stream(url).await;
    let mut stream = stream.unwrap().into_inner();
    assert_eq!(next(&mut stream).await.resources.len(), 2);
    drop(tx);
    drop(stream);
    tokio::task::spawn_blocking(move || {
        tests::wait_for("the close to be logged", Duration::from_secs(10), || {
            let log = server.process.output();
            let opened = log.lines().any(|l| {
                l.contains("xDS stream opened") && l.contains("tool-1") && l.contains("edge")
            });
            let closed = log
                .lines()
                .any(|l| l.contains("xDS stream closed") && l.contains("lived_s"));
            (opened && closed).then_some(())
        })
    })
    .await
    .unwrap();
}

/// With `--max-streams 1`, a second stream is refused with RESOURCE_EXHAUSTED (and counted)
/// until the first one closes.
#[tokio::test(flavor = "multi_thread")]
async fn streams_over_the_cap_are_refused_until_one_closes() {
    let dir = TempDir::new("protocol-cap");
    let catalog = dir.write("catalog.yaml", CATALOG);
    let server = XdsServer::start_with(&dir, &catalog, 0, &["--max-streams", "1"]);
    server.wait_ready();
    let url = format!("http://127.0.0.1:{}", server.xds_port);
    let open = cds_stream;
    let (first_tx, first) = open(url.clone()).await;
    let mut first = first.expect("the first stream is served").into_inner();
    assert_eq!(next(&mut first).await.resources.len(), 2);
    let (_tx, second) = open(url.clone()).await;
    let err = second.expect_err("a second stream over the cap");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    drop(first_tx);
    drop(first);
    let metric_server = std::sync::Arc::new(server);
    let m = metric_server.clone();
    tokio::task::spawn_blocking(move || {
        assert_eq!(
            m.metric("xds_limit_refusals_total{limit=\"max_streams\"}"),
            1.0
        );
    })
    .await
    .unwrap();
    // Once the first has closed, a new one is served.
    let mut served = None;
    for _ in 0..100 {
        let (tx, r) = open(url.clone()).await;
        if let Ok(s) = r {
            served = Some((tx, s.into_inner()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_tx, mut third) = served.expect("a stream is served again once the first closed");
    assert_eq!(next(&mut third).await.resources.len(), 2);
}
