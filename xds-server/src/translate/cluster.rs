//! Clusters (one per upstream a proxy's listeners use; gRPC clients' own in `grpc`) and the
//! endpoint assignments of every upstream a proxy uses.

use std::collections::{BTreeMap, HashMap};

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection as EnvoyOutlier,
    circuit_breakers::Thresholds,
    cluster::{ClusterDiscoveryType, DiscoveryType, DnsLookupFamily, EdsClusterConfig, LbPolicy},
};
use envoy_types::pb::envoy::config::core::v3::{
    Address, HealthCheck as EnvoyHealthCheck, Http2ProtocolOptions, Locality, SocketAddress,
    address,
    health_check::{GrpcHealthCheck, HealthChecker, HttpHealthCheck, TcpHealthCheck},
    socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints,
    lb_endpoint::HostIdentifier,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions,
    http_protocol_options::{
        ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
    },
};
use envoy_types::pb::envoy::r#type::v3::CodecClientType;
use envoy_types::pb::google::protobuf::{Any, UInt32Value};
use envoy_types::util::pack_any;

use super::{ads_config_source, pb_duration};
use crate::catalog::{
    Catalog, DnsResolve, Endpoint, HealthCheck, LoadBalancing, Upstream, UpstreamName,
    UpstreamProtocol, Zone,
};

const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Envoy's default for `max_requests` (concurrent requests to a cluster).
const ENVOY_MAX_REQUESTS: u32 = 1024;

/// Whether the upstream's endpoints are delivered over EDS (all sources but `dns`).
pub(super) fn uses_eds(u: &Upstream) -> bool {
    u.endpoints.dns.is_none()
}

/// The cluster of upstream `name` for `proxy`, packed.
/// The cluster of `passthrough` listeners: the address the app dialled (Envoy's ORIGINAL_DST,
/// the destination the `original_dst` listener filter restored), as Istio's
/// `PassthroughCluster`.
pub(super) fn passthrough(catalog: &Catalog) -> Any {
    pack_any(Cluster {
        name: crate::catalog::PASSTHROUGH_CLUSTER.into(),
        connect_timeout: catalog
            .defaults
            .connect_timeout
            .map(|d| pb_duration(d.get())),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: LbPolicy::ClusterProvided as i32,
        ..Default::default()
    })
}

pub(super) fn cluster(
    catalog: &Catalog,
    proxy: &crate::catalog::ProxyName,
    name: &UpstreamName,
    u: &Upstream,
) -> Any {
    pack_any(envoy_cluster(catalog, proxy, name, u))
}

/// See [`cluster`].
pub(super) fn envoy_cluster(
    catalog: &Catalog,
    proxy: &crate::catalog::ProxyName,
    name: &UpstreamName,
    u: &Upstream,
) -> Cluster {
    let mut typed_extension_protocol_options = HashMap::new();
    if u.protocol.is_http2() {
        let options = HttpProtocolOptions {
            upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
                ExplicitHttpConfig {
                    protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                        Http2ProtocolOptions::default(),
                    )),
                },
            )),
            ..Default::default()
        };
        typed_extension_protocol_options
            .insert(HTTP_PROTOCOL_OPTIONS.to_string(), pack_any(options));
    }
    let mut c = Cluster {
        name: name.0.clone(),
        connect_timeout: u
            .connect_timeout
            .or(catalog.defaults.connect_timeout)
            .map(|d| pb_duration(d.get())),
        typed_extension_protocol_options,
        health_checks: u
            .health_check
            .iter()
            .map(|hc| health_check(hc, u.protocol))
            .collect(),
        // A host that discovery removed leaves at once, even while its checks pass: its address
        // may already belong to another task (awsvpc reuses them).
        ignore_health_on_host_removal: u.health_check.is_some(),
        outlier_detection: u.outlier_detection.as_ref().map(|o| EnvoyOutlier {
            consecutive_5xx: o.consecutive_5xx.map(|n| UInt32Value { value: n as u32 }),
            interval: o.interval.map(|d| pb_duration(d.get())),
            base_ejection_time: o.base_ejection_time.map(|d| pb_duration(d.get())),
            max_ejection_percent: o
                .max_ejection_percent
                .map(|n| UInt32Value { value: n as u32 }),
            ..Default::default()
        }),
        circuit_breakers: circuit_breakers(u),
        lb_policy: match u.load_balancing.unwrap_or_default() {
            LoadBalancing::RoundRobin => LbPolicy::RoundRobin,
            LoadBalancing::LeastRequest => LbPolicy::LeastRequest,
            LoadBalancing::Random => LbPolicy::Random,
            LoadBalancing::RingHash => LbPolicy::RingHash,
            LoadBalancing::Maglev => LbPolicy::Maglev,
        } as i32,
        transport_socket: u
            .tls
            .as_ref()
            .map(|tls| super::tls::upstream(catalog, proxy, tls)),
        ..Default::default()
    };
    match &u.endpoints.dns {
        Some(dns) => {
            // Envoy resolves the name itself and follows its DNS changes.
            let discovery = match dns.resolve {
                DnsResolve::Strict => DiscoveryType::StrictDns,
                DnsResolve::Logical => DiscoveryType::LogicalDns,
            };
            c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(discovery as i32));
            // ECS tasks and Cloud Map names are IPv4 first; Envoy's default would try IPv6 first.
            c.dns_lookup_family = DnsLookupFamily::V4Preferred as i32;
            let port = dns.port.or(u.port).unwrap_or_default() as u32;
            c.load_assignment = Some(assignment(
                name,
                vec![socket_address(dns.host.clone(), port)],
            ));
        }
        None => {
            c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
            c.eds_cluster_config = Some(EdsClusterConfig {
                eds_config: Some(ads_config_source()),
                service_name: String::new(),
            });
        }
    }
    c
}

