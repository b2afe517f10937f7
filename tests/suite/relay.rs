//! A TCP relay that injects network faults between two nodes: it listens on
//! 127.0.0.1 on a port the kernel chose, forwards each connection to a
//! target, and on command delays, slows, stalls, cuts or refuses
//! connections.
//!
//! It moves bytes only: TLS runs end to end between the nodes, so whatever
//! a fault does, the nodes see it as a network would make them see it. It
//! counts connections and bytes, per connection and in all, so that a test
//! can show that a fault struck in the middle of a transfer.
//!
//! Directions are named from the target's side: `Down` is target →
//! client (an origin's feed to the peer pulling through the relay), `Up`
//! is client → target.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Bytes read from a socket at once.
const CHUNK: usize = 16 * 1024;
/// Chunks read ahead of the one being written (while it is delayed).
const IN_FLIGHT: usize = 64;

/// Which way bytes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Target → client.
    Down,
    /// Client → target.
    Up,
}

/// How a connection is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Both sockets closed in order: each end reads what reached it, then
    /// the end of the stream.
    Close,
    /// Both sockets reset: each end loses what its kernel had not handed
    /// it yet.
    Reset,
}

/// What happens once a connection has carried a set number of bytes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strike {
    /// Every open connection is cut.
    Cut(Cut),
    /// The connection that tripped it stalls, both ways.
    Stall,
}

/// What happens to new connections after a strike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// They pass.
    Pass,
    /// They are held (accepted, not forwarded) until [`Relay::release`] or
    /// [`Relay::heal`]: nothing reaches the client meanwhile.
    Hold,
}

/// A fault armed to strike once, on the first connection to carry
/// `after_down` bytes down.
#[derive(Debug, Clone, Copy)]
struct Trip {
    after_down: u64,
    strike: Strike,
    then: Then,
}

/// Settings that apply to every connection.
#[derive(Debug, Clone, Default)]
struct Settings {
    /// New connections are closed at once.
    refuse: bool,
    /// New connections wait, accepted but not forwarded.
    hold: bool,
    /// Each chunk is delivered this long after it was read (at least,
    /// at most): latency, not a bandwidth limit.
    delay: (Duration, Duration),
    /// Most bytes a second each connection carries each way (0: no limit).
    rate: u64,
    trip: Option<Trip>,
}

/// Whether forwarding is stopped, each way, on one connection.
#[derive(Debug, Clone, Copy, Default)]
struct Stalled {
    down: bool,
    up: bool,
}

impl Stalled {
    fn get(&self, dir: Dir) -> bool {
        match dir {
            Dir::Down => self.down,
            Dir::Up => self.up,
        }
    }
}

/// One connection through the relay.
struct Conn {
    down: AtomicU64,
    up: AtomicU64,
    stalled: watch::Sender<Stalled>,
    cut: watch::Sender<Option<Cut>>,
}

/// Counts since the relay started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Connections forwarded to the target.
    pub connections: u64,
    /// Connections closed at once (while refusing).
    pub refused: u64,
    /// Armed strikes that happened.
    pub strikes: u64,
    /// Connections cut.
    pub cut: u64,
    /// Connections stalled (each direction counted once per stall).
    pub stalled: u64,
    /// Bytes delivered, each way.
    pub down_bytes: u64,
    pub up_bytes: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    refused: AtomicU64,
    strikes: AtomicU64,
    cut: AtomicU64,
    stalled: AtomicU64,
    down_bytes: AtomicU64,
    up_bytes: AtomicU64,
}

struct Shared {
    target: SocketAddr,
    settings: watch::Sender<Settings>,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    counters: Counters,
    next_id: AtomicU64,
    /// Tasks of the open connections; aborted when the relay is dropped.
    tasks: Mutex<JoinSet<()>>,
}

/// A relay to one target; every connection through it ends when it is
/// dropped.
pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accepting.abort();
        self.shared
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .abort_all();
    }
}

