//! Atomic file replacement: readers see the old file or the new one, never a part.

use std::io::Write;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};

/// Ownership and mode of written files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileOptions {
    /// Permission bits, e.g. 0o644; the process umask applies when unset.
    pub mode: Option<u32>,
    /// Owner user id.
    pub uid: Option<u32>,
    /// Owner group id.
    pub gid: Option<u32>,
}

/// A temporary file beside `path`, hidden and recognisably ours. Its name ends in `.tmp-PID`,
/// so globs such as `*.json` or `*.yml` (file_sd, rule files) never match it; with
/// `keep_extension` it ends in the file's own name instead, for programs that pick the format by
/// extension (`envoy --mode validate`).
pub fn staging_path(path: &Path, keep_extension: bool) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let pid = std::process::id();
    if keep_extension {
        path.with_file_name(format!(".tmp-{pid}-{name}"))
    } else {
        path.with_file_name(format!(".{name}.tmp-{pid}"))
    }
}

/// Removes staging files that a killed process left in `dir` (not recursive).
pub fn remove_stale_staging(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid_after = |rest: &str| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit());
        // `.tmp-PID-NAME` or `.NAME.tmp-PID`, exactly as `staging_path` names them.
        let ours = name
            .strip_prefix(".tmp-")
            .and_then(|r| r.split_once('-'))
            .is_some_and(|(pid, rest)| pid_after(pid) && !rest.is_empty())
            || (name.starts_with('.')
                && name
                    .rsplit_once(".tmp-")
                    .is_some_and(|(_, pid)| pid_after(pid)));
        if ours && e.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Writes `bytes` to a staging file beside `path` (fsynced, with the options applied) and
/// returns its path; publish it with [`publish`].
pub fn stage(
    path: &Path,
    bytes: &[u8],
    opts: FileOptions,
    keep_extension: bool,
) -> std::io::Result<PathBuf> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = staging_path(path, keep_extension);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        if let Some(mode) = opts.mode {
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        if opts.uid.is_some() || opts.gid.is_some() {
            chown(&tmp, opts.uid, opts.gid)?;
        }
        f.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

/// Renames a staged file over `path` and makes the rename durable.
pub fn publish(staged: &Path, path: &Path) -> std::io::Result<()> {
    std::fs::rename(staged, path)?;
    if let Some(parent) = path.parent() {
        // The rename is durable once the directory entry is.
        if let Ok(dir) = std::fs::File::open(parent) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

/// Replaces `path` with `bytes` atomically; does nothing (returns false) when the file already
/// holds exactly these bytes.
pub fn write_atomic(path: &Path, bytes: &[u8], opts: FileOptions) -> std::io::Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    let staged = stage(path, bytes, opts, false)?;
    publish(&staged, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&staged);
    })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_skips_identical_bytes() {
        let dir = std::env::temp_dir().join(format!("common-files-{}", std::process::id()));
        let path = dir.join("sub/f.txt");
        assert!(
            write_atomic(
                &path,
                b"one",
                FileOptions {
                    mode: Some(0o600),
                    ..Default::default()
                }
            )
            .unwrap()
        );
        assert!(!write_atomic(&path, b"one", FileOptions::default()).unwrap());
        assert!(write_atomic(&path, b"two", FileOptions::default()).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let leftovers: Vec<_> = std::fs::read_dir(dir.join("sub")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "a staging file was left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
