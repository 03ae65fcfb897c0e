//! The writer thread: group commit.
//!
//! It takes the first batch waiting, then every batch that queued up behind it (up to
//! `max_batch` changes), folds them into one set of changes and commits that in one redb write
//! transaction with [`redb::Durability::Immediate`]. While it syncs, new batches queue up for the
//! next commit, so the commit size follows the arrival rate: one message per fsync when idle,
//! thousands under load, and never more than one fsync in flight.
//!
//! Folding cancels an entry added and removed within the same window (and its message, once no
//! entry of the window points at it): those are never written. A window that folds to nothing
//! completes without a commit; everything before it is already durable.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::Instant;

use redb::{ReadableTable, WriteTransaction};
use verge_message::Message;

use crate::{
    COMMIT_BUCKETS_MS, ENTRIES, EntryKey, EntryMeta, Job, MESSAGES, QUEUES, RECORDS, REFS, Shared,
    StoreError, codec,
};

/// Changes of one commit window, folded.
#[derive(Default)]
struct Window {
    queues: Vec<(String, u32)>,
    /// id → (message, entries of this window pointing at it)
    messages: BTreeMap<u64, (Arc<Message>, u32)>,
    /// key → (encoded meta, message id)
    inserts: BTreeMap<EntryKey, (Vec<u8>, u64)>,
    /// Entries committed earlier, to remove, with their message.
    removes: Vec<(EntryKey, u64)>,
    /// Records by name: the last write of the window wins.
    records: BTreeMap<String, Option<Vec<u8>>>,
    /// Bytes of messages cancelled within the window.
    elided_bytes: u64,
    elided_entries: u64,
}

