//! Settling on Redis: the settle script's arguments for a request, and
//! sending settlements in batches, each batch one call of `settle.lua` (its
//! keys on one slot). What waits to be sent, and when, is `held`'s.

use super::decide::quota_args;
use super::script::Lua;
use super::*;

/// The most keys in one call of the settle script.
pub(super) const BATCH: usize = 128;

/// The settle script's arguments for one request (see `settle_group.lua`).
#[derive(Clone, Copy)]
pub(super) struct SettleArgs {
    /// The debt, the refund, when the debt was found (Redis' time, us, as
    /// this process reckons it; 0: when applied), then per quota its
    /// emission interval, burst, stamp and whether it counts cost.
    nums: [u64; 3 + 4 * crate::policy::MAX_QUOTAS],
    quotas: usize,
    /// The unit of each calendar quota, in the policy's order.
    units: [&'static str; crate::policy::MAX_QUOTAS],
    calendars: usize,
    /// When the debt was found on this process' clock (ns).
    found: u64,
}

impl SettleArgs {
    /// The debt of the short form (one rolling quota of cost): its
    /// emission interval (us), debt, stamp and when it was found.
    pub(super) fn short_debt(&self) -> Option<[u64; 4]> {
        match self.nums[..3 + 4 * self.quotas] {
            [extra, 0, at, t, _, stamp, 1] if extra > 0 && t > 0 => Some([t, extra, stamp, at]),
            _ => None,
        }
    }

    /// Adds `extra` units to the debt.
    pub(super) fn add_debt(&mut self, extra: u64) {
        self.nums[0] = self.nums[0].saturating_add(extra);
    }

    /// How long before `now` (this process' clock, ns) the debt was found
    /// (us; 0: unknown, or now).
    pub(super) fn ago(&self, now: u64) -> u64 {
        match self.nums[2] {
            0 => 0,
            _ => now.saturating_sub(self.found) / 1_000,
        }
    }

    /// How many arguments [`write`](Self::write) adds.
    pub(super) fn len(&self) -> usize {
        match self.nums[..3 + 4 * self.quotas] {
            [_, _, _, t, _, _, 1] if t > 0 => 4,
            _ => 4 + 4 * self.quotas + self.calendars,
        }
    }

    /// Adds this request's group of arguments to `cmd`, sent at `now`
    /// (this process' clock, ns; see `settle_group.lua`): for
    /// a policy of one rolling quota of cost, the short form of a debt
    /// (`d`, T, the debt, how long ago it was found) or of a refund (`r`,
    /// T, the refund, the stamp); otherwise the number of quotas, the
    /// debt, the refund, how long ago, each quota's four numbers, then the
    /// calendar quotas' units.
    pub(super) fn write(&self, cmd: &mut redis::Cmd, now: u64) {
        let nums = &self.nums[..3 + 4 * self.quotas];
        let ago = self.ago(now);
        if let [extra, less, _, t, _, stamp, 1] = *nums
            && t > 0
        {
            if extra > 0 {
                cmd.arg("d").arg(t).arg(extra).arg(ago);
            } else {
                cmd.arg("r").arg(t).arg(less).arg(stamp);
            }
            return;
        }
        cmd.arg(self.quotas).arg(nums[0]).arg(nums[1]).arg(ago);
        for n in &nums[3..] {
            cmd.arg(*n);
        }
        for u in &self.units[..self.calendars] {
            cmd.arg(*u);
        }
    }
}

/// The settle script's arguments for a request under `policy`, charged as
/// `charged` says, that really cost `true_cost`, found at `found`: Redis'
/// time in microseconds as this process reckons it (0: unknown, when Redis
/// applies it) and this process' clock (ns), from which how long ago is
/// measured when it is sent.
pub(super) fn settle_args(
    policy: &Policy,
    charged: Charged,
    true_cost: u32,
    found: (u64, u64),
) -> SettleArgs {
    let (at, local) = found;
    let mut args = SettleArgs {
        nums: [0; 3 + 4 * crate::policy::MAX_QUOTAS],
        quotas: 0,
        units: [""; crate::policy::MAX_QUOTAS],
        calendars: 0,
        found: local,
    };
    args.nums[0] = u64::from(true_cost.saturating_sub(charged.estimate));
    args.nums[1] = u64::from(charged.estimate.saturating_sub(true_cost));
    args.nums[2] = if args.nums[0] > 0 { at } else { 0 };
    for (i, q) in policy.quotas().enumerate() {
        [args.nums[3 + 4 * i], args.nums[4 + 4 * i]] = quota_args(q);
        args.nums[5 + 4 * i] = charged.stamps.get(i).copied().unwrap_or(0);
        args.nums[6 + 4 * i] = u64::from(!q.counts_requests());
        args.quotas = i + 1;
        if q.calendar().is_some() {
            args.units[args.calendars] = q.unit();
            args.calendars += 1;
        }
    }
    args
}

/// A settlement to send: its key, the key's Cluster slot (0 off Cluster),
/// its arguments and how many settlements it stands for.
pub(super) struct Item<'a> {
    pub(super) key: &'a [u8],
    pub(super) slot: u16,
    pub(super) args: &'a SettleArgs,
    pub(super) count: u64,
}

