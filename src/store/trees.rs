//! Every tree of the store, typed: the one place that names them on disk
//! (`key_value`) and says what their keys and values are.

use super::Result;
use super::encoding::{
    AuditHead, BackfillCursor, BlobMeta, Fetch, Head, NodeHash, OurAck, PeerRemoval, PurgeStub,
    UserRecord,
};
use super::keys::{AuditTerm, CollectionKey, GrantRecord, OfficeSeq, PairKey, RefKey, VersionKey};
use super::typed::{Raw, Set, Tree};
use crate::domain::audit::{Entry, SignedHead};
use crate::domain::sharing::{FeedItem, Grant, GrantId, GrantJob, Peer};
use crate::domain::{BlobHash, OfficeId, RecordId, SignedVersion, UserName};
use crate::identity::Fingerprint;

/// The store's trees. Cheap to clone (each is a handle).
#[derive(Clone)]
pub(super) struct Trees {
    /// Record id → head (latest version number, collection, deleted flag).
    pub heads: Tree<RecordId, Head>,
    /// One version of a record → the version, signed.
    pub versions: Tree<VersionKey, SignedVersion>,
    /// Every record by collection, deleted or not.
    pub collections: Set<CollectionKey>,
    /// Certificate fingerprint → the user it was issued to.
    pub users: Tree<Fingerprint, UserRecord>,
    /// User name → the fingerprint of its latest certificate.
    pub user_names: Tree<UserName, Fingerprint>,
    /// Pinned peers.
    pub peers: Tree<OfficeId, Peer>,
    /// Peers unpinned whose removal is not finished yet.
    pub removals: Tree<OfficeId, PeerRemoval>,
    pub grants: Tree<GrantId, Grant>,
    /// Grant jobs started and not yet finished.
    pub jobs: Tree<GrantId, GrantJob>,
    /// Grant id → how far its backfill has queued ([`super::backfill`]).
    pub backfill_cursors: Tree<GrantId, BackfillCursor>,
    /// The records each closed grant revealed, until its purge is
    /// acknowledged: what its revocations name, every time they are sent.
    pub revealed: Set<GrantRecord>,
    /// Closed grants whose revealed set is complete → how many records.
    pub revealed_counts: Tree<GrantId, u64>,
    /// Each peer's outbox (its feed), by sequence number.
    pub outbox: Tree<OfficeSeq, FeedItem>,
    /// Named numbers: the record and version counts, and where every
    /// peer's feed numbering starts.
    pub counters: Tree<str, u64>,
    /// Peer office → the last sequence number assigned in its feed.
    pub last_seqs: Tree<OfficeId, u64>,
    /// Peer office → highest seq of its feed it acknowledged (serving side).
    pub acked: Tree<OfficeId, u64>,
    /// Peer office → our checkpoint in its feed (pulling side).
    pub checkpoints: Tree<OfficeId, u64>,
    /// Record id → what is left of a purged replica.
    pub purged: Tree<RecordId, PurgeStub>,
    /// Grant id → the purge acknowledgement this office signed.
    pub our_acks: Tree<GrantId, OurAck>,
    /// Blob hash → a whole blob this node holds ([`super::blobs`]).
    pub blobs: Tree<BlobHash, BlobMeta>,
    /// Blobs the blob store may hold with no entry in `blobs`: being
    /// adopted, or being deleted. Settled at start.
    pub unsettled: Set<BlobHash>,
    /// Blob hash → when a scrub found its stored bytes changed.
    pub damaged: Tree<BlobHash, u64>,
    /// A storage id's chunks, as stored before blobs moved out of sled
    /// (read only to move them).
    pub chunks: Tree<PairKey, Raw>,
    /// Storage ids whose chunks are being removed.
    pub doomed: Set<u64>,
    /// Blob hash → a fetch from a peer in progress.
    pub fetches: Tree<BlobHash, Fetch>,
    /// Versions that list a blob.
    pub refs: Set<RefKey>,
    /// The audit log's Merkle tree: `(level, index)` → the root of a
    /// perfect subtree ([`super::merkle`]).
    pub audit_nodes: Tree<PairKey, NodeHash>,
    /// The audit log, by sequence number ([`crate::domain::audit`]).
    pub audit_entries: Tree<u64, Entry>,
    /// `head` → the last entry's seq, chain hash and time.
    pub audit_head: Tree<str, AuditHead>,
    /// The audit log's entries by term (record, actor, collection, peer,
    /// action; [`super::audit_index`]): written with each entry, so a
    /// query reads what it returns, not the log.
    pub audit_terms: Set<AuditTerm>,
    /// Audit seq → a head of this office's log, signed.
    pub signed_heads: Tree<u64, SignedHead>,
    /// Heads of peers' logs they signed, witnessed here.
    pub witnessed: Tree<OfficeSeq, SignedHead>,
    /// Peer → the size of its newest head a witness check proved.
    pub witness_proven: Tree<OfficeId, u64>,
    /// Records changed since the search index last took them in → a
    /// token, new with each change ([`super::search_queue`]).
    pub search_queue: Tree<RecordId, u64>,
}

