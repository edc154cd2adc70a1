//! The Rust client: finds the leader, follows `not_leader` hints, retries while an election
//! runs. Used by `kvctl`, the tests and the benchmarks.
//!
//! # Retries
//!
//! A request goes to the last known leader (or the seeds in turn). It is retried, until the
//! client's deadline, when the answer proves the request did nothing:
//!
//! - `409 not_leader` with a hint: at once, against the hinted leader;
//! - `409 not_leader` without a hint, or a connection that could not be made: after a short
//!   backoff, against the next seed.
//!
//! A `503 unavailable` or a broken connection after the request was sent may hide an
//! applied write. What happens next depends on whether sending the request again could
//! change its answer:
//!
//! - reads are retried;
//! - unconditional puts are retried (the same value lands again, and the answer is the same)
//!   unless [`Options::retry_indeterminate`] is off, as the torture harness wants;
//! - conditional writes and deletes are never retried after such an answer: a second try
//!   would answer `412` or `deleted: false` for a write the first one had applied. They end
//!   with [`ClientError::Indeterminate`], which says the outcome is unknown.
//!
//! # Keys in URLs
//!
//! Keys travel in the path of `/kv/{key}`, where URL parsers remove `.` and `..` segments.
//! A key with such a segment is sent with its `/` escaped (`a%2F..%2Fb`), so it stays one
//! segment and the node sees the key as given; a key that is exactly `.` or `..` cannot be
//! sent in a path at all and is refused before anything is sent.

use std::sync::Mutex;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::error::describe;
use crate::store::Condition;

/// Hints followed in a row before backing off: stale hints during an election can point
/// nodes at each other for a moment.
const REDIRECTS_MAX: u32 = 3;

/// How a client behaves.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long one operation may take in all, retries included.
    pub timeout: Duration,
    /// How long one HTTP request may take.
    pub request_timeout: Duration,
    /// Retry operations whose outcome is unknown (see the module doc).
    pub retry_indeterminate: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(6),
            retry_indeterminate: true,
        }
    }
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A conditional write's condition did not hold.
    #[error("precondition failed (current revision: {})", current.map_or("none".to_string(), |r| r.to_string()))]
    PreconditionFailed {
        /// The key's current revision, if it exists.
        current: Option<u64>,
    },
    /// The node refused the request (bad input, too large, ...).
    #[error("{status} {code}: {message}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The error code from the body.
        code: String,
        /// The message from the body.
        message: String,
    },
    /// The outcome is unknown: the write may or may not have been applied.
    #[error("outcome unknown: {0}")]
    Indeterminate(String),
    /// No node could serve the request before the deadline (nothing was applied).
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Read consistency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Linearizable (ReadIndex), the default.
    #[default]
    Linearizable,
    /// The node's local state, possibly stale.
    Stale,
}

/// A value with its revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    /// The value bytes.
    pub value: Vec<u8>,
    /// The revision (raft index of the write).
    pub revision: u64,
}

/// A kvstore client.
pub struct Client {
    seeds: Vec<String>,
    http: reqwest::Client,
    options: Options,
    /// The node that last answered successfully (or was hinted as leader).
    preferred: Mutex<Option<String>>,
}

/// One HTTP answer, read completely.
struct Answer {
    status: StatusCode,
    etag: Option<u64>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn error(&self) -> ClientError {
        let json = self.json();
        let text = |name: &str| {
            json.get(name)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        if self.status == StatusCode::PRECONDITION_FAILED {
            return ClientError::PreconditionFailed {
                current: json.get("revision").and_then(Value::as_u64),
            };
        }
        let message = match text("message") {
            message if message.is_empty() => String::from_utf8_lossy(&self.body).into_owned(),
            message => message,
        };
        ClientError::Rejected {
            status: self.status.as_u16(),
            code: text("error"),
            message,
        }
    }
}

/// Whether a request may be sent again after an answer that leaves its outcome unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Replay {
    /// A read: sending it again changes nothing.
    Read,
    /// An unconditional put: sending it again lands the same value and gives the same
    /// answer; retried if [`Options::retry_indeterminate`] is on.
    Idempotent,
    /// A conditional write or a delete: a second try would answer for the first one's
    /// effect (`412`, `deleted: false`), so it is never sent again.
    Once,
}

