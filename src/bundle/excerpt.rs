//! The audit excerpt of a bundle: the entries that concern the case, each
//! with its RFC 9162 inclusion proof against the tree root in the signed
//! head (`audit/head.bin`), in pieces `audit/excerpt/<n>.bin` of about
//! 1 MiB each.
//!
//! A piece is `[1] tree size (u64)`, then for each entry, in ascending
//! order: `seq (u64) ‖ stored bytes (u32 length ‖ prev ‖ hash ‖ body) ‖
//! proof length (u8) ‖ proof nodes`. A proof node is either `[0] ‖ 32-byte
//! hash` (a hash not yet written in this piece) or `[1] ‖ u32 index` of an
//! earlier such hash in the same piece, counted from 0: entries of one case
//! share the upper levels of their proofs, which are written once. Each
//! piece decodes on its own.
//!
//! The proofs are the standard ones: anyone can check an entry with any RFC
//! 9162 implementation from its chain hash (the leaf), its sequence number
//! less one (the leaf index), the tree size and the root.

use std::collections::HashMap;

use crate::domain::codec::{DecodeError, Reader, Writer};
use crate::domain::merkle::Hash;

const V1: u8 = 1;
const LITERAL: u8 = 0;
const EARLIER: u8 = 1;

/// A piece is closed once its bytes reach this.
pub(super) const PIECE_BYTES: usize = 1024 * 1024;

/// Longest proof a piece may hold: a tree of 2^64 leaves needs 64 nodes.
const MAX_PROOF: usize = 64;

/// One piece being written.
pub(super) struct PieceWriter {
    w: Writer,
    /// Hashes written in full so far, by their index.
    written: HashMap<Hash, u32>,
    len: usize,
    entries: usize,
}

impl PieceWriter {
    pub(super) fn new(tree_size: u64) -> Self {
        let mut w = Writer::default();
        w.u8(V1).u64(tree_size);
        Self {
            w,
            written: HashMap::new(),
            len: 9,
            entries: 0,
        }
    }

    /// Adds an entry as stored and its inclusion proof.
    pub(super) fn push(&mut self, seq: u64, stored: &[u8], proof: &[Hash]) {
        self.w.u64(seq).bytes(stored).u8(proof.len() as u8);
        self.len += 8 + 4 + stored.len() + 1;
        for node in proof {
            match self.written.get(node) {
                Some(i) => {
                    self.w.u8(EARLIER).u32(*i);
                    self.len += 5;
                }
                None => {
                    let index = self.written.len() as u32;
                    self.written.insert(*node, index);
                    self.w.u8(LITERAL).raw(node);
                    self.len += 33;
                }
            }
        }
        self.entries += 1;
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries == 0
    }

    pub(super) fn finish(self) -> Vec<u8> {
        self.w.finish()
    }
}

/// One entry read from a piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ExcerptEntry<'a> {
    pub seq: u64,
    pub stored: &'a [u8],
    pub proof: Vec<Hash>,
}

/// Reads a piece: the tree size it was written against, and its entries.
pub(super) fn read_piece(bytes: &[u8]) -> Result<(u64, Vec<ExcerptEntry<'_>>), DecodeError> {
    let mut r = Reader::new(bytes);
    let v = r.u8()?;
    if v != V1 {
        return Err(DecodeError::UnknownVersion(vec![v]));
    }
    let tree_size = r.u64()?;
    let mut written: Vec<Hash> = Vec::new();
    let mut entries = Vec::new();
    while !r.rest().is_empty() {
        let seq = r.u64()?;
        let stored = r.bytes()?;
        let n = usize::from(r.u8()?);
        if n > MAX_PROOF {
            return Err(invalid(format!(
                "entry {seq}: a proof of {n} nodes is longer than any tree needs"
            )));
        }
        let mut proof = Vec::with_capacity(n);
        for _ in 0..n {
            match r.u8()? {
                LITERAL => {
                    let h = r.array::<32>()?;
                    written.push(h);
                    proof.push(h);
                }
                EARLIER => {
                    let i = r.u32()?;
                    let h = written.get(i as usize).ok_or_else(|| {
                        invalid(format!(
                            "entry {seq}: refers to proof node {i}, but only {} were written before it",
                            written.len()
                        ))
                    })?;
                    proof.push(*h);
                }
                tag => {
                    return Err(invalid(format!(
                        "entry {seq}: unknown proof node tag {tag}"
                    )));
                }
            }
        }
        entries.push(ExcerptEntry { seq, stored, proof });
    }
    Ok((tree_size, entries))
}

fn invalid(reason: String) -> DecodeError {
    DecodeError::Invalid {
        field: "audit excerpt",
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_piece_reads_back_with_shared_nodes_written_once() {
        let mut w = PieceWriter::new(1000);
        let shared = [7u8; 32];
        w.push(3, b"entry three", &[[1; 32], shared]);
        w.push(9, b"entry nine", &[[2; 32], shared]);
        let len = w.len();
        let bytes = w.finish();
        assert_eq!(bytes.len(), len);
        // The shared node is written once, then referred to (5 bytes).
        assert_eq!(
            len,
            9 + 2 * (8 + 4 + 1) + 11 + 10 + 3 * 33 + 5,
            "{len} bytes"
        );
        let (size, entries) = read_piece(&bytes).unwrap();
        assert_eq!(size, 1000);
        assert_eq!(
            entries,
            vec![
                ExcerptEntry {
                    seq: 3,
                    stored: b"entry three",
                    proof: vec![[1; 32], shared],
                },
                ExcerptEntry {
                    seq: 9,
                    stored: b"entry nine",
                    proof: vec![[2; 32], shared],
                },
            ]
        );
    }

    #[test]
    fn damaged_pieces_are_refused_not_misread() {
        let mut w = PieceWriter::new(10);
        w.push(1, b"x", &[[1; 32], [1; 32]]);
        let bytes = w.finish();
        // A reference to a node not written yet.
        let mut forward = bytes.clone();
        let at = forward.len() - 5;
        forward[at + 1..].copy_from_slice(&9u32.to_be_bytes());
        assert!(read_piece(&forward).is_err());
        // Cut anywhere but between entries: an error, never a panic.
        for cut in (0..bytes.len()).filter(|&c| c != 9) {
            assert!(read_piece(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut tag = bytes.clone();
        tag[9 + 8 + 4 + 1 + 1] = 7;
        assert!(read_piece(&tag).is_err());
    }
}
