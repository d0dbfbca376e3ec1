//! Several separate limits charged together: check all, then commit all.
//!
//! A request often has to pass more than one limiter: its user's limit,
//! a global limit and its endpoint's limit, say. Checking them one after
//! the other charges the first ones for a request the last one refuses.
//! [`check_all`] charges every limit or none:
//!
//! - a refused request consumes nothing from any limit (and gets the
//!   longest wait among the limits that refused it);
//! - concurrent callers, through `check_all` or through each limiter's own
//!   methods and layers, never push any limit over its quota;
//! - [`peek_all`] says what `check_all` would decide, consuming nothing.
//!
//! A limit is a [`Limiter`] (one or several quotas; also behind an
//! [`Arc`]) or one key of an in-memory [`PerKeyLayer`](crate::PerKeyLayer),
//! through [`PerKeyHandle::limit`](crate::per_key::PerKeyHandle::limit).
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use tower_sluice::limits::{check_all, peek_all};
//! use tower_sluice::{Limiter, PerKeyLayer, Quota};
//!
//! // Per user: 3 per minute. All users together: 4 per minute.
//! let per_user = PerKeyLayer::new(Quota::per_minute(3), |req: &(String, u32)| Some(req.0.clone()));
//! let users = per_user.handle();
//! let global = Arc::new(Limiter::new(Quota::per_minute(4)));
//!
//! let (ann, bob) = ("ann".to_string(), "bob".to_string());
//! for _ in 0..3 {
//!     check_all(&[&users.limit(&ann), &global]).unwrap();
//! }
//! // Ann is out; her refused request charges the global limit nothing.
//! let refused = check_all(&[&users.limit(&ann), &global]).unwrap_err();
//! assert_eq!(refused.index(), 0, "the first limit, Ann's, refused");
//! assert!(refused.rate_limited().is_some());
//! assert!(global.peek().is_allowed(), "one global slot left");
//!
//! // Bob takes the last global slot; then the global limit refuses him.
//! assert!(peek_all(&[&users.limit(&bob), &global]).is_ok());
//! check_all(&[&users.limit(&bob), &global]).unwrap();
//! let refused = check_all(&[&users.limit(&bob), &global]).unwrap_err();
//! assert_eq!(refused.index(), 1);
//! // ... and Bob's own limit was not charged for it.
//! let bob_left = users.states(&bob).iter().next().unwrap().remaining();
//! assert_eq!(bob_left, 2);
//! ```
//!
//! # How it stays exact
//!
//! Each quota of each limit is one GCRA cell (a word updated by
//! compare-exchange). `check_all` *claims* every cell involved (in address
//! order, so two callers cannot deadlock), decides on the claimed values,
//! and releases each cell with its new value, or with its old one when
//! any limit refuses. While a cell is claimed, other deciders of that cell
//! wait: a claim lasts a few compare-exchanges, with no lock taken, no
//! allocation and no clock read while it is held. A limiter's own decisions
//! pay nothing for this when no claim is held.
//!
//! Keys of a [`PerKeyLayer`](crate::PerKeyLayer) live in its store's shards;
//! their shards' read locks are taken first, in address order too, and held
//! for the decision.
//!
//! A request admitted by `check_all` takes no in-flight slot of a per-key
//! policy's [`max_in_flight`](crate::per_key::Policy::max_in_flight) cap:
//! only quotas are charged.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::Memory;
use crate::calendar;
use crate::error::{RateLimited, TooManyKeys};
use crate::gcra::{CellSet, Decision, Gcra, MAX_TAT, Params};
use crate::limiter::Limiter;
use crate::per_key::PerKeyHandle;
use crate::policy::Policy;

