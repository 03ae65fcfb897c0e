//! The upstream link: this device's one connection to its parent, in IoT Hub's MQTT dialect.
//!
//! The edge device connects to its parent (a Verge, or an IoT-Hub-compatible endpoint) over TLS
//! as itself: a SAS token signed by its key in the key store, or a client certificate.
//!
//! - **Telemetry**: every message of the `$upstream` queue goes on
//!   `devices/{device}/messages/events/{bag}` at QoS 1, up to [`WINDOW`] unacknowledged, with its
//!   origin in `$.cdid` / `$.cmid` / `$.on`. The queue's consumer waits for durability
//!   ([`verge_hub::Hub::consume_durable`]): the parent never sees a message this device could
//!   forget; each PUBACK removes its entry. Messages go in the queue's order (priority lanes, then
//!   arrival); a broken connection returns what was in flight to its place.
//! - **Clients behind this device** (a Verge parent only, [`UpstreamOptions::act_for_clients`]):
//!   the link acts for each of them with the `$edgehub/{client}/…` topics
//!   ([`crate::dialect::scoped`]): it mirrors their twins (the parent's desired document and
//!   versions come down on connect and on each patch; reported properties go up as patches, at
//!   most every [`REPORT_EVERY`] per client), answers the parent's method calls by calling the
//!   client here, and stores the parent's cloud-to-device messages in the device's queue here
//!   before acknowledging them (which clients: `clients`).
//!
//! The link reconnects with backoff (1 s doubling to 60 s), goes on where it stopped, and renews
//! the connection before its token expires.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use mqttbytes::QoS;
use mqttbytes::v4::{
    Connect, ConnectReturnCode, Login, Packet, PingReq, Subscribe, SubscribeFilter, Unsubscribe,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use verge_hub::{Commit, Entry, MethodResponse, Target};
use verge_identity::KeyStore;
use verge_message::{Identity, Message, system};
use verge_twin::TwinStore;

use crate::codec::{self, Delivery};
use crate::dialect::scoped::{self, ScopedDelivery};
use crate::dialect::{self};
use crate::{Broker, twin_id};

const EDGE_AGENT: &str = "$edgeAgent";
const EDGE_HUB: &str = "$edgeHub";

/// Messages published and not yet acknowledged by the parent.
pub const WINDOW: usize = 1024;
/// How long a connection's token lives; the link reconnects before it ends.
const TOKEN_TTL: Duration = Duration::from_secs(3600);
/// How long a connection proved by a client certificate lives.
const CERTIFICATE_RENEWAL: Duration = Duration::from_secs(86_400);
const KEEP_ALIVE: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
const API: &str = "api-version=2021-04-12";

/// The parts of an IoT Hub device connection string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionString {
    /// `HostName`: the hub tokens are for.
    pub host_name: String,
    /// `DeviceId`.
    pub device_id: String,
    /// `SharedAccessKey`, base64; `None` with `x509=true` (a device proved by its client
    /// certificate).
    pub shared_access_key: Option<String>,
    /// `GatewayHostName`: where to connect, if not `HostName`.
    pub gateway_host_name: Option<String>,
}

/// A connection string that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("the upstream connection string is not usable: {0}")]
pub struct ConnectionStringError(String);

impl ConnectionString {
    /// Parse `HostName=…;DeviceId=…;SharedAccessKey=…[;GatewayHostName=…]`, or with `x509=true`
    /// instead of the key.
    pub fn parse(text: &str) -> Result<Self, ConnectionStringError> {
        let mut parts: HashMap<&str, &str> = HashMap::new();
        for part in text.trim().split(';').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| ConnectionStringError(format!("{part:?} is not Key=Value")))?;
            parts.insert(k.trim(), v.trim());
        }
        let get = |k: &str| {
            parts
                .get(k)
                .map(|v| (*v).to_owned())
                .filter(|v| !v.is_empty())
        };
        let need = |k: &str| get(k).ok_or_else(|| ConnectionStringError(format!("no {k}")));
        if parts.contains_key("ModuleId") {
            return Err(ConnectionStringError(
                "a module's connection string; the upstream link is the edge device's".into(),
            ));
        }
        let x509 = get("x509").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let shared_access_key = match get("SharedAccessKey") {
            Some(key) => Some(key),
            None if x509 => None,
            None => {
                return Err(ConnectionStringError(
                    "no SharedAccessKey (a device with a client certificate says x509=true)".into(),
                ));
            }
        };
        Ok(Self {
            host_name: need("HostName")?,
            device_id: need("DeviceId")?,
            shared_access_key,
            gateway_host_name: get("GatewayHostName"),
        })
    }

    /// Where to connect.
    pub fn endpoint(&self) -> &str {
        self.gateway_host_name.as_deref().unwrap_or(&self.host_name)
    }
}

