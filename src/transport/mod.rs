//! Peer RPC on the raft port: the routes other nodes call, and one sender per peer.
//!
//! The raft core speaks in one-way messages (a response is just another message), so the
//! transport is one-way too. Each node keeps one long-lived stream to each peer
//! (`GET /raft/stream`, upgraded to raw framed batches: [`stream`]) and writes every
//! message for that peer into it; the peer's answers travel back on its own stream in the
//! other direction, as etcd's rafthttp streams do.
//!
//! # Why a stream, not a POST per batch
//!
//! The first transport POSTed each batch to the routes below and waited for the `204`.
//! That cost, per batch and per direction, an HTTP request through reqwest and hyper on
//! both sides, a hop to the client connection's task and back, and it allowed one request
//! in flight per peer, so a batch waited for the previous batch's `204`. Under 64 writing
//! clients a follower spent a fifth of a core on that alone. A stream costs one `write` per
//! batch and one `read` per few batches, with no answers. The routes below still accept
//! the same envelopes, checked the same way. A node sends only snapshot chunks and the
//! `Snapshot` message after them as POSTs; the others serve tools and the hostile-input
//! tests. They do not make a mixed-version cluster work: a node of the previous version
//! answers `404` to the stream upgrade, so a new node cannot reach it.
//!
//! # Routes (raft port)
//!
//! | route | carries |
//! | --- | --- |
//! | `GET /raft/stream` (upgrade) | every message from the connecting peer, framed |
//! | `POST /raft/appendentries` | Append, heartbeats and their responses |
//! | `POST /raft/requestvote` | Vote and pre-vote requests and responses |
//! | `POST /raft/readindex` | a follower's ReadIndex request and the leader's answer |
//! | `POST /raft/installsnapshot` | snapshot offers and their responses |
//! | `POST /raft/installsnapshot/chunk` | snapshot data (`transport/snapshot.rs`) |
//! | `GET /raft/status` | the node's raft status (JSON), as on the client port |
//!
//! Each POST carries the sender's cluster id and node id in the headers
//! `X-Kvstore-Cluster` and `X-Kvstore-From`, as the stream handshake does, and its body is
//! a postcard-encoded [`Envelope`]: the cluster id, the sender's id and client URL, and the
//! messages. A receiver checks the headers before it reads the body: it rejects (400) a
//! POST without them and (403) one from another cluster or from a node that is not a
//! member, so a stranger cannot make it wait for or buffer a body of up to
//! [`ENVELOPE_BYTES_MAX`]; an admitted body has [`BODY_TIMEOUT`] to arrive. It then rejects
//! (400) an envelope that names another sender or cluster than its headers, and messages
//! that do not belong to the route or are not from the sender to it. The sender's client
//! URL is recorded so that a follower can point clients at the leader (`409 not_leader`).
//!
//! # Senders
//!
//! One task per peer owns a bounded queue of batches ([`PEER_QUEUE_BATCHES_MAX`]) and the
//! stream. Nothing on the write path waits on the network: the driver and the WAL thread
//! `try_send` one batch per peer per `Ready`, and a full queue drops the batch (Raft
//! recovers from lost messages by retrying). The task writes everything queued since its
//! last write as one frame. A dead or slow peer only ever stalls its own task.
//!
//! Writing each frame straight into the socket from the driver or the WAL thread, with a
//! non-blocking write and the task only for leftovers, was tried: it saved a task wake-up
//! per batch but measured no faster (puts and reads within noise, one-client latency
//! slightly worse), so the simpler queue stayed.
//!
//! # Fault switch (tests only)
//!
//! Started with `--test-faults`, a node serves `POST /test/partition` on the raft port with
//! a JSON body `{"blocked":["n2",...]}`: it then drops every message to and from those
//! peers until the list is replaced (an empty list heals). This gives tests real, symmetric
//! partitions between processes without root. Without the flag the route does not exist.
//!
//! # Implementation caveats
//!
//! - Plain HTTP: peer traffic is neither encrypted nor authenticated beyond the cluster id
//!   check. Run the raft port on a private network.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::metrics::{Metrics, PeerLabels};
use crate::raft::{Body, Message, NodeId, Term};
use crate::snapshot::SnapshotInfo;

mod snapshot;
pub mod stream;

