//! [`Policy`]: what a key may do: one or several quotas and an optional cap
//! on requests in flight.

use std::fmt;
use std::sync::Arc;

use crate::gcra::{Decision, Params};
use crate::quota::Quota;

/// The most quotas one policy can hold (for example per second, per minute,
/// per day and per month).
///
/// # Examples
///
/// ```
/// use tower_sluice::Quota;
/// use tower_sluice::per_key::{MAX_QUOTAS, Policy};
///
/// // Per second, per minute, per day and per month: four at most.
/// let policy = Policy::new(Quota::per_second(10))
///     .and(Quota::per_minute(300))?
///     .and(Quota::per_day(10_000))?
///     .and("100000/month".parse()?)?;
/// assert_eq!(policy.quotas().len(), MAX_QUOTAS);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub const MAX_QUOTAS: usize = 4;

/// A key's limits: up to [`MAX_QUOTAS`] quotas that must all admit a
/// request, an optional cap on its requests in flight, and a name that
/// shows in errors and HTTP headers.
///
/// Cheap to clone (one `Arc`).
///
/// # Examples
///
/// ```
/// use tower_sluice::Quota;
/// use tower_sluice::per_key::Policy;
///
/// let paid = Policy::new(Quota::per_minute(120))
///     .and(Quota::per_day(10_000))
///     .unwrap()
///     .max_in_flight(8)
///     .named("paid");
/// assert_eq!(paid.quotas().count(), 2);
/// assert_eq!(paid.name(), Some("paid"));
/// ```
#[derive(Clone, PartialEq)]
pub struct Policy {
    inner: Arc<Inner>,
}

struct Inner {
    params: Vec<ParamsEq>,
    /// A copy of the first quota's parameters and whether the policy is
    /// [simple](Policy::is_simple): what every decision reads first, kept
    /// here rather than behind the vector's pointer.
    first: Params,
    simple: bool,
    /// The smallest burst among the quotas that count cost.
    max_cost: u32,
    max_in_flight: Option<u32>,
    name: Option<Arc<str>>,
    /// The policy's HTTP field items, formatted once.
    #[cfg(feature = "http")]
    http: std::sync::OnceLock<crate::headers::fields::PolicyFields>,
}

impl Inner {
    fn new(params: Vec<ParamsEq>, max_in_flight: Option<u32>, name: Option<Arc<str>>) -> Self {
        let mut inner = Inner {
            first: params[0].0,
            simple: false,
            max_cost: u32::MAX,
            params,
            max_in_flight,
            name,
            #[cfg(feature = "http")]
            http: std::sync::OnceLock::new(),
        };
        inner.refresh();
        inner
    }

    /// Recomputes what is derived from the quotas and the cap.
    fn refresh(&mut self) {
        self.first = self.params[0].0;
        self.simple = self.params.len() == 1
            && self.max_in_flight.is_none()
            && self.first.calendar().is_none();
        self.max_cost = self
            .params
            .iter()
            .filter(|p| !p.0.quota.counts_requests())
            .map(|p| p.0.quota.burst())
            .min()
            .unwrap_or(u32::MAX);
    }
}

impl PartialEq for Inner {
    fn eq(&self, other: &Self) -> bool {
        self.params == other.params
            && self.max_in_flight == other.max_in_flight
            && self.name == other.name
    }
}

/// `Params` compared by quota.
#[derive(Clone, Copy)]
struct ParamsEq(Params);

impl PartialEq for ParamsEq {
    fn eq(&self, other: &Self) -> bool {
        self.0.quota == other.0.quota
    }
}

/// A policy could not take another quota.
///
/// # Examples
///
/// ```
/// use tower_sluice::Quota;
/// use tower_sluice::per_key::{Policy, TooManyQuotas};
///
/// let mut policy = Policy::new(Quota::per_second(1));
/// for n in 2..=4 {
///     policy = policy.and(Quota::per_minute(n * 60))?;
/// }
/// let err = policy.and(Quota::per_day(10_000)).unwrap_err();
/// assert_eq!(err.to_string(), "invalid policy: `quotas` holds at most 4 quotas");
/// # Ok::<(), TooManyQuotas>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TooManyQuotas;

