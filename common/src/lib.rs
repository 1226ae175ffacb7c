//! What the toolkit's binaries really share: durations as users write them, atomic file
//! replacement, AWS configuration from the standard environment and AWS errors in words, logs
//! and graceful shutdown.

pub mod aws;
pub mod cli;
pub mod duration;
pub mod files;
