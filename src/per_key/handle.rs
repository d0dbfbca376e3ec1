use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use super::core::Core;
use crate::backend::{Acquire, Backend, Memory, QuotaStates};
use crate::calendar::Usage;
use crate::policy::Policy;

/// Inspects and reconfigures a [`PerKeyLayer`](crate::PerKeyLayer)'s limits
/// while it serves. Cheap to clone.
///
/// Changes apply to the next request. A key keeps its debt across a change:
/// its state is the time its buckets are full again, so lowering a limit
/// can make a key wait longer and raising one never refills a bucket that
/// was spent (only a larger burst adds room, exactly the room added).
///
/// # Examples
///
/// ```
/// use tower_sluice::{PerKeyLayer, Quota};
///
/// let layer = PerKeyLayer::new(Quota::per_minute(60), |req: &(String, u32)| Some(req.0.clone()));
/// let handle = layer.handle();
/// handle.set_policy("vip".to_string(), Quota::per_minute(600));
/// // Would "vip" pass now? Nothing is consumed.
/// let grant = handle.peek(&"vip".to_string()).unwrap();
/// assert_eq!(grant.decision().limit(), 600);
/// ```
pub struct PerKeyHandle<K, B> {
    core: Arc<Core<K, B>>,
}

impl<K, B> PerKeyHandle<K, B>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    pub(crate) fn new(core: Arc<Core<K, B>>) -> Self {
        PerKeyHandle { core }
    }

    /// The policy of keys with no override (the layer's, or the last
    /// [`set_default`](Self::set_default)).
    pub fn default_policy(&self) -> Policy {
        self.core.policies.default_policy()
    }

    /// Changes the policy of keys with no override.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::{PerKeyLayer, Quota};
    /// let layer = PerKeyLayer::new(Quota::per_minute(60), |user: &String| Some(user.clone()));
    /// let handle = layer.handle();
    /// handle.set_policy("ann".to_string(), Quota::per_minute(600));
    /// // Under load: halve everyone's limit, overrides aside.
    /// handle.set_default(Quota::per_minute(30));
    /// assert_eq!(handle.policy(&"bob".to_string()).quotas().next(), Some(Quota::per_minute(30)));
    /// assert_eq!(handle.policy(&"ann".to_string()).quotas().next(), Some(Quota::per_minute(600)));
    /// ```
    pub fn set_default(&self, policy: impl Into<Policy>) {
        self.core.policies.set_default(policy.into());
    }

    /// Gives `key` its own policy, ahead of the layer's resolver.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::per_key::Policy;
    /// # use tower_sluice::{PerKeyLayer, Quota};
    /// let layer = PerKeyLayer::new(Quota::per_minute(60), |user: &String| Some(user.clone()))
    ///     .policy_for(|user: &String| user.starts_with("paid-").then(|| Quota::per_minute(600)));
    /// let handle = layer.handle();
    /// // A customer whose contract says 1000 a minute; the override wins over the resolver.
    /// let contract = Policy::new(Quota::per_minute(1_000)).named("contract-42");
    /// handle.set_policy("paid-42".to_string(), contract.clone());
    /// assert_eq!(handle.policy(&"paid-42".to_string()), contract);
    /// ```
    pub fn set_policy(&self, key: K, policy: impl Into<Policy>) {
        self.core.policies.set_override(key, policy.into());
    }

    /// Removes `key`'s own policy; returns it.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::{PerKeyLayer, Quota};
    /// let layer = PerKeyLayer::new(Quota::per_minute(60), |user: &String| Some(user.clone()));
    /// let handle = layer.handle();
    /// let ann = "ann".to_string();
    /// handle.set_policy(ann.clone(), Quota::per_minute(600));
    /// let removed = handle.remove_policy(&ann).unwrap();
    /// assert_eq!(removed.quotas().next(), Some(Quota::per_minute(600)));
    /// // Back to the default.
    /// assert_eq!(handle.policy(&ann), handle.default_policy());
    /// assert!(handle.remove_policy(&ann).is_none());
    /// ```
    pub fn remove_policy(&self, key: &K) -> Option<Policy> {
        self.core.policies.remove_override(key)
    }

    /// The policy `key` is limited by now.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::per_key::Policy;
    /// # use tower_sluice::{PerKeyLayer, Quota};
    /// let paid = Policy::new(Quota::per_minute(600)).named("paid");
    /// let layer = PerKeyLayer::new(Policy::new(Quota::per_minute(60)).named("free"), |key: &String| Some(key.clone()))
    ///     .policy_for(move |key: &String| key.starts_with("paid-").then(|| paid.clone()));
    /// let handle = layer.handle();
    /// assert_eq!(handle.policy(&"paid-1".to_string()).name(), Some("paid"));
    /// assert_eq!(handle.policy(&"anon".to_string()).name(), Some("free"));
    /// ```
    pub fn policy(&self, key: &K) -> Policy {
        Policy::clone(&self.core.policies.resolve(key))
    }

    /// The backend, for example to read
    /// [`Memory::len`](crate::backend::Memory::len).
    pub fn backend(&self) -> &B {
        &self.core.backend
    }
}

