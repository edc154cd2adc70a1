//! The peer stream: one long-lived connection from each node to each peer, carrying framed
//! batches of raft messages one way (module doc of [`super`] for why).
//!
//! # Handshake
//!
//! The sender connects to the peer's raft port and sends
//!
//! ```text
//! GET /raft/stream HTTP/1.1
//! Connection: upgrade
//! Upgrade: kvstore-raft/1
//! X-Kvstore-Cluster: <cluster id>
//! X-Kvstore-From: <sender id>
//! X-Kvstore-Client-Url: <sender's client URL>
//! ```
//!
//! The receiver checks the cluster id and membership exactly as for an envelope (403
//! otherwise, 503 while the test fault switch cuts the sender off), records the client URL,
//! and answers `101 Switching Protocols`. From then on the connection carries frames from
//! the sender to the receiver only; the receiver never writes.
//!
//! # Frame
//!
//! ```text
//!  0        4        8
//!  +--------+--------+------------------------------+
//!  | length | crc32  | payload (length bytes)       |
//!  +--------+--------+------------------------------+
//! ```
//!
//! | field | type | meaning |
//! | --- | --- | --- |
//! | length | u32 LE | payload bytes, 1 ..= [`FRAME_BYTES_MAX`] |
//! | crc32 | u32 LE | CRC-32 (IEEE, as the WAL) of the payload |
//! | payload | postcard `Vec<Message>` | every message from the sender, to the receiver |
//!
//! A frame that breaks any rule (length, CRC, decoding, a message not from the sender or
//! not for the receiver) closes the stream: the sender reconnects and Raft resends what was
//! lost. TCP already checksums, weakly; the CRC costs about a microsecond per 8 KiB batch
//! and turns a corrupted entry into a lost message instead of a replicated one.
//!
//! # At most one inbound stream per peer
//!
//! A new stream from a peer replaces (closes) the previous one, so a member holds at most
//! one inbound stream per peer whatever reconnects happen, and an upgraded connection
//! never outlives its replacement.
//!
//! # Sender
//!
//! The sender task opens the stream when it first has something to send, writes every batch
//! queued since its last write as one frame with one `write` call, and reconnects after an
//! error with a backoff from [`RECONNECT_BACKOFF_MIN`] to [`RECONNECT_BACKOFF_MAX`]. A write
//! that cannot finish within [`WRITE_TIMEOUT`] (a stopped peer whose socket buffer is
//! full), or data the peer's kernel does not acknowledge within the same time
//! (`TCP_USER_TIMEOUT`, a silent partition), closes the connection. Messages queued while
//! there is no connection are dropped, as a lost network would drop them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, BytesMut};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::{Deliver, Directory};
use crate::error::describe;
use crate::metrics::{Metrics, PeerLabels};
use crate::raft::{Message, NodeId};

/// The route a stream is opened on.
pub const STREAM_PATH: &str = "/raft/stream";

/// The `Upgrade` protocol token; the version changes with the frame format.
pub const UPGRADE_PROTOCOL: &str = "kvstore-raft/1";

/// Handshake header: the sender's cluster id.
pub const HEADER_CLUSTER: &str = "x-kvstore-cluster";
/// Handshake header: the sender's node id.
pub const HEADER_FROM: &str = "x-kvstore-from";
/// Handshake header: the sender's client URL (for `not_leader` hints).
pub const HEADER_CLIENT_URL: &str = "x-kvstore-client-url";

/// Bytes of a frame header (length and CRC).
pub const FRAME_HEADER_BYTES: usize = 8;

/// Largest frame payload: the same bound as an envelope posted to the raft port.
pub const FRAME_BYTES_MAX: usize = super::ENVELOPE_BYTES_MAX;

/// Longest a frame write may block without progress (per [`WRITE_PIECE_BYTES`]) before the
/// connection is given up: a peer that reads nothing for this long is stopped or cut off
/// (the same bound a peer POST had).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// First wait after a failed connection attempt. Short: a restarted peer should hear its
/// leader within a heartbeat or two.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(20);

/// Longest wait between connection attempts: well under an election timeout, so a peer that
/// comes back is reached before it campaigns.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_millis(250);

