//! Settling a request's true cost on Redis: one call of `settle.lua`, sent
//! in the background, never on the request's path.

use super::decide::quota_args;
use super::script::Lua;
use super::*;

/// The settle script's arguments (see `settle.lua`).
pub(super) struct SettleArgs {
    /// The debt and the refund, then per quota its emission interval,
    /// burst, stamp and whether it counts cost.
    nums: [u64; 2 + 4 * crate::policy::MAX_QUOTAS],
    quotas: usize,
    /// The unit of each calendar quota, in the policy's order.
    units: [&'static str; crate::policy::MAX_QUOTAS],
    calendars: usize,
}

impl SettleArgs {
    /// The numbers: `2 + 4 * policy.len()` of them.
    pub(super) fn nums(&self) -> &[u64] {
        &self.nums[..2 + 4 * self.quotas]
    }

    /// The calendar quotas' unit names, sent after the numbers.
    pub(super) fn units(&self) -> &[&'static str] {
        &self.units[..self.calendars]
    }
}

/// The settle script's arguments for a request under `policy`, charged as
/// `charged` says, that really cost `true_cost`.
pub(super) fn settle_args(policy: &Policy, charged: Charged, true_cost: u32) -> SettleArgs {
    let mut args = SettleArgs {
        nums: [0; 2 + 4 * crate::policy::MAX_QUOTAS],
        quotas: 0,
        units: [""; crate::policy::MAX_QUOTAS],
        calendars: 0,
    };
    args.nums[0] = u64::from(true_cost.saturating_sub(charged.estimate));
    args.nums[1] = u64::from(charged.estimate.saturating_sub(true_cost));
    for (i, q) in policy.quotas().enumerate() {
        [args.nums[2 + 4 * i], args.nums[3 + 4 * i]] = quota_args(q);
        args.nums[4 + 4 * i] = charged.stamps.get(i).copied().unwrap_or(0);
        args.nums[5 + 4 * i] = u64::from(!q.counts_requests());
        args.quotas = i + 1;
        if q.calendar().is_some() {
            args.units[args.calendars] = q.unit();
            args.calendars += 1;
        }
    }
    args
}

impl RedisBackend {
    /// Sends the settlement of a request for `key` (the Redis key) in a
    /// task of its own: the caller never waits for it. Dropped and counted
    /// ([`RedisStats::settles_dropped`]) when Redis is known to be down,
    /// when there is no tokio runtime to send it from, or when it fails or
    /// misses the deadline; never retried (it may have run).
    pub(super) fn send_settle(
        &self,
        key: Vec<u8>,
        policy: &Policy,
        charged: Charged,
        true_cost: u32,
    ) {
        let inner = &self.inner;
        if charged.estimate == true_cost || policy.quotas().all(|q| q.counts_requests()) {
            return;
        }
        let dropped = || {
            inner.stats.settles_dropped.fetch_add(1, Ordering::Relaxed);
        };
        if key.len() > inner.max_key_len {
            return dropped();
        }
        let health = inner.nodes.of(&key);
        if !health.is_up() {
            return dropped();
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return dropped();
        };
        let args = settle_args(policy, charged, true_cost);
        let inner = inner.clone();
        drop(runtime.spawn(async move {
            let sent = inner.clock.now();
            match inner.settle_now(&key, &args).await {
                Ok(_) => {
                    inner.stats.settled.fetch_add(1, Ordering::Relaxed);
                    health.success(&inner, sent, false);
                }
                Err(kind) => {
                    inner.stats.settles_dropped.fetch_add(1, Ordering::Relaxed);
                    if kind != BackendErrorKind::Script {
                        health.failure(&inner, &key, inner.clock.now(), false);
                    }
                }
            }
        }));
    }
}

impl Inner {
    /// Runs the settle script for `key` within the deadline: its reply
    /// (the quotas changed, and Redis' time in microseconds).
    pub(super) async fn settle_now(
        &self,
        key: &[u8],
        args: &SettleArgs,
    ) -> Result<[i64; 2], BackendErrorKind> {
        let reply = tokio::time::timeout(
            self.deadline,
            self.eval_script(Lua::Settle, key, args.nums(), args.units()),
        )
        .await;
        match reply {
            Ok(Ok(reply)) => match reply[..] {
                [changed, now] => Ok([changed, now]),
                _ => Err(BackendErrorKind::Script),
            },
            Ok(Err(e)) => Err(error_kind(&e)),
            Err(_) => Err(BackendErrorKind::Timeout),
        }
    }
}
