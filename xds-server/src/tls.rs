//! The xDS port's connections: plain TCP, or TLS with a server certificate that changes without
//! a restart (made by the control plane's CA and renewed at half life, or read from files and
//! reloaded when they change). Client certificates signed by the CA are verified when presented
//! and passed on to the streams, which decide what a stream may read.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::ca::{CaSet, Leaf};

/// How long the server certificate the CA makes is valid; it is renewed at half life.
pub const SERVER_CERT_TTL: Duration = Duration::from_secs(24 * 3600);

/// Where the xDS port's server certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerCertificate {
    /// Made by the control plane's CA for these DNS names and IP addresses.
    FromCa(Vec<String>),
    /// PEM files, re-read when they change.
    Files {
        /// The certificate chain.
        chain: PathBuf,
        /// Its private key.
        key: PathBuf,
    },
}

impl ServerCertificate {
    /// The one rule for the TLS flags of `serve`: `--xds-tls` needs a CA and names; files come
    /// as a pair; the two ways exclude each other. `None`: plaintext.
    pub fn from_flags(
        xds_tls: bool,
        names: &[String],
        chain: Option<PathBuf>,
        key: Option<PathBuf>,
        has_ca: bool,
    ) -> Result<Option<ServerCertificate>, String> {
        match (xds_tls, chain, key) {
            (true, Some(_), _) | (true, _, Some(_)) => Err(
                "--xds-tls makes the certificate from the CA; --xds-tls-cert/--xds-tls-key give one: use one way"
                    .into(),
            ),
            (true, None, None) if !has_ca => {
                Err("--xds-tls needs --ca (the CA that signs the server certificate)".into())
            }
            (true, None, None) if names.is_empty() => Err(
                "--xds-tls needs --xds-tls-name: the names proxies dial (e.g. the load balancer's DNS name)"
                    .into(),
            ),
            (true, None, None) => Ok(Some(ServerCertificate::FromCa(names.to_vec()))),
            (false, Some(chain), Some(key)) => Ok(Some(ServerCertificate::Files { chain, key })),
            (false, Some(_), None) | (false, None, Some(_)) => {
                Err("--xds-tls-cert and --xds-tls-key go together".into())
            }
            (false, None, None) if !names.is_empty() => {
                Err("--xds-tls-name is only used with --xds-tls".into())
            }
            (false, None, None) => Ok(None),
        }
    }
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate or key files could not be read or parsed.
    #[error("{path}: {message}")]
    Files {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The CA could not sign.
    #[error(transparent)]
    Ca(#[from] crate::ca::CaError),
    /// rustls refused the configuration.
    #[error("TLS: {0}")]
    Rustls(String),
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A certificate chain and key (PEM) as rustls serves them.
fn certified_key(chain_pem: &[u8], key_pem: &[u8], name: &str) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{name}: certificate: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{name}: no certificate in it"));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("{name}: private key: {e}"))?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{name}: private key: {e}"))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| format!("{name}: the key does not belong to the certificate ({e})"))?;
    Ok(certified)
}

/// Serves whichever certificate is current.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// The xDS port's TLS: an acceptor whose certificate a background task keeps fresh.
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    _refresh: tokio::task::JoinHandle<()>,
}

