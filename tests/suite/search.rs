//! Comparing notes: `casemesh search` finds what an office holds — its
//! own records and the replicas peers shared with it, never anything
//! else — by subject and by words, through the binary as a prosecutor
//! types it; every search is in the audit log; a revoked replica's words
//! leave the index files before the purge is acknowledged; a lost index
//! is rebuilt from the store, and `search --reindex` rebuilds it.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::bin::{casemesh, fails, init_office, json, ok, serve};
use super::cluster::{TestCluster, eventually};

const DEADLINE: Duration = Duration::from_secs(30);

/// `casemesh ARGS --data DATA`, off the test's runtime (which serves the
/// nodes), expecting success.
async fn cli(data: &Path, args: &[&str]) -> String {
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    args.extend(["--data".into(), data.to_str().unwrap().into()]);
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&args)
    })
    .await
    .unwrap()
}

async fn cli_json(data: &Path, args: &[&str]) -> Value {
    let mut args: Vec<&str> = args.to_vec();
    args.push("--json");
    serde_json::from_str(&cli(data, &args).await).unwrap()
}

/// `casemesh ARGS --data DATA`, expecting exit `code`; what it printed on
/// stderr.
async fn cli_fails(data: &Path, code: i32, args: &[&str]) -> String {
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    args.extend(["--data".into(), data.to_str().unwrap().into()]);
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails(code, &args)
    })
    .await
    .unwrap()
}

/// `record put` of a record naming `subject`; its id.
async fn put(data: &Path, collection: &str, title: &str, body: &str, subject: &str) -> String {
    let id = cli(
        data,
        &[
            "record",
            "put",
            "--collection",
            collection,
            "--kind",
            "incident-report",
            "--title",
            title,
            "--body",
            body,
            "--subject",
            subject,
        ],
    )
    .await;
    id.trim().to_owned()
}

/// Every file of the index directory, read whole.
fn index_bytes(data: &Path) -> Vec<Vec<u8>> {
    let dir = data.join("search");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect()
}

fn in_index(data: &Path, word: &str) -> bool {
    index_bytes(data)
        .iter()
        .any(|f| f.windows(word.len()).any(|w| w == word.as_bytes()))
}

