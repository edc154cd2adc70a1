//! Prometheus metrics, served as text on `GET /metrics`.
//!
//! One [`Metrics`] value per node, shared by the driver, the transport and the HTTP API.
//! Built on `prometheus-client` (the Prometheus project's own Rust client): counters and
//! gauges are atomics, so updating them on the write path costs a few nanoseconds.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of an HTTP request: the matched route template and the response status. Shared
/// strings, so that counting a request allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route template, e.g. `/kv/{*key}`, so keys do not explode the label space.
    pub route: Arc<str>,
    /// The request method (`OTHER` for a method outside the standard ones).
    pub method: &'static str,
    /// The response status code.
    pub status: u16,
}

/// Labels of a per-route latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route template.
    pub route: Arc<str>,
}

/// Labels for peer traffic counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    /// The peer's node id.
    pub peer: String,
}

/// All metrics of one node.
pub struct Metrics {
    registry: Registry,
    /// Proposals handed to the raft core.
    pub proposals: Counter,
    /// Committed entries applied to the store.
    pub commits: Counter,
    /// The store's applied index.
    pub applied_index: Gauge,
    /// The node's current term.
    pub term: Gauge,
    /// How often the known leader changed.
    pub leader_changes: Counter,
    /// 1 if this node is the leader, else 0.
    pub is_leader: Gauge,
    /// Latency of each WAL save (one write and one fdatasync), in seconds.
    pub wal_fsync_seconds: Histogram,
    /// Bytes of WAL on disk.
    pub wal_bytes: Gauge,
    /// HTTP requests by route, method and status.
    pub http_requests: Family<HttpLabels, Counter>,
    /// HTTP request latency by route, in seconds.
    pub http_request_seconds: Family<RouteLabels, Histogram>,
    /// Raft messages sent to a peer.
    pub peer_messages_sent: Family<PeerLabels, Counter>,
    /// Raft messages dropped for a peer (queue full or send failed).
    pub peer_messages_dropped: Family<PeerLabels, Counter>,
    /// Raft messages from a peer dropped on arrival: the driver's queue was full, or it had
    /// stopped.
    pub peer_messages_refused: Family<PeerLabels, Counter>,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    // 50 µs .. ~3.3 s, doubling: fsyncs on fast disks sit at the bottom, stalls at the top.
    prometheus_client::metrics::histogram::exponential_buckets(0.000_05, 2.0, 17)
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("kvstore");
        let metrics = Metrics {
            proposals: Counter::default(),
            commits: Counter::default(),
            applied_index: Gauge::default(),
            term: Gauge::default(),
            leader_changes: Counter::default(),
            is_leader: Gauge::default(),
            wal_fsync_seconds: Histogram::new(latency_buckets()),
            wal_bytes: Gauge::default(),
            http_requests: Family::default(),
            http_request_seconds: Family::new_with_constructor(
                || Histogram::new(latency_buckets()),
            ),
            peer_messages_sent: Family::default(),
            peer_messages_dropped: Family::default(),
            peer_messages_refused: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "proposals",
            "Proposals handed to raft",
            metrics.proposals.clone(),
        );
        registry.register(
            "commits",
            "Committed entries applied",
            metrics.commits.clone(),
        );
        registry.register(
            "applied_index",
            "Last applied log index",
            metrics.applied_index.clone(),
        );
        registry.register("term", "Current raft term", metrics.term.clone());
        registry.register(
            "leader_changes",
            "Changes of the known leader",
            metrics.leader_changes.clone(),
        );
        registry.register(
            "is_leader",
            "1 if this node leads",
            metrics.is_leader.clone(),
        );
        registry.register(
            "wal_fsync_seconds",
            "Latency of a WAL write plus fdatasync",
            metrics.wal_fsync_seconds.clone(),
        );
        registry.register(
            "wal_bytes",
            "Bytes of WAL on disk",
            metrics.wal_bytes.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests",
            metrics.http_requests.clone(),
        );
        registry.register(
            "http_request_seconds",
            "HTTP request latency",
            metrics.http_request_seconds.clone(),
        );
        registry.register(
            "peer_messages_sent",
            "Raft messages sent",
            metrics.peer_messages_sent.clone(),
        );
        registry.register(
            "peer_messages_dropped",
            "Raft messages dropped (queue full or send failed)",
            metrics.peer_messages_dropped.clone(),
        );
        registry.register(
            "peer_messages_refused",
            "Raft messages from a peer dropped on arrival (the driver's queue was full, or it had stopped)",
            metrics.peer_messages_refused.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing metrics to a String cannot fail");
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_registered_metrics() {
        let metrics = Metrics::new();
        metrics.proposals.inc();
        metrics.wal_fsync_seconds.observe(0.0002);
        metrics
            .http_requests
            .get_or_create(&HttpLabels {
                route: "/kv/{*key}".into(),
                method: "PUT",
                status: 200,
            })
            .inc();
        let text = metrics.encode();
        assert!(text.contains("kvstore_proposals_total 1"), "{text}");
        assert!(text.contains("kvstore_wal_fsync_seconds_bucket"), "{text}");
        assert!(text.contains("status=\"200\""), "{text}");
    }
}
