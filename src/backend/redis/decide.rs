//! The path of a decision: the deny cache, Redis, and on failure the failure
//! policy; the policies derived for the fallback.

use super::*;
use crate::backend::Origin;

impl RedisBackend {
    /// Runs one decision for `key` directly (what the layer does).
    pub(super) fn decide(
        &self,
        key: Vec<u8>,
        policy: &Policy,
        cost: u32,
        max_wait: Duration,
        consume: bool,
    ) -> Acquire<RedisFuture> {
        let inner = &self.inner;
        if key.len() > inner.max_key_len {
            return Acquire::Ready(Err(KeyTooLong::new(key.len(), inner.max_key_len).into()));
        }
        let max_wait_ns = u64::try_from(max_wait.as_nanos()).unwrap_or(u64::MAX);
        let now = inner.clock.now();
        if let Some(d) = inner.deny.check(&key, cost, now, max_wait_ns) {
            inner.stats.deny_cache_hits.fetch_add(1, Ordering::Relaxed);
            return Acquire::Ready(Err(RateLimited::from_decision(&d)
                .with_policy(policy.name_arc())
                .into()));
        }
        let permit = if consume {
            match inner.in_flight_permit(&key, policy) {
                Ok(permit) => permit,
                Err(e) => return Acquire::Ready(Err(e)),
            }
        } else {
            None
        };
        let health = inner.nodes.of(&key);
        let probe = match health.route(now) {
            Route::Redis => false,
            Route::Probe => true,
            Route::Skip => {
                inner.stats.skipped.fetch_add(1, Ordering::Relaxed);
                return Acquire::Ready(
                    inner
                        .on_failure(&key, policy, cost, max_wait, consume, None, &health, now)
                        .map(|g| g.with_in_flight(permit)),
                );
            }
        };
        let inner = inner.clone();
        let policy = policy.clone();
        Acquire::Pending(RedisFuture(Box::pin(async move {
            let result = inner
                .remote(&key, &policy, cost, max_wait_ns, consume, &health, probe)
                .await;
            result.map(|g| g.with_in_flight(permit))
        })))
    }
}

/// The decide script's arguments (see `script.lua`).
pub(super) struct ScriptArgs {
    /// The wait and whether to consume, then each quota's emission
    /// interval, burst and charge (in microseconds and units; for a
    /// calendar quota, see [`quota_args`]).
    nums: [u64; 2 + 3 * crate::policy::MAX_QUOTAS],
    quotas: usize,
    /// The unit of each calendar quota, in the policy's order.
    units: [&'static str; crate::policy::MAX_QUOTAS],
    calendars: usize,
}

impl ScriptArgs {
    /// The numbers: `2 + 3 * policy.len()` of them.
    pub(super) fn nums(&self) -> &[u64] {
        &self.nums[..2 + 3 * self.quotas]
    }

