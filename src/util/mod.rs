//! Small utilities every tier may use: the one random number generator
//! ([`rng`]) and the poison-ignoring lock ([`IgnorePoison`]).

pub(crate) mod rng;

use std::sync::{LockResult, PoisonError};

/// Takes a lock whatever a panicking holder left: no code in this crate
/// panics while holding a lock, so what a poisoned lock guards is
/// consistent.
pub(crate) trait IgnorePoison<G> {
    /// The guard, poisoned or not.
    fn ignore_poison(self) -> G;
}

impl<G> IgnorePoison<G> for LockResult<G> {
    #[inline]
    fn ignore_poison(self) -> G {
        self.unwrap_or_else(PoisonError::into_inner)
    }
}
