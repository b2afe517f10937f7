//! `casemesh init`: creating an office's data directory.
//!
//! Everything is written into a temporary directory and moved into place at
//! the end, so a failed init leaves nothing behind and an existing office is
//! never touched. A data directory that does not exist yet is assembled
//! beside its place and renamed there whole. One that exists (it must be
//! empty) is assembled inside itself and its entries moved up, because it may
//! be a mount point — a container's volume, a disk of its own — which
//! rename(2) cannot replace (EBUSY), and whose parent the user running init
//! may not be allowed to write (a container's non-root user and /var/lib).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::{Config, Paths};
use crate::domain::{OfficeId, Role, UserName};
use crate::identity::{Fingerprint, OfficeCa};
use crate::store::{Store, StoreOptions};

/// Why an office could not be created.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0} already holds a casemesh office (or other files); refusing to touch it")]
    AlreadyExists(PathBuf),
    #[error("host {0:?} is neither a DNS name (letters, digits, '-' and '.') nor an IP address")]
    BadHost(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Id(#[from] crate::domain::IdError),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Service(#[from] crate::error::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SetupError + '_ {
    move |source| SetupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What `init` made.
#[derive(Debug, Clone)]
pub struct InitReport {
    pub data_dir: PathBuf,
    pub fingerprint: Fingerprint,
    pub config: Config,
}

/// Name of the first admin user.
pub const FIRST_ADMIN: &str = "admin";

/// Checks a name for the node's certificate: a DNS name (RFC 1123 labels
/// of letters, digits and '-', joined by '.') or an IP address.
pub fn check_host(host: &str) -> Result<(), SetupError> {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.len() <= 253 && name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(SetupError::BadHost(host.to_owned()))
    }
}

/// Writes `contents` to a new file with exactly `mode`, whatever the umask.
pub fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), SetupError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    // The umask may have taken bits away from the mode asked for.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io(path))?;
    f.write_all(contents).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), SetupError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))
}

/// Moves every entry of `from` into `to` (a directory on the same file
/// system), `casemesh.toml` last: a directory that has one holds a whole
/// office. If a move fails, what was moved already is removed again, so
/// `to` is left as empty as it was.
fn move_entries(from: &Path, to: &Path) -> Result<(), SetupError> {
    let mut names = std::fs::read_dir(from)
        .map_err(io(from))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io(from))?;
    let config = Paths::new(from).config();
    // `false` sorts first: every other entry, then the configuration.
    names.sort_by_key(|n| Some(n.as_os_str()) == config.file_name());
    let mut moved = Vec::new();
    for name in names {
        let target = to.join(&name);
        if let Err(e) = std::fs::rename(from.join(&name), &target) {
            for done in moved {
                let _ = std::fs::remove_dir_all(&done).or_else(|_| std::fs::remove_file(&done));
            }
            return Err(io(&target)(e));
        }
        moved.push(target);
    }
    Ok(())
}

/// Creates a directory (and any missing parents). A directory it creates
/// gets exactly `mode`, whatever the umask; one that exists is left as it
/// is.
pub fn make_dir(path: &Path, mode: u32) -> Result<(), SetupError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if path.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(io(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))
}

pub fn init(
    data_dir: &Path,
    office: &OfficeId,
    hosts: &[String],
    listen: SocketAddr,
) -> Result<InitReport, SetupError> {
    for host in hosts {
        check_host(host)?;
    }
    let existing = data_dir.exists();
    let build_in = if existing {
        let empty = std::fs::read_dir(data_dir)
            .map_err(io(data_dir))?
            .next()
            .is_none();
        if !empty {
            return Err(SetupError::AlreadyExists(data_dir.to_owned()));
        }
        // The mode the directory would have been renamed into place with;
        // set first, so that a directory its user may not change fails
        // before anything is written.
        set_mode(data_dir, 0o700)?;
        data_dir.to_owned()
    } else {
        let parent = match data_dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        make_dir(&parent, 0o755)?;
        parent
    };
    let tmp = tempfile::Builder::new()
        .prefix(".casemesh-init-")
        .tempdir_in(&build_in)
        .map_err(io(&build_in))?;
    let paths = Paths::new(tmp.path());
    let admin = UserName::parse(FIRST_ADMIN)?;
    let (_, m) = OfficeCa::create(office, hosts, &admin)?;

    make_dir(&paths.private_dir(), 0o700)?;
    make_dir(&paths.admin_dir(), 0o700)?;
    make_dir(&paths.blobs(), 0o700)?;
    make_dir(&paths.staging(), 0o700)?;
    make_dir(&paths.search(), 0o700)?;
    write_new(&paths.office_key(), m.office_key_pem.as_bytes(), 0o600)?;
    write_new(&paths.node_key(), m.node_key_pem.as_bytes(), 0o600)?;
    write_new(&paths.admin_key(), m.admin_key_pem.as_bytes(), 0o600)?;
    write_new(&paths.office_ca(), m.ca_cert_pem.as_bytes(), 0o644)?;
    write_new(&paths.node_cert(), m.node_cert_pem.as_bytes(), 0o644)?;
    write_new(&paths.admin_cert(), m.admin_cert_pem.as_bytes(), 0o644)?;
    let config = Config::new(office, listen);
    {
        let store = Store::open(
            &paths.store(),
            office.as_str(),
            &StoreOptions {
                reserve_bytes: 0,
                ..StoreOptions::from(&config.store)
            },
        )?;
        let entry = crate::domain::audit::Draft::new(
            crate::domain::audit::Actor::node(office.as_str()),
            "setup.init",
            crate::domain::audit::Target::detail(format!("office created; first admin {admin}")),
            crate::domain::audit::Outcome::ok(),
        );
        crate::service::users::record_issued(
            &store,
            admin.clone(),
            Role::Admin,
            &m.admin_cert_pem,
            &[entry],
        )?;
        store.flush_now()?;
    }
    write_new(&paths.config(), config.to_toml().as_bytes(), 0o644)?;
    // The store holds records in the clear: only the node's user may enter
    // the data directory and the store, whatever the umask.
    for dir in [paths.store(), tmp.path().to_owned()] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io(&dir))?;
    }

    if existing {
        move_entries(tmp.path(), data_dir)?;
        let built = tmp.path().to_owned();
        tmp.close().map_err(io(&built))?;
    } else {
        // rename(2) puts the whole directory in place atomically.
        std::fs::rename(tmp.path(), data_dir).map_err(io(data_dir))?;
        let _ = tmp.keep();
    }
    Ok(InitReport {
        data_dir: data_dir.to_owned(),
        fingerprint: m.fingerprint,
        config,
    })
}
