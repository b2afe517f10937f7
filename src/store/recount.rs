//! Counting in full what the kept counts say ([`super::records`],
//! [`super::counts`]): once when a store written before a count was kept
//! is opened, and on demand (`casemesh check-store`), to compare with what
//! is stored and, if asked, to repair it.

use std::collections::BTreeMap;

use super::counts::{self, KEPT, ORIGIN_PREFIX, OUTBOX_PREFIX};
use super::records::COUNT_KEYS;
use super::trees::tree_set;
use super::tx::unwrap_tx;
use super::typed::Value;
use super::{Result, Store, corrupt};
use crate::domain::OfficeId;

/// The counts of a store: records and versions, records per origin office,
/// outbox entries per peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreCounts {
    pub records: u64,
    pub versions: u64,
    /// Origin office → records of it held here (none: absent).
    pub origins: BTreeMap<String, u64>,
    /// Peer office → outbox entries waiting for it (none: absent).
    pub outbox: BTreeMap<String, u64>,
}

/// One count whose stored value is not what counting finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountDiff {
    /// `records`, `versions`, `records of <office>` or `outbox of <office>`.
    pub name: String,
    pub stored: u64,
    pub counted: u64,
}

impl StoreCounts {
    /// Every count as `(name, value)`, named as in [`CountDiff`].
    fn named(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        out.insert("records".to_owned(), self.records);
        out.insert("versions".to_owned(), self.versions);
        for (office, n) in &self.origins {
            out.insert(format!("records of {office}"), *n);
        }
        for (office, n) in &self.outbox {
            out.insert(format!("outbox of {office}"), *n);
        }
        out
    }

    /// The counts of `self` (stored) that differ from `counted`.
    pub fn differences(&self, counted: &StoreCounts) -> Vec<CountDiff> {
        let (stored, counted) = (self.named(), counted.named());
        let mut names: Vec<&String> = stored.keys().chain(counted.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .filter_map(|name| {
                let s = stored.get(name).copied().unwrap_or(0);
                let c = counted.get(name).copied().unwrap_or(0);
                (s != c).then(|| CountDiff {
                    name: name.clone(),
                    stored: s,
                    counted: c,
                })
            })
            .collect()
    }
}

tree_set! {
    /// Writing counts found by counting.
    RecountTx {
        counters: str => u64,
    }
}

impl Store {
    /// Counts records per origin and outbox entries per peer of a store
    /// written before they were kept: once, when it is opened.
    pub(super) fn init_office_counts(&self) -> Result<()> {
        if self.trees.counters.contains(KEPT)? {
            return Ok(());
        }
        let counted = self.recount_offices()?;
        unwrap_tx(RecountTx::run(&self.trees, |t| {
            for (office, n) in &counted.origins {
                t.counters.insert(counts::origin_key(office).as_str(), n)?;
            }
            for (office, n) in &counted.outbox {
                t.counters.insert(counts::outbox_key(office).as_str(), n)?;
            }
            t.counters.insert(KEPT, &1)?;
            Ok(())
        }))
    }

    /// Records of `origin` this node holds (its own, or a peer's replicas).
    pub fn records_of(&self, origin: &OfficeId) -> Result<u64> {
        let key = counts::origin_key(origin.as_str());
        Ok(self.trees.counters.get(key.as_str())?.unwrap_or(0))
    }

    /// The counts as kept.
    pub fn stored_counts(&self) -> Result<StoreCounts> {
        let (records, versions) = self.counts()?;
        Ok(StoreCounts {
            records,
            versions,
            origins: self.stored_with(ORIGIN_PREFIX)?,
            outbox: self.stored_with(OUTBOX_PREFIX)?,
        })
    }

    /// The counts of `counters` under `prefix`, by what follows it.
    fn stored_with(&self, prefix: &str) -> Result<BTreeMap<String, u64>> {
        let mut out = BTreeMap::new();
        for kv in self.trees.counters.raw().scan_prefix(prefix) {
            let (k, v) = kv?;
            let n = u64::decode(&v).map_err(corrupt("counters"))?;
            let office = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            out.insert(office, n);
        }
        Ok(out)
    }

