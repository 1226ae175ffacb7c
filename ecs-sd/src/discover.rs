//! Reading ECS (and EC2 or SSM for hosts): one ListTasks pass per cluster, DescribeTasks only for
//! tasks not yet seen RUNNING, and caches for task definitions (immutable), container instances
//! and host addresses (EC2 instances; SSM managed instances for ECS Anywhere). Entries unused in
//! a refresh are dropped after it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt, TryStreamExt};

use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecs::types::{DesiredStatus, Task, TaskDefinition, TaskDefinitionField, TaskField};

use crate::metrics::Metrics;
use crate::targets::TaskInfo;

/// How long a RUNNING task's description is trusted: a container restarted in place can get
/// another host port, and tags can change.
const TASK_TTL: Duration = Duration::from_secs(600);

/// API calls of a refresh in flight at once, all kinds together. Against AWS each call waits
/// tens of milliseconds, so the batches of a refresh of thousands of tasks go much faster side
/// by side than in turn; 8 stays well within ECS's and EC2's per-account burst allowance (a
/// throttled call is retried by the SDK, and a throttled refresh backs off as a whole).
pub const IN_FLIGHT: usize = 8;

/// What [`Discoverer::describe_hosts`] found.
#[derive(Default)]
struct Hosts {
    /// Container instance ARN → EC2 instance id (or managed instance id).
    container_instances: HashMap<String, String>,
    /// Instance id → address.
    instances: Vec<(String, String)>,
    /// Subject → problem, for hosts that could not be found.
    problems: Vec<(String, String)>,
}

/// Why a refresh failed (the previous output stays): the one AWS error type of the toolkit.
pub use common::aws::ApiError;

fn api_error<E, R>(operation: &'static str, e: SdkError<E, R>) -> ApiError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    ApiError::new(operation, &e)
}

/// The ECS and EC2 clients and the caches that keep API calls down.
pub struct Discoverer {
    ecs: aws_sdk_ecs::Client,
    ec2: aws_sdk_ec2::Client,
    ssm: aws_sdk_ssm::Client,
    metrics: Metrics,
    cluster_arns: Vec<String>,
    fetch_tags: bool,
    /// Task ARN → description and when it was taken, kept while the task stays RUNNING.
    tasks: HashMap<String, (Task, Instant)>,
    /// Task definition ARN → definition and its tags.
    definitions: HashMap<String, (TaskDefinition, Vec<(String, String)>)>,
    /// Container instance ARN → EC2 instance id.
    container_instances: HashMap<String, String>,
    /// EC2 instance id (`i-`) or ECS Anywhere managed instance id (`mi-`) → its address.
    instances: HashMap<String, String>,
    /// What the last refresh went without, by subject: clusters not found, hosts SSM does not
    /// know. The refresh succeeded without them.
    problems: BTreeMap<String, String>,
    /// The clusters of `cluster_arns` the last refresh did not find.
    missing_clusters: Vec<String>,
    /// Bounds the calls in flight to [`IN_FLIGHT`].
    calls: tokio::sync::Semaphore,
}

/// Why listing a cluster failed.
enum ListError {
    /// The cluster is gone (or never was): skipped, the others go on.
    ClusterNotFound,
    /// Any other failure: the refresh fails.
    Api(ApiError),
}

impl From<ApiError> for ListError {
    fn from(e: ApiError) -> Self {
        ListError::Api(e)
    }
}

impl Discoverer {
    /// A discoverer for the given clusters (all clusters when empty).
    pub fn new(
        config: &aws_config::SdkConfig,
        metrics: Metrics,
        cluster_arns: Vec<String>,
        fetch_tags: bool,
    ) -> Self {
        Self {
            ecs: aws_sdk_ecs::Client::new(config),
            ec2: aws_sdk_ec2::Client::new(config),
            ssm: aws_sdk_ssm::Client::new(config),
            metrics,
            cluster_arns,
            fetch_tags,
            tasks: HashMap::new(),
            definitions: HashMap::new(),
            container_instances: HashMap::new(),
            instances: HashMap::new(),
            problems: BTreeMap::new(),
            missing_clusters: Vec::new(),
            calls: tokio::sync::Semaphore::new(IN_FLIGHT),
        }
    }

    /// What the last refresh went without (subject → problem): clusters not found, ECS
    /// Anywhere hosts SSM does not know.
    pub fn problems(&self) -> &BTreeMap<String, String> {
        &self.problems
    }

    /// The clusters the last refresh did not find.
    pub fn missing_clusters(&self) -> &[String] {
        &self.missing_clusters
    }

