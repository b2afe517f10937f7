//! `--json` output against its documentation: every shape `docs/cli.md`
//! lists under "JSON output" is printed by the binary with exactly those
//! keys, and every time in it is RFC 3339 or `null`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use super::bin::{init_named, json, ok, serve};
use super::cluster::eventually;

/// The shapes `docs/cli.md` documents: name → top-level keys, in the
/// order written.
pub fn documented_shapes() -> BTreeMap<String, Vec<String>> {
    let readme = include_str!("../../docs/cli.md");
    let start = readme
        .find("## JSON output")
        .expect("docs/cli.md has a JSON output section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut shapes = BTreeMap::new();
    for line in section.lines() {
        let Some(rest) = line.strip_prefix("- **") else {
            continue;
        };
        let (name, rest) = rest.split_once("**").expect("a bold shape name");
        // Skip "(where it appears)" before the colon.
        let rest = match rest.strip_prefix(" (") {
            Some(r) => r.split_once("):").expect("a colon after the list").1,
            None => rest.strip_prefix(':').expect("a colon after the name"),
        };
        // The keys end where a sentence starts; parentheses describe values.
        let keys_part = rest.split(". ").next().unwrap_or(rest);
        let mut keys = Vec::new();
        let mut depth = 0;
        let mut tokens = keys_part.split('`');
        let mut outside = tokens.next().unwrap_or("");
        loop {
            depth += outside.matches('(').count();
            depth -= outside.matches(')').count().min(depth);
            let Some(token) = tokens.next() else { break };
            if depth == 0 {
                keys.push(token.to_owned());
            }
            outside = tokens.next().unwrap_or("");
        }
        shapes.insert(name.to_owned(), keys);
    }
    shapes
}

pub fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

/// Every `*_at` (and `at`) value, however deep, is RFC 3339 or null.
fn check_times(v: &Value, path: &str) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "at" || k.ends_with("_at") {
                    match v {
                        Value::Null => {}
                        Value::String(t) => assert!(
                            humantime::parse_rfc3339(t).is_ok(),
                            "{path}.{k} = {t:?} is not RFC 3339"
                        ),
                        other => panic!("{path}.{k} = {other} is not a time"),
                    }
                }
                check_times(v, &format!("{path}.{k}"));
            }
        }
        Value::Array(items) => items.iter().for_each(|i| check_times(i, path)),
        _ => {}
    }
}

