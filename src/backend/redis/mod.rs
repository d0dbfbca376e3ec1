//! [`RedisBackend`]: per-key limits shared by every instance of a service,
//! through Redis (feature `redis`).
//!
//! ```no_run
//! # async fn run() -> Result<(), tower_sluice::BoxError> {
//! use std::time::Duration;
//! use tower_sluice::{PerKeyLayer, Quota};
//! use tower_sluice::backend::redis::{FailurePolicy, RedisBackend};
//!
//! let redis = RedisBackend::from_url("redis://127.0.0.1:6379")?
//!     .prefix("myapp:limits:")
//!     .deadline(Duration::from_millis(50))
//!     .failure_policy(FailurePolicy::Fallback { expected_instances: 4 });
//! let layer = PerKeyLayer::new(Quota::per_minute(60), |req: &String| Some(req.clone()))
//!     .backend(redis);
//! # Ok(()) }
//! ```
//!
//! # How a decision is made
//!
//! One Lua script per decision (one round trip, atomic, one key, so it
//! works on Redis Cluster): it reads Redis `TIME` (one clock for every
//! instance, no client skew), runs the same GCRA as the in-memory limiter
//! on each of the policy's quotas (all must pass; a denial writes nothing),
//! and stores the TATs as integer microseconds with a `PX` expiry at the
//! moment the buckets are full again. The in-memory and Redis backends give
//! the same `allowed / remaining / retry_after / reset_after` for the same
//! arrivals (tested). The script is sent by hash (`EVALSHA`), and in full
//! (`EVAL`, one more round trip) when the server answers `NOSCRIPT` (after
//! a restart or `SCRIPT FLUSH`).
//!
//! Redis counts in whole microseconds: an emission interval that is not a
//! whole number of microseconds (7 per second, say) is rounded up, which
//! makes the shared limit at most 1 µs per request stricter, never looser.
//!
//! Concurrent decisions share one multiplexed connection (pipelined; no
//! pool), which reconnects by itself, at once, when a call finds it broken
//! (the backend's probes are its retries). Connecting is lazy: a service
//! starts while Redis is down, and its failure policy applies until Redis
//! is up. A [connection manager of your own](RedisBackend::from_manager)
//! that retries with delays may hold a probe past its deadline, and so
//! return to Redis later.
//!
//! # When Redis fails
//!
//! Every decision has a deadline ([`deadline`](RedisBackend::deadline),
//! 50 ms by default; the client's own default of 500 ms is far too long for
//! a request path). A decision that failed or timed out is **never retried**
//! (it may have run, and a retry would charge twice); the
//! [`FailurePolicy`] decides instead:
//!
//! * [`Fallback`](FailurePolicy::Fallback) (default): a local in-memory
//!   limiter at `rate / expected_instances`. It is kept warm: every request
//!   Redis admits is also counted locally, so a key that was busy when Redis
//!   went away is still limited.
//! * [`FailOpen`](FailurePolicy::FailOpen): let requests through.
//! * [`FailClosed`](FailurePolicy::FailClosed): refuse them with
//!   [`BackendUnavailable`] (HTTP 503 with
//!   `Retry-After`).
//!
//! # Health, per node
//!
//! The backend keeps the health of each node: of the server, or, on a
//! Cluster, of each master (learned from `CLUSTER SLOTS`; a key's node is
//! the master of its hash slot). After three [consecutive
//! failures](RedisBackend::breaker) on a node, its keys skip Redis (the
//! failure policy applies at once, without waiting for a deadline) while
//! keys on the other masters still go to Redis, exactly limited.
//!
//! While a node is down, a task of the backend probes it every 250 ms,
//! independently of requests: it asks Redis about a key on that node
//! without changing anything, within the deadline. The first probe that
//! succeeds returns the node's keys to Redis, so **decisions are back on
//! Redis within a second of Redis answering again** (about 250 ms plus a
//! round trip), whether it was unreachable, slow, resetting connections or
//! restarted, and a down node costs at most four probes a second (each at
//! most two connection attempts while connections are refused). On a
//! Cluster, the slot map is learned again (at most once a second) while a
//! master is down, so a failover to a replica is followed; the cluster
//! client's own reconnection delays may add a few hundred milliseconds.
//!
//! Each failed decision is an [`Event::BackendFailure`]; a node going down
//! and coming back are [`Event::BackendStateChanged`] and one `tracing`
//! warning each, never a log line per request. [`RedisBackend::stats`]
//! counts errors by kind and what the policy did;
//! [`is_available_for`](RedisBackend::is_available_for) says whether a
//! key's node is up.
//!
//! # Deny cache
//!
//! After Redis denies a key, the backend denies that key locally, for that
//! cost or more, until the denial's `retry_after` has passed (measured from
//! when the request was sent, so never longer than Redis would). This is
//! exact: a GCRA's state only moves forward, so nothing Redis could decide
//! in that time would admit it. An abusive client then costs no round trip
//! per request. The cache is bounded ([`deny_cache`](RedisBackend::deny_cache)).
//!
//! # Keys
//!
//! The Redis key is the [prefix](RedisBackend::prefix) (`sluice:` by
//! default) followed by the request key's bytes ([`RedisKey`]). On Redis
//! Cluster, put a `{hash tag}` in the key to choose its slot (the prefix
//! has no braces, so the tag in the key is the one Redis uses). Keys are
//! binary-safe; keys longer than [`max_key_len`](RedisBackend::max_key_len)
//! (4 KiB) are refused with [`KeyTooLong`].
//!
//! # Calendar quotas
//!
//! A [calendar quota](crate::calendar) counts in one Redis key per window,
//! the key followed by `@calendar-<period>:<index>`
//! (`sluice:{ann}@calendar-day:19876`; the index counts minutes, hours or
//! days since the Unix epoch, or months since January 1970), or for a
//! quota of cost ([`Quota::counting`](crate::Quota::counting)) by
//! `@<unit>-calendar-<period>:<index>` (`sluice:{ann}@tokens-calendar-month:651`),
//! charged with `INCRBY` (1 per request, or the request's cost) in the
//! same script call that decides the key's rolling quotas, and expiring a
//! minute after the window ends. Windows follow Redis' `TIME` (UTC). The
//! counts live in Redis, so with Redis persistence (RDB or AOF) usage
//! survives restarts of the instances and of Redis, and a billing job can
//! read a window's count with `GET`. On Redis Cluster, a key whose policy
//! has calendar quotas must carry a `{hash tag}`, so that its window keys
//! share its slot.
//!
//! # Settling the true cost
//!
//! A layer that [settles](crate::PerKeyLayer::settle) requests at their
//! true cost settles on Redis too ([`Backend::settle`]), with the in-memory
//! backend's rules, atomically per key:
//!
//! * **more than estimated** moves each cost quota's TAT from
//!   `max(TAT, found)` by the difference, where `found` is when the debt
//!   was found (settled), past the burst if need be (a debt the next
//!   requests wait out), or adds it to the count of the calendar window
//!   the request was charged in (`INCRBY`; the window of `found`, if that
//!   one has ended);
//! * **less** is given back only if the TAT is still the one the decision
//!   wrote (the decision script returns it; a request admitted since
//!   relied on it otherwise), or taken off the count of the window charged
//!   (never below 0);
//! * quotas that count requests keep their charge.
//!
//! Settling never holds a response, and seldom costs Redis a write of its
//! own. A settlement is held per key for its key's next decision from this
//! backend, which carries it: the decision script applies it, then
//! decides, in the same call and the same write of the key. One that no
//! decision carries within [`settle_delay`](RedisBackend::settle_delay)
//! (250 ms by default) is sent by one task of the backend (on the tokio
//! runtime of the first settlement), with the others due, in batches: one
//! call of a settlement script per batch of up to 128 keys (on Redis
//! Cluster, keys of one hash slot: each batch goes to one master),
//! pipelined on the shared connection with the decisions, in rounds of up
//! to 2 048 settlements. So this instance's next decision on a key always
//! sees its debts, other instances see them within the delay, and a debt
//! charges what it would have charged when it was found, however late it
//! is applied. A key's debts merge into one where that changes nothing;
//! its settlements apply in the order they were made.
//! [`flush_settlements`](RedisBackend::flush_settlements) sends everything
//! held at once: call it before the process exits.
//!
//! A settlement is dropped and counted ([`RedisStats::settles_dropped`]),
//! never retried (it may have run), when 65 536 wait already, while the
//! key's node is known to be down, without a runtime to send it from, or
//! when its batch (or the decision carrying it) fails or misses the
//! deadline: the request keeps its estimate. [`RedisStats::settled`]
//! counts those Redis applied ([`RedisStats::settles_carried`] of them
//! carried by a decision), so a caller that must see a settlement applied
//! (a test) flushes, or waits until it grows.
//!
//! Grants Redis did not decide are settled where they were charged: a
//! grant of the [fallback](FailurePolicy::Fallback) in the fallback
//! ([`RedisStats::settled_in_fallback`]), and a grant let through by
//! [`FailOpen`](FailurePolicy::FailOpen), charged nowhere, not at all
//! ([`RedisStats::settles_skipped`]). With the fallback, a settlement
//! Redis applies keeps the warm fallback in step: a debt is charged to it
//! too (a refund is not, as the fallback's charge is not the one the grant
//! records), so a key in debt stays limited if Redis goes away.
//!
//! # Per-key concurrency
//!
//! A policy's [`max_in_flight`](crate::per_key::Policy::max_in_flight) is
//! enforced per instance (in memory), since a count of requests in flight
//! cannot be released reliably across processes that may crash.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;

