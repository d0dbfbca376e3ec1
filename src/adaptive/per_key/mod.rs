//! [`AdaptivePolicy`]: per-key quotas that follow each key's success rate
//! and latency, with [`KeyFeedbackLayer`] feeding it.

mod layer;
mod service;

use std::any::Any;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tower_layer::Layer;
use tower_service::Service;

use super::classify::DefaultFeedback;
use crate::BoxError;
use crate::classify::{Classify, Outcome};
use crate::clock::Clock;
use crate::future::ResponseFuture;
use crate::future::Track;
use crate::key::{KeyExtractor, KeyOf};
use crate::observe::{Event, Observer, Observers};
use crate::per_key::PerKeyLayer;
use crate::policy::Policy;
use crate::quota::Quota;
use crate::slot::Slot;
use crate::util::IgnorePoison;

const LAYER: &str = "adaptive_per_key";
const SHARDS: usize = 16;

pub use layer::*;
pub use service::*;

/// What a key has shown so far: exponentially weighted moving averages of
/// its success rate and latency.
///
/// The first response sets both; each later one moves them by the
/// smoothing factor `α`: `avg += α × (sample - avg)`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::Quota;
/// use tower_sluice::adaptive::AdaptivePolicy;
///
/// let policy = AdaptivePolicy::new(Quota::per_minute(100), 200);
/// policy.record(&"ann", true, Duration::from_millis(200));
/// let stats = policy.stats(&"ann").unwrap();
/// assert_eq!((stats.success_rate, stats.samples), (1.0, 1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct KeyStats {
    /// Between 0 (every response failed) and 1.
    pub success_rate: f64,
    /// The moving average of response times.
    pub avg_latency: Duration,
    /// Responses seen.
    pub samples: u64,
}

impl KeyStats {
    /// Stats of a key with these averages (for testing a formula).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::adaptive::{DefaultFormula, KeyStats, LimitFormula};
    ///
    /// // A key that fails half the time, slowly: no raise.
    /// let stats = KeyStats::new(0.5, Duration::from_secs(20), 100);
    /// assert_eq!(DefaultFormula::default().limit(100, 200, &stats), 125);
    /// ```
    pub fn new(success_rate: f64, avg_latency: Duration, samples: u64) -> Self {
        KeyStats {
            success_rate,
            avg_latency,
            samples,
        }
    }

    fn record(&mut self, alpha: f64, success: bool, latency: Duration) {
        let x = if success { 1.0 } else { 0.0 };
        if self.samples == 0 {
            self.success_rate = x;
            self.avg_latency = latency;
        } else {
            self.success_rate += alpha * (x - self.success_rate);
            let avg = self.avg_latency.as_secs_f64();
            self.avg_latency = Duration::from_secs_f64(avg + alpha * (latency.as_secs_f64() - avg));
        }
        self.samples += 1;
    }
}

/// Computes a key's limit (requests per the base quota's period) from its
/// [`KeyStats`]. The result is kept within `base..=max`.
///
/// Implemented by [`DefaultFormula`] and by closures
/// `Fn(u32, u32, &KeyStats) -> u32` (base, max, stats).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::Quota;
/// use tower_sluice::adaptive::{AdaptivePolicy, KeyStats};
///
/// // Reward success only, ignoring latency.
/// let policy = AdaptivePolicy::new(Quota::per_minute(100), 300)
///     .formula(|base: u32, max: u32, stats: &KeyStats| {
///         base + ((max - base) as f64 * stats.success_rate) as u32
///     });
/// assert_eq!(policy.record(&"ann", true, Duration::from_secs(30)), 300);
/// ```
pub trait LimitFormula: Send + Sync + 'static {
    /// The key's limit, given the base and max limits.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::adaptive::{DefaultFormula, KeyStats, LimitFormula};
    ///
    /// let stats = KeyStats::new(1.0, Duration::ZERO, 10);
    /// assert_eq!(DefaultFormula::default().limit(100, 1_000, &stats), 200);
    /// ```
    fn limit(&self, base: u32, max: u32, stats: &KeyStats) -> u32;
}

impl<F> LimitFormula for F
where
    F: Fn(u32, u32, &KeyStats) -> u32 + Send + Sync + 'static,
{
    fn limit(&self, base: u32, max: u32, stats: &KeyStats) -> u32 {
        self(base, max, stats)
    }
}

