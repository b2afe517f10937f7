//! The operator's workflow through the `casemesh` binary: an auditor's
//! certificate reads the audit log and the node's state and nothing else;
//! a node served with `[metrics]` and `[status_page]` in its
//! `casemesh.toml` says where they are, `/metrics` answers, and
//! `casemesh healthcheck` reads its health.

use std::path::Path;

use super::bin::{casemesh, fails, init_office, ok, serve};
use super::webkit::{http_get, parse_metrics, value};

/// Sets `key = value` in `[table]` of the office's casemesh.toml, as an
/// admin edits it (the table is there: `init` writes every one).
fn set(data: &Path, table: &str, line: &str) {
    let path = data.join("casemesh.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let header = format!("[{table}]\n");
    assert!(text.contains(&header), "init writes [{table}]:\n{text}");
    std::fs::write(
        &path,
        text.replacen(&header, &format!("{header}{line}\n"), 1),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_auditor_reads_the_audit_log_and_the_nodes_state_but_no_record() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _) = init_office(&tmp);
    let d = data.to_str().unwrap();
    let server = serve(&data).await;
    let put = ok(&[
        "record",
        "put",
        "--collection",
        "2026-0042",
        "--kind",
        "note",
        "--title",
        "seen",
        "--data",
        d,
    ]);
    let id = put.trim().to_owned();
    let help = ok(&["user", "issue", "--help"]);
    assert!(help.contains("auditor"), "{help}");
    let out = tmp.path().join("auditor");
    let issued = ok(&[
        "user",
        "issue",
        "--name",
        "reviewer",
        "--role",
        "auditor",
        "--out",
        out.to_str().unwrap(),
        "--data",
        d,
    ]);
    assert!(
        issued.contains("issued auditor certificate for reviewer"),
        "{issued}"
    );
    let users = ok(&["user", "list", "--data", d]);
    assert!(
        users
            .lines()
            .any(|l| l.contains("reviewer") && l.contains("auditor")),
        "{users}"
    );
    let endpoint = server.endpoint.clone();
    let as_auditor = |args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        for (flag, file) in [
            ("--cert", "reviewer-cert.pem"),
            ("--key", "reviewer-key.pem"),
            ("--ca", "ca.pem"),
        ] {
            all.push(flag.into());
            all.push(out.join(file).to_str().unwrap().into());
        }
        all.push("--endpoint".into());
        all.push(endpoint.clone());
        casemesh(&all.iter().map(String::as_str).collect::<Vec<_>>())
    };
    for read in [
        &["status"][..],
        &["peer", "list"],
        &["share", "list"],
        &["user", "list"],
        &["audit", "verify"],
        &["audit", "list", "--record", &id],
    ] {
        let o = as_auditor(read);
        assert!(
            o.status.success(),
            "the auditor may run {read:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let query = String::from_utf8(as_auditor(&["audit", "list", "--record", &id]).stdout).unwrap();
    assert!(query.contains("Records.Put"), "{query}");
    let bundle = tmp.path().join("case.tar").to_str().unwrap().to_owned();
    for denied in [
        &["record", "get", &id][..],
        &["record", "list"],
        &[
            "share",
            "grant",
            "--peer",
            "nyc-da",
            "--collection",
            "2026-0042",
        ],
        &["user", "revoke", "--name", "admin"],
        &["export", "--collection", "2026-0042", "--out", &bundle],
    ] {
        let o = as_auditor(denied);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{denied:?}: {err}");
        assert!(
            err.contains("auditor:reviewer may not call") && err.contains("(PERMISSION_DENIED)"),
            "{denied:?}: {err}"
        );
    }
    assert!(!Path::new(&bundle).exists(), "no bundle was written");
    // Nothing the auditor tried changed anything.
    let users = ok(&["user", "list", "--data", d]);
    assert!(
        !users
            .lines()
            .any(|l| l.contains("admin") && l.contains("revoked")),
        "{users}"
    );
    let bad = fails(
        2,
        &[
            "user", "issue", "--name", "x", "--role", "reader", "--out", "/tmp", "--data", d,
        ],
    );
    assert!(bad.contains("use `admin`, `staff` or `auditor`"), "{bad}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_served_with_metrics_says_where_and_answers_health_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _) = init_office(&tmp);
    let d = data.to_str().unwrap();
    set(&data, "metrics", "listen = \"127.0.0.1:0\"");
    set(&data, "status_page", "listen = \"127.0.0.1:0\"");
    ok(&["check-config", "--data", d]);
    let server = serve(&data).await;
    let metrics = server
        .process
        .metrics_addr
        .expect("serve names the metrics address");
    assert!(
        server.process.status_page_addr.is_some(),
        "serve names the status page"
    );
    let healthy = ok(&["healthcheck", "--addr", &metrics.to_string()]);
    assert_eq!(healthy.trim(), "serving");
    ok(&[
        "record",
        "put",
        "--collection",
        "c-1",
        "--kind",
        "note",
        "--title",
        "t",
        "--data",
        d,
    ]);
    let (code, body) = http_get(metrics, "/metrics").await;
    assert_eq!(code, 200);
    let m = parse_metrics(&body);
    assert_eq!(
        value(&m, "casemesh_records", &[("origin", "phila-da")]),
        Some(1.0)
    );
    let help = ok(&["healthcheck", "--help"]);
    assert!(help.contains("[metrics] listen"), "{help}");
    drop(server);
    let down = fails(3, &["healthcheck", "--addr", &metrics.to_string()]);
    assert!(down.contains("no answer from http://"), "{down}");
    let not_local = fails(2, &["healthcheck", "--addr", "192.0.2.1:9464"]);
    assert!(
        not_local.contains("is not a loopback address"),
        "{not_local}"
    );
    // Something that accepts the connection and never answers: not a
    // healthy node, said within the check's deadline (exit 1, not 3).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let started = std::time::Instant::now();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let hung = fails(1, &["healthcheck", "--addr", &silent_addr]);
    assert!(
        hung.contains("accepted the connection but did not answer within 5 s"),
        "{hung}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    drop(silent);

    // One port for two listeners is refused before anything starts.
    let config = std::fs::read_to_string(data.join("casemesh.toml")).unwrap();
    let clash = config.replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:7443\"");
    std::fs::write(data.join("casemesh.toml"), clash).unwrap();
    let refused = fails(1, &["check-config", "--data", d]);
    assert!(
        refused
            .contains("listen and metrics.listen are both 127.0.0.1:7443: each needs its own port"),
        "{refused}"
    );
}
