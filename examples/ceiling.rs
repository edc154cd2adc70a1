//! A do-nothing HTTP key-value server: the ceiling any HTTP store can reach on this machine.
//!
//! Same framework (axum on a multi-threaded tokio runtime) and the same routes as a node's
//! `/kv/{key}`, but a `PUT` only inserts into a `HashMap` behind a mutex and a `GET` only
//! looks it up: no consensus, no disk, no middleware. Load it with
//! `kvctl --seeds http://127.0.0.1:18090 bench --target direct` or `wrk`.
//!
//! ```sh
//! cargo run --release --example ceiling -- 127.0.0.1:18090
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

type Map = Arc<Mutex<HashMap<String, Bytes>>>;

async fn put(State(map): State<Map>, Path(key): Path<String>, value: Bytes) -> Response {
    map.lock().expect("map lock").insert(key, value);
    (StatusCode::OK, "{\"ok\":true}").into_response()
}

async fn read(State(map): State<Map>, Path(key): Path<String>) -> Response {
    match map.lock().expect("map lock").get(&key) {
        Some(value) => value.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18090".into());
    let map: Map = Arc::default();
    let app = Router::new()
        .route("/kv/{*key}", get(read).put(put))
        .with_state(map);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("ceiling: listening on http://{addr}");
    axum::serve(listener, app).await
}