    /// The calendar quotas' unit names, sent after the numbers.
    pub(super) fn units(&self) -> &[&'static str] {
        &self.units[..self.calendars]
    }
}

/// The decide script's arguments for a request of `charge` under `policy`.
pub(super) fn script_args(
    policy: &Policy,
    charge: Charge,
    max_wait_ns: u64,
    consume: bool,
) -> ScriptArgs {
    let mut args = ScriptArgs {
        nums: [0; 2 + 3 * crate::policy::MAX_QUOTAS],
        quotas: 0,
        units: [""; crate::policy::MAX_QUOTAS],
        calendars: 0,
    };
    args.nums[0] = max_wait_ns / 1_000;
    args.nums[1] = u64::from(consume);
    for (i, q) in policy.quotas().enumerate() {
        [args.nums[2 + 3 * i], args.nums[3 + 3 * i]] = quota_args(q);
        args.nums[4 + 3 * i] = u64::from(charge.of(!q.counts_requests()));
        args.quotas = i + 1;
        if q.calendar().is_some() {
            args.units[args.calendars] = q.unit();
            args.calendars += 1;
        }
    }
    args
}

impl Inner {
    pub(super) fn key_bytes<K: RedisKey + ?Sized>(&self, key: &K) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.prefix.len() + 24);
        out.extend_from_slice(&self.prefix);
        key.write_key(&mut out);
        out
    }

    /// The derived policies of `policy`, made on first use.
    pub(super) fn derived<T>(&self, policy: &Policy, f: impl FnOnce(&Derived) -> T) -> T {
        let mut map = self.derived.lock().ignore_poison();
        if map.len() > 1024 && !map.contains_key(&policy.id()) {
            // Policies are few; this only guards against a caller making
            // a new one per request.
            map.clear();
        }
        let d = map
            .entry(policy.id())
            .or_insert_with(|| Derived::new(policy, self.failure));
        f(d)
    }

    /// The policy of the local fallback for `policy`.
    pub(super) fn fallback_policy(&self, policy: &Policy) -> Policy {
        self.derived(policy, |d| d.fallback.clone())
    }

    #[allow(clippy::ptr_arg)] // the local stores are keyed by Vec<u8>
    pub(super) fn in_flight_permit(
        &self,
        key: &Vec<u8>,
        policy: &Policy,
    ) -> Result<Option<crate::backend::InFlight>, BoxError> {
        if policy.in_flight_limit().is_none() {
            return Ok(None);
        }
        let local = self.derived(policy, |d| d.in_flight.clone());
        let Some(local) = local else { return Ok(None) };
        match self.in_flight.acquire(key, &local, 1, Duration::ZERO) {
            Acquire::Ready(Ok(mut grant)) => Ok(grant.take_in_flight()),
            Acquire::Ready(Err(e)) => Err(e),
            Acquire::Pending(never) => match never {},
        }
    }

    #[allow(clippy::too_many_arguments, clippy::ptr_arg)]
    pub(super) async fn remote(
        self: &Arc<Self>,
        key: &Vec<u8>,
        policy: &Policy,
        cost: u32,
        max_wait_ns: u64,
        consume: bool,
        health: &Arc<Health>,
        probe: bool,
    ) -> Result<Grant, BoxError> {
        let args = script_args(policy, Charge::cost(cost), max_wait_ns, consume);
        // What this key's earlier requests still have to settle rides along
        // (not on a probe: Redis may still be down).
        let carried = match consume && !probe {
            true => self.settler.take(key),
            false => None,
        };
        let sent = self.clock.now();
        let eval = self.eval(key, args.nums(), args.units(), carried.as_ref());
        let reply = tokio::time::timeout(self.deadline, eval).await;
        let parsed = match &reply {
            Ok(Ok(reply)) => self.decision(reply, policy),
            _ => None,
        };
        if let Some(carried) = carried {
            let n = carried.count();
            if parsed.is_some() {
                self.stats.settled.fetch_add(n, Ordering::Relaxed);
                self.stats.settles_carried.fetch_add(n, Ordering::Relaxed);
            } else {
                // It may have run: never sent again.
                self.stats.settles_dropped.fetch_add(n, Ordering::Relaxed);
            }
        }
        let failure = match reply {
            Ok(Ok(reply)) => match parsed {
                Some((decision, wait)) => {
                    self.stats.decisions.fetch_add(1, Ordering::Relaxed);
                    self.settler.saw_redis_time(reply[6], self.clock.now());
                    health.success(self, sent, probe);
                    return self
                        .answer(key, policy, cost, consume, sent, decision, wait)
                        .map(|g| g.with_charged(Charged::new(cost, stamps(&reply))));
                }
                None => BackendErrorKind::Script,
            },
            Ok(Err(e)) => error_kind(&e),
            Err(_) => BackendErrorKind::Timeout,
        };
        self.stats.count_error(failure);
        let now = self.clock.now();
        health.failure(self, key, now, probe);
        let max_wait = Duration::from_nanos(max_wait_ns);
        self.on_failure(
            key,
            policy,
            cost,
            max_wait,
            consume,
            Some(failure),
            health,
            now,
        )
    }

    /// The decision in a script reply.
    pub(super) fn decision(&self, reply: &[i64], policy: &Policy) -> Option<(Decision, u64)> {
        let &[
            allowed,
            index,
            remaining,
            retry_after,
            reset_after,
            wait,
            _now,
            ..,
        ] = reply
        else {
            return None;
        };
        let quota = policy
            .quotas()
            .nth(usize::try_from(index).ok()?.checked_sub(1)?)?;
        let us = |v: i64| u64::try_from(v).ok().map(|v| v.saturating_mul(1_000));
        let decision = match quota.calendar() {
            Some(_) => {
                let left = u32::try_from(remaining).ok()?;
                Decision::remote_calendar(
                    quota,
                    allowed == 1,
                    quota.limit().saturating_sub(left),
                    us(retry_after)?,
                    us(reset_after)?,
                )
            }
            None => Decision::remote(
                quota,
                emission_us(quota) * 1_000,
                allowed == 1,
                us(retry_after)?,
                us(reset_after)?,
            ),
        };
        // The script counts `remaining` as the decision does.
        if i64::from(decision.remaining()) != remaining {
            return None;
        }
        Some((decision, us(wait)?))
    }

    #[allow(clippy::too_many_arguments, clippy::ptr_arg)]
    pub(super) fn answer(
        &self,
        key: &Vec<u8>,
        policy: &Policy,
        cost: u32,
        consume: bool,
        sent: u64,
        decision: Decision,
        wait: u64,
    ) -> Result<Grant, BoxError> {
        if decision.is_allowed() {
            if consume {
                // Keep the fallback warm: count what this instance admits.
                let fallback = self.fallback_policy(policy);
                let _ = self.fallback.acquire(key, &fallback, cost, Duration::ZERO);
            }
            Ok(Grant::new(decision, Duration::from_nanos(wait)))
        } else {
            if consume {
                self.deny.insert(key, cost, sent, decision);
            }
            Err(RateLimited::from_decision(&decision)
                .with_policy(policy.name_arc())
                .into())
        }
    }

    /// The failure policy's answer, reported.
    #[allow(clippy::too_many_arguments, clippy::ptr_arg)]
    pub(super) fn on_failure(
        &self,
        key: &Vec<u8>,
        policy: &Policy,
        cost: u32,
        max_wait: Duration,
        consume: bool,
        error: Option<BackendErrorKind>,
        health: &Health,
        now: u64,
    ) -> Result<Grant, BoxError> {
        let (action, result) = match self.failure {
            FailurePolicy::FailOpen => {
                self.stats.failed_open.fetch_add(1, Ordering::Relaxed);
                let quota = policy.quotas().next().expect("a policy has a quota");
                let full = match quota.calendar() {
                    Some(_) => Decision::remote_calendar(quota, true, 0, 0, 0),
                    None => Decision::remote(quota, quota.emission_nanos(), true, 0, 0),
                };
                // Charged nowhere: there is nothing to settle on Redis.
                let grant = Grant::new(full, Duration::ZERO).with_charged(
                    Charged::new(cost, Default::default()).with_origin(Origin::Nowhere),
                );
                (FailureAction::Allowed, Ok(grant))
            }
            FailurePolicy::FailClosed => {
                self.stats.failed_closed.fetch_add(1, Ordering::Relaxed);
                let retry_after = Duration::from_nanos(health.retry_after(now));
                (
                    FailureAction::Refused,
                    Err(BackendUnavailable::new(BACKEND, retry_after).into()),
                )
            }
            FailurePolicy::Fallback { .. } => {
                self.stats.fallback.fetch_add(1, Ordering::Relaxed);
                let fallback = self.fallback_policy(policy);
                let result = if consume {
                    self.fallback.acquire(key, &fallback, cost, max_wait)
                } else {
                    self.fallback.peek(key, &fallback, cost)
                };
                let result = match result {
                    Acquire::Ready(r) => r,
                    Acquire::Pending(never) => match never {},
                };
                // Charged in the fallback's cells, with their stamps: settled
                // there, not on Redis.
                let result = result.map(|g| {
                    let charged = g.charged().with_origin(Origin::Fallback);
                    g.with_charged(charged)
                });
                (FailureAction::Fallback, result)
            }
        };
        if self.observers.is_set() {
            self.observers.emit(&Event::BackendFailure {
                backend: BACKEND,
                key: Some(&KeyText(key)),
                error,
                action,
            });
        }
        result
    }
}

