use bytes::Bytes;

use super::*;
use crate::domain::{OfficeId, Subject};

fn version(office: &str, n: u8, title: &str, body: &str, subjects: &[&str]) -> RecordVersion {
    let origin = OfficeId::parse(office).unwrap();
    RecordVersion {
        id: RecordId::generate(&origin, 1_790_000_000_000, [n; 10]),
        version: 1,
        origin,
        collection: "2026-0042".into(),
        kind: "incident-report".into(),
        title: title.into(),
        content_type: "text/plain".into(),
        labels: [("agency".to_owned(), "ice".to_owned())].into(),
        body: Bytes::copy_from_slice(body.as_bytes()),
        created_at_ms: 1_790_000_000_000,
        updated_at_ms: 1_790_000_000_000 + u64::from(n),
        deleted: false,
        attachments: Vec::new(),
        subjects: crate::domain::subject::canonical_order(
            subjects
                .iter()
                .map(|s| Subject::parse(s).unwrap())
                .collect(),
        ),
    }
}

fn ids(hits: &[Hit]) -> Vec<String> {
    hits.iter().map(|h| h.id.clone()).collect()
}

#[test]
fn subjects_match_normalized_and_text_matches_words() {
    let dir = tempfile::tempdir().unwrap();
    let index = SearchIndex::open(dir.path()).unwrap();
    let own = version(
        "nyc-da",
        1,
        "Canal Street raid",
        "grey unmarked SUV",
        &["badge@subject=4471", "plate=7XKD203"],
    );
    let shared = version(
        "phila-da",
        2,
        "Traffic stop",
        "the agent showed badge",
        &["badge=#44-71"],
    );
    let other = version("phila-da", 3, "Unrelated", "nothing here", &["badge=9999"]);
    for v in [&own, &shared, &other] {
        index.put(v).unwrap();
    }
    index.commit(true).unwrap();
    assert_eq!(index.len(), 3);

    let by_badge = index
        .search(&SearchQuery {
            subjects: vec![Subject::parse("badge=# 44-71").unwrap()],
            limit: 10,
            ..Default::default()
        })
        .unwrap()
        .1;
    // Newest first without words; both offices' records side by side.
    assert_eq!(ids(&by_badge), [shared.id.to_string(), own.id.to_string()]);
    assert_eq!(by_badge[0].origin, "phila-da");
    // A role asked narrows to the subjects named in that role.
    let in_role = |role: &str| {
        let subject = Subject::parse(&format!("badge@{role}=4471")).unwrap();
        let q = SearchQuery {
            subjects: vec![subject],
            limit: 10,
            ..Default::default()
        };
        ids(&index.search(&q).unwrap().1)
    };
    assert_eq!(in_role("subject"), [own.id.to_string()]);
    assert!(in_role("witness").is_empty());

    let by_words = index
        .search(&SearchQuery {
            text: "unmarked suv".into(),
            limit: 10,
            ..Default::default()
        })
        .unwrap()
        .1;
    assert_eq!(ids(&by_words), [own.id.to_string()]);
    // Every word must match.
    let (total, none) = index
        .search(&SearchQuery {
            text: "unmarked traffic".into(),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!((total, none.len()), (0, 0));
    // The total counts past the page.
    let (total, page) = index
        .search(&SearchQuery {
            limit: 1,
            offset: 1,
            ..Default::default()
        })
        .unwrap();
    assert_eq!((total, page.len()), (3, 1));
    assert_eq!(page[0].id, shared.id.to_string(), "the second newest");
    let by_plate_and_origin = index
        .search(&SearchQuery {
            subjects: vec![Subject::parse("plate=7xkd-203").unwrap()],
            origin: Some("phila-da".into()),
            limit: 10,
            ..Default::default()
        })
        .unwrap()
        .1;
    assert!(by_plate_and_origin.is_empty());
    let by_label = index
        .search(&SearchQuery {
            labels: vec!["agency=ice".into()],
            to_ms: 1_790_000_000_002,
            limit: 10,
            ..Default::default()
        })
        .unwrap()
        .1;
    assert_eq!(by_label.len(), 2, "the time range leaves out the newest");
    let bad = index.search(&SearchQuery {
        text: "title:(".into(),
        limit: 10,
        ..Default::default()
    });
    assert!(matches!(bad, Err(SearchError::Query(_))), "{bad:?}");
}

#[test]
fn a_new_version_replaces_the_old_and_a_tombstone_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let index = SearchIndex::open(dir.path()).unwrap();
    let mut v = version("nyc-da", 1, "first title", "", &[]);
    index.put(&v).unwrap();
    v.version = 2;
    v.title = "second title".into();
    index.put(&v).unwrap();
    index.commit(true).unwrap();
    let q = |text: &str| SearchQuery {
        text: text.into(),
        limit: 10,
        ..Default::default()
    };
    assert!(index.search(&q("first")).unwrap().1.is_empty());
    assert_eq!(index.search(&q("second")).unwrap().1[0].version, 2);
    v.version = 3;
    v.deleted = true;
    index.put(&v).unwrap();
    index.commit(true).unwrap();
    assert!(index.is_empty());
}

/// Every byte of the index's files, to look for words in.
fn files_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            all.extend(std::fs::read(&path).unwrap());
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_purged_record_is_gone_from_the_files_not_only_marked_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let index = SearchIndex::open(dir.path()).unwrap();
    let kept = version("nyc-da", 1, "kept report", "ordinary words", &["badge=1"]);
    let purged = version(
        "phila-da",
        2,
        "zyxwvutsrq",
        "qwertyuiopasdf",
        &["plate=QQQZZZ999"],
    );
    index.put(&kept).unwrap();
    index.put(&purged).unwrap();
    index.commit(true).unwrap();
    // Control: while the record is held, its words are in the term
    // dictionaries and its id and title in the stored fields' bytes.
    let before = files_bytes(dir.path());
    for word in [purged.id.as_str().as_bytes(), &b"zyxwvutsrq"[..]] {
        assert!(
            contains(&before, word),
            "{:?} stored",
            String::from_utf8_lossy(word)
        );
    }
    let terms = [
        ("body", "qwertyuiopasdf"),
        ("title", "zyxwvutsrq"),
        ("subject", "plate=QQQZZZ999"),
    ];
    for (field, word) in terms {
        assert!(index.holds_term(field, word).unwrap(), "{word} indexed");
    }
    // Deleting alone leaves the words in the files, as search libraries do.
    index.remove(&purged.id);
    index.commit(true).unwrap();
    assert!(
        index.holds_term("body", "qwertyuiopasdf").unwrap(),
        "control: marked deleted only"
    );
    assert!(contains(&files_bytes(dir.path()), b"zyxwvutsrq"), "control");
    index.purge(true, None).unwrap();
    let q = SearchQuery {
        text: "qwertyuiopasdf".into(),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(index.search(&q).unwrap(), (0, Vec::new()));
    for (field, word) in terms {
        assert!(
            !index.holds_term(field, word).unwrap(),
            "{word} still in a dictionary"
        );
    }
    let after = files_bytes(dir.path());
    for word in [
        purged.id.as_str().as_bytes(),
        &b"zyxwvutsrq"[..],
        b"qwertyuiopasdf",
    ] {
        assert!(
            !contains(&after, word),
            "{:?} is still in the index files",
            String::from_utf8_lossy(word)
        );
    }
    assert_eq!(index.len(), 1, "the other record stays");
    assert!(
        contains(&after, kept.id.as_str().as_bytes()),
        "control: kept is stored"
    );
    // And it stays gone after the index is opened again.
    drop(index);
    let again = SearchIndex::open(dir.path()).unwrap();
    assert_eq!(again.len(), 1);
}

#[test]
fn only_a_commit_of_this_code_marks_the_index_complete() {
    let dir = tempfile::tempdir().unwrap();
    {
        let index = SearchIndex::open(dir.path()).unwrap();
        assert!(!index.is_complete().unwrap(), "a new index");
        index.put(&version("nyc-da", 1, "kept", "", &[])).unwrap();
        index.commit(true).unwrap();
        assert!(index.is_complete().unwrap());
    }
    let index = SearchIndex::open(dir.path()).unwrap();
    assert!(index.is_complete().unwrap(), "reopened");
    assert_eq!(index.len(), 1);
    index.clear().unwrap();
    assert_eq!(
        index.len(),
        1,
        "searches see the index as it was until the commit"
    );
    index.commit(true).unwrap();
    assert_eq!(index.len(), 0);
}