/// The default formula:
///
/// ```text
/// multiplier = (success_rate + max(0, 1 - avg_latency / latency_ceiling)) / 2
/// limit      = min(floor(base × (1 + multiplier)), max)
/// ```
///
/// A key that always succeeds instantly gets twice the base (up to max);
/// one that always fails at the ceiling keeps the base.
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::adaptive::{DefaultFormula, KeyStats, LimitFormula};
///
/// let f = DefaultFormula::new(Duration::from_secs(10));
/// // success 0.8, latency 2 s: multiplier (0.8 + 0.8) / 2 = 0.8.
/// let stats = KeyStats::new(0.8, Duration::from_secs(2), 50);
/// assert_eq!(f.limit(100, 1000, &stats), 180);
/// assert_eq!(f.limit(100, 150, &stats), 150);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DefaultFormula {
    latency_ceiling: Duration,
}

impl DefaultFormula {
    /// With this latency ceiling (a latency at or above it adds nothing).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::adaptive::{DefaultFormula, KeyStats};
    /// // Responses slower than 500 ms earn nothing for speed.
    /// let f = DefaultFormula::new(Duration::from_millis(500));
    /// assert_eq!(f.multiplier(&KeyStats::new(1.0, Duration::from_secs(1), 5)), 0.5);
    /// ```
    pub fn new(latency_ceiling: Duration) -> Self {
        DefaultFormula { latency_ceiling }
    }

    /// The multiplier for `stats`, in `0..=1`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::adaptive::{DefaultFormula, KeyStats};
    /// let f = DefaultFormula::new(Duration::from_secs(10));
    /// assert_eq!(f.multiplier(&KeyStats::new(1.0, Duration::ZERO, 1)), 1.0);
    /// assert_eq!(f.multiplier(&KeyStats::new(0.0, Duration::from_secs(10), 1)), 0.0);
    /// ```
    pub fn multiplier(&self, stats: &KeyStats) -> f64 {
        let ceiling = self.latency_ceiling.as_secs_f64();
        let speed = if ceiling > 0.0 {
            (1.0 - stats.avg_latency.as_secs_f64() / ceiling).max(0.0)
        } else {
            0.0
        };
        ((stats.success_rate.clamp(0.0, 1.0) + speed) / 2.0).clamp(0.0, 1.0)
    }
}

impl Default for DefaultFormula {
    /// A latency ceiling of 10 s.
    fn default() -> Self {
        DefaultFormula::new(Duration::from_secs(10))
    }
}

impl LimitFormula for DefaultFormula {
    fn limit(&self, base: u32, max: u32, stats: &KeyStats) -> u32 {
        // Rounded down, forgiving float error (184.0000001 and 183.9999999 are 184).
        let limit = (f64::from(base) * (1.0 + self.multiplier(stats)) + 1e-9).floor();
        (limit.min(f64::from(u32::MAX)) as u32).min(max)
    }
}

