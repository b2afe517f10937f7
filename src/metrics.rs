//! The node's counters and histograms: what the code counts as it works
//! (calls answered, batches sent and applied, commits, refused
//! handshakes). Gauges read off the node's state at each scrape live with
//! the endpoint that serves them (`web::collector`).
//!
//! Nothing here is global: each node owns its [`Metrics`] and its
//! [`CommitStats`], so several nodes in one process count apart. Labels are
//! office ids, gRPC service and method names, status codes and listener
//! names: never a record, a title, a user or anything a caller chose, so a
//! family cannot grow past the peers pinned and the methods served.

use std::collections::HashSet;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A gRPC method and how it was answered.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcCode {
    pub service: String,
    pub method: String,
    pub code: String,
}

/// A gRPC method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcMethod {
    pub service: String,
    pub method: String,
}

/// A pinned peer office.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    pub peer: String,
}

/// The office a file came from.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OriginLabel {
    pub origin: String,
}

/// Which of the node's listeners.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Call durations: 100 µs to about 52 s.
fn rpc_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

/// The node's counters, fed by the code that does the work.
pub struct Metrics {
    /// The paths of the RPCs served, the only ones named in labels.
    known: HashSet<String>,
    rpc_handled: Family<RpcCode, Counter>,
    rpc_duration: HistogramFamily<RpcMethod>,
    batches_sent: Family<PeerLabel, Counter>,
    bytes_sent: Family<PeerLabel, Counter>,
    batches_applied: Family<PeerLabel, Counter>,
    bytes_applied: Family<PeerLabel, Counter>,
    rejected: Family<PeerLabel, Counter>,
    fetched_bytes: Family<OriginLabel, Counter>,
    handshakes_refused: Family<ListenerLabel, Counter>,
}

impl Metrics {
    /// Counters for a node serving the RPCs `known` (`/service/method`).
    pub fn new(known: impl IntoIterator<Item = String>) -> Self {
        Self {
            known: known.into_iter().collect(),
            rpc_handled: Family::default(),
            rpc_duration: Family::new_with_constructor(rpc_histogram),
            batches_sent: Family::default(),
            bytes_sent: Family::default(),
            batches_applied: Family::default(),
            bytes_applied: Family::default(),
            rejected: Family::default(),
            fetched_bytes: Family::default(),
            handshakes_refused: Family::default(),
        }
    }
}

fn peer(office: &str) -> PeerLabel {
    PeerLabel {
        peer: office.to_owned(),
    }
}

impl Metrics {
    /// Adds every family to `registry` (names are the ones
    /// `docs/operating.md` lists under "Metrics").
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "casemesh_rpc_handled",
            "gRPC calls answered, by service, method and status code",
            self.rpc_handled.clone(),
        );
        registry.register(
            "casemesh_rpc_duration_seconds",
            "Time to answer a gRPC call (a stream: until its first reply)",
            self.rpc_duration.clone(),
        );
        registry.register(
            "casemesh_peer_batches_sent",
            "Feed batches sent to the peer",
            self.batches_sent.clone(),
        );
        registry.register(
            "casemesh_peer_bytes_sent",
            "Bytes of the feed batches sent to the peer",
            self.bytes_sent.clone(),
        );
        registry.register(
            "casemesh_peer_batches_applied",
            "Batches from the peer's feed applied here",
            self.batches_applied.clone(),
        );
        registry.register(
            "casemesh_peer_bytes_applied",
            "Bytes of the batches from the peer applied here",
            self.bytes_applied.clone(),
        );
        registry.register(
            "casemesh_peer_versions_rejected",
            "Entries of the peer's feed refused: versions failing their checks, revocations of records it does not own",
            self.rejected.clone(),
        );
        registry.register(
            "casemesh_fetched_bytes",
            "Bytes of files fetched from their origin office and stored",
            self.fetched_bytes.clone(),
        );
        registry.register(
            "casemesh_handshakes_refused",
            "TLS connections refused at the handshake, by listener",
            self.handshakes_refused.clone(),
        );
    }

    /// A call to `path` (`/service/method`) answered with `code` after
    /// `seconds`. Paths outside the services served are counted under
    /// `unknown`, so a caller cannot add label values at will.
    pub fn rpc(&self, path: &str, code: &str, seconds: f64) {
        let (service, method) = split_path(&self.known, path);
        self.rpc_handled
            .get_or_create(&RpcCode {
                service: service.clone(),
                method: method.clone(),
                code: code.to_owned(),
            })
            .inc();
        self.rpc_duration
            .get_or_create(&RpcMethod { service, method })
            .observe(seconds);
    }

    pub fn batch_sent(&self, office: &str, bytes: usize) {
        let label = peer(office);
        self.batches_sent.get_or_create(&label).inc();
        self.bytes_sent.get_or_create(&label).inc_by(bytes as u64);
    }

    pub fn batch_applied(&self, office: &str, bytes: usize, rejected: usize) {
        let label = peer(office);
        self.batches_applied.get_or_create(&label).inc();
        self.bytes_applied
            .get_or_create(&label)
            .inc_by(bytes as u64);
        if rejected > 0 {
            self.rejected.get_or_create(&label).inc_by(rejected as u64);
        }
    }

    pub fn fetched(&self, origin: &str, bytes: u64) {
        self.fetched_bytes
            .get_or_create(&OriginLabel {
                origin: origin.to_owned(),
            })
            .inc_by(bytes);
    }

    /// Shows a pinned peer's counters from the start, at 0, so that a
    /// first batch or rejection is a change Prometheus sees (a series that
    /// appears at 1 is missed by `increase()`).
    pub fn peer_known(&self, office: &str) {
        let label = peer(office);
        for family in [
            &self.batches_sent,
            &self.bytes_sent,
            &self.batches_applied,
            &self.bytes_applied,
            &self.rejected,
        ] {
            let _ = family.get_or_create(&label);
        }
        let _ = self.fetched_bytes.get_or_create(&OriginLabel {
            origin: office.to_owned(),
        });
    }

    /// Shows a listener's refused handshakes from the start, at 0.
    pub fn listener_known(&self, listener: &'static str) {
        let _ = self
            .handshakes_refused
            .get_or_create(&ListenerLabel { listener });
    }

    pub fn handshake_refused(&self, listener: &'static str) {
        self.handshakes_refused
            .get_or_create(&ListenerLabel { listener })
            .inc();
    }
}

