//! Abuse of both HTTP ports over raw TCP, beyond the 4xx cases of `tests/it/api.rs`: broken
//! HTTP, odd paths and headers, deeply nested JSON, chunked bodies past the limit, slow and
//! idle clients, and garbage or foreign envelopes on the raft port. Each gets a clear 4xx
//! (or the connection is closed), never a 5xx, and the node keeps serving throughout.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::{self, TestCluster, http_get, http_send, http_send_with};

/// Sends `request` on a fresh connection and returns what came back before the server
/// closed it or `wait` passed ("" if nothing).
fn raw(port: u16, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(wait)).unwrap();
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status code of a raw answer, if there is one.
fn status_of(answer: &str) -> Option<u16> {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
}

/// A 4xx, or a closed connection: anything but a 5xx or a 2xx.
fn assert_refused(what: &str, answer: &str) {
    match status_of(answer) {
        None => assert!(
            answer.is_empty(),
            "{what}: neither an HTTP answer nor a close: {answer:?}"
        ),
        Some(status) => assert!(
            (400..500).contains(&status),
            "{what}: expected a 4xx, got {status}:\n{answer}"
        ),
    }
}

fn assert_serving(cluster: &TestCluster) {
    let url = cluster.url(0);
    let put = http_send("PUT", &format!("{url}/kv/alive"), b"yes");
    assert_eq!(
        put.map(|(status, _)| status),
        Some(200),
        "the node still serves writes"
    );
    let get = http_get(&format!("{url}/kv/alive"));
    assert_eq!(get, Some((200, "yes".to_string())), "and reads");
}

fn request(head: &str) -> Vec<u8> {
    format!("{head}\r\nhost: x\r\nconnection: close\r\n\r\n").into_bytes()
}

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn broken_http_is_refused_or_closed() {
    let cluster = TestCluster::start(1);
    cluster_wait(&cluster);
    let port = cluster.nodes[0].client_port;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage request line", b"\x00\x01\x02 garbage\r\n\r\n".to_vec()),
        ("no HTTP version", b"GET /kv/k\r\n\r\n".to_vec()),
        ("HTTP/9.9", b"GET /kv/k HTTP/9.9\r\nhost: x\r\n\r\n".to_vec()),
        ("raw invalid UTF-8 in the path", {
            let mut bytes = b"GET /kv/\xff\xfe HTTP/1.1".to_vec();
            bytes.extend(b"\r\nhost: x\r\nconnection: close\r\n\r\n");
            bytes
        }),
        ("space in the path", request("GET /kv/a b HTTP/1.1")),
        ("header without a colon", b"GET /health HTTP/1.1\r\nhost x\r\n\r\n".to_vec()),
        ("bad content-length", b"PUT /kv/k HTTP/1.1\r\nhost: x\r\ncontent-length: -5\r\nconnection: close\r\n\r\nv".to_vec()),
        ("two content-lengths", b"PUT /kv/k HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\nconnection: close\r\n\r\nvv".to_vec()),
        ("huge header", format!("GET /health HTTP/1.1\r\nhost: x\r\nx-big: {}\r\nconnection: close\r\n\r\n", "a".repeat(512 * 1024)).into_bytes()),
        ("a thousand headers", {
            let mut head = String::from("GET /health HTTP/1.1\r\nhost: x\r\n");
            for number in 0..1000 {
                head.push_str(&format!("x-h{number}: v\r\n"));
            }
            head.push_str("connection: close\r\n\r\n");
            head.into_bytes()
        }),
        ("non-UTF-8 If-Match", b"PUT /kv/k HTTP/1.1\r\nhost: x\r\nif-match: \"\xc3\x28\"\r\ncontent-length: 1\r\nconnection: close\r\n\r\nv".to_vec()),
        ("huge URL", request(&format!("GET /kv/{} HTTP/1.1", "k".repeat(1024 * 1024)))),
    ];
    for (what, bytes) in cases {
        let answer = raw(port, &bytes, WAIT);
        assert_refused(what, &answer);
    }
    assert_serving(&cluster);
}