/// Per-key limits that move between a base and a max with how well each
/// key behaves: its success rate and an EWMA of its latency, through a
/// [`LimitFormula`] ([`DefaultFormula`] unless told).
///
/// Use it with two layers, both made from it: the
/// [`per_key_layer`](Self::per_key_layer) limits (a [`PerKeyLayer`] whose
/// policies it resolves), and the [`feedback_layer`](Self::feedback_layer),
/// inside it, learns from each admitted request's response.
///
/// ```
/// use std::time::Duration;
/// use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
/// use tower_sluice::Quota;
/// use tower_sluice::adaptive::AdaptivePolicy;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// // 100 per minute for every key, up to 200 for keys that do well.
/// let adaptive = AdaptivePolicy::new(Quota::per_minute(100), 200)
///     .latency_ceiling(Duration::from_secs(2));
/// let key = |req: &String| Some(req.clone());
/// let mut svc = ServiceBuilder::new()
///     .layer(adaptive.per_key_layer(key))
///     .layer(adaptive.feedback_layer(key))
///     .service(service_fn(|_req: String| async { Ok::<_, BoxError>("ok") }));
///
/// svc.ready().await?.call("alice".to_string()).await?;
/// // One quick success: alice's limit is already above the base.
/// assert!(adaptive.limit(&"alice".to_string()) > 100);
/// # Ok(())
/// # }
/// ```
///
/// # Fairness
///
/// A raised key keeps the base quota's burst *in time*: at twice the base
/// limit its bucket refills twice as fast and holds twice the requests, over
/// the same span. A key keeps its debt across a change (see
/// [`PerKeyHandle`](crate::per_key::PerKeyHandle)), so a raise never makes
/// a key's next admission later, nor its burst smaller, than the base
/// quota would.
///
/// # Sharing
///
/// A policy and its clones are one policy: they, and the layers made from
/// them, share the learned stats. Setters never panic and may come at any
/// time, on any clone: a setter applies to the policy and every clone,
/// and the layers made from it follow (stats learned so far restart).
/// Configure the policy before making layers: a
/// [`per_key_layer`](Self::per_key_layer) keeps the base policy (and its
/// [`named`](Self::named) name) it was made with.
///
/// # Key types
///
/// The key type is the extractor's, given to
/// [`per_key_layer`](Self::per_key_layer) and
/// [`feedback_layer`](Self::feedback_layer); methods that take a key
/// (such as [`limit`](Self::limit) or [`record`](Self::record)) take the
/// same type. Keys of different types are different keys: a policy whose
/// layers key by `String` has no stats for a `&str`.
///
/// # Memory
///
/// Stats are kept for at most [`max_keys`](Self::max_keys) keys (default
/// 100 000) of each key type, in two generations per shard: when a
/// shard's newer generation is full the older one is dropped. A key that
/// is forgotten goes back to the base limit and starts learning again.
pub struct AdaptivePolicy {
    shared: Slot<Shared>,
}

struct Shared {
    clock: Clock,
    base: Quota,
    max: u32,
    name: Option<Arc<str>>,
    alpha: f64,
    formula: Arc<dyn LimitFormula>,
    latency_ceiling: Duration,
    custom_formula: bool,
    per_generation: usize,
    hasher: hashbrown::DefaultHashBuilder,
    tables: Tables,
    observers: Observers,
}

/// The stats of each key type the policy has met: nearly always one, the
/// first, found without a lock.
#[derive(Default)]
struct Tables {
    first: OnceLock<Arc<dyn Table>>,
    others: Mutex<Vec<Arc<dyn Table>>>,
}

/// The stats of one key type, type-erased.
trait Table: Any + Send + Sync {
    /// Keys held.
    fn len(&self) -> usize;
}

/// The stats of keys of type `K`, sharded.
struct Shards<K>(Box<[Mutex<Shard<K>>]>);

impl<K: Send + 'static> Table for Shards<K> {
    fn len(&self) -> usize {
        self.0
            .iter()
            .map(|m| {
                let s = m.lock().ignore_poison();
                s.current.len() + s.previous.len()
            })
            .sum()
    }
}

/// The table of one key type: borrowed from the policy (the first key
/// type), or shared out of its list (the others).
enum TableRef<'a, K> {
    First(&'a Shards<K>),
    Other(Arc<Shards<K>>),
}

impl<K> Deref for TableRef<'_, K> {
    type Target = Shards<K>;

    fn deref(&self) -> &Shards<K> {
        match self {
            TableRef::First(t) => t,
            TableRef::Other(t) => t,
        }
    }
}

struct Shard<K> {
    current: hashbrown::HashMap<K, Entry>,
    previous: hashbrown::HashMap<K, Entry>,
}

#[derive(Clone)]
struct Entry {
    stats: KeyStats,
    limit: u32,
    /// `None` while the limit is the base (the layer's default applies).
    policy: Option<Policy>,
}

impl AdaptivePolicy {
    /// Keys start at `base` (its limit, period and burst) and may reach
    /// `max` requests per the same period (at least the base's limit, at
    /// most one per nanosecond).
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::Quota;
    /// # use tower_sluice::adaptive::AdaptivePolicy;
    /// let policy = AdaptivePolicy::new(Quota::per_minute(100), 200);
    /// assert_eq!((policy.base(), policy.max()), (Quota::per_minute(100), 200));
    /// ```
    pub fn new(base: Quota, max: u32) -> Self {
        let mut p = AdaptivePolicy {
            shared: Slot::new(Shared {
                clock: Clock::new(),
                base,
                // At most one request per nanosecond of the period.
                max: max
                    .min(u32::try_from(base.period().as_nanos()).unwrap_or(u32::MAX))
                    .max(base.limit()),
                name: None,
                alpha: 0.1,
                formula: Arc::new(DefaultFormula::default()),
                latency_ceiling: Duration::from_secs(10),
                custom_formula: false,
                per_generation: 0,
                hasher: hashbrown::DefaultHashBuilder::default(),
                tables: Tables::default(),
                observers: Observers::default(),
            }),
        };
        p = p.max_keys(100_000);
        p
    }

