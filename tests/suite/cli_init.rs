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
    for umask in ["077", "000", "022"] {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("office");
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
    }
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
