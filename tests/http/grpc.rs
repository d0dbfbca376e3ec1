//! A real tonic server on 127.0.0.1, limited by `PerKeyLayer::grpc()`, and
//! a real tonic client. No protobuf: a hand-written service with a UTF-8
//! string codec, served by tonic's own `Grpc` machinery.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut};
use http::uri::PathAndQuery;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Status};
use tower_sluice::http::HeaderKey;
use tower_sluice::http::grpc::RETRY_PUSHBACK;
use tower_sluice::{PerKeyLayer, Quota};

/// Messages are UTF-8 strings, as they are.
#[derive(Debug, Clone, Copy, Default)]
struct Utf8;

impl Encoder for Utf8 {
    type Item = String;
    type Error = Status;

    fn encode(&mut self, item: String, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(item.as_bytes());
        Ok(())
    }
}

impl Decoder for Utf8 {
    type Item = String;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<String>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|e| Status::invalid_argument(e.to_string()))
    }
}

impl Codec for Utf8 {
    type Encode = String;
    type Decode = String;
    type Encoder = Utf8;
    type Decoder = Utf8;

    fn encoder(&mut self) -> Utf8 {
        Utf8
    }

    fn decoder(&mut self) -> Utf8 {
        Utf8
    }
}

/// `test.Echo/Say`: answers "echo: <message>".
#[derive(Debug, Clone)]
struct Echo;

impl NamedService for Echo {
    const NAME: &'static str = "test.Echo";
}

struct Say;

impl UnaryService<String> for Say {
    type Response = String;
    type Future = Ready<Result<tonic::Response<String>, Status>>;

    fn call(&mut self, request: tonic::Request<String>) -> Self::Future {
        ready(Ok(tonic::Response::new(format!(
            "echo: {}",
            request.into_inner()
        ))))
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tower::Service<http::Request<tonic::body::Body>> for Echo {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            if req.uri().path() == "/test.Echo/Say" {
                Ok(Grpc::new(Utf8).unary(Say, req).await)
            } else {
                Ok(Status::unimplemented("no such method").into_http())
            }
        })
    }
}

async fn say(
    client: &mut tonic::client::Grpc<Channel>,
    key: Option<&str>,
) -> Result<String, Status> {
    client
        .ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new("hi".to_string());
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("x-api-key", key.parse().unwrap());
    }
    let path = PathAndQuery::from_static("/test.Echo/Say");
    client
        .unary(request, path, Utf8)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_tonic_server_answers_resource_exhausted_with_pushback() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // 2 per minute per `x-api-key`: one every 30 s.
    let limit = PerKeyLayer::new(Quota::per_minute(2), HeaderKey::from_static("x-api-key")).grpc();
    tokio::spawn(
        Server::builder()
            .layer(limit)
            .add_service(Echo)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tonic::client::Grpc::new(channel);

    assert_eq!(say(&mut client, Some("k-1")).await.unwrap(), "echo: hi");
    assert_eq!(say(&mut client, Some("k-1")).await.unwrap(), "echo: hi");
    let status = say(&mut client, Some("k-1")).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status
            .message()
            .starts_with("rate limit exceeded: 2 per 1m"),
        "{status:?}"
    );
    let pushback: u64 = status
        .metadata()
        .get(RETRY_PUSHBACK)
        .expect("retry pushback")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((29_000..=30_000).contains(&pushback), "{pushback}");

    // Another key is not affected; no key is INVALID_ARGUMENT.
    assert_eq!(say(&mut client, Some("k-2")).await.unwrap(), "echo: hi");
    let status = say(&mut client, None).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.metadata().get(RETRY_PUSHBACK).is_none());
}

#[test]
fn errors_map_to_statuses() {
    use tower_sluice::BoxError;
    use tower_sluice::error::MissingKey;
    use tower_sluice::http::grpc::{into_status, status_for};

    let other: BoxError = "disk on fire".into();
    assert!(status_for(&*other).is_none());
    assert_eq!(into_status(other).code(), Code::Unknown);
    let missing: BoxError = MissingKey::default().into();
    assert_eq!(into_status(missing).code(), Code::InvalidArgument);
}
