//! The response future every adaptive layer returns.

pub use super::aimd::AimdTrack;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use super::budget::BudgetFuture;
pub use super::concurrency::ConcurrencyPermit;
pub use super::per_key::KeyTrack;
pub use super::throttle::ThrottleTrack;

/// The response future of the adaptive layers: the inner service's future
/// with the request's record `T` (one of the tracks above), or a local
/// rejection. The crate's one [called-or-refused future](crate::future).
pub type ResponseFuture<F, T> = crate::future::ResponseFuture<F, T>;
