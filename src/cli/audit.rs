//! `casemesh audit …`, `casemesh export` and `casemesh verify-bundle`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use super::ClientOpts;
use super::errors::CliError;
use super::{json, output};
use crate::bundle::Verdict;
use crate::protocol::pb;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit entries matching every filter given, oldest first (or
    /// newest first with --reverse); says when more match than are shown.
    List {
        /// From this time (RFC 3339, e.g. 2026-11-21T09:00:00Z).
        #[arg(long)]
        from: Option<String>,
        /// Up to this time (RFC 3339).
        #[arg(long)]
        to: Option<String>,
        /// User name, office id, certificate fingerprint, or kind
        /// (user, peer, node, unauthenticated).
        #[arg(long)]
        actor: Option<String>,
        /// Only entries that concern this record.
        #[arg(long)]
        record: Option<String>,
        /// Only entries that concern this collection.
        #[arg(long)]
        collection: Option<String>,
        /// Only entries that concern this peer office.
        #[arg(long)]
        peer: Option<String>,
        /// e.g. Records.Put, Records.Get, replica.applied.
        #[arg(long)]
        action: Option<String>,
        /// Most entries to print; 0 for all of them.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// Newest entries first: with --limit N, the last N.
        #[arg(long)]
        reverse: bool,
        /// Print JSON instead of text (shapes: docs/cli.md, "JSON output").
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Check the whole chain and every signed head; name the first entry
    /// that does not check out. Exits non-zero if one does not.
    Verify {
        /// Print JSON instead of text (shapes: docs/cli.md, "JSON output").
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Prove the heads this node kept from a peer since the last check
    /// against that peer's log now (RFC 9162 consistency proofs: a few
    /// hundred bytes per head, whatever the length of its log). The node
    /// also does this on its own every `audit.witness_interval`. Exits
    /// non-zero on a conflict.
    Witness {
        /// The peer office whose log to check.
        #[arg(long)]
        peer: String,
        /// Print JSON instead of text (shapes: docs/cli.md, "JSON output").
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
}

pub(super) fn time_arg(flag: &str, v: Option<&str>) -> Result<u64> {
    let Some(v) = v else { return Ok(0) };
    let t = humantime::parse_rfc3339_weak(v).map_err(|_| {
        CliError::Usage(format!(
            "{flag} {v:?} is not an RFC 3339 time such as 2026-11-21T09:00:00Z"
        ))
    })?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0))
}

pub async fn run(c: AuditCommand) -> Result<()> {
    match c {
        AuditCommand::List {
            from,
            to,
            actor,
            record,
            collection,
            peer,
            action,
            limit,
            reverse,
            json,
            client,
        } => {
            let limit = if limit == 0 { usize::MAX } else { limit };
            let mut admin = client.admin().await?;
            let mut req = pb::QueryAuditRequest {
                from_ms: time_arg("--from", from.as_deref())?,
                to_ms: time_arg("--to", to.as_deref())?,
                actor: actor.unwrap_or_default(),
                record_id: record.unwrap_or_default(),
                collection: collection.unwrap_or_default(),
                peer: peer.unwrap_or_default(),
                action: action.unwrap_or_default(),
                page_size: 0,
                page_token: String::new(),
                newest_first: reverse,
            };
            let mut entries = Vec::new();
            let mut more = false;
            loop {
                if entries.len() >= limit {
                    // Whether anything beyond the limit matches (a page
                    // may come back empty with a token: the node scans a
                    // bounded stretch of the log per call).
                    req.page_size = 1;
                    loop {
                        let page = admin.query_audit(req.clone()).await?.into_inner();
                        if !page.entries.is_empty() {
                            more = true;
                            break;
                        }
                        if page.next_page_token.is_empty() {
                            break;
                        }
                        req.page_token = page.next_page_token;
                    }
                    break;
                }
                req.page_size = (limit - entries.len()).min(1000) as u32;
                let page = admin.query_audit(req.clone()).await?.into_inner();
                entries.extend(page.entries);
                if page.next_page_token.is_empty() {
                    break;
                }
                req.page_token = page.next_page_token;
            }
            if json {
                json::print(&Value::Array(
                    entries.iter().map(json::audit_entry).collect(),
                ));
            } else {
                print_entries(&entries);
            }
            if more {
                let order = if reverse { "newest" } else { "oldest" };
                eprintln!(
                    "showing the {order} {} matching entries; more match: raise --limit (0 for all), narrow with --from/--to or a filter{}",
                    entries.len(),
                    if reverse {
                        ""
                    } else {
                        ", or --reverse for the newest"
                    }
                );
            }
            Ok(())
        }
        AuditCommand::Verify { json, client } => {
            let r = client
                .admin()
                .await?
                .verify_audit(pb::VerifyAuditRequest {})
                .await?
                .into_inner();
            if json {
                json::print(&json!({
                    "intact": r.intact,
                    "entries": r.entries,
                    "signed_heads": r.signed_heads,
                    "fault_seq": (!r.intact).then_some(r.fault_seq),
                    "fault": (!r.intact).then(|| r.fault.clone()),
                }));
            } else if r.intact {
                println!(
                    "audit log intact: {} entries, {} signed heads checked",
                    r.entries, r.signed_heads
                );
            } else {
                println!(
                    "audit log BROKEN at entry {}: {}\n({} entries and {} signed heads before it checked out)",
                    r.fault_seq, r.fault, r.entries, r.signed_heads
                );
            }
            if !r.intact {
                return Err(CliError::Failed(format!(
                    "audit entry {} does not check out",
                    r.fault_seq
                ))
                .into());
            }
            Ok(())
        }
        AuditCommand::Witness { peer, json, client } => {
            let r = client
                .admin()
                .await?
                .witness_audit(pb::WitnessAuditRequest { peer: peer.clone() })
                .await?
                .into_inner();
            if json {
                json::print(&json!({
                    "peer": peer,
                    "agreed": r.agreed,
                    "heads_checked": r.heads_checked,
                    "current": r.current.as_ref().map(json::signed_head),
                    "conflict": json::text(&r.conflict),
                    "proof_bytes": r.proof_bytes,
                }));
            } else if r.agreed {
                let now = r
                    .current
                    .map(|h| {
                        format!(
                            "; its log now has {} entries (signed {})",
                            h.seq,
                            output::time(h.at_ms)
                        )
                    })
                    .unwrap_or_default();
                println!(
                    "{peer}'s log agrees with the {} heads this node witnessed{now} ({} bytes of proof)",
                    r.heads_checked, r.proof_bytes
                );
            } else {
                println!("CONFLICT with {peer}'s audit log: {}", r.conflict);
            }
            if !r.agreed {
                return Err(CliError::Failed(format!(
                    "{peer}'s audit log does not contain what this node witnessed"
                ))
                .into());
            }
            Ok(())
        }
    }
}

fn actor_text(e: &pb::AuditEntry) -> String {
    match e.actor_kind.as_str() {
        "user" => format!("{} ({})", e.actor_name, e.actor_role),
        "peer" => format!("peer {}", e.actor_office),
        "node" => "node".into(),
        _ => format!("unauthenticated {}", e.actor_remote),
    }
}

fn target_text(e: &pb::AuditEntry) -> String {
    let mut parts = Vec::new();
    match e.records.as_slice() {
        [] => {}
        [r] if r.version == 0 => parts.push(r.record_id.clone()),
        [r] => parts.push(format!("{} v{}", r.record_id, r.version)),
        many => parts.push(format!("{} records", many.len())),
    }
    if !e.collection.is_empty() {
        parts.push(format!("collection {}", e.collection));
    }
    if !e.peer.is_empty() {
        parts.push(format!("peer {}", e.peer));
    }
    if !e.detail.is_empty() {
        parts.push(e.detail.clone());
    }
    parts.join("; ")
}

fn print_entries(entries: &[pb::AuditEntry]) {
    let rows: Vec<_> = entries
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                output::time(e.at_ms),
                actor_text(e),
                e.action.clone(),
                target_text(e),
                if e.outcome_code.is_empty() {
                    "ok".into()
                } else {
                    format!("{}: {}", e.outcome_code, e.outcome_message)
                },
            ]
        })
        .collect();
    output::table(
        &["seq", "time", "actor", "action", "target", "outcome"],
        &rows,
    );
}