impl Trees {
    pub fn open(db: &sled::Db) -> Result<Self> {
        Ok(Self {
            heads: Tree::open(db, "recordid_head")?,
            versions: Tree::open(db, "recordversion_signed")?,
            collections: Tree::open(db, "collection_recordid")?,
            users: Tree::open(db, "fingerprint_user")?,
            user_names: Tree::open(db, "username_fingerprint")?,
            peers: Tree::open(db, "office_peer")?,
            removals: Tree::open(db, "office_removal")?,
            grants: Tree::open(db, "grantid_grant")?,
            jobs: Tree::open(db, "grantid_job")?,
            backfill_cursors: Tree::open(db, "grantid_backfillcursor")?,
            revealed: Tree::open(db, "grantrecord_revealed")?,
            revealed_counts: Tree::open(db, "grantid_revealedcount")?,
            outbox: Tree::open(db, "peerseq_outbox")?,
            counters: Tree::open(db, "counters")?,
            last_seqs: Tree::open(db, "office_lastseq")?,
            acked: Tree::open(db, "office_acked")?,
            checkpoints: Tree::open(db, "office_checkpoint")?,
            purged: Tree::open(db, "recordid_purged")?,
            our_acks: Tree::open(db, "grantid_ourack")?,
            blobs: Tree::open(db, "blobhash_blob")?,
            unsettled: Tree::open(db, "blobhash_unsettled")?,
            damaged: Tree::open(db, "blobhash_damaged")?,
            chunks: Tree::open(db, "storage_chunk")?,
            doomed: Tree::open(db, "storage_doomed")?,
            fetches: Tree::open(db, "blobhash_fetch")?,
            refs: Tree::open(db, "blobhash_ref")?,
            audit_nodes: Tree::open(db, "levelindex_auditnode")?,
            audit_entries: Tree::open(db, "auditseq_entry")?,
            audit_head: Tree::open(db, "audit_head")?,
            audit_terms: Tree::open(db, "auditterm_seq")?,
            signed_heads: Tree::open(db, "auditseq_signedhead")?,
            witnessed: Tree::open(db, "officeseq_witnessed")?,
            witness_proven: Tree::open(db, "office_witnessproven")?,
            search_queue: Tree::open(db, "recordid_searchqueue")?,
        })
    }
}

/// Declares a named set of trees one kind of transaction changes, and its
/// `run`: the fields name trees of [`Trees`] (same names),
/// and inside the transaction each is a [`TxTree`] of the same types.
///
/// ```ignore
/// tree_set! {
///     /// Pinning a peer.
///     PeerTx { peers: OfficeId => Peer, audit_entries: u64 => Entry, audit_head: str => AuditHead }
/// }
/// PeerTx::run(&store.trees, |t| { t.peers.insert(&office, &peer)?; Ok(()) })?;
/// ```
macro_rules! tree_set {
    ($(#[$meta:meta])* $name:ident { $($field:ident : $k:ty => $v:ty),+ $(,)? }) => {
        $(#[$meta])*
        pub(super) struct $name<'t> {
            $(pub $field: $crate::store::typed::TxTree<'t, $k, $v>,)+
        }

        impl $name<'_> {
            /// Runs `f` in one transaction over these trees of `trees`;
            /// sled runs it again on a conflict, so `f` must start from
            /// scratch each time.
            pub fn run<T, E>(
                trees: &$crate::store::trees::Trees,
                f: impl Fn(&$name<'_>) -> ::std::result::Result<
                    T,
                    ::sled::transaction::ConflictableTransactionError<E>,
                >,
            ) -> ::std::result::Result<T, ::sled::transaction::TransactionError<E>> {
                use ::sled::transaction::Transactional;
                let set = [$(trees.$field.raw()),+];
                set[..].transaction(|views| {
                    let mut views = views.iter();
                    let set = $name {
                        $($field: match views.next() {
                            Some(view) => $crate::store::typed::TxTree::new(view, &trees.$field),
                            None => unreachable!("one view per tree of the set"),
                        },)+
                    };
                    f(&set)
                })
            }
        }
    };
}
pub(super) use tree_set;
