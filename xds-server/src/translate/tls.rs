//! TLS of listeners and upstreams: transport sockets whose certificates and trust come over SDS
//! (on the ADS stream, by name), the RBAC rules of `allow`, and the secrets a proxy gets.
//!
//! A proxy is sent only the secrets its own listeners and clusters name: its own mesh identity,
//! the mesh trust bundle, the file certificates and bundles it uses.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{
    DataSource, TransportSocket, TypedExtensionConfig, data_source::Specifier,
    transport_socket::ConfigType,
};
use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, Rbac as RbacRules, permission, principal, rbac::Action,
};
use envoy_types::pb::envoy::extensions::rbac::principals::mtls_authenticated::v3::Config as MtlsAuthenticated;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateProviderPluginInstance, CertificateValidationContext, CommonTlsContext,
    DownstreamTlsContext, SdsSecretConfig, Secret, SubjectAltNameMatcher, TlsCertificate,
    TlsParameters, UpstreamTlsContext,
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    secret,
    subject_alt_name_matcher::SanType,
    tls_parameters::TlsProtocol,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::google::protobuf::{Any, BoolValue};
use envoy_types::util::pack_any;

use super::ads_config_source;
use crate::catalog::{
    Catalog, CertificateSource, ClientCertificate, ListenerTls, ProxyName, TrustSource, UpstreamTls,
};
use crate::secrets::{Material, Need};

/// The RBAC principal that matches one SAN of one type of a verified client certificate.
const MTLS_AUTHENTICATED: &str = "envoy.rbac.principals.mtls_authenticated";

/// The transport socket of a TLS listener or cluster.
const TLS_SOCKET: &str = "envoy.transport_sockets.tls";

/// The SPIFFE ID of proxy `name` in the catalog's trust domain.
pub(crate) fn spiffe_id(catalog: &Catalog, name: &ProxyName) -> String {
    crate::identity::spiffe_id(crate::secrets::trust_domain(catalog), name)
}

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(ads_config_source()),
    }
}

fn exact(s: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::Exact(s.to_string())),
        ..Default::default()
    }
}

/// The secret of a certificate source, for `proxy`.
fn certificate_secret(proxy: &ProxyName, source: &CertificateSource) -> (String, Need) {
    match source {
        CertificateSource::Mesh => (
            crate::secrets::identity_name(proxy),
            Need::Identity(proxy.clone()),
        ),
        CertificateSource::File(files) => {
            (crate::secrets::file_name(files), Need::File(files.clone()))
        }
        CertificateSource::SecretsManager(r) => (
            crate::secrets::secrets_manager_name(&r.secret),
            Need::SecretsManager(r.secret.clone()),
        ),
        CertificateSource::Acm(r) => (crate::secrets::acm_name(&r.arn), Need::Acm(r.arn.clone())),
    }
}

/// The secret of a trust source.
fn trust_secret(source: &TrustSource) -> Option<(String, Need)> {
    match source {
        TrustSource::Mesh => Some((crate::secrets::TRUST.to_string(), Need::Trust)),
        TrustSource::System => Some((crate::secrets::SYSTEM_TRUST.to_string(), Need::SystemTrust)),
        TrustSource::File(path) => Some((
            crate::secrets::trust_file_name(path),
            Need::TrustFile(path.clone()),
        )),
        TrustSource::SecretsManager(r) => Some((
            crate::secrets::trust_secrets_manager_name(&r.secret),
            Need::TrustSecretsManager(r.secret.clone()),
        )),
        TrustSource::AcmPca(arns) => Some((
            crate::secrets::acm_pca_trust_name(arns),
            Need::AcmPcaTrust(arns.clone()),
        )),
    }
}

/// The SAN matcher of one expected name: a URI (`spiffe://...`), else a DNS name.
fn san(name: &str) -> SubjectAltNameMatcher {
    let san_type = if name.contains("://") {
        SanType::Uri
    } else {
        SanType::Dns
    };
    SubjectAltNameMatcher {
        san_type: san_type as i32,
        matcher: Some(exact(name)),
        ..Default::default()
    }
}

/// Validation against `trust`, checking the peer carries one of `sans` (any, when empty).
fn validation(trust: &TrustSource, sans: &[String]) -> ValidationContextType {
    let default = CertificateValidationContext {
        match_typed_subject_alt_names: sans.iter().map(|s| san(s)).collect(),
        ..Default::default()
    };
    match trust_secret(trust) {
        Some((name, _)) => {
            ValidationContextType::CombinedValidationContext(CombinedCertificateValidationContext {
                default_validation_context: Some(default),
                validation_context_sds_secret_config: Some(sds(&name)),
                ..Default::default()
            })
        }
        None => ValidationContextType::ValidationContext(default),
    }
}

