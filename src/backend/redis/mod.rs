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
//! # let _: &PerKeyLayer<String, _, _> = &layer;
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

use super::{Acquire, Backend, Grant, Memory, QuotaStates};
use crate::BoxError;
use crate::clock::Clock;
use crate::error::{BackendUnavailable, KeyTooLong, RateLimited};
use crate::gcra::Decision;
use crate::observe::{BackendErrorKind, Event, FailureAction, Observer, Observers};
use crate::policy::Policy;
use crate::quota::Quota;

mod deny;
mod health;
mod key;

use crate::util::IgnorePoison;
use deny::DenyCache;
use health::{Breaker, Health, Nodes, Route};

pub use key::RedisKey;

const BACKEND: &str = "redis";
const SCRIPT: &str = include_str!("script.lua");

/// What a [`RedisBackend`] does when Redis cannot decide (down, slow,
/// erroring).
///
/// # Examples
///
/// ```
/// use tower_sluice::backend::redis::{FailurePolicy, RedisBackend};
///
/// // Four instances share the limit; while Redis is down each keeps a quarter.
/// let backend = RedisBackend::from_url("redis://127.0.0.1:6379")?
///     .failure_policy(FailurePolicy::Fallback { expected_instances: 4 });
/// assert_eq!(backend.get_failure_policy(), FailurePolicy::Fallback { expected_instances: 4 });
/// # Ok::<(), redis::RedisError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Let every request through while Redis is failing. Availability
    /// first: an outage of Redis lifts every limit.
    FailOpen,
    /// Refuse every request with
    /// [`BackendUnavailable`] (HTTP 503
    /// with `Retry-After`). Protection first: an outage of Redis is an
    /// outage of the service.
    FailClosed,
    /// Decide with a local in-memory limiter at `rate / expected_instances`
    /// (burst divided likewise, at least 1). With the right count, the
    /// instances together stay near the shared limit; with fewer instances
    /// than expected, they admit less than the limit (safe); with more,
    /// more (by the ratio).
    Fallback {
        /// How many instances share the limit (at least 1).
        expected_instances: u32,
    },
}

impl Default for FailurePolicy {
    /// [`Fallback`](Self::Fallback) with one instance: each instance keeps
    /// the whole limit locally, so a fleet of N admits up to N times the
    /// limit while Redis is down, and a single instance exactly the limit.
    fn default() -> Self {
        FailurePolicy::Fallback {
            expected_instances: 1,
        }
    }
}

/// Counters of a [`RedisBackend`], from [`RedisBackend::stats`].
///
/// # Examples
///
/// ```
/// use tower_sluice::backend::redis::RedisBackend;
///
/// let backend = RedisBackend::from_url("redis://127.0.0.1:6379")?;
/// let stats = backend.stats();
/// assert_eq!(stats.decisions, 0); // nothing connects before the first decision
/// # Ok::<(), redis::RedisError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStats {
    /// Decisions made by Redis.
    pub decisions: u64,
    /// Requests denied locally by the deny cache, without a round trip.
    pub deny_cache_hits: u64,
    /// Decisions that hit the deadline.
    pub timeouts: u64,
    /// Decisions whose connection was refused.
    pub refused: u64,
    /// Decisions that failed with another I/O or connection error.
    pub io_errors: u64,
    /// Decisions where the script failed or its answer was not understood.
    pub script_errors: u64,
    /// Decisions that failed with any other error.
    pub other_errors: u64,
    /// Decisions that skipped Redis because it was known to be down.
    pub skipped: u64,
    /// Requests let through because of a failure ([`FailurePolicy::FailOpen`]).
    pub failed_open: u64,
    /// Requests refused because of a failure ([`FailurePolicy::FailClosed`]).
    pub failed_closed: u64,
    /// Requests decided by the local fallback limiter.
    pub fallback: u64,
    /// Times Redis (or, on a Cluster, a master) was declared down.
    pub went_down: u64,
    /// Times Redis (or a master) came back.
    pub came_back: u64,
}

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

/// Policies derived from a user's policy, made once per policy.
struct Derived {
    /// Keeps the source alive, so its address is not reused.
    _source: Policy,
    /// The fallback's policy: quotas divided by the expected instances,
    /// no in-flight cap.
    fallback: Policy,
    /// Only the in-flight cap (for the local in-flight count).
    in_flight: Option<Policy>,
}

