//! A compromised, buggy or curious peer, speaking the replication protocol
//! with a pinned office's real node certificate: what it can no longer
//! learn, grow or stall. Each test reproduces a finding of a review read
//! as an attacker (issue 16) and failed before its fix.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use casemesh::domain::sharing::{GrantId, PurgeAck};
use casemesh::domain::{OfficeId, RecordId, RecordVersion};
use casemesh::identity::tls::{PemIdentity, TrustStore, server_config};
use casemesh::identity::{OfficeCa, OfficeSigner};
use casemesh::protocol::pb::{self, replication_client::ReplicationClient};
use casemesh::protocol::transport;
use rustls_pki_types::CertificateDer;
use tokio::sync::mpsc;
use tonic::{Code, Status, Streaming};

use super::blobkit::{MIB, upload};
use super::cluster::{TestCluster, TestNode, all_of_action, eventually, holdings, of_action};
use super::scripted::{Say, ScriptedOrigin};

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
        let start = pb::PullStart {
            after_seq,
            record_encoding: casemesh::domain::record::RECORD_ENCODING,
        };
        Self::open_with(origin, peer, start).await
    }

    /// [`RawPull::open`] with the `PullStart` given (an older build's, say).
    pub async fn open_with(origin: &TestNode, peer: &TestNode, start: pb::PullStart) -> Self {
        let (cert, key) = peer.node_identity();
        let ch = origin.connect_as(&cert, &key).await.unwrap();
        let (up, rx) = mpsc::channel(16);
        up.send(pb::PullUp {
            kind: Some(pb::pull_up::Kind::Start(start)),
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

    /// Sends a purge acknowledgement.
    pub async fn purge_ack(&self, ack: &PurgeAck) {
        self.up
            .send(pb::PullUp {
                kind: Some(pb::pull_up::Kind::PurgeAck(
                    casemesh::protocol::convert::purge_ack_to_pb(ack),
                )),
            })
            .await
            .unwrap();
    }

    /// Sends any message up the stream.
    pub async fn send(&self, kind: pb::pull_up::Kind) {
        self.up.send(pb::PullUp { kind: Some(kind) }).await.unwrap();
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

/// The office CA of `node`, with its key: what a compromised office holds.
pub fn office_ca(node: &TestNode) -> OfficeCa {
    let p = node.paths();
    OfficeCa::load(
        &node.office,
        &std::fs::read_to_string(p.office_ca()).unwrap(),
        &std::fs::read_to_string(p.office_key()).unwrap(),
    )
    .unwrap()
}

/// Stops node `i` and serves, on its address and with its own node
/// certificate, a replication origin that sends `batches` to whoever pulls
/// (the other nodes of the cluster), then heartbeats.
pub async fn impersonate(
    cluster: &mut TestCluster,
    i: usize,
    batches: Vec<pb::Batch>,
) -> tokio::task::JoinHandle<Result<(), tonic::transport::Error>> {
    let said = batches
        .into_iter()
        .map(|b| pb::PullDown {
            kind: Some(pb::pull_down::Kind::Batch(b)),
        })
        .collect();
    impersonate_saying(cluster, i, said).await
}

/// [`impersonate`], saying any messages in turn (then heartbeats).
pub async fn impersonate_saying(
    cluster: &mut TestCluster,
    i: usize,
    said: Vec<pb::PullDown>,
) -> tokio::task::JoinHandle<Result<(), tonic::transport::Error>> {
    impersonate_counting(cluster, i, said, Arc::default()).await
}

/// [`impersonate_saying`], counting the `FetchBlob` calls it answers
/// (`NOT_FOUND`, every one) into `fetches`.
pub async fn impersonate_counting(
    cluster: &mut TestCluster,
    i: usize,
    said: Vec<pb::PullDown>,
    fetches: Arc<std::sync::atomic::AtomicUsize>,
) -> tokio::task::JoinHandle<Result<(), tonic::transport::Error>> {
    let (_, open) = tokio::sync::watch::channel(true);
    impersonate_in_two_parts(cluster, i, said, open, Vec::new(), fetches).await
}

/// [`impersonate_counting`], saying `first`, then `then` once `gate` turns
/// true (then heartbeats).
pub async fn impersonate_in_two_parts(
    cluster: &mut TestCluster,
    i: usize,
    first: Vec<pb::PullDown>,
    gate: tokio::sync::watch::Receiver<bool>,
    then: Vec<pb::PullDown>,
    fetches: Arc<std::sync::atomic::AtomicUsize>,
) -> tokio::task::JoinHandle<Result<(), tonic::transport::Error>> {
    cluster.nodes[i].stop().await;
    let me = &cluster.nodes[i];
    let (node_cert, node_key) = me.node_identity();
    let ca = office_ca(me);
    let trust = Arc::new(
        TrustStore::new(me.office.clone(), ca.cert_der.clone(), Default::default()).unwrap(),
    );
    let peers = cluster
        .nodes
        .iter()
        .filter(|n| n.office != me.office)
        .map(|n| {
            let der = casemesh::identity::pki::certs_from_pem(&n.ca_pem()).unwrap();
            (n.office.clone(), CertificateDer::from(der[0].to_vec()))
        })
        .collect();
    trust.set_peers(peers).unwrap();
    let tls = server_config(
        PemIdentity::from_pem(&node_cert, &node_key).unwrap(),
        &trust,
    )
    .unwrap();
    let addr = me.addr;
    let listener = eventually(
        Duration::from_secs(10),
        "the stopped node's port",
        || async move { tokio::net::TcpListener::bind(addr).await.ok() },
    )
    .await;
    let (incoming, _accept) = transport::incoming(
        listener,
        Arc::new(tls),
        trust,
        Arc::new(|_, _| Box::pin(async {})),
        transport::AcceptOptions {
            handshake_timeout: Duration::from_secs(5),
            max_connections: 16,
            max_handshakes_per_source: 64,
        },
    );
    ScriptedOrigin::new(move |say: Say| {
        let (first, then, mut gate) = (first.clone(), then.clone(), gate.clone());
        async move {
            for msg in first {
                if say.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
            if gate.wait_for(|open| *open).await.is_err() {
                return;
            }
            for msg in then {
                if say.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
            loop {
                let hb = pb::PullDown {
                    kind: Some(pb::pull_down::Kind::Heartbeat(pb::Heartbeat {
                        now_ms: 0,
                        audit_head: None,
                    })),
                };
                if say.send(Ok(hb)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    })
    .counting_fetches(fetches)
    .serve(incoming)
}

/// A version of a new record of `origin`, in `case-1`.
pub fn version(origin: &OfficeId, title: &str) -> RecordVersion {
    let mut random = [0u8; 10];
    casemesh::domain::random_bytes(&mut random);
    RecordVersion {
        id: RecordId::generate(origin, casemesh::domain::now_ms(), random),
        version: 1,
        origin: origin.clone(),
        collection: "case-1".into(),
        kind: "k".into(),
        title: title.into(),
        content_type: "text/plain".into(),
        labels: Default::default(),
        body: bytes::Bytes::from_static(b"x"),
        created_at_ms: 1,
        updated_at_ms: 1,
        deleted: false,
        attachments: Vec::new(),
        subjects: Vec::new(),
    }
}

/// A feed entry carrying `v`, signed by `ca`.
pub fn signed_entry(seq: u64, ca: &OfficeCa, v: RecordVersion) -> pb::FeedEntry {
    let s = OfficeSigner::new(ca).sign(v).unwrap();
    pb::FeedEntry {
        seq,
        kind: Some(pb::feed_entry::Kind::Version(pb::ReplicatedVersion {
            canonical: s.canonical,
            signature: s.signature,
        })),
    }
}

/// Uploads a file of `size` bytes to `node` and lists it in a record, so
/// that its users may read it; returns its hash.
async fn listed_file(node: &TestNode, size: u64) -> Vec<u8> {
    let info = upload(node, "listed", size).await.unwrap();
    node.records()
        .await
        .put(pb::PutRequest {
            collection: "case-1".into(),
            kind: "video".into(),
            title: "bodycam".into(),
            attachments: vec![pb::Attachment {
                hash: info.hash.clone(),
                size,
                file_name: "bodycam.mp4".into(),
                media_type: "video/mp4".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    info.hash.to_vec()
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

/// phila-da (which serves nyc-da; the test pulls by hand as nyc-da) writes
/// 3 records into case-1 and grants it; once the stream has delivered and
/// acknowledged them, the grant is revoked. Returns the records, the grant,
/// the stream, and what it received up to the grant's closing.
async fn granted_then_revoked(
    cluster: &mut TestCluster,
) -> (Vec<String>, String, RawPull, Received) {
    cluster.pin(0, 1).await;
    let before = put_records(cluster, 0, "case-1", 3).await;
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
    (before, grant, pull, closed)
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
    let (before, grant, mut pull, closed) = granted_then_revoked(&mut cluster).await;
    let (phila, nyc) = (&cluster.nodes[0], &cluster.nodes[1]);
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

/// Finding 4: every closed grant in an origin's feed made the peer sign
/// and store a purge acknowledgement, for grants that never existed too.
/// Now a batch gets at most 64 new signatures, an origin at most 4,096
/// kept ones, and the rest is refused (counted in the audit log).
#[tokio::test]
async fn an_origin_cannot_make_a_peer_sign_without_limit() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    cluster.pin_all().await;
    let closed: Vec<pb::FeedEntry> = (1..=5000u64)
        .map(|n| pb::FeedEntry {
            seq: n,
            kind: Some(pb::feed_entry::Kind::GrantClosed(format!("g-{n:016x}"))),
        })
        .collect();
    let batch = pb::Batch {
        entries: closed,
        last_seq: 5000,
        audit_head: None,
    };
    let server = impersonate(&mut cluster, 0, vec![batch]).await;
    let nyc = &cluster.nodes[1];
    let signed = eventually(
        Duration::from_secs(30),
        "the batch to be applied",
        || async {
            let signed = of_action(nyc, "purge.acknowledged").await;
            (!signed.is_empty()).then_some(signed)
        },
    )
    .await;
    assert_eq!(signed.len(), 64, "at most 64 new signatures in a batch");
    let refused = of_action(nyc, "replica.rejected").await;
    assert_eq!(refused.len(), 1, "the first refusal, at once: {refused:#?}");
    assert!(
        refused[0]
            .outcome_message
            .contains("too many purge acknowledgements")
    );
    server.abort();
    // The rest are counted, in one entry written at the latest when the
    // node stops.
    cluster.nodes[1].restart().await;
    let nyc = &cluster.nodes[1];
    let refused = of_action(nyc, "replica.rejected").await;
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert!(
        refused[1]
            .detail
            .starts_with("4935 more refused within 60 s"),
        "{}",
        refused[1].detail
    );
    assert_eq!(of_action(nyc, "purge.acknowledged").await.len(), 64);
    cluster.stop_all().await;
}

/// Finding 7: times past year 9999 from a peer were kept, and crashed the
/// readers of the office that kept them. Now a version, a purge
/// acknowledgement or a signed head with such a time is refused when it
/// arrives.
#[tokio::test]
async fn times_past_year_9999_from_a_peer_are_refused_when_they_arrive() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    cluster.pin_all().await;
    let phila = cluster.nodes[0].office.clone();
    let phila_ca = office_ca(&cluster.nodes[0]);
    let good = version(&phila, "dated now");
    let good_id = good.id.to_string();
    let mut future = version(&phila, "dated past 9999");
    future.created_at_ms = u64::MAX;
    future.updated_at_ms = u64::MAX;
    let batch = pb::Batch {
        entries: vec![
            signed_entry(1, &phila_ca, future),
            signed_entry(2, &phila_ca, good),
        ],
        last_seq: 2,
        audit_head: None,
    };
    let server = impersonate(&mut cluster, 0, vec![batch]).await;
    let nyc = &cluster.nodes[1];
    eventually(
        Duration::from_secs(30),
        "the version dated now to arrive",
        || async { holdings(nyc).await.contains_key(&good_id).then_some(()) },
    )
    .await;
    assert_eq!(
        holdings(nyc).await.len(),
        1,
        "the one dated past 9999 is not kept"
    );
    let refused = of_action(nyc, "replica.rejected").await;
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert!(
        refused[0].outcome_message.contains("past 9999-12-31"),
        "{refused:#?}"
    );
    server.abort();
    cluster.stop_all().await;
}

/// Finding 7, the other way: a purge acknowledgement dated past year 9999,
/// properly signed by the peer's office, is refused by the origin; the
/// grant stays unconfirmed.
#[tokio::test]
async fn a_purge_acknowledgement_dated_past_year_9999_is_refused() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    cluster.pin(0, 1).await;
    put_records(&cluster, 0, "case-1", 1).await;
    let grant = cluster.grant_collection(0, 1, "case-1").await;
    let (phila, nyc) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut pull = RawPull::open(phila, nyc, 0).await;
    let got = pull.until_idle().await.unwrap();
    pull.ack(got.last_seq).await;
    phila.kit().revoke(&grant).await.unwrap();
    pull.until(|got| !got.closed.is_empty()).await;
    let mut ack = PurgeAck {
        grant: GrantId::parse(&grant).unwrap(),
        origin: phila.office.clone(),
        purged_by: nyc.office.clone(),
        purged_at_ms: u64::MAX,
        signature: Vec::new(),
    };
    ack.signature = OfficeSigner::new(&office_ca(nyc))
        .sign_bytes(&ack.canonical())
        .unwrap();
    pull.purge_ack(&ack).await;
    let refused = eventually(
        Duration::from_secs(15),
        "the refusal to be logged",
        || async {
            let refused = of_action(phila, "purge_ack.refused").await;
            (!refused.is_empty()).then_some(refused)
        },
    )
    .await;
    assert!(
        refused[0].outcome_message.contains("past 9999-12-31"),
        "{refused:#?}"
    );
    let grants = phila.kit().grants().await.unwrap();
    let g = grants.iter().find(|g| g.id == grant).unwrap();
    assert!(g.purge_ack.is_none(), "{g:?}");
    cluster.stop_all().await;
}

/// Finding 3: a refused request's fields went into its audit entry whole,
/// and peers could send 96 MiB requests: one `FetchBlob` with an 8 MiB
/// hash wrote a 16 MiB entry that no client could read back, so the
/// office's audit review stopped. Now peers' requests are limited to
/// 64 KiB, admin requests to 1 MiB, every field of an entry is clipped,
/// and the whole log still reads with a client's default message size.
#[tokio::test]
async fn oversized_requests_leave_small_entries_and_the_log_stays_readable() {
    use prost::Message;
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    cluster.pin_all().await;
    let (phila, nyc) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (cert, key) = nyc.node_identity();
    let peer = ReplicationClient::new(phila.connect_as(&cert, &key).await.unwrap());
    let fetch = |hash: Vec<u8>| {
        let mut peer = peer.clone();
        async move {
            peer.fetch_blob(pb::FetchBlobRequest {
                hash: hash.into(),
                offset: 0,
                ..Default::default()
            })
            .await
            .map(|_| ())
            .unwrap_err()
        }
    };
    let huge = fetch(vec![7; 8 << 20]).await;
    assert_eq!(huge.code(), Code::ResourceExhausted, "{huge:?}");
    let long = fetch(vec![7; 60 << 10]).await;
    assert_eq!(long.code(), Code::InvalidArgument, "{long:?}");
    let mut pull = RawPull::open(phila, nyc, 0).await;
    pull.until_idle().await.unwrap();
    let mut ack = PurgeAck {
        grant: GrantId::parse("g-0123456789abcdef").unwrap(),
        origin: phila.office.clone(),
        purged_by: nyc.office.clone(),
        purged_at_ms: 1,
        signature: vec![1; 32],
    };
    let mut pb_ack = casemesh::protocol::convert::purge_ack_to_pb(&ack);
    pb_ack.grant_id = "g".repeat(60 << 10);
    pull.up
        .send(pb::PullUp {
            kind: Some(pb::pull_up::Kind::PurgeAck(pb_ack)),
        })
        .await
        .unwrap();
    ack.signature.clear();

    let big = "x".repeat(500 << 10);
    let mut admin = phila.admin().await;
    let refused = admin
        .grant(pb::GrantRequest {
            peer: "nyc-da".into(),
            target: Some(pb::grant_request::Target::Collection(big.clone())),
            expires_at_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let refused = admin
        .issue_user(pb::IssueUserRequest {
            name: big.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let too_big = admin
        .issue_user(pb::IssueUserRequest {
            name: "y".repeat(2 << 20),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(too_big.code(), Code::ResourceExhausted, "{too_big:?}");
    let mut records = phila.records().await;
    let refused = records
        .get(pb::GetRequest {
            id: "z".repeat(1 << 20),
            version: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let refused = records
        .put(pb::PutRequest {
            collection: big.clone(),
            kind: "k".into(),
            title: "t".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let purge_refused = eventually(
        Duration::from_secs(15),
        "the acknowledgement's refusal",
        || async {
            let refused = of_action(phila, "purge_ack.refused").await;
            (!refused.is_empty()).then_some(refused)
        },
    )
    .await;
    assert!(
        purge_refused[0].detail.len() <= 520,
        "{}",
        purge_refused[0].detail.len()
    );

    // Refusals a caller repeats are counted, and the counts written at the
    // latest when the node stops.
    drop((records, admin, pull));
    cluster.nodes[0].restart().await;
    let mut admin = cluster.nodes[0].admin().await;
    // Every entry is small, and the whole log reads page by page with a
    // client's default limits, as `casemesh audit list` reads it.
    let mut token = String::new();
    let mut entries = Vec::new();
    loop {
        let page = admin
            .query_audit(pb::QueryAuditRequest {
                page_token: token,
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        entries.extend(page.entries);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let refusals = entries
        .iter()
        .filter(|e| !e.outcome_code.is_empty())
        .count();
    assert!(refusals >= 8, "each refusal is logged: {refusals}");
    for e in &entries {
        assert!(
            e.encoded_len() <= 8 * 1024,
            "entry {} is {} bytes",
            e.seq,
            e.encoded_len()
        );
    }
    cluster.stop_all().await;
}

/// Finding 11: `peer remove --purge-replicas` unpinned the peer, then
/// purged its replicas; a crash in between left them for good. The removal
/// is now recorded with the unpin and finished when the node starts again.
#[tokio::test]
async fn a_peer_removal_cut_short_by_a_crash_is_finished_at_the_next_start() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    cluster.pin_all().await;
    let shared = put_records(&cluster, 0, "case-1", 2).await;
    cluster.grant_collection(0, 1, "case-1").await;
    let phila = cluster.nodes[0].office.clone();
    eventually(
        Duration::from_secs(30),
        "the replicas to arrive",
        || async {
            let held = holdings(&cluster.nodes[1]).await;
            shared.iter().all(|id| held.contains_key(id)).then_some(())
        },
    )
    .await;
    // The state a crash right after the unpin leaves behind.
    let nyc = &mut cluster.nodes[1];
    nyc.stop().await;
    {
        let options = casemesh::store::StoreOptions {
            cache_bytes: 1 << 20,
            reserve_bytes: 0,
        };
        let store = casemesh::store::Store::open(&nyc.paths().store(), "nyc-da", &options).unwrap();
        let removal = casemesh::store::PeerRemoval {
            purge_replicas: true,
        };
        store.unpin_peer(&phila, removal, &[]).unwrap();
        store.flush_now().unwrap();
        assert!(
            store
                .latest(&RecordId::parse(&shared[0]).unwrap())
                .unwrap()
                .is_some()
        );
    }
    nyc.restart().await;
    let held = holdings(nyc).await;
    assert!(shared.iter().all(|id| !held.contains_key(id)), "{held:?}");
    let purged = of_action(nyc, "replica.purged").await;
    assert_eq!(purged.len(), 1, "{purged:#?}");
    assert_eq!(purged[0].records.len(), 2);
    cluster.stop_all().await;
}

/// Finding 12: a record moved into a granted case sent only its new
/// version, though a granted record travels with its whole history.
#[tokio::test]
async fn a_record_moved_into_a_granted_case_travels_with_its_history() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    cluster.pin(0, 1).await;
    cluster.grant_collection(0, 1, "case-1").await;
    let mut records = cluster.nodes[0].records().await;
    let put = |collection: &str, id: &str, expected: Option<u64>| pb::PutRequest {
        id: id.into(),
        expected_version: expected,
        collection: collection.into(),
        kind: "note".into(),
        title: "moving".into(),
        ..Default::default()
    };
    let id = records
        .put(put("case-2", "", None))
        .await
        .unwrap()
        .into_inner()
        .id;
    records.put(put("case-2", &id, Some(1))).await.unwrap();
    records.put(put("case-1", &id, Some(2))).await.unwrap();
    let (phila, nyc) = (&cluster.nodes[0], &cluster.nodes[1]);
    let got = RawPull::open(phila, nyc, 0)
        .await
        .until(|g| g.versions.len() >= 3)
        .await;
    assert_eq!(
        got.versions,
        vec![id.clone(), id.clone(), id],
        "versions 1, 2 and 3"
    );
    cluster.stop_all().await;
}

/// Finding 5: each Pull was a stream of its own, and a peer could hold as
/// many as it liked. A new Pull from a peer now replaces its old one (so a
/// peer restarted after a crash is not locked out by its half-open stream).
#[tokio::test]
async fn a_new_pull_from_a_peer_replaces_its_old_one() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    cluster.pin(0, 1).await;
    put_records(&cluster, 0, "case-1", 1).await;
    cluster.grant_collection(0, 1, "case-1").await;
    let (phila, nyc) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut first = RawPull::open(phila, nyc, 0).await;
    first.until_idle().await.unwrap();
    let mut second = RawPull::open(phila, nyc, 0).await;
    let got = second.until_idle().await.unwrap();
    assert_eq!(got.versions.len(), 1, "control: the new stream is served");
    let ended = first.ending().await;
    assert_eq!(ended.code(), Code::Aborted, "{ended:?}");
    assert!(ended.message().contains("replaced"), "{ended:?}");
    cluster.stop_all().await;
}

/// Finding 5: each ProveAudit walks the whole log; a peer may have one
/// per interval.
#[tokio::test]
async fn audit_proofs_are_rationed_per_peer() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    cluster.pin(0, 1).await;
    let (phila, nyc) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (cert, key) = nyc.node_identity();
    let mut peer = ReplicationClient::new(phila.connect_as(&cert, &key).await.unwrap());
    let mut proof = peer
        .prove_audit(pb::ProveAuditRequest::default())
        .await
        .expect("control: the first proof is given")
        .into_inner();
    while proof.message().await.unwrap().is_some() {}
    let again = peer
        .prove_audit(pb::ProveAuditRequest::default())
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::ResourceExhausted, "{again:?}");
    assert!(again.message().contains("ask again in"), "{again:?}");
    cluster.stop_all().await;
}

/// A tree proof asked for sizes the log does not have is refused with a
/// precise status, not answered with a proof of something else.
#[tokio::test]
async fn audit_proof_ranges_outside_the_log_are_refused() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    cluster.pin(0, 1).await;
    let (phila, nyc) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (cert, key) = nyc.node_identity();
    let mut peer = ReplicationClient::new(phila.connect_as(&cert, &key).await.unwrap());
    let asked = pb::ProveAuditRequest {
        tree_proofs: true,
        ranges: vec![pb::AuditProofRange {
            old_size: 1_000_000,
            new_size: 0,
        }],
    };
    let refused = match peer.prove_audit(asked).await {
        Err(s) => s,
        Ok(stream) => stream.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("not within this office's log"),
        "{refused:?}"
    );
    cluster.stop_all().await;
}

/// Finding 12: a revocation did not stop a stream in progress. Every reply
/// is now checked again before each message: a user revoked while reading
/// a file gets no further piece of it.
#[tokio::test]
async fn a_revoked_user_gets_no_further_piece_of_a_file() {
    let mut cluster = TestCluster::start(&["phila-da"]).await;
    let phila = &cluster.nodes[0];
    let (cert, key) = phila.issue_user("reader", pb::Role::Staff).await;
    let size = 16 * MIB;
    let hash = listed_file(phila, size).await;
    let mut reader = casemesh::protocol::pb::records_client::RecordsClient::new(
        phila.connect_as(&cert, &key).await.unwrap(),
    );
    let mut stream = reader
        .get_blob(pb::GetBlobRequest {
            hash: hash.clone().into(),
            offset: 0,
            length: 0,
        })
        .await
        .expect("control: the reader may read")
        .into_inner();
    let first = stream.message().await.unwrap().expect("a first piece");
    assert!(!first.data.is_empty());
    phila
        .admin()
        .await
        .revoke_user(pb::RevokeUserRequest {
            name: "reader".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut received = first.data.len();
    let ended = loop {
        match stream.message().await {
            Ok(Some(piece)) => received += piece.data.len(),
            Ok(None) => panic!("the whole file was read after the revocation"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::PermissionDenied, "{ended:?}");
    assert!((received as u64) < size, "{received} of {size} bytes");
    cluster.stop_all().await;
}

/// Rewrites a stopped node's store the way the format before finding 9
/// kept it: one numbering shared by every peer's feed (the peers' entries
/// interleaved), its end in `counters`' `outbox_seq`, no per-peer ends.
/// Returns each peer's sequence numbers, in feed order, as now stored.
fn to_shared_numbering(store: &std::path::Path) -> Vec<(String, Vec<u64>)> {
    let db = sled::Config::new().path(store).open().unwrap();
    let outbox = db.open_tree("peerseq_outbox").unwrap();
    let mut feeds: Vec<(String, Vec<(u64, sled::IVec)>)> = Vec::new();
    for item in outbox.iter() {
        let (key, value) = item.unwrap();
        let zero = key.iter().position(|b| *b == 0).unwrap();
        let office = String::from_utf8(key[..zero].to_vec()).unwrap();
        let seq = u64::from_be_bytes(key[zero + 1..].try_into().unwrap());
        match feeds.iter_mut().find(|(o, _)| *o == office) {
            Some((_, entries)) => entries.push((seq, value)),
            None => feeds.push((office, vec![(seq, value)])),
        }
    }
    outbox.clear().unwrap();
    let mut shared = 0u64;
    let mut numbered: Vec<(String, Vec<u64>)> =
        feeds.iter().map(|(o, _)| (o.clone(), Vec::new())).collect();
    let longest = feeds.iter().map(|(_, e)| e.len()).max().unwrap_or(0);
    for i in 0..longest {
        for (f, (office, entries)) in feeds.iter().enumerate() {
            if let Some((_, value)) = entries.get(i) {
                shared += 1;
                let mut key = office.as_bytes().to_vec();
                key.push(0);
                key.extend_from_slice(&shared.to_be_bytes());
                outbox.insert(key, value.clone()).unwrap();
                numbered[f].1.push(shared);
            }
        }
    }
    let mut end = vec![1u8];
    end.extend_from_slice(&shared.to_be_bytes());
    db.open_tree("counters")
        .unwrap()
        .insert("outbox_seq", end)
        .unwrap();
    db.open_tree("office_lastseq").unwrap().clear().unwrap();
    db.flush().unwrap();
    numbered
}

/// Finding 9, the upgrade: a store whose feeds share one numbering, with
/// a peer part-way through its backfill, serves that peer the rest of its
/// feed from its checkpoint, then new entries numbered after it: nothing
/// lost, nothing repeated.
#[tokio::test]
async fn a_store_with_shared_feed_numbers_upgrades_with_a_peer_part_way_through() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da", "mpls-da"]).await;
    // One way only: the peers do not pull by themselves, so the feeds
    // stay as written.
    cluster.pin(0, 1).await;
    cluster.pin(0, 2).await;
    let mut expected = put_records(&cluster, 0, "case-1", 3).await;
    cluster.grant_collection(0, 1, "case-1").await;
    cluster.grant_collection(0, 2, "case-2").await;
    for _ in 0..3 {
        expected.extend(put_records(&cluster, 0, "case-1", 1).await);
        put_records(&cluster, 0, "case-2", 2).await;
    }
    cluster.nodes[0].stop().await;
    let numbered = to_shared_numbering(&cluster.nodes[0].paths().store());
    let nyc_seqs = &numbered
        .iter()
        .find(|(o, _)| o == "nyc-da")
        .expect("nyc-da has a feed")
        .1;
    assert_eq!(nyc_seqs.len(), expected.len());
    assert!(
        nyc_seqs.windows(2).any(|w| w[1] > w[0] + 1),
        "control: the shared numbering leaves gaps in nyc-da's feed: {nyc_seqs:?}"
    );
    cluster.nodes[0].restart().await;

    let (phila, nyc) = (&cluster.nodes[0], &cluster.nodes[1]);
    let whole = RawPull::open(phila, nyc, 0)
        .await
        .until_idle()
        .await
        .unwrap();
    assert_eq!(whole.seqs, *nyc_seqs, "the feed, as numbered");
    let mut sorted = whole.versions.clone();
    sorted.sort();
    expected.sort();
    assert_eq!(sorted, expected, "every granted record, once");
    // nyc-da had applied its first two entries when the node was upgraded.
    let checkpoint = nyc_seqs[1];
    let mut pull = RawPull::open(phila, nyc, checkpoint).await;
    let rest = pull.until_idle().await.unwrap();
    assert_eq!(rest.seqs, nyc_seqs[2..].to_vec(), "the rest, as numbered");
    assert_eq!(rest.versions, whole.versions[2..].to_vec());
    let new = put_records(&cluster, 0, "case-1", 1).await;
    let more = pull.until(|g| !g.versions.is_empty()).await;
    assert_eq!(more.versions, new);
    let last = *nyc_seqs.last().unwrap();
    let max_shared = numbered.iter().flat_map(|(_, s)| s).max().copied().unwrap();
    assert_eq!(
        more.seqs,
        vec![max_shared + 1],
        "a new entry is numbered after every entry of the shared numbering (nyc-da's last was {last})"
    );
    cluster.stop_all().await;
}

/// A TCP connection to `node` from `source` (an address of the loopback
/// network other than 127.0.0.1) that sends nothing.
async fn silent_connection(node: &TestNode, source: [u8; 4]) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::from((source, 0)))
        .unwrap();
    let to = node.endpoint();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], to.port));
    socket.connect(addr).await.unwrap()
}

/// Whether the node closed `conn` (refused it) within 5 s; a connection
/// it kept waits for the handshake for the 60 s this test configures.
async fn closed_by_node(conn: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => panic!("the node sent bytes before a ClientHello"),
        Err(_) => false,
    }
}

/// Finding 6: handshake slots were taken first come, first served, and
/// every refused handshake was a permanent audit entry. One address now
/// holds at most `server.max_handshakes_per_source` handshakes at once;
/// refusals from one address are logged once, then counted.
#[tokio::test]
async fn one_address_cannot_hold_every_handshake_or_fill_the_log() {
    let mut cluster = TestCluster::start(&["phila-da"]).await;
    cluster.nodes[0]
        .configure(|c| {
            c.server.max_handshakes_per_source = 4;
            c.server.handshake_timeout_secs = 60;
        })
        .await;
    let node = &cluster.nodes[0];
    let source = [127, 0, 0, 2];
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(silent_connection(node, source).await);
    }
    const REFUSED: usize = 30;
    for _ in 0..REFUSED {
        let mut extra = silent_connection(node, source).await;
        assert!(
            closed_by_node(&mut extra).await,
            "a fifth handshake from one address is refused"
        );
    }
    assert!(
        !closed_by_node(&mut held[0]).await,
        "control: the four held are still waiting for their handshakes"
    );
    node.records()
        .await
        .list(pb::ListRequest::default())
        .await
        .expect("another address still gets in");
    let from_source = |entries: Vec<pb::AuditEntry>| -> Vec<pb::AuditEntry> {
        entries
            .into_iter()
            .filter(|e| e.actor_remote.starts_with("127.0.0.2:"))
            .collect()
    };
    let first = eventually(
        Duration::from_secs(10),
        "the first refusal to be logged",
        || async {
            let got = from_source(of_action(node, "connection.refused").await);
            (!got.is_empty()).then_some(got)
        },
    )
    .await;
    assert_eq!(first.len(), 1, "the rest are counted: {first:#?}");
    assert!(first[0].outcome_message.contains("too many TLS handshakes"));
    drop(held);
    // Stopping writes the counts held.
    cluster.nodes[0].restart().await;
    let logged = from_source(of_action(&cluster.nodes[0], "connection.refused").await);
    assert_eq!(logged.len(), 2, "{logged:#?}");
    let counted: usize = logged[1]
        .detail
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a count: {:?}", logged[1].detail));
    // The other refused handshakes, and the four held ones, which failed
    // when they were dropped.
    assert!(
        (1..=REFUSED - 1 + 4).contains(&counted),
        "{counted} refusals counted"
    );
    assert!(logged[1].detail.contains("more refused within 60 s"));
    cluster.stop_all().await;
}

/// Waits until `node` has applied `peer`'s feed up to `seq`.
async fn checkpoint_reaches(node: &TestNode, peer: &str, seq: u64) {
    eventually(
        Duration::from_secs(60),
        &format!("the checkpoint in {peer}'s feed to reach {seq}"),
        || async {
            let peers = node
                .admin()
                .await
                .list_peers(pb::ListPeersRequest {})
                .await
                .unwrap()
                .into_inner()
                .peers;
            peers
                .iter()
                .any(|p| p.office == peer && p.checkpoint >= seq)
                .then_some(())
        },
    )
    .await;
}

/// `n` closings of made-up grants, numbered from `first`.
fn made_up_closings(first: u64, n: u64) -> Vec<pb::FeedEntry> {
    (first..first + n)
        .map(|seq| pb::FeedEntry {
            seq,
            kind: Some(pb::feed_entry::Kind::GrantClosed(format!("g-{seq:016x}"))),
        })
        .collect()
}

/// Finding 4, from review: the cap counted only acknowledgements the origin
/// had not confirmed, and an origin confirms them itself; one that did made
/// the peer sign and keep acknowledgements without limit. The cap now
/// counts every acknowledgement kept for an origin.
#[tokio::test]
async fn an_origin_confirming_each_acknowledgement_still_meets_the_cap() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    cluster.pin_all().await;
    let mut said = Vec::new();
    let batches = 66;
    for b in 0..batches {
        let entries = made_up_closings(b * 64 + 1, 64);
        let confirmed: Vec<_> = entries
            .iter()
            .map(|e| match &e.kind {
                Some(pb::feed_entry::Kind::GrantClosed(g)) => pb::PullDown {
                    kind: Some(pb::pull_down::Kind::PurgeAckStored(pb::PurgeAckStored {
                        grant_id: g.clone(),
                    })),
                },
                _ => unreachable!(),
            })
            .collect();
        said.push(pb::PullDown {
            kind: Some(pb::pull_down::Kind::Batch(pb::Batch {
                entries,
                last_seq: (b + 1) * 64,
                audit_head: None,
            })),
        });
        said.extend(confirmed);
    }
    let server = impersonate_saying(&mut cluster, 0, said).await;
    let nyc = &cluster.nodes[1];
    checkpoint_reaches(nyc, "phila-da", batches * 64).await;
    let signed = all_of_action(nyc.kit(), "purge.acknowledged").await.len();
    assert_eq!(signed, 4096, "{} closings sent", batches * 64);
    server.abort();
    cluster.stop_all().await;
}

/// From review: audit heads that did not check out were logged one entry
/// each, so an origin grew the peer's log at the rate it sent heartbeats.
/// They are now logged once, then counted, like other refusals.
#[tokio::test]
async fn junk_audit_heads_from_an_origin_are_counted_not_logged_one_by_one() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    cluster.pin_all().await;
    let mut said: Vec<pb::PullDown> = (0..2000u64)
        .map(|n| pb::PullDown {
            kind: Some(pb::pull_down::Kind::Heartbeat(pb::Heartbeat {
                now_ms: 0,
                audit_head: Some(pb::SignedAuditHead {
                    office: "phila-da".into(),
                    seq: n,
                    hash: vec![1u8].into(),
                    at_ms: 0,
                    signature: Default::default(),
                    root: Default::default(),
                }),
            })),
        })
        .collect();
    // Applied in order: once this batch is, every head before it was seen.
    said.push(pb::PullDown {
        kind: Some(pb::pull_down::Kind::Batch(pb::Batch {
            entries: made_up_closings(1, 1),
            last_seq: 1,
            audit_head: None,
        })),
    });
    let server = impersonate_saying(&mut cluster, 0, said).await;
    let nyc = &cluster.nodes[1];
    checkpoint_reaches(nyc, "phila-da", 1).await;
    let logged = of_action(nyc, "witness.conflict").await;
    assert_eq!(logged.len(), 1, "the first, at once; the rest counted");
    assert!(logged[0].outcome_message.contains("does not check out"));
    server.abort();
    cluster.stop_all().await;
}

/// From review: one message of millions of tiny entries made the puller
/// build an audit draft for each. A batch past what an honest origin sends
/// is refused whole.
#[tokio::test]
async fn a_batch_past_the_entry_cap_is_refused_whole() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    cluster.pin_all().await;
    let n = casemesh::sync::puller::MAX_BATCH_ENTRIES as u64 + 1;
    let entries: Vec<_> = (1..=n)
        .map(|seq| pb::FeedEntry {
            seq,
            kind: Some(pb::feed_entry::Kind::RevokeRecordId(String::new())),
        })
        .collect();
    let batch = pb::Batch {
        entries,
        last_seq: n,
        audit_head: None,
    };
    let server = impersonate(&mut cluster, 0, vec![batch]).await;
    let nyc = &cluster.nodes[1];
    let error = eventually(
        Duration::from_secs(30),
        "the link to show the refusal",
        || async {
            let peers = nyc
                .admin()
                .await
                .list_peers(pb::ListPeersRequest {})
                .await
                .unwrap()
                .into_inner()
                .peers;
            peers
                .into_iter()
                .find(|p| p.office == "phila-da" && p.last_error.contains("entries"))
                .map(|p| p.last_error)
        },
    )
    .await;
    assert!(error.contains("at most 16384 are taken"), "{error}");
    assert!(
        of_action(nyc, "replica.rejected").await.is_empty(),
        "no entry of it was looked at"
    );
    server.abort();
    cluster.stop_all().await;
}

/// Finding 1, from review: a closed grant with no stored record of what it
/// revealed (closed before this build kept one) was closed again from what
/// its case holds now. It is now closed from what the case held before the
/// grant ended, read from the records' signed versions.
#[tokio::test]
async fn a_grant_closed_before_revealed_sets_were_kept_names_only_what_it_showed() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    let (before, grant, pull, closed) = granted_then_revoked(&mut cluster).await;
    let (phila, nyc) = (&cluster.nodes[0], &cluster.nodes[1]);
    ack_all(&pull, phila, nyc, closed.last_seq).await;
    drop(pull);
    let after = put_records(&cluster, 0, "case-1", 5).await;
    // A store written before revealed sets were kept has none.
    cluster.nodes[0].stop().await;
    {
        let db = sled::Config::new()
            .path(cluster.nodes[0].paths().store())
            .open()
            .unwrap();
        for tree in ["grantrecord_revealed", "grantid_revealedcount"] {
            let tree = db.open_tree(tree).unwrap();
            assert!(!tree.is_empty(), "control: {tree:?} held the grant's set");
            tree.clear().unwrap();
        }
        db.flush().unwrap();
    }
    cluster.nodes[0].restart().await;
    let (phila, nyc) = (&cluster.nodes[0], &cluster.nodes[1]);
    let replay = RawPull::open(phila, nyc, 0)
        .await
        .until(|got| !got.closed.is_empty())
        .await;
    assert_eq!(
        replay.revoked.iter().cloned().collect::<BTreeSet<_>>(),
        before.iter().cloned().collect(),
        "the records the grant showed, and none added after it ended ({after:?})"
    );
    assert_eq!(replay.closed, vec![grant]);
    cluster.stop_all().await;
}

/// From review: refused calls were logged one entry each, so a pinned peer
/// (or a revoked user on a connection it kept open) grew the log at the
/// rate it could call. They are now logged once, then counted per caller.
#[tokio::test]
async fn refused_calls_repeated_by_one_caller_are_counted() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    cluster.pin(0, 1).await;
    let (phila, nyc) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (cert, key) = nyc.node_identity();
    let mut peer = ReplicationClient::new(phila.connect_as(&cert, &key).await.unwrap());
    let (user_cert, user_key) = phila.issue_user("leaver", pb::Role::Staff).await;
    let mut user = casemesh::protocol::pb::records_client::RecordsClient::new(
        phila.connect_as(&user_cert, &user_key).await.unwrap(),
    );
    user.list(pb::ListRequest::default())
        .await
        .expect("control: allowed before the revocation");
    phila
        .admin()
        .await
        .revoke_user(pb::RevokeUserRequest {
            name: "leaver".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    const TIMES: usize = 50;
    for _ in 0..TIMES {
        let refused = peer
            .fetch_blob(pb::FetchBlobRequest {
                hash: vec![9u8; 32].into(),
                offset: 0,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::NotFound);
        let refused = user.list(pb::ListRequest::default()).await.unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied);
    }
    let fetches = of_action(phila, "Replication.FetchBlob").await;
    assert_eq!(fetches.len(), 1, "{fetches:#?}");
    let lists: Vec<_> = of_action(phila, "Records.List")
        .await
        .into_iter()
        .filter(|e| !e.outcome_code.is_empty())
        .collect();
    assert_eq!(lists.len(), 1, "{lists:#?}");
    drop((peer, user));
    cluster.nodes[0].restart().await;
    let phila = &cluster.nodes[0];
    for action in ["Replication.FetchBlob", "Records.List"] {
        let logged: Vec<_> = of_action(phila, action)
            .await
            .into_iter()
            .filter(|e| !e.outcome_code.is_empty())
            .collect();
        assert_eq!(logged.len(), 2, "{action}: {logged:#?}");
        assert!(
            logged[1]
                .detail
                .starts_with(&format!("{} more refused within 60 s", TIMES - 1)),
            "{action}: {}",
            logged[1].detail
        );
    }
    cluster.stop_all().await;
}

/// Issue 18: a fetch the origin refuses as not shared was asked for again
/// about once a minute, for ever, each time a new connection and an entry
/// in the origin's log. It is now given up, shown in `status`, and tried
/// again only when something new comes from that origin.
#[tokio::test]
async fn a_file_the_origin_will_not_share_is_asked_for_again_only_after_news_from_it() {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    cluster.pin_all().await;
    let ca = office_ca(&cluster.nodes[0]);
    let phila = cluster.nodes[0].office.clone();
    let mut listing = version(&phila, "lists a file it will not serve");
    listing.attachments = vec![casemesh::domain::Attachment {
        hash: casemesh::domain::BlobHash([5; 32]),
        size: 1000,
        file_name: "withheld.mp4".into(),
        media_type: "video/mp4".into(),
    }];
    let batch = |seq: u64, entry: pb::FeedEntry| pb::PullDown {
        kind: Some(pb::pull_down::Kind::Batch(pb::Batch {
            entries: vec![entry],
            last_seq: seq,
            audit_head: None,
        })),
    };
    let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (news, gate) = tokio::sync::watch::channel(false);
    let first = vec![batch(1, signed_entry(1, &ca, listing))];
    let then = vec![batch(2, signed_entry(2, &ca, version(&phila, "news")))];
    let server =
        impersonate_in_two_parts(&mut cluster, 0, first, gate, then, fetches.clone()).await;
    let nyc = &cluster.nodes[1];
    let given_up = eventually(
        Duration::from_secs(30),
        "the fetch to be given up",
        || async {
            let status = nyc
                .admin()
                .await
                .status(pb::StatusRequest {})
                .await
                .unwrap()
                .into_inner();
            status.transfers.into_iter().find(|t| t.gave_up)
        },
    )
    .await;
    assert!(
        given_up.last_error.contains("does not share this file"),
        "{given_up:?}"
    );
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 1);
    // News from the origin: the file is asked for once more.
    news.send(true).unwrap();
    eventually(
        Duration::from_secs(30),
        "the fetch to be tried again",
        || async { (fetches.load(std::sync::atomic::Ordering::SeqCst) >= 2).then_some(()) },
    )
    .await;
    server.abort();
    cluster.stop_all().await;
}

/// From review: a reply that sends nothing (here a health watch, which
/// speaks only when the status changes) was checked again only before its
/// next message, so a revoked user kept it open. Replies are now checked
/// on a timer too.
#[tokio::test]
async fn a_revoked_users_silent_stream_is_ended_too() {
    let mut cluster = TestCluster::start(&["phila-da"]).await;
    let phila = &cluster.nodes[0];
    let (cert, key) = phila.issue_user("watcher", pb::Role::Staff).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        phila.connect_as(&cert, &key).await.unwrap(),
    );
    let mut watch = health
        .watch(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("control: staff may watch")
        .into_inner();
    watch
        .message()
        .await
        .unwrap()
        .expect("the current status, at once");
    phila
        .admin()
        .await
        .revoke_user(pb::RevokeUserRequest {
            name: "watcher".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(20), watch.message())
        .await
        .expect("the watch ends within 20 s of the revocation");
    let status = ended.expect_err("ended by a refusal");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    cluster.stop_all().await;
}
