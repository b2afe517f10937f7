//! Refusals counted instead of logged one by one: what an unauthenticated
//! client or a peer can make this node refuse as fast as it can send
//! (handshakes, replicated entries, acknowledgements) must not grow the
//! audit log at that rate. The first refusal of a kind from a source is
//! logged at once; the rest within the same interval become one entry with
//! their count, written when the interval ends. Sources are bounded too:
//! past [`MAX_SOURCES`] at once, further ones are counted together.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::AuditLog;
use crate::domain::audit::Draft;

/// How long refusals of one kind from one source are counted together.
pub const INTERVAL: Duration = Duration::from_secs(60);
/// Most sources counted apart at once.
pub const MAX_SOURCES: usize = 1024;
/// The source that sources past [`MAX_SOURCES`] are counted under.
pub const OTHER_SOURCES: &str = "(other sources)";

/// How many of the counted refusals' details the entry standing for them
/// names (the rest are counted only).
const NAMED: usize = 8;

/// Refusals of one kind from one source in the current interval.
struct Window {
    started: Instant,
    /// Refusals after the first, not yet logged.
    more: u64,
    /// The latest of them, as the entry that will stand for them.
    latest: Option<Draft>,
    /// The details of the first [`NAMED`] of them.
    details: Vec<String>,
}

/// The node's counted refusals.
pub struct RefusalLog {
    audit: Arc<AuditLog>,
    interval: Duration,
    windows: Mutex<HashMap<(String, String), Window>>,
}

impl RefusalLog {
    pub fn new(audit: Arc<AuditLog>) -> Self {
        Self::with_interval(audit, INTERVAL)
    }