impl RedisBackend {
    /// A backend on the Redis server at `url` (`redis://host:port/db`,
    /// `rediss://` with TLS enabled in `redis`, `redis+unix:///path`).
    /// Nothing connects until the first decision.
    ///
    /// # Errors
    ///
    /// The URL does not parse.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::backend::redis::RedisBackend;
    ///
    /// let backend = RedisBackend::from_url("redis://127.0.0.1:6379/0")?;
    /// assert!(RedisBackend::from_url("not a url").is_err());
    /// # let _ = backend;
    /// # Ok::<(), redis::RedisError>(())
    /// ```
    pub fn from_url(url: &str) -> Result<Self, redis::RedisError> {
        Ok(Self::new(redis::Client::open(url)?))
    }

    /// A backend on `client`'s server, connecting on first use through a
    /// [`ConnectionManager`] (one multiplexed connection that reconnects by
    /// itself).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::backend::redis::RedisBackend;
    ///
    /// let client = redis::Client::open("redis://127.0.0.1:6379")?;
    /// let backend = RedisBackend::new(client);
    /// # let _ = backend;
    /// # Ok::<(), redis::RedisError>(())
    /// ```
    pub fn new(client: redis::Client) -> Self {
        Self::with_conn(Conn::Client {
            client,
            manager: tokio::sync::OnceCell::new(),
        })
    }

