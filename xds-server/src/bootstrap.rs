//! The bootstrap of the generic Envoy image: who it is, and where its control plane is.
//!
//! Everything else (listeners, routes, clusters, endpoints) comes over ADS, so one image and
//! this one small file serve every proxy role.

use std::net::{IpAddr, SocketAddr};

use serde_json::{Value, json};

/// What the bootstrap says.
#[derive(Debug, Clone)]
pub struct BootstrapConfig {
    /// The proxy role (`node.cluster`), a key of the catalog's `proxies`.
    pub proxy: String,
    /// This Envoy's identity (`node.id`), e.g. the ECS task ARN.
    pub node_id: String,
    /// The control plane, `host:port`.
    pub xds_host: String,
    /// The control plane's port.
    pub xds_port: u16,
    /// Envoy's admin interface.
    pub admin: SocketAddr,
    /// Use the delta (incremental) xDS protocol.
    pub delta: bool,
}

/// Why `--xds` is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not HOST:PORT")]
pub struct BadXdsAddress(pub String);

/// Splits `host:port` (IPv6 in brackets).
pub fn parse_host_port(s: &str) -> Result<(String, u16), BadXdsAddress> {
    let bad = || BadXdsAddress(s.to_string());
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

fn socket_address(address: &str, port: u16) -> Value {
    json!({ "socket_address": { "address": address, "port_value": port } })
}

/// The bootstrap document.
pub fn bootstrap(c: &BootstrapConfig) -> Value {
    let config_source = json!({ "ads": {}, "resource_api_version": "V3" });
    // A name (an NLB, a Cloud Map name) is re-resolved; an IP is used as is.
    let discovery = if c.xds_host.parse::<IpAddr>().is_ok() {
        "STATIC"
    } else {
        "STRICT_DNS"
    };
    json!({
        "node": { "id": c.node_id, "cluster": c.proxy },
        "admin": { "address": socket_address(&c.admin.ip().to_string(), c.admin.port()) },
        "dynamic_resources": {
            "ads_config": {
                "api_type": if c.delta { "DELTA_GRPC" } else { "GRPC" },
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [ { "envoy_grpc": { "cluster_name": "xds_cluster" } } ],
            },
            "cds_config": config_source,
            "lds_config": config_source,
        },
        "static_resources": {
            "clusters": [ {
                "name": "xds_cluster",
                "type": discovery,
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": { "http2_protocol_options": {
                            // Notices a dead control plane behind an NLB, which keeps idle flows.
                            "connection_keepalive": { "interval": "30s", "timeout": "5s" }
                        } }
                    }
                },
                "load_assignment": {
                    "cluster_name": "xds_cluster",
                    "endpoints": [ { "lb_endpoints": [ {
                        "endpoint": { "address": socket_address(&c.xds_host, c.xds_port) }
                    } ] } ]
                }
            } ]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ips_pick_the_cluster_type() {
        let mut c = BootstrapConfig {
            proxy: "intdemo".into(),
            node_id: "task-1".into(),
            xds_host: "127.0.0.1".into(),
            xds_port: 18000,
            admin: "127.0.0.1:9901".parse().unwrap(),
            delta: false,
        };
        let b = bootstrap(&c);
        assert_eq!(b["node"]["cluster"], "intdemo");
        assert_eq!(b["static_resources"]["clusters"][0]["type"], "STATIC");
        assert_eq!(b["dynamic_resources"]["ads_config"]["api_type"], "GRPC");
        c.xds_host = "xds.prism-test.atala.local".into();
        c.delta = true;
        let b = bootstrap(&c);
        assert_eq!(b["static_resources"]["clusters"][0]["type"], "STRICT_DNS");
        assert_eq!(
            b["dynamic_resources"]["ads_config"]["api_type"],
            "DELTA_GRPC"
        );
    }

    #[test]
    fn host_port_parsing() {
        assert_eq!(parse_host_port("xds:18000").unwrap(), ("xds".into(), 18000));
        assert_eq!(
            parse_host_port("[::1]:18000").unwrap(),
            ("::1".into(), 18000)
        );
        assert!(parse_host_port("xds").is_err());
        assert!(parse_host_port(":18000").is_err());
        assert!(parse_host_port("xds:0").is_err());
    }
}
