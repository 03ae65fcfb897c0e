//! The hub: Verge's one routing fabric.
//!
//! Everything that sends a message (a wasm module, later an MQTT client or a leaf device) hands
//! the hub a [`Commit`]: messages stamped with their sender ([`Hub::stamp`]) and, when they were
//! produced while handling an input, the [`Ack`] of that input. The hub routes each message with
//! the installed routes (IoT Hub's route language, [`verge_route`]) into per-destination
//! [`Queue`]s, all or nothing, then acks the input: taking an input and producing its outputs are
//! one step. A full destination queue makes the commit wait; that is the hub's backpressure.
//!
//! Everything that receives (a wasm module's host, later an MQTT session, the upstream link)
//! attaches a [`Consumer`] to its destination's queue and acks what it handled.
//!
//! Messages are `Arc<Message>`: a message routed to several destinations is one allocation and
//! one body buffer, shared by every queue and receiver.
//!
//! With a durable store ([`Hub::with_store`], [`verge_store`]) a commit's messages, its entries
//! in every destination queue and the removal of its input are one store batch: [`Hub::submit`]
//! queues them (in memory at once, so in-process receivers get them without waiting) and returns
//! a [`Durable`] that resolves when the batch is on disk; [`Hub::commit`] waits for it. Whoever
//! acknowledges a message to its sender (an MQTT PUBACK) waits for it first; a wasm module's next
//! input need not, because batches commit in order: a crash loses a suffix of commits, each
//! with its inputs and outputs together, so an input is either processed with its outputs stored
//! or offered again, never both.
//!
//! The hub knows nothing of the agent or of how modules run.

pub mod config;
pub mod methods;
mod queue;
mod routing;
mod stats;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::broadcast;
pub use verge_message::Identity;
use verge_message::{Message, Text, system};

pub use methods::{MethodCall, MethodError, MethodListener, MethodResponse, Methods};
pub use queue::{Ack, Consumer, DEFAULT_LANE, Entry, LANES, Queue, QueueLimits};
pub use routing::{RouteConfigError, RouteSet, RouteSpec};
pub use stats::{HubStats, QueueStats};
pub use verge_store::{Durable, Store, StoreError};

use queue::{Durability, Journal};
use routing::{Destination, Table};
use stats::HubCounters;

/// Messages a slow `verge monitor` may fall behind before it skips some.
const TAP_BACKLOG: usize = 1024;

/// A destination with a queue.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// `$upstream`: the parent or cloud.
    Upstream,
    /// A module's inputs (`BrokeredEndpoint("/modules/{id}/inputs/…")`).
    Module(Arc<str>),
    /// Cloud-to-device messages for a device (no route leads here: the messages are addressed,
    /// [`Commit::to`]).
    Device(Arc<str>),
}

impl Target {
    /// Its name in the store.
    fn store_name(&self) -> String {
        self.to_string()
    }

    /// The target a store name names.
    fn from_store_name(name: &str) -> Option<Self> {
        match name {
            "$upstream" => Some(Self::Upstream),
            _ => {
                if let Some(m) = name.strip_prefix("modules/").filter(|m| !m.is_empty()) {
                    Some(Self::Module(m.into()))
                } else {
                    name.strip_prefix("devices/")
                        .filter(|d| !d.is_empty())
                        .map(|d| Self::Device(d.into()))
                }
            }
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Upstream => f.write_str("$upstream"),
            Self::Module(m) => write!(f, "modules/{m}"),
            Self::Device(d) => write!(f, "devices/{d}"),
        }
    }
}

/// Messages to route, and optionally the input whose handling produced them.
#[derive(Debug, Default)]
pub struct Commit {
    /// Stamped messages ([`Hub::stamp`]).
    pub messages: Vec<Arc<Message>>,
    /// Acked once the messages are queued.
    pub ack: Option<Ack>,
    /// The sender wants no acknowledgement (MQTT QoS 0): the messages go to every consumer at
    /// once, including those that otherwise wait for durability, and are written to the store
    /// only if still queued at the next commit. QoS 0 promises at most once; the hub keeps them
    /// for store-and-forward but makes no durability promise for them.
    pub at_most_once: bool,
    /// Deliver every message to this target instead of routing it (cloud-to-device messages,
    /// which IoT Hub addresses to one device).
    pub to: Option<Target>,
}