    /// A backend on an existing connection manager (shared with the rest of
    /// the application).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use tower_sluice::backend::redis::RedisBackend;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), redis::RedisError> {
    /// // One connection for the application and its limits (connects now).
    /// let client = redis::Client::open("redis://127.0.0.1:6379")?;
    /// let manager = redis::aio::ConnectionManager::new(client).await?;
    /// let backend = RedisBackend::from_manager(manager.clone());
    /// # let _ = backend;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_manager(manager: ConnectionManager) -> Self {
        Self::with_conn(Conn::Manager(manager))
    }

    /// A backend on a Redis Cluster, connecting on first use. Each decision
    /// touches one key, so it goes to one node; keys spread over the slots
    /// (use a `{hash tag}` to choose).
    ///
    /// # Examples
    ///
    /// ```
    /// use redis::cluster::ClusterClient;
    /// use tower_sluice::backend::redis::RedisBackend;
    ///
    /// let nodes = vec!["redis://10.0.0.1:6379", "redis://10.0.0.2:6379", "redis://10.0.0.3:6379"];
    /// let backend = RedisBackend::cluster(ClusterClient::new(nodes)?);
    /// # let _ = backend;
    /// # Ok::<(), redis::RedisError>(())
    /// ```
    pub fn cluster(client: ClusterClient) -> Self {
        Self::with_conn(Conn::Cluster {
            client,
            conn: tokio::sync::OnceCell::new(),
        })
    }

    fn with_conn(conn: Conn) -> Self {
        let cluster = matches!(conn, Conn::Cluster { .. });
        RedisBackend {
            inner: Arc::new(Inner {
                conn,
                script: redis::Script::new(SCRIPT),
                prefix: b"sluice:".to_vec(),
                deadline: Duration::from_millis(50),
                failure: FailurePolicy::default(),
                max_key_len: 4096,
                clock: Clock::new(),
                fallback: Memory::new(100_000),
                in_flight: Memory::new(100_000),
                derived: Mutex::new(HashMap::new()),
                nodes: Nodes::new(
                    Breaker::new(3, Duration::from_millis(250), Duration::from_millis(250)),
                    cluster,
                ),
                deny: DenyCache::new(10_000),
                stats: Counters::default(),
                observers: Observers::default(),
            }),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Inner)) -> Self {
        let inner = Arc::get_mut(&mut self.inner)
            .expect("RedisBackend: configure the backend before using it");
        f(inner);
        self
    }

    /// The prefix of every Redis key (default `sluice:`). Use one per
    /// application or limit so they do not share buckets by accident.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::backend::redis::RedisBackend;
    /// let backend = RedisBackend::from_url("redis://127.0.0.1:6379")?.prefix("billing:rl:");
    /// assert_eq!(backend.redis_key("ann"), b"billing:rl:ann");
    /// # Ok::<(), redis::RedisError>(())
    /// ```
    #[must_use]
    pub fn prefix(self, prefix: impl AsRef<[u8]>) -> Self {
        let prefix = prefix.as_ref().to_vec();
        self.edit(|i| i.prefix = prefix)
    }

    /// How long a decision may take before the failure policy decides
    /// instead (default 50 ms). A zero deadline is raised to 1 ms.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::backend::redis::RedisBackend;
    /// // A decision slower than 20 ms is decided by the failure policy instead.
    /// let backend = RedisBackend::from_url("redis://127.0.0.1:6379")?.deadline(Duration::from_millis(20));
    /// # let _ = backend;
    /// # Ok::<(), redis::RedisError>(())
    /// ```
    #[must_use]
    pub fn deadline(self, deadline: Duration) -> Self {
        self.edit(|i| i.deadline = deadline.max(Duration::from_millis(1)))
    }

    /// What to do when Redis cannot decide (default
    /// [`FailurePolicy::Fallback`] with one instance).
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::backend::redis::{FailurePolicy, RedisBackend};
    /// // Protection first: no Redis, no requests (503 with Retry-After).
    /// let backend = RedisBackend::from_url("redis://127.0.0.1:6379")?
    ///     .failure_policy(FailurePolicy::FailClosed);
    /// # let _ = backend;
    /// # Ok::<(), redis::RedisError>(())
    /// ```
    #[must_use]
    pub fn failure_policy(self, policy: FailurePolicy) -> Self {
        let policy = match policy {
            FailurePolicy::Fallback { expected_instances } => FailurePolicy::Fallback {
                expected_instances: expected_instances.max(1),
            },
            p => p,
        };
        self.edit(|i| i.failure = policy)
    }

    /// After `failures` consecutive failed decisions on a node (default 3),
    /// skip Redis for that node's keys and apply the failure policy at
    /// once; probe the node `first_probe` later (default 250 ms), then at
    /// intervals doubling up to `max_probe` (default 250 ms: a fixed
    /// interval) while it keeps failing. Decisions return to Redis at most
    /// `max_probe` (plus a round trip) after it answers again: keep it
    /// under a second for that. `failures == 0` is taken as 1.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::backend::redis::RedisBackend;
    /// let backend = RedisBackend::from_url("redis://127.0.0.1:6379")?
    ///     .breaker(5, Duration::from_millis(100), Duration::from_secs(30));
    /// assert!(backend.is_available());
    /// # Ok::<(), redis::RedisError>(())
    /// ```
    #[must_use]
    pub fn breaker(self, failures: u32, first_probe: Duration, max_probe: Duration) -> Self {
        self.edit(|i| {
            i.nodes = i
                .nodes
                .with_breaker(Breaker::new(failures, first_probe, max_probe))
        })
    }

    /// Remember up to `entries` denied keys (default 10 000; 0 disables the
    /// deny cache).
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::backend::redis::RedisBackend;
    /// // Exact counts over fewer round trips: no local memory of denials.
    /// let backend = RedisBackend::from_url("redis://127.0.0.1:6379")?.deny_cache(0);
    /// # let _ = backend;
    /// # Ok::<(), redis::RedisError>(())
    /// ```
    #[must_use]
    pub fn deny_cache(self, entries: usize) -> Self {
        self.edit(|i| i.deny = DenyCache::new(entries))
    }

    /// The longest Redis key accepted, prefix included (default 4096
    /// bytes); longer keys are refused with
    /// [`KeyTooLong`] before reaching Redis.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::backend::redis::RedisBackend;
    /// // Keys are API keys: anything over 256 bytes is a client error.
    /// let backend = RedisBackend::from_url("redis://127.0.0.1:6379")?.max_key_len(256);
    /// # let _ = backend;
    /// # Ok::<(), redis::RedisError>(())
    /// ```
    #[must_use]
    pub fn max_key_len(self, bytes: usize) -> Self {
        self.edit(|i| i.max_key_len = bytes)
    }

    /// The most keys the local fallback limiter (and the local in-flight
    /// count) hold (default 100 000), with the in-memory backend's bounds.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::backend::redis::RedisBackend;
    /// let backend = RedisBackend::from_url("redis://127.0.0.1:6379")?.local_max_keys(10_000);
    /// # let _ = backend;
    /// # Ok::<(), redis::RedisError>(())
    /// ```
    #[must_use]
    pub fn local_max_keys(self, max_keys: usize) -> Self {
        self.edit(|i| {
            i.fallback = Memory::new(max_keys);
            i.in_flight = Memory::new(max_keys);
        })
    }

    /// Reports failures and health changes to `observer`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::backend::redis::RedisBackend;
    /// use tower_sluice::observe::Monitor;
    ///
    /// let monitor = Monitor::new();
    /// let backend = RedisBackend::from_url("redis://127.0.0.1:6379")?.observer(monitor.clone());
    /// # let _ = backend;
    /// # Ok::<(), redis::RedisError>(())
    /// ```
    #[must_use]
    pub fn observer(self, observer: impl Observer) -> Self {
        let observers = Observers::new(observer, BACKEND);
        self.edit(|i| i.observers = observers)
    }

    /// The counters so far.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::backend::redis::RedisBackend;
    /// let backend = RedisBackend::from_url("redis://127.0.0.1:6379")?;
    /// let s = backend.stats();
    /// println!("{} decisions, {} timeouts", s.decisions, s.timeouts);
    /// # Ok::<(), redis::RedisError>(())
    /// ```
    pub fn stats(&self) -> RedisStats {
        self.inner.stats.snapshot()
    }

    /// Whether decisions go to Redis now (`false` while it, or on a
    /// Cluster any master, is considered down and skipped).
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::backend::redis::RedisBackend;
    /// // Available until decisions start failing.
    /// assert!(RedisBackend::from_url("redis://127.0.0.1:6379")?.is_available());
    /// # Ok::<(), redis::RedisError>(())
    /// ```
    pub fn is_available(&self) -> bool {
        self.inner.nodes.all_up()
    }

    /// Whether decisions for `key` go to Redis now (`false` while the node
    /// that holds it, on a Cluster, or the server, is considered down).
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::backend::redis::RedisBackend;
    /// let backend = RedisBackend::from_url("redis://127.0.0.1:6379")?;
    /// assert!(backend.is_available_for("ann"));
    /// # Ok::<(), redis::RedisError>(())
    /// ```
    pub fn is_available_for<K: RedisKey + ?Sized>(&self, key: &K) -> bool {
        self.inner.nodes.of(&self.inner.key_bytes(key)).is_up()
    }

    /// The failure policy.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::backend::redis::{FailurePolicy, RedisBackend};
    /// let backend = RedisBackend::from_url("redis://127.0.0.1:6379")?;
    /// assert_eq!(backend.get_failure_policy(), FailurePolicy::default());
    /// # Ok::<(), redis::RedisError>(())
    /// ```
    pub fn get_failure_policy(&self) -> FailurePolicy {
        self.inner.failure
    }

    /// The Redis key a request key maps to.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::backend::redis::RedisBackend;
    /// let backend = RedisBackend::from_url("redis://127.0.0.1:6379")?;
    /// assert_eq!(backend.redis_key("ann"), b"sluice:ann");
    /// assert_eq!(backend.redis_key(&42_u64), b"sluice:42");
    /// # Ok::<(), redis::RedisError>(())
    /// ```
    pub fn redis_key<K: RedisKey + ?Sized>(&self, key: &K) -> Vec<u8> {
        self.inner.key_bytes(key)
    }

    /// Runs one decision for `key` directly (what the layer does).
    fn decide(
        &self,
        key: Vec<u8>,
        policy: &Policy,
        cost: u32,
        max_wait: Duration,
        consume: bool,
    ) -> Acquire<RedisFuture> {
        let inner = &self.inner;
        if key.len() > inner.max_key_len {
            return Acquire::Ready(Err(KeyTooLong::new(key.len(), inner.max_key_len).into()));
        }
        let max_wait_ns = u64::try_from(max_wait.as_nanos()).unwrap_or(u64::MAX);
        let now = inner.clock.now();
        if let Some(d) = inner.deny.check(&key, cost, now, max_wait_ns) {
            inner.stats.deny_cache_hits.fetch_add(1, Ordering::Relaxed);
            return Acquire::Ready(Err(RateLimited::from_decision(&d)
                .with_policy(policy.name_arc())
                .into()));
        }
        let permit = if consume {
            match inner.in_flight_permit(&key, policy) {
                Ok(permit) => permit,
                Err(e) => return Acquire::Ready(Err(e)),
            }
        } else {
            None
        };
        let health = inner.nodes.of(&key);
        let probe = match health.route(now) {
            Route::Redis => false,
            Route::Probe => true,
            Route::Skip => {
                inner.stats.skipped.fetch_add(1, Ordering::Relaxed);
                return Acquire::Ready(
                    inner
                        .on_failure(&key, policy, cost, max_wait, consume, None, &health, now)
                        .map(|g| g.with_in_flight(permit)),
                );
            }
        };
        let inner = inner.clone();
        let policy = policy.clone();
        Acquire::Pending(RedisFuture(Box::pin(async move {
            let result = inner
                .remote(&key, &policy, cost, max_wait_ns, consume, &health, probe)
                .await;
            result.map(|g| g.with_in_flight(permit))
        })))
    }
}