/// The upstream's `max_requests`, and for HTTP upstreams room for every retry routes may make.
///
/// A request has one attempt in flight at a time, so concurrent retries never outnumber
/// concurrent requests: `max_retries` is the request limit (`max_requests`, else Envoy's default
/// of 1024). Envoy's own default of 3 concurrent retries per cluster refuses most retries of a
/// burst of failures, however the route's retry policy reads.
fn circuit_breakers(u: &Upstream) -> Option<CircuitBreakers> {
    let max_requests = u.max_requests.map(|n| n as u32);
    let max_retries =
        (u.protocol != UpstreamProtocol::Tcp).then(|| max_requests.unwrap_or(ENVOY_MAX_REQUESTS));
    let max_connections = u.max_connections.map(|n| n as u32);
    let max_pending_requests = u.max_pending_requests.map(|n| n as u32);
    if [
        max_requests,
        max_retries,
        max_connections,
        max_pending_requests,
    ]
    .iter()
    .all(Option::is_none)
    {
        return None;
    }
    let value = |n: Option<u32>| n.map(|value| UInt32Value { value });
    Some(CircuitBreakers {
        thresholds: vec![Thresholds {
            max_requests: value(max_requests),
            max_retries: value(max_retries),
            max_connections: value(max_connections),
            max_pending_requests: value(max_pending_requests),
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn health_check(hc: &HealthCheck, protocol: UpstreamProtocol) -> EnvoyHealthCheck {
    let checker = if let Some(g) = &hc.grpc {
        HealthChecker::GrpcHealthCheck(GrpcHealthCheck {
            service_name: g.service.clone(),
            ..Default::default()
        })
    } else if let Some(h) = &hc.http {
        // Speak what the upstream speaks: an h2c-only server closes an HTTP/1.1 connection.
        let codec = if protocol.is_http2() {
            CodecClientType::Http2
        } else {
            CodecClientType::Http1
        };
        HealthChecker::HttpHealthCheck(HttpHealthCheck {
            path: h.path.clone(),
            codec_client_type: codec as i32,
            ..Default::default()
        })
    } else {
        HealthChecker::TcpHealthCheck(TcpHealthCheck::default())
    };
    let secs = |d: Option<crate::catalog::Duration>, default: u64| {
        Some(pb_duration(
            d.map(|d| d.get())
                .unwrap_or(std::time::Duration::from_secs(default)),
        ))
    };
    // Envoy requires all four of these; the defaults are the ones App Mesh used.
    EnvoyHealthCheck {
        timeout: secs(hc.timeout, 1),
        interval: secs(hc.interval, 5),
        unhealthy_threshold: Some(UInt32Value {
            value: hc.unhealthy_threshold.unwrap_or(3) as u32,
        }),
        healthy_threshold: Some(UInt32Value {
            value: hc.healthy_threshold.unwrap_or(2) as u32,
        }),
        health_checker: Some(checker),
        ..Default::default()
    }
}

/// The EDS resource of an upstream, for an Envoy in `caller` (its `node.locality.zone`).
///
/// A zone-aware upstream's endpoints are grouped by zone, one locality each, so Envoy's
/// `/clusters` shows where each runs; with endpoints in the caller's zone, those get priority 0
/// and all others priority 1: Envoy sends everything to priority 0 while enough of it is
/// healthy and spills over as it fails. Other upstreams' endpoints form one group in the empty
/// locality: an Envoy that knows its zone keeps per-zone statistics
/// (`cluster.NAME.zone.FROM.TO.*`, a set per pair of zones) for every upstream whose endpoints
/// name zones, and those are worth their cost only where the zone matters.
///
/// Every group names a locality (endpoints without a zone: the empty one) with a weight (its
/// endpoint count): gRPC clients refuse a group without a locality and send nothing to one
/// without a weight; Envoy reads locality weights only when asked to (it is not, here).
pub(super) fn load_assignment(
    name: &UpstreamName,
    eps: &[Endpoint],
    zone_aware: bool,
    caller: Option<&Zone>,
) -> Any {
    let mut by_zone: BTreeMap<Option<&Zone>, Vec<Address>> = BTreeMap::new();
    for e in eps {
        by_zone
            .entry(e.zone.as_ref().filter(|_| zone_aware))
            .or_default()
            .push(socket_address(e.ip.to_string(), u32::from(e.port)));
    }
    let preferred = caller.filter(|z| zone_aware && by_zone.contains_key(&Some(*z)));
    let endpoints = by_zone
        .into_iter()
        .map(|(zone, addrs)| LocalityLbEndpoints {
            locality: Some(Locality {
                zone: zone.map(ToString::to_string).unwrap_or_default(),
                ..Default::default()
            }),
            load_balancing_weight: Some(UInt32Value {
                value: addrs.len() as u32,
            }),
            priority: u32::from(preferred.is_some_and(|p| zone != Some(p))),
            ..locality_endpoints(addrs)
        })
        .collect();
    pack_any(ClusterLoadAssignment {
        cluster_name: name.0.clone(),
        endpoints,
        ..Default::default()
    })
}

fn socket_address(host: String, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: host,
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

fn assignment(name: &UpstreamName, addrs: Vec<Address>) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.0.clone(),
        endpoints: vec![locality_endpoints(addrs)],
        ..Default::default()
    }
}

fn locality_endpoints(addrs: Vec<Address>) -> LocalityLbEndpoints {
    LocalityLbEndpoints {
        lb_endpoints: addrs
            .into_iter()
            .map(|a| LbEndpoint {
                host_identifier: Some(HostIdentifier::Endpoint(EnvoyEndpoint {
                    address: Some(a),
                    ..Default::default()
                })),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}
