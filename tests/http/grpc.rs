//! A real tonic server on 127.0.0.1, limited by `PerKeyLayer::grpc()`, and
//! a real tonic client. No protobuf: a hand-written service with a UTF-8
//! string codec, served by tonic's own `Grpc` machinery.

#[path = "../../examples/support/grpc_echo.rs"]
mod grpc_echo;

use grpc_echo::{Echo, say};
use tonic::Code;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};
use tower_sluice::http::HeaderKey;
use tower_sluice::http::grpc::RETRY_PUSHBACK;
use tower_sluice::{PerKeyLayer, Quota};

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
