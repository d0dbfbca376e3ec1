//! [`AdaptiveConcurrencyLayer`]: a limit on requests in flight that follows
//! latency, with the algorithms [`AimdLimit`] and [`GradientLimit`].

mod aimd;
mod algorithm;
mod core;
mod gradient;
mod handle;
mod layer;
mod service;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tower_layer::Layer;
use tower_service::Service;

use super::classify::DefaultFeedback;
use crate::BoxError;
use crate::classify::{Classify, Outcome};
use crate::clock::Clock;
use crate::error::ConcurrencyLimited;
use crate::future::ResponseFuture;
use crate::future::Track;
use crate::observe::{Event, Observer, Observers};
use crate::slot::Slot as Shared;
use crate::util::IgnorePoison;
use crate::util::rng::SharedRng;

const LAYER: &str = "adaptive_concurrency";

/// What a service does at the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Reject,
    Wait,
    Shadow,
}

use self::core::{Core, Slot, Waiters, Waiting};
pub use aimd::AimdLimit;
use algorithm::Bounds;
pub use algorithm::{ConcurrencyAlgorithm, Sample};
pub use gradient::GradientLimit;
pub use handle::ConcurrencyHandle;
pub use layer::*;
pub use service::*;
