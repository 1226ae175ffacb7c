//! xds-server: a gRPC xDS control plane for fleets of generic Envoy proxies.

pub mod catalog;
pub mod translate;
