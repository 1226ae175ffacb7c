//! Listeners: an HTTP connection manager (routes over RDS) or a TCP proxy.

use envoy_types::pb::envoy::config::core::v3::{
    Address, SocketAddress, address, socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, Listener as EnvoyListener, filter::ConfigType,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
use envoy_types::pb::envoy::extensions::filters::http::grpc_web::v3::GrpcWeb;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager::RouteSpecifier,
    http_filter::ConfigType as HttpConfigType,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy::ClusterSpecifier,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;

use super::ads_config_source;
use crate::catalog::{Listener, ListenerProtocol};

/// Filter names as Envoy knows them (also the keys of per-route filter config).
pub(super) const CORS_FILTER: &str = "envoy.filters.http.cors";
const GRPC_WEB_FILTER: &str = "envoy.filters.http.grpc_web";
const ROUTER_FILTER: &str = "envoy.filters.http.router";

pub(super) fn listener(l: &Listener) -> Any {
    let filter = match l.protocol {
        ListenerProtocol::Http => Filter {
            name: "envoy.filters.network.http_connection_manager".into(),
            config_type: Some(ConfigType::TypedConfig(pack_any(http_connection_manager(
                l,
            )))),
        },
        ListenerProtocol::Tcp => Filter {
            name: "envoy.filters.network.tcp_proxy".into(),
            config_type: Some(ConfigType::TypedConfig(pack_any(TcpProxy {
                stat_prefix: l.name.clone(),
                cluster_specifier: l
                    .to
                    .as_ref()
                    .map(|to| ClusterSpecifier::Cluster(to.0.clone())),
                ..Default::default()
            }))),
        },
    };
    pack_any(EnvoyListener {
        name: l.name.clone(),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: l.address.clone().unwrap_or_else(|| "0.0.0.0".into()),
                port_specifier: Some(PortSpecifier::PortValue(l.port as u32)),
                ..Default::default()
            })),
        }),
        filter_chains: vec![FilterChain {
            filters: vec![filter],
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn http_connection_manager(l: &Listener) -> HttpConnectionManager {
    let mut filters = Vec::new();
    if l.grpc_web {
        filters.push(http_filter(GRPC_WEB_FILTER, pack_any(GrpcWeb::default())));
    }
    if l.cors.is_some() {
        // The policy itself sits on the virtual host (see `route`).
        filters.push(http_filter(CORS_FILTER, pack_any(Cors::default())));
    }
    filters.push(http_filter(ROUTER_FILTER, pack_any(Router::default())));
    HttpConnectionManager {
        stat_prefix: l.name.clone(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads_config_source()),
            route_config_name: l.name.clone(),
        })),
        http_filters: filters,
        ..Default::default()
    }
}

fn http_filter(name: &str, config: Any) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(HttpConfigType::TypedConfig(config)),
        ..Default::default()
    }
}
