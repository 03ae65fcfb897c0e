//! One client's connection: CONNECT, then packets in and deliveries out until either side ends.
//!
//! A session is one task that owns the socket. It reads whatever packets have arrived and hands
//! all the messages among them to the hub as one [`Commit`]; their PUBACKs go out when that
//! commit is durable, so a PUBACK always means "routed and stored". The session keeps reading
//! while commits sync (up to [`MAX_PENDING`] of them), and answers PUBACKs in the order the
//! PUBLISHes came, as MQTT requires. A full store refuses the commit: no PUBACK, and the
//! connection is closed with the store's error logged (MQTT 3.1.1 has no negative PUBACK), so the
//! client publishes again later. Deliveries come from the
//! hub's queue of the module's inputs through a [`Consumer`]: a QoS 1 delivery stays in flight
//! until the client's PUBACK acks it; a client that goes away returns what it had in flight to
//! the queue. Twin and method traffic are answered from the twin store and the hub's method
//! registry.
//!
//! Authorisation is checked on every PUBLISH and SUBSCRIBE against the identity the client proved
//! in CONNECT: a module publishes only its own outputs and subscribes only to its own inputs, twin
//! and methods; a device only to its device topics. A refused PUBLISH closes the connection (MQTT
//! 3.1.1 has no negative PUBACK; IoT Hub does the same); a refused filter gets the SUBACK failure
//! code.

use std::collections::{HashMap, VecDeque};
use std::future::pending;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, sleep_until, timeout};
use tracing::{debug, info, warn};
use verge_hub::{Commit, Consumer, Entry, MethodCall, MethodListener, MethodResponse, Target};
use verge_message::{Identity, Message, Text, system};
use verge_twin::DesiredWatch;

use crate::auth::{AuthMethod, Credentials};
use crate::codec::{self, Delivery, Packet, QoS};
use crate::dialect::{self, PublishTopic, Subscription};
use crate::downstream::{Down, Downstream};
use crate::stats::{add, bump};
use crate::{Broker, twin_id};

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum End {
    #[error("client disconnected")]
    Disconnected,
    #[error("connection closed")]
    Closed,
    #[error("taken over by a new connection of the same client")]
    TakenOver,
    #[error("keep-alive expired")]
    KeepAlive,
    #[error("its SAS token expired")]
    TokenExpired,
    #[error("no CONNECT within {0:?}")]
    ConnectTimeout(Duration),
    #[error("malformed packet: {0}")]
    Malformed(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Store(verge_hub::StoreError),
}

/// Commits a session may have syncing before it stops reading.
const MAX_PENDING: usize = 64;

/// A commit on its way to disk, with the PUBACKs that wait for it.
struct Pending {
    durable: verge_hub::Durable,
    pubacks: Vec<u16>,
}

/// The oldest pending commit, once durable.
async fn settled(queue: &mut VecDeque<Pending>) -> (Result<(), verge_hub::StoreError>, Vec<u16>) {
    match queue.front_mut() {
        Some(front) => {
            let result = (&mut front.durable).await;
            let pubacks = queue.pop_front().map(|p| p.pubacks).unwrap_or_default();
            (result, pubacks)
        }
        None => pending().await,
    }
}

/// Messages read from one batch of packets and committed together.
const MAX_BATCH: usize = 512;

/// The socket with its buffers.
struct Wire<S> {
    stream: S,
    rbuf: BytesMut,
    wbuf: BytesMut,
    max_packet_bytes: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    /// Read until a whole packet is buffered.
    async fn packet(&mut self) -> Result<Packet, End> {
        loop {
            if let Some(p) = self.parse()? {
                return Ok(p);
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(End::Closed);
            }
        }
    }

    fn parse(&mut self) -> Result<Option<Packet>, End> {
        codec::read(&mut self.rbuf, self.max_packet_bytes)
            .map_err(|e| End::Malformed(format!("{e:?}")))
    }

    async fn flush(&mut self) -> Result<(), End> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }
}

