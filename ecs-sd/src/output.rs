//! The file_sd files: `{interval}-tasks.json` in the directory, replaced atomically and only when
//! their content changed.

use std::collections::BTreeMap;
use std::path::Path;

use common::files::{Dir, FileOptions};

use crate::targets::TargetGroup;

/// The JSON of one file: target groups, pretty-printed (4 spaces, like prometheus-ecs-sd).
pub fn render(groups: &[TargetGroup]) -> Vec<u8> {
    let mut out = pretty(groups);
    out.push(b'\n');
    out
}

/// `value` as JSON, indented with 4 spaces like the files.
pub fn pretty<T: serde::Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    value.serialize(&mut ser).expect("plain data serializes");
    out
}

/// The file of an interval: `30s-tasks.json`.
pub fn file_name(interval: &str) -> String {
    format!("{interval}-tasks.json")
}

/// Writes every interval's file; returns the files that changed.
pub fn write_all(
    dir: &Path,
    by_interval: &BTreeMap<String, Vec<TargetGroup>>,
) -> std::io::Result<Vec<String>> {
    let dir = Dir::create(dir)?;
    let mut changed = Vec::new();
    for (interval, groups) in by_interval {
        let name = file_name(interval);
        if dir.write_atomic(Path::new(&name), &render(groups), FileOptions::default())? {
            changed.push(name);
        }
    }
    Ok(changed)
}
