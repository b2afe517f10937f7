//! `casemesh demo`: three offices on this machine, each in a temporary
//! directory with its own certificates, federating over real mutual TLS on
//! loopback. Every step checks what it claims, with a bounded wait; any
//! mismatch ends the demo with an error (and a non-zero exit).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::ClientOpts;
use super::errors::CliError;
use super::output;
use crate::domain::OfficeId;
use crate::identity::OfficeVerifier;
use crate::identity::pki::certs_from_pem;
use crate::node::{self, NodeHandle};
use crate::protocol::{convert, pb};

const CASE_1: &str = "2026-0042";
const CASE_2: &str = "2026-0077";
const WAIT: Duration = Duration::from_secs(15);

struct Office {
    id: OfficeId,
    dir: PathBuf,
    client: ClientOpts,
    node: Option<NodeHandle>,
    endpoint: String,
}

async fn create(root: &Path, name: &str) -> Result<Office> {
    let id = OfficeId::parse(name)?;
    let dir = root.join(name);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    crate::setup::init(&dir, &id, &[], addr)?;
    let node = node::start(&dir, listener).await?;
    Ok(Office {
        client: ClientOpts::for_data(&dir),
        endpoint: format!("https://{addr}"),
        id,
        dir,
        node: Some(node),
    })
}

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
    Ok(super::records::list(&o.client, None, None, None)
        .await?
        .into_iter()
        .map(|r| (r.id, (r.version, r.collection)))
        .collect())
}

