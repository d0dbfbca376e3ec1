//! `ConcurrencyHandle`: reads a layer's limit.

use super::*;

///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
/// use tower_sluice::adaptive::{AdaptiveConcurrencyLayer, AimdLimit};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let layer = AdaptiveConcurrencyLayer::new(AimdLimit::new(Duration::from_secs(1)).initial(10));
/// let handle = layer.handle();
/// let mut svc = ServiceBuilder::new()
///     .layer(layer)
///     .service(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
/// let pending = svc.ready().await?.call(1);
/// assert_eq!((handle.limit(), handle.in_flight()), (10, 1));
/// pending.await?;
/// assert_eq!(handle.in_flight(), 0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ConcurrencyHandle {
    pub(super) core: Shared<Core>,
}

impl ConcurrencyHandle {
    /// The current limit on requests in flight.
    pub fn limit(&self) -> u32 {
        self.core.load().limit.load(Ordering::Acquire)
    }

    /// Requests in flight now (and slots held by readied services).
    pub fn in_flight(&self) -> u32 {
        self.core.load().in_flight.load(Ordering::Acquire)
    }
}

impl fmt::Debug for ConcurrencyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyHandle")
            .field("core", &self.core)
            .finish()
    }
}
