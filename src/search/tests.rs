use bytes::Bytes;

use super::*;
use crate::domain::{OfficeId, RecordVersion, Subject, UserName};
use crate::identity::{OfficeCa, OfficeSigner};
use crate::store::{ApplyItem, StoreOptions};

struct Fixture {
    dir: tempfile::TempDir,
    store: Arc<Store>,
    ca: OfficeCa,
    peer_ca: OfficeCa,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let admin = UserName::parse("admin").unwrap();
    let (ca, _) = OfficeCa::create(&OfficeId::parse("nyc-da").unwrap(), &[], &admin).unwrap();
    let (peer_ca, _) =
        OfficeCa::create(&OfficeId::parse("phila-da").unwrap(), &[], &admin).unwrap();
    let store = Store::open(
        &dir.path().join("store"),
        "nyc-da",
        &StoreOptions::for_tests(),
    )
    .unwrap();
    Fixture {
        dir,
        store: Arc::new(store),
        ca,
        peer_ca,
    }
}

impl Fixture {
    fn search(&self) -> Search {
        Search::open(&self.dir.path().join("search"), self.store.clone()).unwrap()
    }

    fn signed(
        &self,
        ca: &OfficeCa,
        n: u8,
        version: u64,
        title: &str,
        subject: &str,
    ) -> SignedVersion {
        let origin = ca.office.clone();
        OfficeSigner::new(ca)
            .sign(RecordVersion {
                id: RecordId::generate(&origin, 1_790_000_000_000, [n; 10]),
                version,
                origin,
                collection: "2026-0042".into(),
                kind: "incident-report".into(),
                title: title.into(),
                content_type: "text/plain".into(),
                labels: Default::default(),
                body: Bytes::from(format!("body of {title}")),
                created_at_ms: 1_790_000_000_000,
                updated_at_ms: 1_790_000_000_000 + 10 * version + u64::from(n),
                deleted: false,
                attachments: Vec::new(),
                subjects: vec![Subject::parse(subject).unwrap()],
            })
            .unwrap()
    }

    /// Writes `v` as this office's next version of its record, on disk
    /// when this returns (as a `Put`).
    fn write(&self, v: &SignedVersion) {
        let expected = (v.record.version > 1).then(|| v.record.version - 1);
        self.store.append_version(v, expected, &[], &[]).unwrap();
        self.store.flush_now().unwrap();
    }

    /// Applies items from phila-da as a replica batch does, on disk when
    /// this returns.
    fn apply(&self, items: Vec<ApplyItem>) {
        let peer = self.peer_ca.office.clone();
        self.store.apply_batch(&peer, &items, 1, 1, &[]).unwrap();
        self.store.flush_now().unwrap();
    }
}

fn badge(search: &Search, value: &str) -> Vec<String> {
    let q = SearchQuery {
        subjects: vec![Subject::parse(&format!("badge={value}")).unwrap()],
        limit: 10,
        ..Default::default()
    };
    let found = search.search(&q).unwrap();
    found
        .hits
        .iter()
        .map(|h| format!("{} {}", h.version.record.origin, h.version.record.title))
        .collect()
}

#[test]
fn a_search_sees_every_write_and_replica_made_before_it() {
    let f = fixture();
    let search = f.search();
    assert!(search.needs_rebuild(), "a new index");
    search.rebuild().unwrap();
    assert!(!search.needs_rebuild());

    let own = f.signed(&f.ca, 1, 1, "Canal Street raid", "badge=4471");
    f.write(&own);
    let shared = f.signed(&f.peer_ca, 2, 1, "Traffic stop", "badge=#44-71");
    f.apply(vec![ApplyItem::Version(Box::new(shared.clone()))]);
    assert_eq!(search.sizes(), (0, 2), "queued, not yet taken in");

    // No indexer ran: the search takes the queue in itself.
    assert_eq!(
        badge(&search, "4471"),
        ["phila-da Traffic stop", "nyc-da Canal Street raid"],
        "newest first"
    );
    assert_eq!(search.sizes(), (2, 0));

    // A new version replaces the old in the index; a tombstone removes it.
    let renamed = f.signed(&f.ca, 1, 2, "Canal Street raid, corrected", "badge=4471");
    f.write(&renamed);
    assert!(badge(&search, "4471").contains(&"nyc-da Canal Street raid, corrected".to_owned()));
    let mut deleted = f.signed(&f.ca, 1, 3, "Canal Street raid, corrected", "badge=4471");
    deleted.record.deleted = true;
    let deleted = OfficeSigner::new(&f.ca).sign(deleted.record).unwrap();
    f.write(&deleted);
    assert_eq!(badge(&search, "4471"), ["phila-da Traffic stop"]);
}

#[test]
fn a_change_made_while_the_index_took_it_in_stays_queued() {
    let f = fixture();
    let v1 = f.signed(&f.ca, 1, 1, "first", "badge=1");
    f.write(&v1);
    let mark = f.store.search_mark();
    let taken = f.store.search_queue(mark, None, 10).unwrap();
    assert_eq!(taken.len(), 1);
    // Written after the entry was taken, before it is forgotten.
    f.write(&f.signed(&f.ca, 1, 2, "second", "badge=1"));
    f.store.search_queue_done(&taken).unwrap();
    assert_eq!(f.store.search_queue_len(), 1, "the newer change is kept");
    assert!(
        f.store.search_queue(mark, None, 10).unwrap().is_empty(),
        "and is not one that came before the mark"
    );
}

