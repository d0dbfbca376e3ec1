use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use super::Policy;
use super::core::Core;
use crate::backend::{Acquire, Backend, QuotaStates};

/// Inspects and reconfigures a [`PerKeyLayer`](crate::PerKeyLayer)'s limits
/// while it serves. Cheap to clone.
///
/// Changes apply to the next request. A key keeps its debt across a change:
/// its state is the time its buckets are full again, so lowering a limit
/// can make a key wait longer and raising one never refills a bucket that
/// was spent (only a larger burst adds room, exactly the room added).
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

    /// The policy of keys with no override.
    pub fn default_policy(&self) -> Policy {
        self.core.policies.default_policy()
    }

    /// Changes the policy of keys with no override.
    pub fn set_default(&self, policy: impl Into<Policy>) {
        self.core.policies.set_default(policy.into());
    }

    /// Gives `key` its own policy, ahead of the layer's resolver.
    pub fn set_policy(&self, key: K, policy: impl Into<Policy>) {
        self.core.policies.set_override(key, policy.into());
    }

    /// Removes `key`'s own policy; returns it.
    pub fn remove_policy(&self, key: &K) -> Option<Policy> {
        self.core.policies.remove_override(key)
    }

    /// The policy `key` is limited by now.
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
    pub fn states(&self, key: &K) -> QuotaStates {
        let policy = self.core.policies.resolve(key);
        self.core.backend.states(key, &policy)
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
