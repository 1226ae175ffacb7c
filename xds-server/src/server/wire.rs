//! ADS on the wire: the gRPC framing of the two aggregated streams, done here rather than by
//! tonic's generated service, so that each response is encoded into one allocation of exactly
//! its size that is freed once HTTP/2 has written it.
//!
//! tonic's encoder writes every response of a stream into one growing buffer and hands out
//! slices of it; the buffer keeps the allocation of the largest burst a stream ever sent (all
//! of a big proxy's clusters and endpoints: hundreds of KiB) for as long as the stream lives,
//! so a server's memory grew as streams x config size. Requests are still decoded by tonic.

use std::convert::Infallible;
use std::task::{Context, Poll};

use http_body::Frame;
use http_body_util::StreamBody;
use tokio::sync::mpsc;
use tonic::Status;
use tonic::body::Body;
use tonic::codec::{BufferSettings, Streaming};
use tonic::codegen::{BoxFuture, Bytes, Service, http};
use tonic::server::NamedService;

use super::{Scope, XdsServer, delta::Delta, sotw::Sotw};
use crate::tls::Peer;

const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// The aggregated discovery service (ADS), SotW and delta.
#[derive(Clone)]
pub(crate) struct Ads {
    pub(crate) server: XdsServer,
    /// The largest request accepted.
    pub(crate) max_request: usize,
    /// The largest response sent; a larger one ends the stream with an error instead.
    pub(crate) max_response: usize,
}

impl NamedService for Ads {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

impl Service<http::Request<Body>> for Ads {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let response = match req.uri().path() {
            SOTW_PATH => self.stream::<Sotw>(req),
            DELTA_PATH => self.stream::<Delta>(req),
            path => Status::unimplemented(format!("no method {path}")).into_http(),
        };
        Box::pin(async move { Ok(response) })
    }
}

/// What a stream's request decoder reserves at first (see [`Ads::stream`]).
const REQUEST_BUFFER: usize = 512;

impl Ads {
    fn stream<V: super::Variant>(&self, req: http::Request<Body>) -> http::Response<Body> {
        if let Some(encoding) = req.headers().get("grpc-encoding")
            && encoding != "identity"
        {
            return Status::unimplemented(format!(
                "request compression {encoding:?} is not supported: send uncompressed requests"
            ))
            .into_http();
        }
        let peer = req.extensions().get::<Peer>().cloned();
        // tonic's default reads into 8 KiB per stream up front; requests are a few hundred
        // bytes (the buffer grows for a bigger one), and 10,000 streams would hold 80 MiB.
        let settings = BufferSettings::new(REQUEST_BUFFER, 32 * 1024);
        let decoder = tonic_prost::ProstCodec::<V::Resp, V::Req>::raw_decoder(settings);
        let requests =
            Streaming::new_request(decoder, req.into_body(), None, Some(self.max_request));
        match self.server.spawn::<V>(Scope::Aggregated, peer, requests) {
            Ok(rx) => response(rx, self.max_response),
            Err(status) => status.into_http(),
        }
    }
}

/// A response as it goes on the wire: the fields that differ per stream, encoded for it, then
/// the resources, each part shared with every stream that is sent the same (see
/// [`crate::cache::TypeSnapshot::sotw`] and [`crate::cache::VersionedResource::delta_item`]).
/// Protobuf takes a message's fields in any order, so the two concatenated are the message.
#[derive(Debug, Clone, Default)]
pub(crate) struct Encoded {
    head: Bytes,
    resources: Vec<Bytes>,
}

impl Encoded {
    /// `head` (a response without its resources) followed by `resources`, each one or more
    /// encoded entries of the response's `resources` field.
    pub(crate) fn new(head: &impl prost::Message, resources: Vec<Bytes>) -> Encoded {
        Encoded {
            head: Bytes::from(head.encode_to_vec()),
            resources,
        }
    }

    /// The encoded length of the whole message.
    pub(crate) fn len(&self) -> usize {
        self.head.len() + self.resources.iter().map(Bytes::len).sum::<usize>()
    }

    /// The message itself, for the standalone services and unary fetches (which tonic
    /// encodes) and for tests.
    pub(crate) fn decode<M: prost::Message + Default>(&self) -> Result<M, Status> {
        let mut buf = Vec::with_capacity(self.len());
        buf.extend_from_slice(&self.head);
        for part in &self.resources {
            buf.extend_from_slice(part);
        }
        M::decode(buf.as_slice())
            .map_err(|e| Status::internal(format!("a response failed to decode: {e}")))
    }
}

/// More shared parts than this are copied into one buffer rather than sent as they are.
const MAX_PARTS: usize = 16;

/// One gRPC message frame: the uncompressed flag and the length, with the message's own head,
/// in one small allocation; then the shared parts as they are, without copying. A message
/// larger than `max` is an error, as tonic's own limit makes it.
fn frame(message: Encoded, max: usize) -> Result<Vec<Bytes>, Status> {
    let len = message.len();
    let prefix = u32::try_from(len)
        .ok()
        .filter(|_| len <= max)
        .ok_or_else(|| {
            Status::out_of_range(format!(
                "a response of {len} bytes is over the limit of {max}"
            ))
        })?;
    // Many small parts (a delta response of hundreds of resources) cost HTTP/2 a queued frame
    // each, more than one copy into a buffer of exactly the message's size.
    let coalesce = message.resources.len() > MAX_PARTS;
    let mut first = Vec::with_capacity(5 + if coalesce { len } else { message.head.len() });
    first.push(0);
    first.extend_from_slice(&prefix.to_be_bytes());
    first.extend_from_slice(&message.head);
    if coalesce {
        for part in &message.resources {
            first.extend_from_slice(part);
        }
        return Ok(vec![Bytes::from(first)]);
    }
    let mut parts = Vec::with_capacity(1 + message.resources.len());
    parts.push(Bytes::from(first));
    parts.extend(message.resources.into_iter().filter(|p| !p.is_empty()));
    Ok(parts)
}

