//! Ctrl-C as an admin presses it: `casemesh record put --attach` runs on a
//! terminal (a pseudo-terminal made by `script`, so that the progress line
//! shows and ^C reaches it through the terminal as a keypress would).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::bin::{BIN, ChildGuard, init_office, json, serve};
use super::cluster::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_an_upload_ends_the_progress_line_and_stores_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _) = init_office(&tmp);
    let d = data.to_str().unwrap();
    let _server = serve(&data).await;
    // Sparse: long to upload, nothing on disk.
    let big = tmp.path().join("bodycam.mp4");
    std::fs::File::create(&big)
        .and_then(|f| f.set_len(8 << 30))
        .unwrap();

    let put = format!(
        "{BIN} record put --data {d} --collection 2026-0042 --kind evidence --title Bodycam --attach {}",
        big.display()
    );
    let mut terminal = ChildGuard(
        Command::new("script")
            .args([
                "--quiet",
                "--flush",
                "--return",
                "--command",
                &put,
                "/dev/null",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("script(1) from util-linux runs the command on a terminal"),
    );
    let screen = Arc::new(Mutex::new(Vec::new()));
    let mut pty_out = terminal.0.stdout.take().unwrap();
    let reader = {
        let screen = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pty_out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                screen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    let shown = || String::from_utf8_lossy(&screen.lock().unwrap()).into_owned();
    eventually(
        Duration::from_secs(30),
        "the upload's progress line",
        || std::future::ready(shown().contains("bodycam.mp4  ").then_some(())),
    )
    .await;

    terminal
        .0
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"\x03")
        .unwrap();
    let status = eventually(Duration::from_secs(30), "casemesh to stop", || {
        std::future::ready(terminal.0.try_wait().unwrap())
    })
    .await;
    reader.join().unwrap();
    let screen = shown();
    assert_eq!(status.code(), Some(130), "{screen:?}");
    let (before, after) = screen
        .split_once("error: interrupted; nothing stored")
        .unwrap_or_else(|| panic!("no interruption message: {screen:?}"));
    assert!(
        before.ends_with("\r\n"),
        "the progress line is ended before the message: {screen:?}"
    );
    assert_eq!(after.matches("\r\n").count(), 1, "one line: {after:?}");
    let records = json(&["record", "list", "--data", d, "--json"]);
    assert_eq!(records, serde_json::json!([]), "no record was written");
}
