//! Searching what this office holds ([`crate::search`]): the checks a
//! request must pass, run off the async workers.

use std::sync::Arc;

use crate::domain::OfficeId;
use crate::error::{Error, Result};
use crate::search::{Found, Search, SearchQuery};

/// Most bytes of words a search takes.
pub const MAX_TEXT_BYTES: usize = 1024;
/// Most subjects, and most labels, one search names.
pub const MAX_TERMS: usize = 16;
/// Most bytes of a collection, kind or label a search names.
pub const MAX_NAME_BYTES: usize = 256;
/// Page size when none is asked for.
pub const DEFAULT_LIMIT: usize = 20;
/// Deepest a search pages: ranking past this costs more than any person
/// reads.
pub const MAX_OFFSET: usize = 10_000;

/// Most searches run at once; more wait their turn (each may take a core
/// while it ranks).
pub const MAX_AT_ONCE: usize = 4;

pub struct SearchService {
    /// None when the node keeps no index (`[search] enabled = false`).
    search: Option<Arc<Search>>,
    turns: tokio::sync::Semaphore,
}

impl SearchService {
    pub fn new(search: Option<Arc<Search>>) -> Self {
        Self {
            search,
            turns: tokio::sync::Semaphore::new(MAX_AT_ONCE),
        }
    }

    fn index(&self) -> Result<Arc<Search>> {
        self.search.clone().ok_or(Error::SearchTurnedOff)
    }

    /// The page of records matching `q`, once `q` is checked.
    pub async fn search(&self, mut q: SearchQuery) -> Result<Found> {
        check(&mut q)?;
        let search = self.index()?;
        let _turn = self
            .turns
            .acquire()
            .await
            .map_err(|_| Error::ShuttingDown)?;
        blocking(move || search.search(&q)).await
    }

    /// Where the index stands; `None` with search turned off.
    pub fn state(&self) -> Option<crate::search::State> {
        self.search.as_ref().map(|s| s.state())
    }

    /// Rebuilds the index from the store; the records it holds after.
    pub async fn reindex(&self) -> Result<u64> {
        let search = self.index()?;
        blocking(move || search.rebuild()).await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::search::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("a search task failed: {e}")))?
        .map_err(Error::from)
}

/// Deepest nesting of parentheses the words may use.
pub const MAX_NESTING: usize = 8;

/// The words may use what a person searching needs — words, phrases,
/// `+`/`-`, `AND`/`OR`/`NOT`, parentheses, `field:word` — and nothing whose
/// cost grows with the index rather than the query: ranges, sets and
/// wildcards (the characters `[ ] { } *`) are refused, and so is deep
/// nesting.
fn check_words(text: &str) -> std::result::Result<(), String> {
    let (mut depth, mut deepest, mut quoted) = (0usize, 0usize, false);
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            _ if quoted => {}
            '[' | ']' | '{' | '}' | '*' => {
                return Err(format!(
                    "the words to search may not use {c:?}: ranges, sets and wildcards are not supported (--from and --to select by time)"
                ));
            }
            '(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if deepest > MAX_NESTING {
        return Err(format!(
            "the words to search nest parentheses {deepest} deep; at most {MAX_NESTING}"
        ));
    }
    Ok(())
}

