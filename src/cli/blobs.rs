//! Attached files from the command line: uploading the files that
//! `record put --attach` names, `casemesh blob get`, and `casemesh blob
//! scrub`.
//!
//! Files are streamed in pieces and never read into memory whole. A download
//! is written to `FILE.part`, resumes from it when interrupted, and becomes
//! `FILE` only once the BLAKE3 hash of all its bytes matches.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::ClientOpts;
use super::output::{self, Progress};
use crate::domain::{Attachment, BlobHash};
use crate::protocol::pb::{self, records_client::RecordsClient};

/// Bytes per upload message, and per read from disk.
const PIECE: usize = 1024 * 1024;

#[derive(Debug, Subcommand)]
pub enum BlobCommand {
    /// Download an attached file by its hash.
    ///
    /// The bytes go to FILE.part, which an interrupted download resumes
    /// from; it becomes FILE only once the hash of all its bytes matches.
    Get {
        /// BLAKE3 hash of the file (64 hex digits), as `record get` shows it.
        hash: String,
        /// Write the file here.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
        /// Print JSON instead of text (shapes: docs/cli.md, "JSON output").
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Re-hash every file the node stores and report any that changed.
    ///
    /// A replica's damaged file is fetched again from its origin; one of
    /// this office's own is marked damaged and no longer served until the
    /// original is uploaded again (`record put --attach`
    /// of the same file). Exits with status 1 if any file was damaged.
    /// The node also scrubs on its own, every `blobs.scrub_interval`.
    Scrub {
        /// Print JSON instead of text (shapes: docs/cli.md, "JSON output").
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Copy every stored file into the other blob store, on a stopped node.
    ///
    /// `--to s3` copies from `blobs/` in the data directory into the bucket
    /// `[blobs.s3]` of casemesh.toml names; `--to files` copies back. Each
    /// file is checked against its hash on the way; a run cut short goes on
    /// where it stopped. The files stay where they were: once it reports
    /// success, set `store` under `[blobs]` in casemesh.toml, start the
    /// node, and remove the old copies when you are satisfied.
    Move {
        /// The store to copy into.
        #[arg(long, value_enum)]
        to: StoreChoice,
        /// The office's data directory (its node must be stopped).
        #[arg(long)]
        data: PathBuf,
        /// Print JSON instead of text (shapes: docs/cli.md, "JSON output").
        #[arg(long)]
        json: bool,
    },
}

/// A blob store, as `blob move --to` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreChoice {
    Files,
    S3,
}

impl From<StoreChoice> for crate::config::BlobStoreKind {
    fn from(c: StoreChoice) -> Self {
        match c {
            StoreChoice::Files => Self::Files,
            StoreChoice::S3 => Self::S3,
        }
    }
}

async fn move_files(to: StoreChoice, data: &Path, json: bool) -> Result<()> {
    use super::errors::CliError;
    use crate::config::{BlobStoreKind, Config, Paths};
    use crate::store::{Store, StoreError, StoreOptions};
    let paths = Paths::new(data);
    let config = Config::load(&paths.config())?;
    let to = BlobStoreKind::from(to);
    let from = match to {
        BlobStoreKind::Files => BlobStoreKind::S3,
        BlobStoreKind::S3 => BlobStoreKind::Files,
    };
    if to == BlobStoreKind::S3 && config.blobs.s3.is_none() {
        return Err(CliError::Usage(format!(
            "{} has no [blobs.s3] table naming the bucket to copy into (deploy/casemesh.example.toml shows one)",
            paths.config().display()
        ))
        .into());
    }
    if from == BlobStoreKind::S3 && config.blobs.s3.is_none() {
        return Err(CliError::Usage(format!(
            "{} has no [blobs.s3] table naming the bucket to copy from",
            paths.config().display()
        ))
        .into());
    }
    let options = StoreOptions {
        reserve_bytes: 0,
        ..StoreOptions::from(&config.store)
    };
    let store = match Store::open_unless_locked(&paths.store(), &config.office, &options) {
        Err(StoreError::Locked(_)) => {
            return Err(CliError::Usage(
                "the node is running (it holds the store): stop it, then move the files".into(),
            )
            .into());
        }
        other => other?,
    };
    let staging = crate::store::staging::Staging::open(&paths.root)
        .with_context(|| format!("the staging directory in {}", data.display()))?;
    let source = crate::node::open_blob_store(&paths, &config.blobs, from).await?;
    let target = crate::node::open_blob_store(&paths, &config.blobs, to).await?;
    let report =
        crate::service::blobs::copy_store(&store, &staging, source.as_ref(), target.as_ref())
            .await?;
    if json {
        super::json::print(&serde_json::json!({
            "from": source.describe(),
            "to": target.describe(),
            "copied": report.copied,
            "bytes": report.bytes,
            "already": report.already,
            "failed": report.failed.iter().map(|(h, why)| serde_json::json!({
                "hash": h.to_hex(),
                "problem": why,
            })).collect::<Vec<_>>(),
        }));
    } else {
        println!(
            "copied {} files ({}) from {} to {}; {} were there already",
            report.copied,
            output::size(report.bytes),
            source.describe(),
            target.describe(),
            report.already
        );
        for (hash, why) in &report.failed {
            println!("  NOT copied: {hash}: {why}");
        }
    }
    if !report.failed.is_empty() {
        return Err(CliError::Failed(format!(
            "{} files could not be copied whole: start the node on the old store and run `casemesh blob scrub`, which fetches a replica's file again from its origin; an own file must be uploaded again",
            report.failed.len()
        ))
        .into());
    }
    if !json {
        eprintln!(
            "next: set `store = \"{to}\"` under [blobs] in {}, start the node, and remove the old copies once you are satisfied",
            paths.config().display()
        );
    }
    Ok(())
}

pub async fn run(cmd: BlobCommand) -> Result<()> {
    match cmd {
        BlobCommand::Move { to, data, json } => move_files(to, &data, json).await,
        BlobCommand::Scrub { json, client } => scrub(&client, json).await,
        BlobCommand::Get {
            hash,
            out,
            force,
            json,
            client,
        } => {
            let what = format!(
                "{}.part keeps what arrived: run the same command again to resume",
                out.display()
            );
            super::interruptible(what, get(&client, &hash, &out, force, json)).await
        }
    }
}

/// A file to attach, opened and checked before anything is uploaded, so
/// that a typo in the last `--attach` does not upload the others for
/// nothing.
pub struct LocalFile {
    path: PathBuf,
    file: tokio::fs::File,
    size: u64,
    file_name: String,
    media_type: &'static str,
}

impl LocalFile {
    pub async fn open(path: &Path) -> Result<Self> {
        let unreadable = |e| super::errors::unreadable("--attach", path, e);
        let file = tokio::fs::File::open(path).await.map_err(unreadable)?;
        let meta = file.metadata().await.map_err(unreadable)?;
        if !meta.is_file() {
            return Err(unreadable(std::io::Error::other("not a regular file")));
        }
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let media_type = media_type(path);
        // The node checks the same; failing here uploads nothing.
        Attachment {
            hash: BlobHash([0; 32]),
            size: meta.len(),
            file_name: file_name.clone(),
            media_type: media_type.into(),
        }
        .check_shape()
        .with_context(|| format!("cannot attach {path:?}"))?;
        Ok(Self {
            path: path.to_owned(),
            file,
            size: meta.len(),
            file_name,
            media_type,
        })
    }

