use aws_sdk_ecs::types::{
    Attachment, Container, ContainerDefinition, KeyValuePair, LaunchType, NetworkBinding,
    NetworkInterface, NetworkMode, PortMapping, Tag, Task, TaskDefinition,
};

use super::*;

fn kv(k: &str, v: &str) -> KeyValuePair {
    KeyValuePair::builder().name(k).value(v).build()
}

fn opts() -> LabelOptions {
    LabelOptions {
        default_interval: "1m".into(),
        tags_to_labels: vec![],
    }
}

fn definition(mode: NetworkMode, containers: Vec<ContainerDefinition>) -> TaskDefinition {
    TaskDefinition::builder()
        .family("node")
        .revision(7)
        .network_mode(mode)
        .set_container_definitions(Some(containers))
        .build()
}

fn task(status: &str, containers: Vec<Container>) -> Task {
    Task::builder()
        .task_arn("arn:aws:ecs:us-east-1:1:task/prism-test/abc")
        .cluster_arn("arn:aws:ecs:us-east-1:1:cluster/prism-test")
        .task_definition_arn("arn:aws:ecs:us-east-1:1:task-definition/node:7")
        .last_status(status)
        .group("service:node-develop")
        .set_containers(Some(containers))
        .build()
}

fn awsvpc_container(name: &str) -> Container {
    Container::builder()
        .name(name)
        .container_arn("arn:aws:ecs:us-east-1:1:container/prism-test/abc/c1")
        .network_interfaces(
            NetworkInterface::builder()
                .private_ipv4_address("10.0.1.5")
                .build(),
        )
        .build()
}

#[test]
fn endpoint_lists_follow_prometheus_ecs_sd() {
    assert_eq!(endpoints(None), vec![("/metrics".to_string(), None)]);
    assert_eq!(
        endpoints(Some("5m:/mymetrics,30s:/mymetrics2,/plain,2h:/odd")),
        vec![
            ("/mymetrics".to_string(), Some("5m".to_string())),
            ("/mymetrics2".to_string(), Some("30s".to_string())),
            ("/plain".to_string(), None),
            ("/odd".to_string(), None),
        ]
    );
    // Never a file name made from task data.
    assert_eq!(
        endpoints(Some("../../x/5m:/m, 5m:/n")),
        vec![
            ("/m".to_string(), None),
            ("/n".to_string(), Some("5m".to_string()))
        ]
    );
}

#[test]
fn awsvpc_containers_give_one_target_per_port_and_path() {
    let cdef = ContainerDefinition::builder()
        .name("node")
        .environment(kv("PROMETHEUS", "true"))
        .environment(kv("PROMETHEUS_ENDPOINT", "5m:/m1,/m2"))
        .environment(kv("PROMETHEUS_PORT", "9100,9200"))
        .build();
    let info = TaskInfo {
        task: task("RUNNING", vec![awsvpc_container("node")]),
        definition: definition(NetworkMode::Awsvpc, vec![cdef]),
        definition_tags: vec![],
        host: None,
    };
    let d = discover(&[info], &opts());
    let five: Vec<&str> = d.by_interval["5m"]
        .iter()
        .map(|g| g.targets[0].as_str())
        .collect();
    assert_eq!(five, ["10.0.1.5:9100", "10.0.1.5:9200"]);
    let g = &d.by_interval["1m"][0];
    assert_eq!(g.labels["metrics_path"], "/m2");
    assert_eq!(g.labels["__metrics_path__"], "/m2");
    // No scheme given: the scrape job's own `scheme` applies.
    assert!(!g.labels.contains_key("__scheme__"));
    assert_eq!(g.labels["job"], "node");
    assert_eq!(g.labels["instance"], "10.0.1.5:9100");
    assert_eq!(g.labels["ecs_task_id"], "abc");
    assert_eq!(g.labels["ecs_task_version"], "7");
    assert_eq!(g.labels["ecs_cluster"], "prism-test");
    assert_eq!(g.labels["__meta_ecs_service"], "node-develop");
    assert!(!g.labels.contains_key("instance_id"));
    for i in ["15s", "30s"] {
        assert!(d.by_interval[i].is_empty(), "{i} file is written, empty");
    }
}

#[test]
fn bridge_containers_use_the_host_port_bound_to_the_container_port() {
    let cdef = ContainerDefinition::builder()
        .name("app")
        .environment(kv("PROMETHEUS", "true"))
        .environment(kv("PROMETHEUS_CONTAINER_PORT", "9100"))
        .build();
    let container = Container::builder()
        .name("app")
        .container_arn("arn:aws:ecs:us-east-1:1:container/prism-test/abc/c9")
        .network_bindings(
            NetworkBinding::builder()
                .container_port(8080)
                .host_port(32001)
                .build(),
        )
        .network_bindings(
            NetworkBinding::builder()
                .container_port(9100)
                .host_port(32002)
                .build(),
        )
        .build();
    let mut t = task("RUNNING", vec![container]);
    t.launch_type = Some(LaunchType::Ec2);
    let info = TaskInfo {
        task: t,
        definition: definition(NetworkMode::Bridge, vec![cdef]),
        definition_tags: vec![],
        host: Some(("i-0123".into(), "10.0.0.9".into())),
    };
    let d = discover(&[info], &opts());
    let g = &d.by_interval["1m"][0];
    assert_eq!(g.targets, ["10.0.0.9:32002"]);
    // No endpoint given: the scrape job's own `metrics_path` applies (legacy label kept).
    assert!(!g.labels.contains_key("__metrics_path__"));
    assert_eq!(g.labels["metrics_path"], "/metrics");
    assert_eq!(g.labels["instance_id"], "i-0123");
    assert_eq!(g.labels["ecs_container_id"], "c9");
}

