//! Typed events from every layer, delivered to an [`Observer`].
//!
//! Set an observer on a layer (for example
//! [`RateLimitLayer::observer`](crate::RateLimitLayer::observer)) to be told
//! what it decides. With no observer set, reporting costs one branch.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use tower_sluice::{Quota, RateLimitLayer};
//! use tower_sluice::observe::Event;
//!
//! let limited = Arc::new(AtomicUsize::new(0));
//! let seen = limited.clone();
//! let layer = RateLimitLayer::new(Quota::per_second(10))
//!     .reject()
//!     .observer(move |event: &Event<'_>| {
//!         if let Event::Limited { .. } = event {
//!             seen.fetch_add(1, Ordering::Relaxed);
//!         }
//!     });
//! # let _ = layer;
//! ```
//!
//! Observers are called synchronously on the request path: keep them fast
//! (count, or hand off to a channel).
//!
//! # One observer for the whole stack
//!
//! [`Monitor`] is a cheap `Clone` handle: give a clone to every layer and
//! read per-key statistics, breaker states and queue depth from one
//! [`snapshot`](Monitor::snapshot); add [`AlertRule`]s to be told when a key
//! is limited too often, a breaker opens or a backend falls back. To send
//! events to several observers (a `Monitor` and the `metrics` exporter, say),
//! combine them with [`Fanout`]. [`Monitor::scoped`] names the observer of
//! one layer (two circuit breakers, say) so their figures stay apart.
//!
//! | you want | use |
//! |---|---|
//! | per-key and per-layer figures, breaker states, queue depth | [`Monitor`] |
//! | a callback when a threshold is crossed | [`AlertRule`] on a [`Monitor`] |
//! | Prometheus / StatsD / ... through the `metrics` facade | `MetricsObserver` (feature `metrics`) |
//! | logs | `tracing` (always on; see below) |
//! | your own reaction | any `Fn(&Event<'_>)` closure |
//!
//! # tracing
//!
//! Every layer also logs through `tracing`, with targets
//! `tower_sluice::<layer>` and structured fields: `debug` for admitted
//! requests, waits, queueing and scheduled retries (`attempt`, `delay_ms`);
//! `info` for refusals (`key`, `policy`, `retry_after_ms`) and state changes
//! (`from`, `to`, `state`); `warn` for backend failures and a full per-key
//! store; `error` for a failed service behind a queue.

mod alert;
mod event;
#[cfg(feature = "metrics")]
mod metrics;
mod monitor;
mod observer;
mod observers;
mod slot;
pub(crate) mod words;

pub use alert::{Alert, AlertRule};
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub use metrics::MetricsObserver;
pub(crate) use monitor::RowHint;
pub use monitor::{
    BreakerSnapshot, KeySnapshot, LayerSnapshot, Monitor, MonitorBuilder, Scoped, Snapshot,
};

pub use event::{BackendErrorKind, Event, EventKey, FailureAction};
pub use observer::{Fanout, Observer};
pub(crate) use observers::{Observers, ms, one_in};
