//! What a give-up error, a replay body and a backoff report.

use super::*;
use tower_sluice::retry::ReplayBody;

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn giving_up_reports_every_attempt_and_the_last_error() {
    let svc = BackoffRetryLayer::new(Backoff::constant(10 * MS))
        .layer(service_fn(|_: ()| async { Err::<(), BoxError>(refused()) }));
    let err = svc.oneshot(()).await.unwrap_err();
    let gave_up = err.downcast_ref::<RetriesExhausted>().unwrap();
    // Three attempts by default, the first included.
    assert_eq!(gave_up.attempts(), 3);
    assert_eq!(
        gave_up.to_string(),
        format!(
            "gave up after 3 attempts; last error: {}",
            gave_up.last_error()
        )
    );
    let io = gave_up
        .last_error()
        .downcast_ref::<std::io::Error>()
        .unwrap();
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn a_body_read_past_its_cap_cannot_be_replayed() {
    let mut body = ReplayBody::new(Full::new(Bytes::from("0123456789")), 4);
    assert!(body.is_replayable(), "nothing read yet");
    while let Some(frame) = body.frame().await {
        frame.unwrap();
    }
    assert!(!body.is_replayable());

    let mut small = ReplayBody::new(Full::new(Bytes::from("0123")), 4);
    while let Some(frame) = small.frame().await {
        frame.unwrap();
    }
    assert!(small.is_replayable(), "within the cap");
}

#[test]
fn the_default_backoff_starts_at_100_ms_and_caps_at_10_s() {
    assert_eq!(Backoff::default().base(), 100 * MS);
    assert_eq!(Backoff::default().get_max_delay(), Duration::from_secs(10));
    let b = Backoff::exponential(Duration::from_secs(1)).max_delay(Duration::from_secs(30));
    assert_eq!(b.base(), Duration::from_secs(1));
    assert_eq!(b.get_max_delay(), Duration::from_secs(30));
}

/// A stand-in inner service that says which one it is.
#[derive(Debug, PartialEq)]
struct Tagged(u32);

#[test]
fn the_retry_service_gives_back_its_inner_service() {
    let mut svc = BackoffRetryLayer::default().layer(Tagged(1));
    assert_eq!(svc.get_ref(), &Tagged(1));
    svc.get_mut().0 = 2;
    assert_eq!(svc.into_inner(), Tagged(2));
}
