//! Attestation through AWS STS, the way Vault and Consul do it on AWS: the proxy signs an
//! `sts:GetCallerIdentity` request with its task role's credentials but does not send it; the
//! control plane checks what was signed, forwards it to STS, and STS's answer says who signed.
//!
//! What makes a signed request useless to anyone who copies it: it is only accepted by the
//! control plane its signed `X-Xds-Server-Id` header names, for 5 minutes after it was made,
//! only with the CSR whose SHA-256 its signed `X-Xds-Csr-Sha256` header carries (so a copy
//! gets a certificate only for the signer's own key), and only forwarded to the STS endpoint
//! this control plane uses itself (never to a URL the client picks), with only the headers STS
//! needs. It carries no credential: STS checks the signature, nobody else can.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

/// The signed header that names the control plane a request is for.
pub const SERVER_ID_HEADER: &str = "x-xds-server-id";
/// The signed header that binds a request to one CSR: the hex SHA-256 of the CSR's PEM text.
pub const CSR_HASH_HEADER: &str = "x-xds-csr-sha256";
/// How old a signed request may be.
pub const MAX_AGE: Duration = Duration::from_secs(5 * 60);
/// How far ahead of the control plane's clock a signed request may be dated.
pub const MAX_AHEAD: Duration = Duration::from_secs(60);
/// The headers forwarded to STS, when signed (with `authorization`); signing any other is
/// refused, and other unsigned headers are dropped.
const FORWARDED: &[&str] = &[
    "host",
    "content-type",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
    SERVER_ID_HEADER,
    CSR_HASH_HEADER,
];
/// The only request that is forwarded.
pub const BODY: &str = "Action=GetCallerIdentity&Version=2011-06-15";
const CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";
/// The most headers, and the longest header value (a role session token is 1-2 kB), accepted.
const MAX_HEADERS: usize = 16;
const MAX_HEADER_VALUE: usize = 8192;
/// How long STS gets to answer.
const STS_TIMEOUT: Duration = Duration::from_secs(10);

/// The STS endpoint of `region`: `AWS_ENDPOINT_URL_STS`, else `AWS_ENDPOINT_URL`, else the
/// regional endpoint. The proxy signs for it and the control plane forwards to it, so both
/// must resolve the same one (in one region they do).
pub fn endpoint(region: &str) -> String {
    if let Some(url) = endpoint_override() {
        return url;
    }
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://sts.{region}.{suffix}")
}

/// The STS endpoint the environment sets (`AWS_ENDPOINT_URL_STS`, else `AWS_ENDPOINT_URL`).
pub fn endpoint_override() -> Option<String> {
    ["AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"]
        .iter()
        .filter_map(|var| std::env::var(var).ok())
        .find(|url| !url.is_empty())
        .map(|url| url.trim_end_matches('/').to_string())
}

/// The `host` header (and signed host) of an endpoint URL: its authority without a default port.
fn host_of(url: &str) -> Result<String, String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    let host = uri.host().ok_or_else(|| format!("{url:?} has no host"))?;
    let default = match uri.scheme_str() {
        Some("https") => 443,
        Some("http") => 80,
        _ => return Err(format!("{url:?} is not http(s)")),
    };
    Ok(match uri.port_u16() {
        Some(p) if p != default => format!("{host}:{p}"),
        _ => host.to_string(),
    })
}

/// A signed `GetCallerIdentity` request, as the proxy sends it to the control plane.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRequest {
    /// The STS endpoint it was signed for, e.g. `https://sts.eu-west-1.amazonaws.com`.
    pub url: String,
    /// Its headers, names in lower case, the signature and any session token among them.
    pub headers: BTreeMap<String, String>,
    /// Always [`BODY`].
    pub body: String,
}

impl fmt::Debug for SignedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values carry a session token: never printed.
        f.debug_struct("SignedRequest")
            .field("url", &self.url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The hex SHA-256 of a CSR's PEM text, as [`CSR_HASH_HEADER`] carries it.
pub fn csr_hash(csr_pem: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(csr_pem.as_bytes()))
}

