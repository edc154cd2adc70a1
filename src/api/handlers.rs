//! Route handlers of the client API.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Api, ApiError};
use crate::store::{Command, Condition, Outcome};

type ApiResult = Result<Response, ApiError>;

/// `?consistency=` of reads.
#[derive(Debug, Default, Deserialize)]
pub struct ReadQuery {
    consistency: Option<String>,
}

/// `GET /kv?prefix=&limit=`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    prefix: String,
    limit: Option<usize>,
    consistency: Option<String>,
}

/// `?key=` of the JSON API.
#[derive(Debug, Deserialize)]
pub struct KeyQuery {
    key: Option<String>,
    consistency: Option<String>,
}

/// The answer to `PUT /kv/{key}`.
#[derive(Serialize)]
struct PutAnswer<'a> {
    ok: bool,
    key: &'a str,
    revision: u64,
}

/// Body of `PUT /set`.
#[derive(Debug, Deserialize)]
pub struct SetRequest {
    key: String,
    value: String,
}

impl Api {
    /// Checks a key against the limits.
    fn check_key(&self, key: &str) -> Result<(), ApiError> {
        if key.is_empty() {
            return Err(ApiError::bad_request("key must not be empty"));
        }
        if key.len() > self.limits.key_bytes_max {
            return Err(ApiError::bad_request(format!(
                "key is {} bytes; the limit is {} bytes",
                key.len(),
                self.limits.key_bytes_max
            )));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<(), ApiError> {
        if value.len() > self.limits.value_bytes_max {
            return Err(ApiError::too_large(format!(
                "value is {} bytes; the limit is {} bytes",
                value.len(),
                self.limits.value_bytes_max
            )));
        }
        Ok(())
    }

    /// Waits for a linearizable read barrier unless the read asked for stale consistency.
    async fn read_barrier(&self, consistency: Option<&str>) -> Result<(), ApiError> {
        match consistency {
            None | Some("linearizable") => self
                .node
                .read_barrier(self.limits.request_timeout)
                .await
                .map_err(|error| ApiError::from_node(&self.node, error)),
            Some("stale") => Ok(()),
            Some(other) => Err(ApiError::bad_request(format!(
                "unknown consistency {other:?}; use \"linearizable\" or \"stale\""
            ))),
        }
    }

    /// Replicates a write; a failed condition becomes `412`.
    async fn write(&self, command: Command) -> Result<Outcome, ApiError> {
        let outcome = self
            .node
            .propose(&command, self.limits.request_timeout)
            .await
            .map_err(|error| ApiError::from_node(&self.node, error))?;
        if let Outcome::PreconditionFailed { current } = outcome {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                "the key's current revision does not satisfy the condition",
            )
            .with("revision", json!(current)));
        }
        Ok(outcome)
    }
}

fn path_key(api: &Api, path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(key) = path.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    api.check_key(&key)?;
    Ok(key)
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(query)| query)
        .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
}

/// A request body, read up to [`Limits::body_bytes_max`](super::Limits::body_bytes_max).
///
/// In place of axum's `Bytes` extractor with a `DefaultBodyLimit` layer, which puts the limit
/// into every request's extensions for the extractor to find. Like [`Conditional`] it never
/// rejects, so the handler reports errors in its own order.
pub struct Body(Result<Bytes, ApiError>);

impl FromRequest<Api> for Body {
    type Rejection = std::convert::Infallible;

    async fn from_request(request: Request, api: &Api) -> Result<Self, Self::Rejection> {
        let limit = api.limits.body_bytes_max();
        let limited = http_body_util::Limited::new(request.into_body(), limit);
        let read = http_body_util::BodyExt::collect(limited).await;
        Ok(Body(read.map(|body| body.to_bytes()).map_err(|error| {
            if error.is::<http_body_util::LengthLimitError>() {
                ApiError::body_too_large(&format!(
                    "request body is over the limit of {limit} bytes"
                ))
            } else {
                ApiError::bad_request(format!("failed to read the request body: {error}"))
            }
        })))
    }
}

