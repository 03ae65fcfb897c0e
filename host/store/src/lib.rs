//! Verge's durable message store: the hub's queues in one redb file.
//!
//! The store knows messages and queue entries, not routes or modules. Its tables:
//!
//! | table      | key                    | value                                       |
//! |------------|------------------------|---------------------------------------------|
//! | `queues`   | queue name             | queue id (`u32`)                            |
//! | `entries`  | (queue, lane, seq)     | [`EntryMeta`]: message id, size, times, input |
//! | `messages` | message id (`u64`)     | the message ([`codec`])                     |
//! | `refs`     | message id             | references, only for messages in 2+ queues  |
//!
//! A message is stored once however many queues it goes to; an entry per queue points at it. A
//! message in one queue only (the common case) is stored inline in its entry instead, and
//! `messages` and `refs` never see it.
//!
//! Every change goes through [`Store::submit`] as a [`Batch`] to one writer thread, which
//! commits everything that queued up while the previous commit was syncing in one redb write
//! transaction ("group commit": one fsync costs milliseconds on an edge device's disk, so
//! thousands of messages share it). The [`Durable`] a submit returns resolves once its batch is
//! on disk. Batches commit in submission order and whole, so a batch that takes a module's input
//! and enqueues the outputs its handler produced is one atomic step.
//!
//! An entry removed before the commit that would have written it (a message delivered and acked
//! while the previous commit synced) is never written at all: at the commit the hub no longer
//! holds it, so there is nothing to make durable.
//!
//! The store is opened with an integrity check: a file that is not a redb file, was truncated or
//! was damaged is refused with [`StoreError::Damaged`], never silently replaced by an empty store.

pub mod codec;
mod writer;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, mpsc};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{oneshot, watch};
use verge_message::Message;

pub use codec::{DecodeError, EntryMeta};

/// A queue's id in the store.
pub type QueueId = u32;

const QUEUES: TableDefinition<&str, u32> = TableDefinition::new("queues");
const ENTRIES: TableDefinition<(u32, u8, u64), &[u8]> = TableDefinition::new("entries");
const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
const REFS: TableDefinition<u64, u32> = TableDefinition::new("refs");
/// Small named documents of the daemon's state (twins), committed with the messages.
const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");

/// Where an entry sits: its queue, priority lane and position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryKey {
    /// The queue.
    pub queue: QueueId,
    /// The priority lane.
    pub lane: u8,
    /// Position in the lane, increasing with arrival.
    pub seq: u64,
}

impl EntryKey {
    fn tuple(self) -> (u32, u8, u64) {
        (self.queue, self.lane, self.seq)
    }
}

/// A message to store. The writer encodes it, and only if it is still queued at the commit.
#[derive(Debug)]
pub struct NewMessage {
    /// Its id ([`Store::next_message_id`]).
    pub id: u64,
    /// How many entries of the same batch point at it.
    pub refs: u32,
    /// The message, shared with the hub's queues.
    pub message: Arc<Message>,
}

/// Changes that commit together, in this order: queues, messages and entries added, then entries
/// removed (with the message each pointed at, released when no entry points at it any more).
#[derive(Debug, Default)]
pub struct Batch {
    /// Queues to register (name, id).
    pub queues: Vec<(String, QueueId)>,
    /// Messages to store.
    pub messages: Vec<NewMessage>,
    /// Entries to add.
    pub inserts: Vec<(EntryKey, EntryMeta)>,
    /// Entries to remove, each with its message's id.
    pub removes: Vec<(EntryKey, u64)>,
    /// Records to write (`Some`) or delete (`None`), by name ([`Store::records`]).
    pub records: Vec<(String, Option<Vec<u8>>)>,
}

impl Batch {
    /// Whether it changes nothing (submitting it still waits for the commits before it).
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
            && self.messages.is_empty()
            && self.inserts.is_empty()
            && self.removes.is_empty()
            && self.records.is_empty()
    }

    fn ops(&self) -> usize {
        self.queues.len()
            + self.messages.len()
            + self.inserts.len()
            + self.removes.len()
            + self.records.len()
    }
}