impl Inner {
    fn key_bytes<K: RedisKey + ?Sized>(&self, key: &K) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.prefix.len() + 24);
        out.extend_from_slice(&self.prefix);
        key.write_key(&mut out);
        out
    }

    /// The derived policies of `policy`, made on first use.
    fn derived<T>(&self, policy: &Policy, f: impl FnOnce(&Derived) -> T) -> T {
        let mut map = self.derived.lock().ignore_poison();
        if map.len() > 1024 && !map.contains_key(&policy.id()) {
            // Policies are few; this only guards against a caller making
            // a new one per request.
            map.clear();
        }
        let d = map
            .entry(policy.id())
            .or_insert_with(|| Derived::new(policy, self.failure));
        f(d)
    }

    #[allow(clippy::ptr_arg)] // the local stores are keyed by Vec<u8>
    fn in_flight_permit(
        &self,
        key: &Vec<u8>,
        policy: &Policy,
    ) -> Result<Option<super::InFlight>, BoxError> {
        if policy.in_flight_limit().is_none() {
            return Ok(None);
        }
        let local = self.derived(policy, |d| d.in_flight.clone());
        let Some(local) = local else { return Ok(None) };
        match self.in_flight.acquire(key, &local, 1, Duration::ZERO) {
            Acquire::Ready(Ok(mut grant)) => Ok(grant.take_in_flight()),
            Acquire::Ready(Err(e)) => Err(e),
            Acquire::Pending(never) => match never {},
        }
    }

    async fn eval(&self, key: &[u8], args: &[u64]) -> redis::RedisResult<Vec<i64>> {
        // EVALSHA in one command buffer; on NOSCRIPT (a restarted or
        // flushed server) the script is loaded and sent again: it did not
        // run, so nothing is charged twice.
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.script.get_hash()).arg(1).arg(key);
        for a in args {
            cmd.arg(*a);
        }
        match &self.conn {
            Conn::Client { client, manager } => {
                let manager = manager
                    .get_or_try_init(|| async {
                        // No retries inside the manager: a reconnection is
                        // one attempt, made at once when a call finds the
                        // connection broken. Retrying is the probe task's
                        // job; a retry that sleeps would make a probe wait
                        // past its deadline while Redis is already back.
                        let config = ConnectionManagerConfig::new()
                            .set_connection_timeout(Some(Duration::from_secs(1)))
                            .set_number_of_retries(0);
                        ConnectionManager::new_lazy_with_config(client.clone(), config)
                    })
                    .await?;
                self.run(&cmd, key, args, &mut manager.clone()).await
            }
            Conn::Manager(manager) => self.run(&cmd, key, args, &mut manager.clone()).await,
            Conn::Cluster { client, conn } => {
                let conn = conn
                    .get_or_try_init(|| async {
                        let mut conn = client.get_async_connection().await?;
                        // Learn which master holds which slot, for the
                        // health of each; without it, one health for all.
                        let _ = self.learn_topology(&mut conn).await;
                        Ok::<_, redis::RedisError>(conn)
                    })
                    .await?;
                self.run(&cmd, key, args, &mut conn.clone()).await
            }
        }
    }

    async fn run(
        &self,
        cmd: &redis::Cmd,
        key: &[u8],
        args: &[u64],
        conn: &mut impl redis::aio::ConnectionLike,
    ) -> redis::RedisResult<Vec<i64>> {
        match cmd.query_async(conn).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                // The script itself, in one round trip (EVAL also caches it
                // for the next EVALSHA).
                let mut eval = redis::cmd("EVAL");
                eval.arg(SCRIPT).arg(1).arg(key);
                for a in args {
                    eval.arg(*a);
                }
                eval.query_async(conn).await
            }
            r => r,
        }
    }

    /// Asks Redis about `key` without changing anything (a peek of one
    /// request at 1 per second), within the deadline. A first failure
    /// that is not a timeout is tried once more: the connection hands the
    /// last failed connection attempt to the first call after it, and
    /// starts a new attempt only then, so the second call is the one that
    /// sees whether Redis answers now.
    pub(super) async fn probe(&self, key: &[u8]) -> bool {
        let args = [1, 0, 0, 1_000_000, 1];
        for attempt in 0..2 {
            match tokio::time::timeout(self.deadline, self.eval(key, &args)).await {
                Ok(Ok(reply)) => return reply.len() == 7,
                Ok(Err(e)) if attempt == 0 && !e.is_timeout() => {}
                _ => return false,
            }
        }
        false
    }

    /// Learns again which master holds which slot (on a Cluster, at most
    /// once a second).
    pub(super) async fn refresh_topology(&self) {
        let Some(learned_at) = self.nodes.learned_at() else {
            return;
        };
        if learned_at != 0 && self.clock.now().saturating_sub(learned_at) < 1_000_000_000 {
            return;
        }
        if let Conn::Cluster { conn, .. } = &self.conn
            && let Some(conn) = conn.get()
        {
            let _ = self.learn_topology(&mut conn.clone()).await;
        }
    }

    /// Reads `CLUSTER SLOTS` into the health map, within the deadline.
    async fn learn_topology(&self, conn: &mut ClusterConnection) -> Result<(), ()> {
        let reply: redis::Value = tokio::time::timeout(
            self.deadline,
            redis::cmd("CLUSTER").arg("SLOTS").query_async(conn),
        )
        .await
        .map_err(drop)?
        .map_err(drop)?;
        let ranges = slot_ranges(&reply).ok_or(())?;
        self.nodes.learn(&ranges, self.clock.now());
        Ok(())
    }

    #[allow(clippy::too_many_arguments, clippy::ptr_arg)]
    async fn remote(
        self: &Arc<Self>,
        key: &Vec<u8>,
        policy: &Policy,
        cost: u32,
        max_wait_ns: u64,
        consume: bool,
        health: &Arc<Health>,
        probe: bool,
    ) -> Result<Grant, BoxError> {
        let mut args = [0u64; 3 + 2 * crate::policy::MAX_QUOTAS];
        args[0] = u64::from(cost);
        args[1] = max_wait_ns / 1_000;
        args[2] = u64::from(consume);
        let n = policy.len();
        for (i, q) in policy.quotas().enumerate() {
            args[3 + 2 * i] = emission_us(q);
            args[4 + 2 * i] = u64::from(q.burst());
        }
        let sent = self.clock.now();
        let reply = tokio::time::timeout(self.deadline, self.eval(key, &args[..3 + 2 * n])).await;
        let failure = match reply {
            Ok(Ok(reply)) => match self.decision(&reply, policy) {
                Some((decision, wait)) => {
                    self.stats.decisions.fetch_add(1, Ordering::Relaxed);
                    health.success(self, sent, probe);
                    return self.answer(key, policy, cost, consume, sent, decision, wait);
                }
                None => BackendErrorKind::Script,
            },
            Ok(Err(e)) => error_kind(&e),
            Err(_) => BackendErrorKind::Timeout,
        };
        self.stats.count_error(failure);
        let now = self.clock.now();
        health.failure(self, key, now, probe);
        let max_wait = Duration::from_nanos(max_wait_ns);
        self.on_failure(
            key,
            policy,
            cost,
            max_wait,
            consume,
            Some(failure),
            health,
            now,
        )
    }

    /// The decision in a script reply.
    fn decision(&self, reply: &[i64], policy: &Policy) -> Option<(Decision, u64)> {
        let &[
            allowed,
            index,
            remaining,
            retry_after,
            reset_after,
            wait,
            _now,
        ] = reply
        else {
            return None;
        };
        let quota = policy
            .quotas()
            .nth(usize::try_from(index).ok()?.checked_sub(1)?)?;
        let us = |v: i64| u64::try_from(v).ok().map(|v| v.saturating_mul(1_000));
        let decision = Decision::remote(
            quota,
            emission_us(quota) * 1_000,
            allowed == 1,
            us(retry_after)?,
            us(reset_after)?,
        );
        // The script counts `remaining` as the decision does.
        if i64::from(decision.remaining()) != remaining {
            return None;
        }
        Some((decision, us(wait)?))
    }

    #[allow(clippy::too_many_arguments, clippy::ptr_arg)]
    fn answer(
        &self,
        key: &Vec<u8>,
        policy: &Policy,
        cost: u32,
        consume: bool,
        sent: u64,
        decision: Decision,
        wait: u64,
    ) -> Result<Grant, BoxError> {
        if decision.is_allowed() {
            if consume {
                // Keep the fallback warm: count what this instance admits.
                let fallback = self.derived(policy, |d| d.fallback.clone());
                let _ = self.fallback.acquire(key, &fallback, cost, Duration::ZERO);
            }
            Ok(Grant::new(decision, Duration::from_nanos(wait)))
        } else {
            if consume {
                self.deny.insert(key, cost, sent, decision);
            }
            Err(RateLimited::from_decision(&decision)
                .with_policy(policy.name_arc())
                .into())
        }
    }

    /// The failure policy's answer, reported.
    #[allow(clippy::too_many_arguments, clippy::ptr_arg)]
    fn on_failure(
        &self,
        key: &Vec<u8>,
        policy: &Policy,
        cost: u32,
        max_wait: Duration,
        consume: bool,
        error: Option<BackendErrorKind>,
        health: &Health,
        now: u64,
    ) -> Result<Grant, BoxError> {
        let (action, result) = match self.failure {
            FailurePolicy::FailOpen => {
                self.stats.failed_open.fetch_add(1, Ordering::Relaxed);
                let quota = policy.quotas().next().expect("a policy has a quota");
                let full = Decision::remote(quota, quota.emission_nanos(), true, 0, 0);
                (FailureAction::Allowed, Ok(Grant::new(full, Duration::ZERO)))
            }
            FailurePolicy::FailClosed => {
                self.stats.failed_closed.fetch_add(1, Ordering::Relaxed);
                let retry_after = Duration::from_nanos(health.retry_after(now));
                (
                    FailureAction::Refused,
                    Err(BackendUnavailable::new(BACKEND, retry_after).into()),
                )
            }
            FailurePolicy::Fallback { .. } => {
                self.stats.fallback.fetch_add(1, Ordering::Relaxed);
                let fallback = self.derived(policy, |d| d.fallback.clone());
                let result = if consume {
                    self.fallback.acquire(key, &fallback, cost, max_wait)
                } else {
                    self.fallback.peek(key, &fallback, cost)
                };
                let result = match result {
                    Acquire::Ready(r) => r,
                    Acquire::Pending(never) => match never {},
                };
                (FailureAction::Fallback, result)
            }
        };
        if self.observers.is_set() {
            self.observers.emit(&Event::BackendFailure {
                backend: BACKEND,
                key: Some(&KeyText(key)),
                error,
                action,
            });
        }
        result
    }
}

