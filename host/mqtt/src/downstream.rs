//! The parent's side of a child edge device's connection: the clients behind the child.
//!
//! A child edge device (a Verge whose `[upstream]` is this one) keeps one connection here and
//! acts on it for every client behind it: its own modules, its leaf devices, its own child edge
//! devices and theirs. Requests name the client in the topic ([`crate::dialect::scoped`]):
//! - twin GET and reported patches are answered from this device's twin store, where the
//!   client's twin lives (`devices/{d}` or `devices/{d}/modules/{m}`);
//! - a subscription to a client's desired patches watches that twin; to its methods, makes this
//!   connection the client's method listener here (so `verge invoke --device` reaches it); to a
//!   device's cloud-to-device messages, consumes that device's durable queue here, each message
//!   removed when the child acknowledges it (stored on its side).
//!
//! Which clients a child may act for: itself and its modules, and any device not registered
//! here and not this device (a parent trusts its child edge devices to authenticate their own
//! downstream clients, as IoT Edge's authentication chain does). The devices a child acted for
//! are remembered ([`Behind`]) so that this device can deploy to them and list them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::BytesMut;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};
use verge_hub::{Entry, MethodCall, MethodResponse, Target};
use verge_message::Identity;

use crate::codec::{self, Delivery};
use crate::dialect::scoped::{self, ScopedRequest, ScopedSubscription};
use crate::dialect::topic::TopicIdentity;
use crate::{Broker, twin_id};

/// Cloud-to-device messages to one device in flight to the child at a time.
const C2D_WINDOW: usize = 64;

/// The clients known to be behind each child edge device: client (`d` or `d/m`) → child.
#[derive(Debug, Default)]
pub struct Behind(Mutex<HashMap<Identity, String>>);

impl Behind {
    fn note(&self, client: &Identity, child: &str) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if map.get(client).map(String::as_str) != Some(child) {
            map.insert(client.clone(), child.to_owned());
        }
    }

    /// Every client seen behind a child, with that child.
    pub fn list(&self) -> Vec<(Identity, String)> {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut list: Vec<_> = map.iter().map(|(c, d)| (c.clone(), d.clone())).collect();
        list.sort_by_key(|(c, _)| c.to_string());
        list
    }

    /// The child edge device `device` was last seen behind, if any.
    pub fn child_of(&self, device: &str) -> Option<String> {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .find(|(c, _)| c.device_id() == device)
            .map(|(_, child)| child.clone())
    }
}

/// Something for the child, from one of the tasks serving its clients.
pub(crate) enum Down {
    Desired { client: Identity, patch: Arc<Value> },
    Method { client: Identity, call: MethodCall },
    CloudToDevice { device: Identity, entry: Entry },
}

/// The per-client services of one child edge device's session.
pub(crate) struct Downstream {
    broker: Arc<Broker>,
    child: Identity,
    tx: mpsc::Sender<Down>,
    rx: mpsc::Receiver<Down>,
    tasks: HashMap<String, JoinHandle<()>>,
    calls: HashMap<String, MethodCall>,
    next_rid: u64,
    /// Packet id → (device, its queue position), for cloud-to-device deliveries.
    in_flight: HashMap<u16, (String, u64)>,
    acks: HashMap<String, mpsc::UnboundedSender<u64>>,
    topic: String,
}

impl Drop for Downstream {
    fn drop(&mut self) {
        for task in self.tasks.values() {
            task.abort();
        }
    }
}

impl Downstream {
    pub(crate) fn new(broker: Arc<Broker>, child: Identity) -> Self {
        let (tx, rx) = mpsc::channel(256);
        Self {
            broker,
            child,
            tx,
            rx,
            tasks: HashMap::new(),
            calls: HashMap::new(),
            next_rid: 1,
            in_flight: HashMap::new(),
            acks: HashMap::new(),
            topic: String::new(),
        }
    }

    /// The client a topic names, if the child may act for it.
    pub(crate) fn admit(&self, client: TopicIdentity<'_>) -> Result<Identity, String> {
        let identity = client.to_identity();
        let child = self.child.device_id();
        if client.device_id == child {
            return Ok(identity);
        }
        if client.device_id == self.broker.hub.device_id()
            || self.broker.auth.is_registered_device(client.device_id)
        {
            return Err(format!(
                "{} may not act for {identity}: that device is registered here",
                self.child
            ));
        }
        self.broker.behind.note(&identity, child);
        Ok(identity)
    }