use super::{Acquire, Backend, Charged, Grant, Memory, QuotaStates};
use crate::BoxError;
use crate::clock::Clock;
use crate::cost::Charge;
use crate::error::{BackendUnavailable, KeyTooLong, RateLimited};
use crate::gcra::Decision;
use crate::observe::{BackendErrorKind, Event, FailureAction, Observer, Observers};
use crate::policy::Policy;
use crate::quota::Quota;

mod builder;
mod decide;
mod deny;
mod failure;
mod health;
mod held;
mod key;
mod script;
mod settle;
mod stats;

use crate::util::IgnorePoison;
use deny::DenyCache;
use health::{Breaker, Health, Nodes, Route};

use decide::{Derived, KeyText};
use held::{Held, Settler};
use script::error_kind;
use stats::Counters;

pub use decide::RedisFuture;
pub use failure::FailurePolicy;
pub use key::RedisKey;
pub use stats::RedisStats;

const BACKEND: &str = "redis";
/// How long a settlement waits for its key's next decision by default (ns).
const DEFAULT_SETTLE_DELAY: u64 = 250_000_000;
/// The longest [`RedisBackend::settle_delay`].
const MAX_SETTLE_DELAY: Duration = Duration::from_secs(60);
const SCRIPT: &str = concat!(
    include_str!("calendar.lua"),
    include_str!("settle_group.lua"),
    include_str!("script.lua")
);
const SETTLE_SCRIPT: &str = concat!(
    include_str!("calendar.lua"),
    include_str!("settle_group.lua"),
    include_str!("settle.lua")
);

