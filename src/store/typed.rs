//! Typed trees: each tree knows the kind of its keys and the type of its
//! values, so that a key is always written the same way, every value goes
//! through its versioned encoding ([`super::encoding`]), and a value that
//! does not decode is an error that names the tree.
//!
//! [`Tree`] is used outside transactions, [`TxTree`] inside one; a set of
//! trees one transaction changes is a struct with named fields
//! ([`super::trees::tree_set!`]) rather than a tuple destructured in place.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::ops::Bound;

use sled::IVec;
use sled::transaction::TransactionalTree;

use super::tx::{Tx, abort};
use super::{Result, StoreError, corrupt};
use crate::domain::codec::DecodeError;

/// A value kept in a tree. Every encoding starts with a version byte, and
/// decoding accepts every version ever written.
pub(super) trait Value: Sized {
    fn encode(&self) -> Vec<u8>;
    fn decode(bytes: &[u8]) -> std::result::Result<Self, DecodeError>;

    /// Decodes sled's copy; values that are bytes as stored keep it.
    fn from_ivec(bytes: IVec) -> std::result::Result<Self, DecodeError> {
        Self::decode(&bytes)
    }

    /// The bytes to store.
    fn to_ivec(&self) -> IVec {
        IVec::from(self.encode())
    }
}

/// A kind of key: how a stored key reads back.
pub(super) trait Key {
    /// What a stored key reads as (the key's parts).
    type Owned;
    fn decode(bytes: &[u8]) -> std::result::Result<Self::Owned, DecodeError>;
}

/// Writes a key of kind `K`.
pub(super) trait KeyOf<K: ?Sized> {
    fn key(&self) -> Cow<'_, [u8]>;
}

/// Writes a prefix shared by keys of kind `K` (all versions of a record,
/// one peer's outbox, …).
pub(super) trait PrefixOf<K: ?Sized> {
    fn prefix(&self) -> Cow<'_, [u8]>;
}

/// Bytes kept exactly as stored: a file's chunks, which their hash checks,
/// not an encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raw(pub IVec);

impl Value for Raw {
    fn encode(&self) -> Vec<u8> {
        self.0.to_vec()
    }
    fn decode(bytes: &[u8]) -> std::result::Result<Self, DecodeError> {
        Ok(Self(IVec::from(bytes)))
    }
    fn from_ivec(bytes: IVec) -> std::result::Result<Self, DecodeError> {
        Ok(Self(bytes))
    }
    fn to_ivec(&self) -> IVec {
        self.0.clone()
    }
}

/// The value of a set's members: nothing (an index entry, a mark).
impl Value for () {
    fn encode(&self) -> Vec<u8> {
        Vec::new()
    }
    fn decode(bytes: &[u8]) -> std::result::Result<Self, DecodeError> {
        if bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(bytes.len()))
        }
    }
}

/// A value encoded once, before a transaction that may run several times.
pub(super) struct Encoded<V> {
    bytes: IVec,
    _value: PhantomData<fn() -> V>,
}

impl<V: Value> Encoded<V> {
    pub fn of(v: &V) -> Self {
        Self {
            bytes: v.to_ivec(),
            _value: PhantomData,
        }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }
}

/// A tree of keys of kind `K` and values of type `V`.
pub(super) struct Tree<K: ?Sized, V> {
    tree: sled::Tree,
    name: &'static str,
    _kv: PhantomData<fn(&K) -> V>,
}

/// A tree whose members are keys alone.
pub(super) type Set<K> = Tree<K, ()>;

impl<K: ?Sized, V> Clone for Tree<K, V> {
    fn clone(&self) -> Self {
        Self {
            tree: self.tree.clone(),
            name: self.name,
            _kv: PhantomData,
        }
    }
}

type Entries<K, V> = Result<(<K as Key>::Owned, V)>;

impl<K: ?Sized, V: Value> Tree<K, V> {
    /// Opens (or creates) the tree `name` of `db`.
    pub fn open(db: &sled::Db, name: &'static str) -> Result<Self> {
        Ok(Self {
            tree: db.open_tree(name)?,
            name,
            _kv: PhantomData,
        })
    }

    /// The tree itself, for transactions ([`super::trees::tree_set!`]) and for the few
    /// readers of bytes as stored (migrations, the disk view).
    pub fn raw(&self) -> &sled::Tree {
        &self.tree
    }

    fn value(&self, bytes: IVec) -> Result<V> {
        V::from_ivec(bytes).map_err(corrupt(self.name))
    }

