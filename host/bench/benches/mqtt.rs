//! Verge's MQTT front against mosquitto: `cargo bench -p verge-bench --bench mqtt [-- FILTER...]`.
//!
//! One publisher → one subscriber, 256-byte messages, loopback TCP, `TCP_NODELAY` on every
//! socket. Both brokers run in the same bench run, driven by the same load generator.
//!
//! - Verge, in this process: a hub for edge device `bench-edge` with the route `FROM /messages/*
//!   INTO BrokeredEndpoint("/modules/sub/inputs/in")` on the durable store (a fresh redb file,
//!   the daemon's defaults: PUBACK after the group commit), a
//!   twin store, an identity registry on a file key store with leaf device `pub` and external
//!   module `sub` (SAS tokens from `Registry::token_for`), and `Broker::serve_plain` with
//!   `BrokerOptions::default()` (512 QoS 1 deliveries in flight) on its own 2-worker tokio runtime.
//!   The publisher (client id `pub`) publishes on `devices/pub/messages/events/`; the subscriber
//!   (`bench-edge/sub`) subscribes to `devices/bench-edge/modules/sub/inputs/#` and receives on
//!   `devices/bench-edge/modules/sub/inputs/in/{property bag}`.
//! - mosquitto: Debian's `/usr/sbin/mosquitto` (`tests/setup --clients` installs it), started with
//!   a generated config (`listener PORT 127.0.0.1`, `allow_anonymous true`, `persistence false`,
//!   `max_queued_messages 1000000`, `max_inflight_messages 512`, `set_tcp_nodelay true`) and
//!   killed at the end; both clients use the topic `bench/t`.
//! - The load generator: `mqttbytes::v4` packets over tokio `TcpStream`s. The subscriber task and
//!   the publisher's PUBACK reader run on the load generator's own 2-worker runtime; the publisher
//!   is a thread (`loadgen-pub`) that copies a PUBLISH encoded once by mqttbytes, patches its
//!   payload (bytes 0..8: send time in ns since the bench started; 8..16: sequence number;
//!   16..24: run id) and packet id, and writes batches through the runtime. The subscriber reads,
//!   PUBACKs QoS 1 deliveries, and takes latency = receive time (once per socket read) − send
//!   time. Both brokers get the same two cores: broker, load generator and kernel share them.
//!
//! - `qos0-max`, `qos1-max`: the publisher writes batches of 64 PUBLISHes as fast as the socket
//!   takes them (QoS 1: at most 512 unacknowledged, for both brokers). Rate = messages the
//!   subscriber received in the steady window (from 0.5 s after the start, for 2 s; the
//!   publisher goes on for 0.25 s after it) / window.
//!   After the publisher stops (and, at QoS 1, has every PUBACK), the subscriber reads until it
//!   has everything or hears nothing for 1 s: lost = sent − received. Verge pushes back on a
//!   publisher whose route's queue is full (PUBACK after the commit; a QoS 0 publisher's socket
//!   stops being read); mosquitto queues and drops QoS 0 beyond its queue. Median of 3 by rate;
//!   the latency columns of these rows are queueing at saturation.
//! - `qos0-10k-lat`, `qos1-10k-lat`: the publisher thread wakes every 50 µs (about 130 µs with
//!   the kernel's timer slack) and writes the messages due at 10 000 msg/s, each stamped as
//!   written; latency of the messages sent in the window after a 0.5 s warm-up, 5 s long; one run.
//!
//! Goals (Verge rows): `qos0-max` ≥ 300 000 msg/s; `*-10k-lat` p99 < 2 ms; `qos1-max` loses
//! nothing. `vs mosq` is Verge's rate / mosquitto's for the `-max` rows, Verge's p99 /
//! mosquitto's for the `-lat` rows. `cpu` is the broker's cores (Verge: its runtime's threads;
//! mosquitto: its process) over the window; the notes add the load generator's, the machine's
//! idle cores, each Verge runtime worker's busy share and the subscriber's queue depth in the hub,
//! and flag other processes' load (a run on a busy machine says so).
//!
//! Arguments that do not start with `-` select rows whose `scenario/broker` contains one of them
//! (`qos1`, `lat`, `verge`, `qos0-max/mosquitto`). `VERGE_BENCH_SCALE` multiplies every duration;
//! `VERGE_BENCH_PACE` (messages/s) replaces the 10 000 of the latency runs. The figures also go
//! to `target/bench/mqtt.json`.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use mqttbytes::QoS;
use mqttbytes::v4::{self, ConnectReturnCode, Packet, PubAck, Publish, Subscribe};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{Notify, Semaphore};
use verge_bench::machine::{
    Machine, busy_shares, machine_seconds, process_cpu_seconds, stat_cpu, steal_seconds,
    threads_cpu, workers_busy,
};
use verge_bench::report::{
    self, Extra, Fields, fmt_rate, or_dash, percentages, stolen_note, write_json,
};
use verge_bench::settings::{Filter, fixed_pace, scaled};
use verge_bench::stats::{Pct, median, round};
use verge_bench::{BODY, PACE_SLEEP, RUNS};
use verge_hub::{Hub, HubOptions, Identity, Queue, QueueLimits, RouteSet, RouteSpec, Target};
use verge_identity::{FileKeyStore, NewAuth, Registry};
use verge_mqtt::{Broker, BrokerOptions, RegistryAuthenticator};
use verge_twin::TwinStore;