#[test]
fn tasks_that_are_not_running_or_lack_bindings_are_skipped_with_a_reason() {
    let cdef = ContainerDefinition::builder()
        .name("app")
        .environment(kv("PROMETHEUS", "true"))
        .build();
    let pending = TaskInfo {
        task: task("PENDING", vec![Container::builder().name("app").build()]),
        definition: definition(NetworkMode::Bridge, vec![cdef.clone()]),
        definition_tags: vec![],
        host: Some(("i-1".into(), "10.0.0.1".into())),
    };
    let unbound = TaskInfo {
        task: task("RUNNING", vec![Container::builder().name("app").build()]),
        definition: definition(NetworkMode::Bridge, vec![cdef]),
        definition_tags: vec![],
        host: Some(("i-1".into(), "10.0.0.1".into())),
    };
    let d = discover(&[pending, unbound], &opts());
    let reasons: Vec<&str> = d.skipped.iter().map(|s| s.reason).collect();
    assert_eq!(reasons, ["not_running", "no_port"]);
    assert!(d.by_interval.values().all(Vec::is_empty));
}

#[test]
fn docker_labels_of_prometheus_ecs_discovery_work_too() {
    let cdef = ContainerDefinition::builder()
        .name("exporter")
        .docker_labels("PROMETHEUS_EXPORTER_PORT", "9145")
        .docker_labels("PROMETHEUS_EXPORTER_PATH", "/probe")
        .docker_labels("PROMETHEUS_EXPORTER_SCHEME", "https")
        .docker_labels("PROMETHEUS_EXPORTER_JOB_NAME", "blackbox")
        .port_mappings(PortMapping::builder().container_port(9145).build())
        .build();
    let mut t = task(
        "RUNNING",
        vec![Container::builder().name("exporter").build()],
    );
    t.attachments = Some(vec![
        Attachment::builder()
            .r#type("ElasticNetworkInterface")
            .details(kv("privateIPv4Address", "10.0.2.2"))
            .build(),
    ]);
    let info = TaskInfo {
        task: t,
        definition: definition(NetworkMode::Awsvpc, vec![cdef]),
        definition_tags: vec![],
        host: None,
    };
    let d = discover(&[info], &opts());
    let g = &d.by_interval["1m"][0];
    assert_eq!(g.targets, ["10.0.2.2:9145"]);
    assert_eq!(g.labels["__scheme__"], "https");
    assert_eq!(g.labels["__metrics_path__"], "/probe");
    assert_eq!(g.labels["job"], "blackbox");
}

#[test]
fn tags_become_meta_labels_task_tags_winning() {
    let cdef = ContainerDefinition::builder()
        .name("node")
        .environment(kv("PROMETHEUS", "true"))
        .build();
    let mut t = task("RUNNING", vec![awsvpc_container("node")]);
    t.tags = Some(vec![
        Tag::builder().key("team").value("identity").build(),
        Tag::builder().key("aws:ecs:serviceName").value("x").build(),
    ]);
    let info = TaskInfo {
        task: t,
        definition: definition(NetworkMode::Awsvpc, vec![cdef]),
        definition_tags: vec![
            ("team".into(), "old".into()),
            ("cost-center".into(), "42".into()),
        ],
        host: None,
    };
    let mut o = opts();
    o.tags_to_labels = vec!["*".into()];
    let d = discover(&[info], &o);
    let l = &d.by_interval["1m"][0].labels;
    assert_eq!(l["__meta_ecs_tag_team"], "identity");
    assert_eq!(l["__meta_ecs_tag_cost_center"], "42");
    assert!(!l.keys().any(|k| k.contains("serviceName")));
}

#[test]
fn nolabels_keeps_only_job_level_labels() {
    let cdef = ContainerDefinition::builder()
        .name("pushgw")
        .environment(kv("PROMETHEUS", "true"))
        .environment(kv("PROMETHEUS_NOLABELS", "true"))
        .build();
    let info = TaskInfo {
        task: task("RUNNING", vec![awsvpc_container("pushgw")]),
        definition: definition(NetworkMode::Awsvpc, vec![cdef]),
        definition_tags: vec![],
        host: None,
    };
    let d = discover(&[info], &opts());
    let l = &d.by_interval["1m"][0].labels;
    assert_eq!(l["instance"], "node");
    assert!(!l.contains_key("ecs_task_id"));
}
