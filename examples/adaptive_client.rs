//! A client discovering an upstream's hidden limit with `AimdLayer`.
//!
//! The upstream accepts 150 requests per second (with a burst of 5) and
//! answers the excess with `RateLimited`; the client only knows its quota,
//! 400 per second. It starts there, is cut on each refusal, and settles
//! just under the hidden limit. Prints, each second, the rate it sends at,
//! what the upstream accepted and refused, and the layer's estimate of the
//! limit. Runs for 15 seconds.
//!
//! ```sh
//! cargo run --example adaptive_client
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use tower::{BoxError, Layer, Service, ServiceExt, service_fn};
use tower_sluice::adaptive::AimdLayer;
use tower_sluice::{Limiter, Quota, RateLimited};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    // The upstream: a hidden limit of 150 per second.
    let hidden = Arc::new(Limiter::new(Quota::per_second(150).with_burst(5)));
    let upstream = service_fn(move |_req: u64| {
        let decision = hidden.check();
        async move {
            decision.into_result()?;
            Ok::<_, BoxError>("ok")
        }
    });

    // The client: its quota is 400 per second. Short windows (250 ms and
    // 10 successes) and steps of 16/s make it find the limit in seconds.
    let aimd = AimdLayer::new(Quota::per_second(400))
        .window(Duration::from_millis(250), 10)
        .increase(16);
    let rate = aimd.handle();
    let mut client = aimd.layer(upstream);

    println!("  time   rate/s  accepted  refused  estimate/s");
    let start = Instant::now();
    let mut next_report = Duration::from_secs(1);
    let (mut accepted, mut refused) = (0u32, 0u32);
    let mut req = 0;
    while start.elapsed() < Duration::from_secs(15) {
        req += 1;
        match client.ready().await?.call(req).await {
            Ok(_) => accepted += 1,
            Err(e) if e.is::<RateLimited>() => refused += 1,
            Err(e) => return Err(e),
        }
        if start.elapsed() >= next_report {
            let estimate = rate
                .good_rate()
                .map_or_else(|| "-".to_string(), |g| format!("{g:.0}"));
            println!(
                "{:>5.0}s {:>8.0} {:>9} {:>8} {:>11}",
                next_report.as_secs_f64(),
                rate.rate(),
                accepted,
                refused,
                estimate
            );
            next_report += Duration::from_secs(1);
            (accepted, refused) = (0, 0);
        }
    }
    println!(
        "hidden limit: 150/s; the client settled at {:.0}/s",
        rate.rate()
    );
    Ok(())
}
