//! `casemesh user issue --p12` through the binary. The PKCS#12 file it
//! writes is read back by two independent implementations: OpenSSL's
//! `openssl pkcs12` takes it apart (the certificate, the key and the CA
//! inside are the ones issued, and the encryption is the one promised), and
//! Node.js calls the node with it as a browser would, over TLS with ALPN
//! h2. A wrong password opens it in neither. Without a usable password, or
//! over an existing `.p12`, nothing is issued.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use casemesh::cli::ClientOpts;
use casemesh::cli::users::{P12Password, issue};
use casemesh::domain::Role;
use casemesh::identity::pki::certs_from_pem;

use super::bin::{casemesh_env, fails, init_office, json, ok, run_bounded, serve};
use super::cluster::TestCluster;

const PASSWORD_ENV: &str = "CASEMESH_P12_PASSWORD";

/// `program` with `args`, which this test needs: fails the test, saying
/// how to install it, if the program is not there.
fn tool(program: &str, package: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Err(e) = Command::new(program).arg("--version").output() {
        panic!(
            "{program} cannot be run ({e}); this test reads the .p12 with it: apt-get install {package} (.ci/run installs it)"
        );
    }
    run_bounded(&mut cmd, Duration::from_secs(60))
}

/// `openssl ARGS`, which must succeed; its stdout.
fn openssl(args: &[&str]) -> String {
    let out = tool("openssl", "openssl", args);
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("openssl prints text")
}

