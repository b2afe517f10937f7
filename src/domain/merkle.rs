//! The Merkle tree of RFC 9162 (Certificate Transparency 2.0), §2.1: the
//! tree hash of a list of entries, kept incrementally as entries are
//! appended, and inclusion and consistency proofs, built and checked with
//! the RFC's algorithms so that standard tools can check casemesh's.
//!
//! Hashing is SHA-256 with the RFC's domain separation: a leaf is
//! `SHA-256(0x00 || data)`, an inner node `SHA-256(0x01 || left || right)`,
//! and the empty tree `SHA-256()`.
//!
//! Proofs are built from the roots of *perfect* subtrees (2^level leaves,
//! aligned), which a store can keep as entries are appended and never
//! change: see [`Frontier`] and [`NodeSource`].
//!
//! Pure code: no I/O.

use ring::digest;

/// A SHA-256 hash in the tree.
pub type Hash = [u8; 32];

fn sha256(parts: &[&[u8]]) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The hash of the empty tree.
pub fn empty_root() -> Hash {
    sha256(&[])
}

/// The hash of a leaf holding `data`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    sha256(&[&[0x00], data])
}

/// The hash of an inner node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[0x01], left, right])
}

/// The right edge of a tree: the roots of the perfect subtrees its leaves
/// fall into, largest (leftmost) first — one per set bit of the size. All a
/// log needs to append a leaf and compute the root, in O(log n) space.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// `(level, root)`: a perfect subtree of 2^level leaves.
    subtrees: Vec<(u32, Hash)>,
}

/// Perfect subtrees completed by an append, to be stored for proofs:
/// `(level, index, root)`, the subtree of leaves
/// `index * 2^level .. (index + 1) * 2^level`.
pub type Completed = Vec<(u32, u64, Hash)>;

impl Frontier {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf (its hash); returns every perfect subtree it
    /// completed, the leaf itself (level 0) first.
    pub fn push(&mut self, leaf: Hash) -> Completed {
        let index = self.size;
        let mut completed = vec![(0, index, leaf)];
        let mut carry = (0u32, leaf);
        while let Some(&(level, left)) = self.subtrees.last() {
            if level != carry.0 {
                break;
            }
            self.subtrees.pop();
            carry = (level + 1, node_hash(&left, &carry.1));
            completed.push((carry.0, index >> carry.0, carry.1));
        }
        self.subtrees.push(carry);
        self.size += 1;
        completed
    }

    /// The tree hash of every leaf so far (RFC 9162 `MTH`).
    pub fn root(&self) -> Hash {
        let mut iter = self.subtrees.iter().rev();
        let Some(&(_, mut hash)) = iter.next() else {
            return empty_root();
        };
        for (_, left) in iter {
            hash = node_hash(left, &hash);
        }
        hash
    }

    /// The frontier of a tree of `size` leaves, from the perfect subtrees
    /// a store kept.
    pub fn at<S: NodeSource>(size: u64, nodes: &S) -> Result<Self, S::Error> {
        let mut subtrees = Vec::new();
        let mut start = 0u64;
        for level in (0..64u32).rev() {
            if size & (1 << level) != 0 {
                subtrees.push((level, nodes.node(level, start >> level)?));
                start += 1 << level;
            }
        }
        Ok(Self { size, subtrees })
    }
}