#[tokio::test]
async fn every_documented_json_shape_is_what_the_binary_prints() {
    let tmp = tempfile::tempdir().unwrap();
    let (phila, _) = init_named(&tmp, "phila-da", "phila");
    let (nyc, _) = init_named(&tmp, "nyc-da", "nyc");
    let p = phila.to_str().unwrap();
    let n = nyc.to_str().unwrap();
    let mut samples: Vec<(&str, Value)> = Vec::new();

    // Offline commands.
    let other = tmp.path().join("other");
    samples.push((
        "init",
        json(&[
            "init",
            "--office",
            "mpls-da",
            "--data",
            other.to_str().unwrap(),
            "--json",
        ]),
    ));
    samples.push(("fingerprint", json(&["fingerprint", "--data", p, "--json"])));
    let checked = json(&["check-config", "--data", p, "--json"]);
    samples.push(("check-config", checked));
    let counted = json(&["check-store", "--data", p, "--json"]);
    assert_eq!(counted["ok"], true, "{counted}");
    samples.push(("check-store", counted));

    let servers = (serve(&phila).await, serve(&nyc).await);
    let peer = json(&[
        "peer",
        "add",
        "--office",
        "nyc-da",
        "--peer-endpoint",
        &servers.1.endpoint,
        "--ca-cert",
        nyc.join("office-ca.pem").to_str().unwrap(),
        "--data",
        p,
        "--json",
    ]);
    samples.push(("peer", peer));

    // A record with a file, written, read, listed and granted.
    let clip = tmp.path().join("clip.mp4");
    std::fs::write(&clip, b"bodycam bytes").unwrap();
    let written = json(&[
        "record",
        "put",
        "--collection",
        "2026-0042",
        "--kind",
        "evidence",
        "--title",
        "Bodycam",
        "--body",
        "seen at 10:40",
        "--attach",
        clip.to_str().unwrap(),
        "--data",
        p,
        "--json",
    ]);
    let id = written["id"].as_str().unwrap().to_owned();
    samples.push(("record put", written));
    let record = json(&["record", "get", &id, "--data", p, "--json"]);
    samples.push(("attachment", record["attachments"][0].clone()));
    samples.push(("record", record));
    for listing in [
        json(&["record", "list", "--data", p, "--json"]),
        json(&["record", "history", &id, "--data", p, "--json"]),
    ] {
        samples.push(("record", listing[0].clone()));
    }
    let found = json(&["search", "--data", p, "--json"]);
    samples.push(("search hit", found["hits"][0].clone()));
    samples.push(("record", found["hits"][0]["record"].clone()));
    samples.push(("search", found));
    samples.push((
        "search --reindex",
        json(&["search", "--reindex", "--data", p, "--json"]),
    ));
    let hash = samples
        .iter()
        .find(|(n, _)| *n == "attachment")
        .map(|(_, a)| a["hash"].as_str().unwrap().to_owned())
        .unwrap();
    let download = tmp.path().join("download.mp4");
    samples.push((
        "blob get",
        json(&[
            "blob",
            "get",
            &hash,
            "--out",
            download.to_str().unwrap(),
            "--data",
            p,
            "--json",
        ]),
    ));

    let granted = json(&[
        "share",
        "grant",
        "--peer",
        "nyc-da",
        "--collection",
        "2026-0042",
        "--data",
        p,
        "--json",
    ]);
    let grant_id = granted["grant"]["id"].as_str().unwrap().to_owned();
    samples.push(("grant", granted["grant"].clone()));
    samples.push(("share grant", granted));
    samples.push((
        "grant",
        json(&["share", "list", "--data", p, "--json"])[0].clone(),
    ));
    samples.push((
        "grant",
        json(&["share", "revoke", &grant_id, "--data", p, "--json"]),
    ));

    // Users.
    let out = tmp.path().join("clerk");
    samples.push((
        "user issue",
        json(&[
            "user",
            "issue",
            "--name",
            "clerk",
            "--role",
            "staff",
            "--out",
            out.to_str().unwrap(),
            "--data",
            p,
            "--json",
        ]),
    ));
    samples.push((
        "user",
        json(&["user", "revoke", "--name", "clerk", "--data", p, "--json"]),
    ));
    samples.push((
        "user",
        json(&["user", "list", "--data", p, "--json"])[0].clone(),
    ));

    // The audit log, and a peer's, witnessed: nyc-da pins phila-da and
    // holds its signed heads once it has pulled.
    ok(&[
        "peer",
        "add",
        "--office",
        "phila-da",
        "--peer-endpoint",
        &servers.0.endpoint,
        "--ca-cert",
        phila.join("office-ca.pem").to_str().unwrap(),
        "--data",
        n,
    ]);
    let witnessed = eventually(
        Duration::from_secs(30),
        "nyc-da to witness a signed head of phila-da",
        || {
            let w = json(&[
                "audit", "witness", "--peer", "phila-da", "--data", n, "--json",
            ]);
            std::future::ready((!w["current"].is_null()).then_some(w))
        },
    )
    .await;
    samples.push(("signed head", witnessed["current"].clone()));
    samples.push(("audit witness", witnessed));
    samples.push((
        "audit entry",
        json(&["audit", "list", "--data", p, "--limit", "1", "--json"])[0].clone(),
    ));
    samples.push((
        "audit verify",
        json(&["audit", "verify", "--data", p, "--json"]),
    ));

    samples.push((
        "blob scrub",
        json(&["blob", "scrub", "--data", p, "--json"]),
    ));
    let status = json(&["status", "--data", p, "--json"]);
    samples.push(("peer", status["peers"][0].clone()));
    samples.push(("status", status));
    samples.push((
        "transfer",
        casemesh::cli::json::transfer(&Default::default()),
    ));
    samples.push((
        "peer remove",
        json(&["peer", "remove", "phila-da", "--data", n, "--json"]),
    ));
    let bundle = tmp.path().join("case.tar");
    samples.push((
        "export",
        json(&[
            "export",
            "--collection",
            "2026-0042",
            "--out",
            bundle.to_str().unwrap(),
            "--data",
            p,
            "--json",
        ]),
    ));
    let fingerprint = |data: &str| json(&["fingerprint", "--data", data, "--json"]);
    let (phila_fp, nyc_fp) = (fingerprint(p), fingerprint(n));
    let verified = json(&[
        "verify-bundle",
        bundle.to_str().unwrap(),
        "--trust",
        phila_fp["fingerprint"].as_str().unwrap(),
        "--trust",
        nyc_fp["fingerprint"].as_str().unwrap(),
        "--json",
    ]);
    assert_eq!(verified["verdict"], "verified", "{verified}");
    samples.push(("verify-bundle", verified));
    samples.push((
        "record delete",
        json(&["record", "delete", &id, "--data", p, "--json"]),
    ));

    let documented = documented_shapes();
    let mut seen = BTreeSet::new();
    for (name, sample) in &samples {
        let expected = documented
            .get(*name)
            .unwrap_or_else(|| panic!("docs/cli.md documents no shape {name:?}"));
        let expected: BTreeSet<String> = expected.iter().cloned().collect();
        assert_eq!(keys(sample), expected, "shape {name}: {sample}");
        check_times(sample, name);
        seen.insert(name.to_string());
    }
    // Checked where an S3 server runs (`s3nodes`).
    seen.insert("blob move".into());
    let undocumented: Vec<_> = documented
        .keys()
        .filter(|name| !seen.contains(*name))
        .collect();
    assert!(
        undocumented.is_empty(),
        "documented but never checked: {undocumented:?}"
    );
}