    /// Counts everything the kept counts count, by reading every record
    /// head, version key and outbox key: as long as those trees take.
    pub fn recount(&self) -> Result<StoreCounts> {
        let offices = self.recount_offices()?;
        let records = offices.origins.values().sum();
        let mut versions = 0;
        for k in self.trees.versions.raw().iter().keys() {
            k?;
            versions += 1;
        }
        Ok(StoreCounts {
            records,
            versions,
            ..offices
        })
    }

    /// Records per origin and outbox entries per peer, counted.
    fn recount_offices(&self) -> Result<StoreCounts> {
        let mut out = StoreCounts::default();
        for id in self.trees.heads.keys() {
            *out.origins.entry(id?.origin().to_string()).or_default() += 1;
        }
        // Outbox keys are `office ‖ 0 ‖ seq`.
        for k in self.trees.outbox.raw().iter().keys() {
            let k = k?;
            let office = k.split(|&b| b == 0).next().unwrap_or_default();
            *out.outbox
                .entry(String::from_utf8_lossy(office).into_owned())
                .or_default() += 1;
        }
        Ok(out)
    }

    /// Stores `counted` as the kept counts, dropping counts it does not
    /// have: the repair `casemesh check-store --fix` makes (the node must
    /// be stopped, or its writes could be counted twice or not at all).
    pub fn set_counts(&self, counted: &StoreCounts) -> Result<()> {
        let mut stale: Vec<Vec<u8>> = Vec::new();
        for prefix in [ORIGIN_PREFIX, OUTBOX_PREFIX] {
            for k in self.trees.counters.raw().scan_prefix(prefix).keys() {
                stale.push(k?.to_vec());
            }
        }
        let [records_key, versions_key] = COUNT_KEYS;
        unwrap_tx(RecountTx::run(&self.trees, |t| {
            for k in &stale {
                t.counters.remove_raw(k)?;
            }
            t.counters.insert(records_key, &counted.records)?;
            t.counters.insert(versions_key, &counted.versions)?;
            for (office, n) in &counted.origins {
                t.counters.insert(counts::origin_key(office).as_str(), n)?;
            }
            for (office, n) in &counted.outbox {
                t.counters.insert(counts::outbox_key(office).as_str(), n)?;
            }
            t.counters.insert(KEPT, &1)?;
            Ok(())
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::sharing::FeedItem;
    use crate::domain::{RecordId, UserName};
    use crate::identity::OfficeCa;
    use crate::identity::signing::test_support::signed;
    use crate::store::{ApplyItem, StoreOptions};

    fn office(s: &str) -> OfficeId {
        OfficeId::parse(s).unwrap()
    }

    fn ca(of: &OfficeId) -> OfficeCa {
        OfficeCa::create(of, &[], &UserName::parse("admin").unwrap())
            .unwrap()
            .0
    }

    /// After local writes (with feed entries for two peers), replicas
    /// applied from two peers, a revocation, acknowledgements, a peer's
    /// feeds forgotten and a peer's replicas purged, every kept count is
    /// what counting finds; a store whose per-office counts were never
    /// kept is counted when opened.
    #[test]
    fn kept_counts_match_a_full_count_after_a_mixed_workload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let (phila, nyc, mpls) = (office("phila-da"), office("nyc-da"), office("mpls-da"));
        let (phila_ca, nyc_ca, mpls_ca) = (ca(&phila), ca(&nyc), ca(&mpls));
        let store = Store::open(&path, "phila-da", &StoreOptions::for_tests()).unwrap();
        let check = |when: &str| {
            let (stored, counted) = (store.stored_counts().unwrap(), store.recount().unwrap());
            assert_eq!(stored.differences(&counted), [], "{when}");
            assert_eq!(stored, counted, "{when}");
        };
        for i in 0..6u8 {
            let id = RecordId::generate(&phila, 1_000 + u64::from(i), [i; 10]);
            for version in 1..=2 {
                let v = signed(&phila_ca, &id, version, "case-1", Vec::new());
                let item = |peer: &OfficeId| {
                    (
                        peer.clone(),
                        FeedItem::Versions {
                            id: id.clone(),
                            from: version,
                            to: version,
                        },
                    )
                };
                let feed = vec![item(&nyc), item(&mpls)];
                let expected = (version > 1).then_some(version - 1);
                store.append_version(&v, expected, &feed, &[]).unwrap();
            }
        }
        check("after local writes");
        assert_eq!(store.outbox_pending(&nyc).unwrap(), 12);
        let replica = |ca: &OfficeCa, origin: &OfficeId, n: u8, version| {
            let id = RecordId::generate(origin, 2_000 + u64::from(n), [n; 10]);
            ApplyItem::Version(Box::new(signed(ca, &id, version, "case-9", Vec::new())))
        };
        let from_nyc: Vec<ApplyItem> = (0..4)
            .flat_map(|n| [replica(&nyc_ca, &nyc, n, 1), replica(&nyc_ca, &nyc, n, 2)])
            .collect();
        store.apply_batch(&nyc, &from_nyc, 8, 1, &[]).unwrap();
        // Applied again: held already, counted once.
        store.apply_batch(&nyc, &from_nyc, 8, 1, &[]).unwrap();
        let from_mpls: Vec<ApplyItem> = (0..3).map(|n| replica(&mpls_ca, &mpls, n, 1)).collect();
        store.apply_batch(&mpls, &from_mpls, 3, 1, &[]).unwrap();
        check("after replicas");
        assert_eq!(store.records_of(&nyc).unwrap(), 4);
        assert_eq!(store.records_of(&mpls).unwrap(), 3);
        assert_eq!(store.records_of(&phila).unwrap(), 6);

        let revoked = RecordId::generate(&nyc, 2_000, [0; 10]);
        store
            .apply_batch(&nyc, &[ApplyItem::Revoke(revoked)], 9, 2, &[])
            .unwrap();
        store.ack_outbox(&nyc, 5).unwrap();
        store.ack_outbox(&nyc, 3).unwrap();
        check("after a revocation and acknowledgements");
        assert_eq!(store.records_of(&nyc).unwrap(), 3);
        assert_eq!(store.outbox_pending(&nyc).unwrap(), 7);

        store.forget_peer_feeds(&mpls).unwrap();
        let actor = crate::domain::audit::Actor::node("phila-da");
        assert_eq!(store.purge_replicas_of(&mpls, 3, &actor).unwrap(), 3);
        check("after a peer was removed");
        assert_eq!(store.outbox_pending(&mpls).unwrap(), 0);
        assert_eq!(store.records_of(&mpls).unwrap(), 0);
        let kept = store.stored_counts().unwrap();

        // A store written before these counts were kept.
        for key in [
            counts::origin_key("phila-da"),
            counts::origin_key("nyc-da"),
            counts::outbox_key("nyc-da"),
        ] {
            store.trees.counters.remove(key.as_str()).unwrap();
        }
        store.trees.counters.remove(KEPT).unwrap();
        store.flush_now().unwrap();
        drop(store);
        let store = Store::open(&path, "phila-da", &StoreOptions::for_tests()).unwrap();
        assert_eq!(store.stored_counts().unwrap(), kept);

        // A damaged count is found, and repaired.
        store
            .trees
            .counters
            .insert("count:origin:nyc-da", &9)
            .unwrap();
        let counted = store.recount().unwrap();
        let diff = store.stored_counts().unwrap().differences(&counted);
        assert_eq!(
            diff,
            [CountDiff {
                name: "records of nyc-da".into(),
                stored: 9,
                counted: 3,
            }]
        );
        store.set_counts(&counted).unwrap();
        assert_eq!(store.stored_counts().unwrap(), kept);
    }
}
