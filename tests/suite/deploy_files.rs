//! The metric names the monitoring files in `deploy/` rely on: the PromQL
//! of `deploy/prometheus/alerts.yml` and of `deploy/grafana/casemesh.json`.
//! [`metric_names_used`] lists them, so that a test can check that a
//! running node exports every one: an alert on a metric nobody exports
//! never fires, and a dashboard panel over one stays empty, both silently.
//!
//! This is not a PromQL parser. It reads just enough to tell the metric
//! names in an expression from everything else that looks like a name, and
//! the unit tests below hold it to that on the constructs the files use.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::Path;

/// Every metric name the alerting rules and the dashboard query, as the
/// family a node exports: a histogram's `_bucket`, `_sum` and `_count`
/// series count as its base name. A counter keeps its `_total`, the name
/// its samples (and, from prometheus-client, its `# TYPE` line) carry.
/// Prometheus's own `up` is left out.
///
/// A labelled family appears in a scrape only once it has a series: the
/// RPC families after the first call; the per-peer counters and
/// `casemesh_fetched_bytes_total` once a peer is pinned (at 0); refused
/// handshakes from the start (at 0 per listener).
/// `tests/suite/ops_metrics.rs` checks these names against a node's scrape.
pub fn metric_names_used() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let alerts = std::fs::read_to_string(root.join("prometheus/alerts.yml"))
        .expect("read deploy/prometheus/alerts.yml");
    let dashboard = std::fs::read_to_string(root.join("grafana/casemesh.json"))
        .expect("read deploy/grafana/casemesh.json");
    let mut names = BTreeSet::new();
    for expr in alert_exprs(&alerts)
        .into_iter()
        .chain(dashboard_queries(&dashboard))
    {
        names.extend(metric_names(&expr));
    }
    names
}

/// The `expr:` of every rule in a Prometheus rule file, read line by line
/// rather than with a YAML parser (the crate has none, and the file's
/// shape is fixed): a value on the same line (unquoted or quoted), or a
/// block scalar (`>-`, `|`, ...) whose lines are those indented deeper
/// than the `expr:` key. Comment lines are skipped.
pub fn alert_exprs(yaml: &str) -> Vec<String> {
    let mut exprs = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let Some(value) = trimmed
            .strip_prefix("- expr:")
            .or_else(|| trimmed.strip_prefix("expr:"))
        else {
            continue;
        };
        let value = value.trim();
        if value.starts_with('>') || value.starts_with('|') {
            let indent = line.len() - trimmed.len();
            let mut block = Vec::new();
            while let Some(next) = lines.peek() {
                let t = next.trim_start();
                if !t.is_empty() && next.len() - t.len() <= indent {
                    break;
                }
                if !t.starts_with('#') {
                    block.push(t.to_owned());
                }
                lines.next();
            }
            exprs.push(block.join(" "));
        } else {
            // Quoted or not, the quotes are not PromQL; the tokenizer
            // skips a quoted string whole, so take them off.
            let unquoted = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            exprs.push(unquoted.replace("\\\"", "\""));
        }
    }
    exprs
}

/// Every query of a Grafana dashboard: each `expr` of a panel's targets
/// (found anywhere in the JSON, rows included), and each template
/// variable's `label_values(METRIC, LABEL)` query (its `definition`, and
/// its `query` as a string or as an object's `query`), of which only the
/// metric (with its matchers) is PromQL.
pub fn dashboard_queries(json: &str) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                        ("definition" | "query", serde_json::Value::String(s)) => {
                            if let Some(metric) = label_values_metric(s) {
                                out.push(metric.to_owned());
                            }
                        }
                        _ => walk(value, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(json).expect("the dashboard is valid JSON");
    let mut out = Vec::new();
    walk(&dashboard, &mut out);
    out
}

/// `label_values(METRIC, LABEL)` → `METRIC`; `label_values(LABEL)` (no
/// metric) and anything else → `None`.
fn label_values_metric(query: &str) -> Option<&str> {
    let args = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    // The label is after the last comma; a metric's matchers may hold
    // commas of their own.
    let (metric, _label) = args.rsplit_once(',')?;
    Some(metric.trim())
}

/// Words that are PromQL syntax, not names.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
];

