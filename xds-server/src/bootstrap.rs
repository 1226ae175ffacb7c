//! The bootstrap of the generic Envoy image: who it is, and where its control plane is.
//!
//! Everything else (listeners, routes, clusters, endpoints) comes over ADS, so one image and
//! this one small file serve every proxy role.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::{Value, json};

/// What the bootstrap says.
#[derive(Debug, Clone)]
pub struct BootstrapConfig {
    /// The proxy role (`node.cluster`), a key of the catalog's `proxies`.
    pub proxy: String,
    /// This Envoy's identity (`node.id`), e.g. the ECS task ARN.
    pub node_id: String,
    /// The availability zone Envoy runs in (`node.locality.zone`), which zone-aware upstreams
    /// prefer.
    pub zone: Option<String>,
    /// The control plane, `host:port`.
    pub xds_host: String,
    /// The control plane's port.
    pub xds_port: u16,
    /// Envoy's admin interface.
    pub admin: SocketAddr,
    /// A listener that serves only `GET /stats/prometheus` and `GET /ready` from the admin
    /// interface, so the admin can stay on loopback while Prometheus scrapes from outside.
    pub stats_listen: Option<SocketAddr>,
    /// Use the delta (incremental) xDS protocol.
    pub delta: bool,
    /// The longest pause between Envoy's attempts to reach the control plane again.
    pub retry_max: Duration,
    /// TLS to the control plane: the CA bundle (PEM file) that signed its certificate, which
    /// must name the `--xds` host.
    pub xds_ca: Option<std::path::PathBuf>,
    /// Mutual TLS to the control plane with the certificate `xds-server identity` keeps in
    /// this directory, read through SDS from its files (and again when they are replaced);
    /// the server is then checked against the trust bundle kept there too.
    pub identity_dir: Option<std::path::PathBuf>,
    /// The most downstream connections Envoy holds at once, over all its listeners (its
    /// overload manager refuses more): a flood cannot exhaust its memory or descriptors.
    pub max_connections: u64,
}

/// The default of [`BootstrapConfig::max_connections`]: far above what one service's sidecar
/// holds, far below what exhausts a task.
pub const MAX_CONNECTIONS: u64 = 50_000;

/// Envoy's first pause before reconnecting to the control plane; the pauses double (with
/// jitter) up to [`BootstrapConfig::retry_max`]. Envoy's own default, 0.5 s up to 30 s, left
/// proxies without a control plane for up to half a minute after every xds-server deploy.
const RETRY_BASE: Duration = Duration::from_millis(250);

/// A duration as protobuf JSON writes it (`0.25s`).
fn pb_json_duration(d: Duration) -> String {
    let s = format!("{:.3}", d.as_secs_f64());
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}s")
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

/// Names of the bootstrap's own listener and cluster; catalog names cannot contain `/`, so they
/// never meet a listener or cluster from the control plane.
const STATS_LISTENER: &str = "static/stats";
const ADMIN_CLUSTER: &str = "static/admin";

/// The listener that passes `GET /stats/prometheus` and `GET /ready` to the admin interface and
/// answers 404 to everything else, and the cluster of the admin interface behind it.
fn stats_resources(listen: SocketAddr, admin: SocketAddr) -> (Value, Value) {
    let to_admin = |path: &str| {
        json!({
            "match": {
                "path": path,
                "headers": [ { "name": ":method", "string_match": { "exact": "GET" } } ],
            },
            "route": { "cluster": ADMIN_CLUSTER },
        })
    };
    let listener = json!({
        "name": STATS_LISTENER,
        "address": socket_address(&listen.ip().to_string(), listen.port()),
        "filter_chains": [ { "filters": [ {
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "stats",
                "route_config": { "virtual_hosts": [ {
                    "name": "stats",
                    "domains": ["*"],
                    "routes": [
                        to_admin("/stats/prometheus"),
                        to_admin("/ready"),
                        { "match": { "prefix": "/" }, "direct_response": { "status": 404 } },
                    ],
                } ] },
                "http_filters": [ {
                    "name": "envoy.filters.http.router",
                    "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" },
                } ],
            },
        } ] } ],
    });
    let cluster = json!({
        "name": ADMIN_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": ADMIN_CLUSTER,
            "endpoints": [ { "lb_endpoints": [ {
                "endpoint": { "address": socket_address(&admin.ip().to_string(), admin.port()) }
            } ] } ],
        },
    });
    (listener, cluster)
}

