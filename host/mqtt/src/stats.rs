//! Counters of the MQTT front: connections, refusals, messages.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Clients whose CONNECT was accepted.
    pub connections_accepted: u64,
    /// CONNECTs refused: bad credentials, unknown identity, wrong client id.
    pub connections_refused: u64,
    /// Clients currently connected.
    pub connected: u64,
    /// PUBLISHes refused: a topic the client may not publish on (the client is disconnected).
    pub publishes_refused: u64,
    /// SUBSCRIBE filters refused (answered with the failure return code).
    pub subscriptions_refused: u64,
    /// Connections closed for a malformed or unexpected packet.
    pub malformed: u64,
    /// Messages clients sent into the hub.
    pub messages_in: u64,
    /// Messages delivered to clients.
    pub messages_out: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connections_accepted: AtomicU64,
    pub connections_refused: AtomicU64,
    pub connected: AtomicU64,
    pub publishes_refused: AtomicU64,
    pub subscriptions_refused: AtomicU64,
    pub malformed: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
}

/// Add one.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Add `n`.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    pub fn snapshot(&self) -> BrokerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BrokerStats {
            connections_accepted: get(&self.connections_accepted),
            connections_refused: get(&self.connections_refused),
            connected: get(&self.connected),
            publishes_refused: get(&self.publishes_refused),
            subscriptions_refused: get(&self.subscriptions_refused),
            malformed: get(&self.malformed),
            messages_in: get(&self.messages_in),
            messages_out: get(&self.messages_out),
        }
    }
}