/// `casemesh export`: streams the bundle into `FILE.part`, then renames it.
/// `FILE.part` is created before the node is asked, so an output the CLI
/// cannot write stops the export before the node logs one.
pub async fn export(
    collection: String,
    out: PathBuf,
    allow_empty: bool,
    json: bool,
    client: ClientOpts,
) -> Result<()> {
    if out.symlink_metadata().is_ok() {
        return Err(
            CliError::Usage(format!("{} exists; choose another file", out.display())).into(),
        );
    }
    let mut part = out.clone().into_os_string();
    part.push(".part");
    let part = PathBuf::from(part);
    let file = match tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&part)
        .await
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(CliError::Usage(format!(
                "{} exists (an export that did not finish?); remove it first",
                part.display()
            ))
            .into());
        }
        Err(e) => {
            return Err(CliError::Usage(format!("cannot write {}: {e}", part.display())).into());
        }
    };
    let streaming = stream_export(&client, &collection, allow_empty, file);
    let written = match super::interruptible("no bundle was written", streaming).await {
        Ok(n) => n,
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e.context("export failed; nothing was written"));
        }
    };
    tokio::fs::rename(&part, &out)
        .await
        .with_context(|| format!("cannot rename {} to {}", part.display(), out.display()))?;
    if json {
        json::print(&serde_json::json!({
            "collection": collection,
            "file": out.display().to_string(),
            "bytes": written,
        }));
    } else {
        println!(
            "wrote case bundle of collection {collection} to {} ({})",
            out.display(),
            output::size(written)
        );
        println!(
            "check it with: casemesh verify-bundle {} --trust FINGERPRINT \
             (this office's, as `casemesh fingerprint` prints it, and each origin office's)",
            out.display()
        );
    }
    Ok(())
}