    fn edit(self, f: impl FnOnce(&mut Shared)) -> Self {
        self.shared.replace(Shared::fresh, f);
        self
    }

    /// The EWMA smoothing factor `α` (default 0.1), clamped to `0.001..=1`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::Quota;
    /// # use tower_sluice::adaptive::AdaptivePolicy;
    /// // Follow recent behaviour closely: each response moves the averages by half.
    /// let policy = AdaptivePolicy::new(Quota::per_minute(100), 200).smoothing(0.5);
    /// policy.record(&1, true, Duration::ZERO);
    /// policy.record(&1, false, Duration::ZERO);
    /// assert_eq!(policy.stats(&1).unwrap().success_rate, 0.5);
    /// ```
    #[must_use]
    pub fn smoothing(self, alpha: f64) -> Self {
        let alpha = if alpha.is_nan() {
            0.1
        } else {
            alpha.clamp(0.001, 1.0)
        };
        self.edit(|s| s.alpha = alpha)
    }

    /// The latency ceiling of the [`DefaultFormula`] (default 10 s).
    /// Ignored once a [`formula`](Self::formula) is set.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::Quota;
    /// # use tower_sluice::adaptive::AdaptivePolicy;
    /// let policy = AdaptivePolicy::new(Quota::per_minute(100), 200)
    ///     .latency_ceiling(Duration::from_millis(500));
    /// // Successful but at the ceiling: half the possible raise.
    /// assert_eq!(policy.record(&"ann", true, Duration::from_millis(500)), 150);
    /// ```
    #[must_use]
    pub fn latency_ceiling(self, ceiling: Duration) -> Self {
        self.edit(|s| {
            s.latency_ceiling = ceiling;
            if !s.custom_formula {
                s.formula = Arc::new(DefaultFormula::new(ceiling));
            }
        })
    }

    /// Computes limits with `formula` instead of the [`DefaultFormula`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::Quota;
    /// # use tower_sluice::adaptive::{AdaptivePolicy, KeyStats};
    /// // Keys earn the max only after 100 responses without a failure.
    /// let policy = AdaptivePolicy::new(Quota::per_minute(100), 500).formula(
    ///     |base: u32, max: u32, s: &KeyStats| if s.samples >= 100 && s.success_rate == 1.0 { max } else { base },
    /// );
    /// # let _ = policy;
    /// ```
    #[must_use]
    pub fn formula(self, formula: impl LimitFormula) -> Self {
        self.edit(|s| {
            s.formula = Arc::new(formula);
            s.custom_formula = true;
        })
    }

    /// Keeps stats for at most `max_keys` keys (default 100 000, at least
    /// 32).
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::Quota;
    /// # use tower_sluice::adaptive::AdaptivePolicy;
    /// let policy = AdaptivePolicy::new(Quota::per_minute(100), 200).max_keys(10_000);
    /// # let _ = policy;
    /// ```
    #[must_use]
    pub fn max_keys(self, max_keys: usize) -> Self {
        let per_generation = (max_keys.max(32) / SHARDS / 2).max(1);
        self.edit(|s| {
            s.per_generation = per_generation;
            s.tables = Tables::default();
        })
    }

    /// Names the policies (errors, HTTP `RateLimit-Policy`).
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::Quota;
    /// # use tower_sluice::adaptive::AdaptivePolicy;
    /// let policy = AdaptivePolicy::new(Quota::per_minute(100), 200).named("adaptive");
    /// assert_eq!(policy.base_policy().name(), Some("adaptive"));
    /// ```
    #[must_use]
    pub fn named(self, name: impl Into<Arc<str>>) -> Self {
        let name = name.into();
        self.edit(|s| s.name = Some(name))
    }

