//! What the loader has written: per local file, the object and ETag it came from. Kept in a
//! hidden JSON file so that a restarted loader downloads nothing unchanged, and so that
//! `--delete` only ever removes files the loader itself wrote.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use common::files::{self, FileOptions, write_atomic};

/// One file the loader wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The object key.
    pub key: String,
    /// The object's ETag when it was written.
    pub etag: String,
}

/// All files the loader wrote under one target, by path relative to the target directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Relative path → where it came from.
    pub files: BTreeMap<PathBuf, Entry>,
}

impl State {
    /// Reads a state file; a missing or unreadable one (a link, a named pipe, not JSON) is an
    /// empty state (everything is fetched).
    pub fn load(path: &Path) -> State {
        files::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Writes the state file atomically.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        write_atomic(path, &bytes, FileOptions::default()).map(|_| ())
    }
}
