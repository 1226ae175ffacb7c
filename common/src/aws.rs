//! AWS configuration the standard way: the default credential chain (an ECS task role, a
//! profile, environment variables), the region from the environment or profile (us-east-1 when
//! none is set), and the standard `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` variables,
//! which is also how tests point the tools at an emulator.

use aws_config::meta::region::RegionProviderChain;
use aws_config::{BehaviorVersion, SdkConfig};

/// The shared SDK configuration for every AWS client of a process.
pub async fn sdk_config() -> SdkConfig {
    let region = RegionProviderChain::default_provider().or_else("us-east-1");
    aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .load()
        .await
}

/// Whether an endpoint override is set for `service` (e.g. `S3`) or for all services.
pub fn custom_endpoint(service: &str) -> bool {
    [
        format!("AWS_ENDPOINT_URL_{service}"),
        "AWS_ENDPOINT_URL".to_string(),
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}