/// A stream that carried traffic this long counts as healthy: when it breaks, the next one
/// is opened without waiting, and the reconnect backoff starts over.
const STREAM_HEALTHY_AFTER: Duration = Duration::from_secs(1);

/// Bytes read from a stream per `read` call at most (a frame may span several reads).
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Appends one frame carrying `messages` to `buffer`.
pub fn encode_frame(messages: &[Message], buffer: &mut Vec<u8>) {
    let start = buffer.len();
    buffer.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    let encoded = postcard::to_extend(messages, std::mem::take(buffer))
        .expect("encoding messages into a Vec cannot fail");
    *buffer = encoded;
    let payload = &buffer[start + FRAME_HEADER_BYTES..];
    let length = u32::try_from(payload.len()).expect("a batch is far below 4 GiB");
    let crc = crc32fast::hash(payload);
    buffer[start..start + 4].copy_from_slice(&length.to_le_bytes());
    buffer[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Writes `bytes`, giving up when a piece of [`WRITE_PIECE_BYTES`] takes longer than
/// [`WRITE_TIMEOUT`]: a deadline on progress, not on the whole write, so that tens of MiB of
/// appends to a follower far behind can cross a slow link (one deadline for the whole
/// frame would fail every attempt below 32 MB/s, and the leader would resend forever).
async fn write_with_progress(
    writer: &mut (impl AsyncWriteExt + Unpin),
    bytes: &[u8],
) -> Result<std::io::Result<()>, tokio::time::error::Elapsed> {
    for piece in bytes.chunks(WRITE_PIECE_BYTES) {
        if let Err(error) = tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(piece)).await? {
            return Ok(Err(error));
        }
    }
    Ok(Ok(()))
}

/// Bytes written under one [`WRITE_TIMEOUT`] (see `write_with_progress`); a usual frame is
/// one piece.
pub const WRITE_PIECE_BYTES: usize = 1024 * 1024;

/// Appends `messages` to `buffer` as one frame, or as several when one would be larger than
/// [`FRAME_BYTES_MAX`], which the receiver refuses (halving the run of messages until each
/// part fits). A batch can be that large: a leader fills a lagging follower's whole window
/// of appends (64 of up to `append_bytes_max` each, plus one entry) in one ready, and the
/// stream merges the batches queued meanwhile. One message always fits: an append carries
/// at most `append_bytes_max` (1 MiB) plus one entry, and `kvnode` refuses a value limit
/// that would make an entry too large for a frame.
pub fn encode_frames(messages: &[Message], buffer: &mut Vec<u8>) {
    let start = buffer.len();
    encode_frame(messages, buffer);
    if buffer.len() - start - FRAME_HEADER_BYTES <= FRAME_BYTES_MAX || messages.len() < 2 {
        return;
    }
    buffer.truncate(start);
    let (first, second) = messages.split_at(messages.len() / 2);
    encode_frames(first, buffer);
    encode_frames(second, buffer);
}

/// Takes the next whole frame off the front of `buffer` and decodes it. `Ok(None)`: the
/// frame is not complete yet (read more). `Err`: the stream is broken; close it.
pub fn decode_frame(buffer: &mut BytesMut) -> Result<Option<Vec<Message>>, String> {
    if buffer.len() < FRAME_HEADER_BYTES {
        return Ok(None);
    }
    let length = u32::from_le_bytes(buffer[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(buffer[4..8].try_into().expect("4 bytes"));
    if length == 0 || length > FRAME_BYTES_MAX {
        return Err(format!(
            "frame length {length} outside 1..={FRAME_BYTES_MAX}"
        ));
    }
    if buffer.len() < FRAME_HEADER_BYTES + length {
        buffer.reserve(FRAME_HEADER_BYTES + length - buffer.len());
        return Ok(None);
    }
    buffer.advance(FRAME_HEADER_BYTES);
    let payload = buffer.split_to(length);
    if crc32fast::hash(&payload) != crc {
        return Err("frame CRC mismatch".into());
    }
    postcard::from_bytes(&payload)
        .map(Some)
        .map_err(|error| format!("undecodable frame: {error}"))
}

/// The receiving side's registry of open inbound streams, one per peer.
#[derive(Default)]
pub struct Inbound {
    /// Dropping a peer's sender closes its stream.
    current: Mutex<BTreeMap<NodeId, oneshot::Sender<()>>>,
}

impl Inbound {
    /// Registers a new stream from `peer`, closing the one it replaces; the returned
    /// receiver completes when this one is replaced in turn.
    fn replace(&self, peer: &NodeId) -> oneshot::Receiver<()> {
        let (closer, closed) = oneshot::channel();
        self.current
            .lock()
            .expect("inbound lock poisoned")
            .insert(peer.clone(), closer);
        closed
    }
}

/// `GET /raft/stream`: validates the handshake and upgrades the connection to a stream of
/// frames delivered to the driver.
pub(super) fn accept(
    directory: Arc<Directory>,
    deliver: Deliver,
    inbound: Arc<Inbound>,
    mut request: Request,
) -> Response {
    let peer = match handshake(&directory, request.headers()) {
        Ok(peer) => peer,
        Err((status, reason)) => {
            tracing::warn!(%reason, "refused a peer stream");
            return (status, reason).into_response();
        }
    };
    let Some(upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return (StatusCode::BAD_REQUEST, "connection cannot be upgraded").into_response();
    };
    let closed = inbound.replace(&peer);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let io = TokioIo::new(upgraded);
                match receive(&directory, &deliver, &peer, io, closed).await {
                    Ok(()) => tracing::debug!(%peer, "peer stream closed"),
                    Err(error) => tracing::warn!(%peer, %error, "peer stream broken"),
                }
            }
            Err(error) => tracing::warn!(%peer, %error, "peer stream upgrade failed"),
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(UPGRADE_PROTOCOL));
    response
}

/// Checks a stream handshake; returns the sending peer.
fn handshake(directory: &Directory, headers: &HeaderMap) -> Result<NodeId, (StatusCode, String)> {
    let upgrade = headers.get(header::UPGRADE).and_then(|v| v.to_str().ok());
    if upgrade != Some(UPGRADE_PROTOCOL) {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("expected Upgrade: {UPGRADE_PROTOCOL}"),
        ));
    }
    let from = super::admitted(directory, headers)?;
    directory.learn_client_url(&from, super::header_text(headers, HEADER_CLIENT_URL)?);
    Ok(from)
}

