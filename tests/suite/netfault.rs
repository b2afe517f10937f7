//! Network faults between two real nodes over mutual TLS: nyc-da pulls
//! phila-da's feed through a relay ([`super::relay`]) that cuts the link in
//! the middle of a batch, delays every chunk, leaves it half-open, and
//! partitions it for longer than the heartbeat while phila-da grants,
//! revokes and writes. TLS runs end to end through the relay; only the
//! bytes are at its mercy. Each test prints what it injected.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use casemesh::protocol::pb;
use casemesh::sync::HEARTBEAT;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::cluster::{TestCluster, TestNode, audit_intact, audited, eventually, holdings};
use super::relay::{Cut, Dir, Relay, Strike, Then};

const DEADLINE: Duration = Duration::from_secs(30);

/// How long a puller hears nothing before it dials again.
fn silence() -> Duration {
    HEARTBEAT * 3
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Record id → (latest version, collection).
type Holdings = BTreeMap<String, (u64, String)>;

/// phila-da (node 0) and nyc-da (node 1), pinned both ways; nyc-da reaches
/// phila-da through the relay, phila-da reaches nyc-da directly.
async fn linked() -> (TestCluster, Relay) {
    let mut cluster = TestCluster::start(&["phila-da", "nyc-da"]).await;
    // phila-da trusts nyc-da first, so that nyc-da's first pull is served.
    cluster.pin(0, 1).await;
    let relay = Relay::start(cluster.nodes[0].addr).await;
    let phila = &cluster.nodes[0];
    cluster.nodes[1]
        .admin()
        .await
        .add_peer(pb::AddPeerRequest {
            office: phila.office.to_string(),
            endpoint: relay.endpoint(),
            ca_certificate_pem: String::from_utf8(phila.ca_pem()).unwrap(),
            expected_fingerprint: String::new(),
        })
        .await
        .unwrap();
    (cluster, relay)
}

fn rec(collection: &str, title: &str, body_bytes: usize) -> pb::PutRequest {
    let body: String = title.chars().cycle().take(body_bytes.max(1)).collect();
    pb::PutRequest {
        collection: collection.into(),
        kind: "incident-report".into(),
        title: title.into(),
        body: body.into_bytes().into(),
        content_type: "text/plain".into(),
        ..Default::default()
    }
}

/// Writes `n` records of `body_bytes` into `collection` at `node`, eight
/// calls at a time.
async fn write(node: &TestNode, collection: &str, n: usize, body_bytes: usize) -> Holdings {
    const LANES: usize = 8;
    let records = node.records().await;
    let mut lanes = tokio::task::JoinSet::new();
    for lane in 0..LANES {
        let mut c = records.clone();
        let collection = collection.to_owned();
        lanes.spawn(async move {
            let mut out = Vec::new();
            for i in (lane..n).step_by(LANES) {
                let title = format!("{collection} record {i}");
                let put = c.put(rec(&collection, &title, body_bytes)).await.unwrap();
                out.push((put.into_inner(), collection.clone()));
            }
            out
        });
    }
    let mut out = Holdings::new();
    while let Some(lane) = lanes.join_next().await {
        for (put, collection) in lane.unwrap() {
            out.insert(put.id, (put.version, collection));
        }
    }
    out
}

/// Writes a new version of record `id`; updates `expected` with it.
async fn edit(node: &TestNode, id: &str, expected: &mut Holdings) {
    let collection = expected[id].1.clone();
    let mut put = rec(&collection, &format!("{id} edited"), 300);
    put.id = id.into();
    let v = node.records().await.put(put).await.unwrap().into_inner();
    expected.insert(id.into(), (v.version, collection));
}

/// Waits until `node` holds exactly `expected` (ids, versions, collections).
async fn converge(node: &TestNode, expected: &Holdings, what: &str) {
    eventually(DEADLINE, what, || async {
        (&holdings(node).await == expected).then_some(())
    })
    .await;
}

/// Versions `node` stores.
async fn versions(node: &TestNode) -> u64 {
    node.admin()
        .await
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .versions
}

/// Every version of every record in `held`, from 1 to its latest.
fn all_versions(held: &Holdings) -> BTreeSet<(String, u64)> {
    held.iter()
        .flat_map(|(id, (v, _))| (1..=*v).map(move |k| (id.clone(), k)))
        .collect()
}

/// Writes `what` on `s` and reads as many bytes back, within 5 s.
async fn echo_through(s: &mut tokio::net::TcpStream, what: &[u8]) -> Vec<u8> {
    s.write_all(what).await.unwrap();
    let mut got = vec![0u8; what.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
        .await
        .expect("the echo within 5 s")
        .unwrap();
    got
}

/// The relay itself, against a plain echo server: it forwards, delays,
/// stalls one way, cuts, refuses during a partition, and strikes once a
/// connection has carried a set number of bytes.
#[tokio::test]
async fn netfault_relay_forwards_delays_stalls_cuts_and_partitions() {
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let relay = Relay::start(target).await;
    let addr = relay.endpoint().trim_start_matches("https://").to_owned();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    assert_eq!(echo_through(&mut s, b"ping").await, b"ping");

    relay.delay(ms(100), ms(100));
    let started = Instant::now();
    assert_eq!(echo_through(&mut s, b"slow").await, b"slow");
    assert!(started.elapsed() >= ms(200), "{:?}", started.elapsed());
    relay.delay(Duration::ZERO, Duration::ZERO);

    assert_eq!(relay.stall(&[Dir::Down]), 1);
    s.write_all(b"held").await.unwrap();
    let mut held = [0u8; 4];
    assert!(
        tokio::time::timeout(ms(300), s.read(&mut held))
            .await
            .is_err(),
        "nothing comes back while the link stalls"
    );
    relay.heal();
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut held))
        .await
        .expect("the held bytes after healing")
        .unwrap();
    assert_eq!(&held, b"held");

    assert_eq!(relay.cut(Cut::Reset), 1);
    let after_cut = tokio::time::timeout(Duration::from_secs(5), s.read(&mut held))
        .await
        .expect("the cut is seen");
    assert!(matches!(after_cut, Ok(0) | Err(_)), "{after_cut:?}");

    relay.partition();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(5), s.read(&mut held))
        .await
        .expect("the refusal is seen");
    assert!(matches!(refused, Ok(0) | Err(_)), "{refused:?}");
    relay.heal();

    relay.strike_after(1000, Strike::Cut(Cut::Close), Then::Pass);
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(&[7u8; 4000]).await.unwrap();
    eventually(Duration::from_secs(5), "the strike", || async {
        (relay.counts().strikes == 1).then_some(())
    })
    .await;
    let c = relay.counts();
    assert_eq!((c.connections, c.refused, c.cut, c.stalled), (2, 1, 2, 1));
    assert!(!relay.armed());
}

