//! `xds-server identity`: gets this task's proxy certificate from the control plane and keeps
//! it fresh, in files Envoy reads through SDS.
//!
//! The key is made here and never leaves the task: the control plane signs a CSR. What is
//! written into the directory, each file replaced atomically:
//! - `certificate.pem`, `private_key.pem` (0600), `trust_bundle.pem`: for people and tools;
//! - [`SDS_CERTIFICATE`] and [`SDS_TRUST`]: the same as SDS resources, which the bootstrap's
//!   xDS cluster reads (`bootstrap --identity-dir`), and reads again when they are replaced;
//! - [`ASKED_FILE`]: the `--proxy` the certificate was asked for, which may be an alias (an App
//!   Mesh virtual node's ARN) of the proxy the certificate names.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::ProvideCredentials;
use common::files::{Dir, FileOptions};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::json;

use super::issuer::{CertificateRequest, CertificateResponse, ErrorBody, PATH};
use super::sts;

/// The SDS file of the client certificate (secret [`CERTIFICATE_SECRET`]).
pub const SDS_CERTIFICATE: &str = "sds-certificate.json";
/// The SDS file of the trust bundle (secret [`TRUST_SECRET`]).
pub const SDS_TRUST: &str = "sds-trust.json";
/// The secret names in those files.
pub const CERTIFICATE_SECRET: &str = "xds-identity";
/// See [`CERTIFICATE_SECRET`].
pub const TRUST_SECRET: &str = "xds-trust";
/// The PEM files.
pub const CERTIFICATE_FILE: &str = "certificate.pem";
/// See [`CERTIFICATE_FILE`]; mode 0600.
pub const PRIVATE_KEY_FILE: &str = "private_key.pem";
/// See [`CERTIFICATE_FILE`].
pub const TRUST_BUNDLE_FILE: &str = "trust_bundle.pem";

/// The `--proxy` the certificate in place was asked for.
pub const ASKED_FILE: &str = "asked-proxy";

/// The longest wait between two attempts after a failure.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// The shortest wait before a renewal, whatever the certificate says.
const MIN_RENEW_WAIT: Duration = Duration::from_secs(5);

/// What `identity` is told.
#[derive(Debug, Clone)]
pub struct IdentityClient {
    /// The control plane's host, as dialled and as its certificate names it.
    pub xds_host: String,
    /// Its port.
    pub xds_port: u16,
    /// The CA bundle (PEM) that signed the control plane's certificate; `None`: the system's
    /// root certificates.
    pub xds_ca: Option<PathBuf>,
    /// Where the files go.
    pub out: PathBuf,
    /// The proxy to be (needed when the task role is the identity of several).
    pub proxy: Option<String>,
    /// The control plane's id, signed into the request (default: the host).
    pub server_id: String,
}

/// A certificate in place.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    /// When it was issued.
    pub issued: SystemTime,
    /// When it expires.
    pub not_after: SystemTime,
}

impl Held {
    /// When to ask for the next one: at half life, ±10% of that so that a fleet started
    /// together does not renew together, and never sooner than [`MIN_RENEW_WAIT`] from now.
    pub fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.issued)
            .unwrap_or_default();
        (self.issued + common::duration::jitter(life / 2)).max(SystemTime::now() + MIN_RENEW_WAIT)
    }
}

/// Why no certificate was got.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The control plane refused: asking again will not help.
    #[error("the control plane refused: {0}")]
    Refused(String),
    /// Anything that may pass: the network, STS, a rate limit, a control plane starting.
    #[error("{0}")]
    Transient(String),
    /// The files could not be written.
    #[error("{path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl IdentityError {
    fn retryable(&self) -> bool {
        matches!(self, IdentityError::Transient(_))
    }
}

