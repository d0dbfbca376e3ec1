//! `SuccessHeaders`: the fields `Responder` gives admitted responses.

use std::num::NonZeroU64;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::headers::fields as headers;
use crate::policy::Policy;

/// The fields an admitted request's response receives from [`Responder`].
///
/// Made by [`Responder`]'s [`Respond::admitted`]; a responder wrapping
/// [`Responder`] passes them on (see [`Respond::add_headers`]).
///
/// [`Responder`]: super::Responder
/// [`Respond::admitted`]: super::Respond::admitted
/// [`Respond::add_headers`]: super::Respond::add_headers
///
/// # Examples
///
/// ```
/// # use axum::{Router, body::Body, routing::get};
/// # use http::{HeaderValue, Response};
/// # use tower::ServiceExt;
/// # use tower_sluice::http::{HeaderKey, Limits, Rejection, Respond, Responder, SuccessHeaders};
/// # use tower_sluice::{PerKeyLayer, Quota};
/// /// Responder's fields on successes only (2xx).
/// struct OnSuccess(Responder);
///
/// impl Respond<Body> for OnSuccess {
///     type Headers = SuccessHeaders;
///
///     fn admitted(&self, limits: &Limits<'_>) -> Option<SuccessHeaders> {
///         Respond::<Body>::admitted(&self.0, limits)
///     }
///
///     fn add_headers(headers: SuccessHeaders, response: &mut Response<Body>) {
///         if response.status().is_success() {
///             headers.apply(response.headers_mut());
///         }
///     }
/// #   fn reject(&self, rejection: &Rejection<'_>) -> Response<Body> {
/// #       self.0.rejection_response(rejection)
/// #   }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limit = PerKeyLayer::new(Quota::per_minute(60), HeaderKey::from_static("x-api-key"))
///     .http()
///     .responder(OnSuccess(Responder::new()));
/// let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(limit);
/// let req = |path| http::Request::get(path).header("x-api-key", "k-1").body(Body::empty());
/// let found = app.clone().oneshot(req("/")?).await?;
/// assert_eq!(found.headers()["ratelimit"], r#""per-minute";r=59;t=1"#);
/// let missing = app.oneshot(req("/nowhere")?).await?;
/// assert_eq!(missing.status(), 404);
/// assert!(missing.headers().get("ratelimit").is_none());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SuccessHeaders {
    repr: Repr,
}

/// Held by the response future from the decision to the response: small,
/// since axum moves that future several times.
#[derive(Debug, Clone)]
enum Repr {
    /// A policy of one quota without legacy fields (the common case): the
    /// `RateLimit-Policy` value, which starts with the item's name, and the
    /// item's `r` and `t` (none when full), formatted when the response is
    /// ready.
    One {
        policy: HeaderValue,
        name_len: u32,
        remaining: u32,
        reset: Option<NonZeroU64>,
    },
    /// The fields, formatted.
    Formatted(Box<Formatted>),
}

#[derive(Debug, Clone)]
struct Formatted {
    policy: HeaderValue,
    limit: HeaderValue,
    legacy: Option<[(HeaderName, HeaderValue); 3]>,
}

impl SuccessHeaders {
    /// The fields of a policy of one quota: `remaining` and the seconds
    /// until one more (`None` when full).
    #[inline]
    pub(super) fn one(policy: &Policy, remaining: u32, reset: Option<NonZeroU64>) -> Self {
        let fields = policy.http_fields();
        SuccessHeaders {
            repr: Repr::One {
                policy: fields.policy.clone(),
                name_len: u32::try_from(fields.first_name_len()).unwrap_or(0),
                remaining,
                reset,
            },
        }
    }

    /// The fields, formatted.
    pub(super) fn formatted(
        policy: HeaderValue,
        limit: HeaderValue,
        legacy: Option<[(HeaderName, HeaderValue); 3]>,
    ) -> Self {
        SuccessHeaders {
            repr: Repr::Formatted(Box::new(Formatted {
                policy,
                limit,
                legacy,
            })),
        }
    }
}