/// How the edge device proves itself to its parent.
#[derive(Debug)]
pub enum UpstreamAuth {
    /// SAS tokens signed by the device's key in the key store.
    Sas {
        /// The key store holding the device's key.
        keys: Arc<dyn KeyStore>,
        /// The label of the device's key in it.
        key_label: String,
    },
    /// A client certificate (the parent registered the device with its thumbprint or its CA).
    X509 {
        /// The certificate and its chain.
        chain: Vec<CertificateDer<'static>>,
        /// Its private key.
        key: PrivateKeyDer<'static>,
    },
}

/// How to reach the parent.
#[derive(Debug)]
pub struct UpstreamOptions {
    /// Host to connect to (and the name its certificate must have).
    pub endpoint: String,
    /// Its MQTT-over-TLS port.
    pub port: u16,
    /// The hub name tokens are for (`HostName`).
    pub hub_host_name: String,
    /// This edge device's id.
    pub device_id: String,
    /// How the device proves itself.
    pub auth: UpstreamAuth,
    /// CAs trusted for the parent's certificate.
    pub trust_bundle: Vec<CertificateDer<'static>>,
    /// Whether the parent is a Verge: the link then acts for the clients behind this device
    /// (`$edgehub/…` topics). An IoT-Hub-style endpoint knows only IoT Hub's topics: telemetry
    /// alone goes there.
    pub act_for_clients: bool,
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("connecting: {0}")]
    Connect(String),
    #[error("the parent refused the connection: {0:?}")]
    Refused(ConnectReturnCode),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the parent sent a malformed packet: {0}")]
    Malformed(String),
    #[error("the parent went quiet")]
    Quiet,
    #[error("signing the token: {0}")]
    Token(String),
}

/// Keep the link to the parent until the task is dropped: forward `$upstream`, mirror the twins
/// of every client this device serves, relay methods and cloud-to-device messages.
pub async fn run(broker: Arc<Broker>, options: UpstreamOptions) {
    let tls = match tls_config(&options.trust_bundle, &options.auth) {
        Ok(tls) => tls,
        Err(e) => {
            tracing::error!(error = %e, "upstream link not started");
            return;
        }
    };
    with_backoff("upstream connection", || {
        connection(&broker, &options, &tls)
    })
    .await;
}

/// Run `connect` again and again, waiting 1 s doubling to 60 s after each end (back to 1 s
/// after a connection that lasted longer than that).
async fn with_backoff<F, Fut>(what: &'static str, mut connect: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), LinkError>>,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        if let Err(e) = connect().await {
            tracing::warn!(error = %e, retry_in = ?backoff, "{what} ended");
        }
        if started.elapsed() > MAX_BACKOFF {
            backoff = FIRST_BACKOFF;
        }
        sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Check what [`run`] needs before it runs: a trust bundle with a certificate, and a client
/// certificate that goes with its key. The error says what is wrong.
pub fn check(options: &UpstreamOptions) -> Result<(), String> {
    tls_config(&options.trust_bundle, &options.auth).map(drop)
}

