//! Operator routes on the raft port (not the client port: they are for operators, not
//! clients, and the raft port belongs on a private network).
//!
//! | request | answer |
//! | --- | --- |
//! | `POST /admin/snapshot` | takes a snapshot now; `200 {"ok":true,"index","term","bytes","keys","path"}` once durable |

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

use super::ApiError;
use crate::node::NodeHandle;

/// How long `POST /admin/snapshot` waits for the snapshot to be durable.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(120);

/// The operator routes.
pub fn admin_router(node: NodeHandle) -> Router {
    Router::new()
        .route("/admin/snapshot", post(snapshot))
        .with_state(node)
}

async fn snapshot(State(node): State<NodeHandle>) -> Response {
    match node.take_snapshot(SNAPSHOT_TIMEOUT).await {
        Ok(info) => Json(json!({
            "ok": true,
            "index": info.meta.index,
            "term": info.meta.term,
            "bytes": info.file_bytes,
            "keys": info.key_count,
            "path": info.path.display().to_string(),
        }))
        .into_response(),
        Err(error) => ApiError::from_node(&node, error).into_response(),
    }
}
