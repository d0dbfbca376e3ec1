//! What every service of one `PerKeyLayer` shares: the backend and the
//! policies (default, per-key overrides, resolver).

use std::fmt;
use std::hash::Hash;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption, Guard};

use super::Policy;
use super::layer::{Config, OnMissing};
use crate::BoxError;
use crate::backend::{Acquire, Admitted, Backend, Grant};
use crate::error::{ExceedsBurst, MissingKey, RateLimited, TooManyInFlight, TooManyKeys};
use crate::gcra::Decision;
use crate::observe::{Event, EventKey, Observers, RowHint};
use crate::util::IgnorePoison;

/// The name per-key layers report in events.
pub(super) const LAYER: &str = "per_key";

/// Chooses a key's policy (for example by tier); `None` means the default.
pub(crate) type Resolver<K> = Arc<dyn Fn(&K) -> Option<Policy> + Send + Sync>;

pub(crate) struct Core<K, B> {
    pub(crate) backend: B,
    pub(crate) policies: Policies<K>,
}

pub(crate) struct Policies<K> {
    /// The default the layer was built with: borrowed by every service,
    /// with no reference count, until a handle changes the default.
    initial: Policy,
    default: ArcSwap<Policy>,
    overrides: RwLock<hashbrown::HashMap<K, Policy>>,
    has_overrides: AtomicBool,
    /// Bumped after each change of the default, so services can keep a
    /// copy and check it with one plain load; 0 while `initial` is the
    /// default.
    generation: AtomicU64,
    pub(crate) resolver: Option<Resolver<K>>,
    /// A resolver set after the layer was shared (cloned, or a handle
    /// taken): read instead of `resolver` once `has_late` is set, so the
    /// usual case pays one plain load.
    late: ArcSwapOption<Resolver<K>>,
    has_late: AtomicBool,
    /// Set while no override, no resolver and no change of the default
    /// exist: every key's policy is `initial`, read with one plain load.
    plain: AtomicBool,
}

/// A resolved policy: borrowed from the default without a reference count,
/// borrowed from a service's copy of the default, or owned.
pub(crate) enum Resolved<'a> {
    Default(Guard<Arc<Policy>>),
    Cached(&'a Policy),
    Owned(Policy),
}

/// A service's copy of the default policy and the generation it was read
/// at, once a handle has changed the default (empty until then: the
/// initial default is borrowed from the layer). Services are cloned per
/// request by axum, so an empty cache keeps a clone free of atomics.
#[derive(Clone, Default)]
pub(crate) struct DefaultCache(Option<(u64, Arc<Policy>)>);

impl<K> Policies<K> {
    /// An empty copy of the default policy for a service to keep, filled
    /// on the first request after a change of the default.
    pub(crate) fn cache(&self) -> DefaultCache {
        DefaultCache::default()
    }
}

impl Deref for Resolved<'_> {
    type Target = Policy;

    #[inline]
    fn deref(&self) -> &Policy {
        match self {
            Resolved::Default(g) => g,
            Resolved::Cached(p) => p,
            Resolved::Owned(p) => p,
        }
    }
}

impl<K: Hash + Eq> Policies<K> {
    pub(crate) fn new(default: Policy) -> Self {
        Policies {
            initial: default.clone(),
            default: ArcSwap::from_pointee(default),
            overrides: RwLock::new(hashbrown::HashMap::new()),
            has_overrides: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            resolver: None,
            late: ArcSwapOption::empty(),
            has_late: AtomicBool::new(false),
            plain: AtomicBool::new(true),
        }
    }