/// Keywords followed by a parenthesized list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Metric names in one PromQL expression, as families (see
/// [`metric_names_used`]). A name is an identifier that is
///  - not inside a quoted string (label values, regexes), nor inside
///    `{...}` (label matchers), nor inside `[...]` (ranges, whose
///    durations may be Grafana variables like `$__rate_interval`);
///  - not a label name in a `by (...)`, `without (...)`, `on (...)`,
///    `ignoring (...)`, `group_left (...)` or `group_right (...)` list;
///  - not a function or aggregation: followed by `(`, or by `by` /
///    `without` (`sum by (code) (...)`);
///  - not a keyword, not a number or duration (starts with a digit), not a
///    Grafana variable (`$peer`, `${DS_PROMETHEUS}`);
///  - not `up`.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let is_ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    // What the previous word was: a keyword that takes a label list makes
    // the next `(...)` a list of label names.
    let mut label_list_next = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i = skip_quoted(&chars, i);
            }
            '{' => i = skip_to(&chars, i, '}'),
            '[' => i = skip_to(&chars, i, ']'),
            '(' if label_list_next => {
                i = skip_to(&chars, i, ')');
                label_list_next = false;
            }
            '$' => {
                // A Grafana variable: `$name` or `${name}` / `${name:fmt}`.
                i += 1;
                if chars.get(i) == Some(&'{') {
                    i = skip_to(&chars, i, '}');
                } else {
                    while i < chars.len() && is_ident(chars[i]) {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit() || (c == '.' && next_is_digit(&chars, i)) => {
                // A number or a duration (5m, 1e3, 0x1f, 30 * 86400).
                while i < chars.len() && (is_ident(chars[i]) || chars[i] == '.') {
                    i += 1;
                }
            }
            c if is_ident_start(c) => {
                let start = i;
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = next_word_or_char(&chars, i);
                label_list_next = LABEL_LISTS.contains(&word.as_str());
                let is_call = next.as_deref() == Some("(");
                let is_aggregation = matches!(next.as_deref(), Some("by" | "without"));
                if !(KEYWORDS.contains(&word.as_str()) || is_call || is_aggregation) {
                    let family = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| word.strip_suffix(s))
                        .unwrap_or(&word);
                    if family != "up" {
                        names.insert(family.to_owned());
                    }
                }
            }
            _ => i += 1,
        }
    }
    names
}

fn next_is_digit(chars: &[char], i: usize) -> bool {
    chars.get(i + 1).is_some_and(|c| c.is_ascii_digit())
}

/// The index just past the quoted string that starts at `i` (backslash
/// escapes inside double and single quotes; none inside backquotes).
fn skip_quoted(chars: &[char], i: usize) -> usize {
    let quote = chars[i];
    let mut j = i + 1;
    while j < chars.len() && chars[j] != quote {
        if chars[j] == '\\' && quote != '`' {
            j += 1;
        }
        j += 1;
    }
    j + 1
}

/// The index just past the `close` that ends the group opened at `i`,
/// stepping over quoted strings (a matcher's value may hold `}`).
fn skip_to(chars: &[char], i: usize, close: char) -> usize {
    let mut j = i + 1;
    while j < chars.len() && chars[j] != close {
        if matches!(chars[j], '"' | '\'' | '`') {
            j = skip_quoted(chars, j);
        } else {
            j += 1;
        }
    }
    j + 1
}

/// After skipping whitespace at `i`: `(` if that comes next, or the word
/// that comes next, or `None`.
fn next_word_or_char(chars: &[char], mut i: usize) -> Option<String> {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    let c = *chars.get(i)?;
    if c == '(' {
        return Some("(".to_owned());
    }
    let start = i;
    while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
        i += 1;
    }
    (i > start).then(|| chars[start..i].iter().collect())
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