/// The stamps an admitting reply carries after its seven fields (see
/// `script.lua`): the TAT written for each quota, or the calendar window
/// charged (0: none).
pub(super) fn stamps(reply: &[i64]) -> [u64; crate::gcra::INLINE_CELLS] {
    let mut out = [0; crate::gcra::INLINE_CELLS];
    for (o, &v) in out.iter_mut().zip(reply.iter().skip(7)) {
        *o = u64::try_from(v).unwrap_or(0);
    }
    out
}

/// Policies derived from a user's policy, made once per policy.
pub(super) struct Derived {
    /// Keeps the source alive, so its address is not reused.
    _source: Policy,
    /// The fallback's policy: quotas divided by the expected instances,
    /// no in-flight cap.
    fallback: Policy,
    /// Only the in-flight cap (for the local in-flight count).
    in_flight: Option<Policy>,
}

impl Derived {
    pub(super) fn new(policy: &Policy, failure: FailurePolicy) -> Self {
        let instances = match failure {
            FailurePolicy::Fallback { expected_instances } => expected_instances.max(1),
            _ => 1,
        };
        let mut quotas = policy.quotas().map(|q| scale(q, instances));
        let mut fallback = Policy::new(quotas.next().expect("a policy has a quota"));
        for q in quotas {
            fallback = fallback.and(q).expect("no more quotas than the source");
        }
        if let Some(name) = policy.name_arc() {
            fallback = fallback.named(name);
        }
        let in_flight = policy
            .in_flight_limit()
            // A quota that never binds (one a nanosecond): only the cap counts.
            .map(|n| Policy::new(Quota::per_second(1_000_000_000)).max_in_flight(n));
        Derived {
            _source: policy.clone(),
            fallback,
            in_flight,
        }
    }
}

