//! One queue per destination (a module's inputs, or upstream), with IoT Edge's priority lanes.
//!
//! A queue holds [`Entry`]s in eleven lanes: priorities 0 (highest) to 9, and the default lane
//! for routes without a priority. Within a lane entries leave in the order they arrived; a
//! consumer always takes from the highest non-empty lane.
//!
//! Delivery is at-least-once: taking an entry moves it to `in_flight`; the consumer acks it
//! (gone) or nacks it (back at its place in its lane). A consumer that goes away returns
//! everything it had in flight. Only one consumer is attached to a queue at a time.
//!
//! Queues are bounded by message count and by bytes. Producers admit a batch into several queues
//! at once or not at all ([`admit`]), waiting while any of them is full; that wait is the hub's
//! backpressure. A queue that is empty always admits one batch, so an oversized batch cannot wait
//! forever. Expired entries (route TTL) are dropped when a consumer reaches them and by
//! [`Queue::expire`].
//!
//! With a durable store ([`Journal`]) every admitted entry is also written to it, in the same
//! store batch as the rest of its commit, and every ack removes it there. Only the head of each
//! lane stays in memory (`resident`, up to [`HubOptions::resident_per_queue`] entries per queue);
//! what arrives beyond that is "spilled": counted, but kept in the store only, and paged back in
//! ([`Queue::refill`]) when the consumer reaches it. Per lane, memory holds a prefix of the lane
//! and the store the rest, so a backlog of millions costs disk, not RAM, and a restart simply
//! starts with everything spilled.
//!
//! [`HubOptions::resident_per_queue`]: crate::HubOptions::resident_per_queue

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;
use verge_message::Message;
use verge_store::{Batch, Durable, EntryKey, EntryMeta, QueueId, Store, StoreError, unix_ms};

use crate::{Target, stats::QueueStats};

/// Priority lanes 0..=9 plus the default lane.
pub const LANES: usize = 11;
/// The lane of routes without a priority.
pub const DEFAULT_LANE: u8 = 10;

/// How big a queue may grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimits {
    /// Messages (queued plus in flight).
    pub max_messages: usize,
    /// Bytes of messages (queued plus in flight), counted by [`Message::size`].
    pub max_bytes: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            max_messages: 10_000_000,
            max_bytes: 4 << 30,
        }
    }
}

/// A message waiting in a queue.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Position in the queue, increasing with arrival.
    pub seq: u64,
    /// The message, shared with every other queue it went to.
    pub message: Arc<Message>,
    /// The module input it goes to (`None` for upstream).
    pub input: Option<Arc<str>>,
    /// Priority lane (0..=9, or [`DEFAULT_LANE`]).
    pub lane: u8,
    /// When the hub accepted it.
    pub enqueued: SystemTime,
    /// When it expires, if it does.
    pub expires: Option<Instant>,
    /// Times it was handed to a consumer before.
    pub attempts: u32,
    /// Its message's id in the durable store (0 without one).
    pub stored: u64,
    /// The store batch that wrote it ([`Store::durable_through`]); 0 when durable already.
    pub(crate) ticket: u64,
}

impl Entry {
    fn size(&self) -> usize {
        self.message.size()
    }
}

/// Entries handed to the consumer and not yet acked, sorted by `seq`.
///
/// Consumers take entries in (mostly) increasing `seq` and ack them in (mostly) the same order,
/// so this is a deque with tombstones: taking appends, acking the oldest pops it, acking another
/// leaves a tombstone that is popped when it reaches the front (or swept when tombstones
/// outnumber live entries). Lookups are binary searches.
#[derive(Debug, Default)]
struct InFlight {
    slots: VecDeque<(u64, Option<Entry>)>,
    live: usize,
}

impl InFlight {
    fn len(&self) -> usize {
        self.live
    }

    fn insert(&mut self, entry: Entry) {
        let seq = entry.seq;
        if self.slots.back().is_none_or(|(last, _)| *last < seq) {
            self.slots.push_back((seq, Some(entry)));
        } else {
            let at = self.slots.partition_point(|(s, _)| *s < seq);
            self.slots.insert(at, (seq, Some(entry)));
        }
        self.live += 1;
    }

    fn remove(&mut self, seq: u64) -> Option<Entry> {
        let entry = match self.slots.front_mut() {
            Some((s, slot)) if *s == seq => slot.take(),
            _ => {
                let at = self.slots.binary_search_by_key(&seq, |(s, _)| *s).ok()?;
                self.slots[at].1.take()
            }
        }?;
        self.live -= 1;
        while self.slots.front().is_some_and(|(_, slot)| slot.is_none()) {
            self.slots.pop_front();
        }
        if self.slots.len() > 2 * self.live + 64 {
            self.slots.retain(|(_, slot)| slot.is_some());
        }
        Some(entry)
    }

    fn get(&self, seq: u64) -> Option<&Entry> {
        let at = self.slots.binary_search_by_key(&seq, |(s, _)| *s).ok()?;
        self.slots[at].1.as_ref()
    }