pub use snapshot::{CHUNK_PATH, ChunkEnvelope, SnapshotReceiver};
pub use stream::STREAM_PATH;

/// Batches (one per `Ready` and peer) queued per peer before new ones are dropped. Large
/// enough to absorb the readies of a slow write or a reconnect; a few MiB at most (the core
/// caps an append at 1 MiB and keeps at most 64 in flight per peer).
pub const PEER_QUEUE_BATCHES_MAX: usize = 1024;

/// Largest envelope a node accepts on the raft port: an append batch (the raft core caps its
/// payload at `append_bytes_max`, 1 MiB by default) plus one entry of the largest value.
pub const ENVELOPE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// How long a raft-port POST's body may take to arrive once its headers are admitted: a
/// chunk is 1 MiB, an envelope at most [`ENVELOPE_BYTES_MAX`]; either crosses a working
/// link well within this.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one snapshot-related POST may take before it is given up.
const PEER_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The body of every raft-port POST.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender's cluster id; must match the receiver's.
    pub cluster_id: String,
    /// The sending node.
    pub from: NodeId,
    /// The sender's client URL (for `not_leader` hints).
    pub from_client_url: String,
    /// The messages, all addressed to the receiver.
    pub messages: Vec<Message>,
}

/// Which raft-port route a message travels on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Route {
    /// `/raft/appendentries`
    AppendEntries,
    /// `/raft/requestvote`
    RequestVote,
    /// `/raft/readindex`
    ReadIndex,
    /// `/raft/installsnapshot`
    InstallSnapshot,
}

impl Route {
    /// The route a message belongs to.
    pub fn of(body: &Body) -> Route {
        match body {
            Body::Append { .. }
            | Body::AppendResponse { .. }
            | Body::Heartbeat { .. }
            | Body::HeartbeatResponse { .. } => Route::AppendEntries,
            Body::PreVote { .. }
            | Body::PreVoteResponse { .. }
            | Body::Vote { .. }
            | Body::VoteResponse { .. } => Route::RequestVote,
            Body::ReadIndex { .. } | Body::ReadIndexResponse { .. } => Route::ReadIndex,
            Body::Snapshot { .. } | Body::SnapshotResponse { .. } => Route::InstallSnapshot,
        }
    }

    /// The URL path of the route.
    pub fn path(self) -> &'static str {
        match self {
            Route::AppendEntries => "/raft/appendentries",
            Route::RequestVote => "/raft/requestvote",
            Route::ReadIndex => "/raft/readindex",
            Route::InstallSnapshot => "/raft/installsnapshot",
        }
    }
}

/// What the transport knows about the cluster: who is a member and where to reach them.
pub struct Directory {
    /// This node's id.
    pub id: NodeId,
    /// The cluster id every envelope must carry.
    pub cluster_id: String,
    /// This node's client URL, sent with every envelope.
    pub client_url: String,
    /// Raft URLs of the other members.
    pub peer_raft_urls: BTreeMap<NodeId, String>,
    /// Client URLs of members, learned from their envelopes (or derived until then).
    client_urls: RwLock<BTreeMap<NodeId, String>>,
    /// Peers cut off by the test fault switch (see the module doc).
    blocked: RwLock<BTreeSet<NodeId>>,
}

impl Directory {
    /// A directory for `id` with the given peers. Until a peer's client URL is learned, it
    /// is guessed as its raft URL with the port lowered by 1000 (the default layout).
    pub fn new(
        id: NodeId,
        cluster_id: String,
        client_url: String,
        peer_raft_urls: BTreeMap<NodeId, String>,
    ) -> Directory {
        let mut client_urls: BTreeMap<NodeId, String> = peer_raft_urls
            .iter()
            .filter_map(|(peer, url)| Some((peer.clone(), guess_client_url(url)?)))
            .collect();
        client_urls.insert(id.clone(), client_url.clone());
        Directory {
            id,
            cluster_id,
            client_url,
            peer_raft_urls,
            client_urls: RwLock::new(client_urls),
            blocked: RwLock::default(),
        }
    }

    /// Whether the test fault switch cuts this node off from `peer`.
    pub fn is_blocked(&self, peer: &str) -> bool {
        self.blocked
            .read()
            .expect("directory lock poisoned")
            .contains(peer)
    }

