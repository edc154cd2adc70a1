//! InstallSnapshot over the raft port: the leader streams a snapshot file in chunks, then
//! tells the follower's raft core.
//!
//! # Protocol
//!
//! 1. The leader's core emits `Body::Snapshot` for a follower that needs compacted entries.
//!    The driver hands it to [`super::Peers::stream_snapshot`], which streams the newest
//!    durable snapshot file (at or after the core's compaction point) unless a stream to that
//!    peer is already running.
//! 2. Each chunk is a `POST /raft/installsnapshot/chunk` with a postcard [`ChunkEnvelope`]
//!    (cluster id, sender, snapshot meta, [`Chunk`] with its own CRC). The follower writes it
//!    through to a temporary file ([`SnapshotReceiver`]) and answers the offset it expects
//!    next (postcard `u64`). A lost, duplicated or corrupt chunk is therefore resent from
//!    the offset the follower names: the stream resumes, it does not restart.
//! 3. After the last chunk the follower verifies the whole file, fsyncs and renames it into
//!    its snapshot directory. Only then does the leader send the `Snapshot` message (on
//!    `/raft/installsnapshot`, with the file's meta); the follower's driver steps it into its
//!    core only if that snapshot has arrived complete, and installs it from the file.
//! 4. A stream that keeps failing is abandoned; the leader's core offers the snapshot again
//!    after an election timeout without an answer.
//!
//! Memory is bounded on both sides by one chunk ([`CHUNK_BYTES_DEFAULT`]).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Directory, Envelope, Route};
use crate::error::{Error, Result};
use crate::raft::{Index, Message, NodeId, SnapshotMeta, Term};
use crate::snapshot::{CHUNK_BYTES_DEFAULT, Chunk, Incoming, SnapshotDir, SnapshotInfo};

/// The route chunks are posted to.
pub const CHUNK_PATH: &str = "/raft/installsnapshot/chunk";

/// Consecutive failed chunk posts before a stream is abandoned.
const CHUNK_FAILURES_MAX: u32 = 5;

/// How long one chunk post may take (1 MiB over a slow link, plus the follower's write).
const CHUNK_TIMEOUT: Duration = Duration::from_secs(10);

/// Body of a chunk post.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChunkEnvelope {
    /// The sender's cluster id.
    pub cluster_id: String,
    /// The sending node (the leader).
    pub from: NodeId,
    /// The snapshot being streamed.
    pub meta: SnapshotMeta,
    /// The chunk.
    pub chunk: Chunk,
}

/// The follower's side: at most one snapshot being received at a time, and the last one
/// received complete.
pub struct SnapshotReceiver {
    dir: Arc<SnapshotDir>,
    incoming: Mutex<Option<(Index, Term, Incoming)>>,
    received: Mutex<Option<SnapshotInfo>>,
}

impl SnapshotReceiver {
    /// A receiver writing into `dir`.
    pub fn new(dir: Arc<SnapshotDir>) -> SnapshotReceiver {
        SnapshotReceiver {
            dir,
            incoming: Mutex::new(None),
            received: Mutex::new(None),
        }
    }

    /// Accepts one chunk (blocking file I/O) and returns the offset expected next. A chunk of
    /// another snapshot than the one in progress starts over with that one. A chunk that
    /// fails (a write error, such as a full disk, or a damaged chunk) abandons the transfer:
    /// its partial file is deleted at once, and the sender's next offer starts it afresh at
    /// offset 0 (kept, a failed write would refuse every later chunk of that snapshot).
    pub fn accept(&self, meta: &SnapshotMeta, chunk: &Chunk) -> Result<u64> {
        let mut incoming = self
            .incoming
            .lock()
            .expect("snapshot receiver lock poisoned");
        let current = matches!(&*incoming, Some((index, term, _)) if *index == meta.index && *term == meta.term);
        if !current {
            if self.received(meta.index, meta.term).is_some() {
                return Ok(chunk.total_bytes);
            }
            let stream = self.dir.receive(meta, chunk.total_bytes)?;
            *incoming = Some((meta.index, meta.term, stream));
        }
        let (_, _, stream) = incoming.as_mut().expect("an incoming stream was just set");
        let next = match stream.accept(chunk) {
            Ok(next) => next,
            Err(error) => {
                *incoming = None; // dropping the stream removes its file
                return Err(error);
            }
        };
        if stream.is_complete() {
            let (_, _, stream) = incoming.take().expect("the stream is present");
            let info = stream.finish()?;
            tracing::info!(
                index = info.meta.index,
                bytes = info.file_bytes,
                "snapshot received"
            );
            *self
                .received
                .lock()
                .expect("snapshot receiver lock poisoned") = Some(info);
        }
        Ok(next)
    }

    /// The snapshot received complete with this index and term, if any.
    pub fn received(&self, index: Index, term: Term) -> Option<SnapshotInfo> {
        let received = self
            .received
            .lock()
            .expect("snapshot receiver lock poisoned");
        received
            .as_ref()
            .filter(|info| info.meta.index == index && info.meta.term == term)
            .cloned()
    }
}

/// The leader's side: one stream per peer at a time.
pub(super) struct SnapshotStreams {
    running: Mutex<BTreeSet<NodeId>>,
}

impl SnapshotStreams {
    pub(super) fn new() -> SnapshotStreams {
        SnapshotStreams {
            running: Mutex::new(BTreeSet::new()),
        }
    }