    fn values(&self) -> impl Iterator<Item = &Entry> {
        self.slots.iter().filter_map(|(_, slot)| slot.as_ref())
    }

    fn drain(&mut self) -> impl Iterator<Item = Entry> + use<> {
        self.live = 0;
        std::mem::take(&mut self.slots)
            .into_iter()
            .filter_map(|(_, slot)| slot)
    }
}

/// Entries of a lane that are in the store only.
#[derive(Clone, Copy, Debug, Default)]
struct Spill {
    /// How many.
    count: usize,
    /// The oldest one's position; every resident or in-flight entry of the lane is older.
    from: u64,
}

/// An entry that left a queue without being delivered, to remove from the store: (lane, seq,
/// stored message).
type Gone = (u8, u64, u64);

#[derive(Debug, Default)]
struct State {
    lanes: [VecDeque<Entry>; LANES],
    spilled: [Spill; LANES],
    /// Entries in `lanes`.
    resident: usize,
    in_flight: InFlight,
    messages: usize,
    bytes: usize,
    next_seq: u64,
    consumer: Option<u64>,
    stats: QueueStats,
    /// The smallest batch (messages, bytes) a producer waits to admit, if one waits: acks wake
    /// producers only once that much room is free, not on every ack.
    waiting: Option<(usize, usize)>,
}

fn lane_index(lane: u8) -> usize {
    usize::from(lane).min(LANES - 1)
}

impl State {
    fn has_room(&self, limits: &QueueLimits, messages: usize, bytes: usize) -> bool {
        self.messages == 0
            || (self.messages + messages <= limits.max_messages
                && self.bytes + bytes <= limits.max_bytes)
    }

    /// A producer will wait for room for `messages` and `bytes` (it registered for `writable`).
    fn wait_for(&mut self, messages: usize, bytes: usize) {
        self.waiting = Some(match self.waiting {
            Some((m, b)) => (m.min(messages), b.min(bytes)),
            None => (messages, bytes),
        });
    }

    /// Whether waiting producers must be woken: one of them may fit now. Every waiter needs at
    /// least `waiting`, so none is woken early and none is missed.
    fn room_for_waiter(&mut self, limits: &QueueLimits) -> bool {
        match self.waiting {
            Some((messages, bytes)) if self.has_room(limits, messages, bytes) => {
                self.waiting = None;
                true
            }
            _ => false,
        }
    }

    /// Admit `entry` (its `seq` already assigned): resident if its lane has nothing spilled and
    /// there is room in memory, else spilled (the store has it; memory forgets it).
    fn place(&mut self, entry: Entry, resident_max: usize) {
        self.messages += 1;
        self.bytes += entry.size();
        self.stats.enqueued += 1;
        let lane = lane_index(entry.lane);
        let spill = &mut self.spilled[lane];
        if spill.count > 0 || self.resident >= resident_max {
            if spill.count == 0 {
                spill.from = entry.seq;
            }
            spill.count += 1;
        } else {
            self.lanes[lane].push_back(entry);
            self.resident += 1;
        }
    }

    fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn forget(&mut self, entry: &Entry) {
        self.messages -= 1;
        self.bytes -= entry.size();
    }

    /// Put an entry back at its place in its lane (lanes are sorted by `seq`).
    fn put_back(&mut self, entry: Entry) {
        let lane = &mut self.lanes[lane_index(entry.lane)];
        let at = lane.partition_point(|e| e.seq < entry.seq);
        lane.insert(at, entry);
        self.resident += 1;
    }

    /// Take up to `max` live entries, highest lane first, dropping expired ones on the way (into
    /// `gone`). Stops early at a lane whose resident head is used up while it has spilled
    /// entries, and returns that lane: it must be refilled before anything of lower priority
    /// goes.
    /// With `durable_through`, entries of later store batches are not handed out: taking stops
    /// at the first one (in its lane, every later entry is later still) and reports
    /// [`Stop::Uncommitted`].
    fn take(
        &mut self,
        max: usize,
        now: Instant,
        durable_through: Option<u64>,
        out: &mut Vec<Entry>,
        gone: &mut Vec<Gone>,
    ) -> Option<Stop> {
        let mut taken = 0;
        let mut stop = None;
        'lanes: for lane in 0..LANES {
            while taken < max {
                let Some(entry) = self.lanes[lane].pop_front() else {
                    if self.spilled[lane].count > 0 {
                        stop = Some(Stop::Refill(lane));
                        break 'lanes;
                    }
                    continue 'lanes;
                };
                if durable_through.is_some_and(|d| entry.ticket > d) {
                    self.lanes[lane].push_front(entry);
                    stop = Some(Stop::Uncommitted);
                    break 'lanes;
                }
                self.resident -= 1;
                if entry.expires.is_some_and(|t| t <= now) {
                    self.forget(&entry);
                    self.stats.expired += 1;
                    gone.push((entry.lane, entry.seq, entry.stored));
                    continue;
                }
                self.in_flight.insert(entry.clone());
                out.push(entry);
                taken += 1;
            }
            break;
        }
        stop
    }
}

