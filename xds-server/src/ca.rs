//! The control plane's own certificate authority: an ECDSA P-256 root that signs the xDS
//! server's certificate and, with identities, proxies' client certificates.
//!
//! Replicas share one CA by reading it from the same place: a directory (`file:DIR`, as
//! `xds-server ca init` writes it) or a Secrets Manager secret (`secretsmanager:NAME-OR-ARN`, a
//! JSON object `{"certificate": PEM, "private_key": PEM}`), or AWS Private CA signs in its stead
//! (`acm-pca:ARN`, see [`crate::acm`]). A second CA (`--ca-next`) is only
//! trusted, not used to sign, so that rotating is a configuration change: first every trust
//! bundle carries both, then the next one signs.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};

/// The file names of a CA directory.
pub const CERTIFICATE_FILE: &str = "certificate.pem";
/// See [`CERTIFICATE_FILE`]; written with mode 0600.
pub const PRIVATE_KEY_FILE: &str = "private_key.pem";

/// How long a CA made by `ca init` is valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Why a CA could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The CA location is not `file:DIR`, `secretsmanager:NAME` or `acm-pca:ARN`.
    #[error("{0:?}: a CA is `file:DIR`, `secretsmanager:NAME-OR-ARN` or `acm-pca:ARN`")]
    BadSource(String),
    /// `ca init` would overwrite a CA.
    #[error("{0} exists already: a CA is never overwritten (remove it first to make a new one)")]
    Exists(PathBuf),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Secrets Manager did not give the secret.
    #[error("secret {secret}: {message}")]
    Secret {
        /// The secret's name or ARN.
        secret: String,
        /// What went wrong.
        message: String,
    },
    /// The certificate or key is not usable as a CA.
    #[error("{source_name}: {message}")]
    Invalid {
        /// Where the CA came from.
        source_name: String,
        /// What is wrong.
        message: String,
    },
    /// Making a certificate failed.
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Where a CA is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// A directory holding [`CERTIFICATE_FILE`] and [`PRIVATE_KEY_FILE`].
    File(PathBuf),
    /// A Secrets Manager secret: `{"certificate": PEM, "private_key": PEM}`.
    SecretsManager(String),
    /// An AWS Private CA, by ARN: it signs, the control plane keeps no CA key.
    AcmPca(String),
}

impl std::str::FromStr for CaSource {
    type Err = CaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("file", dir)) if !dir.is_empty() => Ok(CaSource::File(dir.into())),
            Some(("secretsmanager", name)) if !name.is_empty() => {
                Ok(CaSource::SecretsManager(name.into()))
            }
            Some(("acm-pca", arn))
                if arn.starts_with("arn:") && arn.contains(":certificate-authority/") =>
            {
                Ok(CaSource::AcmPca(arn.into()))
            }
            _ => Err(CaError::BadSource(s.into())),
        }
    }
}

impl fmt::Display for CaSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaSource::File(dir) => write!(f, "file:{}", dir.display()),
            CaSource::SecretsManager(name) => write!(f, "secretsmanager:{name}"),
            CaSource::AcmPca(arn) => write!(f, "acm-pca:{arn}"),
        }
    }
}

/// A certificate authority that can sign.
pub struct Ca {
    certificate_pem: String,
    not_after: SystemTime,
    issuer: Issuer<'static, KeyPair>,
    source_name: String,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("Ca")
            .field("source", &self.source_name)
            .finish_non_exhaustive()
    }
}

/// A certificate the CA signed, with its key.
pub struct Issued {
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// Its private key, PEM (PKCS#8).
    pub private_key_pem: String,
    /// When it expires.
    pub not_after: SystemTime,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// What a signed certificate is for.
#[derive(Debug, Clone, Default)]
pub struct Leaf {
    /// DNS names and IP addresses (as text) it is valid for.
    pub names: Vec<String>,
    /// URI SANs, e.g. `spiffe://mesh.local/proxy/edge`.
    pub uris: Vec<String>,
    /// A server certificate (TLS server authentication).
    pub server: bool,
    /// A client certificate (TLS client authentication).
    pub client: bool,
    /// How long it is valid.
    pub ttl: Duration,
}

/// A random serial: certificates of several replicas signed in the same second differ.
fn serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    let random = rustls::crypto::aws_lc_rs::default_provider().secure_random;
    // A failing system random source leaves zeros; the time keeps serials apart then.
    if random.fill(&mut bytes).is_err() {
        bytes[..16].copy_from_slice(&common::duration::since_epoch().as_nanos().to_be_bytes());
    }
    bytes[0] &= 0x7f; // a positive number
    SerialNumber::from_slice(&bytes)
}