/// The `(first slot, last slot, master address)` ranges of a `CLUSTER
/// SLOTS` reply.
fn slot_ranges(reply: &redis::Value) -> Option<Vec<(u16, u16, String)>> {
    use redis::Value;
    let Value::Array(ranges) = reply else {
        return None;
    };
    let int = |v: &Value| match v {
        Value::Int(i) => u16::try_from(*i).ok(),
        _ => None,
    };
    let mut out = Vec::with_capacity(ranges.len());
    for range in ranges {
        let Value::Array(fields) = range else {
            return None;
        };
        let [first, last, Value::Array(master), ..] = fields.as_slice() else {
            return None;
        };
        let host = match master.first()? {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            Value::SimpleString(s) => s.clone(),
            _ => return None,
        };
        let port = master.get(1).and_then(int)?;
        out.push((int(first)?, int(last)?, format!("{host}:{port}")));
    }
    Some(out)
}

/// The emission interval in whole microseconds, rounded up.
fn emission_us(q: Quota) -> u64 {
    q.emission_nanos().div_ceil(1_000)
}

fn error_kind(e: &redis::RedisError) -> BackendErrorKind {
    if e.is_timeout() {
        BackendErrorKind::Timeout
    } else if e.is_connection_refusal() {
        BackendErrorKind::Refused
    } else if e.is_io_error() || e.is_connection_dropped() {
        BackendErrorKind::Io
    } else {
        match e.kind() {
            redis::ErrorKind::Server(
                redis::ServerErrorKind::ResponseError
                | redis::ServerErrorKind::NoScript
                | redis::ServerErrorKind::ExecAbort,
            )
            | redis::ErrorKind::UnexpectedReturnType
            | redis::ErrorKind::Parse => BackendErrorKind::Script,
            redis::ErrorKind::ClusterConnectionNotFound => BackendErrorKind::Io,
            _ => BackendErrorKind::Other,
        }
    }
}

