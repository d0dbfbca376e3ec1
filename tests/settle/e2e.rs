//! Settling through a real axum server: a handler settles from its
//! answer's usage (read by the layer's hook from a response header), and a
//! streamed answer settles through the request's handle when its body ends.

use std::convert::Infallible;

use axum::Router;
use axum::body::Body;
use axum::extract::Extension;
use axum::http::{Request, Response, StatusCode};
use axum::routing::post;
use tower_sluice::cost::Settlement;
use tower_sluice::{PerKeyLayer, Quota};

use super::token_api::TokenApi;

fn user(req: &Request<Body>) -> Option<String> {
    req.headers()
        .get("x-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn estimate(req: &Request<Body>) -> u32 {
    req.headers()
        .get("x-estimate")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(100)
}

/// A model's answer: its usage in a header, read by the layer's hook.
async fn complete(req: Request<Body>) -> Response<Body> {
    let used = req.headers().get("x-used").cloned().unwrap_or(0.into());
    Response::builder()
        .header("x-usage", used)
        .body(Body::from("answer"))
        .unwrap()
}

/// A streamed answer: ten chunks of 80 bytes; the stream settles at the
/// bytes it sent when it ends.
async fn stream(Extension(settlement): Extension<Settlement>) -> Response<Body> {
    Response::new(Body::from_stream(Chunks {
        sent: 0,
        settlement,
    }))
}

/// Ten chunks of 80 bytes, then the end, where it settles.
struct Chunks {
    sent: u32,
    settlement: Settlement,
}

impl futures_core::Stream for Chunks {
    type Item = Result<Vec<u8>, Infallible>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if self.sent == 800 {
            self.settlement.settle(self.sent);
            return std::task::Poll::Ready(None);
        }
        self.sent += 80;
        std::task::Poll::Ready(Some(Ok(vec![b'x'; 80])))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_and_streams_settle_over_real_http() {
    let layer = PerKeyLayer::new(Quota::per_hour(1_000).counting("tokens"), user)
        .cost(estimate)
        .settle(|res: &Response<Body>| {
            res.headers()
                .get("x-usage")
                .and_then(|v| v.to_str().ok()?.parse().ok())
        })
        .http();
    let app = Router::new()
        .route("/complete", post(complete))
        .route("/stream", post(stream))
        .layer(layer);
    let api = TokenApi::serve(app).await;

    // Ann: estimated 100, used 950 (settled from the answer's header).
    let res = api.send("/complete", "ann", 100, 950).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await.unwrap(), "answer");
    let res = api.send("/complete", "ann", 100, 0).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    // 50 tokens are left, exactly.
    let res = api.send("/complete", "ann", 50, 50).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = api.send("/complete", "ann", 1, 1).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);

    // Cid: a refund when the answer used less than estimated.
    let res = api.send("/complete", "cid", 900, 100).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = api.send("/complete", "cid", 900, 900).await;
    assert_eq!(res.status(), StatusCode::OK);

    // Bob: a streamed answer, estimated 100, settled at 800 when it ends.
    let res = api.send("/stream", "bob", 100, 0).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.bytes().await.unwrap().len(), 800);
    for _ in 0..2 {
        let res = api.send("/complete", "bob", 100, 100).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = api.send("/complete", "bob", 1, 1).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
}
