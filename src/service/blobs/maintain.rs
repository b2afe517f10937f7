//! Keeping stored files whole over the years: finishing at start what a
//! crash interrupted, moving blobs out of sled chunks, removing files no
//! record lists, and scrubbing (re-hashing every stored file).

use std::time::{Duration, Instant};

use crate::domain::BlobHash;
use crate::domain::audit::{Actor, Draft, Outcome, Target};
use crate::domain::blobstore::BlobStoreError;
use crate::domain::now_ms;
use crate::error::{Error, Result};
use crate::store::blobs::{DamageAction, SledChunks};
use crate::store::staging::{StagedName, remove_if_there};

use super::{BlobService, PIECE, blob_store_failed, staging_failed};

/// What a scrub found.
#[derive(Debug, Default, Clone)]
pub struct ScrubReport {
    /// Files checked, and their bytes.
    pub files: u64,
    pub bytes: u64,
    pub damaged: Vec<ScrubFinding>,
}

/// One file whose stored bytes were not what their name says.
#[derive(Debug, Clone)]
pub struct ScrubFinding {
    pub hash: BlobHash,
    pub size: u64,
    /// What was wrong (`its bytes no longer hash to its name`, …).
    pub problem: String,
    /// What was done: `fetching again from <office>`, `marked damaged`.
    pub action: String,
}

impl BlobService {
    fn node_entry(&self, what: &str, detail: String, outcome: Outcome) -> Draft {
        Draft::new(
            Actor::node(self.sharing.office().as_str()),
            what,
            Target::detail(detail),
            outcome,
        )
    }

    /// Deals with a file whose stored bytes are not what its name says: a
    /// replica's is removed and fetched again from its origin, one of this
    /// office's own is marked and never served (until uploaded again);
    /// either way the audit log says so. Returns the error a reader of the
    /// file gets.
    pub(super) async fn damaged(&self, hash: &BlobHash, problem: &str) -> Error {
        match self.handle_damage(hash, problem).await {
            Ok(_) => Error::BlobDamaged {
                hash: *hash,
                at_ms: now_ms(),
            },
            Err(e) => e,
        }
    }

    async fn handle_damage(&self, hash: &BlobHash, problem: &str) -> Result<String> {
        tracing::error!(%hash, problem, "a stored file is damaged");
        let action = self.store.blob_damaged(hash, now_ms(), |action| {
            let (detail, code) = match action {
                DamageAction::Refetch(origin) => {
                    (format!("fetching it again from {origin}"), "DATA_LOSS")
                }
                DamageAction::Marked => (
                    "this office's own file: marked damaged, not served; upload the original again"
                        .into(),
                    "DATA_LOSS",
                ),
                DamageAction::Unlisted => ("no record lists it".into(), "DATA_LOSS"),
            };
            self.node_entry(
                "Node.BlobDamaged",
                format!("file {hash}: {problem}; {detail}"),
                Outcome::failed(code, problem),
            )
        })?;
        self.store.commit().await?;
        Ok(match action {
            DamageAction::Refetch(origin) => format!("fetching again from {origin}"),
            DamageAction::Marked => "marked damaged; upload the original file again".into(),
            DamageAction::Unlisted => "marked damaged; no record lists it".into(),
        })
    }