/// What one attempt against one node concluded.
enum Attempt {
    Done(Answer),
    Redirect(String),
    RetryElsewhere(String),
    Indeterminate(String),
}

impl Client {
    /// A client for a cluster reachable at any of `seeds` (client URLs).
    pub fn new(seeds: Vec<String>, options: Options) -> Client {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(crate::server::CLIENT_POOL_IDLE)
            .timeout(options.request_timeout)
            .build()
            .expect("building an HTTP client without TLS cannot fail");
        let seeds = seeds
            .into_iter()
            .map(|seed| seed.trim_end_matches('/').to_string())
            .collect();
        Client {
            seeds,
            http,
            options,
            preferred: Mutex::new(None),
        }
    }

    /// The seeds this client was made with.
    pub fn seeds(&self) -> &[String] {
        &self.seeds
    }

    /// Stores `value` under `key`; returns the new revision.
    pub async fn put(
        &self,
        key: &str,
        value: &[u8],
        condition: Condition,
    ) -> Result<u64, ClientError> {
        let path = kv_path(key)?;
        let replay = match condition {
            Condition::None => Replay::Idempotent,
            _ => Replay::Once,
        };
        let answer = self
            .send(
                Method::PUT,
                &path,
                condition_headers(condition),
                value.to_vec(),
                replay,
            )
            .await?;
        answer
            .json()
            .get("revision")
            .and_then(Value::as_u64)
            .ok_or_else(|| ClientError::Rejected {
                status: answer.status.as_u16(),
                code: "bad_response".into(),
                message: "no revision in the answer".into(),
            })
    }

