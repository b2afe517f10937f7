//! Writing and reading records: versioning, signing, optimistic concurrency,
//! pagination.

use crate::domain::subject::canonical_order;
use std::sync::Arc;

use bytes::Bytes;
use tracing::Instrument;

use crate::domain::audit::Target;
use crate::domain::{Draft, Limits, OfficeId, RecordId, RecordVersion, SignedVersion, now_ms};
use crate::error::{Error, Result};
use crate::identity::{OfficeCa, OfficeSigner};
use crate::service::Call;
use crate::service::Sharing;
use crate::store::{ListFilter, Store, StoreError};

/// Largest page `List` returns, and the page size when none is asked for.
pub const MAX_PAGE_SIZE: usize = 1000;
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// How often a put without `expected_version` retries when a concurrent
/// writer moved the head first. Writers to one record take turns
/// ([`RecordService::turn`]), so this is a safeguard, not the normal path.
const MAX_RETRIES: usize = 16;

/// Locks that writers of records take turns on, by a hash of the id
/// (writers of two records that share one take turns too).
const TURNS: usize = 1024;

/// A write: a new record (`id: None`) or a new version of one.
#[derive(Debug, Clone)]
pub struct PutCommand {
    pub id: Option<RecordId>,
    pub expected_version: Option<u64>,
    pub draft: Draft,
}

/// A request for one page of `List`.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub filter: ListFilter,
    pub page_size: usize,
    pub page_token: String,
}

impl PageRequest {
    /// The last record of the page before, read from the token: none for
    /// the first page; an error for a token this node did not write for
    /// these filters.
    pub fn after(&self) -> Result<Option<RecordId>> {
        decode_token(&self.page_token, &self.filter)
    }
}

pub struct RecordService {
    office: OfficeId,
    store: Arc<Store>,
    ca: Arc<OfficeCa>,
    limits: Limits,
    sharing: Arc<Sharing>,
    turns: Vec<tokio::sync::Mutex<()>>,
    /// How many writes are running; shutdown waits for none.
    writing: tokio::sync::watch::Sender<usize>,
}

/// Counts one running write while it lives.
struct Writing(tokio::sync::watch::Sender<usize>);

impl Drop for Writing {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl RecordService {
    /// How many records (heads) and versions this node holds, its own and
    /// replicas.
    pub fn counts(&self) -> Result<(u64, u64)> {
        Ok(self.store.counts()?)
    }

    /// Free space on the store's disk, and whether writes are accepted.
    pub fn storage(&self) -> crate::store::Storage {
        self.store.storage()
    }

