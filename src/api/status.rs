//! `/raft/leader`, `/raft/state` and `/raft/status`: served on both ports.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use crate::node::NodeHandle;

/// The status routes, with their own state so both ports can merge them.
pub fn status_router(node: NodeHandle) -> Router {
    Router::new()
        .route("/raft/leader", get(leader))
        .route("/raft/state", get(state))
        .route(
            "/raft/status",
            get(|State(node): State<NodeHandle>| async move { Json(status_json(&node)) }),
        )
        .with_state(node)
}

async fn leader(State(node): State<NodeHandle>) -> Json<Value> {
    let (_, term, leader) = node.role_term_leader();
    let url = leader.as_deref().and_then(|id| node.client_url(id));
    Json(json!({"ok": true, "leaderId": leader, "leader": url, "term": term}))
}

async fn state(State(node): State<NodeHandle>) -> Json<Value> {
    let (role, term, leader) = node.role_term_leader();
    Json(
        json!({"ok": true, "id": node.id(), "state": role.to_string(), "term": term, "leaderId": leader}),
    )
}

/// The `/raft/status` document (field names as in ARCHITECTURE.md).
pub fn status_json(node: &NodeHandle) -> Value {
    let status = node.status();
    let raft = &status.raft;
    let mut body = json!({
        "ok": status.failed.is_none(),
        "id": node.id(),
        "state": raft.role.to_string(),
        "term": raft.term,
        "leaderId": raft.leader,
        "leader": raft.leader.as_deref().and_then(|id| node.client_url(id)),
        "logLen": raft.last_index.saturating_sub(raft.first_index.saturating_sub(1)),
        "firstIndex": raft.first_index,
        "lastLogIndex": raft.last_index,
        "lastLogTerm": raft.last_term,
        "commitIndex": raft.commit,
        "lastApplied": raft.applied,
        "snapshotIndex": status.snapshot_index,
        "compactedIndex": raft.snapshot_index,
        "raftUrl": node.raft_url,
        "peers": node.directory.peer_raft_urls.keys().collect::<Vec<_>>(),
        "stateHash": format!("{:016x}", status.state_hash),
        "keys": status.keys,
        "walBytes": status.wal_bytes,
        "failed": status.failed,
    });
    if !raft.progress.is_empty() {
        let next: Map<String, Value> = raft
            .progress
            .iter()
            .map(|(peer, progress)| (peer.clone(), json!(progress.next_index)))
            .collect();
        let matched: Map<String, Value> = raft
            .progress
            .iter()
            .map(|(peer, progress)| (peer.clone(), json!(progress.match_index)))
            .collect();
        body["nextIndex"] = Value::Object(next);
        body["matchIndex"] = Value::Object(matched);
    }
    body
}