/// An SDS secret read from a file, and read again when a file is moved into its directory
/// (as `xds-server identity` replaces them).
fn file_secret(name: &str, path: &std::path::Path, dir: &std::path::Path) -> Value {
    json!({
        "name": name,
        "sds_config": {
            "path_config_source": {
                "path": path.display().to_string(),
                "watched_directory": { "path": dir.display().to_string() },
            },
            "resource_api_version": "V3",
        },
    })
}

/// The xDS cluster's TLS: the control plane's certificate must chain to the CA (`--xds-ca`, or
/// the trust bundle of the identity directory) and name the host Envoy dials; with an identity
/// directory, Envoy presents its certificate.
fn xds_tls(c: &BootstrapConfig) -> Option<Value> {
    let san_type = if c.xds_host.parse::<IpAddr>().is_ok() {
        "IP_ADDRESS"
    } else {
        "DNS"
    };
    let san = json!([ { "san_type": san_type, "matcher": { "exact": c.xds_host } } ]);
    let mut common = match (&c.identity_dir, &c.xds_ca) {
        // The control plane's certificate may come from another CA than the proxies' (files
        // from a corporate CA): --xds-ca says which, when given.
        (_, Some(ca)) => json!({
            "alpn_protocols": ["h2"],
            "validation_context": {
                "trusted_ca": { "filename": ca.display().to_string() },
                "match_typed_subject_alt_names": san,
            },
        }),
        (Some(dir), None) => {
            let (_, trust, dir) = crate::identity::client::sds_paths(dir);
            json!({
                "alpn_protocols": ["h2"],
                "combined_validation_context": {
                    "default_validation_context": { "match_typed_subject_alt_names": san },
                    "validation_context_sds_secret_config":
                        file_secret(crate::identity::client::TRUST_SECRET, &trust, &dir),
                },
            })
        }
        (None, None) => return None,
    };
    if let Some(dir) = &c.identity_dir {
        let (certificate, _, dir) = crate::identity::client::sds_paths(dir);
        common["tls_certificate_sds_secret_configs"] = json!([file_secret(
            crate::identity::client::CERTIFICATE_SECRET,
            &certificate,
            &dir
        )]);
    }
    Some(json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": c.xds_host,
            "common_tls_context": common,
        },
    }))
}

/// The identity files the bootstrap names that are not there (yet): Envoy refuses a file SDS
/// source whose file is missing.
pub fn missing_identity_files(c: &BootstrapConfig) -> Vec<std::path::PathBuf> {
    let Some(dir) = &c.identity_dir else {
        return Vec::new();
    };
    let (certificate, trust, _) = crate::identity::client::sds_paths(dir);
    let mut files = vec![certificate];
    if c.xds_ca.is_none() {
        files.push(trust);
    }
    files.into_iter().filter(|f| !f.exists()).collect()
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
    let mut doc = json!({
        "node": { "id": c.node_id, "cluster": c.proxy },
        "admin": { "address": socket_address(&c.admin.ip().to_string(), c.admin.port()) },
        "dynamic_resources": {
            "ads_config": {
                "api_type": if c.delta { "DELTA_GRPC" } else { "GRPC" },
                "transport_api_version": "V3",
                "set_node_on_first_message_only": true,
                "grpc_services": [ { "envoy_grpc": {
                    "cluster_name": "xds_cluster",
                    "retry_policy": { "retry_back_off": {
                        "base_interval": pb_json_duration(RETRY_BASE.min(c.retry_max)),
                        "max_interval": pb_json_duration(c.retry_max),
                    } },
                } } ],
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
        },
        // Without a limit Envoy warns at start, and takes connections until the task dies.
        "overload_manager": { "resource_monitors": [ {
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                "max_active_downstream_connections": c.max_connections,
            }
        } ] }
    });
    if let Some(tls) = xds_tls(c) {
        doc["static_resources"]["clusters"][0]["transport_socket"] = tls;
    }
    if discovery == "STRICT_DNS" {
        // Envoy's default tries IPv6 first: `localhost` became [::1], where nothing listens,
        // and the proxy never connected (nothing in its log says why).
        doc["static_resources"]["clusters"][0]["dns_lookup_family"] = json!("V4_PREFERRED");
    }
    if let Some(listen) = c.stats_listen {
        let (listener, cluster) = stats_resources(listen, c.admin);
        let statics = &mut doc["static_resources"];
        statics["listeners"] = json!([listener]);
        if let Some(clusters) = statics["clusters"].as_array_mut() {
            clusters.push(cluster);
        }
    }
    if let Some(zone) = &c.zone {
        doc["node"]["locality"] = json!({ "zone": zone });
    }
    doc
}

