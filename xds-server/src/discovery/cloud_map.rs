//! Cloud Map: the instances of a service, cheaply polled. With `health: all`,
//! `DiscoverInstancesRevision` is asked every poll and `DiscoverInstances` only when the revision
//! moved. With `health: healthy` (the default) `DiscoverInstances` is asked every poll: health
//! changes do not move the revision, so the revision cannot tell when to look.

use std::sync::Arc;

use aws_sdk_servicediscovery::types::HealthStatusFilter;

use super::aws::{RateLimiter, classify};
use super::{DiscoveryError, Source};
use crate::catalog::{CloudMapSource, Endpoint};
use crate::metrics::Metrics;

/// Polls one Cloud Map service.
pub struct CloudMapPoller {
    client: aws_sdk_servicediscovery::Client,
    source: CloudMapSource,
    default_port: Option<u16>,
    limiter: Arc<RateLimiter>,
    metrics: Metrics,
    revision: Option<i64>,
}

impl CloudMapPoller {
    /// A poller; `default_port` is the upstream's `port`, for instances without `AWS_INSTANCE_PORT`.
    pub fn new(
        client: aws_sdk_servicediscovery::Client,
        source: CloudMapSource,
        default_port: Option<u16>,
        limiter: Arc<RateLimiter>,
        metrics: Metrics,
    ) -> Self {
        Self {
            client,
            source,
            default_port,
            limiter,
            metrics,
            revision: None,
        }
    }

    fn count(&self, operation: &str) {
        self.metrics
            .discovery_requests
            .with_label_values(&["cloud_map", operation])
            .inc();
    }
}

impl Source for CloudMapPoller {
    async fn fetch(&mut self) -> Result<Option<Vec<Endpoint>>, DiscoveryError> {
        let s = &self.source;
        let health = match s.health.as_deref() {
            Some("all") => HealthStatusFilter::All,
            _ => HealthStatusFilter::Healthy,
        };
        let mut revision = None;
        if health == HealthStatusFilter::All {
            self.limiter.acquire().await;
            self.count("DiscoverInstancesRevision");
            revision = self
                .client
                .discover_instances_revision()
                .namespace_name(&s.namespace)
                .service_name(&s.service)
                .send()
                .await
                .map_err(|e| classify("DiscoverInstancesRevision", e))?
                .instances_revision();
            if self.revision.is_some() && self.revision == revision {
                return Ok(None);
            }
        }
        self.limiter.acquire().await;
        self.count("DiscoverInstances");
        let resp = self
            .client
            .discover_instances()
            .namespace_name(&s.namespace)
            .service_name(&s.service)
            .health_status(health.clone())
            .set_query_parameters(
                (!s.attributes.is_empty()).then(|| s.attributes.clone().into_iter().collect()),
            )
            .max_results(1000)
            .send()
            .await
            .map_err(|e| classify("DiscoverInstances", e))?;
        let mut endpoints = Vec::new();
        for inst in resp.instances() {
            let attrs = inst.attributes();
            // The filter is applied here too: not every implementation of the API honours it.
            let matches =
                attrs.is_some_and(|a| s.attributes.iter().all(|(k, v)| a.get(k) == Some(v)));
            let healthy = health == HealthStatusFilter::All
                || inst.health_status().is_none_or(|h| h.as_str() == "HEALTHY");
            if !matches || !healthy {
                continue;
            }
            let attrs = attrs.cloned().unwrap_or_default();
            let ip = attrs
                .get("AWS_INSTANCE_IPV4")
                .and_then(|ip| ip.parse().ok());
            let port = attrs
                .get("AWS_INSTANCE_PORT")
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|p| *p != 0)
                .or(self.default_port);
            match (ip, port) {
                (Some(ip), Some(port)) => endpoints.push(Endpoint { ip, port }),
                _ => tracing::warn!(
                    service = %s.service,
                    instance = inst.instance_id().unwrap_or_default(),
                    "instance without an IPv4 address or a port (AWS_INSTANCE_PORT or the upstream's port); left out"
                ),
            }
        }
        self.revision = revision.or(Some(resp.instances_revision().unwrap_or_default()));
        Ok(Some(endpoints))
    }
}