/// A limit [`check_all`] and [`peek_all`] can charge: a [`Limiter`] (also
/// behind an [`Arc`]) or one key of a per-key layer
/// ([`KeyLimit`], from [`PerKeyHandle::limit`]).
///
/// Sealed: the crate's in-memory limiters implement it.
///
/// ```
/// use tower_sluice::limits::Limit;
/// use tower_sluice::{Limiter, Quota};
///
/// let limiter = Limiter::new(Quota::per_second(5));
/// let limits: [&dyn Limit; 1] = [&limiter];
/// assert!(tower_sluice::limits::check_all(&limits).is_ok());
/// ```
pub trait Limit: sealed::Sealed {}

pub(crate) mod sealed {
    use super::*;

    /// One limit's cells, lent while its locks (if any) are held.
    #[allow(missing_debug_implementations)]
    pub struct Part<'a> {
        pub(crate) cells: &'a dyn CellSet,
        pub(crate) now: u64,
        pub(crate) name: Option<Arc<str>>,
    }

    pub(crate) use crate::backend::Abort;

    /// What the crate's limits implement for [`Limit`](super::Limit).
    pub trait Sealed {
        /// The address of the lock held while lending, or 0 for none.
        fn lock_addr(&self) -> usize;
        /// Lends the cells to `f` (`nested`: this thread already holds the
        /// lock of [`lock_addr`](Self::lock_addr); `create`: insert an
        /// unknown key).
        fn visit(
            &self,
            nested: bool,
            create: bool,
            f: &mut dyn FnMut(Part<'_>),
        ) -> Result<(), Abort>;
        /// Makes the next non-blocking visit possible (inserts the key).
        fn prepare(&self) {}
    }
}

use sealed::{Abort, Part, Sealed};

impl Sealed for Limiter {
    fn lock_addr(&self) -> usize {
        0
    }

    fn visit(&self, _: bool, _: bool, f: &mut dyn FnMut(Part<'_>)) -> Result<(), Abort> {
        let (cells, now) = self.cells_now();
        f(Part {
            cells,
            now,
            name: None,
        });
        Ok(())
    }
}

impl Limit for Limiter {}

impl Sealed for Arc<Limiter> {
    fn lock_addr(&self) -> usize {
        0
    }

    fn visit(&self, nested: bool, create: bool, f: &mut dyn FnMut(Part<'_>)) -> Result<(), Abort> {
        (**self).visit(nested, create, f)
    }
}

impl Limit for Arc<Limiter> {}

/// One key of a per-key layer with the in-memory backend, as a [`Limit`]:
/// made by [`PerKeyHandle::limit`]. The key's policy is resolved when it
/// is made.
///
/// ```
/// use tower_sluice::limits::check_all;
/// use tower_sluice::{PerKeyLayer, Quota};
///
/// let layer = PerKeyLayer::new(Quota::per_minute(1), |ip: &u32| Some(*ip));
/// let handle = layer.handle();
/// assert!(check_all(&[&handle.limit(&7)]).is_ok());
/// assert!(check_all(&[&handle.limit(&7)]).is_err());
/// assert!(check_all(&[&handle.limit(&8)]).is_ok());
/// ```
pub struct KeyLimit<'a, K> {
    memory: &'a Memory<K>,
    key: &'a K,
    policy: Policy,
}

impl<K, B> PerKeyHandle<K, B>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    B: AsRef<Memory<K>>,
{
    /// `key`'s limits as a [`Limit`], to charge together with others
    /// through [`check_all`]. See the [module docs](crate::limits).
    ///
    /// ```
    /// use tower_sluice::limits::{check_all, peek_all};
    /// use tower_sluice::{Limiter, PerKeyLayer, Quota};
    ///
    /// let layer = PerKeyLayer::new(Quota::per_minute(2), |user: &String| Some(user.clone()));
    /// let users = layer.handle();
    /// let global = Limiter::new(Quota::per_minute(100));
    /// let ann = "ann".to_string();
    /// assert!(peek_all(&[&users.limit(&ann), &global]).is_ok());
    /// check_all(&[&users.limit(&ann), &global]).unwrap();
    /// assert_eq!(global.peek().remaining(), 98);
    /// ```
    pub fn limit<'a>(&'a self, key: &'a K) -> KeyLimit<'a, K> {
        KeyLimit {
            memory: self.backend().as_ref(),
            key,
            policy: self.policy(key),
        }
    }
}

impl<K> Sealed for KeyLimit<'_, K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    fn lock_addr(&self) -> usize {
        self.memory.lock_addr(self.key)
    }

    fn visit(&self, nested: bool, create: bool, f: &mut dyn FnMut(Part<'_>)) -> Result<(), Abort> {
        let name = self.policy.name_arc();
        self.memory
            .visit(self.key, &self.policy, nested, create, |cells, now| {
                f(Part {
                    cells,
                    now,
                    name: name.clone(),
                })
            })
    }

    fn prepare(&self) {
        self.memory.insert(self.key, &self.policy);
    }
}

