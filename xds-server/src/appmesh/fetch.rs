//! Reading a mesh through the App Mesh API: every resource of each kind, listed page by page
//! (the SDK's paginators) and then described, several at a time (a list names resources; only
//! a description carries the spec and the status).

use std::future::Future;

use aws_sdk_appmesh::Client;
use aws_sdk_appmesh::error::{DisplayErrorContext, SdkError};
use aws_sdk_appmesh::types::{
    GatewayRouteData, MeshData, RouteData, VirtualGatewayData, VirtualNodeData, VirtualRouterData,
    VirtualServiceData,
};
use futures_util::{StreamExt, TryStreamExt, stream};

use super::{ImportError, Mesh, Skipped};

/// How many descriptions are asked for at once: App Mesh's API allows a few tens of requests a
/// second per account; a handful at a time keeps an import of hundreds of routes short
/// without tripping it.
const CONCURRENT_DESCRIBES: usize = 8;

/// Which mesh to read.
#[derive(Debug, Clone)]
pub struct MeshRef {
    /// The mesh's name.
    pub name: String,
    /// The account that owns it, for a mesh shared with this account.
    pub owner: Option<String>,
}

fn aws<E, R>(operation: &'static str, what: &str, e: SdkError<E, R>) -> ImportError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    ImportError::Aws {
        operation,
        what: what.to_string(),
        message: DisplayErrorContext(&e).to_string(),
    }
}

/// Prints one line of progress on stderr: a mesh can have hundreds of routes.
fn progress(kind: &str, n: usize) {
    eprintln!("{kind}: {n} described");
}

/// One kind of resource, as [`import_kind`] reads it.
struct Kind<'a> {
    /// `virtual node`, `route`, … (the report's and the progress line's name).
    name: &'static str,
    /// The list operation, for errors.
    list: &'static str,
    /// What is listed in: the mesh, or the router or gateway of routes.
    scope: &'a str,
    /// Put before a resource's name in the report: `ROUTER/` for a route.
    prefix: String,
}

/// Lists one kind (`listed`: the SDK's paginator, every page) and describes each resource with
/// `describe`, [`CONCURRENT_DESCRIBES`] at a time, in list order. The ACTIVE ones are
/// returned; the others (INACTIVE, DELETED: not in use or being deleted) go to `skipped`.
async fn import_kind<I, E, R, T, F, Fut>(
    kind: Kind<'_>,
    listed: impl Future<Output = Result<Vec<I>, SdkError<E, R>>>,
    name_of: fn(&I) -> &str,
    describe: F,
    status: fn(&T) -> Option<&str>,
    skipped: &mut Vec<Skipped>,
) -> Result<Vec<T>, ImportError>
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<Option<T>, ImportError>>,
{
    let names: Vec<String> = listed
        .await
        .map_err(|e| aws(kind.list, kind.scope, e))?
        .iter()
        .map(|i| name_of(i).to_string())
        .collect();
    let described: Vec<(String, Option<T>)> = stream::iter(names)
        .map(|name| {
            let out = describe(name.clone());
            async move { Ok::<_, ImportError>((name, out.await?)) }
        })
        .buffered(CONCURRENT_DESCRIBES)
        .try_collect()
        .await?;
    let mut active = Vec::with_capacity(described.len());
    for (name, d) in described {
        let Some(d) = d else { continue };
        match status(&d) {
            Some("ACTIVE") => active.push(d),
            other => skipped.push(Skipped {
                kind: kind.name,
                name: format!("{}{name}", kind.prefix),
                status: other.unwrap_or("without a status").to_string(),
            }),
        }
    }
    Ok(active)
}

