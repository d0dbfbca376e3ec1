//! What a responder reads: a rejection's kind, wait, errors, policy and
//! quota states, and an admitted request's limits.

use std::error::Error;
use std::fmt;

use http::HeaderValue;
use tower_sluice::error::MissingKey;
use tower_sluice::http::{Limits, Rejection, RejectionKind, Respond, Responder};
use tower_sluice::{BoxError, Limiter, RateLimited};

use super::*;

/// A rate limit error from a spent per-minute quota of 1.
fn rate_limited() -> RateLimited {
    let limiter = Limiter::new(Quota::per_minute(1));
    assert!(limiter.check().is_allowed());
    limiter.check().into_result().unwrap_err()
}

#[tokio::test]
async fn a_rate_limit_layer_rejection_is_rate_limited() {
    let svc = ServiceBuilder::new()
        .layer(RateLimitLayer::new(Quota::per_minute(1)).reject())
        .service(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
    svc.clone().oneshot(()).await.unwrap();
    let err = svc.oneshot(()).await.unwrap_err();
    assert_eq!(Rejection::new(&*err).kind(), RejectionKind::RateLimited);
}

#[test]
fn a_rate_limited_rejection_carries_its_wait_and_error() {
    let err: BoxError = rate_limited().into();
    let rejection = Rejection::new(&*err);
    let wait = rejection.retry_after().unwrap();
    assert!(wait > Duration::from_secs(59) && wait <= Duration::from_secs(60));
    let limited = rejection.rate_limited().unwrap();
    assert_eq!((limited.limit(), limited.remaining()), (1, 0));
    assert_eq!(limited.retry_after(), wait);
    // Not from the layer: no policy or states.
    assert!(rejection.policy().is_none() && rejection.states().is_none());
}

#[test]
fn a_missing_key_has_no_wait_and_no_rate_limit_error() {
    let err: BoxError = MissingKey::default().into();
    let rejection = Rejection::new(&*err);
    assert_eq!(rejection.kind(), RejectionKind::MissingKey);
    assert_eq!(rejection.retry_after(), None);
    assert!(rejection.rate_limited().is_none());
}

/// Another layer's error, wrapping the limiter's.
#[derive(Debug)]
struct Wrapped(RateLimited);

impl fmt::Display for Wrapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("inner service failed")
    }
}

impl Error for Wrapped {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.0)
    }
}

#[test]
fn a_wrapped_limiter_error_is_the_cause_and_the_wrapper_the_error() {
    let err = Wrapped(rate_limited());
    let rejection = Rejection::new(&err);
    assert!(rejection.error().is::<Wrapped>());
    assert_eq!(rejection.error().to_string(), "inner service failed");
    assert!(rejection.cause().is::<RateLimited>());
    assert!(
        rejection
            .cause()
            .to_string()
            .starts_with("rate limit exceeded")
    );
    assert_eq!(rejection.kind(), RejectionKind::RateLimited);
    assert!(rejection.rate_limited().is_some());

    // Not a limiter error at all: the cause is the error itself.
    let err: BoxError = "connection reset".into();
    let rejection = Rejection::new(&*err);
    assert_eq!(rejection.cause().to_string(), "connection reset");
}

/// Echoes what it is given into `x-*` headers: admitted responses get the
/// tier, the tightest quota's remaining and every quota's `remaining/limit`;
/// rejections the tier and every quota's remaining.
struct Echo;

impl Respond<Body> for Echo {
    type Headers = [String; 3];

    fn admitted(&self, limits: &Limits<'_>) -> Option<[String; 3]> {
        let states: Vec<String> = limits
            .states()
            .iter()
            .map(|d| format!("{}/{}", d.remaining(), d.limit()))
            .collect();
        Some([
            limits.policy().name().unwrap_or("-").to_owned(),
            limits.decision().remaining().to_string(),
            states.join(", "),
        ])
    }

    fn add_headers([tier, remaining, states]: [String; 3], response: &mut Response<Body>) {
        let headers = response.headers_mut();
        headers.insert("x-tier", HeaderValue::try_from(tier).unwrap());
        headers.insert("x-remaining", HeaderValue::try_from(remaining).unwrap());
        headers.insert("x-states", HeaderValue::try_from(states).unwrap());
    }

    fn reject(&self, rejection: &Rejection<'_>) -> Response<Body> {
        let mut response: Response<Body> = Responder::new().rejection_response(rejection);
        let tier = rejection.policy().and_then(Policy::name).unwrap_or("-");
        let left: Vec<String> = rejection
            .states()
            .map(|s| s.iter().map(|d| d.remaining().to_string()).collect())
            .unwrap_or_default();
        let headers = response.headers_mut();
        headers.insert("x-tier", HeaderValue::try_from(tier).unwrap());
        headers.insert("x-left", HeaderValue::try_from(left.join(" ")).unwrap());
        response
    }
}

fn echoing(policy: Policy) -> App {
    limited(PerKeyLayer::new(policy, api_key()).http().responder(Echo))
}

#[tokio::test]
async fn an_admitted_request_sees_its_policy_and_every_quota() {
    let policy = Policy::new(Quota::per_minute(60))
        .and(Quota::per_hour(5))
        .unwrap()
        .named("free");
    let res = echoing(policy).oneshot(get_with_key("k-1")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-tier"], "free");
    // The tightest quota after this request: the hourly one.
    assert_eq!(res.headers()["x-remaining"], "4");
    assert_eq!(res.headers()["x-states"], "59/60, 4/5");
}

#[tokio::test]
async fn a_rejected_request_sees_its_policy_and_what_each_quota_has_left() {
    let policy = Policy::new(Quota::per_minute(1))
        .and(Quota::per_day(100))
        .unwrap()
        .named("free");
    let app = echoing(policy);
    app.clone().oneshot(get_with_key("k-1")).await.unwrap();
    let limited = app.oneshot(get_with_key("k-1")).await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["x-tier"], "free");
    // The minute's quota is spent; the day's has 99 left (a refused request
    // costs nothing).
    assert_eq!(limited.headers()["x-left"], "0 99");
}

#[test]
fn a_key_extractor_and_a_proxy_error_say_what_they_hold() {
    assert_eq!(api_key().name(), "x-api-key");
    let err = TrustedProxies::new(["localhost"]).unwrap_err();
    assert_eq!(err.entry(), "localhost");
}

/// A stand-in inner service that says which one it is.
#[derive(Debug, PartialEq)]
struct Tagged(u32);

#[test]
fn the_http_limit_service_gives_back_its_inner_service() {
    let layer = PerKeyLayer::new(Quota::per_second(10), PeerIp::new()).http();
    let mut svc = tower::Layer::layer(&layer, Tagged(1));
    assert_eq!(svc.get_ref(), &Tagged(1));
    svc.get_mut().0 = 2;
    assert_eq!(svc.into_inner(), Tagged(2));
}
