//! AWS's certificate services: AWS Private CA as the control plane's signer (`--ca
//! acm-pca:ARN`), its CA certificates as trust bundles (`trust: { acm_pca: [ARN] }`), and ACM
//! private certificates exported with their keys (`certificate: { acm: { arn } }`).
//!
//! With AWS Private CA the keys are made here and never leave the control plane (a CSR goes to
//! `IssueCertificate`). The names in a certificate are the control plane's decision, passed as
//! API passthrough; the issued certificate is checked against them before it is used, so a CA
//! whose template copies other names from the request is caught, not trusted.

use std::time::{Duration, SystemTime};

use aws_sdk_acmpca::types::{
    ApiPassthrough, Asn1Subject, Extensions, GeneralName, SigningAlgorithm, Validity,
    ValidityPeriodType,
};
use rcgen::{CertificateParams, KeyPair};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::ca::{CaError, Issued, Leaf};

/// How long to wait for AWS Private CA to finish a certificate.
const ISSUE_DEADLINE: Duration = Duration::from_secs(30);

/// Clock slack: a certificate is valid from a minute ago.
const BACKDATE: Duration = Duration::from_secs(60);

/// AWS Private CA, signing for the control plane.
pub struct Pca {
    arn: String,
    client: aws_sdk_acmpca::Client,
    signing_algorithm: SigningAlgorithm,
    /// The CA certificate and the chain above it, PEM.
    certificate_pem: String,
    not_after: SystemTime,
}

impl std::fmt::Debug for Pca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pca")
            .field("arn", &self.arn)
            .finish_non_exhaustive()
    }
}

fn pca_error(arn: &str, message: impl Into<String>) -> CaError {
    CaError::Invalid {
        source_name: format!("acm-pca:{arn}"),
        message: message.into(),
    }
}

/// The PEM of a certificate followed by its chain.
fn joined(certificate: &str, chain: Option<&str>) -> String {
    let mut out = certificate.trim_end().to_string();
    out.push('\n');
    if let Some(chain) = chain.filter(|c| !c.trim().is_empty()) {
        out.push_str(chain.trim_end());
        out.push('\n');
    }
    out
}

/// When a PEM chain's first certificate ends.
fn first_not_after(pem: &str) -> Option<SystemTime> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(cert.validity().not_after.timestamp().max(0) as u64),
    )
}

/// The CA certificate of an AWS Private CA with the chain above it (PEM): what peers of its
/// certificates trust.
pub async fn ca_certificate(client: &aws_sdk_acmpca::Client, arn: &str) -> Result<String, CaError> {
    let out = client
        .get_certificate_authority_certificate()
        .certificate_authority_arn(arn)
        .send()
        .await
        .map_err(|e| pca_error(arn, common::aws::error_text(&e).text))?;
    let certificate = out
        .certificate()
        .ok_or_else(|| pca_error(arn, "the CA has no certificate yet (is it ACTIVE?)"))?;
    Ok(joined(certificate, out.certificate_chain()))
}

/// The region an ARN names (`arn:PARTITION:SERVICE:REGION:...`), when it names one.
fn region_of(arn: &str) -> Option<&str> {
    arn.split(':').nth(3).filter(|r| !r.is_empty())
}

/// A client for the AWS Private CA `arn`, in that CA's region (a CA of another region than
/// the control plane's is found); `AWS_ENDPOINT_URL_ACM_PCA` honoured.
pub async fn pca_client(arn: &str) -> aws_sdk_acmpca::Client {
    let sdk = common::aws::sdk_config().await;
    let mut config = aws_sdk_acmpca::config::Builder::from(&sdk);
    if let Some(region) = region_of(arn) {
        config = config.region(aws_sdk_acmpca::config::Region::new(region.to_string()));
    }
    aws_sdk_acmpca::Client::from_conf(config.build())
}