/// How the first test cuts its connections mid-batch, in turn.
const CUTS: [Cut; 6] = [
    Cut::Close,
    Cut::Reset,
    Cut::Close,
    Cut::Reset,
    Cut::Close,
    Cut::Reset,
];
/// Bytes a connection carries down before it is cut: about a batch and a
/// half (a batch holds 1 MiB of versions), so the cut lands mid-batch.
const CUT_AFTER: u64 = 1536 * 1024;

/// A large backfill is cut mid-batch six times, closed or reset in turn
/// (each time the peer holds less than all, and after a close more than
/// before); the origin edits records while the link is down; the peer
/// ends with exactly the granted records at their latest versions, every
/// version applied once, although the origin sent many of them again.
#[tokio::test]
async fn a_backfill_cut_mid_batch_again_and_again_applies_every_version_once() {
    let test = Instant::now();
    let (mut cluster, relay) = linked().await;
    let (phila, nyc) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut expected = write(phila, "big", 2400, 5 * 1024).await;
    write(phila, "other", 20, 64).await;
    eprintln!("netfault: 2,420 records written in {:?}", test.elapsed());
    relay.strike_after(CUT_AFTER, Strike::Cut(CUTS[0]), Then::Hold);
    phila
        .kit()
        .grant_collection(&nyc.office, "big")
        .await
        .unwrap();

    let mut held = 0;
    let mut held_at_cuts = Vec::new();
    let ids: Vec<String> = expected.keys().cloned().collect();
    for (i, how) in CUTS.iter().enumerate() {
        let cut = i + 1;
        eventually(DEADLINE, &format!("cut {cut}"), || async {
            (relay.counts().strikes == cut as u64).then_some(())
        })
        .await;
        // New connections are held: once the puller has given up the cut
        // one, what arrived whole is applied and nothing more can come.
        eventually(DEADLINE, "nyc-da to see its link go down", || async {
            (!nyc.link("phila-da").await.connected).then_some(())
        })
        .await;
        let now = versions(nyc).await;
        let at_origin = all_versions(&expected).len() as u64;
        // A connection carries more than a batch before its cut; after a
        // close the peer reads all of it, so it holds more than before. A
        // reset loses what its kernel had not handed it yet, perhaps all.
        let more = match how {
            Cut::Close => held < now,
            Cut::Reset => held <= now,
        };
        assert!(
            more && now < at_origin,
            "cut {cut} ({how:?}): nyc-da held {now} versions (before: {held}) of {at_origin}"
        );
        held = now;
        held_at_cuts.push(now);
        // Meanwhile the origin edits records, held there already or not.
        for id in ids.iter().skip(cut * 300).step_by(97).take(4) {
            edit(phila, id, &mut expected).await;
        }
        if let Some(next) = CUTS.get(cut) {
            relay.strike_after(CUT_AFTER, Strike::Cut(*next), Then::Hold);
        }
        relay.release();
    }
    converge(
        nyc,
        &expected,
        "nyc-da to hold exactly the granted case at its latest versions",
    )
    .await;

    let applied = audited(nyc.kit(), "replica.applied").await;
    let once: BTreeSet<_> = applied.iter().cloned().collect();
    assert_eq!(once.len(), applied.len(), "a version was applied twice");
    assert_eq!(once, all_versions(&expected));
    let served = audited(phila.kit(), "feed.versions_served").await;
    assert!(served.iter().cloned().collect::<BTreeSet<_>>() == once);
    let resent = served.len() - once.len();
    assert!(resent > 0, "no version was in flight at any cut");
    let c = relay.counts();
    assert_eq!(c.strikes, CUTS.len() as u64);
    eprintln!(
        "netfault: {} cuts mid-batch ({} connections cut, {} made); nyc-da held \
         {held_at_cuts:?} of {} versions at them; {resent} versions sent again, none applied \
         twice; {} bytes down; {:?}",
        CUTS.len(),
        c.cut,
        c.connections,
        once.len(),
        c.down_bytes,
        test.elapsed()
    );
    cluster.stop_all().await;
}

