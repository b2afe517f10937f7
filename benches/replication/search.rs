//! The `search` phase (`cargo bench --bench replication -- --only search`,
//! also part of the default run): what search costs a backfill, and how
//! fast it answers on 100,000 records.
//!
//! An origin (a `casemesh serve` process, its own search turned off so
//! that it indexes nothing while it serves) is filled through the store
//! layer with records of 1 KiB bodies of words from a generated
//! vocabulary, titles, and 2–4 subjects each (a badge from a pool of a few
//! thousand written in varied forms, plates, agent names, incident dates,
//! locations). Its one collection is granted, in turn, to fresh peers in
//! this process with `[search] enabled = true` and `false`, alternated
//! (A B, B A, A B …): each is timed from the grant until it holds every
//! version, and a search peer also until its index holds every record (the
//! indexer alone; nothing searches meanwhile). The last search peer then
//! answers `Records.Search` from one client (subject lookups, two-word
//! queries, phrases), measures `Admin.ReindexSearch` and its disk, and
//! once it is stopped the same queries run against its index in this
//! process (`SearchIndex::search`, then `Search::search`, which adds the
//! store's read-back), beside the unary mTLS call that does nothing.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use casemesh::cluster::Office;
use casemesh::config::Config;
use casemesh::domain::{OfficeId, RecordId, RecordVersion, Subject};
use casemesh::identity::{OfficeCa, OfficeSigner};
use casemesh::protocol::pb;
use casemesh::search::{Search, SearchIndex, SearchQuery};
use casemesh::store::{Store, StoreOptions};

use super::scale::write_signed;
use super::{
    Pki, Res, disk_use, median, ms, noop_records, percentile, pin_both, put_many, ratio, row,
    wait_applied,
};

/// How big the phase is.
#[derive(Clone, Copy)]
pub struct Sizes {
    pub records: usize,
    /// Backfills of each kind (with search, without).
    pub reps: usize,
    /// Subject lookups, and two-word queries, each.
    pub queries: usize,
    pub phrases: usize,
}

pub const FULL: Sizes = Sizes {
    records: 100_000,
    reps: 3,
    queries: 1_000,
    phrases: 200,
};

pub const QUICK: Sizes = Sizes {
    records: 1_000,
    reps: 1,
    queries: 50,
    phrases: 10,
};

/// Words in the vocabulary.
const VOCABULARY: usize = 5_000;
/// Badges in the pool.
const BADGES: usize = 3_000;
const PLATES: usize = 5_000;
const NAMES: usize = 2_000;
const LOCATIONS: usize = 500;
/// Queries of each kind run first and not counted.
const WARM_UP: usize = 20;
const COLLECTION: &str = "big-case";

// ---- a corpus -----------------------------------------------------------

/// xorshift64: the same corpus on every run.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // Never zero; seeds close together diverge at once.
        let mut r = Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        for _ in 0..4 {
            r.next();
        }
        r
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A rank in `0..n`, Zipf-distributed (s = 1), as words are in text:
    /// rank r with probability about 1 / ((r + 1.5) ln(n + 1)).
    fn zipf(&mut self, n: usize) -> usize {
        let x = ((n as f64 + 1.0).powf(self.unit()) - 1.0) as usize;
        x.min(n - 1)
    }
}

/// Words of incident reports, most frequent first; the rest of the
/// vocabulary is made of syllables.
const COMMON: &[&str] = &[
    "the",
    "and",
    "to",
    "of",
    "a",
    "officer",
    "was",
    "in",
    "he",
    "vehicle",
    "that",
    "at",
    "on",
    "stated",
    "with",
    "his",
    "subject",
    "witness",
    "for",
    "she",
    "they",
    "report",
    "scene",
    "her",
    "from",
    "by",
    "approximately",
    "street",
    "observed",
    "incident",
    "driver",
    "responded",
    "unit",
    "were",
    "force",
    "arrest",
    "camera",
    "body",
    "video",
    "complaint",
    "injury",
    "searched",
    "handcuffed",
    "detained",
    "sergeant",
    "detective",
    "patrol",
    "statement",
    "medical",
    "transported",
    "custody",
    "evidence",
    "photographs",
    "interview",
    "supervisor",
    "dispatch",
    "radio",
    "weapon",
    "taser",
    "plate",
    "license",
    "registration",
    "corner",
    "avenue",
    "apartment",
    "residence",
    "window",
    "door",
    "hallway",
    "struck",
    "kneeling",
    "pepper",
    "spray",
    "baton",
    "refused",
    "comply",
    "commands",
    "verbal",
    "resisting",
    "bystander",
    "recorded",
    "phone",
    "footage",
    "timestamp",
    "lieutenant",
    "precinct",
    "district",
    "warrant",
    "probable",
    "cause",
    "stop",
    "frisk",
    "pursuit",
    "collision",
    "hospital",
    "ambulance",
    "treated",
    "released",
    "booking",
    "charges",
    "dismissed",
    "internal",
    "affairs",
    "review",
    "misconduct",
    "allegation",
    "unmarked",
    "grey",
    "suv",
    "sedan",
];

