//! Middleware of the client API: request ids, access log, metrics, panics, body limits.
//!
//! One tower layer ([`Observe`]) does all of it. It was six (tower-http's request id pair
//! and catch-panic, two `from_fn` middlewares, the body limit): each boxed and cloned its
//! inner service and allocated for every request, about 3 µs of the 13 µs a read costs a
//! single node here. The layer is applied per route, so each route's instance remembers its
//! own route template and latency histogram after the first request.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::histogram::Histogram;
use tower::{Layer, Service};

use super::{ApiError, Limits};
use crate::metrics::{HttpLabels, Metrics, RouteLabels};

/// The request id header, generated when absent and echoed on the response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Wraps the routes in all middleware.
pub fn apply(routes: Router, limits: &Limits, metrics: Arc<Metrics>) -> Router {
    let shared = Arc::new(Shared {
        metrics,
        body_bytes_max: limits.body_bytes_max(),
        ids: RequestIds::new(),
    });
    routes.layer(ObserveLayer { shared })
}

/// What every route's [`Observe`] shares.
struct Shared {
    metrics: Arc<Metrics>,
    body_bytes_max: usize,
    ids: RequestIds,
}

/// Generates request ids for requests that come without one: a per-process random prefix
/// and a counter, e.g. `3f9a1c0e-000001b2`.
struct RequestIds {
    prefix: u32,
    counter: AtomicU64,
}

impl RequestIds {
    fn new() -> RequestIds {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        RequestIds {
            prefix: nanos ^ std::process::id().rotate_left(16),
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self) -> HeaderValue {
        let count = self.counter.fetch_add(1, Ordering::Relaxed);
        // `{prefix:08x}-{count:08x}` (the count grows past 8 digits), without `format!`.
        let mut id = [0u8; 25];
        let mut end = hex(u64::from(self.prefix), 8, &mut id);
        id[end] = b'-';
        end += 1;
        end += hex(count, 8, &mut id[end..]);
        HeaderValue::from_bytes(&id[..end]).expect("hex digits and a dash are a valid header")
    }
}

/// Writes `value` in lower-case hex, at least `width` digits, to the start of `out`;
/// returns how many bytes it wrote.
fn hex(value: u64, width: usize, out: &mut [u8]) -> usize {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let significant = (64 - value.leading_zeros() as usize).div_ceil(4);
    let len = significant.max(width);
    for (position, byte) in out[..len].iter_mut().enumerate() {
        let shift = 4 * (len - 1 - position);
        *byte = DIGITS[((value >> shift) & 0xf) as usize];
    }
    len
}

/// The layer that makes [`Observe`] services.
#[derive(Clone)]
struct ObserveLayer {
    shared: Arc<Shared>,
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            shared: self.shared.clone(),
            route: Arc::default(),
        }
    }
}

/// Request id, size check, panic catching, metrics and the access log around one route.
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    shared: Arc<Shared>,
    /// The route template and its latency histogram, filled by the first request.
    route: Arc<OnceLock<(Arc<str>, Histogram)>>,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        let (route, seconds) = self
            .route
            .get_or_init(|| {
                let route: Arc<str> = request
                    .extensions()
                    .get::<MatchedPath>()
                    .map_or("unmatched", MatchedPath::as_str)
                    .into();
                let labels = RouteLabels {
                    route: route.clone(),
                };
                let seconds = self
                    .shared
                    .metrics
                    .http_request_seconds
                    .get_or_create(&labels);
                (route, seconds.clone())
            })
            .clone();
        let request_id = match request.headers().get(&REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = self.shared.ids.next();
                request.headers_mut().insert(REQUEST_ID, id.clone());
                id
            }
        };
        let method = method_label(request.method());
        let logged = tracing::enabled!(target: "kvstore::access", tracing::Level::INFO)
            .then(|| request.uri().path().to_string());
        let shared = self.shared.clone();
        let answer = match oversized(&request, shared.body_bytes_max) {
            Some(refusal) => Answer::Ready(Some(refusal)),
            None => {
                // Take the service that was polled ready; leave a clone for the next call.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                match std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(request))) {
                    Ok(future) => Answer::Pending(Box::pin(future)),
                    Err(panic) => Answer::Ready(Some(panic_response(panic))),
                }
            }
        };
        Box::pin(async move {
            let mut response = answer.await?;
            let elapsed = started.elapsed();
            let status = response.status().as_u16();
            seconds.observe(elapsed.as_secs_f64());
            let labels = HttpLabels {
                route,
                method,
                status,
            };
            shared.metrics.http_requests.get_or_create(&labels).inc();
            if let Some(path) = logged {
                tracing::info!(
                    target: "kvstore::access",
                    request_id = request_id.to_str().unwrap_or("-"),
                    method,
                    %path,
                    status,
                    latency_us = elapsed.as_micros() as u64,
                );
            }
            response.headers_mut().insert(REQUEST_ID, request_id);
            Ok(response)
        })
    }
}

