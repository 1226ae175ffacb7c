//! Cloud Map: the instances of a service, cheaply polled. With `health: all`,
//! `DiscoverInstancesRevision` is asked every poll and `DiscoverInstances` only when the revision
//! moved. With `health: healthy` (the default) `DiscoverInstances` is asked every poll: health
//! changes do not move the revision, so the revision cannot tell when to look.
//!
//! `health: healthy` means the healthy instances, or all of them while none is healthy
//! (`HEALTHY_OR_ELSE_ALL`): a health check that fails everywhere at once (a bad check path, a
//! shared dependency down) is more likely wrong than every instance, and sending no traffic at all
//! is the one certain outage. Envoy's panic routing makes the same choice for its own checks.

use std::collections::BTreeMap;

use aws_sdk_servicediscovery::types::{HealthStatusFilter, HttpInstanceSummary};

use super::aws::{Calls, classify};
use super::{DiscoveryError, Source};
use crate::catalog::{CloudMapSource, Endpoint, Zone};

/// Polls one Cloud Map service.
pub struct CloudMapPoller {
    client: aws_sdk_servicediscovery::Client,
    source: CloudMapSource,
    default_port: Option<u16>,
    calls: Calls,
    revision: Option<i64>,
    /// The last answer served all instances because none was healthy.
    all_unhealthy: bool,
}

impl CloudMapPoller {
    /// A poller; `default_port` is the upstream's `port`, for instances without `AWS_INSTANCE_PORT`.
    pub fn new(
        client: aws_sdk_servicediscovery::Client,
        source: CloudMapSource,
        default_port: Option<u16>,
        calls: Calls,
    ) -> Self {
        Self {
            client,
            source,
            default_port,
            calls,
            revision: None,
            all_unhealthy: false,
        }
    }

    /// `e`, naming the host the calls go to when it was not reached: the SDK sends them to
    /// `data-` + the endpoint's host, a name that must resolve too (with a local emulator, in
    /// /etc/hosts).
    fn unreached(&self, e: DiscoveryError) -> DiscoveryError {
        match e {
            DiscoveryError::Aws(mut e)
                if e.message.contains("dispatch failure") || e.message.contains("timeout") =>
            {
                let region = self.client.config().region().map(|r| r.to_string());
                let host = data_host(
                    endpoint_override().as_deref(),
                    region.as_deref().unwrap_or("us-east-1"),
                );
                e.message = format!(
                    "{} (the call goes to {host}, which must resolve and answer)",
                    e.message
                );
                DiscoveryError::Aws(e)
            }
            other => other,
        }
    }
}