    /// Reports limit changes ([`Event::LimitChanged`], with the key) to
    /// `observer`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::Quota;
    /// # use tower_sluice::adaptive::AdaptivePolicy;
    /// use tower_sluice::observe::Event;
    ///
    /// let policy = AdaptivePolicy::new(Quota::per_minute(100), 200).observer(|e: &Event<'_>| {
    ///     if let Event::LimitChanged { .. } = e {
    ///         println!("{e:?}");
    ///     }
    /// });
    /// policy.record(&"ann", true, Duration::ZERO); // prints the change
    /// ```
    #[must_use]
    pub fn observer(self, observer: impl Observer) -> Self {
        self.edit(|s| s.observers = Observers::new(observer, LAYER))
    }

    /// The base quota.
    pub fn base(&self) -> Quota {
        self.shared.load().base
    }

    /// The highest limit, per the base quota's period (never below the
    /// base quota's limit).
    pub fn max(&self) -> u32 {
        self.shared.load().max
    }

    /// The base policy: the base quota, named.
    pub fn base_policy(&self) -> Policy {
        let s = self.shared.load();
        s.policy(s.base.limit())
    }

    /// A [`PerKeyLayer`] whose keys are limited by this policy (the base
    /// as its default, each key's adapted limit through
    /// [`policy_for`](PerKeyLayer::policy_for)). Configure it further as
    /// any `PerKeyLayer` (`max_keys`, `observer`, `http()`, ...), but do
    /// not replace its resolver.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::Quota;
    /// # use tower_sluice::adaptive::AdaptivePolicy;
    /// let policy = AdaptivePolicy::new(Quota::per_minute(100), 200);
    /// let limit = policy.per_key_layer(|req: &String| Some(req.clone())).max_keys(50_000);
    /// # let _ = limit;
    /// ```
    pub fn per_key_layer<M, X>(&self, extractor: X) -> PerKeyLayer<X::Key, X>
    where
        X: KeyOf<M>,
        X::Key: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    {
        let this = self.clone();
        PerKeyLayer::new(self.base_policy(), extractor)
            .policy_for(move |key: &X::Key| this.adapted(key))
    }

    /// The layer that teaches this policy: put it inside the
    /// [`per_key_layer`](Self::per_key_layer), so it sees the responses of
    /// admitted requests only. Responses are read by [`DefaultFeedback`]
    /// (see [`KeyFeedbackLayer::classify`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::Quota;
    /// # use tower_sluice::adaptive::AdaptivePolicy;
    /// let policy = AdaptivePolicy::new(Quota::per_minute(100), 200);
    /// let key = |req: &String| Some(req.clone());
    /// let (limit, learn) = (policy.per_key_layer(key), policy.feedback_layer(key));
    /// // ServiceBuilder::new().layer(limit).layer(learn).service(handler)
    /// # let _ = (limit, learn);
    /// ```
    pub fn feedback_layer<M, X>(&self, extractor: X) -> KeyFeedbackLayer<X::Key, X>
    where
        X: KeyOf<M>,
        X::Key: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    {
        KeyFeedbackLayer {
            policy: self.clone(),
            extractor,
            classify: DefaultFeedback,
            _key: PhantomData,
        }
    }

    /// The policy of `key` when it differs from the base, as a
    /// [`PerKeyLayer::policy_for`] resolver.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::Quota;
    /// # use tower_sluice::adaptive::AdaptivePolicy;
    /// let policy = AdaptivePolicy::new(Quota::per_minute(100), 200);
    /// assert!(policy.adapted(&"ann").is_none()); // the base applies
    /// policy.record(&"ann", true, Duration::ZERO);
    /// let raised = policy.adapted(&"ann").unwrap();
    /// assert_eq!(raised.quotas().next().unwrap().limit(), 200);
    /// ```
    pub fn adapted<K>(&self, key: &K) -> Option<Policy>
    where
        K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    {
        let s = self.shared.load();
        let table = s.find::<K>()?;
        let shard = table.shard(&s.hasher, key);
        shard
            .current
            .get(key)
            .or_else(|| shard.previous.get(key))
            .and_then(|e| e.policy.clone())
    }

