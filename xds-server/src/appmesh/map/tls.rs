//! App Mesh TLS as the catalog's `tls`: a listener's (a virtual node's or a virtual gateway's)
//! and a caller's client policy, which becomes the `tls` of the upstreams it reaches.
//!
//! App Mesh's two API families (virtual node, virtual gateway) have the same shapes under
//! different types: both are read into [`ListenerTls`] and [`ClientTls`] first, and mapped once.

use serde_json::{Map, Value, json};

use crate::appmesh::report::Resource;

/// Where a certificate and its key come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cert {
    /// An ACM private certificate, by ARN.
    Acm(String),
    /// Files in the Envoy's container: chain, key.
    File(String, String),
    /// An SDS secret of a local SDS server (SPIRE), by name.
    Sds(String),
}

/// What a peer's certificate must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Trust {
    /// AWS Private CAs, by ARN.
    Acm(Vec<String>),
    /// A bundle file in the Envoy's container.
    File(String),
    /// An SDS validation context (SPIRE's bundle), by name.
    Sds(String),
}

/// A listener's `tls`, of either family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ListenerTls {
    /// `STRICT`, `PERMISSIVE`, `DISABLED`.
    pub mode: String,
    pub cert: Option<Cert>,
    /// Mutual TLS: what client certificates must chain to.
    pub trust: Option<Trust>,
    /// The SANs a client certificate must carry one of.
    pub sans: Vec<String>,
}

/// A client policy's `tls`, of either family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ClientTls {
    pub enforce: bool,
    /// The backend ports it applies to; empty: every port.
    pub ports: Vec<i32>,
    /// The client certificate presented (mutual TLS).
    pub cert: Option<Cert>,
    pub trust: Option<Trust>,
    /// The SANs the server's certificate must carry one of; empty: App Mesh's default, the
    /// backend's service discovery name.
    pub sans: Vec<String>,
}

macro_rules! cert_of {
    ($c:expr, $ty:ident) => {
        match $c {
            aws_sdk_appmesh::types::$ty::File(f) => Some(Cert::File(
                f.certificate_chain().to_string(),
                f.private_key().to_string(),
            )),
            aws_sdk_appmesh::types::$ty::Sds(s) => Some(Cert::Sds(s.secret_name().to_string())),
            _ => None,
        }
    };
}

macro_rules! trust_of {
    ($t:expr, $ty:ident) => {
        match $t {
            aws_sdk_appmesh::types::$ty::File(f) => {
                Some(Trust::File(f.certificate_chain().to_string()))
            }
            aws_sdk_appmesh::types::$ty::Sds(s) => Some(Trust::Sds(s.secret_name().to_string())),
            _ => None,
        }
    };
}