impl Inner {
    /// Sends `items` in batches of at most [`BATCH`] settlements of one
    /// slot, all pipelined at once, at `now` (this process' clock, ns),
    /// and counts what became of each. `items` are
    /// sorted by slot, a key's in the order they apply: they keep it (one
    /// after the other in a batch, or in batches sent in turn on one
    /// connection).
    pub(super) async fn send_batches(self: &Arc<Self>, items: &[Item<'_>], now: u64) {
        let mut calls = Vec::new();
        for group in items.chunk_by(|a, b| a.slot == b.slot) {
            for batch in group.chunks(BATCH) {
                calls.push(self.send_batch(batch, now));
            }
        }
        join_all(calls).await;
    }

    /// One call of the settle script for `batch`, within the deadline.
    async fn send_batch(self: &Arc<Self>, batch: &[Item<'_>], now: u64) {
        let items: Vec<(&[u8], &SettleArgs)> = batch.iter().map(|i| (i.key, i.args)).collect();
        let sent = self.clock.now();
        let n = batch.iter().map(|i| i.count).sum();
        let first = batch[0].key;
        let health = self.nodes.of(first);
        match self.settle_now(&items, now).await {
            Ok(_) => {
                self.stats.settled.fetch_add(n, Ordering::Relaxed);
                health.success(self, sent, false);
            }
            Err(kind) => {
                self.stats.settles_dropped.fetch_add(n, Ordering::Relaxed);
                if kind != BackendErrorKind::Script {
                    health.failure(self, first, self.clock.now(), false);
                }
            }
        }
    }

    /// Runs the settle script for `items` (keys and their settlements, on
    /// one slot), sent at `now` (as [`SettleArgs::write`]), within the
    /// deadline: its reply (the quotas changed, and Redis' time in
    /// microseconds).
    pub(super) async fn settle_now(
        &self,
        items: &[(&[u8], &SettleArgs)],
        now: u64,
    ) -> Result<[i64; 2], BackendErrorKind> {
        let mut cmd = self.evalsha(Lua::Settle, items.len());
        for (key, _) in items {
            cmd.arg(*key);
        }
        for (_, args) in items {
            args.write(&mut cmd, now);
        }
        let reply = tokio::time::timeout(self.deadline, self.eval_cmd(Lua::Settle, &cmd)).await;
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

/// Polls `futures` together until all are done.
async fn join_all<F: Future<Output = ()>>(futures: Vec<F>) {
    let mut futures: Vec<Option<Pin<Box<F>>>> =
        futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for slot in &mut futures {
            if let Some(f) = slot {
                if f.as_mut().poll(cx).is_ready() {
                    *slot = None;
                } else {
                    pending = true;
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
}