impl Pca {
    /// Connects to the CA `arn`: it must be ACTIVE; its signing algorithm and certificate are
    /// read once.
    pub async fn load(arn: &str) -> Result<Pca, CaError> {
        let client = pca_client(arn).await;
        let described = client
            .describe_certificate_authority()
            .certificate_authority_arn(arn)
            .send()
            .await
            .map_err(|e| pca_error(arn, common::aws::error_text(&e).text))?;
        let ca = described
            .certificate_authority()
            .ok_or_else(|| pca_error(arn, "DescribeCertificateAuthority returned no CA"))?;
        let status = ca
            .status()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        if status != "ACTIVE" {
            return Err(pca_error(arn, format!("the CA is {status}, not ACTIVE")));
        }
        let signing_algorithm = ca
            .certificate_authority_configuration()
            .map(|c| c.signing_algorithm().clone())
            .ok_or_else(|| pca_error(arn, "the CA has no configuration"))?;
        let certificate_pem = ca_certificate(&client, arn).await?;
        let not_after = first_not_after(&certificate_pem)
            .ok_or_else(|| pca_error(arn, "the CA certificate does not parse"))?;
        Ok(Pca {
            arn: arn.to_string(),
            client,
            signing_algorithm,
            certificate_pem,
            not_after,
        })
    }

    /// The CA certificate and its chain, PEM.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// When the CA certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// A new key, signed for `leaf`.
    pub async fn issue(&self, leaf: &Leaf) -> Result<Issued, CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let csr = CertificateParams::default()
            .serialize_request(&key)?
            .pem()?;
        let (certificate_pem, not_after) = self.sign_request(&csr, leaf).await?;
        Ok(Issued {
            certificate_pem,
            private_key_pem: key.serialize_pem(),
            not_after,
        })
    }

    /// Signs the key of `csr_pem` for `leaf`: the certificate with its chain (PEM) and when it
    /// expires. Subject and names come from `leaf` (API passthrough), never from the request.
    pub async fn sign_request(
        &self,
        csr_pem: &str,
        leaf: &Leaf,
    ) -> Result<(String, SystemTime), CaError> {
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)?;
        let now = SystemTime::now();
        let end = (now + leaf.ttl).min(self.not_after);
        let secs = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs() as i64
        };
        let absolute = |t: SystemTime| {
            Validity::builder()
                .r#type(ValidityPeriodType::Absolute)
                .value(secs(t))
                .build()
                .expect("type and value are set")
        };
        let mut names: Vec<GeneralName> = leaf
            .uris
            .iter()
            .map(|u| {
                GeneralName::builder()
                    .uniform_resource_identifier(u)
                    .build()
            })
            .collect();
        for name in &leaf.names {
            names.push(match name.parse::<std::net::IpAddr>() {
                Ok(_) => GeneralName::builder().ip_address(name).build(),
                Err(_) => GeneralName::builder().dns_name(name).build(),
            });
        }
        let mut subject = Asn1Subject::builder();
        if let Some(first) = leaf.uris.first().or(leaf.names.first()) {
            // A common name holds at most 64 characters.
            subject = subject.common_name(first.chars().take(64).collect::<String>());
        }
        let passthrough = ApiPassthrough::builder()
            .subject(subject.build())
            .extensions(
                Extensions::builder()
                    .set_subject_alternative_names(Some(names))
                    .build(),
            )
            .build();
        let template = match (leaf.server, leaf.client) {
            (true, false) => "EndEntityServerAuthCertificate_APIPassthrough/V1",
            (false, true) => "EndEntityClientAuthCertificate_APIPassthrough/V1",
            _ => "EndEntityCertificate_APIPassthrough/V1",
        };
        let partition = self.arn.split(':').nth(1).unwrap_or("aws");
        // The same request retried (the SDK retries throttled calls) is one certificate.
        let token = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(csr_pem.as_bytes()));
        let issued = self
            .client
            .issue_certificate()
            .certificate_authority_arn(&self.arn)
            .csr(aws_sdk_acmpca::primitives::Blob::new(csr_pem.as_bytes()))
            .signing_algorithm(self.signing_algorithm.clone())
            .template_arn(format!("arn:{partition}:acm-pca:::template/{template}"))
            .validity(absolute(end))
            .validity_not_before(absolute(now - BACKDATE))
            .api_passthrough(passthrough)
            .idempotency_token(&token[..36])
            .send()
            .await
            .map_err(|e| {
                pca_error(
                    &self.arn,
                    format!("IssueCertificate: {}", common::aws::error_text(&e).text),
                )
            })?;
        let certificate_arn = issued
            .certificate_arn()
            .ok_or_else(|| pca_error(&self.arn, "IssueCertificate returned no certificate ARN"))?;
        let pem = self.wait_for(certificate_arn).await?;
        check_issued(&pem, &csr.public_key, leaf).map_err(|m| pca_error(&self.arn, m))?;
        let not_after = first_not_after(&pem)
            .ok_or_else(|| pca_error(&self.arn, "the issued certificate does not parse"))?;
        Ok((pem, not_after))
    }

    /// The certificate `certificate_arn` with its chain, once AWS Private CA has made it.
    async fn wait_for(&self, certificate_arn: &str) -> Result<String, CaError> {
        use aws_sdk_acmpca::operation::get_certificate::GetCertificateError;
        let deadline = tokio::time::Instant::now() + ISSUE_DEADLINE;
        let mut delay = Duration::from_millis(100);
        loop {
            let got = self
                .client
                .get_certificate()
                .certificate_authority_arn(&self.arn)
                .certificate_arn(certificate_arn)
                .send()
                .await;
            match got {
                Ok(out) => {
                    let certificate = out.certificate().ok_or_else(|| {
                        pca_error(&self.arn, "GetCertificate returned no certificate")
                    })?;
                    return Ok(joined(certificate, out.certificate_chain()));
                }
                Err(e)
                    if matches!(
                        e.as_service_error(),
                        Some(GetCertificateError::RequestInProgressException(_))
                    ) && tokio::time::Instant::now() + delay < deadline =>
                {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    return Err(pca_error(
                        &self.arn,
                        format!(
                            "GetCertificate {certificate_arn}: {}",
                            common::aws::error_text(&e).text
                        ),
                    ));
                }
            }
        }
    }
}

