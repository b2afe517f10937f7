//! Output: aligned tables for people, JSON for scripts.

use serde_json::{Value, json};

use crate::grpc::pb;

/// Milliseconds since the epoch as RFC 3339 (UTC, milliseconds).
pub fn time(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Prints rows under a header, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        line(row.clone());
    }
}

pub fn record_json(r: &pb::Record) -> Value {
    let mut v = json!({
        "id": r.id,
        "version": r.version,
        "origin": r.origin,
        "collection": r.collection,
        "kind": r.kind,
        "title": r.title,
        "content_type": r.content_type,
        "labels": r.labels,
        "body_size": r.body_size,
        "created_at": time(r.created_at_ms),
        "updated_at": time(r.updated_at_ms),
        "deleted": r.deleted,
        "digest": hex::encode(&r.digest),
        "signature": hex::encode(&r.signature),
    });
    if r.body_size > 0 && r.body.len() as u64 == r.body_size {
        match std::str::from_utf8(&r.body) {
            Ok(text) => v["body"] = json!(text),
            Err(_) => v["body_hex"] = json!(hex::encode(&r.body)),
        }
    } else if r.body_size == 0 {
        v["body"] = json!("");
    }
    v
}

pub fn record_row(r: &pb::Record) -> Vec<String> {
    vec![
        r.id.clone(),
        r.version.to_string(),
        r.collection.clone(),
        r.kind.clone(),
        r.title.clone(),
        time(r.updated_at_ms),
    ]
}

pub const RECORD_HEADER: &[&str] = &["id", "version", "collection", "kind", "title", "updated"];

pub fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}