    fn count(&self, operation: &str) {
        self.metrics.api_calls.with_label_values(&[operation]).inc();
    }

    async fn clusters(&self) -> Result<Vec<String>, ApiError> {
        if !self.cluster_arns.is_empty() {
            return Ok(self.cluster_arns.clone());
        }
        let mut out = Vec::new();
        let mut next = None;
        loop {
            self.count("ListClusters");
            let page = self
                .ecs
                .list_clusters()
                .set_next_token(next)
                .send()
                .await
                .map_err(|e| api_error("ListClusters", e))?;
            out.extend(page.cluster_arns().iter().cloned());
            next = page
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if next.is_none() {
                return Ok(out);
            }
        }
    }

    /// Every task of every cluster, with its definition and host.
    pub async fn refresh(&mut self) -> Result<Vec<TaskInfo>, ApiError> {
        self.problems.clear();
        self.missing_clusters.clear();
        let mut current: Vec<Task> = Vec::new();
        for cluster in self.clusters().await? {
            let (arns, described) = match self.list_and_describe(&cluster).await {
                Ok(found) => found,
                // A cluster named in --cluster-arns that is gone must not stop the others.
                Err(ListError::ClusterNotFound) => {
                    self.problems.insert(
                        format!("cluster {cluster}"),
                        "cluster not found; skipped".into(),
                    );
                    self.missing_clusters.push(cluster.clone());
                    continue;
                }
                Err(ListError::Api(e)) => return Err(e),
            };
            let now = Instant::now();
            for t in described {
                if let Some(arn) = t.task_arn() {
                    self.tasks.insert(arn.to_string(), (t, now));
                }
            }
            current.extend(
                arns.iter()
                    .filter_map(|a| self.tasks.get(a).map(|(t, _)| t.clone())),
            );
        }
        let listed: BTreeSet<String> = current
            .iter()
            .filter_map(|t| t.task_arn().map(str::to_string))
            .collect();
        // Forget gone tasks, and tasks not yet RUNNING so that they are described again.
        self.tasks
            .retain(|arn, (t, _)| listed.contains(arn) && t.last_status() == Some("RUNNING"));

        // Task definitions and hosts not cached yet, at the same time.
        let new_definitions: BTreeSet<String> = current
            .iter()
            .filter_map(|t| t.task_definition_arn())
            .filter(|arn| !self.definitions.contains_key(*arn))
            .map(str::to_string)
            .collect();
        let (definitions, hosts) = tokio::try_join!(
            self.describe_task_definitions(new_definitions),
            self.describe_hosts(&current),
        )?;
        self.definitions.extend(definitions);
        self.container_instances.extend(hosts.container_instances);
        self.instances.extend(hosts.instances);
        self.problems.extend(hosts.problems);

        let mut infos = Vec::new();
        let mut used_definitions = BTreeSet::new();
        let mut used_instances = BTreeSet::new();
        for task in current {
            let Some(def_arn) = task.task_definition_arn().map(str::to_string) else {
                continue;
            };
            used_definitions.insert(def_arn.clone());
            let host = task.container_instance_arn().and_then(|ci| {
                used_instances.insert(ci.to_string());
                let id = self.container_instances.get(ci)?;
                Some((id.clone(), self.instances.get(id)?.clone()))
            });
            if let Some((definition, definition_tags)) = self.definitions.get(&def_arn).cloned() {
                infos.push(TaskInfo {
                    task,
                    definition,
                    definition_tags,
                    host,
                });
            }
        }
        self.definitions.retain(|k, _| used_definitions.contains(k));
        self.container_instances
            .retain(|k, _| used_instances.contains(k));
        let used_ec2: BTreeSet<&String> = self.container_instances.values().collect();
        self.instances.retain(|k, _| used_ec2.contains(k));
        Ok(infos)
    }

