//! Proxy identities: SPIFFE IDs `spiffe://TRUST_DOMAIN/proxy/NAME` in client certificates the
//! control plane's CA signed, and the check that a stream reads only its own proxy's config.
//! How a proxy gets one: [`sts`] (what it proves), [`issuer`] (the control plane's side),
//! [`client`] (`xds-server identity`).

pub mod client;
pub mod issuer;
pub mod sts;

use crate::catalog::ProxyName;
use crate::tls::Peer;

/// The SPIFFE ID of proxy `name` in `trust_domain`.
pub fn spiffe_id(trust_domain: &str, name: &ProxyName) -> String {
    format!("spiffe://{trust_domain}/proxy/{}", name.0)
}

/// The proxies a verified client certificate chain speaks for: its URI SANs of the form
/// [`spiffe_id`] in `trust_domain`.
pub fn proxies_of(peer: &Peer, trust_domain: &str) -> Vec<ProxyName> {
    let Some(leaf) = peer.certificates.as_ref().and_then(|c| c.first()) else {
        return Vec::new();
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) else {
        return Vec::new();
    };
    let prefix = format!("spiffe://{trust_domain}/proxy/");
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => uri.strip_prefix(prefix.as_str()),
            _ => None,
        })
        .filter(|name| !name.is_empty() && !name.contains('/'))
        .map(|name| ProxyName(name.to_string()))
        .collect()
}

/// Who may read what on the xDS port.
#[derive(Debug, Clone, Default)]
pub struct Authorization {
    /// Every stream must present a certificate naming the proxy it asks for.
    pub require_identity: bool,
    /// The SPIFFE trust domain of proxy identities.
    pub trust_domain: String,
}

/// Why a stream is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No client certificate (or one the CA did not sign: TLS refused that already).
    #[error("a client certificate from the control plane's CA is required (xds-server identity)")]
    NoCertificate,
    /// A certificate for other proxies.
    #[error("the client certificate is for {have:?}, not for proxy {asked:?}")]
    WrongProxy {
        /// The proxy asked for (`node.cluster`).
        asked: String,
        /// The proxies the certificate names.
        have: Vec<String>,
    },
}

impl Refusal {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NoCertificate => "no_certificate",
            Refusal::WrongProxy { .. } => "wrong_proxy",
        }
    }
}

impl Authorization {
    /// Authenticate, then authorize: may a stream from `peer` read `proxy`'s config?
    pub fn check(&self, peer: Option<&Peer>, proxy: &ProxyName) -> Result<(), Refusal> {
        if !self.require_identity {
            return Ok(());
        }
        let have = peer
            .map(|p| proxies_of(p, &self.trust_domain))
            .unwrap_or_default();
        if have.is_empty() {
            return Err(Refusal::NoCertificate);
        }
        if !have.contains(proxy) {
            return Err(Refusal::WrongProxy {
                asked: proxy.0.clone(),
                have: have.into_iter().map(|p| p.0).collect(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    use super::*;
    use crate::ca::{Ca, Leaf};

    fn peer_with(uris: &[&str]) -> Peer {
        let ca = Ca::generate("test").unwrap();
        let issued = ca
            .issue(&Leaf {
                uris: uris.iter().map(|u| u.to_string()).collect(),
                client: true,
                ttl: Duration::from_secs(60),
                ..Leaf::default()
            })
            .unwrap();
        let der = CertificateDer::from_pem_slice(issued.certificate_pem.as_bytes()).unwrap();
        Peer {
            remote: None,
            certificates: Some(Arc::new(vec![der])),
        }
    }

    #[test]
    fn authenticate_then_authorize() {
        let auth = Authorization {
            require_identity: true,
            trust_domain: "mesh.local".into(),
        };
        let edge = ProxyName("edge".into());
        let ok = peer_with(&["spiffe://mesh.local/proxy/edge"]);
        assert_eq!(auth.check(Some(&ok), &edge), Ok(()));
        assert_eq!(auth.check(None, &edge), Err(Refusal::NoCertificate));
        let no_cert = Peer::default();
        assert_eq!(
            auth.check(Some(&no_cert), &edge),
            Err(Refusal::NoCertificate)
        );
        let other = peer_with(&["spiffe://mesh.local/proxy/web"]);
        assert!(matches!(
            auth.check(Some(&other), &edge),
            Err(Refusal::WrongProxy { .. })
        ));
        // Another trust domain, or a path that is not a proxy, names nothing.
        for uri in [
            "spiffe://other.local/proxy/edge",
            "spiffe://mesh.local/service/edge",
            "spiffe://mesh.local/proxy/edge/x",
        ] {
            assert_eq!(
                auth.check(Some(&peer_with(&[uri])), &edge),
                Err(Refusal::NoCertificate),
                "{uri}"
            );
        }
        let open = Authorization::default();
        assert_eq!(open.check(None, &edge), Ok(()));
    }
}