/// Why [`State::take`] stopped before `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// The lane's head is on disk.
    Refill(usize),
    /// The next entry is not durable yet.
    Uncommitted,
}

/// A queue's place in the durable store.
#[derive(Debug)]
pub(crate) struct Journal {
    pub store: Arc<Store>,
    pub id: QueueId,
}

impl Journal {
    fn key(&self, lane: u8, seq: u64) -> EntryKey {
        EntryKey {
            queue: self.id,
            lane,
            seq,
        }
    }

    /// Remove entries that left without delivery (expired) from the store.
    fn remove(&self, gone: Vec<Gone>) {
        if gone.is_empty() {
            return;
        }
        let removes = gone
            .into_iter()
            .map(|(lane, seq, stored)| (self.key(lane, seq), stored))
            .collect();
        // Fire and forget: the removal commits in order after the entries' insertion.
        self.store.submit_detached(Batch {
            removes,
            ..Batch::default()
        });
    }
}

/// Entries read back from the store at most per refill.
const REFILL: usize = 256;

/// A destination's queue.
#[derive(Debug)]
pub struct Queue {
    target: Target,
    limits: QueueLimits,
    resident_max: usize,
    journal: Option<Journal>,
    state: Mutex<State>,
    /// Held while moving entries between the store and memory (refills, sweeps of spilled
    /// entries), so that two of them never read the same entries.
    tail: Mutex<()>,
    readable: Notify,
    writable: Notify,
}

static NEXT_CONSUMER: AtomicU64 = AtomicU64::new(1);

impl Queue {
    pub(crate) fn new(
        target: Target,
        limits: QueueLimits,
        resident_max: usize,
        journal: Option<Journal>,
    ) -> Self {
        Self {
            target,
            limits,
            resident_max: if journal.is_some() {
                resident_max.max(1)
            } else {
                usize::MAX
            },
            journal,
            state: Mutex::new(State::default()),
            tail: Mutex::new(()),
            readable: Notify::new(),
            writable: Notify::new(),
        }
    }