    /// Streams the file to the node (`PutBlob`) and returns it as an
    /// attachment for a put. The node's hash is checked against the bytes
    /// read here.
    pub async fn upload(self, records: &mut RecordsClient<Channel>) -> Result<pb::Attachment> {
        let Self {
            path,
            mut file,
            size,
            file_name,
            media_type,
        } = self;
        let (tx, rx) = tokio::sync::mpsc::channel::<Option<pb::PutBlobRequest>>(2);
        // The request ends only at the `None` sent after the last piece. If
        // reading fails, or the file changed size, no `None` is sent and the
        // request never ends, so the node cannot take a truncated file for a
        // whole one: the call is dropped unfinished and the node discards
        // what it received.
        let body = ReceiverStream::new(rx)
            .chain(tokio_stream::pending())
            .map_while(|piece| piece);
        let mut progress = Progress::new(file_name.clone(), Some(size), 0);
        let send = async {
            let mut hasher = blake3::Hasher::new();
            let mut sent = 0u64;
            loop {
                let piece = read_piece(&mut file)
                    .await
                    .with_context(|| format!("cannot read {}", path.display()))?;
                if piece.is_empty() {
                    break;
                }
                hasher.update(&piece);
                sent += piece.len() as u64;
                progress.add(piece.len() as u64);
                let data = piece.into();
                if tx.send(Some(pb::PutBlobRequest { data })).await.is_err() {
                    // The call has ended; its outcome says why.
                    return Ok((hasher.finalize(), sent));
                }
            }
            if sent != size {
                bail!(
                    "{} changed while it was uploaded ({size} bytes when opened, {sent} read); attach it again",
                    path.display()
                );
            }
            let _ = tx.send(None).await;
            Ok::<_, anyhow::Error>((hasher.finalize(), sent))
        };
        let call = async { Ok(records.put_blob(body).await?.into_inner()) };
        let (info, (hash, sent)) = tokio::try_join!(call, send)?;
        progress.finish();
        let stored = BlobHash::from_slice(&info.hash)?;
        if stored.0 != *hash.as_bytes() || info.size != sent {
            bail!(
                "the node stored {} as {stored} ({} bytes), but the bytes sent hash to {} ({sent} bytes)",
                path.display(),
                info.size,
                hash.to_hex()
            );
        }
        Ok(pb::Attachment {
            hash: info.hash,
            size: info.size,
            file_name,
            media_type: media_type.into(),
            ..Default::default()
        })
    }
}

/// The next `PIECE` bytes; fewer only at the end of the file.
async fn read_piece(file: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Vec<u8>> {
    let mut piece = Vec::with_capacity(PIECE);
    file.take(PIECE as u64).read_to_end(&mut piece).await?;
    Ok(piece)
}

/// A media type guessed from the file name's extension.
pub fn media_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "mp4" => "video/mp4",
        "mov" => "video/quicktime",
        "webm" => "video/webm",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "wav" => "audio/wav",
        "mp3" => "audio/mpeg",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

/// `FILE.part`: where a download of `FILE` collects its bytes.
fn part_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_owned();
    name.push(".part");
    out.with_file_name(name)
}

async fn get(client: &ClientOpts, hash: &str, out: &Path, force: bool, json: bool) -> Result<()> {
    let hash =
        BlobHash::parse_hex(hash).map_err(|e| super::errors::CliError::Usage(e.to_string()))?;
    if out.file_name().is_none() || out.to_string_lossy().ends_with(std::path::MAIN_SEPARATOR) {
        bail!("--out {} does not name a file", out.display());
    }
    let exists = tokio::fs::try_exists(out)
        .await
        .with_context(|| format!("cannot check {}", out.display()))?;
    if exists && !force {
        bail!("{} already exists; --force replaces it", out.display());
    }
    let part = part_path(out);
    let cannot_write = || format!("cannot write {}", part.display());
    let offset = match tokio::fs::metadata(&part).await {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e).with_context(cannot_write),
    };