/// Every chunk on the link is delivered 50–200 ms after it was read: the
/// backfill, a live update and a revocation still go through, its purge is
/// confirmed, and no connection is given up for it.
#[tokio::test]
async fn a_link_delaying_every_chunk_by_50_to_200_ms_still_converges() {
    let test = Instant::now();
    let (mut cluster, relay) = linked().await;
    relay.delay(ms(50), ms(200));
    let (phila, nyc) = (&cluster.nodes[0], &cluster.nodes[1]);
    let case1 = write(phila, "case-1", 300, 2048).await;
    let mut case2 = write(phila, "case-2", 40, 256).await;
    let g1 = phila
        .kit()
        .grant_collection(&nyc.office, "case-1")
        .await
        .unwrap()
        .id;
    phila
        .kit()
        .grant_collection(&nyc.office, "case-2")
        .await
        .unwrap();
    let mut both = case1.clone();
    both.extend(case2.clone());
    converge(nyc, &both, "nyc-da to hold both cases through the delay").await;

    // A live update crosses the relay once at least, so it takes at least
    // the least delay.
    let id = case2.keys().next().unwrap().clone();
    let started = Instant::now();
    edit(phila, &id, &mut case2).await;
    let want = case2[&id].0;
    eventually(DEADLINE, "the live update at nyc-da", || async {
        (holdings(nyc).await.get(&id).map(|h| h.0) == Some(want)).then_some(())
    })
    .await;
    let latency = started.elapsed();
    assert!(latency >= ms(50), "the update took {latency:?}");

    phila.kit().revoke(&g1).await.unwrap();
    converge(nyc, &case2, "nyc-da to purge case-1 through the delay").await;
    let ack = eventually(DEADLINE, "nyc-da's purge acknowledgement", || async {
        phila
            .kit()
            .grants()
            .await
            .unwrap()
            .into_iter()
            .find(|g| g.id == g1)?
            .purge_ack
    })
    .await;
    assert_eq!(ack.purged_by, "nyc-da");
    let c = relay.counts();
    assert_eq!(c.connections, 1, "a delay alone made nyc-da dial again");
    eprintln!(
        "netfault: 50-200 ms per chunk; live update in {latency:?}; {} bytes down, {} up; {:?}",
        c.down_bytes,
        c.up_bytes,
        test.elapsed()
    );
    cluster.stop_all().await;
}