#[test]
fn metric_names_are_told_from_functions_labels_strings_and_variables() {
    let cases: &[(&str, &[&str])] = &[
        ("up{job=~\"casemesh.*\"} == 0", &[]),
        (
            "sum by (code) (rate(casemesh_rpc_handled_total{instance=~\"$instance\", code!=\"OK\"}[$__rate_interval]))",
            &["casemesh_rpc_handled_total"],
        ),
        (
            "histogram_quantile(0.99, sum by (le, service, method) (rate(casemesh_rpc_duration_seconds_bucket{service=\"a}b\"}[5m])))",
            &["casemesh_rpc_duration_seconds"],
        ),
        (
            "sum(rate(casemesh_commit_flush_seconds_sum[5m])) without (instance) / sum(rate(casemesh_commit_flush_seconds_count[5m])) by (job)",
            &["casemesh_commit_flush_seconds"],
        ),
        (
            "casemesh_peer_lag_seconds > 1800 and on (job, instance, peer) casemesh_peer_up == 1",
            &["casemesh_peer_lag_seconds", "casemesh_peer_up"],
        ),
        (
            "deriv(casemesh_peer_outbox_pending[1h]) > 0 unless ignoring (peer) group_left (origin) casemesh_records offset 5m",
            &["casemesh_peer_outbox_pending", "casemesh_records"],
        ),
        (
            "casemesh_certificate_expiry_timestamp_seconds - time() < 30 * 86400",
            &["casemesh_certificate_expiry_timestamp_seconds"],
        ),
        (
            "(casemesh_certificate_expiry_timestamp_seconds{instance=~\"${instance:regex}\"} - time()) / 86400 > bool 1.5e1",
            &["casemesh_certificate_expiry_timestamp_seconds"],
        ),
        (
            "label_replace(casemesh_fetch_received_bytes, \"dst\", \"$1\", \"src\", \"(.*)\") / casemesh_fetch_size_bytes",
            &["casemesh_fetch_received_bytes", "casemesh_fetch_size_bytes"],
        ),
        (
            "count_values without (instance) (\"version\", casemesh_build_info)",
            &["casemesh_build_info"],
        ),
    ];
    for (expr, expected) in cases {
        assert_eq!(metric_names(expr), set(expected), "in {expr}");
    }
}

#[test]
fn rule_exprs_and_dashboard_queries_are_found_in_their_files() {
    let yaml = r#"
groups:
  - name: g
    rules:
      - alert: A
        expr: casemesh_writes_refused == 1
        for: 1m
      - alert: B
        # a comment
        expr: >-
          casemesh_peer_lag_seconds > 1800
          # not PromQL
          and on (job, instance, peer) casemesh_peer_up == 1
        labels:
          severity: warning
      - alert: C
        expr: "up{job=\"casemesh\"} == 0"
"#;
    assert_eq!(
        alert_exprs(yaml),
        [
            "casemesh_writes_refused == 1",
            "casemesh_peer_lag_seconds > 1800 and on (job, instance, peer) casemesh_peer_up == 1",
            "up{job=\"casemesh\"} == 0",
        ]
    );
    let json = r#"{
      "panels": [
        {"type": "row", "panels": [{"targets": [{"expr": "casemesh_blobs"}]}]},
        {"targets": [{"expr": "rate(casemesh_fetched_bytes_total[$__rate_interval])", "legendFormat": "{{origin}}"}]}
      ],
      "templating": {"list": [
        {"name": "peer", "definition": "label_values(casemesh_peer_up{job=~\"a,b\"}, peer)",
         "query": {"query": "label_values(casemesh_peer_up, peer)"}},
        {"name": "DS_PROMETHEUS", "type": "datasource", "query": "prometheus"}
      ]}
    }"#;
    let names: BTreeSet<String> = dashboard_queries(json)
        .iter()
        .flat_map(|q| metric_names(q))
        .collect();
    assert_eq!(
        names,
        set(&[
            "casemesh_blobs",
            "casemesh_fetched_bytes_total",
            "casemesh_peer_up"
        ])
    );
}

/// The real files: at least every metric an alert is about, and the
/// dashboard's, and nothing that is not a casemesh metric.
#[test]
fn the_deploy_files_use_the_metrics_their_alerts_are_about() {
    let names = metric_names_used();
    let expected = set(&[
        "casemesh_peer_up",
        "casemesh_peer_lag_seconds",
        "casemesh_peer_outbox_pending",
        "casemesh_peer_oldest_purge_pending_seconds",
        "casemesh_certificate_expiry_timestamp_seconds",
        "casemesh_audit_head_age_seconds",
        "casemesh_writes_refused",
        "casemesh_peer_versions_rejected_total",
        "casemesh_handshakes_refused_total",
        // The dashboard's, among them the histograms by family.
        "casemesh_rpc_handled_total",
        "casemesh_rpc_duration_seconds",
        "casemesh_commit_batch_size",
        "casemesh_commit_flush_seconds",
        "casemesh_records",
        "casemesh_blob_bytes",
        "casemesh_fetches_in_progress",
        "casemesh_fetches_given_up",
    ]);
    let missing: Vec<_> = expected.difference(&names).collect();
    assert!(missing.is_empty(), "not found: {missing:?} in {names:?}");
    let foreign: Vec<_> = names
        .iter()
        .filter(|n| !n.starts_with("casemesh_"))
        .collect();
    assert!(foreign.is_empty(), "not casemesh metrics: {foreign:?}");
}
