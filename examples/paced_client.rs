//! Many tasks share one client paced at 60 requests per minute (burst 5)
//! by `QueueLayer`, calling a local in-process service; a live progress
//! line shows how far it got and the achieved rate.
//!
//! ```sh
//! cargo run --example paced_client          # 20 requests, about 15 s
//! cargo run --example paced_client -- 100   # the full run: 100 requests, about 95 s
//! ```
//!
//! The upstream checks the pace on its side with its own limiter of the
//! same quota, and would count any request that came too early.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};

/// An API that allows `quota` and takes 80 ms per request; it counts the
/// requests that arrive faster than its quota in `too_early`.
fn upstream(
    quota: Quota,
    too_early: Arc<AtomicU64>,
) -> impl Service<u64, Response = u64, Error = BoxError, Future: Send> + Clone + Send + 'static {
    let limit = Arc::new(Limiter::new(quota));
    service_fn(move |n: u64| {
        if !limit.check().is_allowed() {
            too_early.fetch_add(1, Ordering::Relaxed);
        }
        async move {
            tokio::time::sleep(Duration::from_millis(80)).await;
            Ok::<_, BoxError>(n)
        }
    })
}
use tower_sluice::{Limiter, QueueLayer, Quota};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let total: u64 = match std::env::args().nth(1) {
        Some(arg) => arg
            .parse()
            .map_err(|_| format!("usage: paced_client [COUNT] (got {arg:?})"))?,
        None => 20,
    };
    let quota = Quota::per_minute(60).with_burst(5);

    let too_early = Arc::new(AtomicU64::new(0));
    let upstream = upstream(quota, too_early.clone());

    let queue = QueueLayer::new(1000).pace(quota);
    let handle = queue.handle();
    let client = ServiceBuilder::new().layer(queue).service(upstream);

    println!("{total} requests from {total} tasks, paced at {quota}");
    let start = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    // When the last request was sent (its response time minus the 80 ms
    // the upstream takes), in microseconds since the start.
    let last_sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for n in 0..total {
        let (client, done, last_sent) = (client.clone(), done.clone(), last_sent.clone());
        tasks.push(tokio::spawn(async move {
            let r = client.oneshot(n).await;
            let sent = start.elapsed().saturating_sub(Duration::from_millis(80));
            last_sent.fetch_max(sent.as_micros() as u64, Ordering::Relaxed);
            done.fetch_add(1, Ordering::Relaxed);
            r
        }));
    }

    // The live progress line.
    let progress = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let n = done.load(Ordering::Relaxed);
                let width = 40;
                let filled = (n * width / total.max(1)) as usize;
                let secs = start.elapsed().as_secs_f64();
                print!(
                    "\r[{}{}] {n:>3}/{total}  waiting {:>3}  {secs:>5.1}s ",
                    "#".repeat(filled),
                    ".".repeat(width as usize - filled),
                    handle.depth(),
                );
                let _ = std::io::stdout().flush();
                if n == total {
                    break;
                }
            }
        })
    };

    for t in tasks {
        t.await??;
    }
    progress.await?;
    let elapsed = start.elapsed().as_secs_f64();
    let burst = u64::from(quota.burst()).min(total);
    let last = last_sent.load(Ordering::Relaxed) as f64 / 1e6;
    println!();
    print!("{total} requests in {elapsed:.1}s: {burst} at once (the burst)");
    if total > burst && last > 0.0 {
        // After the burst, one request per interval: the last went out
        // `total - burst` intervals after the start.
        print!(
            ", then {:.1} per minute",
            (total - burst) as f64 / last * 60.0
        );
    }
    println!(
        " (target: 60); {} arrived early at the upstream",
        too_early.load(Ordering::Relaxed)
    );
    Ok(())
}
