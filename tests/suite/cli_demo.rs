//! `casemesh demo`, the README's first command, as a newcomer runs it: it
//! finishes with every step checked, and leaves no private keys behind,
//! also when kept running and stopped with Ctrl-C.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::bin::{BIN, ChildGuard, casemesh_env, ok, run_bounded};
use super::cluster::eventually;
use super::webkit::{http_get, https_get, parse_metrics, value};

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
    // Comparing notes: nyc-da's search by badge finds its own record and
    // phila-da's shared one side by side, then only its own.
    let search = stdout
        .split("── 6. ")
        .nth(1)
        .and_then(|s| s.split("── 7. ").next())
        .unwrap_or_else(|| panic!("a search step:\n{stdout}"));
    for row in [
        "nyc-da    nyc-2026-311  Canal Street raid  badge=4471",
        "phila-da  2026-0042     Badge number seen  badge@officer-involved=#44-71",
    ] {
        assert!(search.contains(row), "{row:?} in:\n{search}");
    }
    assert!(
        stdout.contains("nyc-da's search for badge 4471 now finds only its own record"),
        "{stdout}"
    );
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
    // What it printed about metrics and the status page works as printed.
    let printed = lines.lock().unwrap().clone();
    let (metrics, page) = printed
        .iter()
        .find_map(|l| {
            let rest = l.trim().strip_prefix("phila-da: metrics at http://")?;
            let (metrics, rest) = rest.split_once("/metrics, status page at https://")?;
            Some((
                metrics.parse().ok()?,
                rest.trim_end_matches('/').parse().ok()?,
            ))
        })
        .unwrap_or_else(|| panic!("the demo names phila-da's metrics and page:\n{printed:?}"));
    let (code, body) = http_get(metrics, "/metrics").await;
    assert_eq!(code, 200, "{body}");
    assert!(
        value(
            &parse_metrics(&body),
            "casemesh_records",
            &[("origin", "phila-da")]
        )
        .unwrap_or(0.0)
            > 0.0
    );
    let healthy = ok(&["healthcheck", "--addr", &metrics.to_string()]);
    assert_eq!(healthy.trim(), "serving");
    // The certificate the hint says to make opens the page.
    assert!(
        printed
            .iter()
            .any(|l| l.contains("casemesh user issue --role auditor --p12")),
        "{printed:?}"
    );
    let certs = tmp.path().join("auditor");
    let phila = kept.join("phila-da");
    let out = casemesh_env(
        &[
            "user",
            "issue",
            "--name",
            "reviewer",
            "--role",
            "auditor",
            "--p12",
            "--out",
            certs.to_str().unwrap(),
            "--data",
            phila.to_str().unwrap(),
        ],
        &[("CASEMESH_P12_PASSWORD", Some("demo password"))],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(certs.join("reviewer.p12").exists());
    let read = |f: &str| std::fs::read(certs.join(f)).unwrap();
    let (code, html) = https_get(
        page,
        "/",
        Some((&read("reviewer-cert.pem"), &read("reviewer-key.pem"))),
        &read("ca.pem"),
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    assert!(
        html.contains("casemesh — phila-da") && html.contains("nyc-da"),
        "{html}"
    );
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
    let left: Vec<_> = leftovers(tmp.path())
        .into_iter()
        .filter(|p| p != &certs)
        .collect();
    assert_eq!(left, Vec::<std::path::PathBuf>::new());
}
