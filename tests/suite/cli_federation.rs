//! Three offices set up and federating through the `casemesh` binary alone,
//! typed the way an office admin would type it: `init`, `serve`, `peer add`
//! with the fingerprint sent out of band, `record put`, `share grant`,
//! `share revoke` and `peer remove --purge-replicas`. Every check reads what
//! the CLI printed; nothing is set up or inspected through the library.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use super::bin::{casemesh, fails, json, ok, serve};
use super::cluster::eventually;

/// Replication between separate processes on a busy 2-core machine.
const DEADLINE: Duration = Duration::from_secs(30);

/// An office as its admin knows it after `casemesh init`.
struct Office {
    name: &'static str,
    data: PathBuf,
    /// `https://127.0.0.1:PORT`, as its admin gives it to peer offices:
    /// `serve` reports it once it has bound the port.
    endpoint: String,
    /// The `office fingerprint:` init printed, sent to peers out of band.
    fingerprint: String,
    /// The certificate init said to send to peer offices.
    ca_cert: String,
}

impl Office {
    fn data(&self) -> &str {
        self.data.to_str().unwrap()
    }
}

/// `casemesh init` of `name` in its own directory, listening on a loopback
/// port chosen when it starts; init and `casemesh fingerprint` must print
/// the same fingerprint.
fn office(tmp: &tempfile::TempDir, name: &'static str) -> Office {
    let data = tmp.path().join(name);
    let d = data.to_str().unwrap();
    let out = ok(&[
        "init",
        "--office",
        name,
        "--data",
        d,
        "--listen",
        "127.0.0.1:0",
    ]);
    let printed = |label: &str| {
        out.lines()
            .find_map(|l| Some(l.trim().strip_prefix(label)?.trim().to_owned()))
            .unwrap_or_else(|| panic!("init prints {label:?}:\n{out}"))
    };
    let fingerprint = printed("office fingerprint:");
    assert!(fingerprint.starts_with("sha256:"), "{out}");
    let ca_cert = printed("send to peer offices:");
    assert_eq!(
        ok(&["fingerprint", "--data", d]).trim(),
        fingerprint,
        "`casemesh fingerprint` prints what init printed"
    );
    Office {
        name,
        endpoint: String::new(),
        data,
        fingerprint,
        ca_cert,
    }
}

/// `casemesh peer add` run by `at`'s admin for `peer`, pinning `fingerprint`.
fn peer_add(at: &Office, peer: &Office, fingerprint: &str) -> Output {
    casemesh(&[
        "peer",
        "add",
        "--office",
        peer.name,
        "--peer-endpoint",
        &peer.endpoint,
        "--ca-cert",
        &peer.ca_cert,
        "--fingerprint",
        fingerprint,
        "--data",
        at.data(),
    ])
}

/// `at` pins `peer`, and says it pinned the fingerprint `peer`'s init printed.
fn pin(at: &Office, peer: &Office) {
    let out = peer_add(at, peer, &peer.fingerprint);
    assert!(
        out.status.success(),
        "{} pinning {} failed: {}",
        at.name,
        peer.name,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!(
            "pinned {} at {}: {}",
            peer.name, peer.endpoint, peer.fingerprint
        )
    );
}

/// The offices `at` has pinned, from `peer list --json`.
fn pinned(at: &Office) -> Vec<String> {
    let peers = json(&["peer", "list", "--json", "--data", at.data()]);
    let peers = peers.as_array().expect("peer list --json prints an array");
    peers.iter().map(|p| str_of(&p["office"])).collect()
}

fn str_of(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_owned()
}

/// `record put` at `office`: a new record, whose id is printed alone.
fn put(office: &Office, collection: &str, kind: &str, title: &str) -> String {
    let out = ok(&[
        "record",
        "put",
        "--data",
        office.data(),
        "--collection",
        collection,
        "--kind",
        kind,
        "--title",
        title,
        "--body",
        &format!("{title}, as written at {}", office.name),
    ]);
    let id = out.trim();
    assert!(
        id.starts_with(&format!("{}:", office.name)) && !id.contains(char::is_whitespace),
        "record put prints the new id alone: {out:?}"
    );
    id.to_owned()
}

