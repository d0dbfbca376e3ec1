//! What the adaptive layers record about each request, carried by their
//! response future: the crate's one
//! [called-or-refused future](crate::future::ResponseFuture), with one of
//! these records.

pub use super::aimd::AimdTrack;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use super::budget::BudgetFuture;
pub use super::concurrency::ConcurrencyPermit;
pub use super::per_key::KeyTrack;
pub use super::throttle::ThrottleTrack;