    /// Reads `key`; `None` if it does not exist.
    pub async fn get(
        &self,
        key: &str,
        consistency: Consistency,
    ) -> Result<Option<Versioned>, ClientError> {
        let mut path = kv_path(key)?;
        if consistency == Consistency::Stale {
            path.push_str("?consistency=stale");
        }
        match self
            .send(Method::GET, &path, vec![], vec![], Replay::Read)
            .await
        {
            Ok(answer) => Ok(Some(Versioned {
                revision: answer.etag.unwrap_or(0),
                value: answer.body,
            })),
            Err(ClientError::Rejected { status: 404, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Deletes `key`; returns whether it existed.
    pub async fn delete(&self, key: &str, condition: Condition) -> Result<bool, ClientError> {
        let path = kv_path(key)?;
        let answer = self
            .send(
                Method::DELETE,
                &path,
                condition_headers(condition),
                vec![],
                Replay::Once,
            )
            .await?;
        Ok(answer
            .json()
            .get("deleted")
            .and_then(Value::as_bool)
            .unwrap_or(false))
    }

    /// Keys starting with `prefix`, in order, at most `limit`.
    pub async fn list(
        &self,
        prefix: &str,
        limit: usize,
        consistency: Consistency,
    ) -> Result<Vec<String>, ClientError> {
        let mut path = format!("/kv?prefix={}&limit={limit}", encode_key(prefix));
        if consistency == Consistency::Stale {
            path.push_str("&consistency=stale");
        }
        let answer = self
            .send(Method::GET, &path, vec![], vec![], Replay::Read)
            .await?;
        let keys = answer
            .json()
            .get("keys")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(keys
            .iter()
            .filter_map(|key| key.as_str().map(str::to_string))
            .collect())
    }

    /// The leader's id and client URL, asking the seeds until one knows.
    pub async fn leader(&self) -> Result<(String, String), ClientError> {
        let deadline = tokio::time::Instant::now() + self.options.timeout;
        loop {
            for seed in &self.seeds {
                if let Ok(json) = self.json_at(seed, "/raft/leader").await {
                    let id = json.get("leaderId").and_then(Value::as_str);
                    let url = json.get("leader").and_then(Value::as_str);
                    if let (Some(id), Some(url)) = (id, url) {
                        return Ok((id.to_string(), url.to_string()));
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::Unavailable("no node knows a leader".into()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET path` on one node, as JSON (e.g. `/raft/status`).
    pub async fn json_at(&self, base: &str, path: &str) -> Result<Value, ClientError> {
        let response = self
            .http
            .get(format!("{}{path}", base.trim_end_matches('/')))
            .send()
            .await
            .map_err(|error| ClientError::Unavailable(format!("{base}: {}", describe(&error))))?;
        response
            .json()
            .await
            .map_err(|error| ClientError::Unavailable(format!("{base}: {}", describe(&error))))
    }

    /// `POST path` on one node with an empty body; the JSON answer, or the error it carries.
    pub async fn post_json_at(&self, base: &str, path: &str) -> Result<Value, ClientError> {
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let unavailable = |error: reqwest::Error| {
            ClientError::Unavailable(format!("{base}: {}", describe(&error)))
        };
        let response = self.http.post(url).send().await.map_err(unavailable)?;
        let status = response.status();
        let body = response.bytes().await.map_err(unavailable)?.to_vec();
        let answer = Answer {
            status,
            etag: None,
            body,
        };
        if status.is_success() {
            Ok(answer.json())
        } else {
            Err(answer.error())
        }
    }

    /// Sends a request to the cluster, following hints and retrying as the module doc says.
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
        replay: Replay,
    ) -> Result<Answer, ClientError> {
        let deadline = tokio::time::Instant::now() + self.options.timeout;
        let mut target = self.first_target();
        let mut seed_turn = 0;
        let mut backoff = Duration::from_millis(20);
        let mut redirects = 0;
        let mut last_problem = String::from("no attempt made");
        while tokio::time::Instant::now() < deadline {
            let attempt = self.attempt(&target, &method, path, &headers, &body).await;
            match attempt {
                Attempt::Done(answer) => {
                    *self.preferred.lock().expect("client lock poisoned") = Some(target);
                    return if answer.status.is_success() {
                        Ok(answer)
                    } else {
                        Err(answer.error())
                    };
                }
                Attempt::Redirect(leader) if redirects < REDIRECTS_MAX => {
                    redirects += 1;
                    target = leader;
                    continue;
                }
                Attempt::Redirect(leader) => {
                    // Nodes disagree about the leader (an election is settling): back off.
                    last_problem = format!("{target}: hint to {leader} kept bouncing");
                    redirects = 0;
                }
                Attempt::Indeterminate(problem)
                    if replay == Replay::Once
                        || (replay == Replay::Idempotent && !self.options.retry_indeterminate) =>
                {
                    return Err(ClientError::Indeterminate(problem));
                }
                Attempt::Indeterminate(problem) | Attempt::RetryElsewhere(problem) => {
                    last_problem = problem
                }
            }
            seed_turn += 1;
            target = self.seeds[seed_turn % self.seeds.len()].clone();
            tokio::time::sleep(
                backoff.min(deadline.saturating_duration_since(tokio::time::Instant::now())),
            )
            .await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
        Err(ClientError::Unavailable(last_problem))
    }

    fn first_target(&self) -> String {
        let preferred = self.preferred.lock().expect("client lock poisoned").clone();
        preferred.unwrap_or_else(|| self.seeds[0].clone())
    }

    async fn attempt(
        &self,
        target: &str,
        method: &Method,
        path: &str,
        headers: &[(&'static str, String)],
        body: &[u8],
    ) -> Attempt {
        let mut request = self.http.request(method.clone(), format!("{target}{path}"));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if !body.is_empty() || *method == Method::PUT {
            request = request.body(body.to_vec());
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) if error.is_connect() => {
                return Attempt::RetryElsewhere(format!("{target}: {}", describe(&error)));
            }
            Err(error) => return Attempt::Indeterminate(format!("{target}: {}", describe(&error))),
        };
        let status = response.status();
        let etag = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.trim_matches('"').parse().ok());
        let body = match response.bytes().await {
            Ok(body) => body.to_vec(),
            Err(error) => return Attempt::Indeterminate(format!("{target}: {}", describe(&error))),
        };
        classify(target, Answer { status, etag, body })
    }
}

fn classify(target: &str, answer: Answer) -> Attempt {
    match answer.status {
        StatusCode::CONFLICT => {
            let json = answer.json();
            match json.get("leader").and_then(Value::as_str) {
                Some(leader) if leader.trim_end_matches('/') != target => {
                    Attempt::Redirect(leader.trim_end_matches('/').to_string())
                }
                _ => Attempt::RetryElsewhere(format!("{target}: not leader, leader unknown")),
            }
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            let message = answer
                .json()
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            Attempt::Indeterminate(format!("{target}: 503 {message}"))
        }
        _ => Attempt::Done(answer),
    }
}

fn condition_headers(condition: Condition) -> Vec<(&'static str, String)> {
    match condition {
        Condition::None => vec![],
        Condition::Revision(revision) => vec![("if-match", format!("\"{revision}\""))],
        Condition::Present => vec![("if-match", "*".into())],
        Condition::Absent => vec![("if-none-match", "*".into())],
    }
}

/// The path `/kv/{key}` for `key`, or a `400`-like refusal for a key no URL path can carry
/// (see the module doc).
fn kv_path(key: &str) -> Result<String, ClientError> {
    if key == "." || key == ".." {
        return Err(ClientError::Rejected {
            status: 400,
            code: "bad_request".into(),
            message: format!(
                "the key {key:?} cannot be sent in a URL path (URL parsers drop it); \
                 use a different key"
            ),
        });
    }
    Ok(format!("/kv/{}", encode_key(key)))
}

/// Percent-encodes a key for a URL path or query, keeping unreserved characters, and `/`
/// unless the key has a `.` or `..` segment, which a URL parser would remove: then `/` is
/// escaped too, so the key is one segment that the node decodes back to the key as given.
pub fn encode_key(key: &str) -> String {
    let dot_segment = key
        .split('/')
        .any(|segment| segment == "." || segment == "..");
    let set = if dot_segment { SEGMENT } else { PATH };
    percent_encoding::utf8_percent_encode(key, set).to_string()
}

/// Everything but unreserved characters (RFC 3986 section 2.3) is escaped in one segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A path may keep its `/`.
const PATH: &percent_encoding::AsciiSet = &SEGMENT.remove(b'/');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_keys_for_urls() {
        assert_eq!(encode_key("a/b-c_d.e~f"), "a/b-c_d.e~f");
        assert_eq!(encode_key("sp ace?&=#%"), "sp%20ace%3F%26%3D%23%25");
        assert_eq!(encode_key("é"), "%C3%A9");
        // Dot segments would be removed by the URL parser: `/` is escaped instead.
        assert_eq!(encode_key("a/../b"), "a%2F..%2Fb");
        assert_eq!(encode_key("./x"), ".%2Fx");
        assert_eq!(encode_key("x/."), "x%2F.");
        assert_eq!(encode_key("a/..b/.c"), "a/..b/.c");
        assert!(matches!(
            kv_path(".."),
            Err(ClientError::Rejected { status: 400, .. })
        ));
        assert!(kv_path(".").is_err());
        assert_eq!(kv_path("..x").unwrap(), "/kv/..x");
    }

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            etag: None,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn follows_hints_and_classifies_failures() {
        let hinted = answer(
            409,
            r#"{"ok":false,"error":"not_leader","leaderId":"n2","leader":"http://b:2"}"#,
        );
        assert!(
            matches!(classify("http://a:1", hinted), Attempt::Redirect(url) if url == "http://b:2")
        );
        let unknown = answer(
            409,
            r#"{"ok":false,"error":"not_leader","leaderId":null,"leader":null}"#,
        );
        assert!(matches!(
            classify("http://a:1", unknown),
            Attempt::RetryElsewhere(_)
        ));
        assert!(matches!(
            classify("http://a:1", answer(503, "{}")),
            Attempt::Indeterminate(_)
        ));
        assert!(matches!(
            classify("http://a:1", answer(404, "{}")),
            Attempt::Done(_)
        ));
    }

    #[test]
    fn maps_error_bodies() {
        let failed = answer(
            412,
            r#"{"ok":false,"error":"precondition_failed","revision":7}"#,
        );
        assert!(matches!(
            failed.error(),
            ClientError::PreconditionFailed { current: Some(7) }
        ));
        let bad = answer(
            400,
            r#"{"ok":false,"error":"bad_request","message":"key must not be empty"}"#,
        );
        assert!(
            matches!(bad.error(), ClientError::Rejected { status: 400, ref code, .. } if code == "bad_request")
        );
    }

    /// The path reqwest sends for `path`, after its URL parser has had its way.
    fn sent_path(path: &str) -> String {
        let url = reqwest::Url::parse(&format!("http://h:1{path}")).unwrap();
        url.path().to_string()
    }

    #[test]
    fn keys_with_dot_segments_survive_url_parsing() {
        for key in ["a/../b", "../x", "x/..", "./y", "a/./b", "a//b", "a/b/"] {
            let path = kv_path(key).unwrap();
            let sent = sent_path(&path);
            let decoded = percent_encoding::percent_decode_str(sent.strip_prefix("/kv/").unwrap())
                .decode_utf8()
                .unwrap();
            assert_eq!(decoded, key, "{key:?} was sent as {sent:?}");
        }
    }

    /// A node that answers every request `503 unavailable`; counts the requests.
    async fn unavailable_node() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let count = std::sync::Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0; 4096];
                    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    seen.fetch_add(1, Ordering::SeqCst);
                    let body = r#"{"ok":false,"error":"unavailable","message":"may have applied"}"#;
                    let answer = format!(
                        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        (url, count)
    }

    #[tokio::test]
    async fn never_resends_a_conditional_write_or_delete_whose_outcome_is_unknown() {
        use std::sync::atomic::Ordering;
        let options = Options {
            // Long enough that a retried request is surely sent a second time.
            timeout: Duration::from_millis(1500),
            request_timeout: Duration::from_millis(500),
            retry_indeterminate: true,
        };
        let (url, count) = unavailable_node().await;
        let client = Client::new(vec![url], options);
        for condition in [
            Condition::Revision(3),
            Condition::Present,
            Condition::Absent,
        ] {
            count.store(0, Ordering::SeqCst);
            let result = client.put("k", b"v", condition).await;
            assert!(
                matches!(result, Err(ClientError::Indeterminate(_))),
                "{condition:?}: {result:?}"
            );
            assert_eq!(
                count.load(Ordering::SeqCst),
                1,
                "{condition:?} was sent again"
            );
        }
        for condition in [Condition::None, Condition::Revision(3)] {
            count.store(0, Ordering::SeqCst);
            let result = client.delete("k", condition).await;
            assert!(matches!(result, Err(ClientError::Indeterminate(_))));
            assert_eq!(count.load(Ordering::SeqCst), 1, "delete was sent again");
        }
        // An unconditional put and a read are safe to send again, until the deadline.
        count.store(0, Ordering::SeqCst);
        let result = client.put("k", b"v", Condition::None).await;
        assert!(
            matches!(result, Err(ClientError::Unavailable(_))),
            "{result:?}"
        );
        assert!(count.load(Ordering::SeqCst) >= 2);
        count.store(0, Ordering::SeqCst);
        let result = client.get("k", Consistency::Linearizable).await;
        assert!(
            matches!(result, Err(ClientError::Unavailable(_))),
            "{result:?}"
        );
        assert!(count.load(Ordering::SeqCst) >= 2);
    }
}
