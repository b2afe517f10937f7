//! `casemesh check-config` and certificate expiry: what an admin checks
//! before starting a node and while it runs.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, SanType,
};

use super::bin::{casemesh, fails, init_named, init_office, ok, serve};

/// Sets a certificate's end `days` from now (rcgen's time type is not
/// named here).
fn ends_in(params: &mut CertificateParams, days: u64) {
    params.not_after = rcgen::date_time_ymd(1970, 1, 1)
        + Duration::from_millis(casemesh::domain::now_ms() + days * 86_400_000);
}

#[test]
fn check_config_finds_loose_modes_mismatched_keys_and_expiring_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _) = init_office(&tmp);
    let d = data.to_str().unwrap();
    let fresh = ok(&["check-config", "--data", d]);
    assert!(
        fresh.lines().all(|l| l.starts_with("ok ")),
        "a fresh office checks out:\n{fresh}"
    );
    assert!(fresh.contains("office phila-da"), "{fresh}");

    // The first admin's certificate, issued again by the office key, for
    // ten days only.
    let office_key =
        KeyPair::from_pem(&std::fs::read_to_string(data.join("private/office-key.pem")).unwrap())
            .unwrap();
    let ca_pem = std::fs::read_to_string(data.join("office-ca.pem")).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, office_key).unwrap();
    let admin_key =
        KeyPair::from_pem(&std::fs::read_to_string(data.join("admin/admin-key.pem")).unwrap())
            .unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(
        "urn:casemesh:phila-da:user:admin:admin".try_into().unwrap(),
    )];
    ends_in(&mut params, 10);
    let short = params.signed_by(&admin_key, &issuer).unwrap();
    std::fs::remove_file(data.join("admin/admin-cert.pem")).unwrap();
    std::fs::write(data.join("admin/admin-cert.pem"), short.pem()).unwrap();
    let warned = ok(&["check-config", "--data", d]);
    let line = warned
        .lines()
        .find(|l| l.starts_with("warning "))
        .unwrap_or_else(|| panic!("a warning:\n{warned}"));
    assert!(
        line.contains("the first admin's certificate") && line.contains("in 9 days"),
        "{line}"
    );

    // A key readable by others, and a node key that is not the node's.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        data.join("private/office-key.pem"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let (other, _) = init_named(&tmp, "nyc-da", "other");
    std::fs::copy(
        other.join("private/node-key.pem"),
        data.join("private/node-key.pem"),
    )
    .unwrap();
    let out = casemesh(&["check-config", "--data", d]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("problem  private/office-key.pem: mode 0644, documented 0600"),
        "{text}"
    );
    assert!(
        text.contains("node-key.pem is not the key of this certificate"),
        "{text}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("2 problem(s)"),
        "{out:?}"
    );
    let json = super::bin::json(&["check-config", "--data", other.to_str().unwrap(), "--json"]);
    assert_eq!(json["ok"], true);

    let not_an_office = tmp.path().join("nothing");
    fails(
        2,
        &["check-config", "--data", not_an_office.to_str().unwrap()],
    );
}

/// A pinned peer whose office CA expires within 30 days is named by
/// `status`, on stderr and in `--json`.
#[tokio::test]
async fn status_warns_of_a_pinned_office_ca_about_to_expire() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _) = init_office(&tmp);
    let d = data.to_str().unwrap();
    let server = serve(&data).await;

    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "nyc-da");
    dn.push(DnType::CommonName, "casemesh office CA nyc-da");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ends_in(&mut params, 5);
    let ca = params.self_signed(&key).unwrap();
    let ca_file = tmp.path().join("nyc-da-office-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    ok(&[
        "peer",
        "add",
        "--office",
        "nyc-da",
        "--peer-endpoint",
        "https://127.0.0.1:9",
        "--ca-cert",
        ca_file.to_str().unwrap(),
        "--data",
        d,
    ]);
    let out = casemesh(&["status", "--data", d]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: the office CA pinned for peer nyc-da expires at")
            && stderr.contains("in 4 days"),
        "{stderr}"
    );
    let status = super::bin::json(&["status", "--data", d, "--json"]);
    let warnings = status["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{status}");
    assert!(status["peers"][0]["ca_expires_at"].is_string());

    // With the node stopped, check-config reads the store and says so too.
    drop(server);
    let checked = super::cluster::eventually(
        std::time::Duration::from_secs(10),
        "check-config to read the stopped node's store",
        || {
            let out = ok(&["check-config", "--data", d]);
            std::future::ready((!out.contains("not read while the node runs")).then_some(out))
        },
    )
    .await;
    assert!(
        checked.contains("warning  the office CA pinned for peer nyc-da: expires at"),
        "{checked}"
    );
}