macro_rules! sans_of {
    ($v:expr) => {
        $v.and_then(|v| v.subject_alternative_names())
            .and_then(|s| s.r#match())
            .map(|m| m.exact().to_vec())
            .unwrap_or_default()
    };
}

impl ListenerTls {
    /// A virtual node listener's `tls`.
    pub fn of_node(t: &aws_sdk_appmesh::types::ListenerTls) -> ListenerTls {
        use aws_sdk_appmesh::types::ListenerTlsCertificate as C;
        let cert = t.certificate().and_then(|c| match c {
            C::Acm(a) => Some(Cert::Acm(a.certificate_arn().to_string())),
            c => cert_of!(c, ListenerTlsCertificate),
        });
        let v = t.validation();
        ListenerTls {
            mode: t.mode().as_str().to_string(),
            cert,
            trust: v
                .and_then(|v| v.trust())
                .and_then(|t| trust_of!(t, ListenerTlsValidationContextTrust)),
            sans: sans_of!(v),
        }
    }

    /// A virtual gateway listener's `tls`.
    pub fn of_gateway(t: &aws_sdk_appmesh::types::VirtualGatewayListenerTls) -> ListenerTls {
        use aws_sdk_appmesh::types::VirtualGatewayListenerTlsCertificate as C;
        let cert = t.certificate().and_then(|c| match c {
            C::Acm(a) => Some(Cert::Acm(a.certificate_arn().to_string())),
            c => cert_of!(c, VirtualGatewayListenerTlsCertificate),
        });
        let v = t.validation();
        ListenerTls {
            mode: t.mode().as_str().to_string(),
            cert,
            trust: v
                .and_then(|v| v.trust())
                .and_then(|t| trust_of!(t, VirtualGatewayListenerTlsValidationContextTrust)),
            sans: sans_of!(v),
        }
    }
}

impl ClientTls {
    /// A virtual node's client policy `tls`.
    pub fn of_node(t: &aws_sdk_appmesh::types::ClientPolicyTls) -> ClientTls {
        use aws_sdk_appmesh::types::TlsValidationContextTrust as T;
        let v = t.validation();
        ClientTls {
            enforce: t.enforce().unwrap_or(true),
            ports: t.ports().to_vec(),
            cert: t
                .certificate()
                .and_then(|c| cert_of!(c, ClientTlsCertificate)),
            trust: v.and_then(|v| v.trust()).and_then(|t| match t {
                T::Acm(a) => Some(Trust::Acm(a.certificate_authority_arns().to_vec())),
                t => trust_of!(t, TlsValidationContextTrust),
            }),
            sans: sans_of!(v),
        }
    }

    /// A virtual gateway's client policy `tls`.
    pub fn of_gateway(t: &aws_sdk_appmesh::types::VirtualGatewayClientPolicyTls) -> ClientTls {
        use aws_sdk_appmesh::types::VirtualGatewayTlsValidationContextTrust as T;
        let v = t.validation();
        ClientTls {
            enforce: t.enforce().unwrap_or(true),
            ports: t.ports().to_vec(),
            cert: t
                .certificate()
                .and_then(|c| cert_of!(c, VirtualGatewayClientTlsCertificate)),
            trust: v.and_then(|v| v.trust()).and_then(|t| match t {
                T::Acm(a) => Some(Trust::Acm(a.certificate_authority_arns().to_vec())),
                t => trust_of!(t, VirtualGatewayTlsValidationContextTrust),
            }),
            sans: sans_of!(v),
        }
    }
}

/// Why a file path App Mesh gave is a loss here.
const FILE_LOSS: &str = "the control plane reads the file (the path as App Mesh gave it, absolute, or relative to the catalog) and sends it to Envoy over SDS: put it on the control plane, not in the Envoy's container (`xds-server validate` names a file it cannot read), or move it to Secrets Manager (`secrets_manager`)";

/// The catalog's certificate source for `cert`, with its report line at `at`.
fn certificate(cert: &Cert, at: &str, r: &mut Resource) -> Value {
    match cert {
        Cert::Acm(arn) => {
            r.mapped(
                format!("{at}.acm"),
                "certificate { acm: { arn } }: the control plane exports it (acm:ExportCertificate on its task role) and sends it over SDS, renewals included",
            );
            json!({ "acm": { "arn": arn } })
        }
        Cert::File(chain, key) => {
            r.lossy(
                format!("{at}.file"),
                format!("certificate {{ file: {{ chain, key }} }}: {FILE_LOSS}"),
            );
            json!({ "file": { "chain": chain, "key": key } })
        }
        Cert::Sds(name) => {
            r.lossy(
                format!("{at}.sds"),
                format!("certificate: mesh: the proxy's identity spiffe://TRUST_DOMAIN/proxy/NAME from the control plane's CA (serve --ca), not SDS secret {name:?} of a local SDS server (SPIRE)"),
            );
            json!("mesh")
        }
    }
}

/// The catalog's trust source for `trust`, with its report line at `at`.
fn trust(trust: &Trust, at: &str, r: &mut Resource) -> Value {
    match trust {
        Trust::Acm(arns) => {
            r.mapped(
                format!("{at}.acm"),
                "trust { acm_pca: [ARN, ...] }: the CAs' certificates, read by the control plane (acm-pca:GetCertificateAuthorityCertificate)",
            );
            json!({ "acm_pca": arns })
        }
        Trust::File(path) => {
            r.lossy(
                format!("{at}.file"),
                format!("trust {{ file }}: {FILE_LOSS}"),
            );
            json!({ "file": path })
        }
        Trust::Sds(name) => {
            r.lossy(
                format!("{at}.sds"),
                format!("trust: mesh: the control plane's CA, not SDS validation context {name:?} (SPIRE's bundle)"),
            );
            json!("mesh")
        }
    }
}

/// A listener's catalog `tls`; `None` when it has none (DISABLED) or it cannot be mapped.
pub(super) fn listener(t: &ListenerTls, at: &str, r: &mut Resource) -> Option<Value> {
    let mode = match t.mode.as_str() {
        "STRICT" => "strict",
        "PERMISSIVE" => "permissive",
        "DISABLED" => {
            r.mapped(format!("{at}.mode"), "DISABLED: no tls, plaintext");
            return None;
        }
        other => {
            r.not_mapped(
                format!("{at}.mode"),
                format!("{other:?}: a mode this importer does not know; the listener is plaintext"),
            );
            return None;
        }
    };
    let Some(cert) = &t.cert else {
        r.not_mapped(
            format!("{at}.certificate"),
            "a certificate kind this importer does not know; the listener is plaintext",
        );
        return None;
    };
    let mut tls = Map::new();
    tls.insert("mode".into(), json!(mode));
    r.mapped(
        format!("{at}.mode"),
        if mode == "strict" {
            "mode: strict (TLS only)"
        } else {
            "mode: permissive: TLS and plaintext on the one port, as App Mesh's PERMISSIVE (a TLS inspector picks the chain)"
        },
    );
    tls.insert(
        "certificate".into(),
        certificate(cert, &format!("{at}.certificate"), r),
    );
    if let Some(tr) = &t.trust {
        let trust = trust(tr, &format!("{at}.validation.trust"), r);
        let mut client = Map::new();
        let allow = allow(&t.sans, trust == json!("mesh"), at, r);
        client.insert("trust".into(), trust);
        if !allow.is_empty() {
            client.insert("allow".into(), json!(allow));
        }
        tls.insert("client_certificate".into(), Value::Object(client));
    }
    Some(Value::Object(tls))
}

/// The SANs a client must carry, as the catalog's `allow`.
fn allow(sans: &[String], mesh: bool, at: &str, r: &mut Resource) -> Vec<String> {
    let field = format!("{at}.validation.subjectAlternativeNames");
    if sans.is_empty() {
        return Vec::new();
    }
    if mesh {
        r.lossy(
            field,
            "left out: clients present mesh identities (spiffe://TRUST_DOMAIN/proxy/NAME), which App Mesh's SANs do not name; any proxy of the mesh's CA gets in: list the callers' proxy names in `client_certificate.allow`",
        );
        return Vec::new();
    }
    // A bare word in `allow` is a proxy name, and a dotted one may be too: every DNS SAN is
    // written `dns:NAME`, a URI as it is; what is neither the catalog cannot take.
    let mut out = Vec::new();
    let mut dropped = Vec::new();
    for s in sans {
        if s.contains("://") {
            out.push(s.clone());
        } else if is_dns_name(s) {
            out.push(format!("{}{s}", crate::catalog::ALLOW_DNS_PREFIX));
        } else {
            dropped.push(s.as_str());
        }
    }
    if dropped.is_empty() {
        r.mapped(
            field,
            "client_certificate.allow: each DNS SAN as `dns:NAME` (a DNS SAN as written, never a proxy name), each URI as written",
        );
    } else if out.is_empty() {
        r.lossy(
            field,
            format!(
                "LEFT OUT, ANY CLIENT OF THE TRUST GETS IN: {dropped:?} is neither a DNS name (letters, digits, '-', '.', '*') nor a URI (SCHEME://...), which is what the catalog's `allow` takes: list the callers in `client_certificate.allow`"
            ),
        );
    } else {
        r.lossy(
            field,
            format!(
                "client_certificate.allow without {dropped:?}: neither a DNS name (letters, digits, '-', '.', '*') nor a URI (SCHEME://...), which is what the catalog's `allow` takes; a client with only such a SAN is refused. The others: each DNS SAN as `dns:NAME`, each URI as written"
            ),
        );
    }
    out
}

/// Whether `s` is a DNS name the catalog's `allow` takes as `dns:NAME`.
fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '*'))
}

