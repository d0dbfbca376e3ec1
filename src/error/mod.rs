//! Error types returned by the layers.
//!
//! Every layer returns [`tower::BoxError`](crate::BoxError), the tower
//! convention, so layers compose and work with axum's `HandleErrorLayer`.
//! The concrete types here are public: downcast to read what the caller
//! needs.
//!
//! ```
//! use std::time::Duration;
//! use tower_sluice::{BoxError, RateLimited};
//!
//! fn wait_for(err: &BoxError) -> Option<Duration> {
//!     err.downcast_ref::<RateLimited>().map(|e| e.retry_after())
//! }
//! # let _ = wait_for;
//! ```

mod config;
mod rate_limit;
mod resilience;
mod text;

pub use config::ConfigError;
pub use rate_limit::{
    ExceedsBurst, KeyTooLong, MissingKey, RateLimited, TooManyInFlight, TooManyKeys,
};
pub use resilience::{
    BackendUnavailable, CircuitOpen, ConcurrencyLimited, QueueClosed, QueueFull, QueueTimeout,
    Throttled,
};
#[cfg(feature = "http")]
pub(crate) use text::Human;
