use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{
    RouteConfiguration, route::Action, route_action::ClusterSpecifier, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use prost::Message;

use super::super::{ResourceType, translate};
use crate::catalog::{self, Endpoint, EndpointMap, ProxyName, UpstreamName};

const TARGET: &str = "connector.prism-test.atala.local:50051";

const CATALOG: &str = r#"
version: 1
defaults: { route_timeout: 20s }
proxies:
  wallet-backend:
    listeners:
      - { name: web, port: 8080, protocol: http, routes: [ { match: { prefix: /c }, to: connector }, { match: { prefix: / }, to: web } ] }
    grpc_services:
      - name: connector.prism-test.atala.local:50051
        routes:
          - match: { grpc: { service: io.Connector, method: Get }, headers: { x-canary: { not: "1" } } }
            to: connector
            timeout: 2s
            retries: { attempts: 3, on: [unavailable, cancelled] }
          - match: { prefix: / }
            split: { connector-v2: 10, connector: 90 }
upstreams:
  web: { protocol: http1, endpoints: { static: ["10.0.0.9:80"] } }
  connector: { protocol: grpc, endpoints: { static: ["10.0.0.1:50051", { address: "10.0.1.1:50051", zone: eu-west-1a }] } }
  connector-v2: { protocol: grpc, endpoints: { static: ["10.0.0.2:50051"] } }
"#;

fn resources() -> super::super::ProxyResources {
    let c = catalog::parse("c.yaml", CATALOG).unwrap();
    let mut endpoints = EndpointMap::new();
    endpoints.insert(
        UpstreamName("connector".into()),
        std::sync::Arc::new(vec![
            Endpoint::parse("10.0.0.1:50051").unwrap(),
            Endpoint {
                zone: Some(catalog::Zone::new("eu-west-1a")),
                ..Endpoint::parse("10.0.1.1:50051").unwrap()
            },
        ]),
    );
    endpoints.insert(
        UpstreamName("connector-v2".into()),
        std::sync::Arc::new(vec![Endpoint::parse("10.0.0.2:50051").unwrap()]),
    );
    translate(&c, &ProxyName("wallet-backend".into()), &endpoints)
}

#[test]
fn a_grpc_service_is_an_api_listener_over_rds_with_the_router_only() {
    let r = resources();
    let names: Vec<&String> = r.of(ResourceType::Listener).keys().collect();
    assert_eq!(names, [TARGET, "web"], "one snapshot serves both kinds");
    let l = Listener::decode(r.of(ResourceType::Listener)[TARGET].value.as_slice()).unwrap();
    assert_eq!(l.name, TARGET);
    assert!(l.address.is_none() && l.filter_chains.is_empty());
    let any = l.api_listener.unwrap().api_listener.unwrap();
    assert_eq!(
        any.type_url,
        "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    );
    let hcm = HttpConnectionManager::decode(any.value.as_slice()).unwrap();
    let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier else {
        panic!("no RDS");
    };
    assert_eq!(rds.route_config_name, TARGET);
    assert!(matches!(
        rds.config_source.unwrap().config_source_specifier,
        Some(
            envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier::Ads(_)
        )
    ));
    let filters: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(filters, ["envoy.filters.http.router"]);
}

#[test]
fn routes_use_max_stream_duration_and_grpc_retry_policies() {
    let r = resources();
    let rc =
        RouteConfiguration::decode(r.of(ResourceType::Route)[TARGET].value.as_slice()).unwrap();
    assert_eq!(rc.virtual_hosts.len(), 1);
    assert_eq!(rc.virtual_hosts[0].domains, ["*"]);
    let routes = &rc.virtual_hosts[0].routes;
    assert_eq!(routes.len(), 2);
    let m = routes[0].r#match.as_ref().unwrap();
    assert_eq!(
        m.path_specifier,
        Some(PathSpecifier::Path("/io.Connector/Get".into()))
    );
    assert!(m.grpc.is_none(), "every call is gRPC");
    assert!(m.headers[0].invert_match);
    let Some(Action::Route(a)) = &routes[0].action else {
        panic!("no route action");
    };
    assert!(a.timeout.is_none(), "gRPC clients read max_stream_duration");
    let msd = a.max_stream_duration.as_ref().unwrap();
    assert_eq!(msd.grpc_timeout_header_max.as_ref().unwrap().seconds, 2);
    assert_eq!(msd.max_stream_duration.as_ref().unwrap().seconds, 2);
    let retry = a.retry_policy.as_ref().unwrap();
    assert_eq!(retry.retry_on, "unavailable,cancelled");
    assert_eq!(retry.num_retries.unwrap().value, 3);
    assert!(retry.retry_host_predicate.is_empty() && retry.per_try_timeout.is_none());
    let Some(Action::Route(a)) = &routes[1].action else {
        panic!("no route action");
    };
    // The catalog's default route timeout applies; its default retries do not.
    assert_eq!(
        a.max_stream_duration
            .as_ref()
            .unwrap()
            .grpc_timeout_header_max
            .as_ref()
            .unwrap()
            .seconds,
        20
    );
    assert!(a.retry_policy.is_none());
    let Some(ClusterSpecifier::WeightedClusters(w)) = &a.cluster_specifier else {
        panic!("no split");
    };
    let split: Vec<(&str, u32)> = w
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight.unwrap().value))
        .collect();
    // `connector` is the Envoys' cluster too; `connector-v2` only gRPC clients call.
    assert_eq!(split, [("connector", 90), ("grpc/connector-v2", 10)]);
}