impl Window {
    fn fold(&mut self, job: &mut Job) {
        let batch = &mut job.batch;
        self.queues.append(&mut batch.queues);
        self.records.extend(batch.records.drain(..));
        for m in batch.messages.drain(..) {
            self.messages.insert(m.id, (m.message, m.refs));
        }
        let mut buf = Vec::with_capacity(64);
        for (key, meta) in batch.inserts.drain(..) {
            buf.clear();
            meta.encode(&mut buf);
            self.inserts.insert(key, (buf.clone(), meta.message));
        }
        for (key, message) in batch.removes.drain(..) {
            if self.inserts.remove(&key).is_none() {
                self.removes.push((key, message));
                continue;
            }
            self.elided_entries += 1;
            if let Some((m, refs)) = self.messages.get_mut(&message) {
                *refs -= 1;
                if *refs == 0 {
                    self.elided_bytes += codec::encoded_len(m) as u64;
                    self.messages.remove(&message);
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.queues.is_empty()
            && self.messages.is_empty()
            && self.inserts.is_empty()
            && self.removes.is_empty()
            && self.records.is_empty()
    }
}

/// What a commit changed in the counters.
struct Applied {
    entries_added: u64,
    entries_removed: u64,
    messages_written: u64,
    bytes_freed: u64,
}

fn apply(txn: &WriteTransaction, window: &Window) -> Result<Applied, redb::Error> {
    let mut applied = Applied {
        entries_added: window.inserts.len() as u64,
        entries_removed: 0,
        messages_written: 0,
        bytes_freed: 0,
    };
    if !window.queues.is_empty() {
        let mut queues = txn.open_table(QUEUES)?;
        for (name, id) in &window.queues {
            queues.insert(name.as_str(), id)?;
        }
    }
    if !window.records.is_empty() {
        let mut records = txn.open_table(RECORDS)?;
        for (name, value) in &window.records {
            match value {
                Some(value) => drop(records.insert(name.as_str(), value.as_slice())?),
                None => drop(records.remove(name.as_str())?),
            }
        }
    }
    let mut entries = txn.open_table(ENTRIES)?;
    let mut messages = txn.open_table(MESSAGES)?;
    let mut refs = txn.open_table(REFS)?;
    let mut value = Vec::new();
    for (key, (meta, id)) in &window.inserts {
        value.clear();
        value.extend_from_slice(meta);
        // The only entry of its message: the message goes inline.
        if let Some((message, 1)) = window.messages.get(id) {
            codec::encode_message(message, &mut value);
            applied.messages_written += 1;
        }
        entries.insert(key.tuple(), value.as_slice())?;
    }
    for (id, (message, n)) in &window.messages {
        if *n > 1 {
            value.clear();
            codec::encode_message(message, &mut value);
            messages.insert(id, value.as_slice())?;
            refs.insert(id, n)?;
            applied.messages_written += 1;
        }
    }
    let mut released: HashMap<u64, u32> = HashMap::new();
    for (key, message) in &window.removes {
        // An entry that is not there was never committed (its commit failed): nothing to do.
        let Some(old) = entries.remove(key.tuple())? else {
            continue;
        };
        applied.entries_removed += 1;
        let inline = match EntryMeta::decode(old.value()) {
            Ok((_, inline)) => inline.len() as u64,
            Err(_) => 0,
        };
        if inline > 0 {
            applied.bytes_freed += inline;
        } else {
            *released.entry(*message).or_default() += 1;
        }
    }
    for (id, n) in released {
        let held = refs.get(id)?.map_or(1, |g| g.value());
        if held > n {
            refs.insert(id, held - n)?;
        } else {
            if let Some(bytes) = messages.remove(id)? {
                applied.bytes_freed += bytes.value().len() as u64;
            }
            refs.remove(id)?;
        }
    }
    Ok(applied)
}

/// Commit the folded window; the error is what every batch in it gets.
fn commit(shared: &Shared, window: &Window) -> Result<Applied, StoreError> {
    let db = shared.db();
    let mut txn = db.begin_write().map_err(StoreError::io)?;
    txn.set_durability(redb::Durability::Immediate)
        .map_err(StoreError::io)?;
    let applied = apply(&txn, window).map_err(StoreError::io)?;
    txn.commit().map_err(StoreError::io)?;
    Ok(applied)
}

fn record(shared: &Shared, started: Instant, window: &Window, applied: &Applied) {
    let c = &shared.counters;
    let elapsed = started.elapsed();
    let ms = elapsed.as_secs_f64() * 1e3;
    let bucket = COMMIT_BUCKETS_MS
        .iter()
        .position(|&le| ms <= le)
        .unwrap_or(COMMIT_BUCKETS_MS.len());
    c.commit_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    c.commits.fetch_add(1, Ordering::Relaxed);
    c.commit_ns.fetch_add(
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    c.messages_written
        .fetch_add(applied.messages_written, Ordering::Relaxed);
    c.entries
        .fetch_add(applied.entries_added, Ordering::Relaxed);
    c.entries
        .fetch_sub(applied.entries_removed, Ordering::Relaxed);
    c.entries_elided
        .fetch_add(window.elided_entries, Ordering::Relaxed);
}

/// Compact a drained store whose file grew past the threshold.
fn maybe_compact(shared: &Shared) {
    if shared.counters.entries.load(Ordering::Relaxed) != 0 {
        return;
    }
    let size = std::fs::metadata(&shared.path).map_or(0, |m| m.len());
    if size <= shared.options.compact_above {
        return;
    }
    let started = Instant::now();
    let mut db = shared
        .db
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match crate::compact(&mut db) {
        Ok(()) => {
            shared.counters.compactions.fetch_add(1, Ordering::Relaxed);
            let after = std::fs::metadata(&shared.path).map_or(0, |m| m.len());
            tracing::info!(before = size, after, took = ?started.elapsed(), "message store compacted");
        }
        Err(e) => tracing::warn!(error = %e, "message store compaction failed"),
    }
}

/// The writer loop; returns when every [`crate::Store`] handle is gone and all is committed.
pub(crate) fn run(shared: &Shared, jobs: &mpsc::Receiver<Job>) {
    let mut pending: Vec<Job> = Vec::new();
    while let Ok(first) = jobs.recv() {
        let mut ops = first.batch.ops();
        pending.push(first);
        while ops < shared.options.max_batch {
            match jobs.try_recv() {
                Ok(job) => {
                    ops += job.batch.ops();
                    pending.push(job);
                }
                Err(_) => break,
            }
        }
        let mut window = Window::default();
        for job in &mut pending {
            window.fold(job);
        }
        shared
            .used
            .fetch_sub(window.elided_bytes, Ordering::Relaxed);
        let result = if window.is_empty() {
            shared
                .counters
                .entries_elided
                .fetch_add(window.elided_entries, Ordering::Relaxed);
            Ok(())
        } else {
            let started = Instant::now();
            match commit(shared, &window) {
                Ok(applied) => {
                    record(shared, started, &window, &applied);
                    shared
                        .used
                        .fetch_sub(applied.bytes_freed, Ordering::Relaxed);
                    if applied.entries_removed > 0 {
                        maybe_compact(shared);
                    }
                    Ok(())
                }
                Err(e) => {
                    tracing::error!(error = %e, "message store commit failed");
                    let unwritten: u64 = window
                        .messages
                        .values()
                        .map(|(m, _)| codec::encoded_len(m) as u64)
                        .sum();
                    shared.used.fetch_sub(unwritten, Ordering::Relaxed);
                    Err(e)
                }
            }
        };
        shared.backlog.fetch_sub(ops as u64, Ordering::Relaxed);
        if let Some(last) = pending.last() {
            shared.committed.send_replace(last.ticket);
        }
        for job in pending.drain(..) {
            if let Some(done) = job.done {
                // A submitter that stopped waiting is not an error.
                let _ = done.send(result.clone());
            }
        }
    }
}