fn tls_config(
    trust: &[CertificateDer<'static>],
    auth: &UpstreamAuth,
) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    for cert in trust {
        roots.add(cert.clone()).map_err(|e| e.to_string())?;
    }
    if roots.is_empty() {
        return Err("the trust bundle has no certificate".into());
    }
    let config = ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots);
    let config = match auth {
        UpstreamAuth::Sas { .. } => config.with_no_client_auth(),
        UpstreamAuth::X509 { chain, key } => config
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| format!("the client certificate and its private key: {e}"))?,
    };
    Ok(Arc::new(config))
}

/// The CONNECT password and how long it is good for: a SAS token, or nothing with a client
/// certificate (renewed once a day all the same).
fn token(options: &UpstreamOptions) -> Result<(String, SystemTime), LinkError> {
    let (keys, key_label) = match &options.auth {
        UpstreamAuth::Sas { keys, key_label } => (keys, key_label),
        UpstreamAuth::X509 { .. } => {
            return Ok((String::new(), SystemTime::now() + CERTIFICATE_RENEWAL));
        }
    };
    let until = SystemTime::now() + TOKEN_TTL;
    let expiry = verge_identity::sas::expires_on(SystemTime::now(), TOKEN_TTL);
    let resource = format!("{}/devices/{}", options.hub_host_name, options.device_id);
    verge_identity::sas::sign(&**keys, key_label, &resource, expiry)
        .map(|t| (t, until))
        .map_err(|e| LinkError::Token(e.to_string()))
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// Connect to the parent as this edge device: TLS, CONNECT with a SAS token signed by the
/// device's key, CONNACK. Returns the stream, its read buffer and when the token expires.
async fn open(
    options: &UpstreamOptions,
    tls: &Arc<ClientConfig>,
) -> Result<(Tls, BytesMut, SystemTime), LinkError> {
    let (password, until) = token(options)?;
    let addr = (options.endpoint.as_str(), options.port);
    let tcp = timeout(Duration::from_secs(10), TcpStream::connect(addr))
        .await
        .map_err(|_| LinkError::Connect("timed out".into()))??;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(options.endpoint.clone())
        .map_err(|e| LinkError::Connect(format!("{}: {e}", options.endpoint)))?;
    let mut stream = timeout(
        Duration::from_secs(10),
        TlsConnector::from(Arc::clone(tls)).connect(name, tcp),
    )
    .await
    .map_err(|_| LinkError::Connect("TLS handshake timed out".into()))?
    .map_err(|e| LinkError::Connect(format!("TLS: {e}")))?;

    let client_id = options.device_id.clone();
    let username = format!("{}/{}/?{API}", options.hub_host_name, options.device_id);
    let mut out = BytesMut::new();
    let mut connect = Connect::new(client_id);
    connect.keep_alive = KEEP_ALIVE.as_secs() as u16;
    connect.login = Some(Login::new(username, password));
    connect
        .write(&mut out)
        .map_err(|e| LinkError::Malformed(format!("{e:?}")))?;
    stream.write_all(&out).await?;
    let mut rbuf = BytesMut::with_capacity(16 * 1024);
    let connack = timeout(Duration::from_secs(10), async {
        loop {
            match codec::read(&mut rbuf, 1 << 20) {
                Ok(Some(packet)) => return Ok(packet),
                Ok(None) => {}
                Err(e) => return Err(LinkError::Malformed(format!("{e:?}"))),
            }
            if stream.read_buf(&mut rbuf).await? == 0 {
                return Err(LinkError::Connect("closed before CONNACK".into()));
            }
        }
    })
    .await
    .map_err(|_| LinkError::Connect("no CONNACK within 10 s".into()))??;
    match connack {
        Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => Ok((stream, rbuf, until)),
        Packet::ConnAck(ack) => Err(LinkError::Refused(ack.code)),
        other => Err(LinkError::Malformed(format!("{other:?} before CONNACK"))),
    }
}

/// When to reconnect so that a connection never outlives its token.
fn renewal(until: SystemTime) -> Instant {
    Instant::now()
        + until
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .saturating_sub(Duration::from_secs(300))
}

/// Reported properties of one client go up at most this often. A change after a quiet spell goes
/// once the client has been still for [`REPORT_SETTLE`] (a deployment's burst of reports is one
/// patch, its final state), and at the latest after this long.
const REPORT_EVERY: Duration = Duration::from_secs(2);
/// How long a client's reported properties must stay unchanged to be sent before
/// [`REPORT_EVERY`] is up.
const REPORT_SETTLE: Duration = Duration::from_millis(200);
/// How often reported properties are looked at.
const REPORT_CHECK: Duration = Duration::from_millis(100);
/// How often the set of clients is looked at again.
const CLIENTS_EVERY: Duration = Duration::from_secs(2);
/// How long the parent waits for a method answer from here.
const METHOD_TIMEOUT: Duration = Duration::from_secs(30);

/// One client this device acts for at the parent: its twin here, and what the parent has of
/// its reported properties (`None` until the parent's twin arrived).
struct Client {
    twin: String,
    theirs: Option<Value>,
    /// The reported version last looked at, and when it changed.
    seen: u64,
    changed: Option<Instant>,
    /// When the oldest change not yet sent was seen.
    pending: Option<Instant>,
    /// When a report last went up.
    sent: Option<Instant>,
}

/// The clients this device acts for at its parent: its system modules and deployed modules,
/// its registered leaf devices, modules run elsewhere and child edge devices (with their
/// system and deployed modules), and every client its own child edge devices act for here.
fn clients(broker: &Broker, device: &str) -> HashSet<Identity> {
    let twins = &broker.twins;
    let mut out = HashSet::new();
    let edge = |out: &mut HashSet<Identity>, d: &str| {
        for system in [EDGE_AGENT, EDGE_HUB] {
            out.insert(Identity::module(d, system));
        }
        let agent = twins.desired(&twin_id(&Identity::module(d, EDGE_AGENT), device));
        if let Some(modules) = agent.get("modules").and_then(Value::as_object) {
            out.extend(modules.keys().map(|m| Identity::module(d, m)));
        }
    };
    edge(&mut out, device);
    for (client, is_edge) in broker.auth.downstream_clients() {
        if is_edge {
            edge(&mut out, client.device_id());
        }
        out.insert(client);
    }
    out.extend(broker.behind().list().into_iter().map(|(c, _)| c));
    out
}

/// One connection: forward until it breaks or its token is about to expire.
async fn connection(
    broker: &Arc<Broker>,
    options: &UpstreamOptions,
    tls: &Arc<ClientConfig>,
) -> Result<(), LinkError> {
    let hub = &broker.hub;
    let (mut stream, mut rbuf, until) = open(options, tls).await?;
    let mut out = BytesMut::new();
    tracing::info!(parent = %options.endpoint, device = %options.device_id, "upstream connected");
    let malformed = |e: mqttbytes::Error| LinkError::Malformed(format!("{e:?}"));

    let mut consumer = hub
        .consume_durable(&Target::Upstream)
        .map_err(|e| LinkError::Connect(e.to_string()))?;
    let mut in_flight: HashMap<u16, u64> = HashMap::new();
    let mut next_pkid: u16 = 1;
    let mut entries: Vec<Entry> = Vec::with_capacity(WINDOW);
    let mut topic = String::new();
    let mut served: HashMap<Identity, Client> = HashMap::new();
    // Method answers come back from the tasks that ask the local clients.
    let (answers_tx, mut answers) = mpsc::channel::<(Identity, String, MethodResponse)>(64);
    let mut rid = 0u64;
    let renew_at = renewal(until);
    let mut heard = Instant::now();
    let mut ping = tokio::time::interval(KEEP_ALIVE / 2);
    ping.tick().await;
    let mut tick = tokio::time::interval(CLIENTS_EVERY);
    let mut report_tick = tokio::time::interval(REPORT_CHECK);
    report_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let room = WINDOW - in_flight.len();
        tokio::select! {
            read = stream.read_buf(&mut rbuf) => {
                if read? == 0 {
                    return Err(LinkError::Connect("the parent closed the connection".into()));
                }
                heard = Instant::now();
                let mut acked = Vec::new();
                loop {
                    match codec::read(&mut rbuf, 1 << 22) {
                        Ok(Some(Packet::PubAck(ack))) => acked.extend(in_flight.remove(&ack.pkid)),
                        Ok(Some(Packet::Publish(p))) => {
                            on_delivery(broker, &mut served, &answers_tx, p, &mut out).await?;
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => return Err(malformed(e)),
                    }
                }
                consumer.ack_all(acked);
            }
            _ = consumer.take(room, &mut entries), if room > 0 => {
                for entry in entries.drain(..) {
                    let pkid = loop {
                        let p = next_pkid;
                        next_pkid = next_pkid.checked_add(1).unwrap_or(1);
                        if !in_flight.contains_key(&p) {
                            break p;
                        }
                    };
                    telemetry_topic(&mut topic, &options.device_id, &entry);
                    let delivery = Delivery::AtLeastOnce { pkid, dup: entry.attempts > 0 };
                    if codec::put_publish(&mut out, &topic, delivery, entry.message.body()) {
                        in_flight.insert(pkid, entry.seq);
                    } else {
                        tracing::warn!("a message with properties too long for a topic was dropped");
                        consumer.ack(entry.seq);
                    }
                }
            }
            Some((client, request_id, answer)) = answers.recv() => {
                scoped::method_response_topic(&mut topic, &client, answer.status, &request_id);
                let _ = codec::put_publish(&mut out, &topic, Delivery::AtMostOnce, answer.payload.as_bytes());
            }
            _ = tick.tick() => {
                // New clients: subscribe for them and take their twins; gone ones: let go.
                let wanted = if options.act_for_clients {
                    clients(broker, &options.device_id)
                } else {
                    HashSet::new()
                };
                let gone: Vec<Identity> = served.keys().filter(|c| !wanted.contains(*c)).cloned().collect();
                if !gone.is_empty() {
                    let filters = gone.iter().flat_map(scoped::client_filters).collect::<Vec<_>>();
                    served.retain(|c, _| wanted.contains(c));
                    let mut unsubscribe = Unsubscribe::new("");
                    unsubscribe.topics = filters;
                    unsubscribe.pkid = next_subscription(&mut rid);
                    unsubscribe.write(&mut out).map_err(malformed)?;
                }
                let new: Vec<Identity> = wanted.into_iter().filter(|c| !served.contains_key(c)).collect();
                if !new.is_empty() {
                    let filters = new
                        .iter()
                        .flat_map(scoped::client_filters)
                        .map(|f| SubscribeFilter::new(f, QoS::AtLeastOnce));
                    let mut subscribe = Subscribe::new_many(filters);
                    subscribe.pkid = next_subscription(&mut rid);
                    subscribe.write(&mut out).map_err(malformed)?;
                    for client in new {
                        scoped::twin_get_topic(&mut topic, &client, GET_RID);
                        let _ = codec::put_publish(&mut out, &topic, Delivery::AtMostOnce, b"");
                        let twin = twin_id(&client, &options.device_id);
                        served.insert(client, Client { twin, theirs: None, seen: 0, changed: None, pending: None, sent: None });
                    }
                    tracing::debug!(clients = served.len(), "acting for clients at the parent");
                }
            }
            _ = report_tick.tick() => report(&broker.twins, &mut served, &mut rid, &mut topic, &mut out),
            _ = ping.tick() => {
                if heard.elapsed() > KEEP_ALIVE * 3 / 2 {
                    return Err(LinkError::Quiet);
                }
                PingReq.write(&mut out).map_err(malformed)?;
            }
            () = sleep_until(renew_at) => {
                tracing::info!("renewing the upstream connection before its token expires");
                return Ok(());
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
    }
}

/// The `$rid` of twin GETs (answers to reported patches are only logged when they fail).
const GET_RID: &str = "get";

/// Packet ids of SUBSCRIBE / UNSUBSCRIBE (their acks are not awaited).
fn next_subscription(counter: &mut u64) -> u16 {
    *counter += 1;
    u16::try_from(*counter % u64::from(u16::MAX))
        .unwrap_or(1)
        .max(1)
}

/// Send every served client's reported properties that changed since the parent last had them,
/// as a patch (nulls for keys that went away).
fn report(
    twins: &TwinStore,
    served: &mut HashMap<Identity, Client>,
    rid: &mut u64,
    topic: &mut String,
    out: &mut BytesMut,
) {
    let at = Instant::now();
    for (client, state) in served.iter_mut() {
        let Some(theirs) = &state.theirs else {
            continue;
        };
        let version = twins.reported_version(&state.twin);
        if version != state.seen {
            state.seen = version;
            state.changed = Some(at);
            state.pending.get_or_insert(at);
        }
        let Some(pending) = state.pending else {
            continue;
        };
        let settled = state.changed.is_some_and(|t| at - t >= REPORT_SETTLE);
        let overdue = at - pending >= REPORT_EVERY;
        let allowed = state.sent.is_none_or(|t| at - t >= REPORT_EVERY);
        if !(allowed && (settled || overdue)) {
            continue;
        }
        state.pending = None;
        let mut reported = twins.reported(&state.twin);
        if let Some(map) = reported.as_object_mut() {
            map.remove(verge_twin::VERSION_KEY);
        }
        let Value::Object(now) = &reported else {
            continue;
        };
        let before = theirs.as_object().cloned().unwrap_or_default();
        let patch = verge_twin::patch::diff(&before, now);
        if patch.is_empty() {
            continue;
        }
        *rid += 1;
        scoped::twin_reported_topic(topic, client, &format!("r{rid}"));
        let body = Value::Object(patch).to_string();
        let _ = codec::put_publish(out, topic, Delivery::AtMostOnce, body.as_bytes());
        state.theirs = Some(reported);
        state.sent = Some(at);
    }
}

/// Something the parent sent for one of the clients.
async fn on_delivery(
    broker: &Arc<Broker>,
    served: &mut HashMap<Identity, Client>,
    answers: &mpsc::Sender<(Identity, String, MethodResponse)>,
    p: mqttbytes::v4::Publish,
    out: &mut BytesMut,
) -> Result<(), LinkError> {
    let delivery = match scoped::parse_delivery(&p.topic) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(topic = %p.topic, error = %e, "the parent sent a topic this link does not know");
            return Ok(());
        }
    };
    let mut topic = String::new();
    match delivery {
        ScopedDelivery::TwinResponse {
            client,
            status,
            request_id,
        } => {
            let client = client.to_identity();
            if status == 200 && request_id == GET_RID {
                if let Some(state) = served.get_mut(&client) {
                    let theirs = mirror(&broker.twins, &state.twin, &p.payload);
                    // Reports from here on are patches against what the parent has.
                    if state.theirs.is_none() {
                        state.theirs = theirs;
                    }
                }
            } else if !(200..300).contains(&status) {
                tracing::warn!(%client, status, body = %String::from_utf8_lossy(&p.payload), "the parent refused a twin request");
            }
        }
        ScopedDelivery::DesiredPatch { client } => {
            // A patch announces a change: take the whole document, as a reconnect does, so
            // that nothing is ever half-applied.
            scoped::twin_get_topic(&mut topic, &client.to_identity(), GET_RID);
            let _ = codec::put_publish(out, &topic, Delivery::AtMostOnce, b"");
        }
        ScopedDelivery::MethodRequest {
            client,
            method,
            request_id,
        } => {
            let client = client.to_identity();
            let (method, request_id) = (method.to_owned(), request_id.to_owned());
            let payload = String::from_utf8_lossy(&p.payload).into_owned();
            let hub = Arc::clone(&broker.hub);
            let answers = answers.clone();
            tokio::spawn(async move {
                let answer = hub
                    .methods()
                    .invoke(&client, &method, &payload, METHOD_TIMEOUT)
                    .await
                    .unwrap_or_else(|e| MethodResponse {
                        status: i32::from(e.status()),
                        payload: serde_json::json!({ "message": e.to_string() }).to_string(),
                    });
                let _ = answers.send((client, request_id, answer)).await;
            });
        }
        ScopedDelivery::CloudToDevice { client, bag } => {
            let device = client.device_id;
            let mut message = Message::new(p.payload.clone());
            if let Err(e) = dialect::decode_properties(bag, &mut message) {
                tracing::warn!(device, error = %e, "a cloud-to-device message with a bad property bag was dropped");
            } else {
                let commit = Commit {
                    messages: vec![Arc::new(message)],
                    to: Some(Target::Device(device.into())),
                    ..Commit::default()
                };
                // Stored here before the parent may forget it.
                broker.hub.commit(commit).await.map_err(|e| {
                    LinkError::Connect(format!("storing a cloud-to-device message: {e}"))
                })?;
            }
            if p.qos == QoS::AtLeastOnce {
                codec::put_puback(out, p.pkid);
            }
        }
    }
    Ok(())
}

/// Take the parent's twin document (`{"desired": {…, "$version": n}, "reported": …}`) as the
/// local desired properties of twin `module` (the twin store keeps it on disk, so that a
/// device that boots offline runs its last deployment); returns the parent's reported
/// properties.
fn mirror(twins: &TwinStore, module: &str, payload: &[u8]) -> Option<Value> {
    let doc: Value = match serde_json::from_slice(payload) {
        Ok(doc) => doc,
        Err(e) => {
            tracing::warn!(module, error = %e, "the parent's twin is not JSON");
            return None;
        }
    };
    let mut theirs = doc
        .get("reported")
        .cloned()
        .unwrap_or_else(|| Value::Object(serde_json::Map::new()));
    if let Some(map) = theirs.as_object_mut() {
        map.remove(verge_twin::VERSION_KEY);
    }
    let Some(desired) = doc.get("desired").and_then(Value::as_object) else {
        tracing::warn!(module, "the parent's twin has no desired properties");
        return Some(theirs);
    };
    let version = desired
        .get(verge_twin::VERSION_KEY)
        .and_then(Value::as_u64)
        .unwrap_or(0);
    // Version 0: nothing deployed upstream yet; keep what runs.
    if version > 0 {
        match twins.mirror_desired(module, desired.clone(), version) {
            Ok(v) => tracing::info!(module, version = v, "desired properties from upstream"),
            Err(e) => {
                tracing::warn!(module, error = %e, "the parent's desired properties were refused")
            }
        }
    }
    Some(theirs)
}

/// `devices/{device}/messages/events/{bag}`: the message's properties as IoT Hub's bag, with
/// its origin (`$.cdid`, `$.cmid`) and output (`$.on`).
fn telemetry_topic(out: &mut String, device: &str, entry: &Entry) {
    out.clear();
    out.push_str("devices/");
    out.push_str(device);
    out.push_str("/messages/events/");
    let message = &entry.message;
    let output = message
        .system()
        .get(system::OUTPUT_NAME)
        .map(|o| ("$.on", Some(o)));
    dialect::propbag::encode_pairs(dialect::propbag::outbound_pairs(message).chain(output), out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings_parse_and_say_what_is_missing() {
        let cs = ConnectionString::parse(
            "HostName=root.example;DeviceId=child;SharedAccessKey=a2V5;GatewayHostName=10.0.0.1",
        )
        .expect("parses");
        assert_eq!(cs.endpoint(), "10.0.0.1");
        assert_eq!(cs.device_id, "child");
        let no_key = ConnectionString::parse("HostName=h;DeviceId=d").expect_err("no key");
        assert!(no_key.to_string().contains("SharedAccessKey"), "{no_key}");
        assert!(
            ConnectionString::parse("HostName=h;DeviceId=d;ModuleId=m;SharedAccessKey=k").is_err()
        );
        assert!(ConnectionString::parse("garbage").is_err());
        let x509 = ConnectionString::parse("HostName=h;DeviceId=d;x509=true").expect("x509");
        assert_eq!(x509.shared_access_key, None);
    }
}
