//! xds-server: a gRPC xDS control plane for fleets of generic Envoy proxies.

pub mod acm;
pub mod admin;
pub mod appmesh;
pub mod bootstrap;
pub mod ca;
pub mod cache;
pub mod catalog;
pub mod check;
pub mod diff;
pub mod discovery;
pub mod envoy_validate;
pub mod identity;
pub mod last_good;
pub mod load;
pub mod metrics;
pub mod render;
pub mod secrets;
pub mod serve;
pub mod server;
pub mod status;
pub mod status_page;
pub mod tls;
pub mod translate;