const HUB_HOST: &str = "bench-hub";
const EDGE: &str = "bench-edge";
const API: &str = "?api-version=2021-04-12";
/// PUBLISHes per write of the unpaced publisher.
const BATCH: usize = 64;
/// QoS 1 PUBLISHes the publisher may have unacknowledged (Verge's `max_in_flight` is 512 too).
const WINDOW: usize = 512;
/// The load generator's limit on a packet it reads.
const MAX_PACKET: usize = 1 << 20;
/// The publisher goes on this long after the window, so that the window ends in steady state
/// (and the publisher thread's CPU time is counted before the thread ends).
const TAIL: Duration = Duration::from_millis(250);
/// The subscriber gives up this long after the last message once the publisher is done.
const IDLE: Duration = Duration::from_secs(1);
const QOS0_GOAL: f64 = 300_000.0;
const P99_GOAL_US: f64 = 2000.0;
/// The pace of the latency runs.
const PACE: f64 = 10_000.0;

/// The instant every payload timestamp counts from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos(t: Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_nanos() as u64
}

/// Where a broker's CPU time is counted.
#[derive(Clone, Copy, Debug)]
enum BrokerCpu {
    /// This process's threads named so.
    Threads(&'static str),
    /// Another process.
    Process(u32),
}

impl BrokerCpu {
    fn seconds(self) -> f64 {
        match self {
            Self::Threads(prefix) => threads_cpu(prefix),
            Self::Process(pid) => {
                stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
            }
        }
    }
}

/// The thread-name prefixes of the broker's and the load generator's threads.
const BROKER_THREADS: &str = "verge-broker";
const LOADGEN_THREADS: &str = "loadgen";

/// A client's CONNECT.
#[derive(Clone, Debug)]
struct Client {
    id: String,
    /// Username and password.
    login: Option<(String, String)>,
}

/// A broker under test, as the load generator sees it.
struct Side {
    broker: &'static str,
    addr: SocketAddr,
    publisher: Client,
    subscriber: Client,
    /// What the publisher publishes on.
    topic: String,
    /// What the subscriber subscribes to.
    filter: String,
    cpu: BrokerCpu,
    /// The subscriber's queue in the broker, when it can be looked at.
    queue: Option<Arc<Queue>>,
    /// The broker's runtime, when it is in this process.
    runtime: Option<Handle>,
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("verge-bench-mqtt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the bench's temporary directory");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Verge's broker on `runtime`, with its registry in `dir`.
fn start_verge(runtime: &Runtime, dir: &Path) -> Side {
    // The durable store, as the daemon runs it: PUBACK after the group commit.
    let (store, recovered) = verge_store::Store::open(
        &dir.join("messages.redb"),
        verge_store::StoreOptions::default(),
    )
    .expect("open the bench's message store");
    let hub = Hub::with_store(
        HubOptions {
            queue_limits: QueueLimits::default(),
            ..HubOptions::new(EDGE)
        },
        store,
        &recovered,
    );
    let route = RouteSpec {
        name: "bench".into(),
        route: "FROM /messages/* INTO BrokeredEndpoint(\"/modules/sub/inputs/in\")".into(),
        priority: None,
        time_to_live_secs: None,
    };
    hub.install(RouteSet::compile(&[route], 7200).expect("bench route compiles"));
    let queue = hub.queue(&Target::Module("sub".into()));
    let twins = Arc::new(TwinStore::new());
    let keys = FileKeyStore::open(dir.join("keys")).expect("open the bench's key store");
    let registry = Registry::open(dir.join("registry.json"), Arc::new(keys), HUB_HOST, EDGE)
        .expect("open the bench's registry");
    registry
        .add_leaf_device("pub", NewAuth::Sas)
        .expect("register leaf device pub");
    registry
        .add_external_module("sub", NewAuth::Sas)
        .expect("register module sub");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let day = Duration::from_secs(86_400);
    let pub_id = Identity::device("pub");
    let sub_id = Identity::module(EDGE, "sub");
    let pub_token = registry
        .token_for(&pub_id, day, now)
        .expect("token for pub");
    let sub_token = registry
        .token_for(&sub_id, day, now)
        .expect("token for sub");
    let auth = RegistryAuthenticator::new(Arc::new(registry), None);
    let broker = Broker::new(hub, twins, Arc::new(auth), BrokerOptions::default());
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind Verge's listener");
    let addr = listener.local_addr().expect("listener address");
    runtime.spawn(broker.serve_plain(listener));
    Side {
        broker: "verge",
        addr,
        publisher: Client {
            id: pub_id.to_string(),
            login: Some((format!("{HUB_HOST}/{pub_id}/{API}"), pub_token)),
        },
        subscriber: Client {
            id: sub_id.to_string(),
            login: Some((format!("{HUB_HOST}/{sub_id}/{API}"), sub_token)),
        },
        topic: format!("devices/{pub_id}/messages/events/"),
        filter: format!("devices/{EDGE}/modules/sub/inputs/#"),
        cpu: BrokerCpu::Threads(BROKER_THREADS),
        queue: Some(queue),
        runtime: Some(runtime.handle().clone()),
    }
}

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// The mosquitto process, killed on drop.
struct Mosquitto(Child);

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// mosquitto with a generated config in `dir`, once it accepts connections.
fn start_mosquitto(dir: &Path) -> Result<(Mosquitto, Side), String> {
    if !Path::new(MOSQUITTO).is_file() {
        return Err(format!(
            "{MOSQUITTO} not found (tests/setup --clients installs it)"
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let port = StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let config = dir.join("mosquitto.conf");
    std::fs::write(
        &config,
        format!(
            "listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             persistence false\n\
             max_queued_messages 1000000\n\
             max_inflight_messages {WINDOW}\n\
             set_tcp_nodelay true\n\
             log_dest stderr\n\
             log_type error\n\
             log_type warning\n"
        ),
    )
    .map_err(|e| format!("{}: {e}", config.display()))?;
    let log = std::fs::File::create(dir.join("mosquitto.log"))
        .map_err(|e| format!("mosquitto log: {e}"))?;
    let child = Command::new(MOSQUITTO)
        .arg("-c")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {MOSQUITTO}: {e}"))?;
    let pid = child.id();
    let process = Mosquitto(child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("mosquitto.log")).unwrap_or_default();
            return Err(format!("mosquitto does not listen on {addr}: {log}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let client = |id: &str| Client {
        id: id.into(),
        login: None,
    };
    Ok((
        process,
        Side {
            broker: "mosquitto",
            addr,
            publisher: client("bench-pub"),
            subscriber: client("bench-sub"),
            topic: "bench/t".into(),
            filter: "bench/t".into(),
            cpu: BrokerCpu::Process(pid),
            queue: None,
            runtime: None,
        },
    ))
}

/// The next packet from `stream`, within 5 s.
async fn next_packet(stream: &mut TcpStream, rbuf: &mut BytesMut) -> Result<Packet, String> {
    loop {
        match v4::read(rbuf, MAX_PACKET) {
            Ok(packet) => return Ok(packet),
            Err(mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => return Err(format!("malformed packet: {e:?}")),
        }
        match tokio::time::timeout(Duration::from_secs(5), stream.read_buf(rbuf)).await {
            Ok(Ok(0)) => return Err("the broker closed the connection".into()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("read: {e}")),
            Err(_) => return Err("no answer within 5 s".into()),
        }
    }
}

/// A connected client (CONNACK accepted), with what it read past the CONNACK.
async fn connect(addr: SocketAddr, client: &Client) -> Result<(TcpStream, BytesMut), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("TCP_NODELAY: {e}"))?;
    let mut connect = v4::Connect::new(client.id.clone());
    connect.keep_alive = 60;
    if let Some((username, password)) = &client.login {
        connect.set_login(username.clone(), password.clone());
    }
    let mut buf = BytesMut::new();
    connect
        .write(&mut buf)
        .map_err(|e| format!("encode CONNECT: {e:?}"))?;
    stream
        .write_all(&buf)
        .await
        .map_err(|e| format!("write CONNECT: {e}"))?;
    let mut rbuf = BytesMut::with_capacity(256 * 1024);
    match next_packet(&mut stream, &mut rbuf).await {
        Ok(Packet::ConnAck(ack)) if ack.code == ConnectReturnCode::Success => Ok((stream, rbuf)),
        Ok(other) => Err(format!("{} refused: {other:?}", client.id)),
        Err(e) => Err(format!("{} CONNECT: {e}", client.id)),
    }
}

async fn subscribe(
    stream: &mut TcpStream,
    rbuf: &mut BytesMut,
    filter: &str,
    qos: QoS,
) -> Result<(), String> {
    let mut subscribe = Subscribe::new(filter, qos);
    subscribe.pkid = 1;
    let mut buf = BytesMut::new();
    subscribe
        .write(&mut buf)
        .map_err(|e| format!("encode SUBSCRIBE: {e:?}"))?;
    stream
        .write_all(&buf)
        .await
        .map_err(|e| format!("write SUBSCRIBE: {e}"))?;
    match next_packet(stream, rbuf).await? {
        Packet::SubAck(ack)
            if ack
                .return_codes
                .iter()
                .all(|c| matches!(c, v4::SubscribeReasonCode::Success(_))) =>
        {
            Ok(())
        }
        other => Err(format!("SUBSCRIBE {filter} refused: {other:?}")),
    }
}

async fn disconnect(stream: &mut (impl AsyncWriteExt + Unpin)) {
    let mut buf = BytesMut::new();
    let _ = v4::Disconnect.write(&mut buf);
    let _ = stream.write_all(&buf).await;
    let _ = stream.shutdown().await;
}

/// A PUBLISH encoded once by mqttbytes, patched per message.
#[derive(Clone)]
struct Template {
    bytes: Vec<u8>,
    payload_at: usize,
    /// Where the packet id is (QoS 1).
    pkid_at: Option<usize>,
}

impl Template {
    fn new(topic: &str, qos: QoS) -> Self {
        let mut publish = Publish::new(topic, qos, vec![b'x'; BODY]);
        let qos1 = qos != QoS::AtMostOnce;
        if qos1 {
            publish.pkid = 1;
        }
        let mut buf = BytesMut::new();
        publish
            .write(&mut buf)
            .expect("encode the PUBLISH template");
        let payload_at = buf.len() - BODY;
        Self {
            bytes: buf.to_vec(),
            payload_at,
            pkid_at: qos1.then(|| payload_at - 2),
        }
    }

    fn put(&self, out: &mut BytesMut, pkid: u16, stamp: u64, seq: u64, run: u64) {
        let at = out.len();
        out.extend_from_slice(&self.bytes);
        let packet = &mut out[at..];
        if let Some(p) = self.pkid_at {
            packet[p..p + 2].copy_from_slice(&pkid.to_be_bytes());
        }
        let body = &mut packet[self.payload_at..];
        body[0..8].copy_from_slice(&stamp.to_le_bytes());
        body[8..16].copy_from_slice(&seq.to_le_bytes());
        body[16..24].copy_from_slice(&run.to_le_bytes());
    }
}

/// (send time, sequence, run) of a payload.
fn fields(payload: &[u8]) -> Option<(u64, u64, u64)> {
    let word = |i: usize| {
        payload
            .get(i * 8..i * 8 + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    Some((word(0)?, word(1)?, word(2)?))
}

/// What one run is to do.
#[derive(Clone, Copy, Debug)]
struct Plan {
    qos: QoS,
    /// Messages/s; `None`: as fast as possible.
    pace: Option<f64>,
    warmup: Duration,
    measure: Duration,
    run: u64,
}

/// The publisher and subscriber's meeting point.
#[derive(Debug)]
struct Shared {
    /// How many the publisher sent, once it is done (`u64::MAX` until then).
    sent: AtomicU64,
    done: Notify,
}

/// What the subscriber saw.
#[derive(Debug, Default)]
struct Seen {
    /// Distinct messages of this run.
    received: u64,
    duplicates: u64,
    /// Messages of an earlier run.
    stale: u64,
    /// Received in the window.
    in_window: u64,
    /// Of the messages sent in the window, ns.
    latencies: Vec<u64>,
    reads: u64,
}

/// Read, PUBACK QoS 1 deliveries, count and time them, until the publisher is done and
/// everything (or nothing for [`IDLE`]) arrived.
async fn subscriber(
    mut stream: TcpStream,
    mut rbuf: BytesMut,
    plan: Plan,
    start: Instant,
    shared: Arc<Shared>,
) -> Result<Seen, String> {
    let from = start + plan.warmup;
    let until = from + plan.measure;
    let (from_ns, until_ns) = (nanos(from), nanos(until));
    let mut seen = Seen::default();
    seen.latencies.reserve(1 << 20);
    let mut got: Vec<u64> = Vec::new();
    let mut wbuf = BytesMut::with_capacity(16 * 1024);
    let mut now = Instant::now();
    let mut last = now;
    loop {
        let now_ns = nanos(now);
        loop {
            let publish = match v4::read(&mut rbuf, MAX_PACKET) {
                Ok(Packet::Publish(p)) => p,
                Ok(Packet::PingResp) => continue,
                Ok(other) => return Err(format!("subscriber: unexpected {other:?}")),
                Err(mqttbytes::Error::InsufficientBytes(_)) => break,
                Err(e) => return Err(format!("subscriber: malformed packet: {e:?}")),
            };
            if publish.qos == QoS::AtLeastOnce {
                PubAck::new(publish.pkid)
                    .write(&mut wbuf)
                    .map_err(|e| format!("encode PUBACK: {e:?}"))?;
            }
            let Some((stamp, seq, run)) = fields(&publish.payload) else {
                return Err(format!(
                    "subscriber: a {}-byte payload",
                    publish.payload.len()
                ));
            };
            if run != plan.run {
                seen.stale += 1;
                continue;
            }
            let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
            if got.len() <= word {
                got.resize(word + 1024, 0);
            }
            if got[word] & bit != 0 {
                seen.duplicates += 1;
                continue;
            }
            got[word] |= bit;
            seen.received += 1;
            if now >= from && now < until {
                seen.in_window += 1;
            }
            if (from_ns..until_ns).contains(&stamp) {
                seen.latencies.push(now_ns.saturating_sub(stamp));
            }
        }
        if !wbuf.is_empty() {
            stream
                .write_all(&wbuf)
                .await
                .map_err(|e| format!("subscriber: write PUBACKs: {e}"))?;
            wbuf.clear();
        }
        let sent = shared.sent.load(Ordering::Acquire);
        let done = sent != u64::MAX;
        if done && (seen.received >= sent || last.elapsed() > IDLE) {
            disconnect(&mut stream).await;
            return Ok(seen);
        }
        let read = tokio::select! {
            read = stream.read_buf(&mut rbuf) => Some(read),
            () = tick(&shared.done, done) => None,
        };
        now = Instant::now();
        match read {
            Some(Ok(0)) => return Err("subscriber: the broker closed the connection".into()),
            Some(Ok(_)) => {
                last = now;
                seen.reads += 1;
            }
            Some(Err(e)) => return Err(format!("subscriber: read: {e}")),
            None => {}
        }
    }
}

/// Until the publisher is done: its signal; after: a short tick to check for idleness.
async fn tick(done: &Notify, is_done: bool) {
    if is_done {
        tokio::time::sleep(Duration::from_millis(50)).await;
    } else {
        done.notified().await;
    }
}

/// The publisher's PUBACKs: each one frees a place in `window`. Closes `window` when the
/// connection ends.
async fn puback_reader(
    mut rx: OwnedReadHalf,
    mut rbuf: BytesMut,
    window: Arc<Semaphore>,
) -> Result<u64, String> {
    let mut acked = 0u64;
    let result = loop {
        let mut n = 0usize;
        loop {
            match v4::read(&mut rbuf, MAX_PACKET) {
                Ok(Packet::PubAck(_)) => n += 1,
                Ok(_) => {}
                Err(mqttbytes::Error::InsufficientBytes(_)) => break,
                Err(e) => {
                    window.close();
                    return Err(format!("publisher: malformed packet: {e:?}"));
                }
            }
        }
        if n > 0 {
            window.add_permits(n);
            acked += n as u64;
        }
        match rx.read_buf(&mut rbuf).await {
            Ok(0) => break Ok(acked),
            Ok(_) => {}
            Err(e) => break Err(format!("publisher: read: {e}")),
        }
    };
    window.close();
    result
}

/// The publisher thread: writes PUBLISHes per `plan` from `start` for warm-up + measure +
/// [`TAIL`].
/// Returns how many it sent, when it stopped and the socket.
fn publisher(
    handle: Handle,
    mut tx: OwnedWriteHalf,
    template: Template,
    plan: Plan,
    start: Instant,
    window: Arc<Semaphore>,
) -> std::thread::JoinHandle<Result<(u64, Instant, OwnedWriteHalf), String>> {
    std::thread::Builder::new()
        .name(format!("{LOADGEN_THREADS}-pub"))
        .spawn(move || {
            let until = start + plan.warmup + plan.measure + TAIL;
            let qos1 = plan.qos == QoS::AtLeastOnce;
            let mut buf = BytesMut::with_capacity(BATCH * (template.bytes.len() + 8));
            let (mut sent, mut pkid) = (0u64, 0u16);
            loop {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                let n = match plan.pace {
                    Some(rate) => {
                        let due = ((now - start).as_secs_f64() * rate) as u64;
                        let n = due.saturating_sub(sent).min(BATCH as u64) as usize;
                        if n == 0 {
                            std::thread::sleep(PACE_SLEEP);
                            continue;
                        }
                        n
                    }
                    None => BATCH,
                };
                if qos1 {
                    let permits = u32::try_from(n).unwrap_or(u32::MAX);
                    handle
                        .block_on(window.acquire_many(permits))
                        .map_err(|_| "publisher: the connection closed".to_owned())?
                        .forget();
                }
                let stamp = nanos(Instant::now());
                for _ in 0..n {
                    pkid = if pkid == u16::MAX { 1 } else { pkid + 1 };
                    template.put(&mut buf, pkid, stamp, sent, plan.run);
                    sent += 1;
                }
                handle
                    .block_on(tx.write_all(&buf))
                    .map_err(|e| format!("publisher: write: {e}"))?;
                buf.clear();
            }
            Ok((sent, Instant::now(), tx))
        })
        .expect("spawn the publisher thread")
}

/// CPU seconds used so far, and when.
#[derive(Clone, Copy, Debug)]
struct CpuSample {
    broker: f64,
    loadgen: f64,
    stolen: f64,
    process: f64,
    /// User and system time of the whole machine.
    machine: f64,
    /// Idle (and I/O wait) time of the whole machine.
    idle: f64,
    at: Instant,
}

impl CpuSample {
    fn take(broker: BrokerCpu) -> Self {
        Self {
            broker: broker.seconds(),
            loadgen: threads_cpu(LOADGEN_THREADS),
            stolen: steal_seconds(),
            process: process_cpu_seconds(),
            machine: machine_seconds(&[1, 2, 3]),
            idle: machine_seconds(&[4, 5]),
            at: Instant::now(),
        }
    }

    /// Cores busy between `self` and `later`.
    fn cores(&self, later: &Self, broker: BrokerCpu) -> Cores {
        let wall = (later.at - self.at).as_secs_f64().max(1e-9);
        let per_s = |a: f64, b: f64| (b - a) / wall;
        let process = per_s(self.process, later.process);
        let broker_cores = per_s(self.broker, later.broker);
        let outside = match broker {
            BrokerCpu::Threads(_) => 0.0,
            BrokerCpu::Process(_) => broker_cores,
        };
        Cores {
            broker: broker_cores,
            loadgen: per_s(self.loadgen, later.loadgen),
            stolen: per_s(self.stolen, later.stolen),
            process,
            others: (per_s(self.machine, later.machine) - process - outside).max(0.0),
            idle: per_s(self.idle, later.idle),
        }
    }
}

/// Cores busy on average over a window.
#[derive(Clone, Copy, Debug, Default)]
struct Cores {
    broker: f64,
    loadgen: f64,
    stolen: f64,
    /// The bench process: the load generator, and Verge's broker when it is the one measured.
    process: f64,
    /// Everything else on the machine (user + system time): other work disturbing the run.
    others: f64,
    /// Idle cores of the machine.
    idle: f64,
}

/// What [`monitor`] saw in the window.
#[derive(Debug, Default)]
struct Watched {
    cores: Cores,
    /// The subscriber's queue in the broker, on average.
    queue_avg: Option<f64>,
    /// Each broker runtime worker's busy share.
    workers: Vec<f64>,
}

/// Samples CPU at the window's ends and the broker's queue every 10 ms in it.
async fn monitor(
    broker: BrokerCpu,
    queue: Option<Arc<Queue>>,
    runtime: Option<Handle>,
    from: Instant,
    until: Instant,
) -> Watched {
    tokio::time::sleep_until(from.into()).await;
    let first = CpuSample::take(broker);
    let busy = runtime.as_ref().map(workers_busy);
    let (mut sum, mut count) = (0u64, 0u64);
    if let Some(queue) = &queue {
        let mut every = tokio::time::interval(Duration::from_millis(10));
        while Instant::now() < until {
            every.tick().await;
            sum += queue.stats().queued;
            count += 1;
        }
    } else {
        tokio::time::sleep_until(until.into()).await;
    }
    let last = CpuSample::take(broker);
    let wall = (last.at - first.at).as_secs_f64().max(1e-9);
    let workers = match (runtime, busy) {
        (Some(runtime), Some(before)) => busy_shares(&before, &workers_busy(&runtime), wall),
        _ => Vec::new(),
    };
    Watched {
        cores: first.cores(&last, broker),
        queue_avg: queue.map(|_| sum as f64 / count.max(1) as f64),
        workers,
    }
}

/// One run against one broker.
#[derive(Debug)]
struct Run {
    sent: u64,
    /// Published per second of the publisher's run.
    sent_rate: f64,
    seen: Seen,
    window: f64,
    /// QoS 1: every PUBLISH acknowledged before the publisher's deadline + 10 s.
    all_acked: bool,
    acked: u64,
    watched: Watched,
}

impl Run {
    fn rate(&self) -> f64 {
        self.seen.in_window as f64 / self.window
    }

    fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.seen.received)
    }
}

fn run_once(lg: &Runtime, side: &Side, plan: Plan) -> Result<Run, String> {
    let template = Template::new(&side.topic, plan.qos);
    let ((sub, sub_rbuf), (publ, pub_rbuf)) = lg.block_on(async {
        let (mut sub, mut rbuf) = connect(side.addr, &side.subscriber).await?;
        subscribe(&mut sub, &mut rbuf, &side.filter, plan.qos).await?;
        let publ = connect(side.addr, &side.publisher).await?;
        Ok::<_, String>(((sub, rbuf), publ))
    })?;
    let shared = Arc::new(Shared {
        sent: AtomicU64::new(u64::MAX),
        done: Notify::new(),
    });
    let start = Instant::now();
    let from = start + plan.warmup;
    let until = from + plan.measure;
    let monitor = lg.spawn(monitor(
        side.cpu,
        side.queue.clone(),
        side.runtime.clone(),
        from,
        until,
    ));
    let seen = lg.spawn(subscriber(sub, sub_rbuf, plan, start, Arc::clone(&shared)));
    let (rx, tx) = publ.into_split();
    let window = Arc::new(Semaphore::new(WINDOW));
    let acks = lg.spawn(puback_reader(rx, pub_rbuf, Arc::clone(&window)));
    let published = publisher(
        lg.handle().clone(),
        tx,
        template,
        plan,
        start,
        Arc::clone(&window),
    )
    .join()
    .expect("publisher thread");
    let (sent, stopped, mut tx) = match published {
        Ok(p) => p,
        Err(e) => {
            shared.sent.store(0, Ordering::Release);
            shared.done.notify_one();
            seen.abort();
            acks.abort();
            monitor.abort();
            return Err(e);
        }
    };
    let all_acked = plan.qos == QoS::AtMostOnce
        || lg.block_on(async {
            let wait = window.acquire_many(WINDOW as u32);
            matches!(
                tokio::time::timeout(Duration::from_secs(10), wait).await,
                Ok(Ok(_))
            )
        });
    shared.sent.store(sent, Ordering::Release);
    shared.done.notify_one();
    let seen = lg.block_on(seen);
    lg.block_on(disconnect(&mut tx));
    drop(tx);
    let seen = seen.map_err(|e| format!("subscriber task: {e}"))??;
    let acked = lg
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), acks).await })
        .map_err(|_| "the broker did not close the publisher's connection".to_owned())?
        .map_err(|e| format!("PUBACK reader task: {e}"))??;
    let watched = lg.block_on(monitor).expect("monitor task");
    Ok(Run {
        sent,
        sent_rate: sent as f64 / (stopped - start).as_secs_f64(),
        seen,
        window: plan.measure.as_secs_f64(),
        all_acked,
        acked,
        watched,
    })
}

/// The MQTT bench's own row fields.
#[derive(Debug, Default)]
struct PerBroker {
    broker: &'static str,
    sent: u64,
    lost: u64,
    duplicates: u64,
    cores: Option<Cores>,
    /// Verge / mosquitto: rates for `-max`, p99s for `-lat`.
    ratio: Option<f64>,
    error: Option<String>,
}

impl Extra for PerBroker {
    fn names(&self) -> Fields {
        vec![("broker", json!(self.broker))]
    }