    /// The RUNNING tasks of `cluster` (one ListTasks pass) and the descriptions of those not
    /// known yet: each page's DescribeTasks starts as soon as the page is in, while the next
    /// pages are listed. All calls go through [`IN_FLIGHT`].
    ///
    /// The pass stays one chain of pages: ListTasks by task definition family side by side
    /// would be faster, but it can miss tasks (moto's, and maybe ECS's, `family` filter
    /// matches only ACTIVE revisions, so a task of a deregistered revision vanishes; see the
    /// e2e test `a_lone_task_of_a_deregistered_revision_stays_found_among_many`), and by
    /// service it misses tasks run outside a service.
    async fn list_and_describe(
        &self,
        cluster: &str,
    ) -> Result<(Vec<String>, Vec<Task>), ListError> {
        // A RUNNING task stays so until it leaves the list: only new or still-starting tasks
        // are described again.
        let unknown = |arns: &[String]| -> Vec<String> {
            arns.iter()
                .filter(|a| {
                    self.tasks
                        .get(*a)
                        .is_none_or(|(_, at)| at.elapsed() > TASK_TTL)
                })
                .cloned()
                .collect()
        };
        let pages: Vec<(Vec<String>, Vec<Task>)> = self
            .pages(cluster)
            .map(|page| async move {
                let arns = page?;
                let described = self.describe_tasks(cluster, &unknown(&arns)).await?;
                Ok::<_, ListError>((arns, described))
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect()
            .await?;
        let mut seen = BTreeSet::new();
        let mut arns = Vec::new();
        let mut described = Vec::new();
        for (page, tasks) in pages {
            // Pages of one pass do not overlap; a task listed twice (it moved between pages
            // while they were read) is kept once.
            arns.extend(page.into_iter().filter(|a| seen.insert(a.clone())));
            described.extend(tasks);
        }
        Ok((arns, described))
    }

    /// The pages of one ListTasks pass over `cluster` (RUNNING tasks), one after the other:
    /// each needs the previous page's token.
    fn pages<'a>(
        &'a self,
        cluster: &'a str,
    ) -> impl futures_util::Stream<Item = Result<Vec<String>, ListError>> + 'a {
        // The state: `Some(token)` for the next page (`None` for the first), `None` when done.
        stream::unfold(Some(None), move |state: Option<Option<String>>| {
            async move {
                let token = state?;
                // A closed semaphore is impossible (it is never closed); go on regardless.
                let _permit = self.calls.acquire().await.ok();
                self.count("ListTasks");
                let page = match self
                    .ecs
                    .list_tasks()
                    .cluster(cluster)
                    .desired_status(DesiredStatus::Running)
                    .set_next_token(token)
                    .send()
                    .await
                {
                    Ok(page) => page,
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_cluster_not_found_exception()) =>
                    {
                        return Some((Err(ListError::ClusterNotFound), None));
                    }
                    Err(e) => return Some((Err(api_error("ListTasks", e).into()), None)),
                };
                let next = page
                    .next_token()
                    .filter(|t| !t.is_empty())
                    .map(|t| Some(t.to_string()));
                Some((Ok(page.task_arns().to_vec()), next))
            }
        })
    }

    /// Runs `call` on each item, [`IN_FLIGHT`] at a time over the whole refresh: the results,
    /// in no particular order, or the first error.
    async fn in_flight<I, T, F, Fut>(&self, items: I, call: F) -> Result<Vec<T>, ApiError>
    where
        I: IntoIterator,
        F: Fn(I::Item) -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        stream::iter(items)
            .map(|item| async {
                // A closed semaphore is impossible (it is never closed); go on regardless.
                let _permit = self.calls.acquire().await.ok();
                call(item).await
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect()
            .await
    }

    /// DescribeTasks for `arns` of `cluster`, in batches of 100.
    async fn describe_tasks(&self, cluster: &str, arns: &[String]) -> Result<Vec<Task>, ApiError> {
        let batches = self
            .in_flight(arns.chunks(100), |batch| async move {
                self.count("DescribeTasks");
                let resp = self
                    .ecs
                    .describe_tasks()
                    .cluster(cluster)
                    .set_tasks(Some(batch.to_vec()))
                    .set_include(self.fetch_tags.then(|| vec![TaskField::Tags]))
                    .send()
                    .await
                    .map_err(|e| api_error("DescribeTasks", e))?;
                Ok(resp.tasks.unwrap_or_default())
            })
            .await?;
        Ok(batches.into_iter().flatten().collect())
    }

    /// DescribeTaskDefinition for each of `arns`: ARN → definition and its tags.
    async fn describe_task_definitions(
        &self,
        arns: BTreeSet<String>,
    ) -> Result<Vec<(String, (TaskDefinition, Vec<(String, String)>))>, ApiError> {
        let found = self
            .in_flight(arns, |arn| async move {
                self.count("DescribeTaskDefinition");
                let resp = self
                    .ecs
                    .describe_task_definition()
                    .task_definition(&arn)
                    .set_include(self.fetch_tags.then(|| vec![TaskDefinitionField::Tags]))
                    .send()
                    .await
                    .map_err(|e| api_error("DescribeTaskDefinition", e))?;
                let tags = resp
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                    .collect();
                Ok(resp.task_definition.map(|def| (arn, (def, tags))))
            })
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// Looks up, in batches, the container instances and hosts of `tasks` not cached yet.
    async fn describe_hosts(&self, tasks: &[Task]) -> Result<Hosts, ApiError> {
        let mut by_cluster: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for t in tasks {
            if let (Some(ci), Some(cluster)) = (t.container_instance_arn(), t.cluster_arn())
                && !self.container_instances.contains_key(ci)
            {
                by_cluster.entry(cluster).or_default().insert(ci);
            }
        }
        let batches = by_cluster.iter().flat_map(|(cluster, arns)| {
            let arns: Vec<String> = arns.iter().map(|a| a.to_string()).collect();
            arns.chunks(100)
                .map(|b| (*cluster, b.to_vec()))
                .collect::<Vec<_>>()
        });
        let described = self
            .in_flight(batches, |(cluster, batch)| async move {
                self.count("DescribeContainerInstances");
                let resp = self
                    .ecs
                    .describe_container_instances()
                    .cluster(cluster)
                    .set_container_instances(Some(batch))
                    .send()
                    .await
                    .map_err(|e| api_error("DescribeContainerInstances", e))?;
                Ok(resp
                    .container_instances()
                    .iter()
                    .filter_map(|ci| {
                        Some((
                            ci.container_instance_arn()?.to_string(),
                            ci.ec2_instance_id()?.to_string(),
                        ))
                    })
                    .collect::<Vec<_>>())
            })
            .await?;
        let mut hosts = Hosts {
            container_instances: described.into_iter().flatten().collect(),
            ..Hosts::default()
        };
        let unknown = |prefix: &str| -> Vec<String> {
            let ids: BTreeSet<&String> = self
                .container_instances
                .values()
                .chain(hosts.container_instances.values())
                .filter(|id| id.starts_with(prefix) && !self.instances.contains_key(*id))
                .collect();
            ids.into_iter().cloned().collect()
        };
        let (ec2_ids, managed_ids) = (unknown("i-"), unknown("mi-"));
        let (ec2, managed) = tokio::try_join!(
            self.in_flight(ec2_ids.chunks(100), |batch| self.describe_instances(batch)),
            self.in_flight(managed_ids.chunks(50), |batch| self.describe_managed(batch)),
        )?;
        hosts.instances.extend(ec2.into_iter().flatten());
        for (found, problem) in managed {
            hosts.instances.extend(found);
            hosts.problems.extend(problem);
        }
        Ok(hosts)
    }

    /// EC2 instance id → private address, for one batch of ids.
    async fn describe_instances(
        &self,
        batch: &[String],
    ) -> Result<Vec<(String, String)>, ApiError> {
        self.count("DescribeInstances");
        let resp = self
            .ec2
            .describe_instances()
            .set_instance_ids(Some(batch.to_vec()))
            .send()
            .await
            .map_err(|e| api_error("DescribeInstances", e))?;
        Ok(resp
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| {
                Some((
                    i.instance_id()?.to_string(),
                    i.private_ip_address()?.to_string(),
                ))
            })
            .collect())
    }

    /// ECS Anywhere (EXTERNAL) hosts are SSM managed instances: their addresses are in SSM.
    /// For one batch of ids: id → address, and the problem when SSM does not know them.
    async fn describe_managed(
        &self,
        batch: &[String],
    ) -> Result<(Vec<(String, String)>, Option<(String, String)>), ApiError> {
        let filter = aws_sdk_ssm::types::InstanceInformationStringFilter::builder()
            .key("InstanceIds")
            .set_values(Some(batch.to_vec()))
            .build()
            .map_err(|e| ApiError::other("DescribeInstanceInformation", e.to_string()))?;
        let mut found = Vec::new();
        let mut next: Option<String> = None;
        loop {
            self.count("DescribeInstanceInformation");
            let resp = self
                .ssm
                .describe_instance_information()
                .filters(filter.clone())
                .max_results(50)
                .set_next_token(next.take())
                .send()
                .await;
            let resp = match resp {
                Ok(r) => r,
                // A deregistered host: its tasks are skipped (no address), the rest go on.
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_invalid_instance_id()) =>
                {
                    let problem = (
                        format!("hosts {}", batch.join(",")),
                        "managed instances not found in SSM; their tasks are skipped".into(),
                    );
                    return Ok((found, Some(problem)));
                }
                Err(e) => return Err(api_error("DescribeInstanceInformation", e)),
            };
            found.extend(
                resp.instance_information_list().iter().filter_map(|i| {
                    Some((i.instance_id()?.to_string(), i.ip_address()?.to_string()))
                }),
            );
            match resp.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_string()),
                _ => return Ok((found, None)),
            }
        }
    }
}