    /// Replaces the set of peers the test fault switch cuts off.
    pub fn set_blocked(&self, peers: BTreeSet<NodeId>) {
        tracing::warn!(?peers, "test fault switch: blocking peers");
        *self.blocked.write().expect("directory lock poisoned") = peers;
    }

    /// The client URL of a member, if known.
    pub fn client_url(&self, id: &str) -> Option<String> {
        self.client_urls
            .read()
            .expect("directory lock poisoned")
            .get(id)
            .cloned()
    }

    /// Whether `id` is another member of the cluster.
    pub fn is_peer(&self, id: &str) -> bool {
        self.peer_raft_urls.contains_key(id)
    }

    fn learn_client_url(&self, id: &str, url: &str) {
        if self.client_url(id).as_deref() == Some(url) {
            return;
        }
        self.client_urls
            .write()
            .expect("directory lock poisoned")
            .insert(id.to_string(), url.to_string());
    }
}

/// `http://host:9081` -> `http://host:8081`.
fn guess_client_url(raft_url: &str) -> Option<String> {
    let (base, port) = raft_url.trim_end_matches('/').rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    Some(format!("{base}:{}", port.checked_sub(1000)?))
}

/// Handles to the per-peer sender tasks. Shared by the driver and the WAL thread.
pub struct Peers {
    senders: BTreeMap<NodeId, mpsc::Sender<Vec<Message>>>,
    metrics: Arc<Metrics>,
    directory: Arc<Directory>,
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
    streams: Arc<snapshot::SnapshotStreams>,
    /// The term this node leads, 0 when it does not (set by the driver): a snapshot stream
    /// stops when it is no longer its sender's.
    leading: Arc<AtomicU64>,
}