/// How often a proxyless gRPC client reads its identity files again (`xds-server identity`
/// replaces them at half life, hours ahead of their expiry).
const GRPC_IDENTITY_REFRESH: &str = "60s";

/// The PEM files of an identity directory a gRPC client reads: certificate, key, trust bundle.
pub fn grpc_identity_files(dir: &std::path::Path) -> [std::path::PathBuf; 3] {
    use crate::identity::client::{CERTIFICATE_FILE, PRIVATE_KEY_FILE, TRUST_BUNDLE_FILE};
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    [CERTIFICATE_FILE, PRIVATE_KEY_FILE, TRUST_BUNDLE_FILE].map(|f| dir.join(f))
}

/// The bootstrap of a proxyless gRPC client (the file `GRPC_XDS_BOOTSTRAP` names, gRFC A27):
/// the control plane over SotW xDS v3, in plaintext or TLS that checks the `--xds` host's name
/// against `xds_ca` (gRFC A65), and the client's node. With `identity_dir`, as for Envoy, the
/// client presents the certificate `xds-server identity` keeps there to the control plane
/// (checked against the trust bundle there, unless `xds_ca`), and its certificate provider
/// [`crate::translate::tls::GRPC_CERTIFICATE_PROVIDER`] holds that identity and trust for the
/// mesh TLS of its clusters (gRFC A29). Only `proxy`, `node_id`, `zone`, `xds_host`,
/// `xds_port`, `xds_ca` and `identity_dir` are read: the rest is Envoy's.
pub fn grpc_bootstrap(c: &BootstrapConfig) -> Value {
    let identity = c.identity_dir.as_deref().map(grpc_identity_files);
    let path = |p: &std::path::Path| p.display().to_string();
    let trust = c
        .xds_ca
        .as_deref()
        .or(identity.as_ref().map(|[_, _, t]| t.as_path()));
    let creds = match (trust, &identity) {
        (Some(ca), None) => json!({ "type": "tls", "config": { "ca_certificate_file": path(ca) } }),
        (Some(ca), Some([cert, key, _])) => json!({ "type": "tls", "config": {
            "ca_certificate_file": path(ca),
            "certificate_file": path(cert),
            "private_key_file": path(key),
        } }),
        (None, _) => json!({ "type": "insecure" }),
    };
    let mut doc = json!({
        "xds_servers": [ {
            "server_uri": format!("{}:{}", bracketed(&c.xds_host), c.xds_port),
            "channel_creds": [creds],
            "server_features": ["xds_v3"],
        } ],
        // grpc-js-xds refuses a bootstrap whose node has no `locality`, even an empty one.
        "node": { "id": c.node_id, "cluster": c.proxy, "locality": {} },
    });
    if let Some([cert, key, trust]) = &identity {
        doc["certificate_providers"] = json!({
            crate::translate::tls::GRPC_CERTIFICATE_PROVIDER: {
                "plugin_name": "file_watcher",
                "config": {
                    "certificate_file": path(cert),
                    "private_key_file": path(key),
                    "ca_certificate_file": path(trust),
                    "refresh_interval": GRPC_IDENTITY_REFRESH,
                },
            },
        });
    }
    if let Some(zone) = &c.zone {
        doc["node"]["locality"]["zone"] = json!(zone);
    }
    doc
}