impl Derived {
    fn new(policy: &Policy, failure: FailurePolicy) -> Self {
        let instances = match failure {
            FailurePolicy::Fallback { expected_instances } => expected_instances.max(1),
            _ => 1,
        };
        let mut quotas = policy.quotas().map(|q| scale(q, instances));
        let mut fallback = Policy::new(quotas.next().expect("a policy has a quota"));
        for q in quotas {
            fallback = fallback.and(q).expect("no more quotas than the source");
        }
        if let Some(name) = policy.name_arc() {
            fallback = fallback.named(name);
        }
        let in_flight = policy
            .in_flight_limit()
            // A quota that never binds (one a nanosecond): only the cap counts.
            .map(|n| Policy::new(Quota::per_second(1_000_000_000)).max_in_flight(n));
        Derived {
            _source: policy.clone(),
            fallback,
            in_flight,
        }
    }
}

/// `quota` shared by `n` instances: the same limit over `n` periods, the
/// burst divided (at least 1).
fn scale(quota: Quota, n: u32) -> Quota {
    if n <= 1 {
        return quota;
    }
    let burst = (quota.burst() / n).max(1);
    quota
        .period()
        .checked_mul(n)
        .and_then(|period| Quota::try_new(quota.limit(), period).ok())
        .map_or(quota, |q| q.with_burst(burst))
}