/// Checks that `pem`'s first certificate holds `key` and exactly the names of `leaf`.
fn check_issued(pem: &str, key: &impl rcgen::PublicKeyData, leaf: &Leaf) -> Result<(), String> {
    use x509_parser::extensions::GeneralName as Name;
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("the issued certificate is not PEM: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| format!("the issued certificate does not parse: {e}"))?;
    if cert.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err("the issued certificate is for another key".into());
    }
    let mut got: Vec<String> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            got.push(match name {
                Name::URI(u) => format!("URI:{u}"),
                Name::DNSName(d) => format!("DNS:{d}"),
                Name::IPAddress(ip) => match ip.len() {
                    4 => format!(
                        "IP:{}",
                        std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).unwrap_or_default())
                    ),
                    16 => format!(
                        "IP:{}",
                        std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).unwrap_or_default())
                    ),
                    _ => format!("IP:{ip:?}"),
                },
                other => format!("{other:?}"),
            });
        }
    }
    let mut want: Vec<String> = leaf.uris.iter().map(|u| format!("URI:{u}")).collect();
    for n in &leaf.names {
        want.push(match n.parse::<std::net::IpAddr>() {
            Ok(ip) => format!("IP:{ip}"),
            Err(_) => format!("DNS:{n}"),
        });
    }
    got.sort();
    want.sort();
    if got != want {
        return Err(format!(
            "the issued certificate names {got:?}, not {want:?} (the CA must honour API passthrough; \
             the control plane uses the *_APIPassthrough/V1 templates)"
        ));
    }
    Ok(())
}

/// An ACM private certificate with its key: `ExportCertificate` (the key comes encrypted with a
/// passphrase made for this call) and the key decrypted here. The chain and the key, PEM.
pub async fn export(arn: &str) -> Result<(String, String), String> {
    // In the certificate's region, which may not be the control plane's.
    let sdk = common::aws::sdk_config().await;
    let mut config = aws_sdk_acm::config::Builder::from(&sdk);
    if let Some(region) = region_of(arn) {
        config = config.region(aws_sdk_acm::config::Region::new(region.to_string()));
    }
    let client = aws_sdk_acm::Client::from_conf(config.build());
    let mut secret = [0u8; 24];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut secret)
        .map_err(|_| "no random source for the export passphrase".to_string())?;
    // Printable, so that the API's passphrase rules hold; never logged.
    let passphrase = hex::encode(secret);
    let out = client
        .export_certificate()
        .certificate_arn(arn)
        .passphrase(aws_sdk_acm::primitives::Blob::new(passphrase.as_bytes()))
        .send()
        .await
        .map_err(|e| {
            format!(
                "ACM ExportCertificate {arn}: {}",
                common::aws::error_text(&e).text
            )
        })?;
    let certificate = out
        .certificate()
        .ok_or_else(|| format!("ACM certificate {arn}: exported without a certificate"))?;
    let encrypted = out
        .private_key()
        .ok_or_else(|| format!("ACM certificate {arn}: exported without a key"))?;
    let key = decrypt_key(encrypted, passphrase.as_bytes())
        .map_err(|e| format!("ACM certificate {arn}: {e}"))?;
    Ok((joined(certificate, out.certificate_chain()), key))
}