/// The write condition of a request's `If-Match` / `If-None-Match`, read from the headers
/// in place (the `HeaderMap` extractor would clone every header of every write). It never
/// rejects: the handler reports a bad condition after a bad key, as before.
pub struct Conditional(Result<Condition, ApiError>);

impl<S: Send + Sync> FromRequestParts<S> for Conditional {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Conditional(condition(&parts.headers)))
    }
}

/// Parses `If-Match` / `If-None-Match` into a write condition.
fn condition(headers: &HeaderMap) -> Result<Condition, ApiError> {
    let text = |name: header::HeaderName| -> Result<Option<String>, ApiError> {
        headers
            .get(&name)
            .map(|value| value.to_str().map(|text| text.trim().to_string()))
            .transpose()
            .map_err(|_| ApiError::bad_request(format!("{name} is not valid text")))
    };
    match (text(header::IF_MATCH)?, text(header::IF_NONE_MATCH)?) {
        (None, None) => Ok(Condition::None),
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "use either If-Match or If-None-Match",
        )),
        (Some(tag), None) if tag == "*" => Ok(Condition::Present),
        (Some(tag), None) => tag
            .trim_matches('"')
            .parse()
            .map(Condition::Revision)
            .map_err(|_| {
                ApiError::bad_request(format!("If-Match {tag:?} is not a revision like \"42\""))
            }),
        (None, Some(tag)) if tag == "*" => Ok(Condition::Absent),
        (None, Some(tag)) => Err(ApiError::bad_request(format!(
            "If-None-Match {tag:?}: only * is supported on writes"
        ))),
    }
}

/// `"42"`: a revision as an entity tag, formatted without a `String` on the way.
fn etag(revision: u64) -> HeaderValue {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(revision).as_bytes();
    let mut quoted = [b'"'; 22]; // u64::MAX has 20 digits
    quoted[1..=digits.len()].copy_from_slice(digits);
    HeaderValue::from_bytes(&quoted[..digits.len() + 2]).expect("a quoted number is a valid header")
}

/// `GET /kv/{key}`: the raw value with its revision as ETag.
pub async fn kv_get(
    State(api): State<Api>,
    path: Result<Path<String>, PathRejection>,
    read: Result<Query<ReadQuery>, QueryRejection>,
) -> ApiResult {
    let key = path_key(&api, path)?;
    api.read_barrier(query(read)?.consistency.as_deref())
        .await?;
    let found = api.node.store().get(&key).cloned();
    let versioned = found.ok_or_else(|| ApiError::not_found(format!("key {key:?} not found")))?;
    let headers = [
        (header::ETAG, etag(versioned.revision)),
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        ),
    ];
    Ok((headers, versioned.value).into_response())
}

/// `PUT /kv/{key}`: stores the raw body.
pub async fn kv_put(
    State(api): State<Api>,
    path: Result<Path<String>, PathRejection>,
    Conditional(condition): Conditional,
    Body(body): Body,
) -> ApiResult {
    let key = path_key(&api, path)?;
    let condition = condition?;
    let value = body?;
    api.check_value(&value)?;
    let command = Command::Put {
        key: key.clone(),
        value: value.to_vec(),
        condition,
    };
    let Outcome::Put { revision } = api.write(command).await? else {
        unreachable!("a put that passed its condition yields Outcome::Put")
    };
    // A struct rather than `json!`: no map to build for the hottest answer.
    let body = Json(PutAnswer {
        ok: true,
        key: &key,
        revision,
    });
    Ok(([(header::ETAG, etag(revision))], body).into_response())
}

/// `DELETE /kv/{key}`.
pub async fn kv_delete(
    State(api): State<Api>,
    path: Result<Path<String>, PathRejection>,
    Conditional(condition): Conditional,
) -> ApiResult {
    let key = path_key(&api, path)?;
    let condition = condition?;
    let existed = delete(&api, &key, condition).await?;
    Ok(Json(json!({"ok": true, "key": key, "deleted": existed})).into_response())
}

async fn delete(api: &Api, key: &str, condition: Condition) -> Result<bool, ApiError> {
    let command = Command::Delete {
        key: key.to_string(),
        condition,
    };
    match api.write(command).await? {
        Outcome::Deleted { existed } => Ok(existed),
        other => unreachable!("a delete that passed its condition yields Deleted, not {other:?}"),
    }
}