/// Asks the node for the bundle and writes it to `file`; the bytes written.
async fn stream_export(
    client: &ClientOpts,
    collection: &str,
    allow_empty: bool,
    mut file: tokio::fs::File,
) -> Result<u64> {
    let mut stream = client
        .admin()
        .await?
        .export(pb::ExportRequest {
            collection: collection.to_owned(),
            allow_empty,
        })
        .await?
        .into_inner();
    let mut written = 0u64;
    while let Some(chunk) = stream.message().await? {
        file.write_all(&chunk.data).await?;
        written += chunk.data.len() as u64;
    }
    file.sync_all().await?;
    Ok(written)
}

/// `casemesh verify-bundle`: offline; exits 0 only for a bundle that
/// checks out and whose exporting office is one given with `--trust`.
pub fn verify_bundle(file: PathBuf, trust: Vec<String>, json: bool) -> Result<()> {
    let trusted = trust
        .iter()
        .map(|t| {
            crate::identity::Fingerprint::parse(t)
                .map_err(|e| CliError::Usage(format!("--trust {t:?}: {e}")).into())
        })
        .collect::<Result<Vec<_>>>()?;
    let f =
        std::fs::File::open(&file).map_err(|e| super::errors::unreadable("bundle", &file, e))?;
    let report = crate::bundle::verify(std::io::BufReader::new(f), &trusted)
        .with_context(|| format!("{} is not a readable case bundle", file.display()))?;
    if json {
        json::print(&json::bundle_report(&report));
    } else {
        println!("{report}");
    }
    match report.verdict() {
        Verdict::Verified => Ok(()),
        Verdict::UnknownOffice => Err(CliError::Failed(format!(
            "the bundle is self-consistent but was not checked against a known office: \
             compare the fingerprint of {} with that office, then pass it with --trust",
            report.exported_by
        ))
        .into()),
        Verdict::Failed => {
            Err(CliError::Failed(format!("{} check(s) failed", report.failures.len())).into())
        }
    }
}