/// How the store is opened.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// redb's page cache, bytes.
    pub cache_bytes: usize,
    /// Bytes of stored messages beyond which new ones are refused ([`StoreError::Full`]).
    pub max_bytes: Option<u64>,
    /// Most changes committed in one transaction.
    pub max_batch: usize,
    /// A drained store whose file is bigger than this is compacted.
    pub compact_above: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 16 << 20,
            max_bytes: None,
            max_batch: 65_536,
            compact_above: 64 << 20,
        }
    }
}

/// What went wrong.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be opened (permissions, another process).
    #[error("cannot open the message store {path}: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is not a valid store.
    #[error(
        "the message store {path} is damaged ({reason}). Verge did not start, so that the \
         messages in it are not lost. To start with an empty store, move the file aside (for \
         example `mv {path} {path}.damaged`); the messages in it are then not delivered."
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What redb found.
        reason: String,
    },
    /// The configured size limit is reached.
    #[error(
        "the message store is full: {used} bytes of messages stored, limit {limit} \
         ([store] max_size_mb); new messages are refused until queued ones are delivered or expire"
    )]
    Full {
        /// Bytes stored.
        used: u64,
        /// The limit.
        limit: u64,
    },
    /// A read or a commit failed.
    #[error("message store: {0}")]
    Io(Arc<str>),
    /// The writer thread is gone.
    #[error("the message store has stopped")]
    Closed,
    /// A stored value does not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

impl StoreError {
    fn io(e: impl std::fmt::Display) -> Self {
        Self::Io(e.to_string().into())
    }
}

/// One priority lane of a queue found in the store at open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredLane {
    /// The lane.
    pub lane: u8,
    /// Entries in it.
    pub count: usize,
    /// Their messages' sizes.
    pub bytes: u64,
    /// The oldest entry's position.
    pub first_seq: u64,
}

/// A queue found in the store at open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredQueue {
    /// Its name.
    pub name: String,
    /// Its id.
    pub id: QueueId,
    /// Its non-empty lanes.
    pub lanes: Vec<RecoveredLane>,
    /// The position after its newest entry.
    pub next_seq: u64,
}

/// An entry read back from the store.
#[derive(Debug)]
pub struct StoredEntry {
    /// Where it sits.
    pub key: EntryKey,
    /// What the store keeps about it.
    pub meta: EntryMeta,
    /// The message; `None` for an entry that had expired (its message is not read).
    pub message: Option<Message>,
}

/// Counters of the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Write transactions committed.
    pub commits: u64,
    /// Total time spent committing, ns.
    pub commit_ns: u64,
    /// Commits by duration: ≤ 1, 2.5, 5, 10, 25, 50, 100, 250 ms, 1 s, more.
    pub commit_buckets: [u64; COMMIT_BUCKETS_MS.len() + 1],
    /// Messages written.
    pub messages_written: u64,
    /// Entries added and removed within one commit window, so never written.
    pub entries_elided: u64,
    /// Entries stored now.
    pub entries: u64,
    /// Bytes of messages stored (or about to be) now.
    pub message_bytes: u64,
    /// The file's size.
    pub file_bytes: u64,
    /// Compactions run.
    pub compactions: u64,
}

/// Uncommitted changes beyond which producers wait for the writer ([`Store::wait_backlog`]).
pub const BACKLOG_LIMIT: u64 = 16_384;

/// Upper bounds of the commit-duration buckets, ms.
pub const COMMIT_BUCKETS_MS: [f64; 9] = [1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0];

#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    commit_ns: AtomicU64,
    commit_buckets: [AtomicU64; COMMIT_BUCKETS_MS.len() + 1],
    messages_written: AtomicU64,
    entries_elided: AtomicU64,
    entries: AtomicU64,
    compactions: AtomicU64,
}

/// What the writer thread shares with the store's handles.
#[derive(Debug)]
struct Shared {
    path: PathBuf,
    db: RwLock<Database>,
    used: AtomicU64,
    counters: Counters,
    /// The ticket of the newest batch on disk (every earlier one is too).
    committed: watch::Sender<u64>,
    /// Changes submitted and not committed yet.
    backlog: AtomicU64,
    options: StoreOptions,
}