/// Limits shared across instances through Redis. See the [module
/// docs](self).
///
/// Use it as the backend of a [`PerKeyLayer`](crate::PerKeyLayer) (one
/// bucket per key), or with a constant key for one bucket shared by the
/// whole fleet. Share one backend (one connection) between several layers
/// by wrapping it in an `Arc`.
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    script: redis::Script,
    settle_script: redis::Script,
    prefix: Vec<u8>,
    deadline: Duration,
    failure: FailurePolicy,
    max_key_len: usize,
    clock: Clock,
    fallback: Memory<Vec<u8>>,
    in_flight: Memory<Vec<u8>>,
    derived: Mutex<HashMap<usize, Derived>>,
    nodes: Nodes,
    deny: DenyCache,
    stats: Counters,
    observers: Observers,
    settler: Arc<Settler>,
    /// How long a settlement waits for its key's next decision (ns).
    settle_delay: u64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.settler.close();
    }
}

#[allow(clippy::large_enum_variant)] // one per backend
enum Conn {
    Client {
        client: redis::Client,
        manager: tokio::sync::OnceCell<ConnectionManager>,
    },
    Manager(ConnectionManager),
    Cluster {
        client: ClusterClient,
        conn: tokio::sync::OnceCell<ClusterConnection>,
    },
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("RedisBackend")
            .field("prefix", &KeyText(&i.prefix))
            .field("deadline", &i.deadline)
            .field("failure", &i.failure)
            .field("available", &self.is_available())
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, feature = "test-util"))]
mod conformance;
#[cfg(all(test, feature = "test-util"))]
mod held_tests;
#[cfg(all(test, feature = "test-util"))]
mod settle_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// While Redis is down, only a probe or a call sent since it went down
    /// brings it back: the late answer of a call in flight when it failed
    /// says nothing of Redis now.
    #[test]
    fn a_late_answer_does_not_bring_redis_back() {
        let b = RedisBackend::from_url("redis://127.0.0.1:1").unwrap();
        let inner = &b.inner;
        let health = inner.nodes.of(b"k");
        let down = |h: &Health| !h.is_up();
        let count = |a: &AtomicU64| a.load(Ordering::Relaxed);
        // Three failures (the threshold) at 10, 11 and 12: down at 12.
        for now in [10, 11, 12] {
            health.failure(inner, b"k", now, false);
        }
        assert!(down(&health));
        health.success(inner, 11, false);
        assert!(down(&health), "sent at 11, before Redis went down");
        assert_eq!(count(&inner.stats.came_back), 0);
        health.success(inner, 11, true);
        assert!(!down(&health), "a probe, whenever sent");
        for now in [20, 21, 22] {
            health.failure(inner, b"k", now, false);
        }
        health.success(inner, 22, false);
        assert!(!down(&health), "sent when Redis went down");
        assert_eq!(
            (count(&inner.stats.went_down), count(&inner.stats.came_back)),
            (2, 2)
        );
    }
}
