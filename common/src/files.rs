//! Atomic file replacement that whoever shares the directory cannot turn against the writer:
//! readers see the old file or the new one, never a part, and no link planted in the directory
//! sends a write anywhere else.
//!
//! The directory is opened once ([`Dir`]); every file below it is reached from that handle one
//! component at a time with `O_NOFOLLOW`, so a symbolic link in place of a subdirectory is
//! refused rather than followed. A new file is staged under an unpredictable name, created with
//! `O_CREAT | O_EXCL | O_NOFOLLOW` and its final permission bits (it is never more open than it
//! will be), given its owner through its descriptor, fsynced, then renamed over the target
//! relative to the directory handle: a link at the target is replaced, never written through.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags};
use rustix::io::Errno;

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

/// How long the random part of a staging name is; 36^10 names are not guessed.
const RANDOM_LEN: usize = 10;
const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn random_part() -> io::Result<String> {
    let mut bytes = [0u8; RANDOM_LEN];
    rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty())?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect())
}

/// A fresh name for a staging file (or link) beside `name`, hidden and recognisably ours:
/// `.NAME.tmp-RANDOM`, so that globs such as `*.json` or `*.yml` (file_sd, rule files) never
/// match it; with `keep_extension`, `.tmp-RANDOM-NAME`, for programs that pick the format by
/// extension (`envoy --mode validate`).
pub fn staging_name(name: &OsStr, keep_extension: bool) -> io::Result<OsString> {
    let random = random_part()?;
    let name = name.to_string_lossy();
    Ok(if keep_extension {
        format!(".tmp-{random}-{name}")
    } else {
        format!(".{name}.tmp-{random}")
    }
    .into())
}

/// Whether `name` is one that [`staging_name`] gives (or the pid-named staging files of earlier
/// versions).
pub fn is_staging_name(name: &str) -> bool {
    let ours = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    let extension_kept = name
        .strip_prefix(".tmp-")
        .and_then(|r| r.split_once('-'))
        .is_some_and(|(random, rest)| ours(random) && !rest.is_empty());
    let hidden = name.starts_with('.')
        && name
            .rsplit_once(".tmp-")
            .is_some_and(|(head, random)| head.len() > 1 && ours(random));
    extension_kept || hidden
}

fn not_followed(dir: &Path, rel: &Path) -> io::Error {
    io::Error::other(format!(
        "{} is a symbolic link or not a directory (links inside {} are not followed)",
        dir.join(rel).display(),
        dir.display()
    ))
}

