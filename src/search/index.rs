//! The tantivy index itself: one document per record (its latest
//! version), by full text (title and a text body) and by subject, origin,
//! collection, kind, label and time. What goes in and when is
//! [`super::Search`]'s to decide.

use std::path::Path;
use std::sync::Mutex;

use tantivy::collector::{Count, TopDocs};
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, QueryParser, RangeQuery, TermQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TEXT, Value,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::domain::{RecordId, RecordVersion, Subject};

/// Why the index could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("the search index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("the search index directory {path}: {reason}")]
    Directory { path: String, reason: String },
    /// Another node of this machine holds the index (and so its store).
    #[error("the search index {0} is in use by another node")]
    Busy(String),
    #[error("the search query: {0}")]
    Query(String),
}

pub type Result<T> = std::result::Result<T, SearchError>;

/// The index's one writer, waiting a little for a node of this process
/// that is closing it (a restart) to let go of its lock.
fn writer_when_free(index: &Index, dir: &Path) -> Result<IndexWriter> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        // One indexing thread: the node's cores belong to serving.
        match index.writer_with_num_threads(1, WRITER_HEAP) {
            Err(tantivy::TantivyError::LockFailure(
                tantivy::directory::error::LockError::LockBusy,
                _,
            )) => {
                if std::time::Instant::now() >= deadline {
                    return Err(SearchError::Busy(dir.display().to_string()));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return Ok(only_explicit_merges(other?)),
        }
    }
}

/// `writer`, merging segments only when told ([`SearchIndex::commit`],
/// [`SearchIndex::purge`]): a merge running in the background could hold
/// a purged record's words in a segment it writes after a purge has
/// removed the files that held them.
fn only_explicit_merges(writer: IndexWriter) -> IndexWriter {
    writer.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
    writer
}

/// A subject's term: `kind=normalized value`, or with the role,
/// `kind@role=normalized value`.
fn subject_term(s: &Subject, with_role: bool) -> String {
    match with_role {
        true => format!("{}@{}={}", s.kind, s.role, s.normalized()),
        false => format!("{}={}", s.kind, s.normalized()),
    }
}

/// The payload of a commit of a complete index of this schema (one that
/// holds every record of the store, as of its queue), and of any other.
const COMPLETE: &str = "casemesh.search.v1 complete";
const INCOMPLETE: &str = "casemesh.search.v1 incomplete";

fn commit(writer: &mut IndexWriter, complete: bool) -> Result<()> {
    let mut prepared = writer.prepare_commit()?;
    prepared.set_payload(if complete { COMPLETE } else { INCOMPLETE });
    prepared.commit()?;
    Ok(())
}

/// Bytes of memory the index writer may buffer before it writes a segment.
const WRITER_HEAP: usize = 32 * 1024 * 1024;
/// Most hits one page returns.
pub const MAX_PAGE: usize = 200;

#[derive(Clone, Copy)]
struct Fields {
    id: Field,
    origin: Field,
    collection: Field,
    kind: Field,
    title: Field,
    body: Field,
    label: Field,
    /// `kind=normalized value`, one per subject, and
    /// `kind@role=normalized value` for one with a role.
    subject: Field,
    version: Field,
    updated: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let fields = Fields {
        id: b.add_text_field("id", STRING | STORED),
        origin: b.add_text_field("origin", STRING | STORED),
        collection: b.add_text_field("collection", STRING | STORED),
        kind: b.add_text_field("kind", STRING | STORED),
        title: b.add_text_field("title", TEXT | STORED),
        body: b.add_text_field("body", TEXT),
        label: b.add_text_field("label", STRING),
        subject: b.add_text_field("subject", STRING),
        version: b.add_u64_field("version", STORED),
        updated: b.add_u64_field("updated", INDEXED | FAST | STORED),
    };
    (b.build(), fields)
}

/// What to look for; every part given must match.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    /// Words of the title and the body, in tantivy's query syntax (words,
    /// `"phrases"`, `+must -not`); empty for none.
    pub text: String,
    /// Subjects the record must name: kind and value (normalized as the
    /// kind says), and the role too when it is not empty.
    pub subjects: Vec<Subject>,
    pub collection: Option<String>,
    pub origin: Option<String>,
    pub kind: Option<String>,
    /// `key=value`.
    pub labels: Vec<String>,
    /// Updated in `[from_ms, to_ms]`; 0 for open.
    pub from_ms: u64,
    pub to_ms: u64,
    pub limit: usize,
    pub offset: usize,
}

/// One record found.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: String,
    pub origin: String,
    pub collection: String,
    pub kind: String,
    pub title: String,
    pub version: u64,
    pub updated_at_ms: u64,
    pub score: f32,
}