/// Reads frames until the stream ends, breaks, or is replaced.
async fn receive(
    directory: &Directory,
    deliver: &Deliver,
    peer: &NodeId,
    mut io: impl tokio::io::AsyncRead + Unpin,
    mut closed: oneshot::Receiver<()>,
) -> Result<(), String> {
    let mut buffer = BytesMut::with_capacity(READ_CHUNK_BYTES);
    loop {
        if buffer.capacity() - buffer.len() < READ_CHUNK_BYTES / 4 {
            buffer.reserve(READ_CHUNK_BYTES);
        }
        let read = tokio::select! {
            read = io.read_buf(&mut buffer) => read.map_err(|error| error.to_string())?,
            _ = &mut closed => return Ok(()),
        };
        if read == 0 {
            return Ok(());
        }
        while let Some(messages) = decode_frame(&mut buffer)? {
            if directory.is_blocked(peer) {
                continue;
            }
            if let Some(bad) = super::misaddressed(directory, peer, &messages) {
                return Err(format!(
                    "message from {} to {} on the stream from {peer}",
                    bad.from, bad.to
                ));
            }
            // A full driver queue drops the batch (counted as refused); Raft resends what matters.
            deliver(messages);
        }
    }
}

/// One sender per peer: owns the stream to it (see the module doc).
pub(super) struct PeerTask {
    pub(super) peer: NodeId,
    /// `host:port` of the peer's raft port.
    pub(super) authority: String,
    pub(super) directory: Arc<Directory>,
    pub(super) metrics: Arc<Metrics>,
}

