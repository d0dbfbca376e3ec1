//! Settling a request's true cost after its response: a request's
//! settlement on its way to the response (the hook and the handle are
//! [`Settling`], shared with the rate limit).

use std::hash::Hash;
use std::sync::{Arc, OnceLock};

use super::core::Core;
use crate::backend::{Backend, Charged};
use crate::cost::Settlement;
pub(crate) use crate::cost::Settling;
use crate::policy::Policy;

/// A request's settlement on its way to the response: settled by the hook
/// when the response comes, unless a handler settled it first.
pub(crate) struct Pending {
    settlement: Settlement,
    settling: Arc<Settling>,
    /// What a remote backend's grant charged, once it has decided.
    decided: Option<Arc<OnceLock<Charged>>>,
}

impl Pending {
    /// The settlement of a request admitted for `key` under `policy` and
    /// charged as `charged` says.
    pub(crate) fn new<K, B>(
        core: &Arc<Core<K, B>>,
        settling: &Arc<Settling>,
        key: &K,
        policy: &Policy,
        charged: Charged,
    ) -> Self
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        B: Backend<K>,
    {
        let (core, key, policy) = (core.clone(), key.clone(), policy.clone());
        let settlement = Settlement::new(move |true_cost| {
            core.backend.settle(&key, &policy, charged, true_cost);
        });
        Pending {
            settlement,
            settling: settling.clone(),
            decided: None,
        }
    }

    /// The settlement of a request for `key` under `policy` that a remote
    /// backend is deciding: it settles once [`decided`](Self::decided) says
    /// what the grant charged (a request never admitted is never settled).
    pub(crate) fn deciding<K, B>(
        core: &Arc<Core<K, B>>,
        settling: &Arc<Settling>,
        key: &K,
        policy: &Policy,
    ) -> Self
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        B: Backend<K>,
    {
        let (core, key, policy) = (core.clone(), key.clone(), policy.clone());
        let decided = Arc::new(OnceLock::new());
        let charged = decided.clone();
        let settlement = Settlement::new(move |true_cost| {
            if let Some(&charged) = charged.get() {
                core.backend.settle(&key, &policy, charged, true_cost);
            }
        });
        Pending {
            settlement,
            settling: settling.clone(),
            decided: Some(decided),
        }
    }

    /// The remote backend admitted the request, charging `charged`.
    pub(crate) fn decided(&self, charged: Charged) {
        if let Some(decided) = &self.decided {
            let _ = decided.set(charged);
        }
    }

    /// The request's settlement, to hand to it.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn settlement(&self) -> &Settlement {
        &self.settlement
    }

    /// Hands the settlement to `req` where the layer says.
    pub(crate) fn attach<Req: 'static>(&self, req: &mut Req) {
        self.settling.attach(req, &self.settlement);
    }

    /// The response came: the hook's true cost, if it reads one, settles.
    pub(crate) fn respond<Res: 'static>(self, res: &Res) {
        if let Some(true_cost) = self.settling.read(res) {
            self.settlement.settle(true_cost);
        }
    }
}