    fn counts(&self) -> Fields {
        vec![
            ("sent", json!(self.sent)),
            ("lost", json!(self.lost)),
            ("duplicates", json!(self.duplicates)),
        ]
    }

    fn cpu(&self) -> Fields {
        let cores = |f: fn(&Cores) -> f64| json!(self.cores.as_ref().map(|c| round(f(c), 2)));
        vec![
            ("broker_cores", cores(|c| c.broker)),
            ("loadgen_cores", cores(|c| c.loadgen)),
            ("bench_process_cores", cores(|c| c.process)),
            ("other_processes_cores", cores(|c| c.others)),
            ("machine_idle_cores", cores(|c| c.idle)),
            ("cores_stolen", cores(|c| c.stolen)),
        ]
    }

    fn verdicts(&self) -> Fields {
        vec![
            ("verge_vs_mosquitto", json!(self.ratio.map(|r| round(r, 2)))),
            ("error", json!(self.error)),
        ]
    }
}

/// One line of the table (and of the JSON); `messages` are those received in the window.
type Row = report::Row<PerBroker>;

#[derive(Clone, Copy, Debug)]
struct Scenario {
    name: &'static str,
    qos: QoS,
    /// Paced latency run (else flat out).
    latency: bool,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "qos0-max",
        qos: QoS::AtMostOnce,
        latency: false,
    },
    Scenario {
        name: "qos1-max",
        qos: QoS::AtLeastOnce,
        latency: false,
    },
    Scenario {
        name: "qos0-10k-lat",
        qos: QoS::AtMostOnce,
        latency: true,
    },
    Scenario {
        name: "qos1-10k-lat",
        qos: QoS::AtLeastOnce,
        latency: true,
    },
];

