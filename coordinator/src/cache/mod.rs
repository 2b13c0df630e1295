//! The response cache's home (ARCHITECTURE.md, "Response cache"): recorded
//! answers in `ROOT/cache.db` (`db`), served to every worker's gateway over
//! `CacheService` (`service`), with single flight: while one caller answers
//! a key upstream, other callers of the same key wait for its answer
//! instead of paying for it again.
//!
//! Not part of the coordinator actor: lookups are reads of their own
//! database on blocking threads, and records go to a writer thread of their
//! own, so neither waits on the actor nor slows it.

pub mod db;
pub mod manage;
pub mod service;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_shared::{Error, Result};
use rusqlite::Connection;
use tokio::sync::{oneshot, watch};

pub use db::{AnswerRow, Hit};

/// How long a claim holds other callers of its key back: as long as the
/// gateway waits for a provider's answer. A claim also ends when its answer
/// is recorded, when its call fails, and when its worker's session ends.
pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(600);

/// Records the writer thread commits together, at most.
const WRITE_BATCH: usize = 512;

type Key = [u8; 32];

/// One key being answered upstream by one caller.
struct Flight {
    worker: String,
    since: Instant,
    /// Dropped when the flight ends: waiters wake and look again.
    _ended: watch::Sender<()>,
    ended: watch::Receiver<()>,
}

enum Claim {
    /// The caller answers the key.
    Taken,
    /// Another caller does; wait for it.
    Wait(watch::Receiver<()>),
}

pub struct ResponseCache {
    root: PathBuf,
    writes: mpsc::Sender<(AnswerRow, oneshot::Sender<Result<()>>)>,
    /// Read connections, reused.
    readers: Mutex<Vec<Connection>>,
    flights: Mutex<HashMap<Key, Flight>>,
}

impl ResponseCache {
    /// Opens (creating if needed) the cache of `root` and starts its writer.
    pub fn open(root: &Path) -> Result<Arc<Self>> {
        let connection = db::open(root)?;
        let (writes, received) = mpsc::channel();
        std::thread::Builder::new()
            .name("flotilla-cache".into())
            .spawn(move || write_loop(connection, received))
            .map_err(|e| Error::io("cannot start the cache's writer thread", e))?;
        Ok(Arc::new(ResponseCache {
            root: root.to_path_buf(),
            writes,
            readers: Mutex::new(Vec::new()),
            flights: Mutex::new(HashMap::new()),
        }))
    }

    /// The answer recorded under `key` no earlier than `oldest_ms`. With
    /// `claim`, a miss makes `worker` the one to answer it, or — while
    /// another caller answers it — waits for that answer.
    pub async fn lookup(
        self: &Arc<Self>,
        key: Key,
        oldest_ms: i64,
        claim: bool,
        worker: &str,
    ) -> Result<Option<Hit>> {
        loop {
            if let Some(hit) = self.read(move |c| db::lookup(c, &key, oldest_ms)).await? {
                return Ok(Some(hit));
            }
            if !claim {
                return Ok(None);
            }
            let mut ended = match self.claim_or_wait(key, worker) {
                Claim::Wait(ended) => ended,
                Claim::Taken => {
                    // Its answer may have landed between the read and the claim.
                    let hit = self.read(move |c| db::lookup(c, &key, oldest_ms)).await?;
                    if hit.is_some() {
                        self.end_flight(&key);
                    }
                    return Ok(hit);
                }
            };
            let _ = tokio::time::timeout(CLAIM_TIMEOUT, ended.changed()).await;
        }
    }

    /// Records an answer; once committed, its key's claim ends and those
    /// waiting on it find it.
    pub async fn record(&self, row: AnswerRow) -> Result<()> {
        let key = row.key;
        let (done, committed) = oneshot::channel();
        let written = match self.writes.send((row, done)) {
            Ok(()) => committed
                .await
                .unwrap_or_else(|_| Err(Error::Internal("the cache's writer stopped".into()))),
            Err(_) => Err(Error::Internal("the cache's writer stopped".into())),
        };
        self.end_flight(&key);
        written
    }

    /// Ends a claim whose call failed: a waiter takes it over.
    pub fn abandon(&self, key: &Key) {
        self.end_flight(key);
    }

    /// Ends every claim of a worker whose session ended.
    pub fn release_worker(&self, worker: &str) {
        self.flights
            .lock()
            .expect("not poisoned")
            .retain(|_, flight| flight.worker != worker);
    }

    /// How many of `keys` are recorded no earlier than `oldest_ms`, how many
    /// answers are recorded under `seeds`, and how many of those seeds have any.
    pub async fn count(
        self: &Arc<Self>,
        keys: Vec<Key>,
        seeds: Vec<u64>,
        oldest_ms: i64,
    ) -> Result<(u64, u64, u64)> {
        self.read(move |c| {
            let recorded = db::count(c, &keys, oldest_ms)?;
            let (answers, seeds_with_answers) = db::under_seeds(c, &seeds, oldest_ms)?;
            Ok((recorded, answers, seeds_with_answers))
        })
        .await
    }

    fn claim_or_wait(&self, key: Key, worker: &str) -> Claim {
        let mut flights = self.flights.lock().expect("not poisoned");
        if let Some(flight) = flights.get(&key) {
            if flight.since.elapsed() < CLAIM_TIMEOUT {
                return Claim::Wait(flight.ended.clone());
            }
        }
        let (sender, ended) = watch::channel(());
        flights.insert(
            key,
            Flight {
                worker: worker.to_string(),
                since: Instant::now(),
                _ended: sender,
                ended,
            },
        );
        Claim::Taken
    }

    fn end_flight(&self, key: &Key) {
        self.flights.lock().expect("not poisoned").remove(key);
    }

    /// Runs `read` on a blocking thread with a pooled read connection.
    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let cache = self.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = cache.readers.lock().expect("not poisoned").pop();
            let connection = match pooled {
                Some(connection) => connection,
                None => db::open_read_only(&cache.root)?,
            };
            let result = read(&connection);
            cache.readers.lock().expect("not poisoned").push(connection);
            result
        })
        .await
        .map_err(|e| Error::Internal(format!("a cache read stopped: {e}")))?
    }
}

/// The writer thread: takes every record waiting (up to [`WRITE_BATCH`])
/// and commits them together; each caller hears once its record committed.
fn write_loop(
    mut connection: Connection,
    received: mpsc::Receiver<(AnswerRow, oneshot::Sender<Result<()>>)>,
) {
    while let Ok(first) = received.recv() {
        let mut batch = vec![first];
        while batch.len() < WRITE_BATCH {
            match received.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (rows, waiting): (Vec<AnswerRow>, Vec<_>) = batch.into_iter().unzip();
        let written = db::insert(&mut connection, &rows).map_err(|e| e.to_string());
        if let Err(error) = &written {
            tracing::warn!(%error, answers = rows.len(), "answers could not be recorded in the cache");
        }
        for done in waiting {
            let _ = done.send(written.clone().map_err(Error::Internal));
        }
    }
}
