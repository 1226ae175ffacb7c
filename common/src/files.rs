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

/// A temporary file beside `path`, named so that it is recognisably ours and hidden.
pub fn staging_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".tmp-{}-{name}", std::process::id()))
}

/// Writes `bytes` to a staging file beside `path` (fsynced, with the options applied) and
/// returns its path; publish it with [`publish`].
pub fn stage(path: &Path, bytes: &[u8], opts: FileOptions) -> std::io::Result<PathBuf> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = staging_path(path);
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
    let staged = stage(path, bytes, opts)?;
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