impl<K> Limit for KeyLimit<'_, K> where K: Hash + Eq + Clone + Send + Sync + 'static {}

impl<K: fmt::Debug> fmt::Debug for KeyLimit<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyLimit")
            .field("key", self.key)
            .field("policy", &self.policy)
            .finish()
    }
}

impl fmt::Debug for dyn Limit + '_ {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Limit")
    }
}

/// [`check_all`] or [`peek_all`] refused a request: which limit, and why.
///
/// ```
/// use tower_sluice::limits::check_all;
/// use tower_sluice::{Limiter, Quota};
///
/// let a = Limiter::new(Quota::per_minute(10));
/// let b = Limiter::new(Quota::per_minute(1));
/// check_all(&[&a, &b]).unwrap();
/// let refused = check_all(&[&a, &b]).unwrap_err();
/// assert_eq!(refused.index(), 1);
/// // About a minute (less the time since the first request).
/// assert!(refused.retry_after() > std::time::Duration::from_secs(59));
/// // The refused request charged nothing: 10 - 2 left after this one.
/// assert_eq!(a.check().remaining(), 8);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Refused {
    index: usize,
    cause: Cause,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Cause {
    Limited(RateLimited),
    StoreFull(TooManyKeys),
    NoLimits,
}

impl Refused {
    /// The position, in the slice passed, of the limit that refused (the
    /// one needing the longest wait when several did).
    pub fn index(&self) -> usize {
        self.index
    }

    /// How long until the request could pass (as far as that limit
    /// knows; others may refuse it then).
    pub fn retry_after(&self) -> Duration {
        match &self.cause {
            Cause::Limited(e) => e.retry_after(),
            Cause::StoreFull(e) => e.retry_after(),
            Cause::NoLimits => Duration::ZERO,
        }
    }

    /// The rate limit error, when a quota refused (not a full per-key
    /// store).
    pub fn rate_limited(&self) -> Option<&RateLimited> {
        match &self.cause {
            Cause::Limited(e) => Some(e),
            _ => None,
        }
    }

    /// The error a layer would return for this refusal:
    /// [`RateLimited`] or [`TooManyKeys`].
    ///
    /// # Examples
    ///
    /// A handler that charges several limits returns what a layer would:
    ///
    /// ```
    /// use tower::BoxError;
    /// use tower_sluice::limits::check_all;
    /// use tower_sluice::{Limiter, Quota, RateLimited};
    ///
    /// fn handle(user: &Limiter, global: &Limiter) -> Result<&'static str, BoxError> {
    ///     check_all(&[user, global]).map_err(|refused| refused.into_error())?;
    ///     Ok("done")
    /// }
    ///
    /// let (user, global) = (Limiter::new(Quota::per_minute(1)), Limiter::new(Quota::per_minute(100)));
    /// assert_eq!(handle(&user, &global).unwrap(), "done");
    /// let err = handle(&user, &global).unwrap_err();
    /// assert!(err.is::<RateLimited>());
    /// ```
    pub fn into_error(self) -> crate::BoxError {
        match self.cause {
            Cause::Limited(e) => e.into(),
            Cause::StoreFull(e) => e.into(),
            Cause::NoLimits => self.to_string().into(),
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Cause::Limited(e) => write!(f, "limit {} refused the request: {e}", self.index),
            Cause::StoreFull(e) => write!(f, "limit {} refused the request: {e}", self.index),
            Cause::NoLimits => f.write_str("no limits to check: pass at least one limit"),
        }
    }
}