impl PeerTask {
    pub(super) async fn run(self, mut queue: mpsc::Receiver<Vec<Message>>) {
        let labels = PeerLabels {
            peer: self.peer.clone(),
        };
        let mut backoff = RECONNECT_BACKOFF_MIN;
        let mut batches = Vec::new();
        loop {
            // Connect only once there is something to send.
            if queue.recv_many(&mut batches, usize::MAX).await == 0 {
                return;
            }
            if self.directory.is_blocked(&self.peer) {
                self.dropped(&labels, &mut batches);
                continue;
            }
            let stream = match self.connect().await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(peer = %self.peer, %error, "cannot open the peer stream");
                    self.dropped(&labels, &mut batches);
                    self.back_off(&mut backoff, &mut queue, &labels).await;
                    continue;
                }
            };
            let opened = tokio::time::Instant::now();
            match self
                .send_all(stream, &mut queue, &mut batches, &labels)
                .await
            {
                Ok(()) => return,
                Err(error) => {
                    tracing::debug!(peer = %self.peer, %error, "peer stream lost");
                }
            }
            // A stream that lived a while broke (the peer restarted, a partition): reconnect
            // at once. One the peer closed right after accepting it (it refused a frame, or
            // the messages were not addressed to it) would otherwise be reopened for every
            // ready, a TCP and HTTP handshake each: back off as after a failed connect.
            if opened.elapsed() >= STREAM_HEALTHY_AFTER {
                backoff = RECONNECT_BACKOFF_MIN;
            } else {
                self.back_off(&mut backoff, &mut queue, &labels).await;
            }
        }
    }

    /// Waits `backoff` before the next connection attempt and doubles it (up to the
    /// maximum). What queued meanwhile is stale and dropped; the next message triggers the
    /// attempt.
    async fn back_off(
        &self,
        backoff: &mut Duration,
        queue: &mut mpsc::Receiver<Vec<Message>>,
        labels: &PeerLabels,
    ) {
        tokio::time::sleep(*backoff).await;
        *backoff = (*backoff * 2).min(RECONNECT_BACKOFF_MAX);
        let mut stale = Vec::new();
        while let Ok(batch) = queue.try_recv() {
            stale.push(batch);
        }
        self.dropped(labels, &mut stale);
    }

    /// Writes `batches`, then everything queued after, until the queue closes (`Ok`) or the
    /// stream fails (`Err`, the unsent batches counted as dropped).
    async fn send_all(
        &self,
        stream: TcpStream,
        queue: &mut mpsc::Receiver<Vec<Message>>,
        batches: &mut Vec<Vec<Message>>,
        labels: &PeerLabels,
    ) -> Result<(), String> {
        let (mut reader, mut writer) = stream.into_split();
        let mut frame = Vec::new();
        let mut probe = [0u8; 1];
        loop {
            if self.directory.is_blocked(&self.peer) {
                self.dropped(labels, batches);
            } else if !batches.is_empty() {
                let count = batches.iter().map(Vec::len).sum::<usize>() as u64;
                frame.clear();
                if let [batch] = batches.as_slice() {
                    encode_frames(batch, &mut frame); // the usual case: no merged copy
                } else {
                    let messages: Vec<Message> = batches.drain(..).flatten().collect();
                    encode_frames(&messages, &mut frame);
                }
                batches.clear();
                match write_with_progress(&mut writer, &frame).await {
                    Ok(Ok(())) => {
                        self.metrics
                            .peer_messages_sent
                            .get_or_create(labels)
                            .inc_by(count);
                    }
                    outcome => {
                        self.metrics
                            .peer_messages_dropped
                            .get_or_create(labels)
                            .inc_by(count);
                        return Err(match outcome {
                            Ok(Err(error)) => error.to_string(),
                            _ => "write timed out".into(),
                        });
                    }
                }
            }
            // Wait for more to send; the peer never writes, so a readable socket means it
            // closed the stream (replaced, restarted, refused a frame).
            tokio::select! {
                received = queue.recv_many(batches, usize::MAX) => if received == 0 {
                    return Ok(());
                },
                read = reader.read(&mut probe) => {
                    return Err(match read {
                        Ok(_) => "closed by the peer".into(),
                        Err(error) => error.to_string(),
                    });
                }
            }
        }
    }

    fn dropped(&self, labels: &PeerLabels, batches: &mut Vec<Vec<Message>>) {
        let count: usize = batches.drain(..).map(|batch| batch.len()).sum();
        self.metrics
            .peer_messages_dropped
            .get_or_create(labels)
            .inc_by(count as u64);
    }

    /// Opens the stream: TCP connect, the upgrade handshake, and back to the raw socket.
    async fn connect(&self) -> Result<TcpStream, String> {
        let connecting = async {
            let tcp = TcpStream::connect(&self.authority)
                .await
                .map_err(|error| format!("connect {}: {error}", self.authority))?;
            let _ = tcp.set_nodelay(true);
            set_user_timeout(&tcp, WRITE_TIMEOUT);
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(tcp))
                    .await
                    .map_err(|error| format!("handshake: {}", describe(&error)))?;
            let connection = tokio::spawn(connection.with_upgrades());
            let response = sender
                .send_request(self.handshake_request()?)
                .await
                .map_err(|error| format!("handshake: {}", describe(&error)))?;
            if response.status() != StatusCode::SWITCHING_PROTOCOLS {
                connection.abort();
                return Err(format!("stream refused: {}", response.status()));
            }
            let upgraded = hyper::upgrade::on(response)
                .await
                .map_err(|error| format!("upgrade: {}", describe(&error)))?;
            let parts = upgraded
                .downcast::<TokioIo<TcpStream>>()
                .map_err(|_| "upgraded connection is not a TCP stream".to_string())?;
            Ok(parts.io.into_inner())
        };
        tokio::time::timeout(WRITE_TIMEOUT, connecting)
            .await
            .map_err(|_| format!("no stream to {} within {WRITE_TIMEOUT:?}", self.authority))?
    }

    fn handshake_request(&self) -> Result<hyper::Request<Body>, String> {
        hyper::Request::builder()
            .method("GET")
            .uri(STREAM_PATH)
            .header(header::HOST, &self.authority)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, UPGRADE_PROTOCOL)
            .header(HEADER_CLUSTER, &self.directory.cluster_id)
            .header(HEADER_FROM, &self.directory.id)
            .header(HEADER_CLIENT_URL, &self.directory.client_url)
            .body(Body::empty())
            .map_err(|error| format!("handshake request: {error}"))
    }
}

