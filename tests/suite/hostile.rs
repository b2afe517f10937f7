//! A compromised, buggy or curious peer, speaking the replication protocol
//! with a pinned office's real node certificate: what it can no longer
//! learn, grow or stall. Each test reproduces a finding of a review read
//! as an attacker (issue 16) and failed before its fix.

use std::collections::BTreeSet;
use std::time::Duration;

use casemesh::domain::RecordVersion;
use casemesh::protocol::pb::{self, replication_client::ReplicationClient};
use tokio::sync::mpsc;
use tonic::{Code, Status, Streaming};

use super::cluster::{TestCluster, TestNode, eventually};

/// A `Pull` stream opened by hand as a pinned peer's node.
pub struct RawPull {
    up: mpsc::Sender<pb::PullUp>,
    down: Streaming<pb::PullDown>,
}

/// What a stream carried until it went idle (its first heartbeat).
#[derive(Debug, Default)]
pub struct Received {
    /// Record ids of versions, revocations and closed grants, in order.
    pub versions: Vec<String>,
    pub revoked: Vec<String>,
    pub closed: Vec<String>,
    /// Sequence numbers of every entry, in order.
    pub seqs: Vec<u64>,
    /// The last batch's `last_seq` (0: no batch).
    pub last_seq: u64,
}

impl Received {
    /// Every record id named, in versions or revocations.
    pub fn named(&self) -> BTreeSet<String> {
        self.versions.iter().chain(&self.revoked).cloned().collect()
    }
}

impl RawPull {
    /// Opens a stream from `origin` as `peer`'s node, starting after
    /// `after_seq`. The first message's status is not checked here.
    pub async fn open(origin: &TestNode, peer: &TestNode, after_seq: u64) -> Self {
        let (cert, key) = peer.node_identity();
        let ch = origin.connect_as(&cert, &key).await.unwrap();
        let (up, rx) = mpsc::channel(16);
        up.send(pb::PullUp {
            kind: Some(pb::pull_up::Kind::Start(pb::PullStart { after_seq })),
        })
        .await
        .unwrap();
        let down = ReplicationClient::new(ch)
            .pull(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Self { up, down }
    }

    /// Reads until the first heartbeat; the stream's error if it ends
    /// with one first.
    pub async fn until_idle(&mut self) -> Result<Received, Status> {
        let mut got = Received::default();
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(15), self.down.message())
                .await
                .expect("a message within 15 s")?
                .ok_or_else(|| Status::cancelled("the stream ended"))?;
            match msg.kind {
                Some(pb::pull_down::Kind::Batch(b)) => {
                    got.last_seq = b.last_seq;
                    for e in b.entries {
                        got.seqs.push(e.seq);
                        match e.kind {
                            Some(pb::feed_entry::Kind::Version(v)) => {
                                let r = RecordVersion::from_canonical(&v.canonical).unwrap();
                                got.versions.push(r.id.to_string());
                            }
                            Some(pb::feed_entry::Kind::RevokeRecordId(id)) => got.revoked.push(id),
                            Some(pb::feed_entry::Kind::GrantClosed(g)) => got.closed.push(g),
                            None => {}
                        }
                    }
                }
                Some(pb::pull_down::Kind::Heartbeat(_)) => return Ok(got),
                _ => {}
            }
        }
    }

    /// Reads, across heartbeats, until `done` holds for what arrived
    /// (within 30 s).
    pub async fn until(&mut self, done: impl Fn(&Received) -> bool) -> Received {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut all = Received::default();
        while !done(&all) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not within 30 s: {all:?}"
            );
            let got = self.until_idle().await.unwrap();
            all.versions.extend(got.versions);
            all.revoked.extend(got.revoked);
            all.closed.extend(got.closed);
            all.seqs.extend(got.seqs);
            all.last_seq = all.last_seq.max(got.last_seq);
        }
        all
    }

    /// Acknowledges everything up to `seq`.
    pub async fn ack(&self, seq: u64) {
        self.up
            .send(pb::PullUp {
                kind: Some(pb::pull_up::Kind::Ack(pb::Ack { seq })),
            })
            .await
            .unwrap();
    }

    /// The status the stream ends with, within 15 s.
    pub async fn ending(&mut self) -> Status {
        loop {
            let next = tokio::time::timeout(Duration::from_secs(15), self.down.message())
                .await
                .expect("the stream ends within 15 s");
            match next {
                Ok(Some(_)) => continue,
                Ok(None) => return Status::ok(""),
                Err(s) => return s,
            }
        }
    }
}

/// Acknowledges everything up to `seq` on `pull`, and waits until
/// `origin` took it: its outbox for `peer` is empty.
async fn ack_all(pull: &RawPull, origin: &TestNode, peer: &TestNode, seq: u64) {
    pull.ack(seq).await;
    let office = peer.office.to_string();
    eventually(
        Duration::from_secs(15),
        "the acknowledgement to be taken",
        || {
            let office = office.clone();
            async move {
                let peers = origin
                    .admin()
                    .await
                    .list_peers(pb::ListPeersRequest {})
                    .await
                    .ok()?
                    .into_inner()
                    .peers;
                peers
                    .iter()
                    .any(|p| p.office == office && p.outbox_pending == 0)
                    .then_some(())
            }
        },
    )
    .await;
}