impl std::error::Error for Refused {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.cause {
            Cause::Limited(e) => Some(e),
            Cause::StoreFull(e) => Some(e),
            Cause::NoLimits => None,
        }
    }
}

/// Charges a request of cost 1 to every limit in `limits`, or to none:
/// `Ok` with the decision of the tightest quota (fewest remaining), or
/// [`Refused`] naming the limit that refused. See the
/// [module docs](crate::limits).
///
/// The same limit listed twice is charged twice.
///
/// # Errors
///
/// [`Refused`] when a limit has no room now, when a per-key store is full
/// of active keys, or when `limits` is empty.
///
/// ```
/// use tower_sluice::limits::check_all;
/// use tower_sluice::{Limiter, Quota};
///
/// let minute = Limiter::new(Quota::per_minute(60));
/// let day = Limiter::new(Quota::per_day(2));
/// assert_eq!(check_all(&[&minute, &day]).unwrap().remaining(), 1);
/// ```
pub fn check_all(limits: &[&dyn Limit]) -> Result<Decision, Refused> {
    run(limits, true)
}

/// What [`check_all`] would decide now, consuming nothing.
///
/// # Errors
///
/// As [`check_all`].
///
/// ```
/// use tower_sluice::limits::peek_all;
/// use tower_sluice::{Limiter, Quota};
///
/// let limiter = Limiter::new(Quota::per_minute(1));
/// assert!(peek_all(&[&limiter]).is_ok());
/// assert!(peek_all(&[&limiter]).is_ok(), "nothing was consumed");
/// ```
pub fn peek_all(limits: &[&dyn Limit]) -> Result<Decision, Refused> {
    run(limits, false)
}

fn run(limits: &[&dyn Limit], commit: bool) -> Result<Decision, Refused> {
    if limits.is_empty() {
        return Err(Refused {
            index: 0,
            cause: Cause::NoLimits,
        });
    }
    let addrs: Vec<usize> = limits.iter().map(|l| l.lock_addr()).collect();
    // Locks are taken in address order (limits without one first).
    let mut order: Vec<usize> = (0..limits.len()).collect();
    order.sort_by_key(|&i| addrs[i]);
    let mut decide = |frame: &Frame<'_>| decide(frame, commit);
    loop {
        match nest(limits, &addrs, &order, 0, None, commit, &mut decide) {
            Ok(outcome) => return outcome,
            Err((index, Abort::Full(e))) => {
                return Err(Refused {
                    index,
                    cause: Cause::StoreFull(e),
                });
            }
            Err((index, Abort::Retry)) => {
                limits[index].prepare();
                std::thread::yield_now();
            }
        }
    }
}

/// One limit's cells on the stack, linked to the limits lent before it.
struct Frame<'a> {
    part: Part<'a>,
    index: usize,
    parent: Option<&'a Frame<'a>>,
}

type Outcome = Result<Decision, Refused>;