pub struct SearchIndex {
    index: Index,
    writer: Mutex<IndexWriter>,
    reader: IndexReader,
    fields: Fields,
}

impl SearchIndex {
    /// Opens the index in `dir`, creating it if it is not there.
    pub fn open(dir: &Path) -> Result<Self> {
        let directory_error = |reason: String| SearchError::Directory {
            path: dir.display().to_string(),
            reason,
        };
        // It holds the text of records: only the node's user may read it,
        // as the rest of the data directory.
        crate::store::staging::private_dir(dir)
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            })
            .map_err(|e| directory_error(e.to_string()))?;
        let directory = tantivy::directory::MmapDirectory::open(dir)
            .map_err(|e| directory_error(e.to_string()))?;
        let (schema, fields) = schema();
        // Stored fields are kept uncompressed: a purge can then be checked
        // by reading the files (and the index holds titles and ids only).
        let settings = tantivy::IndexSettings {
            docstore_compression: tantivy::store::Compressor::None,
            ..Default::default()
        };
        let index = Index::builder()
            .schema(schema)
            .settings(settings)
            .open_or_create(directory)?;
        let writer = writer_when_free(&index, dir)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            index,
            writer: Mutex::new(writer),
            reader,
            fields,
        })
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, IndexWriter> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `v` the record's document: its latest version replaces any
    /// earlier one; a tombstone leaves none. Seen by searches after the
    /// next [`SearchIndex::commit`].
    pub fn put(&self, v: &RecordVersion) -> Result<()> {
        let f = self.fields;
        let writer = self.writer();
        writer.delete_term(Term::from_field_text(f.id, v.id.as_str()));
        if v.deleted {
            return Ok(());
        }
        let mut doc = TantivyDocument::default();
        doc.add_text(f.id, v.id.as_str());
        doc.add_text(f.origin, v.origin.as_str());
        doc.add_text(f.collection, &v.collection);
        doc.add_text(f.kind, &v.kind);
        doc.add_text(f.title, &v.title);
        if let Ok(text) = std::str::from_utf8(&v.body) {
            doc.add_text(f.body, text);
        }
        for (k, val) in &v.labels {
            doc.add_text(f.label, format!("{k}={val}"));
        }
        for s in &v.subjects {
            doc.add_text(f.subject, subject_term(s, false));
            if !s.role.is_empty() {
                doc.add_text(f.subject, subject_term(s, true));
            }
        }
        doc.add_u64(f.version, v.version);
        doc.add_u64(f.updated, v.updated_at_ms);
        writer.add_document(doc)?;
        Ok(())
    }

    /// Removes the record's document (after the next commit).
    pub fn remove(&self, id: &RecordId) {
        self.writer()
            .delete_term(Term::from_field_text(self.fields.id, id.as_str()));
    }

    /// Makes what was put and removed durable and visible to searches,
    /// marked `complete` or not ([`SearchIndex::is_complete`]); then
    /// merges segments as tantivy's default policy would have in the
    /// background.
    pub fn commit(&self, complete: bool) -> Result<()> {
        let mut writer = self.writer();
        commit(&mut writer, complete)?;
        let segments = self.index.searchable_segment_metas()?;
        let policy = tantivy::indexer::LogMergePolicy::default();
        for candidate in tantivy::indexer::MergePolicy::compute_merge_candidates(&policy, &segments)
        {
            writer.merge(&candidate.0).wait()?;
        }
        drop(writer);
        self.reader.reload()?;
        Ok(())
    }

    /// Drops everything not committed, with a new writer: after any
    /// failure of the writer (its indexing thread may be gone with it).
    pub fn rollback(&self) -> Result<()> {
        let mut writer = self.writer();
        writer.rollback()?;
        writer.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
        Ok(())
    }

    /// Whether the last commit was marked complete by this schema: not
    /// the case for a new index, one of another schema, or one whose
    /// rebuild was cut short.
    pub fn is_complete(&self) -> Result<bool> {
        Ok(self.index.load_metas()?.payload.as_deref() == Some(COMPLETE))
    }

    /// Drops every document (after the next commit; until then searches
    /// see the index as it was).
    pub fn clear(&self) -> Result<()> {
        self.writer().delete_all_documents()?;
        Ok(())
    }

    /// Commits (marked `complete` or not), then rewrites the segments that
    /// hold deleted documents — of those, only the segments whose
    /// dictionary holds one of `only`, when given — and deletes the old
    /// files: a removed record's words are then in no file of the index.
    /// Call before telling anyone that a purge is done.
    pub fn purge(&self, complete: bool, only: Option<&[RecordId]>) -> Result<()> {
        let mut writer = self.writer();
        commit(&mut writer, complete)?;
        let searcher = {
            self.reader.reload()?;
            self.reader.searcher()
        };
        let mut dirty = Vec::new();
        for segment in searcher.segment_readers() {
            if !segment.has_deletes() {
                continue;
            }
            let holds = match only {
                None => true,
                Some(ids) => {
                    let terms = segment.inverted_index(self.fields.id)?;
                    let mut any = false;
                    for id in ids {
                        let found = terms
                            .terms()
                            .get(id.as_str().as_bytes())
                            .map_err(|e| SearchError::Query(e.to_string()))?;
                        if found.is_some() {
                            any = true;
                            break;
                        }
                    }
                    any
                }
            };
            if holds {
                dirty.push(segment.segment_id());
            }
        }
        if !dirty.is_empty() {
            writer.merge(&dirty).wait()?;
        }
        writer.garbage_collect_files().wait()?;
        drop(writer);
        self.reader.reload()?;
        Ok(())
    }

    /// Whether any segment's dictionary of `field` holds `word` — deleted
    /// documents included, whose terms stay until their segment is
    /// rewritten ([`SearchIndex::purge`]).
    pub fn holds_term(&self, field: &str, word: &str) -> Result<bool> {
        let field = self.index.schema().get_field(field)?;
        for segment in self.reader.searcher().segment_readers() {
            let terms = segment.inverted_index(field)?;
            let found = terms
                .terms()
                .get(word.as_bytes())
                .map_err(|e| SearchError::Query(e.to_string()))?;
            if found.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The documents in the index.
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many records match `q`, and the page of them `q` asks for,
    /// best first (by relevance when there are words, else newest first).
    pub fn search(&self, q: &SearchQuery) -> Result<(u64, Vec<Hit>)> {
        let f = self.fields;
        let mut must: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let term = |field: Field, text: &str| -> (Occur, Box<dyn Query>) {
            (
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_text(field, text),
                    IndexRecordOption::Basic,
                )),
            )
        };
        if !q.text.trim().is_empty() {
            let mut parser = QueryParser::for_index(&self.index, vec![f.title, f.body]);
            // Every word must match, as investigators narrow a question.
            parser.set_conjunction_by_default();
            let parsed = parser
                .parse_query(&q.text)
                .map_err(|e| SearchError::Query(e.to_string()))?;
            must.push((Occur::Must, parsed));
        }
        for s in &q.subjects {
            must.push(term(f.subject, &subject_term(s, !s.role.is_empty())));
        }
        if let Some(c) = &q.collection {
            must.push(term(f.collection, c));
        }
        if let Some(o) = &q.origin {
            must.push(term(f.origin, o));
        }
        if let Some(k) = &q.kind {
            must.push(term(f.kind, k));
        }
        for l in &q.labels {
            must.push(term(f.label, l));
        }
        if q.from_ms != 0 || q.to_ms != 0 {
            let to = if q.to_ms == 0 { u64::MAX } else { q.to_ms };
            must.push((
                Occur::Must,
                Box::new(RangeQuery::new(
                    std::ops::Bound::Included(Term::from_field_u64(f.updated, q.from_ms)),
                    std::ops::Bound::Included(Term::from_field_u64(f.updated, to)),
                )),
            ));
        }
        let query: Box<dyn Query> = if must.is_empty() {
            Box::new(AllQuery)
        } else {
            Box::new(BooleanQuery::new(must))
        };
        let limit = q.limit.clamp(1, MAX_PAGE);
        let searcher = self.reader.searcher();
        let top = TopDocs::with_limit(limit).and_offset(q.offset);
        let (total, found): (usize, Vec<(f32, tantivy::DocAddress)>) = if q.text.trim().is_empty() {
            let (total, top) = searcher.search(
                &query,
                &(
                    Count,
                    top.order_by_u64_field("updated", tantivy::Order::Desc),
                ),
            )?;
            (
                total,
                top.into_iter().map(|(_, addr)| (0.0, addr)).collect(),
            )
        } else {
            searcher.search(&query, &(Count, top.order_by_score()))?
        };
        let mut hits = Vec::with_capacity(found.len());
        for (score, addr) in found {
            let doc: TantivyDocument = searcher.doc(addr)?;
            let text = |field: Field| {
                doc.get_first(field)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            let number = |field: Field| doc.get_first(field).and_then(|v| v.as_u64()).unwrap_or(0);
            hits.push(Hit {
                id: text(f.id),
                origin: text(f.origin),
                collection: text(f.collection),
                kind: text(f.kind),
                title: text(f.title),
                version: number(f.version),
                updated_at_ms: number(f.updated),
                score,
            });
        }
        Ok((total as u64, hits))
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
mod tests;