impl Relay {
    /// Listens on 127.0.0.1 and forwards, with no fault, to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        assert!(
            target.ip().is_loopback(),
            "the relay only forwards on loopback"
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let (settings, _) = watch::channel(Settings::default());
        let shared = Arc::new(Shared {
            target,
            settings,
            conns: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            next_id: AtomicU64::new(0),
            tasks: Mutex::new(JoinSet::new()),
        });
        let accepting = tokio::spawn(accept(listener, shared.clone()));
        Self {
            addr,
            shared,
            accepting,
        }
    }

    /// Where clients should dial, as a node endpoint.
    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    pub fn counts(&self) -> Counts {
        let c = &self.shared.counters;
        Counts {
            connections: c.connections.load(Ordering::SeqCst),
            refused: c.refused.load(Ordering::SeqCst),
            strikes: c.strikes.load(Ordering::SeqCst),
            cut: c.cut.load(Ordering::SeqCst),
            stalled: c.stalled.load(Ordering::SeqCst),
            down_bytes: c.down_bytes.load(Ordering::SeqCst),
            up_bytes: c.up_bytes.load(Ordering::SeqCst),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.shared.conns().len()
    }

    /// Delivers every chunk between `min` and `max` after it was read, in
    /// order (`Duration::ZERO` twice: no delay).
    pub fn delay(&self, min: Duration, max: Duration) {
        assert!(min <= max);
        self.shared.settings.send_modify(|s| s.delay = (min, max));
    }

    /// Limits each connection to `bytes_per_sec` each way (0: no limit): a
    /// slow link.
    pub fn rate(&self, bytes_per_sec: u64) {
        self.shared.settings.send_modify(|s| s.rate = bytes_per_sec);
    }

    /// Cuts every open connection now; returns how many.
    pub fn cut(&self, how: Cut) -> usize {
        self.shared.cut_all(how)
    }

    /// Stops forwarding, in the directions given, on every open
    /// connection; they stay open (a half-open link). New connections
    /// are not affected.
    pub fn stall(&self, dirs: &[Dir]) -> usize {
        self.shared.stall_all(dirs)
    }

    /// Arms `strike` to happen once, when a connection has carried
    /// `after_down` bytes down (counted from its start); new connections
    /// are then held or not.
    pub fn strike_after(&self, after_down: u64, strike: Strike, then: Then) {
        self.shared.settings.send_modify(|s| {
            s.trip = Some(Trip {
                after_down,
                strike,
                then,
            })
        });
    }

    /// Whether an armed strike has yet to happen.
    pub fn armed(&self) -> bool {
        self.shared.settings.borrow().trip.is_some()
    }

    /// A partition: new connections are closed at once and open ones
    /// stall both ways.
    pub fn partition(&self) {
        self.shared.settings.send_modify(|s| s.refuse = true);
        self.shared.stall_all(&[Dir::Down, Dir::Up]);
    }

    /// Lets held connections through, and new ones from now on.
    pub fn release(&self) {
        self.shared.settings.send_modify(|s| s.hold = false);
    }

    /// Ends every fault: no refusing, holding, delay, rate limit or armed
    /// strike, and
    /// stalled connections forward again.
    pub fn heal(&self) {
        self.shared
            .settings
            .send_modify(|s| *s = Settings::default());
        for conn in self.shared.conns().values() {
            conn.stalled.send_replace(Stalled::default());
        }
    }
}

impl Shared {
    fn conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cut_all(&self, how: Cut) -> usize {
        let conns: Vec<Arc<Conn>> = self.conns().values().cloned().collect();
        for conn in &conns {
            if conn.cut.send_replace(Some(how)).is_none() {
                self.counters.cut.fetch_add(1, Ordering::SeqCst);
            }
        }
        conns.len()
    }

    fn stall_all(&self, dirs: &[Dir]) -> usize {
        let conns: Vec<Arc<Conn>> = self.conns().values().cloned().collect();
        for conn in &conns {
            self.stall(conn, dirs);
        }
        conns.len()
    }