fn tls_params(min_version: Option<&str>) -> Option<TlsParameters> {
    let min = match min_version {
        Some("1.3") => TlsProtocol::TlSv13,
        _ => TlsProtocol::TlSv12,
    };
    Some(TlsParameters {
        tls_minimum_protocol_version: min as i32,
        ..Default::default()
    })
}

/// The SANs `allow` names: a proxy's SPIFFE ID, or the SAN as written (`dns:NAME`: `NAME`).
fn allowed_sans(catalog: &Catalog, allow: &[String]) -> Vec<String> {
    allow
        .iter()
        .map(|who| {
            if let Some(name) = who.strip_prefix(crate::catalog::ALLOW_DNS_PREFIX) {
                return name.to_string();
            }
            let proxy = ProxyName(who.clone());
            if catalog.proxies.contains_key(&proxy) {
                spiffe_id(catalog, &proxy)
            } else {
                who.clone()
            }
        })
        .collect()
}

/// The listener's TLS transport socket.
pub(super) fn downstream(
    proxy: &ProxyName,
    tls: &ListenerTls,
    protocol: crate::catalog::ListenerProtocol,
) -> TransportSocket {
    let (cert, _) = certificate_secret(proxy, &tls.certificate);
    // HTTP listeners offer h2 and http/1.1: gRPC clients refuse a TLS server that selects no
    // protocol, and browsers get HTTP/2 only through ALPN.
    let alpn = match protocol {
        crate::catalog::ListenerProtocol::Http => vec!["h2".into(), "http/1.1".into()],
        crate::catalog::ListenerProtocol::Tcp => Vec::new(),
    };
    let context = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            alpn_protocols: alpn,
            tls_params: tls_params(tls.min_version.as_deref()),
            tls_certificate_sds_secret_configs: vec![sds(&cert)],
            validation_context_type: tls
                .client_certificate
                .as_ref()
                .map(|c| validation(&c.trust, &[])),
            ..Default::default()
        }),
        require_client_certificate: tls
            .client_certificate
            .as_ref()
            .map(|_| BoolValue { value: true }),
        ..Default::default()
    };
    TransportSocket {
        name: TLS_SOCKET.into(),
        config_type: Some(ConfigType::TypedConfig(pack_any(context))),
    }
}

/// The cluster's TLS transport socket, for `proxy`'s view of upstream `tls`.
pub(super) fn upstream(catalog: &Catalog, proxy: &ProxyName, tls: &UpstreamTls) -> TransportSocket {
    let context = match &tls.mesh {
        Some(server) => {
            let (cert, _) = certificate_secret(proxy, &CertificateSource::Mesh);
            UpstreamTlsContext {
                common_tls_context: Some(CommonTlsContext {
                    tls_params: tls_params(None),
                    tls_certificate_sds_secret_configs: vec![sds(&cert)],
                    validation_context_type: Some(validation(
                        &TrustSource::Mesh,
                        &[spiffe_id(catalog, server)],
                    )),
                    ..Default::default()
                }),
                ..Default::default()
            }
        }
        None => {
            let sans = if tls.subject_alt_names.is_empty() {
                tls.sni.iter().cloned().collect()
            } else {
                tls.subject_alt_names.clone()
            };
            let trust = tls.trust.clone().unwrap_or(TrustSource::System);
            UpstreamTlsContext {
                common_tls_context: Some(CommonTlsContext {
                    tls_params: tls_params(None),
                    tls_certificate_sds_secret_configs: tls
                        .certificate
                        .iter()
                        .map(|c| sds(&certificate_secret(proxy, c).0))
                        .collect(),
                    validation_context_type: Some(validation(&trust, &sans)),
                    ..Default::default()
                }),
                sni: tls.sni.clone().unwrap_or_default(),
                ..Default::default()
            }
        }
    };
    TransportSocket {
        name: TLS_SOCKET.into(),
        config_type: Some(ConfigType::TypedConfig(pack_any(context))),
    }
}

/// The certificate provider instance that a proxyless gRPC client's bootstrap defines with its
/// mesh identity and trust (`xds-server bootstrap --grpc --identity-dir`), which its clusters
/// name (gRFC A29).
pub const GRPC_CERTIFICATE_PROVIDER: &str = "mesh";