    /// A queue recovered from the store: everything starts spilled and pages in as consumed.
    pub(crate) fn recovered(
        target: Target,
        limits: QueueLimits,
        resident_max: usize,
        journal: Journal,
        found: &verge_store::RecoveredQueue,
    ) -> Self {
        let queue = Self::new(target, limits, resident_max, Some(journal));
        {
            let mut state = queue.lock();
            state.next_seq = found.next_seq;
            for lane in &found.lanes {
                let spill = &mut state.spilled[lane_index(lane.lane)];
                spill.count = lane.count;
                spill.from = lane.first_seq;
                state.messages += lane.count;
                state.bytes += usize::try_from(lane.bytes).unwrap_or(usize::MAX);
            }
        }
        queue
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Queue state stays consistent across a panic in another holder: every mutation
        // completes before the guard drops.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_tail(&self) -> MutexGuard<'_, ()> {
        self.tail.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The destination this queue serves.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Messages queued plus in flight, per lane (in-flight and spilled entries count in their
    /// lane).
    pub fn lengths(&self) -> [usize; LANES] {
        let state = self.lock();
        let mut lengths = [0; LANES];
        for (i, lane) in state.lanes.iter().enumerate() {
            lengths[i] = lane.len() + state.spilled[i].count;
        }
        for entry in state.in_flight.values() {
            lengths[lane_index(entry.lane)] += 1;
        }
        lengths
    }

    /// Counters since start.
    pub fn stats(&self) -> QueueStats {
        let state = self.lock();
        QueueStats {
            queued: state.messages as u64,
            bytes: state.bytes as u64,
            ..state.stats
        }
    }

    /// Copies of the waiting entries held in memory (not in flight, not spilled), in delivery
    /// order.
    pub fn snapshot(&self) -> Vec<Entry> {
        let state = self.lock();
        state.lanes.iter().flatten().cloned().collect()
    }

    /// Drop every expired entry in memory, and the expired head of every spilled lane; returns
    /// how many.
    pub fn expire(&self, now: Instant) -> usize {
        let mut gone = Vec::new();
        let mut state = self.lock();
        let mut freed = 0;
        for lane in &mut state.lanes {
            lane.retain(|e| {
                let dead = e.expires.is_some_and(|t| t <= now);
                if dead {
                    freed += e.size();
                    gone.push((e.lane, e.seq, e.stored));
                }
                !dead
            });
        }
        let expired = gone.len();
        state.resident -= expired;
        state.messages -= expired;
        state.bytes -= freed;
        state.stats.expired += expired as u64;
        drop(state);
        if let Some(journal) = &self.journal {
            journal.remove(gone);
        }
        let expired = expired + self.expire_spilled();
        if expired > 0 {
            self.lock().waiting = None;
            self.writable.notify_waiters();
        }
        expired
    }

    /// Drop the expired entries at the head of each spilled lane (up to the first live one).
    fn expire_spilled(&self) -> usize {
        let Some(journal) = &self.journal else {
            return 0;
        };
        let _tail = self.lock_tail();
        let now_ms = unix_ms(SystemTime::now());
        let mut total = 0;
        for lane in 0..LANES {
            let spill = self.lock().spilled[lane];
            if spill.count == 0 {
                continue;
            }
            let from = journal.key(lane as u8, spill.from);
            let head = match journal.store.expired_head(from, spill.count, now_ms) {
                Ok(head) => head,
                Err(e) => {
                    tracing::error!(queue = %self.target, error = %e, "reading the store failed");
                    continue;
                }
            };
            let Some((last, _)) = head.last() else {
                continue;
            };
            let mut state = self.lock();
            let spill = &mut state.spilled[lane];
            spill.count -= head.len();
            spill.from = last.seq + 1;
            state.messages -= head.len();
            state.bytes -= head.iter().map(|(_, m)| m.size as usize).sum::<usize>();
            state.stats.expired += head.len() as u64;
            drop(state);
            total += head.len();
            journal.remove(
                head.into_iter()
                    .map(|(k, m)| (k.lane, k.seq, m.message))
                    .collect(),
            );
        }
        total
    }

    /// Page spilled entries of `lane` back into memory; returns how many came back (0 if none
    /// is committed yet).
    fn refill(&self, lane: usize) -> usize {
        let Some(journal) = &self.journal else {
            return 0;
        };
        let _tail = self.lock_tail();
        let spill = self.lock().spilled[lane];
        if spill.count == 0 {
            return 0;
        }
        let now = Instant::now();
        let now_ms = unix_ms(SystemTime::now());
        let from = journal.key(lane as u8, spill.from);
        let read = match journal
            .store
            .read_lane(from, spill.count.min(REFILL), now_ms)
        {
            Ok(read) => read,
            Err(e) => {
                tracing::error!(queue = %self.target, error = %e, "reading the store failed");
                return 0;
            }
        };
        let mut gone = Vec::new();
        let mut state = self.lock();
        let mut back = 0;
        for stored in read {
            let spill = &mut state.spilled[lane];
            spill.count -= 1;
            spill.from = stored.key.seq + 1;
            let meta = stored.meta;
            let Some(message) = stored.message else {
                state.messages -= 1;
                state.bytes -= meta.size as usize;
                state.stats.expired += 1;
                gone.push((stored.key.lane, stored.key.seq, meta.message));
                continue;
            };
            let entry = Entry {
                ticket: 0,
                seq: stored.key.seq,
                message: Arc::new(message),
                input: meta.input,
                lane: stored.key.lane,
                enqueued: SystemTime::UNIX_EPOCH + Duration::from_millis(meta.enqueued_ms),
                expires: (meta.expires_ms != 0)
                    .then(|| now + Duration::from_millis(meta.expires_ms.saturating_sub(now_ms))),
                attempts: 0,
                stored: meta.message,
            };
            state.lanes[lane].push_back(entry);
            state.resident += 1;
            back += 1;
        }
        let expired = !gone.is_empty();
        drop(state);
        journal.remove(gone);
        if expired {
            self.writable.notify_waiters();
        }
        back
    }

    /// Attach the (single) consumer, which gets entries only once they are durable: for
    /// consumers outside the process (MQTT clients, upstream), so that nothing they see can be
    /// forgotten by a crash. Fails if one is attached.
    pub fn consume_durable(self: &Arc<Self>) -> Option<Consumer> {
        let mut consumer = self.consume()?;
        consumer.durable_only = self.journal.is_some();
        Some(consumer)
    }

    /// Attach the (single) consumer. Fails if one is attached.
    pub fn consume(self: &Arc<Self>) -> Option<Consumer> {
        let id = NEXT_CONSUMER.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        if state.consumer.is_some() {
            return None;
        }
        state.consumer = Some(id);
        Some(Consumer {
            queue: Arc::clone(self),
            id,
            one: Vec::with_capacity(1),
            commits: self.journal.as_ref().map(|j| j.store.commits()),
            durable_only: false,
        })
    }

    /// Take `seq` out of flight as delivered; the store removal is the caller's.
    fn settle(&self, seq: u64) -> Option<Entry> {
        let mut settled = None;
        self.settle_all([seq], |entry| settled = Some(entry));
        settled
    }

    /// Take each of `seqs` out of flight as delivered, under one lock; `each` gets every entry
    /// that was in flight.
    fn settle_all(&self, seqs: impl IntoIterator<Item = u64>, mut each: impl FnMut(Entry)) {
        let now = SystemTime::now();
        let mut state = self.lock();
        let mut settled = Vec::new();
        for seq in seqs {
            let Some(entry) = state.in_flight.remove(seq) else {
                continue;
            };
            state.forget(&entry);
            state.stats.delivered += 1;
            let waited = now.duration_since(entry.enqueued).unwrap_or_default();
            state.stats.process_ns += u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
            settled.push(entry);
        }
        let wake = state.room_for_waiter(&self.limits);
        drop(state);
        if wake {
            self.writable.notify_waiters();
        }
        // The entries (their messages) are dropped outside the lock.
        settled.into_iter().for_each(&mut each);
    }

    /// Ack every one of `seqs` in flight; returns how many were.
    fn ack_all(&self, seqs: impl IntoIterator<Item = u64>) -> usize {
        let mut gone = Vec::new();
        self.settle_all(seqs, |e| gone.push((e.lane, e.seq, e.stored)));
        let n = gone.len();
        if let Some(journal) = &self.journal {
            journal.remove(gone);
        }
        n
    }

    fn ack(&self, seq: u64) -> bool {
        self.ack_all([seq]) == 1
    }

    fn nack(&self, seq: u64) -> bool {
        let mut state = self.lock();
        let Some(mut entry) = state.in_flight.remove(seq) else {
            return false;
        };
        entry.attempts += 1;
        state.stats.redelivered += 1;
        state.put_back(entry);
        drop(state);
        self.readable.notify_one();
        true
    }

    /// The store key and message of in-flight entry `seq`.
    fn stored_key(&self, seq: u64) -> Option<(EntryKey, u64)> {
        let journal = self.journal.as_ref()?;
        let state = self.lock();
        let entry = state.in_flight.get(seq)?;
        Some((journal.key(entry.lane, entry.seq), entry.stored))
    }
}

/// The consumer attached to a queue: takes entries and acks or nacks them.
///
/// Dropping it returns everything still in flight to the queue.
#[derive(Debug)]
pub struct Consumer {
    queue: Arc<Queue>,
    id: u64,
    /// [`Consumer::next`]'s buffer, kept so that taking one entry allocates nothing.
    one: Vec<Entry>,
    /// The store's commits, to wait on while spilled entries are not committed yet.
    commits: Option<tokio::sync::watch::Receiver<u64>>,
    /// Only durable entries are taken.
    durable_only: bool,
}

impl Consumer {
    /// The queue consumed.
    pub fn queue(&self) -> &Arc<Queue> {
        &self.queue
    }

    /// Take up to `max` entries without waiting; returns how many were taken.
    pub fn try_take(&mut self, max: usize, out: &mut Vec<Entry>) -> usize {
        self.take_now(max, out).0
    }

    /// Take what is there; also says whether spilled entries wait for a commit to be readable.
    fn take_now(&mut self, max: usize, out: &mut Vec<Entry>) -> (usize, bool) {
        let before = out.len();
        let mut gone = Vec::new();
        loop {
            let durable_through = match (&self.commits, self.durable_only) {
                (Some(commits), true) => Some(*commits.borrow()),
                _ => None,
            };
            let mut state = self.queue.lock();
            let stop = state.take(
                max - (out.len() - before),
                Instant::now(),
                durable_through,
                out,
                &mut gone,
            );
            if !gone.is_empty() {
                state.waiting = None;
            }
            drop(state);
            if !gone.is_empty() {
                if let Some(journal) = &self.queue.journal {
                    journal.remove(std::mem::take(&mut gone));
                }
                gone.clear();
                self.queue.writable.notify_waiters();
            }
            match stop {
                Some(Stop::Refill(lane)) if out.len() - before < max => {
                    if self.queue.refill(lane) == 0 {
                        return (out.len() - before, true);
                    }
                }
                Some(Stop::Uncommitted) => return (out.len() - before, true),
                _ => return (out.len() - before, false),
            }
        }
    }

    /// Wait for at least one entry and take up to `max`.
    ///
    /// With a store, a consumer also waits while the store's writer is far behind (a backlog
    /// being drained faster than its removals commit), so live traffic's commits stay quick.
    pub async fn take(&mut self, max: usize, out: &mut Vec<Entry>) -> usize {
        let queue = Arc::clone(&self.queue);
        if let Some(journal) = &queue.journal {
            journal
                .store
                .wait_backlog(4 * verge_store::BACKLOG_LIMIT)
                .await;
        }
        loop {
            let mut readable = pin!(queue.readable.notified());
            readable.as_mut().enable();
            if let Some(commits) = &mut self.commits {
                commits.mark_unchanged();
            }
            let (taken, uncommitted) = self.take_now(max, out);
            if taken > 0 {
                return taken;
            }
            match (&mut self.commits, uncommitted) {
                (Some(commits), true) => {
                    tokio::select! {
                        _ = readable => {}
                        _ = commits.changed() => {}
                    }
                }
                _ => readable.await,
            }
        }
    }

    /// Wait for the next entry.
    pub async fn next(&mut self) -> Entry {
        let mut one = std::mem::take(&mut self.one);
        loop {
            self.take(1, &mut one).await;
            if let Some(entry) = one.pop() {
                self.one = one;
                return entry;
            }
        }
    }

    /// The entry was handled: remove it. `false` if it was not in flight.
    pub fn ack(&self, seq: u64) -> bool {
        self.queue.ack(seq)
    }

    /// Ack every one of `seqs` at once (one lock, one store batch); returns how many were in
    /// flight.
    pub fn ack_all(&self, seqs: impl IntoIterator<Item = u64>) -> usize {
        self.queue.ack_all(seqs)
    }

    /// The entry was not handled: offer it again, at its place. `false` if it was not in flight.
    pub fn nack(&self, seq: u64) -> bool {
        self.queue.nack(seq)
    }

    /// A token that acks `seq` when the commit that carries it lands: in the same store batch as
    /// the messages of that commit.
    pub fn ack_token(&self, seq: u64) -> Ack {
        Ack {
            queue: Arc::clone(&self.queue),
            seq,
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let mut state = self.queue.lock();
        if state.consumer == Some(self.id) {
            state.consumer = None;
        }
        let returned = state.in_flight.len() as u64;
        let in_flight: Vec<Entry> = state.in_flight.drain().collect();
        for mut entry in in_flight {
            entry.attempts += 1;
            state.put_back(entry);
        }
        state.stats.redelivered += returned;
        drop(state);
        self.queue.readable.notify_one();
    }
}

/// Acknowledges one in-flight entry of a queue; carried by a commit so that taking the input
/// and enqueueing the outputs happen together.
#[derive(Debug)]
pub struct Ack {
    queue: Arc<Queue>,
    seq: u64,
}

impl Ack {
    /// The position of the entry it acks.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Its removal from the store, to commit with the outputs.
    pub(crate) fn stored_key(&self) -> Option<(EntryKey, u64)> {
        self.queue.stored_key(self.seq)
    }

    /// Settle it in memory (its store removal went with the commit).
    pub(crate) fn apply(self) -> bool {
        self.queue.settle(self.seq).is_some()
    }
}

/// Where admitted entries go besides memory: the store batch of their commit.
#[derive(Debug, Default)]
pub(crate) struct Durability {
    /// The batch, with the commit's messages (and its ack's removal) already in it.
    pub batch: Batch,
    /// Bytes its messages take in the store, reserved at admission.
    pub reserve: u64,
    /// The store, if the hub has one.
    pub store: Option<Arc<Store>>,
    /// Consumers that wait for durability wait for this batch (not for at-most-once messages).
    pub gated: bool,
}

impl Durability {
    /// Reserve the room, add each entry's insertion, submit. Called with every destination
    /// queue locked, so the insertions reach the writer before anyone can take (and ack) them.
    fn submit(
        &mut self,
        queues: &[&Queue],
        entries: &[&[Entry]],
    ) -> Result<Option<(u64, Durable)>, StoreError> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        store.reserve(self.reserve)?;
        let now = Instant::now();
        let now_ms = unix_ms(SystemTime::now());
        for (queue, entries) in queues.iter().zip(entries) {
            let Some(journal) = &queue.journal else {
                continue;
            };
            for e in entries.iter() {
                let meta = EntryMeta {
                    message: e.stored,
                    size: u32::try_from(e.size()).unwrap_or(u32::MAX),
                    enqueued_ms: unix_ms(e.enqueued),
                    expires_ms: e.expires.map_or(0, |t| {
                        let left = t.saturating_duration_since(now).as_millis();
                        (now_ms + u64::try_from(left).unwrap_or(u64::MAX / 2)).max(1)
                    }),
                    input: e.input.clone(),
                };
                self.batch.inserts.push((journal.key(e.lane, e.seq), meta));
            }
        }
        Ok(Some(store.submit_ticketed(std::mem::take(&mut self.batch))))
    }
}

/// Admit every batch into its queue, all or none, waiting while any queue is full; with a store,
/// also submit the commit's store batch. Returns what resolves when that batch is durable.
///
/// Dropping the returned future before it completes admits nothing.
pub(crate) async fn admit(
    mut batches: Vec<(Arc<Queue>, Vec<Entry>)>,
    mut durability: Durability,
) -> Result<Durable, StoreError> {
    if batches.is_empty() {
        return Ok(durability
            .submit(&[], &[])?
            .map_or_else(|| Durable::ready(Ok(())), |(_, durable)| durable));
    }
    if batches.len() == 1 {
        return admit_one(batches.pop(), durability).await;
    }
    // One lock order for every producer: by address.
    batches.sort_by_key(|(q, _)| Arc::as_ptr(q) as usize);
    let (queues, mut entries): (Vec<Arc<Queue>>, Vec<Vec<Entry>>) = batches.into_iter().unzip();
    let sizes: Vec<(usize, usize)> = entries
        .iter()
        .map(|batch| (batch.len(), batch.iter().map(Entry::size).sum()))
        .collect();
    loop {
        let mut room = None;
        {
            let mut guards = Vec::with_capacity(queues.len());
            for (queue, &(messages, bytes)) in queues.iter().zip(&sizes) {
                let mut guard = queue.lock();
                if !guard.has_room(&queue.limits, messages, bytes) {
                    // Register for "room made" while still holding the full queue's lock, so an
                    // ack between unlocking and waiting cannot be missed.
                    let mut notified = Box::pin(queue.writable.notified());
                    notified.as_mut().enable();
                    guard.wait_for(messages, bytes);
                    tracing::trace!(target = %queue.target, "queue full, waiting for room");
                    room = Some(notified);
                    break;
                }
                guards.push(guard);
            }
            if room.is_none() {
                for (guard, batch) in guards.iter_mut().zip(entries.iter_mut()) {
                    for entry in batch.iter_mut() {
                        entry.seq = guard.next_seq();
                    }
                }
                let refs: Vec<&Queue> = queues.iter().map(|q| &**q).collect();
                let slices: Vec<&[Entry]> = entries.iter().map(Vec::as_slice).collect();
                let durable = match durability.submit(&refs, &slices) {
                    Ok(durable) => durable,
                    Err(e) => {
                        // Nothing was placed: give the positions back.
                        for (guard, batch) in guards.iter_mut().zip(&entries) {
                            guard.next_seq -= batch.len() as u64;
                        }
                        return Err(e);
                    }
                };
                let ticket = match &durable {
                    Some((ticket, _)) if durability.gated => *ticket,
                    _ => 0,
                };
                for ((guard, batch), queue) in
                    guards.iter_mut().zip(entries.iter_mut()).zip(&queues)
                {
                    for mut entry in batch.drain(..) {
                        entry.ticket = ticket;
                        guard.place(entry, queue.resident_max);
                    }
                }
                drop(guards);
                for queue in &queues {
                    queue.readable.notify_one();
                }
                return Ok(durable.map_or_else(|| Durable::ready(Ok(())), |(_, d)| d));
            }
        }
        if let Some(room) = room {
            room.await;
        }
    }
}

/// [`admit`] for a commit to one queue (a module's output to the next module, an MQTT batch to
/// one route): the common case, without the per-queue vectors.
async fn admit_one(
    batch: Option<(Arc<Queue>, Vec<Entry>)>,
    mut durability: Durability,
) -> Result<Durable, StoreError> {
    let Some((queue, mut entries)) = batch else {
        return Ok(Durable::ready(Ok(())));
    };
    let messages = entries.len();
    let bytes: usize = entries.iter().map(Entry::size).sum();
    loop {
        let room = {
            let mut guard = queue.lock();
            if guard.has_room(&queue.limits, messages, bytes) {
                for entry in &mut entries {
                    entry.seq = guard.next_seq();
                }
                let durable = match durability.submit(&[&queue], &[&entries]) {
                    Ok(durable) => durable,
                    Err(e) => {
                        guard.next_seq -= messages as u64;
                        return Err(e);
                    }
                };
                let ticket = match &durable {
                    Some((ticket, _)) if durability.gated => *ticket,
                    _ => 0,
                };
                for mut entry in entries.drain(..) {
                    entry.ticket = ticket;
                    guard.place(entry, queue.resident_max);
                }
                drop(guard);
                queue.readable.notify_one();
                return Ok(durable.map_or_else(|| Durable::ready(Ok(())), |(_, d)| d));
            }
            // As in `admit`: registered while the lock is held, so no ack is missed.
            let mut notified = Box::pin(queue.writable.notified());
            notified.as_mut().enable();
            guard.wait_for(messages, bytes);
            notified
        };
        room.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry(lane: u8, body: &str) -> Entry {
        Entry {
            seq: 0,
            message: Arc::new(Message::new(body.as_bytes().to_vec())),
            input: Some("in".into()),
            lane,
            enqueued: SystemTime::now(),
            expires: None,
            attempts: 0,
            stored: 0,
            ticket: 0,
        }
    }

    fn queue(max_messages: usize) -> Arc<Queue> {
        Arc::new(Queue::new(
            Target::Module("m".into()),
            QueueLimits {
                max_messages,
                max_bytes: 1 << 20,
            },
            usize::MAX,
            None,
        ))
    }

    async fn admit(batches: Vec<(Arc<Queue>, Vec<Entry>)>) {
        super::admit(batches, Durability::default())
            .await
            .expect("admitted")
            .await
            .expect("durable");
    }

    fn bodies(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| String::from_utf8_lossy(e.message.body()).into_owned())
            .collect()
    }

    #[tokio::test]
    async fn higher_priority_first_then_arrival_order() {
        let q = queue(100);
        let batch = vec![
            entry(DEFAULT_LANE, "d1"),
            entry(5, "p5"),
            entry(0, "p0a"),
            entry(DEFAULT_LANE, "d2"),
            entry(0, "p0b"),
        ];
        admit(vec![(Arc::clone(&q), batch)]).await;
        let mut c = q.consume().unwrap();
        let mut out = Vec::new();
        c.try_take(10, &mut out);
        assert_eq!(bodies(&out), ["p0a", "p0b", "p5", "d1", "d2"]);
    }

    #[tokio::test]
    async fn nack_returns_to_its_place_and_drop_returns_in_flight() {
        let q = queue(100);
        admit(vec![(
            Arc::clone(&q),
            vec![entry(1, "a"), entry(1, "b"), entry(1, "c")],
        )])
        .await;
        let mut c = q.consume().unwrap();
        let a = c.next().await;
        let b = c.next().await;
        assert!(c.nack(a.seq));
        assert!(c.ack(b.seq));
        assert!(!c.ack(b.seq), "acked twice");
        let again = c.next().await;
        assert_eq!(again.seq, a.seq);
        assert_eq!(again.attempts, 1);
        assert!(q.consume().is_none(), "one consumer at a time");
        drop(c);
        let mut c2 = q.consume().unwrap();
        let mut out = Vec::new();
        c2.try_take(10, &mut out);
        assert_eq!(bodies(&out), ["a", "c"]);
    }

    #[tokio::test]
    async fn full_queue_holds_producers_until_an_ack() {
        let q = queue(2);
        admit(vec![(Arc::clone(&q), vec![entry(1, "a"), entry(1, "b")])]).await;
        let producer = tokio::spawn(admit(vec![(Arc::clone(&q), vec![entry(1, "c")])]));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!producer.is_finished(), "admitted past the limit");
        let mut c = q.consume().unwrap();
        let a = c.next().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!producer.is_finished(), "in-flight entries still count");
        c.ack(a.seq);
        producer.await.unwrap();
        assert_eq!(q.stats().queued, 2);
    }