    /// The override set by a handle, else the resolver's, else the default.
    #[inline]
    pub(crate) fn resolve(&self, key: &K) -> Resolved<'static> {
        match self.resolve_own(key) {
            Some(p) => Resolved::Owned(p),
            None => Resolved::Default(self.default.load()),
        }
    }

    /// As [`resolve`](Self::resolve), with no read-modify-write: the
    /// initial default is borrowed from `self` (one plain load of the
    /// generation), a changed one read through a service's copy (where
    /// arc_swap's `load` takes two read-modify-writes, claiming and paying
    /// back a debt slot).
    #[inline]
    pub(crate) fn resolve_with<'c>(&'c self, key: &K, cache: &'c mut DefaultCache) -> Resolved<'c> {
        // No resolver, no override, the default as built: nothing to resolve.
        if self.plain.load(Ordering::Acquire) {
            return Resolved::Cached(&self.initial);
        }
        self.resolve_configured(key, cache)
    }

    /// [`resolve_with`](Self::resolve_with) for a layer with a resolver,
    /// overrides or a changed default.
    #[inline]
    fn resolve_configured<'c>(&'c self, key: &K, cache: &'c mut DefaultCache) -> Resolved<'c> {
        if let Some(p) = self.resolve_own(key) {
            return Resolved::Owned(p);
        }
        let generation = self.generation.load(Ordering::Acquire);
        if generation == 0 {
            return Resolved::Cached(&self.initial);
        }
        if !matches!(&cache.0, Some((seen, _)) if *seen == generation) {
            cache.0 = Some((generation, self.default.load_full()));
        }
        match &cache.0 {
            Some((_, policy)) => Resolved::Cached(policy),
            None => Resolved::Default(self.default.load()),
        }
    }

    /// The override set by a handle, else the resolver's.
    #[inline]
    fn resolve_own(&self, key: &K) -> Option<Policy> {
        if self.has_overrides.load(Ordering::Acquire) {
            let overrides = self.overrides.read().ignore_poison();
            if let Some(p) = overrides.get(key) {
                return Some(p.clone());
            }
        }
        if self.has_late.load(Ordering::Acquire) {
            return self.late.load().as_ref().and_then(|resolver| resolver(key));
        }
        self.resolver.as_ref().and_then(|resolver| resolver(key))
    }

    /// The resolver now in force.
    pub(crate) fn current_resolver(&self) -> Option<Resolver<K>> {
        if self.has_late.load(Ordering::Acquire) {
            self.late.load().as_deref().cloned()
        } else {
            self.resolver.clone()
        }
    }

    /// Sets the resolver of a layer nobody shares yet.
    pub(crate) fn set_resolver(&mut self, resolver: Resolver<K>) {
        self.resolver = Some(resolver);
        *self.plain.get_mut() = false;
        self.late.store(None);
        *self.has_late.get_mut() = false;
    }

    /// Replaces the resolver of a layer already shared: every service and
    /// handle made from it follows.
    pub(crate) fn set_late_resolver(&self, resolver: Resolver<K>) {
        self.late.store(Some(Arc::new(resolver)));
        self.has_late.store(true, Ordering::Release);
        self.plain.store(false, Ordering::Release);
    }

    pub(crate) fn default_policy(&self) -> Policy {
        Policy::clone(&self.default.load())
    }

    pub(crate) fn set_default(&self, policy: Policy) {
        self.default.store(Arc::new(policy));
        self.generation.fetch_add(1, Ordering::Release);
        self.plain.store(false, Ordering::Release);
    }

    pub(crate) fn set_override(&self, key: K, policy: Policy) {
        let mut overrides = self.overrides.write().ignore_poison();
        overrides.insert(key, policy);
        self.has_overrides.store(true, Ordering::Release);
        self.plain.store(false, Ordering::Release);
    }

    pub(crate) fn remove_override(&self, key: &K) -> Option<Policy> {
        let mut overrides = self.overrides.write().ignore_poison();
        let removed = overrides.remove(key);
        self.has_overrides
            .store(!overrides.is_empty(), Ordering::Release);
        removed
    }
}

/// What a per-key layer decided for one request: everything a service
/// needs to call the inner service, wait, or turn the request away (as an
/// error, an HTTP response or a gRPC status).
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) enum Admission<'a, K, F> {
    /// Admitted: send now, or after `grant.wait()`.
    Granted {
        key: &'a K,
        policy: Resolved<'a>,
        grant: Grant,
        /// Where a bound [`Monitor`](crate::observe::Monitor) counted the
        /// request, for its completion.
        row: RowHint,
    },
    /// Admitted to be sent now, decided in place (the common case: see
    /// [`Backend::acquire_now`]).
    Now {
        key: &'a K,
        policy: Resolved<'a>,
        admitted: Admitted,
        /// As in `Granted`.
        row: RowHint,
    },
    /// No key, and the layer lets such requests through unlimited.
    Unlimited,
    /// A remote backend is deciding.
    Deciding { policy: Resolved<'a>, decision: F },
    /// Turned away: over a limit, no key, or the store is full.
    Denied {
        key: Option<&'a K>,
        policy: Option<Resolved<'a>>,
        error: BoxError,
    },
}

