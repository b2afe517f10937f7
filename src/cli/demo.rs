//! `casemesh demo`: three offices on this machine, each in a temporary
//! directory with its own certificates, federating over real mutual TLS on
//! loopback (the offices come from [`crate::cluster`]). Every step checks
//! what it claims, with a bounded wait; any mismatch ends the demo with an
//! error (and a non-zero exit).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::errors::CliError;
use super::output;
use crate::cluster::{self, Office};
use crate::domain::Subject;
use crate::identity::OfficeVerifier;
use crate::identity::pki::certs_from_pem;
use crate::protocol::{convert, pb};

const CASE_1: &str = "2026-0042";
const CASE_2: &str = "2026-0077";
const WAIT: Duration = Duration::from_secs(15);
/// The badge both offices name, each as its staff wrote it down.
const BADGE_AS_PHILA_WROTE_IT: &str = "badge@officer-involved=#44-71";
const BADGE_AS_NYC_WRITES_IT: &str = "badge=4471";

fn step(n: usize, text: &str) {
    println!();
    println!("── {n}. {text}");
}

/// Polls `check` until it holds, or fails the demo after `WAIT`.
async fn until<F, Fut>(what: &str, mut check: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let start = Instant::now();
    loop {
        if check().await? {
            return Ok(start.elapsed());
        }
        if start.elapsed() > WAIT {
            bail!("gave up after {WAIT:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// id → (version, collection) of everything an office holds.
async fn holdings(o: &Office) -> Result<BTreeMap<String, (u64, String)>> {
    Ok(o.holdings().await?)
}

async fn who_holds_what(offices: &[Office]) -> Result<()> {
    let mut rows = Vec::new();
    for o in offices {
        let held = holdings(o).await?;
        let count = |case: &str| held.values().filter(|(_, c)| c == case).count();
        let from_others = held
            .keys()
            .filter(|id| !id.starts_with(&format!("{}:", o.office)))
            .count();
        rows.push(vec![
            o.office.to_string(),
            count(CASE_1).to_string(),
            count(CASE_2).to_string(),
            from_others.to_string(),
        ]);
    }
    output::table(
        &[
            "office",
            &format!("case {CASE_1}"),
            &format!("case {CASE_2}"),
            "replicas",
        ],
        &rows,
    );
    Ok(())
}

/// Runs the demo in a temporary directory, which holds the offices'
/// private keys: it is removed at the end, when the demo fails, and when
/// Ctrl-C (or SIGTERM) stops it, whether during the steps or while the
/// nodes are kept running.
pub async fn run(keep: bool) -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("casemesh-demo-")
        .tempdir()?;
    let mut offices = Vec::new();
    let mut stop = super::StopSignals::new()?;
    let outcome = tokio::select! {
        done = steps(tmp.path(), &mut offices) => done,
        _ = stop.recv() => Err(CliError::Interrupted(format!(
            "the demo's nodes were stopped and {} removed",
            tmp.path().display()
        )).into()),
    };
    if outcome.is_ok() && keep {
        println!();
        println!("the three nodes keep running; in another terminal, for example:");
        for o in &offices {
            println!("  casemesh status --data {}", o.dir.display());
        }
        for o in &offices {
            let (metrics, page) = o.web_addrs();
            if let (Some(metrics), Some(page)) = (metrics, page) {
                println!(
                    "  {}: metrics at http://{metrics}/metrics, status page at https://{page}/",
                    o.office
                );
            }
        }
        println!(
            "  (the status page asks for an admin or auditor certificate: `casemesh user issue --role auditor --p12 ... --data {}` makes one to import into a browser)",
            tmp.path().join("phila-da").display()
        );
        println!(
            "  casemesh share list --data {}",
            tmp.path().join("phila-da").display()
        );
        println!(
            "their data, private keys included, is in {}; Ctrl-C stops the nodes and removes it",
            tmp.path().display()
        );
        stop.recv().await;
    }
    for o in &mut offices {
        o.stop().await?;
    }
    let dir = tmp.path().to_owned();
    tmp.close()
        .with_context(|| format!("could not remove {}", dir.display()))?;
    if keep && outcome.is_ok() {
        println!("stopped the nodes and removed {}", dir.display());
    }
    outcome
}

/// The demo's steps; `offices` holds the nodes started, for the caller to
/// stop.
async fn steps(root: &Path, offices: &mut Vec<Office>) -> Result<()> {
    start_offices(root, offices).await?;
    pin_each_other(offices).await?;
    let [a, b, c] = &offices[..] else {
        bail!("the demo runs three offices");
    };
    let ids = write_records(a, offices).await?;
    let grant_b = grant_case_to_nyc(a, b, c, offices).await?;
    correct_a_record(a, b, &ids[0]).await?;
    let own = compare_notes(b, &ids[2]).await?;
    grant_one_record_to_mpls(a, c, &ids[3], offices).await?;
    revoke_nyc(a, b, c, &grant_b, offices).await?;
    ensure!(
        search_badge(b).await? == [(b.office.to_string(), own)],
        "after the revocation nyc-da's search must find only its own record"
    );
    println!("   nyc-da's search for badge 4471 now finds only its own record");
    println!();
    println!("demo finished: every step checked out");
    Ok(())
}

async fn start_offices(root: &Path, offices: &mut Vec<Office>) -> Result<()> {
    step(
        1,
        "three offices create their identities and start their nodes",
    );
    for name in ["phila-da", "nyc-da", "mpls-da"] {
        let mut office = Office::start(root, name).await?;
        // Metrics and the status page too, on ports the kernel picks.
        office
            .configure(|c| {
                let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
                c.metrics.listen = Some(any);
                c.status_page.listen = Some(any);
            })
            .await?;
        offices.push(office);
    }
    for o in offices.iter() {
        let ca = certs_from_pem(&o.ca_pem()?)?;
        let fp = crate::identity::Fingerprint::of(ca.first().context("no CA")?);
        println!("   {:<9} {}  {}", o.office.as_str(), o.endpoint(), fp);
    }
    Ok(())
}

async fn pin_each_other(offices: &[Office]) -> Result<()> {
    step(
        2,
        "their admins pin each other's office CA (trust is pairwise and explicit)",
    );
    cluster::pin_all(offices).await?;
    println!("   every office pinned the other two; nothing is shared yet");
    Ok(())
}

/// phila-da's records; their ids in the order written.
async fn write_records(a: &Office, offices: &[Office]) -> Result<Vec<String>> {
    step(3, "phila-da writes records in two cases");
    let mut ids = Vec::new();
    for (case, kind, title, subjects) in [
        (CASE_1, "incident-report", "Stop on Broad St", &[][..]),
        (CASE_1, "witness-statement", "Statement of the driver", &[]),
        (
            CASE_1,
            "identification",
            "Badge number seen",
            &[BADGE_AS_PHILA_WROTE_IT],
        ),
        (CASE_2, "incident-report", "Raid on 5th St", &[]),
        (CASE_2, "video", "Doorbell camera log", &[]),
    ] {
        let body = format!("{title}: details held by phila-da");
        let subjects = subjects
            .iter()
            .map(|s| Subject::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        ids.push(a.put_naming(case, kind, title, &body, &subjects).await?.id);
    }
    who_holds_what(offices).await?;
    Ok(ids)
}

async fn grant_case_to_nyc(
    a: &Office,
    b: &Office,
    c: &Office,
    offices: &[Office],
) -> Result<pb::GrantInfo> {
    step(4, &format!("phila-da grants case {CASE_1} to nyc-da"));
    let grant = a.grant_collection(&b.office, CASE_1).await?;
    let took = until("nyc-da to hold the 3 records of case 1", || async {
        Ok(holdings(b).await?.len() == 3)
    })
    .await?;
    who_holds_what(offices).await?;
    ensure!(holdings(c).await?.is_empty(), "mpls-da must hold nothing");
    ensure!(
        holdings(b).await?.values().all(|(_, case)| case == CASE_1),
        "nyc-da must hold only case 1"
    );
    println!("   nyc-da holds case {CASE_1} ({took:.0?}); mpls-da holds nothing");
    Ok(grant)
}

async fn correct_a_record(a: &Office, b: &Office, id: &str) -> Result<()> {
    step(
        5,
        "phila-da corrects a record; nyc-da sees the new version, signed by phila-da",
    );
    let put = a
        .records()
        .await?
        .put(pb::PutRequest {
            id: id.to_owned(),
            expected_version: Some(1),
            collection: CASE_1.into(),
            kind: "incident-report".into(),
            title: "Stop on Broad St (corrected time)".into(),
            body: b"Detained for 4 hours, not 3.".to_vec().into(),
            content_type: "text/plain".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut rb = b.records().await?;
    let get = pb::GetRequest {
        id: id.to_owned(),
        version: None,
    };
    let took = until("nyc-da to have version 2", || {
        let mut rb = rb.clone();
        let get = get.clone();
        async move {
            Ok(rb
                .get(get)
                .await
                .map(|r| r.into_inner().version == put.version)
                .unwrap_or(false))
        }
    })
    .await?;
    let replica = rb.get(get).await?.into_inner();
    let ca = certs_from_pem(&a.ca_pem()?)?;
    OfficeVerifier::from_ca_cert(a.office.clone(), ca.first().context("no CA")?)?
        .verify(&convert::signed_from_pb(&replica)?)?;
    output::table(
        &["office", "record", "version", "title"],
        &[vec![
            b.office.to_string(),
            replica.id.clone(),
            replica.version.to_string(),
            replica.title.clone(),
        ]],
    );
    println!(
        "   reached nyc-da {took:.0?} after the write; its signature verifies against phila-da's CA"
    );
    let forged = pb::PutRequest {
        id: id.to_owned(),
        collection: CASE_1.into(),
        kind: "incident-report".into(),
        title: "changed by nyc-da".into(),
        ..Default::default()
    };
    match rb.put(forged).await {
        Err(s) if s.code() == tonic::Code::PermissionDenied => {
            println!("   nyc-da cannot change it: {}", s.message());
            Ok(())
        }
        other => bail!("a replica must be read-only, got {other:?}"),
    }
}

/// nyc-da writes its own report naming the badge phila-da's record names,
/// then searches by badge: both side by side. Returns nyc-da's record.
async fn compare_notes(b: &Office, shared: &str) -> Result<String> {
    step(
        6,
        "nyc-da writes its own report about the same agent, then searches everything it holds by badge",
    );
    let badge = Subject::parse(BADGE_AS_NYC_WRITES_IT)?;
    let own = b
        .put_naming(
            "nyc-2026-311",
            "incident-report",
            "Canal Street raid",
            "Agent in a grey unmarked SUV, badge 4471.",
            &[badge],
        )
        .await?
        .id;
    let found = search_badge(b).await?;
    let mut expected = vec![
        (b.office.to_string(), own.clone()),
        ("phila-da".to_owned(), shared.to_owned()),
    ];
    expected.sort();
    let mut sorted = found.clone();
    sorted.sort();
    ensure!(
        sorted == expected,
        "nyc-da's search by badge must find its own record and phila-da's shared one, found {found:?}"
    );
    println!(
        "   `casemesh search --subject {BADGE_AS_NYC_WRITES_IT}` at nyc-da finds phila-da's \"{BADGE_AS_PHILA_WROTE_IT}\" too (values match normalized), and nothing phila-da did not share"
    );
    Ok(own)
}

/// (origin, id) of what nyc-da's search by badge finds, printed as a table.
async fn search_badge(b: &Office) -> Result<Vec<(String, String)>> {
    let badge = Subject::parse(BADGE_AS_NYC_WRITES_IT)?;
    let found = b
        .records()
        .await?
        .search(pb::SearchRequest {
            subjects: vec![convert::subject_to_pb(&badge)],
            ..Default::default()
        })
        .await?
        .into_inner();
    let records: Vec<&pb::Record> = found
        .hits
        .iter()
        .filter_map(|h| h.record.as_ref())
        .collect();
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.origin.clone(),
                r.collection.clone(),
                r.title.clone(),
                output::subjects(r),
            ]
        })
        .collect();
    output::table(&["origin", "case", "title", "subjects"], &rows);
    Ok(records
        .iter()
        .map(|r| (r.origin.clone(), r.id.clone()))
        .collect())
}

async fn grant_one_record_to_mpls(
    a: &Office,
    c: &Office,
    single: &str,
    offices: &[Office],
) -> Result<()> {
    step(7, "phila-da grants one record of case 2 to mpls-da");
    a.grant(
        &c.office,
        pb::grant_request::Target::RecordId(single.to_owned()),
    )
    .await?;
    until("mpls-da to hold the one record", || async {
        let held = holdings(c).await?;
        Ok(held.len() == 1 && held.contains_key(single))
    })
    .await?;
    who_holds_what(offices).await
}

async fn revoke_nyc(
    a: &Office,
    b: &Office,
    c: &Office,
    grant: &pb::GrantInfo,
    offices: &[Office],
) -> Result<()> {
    step(
        8,
        "phila-da revokes nyc-da's grant; nyc-da's copies disappear and it signs a purge receipt",
    );
    a.revoke(&grant.id).await?;
    let took = until("nyc-da to hold nothing of phila-da's", || async {
        let from_a = format!("{}:", a.office);
        Ok(holdings(b).await?.keys().all(|id| !id.starts_with(&from_a)))
    })
    .await?;
    until("nyc-da's purge acknowledgement", || async {
        let grants = a.grants().await?;
        Ok(grants
            .iter()
            .any(|g| g.id == grant.id && g.purge_ack.is_some()))
    })
    .await?;
    who_holds_what(offices).await?;
    println!("   purged {took:.0?} after the revoke; phila-da's grants:");
    super::sharing::print_grants(&a.grants().await?);
    ensure!(holdings(c).await?.len() == 1, "mpls-da keeps its own grant");
    Ok(())
}