/// The endpoint override for Cloud Map, as the SDK reads it.
fn endpoint_override() -> Option<String> {
    ["AWS_ENDPOINT_URL_SERVICEDISCOVERY", "AWS_ENDPOINT_URL"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
}

/// The host DiscoverInstances goes to: `data-` before the endpoint's host.
fn data_host(endpoint: Option<&str>, region: &str) -> String {
    match endpoint {
        Some(url) => {
            let rest = url.split_once("://").map_or(url, |(_, r)| r);
            let host = rest.split(['/', ':']).next().unwrap_or(rest);
            format!("data-{host}")
        }
        None => format!("data-servicediscovery.{region}.amazonaws.com"),
    }
}

impl Source for CloudMapPoller {
    async fn fetch(&mut self) -> Result<Option<Vec<Endpoint>>, DiscoveryError> {
        let s = &self.source;
        let health = match s.health.as_deref() {
            Some("all") => HealthStatusFilter::All,
            _ => HealthStatusFilter::HealthyOrElseAll,
        };
        let mut revision = None;
        if health == HealthStatusFilter::All {
            self.calls.call("DiscoverInstancesRevision").await;
            revision = self
                .client
                .discover_instances_revision()
                .namespace_name(&s.namespace)
                .service_name(&s.service)
                .send()
                .await
                .map_err(|e| self.unreached(classify("DiscoverInstancesRevision", e)))?
                .instances_revision();
            if self.revision.is_some() && self.revision == revision {
                return Ok(None);
            }
        }
        self.calls.call("DiscoverInstances").await;
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
            .map_err(|e| self.unreached(classify("DiscoverInstances", e)))?;
        let (serve, all_unhealthy) = select(resp.instances(), &s.attributes, &health);
        self.all_unhealthy = all_unhealthy;
        let mut endpoints = Vec::new();
        for inst in serve {
            let attrs = inst.attributes().cloned().unwrap_or_default();
            let ip = attrs
                .get("AWS_INSTANCE_IPV4")
                .and_then(|ip| ip.parse().ok());
            let port = attrs
                .get("AWS_INSTANCE_PORT")
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|p| *p != 0)
                .or(self.default_port);
            match (ip, port) {
                (Some(ip), Some(port)) => endpoints.push(Endpoint {
                    ip,
                    port,
                    // What ECS service discovery registers for a task (`AVAILABILITY_ZONE`).
                    zone: attrs
                        .get("AVAILABILITY_ZONE")
                        .filter(|z| !z.is_empty())
                        .map(|z| Zone::new(z)),
                }),
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

    fn all_unhealthy(&self) -> bool {
        self.all_unhealthy
    }
}

/// The instances to serve: those carrying every wanted attribute, and of them the healthy ones, or
/// all of them while none is healthy (`HealthyOrElseAll`; with `All`, all of them). The second
/// value says that none was healthy. The API is asked with the same filters; they are applied here
/// again because not every implementation honours them (and an answer is judged as a whole).
fn select<'a>(
    instances: &'a [HttpInstanceSummary],
    attributes: &BTreeMap<String, String>,
    health: &HealthStatusFilter,
) -> (Vec<&'a HttpInstanceSummary>, bool) {
    let matching: Vec<&HttpInstanceSummary> = instances
        .iter()
        .filter(|inst| {
            inst.attributes()
                .is_some_and(|a| attributes.iter().all(|(k, v)| a.get(k) == Some(v)))
        })
        .collect();
    if *health == HealthStatusFilter::All {
        return (matching, false);
    }
    // No status: the service has no health checks, so every instance counts as healthy.
    let healthy =
        |inst: &&HttpInstanceSummary| inst.health_status().is_none_or(|h| h.as_str() == "HEALTHY");
    if matching.is_empty() || matching.iter().any(healthy) {
        (matching.into_iter().filter(healthy).collect(), false)
    } else {
        (matching, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_servicediscovery::types::HealthStatus;

    #[test]
    fn the_data_host_is_the_endpoints_with_data_before_it() {
        assert_eq!(
            data_host(Some("http://moto.test:5000"), "eu-west-1"),
            "data-moto.test"
        );
        assert_eq!(
            data_host(Some("https://servicediscovery.example/"), "eu-west-1"),
            "data-servicediscovery.example"
        );
        assert_eq!(
            data_host(None, "eu-west-1"),
            "data-servicediscovery.eu-west-1.amazonaws.com"
        );
    }

    fn instance(id: &str, health: Option<HealthStatus>, stage: &str) -> HttpInstanceSummary {
        HttpInstanceSummary::builder()
            .instance_id(id)
            .set_health_status(health)
            .attributes("stage", stage)
            .build()
    }

    fn ids(selected: &[&HttpInstanceSummary]) -> Vec<String> {
        selected
            .iter()
            .map(|i| i.instance_id().unwrap_or_default().to_string())
            .collect()
    }

    #[test]
    fn healthy_or_else_all() {
        let green = BTreeMap::from([("stage".to_string(), "green".to_string())]);
        let filter = HealthStatusFilter::HealthyOrElseAll;
        let mixed = [
            instance("a", Some(HealthStatus::Healthy), "green"),
            instance("b", Some(HealthStatus::Unhealthy), "green"),
            instance("c", Some(HealthStatus::Healthy), "blue"),
        ];
        // Some healthy: only those, of the wanted attributes.
        let (sel, none_healthy) = select(&mixed, &green, &filter);
        assert_eq!((ids(&sel), none_healthy), (vec!["a".to_string()], false));
        // None healthy among the matching ones (a healthy one elsewhere does not count): all.
        let down = [
            instance("a", Some(HealthStatus::Unhealthy), "green"),
            instance("b", Some(HealthStatus::UnknownValue), "green"),
            instance("c", Some(HealthStatus::Healthy), "blue"),
        ];
        let (sel, none_healthy) = select(&down, &green, &filter);
        assert_eq!(
            (ids(&sel), none_healthy),
            (vec!["a".into(), "b".into()], true)
        );
        // Without health checks there is no status: all healthy.
        let unchecked = [instance("a", None, "green")];
        let (sel, none_healthy) = select(&unchecked, &green, &filter);
        assert_eq!((ids(&sel), none_healthy), (vec!["a".to_string()], false));
        // Nothing there: nothing served, and nothing to report.
        assert_eq!(select(&[], &green, &filter), (vec![], false));
        // `health: all` serves the unhealthy ones without calling it a fallback.
        let (sel, none_healthy) = select(&down, &green, &HealthStatusFilter::All);
        assert_eq!((sel.len(), none_healthy), (2, false));
    }
}
