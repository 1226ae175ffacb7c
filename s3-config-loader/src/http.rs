//! A minimal HTTP/1.1 client for the two plain-HTTP peers on the task's own link: the ECS task
//! metadata endpoint and reload hooks (`--post`). HTTPS is not needed for either.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Not an `http://host[:port]/path` URL.
    #[error("unsupported URL {0:?} (only http://HOST[:PORT]/PATH)")]
    Url(String),
    /// Connecting, sending or reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// No answer in time.
    #[error("no answer within 5s")]
    Timeout,
    /// A non-2xx status.
    #[error("HTTP {0}")]
    Status(u16),
    /// Not an HTTP response.
    #[error("malformed response")]
    Malformed,
}

fn split(url: &str) -> Result<(String, String), HttpError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| HttpError::Url(url.into()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(HttpError::Url(url.into()));
    }
    let authority = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_string()))
}

async fn request(method: &str, url: &str) -> Result<Vec<u8>, HttpError> {
    let (authority, path) = split(url)?;
    let work = async {
        let mut conn = TcpStream::connect(&authority).await?;
        let host = authority
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(&authority);
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: {host}\r\ncontent-length: 0\r\nconnection: close\r\nuser-agent: s3-config-loader\r\n\r\n"
        );
        conn.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).await?;
        Ok::<_, HttpError>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .map_err(|_| HttpError::Timeout)??;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(HttpError::Malformed)?;
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(HttpError::Malformed)?;
    if !(200..300).contains(&status) {
        return Err(HttpError::Status(status));
    }
    let body = &raw[end + 4..];
    if head.contains("transfer-encoding: chunked") {
        return dechunk(body).ok_or(HttpError::Malformed);
    }
    Ok(body.to_vec())
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&body[..line_end]).ok()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

/// `GET url`; the body of a 2xx answer.
pub async fn get(url: &str) -> Result<Vec<u8>, HttpError> {
    request("GET", url).await
}

/// `POST url` with an empty body; succeeds on a 2xx answer.
pub async fn post(url: &str) -> Result<(), HttpError> {
    request("POST", url).await.map(|_| ())
}
