//! `casemesh user issue` loses nothing: an `--out` it cannot write stops it
//! before the node issues anything, and a certificate it cannot save is
//! revoked so that the name can be issued again.

use casemesh::cli::ClientOpts;
use casemesh::domain::Role;

use super::bin::{fails, init_office, json, ok, serve};
use super::cluster::TestCluster;

fn users_named(data: &str, name: &str) -> Vec<serde_json::Value> {
    let users = json(&["user", "list", "--json", "--data", data]);
    users
        .as_array()
        .expect("an array")
        .iter()
        .filter(|u| u["name"] == name)
        .cloned()
        .collect()
}

#[tokio::test]
async fn an_unwritable_out_directory_issues_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _) = init_office(&tmp);
    let d = data.to_str().unwrap();
    let _server = serve(&data).await;

    let text = fails(
        2,
        &[
            "user",
            "issue",
            "--name",
            "bob",
            "--role",
            "staff",
            "--out",
            "/proc/nope",
            "--data",
            d,
        ],
    );
    assert!(text.contains("cannot use --out /proc/nope"), "{text}");
    assert!(users_named(d, "bob").is_empty(), "nothing was issued");

    // The last valid admin cannot be revoked: nobody could manage users.
    let text = fails(1, &["user", "revoke", "--name", "admin", "--data", d]);
    assert!(
        text.contains("admin is the last valid admin") && text.contains("(FAILED_PRECONDITION)"),
        "{text}"
    );

    let out = tmp.path().join("bob");
    let printed = ok(&[
        "user",
        "issue",
        "--name",
        "bob",
        "--role",
        "staff",
        "--out",
        out.to_str().unwrap(),
        "--data",
        d,
    ]);
    assert!(
        printed.contains("issued staff certificate for bob"),
        "{printed}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out.join("bob-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

// Multi-threaded: the node runs in this process while `casemesh` child
// processes, waited for on a worker thread, call it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_cannot_be_saved_is_revoked_and_the_name_issued_again() {
    let cluster = TestCluster::start(&["phila-da"]).await;
    let node = &cluster.nodes[0];
    let client = ClientOpts::for_data(&node.dir);
    let out = tempfile::tempdir().unwrap();

    let err =
        casemesh::cli::users::issue(&client, "bob", Role::Staff, out.path(), None, |path, _| {
            Err(casemesh::setup::SetupError::Io {
                path: path.to_owned(),
                source: std::io::Error::other("no space left on device"),
            })
        })
        .await
        .err()
        .expect("saving failed");
    let text = casemesh::cli::errors::report(&err).0;
    assert!(
        text.contains("it has been revoked, so bob can be issued again"),
        "{text}"
    );
    assert!(
        std::fs::read_dir(out.path()).unwrap().next().is_none(),
        "no key or certificate is left behind"
    );

    let d = node.dir.to_str().unwrap();
    let bob = users_named(d, "bob");
    assert_eq!(bob.len(), 1);
    assert!(bob[0]["revoked_at"].is_string(), "{bob:?}");

    let again = casemesh::cli::users::issue(
        &client,
        "bob",
        Role::Staff,
        out.path(),
        None,
        |path, pem| casemesh::setup::write_new(path, pem, 0o644),
    )
    .await
    .expect("bob can be issued again");
    let bob = users_named(d, "bob");
    assert_eq!(bob.len(), 2, "both certificates stay on record: {bob:?}");
    assert!(bob[0]["revoked_at"].is_string() && bob[1]["revoked_at"].is_null());
    assert_eq!(bob[1]["fingerprint"], again.fingerprint.as_str());

    // A revocation bound to a fingerprint touches only that certificate.
    let stale = node
        .admin()
        .await
        .revoke_user(casemesh::protocol::pb::RevokeUserRequest {
            name: "bob".into(),
            fingerprint: bob[0]["fingerprint"].as_str().unwrap().into(),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), tonic::Code::FailedPrecondition, "{stale:?}");
    assert_eq!(users_named(d, "bob")[1]["state"], "valid");

    let twice = casemesh::cli::users::issue(
        &client,
        "bob",
        Role::Staff,
        &out.path().join("other"),
        None,
        |path, pem| casemesh::setup::write_new(path, pem, 0o644),
    )
    .await
    .err()
    .expect("a name with a valid certificate is taken");
    let text = casemesh::cli::errors::report(&twice).0;
    assert!(text.contains("holds a valid certificate already"), "{text}");
}