impl<K, B> Core<K, B>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    B: Backend<K>,
{
    /// Decides for a request whose extractor found `extracted`, reporting
    /// the outcome to the layer's observer. The one decision path of every
    /// per-key service ([`PerKey`](super::PerKey) and the HTTP and gRPC
    /// adapters).
    #[inline]
    pub(crate) fn admit<'a>(
        &'a self,
        config: &'a Config<K>,
        extracted: Option<&'a K>,
        cost: u32,
        cache: &'a mut DefaultCache,
    ) -> Admission<'a, K, B::Future> {
        // Folded away for a layer without a cost function (always 1).
        if cost == 0 {
            // Free: no charge and no decision.
            return Admission::Unlimited;
        }
        let key = match (extracted, &config.on_missing) {
            (Some(key), _) => key,
            (None, OnMissing::Fallback(key)) => key,
            (None, OnMissing::Allow) => return Admission::Unlimited,
            (None, OnMissing::Reject) => {
                report_missing(&config.observers, config.shadow);
                if config.shadow {
                    return Admission::Unlimited;
                }
                return Admission::Denied {
                    key: None,
                    policy: None,
                    error: MissingKey.into(),
                };
            }
        };
        let policy = self.policies.resolve_with(key, cache);
        if let Some(quota) = policy.exceeded_by(cost).filter(|_| cost > 1) {
            return exceeds(config, key, policy, ExceedsBurst::new(cost, quota));
        }
        let acquired = match self
            .backend
            .acquire_now(key, &policy, cost, config.max_wait)
        {
            Ok(admitted) => {
                let row = report_admitted(&config.observers, key, Duration::ZERO, || {
                    admitted.decision(&policy)
                });
                return Admission::Now {
                    key,
                    policy,
                    admitted,
                    row,
                };
            }
            Err(acquired) => acquired,
        };
        admission(config, key, policy, acquired)
    }
}

/// The admission of a request [`Backend::acquire_now`] did not admit at
/// once: a wait, several quotas or an in-flight cap, a denial, a remote
/// decision. Out of line: the common request's call stays small.
#[inline(never)]
fn admission<'a, K: EventKey + fmt::Debug + std::hash::Hash, F>(
    config: &'a Config<K>,
    key: &'a K,
    policy: Resolved<'a>,
    acquired: Acquire<F>,
) -> Admission<'a, K, F> {
    match acquired {
        Acquire::Ready(Ok(mut grant)) => {
            let row = report_allowed(&config.observers, key, &grant);
            if config.shadow {
                grant.send_now();
            }
            Admission::Granted {
                key,
                policy,
                grant,
                row,
            }
        }
        Acquire::Ready(Err(error)) => {
            report(config, key, &error);
            if config.shadow {
                return Admission::Unlimited;
            }
            Admission::Denied {
                key: Some(key),
                policy: Some(policy),
                error,
            }
        }
        Acquire::Pending(decision) => Admission::Deciding { policy, decision },
    }
}

/// A request whose cost is above a quota's burst: it can never pass, so it
/// is refused at once (let through in shadow mode), never made to wait.
#[cold]
#[inline(never)]
fn exceeds<'a, K: fmt::Debug + Hash, F>(
    config: &Config<K>,
    key: &'a K,
    policy: Resolved<'a>,
    error: ExceedsBurst,
) -> Admission<'a, K, F> {
    tracing::warn!(
        target: "tower_sluice::per_key",
        key = ?key,
        %error,
        enforced = !config.shadow,
        "request can never pass"
    );
    config.observers.emit(&Event::TooLarge {
        layer: LAYER,
        key: Some(key),
        error: &error,
        enforced: !config.shadow,
    });
    if config.shadow {
        return Admission::Unlimited;
    }
    Admission::Denied {
        key: Some(key),
        policy: Some(policy),
        error: error.into(),
    }
}

/// Reports a denial to the observer and to `tracing`.
fn report<K: fmt::Debug + std::hash::Hash>(config: &Config<K>, key: &K, error: &BoxError) {
    report_denied(&config.observers, config.shadow, key, error);
}

/// Reports an admission (and its wait) to the observer and to `tracing`;
/// returns where a bound [`Monitor`](crate::observe::Monitor) counted it.
///
/// Inlined into every admitted request: with no observer and `DEBUG`
/// events off, two loads and two branches; the rest is out of line.
#[inline]
pub(crate) fn report_allowed<K: EventKey>(
    observers: &Observers,
    key: &K,
    grant: &Grant,
) -> RowHint {
    report_admitted(observers, key, grant.wait(), || *grant.decision())
}

/// As [`report_allowed`], for an admission that waits `wait`, its
/// decision built by `decision` only if an observer reads it.
#[inline]
pub(crate) fn report_admitted<K: EventKey>(
    observers: &Observers,
    key: &K,
    wait: Duration,
    decision: impl FnOnce() -> Decision,
) -> RowHint {
    use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};
    // The check `debug!` starts with (the level filter), inline; the
    // event's own callsite check and the event are out of line.
    if tracing::Level::DEBUG <= STATIC_MAX_LEVEL && tracing::Level::DEBUG <= LevelFilter::current()
    {
        trace_allowed(key);
    }
    if !observers.is_set() {
        return RowHint::NONE;
    }
    // A request a sampling monitor does not follow, and that did not
    // wait, needs nothing more.
    let weight = observers.keyed_allowed_weight(LAYER);
    if weight == 0 && wait.is_zero() {
        return RowHint::SKIP;
    }
    emit_allowed(observers, key, &decision(), wait, weight)
}