/// Run one connection to its end.
pub(crate) async fn run<S>(broker: Arc<Broker>, stream: S, certificates: Vec<Vec<u8>>, peer: String)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut wire = Wire {
        stream,
        rbuf: BytesMut::with_capacity(16 * 1024),
        wbuf: BytesMut::with_capacity(16 * 1024),
        max_packet_bytes: broker.options.max_packet_bytes,
    };
    let connect_timeout = broker.options.connect_timeout;
    let connect = match timeout(connect_timeout, wire.packet()).await {
        Ok(Ok(Packet::Connect(c))) => c,
        Ok(Ok(other)) => {
            bump(&broker.counters.malformed);
            debug!(%peer, "first packet is not CONNECT: {other:?}");
            return;
        }
        Ok(Err(e)) => {
            if matches!(e, End::Malformed(_)) {
                bump(&broker.counters.malformed);
            }
            debug!(%peer, "before CONNECT: {e}");
            return;
        }
        Err(_) => {
            debug!(%peer, "{}", End::ConnectTimeout(connect_timeout));
            return;
        }
    };
    let (identity, method) = match admit(&broker, &connect, &certificates) {
        Ok(admitted) => admitted,
        Err((code, why)) => {
            bump(&broker.counters.connections_refused);
            info!(%peer, client = %connect.client_id, "connection refused: {why}");
            codec::put_connack(&mut wire.wbuf, false, code);
            let _ = wire.flush().await;
            return;
        }
    };

    // One session per client: a new connection takes over, after the old one has let go of
    // everything it held (its consumer, its method listener).
    let slot = broker.slot(&identity);
    slot.kick.notify_waiters();
    let _held = slot.held.clone().lock_owned().await;
    bump(&broker.counters.connections_accepted);
    bump(&broker.counters.connected);
    codec::put_connack(&mut wire.wbuf, false, 0);
    let keep_alive = match connect.keep_alive {
        0 => None,
        // MQTT 3.1.1 §3.1.2.10: one and a half times the keep-alive.
        s => Some(Duration::from_millis(u64::from(s) * 1500)),
    };
    info!(%peer, client = %identity, "connected");
    report_client(&broker, &identity, true);
    let mut session = Session::new(Arc::clone(&broker), identity.clone());
    session.child_edge = broker.auth.is_child_edge(&identity);
    if session.child_edge {
        session.downstream = Some(Downstream::new(Arc::clone(&broker), identity.clone()));
    }
    let expires = match method {
        AuthMethod::Sas { valid_until } => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            Some(Instant::now() + Duration::from_secs(valid_until.saturating_sub(now)))
        }
        _ => None,
    };
    let end = session
        .serve(&mut wire, keep_alive, expires, &slot.kick)
        .await;
    broker
        .counters
        .connected
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    match &end {
        End::Malformed(_) => {
            bump(&broker.counters.malformed);
            warn!(%peer, client = %identity, "closed: {end}");
        }
        End::Refused(_) => warn!(%peer, client = %identity, "closed: {end}"),
        _ => info!(%peer, client = %identity, "closed: {end}"),
    }
    // The consumer returns its in-flight deliveries before the next connection may start.
    drop(session);
    report_client(&broker, &identity, false);
}

/// `$edgeHub` reported `clients.{id}`: `status` (`Connected` / `Disconnected`) and the time of
/// the change (`lastConnectedTimeUtc` / `lastDisconnectedTimeUtc`), as IoT Edge reports them.
fn report_client(broker: &Broker, identity: &Identity, connected: bool) {
    let now = verge_message::time::iotedge(SystemTime::now());
    let state = if connected {
        serde_json::json!({ "status": "Connected", "lastConnectedTimeUtc": now })
    } else {
        serde_json::json!({ "status": "Disconnected", "lastDisconnectedTimeUtc": now })
    };
    let mut clients = serde_json::Map::new();
    clients.insert(identity.to_string(), state);
    let mut patch = serde_json::Map::new();
    patch.insert("clients".into(), Value::Object(clients));
    if let Err(e) = broker.twins.patch_reported("$edgeHub", &patch) {
        debug!(client = %identity, "connection status not reported: {e}");
    }
}

/// Check CONNECT: protocol, username, client id, credentials. `Err` carries the CONNACK code.
fn admit(
    broker: &Broker,
    connect: &mqttbytes::v4::Connect,
    certificates: &[Vec<u8>],
) -> Result<(Identity, AuthMethod), (u8, String)> {
    if connect.protocol != mqttbytes::Protocol::V4 {
        return Err((1, "only MQTT 3.1.1 is spoken here".into()));
    }
    let Some(login) = &connect.login else {
        return Err((4, "no username".into()));
    };
    let info = dialect::parse_username(&login.username).map_err(|e| (4, e.to_string()))?;
    let identity = info.identity;
    if connect.client_id != identity.to_string() {
        return Err((
            2,
            format!(
                "client id {:?} does not match the username's identity {identity}",
                connect.client_id
            ),
        ));
    }
    let password = Some(login.password.as_str()).filter(|p| !p.is_empty());
    let credentials = Credentials {
        identity: &identity,
        password,
        certificates,
    };
    match broker.auth.authenticate(&credentials) {
        Ok(method) => Ok((identity, method)),
        Err(crate::auth::Refused::BadCredentials(why)) => Err((4, why)),
        Err(crate::auth::Refused::NotAuthorised(why)) => Err((5, why)),
    }
}