    fn twin(&self, client: &Identity) -> String {
        twin_id(client, self.broker.hub.device_id())
    }

    /// Handle a `$edgehub/…` PUBLISH from the child; `Err` refuses a malformed topic (which
    /// ends the connection). A request for a client the child may not act for is answered with
    /// 403 instead: one misconfigured client must not cut off the others behind the child.
    pub(crate) fn on_publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), String> {
        let request = scoped::parse_request(topic).map_err(|e| format!("{topic}: {e}"))?;
        let (client, request_id) = match request {
            ScopedRequest::TwinGet { client, request_id }
            | ScopedRequest::TwinReported { client, request_id } => (client, request_id),
            ScopedRequest::MethodResponse {
                request_id, status, ..
            } => {
                if let Some(call) = self.calls.remove(request_id) {
                    let payload = String::from_utf8_lossy(payload).into_owned();
                    call.respond(MethodResponse { status, payload });
                }
                return Ok(());
            }
        };
        let (client, answer) = match self.admit(client) {
            Err(why) => {
                warn!(child = %self.child, "twin request refused: {why}");
                (client.to_identity(), (403, why))
            }
            Ok(client) if matches!(request, ScopedRequest::TwinGet { .. }) => {
                let docs = self.broker.twins.docs(&self.twin(&client));
                let body = serde_json::json!({"desired": docs.desired, "reported": docs.reported});
                scoped::twin_response_topic(&mut self.topic, &client, 200, request_id, None);
                publish(out, &self.topic, body.to_string().as_bytes());
                return Ok(());
            }
            Ok(client) => {
                let patched = match serde_json::from_slice::<Value>(payload) {
                    Ok(Value::Object(patch)) => self
                        .broker
                        .twins
                        .patch_reported(&self.twin(&client), &patch)
                        .map_err(|e| e.to_string()),
                    Ok(_) => Err("the reported patch is not a JSON object".into()),
                    Err(e) => Err(format!("the reported patch is not JSON: {e}")),
                };
                match patched {
                    Ok(v) => {
                        let v = i64::try_from(v).ok();
                        scoped::twin_response_topic(&mut self.topic, &client, 204, request_id, v);
                        publish(out, &self.topic, b"");
                        return Ok(());
                    }
                    Err(e) => {
                        warn!(child = %self.child, %client, "reported patch refused: {e}");
                        (client, (400, e))
                    }
                }
            }
        };
        let (status, message) = answer;
        scoped::twin_response_topic(&mut self.topic, &client, status, request_id, None);
        let body = serde_json::json!({ "message": message }).to_string();
        publish(out, &self.topic, body.as_bytes());
        Ok(())
    }

    /// SUBSCRIBE to a `$edgehub/…` filter; `Err` refuses it.
    pub(crate) fn subscribe(&mut self, filter: &str) -> Result<(), String> {
        let subscription = scoped::parse_subscription(filter).map_err(|e| e.to_string())?;
        let client = self.admit(subscription.client())?;
        if self.tasks.contains_key(filter) {
            return Ok(());
        }
        let tx = self.tx.clone();
        let task = match subscription {
            ScopedSubscription::TwinResponses(_) => return Ok(()),
            ScopedSubscription::DesiredPatches(_) => {
                let twins = Arc::clone(&self.broker.twins);
                let mut watch = twins.watch_desired(&self.twin(&client));
                tokio::spawn(async move {
                    while let Some(patch) = watch.changed(&twins).await {
                        let down = Down::Desired {
                            client: client.clone(),
                            patch,
                        };
                        if tx.send(down).await.is_err() {
                            return;
                        }
                    }
                })
            }
            ScopedSubscription::MethodRequests(_) => {
                let mut listener = self.broker.hub.methods().listen(&client);
                tokio::spawn(async move {
                    while let Some(call) = listener.next().await {
                        let down = Down::Method {
                            client: client.clone(),
                            call,
                        };
                        if tx.send(down).await.is_err() {
                            return;
                        }
                    }
                })
            }
            ScopedSubscription::CloudToDevice(_) => {
                let target = Target::Device(client.device_id().into());
                let mut consumer = self
                    .broker
                    .hub
                    .consume_durable(&target)
                    .map_err(|e| e.to_string())?;
                let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<u64>();
                self.acks.insert(client.device_id().to_owned(), ack_tx);
                tokio::spawn(async move {
                    let mut entries = Vec::new();
                    let mut out = 0usize;
                    loop {
                        tokio::select! {
                            _ = consumer.take(C2D_WINDOW - out, &mut entries), if out < C2D_WINDOW => {
                                for entry in entries.drain(..) {
                                    out += 1;
                                    let down = Down::CloudToDevice { device: client.clone(), entry };
                                    if tx.send(down).await.is_err() {
                                        return;
                                    }
                                }
                            }
                            seq = ack_rx.recv() => match seq {
                                Some(seq) => {
                                    consumer.ack(seq);
                                    out = out.saturating_sub(1);
                                }
                                None => return,
                            }
                        }
                    }
                })
            }
        };
        debug!(child = %self.child, filter, "serving for a client behind the child");
        self.tasks.insert(filter.to_owned(), task);
        Ok(())
    }

    /// UNSUBSCRIBE: stop serving that filter.
    pub(crate) fn unsubscribe(&mut self, filter: &str) {
        if let Some(task) = self.tasks.remove(filter) {
            task.abort();
        }
    }

    /// The next thing to send the child.
    pub(crate) async fn next(&mut self) -> Option<Down> {
        self.rx.recv().await
    }

    /// Write `down` into `out`; `pkid` gives a packet id not in flight, for QoS 1.
    pub(crate) fn write(
        &mut self,
        down: Down,
        out: &mut BytesMut,
        pkid: impl FnOnce(&dyn Fn(u16) -> bool) -> u16,
    ) {
        match down {
            Down::Desired { client, patch } => {
                let version = patch.get("$version").and_then(Value::as_i64).unwrap_or(0);
                scoped::desired_patch_topic(&mut self.topic, &client, version);
                publish(out, &self.topic, patch.to_string().as_bytes());
            }
            Down::Method { client, call } => {
                let rid = format!("{:x}", self.next_rid);
                self.next_rid += 1;
                scoped::method_request_topic(&mut self.topic, &client, &call.name, &rid);
                publish(out, &self.topic, call.payload.as_bytes());
                self.calls.retain(|_, c| !c.is_abandoned());
                self.calls.insert(rid, call);
            }
            Down::CloudToDevice {
                device: client,
                entry,
            } => {
                let device = client.device_id().to_owned();
                if !scoped::cloud_to_device_topic(&mut self.topic, &client, &entry.message) {
                    warn!(%client, "cloud-to-device message dropped: its properties do not fit a topic");
                    self.ack(&device, entry.seq);
                    return;
                }
                let pkid = pkid(&|p| self.in_flight.contains_key(&p));
                let delivery = Delivery::AtLeastOnce {
                    pkid,
                    dup: entry.attempts > 0,
                };
                if codec::put_publish(out, &self.topic, delivery, entry.message.body()) {
                    self.in_flight.insert(pkid, (device, entry.seq));
                }
            }
        }
    }

    fn ack(&self, device: &str, seq: u64) {
        if let Some(tx) = self.acks.get(device) {
            let _ = tx.send(seq);
        }
    }

    /// A PUBACK from the child; whether it was for a cloud-to-device message.
    pub(crate) fn on_puback(&mut self, pkid: u16) -> bool {
        match self.in_flight.remove(&pkid) {
            Some((device, seq)) => {
                self.ack(&device, seq);
                true
            }
            None => false,
        }
    }
}

/// A QoS 0 PUBLISH (twin responses, patches, method requests, as IoT Hub sends them).
fn publish(out: &mut BytesMut, topic: &str, body: &[u8]) {
    if !codec::put_publish(out, topic, Delivery::AtMostOnce, body) {
        warn!(
            topic,
            "a message to a child was dropped: its topic is too long"
        );
    }
}
