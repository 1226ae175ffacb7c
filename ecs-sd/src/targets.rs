//! From described tasks to Prometheus target groups: which containers are scraped, at which
//! address and port, under which labels, in which interval file. Pure functions of the ECS
//! descriptions, so that every rule is unit-tested.

use std::collections::BTreeMap;

use aws_sdk_ecs::types::{ContainerDefinition, NetworkMode, Task, TaskDefinition};
use serde::Serialize;

/// The interval files prometheus-ecs-sd writes, whatever they hold.
pub const INTERVALS: [&str; 4] = ["15s", "30s", "1m", "5m"];

/// One task with what is needed to turn it into targets.
#[derive(Debug, Clone)]
pub struct TaskInfo {
    /// The task as DescribeTasks returned it.
    pub task: Task,
    /// Its task definition.
    pub definition: TaskDefinition,
    /// Tags of the task definition (DescribeTaskDefinition returns them beside it).
    pub definition_tags: Vec<(String, String)>,
    /// The EC2 instance the task runs on (EC2 launch type): id and private IP.
    pub host: Option<(String, String)>,
}

/// A file_sd / http_sd target group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct TargetGroup {
    /// `ip:port`, always one.
    pub targets: Vec<String>,
    /// The labels.
    pub labels: BTreeMap<String, String>,
}

/// A container that was not turned into targets, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The task ARN.
    pub task: String,
    /// The container name (empty when the whole task was skipped).
    pub container: String,
    /// Metric label: one of [`SKIP_REASONS`].
    pub reason: &'static str,
    /// For people.
    pub detail: String,
}

/// Why a container is skipped: the `reason` label of `ecs_sd_skipped_containers`.
pub const SKIP_REASONS: [&str; 4] = ["not_running", "no_address", "no_port", "no_container"];

/// Output settings.
#[derive(Debug, Clone)]
pub struct LabelOptions {
    /// The file for endpoints without an interval: `1m` by default.
    pub default_interval: String,
    /// Tags to turn into `__meta_ecs_tag_*` labels; `*` means all but `aws:` ones.
    pub tags_to_labels: Vec<String>,
}

/// Targets per interval file, and the skipped containers.
#[derive(Debug, Clone, Default)]
pub struct Discovered {
    /// Tasks seen (described and with their definition).
    pub tasks: usize,
    /// Interval (file prefix) → sorted target groups.
    pub by_interval: BTreeMap<String, Vec<TargetGroup>>,
    /// Containers that asked to be scraped but could not be, with the reason.
    pub skipped: Vec<Skipped>,
    /// How long the refresh took (AWS calls and all).
    pub took: std::time::Duration,
}

/// An environment variable of the container definition; empty counts as unset.
fn env(def: &ContainerDefinition, name: &str) -> Option<String> {
    def.environment()
        .iter()
        .find(|kv| kv.name() == Some(name))
        .and_then(|kv| kv.value().map(str::to_string))
        .filter(|v| !v.trim().is_empty())
}

fn docker_label(def: &ContainerDefinition, name: &str) -> Option<String> {
    def.docker_labels().and_then(|l| l.get(name).cloned())
}

/// The last part of an ARN's resource (`.../cluster/name` → `name`).
fn arn_name(arn: &str) -> String {
    arn.split(':')
        .nth(5)
        .unwrap_or(arn)
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_string()
}

/// `PROMETHEUS_ENDPOINT`: `[interval:]path,...`; an interval that is not one of the four known
/// ones means "the default file".
pub fn endpoints(value: Option<&str>) -> Vec<(String, Option<String>)> {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return vec![("/metrics".into(), None)];
    };
    value
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|item| match item.split_once(':') {
            // Only the four known intervals name a file: anything else (a typo, a path) goes
            // to the default file, never to a file name made from task data.
            Some((interval, path)) => {
                let interval = interval.trim();
                let known = INTERVALS.contains(&interval);
                (path.trim().to_string(), known.then(|| interval.to_string()))
            }
            None => (item.trim().to_string(), None),
        })
        .collect()
}

/// Prometheus label names: `[a-zA-Z_][a-zA-Z0-9_]*`; as prometheus-ecs-sd sanitises tags.
fn tag_label(tag: &str) -> Option<String> {
    let name: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = name.trim_start_matches('_').to_string();
    (!name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit())).then_some(name)
}

fn enabled(value: Option<String>) -> bool {
    value.is_some_and(|v| {
        !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "" | "false" | "0" | "no"
        )
    })
}

/// Turns tasks into target groups per interval.
pub fn discover(tasks: &[TaskInfo], opts: &LabelOptions) -> Discovered {
    let mut out = Discovered {
        tasks: tasks.len(),
        ..Discovered::default()
    };
    for i in INTERVALS
        .iter()
        .map(|s| s.to_string())
        .chain([opts.default_interval.clone()])
    {
        out.by_interval.entry(i).or_default();
    }
    for info in tasks {
        task_targets(info, opts, &mut out);
    }
    for groups in out.by_interval.values_mut() {
        groups.sort();
        groups.dedup();
    }
    out
}

