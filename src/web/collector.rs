//! `/metrics`: the node's counters ([`crate::metrics`]) and the gauges a
//! [`Snapshot`] gives, in the Prometheus text format.
//!
//! Every name here is listed in `docs/operating.md` ("Metrics"); a test
//! (`tests/suite/ops_metrics.rs`) scrapes a running node and checks that
//! the alert rules and the dashboard in `deploy/` use only names it
//! exports.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::observe::{CertKind, Snapshot};
use crate::metrics::{CommitStats, Metrics};

/// The text of one scrape.
pub fn render(metrics: &Metrics, commits: &CommitStats, snapshot: Snapshot) -> String {
    for p in &snapshot.peers {
        metrics.peer_known(p.view.peer.office.as_str());
    }
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    commits.register(&mut registry);
    registry.register_collector(Box::new(Gauges(snapshot)));
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
    text
}

struct Gauges(Snapshot);

impl std::fmt::Debug for Gauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gauges")
    }
}

type Labels = Vec<(&'static str, String)>;

/// One gauge family: its samples, each with its labels.
fn family<V: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, V)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        metric.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

fn one<V>(value: V) -> [(Labels, V); 1] {
    [(Vec::new(), value)]
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

impl Collector for Gauges {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let peer = |office: &crate::domain::OfficeId| vec![("peer", office.to_string())];
        family(
            &mut e,
            "casemesh_build_info",
            "The casemesh software running (always 1)",
            [(
                vec![(
                    "version",
                    concat!(
                        env!("CARGO_PKG_VERSION"),
                        " (",
                        env!("CASEMESH_COMMIT"),
                        ")"
                    )
                    .to_owned(),
                )],
                1u64,
            )],
        )?;
        family(
            &mut e,
            "casemesh_records",
            "Records held, by origin office (this office: its own; others: replicas)",
            s.records_by_origin
                .iter()
                .map(|(origin, n)| (vec![("origin", origin.clone())], *n)),
        )?;
        family(
            &mut e,
            "casemesh_versions",
            "Record versions stored",
            one(s.versions),
        )?;
        family(
            &mut e,
            "casemesh_blobs",
            "Files stored, whole and hash-checked",
            one(s.blobs),
        )?;
        family(
            &mut e,
            "casemesh_blob_bytes",
            "Bytes of the files stored",
            one(s.blob_bytes),
        )?;
        family(
            &mut e,
            "casemesh_fetches_given_up",
            "Files of replicas not fetched and not tried again while the node runs (over this node's size limit, or not shared by their origin); `casemesh status` names them",
            one(s.transfers.iter().filter(|t| t.gave_up).count() as u64),
        )?;
        let fetching = s.transfers.iter().filter(|t| !t.gave_up);
        family(
            &mut e,
            "casemesh_fetches_in_progress",
            "Files of replicas being fetched from their origin office",
            one(fetching.clone().count() as u64),
        )?;
        family(
            &mut e,
            "casemesh_fetch_received_bytes",
            "Bytes received so far of the files being fetched",
            one(fetching.clone().map(|t| t.received).sum::<u64>()),
        )?;
        family(
            &mut e,
            "casemesh_fetch_size_bytes",
            "Total size of the files being fetched",
            one(fetching.map(|t| t.size).sum::<u64>()),
        )?;
        if let Some(free) = s.disk_free_bytes {
            family(
                &mut e,
                "casemesh_disk_free_bytes",
                "Free bytes on the disk holding the data directory",
                one(free),
            )?;
        }
        family(
            &mut e,
            "casemesh_writes_refused",
            "1 while writes are refused (disk below its reserve, or the store failed); `casemesh status` says why",
            one(u64::from(s.writes_refused.is_some())),
        )?;
        family(
            &mut e,
            "casemesh_peer_up",
            "1 while the link to the peer is connected",
            s.peers
                .iter()
                .map(|p| (peer(&p.view.peer.office), u64::from(p.view.link.connected))),
        )?;
        family(
            &mut e,
            "casemesh_peer_last_contact_age_seconds",
            "Seconds since the peer was last heard from (absent if never)",
            s.peers
                .iter()
                .filter(|p| p.view.link.last_contact_ms != 0)
                .map(|p| {
                    let age = s.at_ms.saturating_sub(p.view.link.last_contact_ms);
                    (peer(&p.view.peer.office), secs(age))
                }),
        )?;
        family(
            &mut e,
            "casemesh_peer_outbox_pending",
            "Entries queued for the peer and not yet acknowledged (lag in entries)",
            s.peers
                .iter()
                .map(|p| (peer(&p.view.peer.office), p.view.outbox_pending)),
        )?;
        family(
            &mut e,
            "casemesh_peer_lag_seconds",
            "Age of the oldest entry queued for the peer and not yet acknowledged (0: none)",
            s.peers
                .iter()
                .map(|p| (peer(&p.view.peer.office), secs(p.lag_ms))),
        )?;
        family(
            &mut e,
            "casemesh_peer_purges_pending",
            "Grants to the peer that ended and whose purge it has not acknowledged",
            s.peers
                .iter()
                .map(|p| (peer(&p.view.peer.office), p.purges_pending)),
        )?;
        family(
            &mut e,
            "casemesh_peer_oldest_purge_pending_seconds",
            "How long the oldest of those has waited for the peer's acknowledgement (0: none)",
            s.peers.iter().map(|p| {
                let waited = match p.oldest_purge_since_ms {
                    0 => 0,
                    since => s.at_ms.saturating_sub(since),
                };
                (peer(&p.view.peer.office), secs(waited))
            }),
        )?;
        family(
            &mut e,
            "casemesh_audit_entries",
            "Entries in the audit log",
            one(s.audit_entries),
        )?;
        if let Some(head) = &s.last_signed_head {
            family(
                &mut e,
                "casemesh_audit_head_age_seconds",
                "Seconds since the office last signed its audit log's head",
                one(secs(s.at_ms.saturating_sub(head.at_ms))),
            )?;
        }
        family(
            &mut e,
            "casemesh_certificate_expiry_timestamp_seconds",
            "When a certificate expires, in Unix seconds (users: the earliest among the valid certificates of a role)",
            s.certificates.iter().map(|(kind, at_ms)| {
                let labels = match kind {
                    CertKind::Node => vec![("certificate", "node".to_owned())],
                    CertKind::OfficeCa => vec![("certificate", "office_ca".to_owned())],
                    CertKind::PeerCa(office) => vec![
                        ("certificate", "peer_ca".to_owned()),
                        ("peer", office.to_string()),
                    ],
                    CertKind::User(role) => vec![
                        ("certificate", "user".to_owned()),
                        ("role", role.as_str().to_owned()),
                    ],
                };
                (labels, at_ms / 1000)
            }),
        )?;
        Ok(())
    }
}
