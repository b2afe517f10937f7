//! `casemesh peer …` and `casemesh share …`.

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Result;
use clap::Subcommand;
use serde_json::{Value, json};

use super::ClientOpts;
use super::errors::CliError;
use super::{json, output};
use crate::domain::MAX_TIME_MS;
use crate::domain::rejection::describe;
use crate::identity::Fingerprint;
use crate::protocol::pb;

#[derive(Debug, Subcommand)]
pub enum PeerCommand {
    /// Pin a peer office (prints the fingerprint it pinned).
    Add {
        /// The peer's office id, e.g. nyc-da.
        #[arg(long)]
        office: String,
        /// The peer's node, https://HOST:PORT (as its admin gave it to you).
        #[arg(long, value_name = "URL")]
        peer_endpoint: String,
        /// Its office CA certificate (the office-ca.pem it sent you).
        #[arg(long)]
        ca_cert: PathBuf,
        /// Refuse unless the certificate has this fingerprint (sha256:…).
        #[arg(long)]
        fingerprint: Option<String>,
        /// Print JSON instead of text (shapes: docs/cli.md, "JSON output").
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// List pinned peers with replication status.
    List {
        /// Print JSON instead of text (shapes: docs/cli.md, "JSON output").
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Unpin a peer: both directions stop at once.
    Remove {
        /// The peer's office id.
        office: String,
        /// Also delete every record held here from that office.
        #[arg(long)]
        purge_replicas: bool,
        /// Print JSON instead of text (shapes: docs/cli.md, "JSON output").
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
}

#[derive(Debug, Subcommand)]
pub enum ShareCommand {
    /// Grant a peer a collection or a record (prints the grant id alone).
    Grant {
        /// The peer office that receives it.
        #[arg(long)]
        peer: String,
        /// A collection (case number): every record of this office in it,
        /// including records added later.
        #[arg(long, conflicts_with = "record", required_unless_present = "record")]
        collection: Option<String>,
        /// One record, by id.
        #[arg(long)]
        record: Option<String>,
        /// Ends at this time (RFC 3339, e.g. 2026-12-31T23:59:59Z).
        #[arg(long, conflicts_with = "for_")]
        expires: Option<String>,
        /// Ends after this long (e.g. 30d, 12h, 90m; at most 100 years).
        #[arg(long = "for")]
        for_: Option<String>,
        /// Print JSON instead of text (shapes: docs/cli.md, "JSON output").
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Revoke a grant; the peer deletes what it no longer may hold.
    Revoke {
        /// The grant's id (g-…), as `share grant` or `share list` shows it.
        grant_id: String,
        /// Print JSON instead of text (shapes: docs/cli.md, "JSON output").
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// List grants and, for ended ones, whether the peer confirmed its purge.
    List {
        /// Only grants to this peer office.
        #[arg(long)]
        peer: Option<String>,
        /// Print JSON instead of text (shapes: docs/cli.md, "JSON output").
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
}

/// The longest grant `--for` accepts. A longer one is almost certainly a
/// typo; an office that means it can give `--expires`.
const MAX_GRANT_DAYS: u64 = 36_525;

/// `--expires` or `--for` as milliseconds since the epoch (0: none).
/// Refuses a duration over 100 years and an end after 9999-12-31.
pub fn expiry(expires: Option<&str>, for_: Option<&str>) -> Result<u64> {
    let last = crate::domain::format_time(MAX_TIME_MS);
    let ms = match (expires, for_) {
        (Some(e), _) => {
            let t = humantime::parse_rfc3339_weak(e).map_err(|_| {
                CliError::Usage(format!(
                    "--expires {e:?} is not an RFC 3339 time such as 2027-01-31T00:00:00Z (the latest is {last})"
                ))
            })?;
            t.duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .map_err(|_| CliError::Usage(format!("--expires {e:?} is before 1970")))?
        }
        (None, Some(d)) => {
            let too_long = || {
                CliError::Usage(format!(
                    "--for {d:?} is longer than 100 years ({MAX_GRANT_DAYS}d), the most a grant may last; give --expires for a fixed end"
                ))
            };
            let duration: Duration = humantime::parse_duration(d).map_err(|e| match e {
                humantime::DurationError::NumberOverflow => too_long(),
                _ => CliError::Usage(format!(
                    "--for {d:?} is not a duration such as 30d, 12h or 90m"
                )),
            })?;
            if duration > Duration::from_secs(MAX_GRANT_DAYS * 86_400) {
                return Err(too_long().into());
            }
            let now = Duration::from_millis(crate::domain::now_ms());
            (now + duration).as_millis() as u64
        }
        (None, None) => return Ok(0),
    };
    if ms > MAX_TIME_MS {
        return Err(CliError::Usage(format!(
            "a grant cannot end after {last}, the last time casemesh can record"
        ))
        .into());
    }
    Ok(ms)
}

pub fn grant_state(g: &pb::GrantInfo) -> String {
    if g.revoked_at_ms == 0 {
        if g.expires_at_ms != 0 {
            return format!("active until {}", output::time(g.expires_at_ms));
        }
        return "active".into();
    }
    match &g.purge_ack {
        None if g.end_reason == "peer removed" => {
            "peer removed; its node can no longer be reached for a purge".into()
        }
        Some(a) => format!(
            "{}; purged at {} (confirmed by {})",
            g.end_reason,
            output::time(a.purged_at_ms),
            a.purged_by
        ),
        None => format!("{}; purge pending", g.end_reason),
    }
}

fn grant_target(g: &pb::GrantInfo) -> String {
    match &g.target {
        Some(pb::grant_info::Target::Collection(c)) => format!("collection {c}"),
        Some(pb::grant_info::Target::RecordId(r)) => format!("record {r}"),
        None => "-".into(),
    }
}

pub fn print_grants(grants: &[pb::GrantInfo]) {
    let rows: Vec<_> = grants
        .iter()
        .map(|g| {
            vec![
                g.id.clone(),
                g.peer.clone(),
                grant_target(g),
                grant_state(g),
            ]
        })
        .collect();
    output::table(&["grant", "peer", "target", "state"], &rows);
}

pub fn print_peers(peers: &[pb::Peer]) {
    let rows: Vec<_> = peers
        .iter()
        .map(|p| {
            vec![
                p.office.clone(),
                p.endpoint.clone(),
                if p.connected {
                    "connected".into()
                } else {
                    "down".into()
                },
                output::time(p.last_contact_ms),
                p.checkpoint.to_string(),
                p.outbox_pending.to_string(),
                p.replicas.to_string(),
                p.last_error.clone(),
            ]
        })
        .collect();
    output::table(
        &[
            "peer",
            "endpoint",
            "link",
            "last contact",
            "checkpoint",
            "outbox",
            "replicas",
            "last error",
        ],
        &rows,
    );
    for line in rejection_lines(peers) {
        println!("{line}");
    }
}

/// Under the table, one line for each version a peer could not take from
/// this office's feed: `nyc-da rejected version 2 of <id>: <reason>
/// (<time>)`.
pub fn rejection_lines(peers: &[pb::Peer]) -> Vec<String> {
    let mut out = Vec::new();
    for p in peers {
        for r in &p.feed_rejections {
            let said = describe(r.older_build, r.seq, &r.record_id, r.version, &r.reason);
            out.push(format!("{}: {said} ({})", p.office, output::time(r.at_ms)));
        }
        if p.feed_rejections_dropped > 0 {
            out.push(format!(
                "{}: and {} earlier rejected versions not kept (casemesh audit list --action feed.rejected_by_peer --peer {})",
                p.office, p.feed_rejections_dropped, p.office
            ));
        }
    }
    if !out.is_empty() {
        out.insert(0, String::new());
    }
    out
}

pub async fn run_peer(cmd: PeerCommand) -> Result<()> {
    match cmd {
        PeerCommand::Add {
            office,
            peer_endpoint: endpoint,
            ca_cert,
            fingerprint,
            json,
            client,
        } => {
            let pem = std::fs::read_to_string(&ca_cert)
                .map_err(|e| super::errors::unreadable("--ca-cert", &ca_cert, e))?;
            if let Some(fp) = &fingerprint {
                Fingerprint::parse(fp)
                    .map_err(|e| CliError::Usage(format!("--fingerprint {fp:?}: {e}")))?;
            }
            let p = client
                .admin()
                .await?
                .add_peer(pb::AddPeerRequest {
                    office,
                    endpoint,
                    ca_certificate_pem: pem,
                    expected_fingerprint: fingerprint.unwrap_or_default(),
                })
                .await?
                .into_inner();
            if json {
                json::print(&json::peer(&p));
            } else {
                println!("pinned {} at {}: {}", p.office, p.endpoint, p.fingerprint);
            }
            Ok(())
        }
        PeerCommand::List { json, client } => {
            let peers = client
                .admin()
                .await?
                .list_peers(pb::ListPeersRequest {})
                .await?
                .into_inner()
                .peers;
            if json {
                json::print(&Value::Array(peers.iter().map(json::peer).collect()));
            } else {
                print_peers(&peers);
            }
            Ok(())
        }
        PeerCommand::Remove {
            office,
            purge_replicas,
            json,
            client,
        } => {
            let r = client
                .admin()
                .await?
                .remove_peer(pb::RemovePeerRequest {
                    office: office.clone(),
                    purge_replicas,
                })
                .await?
                .into_inner();
            if json {
                json::print(&json!({
                    "office": office,
                    "grants_closed": r.grants_closed,
                    "replicas_purged": r.replicas_purged,
                }));
            } else {
                println!(
                    "removed peer {office}: {} grants closed, {} replicas purged",
                    r.grants_closed, r.replicas_purged
                );
            }
            Ok(())
        }
    }
}

pub async fn run_share(cmd: ShareCommand) -> Result<()> {
    match cmd {
        ShareCommand::Grant {
            peer,
            collection,
            record,
            expires,
            for_,
            json,
            client,
        } => {
            let target = match (collection, record) {
                (Some(c), None) => pb::grant_request::Target::Collection(c),
                (None, Some(r)) => pb::grant_request::Target::RecordId(r),
                _ => {
                    return Err(CliError::Usage(
                        "give exactly one of --collection and --record".into(),
                    )
                    .into());
                }
            };
            let expires_at_ms = expiry(expires.as_deref(), for_.as_deref())?;
            let g = client
                .admin()
                .await?
                .grant(pb::GrantRequest {
                    peer,
                    target: Some(target),
                    expires_at_ms,
                })
                .await?
                .into_inner();
            if json {
                json::print(&json!({
                    "grant": json::grant(&g),
                    "warnings": g.warnings,
                }));
            } else {
                println!("{}", g.id);
            }
            for w in &g.warnings {
                eprintln!("warning: {w}");
            }
            Ok(())
        }
        ShareCommand::Revoke {
            grant_id,
            json,
            client,
        } => {
            let g = client
                .admin()
                .await?
                .revoke(pb::RevokeRequest { grant_id })
                .await?
                .into_inner();
            if json {
                json::print(&json::grant(&g));
            } else {
                println!("revoked {}: {}", g.id, grant_state(&g));
            }
            Ok(())
        }
        ShareCommand::List { peer, json, client } => {
            let grants = client
                .admin()
                .await?
                .list_grants(pb::ListGrantsRequest {
                    peer: peer.unwrap_or_default(),
                })
                .await?
                .into_inner()
                .grants;
            if json {
                json::print(&Value::Array(grants.iter().map(json::grant).collect()));
            } else {
                print_grants(&grants);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(expires: Option<&str>, for_: Option<&str>) -> String {
        let e = expiry(expires, for_).unwrap_err();
        let (text, code) = crate::cli::errors::report(&e);
        assert_eq!(code, crate::cli::errors::Exit::Usage, "{text}");
        text
    }

    #[test]
    fn grant_lengths_past_100_years_or_year_9999_are_refused_with_the_limit() {
        for d in [
            "99999999999d",
            "3000000d",
            "36526d",
            "999999999999999999999999y",
        ] {
            let text = refused(None, Some(d));
            assert!(text.contains("100 years (36525d)"), "{d}: {text}");
        }
        let text = refused(Some("10000-01-01T00:00:00Z"), None);
        assert!(text.contains("9999-12-31T23:59:59.999Z"), "{text}");
        assert!(refused(None, Some("soon")).contains("30d"));
        let month = expiry(None, Some("30d")).unwrap();
        let now = crate::domain::now_ms();
        assert!(month > now + 29 * 86_400_000 && month < now + 31 * 86_400_000);
        assert_eq!(
            expiry(Some("9999-12-31T23:59:59.999Z"), None).unwrap(),
            MAX_TIME_MS
        );
        assert!(expiry(None, Some("36525d")).is_ok());
        assert_eq!(expiry(None, None).unwrap(), 0);
    }

    /// Everything `share list` prints comes from the node, and a purge
    /// acknowledgement's time from a peer: no value may stop it printing.
    #[test]
    fn grants_with_any_times_print() {
        let g = pb::GrantInfo {
            id: "g-1".into(),
            peer: "nyc-da".into(),
            created_at_ms: u64::MAX,
            expires_at_ms: u64::MAX,
            revoked_at_ms: u64::MAX,
            end_reason: "revoked".into(),
            purge_ack: Some(pb::PurgeAck {
                purged_at_ms: u64::MAX,
                purged_by: "nyc-da".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(grant_state(&g).contains("out-of-range time"));
        let _ = crate::cli::json::grant(&g).to_string();
        print_grants(std::slice::from_ref(&g));
    }
}
