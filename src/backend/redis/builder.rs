//! Making a `RedisBackend` and its settings, and what it tells about itself.

use super::*;

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
                settle_script: redis::Script::new(SETTLE_SCRIPT),
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
                settler: Arc::default(),
                settle_delay: DEFAULT_SETTLE_DELAY,
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

    /// How long a settlement ([`Backend::settle`]) waits for its key's
    /// next decision from this backend to carry it, before it is sent on
    /// its own with others (default 250 ms; at most 60 s).
    ///
    /// A settlement carried by a decision costs Redis next to nothing, as
    /// the decision writes the key anyway; one sent on its own costs a
    /// write of its key. So a busy key, whose next request comes within
    /// the delay, settles almost for free. The price is that other
    /// instances see a debt up to this long after it was found (this
    /// instance's next decision on the key always sees it). A debt counts
    /// from when it was found, not from when Redis applies it. `ZERO`
    /// sends every settlement at once.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::backend::redis::RedisBackend;
    /// // Every instance sees a debt within 20 ms.
    /// let backend = RedisBackend::from_url("redis://127.0.0.1:6379")?
    ///     .settle_delay(Duration::from_millis(20));
    /// # let _ = backend;
    /// # Ok::<(), redis::RedisError>(())
    /// ```
    #[must_use]
    pub fn settle_delay(self, delay: Duration) -> Self {
        let ns = delay.min(MAX_SETTLE_DELAY).as_nanos();
        self.edit(|i| i.settle_delay = u64::try_from(ns).unwrap_or(u64::MAX))
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

    /// The counters so far (see [`RedisStats`]).
    pub fn stats(&self) -> RedisStats {
        self.inner.stats.snapshot()
    }

    /// Whether decisions go to Redis now (`false` while it, or on a
    /// Cluster any master, is considered down and skipped). A new backend
    /// is available until decisions start failing.
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

    /// What decisions do while Redis is down (see
    /// [`failure_policy`](Self::failure_policy)).
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
}
