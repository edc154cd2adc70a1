//! Serving a router on a listener, with the limits `axum::serve` does not set.
//!
//! `axum::serve` runs hyper without a timer, so hyper's header read timeout never fires: a
//! client that connects and sends nothing, sends its headers a byte a minute, or keeps an
//! idle keep-alive connection open, holds a task and a file descriptor forever, and enough
//! of them exhaust the node's descriptors. Here every connection gets:
//!
//! - a header read timeout ([`ServeLimits::header_read_timeout`]), which also bounds the idle
//!   wait between two requests on a keep-alive connection;
//! - a place among at most [`ServeLimits::connections_max`] open connections; past that, new
//!   connections wait in the kernel's accept queue instead of costing descriptors.
//!
//! Our own clients ([`crate::client`], the peer transport) drop idle pooled connections well
//! before this timeout ([`CLIENT_POOL_IDLE`]), so they never send a request on a connection
//! the server is closing (which would make a write's outcome unknown).
//!
//! Connections may be upgraded (`101 Switching Protocols`): the raft port's peer stream
//! ([`crate::transport`]) is one. An upgraded connection leaves hyper and its slot here; the
//! route that upgraded it bounds how many it keeps.
//!
//! Shutdown is graceful: stop accepting, let open requests finish (bounded by
//! [`SHUTDOWN_GRACE`]). hyper-util's `GracefulShutdown` does not take upgradeable
//! connections, so each connection task here watches a stop signal itself and then asks
//! hyper to finish the request in progress and close.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// How long open requests may run after shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long our HTTP clients keep an idle pooled connection: well under the servers'
/// header read timeout (see the module doc).
pub const CLIENT_POOL_IDLE: Duration = Duration::from_secs(20);

/// Per-connection limits.
#[derive(Clone, Copy, Debug)]
pub struct ServeLimits {
    /// Longest wait for a request's headers, idle time between requests included.
    pub header_read_timeout: Duration,
    /// Most connections open at once.
    pub connections_max: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        // 30 s: hyper's own default, half again the clients' idle pool timeout; 4,096
        // connections per port: well under the usual 65,536-descriptor limit, with room for
        // the WAL, snapshots and peer clients (and see `clamp_to_descriptors`).
        ServeLimits {
            header_read_timeout: Duration::from_secs(30),
            connections_max: 4096,
        }
    }
}

/// Descriptors kept free for everything that is not a client connection: WAL segments,
/// snapshots, peer connections, the listeners.
const DESCRIPTORS_RESERVED: u64 = 256;

impl ServeLimits {
    /// Lowers `connections_max` so that `ports` listeners at their cap cannot use up the
    /// process's descriptor limit (`RLIMIT_NOFILE`), keeping `DESCRIPTORS_RESERVED` (256) free.
    pub fn clamp_to_descriptors(mut self, ports: u64) -> ServeLimits {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return self;
        }
        let usable = limit.rlim_cur.saturating_sub(DESCRIPTORS_RESERVED) / ports.max(1);
        if (self.connections_max as u64) > usable {
            tracing::warn!(
                descriptors = limit.rlim_cur,
                connections_max = usable,
                "lowering the connection cap to fit the descriptor limit"
            );
            self.connections_max = usable.max(1) as usize;
        }
        self
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then drains open requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) {
    // HTTP/1.1 only, on hyper's own builder: hyper-util's version-detecting builder reads
    // the first bytes before hyper's timeout starts, so a client that sends nothing at all
    // would be held forever. Nothing here needs HTTP/2 or upgrades.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let slots = Arc::new(Semaphore::new(limits.connections_max));
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Reap finished connection tasks so the set holds only open ones.
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // E.g. out of descriptors: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut stopped = stopped.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            let stop = async move {
                let _ = stopped.wait_for(|stopped| *stopped).await;
            };
            tokio::select! {
                _ = connection.as_mut() => {}
                () = stop => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        tracing::warn!("requests still open after the shutdown grace period");
    }
}