/// Shows a Redis key in events and logs (lossy UTF-8, truncated).
struct KeyText<'a>(&'a [u8]);

/// Hashes as the `str` (or byte string) the key was made from, so that a
/// [`Monitor`](crate::observe::Monitor) sees a `String` key's row.
impl std::hash::Hash for KeyText<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match std::str::from_utf8(self.0) {
            Ok(text) => text.hash(state),
            Err(_) => self.0.hash(state),
        }
    }
}

impl fmt::Debug for KeyText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.0[..self.0.len().min(128)];
        write!(f, "{:?}", String::from_utf8_lossy(shown))?;
        if shown.len() < self.0.len() {
            write!(f, "..({} bytes)", self.0.len())?;
        }
        Ok(())
    }
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

/// The future of a decision that goes to Redis.
pub struct RedisFuture(Pin<Box<dyn Future<Output = Result<Grant, BoxError>> + Send>>);

impl Future for RedisFuture {
    type Output = Result<Grant, BoxError>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl fmt::Debug for RedisFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedisFuture")
    }
}

impl<K> Backend<K> for RedisBackend
where
    K: RedisKey + Send + Sync + 'static,
{
    type Future = RedisFuture;

    fn acquire(
        &self,
        key: &K,
        policy: &Policy,
        cost: u32,
        max_wait: Duration,
    ) -> Acquire<RedisFuture> {
        self.decide(self.inner.key_bytes(key), policy, cost, max_wait, true)
    }

    fn peek(&self, key: &K, policy: &Policy, cost: u32) -> Acquire<RedisFuture> {
        self.decide(
            self.inner.key_bytes(key),
            policy,
            cost,
            Duration::ZERO,
            false,
        )
    }

    /// This instance's local view (its warm fallback), without a round trip.
    fn states(&self, key: &K, policy: &Policy) -> QuotaStates {
        let fallback = self.inner.derived(policy, |d| d.fallback.clone());
        <Memory<Vec<u8>> as Backend<Vec<u8>>>::states(
            &self.inner.fallback,
            &self.inner.key_bytes(key),
            &fallback,
        )
    }
}

