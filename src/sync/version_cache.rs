//! Versions read once for every peer they are streamed to.
//!
//! A grant of one case to several peers queues the same versions in each
//! peer's feed, and each feed stream would read every one from the store
//! and decode it again. The feed asks this cache instead: the first stream
//! to reach a version reads it, the others take the same bytes (reference
//! counted, no copy) while it is among the most recently read, up to a
//! budget of bytes.
//!
//! With one feed stream open there is nobody to share with, and nothing is
//! kept: a node serving one peer holds no more memory than before.
//!
//! Only the reading is shared. Whether a peer may receive a version is
//! decided by the feed, per peer, every time, before it asks here; a cached
//! version is the same signed bytes the store holds (an origin's version is
//! never rewritten), so the cache can make nothing visible that the store
//! would not. It must not be asked for anything the feed has not checked.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;

use crate::domain::RecordId;
use crate::store::{Store, StoreError};

/// Bytes of versions kept by default: enough for peers backfilling the
/// same case at different paces (a feed batch is 1 MiB) to share reads,
/// small beside a node's memory budget.
pub const DEFAULT_BUDGET: usize = 32 * 1024 * 1024;

/// A version as it goes on the wire: its canonical bytes and signature.
#[derive(Debug, Clone)]
pub struct WireVersion {
    pub canonical: Bytes,
    pub signature: Bytes,
}

impl WireVersion {
    fn size(&self) -> usize {
        self.canonical.len() + self.signature.len()
    }
}

type Key = (RecordId, u64);

#[derive(Default)]
struct Kept {
    versions: HashMap<Key, WireVersion>,
    /// Keys in the order they were read; the oldest go first.
    order: VecDeque<Key>,
    bytes: usize,
}

/// How many versions feeds sent, and how many of them had to be read from
/// the store; the difference was shared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub served: u64,
    pub read: u64,
}

/// Recently read versions, shared by every feed stream of a node.
pub struct VersionCache {
    budget: usize,
    kept: Mutex<Kept>,
    served: AtomicU64,
    read: AtomicU64,
    /// Feed streams open now ([`VersionCache::stream`]).
    streams: AtomicUsize,
}

/// Counts a feed stream as open while it lives.
pub struct StreamOpen<'a>(&'a VersionCache);

impl Drop for StreamOpen<'_> {
    fn drop(&mut self) {
        if self.0.streams.fetch_sub(1, Ordering::Relaxed) == 1 {
            // The last stream ended: nobody will ask for these again soon.
            let mut kept = self.0.kept();
            *kept = Kept::default();
        }
    }
}

impl Default for VersionCache {
    fn default() -> Self {
        Self::new(DEFAULT_BUDGET)
    }
}

