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

/// What a per-key layer decided for a request off the common path (see
/// [`decided`]): everything a service needs to call the inner service,
/// wait, or turn the request away (as an error, an HTTP response or a gRPC
/// status).
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

/// Why a request is not decided: it passes unlimited (a cost of 0, no
/// key where the layer allows it, or shadow mode), or it has no key.
#[derive(Clone, Copy)]
pub(crate) enum Undecided {
    Unlimited,
    MissingKey,
}

/// What a request's decision left to do, for the out-of-line paths: not
/// decided, admitted at once (where an observer follows it or it is
/// settled), or anything else.
pub(crate) enum Decided<F> {
    Undecided(Undecided),
    Now(Admitted, RowHint),
    Rest(Rest<F>),
}

/// What [`Core::acquire`] did not admit at once: a cost above a quota's
/// burst, or what the backend decided (a wait, a denial, several quotas or
/// an in-flight cap, a remote decision).
pub(crate) enum Rest<F> {
    Exceeds(ExceedsBurst),
    Acquired(Acquire<F>),
}

/// The key a request is decided under (its own, or the layer's fallback),
/// or why it is not decided (reported to the observer).
#[inline]
pub(crate) fn key_for<'a, K: fmt::Debug>(
    config: &'a Config<K>,
    extracted: Option<&'a K>,
    cost: u32,
) -> Result<&'a K, Undecided> {
    // Folded away for a layer without a cost function (always 1).
    if cost == 0 {
        // Free: no charge and no decision.
        return Err(Undecided::Unlimited);
    }
    match (extracted, &config.on_missing) {
        (Some(key), _) => Ok(key),
        (None, OnMissing::Fallback(key)) => Ok(key),
        (None, OnMissing::Allow) => Err(Undecided::Unlimited),
        (None, OnMissing::Reject) => Err(missing(config)),
    }
}

/// The key a decided request was decided under (see [`key_for`]), found
/// again where the request's own key is to be moved.
#[inline]
fn key_of<'a, K>(config: &'a Config<K>, extracted: Option<&'a K>) -> Option<&'a K> {
    match (extracted, &config.on_missing) {
        (Some(key), _) => Some(key),
        (None, OnMissing::Fallback(key)) => Some(key),
        (None, _) => None,
    }
}

/// A request without a key, where the layer refuses them: reported, and
/// let through in shadow mode.
#[cold]
#[inline(never)]
fn missing<K>(config: &Config<K>) -> Undecided {
    report_missing(&config.observers, config.shadow);
    if config.shadow {
        Undecided::Unlimited
    } else {
        Undecided::MissingKey
    }
}

impl<K, B> Core<K, B>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    B: Backend<K>,
{
    /// Decides for `key` under `policy`: `Ok` for a request admitted to be
    /// sent at once ([`Backend::acquire_now`]), reported to the observer
    /// (where it counted the request, for its completion); anything else
    /// is left to [`decided`] (out of line).
    ///
    /// The one decision path of every per-key service ([`PerKey`](super::PerKey)
    /// and the HTTP and gRPC adapters): [`key_for`], then
    /// [`Policies::resolve_with`], then this, the common case inline in the
    /// service's `call` and the rest in one out-of-line function.
    // The large `Err` is the rare path.
    #[allow(clippy::result_large_err)]
    #[inline]
    pub(crate) fn acquire(
        &self,
        config: &Config<K>,
        key: &K,
        policy: &Policy,
        cost: u32,
    ) -> Result<(Admitted, RowHint), Rest<B::Future>> {
        if let Some(quota) = policy.exceeded_by(cost).filter(|_| cost > 1) {
            return Err(Rest::Exceeds(ExceedsBurst::new(cost, quota)));
        }
        match self.backend.acquire_now(key, policy, cost, config.max_wait) {
            Ok(admitted) => {
                let row = report_admitted(&config.observers, key, Duration::ZERO, || {
                    admitted.decision(policy)
                });
                Ok((admitted, row))
            }
            Err(acquired) => Err(Rest::Acquired(acquired)),
        }
    }
}

/// The admission of a request the layer did not decide.
#[inline]
fn undecided_admission<'a, K, F>(undecided: Undecided) -> Admission<'a, K, F> {
    match undecided {
        Undecided::Unlimited => Admission::Unlimited,
        Undecided::MissingKey => Admission::Denied {
            key: None,
            policy: None,
            error: MissingKey.into(),
        },
    }
}

/// The admission of what [`Core::acquire`] left to do, for a request whose
/// extractor found `extracted` (its policy `policy` if it was decided).
/// For the out-of-line paths of services that move the key afterwards.
pub(crate) fn decided<'a, K: EventKey + fmt::Debug + Hash, F>(
    config: &'a Config<K>,
    extracted: Option<&'a K>,
    policy: Option<Resolved<'a>>,
    decided: Decided<F>,
) -> Admission<'a, K, F> {
    let key = key_of(config, extracted);
    match (decided, key, policy) {
        (Decided::Undecided(undecided), ..) => undecided_admission(undecided),
        (Decided::Now(admitted, row), Some(key), Some(policy)) => Admission::Now {
            key,
            policy,
            admitted,
            row,
        },
        (Decided::Rest(rest), Some(key), Some(policy)) => admission(config, key, policy, rest),
        // A decided request has a key and a policy.
        (Decided::Now(..) | Decided::Rest(_), ..) => Admission::Unlimited,
    }
}

/// The admission of a request [`Core::acquire`] did not admit at once: a
/// cost above a burst, a wait, several quotas or an in-flight cap, a
/// denial, a remote decision. Out of line: the common request's call stays
/// small.
#[inline(never)]
fn admission<'a, K: EventKey + fmt::Debug + Hash, F>(
    config: &'a Config<K>,
    key: &'a K,
    policy: Resolved<'a>,
    rest: Rest<F>,
) -> Admission<'a, K, F> {
    let acquired = match rest {
        Rest::Exceeds(error) => return exceeds(config, key, policy, error),
        Rest::Acquired(acquired) => acquired,
    };
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
/// returns where a bound [`Monitor`](crate::observe::Monitor) counted it
/// (not followed without an observer).
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
        // Nobody follows it.
        return RowHint::SKIP;
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