/// A connected client's state.
struct Session {
    broker: Arc<Broker>,
    identity: Identity,
    /// A child edge device: its telemetry may come from its modules (`$.cmid`).
    child_edge: bool,
    /// A child edge device's: what it does for the clients behind it.
    downstream: Option<Downstream>,
    /// The twin this identity reads and reports.
    twin: String,
    /// The module's inputs, once subscribed.
    inputs: Option<Consumer>,
    inputs_qos: QoS,
    /// Deliveries awaiting PUBACK: packet id → queue position.
    in_flight: HashMap<u16, u64>,
    next_pkid: u16,
    desired: Option<DesiredWatch>,
    twin_responses: bool,
    methods: Option<MethodListener>,
    pending_calls: HashMap<String, MethodCall>,
    next_rid: u64,
    /// Reused buffers.
    batch: Vec<Arc<Message>>,
    /// Whether a message of the batch came at QoS 1 (else the batch is at most once).
    batch_acked: bool,
    /// Deliveries the client PUBACKed in the packets being handled.
    acked: Vec<u64>,
    pubacks: Vec<u16>,
    pending: VecDeque<Pending>,
    entries: Vec<Entry>,
    topic: String,
}

impl Session {
    fn new(broker: Arc<Broker>, identity: Identity) -> Self {
        let twin = twin_id(&identity, broker.hub.device_id());
        Self {
            broker,
            identity,
            child_edge: false,
            downstream: None,
            twin,
            inputs: None,
            inputs_qos: QoS::AtLeastOnce,
            in_flight: HashMap::new(),
            next_pkid: 1,
            desired: None,
            twin_responses: false,
            methods: None,
            pending_calls: HashMap::new(),
            next_rid: 1,
            batch: Vec::new(),
            batch_acked: false,
            acked: Vec::new(),
            pubacks: Vec::new(),
            pending: VecDeque::new(),
            entries: Vec::new(),
            topic: String::new(),
        }
    }

    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        wire: &mut Wire<S>,
        keep_alive: Option<Duration>,
        expires: Option<Instant>,
        kick: &tokio::sync::Notify,
    ) -> End {
        // MQTT 3.1.1 cannot re-authenticate: a client whose token expires reconnects with a new
        // one, as IoT Hub makes it do.
        let expires =
            expires.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365 * 10));
        let far = Duration::from_secs(86_400 * 365);
        let mut deadline = Instant::now() + keep_alive.unwrap_or(far);
        if let Err(e) = wire.flush().await {
            return e;
        }
        loop {
            let room = self
                .broker
                .options
                .max_in_flight
                .saturating_sub(self.in_flight.len());
            let result = tokio::select! {
                biased;
                _ = kick.notified() => Err(End::TakenOver),
                read = wire.stream.read_buf(&mut wire.rbuf) => match read {
                    Ok(0) => Err(End::Closed),
                    Ok(_) => {
                        deadline = Instant::now() + keep_alive.unwrap_or(far);
                        let handled = self.on_readable(wire).await;
                        if let Some(consumer) = &self.inputs {
                            consumer.ack_all(self.acked.drain(..));
                        }
                        handled
                    }
                    Err(e) => Err(End::Io(e)),
                },
                taken = take(&mut self.inputs, room, &mut self.entries), if room > 0 => {
                    let _ = taken;
                    self.deliver(&mut wire.wbuf);
                    Ok(())
                }
                patch = desired(&mut self.desired, &self.broker) => {
                    match patch {
                        Some(patch) => self.send_desired(&patch, &mut wire.wbuf),
                        None => self.desired = None,
                    }
                    Ok(())
                }
                down = downstream(&mut self.downstream) => {
                    match down {
                        Some(down) => self.send_downstream(down, &mut wire.wbuf),
                        None => self.downstream = None,
                    }
                    Ok(())
                }
                call = method(&mut self.methods) => {
                    match call {
                        Some(call) => self.send_method(call, &mut wire.wbuf),
                        None => self.methods = None,
                    }
                    Ok(())
                }
                (result, pubacks) = settled(&mut self.pending) => match result {
                    Ok(()) => {
                        for pkid in pubacks {
                            codec::put_puback(&mut wire.wbuf, pkid);
                        }
                        Ok(())
                    }
                    Err(e) => Err(End::Store(e)),
                },
                _ = sleep_until(deadline) => Err(End::KeepAlive),
                _ = sleep_until(expires) => Err(End::TokenExpired),
            };
            if let Err(end) = result {
                return end;
            }
            if let Err(end) = wire.flush().await {
                return end;
            }
        }
    }

    /// Handle every complete packet in the read buffer; commit the messages among them.
    async fn on_readable<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        wire: &mut Wire<S>,
    ) -> Result<(), End> {
        loop {
            while self.batch.len() < MAX_BATCH {
                let Some(packet) = wire.parse()? else { break };
                self.on_packet(packet, &mut wire.wbuf)?;
            }
            if self.batch.is_empty() {
                return Ok(());
            }
            self.commit(&mut wire.wbuf).await?;
            if self.batch.is_empty() && wire.rbuf.is_empty() {
                return Ok(());
            }
        }
    }

    /// Submit the batch; its PUBACKs wait for it to be durable.
    async fn commit(&mut self, out: &mut BytesMut) -> Result<(), End> {
        while self.pending.len() >= MAX_PENDING {
            let (result, pubacks) = settled(&mut self.pending).await;
            result.map_err(End::Store)?;
            for pkid in pubacks {
                codec::put_puback(out, pkid);
            }
        }
        let messages = std::mem::take(&mut self.batch);
        let pubacks = std::mem::take(&mut self.pubacks);
        let n = messages.len() as u64;
        let submitted = self
            .broker
            .hub
            .submit(Commit {
                messages,
                ack: None,
                at_most_once: !std::mem::take(&mut self.batch_acked),
                to: None,
            })
            .await
            .map_err(|e| {
                bump(&self.broker.counters.publishes_refused);
                warn!(client = %self.identity, error = %e, "messages refused, no PUBACK");
                End::Store(e)
            })?;
        debug!(client = %self.identity, routed = submitted.report.routed, "committed {n} messages");
        add(&self.broker.counters.messages_in, n);
        self.pending.push_back(Pending {
            durable: submitted.durable,
            pubacks,
        });
        Ok(())
    }

    fn on_packet(&mut self, packet: Packet, out: &mut BytesMut) -> Result<(), End> {
        match packet {
            Packet::Publish(p) => self.on_publish(p, out),
            Packet::PubAck(ack) => {
                // Acked together once the packets read are handled (one lock, one store batch).
                if let Some(seq) = self.in_flight.remove(&ack.pkid) {
                    self.acked.push(seq);
                } else if let Some(down) = &mut self.downstream {
                    down.on_puback(ack.pkid);
                }
                Ok(())
            }
            Packet::Subscribe(s) => {
                let codes: Vec<u8> = s
                    .filters
                    .iter()
                    .map(|f| self.subscribe(&f.path, f.qos))
                    .collect();
                codec::put_suback(out, s.pkid, &codes);
                Ok(())
            }
            Packet::Unsubscribe(u) => {
                for topic in &u.topics {
                    self.unsubscribe(topic);
                }
                codec::put_unsuback(out, u.pkid);
                Ok(())
            }
            Packet::PingReq => {
                codec::put_pingresp(out);
                Ok(())
            }
            Packet::Disconnect => Err(End::Disconnected),
            other => Err(End::Malformed(format!("unexpected packet {other:?}"))),
        }
    }

    fn refuse(&self, what: String) -> End {
        bump(&self.broker.counters.publishes_refused);
        End::Refused(what)
    }

    fn on_publish(&mut self, p: mqttbytes::v4::Publish, out: &mut BytesMut) -> Result<(), End> {
        if p.qos == QoS::ExactlyOnce {
            return Err(self.refuse("QoS 2 is not supported".into()));
        }
        if let Some(down) = &mut self.downstream
            && p.topic.starts_with("$edgehub/")
        {
            if let Err(why) = down.on_publish(&p.topic, &p.payload, out) {
                return Err(self.refuse(why));
            }
            self.ack_publish(&p, out);
            return Ok(());
        }
        let topic = dialect::parse_publish(&p.topic)
            .map_err(|e| self.refuse(format!("{}: {e}", p.topic)))?;
        match topic {
            PublishTopic::DeviceTelemetry { .. } | PublishTopic::ModuleOutput { .. } => {
                let named = topic.identity();
                if !named.is_some_and(|named| named.is(&self.identity)) {
                    return Err(
                        self.refuse(format!("{} may not publish on {}", self.identity, p.topic))
                    );
                }
                let bag = topic.bag().unwrap_or_default();
                let mut message = Message::new(p.payload);
                dialect::decode_properties(bag, &mut message)
                    .map_err(|e| self.refuse(format!("{}: {e}", p.topic)))?;
                let output = match self.identity.module_id() {
                    Some(_) => message.system().get(system::OUTPUT_NAME).map(Text::from),
                    None => None,
                };
                match self
                    .child_edge
                    .then(|| self.child_origin(&mut message))
                    .flatten()
                {
                    Some((origin, output)) => self.broker.hub.stamp(&origin, output, &mut message),
                    None => self.broker.hub.stamp(&self.identity, output, &mut message),
                }
                self.batch.push(Arc::new(message));
                if p.qos == QoS::AtLeastOnce {
                    self.batch_acked = true;
                    self.pubacks.push(p.pkid);
                }
            }
            PublishTopic::TwinGet { request_id: rid } => {
                let docs = self.broker.twins.docs(&self.twin);
                let body = serde_json::json!({"desired": docs.desired, "reported": docs.reported});
                self.reply_twin(out, 200, rid, None, body.to_string().as_bytes());
                self.ack_publish(&p, out);
            }
            PublishTopic::TwinReportedPatch {
                request_id: rid, ..
            } => {
                let patched = match serde_json::from_slice::<Value>(&p.payload) {
                    Ok(Value::Object(patch)) => self
                        .broker
                        .twins
                        .patch_reported(&self.twin, &patch)
                        .map_err(|e| e.to_string()),
                    Ok(_) => Err("the reported patch is not a JSON object".into()),
                    Err(e) => Err(format!("the reported patch is not JSON: {e}")),
                };
                match patched {
                    Ok(version) => self.reply_twin(out, 204, rid, i64::try_from(version).ok(), b""),
                    Err(e) => {
                        let body = serde_json::json!({"message": e}).to_string();
                        self.reply_twin(out, 400, rid, None, body.as_bytes());
                    }
                }
                self.ack_publish(&p, out);
            }
            PublishTopic::MethodResponse {
                status,
                request_id: rid,
            } => {
                if let Some(call) = self.pending_calls.remove(rid) {
                    let payload = String::from_utf8_lossy(&p.payload).into_owned();
                    call.respond(MethodResponse { status, payload });
                }
                self.ack_publish(&p, out);
            }
        }
        Ok(())
    }

    /// Where a child edge device's message comes from: the client named by the message's
    /// `$.cdid`/`$.cmid` (as the child's upstream link sends them; they arrive as application
    /// properties and are taken out), with its output (`$.on`), if the child may act for it
    /// (its own modules, the clients behind it). `None`: the child itself.
    fn child_origin(&self, message: &mut Message) -> Option<(Identity, Option<Text>)> {
        let props = message.properties_mut();
        let device = props.get("$.cdid").map(str::to_owned);
        let module = props.get("$.cmid").map(str::to_owned);
        let output = props
            .get("$.on")
            .map(Text::from)
            .or_else(|| message.system().get(system::OUTPUT_NAME).map(Text::from));
        let props = message.properties_mut();
        for wire in ["$.cdid", "$.cmid", "$.on"] {
            props.remove(wire);
        }
        // Its own modules, and the clients it may act for (those behind it).
        let device = device.filter(|d| !d.is_empty())?;
        let module = module.filter(|m| !m.is_empty());
        let named = dialect::TopicIdentity {
            device_id: &device,
            module_id: module.as_deref(),
        };
        if named.device_id == self.identity.device_id() && named.module_id.is_none() {
            return None;
        }
        match self.downstream.as_ref()?.admit(named) {
            Ok(origin) => Some((origin, output)),
            Err(why) => {
                warn!(client = %self.identity, "message kept as the child's own: {why}");
                None
            }
        }
    }

    fn ack_publish(&mut self, p: &mqttbytes::v4::Publish, out: &mut BytesMut) {
        if p.qos == QoS::AtLeastOnce {
            // Answered in order: a PUBACK for a message still in the batch, or in a commit still
            // syncing, must not overtake it.
            if !self.batch.is_empty() {
                self.pubacks.push(p.pkid);
            } else if let Some(last) = self.pending.back_mut() {
                last.pubacks.push(p.pkid);
            } else {
                codec::put_puback(out, p.pkid);
            }
        }
    }

    fn reply_twin(
        &mut self,
        out: &mut BytesMut,
        status: u16,
        rid: &str,
        version: Option<i64>,
        body: &[u8],
    ) {
        if !self.twin_responses {
            return;
        }
        dialect::twin_response_topic(&mut self.topic, status, rid, version);
        if !codec::put_publish(out, &self.topic, Delivery::AtMostOnce, body) {
            warn!(client = %self.identity, "twin response dropped: the request id is too long");
        }
    }

    /// SUBSCRIBE one filter: the granted QoS, or 0x80.
    fn subscribe(&mut self, filter: &str, qos: QoS) -> u8 {
        let granted = if qos == QoS::AtMostOnce {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        let refused = |s: &Self, why: String| {
            bump(&s.broker.counters.subscriptions_refused);
            warn!(client = %s.identity, "subscription to {filter} refused: {why}");
            0x80
        };
        if let Some(down) = &mut self.downstream
            && filter.starts_with("$edgehub/")
        {
            return match down.subscribe(filter) {
                Ok(()) => u8::from(granted != QoS::AtMostOnce),
                Err(why) => refused(self, why),
            };
        }
        let subscription = match dialect::parse_subscription(filter) {
            Ok(s) => s,
            Err(e) => return refused(self, e.to_string()),
        };
        match subscription {
            Subscription::ModuleInputs {
                device_id,
                module_id: module,
            } => {
                let mine = self.identity.device_id() == device_id
                    && self.identity.module_id() == Some(module);
                if !mine || device_id != self.broker.hub.device_id() {
                    return refused(
                        self,
                        format!(
                            "{} may not read the inputs of {device_id}/{module}",
                            self.identity
                        ),
                    );
                }
                if let Err(e) = self.deliveries(Target::Module(module.into()), granted) {
                    return refused(self, e);
                }
            }
            Subscription::CloudToDevice { device_id } => {
                if self.identity.module_id().is_some() || self.identity.device_id() != device_id {
                    return refused(
                        self,
                        format!("{} may not read messages for {device_id}", self.identity),
                    );
                }
                if let Err(e) = self.deliveries(Target::Device(device_id.into()), granted) {
                    return refused(self, e);
                }
            }
            Subscription::TwinResponses => self.twin_responses = true,
            Subscription::DesiredPatches => {
                if self.desired.is_none() {
                    self.desired = Some(self.broker.twins.watch_desired(&self.twin));
                }
            }
            Subscription::MethodRequests => {
                if self.methods.is_none() {
                    self.methods = Some(self.broker.hub.methods().listen(&self.identity));
                }
            }
        }
        match granted {
            QoS::AtMostOnce => 0,
            _ => 1,
        }
    }

    /// Start taking the durable deliveries of `target` (a module's inputs, a device's
    /// cloud-to-device messages) at `qos`.
    fn deliveries(&mut self, target: Target, qos: QoS) -> Result<(), String> {
        if self.inputs.is_none() {
            let consumer = self
                .broker
                .hub
                .consume_durable(&target)
                .map_err(|e| e.to_string())?;
            self.inputs = Some(consumer);
        }
        self.inputs_qos = qos;
        Ok(())
    }

    fn unsubscribe(&mut self, filter: &str) {
        if let Some(down) = &mut self.downstream
            && filter.starts_with("$edgehub/")
        {
            down.unsubscribe(filter);
            return;
        }
        match dialect::parse_subscription(filter) {
            Ok(Subscription::ModuleInputs { .. } | Subscription::CloudToDevice { .. }) => {
                self.inputs = None;
                self.in_flight.clear();
            }
            Ok(Subscription::TwinResponses) => self.twin_responses = false,
            Ok(Subscription::DesiredPatches) => self.desired = None,
            Ok(Subscription::MethodRequests) => self.methods = None,
            Err(_) => {}
        }
    }

    /// Write the entries just taken as PUBLISHes on the module's input topics.
    fn deliver(&mut self, out: &mut BytesMut) {
        let Some(consumer) = &self.inputs else { return };
        let n = self.entries.len() as u64;
        let mut done = Vec::new();
        for entry in self.entries.drain(..) {
            let device = self.identity.device_id();
            match self.identity.module_id() {
                Some(module) => {
                    let input = entry.input.as_deref().unwrap_or("default");
                    dialect::module_input_topic(
                        &mut self.topic,
                        device,
                        module,
                        input,
                        &entry.message,
                    )
                }
                // A device's deliveries are its cloud-to-device messages.
                None => dialect::cloud_to_device_topic(&mut self.topic, device, &entry.message),
            };
            let body = entry.message.body();
            match self.inputs_qos {
                QoS::AtMostOnce => {
                    if !codec::put_publish(out, &self.topic, Delivery::AtMostOnce, body) {
                        undeliverable(&self.identity, &entry);
                    }
                    done.push(entry.seq);
                }
                _ => {
                    let pkid = next_pkid(&mut self.next_pkid, &self.in_flight);
                    let dup = entry.attempts > 0;
                    if codec::put_publish(
                        out,
                        &self.topic,
                        Delivery::AtLeastOnce { pkid, dup },
                        body,
                    ) {
                        self.in_flight.insert(pkid, entry.seq);
                    } else {
                        undeliverable(&self.identity, &entry);
                        done.push(entry.seq);
                    }
                }
            }
        }
        consumer.ack_all(done);
        add(&self.broker.counters.messages_out, n);
    }

    fn send_desired(&mut self, patch: &Value, out: &mut BytesMut) {
        let version = patch.get("$version").and_then(Value::as_i64).unwrap_or(0);
        dialect::desired_patch_topic(&mut self.topic, version);
        // A version number always fits.
        let _ = codec::put_publish(
            out,
            &self.topic,
            Delivery::AtMostOnce,
            patch.to_string().as_bytes(),
        );
    }

    fn send_downstream(&mut self, down: Down, out: &mut BytesMut) {
        let Some(downstream) = &mut self.downstream else {
            return;
        };
        let next = &mut self.next_pkid;
        let mine = &self.in_flight;
        downstream.write(down, out, |theirs| {
            loop {
                let pkid = next_pkid(next, mine);
                if !theirs(pkid) {
                    return pkid;
                }
            }
        });
    }

    fn send_method(&mut self, call: MethodCall, out: &mut BytesMut) {
        let rid = format!("{:x}", self.next_rid);
        self.next_rid += 1;
        dialect::method_request_topic(&mut self.topic, &call.name, &rid);
        if !codec::put_publish(
            out,
            &self.topic,
            Delivery::AtMostOnce,
            call.payload.as_bytes(),
        ) {
            call.respond(MethodResponse {
                status: 400,
                payload: r#"{"message":"the method name is too long"}"#.into(),
            });
            return;
        }
        self.pending_calls.retain(|_, c| !c.is_abandoned());
        self.pending_calls.insert(rid, call);
    }
}