impl VersionCache {
    /// A cache holding up to `budget` bytes of versions (0: none, every
    /// version is read from the store).
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            kept: Mutex::new(Kept::default()),
            served: AtomicU64::new(0),
            read: AtomicU64::new(0),
            streams: AtomicUsize::new(0),
        }
    }

    /// Counts a feed stream as open until the guard is dropped; versions
    /// are kept only while more than one is.
    pub fn stream(&self) -> StreamOpen<'_> {
        self.streams.fetch_add(1, Ordering::Relaxed);
        StreamOpen(self)
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Version `version` of `id` for a feed that has already decided the
    /// peer may see it; `None` if the store does not hold it. Counted as
    /// served either way it is found.
    pub fn get(
        &self,
        store: &Store,
        id: &RecordId,
        version: u64,
    ) -> Result<Option<WireVersion>, StoreError> {
        let key = (id.clone(), version);
        if let Some(v) = self.kept().versions.get(&key) {
            self.served.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(v.clone()));
        }
        // Read outside the lock: another stream reading the same version
        // meanwhile costs one more read, never a wait.
        let Some(signed) = store.version(id, version)? else {
            return Ok(None);
        };
        self.read.fetch_add(1, Ordering::Relaxed);
        self.served.fetch_add(1, Ordering::Relaxed);
        let wire = WireVersion {
            canonical: signed.canonical,
            signature: signed.signature,
        };
        self.keep(key, wire.clone());
        Ok(Some(wire))
    }

    fn keep(&self, key: Key, wire: WireVersion) {
        let size = wire.size();
        if size > self.budget || self.streams.load(Ordering::Relaxed) < 2 {
            return;
        }
        let mut kept = self.kept();
        if kept.versions.contains_key(&key) {
            return;
        }
        while kept.bytes + size > self.budget {
            let Some(old) = kept.order.pop_front() else {
                break;
            };
            if let Some(v) = kept.versions.remove(&old) {
                kept.bytes -= v.size();
            }
        }
        kept.bytes += size;
        kept.order.push_back(key.clone());
        kept.versions.insert(key, wire);
    }

    /// Versions served and read so far, on every stream of this node.
    pub fn counts(&self) -> Counts {
        Counts {
            served: self.served.load(Ordering::Relaxed),
            read: self.read.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OfficeId;
    use crate::domain::record::RecordVersion;
    use crate::identity::{OfficeCa, OfficeSigner};
    use crate::store::StoreOptions;

    fn store_with(n: usize) -> (tempfile::TempDir, Store, Vec<RecordId>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &dir.path().join("store"),
            "phila-da",
            &StoreOptions::for_tests(),
        )
        .unwrap();
        let office = OfficeId::parse("phila-da").unwrap();
        let admin = crate::domain::UserName::parse("admin").unwrap();
        let (ca, _) = OfficeCa::create(&office, &[], &admin).unwrap();
        let mut ids = Vec::new();
        for i in 0..n {
            let id = RecordId::generate(&office, 1_000 + i as u64, [i as u8; 10]);
            let record = RecordVersion {
                id: id.clone(),
                version: 1,
                origin: office.clone(),
                collection: "2026-0042".into(),
                kind: "note".into(),
                title: format!("note {i}"),
                content_type: "text/plain".into(),
                labels: Default::default(),
                body: Bytes::from(vec![b'x'; 1000]),
                created_at_ms: 1,
                updated_at_ms: 1,
                deleted: false,
                attachments: Vec::new(),
                subjects: Vec::new(),
            };
            let signed = OfficeSigner::new(&ca).sign(record).unwrap();
            store.append_version(&signed, None, &[], &[]).unwrap();
            ids.push(id);
        }
        (dir, store, ids)
    }

    /// The second stream to ask for a version gets the bytes the store
    /// holds without reading them again; a version the store lacks is
    /// `None` and counts as nothing.
    #[test]
    fn a_version_asked_twice_is_read_once() {
        let (_dir, store, ids) = store_with(2);
        let cache = VersionCache::new(1 << 20);
        let _streams = (cache.stream(), cache.stream());
        let held = store.version(&ids[0], 1).unwrap().unwrap();
        for _ in 0..3 {
            let got = cache.get(&store, &ids[0], 1).unwrap().unwrap();
            assert_eq!(got.canonical, held.canonical);
            assert_eq!(got.signature, held.signature);
        }
        assert!(cache.get(&store, &ids[1], 2).unwrap().is_none());
        assert_eq!(cache.counts(), Counts { served: 3, read: 1 });
    }

    /// The cache never holds more than its budget: the oldest versions go,
    /// and are read again when asked for.
    #[test]
    fn the_oldest_versions_leave_past_the_budget() {
        let (_dir, store, ids) = store_with(3);
        let one = store.version(&ids[0], 1).unwrap().unwrap();
        let size = one.canonical.len() + one.signature.len();
        // Room for two versions, not three.
        let cache = VersionCache::new(size * 2 + size / 2);
        let streams = (cache.stream(), cache.stream());
        for id in &ids {
            cache.get(&store, id, 1).unwrap().unwrap();
        }
        assert!(cache.kept().bytes <= size * 2 + size / 2);
        assert_eq!(cache.kept().versions.len(), 2);
        cache.get(&store, &ids[2], 1).unwrap().unwrap();
        assert_eq!(cache.counts().read, 3);
        cache.get(&store, &ids[0], 1).unwrap().unwrap();
        assert_eq!(cache.counts(), Counts { served: 5, read: 4 });
        // Once the streams end, nothing is kept.
        drop(streams);
        assert_eq!(cache.kept().versions.len(), 0);
        assert_eq!(cache.kept().bytes, 0);
        // A budget of 0 keeps nothing.
        let none = VersionCache::new(0);
        let _streams = (none.stream(), none.stream());
        none.get(&store, &ids[0], 1).unwrap().unwrap();
        none.get(&store, &ids[0], 1).unwrap().unwrap();
        assert_eq!(none.counts(), Counts { served: 2, read: 2 });
    }

    /// With a single feed stream open there is nobody to share a read
    /// with: nothing is kept, so one peer costs no memory here.
    #[test]
    fn one_stream_keeps_nothing() {
        let (_dir, store, ids) = store_with(1);
        let cache = VersionCache::new(1 << 20);
        let _one = cache.stream();
        cache.get(&store, &ids[0], 1).unwrap().unwrap();
        cache.get(&store, &ids[0], 1).unwrap().unwrap();
        assert_eq!(cache.kept().versions.len(), 0);
        assert_eq!(cache.counts(), Counts { served: 2, read: 2 });
    }
}