fn p(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// The DER of the one certificate in `pem` (text around it is ignored,
/// as openssl prints bag attributes before each).
fn one_cert(pem: &str) -> Vec<u8> {
    let certs = certs_from_pem(pem.as_bytes()).unwrap_or_else(|e| panic!("{e}: {pem}"));
    assert_eq!(certs.len(), 1, "one certificate: {pem}");
    certs[0].to_vec()
}

fn user_names(data: &str) -> Vec<String> {
    json(&["user", "list", "--json", "--data", data])
        .as_array()
        .expect("an array")
        .iter()
        .map(|u| u["name"].as_str().expect("a name").to_owned())
        .collect()
}

/// Opens the .p12 (argv: file, password file, CA, port) as a browser does
/// and calls the node with it over HTTP/2, as gRPC: `Status`, which an
/// auditor may call, and `IssueUser`, which only an admin may. Prints
/// what it saw as JSON.
const NODE_CLIENT: &str = r#"
const [p12, passwordFile, caFile, port] = process.argv.slice(1);
const fs = require('fs');
const tls = require('tls');
const http2 = require('http2');
const pfx = fs.readFileSync(p12);
const passphrase = fs.readFileSync(passwordFile, 'utf8').split(/\r?\n/)[0];
const seen = {};
try {
  tls.createSecureContext({ pfx, passphrase: passphrase + ' but wrong' });
  seen.wrong_password = 'opened';
} catch (e) {
  seen.wrong_password = e.message;
}
setTimeout(() => { console.error('timed out'); process.exit(1); }, 30000).unref();
const session = http2.connect(`https://127.0.0.1:${port}`, {
  pfx, passphrase, ca: fs.readFileSync(caFile), servername: 'localhost',
});
session.on('error', (e) => { console.error(`connect: ${e.message}`); process.exit(1); });
function call(path) {
  return new Promise((resolve, reject) => {
    const req = session.request({
      ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers',
    });
    let status = null;
    const body = [];
    const note = (h) => { if (h['grpc-status'] !== undefined) status = Number(h['grpc-status']); };
    req.on('response', note);
    req.on('trailers', note);
    req.on('data', (d) => body.push(d));
    req.on('end', () => resolve({ status, body: Buffer.concat(body).toString('latin1') }));
    req.on('error', reject);
    // An empty protobuf message in gRPC's framing: uncompressed, length 0.
    req.end(Buffer.alloc(5));
  });
}
session.on('connect', async () => {
  try {
    seen.alpn = session.alpnProtocol;
    const status = await call('/casemesh.v1.Admin/Status');
    seen.status = status.status;
    seen.status_names_office = status.body.includes('phila-da');
    seen.issue_user = (await call('/casemesh.v1.Admin/IssueUser')).status;
    console.log(JSON.stringify(seen));
    session.close();
  } catch (e) {
    console.error(`call: ${e.message}`);
    process.exit(1);
  }
});
"#;

#[tokio::test]
async fn a_p12_holds_the_issued_certificate_key_and_office_ca_and_opens_in_openssl_and_node() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _) = init_office(&tmp);
    let d = p(&data);
    let server = serve(&data).await;
    let password = tmp.path().join("password");
    std::fs::write(&password, "correct horse battery staple\n").unwrap();
    let out = tmp.path().join("alice");

    let issued = json(&[
        "user",
        "issue",
        "--name",
        "alice",
        "--role",
        "auditor",
        "--out",
        p(&out),
        "--p12",
        "--p12-password-file",
        p(&password),
        "--data",
        d,
        "--json",
    ]);
    let file = out.join("alice.p12");
    assert_eq!(issued["p12"], p(&file), "{issued}");
    let documented = &super::cli_json::documented_shapes()["user issue"];
    assert_eq!(
        super::cli_json::keys(&issued),
        documented.iter().cloned().collect(),
        "{issued}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the .p12 holds the key: 0600 like it");

    // OpenSSL takes it apart.
    let pkcs12 = |more: &[&str]| {
        let mut args = vec!["pkcs12", "-in", p(&file), "-passin"];
        let pass = format!("file:{}", p(&password));
        args.push(&pass);
        args.extend_from_slice(more);
        openssl(&args)
    };
    let cert_beside = std::fs::read_to_string(out.join("alice-cert.pem")).unwrap();
    assert_eq!(
        one_cert(&pkcs12(&["-clcerts", "-nokeys"])),
        one_cert(&cert_beside),
        "the user certificate inside is the one written beside it"
    );
    let office_ca = std::fs::read_to_string(data.join("office-ca.pem")).unwrap();
    assert_eq!(
        one_cert(&pkcs12(&["-cacerts", "-nokeys"])),
        one_cert(&office_ca),
        "the CA inside is the office's"
    );
    let key_inside = tmp.path().join("key-inside.pem");
    std::fs::write(&key_inside, pkcs12(&["-nocerts", "-nodes"])).unwrap();
    let public_of_key = |key: &Path| openssl(&["pkey", "-in", p(key), "-pubout"]);
    let public_of_cert = openssl(&[
        "x509",
        "-in",
        p(&out.join("alice-cert.pem")),
        "-pubkey",
        "-noout",
    ]);
    assert_eq!(
        public_of_key(&key_inside),
        public_of_cert,
        "the key inside is the certificate's"
    );
    assert_eq!(
        public_of_key(&key_inside),
        public_of_key(&out.join("alice-key.pem")),
        "the key inside is the one written beside it"
    );

    // What protects it: PBES2 with AES-256-CBC for both bags, an
    // HMAC-SHA256 MAC (`-info` reports to stderr).
    let pass = format!("file:{}", p(&password));
    let info = tool(
        "openssl",
        "openssl",
        &[
            "pkcs12",
            "-in",
            p(&file),
            "-passin",
            &pass,
            "-info",
            "-noout",
        ],
    );
    assert!(info.status.success(), "{info:?}");
    let info = String::from_utf8_lossy(&info.stderr);
    for line in [
        "MAC: sha256",
        "PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC",
        "Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC",
    ] {
        assert!(info.contains(line), "{line:?} missing from: {info}");
    }
    assert_eq!(info.matches("PRF hmacWithSHA256").count(), 2, "{info}");

    let wrong = tmp.path().join("wrong");
    std::fs::write(&wrong, "correct horse battery stapler\n").unwrap();
    let refused = tool(
        "openssl",
        "openssl",
        &[
            "pkcs12",
            "-in",
            p(&file),
            "-passin",
            &format!("file:{}", p(&wrong)),
            "-nodes",
        ],
    );
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("Mac verify error"),
        "a wrong password does not open it: {said}"
    );
    assert!(
        !String::from_utf8_lossy(&refused.stdout).contains("PRIVATE KEY"),
        "and shows no key"
    );

    // Node.js opens it as a browser would and calls the node with it.
    let port = server.process.addr.port().to_string();
    let node = tool(
        "node",
        "nodejs",
        &[
            "-e",
            NODE_CLIENT,
            p(&file),
            p(&password),
            p(&out.join("ca.pem")),
            &port,
        ],
    );
    assert!(
        node.status.success(),
        "node: {}",
        String::from_utf8_lossy(&node.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&node.stdout).unwrap();
    assert!(
        seen["wrong_password"]
            .as_str()
            .is_some_and(|m| m.contains("mac verify failure")),
        "a wrong password does not open it in Node.js either: {seen}"
    );
    assert_eq!(seen["alpn"], "h2", "{seen}");
    assert_eq!(seen["status"], 0, "an auditor may read the status: {seen}");
    assert_eq!(seen["status_names_office"], true, "{seen}");
    assert_eq!(
        seen["issue_user"], 7,
        "PERMISSION_DENIED: the node took the caller for the auditor alice: {seen}"
    );

    // The node's own account: those calls were alice's, by this certificate.
    let entries = json(&["audit", "list", "--actor", "alice", "--data", d, "--json"]);
    let entries = entries.as_array().unwrap();
    let status = entries
        .iter()
        .find(|e| e["action"] == "Admin.Status")
        .unwrap_or_else(|| panic!("alice's Status call is in the audit log: {entries:?}"));
    assert_eq!(status["actor"]["role"], "auditor");
    assert_eq!(status["actor"]["fingerprint"], issued["fingerprint"]);
}