#[cold]
#[inline(never)]
fn trace_allowed(key: &dyn EventKey) {
    tracing::debug!(target: "tower_sluice::per_key", key = ?key, "allowed");
}

/// Out of line, with a bound monitor's count of the key inlined into it:
/// one call per followed (or waiting) admission.
#[inline(never)]
fn emit_allowed<K: EventKey>(
    observers: &Observers,
    key: &K,
    decision: &Decision,
    wait: Duration,
    weight: u32,
) -> RowHint {
    let row = observers.emit_keyed_allowed(LAYER, key, decision, weight);
    if !wait.is_zero() {
        observers.emit(&Event::Waited {
            layer: LAYER,
            key: Some(key),
            waited: wait,
        });
    }
    row
}

/// Reports a denial to `observers` and to `tracing` (`shadow`: the request
/// is let through anyway).
pub(crate) fn report_denied(
    observers: &Observers,
    shadow: bool,
    key: &dyn EventKey,
    error: &BoxError,
) {
    if let Some(error) = error.downcast_ref::<RateLimited>() {
        tracing::info!(
            target: "tower_sluice::per_key",
            key = ?key,
            policy = error.policy().unwrap_or("default"),
            retry_after_ms = crate::observe::ms(error.retry_after()),
            enforced = !shadow,
            "rate limited"
        );
        observers.emit(&Event::Limited {
            layer: LAYER,
            key: Some(key),
            error,
            enforced: !shadow,
        });
    } else if let Some(e) = error.downcast_ref::<TooManyInFlight>() {
        tracing::info!(
            target: "tower_sluice::per_key",
            key = ?key,
            policy = e.policy().unwrap_or("default"),
            limit = e.limit(),
            enforced = !shadow,
            "too many requests in flight"
        );
        observers.emit(&Event::InFlightLimited {
            layer: LAYER,
            key: Some(key),
            limit: e.limit(),
            enforced: !shadow,
        });
    } else if let Some(e) = error.downcast_ref::<TooManyKeys>() {
        tracing::warn!(
            target: "tower_sluice::per_key",
            key = ?key,
            max_keys = e.max_keys(),
            enforced = !shadow,
            "per-key store full of active keys; refusing new keys"
        );
        observers.emit(&Event::StoreFull {
            layer: LAYER,
            key: Some(key),
            max_keys: e.max_keys(),
            enforced: !shadow,
        });
    }
}

/// Reports a request without a key to `observers` and to `tracing`
/// (`shadow`: the request is let through anyway).
#[cold]
fn report_missing(observers: &Observers, shadow: bool) {
    tracing::debug!(
        target: "tower_sluice::per_key",
        enforced = !shadow,
        "request without a key"
    );
    observers.emit(&Event::MissingKey {
        layer: LAYER,
        enforced: !shadow,
    });
}

impl<K, B: fmt::Debug> fmt::Debug for Core<K, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("backend", &self.backend)
            .field("default", &**self.policies.default.load())
            .field("resolver", &self.policies.resolver.as_ref().map(|_| ".."))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::Quota;

    fn limit_of(policies: &Policies<u32>, key: u32) -> u32 {
        let mut cache = DefaultCache::default();
        let policy = policies.resolve_with(&key, &mut cache);
        policy.quotas().next().expect("a quota").limit()
    }

    /// A layer with nothing to resolve reads its default with one load;
    /// each way of configuring policies takes it off that path, and every
    /// key then gets the policy configured for it.
    #[test]
    fn configured_policies_are_resolved() {
        let mut policies = Policies::new(Policy::new(Quota::per_second(1)));
        assert!(policies.plain.load(Ordering::Relaxed));
        assert_eq!(limit_of(&policies, 7), 1);

        policies.set_resolver(Arc::new(|k: &u32| {
            (*k == 7).then(|| Policy::new(Quota::per_second(2)))
        }));
        assert!(!policies.plain.load(Ordering::Relaxed));
        assert_eq!((limit_of(&policies, 7), limit_of(&policies, 8)), (2, 1));

        let policies = Policies::new(Policy::new(Quota::per_second(1)));
        policies.set_override(8, Policy::new(Quota::per_second(3)));
        assert_eq!((limit_of(&policies, 7), limit_of(&policies, 8)), (1, 3));

        let policies = Policies::new(Policy::new(Quota::per_second(1)));
        policies.set_default(Policy::new(Quota::per_second(4)));
        assert_eq!(limit_of(&policies, 7), 4);

        let policies = Policies::new(Policy::new(Quota::per_second(1)));
        policies.set_late_resolver(Arc::new(|_: &u32| Some(Policy::new(Quota::per_second(5)))));
        assert_eq!(limit_of(&policies, 7), 5);
    }
}
