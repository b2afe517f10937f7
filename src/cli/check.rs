//! `casemesh check-config`: reads an office's data directory the way the
//! node will, without starting it, and says what it found — the settings,
//! every key and certificate (present, mode, expiry, that they belong
//! together), and whether the listen address can be used.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Result;
use serde_json::json;

use super::errors::CliError;
use crate::config::{Config, Paths};
use crate::identity::pki;

/// How a finding weighs: a problem stops the node or weakens it; a
/// warning needs attention soon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    Warning,
    Problem,
}

impl Level {
    fn word(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Problem => "problem",
        }
    }
}

#[derive(Debug)]
struct Finding {
    level: Level,
    item: String,
    message: String,
}

#[derive(Default)]
struct Report {
    findings: Vec<Finding>,
}

impl Report {
    fn add(&mut self, level: Level, item: impl Into<String>, message: impl Into<String>) {
        self.findings.push(Finding {
            level,
            item: item.into(),
            message: message.into(),
        });
    }

    fn problems(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.level == Level::Problem)
            .count()
    }
}

/// A file or directory of the data directory, with the mode the docs give
/// it (`docs/operating.md`). A key's mode wider than that is a problem; the
/// data directory's and the store's (wider only in directories made before
/// `init` set them) a warning, as other users could read the records.
struct Expected {
    rel: &'static str,
    mode: u32,
    secret: bool,
}

const LAYOUT: &[Expected] = &[
    Expected {
        rel: "",
        mode: 0o700,
        secret: false,
    },
    Expected {
        rel: "casemesh.toml",
        mode: 0o644,
        secret: false,
    },
    Expected {
        rel: "office-ca.pem",
        mode: 0o644,
        secret: false,
    },
    Expected {
        rel: "node-cert.pem",
        mode: 0o644,
        secret: false,
    },
    Expected {
        rel: "private",
        mode: 0o700,
        secret: true,
    },
    Expected {
        rel: "private/office-key.pem",
        mode: 0o600,
        secret: true,
    },
    Expected {
        rel: "private/node-key.pem",
        mode: 0o600,
        secret: true,
    },
    Expected {
        rel: "admin",
        mode: 0o700,
        secret: true,
    },
    Expected {
        rel: "admin/admin-cert.pem",
        mode: 0o644,
        secret: false,
    },
    Expected {
        rel: "admin/admin-key.pem",
        mode: 0o600,
        secret: true,
    },
    Expected {
        rel: "store",
        mode: 0o700,
        secret: false,
    },
];

fn check_layout(root: &Path, r: &mut Report) {
    for e in LAYOUT {
        let path = root.join(e.rel);
        let item = if e.rel.is_empty() {
            "data directory"
        } else {
            e.rel
        };
        match std::fs::metadata(&path) {
            Err(err) => r.add(Level::Problem, item, format!("cannot be read: {err}")),
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode == e.mode {
                    continue;
                }
                // Wider than documented matters for secrets; narrower
                // only for what others must read.
                let wider = mode & !e.mode != 0;
                let level = if e.secret && wider {
                    Level::Problem
                } else {
                    Level::Warning
                };
                r.add(
                    level,
                    item,
                    format!(
                        "mode {mode:04o}, documented {:04o} (chmod {:o} {})",
                        e.mode,
                        e.mode,
                        path.display()
                    ),
                );
            }
        }
    }
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// The first certificate of a PEM file, or a problem recorded.
fn cert(path: &Path, item: &str, r: &mut Report) -> Option<Vec<u8>> {
    let pem = read(path)?;
    match pki::certs_from_pem(pem.as_bytes()) {
        Ok(certs) if !certs.is_empty() => Some(certs[0].to_vec()),
        Ok(_) => {
            r.add(Level::Problem, item, "holds no certificate");
            None
        }
        Err(e) => {
            r.add(Level::Problem, item, format!("is not a certificate: {e}"));
            None
        }
    }
}

/// A finding on when a certificate expires; with `quiet`, none unless it
/// expires within 30 days (one line per user would drown the rest).
fn check_expiry_of(item: &str, der: &[u8], quiet: bool, r: &mut Report) {
    match pki::expires_at_ms(der) {
        Ok(at) => {
            let now = crate::domain::now_ms();
            // The finding names the item already.
            let warning = pki::expiry_warning("", at, now).map(|w| w.trim_start().to_owned());
            match warning {
                Some(w) if at <= now => r.add(Level::Problem, item, w),
                Some(w) => r.add(Level::Warning, item, w),
                None if quiet => {}
                None => r.add(
                    Level::Ok,
                    item,
                    format!("valid until {}", crate::domain::format_time(at)),
                ),
            }
        }
        Err(e) => r.add(Level::Problem, item, e.to_string()),
    }
}

fn check_expiry(item: &str, der: &[u8], r: &mut Report) {
    check_expiry_of(item, der, false, r);
}

