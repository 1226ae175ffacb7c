use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster::ClusterDiscoveryType};
use envoy_types::pb::envoy::config::route::v3::{
    RouteAction, RouteConfiguration, route::Action, route_action::ClusterSpecifier,
};
use prost::Message;

use super::*;
use crate::catalog::{self, Endpoint};

const CATALOG: &str = r#"
version: 1
defaults: { route_timeout: 7s, retries: { attempts: 2, on: [reset] } }
proxies:
  edge:
    listeners:
      - name: web
        port: 8080
        protocol: http
        cors: { allow_origins: ["https://a.example", "https://b.example"] }
        routes:
          - { match: { prefix: /api/, headers: { x-v: "2" } }, split: { api: 3, api-old: 1 }, timeout: 30s }
          - { match: { prefix: / }, to: api }
      - { name: chain, port: 8333, protocol: tcp, to: node }
  other:
    listeners:
      - { name: web, port: 80, protocol: http, routes: [ { match: { path: /x }, to: api-old } ] }
upstreams:
  api: { protocol: grpc, endpoints: { static: ["10.0.0.2:50051", "10.0.0.1:50051"] } }
  api-old: { protocol: http1, endpoints: { file: old.json } }
  node: { protocol: tcp, endpoints: { dns: { host: node.internal, port: 8333 } } }
  unused: { protocol: http1, endpoints: { static: ["10.0.0.9:80"] } }
"#;

fn endpoints() -> EndpointMap {
    let mut m = EndpointMap::new();
    let mut api: Vec<Endpoint> = ["10.0.0.1:50051", "10.0.0.2:50051"]
        .iter()
        .map(|s| Endpoint::parse(s).unwrap())
        .collect();
    api.sort();
    m.insert(UpstreamName("api".into()), Arc::new(api));
    m
}

fn edge() -> ProxyResources {
    let c = catalog::parse("c.yaml", CATALOG).unwrap();
    translate(&c, &ProxyName("edge".into()), &endpoints())
}

fn names(r: &ProxyResources, t: ResourceType) -> Vec<&str> {
    r.of(t).keys().map(String::as_str).collect()
}

#[test]
fn a_proxy_gets_only_what_its_listeners_use() {
    let r = edge();
    assert_eq!(names(&r, ResourceType::Listener), ["chain", "web"]);
    assert_eq!(names(&r, ResourceType::Route), ["web"]);
    assert_eq!(names(&r, ResourceType::Cluster), ["api", "api-old", "node"]);
    // `node` is resolved by Envoy (DNS), so it has no EDS resource.
    // `api-old`'s file has not been read: no EDS resource, since an empty one would wipe the
    // endpoints a proxy already has.
    assert_eq!(names(&r, ResourceType::Endpoint), ["api"]);
    let c = catalog::parse("c.yaml", CATALOG).unwrap();
    let other = translate(&c, &ProxyName("other".into()), &endpoints());
    assert_eq!(names(&other, ResourceType::Cluster), ["api-old"]);
    let nobody = translate(&c, &ProxyName("nobody".into()), &endpoints());
    assert_eq!(nobody, ProxyResources::default());
}