    /// Deletes from the blob store the bytes of hashes taken off the books
    /// (each marked as being deleted). A hash whose bytes are gone is
    /// settled; one whose deletion failed stays unsettled, to be deleted
    /// again at the next start. Either way no writer waits on it any more.
    async fn delete_doomed(&self, hashes: &[BlobHash]) -> Result<()> {
        let mut first_error = None;
        for hash in hashes {
            let outcome = match self.bytes.delete(hash).await {
                Ok(()) => self.store.deleted(hash).map_err(Error::from),
                Err(e) => {
                    tracing::error!(%hash, error = %e, "could not delete a file's bytes; deleted again at the next start");
                    self.store.delete_failed(hash);
                    Err(blob_store_failed(e))
                }
            };
            if let Err(e) = outcome {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Re-hashes every stored file, at most `bytes_per_sec` (0: as fast as
    /// the store reads), and deals with each that does not match.
    pub async fn scrub(&self, bytes_per_sec: u64) -> Result<ScrubReport> {
        let mut report = ScrubReport::default();
        let started = Instant::now();
        let listed = self.store.blob_list()?;
        // A store that holds nothing at all while sled lists files is more
        // likely unmounted or misnamed (bucket, prefix) than emptied: not
        // treated as every file damaged.
        if !listed.is_empty()
            && self
                .bytes
                .list()
                .await
                .map_err(blob_store_failed)?
                .is_empty()
        {
            return Err(Error::StorageFailed(format!(
                "{} holds no files at all, while {} are listed: is it mounted, are the bucket and prefix right? Nothing was changed",
                self.bytes.describe(),
                listed.len()
            )));
        }
        for (hash, size) in listed {
            if *self.shutdown.borrow() {
                return Err(Error::ShuttingDown);
            }
            let _pin = self.store.pin_blob(hash);
            if self.store.blob(&hash)?.is_none_or(|m| m.legacy.is_some()) {
                continue;
            }
            let marked = self.store.damaged(&hash)?;
            let problem = self
                .check(&hash, size, bytes_per_sec, started, &mut report)
                .await?;
            report.files += 1;
            if let Some(since) = marked {
                match problem {
                    // Put back (from a backup, say): served again.
                    None => {
                        let entry = self.node_entry(
                            "Node.BlobRestored",
                            format!("file {hash}: its stored bytes hash to its name again"),
                            Outcome::ok(),
                        );
                        self.store.damage_cleared(&hash, entry)?;
                        self.store.commit().await?;
                    }
                    Some(problem) => report.damaged.push(ScrubFinding {
                        hash,
                        size,
                        problem,
                        action: format!(
                            "still marked damaged (since {}); upload the original file again",
                            crate::domain::format_time(since)
                        ),
                    }),
                }
                continue;
            }
            if let Some(problem) = problem {
                let action = self.handle_damage(&hash, &problem).await?;
                report.damaged.push(ScrubFinding {
                    hash,
                    size,
                    problem,
                    action,
                });
            }
        }
        Ok(report)
    }

    /// What is wrong with the stored bytes of `hash`, if anything.
    async fn check(
        &self,
        hash: &BlobHash,
        size: u64,
        bytes_per_sec: u64,
        started: Instant,
        report: &mut ScrubReport,
    ) -> Result<Option<String>> {
        let mut hasher = blake3::Hasher::new();
        let mut at = 0;
        while at < size {
            let want = (size - at).min(PIECE as u64) as usize;
            let piece = match self.bytes.read(hash, at, want).await {
                Ok(piece) => piece,
                Err(BlobStoreError::NotFound(_)) => {
                    return Ok(Some("it is missing from the blob store".into()));
                }
                Err(e) => return Err(blob_store_failed(e)),
            };
            if piece.len() != want {
                return Ok(Some(format!(
                    "it ends at {} bytes, not {size}",
                    at + piece.len() as u64
                )));
            }
            hasher.update(&piece);
            at += want as u64;
            report.bytes += want as u64;
            if bytes_per_sec > 0 {
                let due = Duration::from_secs_f64(report.bytes as f64 / bytes_per_sec as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        Ok((hasher.finalize().as_bytes() != &hash.0)
            .then(|| "its bytes no longer hash to its name".into()))
    }

    /// Removes the files no record lists (past their grace time) and the
    /// fetches no record wants. Returns how many of each.
    pub async fn sweep(&self) -> Result<(usize, usize)> {
        let doomed = self.store.doom_unreferenced(now_ms())?;
        if let Err(e) = self.store.commit().await {
            for hash in &doomed.blobs {
                self.store.delete_failed(hash);
            }
            return Err(e.into());
        }
        let deleted = self.delete_doomed(&doomed.blobs).await;
        for hash in &doomed.fetches {
            if let Err(e) = self.staging.drop_fetch(hash) {
                // Removed at the next start (no fetch wants it).
                tracing::error!(%hash, error = %e, "could not remove a staged fetch");
            }
        }
        deleted?;
        Ok((doomed.blobs.len(), doomed.fetches.len()))
    }

    /// Run once at start, before the node serves: deletes the bytes a crash
    /// left unrecorded, removes staged files nothing will resume, and moves
    /// any blobs still in sled chunks into the blob store.
    pub async fn recover(&self) -> Result<()> {
        let unsettled = self.store.unsettled()?;
        for hash in &unsettled {
            self.store.deleting(hash);
        }
        self.delete_doomed(&unsettled).await?;
        self.tidy_staging()?;
        self.migrate().await
    }

    fn tidy_staging(&self) -> Result<()> {
        for (path, name) in self.staging.entries().map_err(staging_failed)? {
            let keep = match name {
                StagedName::Fetch(hash) => {
                    self.store.fetch(&hash)?.is_some_and(|f| f.legacy.is_none())
                }
                StagedName::Upload | StagedName::Migrate => false,
                StagedName::Other => {
                    tracing::warn!(path = %path.display(), "a file in the staging directory that casemesh did not write; left alone");
                    true
                }
            };
            if !keep {
                remove_if_there(&path).map_err(staging_failed)?;
            }
        }
        Ok(())
    }

    /// Moves every blob still stored in sled chunks (written before the
    /// blob store) into the blob store, one at a time: staged, checked
    /// against its hash, adopted, and only then removed from sled. A crash
    /// part-way redoes the blob it was moving. A fetch begun in chunks
    /// goes on from its bytes, now staged.
    async fn migrate(&self) -> Result<()> {
        let crate::store::blobs::Legacy { blobs, fetches } = self.store.legacy_blobs()?;
        if blobs.is_empty() && fetches.is_empty() {
            return Ok(());
        }
        let total: u64 = blobs.iter().map(|(_, m)| m.size).sum();
        self.room_to_migrate(&blobs, &fetches)?;
        tracing::info!(
            files = blobs.len(),
            bytes = total,
            fetches = fetches.len(),
            to = %self.bytes.describe(),
            "moving files out of the record store"
        );
        for (hash, meta) in blobs {
            let Some(chunks) = meta.legacy else { continue };
            if self.store.damaged(&hash)?.is_some() {
                continue;
            }
            let mut staged = self.staging.migrate(&hash).map_err(staging_failed)?;
            self.copy_chunks(chunks, meta.size, &mut staged)?;
            if staged.hash() != hash {
                drop(staged);
                let problem = "its bytes in the record store no longer hash to its name";
                self.handle_damage(&hash, problem).await?;
                continue;
            }
            // Recording it in the blob store dooms its chunks.
            self.keep(staged, meta.keep_until_ms, None).await?;
        }
        for (hash, fetch) in fetches {
            let Some((chunks, received)) = fetch.legacy else {
                continue;
            };
            let mut staged = self
                .staging
                .resume_fetch(&hash, 0)
                .map_err(staging_failed)?;
            self.copy_chunks(chunks, received.min(fetch.size), &mut staged)?;
            staged.sync().map_err(staging_failed)?;
            self.store.fetch_migrated(&hash)?;
        }
        self.store.commit().await?;
        tracing::info!("files moved out of the record store");
        Ok(())
    }

    /// Refuses to start moving files out of sled when the disk cannot take
    /// them: each is written out whole before its chunks go (and sled does
    /// not give their space back while it runs), so the disk needs room for
    /// all of them (for an S3 store, for the largest, staged on the way).
    /// Refusing before the first file keeps the data directory readable by
    /// the previous version.
    fn room_to_migrate(
        &self,
        blobs: &[(BlobHash, crate::store::blobs::BlobMeta)],
        fetches: &[(BlobHash, crate::store::blobs::Fetch)],
    ) -> Result<()> {
        let sizes = blobs.iter().map(|(_, m)| m.size).chain(
            fetches
                .iter()
                .filter_map(|(_, f)| f.legacy.map(|(_, received)| received.min(f.size))),
        );
        let need = if self.bytes.on_local_disk() {
            sizes.sum::<u64>()
        } else {
            sizes.max().unwrap_or(0)
        };
        let storage = self.store.storage();
        let Some(free) = storage.free_bytes else {
            return Ok(());
        };
        let wanted = need.saturating_add(storage.reserve_bytes);
        if free < wanted {
            return Err(Error::DiskFull(format!(
                "moving the attached files out of the record store needs {} free on the data directory's disk ({} of files plus the {} reserve); {} are free. Free space (or grow the disk) and start the node again; nothing has been changed",
                crate::domain::format_size(wanted),
                crate::domain::format_size(need),
                crate::domain::format_size(storage.reserve_bytes),
                crate::domain::format_size(free)
            )));
        }
        Ok(())
    }

    /// Appends the first `len` bytes of legacy chunks to `staged`.
    fn copy_chunks(
        &self,
        chunks: SledChunks,
        len: u64,
        staged: &mut crate::store::staging::StagedFile,
    ) -> Result<()> {
        let mut index = 0;
        while staged.len() < len {
            // A missing chunk leaves the file short: its hash tells.
            let Some(chunk) = self.store.chunk(chunks.storage, index)? else {
                break;
            };
            let take = (len - staged.len()).min(chunk.len() as u64) as usize;
            staged.write(&chunk[..take]).map_err(staging_failed)?;
            index += 1;
        }
        Ok(())
    }
}

/// Scrubs every stored file each `scrub_interval` (none when zero), at
/// most `scrub_bytes_per_sec`, until shutdown. The first scrub starts one
/// interval after the node does.
pub async fn run_scrubber(
    blobs: std::sync::Arc<BlobService>,
    config: crate::config::BlobConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    if config.scrub_interval.is_zero() {
        return;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(config.scrub_interval) => {}
            _ = shutdown.changed() => return,
        }
        let scrub = blobs.scrub(config.scrub_bytes_per_sec);
        tokio::select! {
            done = scrub => match done {
                Ok(report) => tracing::info!(
                    files = report.files,
                    bytes = report.bytes,
                    damaged = report.damaged.len(),
                    "scrubbed the stored files"
                ),
                Err(e) => tracing::error!(error = %e, "scrubbing the stored files failed"),
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// What copying every file into another blob store did.
#[derive(Debug, Default, Clone)]
pub struct CopyReport {
    /// Files copied now, and their bytes.
    pub copied: u64,
    pub bytes: u64,
    /// Files the destination held already (an earlier run, say).
    pub already: u64,
    /// Files that could not be copied whole, and why.
    pub failed: Vec<(BlobHash, String)>,
}

/// Copies every whole file `store` lists from `from` into `to`, each read
/// into a staged file, checked against its hash, then adopted; files `to`
/// holds already at their size are skipped, so a run cut short goes on.
/// For a stopped node (`casemesh blob move`); `from` is left as it was.
pub async fn copy_store(
    store: &crate::store::Store,
    staging: &crate::store::staging::Staging,
    from: &dyn crate::domain::blobstore::BlobStore,
    to: &dyn crate::domain::blobstore::BlobStore,
) -> Result<CopyReport> {
    let legacy = store.legacy_blobs()?;
    let mut unmoved = Vec::new();
    for (hash, _) in &legacy.blobs {
        if store.damaged(hash)?.is_none() {
            unmoved.push(*hash);
        }
    }
    if !unmoved.is_empty() || !legacy.fetches.is_empty() {
        return Err(Error::StorageFailed(
            "some files are still kept in the record store, as earlier versions kept them: start the node once so that it moves them, stop it, then move the files".into(),
        ));
    }
    let held: std::collections::HashMap<BlobHash, u64> = to
        .list()
        .await
        .map_err(blob_store_failed)?
        .into_iter()
        .collect();
    let mut report = CopyReport::default();
    for (hash, size) in store.blob_list()? {
        if held.get(&hash) == Some(&size) {
            report.already += 1;
            continue;
        }
        if let Some(since) = store.damaged(&hash)? {
            let when = crate::domain::format_time(since);
            report
                .failed
                .push((hash, format!("marked damaged since {when}")));
            continue;
        }
        let mut staged = staging.migrate(&hash).map_err(staging_failed)?;
        let mut at = 0;
        let mut problem = None;
        while at < size {
            let want = (size - at).min(PIECE as u64) as usize;
            match from.read(&hash, at, want).await {
                Ok(piece) if piece.len() == want => {
                    staged.write(&piece).map_err(staging_failed)?;
                    at += want as u64;
                }
                Ok(piece) => {
                    problem = Some(format!(
                        "it ends at {} bytes, not {size}",
                        at + piece.len() as u64
                    ));
                    break;
                }
                Err(BlobStoreError::NotFound(_)) => {
                    problem = Some("it is missing from the blob store".into());
                    break;
                }
                Err(e) => return Err(blob_store_failed(e)),
            }
        }
        if problem.is_none() && staged.hash() != hash {
            problem = Some("its bytes no longer hash to its name".into());
        }
        if let Some(problem) = problem {
            report.failed.push((hash, problem));
            continue;
        }
        staged.sync().map_err(staging_failed)?;
        let path = staged.keep();
        let adopted = to.adopt(&hash, &path, size).await;
        if adopted.is_err() {
            let _ = remove_if_there(&path);
        }
        adopted.map_err(blob_store_failed)?;
        report.copied += 1;
        report.bytes += size;
    }
    Ok(report)
}