fn scenario_row(lg: &Runtime, side: &Side, scenario: Scenario, run_ids: &mut u64) -> Row {
    let pace = fixed_pace().unwrap_or(PACE);
    let plan = |run| Plan {
        qos: scenario.qos,
        pace: scenario.latency.then_some(pace),
        warmup: scaled(0.5),
        measure: scaled(if scenario.latency { 5.0 } else { 2.0 }),
        run,
    };
    let runs = if scenario.latency { 1 } else { RUNS };
    let mut done = Vec::new();
    let mut row = Row {
        scenario: scenario.name.into(),
        unit: "msg/s",
        extra: PerBroker {
            broker: side.broker,
            ..PerBroker::default()
        },
        ..Row::default()
    };
    for _ in 0..runs {
        *run_ids += 1;
        match run_once(lg, side, plan(*run_ids)) {
            Ok(run) => done.push(run),
            Err(e) => {
                eprintln!("{}/{}: {e}", scenario.name, side.broker);
                row.extra.error = Some(e);
            }
        }
    }
    if done.is_empty() {
        row.notes = format!("failed: {}", row.extra.error.clone().unwrap_or_default());
        return row;
    }
    let (mut run, rates) = median(done, Run::rate);
    let qos = match scenario.qos {
        QoS::AtMostOnce => 0,
        _ => 1,
    };
    row.messages = run.seen.in_window;
    row.seconds = run.window;
    row.rate = run.rate();
    row.extra.sent = run.sent;
    row.extra.lost = run.lost();
    row.extra.duplicates = run.seen.duplicates;
    row.latency = Pct::of(&mut run.seen.latencies);
    row.extra.cores = Some(run.watched.cores);
    let verge = side.broker == "verge";
    let lossless = run.lost() == 0 && run.seen.duplicates == 0;
    match (scenario.latency, scenario.qos) {
        (true, _) => {
            row.goal = format!("p99 < {:.0} ms", P99_GOAL_US / 1000.0);
            row.pass = verge.then(|| row.latency.is_some_and(|l| l.p99 < P99_GOAL_US));
        }
        (false, QoS::AtMostOnce) => {
            row.goal = format!(">= {} msg/s", fmt_rate(QOS0_GOAL));
            row.pass = verge.then_some(row.rate >= QOS0_GOAL);
        }
        (false, _) => {
            row.goal = "0 lost".into();
            row.pass = verge.then_some(lossless && run.all_acked);
        }
    }
    if !verge {
        row.goal = "reference".into();
    }
    let mut notes = vec![if scenario.latency {
        format!(
            "1 run; QoS {qos} paced at {}/s, latency of {} msgs sent in the {:.1} s window (p90 {:.0}, p99.9 {:.0} µs)",
            fmt_rate(pace),
            run.seen.latencies.len(),
            run.window,
            row.latency.map_or(f64::NAN, |l| l.p90),
            row.latency.map_or(f64::NAN, |l| l.p999),
        )
    } else {
        format!(
            "median of {} ({rates}); QoS {qos}, batches of {BATCH}{}",
            runs,
            if qos == 1 {
                format!(", window {WINDOW}")
            } else {
                String::new()
            }
        )
    }];
    notes.push(format!(
        "sent {} ({}/s), received {}, lost {}{}{}",
        run.sent,
        fmt_rate(run.sent_rate),
        run.seen.received,
        run.lost(),
        if run.seen.duplicates > 0 {
            format!(", {} duplicates", run.seen.duplicates)
        } else {
            String::new()
        },
        if run.seen.stale > 0 {
            format!(", {} stale", run.seen.stale)
        } else {
            String::new()
        }
    ));
    if qos == 1 {
        notes.push(format!(
            "{} PUBACKs to the publisher{}",
            run.acked,
            if run.all_acked {
                ""
            } else {
                " (NOT all within 10 s)"
            }
        ));
    }
    notes.push(format!(
        "cores: broker {:.2}, load generator {:.2}, bench process {:.2}, machine idle {:.2}",
        run.watched.cores.broker,
        run.watched.cores.loadgen,
        run.watched.cores.process,
        run.watched.cores.idle
    ));
    if !run.watched.workers.is_empty() {
        notes.push(format!(
            "broker workers busy {}",
            percentages(&run.watched.workers)
        ));
    }
    if let Some(q) = run.watched.queue_avg {
        notes.push(format!(
            "sub queue avg {q:.0}/{}",
            QueueLimits::default().max_messages
        ));
    }
    notes.push(format!(
        "sub avg {:.1} msgs/read",
        run.seen.received as f64 / run.seen.reads.max(1) as f64
    ));
    row.notes = notes.join("; ");
    row
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<13} {:<9} {:>9} {:>5} {:>13} {:>8} {:>8} {:>8} {:>9} {:>4} {:<17} {:<4} {:>7}",
        "scenario",
        "broker",
        "messages",
        "secs",
        "rate",
        "lost",
        "p50 µs",
        "p99 µs",
        "max µs",
        "cpu",
        "goal",
        "pass",
        "vs mosq"
    );
    for r in rows {
        println!(
            "{:<13} {:<9} {:>9} {:>5.2} {:>13} {:>8} {:>8} {:>8} {:>9} {:>4} {:<17} {:<4} {:>7}",
            r.scenario,
            r.extra.broker,
            r.messages,
            r.seconds,
            r.rate_cell(),
            r.extra.lost,
            or_dash(r.latency.map(|l| l.p50), 0),
            or_dash(r.latency.map(|l| l.p99), 0),
            or_dash(r.latency.map(|l| l.max), 0),
            or_dash(r.extra.cores.map(|c| c.broker), 2),
            r.goal,
            r.pass_cell(),
            r.extra
                .ratio
                .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}x")),
        );
        let stolen = stolen_note(r.extra.cores.map(|c| c.stolen));
        let others = r
            .extra
            .cores
            .filter(|c| c.others >= 0.1)
            .map_or_else(String::new, |c| {
                format!(
                    " [other processes used {:.2} cores: not a quiet machine]",
                    c.others
                )
            });
        println!("{:<13} {}{stolen}{others}", "", r.notes);
    }
}