/// The certificates the control plane's must chain to: `xds_ca` (or the system's roots), and
/// the bundle of the last answer, which carries the next CA while the control plane rotates.
fn roots(xds_ca: Option<&Path>, bundle: &Path) -> Result<rustls::RootCertStore, IdentityError> {
    let mut roots = rustls::RootCertStore::empty();
    let add = |roots: &mut rustls::RootCertStore, bytes: &[u8]| {
        for der in CertificateDer::pem_slice_iter(bytes).flatten() {
            let _ = roots.add(der);
        }
    };
    match xds_ca {
        Some(file) => {
            let bytes = std::fs::read(file)
                .map_err(|e| IdentityError::Refused(format!("--xds-ca {}: {e}", file.display())))?;
            add(&mut roots, &bytes);
            if roots.is_empty() {
                return Err(IdentityError::Refused(format!(
                    "--xds-ca {}: no PEM certificate in it",
                    file.display()
                )));
            }
        }
        None => {
            for der in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(der);
            }
        }
    }
    if let Ok(bytes) = std::fs::read(bundle) {
        add(&mut roots, &bytes);
    }
    if roots.is_empty() {
        return Err(IdentityError::Refused(
            "no certificate to check the control plane with: give --xds-ca".into(),
        ));
    }
    Ok(roots)
}

/// When a certificate (PEM) was issued (the control plane back-dates by a minute for slow
/// clocks) and when it expires, and the proxy of its SPIFFE ID.
fn read_certificate(pem: &[u8]) -> Option<(Held, Option<String>)> {
    let der = CertificateDer::from_pem_slice(pem).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let at = |t: x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
    };
    let proxy = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|san| {
            san.value.general_names.iter().find_map(|n| match n {
                x509_parser::extensions::GeneralName::URI(uri) => {
                    uri.rsplit_once("/proxy/").map(|(_, p)| p.to_string())
                }
                _ => None,
            })
        });
    let held = Held {
        issued: at(cert.validity().not_before) + Duration::from_secs(60),
        not_after: at(cert.validity().not_after),
    };
    Some((held, proxy))
}