const SYLLABLES: &[&str] = &[
    "ka", "lo", "mer", "tin", "va", "ro", "sel", "den", "mi", "tor", "ba", "lun", "ge", "pra",
    "sto", "wel", "cor", "na", "fi", "dra", "hol", "ven", "qui", "tas", "bel", "mon", "ri", "sa",
    "ther", "ul", "ex", "pol", "gan", "zi", "mar", "lek", "oss", "tra", "ni", "fen",
];

const FIRST: &[&str] = &[
    "John", "Maria", "James", "Luis", "Robert", "Aisha", "Michael", "Chen", "David", "Fatima",
    "William", "Olga", "Joseph", "Priya", "Thomas", "Grace", "Daniel", "Keisha", "Kevin", "Rosa",
];

const LAST: &[&str] = &[
    "Smith",
    "Garcia",
    "Johnson",
    "Nguyen",
    "Williams",
    "Brown",
    "Rodriguez",
    "Lee",
    "Miller",
    "Davis",
    "Martinez",
    "Wilson",
    "Anderson",
    "Taylor",
    "Thomas",
    "Moore",
    "Jackson",
    "Martin",
    "Thompson",
    "White",
    "Lopez",
    "Harris",
    "Clark",
    "Lewis",
    "Walker",
    "Hall",
    "Young",
    "King",
    "Wright",
    "Scott",
    "Green",
    "Baker",
    "Adams",
    "Nelson",
    "Hill",
    "Campbell",
    "Mitchell",
    "Roberts",
    "Carter",
    "Phillips",
    "Evans",
    "Turner",
    "Torres",
    "Parker",
    "Collins",
    "Edwards",
    "Stewart",
    "Flores",
    "Morris",
    "Murphy",
    "Cook",
    "Rogers",
    "Morgan",
    "Peterson",
    "Cooper",
    "Reed",
    "Bailey",
    "Bell",
    "Gomez",
    "Kelly",
    "Howard",
    "Ward",
    "Cox",
    "Diaz",
    "Richardson",
    "Wood",
    "Watson",
    "Brooks",
    "Bennett",
    "Gray",
    "James",
    "Reyes",
    "Cruz",
    "Hughes",
    "Price",
    "Myers",
    "Long",
    "Foster",
    "Sanders",
    "Ross",
    "Morales",
    "Powell",
    "Sullivan",
    "Russell",
    "Ortiz",
    "Jenkins",
    "Gutierrez",
    "Perry",
    "Butler",
    "Barnes",
    "Fisher",
    "Henderson",
    "Coleman",
    "Simmons",
    "Patterson",
    "Jordan",
    "Reynolds",
    "Hamilton",
    "Graham",
    "Kim",
];

const STREETS: &[&str] = &[
    "Canal St",
    "Lafayette",
    "Broad St",
    "Market St",
    "Girard Ave",
    "Lehigh Ave",
    "Atlantic Ave",
    "Flatbush Ave",
    "Fulton St",
    "Delancey St",
    "Spring Garden",
    "Allegheny Ave",
    "Broadway",
    "Grand Concourse",
    "Ocean Pkwy",
    "Kensington Ave",
    "Frankford Ave",
    "Roosevelt Blvd",
    "Chestnut St",
    "Walnut St",
    "Houston St",
    "Bowery",
    "Essex St",
    "Jamaica Ave",
    "Utica Ave",
];

/// The words, badges, plates, names and places records are made of.
pub struct Corpus {
    words: Vec<String>,
    badges: Vec<u32>,
    plates: Vec<String>,
    names: Vec<String>,
    locations: Vec<String>,
}

