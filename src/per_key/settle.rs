//! Settling a request's true cost after its response: the layer's hook on
//! responses and the handle handed to requests, type-erased so that a
//! layer's type does not change when it settles.

use std::any::Any;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, OnceLock};

use super::core::Core;
use crate::backend::{Backend, Charged};
use crate::cost::{Settleable, Settlement};
use crate::policy::Policy;

/// How a layer settles: a hook reading the true cost from a response of
/// type `Res`, and where to hand the handle (a request of type `Req`).
#[derive(Default, Clone)]
pub(crate) struct Settling {
    /// A `Hook<Res>`.
    hook: Option<Arc<dyn Any + Send + Sync>>,
    attach: Option<fn(&mut dyn Any, &Settlement)>,
}

type HookFn<Res> = dyn Fn(&Res) -> Option<u32> + Send + Sync;

struct Hook<Res>(Box<HookFn<Res>>);

fn attach_to<Req: Settleable + 'static>(req: &mut dyn Any, settlement: &Settlement) {
    if let Some(req) = req.downcast_mut::<Req>() {
        req.attach(settlement.clone());
    }
}

impl Settling {
    pub(crate) fn with_hook<Res: 'static>(
        mut self,
        hook: impl Fn(&Res) -> Option<u32> + Send + Sync + 'static,
    ) -> Self {
        self.hook = Some(Arc::new(Hook::<Res>(Box::new(hook))));
        self
    }

    pub(crate) fn with_handle<Req: Settleable + 'static>(mut self) -> Self {
        self.attach = Some(attach_to::<Req>);
        self
    }

    /// Hands `settlement` to `req`, if the layer was told to and `req` is
    /// of the type it was told.
    #[inline]
    pub(crate) fn attach<Req: 'static>(&self, req: &mut Req, settlement: &Settlement) {
        if let Some(attach) = self.attach {
            attach(req, settlement);
        }
    }

    /// The true cost the hook reads from `res` (`None`: keep the estimate,
    /// or no hook for responses of this type).
    #[inline]
    pub(crate) fn read<Res: 'static>(&self, res: &Res) -> Option<u32> {
        let hook = self.hook.as_ref()?.downcast_ref::<Hook<Res>>()?;
        (hook.0)(res)
    }
}

impl fmt::Debug for Settling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settling")
            .field("hook", &self.hook.is_some())
            .field("handle", &self.attach.is_some())
            .finish()
    }
}

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
