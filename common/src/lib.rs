//! What the toolkit's binaries really share: durations as users write them, atomic file
//! replacement, AWS configuration from the standard environment and AWS errors in words, the
//! backoff after failures, the token bucket of rate limits, ECS task listing (feature `ecs`), the admin port (`/metrics`,
//! `/healthz`, build info), logs (with problems logged when they start, change and end), graceful
//! shutdown, and the version and commit a binary was built from.

pub mod admin;
pub mod aws;
pub mod backoff;
pub mod cli;
pub mod duration;
#[cfg(feature = "ecs")]
pub mod ecs;
pub mod files;
pub mod problems;
pub mod rate;
pub mod version;
