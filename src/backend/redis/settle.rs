//! Settling a request's true cost on Redis: settlements wait in a bounded
//! queue, and one task of the backend sends them in batches, each batch one
//! call of `settle.lua` (its keys on one slot), never on a request's path.

use std::sync::Weak;

use super::decide::quota_args;
use super::health::slot;
use super::script::Lua;
use super::*;
use crate::backend::Origin;

/// The most settlements waiting to be sent; more are dropped and counted.
pub(super) const QUEUE: usize = 65_536;

/// The most keys in one call of the settle script.
pub(super) const BATCH: usize = 128;

/// The most settlements sent at once (in batches), so that the last batch
/// of a round is answered well within the deadline: the rest wait for the
/// next round.
const ROUND: usize = 16 * BATCH;

/// The settle script's arguments for one request (see `settle.lua`).
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
    /// Adds this request's group of arguments to `cmd` (see
    /// `settle.lua`): for a policy of one rolling quota of cost, the short
    /// form of a debt (`d`, T, the debt) or of a refund (`r`, T, the
    /// refund, the stamp); otherwise the number of quotas, the debt, the
    /// refund, each quota's four numbers, then the calendar quotas' units.
    fn write(&self, cmd: &mut redis::Cmd) {
        let nums = &self.nums[..2 + 4 * self.quotas];
        if let [extra, less, t, _, stamp, 1] = *nums
            && t > 0
        {
            if extra > 0 {
                cmd.arg("d").arg(t).arg(extra);
            } else {
                cmd.arg("r").arg(t).arg(less).arg(stamp);
            }
            return;
        }
        cmd.arg(self.quotas).arg(nums[0]).arg(nums[1]);
        for n in &nums[2..] {
            cmd.arg(*n);
        }
        for u in &self.units[..self.calendars] {
            cmd.arg(*u);
        }
    }
}

