//! [`Policy`]: what a key may do: one or several quotas and an optional cap
//! on requests in flight.

use std::fmt;
use std::sync::Arc;

use crate::Quota;
use crate::gcra::Params;

/// The most quotas one policy can hold (for example per second, per minute,
/// per day and per month).
pub const MAX_QUOTAS: usize = 4;

/// A key's limits: up to [`MAX_QUOTAS`] quotas that must all admit a
/// request, an optional cap on its requests in flight, and a name that
/// shows in errors and HTTP headers.
///
/// Cheap to clone (one `Arc`).
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
    max_in_flight: Option<u32>,
    name: Option<Arc<str>>,
    /// The policy's HTTP field items, formatted once.
    #[cfg(feature = "http")]
    http: std::sync::OnceLock<crate::http::headers::PolicyFields>,
}

impl Inner {
    fn new(params: Vec<ParamsEq>, max_in_flight: Option<u32>, name: Option<Arc<str>>) -> Self {
        Inner {
            params,
            max_in_flight,
            name,
            #[cfg(feature = "http")]
            http: std::sync::OnceLock::new(),
        }
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
    pub fn and(self, quota: Quota) -> Result<Self, TooManyQuotas> {
        if self.inner.params.len() >= MAX_QUOTAS {
            return Err(TooManyQuotas);
        }
        Ok(self.edit(|i| i.params.push(ParamsEq(Params::new(quota)))))
    }

    /// At most `n` requests of one key in flight at once; the slot is freed
    /// when the response future completes or is dropped. `0` is treated as
    /// 1: a key can always have one request in flight.
    #[must_use]
    pub fn max_in_flight(self, n: u32) -> Self {
        self.edit(|i| i.max_in_flight = Some(n.max(1)))
    }

    /// Names the policy (for example a tier, `"free"`), for errors, events
    /// and the HTTP `RateLimit-Policy` field.
    #[must_use]
    pub fn named(self, name: impl Into<Arc<str>>) -> Self {
        let name = name.into();
        self.edit(|i| i.name = Some(name))
    }

    /// The quotas, in order.
    pub fn quotas(&self) -> impl ExactSizeIterator<Item = Quota> + '_ {
        self.inner.params.iter().map(|p| p.0.quota)
    }

    /// The cap on requests in flight per key, if any.
    pub fn in_flight_limit(&self) -> Option<u32> {
        self.inner.max_in_flight
    }

    /// The name, if any.
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }

    pub(crate) fn name_arc(&self) -> Option<Arc<str>> {
        self.inner.name.clone()
    }

    /// The smallest burst: the largest cost that can ever pass.
    pub fn max_cost(&self) -> u32 {
        self.quotas().map(|q| q.burst()).min().unwrap_or(0)
    }

    /// The policy's HTTP field items, formatted on first use.
    #[cfg(feature = "http")]
    #[inline]
    pub(crate) fn http_fields(&self) -> &crate::http::headers::PolicyFields {
        self.inner
            .http
            .get_or_init(|| crate::http::headers::PolicyFields::new(self))
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