impl Corpus {
    pub fn new() -> Self {
        let mut rng = Rng::new(21);
        let mut seen = std::collections::HashSet::new();
        let mut words: Vec<String> = Vec::with_capacity(VOCABULARY);
        for w in COMMON {
            if seen.insert(w.to_string()) {
                words.push(w.to_string());
            }
        }
        while words.len() < VOCABULARY {
            let n = 2 + rng.below(3);
            let w: String = (0..n)
                .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
                .collect();
            if seen.insert(w.clone()) {
                words.push(w);
            }
        }
        let mut distinct = std::collections::HashSet::new();
        let mut badges = Vec::with_capacity(BADGES);
        while badges.len() < BADGES {
            let b = 1_000 + rng.below(99_000) as u32;
            if distinct.insert(b) {
                badges.push(b);
            }
        }
        let letters = |rng: &mut Rng, n: usize| -> String {
            (0..n)
                .map(|_| (b'A' + rng.below(26) as u8) as char)
                .collect()
        };
        let plates = (0..PLATES)
            .map(|_| {
                format!(
                    "{}{}{:03}",
                    rng.below(10),
                    letters(&mut rng, 3),
                    rng.below(1000)
                )
            })
            .collect();
        let names = (0..NAMES)
            .map(|_| {
                format!(
                    "{} {}",
                    FIRST[rng.below(FIRST.len())],
                    LAST[rng.below(LAST.len())]
                )
            })
            .collect();
        let locations = (0..LOCATIONS)
            .map(|_| {
                let a = STREETS[rng.below(STREETS.len())];
                let b = STREETS[rng.below(STREETS.len())];
                match rng.below(2) {
                    0 => format!("{a} & {b}"),
                    _ => format!("{} {a}", 100 + rng.below(4_900)),
                }
            })
            .collect();
        Self {
            words,
            badges,
            plates,
            names,
            locations,
        }
    }

    /// A badge as some office writes it: `4471`, `#44-71`, `#4471` or
    /// `44 71` (all one badge once normalized).
    fn badge(&self, rng: &mut Rng) -> String {
        let digits = self.badges[rng.below(self.badges.len())].to_string();
        let (a, b) = digits.split_at(digits.len() / 2);
        match rng.below(4) {
            0 => digits.clone(),
            1 => format!("#{a}-{b}"),
            2 => format!("#{digits}"),
            _ => format!("{a} {b}"),
        }
    }

    /// About 1 KiB of words, Zipf-distributed, in sentences.
    fn body(&self, rng: &mut Rng) -> String {
        let mut s = String::with_capacity(super::RECORD);
        let mut in_sentence = 0;
        loop {
            let w = &self.words[rng.zipf(self.words.len())];
            let end = in_sentence > 6 && rng.below(8) == 0;
            if s.len() + w.len() + 2 > super::RECORD {
                break;
            }
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(w);
            in_sentence += 1;
            if end {
                s.push('.');
                in_sentence = 0;
            }
        }
        s
    }

    /// Record `i`: its title, body and subjects, the same on every call.
    fn record(&self, i: usize) -> (String, String, Vec<Subject>) {
        let mut rng = Rng::new(1_000_003 + i as u64);
        let location = &self.locations[rng.below(self.locations.len())];
        let what = [
            "Use of force",
            "Traffic stop",
            "Complaint",
            "Arrest",
            "Pursuit",
        ];
        let title = format!(
            "{} {} near {location}",
            what[rng.below(what.len())],
            self.words[rng.zipf(self.words.len())]
        );
        let body = self.body(&mut rng);
        let role = ["", "officer-involved", "witness"][rng.below(3)];
        let mut subjects = vec![Subject {
            kind: "badge".into(),
            value: self.badge(&mut rng),
            role: role.into(),
        }];
        let mut kinds = ["plate", "agent-name", "incident-date", "location"];
        // 1 to 3 more, of distinct kinds.
        for k in 0..1 + rng.below(3) {
            let j = k + rng.below(kinds.len() - k);
            kinds.swap(k, j);
            let value = match kinds[k] {
                "plate" => {
                    let p = &self.plates[rng.below(self.plates.len())];
                    match rng.below(3) {
                        0 => p.clone(),
                        1 => p.to_lowercase(),
                        _ => format!("{} {}", &p[..4], &p[4..]),
                    }
                }
                "agent-name" => {
                    let n = &self.names[rng.below(self.names.len())];
                    match rng.below(3) {
                        0 => n.clone(),
                        1 => n.to_uppercase(),
                        _ => format!("  {}", n.replace(' ', "   ")),
                    }
                }
                "incident-date" => {
                    let (y, m, d) = (2024 + rng.below(3), 1 + rng.below(12), 1 + rng.below(28));
                    match rng.below(2) {
                        0 => format!("{y}-{m:02}-{d:02}"),
                        _ => format!("{m:02}/{d:02}/{y}"),
                    }
                }
                _ => location.clone(),
            };
            subjects.push(Subject {
                kind: kinds[k].into(),
                value,
                role: String::new(),
            });
        }
        subjects.sort();
        subjects.dedup();
        (title, body, subjects)
    }
}

