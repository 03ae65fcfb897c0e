//! The listener: accepts TCP (and TLS) connections and runs a session for each.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};
use verge_hub::Hub;
use verge_message::Identity;
use verge_twin::TwinStore;

use crate::auth::Authenticator;
use crate::session;
use crate::stats::{BrokerStats, Counters};

/// Limits and timeouts of the MQTT front.
#[derive(Clone, Debug)]
pub struct BrokerOptions {
    /// Largest packet a client may send (IoT Hub: 256 KiB messages, plus topic and header).
    pub max_packet_bytes: usize,
    /// How long a new connection has to send CONNECT.
    pub connect_timeout: Duration,
    /// QoS 1 deliveries to one client awaiting PUBACK.
    pub max_in_flight: usize,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        Self {
            max_packet_bytes: 256 * 1024 + 64 * 1024,
            connect_timeout: Duration::from_secs(60),
            max_in_flight: 512,
        }
    }
}

/// One client's place: a new connection kicks the old one and waits for it to let go.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    pub kick: Notify,
    pub held: Arc<tokio::sync::Mutex<()>>,
}

/// The MQTT front of a hub.
#[derive(Debug)]
pub struct Broker {
    pub(crate) hub: Arc<Hub>,
    pub(crate) twins: Arc<TwinStore>,
    pub(crate) auth: Arc<dyn Authenticator>,
    pub(crate) options: BrokerOptions,
    pub(crate) counters: Counters,
    pub(crate) behind: crate::downstream::Behind,
    slots: Mutex<HashMap<Identity, Arc<Slot>>>,
}

impl Broker {
    /// A front for `hub`, answering twin requests from `twins` and checking clients with `auth`.
    pub fn new(
        hub: Arc<Hub>,
        twins: Arc<TwinStore>,
        auth: Arc<dyn Authenticator>,
        options: BrokerOptions,
    ) -> Arc<Self> {
        Arc::new(Self {
            hub,
            twins,
            auth,
            options,
            counters: Counters::default(),
            behind: crate::downstream::Behind::default(),
            slots: Mutex::new(HashMap::new()),
        })
    }

    /// The clients child edge devices act for here, with the child each is behind.
    pub fn behind(&self) -> &crate::downstream::Behind {
        &self.behind
    }

    /// The counters.
    pub fn stats(&self) -> BrokerStats {
        self.counters.snapshot()
    }

    pub(crate) fn slot(&self, identity: &Identity) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(slots.entry(identity.clone()).or_default())
    }

    /// Accept plain MQTT connections until the listener fails. Plain MQTT carries SAS tokens in
    /// clear text: the daemon binds it to loopback only.
    pub async fn serve_plain(self: Arc<Self>, listener: TcpListener) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    prepare(&stream);
                    let broker = Arc::clone(&self);
                    tokio::spawn(session::run(broker, stream, Vec::new(), peer.to_string()));
                }
                Err(e) => accept_failed(e).await,
            }
        }
    }

    /// Accept MQTT over TLS until the listener fails.
    pub async fn serve_tls(self: Arc<Self>, listener: TcpListener, acceptor: TlsAcceptor) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    prepare(&stream);
                    let broker = Arc::clone(&self);
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move { broker.handshake(acceptor, stream, peer).await });
                }
                Err(e) => accept_failed(e).await,
            }
        }
    }

    async fn handshake(
        self: Arc<Self>,
        acceptor: TlsAcceptor,
        stream: TcpStream,
        peer: SocketAddr,
    ) {
        let handshake = tokio::time::timeout(self.options.connect_timeout, acceptor.accept(stream));
        let tls = match handshake.await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                debug!(%peer, "TLS handshake failed: {e}");
                crate::stats::bump(&self.counters.connections_refused);
                return;
            }
            Err(_) => {
                debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
        let certificates = tls
            .get_ref()
            .1
            .peer_certificates()
            .map(|chain| chain.iter().map(|c| c.as_ref().to_vec()).collect())
            .unwrap_or_default();
        session::run(self, tls, certificates, peer.to_string()).await;
    }
}

/// Small packets leave at once: QoS 1 round trips and latency depend on it (rumqttd's gap).
fn prepare(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        debug!("TCP_NODELAY: {e}");
    }
}

/// Out of file descriptors and the like: log and back off instead of spinning.
async fn accept_failed(e: std::io::Error) {
    warn!("accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The twin an identity reads and reports: a module of the edge device by its module id (as
/// the agent and wasm modules name it), any device as `devices/{id}` (ids cannot contain `/`).
pub fn twin_id(identity: &Identity, edge_device: &str) -> String {
    match identity.module_id() {
        Some(module) if identity.device_id() == edge_device => module.to_owned(),
        Some(module) => format!("devices/{}/modules/{module}", identity.device_id()),
        None => format!("devices/{}", identity.device_id()),
    }
}