    #[tokio::test]
    async fn a_waiting_producer_wakes_once_its_batch_fits() {
        let q = queue(4);
        let full: Vec<Entry> = (0..4).map(|_| entry(1, "a")).collect();
        admit(vec![(Arc::clone(&q), full)]).await;
        let two = vec![entry(1, "b"), entry(1, "c")];
        let producer = tokio::spawn(admit(vec![(Arc::clone(&q), two)]));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut c = q.consume().unwrap();
        let mut out = Vec::new();
        c.try_take(4, &mut out);
        assert!(c.ack(out[0].seq));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!producer.is_finished(), "admitted 2 with room for 1");
        assert!(c.ack(out[1].seq));
        producer.await.unwrap();
        assert_eq!(q.stats().queued, 4);
    }

    #[tokio::test]
    async fn acks_in_any_order() {
        let q = queue(100);
        let lane = |i: usize| if i.is_multiple_of(3) { 0 } else { 5 };
        let batch = (0..40).map(|i| entry(lane(i), &i.to_string())).collect();
        admit(vec![(Arc::clone(&q), batch)]).await;
        let mut c = q.consume().unwrap();
        let mut out = Vec::new();
        c.try_take(30, &mut out);
        // Every other one, from the back; then nack one and ack the rest from the front.
        for e in out.iter().rev().step_by(2) {
            assert!(c.ack(e.seq));
            assert!(!c.ack(e.seq), "acked twice");
        }
        let kept: Vec<u64> = out.iter().rev().skip(1).step_by(2).map(|e| e.seq).collect();
        assert!(c.nack(kept[3]));
        for &seq in kept.iter().rev() {
            assert_eq!(c.ack(seq), seq != kept[3]);
        }
        assert_eq!(q.stats().delivered, 29);
        assert_eq!(q.lengths().iter().sum::<usize>(), 11);
        let again = c.next().await;
        assert_eq!((again.seq, again.attempts), (kept[3], 1));
    }

    #[tokio::test]
    async fn multi_queue_admission_is_all_or_nothing() {
        let (full, free) = (queue(1), queue(10));
        admit(vec![(Arc::clone(&full), vec![entry(1, "x")])]).await;
        let both = tokio::spawn(admit(vec![
            (Arc::clone(&free), vec![entry(1, "y")]),
            (Arc::clone(&full), vec![entry(1, "y")]),
        ]));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(free.stats().queued, 0, "partially admitted");
        let mut c = full.consume().unwrap();
        let x = c.next().await;
        c.ack(x.seq);
        both.await.unwrap();
        assert_eq!(free.stats().queued, 1);
        assert_eq!(full.stats().queued, 1);
    }

    #[tokio::test]
    async fn an_empty_queue_admits_an_oversized_batch() {
        let q = queue(1);
        admit(vec![(
            Arc::clone(&q),
            vec![entry(1, "a"), entry(1, "b"), entry(1, "c")],
        )])
        .await;
        assert_eq!(q.stats().queued, 3);
    }

    #[tokio::test]
    async fn expired_entries_are_skipped_and_swept() {
        let q = queue(100);
        let past = Instant::now() - Duration::from_secs(1);
        let mut old = entry(1, "old");
        old.expires = Some(past);
        let mut old2 = entry(2, "old2");
        old2.expires = Some(past);
        admit(vec![(Arc::clone(&q), vec![old, entry(1, "live"), old2])]).await;
        assert_eq!(q.expire(Instant::now()), 2);
        let mut c = q.consume().unwrap();
        let mut out = Vec::new();
        c.try_take(10, &mut out);
        assert_eq!(bodies(&out), ["live"]);
        assert_eq!(q.stats().expired, 2);
    }
}