/// The queries the phase asks, the same over gRPC and in process.
struct Queries {
    subjects: Vec<Subject>,
    words: Vec<String>,
    phrases: Vec<String>,
}

impl Queries {
    fn new(c: &Corpus, s: Sizes) -> Self {
        let mut rng = Rng::new(4471);
        let n = s.queries + WARM_UP;
        let subjects = (0..n)
            .map(|_| Subject {
                kind: "badge".into(),
                value: c.badge(&mut rng),
                role: String::new(),
            })
            .collect();
        // Two words as frequent as they are in the text: common words
        // (long lists to intersect and rank) as often as they occur.
        let words = (0..n)
            .map(|_| {
                let a = &c.words[rng.zipf(c.words.len())];
                let b = &c.words[rng.zipf(c.words.len())];
                format!("{a} {b}")
            })
            .collect();
        // Two words that follow each other in some record's body.
        let phrases = (0..s.phrases + WARM_UP)
            .map(|_| {
                let (_, body, _) = c.record(rng.below(s.records));
                let words: Vec<&str> = body.split(' ').collect();
                let at = rng.below(words.len() - 1);
                let clean = |w: &str| w.trim_end_matches('.').to_owned();
                format!("\"{} {}\"", clean(words[at]), clean(words[at + 1]))
            })
            .collect();
        Self {
            subjects,
            words,
            phrases,
        }
    }

