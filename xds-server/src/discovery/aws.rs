//! What the AWS-backed sources share: clients, a token bucket per kind of source, and the
//! classification of SDK errors (throttling gets exponential backoff).

use std::sync::Arc;
use std::time::Instant;

use common::rate::TokenBucket;

use aws_sdk_ecs::error::ProvideErrorMetadata;
use aws_sdk_ecs::error::SdkError;
use tokio::sync::OnceCell;

use super::DiscoveryError;

/// Requests per second, sustained, that all sources of one kind may make together. Well under
/// the AWS quotas (Cloud Map DiscoverInstances: 1,000/s; ECS ListTasks and DescribeTasks:
/// 20/s sustained, 100 burst), so that other clients of the account keep their share.
pub const CLOUD_MAP_RATE: f64 = 50.0;
/// See [`CLOUD_MAP_RATE`].
pub const ECS_RATE: f64 = 10.0;

/// A token bucket ([`common::rate::TokenBucket`]): `acquire` waits until a request may be made.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    bucket: std::sync::Mutex<TokenBucket>,
}

impl RateLimiter {
    /// `rate` requests per second, up to `burst` at once.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst,
            bucket: std::sync::Mutex::new(TokenBucket::full(burst, Instant::now())),
        }
    }

    fn bucket(&self) -> std::sync::MutexGuard<'_, TokenBucket> {
        self.bucket.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one token, waiting for it if the bucket is empty. A wait that is cancelled (a poll
    /// that timed out) gives its token back: otherwise abandoned waits would pile up a debt
    /// that no later poll could finish within its timeout.
    pub async fn acquire(&self) {
        let wait = self
            .bucket()
            .take_in_turn(self.rate, self.burst, Instant::now());
        if !wait.is_zero() {
            let mut refund = Refund(Some(self));
            tokio::time::sleep(wait).await;
            refund.0 = None;
        }
    }
}

/// Gives a token back unless disarmed: see [`RateLimiter::acquire`].
struct Refund<'a>(Option<&'a RateLimiter>);

impl Drop for Refund<'_> {
    fn drop(&mut self) {
        if let Some(limiter) = self.0 {
            limiter.bucket().give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_wait_gives_its_token_back() {
        let limiter = RateLimiter::new(1.0, 1.0);
        limiter.acquire().await; // the burst
        // Ten waits abandoned by a timeout leave no debt behind.
        for _ in 0..10 {
            let _ = tokio::time::timeout(Duration::from_millis(10), limiter.acquire()).await;
        }
        let started = tokio::time::Instant::now();
        limiter.acquire().await;
        assert!(
            started.elapsed() <= Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
}

/// How a source makes its API calls: each waits for the rate limiter of its kind of source and
/// is counted in `xds_discovery_requests_total`.
pub struct Calls {
    kind: &'static str,
    limiter: Arc<RateLimiter>,
    metrics: crate::metrics::Metrics,
}

impl Calls {
    /// Calls of sources of `kind` (`cloud_map`, `ecs`), limited by `limiter`.
    pub fn new(
        kind: &'static str,
        limiter: Arc<RateLimiter>,
        metrics: crate::metrics::Metrics,
    ) -> Self {
        Self {
            kind,
            limiter,
            metrics,
        }
    }

    /// Waits until `operation` may be called, and counts it.
    pub async fn call(&self, operation: &str) {
        self.limiter.acquire().await;
        self.metrics
            .discovery_requests
            .with_label_values(&[self.kind, operation])
            .inc();
    }
}

/// AWS clients, created on first use (a catalog without AWS sources never loads credentials).
#[derive(Default)]
pub struct Clients {
    config: OnceCell<aws_config::SdkConfig>,
    /// Shared by every Cloud Map source.
    pub cloud_map_limit: Arc<RateLimiterCell>,
    /// Shared by every ECS source.
    pub ecs_limit: Arc<RateLimiterCell>,
}

/// A rate limiter created on first use.
#[derive(Default)]
pub struct RateLimiterCell(std::sync::OnceLock<Arc<RateLimiter>>);

impl RateLimiterCell {
    /// The limiter, created with `rate` (burst: one second's worth) on first use.
    pub fn get(&self, rate: f64) -> Arc<RateLimiter> {
        self.0
            .get_or_init(|| Arc::new(RateLimiter::new(rate, rate)))
            .clone()
    }
}

impl Clients {
    async fn config(&self) -> &aws_config::SdkConfig {
        self.config.get_or_init(common::aws::sdk_config).await
    }

    /// A Cloud Map client.
    pub async fn cloud_map(&self) -> aws_sdk_servicediscovery::Client {
        aws_sdk_servicediscovery::Client::new(self.config().await)
    }

    /// An ECS client.
    pub async fn ecs(&self) -> aws_sdk_ecs::Client {
        aws_sdk_ecs::Client::new(self.config().await)
    }
}

/// An SDK error as a discovery error: its service code and message, or the transport problem.
pub fn classify<E, R>(operation: &'static str, e: SdkError<E, R>) -> DiscoveryError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    DiscoveryError::Aws(common::aws::ApiError::new(operation, &e))
}