fn origins_and_ids(found: &Value) -> Vec<(String, String)> {
    found["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let r = &h["record"];
            (
                r["origin"].as_str().unwrap().to_owned(),
                r["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_office_finds_its_own_and_shared_records_about_an_agent_and_nothing_else() {
    let mut c = TestCluster::start(&["nyc-da", "phila-da"]).await;
    c.pin_all().await;
    let nyc = c.nodes[0].dir.clone();
    let phila = c.nodes[1].dir.clone();

    let help = cli(&nyc, &["search", "--help"]).await;
    assert!(
        help.contains("--subject <KIND=VALUE>") && help.contains("--reindex"),
        "{help}"
    );
    let own = put(
        &nyc,
        "2026-0042",
        "Canal Street raid",
        "grey unmarked SUV at the corner",
        "badge=4471",
    )
    .await;
    let shared = put(
        &phila,
        "2026-0077",
        "Traffic stop qjxvzkwy",
        "the agent showed badge qjxvzkwy",
        "badge=#44-71",
    )
    .await;
    let withheld = put(
        &phila,
        "2026-0099",
        "Not shared",
        "phila-da keeps this one",
        "badge=4471",
    )
    .await;
    let granted = cli(
        &phila,
        &[
            "share",
            "grant",
            "--peer",
            "nyc-da",
            "--collection",
            "2026-0077",
        ],
    )
    .await;
    let grant = granted.trim().to_owned();
    eventually(DEADLINE, "nyc-da to hold phila-da's shared record", || {
        let nyc = nyc.clone();
        let shared = shared.clone();
        async move {
            let out = tokio::task::spawn_blocking(move || {
                casemesh(&["record", "get", &shared, "--data", nyc.to_str().unwrap()])
            })
            .await
            .unwrap();
            out.status.success().then_some(())
        }
    })
    .await;

    // By badge, however it was written: nyc-da's own record and
    // phila-da's shared one side by side; never the one not shared.
    let text = cli(&nyc, &["search", "--subject", "badge=4471"]).await;
    assert!(text.starts_with("2 found; showing 1 to 2"), "{text}");
    for line in [format!("phila-da  {shared}"), format!("nyc-da    {own}")] {
        assert!(text.contains(&line), "{line:?} in:\n{text}");
    }
    assert!(text.contains("badge=#44-71") && text.contains("badge=4471"));
    assert!(!text.contains(&withheld), "{text}");
    let found = cli_json(&nyc, &["search", "--subject", "badge=44 71"]).await;
    assert_eq!(found["total"], 2);
    assert_eq!(found["offset"], 0);
    let mut hits = origins_and_ids(&found);
    hits.sort();
    assert_eq!(
        hits,
        [
            ("nyc-da".into(), own.clone()),
            ("phila-da".into(), shared.clone())
        ]
    );
    let hit = &found["hits"][0];
    assert!(hit["score"].is_number(), "{hit}");
    assert_eq!(hit["record"]["body"], Value::Null, "hits carry no body");
    // phila-da's own search sees both of its records, not nyc-da's.
    let theirs = cli_json(&phila, &["search", "--subject", "badge=4471"]).await;
    let mut hits = origins_and_ids(&theirs);
    hits.sort();
    let mut expected = vec![
        ("phila-da".to_owned(), shared.clone()),
        ("phila-da".to_owned(), withheld.clone()),
    ];
    expected.sort();
    assert_eq!(hits, expected);

    // By words, and narrowed by filters.
    let by_words = cli_json(&nyc, &["search", "grey", "SUV"]).await;
    assert_eq!(origins_and_ids(&by_words), [("nyc-da".into(), own.clone())]);
    let by_origin = cli_json(
        &nyc,
        &["search", "--subject", "badge=4471", "--origin", "phila-da"],
    )
    .await;
    assert_eq!(
        origins_and_ids(&by_origin),
        [("phila-da".into(), shared.clone())]
    );
    let paged = cli(&nyc, &["search", "--subject", "badge=4471", "--limit", "1"]).await;
    assert!(
        paged.starts_with("2 found; showing 1 to 1") && paged.contains("more: --offset 1"),
        "{paged}"
    );
    assert_eq!(
        cli(&nyc, &["search", "--subject", "badge=9999"])
            .await
            .trim(),
        "nothing found"
    );
    // After `--`, a word may be excluded, as the docs show.
    let d = nyc.to_str().unwrap().to_owned();
    let (excluded, kept) = tokio::task::spawn_blocking(move || {
        (
            ok(&["search", "--data", &d, "--json", "--", "grey", "-suv"]),
            ok(&["search", "--data", &d, "--json", "--", "grey", "-traffic"]),
        )
    })
    .await
    .unwrap();
    let excluded: Value = serde_json::from_str(&excluded).unwrap();
    let kept: Value = serde_json::from_str(&kept).unwrap();
    assert_eq!(excluded["total"], 0, "{excluded}");
    assert_eq!(origins_and_ids(&kept), [("nyc-da".into(), own.clone())]);

    // Bad input: a precise message, and nothing found or changed.
    let err = cli_fails(&nyc, 1, &["search", "--limit", "500"]).await;
    assert!(
        err.contains("limit 500 is over 200") && err.contains("(INVALID_ARGUMENT)"),
        "{err}"
    );
    let err = cli_fails(&nyc, 1, &["search", "title:("]).await;
    assert!(
        err.contains("do not parse") && err.contains("(INVALID_ARGUMENT)"),
        "{err}"
    );
    let err = cli_fails(&nyc, 1, &["search", "body:[a TO z]"]).await;
    assert!(
        err.contains("ranges, sets and wildcards are not supported")
            && err.contains("(INVALID_ARGUMENT)"),
        "{err}"
    );
    let err = cli_fails(&nyc, 1, &["search", "--subject", "badge=##"]).await;
    assert!(err.contains("no letters or digits"), "{err}");
    let err = cli_fails(&nyc, 2, &["search", "--limit", "0"]).await;
    assert!(err.contains("--limit must be at least 1"), "{err}");
    let err = cli_fails(&nyc, 2, &["search", "--from", "yesterday"]).await;
    assert!(err.contains("is not an RFC 3339 time"), "{err}");
    let err = cli_fails(&nyc, 2, &["search", "--subject", "badge"]).await;
    assert!(err.contains("is not a subject"), "{err}");
    let err = cli_fails(&nyc, 2, &["search", "--reindex", "--subject", "badge=1"]).await;
    assert!(err.contains("cannot be used with"), "{err}");

    // Every search is an audited read: who, what, how many, which records.
    let entries = cli_json(
        &nyc,
        &["audit", "list", "--action", "Records.Search", "--reverse"],
    )
    .await;
    let entries = entries.as_array().unwrap();
    let by_badge = entries
        .iter()
        .find(|e| e["detail"] == "search subject badge=44 71: 2 of 2 found")
        .unwrap_or_else(|| panic!("the badge search in {entries:#?}"));
    assert_eq!(by_badge["actor"]["name"], "admin");
    let mut records: Vec<&str> = by_badge["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    records.sort();
    let mut want = [own.as_str(), shared.as_str()];
    want.sort();
    assert_eq!(records, want);
    assert!(
        entries
            .iter()
            .any(|e| e["outcome_code"] == "INVALID_ARGUMENT"),
        "a refused search is logged too"
    );

    // Revoked: the replica's words leave nyc-da's index files, not only
    // its answers, before phila-da sees the purge acknowledged.
    assert!(in_index(&nyc, "qjxvzkwy"), "control: the word is indexed");
    cli(&phila, &["share", "revoke", &grant]).await;
    eventually(DEADLINE, "phila-da to see the purge acknowledged", || {
        let phila = phila.clone();
        let grant = grant.clone();
        async move {
            let grants = cli_json(&phila, &["share", "list"]).await;
            grants
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["id"] == grant.as_str() && g["purge"] == "confirmed")
                .then_some(())
        }
    })
    .await;
    for word in ["qjxvzkwy", shared.as_str()] {
        assert!(!in_index(&nyc, word), "{word} is still in an index file");
    }
    let after = cli_json(&nyc, &["search", "--subject", "badge=4471"]).await;
    assert_eq!(origins_and_ids(&after), [("nyc-da".into(), own.clone())]);
    assert_eq!(
        cli(&nyc, &["search", "qjxvzkwy"]).await.trim(),
        "nothing found"
    );
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_index_is_rebuilt_from_the_store_and_reindex_rebuilds_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _) = init_office(&tmp);
    let d = data.to_str().unwrap();
    let server = serve(&data).await;
    for n in 0..3 {
        put(
            &data,
            "2026-0042",
            &format!("report {n}"),
            "seen on Canal Street",
            "plate=7XKD 203",
        )
        .await;
    }
    // Killed at once: every acknowledged write is found after the restart
    // (its queue entry was written with it), though no indexer ran.
    server.process.kill().unwrap();
    let server = serve(&data).await;
    let found = json(&[
        "search",
        "--subject",
        "plate=7xkd203",
        "--json",
        "--data",
        d,
    ]);
    assert_eq!(found["total"], 3, "{found}");
    drop(server);

    // It holds the records' text: the node's user alone may read it.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data.join("search"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);

    // The index directory lost while stopped: rebuilt at start.
    std::fs::remove_dir_all(data.join("search")).unwrap();
    let server = serve(&data).await;
    let found = json(&["search", "canal", "street", "--json", "--data", d]);
    assert_eq!(found["total"], 3, "{found}");

    // `status` says where the index stands.
    let status = json(&["status", "--json", "--data", d]);
    assert_eq!(status["search"]["state"], "complete", "{status}");
    assert_eq!(status["search"]["records"], 3, "{status}");
    let text = ok(&["status", "--data", d]);
    assert!(
        text.contains("search index: 3 records, 0 changes waiting"),
        "{text}"
    );

    let out = ok(&["search", "--reindex", "--data", d]);
    assert!(
        out.starts_with("rebuilt the search index: 3 records in "),
        "{out}"
    );
    let done = json(&["search", "--reindex", "--json", "--data", d]);
    assert_eq!(done["records"], 3);
    assert!(done["took_ms"].is_u64(), "{done}");
    let entries = json(&[
        "audit",
        "list",
        "--action",
        "Admin.ReindexSearch",
        "--json",
        "--data",
        d,
    ]);
    assert_eq!(entries.as_array().unwrap().len(), 2, "{entries:#}");
    let found = json(&[
        "search",
        "--subject",
        "plate=7XKD203",
        "--json",
        "--data",
        d,
    ]);
    assert_eq!(found["total"], 3, "{found}");
    drop(server);

    // Turned off in casemesh.toml: the index is deleted (it holds the
    // records' text) and searches are refused; turned on again, rebuilt.
    let config = data.join("casemesh.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let on = "[search]\nenabled = true";
    assert!(text.contains(on), "init writes it:\n{text}");
    std::fs::write(&config, text.replace(on, "[search]\nenabled = false")).unwrap();
    let server = serve(&data).await;
    assert!(!data.join("search").exists(), "the index is deleted");
    let status = json(&["status", "--json", "--data", d]);
    assert_eq!(status["search"]["state"], "off", "{status}");
    let shown = ok(&["status", "--data", d]);
    assert!(
        shown.contains("search index: turned off ([search] enabled = false)"),
        "{shown}"
    );
    let by_plate = ["search", "--subject", "plate=7XKD203", "--data", d];
    let err = fails(1, &by_plate);
    assert!(
        err.contains("search is turned off on this node ([search] enabled = false")
            && err.contains("(FAILED_PRECONDITION)"),
        "{err}"
    );
    drop(server);
    std::fs::write(&config, &text).unwrap();
    let _server = serve(&data).await;
    let found = json(&[&by_plate[..], &["--json"]].concat());
    assert_eq!(found["total"], 3, "rebuilt: {found}");
}
