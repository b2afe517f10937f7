//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and
//! generates the tonic servers and clients. The descriptor set is also written
//! to `OUT_DIR` so the node can serve gRPC reflection. Also records the git
//! commit the binary is built from, for `casemesh --version`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = [
        "proto/casemesh/v1/types.proto",
        "proto/casemesh/v1/records.proto",
        "proto/casemesh/v1/admin.proto",
        "proto/casemesh/v1/replication.proto",
    ];
    let fds = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("casemesh_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    record_commit();
    Ok(())
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Sets `CASEMESH_COMMIT` to the commit checked out (marked `-dirty` when
/// tracked files differ from it), or to a sentence saying there was none.
/// Re-runs when the checked-out commit moves or the sources change; only
/// paths that exist are watched (cargo takes a missing one as changed, and
/// would rebuild every time).
fn record_commit() {
    for watched in ["src", "Cargo.toml", "build.rs"] {
        println!("cargo:rerun-if-changed={watched}");
    }
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        let dir = Path::new(&dir);
        // In a linked worktree HEAD is in the worktree's own git dir, but
        // branches and packed-refs are in the repository's common one.
        let common = git(&["rev-parse", "--git-common-dir"])
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.to_owned());
        let mut refs = vec![dir.join("HEAD"), common.join("packed-refs")];
        if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
            refs.push(common.join(reference));
        }
        for path in refs.iter().filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    let text = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(c) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some();
            format!("commit {c}{}", if dirty { "-dirty" } else { "" })
        }
        None => "built outside a git checkout".to_owned(),
    };
    println!("cargo:rustc-env=CASEMESH_COMMIT={text}");
}
