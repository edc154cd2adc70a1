//! JSON errors of the client API.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::error::Error;
use crate::node::NodeHandle;

/// An error answer: `{"ok":false,"error":CODE,"message":TEXT, ...extra}`.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The machine-readable code, e.g. `not_leader`.
    pub code: &'static str,
    /// A human-readable sentence.
    pub message: String,
    /// Extra fields (e.g. `leaderId`, `revision`).
    pub extra: Map<String, Value>,
}

impl ApiError {
    /// An error with no extra fields.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
        }
    }

    /// `400 bad_request`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// `404 not_found`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// `413 payload_too_large`.
    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// `413 payload_too_large` for a request body over
    /// [`Limits::body_bytes_max`](super::Limits::body_bytes_max), found from its
    /// `Content-Length` or while it is read. The body limit is not the value limit, so the
    /// message says what it is made of.
    pub fn body_too_large(detail: &str) -> ApiError {
        ApiError::too_large(format!(
            "{detail} (the key and value limits plus {} KiB for a JSON body, escapes included)",
            super::JSON_OVERHEAD_BYTES_MAX / 1024
        ))
    }

    /// Adds an extra field.
    pub fn with(mut self, name: &str, value: Value) -> ApiError {
        self.extra.insert(name.to_string(), value);
        self
    }

    /// Maps a node error to its HTTP answer; `not_leader` gets the leader's id and URL.
    pub fn from_node(node: &NodeHandle, error: Error) -> ApiError {
        match error {
            Error::NotLeader { leader } => {
                let url = leader.as_deref().and_then(|id| node.client_url(id));
                ApiError::new(StatusCode::CONFLICT, "not_leader", "not leader")
                    .with("leaderId", json!(leader))
                    .with("leader", json!(url))
            }
            Error::Unavailable(message) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            Error::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "node is shutting down; a write in flight may or may not have been applied",
            ),
            Error::InvalidInput(message) => ApiError::bad_request(message),
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                other.to_string(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("ok".into(), json!(false));
        body.insert("error".into(), json!(self.code));
        body.insert("message".into(), json!(self.message));
        body.extend(self.extra);
        (self.status, Json(Value::Object(body))).into_response()
    }
}