impl Peers {
    /// Spawns one sender task per peer on the current tokio runtime.
    pub fn spawn(
        directory: Arc<Directory>,
        metrics: Arc<Metrics>,
        runtime: &tokio::runtime::Handle,
    ) -> Peers {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(2)
            .pool_idle_timeout(crate::server::CLIENT_POOL_IDLE)
            .timeout(PEER_REQUEST_TIMEOUT)
            .build()
            .expect("building an HTTP client without TLS cannot fail");
        let mut senders = BTreeMap::new();
        for (peer, url) in &directory.peer_raft_urls {
            let (sender, receiver) = mpsc::channel(PEER_QUEUE_BATCHES_MAX);
            let task = stream::PeerTask {
                peer: peer.clone(),
                authority: authority(url),
                directory: directory.clone(),
                metrics: metrics.clone(),
            };
            runtime.spawn(task.run(receiver));
            senders.insert(peer.clone(), sender);
        }
        let streams = Arc::new(snapshot::SnapshotStreams::new());
        Peers {
            senders,
            metrics,
            directory,
            http,
            runtime: runtime.clone(),
            streams,
            leading: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Tells the snapshot streams which term this node leads now (`None`: it follows or
    /// campaigns). The driver calls it after every iteration.
    pub fn set_leading(&self, term: Option<Term>) {
        self.leading.store(term.unwrap_or(0), Ordering::Relaxed);
    }

    /// Streams the snapshot `info` to the recipient of `message` (the raft core's `Snapshot`
    /// message) in the background, then delivers the message (protocol:
    /// `transport/snapshot.rs`). Does nothing if a stream to that peer is already running.
    pub fn stream_snapshot(&self, message: Message, info: SnapshotInfo) {
        let peer = message.to.clone();
        let Some(raft_url) = self.directory.peer_raft_urls.get(&peer).cloned() else {
            return;
        };
        if self.directory.is_blocked(&peer) || !self.streams.start(&peer) {
            return;
        }
        tracing::info!(%peer, index = info.meta.index, bytes = info.file_bytes, "streaming snapshot");
        // Only a leader sends a snapshot, in the term the message carries: so it leads that
        // term now, even if the driver has not said so yet (it does after its iteration,
        // and the task below may start first on another worker).
        self.leading.store(message.term, Ordering::Relaxed);
        let (directory, http, streams, leading) = (
            self.directory.clone(),
            self.http.clone(),
            self.streams.clone(),
            self.leading.clone(),
        );
        self.runtime.spawn(async move {
            let url = raft_url.trim_end_matches('/').to_string();
            match snapshot::stream(directory, http, url, info, message, &leading).await {
                Ok(()) => tracing::info!(%peer, "snapshot sent"),
                Err(error) => tracing::warn!(%peer, %error, "snapshot stream abandoned"),
            }
            streams.finish(&peer);
        });
    }

    /// Queues messages for their recipients without waiting: one batch per recipient, in
    /// order. A batch is dropped if its queue is full; a message to an unknown node is
    /// dropped with a warning.
    pub fn send(&self, messages: Vec<Message>) {
        let mut batches: BTreeMap<&NodeId, Vec<Message>> = BTreeMap::new();
        for message in messages {
            match self.senders.get_key_value(&message.to) {
                Some((peer, _)) => batches.entry(peer).or_default().push(message),
                None => tracing::warn!(to = %message.to, "dropping message to unknown node"),
            }
        }
        for (peer, batch) in batches {
            let count = batch.len() as u64;
            if self.senders[peer].try_send(batch).is_err() {
                self.metrics
                    .peer_messages_dropped
                    .get_or_create(&PeerLabels { peer: peer.clone() })
                    .inc_by(count);
            }
        }
    }
}

/// `http://host:9081/` -> `host:9081`, what a TCP connect takes.
fn authority(raft_url: &str) -> String {
    let rest = raft_url
        .strip_prefix("http://")
        .unwrap_or(raft_url)
        .trim_end_matches('/');
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// Where the raft-port server delivers accepted messages, a batch at a time. Returns false
/// if the driver's queue is full (a POST gets a 503; Raft retries later).
pub type Deliver = Arc<dyn Fn(Vec<Message>) -> bool + Send + Sync>;

#[derive(Clone)]
struct ServerState {
    directory: Arc<Directory>,
    deliver: Deliver,
    snapshots: Arc<SnapshotReceiver>,
    inbound: Arc<stream::Inbound>,
}

/// Body of `POST /test/partition`.
#[derive(Debug, Deserialize)]
struct Partition {
    blocked: BTreeSet<NodeId>,
}

/// The raft-port router. `status` serves `GET /raft/status`; `test_faults` adds the fault
/// switch route (see the module doc).
pub fn router(
    directory: Arc<Directory>,
    deliver: Deliver,
    snapshots: Arc<SnapshotReceiver>,
    status: Router,
    test_faults: bool,
) -> Router {
    let state = ServerState {
        directory,
        deliver,
        snapshots,
        inbound: Arc::default(),
    };
    let mut router = Router::new();
    if test_faults {
        router =
            router.route(
                "/test/partition",
                post(
                    |State(state): State<ServerState>,
                     axum::Json(partition): axum::Json<Partition>| async move {
                        state.directory.set_blocked(partition.blocked);
                        StatusCode::NO_CONTENT
                    },
                ),
            );
    }
    let route = |route: Route| {
        post(
            move |State(state): State<ServerState>, Sender(from): Sender, body: Bytes| async move {
                receive(&state, route, &from, &body)
            },
        )
    };
    // The POST routes admit a request on its headers alone, before its body is read, and
    // give the body BODY_TIMEOUT to arrive: a stranger cannot make a node buffer 64 MiB.
    let posts = Router::new()
        .route(Route::AppendEntries.path(), route(Route::AppendEntries))
        .route(Route::RequestVote.path(), route(Route::RequestVote))
        .route(Route::ReadIndex.path(), route(Route::ReadIndex))
        .route(Route::InstallSnapshot.path(), route(Route::InstallSnapshot))
        .route(CHUNK_PATH, post(receive_chunk))
        .route_layer(RequestBodyTimeoutLayer::new(BODY_TIMEOUT))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), admit));
    router
        .merge(posts)
        .route(
            STREAM_PATH,
            get(
                |State(state): State<ServerState>, request: Request| async move {
                    stream::accept(state.directory, state.deliver, state.inbound, request)
                },
            ),
        )
        .route("/raft/health", get(|| async { StatusCode::NO_CONTENT }))
        .layer(DefaultBodyLimit::max(ENVELOPE_BYTES_MAX))
        .with_state(state)
        .merge(status)
}

/// The member a raft-port POST says it is from ([`stream::HEADER_FROM`]), as [`admit`]
/// checked it.
#[derive(Clone)]
struct Sender(NodeId);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Sender {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Sender, Self::Rejection> {
        parts.extensions.get::<Sender>().cloned().ok_or((
            StatusCode::INTERNAL_SERVER_ERROR,
            "request was not admitted",
        ))
    }
}

/// Admits a raft-port POST on its headers ([`stream::HEADER_CLUSTER`] and
/// [`stream::HEADER_FROM`], as on the stream handshake) before anything reads its body:
/// 400 without them, 403 from another cluster or a non-member, 503 across the test
/// partition. The body's envelope must then name the same sender ([`receive`]).
async fn admit(
    State(state): State<ServerState>,
    mut request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match admitted(&state.directory, request.headers()) {
        Ok(from) => {
            request.extensions_mut().insert(Sender(from));
            next.run(request).await
        }
        Err(rejection) => {
            tracing::debug!(reason = %rejection.1, "refused a raft-port request");
            rejection.into_response()
        }
    }
}

/// The text of header `name` (400 if it is missing or not visible ASCII).
fn header_text<'a>(
    headers: &'a axum::http::HeaderMap,
    name: &str,
) -> Result<&'a str, (StatusCode, String)> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| (StatusCode::BAD_REQUEST, format!("missing header {name}")))
}

