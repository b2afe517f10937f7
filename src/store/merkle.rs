//! The audit log's Merkle tree (RFC 9162, [`crate::domain::merkle`]), kept
//! beside the hash chain: each leaf is an entry's chain hash, and the roots
//! of perfect subtrees are stored by `(level, index)` as they complete,
//! with how many entries the tree covers.
//!
//! The tree trails the log: it is extended from the stored entries (by the
//! head signer, before it signs), so no transaction that appends an entry
//! does more work, and a log written before the tree existed is extended
//! the same way from its first entry. Entries never change, so an
//! extension a crash cut short writes the same nodes again.

use super::encoding::NodeHash;
use super::{Result, Store, StoreError};
use crate::domain::audit::{GENESIS, Stored, chain_hash};
use crate::domain::merkle::{self, Frontier, Hash, NodeSource, ProofError};

/// The counter holding how many entries the tree covers.
pub(super) const TREE_SIZE: &str = "audit_tree_size";

/// Entries read and added between two writes of the tree's size.
const STEP: u64 = 4096;

/// The stored nodes, for proofs.
struct Nodes<'a>(&'a Store);

impl NodeSource for Nodes<'_> {
    type Error = StoreError;
    fn node(&self, level: u32, index: u64) -> Result<Hash> {
        match self.0.trees.audit_nodes.get((u64::from(level), index))? {
            Some(NodeHash(h)) => Ok(h),
            None => Err(StoreError::Inconsistent(format!(
                "the audit tree has no node at level {level}, index {index}"
            ))),
        }
    }
}

fn missing(seq: u64) -> StoreError {
    StoreError::Inconsistent(format!("audit entry {seq} is missing"))
}

fn proof_error(e: ProofError<StoreError>) -> StoreError {
    match e {
        ProofError::Source(e) => e,
        other => StoreError::Inconsistent(other.to_string()),
    }
}

impl Store {
    /// How many entries the audit tree covers.
    pub fn audit_tree_size(&self) -> Result<u64> {
        Ok(self.trees.counters.get(TREE_SIZE)?.unwrap_or(0))
    }

    /// Extends the audit tree to cover every entry up to `upto` (at most
    /// the log's head); returns its size and root. Durable after
    /// [`Store::commit`]. Each entry's chain hash is recomputed from its
    /// bytes and must follow the one before it: a log whose chain is broken
    /// is not extended past the break.
    pub fn extend_audit_tree(&self, upto: u64) -> Result<(u64, Hash)> {
        let upto = upto.min(self.audit_head()?.seq);
        let mut size = self.audit_tree_size()?;
        let mut frontier = Frontier::at(size, &Nodes(self))?;
        let mut prev = match size {
            0 => GENESIS,
            n => self.audit_entry(n)?.ok_or_else(|| missing(n))?.hash(),
        };
        while size < upto {
            let page = self.audit_raw(size, (upto - size).min(STEP) as usize)?;
            if page.is_empty() {
                return Err(missing(size + 1));
            }
            for (seq, raw) in page {
                if seq != size + 1 {
                    return Err(missing(size + 1));
                }
                let parts = Stored::split(&raw).map_err(|e| {
                    StoreError::Inconsistent(format!("audit entry {seq} cannot be read: {e}"))
                })?;
                let hash = chain_hash(&parts.prev, seq, &parts.body_digest());
                if parts.prev != prev || parts.hash != hash {
                    return Err(StoreError::Inconsistent(format!(
                        "audit entry {seq} does not follow entry {size} in the chain"
                    )));
                }
                prev = hash;
                for (level, index, node) in frontier.push(merkle::leaf_hash(&hash)) {
                    self.trees
                        .audit_nodes
                        .insert((u64::from(level), index), &NodeHash(node))?;
                }
                size = seq;
            }
            self.trees.counters.insert(TREE_SIZE, &size)?;
        }
        Ok((size, frontier.root()))
    }

    /// The root of the audit tree over its first `size` entries.
    pub fn audit_tree_root(&self, size: u64) -> Result<Hash> {
        self.check_covered(size)?;
        Ok(Frontier::at(size, &Nodes(self))?.root())
    }

    /// The proof that entry `seq` is in the tree of the first `size`
    /// entries (leaf `seq - 1`).
    pub fn audit_inclusion_proof(&self, seq: u64, size: u64) -> Result<Vec<Hash>> {
        self.check_covered(size)?;
        merkle::inclusion_proof(&Nodes(self), seq.saturating_sub(1), size).map_err(proof_error)
    }

    /// The proof that the tree of the first `old` entries is a prefix of
    /// the tree of the first `new`.
    pub fn audit_consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>> {
        self.check_covered(new)?;
        merkle::consistency_proof(&Nodes(self), old, new).map_err(proof_error)
    }

    fn check_covered(&self, size: u64) -> Result<()> {
        let covered = self.audit_tree_size()?;
        if size > covered {
            return Err(StoreError::Inconsistent(format!(
                "the audit tree covers {covered} entries, not {size}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::audit::{Actor, Draft, Outcome, Target};

    fn draft(i: usize) -> Draft {
        Draft::new(
            Actor::node("minn-da"),
            "Records.Get",
            Target::detail(format!("read {i}")),
            Outcome::ok(),
        )
    }

    /// A log written before the tree existed is covered from its first
    /// entry; extending in steps gives the same root as the leaves do; and
    /// every proof the store makes checks out against those roots.
    #[test]
    fn the_audit_tree_covers_the_log_and_its_proofs_check_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            "minn-da",
            &crate::store::StoreOptions::for_tests(),
        )
        .unwrap();
        for i in 0..5000 {
            store.audit(&[draft(i)]).unwrap();
        }
        assert_eq!(store.audit_tree_size().unwrap(), 0);
        let (size, first) = store.extend_audit_tree(1234).unwrap();
        assert_eq!(size, 1234);
        for i in 5000..5300 {
            store.audit(&[draft(i)]).unwrap();
        }
        let (size, root) = store.extend_audit_tree(u64::MAX).unwrap();
        assert_eq!(size, 5300);

        let mut leaves = Frontier::default();
        let mut old_root = None;
        for seq in 1..=size {
            let e = store.audit_entry(seq).unwrap().unwrap();
            leaves.push(merkle::leaf_hash(&e.hash()));
            if seq == 1234 {
                old_root = Some(leaves.root());
            }
        }
        assert_eq!(leaves.root(), root);
        assert_eq!(old_root, Some(first));
        assert_eq!(store.audit_tree_root(1234).unwrap(), first);

        for seq in [1, 2, 1234, 4096, 4097, 5300] {
            let e = store.audit_entry(seq).unwrap().unwrap();
            let proof = store.audit_inclusion_proof(seq, size).unwrap();
            let leaf = merkle::leaf_hash(&e.hash());
            assert!(
                merkle::verify_inclusion(&leaf, seq - 1, size, &proof, &root),
                "entry {seq}"
            );
            // About log2 of the size: a few hundred bytes, not the log.
            assert!(proof.len() <= 13, "{} hashes", proof.len());
        }
        let proof = store.audit_consistency_proof(1234, size).unwrap();
        assert!(merkle::verify_consistency(
            1234, size, &first, &root, &proof
        ));
        assert!(store.audit_inclusion_proof(1, size + 1).is_err());
    }
}
