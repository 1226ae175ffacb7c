use aws_sdk_appmesh::primitives::DateTime;
use aws_sdk_appmesh::types::{
    AwsCloudMapServiceDiscovery, Backend, DurationUnit, HeaderMatchMethod, HttpRetryPolicy,
    HttpRoute, HttpRouteAction, HttpRouteHeader, HttpRouteMatch, Listener, MeshData, MeshSpec,
    MeshStatus, PortMapping, PortProtocol, ResourceMetadata, RouteData, RouteSpec, RouteStatus,
    RouteStatusCode, ServiceDiscovery, TcpRetryPolicyEvent, VirtualNodeData, VirtualNodeSpec,
    VirtualNodeStatus, VirtualNodeStatusCode, VirtualRouterData, VirtualRouterListener,
    VirtualRouterServiceProvider, VirtualRouterSpec, VirtualRouterStatus, VirtualRouterStatusCode,
    VirtualServiceBackend, VirtualServiceData, VirtualServiceProvider, VirtualServiceSpec,
    VirtualServiceStatus, VirtualServiceStatusCode, WeightedTarget,
};

use super::*;
use crate::appmesh::Mesh;
use crate::appmesh::report::Outcome;

const ARN: &str = "arn:aws:appmesh:us-east-1:111122223333:mesh/color";

fn metadata(path: &str) -> ResourceMetadata {
    ResourceMetadata::builder()
        .arn(format!("{ARN}{path}"))
        .version(1)
        .uid("u")
        .created_at(DateTime::from_secs(0))
        .last_updated_at(DateTime::from_secs(0))
        .mesh_owner("111122223333")
        .resource_owner("111122223333")
        .build()
        .unwrap()
}