impl Shared {
    fn db(&self) -> std::sync::RwLockReadGuard<'_, Database> {
        self.db.read().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Job {
    ticket: u64,
    batch: Batch,
    done: Option<oneshot::Sender<Result<(), StoreError>>>,
}

/// The store. Cheap to share behind an `Arc`; dropping the last handle stops the writer after
/// it has committed everything submitted.
#[derive(Debug)]
pub struct Store {
    shared: Arc<Shared>,
    /// The job channel, and the ticket of the last job sent.
    jobs: Mutex<(Option<mpsc::Sender<Job>>, u64)>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    next_message: AtomicU64,
    next_queue: AtomicU32,
    queues: Mutex<HashMap<String, QueueId>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("ops", &self.batch.ops())
            .finish()
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn classify_open(path: &Path, e: redb::DatabaseError) -> StoreError {
    use redb::{DatabaseError as D, StorageError as S};
    let damaged = |reason: String| StoreError::Damaged {
        path: path.to_owned(),
        reason,
    };
    match e {
        D::Storage(S::Corrupted(reason)) => damaged(reason),
        D::Storage(S::Io(io)) if io.kind() == std::io::ErrorKind::InvalidData => {
            damaged(io.to_string())
        }
        D::RepairAborted => damaged("its repair after a crash failed".into()),
        D::UpgradeRequired(v) => damaged(format!("file format {v} needs an upgrade")),
        other => StoreError::Open {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    }
}

impl Store {
    /// Open (or create) the store at `path` and recover its queues.
    pub fn open(
        path: &Path,
        options: StoreOptions,
    ) -> Result<(Arc<Self>, Vec<RecoveredQueue>), StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        }
        let existed = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
        let mut builder = Database::builder();
        builder
            .set_cache_size(options.cache_bytes)
            .set_check_integrity_on_open(existed)
            .set_repair_callback(|session| {
                tracing::info!(
                    progress = format!("{:.0}%", session.progress() * 100.0),
                    "repairing the message store after an unclean stop"
                );
            });
        let db = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.create(path)))
            .map_err(|_| StoreError::Damaged {
                path: path.to_owned(),
                reason: "redb panicked reading it".into(),
            })?
            .map_err(|e| classify_open(path, e))?;
        let damaged = |e: &dyn std::fmt::Display| StoreError::Damaged {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        // Create the tables so that readers always find them.
        let txn = db.begin_write().map_err(StoreError::io)?;
        for result in [
            txn.open_table(QUEUES).map(drop),
            txn.open_table(ENTRIES).map(drop),
            txn.open_table(MESSAGES).map(drop),
            txn.open_table(REFS).map(drop),
            txn.open_table(RECORDS).map(drop),
        ] {
            result.map_err(|e| damaged(&e))?;
        }
        txn.commit().map_err(StoreError::io)?;

        let recovered = recover(&db).map_err(|e| match e {
            StoreError::Io(reason) => damaged(&reason),
            other => other,
        })?;
        let mut db = db;
        if recovered.entries == 0
            && std::fs::metadata(path).map_or(0, |m| m.len()) > options.compact_above / 4
        {
            compact(&mut db).map_err(StoreError::io)?;
        }
        let (committed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            path: path.to_owned(),
            db: RwLock::new(db),
            used: AtomicU64::new(recovered.message_bytes),
            counters: Counters::default(),
            committed,
            backlog: AtomicU64::new(0),
            options,
        });
        shared
            .counters
            .entries
            .store(recovered.entries, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("verge-store".into())
            .spawn(move || writer::run(&writer_shared, &rx))
            .map_err(StoreError::io)?;
        let names = recovered
            .queues
            .iter()
            .map(|q| (q.name.clone(), q.id))
            .collect();
        let store = Self {
            shared,
            jobs: Mutex::new((Some(tx), 0)),
            writer: Mutex::new(Some(writer)),
            next_message: AtomicU64::new(recovered.next_message),
            next_queue: AtomicU32::new(recovered.next_queue),
            queues: Mutex::new(names),
        };
        tracing::info!(
            path = %path.display(),
            queues = recovered.queues.len(),
            entries = recovered.entries,
            "message store open"
        );
        Ok((Arc::new(store), recovered.queues))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The id of the queue named `name`, registering it if it is new.
    pub fn queue_id(&self, name: &str) -> QueueId {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(&id) = queues.get(name) {
            return id;
        }
        let id = self.next_queue.fetch_add(1, Ordering::Relaxed);
        queues.insert(name.to_owned(), id);
        // Registered before anything can be queued in it: batches commit in order.
        drop(self.submit(Batch {
            queues: vec![(name.to_owned(), id)],
            ..Batch::default()
        }));
        id
    }

    /// A fresh message id.
    pub fn next_message_id(&self) -> u64 {
        self.next_message.fetch_add(1, Ordering::Relaxed)
    }

    /// Account for `bytes` more of stored messages ([`codec::encoded_len`] of each), or refuse
    /// them if the size limit would be passed. The writer gives the bytes back as messages are
    /// removed.
    pub fn reserve(&self, bytes: u64) -> Result<(), StoreError> {
        let used = self.shared.used.fetch_add(bytes, Ordering::Relaxed) + bytes;
        match self.shared.options.max_bytes {
            Some(limit) if used > limit && used > bytes => {
                self.shared.used.fetch_sub(bytes, Ordering::Relaxed);
                Err(StoreError::Full {
                    used: used - bytes,
                    limit,
                })
            }
            _ => Ok(()),
        }
    }

    /// Queue `batch` for the next commit. Batches commit whole and in the order submitted; the
    /// returned [`Durable`] resolves when this one is on disk (dropping it is fine).
    pub fn submit(&self, batch: Batch) -> Durable {
        self.submit_ticketed(batch).1
    }

    /// [`Store::submit`] for a batch nobody waits for (removals of delivered entries): no
    /// completion is allocated.
    pub fn submit_detached(&self, batch: Batch) {
        self.shared
            .backlog
            .fetch_add(batch.ops() as u64, Ordering::Relaxed);
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        jobs.1 += 1;
        let job = Job {
            ticket: jobs.1,
            batch,
            done: None,
        };
        if let Some(tx) = &jobs.0 {
            // A closed store has nothing left to remove from.
            let _ = tx.send(job);
        }
    }

    /// [`Store::submit`], also returning the batch's ticket: it is durable once
    /// [`Store::durable_through`] reaches it.
    pub fn submit_ticketed(&self, batch: Batch) -> (u64, Durable) {
        let (done, rx) = oneshot::channel();
        self.shared
            .backlog
            .fetch_add(batch.ops() as u64, Ordering::Relaxed);
        let mut jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        jobs.1 += 1;
        let ticket = jobs.1;
        let job = Job {
            ticket,
            batch,
            done: Some(done),
        };
        let sent = jobs.0.as_ref().is_some_and(|tx| tx.send(job).is_ok());
        if sent {
            (ticket, Durable(Some(rx), None))
        } else {
            (ticket, Durable::ready(Err(StoreError::Closed)))
        }
    }

    /// Changes submitted and not yet committed.
    pub fn backlog(&self) -> u64 {
        self.shared.backlog.load(Ordering::Relaxed)
    }

    /// Wait until at most `limit` changes are waiting for the writer. Producers wait below
    /// [`BACKLOG_LIMIT`], so that nobody outruns the disk; consumers below a multiple of it, so
    /// that a backlog drained faster than its removals commit does not delay live commits.
    pub async fn wait_backlog(&self, limit: u64) {
        if self.backlog() <= limit {
            return;
        }
        let mut commits = self.commits();
        while self.backlog() > limit {
            commits.mark_unchanged();
            if self.backlog() <= limit || commits.changed().await.is_err() {
                return;
            }
        }
    }

    /// The ticket of the newest batch on disk; every batch with a smaller ticket is on disk too.
    /// (A batch whose commit failed counts as done: its submitter got the error.)
    pub fn durable_through(&self) -> u64 {
        *self.shared.committed.borrow()
    }

    /// Commit everything submitted, stop the writer and close the file cleanly (so that the
    /// next open needs no repair). Later submits fail with [`StoreError::Closed`].
    pub fn close(&self) {
        drop(
            self.jobs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .0
                .take(),
        );
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(writer) = writer
            && writer.join().is_err()
        {
            tracing::error!("the message store's writer panicked");
        }
    }

    /// Follow commits: the value is [`Store::durable_through`].
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.shared.committed.subscribe()
    }