    pub fn new(
        office: OfficeId,
        store: Arc<Store>,
        ca: Arc<OfficeCa>,
        limits: Limits,
        sharing: Arc<Sharing>,
    ) -> Self {
        Self {
            office,
            store,
            ca,
            limits,
            sharing,
            turns: (0..TURNS).map(|_| tokio::sync::Mutex::new(())).collect(),
            writing: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Runs a write to its end even if the caller goes away (a cancelled
    /// call, a deadline): the write holds the write gate until its version
    /// is applied, so that a grant change never runs between the two.
    /// [`join_writes`](Self::join_writes) waits for such writes.
    async fn to_completion<T: Send + 'static>(
        &self,
        write: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        self.writing.send_modify(|n| *n += 1);
        let counted = Writing(self.writing.clone());
        let task = tokio::spawn(
            async move {
                let _counted = counted;
                write.await
            }
            .in_current_span(),
        );
        task.await.map_err(|e| {
            Error::Store(StoreError::Inconsistent(format!(
                "the write's task failed: {e}"
            )))
        })?
    }

    /// Waits until no write is running (at shutdown, once no call can
    /// start one).
    pub async fn join_writes(&self) {
        let _ = self.writing.subscribe().wait_for(|n| *n == 0).await;
    }

    /// The lock that writers of `id` take turns on, taken after the write
    /// gate: each reads the head once the writer before it has applied its
    /// version, instead of all reading the same head and all but one
    /// retrying.
    fn turn(&self, id: &RecordId) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        id.as_str().hash(&mut h);
        &self.turns[(h.finish() % TURNS as u64) as usize]
    }

    fn check_origin(&self, id: &RecordId) -> Result<()> {
        let origin = id.origin();
        if origin != self.office {
            return Err(Error::NotOrigin {
                id: id.to_string(),
                origin: origin.to_string(),
            });
        }
        Ok(())
    }

    /// Writes a new version; durable when this returns.
    pub async fn put(self: &Arc<Self>, cmd: PutCommand, call: Arc<Call>) -> Result<SignedVersion> {
        let this = self.clone();
        self.to_completion(async move { this.write_put(cmd, &call).await })
            .await
    }

    async fn write_put(&self, cmd: PutCommand, call: &Call) -> Result<SignedVersion> {
        cmd.draft.validate(&self.limits)?;
        let mut draft = cmd.draft;
        super::blobs::resolve(&self.store, &mut draft.attachments)?;
        if draft.content_type.is_empty() {
            draft.content_type = crate::domain::record::DEFAULT_CONTENT_TYPE.to_owned();
        }
        // Feed entries are computed and stored with the version, while no
        // grant change can run.
        let gate = self.sharing.write_guard().await;
        let signed = match cmd.id {
            None => self.create(draft, cmd.expected_version, call).await?,
            Some(id) => {
                self.check_origin(&id)?;
                let _turn = self.turn(&id).lock().await;
                self.write_next(
                    &id,
                    cmd.expected_version,
                    |prev| RecordVersion {
                        id: id.clone(),
                        version: prev.version + 1,
                        origin: self.office.clone(),
                        collection: draft.collection.clone(),
                        kind: draft.kind.clone(),
                        title: draft.title.clone(),
                        content_type: draft.content_type.clone(),
                        labels: draft.labels.clone(),
                        body: draft.body.clone(),
                        created_at_ms: prev.created_at_ms,
                        updated_at_ms: now_ms(),
                        deleted: false,
                        attachments: draft.attachments.clone(),
                        subjects: canonical_order(draft.subjects.clone()),
                    },
                    call,
                )
                .await?
            }
        };
        drop(gate);
        Ok(signed)
    }

    async fn create(
        &self,
        draft: Draft,
        expected_version: Option<u64>,
        call: &Call,
    ) -> Result<SignedVersion> {
        if let Some(v) = expected_version.filter(|&v| v != 0) {
            return Err(Error::VersionOnNewRecord(v));
        }
        let now = now_ms();
        let mut random = [0u8; 10];
        crate::domain::random_bytes(&mut random);
        let record = RecordVersion {
            id: RecordId::generate(&self.office, now, random),
            version: 1,
            origin: self.office.clone(),
            collection: draft.collection,
            kind: draft.kind,
            title: draft.title,
            content_type: draft.content_type,
            labels: draft.labels,
            body: draft.body,
            created_at_ms: now,
            updated_at_ms: now,
            deleted: false,
            attachments: draft.attachments,
            subjects: canonical_order(draft.subjects),
        };
        let signed = OfficeSigner::new(&self.ca).sign(record)?;
        let feed = self.sharing.feed_for_write(None, &signed.record);
        let entry = call.entry(version_target(&signed));
        self.store
            .write_version(&signed, None, feed, vec![entry])
            .await?;
        Ok(signed)
    }

    /// Builds, signs and appends the version after the current head,
    /// retrying when another writer got there first (unless the caller
    /// pinned `expected_version`).
    async fn write_next(
        &self,
        id: &RecordId,
        expected_version: Option<u64>,
        next: impl Fn(&RecordVersion) -> RecordVersion,
        call: &Call,
    ) -> Result<SignedVersion> {
        for _ in 0..MAX_RETRIES {
            let prev = self
                .store
                .latest(id)?
                .ok_or_else(|| Error::RecordNotFound(id.to_string()))?;
            if let Some(expected) = expected_version {
                if expected != prev.record.version {
                    return Err(Error::VersionConflict {
                        id: id.to_string(),
                        expected,
                        actual: prev.record.version,
                    });
                }
            }
            let signed = OfficeSigner::new(&self.ca).sign(next(&prev.record))?;
            let feed = self
                .sharing
                .feed_for_write(Some(&prev.record.collection), &signed.record);
            let entry = call.entry(version_target(&signed));
            match self
                .store
                .write_version(&signed, Some(prev.record.version), feed, vec![entry])
                .await
            {
                Ok(()) => return Ok(signed),
                Err(StoreError::HeadMoved { actual, .. }) => {
                    if let Some(expected) = expected_version {
                        return Err(Error::VersionConflict {
                            id: id.to_string(),
                            expected,
                            actual: actual.unwrap_or(0),
                        });
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::RecordBusy {
            id: id.to_string(),
            tries: MAX_RETRIES,
        })
    }

    /// Writes a signed tombstone; durable when this returns.
    pub async fn delete(
        self: &Arc<Self>,
        id: RecordId,
        expected_version: Option<u64>,
        call: Arc<Call>,
    ) -> Result<SignedVersion> {
        let this = self.clone();
        self.to_completion(async move { this.write_delete(&id, expected_version, &call).await })
            .await
    }

    async fn write_delete(
        &self,
        id: &RecordId,
        expected_version: Option<u64>,
        call: &Call,
    ) -> Result<SignedVersion> {
        self.check_origin(id)?;
        let gate = self.sharing.write_guard().await;
        // Under the record's turn, the deleted check holds until the
        // tombstone is written.
        let _turn = self.turn(id).lock().await;
        if let Some(head) = self.store.head(id)? {
            if head.deleted {
                return Err(Error::AlreadyDeleted {
                    id: id.to_string(),
                    version: head.version,
                });
            }
        }
        let signed = self
            .write_next(
                id,
                expected_version,
                |prev| RecordVersion {
                    id: id.clone(),
                    version: prev.version + 1,
                    origin: self.office.clone(),
                    collection: prev.collection.clone(),
                    kind: prev.kind.clone(),
                    title: prev.title.clone(),
                    content_type: String::new(),
                    labels: Default::default(),
                    body: Bytes::new(),
                    created_at_ms: prev.created_at_ms,
                    updated_at_ms: now_ms(),
                    deleted: true,
                    attachments: Vec::new(),
                    subjects: Vec::new(),
                },
                call,
            )
            .await?;
        drop(gate);
        Ok(signed)
    }

    pub fn get(&self, id: &RecordId, version: Option<u64>) -> Result<SignedVersion> {
        match version {
            None => self
                .store
                .latest(id)?
                .ok_or_else(|| Error::RecordNotFound(id.to_string())),
            Some(v) => self.store.version(id, v)?.ok_or_else(|| {
                if matches!(self.store.head(id), Ok(Some(_))) {
                    Error::VersionNotFound {
                        id: id.to_string(),
                        version: v,
                    }
                } else {
                    Error::RecordNotFound(id.to_string())
                }
            }),
        }
    }

    pub fn history(&self, id: &RecordId) -> Result<Vec<SignedVersion>> {
        let versions = self.store.history(id)?;
        if versions.is_empty() {
            return Err(Error::RecordNotFound(id.to_string()));
        }
        Ok(versions)
    }

    /// One page of latest versions, and the token for the next page.
    pub fn list(&self, req: &PageRequest) -> Result<(Vec<SignedVersion>, String)> {
        let size = match req.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let after = req.after()?;
        let page = self.store.list(&req.filter, after.as_ref(), size)?;
        let token = page
            .next_after
            .map(|id| encode_token(&id, &req.filter))
            .unwrap_or_default();
        Ok((page.records, token))
    }
}

/// What the audit entry of a written version names.
fn version_target(v: &SignedVersion) -> Target {
    let mut t = Target::record(v.record.id.as_str(), v.record.version);
    t.collection = v.record.collection.clone();
    if !v.record.attachments.is_empty() {
        let files: Vec<String> = v
            .record
            .attachments
            .iter()
            .map(|a| a.hash.to_hex())
            .collect();
        t.detail = crate::domain::audit::clip(&format!("attachments {}", files.join(" ")));
    }
    t
}

/// Page tokens are opaque to clients: four bytes tying the token to its
/// filters, then the last id returned, hex-encoded.
fn filter_tag(filter: &ListFilter) -> [u8; 4] {
    let mut w = crate::domain::codec::Writer::default();
    w.str(filter.collection.as_deref().unwrap_or(""))
        .str(filter.origin.as_ref().map(|o| o.as_str()).unwrap_or(""));
    let d = crate::domain::record::sha256(&w.finish());
    [d[0], d[1], d[2], d[3]]
}

fn encode_token(after: &RecordId, filter: &ListFilter) -> String {
    let mut bytes = filter_tag(filter).to_vec();
    bytes.extend_from_slice(after.as_str().as_bytes());
    hex::encode(bytes)
}

fn decode_token(token: &str, filter: &ListFilter) -> Result<Option<RecordId>> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || Error::BadPageToken;
    let bytes = hex::decode(token).map_err(|_| bad())?;
    if bytes.len() < 5 {
        return Err(bad());
    }
    if bytes[..4] != filter_tag(filter) {
        return Err(Error::PageTokenForOtherFilters);
    }
    let id = std::str::from_utf8(&bytes[4..]).map_err(|_| bad())?;
    RecordId::parse(id).map(Some).map_err(|_| bad())
}