/// The response of a route: a future (whose panics become a JSON 500), or known already.
enum Answer<F> {
    Pending(Pin<Box<F>>),
    Ready(Option<Response>),
}

impl<F, E> Future for Answer<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Answer::Pending(future) => {
                match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
                    Ok(poll) => poll,
                    Err(panic) => Poll::Ready(Ok(panic_response(panic))),
                }
            }
            Answer::Ready(response) => Poll::Ready(Ok(response
                .take()
                .expect("an answer is polled to completion once"))),
        }
    }
}

/// The method as a metric label, without allocating.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    }
}

/// Refuses a body whose announced `Content-Length` is over the limit before reading any of
/// it (the handlers' [`Body`](super::handlers::Body) extractor still catches chunked bodies
/// while they are read).
fn oversized(request: &Request, body_bytes_max: usize) -> Option<Response> {
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse::<u64>()
        .ok()?;
    (length > body_bytes_max as u64).then(|| {
        ApiError::body_too_large(&format!(
            "request body is {length} bytes; the limit is {body_bytes_max} bytes"
        ))
        .into_response()
    })
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
        .unwrap_or_else(|| "unknown panic".to_string());
    tracing::error!(%detail, "request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("internal error: {detail}"),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    async fn explode() -> &'static str {
        panic!("handler exploded")
    }

    fn app() -> Router {
        let routes = Router::new()
            .route("/panic", get(explode))
            .route("/fine", get(|| async { "fine" }));
        apply(routes, &Limits::default(), Arc::new(Metrics::new()))
    }

    async fn call(app: &Router, path: &str) -> (StatusCode, String) {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[test]
    fn hex_matches_format() {
        for value in [0, 1, 0xf, 0x10, 0xdead_beef, 0x1_0000_0000, u64::MAX] {
            let mut out = [0u8; 16];
            let len = hex(value, 8, &mut out);
            assert_eq!(
                std::str::from_utf8(&out[..len]).unwrap(),
                format!("{value:08x}")
            );
        }
    }

    #[test]
    fn request_ids_are_prefix_dash_counter() {
        let ids = RequestIds {
            prefix: 0x3f9a_1c0e,
            counter: AtomicU64::new(0x1b2),
        };
        assert_eq!(ids.next(), "3f9a1c0e-000001b2");
        assert_eq!(ids.next(), "3f9a1c0e-000001b3");
        ids.counter.store(u64::MAX, Ordering::Relaxed);
        assert_eq!(ids.next(), "3f9a1c0e-ffffffffffffffff");
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_json_500_and_the_router_keeps_serving() {
        let app = app();
        let (status, body) = call(&app, "/panic").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["ok"], false);
        assert_eq!(json["error"], "internal");
        assert!(
            json["message"]
                .as_str()
                .unwrap()
                .contains("handler exploded"),
            "{json}"
        );
        assert_eq!(
            call(&app, "/fine").await,
            (StatusCode::OK, "fine".to_string())
        );
    }
}
