//! Queries answered from the index return what a scan of the whole log
//! returns, page by page, both ways, with time windows — also while a log
//! written before the index is being indexed.

use std::sync::Arc;

use super::{AuditLog, AuditQuery};
use crate::domain::audit::{Actor, Draft, Entry, Outcome, Target};
use crate::domain::{OfficeId, UserName};
use crate::identity::OfficeCa;
use crate::store::{Store, StoreOptions};

const OFFICE: &str = "phila-da";

fn user(name: &str) -> Actor {
    Actor {
        kind: "user".into(),
        name: name.into(),
        role: "staff".into(),
        office: OFFICE.into(),
        fingerprint: format!("sha256:{name}"),
        remote: "127.0.0.1:9".into(),
    }
}

/// Entry `i` of a log where record `x` is rare, others common, and every
/// field a query can filter on varies.
fn draft(i: u64) -> Draft {
    let actor = match i % 5 {
        0 => Actor::peer("nyc-da"),
        1 => Actor::node(OFFICE),
        2 => user("alice"),
        3 => Actor::unauthenticated("10.0.0.1:5".into()),
        _ => user("bob"),
    };
    let record = if i % 37 == 3 {
        "phila-da:x".to_owned()
    } else {
        format!("phila-da:r{}", i % 11)
    };
    let target = Target {
        records: vec![(record, i)],
        collection: if i % 4 == 0 { "case-1" } else { "case-2" }.into(),
        peer: if i % 6 == 0 { "camden-da" } else { "" }.into(),
        detail: String::new(),
    };
    let action = if i % 3 == 0 {
        "Records.Put"
    } else {
        "Records.Get"
    };
    Draft {
        // Several entries share a time, as in a busy second.
        at_ms: 10_000 + i / 3,
        ..Draft::new(actor, action, target, Outcome::ok())
    }
}

fn open(path: &std::path::Path) -> (Arc<Store>, AuditLog) {
    let office = OfficeId::parse(OFFICE).unwrap();
    let (ca, _) = OfficeCa::create(&office, &[], &UserName::parse("admin").unwrap()).unwrap();
    let store = Arc::new(Store::open(path, OFFICE, &StoreOptions::for_tests()).unwrap());
    let log = AuditLog::new(OFFICE.into(), store.clone(), Arc::new(ca));
    (store, log)
}

/// The queries checked: each filter alone and combined, windows, both
/// orders, pages small enough to need tokens.
fn queries() -> Vec<AuditQuery> {
    let base = |f: &dyn Fn(&mut AuditQuery)| {
        let mut q = AuditQuery {
            limit: 4,
            ..AuditQuery::default()
        };
        f(&mut q);
        q
    };
    let mut out = vec![
        base(&|q| q.record = "phila-da:x".into()),
        base(&|q| q.record = "phila-da:r3".into()),
        base(&|q| q.record = "phila-da:none".into()),
        base(&|q| {
            q.record = "phila-da:x".into();
            q.action = "Records.Put".into();
        }),
        base(&|q| q.actor = "alice".into()),
        base(&|q| q.actor = "sha256:bob".into()),
        base(&|q| q.actor = "nyc-da".into()),
        base(&|q| q.actor = "unauthenticated".into()),
        // Not indexed: answered by the scan, the same way.
        base(&|q| q.actor = "user".into()),
        base(&|q| q.actor = OFFICE.into()),
        base(&|q| {
            q.actor = "node".into();
            q.collection = "case-1".into();
        }),
        base(&|q| q.peer = "nyc-da".into()),
        base(&|q| q.peer = "camden-da".into()),
        base(&|q| {
            q.collection = "case-1".into();
            q.action = "Records.Get".into();
            q.limit = 50;
        }),
        base(&|q| {
            q.record = "phila-da:r5".into();
            q.from_ms = 10_030;
            q.to_ms = 10_100;
        }),
        base(&|q| {
            q.action = "Records.Put".into();
            q.from_ms = 10_050;
            q.limit = 1000;
        }),
    ];
    let newest: Vec<AuditQuery> = out
        .iter()
        .map(|q| AuditQuery {
            newest_first: true,
            ..q.clone()
        })
        .collect();
    out.extend(newest);
    out
}

/// Every page of `q`, following tokens, as sequence numbers.
fn walk(log: &AuditLog, q: &AuditQuery) -> Vec<u64> {
    let mut q = q.clone();
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let (page, token) = log.query(&q).unwrap();
        assert!(page.len() <= q.limit, "{q:?}");
        out.extend(page.iter().map(|(e, _)| e.seq));
        if token == 0 {
            return out;
        }
        q.after_seq = token;
    }
    panic!("{q:?} never ended");
}

/// What `q` must return: every entry of the log, filtered one by one.
fn expected(store: &Store, q: &AuditQuery) -> Vec<u64> {
    let mut out: Vec<u64> = store
        .audit_raw(0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, raw)| Entry::decode(&raw).unwrap())
        .filter(|e| q.matches(e) && e.at_ms >= q.from_ms && (q.to_ms == 0 || e.at_ms <= q.to_ms))
        .map(|e| e.seq)
        .collect();
    if q.newest_first {
        out.reverse();
    }
    out
}

fn check_all(store: &Store, log: &AuditLog, when: &str) {
    for q in queries() {
        assert_eq!(walk(log, &q), expected(store, &q), "{when}: {q:?}");
    }
}

#[test]
fn indexed_queries_return_what_a_scan_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (store, log) = open(dir.path());
    let drafts: Vec<Draft> = (0..400).map(draft).collect();
    store.audit(&drafts).unwrap();
    assert!(!expected(&store, &queries()[0]).is_empty());
    check_all(&store, &log, "indexed as appended");
}

/// A log written before the index answers the same at every step of its
/// indexing, entries appended meanwhile included, and after a reopen.
#[test]
fn queries_stay_right_while_an_older_log_is_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let (store, _) = open(&path);
        let drafts: Vec<Draft> = (0..300).map(draft).collect();
        store.audit(&drafts).unwrap();
        store.forget_audit_index().unwrap();
        store.flush_now().unwrap();
    }
    let (store, log) = open(&path);
    assert_eq!(store.audit_unindexed().unwrap(), Some((0, 300)));
    check_all(&store, &log, "nothing indexed");
    store
        .audit(&(300..330).map(draft).collect::<Vec<_>>())
        .unwrap();
    let mut steps = 0;
    while store.index_audit_step(70).unwrap() {
        steps += 1;
        check_all(&store, &log, &format!("after {steps} batches"));
    }
    assert_eq!(steps, 4);
    assert_eq!(store.audit_unindexed().unwrap(), None);
    check_all(&store, &log, "all indexed");
}

#[test]
fn one_verification_at_a_time_and_a_pass_is_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let (store, log) = open(dir.path());
    store.audit(&[draft(1)]).unwrap();
    assert_eq!(log.verified_at_ms(), 0, "not verified yet");
    let held = log.verifying.lock().unwrap();
    assert!(matches!(
        log.verify(),
        Err(crate::error::Error::VerifyRunning)
    ));
    assert_eq!(log.verified_at_ms(), 0);
    drop(held);
    let report = log.verify().unwrap();
    assert!(report.fault.is_none());
    assert!(log.verified_at_ms() > 0, "a pass is remembered");
}
