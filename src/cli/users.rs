//! `casemesh user …` and `casemesh status`; where `user issue --p12`
//! finds its password (a file or the environment, never an argument).

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Subcommand;
use serde_json::Value;

use super::ClientOpts;
use super::errors::CliError;
use super::{json, output};
use crate::domain::Role;
use crate::protocol::{convert, pb};
use crate::setup::{SetupError, make_dir, write_new};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Issue a certificate for a new user. The key is made here and never
    /// sent to the node.
    Issue {
        /// The user's name: lower-case letters, digits, '.', '_' and '-'.
        #[arg(long)]
        name: String,
        /// admin (everything), staff (records and files) or auditor (the
        /// audit log and the node's state, read only).
        #[arg(long)]
        role: Role,
        /// Directory to write NAME-cert.pem, NAME-key.pem and ca.pem into
        /// (and NAME.p12 with --p12).
        #[arg(long)]
        out: PathBuf,
        /// Also write NAME.p12 (mode 0600), for importing into a browser:
        /// the certificate, its key and the office CA in one PKCS#12 file,
        /// encrypted (AES-256) with a password from --p12-password-file or
        /// else from the environment variable CASEMESH_P12_PASSWORD. No
        /// option takes the password itself: `ps` would show it.
        #[arg(long)]
        p12: bool,
        /// Read NAME.p12's password from the first line of FILE (its line
        /// break is not part of it) instead of CASEMESH_P12_PASSWORD.
        #[arg(long, value_name = "FILE", requires = "p12")]
        p12_password_file: Option<PathBuf>,
        /// Print JSON instead of text (shapes: docs/cli.md, "JSON output").
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Revoke a user's certificate; the node refuses it from now on.
    Revoke {
        /// The user's name.
        #[arg(long)]
        name: String,
        /// Print JSON instead of text (shapes: docs/cli.md, "JSON output").
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// List every user certificate issued, valid and revoked.
    List {
        /// Print JSON instead of text (shapes: docs/cli.md, "JSON output").
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
}

fn role_name(role: i32) -> &'static str {
    match convert::role_from_pb(role) {
        Ok(r) => r.as_str(),
        Err(_) => "unknown",
    }
}

pub async fn run(cmd: UserCommand) -> Result<()> {
    match cmd {
        UserCommand::Issue {
            name,
            role,
            out,
            p12,
            p12_password_file,
            json,
            client,
        } => {
            // Before anything is issued: a missing password costs nothing.
            let p12 = if p12 {
                Some(P12Password::find(p12_password_file.as_deref())?)
            } else {
                None
            };
            let issued = issue(&client, &name, role, &out, p12.as_ref(), |path, pem| {
                write_new(path, pem, 0o644)
            })
            .await?;
            let path = |p: &Path| p.display().to_string();
            if json {
                json::print(&serde_json::json!({
                    "name": name,
                    "role": role.as_str(),
                    "fingerprint": issued.fingerprint,
                    "certificate": path(&issued.cert),
                    "key": path(&issued.key),
                    "ca": path(&issued.ca),
                    "p12": issued.p12.as_deref().map(path),
                }));
            } else {
                println!("issued {role} certificate for {name}");
                println!("  certificate: {}", issued.cert.display());
                println!("  key (0600):  {}", issued.key.display());
                println!("  office CA:   {}", issued.ca.display());
                if let Some(p12) = &issued.p12 {
                    println!("  p12 (0600):  {}", p12.display());
                }
                println!("  fingerprint: {}", issued.fingerprint);
            }
            Ok(())
        }
        UserCommand::Revoke { name, json, client } => {
            let u = client
                .admin()
                .await?
                .revoke_user(pb::RevokeUserRequest {
                    name,
                    fingerprint: String::new(),
                })
                .await?
                .into_inner();
            if json {
                json::print(&json::user(&u));
            } else {
                println!("revoked {} at {}", u.name, output::time(u.revoked_at_ms));
            }
            Ok(())
        }
        UserCommand::List { json, client } => {
            let users = client
                .admin()
                .await?
                .list_users(pb::ListUsersRequest {})
                .await?
                .into_inner()
                .users;
            if json {
                json::print(&Value::Array(users.iter().map(json::user).collect()));
            } else {
                let rows: Vec<_> = users
                    .iter()
                    .map(|u| {
                        vec![
                            u.name.clone(),
                            role_name(u.role).into(),
                            output::time(u.issued_at_ms),
                            output::time(u.expires_at_ms),
                            if u.revoked_at_ms == 0 {
                                "valid".into()
                            } else {
                                format!("revoked {}", output::time(u.revoked_at_ms))
                            },
                            u.fingerprint.clone(),
                        ]
                    })
                    .collect();
                output::table(
                    &["name", "role", "issued", "expires", "state", "fingerprint"],
                    &rows,
                );
            }
            Ok(())
        }
    }
}

/// The environment variable `user issue --p12` takes the `.p12`'s password
/// from when no `--p12-password-file` is given.
pub const P12_PASSWORD_ENV: &str = "CASEMESH_P12_PASSWORD";

/// Bytes of `--p12-password-file` read: its first line is the password.
const MAX_PASSWORD_FILE: u64 = 64 * 1024;

/// The password a `.p12` is encrypted with; never empty. Not `Debug`, so
/// that no error or log line can print it.
pub struct P12Password(String);

impl P12Password {
    /// `password`, found `from` (for the error: "in FILE", "in VAR").
    pub fn new(password: String, from: &str) -> Result<Self, CliError> {
        if password.is_empty() {
            return Err(CliError::Usage(format!(
                "the .p12 password {from} is empty; an empty password would leave the private key unprotected"
            )));
        }
        // PKCS#12 keys its MAC with the password as UTF-16 (BMPString):
        // checked here, before anything is issued.
        if password.chars().any(|c| u32::from(c) > 0xFFFF) {
            return Err(CliError::Usage(format!(
                "the .p12 password {from} has a character PKCS#12 cannot encode (beyond U+FFFF, such as an emoji); choose another"
            )));
        }
        Ok(Self(password))
    }

    /// The first line of `file` (without its line break) if given, else
    /// the value of [`P12_PASSWORD_ENV`]; an error saying how to give one
    /// if neither is there.
    pub fn find(file: Option<&Path>) -> Result<Self> {
        if let Some(file) = file {
            use std::io::Read as _;
            // A password is a line; a file far larger is not one.
            let mut text = String::new();
            std::fs::File::open(file)
                .and_then(|f| f.take(MAX_PASSWORD_FILE).read_to_string(&mut text))
                .map_err(|e| super::errors::unreadable("--p12-password-file", file, e))?;
            let first = text.lines().next().unwrap_or_default();
            let from = format!("in --p12-password-file {} (its first line)", file.display());
            return Ok(Self::new(first.to_owned(), &from)?);
        }
        match std::env::var(P12_PASSWORD_ENV) {
            Ok(password) => Ok(Self::new(password, &format!("in {P12_PASSWORD_ENV}"))?),
            Err(std::env::VarError::NotUnicode(_)) => Err(CliError::Usage(format!(
                "{P12_PASSWORD_ENV} is not valid UTF-8; give the .p12 password as text"
            ))
            .into()),
            Err(std::env::VarError::NotPresent) => Err(CliError::Usage(format!(
                "--p12 needs a password to encrypt the key with: give --p12-password-file FILE (the password is its first line) or set {P12_PASSWORD_ENV}; it is never taken on the command line, where `ps` would show it"
            ))
            .into()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where `user issue` put a new user's files.
pub struct IssuedFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// `NAME.p12`, when one was asked for.
    pub p12: Option<PathBuf>,
    pub fingerprint: String,
}

/// Issues a certificate for `name` into `out`, losing nothing on the way:
/// the key is written before the node is asked (so an unwritable `--out`
/// costs nothing), and a certificate that cannot be saved is revoked at
/// once, so that the name can be issued again. `save_cert` writes the
/// certificate file. With `p12`, `NAME.p12` is written too, encrypted with
/// that password; it counts as part of saving the certificate (a `.p12`
/// that cannot be written revokes it), and one that exists already stops
/// the command before the node is asked.
pub async fn issue(
    client: &ClientOpts,
    name: &str,
    role: Role,
    out: &Path,
    p12: Option<&P12Password>,
    save_cert: impl FnOnce(&Path, &[u8]) -> Result<(), SetupError>,
) -> Result<IssuedFiles> {
    crate::domain::UserName::parse(name).map_err(|e| CliError::Usage(e.to_string()))?;
    let cert = out.join(format!("{name}-cert.pem"));
    let key = out.join(format!("{name}-key.pem"));
    let ca = out.join("ca.pem");
    let p12 = p12.map(|password| (out.join(format!("{name}.p12")), password));
    let p12_path = p12.as_ref().map(|(path, _)| path);
    for p in [Some(&cert), Some(&key), p12_path].into_iter().flatten() {
        // A dangling link counts: writing would fail on it.
        if p.symlink_metadata().is_ok() {
            return Err(CliError::Usage(format!(
                "{} already exists; not overwriting it (choose another --out)",
                p.display()
            ))
            .into());
        }
    }
    let (key_pem, csr_der) = crate::identity::pki::new_csr()?;
    let unusable =
        |e: SetupError| CliError::Usage(format!("cannot use --out {}: {e}", out.display()));
    make_dir(out, 0o700).map_err(unusable)?;
    write_new(&key, key_pem.as_bytes(), 0o600).map_err(unusable)?;
    let interrupted = format!(
        "the node may have issued a certificate for {name} that nobody holds (the key was removed): run `casemesh user revoke --name {name}` before issuing it again"
    );
    let asked = super::interruptible(interrupted, async {
        let mut admin = client.admin().await?;
        let resp = admin
            .issue_user(pb::IssueUserRequest {
                name: name.to_owned(),
                role: convert::role_to_pb(role) as i32,
                csr_der: csr_der.into(),
            })
            .await?
            .into_inner();
        Ok((admin, resp))
    })
    .await;
    let (mut admin, resp) = match asked {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&key);
            return Err(e);
        }
    };
    let fingerprint = resp
        .user
        .as_ref()
        .map(|u| u.fingerprint.clone())
        .unwrap_or_default();
    let saved = save_cert(&cert, resp.certificate_pem.as_bytes()).and_then(|()| match &p12 {
        Some((path, password)) => save_p12(path, &resp, &key_pem, password),
        None => Ok(()),
    });
    if let Err(e) = saved {
        let _ = std::fs::remove_file(&cert);
        let _ = std::fs::remove_file(&key);
        // By fingerprint: exactly the certificate just issued.
        let revoked = admin
            .revoke_user(pb::RevokeUserRequest {
                name: name.to_owned(),
                fingerprint: fingerprint.clone(),
            })
            .await;
        let what_now = match revoked {
            Ok(_) => format!("it has been revoked, so {name} can be issued again"),
            Err(s) => format!(
                "revoking it failed too ({}): run `casemesh user revoke --name {name}` before issuing it again",
                s.message()
            ),
        };
        return Err(CliError::Failed(format!(
            "the node issued a certificate for {name}, but it could not be saved ({e}); {what_now}"
        ))
        .into());
    }
    if ca.symlink_metadata().is_err() {
        if let Err(e) = write_new(&ca, resp.ca_certificate_pem.as_bytes(), 0o644) {
            eprintln!(
                "warning: could not write {} ({e}); copy the office's office-ca.pem there instead",
                ca.display()
            );
        }
    }
    Ok(IssuedFiles {
        cert,
        key,
        ca,
        p12: p12.map(|(path, _)| path),
        fingerprint,
    })
}

/// Writes `NAME.p12` (0600, never over an existing file) from what the
/// node answered and the key made here. A file left half-written is
/// removed; one that someone else put there meanwhile is left alone.
fn save_p12(
    path: &Path,
    resp: &pb::IssueUserResponse,
    key_pem: &str,
    password: &P12Password,
) -> Result<(), SetupError> {
    let bytes = crate::identity::pkcs12::user_pkcs12(
        &resp.certificate_pem,
        key_pem,
        &resp.ca_certificate_pem,
        password.as_str(),
    )?;
    write_new(path, &bytes, 0o600).inspect_err(|e| {
        let theirs = matches!(e, SetupError::Io { source, .. }
            if source.kind() == std::io::ErrorKind::AlreadyExists);
        if !theirs {
            let _ = std::fs::remove_file(path);
        }
    })
}

/// Certificates that have expired or expire within 30 days: the node's,
/// the office CA, every valid user's and every pinned peer's office CA.
pub fn expiry_warnings(s: &pb::StatusResponse, users: &[pb::User]) -> Vec<String> {
    use crate::identity::pki::expiry_warning;
    let now = crate::domain::now_ms();
    let mut out = Vec::new();
    out.extend(expiry_warning(
        "the node's certificate (node-cert.pem)",
        s.node_certificate_expires_at_ms,
        now,
    ));
    out.extend(expiry_warning(
        "the office CA certificate (office-ca.pem)",
        s.office_ca_expires_at_ms,
        now,
    ));
    for u in users.iter().filter(|u| u.revoked_at_ms == 0) {
        out.extend(expiry_warning(
            &format!("the certificate of user {}", u.name),
            u.expires_at_ms,
            now,
        ));
    }
    for p in &s.peers {
        out.extend(expiry_warning(
            &format!("the office CA pinned for peer {}", p.office),
            p.ca_expires_at_ms,
            now,
        ));
    }
    out
}

pub async fn status(client: ClientOpts, json: bool) -> Result<()> {
    let mut admin = client.admin().await?;
    let s = admin.status(pb::StatusRequest {}).await?.into_inner();
    let users = admin
        .list_users(pb::ListUsersRequest {})
        .await?
        .into_inner()
        .users;
    let warnings = expiry_warnings(&s, &users);
    if json {
        json::print(&json::status(&s, &warnings));
        return Ok(());
    }
    println!("office:      {}", s.office);
    println!("fingerprint: {}", s.fingerprint);
    println!("records:     {}", s.records);
    println!("versions:    {}", s.versions);
    println!("blobs:       {} ({})", s.blobs, output::size(s.blob_bytes));
    println!("blob store:  {}", s.blob_store);
    let free = s
        .disk_free_bytes
        .map_or_else(|| "unknown".to_owned(), output::size);
    let reserve = match s.disk_reserve_bytes {
        0 => "no reserve".to_owned(),
        r => format!("{} kept in reserve", output::size(r)),
    };
    println!("disk:        {free} free, {reserve}");
    println!("software:    casemesh {}", s.software_version);
    println!(
        "certificate: node until {}, office CA until {}",
        output::time(s.node_certificate_expires_at_ms),
        output::time(s.office_ca_expires_at_ms)
    );
    if !s.peers.is_empty() {
        println!();
        super::sharing::print_peers(&s.peers);
    }
    if !s.transfers.is_empty() {
        println!();
        print_transfers(&s.transfers);
    }
    if let Some(search) = &s.search {
        println!();
        println!("search index: {}", search_line(search));
    }
    if s.audit_entries_unindexed > 0 {
        println!();
        println!(
            "audit index: {} entries written before the upgrade still to index (audit list by record, actor, collection, peer or action is slower until then)",
            s.audit_entries_unindexed
        );
    }
    if !s.writes_refused.is_empty() {
        eprintln!("warning: writes are refused: {}", s.writes_refused);
    }
    for d in &s.damaged_files {
        eprintln!(
            "warning: file {} failed its integrity check ({}) and is not served: upload the original again",
            hex::encode(&d.hash),
            output::time(d.found_at_ms)
        );
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}

/// Files of replicas still being fetched: which, from where, how far.
fn print_transfers(transfers: &[pb::Transfer]) {
    let rows: Vec<_> = transfers
        .iter()
        .map(|t| {
            let mut hash = hex::encode(&t.hash);
            hash.truncate(12);
            let percent = match t.size {
                0 => 100,
                size => t.received.min(size) * 100 / size,
            };
            vec![
                hash,
                t.origin.clone(),
                format!(
                    "{} of {} ({percent}%)",
                    output::size(t.received),
                    output::size(t.size)
                ),
                if t.active {
                    "active".into()
                } else if t.gave_up {
                    format!("failed for good: {}", t.last_error)
                } else if t.last_error.is_empty() {
                    "waiting".into()
                } else {
                    format!("failed: {}", t.last_error)
                },
            ]
        })
        .collect();
    output::table(&["file", "from", "received", "state"], &rows);
}

/// The search index's state in a few words.
fn search_line(s: &pb::SearchIndexStatus) -> String {
    match s.state.as_str() {
        "off" => "turned off ([search] enabled = false)".into(),
        "rebuilding" => format!(
            "being rebuilt from the store ({} of {} records); searches wait",
            s.rebuilt, s.rebuild_total
        ),
        "incomplete" => format!(
            "incomplete ({} records): searches are refused until it is rebuilt, which the node does once the disk allows (`casemesh search --reindex` does it now)",
            s.records
        ),
        _ => format!("{} records, {} changes waiting", s.records, s.waiting),
    }
}
