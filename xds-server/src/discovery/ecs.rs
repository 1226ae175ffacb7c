//! ECS: the running tasks of a service. One `ListTasks` pass (paginated) and `DescribeTasks` in
//! batches of 100 per poll; task definitions are cached (they are immutable).

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_ecs::types::{DesiredStatus, HealthStatus, Task};

use super::aws::{RateLimiter, classify};
use super::{DiscoveryError, Source};
use crate::catalog::{EcsSource, Endpoint};
use crate::metrics::Metrics;

/// Polls one ECS service.
pub struct EcsPoller {
    client: aws_sdk_ecs::Client,
    source: EcsSource,
    default_port: Option<u16>,
    limiter: Arc<RateLimiter>,
    metrics: Metrics,
    /// Task definition ARN → the container port it declares (None: it declares none).
    ports: HashMap<String, Option<u16>>,
}

impl EcsPoller {
    /// A poller; `default_port` is the upstream's `port`, used when neither `port` nor the task
    /// definition gives one.
    pub fn new(
        client: aws_sdk_ecs::Client,
        source: EcsSource,
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
            ports: HashMap::new(),
        }
    }

    async fn call(&self, operation: &str) {
        self.limiter.acquire().await;
        self.metrics
            .discovery_requests
            .with_label_values(&["ecs", operation])
            .inc();
    }

    /// The container port of a task, from the catalog or its (cached) task definition.
    async fn port_of(&mut self, task: &Task) -> Result<Option<u16>, DiscoveryError> {
        if let Some(p) = self.source.port.and_then(|p| u16::try_from(p).ok()) {
            return Ok(Some(p));
        }
        let Some(arn) = task.task_definition_arn() else {
            return Ok(self.default_port);
        };
        if !self.ports.contains_key(arn) {
            self.call("DescribeTaskDefinition").await;
            let def = self
                .client
                .describe_task_definition()
                .task_definition(arn)
                .send()
                .await
                .map_err(|e| classify("DescribeTaskDefinition", e))?;
            let port = def.task_definition().and_then(|d| {
                let containers = d.container_definitions();
                let c = match &self.source.container {
                    Some(name) => containers.iter().find(|c| c.name() == Some(name.as_str())),
                    None => containers.iter().find(|c| !c.port_mappings().is_empty()),
                }?;
                c.port_mappings()
                    .first()?
                    .container_port()
                    .and_then(|p| u16::try_from(p).ok())
            });
            self.ports.insert(arn.to_string(), port);
        }
        Ok(self.ports[arn].or(self.default_port))
    }
}

/// The task's private IPv4 address: awsvpc tasks have it on their ENI attachment.
fn task_ip(task: &Task) -> Option<std::net::IpAddr> {
    task.attachments()
        .iter()
        .filter(|a| a.r#type() == Some("ElasticNetworkInterface"))
        .flat_map(|a| a.details())
        .find(|d| d.name() == Some("privateIPv4Address"))
        .and_then(|d| d.value()?.parse().ok())
}

impl Source for EcsPoller {
    async fn fetch(&mut self) -> Result<Option<Vec<Endpoint>>, DiscoveryError> {
        let cluster = self.source.cluster.clone();
        let service = self.source.service.clone();
        let mut arns = Vec::new();
        let mut next: Option<String> = None;
        loop {
            self.call("ListTasks").await;
            let page = self
                .client
                .list_tasks()
                .cluster(&cluster)
                .service_name(&service)
                .desired_status(DesiredStatus::Running)
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| classify("ListTasks", e))?;
            arns.extend(page.task_arns().iter().cloned());
            match page.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_string()),
                _ => break,
            }
        }
        let mut tasks = Vec::new();
        for batch in arns.chunks(100) {
            self.call("DescribeTasks").await;
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
            let unhealthy = task.health_status() == Some(&HealthStatus::Unhealthy);
            if !ours || !running || unhealthy {
                continue;
            }
            let Some(ip) = task_ip(task) else {
                tracing::warn!(
                    task = task.task_arn().unwrap_or_default(),
                    "task without an ENI address (not awsvpc?); left out"
                );
                continue;
            };
            match self.port_of(task).await? {
                Some(port) => endpoints.push(Endpoint { ip, port }),
                None => tracing::warn!(
                    task = task.task_arn().unwrap_or_default(),
                    "no port: set `port` in the catalog"
                ),
            }
        }
        Ok(Some(endpoints))
    }
}