#[test]
fn the_services_upstreams_are_clusters_whose_every_locality_is_named_and_weighted() {
    let r = resources();
    let clusters: Vec<&String> = r.of(ResourceType::Cluster).keys().collect();
    assert_eq!(clusters, ["connector", "grpc/connector-v2", "web"]);
    let cla =
        ClusterLoadAssignment::decode(r.of(ResourceType::Endpoint)["connector"].value.as_slice())
            .unwrap();
    let groups: Vec<(Option<String>, Option<u32>, usize)> = cla
        .endpoints
        .iter()
        .map(|g| {
            (
                g.locality.as_ref().map(|l| l.zone.clone()),
                g.load_balancing_weight.map(|w| w.value),
                g.lb_endpoints.len(),
            )
        })
        .collect();
    // Not zone-aware: one group, in the empty locality (grpcio refuses a group without one),
    // weighted by its endpoints.
    assert_eq!(groups, [(Some(String::new()), Some(2), 2)]);
}

#[test]
fn api_listeners_and_grpc_clusters_are_left_out_of_the_wildcard() {
    let r = resources();
    let listeners = r.of(ResourceType::Listener);
    assert!(!super::in_wildcard(TARGET, &listeners[TARGET]));
    assert!(super::in_wildcard("web", &listeners["web"]));
    let clusters = r.of(ResourceType::Cluster);
    assert!(super::in_wildcard("connector", &clusters["connector"]));
    // What only gRPC clients call is no cluster for the Envoys, with TLS or without.
    let name = "grpc/connector-v2";
    assert!(!super::in_wildcard(name, &clusters[name]));
    let tls = resources_of(&mesh_tls_catalog());
    assert!(!super::in_wildcard(
        name,
        &tls.of(ResourceType::Cluster)[name]
    ));
}

