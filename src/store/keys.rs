//! Keys of the trees that several store modules write: versions, the
//! collection index and blob references. A leaf: it uses no other store
//! module.

use crate::domain::{BlobHash, RecordId};

/// `record id ‖ 0 ‖ version` (big-endian): one version of a record.
pub(super) fn version_key(id: &RecordId, version: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.as_str().len() + 9);
    k.extend_from_slice(id.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// `record id ‖ 0`: every version of a record.
pub(super) fn versions_prefix(id: &RecordId) -> Vec<u8> {
    let mut k = id.as_str().as_bytes().to_vec();
    k.push(0);
    k
}

/// `collection ‖ 0`: every record of a collection.
pub(super) fn collection_prefix(collection: &str) -> Vec<u8> {
    let mut k = collection.as_bytes().to_vec();
    k.push(0);
    k
}

/// `collection ‖ 0 ‖ record id`: one record in the collection index.
pub(super) fn collection_key(collection: &str, id: &RecordId) -> Vec<u8> {
    let mut k = collection_prefix(collection);
    k.extend_from_slice(id.as_str().as_bytes());
    k
}

/// `hash ‖ record id ‖ 0 ‖ version`: one version listing the blob.
pub(super) fn ref_key(hash: &BlobHash, id: &RecordId, version: u64) -> Vec<u8> {
    let mut k = hash.0.to_vec();
    k.extend_from_slice(&version_key(id, version));
    k
}
