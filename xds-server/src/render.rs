//! Resources as people read them: protobuf JSON (snake_case field names, `@type` on every
//! `Any`), the format of Envoy's own config dumps. Used by `xds-server render` and
//! `/debug/config`.

use std::sync::LazyLock;

use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde_json::{Map, Value, json};

use crate::cache::Snapshot;
use crate::catalog::{LoadedCatalog, ProxyName};
use crate::discovery::{Discovery, DiscoveryConfig};
use crate::translate::ResourceType;

/// Descriptors of every message `translate` emits; regenerate with
/// `scripts/update-envoy-descriptors.sh`.
static POOL: LazyLock<Result<DescriptorPool, String>> = LazyLock::new(|| {
    DescriptorPool::decode(include_bytes!("../descriptors/envoy.bin").as_slice())
        .map_err(|e| format!("the built-in Envoy descriptors are corrupt: {e}"))
});

/// The descriptors of every message `translate` emits.
pub(crate) fn pool() -> Result<&'static DescriptorPool, String> {
    POOL.as_ref().map_err(Clone::clone)
}

/// Why a resource could not be shown as JSON.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot render {type_url} as JSON: {reason}")]
pub struct RenderError {
    /// The resource's type.
    pub type_url: String,
    /// What went wrong.
    pub reason: String,
}

/// One packed resource as JSON, with its `@type`.
pub fn any_json(any: &Any) -> Result<Value, RenderError> {
    let err = |reason: String| RenderError {
        type_url: any.type_url.clone(),
        reason,
    };
    let pool = pool().map_err(err)?;
    let desc = pool
        .get_message_by_name("google.protobuf.Any")
        .ok_or_else(|| err("google.protobuf.Any is missing from the descriptors".into()))?;
    let msg = DynamicMessage::decode(desc, any.encode_to_vec().as_slice())
        .map_err(|e| err(e.to_string()))?;
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(true);
    msg.serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| err(e.to_string()))
}

/// A secret as people may see it: the private key replaced by `"[redacted]"`, and what the
/// certificate says (serial, SANs, expiry) beside it.
fn redact_secret(secret: &mut Value) {
    let Some(cert) = secret.get_mut("tls_certificate") else {
        return;
    };
    if let Some(key) = cert.get_mut("private_key") {
        *key = json!("[redacted]");
    }
    let described = cert
        .pointer("/certificate_chain/inline_string")
        .and_then(Value::as_str)
        .and_then(describe_certificate);
    if let (Some(obj), Some(described)) = (cert.as_object_mut(), described) {
        obj.insert("certificate".into(), described);
    }
}

/// A SAN as openssl writes it: `DNS:name`, `URI:spiffe://...`, `IP:10.0.0.1`.
fn san_text(name: &x509_parser::extensions::GeneralName<'_>) -> String {
    use x509_parser::extensions::GeneralName;
    match name {
        GeneralName::DNSName(d) => format!("DNS:{d}"),
        GeneralName::URI(u) => format!("URI:{u}"),
        GeneralName::IPAddress(ip) => match <[u8; 4]>::try_from(*ip) {
            Ok(v4) => format!("IP:{}", std::net::Ipv4Addr::from(v4)),
            Err(_) => match <[u8; 16]>::try_from(*ip) {
                Ok(v6) => format!("IP:{}", std::net::Ipv6Addr::from(v6)),
                Err(_) => "IP:?".into(),
            },
        },
        other => other.to_string(),
    }
}

/// The serial, SANs and expiry of the first certificate of a PEM chain.
fn describe_certificate(pem: &str) -> Option<Value> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let sans: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| san.value.general_names.iter().map(san_text).collect())
        .unwrap_or_default();
    Some(json!({
        "serial": cert.raw_serial_as_string(),
        "subject_alt_names": sans,
        "not_after": cert.validity().not_after.timestamp(),
    }))
}

/// A proxy's whole snapshot: per type (`cds`, `eds`, `lds`, `rds`, `sds`) its version and
/// resources, private keys redacted; under `eds.by_zone`, the assignments that an Envoy in a
/// zone gets instead (zone-aware upstreams, with its zone first), each named `ZONE/UPSTREAM`.
pub fn snapshot_json(snapshot: &Snapshot) -> Result<Value, RenderError> {
    let mut out = types_json(snapshot)?;
    let base = snapshot.of(ResourceType::Endpoint);
    let mut by_zone = Vec::new();
    for (zone, zoned) in &snapshot.zones {
        for (name, r) in &zoned.of(ResourceType::Endpoint).resources {
            if base.resources.get(name).map(|b| b.version) != Some(r.version) {
                by_zone.push(json!({
                    "name": format!("{zone}/{name}"),
                    "caller_zone": zone.as_str(),
                    "assignment": any_json(r.body())?,
                }));
            }
        }
    }
    if !by_zone.is_empty() {
        out["eds"]["by_zone"] = Value::Array(by_zone);
    }
    Ok(out)
}