#[test]
fn an_upstream_only_grpc_clients_call_gets_the_envoys_no_secrets() {
    let c = catalog::parse("c.yaml", &mesh_tls_catalog()).unwrap();
    let proxy = ProxyName("wallet-backend".into());
    // gRPC clients take their mesh identity from their bootstrap, never over SDS: nothing is
    // minted for a role whose Envoys do not call the mesh TLS upstream.
    assert!(
        super::super::tls::needs(&c, &proxy).is_empty(),
        "{:?}",
        super::super::tls::needs(&c, &proxy)
    );
    // Once an Envoy listener routes to it, its Envoys need the identity and the trust.
    let both = mesh_tls_catalog().replace(
        "{ match: { prefix: /c }, to: connector }",
        "{ match: { prefix: /c }, to: connector-v2 }",
    );
    let c = catalog::parse("c.yaml", &both).unwrap();
    let needs: Vec<String> = super::super::tls::needs(&c, &proxy).into_keys().collect();
    assert!(!needs.is_empty(), "{needs:?}");
}

/// [`CATALOG`] with mesh TLS to upstream `connector-v2` (proxy `connector-app`).
fn mesh_tls_catalog() -> String {
    CATALOG
        .replace(
            "connector-v2: { protocol: grpc,",
            "connector-v2: { protocol: grpc, tls: { mesh: connector-app },",
        )
        .replace(
            "proxies:\n",
            "proxies:\n  connector-app:\n    listeners:\n      - { name: in, port: 15000, protocol: http, tls: { certificate: mesh }, routes: [ { match: { prefix: / }, to: web } ] }\n",
        )
}

fn resources_of(text: &str) -> super::super::ProxyResources {
    let c = catalog::parse("c.yaml", text).unwrap();
    translate(&c, &ProxyName("wallet-backend".into()), &EndpointMap::new())
}

#[test]
fn a_mesh_tls_upstream_gets_a_cluster_with_certificate_providers_for_grpc_clients() {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        UpstreamTlsContext, common_tls_context::ValidationContextType,
    };
    use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;

    let r = resources_of(&mesh_tls_catalog());
    let clusters: Vec<&String> = r.of(ResourceType::Cluster).keys().collect();
    // The gRPC clients' own (certificate providers); the Envoys route to it from no listener.
    assert_eq!(clusters, ["connector", "grpc/connector-v2", "web"]);
    let c = Cluster::decode(
        r.of(ResourceType::Cluster)["grpc/connector-v2"]
            .value
            .as_slice(),
    )
    .unwrap();
    assert_eq!(
        c.eds_cluster_config.unwrap().service_name,
        "connector-v2",
        "the endpoints are the proxy's cluster's"
    );
    let Some(ConfigType::TypedConfig(any)) = c.transport_socket.unwrap().config_type else {
        panic!("no TLS");
    };
    let tls = UpstreamTlsContext::decode(any.value.as_slice()).unwrap();
    let common = tls.common_tls_context.unwrap();
    assert!(common.tls_certificate_sds_secret_configs.is_empty());
    assert_eq!(
        common
            .tls_certificate_provider_instance
            .unwrap()
            .instance_name,
        "mesh"
    );
    let Some(ValidationContextType::ValidationContext(v)) = common.validation_context_type else {
        panic!("no validation context");
    };
    assert_eq!(
        v.ca_certificate_provider_instance.unwrap().instance_name,
        "mesh"
    );
    #[allow(deprecated)]
    let sans: Vec<_> = v
        .match_subject_alt_names
        .iter()
        .map(|m| m.match_pattern.clone())
        .collect();
    assert_eq!(
        sans,
        [Some(MatchPattern::Exact(
            "spiffe://mesh.local/proxy/connector-app".into()
        ))]
    );
    // The split names the gRPC clients' cluster.
    let rc =
        RouteConfiguration::decode(r.of(ResourceType::Route)[TARGET].value.as_slice()).unwrap();
    let Some(Action::Route(a)) = &rc.virtual_hosts[0].routes[1].action else {
        panic!("no route action");
    };
    let Some(ClusterSpecifier::WeightedClusters(w)) = &a.cluster_specifier else {
        panic!("no split");
    };
    let names: Vec<&str> = w.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["connector", "grpc/connector-v2"]);
}
