//! `cargo run --example demo`: watch a rate limit pace a client, in memory.
//!
//! 100 requests go through `RateLimitLayer::new(10/s, burst 5)` to a local
//! upstream: 5 pass at once, the rest wait in `poll_ready` for their slot,
//! then the same quota in `.reject()` mode fails the excess instead.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};
use tower_sluice::observe::Event;
use tower_sluice::{Quota, RateLimitLayer, RateLimited};

const REQUESTS: usize = 100;
const BAR_WIDTH: usize = 30;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let quota = Quota::per_second(10).with_burst(5);
    let tty = std::io::stdout().is_terminal();

    println!("tower-sluice demo: {REQUESTS} requests through RateLimitLayer::new({quota})");
    println!(
        "The first {} pass at once; every later one waits in poll_ready for its slot, none fail.\n",
        quota.burst()
    );

    // The upstream notes when each request reaches it, then takes 2 ms.
    let start = Instant::now();
    let arrivals = Arc::new(Mutex::new(Vec::with_capacity(REQUESTS)));
    let log = arrivals.clone();
    let upstream = service_fn(move |_req: usize| {
        log.lock().unwrap().push(start.elapsed());
        async {
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok::<_, BoxError>("200 OK")
        }
    });

    // An observer counts the requests that waited (and how long) or failed.
    let waits = Arc::new(AtomicU64::new(0));
    let waited_nanos = Arc::new(AtomicU64::new(0));
    let limited = Arc::new(AtomicU64::new(0));
    let (w, n, l) = (waits.clone(), waited_nanos.clone(), limited.clone());
    let layer = RateLimitLayer::new(quota).observer(move |event: &Event<'_>| match event {
        Event::Waited { waited, .. } => {
            w.fetch_add(1, Ordering::Relaxed);
            n.fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
        }
        Event::Limited { .. } => {
            l.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    });
    let mut client = ServiceBuilder::new().layer(layer).service(upstream);

    for i in 1..=REQUESTS {
        client.ready().await?.call(i).await?;
        if tty || i % 25 == 0 || i == REQUESTS {
            let line = progress(
                i,
                start.elapsed(),
                &arrivals.lock().unwrap(),
                quota.emission_interval(),
            );
            if tty {
                print!("\r{line}");
            } else {
                println!("{line}");
            }
            std::io::stdout().flush()?;
        }
    }
    let total = start.elapsed();
    if tty {
        println!();
    }

    // Timeline: how many requests reached the upstream in each second.
    let arrivals = arrivals.lock().unwrap().clone();
    let at_once = arrivals
        .iter()
        .filter(|t| **t < quota.emission_interval() / 2)
        .count();
    println!("\nRequests reaching the upstream, per second:");
    let seconds = arrivals.last().map_or(0, Duration::as_secs) + 1;
    for s in 0..seconds {
        let count = arrivals.iter().filter(|t| t.as_secs() == s).count();
        let label = format!("{s}s-{}s", s + 1);
        let note = if s == 0 {
            format!(
                "  <- {at_once} at once at t=0, then one every {:?}",
                quota.emission_interval()
            )
        } else {
            String::new()
        };
        println!("  {label:<7} {} {count}{note}", "█".repeat(count));
    }

    let burst = quota.burst() as usize;
    let expected = quota.emission_interval() * (REQUESTS - burst) as u32;
    let steady_span = (arrivals[REQUESTS - 1] - arrivals[burst]).as_secs_f64();
    let waits = waits.load(Ordering::Relaxed);
    let avg_wait = Duration::from_nanos(waited_nanos.load(Ordering::Relaxed) / waits.max(1));
    println!(
        "\n{REQUESTS} requests in {:.2}s (expected ~{:.1}s: {burst} at once, then {} at {}/s)",
        total.as_secs_f64(),
        expected.as_secs_f64(),
        REQUESTS - burst,
        quota.limit()
    );
    println!(
        "  overall rate   {:5.2} req/s",
        REQUESTS as f64 / total.as_secs_f64()
    );
    println!(
        "  steady state   {:5.2} req/s  (after the burst; quota {}/s)",
        (REQUESTS - burst - 1) as f64 / steady_span,
        quota.limit()
    );
    println!(
        "  observer       {waits} requests waited ({avg_wait:.0?} on average), {} failed",
        limited.load(Ordering::Relaxed)
    );

    // The same quota in reject mode: never waits, fails the excess at once.
    let mut server = ServiceBuilder::new()
        .layer(RateLimitLayer::new(quota).reject())
        .service(service_fn(|_req: usize| async {
            Ok::<_, BoxError>("200 OK")
        }));
    let mut pending = Vec::new();
    for i in 1..=8 {
        pending.push(server.ready().await?.call(i));
    }
    let (mut passed, mut retry_after) = (0, Vec::new());
    for response in pending {
        match response.await {
            Ok(_) => passed += 1,
            Err(err) => match err.downcast_ref::<RateLimited>() {
                Some(limited) => retry_after.push(format!("{:.0?}", limited.retry_after())),
                None => return Err(err),
            },
        }
    }
    println!(
        "\n.reject() mode, 8 requests at once: {passed} passed, {} got RateLimited (retry_after: {})",
        retry_after.len(),
        retry_after.join(", ")
    );
    Ok(())
}

/// `[████████░░░░]  37/100   3.7s   10 req/s (last 1s)`.
fn progress(done: usize, elapsed: Duration, arrivals: &[Duration], interval: Duration) -> String {
    let filled = done * BAR_WIDTH / REQUESTS;
    // Arrivals in the second up to the latest one; the window is shifted by
    // half an interval so timer jitter of a millisecond can't count the
    // arrival exactly one second back.
    let end = arrivals.last().copied().unwrap_or_default() + interval / 2;
    let last_second = arrivals
        .iter()
        .filter(|t| end - **t < Duration::from_secs(1))
        .count();
    format!(
        "[{}{}] {done:>3}/{REQUESTS} {:>5.1}s {last_second:>3} req/s (last 1s)",
        "█".repeat(filled),
        "░".repeat(BAR_WIDTH - filled),
        elapsed.as_secs_f64()
    )
}
