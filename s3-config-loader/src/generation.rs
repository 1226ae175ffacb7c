//! Publishing a whole directory at once (`sync --atomic-set`), as Kubernetes does for
//! ConfigMap volumes: the files live in a generation directory `..<timestamp>`, `..data` is a
//! symlink to the current generation, and each top-level entry of the target directory is a
//! symlink through `..data`. A new set is built in a new generation and published with one
//! rename of the `..data` symlink, so a reader never sees half of an old set and half of a new.
//!
//! Only a `..data` that names a generation directory of our own is trusted: one planted to
//! point elsewhere is neither read from nor cleaned up, only replaced.

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

const DATA: &str = "..data";

/// Whether `name` is one [`prepare`] gives: `..` and digits.
fn is_generation_name(name: &str) -> bool {
    name.strip_prefix("..")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The current generation directory, if the target was published this way before.
pub fn current(dir: &Path) -> Option<PathBuf> {
    let target = std::fs::read_link(dir.join(DATA)).ok()?;
    let name = target.to_str().filter(|n| is_generation_name(n))?;
    let path = dir.join(name);
    std::fs::symlink_metadata(&path)
        .is_ok_and(|m| m.is_dir())
        .then_some(path)
}

/// Removes generations that are not the current one: a loader killed during a pass leaves
/// the one it was building. A directory a killed [`commit`] had moved aside goes back where it
/// was when nothing took its place, and is removed when its replacement was published.
pub fn remove_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let current = current(dir);
    for e in entries.flatten() {
        let name = e.file_name();
        if let Some(original) = name.to_str().and_then(moved_aside_from)
            && e.file_type().is_ok_and(|t| t.is_dir())
        {
            let back = dir.join(original);
            let done = if std::fs::symlink_metadata(&back).is_err() {
                std::fs::rename(e.path(), &back)
            } else {
                std::fs::remove_dir_all(e.path())
            };
            match done {
                Ok(()) => {
                    tracing::info!(dir = %back.display(), "finished the swap of a directory an interrupted pass had moved aside")
                }
                Err(err) => {
                    tracing::warn!(dir = %back.display(), aside = %e.path().display(), error = %err, "cannot finish the swap of a directory moved aside")
                }
            }
            continue;
        }
        let ours = name.to_str().is_some_and(is_generation_name);
        if ours
            && e.file_type().is_ok_and(|t| t.is_dir())
            && current.as_deref() != Some(e.path().as_path())
        {
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => {
                    tracing::info!(generation = %e.path().display(), "removed a generation left by an interrupted pass")
                }
                Err(err) => {
                    tracing::warn!(generation = %e.path().display(), error = %err, "cannot remove a stale generation")
                }
            }
        }
    }
}

/// The top-level name a directory called `name` was moved aside from by [`move_aside`]
/// (`.NAME.tmp-RANDOM`), if it is such a directory.
fn moved_aside_from(name: &str) -> Option<&str> {
    if !common::files::is_staging_name(name) {
        return None;
    }
    let (head, _) = name.rsplit_once(".tmp-")?;
    head.strip_prefix('.')
        .filter(|n| !n.is_empty() && *n != DATA && !is_generation_name(n))
}

/// Creates a new generation holding the current one's files (hard links: nothing is copied,
/// and files are only ever replaced by rename, so the old generation stays intact).
pub fn prepare(dir: &Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let stamp = common::duration::since_epoch().as_nanos();
    let new = dir.join(format!("..{stamp}"));
    std::fs::create_dir(&new)?;
    // A `..data` pointing nowhere (a crash, a hand edit) means starting from an empty set.
    // Both generations are reached from one handle on `dir`, never through a link (one put in
    // place of either meanwhile is refused); only files and directories are linked, the
    // loader writes nothing else.
    if let Some(old) = current(dir)
        && let Err(e) = common::files::Dir::open(dir).and_then(|d| {
            let name = |p: &Path| p.file_name().unwrap_or_default().to_os_string();
            d.link_tree(&name(&old), &name(&new))
        })
    {
        abandon(&new);
        return Err(e);
    }
    Ok(new)
}

/// Atomically replaces `link` with a symlink to `target`.
fn replace_symlink(target: &Path, link: &Path) -> io::Result<()> {
    let name = link.file_name().unwrap_or_default();
    let tmp = link.with_file_name(common::files::staging_name(name, true)?);
    symlink(target, &tmp)?;
    std::fs::rename(&tmp, link).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Moves the real directories standing where the new set's top-level links go out of the
/// way (a sync without --atomic-set leaves them; a link cannot be renamed over a directory).
/// Each move is recorded in `moved` as it happens, so that a failure can be undone.
fn move_aside(
    dir: &Path,
    names: &[OsString],
    moved: &mut Vec<(PathBuf, PathBuf)>,
) -> io::Result<()> {
    for name in names {
        let path = dir.join(name);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            // An unpredictable name: one someone sharing the directory could guess would let
            // them block the swap (a directory planted there) or have it moved into theirs.
            let aside = dir.join(common::files::staging_name(name, false)?);
            std::fs::rename(&path, &aside)?;
            moved.push((path, aside));
        }
    }
    Ok(())
}

