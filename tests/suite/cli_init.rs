//! `casemesh init` as documented: the modes `docs/operating.md` lists,
//! whatever the umask; host names checked before anything is written; and
//! the configuration written the way the example configuration writes it.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use super::bin::{BIN, fails, run_bounded};

/// `(path under the data directory, mode)` for every row of the table in
/// `docs/operating.md`, plus the data directory itself (`.`).
fn documented_modes() -> Vec<(String, u32)> {
    let doc = include_str!("../../docs/operating.md");
    let mut modes = vec![(".".to_owned(), 0o700)];
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let [_, path, _, mode, ..] = cells[..] else {
            continue;
        };
        let (Some(path), Ok(mode)) = (
            path.strip_prefix('`').and_then(|p| p.strip_suffix('`')),
            u32::from_str_radix(mode, 8),
        ) else {
            continue;
        };
        modes.push((path.trim_end_matches('/').to_owned(), mode));
    }
    modes
}

#[test]
fn init_sets_the_documented_modes_whatever_the_umask() {
    let documented = documented_modes();
    assert!(documented.len() >= 11, "{documented:?}");
    // A directory that does not exist yet, and one that exists, empty and
    // open to all (as a volume may be): init assembles the office beside
    // the first and inside the second.
    for (umask, existing) in [
        ("077", false),
        ("000", false),
        ("022", false),
        ("022", true),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("office");
        if existing {
            std::fs::create_dir(&data).unwrap();
            std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let mut init = Command::new("sh");
        init.arg("-c")
            .arg(format!(
                "umask {umask} && exec \"$0\" init --office phila-da --data \"$1\"",
            ))
            .arg(BIN)
            .arg(&data)
            .env("RUST_LOG", "warn");
        let out = run_bounded(&mut init, std::time::Duration::from_secs(60));
        assert!(out.status.success(), "init under umask {umask}: {out:?}");
        for (path, mode) in &documented {
            let meta = std::fs::metadata(data.join(path))
                .unwrap_or_else(|e| panic!("{path} (umask {umask}): {e}"));
            assert_eq!(
                meta.permissions().mode() & 0o777,
                *mode,
                "{path} under umask {umask}: {:o}",
                meta.permissions().mode() & 0o777
            );
        }
        let config = std::fs::read_to_string(data.join("casemesh.toml")).unwrap();
        assert!(
            config.contains("unreferenced_grace = \"24h\""),
            "as deploy/casemesh.example.toml writes it:\n{config}"
        );
        let left: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .chain(std::fs::read_dir(&data).unwrap())
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(".casemesh-init-"))
            .collect();
        assert!(
            left.is_empty(),
            "init left its temporary directory: {left:?}"
        );
    }
}

/// A container's volume is an empty mount point, and rename(2) cannot
/// replace a mount point (init once failed there with EBUSY, "Device or
/// resource busy"): init builds the office inside it instead. Mounts a
/// tmpfs, so it needs root; skipped otherwise, unless
/// CASEMESH_REQUIRE_TMPFS says it must run.
#[test]
fn init_creates_an_office_in_an_empty_mount_point() {
    let test = "init_creates_an_office_in_an_empty_mount_point";
    let tmp = tempfile::tempdir().unwrap();
    let volume = tmp.path().join("volume");
    std::fs::create_dir(&volume).unwrap();
    let mount = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&volume)
        .output()
        .expect("run mount");
    if !mount.status.success() {
        let why = String::from_utf8_lossy(&mount.stderr);
        assert!(
            std::env::var_os("CASEMESH_REQUIRE_TMPFS").is_none(),
            "{test}: cannot mount a tmpfs ({why})"
        );
        eprintln!("SKIPPED {test}: cannot mount a tmpfs here ({})", why.trim());
        return;
    }
    /// Unmounts the tmpfs however the test ends.
    struct Unmount<'a>(&'a std::path::Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&volume);
    let d = volume.to_str().unwrap();
    let out = super::bin::ok(&[
        "init",
        "--office",
        "phila-da",
        "--data",
        d,
        "--host",
        "phila-da",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(out.contains("office fingerprint: sha256:"), "{out}");
    let mode = std::fs::metadata(&volume).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o700,
        "the mount point is the data directory: {mode:o}"
    );
    let names: std::collections::BTreeSet<String> = std::fs::read_dir(&volume)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "admin",
            "blobs",
            "casemesh.toml",
            "node-cert.pem",
            "office-ca.pem",
            "private",
            "search",
            "staging",
            "store"
        ]
        .map(str::to_owned)
        .into(),
        "the office, and nothing else, in the volume"
    );
    super::bin::ok(&["check-config", "--data", d]);
    // Run again on the volume that now holds an office: refused, untouched.
    let again = fails(1, &["init", "--office", "phila-da", "--data", d]);
    assert!(again.contains("already holds a casemesh office"), "{again}");
}

#[test]
fn a_host_that_is_not_a_name_or_an_address_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("office");
    let d = data.to_str().unwrap();
    for bad in ["bad host!", "-lead.example", "a..b", "x_y.example", ""] {
        let host = format!("--host={bad}");
        let text = fails(2, &["init", "--office", "phila-da", "--data", d, &host]);
        assert!(text.contains("is neither a DNS name"), "{bad:?}: {text}");
        assert!(!data.exists(), "{bad:?} wrote nothing");
    }
    super::bin::ok(&[
        "init",
        "--office",
        "phila-da",
        "--data",
        d,
        "--host",
        "casemesh.phila-da.example",
        "--host",
        "10.0.0.7",
        "--host",
        "fd00::7",
    ]);
}