    // Asked first, so that a hash the node does not know leaves no
    // FILE.part behind.
    let mut stream = match client
        .records()
        .await?
        .get_blob(pb::GetBlobRequest {
            hash: hash.0.to_vec().into(),
            offset,
            length: 0,
        })
        .await
    {
        Ok(response) => response.into_inner(),
        Err(s) if s.code() == tonic::Code::InvalidArgument && offset > 0 => bail!(
            "{} holds {offset} bytes, which does not fit this file ({}); remove it to download from the start",
            part.display(),
            s.message()
        ),
        Err(s) => return Err(s.into()),
    };

    let mut hasher = blake3::Hasher::new();
    if offset > 0 {
        let prefix = tokio::fs::File::open(&part)
            .await
            .with_context(|| format!("cannot read {}", part.display()))?;
        let mut prefix = prefix.take(offset);
        loop {
            let piece = read_piece(&mut prefix)
                .await
                .with_context(|| format!("cannot read {}", part.display()))?;
            if piece.is_empty() {
                break;
            }
            hasher.update(&piece);
        }
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&part)
        .await
        .with_context(cannot_write)?;
    let label = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut progress = Progress::new(label, None, offset);
    let mut received = offset;
    let receiving = async {
        while let Some(chunk) = stream.message().await? {
            if chunk.offset != received {
                bail!(
                    "the node sent bytes from offset {} when {received} was next",
                    chunk.offset
                );
            }
            file.write_all(&chunk.data)
                .await
                .with_context(cannot_write)?;
            hasher.update(&chunk.data);
            received += chunk.data.len() as u64;
            progress.add(chunk.data.len() as u64);
        }
        Ok(())
    }
    .await;
    // Whatever arrived stays in FILE.part for the next attempt to resume
    // from, also when the transfer broke off.
    file.flush().await.with_context(cannot_write)?;
    receiving?;
    file.sync_all().await.with_context(cannot_write)?;
    drop(file);
    progress.finish();