/// A directory opened once: files below it are reached from this handle, never through a
/// symbolic link.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Opens an existing directory. `path` itself is the operator's choice and may go through
    /// links; nothing below it does.
    pub fn open(path: &Path) -> io::Result<Dir> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(CWD, path, flags, Mode::empty())?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Opens `path`, creating it and its parents first when missing.
    pub fn create(path: &Path) -> io::Result<Dir> {
        std::fs::create_dir_all(path)?;
        Dir::open(path)
    }

    /// The path the directory was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory holding `rel` (opened component by component, without following links;
    /// with `create`, missing ones are made) and `rel`'s file name.
    fn parent_of(&self, rel: &Path, create: bool) -> io::Result<(OwnedFd, OsString)> {
        let mut parts = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(p) => parts.push(p),
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "{} is not a path inside {}",
                            rel.display(),
                            self.path.display()
                        ),
                    ));
                }
            }
        }
        let Some((name, dirs)) = parts.split_last() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an empty path names no file",
            ));
        };
        let mut current = self.fd.try_clone()?;
        let mut walked = PathBuf::new();
        for part in dirs {
            walked.push(part);
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let open = |at: &OwnedFd| rustix::fs::openat(at, *part, flags, Mode::empty());
            current = match open(&current) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&current, *part, Mode::from_raw_mode(0o777)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    open(&current).map_err(|e| match e {
                        Errno::LOOP | Errno::NOTDIR => not_followed(&self.path, &walked),
                        e => e.into(),
                    })?
                }
                Err(Errno::LOOP | Errno::NOTDIR) => return Err(not_followed(&self.path, &walked)),
                Err(e) => return Err(e.into()),
            };
        }
        Ok((current, name.to_os_string()))
    }

    /// The content of the regular file at `rel`; a link there is an error, not followed, and
    /// so is anything else that is not a regular file.
    pub fn read(&self, rel: &Path) -> io::Result<Vec<u8>> {
        let (parent, name) = self.parent_of(rel, false)?;
        // Non-blocking: opening a named pipe for reading otherwise waits for a writer, and
        // anyone sharing the directory can plant one where a file goes.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&parent, &name, flags, Mode::empty())?;
        if FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode) != FileType::RegularFile {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", self.path.join(rel).display()),
            ));
        }
        let mut out = Vec::new();
        std::fs::File::from(fd).read_to_end(&mut out)?;
        Ok(out)
    }

    /// Removes the file (or link) at `rel`, never what a link points at.
    pub fn remove_file(&self, rel: &Path) -> io::Result<()> {
        let (parent, name) = self.parent_of(rel, false)?;
        rustix::fs::unlinkat(&parent, &name, AtFlags::empty())?;
        Ok(())
    }

    /// Writes `bytes` to a new staging file beside `rel` (subdirectories made as needed),
    /// fsynced, with the options applied; [`Staged::publish`] puts it in place, and dropping
    /// it unpublished removes it.
    pub fn stage(
        &self,
        rel: &Path,
        bytes: &[u8],
        opts: FileOptions,
        keep_extension: bool,
    ) -> io::Result<Staged> {
        let (parent, target) = self.parent_of(rel, true)?;
        // Only permission bits at open (umask applies, so never more open than asked); the
        // exact mode, with any special bits, is set once the owner is right.
        let open_mode = opts.mode.unwrap_or(0o666) & 0o777;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut attempts = 0;
        let (fd, staging) = loop {
            let staging = staging_name(&target, keep_extension)?;
            match rustix::fs::openat(&parent, &staging, flags, Mode::from_raw_mode(open_mode)) {
                Ok(fd) => break (fd, staging),
                // Someone holds that name (a planted link, another writer): take another.
                Err(Errno::EXIST) if attempts < 8 => attempts += 1,
                Err(e) => return Err(e.into()),
            }
        };
        let path = match rel.parent() {
            Some(p) => self.path.join(p).join(&staging),
            None => self.path.join(&staging),
        };
        let staged = Staged {
            dir: parent,
            staging,
            target,
            path,
            published: false,
        };
        let mut file = std::fs::File::from(fd);
        file.write_all(bytes)?;
        if opts.uid.is_some() || opts.gid.is_some() {
            std::os::unix::fs::fchown(&file, opts.uid, opts.gid)?;
        }
        // After fchown, which clears set-user-id and set-group-id bits.
        if let Some(mode) = opts.mode {
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        file.sync_all()?;
        Ok(staged)
    }

    /// Replaces `rel` with `bytes` atomically; does nothing (returns false) when the file
    /// already holds exactly these bytes.
    pub fn write_atomic(&self, rel: &Path, bytes: &[u8], opts: FileOptions) -> io::Result<bool> {
        if self.read(rel).is_ok_and(|old| old == bytes) {
            return Ok(false);
        }
        self.stage(rel, bytes, opts, false)?.publish()?;
        Ok(true)
    }

    /// Fills `to`, a directory directly in this one, with hard links to the regular files below
    /// `from`, another, in the same subdirectories (made as needed). Nothing is reached through
    /// a link: a link at `from` or `to`, or below them, is refused or left out, so a directory
    /// swapped for a link meanwhile never makes links or directories elsewhere.
    pub fn link_tree(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        let open = |name: &OsStr| -> io::Result<OwnedFd> {
            rustix::fs::openat(&self.fd, name, DIR_NOFOLLOW, Mode::empty()).map_err(|e| match e {
                Errno::LOOP | Errno::NOTDIR => not_followed(&self.path, Path::new(name)),
                e => e.into(),
            })
        };
        link_below(&open(from)?, &open(to)?)
    }

    /// Removes the staging files (and links) that a killed process left in the directory and
    /// in every directory below it (reached without following links, as writes are).
    pub fn remove_stale_staging(&self) {
        remove_staging_below(&self.fd);
    }
}

/// Opens a directory below another without following a link.
const DIR_NOFOLLOW: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

fn link_below(from: &OwnedFd, to: &OwnedFd) -> io::Result<()> {
    for entry in rustix::fs::Dir::read_from(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if matches!(name.to_bytes(), b"." | b"..") {
            continue;
        }
        let kind = rustix::fs::statat(from, name, AtFlags::SYMLINK_NOFOLLOW)
            .map(|s| FileType::from_raw_mode(s.st_mode))?;
        match kind {
            FileType::Directory => {
                rustix::fs::mkdirat(to, name, Mode::from_raw_mode(0o777))?;
                let sub_from = rustix::fs::openat(from, name, DIR_NOFOLLOW, Mode::empty())?;
                let sub_to = rustix::fs::openat(to, name, DIR_NOFOLLOW, Mode::empty())?;
                link_below(&sub_from, &sub_to)?;
            }
            FileType::RegularFile => rustix::fs::linkat(from, name, to, name, AtFlags::empty())?,
            // Only files and directories are the writer's: anything else was put there by
            // someone else.
            _ => {}
        }
    }
    Ok(())
}