/// The TLS transport socket of a proxyless gRPC client's cluster to mesh upstream `server`:
/// gRPC clients take no SDS, only certificate provider instances of their bootstrap (gRFC A29).
pub(super) fn grpc_upstream(catalog: &Catalog, server: &ProxyName) -> TransportSocket {
    let provider = || CertificateProviderPluginInstance {
        instance_name: GRPC_CERTIFICATE_PROVIDER.into(),
        certificate_name: String::new(),
    };
    // gRPC clients read the SANs from the older field only (Envoy, the newer one).
    #[allow(deprecated)]
    let validation = CertificateValidationContext {
        ca_certificate_provider_instance: Some(provider()),
        match_subject_alt_names: vec![exact(&spiffe_id(catalog, server))],
        ..Default::default()
    };
    let context = UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_provider_instance: Some(provider()),
            validation_context_type: Some(ValidationContextType::ValidationContext(validation)),
            ..Default::default()
        }),
        ..Default::default()
    };
    TransportSocket {
        name: TLS_SOCKET.into(),
        config_type: Some(ConfigType::TypedConfig(pack_any(context))),
    }
}

/// The RBAC rules of `allow`: connections whose verified client certificate carries one of
/// the allowed SANs; `None` when any client the trust accepts may connect.
pub(super) fn rbac_rules(catalog: &Catalog, client: &ClientCertificate) -> Option<RbacRules> {
    if client.allow.is_empty() {
        return None;
    }
    // One SAN of one type each: Envoy's `authenticated.principal_name` would match the URI
    // SANs, then the DNS SANs, then the whole subject, so a DNS name allowed would also let in
    // a certificate naming it as a URI or in its subject.
    let principals = allowed_sans(catalog, &client.allow)
        .iter()
        .map(|name| Principal {
            identifier: Some(principal::Identifier::Custom(TypedExtensionConfig {
                name: MTLS_AUTHENTICATED.into(),
                typed_config: Some(pack_any(MtlsAuthenticated {
                    san_matcher: Some(san(name)),
                    any_validated_client_certificate: false,
                })),
            })),
        })
        .collect();
    Some(RbacRules {
        action: Action::Allow as i32,
        policies: BTreeMap::from([(
            "allow".to_string(),
            Policy {
                permissions: vec![Permission {
                    rule: Some(permission::Rule::Any(true)),
                }],
                principals,
                ..Default::default()
            },
        )])
        .into_iter()
        .collect(),
        ..Default::default()
    })
}

/// Every secret `proxy`'s resources name, and what each is made of.
pub fn needs(catalog: &Catalog, proxy: &ProxyName) -> BTreeMap<String, Need> {
    let mut out = BTreeMap::new();
    let Some(p) = catalog.proxies.get(proxy) else {
        return out;
    };
    for l in &p.listeners {
        let Some(tls) = &l.tls else { continue };
        let (name, need) = certificate_secret(proxy, &tls.certificate);
        out.insert(name, need);
        if let Some(c) = &tls.client_certificate
            && let Some((name, need)) = trust_secret(&c.trust)
        {
            out.insert(name, need);
        }
    }
    // Envoys only: gRPC clients take no SDS (their clusters name certificate providers).
    for name in super::listener_upstreams(p) {
        let Some(tls) = catalog.upstreams.get(name).and_then(|u| u.tls.as_ref()) else {
            continue;
        };
        if tls.mesh.is_some() {
            let (name, need) = certificate_secret(proxy, &CertificateSource::Mesh);
            out.insert(name, need);
            out.insert(crate::secrets::TRUST.to_string(), Need::Trust);
        } else {
            if let Some((name, need)) = tls.trust.as_ref().and_then(trust_secret) {
                out.insert(name, need);
            }
            if let Some(c) = &tls.certificate {
                let (name, need) = certificate_secret(proxy, c);
                out.insert(name, need);
            }
        }
    }
    out
}

/// The secrets of `proxy` that `material` has (one it lacks is left out: Envoy waits for it).
pub fn secrets(catalog: &Catalog, proxy: &ProxyName, material: &Material) -> BTreeMap<String, Any> {
    needs(catalog, proxy)
        .into_keys()
        .filter_map(|name| {
            let pem = material.get(&name)?;
            let inline = |s: &str| DataSource {
                specifier: Some(Specifier::InlineString(s.to_string())),
                ..Default::default()
            };
            let r#type = match &pem.key {
                Some(key) => secret::Type::TlsCertificate(TlsCertificate {
                    certificate_chain: Some(inline(&pem.chain)),
                    private_key: Some(inline(key)),
                    ..Default::default()
                }),
                None => secret::Type::ValidationContext(CertificateValidationContext {
                    trusted_ca: Some(inline(&pem.chain)),
                    ..Default::default()
                }),
            };
            let any = pack_any(Secret {
                name: name.clone(),
                r#type: Some(r#type),
            });
            Some((name, any))
        })
        .collect()
}