/// What a commit did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitReport {
    /// Deliveries queued.
    pub routed: usize,
    /// Messages no route selected.
    pub dropped_no_route: usize,
}

/// A message that entered the upstream queue, as `verge monitor` shows it.
#[derive(Clone, Debug)]
pub struct Tapped {
    /// The message.
    pub message: Arc<Message>,
    /// When the hub accepted it.
    pub enqueued: SystemTime,
    /// Its priority lane.
    pub lane: u8,
}

/// How the hub is set up.
#[derive(Clone, Debug)]
pub struct HubOptions {
    /// The edge device's id (`connectionDeviceId` of its modules' messages).
    pub device_id: String,
    /// Limits of each destination queue.
    pub queue_limits: QueueLimits,
    /// With a store: entries per queue kept in memory; the rest of a backlog stays on disk.
    pub resident_per_queue: usize,
}

impl HubOptions {
    /// Options with default limits.
    pub fn new(device_id: impl Into<String>) -> Self {
        Self {
            device_id: device_id.into(),
            queue_limits: QueueLimits::default(),
            resident_per_queue: 8192,
        }
    }
}

/// What [`Hub::submit`] did: the routing report, and the durability of the commit.
#[derive(Debug)]
pub struct Submitted {
    /// Deliveries queued and messages dropped.
    pub report: CommitReport,
    /// Resolves when the commit is on disk (at once without a store).
    pub durable: Durable,
}

/// A consumer is already attached to the queue.
#[derive(Debug, thiserror::Error)]
#[error("{0} already has a consumer")]
pub struct AlreadyConsumed(pub Target);

/// The hub.
#[derive(Debug)]
pub struct Hub {
    device_id: Arc<str>,
    limits: QueueLimits,
    resident: usize,
    store: Option<Arc<Store>>,
    table: ArcSwap<Table>,
    queues: Mutex<HashMap<Target, Arc<Queue>>>,
    taps: broadcast::Sender<Tapped>,
    counters: HubCounters,
    methods: Methods,
}

impl Hub {
    /// A hub with no routes, its queues in memory.
    pub fn new(options: HubOptions) -> Arc<Self> {
        Self::build(options, None)
    }

    /// A hub whose queues are kept in `store`, starting with the queues found there.
    pub fn with_store(
        options: HubOptions,
        store: Arc<Store>,
        recovered: &[verge_store::RecoveredQueue],
    ) -> Arc<Self> {
        let hub = Self::build(options, Some(store));
        let mut queues = hub.queues();
        for found in recovered {
            let Some(target) = Target::from_store_name(&found.name) else {
                tracing::warn!(
                    queue = found.name,
                    "stored queue of unknown kind left alone"
                );
                continue;
            };
            let journal = hub.journal(&target);
            let Some(journal) = journal else { continue };
            let queue = Queue::recovered(target.clone(), hub.limits, hub.resident, journal, found);
            let n: usize = found.lanes.iter().map(|l| l.count).sum();
            if n > 0 {
                tracing::info!(queue = %target, messages = n, "queue resumed from the store");
            }
            queues.insert(target, Arc::new(queue));
        }
        drop(queues);
        hub
    }

    fn build(options: HubOptions, store: Option<Arc<Store>>) -> Arc<Self> {
        Arc::new(Self {
            device_id: options.device_id.into(),
            limits: options.queue_limits,
            resident: options.resident_per_queue,
            store,
            table: ArcSwap::from_pointee(Table::default()),
            queues: Mutex::new(HashMap::new()),
            taps: broadcast::channel(TAP_BACKLOG).0,
            counters: HubCounters::default(),
            methods: Methods::default(),
        })
    }

