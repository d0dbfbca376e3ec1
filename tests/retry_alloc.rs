//! The no-retry path of `BackoffRetryLayer` allocates nothing: a request
//! that succeeds at once costs its clone (a `u64` here) and no heap
//! allocation. Counted with a global allocator, in its own test binary so
//! no other test allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::future::{Future, ready};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use tower::{Layer, Service, service_fn};
use tower_sluice::BackoffRetryLayer;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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
        let before = ALLOCS.load(Ordering::Relaxed);
        for i in 0..10_000 {
            one(i);
        }
        assert_eq!(ALLOCS.load(Ordering::Relaxed) - before, 0);
    }
}