fn main() {
    epoch();
    let filter = Filter::from_args();
    let machine = Machine::this();
    let broker_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(BROKER_THREADS)
        .enable_all()
        .build()
        .expect("Verge broker's runtime");
    let loadgen = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(format!("{LOADGEN_THREADS}-rt"))
        .enable_all()
        .build()
        .expect("load generator's runtime");
    let dir = TempDir::new();
    let verge = start_verge(&broker_runtime, &dir.0.join("verge"));
    let (mosquitto_process, mosquitto, mosquitto_version) =
        match start_mosquitto(&dir.0.join("mosquitto")) {
            Ok((process, side)) => {
                let version = Command::new(MOSQUITTO)
                    .arg("-h")
                    .output()
                    .ok()
                    .and_then(|o| {
                        String::from_utf8_lossy(&o.stdout)
                            .lines()
                            .next()
                            .map(str::to_owned)
                    })
                    .unwrap_or_default();
                (Some(process), Some(side), version)
            }
            Err(e) => {
                eprintln!("mosquitto rows skipped: {e}");
                (None, None, String::new())
            }
        };
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let loadavg = loadavg
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    println!(
        "machine: {machine}, load average {loadavg}; Verge broker on a 2-worker tokio runtime, load generator on another 2-worker runtime + a publisher thread; {mosquitto_version}"
    );
    let sides: Vec<&Side> = std::iter::once(&verge).chain(mosquitto.as_ref()).collect();
    let mut rows: Vec<Row> = Vec::new();
    let mut run_ids = 0u64;
    for scenario in SCENARIOS {
        let mut these: Vec<Row> = Vec::new();
        for side in &sides {
            if !filter.matches(&format!("{}/{}", scenario.name, side.broker)) {
                continue;
            }
            let row = scenario_row(&loadgen, side, scenario, &mut run_ids);
            println!(
                "{}/{}: {} msg/s, lost {}, p99 {} µs",
                row.scenario,
                row.extra.broker,
                fmt_rate(row.rate),
                row.extra.lost,
                row.latency.map_or(f64::NAN, |l| l.p99).round()
            );
            these.push(row);
        }
        let mosquitto_row = these
            .iter()
            .find(|r| r.extra.broker == "mosquitto" && r.extra.error.is_none());
        let reference = mosquitto_row.map(|m| {
            if scenario.latency {
                m.latency.map_or(f64::NAN, |l| l.p99)
            } else {
                m.rate
            }
        });
        if let Some(reference) = reference {
            for r in these.iter_mut().filter(|r| r.extra.broker == "verge") {
                let mine = if scenario.latency {
                    r.latency.map_or(f64::NAN, |l| l.p99)
                } else {
                    r.rate
                };
                r.extra.ratio = Some(mine / reference);
            }
        }
        rows.extend(these);
    }
    print_table(&rows);
    let report = json!({
        "machine": machine.json(vec![("load_average_at_start", json!(loadavg))]),
        "mosquitto": mosquitto_version,
        "body_bytes": BODY,
        "qos1_window": WINDOW,
        "scenarios": rows.iter().map(Row::json).collect::<Vec<_>>(),
    });
    write_json("mqtt", &report);
    drop(mosquitto_process);
    drop(loadgen);
    drop(broker_runtime);
}
