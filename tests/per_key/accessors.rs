//! The per-key service lends and gives back the service it wraps.

use tower::Layer;

use super::*;

/// A stand-in inner service that says which one it is.
#[derive(Debug, PartialEq)]
struct Tagged(u32);

#[test]
fn the_per_key_service_gives_back_its_inner_service() {
    let mut svc = PerKeyLayer::new(Quota::per_second(10), |n: &u32| Some(*n)).layer(Tagged(1));
    assert_eq!(svc.get_ref(), &Tagged(1));
    svc.get_mut().0 = 2;
    assert_eq!(svc.into_inner(), Tagged(2));
}
