//! `casemesh demo`: one office on this machine, in a temporary directory,
//! over real mutual TLS on loopback, storing and reading back signed records.
//! Every step checks what it claims; any mismatch ends the demo with an
//! error (and a non-zero exit).

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};

use super::ClientOpts;
use super::output::{self, RECORD_HEADER};
use crate::domain::OfficeId;
use crate::grpc::{convert, pb};
use crate::identity::OfficeVerifier;
use crate::identity::pki::certs_from_pem;
use crate::node::{self, NodeHandle};

async fn start(dir: &Path) -> Result<NodeHandle> {
    let cfg = crate::config::Config::load(&crate::config::Paths::new(dir).config())?;
    let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
    Ok(node::start(dir, listener).await?)
}

fn step(n: usize, text: &str) {
    println!();
    println!("── {n}. {text}");
}

pub async fn run(keep: bool) -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("casemesh-demo-")
        .tempdir()?;
    let dir = tmp.path().join("phila-da");
    let office = OfficeId::parse("phila-da")?;

    step(
        1,
        "office phila-da creates its identity and starts its node",
    );
    // Reserve an ephemeral port, then hand it to init and the node.
    let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
    let listen = probe.local_addr()?;
    drop(probe);
    let report = crate::setup::init(&dir, &office, &[], listen)?;
    let node = start(&dir).await?;
    println!(
        "   node listening on https://{} (mutual TLS 1.3)",
        node.addr
    );
    println!("   office fingerprint {}", report.fingerprint);
    let client = ClientOpts::for_data(&dir);
    let mut records = client.records().await?;

    step(2, "staff write three records in two cases");
    let mut ids = Vec::new();
    for (case, kind, title, body) in [
        (
            "2026-0042",
            "incident-report",
            "Stop on Broad St",
            "Agent detained a US citizen for 3 hours.",
        ),
        (
            "2026-0042",
            "witness-statement",
            "Statement of the driver",
            "I was asked for papers twice.",
        ),
        (
            "2026-0077",
            "identification",
            "Badge number seen",
            "Witness recalls badge 4471.",
        ),
    ] {
        let r = records
            .put(pb::PutRequest {
                collection: case.into(),
                kind: kind.into(),
                title: title.into(),
                body: body.as_bytes().to_vec().into(),
                content_type: "text/plain".into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        ensure!(r.version == 1, "a new record must start at version 1");
        ids.push(r.id);
    }
    let all = super::records::list(&client, None, None, None).await?;
    output::table(
        RECORD_HEADER,
        &all.iter().map(output::record_row).collect::<Vec<_>>(),
    );
    ensure!(
        all.len() == 3,
        "expected 3 records, the node lists {}",
        all.len()
    );
    let case = super::records::list(&client, Some("2026-0042".into()), None, None).await?;
    ensure!(
        case.len() == 2,
        "expected 2 records in case 2026-0042, got {}",
        case.len()
    );

    step(
        3,
        "every version carries the office's signature; a court can check it",
    );
    let ca_pem = std::fs::read(crate::config::Paths::new(&dir).office_ca())?;
    let ca = certs_from_pem(&ca_pem)?;
    let verifier = OfficeVerifier::from_ca_cert(office.clone(), ca.first().context("no CA")?)?;
    let got = records
        .get(pb::GetRequest {
            id: ids[0].clone(),
            version: None,
        })
        .await?
        .into_inner();
    let signed = convert::signed_from_pb(&got)?;
    verifier.verify(&signed)?;
    println!(
        "   {} v{}: signature verifies against office-ca.pem",
        got.id, got.version
    );
    let mut forged = got.clone();
    forged.body = b"Agent was polite.".to_vec().into();
    ensure!(
        verifier.verify(&convert::signed_from_pb(&forged)?).is_err(),
        "a changed body must not verify"
    );
    println!("   the same record with its body changed does not verify");

    step(4, "an update makes version 2; a stale writer is refused");
    let v2 = records
        .put(pb::PutRequest {
            id: ids[0].clone(),
            expected_version: Some(1),
            collection: "2026-0042".into(),
            kind: "incident-report".into(),
            title: "Stop on Broad St (corrected time)".into(),
            body: b"Agent detained a US citizen for 4 hours.".to_vec().into(),
            content_type: "text/plain".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    ensure!(v2.version == 2, "expected version 2, got {}", v2.version);
    let stale = records
        .put(pb::PutRequest {
            id: ids[0].clone(),
            expected_version: Some(1),
            collection: "2026-0042".into(),
            kind: "incident-report".into(),
            title: "stale".into(),
            ..Default::default()
        })
        .await;
    match stale {
        Err(s) if s.code() == tonic::Code::FailedPrecondition => {
            println!("   stale write refused: {}", s.message())
        }
        other => bail!("a stale write must be refused, got {other:?}"),
    }

    step(5, "a delete writes a signed tombstone; the history stays");
    records
        .delete(pb::DeleteRequest {
            id: ids[2].clone(),
            expected_version: None,
        })
        .await?;
    let history = records
        .history(pb::HistoryRequest { id: ids[0].clone() })
        .await?
        .into_inner()
        .versions;
    output::table(
        &["version", "title", "digest"],
        &history
            .iter()
            .map(|v| {
                vec![
                    v.version.to_string(),
                    v.title.clone(),
                    hex::encode(&v.digest)[..16].to_string(),
                ]
            })
            .collect::<Vec<_>>(),
    );
    ensure!(history.len() == 2, "expected 2 versions in the history");
    let live = super::records::list(&client, None, None, None).await?;
    ensure!(live.len() == 2, "the deleted record must not be listed");

    step(
        6,
        "the node restarts on the same directory; nothing is lost",
    );
    drop(records);
    node.shutdown().await?;
    let node = start(&dir).await?;
    let after = super::records::list(&client, None, None, None).await?;
    output::table(
        RECORD_HEADER,
        &after.iter().map(output::record_row).collect::<Vec<_>>(),
    );
    ensure!(
        after
            .iter()
            .map(|r| (&r.id, r.version))
            .eq(live.iter().map(|r| (&r.id, r.version))),
        "records after restart differ from before"
    );

    println!();
    println!("demo finished: every step checked out");
    if keep {
        let kept = tmp.keep();
        println!();
        println!("the node keeps running; in another terminal:");
        println!(
            "  casemesh record list --data {}",
            kept.join("phila-da").display()
        );
        println!("stop it with Ctrl-C");
        super::shutdown_signal().await;
    }
    node.shutdown().await?;
    Ok(())
}
