//! Pieces every bench shares: governor in a tower service written the
//! obvious way, driving a service once without a runtime, and timing.

#![allow(dead_code)]

pub mod alloc;

use std::fmt;
use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use std::convert::Infallible;
use std::future::{Ready, ready};

use tower::retry::Policy;
use tower::{BoxError, Service, service_fn};

/// The bare service every layer is measured around: it answers its
/// request at once.
pub fn bare()
-> impl Service<u64, Response = u64, Error = Infallible, Future = Ready<Result<u64, Infallible>>>
+ Clone
+ Send
+ 'static {
    service_fn(|x: u64| ready(Ok::<_, Infallible>(x)))
}

/// tower's retry policy that never retries (but clones the request, as any
/// retry policy must).
#[derive(Clone, Copy)]
pub struct NeverRetry;

impl<E> Policy<u64, u64, E> for NeverRetry {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut u64, _: &mut Result<u64, E>) -> Option<Self::Future> {
        None
    }

    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

/// The error of the governor services.
#[derive(Debug)]
pub struct GovernorLimited;

impl fmt::Display for GovernorLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("rate limited")
    }
}

impl std::error::Error for GovernorLimited {}

/// The inner future, or a denial. The inner future must be `Unpin` (it is
/// `Ready` here), which keeps this free of pin projection.
pub enum GovernorFuture<F> {
    Called(F),
    Denied,
}

impl<F, T, E> Future for GovernorFuture<F>
where
    F: Future<Output = Result<T, E>> + Unpin,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            GovernorFuture::Called(f) => Pin::new(f).poll(cx).map_err(Into::into),
            GovernorFuture::Denied => Poll::Ready(Err(GovernorLimited.into())),
        }
    }
}

/// Governor's keyed limiter in a tower `Service`, keyed by the request,
/// written the obvious way: `check_key()` in `call`, an error future when
/// denied.
#[derive(Clone)]
pub struct GovernorKeyedService<S> {
    pub limiter: std::sync::Arc<governor::DefaultKeyedRateLimiter<u64>>,
    pub inner: S,
}

impl<S> Service<u64> for GovernorKeyedService<S>
where
    S: Service<u64>,
    S::Future: Unpin,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = GovernorFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: u64) -> Self::Future {
        match self.limiter.check_key(&req) {
            Ok(()) => GovernorFuture::Called(self.inner.call(req)),
            Err(_) => GovernorFuture::Denied,
        }
    }
}

/// A bijection on `u64` (splitmix64's finaliser): key `i` is `mix(i)`, so
/// keys are distinct and scattered.
pub fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `len` keys drawn uniformly at random from `mix(0..n)` (xorshift64*
/// from `seed`, reduced by multiply-shift).
pub fn key_sequence(n: usize, len: usize, seed: u64) -> Vec<u64> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
            mix(((u128::from(r) * n as u128) >> 64) as u64)
        })
        .collect()
}

/// Governor's direct limiter in a tower `Service`, written the obvious way:
/// `check()` in `call`, an error future when denied.
#[derive(Clone)]
pub struct GovernorService<S> {
    pub limiter: std::sync::Arc<governor::DefaultDirectRateLimiter>,
    pub inner: S,
}

impl<S, Req> Service<Req> for GovernorService<S>
where
    S: Service<Req>,
    S::Future: Unpin,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = GovernorFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.limiter.check() {
            Ok(()) => GovernorFuture::Called(self.inner.call(req)),
            Err(_) => GovernorFuture::Denied,
        }
    }
}

/// One request: `poll_ready`, `call`, one poll of the future. Panics if the
/// service is not ready or the request is limited, so a limited variant
/// cannot go unnoticed.
#[inline(always)]
pub fn drive<S>(svc: &mut S, cx: &mut Context<'_>, req: u64) -> u64
where
    S: Service<u64, Response = u64>,
    S::Error: fmt::Debug,
{
    match svc.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        other => panic!("service not ready: {other:?}"),
    }
    match pin!(svc.call(req)).poll(cx) {
        Poll::Ready(Ok(res)) => res,
        Poll::Ready(Err(e)) => panic!("request failed: {e:?}"),
        Poll::Pending => panic!("response future pending"),
    }
}

/// Times `op` `n` times on this thread.
pub fn timed(n: u64, mut op: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        op();
    }
    start.elapsed()
}

/// The best of `runs` runs of `run(iters)` (after one warm-up run), in
/// nanoseconds per iteration.
pub fn best_ns(runs: usize, iters: u64, mut run: impl FnMut(u64) -> Duration) -> f64 {
    run(iters / 10);
    (0..runs)
        .map(|_| run(iters).as_secs_f64() * 1e9 / iters as f64)
        .fold(f64::INFINITY, f64::min)
}

/// A current-thread runtime with timers, for services that need a tokio
/// context (enter it once, not per iteration).
pub fn timer_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime")
}

/// Criterion with the given warm-up and measurement times (each bench
/// picks its own; `criterion_group!`'s `config`).
pub fn criterion(warm_up: Duration, measure: Duration) -> criterion::Criterion {
    criterion::Criterion::default()
        .warm_up_time(warm_up)
        .measurement_time(measure)
}

/// Benchmarks `op` called with 1, 2, 3, ... (so requests differ, and keys
/// cycle), as one function of `group`.
pub fn bench_numbered(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: impl Into<String>,
    mut op: impl FnMut(u64) -> u64,
) {
    let mut i = 0u64;
    group.bench_function(name.into(), |b| {
        b.iter(|| {
            i += 1;
            op(std::hint::black_box(i))
        })
    });
}
