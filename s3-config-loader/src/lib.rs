//! s3-config-loader: fetches configuration objects from S3 to local files, keeps them fresh,
//! swaps them atomically and runs reload hooks.
//!
//! The binary is a thin layer over this library: [`sync::Syncer`] runs passes (list, conditional
//! GETs, templates, validation, atomic writes, deletes), [`run::run`] repeats them with jitter and
//! backoff and fires [`hooks::Hooks`] after changes. `xds-server` uses the same library to read
//! its catalog from S3.

pub mod error_kind;
pub mod generation;
pub mod hooks;
pub mod http;
pub mod location;
pub mod metrics;
pub mod paths;
pub mod run;
pub mod size;
pub mod state;
pub mod sync;
pub mod template;

pub use location::S3Location;

/// An S3 client configured from the environment; path-style addressing when an endpoint URL is
/// set, as emulators and most S3-compatible stores need.
pub async fn s3_client() -> aws_sdk_s3::Client {
    let shared = common::aws::sdk_config().await;
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(common::aws::custom_endpoint("S3"))
        .build();
    aws_sdk_s3::Client::from_conf(config)
}