/// A message whose input topic (with its property bag) is longer than MQTT allows: dropped.
fn undeliverable(identity: &Identity, entry: &Entry) {
    warn!(client = %identity, seq = entry.seq, "message dropped: its properties make the topic longer than 65535 bytes");
}

/// The next packet id not in flight (1..=65535).
fn next_pkid(next: &mut u16, in_flight: &HashMap<u16, u64>) -> u16 {
    loop {
        let pkid = *next;
        *next = if *next == u16::MAX { 1 } else { *next + 1 };
        if !in_flight.contains_key(&pkid) {
            return pkid;
        }
    }
}

async fn take(consumer: &mut Option<Consumer>, max: usize, out: &mut Vec<Entry>) -> usize {
    match consumer {
        Some(c) => c.take(max, out).await,
        None => pending().await,
    }
}

async fn desired(watch: &mut Option<DesiredWatch>, broker: &Broker) -> Option<Arc<Value>> {
    match watch {
        Some(w) => w.changed(&broker.twins).await,
        None => pending().await,
    }
}

async fn downstream(down: &mut Option<Downstream>) -> Option<Down> {
    match down {
        Some(d) => d.next().await,
        None => pending().await,
    }
}

async fn method(listener: &mut Option<MethodListener>) -> Option<MethodCall> {
    match listener {
        Some(l) => l.next().await,
        None => pending().await,
    }
}
