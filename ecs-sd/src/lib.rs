//! ecs-sd: Prometheus service discovery for AWS ECS tasks, a drop-in for prometheus-ecs-sd.
//!
//! Not written yet: this crate holds the workspace's place for it (see the project's issues).