#[tokio::test]
async fn without_a_usable_password_or_over_an_existing_p12_nothing_is_issued() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _) = init_office(&tmp);
    let d = p(&data);
    let _server = serve(&data).await;
    let out = tmp.path().join("bob");
    let issue = |more: &[&str]| {
        let mut args = vec![
            "user",
            "issue",
            "--name",
            "bob",
            "--role",
            "auditor",
            "--out",
            p(&out),
            "--data",
            d,
            "--p12",
        ];
        args.extend_from_slice(more);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let refused = |args: Vec<String>, password: Option<&str>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = casemesh_env(&args, &[(PASSWORD_ENV, password)]);
        let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
        assert_eq!(run.status.code(), Some(2), "{args:?}: {stderr}");
        stderr
    };

    let none = refused(issue(&[]), None);
    for says in [
        "--p12 needs a password",
        "--p12-password-file FILE",
        PASSWORD_ENV,
        "never taken on the command line",
    ] {
        assert!(none.contains(says), "{says:?} missing from: {none}");
    }
    let empty = refused(issue(&[]), Some(""));
    assert!(
        empty.contains("the .p12 password in CASEMESH_P12_PASSWORD is empty"),
        "{empty}"
    );
    let emoji = refused(issue(&[]), Some("case\u{1F512}lock"));
    assert!(
        emoji.contains("has a character PKCS#12 cannot encode (beyond U+FFFF"),
        "{emoji}"
    );
    let blank = tmp.path().join("blank");
    std::fs::write(&blank, "\nnot the first line\n").unwrap();
    let empty = refused(issue(&["--p12-password-file", p(&blank)]), Some("unused"));
    assert!(
        empty.contains(&format!(
            "the .p12 password in --p12-password-file {} (its first line) is empty",
            blank.display()
        )),
        "{empty}"
    );
    let missing = tmp.path().join("missing");
    let unreadable = refused(issue(&["--p12-password-file", p(&missing)]), Some("unused"));
    assert!(
        unreadable.contains(&format!(
            "cannot read --p12-password-file {}",
            missing.display()
        )),
        "{unreadable}"
    );
    assert!(
        !out.exists(),
        "refused before a key was made or --out created"
    );

    // A .p12 already there is not overwritten, and nothing is issued.
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("bob.p12"), b"someone else's").unwrap();
    let exists = refused(issue(&[]), Some("s3cret pass"));
    assert!(
        exists.contains(&format!(
            "{} already exists; not overwriting it",
            out.join("bob.p12").display()
        )),
        "{exists}"
    );
    assert_eq!(
        std::fs::read(out.join("bob.p12")).unwrap(),
        b"someone else's"
    );
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        1,
        "no key or certificate was written"
    );
    assert_eq!(user_names(d), ["admin"], "nothing was issued");

    // --p12-password-file means nothing without --p12 (clap says so).
    let alone = fails(
        2,
        &[
            "user",
            "issue",
            "--name",
            "bob",
            "--role",
            "auditor",
            "--out",
            p(&out),
            "--p12-password-file",
            p(&blank),
            "--data",
            d,
        ],
    );
    assert!(alone.contains("--p12"), "{alone}");

    // From the environment, into a fresh directory; not ASCII, which
    // OpenSSL reads as the same UTF-8.
    let fresh = tmp.path().join("bob2");
    let mut args = issue(&[]);
    let at = args.iter().position(|a| *a == p(&out)).unwrap();
    args[at] = p(&fresh).to_owned();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = casemesh_env(&args, &[(PASSWORD_ENV, Some("s3cret päss"))]);
    let printed = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        printed.contains(&format!("p12 (0600):  {}", fresh.join("bob.p12").display())),
        "{printed}"
    );
    let same = tmp.path().join("same");
    std::fs::write(&same, "s3cret päss").unwrap();
    let inside = openssl(&[
        "pkcs12",
        "-in",
        p(&fresh.join("bob.p12")),
        "-passin",
        &format!("file:{}", p(&same)),
        "-clcerts",
        "-nokeys",
    ]);
    let beside = std::fs::read_to_string(fresh.join("bob-cert.pem")).unwrap();
    assert_eq!(one_cert(&inside), one_cert(&beside));
    assert_eq!(user_names(d), ["admin", "bob"]);
}

