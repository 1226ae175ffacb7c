//! s3-config-loader: fetches configuration objects from S3 to local files, keeps them fresh and
//! swaps them atomically, then runs reload hooks.
//!
//! Not written yet: this crate holds the workspace's place for it (see the project's issues).
