//! The client HTTP API (client port), exactly as the table in ARCHITECTURE.md.
//!
//! | request | success |
//! | --- | --- |
//! | `PUT /kv/{key}` (raw value) | `200 {"ok":true,"key":K,"revision":R}`, `ETag: "R"` |
//! | `GET /kv/{key}` | `200` raw value, `ETag: "R"` |
//! | `DELETE /kv/{key}` | `200 {"ok":true,"key":K,"deleted":bool}` |
//! | `GET /kv?prefix=P&limit=N` | `200 {"ok":true,"keys":[...]}` |
//! | `PUT /set` `{"key","value"}` | `200 {"ok":true,"message":"stored","key":K}` |
//! | `GET /get?key=K` | `200 {"ok":true,"key":K,"value":V}` |
//! | `DELETE /delete?key=K` | `200 {"ok":true,"message":"deleted","key":K}` |
//! | `GET /health` | `200 {"ok":true,"id","role","term","leaderId"}` |
//! | `GET /raft/leader`, `/raft/state`, `/raft/status` | JSON |
//! | `GET /metrics` | Prometheus text |
//!
//! Operator routes (`POST /admin/snapshot`) are on the raft port: see [`admin_router`].
//!
//! Writes carry `If-Match: "R"` (only if the current revision is R), `If-Match: *` (only if
//! present) or `If-None-Match: *` (only if absent); a failed condition is
//! `412 precondition_failed` with the current revision. Reads are linearizable (ReadIndex)
//! unless `?consistency=stale`.
//!
//! Every error is `{"ok":false,"error":CODE,"message":TEXT}` ([`ApiError`]): `400
//! bad_request`, `404 not_found`, `409 not_leader` (with `leaderId` and `leader`), `412
//! precondition_failed`, `413 payload_too_large`, `503 unavailable`, `500 internal`.
//!
//! # Middleware ([`middleware`])
//!
//! Request ids (`X-Request-Id`, generated when absent and echoed), one log line per request
//! with its latency, metrics by route and status, a panic in a handler answered as a JSON
//! 500 without taking the node down, and body size limits.

mod admin;
mod error;
mod handlers;
pub mod middleware;
mod status;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, put};

pub use admin::admin_router;
pub use error::ApiError;
pub use status::{status_json, status_router};

use crate::node::NodeHandle;

/// Limits and deadlines of the client API.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Longest key, in bytes. Keys are part of every log entry and of the URL path.
    pub key_bytes_max: usize,
    /// Largest value, in bytes. Every value passes through the log of every replica.
    pub value_bytes_max: usize,
    /// Most keys one prefix listing returns.
    pub list_keys_max: usize,
    /// How long a request may wait for commit or a read index before `503`.
    pub request_timeout: Duration,
}

/// Bytes a JSON body may add around the largest key and value (field names, escaping of a
/// few characters). Values that need heavy escaping should use the raw `/kv` API.
const JSON_OVERHEAD_BYTES_MAX: usize = 64 * 1024;

impl Limits {
    /// The largest request body read: a key and a value in JSON, with room to spare.
    pub fn body_bytes_max(&self) -> usize {
        self.value_bytes_max + self.key_bytes_max + JSON_OVERHEAD_BYTES_MAX
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            key_bytes_max: 4 * 1024,
            value_bytes_max: 1024 * 1024,
            list_keys_max: 10_000,
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// Shared state of the handlers. axum clones it for every request: behind one `Arc`, that
/// is one reference count, not the handle's half a dozen (they showed in profiles).
#[derive(Clone)]
pub struct Api {
    /// The node.
    pub node: Arc<NodeHandle>,
    /// Limits and deadlines.
    pub limits: Arc<Limits>,
}

/// The client-port router with all middleware.
pub fn router(node: NodeHandle, limits: Limits) -> Router {
    let api = Api {
        node: Arc::new(node.clone()),
        limits: Arc::new(limits),
    };
    let routes = Router::new()
        .route("/kv", get(handlers::list))
        .route(
            "/kv/",
            get(handlers::empty_key)
                .put(handlers::empty_key)
                .delete(handlers::empty_key),
        )
        .route(
            "/kv/{*key}",
            get(handlers::kv_get)
                .put(handlers::kv_put)
                .delete(handlers::kv_delete),
        )
        .route("/set", put(handlers::json_set).post(handlers::json_set))
        .route("/get", get(handlers::json_get))
        .route(
            "/delete",
            axum::routing::delete(handlers::json_delete).post(handlers::json_delete),
        )
        .route("/health", get(handlers::health))
        .route("/metrics", get(handlers::metrics))
        .with_state(api.clone())
        .merge(status_router(node.clone()))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed);
    middleware::apply(routes, &api.limits, api.node.metrics.clone())
}