    /// Walk up to `max` entries of a lane from position `from` on, oldest first, in one read
    /// transaction: `each` gets the entry, its inline message (empty if stored on its own) and
    /// the messages table, and says whether to go on.
    fn walk_lane(
        &self,
        from: EntryKey,
        max: usize,
        mut each: impl FnMut(
            EntryKey,
            EntryMeta,
            &[u8],
            &redb::ReadOnlyTable<u64, &'static [u8]>,
        ) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let db = self.shared.db();
        let txn = db.begin_read().map_err(StoreError::io)?;
        let entries = txn.open_table(ENTRIES).map_err(StoreError::io)?;
        let messages = txn.open_table(MESSAGES).map_err(StoreError::io)?;
        let range = entries
            .range(from.tuple()..=(from.queue, from.lane, u64::MAX))
            .map_err(StoreError::io)?;
        for row in range.take(max) {
            let (key, value) = row.map_err(StoreError::io)?;
            let (queue, lane, seq) = key.value();
            let (meta, inline) = EntryMeta::decode(value.value())?;
            if !each(EntryKey { queue, lane, seq }, meta, inline, &messages)? {
                break;
            }
        }
        Ok(())
    }

    /// Read up to `max` entries of a lane from position `from` on, oldest first. Entries that
    /// expired by `now_ms` come without their message.
    pub fn read_lane(
        &self,
        from: EntryKey,
        max: usize,
        now_ms: u64,
    ) -> Result<Vec<StoredEntry>, StoreError> {
        let mut out = Vec::new();
        self.walk_lane(from, max, |key, meta, inline, messages| {
            let message = if meta.expired(now_ms) {
                None
            } else if !inline.is_empty() {
                Some(codec::decode_message(inline)?)
            } else {
                let bytes = messages
                    .get(meta.message)
                    .map_err(StoreError::io)?
                    .ok_or_else(|| StoreError::Io("an entry's message is missing".into()))?;
                Some(codec::decode_message(bytes.value())?)
            };
            out.push(StoredEntry { key, meta, message });
            Ok(true)
        })?;
        Ok(out)
    }