/// The sender a raft-port POST's headers (or a stream handshake's) name, if it may talk to
/// this node.
fn admitted(
    directory: &Directory,
    headers: &axum::http::HeaderMap,
) -> Result<NodeId, (StatusCode, String)> {
    let cluster_id = header_text(headers, stream::HEADER_CLUSTER)?;
    let from = header_text(headers, stream::HEADER_FROM)?;
    check_sender(directory, cluster_id, from)?;
    if directory.is_blocked(from) {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "partitioned by the test fault switch".into(),
        ));
    }
    Ok(from.to_string())
}

fn receive(state: &ServerState, route: Route, from: &str, body: &[u8]) -> (StatusCode, String) {
    let envelope: Envelope = match postcard::from_bytes(body) {
        Ok(envelope) => envelope,
        Err(error) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("undecodable envelope: {error}"),
            );
        }
    };
    if let Err(rejection) = validate(&state.directory, route, from, &envelope) {
        tracing::warn!(from = %envelope.from, reason = %rejection.1, "rejected raft envelope");
        return rejection;
    }
    state
        .directory
        .learn_client_url(&envelope.from, &envelope.from_client_url);
    if !(state.deliver)(envelope.messages) {
        return (StatusCode::SERVICE_UNAVAILABLE, "driver queue full".into());
    }
    (StatusCode::NO_CONTENT, String::new())
}

/// `POST /raft/installsnapshot/chunk`: writes a chunk through and answers the next offset.
async fn receive_chunk(
    State(state): State<ServerState>,
    Sender(from): Sender,
    body: Bytes,
) -> (StatusCode, Vec<u8>) {
    let envelope: ChunkEnvelope = match postcard::from_bytes(&body) {
        Ok(envelope) => envelope,
        Err(error) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("undecodable chunk: {error}").into_bytes(),
            );
        }
    };
    if let Err((status, reason)) = check_envelope(
        &state.directory,
        &from,
        &envelope.cluster_id,
        &envelope.from,
    ) {
        return (status, reason.into_bytes());
    }
    let receiver = state.snapshots.clone();
    let accepted =
        tokio::task::spawn_blocking(move || receiver.accept(&envelope.meta, &envelope.chunk)).await;
    match accepted {
        Ok(Ok(next)) => (
            StatusCode::OK,
            postcard::to_allocvec(&next).expect("encoding a u64 cannot fail"),
        ),
        Ok(Err(error)) => {
            tracing::warn!(%error, "snapshot chunk refused");
            (StatusCode::BAD_REQUEST, error.to_string().into_bytes())
        }
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            error.to_string().into_bytes(),
        ),
    }
}

/// Whether `from` of cluster `cluster_id` may talk to this node (403 otherwise).
fn check_sender(
    directory: &Directory,
    cluster_id: &str,
    from: &str,
) -> Result<(), (StatusCode, String)> {
    if cluster_id != directory.cluster_id {
        let reason = format!(
            "cluster id {cluster_id:?} does not match this node's {:?}",
            directory.cluster_id
        );
        return Err((StatusCode::FORBIDDEN, reason));
    }
    if !directory.is_peer(from) {
        return Err((
            StatusCode::FORBIDDEN,
            format!("{from:?} is not a member of this cluster"),
        ));
    }
    Ok(())
}

