//! Offices whose clocks disagree by hours: peers as `casemesh serve`
//! processes under libfaketime (Debian's `faketime`, which `.ci/run`
//! installs), one 5 hours ahead of the origin, one 5 hours behind.

use std::path::Path;
use std::time::Duration;

use casemesh::cluster::Office;
use casemesh::protocol::pb;

use super::cluster::{audit_intact, eventually};

const BIN: &str = env!("CARGO_BIN_EXE_casemesh");
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
const HOUR_MS: u64 = 3_600_000;

/// The environment that shifts a process's wall clock by `offset`
/// (`+5h`), leaving its monotonic clock alone.
fn shifted(offset: &str) -> [(&str, &str); 3] {
    [
        ("LD_PRELOAD", FAKETIME),
        ("FAKETIME", offset),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ]
}

async fn holds(office: &Office, collection: &str) -> usize {
    office
        .holdings()
        .await
        .map(|h| h.values().filter(|(_, c)| c == collection).count())
        .unwrap_or(0)
}

async fn purge_confirmed(phila: &Office, grant: &str) -> bool {
    phila
        .grants()
        .await
        .unwrap()
        .iter()
        .any(|g| g.id == grant && g.purge_ack.is_some())
}

#[tokio::test]
async fn peers_hours_ahead_and_behind_replicate_expire_purge_and_verify() {
    if !Path::new(FAKETIME).exists() {
        assert!(
            std::env::var_os("CASEMESH_REQUIRE_FAKETIME").is_none(),
            "{FAKETIME} is missing (apt-get install faketime)"
        );
        eprintln!("SKIPPED: {FAKETIME} is missing (apt-get install faketime; .ci/run does)");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let bin = Path::new(BIN);
    let mut offices = Vec::new();
    for (name, clock) in [
        ("phila-da", None),
        ("nyc-da", Some("+5h")),
        ("mpls-da", Some("-5h")),
    ] {
        let (mut office, listener) = Office::create(root.path(), name).await.unwrap();
        drop(listener);
        match clock {
            Some(offset) => office
                .serve_process_in_place_with(bin, &shifted(offset))
                .await
                .unwrap(),
            None => office.serve_process_in_place(bin).await.unwrap(),
        }
        offices.push(office);
    }
    let [phila, nyc, mpls] = &mut offices[..] else {
        unreachable!()
    };
    for peer in [&*nyc, &*mpls] {
        phila.pin(peer).await.unwrap();
        peer.pin(phila).await.unwrap();
    }
    for i in 0..10 {
        phila
            .put("case-1", "note", &format!("n{i}"), "x")
            .await
            .unwrap();
        phila
            .put("case-2", "note", &format!("e{i}"), "x")
            .await
            .unwrap();
    }
    let to_nyc = phila.grant_collection(&nyc.office, "case-1").await.unwrap();
    let to_mpls = phila
        .grant_collection(&mpls.office, "case-1")
        .await
        .unwrap();
    // Expires by the origin's clock, 20 s from now; to the peer ahead by
    // 5 hours it would have expired long ago.
    let expiring = phila
        .admin()
        .await
        .unwrap()
        .grant(pb::GrantRequest {
            peer: nyc.office.to_string(),
            target: Some(pb::grant_request::Target::Collection("case-2".into())),
            expires_at_ms: casemesh::domain::now_ms() + 20_000,
        })
        .await
        .unwrap()
        .into_inner();
    for (peer, collection) in [(&*nyc, "case-1"), (&*mpls, "case-1"), (&*nyc, "case-2")] {
        eventually(
            Duration::from_secs(30),
            &format!("{} to hold {collection}", peer.office),
            || async { (holds(peer, collection).await == 10).then_some(()) },
        )
        .await;
    }
    assert!(
        casemesh::domain::now_ms() < expiring.expires_at_ms,
        "control: case-2 arrived before its grant expired"
    );
    // A new version reaches both, whatever their clocks.
    let late = phila.put("case-1", "note", "late", "x").await.unwrap();
    for peer in [&*nyc, &*mpls] {
        eventually(Duration::from_secs(30), "the late record", || async {
            peer.holdings()
                .await
                .ok()?
                .contains_key(&late.id)
                .then_some(())
        })
        .await;
    }

    // Revoked at the peer behind, expired at the peer ahead: both purge,
    // and both acknowledgements (dated by their own clocks) are accepted.
    phila.revoke(&to_mpls.id).await.unwrap();
    for (peer, grant, collection) in [
        (&*mpls, &to_mpls.id, "case-1"),
        (&*nyc, &expiring.id, "case-2"),
    ] {
        eventually(
            Duration::from_secs(60),
            &format!("{} to purge {collection}, confirmed", peer.office),
            || async {
                (holds(peer, collection).await == 0 && purge_confirmed(phila, grant).await)
                    .then_some(())
            },
        )
        .await;
    }
    assert_eq!(holds(nyc, "case-1").await, 11, "the grant still open stays");
    let _ = to_nyc;
    // Control: each acknowledgement is dated by its peer's own clock, hours
    // from the origin's. (A node's audit entries are not: their times never
    // go back within a log, so a clock set back stamps them no earlier than
    // the newest entry.)
    let now = casemesh::domain::now_ms();
    let purged_at = |grant: &str, grants: &[pb::GrantInfo]| {
        grants
            .iter()
            .find(|g| g.id == grant)
            .and_then(|g| g.purge_ack.as_ref())
            .map(|a| a.purged_at_ms)
            .unwrap()
    };
    let grants = phila.grants().await.unwrap();
    let ahead = purged_at(&expiring.id, &grants);
    let behind = purged_at(&to_mpls.id, &grants);
    assert!(
        ahead > now + 4 * HOUR_MS,
        "nyc-da's clock: {ahead} vs {now}"
    );
    assert!(
        behind + 4 * HOUR_MS < now,
        "mpls-da's clock: {behind} vs {now}"
    );

    // Every log verifies; each peer's witnessed heads of the origin agree.
    for office in [&*phila, &*nyc, &*mpls] {
        audit_intact(office).await;
    }
    for peer in [&*nyc, &*mpls] {
        let witnessed = peer
            .admin()
            .await
            .unwrap()
            .witness_audit(pb::WitnessAuditRequest {
                peer: "phila-da".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(witnessed.agreed, "{}: {witnessed:?}", peer.office);
        assert!(
            witnessed.heads_checked > 0,
            "{}: {witnessed:?}",
            peer.office
        );
    }
    for office in offices.iter_mut() {
        office.stop().await.unwrap();
    }
}