impl SuccessHeaders {
    /// Adds the fields to `headers`: `RateLimit-Policy` and `RateLimit`
    /// appended (so limits of outer layers stay listed), legacy fields set
    /// unless already present.
    ///
    /// # Examples
    ///
    /// ```
    /// # use axum::{Router, body::Body, routing::get};
    /// # use http::Response;
    /// # use tower::ServiceExt;
    /// # use tower_sluice::http::{HeaderKey, Limits, Rejection, Respond, Responder, SuccessHeaders};
    /// # use tower_sluice::{PerKeyLayer, Quota};
    /// struct Outer(Responder);
    ///
    /// impl Respond<Body> for Outer {
    ///     type Headers = SuccessHeaders;
    /// #   fn admitted(&self, limits: &Limits<'_>) -> Option<SuccessHeaders> {
    /// #       Respond::<Body>::admitted(&self.0, limits)
    /// #   }
    ///
    ///     fn add_headers(headers: SuccessHeaders, response: &mut Response<Body>) {
    ///         headers.apply(response.headers_mut());
    ///     }
    /// #   fn reject(&self, rejection: &Rejection<'_>) -> Response<Body> {
    /// #       self.0.rejection_response(rejection)
    /// #   }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // Two limits on one route: both are listed.
    /// let key = || HeaderKey::from_static("x-api-key");
    /// let app: Router = Router::new()
    ///     .route("/", get(|| async { "hello" }))
    ///     .layer(PerKeyLayer::new(Quota::per_second(5), key()).http())
    ///     .layer(PerKeyLayer::new(Quota::per_hour(100), key()).http().responder(Outer(Responder::new())));
    /// let req = http::Request::get("/").header("x-api-key", "k-1").body(Body::empty())?;
    /// let res = app.oneshot(req).await?;
    /// let limits: Vec<_> = res.headers().get_all("ratelimit").iter().collect();
    /// assert_eq!(limits, [r#""per-second";r=4;t=1"#, r#""per-hour";r=99;t=36"#]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn apply(self, headers: &mut HeaderMap) {
        match self.repr {
            Repr::One {
                policy,
                name_len,
                remaining,
                reset,
            } => {
                let limit = headers::format_first(&policy, name_len as usize, remaining, reset);
                headers.append(headers::RATELIMIT_POLICY, policy);
                headers.append(headers::RATELIMIT, limit);
            }
            Repr::Formatted(formatted) => {
                let Formatted {
                    policy,
                    limit,
                    legacy,
                } = *formatted;
                headers.append(headers::RATELIMIT_POLICY, policy);
                headers.append(headers::RATELIMIT, limit);
                for (name, value) in legacy.into_iter().flatten() {
                    headers.entry(name).or_insert(value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU64;

    use http::HeaderMap;

    use super::SuccessHeaders;
    use crate::Quota;
    use crate::policy::Policy;

    fn applied(headers: SuccessHeaders) -> Vec<(String, String)> {
        let mut map = HeaderMap::new();
        headers.apply(&mut map);
        map.iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect()
    }

    #[test]
    fn one_quota_is_formatted_when_applied() {
        let policy = Policy::new(Quota::per_hour(1_000_000_000)).named("free");
        let fields = applied(SuccessHeaders::one(
            &policy,
            500_000_222,
            NonZeroU64::new(1),
        ));
        assert_eq!(
            fields,
            [
                (
                    "ratelimit-policy".into(),
                    r#""free-per-hour";q=1000000000;w=3600"#.into()
                ),
                (
                    "ratelimit".into(),
                    r#""free-per-hour";r=500000222;t=1"#.into()
                ),
            ]
        );
        // A full quota has no `t`.
        let fields = applied(SuccessHeaders::one(&policy, 7, None));
        assert_eq!(fields[1].1, r#""free-per-hour";r=7"#);
    }

    #[test]
    fn the_common_case_stays_small() {
        // The response future holds it through every move axum makes.
        assert!(std::mem::size_of::<Option<SuccessHeaders>>() <= 56);
    }
}
