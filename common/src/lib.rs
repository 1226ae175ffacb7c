//! What the toolkit's binaries really share: durations as users write them, atomic file
//! replacement, and AWS configuration from the standard environment.

pub mod aws;
pub mod duration;
pub mod files;