/// `--version` names the commit built from; completions and man pages come
/// from the same definitions as `--help`.
#[test]
fn version_completions_and_man_pages_come_from_the_build_and_the_definitions() {
    let version = ok(&["--version"]);
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let version = version.trim();
    match head {
        // `-dirty` when the build had changes not committed.
        Some(commit) => assert!(
            [
                format!("casemesh {} (commit {commit})", env!("CARGO_PKG_VERSION")),
                format!(
                    "casemesh {} (commit {commit}-dirty)",
                    env!("CARGO_PKG_VERSION")
                ),
            ]
            .iter()
            .any(|v| v == version),
            "{version} names commit {commit}"
        ),
        None => assert_eq!(
            version,
            format!(
                "casemesh {} (built outside a git checkout)",
                env!("CARGO_PKG_VERSION")
            )
        ),
    }

    for shell in ["bash", "zsh", "fish"] {
        let script = ok(&["completions", shell]);
        assert!(script.contains("peer-endpoint"), "{shell}");
    }
    let page = ok(&["man"]);
    assert!(
        page.starts_with(".ie") || page.contains(".TH casemesh"),
        "{page}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("man1");
    ok(&["man", "--out", dir.to_str().unwrap()]);
    let add = std::fs::read_to_string(dir.join("casemesh-peer-add.1")).unwrap();
    assert!(add.contains("peer\\-endpoint"), "{add}");
}

/// The disk reserve as an admin meets it through the binary: `status`
/// shows free space against `store.min_free_mb`; with a reserve larger
/// than the disk, `status` warns that writes are refused (and `--json`
/// says why), a `record put` fails naming the setting, and reads go on.
#[tokio::test]
async fn status_and_put_below_the_disk_reserve() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _) = init_office(&tmp);
    let d = data.to_str().unwrap();
    let put = |title: &str| {
        casemesh(&[
            "record",
            "put",
            "--data",
            d,
            "--collection",
            "c",
            "--kind",
            "k",
            "--title",
            title,
        ])
    };
    let id = {
        let _server = serve(&data).await;
        let text = ok(&["status", "--data", d]);
        assert!(
            text.lines()
                .any(|l| l.starts_with("disk:") && l.ends_with("free, 256.0 MiB kept in reserve")),
            "{text}"
        );
        let status = super::bin::json(&["status", "--data", d, "--json"]);
        assert_eq!(status["disk_reserve_bytes"], 256u64 << 20, "{status}");
        assert!(status["disk_free_bytes"].as_u64().is_some(), "{status}");
        assert!(status["writes_refused"].is_null(), "{status}");
        let out = put("before");
        assert!(out.status.success(), "control: a put goes in");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };

    // A reserve larger than any disk (the largest TOML takes: its bytes
    // saturate): writes are refused from the start.
    let config = data.join("casemesh.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("min_free_mb = 256"), "{text}");
    std::fs::write(
        &config,
        text.replace("min_free_mb = 256", "min_free_mb = 9223372036854775807"),
    )
    .unwrap();
    ok(&["check-config", "--data", d]);
    let _server = serve(&data).await;
    let out = casemesh(&["status", "--data", d]);
    assert!(out.status.success(), "status still answers");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: writes are refused: the disk holding the data directory has")
            && stderr.contains("kept in reserve (store.min_free_mb)"),
        "{stderr}"
    );
    let status = super::bin::json(&["status", "--data", d, "--json"]);
    assert!(
        status["writes_refused"]
            .as_str()
            .is_some_and(|w| w.contains("store.min_free_mb")),
        "{status}"
    );
    let out = put("below the reserve");
    assert_eq!(out.status.code(), Some(1), "refused, exit 1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("store.min_free_mb") && stderr.contains("RESOURCE_EXHAUSTED"),
        "{stderr}"
    );
    assert!(
        ok(&["record", "get", &id, "--data", d]).contains("before"),
        "reads go on"
    );

    // --help says what status shows.
    let help = ok(&["status", "--help"]);
    assert!(
        help.contains("free space") && help.contains("whether writes are accepted"),
        "{help}"
    );
}

/// `verify-bundle --help` says when it exits 1.
#[test]
fn verify_bundle_help_says_when_it_exits_1() {
    let help = ok(&["verify-bundle", "--help"]);
    let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("Without the exporting office's, a bundle that checks out is only self-consistent, and the command exits 1"),
        "{help}"
    );
}