/// What the caller's proxy knows of the server it calls.
pub(super) struct Server<'a> {
    /// The server's proxy (catalog) name.
    pub proxy: &'a str,
    /// Its service discovery name (DNS hostname, or Cloud Map `SERVICE.NAMESPACE`): the SAN
    /// App Mesh checked when the policy names none.
    pub discovery_name: Option<String>,
    /// The port the upstream reaches it on.
    pub port: i32,
    /// Whether its listener presents a mesh identity (its App Mesh certificate was SDS).
    pub serves_mesh: bool,
}

/// An upstream's catalog `tls` from a caller's client policy, or `Ok(None)` where the policy
/// asks for plaintext to this server; `Err` says why it cannot be mapped. Report lines go to
/// `r` under `at`.
pub(super) fn client(
    t: &ClientTls,
    server: &Server,
    at: &str,
    r: &mut Resource,
) -> Result<Option<Value>, String> {
    if !t.enforce {
        return Ok(None);
    }
    if !t.ports.is_empty() && !t.ports.contains(&server.port) {
        return Ok(None);
    }
    let Some(tr) = &t.trust else {
        return Err(
            "a validation trust this importer does not know (or none): TLS to it is not imported"
                .into(),
        );
    };
    if let Trust::Sds(name) = tr {
        // SPIRE on both sides: the mesh's own identities do the same.
        if !server.serves_mesh {
            return Err(format!(
                "SDS trust {name:?}, but virtual node {} does not present an SDS certificate (which becomes its mesh identity): set `tls` by hand",
                server.proxy
            ));
        }
        r.lossy(
            format!("{at}.validation.trust.sds"),
            format!("tls: {{ mesh: {} }}: mutual TLS with the mesh's identities from the control plane's CA, not SDS secret {name:?} (SPIRE); the SANs App Mesh checked are replaced by the server's identity spiffe://TRUST_DOMAIN/proxy/{}", server.proxy, server.proxy),
        );
        return Ok(Some(json!({ "mesh": server.proxy })));
    }
    let mut tls = Map::new();
    tls.insert(
        "trust".into(),
        trust(tr, &format!("{at}.validation.trust"), r),
    );
    let sans = if t.sans.is_empty() {
        let Some(name) = &server.discovery_name else {
            return Err(format!(
                "no subjectAlternativeNames, and virtual node {} has no service discovery name to check instead",
                server.proxy
            ));
        };
        r.mapped(
            format!("{at}.validation.subjectAlternativeNames"),
            format!("none: subject_alt_names [{name}], the server's service discovery name, as App Mesh checks it"),
        );
        vec![name.clone()]
    } else {
        r.mapped(
            format!("{at}.validation.subjectAlternativeNames"),
            "subject_alt_names",
        );
        t.sans.clone()
    };
    tls.insert("subject_alt_names".into(), json!(sans));
    if let Some(c) = &t.cert {
        tls.insert(
            "certificate".into(),
            certificate(c, &format!("{at}.certificate"), r),
        );
    }
    Ok(Some(Value::Object(tls)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::appmesh::report::Outcome;

    fn outcome<'a>(r: &'a Resource, field: &str) -> &'a Outcome {
        &r.fields
            .iter()
            .find(|f| f.field == field)
            .unwrap_or_else(|| panic!("{field} missing from {r:?}"))
            .outcome
    }

    #[test]
    fn a_strict_acm_listener_with_file_client_trust_is_mtls_with_the_sans_allowed() {
        let mut r = Resource::new("virtual node", "blue");
        let t = ListenerTls {
            mode: "STRICT".into(),
            cert: Some(Cert::Acm(
                "arn:aws:acm:us-east-1:111122223333:certificate/abc".into(),
            )),
            trust: Some(Trust::File("/certs/ca.pem".into())),
            sans: vec!["front.color.local".into(), "front".into()],
        };
        let tls = listener(&t, "spec.listeners[0].tls", &mut r).unwrap();
        assert_eq!(
            tls,
            json!({
                "mode": "strict",
                "certificate": { "acm": { "arn": "arn:aws:acm:us-east-1:111122223333:certificate/abc" } },
                "client_certificate": { "trust": { "file": "/certs/ca.pem" }, "allow": ["dns:front.color.local", "dns:front"] },
            })
        );
        assert!(matches!(
            outcome(&r, "spec.listeners[0].tls.certificate.acm"),
            Outcome::Mapped(_)
        ));
        assert!(matches!(
            outcome(&r, "spec.listeners[0].tls.validation.trust.file"),
            Outcome::Lossy(_)
        ));
        let Outcome::Mapped(to) = outcome(
            &r,
            "spec.listeners[0].tls.validation.subjectAlternativeNames",
        ) else {
            panic!("{r:?}")
        };
        assert!(to.contains("`dns:NAME`"), "{to}");
    }

    #[test]
    fn permissive_sds_is_permissive_mesh_tls_and_disabled_is_none() {
        let mut r = Resource::new("virtual node", "blue");
        let t = ListenerTls {
            mode: "PERMISSIVE".into(),
            cert: Some(Cert::Sds("spiffe://td/blue".into())),
            trust: Some(Trust::Sds("spiffe://td".into())),
            sans: vec!["spiffe://td/front".into()],
        };
        let tls = listener(&t, "tls", &mut r).unwrap();
        assert_eq!(
            tls,
            json!({ "mode": "permissive", "certificate": "mesh", "client_certificate": { "trust": "mesh" } })
        );
        assert!(matches!(outcome(&r, "tls.mode"), Outcome::Mapped(_)));
        assert!(matches!(
            outcome(&r, "tls.certificate.sds"),
            Outcome::Lossy(_)
        ));
        assert!(matches!(
            outcome(&r, "tls.validation.subjectAlternativeNames"),
            Outcome::Lossy(_)
        ));
        let disabled = ListenerTls {
            mode: "DISABLED".into(),
            ..t
        };
        assert_eq!(listener(&disabled, "tls", &mut r), None);
    }

    #[test]
    fn a_client_policy_checks_the_server_s_discovery_name_unless_it_names_sans() {
        let mut r = Resource::new("virtual node", "front");
        let server = Server {
            proxy: "blue",
            discovery_name: Some("blue.color.local".into()),
            port: 8080,
            serves_mesh: false,
        };
        let mut t = ClientTls {
            enforce: true,
            ports: vec![],
            cert: Some(Cert::File(
                "/certs/front.pem".into(),
                "/certs/front.key".into(),
            )),
            trust: Some(Trust::Acm(vec![
                "arn:aws:acm-pca:us-east-1:111122223333:certificate-authority/ca".into(),
            ])),
            sans: vec![],
        };
        assert_eq!(
            client(&t, &server, "p", &mut r).unwrap(),
            Some(json!({
                "trust": { "acm_pca": ["arn:aws:acm-pca:us-east-1:111122223333:certificate-authority/ca"] },
                "subject_alt_names": ["blue.color.local"],
                "certificate": { "file": { "chain": "/certs/front.pem", "key": "/certs/front.key" } },
            }))
        );
        t.sans = vec!["blue.example".into()];
        t.cert = None;
        assert_eq!(
            client(&t, &server, "p", &mut r).unwrap().unwrap()["subject_alt_names"],
            json!(["blue.example"])
        );
        // Another port, or not enforced: plaintext to this server.
        t.ports = vec![9090];
        assert_eq!(client(&t, &server, "p", &mut r).unwrap(), None);
        t.ports = vec![];
        t.enforce = false;
        assert_eq!(client(&t, &server, "p", &mut r).unwrap(), None);
        // SDS trust to a server without a mesh identity cannot be expressed.
        t.enforce = true;
        t.trust = Some(Trust::Sds("bundle".into()));
        assert!(client(&t, &server, "p", &mut r).is_err());
        let mesh_server = Server {
            serves_mesh: true,
            ..server
        };
        assert_eq!(
            client(&t, &mesh_server, "p", &mut r).unwrap(),
            Some(json!({ "mesh": "blue" }))
        );
    }
}