/// Bounds how long sent data may stay unacknowledged before the kernel closes the
/// connection (`TCP_USER_TIMEOUT`): a partition that drops packets silently would otherwise
/// keep the stream "open" for the many minutes of TCP's retransmission backoff.
fn set_user_timeout(stream: &TcpStream, timeout: Duration) {
    use std::os::fd::AsRawFd;
    let milliseconds = timeout.as_millis() as libc::c_uint;
    // SAFETY: setsockopt reads `size_of::<c_uint>()` bytes from a valid pointer to a local.
    let result = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            (&milliseconds as *const libc::c_uint).cast(),
            std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
        )
    };
    if result != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "TCP_USER_TIMEOUT not set");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::Body as RaftBody;

    fn heartbeat(seq: u64) -> Message {
        Message {
            from: "n1".into(),
            to: "n2".into(),
            term: 3,
            body: RaftBody::Heartbeat {
                commit: 7,
                read_seq: seq,
            },
        }
    }

    #[test]
    fn frames_round_trip_across_arbitrary_read_boundaries() {
        let mut bytes = Vec::new();
        encode_frame(&[heartbeat(1), heartbeat(2)], &mut bytes);
        encode_frame(&[heartbeat(3)], &mut bytes);
        for split in 0..=bytes.len() {
            let mut buffer = BytesMut::from(&bytes[..split]);
            let mut decoded = Vec::new();
            while let Some(messages) = decode_frame(&mut buffer).unwrap() {
                decoded.extend(messages);
            }
            buffer.extend_from_slice(&bytes[split..]);
            while let Some(messages) = decode_frame(&mut buffer).unwrap() {
                decoded.extend(messages);
            }
            assert_eq!(decoded, [heartbeat(1), heartbeat(2), heartbeat(3)]);
            assert!(buffer.is_empty());
        }
    }

    fn directory() -> Directory {
        let peers = [("n1".to_string(), "http://127.0.0.1:9081".to_string())].into();
        Directory::new(
            "n2".into(),
            "c1".into(),
            "http://127.0.0.1:8082".into(),
            peers,
        )
    }

    fn handshake_headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        headers
    }

    const GOOD: [(&str, &str); 4] = [
        ("upgrade", UPGRADE_PROTOCOL),
        (HEADER_CLUSTER, "c1"),
        (HEADER_FROM, "n1"),
        (HEADER_CLIENT_URL, "http://127.0.0.1:18081"),
    ];

    #[test]
    fn a_handshake_from_a_member_is_accepted_and_teaches_its_client_url() {
        let directory = directory();
        assert_eq!(
            handshake(&directory, &handshake_headers(&GOOD)),
            Ok("n1".into())
        );
        assert_eq!(
            directory.client_url("n1").as_deref(),
            Some("http://127.0.0.1:18081")
        );
    }

    #[test]
    fn handshakes_are_refused_with_the_reason() {
        let directory = directory();
        let with = |name: &'static str, value: &'static str| {
            let mut pairs = GOOD.to_vec();
            pairs.retain(|(other, _)| *other != name);
            if !value.is_empty() {
                pairs.push((name, value));
            }
            handshake(&directory, &handshake_headers(&pairs)).unwrap_err()
        };
        let (status, reason) = with("upgrade", "websocket");
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(reason.contains(UPGRADE_PROTOCOL), "{reason}");
        let (status, reason) = with(HEADER_FROM, "");
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(reason.contains(HEADER_FROM), "{reason}");
        assert_eq!(with(HEADER_CLUSTER, "other").0, StatusCode::FORBIDDEN);
        assert_eq!(with(HEADER_FROM, "n9").0, StatusCode::FORBIDDEN);
        directory.set_blocked(["n1".to_string()].into());
        assert_eq!(
            with("upgrade", UPGRADE_PROTOCOL).0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    /// 64 appends of just over 1 MiB (a lagging follower's window, filled in one ready) are
    /// more than one frame may carry: they go out as several, each within the limit the
    /// receiver enforces, and arrive whole and in order.
    #[test]
    fn a_batch_larger_than_a_frame_goes_out_as_several() {
        let append = |index: u64| Message {
            from: "n1".into(),
            to: "n2".into(),
            term: 3,
            body: RaftBody::Append {
                prev_index: index - 1,
                prev_term: 3,
                entries: vec![crate::raft::Entry {
                    index,
                    term: 3,
                    command: vec![index as u8; 1024 * 1024 + 40],
                }],
                commit: 1,
            },
        };
        let batch: Vec<Message> = (1..=64).map(append).collect();
        let mut bytes = Vec::new();
        encode_frames(&batch, &mut bytes);
        let mut buffer = BytesMut::from(&bytes[..]);
        let mut frames = 0;
        let mut decoded = Vec::new();
        while let Some(messages) = decode_frame(&mut buffer).expect("every frame within limits") {
            frames += 1;
            decoded.extend(messages);
        }
        assert!(buffer.is_empty());
        assert_eq!(frames, 2);
        assert!(decoded == batch, "the batch arrives whole and in order");
    }

    #[test]
    fn broken_frames_are_refused() {
        let mut bytes = Vec::new();
        encode_frame(&[heartbeat(1)], &mut bytes);
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let error = decode_frame(&mut BytesMut::from(&flipped[..])).unwrap_err();
        assert!(error.contains("CRC"), "{error}");

        let mut empty = BytesMut::from(&[0u8; FRAME_HEADER_BYTES][..]);
        assert!(decode_frame(&mut empty).unwrap_err().contains("length 0"));

        let mut huge = BytesMut::from(&[0xff_u8; FRAME_HEADER_BYTES][..]);
        assert!(decode_frame(&mut huge).unwrap_err().contains("outside"));

        let garbage = [1u8, 2, 3];
        let mut frame = Vec::new();
        frame.extend_from_slice(&(garbage.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&garbage).to_le_bytes());
        frame.extend_from_slice(&garbage);
        let error = decode_frame(&mut BytesMut::from(&frame[..])).unwrap_err();
        assert!(error.contains("undecodable"), "{error}");
    }
}