/// `("casemesh.v1.Records", "Put")` for `/casemesh.v1.Records/Put` if it
/// is one of `known`; otherwise `unknown` for both, so a caller's invented
/// paths cannot add label values.
fn split_path(known: &HashSet<String>, path: &str) -> (String, String) {
    match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
        Some((service, method)) if known.contains(path) => (service.to_owned(), method.to_owned()),
        _ => ("unknown".to_owned(), "unknown".to_owned()),
    }
}

/// Group commit, as the commit thread sees it.
#[derive(Clone)]
pub struct CommitStats {
    /// Writes answered by one flush.
    pub batch_size: Histogram,
    /// How long each flush (fsync) took.
    pub flush_seconds: Histogram,
}

impl Default for CommitStats {
    fn default() -> Self {
        Self {
            // 1 to 4096 writes.
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            // 50 µs to about 3.3 s.
            flush_seconds: Histogram::new(exponential_buckets(0.00005, 2.0, 17)),
        }
    }
}

impl CommitStats {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "casemesh_commit_batch_size",
            "Writes made durable by one group commit (one fsync)",
            self.batch_size.clone(),
        );
        registry.register(
            "casemesh_commit_flush_seconds",
            "Duration of each group commit's flush (fsync)",
            self.flush_seconds.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> HashSet<String> {
        ["/casemesh.v1.Records/Put".to_owned()].into()
    }

    #[test]
    fn only_known_paths_become_labels() {
        let s = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        let known = known();
        let split = |p: &str| split_path(&known, p);
        assert_eq!(
            split("/casemesh.v1.Records/Put"),
            s("casemesh.v1.Records", "Put")
        );
        assert_eq!(split("/casemesh.v1.Records/Put2"), s("unknown", "unknown"));
        assert_eq!(split("/evil.Service/X"), s("unknown", "unknown"));
        assert_eq!(split("garbage"), s("unknown", "unknown"));
    }

    #[test]
    fn counts_appear_in_the_text_format() {
        let m = Metrics::new(known());
        let mut registry = Registry::default();
        m.register(&mut registry);
        m.rpc("/casemesh.v1.Records/Put", "OK", 0.002);
        m.batch_sent("nyc-da", 100);
        m.batch_sent("nyc-da", 50);
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                "casemesh_rpc_handled_total{service=\"casemesh.v1.Records\",method=\"Put\",code=\"OK\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("casemesh_peer_bytes_sent_total{peer=\"nyc-da\"} 150"),
            "{text}"
        );
        assert!(text.contains("casemesh_rpc_duration_seconds_count{service=\"casemesh.v1.Records\",method=\"Put\"} 1"), "{text}");
    }
}