impl fmt::Display for TooManyQuotas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid policy: `quotas` holds at most {MAX_QUOTAS} quotas"
        )
    }
}

impl std::error::Error for TooManyQuotas {}

impl Policy {
    /// A policy of one quota.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::Quota;
    /// use tower_sluice::per_key::Policy;
    ///
    /// let policy = Policy::new(Quota::per_minute(60));
    /// assert_eq!(policy.to_string(), "60/min");
    /// // A quota converts into a policy of its own, wherever a policy is asked for.
    /// assert_eq!(Policy::from(Quota::per_minute(60)), policy);
    /// ```
    pub fn new(quota: Quota) -> Self {
        Policy {
            inner: Arc::new(Inner::new(vec![ParamsEq(Params::new(quota))], None, None)),
        }
    }

    fn edit(self, f: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| {
            Inner::new(
                shared.params.clone(),
                shared.max_in_flight,
                shared.name.clone(),
            )
        });
        // The cached HTTP fields describe the policy before the edit.
        #[cfg(feature = "http")]
        {
            inner.http = std::sync::OnceLock::new();
        }
        f(&mut inner);
        inner.refresh();
        Policy {
            inner: Arc::new(inner),
        }
    }

    /// Adds a quota that must also admit every request (60/min *and*
    /// 1000/day).
    ///
    /// # Errors
    ///
    /// [`TooManyQuotas`] past [`MAX_QUOTAS`].
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::limits::check_all;
    /// use tower_sluice::per_key::{Policy, TooManyQuotas};
    /// use tower_sluice::{PerKeyLayer, Quota};
    ///
    /// // Bursts of 10 a second, but no more than 20 a minute.
    /// let policy = Policy::new(Quota::per_second(10)).and(Quota::per_minute(20))?;
    /// let layer = PerKeyLayer::new(policy, |user: &u64| Some(*user));
    /// let handle = layer.handle();
    /// for _ in 0..10 {
    ///     check_all(&[&handle.limit(&7)]).unwrap();
    /// }
    /// // The per-second quota is spent; the per-minute one has 10 left.
    /// let left: Vec<u32> = handle.states(&7).iter().map(|d| d.remaining()).collect();
    /// assert_eq!(left, [0, 10]);
    /// # Ok::<(), TooManyQuotas>(())
    /// ```
    pub fn and(self, quota: Quota) -> Result<Self, TooManyQuotas> {
        if self.inner.params.len() >= MAX_QUOTAS {
            return Err(TooManyQuotas);
        }
        Ok(self.edit(|i| i.params.push(ParamsEq(Params::new(quota)))))
    }

    /// At most `n` requests of one key in flight at once; the slot is freed
    /// when the response future completes or is dropped. `0` is treated as
    /// 1: a key can always have one request in flight.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::error::TooManyInFlight;
    /// use tower_sluice::per_key::Policy;
    /// use tower_sluice::{PerKeyLayer, Quota};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), BoxError> {
    /// // Plenty of quota, but one slow request at a time per user.
    /// let policy = Policy::new(Quota::per_minute(100)).max_in_flight(1);
    /// let svc = ServiceBuilder::new()
    ///     .layer(PerKeyLayer::new(policy, |user: &&str| Some(user.to_string())))
    ///     .service(service_fn(|_: &str| async {
    ///         tokio::time::sleep(Duration::from_secs(1)).await;
    ///         Ok::<_, BoxError>("ok")
    ///     }));
    /// let (first, second) = tokio::join!(svc.clone().oneshot("ann"), svc.clone().oneshot("ann"));
    /// assert!(first.is_ok());
    /// assert!(second.unwrap_err().is::<TooManyInFlight>());
    /// // The first has completed: its slot is free again.
    /// svc.clone().oneshot("ann").await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn max_in_flight(self, n: u32) -> Self {
        self.edit(|i| i.max_in_flight = Some(n.max(1)))
    }

    /// Names the policy (for example a tier, `"free"`), for errors, events
    /// and the HTTP `RateLimit-Policy` field.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::Quota;
    /// use tower_sluice::per_key::Policy;
    ///
    /// let free = Policy::new(Quota::per_minute(30)).named("free");
    /// assert_eq!(free.name(), Some("free"));
    /// assert_eq!(free.to_string(), "free: 30/min");
    /// ```
    #[must_use]
    pub fn named(self, name: impl Into<Arc<str>>) -> Self {
        let name = name.into();
        self.edit(|i| i.name = Some(name))
    }

    /// The quotas, in the order they were added.
    pub fn quotas(&self) -> impl ExactSizeIterator<Item = Quota> + '_ {
        self.inner.params.iter().map(|p| p.0.quota)
    }

    /// The cap on requests in flight per key, if any (at least 1, see
    /// [`max_in_flight`](Self::max_in_flight)).
    pub fn in_flight_limit(&self) -> Option<u32> {
        self.inner.max_in_flight
    }

    /// The name given with [`named`](Self::named), if any.
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }

    pub(crate) fn name_arc(&self) -> Option<Arc<str>> {
        self.inner.name.clone()
    }

    /// The largest cost a request can have and still pass: the smallest
    /// burst among the quotas that count cost ([`Quota::counting`]);
    /// `u32::MAX` when every quota counts requests (each request is then
    /// charged 1, whatever its cost).
    pub fn max_cost(&self) -> u32 {
        self.inner.max_cost
    }

    /// The first quota that counts cost whose burst is below `cost`.
    #[inline]
    pub(crate) fn exceeded_by(&self, cost: u32) -> Option<Quota> {
        if cost <= self.inner.max_cost {
            return None;
        }
        self.quotas()
            .find(|q| !q.counts_requests() && cost > q.burst())
    }

    /// The policy's HTTP field items, formatted on first use.
    #[cfg(feature = "http")]
    #[inline]
    pub(crate) fn http_fields(&self) -> &crate::headers::fields::PolicyFields {
        self.inner
            .http
            .get_or_init(|| crate::headers::fields::PolicyFields::new(self))
    }

    #[inline]
    pub(crate) fn params(&self, i: usize) -> &Params {
        &self.inner.params[i].0
    }

    /// The identity of this policy's shared state (equal for clones).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn id(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.inner.params.len()
    }

    /// One rolling quota and no in-flight cap: the common policy, decided
    /// by one compare-exchange on the GCRA's fast path.
    #[inline]
    pub(crate) fn is_simple(&self) -> bool {
        self.inner.simple
    }

    /// The first quota's parameters (all of a [simple](Self::is_simple)
    /// policy's).
    #[inline]
    pub(crate) fn first_params(&self) -> &Params {
        &self.inner.first
    }
}