impl ServerTls {
    /// Sets up TLS; client certificates are verified against `cas` when there is one and a
    /// client presents one (streams decide whether one is required).
    pub async fn new(
        cert: &ServerCertificate,
        cas: Option<Arc<CaSet>>,
    ) -> Result<ServerTls, TlsError> {
        let (first, not_after, files) = match cert {
            ServerCertificate::FromCa(names) => {
                let cas = cas.as_ref().ok_or_else(|| {
                    TlsError::Rustls("a certificate from the CA needs a CA".into())
                })?;
                let (key, end) = issue_server(cas, names).await?;
                (key, end, None)
            }
            ServerCertificate::Files { chain, key } => {
                let (certified, contents) = read_files(chain, key)?;
                (certified, None, Some(contents))
            }
        };
        let current = Arc::new(Current(RwLock::new(Arc::new(first))));
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let builder = match &cas {
            Some(cas) => {
                let mut roots = rustls::RootCertStore::empty();
                for der in CertificateDer::pem_slice_iter(cas.bundle_pem().as_bytes()) {
                    let der = der.map_err(|e| TlsError::Rustls(e.to_string()))?;
                    roots
                        .add(der)
                        .map_err(|e| TlsError::Rustls(e.to_string()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        // A proxy asks for its first certificate without one.
                        .allow_unauthenticated()
                        .build()
                        .map_err(|e| TlsError::Rustls(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let refresh = tokio::spawn(refresh(cert.clone(), cas, current, not_after, files));
        Ok(ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            _refresh: refresh,
        })
    }
}

async fn issue_server(
    cas: &CaSet,
    names: &[String],
) -> Result<(CertifiedKey, Option<SystemTime>), TlsError> {
    let issued = cas
        .current
        .issue(&Leaf {
            names: names.to_vec(),
            server: true,
            ttl: SERVER_CERT_TTL,
            ..Leaf::default()
        })
        .await?;
    let key = certified_key(
        issued.certificate_pem.as_bytes(),
        issued.private_key_pem.as_bytes(),
        "the server certificate",
    )
    .map_err(TlsError::Rustls)?;
    Ok((key, Some(issued.not_after)))
}

/// The certificate files' contents.
type FileContents = (Vec<u8>, Vec<u8>);

fn read_files(chain: &PathBuf, key: &PathBuf) -> Result<(CertifiedKey, FileContents), TlsError> {
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| TlsError::Files {
            path: p.clone(),
            message: e.to_string(),
        })
    };
    let contents = (read(chain)?, read(key)?);
    let certified = certified_key(&contents.0, &contents.1, &chain.display().to_string()).map_err(
        |message| TlsError::Files {
            path: chain.clone(),
            message,
        },
    )?;
    Ok((certified, contents))
}

/// Keeps the served certificate fresh: a CA-made one is renewed at half life; files are read
/// again when their content changes. A failure keeps the certificate served so far.
async fn refresh(
    cert: ServerCertificate,
    cas: Option<Arc<CaSet>>,
    current: Arc<Current>,
    mut not_after: Option<SystemTime>,
    mut last_files: Option<FileContents>,
) {
    loop {
        let wait = match (&cert, not_after) {
            (ServerCertificate::FromCa(_), Some(end)) => {
                end.duration_since(SystemTime::now()).unwrap_or_default() / 2
            }
            _ => Duration::from_secs(2),
        };
        tokio::time::sleep(wait.max(Duration::from_secs(1))).await;
        let next = match (&cert, &cas) {
            (ServerCertificate::FromCa(names), Some(cas)) => match issue_server(cas, names).await {
                Ok((key, end)) => {
                    not_after = end;
                    tracing::info!("xDS server certificate renewed");
                    Some(key)
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot renew the xDS server certificate; keeping the current one");
                    None
                }
            },
            (ServerCertificate::Files { chain, key }, _) => {
                match (std::fs::read(chain), std::fs::read(key)) {
                    (Ok(c), Ok(k)) if last_files.as_ref() != Some(&(c.clone(), k.clone())) => {
                        let loaded = certified_key(&c, &k, &chain.display().to_string());
                        last_files = Some((c, k));
                        match loaded {
                            Ok(key) => {
                                tracing::info!(file = %chain.display(), "xDS server certificate reloaded");
                                Some(key)
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "cannot use the changed xDS server certificate; keeping the current one");
                                None
                            }
                        }
                    }
                    _ => None,
                }
            }
            (ServerCertificate::FromCa(_), None) => None,
        };
        if let Some(key) = next {
            *current.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        }
    }
}

/// Who is on the other end of an xDS connection.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// Its address.
    pub remote: Option<SocketAddr>,
    /// The client certificate chain it presented over TLS, verified against the CA.
    pub certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// One accepted xDS connection.
pub enum Conn {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        match self {
            Conn::Plain(s) => Peer {
                remote: s.peer_addr().ok(),
                certificates: None,
            },
            Conn::Tls(s) => {
                let (tcp, session) = s.get_ref();
                Peer {
                    remote: tcp.peer_addr().ok(),
                    certificates: session
                        .peer_certificates()
                        .map(|c| Arc::new(c.iter().map(|d| d.clone().into_owned()).collect())),
                }
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// How long a client gets to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts xDS connections in a task of its own: TCP_NODELAY on each (xDS responses are small
/// writes that Nagle's algorithm would hold back), a pause after an accept error (out of file
/// descriptors, say) instead of a busy loop, and TLS handshakes each in its own task, so a
/// slow client holds up no other.
pub fn incoming(
    listener: TcpListener,
    tls: Option<ServerTls>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<Conn>> {
    const FIRST_PAUSE: Duration = Duration::from_millis(5);
    const LONGEST_PAUSE: Duration = Duration::from_secs(1);
    let (tx, rx) = mpsc::channel(64);
    let acceptor = tls.map(Arc::new);
    tokio::spawn(async move {
        let mut pause = FIRST_PAUSE;
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => {
                    pause = FIRST_PAUSE;
                    stream
                }
                Err(e) => {
                    tracing::warn!(error = %e, pause_ms = pause.as_millis() as u64, "cannot accept an xDS connection; pausing");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(LONGEST_PAUSE);
                    continue;
                }
            };
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
            match &acceptor {
                None => {
                    if tx.send(Ok(Conn::Plain(stream))).await.is_err() {
                        return;
                    }
                }
                Some(tls) => {
                    let (tls, tx) = (tls.clone(), tx.clone());
                    tokio::spawn(async move {
                        let remote = stream.peer_addr().ok();
                        let handshake = tls.acceptor.accept(stream);
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                            Ok(Ok(s)) => {
                                let _ = tx.send(Ok(Conn::Tls(Box::new(s)))).await;
                            }
                            Ok(Err(e)) => {
                                tracing::info!(peer = ?remote, error = %e, "xDS TLS handshake failed")
                            }
                            Err(_) => {
                                tracing::info!(peer = ?remote, "xDS TLS handshake timed out")
                            }
                        }
                    });
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    #[test]
    fn the_tls_flags_rule() {
        let names = vec!["xds.internal".to_string()];
        let rule = |tls, names: &[String], cert: Option<&str>, key: Option<&str>, ca| {
            ServerCertificate::from_flags(tls, names, cert.map(Into::into), key.map(Into::into), ca)
        };
        assert_eq!(rule(false, &[], None, None, false), Ok(None));
        assert_eq!(
            rule(true, &names, None, None, true),
            Ok(Some(ServerCertificate::FromCa(names.clone())))
        );
        assert!(
            rule(true, &names, None, None, false)
                .unwrap_err()
                .contains("--ca")
        );
        assert!(
            rule(true, &[], None, None, true)
                .unwrap_err()
                .contains("--xds-tls-name")
        );
        assert!(rule(true, &names, Some("c"), Some("k"), true).is_err());
        assert!(
            rule(false, &[], Some("c"), None, false)
                .unwrap_err()
                .contains("together")
        );
        assert!(rule(false, &names, None, None, true).is_err());
        assert!(matches!(
            rule(false, &[], Some("c"), Some("k"), false),
            Ok(Some(ServerCertificate::Files { .. }))
        ));
    }

    #[tokio::test]
    async fn accepted_xds_connections_have_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = incoming(listener, None);
        let _client = TcpStream::connect(addr).await.unwrap();
        let Conn::Plain(accepted) = incoming.next().await.unwrap().unwrap() else {
            panic!("not plain TCP");
        };
        assert!(accepted.nodelay().unwrap());
    }
}
