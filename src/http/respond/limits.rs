//! `Limits`: what an admitted request's responder sees of its key's limits.

use std::fmt;

use crate::gcra::Decision;
use crate::policy::{Policy, QuotaStates};

/// An admitted request's key's limits: its policy and the state of its
/// quotas right after the decision.
///
/// Handed to [`Respond::admitted`](super::Respond::admitted).
///
/// # Examples
///
/// A responder telling the client its tier and what is left of each quota:
///
/// ```
/// use axum::{Router, body::Body, routing::get};
/// use http::{HeaderValue, Response};
/// use tower::ServiceExt;
/// use tower_sluice::http::{HeaderKey, Limits, Rejection, Respond, Responder};
/// use tower_sluice::per_key::Policy;
/// use tower_sluice::{PerKeyLayer, Quota};
///
/// struct Summary;
///
/// impl Respond<Body> for Summary {
///     type Headers = String;
///
///     fn admitted(&self, limits: &Limits<'_>) -> Option<String> {
///         let tier = limits.policy().name().unwrap_or("default");
///         let left: Vec<String> = limits.states().iter().map(|d| d.remaining().to_string()).collect();
///         Some(format!("{tier}: {}", left.join(" ")))
///     }
///
///     fn add_headers(summary: String, response: &mut Response<Body>) {
///         response.headers_mut().insert("x-quota", HeaderValue::try_from(summary).unwrap());
///     }
///
///     fn reject(&self, rejection: &Rejection<'_>) -> Response<Body> {
///         Responder::new().rejection_response(rejection)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let free = Policy::new(Quota::per_minute(10)).and(Quota::per_day(100))?.named("free");
/// let limit = PerKeyLayer::new(free, HeaderKey::from_static("x-api-key")).http().responder(Summary);
/// let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(limit);
/// let req = http::Request::get("/").header("x-api-key", "k-1").body(Body::empty())?;
/// assert_eq!(app.oneshot(req).await?.headers()["x-quota"], "free: 9 99");
/// # Ok(())
/// # }
/// ```
pub struct Limits<'a> {
    policy: &'a Policy,
    decision: &'a Decision,
    lookup: Option<&'a dyn Fn() -> QuotaStates>,
}

impl<'a> Limits<'a> {
    pub(crate) fn new(
        policy: &'a Policy,
        decision: &'a Decision,
        lookup: Option<&'a dyn Fn() -> QuotaStates>,
    ) -> Self {
        Limits {
            policy,
            decision,
            lookup,
        }
    }

    /// The key's policy.
    pub fn policy(&self) -> &'a Policy {
        self.policy
    }

    /// The decision of the key's tightest quota.
    pub fn decision(&self) -> &'a Decision {
        self.decision
    }

    /// The state of each quota of the policy. Free for a policy of one
    /// quota; for several, read from the backend without consuming (a
    /// remote backend's grant gives the tightest quota only).
    pub fn states(&self) -> QuotaStates {
        match (self.single(), self.lookup) {
            (None, Some(lookup)) => lookup(),
            _ => {
                let mut states = QuotaStates::default();
                states.push(*self.decision);
                states
            }
        }
    }

    /// The one state [`states`](Self::states) would hold, without
    /// building them: a policy of one quota, or a grant with no lookup.
    #[inline]
    pub(crate) fn single(&self) -> Option<&'a Decision> {
        match self.lookup {
            Some(_) if self.policy.len() > 1 => None,
            _ => Some(self.decision),
        }
    }
}

impl fmt::Debug for Limits<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limits")
            .field("policy", &self.policy)
            .field("decision", &self.decision)
            .finish_non_exhaustive()
    }
}