async fn who_holds_what(offices: &[Office]) -> Result<()> {
    let mut rows = Vec::new();
    for o in offices {
        let held = holdings(o).await?;
        let count = |case: &str| held.values().filter(|(_, c)| c == case).count();
        let from_others = held
            .keys()
            .filter(|id| !id.starts_with(&format!("{}:", o.id)))
            .count();
        rows.push(vec![
            o.id.to_string(),
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
        if let Some(n) = o.node.take() {
            n.shutdown().await?;
        }
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
    step(
        1,
        "three offices create their identities and start their nodes",
    );
    for name in ["phila-da", "nyc-da", "mpls-da"] {
        offices.push(create(root, name).await?);
    }
    for o in offices.iter() {
        let fp = std::fs::read(crate::config::Paths::new(&o.dir).office_ca())?;
        let fp = crate::identity::Fingerprint::of(certs_from_pem(&fp)?.first().context("no CA")?);
        println!("   {:<9} {}  {}", o.id.as_str(), o.endpoint, fp);
    }

    step(
        2,
        "their admins pin each other's office CA (trust is pairwise and explicit)",
    );
    for a in offices.iter() {
        for b in offices.iter() {
            if a.id != b.id {
                a.client
                    .admin()
                    .await?
                    .add_peer(pb::AddPeerRequest {
                        office: b.id.to_string(),
                        endpoint: b.endpoint.clone(),
                        ca_certificate_pem: std::fs::read_to_string(
                            crate::config::Paths::new(&b.dir).office_ca(),
                        )?,
                        expected_fingerprint: String::new(),
                    })
                    .await?;
            }
        }
    }
    println!("   every office pinned the other two; nothing is shared yet");

    let (a, b, c) = (&offices[0], &offices[1], &offices[2]);
    step(3, "phila-da writes records in two cases");
    let mut ra = a.client.records().await?;
    let mut ids = Vec::new();
    for (case, kind, title) in [
        (CASE_1, "incident-report", "Stop on Broad St"),
        (CASE_1, "witness-statement", "Statement of the driver"),
        (CASE_1, "identification", "Badge number seen"),
        (CASE_2, "incident-report", "Raid on 5th St"),
        (CASE_2, "video", "Doorbell camera log"),
    ] {
        let r = ra
            .put(pb::PutRequest {
                collection: case.into(),
                kind: kind.into(),
                title: title.into(),
                body: format!("{title}: details held by phila-da")
                    .into_bytes()
                    .into(),
                content_type: "text/plain".into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        ids.push((r.id, case));
    }
    who_holds_what(offices).await?;

    step(4, &format!("phila-da grants case {CASE_1} to nyc-da"));
    let grant_b = a
        .client
        .admin()
        .await?
        .grant(pb::GrantRequest {
            peer: "nyc-da".into(),
            target: Some(pb::grant_request::Target::Collection(CASE_1.into())),
            expires_at_ms: 0,
        })
        .await?
        .into_inner();
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

    step(
        5,
        "phila-da corrects a record; nyc-da sees the new version, signed by phila-da",
    );
    let id = ids[0].0.clone();
    let put = ra
        .put(pb::PutRequest {
            id: id.clone(),
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
    let mut rb = b.client.records().await?;
    let took = until("nyc-da to have version 2", || {
        let mut rb = rb.clone();
        let id = id.clone();
        async move {
            Ok(rb
                .get(pb::GetRequest { id, version: None })
                .await
                .map(|r| r.into_inner().version == put.version)
                .unwrap_or(false))
        }
    })
    .await?;
    let replica = rb
        .get(pb::GetRequest {
            id: id.clone(),
            version: None,
        })
        .await?
        .into_inner();
    let ca = certs_from_pem(&std::fs::read(
        crate::config::Paths::new(&a.dir).office_ca(),
    )?)?;
    OfficeVerifier::from_ca_cert(a.id.clone(), ca.first().context("no CA")?)?
        .verify(&convert::signed_from_pb(&replica)?)?;
    output::table(
        &["office", "record", "version", "title"],
        &[vec![
            b.id.to_string(),
            replica.id.clone(),
            replica.version.to_string(),
            replica.title.clone(),
        ]],
    );
    println!(
        "   reached nyc-da {took:.0?} after the write; its signature verifies against phila-da's CA"
    );
    let mut forged = pb::PutRequest {
        id: id.clone(),
        collection: CASE_1.into(),
        kind: "incident-report".into(),
        title: "changed by nyc-da".into(),
        ..Default::default()
    };
    forged.body = b"".to_vec().into();
    match rb.put(forged).await {
        Err(s) if s.code() == tonic::Code::PermissionDenied => {
            println!("   nyc-da cannot change it: {}", s.message())
        }
        other => bail!("a replica must be read-only, got {other:?}"),
    }

    step(6, "phila-da grants one record of case 2 to mpls-da");
    let single = ids[3].0.clone();
    a.client
        .admin()
        .await?
        .grant(pb::GrantRequest {
            peer: "mpls-da".into(),
            target: Some(pb::grant_request::Target::RecordId(single.clone())),
            expires_at_ms: 0,
        })
        .await?;
    until("mpls-da to hold the one record", || async {
        let held = holdings(c).await?;
        Ok(held.len() == 1 && held.contains_key(&single))
    })
    .await?;
    who_holds_what(offices).await?;

    step(
        7,
        "phila-da revokes nyc-da's grant; nyc-da's copies disappear and it signs a purge receipt",
    );
    a.client
        .admin()
        .await?
        .revoke(pb::RevokeRequest {
            grant_id: grant_b.id.clone(),
        })
        .await?;
    let took = until("nyc-da to hold nothing", || async {
        Ok(holdings(b).await?.is_empty())
    })
    .await?;
    let mut admin_a = a.client.admin().await?;
    until("nyc-da's purge acknowledgement", || {
        let mut admin_a = admin_a.clone();
        let id = grant_b.id.clone();
        async move {
            let grants = admin_a
                .list_grants(pb::ListGrantsRequest::default())
                .await?
                .into_inner()
                .grants;
            Ok(grants.iter().any(|g| g.id == id && g.purge_ack.is_some()))
        }
    })
    .await?;
    who_holds_what(offices).await?;
    println!("   purged {took:.0?} after the revoke; phila-da's grants:");
    let grants = admin_a
        .list_grants(pb::ListGrantsRequest::default())
        .await?
        .into_inner()
        .grants;
    super::sharing::print_grants(&grants);
    ensure!(holdings(c).await?.len() == 1, "mpls-da keeps its own grant");

    println!();
    println!("demo finished: every step checked out");
    Ok(())
}