/// `quota` shared by `n` instances: the same limit over `n` periods, the
/// burst divided (at least 1).
pub(super) fn scale(quota: Quota, n: u32) -> Quota {
    if n <= 1 {
        return quota;
    }
    if let Some(cal) = quota.calendar() {
        // A calendar window's allowance, shared.
        return Quota::per_calendar((quota.limit() / n).max(1), cal).with_unit(quota.unit_id());
    }
    let burst = (quota.burst() / n).max(1);
    quota
        .period()
        .checked_mul(n)
        .and_then(|period| Quota::try_new(quota.limit(), period).ok())
        .map_or(quota, |q| q.with_burst(burst).with_unit(quota.unit_id()))
}

/// A quota's two script arguments: `T` in microseconds and the burst, or
/// for a calendar quota 0 and `limit * 8 + period` (see `script.lua`).
pub(super) fn quota_args(q: Quota) -> [u64; 2] {
    match q.calendar() {
        Some(cal) => {
            let code = crate::calendar::Calendar::ALL
                .iter()
                .position(|&c| c == cal)
                .unwrap_or(0) as u64;
            [0, u64::from(q.limit()) * 8 + code]
        }
        None => [emission_us(q), u64::from(q.burst())],
    }
}

/// The emission interval in whole microseconds, rounded up.
pub(super) fn emission_us(q: Quota) -> u64 {
    q.emission_nanos().div_ceil(1_000)
}

/// Shows a Redis key in events and logs (lossy UTF-8, truncated).
pub(super) struct KeyText<'a>(pub(super) &'a [u8]);

/// Hashes as the `str` (or byte string) the key was made from, so that a
/// [`Monitor`](crate::observe::Monitor) sees a `String` key's row.
impl std::hash::Hash for KeyText<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match std::str::from_utf8(self.0) {
            Ok(text) => text.hash(state),
            Err(_) => self.0.hash(state),
        }
    }
}

impl fmt::Debug for KeyText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.0[..self.0.len().min(128)];
        write!(f, "{:?}", String::from_utf8_lossy(shown))?;
        if shown.len() < self.0.len() {
            write!(f, "..({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

/// The future of a decision that goes to Redis.
pub struct RedisFuture(Pin<Box<dyn Future<Output = Result<Grant, BoxError>> + Send>>);

impl Future for RedisFuture {
    type Output = Result<Grant, BoxError>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl fmt::Debug for RedisFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedisFuture")
    }
}

impl<K> Backend<K> for RedisBackend
where
    K: RedisKey + Send + Sync + 'static,
{
    type Future = RedisFuture;

    fn acquire(
        &self,
        key: &K,
        policy: &Policy,
        cost: u32,
        max_wait: Duration,
    ) -> Acquire<RedisFuture> {
        self.decide(self.inner.key_bytes(key), policy, cost, max_wait, true)
    }

    fn peek(&self, key: &K, policy: &Policy, cost: u32) -> Acquire<RedisFuture> {
        self.decide(
            self.inner.key_bytes(key),
            policy,
            cost,
            Duration::ZERO,
            false,
        )
    }

    /// This instance's local view (its warm fallback), without a round trip.
    fn states(&self, key: &K, policy: &Policy) -> QuotaStates {
        let fallback = self.inner.fallback_policy(policy);
        <Memory<Vec<u8>> as Backend<Vec<u8>>>::states(
            &self.inner.fallback,
            &self.inner.key_bytes(key),
            &fallback,
        )
    }

    /// Queues the settlement for the backend's task, which sends
    /// settlements to Redis in batches, one script call each (see the
    /// [module docs](crate::backend::redis#settling-the-true-cost)).
    fn settle(&self, key: &K, policy: &Policy, charged: Charged, true_cost: u32) {
        self.send_settle(self.inner.key_bytes(key), policy, charged, true_cost);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_quotas_share_the_rate() {
        let q = Quota::per_minute(60).with_burst(10);
        let s = scale(q, 4);
        assert_eq!(s.limit(), 60);
        assert_eq!(s.period(), Duration::from_secs(240));
        assert_eq!(s.burst(), 2);
        assert_eq!(scale(Quota::per_second(2), 8).burst(), 1);
        assert_eq!(scale(q, 1), q);
    }

    #[test]
    fn key_text_is_short_and_lossy() {
        let long = vec![b'a'; 300];
        let shown = format!("{:?}", KeyText(&long));
        assert!(shown.ends_with("..(300 bytes)"), "{shown}");
        assert_eq!(format!("{:?}", KeyText(b"k\xff")), "\"k\u{fffd}\"");
    }
}