impl IdentityClient {
    /// The certificate Envoy reads from `out` now, if there is one that has not expired, with
    /// its trust bundle beside it, for the proxy asked for.
    pub fn held(&self) -> Option<Held> {
        let sds: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.out.join(SDS_CERTIFICATE)).ok()?).ok()?;
        let pem = sds["resources"][0]["tls_certificate"]["certificate_chain"]["inline_string"]
            .as_str()?;
        let (held, proxy) = read_certificate(pem.as_bytes())?;
        // Asked as an alias, the certificate names the proxy the alias selects.
        let asked = std::fs::read_to_string(self.out.join(ASKED_FILE)).ok();
        let wanted = self
            .proxy
            .as_ref()
            .is_none_or(|p| proxy.as_ref() == Some(p) || asked.as_deref() == Some(p.as_str()));
        (wanted && held.not_after > SystemTime::now() && self.out.join(SDS_TRUST).exists())
            .then_some(held)
    }

    /// Asks once: a new key, a signed STS request, the certificate, the files.
    pub async fn fetch(&self) -> Result<Held, IdentityError> {
        let transient = |e: String| IdentityError::Transient(e);
        let config = common::aws::sdk_config().await;
        let region = config
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".into());
        let credentials = config
            .credentials_provider()
            .ok_or_else(|| IdentityError::Refused("no AWS credentials (the task role)".into()))?
            .provide_credentials()
            .await
            .map_err(|e| transient(format!("AWS credentials: {}", common::aws::error_chain(&e))))?;
        let (key, csr) = key_and_csr().map_err(IdentityError::Refused)?;
        let signed = sts::sign_request(
            &credentials,
            &region,
            &sts::endpoint(&region),
            &self.server_id,
            &csr,
            SystemTime::now(),
        )
        .map_err(IdentityError::Refused)?;
        let request = CertificateRequest {
            sts: signed,
            csr,
            proxy: self.proxy.clone(),
        };
        let answer = self.request(&request).await?;
        // The control plane was verified by TLS; still, the certificate must be for our key.
        let der = CertificateDer::from_pem_slice(answer.certificate.as_bytes())
            .map_err(|e| transient(format!("the certificate in the answer: {e}")))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| transient(format!("the certificate in the answer: {e}")))?;
        if cert.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
            return Err(IdentityError::Refused(
                "the certificate in the answer is not for our key".into(),
            ));
        }
        let issued = SystemTime::now();
        let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(answer.not_after);
        if not_after <= issued {
            return Err(transient(format!(
                "the control plane answered with a certificate that has expired already (at {} s since the epoch; is its CA or its clock right?)",
                answer.not_after
            )));
        }
        self.write(&answer, &key.serialize_pem())?;
        if let Some(asked) = self.proxy.as_ref().filter(|p| **p != answer.proxy) {
            tracing::info!(asked = %asked, proxy = %answer.proxy, "the proxy asked for is an alias: the certificate names the proxy it selects");
        }
        tracing::info!(
            proxy = %answer.proxy,
            spiffe_id = %answer.spiffe_id,
            valid_for_secs = not_after.duration_since(issued).unwrap_or_default().as_secs(),
            dir = %self.out.display(),
            "identity certificate written"
        );
        Ok(Held { issued, not_after })
    }

    /// Posts one request to the identity endpoint (over TLS checked with `xds_ca`, and the
    /// trust bundle in `out` if there is one).
    pub async fn request(
        &self,
        request: &CertificateRequest,
    ) -> Result<CertificateResponse, IdentityError> {
        let transient = |e: String| IdentityError::Transient(e);
        // The CA given, and the bundle of the last answer (which carries the next CA while
        // the control plane rotates).
        let roots = roots(self.xds_ca.as_deref(), &self.out.join(TRUST_BUNDLE_FILE))?;
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| IdentityError::Refused(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(connector);
        let host = if self.xds_host.contains(':') {
            format!("[{}]", self.xds_host)
        } else {
            self.xds_host.clone()
        };
        let url = format!("https://{host}:{}{PATH}", self.xds_port);
        let body = serde_json::to_vec(request).map_err(|e| transient(e.to_string()))?;
        let req = hyper::Request::post(&url)
            .header("content-type", "application/json")
            .header(
                "user-agent",
                concat!("xds-server-identity/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| IdentityError::Refused(format!("{url}: {e}")))?;
        let work = async {
            let response = client
                .request(req)
                .await
                .map_err(|e| transient(format!("{url}: {}", common::aws::error_chain(&e))))?;
            let status = response.status();
            let json = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json"));
            let bytes = Limited::new(response.into_body(), 1024 * 1024)
                .collect()
                .await
                .map_err(|e| transient(format!("{url}: reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, IdentityError>((status, json, bytes))
        };
        let (status, json, bytes) = tokio::time::timeout(Duration::from_secs(30), work)
            .await
            .map_err(|_| transient(format!("{url}: no answer within 30s")))??;
        if !json {
            // A gRPC server's answer to an unknown path: an older control plane, or not the
            // control plane at all.
            return Err(IdentityError::Refused(format!(
                "{url} answered HTTP {} without JSON: this is no xds-server identity endpoint (serve needs --ca and TLS on the xDS port)",
                status.as_u16()
            )));
        }
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| transient(format!("{url}: the answer: {e}")));
        }
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|b| b.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(200).collect());
        let message = format!("HTTP {}: {message}", status.as_u16());
        // 400, 401 and 403 say the request is wrong or not allowed; the rest may pass.
        if matches!(status.as_u16(), 400 | 401 | 403 | 404) {
            Err(IdentityError::Refused(message))
        } else {
            Err(transient(message))
        }
    }

    fn write(&self, answer: &CertificateResponse, key_pem: &str) -> Result<(), IdentityError> {
        let failed = |path: &Path| {
            let path = path.to_path_buf();
            move |source| IdentityError::Write { path, source }
        };
        let dir = Dir::create(&self.out).map_err(failed(&self.out))?;
        let secret = |name: &str, body: serde_json::Value| {
            let mut resource = json!({
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                "name": name,
            });
            if let (Some(r), Some(b)) = (resource.as_object_mut(), body.as_object()) {
                r.extend(b.clone());
            }
            serde_json::to_vec_pretty(&json!({ "resources": [resource] })).unwrap_or_default()
        };
        let certificate = secret(
            CERTIFICATE_SECRET,
            json!({ "tls_certificate": {
                "certificate_chain": { "inline_string": answer.certificate },
                "private_key": { "inline_string": key_pem },
            } }),
        );
        let trust = secret(
            TRUST_SECRET,
            json!({ "validation_context": { "trusted_ca": { "inline_string": answer.trust_bundle } } }),
        );
        let public = FileOptions {
            mode: Some(0o644),
            ..FileOptions::default()
        };
        let private = FileOptions {
            mode: Some(0o600),
            ..FileOptions::default()
        };
        // The key before its certificate, the trust before the certificate that needs it; the
        // SDS certificate last, as it is what Envoy switches on.
        let asked = self.proxy.as_deref().unwrap_or_default();
        let files: [(&str, &[u8], FileOptions); 6] = [
            (ASKED_FILE, asked.as_bytes(), public),
            (TRUST_BUNDLE_FILE, answer.trust_bundle.as_bytes(), public),
            (PRIVATE_KEY_FILE, key_pem.as_bytes(), private),
            (CERTIFICATE_FILE, answer.certificate.as_bytes(), public),
            (SDS_TRUST, &trust, public),
            (SDS_CERTIFICATE, &certificate, private),
        ];
        for (name, bytes, opts) in files {
            dir.write_atomic(Path::new(name), bytes, opts)
                .map_err(failed(&self.out.join(name)))?;
        }
        Ok(())
    }

    /// Asks until a certificate is got, a refusal says it never will be, or `deadline` passes.
    pub async fn fetch_retrying(
        &self,
        deadline: Option<std::time::Instant>,
    ) -> Result<Held, IdentityError> {
        let mut delay = Duration::ZERO;
        loop {
            match self.fetch().await {
                Ok(held) => return Ok(held),
                Err(e) if e.retryable() => {
                    delay = common::backoff::next(delay, Duration::from_secs(1), RETRY_MAX);
                    if deadline.is_some_and(|d| std::time::Instant::now() + delay > d) {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, retry_in = ?delay, "no identity certificate yet");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Keeps the certificate fresh until `stop`: renews at half life, and after a failure
    /// tries again (backing off) while the certificate in place is still valid.
    pub async fn renew(
        &self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), IdentityError> {
        let mut stop = std::pin::pin!(stop);
        let mut held = match self.held() {
            Some(h) => h,
            None => self.fetch_retrying(None).await?,
        };
        loop {
            let wait = held
                .renew_at()
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            tokio::select! {
                _ = &mut stop => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
            let attempt = self.fetch_retrying(None);
            tokio::select! {
                _ = &mut stop => return Ok(()),
                got = attempt => match got {
                    Ok(h) => held = h,
                    // A refusal (the role left the catalog, say): keep what works, ask again
                    // at the next half life of what is left.
                    Err(e) => {
                        tracing::error!(error = %e, "cannot renew the identity certificate; keeping the current one");
                        let left = held.not_after.duration_since(SystemTime::now()).unwrap_or_default();
                        held.issued = SystemTime::now();
                        held.not_after = SystemTime::now() + left.max(Duration::from_secs(20));
                    }
                }
            }
        }
    }
}

/// A new ECDSA P-256 key and a certificate signing request (PEM) for it.
pub fn key_and_csr() -> Result<(rcgen::KeyPair, String), String> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("cannot make a key: {e}"))?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| format!("cannot make a CSR: {e}"))?;
    Ok((key, csr))
}

/// The files of an identity directory as Envoy's SDS reads them (absolute paths).
pub fn sds_paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    (dir.join(SDS_CERTIFICATE), dir.join(SDS_TRUST), dir)
}