impl SettleArgs {
    /// Adds `other`'s debt to this one when both are debts of the same
    /// single rolling quota of cost (the short form); false otherwise.
    fn absorb_debt(&mut self, other: &SettleArgs) -> bool {
        let debt = |a: &SettleArgs| match a.nums[..2 + 4 * a.quotas] {
            [extra, 0, t, _, _, 1] if extra > 0 && t > 0 => Some(t),
            _ => None,
        };
        match (debt(self), debt(other)) {
            (Some(t), Some(u)) if t == u => {
                self.nums[0] = self.nums[0].saturating_add(other.nums[0]);
                true
            }
            _ => false,
        }
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

/// A settlement waiting to be sent.
struct Pending {
    key: Vec<u8>,
    /// The key's Cluster slot (0 off Cluster: one batch for all).
    slot: u16,
    args: SettleArgs,
    health: Arc<Health>,
    /// The settlements this one stands for (more than 1 once merged).
    count: u64,
}

/// The queue of settlements and the task that sends them.
#[derive(Default)]
pub(super) struct Settler {
    state: Mutex<State>,
    wake: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    queue: std::collections::VecDeque<Pending>,
    /// A task runs to send the queue.
    running: bool,
    /// The backend is gone: the task ends.
    closed: bool,
}

impl Settler {
    /// Ends the task (the backend is dropped).
    pub(super) fn close(&self) {
        self.state.lock().ignore_poison().closed = true;
        self.wake.notify_one();
    }
}

impl RedisBackend {
    /// Queues the settlement of a request for `key` (the Redis key), to be
    /// sent in the background: the caller never waits for it. A grant
    /// Redis did not charge is not settled on Redis: the fallback's grants
    /// settle in the fallback, a grant let through without a charge is
    /// skipped ([`RedisStats::settles_skipped`]). Dropped and counted
    /// ([`RedisStats::settles_dropped`]) when the key's node is known to be
    /// down, when the queue is full, when there is no tokio runtime to send
    /// it from, or when its batch fails or misses the deadline; never
    /// retried (it may have run).
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
        match charged.origin {
            Origin::Nowhere => {
                inner.stats.settles_skipped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Origin::Fallback => {
                // Charged in the fallback's cells (its stamps): settled there.
                let fallback = inner.fallback_policy(policy);
                inner.fallback.settle(&key, &fallback, charged, true_cost);
                inner
                    .stats
                    .settled_in_fallback
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
            Origin::Store => {}
        }
        // The warm fallback counted this request too: keep it in step. Its
        // stamps are Redis', not the fallback's, so the fallback takes the
        // debt and gives nothing back (a refund needs its own stamp).
        if inner.failure_is_fallback() && true_cost > charged.estimate {
            let fallback = inner.fallback_policy(policy);
            let local = Charged::new(charged.estimate, Default::default());
            inner.fallback.settle(&key, &fallback, local, true_cost);
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
        let slot = if inner.nodes.learned_at().is_some() {
            slot(&key)
        } else {
            0
        };
        let pending = Pending {
            key,
            slot,
            args: settle_args(policy, charged, true_cost),
            health,
            count: 1,
        };
        let settler = &inner.settler;
        let mut state = settler.state.lock().ignore_poison();
        if state.queue.len() >= QUEUE {
            drop(state);
            return dropped();
        }
        if !state.running {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                drop(state);
                return dropped();
            };
            state.running = true;
            drop(runtime.spawn(settle_task(
                Arc::downgrade(&self.inner),
                self.inner.settler.clone(),
            )));
        }
        let first = state.queue.is_empty();
        state.queue.push_back(pending);
        drop(state);
        if first {
            settler.wake.notify_one();
        }
    }
}

/// Sends the queued settlements until the backend is dropped: takes the
/// queue (at most [`ROUND`] of it, oldest first), sends it in batches (all
/// at once, pipelined), waits for their answers, and again; while a round
/// is out, new settlements gather into the next, so batches grow with the
/// load.
async fn settle_task(inner: Weak<Inner>, settler: Arc<Settler>) {
    // However the task ends (even dropped with its runtime), the next
    // settlement starts a new one.
    struct Ended<'a>(&'a Settler);
    impl Drop for Ended<'_> {
        fn drop(&mut self) {
            let mut state = self.0.state.lock().ignore_poison();
            state.running = false;
        }
    }
    let _ended = Ended(&settler);
    let mut round = Vec::new();
    loop {
        {
            let mut state = settler.state.lock().ignore_poison();
            if state.closed {
                return;
            }
            if state.queue.len() <= ROUND {
                round = Vec::from(std::mem::take(&mut state.queue));
            } else {
                round.extend(state.queue.drain(..ROUND));
            }
        }
        if round.is_empty() {
            settler.wake.notified().await;
            continue;
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner.send_round(&mut round).await;
        drop(inner);
        round.clear();
    }
}

impl Inner {
    /// Whether the failure policy keeps a warm fallback.
    fn failure_is_fallback(&self) -> bool {
        matches!(self.failure, FailurePolicy::Fallback { .. })
    }

    /// Sends `round` in batches of at most [`BATCH`] keys of one slot,
    /// all pipelined at once, and counts what became of each settlement.
    /// Debts of one key that follow each other are merged into one (the
    /// same TAT as applied one by one, in one call: `now` is the same).
    async fn send_round(self: &Arc<Self>, round: &mut Vec<Pending>) {
        // Stable: a key's settlements keep their order.
        round.sort_by(|a, b| (a.slot, &a.key).cmp(&(b.slot, &b.key)));
        round.dedup_by(|later, kept| {
            later.key == kept.key && kept.args.absorb_debt(&later.args) && {
                kept.count += later.count;
                true
            }
        });
        let mut calls = Vec::new();
        for group in round.chunk_by(|a, b| a.slot == b.slot) {
            for batch in group.chunks(BATCH) {
                calls.push(self.send_batch(batch));
            }
        }
        join_all(calls).await;
    }

    /// One call of the settle script for `batch`, within the deadline.
    async fn send_batch(self: &Arc<Self>, batch: &[Pending]) {
        let items: Vec<(&[u8], &SettleArgs)> =
            batch.iter().map(|p| (&p.key[..], &p.args)).collect();
        let sent = self.clock.now();
        let n = batch.iter().map(|p| p.count).sum();
        let first = &batch[0];
        match self.settle_now(&items).await {
            Ok(_) => {
                self.stats.settled.fetch_add(n, Ordering::Relaxed);
                first.health.success(self, sent, false);
            }
            Err(kind) => {
                self.stats.settles_dropped.fetch_add(n, Ordering::Relaxed);
                if kind != BackendErrorKind::Script {
                    first
                        .health
                        .failure(self, &first.key, self.clock.now(), false);
                }
            }
        }
    }

    /// Runs the settle script for `items` (keys and their settlements, on
    /// one slot) within the deadline: its reply (the quotas changed, and
    /// Redis' time in microseconds).
    pub(super) async fn settle_now(
        &self,
        items: &[(&[u8], &SettleArgs)],
    ) -> Result<[i64; 2], BackendErrorKind> {
        let mut cmd = self.evalsha(Lua::Settle, items.len());
        for (key, _) in items {
            cmd.arg(*key);
        }
        for (_, args) in items {
            args.write(&mut cmd);
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
