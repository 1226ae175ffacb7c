//! Regenerates `descriptors/envoy.bin`, the protobuf descriptors that `render` and
//! `/debug/config` use to print resources as JSON.
//!
//! Input: the full descriptor set that the envoy-types crate ships (`src/generated/types.bin`);
//! output: only the files the resources xds-server emits need, without source comments.
//! `scripts/update-envoy-descriptors.sh` finds the input and runs this.

use std::collections::BTreeSet;

use prost::Message;
use prost_reflect::DescriptorPool;
use prost_reflect::prost_types::FileDescriptorSet;

/// The messages xds-server packs into resources (keep in step with `translate`).
const ROOTS: &[&str] = &[
    "envoy.config.cluster.v3.Cluster",
    "envoy.config.endpoint.v3.ClusterLoadAssignment",
    "envoy.config.listener.v3.Listener",
    "envoy.config.route.v3.RouteConfiguration",
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
    "envoy.extensions.filters.http.router.v3.Router",
    "envoy.extensions.filters.http.cors.v3.Cors",
    "envoy.extensions.filters.http.cors.v3.CorsPolicy",
    "envoy.extensions.filters.http.grpc_web.v3.GrpcWeb",
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate",
    "envoy.extensions.transport_sockets.tls.v3.Secret",
    "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
    "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
    "envoy.extensions.filters.network.rbac.v3.RBAC",
    "envoy.extensions.rbac.principals.mtls_authenticated.v3.Config",
    "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
    "envoy.extensions.filters.listener.original_dst.v3.OriginalDst",
    "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
    "envoy.extensions.access_loggers.file.v3.FileAccessLog",
    "envoy.extensions.filters.http.fault.v3.HTTPFault",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, output] = &args[..] else {
        return Err("usage: trim_descriptors FULL_DESCRIPTOR_SET OUTPUT".into());
    };
    let pool = DescriptorPool::decode(std::fs::read(input)?.as_slice())?;
    let mut wanted = BTreeSet::new();
    let mut stack: Vec<String> = Vec::new();
    for root in ROOTS {
        let msg = pool
            .get_message_by_name(root)
            .ok_or_else(|| format!("{root} is not in {input}"))?;
        stack.push(msg.parent_file().name().to_string());
    }
    while let Some(name) = stack.pop() {
        if !wanted.insert(name.clone()) {
            continue;
        }
        let file = pool
            .get_file_by_name(&name)
            .ok_or_else(|| format!("missing {name}"))?;
        stack.extend(file.dependencies().map(|d| d.name().to_string()));
    }
    // Dependencies before dependents, as a descriptor set must list them.
    let file: Vec<_> = pool
        .files()
        .filter(|f| wanted.contains(f.name()))
        .map(|f| {
            let mut proto = f.file_descriptor_proto().clone();
            proto.source_code_info = None;
            proto
        })
        .collect();
    let count = file.len();
    let bytes = FileDescriptorSet { file }.encode_to_vec();
    std::fs::write(output, &bytes)?;
    eprintln!("wrote {output}: {count} files, {} bytes", bytes.len());
    Ok(())
}