/// Checks `q` and fills in its defaults.
fn check(q: &mut SearchQuery) -> Result<()> {
    let bad = |m: String| Err(Error::BadSearch(m));
    if q.text.len() > MAX_TEXT_BYTES {
        return bad(format!(
            "the words to search are {} bytes; at most {MAX_TEXT_BYTES}",
            q.text.len()
        ));
    }
    check_words(&q.text).map_err(Error::BadSearch)?;
    if q.subjects.len() > MAX_TERMS {
        return bad(format!(
            "{} subjects given; at most {MAX_TERMS}",
            q.subjects.len()
        ));
    }
    for s in &q.subjects {
        if s.normalized().is_empty() {
            return bad(format!(
                "subject {s} has no letters or digits to match once normalized"
            ));
        }
    }
    if q.labels.len() > MAX_TERMS {
        return bad(format!(
            "{} labels given; at most {MAX_TERMS}",
            q.labels.len()
        ));
    }
    for l in &q.labels {
        if l.split_once('=').is_none_or(|(k, _)| k.is_empty()) {
            return bad(format!("label {l:?} is not KEY=VALUE"));
        }
    }
    for (what, value) in [("collection", &q.collection), ("kind", &q.kind)] {
        if value.as_ref().is_some_and(|v| v.len() > MAX_NAME_BYTES) {
            return bad(format!("the {what} is longer than {MAX_NAME_BYTES} bytes"));
        }
    }
    if q.labels.iter().any(|l| l.len() > MAX_NAME_BYTES) {
        return bad(format!("a label is longer than {MAX_NAME_BYTES} bytes"));
    }
    if let Some(origin) = &q.origin {
        OfficeId::parse(origin)?;
    }
    if q.to_ms != 0 && q.to_ms < q.from_ms {
        return Err(Error::TimeRangeReversed);
    }
    match q.limit {
        0 => q.limit = DEFAULT_LIMIT,
        n if n > crate::search::MAX_PAGE => {
            return bad(format!(
                "limit {n} is over {}, the most one page returns",
                crate::search::MAX_PAGE
            ));
        }
        _ => {}
    }
    if q.offset > MAX_OFFSET {
        return bad(format!(
            "offset {} is past {MAX_OFFSET}, the deepest a search pages: narrow the search instead",
            q.offset
        ));
    }
    Ok(())
}

impl From<crate::search::Error> for Error {
    fn from(e: crate::search::Error) -> Self {
        use crate::search::{Error as E, SearchError};
        match e {
            E::Store(e) => e.into(),
            E::Rebuilding { .. } | E::Incomplete(_) => Error::SearchUnavailable(e.to_string()),
            E::Closing => Error::ShuttingDown,
            E::Index(SearchError::Query(m)) => {
                Error::BadSearch(format!("the words to search do not parse: {m}"))
            }
            E::Index(e) => Error::SearchUnavailable(format!(
                "{e}; `casemesh search --reindex` rebuilds the index from the store"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Subject;

    fn checked(q: SearchQuery) -> std::result::Result<SearchQuery, String> {
        let mut q = q;
        check(&mut q).map(|()| q).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_filled_and_bounds_are_named() {
        assert_eq!(
            checked(SearchQuery::default()).unwrap().limit,
            DEFAULT_LIMIT
        );
        let err = |q| checked(q).unwrap_err();
        assert!(
            err(SearchQuery {
                text: "x".repeat(MAX_TEXT_BYTES + 1),
                ..Default::default()
            })
            .contains("at most 1024")
        );
        assert!(
            err(SearchQuery {
                limit: 201,
                ..Default::default()
            })
            .contains("limit 201 is over 200")
        );
        assert!(
            err(SearchQuery {
                offset: MAX_OFFSET + 1,
                ..Default::default()
            })
            .contains("narrow the search")
        );
        assert!(
            err(SearchQuery {
                subjects: vec![Subject::parse("badge=##").unwrap()],
                ..Default::default()
            })
            .contains("no letters or digits")
        );
        assert!(
            err(SearchQuery {
                subjects: vec![Subject::parse("badge=1").unwrap(); MAX_TERMS + 1],
                ..Default::default()
            })
            .contains("17 subjects")
        );
        assert!(
            err(SearchQuery {
                labels: vec!["=x".into()],
                ..Default::default()
            })
            .contains("not KEY=VALUE")
        );
        assert!(
            err(SearchQuery {
                origin: Some("Not An Office".into()),
                ..Default::default()
            })
            .contains("office")
        );
        assert!(
            err(SearchQuery {
                from_ms: 2,
                to_ms: 1,
                ..Default::default()
            })
            .contains("before")
        );
        for words in ["body:[a TO z]", "title:*", "kind: IN [a b]", "{a TO b}"] {
            assert!(
                err(SearchQuery {
                    text: words.into(),
                    ..Default::default()
                })
                .contains("ranges, sets and wildcards are not supported"),
                "{words}"
            );
        }
        assert!(
            err(SearchQuery {
                text: format!("{}a{}", "(".repeat(9), ")".repeat(9)),
                ..Default::default()
            })
            .contains("9 deep")
        );
        for fine in ["\"canal [street]\"", "(a OR (b AND -c))", "title:raid +suv"] {
            checked(SearchQuery {
                text: fine.into(),
                ..Default::default()
            })
            .unwrap();
        }
        assert!(
            err(SearchQuery {
                collection: Some("c".repeat(MAX_NAME_BYTES + 1)),
                ..Default::default()
            })
            .contains("collection")
        );
    }
}