/// Borrows the cells of `limits[order[pos..]]` one inside the other (each
/// while its lock is held), then decides on all of them at once.
fn nest(
    limits: &[&dyn Limit],
    addrs: &[usize],
    order: &[usize],
    pos: usize,
    parent: Option<&Frame<'_>>,
    create: bool,
    decide: &mut dyn FnMut(&Frame<'_>) -> Outcome,
) -> Result<Outcome, (usize, Abort)> {
    let Some(&index) = order.get(pos) else {
        let frame = parent.expect("at least one limit");
        return Ok(decide(frame));
    };
    let nested = pos > 0 && addrs[index] != 0 && addrs[index] == addrs[order[pos - 1]];
    let mut result = None;
    limits[index]
        .visit(nested, create, &mut |part| {
            let frame = Frame {
                part,
                index,
                parent,
            };
            result = Some(nest(
                limits,
                addrs,
                order,
                pos + 1,
                Some(&frame),
                create,
                decide,
            ));
        })
        .map_err(|abort| (index, abort))?;
    result.expect("a limit lends its cells or aborts")
}

/// One cell to decide on.
struct Cell<'c> {
    gcra: &'c Gcra,
    params: Params,
    inc: u64,
    now: u64,
    index: usize,
    name: Option<&'c Arc<str>>,
}

fn decide(frame: &Frame<'_>, commit: bool) -> Outcome {
    let mut cells: Vec<Cell<'_>> = Vec::new();
    let mut next = Some(frame);
    while let Some(f) = next {
        let part = &f.part;
        for i in 0..part.cells.len() {
            let (params, gcra) = part.cells.cell(i);
            cells.push(Cell {
                gcra,
                params,
                inc: params.inc(crate::cost::Charge::ONE),
                now: part.now,
                index: f.index,
                name: part.name.as_ref(),
            });
        }
        next = f.parent;
    }
    // In address order; a cell listed twice is charged twice.
    cells.sort_by_key(|c| (std::ptr::from_ref(c.gcra) as usize, c.index));
    cells.dedup_by(|later, first| {
        let same = std::ptr::eq(later.gcra, first.gcra);
        if same {
            first.inc = first.inc.saturating_add(later.inc);
        }
        same
    });
    let mut news = Vec::with_capacity(cells.len());
    let mut values = Vec::with_capacity(cells.len());
    // No allocation, lock or clock read from here to the releases.
    for c in &cells {
        values.push(if commit { c.gcra.claim() } else { c.gcra.tat() });
    }
    let mut denied: Option<(Decision, &Cell<'_>)> = None;
    let mut tightest: Option<Decision> = None;
    for (c, &v) in cells.iter().zip(&values) {
        let admitted = match c.params.calendar() {
            Some(cal) => {
                let (limit, count) = (c.params.quota.limit(), c.params.count(c.inc));
                calendar::decide(v, cal, c.params.utc, limit, count, c.now)
                    .map_err(|(base, _)| base)
            }
            None => {
                let base = v.max(c.now);
                match base.checked_add(c.inc) {
                    Some(new) if new - c.now <= c.params.window && new <= MAX_TAT => Ok(new),
                    _ => Err(base),
                }
            }
        };
        match admitted {
            Ok(new) => {
                let d = Decision::allowed(&c.params, c.now, new);
                if tightest.is_none_or(|t| d.remaining() < t.remaining()) {
                    tightest = Some(d);
                }
                news.push(new);
            }
            Err(base) => {
                let d = Decision::denied(&c.params, c.now, base, c.inc);
                let longer = denied.as_ref().is_none_or(|(w, wc)| {
                    (d.retry_after(), std::cmp::Reverse(c.index))
                        > (w.retry_after(), std::cmp::Reverse(wc.index))
                });
                if longer {
                    denied = Some((d, c));
                }
                news.push(v);
            }
        }
    }
    if commit {
        let keep = denied.is_some();
        for ((c, &v), &new) in cells.iter().zip(&values).zip(&news) {
            c.gcra.release(if keep { v } else { new });
        }
    }
    match denied {
        Some((d, c)) => Err(Refused {
            index: c.index,
            cause: Cause::Limited(RateLimited::from_decision(&d).with_policy(c.name.cloned())),
        }),
        None => Ok(tightest.expect("every limit has a quota")),
    }
}
