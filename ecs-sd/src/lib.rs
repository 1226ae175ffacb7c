//! ecs-sd: Prometheus service discovery for AWS ECS, a drop-in for signal-ai's
//! prometheus-ecs-sd (same environment variables, files, flags and labels), that also reads
//! prometheus-ecs-discovery's docker labels and serves http_sd.
//!
//! [`discover::Discoverer`] reads ECS and EC2 with caches; [`targets::discover`] turns tasks into
//! target groups per interval file; [`output`] writes the files atomically; [`run`] repeats
//! refreshes and serves `/sd`, `/metrics` and `/healthz`.

pub mod discover;
pub mod metrics;
pub mod output;
pub mod run;
pub mod targets;