    /// The expired entries at the head of a lane from `from` on (stopping at the first live one,
    /// as edgeHub's cleanup does), at most `max`.
    pub fn expired_head(
        &self,
        from: EntryKey,
        max: usize,
        now_ms: u64,
    ) -> Result<Vec<(EntryKey, EntryMeta)>, StoreError> {
        let mut out = Vec::new();
        self.walk_lane(from, max, |key, meta, _, _| {
            let expired = meta.expired(now_ms);
            if expired {
                out.push((key, meta));
            }
            Ok(expired)
        })?;
        Ok(out)
    }

    /// The records whose names start with `prefix`, by name, as last committed.
    pub fn records(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let db = self.shared.db();
        let txn = db.begin_read().map_err(StoreError::io)?;
        let table = txn.open_table(RECORDS).map_err(StoreError::io)?;
        let mut out = Vec::new();
        for row in table.range(prefix..).map_err(StoreError::io)? {
            let (name, value) = row.map_err(StoreError::io)?;
            if !name.value().starts_with(prefix) {
                break;
            }
            out.push((name.value().to_owned(), value.value().to_vec()));
        }
        Ok(out)
    }

    /// The store's counters.
    pub fn stats(&self) -> StoreStats {
        let c = &self.shared.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut buckets = [0; COMMIT_BUCKETS_MS.len() + 1];
        for (b, a) in buckets.iter_mut().zip(&c.commit_buckets) {
            *b = load(a);
        }
        StoreStats {
            commits: load(&c.commits),
            commit_ns: load(&c.commit_ns),
            commit_buckets: buckets,
            messages_written: load(&c.messages_written),
            entries_elided: load(&c.entries_elided),
            entries: load(&c.entries),
            message_bytes: load(&self.shared.used),
            file_bytes: std::fs::metadata(&self.shared.path).map_or(0, |m| m.len()),
            compactions: load(&c.compactions),
        }
    }