/// `share grant` at `origin`; `target` is `--collection C` or `--record ID`.
fn grant(origin: &Office, peer: &Office, target: [&str; 2]) -> String {
    let out = ok(&[
        "share",
        "grant",
        "--peer",
        peer.name,
        target[0],
        target[1],
        "--data",
        origin.data(),
    ]);
    let id = out.trim();
    assert!(
        id.starts_with("g-") && !id.contains(char::is_whitespace),
        "share grant prints the grant id alone: {out:?}"
    );
    id.to_owned()
}

/// The rows of a table the CLI printed, after checking its header. Cells are
/// padded and joined by two spaces; none of ours holds two spaces in a row.
fn table(out: &str, header: &[&str]) -> Vec<Vec<String>> {
    let cells = |line: &str| -> Vec<String> {
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let mut lines = out.lines();
    assert_eq!(cells(lines.next().unwrap_or_default()), header, "{out}");
    lines.map(cells).collect()
}

/// The `share list` row of one grant: GRANT PEER TARGET STATE.
fn grant_row(origin: &Office, grant: &str) -> Vec<String> {
    let out = ok(&["share", "list", "--data", origin.data()]);
    table(&out, &["GRANT", "PEER", "TARGET", "STATE"])
        .into_iter()
        .find(|row| row[0] == grant)
        .unwrap_or_else(|| panic!("grant {grant} in share list:\n{out}"))
}

/// The records `at` holds from `origin`, from `record list --origin --json`.
fn held(at: &Office, origin: &Office) -> Vec<Value> {
    let list = json(&[
        "record",
        "list",
        "--origin",
        origin.name,
        "--json",
        "--data",
        at.data(),
    ]);
    list.as_array()
        .expect("record list --json prints an array")
        .clone()
}

fn ids(records: &[Value]) -> BTreeSet<String> {
    records.iter().map(|r| str_of(&r["id"])).collect()
}

/// Waits until `at` holds exactly `expected` from `origin`.
async fn holds_exactly(at: &Office, origin: &Office, expected: &BTreeSet<String>, what: &str) {
    let what = format!("{what}: exactly {expected:?}");
    eventually(DEADLINE, &what, || async {
        (ids(&held(at, origin)) == *expected).then_some(())
    })
    .await;
}

/// phila-da shares case 2026-0042 with nyc-da and one record of case
/// 2026-0077 with mpls-da, all through the binary: each peer receives
/// exactly its grants and later versions of them; a revoked grant is purged
/// and phila-da's admin sees nyc-da confirm it; nyc-da unpinning phila-da
/// with `--purge-replicas` drops what it held, and pinning it again brings
/// back what is still granted. A wrong fingerprint pins nothing.
#[tokio::test]
async fn three_offices_federate_through_the_binary_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let mut phila = office(&tmp, "phila-da");
    let mut nyc = office(&tmp, "nyc-da");
    let mut mpls = office(&tmp, "mpls-da");
    let mut servers = Vec::new();
    for o in [&mut phila, &mut nyc, &mut mpls] {
        let server = serve(&o.data).await;
        o.endpoint = server.endpoint.clone();
        servers.push(server);
    }

    pin(&phila, &mpls);
    pin(&mpls, &phila);
    // nyc-da's certificate with mpls-da's fingerprint: refused, nothing pinned.
    let wrong = peer_add(&phila, &nyc, &mpls.fingerprint);
    assert!(!wrong.status.success(), "a wrong fingerprint was pinned");
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr.contains(&nyc.fingerprint) && stderr.contains(&mpls.fingerprint),
        "the error names both fingerprints: {stderr}"
    );
    assert_eq!(pinned(&phila), ["mpls-da"]);
    pin(&phila, &nyc);
    pin(&nyc, &phila);
    assert_eq!(
        pinned(&phila).into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from(["mpls-da".to_owned(), "nyc-da".to_owned()])
    );

    let case_42: BTreeSet<String> = [
        ("incident-report", "Stop on Broad St"),
        ("witness-statement", "Statement of the bus driver"),
        ("evidence", "Bodycam log"),
    ]
    .iter()
    .map(|(kind, title)| put(&phila, "2026-0042", kind, title))
    .collect();
    let case_77: Vec<String> = ["Arrest report", "Lab results"]
        .iter()
        .map(|title| put(&phila, "2026-0077", "report", title))
        .collect();
    let for_mpls = &case_77[0];

    let to_nyc = grant(&phila, &nyc, ["--collection", "2026-0042"]);
    let to_mpls = grant(&phila, &mpls, ["--record", for_mpls]);
    assert_eq!(
        grant_row(&phila, &to_nyc),
        [to_nyc.as_str(), "nyc-da", "collection 2026-0042", "active"]
    );
    let record_target = format!("record {for_mpls}");
    assert_eq!(
        grant_row(&phila, &to_mpls),
        [
            to_mpls.as_str(),
            "mpls-da",
            record_target.as_str(),
            "active"
        ]
    );
    let grants = json(&["share", "list", "--json", "--data", phila.data()]);
    let grants: BTreeSet<_> = grants
        .as_array()
        .expect("share list --json prints an array")
        .iter()
        .map(|g| (str_of(&g["id"]), str_of(&g["peer"]), str_of(&g["state"])))
        .collect();
    assert_eq!(
        grants,
        BTreeSet::from([
            (to_nyc.clone(), "nyc-da".into(), "active".into()),
            (to_mpls.clone(), "mpls-da".into(), "active".into()),
        ])
    );

    // Each peer receives exactly what it was granted.
    holds_exactly(&nyc, &phila, &case_42, "nyc-da to hold case 2026-0042").await;
    let only_for_mpls = BTreeSet::from([for_mpls.clone()]);
    holds_exactly(&mpls, &phila, &only_for_mpls, "mpls-da to hold its record").await;

    // nyc-da lists the records it holds of phila-da by peer, …
    let peers = ok(&["peer", "list", "--data", nyc.data()]);
    let header = [
        "PEER",
        "ENDPOINT",
        "LINK",
        "LAST CONTACT",
        "CHECKPOINT",
        "OUTBOX",
        "REPLICAS",
        "LAST ERROR",
    ];
    let row = table(&peers, &header)
        .into_iter()
        .find(|r| r[0] == "phila-da")
        .unwrap_or_else(|| panic!("phila-da in peer list:\n{peers}"));
    assert_eq!(row[6], case_42.len().to_string(), "{peers}");
    // … and proves the heads it kept of phila-da's log against it.
    let help = ok(&["audit", "witness", "--help"]);
    assert!(
        help.contains("consistency proofs") && help.contains("audit.witness_interval"),
        "{help}"
    );
    let agreed = ok(&[
        "audit",
        "witness",
        "--peer",
        "phila-da",
        "--data",
        nyc.data(),
    ]);
    assert!(
        agreed.starts_with("phila-da's log agrees with the ")
            && agreed.contains(" bytes of proof)"),
        "{agreed}"
    );
    let unpinned = fails(
        1,
        &[
            "audit",
            "witness",
            "--peer",
            "boston-da",
            "--data",
            nyc.data(),
        ],
    );
    assert!(
        unpinned.contains("peer boston-da is not pinned"),
        "{unpinned}"
    );
    let malformed = fails(
        1,
        &[
            "audit",
            "witness",
            "--peer",
            "Not An Office",
            "--data",
            nyc.data(),
        ],
    );
    assert!(malformed.contains("INVALID_ARGUMENT"), "{malformed}");

    // phila-da's bundle of the case: today's format, its audit excerpt
    // proven against a signed tree head.
    let bundle = tmp.path().join("case-42.tar");
    ok(&[
        "export",
        "--collection",
        "2026-0042",
        "--out",
        bundle.to_str().unwrap(),
        "--data",
        phila.data(),
    ]);
    let verified = ok(&[
        "verify-bundle",
        bundle.to_str().unwrap(),
        "--trust",
        &phila.fingerprint,
    ]);
    assert!(
        verified.starts_with("casemesh case bundle (casemesh-bundle-v2)")
            && verified.contains("VERIFIED"),
        "{verified}"
    );
    for r in held(&nyc, &phila) {
        assert_eq!(r["collection"], "2026-0042", "{r}");
        assert_eq!(r["version"], 1, "{r}");
    }
    let nyc_77 = json(&[
        "record",
        "list",
        "--collection",
        "2026-0077",
        "--json",
        "--data",
        nyc.data(),
    ]);
    assert_eq!(
        nyc_77,
        Value::Array(vec![]),
        "nyc-da holds nothing of 2026-0077"
    );
    let listed = ok(&[
        "record",
        "list",
        "--origin",
        "phila-da",
        "--data",
        nyc.data(),
    ]);
    let header = ["ID", "VERSION", "COLLECTION", "KIND", "TITLE", "UPDATED"];
    let listed: BTreeSet<String> = table(&listed, &header)
        .into_iter()
        .map(|row| row[0].clone())
        .collect();
    assert_eq!(listed, case_42, "the table lists what --json lists");
    let updated = case_42.first().unwrap();
    let shown = ok(&["record", "get", updated, "--data", nyc.data()]);
    assert!(shown.contains("origin:       phila-da"), "{shown}");

    // A new version at phila-da reaches nyc-da.
    let out = ok(&[
        "record",
        "put",
        "--data",
        phila.data(),
        "--id",
        updated,
        "--expected-version",
        "1",
        "--collection",
        "2026-0042",
        "--kind",
        "incident-report",
        "--title",
        "Stop on Broad St, corrected",
    ]);
    assert_eq!(out.trim(), updated);
    eventually(DEADLINE, "nyc-da to hold version 2", || async {
        let r = json(&["record", "get", updated, "--json", "--data", nyc.data()]);
        (r["version"] == 2).then_some(())
    })
    .await;
    let r = json(&["record", "get", updated, "--json", "--data", nyc.data()]);
    assert_eq!(r["title"], "Stop on Broad St, corrected");

    // Revoking: nyc-da purges, and phila-da's admin sees it confirmed.
    let out = ok(&["share", "revoke", &to_nyc, "--data", phila.data()]);
    assert!(
        out.starts_with(&format!("revoked {to_nyc}: revoked;")),
        "{out}"
    );
    let state = eventually(
        DEADLINE,
        "phila-da's share list to show nyc-da confirmed the purge",
        || async {
            let state = grant_row(&phila, &to_nyc).swap_remove(3);
            state.contains("purged at").then_some(state)
        },
    )
    .await;
    let (purged_at, by) = state
        .strip_prefix("revoked; purged at ")
        .and_then(|rest| rest.split_once(" (confirmed by "))
        .unwrap_or_else(|| panic!("state {state:?}"));
    assert!(humantime::parse_rfc3339(purged_at).is_ok(), "{state}");
    assert_eq!(by, "nyc-da)");
    assert_eq!(
        ids(&held(&nyc, &phila)),
        BTreeSet::new(),
        "nyc-da purged the revoked case"
    );
    assert_eq!(
        ids(&held(&mpls, &phila)),
        only_for_mpls,
        "mpls-da keeps its grant"
    );
    assert_eq!(grant_row(&phila, &to_mpls)[3], "active");

    // A mistyped case number is accepted (a case may be granted before its
    // first record) but does not look like success.
    let typo = casemesh(&[
        "share",
        "grant",
        "--peer",
        "mpls-da",
        "--collection",
        "2026-0O42",
        "--data",
        phila.data(),
    ]);
    assert!(typo.status.success());
    assert!(
        String::from_utf8_lossy(&typo.stdout)
            .trim()
            .starts_with("g-")
    );
    assert_eq!(
        String::from_utf8_lossy(&typo.stderr).trim(),
        "warning: collection 2026-0O42 holds no records of phila-da yet; mpls-da receives them once they are written (check the case number if you expected some)"
    );

    // nyc-da unpins phila-da and drops what it holds from it.
    grant(&phila, &nyc, ["--collection", "2026-0077"]);
    let case_77: BTreeSet<String> = case_77.into_iter().collect();
    holds_exactly(&nyc, &phila, &case_77, "nyc-da to hold case 2026-0077").await;
    let out = ok(&[
        "peer",
        "remove",
        "phila-da",
        "--purge-replicas",
        "--data",
        nyc.data(),
    ]);
    // nyc-da granted phila-da nothing, so no grant of its own closes.
    assert_eq!(
        out.trim(),
        format!(
            "removed peer phila-da: 0 grants closed, {} replicas purged",
            case_77.len()
        )
    );
    assert_eq!(ids(&held(&nyc, &phila)), BTreeSet::new());
    assert!(!pinned(&nyc).contains(&"phila-da".to_owned()));

    // Pinned again, nyc-da receives again what is still granted to it.
    pin(&nyc, &phila);
    holds_exactly(
        &nyc,
        &phila,
        &case_77,
        "nyc-da to receive case 2026-0077 again after pinning phila-da again",
    )
    .await;
}