    /// `key`'s current limit, per the base quota's period.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::Quota;
    /// # use tower_sluice::adaptive::AdaptivePolicy;
    /// let policy = AdaptivePolicy::new(Quota::per_minute(100), 200);
    /// assert_eq!(policy.limit(&"ann"), 100);
    /// policy.record(&"ann", true, Duration::ZERO);
    /// assert_eq!(policy.limit(&"ann"), 200);
    /// ```
    pub fn limit<K>(&self, key: &K) -> u32
    where
        K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    {
        let s = self.shared.load();
        let Some(table) = s.find::<K>() else {
            return s.base.limit();
        };
        let shard = table.shard(&s.hasher, key);
        shard
            .current
            .get(key)
            .or_else(|| shard.previous.get(key))
            .map_or(s.base.limit(), |e| e.limit)
    }

    /// What `key` has shown so far, if it is remembered.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::Quota;
    /// # use tower_sluice::adaptive::AdaptivePolicy;
    /// let policy = AdaptivePolicy::new(Quota::per_minute(100), 200);
    /// assert!(policy.stats(&"ann").is_none());
    /// policy.record(&"ann", false, Duration::from_secs(1));
    /// assert_eq!(policy.stats(&"ann").unwrap().avg_latency, Duration::from_secs(1));
    /// ```
    pub fn stats<K>(&self, key: &K) -> Option<KeyStats>
    where
        K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    {
        let s = self.shared.load();
        let table = s.find::<K>()?;
        let shard = table.shard(&s.hasher, key);
        shard
            .current
            .get(key)
            .or_else(|| shard.previous.get(key))
            .map(|e| e.stats)
    }

    /// Records one response of `key` (done by the
    /// [`feedback_layer`](Self::feedback_layer); call it yourself to feed
    /// outcomes seen elsewhere). Returns the key's limit after it.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::Quota;
    /// # use tower_sluice::adaptive::AdaptivePolicy;
    /// // Outcomes seen outside the service, such as a background job's.
    /// let policy = AdaptivePolicy::new(Quota::per_minute(100), 200);
    /// let limit = policy.record(&"ann", true, Duration::from_secs(1));
    /// assert_eq!(limit, 195); // (1.0 + 0.9) / 2 = 0.95 above the base
    /// ```
    pub fn record<K>(&self, key: &K, success: bool, latency: Duration) -> u32
    where
        K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    {
        let s = self.shared.load();
        let base = s.base.limit();
        let (old, new) = {
            let table = s.table::<K>();
            let mut guard = table.shard(&s.hasher, key);
            let shard = &mut *guard;
            if !shard.current.contains_key(key) {
                let entry = shard.previous.remove(key).unwrap_or(Entry {
                    stats: KeyStats::new(1.0, Duration::ZERO, 0),
                    limit: base,
                    policy: None,
                });
                if shard.current.len() >= s.per_generation {
                    shard.previous = std::mem::take(&mut shard.current);
                }
                shard.current.insert(key.clone(), entry);
            }
            let entry = shard.current.get_mut(key).expect("inserted above");
            entry.stats.record(s.alpha, success, latency);
            let old = entry.limit;
            let new = s
                .formula
                .limit(base, s.max, &entry.stats)
                .clamp(base, s.max);
            if new != old {
                entry.limit = new;
                entry.policy = (new != base).then(|| s.policy(new));
            }
            (old, new)
        };
        if old != new {
            tracing::trace!(target: "tower_sluice::adaptive", key = ?key, old, new, "per-key limit changed");
            if s.observers.is_set() {
                s.observers.emit(&Event::LimitChanged {
                    layer: LAYER,
                    key: Some(key),
                    old: s.quota(old),
                    new: s.quota(new),
                });
            }
        }
        new
    }

    /// Keys whose stats are held now.
    pub fn len(&self) -> usize {
        let s = self.shared.load();
        let first = s.tables.first.get().map_or(0, |t| t.len());
        let others = s.tables.others.lock().ignore_poison();
        first + others.iter().map(|t| t.len()).sum::<usize>()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash> Shards<K> {
    fn new() -> Self {
        Shards(
            (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        current: hashbrown::HashMap::new(),
                        previous: hashbrown::HashMap::new(),
                    })
                })
                .collect(),
        )
    }

    fn shard(&self, hasher: &hashbrown::DefaultHashBuilder, key: &K) -> MutexGuard<'_, Shard<K>> {
        // The crate's shard pick (`SHARDS` is a power of two); why this
        // table is not the per-key store's: see `backend::memory::store`.
        let i = crate::hash::shard_index(hasher.hash_one(key), self.0.len() - 1);
        self.0[i].lock().ignore_poison()
    }
}

