//! `casemesh demo`, the README's first command, as a newcomer runs it: it
//! finishes with every step checked, and leaves no private keys behind,
//! also when kept running and stopped with Ctrl-C.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::bin::{BIN, ChildGuard, run_bounded};
use super::cluster::eventually;

fn demo(tmpdir: &std::path::Path, keep: bool) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("demo");
    if keep {
        cmd.arg("--keep");
    }
    cmd.env("TMPDIR", tmpdir).env("RUST_LOG", "warn");
    cmd
}

fn leftovers(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[tokio::test]
async fn the_demo_checks_every_step_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_bounded(&mut demo(tmp.path(), false), Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("demo finished: every step checked out"),
        "{stdout}"
    );
    assert!(stdout.contains("(confirmed by nyc-da)"), "{stdout}");
    assert_eq!(leftovers(tmp.path()), Vec::<std::path::PathBuf>::new());
}

#[tokio::test]
async fn a_kept_demo_stopped_with_ctrl_c_removes_its_directory_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = ChildGuard(
        demo(tmp.path(), true)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start casemesh demo"),
    );
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        let stdout = child.0.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        })
    };
    let kept = eventually(
        Duration::from_secs(60),
        "the demo to keep its nodes",
        || {
            let found = lines.lock().unwrap().iter().find_map(|l| {
                let rest = l.strip_prefix("their data, private keys included, is in ")?;
                Some(rest.split_once(';')?.0.to_owned())
            });
            std::future::ready(found)
        },
    )
    .await;
    let kept = std::path::PathBuf::from(kept);
    assert!(kept.join("phila-da/private/office-key.pem").exists());
    let status = Command::new("kill")
        .args(["-INT", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = eventually(Duration::from_secs(30), "the demo to stop", || {
        std::future::ready(child.0.try_wait().unwrap())
    })
    .await;
    reader.join().unwrap();
    let lines = lines.lock().unwrap().join("\n");
    assert!(exit.success(), "{lines}");
    assert!(
        lines.contains(&format!("stopped the nodes and removed {}", kept.display())),
        "{lines}"
    );
    assert!(!kept.exists());
    assert_eq!(leftovers(tmp.path()), Vec::<std::path::PathBuf>::new());
}
