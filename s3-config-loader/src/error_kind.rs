//! The kinds of per-object problems of a pass: [`crate::sync`] meets them, and they are the
//! `kind` label of `s3cl_errors_total` ([`crate::metrics`]), which exists for each from the
//! start. Apart from both, so that neither module imports the other's internals.

/// The kind of a per-object problem, also the `kind` label of the error metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    /// The key would leave the target directory.
    UnsafeKey,
    /// Larger than `--max-size`.
    TooLarge,
    /// The object could not be fetched (network, permission, missing).
    Download,
    /// The body did not match its checksum.
    Checksum,
    /// The template could not be rendered.
    Template,
    /// `--validate` refused the file.
    Validation,
    /// The file could not be written.
    Write,
    /// Two objects map to the same file (`x` and `x.tmpl`).
    Conflict,
    /// The prefix lists no objects at all (without `--allow-empty`).
    Empty,
}

impl ErrorKind {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::UnsafeKey => "unsafe_key",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Download => "download",
            ErrorKind::Checksum => "checksum",
            ErrorKind::Template => "template",
            ErrorKind::Validation => "validation",
            ErrorKind::Write => "write",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Empty => "empty",
        }
    }

    /// Every kind, for metrics that exist from the start.
    pub const ALL: [ErrorKind; 9] = [
        ErrorKind::UnsafeKey,
        ErrorKind::TooLarge,
        ErrorKind::Download,
        ErrorKind::Checksum,
        ErrorKind::Template,
        ErrorKind::Validation,
        ErrorKind::Write,
        ErrorKind::Conflict,
        ErrorKind::Empty,
    ];
}