/// `GET /kv?prefix=P&limit=N`: keys in order.
pub async fn list(
    State(api): State<Api>,
    list: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult {
    let list = query(list)?;
    let limit = list.limit.unwrap_or(api.limits.list_keys_max);
    if limit == 0 || limit > api.limits.list_keys_max {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {}",
            api.limits.list_keys_max
        )));
    }
    api.read_barrier(list.consistency.as_deref()).await?;
    let keys = api.node.store().keys_with_prefix(&list.prefix, limit);
    Ok(Json(json!({"ok": true, "keys": keys})).into_response())
}

/// `/kv/` with no key.
pub async fn empty_key() -> ApiError {
    ApiError::bad_request("key must not be empty: use /kv/{key}")
}

/// `PUT /set {"key","value"}`. The body is parsed as JSON whatever its `Content-Type`
/// says, since `curl -d` sends form encoding unless told otherwise.
pub async fn json_set(State(api): State<Api>, Body(body): Body) -> ApiResult {
    let body = body?;
    let request: SetRequest = serde_json::from_slice(&body)
        .map_err(|error| ApiError::bad_request(format!("invalid JSON body: {error}")))?;
    api.check_key(&request.key)?;
    api.check_value(request.value.as_bytes())?;
    let command = Command::Put {
        key: request.key.clone(),
        value: request.value.into_bytes(),
        condition: Condition::None,
    };
    api.write(command).await?;
    Ok(Json(json!({"ok": true, "message": "stored", "key": request.key})).into_response())
}

fn required_key(api: &Api, key: Option<String>) -> Result<String, ApiError> {
    let key = key.ok_or_else(|| ApiError::bad_request("missing query parameter: key"))?;
    api.check_key(&key)?;
    Ok(key)
}

/// `GET /get?key=K`.
pub async fn json_get(
    State(api): State<Api>,
    params: Result<Query<KeyQuery>, QueryRejection>,
) -> ApiResult {
    let params = query(params)?;
    let key = required_key(&api, params.key)?;
    api.read_barrier(params.consistency.as_deref()).await?;
    let found = api.node.store().get(&key).cloned();
    let versioned = found.ok_or_else(|| ApiError::not_found(format!("key {key:?} not found")))?;
    let value = String::from_utf8(versioned.value.to_vec()).map_err(|_| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_utf8",
            "the value is binary; read it with GET /kv/{key}",
        )
    })?;
    let body = json!({"ok": true, "key": key, "value": value, "revision": versioned.revision});
    Ok(Json(body).into_response())
}

/// `DELETE /delete?key=K`.
pub async fn json_delete(
    State(api): State<Api>,
    params: Result<Query<KeyQuery>, QueryRejection>,
) -> ApiResult {
    let key = required_key(&api, query(params)?.key)?;
    let existed = delete(&api, &key, Condition::None).await?;
    Ok(
        Json(json!({"ok": true, "message": "deleted", "key": key, "deleted": existed}))
            .into_response(),
    )
}

/// `GET /health`: 200 while the node runs, 503 once its driver has stopped.
pub async fn health(State(api): State<Api>) -> ApiResult {
    let status = api.node.status();
    if let Some(reason) = status.failed {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            reason,
        ));
    }
    let body = json!({
        "ok": true,
        "id": api.node.id(),
        "role": status.raft.role.to_string(),
        "term": status.raft.term,
        "leaderId": status.raft.leader,
    });
    Ok(Json(body).into_response())
}

/// `GET /metrics`: Prometheus (OpenMetrics) text.
pub async fn metrics(State(api): State<Api>) -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    (
        [(header::CONTENT_TYPE, content_type)],
        api.node.metrics.encode(),
    )
        .into_response()
}

/// Any other path.
pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

/// A known path with a method it does not serve.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not supported on {}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_is_the_quoted_revision() {
        for revision in [0, 7, 42, 1_000_000, u64::MAX] {
            assert_eq!(etag(revision), format!("\"{revision}\"").as_str());
        }
    }
}