/// The first of `messages` that is not from `from` to this node, if any: a sender speaks
/// only for itself, and only to us.
fn misaddressed<'a>(
    directory: &Directory,
    from: &str,
    messages: &'a [Message],
) -> Option<&'a Message> {
    messages
        .iter()
        .find(|message| message.from != from || message.to != directory.id)
}

/// Whether an envelope's sender fields match the headers [`admit`] checked (`from`).
fn check_envelope(
    directory: &Directory,
    from: &str,
    envelope_cluster_id: &str,
    envelope_from: &str,
) -> Result<(), (StatusCode, String)> {
    if envelope_from != from || envelope_cluster_id != directory.cluster_id {
        return Err((
            StatusCode::BAD_REQUEST,
            format!(
                "envelope from {envelope_from:?} of {envelope_cluster_id:?} does not match its headers"
            ),
        ));
    }
    Ok(())
}

fn validate(
    directory: &Directory,
    route: Route,
    from: &str,
    envelope: &Envelope,
) -> Result<(), (StatusCode, String)> {
    check_envelope(directory, from, &envelope.cluster_id, &envelope.from)?;
    if misaddressed(directory, &envelope.from, &envelope.messages).is_some() {
        return Err((
            StatusCode::BAD_REQUEST,
            "message not from sender or not for this node".into(),
        ));
    }
    for message in &envelope.messages {
        if Route::of(&message.body) != route {
            return Err((
                StatusCode::BAD_REQUEST,
                format!("message does not belong on {}", route.path()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_client_url_from_raft_url() {
        assert_eq!(
            guess_client_url("http://127.0.0.1:9081").as_deref(),
            Some("http://127.0.0.1:8081")
        );
        assert_eq!(
            guess_client_url("http://kv1:9080/").as_deref(),
            Some("http://kv1:8080")
        );
        assert_eq!(guess_client_url("http://kv1:80"), None);
        assert_eq!(guess_client_url("nonsense"), None);
    }

    fn directory() -> Directory {
        let peers = BTreeMap::from([("n2".to_string(), "http://127.0.0.1:9082".to_string())]);
        Directory::new(
            "n1".into(),
            "c1".into(),
            "http://127.0.0.1:8081".into(),
            peers,
        )
    }

    fn envelope(cluster_id: &str, from: &str) -> Envelope {
        Envelope {
            cluster_id: cluster_id.into(),
            from: from.into(),
            from_client_url: "http://x:1".into(),
            messages: vec![],
        }
    }

    #[test]
    fn authority_is_host_and_port() {
        assert_eq!(authority("http://127.0.0.1:9081"), "127.0.0.1:9081");
        assert_eq!(authority("http://kv1:9080/"), "kv1:9080");
        assert_eq!(authority("http://kv1:9080/base/path"), "kv1:9080");
    }

    #[test]
    fn rejects_foreign_cluster_and_unknown_sender() {
        let directory = directory();
        assert!(check_sender(&directory, "c1", "n2").is_ok());
        let (status, reason) = check_sender(&directory, "c2", "n2").unwrap_err();
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(reason.contains("cluster id"), "{reason}");
        let (status, _) = check_sender(&directory, "c1", "n9").unwrap_err();
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    /// A member admitted on its headers cannot slip in an envelope that names another
    /// sender or cluster.
    #[test]
    fn an_envelope_must_name_the_sender_its_headers_named() {
        let directory = directory();
        let route = Route::AppendEntries;
        assert!(validate(&directory, route, "n2", &envelope("c1", "n2")).is_ok());
        for (from, envelope) in [("n2", envelope("c2", "n2")), ("n2", envelope("c1", "n1"))] {
            let (status, reason) = validate(&directory, route, from, &envelope).unwrap_err();
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert!(reason.contains("does not match its headers"), "{reason}");
        }
    }

    #[test]
    fn learns_client_urls() {
        let directory = directory();
        assert_eq!(
            directory.client_url("n2").as_deref(),
            Some("http://127.0.0.1:8082")
        );
        directory.learn_client_url("n2", "http://elsewhere:7000");
        assert_eq!(
            directory.client_url("n2").as_deref(),
            Some("http://elsewhere:7000")
        );
        assert_eq!(
            directory.client_url("n1").as_deref(),
            Some("http://127.0.0.1:8081")
        );
    }
}
