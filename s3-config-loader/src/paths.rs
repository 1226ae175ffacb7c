//! Mapping object keys to local paths, refusing any key that would leave the target directory.

use std::path::{Component, Path, PathBuf};

/// Why a key cannot become a local file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsafeKey {
    /// A `..` component.
    #[error("key {0:?} has a `..` component and would leave the target directory")]
    ParentDir(String),
    /// Starts with `/`.
    #[error("key {0:?} is an absolute path")]
    Absolute(String),
    /// Contains a backslash (a path separator elsewhere).
    #[error("key {0:?} contains a backslash")]
    BadCharacter(String),
    /// Contains a control character: a newline or carriage return would split the
    /// `S3CL_CHANGED` list hooks read, a NUL ends a path early.
    #[error(
        "key {0:?} contains a control character (line breaks would split the S3CL_CHANGED list hooks read)"
    )]
    ControlCharacter(String),
    /// A name the loader uses itself in the directory (`..data`, the state file, staging files).
    #[error("key {0:?} would overwrite a file the loader itself keeps in the directory")]
    Reserved(String),
    /// Nothing left after the prefix, or an empty component (`a//b`).
    #[error("key {0:?} has an empty path component")]
    Empty(String),
}

/// The path of `key` relative to the target directory, after removing `prefix`.
pub fn relative_path(key: &str, prefix: &str) -> Result<PathBuf, UnsafeKey> {
    let rel = key.strip_prefix(prefix).unwrap_or(key);
    if rel.chars().any(char::is_control) {
        return Err(UnsafeKey::ControlCharacter(key.into()));
    }
    if rel.contains('\\') {
        return Err(UnsafeKey::BadCharacter(key.into()));
    }
    if rel.starts_with('/') {
        return Err(UnsafeKey::Absolute(key.into()));
    }
    if rel.is_empty() || rel.split('/').any(str::is_empty) {
        return Err(UnsafeKey::Empty(key.into()));
    }
    let mut out = PathBuf::new();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(UnsafeKey::ParentDir(key.into())),
            Component::RootDir | Component::Prefix(_) => {
                return Err(UnsafeKey::Absolute(key.into()));
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(UnsafeKey::Empty(key.into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_nested_keys_inside() {
        assert_eq!(
            relative_path("cfg/a/b.yaml", "cfg/").unwrap(),
            PathBuf::from("a/b.yaml")
        );
        assert_eq!(
            relative_path("cfg/./b.yaml", "cfg/").unwrap(),
            PathBuf::from("b.yaml")
        );
    }

    #[test]
    fn refuses_escapes() {
        for key in [
            "cfg/../../etc/x",
            "cfg//abs",
            "cfg/a\\b",
            "cfg/a\0b",
            "cfg/",
            "cfg/a//b",
            "cfg/..",
            "cfg/a\nb",
            "cfg/a\rb",
            "cfg/a\tb",
            "cfg/a\u{7f}b",
            "cfg/a\u{85}b",
        ] {
            assert!(relative_path(key, "cfg/").is_err(), "{key:?} was accepted");
        }
        assert!(matches!(
            relative_path("cfg/../../etc/x", "cfg/"),
            Err(UnsafeKey::ParentDir(_))
        ));
        assert!(matches!(
            relative_path("cfg/a\nb", "cfg/"),
            Err(UnsafeKey::ControlCharacter(_))
        ));
        assert!(matches!(
            relative_path("/abs", ""),
            Err(UnsafeKey::Absolute(_))
        ));
    }
}
