//! What every service of one `PerKeyLayer` shares: the backend and the
//! policies (default, per-key overrides, resolver).

use std::fmt;
use std::hash::Hash;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use arc_swap::{ArcSwap, Guard};

use super::Policy;

/// Chooses a key's policy (for example by tier); `None` means the default.
pub(crate) type Resolver<K> = Arc<dyn Fn(&K) -> Option<Policy> + Send + Sync>;

pub(crate) struct Core<K, B> {
    pub(crate) backend: B,
    pub(crate) policies: Policies<K>,
}

pub(crate) struct Policies<K> {
    default: ArcSwap<Policy>,
    overrides: RwLock<hashbrown::HashMap<K, Policy>>,
    has_overrides: AtomicBool,
    pub(crate) resolver: Option<Resolver<K>>,
}

/// A resolved policy: borrowed from the default without a reference count,
/// or owned.
pub(crate) enum Resolved {
    Default(Guard<Arc<Policy>>),
    Owned(Policy),
}

impl Deref for Resolved {
    type Target = Policy;

    #[inline]
    fn deref(&self) -> &Policy {
        match self {
            Resolved::Default(g) => g,
            Resolved::Owned(p) => p,
        }
    }
}

impl<K: Hash + Eq> Policies<K> {
    pub(crate) fn new(default: Policy) -> Self {
        Policies {
            default: ArcSwap::from_pointee(default),
            overrides: RwLock::new(hashbrown::HashMap::new()),
            has_overrides: AtomicBool::new(false),
            resolver: None,
        }
    }

    /// The override set by a handle, else the resolver's, else the default.
    #[inline]
    pub(crate) fn resolve(&self, key: &K) -> Resolved {
        if self.has_overrides.load(Ordering::Acquire) {
            let overrides = self.overrides.read().unwrap_or_else(|e| e.into_inner());
            if let Some(p) = overrides.get(key) {
                return Resolved::Owned(p.clone());
            }
        }
        if let Some(resolver) = &self.resolver {
            if let Some(p) = resolver(key) {
                return Resolved::Owned(p);
            }
        }
        Resolved::Default(self.default.load())
    }

    pub(crate) fn default_policy(&self) -> Policy {
        Policy::clone(&self.default.load())
    }

    pub(crate) fn set_default(&self, policy: Policy) {
        self.default.store(Arc::new(policy));
    }

    pub(crate) fn set_override(&self, key: K, policy: Policy) {
        let mut overrides = self.overrides.write().unwrap_or_else(|e| e.into_inner());
        overrides.insert(key, policy);
        self.has_overrides.store(true, Ordering::Release);
    }

    pub(crate) fn remove_override(&self, key: &K) -> Option<Policy> {
        let mut overrides = self.overrides.write().unwrap_or_else(|e| e.into_inner());
        let removed = overrides.remove(key);
        self.has_overrides
            .store(!overrides.is_empty(), Ordering::Release);
        removed
    }
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