/// Signs the request that proves `credentials`' identity to control plane `server_id`, for the
/// CSR `csr_pem`, made at `at`, for the STS endpoint `url` of `region`.
pub fn sign_request(
    credentials: &Credentials,
    region: &str,
    url: &str,
    server_id: &str,
    csr_pem: &str,
    at: SystemTime,
) -> Result<SignedRequest, String> {
    let host = host_of(url)?;
    let url = format!("{}/", url.trim_end_matches('/'));
    let mut headers = BTreeMap::from([
        ("host".to_string(), host),
        ("content-type".to_string(), CONTENT_TYPE.to_string()),
        (SERVER_ID_HEADER.to_string(), server_id.to_string()),
        (CSR_HASH_HEADER.to_string(), csr_hash(csr_pem)),
    ]);
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(at)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("cannot sign: {e}"))?
        .into();
    let signable = SignableRequest::new(
        "POST",
        url.as_str(),
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(BODY.as_bytes()),
    )
    .map_err(|e| format!("cannot sign: {e}"))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| format!("cannot sign: {e}"))?
        .into_parts();
    let (added, _) = instructions.into_parts();
    for header in added {
        headers.insert(
            header.name().to_ascii_lowercase(),
            header.value().to_string(),
        );
    }
    Ok(SignedRequest {
        url,
        headers,
        body: BODY.to_string(),
    })
}

/// Why a signed request proves nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestError {
    /// Not a signed GetCallerIdentity request for this control plane's STS endpoint.
    #[error("not a signed sts:GetCallerIdentity request: {0}")]
    Malformed(String),
    /// Signed for another control plane, or without saying for which.
    #[error("the request was signed for control plane {signed_for:?}, not for this one ({this:?})")]
    WrongServer {
        /// What its `X-Xds-Server-Id` says (empty when it has none).
        signed_for: String,
        /// This control plane's id.
        this: String,
    },
    /// Too old (or too far ahead of this control plane's clock).
    #[error(
        "the request was signed {0}s away from this control plane's clock; at most 300s before it and 60s after is accepted (is the clock right?)"
    )]
    Stale(u64),
    /// Signed for another CSR than the one sent.
    #[error("the request was signed for another CSR than the one sent ({CSR_HASH_HEADER})")]
    OtherCsr,
    /// STS did not accept the signature.
    #[error("STS refused the signed request: {0}")]
    Refused(String),
    /// STS throttled or failed: asking again later may work.
    #[error("STS could not answer now (try again): {0}")]
    Busy(String),
    /// STS could not be asked.
    #[error("cannot reach STS: {0}")]
    Unreachable(String),
    /// The signer is not an assumed role (a task role is).
    #[error("{0} is not an assumed IAM role: identities are for task roles")]
    NotARole(String),
}

impl AttestError {
    /// The metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            AttestError::Malformed(_) => "malformed",
            AttestError::WrongServer { .. } => "wrong_server",
            AttestError::Stale(_) => "stale",
            AttestError::Refused(_) => "sts_refused",
            AttestError::Busy(_) => "sts_busy",
            AttestError::OtherCsr => "other_csr",
            AttestError::Unreachable(_) => "sts_unreachable",
            AttestError::NotARole(_) => "not_a_role",
        }
    }
}

/// `20261201T104113Z` as a time.
fn parse_amz_date(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u32>().ok();
    let date = time::Date::from_calendar_date(
        num(0..4)? as i32,
        time::Month::try_from(num(4..6)? as u8).ok()?,
        num(6..8)? as u8,
    )
    .ok()?;
    let clock =
        time::Time::from_hms(num(9..11)? as u8, num(11..13)? as u8, num(13..15)? as u8).ok()?;
    Some(
        time::PrimitiveDateTime::new(date, clock)
            .assume_utc()
            .into(),
    )
}

