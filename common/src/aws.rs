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

/// An AWS SDK error in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorText {
    /// The service's error code, e.g. `ThrottlingException` (none for transport problems).
    pub code: Option<String>,
    /// `CODE: message`, or the transport problem with its causes.
    pub text: String,
}

impl ErrorText {
    /// Whether AWS throttled the call.
    pub fn throttled(&self) -> bool {
        const CODES: &[&str] = &[
            "Throttling",
            "ThrottlingException",
            "ThrottledException",
            "TooManyRequestsException",
            "RequestLimitExceeded",
            "RequestThrottled",
            "RequestThrottledException",
            "ProvisionedThroughputExceededException",
            "SlowDown",
        ];
        self.code.as_deref().is_some_and(|c| CODES.contains(&c))
    }
}

/// Describes an SDK error: the service's code and message, or the transport problem.
pub fn error_text<E, R>(e: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> ErrorText
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_smithy_runtime_api::client::result::SdkError;
    match e {
        SdkError::ServiceError(s) => {
            let inner = s.err();
            let code = inner.code().map(str::to_string);
            let text = match (inner.code(), inner.message()) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.to_string(),
                _ => inner.to_string(),
            };
            ErrorText { code, text }
        }
        other => ErrorText {
            code: None,
            text: error_chain(other),
        },
    }
}

/// An error and its sources, `outer: inner: innermost` (SDK errors often say little until their
/// sources are read).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}