fn remove_staging_below(dir: &OwnedFd) {
    let Ok(entries) = rustix::fs::Dir::read_from(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if matches!(name.to_bytes(), b"." | b"..") {
            continue;
        }
        let kind = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .map(|s| FileType::from_raw_mode(s.st_mode));
        match kind {
            Ok(FileType::Directory) => {
                if let Ok(sub) = rustix::fs::openat(dir, name, DIR_NOFOLLOW, Mode::empty()) {
                    remove_staging_below(&sub);
                }
            }
            Ok(FileType::RegularFile | FileType::Symlink)
                if is_staging_name(&String::from_utf8_lossy(name.to_bytes())) =>
            {
                let _ = rustix::fs::unlinkat(dir, name, AtFlags::empty());
            }
            _ => {}
        }
    }
}

/// A file written beside its target, not yet in place.
#[derive(Debug)]
pub struct Staged {
    dir: OwnedFd,
    staging: OsString,
    target: OsString,
    path: PathBuf,
    published: bool,
}

impl Staged {
    /// Where the staged file is, e.g. for a validator to read it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the staged file over its target (relative to the directory handle, so a link
    /// at the target is replaced, not followed) and makes the rename durable.
    pub fn publish(mut self) -> io::Result<()> {
        rustix::fs::renameat(&self.dir, &self.staging, &self.dir, &self.target)?;
        self.published = true;
        // The rename is durable once the directory entry is.
        let _ = rustix::fs::fsync(self.dir.as_fd());
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.published {
            let _ = rustix::fs::unlinkat(&self.dir, &self.staging, AtFlags::empty());
        }
    }
}

/// `path`'s directory and file name.
fn split(path: &Path) -> io::Result<(&Path, &Path)> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((parent, Path::new(name)))
}

/// Replaces the file at `path` with `bytes` atomically (see [`Dir::write_atomic`]); its
/// directory is created when missing.
pub fn write_atomic(path: &Path, bytes: &[u8], opts: FileOptions) -> io::Result<bool> {
    let (parent, name) = split(path)?;
    Dir::create(parent)?.write_atomic(name, bytes, opts)
}

/// The content of the regular file at `path` (see [`Dir::read`]: a link or a named pipe
/// there is an error, neither followed nor waited on).
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let (parent, name) = split(path)?;
    Dir::open(parent)?.read(name)
}