    /// Wait until everything submitted so far is on disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        // An empty batch resolves when everything before it has committed.
        self.submit(Batch::default()).await
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// Resolves when a submitted batch is on disk.
#[derive(Debug)]
#[must_use = "a Durable does nothing unless awaited; drop it to not wait"]
pub struct Durable(
    Option<oneshot::Receiver<Result<(), StoreError>>>,
    Option<Result<(), StoreError>>,
);

impl Durable {
    /// Already resolved.
    pub fn ready(result: Result<(), StoreError>) -> Self {
        Self(None, Some(result))
    }
}

impl Future for Durable {
    type Output = Result<(), StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(rx) = &mut self.0 {
            return Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(StoreError::Closed)));
        }
        Poll::Ready(self.1.take().unwrap_or(Ok(())))
    }
}

struct Recovered {
    queues: Vec<RecoveredQueue>,
    entries: u64,
    message_bytes: u64,
    next_message: u64,
    next_queue: u32,
}

fn recover(db: &Database) -> Result<Recovered, StoreError> {
    let txn = db.begin_read().map_err(StoreError::io)?;
    let names = txn.open_table(QUEUES).map_err(StoreError::io)?;
    let mut queues: Vec<RecoveredQueue> = Vec::new();
    for row in names.iter().map_err(StoreError::io)? {
        let (name, id) = row.map_err(StoreError::io)?;
        queues.push(RecoveredQueue {
            name: name.value().to_owned(),
            id: id.value(),
            lanes: Vec::new(),
            next_seq: 0,
        });
    }
    queues.sort_by_key(|q| q.id);
    let next_queue = queues.last().map_or(0, |q| q.id + 1);
    let entries = txn.open_table(ENTRIES).map_err(StoreError::io)?;
    let mut count = 0;
    let mut message_bytes = 0;
    let mut next_message = 1;
    for row in entries.iter().map_err(StoreError::io)? {
        let (key, value) = row.map_err(StoreError::io)?;
        let (queue, lane, seq) = key.value();
        let (meta, inline) = EntryMeta::decode(value.value())?;
        count += 1;
        message_bytes += inline.len() as u64;
        next_message = next_message.max(meta.message + 1);
        let Ok(at) = queues.binary_search_by_key(&queue, |q| q.id) else {
            return Err(StoreError::Io(
                format!("entries of unknown queue {queue}").into(),
            ));
        };
        let q = &mut queues[at];
        q.next_seq = q.next_seq.max(seq + 1);
        match q.lanes.last_mut() {
            Some(l) if l.lane == lane => {
                l.count += 1;
                l.bytes += u64::from(meta.size);
            }
            _ => q.lanes.push(RecoveredLane {
                lane,
                count: 1,
                bytes: u64::from(meta.size),
                first_seq: seq,
            }),
        }
    }
    let messages = txn.open_table(MESSAGES).map_err(StoreError::io)?;
    for row in messages.iter().map_err(StoreError::io)? {
        let (id, value) = row.map_err(StoreError::io)?;
        message_bytes += value.value().len() as u64;
        next_message = next_message.max(id.value() + 1);
    }
    Ok(Recovered {
        queues,
        entries: count,
        message_bytes,
        next_message,
        next_queue,
    })
}

fn compact(db: &mut Database) -> Result<(), redb::CompactionError> {
    while db.compact()? {}
    Ok(())
}

#[cfg(test)]
mod tests;
