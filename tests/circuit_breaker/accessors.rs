//! What a breaker's handle and statistics report after real calls, and
//! the configuration's defaults.

use super::*;
use tower_sluice::circuit_breaker::CircuitBreakerConfig;

/// Fails when asked to.
fn flaky(fail: bool) -> std::future::Ready<Result<(), BoxError>> {
    std::future::ready(if fail { Err("down".into()) } else { Ok(()) })
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn stats_count_the_window_calls_and_rates_are_percentages() {
    let layer = CircuitBreakerLayer::default();
    let handle = layer.handle();
    assert_eq!(handle.stats().failure_rate(), 0.0, "an empty window");
    let svc = layer.layer(tower::service_fn(flaky));
    for fail in [true, true, false, false] {
        let _ = svc.clone().oneshot(fail).await;
    }
    let stats = handle.stats();
    assert_eq!(
        (stats.calls, stats.failures, stats.consecutive_failures),
        (4, 2, 0)
    );
    assert_eq!(stats.failure_rate(), 50.0);
    let _ = svc.clone().oneshot(false).await;
    let _ = svc.clone().oneshot(false).await;
    assert!((handle.stats().failure_rate() - 100.0 / 3.0).abs() < 1e-9);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_call_slower_than_the_threshold_counts_in_the_slow_call_rate() {
    let layer = CircuitBreakerLayer::builder()
        .slow_call_duration(Duration::from_secs(1))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(tower::service_fn(|ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, BoxError>(())
    }));
    for ms in [10, 20, 1500, 30] {
        svc.clone().oneshot(ms).await.unwrap();
    }
    let stats = handle.stats();
    assert_eq!((stats.calls, stats.slow_calls, stats.failures), (4, 1, 0));
    assert_eq!(stats.slow_call_rate(), 25.0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_open_breaker_counts_down_to_its_trial_calls() {
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .open_duration(Duration::from_secs(5))
        .open_jitter(0.0)
        .build()
        .unwrap();
    let handle = layer.handle();
    assert_eq!(handle.state(), CircuitState::Closed);
    assert_eq!(handle.retry_after(), None, "closed: nothing to wait for");
    let svc = layer.layer(tower::service_fn(flaky));
    svc.oneshot(true).await.unwrap_err();
    assert_eq!(handle.state(), CircuitState::Open);
    assert_eq!(handle.retry_after(), Some(Duration::from_secs(5)));
    advance(Duration::from_secs(2)).await;
    assert_eq!(handle.retry_after(), Some(Duration::from_secs(3)));
    handle.force_open();
    assert_eq!(handle.state(), CircuitState::ForcedOpen);
    assert_eq!(
        handle.retry_after(),
        None,
        "only an Open breaker counts down"
    );
}

#[test]
fn the_default_configuration() {
    let config = CircuitBreakerConfig::default();
    assert_eq!(config.failure_rate_threshold(), 50.0);
    assert_eq!(
        config.window(),
        SlidingWindow::Time {
            size: Duration::from_secs(30),
            buckets: 10
        }
    );
    assert_eq!(config.minimum_calls(), 20);
    assert_eq!(config.open_duration(), Duration::from_secs(5));
    assert_eq!(config.permitted_calls_in_half_open(), 3);
}

#[test]
fn a_handle_reports_the_configuration_it_was_built_with() {
    let handle = CircuitBreakerLayer::builder()
        .minimum_calls(8)
        .build()
        .unwrap()
        .handle();
    assert_eq!(handle.config().minimum_calls(), 8);
    assert_eq!(
        handle.config().open_duration(),
        CircuitBreakerConfig::default().open_duration()
    );
}

/// A stand-in inner service that says which one it is.
#[derive(Debug, PartialEq)]
struct Tagged(u32);

#[test]
fn the_breaker_service_gives_back_its_inner_service() {
    let mut svc = CircuitBreakerLayer::default().layer(Tagged(1));
    assert_eq!(svc.get_ref(), &Tagged(1));
    svc.get_mut().0 = 2;
    assert_eq!(svc.into_inner(), Tagged(2));
}
