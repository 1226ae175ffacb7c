//! AWS configuration the standard way: the default credential chain (an ECS task role, a
//! profile, environment variables), the region from the environment or profile (us-east-1 when
//! none is set), and the standard `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` variables,
//! which is also how tests point the tools at an emulator.
//!
//! Every call has a deadline: a hung connection (a silently dropped NLB flow, a black-holed
//! endpoint) fails the call like any other error instead of stalling its caller forever.

use std::time::Duration;

use aws_config::meta::region::RegionProviderChain;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_types::timeout::TimeoutConfig;

/// How long one attempt of an API call may take, up to its response's headers (a streamed body,
/// such as an S3 object's, is read afterwards and is not bound by it). AWS answers the calls the
/// toolkit makes in well under a second.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a whole API call may take, its retries included (the SDK's standard retry mode makes
/// up to three attempts).
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(25);

/// The shared SDK configuration for every AWS client of a process: the SDK's defaults (a 3.1 s
/// connect timeout among them) plus [`ATTEMPT_TIMEOUT`] and [`OPERATION_TIMEOUT`].
pub async fn sdk_config() -> SdkConfig {
    let region = RegionProviderChain::default_provider().or_else("us-east-1");
    aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        )
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
        self.code.as_deref().is_some_and(throttling_code)
    }
}

/// Whether `code`, an AWS error code, says the caller was throttled (the codes differ from
/// service to service).
pub fn throttling_code(code: &str) -> bool {
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
    CODES.contains(&code)
}

/// A failed AWS API call, for a poller: which operation, what went wrong, and whether AWS
/// throttled it (the poller then backs off, see [`crate::backoff::Throttle`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The failing operation, e.g. `ListTasks`.
    pub operation: &'static str,
    /// The service's code and message, or the transport problem.
    pub message: String,
    /// Whether AWS throttled the call.
    pub throttled: bool,
}

impl ApiError {
    /// `operation` failed with the SDK error `e`.
    pub fn new<E, R>(
        operation: &'static str,
        e: &aws_smithy_runtime_api::client::result::SdkError<E, R>,
    ) -> Self
    where
        E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let text = error_text(e);
        Self {
            operation,
            throttled: text.throttled(),
            message: text.text,
        }
    }

    /// `operation` failed for a reason of the caller's own (not throttled).
    pub fn other(operation: &'static str, message: impl Into<String>) -> Self {
        Self {
            operation,
            message: message.into(),
            throttled: false,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.operation, self.message)
    }
}

impl std::error::Error for ApiError {}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_codes_of_every_service_count_and_others_do_not() {
        for code in [
            "ThrottlingException",
            "Throttling",
            "SlowDown",
            "RequestLimitExceeded",
        ] {
            assert!(throttling_code(code), "{code}");
        }
        for code in ["AccessDeniedException", "ClusterNotFoundException", ""] {
            assert!(!throttling_code(code), "{code}");
        }
        let e = ErrorText {
            code: Some("ThrottlingException".into()),
            text: "ThrottlingException: Rate exceeded".into(),
        };
        assert!(e.throttled());
        assert!(
            !ErrorText {
                code: None,
                text: "dispatch failure".into()
            }
            .throttled()
        );
    }

    #[test]
    fn an_api_error_names_its_operation() {
        let e = ApiError::other("refresh", "no answer within 30s");
        assert_eq!(e.to_string(), "refresh: no answer within 30s");
        assert!(!e.throttled);
    }
}