/// A fresh, empty directory under the system's temporary directory, named after `label` and
/// this process: for the unit tests of the crates that write files.
pub fn scratch_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, symlink};

    fn scratch(label: &str) -> PathBuf {
        scratch_dir(&format!("common-files-{label}"))
    }

    #[test]
    fn replaces_and_skips_identical_bytes() {
        let dir = scratch("replace");
        let path = dir.join("sub/f.txt");
        let opts = FileOptions {
            mode: Some(0o600),
            ..Default::default()
        };
        assert!(write_atomic(&path, b"one", opts).unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
        assert!(!write_atomic(&path, b"one", FileOptions::default()).unwrap());
        assert!(write_atomic(&path, b"two", FileOptions::default()).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let leftovers: Vec<_> = std::fs::read_dir(dir.join("sub")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "a staging file was left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn links_inside_are_replaced_or_refused_never_followed() {
        let dir = scratch("links");
        let outside = scratch("links-outside");
        std::fs::write(outside.join("victim"), "precious").unwrap();
        symlink(outside.join("victim"), dir.join("target")).unwrap();
        symlink(&outside, dir.join("sub")).unwrap();
        let d = Dir::open(&dir).unwrap();
        assert!(d.read(Path::new("target")).is_err(), "read through a link");
        assert!(
            d.write_atomic(Path::new("target"), b"new", FileOptions::default())
                .unwrap()
        );
        let e = d
            .write_atomic(Path::new("sub/x"), b"x", FileOptions::default())
            .unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(d.remove_file(Path::new("sub/victim")).is_err());
        assert!(d.read(Path::new("../x")).is_err());
        assert_eq!(
            std::fs::read_to_string(outside.join("victim")).unwrap(),
            "precious"
        );
        assert!(!outside.join("x").exists());
        let meta = std::fs::symlink_metadata(dir.join("target")).unwrap();
        assert!(meta.file_type().is_file());
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    fn a_named_pipe_is_replaced_never_waited_on() {
        let dir = scratch("fifo");
        let pipe = dir.join("f");
        let made = std::process::Command::new("mkfifo")
            .arg(&pipe)
            .status()
            .unwrap();
        assert!(made.success());
        let e = read(&pipe).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert!(write_atomic(&pipe, b"x", FileOptions::default()).unwrap());
        assert_eq!(read(&pipe).unwrap(), b"x");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn staging_names_are_unpredictable_and_recognised() {
        let a = staging_name(OsStr::new("30s-tasks.json"), false).unwrap();
        let b = staging_name(OsStr::new("30s-tasks.json"), false).unwrap();
        assert_ne!(a, b);
        let kept = staging_name(OsStr::new("envoy.yaml"), true).unwrap();
        assert!(kept.to_string_lossy().ends_with("-envoy.yaml"), "{kept:?}");
        for name in [&a, &b, &kept] {
            assert!(is_staging_name(&name.to_string_lossy()), "{name:?}");
        }
        // The pid-named files of earlier versions, too.
        assert!(is_staging_name(".a.json.tmp-123") && is_staging_name(".tmp-123-a.yaml"));
        for other in [
            "a.json",
            ".tmp-",
            ".tmp-x",
            ".hidden",
            "a.tmp-1",
            ".tmp-A-b",
            ".x.tmp-UP",
        ] {
            assert!(!is_staging_name(other), "{other:?}");
        }
    }

    #[test]
    fn stale_staging_files_go_and_others_stay() {
        let dir = scratch("stale");
        for name in [".a.tmp-12", ".tmp-ab12-b.yaml", "keep.txt", ".keep"] {
            std::fs::write(dir.join(name), "x").unwrap();
        }
        symlink("/nowhere", dir.join(".c.tmp-zz")).unwrap();
        // Below, too (a key such as conf/app.yaml is staged in conf/), but never through a link.
        std::fs::create_dir_all(dir.join("conf/deep")).unwrap();
        std::fs::write(dir.join("conf/.app.yaml.tmp-ab12"), "x").unwrap();
        std::fs::write(dir.join("conf/deep/.tmp-cd34-b.yaml"), "x").unwrap();
        std::fs::write(dir.join("conf/deep/b.yaml"), "x").unwrap();
        let outside = scratch("stale-outside");
        std::fs::write(outside.join(".theirs.tmp-ab12"), "x").unwrap();
        symlink(&outside, dir.join("elsewhere")).unwrap();
        Dir::open(&dir).unwrap().remove_stale_staging();
        assert!(!dir.join("conf/.app.yaml.tmp-ab12").exists());
        assert!(!dir.join("conf/deep/.tmp-cd34-b.yaml").exists());
        assert!(dir.join("conf/deep/b.yaml").exists());
        assert!(outside.join(".theirs.tmp-ab12").exists(), "followed a link");
        std::fs::remove_dir_all(&outside).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".keep", "conf", "elsewhere", "keep.txt"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A directory swapped for a link between its creation and its filling (someone sharing
    /// the directory) never gets links or directories made elsewhere.
    #[test]
    fn a_tree_is_linked_below_the_directory_only() {
        let dir = scratch("tree");
        let outside = scratch("tree-outside");
        std::fs::create_dir_all(dir.join("old/sub")).unwrap();
        std::fs::write(dir.join("old/a"), "a").unwrap();
        std::fs::write(dir.join("old/sub/b"), "b").unwrap();
        symlink("/etc/hostname", dir.join("old/link")).unwrap();
        std::fs::create_dir(dir.join("new")).unwrap();
        let d = Dir::open(&dir).unwrap();
        d.link_tree("old".as_ref(), "new".as_ref()).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("new/sub/b")).unwrap(), "b");
        let meta = |p: &str| std::fs::metadata(dir.join(p)).unwrap();
        assert_eq!(meta("new/a").ino(), meta("old/a").ino(), "a hard link");
        assert!(!dir.join("new/link").exists(), "links are left out");

        symlink(&outside, dir.join("swapped")).unwrap();
        let e = d.link_tree("old".as_ref(), "swapped".as_ref()).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }

    #[test]
    fn an_unpublished_stage_leaves_nothing() {
        let dir = scratch("drop");
        let d = Dir::open(&dir).unwrap();
        let staged = d
            .stage(Path::new("f"), b"x", FileOptions::default(), true)
            .unwrap();
        assert!(staged.path().exists());
        let path = staged.path().to_path_buf();
        drop(staged);
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
