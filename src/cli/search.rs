//! `casemesh search`: find what this office holds — its own records and
//! the replicas peers shared with it — by words and subjects.

use anyhow::Result;
use clap::Args;
use serde_json::{Value, json};

use super::ClientOpts;
use super::errors::CliError;
use super::{json, output};
use crate::protocol::pb;

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Words of the title and body; every word must match. "a phrase"
    /// (quoted for the shell too: '"canal street"') matches the words in
    /// order, a OR b matches either, and after `--`, -word excludes one
    /// (`casemesh search -- canal -street`).
    #[arg(value_name = "WORDS")]
    pub words: Vec<String>,
    /// A subject the record must name, KIND=VALUE, or KIND@ROLE=VALUE for
    /// that role only (repeatable): badge=4471 also finds #44-71 (values
    /// are matched normalized, docs/comparing-notes.md).
    #[arg(long = "subject", value_name = "KIND=VALUE", value_parser = super::records::parse_subject)]
    pub subjects: Vec<crate::domain::Subject>,
    /// Only records of this collection (case number).
    #[arg(long)]
    pub collection: Option<String>,
    /// Only records whose origin is this office.
    #[arg(long)]
    pub origin: Option<String>,
    /// Only records of this kind (e.g. incident-report).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only records with this label, key=value (repeatable).
    #[arg(long = "label", value_parser = super::records::parse_label)]
    pub labels: Vec<(String, String)>,
    /// Only records last updated at or after this time (RFC 3339, e.g.
    /// 2026-10-21T00:00:00Z).
    #[arg(long)]
    pub from: Option<String>,
    /// Only records last updated at or before this time (RFC 3339).
    #[arg(long)]
    pub to: Option<String>,
    /// Most records to show (at most 200).
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Skip this many of the best matches: the next page.
    #[arg(long, default_value_t = 0)]
    pub offset: u32,
    /// Rebuild this node's search index from its store instead of
    /// searching (admin only); takes no search arguments.
    #[arg(long, conflicts_with_all = ["words", "subjects", "collection", "origin", "kind", "labels", "from", "to", "offset"])]
    pub reindex: bool,
    /// Print JSON instead of text (shapes: docs/cli.md, "JSON output").
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientOpts,
}

pub async fn run(a: SearchArgs) -> Result<()> {
    if a.reindex {
        return reindex(&a.client, a.json).await;
    }
    let req = pb::SearchRequest {
        text: a.words.join(" "),
        subjects: a
            .subjects
            .iter()
            .map(crate::protocol::convert::subject_to_pb)
            .collect(),
        collection: a.collection.unwrap_or_default(),
        origin: a.origin.unwrap_or_default(),
        kind: a.kind.unwrap_or_default(),
        labels: a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        from_ms: super::audit::time_arg("--from", a.from.as_deref())?,
        to_ms: super::audit::time_arg("--to", a.to.as_deref())?,
        limit: a.limit,
        offset: a.offset,
    };
    if req.limit == 0 {
        return Err(CliError::Usage("--limit must be at least 1".into()).into());
    }
    let found = a.client.records().await?.search(req).await?.into_inner();
    if a.json {
        json::print(&json!({
            "total": found.total,
            "offset": a.offset,
            "hits": found.hits.iter().map(hit).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    print_found(&found, a.offset, a.limit);
    Ok(())
}

fn hit(h: &pb::SearchHit) -> Value {
    json!({
        "score": h.score,
        "record": h.record.as_ref().map(json::record),
    })
}

const HEADER: &[&str] = &[
    "origin",
    "id",
    "version",
    "collection",
    "kind",
    "title",
    "subjects",
    "updated",
];

fn print_found(found: &pb::SearchResponse, offset: u32, limit: u32) {
    let shown = found.hits.len() as u64;
    let first = u64::from(offset) + 1;
    match (found.total, shown) {
        (0, _) => {
            println!("nothing found");
            return;
        }
        (total, 0) => {
            println!("{total} found; none past --offset {offset}");
            return;
        }
        (total, _) => {
            let last = u64::from(offset) + shown;
            println!("{total} found; showing {first} to {last}, best first");
        }
    }
    let rows: Vec<Vec<String>> = found
        .hits
        .iter()
        .filter_map(|h| h.record.as_ref())
        .map(|r| {
            vec![
                r.origin.clone(),
                r.id.clone(),
                r.version.to_string(),
                r.collection.clone(),
                r.kind.clone(),
                r.title.clone(),
                output::subjects(r),
                output::time(r.updated_at_ms),
            ]
        })
        .collect();
    output::table(HEADER, &rows);
    // The next page starts past the whole of this one: a match the store
    // no longer held is counted in the ranking but not shown.
    let next = u64::from(offset) + u64::from(limit);
    if next < found.total {
        println!("more: --offset {next}");
    }
}

async fn reindex(client: &ClientOpts, as_json: bool) -> Result<()> {
    let done = client
        .admin()
        .await?
        .reindex_search(pb::ReindexSearchRequest {})
        .await?
        .into_inner();
    if as_json {
        json::print(&json!({ "records": done.records, "took_ms": done.took_ms }));
    } else {
        println!(
            "rebuilt the search index: {} records in {} ms",
            done.records, done.took_ms
        );
    }
    Ok(())
}