/// Issued users' and pinned peers' certificates, from the store, when no
/// node holds it.
fn check_users_and_peers(paths: &Paths, config: &Config, r: &mut Report) {
    use crate::store::{Store, StoreError, StoreOptions};
    // Only read here: no free space is needed.
    let options = StoreOptions {
        reserve_bytes: 0,
        ..StoreOptions::from(&config.store)
    };
    let store = match Store::open_unless_locked(&paths.store(), &config.office, &options) {
        Ok(store) => store,
        Err(StoreError::Locked(_)) => {
            r.add(
                Level::Ok,
                "users and peers",
                "not read while the node runs (it holds the store): `casemesh status` warns of their certificates",
            );
            return;
        }
        Err(e) => {
            r.add(Level::Problem, "store", e.to_string());
            return;
        }
    };
    let (users, peers) = match (store.users(), store.peers()) {
        (Ok(u), Ok(p)) => (u, p),
        (Err(e), _) | (_, Err(e)) => {
            r.add(Level::Problem, "store", e.to_string());
            return;
        }
    };
    let valid: Vec<_> = users.iter().filter(|u| u.user.revoked_at_ms == 0).collect();
    let before = r.findings.len();
    for u in &valid {
        let item = format!("the certificate of user {}", u.user.name);
        check_expiry_of(&item, &u.user.cert_der, true, r);
    }
    for p in &peers {
        let item = format!("the office CA pinned for peer {}", p.office);
        check_expiry_of(&item, &p.ca_der, true, r);
    }
    if r.findings.len() == before {
        r.add(
            Level::Ok,
            "users and peers",
            format!(
                "{} valid user certificates and {} pinned office CAs, none expiring within 30 days",
                valid.len(),
                peers.len()
            ),
        );
    }
}

fn check_pair(item: &str, key_path: &Path, der: &[u8], r: &mut Report) {
    let Some(key) = read(key_path) else { return };
    match pki::key_matches(&key, der) {
        Ok(true) => {}
        Ok(false) => r.add(
            Level::Problem,
            item,
            format!("{} is not the key of this certificate", key_path.display()),
        ),
        Err(e) => r.add(Level::Problem, item, e.to_string()),
    }
}

fn check_issued(item: &str, der: &[u8], ca: &[u8], r: &mut Report) {
    match pki::is_signed_by(der, ca) {
        Ok(true) => {}
        Ok(false) => r.add(
            Level::Problem,
            item,
            "was not issued by this office's CA (office-ca.pem)",
        ),
        Err(e) => r.add(Level::Problem, item, e.to_string()),
    }
}

/// The certificate names the office of casemesh.toml, as a node or user.
fn check_office(item: &str, der: &[u8], office: &str, r: &mut Report) {
    match crate::identity::CertIdentity::of_cert(der) {
        Ok(id) if id.office().as_str() == office => {}
        Ok(id) => r.add(
            Level::Problem,
            item,
            format!(
                "names office {}, but casemesh.toml says {office}",
                id.office()
            ),
        ),
        Err(e) => r.add(Level::Problem, item, e.to_string()),
    }
}

fn check_certificates(paths: &Paths, office: &str, r: &mut Report) {
    let Some(ca) = cert(&paths.office_ca(), "office-ca.pem", r) else {
        return;
    };
    check_expiry("the office CA certificate (office-ca.pem)", &ca, r);
    check_pair("office-ca.pem", &paths.office_key(), &ca, r);
    for (item, cert_path, key_path) in [
        (
            "the node's certificate (node-cert.pem)",
            paths.node_cert(),
            paths.node_key(),
        ),
        (
            "the first admin's certificate (admin/admin-cert.pem)",
            paths.admin_cert(),
            paths.admin_key(),
        ),
    ] {
        let Some(der) = cert(&cert_path, item, r) else {
            continue;
        };
        check_expiry(item, &der, r);
        check_office(item, &der, office, r);
        check_issued(item, &der, &ca, r);
        check_pair(item, &key_path, &der, r);
    }
}

async fn check_listen(config: &Config, r: &mut Report) {
    let item = format!("listen address {}", config.listen);
    match tokio::net::TcpListener::bind(config.listen).await {
        Ok(_) => r.add(Level::Ok, item, "free to listen on"),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => r.add(
            Level::Warning,
            item,
            "in use: by this node if it is running, otherwise by another program",
        ),
        Err(e) => r.add(Level::Problem, item, format!("cannot be listened on: {e}")),
    }
}

pub async fn run(data: &Path, json: bool) -> Result<()> {
    let paths = Paths::new(data);
    let mut r = Report::default();
    // Not a data directory at all: say so as `--data` would anywhere else.
    let config = Config::load(&paths.config())?;
    r.add(
        Level::Ok,
        "casemesh.toml",
        format!("office {}, listening on {}", config.office, config.listen),
    );
    check_layout(data, &mut r);
    check_certificates(&paths, &config.office, &mut r);
    check_users_and_peers(&paths, &config, &mut r);
    check_listen(&config, &mut r).await;

    let problems = r.problems();
    if json {
        super::json::print(&json!({
            "data_dir": data.display().to_string(),
            "office": config.office,
            "ok": problems == 0,
            "findings": r.findings.iter().map(|f| json!({
                "level": f.level.word(),
                "item": f.item,
                "message": f.message,
            })).collect::<Vec<_>>(),
        }));
    } else {
        for f in &r.findings {
            println!("{:<8} {}: {}", f.level.word(), f.item, f.message);
        }
    }
    if problems > 0 {
        return Err(
            CliError::Failed(format!("{problems} problem(s) in {}", data.display())).into(),
        );
    }
    Ok(())
}
