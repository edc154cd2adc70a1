//! The leader's side of a peer stream against a fake peer on loopback.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kvstore::raft::{Body, Message};
use kvstore::transport::{Directory, Peers};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A raft port that answers every request head with `reply` and closes the connection;
/// counts the connections.
async fn fake_peer(reply: &'static [u8]) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let _ = socket.write_all(reply).await;
            });
        }
    });
    (port, count)
}

/// Connections made in one second while a message for the peer is queued every 2 ms,
/// about a busy leader's rate of readies.
async fn connections_in_a_second(reply: &'static [u8]) -> usize {
    let (port, count) = fake_peer(reply).await;
    let peers = BTreeMap::from([("n2".to_string(), format!("http://127.0.0.1:{port}"))]);
    let directory = Arc::new(Directory::new(
        "n1".into(),
        "c1".into(),
        "http://127.0.0.1:1".into(),
        peers,
    ));
    let metrics = Arc::new(kvstore::metrics::Metrics::new());
    let sender = Peers::spawn(directory, metrics, &tokio::runtime::Handle::current());
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(1) {
        let heartbeat = Body::Heartbeat {
            commit: 0,
            read_seq: 0,
        };
        sender.send(vec![Message {
            from: "n1".into(),
            to: "n2".into(),
            term: 1,
            body: heartbeat,
        }]);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    count.load(Ordering::Relaxed)
}

/// A peer that accepts the stream and closes it at once (as one does that refuses a frame,
/// or gets messages not addressed to it) is retried with the same backoff as one that
/// refuses the handshake (20 ms doubling to 250 ms: under a dozen attempts a second), not
/// once per queued message (hundreds a second before). The bound only gets safer on a
/// slower machine: fewer messages, fewer attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_closed_right_after_its_handshake_is_reopened_with_backoff() {
    let refused =
        connections_in_a_second(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n").await;
    let accepted = connections_in_a_second(
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: kvstore-raft/1\r\n\r\n",
    )
    .await;
    assert!(refused < 40, "refused handshakes: {refused} attempts");
    assert!(accepted < 40, "accepted then closed: {accepted} attempts");
}
