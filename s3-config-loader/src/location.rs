//! `s3://BUCKET/KEY` locations.

use std::fmt;
use std::str::FromStr;

/// A bucket and a key (or key prefix).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct S3Location {
    /// The bucket name.
    pub bucket: String,
    /// The key, or for `sync` the prefix (empty for the whole bucket).
    pub key: String,
}

/// Why a string is not an S3 location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an S3 location (write s3://BUCKET/KEY)")]
pub struct BadLocation(pub String);

impl FromStr for S3Location {
    type Err = BadLocation;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("s3://")
            .ok_or_else(|| BadLocation(s.into()))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(BadLocation(s.into()));
        }
        Ok(S3Location {
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bucket_and_key() {
        let l: S3Location = "s3://atala-cvp/envoy/bootstrap.yaml".parse().unwrap();
        assert_eq!(
            (l.bucket.as_str(), l.key.as_str()),
            ("atala-cvp", "envoy/bootstrap.yaml")
        );
        let l: S3Location = "s3://bucket".parse().unwrap();
        assert_eq!(l.key, "");
        assert!("bucket/key".parse::<S3Location>().is_err());
        assert!("s3:///key".parse::<S3Location>().is_err());
    }
}