/// Checks what a signed request says before it goes to STS: that it is a GetCallerIdentity for
/// `endpoint`, signed within [`MAX_AGE`] before `now` (or [`MAX_AHEAD`] after), for one of
/// `server_ids` (ASCII case ignored, as in DNS names) and for `csr_pem`. The answer is the
/// request to forward: its signed headers and the signature, nothing else.
pub fn check(
    req: &SignedRequest,
    endpoint: &str,
    server_ids: &[String],
    csr_pem: &str,
    now: SystemTime,
) -> Result<SignedRequest, AttestError> {
    let bad = |m: String| Err(AttestError::Malformed(m));
    if req.body != BODY {
        return bad(format!("the body must be {BODY:?}"));
    }
    let expected = format!("{}/", endpoint.trim_end_matches('/'));
    if req.url != expected {
        return bad(format!(
            "it was made for {:?}; this control plane asks {expected:?} (set the same AWS region, or AWS_ENDPOINT_URL_STS, on both sides)",
            req.url
        ));
    }
    if req.headers.len() > MAX_HEADERS {
        return bad(format!("more than {MAX_HEADERS} headers"));
    }
    for (name, value) in &req.headers {
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
        let value_ok =
            value.len() <= MAX_HEADER_VALUE && value.bytes().all(|c| (b' '..=b'~').contains(&c));
        if !name_ok || !value_ok {
            return bad(format!("header {name:?} is not a plain lower-case header"));
        }
    }
    let header = |n: &str| req.headers.get(n).map(String::as_str);
    let Some(auth) = header("authorization").and_then(|a| a.strip_prefix("AWS4-HMAC-SHA256 "))
    else {
        return bad("no AWS4-HMAC-SHA256 authorization header".into());
    };
    // Exactly Credential, SignedHeaders and Signature, once each.
    let mut fields = BTreeMap::new();
    for part in auth.split(',').map(str::trim) {
        let Some((key, value)) = part.split_once('=') else {
            return bad(
                "the authorization header is not Credential=..., SignedHeaders=..., Signature=..."
                    .into(),
            );
        };
        if !matches!(key, "Credential" | "SignedHeaders" | "Signature")
            || fields.insert(key, value).is_some()
        {
            return bad(format!(
                "the authorization header has {key:?} where Credential, SignedHeaders and Signature are expected once each"
            ));
        }
    }
    let (Some(credential), Some(signed), Some(_)) = (
        fields.get("Credential"),
        fields.get("SignedHeaders"),
        fields.get("Signature"),
    ) else {
        return bad("the authorization header lacks Credential, SignedHeaders or Signature".into());
    };
    if !credential.ends_with("/sts/aws4_request") {
        return bad("the signature is not for STS".into());
    }
    let signed: Vec<&str> = signed.split(';').collect();
    for name in &signed {
        if !FORWARDED.contains(name) {
            return bad(format!(
                "header {name:?} is signed; only {} may be",
                FORWARDED.join(", ")
            ));
        }
        if header(name).is_none() {
            return bad(format!("signed header {name:?} is missing"));
        }
    }
    for needed in ["host", "x-amz-date", SERVER_ID_HEADER, CSR_HASH_HEADER] {
        if !signed.contains(&needed) {
            return bad(format!("header {needed:?} must be signed"));
        }
    }
    let host = host_of(endpoint).map_err(AttestError::Malformed)?;
    if header("host") != Some(host.as_str()) {
        return bad(format!("the signed host must be {host:?}"));
    }
    let id = header(SERVER_ID_HEADER).unwrap_or_default();
    if !server_ids.iter().any(|s| s.eq_ignore_ascii_case(id)) {
        return Err(AttestError::WrongServer {
            signed_for: id.to_string(),
            this: server_ids.join(", "),
        });
    }
    let Some(at) = header("x-amz-date").and_then(parse_amz_date) else {
        return bad("x-amz-date is not a time like 20261201T104113Z".into());
    };
    match now.duration_since(at) {
        Ok(age) if age > MAX_AGE => return Err(AttestError::Stale(age.as_secs())),
        Err(ahead) if ahead.duration() > MAX_AHEAD => {
            return Err(AttestError::Stale(ahead.duration().as_secs()));
        }
        _ => {}
    }
    if header(CSR_HASH_HEADER) != Some(csr_hash(csr_pem).as_str()) {
        return Err(AttestError::OtherCsr);
    }
    Ok(SignedRequest {
        url: req.url.clone(),
        headers: req
            .headers
            .iter()
            .filter(|(name, _)| *name == "authorization" || signed.contains(&name.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        body: req.body.clone(),
    })
}

/// Whether an STS error code says "later", not "no": throttling (the toolkit's one list of
/// throttling codes) or an STS-side problem.
fn sts_busy(code: &str) -> bool {
    common::aws::throttling_code(code)
        || matches!(
            code,
            "ExpiredToken" | "IDPCommunicationError" | "ServiceUnavailable" | "InternalFailure"
        )
}

/// Who signed: an assumed role, e.g. `arn:aws:sts::123456789012:assumed-role/ROLE/SESSION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The whole ARN STS gave.
    pub arn: String,
    /// `aws`, `aws-cn`, ...
    pub partition: String,
    /// The 12-digit account.
    pub account: String,
    /// The role's name.
    pub role: String,
}

impl Caller {
    /// Reads an assumed-role ARN; any other principal is refused.
    pub fn parse(arn: &str) -> Result<Caller, AttestError> {
        let not_a_role = || AttestError::NotARole(arn.to_string());
        let rest = arn.strip_prefix("arn:").ok_or_else(not_a_role)?;
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let [partition, "sts", "", account, resource] = parts.as_slice() else {
            return Err(not_a_role());
        };
        let mut resource = resource.splitn(3, '/');
        let (Some("assumed-role"), Some(role), Some(_session)) =
            (resource.next(), resource.next(), resource.next())
        else {
            return Err(not_a_role());
        };
        Ok(Caller {
            arn: arn.to_string(),
            partition: partition.to_string(),
            account: account.to_string(),
            role: role.to_string(),
        })
    }

    /// The account of any principal's ARN (the control plane's own, say).
    pub fn account_of(arn: &str) -> Option<String> {
        let parts: Vec<&str> = arn.strip_prefix("arn:")?.splitn(5, ':').collect();
        let account = parts.get(3)?;
        (account.len() == 12 && account.chars().all(|c| c.is_ascii_digit()))
            .then(|| account.to_string())
    }
}

/// The text of the first `<tag>` element of an STS answer, entities decoded.
fn xml_text(doc: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = doc.find(&open)? + open.len();
    let end = start + doc[start..].find(&format!("</{tag}>"))?;
    Some(
        doc[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// The HTTPS (or, for an emulator's `http://` endpoint, HTTP) client that asks STS.
#[derive(Clone)]
pub struct Sts {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Sts {
    /// A client trusting the system's root certificates.
    pub fn new() -> Result<Sts, String> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(crate::tls::provider())
            .map_err(|e| format!("the system's root certificates: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Sts {
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Sends a request (already [`check`]ed) to STS; the ARN of whoever signed it.
    pub async fn caller_arn(&self, req: &SignedRequest) -> Result<String, AttestError> {
        let unreachable = |e: String| AttestError::Unreachable(e);
        let mut builder = hyper::Request::post(&req.url);
        for (name, value) in &req.headers {
            builder = builder.header(name, value);
        }
        let request = builder
            .body(Full::new(Bytes::from(req.body.clone())))
            .map_err(|e| AttestError::Malformed(e.to_string()))?;
        let work = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| unreachable(common::aws::error_chain(&e)))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), 64 * 1024)
                .collect()
                .await
                .map_err(|e| unreachable(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, AttestError>((status, String::from_utf8_lossy(&body).into_owned()))
        };
        let (status, body) = tokio::time::timeout(STS_TIMEOUT, work)
            .await
            .map_err(|_| unreachable(format!("no answer within {STS_TIMEOUT:?}")))??;
        if status.is_success() {
            // The result's Arn, in an answer that is a GetCallerIdentityResponse.
            return body
                .contains("<GetCallerIdentityResponse")
                .then(|| xml_text(&body, "GetCallerIdentityResult"))
                .flatten()
                .and_then(|result| xml_text(&result, "Arn"))
                .ok_or_else(|| unreachable("the answer is no GetCallerIdentityResponse".into()));
        }
        let code = xml_text(&body, "Code").unwrap_or_else(|| format!("HTTP {status}"));
        let message = xml_text(&body, "Message").unwrap_or_default();
        let text = format!("{code}: {message}");
        if sts_busy(&code) || status.as_u16() == 429 || status.is_server_error() {
            Err(AttestError::Busy(text))
        } else if status.is_client_error() {
            Err(AttestError::Refused(text))
        } else {
            Err(unreachable(text))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            Some("SESSION-TOKEN-VALUE".into()),
            None,
            "test",
        )
    }

    const URL: &str = "https://sts.eu-west-1.amazonaws.com";
    const CSR: &str =
        "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n";

    fn ids() -> Vec<String> {
        vec!["xds.example".into(), "10.0.0.7".into()]
    }

    fn signed(server_id: &str, at: SystemTime) -> SignedRequest {
        sign_request(&creds(), "eu-west-1", URL, server_id, CSR, at).unwrap()
    }

    #[test]
    fn a_fresh_request_for_this_server_and_csr_passes() {
        let now = SystemTime::now();
        let req = signed("XDS.example", now);
        assert_eq!(req.headers["host"], "sts.eu-west-1.amazonaws.com");
        for header in [SERVER_ID_HEADER, CSR_HASH_HEADER, "x-amz-security-token"] {
            assert!(req.headers["authorization"].contains(header), "{header}");
        }
        // Any of the server's names, in any case.
        let forwarded = check(&req, URL, &ids(), CSR, now).unwrap();
        assert_eq!(forwarded, req);
        assert!(
            !format!("{req:?}").contains("SESSION-TOKEN-VALUE"),
            "{req:?}"
        );
        // Unsigned extras (a user agent) are dropped, not forwarded.
        let mut extra = req.clone();
        extra.headers.insert("user-agent".into(), "curl".into());
        assert_eq!(check(&extra, URL, &ids(), CSR, now).unwrap(), req);
    }

    #[test]
    fn requests_for_another_server_csr_or_time_are_refused() {
        let now = SystemTime::now();
        assert!(matches!(
            check(&signed("other", now), URL, &ids(), CSR, now),
            Err(AttestError::WrongServer { .. })
        ));
        let old = now - Duration::from_secs(301);
        assert_eq!(
            check(&signed("xds.example", old), URL, &ids(), CSR, now),
            Err(AttestError::Stale(301))
        );
        let ahead = now + Duration::from_secs(90);
        assert!(matches!(
            check(&signed("xds.example", ahead), URL, &ids(), CSR, now),
            Err(AttestError::Stale(_))
        ));
        // Within a minute ahead (a clock a little fast) is fine.
        let slightly = now + Duration::from_secs(30);
        assert!(check(&signed("xds.example", slightly), URL, &ids(), CSR, now).is_ok());
        // A copied request with the copier's own CSR.
        assert_eq!(
            check(&signed("xds.example", now), URL, &ids(), "another CSR", now),
            Err(AttestError::OtherCsr)
        );
    }

    #[test]
    fn tampered_requests_are_refused() {
        let now = SystemTime::now();
        let good = signed("xds.example", now);
        let mut cases: Vec<(&str, SignedRequest)> = Vec::new();
        let mut r = good.clone();
        r.body = "Action=AssumeRole&Version=2011-06-15".into();
        cases.push(("other action", r));
        let mut r = good.clone();
        r.url = "https://evil.example/".into();
        cases.push(("other url", r));
        let mut r = good.clone();
        r.headers.remove(SERVER_ID_HEADER);
        cases.push(("no server id", r));
        let mut r = good.clone();
        r.headers.insert("host".into(), "evil.example".into());
        cases.push(("other host", r));
        let mut r = good.clone();
        let auth = r.headers["authorization"].clone();
        r.headers.insert(
            "authorization".into(),
            format!("{auth}, SignedHeaders=host"),
        );
        cases.push(("two SignedHeaders", r));
        let mut r = good.clone();
        let auth = r.headers["authorization"].replace("SignedHeaders=", "SignedHeaders=accept;");
        r.headers.insert("authorization".into(), auth);
        r.headers.insert("accept".into(), "application/json".into());
        cases.push(("a signed header STS need not see", r));
        for (what, req) in cases {
            assert!(check(&req, URL, &ids(), CSR, now).is_err(), "{what}");
        }
        // A request signed for another region's endpoint is not forwarded there.
        let req = sign_request(
            &creds(),
            "us-east-1",
            "https://sts.us-east-1.amazonaws.com",
            "xds.example",
            CSR,
            now,
        )
        .unwrap();
        assert!(matches!(
            check(&req, URL, &ids(), CSR, now),
            Err(AttestError::Malformed(_))
        ));
    }

    #[test]
    fn only_assumed_roles_are_callers() {
        let c = Caller::parse("arn:aws:sts::123456789012:assumed-role/connector/task-1").unwrap();
        assert_eq!(
            (c.account.as_str(), c.role.as_str()),
            ("123456789012", "connector")
        );
        for arn in [
            "arn:aws:iam::123456789012:user/moto",
            "arn:aws:sts::123456789012:federated-user/x",
            "arn:aws:sts::123456789012:assumed-role/connector",
        ] {
            assert!(Caller::parse(arn).is_err(), "{arn}");
        }
        assert_eq!(
            Caller::account_of("arn:aws:iam::123456789012:user/moto").as_deref(),
            Some("123456789012")
        );
    }

    #[test]
    fn sts_answers_are_read() {
        let ok = "<GetCallerIdentityResponse><GetCallerIdentityResult><Arn>arn:aws:sts::1:assumed-role/a/b</Arn></GetCallerIdentityResult></GetCallerIdentityResponse>";
        assert_eq!(
            xml_text(ok, "Arn").as_deref(),
            Some("arn:aws:sts::1:assumed-role/a/b")
        );
        assert_eq!(
            xml_text("<Message>a &amp; b</Message>", "Message").as_deref(),
            Some("a & b")
        );
        assert_eq!(
            parse_amz_date("20261201T104113Z")
                .map(|t| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()),
            Some(1_796_121_673)
        );
        assert_eq!(parse_amz_date("2026-12-01"), None);
        assert!(sts_busy("Throttling") && sts_busy("ExpiredToken"));
        assert!(!sts_busy("SignatureDoesNotMatch") && !sts_busy("InvalidClientTokenId"));
    }
}