/// Where proofs read the roots of perfect subtrees from (a store of the
/// [`Completed`] subtrees, or a list of leaves in tests).
pub trait NodeSource {
    type Error;
    /// The root of the perfect subtree of 2^`level` leaves starting at
    /// leaf `index * 2^level`.
    fn node(&self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// The largest power of two smaller than `n` (n ≥ 2).
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// `MTH(D[start : start + n])`, from perfect subtrees.
fn subtree_root<S: NodeSource>(nodes: &S, start: u64, n: u64) -> Result<Hash, S::Error> {
    if n.is_power_of_two() {
        return nodes.node(n.trailing_zeros(), start >> n.trailing_zeros());
    }
    let k = split(n);
    let left = subtree_root(nodes, start, k)?;
    let right = subtree_root(nodes, start + k, n - k)?;
    Ok(node_hash(&left, &right))
}

/// Why a proof cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError<E> {
    #[error("leaf {index} is not in a tree of {size}")]
    OutOfRange { index: u64, size: u64 },
    #[error("a tree of {new} cannot be consistent with a larger one of {old}")]
    Shrunk { old: u64, new: u64 },
    #[error(transparent)]
    Source(E),
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves (RFC
/// 9162 §2.1.3.1 `PATH`), nearest sibling first.
pub fn inclusion_proof<S: NodeSource>(
    nodes: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofError<S::Error>> {
    if index >= size {
        return Err(ProofError::OutOfRange { index, size });
    }
    let mut path = Vec::new();
    path_into(nodes, index, 0, size, &mut path).map_err(ProofError::Source)?;
    Ok(path)
}

/// `PATH(m, D[start : start + n])`, appended to `out` (deepest first).
fn path_into<S: NodeSource>(
    nodes: &S,
    m: u64,
    start: u64,
    n: u64,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    if n <= 1 {
        return Ok(());
    }
    let k = split(n);
    if m < k {
        path_into(nodes, m, start, k, out)?;
        out.push(subtree_root(nodes, start + k, n - k)?);
    } else {
        path_into(nodes, m - k, start + k, n - k, out)?;
        out.push(subtree_root(nodes, start, k)?);
    }
    Ok(())
}

/// The consistency proof between the tree of `old` leaves and the tree of
/// `new` leaves (RFC 9162 §2.1.4.1 `PROOF`).
pub fn consistency_proof<S: NodeSource>(
    nodes: &S,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, ProofError<S::Error>> {
    if old > new {
        return Err(ProofError::Shrunk { old, new });
    }
    let mut proof = Vec::new();
    if old > 0 && old < new {
        subproof_into(nodes, old, 0, new, true, &mut proof).map_err(ProofError::Source)?;
    }
    Ok(proof)
}

/// `SUBPROOF(m, D[start : start + n], b)`, appended to `out`.
fn subproof_into<S: NodeSource>(
    nodes: &S,
    m: u64,
    start: u64,
    n: u64,
    complete: bool,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    if m == n {
        if !complete {
            out.push(subtree_root(nodes, start, n)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        subproof_into(nodes, m, start, k, complete, out)?;
        out.push(subtree_root(nodes, start + k, n - k)?);
    } else {
        subproof_into(nodes, m - k, start + k, n - k, false, out)?;
        out.push(subtree_root(nodes, start, k)?);
    }
    Ok(())
}

/// Checks that `leaf` is leaf `index` of the tree of `size` leaves whose
/// root is `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && r == *root
}

/// Checks that the tree of `old` leaves with root `old_root` is a prefix
/// of the tree of `new` leaves with root `new_root` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old > new {
        return false;
    }
    if old == new {
        return proof.is_empty() && old_root == new_root;
    }
    if old == 0 {
        return proof.is_empty();
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut f_n, mut s_n) = (old - 1, new - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s_n == 0 {
            return false;
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    s_n == 0 && fr == *old_root && sr == *new_root
}

/// Perfect subtrees computed from a list of leaf hashes: a stand-in for a
/// store in tests.
#[cfg(test)]
pub(crate) struct Leaves(pub Vec<Hash>);

#[cfg(test)]
impl NodeSource for Leaves {
    type Error = std::convert::Infallible;
    fn node(&self, level: u32, index: u64) -> Result<Hash, Self::Error> {
        let start = (index << level) as usize;
        Ok(naive_root(&self.0[start..start + (1 << level)]))
    }
}

/// `MTH` as RFC 9162 defines it, recursively.
#[cfg(test)]
pub(crate) fn naive_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&naive_root(&leaves[..k]), &naive_root(&leaves[k..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tree(n: usize) -> (Vec<Hash>, Frontier) {
        let mut f = Frontier::default();
        let leaves: Vec<Hash> = (0..n)
            .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
            .collect();
        for l in &leaves {
            f.push(*l);
        }
        (leaves, f)
    }

    /// The test vectors of Certificate Transparency's reference
    /// implementation (the same data Trillian tests against): the roots of
    /// the trees of the first 1..=8 of these leaves.
    #[test]
    fn roots_match_the_certificate_transparency_test_vectors() {
        let inputs: [&[u8]; 8] = [
            b"",
            b"\x00",
            b"\x10",
            b"\x20\x21",
            b"\x30\x31",
            b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57",
            b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
        ];
        let roots = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut f = Frontier::default();
        for (input, root) in inputs.iter().zip(roots) {
            f.push(leaf_hash(input));
            assert_eq!(hex::encode(f.root()), root, "tree of {}", f.size());
        }
    }

    #[test]
    fn appends_report_the_perfect_subtrees_they_complete() {
        let mut f = Frontier::default();
        let leaves: Vec<Hash> = (0..4u8).map(|i| leaf_hash(&[i])).collect();
        assert_eq!(f.push(leaves[0]).len(), 1);
        let done = f.push(leaves[1]);
        assert_eq!(done[1], (1, 0, node_hash(&leaves[0], &leaves[1])));
        assert_eq!(f.push(leaves[2]).len(), 1);
        let done = f.push(leaves[3]);
        assert_eq!(
            done.iter().map(|d| (d.0, d.1)).collect::<Vec<_>>(),
            [(0, 3), (1, 1), (2, 0)]
        );
        assert_eq!(done[2].2, f.root());
    }

    #[test]
    fn bad_requests_are_refused() {
        let (leaves, _) = tree(5);
        let nodes = Leaves(leaves);
        assert!(matches!(
            inclusion_proof(&nodes, 5, 5),
            Err(ProofError::OutOfRange { .. })
        ));
        assert!(matches!(
            consistency_proof(&nodes, 6, 5),
            Err(ProofError::Shrunk { .. })
        ));
        assert!(consistency_proof(&nodes, 0, 5).unwrap().is_empty());
        assert!(consistency_proof(&nodes, 5, 5).unwrap().is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// For every tree of up to 300 leaves: the incremental root is the
        /// RFC's, a frontier rebuilt from stored subtrees is the same, and
        /// every inclusion proof checks out — and fails for another leaf or
        /// index, or a changed or shortened proof. (The size is not
        /// checked alone: a signed head binds it to its root.)
        #[test]
        fn inclusion_proofs_check_out_and_nothing_else_does(n in 1usize..300, pick in any::<u64>()) {
            let (leaves, f) = tree(n);
            prop_assert_eq!(f.root(), naive_root(&leaves));
            let nodes = Leaves(leaves.clone());
            prop_assert_eq!(&Frontier::at(n as u64, &nodes).unwrap(), &f);
            let root = f.root();
            let index = pick % n as u64;
            let proof = inclusion_proof(&nodes, index, n as u64).unwrap();
            let leaf = leaves[index as usize];
            prop_assert!(verify_inclusion(&leaf, index, n as u64, &proof, &root));
            prop_assert!(!verify_inclusion(&leaf_hash(b"other"), index, n as u64, &proof, &root));
            if n > 1 {
                let other = (index + 1) % n as u64;
                prop_assert!(!verify_inclusion(&leaf, other, n as u64, &proof, &root));
                let mut bent = proof.clone();
                bent[pick as usize % proof.len()][0] ^= 1;
                prop_assert!(!verify_inclusion(&leaf, index, n as u64, &bent, &root));
                prop_assert!(!verify_inclusion(&leaf, index, n as u64, &proof[1..], &root));
            }
        }

        /// Between any two sizes of the same log the consistency proof
        /// checks out; against another log's root, or changed, it fails.
        #[test]
        fn consistency_proofs_check_out_and_nothing_else_does(new in 1usize..300, pick in any::<u64>()) {
            let (leaves, f) = tree(new);
            let nodes = Leaves(leaves.clone());
            let old = 1 + pick % new as u64;
            let old_root = naive_root(&leaves[..old as usize]);
            let proof = consistency_proof(&nodes, old, new as u64).unwrap();
            prop_assert!(verify_consistency(old, new as u64, &old_root, &f.root(), &proof));
            let forked = leaf_hash(b"rewritten");
            prop_assert!(!verify_consistency(old, new as u64, &forked, &f.root(), &proof));
            if !proof.is_empty() {
                let mut bent = proof.clone();
                bent[pick as usize % proof.len()][31] ^= 1;
                prop_assert!(!verify_consistency(old, new as u64, &old_root, &f.root(), &bent));
            }
            if old < new as u64 {
                prop_assert!(!verify_consistency(old, new as u64, &old_root, &old_root, &proof));
            }
        }
    }

    /// The same leaves in `ct-merkle`, an independent RFC 6962/9162
    /// implementation: every root, inclusion proof and consistency proof
    /// casemesh makes is byte for byte the one it makes, and each side's
    /// verifier accepts the other's proofs.
    #[test]
    fn roots_and_proofs_match_an_independent_implementation() {
        use ct_merkle::mem_backed_tree::MemoryBackedTree;
        use ct_merkle::{ConsistencyProof, InclusionProof, RootHash};
        use sha2::Sha256;

        let data = |i: u64| i.to_be_bytes().to_vec();
        let mut theirs = MemoryBackedTree::<Sha256, Vec<u8>>::new();
        let mut ours = Frontier::default();
        let mut leaves = Vec::new();
        let mut roots = vec![empty_root()];
        let sizes: Vec<u64> = (1..=70)
            .chain([127, 128, 129, 255, 256, 257, 1000])
            .collect();
        for size in 1..=1000u64 {
            theirs.push(data(size - 1));
            leaves.push(leaf_hash(&data(size - 1)));
            ours.push(leaf_hash(&data(size - 1)));
            roots.push(ours.root());
            assert_eq!(
                theirs.root().as_bytes().as_slice(),
                ours.root(),
                "size {size}"
            );
            if !sizes.contains(&size) {
                continue;
            }
            let nodes = Leaves(leaves.clone());
            let their_root = theirs.root();
            for index in 0..size {
                let proof = inclusion_proof(&nodes, index, size).unwrap();
                let theirs_proof = theirs.prove_inclusion(index as usize);
                assert_eq!(theirs_proof.as_bytes(), proof.concat(), "{index} in {size}");
                assert!(verify_inclusion(
                    &leaves[index as usize],
                    index,
                    size,
                    &proof,
                    &roots[size as usize]
                ));
                their_root
                    .verify_inclusion(
                        &data(index),
                        index,
                        &InclusionProof::from_bytes(proof.concat()),
                    )
                    .unwrap();
            }
            for old in 1..=size {
                let proof = consistency_proof(&nodes, old, size).unwrap();
                let theirs_proof = theirs.prove_consistency((size - old) as usize);
                assert_eq!(theirs_proof.as_bytes(), proof.concat(), "{old} to {size}");
                let (old_root, new_root) = (roots[old as usize], roots[size as usize]);
                assert!(verify_consistency(old, size, &old_root, &new_root, &proof));
                let old_root = RootHash::<Sha256>::new(old_root.into(), old);
                their_root
                    .verify_consistency(
                        &old_root,
                        &ConsistencyProof::try_from_bytes(proof.concat()).unwrap(),
                    )
                    .unwrap();
            }
        }
    }
}
