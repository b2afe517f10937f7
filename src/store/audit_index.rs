//! Which terms of an audit entry are indexed, and writing them: the
//! entry's records, actor, collection, peer and action, each a key
//! `field ‖ term ‖ seq` in `auditterm_seq` ([`super::keys::AuditTerm`]),
//! written in the transaction that appends the entry
//! ([`super::audit::append_tx`]). A query by any of them walks that term's
//! keys in sequence order instead of the log.
//!
//! What a query's filter matches ([`crate::service::audit`]) and what is
//! indexed must agree: every entry a filter matches carries the filter's
//! value as a term of that field, except for the values
//! [`query_uses_index`] turns away (the actor kinds `user`, `node`,
//! `peer` and this office's own id, which nearly every entry carries:
//! indexing them would double the index for queries that match most of
//! the log anyway, so those are answered by a scan). The index never
//! holds anything an entry does not, so it can only narrow the entries a
//! query reads, never decide what it returns: every hit is checked
//! against the entry.

use super::keys::AuditTerm;
use super::tx::Tx;
use super::typed::TxTree;
use crate::domain::audit::Entry;

/// A field of an entry a query can filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditField {
    /// A record the entry names.
    Record,
    /// The actor's user name, office (a peer's), certificate fingerprint
    /// or kind.
    Actor,
    Collection,
    /// The target's peer, or the office of a peer that acted.
    Peer,
    Action,
}

impl AuditField {
    /// The byte that starts its keys (stored: never change one).
    pub(super) fn tag(self) -> u8 {
        match self {
            AuditField::Record => b'r',
            AuditField::Actor => b'a',
            AuditField::Collection => b'c',
            AuditField::Peer => b'p',
            AuditField::Action => b'x',
        }
    }
}

/// Actor kinds almost every entry has: not indexed (see the module doc).
const COMMON_KINDS: [&str; 3] = ["user", "node", "peer"];

/// Whether a query for `value` in `field` on the log of `office` can walk
/// the index; `false`: only a scan finds every entry it matches.
pub fn query_uses_index(field: AuditField, value: &str, office: &str) -> bool {
    match field {
        AuditField::Actor => value != office && !COMMON_KINDS.contains(&value),
        _ => true,
    }
}

/// The terms of `e` on the log of `office`, each once.
pub(super) fn terms<'e>(e: &'e Entry, office: &str) -> Vec<(AuditField, &'e str)> {
    let mut out: Vec<(AuditField, &str)> = Vec::with_capacity(6 + e.target.records.len());
    let mut add = |field: AuditField, term: &'e str| {
        if !term.is_empty()
            && query_uses_index(field, term, office)
            && !out.contains(&(field, term))
        {
            out.push((field, term));
        }
    };
    for (id, _) in &e.target.records {
        add(AuditField::Record, id);
    }
    let a = &e.actor;
    for term in [&a.name, &a.office, &a.fingerprint, &a.kind] {
        add(AuditField::Actor, term);
    }
    add(AuditField::Collection, &e.target.collection);
    add(AuditField::Peer, &e.target.peer);
    if a.kind == "peer" {
        add(AuditField::Peer, &a.office);
    }
    add(AuditField::Action, &e.action);
    out
}

/// Indexes `e` inside the transaction that appends it.
pub(super) fn index_tx(index: &TxTree<'_, AuditTerm, ()>, e: &Entry, office: &str) -> Tx<()> {
    for (field, term) in terms(e, office) {
        index.insert((field.tag(), term, e.seq), &())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::audit::{Actor, Draft, GENESIS, Outcome, Target};

    fn entry(actor: Actor, target: Target) -> Entry {
        let d = Draft::new(actor, "Records.Get", target, Outcome::ok());
        Entry::from_draft(d, 7, "phila-da", GENESIS)
    }

    /// A peer's entry is found by its office as actor and as peer; a
    /// record named twice is one term; this office and the common kinds
    /// are left to the scan, a rare kind is not.
    #[test]
    fn terms_cover_what_queries_match_and_skip_what_every_entry_has() {
        let target = Target {
            records: vec![("phila-da:a".into(), 1), ("phila-da:a".into(), 2)],
            collection: "2026-0042".into(),
            ..Target::default()
        };
        let e = entry(Actor::peer("nyc-da"), target);
        assert_eq!(
            terms(&e, "phila-da"),
            [
                (AuditField::Record, "phila-da:a"),
                (AuditField::Actor, "nyc-da"),
                (AuditField::Collection, "2026-0042"),
                (AuditField::Peer, "nyc-da"),
                (AuditField::Action, "Records.Get"),
            ]
        );
        let own = entry(Actor::node("phila-da"), Target::detail("x"));
        assert_eq!(
            terms(&own, "phila-da"),
            [(AuditField::Action, "Records.Get")]
        );
        let refused = entry(
            Actor::unauthenticated("10.0.0.9:5".into()),
            Target::default(),
        );
        assert!(terms(&refused, "phila-da").contains(&(AuditField::Actor, "unauthenticated")));
        assert!(!query_uses_index(AuditField::Actor, "user", "phila-da"));
        assert!(!query_uses_index(AuditField::Actor, "phila-da", "phila-da"));
        assert!(query_uses_index(AuditField::Actor, "alice", "phila-da"));
        assert!(query_uses_index(AuditField::Record, "phila-da", "phila-da"));
    }
}
