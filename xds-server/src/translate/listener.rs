//! Listeners: an HTTP connection manager (routes over RDS) or a TCP proxy, and TCP proxies per
//! destination port (`ports`) when the listener takes redirected connections
//! (`original_destination`), beside an HTTP chain too.

use envoy_types::pb::envoy::config::core::v3::{
    Address, SocketAddress, address, socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener as EnvoyListener, ListenerFilter,
    filter::ConfigType, listener_filter::ConfigType as ListenerFilterConfigType,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::grpc_web::v3::GrpcWeb;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager::RouteSpecifier,
    http_filter::ConfigType as HttpConfigType,
};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy,
    tcp_proxy::{ClusterSpecifier, WeightedCluster, weighted_cluster::ClusterWeight},
};
use envoy_types::pb::google::protobuf::{Any, UInt32Value};
use envoy_types::util::pack_any;

use super::{access_log, ads_config_source, tls};
use crate::catalog::{Catalog, Listener, ListenerProtocol, ProxyName, TlsMode};

/// Filter names as Envoy knows them (also the keys of per-route filter config).
pub(super) const CORS_FILTER: &str = "envoy.filters.http.cors";
pub(super) const FAULT_FILTER: &str = "envoy.filters.http.fault";
const GRPC_WEB_FILTER: &str = "envoy.filters.http.grpc_web";
pub(super) const ROUTER_FILTER: &str = "envoy.filters.http.router";
const RBAC_FILTER: &str = "envoy.filters.network.rbac";
const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";
const ORIGINAL_DST: &str = "envoy.filters.listener.original_dst";

/// The protocol of the chain of connections to one destination port (`None`: the ports no
/// `ports` entry takes): a `ports` entry is TCP, beside an http listener's HTTP chain too.
fn chain_protocol(l: &Listener, port: Option<u32>) -> ListenerProtocol {
    match port {
        Some(_) => ListenerProtocol::Tcp,
        None => l.protocol,
    }
}

pub(super) fn listener(catalog: &Catalog, proxy: &ProxyName, l: &Listener) -> Any {
    // The filter that serves the connections to one destination port (`None`: any port no
    // other chain names), its stats under `stat_prefix`.
    let serving = |stat_prefix: String, port: Option<u32>| match chain_protocol(l, port) {
        ListenerProtocol::Http => Filter {
            name: "envoy.filters.network.http_connection_manager".into(),
            config_type: Some(ConfigType::TypedConfig(pack_any(http_connection_manager(
                l,
                stat_prefix,
            )))),
        },
        ListenerProtocol::Tcp => Filter {
            name: "envoy.filters.network.tcp_proxy".into(),
            config_type: Some(ConfigType::TypedConfig(pack_any(TcpProxy {
                stat_prefix,
                cluster_specifier: tcp_destination(l, port),
                idle_timeout: l.idle_timeout.map(|d| super::pb_duration(d.get())),
                access_log: access_log::loggers(l.access_log.as_ref(), ListenerProtocol::Tcp),
                ..Default::default()
            }))),
        },
    };
    let address = Some(Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: l.address.clone().unwrap_or_else(|| "0.0.0.0".into()),
            port_specifier: Some(PortSpecifier::PortValue(l.port as u32)),
            ..Default::default()
        })),
    });
    // The original destination, restored before any chain is chosen, is what a port's chain
    // matches on. A port no chain names and no default takes has no chain: Envoy closes the
    // connection (counted in `listener.ADDRESS.no_filter_chain_match`).
    let mut listener_filters = Vec::new();
    if l.original_destination {
        listener_filters.push(listener_filter(ORIGINAL_DST, pack_any(OriginalDst {})));
    }
    let mut ports: Vec<Option<u32>> = l
        .ports
        .iter()
        .flat_map(|p| p.keys())
        .map(|p| Some(*p as u32))
        .collect();
    // The chain of the other ports: an http listener's HTTP chain, a tcp listener's `to`,
    // `split` or passthrough (a tcp listener with only `ports` closes the others).
    if l.protocol == ListenerProtocol::Http
        || l.ports.is_none()
        || l.to.is_some()
        || l.split.is_some()
        || l.passthrough
    {
        ports.push(None);
    }
    // Per destination port: a chain's name, stat prefix and match (the default chain keeps
    // the listener's own names).
    let per_port = |port: Option<u32>, suffix: &str| {
        let (name, stats) = match port {
            Some(p) => (format!("port-{p}"), format!("{}_{p}", l.name)),
            None => (String::new(), l.name.clone()),
        };
        let name = match (name.is_empty(), suffix.is_empty()) {
            (true, _) => suffix.to_string(),
            (false, true) => name,
            (false, false) => format!("{name}-{suffix}"),
        };
        let stats = if suffix == "plaintext" {
            format!("{stats}_plaintext")
        } else {
            stats
        };
        (name, stats, port.map(|value| UInt32Value { value }))
    };
    let Some(tls) = &l.tls else {
        let filter_chains = ports
            .iter()
            .map(|port| {
                let (name, stats, destination_port) = per_port(*port, "");
                FilterChain {
                    name,
                    filter_chain_match: destination_port.map(|p| FilterChainMatch {
                        destination_port: Some(p),
                        ..Default::default()
                    }),
                    filters: vec![serving(stats, *port)],
                    ..Default::default()
                }
            })
            .collect();
        return pack_any(EnvoyListener {
            name: l.name.clone(),
            address,
            listener_filters,
            filter_chains,
            ..Default::default()
        });
    };
    // `allow`: a connection whose client certificate names no allowed identity is closed
    // (counted in Envoy's `LISTENER.rbac.denied`).
    let rbac = tls
        .client_certificate
        .as_ref()
        .and_then(|c| tls::rbac_rules(catalog, c))
        .map(|rules| Filter {
            name: RBAC_FILTER.into(),
            config_type: Some(ConfigType::TypedConfig(pack_any(NetworkRbac {
                stat_prefix: format!("{}.", l.name),
                rules: Some(rules),
                ..Default::default()
            }))),
        });
    let permissive = tls.mode == TlsMode::Permissive;
    let mut filter_chains = Vec::new();
    for port in &ports {
        let (name, stats, destination_port) = per_port(*port, "tls");
        let tls_chain = FilterChain {
            name,
            filters: rbac
                .iter()
                .cloned()
                .chain([serving(stats, *port)])
                .collect(),
            transport_socket: Some(tls::downstream(proxy, tls, chain_protocol(l, *port))),
            filter_chain_match: destination_port.map(|p| FilterChainMatch {
                destination_port: Some(p),
                ..Default::default()
            }),
            ..Default::default()
        };
        if !permissive {
            filter_chains.push(tls_chain);
            continue;
        }
        // The TLS inspector tells TLS from plaintext; each gets its own chain, the plaintext
        // one its own stats (`NAME_plaintext`), so the plaintext share shows when strict is
        // safe. No RBAC on it: plaintext names nobody.
        let (name, stats, _) = per_port(*port, "plaintext");
        filter_chains.push(FilterChain {
            filter_chain_match: Some(FilterChainMatch {
                transport_protocol: "tls".into(),
                destination_port,
                ..Default::default()
            }),
            ..tls_chain
        });
        filter_chains.push(FilterChain {
            name,
            filter_chain_match: Some(FilterChainMatch {
                transport_protocol: "raw_buffer".into(),
                destination_port,
                ..Default::default()
            }),
            filters: vec![serving(stats, *port)],
            ..Default::default()
        });
    }
    if permissive {
        listener_filters.push(listener_filter(
            TLS_INSPECTOR,
            pack_any(TlsInspector::default()),
        ));
    }
    pack_any(EnvoyListener {
        name: l.name.clone(),
        address,
        listener_filters,
        filter_chains,
        // A server-first protocol's client sends nothing the inspector could read: after a
        // second it is plaintext.
        listener_filters_timeout: permissive
            .then(|| super::pb_duration(std::time::Duration::from_secs(1))),
        continue_on_listener_filters_timeout: permissive,
        ..Default::default()
    })
}

