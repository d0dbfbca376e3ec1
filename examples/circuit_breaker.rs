//! A client behind a circuit breaker, against an in-memory upstream that
//! fails for two seconds and then recovers. State changes are printed as
//! they happen (by a task subscribed to the breaker's handle), with a line
//! per second of what the client saw.
//!
//! ```text
//! cargo run --example circuit_breaker
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::broadcast::error::RecvError;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};
use tower_sluice::circuit_breaker::SlidingWindow;
use tower_sluice::{CircuitBreakerLayer, CircuitOpen};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let start = Instant::now();
    let down_for = Duration::from_secs(2);

    let breaker = CircuitBreakerLayer::builder()
        .window(SlidingWindow::Count(20))
        .minimum_calls(5)
        .failure_rate_threshold(50.0)
        .open_duration(Duration::from_millis(400))
        .max_open_duration(Duration::from_secs(2))
        .permitted_calls_in_half_open(2)
        .build()?;
    let handle = breaker.handle();

    // Print every transition, with its reason and when the breaker made it.
    let mut changes = handle.subscribe();
    tokio::spawn(async move {
        loop {
            match changes.recv().await {
                Ok(change) => println!(
                    "{:>6.2}s  breaker {:?} -> {:?} ({:?})",
                    change.at.duration_since(start.into()).as_secs_f64(),
                    change.from,
                    change.to,
                    change.reason,
                ),
                Err(RecvError::Lagged(missed)) => println!("({missed} transitions missed)"),
                Err(RecvError::Closed) => break,
            }
        }
    });

    // The upstream: refuses for `down_for`, then answers. Counts the calls
    // that reach it.
    let reached = Arc::new(AtomicU32::new(0));
    let hits = reached.clone();
    let upstream = service_fn(move |req: u32| {
        hits.fetch_add(1, Ordering::Relaxed);
        async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if start.elapsed() < down_for {
                Err::<String, BoxError>("503 from upstream: connection refused".into())
            } else {
                Ok(format!("response {req}"))
            }
        }
    });
    let mut client = ServiceBuilder::new().layer(breaker).service(upstream);

    let (mut ok, mut failed, mut refused) = (0, 0, 0);
    let mut next_report = Duration::from_secs(1);
    for req in 0.. {
        match client.ready().await?.call(req).await {
            Ok(_) => ok += 1,
            Err(e) if e.is::<CircuitOpen>() => refused += 1,
            Err(_) => failed += 1,
        }
        if start.elapsed() >= next_report {
            let stats = handle.stats();
            println!(
                "{:>6.2}s  ok {ok:>3}, failed {failed:>3}, refused by the breaker {refused:>3}; \
                 upstream reached {:>3} times; window: {} calls, {:.0}% failed",
                start.elapsed().as_secs_f64(),
                reached.load(Ordering::Relaxed),
                stats.calls,
                stats.failure_rate(),
            );
            next_report += Duration::from_secs(1);
            if next_report > Duration::from_secs(4) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("final state: {:?}", handle.state());
    Ok(())
}