// ---------------------------------------------------------------------
// Counters.

#[derive(Default)]
struct Counters {
    decisions: AtomicU64,
    deny_cache_hits: AtomicU64,
    timeouts: AtomicU64,
    refused: AtomicU64,
    io_errors: AtomicU64,
    script_errors: AtomicU64,
    other_errors: AtomicU64,
    skipped: AtomicU64,
    failed_open: AtomicU64,
    failed_closed: AtomicU64,
    fallback: AtomicU64,
    went_down: AtomicU64,
    came_back: AtomicU64,
}

impl Counters {
    fn count_error(&self, kind: BackendErrorKind) {
        let counter = match kind {
            BackendErrorKind::Timeout => &self.timeouts,
            BackendErrorKind::Refused => &self.refused,
            BackendErrorKind::Io => &self.io_errors,
            BackendErrorKind::Script => &self.script_errors,
            _ => &self.other_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> RedisStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RedisStats {
            decisions: r(&self.decisions),
            deny_cache_hits: r(&self.deny_cache_hits),
            timeouts: r(&self.timeouts),
            refused: r(&self.refused),
            io_errors: r(&self.io_errors),
            script_errors: r(&self.script_errors),
            other_errors: r(&self.other_errors),
            skipped: r(&self.skipped),
            failed_open: r(&self.failed_open),
            failed_closed: r(&self.failed_closed),
            fallback: r(&self.fallback),
            went_down: r(&self.went_down),
            came_back: r(&self.came_back),
        }
    }
}

#[cfg(all(test, feature = "test-util"))]
mod conformance;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_quotas_share_the_rate() {
        let q = Quota::per_minute(60).with_burst(10);
        let s = scale(q, 4);
        assert_eq!(s.limit(), 60);
        assert_eq!(s.period(), Duration::from_secs(240));
        assert_eq!(s.burst(), 2);
        assert_eq!(scale(Quota::per_second(2), 8).burst(), 1);
        assert_eq!(scale(q, 1), q);
    }

    #[test]
    fn key_text_is_short_and_lossy() {
        let long = vec![b'a'; 300];
        let shown = format!("{:?}", KeyText(&long));
        assert!(shown.ends_with("..(300 bytes)"), "{shown}");
        assert_eq!(format!("{:?}", KeyText(b"k\xff")), "\"k\u{fffd}\"");
    }

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