impl From<Quota> for Policy {
    fn from(quota: Quota) -> Self {
        Policy::new(quota)
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name())
            .field("quotas", &self.quotas().collect::<Vec<_>>())
            .field("max_in_flight", &self.in_flight_limit())
            .finish()
    }
}

impl fmt::Display for Policy {
    /// `paid: 120/min + 10000/day, 8 in flight`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = self.name() {
            write!(f, "{name}: ")?;
        }
        for (i, q) in self.quotas().enumerate() {
            if i > 0 {
                f.write_str(" + ")?;
            }
            write!(f, "{q}")?;
        }
        if let Some(n) = self.in_flight_limit() {
            write!(f, ", {n} in flight")?;
        }
        Ok(())
    }
}

/// The state of each quota of a key's policy, without consuming: for
/// `RateLimit` headers.
///
/// # Examples
///
/// ```
/// use tower_sluice::Quota;
/// use tower_sluice::backend::{Backend, Memory};
/// use tower_sluice::per_key::Policy;
///
/// let store = Memory::new(1_000);
/// let policy = Policy::new(Quota::per_minute(60)).and(Quota::per_day(1_000)).unwrap();
/// let states = store.states(&"ann", &policy);
/// let limits: Vec<u32> = states.iter().map(|d| d.limit()).collect();
/// assert_eq!(limits, [60, 1_000]);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct QuotaStates {
    states: [Option<Decision>; MAX_QUOTAS],
}

impl QuotaStates {
    pub(crate) fn push(&mut self, d: Decision) {
        if let Some(slot) = self.states.iter_mut().find(|s| s.is_none()) {
            *slot = Some(d);
        }
    }

    /// One decision per quota, in the policy's order.
    pub fn iter(&self) -> impl Iterator<Item = &Decision> {
        self.states.iter().map_while(Option::as_ref)
    }
}