fn listener_filter(name: &str, config: Any) -> ListenerFilter {
    ListenerFilter {
        name: name.into(),
        config_type: Some(ListenerFilterConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

/// The upstream of a TCP listener's connections to `port` (`None`: the other ports), or its
/// weighted upstreams. Envoy's TCP proxy takes no weight 0: a parked upstream is left out (its
/// cluster stays, warm for when it gets a weight).
fn tcp_destination(l: &Listener, port: Option<u32>) -> Option<ClusterSpecifier> {
    if let Some(to) = port.and_then(|p| l.ports.as_ref()?.get(&i64::from(p))) {
        return Some(ClusterSpecifier::Cluster(to.0.clone()));
    }
    if let Some(to) = &l.to {
        return Some(ClusterSpecifier::Cluster(to.0.clone()));
    }
    let Some(split) = l.split.as_ref() else {
        return l
            .passthrough
            .then(|| ClusterSpecifier::Cluster(crate::catalog::PASSTHROUGH_CLUSTER.to_string()));
    };
    Some(ClusterSpecifier::WeightedClusters(WeightedCluster {
        clusters: split
            .iter()
            .filter(|(_, w)| **w > 0)
            .map(|(name, w)| ClusterWeight {
                name: name.0.clone(),
                weight: *w as u32,
                ..Default::default()
            })
            .collect(),
    }))
}

fn http_connection_manager(l: &Listener, stat_prefix: String) -> HttpConnectionManager {
    let mut filters = Vec::new();
    if l.grpc_web {
        filters.push(http_filter(GRPC_WEB_FILTER, pack_any(GrpcWeb::default())));
    }
    if l.cors.is_some() {
        // The policy itself sits on the virtual host (see `route`).
        filters.push(http_filter(CORS_FILTER, pack_any(Cors::default())));
    }
    if l.all_routes().any(|r| r.fault.is_some()) {
        // Inert here: each route with `fault` configures it (see `route`).
        filters.push(http_filter(FAULT_FILTER, pack_any(HttpFault::default())));
    }
    filters.push(http_filter(ROUTER_FILTER, pack_any(Router::default())));
    HttpConnectionManager {
        stat_prefix,
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads_config_source()),
            route_config_name: l.name.clone(),
        })),
        http_filters: filters,
        stream_idle_timeout: l.idle_timeout.map(|d| super::pb_duration(d.get())),
        access_log: access_log::loggers(l.access_log.as_ref(), l.protocol),
        ..Default::default()
    }
}

pub(super) fn http_filter(name: &str, config: Any) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(HttpConfigType::TypedConfig(config)),
        ..Default::default()
    }
}