/// Publishes `new`: swaps `..data`, adds and removes top-level symlinks, removes the old
/// generation. An error is returned only if nothing was published (directories moved aside
/// are back where they were, and the caller may drop `new`); once `..data` points at `new`,
/// later problems are logged, never undone.
pub fn commit(dir: &Path, new: &Path) -> io::Result<()> {
    let old = current(dir);
    let new_name = new.file_name().map(PathBuf::from).unwrap_or_default();
    let entries = |gen_dir: &Path| -> io::Result<Vec<OsString>> {
        std::fs::read_dir(gen_dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect()
    };
    let names = entries(new)?;
    let mut moved = Vec::new();
    let swapped = move_aside(dir, &names, &mut moved)
        .and_then(|()| replace_symlink(&new_name, &dir.join(DATA)));
    if let Err(e) = swapped {
        for (path, aside) in moved.iter().rev() {
            if let Err(back) = std::fs::rename(aside, path) {
                tracing::error!(dir = %path.display(), aside = %aside.display(), error = %back, "cannot move a directory back after a failed swap");
            }
        }
        return Err(e);
    }
    let warn =
        |what: &str, e: io::Error| tracing::warn!(dir = %dir.display(), error = %e, "{what}");
    for name in &names {
        let link = dir.join(name);
        let target = Path::new(DATA).join(name);
        if std::fs::read_link(&link).ok().as_deref() != Some(target.as_path())
            && let Err(e) = replace_symlink(&target, &link)
        {
            warn("cannot link a top-level entry of the new set", e);
        }
    }
    for (_, aside) in moved {
        if let Err(e) = std::fs::remove_dir_all(&aside) {
            warn("cannot remove a replaced directory", e);
        }
    }
    if let Some(old) = old.filter(|o| o != new) {
        for name in entries(&old).unwrap_or_default() {
            if !new.join(&name).exists() {
                let link = dir.join(&name);
                if std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink())
                    && let Err(e) = std::fs::remove_file(&link)
                {
                    warn("cannot remove the symlink of a deleted entry", e);
                }
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&old) {
            warn("cannot remove the previous generation", e);
        }
    }
    Ok(())
}

/// Drops a generation that turned out not to be needed.
pub fn abandon(new: &Path) {
    let _ = std::fs::remove_dir_all(new);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(label: &str) -> PathBuf {
        common::files::scratch_dir(&format!("s3cl-gen-{label}"))
    }

    /// A loader killed between moving a directory aside and publishing its replacement
    /// leaves it aside: the next start puts it back, or drops it once it was replaced.
    #[test]
    fn a_directory_left_aside_by_a_crash_goes_back_or_goes() {
        let dir = temp_dir("crash");
        let aside = dir.join(common::files::staging_name("conf".as_ref(), false).unwrap());
        std::fs::create_dir(&aside).unwrap();
        std::fs::write(aside.join("a.yaml"), "a").unwrap();
        remove_stale(&dir);
        assert_eq!(
            std::fs::read_to_string(dir.join("conf/a.yaml")).unwrap(),
            "a"
        );
        assert!(!aside.exists());

        std::fs::create_dir(&aside).unwrap();
        std::fs::write(aside.join("a.yaml"), "older").unwrap();
        remove_stale(&dir);
        assert!(!aside.exists(), "replaced: dropped");
        assert_eq!(
            std::fs::read_to_string(dir.join("conf/a.yaml")).unwrap(),
            "a"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A directory of a sync without --atomic-set is moved aside under a name no one can plant
    /// first: the pid-named place of earlier versions, taken, stopped every swap.
    #[test]
    fn a_directory_planted_where_one_is_moved_aside_does_not_block_the_swap() {
        let dir = temp_dir("aside");
        std::fs::create_dir(dir.join("conf")).unwrap();
        std::fs::write(dir.join("conf/old.yaml"), "old").unwrap();
        let planted = dir.join(format!(".conf.replaced-{}", std::process::id()));
        std::fs::create_dir(&planted).unwrap();
        std::fs::write(planted.join("theirs"), "x").unwrap();
        let new = prepare(&dir).unwrap();
        std::fs::create_dir(new.join("conf")).unwrap();
        std::fs::write(new.join("conf/new.yaml"), "new").unwrap();
        commit(&dir, &new).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("conf/new.yaml")).unwrap(),
            "new"
        );
        assert!(!dir.join("conf/old.yaml").exists());
        assert!(
            planted.join("theirs").exists(),
            "someone else's directory is left alone"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_our_generation_names_count() {
        assert!(is_generation_name("..1796113495848448242"));
        for other in ["..data", "..", "..1a", "/etc", "../outside", ".1", "..1/x"] {
            assert!(!is_generation_name(other), "{other:?}");
        }
        assert_eq!(moved_aside_from(".conf.tmp-abc123"), Some("conf"));
        assert_eq!(
            moved_aside_from("..well-known.tmp-abc"),
            Some(".well-known")
        );
        for other in [
            "conf",
            ".conf.tmp-",
            "...data.tmp-abc",
            ".tmp-abc-conf",
            ".x.tmp-ABC",
        ] {
            assert_eq!(moved_aside_from(other), None, "{other:?}");
        }
    }
}
