//! Counters the hub keeps, named after IoT Edge's metrics where they exist
//! (`edgehub_messages_received_total`, `edgehub_messages_dropped_total{reason}`, ...).

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages admitted.
    pub enqueued: u64,
    /// Messages acked by a consumer (`edgehub_messages_sent_total`).
    pub delivered: u64,
    /// Messages dropped because their TTL passed (`reason="ttl_expiry"`).
    pub expired: u64,
    /// Messages handed out again after a nack or a consumer leaving.
    pub redelivered: u64,
    /// Messages queued or in flight now (`edgehub_queue_length`).
    pub queued: u64,
    /// Bytes queued or in flight now.
    pub bytes: u64,
    /// Total time delivered messages spent from admission to ack, ns
    /// (`edgehub_message_process_duration_seconds_sum`).
    pub process_ns: u64,
}

/// Hub-wide counters.
#[derive(Debug, Default)]
pub(crate) struct HubCounters {
    pub received: AtomicU64,
    pub routed: AtomicU64,
    pub no_route: AtomicU64,
}

/// A snapshot of the hub-wide counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Messages that entered the hub (`edgehub_messages_received_total`).
    pub received: u64,
    /// Deliveries enqueued (one message routed to three queues counts three).
    pub routed: u64,
    /// Messages no route selected (`edgehub_messages_dropped_total{reason="no_route"}`).
    pub dropped_no_route: u64,
}

impl HubCounters {
    pub fn snapshot(&self) -> HubStats {
        HubStats {
            received: self.received.load(Ordering::Relaxed),
            routed: self.routed.load(Ordering::Relaxed),
            dropped_no_route: self.no_route.load(Ordering::Relaxed),
        }
    }
}
