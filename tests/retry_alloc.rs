//! The no-retry path of `BackoffRetryLayer` allocates nothing: a request
//! that succeeds at once costs its clone (a `u64` here) and no heap
//! allocation. Counted with a global allocator, in its own test binary,
//! on the test's own thread (the harness's thread allocates meanwhile for
//! its own bookkeeping).

use std::convert::Infallible;
use std::future::{Future, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use tower::{Layer, Service, service_fn};
use tower_sluice::BackoffRetryLayer;

#[allow(dead_code, unreachable_pub)]
#[path = "../benches/support/alloc.rs"]
mod alloc;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

#[test]
fn the_no_retry_path_does_not_allocate() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    for layer in [
        BackoffRetryLayer::default(),
        BackoffRetryLayer::default().no_budget(),
    ] {
        let mut svc = layer.layer(service_fn(|x: u64| ready(Ok::<_, Infallible>(x))));
        let mut one = |i: u64| {
            assert!(svc.poll_ready(&mut cx).is_ready());
            match pin!(svc.call(i)).poll(&mut cx) {
                Poll::Ready(Ok(r)) => assert_eq!(r, i),
                other => panic!("{other:?}"),
            }
        };
        one(0);
        let before = alloc::thread_allocations();
        for i in 0..10_000 {
            one(i);
        }
        assert_eq!(alloc::thread_allocations() - before, 0);
    }
}