    /// Marks a stream to `peer` as running; false if one already is.
    pub(super) fn start(&self, peer: &str) -> bool {
        self.running
            .lock()
            .expect("snapshot streams lock poisoned")
            .insert(peer.to_string())
    }

    pub(super) fn finish(&self, peer: &str) {
        self.running
            .lock()
            .expect("snapshot streams lock poisoned")
            .remove(peer);
    }
}

/// Streams `info` to `peer` at `raft_url`, then delivers `message` (the core's `Snapshot`
/// message, its meta replaced by the file's), as long as this node still leads the term
/// `message` was sent in (`leading`: the term it leads now, 0 for none). A deposed
/// leader's stream must stop: the follower keeps one transfer at a time, and the new
/// leader's chunks and the old one's would each restart the transfer for the other, for
/// ever (every answer a success, so neither gives up).
pub(super) async fn stream(
    directory: Arc<Directory>,
    http: reqwest::Client,
    raft_url: String,
    info: SnapshotInfo,
    mut message: Message,
    leading: &AtomicU64,
) -> Result<()> {
    let still_leading = || {
        let now = leading.load(Ordering::Relaxed);
        if now == message.term {
            Ok(())
        } else {
            Err(Error::Unavailable(format!(
                "no longer the leader of term {} (leading: {now})",
                message.term
            )))
        }
    };
    let mut offset = 0;
    let mut failures = 0;
    while offset < info.file_bytes {
        still_leading()?;
        match send_chunk(&directory, &http, &raft_url, &info, offset).await {
            Ok(next) => {
                offset = next;
                failures = 0;
            }
            Err(error) => {
                failures += 1;
                if failures >= CHUNK_FAILURES_MAX {
                    return Err(error);
                }
                tracing::debug!(%error, offset, "snapshot chunk failed; resending");
                tokio::time::sleep(Duration::from_millis(100) * failures).await;
            }
        }
    }
    still_leading()?;
    message.body = crate::raft::Body::Snapshot {
        meta: info.meta.clone(),
    };
    let envelope = Envelope {
        cluster_id: directory.cluster_id.clone(),
        from: directory.id.clone(),
        from_client_url: directory.client_url.clone(),
        messages: vec![message],
    };
    post(
        &directory,
        &http,
        &format!("{raft_url}{}", Route::InstallSnapshot.path()),
        &envelope,
    )
    .await
    .map(|_| ())
}

async fn send_chunk(
    directory: &Directory,
    http: &reqwest::Client,
    raft_url: &str,
    info: &SnapshotInfo,
    offset: u64,
) -> Result<u64> {
    let reading = info.clone();
    let chunk = tokio::task::spawn_blocking(move || {
        SnapshotDir::chunk(&reading, offset, CHUNK_BYTES_DEFAULT)
    })
    .await
    .map_err(|error| Error::Unavailable(format!("snapshot reader failed: {error}")))??;
    let envelope = ChunkEnvelope {
        cluster_id: directory.cluster_id.clone(),
        from: directory.id.clone(),
        meta: info.meta.clone(),
        chunk,
    };
    let answer = post(
        directory,
        http,
        &format!("{raft_url}{CHUNK_PATH}"),
        &envelope,
    )
    .await?;
    postcard::from_bytes(&answer).map_err(Error::from)
}

async fn post(
    directory: &Directory,
    http: &reqwest::Client,
    url: &str,
    body: &impl Serialize,
) -> Result<Vec<u8>> {
    let bytes = postcard::to_allocvec(body)?;
    let unavailable = |error: reqwest::Error| Error::Unavailable(format!("{url}: {error}"));
    let response = http
        .post(url)
        .timeout(CHUNK_TIMEOUT)
        .header(super::stream::HEADER_CLUSTER, &directory.cluster_id)
        .header(super::stream::HEADER_FROM, &directory.id)
        .body(bytes)
        .send()
        .await
        .map_err(unavailable)?;
    let status = response.status();
    let body = response.bytes().await.map_err(unavailable)?;
    if !status.is_success() {
        return Err(Error::Unavailable(format!(
            "{url}: {status}: {}",
            String::from_utf8_lossy(&body)
        )));
    }
    Ok(body.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deposed leader's stream stops before its next chunk (here: before its first, since
    /// the node leads no term), instead of fighting the new leader's stream at the follower.
    #[tokio::test]
    async fn a_stream_stops_once_its_sender_no_longer_leads_the_term() {
        let temp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::open(temp.path(), 3).unwrap();
        let meta = SnapshotMeta {
            index: 7,
            term: 5,
            voters: vec!["n1".into(), "n2".into()],
        };
        let value = [1u8; 10];
        let info = dir
            .write(&meta, 1, [("k", &value[..], 1)].into_iter())
            .unwrap();
        let peers = [("n2".to_string(), "http://127.0.0.1:1".to_string())].into();
        let directory = Arc::new(Directory::new(
            "n1".into(),
            "c1".into(),
            "http://127.0.0.1:2".into(),
            peers,
        ));
        let message = Message {
            from: "n1".into(),
            to: "n2".into(),
            term: 5,
            body: crate::raft::Body::Snapshot { meta },
        };
        let url = "http://127.0.0.1:1".to_string();
        let leading = AtomicU64::new(0);
        let error = stream(
            directory,
            reqwest::Client::new(),
            url,
            info,
            message,
            &leading,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(error.contains("no longer the leader of term 5"), "{error}");
    }
}
