//! HTTP/1.1 requests, through hyper's client, to the two plain-HTTP peers on the task's own
//! link: the ECS task metadata endpoint and reload hooks (`--post`). HTTPS is needed for
//! neither, so no TLS stack is involved.

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::USER_AGENT;
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The longest a request may take, answer included.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read (metadata documents are a few kB).
const MAX_BODY: usize = 1024 * 1024;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Not an `http://host[:port]/path` URL.
    #[error("unsupported URL {0:?} (only http://HOST[:PORT]/PATH)")]
    Url(String),
    /// Connecting, sending or reading failed.
    #[error("{0}")]
    Transport(String),
    /// No answer in time.
    #[error("no answer within 5s")]
    Timeout,
    /// A non-2xx status.
    #[error("HTTP {0}")]
    Status(u16),
}

fn parse(url: &str) -> Result<Uri, HttpError> {
    let bad = || HttpError::Url(url.into());
    let uri: Uri = url.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("http") || uri.host().is_none_or(str::is_empty) {
        return Err(bad());
    }
    Ok(uri)
}

async fn request(method: Method, url: &str, max_body: usize) -> Result<Bytes, HttpError> {
    let uri = parse(url)?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(USER_AGENT, "s3-config-loader")
        .body(Empty::new())
        .map_err(|_| HttpError::Url(url.into()))?;
    let work = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| HttpError::Transport(common::aws::error_chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(HttpError::Status(status.as_u16()));
        }
        let body = Limited::new(response.into_body(), max_body)
            .collect()
            .await
            .map_err(|e| HttpError::Transport(format!("reading the answer: {e}")))?;
        Ok(body.to_bytes())
    };
    tokio::time::timeout(TIMEOUT, work)
        .await
        .map_err(|_| HttpError::Timeout)?
}

/// `GET url`; the body of a 2xx answer.
pub async fn get(url: &str) -> Result<Vec<u8>, HttpError> {
    get_up_to(url, MAX_BODY).await
}

/// `GET url`, reading at most `max_body` bytes of the answer (bigger documents than metadata,
/// e.g. a control plane's list of connected proxies).
pub async fn get_up_to(url: &str, max_body: usize) -> Result<Vec<u8>, HttpError> {
    request(Method::GET, url, max_body)
        .await
        .map(|b| b.to_vec())
}

/// `POST url` with an empty body; succeeds on a 2xx answer.
pub async fn post(url: &str) -> Result<(), HttpError> {
    request(Method::POST, url, MAX_BODY).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_with_a_host() {
        assert!(parse("http://169.254.170.2/v4/abc").is_ok());
        assert!(parse("http://[::1]:9090/-/reload").is_ok());
        for url in [
            "https://example.org/",
            "ftp://x/",
            "http:///path",
            "localhost:80/",
            "",
        ] {
            assert!(matches!(parse(url), Err(HttpError::Url(_))), "{url:?}");
        }
    }
}