    /// Each kind of query with its requests: (name, queries).
    fn kinds(&self) -> [(&'static str, Vec<SearchQuery>); 3] {
        let q = |text: &str, subjects: Vec<Subject>| SearchQuery {
            text: text.to_owned(),
            subjects,
            limit: casemesh::service::search::DEFAULT_LIMIT,
            ..Default::default()
        };
        [
            (
                "subject",
                self.subjects
                    .iter()
                    .map(|s| q("", vec![s.clone()]))
                    .collect(),
            ),
            ("words", self.words.iter().map(|w| q(w, vec![])).collect()),
            (
                "phrase",
                self.phrases.iter().map(|w| q(w, vec![])).collect(),
            ),
        ]
    }
}

fn to_pb(q: &SearchQuery) -> pb::SearchRequest {
    pb::SearchRequest {
        text: q.text.clone(),
        subjects: q
            .subjects
            .iter()
            .map(casemesh::protocol::convert::subject_to_pb)
            .collect(),
        limit: q.limit as u32,
        ..Default::default()
    }
}

// ---- the origin -------------------------------------------------------

fn office_ca(o: &Office) -> Res<OfficeCa> {
    let paths = o.paths();
    Ok(OfficeCa::load(
        &o.office,
        &std::fs::read_to_string(paths.office_ca())?,
        &std::fs::read_to_string(paths.office_key())?,
    )?)
}

fn set_search(o: &Office, enabled: bool) -> Res<()> {
    let path = o.paths().config();
    let mut config = Config::load(&path)?;
    config.search.enabled = enabled;
    std::fs::write(&path, config.to_toml())?;
    Ok(())
}

/// Writes records `0..n` of `corpus` into the (stopped) origin's store, as
/// `Put`s write them: signed on every core, then written concurrently
/// through the store's group commit, each with its audit entry.
async fn fill(origin: &Office, corpus: &Arc<Corpus>, n: usize) -> Res<()> {
    const CHUNK: usize = 1024;
    let ca = Arc::new(office_ca(origin)?);
    let store = Arc::new(Store::open(
        &origin.paths().store(),
        origin.office.as_str(),
        &StoreOptions {
            cache_bytes: 256 << 20,
            reserve_bytes: 0,
        },
    )?);
    let office = origin.office.clone();
    let now = casemesh::domain::now_ms();
    for chunk in (0..n).step_by(CHUNK) {
        let end = (chunk + CHUNK).min(n);
        let (ca, corpus, office2) = (ca.clone(), corpus.clone(), office.clone());
        let signed = tokio::task::spawn_blocking(move || {
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            let part = (end - chunk).div_ceil(cores);
            std::thread::scope(|scope| {
                let parts: Vec<_> = (chunk..end)
                    .step_by(part)
                    .map(|from| {
                        let (ca, corpus, office) = (&ca, &corpus, &office2);
                        scope.spawn(move || {
                            let signer = OfficeSigner::new(ca);
                            (from..(from + part).min(end))
                                .map(|i| signer.sign(version(corpus, office, now, i)))
                                .collect::<Result<Vec<_>, _>>()
                        })
                    })
                    .collect();
                let mut all = Vec::new();
                for p in parts {
                    all.extend(p.join().map_err(|_| "a signing thread panicked")??);
                }
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(all)
            })
        })
        .await??;
        write_signed(&store, &office, signed).await?;
    }
    store.commit().await?;
    drop(store);
    // What the fill left for the kernel to write back is written now, not
    // during the backfills.
    rustix::fs::sync();
    Ok(())
}

fn version(c: &Corpus, office: &OfficeId, now: u64, i: usize) -> RecordVersion {
    let (title, body, subjects) = c.record(i);
    let mut random = [0u8; 10];
    random[2..].copy_from_slice(&(i as u64).to_be_bytes());
    let at = now + i as u64;
    RecordVersion {
        id: RecordId::generate(office, now, random),
        version: 1,
        origin: office.clone(),
        collection: COLLECTION.into(),
        kind: "incident-report".into(),
        title,
        content_type: "text/plain".into(),
        labels: Default::default(),
        body: body.into_bytes().into(),
        created_at_ms: at,
        updated_at_ms: at,
        deleted: false,
        attachments: Vec::new(),
        subjects,
    }
}

// ---- backfills --------------------------------------------------------

/// One backfill to a fresh peer: seconds from the grant until it applied
/// every version, and (with search) until its index held every record;
/// and the CPU the two processes used meanwhile.
struct Backfill {
    applied: f64,
    indexed: Option<f64>,
    cpu: Cpu,
}

/// CPU seconds (user + system) over a stretch of work: the origin's, and
/// this process's (the peer's) by kind of thread.
#[derive(Default)]
struct Cpu {
    origin: f64,
    peer: f64,
    /// This process's threads alive at the end, by name without digits
    /// (`tokio-rt-worker`, `thrd-tantivy-index`, `merge_thread_` …).
    threads: BTreeMap<String, f64>,
}

/// CPU seconds each thread of this process has used: thread id → (name
/// without digits, seconds).
fn threads_cpu() -> Res<HashMap<u32, (String, f64)>> {
    let ticks = super::clock_ticks()?;
    let mut out = HashMap::new();
    for entry in std::fs::read_dir("/proc/self/task")? {
        let entry = entry?;
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A thread that ended since it was listed.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name: String = stat[open + 1..close]
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .collect();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
        if let (Some(u), Some(s)) = (tick(11), tick(12)) {
            out.insert(tid, (name, (u + s) / ticks));
        }
    }
    Ok(out)
}

/// Where the CPU goes from now until [`CpuWatch::finish`].
struct CpuWatch {
    origin_pid: u32,
    origin: f64,
    peer: f64,
    threads: HashMap<u32, (String, f64)>,
}

impl CpuWatch {
    fn start(origin_pid: u32) -> Res<Self> {
        Ok(Self {
            origin_pid,
            origin: super::cpu_seconds(origin_pid)?,
            peer: super::cpu_seconds(std::process::id())?,
            threads: threads_cpu()?,
        })
    }