impl<K, B> PerKeyHandle<K, B>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    B: Backend<K>,
{
    /// Whether a request for `key` would pass now, without consuming
    /// anything: `Ok` with the decision, or the error it would get.
    /// Several limits can be checked this way first and then committed.
    ///
    /// # Errors
    ///
    /// The error the request would get:
    /// [`RateLimited`](crate::RateLimited) or
    /// [`TooManyInFlight`](crate::error::TooManyInFlight).
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::limits::check_all;
    /// # use tower_sluice::{PerKeyLayer, Quota, RateLimited};
    /// let layer = PerKeyLayer::new(Quota::per_minute(2), |user: &u64| Some(*user));
    /// let handle = layer.handle();
    /// assert_eq!(handle.peek(&7).unwrap().decision().remaining(), 1);
    /// check_all(&[&handle.limit(&7)]).unwrap();
    /// check_all(&[&handle.limit(&7)]).unwrap();
    /// // Spent: the error a request would get now.
    /// let err = handle.peek(&7).unwrap_err();
    /// assert!(err.downcast_ref::<RateLimited>().unwrap().retry_after().as_secs() >= 29);
    /// ```
    pub fn peek(&self, key: &K) -> Result<crate::backend::Grant, crate::BoxError> {
        let policy = self.core.policies.resolve(key);
        match self.core.backend.peek(key, &policy, 1) {
            Acquire::Ready(result) => result,
            Acquire::Pending(_) => {
                Err("this backend decides asynchronously; `PerKeyHandle::peek` needs a synchronous one such as `Memory`".into())
            }
        }
    }

    /// The state of each of `key`'s quotas now, consuming nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::limits::check_all;
    /// # use tower_sluice::per_key::Policy;
    /// # use tower_sluice::{PerKeyLayer, Quota};
    /// let policy = Policy::new(Quota::per_minute(60)).and(Quota::per_day(1_000)).unwrap();
    /// let layer = PerKeyLayer::new(policy, |user: &u64| Some(*user));
    /// let handle = layer.handle();
    /// check_all(&[&handle.limit(&7)]).unwrap();
    /// // What is left of each quota, as the `RateLimit` header reports it.
    /// let left: Vec<u32> = handle.states(&7).iter().map(|d| d.remaining()).collect();
    /// assert_eq!(left, [59, 999]);
    /// ```
    pub fn states(&self, key: &K) -> QuotaStates {
        let policy = self.core.policies.resolve(key);
        self.core.backend.states(key, &policy)
    }
}

impl<K, B> PerKeyHandle<K, B>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    B: AsRef<Memory<K>>,
{
    /// The usage of each [calendar](crate::calendar) quota of `key`'s
    /// policy, in the policy's order: how much its current window used,
    /// how much is left, and when it resets (for dashboards and billing).
    /// Consumes nothing; an unseen key has used nothing.
    ///
    /// The in-memory backend keeps the counts in this process: **they are
    /// lost when it restarts** (and a key the store forgets under a flood
    /// of new keys starts again from zero, see
    /// [`FullStore`](crate::backend::FullStore)). The Redis backend keeps
    /// them in Redis, one key per window (`<key>@calendar-<period>:<index>`,
    /// or `<key>@<unit>-calendar-<period>:<index>` for a quota of cost,
    /// readable with `GET`); with Redis persistence they survive restarts
    /// of both. This method reads the in-memory backend.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::limits::check_all;
    /// use tower_sluice::per_key::Policy;
    /// use tower_sluice::{PerKeyLayer, Quota};
    ///
    /// let policy = Policy::new(Quota::per_minute(60)).and(Quota::per_calendar_month(1_000))?;
    /// let layer = PerKeyLayer::new(policy, |user: &u64| Some(*user));
    /// let handle = layer.handle();
    /// check_all(&[&handle.limit(&7)]).unwrap();
    /// let month = &handle.usage(&7)[0];
    /// assert_eq!((month.used(), month.remaining()), (1, 999));
    /// assert_eq!(handle.usage(&8)[0].used(), 0);
    /// # Ok::<(), tower_sluice::per_key::TooManyQuotas>(())
    /// ```
    pub fn usage(&self, key: &K) -> Vec<Usage> {
        let policy = self.core.policies.resolve(key);
        self.core.backend.as_ref().usage(key, &policy)
    }
}

impl<K, B> Clone for PerKeyHandle<K, B> {
    fn clone(&self) -> Self {
        PerKeyHandle {
            core: self.core.clone(),
        }
    }
}

impl<K, B: fmt::Debug> fmt::Debug for PerKeyHandle<K, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerKeyHandle")
            .field("core", &self.core)
            .finish()
    }
}
