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

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime};

use tokio::sync::Notify;
use verge_message::Message;

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
            max_messages: 10_000,
            max_bytes: 64 * 1024 * 1024,
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

#[derive(Debug, Default)]
struct State {
    lanes: [VecDeque<Entry>; LANES],
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

    fn push(&mut self, mut entry: Entry) {
        entry.seq = self.next_seq;
        self.next_seq += 1;
        self.messages += 1;
        self.bytes += entry.size();
        self.stats.enqueued += 1;
        let lane = usize::from(entry.lane).min(LANES - 1);
        self.lanes[lane].push_back(entry);
    }

    fn forget(&mut self, entry: &Entry) {
        self.messages -= 1;
        self.bytes -= entry.size();
    }

    /// Put an entry back at its place in its lane (lanes are sorted by `seq`).
    fn put_back(&mut self, entry: Entry) {
        let lane = &mut self.lanes[usize::from(entry.lane).min(LANES - 1)];
        let at = lane.partition_point(|e| e.seq < entry.seq);
        lane.insert(at, entry);
    }

    /// Take up to `max` live entries, highest lane first, dropping expired ones on the way.
    fn take(&mut self, max: usize, now: Instant, out: &mut Vec<Entry>) -> usize {
        let mut expired = 0;
        let mut taken = 0;
        'lanes: for lane in 0..LANES {
            while taken < max {
                let Some(entry) = self.lanes[lane].pop_front() else {
                    continue 'lanes;
                };
                if entry.expires.is_some_and(|t| t <= now) {
                    self.forget(&entry);
                    expired += 1;
                    continue;
                }
                self.in_flight.insert(entry.clone());
                out.push(entry);
                taken += 1;
            }
            break;
        }
        self.stats.expired += expired;
        expired as usize
    }
}

/// A destination's queue.
#[derive(Debug)]
pub struct Queue {
    target: Target,
    limits: QueueLimits,
    state: Mutex<State>,
    readable: Notify,
    writable: Notify,
}

static NEXT_CONSUMER: AtomicU64 = AtomicU64::new(1);

impl Queue {
    pub(crate) fn new(target: Target, limits: QueueLimits) -> Self {
        Self {
            target,
            limits,
            state: Mutex::new(State::default()),
            readable: Notify::new(),
            writable: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Queue state stays consistent across a panic in another holder: every mutation
        // completes before the guard drops.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The destination this queue serves.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Messages queued plus in flight, per lane (in-flight entries count in their lane).
    pub fn lengths(&self) -> [usize; LANES] {
        let state = self.lock();
        let mut lengths = [0; LANES];
        for (i, lane) in state.lanes.iter().enumerate() {
            lengths[i] = lane.len();
        }
        for entry in state.in_flight.values() {
            lengths[usize::from(entry.lane).min(LANES - 1)] += 1;
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

    /// Copies of the waiting entries (not in flight), in delivery order.
    pub fn snapshot(&self) -> Vec<Entry> {
        let state = self.lock();
        state.lanes.iter().flatten().cloned().collect()
    }

    /// Drop every expired entry; returns how many.
    pub fn expire(&self, now: Instant) -> usize {
        let mut state = self.lock();
        let mut expired = 0;
        let mut freed = Vec::new();
        for lane in &mut state.lanes {
            lane.retain(|e| {
                let dead = e.expires.is_some_and(|t| t <= now);
                if dead {
                    freed.push(e.size());
                    expired += 1;
                }
                !dead
            });
        }
        state.messages -= expired;
        state.bytes -= freed.iter().sum::<usize>();
        state.stats.expired += expired as u64;
        if expired > 0 {
            state.waiting = None;
        }
        drop(state);
        if expired > 0 {
            self.writable.notify_waiters();
        }
        expired
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
        })
    }

    fn ack(&self, seq: u64) -> bool {
        let mut state = self.lock();
        let Some(entry) = state.in_flight.remove(seq) else {
            return false;
        };
        state.forget(&entry);
        state.stats.delivered += 1;
        let wake = state.room_for_waiter(&self.limits);
        drop(state);
        // The entry (its message) is dropped outside the lock.
        drop(entry);
        if wake {
            self.writable.notify_waiters();
        }
        true
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
}

impl Consumer {
    /// The queue consumed.
    pub fn queue(&self) -> &Arc<Queue> {
        &self.queue
    }

    /// Take up to `max` entries without waiting; returns how many were taken.
    pub fn try_take(&mut self, max: usize, out: &mut Vec<Entry>) -> usize {
        let mut state = self.queue.lock();
        let before = out.len();
        let expired = state.take(max, Instant::now(), out);
        if expired > 0 {
            state.waiting = None;
        }
        drop(state);
        if expired > 0 {
            self.queue.writable.notify_waiters();
        }
        out.len() - before
    }

    /// Wait for at least one entry and take up to `max`.
    pub async fn take(&mut self, max: usize, out: &mut Vec<Entry>) -> usize {
        let queue = Arc::clone(&self.queue);
        loop {
            let mut readable = pin!(queue.readable.notified());
            readable.as_mut().enable();
            let taken = self.try_take(max, out);
            if taken > 0 {
                return taken;
            }
            readable.await;
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

    /// The entry was not handled: offer it again, at its place. `false` if it was not in flight.
    pub fn nack(&self, seq: u64) -> bool {
        self.queue.nack(seq)
    }

    /// A token that acks `seq` when the commit that carries it lands.
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
    pub(crate) fn apply(self) -> bool {
        self.queue.ack(self.seq)
    }
}

/// Admit every batch into its queue, all or none, waiting while any queue is full.
///
/// Dropping the returned future before it completes admits nothing.
pub(crate) async fn admit(mut batches: Vec<(Arc<Queue>, Vec<Entry>)>) {
    if batches.len() > 1 {
        return admit_all(batches).await;
    }
    // One destination (the common case): no lock ordering, no bookkeeping.
    let Some((queue, mut entries)) = batches.pop() else {
        return;
    };
    let (messages, bytes) = (entries.len(), entries.iter().map(Entry::size).sum());
    loop {
        let room = {
            let mut guard = queue.lock();
            if guard.has_room(&queue.limits, messages, bytes) {
                for entry in entries.drain(..) {
                    guard.push(entry);
                }
                drop(guard);
                queue.readable.notify_one();
                return;
            }
            // Register for "room made" while still holding the lock, so an ack between
            // unlocking and waiting cannot be missed.
            let mut room = Box::pin(queue.writable.notified());
            room.as_mut().enable();
            guard.wait_for(messages, bytes);
            tracing::trace!(target = %queue.target, "queue full, waiting for room");
            room
        };
        room.await;
    }
}

/// [`admit`] into several queues.
async fn admit_all(mut batches: Vec<(Arc<Queue>, Vec<Entry>)>) {
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
                    for entry in batch.drain(..) {
                        guard.push(entry);
                    }
                }
                drop(guards);
                for queue in &queues {
                    queue.readable.notify_one();
                }
                return;
            }
        }
        if let Some(room) = room {
            room.await;
        }
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
        }
    }

    fn queue(max_messages: usize) -> Arc<Queue> {
        Arc::new(Queue::new(
            Target::Module("m".into()),
            QueueLimits {
                max_messages,
                max_bytes: 1 << 20,
            },
        ))
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
