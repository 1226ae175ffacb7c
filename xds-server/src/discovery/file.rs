//! Endpoint files: a JSON list of `"ip:port"` strings (or `{"address": "ip:port", "zone": NAME}`
//! objects), re-read when their content changes.

use std::path::PathBuf;

use super::{DiscoveryError, Source};
use crate::catalog::{Endpoint, EndpointEntry};

/// Polls one endpoint file.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    last: Option<Vec<u8>>,
}

impl FileSource {
    /// A source for `path`; nothing is read until the first fetch.
    pub fn new(path: PathBuf) -> Self {
        Self { path, last: None }
    }
}

/// Parses the content of an endpoint file.
pub fn parse_endpoints(
    path: &std::path::Path,
    bytes: &[u8],
) -> Result<Vec<Endpoint>, DiscoveryError> {
    let invalid = |reason: String| DiscoveryError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let list: Vec<EndpointEntry> = serde_json::from_slice(bytes).map_err(|e| {
        invalid(format!(
            "expected a JSON list of \"ip:port\" strings or {{\"address\", \"zone\"}} objects: {e}"
        ))
    })?;
    list.iter()
        .enumerate()
        .map(|(i, s)| s.endpoint().map_err(|e| invalid(format!("[{i}]: {e}"))))
        .collect()
}

impl Source for FileSource {
    async fn fetch(&mut self) -> Result<Option<Vec<Endpoint>>, DiscoveryError> {
        let bytes = tokio::fs::read(&self.path)
            .await
            .map_err(|e| DiscoveryError::Read {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        if self.last.as_deref() == Some(&bytes[..]) {
            return Ok(None);
        }
        let eps = parse_endpoints(&self.path, &bytes)?;
        self.last = Some(bytes);
        Ok(Some(eps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_changes_and_keeps_quiet_otherwise() {
        let dir = common::files::scratch_dir("xds-file-source");
        let path = dir.join("eps.json");
        let mut src = FileSource::new(path.clone());
        assert!(matches!(
            src.fetch().await,
            Err(DiscoveryError::Read { .. })
        ));
        std::fs::write(
            &path,
            r#"["127.0.0.1:80", {"address": "127.0.0.2:81", "zone": "us-east-1b"}]"#,
        )
        .unwrap();
        let eps = src.fetch().await.unwrap().unwrap();
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[1].zone.as_ref().map(|z| z.as_str()), Some("us-east-1b"));
        assert_eq!(src.fetch().await.unwrap(), None);
        std::fs::write(&path, r#"["127.0.0.1"]"#).unwrap();
        let err = src.fetch().await.unwrap_err().to_string();
        assert!(err.ends_with(r#"[0]: "127.0.0.1" has no port"#), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
