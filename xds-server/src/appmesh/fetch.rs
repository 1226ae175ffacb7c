//! Reading a mesh through the App Mesh API: every resource of each kind, listed page by page
//! and then described (a list names resources; only a description carries the spec).

use aws_sdk_appmesh::Client;
use aws_sdk_appmesh::error::{DisplayErrorContext, SdkError};
use aws_sdk_appmesh::types::{
    GatewayRouteData, MeshData, RouteData, VirtualGatewayData, VirtualNodeData, VirtualRouterData,
    VirtualServiceData,
};

use super::{ImportError, Mesh};

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

/// Whether a resource's status says it is in use (DELETED and INACTIVE ones are left out).
fn active(status: Option<&str>) -> bool {
    status == Some("ACTIVE")
}

/// Prints one line of progress on stderr: a mesh can have hundreds of routes.
fn progress(kind: &str, n: usize) {
    eprintln!("{kind}: {n} described");
}

/// Reads every ACTIVE virtual node, virtual service, virtual router (with its routes) and
/// virtual gateway (with its gateway routes) of the mesh.
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

    let mut nodes: Vec<VirtualNodeData> = Vec::new();
    let mut pages = client
        .list_virtual_nodes()
        .mesh_name(name)
        .set_mesh_owner(owner.clone())
        .into_paginator()
        .items()
        .send();
    while let Some(item) = pages.next().await {
        let item = item.map_err(|e| aws("ListVirtualNodes", name, e))?;
        let out = client
            .describe_virtual_node()
            .mesh_name(name)
            .set_mesh_owner(owner.clone())
            .virtual_node_name(item.virtual_node_name())
            .send()
            .await
            .map_err(|e| aws("DescribeVirtualNode", item.virtual_node_name(), e))?;
        if let Some(d) = out.virtual_node
            && active(d.status().map(|s| s.status().as_str()))
        {
            nodes.push(d);
        }
    }
    progress("virtual nodes", nodes.len());

    let mut services: Vec<VirtualServiceData> = Vec::new();
    let mut pages = client
        .list_virtual_services()
        .mesh_name(name)
        .set_mesh_owner(owner.clone())
        .into_paginator()
        .items()
        .send();
    while let Some(item) = pages.next().await {
        let item = item.map_err(|e| aws("ListVirtualServices", name, e))?;
        let out = client
            .describe_virtual_service()
            .mesh_name(name)
            .set_mesh_owner(owner.clone())
            .virtual_service_name(item.virtual_service_name())
            .send()
            .await
            .map_err(|e| aws("DescribeVirtualService", item.virtual_service_name(), e))?;
        if let Some(d) = out.virtual_service
            && active(d.status().map(|s| s.status().as_str()))
        {
            services.push(d);
        }
    }
    progress("virtual services", services.len());

    let mut routers: Vec<(VirtualRouterData, Vec<RouteData>)> = Vec::new();
    let mut route_count = 0;
    let mut pages = client
        .list_virtual_routers()
        .mesh_name(name)
        .set_mesh_owner(owner.clone())
        .into_paginator()
        .items()
        .send();
    while let Some(item) = pages.next().await {
        let item = item.map_err(|e| aws("ListVirtualRouters", name, e))?;
        let router_name = item.virtual_router_name();
        let out = client
            .describe_virtual_router()
            .mesh_name(name)
            .set_mesh_owner(owner.clone())
            .virtual_router_name(router_name)
            .send()
            .await
            .map_err(|e| aws("DescribeVirtualRouter", router_name, e))?;
        let Some(router) = out.virtual_router else {
            continue;
        };
        if !active(router.status().map(|s| s.status().as_str())) {
            continue;
        }
        let mut routes = Vec::new();
        let mut route_pages = client
            .list_routes()
            .mesh_name(name)
            .set_mesh_owner(owner.clone())
            .virtual_router_name(router_name)
            .into_paginator()
            .items()
            .send();
        while let Some(r) = route_pages.next().await {
            let r = r.map_err(|e| aws("ListRoutes", router_name, e))?;
            let out = client
                .describe_route()
                .mesh_name(name)
                .set_mesh_owner(owner.clone())
                .virtual_router_name(router_name)
                .route_name(r.route_name())
                .send()
                .await
                .map_err(|e| aws("DescribeRoute", r.route_name(), e))?;
            if let Some(d) = out.route
                && active(d.status().map(|s| s.status().as_str()))
            {
                routes.push(d);
            }
        }
        route_count += routes.len();
        routers.push((router, routes));
    }
    progress("virtual routers", routers.len());
    progress("routes", route_count);

    let mut gateways: Vec<(VirtualGatewayData, Vec<GatewayRouteData>)> = Vec::new();
    let mut gateway_route_count = 0;
    let mut pages = client
        .list_virtual_gateways()
        .mesh_name(name)
        .set_mesh_owner(owner.clone())
        .into_paginator()
        .items()
        .send();
    while let Some(item) = pages.next().await {
        let item = item.map_err(|e| aws("ListVirtualGateways", name, e))?;
        let gateway_name = item.virtual_gateway_name();
        let out = client
            .describe_virtual_gateway()
            .mesh_name(name)
            .set_mesh_owner(owner.clone())
            .virtual_gateway_name(gateway_name)
            .send()
            .await
            .map_err(|e| aws("DescribeVirtualGateway", gateway_name, e))?;
        let Some(gateway) = out.virtual_gateway else {
            continue;
        };
        if !active(gateway.status().map(|s| s.status().as_str())) {
            continue;
        }
        let mut routes = Vec::new();
        let mut route_pages = client
            .list_gateway_routes()
            .mesh_name(name)
            .set_mesh_owner(owner.clone())
            .virtual_gateway_name(gateway_name)
            .into_paginator()
            .items()
            .send();
        while let Some(r) = route_pages.next().await {
            let r = r.map_err(|e| aws("ListGatewayRoutes", gateway_name, e))?;
            let out = client
                .describe_gateway_route()
                .mesh_name(name)
                .set_mesh_owner(owner.clone())
                .virtual_gateway_name(gateway_name)
                .gateway_route_name(r.gateway_route_name())
                .send()
                .await
                .map_err(|e| aws("DescribeGatewayRoute", r.gateway_route_name(), e))?;
            if let Some(d) = out.gateway_route
                && active(d.status().map(|s| s.status().as_str()))
            {
                routes.push(d);
            }
        }
        gateway_route_count += routes.len();
        gateways.push((gateway, routes));
    }
    progress("virtual gateways", gateways.len());
    progress("gateway routes", gateway_route_count);

    Ok(Mesh {
        data,
        nodes,
        services,
        routers,
        gateways,
    })
}