    pub fn with_interval(audit: Arc<AuditLog>, interval: Duration) -> Self {
        Self {
            audit,
            interval,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Records a refusal of `source` (an address, an office): logged now if
    /// it is the first of its kind in the interval, counted otherwise.
    pub async fn refuse(&self, source: &str, draft: Draft) {
        let now = Instant::now();
        let (first, due) = {
            let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            let mut source = source.to_owned();
            if windows.len() >= MAX_SOURCES
                && !windows.contains_key(&(source.clone(), draft.action.clone()))
            {
                source = OTHER_SOURCES.to_owned();
            }
            let key = (source, draft.action.clone());
            let interval = self.interval;
            let ended = windows
                .get(&key)
                .is_some_and(|w| now.duration_since(w.started) >= interval);
            let due = if ended { windows.remove(&key) } else { None };
            match windows.get_mut(&key) {
                Some(w) => {
                    w.more += 1;
                    if w.details.len() < NAMED {
                        w.details.push(draft.target.detail.clone());
                    }
                    w.latest = Some(draft);
                    (None, due)
                }
                None => {
                    windows.insert(
                        key,
                        Window {
                            started: now,
                            more: 0,
                            latest: None,
                            details: Vec::new(),
                        },
                    );
                    (Some(draft), due)
                }
            }
        };
        if let Some(w) = due {
            self.write_counted(w).await;
        }
        if let Some(d) = first {
            self.write(d).await;
        }
    }

    /// Writes the counts of every interval that has ended.
    pub async fn flush_ended(&self) {
        self.flush(|w| w.started.elapsed() >= self.interval).await;
    }

    /// Writes every count held, ended or not (at shutdown).
    pub async fn flush_all(&self) {
        self.flush(|_| true).await;
    }

    async fn flush(&self, which: impl Fn(&Window) -> bool) {
        let due: Vec<Window> = {
            let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            let keys: Vec<_> = windows
                .iter()
                .filter(|(_, w)| which(w))
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| windows.remove(&k))
                .collect()
        };
        for w in due {
            self.write_counted(w).await;
        }
    }

    /// The entry standing for the refusals counted in `w`, if any: the
    /// latest one's, its detail naming the first few and counting all.
    async fn write_counted(&self, w: Window) {
        let Some(mut d) = w.latest else { return };
        let seconds = self.interval.as_secs();
        let named = w
            .details
            .iter()
            .filter(|d| !d.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        let unnamed = w.more - w.details.len() as u64;
        // Counted calls that went through (a peer's `Pull` opens) are not
        // refusals.
        let refused = if d.outcome.is_ok() { "" } else { " refused" };
        let count = match unnamed {
            0 => format!("{} more{refused} within {seconds} s", w.more),
            n => format!(
                "{} more{refused} within {seconds} s, {n} of them not named here",
                w.more
            ),
        };
        d.target.detail = crate::domain::audit::clip(&if named.is_empty() {
            count
        } else {
            format!("{count}: {named}")
        });
        self.write(d).await;
    }

    async fn write(&self, d: Draft) {
        if let Err(e) = self.audit.append(d).await {
            tracing::error!(error = %e, "could not log a refusal");
        }
    }
}

/// Writes ended intervals' counts until shutdown (the node writes what is
/// left once nothing can be refused any more).
pub async fn run_flusher(log: Arc<RefusalLog>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(log.interval.min(Duration::from_secs(10)));
    loop {
        let stopping = async {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopping => break,
        }
        log.flush_ended().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::audit::{Actor, Outcome, Target};
    use crate::domain::{OfficeId, UserName};
    use crate::identity::OfficeCa;
    use crate::store::{Store, StoreOptions};

    fn log(dir: &tempfile::TempDir, interval: Duration) -> (Arc<Store>, RefusalLog) {
        let office = OfficeId::parse("phila-da").unwrap();
        let (ca, _) = OfficeCa::create(&office, &[], &UserName::parse("admin").unwrap()).unwrap();
        let options = StoreOptions::for_tests();
        let store = Arc::new(Store::open(dir.path(), "phila-da", &options).unwrap());
        let audit = Arc::new(AuditLog::new(
            "phila-da".into(),
            store.clone(),
            Arc::new(ca),
        ));
        (store, RefusalLog::with_interval(audit, interval))
    }

    fn refusal(n: usize) -> Draft {
        Draft::new(
            Actor::unauthenticated("192.0.2.1:4000".into()),
            "connection.refused",
            Target::detail(format!("attempt {n}")),
            Outcome::failed("REFUSED", "no client certificate"),
        )
    }

    fn details(store: &Store) -> Vec<String> {
        (1..=store.audit_head().unwrap().seq)
            .map(|seq| store.audit_entry(seq).unwrap().unwrap().target.detail)
            .collect()
    }

    /// A thousand refusals from one source make two entries: the first, at
    /// once, and one that counts the rest and names the first few of them.
    #[tokio::test]
    async fn refusals_from_one_source_are_counted_not_logged_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let (store, log) = log(&dir, Duration::from_secs(3600));
        for n in 0..1000 {
            log.refuse("192.0.2.1", refusal(n)).await;
        }
        assert_eq!(details(&store), vec!["attempt 0"], "the first at once");
        log.refuse("198.51.100.7", refusal(0)).await;
        assert_eq!(details(&store).len(), 2, "another source is logged apart");
        log.flush_all().await;
        let all = details(&store);
        assert_eq!(all.len(), 3, "{all:?}");
        let counted = &all[2];
        assert!(
            counted.starts_with(
                "999 more refused within 3600 s, 991 of them not named here: attempt 1; attempt 2;"
            ),
            "{counted}"
        );
        assert!(
            counted.len() <= crate::domain::audit::MAX_FIELD,
            "{counted}"
        );
    }

    /// Once its interval has ended, a source's next refusal is logged at
    /// once again, after the count of the interval before.
    #[tokio::test]
    async fn a_new_interval_logs_its_first_refusal_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (store, log) = log(&dir, Duration::ZERO);
        log.refuse("192.0.2.1", refusal(0)).await;
        log.refuse("192.0.2.1", refusal(1)).await;
        log.flush_ended().await;
        assert_eq!(details(&store), vec!["attempt 0", "attempt 1"]);
    }

    /// Past the number of sources counted apart, the rest share one count.
    #[tokio::test]
    async fn sources_past_the_limit_are_counted_together() {
        let dir = tempfile::tempdir().unwrap();
        let (store, log) = log(&dir, Duration::from_secs(3600));
        for n in 0..MAX_SOURCES + 50 {
            log.refuse(&format!("source {n}"), refusal(n)).await;
        }
        // One entry per source counted apart, and one for all the others.
        assert_eq!(details(&store).len(), MAX_SOURCES + 1);
        log.flush_all().await;
        let all = details(&store);
        assert_eq!(all.len(), MAX_SOURCES + 2);
        assert!(
            all[MAX_SOURCES + 1].starts_with("49 more refused"),
            "{}",
            all[MAX_SOURCES + 1]
        );
    }
}
