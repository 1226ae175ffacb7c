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

/// A TLS client configuration for the xDS port: trusting the CA certificates in `ca_pem`,
/// presenting `client` (certificate chain PEM, key PEM) when given, offering h2.
pub fn tls_config(
    ca_pem: &str,
    client: Option<(&str, &str)>,
) -> anyhow::Result<std::sync::Arc<rustls::ClientConfig>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(der?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots);
    let mut config = match client {
        Some((chain, key)) => builder.with_client_auth_cert(
            CertificateDer::pem_slice_iter(chain.as_bytes()).collect::<Result<_, _>>()?,
            PrivateKeyDer::from_pem_slice(key.as_bytes())?,
        )?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(std::sync::Arc::new(config))
}

/// A connector for tonic's `Endpoint::connect_with_connector`: TLS with `config` to
/// 127.0.0.1:`port`, whose certificate must name 127.0.0.1.
pub fn tls_connector(
    config: std::sync::Arc<rustls::ClientConfig>,
    port: u16,
) -> impl tower::Service<
    http::Uri,
    Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |_: http::Uri| {
        let config = config.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            tcp.set_nodelay(true)?;
            let name =
                rustls_pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    })
}