    pub fn get(&self, key: impl KeyOf<K>) -> Result<Option<V>> {
        self.tree.get(key.key())?.map(|v| self.value(v)).transpose()
    }

    /// The value as stored, not decoded (what a bundle carries).
    pub fn get_raw(&self, key: impl KeyOf<K>) -> Result<Option<IVec>> {
        Ok(self.tree.get(key.key())?)
    }

    pub fn contains(&self, key: impl KeyOf<K>) -> Result<bool> {
        Ok(self.tree.contains_key(key.key())?)
    }

    pub fn insert(&self, key: impl KeyOf<K>, value: &V) -> Result<()> {
        self.tree.insert(key.key(), value.to_ivec())?;
        Ok(())
    }

    /// Removes `key`; whether it was there.
    pub fn remove(&self, key: impl KeyOf<K>) -> Result<bool> {
        Ok(self.tree.remove(key.key())?.is_some())
    }

    /// Removes `key` if its value is still `value`; whether it was.
    pub fn remove_if(&self, key: impl KeyOf<K>, value: &V) -> Result<bool> {
        let swapped = self
            .tree
            .compare_and_swap(key.key(), Some(value.to_ivec()), None::<IVec>)?;
        Ok(swapped.is_ok())
    }

    /// Replaces the value of `key` with `f(current)`, atomically against
    /// concurrent updates of the same key.
    pub fn update(&self, key: impl KeyOf<K>, f: impl Fn(Option<V>) -> V) -> Result<()> {
        let key = key.key();
        loop {
            let current = self.tree.get(&key)?;
            let old = current.clone().map(|v| self.value(v)).transpose()?;
            let new = f(old).to_ivec();
            if self
                .tree
                .compare_and_swap(&key, current, Some(new))?
                .is_ok()
            {
                return Ok(());
            }
        }
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }
}

impl<K: Key + ?Sized, V: Value> Tree<K, V> {
    fn entry(&self, kv: sled::Result<(IVec, IVec)>) -> Entries<K, V> {
        let (k, v) = kv?;
        let key = K::decode(&k).map_err(corrupt(self.name))?;
        Ok((key, self.value(v)?))
    }

    fn key_of(&self, k: sled::Result<IVec>) -> Result<K::Owned> {
        K::decode(&k?).map_err(corrupt(self.name))
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Entries<K, V>> + '_ {
        self.tree.iter().map(|kv| self.entry(kv))
    }

