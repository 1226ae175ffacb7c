//! ECS: the running tasks of a service. One `ListTasks` pass (paginated) and `DescribeTasks` in
//! batches of 100 per poll; task definitions are cached (they are immutable): one
//! `DescribeTaskDefinition` per revision, ever.
//!
//! Each endpoint carries its task's `availabilityZone`, for zone-aware upstreams.
//!
//! A task is an endpoint while it runs and is not UNHEALTHY. When its task definition gives an
//! essential container a health check (`healthCheck`), the task must also be HEALTHY: during its
//! start period ECS reports UNKNOWN, and a task that is still starting must get no traffic. ECS
//! reports UNKNOWN for ever for tasks without health checks (a non-essential container's check
//! does not count towards the task's health), so those are endpoints while UNKNOWN.

use std::collections::HashMap;

use aws_sdk_ecs::types::{HealthStatus, Task};

use super::aws::{Calls, classify};
use super::{DiscoveryError, Source};
use crate::catalog::{EcsSource, Endpoint, Zone};

/// Polls one ECS service.
pub struct EcsPoller {
    client: aws_sdk_ecs::Client,
    source: EcsSource,
    default_port: Option<u16>,
    calls: Calls,
    /// Task definition ARN → what the poller needs of it.
    definitions: HashMap<String, Definition>,
}

/// What a task definition says about its tasks as endpoints.
#[derive(Debug, Clone, Copy)]
struct Definition {
    /// The container port it declares (None: it declares none).
    port: Option<u16>,
    /// Whether an essential container has a health check: its tasks are ready only once HEALTHY.
    health_checked: bool,
}

impl EcsPoller {
    /// A poller; `default_port` is the upstream's `port`, used when neither `port` nor the task
    /// definition gives one.
    pub fn new(
        client: aws_sdk_ecs::Client,
        source: EcsSource,
        default_port: Option<u16>,
        calls: Calls,
    ) -> Self {
        Self {
            client,
            source,
            default_port,
            calls,
            definitions: HashMap::new(),
        }
    }

    /// What the (cached) task definition of a task says; `None` for a task without one.
    async fn definition(&mut self, task: &Task) -> Result<Option<Definition>, DiscoveryError> {
        let Some(arn) = task.task_definition_arn() else {
            return Ok(None);
        };
        if let Some(d) = self.definitions.get(arn) {
            return Ok(Some(*d));
        }
        self.calls.call("DescribeTaskDefinition").await;
        let resp = self
            .client
            .describe_task_definition()
            .task_definition(arn)
            .send()
            .await
            .map_err(|e| classify("DescribeTaskDefinition", e))?;
        let containers = resp
            .task_definition()
            .map(|d| d.container_definitions())
            .unwrap_or_default();
        let port = match &self.source.container {
            Some(name) => containers.iter().find(|c| c.name() == Some(name.as_str())),
            None => containers.iter().find(|c| !c.port_mappings().is_empty()),
        }
        .and_then(|c| c.port_mappings().first()?.container_port())
        .and_then(|p| u16::try_from(p).ok());
        // Containers are essential unless they say otherwise.
        let health_checked = containers
            .iter()
            .any(|c| c.health_check().is_some() && c.essential() != Some(false));
        let d = Definition {
            port,
            health_checked,
        };
        self.definitions.insert(arn.to_string(), d);
        Ok(Some(d))
    }

    /// Whether a running task may get traffic, and its port (from the catalog, else its task
    /// definition, else the upstream's); the task definition is asked only when needed.
    async fn readiness(&mut self, task: &Task) -> Result<(bool, Option<u16>), DiscoveryError> {
        let catalog_port = self.source.port.and_then(|p| u16::try_from(p).ok());
        let health = task.health_status();
        if health == Some(&HealthStatus::Unhealthy) {
            return Ok((false, None));
        }
        let healthy = health == Some(&HealthStatus::Healthy);
        if healthy && catalog_port.is_some() {
            return Ok((true, catalog_port));
        }
        let def = self.definition(task).await?;
        let ready = ready(health, def);
        let port = catalog_port
            .or(def.and_then(|d| d.port))
            .or(self.default_port);
        Ok((ready, port))
    }
}

/// Whether a running task whose health ECS reports as `health` may get traffic: not when
/// UNHEALTHY; when its definition has a health check, only once HEALTHY.
fn ready(health: Option<&HealthStatus>, def: Option<Definition>) -> bool {
    match health {
        Some(HealthStatus::Healthy) => true,
        Some(HealthStatus::Unhealthy) => false,
        _ => !def.is_some_and(|d| d.health_checked),
    }
}

impl Source for EcsPoller {
    async fn fetch(&mut self) -> Result<Option<Vec<Endpoint>>, DiscoveryError> {
        let cluster = self.source.cluster.clone();
        let service = self.source.service.clone();
        let arns = common::ecs::running_task_arns(&self.client, &cluster, Some(&service), || {
            self.calls.call("ListTasks")
        })
        .await
        .map_err(|e| classify("ListTasks", e))?;
        let mut tasks = Vec::new();
        for batch in arns.chunks(100) {
            self.calls.call("DescribeTasks").await;
            let resp = self
                .client
                .describe_tasks()
                .cluster(&cluster)
                .set_tasks(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| classify("DescribeTasks", e))?;
            tasks.extend(resp.tasks().iter().cloned());
        }
        let group = format!("service:{service}");
        let mut endpoints = Vec::new();
        for task in &tasks {
            // Tasks a service started carry its name as their group.
            let ours = task.group().is_none_or(|g| g == group);
            let running = task.last_status() == Some("RUNNING");
            if !ours || !running {
                continue;
            }
            let Some(ip) = common::ecs::eni_address(task).and_then(|a| a.parse().ok()) else {
                tracing::warn!(
                    task = task.task_arn().unwrap_or_default(),
                    "task without an ENI address (not awsvpc?); left out"
                );
                continue;
            };
            match self.readiness(task).await? {
                (false, _) => {}
                (true, Some(port)) => endpoints.push(Endpoint {
                    ip,
                    port,
                    zone: task
                        .availability_zone()
                        .filter(|z| !z.is_empty())
                        .map(Zone::new),
                }),
                (true, None) => tracing::warn!(
                    task = task.task_arn().unwrap_or_default(),
                    "no port: set `port` in the catalog"
                ),
            }
        }
        Ok(Some(endpoints))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_health_checked_task_is_ready_only_once_healthy() {
        let checked = Some(Definition {
            port: Some(80),
            health_checked: true,
        });
        let unchecked = Some(Definition {
            port: Some(80),
            health_checked: false,
        });
        let (healthy, unhealthy, unknown) = (
            Some(&HealthStatus::Healthy),
            Some(&HealthStatus::Unhealthy),
            Some(&HealthStatus::UnknownValue),
        );
        // In its start period ECS says UNKNOWN: not yet.
        assert!(!ready(unknown, checked));
        assert!(ready(healthy, checked));
        assert!(!ready(unhealthy, checked));
        // Without a health check ECS says UNKNOWN for ever: ready, as before.
        assert!(ready(unknown, unchecked));
        assert!(ready(None, unchecked));
        assert!(!ready(unhealthy, unchecked));
        // A task without a task definition ARN.
        assert!(ready(unknown, None));
    }
}