fn types_json(snapshot: &Snapshot) -> Result<Value, RenderError> {
    let mut out = Map::new();
    for t in ResourceType::ALL {
        let ts = snapshot.of(t);
        let resources = ts
            .resources
            .values()
            .map(|r| {
                let mut v = any_json(r.body())?;
                if t == ResourceType::Secret {
                    redact_secret(&mut v);
                }
                Ok(v)
            })
            .collect::<Result<Vec<_>, RenderError>>()?;
        out.insert(
            t.short().to_string(),
            json!({ "version": ts.version.to_string(), "resources": resources }),
        );
    }
    Ok(Value::Object(out))
}

/// What `xds-server render` prints: the snapshot `proxy` would get from this catalog, with the
/// endpoints of its static lists and files, or (`discover`) what every source gives right now;
/// the sources not asked are listed under `eds.not_resolved`.
pub async fn render_proxy(
    catalog: &LoadedCatalog,
    proxy: &ProxyName,
    discover: bool,
) -> Result<Value, RenderError> {
    let endpoints = if discover {
        let discovery = Discovery::new(DiscoveryConfig::default(), crate::metrics::Metrics::new());
        discovery.reconcile(catalog).await;
        discovery.endpoints(catalog).0
    } else {
        crate::discovery::offline_endpoints(catalog)
    };
    let snapshot = crate::serve::proxy_snapshot(
        &catalog.catalog,
        proxy,
        &endpoints,
        &mut Default::default(),
        &mut Default::default(),
    );
    let mut out = snapshot_json(&snapshot)?;
    // Offline, sources only AWS answers are named, not asked.
    let not_asked: Vec<Value> = catalog
        .catalog
        .upstreams
        .iter()
        .filter(|(name, _)| !endpoints.contains_key(*name))
        .filter_map(|(name, u)| {
            let source = crate::discovery::SourceKey::of(catalog, u)?;
            Some(json!({ "upstream": name.0, "source": source.describe() }))
        })
        .collect();
    if !not_asked.is_empty() {
        out["eds"]["not_resolved"] = Value::Array(not_asked);
    }
    // Secrets exist only in a running control plane: say which this proxy would get.
    let needed: Vec<Value> = crate::translate::tls::needs(&catalog.catalog, proxy)
        .into_iter()
        .map(|(name, need)| json!({ "name": name, "from": need.describe() }))
        .collect();
    out["sds"]["needed"] = Value::Array(needed);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog;
    use crate::catalog::EndpointMap;

    #[test]
    fn every_emitted_type_renders() {
        let text = r#"
version: 1
proxies:
  p:
    listeners:
      - { name: web, port: 8080, protocol: http, grpc_web: true, cors: { allow_origins: ["*"] },
          routes: [ { match: { prefix: / }, to: api } ] }
      - { name: raw, port: 9000, protocol: tcp, to: api }
upstreams:
  api:
    protocol: grpc
    endpoints: { static: ["127.0.0.1:50051"] }
    health_check: { grpc: {} }
"#;
        let c = catalog::parse("c.yaml", text).unwrap();
        let mut eps = EndpointMap::new();
        eps.insert(
            catalog::UpstreamName("api".into()),
            std::sync::Arc::new(vec![catalog::Endpoint::parse("127.0.0.1:50051").unwrap()]),
        );
        let snap = Snapshot::new(crate::translate::translate(
            &c,
            &ProxyName("p".into()),
            &eps,
        ));
        let v = snapshot_json(&snap).unwrap();
        let hcm = &v["lds"]["resources"][1]["filter_chains"][0]["filters"][0]["typed_config"];
        assert_eq!(
            hcm["@type"],
            "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
        );
        let filters: Vec<&str> = hcm["http_filters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            filters,
            [
                "envoy.filters.http.grpc_web",
                "envoy.filters.http.cors",
                "envoy.filters.http.router"
            ]
        );
        assert_eq!(
            v["cds"]["resources"][0]["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
                ["explicit_http_config"]["http2_protocol_options"],
            json!({})
        );
        assert_eq!(
            v["eds"]["resources"][0]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
                ["port_value"],
            50051
        );
    }
}