#[test]
fn a_lost_or_unreadable_index_is_rebuilt_from_the_store() {
    let f = fixture();
    for n in 0..5 {
        f.write(&f.signed(&f.ca, n, 1, &format!("report {n}"), "badge=4471"));
    }
    {
        let search = f.search();
        search.rebuild().unwrap();
        assert_eq!(badge(&search, "4471").len(), 5);
    }
    // Damage every file of the index.
    let dir = f.dir.path().join("search");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        std::fs::write(&path, b"not an index").unwrap();
    }
    let search = f.search();
    assert!(search.needs_rebuild());
    assert_eq!(search.rebuild().unwrap(), 5);
    assert_eq!(badge(&search, "4471").len(), 5);
    assert!(
        !dir.with_extension("unreadable").exists(),
        "deleted, not kept aside: it held records' text"
    );

    // Gone entirely: the same.
    drop(search);
    std::fs::remove_dir_all(&dir).unwrap();
    let search = f.search();
    assert!(search.needs_rebuild());
    search.rebuild().unwrap();
    assert_eq!(badge(&search, "4471").len(), 5);
}

#[test]
fn only_a_finished_rebuild_makes_an_index_complete() {
    let f = fixture();
    for n in 0..3 {
        f.write(&f.signed(&f.ca, n, 1, &format!("report {n}"), "badge=4471"));
    }
    {
        let search = f.search();
        // Changes taken in and committed, purges rewritten: still not
        // an index of the whole store.
        search.take_in().unwrap();
        f.write(&f.signed(&f.ca, 9, 1, "one more", "badge=4471"));
        search.purge().unwrap();
        assert!(search.needs_rebuild());
        // A rebuild cut short leaves it so.
        search.close();
        assert!(matches!(search.rebuild(), Err(Error::Closing)));
        assert!(search.needs_rebuild());
        let refused = search.search(&SearchQuery::default());
        assert!(matches!(refused, Err(Error::Incomplete(_))), "{refused:?}");
    }
    let search = f.search();
    assert!(
        search.needs_rebuild(),
        "and so it is found at the next start"
    );
    assert_eq!(search.rebuild().unwrap(), 4);
    assert_eq!(badge(&search, "4471").len(), 4);
}

#[test]
fn a_purge_on_a_full_disk_empties_the_index() {
    let f = fixture();
    let replica = f.signed(&f.peer_ca, 9, 1, "zyxwvutsrq informant", "badge=777");
    f.apply(vec![ApplyItem::Version(Box::new(replica.clone()))]);
    {
        let search = f.search();
        search.rebuild().unwrap();
        assert_eq!(badge(&search, "777").len(), 1);
    }
    f.apply(vec![ApplyItem::Revoke(replica.record.id.clone())]);
    // The same store, opened with a reserve no disk has free.
    let path = f.dir.path().join("store");
    let store = Arc::try_unwrap(f.store).ok().unwrap();
    drop(store);
    let full = StoreOptions {
        reserve_bytes: u64::MAX,
        ..StoreOptions::for_tests()
    };
    let store = Arc::new(Store::open(&path, "nyc-da", &full).unwrap());
    let search = Search::open(&f.dir.path().join("search"), store).unwrap();
    assert!(!search.needs_rebuild());
    search.purge().unwrap();
    assert!(!search.holds_term("title", "zyxwvutsrq").unwrap());
    assert_eq!(search.sizes().0, 0, "emptied");
    assert!(search.needs_rebuild(), "and rebuilt once there is room");
}

#[test]
fn a_hit_the_store_no_longer_holds_is_not_answered() {
    let f = fixture();
    let search = f.search();
    search.rebuild().unwrap();
    let v = f.signed(&f.peer_ca, 1, 1, "shared then lost", "badge=4471");
    // Indexed directly, as a damaged or stale index might hold it: the
    // store decides what is answered.
    search.index.put(&v.record).unwrap();
    search.index.commit(true).unwrap();
    let found = search
        .search(&SearchQuery {
            text: "lost".into(),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(found.total, 1, "the index holds it");
    assert!(found.hits.is_empty(), "the store does not");
}

#[test]
fn a_purged_replica_is_in_no_file_of_the_index() {
    let f = fixture();
    let search = f.search();
    search.rebuild().unwrap();
    let replica = f.signed(&f.peer_ca, 9, 1, "zyxwvutsrq informant", "badge=777");
    let kept = f.signed(&f.peer_ca, 8, 1, "ordinary report", "badge=1");
    f.apply(vec![
        ApplyItem::Version(Box::new(replica.clone())),
        ApplyItem::Version(Box::new(kept)),
    ]);
    assert_eq!(badge(&search, "777").len(), 1);
    f.apply(vec![ApplyItem::Revoke(replica.record.id.clone())]);
    assert!(badge(&search, "777").is_empty(), "not found once purged");
    assert!(
        search.holds_term("title", "zyxwvutsrq").unwrap(),
        "marked deleted, its words are still in the files"
    );
    search.purge().unwrap();
    assert!(!search.holds_term("title", "zyxwvutsrq").unwrap());
    assert!(!search.holds_term("subject", "badge=777").unwrap());
    let dir = f.dir.path().join("search");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        for word in [&b"zyxwvutsrq"[..], replica.record.id.as_str().as_bytes()] {
            assert!(
                !bytes.windows(word.len()).any(|w| w == word),
                "{} in an index file",
                String::from_utf8_lossy(word)
            );
        }
    }
    assert_eq!(badge(&search, "1").len(), 1, "the other replica stays");
}