/// Reads every ACTIVE virtual node, virtual service, virtual router (with its routes) and
/// virtual gateway (with its gateway routes) of the mesh; the others are listed as skipped.
pub async fn mesh(client: &Client, mesh: &MeshRef) -> Result<Mesh, ImportError> {
    let owner = mesh.owner.clone();
    let name = mesh.name.as_str();
    let data: MeshData = client
        .describe_mesh()
        .mesh_name(name)
        .set_mesh_owner(owner.clone())
        .send()
        .await
        .map_err(|e| aws("DescribeMesh", name, e))?
        .mesh
        .ok_or_else(|| ImportError::Missing(format!("mesh {name}")))?;
    let mut skipped = Vec::new();

    let nodes: Vec<VirtualNodeData> = import_kind(
        Kind {
            name: "virtual node",
            list: "ListVirtualNodes",
            scope: name,
            prefix: String::new(),
        },
        client
            .list_virtual_nodes()
            .mesh_name(name)
            .set_mesh_owner(owner.clone())
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>(),
        |i| i.virtual_node_name(),
        |node| {
            let req = client
                .describe_virtual_node()
                .mesh_name(name)
                .set_mesh_owner(owner.clone())
                .virtual_node_name(&node);
            async move {
                let out = req.send().await;
                Ok(out
                    .map_err(|e| aws("DescribeVirtualNode", &node, e))?
                    .virtual_node)
            }
        },
        |d: &VirtualNodeData| d.status().map(|s| s.status().as_str()),
        &mut skipped,
    )
    .await?;
    progress("virtual nodes", nodes.len());

    let services: Vec<VirtualServiceData> = import_kind(
        Kind {
            name: "virtual service",
            list: "ListVirtualServices",
            scope: name,
            prefix: String::new(),
        },
        client
            .list_virtual_services()
            .mesh_name(name)
            .set_mesh_owner(owner.clone())
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>(),
        |i| i.virtual_service_name(),
        |service| {
            let req = client
                .describe_virtual_service()
                .mesh_name(name)
                .set_mesh_owner(owner.clone())
                .virtual_service_name(&service);
            async move {
                let out = req.send().await;
                Ok(out
                    .map_err(|e| aws("DescribeVirtualService", &service, e))?
                    .virtual_service)
            }
        },
        |d: &VirtualServiceData| d.status().map(|s| s.status().as_str()),
        &mut skipped,
    )
    .await?;
    progress("virtual services", services.len());

    let router_data: Vec<VirtualRouterData> = import_kind(
        Kind {
            name: "virtual router",
            list: "ListVirtualRouters",
            scope: name,
            prefix: String::new(),
        },
        client
            .list_virtual_routers()
            .mesh_name(name)
            .set_mesh_owner(owner.clone())
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>(),
        |i| i.virtual_router_name(),
        |router| {
            let req = client
                .describe_virtual_router()
                .mesh_name(name)
                .set_mesh_owner(owner.clone())
                .virtual_router_name(&router);
            async move {
                let out = req.send().await;
                Ok(out
                    .map_err(|e| aws("DescribeVirtualRouter", &router, e))?
                    .virtual_router)
            }
        },
        |d: &VirtualRouterData| d.status().map(|s| s.status().as_str()),
        &mut skipped,
    )
    .await?;
    let mut routers = Vec::with_capacity(router_data.len());
    for router in router_data {
        let router_name = router.virtual_router_name().to_string();
        let routes: Vec<RouteData> = import_kind(
            Kind {
                name: "route",
                list: "ListRoutes",
                scope: &router_name,
                prefix: format!("{router_name}/"),
            },
            client
                .list_routes()
                .mesh_name(name)
                .set_mesh_owner(owner.clone())
                .virtual_router_name(&router_name)
                .into_paginator()
                .items()
                .send()
                .collect::<Result<Vec<_>, _>>(),
            |i| i.route_name(),
            |route| {
                let req = client
                    .describe_route()
                    .mesh_name(name)
                    .set_mesh_owner(owner.clone())
                    .virtual_router_name(&router_name)
                    .route_name(&route);
                async move {
                    let out = req.send().await;
                    Ok(out.map_err(|e| aws("DescribeRoute", &route, e))?.route)
                }
            },
            |d: &RouteData| d.status().map(|s| s.status().as_str()),
            &mut skipped,
        )
        .await?;
        routers.push((router, routes));
    }
    progress("virtual routers", routers.len());
    progress("routes", routers.iter().map(|(_, r)| r.len()).sum());

    let gateway_data: Vec<VirtualGatewayData> = import_kind(
        Kind {
            name: "virtual gateway",
            list: "ListVirtualGateways",
            scope: name,
            prefix: String::new(),
        },
        client
            .list_virtual_gateways()
            .mesh_name(name)
            .set_mesh_owner(owner.clone())
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>(),
        |i| i.virtual_gateway_name(),
        |gateway| {
            let req = client
                .describe_virtual_gateway()
                .mesh_name(name)
                .set_mesh_owner(owner.clone())
                .virtual_gateway_name(&gateway);
            async move {
                let out = req.send().await;
                Ok(out
                    .map_err(|e| aws("DescribeVirtualGateway", &gateway, e))?
                    .virtual_gateway)
            }
        },
        |d: &VirtualGatewayData| d.status().map(|s| s.status().as_str()),
        &mut skipped,
    )
    .await?;
    let mut gateways = Vec::with_capacity(gateway_data.len());
    for gateway in gateway_data {
        let gateway_name = gateway.virtual_gateway_name().to_string();
        let routes: Vec<GatewayRouteData> = import_kind(
            Kind {
                name: "gateway route",
                list: "ListGatewayRoutes",
                scope: &gateway_name,
                prefix: format!("{gateway_name}/"),
            },
            client
                .list_gateway_routes()
                .mesh_name(name)
                .set_mesh_owner(owner.clone())
                .virtual_gateway_name(&gateway_name)
                .into_paginator()
                .items()
                .send()
                .collect::<Result<Vec<_>, _>>(),
            |i| i.gateway_route_name(),
            |route| {
                let req = client
                    .describe_gateway_route()
                    .mesh_name(name)
                    .set_mesh_owner(owner.clone())
                    .virtual_gateway_name(&gateway_name)
                    .gateway_route_name(&route);
                async move {
                    let out = req.send().await;
                    Ok(out
                        .map_err(|e| aws("DescribeGatewayRoute", &route, e))?
                        .gateway_route)
                }
            },
            |d: &GatewayRouteData| d.status().map(|s| s.status().as_str()),
            &mut skipped,
        )
        .await?;
        gateways.push((gateway, routes));
    }
    progress("virtual gateways", gateways.len());
    progress(
        "gateway routes",
        gateways.iter().map(|(_, r)| r.len()).sum(),
    );

    Ok(Mesh {
        data,
        nodes,
        services,
        routers,
        gateways,
        skipped,
    })
}