fn offset(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

impl Ca {
    /// A new root CA, valid for ten years from now.
    pub fn generate(common_name: &str) -> Result<Ca, CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = offset(now - Duration::from_secs(60));
        params.not_after = offset(now + CA_VALIDITY);
        params.serial_number = Some(serial());
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            certificate_pem: cert.pem(),
            not_after: now + CA_VALIDITY,
            issuer: Issuer::new(params, key),
            source_name: common_name.into(),
        })
    }

    /// A CA from its certificate and key (PEM); `source_name` names it in errors.
    pub fn from_pem(source_name: &str, certificate: &str, key: &str) -> Result<Ca, CaError> {
        let invalid = |message: String| CaError::Invalid {
            source_name: source_name.into(),
            message,
        };
        let key = KeyPair::from_pem(key).map_err(|e| invalid(format!("private key: {e}")))?;
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(certificate.as_bytes())
            .map_err(|e: rustls_pki_types::pem::Error| invalid(format!("certificate: {e}")))?;
        let der: rustls_pki_types::CertificateDer<'static> = der;
        let (_, x509) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| invalid(format!("certificate: {e}")))?;
        if !x509.is_ca() {
            return Err(invalid("the certificate is not a CA certificate".into()));
        }
        if x509.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
            return Err(invalid(
                "the private key does not belong to the certificate".into(),
            ));
        }
        if !x509.validity().is_valid() {
            return Err(invalid(
                "the CA certificate is expired or not yet valid".into(),
            ));
        }
        let not_after = SystemTime::UNIX_EPOCH
            + Duration::from_secs(x509.validity().not_after.timestamp().max(0) as u64);
        let issuer = Issuer::from_ca_cert_der(&der, key)
            .map_err(|e| invalid(format!("certificate: {e}")))?;
        Ok(Ca {
            certificate_pem: certificate.to_string(),
            not_after,
            issuer,
            source_name: source_name.into(),
        })
    }

    /// Reads a CA from where it is kept.
    pub async fn load(source: &CaSource) -> Result<Ca, CaError> {
        match source {
            CaSource::File(dir) => {
                let read = |name: &str| {
                    let path = dir.join(name);
                    std::fs::read_to_string(&path).map_err(|source| CaError::Io { path, source })
                };
                Ca::from_pem(
                    &source.to_string(),
                    &read(CERTIFICATE_FILE)?,
                    &read(PRIVATE_KEY_FILE)?,
                )
            }
            CaSource::SecretsManager(name) => {
                let (certificate, key) = read_secret(name).await?;
                Ca::from_pem(&source.to_string(), &certificate, &key)
            }
            CaSource::AcmPca(_) => Err(CaError::Invalid {
                source_name: source.to_string(),
                message: "AWS Private CA keeps its key: it is no CA this command can read".into(),
            }),
        }
    }

    /// When the CA certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The CA certificate, PEM: what peers trust.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// Signs a new key for `leaf`.
    pub fn issue(&self, leaf: &Leaf) -> Result<Issued, CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let (certificate_pem, not_after) = self.sign(leaf, &key)?;
        Ok(Issued {
            certificate_pem,
            private_key_pem: key.serialize_pem(),
            not_after,
        })
    }

    /// Signs the key of a certificate signing request (PEM) for `leaf`: the certificate (PEM)
    /// and when it expires. The request's signature proves its sender holds the key; the names
    /// and usages it asks for are ignored, `leaf` decides (a request with extensions rcgen does
    /// not read is refused).
    pub fn sign_request(
        &self,
        csr_pem: &str,
        leaf: &Leaf,
    ) -> Result<(String, SystemTime), CaError> {
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)?;
        let (pem, not_after) = self.sign(leaf, &csr.public_key)?;
        // rcgen names the key's algorithm after the request's signature algorithm: a key it
        // would describe wrongly (P-384 signed with SHA-256, say) is refused, not mislabelled.
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
            .map_err(|e: rustls_pki_types::pem::Error| self.invalid(e.to_string()))?;
        let der: rustls_pki_types::CertificateDer<'static> = der;
        let (_, cert) =
            x509_parser::parse_x509_certificate(&der).map_err(|e| self.invalid(e.to_string()))?;
        if cert.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&csr.public_key) {
            return Err(self.invalid(
                "the request's key is not one this CA signs (use ECDSA P-256 with SHA-256)".into(),
            ));
        }
        Ok((pem, not_after))
    }

    fn invalid(&self, message: String) -> CaError {
        CaError::Invalid {
            source_name: self.source_name.clone(),
            message,
        }
    }

    fn sign(
        &self,
        leaf: &Leaf,
        key: &impl rcgen::PublicKeyData,
    ) -> Result<(String, SystemTime), CaError> {
        let mut params = CertificateParams::new(leaf.names.clone())?;
        // The subject names what the certificate is for (rcgen's default is a placeholder).
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(first) = leaf.uris.first().or(leaf.names.first()) {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        for uri in &leaf.uris {
            params
                .subject_alt_names
                .push(SanType::URI(uri.as_str().try_into()?));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if leaf.server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if leaf.client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        let now = SystemTime::now();
        // A little slack for clocks that lag the control plane's.
        params.not_before = offset(now - Duration::from_secs(60));
        // Never beyond the CA's own end.
        let not_after = (now + leaf.ttl).min(self.not_after);
        params.not_after = offset(not_after);
        params.serial_number = Some(serial());
        let cert = params.signed_by(key, &self.issuer)?;
        Ok((cert.pem(), not_after))
    }

    /// Writes the CA into a new directory's files (the key with mode 0600); never overwrites.
    pub fn write(&self, dir: &Path) -> Result<(), CaError> {
        std::fs::create_dir_all(dir).map_err(|source| CaError::Io {
            path: dir.into(),
            source,
        })?;
        for name in [CERTIFICATE_FILE, PRIVATE_KEY_FILE] {
            if dir.join(name).exists() {
                return Err(CaError::Exists(dir.join(name)));
            }
        }
        write_new(&dir.join(CERTIFICATE_FILE), &self.certificate_pem, 0o644)?;
        write_new(
            &dir.join(PRIVATE_KEY_FILE),
            &self.issuer.key().serialize_pem(),
            0o600,
        )
    }
}

/// Creates `path` with `mode` from the start (a key file is never readable by others, not even
/// for a moment) and writes `text`.
fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), CaError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| CaError::Io {
        path: path.into(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

/// A Secrets Manager secret `{"certificate": PEM, "private_key": PEM}`: its two parts.
pub(crate) async fn read_secret(name: &str) -> Result<(String, String), CaError> {
    match read_secret_parts(name).await? {
        (certificate, Some(key)) => Ok((certificate, key)),
        (_, None) => Err(CaError::Secret {
            secret: name.into(),
            message: "has no \"private_key\"".into(),
        }),
    }
}

/// A Secrets Manager secret `{"certificate": PEM}`, with `"private_key": PEM` when it has one.
pub(crate) async fn read_secret_parts(name: &str) -> Result<(String, Option<String>), CaError> {
    let fail = |message: String| CaError::Secret {
        secret: name.into(),
        message,
    };
    let config = common::aws::sdk_config().await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let out = client
        .get_secret_value()
        .secret_id(name)
        .send()
        .await
        .map_err(|e| fail(common::aws::error_text(&e).text))?;
    let text = out
        .secret_string()
        .ok_or_else(|| fail("has no SecretString".into()))?;
    #[derive(serde::Deserialize)]
    struct Secret {
        certificate: String,
        private_key: Option<String>,
    }
    let secret: Secret = serde_json::from_str(text).map_err(|e| {
        // serde's message names the field, never the value.
        fail(format!(
            "is not {{\"certificate\": PEM, \"private_key\": PEM}}: {e}"
        ))
    })?;
    Ok((secret.certificate, secret.private_key))
}

/// Who signs for the control plane: its own CA, or AWS Private CA.
#[derive(Debug)]
pub enum Signer {
    /// A CA whose key the control plane holds.
    Local(Ca),
    /// AWS Private CA, which keeps its key.
    Pca(crate::acm::Pca),
}

impl Signer {
    /// The signer kept at `source`.
    pub async fn load(source: &CaSource) -> Result<Signer, CaError> {
        match source {
            CaSource::AcmPca(arn) => Ok(Signer::Pca(crate::acm::Pca::load(arn).await?)),
            _ => Ok(Signer::Local(Ca::load(source).await?)),
        }
    }

    /// The CA certificate (and for AWS Private CA the chain above it), PEM.
    pub fn certificate_pem(&self) -> &str {
        match self {
            Signer::Local(ca) => ca.certificate_pem(),
            Signer::Pca(pca) => pca.certificate_pem(),
        }
    }

    /// When the CA certificate expires.
    pub fn not_after(&self) -> SystemTime {
        match self {
            Signer::Local(ca) => ca.not_after(),
            Signer::Pca(pca) => pca.not_after(),
        }
    }

    /// A new key, signed for `leaf`.
    pub async fn issue(&self, leaf: &Leaf) -> Result<Issued, CaError> {
        match self {
            Signer::Local(ca) => ca.issue(leaf),
            Signer::Pca(pca) => pca.issue(leaf).await,
        }
    }

    /// Signs the key of a certificate signing request (PEM) for `leaf`, which decides the
    /// names: the certificate (PEM, with its chain) and when it expires.
    pub async fn sign_request(
        &self,
        csr_pem: &str,
        leaf: &Leaf,
    ) -> Result<(String, SystemTime), CaError> {
        match self {
            Signer::Local(ca) => ca.sign_request(csr_pem, leaf),
            Signer::Pca(pca) => pca.sign_request(csr_pem, leaf).await,
        }
    }
}

/// The CAs a server uses: one that signs, and the ones peers trust.
#[derive(Debug)]
pub struct CaSet {
    /// Signs every certificate.
    pub current: Signer,
    /// Trusted too, so that it can sign next.
    pub next: Option<Signer>,
}

impl CaSet {
    /// The trust bundle handed out: the current CA and the next, PEM.
    pub fn bundle_pem(&self) -> String {
        let mut out = self.current.certificate_pem().to_string();
        if let Some(next) = &self.next {
            if !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(next.certificate_pem());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        assert_eq!(
            "file:/etc/ca".parse::<CaSource>().unwrap(),
            CaSource::File("/etc/ca".into())
        );
        assert_eq!(
            "secretsmanager:xds/ca".parse::<CaSource>().unwrap(),
            CaSource::SecretsManager("xds/ca".into())
        );
        let arn = "arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/0f1e";
        assert_eq!(
            format!("acm-pca:{arn}").parse::<CaSource>().unwrap(),
            CaSource::AcmPca(arn.into())
        );
        for bad in [
            "/etc/ca",
            "file:",
            "vault:x",
            "",
            "acm-pca:",
            "acm-pca:my-ca",
            "acm-pca:arn:aws:acm:eu-west-1:1:certificate/x",
        ] {
            assert!(bad.parse::<CaSource>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_written_ca_loads_signs_and_is_never_overwritten() {
        let dir = std::env::temp_dir().join(format!("xds-ca-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = Ca::generate("test CA").unwrap();
        ca.write(&dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(PRIVATE_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(ca.write(&dir), Err(CaError::Exists(_))));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let loaded = rt.block_on(Ca::load(&CaSource::File(dir.clone()))).unwrap();
        let leaf = loaded
            .issue(&Leaf {
                names: vec!["xds.example".into(), "127.0.0.1".into()],
                uris: vec!["spiffe://mesh.local/proxy/edge".into()],
                server: true,
                client: true,
                ttl: Duration::from_secs(3600),
            })
            .unwrap();
        let der: rustls_pki_types::CertificateDer<'static> =
            rustls_pki_types::pem::PemObject::from_pem_slice(leaf.certificate_pem.as_bytes())
                .unwrap();
        let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
        let ca_der: rustls_pki_types::CertificateDer<'static> =
            rustls_pki_types::pem::PemObject::from_pem_slice(ca.certificate_pem().as_bytes())
                .unwrap();
        let (_, ca_x509) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert_eq!(x509.issuer(), ca_x509.subject());
        let sans = format!(
            "{:?}",
            x509.subject_alternative_name().unwrap().unwrap().value
        );
        for want in ["xds.example", "spiffe://mesh.local/proxy/edge"] {
            assert!(sans.contains(want), "{sans}");
        }
        assert!(!format!("{loaded:?} {leaf:?}").contains("PRIVATE KEY"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_key_of_another_ca_is_refused() {
        let a = Ca::generate("a").unwrap();
        let b = Ca::generate("b").unwrap();
        let err = Ca::from_pem(
            "mixed",
            a.certificate_pem(),
            &b.issuer.key().serialize_pem(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
        let leaf = a
            .issue(&Leaf {
                names: vec!["x".into()],
                server: true,
                ttl: Duration::from_secs(60),
                ..Leaf::default()
            })
            .unwrap();
        let err = Ca::from_pem("leaf", &leaf.certificate_pem, &leaf.private_key_pem).unwrap_err();
        assert!(err.to_string().contains("not a CA"), "{err}");
    }
}