impl Shared {
    /// The table of key type `K`, if a key of that type was recorded.
    fn find<K: Hash + Send + 'static>(&self) -> Option<TableRef<'_, K>> {
        let first = self.tables.first.get()?;
        if let Some(t) = (&**first as &dyn Any).downcast_ref::<Shards<K>>() {
            return Some(TableRef::First(t));
        }
        let others = self.tables.others.lock().ignore_poison();
        others
            .iter()
            .find_map(|t| (t.clone() as Arc<dyn Any + Send + Sync>).downcast().ok())
            .map(TableRef::Other)
    }

    /// The table of key type `K`, made on first use.
    fn table<K: Hash + Send + 'static>(&self) -> TableRef<'_, K> {
        let first = self
            .tables
            .first
            .get_or_init(|| Arc::new(Shards::<K>::new()));
        if let Some(t) = (&**first as &dyn Any).downcast_ref::<Shards<K>>() {
            return TableRef::First(t);
        }
        let mut others = self.tables.others.lock().ignore_poison();
        let found = others
            .iter()
            .find_map(|t| (t.clone() as Arc<dyn Any + Send + Sync>).downcast().ok());
        TableRef::Other(found.unwrap_or_else(|| {
            let t = Arc::new(Shards::<K>::new());
            others.push(t.clone());
            t
        }))
    }

    /// The same settings, with no key learned yet, for a setter to edit.
    fn fresh(&self) -> Shared {
        Shared {
            clock: self.clock.clone(),
            base: self.base,
            max: self.max,
            name: self.name.clone(),
            alpha: self.alpha,
            formula: self.formula.clone(),
            latency_ceiling: self.latency_ceiling,
            custom_formula: self.custom_formula,
            per_generation: self.per_generation,
            hasher: self.hasher.clone(),
            tables: Tables::default(),
            observers: self.observers.clone(),
        }
    }

    /// The quota of a key raised to `limit`: the base's period, and a burst
    /// that spans at least the base's burst in time. A key's debt is kept
    /// as time, so with the same burst time a request the base would admit
    /// is admitted at the raised limit too, never later.
    fn quota(&self, limit: u32) -> Quota {
        let base = self.base;
        if limit <= base.limit() {
            return base;
        }
        // A calendar quota stays one, in its unit: its count is raised.
        if let Some(calendar) = base.calendar() {
            return Quota::try_per_calendar(limit, calendar)
                .map_or(base, |q| q.with_unit(base.unit_id()));
        }
        let window = base.window_nanos();
        let scaled = u64::from(base.burst()) * u64::from(limit);
        let mut burst = scaled.div_ceil(u64::from(base.limit()));
        let Ok(q) = Quota::try_with_burst(limit, base.period(), 1) else {
            return base;
        };
        // The interval is rounded to the nanosecond: make up for it.
        while burst.saturating_mul(q.emission_nanos()) < window {
            burst += 1;
        }
        let burst = u32::try_from(burst).unwrap_or(u32::MAX);
        // In the base's unit: a raised limit of tokens is still of tokens.
        Quota::try_with_burst(limit, base.period(), burst)
            .map_or(base, |q| q.with_unit(base.unit_id()))
    }

    fn policy(&self, limit: u32) -> Policy {
        let policy = Policy::new(self.quota(limit));
        match &self.name {
            Some(name) => policy.named(name.clone()),
            None => policy,
        }
    }
}

impl Clone for AdaptivePolicy {
    fn clone(&self) -> Self {
        AdaptivePolicy {
            shared: self.shared.clone(),
        }
    }
}

impl fmt::Debug for AdaptivePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.shared.load();
        f.debug_struct("AdaptivePolicy")
            .field("base", &s.base)
            .field("max", &s.max)
            .field("smoothing", &s.alpha)
            .field("latency_ceiling", &s.latency_ceiling)
            .field("custom_formula", &s.custom_formula)
            .field("max_keys", &(s.per_generation * SHARDS * 2))
            .finish_non_exhaustive()
    }
}