/// A host as a URI authority writes it: an IPv6 address in brackets.
fn bracketed(host: &str) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => host.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BootstrapConfig {
        BootstrapConfig {
            proxy: "intdemo".into(),
            node_id: "task-1".into(),
            zone: None,
            xds_host: "127.0.0.1".into(),
            xds_port: 18000,
            admin: "127.0.0.1:9901".parse().unwrap(),
            stats_listen: None,
            delta: false,
            retry_max: Duration::from_secs(2),
            xds_ca: None,
            identity_dir: None,
            max_connections: MAX_CONNECTIONS,
        }
    }

    #[test]
    fn a_grpc_bootstrap_names_the_server_its_credentials_and_the_node() {
        let mut c = config();
        c.proxy = "wallet-backend".into();
        c.zone = Some("eu-west-1a".into());
        assert_eq!(
            grpc_bootstrap(&c),
            json!({
                "xds_servers": [ {
                    "server_uri": "127.0.0.1:18000",
                    "channel_creds": [ { "type": "insecure" } ],
                    "server_features": ["xds_v3"],
                } ],
                "node": { "id": "task-1", "cluster": "wallet-backend", "locality": { "zone": "eu-west-1a" } },
            })
        );
        c.xds_ca = Some("/etc/xds/ca.pem".into());
        c.xds_host = "::1".into();
        let b = grpc_bootstrap(&c);
        assert_eq!(
            b["xds_servers"][0]["channel_creds"],
            json!([ { "type": "tls", "config": { "ca_certificate_file": "/etc/xds/ca.pem" } } ])
        );
        assert_eq!(b["xds_servers"][0]["server_uri"], "[::1]:18000");
        c.zone = None;
        assert_eq!(
            grpc_bootstrap(&c)["node"]["locality"],
            json!({}),
            "grpc-js-xds needs a locality, if empty"
        );
    }

    #[test]
    fn a_grpc_bootstrap_with_an_identity_has_mutual_tls_and_the_mesh_certificate_provider() {
        let mut c = config();
        c.identity_dir = Some("/run/xds-identity".into());
        let b = grpc_bootstrap(&c);
        assert_eq!(
            b["xds_servers"][0]["channel_creds"],
            json!([ { "type": "tls", "config": {
                "ca_certificate_file": "/run/xds-identity/trust_bundle.pem",
                "certificate_file": "/run/xds-identity/certificate.pem",
                "private_key_file": "/run/xds-identity/private_key.pem",
            } } ])
        );
        assert_eq!(
            b["certificate_providers"],
            json!({ "mesh": { "plugin_name": "file_watcher", "config": {
                "certificate_file": "/run/xds-identity/certificate.pem",
                "private_key_file": "/run/xds-identity/private_key.pem",
                "ca_certificate_file": "/run/xds-identity/trust_bundle.pem",
                "refresh_interval": "60s",
            } } })
        );
        // --xds-ca names the control plane's CA; the mesh trust stays the identity's.
        c.xds_ca = Some("/etc/xds-ca.pem".into());
        let b = grpc_bootstrap(&c);
        assert_eq!(
            b["xds_servers"][0]["channel_creds"][0]["config"]["ca_certificate_file"],
            "/etc/xds-ca.pem"
        );
        assert_eq!(
            b["certificate_providers"]["mesh"]["config"]["ca_certificate_file"],
            "/run/xds-identity/trust_bundle.pem"
        );
        assert!(
            grpc_bootstrap(&config())
                .get("certificate_providers")
                .is_none()
        );
    }

    #[test]
    fn envoy_limits_its_downstream_connections() {
        let mut c = config();
        c.max_connections = 1234;
        let b = bootstrap(&c);
        let monitor = &b["overload_manager"]["resource_monitors"][0];
        assert_eq!(
            monitor["name"],
            "envoy.resource_monitors.global_downstream_max_connections"
        );
        assert_eq!(
            monitor["typed_config"]["max_active_downstream_connections"],
            1234
        );
    }

    #[test]
    fn the_zone_becomes_the_node_locality() {
        let mut c = config();
        assert!(bootstrap(&c)["node"].get("locality").is_none());
        c.zone = Some("us-east-1b".into());
        assert_eq!(bootstrap(&c)["node"]["locality"]["zone"], "us-east-1b");
    }

    #[test]
    fn names_and_ips_pick_the_cluster_type() {
        let mut c = config();
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
    fn the_stats_listener_is_there_only_when_asked_for() {
        let mut c = config();
        assert!(bootstrap(&c)["static_resources"].get("listeners").is_none());
        c.stats_listen = Some("0.0.0.0:9902".parse().unwrap());
        let b = bootstrap(&c);
        let statics = &b["static_resources"];
        assert_eq!(statics["listeners"][0]["name"], STATS_LISTENER);
        assert_eq!(
            statics["listeners"][0]["address"]["socket_address"]["port_value"],
            9902
        );
        let admin = &statics["clusters"][1];
        assert_eq!(admin["name"], ADMIN_CLUSTER);
        assert_eq!(
            admin["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
                ["port_value"],
            9901
        );
    }

    #[test]
    fn envoy_reconnects_quickly_and_prefers_ipv4_for_names() {
        let mut c = config();
        let b = bootstrap(&c);
        let backoff = &b["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]["retry_policy"]
            ["retry_back_off"];
        assert_eq!(backoff["base_interval"], "0.25s");
        assert_eq!(backoff["max_interval"], "2s");
        assert!(b["static_resources"]["clusters"][0]["dns_lookup_family"].is_null());
        c.retry_max = Duration::from_millis(100);
        c.xds_host = "localhost".into();
        let b = bootstrap(&c);
        let backoff = &b["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]["retry_policy"]
            ["retry_back_off"];
        assert_eq!(backoff["base_interval"], "0.1s");
        assert_eq!(backoff["max_interval"], "0.1s");
        assert_eq!(
            b["static_resources"]["clusters"][0]["dns_lookup_family"],
            "V4_PREFERRED"
        );
    }

    #[test]
    fn tls_to_the_control_plane_checks_its_name() {
        let mut c = config();
        assert!(bootstrap(&c)["static_resources"]["clusters"][0]["transport_socket"].is_null());
        c.xds_ca = Some("/etc/xds/ca.pem".into());
        c.xds_host = "xds.internal".into();
        let b = bootstrap(&c);
        let tls = &b["static_resources"]["clusters"][0]["transport_socket"]["typed_config"];
        assert_eq!(tls["sni"], "xds.internal");
        let v = &tls["common_tls_context"]["validation_context"];
        assert_eq!(v["trusted_ca"]["filename"], "/etc/xds/ca.pem");
        assert_eq!(v["match_typed_subject_alt_names"][0]["san_type"], "DNS");
        assert_eq!(
            v["match_typed_subject_alt_names"][0]["matcher"]["exact"],
            "xds.internal"
        );
        c.xds_host = "10.0.0.7".into();
        let b = bootstrap(&c);
        let v = &b["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]["common_tls_context"]
            ["validation_context"];
        assert_eq!(
            v["match_typed_subject_alt_names"][0]["san_type"],
            "IP_ADDRESS"
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

    #[test]
    fn an_identity_directory_gives_mutual_tls_through_file_sds() {
        let mut c = config();
        c.identity_dir = Some("/run/xds-identity".into());
        let b = bootstrap(&c);
        let tls = &b["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]["common_tls_context"];
        let cert = &tls["tls_certificate_sds_secret_configs"][0];
        assert_eq!(cert["name"], "xds-identity");
        let source = &cert["sds_config"]["path_config_source"];
        assert_eq!(source["path"], "/run/xds-identity/sds-certificate.json");
        assert_eq!(source["watched_directory"]["path"], "/run/xds-identity");
        let v = &tls["combined_validation_context"];
        assert_eq!(
            v["validation_context_sds_secret_config"]["sds_config"]["path_config_source"]["path"],
            "/run/xds-identity/sds-trust.json"
        );
        assert_eq!(
            v["default_validation_context"]["match_typed_subject_alt_names"][0]["matcher"]["exact"],
            "127.0.0.1"
        );
        // Without --xds-ca the identity directory's bundle is the trust ...
        assert!(tls.get("validation_context").is_none());
        assert_eq!(missing_identity_files(&c).len(), 2);
        // ... with it, --xds-ca is (the server's CA may not be the proxies').
        c.xds_ca = Some("/etc/xds/ca.pem".into());
        let b = bootstrap(&c);
        let tls = &b["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]["common_tls_context"];
        assert_eq!(
            tls["validation_context"]["trusted_ca"]["filename"],
            "/etc/xds/ca.pem"
        );
        assert!(tls.get("combined_validation_context").is_none());
        assert_eq!(
            tls["tls_certificate_sds_secret_configs"][0]["name"],
            "xds-identity"
        );
        assert_eq!(missing_identity_files(&c).len(), 1);
    }
}