    /// The edge device's id.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    fn queues(&self) -> MutexGuard<'_, HashMap<Target, Arc<Queue>>> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn journal(&self, target: &Target) -> Option<Journal> {
        let store = self.store.as_ref()?;
        Some(Journal {
            id: store.queue_id(&target.store_name()),
            store: Arc::clone(store),
        })
    }

    /// The durable store, if the hub has one.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// The queue of `target`, created empty if needed.
    pub fn queue(&self, target: &Target) -> Arc<Queue> {
        let mut queues = self.queues();
        Arc::clone(queues.entry(target.clone()).or_insert_with(|| {
            let journal = self.journal(target);
            Arc::new(Queue::new(
                target.clone(),
                self.limits,
                self.resident,
                journal,
            ))
        }))
    }

    /// Replace the routes. Messages already queued stay queued.
    pub fn install(&self, routes: RouteSet) {
        let table = Table::install(routes, |target| self.queue(target));
        self.table.store(Arc::new(table));
    }

    /// The installed routes: name and text.
    pub fn routes(&self) -> Vec<(String, String)> {
        self.table.load().describe()
    }

    /// Attach the consumer of `target`'s queue.
    pub fn consume(&self, target: &Target) -> Result<Consumer, AlreadyConsumed> {
        self.queue(target)
            .consume()
            .ok_or_else(|| AlreadyConsumed(target.clone()))
    }

    /// Attach a consumer outside the process to `target`'s queue: it gets messages only once
    /// they are durable ([`Queue::consume_durable`]).
    pub fn consume_durable(&self, target: &Target) -> Result<Consumer, AlreadyConsumed> {
        self.queue(target)
            .consume_durable()
            .ok_or_else(|| AlreadyConsumed(target.clone()))
    }

    /// Mark `message` as sent by `sender` on `output`: sets `connectionDeviceId`,
    /// `connectionModuleId` and `outputName`, overriding whatever the sender put there. Copies no
    /// text: the names are static and the ids shared.
    pub fn stamp(&self, sender: &Identity, output: Option<Text>, message: &mut Message) {
        let sys = message.system_mut();
        let name = Text::from_static;
        sys.insert_text(name(system::CONNECTION_DEVICE_ID), sender.device_text());
        match sender.module_text() {
            Some(module) => sys.insert_text(name(system::CONNECTION_MODULE_ID), module),
            None => {
                sys.remove(system::CONNECTION_MODULE_ID);
            }
        }
        match output {
            Some(output) => sys.insert_text(name(system::OUTPUT_NAME), output),
            None => {
                sys.remove(system::OUTPUT_NAME);
            }
        }
        for hub_only in [system::INPUT_NAME, system::ENQUEUED_TIME] {
            sys.remove(hub_only);
        }
    }

    /// Route and queue the messages of `commit`, all or nothing, apply its ack, and wait until
    /// all of it is durable.
    pub async fn commit(&self, commit: Commit) -> Result<CommitReport, StoreError> {
        let submitted = self.submit(commit).await?;
        submitted.durable.await?;
        Ok(submitted.report)
    }

    /// Route and queue the messages of `commit`, all or nothing, then apply its ack; the
    /// returned [`Durable`] resolves when the commit is on disk.
    ///
    /// Waits while a destination queue is full, or while the store's writer is far behind.
    /// Dropping the future before it completes
    /// queues nothing and acks nothing. A store that is full refuses the whole commit
    /// ([`StoreError::Full`]): nothing is queued and the input is not acked.
    pub async fn submit(&self, commit: Commit) -> Result<Submitted, StoreError> {
        // Nobody outruns the disk: a producer waits while the store's writer is far behind.
        if let Some(store) = &self.store {
            store.wait_backlog(verge_store::BACKLOG_LIMIT).await;
        }
        let now = Instant::now();
        let enqueued = SystemTime::now();
        let table = self.table.load();
        let mut report = CommitReport::default();
        let mut destinations = Vec::new();
        let mut batches: Vec<(Arc<Queue>, Vec<Entry>)> = Vec::new();
        let tapping = self.taps.receiver_count() > 0;
        let mut taps = Vec::new();
        let mut durability = Durability {
            store: self.store.clone(),
            gated: !commit.at_most_once,
            ..Durability::default()
        };
        for (index, message) in commit.messages.iter().enumerate() {
            destinations.clear();
            match &commit.to {
                Some(target) => destinations.push(Destination {
                    queue: self.queue(target),
                    input: None,
                    lane: DEFAULT_LANE,
                    expires: None,
                }),
                None => table.destinations(message, now, &mut destinations),
            }
            if destinations.is_empty() {
                report.dropped_no_route += 1;
                continue;
            }
            let stored = match &self.store {
                Some(store) => {
                    let id = store.next_message_id();
                    durability.reserve += verge_store::codec::encoded_len(message) as u64;
                    durability.batch.messages.push(verge_store::NewMessage {
                        id,
                        refs: u32::try_from(destinations.len()).unwrap_or(u32::MAX),
                        message: Arc::clone(message),
                    });
                    id
                }
                None => 0,
            };
            for Destination {
                queue,
                input,
                lane,
                expires,
            } in destinations.drain(..)
            {
                if tapping && *queue.target() == Target::Upstream {
                    taps.push(Tapped {
                        message: Arc::clone(message),
                        enqueued,
                        lane,
                    });
                }
                let entry = Entry {
                    seq: 0,
                    message: Arc::clone(message),
                    input,
                    lane,
                    enqueued,
                    expires,
                    attempts: 0,
                    stored,
                    ticket: 0,
                };
                match batches.iter_mut().find(|(q, _)| Arc::ptr_eq(q, &queue)) {
                    Some((_, entries)) => entries.push(entry),
                    None => {
                        // The first destination is sized for the rest of the commit, so a big
                        // commit to one queue (the common case) never regrows its batch.
                        let room = if batches.is_empty() {
                            commit.messages.len() - index
                        } else {
                            1
                        };
                        let mut entries = Vec::with_capacity(room);
                        entries.push(entry);
                        batches.push((queue, entries));
                    }
                }
                report.routed += 1;
            }
        }
        drop(table);
        if let Some(removal) = commit.ack.as_ref().and_then(Ack::stored_key) {
            durability.batch.removes.push(removal);
        }
        let durable = queue::admit(batches, durability).await?;
        if let Some(ack) = commit.ack {
            ack.apply();
        }
        let counters = &self.counters;
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        counters
            .received
            .fetch_add(commit.messages.len() as u64, relaxed);
        counters.routed.fetch_add(report.routed as u64, relaxed);
        counters
            .no_route
            .fetch_add(report.dropped_no_route as u64, relaxed);
        for tap in taps {
            // A monitor that went away is not an error.
            let _ = self.taps.send(tap);
        }
        Ok(Submitted { report, durable })
    }

    /// Follow messages as they enter the upstream queue.
    pub fn monitor(&self) -> broadcast::Receiver<Tapped> {
        self.taps.subscribe()
    }

    /// Messages waiting in the upstream queue, oldest first within each priority.
    pub fn queued_upstream(&self) -> Vec<Tapped> {
        self.queue(&Target::Upstream)
            .snapshot()
            .into_iter()
            .map(|e| Tapped {
                message: e.message,
                enqueued: e.enqueued,
                lane: e.lane,
            })
            .collect()
    }

    /// Hub-wide counters.
    pub fn stats(&self) -> HubStats {
        self.counters.snapshot()
    }

    /// Every queue's counters and per-lane lengths.
    pub fn queue_stats(&self) -> Vec<(Target, QueueStats, [usize; LANES])> {
        let queues: Vec<Arc<Queue>> = self.queues().values().cloned().collect();
        queues
            .iter()
            .map(|q| (q.target().clone(), q.stats(), q.lengths()))
            .collect()
    }

    /// Drop expired messages from every queue; returns how many.
    pub fn expire(&self) -> usize {
        let queues: Vec<Arc<Queue>> = self.queues().values().cloned().collect();
        let now = Instant::now();
        queues.iter().map(|q| q.expire(now)).sum()
    }

    /// Direct methods.
    pub fn methods(&self) -> &Methods {
        &self.methods
    }
}