/// Writes `n` records into `collection` at node `i`; returns their ids.
async fn put_records(cluster: &TestCluster, i: usize, collection: &str, n: usize) -> Vec<String> {
    let office = cluster.nodes[i].kit();
    let mut ids = Vec::new();
    for k in 0..n {
        let put = office
            .put(collection, "note", &format!("{collection} {k}"), "body")
            .await
            .unwrap();
        ids.push(put.id);
    }
    ids
}

/// Finding 1: after a revocation, a peer that never acknowledges the purge
/// and makes the origin queue its closed grants again (by acknowledging a
/// made-up sequence number and coming back from 0) learned the id of every
/// record added to the case since. Now a closed grant names again exactly
/// what it named when it closed, and an acknowledgement past what was sent
/// is refused.
#[tokio::test]
async fn a_revoked_peer_never_learns_of_records_added_after_the_revocation() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    cluster.pin(0, 1).await; // phila-da serves nyc-da; the test pulls by hand
    let before = put_records(&cluster, 0, "case-1", 3).await;
    let grant = cluster.grant_collection(0, 1, "case-1").await;
    let (phila, nyc) = (&cluster.nodes[0], &cluster.nodes[1]);

    let mut pull = RawPull::open(phila, nyc, 0).await;
    let got = pull.until_idle().await.unwrap();
    assert_eq!(
        got.named(),
        before.iter().cloned().collect(),
        "control: the grant"
    );
    pull.ack(got.last_seq).await;
    phila.kit().revoke(&grant).await.unwrap();
    let closed = pull.until(|got| !got.closed.is_empty()).await;
    assert_eq!(
        closed.revoked.iter().cloned().collect::<BTreeSet<_>>(),
        before.iter().cloned().collect()
    );
    assert_eq!(closed.closed, vec![grant.clone()]);
    let sent = closed.last_seq;
    pull.ack(sent).await;

    let after = put_records(&cluster, 0, "case-1", 5).await;
    // An acknowledgement of entries never sent is refused, and ends the
    // stream; nothing is forgotten for the peer.
    pull.ack(sent + 1_000_000).await;
    let refused = pull.ending().await;
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("only entries up to"),
        "{refused:?}"
    );

    // Coming back from 0 (as a peer that lost its state does) queues the
    // closed grant again: the same revocations, no record added since.
    let mut again = RawPull::open(phila, nyc, 0).await;
    let replay = again.until_idle().await.unwrap();
    let named = replay.named();
    for id in &after {
        assert!(
            !named.contains(id),
            "{id}, added after the revocation, was named to the revoked peer"
        );
    }
    assert_eq!(
        replay.revoked.iter().cloned().collect::<BTreeSet<_>>(),
        before.iter().cloned().collect(),
        "the revocations, replayed as they were"
    );
    assert_eq!(replay.closed, vec![grant]);
    cluster.stop_all().await;
}

/// Finding 2: a peer coming back from 0 again and again re-queued its
/// feed every time, holding the origin's writes back each time. Now it is
/// re-queued at most once per interval; a stream asking sooner is told when
/// to come back.
#[tokio::test]
async fn a_peer_restarting_its_feed_again_and_again_is_requeued_once_per_interval() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    cluster.pin(0, 1).await;
    put_records(&cluster, 0, "case-1", 2).await;
    cluster.grant_collection(0, 1, "case-1").await;
    let (phila, nyc) = (&cluster.nodes[0], &cluster.nodes[1]);

    let mut pull = RawPull::open(phila, nyc, 0).await;
    let got = pull.until_idle().await.unwrap();
    ack_all(&pull, phila, nyc, got.last_seq).await;
    drop(pull);
    // Lost state, first time: re-queued.
    let mut lost = RawPull::open(phila, nyc, 0).await;
    let requeued = lost.until_idle().await.unwrap();
    assert_eq!(requeued.versions.len(), 2, "control: the whole grant again");
    ack_all(&lost, phila, nyc, requeued.last_seq).await;
    drop(lost);
    // Lost again at once: refused, with when to come back.
    let mut again = RawPull::open(phila, nyc, 0).await;
    let refused = again.until_idle().await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("try again in"), "{refused:?}");
    cluster.stop_all().await;
}

/// Finding 9: one numbering for every peer's feed let a peer measure, by
/// the gaps in its own, what was queued for the others. Each feed is now
/// numbered on its own.
#[tokio::test]
async fn a_peers_feed_numbers_do_not_move_with_other_peers_feeds() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da", "mpls-da"]).await;
    cluster.pin(0, 1).await;
    cluster.pin(0, 2).await;
    cluster.grant_collection(0, 1, "case-1").await;
    cluster.grant_collection(0, 2, "case-2").await;
    for round in 0..3 {
        put_records(&cluster, 0, "case-1", 1).await;
        // Activity nyc-da must not be able to see.
        put_records(&cluster, 0, "case-2", 4 + round).await;
    }
    let (phila, nyc) = (&cluster.nodes[0], &cluster.nodes[1]);
    let got = RawPull::open(phila, nyc, 0)
        .await
        .until_idle()
        .await
        .unwrap();
    assert_eq!(got.versions.len(), 3);
    assert_eq!(
        got.seqs,
        vec![1, 2, 3],
        "nyc-da's feed counts nyc-da's entries only"
    );
    cluster.stop_all().await;
}