/// The link stops carrying bytes but stays open, first in the middle of a
/// backfill (both ways), then while idle (towards the peer only): each time
/// the peer notices within the heartbeat timeout and dials again while the
/// stalled connection is still open, and converges over the new one.
#[tokio::test]
async fn a_half_open_link_is_noticed_within_the_heartbeat_timeout_and_dialed_again() {
    let test = Instant::now();
    let (mut cluster, relay) = linked().await;
    let (phila, nyc) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut expected = write(phila, "case-1", 600, 5 * 1024).await;
    relay.strike_after(1024 * 1024, Strike::Stall, Then::Pass);
    phila
        .kit()
        .grant_collection(&nyc.office, "case-1")
        .await
        .unwrap();

    let mut noticed = Vec::new();
    eventually(DEADLINE, "the stall mid-backfill", || async {
        (relay.counts().strikes == 1).then_some(())
    })
    .await;
    let stalled = Instant::now();
    let held = versions(nyc).await;
    let dialed = silence() + Duration::from_secs(3);
    eventually(dialed, "nyc-da to dial again past the stall", || async {
        (relay.counts().connections == 2).then_some(())
    })
    .await;
    noticed.push(stalled.elapsed());
    assert_eq!(relay.open(), 2, "the stalled connection is still open");
    assert!(
        held < all_versions(&expected).len() as u64,
        "the stall came after the backfill"
    );
    converge(nyc, &expected, "nyc-da to finish the backfill").await;

    // Idle now: only heartbeats flow, and then not even those.
    assert_eq!(relay.stall(&[Dir::Down]), 2);
    let stalled = Instant::now();
    eventually(
        dialed,
        "nyc-da to dial again past the idle stall",
        || async { (relay.counts().connections == 3).then_some(()) },
    )
    .await;
    noticed.push(stalled.elapsed());
    for n in &noticed {
        // Nothing told the peer: only the silence did.
        assert!(*n >= HEARTBEAT, "noticed after {n:?}");
    }
    let later = write(phila, "case-1", 10, 256).await;
    expected.extend(later);
    converge(nyc, &expected, "writes after the stalls to reach nyc-da").await;

    relay.heal();
    eventually(DEADLINE, "the abandoned connections to close", || async {
        (relay.open() == 1).then_some(())
    })
    .await;
    converge(nyc, &expected, "nothing changed by the healed connections").await;
    let c = relay.counts();
    eprintln!(
        "netfault: 2 stalls ({} directions stalled); noticed after {noticed:?}; {} connections; {:?}",
        c.stalled,
        c.connections,
        test.elapsed()
    );
    cluster.stop_all().await;
}

/// How long the partition lasts: longer than the puller's silence timeout.
const PARTITION: Duration = Duration::from_secs(10);