/// An encrypted PKCS#8 key (PEM, `ENCRYPTED PRIVATE KEY`) decrypted, as PKCS#8 PEM.
fn decrypt_key(encrypted_pem: &str, passphrase: &[u8]) -> Result<String, String> {
    let not_encrypted = |e: String| format!("the exported key is not an encrypted PKCS#8 key: {e}");
    // Decoded from DER: der's PEM reader cannot look ahead, which PBES2's parameters need.
    let (label, der) = pkcs8::der::pem::decode_vec(encrypted_pem.as_bytes())
        .map_err(|e| not_encrypted(e.to_string()))?;
    if label != "ENCRYPTED PRIVATE KEY" {
        return Err(not_encrypted(format!("a PEM {label:?}")));
    }
    let info = pkcs8::EncryptedPrivateKeyInfoRef::try_from(der.as_slice())
        .map_err(|e| not_encrypted(e.to_string()))?;
    let document = info
        .decrypt(passphrase)
        .map_err(|e| format!("the exported key does not decrypt: {e}"))?;
    document
        .to_pem("PRIVATE KEY", pkcs8::LineEnding::LF)
        .map(|p| p.to_string())
        .map_err(|e| format!("the decrypted key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What ExportCertificate returns: PKCS#8 encrypted with PBES2 (PBKDF2-HMAC-SHA256,
    /// AES-256-CBC), here made by `openssl pkcs8 -topk8 -v2 aes-256-cbc` from a P-256 key.
    const ENCRYPTED: &str = include_str!("../tests/data/encrypted-key.pem");
    const PLAIN: &str = include_str!("../tests/data/plain-key.pem");

    #[test]
    fn a_client_goes_to_the_region_its_arn_names() {
        assert_eq!(
            region_of("arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/x"),
            Some("us-east-1")
        );
        assert_eq!(region_of("arn:aws:acm-pca::123456789012:x"), None);
    }

    #[test]
    fn an_exported_key_is_decrypted_with_its_passphrase_only() {
        let key = decrypt_key(ENCRYPTED, b"export-passphrase").unwrap();
        assert_eq!(key.trim(), PLAIN.trim());
        let wrong = decrypt_key(ENCRYPTED, b"another-passphrase").unwrap_err();
        assert!(wrong.contains("does not decrypt"), "{wrong}");
        let plain = decrypt_key(PLAIN, b"export-passphrase").unwrap_err();
        assert!(plain.contains("PRIVATE KEY"), "{plain}");
    }

    #[test]
    fn an_issued_certificate_must_carry_the_key_and_exactly_the_names_asked() {
        let ca = crate::ca::Ca::generate("t").unwrap();
        let leaf = |uris: &[&str]| Leaf {
            uris: uris.iter().map(|u| u.to_string()).collect(),
            names: vec!["10.0.0.1".into(), "a.test".into()],
            client: true,
            ttl: Duration::from_secs(60),
            ..Leaf::default()
        };
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let asked = leaf(&["spiffe://t/proxy/a"]);
        let (pem, _) = ca.sign_request(&csr, &asked).unwrap();
        assert_eq!(check_issued(&pem, &key, &asked), Ok(()));
        let more = check_issued(&pem, &key, &leaf(&["spiffe://t/proxy/b"])).unwrap_err();
        assert!(more.contains("not"), "{more}");
        let other = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let stolen = check_issued(&pem, &other, &asked).unwrap_err();
        assert!(stolen.contains("another key"), "{stolen}");
    }
}