    let got = BlobHash(*hasher.finalize().as_bytes());
    if got != hash {
        // The wrong bytes cannot be told apart from the right ones: keeping
        // them would only make the next attempt resume from them.
        let removed = match tokio::fs::remove_file(&part).await {
            Ok(()) => "removed",
            Err(_) => "could not remove",
        };
        bail!(
            "the downloaded bytes hash to {got}, not {hash}; {removed} {} and wrote nothing to {}",
            part.display(),
            out.display()
        );
    }
    tokio::fs::rename(&part, out)
        .await
        .with_context(|| format!("cannot rename {} to {}", part.display(), out.display()))?;
    if json {
        super::json::print(&serde_json::json!({
            "file": out.display().to_string(),
            "hash": hash.to_string(),
            "bytes": received,
        }));
    } else {
        println!(
            "wrote {} ({}, hash checked)",
            out.display(),
            output::size(received)
        );
    }
    Ok(())
}

async fn scrub(client: &ClientOpts, json: bool) -> Result<()> {
    let r = client
        .admin()
        .await?
        .scrub_blobs(pb::ScrubBlobsRequest {})
        .await?
        .into_inner();
    if json {
        super::json::print(&serde_json::json!({
            "files": r.files,
            "bytes": r.bytes,
            "damaged": r.damaged.iter().map(|f| serde_json::json!({
                "hash": hex::encode(&f.hash),
                "size": f.size,
                "problem": f.problem,
                "action": f.action,
            })).collect::<Vec<_>>(),
        }));
    } else {
        println!(
            "checked {} files ({}): {}",
            r.files,
            output::size(r.bytes),
            match r.damaged.len() {
                0 => "all intact".to_owned(),
                n => format!("{n} DAMAGED"),
            }
        );
        for f in &r.damaged {
            println!(
                "  {} ({}): {}; {}",
                hex::encode(&f.hash),
                output::size(f.size),
                f.problem,
                f.action
            );
        }
    }
    if !r.damaged.is_empty() {
        return Err(super::errors::CliError::Failed(format!(
            "{} stored files were damaged",
            r.damaged.len()
        ))
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_come_from_the_extension() {
        assert_eq!(media_type(Path::new("bodycam-0412.MP4")), "video/mp4");
        assert_eq!(media_type(Path::new("scan.jpeg")), "image/jpeg");
        assert_eq!(media_type(Path::new("notes")), "application/octet-stream");
        assert_eq!(
            media_type(Path::new("a.tar.gz")),
            "application/octet-stream"
        );
    }

    #[test]
    fn a_download_collects_its_bytes_next_to_the_file() {
        assert_eq!(
            part_path(Path::new("out/clip.mp4")),
            PathBuf::from("out/clip.mp4.part")
        );
    }
}
