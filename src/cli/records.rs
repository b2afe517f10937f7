//! `casemesh record …`

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde_json::Value;

use super::ClientOpts;
use super::blobs::LocalFile;
use super::errors::CliError;
use super::json;
use super::output::{self, RECORD_HEADER};
use crate::domain::limits::MAX_BODY_BYTES_CAP;
use crate::protocol::pb;

#[derive(Debug, Subcommand)]
pub enum RecordCommand {
    /// Write a record (prints the new id alone), or a new version of one (--id).
    Put(PutArgs),
    /// Show a record (latest version, or --version N).
    Get {
        /// The record's id (OFFICE:32 hex digits), as `record put` printed it.
        id: String,
        /// Show this version instead of the latest.
        #[arg(long)]
        version: Option<u64>,
        /// Print JSON instead of text (shapes: docs/cli.md, "JSON output").
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// List records, following page tokens.
    List {
        /// Only records of this collection (case number).
        #[arg(long)]
        collection: Option<String>,
        /// Only records whose origin is this office.
        #[arg(long)]
        origin: Option<String>,
        /// Stop after this many records.
        #[arg(long)]
        limit: Option<usize>,
        /// Print JSON instead of text (shapes: docs/cli.md, "JSON output").
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Show every version of a record, oldest first.
    History {
        /// The record's id.
        id: String,
        /// Print JSON instead of text (shapes: docs/cli.md, "JSON output").
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Delete a record (writes a signed tombstone; the history stays).
    Delete {
        /// The record's id.
        id: String,
        /// Fail unless the record's latest version is this one.
        #[arg(long)]
        expected_version: Option<u64>,
        /// Print JSON instead of text (shapes: docs/cli.md, "JSON output").
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
}

#[derive(Debug, Args)]
pub struct PutArgs {
    /// Write a new version of this record instead of creating one.
    #[arg(long)]
    pub id: Option<String>,
    /// Fail unless the record's latest version is this one.
    #[arg(long)]
    pub expected_version: Option<u64>,
    /// The collection (case number) the record belongs to, e.g. 2026-0042.
    #[arg(long)]
    pub collection: String,
    /// What the record is, e.g. incident-report, witness-statement, evidence.
    #[arg(long)]
    pub kind: String,
    /// A one-line title.
    #[arg(long)]
    pub title: String,
    /// Body text.
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Read the body from this file.
    #[arg(long)]
    pub body_file: Option<PathBuf>,
    /// MIME type of the body.
    #[arg(long)]
    pub content_type: Option<String>,
    /// A label, key=value (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// A subject the record is about, KIND=VALUE or KIND@ROLE=VALUE
    /// (repeatable): badge=4471, plate=7XKD203, agent-name=John Smith,
    /// incident-date=2026-10-21, unit@officer-involved=ERO-7. Kinds and
    /// roles are lower-case letters, digits and '-'; values are kept as
    /// written and matched normalized (docs/formats.md, "Subjects").
    #[arg(long = "subject", value_name = "KIND=VALUE", value_parser = parse_subject)]
    pub subjects: Vec<crate::domain::Subject>,
    /// Attach this file (repeatable). Each version lists its own files: a
    /// new version keeps only the files given to it.
    #[arg(long = "attach", value_name = "FILE")]
    pub attach: Vec<PathBuf>,
    /// Print JSON instead of the id alone (shapes: docs/cli.md, "JSON output").
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

pub(super) fn parse_subject(s: &str) -> Result<crate::domain::Subject, String> {
    crate::domain::Subject::parse(s).map_err(|e| e.to_string())
}

pub(super) fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("label {s:?} is not key=value")),
    }
}

pub async fn run(cmd: RecordCommand) -> Result<()> {
    match cmd {
        RecordCommand::Put(a) => put(a).await,
        RecordCommand::Get {
            id,
            version,
            json,
            client,
        } => {
            let r = client
                .records()
                .await?
                .get(pb::GetRequest { id, version })
                .await?
                .into_inner();
            if json {
                json::print(&json::record(&r));
            } else {
                print_record(&r);
            }
            Ok(())
        }
        RecordCommand::List {
            collection,
            origin,
            limit,
            json,
            client,
        } => {
            let records = list(&client, collection, origin, limit).await?;
            if json {
                json::print(&Value::Array(records.iter().map(json::record).collect()));
            } else {
                let rows: Vec<_> = records.iter().map(output::record_row).collect();
                output::table(RECORD_HEADER, &rows);
            }
            Ok(())
        }
        RecordCommand::History { id, json, client } => {
            let versions = client
                .records()
                .await?
                .history(pb::HistoryRequest { id })
                .await?
                .into_inner()
                .versions;
            if json {
                json::print(&Value::Array(versions.iter().map(json::record).collect()));
            } else {
                let rows: Vec<_> = versions
                    .iter()
                    .map(|v| {
                        vec![
                            v.version.to_string(),
                            output::time(v.updated_at_ms),
                            if v.deleted {
                                "deleted".into()
                            } else {
                                v.title.clone()
                            },
                            v.body_size.to_string(),
                            hex::encode(&v.digest),
                        ]
                    })
                    .collect();
                output::table(&["version", "written", "title", "bytes", "digest"], &rows);
            }
            Ok(())
        }
        RecordCommand::Delete {
            id,
            expected_version,
            json,
            client,
        } => {
            let r = client
                .records()
                .await?
                .delete(pb::DeleteRequest {
                    id: id.clone(),
                    expected_version,
                })
                .await?
                .into_inner();
            if json {
                json::print(
                    &serde_json::json!({ "id": id, "version": r.version, "deleted": true }),
                );
            } else {
                println!("deleted {id} (tombstone version {})", r.version);
            }
            Ok(())
        }
    }
}

/// The largest body the node will take: its `limits.max_body_bytes` when
/// the CLI reads its data directory, else the most any node accepts.
fn body_limit(client: &ClientOpts) -> Result<(usize, &'static str)> {
    match &client.data {
        Some(data) => {
            let config = crate::config::Config::load(&crate::config::Paths::new(data).config())?;
            Ok((config.limits.max_body_bytes, "on this node"))
        }
        None => Ok((MAX_BODY_BYTES_CAP, "on any node")),
    }
}

/// Refuses a body over the limit before anything is sent.
fn check_body_size(what: &str, size: u64, client: &ClientOpts) -> Result<()> {
    let (limit, where_) = body_limit(client)?;
    if size > limit as u64 {
        return Err(CliError::Usage(format!(
            "{what} is {} ({size} bytes); a record body may be at most {} ({limit} bytes) {where_}: attach large files with --attach instead",
            output::size(size),
            output::size(limit as u64)
        ))
        .into());
    }
    Ok(())
}

/// What an interrupted `record put` did, before and after the record was
/// sent.
const UPLOAD_INTERRUPTED: &str = "nothing stored (files already uploaded are removed by the node after blobs.unreferenced_grace, as no record lists them)";
const PUT_INTERRUPTED: &str = "the record may have been written: the node finishes a write it has started; check with `casemesh record list`";

pub async fn put(a: PutArgs) -> Result<()> {
    let body = match (a.body, a.body_file) {
        (Some(text), _) => {
            check_body_size("--body", text.len() as u64, &a.client)?;
            text.into_bytes()
        }
        (None, Some(path)) => {
            use std::io::Read;
            let unreadable = |e| super::errors::unreadable("--body-file", &path, e);
            let what = format!("--body-file {}", path.display());
            let file = std::fs::File::open(&path).map_err(unreadable)?;
            let size = file.metadata().map_err(unreadable)?.len();
            check_body_size(&what, size, &a.client)?;
            // A pipe or a device says 0 and may never end: read one byte
            // past the limit at most, and refuse what goes beyond.
            let (limit, where_) = body_limit(&a.client)?;
            let mut body = Vec::new();
            file.take(limit as u64 + 1)
                .read_to_end(&mut body)
                .map_err(unreadable)?;
            if body.len() > limit {
                return Err(CliError::Usage(format!(
                    "{what} holds more than {limit} bytes, the most a record body may hold {where_}: attach large files with --attach instead"
                ))
                .into());
            }
            body
        }
        (None, None) => Vec::new(),
    };
    let content_type = a.content_type.unwrap_or_else(|| {
        if std::str::from_utf8(&body).is_ok() {
            "text/plain; charset=utf-8".into()
        } else {
            String::new()
        }
    });
    let mut seen = std::collections::BTreeSet::new();
    for path in &a.attach {
        let canonical = std::fs::canonicalize(path)
            .map_err(|e| super::errors::unreadable("--attach", path, e))?;
        if !seen.insert(canonical) {
            return Err(CliError::Usage(format!(
                "{} is given to --attach twice; a version lists each file once",
                path.display()
            ))
            .into());
        }
    }
    let mut files = Vec::with_capacity(a.attach.len());
    for path in &a.attach {
        files.push(LocalFile::open(path).await?);
    }
    let mut records = a.client.records().await?;
    let uploaded = super::interruptible(UPLOAD_INTERRUPTED, async {
        let mut attachments = Vec::with_capacity(files.len());
        for file in files {
            attachments.push(file.upload(&mut records).await?);
        }
        Ok(attachments)
    })
    .await?;
    let request = pb::PutRequest {
        id: a.id.unwrap_or_default(),
        expected_version: a.expected_version,
        collection: a.collection,
        kind: a.kind,
        title: a.title,
        body: body.into(),
        content_type,
        labels: a.labels.into_iter().collect(),
        attachments: uploaded,
        subjects: a
            .subjects
            .iter()
            .map(crate::protocol::convert::subject_to_pb)
            .collect(),
    };
    let resp = super::interruptible(PUT_INTERRUPTED, async {
        Ok(records.put(request).await?.into_inner())
    })
    .await?;
    if a.json {
        json::print(&json::written(&resp));
    } else {
        println!("{}", resp.id);
    }
    Ok(())
}

/// Every record matching the filters, page by page, up to `limit`.
pub async fn list(
    client: &ClientOpts,
    collection: Option<String>,
    origin: Option<String>,
    limit: Option<usize>,
) -> Result<Vec<pb::Record>> {
    let mut c = client.records().await?;
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let want = limit
            .map(|l| l.saturating_sub(out.len()))
            .unwrap_or(usize::MAX);
        if want == 0 {
            break;
        }
        let page = c
            .list(pb::ListRequest {
                collection: collection.clone().unwrap_or_default(),
                origin: origin.clone().unwrap_or_default(),
                page_size: want.min(1000) as u32,
                page_token: token,
            })
            .await?
            .into_inner();
        out.extend(page.records);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    if let Some(l) = limit {
        out.truncate(l);
    }
    if out.len() > 1_000_000 {
        bail!("more than a million records: use --limit");
    }
    Ok(out)
}

fn print_record(r: &pb::Record) {
    println!("id:           {}", r.id);
    println!(
        "version:      {}{}",
        r.version,
        if r.deleted { " (deleted)" } else { "" }
    );
    println!("origin:       {}", r.origin);
    println!("collection:   {}", r.collection);
    println!("kind:         {}", r.kind);
    println!("title:        {}", r.title);
    println!("content type: {}", r.content_type);
    for (k, v) in &r.labels {
        println!("label:        {k}={v}");
    }
    for s in &r.subjects {
        match s.role.as_str() {
            "" => println!("subject:      {}={}", s.kind, s.value),
            role => println!("subject:      {}={} ({role})", s.kind, s.value),
        }
    }
    println!("created:      {}", output::time(r.created_at_ms));
    println!("updated:      {}", output::time(r.updated_at_ms));
    println!("digest:       {}", hex::encode(&r.digest));
    println!("size:         {} bytes", r.body_size);
    for a in &r.attachments {
        println!("attachment:   {}", a.file_name);
        println!("  size:       {} bytes", a.size);
        println!("  media type: {}", a.media_type);
        println!("  hash:       {}", hex::encode(&a.hash));
        println!("  state:      {}", output::attachment_state(a));
    }
    if !r.body.is_empty() {
        println!();
        match std::str::from_utf8(&r.body) {
            Ok(text) => println!("{text}"),
            Err(_) => println!("(binary body; use --json to see it as hex)"),
        }
    }
}