    fn finish(self) -> Res<Cpu> {
        let mut threads = BTreeMap::new();
        for (tid, (name, secs)) in threads_cpu()? {
            let before = self.threads.get(&tid).map_or(0.0, |t| t.1);
            *threads.entry(name).or_insert(0.0) += secs - before;
        }
        Ok(Cpu {
            origin: super::cpu_seconds(self.origin_pid)? - self.origin,
            peer: super::cpu_seconds(std::process::id())? - self.peer,
            threads,
        })
    }
}

async fn backfill(
    root: &Path,
    origin: &Office,
    name: &str,
    with_search: bool,
    n: usize,
) -> Res<(Backfill, Office)> {
    let mut peer = Office::start(root, name).await?;
    if !with_search {
        peer.configure(|c| c.search.enabled = false).await?;
    }
    pin_both(origin, &peer).await?;
    let rx = peer.subscribe_applied().ok_or("peer not running")?;
    let cpu = CpuWatch::start(origin.pid().ok_or("the origin is not a process")?)?;
    let start = Instant::now();
    origin.grant_collection(&peer.office, COLLECTION).await?;
    let applied = wait_applied(rx, n, Duration::from_secs(600)).await? - start;
    let indexed = if with_search {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let held = peer.search_indexed().ok_or("the peer keeps no index")?;
            if held >= n as u64 {
                break Some((start.elapsed()).as_secs_f64());
            }
            if Instant::now() > deadline {
                return Err(format!("the index holds {held} of {n} records after 300 s").into());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    } else {
        None
    };
    Ok((
        Backfill {
            applied: applied.as_secs_f64(),
            indexed,
            cpu: cpu.finish()?,
        },
        peer,
    ))
}

// ---- queries ------------------------------------------------------------

/// Latencies of one kind of query, sorted, and the median of the totals
/// found.
#[derive(Default, Clone)]
pub struct Latency {
    pub sorted: Vec<Duration>,
    pub total_p50: u64,
}

impl Latency {
    fn of(mut lat: Vec<Duration>, mut totals: Vec<u64>) -> Self {
        lat.sort();
        totals.sort();
        Self {
            sorted: lat,
            total_p50: totals.get(totals.len() / 2).copied().unwrap_or(0),
        }
    }

    fn p(&self, p: f64) -> Duration {
        percentile(&self.sorted, p)
    }
}

/// Runs `queries` after [`WARM_UP`] uncounted ones, one at a time, with
/// `ask` returning the total found.
async fn timed<F, Fut>(queries: &[SearchQuery], mut ask: F) -> Res<Latency>
where
    F: FnMut(SearchQuery) -> Fut,
    Fut: std::future::Future<Output = Res<u64>>,
{
    let mut lat = Vec::with_capacity(queries.len());
    let mut totals = Vec::with_capacity(queries.len());
    for (i, q) in queries.iter().enumerate() {
        let t = Instant::now();
        let total = ask(q.clone()).await?;
        if i >= WARM_UP {
            lat.push(t.elapsed());
            totals.push(total);
        }
    }
    Ok(Latency::of(lat, totals))
}

/// What the phase reports.
pub struct Report {
    pub sizes: Sizes,
    /// Per repetition: seconds with search (applied, indexed), without.
    pub with: Vec<(f64, f64)>,
    pub without: Vec<f64>,
    /// Per repetition: CPU µs per record of the peer's process and the
    /// origin's, with search and without.
    pub with_cpu: Vec<(f64, f64)>,
    pub without_cpu: Vec<(f64, f64)>,
    /// Per kind of query: over gRPC, the index alone, index + store.
    pub rpc: Vec<(&'static str, Latency)>,
    pub index: Vec<(&'static str, Latency)>,
    pub service: Vec<(&'static str, Latency)>,
    pub unary: Latency,
    pub reindex_secs: f64,
    pub index_bytes: u64,
    pub index_bytes_reindexed: u64,
    pub store_bytes: u64,
}

pub async fn run(s: Sizes, pki: &Pki) -> Res<Report> {
    let root = tempfile::tempdir()?;
    let bin = Path::new(env!("CARGO_BIN_EXE_casemesh"));
    let corpus = Arc::new(Corpus::new());
    let (mut origin, listener) = Office::create(root.path(), "origin-da").await?;
    drop(listener);
    set_search(&origin, false)?;
    let t = Instant::now();
    fill(&origin, &corpus, s.records).await?;
    eprintln!(
        "  origin filled with {} records in {:.0} s",
        s.records,
        t.elapsed().as_secs_f64()
    );
    origin.serve_process(bin).await?;

    let mut with = Vec::new();
    let mut without = Vec::new();
    let mut with_cpu = Vec::new();
    let mut without_cpu = Vec::new();
    let mut kept: Option<Office> = None;
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    for rep in 0..s.reps {
        // A B, B A, A B …: neither kind always runs first.
        let order = if rep % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for with_search in order {
            let name = format!(
                "peer-{}-{rep}-da",
                if with_search { "search" } else { "plain" }
            );
            let (b, mut peer) =
                backfill(root.path(), &origin, &name, with_search, s.records).await?;
            let rate = |secs: f64| s.records as f64 / secs;
            match b.indexed {
                Some(indexed) => {
                    eprintln!(
                        "  with search: applied {:.0} rec/s ({:.1} s), indexed {:.0} rec/s ({:.1} s)",
                        rate(b.applied),
                        b.applied,
                        rate(indexed),
                        indexed
                    );
                    with.push((b.applied, indexed));
                    if let Some(mut old) = kept.replace(peer) {
                        old.stop().await?;
                        std::fs::remove_dir_all(&old.dir)?;
                    }
                }
                None => {
                    eprintln!(
                        "  without search: applied {:.0} rec/s ({:.1} s)",
                        rate(b.applied),
                        b.applied
                    );
                    without.push(b.applied);
                    peer.stop().await?;
                    std::fs::remove_dir_all(&peer.dir)?;
                }
            }
            let per_record = |secs: f64| secs * 1e6 / s.records as f64;
            let wall = b.indexed.unwrap_or(b.applied);
            let threads: Vec<String> = b
                .cpu
                .threads
                .iter()
                .filter(|(_, secs)| per_record(**secs) >= 1.0)
                .map(|(name, secs)| format!("{name} {:.0}", per_record(*secs)))
                .collect();
            eprintln!(
                "    CPU per record: origin {:.0} µs, peer {:.0} µs ({}); both cores {:.0} % busy with the two",
                per_record(b.cpu.origin),
                per_record(b.cpu.peer),
                threads.join(", "),
                100.0 * (b.cpu.origin + b.cpu.peer) / (wall * cores)
            );
            let cpu = (per_record(b.cpu.peer), per_record(b.cpu.origin));
            match with_search {
                true => with_cpu.push(cpu),
                false => without_cpu.push(cpu),
            }
        }
    }
    origin.stop().await?;
    let mut peer = kept.ok_or("no search peer")?;

    let queries = Queries::new(&corpus, s);
    let kinds = queries.kinds();
    // One client over mTLS, as a person's CLI asks.
    let mut rpc = Vec::new();
    let mut records = peer.records().await?;
    let total = records
        .search(pb::SearchRequest::default())
        .await?
        .into_inner()
        .total;
    if total != s.records as u64 {
        return Err(format!("a search finds {total} of {} records", s.records).into());
    }
    for (kind, qs) in &kinds {
        let lat = timed(qs, |q| {
            let mut records = records.clone();
            async move { Ok(records.search(to_pb(&q)).await?.into_inner().total) }
        })
        .await?;
        eprintln!(
            "  Records.Search, {kind}: p50 {} p99 {} ({} found, median)",
            ms(lat.p(0.5)),
            ms(lat.p(0.99)),
            lat.total_p50
        );
        rpc.push((*kind, lat));
    }
    let unary = {
        let (node, server) = noop_records(pki, bytes::Bytes::new(), 2).await?;
        let client = casemesh::protocol::pb::records_client::RecordsClient::new(
            casemesh::protocol::transport::connect(&node, pki.client.clone()).await?,
        );
        let (_, lat) = put_many(vec![client], "c", s.queries).await?;
        server.abort();
        Latency::of(lat, vec![])
    };
    let paths = peer.paths();
    let index_bytes = disk_use(&paths.search())?;
    let store_bytes = disk_use(&paths.store())?;
    let t = Instant::now();
    let reindexed = peer
        .admin()
        .await?
        .reindex_search(pb::ReindexSearchRequest {})
        .await?
        .into_inner();
    let reindex_secs = t.elapsed().as_secs_f64();
    if reindexed.records != s.records as u64 {
        return Err(format!("reindexed {} of {} records", reindexed.records, s.records).into());
    }
    eprintln!(
        "  ReindexSearch of {} records: {reindex_secs:.1} s (the node says {} ms)",
        reindexed.records, reindexed.took_ms
    );
    let index_bytes_reindexed = disk_use(&paths.search())?;
    peer.stop().await?;

    // The same queries in this process, on the stopped peer's files.
    let mut index = Vec::new();
    {
        let idx = Arc::new(SearchIndex::open(&paths.search())?);
        for (kind, qs) in &kinds {
            let lat = timed(qs, |q| {
                let idx = idx.clone();
                async move { Ok(idx.search(&q)?.0) }
            })
            .await?;
            index.push((*kind, lat));
        }
    }
    let mut service = Vec::new();
    {
        let store = Arc::new(Store::open(
            &paths.store(),
            peer.office.as_str(),
            &StoreOptions::from(&casemesh::config::StoreConfig {
                min_free_mb: 0,
                ..Default::default()
            }),
        )?);
        let search = Arc::new(Search::open(&paths.search(), store)?);
        for (kind, qs) in &kinds {
            let lat = timed(qs, |q| {
                let search = search.clone();
                async move { Ok(search.search(&q)?.total) }
            })
            .await?;
            service.push((*kind, lat));
        }
    }
    for ((kind, i), (_, sv)) in index.iter().zip(&service) {
        eprintln!(
            "  in process, {kind}: index p50 {} p99 {}; index + store p50 {} p99 {}",
            ms(i.p(0.5)),
            ms(i.p(0.99)),
            ms(sv.p(0.5)),
            ms(sv.p(0.99))
        );
    }
    Ok(Report {
        sizes: s,
        with,
        without,
        with_cpu,
        without_cpu,
        rpc,
        index,
        service,
        unary,
        reindex_secs,
        index_bytes,
        index_bytes_reindexed,
        store_bytes,
    })
}

pub fn print(r: &Report) {
    let n = r.sizes.records;
    let rate = |secs: f64| n as f64 / secs;
    let reps = |v: &[f64]| {
        v.iter()
            .map(|s| format!("{:.0}", rate(*s)))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let plain: Vec<f64> = r.without.clone();
    let applied: Vec<f64> = r.with.iter().map(|w| w.0).collect();
    let indexed: Vec<f64> = r.with.iter().map(|w| w.1).collect();
    let base = rate(median(plain.clone()));
    row(
        &format!("ceiling: backfill {n} records with subjects, 1 peer, `[search] enabled = false`"),
        format!("{base:.0} rec/s (reps: {})", reps(&plain)),
        "1.00".into(),
        "",
    );
    let applied_rate = rate(median(applied.clone()));
    row(
        "backfill with search, grant → every version applied",
        format!("{applied_rate:.0} rec/s (reps: {})", reps(&applied)),
        ratio(applied_rate, base, "without search"),
        "",
    );
    let indexed_rate = rate(median(indexed.clone()));
    row(
        "backfill with search, grant → every record in the index",
        format!("{indexed_rate:.0} rec/s (reps: {})", reps(&indexed)),
        ratio(indexed_rate, base, "without search"),
        "≥ 0.8",
    );
    let cpu = |v: &[(f64, f64)]| {
        (
            median(v.iter().map(|c| c.0).collect()),
            median(v.iter().map(|c| c.1).collect()),
        )
    };
    let (plain_peer, plain_origin) = cpu(&r.without_cpu);
    let (search_peer, search_origin) = cpu(&r.with_cpu);
    row(
        "backfill CPU per record, peer / origin process: without search; with search",
        format!("{plain_peer:.0} / {plain_origin:.0} µs; {search_peer:.0} / {search_origin:.0} µs"),
        format!(
            "{:.2} × without search (both processes)",
            (search_peer + search_origin) / (plain_peer + plain_origin)
        ),
        "",
    );
    let unary_p99 = r.unary.p(0.99);
    row(
        "ceiling: unary mTLS call that does nothing (1 KiB `Put`), 1 client: p50 / p99",
        format!("{} / {}", ms(r.unary.p(0.5)), ms(unary_p99)),
        String::new(),
        "",
    );
    for (((kind, rpc), (_, idx)), (_, svc)) in r.rpc.iter().zip(&r.index).zip(&r.service) {
        let (what, target) = match *kind {
            "subject" => ("subject lookup (a badge)", "p99 ≤ 20 ms"),
            "words" => ("full text, two words", "p99 ≤ 50 ms"),
            _ => ("phrase, two words", "p99 ≤ 50 ms"),
        };
        row(
            &format!("ceiling: {what}, in process: index alone / + store read-back: p50 / p99"),
            format!(
                "{} / {}; {} / {}",
                ms(idx.p(0.5)),
                ms(idx.p(0.99)),
                ms(svc.p(0.5)),
                ms(svc.p(0.99))
            ),
            String::new(),
            "",
        );
        row(
            &format!(
                "`Records.Search` {what}, {n} records, 1 client ({} calls; {} found, median): p50 / p99",
                rpc.sorted.len(),
                rpc.total_p50
            ),
            format!("{} / {}", ms(rpc.p(0.5)), ms(rpc.p(0.99))),
            format!(
                "p99 {:.1} × index alone, {:.1} × index + store",
                rpc.p(0.99).as_secs_f64() / idx.p(0.99).as_secs_f64(),
                rpc.p(0.99).as_secs_f64() / svc.p(0.99).as_secs_f64()
            ),
            target,
        );
    }
    row(
        &format!("search index on disk, {n} records: after the backfill / after a reindex"),
        format!(
            "{:.0} / {:.0} MB (store {:.0} MB)",
            r.index_bytes as f64 / 1e6,
            r.index_bytes_reindexed as f64 / 1e6,
            r.store_bytes as f64 / 1e6
        ),
        format!(
            "{:.2} / {:.2} × the store",
            r.index_bytes as f64 / r.store_bytes as f64,
            r.index_bytes_reindexed as f64 / r.store_bytes as f64
        ),
        "",
    );
    row(
        &format!("`casemesh search --reindex` (Admin.ReindexSearch), {n} records"),
        format!("{:.1} s", r.reindex_secs),
        format!("{:.0} rec/s", rate(r.reindex_secs)),
        "",
    );
}
