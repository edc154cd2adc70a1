//! Middleware of the client API: request ids, access log, metrics, panics, body limits.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};

use super::{ApiError, Limits};
use crate::metrics::{HttpLabels, Metrics, RouteLabels};

/// Bytes a JSON body may add around the largest key and value (field names, escaping of a
/// few characters). Values that need heavy escaping should use the raw `/kv` API.
const JSON_OVERHEAD_BYTES_MAX: usize = 64 * 1024;

/// Wraps the routes in all middleware. The first layer added is the innermost.
pub fn apply(routes: Router, limits: &Limits, metrics: Arc<Metrics>) -> Router {
    let body_bytes_max = limits.value_bytes_max + limits.key_bytes_max + JSON_OVERHEAD_BYTES_MAX;
    routes
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn_with_state(
            body_bytes_max,
            refuse_oversized,
        ))
        .layer(axum::middleware::from_fn_with_state(metrics, observe))
        .layer(DefaultBodyLimit::max(body_bytes_max))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(RequestIds::new()))
}

/// Generates request ids for requests that come without one: a per-process random prefix
/// and a counter, e.g. `3f9a1c-000001b2`.
#[derive(Clone)]
pub struct RequestIds {
    prefix: u32,
    counter: Arc<AtomicU64>,
}

impl RequestIds {
    fn new() -> RequestIds {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        RequestIds {
            prefix: nanos ^ std::process::id().rotate_left(16),
            counter: Arc::default(),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        let count = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:08x}-{count:08x}", self.prefix);
        Some(RequestId::new(HeaderValue::from_str(&id).ok()?))
    }
}

/// Logs one line per request (target `kvstore::access`) and records metrics.
///
/// The path and request id are copied out of the request only when the access log is on
/// (`RUST_LOG=...,kvstore::access=warn` turns it off): with it off, a request costs no
/// allocation here beyond the metric labels.
async fn observe(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || "unmatched".to_string(),
        |matched| matched.as_str().to_string(),
    );
    let logged = tracing::enabled!(target: "kvstore::access", tracing::Level::INFO).then(|| {
        let request_id = request
            .headers()
            .get("x-request-id")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("-")
            .to_string();
        (request.uri().path().to_string(), request_id)
    });
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    metrics
        .http_request_seconds
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(elapsed.as_secs_f64());
    metrics
        .http_requests
        .get_or_create(&HttpLabels {
            route,
            method: method.as_str().to_string(),
            status,
        })
        .inc();
    if let Some((path, request_id)) = logged {
        tracing::info!(
            target: "kvstore::access",
            request_id = %request_id,
            %method,
            %path,
            status,
            latency_us = elapsed.as_micros() as u64,
        );
    }
    response
}

/// Refuses a body whose announced `Content-Length` is over the limit before reading any of
/// it (the extractors' limit still catches chunked bodies while they are read).
async fn refuse_oversized(
    State(body_bytes_max): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let announced = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<u64>().ok());
    match announced {
        Some(length) if length > body_bytes_max as u64 => ApiError::too_large(format!(
            "request body is {length} bytes; the limit is {body_bytes_max} bytes"
        ))
        .into_response(),
        _ => next.run(request).await,
    }
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