/// The protobuf maps in a packed resource (decoded through the descriptors, into every nested
/// `Any`) that hold more than one entry.
fn maps_with_several_entries(any: &Any) -> Vec<String> {
    use prost_reflect::{DynamicMessage, ReflectMessage, Value};
    fn walk(msg: &DynamicMessage, path: &str, out: &mut Vec<String>) {
        let full_name = msg.descriptor().full_name().to_string();
        if full_name == "google.protobuf.Any" {
            let (Some(url), Some(bytes)) = (
                msg.get_field_by_name("type_url"),
                msg.get_field_by_name("value"),
            ) else {
                return;
            };
            let name = url
                .as_str()
                .unwrap_or_default()
                .rsplit('/')
                .next()
                .unwrap_or_default();
            let desc = crate::render::pool()
                .unwrap()
                .get_message_by_name(name)
                .unwrap_or_else(|| panic!("{name} is missing from the descriptors"));
            let inner = DynamicMessage::decode(desc, bytes.as_bytes().unwrap().clone()).unwrap();
            return walk(&inner, &format!("{path}<{name}>"), out);
        }
        for (field, value) in msg.fields() {
            let at = format!("{path}.{}", field.name());
            match value {
                Value::Map(m) => {
                    if m.len() > 1 {
                        out.push(at.clone());
                    }
                    for v in m.values() {
                        if let Value::Message(m) = v {
                            walk(m, &at, out);
                        }
                    }
                }
                Value::Message(m) => walk(m, &at, out),
                Value::List(items) => {
                    for v in items {
                        if let Value::Message(m) = v {
                            walk(m, &at, out);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let desc = crate::render::pool()
        .unwrap()
        .get_message_by_name("google.protobuf.Any")
        .unwrap();
    let msg = DynamicMessage::decode(desc, any.encode_to_vec().as_slice()).unwrap();
    let mut out = Vec::new();
    walk(&msg, "", &mut out);
    out
}

/// Versions are content hashes, so the same input must give the same bytes; prost encodes
/// protobuf maps in hash-map order, so that holds only while every map written has at most one
/// entry. Checked on every resource of every test catalog.
#[test]
fn output_is_deterministic_every_protobuf_map_has_at_most_one_entry() {
    for r in [edge(), limits_proxy()] {
        for t in ResourceType::ALL {
            for (name, any) in r.of(t) {
                let several = maps_with_several_entries(any);
                assert!(several.is_empty(), "{} {name}: {several:?}", t.short());
            }
        }
    }
    // The walk finds maps: a map of two entries is reported.
    let mut two = std::collections::HashMap::new();
    for k in ["a", "b"] {
        two.insert(
            k.to_string(),
            envoy_types::pb::google::protobuf::Struct::default(),
        );
    }
    let md = envoy_types::pb::envoy::config::core::v3::Metadata {
        filter_metadata: two,
        ..Default::default()
    };
    let any = envoy_types::util::pack_any(envoy_types::pb::envoy::config::cluster::v3::Cluster {
        metadata: Some(md),
        ..Default::default()
    });
    assert_eq!(
        maps_with_several_entries(&any),
        ["<envoy.config.cluster.v3.Cluster>.metadata.filter_metadata"]
    );
}

#[test]
fn routes_carry_matches_splits_timeouts_and_retries() {
    let r = edge();
    let rc = RouteConfiguration::decode(r.of(ResourceType::Route)["web"].value.as_slice()).unwrap();
    let vh = &rc.virtual_hosts[0];
    assert_eq!(vh.domains, ["*"]);
    assert!(
        vh.typed_per_filter_config
            .contains_key("envoy.filters.http.cors")
    );
    let Some(Action::Route(first)) = &vh.routes[0].action else {
        panic!("not a route action")
    };
    let Some(ClusterSpecifier::WeightedClusters(w)) = &first.cluster_specifier else {
        panic!("not a split")
    };
    let weights: Vec<(&str, u32)> = w
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight.as_ref().unwrap().value))
        .collect();
    assert_eq!(weights, [("api", 3), ("api-old", 1)]);
    assert_eq!(first.timeout.as_ref().unwrap().seconds, 30);
    assert_eq!(first.retry_policy.as_ref().unwrap().retry_on, "reset");
    assert_eq!(
        vh.routes[0].r#match.as_ref().unwrap().headers[0].name,
        "x-v"
    );
    let Some(Action::Route(second)) = &vh.routes[1].action else {
        panic!("not a route action")
    };
    assert_eq!(
        second.timeout.as_ref().unwrap().seconds,
        7,
        "defaults.route_timeout"
    );
}

#[test]
fn clusters_follow_the_upstream_protocol_and_source() {
    let r = edge();
    let cluster =
        |n: &str| Cluster::decode(r.of(ResourceType::Cluster)[n].value.as_slice()).unwrap();
    let api = cluster("api");
    assert!(
        api.typed_extension_protocol_options
            .contains_key("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
    );
    assert!(api.eds_cluster_config.is_some());
    let node = cluster("node");
    assert_eq!(
        node.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(
            envoy_types::pb::envoy::config::cluster::v3::cluster::DiscoveryType::StrictDns as i32
        ))
    );
    assert!(node.load_assignment.is_some());
    assert!(
        cluster("api-old")
            .typed_extension_protocol_options
            .is_empty()
    );
}

const LIMITS: &str = r#"
version: 1
proxies:
  edge:
    listeners:
      - name: web
        port: 8080
        protocol: http
        routes:
          - { match: { path: /a }, to: rpc }
          - { match: { path: /b }, split: { rpc: 1, rpc2: 1 } }
          - { match: { path: /c }, split: { rpc: 1, web: 1 } }
          - { match: { path: /d }, to: h2, timeout: 0s }
          - { match: { path: /e }, to: rpc, timeout: 20s }
          - { match: { path: /f }, to: web, retries: { attempts: 1, on: [5xx] } }
      - { name: raw, port: 8333, protocol: tcp, to: node }
upstreams:
  rpc: { protocol: grpc, endpoints: { static: ["10.0.0.1:50051"] }, health_check: { grpc: {} } }
  rpc2: { protocol: grpc, endpoints: { static: ["10.0.0.2:50051"] } }
  h2: { protocol: http2, endpoints: { static: ["10.0.0.3:80"] }, health_check: { http: { path: /health } }, max_requests: 50 }
  web: { protocol: http1, endpoints: { static: ["10.0.0.4:80"] }, health_check: { http: { path: /health } } }
  node: { protocol: tcp, endpoints: { static: ["10.0.0.5:8333"] } }
"#;

fn limits_proxy() -> ProxyResources {
    let c = catalog::parse("c.yaml", LIMITS).unwrap();
    translate(&c, &ProxyName("edge".into()), &EndpointMap::new())
}

fn route_actions(r: &ProxyResources) -> Vec<RouteAction> {
    let rc = RouteConfiguration::decode(r.of(ResourceType::Route)["web"].value.as_slice()).unwrap();
    rc.virtual_hosts[0]
        .routes
        .iter()
        .map(|r| match &r.action {
            Some(Action::Route(a)) => a.clone(),
            other => panic!("not a route action: {other:?}"),
        })
        .collect()
}

fn cluster_of(r: &ProxyResources, name: &str) -> Cluster {
    Cluster::decode(r.of(ResourceType::Cluster)[name].value.as_slice()).unwrap()
}

/// Seconds of a protobuf duration, `None` when unset.
fn secs(d: &Option<envoy_types::pb::google::protobuf::Duration>) -> Option<i64> {
    d.as_ref().map(|d| d.seconds)
}

#[test]
fn grpc_routes_have_no_timeout_and_honour_grpc_timeout() {
    let actions = route_actions(&limits_proxy());
    /// `timeout`, and `max_stream_duration`'s own limit and `grpc_timeout_header_max`, in seconds.
    type Limits = (Option<i64>, Option<(Option<i64>, Option<i64>)>);
    let limits: Vec<Limits> = actions
        .iter()
        .map(|a| {
            let stream = a.max_stream_duration.as_ref().map(|m| {
                (
                    secs(&m.max_stream_duration),
                    secs(&m.grpc_timeout_header_max),
                )
            });
            (secs(&a.timeout), stream)
        })
        .collect();
    assert_eq!(
        limits,
        [
            // To gRPC, no catalog value: no limit (0, not Envoy's 15 s default); grpc-timeout
            // is honoured without a cap.
            (Some(0), Some((Some(0), Some(0)))),
            (Some(0), Some((Some(0), Some(0)))),
            // A split that is not all gRPC keeps Envoy's default.
            (None, None),
            // `timeout: 0s` on any route: no limit, and grpc-timeout honoured.
            (Some(0), Some((Some(0), Some(0)))),
            // A catalog value on a gRPC route limits the stream and caps grpc-timeout.
            (Some(20), Some((Some(20), Some(20)))),
            (None, None),
        ]
    );
    // defaults.route_timeout is a catalog value too: it applies to gRPC routes.
    let edge = route_actions(&edge());
    let to_grpc = edge[1].max_stream_duration.as_ref().unwrap();
    assert_eq!(secs(&edge[1].timeout), Some(7));
    assert_eq!(secs(&to_grpc.max_stream_duration), Some(7));
    assert_eq!(secs(&to_grpc.grpc_timeout_header_max), Some(7));
}

#[test]
fn health_checks_speak_the_upstream_protocol_and_removed_hosts_leave() {
    use envoy_types::pb::envoy::config::core::v3::health_check::HealthChecker;
    use envoy_types::pb::envoy::r#type::v3::CodecClientType;
    let r = limits_proxy();
    let codec = |name: &str| match &cluster_of(&r, name).health_checks[0].health_checker {
        Some(HealthChecker::HttpHealthCheck(h)) => h.codec_client_type,
        other => panic!("not an HTTP health check: {other:?}"),
    };
    assert_eq!(codec("h2"), CodecClientType::Http2 as i32);
    assert_eq!(codec("web"), CodecClientType::Http1 as i32);
    for (name, checked) in [("rpc", true), ("h2", true), ("web", true), ("rpc2", false)] {
        assert_eq!(
            cluster_of(&r, name).ignore_health_on_host_removal,
            checked,
            "{name}"
        );
    }
}

#[test]
fn retries_go_to_another_host_and_the_circuit_breaker_leaves_room_for_them() {
    use envoy_types::pb::envoy::config::route::v3::retry_policy::retry_host_predicate::ConfigType;
    let r = limits_proxy();
    let retry = route_actions(&r)[5].retry_policy.clone().unwrap();
    assert_eq!(retry.num_retries.map(|n| n.value), Some(1));
    assert_eq!(retry.host_selection_retry_max_attempts, 3);
    let predicates: Vec<(&str, Option<&str>)> = retry
        .retry_host_predicate
        .iter()
        .map(|p| {
            let url = p.config_type.as_ref().map(|c| match c {
                ConfigType::TypedConfig(a) => a.type_url.as_str(),
            });
            (p.name.as_str(), url)
        })
        .collect();
    assert_eq!(
        predicates,
        [(
            "envoy.retry_host_predicates.previous_hosts",
            Some(
                "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
            )
        )]
    );
    let thresholds = |name: &str| {
        cluster_of(&r, name).circuit_breakers.map(|cb| {
            let t = &cb.thresholds[0];
            (
                t.max_requests.as_ref().map(|n| n.value),
                t.max_retries.as_ref().map(|n| n.value),
            )
        })
    };
    // One attempt in flight per request: retries are bounded by the request limit, Envoy's
    // 1024 when the catalog sets none.
    assert_eq!(thresholds("web"), Some((None, Some(1024))));
    assert_eq!(thresholds("h2"), Some((Some(50), Some(50))));
    assert_eq!(thresholds("node"), None, "TCP upstreams have no retries");
}

const MESH: &str = r#"
version: 1
proxies:
  api:
    listeners:
      - name: inbound
        port: 15000
        protocol: http
        tls: { mode: permissive, certificate: mesh, client_certificate: { trust: mesh, allow: [web, "spiffe://other.example/x"] } }
        routes: [ { match: { prefix: / }, to: app } ]
  web:
    listeners:
      - { name: out, port: 8080, protocol: http, routes: [ { match: { prefix: / }, to: api } ] }
  edge:
    listeners:
      - { name: out, port: 8080, protocol: tcp, to: external }
upstreams:
  app: { protocol: http1, endpoints: { static: ["127.0.0.1:9000"] } }
  api: { protocol: http1, endpoints: { static: ["10.0.0.1:15000"] }, tls: { mesh: api } }
  external: { protocol: tcp, endpoints: { dns: { host: api.example.com, port: 443 } }, tls: { sni: api.example.com, trust: system } }
"#;

#[test]
fn each_proxy_names_only_its_own_secrets() {
    use crate::secrets::Need;
    let c = catalog::parse("c.yaml", MESH).unwrap();
    let needs = |p: &str| tls::needs(&c, &ProxyName(p.into()));
    assert_eq!(
        needs("api").into_iter().collect::<Vec<_>>(),
        [
            (
                "mesh/identity/api".to_string(),
                Need::Identity(ProxyName("api".into()))
            ),
            ("mesh/trust".to_string(), Need::Trust),
        ]
    );
    // The caller of a mesh upstream presents its own identity, never the server's.
    assert_eq!(
        needs("web").into_keys().collect::<Vec<_>>(),
        ["mesh/identity/web", "mesh/trust"]
    );
    // The system's roots come from the control plane's own bundle, the same for every image.
    assert_eq!(
        needs("edge").into_iter().collect::<Vec<_>>(),
        [("trust/system".to_string(), Need::SystemTrust)]
    );
}

#[test]
fn a_permissive_mtls_listener_has_a_tls_chain_with_rbac_and_a_plaintext_one() {
    use envoy_types::pb::envoy::config::listener::v3::Listener;
    let c = catalog::parse("c.yaml", MESH).unwrap();
    let r = translate(&c, &ProxyName("api".into()), &EndpointMap::new());
    let l = Listener::decode(r.of(ResourceType::Listener)["inbound"].value.as_slice()).unwrap();
    assert_eq!(
        l.listener_filters[0].name,
        "envoy.filters.listener.tls_inspector"
    );
    let [tls, plain] = &l.filter_chains[..] else {
        panic!("two filter chains: {l:?}");
    };
    let m = |c: &envoy_types::pb::envoy::config::listener::v3::FilterChain| {
        c.filter_chain_match
            .as_ref()
            .unwrap()
            .transport_protocol
            .clone()
    };
    assert_eq!((m(tls).as_str(), m(plain).as_str()), ("tls", "raw_buffer"));
    assert!(tls.transport_socket.is_some() && plain.transport_socket.is_none());
    assert_eq!(tls.filters[0].name, "envoy.filters.network.rbac");
    assert_eq!(plain.filters.len(), 1, "no RBAC on the plaintext chain");
    let rbac = match tls.filters[0].config_type.clone().unwrap() {
        envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(a) => {
            envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac::decode(
                a.value.as_slice(),
            )
            .unwrap()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(
        allowed_sans(&rbac),
        [
            ("URI", "spiffe://mesh.local/proxy/web".to_string()),
            ("URI", "spiffe://other.example/x".to_string())
        ]
    );
    // The caller's cluster checks the server is the api proxy.
    let r = translate(&c, &ProxyName("web".into()), &EndpointMap::new());
    let cluster = Cluster::decode(r.of(ResourceType::Cluster)["api"].value.as_slice()).unwrap();
    let socket = format!("{:?}", cluster.transport_socket);
    assert!(socket.contains("UpstreamTlsContext"), "{socket}");
    let ctx = envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext::decode(
        match cluster.transport_socket.unwrap().config_type.unwrap() {
            envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(a) => a.value,
        }
        .as_slice(),
    )
    .unwrap();
    let text = format!("{ctx:?}");
    assert!(
        text.contains("spiffe://mesh.local/proxy/api") && text.contains("mesh/identity/web"),
        "{text}"
    );
}

#[test]
fn a_logical_dns_source_is_a_logical_dns_cluster() {
    let text = CATALOG.replace(
        "dns: { host: node.internal, port: 8333 }",
        "dns: { host: node.internal, port: 8333, resolve: logical }",
    );
    let c = catalog::parse("c.yaml", &text).unwrap();
    let r = translate(&c, &ProxyName("edge".into()), &endpoints());
    assert_eq!(
        cluster_of(&r, "node").cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(
            envoy_types::pb::envoy::config::cluster::v3::cluster::DiscoveryType::LogicalDns as i32
        ))
    );
    let bad = CATALOG.replace(
        "dns: { host: node.internal, port: 8333 }",
        "dns: { host: node.internal, port: 8333, resolve: round }",
    );
    let e = catalog::parse("c.yaml", &bad).unwrap_err().to_string();
    assert!(e.contains("upstreams.node.endpoints.dns.resolve"), "{e}");
}

#[test]
fn not_and_range_header_matches_are_envoy_s_inverted_and_range_matches() {
    use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
    let text = CATALOG.replace(
        "headers: { x-v: \"2\" }",
        "headers: { x-v: { not: \"2\" }, x-n: { range: { start: 1, end: 10 } }, x-p: { not: { absent: true } } }",
    );
    let c = catalog::parse("c.yaml", &text).unwrap();
    let r = translate(&c, &ProxyName("edge".into()), &endpoints());
    let rc = RouteConfiguration::decode(r.of(ResourceType::Route)["web"].value.as_slice()).unwrap();
    let headers = rc.virtual_hosts[0].routes[0]
        .r#match
        .as_ref()
        .unwrap()
        .headers
        .clone();
    let by_name = |n: &str| headers.iter().find(|h| h.name == n).unwrap().clone();
    assert!(by_name("x-v").invert_match);
    let range = by_name("x-n");
    assert!(!range.invert_match);
    assert!(matches!(
        range.header_match_specifier,
        Some(HeaderMatchSpecifier::RangeMatch(ref r)) if r.start == 1 && r.end == 10
    ));
    let present = by_name("x-p");
    assert!(!present.invert_match, "not absent is present");
    assert_eq!(
        present.header_match_specifier,
        Some(HeaderMatchSpecifier::PresentMatch(true))
    );
}

const EGRESS: &str = r#"
version: 1
proxies:
  app:
    listeners:
      - name: egress
        port: 15001
        protocol: http
        original_destination: true
        virtual_hosts:
          - { name: web, domains: ["web.mesh.test:8080"], routes: [ { match: { prefix: / }, to: web } ] }
      - name: egress-tcp
        port: 15002
        protocol: tcp
        original_destination: true
        ports: { 18332: bitcoind, 5432: postgres }
      - { name: plain, port: 8080, protocol: tcp, to: bitcoind }
upstreams:
  web: { protocol: http1, endpoints: { static: ["10.0.3.1:8080"] } }
  bitcoind: { protocol: tcp, endpoints: { static: ["10.0.3.2:18332"] } }
  postgres: { protocol: tcp, endpoints: { static: ["10.0.3.3:5432"] } }
"#;

/// Each filter chain of a listener: its destination port and the cluster its TCP proxy
/// sends to (`None` for an HTTP connection manager).
fn chains(
    l: &envoy_types::pb::envoy::config::listener::v3::Listener,
) -> Vec<(Option<u32>, Option<String>)> {
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
        TcpProxy, tcp_proxy::ClusterSpecifier as Tcp,
    };
    l.filter_chains
        .iter()
        .map(|c| {
            let port = c
                .filter_chain_match
                .as_ref()
                .and_then(|m| m.destination_port.as_ref())
                .map(|p| p.value);
            let Some(ConfigType::TypedConfig(any)) = c.filters[0].config_type.clone() else {
                panic!("{c:?}");
            };
            let cluster = (c.filters[0].name == "envoy.filters.network.tcp_proxy").then(|| {
                match TcpProxy::decode(any.value.as_slice())
                    .unwrap()
                    .cluster_specifier
                {
                    Some(Tcp::Cluster(name)) => name,
                    other => panic!("{other:?}"),
                }
            });
            (port, cluster)
        })
        .collect()
}

const ZONED: &str = r#"
version: 1
proxies:
  web:
    listeners:
      - name: in
        port: 8080
        protocol: http
        routes:
          - { match: { prefix: /a }, to: near }
          - { match: { prefix: / }, to: plain }
upstreams:
  near:
    protocol: http1
    zone_aware: true
    endpoints:
      static:
        - { address: "10.0.1.1:80", zone: us-east-1a }
        - { address: "10.0.2.1:80", zone: us-east-1b }
        - { address: "10.0.1.2:80", zone: us-east-1a }
        - "10.0.9.9:80"
  plain:
    protocol: http1
    endpoints: { static: [ { address: "10.0.1.3:80", zone: us-east-1a }, { address: "10.0.3.1:80", zone: us-east-1c } ] }
"#;

fn zoned() -> (catalog::Catalog, EndpointMap) {
    let c = catalog::parse("c.yaml", ZONED).unwrap();
    let loaded = catalog::LoadedCatalog {
        catalog: c.clone(),
        base_dir: ".".into(),
    };
    (c, crate::discovery::offline_endpoints(&loaded))
}

/// Each locality of an assignment: (zone, priority, addresses).
fn localities(any: &Any) -> Vec<(String, u32, Vec<String>)> {
    use envoy_types::pb::envoy::config::core::v3::{address, socket_address::PortSpecifier};
    use envoy_types::pb::envoy::config::endpoint::v3::{
        ClusterLoadAssignment, lb_endpoint::HostIdentifier,
    };
    let cla = ClusterLoadAssignment::decode(any.value.as_slice()).unwrap();
    cla.endpoints
        .iter()
        .map(|l| {
            let addrs = l
                .lb_endpoints
                .iter()
                .map(|e| {
                    let Some(HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                        panic!("no endpoint");
                    };
                    let Some(address::Address::SocketAddress(sa)) =
                        ep.address.as_ref().and_then(|a| a.address.as_ref())
                    else {
                        panic!("no socket address");
                    };
                    let Some(PortSpecifier::PortValue(port)) = sa.port_specifier else {
                        panic!("no port");
                    };
                    format!("{}:{port}", sa.address)
                })
                .collect();
            let zone = l
                .locality
                .as_ref()
                .map(|l| l.zone.clone())
                .unwrap_or_default();
            (zone, l.priority, addrs)
        })
        .collect()
}

fn egress_listener(
    text: &str,
    name: &str,
) -> envoy_types::pb::envoy::config::listener::v3::Listener {
    let c = catalog::parse("c.yaml", text).unwrap();
    let r = translate(&c, &ProxyName("app".into()), &EndpointMap::new());
    envoy_types::pb::envoy::config::listener::v3::Listener::decode(
        r.of(ResourceType::Listener)[name].value.as_slice(),
    )
    .unwrap()
}

#[test]
fn original_destination_adds_the_filter_and_ports_become_chains_by_destination_port() {
    let http = egress_listener(EGRESS, "egress");
    let filters: Vec<&str> = http
        .listener_filters
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(filters, ["envoy.filters.listener.original_dst"]);
    assert_eq!(chains(&http), [(None, None)]);

    let tcp = egress_listener(EGRESS, "egress-tcp");
    assert_eq!(tcp.listener_filters.len(), 1);
    // No default chain: a connection to another port is closed.
    assert_eq!(
        chains(&tcp),
        [
            (Some(5432), Some("postgres".into())),
            (Some(18332), Some("bitcoind".into()))
        ]
    );
    let with_default = EGRESS.replace(
        "ports: { 18332: bitcoind, 5432: postgres }",
        "ports: { 18332: bitcoind }\n        to: postgres",
    );
    assert_eq!(
        chains(&egress_listener(&with_default, "egress-tcp")),
        [
            (Some(18332), Some("bitcoind".into())),
            (None, Some("postgres".into()))
        ]
    );

    let plain = egress_listener(EGRESS, "plain");
    assert!(plain.listener_filters.is_empty());
    assert_eq!(chains(&plain), [(None, Some("bitcoind".into()))]);
    // The port upstreams are the proxy's clusters.
    let c = catalog::parse("c.yaml", EGRESS).unwrap();
    let r = translate(&c, &ProxyName("app".into()), &EndpointMap::new());
    assert_eq!(
        names(&r, ResourceType::Cluster),
        ["bitcoind", "postgres", "web"]
    );
    // `render` and the debug pages show them (the descriptors know the filter).
    let shown = crate::render::any_json(&r.of(ResourceType::Listener)["egress-tcp"]).unwrap();
    let text = shown.to_string();
    assert!(
        text.contains("envoy.filters.listener.original_dst")
            && text.contains("envoy.extensions.filters.listener.original_dst.v3.OriginalDst")
            && text.contains(r#""destination_port":5432"#),
        "{text}"
    );
}

#[test]
fn an_http_listener_s_ports_are_tcp_chains_beside_its_http_chain() {
    // Only the http listener's `ports` names `db`.
    let mixed = EGRESS.replace(
        "      - name: egress-tcp\n",
        "        ports: { 5432: db }\n        access_log: { format: json }\n      - name: egress-tcp\n",
    ) + "  db: { protocol: tcp, endpoints: { static: [\"10.0.3.4:5432\"] } }\n";
    let c = catalog::parse("c.yaml", &mixed).unwrap();
    let http = egress_listener(&mixed, "egress");
    // Connections to 5432 are TCP to db; every other port is the HTTP chain.
    assert_eq!(
        chains(&http),
        [(Some(5432), Some("db".into())), (None, None)]
    );
    assert_eq!(http.filter_chains[0].name, "port-5432");
    // Its upstream is one of the proxy's clusters.
    let r = translate(&c, &ProxyName("app".into()), &EndpointMap::new());
    assert!(names(&r, ResourceType::Cluster).contains(&"db"));
    assert!(
        c.proxies[&ProxyName("app".into())].listeners[0]
            .ports
            .is_some()
    );
    // The TCP chain keeps its stats under tcp.egress_5432. and logs connections, not requests.
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
    let Some(ConfigType::TypedConfig(tcp)) = http.filter_chains[0].filters[0].config_type.clone()
    else {
        panic!("{:?}", http.filter_chains[0]);
    };
    let text = crate::render::any_json(&tcp).unwrap().to_string();
    assert!(text.contains(r#""stat_prefix":"egress_5432""#), "{text}");
    assert!(
        text.contains("%BYTES_RECEIVED%") && !text.contains("%REQ("),
        "{text}"
    );
}

fn loc(zone: &str, priority: u32, addrs: &[&str]) -> (String, u32, Vec<String>) {
    (
        zone.into(),
        priority,
        addrs.iter().map(|a| a.to_string()).collect(),
    )
}

#[test]
fn endpoints_are_grouped_by_zone_and_zone_aware_ones_prefer_the_callers() {
    let (c, eps) = zoned();
    let web = ProxyName("web".into());
    let a = catalog::Zone::new("us-east-1a");
    let everywhere = vec![
        loc("", 0, &["10.0.9.9:80"]),
        loc("us-east-1a", 0, &["10.0.1.1:80", "10.0.1.2:80"]),
        loc("us-east-1b", 0, &["10.0.2.1:80"]),
    ];
    // An Envoy that names no zone: every locality at priority 0 (what `translate` gives).
    let plain = endpoints_for(&c, &web, &eps, None);
    assert_eq!(localities(&plain["near"]), everywhere);
    assert_eq!(translate(&c, &web, &eps).of(ResourceType::Endpoint), &plain);
    // An Envoy in us-east-1a: its zone first, the others (zoneless ones too) behind it.
    let in_a = endpoints_for(&c, &web, &eps, Some(&a));
    assert_eq!(
        localities(&in_a["near"]),
        vec![
            loc("", 1, &["10.0.9.9:80"]),
            loc("us-east-1a", 0, &["10.0.1.1:80", "10.0.1.2:80"]),
            loc("us-east-1b", 1, &["10.0.2.1:80"]),
        ]
    );
    // An upstream that is not zone-aware gives Envoy no zones (it would keep per-zone
    // statistics for it) and prefers none.
    assert_eq!(
        localities(&in_a["plain"]),
        vec![loc("", 0, &["10.0.1.3:80", "10.0.3.1:80"])]
    );
    // A zone without endpoints of the upstream: everything at priority 0.
    let in_c = endpoints_for(&c, &web, &eps, Some(&catalog::Zone::new("us-east-1c")));
    assert_eq!(localities(&in_c["near"]), everywhere);
    // Only the zones of zone-aware upstreams' endpoints change what an Envoy gets.
    let zones: Vec<String> = preferring_zones(&c, &web, &eps)
        .iter()
        .map(|z| z.to_string())
        .collect();
    assert_eq!(zones, ["us-east-1a", "us-east-1b"]);
}

#[test]
fn passthrough_sends_unnamed_hosts_and_ports_to_an_original_dst_cluster() {
    let text = EGRESS
        .replace(
            "        original_destination: true\n        virtual_hosts:",
            "        original_destination: true\n        passthrough: true\n        virtual_hosts:",
        )
        .replace(
            "        ports: { 18332: bitcoind, 5432: postgres }",
            "        ports: { 18332: bitcoind }\n        passthrough: true",
        );
    // A port no `ports` entry takes: the default chain, to the address dialled.
    assert_eq!(
        chains(&egress_listener(&text, "egress-tcp")),
        [
            (Some(18332), Some("bitcoind".into())),
            (None, Some("PassthroughCluster".into()))
        ]
    );
    let c = catalog::parse("c.yaml", &text).unwrap();
    let r = translate(&c, &ProxyName("app".into()), &EndpointMap::new());
    // A Host no virtual host takes: the last virtual host, `*`, to the address dialled.
    let routes =
        RouteConfiguration::decode(r.of(ResourceType::Route)["egress"].value.as_slice()).unwrap();
    let last = routes.virtual_hosts.last().unwrap();
    assert_eq!(
        (last.name.as_str(), last.domains.clone()),
        ("passthrough", vec!["*".to_string()])
    );
    let Some(Action::Route(RouteAction {
        cluster_specifier: Some(ClusterSpecifier::Cluster(to)),
        timeout,
        ..
    })) = &last.routes[0].action
    else {
        panic!("{last:?}");
    };
    assert_eq!(to, "PassthroughCluster");
    assert_eq!(timeout.as_ref().map(|t| t.seconds), Some(0), "no timeout");
    assert_eq!(routes.virtual_hosts[0].name, "web", "named hosts first");
    let cluster = Cluster::decode(
        r.of(ResourceType::Cluster)["PassthroughCluster"]
            .value
            .as_slice(),
    )
    .unwrap();
    use envoy_types::pb::envoy::config::cluster::v3::cluster::{DiscoveryType, LbPolicy};
    assert_eq!(
        cluster.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32
        ))
    );
    assert_eq!(cluster.lb_policy, LbPolicy::ClusterProvided as i32);
    // A proxy without passthrough has no such cluster.
    let r = translate(
        &catalog::parse("c.yaml", EGRESS).unwrap(),
        &ProxyName("app".into()),
        &EndpointMap::new(),
    );
    assert!(
        !r.of(ResourceType::Cluster)
            .contains_key("PassthroughCluster")
    );
}

#[test]
fn an_allowed_dns_san_is_matched_as_written_even_when_a_proxy_has_its_name() {
    let text = MESH.replace(
        "client_certificate: { trust: mesh, allow: [web, \"spiffe://other.example/x\"] }",
        "client_certificate: { trust: { file: ca.pem }, allow: [\"dns:web\", front.example] }",
    );
    let c = catalog::parse("c.yaml", &text).unwrap();
    let r = translate(&c, &ProxyName("api".into()), &EndpointMap::new());
    let l = envoy_types::pb::envoy::config::listener::v3::Listener::decode(
        r.of(ResourceType::Listener)["inbound"].value.as_slice(),
    )
    .unwrap();
    let text = format!("{:?}", l.filter_chains[0].filters[0]);
    let rbac = match l.filter_chains[0].filters[0].config_type.clone().unwrap() {
        envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(a) => {
            envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac::decode(
                a.value.as_slice(),
            )
            .unwrap()
        }
        other => panic!("{other:?} {text}"),
    };
    // A DNS SAN, not the proxy's identity, and never the subject or a URI SAN of that name.
    assert_eq!(
        allowed_sans(&rbac),
        [
            ("DNS", "web".to_string()),
            ("DNS", "front.example".to_string())
        ]
    );
}

/// The SANs (type, exact value) an RBAC filter's `allow` policy lets in, in order; every
/// principal must be one `mtls_authenticated` SAN matcher.
fn allowed_sans(
    rbac: &envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac,
) -> Vec<(&'static str, String)> {
    use envoy_types::pb::envoy::config::rbac::v3::principal::Identifier;
    use envoy_types::pb::envoy::extensions::rbac::principals::mtls_authenticated::v3::Config;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::subject_alt_name_matcher::SanType;
    use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
    let rules = rbac.rules.as_ref().expect("rules");
    rules.policies["allow"]
        .principals
        .iter()
        .map(|p| {
            let Some(Identifier::Custom(custom)) = &p.identifier else {
                panic!("not an mtls_authenticated principal: {p:?}");
            };
            assert_eq!(custom.name, "envoy.rbac.principals.mtls_authenticated");
            let any = custom.typed_config.as_ref().unwrap();
            assert!(
                any.type_url.ends_with("mtls_authenticated.v3.Config"),
                "{any:?}"
            );
            let config = Config::decode(any.value.as_slice()).unwrap();
            assert!(!config.any_validated_client_certificate);
            let m = config.san_matcher.unwrap();
            let kind = match SanType::try_from(m.san_type).unwrap() {
                SanType::Dns => "DNS",
                SanType::Uri => "URI",
                other => panic!("{other:?}"),
            };
            let Some(MatchPattern::Exact(value)) = m.matcher.unwrap().match_pattern else {
                panic!("not an exact match");
            };
            (kind, value)
        })
        .collect()
}
