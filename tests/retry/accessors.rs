//! What a give-up error, a replay body, a backoff and a retry budget
//! report.

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

#[test]
fn a_budget_counts_its_floor_and_half_a_retry_per_first_attempt() {
    // The floor alone: 2 a second over 10 s.
    let floor = RetryBudget::new(Duration::from_secs(10), 0.2, 2).unwrap();
    assert_eq!(floor.remaining(), 20);

    let half = RetryBudget::new(Duration::from_secs(10), 0.5, 0).unwrap();
    assert_eq!(half.remaining(), 0);
    half.deposit();
    assert_eq!(half.remaining(), 0, "half a retry rounds down");
    half.deposit();
    assert_eq!(half.remaining(), 1);
    assert!(half.withdraw());
    assert!(!half.withdraw());
    assert_eq!(half.remaining(), 0);
}

#[test]
fn the_default_layer_has_the_default_budget_and_no_budget_has_none() {
    // 20% of first attempts over 10 s, plus 10 a second: 100 before any request.
    let layer = BackoffRetryLayer::default();
    assert_eq!(layer.get_budget().unwrap().remaining(), 100);
    assert!(
        BackoffRetryLayer::default()
            .no_budget()
            .get_budget()
            .is_none()
    );
}
