//! What the gRPC clients of the xDS tests share: the node they present and a bounded wait for
//! the next response.

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;

/// The node of a test client of proxy role `cluster`.
pub fn node(cluster: &str) -> Option<Node> {
    Some(Node {
        id: "tool-1".into(),
        cluster: cluster.into(),
        ..Default::default()
    })
}

/// The next message of a response stream; panics after 10 s, on an error or at its end.
pub async fn next<T>(s: &mut tonic::Streaming<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("a response within 10s")
        .expect("no stream error")
        .expect("the stream stays open")
}