    fn stall(&self, conn: &Conn, dirs: &[Dir]) {
        conn.stalled.send_modify(|s| {
            for dir in dirs {
                let flag = match dir {
                    Dir::Down => &mut s.down,
                    Dir::Up => &mut s.up,
                };
                if !*flag {
                    *flag = true;
                    self.counters.stalled.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }

    fn latency(&self, seed: &mut u64) -> Duration {
        let (min, max) = self.settings.borrow().delay;
        if max <= min {
            return min;
        }
        // xorshift: spread, not secrecy.
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let span = (max - min).as_micros() as u64;
        min + Duration::from_micros(*seed % (span + 1))
    }

    /// Counts `n` bytes delivered on `conn`, then strikes if an armed
    /// fault is due.
    fn delivered(&self, conn: &Conn, dir: Dir, n: usize) {
        let n = n as u64;
        let total = match dir {
            Dir::Down => {
                self.counters.down_bytes.fetch_add(n, Ordering::SeqCst);
                conn.down.fetch_add(n, Ordering::SeqCst) + n
            }
            Dir::Up => {
                self.counters.up_bytes.fetch_add(n, Ordering::SeqCst);
                conn.up.fetch_add(n, Ordering::SeqCst) + n
            }
        };
        if dir != Dir::Down {
            return;
        }
        let mut due = None;
        self.settings.send_if_modified(|s| match s.trip {
            Some(t) if total >= t.after_down => {
                due = Some(t.strike);
                s.trip = None;
                s.hold = t.then == Then::Hold;
                true
            }
            _ => false,
        });
        if due.is_some() {
            self.counters.strikes.fetch_add(1, Ordering::SeqCst);
        }
        match due {
            Some(Strike::Cut(how)) => {
                self.cut_all(how);
            }
            Some(Strike::Stall) => self.stall(conn, &[Dir::Down, Dir::Up]),
            None => {}
        }
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if shared.settings.borrow().refuse {
            shared.counters.refused.fetch_add(1, Ordering::SeqCst);
            let _ = client.set_zero_linger();
            drop(client);
            continue;
        }
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        let task = relay_one(shared.clone(), id, client);
        shared
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .spawn(task);
    }
}

/// Forwards one connection until both directions end or it is cut.
async fn relay_one(shared: Arc<Shared>, id: u64, mut client: TcpStream) {
    let mut settings = shared.settings.subscribe();
    if settings.wait_for(|s| !s.hold).await.is_err() {
        return;
    }
    if settings.borrow().refuse {
        shared.counters.refused.fetch_add(1, Ordering::SeqCst);
        let _ = client.set_zero_linger();
        return;
    }
    let Ok(mut target) = TcpStream::connect(shared.target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = target.set_nodelay(true);
    let (cut, mut cut_rx) = watch::channel(None);
    let conn = Arc::new(Conn {
        down: AtomicU64::new(0),
        up: AtomicU64::new(0),
        stalled: watch::channel(Stalled::default()).0,
        cut,
    });
    shared.conns().insert(id, conn.clone());
    shared.counters.connections.fetch_add(1, Ordering::SeqCst);
    let cut = {
        let (client_r, client_w) = client.split();
        let (target_r, target_w) = target.split();
        let up = pump(&shared, &conn, Dir::Up, client_r, target_w, id);
        let down = pump(&shared, &conn, Dir::Down, target_r, client_w, id);
        tokio::select! {
            _ = async { tokio::join!(up, down) } => None,
            how = cut_rx.wait_for(Option::is_some) => how.ok().and_then(|h| *h),
        }
    };
    // What the relay held in between is lost either way.
    shared.conns().remove(&id);
    match cut {
        Some(Cut::Reset) => {
            let _ = client.set_zero_linger();
            let _ = target.set_zero_linger();
        }
        Some(Cut::Close) => {
            let _ = client.shutdown().await;
            let _ = target.shutdown().await;
            // Closing a socket with bytes unread, or one that bytes still
            // arrive at, resets it: read on until each end closes too.
            let drain = async |s: &mut TcpStream| {
                let mut sink = vec![0u8; CHUNK];
                while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
            };
            let _ = tokio::time::timeout(Duration::from_secs(30), async {
                tokio::join!(drain(&mut client), drain(&mut target))
            })
            .await;
        }
        None => {}
    }
}

/// Forwards one direction: reads chunks as they come, delivers each after
/// its delay and no faster than the rate limit, and stops reading or
/// writing while this direction stalls.
async fn pump<R, W>(shared: &Shared, conn: &Conn, dir: Dir, mut from: R, mut to: W, id: u64)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT);
    let flowing = || {
        let mut stalled = conn.stalled.subscribe();
        async move {
            let _ = stalled.wait_for(|s| !s.get(dir)).await;
        }
    };
    let reading = async {
        let mut seed = 0x9E37_79B9_7F4A_7C15 ^ (id << 1 | (dir == Dir::Up) as u64);
        let mut buf = vec![0u8; CHUNK];
        loop {
            flowing().await;
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let at = Instant::now() + shared.latency(&mut seed);
            if tx.send((at, buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
        drop(tx);
    };
    let writing = async {
        // When the next chunk may go, at the rate limit.
        let mut paced = Instant::now();
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at.max(paced)).await;
            flowing().await;
            if to.write_all(&chunk).await.is_err() {
                // The reader stops at its next chunk.
                rx.close();
                return;
            }
            shared.delivered(conn, dir, chunk.len());
            let rate = shared.settings.borrow().rate;
            if rate > 0 {
                let took = Duration::from_secs_f64(chunk.len() as f64 / rate as f64);
                paced = Instant::now() + took;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reading, writing);
}