fn task_targets(info: &TaskInfo, opts: &LabelOptions, out: &mut Discovered) {
    let task = &info.task;
    let def = &info.definition;
    let task_arn = task.task_arn().unwrap_or_default().to_string();
    let skip = |out: &mut Discovered, container: &str, reason: &'static str, detail: String| {
        out.skipped.push(Skipped {
            task: task_arn.clone(),
            container: container.to_string(),
            reason,
            detail,
        })
    };
    let candidates: Vec<&ContainerDefinition> = def
        .container_definitions()
        .iter()
        .filter(|c| {
            enabled(env(c, "PROMETHEUS")) || docker_label(c, "PROMETHEUS_EXPORTER_PORT").is_some()
        })
        .collect();
    if candidates.is_empty() {
        return;
    }
    if task.last_status() != Some("RUNNING") {
        skip(
            out,
            "",
            "not_running",
            format!("lastStatus is {}", task.last_status().unwrap_or("unknown")),
        );
        return;
    }
    let mode = def.network_mode().cloned().unwrap_or(NetworkMode::Bridge);
    let family = def
        .family()
        .map(str::to_string)
        .unwrap_or_else(|| arn_name(task.task_definition_arn().unwrap_or_default()));
    let revision = def.revision().to_string();
    let cluster = arn_name(task.cluster_arn().unwrap_or_default());
    // As prometheus-ecs-sd decides it, so that the same series keep the same labels.
    let fargate = def
        .requires_compatibilities()
        .iter()
        .any(|c| c.as_str() == "FARGATE");
    let mut tags: BTreeMap<String, String> = info.definition_tags.iter().cloned().collect();
    for t in task.tags() {
        if let (Some(k), Some(v)) = (t.key(), t.value()) {
            tags.insert(k.to_string(), v.to_string());
        }
    }

    for cdef in candidates {
        let name = cdef.name().unwrap_or_default();
        let Some(container) = task.containers().iter().find(|c| c.name() == Some(name)) else {
            skip(
                out,
                name,
                "no_container",
                "the task has no running container of that name".into(),
            );
            continue;
        };
        let ip = match mode {
            NetworkMode::Awsvpc => container
                .network_interfaces()
                .first()
                .and_then(|n| n.private_ipv4_address().map(str::to_string))
                .or_else(|| common::ecs::eni_address(task).map(str::to_string)),
            _ => info.host.as_ref().map(|(_, ip)| ip.clone()),
        };
        let Some(ip) = ip else {
            skip(
                out,
                name,
                "no_address",
                "no ENI address (awsvpc) or host instance address (bridge/host) yet".into(),
            );
            continue;
        };
        let binding_for = |container_port: i32| {
            container
                .network_bindings()
                .iter()
                .find(|b| b.container_port() == Some(container_port))
                .and_then(|b| b.host_port())
        };
        let bridge = mode == NetworkMode::Bridge;
        let label_port = docker_label(cdef, "PROMETHEUS_EXPORTER_PORT");
        let ports: Result<Vec<i32>, String> = if let Some(p) = env(cdef, "PROMETHEUS_PORT") {
            p.split(',')
                .map(|s| {
                    s.trim()
                        .parse()
                        .map_err(|_| format!("PROMETHEUS_PORT {p:?} is not a port list"))
                })
                .collect()
        } else if let Some(p) = env(cdef, "PROMETHEUS_CONTAINER_PORT").filter(|_| bridge) {
            p.split(',')
                .map(|s| {
                    let cp: i32 = s.trim().parse().map_err(|_| {
                        format!("PROMETHEUS_CONTAINER_PORT {p:?} is not a port list")
                    })?;
                    binding_for(cp).ok_or_else(|| {
                        format!(
                            "no host port bound to container port {cp} (PROMETHEUS_CONTAINER_PORT)"
                        )
                    })
                })
                .collect()
        } else if let Some(p) = label_port {
            p.trim()
                .parse::<i32>()
                .map_err(|_| format!("PROMETHEUS_EXPORTER_PORT {p:?} is not a port"))
                .and_then(|cp| {
                    if bridge {
                        binding_for(cp)
                            .ok_or_else(|| format!("no host port bound to container port {cp}"))
                    } else {
                        Ok(cp)
                    }
                })
                .map(|p| vec![p])
        } else if !bridge {
            let first = cdef.port_mappings().first();
            Ok(vec![
                first
                    .and_then(|m| m.host_port().filter(|p| *p != 0).or(m.container_port()))
                    .unwrap_or(80),
            ])
        } else {
            container
                .network_bindings()
                .first()
                .and_then(|b| b.host_port())
                .map(|p| vec![p])
                .ok_or_else(|| "no network binding yet".to_string())
        };
        let ports = match ports {
            Ok(p) => p,
            Err(detail) => {
                skip(out, name, "no_port", detail);
                continue;
            }
        };
        let nolabels = env(cdef, "PROMETHEUS_NOLABELS").as_deref() == Some("true");
        let from_labels = !enabled(env(cdef, "PROMETHEUS"));
        // `__metrics_path__` and `__scheme__` only where the task says them: set always, they
        // would override the scrape job's own `metrics_path` and `scheme` (an https job would
        // scrape plain http).
        let explicit_path = if from_labels {
            docker_label(cdef, "PROMETHEUS_EXPORTER_PATH").is_some()
        } else {
            env(cdef, "PROMETHEUS_ENDPOINT").is_some()
        };
        let scheme = if from_labels {
            docker_label(cdef, "PROMETHEUS_EXPORTER_SCHEME")
        } else {
            None
        };
        let (paths, job) = if from_labels {
            let path =
                docker_label(cdef, "PROMETHEUS_EXPORTER_PATH").unwrap_or_else(|| "/metrics".into());
            let job = docker_label(cdef, "PROMETHEUS_EXPORTER_JOB_NAME")
                .unwrap_or_else(|| family.clone());
            (vec![(path, None)], job)
        } else {
            (
                endpoints(env(cdef, "PROMETHEUS_ENDPOINT").as_deref()),
                family.clone(),
            )
        };
        for port in ports {
            let target = match ip.parse::<std::net::IpAddr>() {
                Ok(addr @ std::net::IpAddr::V6(_)) => {
                    std::net::SocketAddr::new(addr, port as u16).to_string()
                }
                _ => format!("{ip}:{port}"),
            };
            for (path, interval) in &paths {
                let mut labels = BTreeMap::new();
                labels.insert("job".into(), job.clone());
                labels.insert("metrics_path".into(), path.clone());
                if explicit_path {
                    labels.insert("__metrics_path__".into(), path.clone());
                }
                if let Some(scheme) = &scheme {
                    labels.insert("__scheme__".into(), scheme.clone());
                }
                if nolabels {
                    labels.insert("instance".into(), family.clone());
                } else {
                    labels.insert("instance".into(), target.clone());
                    labels.insert("ecs_task_id".into(), arn_name(&task_arn));
                    labels.insert("ecs_task_version".into(), revision.clone());
                    labels.insert("ecs_cluster".into(), cluster.clone());
                    if let (false, Some((instance_id, _))) = (fargate, &info.host) {
                        labels.insert(
                            "ecs_container_id".into(),
                            arn_name(container.container_arn().unwrap_or_default()),
                        );
                        labels.insert("instance_id".into(), instance_id.clone());
                    }
                    // Beyond prometheus-ecs-sd's labels: available to relabelling (e.g. a
                    // `labelmap` of `__meta_ecs_(.+)`), without changing existing series.
                    let meta = [
                        (
                            "service",
                            task.group()
                                .and_then(|g| g.strip_prefix("service:"))
                                .unwrap_or("")
                                .to_string(),
                        ),
                        ("task_family", family.clone()),
                        ("task_revision", revision.clone()),
                        ("container", name.to_string()),
                        (
                            "launch_type",
                            task.launch_type()
                                .map(|l| l.as_str().to_string())
                                .unwrap_or_default(),
                        ),
                        (
                            "availability_zone",
                            task.availability_zone().unwrap_or("").to_string(),
                        ),
                        ("task_arn", task_arn.clone()),
                        ("network_mode", mode.as_str().to_string()),
                    ];
                    for (k, v) in meta {
                        labels.insert(format!("__meta_ecs_{k}"), v);
                    }
                }
                for (k, v) in &tags {
                    let wanted = opts.tags_to_labels.iter().any(|t| t == k || t == "*");
                    if wanted
                        && !k.to_ascii_lowercase().starts_with("aws:")
                        && let Some(l) = tag_label(k)
                    {
                        labels.insert(format!("__meta_ecs_tag_{l}"), v.clone());
                    }
                }
                let file = interval
                    .clone()
                    .unwrap_or_else(|| opts.default_interval.clone());
                out.by_interval.entry(file).or_default().push(TargetGroup {
                    targets: vec![target.clone()],
                    labels,
                });
            }
        }
    }
}

impl Discovered {
    /// One line for people: tasks seen, targets per file, skipped containers by reason.
    pub fn summary(&self) -> String {
        let n = |count: usize, one: &str, many: &str| {
            format!("{count} {}", if count == 1 { one } else { many })
        };
        let targets: usize = self.by_interval.values().map(Vec::len).sum();
        let per_file: Vec<String> = self
            .by_interval
            .iter()
            .map(|(interval, groups)| format!("{interval}: {}", groups.len()))
            .collect();
        let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &self.skipped {
            *reasons.entry(s.reason).or_default() += 1;
        }
        let mut line = format!(
            "{} seen, {} ({}), {} skipped",
            n(self.tasks, "task", "tasks"),
            n(targets, "target", "targets"),
            per_file.join(", "),
            n(self.skipped.len(), "container", "containers"),
        );
        if !reasons.is_empty() {
            let why: Vec<String> = reasons.iter().map(|(r, c)| format!("{r}: {c}")).collect();
            line.push_str(&format!(" ({})", why.join(", ")));
        }
        line
    }
}

#[cfg(test)]
mod tests;
