//! The client API's contract (ARCHITECTURE.md, "Client API"), checked over HTTP against a
//! real single-node `kvnode`: shapes, status codes, headers, limits and bad input.

use crate::common::{self, TestCluster};
use reqwest::Method;
use serde_json::{Value, json};

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

struct Node {
    cluster: TestCluster,
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl Node {
    fn start() -> Node {
        Node::start_with(&["--value-bytes-max", "1024", "--key-bytes-max", "64"])
    }

    fn start_with(args: &[&str]) -> Node {
        let mut cluster = TestCluster::start_with(1, args);
        cluster.wait_for_leader(&[0]);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Node {
            cluster,
            runtime,
            http: reqwest::Client::new(),
        }
    }

    fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Vec<u8>>,
    ) -> Answer {
        let url = format!("{}{path}", self.cluster.url(0));
        let mut request = self.http.request(method, url).body(body.into());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.runtime.block_on(async {
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            Answer {
                status,
                headers,
                body: response.bytes().await.expect("body").to_vec(),
            }
        })
    }

    fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, &[], "")
    }
}

fn assert_error(answer: &Answer, status: u16, code: &str) {
    assert_eq!(
        answer.status,
        status,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let json = answer.json();
    assert_eq!(json["ok"], false);
    assert_eq!(json["error"], code);
    assert!(
        json["message"]
            .as_str()
            .is_some_and(|message| !message.is_empty()),
        "{json}"
    );
}

#[test]
fn kv_put_get_delete_with_etags() {
    let node = Node::start();
    let put = node.send(Method::PUT, "/kv/users/alice", &[], "hello");
    assert_eq!(put.status, 200);
    let revision = put.json()["revision"].as_u64().unwrap();
    assert_eq!(
        put.json(),
        json!({"ok": true, "key": "users/alice", "revision": revision})
    );
    assert_eq!(put.header("etag"), Some(format!("\"{revision}\"").as_str()));

    let get = node.get("/kv/users/alice");
    assert_eq!((get.status, get.body.as_slice()), (200, &b"hello"[..]));
    assert_eq!(get.header("etag"), Some(format!("\"{revision}\"").as_str()));
    let stale = node.get("/kv/users/alice?consistency=stale");
    assert_eq!(stale.body, b"hello");

    let delete = node.send(Method::DELETE, "/kv/users/alice", &[], "");
    assert_eq!(
        delete.json(),
        json!({"ok": true, "key": "users/alice", "deleted": true})
    );
    let again = node.send(Method::DELETE, "/kv/users/alice", &[], "");
    assert_eq!(again.json()["deleted"], false);
    assert_error(&node.get("/kv/users/alice"), 404, "not_found");
}

#[test]
fn binary_values_and_odd_keys_round_trip() {
    let node = Node::start();
    let value: Vec<u8> = (0..=255).collect();
    assert_eq!(
        node.send(Method::PUT, "/kv/bin%20key%2F%C3%A9", &[], value.clone())
            .status,
        200
    );
    let get = node.get("/kv/bin%20key%2F%C3%A9");
    assert_eq!(get.body, value);
    let listed = node.get("/kv?prefix=bin");
    assert_eq!(listed.json()["keys"], json!(["bin key/é"]));
    assert_error(&node.get("/get?key=bin%20key%2F%C3%A9"), 422, "not_utf8");
}

#[test]
fn conditional_writes() {
    let node = Node::start();
    let created = node.send(Method::PUT, "/kv/c", &[("if-none-match", "*")], "1");
    assert_eq!(created.status, 200);
    let revision = created.json()["revision"].as_u64().unwrap();

    let exists = node.send(Method::PUT, "/kv/c", &[("if-none-match", "*")], "2");
    assert_error(&exists, 412, "precondition_failed");
    assert_eq!(exists.json()["revision"], revision);

    let stale = node.send(Method::PUT, "/kv/c", &[("if-match", "\"999999\"")], "3");
    assert_error(&stale, 412, "precondition_failed");
    assert_eq!(stale.json()["revision"], revision);

    let matched = node.send(
        Method::PUT,
        "/kv/c",
        &[("if-match", &format!("\"{revision}\""))],
        "4",
    );
    assert_eq!(matched.status, 200);
    let newer = matched.json()["revision"].as_u64().unwrap();
    assert!(newer > revision);

    let wrong_delete = node.send(
        Method::DELETE,
        "/kv/c",
        &[("if-match", &format!("\"{revision}\""))],
        "",
    );
    assert_error(&wrong_delete, 412, "precondition_failed");
    let delete = node.send(
        Method::DELETE,
        "/kv/c",
        &[("if-match", &format!("\"{newer}\""))],
        "",
    );
    assert_eq!(delete.json()["deleted"], true);
    let absent = node.send(Method::PUT, "/kv/c", &[("if-match", "*")], "5");
    assert_error(&absent, 412, "precondition_failed");
    assert_eq!(absent.json()["revision"], Value::Null);
    assert_error(
        &node.send(Method::PUT, "/kv/c", &[("if-match", "W/abc")], "6"),
        400,
        "bad_request",
    );
}

#[test]
fn prefix_listing_is_ordered_and_bounded() {
    let node = Node::start();
    for key in ["b/2", "a/1", "b/1", "b/3", "c"] {
        assert_eq!(
            node.send(Method::PUT, &format!("/kv/{key}"), &[], "x")
                .status,
            200
        );
    }
    assert_eq!(
        node.get("/kv?prefix=b/").json(),
        json!({"ok": true, "keys": ["b/1", "b/2", "b/3"]})
    );
    assert_eq!(
        node.get("/kv?prefix=b/&limit=2").json()["keys"],
        json!(["b/1", "b/2"])
    );
    assert_eq!(node.get("/kv").json()["keys"].as_array().unwrap().len(), 5);
    assert_error(&node.get("/kv?limit=0"), 400, "bad_request");
    assert_error(&node.get("/kv?limit=abc"), 400, "bad_request");
}

#[test]
fn json_api_keeps_the_earlier_shapes() {
    let node = Node::start();
    let set = node.send(
        Method::PUT,
        "/set",
        &[("content-type", "application/json")],
        r#"{"key":"name","value":"luffy"}"#,
    );
    assert_eq!(
        set.json(),
        json!({"ok": true, "message": "stored", "key": "name"})
    );
    let get = node.get("/get?key=name");
    assert_eq!(get.status, 200);
    let json = get.json();
    assert_eq!(
        (
            json["ok"].clone(),
            json["key"].clone(),
            json["value"].clone()
        ),
        (json!(true), json!("name"), json!("luffy"))
    );
    let delete = node.send(Method::DELETE, "/delete?key=name", &[], "");
    assert_eq!(delete.json()["message"], "deleted");
    assert_eq!(delete.json()["key"], "name");
    assert_error(&node.get("/get?key=name"), 404, "not_found");
    assert_error(&node.get("/get"), 400, "bad_request");
}

#[test]
fn bad_input_gets_clear_errors_and_the_node_keeps_serving() {
    let node = Node::start();
    let json = [("content-type", "application/json")];
    assert_error(
        &node.send(Method::PUT, "/set", &json, "{not json"),
        400,
        "bad_request",
    );
    assert_error(
        &node.send(Method::PUT, "/set", &json, r#"{"key":"k"}"#),
        400,
        "bad_request",
    );
    assert_error(
        &node.send(Method::PUT, "/set", &json, vec![0xff, 0xfe, 0x00]),
        400,
        "bad_request",
    );
    assert_error(
        &node.send(Method::PUT, "/set", &json, r#"{"key":"","value":"v"}"#),
        400,
        "bad_request",
    );
    assert_error(
        &node.send(Method::PUT, "/kv/", &[], "v"),
        400,
        "bad_request",
    );
    let long_key = format!("/kv/{}", "k".repeat(65));
    assert_error(
        &node.send(Method::PUT, &long_key, &[], "v"),
        400,
        "bad_request",
    );
    assert_error(
        &node.send(Method::PUT, "/kv/big", &[], vec![b'x'; 1025]),
        413,
        "payload_too_large",
    );
    // A huge body is refused from its Content-Length alone, before it is read.
    let head = huge_request_head(&node, 64 * 1024 * 1024);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("payload_too_large"), "{head}");
    assert!(head.contains("escapes included"), "{head}");
    // A chunked body has no Content-Length: it is refused when the read passes the limit.
    let head = chunked_request_head(&node, 256 * 1024);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("request body is over the limit"), "{head}");
    assert!(head.contains("escapes included"), "{head}");
    assert_error(&node.get("/kv/chunked"), 404, "not_found");
    let big_json = format!(r#"{{"key":"k","value":"{}"}}"#, "v".repeat(2000));
    assert_error(
        &node.send(Method::PUT, "/set", &json, big_json),
        413,
        "payload_too_large",
    );
    assert_error(&node.get("/kv/k?consistency=sometimes"), 400, "bad_request");
    assert_error(&node.get("/kv/%FF%FE"), 400, "bad_request");
    assert_error(&node.get("/no/such/route"), 404, "not_found");
    assert_error(
        &node.send(Method::PATCH, "/kv/k", &[], ""),
        405,
        "method_not_allowed",
    );
    // After all of that, the node still serves.
    assert_eq!(node.send(Method::PUT, "/kv/after", &[], "ok").status, 200);
    assert_eq!(node.get("/kv/after").body, b"ok");
}

/// Sends only the head of a PUT announcing `length` body bytes and returns the answer.
/// Connects to the node's client port, lets `send` write whatever it likes (a write error
/// there means the server answered and closed early), and returns all the server answered.
fn raw_exchange(node: &Node, send: impl FnOnce(&mut std::net::TcpStream)) -> String {
    use std::io::Read;
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", node.cluster.nodes[0].client_port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    send(&mut stream);
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

fn huge_request_head(node: &Node, length: usize) -> String {
    use std::io::Write;
    raw_exchange(node, |stream| {
        let head = format!(
            "PUT /kv/huge HTTP/1.1\r\nhost: x\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).unwrap();
    })
}

/// Sends a chunked `PUT /kv/chunked` of `length` bytes in 16 KiB chunks, stopping early if
/// the server answers (and closes) first; returns what the server answered.
fn chunked_request_head(node: &Node, length: usize) -> String {
    use std::io::Write;
    raw_exchange(node, |stream| {
        let head = "PUT /kv/chunked HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
        stream.write_all(head.as_bytes()).unwrap();
        let chunk = vec![b'x'; 16 * 1024];
        for _ in 0..length / chunk.len() {
            let sent = stream
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .and_then(|()| stream.write_all(&chunk))
                .and_then(|()| stream.write_all(b"\r\n"));
            if sent.is_err() {
                return; // the server answered and closed the connection
            }
        }
        let _ = stream.write_all(b"0\r\n\r\n");
    })
}

#[test]
fn request_ids_are_generated_or_echoed() {
    let node = Node::start();
    let echoed = node.send(Method::GET, "/health", &[("x-request-id", "abc-123")], "");
    assert_eq!(echoed.header("x-request-id"), Some("abc-123"));
    let generated = node.get("/health");
    let id = generated.header("x-request-id").expect("generated id");
    assert!(!id.is_empty());
    assert_ne!(node.get("/health").header("x-request-id"), Some(id));
}

#[test]
fn health_status_and_metrics() {
    let node = Node::start();
    let health = node.get("/health").json();
    assert_eq!(health["ok"], true);
    assert_eq!(
        (health["id"].clone(), health["role"].clone()),
        (json!("n1"), json!("leader"))
    );
    assert_eq!(health["leaderId"], "n1");
    node.send(Method::PUT, "/kv/m", &[], "v");
    let status = node.get("/raft/status").json();
    for field in [
        "id",
        "state",
        "term",
        "leaderId",
        "logLen",
        "firstIndex",
        "lastLogIndex",
        "lastLogTerm",
        "commitIndex",
        "lastApplied",
        "snapshotIndex",
        "peers",
    ] {
        assert!(
            status.get(field).is_some(),
            "/raft/status lacks {field}: {status}"
        );
    }
    assert_eq!(status["state"], "leader");
    assert!(status["commitIndex"].as_u64().unwrap() >= 2);
    assert_eq!(node.get("/raft/leader").json()["leaderId"], "n1");
    assert_eq!(node.get("/raft/state").json()["state"], "leader");
    let metrics = String::from_utf8(node.get("/metrics").body).unwrap();
    for name in [
        "kvstore_proposals_total",
        "kvstore_commits_total",
        "kvstore_applied_index",
        "kvstore_term",
        "kvstore_leader_changes_total",
        "kvstore_wal_fsync_seconds_bucket",
        "kvstore_wal_bytes",
        "kvstore_http_requests_total",
        "kvstore_http_request_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "metrics lack {name}:\n{metrics}");
    }
    assert!(metrics.contains(r#"route="/kv/{*key}""#), "{metrics}");
    // Raft status is on the raft port too.
    let raft_status =
        common::http_get(&format!("{}/raft/status", node.cluster.nodes[0].raft_url())).unwrap();
    assert_eq!(raft_status.0, 200);
}
