//! The allocator of casemesh processes: mimalloc, and the two options it
//! needs to give memory back.
//!
//! Why mimalloc: sled copies tree nodes on every change, and glibc's
//! allocator spent a fifth of a backfill's CPU on that churn (BENCHMARKS.md).
//!
//! Why the options: with its defaults mimalloc keeps freed pages for
//! 100 ms and asks for transparent huge pages, and under sled's churn that
//! added up. A process that streamed 256 MiB into sled in 8 KiB chunks
//! grew by 122 MiB, against 49 MiB with `MIMALLOC_PURGE_DELAY=0` and
//! `MIMALLOC_ALLOW_THP=0` (and 46 MiB with glibc, which then never gave
//! back what reading the file took).
//!
//! mimalloc reads its options from the environment when the process starts,
//! before `main`, and setting them later needs `unsafe` FFI, which this
//! crate forbids. So a long-running command starts itself again, in place
//! (same process id, same arguments), with the options set:
//! [`restart_with_options`]. An option already in the environment is left
//! as it is, so an operator can still choose.

use std::ffi::OsString;

/// The global allocator every casemesh binary (the node, the bench)
/// declares.
pub type Allocator = mimalloc::MiMalloc;

/// The options, as environment variables, and their values.
pub const OPTIONS: [(&str, &str); 2] = [("MIMALLOC_PURGE_DELAY", "0"), ("MIMALLOC_ALLOW_THP", "0")];

/// The options missing from an environment.
fn missing(env: impl Fn(&str) -> Option<OsString>) -> Vec<(&'static str, &'static str)> {
    OPTIONS
        .iter()
        .copied()
        .filter(|(name, _)| env(name).is_none())
        .collect()
}

/// Replaces this process with a fresh run of the same program and
/// arguments, with [`OPTIONS`] in its environment. Returns `Ok` when they
/// are all set already (nothing to do), and the error when `exec` failed;
/// then the process goes on with mimalloc's defaults, which work but hold
/// more memory.
#[cfg(target_os = "linux")]
pub fn restart_with_options() -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let missing = missing(|name| std::env::var_os(name));
    if missing.is_empty() {
        return Ok(());
    }
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "casemesh".into());
    // /proc/self/exe is the running binary even if its file was replaced
    // (an upgrade in place) since it started.
    Err(std::process::Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .envs(missing)
        .exec())
}

/// Elsewhere the options are left to the environment.
#[cfg(not(target_os = "linux"))]
pub fn restart_with_options() -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_options_not_already_chosen_are_added() {
        assert_eq!(missing(|_| None), OPTIONS.to_vec());
        assert!(missing(|_| Some("1".into())).is_empty());
        assert_eq!(
            missing(|name| (name == "MIMALLOC_PURGE_DELAY").then(|| "5".into())),
            vec![("MIMALLOC_ALLOW_THP", "0")]
        );
    }
}
