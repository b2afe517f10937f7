//! What an admin reads when something is wrong: one line naming the
//! problem and what to do, and the exit code that says which kind it was
//! (1 refused or failed, 2 usage, 3 node unreachable or certificate refused).

use super::bin::{fails, init_named, init_office, serve, serve_logging};

/// The client arguments to reach `endpoint` with a certificate, a key and a
/// CA file.
fn as_holder<'a>(endpoint: &'a str, cert: &'a str, key: &'a str, ca: &'a str) -> Vec<&'a str> {
    vec![
        "--endpoint",
        endpoint,
        "--cert",
        cert,
        "--key",
        key,
        "--ca",
        ca,
    ]
}

fn path(p: std::path::PathBuf) -> String {
    p.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn unreachable_nodes_and_refused_certificates_exit_3_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _) = init_office(&tmp);
    let (other, _) = init_named(&tmp, "nyc-da", "other");
    let d = data.to_str().unwrap();

    // Its port is chosen when it starts: with no node running, nothing
    // says where it would be.
    let never_started = fails(3, &["status", "--data", d]);
    assert!(
        never_started.contains(&format!("no node is running on {d}"))
            && never_started.contains("casemesh serve --data"),
        "{never_started}"
    );

    let server = serve(&data).await;
    let endpoint = server.endpoint.clone();
    let ca = path(data.join("office-ca.pem"));

    let (cert, key) = (
        path(other.join("admin/admin-cert.pem")),
        path(other.join("admin/admin-key.pem")),
    );
    let mut args = vec!["status"];
    args.extend(as_holder(&endpoint, &cert, &key, &ca));
    let foreign = fails(3, &args);
    assert!(
        foreign
            .contains("the node refused this certificate: it was not issued by this office's CA"),
        "{foreign}"
    );

    let (cert, key) = (
        path(data.join("node-cert.pem")),
        path(data.join("private/node-key.pem")),
    );
    let mut args = vec!["status"];
    args.extend(as_holder(&endpoint, &cert, &key, &ca));
    let node_cert = fails(3, &args);
    assert!(
        node_cert.contains("the node refused this certificate: it is not a user certificate"),
        "{node_cert}"
    );

    let (cert, key, wrong_ca) = (
        path(data.join("admin/admin-cert.pem")),
        path(data.join("admin/admin-key.pem")),
        path(other.join("office-ca.pem")),
    );
    let mut args = vec!["status"];
    args.extend(as_holder(&endpoint, &cert, &key, &wrong_ca));
    let wrong = fails(3, &args);
    assert!(
        wrong.contains("the node's certificate was not issued by the CA given"),
        "{wrong}"
    );
    // Stopped: the CLI still goes where it last was, and finds nothing.
    drop(server);
    let down = fails(
        3,
        &[
            "status",
            "--endpoint",
            &endpoint,
            "--cert",
            &cert,
            "--key",
            &key,
            "--ca",
            &ca,
        ],
    );
    assert_eq!(
        down.trim(),
        format!(
            "error: node {endpoint}: nothing is listening there: is the node running at this address?"
        )
    );
    for text in [&never_started, &down, &foreign, &node_cert, &wrong] {
        assert_eq!(text.lines().count(), 1, "one line: {text}");
        assert!(!text.contains("transport error"), "{text}");
    }
}

#[tokio::test]
async fn local_mistakes_say_what_to_do_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("not-an-office");
    let m = missing.to_str().unwrap();
    let text = fails(2, &["status", "--data", m]);
    assert_eq!(
        text.trim(),
        format!(
            "error: {m}/casemesh.toml does not exist: is {m} the data directory you gave `casemesh init`?"
        )
    );

    let (data, _) = init_office(&tmp);
    let log = tmp.path().join("serve.log");
    let server = serve_logging(&data, Some(&log)).await;
    let d = data.to_str().unwrap();
    let twice = fails(1, &["serve", "--data", d, "--listen", "127.0.0.1:0"]);
    assert_eq!(
        twice.trim(),
        format!(
            "error: opening the store: another casemesh node is already running on this data directory (its store {d}/store is locked); stop it first"
        )
    );
    let busy = server.endpoint.trim_start_matches("https://");
    let same_port = fails(1, &["serve", "--data", d, "--listen", busy]);
    assert!(same_port.contains("the address is in use"), "{same_port}");
    assert_eq!(same_port.lines().count(), 1, "{same_port}");

    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("node serving"), "{logged}");
    // Reads show in the node's log too: one line per call, naming the
    // method and the caller (`serve` waited with `status` calls).
    let status_call = logged
        .lines()
        .find(|l| l.contains("/casemesh.v1.Admin/Status") && l.contains("call answered"))
        .unwrap_or_else(|| panic!("no line for a Status call:\n{logged}"));
    assert!(
        status_call.contains("caller=admin:admin") && status_call.contains("code=OK"),
        "{status_call}"
    );
    assert!(
        !logged.contains('\x1b'),
        "no colour codes in a log that is not a terminal: {logged:?}"
    );
}

/// A grant longer than 100 years is a typo; it is refused before anything
/// reaches the node, with the limit named.
#[test]
fn a_grant_for_longer_than_100_years_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _) = init_office(&tmp);
    let d = data.to_str().unwrap();
    for length in ["99999999999d", "3000000d"] {
        let text = fails(
            2,
            &[
                "share",
                "grant",
                "--peer",
                "nyc-da",
                "--collection",
                "2026-0042",
                "--for",
                length,
                "--data",
                d,
            ],
        );
        assert!(text.contains("longer than 100 years (36525d)"), "{text}");
    }
}