    /// Every key, in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = Result<K::Owned>> + '_ {
        self.tree.iter().keys().map(|k| self.key_of(k))
    }

    /// Every value, in key order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = Result<V>> + '_ {
        self.tree
            .iter()
            .values()
            .map(|v| v.map_err(StoreError::from).and_then(|v| self.value(v)))
    }

    /// The entries whose keys start with `prefix`, in key order.
    pub fn scan(
        &self,
        prefix: impl PrefixOf<K>,
    ) -> impl DoubleEndedIterator<Item = Entries<K, V>> + '_ {
        self.tree
            .scan_prefix(prefix.prefix())
            .map(|kv| self.entry(kv))
    }

    /// The keys that start with `prefix`, in order.
    pub fn scan_keys(
        &self,
        prefix: impl PrefixOf<K>,
    ) -> impl DoubleEndedIterator<Item = Result<K::Owned>> + '_ {
        self.tree
            .scan_prefix(prefix.prefix())
            .keys()
            .map(|k| self.key_of(k))
    }

    /// The entries whose keys start with `prefix`, after the key `after`
    /// (from the first, without one), in key order: a page of a listing.
    pub fn page<P: PrefixOf<K>, A: KeyOf<K>>(
        &self,
        prefix: P,
        after: Option<A>,
    ) -> impl Iterator<Item = Entries<K, V>> + '_ {
        let prefix = prefix.prefix().into_owned();
        let lower = match after {
            Some(a) => Bound::Excluded(a.key().into_owned()),
            None => Bound::Included(prefix.clone()),
        };
        self.tree
            .range::<Vec<u8>, _>((lower, Bound::Unbounded))
            .take_while(move |kv| kv.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
            .map(|kv| self.entry(kv))
    }

    /// Whether any key starts with `prefix`.
    pub fn any_with(&self, prefix: impl PrefixOf<K>) -> Result<bool> {
        Ok(self
            .tree
            .scan_prefix(prefix.prefix())
            .next()
            .transpose()?
            .is_some())
    }

    /// The entries between two keys, in key order.
    pub fn range<L: KeyOf<K>, U: KeyOf<K>>(
        &self,
        lower: Bound<L>,
        upper: Bound<U>,
    ) -> impl DoubleEndedIterator<Item = Entries<K, V>> + '_ {
        self.tree
            .range::<Vec<u8>, _>((owned(lower), owned(upper)))
            .map(|kv| self.entry(kv))
    }

    /// [`range`](Self::range), the values as stored.
    pub fn range_raw<L: KeyOf<K>, U: KeyOf<K>>(
        &self,
        lower: Bound<L>,
        upper: Bound<U>,
    ) -> impl DoubleEndedIterator<Item = Result<(K::Owned, IVec)>> + '_ {
        self.tree
            .range::<Vec<u8>, _>((owned(lower), owned(upper)))
            .map(|kv| {
                let (k, v) = kv?;
                Ok((K::decode(&k).map_err(corrupt(self.name))?, v))
            })
    }

    /// Removes every key between two keys, a bounded batch at a time;
    /// how many there were.
    pub fn remove_range<L: KeyOf<K>, U: KeyOf<K>>(
        &self,
        lower: Bound<L>,
        upper: Bound<U>,
    ) -> Result<usize> {
        const BATCH: usize = 4096;
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for k in self
            .tree
            .range::<Vec<u8>, _>((owned(lower), owned(upper)))
            .keys()
        {
            batch.remove(k?);
            n += 1;
            if n % BATCH == 0 {
                self.tree.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(n)
    }

    /// The entry with the greatest key.
    pub fn last(&self) -> Result<Option<(K::Owned, V)>> {
        self.tree
            .last()
            .transpose()
            .map(|kv| self.entry(kv))
            .transpose()
    }
}

fn owned<T: KeyOf<K>, K: ?Sized>(b: Bound<T>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(k) => Bound::Included(k.key().into_owned()),
        Bound::Excluded(k) => Bound::Excluded(k.key().into_owned()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// A typed tree inside a transaction.
pub(super) struct TxTree<'t, K: ?Sized, V> {
    tree: &'t TransactionalTree,
    name: &'static str,
    _kv: PhantomData<fn(&K) -> V>,
}

impl<'t, K: ?Sized, V: Value> TxTree<'t, K, V> {
    /// `tree`'s view in a transaction.
    pub fn new(tree: &'t TransactionalTree, of: &Tree<K, V>) -> Self {
        Self {
            tree,
            name: of.name,
            _kv: PhantomData,
        }
    }

    pub fn get(&self, key: impl KeyOf<K>) -> Tx<Option<V>> {
        match self.tree.get(key.key())? {
            Some(v) => Ok(Some(
                V::from_ivec(v).map_err(|e| abort(corrupt(self.name)(e)))?,
            )),
            None => Ok(None),
        }
    }

    pub fn contains(&self, key: impl KeyOf<K>) -> Tx<bool> {
        Ok(self.tree.get(key.key())?.is_some())
    }

    /// Stores `value` at `key`; whether a value was there before.
    pub fn insert(&self, key: impl KeyOf<K>, value: &V) -> Tx<bool> {
        Ok(self.tree.insert(&*key.key(), value.to_ivec())?.is_some())
    }

    /// [`insert`](Self::insert) of a value encoded beforehand.
    pub fn insert_encoded(&self, key: impl KeyOf<K>, value: &Encoded<V>) -> Tx<bool> {
        Ok(self
            .tree
            .insert(&*key.key(), value.bytes.clone())?
            .is_some())
    }

    /// Removes `key`, whatever its value was (one that no longer decodes
    /// included); whether it was there.
    pub fn remove(&self, key: impl KeyOf<K>) -> Tx<bool> {
        Ok(self.tree.remove(&*key.key())?.is_some())
    }

    /// Removes `key`; the value it had, decoded.
    pub fn take(&self, key: impl KeyOf<K>) -> Tx<Option<V>> {
        match self.tree.remove(&*key.key())? {
            Some(v) => Ok(Some(
                V::from_ivec(v).map_err(|e| abort(corrupt(self.name)(e)))?,
            )),
            None => Ok(None),
        }
    }

    /// A number no earlier call returned, in this database.
    pub fn generate_id(&self) -> Tx<u64> {
        Ok(self.tree.generate_id()?)
    }

    /// Removes `key`, whatever its value (a migration of old bytes).
    pub fn remove_raw(&self, key: &[u8]) -> Tx<()> {
        self.tree.remove(key)?;
        Ok(())
    }
}