fn cluster_wait(cluster: &TestCluster) {
    let deadline = Instant::now() + common::ELECTION_DEADLINE;
    while cluster
        .status(0)
        .is_none_or(|status| status["state"] != "leader")
    {
        assert!(Instant::now() < deadline, "no leader");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn odd_paths_headers_and_bodies_get_4xx_not_5xx() {
    let cluster = TestCluster::start(1);
    cluster_wait(&cluster);
    let port = cluster.nodes[0].client_port;
    let put = |path: &str, headers: &str, body: &str| {
        let head = format!(
            "PUT {path} HTTP/1.1\r\nhost: x\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        raw(port, head.as_bytes(), WAIT)
    };
    // Paths that are odd but harmless may succeed; none may fail on the server side.
    for path in [
        "/kv/../../etc/passwd",
        "/kv/%2e%2e/%2e%2e/x",
        "//kv//k",
        "/kv/a%00b",
        "/kv/k?x=%ZZ",
        "/kv/%",
        "/kv/%F0%9F%92%A9",
        "/kv/k/",
        "/kv/k?consistency=stale&consistency=linearizable",
        "/kv?prefix=%FF&limit=-1",
        "/kv?limit=99999999999999999999999",
        "/get?key=",
        "/raft/status/../../kv/k",
    ] {
        let answer = raw(port, &request(&format!("GET {path} HTTP/1.1")), WAIT);
        let status = status_of(&answer);
        assert!(
            status.is_some_and(|status| status < 500),
            "GET {path}: {answer}"
        );
    }
    for (what, headers) in [
        ("If-Match not a number", "if-match: \"abc\"\r\n"),
        (
            "If-Match overflowing u64",
            "if-match: \"99999999999999999999999\"\r\n",
        ),
        ("If-Match unquoted", "if-match: 5\r\n"),
        (
            "If-Match and If-None-Match",
            "if-match: \"1\"\r\nif-none-match: *\r\n",
        ),
        ("If-None-Match not *", "if-none-match: \"3\"\r\n"),
    ] {
        let answer = put("/kv/k", headers, "v");
        // An unquoted revision is read leniently (then 412 on an absent key); the rest
        // are 400.
        let status = status_of(&answer);
        let expected: &[u16] = if what == "If-Match unquoted" {
            &[400, 412]
        } else {
            &[400]
        };
        assert!(
            status.is_some_and(|status| expected.contains(&status)),
            "{what}: {answer}"
        );
    }
    let json = "content-type: application/json\r\n";
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for (what, body) in [
        ("deeply nested JSON", deep.as_str()),
        ("lone surrogate", r#"{"key":"k","value":"\ud800"}"#),
        ("value not a string", r#"{"key":"k","value":{"a":[1,2]}}"#),
        ("key not a string", r#"{"key":7,"value":"v"}"#),
        ("trailing garbage", r#"{"key":"k","value":"v"} trailing"#),
        ("empty body", ""),
        ("JSON null", "null"),
    ] {
        let answer = put("/set", json, body);
        let status = status_of(&answer);
        assert!(
            status.is_some_and(|status| (400..500).contains(&status)),
            "{what}: {answer}"
        );
    }
    assert_serving(&cluster);
}

#[test]
fn chunked_body_past_the_limit_is_refused() {
    let cluster = TestCluster::start_with(1, &["--value-bytes-max", "1024"]);
    cluster_wait(&cluster);
    let port = cluster.nodes[0].client_port;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
        .write_all(b"PUT /kv/chunky HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
        .unwrap();
    // Up to 8 MiB in 64 KiB chunks, stopping when the server stops reading.
    let chunk = vec![b'c'; 64 * 1024];
    for _ in 0..128 {
        let head = format!("{:x}\r\n", chunk.len());
        if stream.write_all(head.as_bytes()).is_err()
            || stream.write_all(&chunk).is_err()
            || stream.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert_refused("8 MiB chunked body", &answer);
    assert_serving(&cluster);
    let stored = http_get(&format!("{}/kv/chunky", cluster.url(0)));
    assert_eq!(
        stored.map(|(status, _)| status),
        Some(404),
        "nothing stored"
    );
}

#[test]
fn slow_and_idle_clients_do_not_stop_the_node() {
    let cluster = TestCluster::start(1);
    cluster_wait(&cluster);
    let port = cluster.nodes[0].client_port;
    // Many connections that send half a request head and then hold, idle.
    let mut idle = Vec::new();
    for number in 0..200 {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let _ = stream.write_all(format!("GET /kv/k{number} HTTP/1.1\r\nhost: x\r\n").as_bytes());
        idle.push(stream);
    }
    // Connections that never send anything at all.
    for _ in 0..100 {
        idle.push(TcpStream::connect(("127.0.0.1", port)).expect("connect"));
    }
    assert_serving(&cluster);

    // A client that sends its request one byte at a time is served once it is complete.
    let body = "slowly";
    let head = format!(
        "PUT /kv/slow HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    for byte in head.as_bytes() {
        stream.write_all(&[*byte]).unwrap();
        stream.flush().unwrap();
        // Pacing of the slow client itself, not a synchronisation wait.
        std::thread::sleep(Duration::from_millis(5));
        if *byte == b'\n' {
            // Meanwhile others are served.
            assert_eq!(
                http_get(&format!("{}/health", cluster.url(0))).map(|(status, _)| status),
                Some(200)
            );
        }
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert_eq!(status_of(&answer), Some(200), "{answer}");
    assert_eq!(
        http_get(&format!("{}/kv/slow", cluster.url(0))),
        Some((200, body.to_string()))
    );
    drop(idle);
    assert_serving(&cluster);
}

/// The head of `POST path` announcing a body of `length` bytes, with the raft-port sender
/// headers `headers` (cluster id, node id), if any.
fn raft_head(path: &str, headers: Option<(&str, &str)>, length: usize) -> Vec<u8> {
    let sender = headers.map_or(String::new(), |(cluster_id, from)| {
        format!("x-kvstore-cluster: {cluster_id}\r\nx-kvstore-from: {from}\r\n")
    });
    format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\n{sender}content-length: {length}\r\nconnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// `POST path` with `body` and the sender headers `headers`, if any.
fn raft_post(port: u16, path: &str, headers: Option<(&str, &str)>, body: &[u8]) -> String {
    let mut request = raft_head(path, headers, body.len());
    request.extend(body);
    raw(port, &request, WAIT)
}

#[test]
fn garbage_and_foreign_envelopes_on_the_raft_port_are_refused() {
    let cluster = TestCluster::start_with(3, &["--cluster-id", "abuse-test"]);
    let raft_port = cluster.nodes[0].raft_port;
    let member = cluster.nodes[1].id.clone();
    let mut rng = kvstore::torture::rng::Rng::new(0xabcd);
    for path in [
        "/raft/appendentries",
        "/raft/requestvote",
        "/raft/readindex",
        "/raft/installsnapshot",
        "/raft/installsnapshot/chunk",
    ] {
        // Garbage, from nobody and from a member (so that it reaches the decoder).
        for length in [0usize, 1, 7, 64, 4096] {
            let body: Vec<u8> = (0..length).map(|_| rng.below(256) as u8).collect();
            for headers in [None, Some(("abuse-test", member.as_str()))] {
                let answer = raft_post(raft_port, path, headers, &body);
                let what = format!("{length} random bytes to {path} with {headers:?}");
                assert_refused(&what, &answer);
            }
        }
        // A well-formed envelope from another cluster, from a stranger, and from a member
        // whose envelope names someone else.
        for (headers, cluster_id, from) in [
            (("another-cluster", "n2"), "another-cluster", "n2"),
            (("abuse-test", "mallory"), "abuse-test", "mallory"),
            (("abuse-test", member.as_str()), "abuse-test", "mallory"),
            (
                ("abuse-test", member.as_str()),
                "another-cluster",
                member.as_str(),
            ),
        ] {
            let envelope = kvstore::transport::Envelope {
                cluster_id: cluster_id.to_string(),
                from: from.to_string(),
                from_client_url: "http://127.0.0.1:1".to_string(),
                messages: vec![],
            };
            let body = postcard::to_stdvec(&envelope).unwrap();
            let answer = raft_post(raft_port, path, Some(headers), &body);
            let what = format!("envelope from {from} of {cluster_id:?} sent as {headers:?}");
            assert_refused(&what, &answer);
        }
        let answer = raw(raft_port, &request(&format!("GET {path} HTTP/1.1")), WAIT);
        assert_refused(&format!("GET {path}"), &answer);
    }
    cluster.wait_for_leader_quietly();
    assert_serving_cluster(&cluster);
}

/// A stranger that announces a 60 MB body is refused on its headers, before it has sent a
/// byte of the body: the node neither waits for nor buffers what a non-member sends.
#[test]
fn a_stranger_is_refused_before_its_body_is_read() {
    let cluster = TestCluster::start_with(1, &["--cluster-id", "abuse-test"]);
    let raft_port = cluster.nodes[0].raft_port;
    for (path, sender, expected) in [
        ("/raft/appendentries", None, 400),
        (
            "/raft/installsnapshot/chunk",
            Some(("abuse-test", "mallory")),
            403,
        ),
        ("/raft/requestvote", Some(("another", "n1")), 403),
    ] {
        let answer = raw(raft_port, &raft_head(path, sender, 60_000_000), WAIT);
        assert_eq!(
            status_of(&answer),
            Some(expected),
            "{path} with {sender:?}: {answer:?}"
        );
    }
    assert_serving(&cluster);
}

fn assert_serving_cluster(cluster: &TestCluster) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = kvstore::client::Client::new(cluster.urls(), Default::default());
    runtime
        .block_on(client.put("alive", b"yes", kvstore::store::Condition::None))
        .expect("the cluster still serves writes");
}

trait Quietly {
    fn wait_for_leader_quietly(&self);
}

impl Quietly for TestCluster {
    fn wait_for_leader_quietly(&self) {
        let deadline = Instant::now() + common::ELECTION_DEADLINE;
        loop {
            let leaders = (0..self.nodes.len())
                .filter(|&index| {
                    self.status(index)
                        .is_some_and(|status| status["state"] == "leader")
                })
                .count();
            if leaders >= 1 {
                return;
            }
            assert!(Instant::now() < deadline, "no leader");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Well-formed envelopes from a member, carrying absurd values (indexes and terms at
/// `u64::MAX`, responses to requests never made). Raft trusts its members, so this is not
/// about correctness under a Byzantine peer, only that one bad message does not crash a
/// node.
fn hostile_messages(
    from: &str,
    to: &str,
    term: u64,
) -> Vec<(&'static str, kvstore::raft::Message)> {
    use kvstore::raft::{AppendReject, Body, Message, SnapshotMeta};
    let message = |body: Body| Message {
        from: from.to_string(),
        to: to.to_string(),
        term,
        body,
    };
    vec![
        (
            "AppendResponse at u64::MAX",
            message(Body::AppendResponse {
                index: u64::MAX,
                reject: None,
            }),
        ),
        (
            "AppendResponse rejecting with an absurd hint",
            message(Body::AppendResponse {
                index: u64::MAX,
                reject: Some(AppendReject {
                    conflict_index: u64::MAX,
                    conflict_term: u64::MAX,
                }),
            }),
        ),
        (
            "HeartbeatResponse for a future read round",
            message(Body::HeartbeatResponse { read_seq: u64::MAX }),
        ),
        (
            "ReadIndexResponse nobody asked for",
            message(Body::ReadIndexResponse {
                context: u64::MAX,
                index: Some(u64::MAX),
            }),
        ),
        (
            "SnapshotResponse at u64::MAX",
            message(Body::SnapshotResponse { index: u64::MAX }),
        ),
        (
            "VoteResponse nobody asked for",
            message(Body::VoteResponse { granted: true }),
        ),
        (
            "Heartbeat with commit at u64::MAX",
            message(Body::Heartbeat {
                commit: u64::MAX,
                read_seq: u64::MAX,
            }),
        ),
        (
            "Append probe far past the log",
            message(Body::Append {
                prev_index: u64::MAX,
                prev_term: u64::MAX,
                entries: vec![],
                commit: u64::MAX,
            }),
        ),
        (
            "Snapshot offer at u64::MAX",
            message(Body::Snapshot {
                meta: SnapshotMeta {
                    index: u64::MAX,
                    term,
                    voters: vec![],
                },
            }),
        ),
    ]
}

/// Sends hostile message number `which` (to the leader as a follower, to a follower as the
/// leader), then makes the cluster commit a write on every node (so the message has been
/// stepped), and says which nodes died.
fn send_hostile(which: usize) -> Result<&'static str, String> {
    let mut cluster = TestCluster::start_with(3, &["--cluster-id", "hostile-test"]);
    let leader = cluster.wait_for_leader(&[0, 1, 2]);
    let follower = (leader + 1) % 3;
    let term = cluster.status(leader).unwrap()["term"].as_u64().unwrap();
    let ids: Vec<String> = cluster.nodes.iter().map(|node| node.id.clone()).collect();
    let mut name = "";
    for (target, sender) in [(leader, follower), (follower, leader)] {
        let (what, message) = hostile_messages(&ids[sender], &ids[target], term).remove(which);
        name = what;
        let route = kvstore::transport::Route::of(&message.body);
        let envelope = kvstore::transport::Envelope {
            cluster_id: "hostile-test".to_string(),
            from: ids[sender].clone(),
            from_client_url: cluster.url(sender),
            messages: vec![message],
        };
        let body = postcard::to_stdvec(&envelope).unwrap();
        let url = format!("{}{}", cluster.nodes[target].raft_url(), route.path());
        let headers = [
            ("x-kvstore-cluster", "hostile-test"),
            ("x-kvstore-from", ids[sender].as_str()),
        ];
        let answer = http_send_with("POST", &url, &headers, &body);
        // Delivered to the raft core (a 204), not refused by the transport.
        assert_eq!(answer.map(|(status, _)| status), Some(204), "{what}");
    }
    // A write committed and applied everywhere after the messages were queued.
    let url = cluster.url(leader);
    let put = http_send("PUT", &format!("{url}/kv/after"), b"x");
    if let Some((200, body)) = &put {
        let revision = serde_json::from_str::<serde_json::Value>(body).unwrap()["revision"]
            .as_u64()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline
            && (0..3).any(|index| {
                cluster
                    .status(index)
                    .and_then(|status| status["lastApplied"].as_u64())
                    .is_none_or(|applied| applied < revision)
            })
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let dead_indexes: Vec<usize> = (0..3)
        .filter(|&index| !cluster.nodes[index].is_running())
        .collect();
    let dead: Vec<String> = dead_indexes
        .into_iter()
        .map(|index| {
            let log = cluster.log(index);
            let panic = log
                .lines()
                .find(|line| line.contains("panicked at") || line.contains("node stopped"))
                .unwrap_or("")
                .to_string();
            format!("{} ({panic})", ids[index])
        })
        .collect();
    if dead.is_empty() {
        Ok(name)
    } else {
        Err(format!("{name}: killed {}", dead.join(", ")))
    }
}

/// The hostile messages every node already shrugs off (all but the snapshot offer, 8).
const SURVIVED: [usize; 8] = [0, 1, 2, 3, 4, 5, 6, 7];

#[test]
fn absurd_messages_from_a_member_do_not_crash_a_node() {
    for which in SURVIVED {
        send_hostile(which).unwrap();
    }
}

/// A follower steps a `Snapshot` message into its raft core only once the snapshot's data
/// has arrived complete over the chunk route, so an offer with nothing behind it is dropped.
#[test]
fn a_snapshot_offer_from_a_member_does_not_crash_a_node() {
    send_hostile(8).unwrap();
}

/// The header read timeout these tests give the node (`--http-header-timeout-ms`), short so
/// they run fast; the default is 30 s.
const HEADER_TIMEOUT_MS: &str = "1500";

/// How long the tests allow for the node to close a connection after the timeout.
const HEADER_DEADLINE: Duration = Duration::from_secs(10);

#[test]
fn a_connection_that_never_finishes_its_head_is_closed() {
    let cluster = TestCluster::start_with(1, &["--http-header-timeout-ms", HEADER_TIMEOUT_MS]);
    cluster_wait(&cluster);
    let mut stream = TcpStream::connect(("127.0.0.1", cluster.nodes[0].client_port)).unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n")
        .unwrap();
    stream.set_read_timeout(Some(HEADER_DEADLINE)).unwrap();
    let mut answer = Vec::new();
    let started = Instant::now();
    let outcome = stream.read_to_end(&mut answer);
    assert!(
        outcome.is_ok() && started.elapsed() < HEADER_DEADLINE,
        "still open after {:?} ({outcome:?})",
        started.elapsed()
    );
}

/// With the descriptor limit lowered below the number of idle connections a client holds,
/// the node cannot accept a new connection until it has closed idle ones; the header read
/// timeout (which covers idle keep-alive time) does that, and the node serves again on its
/// own while the client still holds its sockets.
#[test]
fn idle_connections_cannot_exhaust_the_node() {
    let cluster = TestCluster::start_with(1, &["--http-header-timeout-ms", HEADER_TIMEOUT_MS]);
    cluster_wait(&cluster);
    // A small descriptor limit, so exhaustion is cheap to reach.
    let pid = cluster.pid(0).expect("running");
    let status = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg("--nofile=256:256")
        .status();
    if !status.is_ok_and(|status| status.success()) {
        eprintln!("skipped: prlimit is not available");
        return;
    }
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], cluster.nodes[0].client_port));
    let mut idle = Vec::new();
    for _ in 0..300 {
        // The kernel completes handshakes into the listen backlog even when the node
        // cannot accept them; a bounded connect keeps this loop from waiting on SYN retries.
        match TcpStream::connect_timeout(&address, Duration::from_millis(500)) {
            Ok(stream) => idle.push(stream),
            Err(_) => break,
        }
    }
    eprintln!("{} idle connections open", idle.len());
    let deadline = Instant::now() + HEADER_DEADLINE;
    let served = loop {
        let served = http_get(&format!("{}/health", cluster.url(0)));
        if served.as_ref().is_some_and(|(status, _)| *status == 200) || Instant::now() > deadline {
            break served;
        }
    };
    drop(idle);
    assert_eq!(
        served.map(|(status, _)| status),
        Some(200),
        "the node serves again while the idle connections are still held"
    );
}