/// A partition longer than the heartbeat timeout (new connections refused,
/// the open one stalled). Meanwhile the origin writes and edits records,
/// grants a second case, deletes one of its records, and revokes both
/// grants the peer had. After it heals the peer holds exactly what is
/// granted now, the revoked records are purged, both revocations show
/// the peer's signed purge acknowledgement, and both audit logs verify.
#[tokio::test]
async fn revocations_made_during_a_partition_are_purged_and_confirmed_once_it_heals() {
    let test = Instant::now();
    let (mut cluster, relay) = linked().await;
    let (phila, nyc) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut case1 = write(phila, "case-1", 20, 512).await;
    let mut case2 = write(phila, "case-2", 15, 512).await;
    let case3 = write(phila, "case-3", 5, 512).await;
    let g1 = phila
        .kit()
        .grant_collection(&nyc.office, "case-1")
        .await
        .unwrap()
        .id;
    let lone = case3.keys().next().unwrap().clone();
    let g3 = phila
        .kit()
        .grant(
            &nyc.office,
            pb::grant_request::Target::RecordId(lone.clone()),
        )
        .await
        .unwrap()
        .id;
    let mut before = case1.clone();
    before.insert(lone.clone(), case3[&lone].clone());
    converge(nyc, &before, "nyc-da to hold case-1 and one case-3 record").await;

    relay.partition();
    let parted = Instant::now();
    eventually(
        silence() + Duration::from_secs(3),
        "nyc-da to notice the partition",
        || async { (!nyc.link("phila-da").await.connected).then_some(()) },
    )
    .await;
    let noticed = parted.elapsed();

    case1.extend(write(phila, "case-1", 10, 512).await);
    let ids1: Vec<String> = case1.keys().cloned().collect();
    for id in ids1.iter().take(5) {
        edit(phila, id, &mut case1).await;
    }
    let g2 = phila
        .kit()
        .grant_collection(&nyc.office, "case-2")
        .await
        .unwrap()
        .id;
    let ids2: Vec<String> = case2.keys().cloned().collect();
    for id in ids2.iter().take(5) {
        edit(phila, id, &mut case2).await;
    }
    case2.extend(write(phila, "case-2", 3, 512).await);
    let deleted = phila
        .records()
        .await
        .delete(pb::DeleteRequest {
            id: ids2[14].clone(),
            expected_version: None,
        })
        .await
        .unwrap()
        .into_inner();
    // A deleted record is not listed; its tombstone is checked below.
    let gone = ids2[14].clone();
    case2.remove(&gone);
    phila.kit().revoke(&g1).await.unwrap();
    phila.kit().revoke(&g3).await.unwrap();
    for id in ids1.iter().skip(10).take(3) {
        edit(phila, id, &mut case1).await;
    }

    // Hold the partition for its full length (a fault held, not a wait).
    tokio::time::sleep(PARTITION.saturating_sub(parted.elapsed())).await;
    assert_eq!(
        holdings(nyc).await,
        before,
        "something crossed the partition"
    );
    relay.heal();

    converge(
        nyc,
        &case2,
        "nyc-da to hold exactly case-2 after the partition",
    )
    .await;
    let mut records = nyc.records().await;
    let tombstone = records
        .get(pb::GetRequest {
            id: gone.clone(),
            version: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(tombstone.deleted && tombstone.version == deleted.version);
    for id in case1.keys().chain([&lone]) {
        let err = records
            .get(pb::GetRequest {
                id: id.clone(),
                version: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{id} at nyc-da");
    }
    let grants = eventually(DEADLINE, "both purges confirmed by nyc-da", || async {
        let grants = phila.kit().grants().await.unwrap();
        let confirmed = |id: &str| grants.iter().any(|g| g.id == id && g.purge_ack.is_some());
        (confirmed(&g1) && confirmed(&g3)).then_some(grants)
    })
    .await;
    for g in &grants {
        match &g.purge_ack {
            Some(ack) => {
                assert!([&g1, &g3].contains(&&g.id), "{g:?}");
                assert_eq!(
                    (ack.purged_by.as_str(), g.end_reason.as_str()),
                    ("nyc-da", "revoked")
                );
            }
            None => assert_eq!(g.id, g2, "{g:?}"),
        }
    }
    let purged: BTreeSet<String> = audited(nyc.kit(), "replica.purged")
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(purged, before.keys().cloned().collect());
    audit_intact(phila.kit()).await;
    audit_intact(nyc.kit()).await;
    let c = relay.counts();
    assert!(c.refused > 0, "nyc-da never dialed during the partition");
    eprintln!(
        "netfault: 1 partition of {PARTITION:?}, noticed after {noticed:?}; {} connections refused; \
         {} connections in all; {:?}",
        c.refused,
        c.connections,
        test.elapsed()
    );
    cluster.stop_all().await;
}

/// A link carrying 120 KiB a second takes over 8 s to carry one batch
/// (1 MiB of versions), longer than the puller's silence timeout; bytes
/// keep arriving all the while, so the peer must not give up on it.
#[tokio::test]
async fn a_link_too_slow_to_carry_a_batch_within_the_heartbeat_timeout_still_completes_a_backfill()
{
    let test = Instant::now();
    let (mut cluster, relay) = linked().await;
    let (phila, nyc) = (&cluster.nodes[0], &cluster.nodes[1]);
    let expected = write(phila, "case-1", 220, 5 * 1024).await;
    relay.rate(120 * 1024);
    phila
        .kit()
        .grant_collection(&nyc.office, "case-1")
        .await
        .unwrap();
    converge(
        nyc,
        &expected,
        "nyc-da to complete the backfill over the slow link",
    )
    .await;
    let c = relay.counts();
    eprintln!(
        "netfault: 120 KiB/s; {} bytes down in {} connections; {:?}",
        c.down_bytes,
        c.connections,
        test.elapsed()
    );
    assert_eq!(
        c.connections, 1,
        "one connection carried the whole backfill, never given up as silent"
    );
    cluster.stop_all().await;
}

/// How long a client's HTTP/2 keepalive takes at most to give up a
/// connection whose pings go unanswered (10 s between pings, 5 s to wait).
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The link stops carrying bytes towards the origin only: the peer still
/// hears heartbeats and the revocation, and purges, but its signed purge
/// acknowledgement cannot arrive. Its keepalive gives the link up, it dials
/// again, and the acknowledgement is sent again and confirmed.
#[tokio::test]
async fn a_purge_acknowledgement_lost_on_a_link_dead_towards_the_origin_is_confirmed_on_the_next() {
    let test = Instant::now();
    let (mut cluster, relay) = linked().await;
    let (phila, nyc) = (&cluster.nodes[0], &cluster.nodes[1]);
    let case1 = write(phila, "case-1", 10, 512).await;
    let g1 = phila
        .kit()
        .grant_collection(&nyc.office, "case-1")
        .await
        .unwrap()
        .id;
    converge(nyc, &case1, "nyc-da to hold case-1").await;

    assert_eq!(relay.stall(&[Dir::Up]), 1);
    let stalled = Instant::now();
    phila.kit().revoke(&g1).await.unwrap();
    converge(nyc, &Holdings::new(), "nyc-da to purge case-1").await;
    let confirmed = || async {
        phila
            .kit()
            .grants()
            .await
            .unwrap()
            .into_iter()
            .find(|g| g.id == g1)
            .and_then(|g| g.purge_ack)
    };
    assert!(
        confirmed().await.is_none(),
        "the acknowledgement crossed a link that carries nothing towards phila-da"
    );
    let ack = eventually(
        KEEPALIVE + Duration::from_secs(10),
        "the acknowledgement over a new connection",
        confirmed,
    )
    .await;
    let took = stalled.elapsed();
    assert_eq!(ack.purged_by, "nyc-da");
    let c = relay.counts();
    assert_eq!(
        c.connections, 2,
        "the acknowledgement came over a new connection"
    );
    relay.heal();
    eprintln!(
        "netfault: 1 stall towards the origin; purge confirmed after {took:?} over connection {}; {:?}",
        c.connections,
        test.elapsed()
    );
    cluster.stop_all().await;
}