fn node(name: &str, backends: &[&str]) -> VirtualNodeData {
    let mut spec = VirtualNodeSpec::builder()
        .listeners(
            Listener::builder()
                .port_mapping(
                    PortMapping::builder()
                        .port(8080)
                        .protocol(PortProtocol::Http)
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .service_discovery(ServiceDiscovery::AwsCloudMap(
            AwsCloudMapServiceDiscovery::builder()
                .namespace_name("color.local")
                .service_name(name)
                .build()
                .unwrap(),
        ));
    for b in backends {
        spec = spec.backends(Backend::VirtualService(
            VirtualServiceBackend::builder()
                .virtual_service_name(*b)
                .build()
                .unwrap(),
        ));
    }
    VirtualNodeData::builder()
        .mesh_name("color")
        .virtual_node_name(name)
        .spec(spec.build())
        .metadata(metadata(&format!("/virtualNode/{name}")))
        .status(
            VirtualNodeStatus::builder()
                .status(VirtualNodeStatusCode::Active)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

fn target(node: &str, weight: i32) -> WeightedTarget {
    WeightedTarget::builder()
        .virtual_node(node)
        .weight(weight)
        .build()
        .unwrap()
}

fn route(
    name: &str,
    priority: Option<i32>,
    m: HttpRouteMatch,
    targets: Vec<WeightedTarget>,
) -> RouteData {
    let action = HttpRouteAction::builder()
        .set_weighted_targets(Some(targets))
        .build()
        .unwrap();
    let mut http = HttpRoute::builder().r#match(m).action(action);
    if name == "retrying" {
        http = http.retry_policy(
            HttpRetryPolicy::builder()
                .max_retries(3)
                .per_retry_timeout(
                    aws_sdk_appmesh::types::Duration::builder()
                        .unit(DurationUnit::Ms)
                        .value(500)
                        .build(),
                )
                .http_retry_events("server-error")
                .tcp_retry_events(TcpRetryPolicyEvent::ConnectionError)
                .build()
                .unwrap(),
        );
    }
    RouteData::builder()
        .mesh_name("color")
        .virtual_router_name("colors")
        .route_name(name)
        .spec(
            RouteSpec::builder()
                .set_priority(priority)
                .http_route(http.build())
                .build(),
        )
        .metadata(metadata(&format!("/virtualRouter/colors/route/{name}")))
        .status(
            RouteStatus::builder()
                .status(RouteStatusCode::Active)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

fn header(name: &str, m: HeaderMatchMethod, invert: bool) -> HttpRouteHeader {
    HttpRouteHeader::builder()
        .name(name)
        .r#match(m)
        .invert(invert)
        .build()
        .unwrap()
}

/// The color mesh in small: a front node calling `colors.color.local`, whose router splits
/// between red, blue (and green at weight 0), with header and priority routes.
fn mesh() -> Mesh {
    let router = VirtualRouterData::builder()
        .mesh_name("color")
        .virtual_router_name("colors")
        .spec(
            VirtualRouterSpec::builder()
                .listeners(
                    VirtualRouterListener::builder()
                        .port_mapping(
                            PortMapping::builder()
                                .port(8080)
                                .protocol(PortProtocol::Http)
                                .build()
                                .unwrap(),
                        )
                        .build(),
                )
                .build(),
        )
        .metadata(metadata("/virtualRouter/colors"))
        .status(
            VirtualRouterStatus::builder()
                .status(VirtualRouterStatusCode::Active)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let routes = vec![
        route(
            "default",
            None,
            HttpRouteMatch::builder().prefix("/").build(),
            vec![target("red", 1), target("blue", 1), target("green", 0)],
        ),
        route(
            "retrying",
            Some(20),
            HttpRouteMatch::builder().prefix("/flaky").build(),
            vec![target("red", 1)],
        ),
        route(
            "canary",
            Some(10),
            HttpRouteMatch::builder()
                .prefix("/")
                .headers(header(
                    "X-Color",
                    HeaderMatchMethod::Exact("blue".into()),
                    false,
                ))
                .build(),
            vec![target("blue", 1)],
        ),
        route(
            "not-red",
            Some(5),
            HttpRouteMatch::builder()
                .prefix("/")
                .headers(header(
                    "x-color",
                    HeaderMatchMethod::Exact("red".into()),
                    true,
                ))
                .build(),
            vec![target("blue", 1)],
        ),
    ];
    let service = VirtualServiceData::builder()
        .mesh_name("color")
        .virtual_service_name("colors.color.local")
        .spec(
            VirtualServiceSpec::builder()
                .provider(VirtualServiceProvider::VirtualRouter(
                    VirtualRouterServiceProvider::builder()
                        .virtual_router_name("colors")
                        .build()
                        .unwrap(),
                ))
                .build(),
        )
        .metadata(metadata("/virtualService/colors.color.local"))
        .status(
            VirtualServiceStatus::builder()
                .status(VirtualServiceStatusCode::Active)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    Mesh {
        data: MeshData::builder()
            .mesh_name("color")
            .spec(MeshSpec::builder().build())
            .metadata(metadata(""))
            .status(MeshStatus::builder().build())
            .build()
            .unwrap(),
        nodes: vec![
            node("front", &["colors.color.local"]),
            node("red", &[]),
            node("blue", &[]),
            node("green", &[]),
        ],
        services: vec![service],
        routers: vec![(router, routes)],
        gateways: vec![],
        skipped: Vec::new(),
    }
}

#[test]
fn retry_events_become_envoy_conditions() {
    assert_eq!(
        retry_on(
            [
                "server-error",
                "gateway-error",
                "client-error",
                "stream-error"
            ],
            ["connection-error"],
            ["unavailable", "cancelled"],
        )
        .unwrap(),
        [
            "5xx",
            "reset",
            "gateway-error",
            "retriable-4xx",
            "refused-stream",
            "connect-failure",
            "unavailable",
            "cancelled"
        ]
    );
    assert_eq!(
        retry_on(["teapot"], [], []).unwrap_err(),
        r#"unknown HTTP retry event "teapot""#
    );
}

#[test]
fn durations_and_names_as_the_catalog_writes_them() {
    let d = |unit, value| {
        aws_sdk_appmesh::types::Duration::builder()
            .unit(unit)
            .value(value)
            .build()
    };
    assert_eq!(
        duration(&d(DurationUnit::Ms, 250)).as_deref(),
        Some("250ms")
    );
    assert_eq!(duration(&d(DurationUnit::S, 15)).as_deref(), Some("15s"));
    assert_eq!(catalog_name("colors.color.local"), "colors.color.local");
    assert_eq!(catalog_name("a b/c"), "a-b-c");
}

#[test]
fn a_router_s_routes_become_a_virtual_host_by_priority() {
    let mapped = map(&mesh(), &Options::default()).unwrap();
    let front = &mapped.fragments["front.yaml"];
    let proxy = &front["proxies"]["front"];
    assert_eq!(
        proxy["aliases"],
        json!([
            format!("{ARN}/virtualNode/front"),
            "mesh/color/virtualNode/front"
        ])
    );
    let ingress = &proxy["listeners"][0];
    assert_eq!(ingress["port"], json!(15000));
    assert_eq!(ingress["original_destination"], json!(true));
    assert_eq!(ingress["routes"][0]["to"], json!("front-local"));
    assert_eq!(
        front["upstreams"]["front-local"]["endpoints"],
        json!({ "static": ["127.0.0.1:8080"] })
    );
    assert_eq!(
        front["upstreams"]["front"]["endpoints"],
        json!({ "cloud_map": { "namespace": "color.local", "service": "front" } })
    );
    // App Mesh's circuit breakers, not Envoy's 1024.
    for u in ["front", "front-local"] {
        for limit in ["max_requests", "max_pending_requests", "max_connections"] {
            assert_eq!(
                front["upstreams"][u][limit],
                json!(2_147_483_647),
                "{u} {limit}"
            );
        }
    }
    let egress = &proxy["listeners"][1];
    assert_eq!(egress["port"], json!(15001));
    assert_eq!(egress["original_destination"], json!(true));
    let host = &egress["virtual_hosts"][0];
    assert_eq!(
        host["domains"],
        json!(["colors.color.local", "colors.color.local:8080"])
    );
    // By priority: 5, 10, 20, then the route without one.
    let routes = host["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 4, "{routes:?}");
    assert_eq!(
        routes[0]["match"]["headers"],
        json!({ "x-color": { "not": "red" } }),
        "invert"
    );
    assert_eq!(routes[1]["match"]["headers"], json!({ "x-color": "blue" }));
    assert_eq!(routes[1]["to"], json!("blue"));
    assert_eq!(routes[2]["match"]["prefix"], json!("/flaky"));
    assert_eq!(
        routes[2]["retries"],
        json!({ "attempts": 3, "on": ["5xx", "reset", "connect-failure"], "per_try_timeout": "500ms" })
    );
    assert_eq!(
        routes[3]["split"],
        json!({ "red": 1, "blue": 1, "green": 0 })
    );
    assert_eq!(
        routes[3]["timeout"],
        json!("15s"),
        "App Mesh's default timeout"
    );
    assert!(
        routes[3].get("retries").is_none(),
        "no default retries asked for"
    );
    let invert = mapped
        .report
        .resources
        .iter()
        .find(|r| r.name == "colors/not-red")
        .unwrap();
    assert!(
        invert
            .fields
            .iter()
            .any(|f| f.field == "spec.httpRoute.match.headers[0]"
                && matches!(&f.outcome, Outcome::Mapped(_))),
        "{invert:?}"
    );
    // The fragments are a catalog the loader takes.
    let rendered = crate::appmesh::render(&mapped, std::path::Path::new("import")).unwrap();
    assert_eq!(rendered.fragments.len(), 4);
}

#[test]
fn the_default_retry_policy_goes_to_routes_without_one() {
    let options = Options {
        default_retries: true,
        ..Default::default()
    };
    let mapped = map(&mesh(), &options).unwrap();
    let routes = &mapped.fragments["front.yaml"]["proxies"]["front"]["listeners"][1]["virtual_hosts"]
        [0]["routes"];
    assert_eq!(routes[0]["retries"]["attempts"], json!(2));
    assert_eq!(
        routes[2]["retries"]["attempts"],
        json!(3),
        "its own policy stays"
    );
    crate::appmesh::render(&mapped, std::path::Path::new("import")).unwrap();
}

#[test]
fn routes_of_one_priority_go_most_specific_first() {
    let path = |exact: Option<&str>, regex: Option<&str>| {
        aws_sdk_appmesh::types::HttpPathMatch::builder()
            .set_exact(exact.map(String::from))
            .set_regex(regex.map(String::from))
            .build()
    };
    let mut m = mesh();
    let red = || vec![target("red", 1)];
    m.routers[0].1 = vec![
        // Named so that by name they would come in the opposite order.
        route(
            "a-regex",
            None,
            HttpRouteMatch::builder()
                .path(path(None, Some("/v[0-9]/.*")))
                .build(),
            red(),
        ),
        route(
            "b-root",
            None,
            HttpRouteMatch::builder().prefix("/").build(),
            red(),
        ),
        route(
            "c-api",
            None,
            HttpRouteMatch::builder().prefix("/api").build(),
            red(),
        ),
        route(
            "d-exact",
            None,
            HttpRouteMatch::builder()
                .path(path(Some("/api/health"), None))
                .build(),
            red(),
        ),
        route(
            "e-first",
            Some(1),
            HttpRouteMatch::builder().prefix("/").build(),
            red(),
        ),
    ];
    let mapped = map(&m, &Options::default()).unwrap();
    let routes = &mapped.fragments["front.yaml"]["proxies"]["front"]["listeners"][1]["virtual_hosts"]
        [0]["routes"];
    let matches: Vec<&Value> = routes
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["match"])
        .collect();
    assert_eq!(
        matches,
        [
            &json!({ "prefix": "/" }),
            &json!({ "path": "/api/health" }),
            &json!({ "prefix": "/api" }),
            &json!({ "prefix": "/" }),
            &json!({ "regex": "/v[0-9]/.*" }),
        ],
        "priority first, then exact, longest prefix, regex"
    );
}

#[test]
fn a_header_named_twice_leaves_the_route_out_instead_of_widening_it() {
    let mut m = mesh();
    m.routers[0].1.push(route(
        "twice",
        Some(1),
        HttpRouteMatch::builder()
            .prefix("/")
            .headers(header(
                "x-color",
                HeaderMatchMethod::Exact("blue".into()),
                false,
            ))
            .headers(header(
                "X-Color",
                HeaderMatchMethod::Exact("red".into()),
                false,
            ))
            .build(),
        vec![target("green", 1)],
    ));
    let mapped = map(&m, &Options::default()).unwrap();
    let routes = &mapped.fragments["front.yaml"]["proxies"]["front"]["listeners"][1]["virtual_hosts"]
        [0]["routes"];
    assert!(
        routes
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["to"] != json!("green")),
        "{routes}"
    );
    let twice = mapped
        .report
        .resources
        .iter()
        .find(|r| r.name == "colors/twice")
        .unwrap();
    assert!(
        twice
            .fields
            .iter()
            .any(|f| f.field == "spec.httpRoute.match.headers[1]"
                && matches!(&f.outcome, Outcome::NotMapped(why) if why.contains("\"x-color\""))),
        "{twice:?}"
    );
    crate::appmesh::render(&mapped, std::path::Path::new("import")).unwrap();
}

#[test]
fn a_grpc_gateway_route_matches_its_hostname_and_metadata_in_lower_case() {
    use aws_sdk_appmesh::types::{
        GatewayRouteHostnameMatch, GatewayRouteSpec, GatewayRouteStatus, GatewayRouteStatusCode,
        GatewayRouteTarget, GatewayRouteVirtualService, GrpcGatewayRoute, GrpcGatewayRouteAction,
        GrpcGatewayRouteMatch, GrpcGatewayRouteMetadata, GrpcMetadataMatchMethod,
        VirtualGatewayListener, VirtualGatewayPortMapping, VirtualGatewayPortProtocol,
        VirtualGatewaySpec, VirtualGatewayStatus, VirtualGatewayStatusCode,
    };
    let gateway = VirtualGatewayData::builder()
        .mesh_name("color")
        .virtual_gateway_name("gw")
        .spec(
            VirtualGatewaySpec::builder()
                .listeners(
                    VirtualGatewayListener::builder()
                        .port_mapping(
                            VirtualGatewayPortMapping::builder()
                                .port(9080)
                                .protocol(VirtualGatewayPortProtocol::Grpc)
                                .build()
                                .unwrap(),
                        )
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .metadata(metadata("/virtualGateway/gw"))
        .status(
            VirtualGatewayStatus::builder()
                .status(VirtualGatewayStatusCode::Active)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let grpc = GrpcGatewayRoute::builder()
        .r#match(
            GrpcGatewayRouteMatch::builder()
                .service_name("color.Teller")
                .hostname(
                    GatewayRouteHostnameMatch::builder()
                        .exact("api.example.com")
                        .build(),
                )
                .port(9080)
                .metadata(
                    GrpcGatewayRouteMetadata::builder()
                        .name("X-Tenant")
                        .r#match(GrpcMetadataMatchMethod::Exact("ann".into()))
                        .build()
                        .unwrap(),
                )
                .build(),
        )
        .action(
            GrpcGatewayRouteAction::builder()
                .target(
                    GatewayRouteTarget::builder()
                        .virtual_service(
                            GatewayRouteVirtualService::builder()
                                .virtual_service_name("colors.color.local")
                                .build()
                                .unwrap(),
                        )
                        .port(8080)
                        .build(),
                )
                .build(),
        )
        .build();
    let route = GatewayRouteData::builder()
        .mesh_name("color")
        .gateway_route_name("teller")
        .virtual_gateway_name("gw")
        .spec(GatewayRouteSpec::builder().grpc_route(grpc).build())
        .metadata(metadata("/virtualGateway/gw/gatewayRoute/teller"))
        .status(
            GatewayRouteStatus::builder()
                .status(GatewayRouteStatusCode::Active)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let mut m = mesh();
    m.gateways.push((gateway, vec![route]));
    let mapped = map(&m, &Options::default()).unwrap();
    let routes = &mapped.fragments["gw.yaml"]["proxies"]["gw"]["listeners"][0]["routes"];
    assert_eq!(
        routes[0]["match"]["headers"],
        json!({ ":authority": "api.example.com", "x-tenant": "ann" }),
        "{routes}"
    );
    let teller = |mapped: &crate::appmesh::map::Mapped| {
        mapped
            .report
            .resources
            .iter()
            .find(|r| r.name == "gw/teller")
            .cloned()
            .unwrap()
    };
    let first = teller(&mapped);
    assert!(
        first
            .fields
            .iter()
            .any(|f| f.field == "spec.grpcRoute.match.port"
                && matches!(&f.outcome, Outcome::Lossy(_))),
        "{first:?}"
    );
    // `action.target.port`: the Host names the port, which picks the service's virtual host
    // of that port.
    assert_eq!(routes[0]["rewrite"]["host"], "colors.color.local:8080");
    let outcome = |r: &crate::appmesh::report::Resource| {
        r.fields
            .iter()
            .find(|f| f.field == "spec.grpcRoute.action.target.port")
            .map(|f| f.outcome.clone())
    };
    assert!(
        matches!(outcome(&first), Some(Outcome::Mapped(_))),
        "{first:?}"
    );
    // The catalog takes it (it refuses upper case header names).
    crate::appmesh::render(&mapped, std::path::Path::new("import")).unwrap();

    // A port the service has no listener on: the name alone, reported as a loss.
    let gr = &mut m.gateways[0].1[0];
    let spec = gr.spec.as_mut().unwrap().grpc_route.as_mut().unwrap();
    spec.action.as_mut().unwrap().target.as_mut().unwrap().port = Some(9999);
    let mapped = map(&m, &Options::default()).unwrap();
    let routes = &mapped.fragments["gw.yaml"]["proxies"]["gw"]["listeners"][0]["routes"];
    assert_eq!(routes[0]["rewrite"]["host"], "colors.color.local");
    let second = teller(&mapped);
    assert!(
        matches!(outcome(&second), Some(Outcome::Lossy(why)) if why.contains("no listener on 9999")),
        "{second:?}"
    );
}

#[test]
fn what_the_catalog_would_refuse_is_reported_per_route_and_the_rest_imports() {
    use aws_sdk_appmesh::types::{MatchRange, VirtualNodeServiceProvider};
    let mut m = mesh();
    // A tcp node as the provider of a service the front node calls.
    let mut echo = node("echo", &[]);
    echo.spec.as_mut().unwrap().listeners.as_mut().unwrap()[0]
        .port_mapping
        .as_mut()
        .unwrap()
        .protocol = PortProtocol::Tcp;
    m.nodes.push(echo);
    let mut service = m.services[0].clone();
    service.virtual_service_name = "echo.color.local".into();
    service.spec = Some(
        VirtualServiceSpec::builder()
            .provider(VirtualServiceProvider::VirtualNode(
                VirtualNodeServiceProvider::builder()
                    .virtual_node_name("echo")
                    .build()
                    .unwrap(),
            ))
            .build(),
    );
    m.services.push(service);
    m.nodes[0] = node("front", &["colors.color.local", "echo.color.local"]);
    // More retries than the catalog takes; a bad regex; an empty range.
    let mut retrying = m.routers[0]
        .1
        .iter()
        .find(|r| r.route_name == "retrying")
        .unwrap()
        .clone();
    retrying
        .spec
        .as_mut()
        .unwrap()
        .http_route
        .as_mut()
        .unwrap()
        .retry_policy
        .as_mut()
        .unwrap()
        .max_retries = 150;
    m.routers[0].1.retain(|r| r.route_name != "retrying");
    m.routers[0].1.push(retrying);
    let header_route = |name: &str, how: HeaderMatchMethod| {
        route(
            name,
            Some(2),
            HttpRouteMatch::builder()
                .prefix("/")
                .headers(header("x-n", how, false))
                .build(),
            vec![target("green", 1)],
        )
    };
    m.routers[0].1.push(header_route(
        "bad-regex",
        HeaderMatchMethod::Regex("(".into()),
    ));
    m.routers[0].1.push(header_route(
        "empty-range",
        HeaderMatchMethod::Range(MatchRange::builder().start(10).end(5).build().unwrap()),
    ));

    let mapped = map(&m, &Options::default()).unwrap();
    // The whole import stands: the catalog takes every fragment.
    crate::appmesh::render(&mapped, std::path::Path::new("import")).unwrap();
    let outcome = |resource: &str, field: &str| outcome(&mapped, resource, field);
    assert!(
        matches!(outcome("front", "spec.backends[1].virtualService"), Outcome::NotMapped(w) if w.contains("port 8080 is also HTTP virtual service colors.color.local's")),
    );
    assert!(
        matches!(outcome("colors/bad-regex", "spec.httpRoute.match.headers[0]"), Outcome::NotMapped(w) if w.contains("invalid")),
    );
    assert!(
        matches!(outcome("colors/empty-range", "spec.httpRoute.match.headers[0]"), Outcome::NotMapped(w) if w.contains("empty")),
    );
    assert!(matches!(
        outcome("colors/retrying", "spec.httpRoute.retryPolicy.maxRetries"),
        Outcome::Lossy(_)
    ));
    let routes = &mapped.fragments["front.yaml"]["proxies"]["front"]["listeners"][1]["virtual_hosts"]
        [0]["routes"];
    let flaky = routes
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["match"]["prefix"] == json!("/flaky"))
        .unwrap();
    assert_eq!(flaky["retries"]["attempts"], json!(100));
}

#[test]
fn two_resources_that_become_one_catalog_name_are_an_error_naming_both() {
    let mut m = mesh();
    m.nodes.push(node("x y", &[]));
    m.nodes.push(node("x-y", &[]));
    let Err(err) = map(&m, &Options::default()) else {
        panic!("no collision found")
    };
    assert_eq!(
        err.to_string(),
        r#"virtual node "x y" and virtual node "x-y" both become proxy "x-y" in the catalog: rename one of them in App Mesh"#
    );
}

#[test]
fn a_node_and_a_gateway_of_one_name_are_an_error_naming_both() {
    let mut m = mesh();
    let gateway = VirtualGatewayData::builder()
        .mesh_name("color")
        .virtual_gateway_name("red")
        .metadata(metadata("/virtualGateway/red"))
        .build()
        .unwrap();
    m.gateways.push((gateway, vec![]));
    let Err(err) = map(&m, &Options::default()) else {
        panic!("no collision found")
    };
    assert_eq!(
        err.to_string(),
        r#"virtual node "red" and virtual gateway "red" both become proxy "red" in the catalog: rename one of them in App Mesh"#
    );
}

#[test]
fn a_new_import_removes_what_the_mesh_lost_keeps_other_files_and_writes_over_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = mesh();
    m.nodes.push(node("gone", &[]));
    crate::appmesh::write(&map(&m, &Options::default()).unwrap(), dir.path()).unwrap();
    assert!(dir.path().join("gone.yaml").exists());
    // A fragment of someone else's beside the import's.
    let mine = "version: 1\nproxies:\n  mine: {}\n";
    std::fs::write(dir.path().join("mine.yaml"), mine).unwrap();

    // Node gone is deleted from the mesh: its fragment goes, the other file stays.
    let mapped = map(&mesh(), &Options::default()).unwrap();
    crate::appmesh::write(&mapped, dir.path()).unwrap();
    assert!(!dir.path().join("gone.yaml").exists());
    assert!(dir.path().join("front.yaml").exists());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("mine.yaml")).unwrap(),
        mine
    );

    // The directory is checked as it will be: a file that clashes with the import refuses it.
    std::fs::write(
        dir.path().join("mine.yaml"),
        "version: 1\nproxies:\n  front: {}\n",
    )
    .unwrap();
    let err = crate::appmesh::write(&mapped, dir.path()).unwrap_err();
    assert!(matches!(err, ImportError::Invalid(_)), "{err}");
    std::fs::write(dir.path().join("mine.yaml"), mine).unwrap();

    // A file of the import's name that no import wrote is not written over.
    std::fs::write(dir.path().join("red.yaml"), mine.replace("mine", "red")).unwrap();
    let err = crate::appmesh::write(&mapped, dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .contains("red.yaml exists and was not written by an import"),
        "{err}"
    );
    assert!(
        std::fs::read_to_string(dir.path().join("red.yaml"))
            .unwrap()
            .contains("red: {}")
    );
}

#[test]
fn fields_the_import_drops_are_reported() {
    use aws_sdk_appmesh::types::{
        IpPreference, VirtualGatewayBackendDefaults, VirtualGatewayConnectionPool,
        VirtualGatewayHttpConnectionPool, VirtualGatewayListener, VirtualGatewayPortMapping,
        VirtualGatewayPortProtocol, VirtualGatewaySpec,
    };
    let listener = VirtualGatewayListener::builder()
        .port_mapping(
            VirtualGatewayPortMapping::builder()
                .port(9080)
                .protocol(VirtualGatewayPortProtocol::Http)
                .build()
                .unwrap(),
        )
        .connection_pool(VirtualGatewayConnectionPool::Http(
            VirtualGatewayHttpConnectionPool::builder()
                .max_connections(10)
                .build()
                .unwrap(),
        ))
        .build();
    let gateway = VirtualGatewayData::builder()
        .mesh_name("color")
        .virtual_gateway_name("gw")
        .spec(
            VirtualGatewaySpec::builder()
                .listeners(listener.clone())
                .listeners(listener)
                .backend_defaults(VirtualGatewayBackendDefaults::builder().build())
                .build()
                .unwrap(),
        )
        .metadata(metadata("/virtualGateway/gw"))
        .build()
        .unwrap();
    let mut m = mesh();
    m.gateways.push((gateway, vec![]));
    if let Some(ServiceDiscovery::AwsCloudMap(c)) = m.nodes[1]
        .spec
        .as_mut()
        .and_then(|s| s.service_discovery.as_mut())
    {
        c.ip_preference = Some(IpPreference::IPv6Preferred);
    }
    let mapped = map(&m, &Options::default()).unwrap();
    let field = |resource: &str, field: &str| {
        mapped
            .report
            .resources
            .iter()
            .filter(|r| r.name == resource)
            .flat_map(|r| &r.fields)
            .find(|f| f.field == field)
            .map(|f| f.outcome.clone())
    };
    for f in ["spec.listeners[0].connectionPool", "spec.listeners[1]"] {
        assert!(
            matches!(field("gw", f), Some(Outcome::NotMapped(_))),
            "{f}: {:?}",
            field("gw", f)
        );
    }
    assert!(matches!(
        field("red", "spec.serviceDiscovery.awsCloudMap.ipPreference"),
        Some(Outcome::Lossy(_))
    ));
}

#[test]
fn a_service_answers_on_every_port_of_its_router() {
    let mut m = mesh();
    let second = VirtualRouterListener::builder()
        .port_mapping(
            PortMapping::builder()
                .port(9090)
                .protocol(PortProtocol::Http)
                .build()
                .unwrap(),
        )
        .build();
    for (router, _) in m.routers.iter_mut() {
        let mut listeners = router.spec().unwrap().listeners().to_vec();
        listeners.push(second.clone());
        router.spec = Some(
            VirtualRouterSpec::builder()
                .set_listeners(Some(listeners))
                .build(),
        );
    }
    let mapped = map(&m, &Options::default()).unwrap();
    let host =
        &mapped.fragments["front.yaml"]["proxies"]["front"]["listeners"][1]["virtual_hosts"][0];
    assert_eq!(
        host["domains"],
        json!([
            "colors.color.local",
            "colors.color.local:8080",
            "colors.color.local:9090"
        ])
    );
}

#[test]
fn listener_tls_and_client_policies_become_the_listeners_and_upstreams_tls() {
    use aws_sdk_appmesh::types::{
        BackendDefaults, ClientPolicy, ClientPolicyTls, ListenerTls, ListenerTlsAcmCertificate,
        ListenerTlsCertificate, ListenerTlsMode, TlsValidationContext,
        TlsValidationContextAcmTrust, TlsValidationContextTrust,
    };
    const CERT: &str = "arn:aws:acm:us-east-1:111122223333:certificate/red";
    const CA: &str = "arn:aws:acm-pca:us-east-1:111122223333:certificate-authority/ca";
    let mut m = mesh();
    // red: a STRICT listener with an ACM certificate.
    let red = m.nodes[1].spec.as_mut().unwrap();
    red.listeners.as_mut().unwrap()[0].tls = Some(
        ListenerTls::builder()
            .mode(ListenerTlsMode::Strict)
            .certificate(ListenerTlsCertificate::Acm(
                ListenerTlsAcmCertificate::builder()
                    .certificate_arn(CERT)
                    .build()
                    .unwrap(),
            ))
            .build()
            .unwrap(),
    );
    // front: every backend over TLS, checked against the Private CA, on port 8080 only.
    let policy = ClientPolicy::builder()
        .tls(
            ClientPolicyTls::builder()
                .ports(8080)
                .validation(
                    TlsValidationContext::builder()
                        .trust(TlsValidationContextTrust::Acm(
                            TlsValidationContextAcmTrust::builder()
                                .certificate_authority_arns(CA)
                                .build()
                                .unwrap(),
                        ))
                        .build(),
                )
                .build(),
        )
        .build();
    m.nodes[0].spec.as_mut().unwrap().backend_defaults =
        Some(BackendDefaults::builder().client_policy(policy).build());
    let mapped = map(&m, &Options::default()).unwrap();
    assert_eq!(
        mapped.fragments["red.yaml"]["proxies"]["red"]["listeners"][0]["tls"],
        json!({ "mode": "strict", "certificate": { "acm": { "arn": CERT } } })
    );
    // The backend node that serves TLS gets it on its upstream, with App Mesh's default SAN:
    // its discovery name.
    assert_eq!(
        mapped.fragments["red.yaml"]["upstreams"]["red"]["tls"],
        json!({ "trust": { "acm_pca": [CA] }, "subject_alt_names": ["red.color.local"] }),
    );
    // Those that serve plaintext are reached in plaintext, never with TLS they do not speak.
    for color in ["blue", "green"] {
        assert!(
            mapped.fragments[&format!("{color}.yaml")]["upstreams"][color]
                .get("tls")
                .is_none(),
            "{color}"
        );
    }
    let front = mapped
        .report
        .resources
        .iter()
        .find(|r| r.name == "front")
        .unwrap();
    assert!(
        front
            .fields
            .iter()
            .any(|f| f.field == "spec.backendDefaults.clientPolicy.tls"
                && f.outcome
                    == Outcome::Mapped("tls of upstream red (service colors.color.local)".into())),
        "{front:?}"
    );
    // The fragments are a catalog the loader takes.
    crate::appmesh::render(&mapped, std::path::Path::new("import")).unwrap();
}

/// The mesh's egress filter set to ALLOW_ALL.
fn allow_all(m: &mut Mesh) {
    use aws_sdk_appmesh::types::{EgressFilter, EgressFilterType};
    m.data.spec = Some(
        MeshSpec::builder()
            .egress_filter(
                EgressFilter::builder()
                    .r#type(EgressFilterType::AllowAll)
                    .build()
                    .unwrap(),
            )
            .build(),
    );
}

#[test]
fn an_allow_all_mesh_passes_what_no_backend_names_on_to_its_destination() {
    let mut m = mesh();
    allow_all(&mut m);
    let mapped = map(&m, &Options::default()).unwrap();
    let front = &mapped.fragments["front.yaml"]["proxies"]["front"]["listeners"][1];
    assert_eq!(front["protocol"], json!("http"));
    assert_eq!(front["passthrough"], json!(true));
    // A node without backends: a tcp egress listener that passes everything on.
    let red = &mapped.fragments["red.yaml"]["proxies"]["red"]["listeners"][1];
    assert_eq!(
        (
            &red["protocol"],
            &red["passthrough"],
            &red["original_destination"]
        ),
        (&json!("tcp"), &json!(true), &json!(true))
    );
    let mesh_report = &mapped.report.resources[0];
    assert!(matches!(
        &mesh_report.fields[0].outcome,
        Outcome::Lossy(why) if why.starts_with("ALLOW_ALL: `passthrough: true`")
    ));
    crate::appmesh::render(&mapped, std::path::Path::new("import")).unwrap();
    // DROP_ALL (the default): no passthrough, no egress listener without backends.
    let mapped = map(&mesh(), &Options::default()).unwrap();
    assert!(
        mapped.fragments["front.yaml"]["proxies"]["front"]["listeners"][1]
            .get("passthrough")
            .is_none()
    );
    assert_eq!(
        mapped.fragments["red.yaml"]["proxies"]["red"]["listeners"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

fn listener(port: i32, protocol: PortProtocol) -> Listener {
    Listener::builder()
        .port_mapping(
            PortMapping::builder()
                .port(port)
                .protocol(protocol)
                .build()
                .unwrap(),
        )
        .build()
}

#[test]
fn every_listener_of_a_node_is_mapped_and_targets_reach_the_port_they_name() {
    let mut m = mesh();
    // blue serves HTTP on 8080 and gRPC on 9090.
    m.nodes[2].spec.as_mut().unwrap().listeners = Some(vec![
        listener(8080, PortProtocol::Http),
        listener(9090, PortProtocol::Grpc),
    ]);
    // The canary route sends to blue's 9090.
    let canary = m.routers[0]
        .1
        .iter_mut()
        .find(|r| r.route_name == "canary")
        .unwrap();
    let http = canary.spec.as_mut().unwrap().http_route.as_mut().unwrap();
    http.action.as_mut().unwrap().weighted_targets[0].port = Some(9090);
    let mapped = map(&m, &Options::default()).unwrap();
    let blue = &mapped.fragments["blue.yaml"];
    let ingress = &blue["proxies"]["blue"]["listeners"][0];
    assert_eq!(ingress["protocol"], json!("tcp"));
    assert_eq!(
        ingress["ports"],
        json!({ "8080": "blue-local", "9090": "blue-local-9090" })
    );
    assert_eq!(
        blue["upstreams"]["blue-local-9090"]["endpoints"],
        json!({ "static": ["127.0.0.1:9090"] })
    );
    assert_eq!(blue["upstreams"]["blue-9090"]["port"], json!(9090));
    assert_eq!(blue["upstreams"]["blue-9090"]["protocol"], json!("grpc"));
    assert_eq!(blue["upstreams"]["blue"]["port"], json!(8080));
    let routes = &mapped.fragments["front.yaml"]["proxies"]["front"]["listeners"][1]["virtual_hosts"]
        [0]["routes"];
    assert_eq!(routes[1]["to"], json!("blue-9090"), "{routes}");
    crate::appmesh::render(&mapped, std::path::Path::new("import")).unwrap();
}

/// A tcp route of router `tcpecho` to `targets`.
fn tcp_route(name: &str, targets: Vec<WeightedTarget>) -> RouteData {
    use aws_sdk_appmesh::types::{TcpRoute, TcpRouteAction};
    let mut r = route(name, Some(1), HttpRouteMatch::builder().build(), vec![]);
    r.virtual_router_name = "tcpecho".into();
    r.spec = Some(
        RouteSpec::builder()
            .tcp_route(
                TcpRoute::builder()
                    .action(
                        TcpRouteAction::builder()
                            .set_weighted_targets(Some(targets))
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .build(),
    );
    r
}

/// The mesh with tcp nodes `tcpecho` and `tcpecho2` listening on `port`, virtual service
/// `tcpecho.color.local` through router `tcpecho` (a tcp route to tcpecho), and a node
/// `client` calling `backends`.
fn tcp_mesh(port: i32, backends: &[&str]) -> Mesh {
    use aws_sdk_appmesh::types::DnsServiceDiscovery;
    let mut m = mesh();
    let tcp_node = |name: &str| {
        let mut n = node(name, &[]);
        let spec = n.spec.as_mut().unwrap();
        spec.listeners = Some(vec![listener(port, PortProtocol::Tcp)]);
        spec.service_discovery = Some(ServiceDiscovery::Dns(
            DnsServiceDiscovery::builder()
                .hostname(format!("{name}.color.local"))
                .build()
                .unwrap(),
        ));
        n
    };
    m.nodes.push(tcp_node("tcpecho"));
    m.nodes.push(tcp_node("tcpecho2"));
    m.nodes.push(node("client", backends));
    let mut router = m.routers[0].0.clone();
    router.virtual_router_name = "tcpecho".into();
    router.spec = Some(
        VirtualRouterSpec::builder()
            .listeners(
                VirtualRouterListener::builder()
                    .port_mapping(
                        PortMapping::builder()
                            .port(port)
                            .protocol(PortProtocol::Tcp)
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .build(),
    );
    m.routers
        .push((router, vec![tcp_route("tcp", vec![target("tcpecho", 1)])]));
    let mut service = m.services[0].clone();
    service.virtual_service_name = "tcpecho.color.local".into();
    service.spec = Some(
        VirtualServiceSpec::builder()
            .provider(VirtualServiceProvider::VirtualRouter(
                VirtualRouterServiceProvider::builder()
                    .virtual_router_name("tcpecho")
                    .build()
                    .unwrap(),
            ))
            .build(),
    );
    m.services.push(service);
    m
}

#[test]
fn a_caller_whose_backends_are_all_tcp_gets_a_tcp_egress_by_port() {
    let mut m = tcp_mesh(2701, &["tcpecho.color.local"]);
    let mapped = map(&m, &Options::default()).unwrap();
    let egress = &mapped.fragments["client.yaml"]["proxies"]["client"]["listeners"][1];
    assert_eq!(egress["protocol"], json!("tcp"));
    assert_eq!(egress["original_destination"], json!(true));
    assert_eq!(egress["ports"], json!({ "2701": "tcpecho" }));
    let route = mapped
        .report
        .resources
        .iter()
        .find(|r| r.name == "tcpecho/tcp")
        .unwrap();
    assert!(
        matches!(&route.fields[0].outcome, Outcome::Mapped(to) if to.starts_with("the egress listener's TCP chains")),
        "{route:?}"
    );
    crate::appmesh::render(&mapped, std::path::Path::new("import")).unwrap();

    // Weighted targets on the one tcp backend: the listener's split.
    let last = m.routers.len() - 1;
    m.routers[last].1 = vec![tcp_route(
        "tcp",
        vec![target("tcpecho", 3), target("tcpecho2", 1)],
    )];
    let mapped = map(&m, &Options::default()).unwrap();
    let egress = &mapped.fragments["client.yaml"]["proxies"]["client"]["listeners"][1];
    assert_eq!(egress["split"], json!({ "tcpecho": 3, "tcpecho2": 1 }));
    assert!(egress.get("ports").is_none());
    crate::appmesh::render(&mapped, std::path::Path::new("import")).unwrap();
}

/// Every field the report has of `resource`.
fn fields(mapped: &Mapped, resource: &str) -> Vec<Field> {
    mapped
        .report
        .resources
        .iter()
        .filter(|r| r.name == resource)
        .flat_map(|r| r.fields.clone())
        .collect()
}

/// What the report says of `field` of `resource`.
fn outcome(mapped: &Mapped, resource: &str, field: &str) -> Outcome {
    mapped
        .report
        .resources
        .iter()
        .filter(|r| r.name == resource)
        .flat_map(|r| &r.fields)
        .find(|f| f.field == field)
        .map(|f| f.outcome.clone())
        .unwrap_or_else(|| panic!("no {field} for {resource}: {:?}", mapped.report))
}

#[test]
fn a_caller_with_http_and_tcp_backends_gets_tcp_ports_beside_its_http_egress() {
    let m = tcp_mesh(2701, &["colors.color.local", "tcpecho.color.local"]);
    let mapped = map(&m, &Options::default()).unwrap();
    let egress = &mapped.fragments["client.yaml"]["proxies"]["client"]["listeners"][1];
    assert_eq!(egress["protocol"], json!("http"));
    // Where ECS's REDIRECT of the task's own connections delivers them, whatever address the
    // other listeners bind (a loopback one is kept).
    assert_eq!(egress["address"], json!("127.0.0.1"));
    for (given, egress_at) in [
        ("10.0.0.5", "127.0.0.1"),
        ("0.0.0.0", "127.0.0.1"),
        ("::1", "::1"),
    ] {
        let options = Options {
            address: Some(given.into()),
            ..Options::default()
        };
        let mapped = map(&m, &options).unwrap();
        let listeners = &mapped.fragments["client.yaml"]["proxies"]["client"]["listeners"];
        assert_eq!(listeners[0]["address"], json!(given));
        assert_eq!(
            listeners[1]["address"],
            json!(egress_at),
            "--listen-address {given}"
        );
    }
    assert_eq!(egress["original_destination"], json!(true));
    assert_eq!(egress["ports"], json!({ "2701": "tcpecho" }));
    assert_eq!(
        egress["virtual_hosts"][0]["domains"],
        json!(["colors.color.local", "colors.color.local:8080"])
    );
    crate::appmesh::render(&mapped, std::path::Path::new("import")).unwrap();
    assert_eq!(
        outcome(&mapped, "client", "spec.backends[1].virtualService"),
        Outcome::Mapped(
            "ports [2701] of the egress listener (TCP, by the port dialled), to virtual node tcpecho"
                .into()
        )
    );

    // A tcp route on the port an HTTP backend is dialled on: that port stays HTTP, and the
    // report says the tcp service is not reached.
    let m = tcp_mesh(8080, &["colors.color.local", "tcpecho.color.local"]);
    let mapped = map(&m, &Options::default()).unwrap();
    let egress = &mapped.fragments["client.yaml"]["proxies"]["client"]["listeners"][1];
    assert_eq!(egress["protocol"], json!("http"));
    assert!(egress.get("ports").is_none(), "{egress}");
    assert_eq!(
        outcome(&mapped, "client", "spec.backends[1].virtualService"),
        Outcome::NotMapped("port 8080 is also HTTP virtual service colors.color.local's: the egress listener takes a port as TCP or as HTTP by Host, not both, so it stays HTTP".into())
    );
    // Said once: not also "mapped", for the backend or its route.
    let fields = |name: &str| fields(&mapped, name);
    let backend: Vec<Field> = fields("client")
        .into_iter()
        .filter(|f| f.field == "spec.backends[1].virtualService")
        .collect();
    assert_eq!(backend.len(), 1, "{backend:?}");
    assert!(
        fields("tcpecho/tcp")
            .iter()
            .all(|f| !matches!(f.outcome, Outcome::Mapped(_)) || f.field != "spec.tcpRoute"),
        "{:?}",
        fields("tcpecho/tcp")
    );
    crate::appmesh::render(&mapped, std::path::Path::new("import")).unwrap();

    // Weighted tcp targets beside HTTP: `split` would take every port, HTTP's too.
    let mut m = tcp_mesh(2701, &["colors.color.local", "tcpecho.color.local"]);
    let last = m.routers.len() - 1;
    m.routers[last].1 = vec![tcp_route(
        "tcp",
        vec![target("tcpecho", 3), target("tcpecho2", 1)],
    )];
    let mapped = map(&m, &Options::default()).unwrap();
    let egress = &mapped.fragments["client.yaml"]["proxies"]["client"]["listeners"][1];
    assert!(
        egress.get("split").is_none() && egress.get("ports").is_none(),
        "{egress}"
    );
    // ... but when no HTTP backend could be mapped, there is no HTTP chain: the split.
    let mut lone = m.clone();
    let client = lone.nodes.len() - 1;
    lone.nodes[client] = node("client", &["nowhere.color.local", "tcpecho.color.local"]);
    let mapped_lone = map(&lone, &Options::default()).unwrap();
    let egress_lone = &mapped_lone.fragments["client.yaml"]["proxies"]["client"]["listeners"][1];
    assert_eq!(egress_lone["protocol"], json!("tcp"), "{egress_lone}");
    assert_eq!(
        egress_lone["split"],
        json!({ "tcpecho": 3, "tcpecho2": 1 }),
        "{egress_lone}"
    );
    assert!(
        matches!(outcome(&mapped, "client", "spec.backends"), Outcome::NotMapped(w) if w.contains("tcpecho.color.local: its weighted tcp route needs the listener's `split`")),
        "{:?}",
        mapped.report
    );
}

#[test]
fn a_node_provider_s_tcp_listener_is_a_port_chain_beside_its_http_ones() {
    let mut m = mesh();
    // multi serves HTTP on 8080 and tcp on 2701; client calls it by its service.
    m.nodes.push(node("multi", &[]));
    m.nodes.last_mut().unwrap().spec.as_mut().unwrap().listeners = Some(vec![
        listener(8080, PortProtocol::Http),
        listener(2701, PortProtocol::Tcp),
    ]);
    m.services.push(node_service("multi.color.local", "multi"));
    m.nodes.push(node("client", &["multi.color.local"]));
    let mapped = map(&m, &Options::default()).unwrap();
    let egress = &mapped.fragments["client.yaml"]["proxies"]["client"]["listeners"][1];
    assert_eq!(egress["protocol"], json!("http"));
    assert_eq!(egress["ports"], json!({ "2701": "multi-2701" }));
    assert_eq!(
        egress["virtual_hosts"][0]["domains"],
        json!(["multi.color.local", "multi.color.local:8080"])
    );
    // Defined by multi's own fragment, as its other ports' upstreams.
    let upstreams = &mapped.fragments["multi.yaml"]["upstreams"];
    assert_eq!(
        upstreams["multi-2701"]["protocol"],
        json!("tcp"),
        "{upstreams}"
    );
    assert_eq!(upstreams["multi-2701"]["port"], json!(2701), "{upstreams}");
    crate::appmesh::render(&mapped, std::path::Path::new("import")).unwrap();
}

#[test]
fn an_allow_all_mesh_reports_that_tcp_ports_do_not_pass_outside_services_on() {
    let mut m = tcp_mesh(2701, &["colors.color.local", "tcpecho.color.local"]);
    allow_all(&mut m);
    let mapped = map(&m, &Options::default()).unwrap();
    let egress = &mapped.fragments["client.yaml"]["proxies"]["client"]["listeners"][1];
    assert_eq!(egress["passthrough"], json!(true));
    assert_eq!(egress["ports"], json!({ "2701": "tcpecho" }));
    let lossy: Vec<&Field> = mapped
        .report
        .resources
        .iter()
        .filter(|r| r.name == "client")
        .flat_map(|r| &r.fields)
        .filter(|f| {
            f.field == "(mesh egressFilter ALLOW_ALL)" && matches!(f.outcome, Outcome::Lossy(_))
        })
        .collect();
    assert_eq!(lossy.len(), 1, "{:?}", mapped.report);
    assert!(
        matches!(&lossy[0].outcome, Outcome::Lossy(w) if w.starts_with("connections to ports [\"2701\"] go to the tcp backends' upstreams")),
        "{lossy:?}"
    );
    crate::appmesh::render(&mapped, std::path::Path::new("import")).unwrap();
}

/// A virtual service whose provider is a virtual node: `NAME`, with the service's name as Host.
fn node_service(name: &str, node: &str) -> VirtualServiceData {
    use aws_sdk_appmesh::types::VirtualNodeServiceProvider;
    let mut service = mesh().services[0].clone();
    service.virtual_service_name = name.into();
    service.spec = Some(
        VirtualServiceSpec::builder()
            .provider(VirtualServiceProvider::VirtualNode(
                VirtualNodeServiceProvider::builder()
                    .virtual_node_name(node)
                    .build()
                    .unwrap(),
            ))
            .build(),
    );
    service
}

#[test]
fn a_node_provider_with_several_listeners_is_routed_per_port() {
    let mut m = mesh();
    // multi serves HTTP on 8080 and 9090 and tcp on 2701; front calls it directly.
    m.nodes.push(node("multi", &[]));
    m.nodes.last_mut().unwrap().spec.as_mut().unwrap().listeners = Some(vec![
        listener(8080, PortProtocol::Http),
        listener(9090, PortProtocol::Http),
        listener(2701, PortProtocol::Tcp),
    ]);
    m.services.push(node_service("multi.color.local", "multi"));
    m.nodes[0] = node("front", &["colors.color.local", "multi.color.local"]);
    // An HTTP route of the router that names multi's tcp port.
    let canary = m.routers[0]
        .1
        .iter_mut()
        .find(|r| r.route_name == "canary")
        .unwrap();
    let http = canary.spec.as_mut().unwrap().http_route.as_mut().unwrap();
    http.action.as_mut().unwrap().weighted_targets = vec![target("blue", 1), {
        let mut t = target("multi", 1);
        t.port = Some(2701);
        t
    }];
    let mapped = map(&m, &Options::default()).unwrap();
    crate::appmesh::render(&mapped, std::path::Path::new("import")).unwrap();
    let hosts =
        &mapped.fragments["front.yaml"]["proxies"]["front"]["listeners"][1]["virtual_hosts"];
    let by_domain = |d: &str| {
        hosts
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["domains"].as_array().unwrap().contains(&json!(d)))
            .unwrap_or_else(|| panic!("no virtual host takes {d}: {hosts}"))
    };
    assert_eq!(
        by_domain("multi.color.local")["routes"][0]["to"],
        json!("multi")
    );
    assert_eq!(
        by_domain("multi.color.local:8080")["routes"][0]["to"],
        json!("multi")
    );
    assert_eq!(
        by_domain("multi.color.local:9090")["routes"][0]["to"],
        json!("multi-9090")
    );
    assert!(
        !hosts.to_string().contains("multi.color.local:2701"),
        "a virtual host cannot take the tcp port: {hosts}"
    );
    // The egress listener's TCP chain for it does.
    let egress = &mapped.fragments["front.yaml"]["proxies"]["front"]["listeners"][1];
    assert_eq!(egress["ports"], json!({ "2701": "multi-2701" }));
    let fields = |name: &str| fields(&mapped, name);
    assert!(
        fields("front").iter().any(|f| f.field == "spec.backends[1].virtualService"
            && matches!(&f.outcome, Outcome::Mapped(w) if w == "port 2701 (tcp) of its provider, virtual node multi: ports.2701 of the egress listener, to upstream multi-2701")),
        "{:?}",
        fields("front")
    );
    // The route's target on the tcp port is left out, the rest of the route stays.
    let canary = fields("colors/canary");
    assert!(
        canary
            .iter()
            .any(|f| f.field == "spec.httpRoute.action.weightedTargets[1]"
                && matches!(&f.outcome, Outcome::NotMapped(w) if w.contains("tcp"))),
        "{canary:?}"
    );
    let routes = &by_domain("colors.color.local")["routes"];
    assert_eq!(routes[1]["to"], json!("blue"), "{routes}");
}

/// Checks that every caller's upstream to a node speaks what the node's ingress serves: TLS
/// only where it serves TLS, plaintext only where it takes plaintext.
fn assert_callers_match_what_callees_serve(mapped: &Mapped) {
    for (file, doc) in &mapped.fragments {
        let Some((proxy, p)) = doc["proxies"].as_object().and_then(|p| p.iter().next()) else {
            continue;
        };
        let Some(ingress) = p["listeners"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["name"] == json!("ingress")))
        else {
            continue;
        };
        let served = ingress.get("tls");
        for (name, u) in doc["upstreams"].as_object().into_iter().flatten() {
            if name.contains("-local") {
                continue;
            }
            match (u.get("tls"), served) {
                (Some(_), None) => {
                    panic!("{file}: upstream {name} speaks TLS to {proxy}'s plaintext ingress")
                }
                (None, Some(t)) if t["mode"] == json!("strict") => {
                    panic!(
                        "{file}: upstream {name} speaks plaintext to {proxy}'s strict ingress {t}"
                    )
                }
                _ => {}
            }
        }
    }
}

#[test]
fn each_listener_s_tls_is_served_or_reported_and_callers_match_what_is_served() {
    use aws_sdk_appmesh::types::{
        BackendDefaults, ClientPolicy, ClientPolicyTls, ListenerTls, ListenerTlsAcmCertificate,
        ListenerTlsCertificate, ListenerTlsMode, TlsValidationContext,
        TlsValidationContextAcmTrust, TlsValidationContextTrust,
    };
    const CERT: &str = "arn:aws:acm:us-east-1:111122223333:certificate/blue";
    const CA: &str = "arn:aws:acm-pca:us-east-1:111122223333:certificate-authority/ca";
    let tls = |mode: ListenerTlsMode| {
        ListenerTls::builder()
            .mode(mode)
            .certificate(ListenerTlsCertificate::Acm(
                ListenerTlsAcmCertificate::builder()
                    .certificate_arn(CERT)
                    .build()
                    .unwrap(),
            ))
            .build()
            .unwrap()
    };
    let policy = |ports: Vec<i32>| {
        ClientPolicy::builder()
            .tls(
                ClientPolicyTls::builder()
                    .set_ports(Some(ports))
                    .validation(
                        TlsValidationContext::builder()
                            .trust(TlsValidationContextTrust::Acm(
                                TlsValidationContextAcmTrust::builder()
                                    .certificate_authority_arns(CA)
                                    .build()
                                    .unwrap(),
                            ))
                            .build(),
                    )
                    .build(),
            )
            .build()
    };
    // blue is the provider of its own service, which front calls.
    let with_blue = |first: ListenerTlsMode, second: ListenerTlsMode, ports: Vec<i32>| {
        let mut m = mesh();
        let mut a = listener(8080, PortProtocol::Http);
        a.tls = Some(tls(first));
        let mut b = listener(9090, PortProtocol::Http);
        b.tls = Some(tls(second));
        m.nodes[2].spec.as_mut().unwrap().listeners = Some(vec![a, b]);
        m.services.push(node_service("blue.color.local", "blue"));
        m.nodes[0] = node("front", &["blue.color.local"]);
        m.nodes[0].spec.as_mut().unwrap().backend_defaults = Some(
            BackendDefaults::builder()
                .client_policy(policy(ports))
                .build(),
        );
        map(&m, &Options::default()).unwrap()
    };
    let field = |mapped: &Mapped, name: &str| {
        mapped
            .report
            .resources
            .iter()
            .find(|r| r.name == "blue")
            .and_then(|r| r.fields.iter().find(|f| f.field == name))
            .map(|f| f.outcome.clone())
    };

    // A STRICT second listener behind a DISABLED first: TLS is served (permissive, so the
    // plaintext port still takes plaintext), and front's TLS to 9090 finds TLS.
    let mapped = with_blue(ListenerTlsMode::Disabled, ListenerTlsMode::Strict, vec![]);
    crate::appmesh::render(&mapped, std::path::Path::new("import")).unwrap();
    let ingress = &mapped.fragments["blue.yaml"]["proxies"]["blue"]["listeners"][0];
    assert_eq!(
        ingress["tls"],
        json!({ "mode": "permissive", "certificate": { "acm": { "arn": CERT } } })
    );
    assert!(mapped.fragments["blue.yaml"]["upstreams"]["blue-9090"]["tls"].is_object());
    assert!(
        matches!(field(&mapped, "spec.listeners[0].tls"), Some(Outcome::Lossy(w)) if w.contains("plaintext callers still get in")),
        "{:?}",
        mapped.report
    );
    assert!(
        matches!(field(&mapped, "spec.listeners[1].tls"), Some(Outcome::Lossy(w)) if w.contains("STRICT served as permissive") && w.contains("port 8080")),
        "{:?}",
        mapped.report
    );
    assert_callers_match_what_callees_serve(&mapped);

    // A DISABLED second listener behind a STRICT first, called in plaintext on 9090: served
    // permissive, not strict on the plaintext port.
    let mapped = with_blue(
        ListenerTlsMode::Strict,
        ListenerTlsMode::Disabled,
        vec![8080],
    );
    assert_eq!(
        mapped.fragments["blue.yaml"]["proxies"]["blue"]["listeners"][0]["tls"]["mode"],
        json!("permissive")
    );
    assert!(
        mapped.fragments["blue.yaml"]["upstreams"]["blue-9090"]
            .get("tls")
            .is_none()
    );
    assert_callers_match_what_callees_serve(&mapped);

    // Both STRICT alike: strict, as in App Mesh, nothing lost.
    let mapped = with_blue(ListenerTlsMode::Strict, ListenerTlsMode::Strict, vec![]);
    assert_eq!(
        mapped.fragments["blue.yaml"]["proxies"]["blue"]["listeners"][0]["tls"]["mode"],
        json!("strict")
    );
    assert!(field(&mapped, "spec.listeners[1].tls").is_none());
    assert_callers_match_what_callees_serve(&mapped);

    // Both DISABLED, but front's policy asks for TLS: plaintext, as the server is, reported.
    let mapped = with_blue(ListenerTlsMode::Disabled, ListenerTlsMode::Disabled, vec![]);
    assert!(
        mapped.fragments["blue.yaml"]["upstreams"]["blue"]
            .get("tls")
            .is_none()
    );
    let front = mapped
        .report
        .resources
        .iter()
        .find(|r| r.name == "front")
        .unwrap();
    assert!(
        front
            .fields
            .iter()
            .any(|f| f.field == "spec.backendDefaults.clientPolicy.tls"
                && matches!(&f.outcome, Outcome::Lossy(w) if w.contains("serves plaintext"))),
        "{front:?}"
    );
    assert_callers_match_what_callees_serve(&mapped);
}

#[test]
fn routes_of_one_priority_and_path_put_the_one_with_more_conditions_first() {
    let mut m = mesh();
    let blue = HttpRouteMatch::builder()
        .prefix("/")
        .headers(header(
            "x-color",
            HeaderMatchMethod::Exact("blue".into()),
            false,
        ))
        .build();
    // By name the plain route would come first and take every request of the header route.
    m.routers[0].1 = vec![
        route(
            "a-plain",
            Some(1),
            HttpRouteMatch::builder().prefix("/").build(),
            vec![target("red", 1)],
        ),
        route("b-header", Some(1), blue, vec![target("blue", 1)]),
    ];
    let mapped = map(&m, &Options::default()).unwrap();
    let routes = &mapped.fragments["front.yaml"]["proxies"]["front"]["listeners"][1]["virtual_hosts"]
        [0]["routes"];
    assert_eq!(routes[0]["to"], json!("blue"), "{routes}");
    assert_eq!(routes[1]["to"], json!("red"), "{routes}");
    let rendered = crate::appmesh::render(&mapped, std::path::Path::new("import")).unwrap();
    assert!(
        rendered.report.warnings.is_empty(),
        "{:?}",
        rendered.report.warnings
    );
}

#[test]
fn the_catalog_s_warnings_are_in_the_report() {
    let mut m = mesh();
    // Priority puts the plain route first, as in App Mesh: the header route never matches.
    m.routers[0].1 = vec![
        route(
            "plain",
            Some(1),
            HttpRouteMatch::builder().prefix("/").build(),
            vec![target("red", 1)],
        ),
        route(
            "header",
            Some(2),
            HttpRouteMatch::builder()
                .prefix("/")
                .headers(header(
                    "x-color",
                    HeaderMatchMethod::Exact("blue".into()),
                    false,
                ))
                .build(),
            vec![target("blue", 1)],
        ),
    ];
    let mapped = map(&m, &Options::default()).unwrap();
    let rendered = crate::appmesh::render(&mapped, std::path::Path::new("import")).unwrap();
    let md = rendered.report.to_markdown();
    assert!(
        md.contains("## Catalog warnings")
            && md.contains("proxies.front.listeners[1].virtual_hosts[0].routes[1]: never matches: routes[0] (prefix /"),
        "{md}"
    );
    // What a written import's report says too.
    let dir = tempfile::tempdir().unwrap();
    crate::appmesh::write(&mapped, dir.path()).unwrap();
    let written = std::fs::read_to_string(dir.path().join(crate::appmesh::REPORT_FILE)).unwrap();
    assert!(written.contains("never matches"), "{written}");
}

#[test]
fn names_the_importer_builds_that_meet_a_real_one_are_an_error_naming_both() {
    let gateway = |name: &str| {
        use aws_sdk_appmesh::types::{
            GatewayRouteData, GatewayRouteTarget, GatewayRouteVirtualService, HttpGatewayRoute,
            HttpGatewayRouteAction, HttpGatewayRouteMatch, VirtualGatewayListener,
            VirtualGatewayPortMapping, VirtualGatewayPortProtocol, VirtualGatewaySpec,
        };
        let gw = VirtualGatewayData::builder()
            .mesh_name("color")
            .virtual_gateway_name(name)
            .spec(
                VirtualGatewaySpec::builder()
                    .listeners(
                        VirtualGatewayListener::builder()
                            .port_mapping(
                                VirtualGatewayPortMapping::builder()
                                    .port(9080)
                                    .protocol(VirtualGatewayPortProtocol::Http)
                                    .build()
                                    .unwrap(),
                            )
                            .build(),
                    )
                    .build()
                    .unwrap(),
            )
            .metadata(metadata(&format!("/virtualGateway/{name}")))
            .build()
            .unwrap();
        let route = GatewayRouteData::builder()
            .mesh_name("color")
            .virtual_gateway_name(name)
            .gateway_route_name("all")
            .spec(
                aws_sdk_appmesh::types::GatewayRouteSpec::builder()
                    .http_route(
                        HttpGatewayRoute::builder()
                            .r#match(HttpGatewayRouteMatch::builder().prefix("/").build())
                            .action(
                                HttpGatewayRouteAction::builder()
                                    .target(
                                        GatewayRouteTarget::builder()
                                            .virtual_service(
                                                GatewayRouteVirtualService::builder()
                                                    .virtual_service_name("colors.color.local")
                                                    .build()
                                                    .unwrap(),
                                            )
                                            .build(),
                                    )
                                    .build(),
                            )
                            .build(),
                    )
                    .build(),
            )
            .metadata(metadata(&format!(
                "/virtualGateway/{name}/gatewayRoute/all"
            )))
            .build()
            .unwrap();
        (gw, vec![route])
    };
    let cases: Vec<(&str, Mesh, &str)> = vec![
        (
            "NODE-PORT",
            {
                let mut m = mesh();
                m.nodes[2].spec.as_mut().unwrap().listeners = Some(vec![
                    listener(8080, PortProtocol::Http),
                    listener(9090, PortProtocol::Http),
                ]);
                m.nodes.push(node("blue-9090", &[]));
                m
            },
            r#"virtual node "blue" (the upstream of its listener on 9090) and virtual node "blue-9090" both become upstream "blue-9090" in the catalog: rename one of them in App Mesh"#,
        ),
        (
            "NODE-local",
            {
                let mut m = mesh();
                m.nodes.push(node("red-local", &[]));
                m
            },
            r#"virtual node "red" (the upstream of its app on loopback) and virtual node "red-local" both become upstream "red-local""#,
        ),
        (
            "GATEWAY-mesh",
            {
                let mut m = mesh();
                m.gateways.push(gateway("gw"));
                m.nodes.push(node("gw-mesh", &[]));
                m
            },
            r#"virtual node "gw-mesh" and virtual gateway "gw" (its hop to the mesh's routes) both become upstream "gw-mesh""#,
        ),
    ];
    let mut wrong = Vec::new();
    for (what, m, expected) in cases {
        match map(&m, &Options::default()) {
            Err(e @ ImportError::Collision { .. }) if e.to_string().contains(expected) => {}
            Err(e) => wrong.push(format!("{what}: {e}")),
            Ok(mapped) => {
                let rendered = crate::appmesh::render(&mapped, std::path::Path::new("import"));
                wrong.push(format!(
                    "{what}: no collision found; render: {:?}",
                    rendered.err().map(|e| e.to_string())
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn a_virtual_host_the_importer_names_yields_to_a_service_of_that_name() {
    let mut m = mesh();
    // multi's second port's virtual host is named like a service of that name would be.
    m.nodes.push(node("multi", &[]));
    m.nodes.last_mut().unwrap().spec.as_mut().unwrap().listeners = Some(vec![
        listener(8080, PortProtocol::Http),
        listener(9090, PortProtocol::Http),
    ]);
    m.services.push(node_service("multi.local", "multi"));
    m.services.push(node_service("multi.local-9090", "green"));
    m.nodes[0] = node("front", &["multi.local", "multi.local-9090"]);
    let mapped = map(&m, &Options::default()).unwrap();
    crate::appmesh::render(&mapped, std::path::Path::new("import")).unwrap();
    let hosts = mapped.fragments["front.yaml"]["proxies"]["front"]["listeners"][1]["virtual_hosts"]
        .as_array()
        .unwrap()
        .clone();
    let to = |domain: &str| {
        hosts
            .iter()
            .find(|h| h["domains"].as_array().unwrap().contains(&json!(domain)))
            .map(|h| h["routes"][0]["to"].clone())
    };
    assert_eq!(to("multi.local:9090"), Some(json!("multi-9090")));
    assert_eq!(to("multi.local-9090"), Some(json!("green")));
}

#[test]
fn a_second_listener_s_health_check_and_outlier_detection_are_reported_on_its_upstream() {
    use aws_sdk_appmesh::types::{HealthCheckPolicy, OutlierDetection};
    let mut m = mesh();
    let mut second = listener(9090, PortProtocol::Http);
    second.health_check = Some(
        HealthCheckPolicy::builder()
            .protocol(PortProtocol::Http)
            .path("/ping")
            .interval_millis(5000)
            .timeout_millis(2000)
            .healthy_threshold(2)
            .unhealthy_threshold(3)
            .build()
            .unwrap(),
    );
    second.outlier_detection = Some(
        OutlierDetection::builder()
            .max_server_errors(5)
            .interval(
                aws_sdk_appmesh::types::Duration::builder()
                    .unit(DurationUnit::S)
                    .value(10)
                    .build(),
            )
            .base_ejection_duration(
                aws_sdk_appmesh::types::Duration::builder()
                    .unit(DurationUnit::S)
                    .value(30)
                    .build(),
            )
            .max_ejection_percent(50)
            .build()
            .unwrap(),
    );
    m.nodes[2].spec.as_mut().unwrap().listeners =
        Some(vec![listener(8080, PortProtocol::Http), second]);
    let mapped = map(&m, &Options::default()).unwrap();
    let blue = &mapped.fragments["blue.yaml"]["upstreams"];
    assert!(blue["blue-9090"]["health_check"].is_object());
    assert!(blue["blue"].get("health_check").is_none());
    let report = mapped
        .report
        .resources
        .iter()
        .find(|r| r.name == "blue")
        .unwrap();
    let said = |field: &str| {
        report
            .fields
            .iter()
            .find(|f| f.field == field)
            .map(|f| f.outcome.clone())
    };
    assert_eq!(
        said("spec.listeners[1].healthCheck"),
        Some(Outcome::Mapped(
            "health_check of upstream blue-9090, run by the callers' proxies".into()
        ))
    );
    assert_eq!(
        said("spec.listeners[1].outlierDetection"),
        Some(Outcome::Mapped(
            "outlier_detection of upstream blue-9090, at the callers".into()
        ))
    );
}

#[test]
fn the_strictest_listener_s_tls_is_served_and_what_it_lets_in_is_said_loudly() {
    use aws_sdk_appmesh::types::{
        ListenerTls, ListenerTlsAcmCertificate, ListenerTlsCertificate, ListenerTlsMode,
        ListenerTlsValidationContext, ListenerTlsValidationContextTrust,
        SubjectAlternativeNameMatchers, SubjectAlternativeNames, TlsValidationContextFileTrust,
    };
    const CERT: &str = "arn:aws:acm:us-east-1:111122223333:certificate/blue";
    let tls = |mode: ListenerTlsMode| {
        ListenerTls::builder()
            .mode(mode)
            .certificate(ListenerTlsCertificate::Acm(
                ListenerTlsAcmCertificate::builder()
                    .certificate_arn(CERT)
                    .build()
                    .unwrap(),
            ))
    };
    let mut m = mesh();
    // 8080 PERMISSIVE without client validation, 9090 STRICT mTLS with an allow list.
    let mut a = listener(8080, PortProtocol::Http);
    a.tls = Some(tls(ListenerTlsMode::Permissive).build().unwrap());
    let mut b = listener(9090, PortProtocol::Http);
    b.tls = Some(
        tls(ListenerTlsMode::Strict)
            .validation(
                ListenerTlsValidationContext::builder()
                    .trust(ListenerTlsValidationContextTrust::File(
                        TlsValidationContextFileTrust::builder()
                            .certificate_chain("/certs/ca.pem")
                            .build()
                            .unwrap(),
                    ))
                    .subject_alternative_names(
                        SubjectAlternativeNames::builder()
                            .r#match(
                                SubjectAlternativeNameMatchers::builder()
                                    .exact("front.color.local")
                                    .build()
                                    .unwrap(),
                            )
                            .build(),
                    )
                    .build(),
            )
            .build()
            .unwrap(),
    );
    m.nodes[2].spec.as_mut().unwrap().listeners = Some(vec![a, b]);
    let mapped = map(&m, &Options::default()).unwrap();
    let ingress = &mapped.fragments["blue.yaml"]["proxies"]["blue"]["listeners"][0];
    // The client validation of 9090 is served, not 8080's tls without it.
    assert_eq!(
        ingress["tls"],
        json!({
            "mode": "permissive",
            "certificate": { "acm": { "arn": CERT } },
            "client_certificate": { "trust": { "file": "/certs/ca.pem" }, "allow": ["dns:front.color.local"] },
        })
    );
    let blue = mapped
        .report
        .resources
        .iter()
        .find(|r| r.name == "blue")
        .unwrap();
    let field = |name: &str| {
        blue.fields
            .iter()
            .find(|f| f.field == name)
            .map(|f| &f.outcome)
    };
    // 9090 required mTLS and now takes plaintext: said loudly.
    assert!(
        matches!(field("spec.listeners[1].tls"), Some(Outcome::Lossy(w)) if w.contains("STRICT served as permissive") && w.contains("plaintext callers get in on port 9090")),
        "{blue:?}"
    );
    // The served listener keeps its own lines: the file trust's advice.
    assert!(
        matches!(field("spec.listeners[1].tls.validation.trust.file"), Some(Outcome::Lossy(w)) if w.contains("SDS")),
        "{blue:?}"
    );
    assert!(
        field("spec.listeners[1].tls.certificate.acm").is_some(),
        "{blue:?}"
    );
    // The mode line that no longer holds is gone.
    assert!(field("spec.listeners[1].tls.mode").is_none(), "{blue:?}");
    // 8080 took TLS callers without a client certificate, which now fail there.
    assert!(
        matches!(field("spec.listeners[0].tls"), Some(Outcome::Lossy(w)) if w.contains("client certificates asked") && w.contains("port 8080")),
        "{blue:?}"
    );
}

#[test]
fn a_listener_whose_tls_is_not_mapped_is_not_called_plaintext_in_app_mesh() {
    use aws_sdk_appmesh::types::{
        ListenerTls, ListenerTlsAcmCertificate, ListenerTlsCertificate, ListenerTlsMode,
    };
    const CERT: &str = "arn:aws:acm:us-east-1:111122223333:certificate/blue";
    let mut m = mesh();
    let mut a = listener(8080, PortProtocol::Http);
    a.tls = Some(
        ListenerTls::builder()
            .mode(ListenerTlsMode::Permissive)
            .certificate(ListenerTlsCertificate::Acm(
                ListenerTlsAcmCertificate::builder()
                    .certificate_arn(CERT)
                    .build()
                    .unwrap(),
            ))
            .build()
            .unwrap(),
    );
    // A listener with a mode this importer does not know.
    let mut b = listener(9090, PortProtocol::Http);
    b.tls = Some(
        ListenerTls::builder()
            .mode(ListenerTlsMode::from("LOOSE"))
            .certificate(ListenerTlsCertificate::Acm(
                ListenerTlsAcmCertificate::builder()
                    .certificate_arn(CERT)
                    .build()
                    .unwrap(),
            ))
            .build()
            .unwrap(),
    );
    m.nodes[2].spec.as_mut().unwrap().listeners = Some(vec![a, b]);
    let mapped = map(&m, &Options::default()).unwrap();
    let blue = mapped
        .report
        .resources
        .iter()
        .find(|r| r.name == "blue")
        .unwrap();
    let field = |name: &str| {
        blue.fields
            .iter()
            .find(|f| f.field == name)
            .map(|f| &f.outcome)
    };
    assert!(
        matches!(field("spec.listeners[1].tls"), Some(Outcome::Lossy(w)) if !w.contains("plaintext here in App Mesh") && w.contains("not mapped here")),
        "{blue:?}"
    );
    assert!(
        matches!(
            field("spec.listeners[1].tls.mode"),
            Some(Outcome::NotMapped(_))
        ),
        "{blue:?}"
    );
}

#[test]
fn client_sans_the_catalog_cannot_take_are_left_out_and_reported_not_failing_the_import() {
    use aws_sdk_appmesh::types::{
        ListenerTls, ListenerTlsAcmCertificate, ListenerTlsCertificate, ListenerTlsMode,
        ListenerTlsValidationContext, ListenerTlsValidationContextTrust,
        SubjectAlternativeNameMatchers, SubjectAlternativeNames, TlsValidationContextFileTrust,
    };
    let with_sans = |sans: &[&str]| {
        let mut matchers = SubjectAlternativeNameMatchers::builder();
        for s in sans {
            matchers = matchers.exact(*s);
        }
        let mut m = mesh();
        let blue = m.nodes[2].spec.as_mut().unwrap();
        blue.listeners.as_mut().unwrap()[0].tls = Some(
            ListenerTls::builder()
                .mode(ListenerTlsMode::Strict)
                .certificate(ListenerTlsCertificate::Acm(
                    ListenerTlsAcmCertificate::builder()
                        .certificate_arn("arn:aws:acm:us-east-1:111122223333:certificate/blue")
                        .build()
                        .unwrap(),
                ))
                .validation(
                    ListenerTlsValidationContext::builder()
                        .trust(ListenerTlsValidationContextTrust::File(
                            TlsValidationContextFileTrust::builder()
                                .certificate_chain("/certs/ca.pem")
                                .build()
                                .unwrap(),
                        ))
                        .subject_alternative_names(
                            SubjectAlternativeNames::builder()
                                .r#match(matchers.build().unwrap())
                                .build(),
                        )
                        .build(),
                )
                .build()
                .unwrap(),
        );
        let mapped = map(&m, &Options::default()).unwrap();
        // The imported catalog loads, as `serve --catalog DIR` loads it.
        let dir = tempfile::tempdir().unwrap();
        crate::appmesh::write(&mapped, dir.path()).unwrap();
        if let Err(e) = crate::catalog::load_path(dir.path()) {
            panic!("{e}");
        }
        let outcome = mapped
            .report
            .resources
            .iter()
            .find(|r| r.name == "blue")
            .and_then(|r| {
                r.fields
                    .iter()
                    .find(|f| f.field == "spec.listeners[0].tls.validation.subjectAlternativeNames")
            })
            .map(|f| f.outcome.clone());
        let allow = mapped.fragments["blue.yaml"]["proxies"]["blue"]["listeners"][0]["tls"]
            ["client_certificate"]
            .get("allow")
            .cloned();
        (allow, outcome)
    };

    let (allow, outcome) = with_sans(&[
        "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
        "spiffe:x",
        "svc_a",
        "front.color.local",
        "spiffe://color/front",
    ]);
    assert_eq!(
        allow,
        Some(json!(["dns:front.color.local", "spiffe://color/front"]))
    );
    assert!(
        matches!(&outcome, Some(Outcome::Lossy(w)) if w.contains("svc_a") && w.contains("spiffe:x") && w.contains("urn:uuid:")),
        "{outcome:?}"
    );

    // None the catalog takes: no allow, and the report says any client of the trust gets in.
    let (allow, outcome) = with_sans(&["svc_a"]);
    assert_eq!(allow, None);
    assert!(
        matches!(&outcome, Some(Outcome::Lossy(w)) if w.contains("ANY CLIENT OF THE TRUST GETS IN")),
        "{outcome:?}"
    );
}
