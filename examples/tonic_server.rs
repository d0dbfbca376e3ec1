//! `cargo run --example tonic_server --features tonic`: a tonic gRPC
//! server limited per API key (`x-api-key` metadata) with `PerKeyLayer`,
//! answering `RESOURCE_EXHAUSTED` with `grpc-retry-pushback-ms`, and a
//! tonic client that calls it until it is limited.
//!
//! The service is a hand-written `test.Echo/Say` (no protobuf build step);
//! with generated services the layer is the same one line in
//! `Server::builder().layer(...)`.

#[path = "support/grpc_echo.rs"]
mod grpc_echo;

use std::time::Duration;

use grpc_echo::{Echo, say};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};
use tower_sluice::http::HeaderKey;
use tower_sluice::http::grpc::RETRY_PUSHBACK;
use tower_sluice::per_key::Policy;
use tower_sluice::{BoxError, PerKeyLayer, Quota};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;

    // 5 calls a minute per API key, at most 2 in flight per key.
    let policy = Policy::new(Quota::per_minute(5)).max_in_flight(2);
    let limit = PerKeyLayer::new(policy, HeaderKey::from_static("x-api-key")).grpc();
    tokio::spawn(
        Server::builder()
            .timeout(Duration::from_secs(5))
            .layer(limit)
            .add_service(Echo)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    println!("gRPC server on {addr}: 5 calls a minute per x-api-key\n");

    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = tonic::client::Grpc::new(channel);
    let mut passed = 0;
    for i in 1..=7 {
        match say(&mut client, Some("team-a")).await {
            Ok(reply) => {
                passed += 1;
                println!("call {i}: OK {reply:?}");
            }
            Err(status) => {
                let pushback = status
                    .metadata()
                    .get(RETRY_PUSHBACK)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                println!(
                    "call {i}: {:?} \"{}\" (retry pushback {pushback} ms)",
                    status.code(),
                    status.message()
                );
            }
        }
    }
    let other = say(&mut client, Some("team-b")).await?;
    println!("\nanother key has its own bucket: {other:?}");
    let missing = say(&mut client, None).await.unwrap_err();
    println!("no key: {:?} \"{}\"", missing.code(), missing.message());
    if passed != 5 {
        return Err(format!("expected 5 calls to pass, got {passed}").into());
    }
    Ok(())
}