/// The trailers that end a stream with `status`.
fn trailers(status: &Status) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    if status.add_header(&mut headers).is_err() {
        let _ = Status::internal("the stream ended with an error").add_header(&mut headers);
    }
    headers
}

/// The streaming response: each message framed as it comes, then the status in trailers.
fn response(rx: mpsc::Receiver<super::Outgoing>, max: usize) -> http::Response<Body> {
    let frames = futures_util::stream::unfold(Some(rx), move |rx| async move {
        let mut rx = rx?;
        Some(match rx.recv().await {
            Some(Ok(message)) => match frame(*message, max) {
                Ok(parts) => (parts.into_iter().map(Frame::data).collect(), Some(rx)),
                Err(status) => (vec![Frame::trailers(trailers(&status))], None),
            },
            Some(Err(status)) => (vec![Frame::trailers(trailers(&status))], None),
            None => (vec![Frame::trailers(trailers(&Status::ok("")))], None),
        })
    });
    let frames = futures_util::StreamExt::flat_map(frames, |f: Vec<Frame<Bytes>>| {
        futures_util::stream::iter(f.into_iter().map(Ok::<_, Infallible>))
    });
    let body = StreamBody::new(frames);
    let mut response = http::Response::new(Body::new(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
    use http_body_util::BodyExt;
    use prost::Message;

    use super::*;

    /// The next frame of `body`, which must be the trailers.
    async fn next_trailers(body: &mut Body) -> http::HeaderMap {
        body.frame()
            .await
            .expect("a frame")
            .expect("no error")
            .into_trailers()
            .expect("trailers")
    }

    #[tokio::test]
    async fn each_response_is_one_grpc_message_with_its_shared_parts_uncopied_and_an_error_ends_the_stream()
     {
        use envoy_types::pb::google::protobuf::Any;
        let (tx, rx) = mpsc::channel(4);
        let head = DiscoveryResponse {
            version_info: "v1".into(),
            nonce: "1".into(),
            ..Default::default()
        };
        let any = Any {
            type_url: "t".into(),
            value: vec![7; 100],
        };
        let mut shared = Vec::new();
        prost::encoding::message::encode(crate::cache::RESOURCES_FIELD, &any, &mut shared);
        let shared = Bytes::from(shared);
        let sent = Encoded::new(&head, vec![shared.clone()]);
        tx.send(Ok(Box::new(sent.clone()))).await.unwrap();
        tx.send(Err(Box::new(Status::permission_denied("not yours"))))
            .await
            .unwrap();
        tx.send(Ok(Box::new(sent))).await.unwrap();
        drop(tx);
        let mut body = response(rx, 1024).into_body();

        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first[0], 0, "uncompressed");
        let len = u32::from_be_bytes(first[1..5].try_into().unwrap()) as usize;
        let part = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(len, first.len() - 5 + part.len());
        // The resources go out from the shared allocation itself.
        assert_eq!(part.as_ptr(), shared.as_ptr());
        let whole = [&first[5..], &part[..]].concat();
        let expected = DiscoveryResponse {
            resources: vec![any],
            ..head
        };
        assert_eq!(
            DiscoveryResponse::decode(whole.as_slice()).unwrap(),
            expected
        );

        let trailers = next_trailers(&mut body).await;
        assert_eq!(trailers["grpc-status"], "7");
        // Percent-encoded, as gRPC sends messages.
        assert_eq!(trailers["grpc-message"], "not%20yours");
        // Nothing after the error.
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn a_response_of_many_parts_goes_as_one_copy() {
        let (tx, rx) = mpsc::channel(1);
        let head = DiscoveryResponse::default();
        // Each part one empty resource (field 2, length 0).
        let parts: Vec<Bytes> = (0..=MAX_PARTS)
            .map(|_| Bytes::from_static(&[0x12, 0]))
            .collect();
        tx.send(Ok(Box::new(Encoded::new(&head, parts))))
            .await
            .unwrap();
        drop(tx);
        let mut body = response(rx, 1024).into_body();
        let data = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(data.len(), 5 + 2 * (MAX_PARTS + 1), "one frame");
        let read = DiscoveryResponse::decode(&data[5..]).unwrap();
        assert_eq!(read.resources.len(), MAX_PARTS + 1);
        assert!(next_trailers(&mut body).await.contains_key("grpc-status"));
    }

    #[tokio::test]
    async fn a_response_over_the_limit_ends_the_stream_with_an_error() {
        let (tx, rx) = mpsc::channel(1);
        let big = DiscoveryResponse {
            version_info: "v".repeat(2048),
            ..Default::default()
        };
        tx.send(Ok(Box::new(Encoded::new(&big, Vec::new()))))
            .await
            .unwrap();
        let mut body = response(rx, 1024).into_body();
        let trailers = next_trailers(&mut body).await;
        assert_eq!(trailers["grpc-status"], "11", "OUT_OF_RANGE");
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn a_stream_the_server_ends_closes_with_status_ok() {
        let (tx, rx) = mpsc::channel::<super::super::Outgoing>(1);
        drop(tx);
        let mut body = response(rx, 1024).into_body();
        let trailers = next_trailers(&mut body).await;
        assert_eq!(trailers["grpc-status"], "0");
        assert!(body.frame().await.is_none());
    }
}