// Multi-threaded: the node runs in this process while `casemesh` child
// processes, waited for on a worker thread, call it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p12_that_cannot_be_written_revokes_the_certificate_and_leaves_a_file_it_did_not_write() {
    let cluster = TestCluster::start(&["phila-da"]).await;
    let node = &cluster.nodes[0];
    let client = ClientOpts::for_data(&node.dir);
    let out = tempfile::tempdir().unwrap();
    let password = P12Password::new("s3cret".into(), "in the test").unwrap();
    let theirs = out.path().join("bob.p12");

    let err = issue(
        &client,
        "bob",
        Role::Auditor,
        out.path(),
        Some(&password),
        |path, pem| {
            // Someone puts a bob.p12 there after the check, before it is
            // written.
            std::fs::write(&theirs, b"someone else's").unwrap();
            casemesh::setup::write_new(path, pem, 0o644)
        },
    )
    .await
    .err()
    .expect("the .p12 could not be written");
    let text = casemesh::cli::errors::report(&err).0;
    assert!(
        text.contains(&theirs.display().to_string())
            && text.contains("it has been revoked, so bob can be issued again"),
        "{text}"
    );
    assert_eq!(std::fs::read(&theirs).unwrap(), b"someone else's");
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        1,
        "no key or certificate is left behind"
    );
    let users = json(&["user", "list", "--json", "--data", p(&node.dir)]);
    let bob: Vec<_> = users
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["name"] == "bob")
        .collect();
    assert_eq!(bob.len(), 1, "{users}");
    assert_eq!(bob[0]["state"], "revoked", "{users}");
}

#[test]
fn user_issue_help_says_how_the_p12_password_is_given() {
    let help = ok(&["user", "issue", "--help"]);
    for says in [
        "--p12 ",
        "NAME.p12 (mode 0600)",
        "PKCS#12",
        "--p12-password-file <FILE>",
        "first line of FILE",
        "CASEMESH_P12_PASSWORD",
        "No option takes the password itself",
    ] {
        assert!(help.contains(says), "{says:?} missing from: {help}");
    }
}
