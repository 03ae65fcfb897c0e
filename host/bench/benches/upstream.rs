//! A root Verge and its child, both real daemons: `cargo bench -p verge-bench --bench upstream
//! [-- twin|forward]`.
//!
//! Both are `verge run` processes started by the test kit (`verge_tests::daemon::Daemon`: the
//! kit's own build of `verge`, the dev profile: our crates at opt-level 1, dependencies at 3),
//! each on a fresh data directory with the defaults (the durable redb store). The root has
//! MQTT/TLS on a loopback address of its own and plain MQTT on 127.0.0.1; the child's
//! `[upstream]` is the root (`verge_tests::mqtt::child_config`) and it has plain MQTT too. Each
//! scenario starts its own pair and goes on once the child's upstream link is connected and the
//! root has the child's first `$edgeAgent` report.
//!
//! - `twin`: deployment latency through twins. The root runs `verge deploy FILE --device child`
//!   (the CLI); the clock runs from just before the CLI starts until the root's twin
//!   `devices/child/modules/$edgeAgent` reports `lastDesiredStatus.code` 200, `lastDesiredVersion`
//!   equal to the desired `$version`, and exactly the manifest's modules, each `runtimeStatus`
//!   `running`. It also notes when the CLI returned and when the child's own `$edgeAgent` twin
//!   showed the same (the child applied it): the rest is the child's report, which goes up at most
//!   every 2 s, the first change after a quiet spell at once. The modules are the test
//!   guest `misbehave` in `relay` mode (idle without inputs). Deployments alternate between two
//!   manifests, A (`relay`) and B (`relay` with another env, which replaces its instance, and
//!   `extra`): each replaces one module and adds or removes another
//!   (`VERGE_BENCH_UPSTREAM_CHANGE_ENV=0` keeps `relay` as it is). Three kinds, by when they
//!   come: `cold`, the first (the child compiles the component) and `quiet`, n/3 more, each after
//!   2.5 s without a deployment (the child has nothing left to report: its report goes once its
//!   state settles); `busy`, `VERGE_BENCH_UPSTREAM_DEPLOYS` (default 12) more, redeployment k
//!   starting (k-1)/n of 2 s after the previous one was seen at the root, so that they land
//!   evenly over the child's 2 s report period (they wait for it). Both twins are polled every
//!   10 ms with `GET /twins/…` on the daemons' management sockets (what `verge twin show` sends,
//!   without starting a process each
//!   time; both costs are printed). Reported: min / median / p90 / max in ms.
//! - `forward`: throughput child → root. An external module `pub` on the child publishes
//!   `VERGE_BENCH_UPSTREAM_MESSAGES` (default 200 000) QoS 1 messages of 128 bytes over plain MQTT
//!   (mqttbytes, `TCP_NODELAY`, batches of 64, at most 512 unacknowledged: as fast as the child
//!   PUBACKs, which it does after its durable commit). The child routes `FROM /messages/* INTO
//!   $upstream` (deployed from the root), forwards over TLS (1024 in flight, each removed on the
//!   root's PUBACK); the root routes `FROM /messages/* WHERE $connectionDeviceId = 'child' INTO
//!   BrokeredEndpoint("/modules/ext/inputs/in")` to external module `ext`, whose client
//!   subscribes at QoS 1 and PUBACKs each delivery. Reported: the child's ingest rate (first
//!   publish → last PUBACK from the child), the end-to-end rate (first publish → last message at
//!   the root), how far the root lagged when the child had acked everything, losses, duplicates,
//!   order, and the cores each daemon used.
//!
//! The figures go to `target/bench/upstream.json`. SAS tokens come from the kit's Python helper
//! (`tests/setup --clients`).

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{TrySendError, sync_channel};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mqttbytes::QoS;
use mqttbytes::v4::{Connect, ConnectReturnCode, Login, Packet, PubAck, Publish, Subscribe};
use serde_json::{Value, json};
use verge_bench::machine::{Machine, machine_seconds, process_cpu_seconds, stat_cpu};
use verge_bench::report::{fmt_rate, write_json};
use verge_bench::settings::Filter;
use verge_bench::stats::Pct;
use verge_tests::daemon::{Daemon, deployment, wasm_module};
use verge_tests::mqtt::{self, add_identity, child_config};

const API: &str = "api-version=2021-04-12";
const CHILD: &str = "child";
/// The root's copy of the child's `$edgeAgent` twin.
const AGENT_AT_ROOT: &str = "devices/child/modules/$edgeAgent";
const POLL: Duration = Duration::from_millis(10);
/// How often the child reports at most (`REPORT_EVERY` of `verge_mqtt::upstream`): the
/// redeployments' pauses spread over one period.
const PERIOD: Duration = Duration::from_secs(2);
/// How long one deployment may take before the bench gives up.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes in each forwarded message's body (bytes 0..8: its sequence number).
const BODY: usize = 128;
/// QoS 1 PUBLISHes the publisher may have unacknowledged.
const WINDOW: usize = 512;
/// PUBLISHes per write.
const BATCH: usize = 64;
/// The subscriber gives up after this long without a message.
const IDLE: Duration = Duration::from_secs(30);

/// `name` from the environment as a number, else `default`.
fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `verge twin show`'s path encoding of one segment (`$` and `/` escaped).
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A twin (`{"desired", "reported"}`) from `daemon`'s management socket: the request `verge twin
/// show ID` makes, as HTTP/1.0 over `data/mgmt.sock`.
fn twin(daemon: &Daemon, id: &str) -> Result<Value, String> {
    let socket = daemon.data_dir().join("mgmt.sock");
    let mut stream =
        UnixStream::connect(&socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    write!(
        stream,
        "GET /twins/{} HTTP/1.0\r\nHost: verge\r\n\r\n",
        encode(id)
    )
    .map_err(|e| format!("mgmt request: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("mgmt response: {e}"))?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("mgmt response without a body")?;
    let head = String::from_utf8_lossy(&response[..split]);
    if !head.lines().next().is_some_and(|l| l.contains(" 200 ")) {
        return Err(format!("mgmt answered {head}"));
    }
    serde_json::from_slice(&response[split + 4..]).map_err(|e| format!("twin JSON: {e}"))
}

/// Whether `reported` (an `$edgeAgent` twin's) says `version` is applied with exactly `modules`
/// running.
fn applied(reported: &Value, version: &Value, modules: &[&str]) -> bool {
    let running = reported["modules"].as_object().is_some_and(|m| {
        m.len() == modules.len()
            && modules.iter().all(|name| {
                m.get(*name)
                    .is_some_and(|v| v["runtimeStatus"] == "running")
            })
    });
    reported["lastDesiredStatus"]["code"] == 200
        && reported["lastDesiredVersion"] == *version
        && running
}

/// What an `$edgeAgent` report says, in a line: version, status, each module's state.
fn summary(reported: &Value) -> String {
    let modules: Vec<String> = reported["modules"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, m)| format!("{name} {} ({})", m["runtimeStatus"], m["statusDescription"]))
        .collect();
    format!(
        "lastDesiredVersion {}, status {}; modules: {}",
        reported["lastDesiredVersion"],
        reported["lastDesiredStatus"],
        modules.join(", ")
    )
}

/// A root and its child, with their plain MQTT ports.
struct Pair {
    root: Daemon,
    child: Daemon,
    root_plain: u16,
    child_plain: u16,
}

impl Pair {
    /// A root, `prepare`d (identities, routes) before the child starts, then the child, once it
    /// is connected and the root has its first `$edgeAgent` report.
    fn start(tag: &str, prepare: impl FnOnce(&Daemon)) -> Self {
        let ip = mqtt::loopback_ip();
        let root_plain = mqtt::free_port();
        let root = Daemon::start(&format!("{tag}-root"), &mqtt::config(&ip, root_plain), None);
        prepare(&root);
        let child_plain = mqtt::free_port();
        let config = child_config(&root, CHILD)
            .replace("[mqtt]\n", &format!("[mqtt]\nplain_port = {child_plain}\n"));
        let child = Daemon::start(&format!("{tag}-child"), &config, None);
        let started = Instant::now();
        while !(child.log().contains("upstream connected")
            && twin(&root, AGENT_AT_ROOT)
                .is_ok_and(|t| t["reported"]["lastDesiredStatus"]["code"].is_number()))
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the child did not connect and report to the root:\n{}",
                child.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            root,
            child,
            root_plain,
            child_plain,
        }
    }

    /// `verge deploy FILE --device child` on the root, then poll until the child runs it and
    /// the root sees that.
    fn deploy(&self, name: &str, manifest: &Value, modules: &[&str]) -> Deployed {
        let path = self.root.dir().join(format!("{name}.json"));
        std::fs::write(&path, manifest.to_string()).expect("write the manifest");
        let path = path.to_str().expect("a UTF-8 temporary path");
        let start = Instant::now();
        let out = self.root.cli(&["deploy", path, "--device", CHILD]);
        let cli = start.elapsed();
        assert!(out.status.success(), "{}", mqtt::output_text(&out));
        let version = twin(&self.root, AGENT_AT_ROOT).expect("the root's twin of the child")
            ["desired"]["$version"]
            .clone();
        let mut child_applied = None;
        loop {
            if child_applied.is_none()
                && twin(&self.child, "$edgeAgent")
                    .is_ok_and(|t| applied(&t["reported"], &version, modules))
            {
                child_applied = Some(start.elapsed());
            }
            if let Some(child_applied) = child_applied
                && twin(&self.root, AGENT_AT_ROOT)
                    .is_ok_and(|t| applied(&t["reported"], &version, modules))
            {
                return Deployed {
                    cli,
                    child_applied,
                    root_sees: start.elapsed(),
                };
            }
            assert!(
                start.elapsed() < DEPLOY_TIMEOUT,
                "deployment {name} (version {version}) not reported within {DEPLOY_TIMEOUT:?}; \
                 the root has of the child: {}\nchild's log:\n{}",
                twin(&self.root, AGENT_AT_ROOT).map_or_else(|e| e, |t| summary(&t["reported"])),
                self.child.log()
            );
            std::thread::sleep(POLL);
        }
    }
}

/// One deployment's times, from just before the CLI started.
#[derive(Clone, Copy, Debug)]
struct Deployed {
    cli: Duration,
    child_applied: Duration,
    root_sees: Duration,
}

/// Manifest A (even `generation`) or B (odd) and its modules.
fn manifest(generation: usize) -> (Value, Vec<&'static str>) {
    let component = verge_tests::guest("misbehave");
    let change_env = env_or("VERGE_BENCH_UPSTREAM_CHANGE_ENV", 1) == 1;
    let relay = |g: &str| {
        wasm_module(
            &component,
            &[("Mode", json!("relay")), ("Generation", json!(g))],
            json!({}),
        )
    };
    let (modules, names) = if generation.is_multiple_of(2) {
        (json!({ "relay": relay("a") }), vec!["relay"])
    } else {
        (
            json!({ "relay": relay(if change_env { "b" } else { "a" }), "extra": relay("x") }),
            vec!["relay", "extra"],
        )
    };
    let routes = json!({ "up": "FROM /messages/modules/relay/outputs/* INTO $upstream" });
    (deployment(modules, routes, json!({})), names)
}

/// `[min, p50, p90, max]` in ms.
fn spread(samples: &[Duration]) -> [f64; 4] {
    let mut ns: Vec<u64> = samples.iter().map(|d| d.as_nanos() as u64).collect();
    let min = ns.iter().min().map_or(f64::NAN, |v| *v as f64 / 1e6);
    Pct::of(&mut ns).map_or([f64::NAN; 4], |p| {
        [min, p.p50 / 1e3, p.p90 / 1e3, p.max / 1e3]
    })
}

/// The median of `f` timed `n` times, in ms.
fn median_ms(n: usize, mut f: impl FnMut()) -> f64 {
    let times: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    spread(&times)[1]
}

fn twin_scenario() -> Value {
    let deploys = env_or("VERGE_BENCH_UPSTREAM_DEPLOYS", 12) as usize;
    let pair = Pair::start("up-twin", |_| {});
    // Nothing reported for a while: the child's next report goes as soon as it settles.
    let quiet = || std::thread::sleep(PERIOD + Duration::from_millis(500));
    quiet();
    let (cold_manifest, cold_modules) = manifest(0);
    let cold = pair.deploy("cold", &cold_manifest, &cold_modules);
    let after_quiet: Vec<Deployed> = (1..=deploys.div_ceil(3))
        .map(|g| {
            quiet();
            let (m, modules) = manifest(g);
            pair.deploy(&format!("quiet-{g}"), &m, &modules)
        })
        .collect();
    let again: Vec<Deployed> = (1..=deploys)
        .map(|g| {
            std::thread::sleep(PERIOD.mul_f64((g - 1) as f64 / deploys as f64));
            let (m, modules) = manifest(g);
            pair.deploy(&format!("deploy-{g}"), &m, &modules)
        })
        .collect();
    let mgmt_ms = median_ms(20, || {
        twin(&pair.root, AGENT_AT_ROOT).expect("the root's twin of the child");
    });
    let cli_ms = median_ms(5, || {
        pair.root.twin(AGENT_AT_ROOT);
    });

    println!(
        "twin deployment: root `verge deploy --device child` → the root's twin of the child reports it applied, modules running (ms)"
    );
    println!(
        "{:<34} {:>3} {:>8} {:>8} {:>8} {:>8}",
        "deployments  until", "n", "min", "p50", "p90", "max"
    );
    let mut rows = Vec::new();
    for (what, runs) in [
        ("cold", vec![cold]),
        ("quiet", after_quiet),
        ("busy", again),
    ] {
        let times = |f: fn(&Deployed) -> Duration| runs.iter().map(f).collect::<Vec<_>>();
        for (part, times) in [
            ("the root sees it", times(|d| d.root_sees)),
            ("the child applied it", times(|d| d.child_applied)),
            ("the CLI returned", times(|d| d.cli)),
        ] {
            let [min, p50, p90, max] = spread(&times);
            println!(
                "{what:<9} {part:<24} {:>3} {min:>8.0} {p50:>8.0} {p90:>8.0} {max:>8.0}",
                times.len()
            );
            rows.push(json!({
                "deployments": what, "until": part, "n": times.len(),
                "min_ms": min.round(), "p50_ms": p50.round(), "p90_ms": p90.round(), "max_ms": max.round(),
            }));
        }
    }
    println!(
        "  polling: one GET of a twin on the management socket {mgmt_ms:.2} ms, `verge twin show` {cli_ms:.1} ms (median); polled every {} ms",
        POLL.as_millis()
    );
    json!({
        "scenario": "twin-deploy",
        "redeployments": deploys,
        "poll_ms": POLL.as_millis() as u64,
        "mgmt_get_ms": mgmt_ms,
        "cli_twin_show_ms": cli_ms,
        "rows": rows,
    })
}

/// `HostName` of a connection string.
fn host_name(connection_string: &str) -> &str {
    connection_string
        .split(';')
        .find_map(|kv| kv.strip_prefix("HostName="))
        .expect("a HostName in the connection string")
}

/// A connected MQTT client (CONNACK accepted) and what it read past the CONNACK.
fn connect(
    port: u16,
    client_id: &str,
    connection_string: &str,
    username: &str,
) -> (TcpStream, BytesMut) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the broker");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("a read timeout");
    let mut connect = Connect::new(client_id);
    connect.keep_alive = 60;
    connect.login = Some(Login::new(username, &mqtt::token(connection_string, 3600)));
    let mut out = BytesMut::new();
    connect.write(&mut out).expect("encode CONNECT");
    stream.write_all(&out).expect("send CONNECT");
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while packets.is_empty() {
        assert!(Instant::now() < deadline, "no CONNACK for {client_id}");
        read_packets(&mut stream, &mut buf, &mut packets).expect("read CONNACK");
    }
    match packets.first() {
        Some(Packet::ConnAck(ack)) if ack.code == ConnectReturnCode::Success => (stream, buf),
        other => panic!("{client_id} not accepted: {other:?}"),
    }
}

/// Read once (up to the read timeout) and parse every complete packet into `packets`; an error
/// when the connection is gone or sends garbage.
fn read_packets(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    packets: &mut Vec<Packet>,
) -> Result<(), String> {
    let mut chunk = [0u8; 65536];
    match stream.read(&mut chunk) {
        Ok(0) => return Err("the broker closed the connection".into()),
        Ok(n) => buf.extend_from_slice(&chunk[..n]),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        Err(e) => return Err(format!("read: {e}")),
    }
    loop {
        match mqttbytes::v4::read(buf, 1 << 20) {
            Ok(p) => packets.push(p),
            Err(mqttbytes::Error::InsufficientBytes(_)) => return Ok(()),
            Err(e) => return Err(format!("malformed packet: {e:?}")),
        }
    }
}

/// What the root's subscriber saw.
#[derive(Debug, Default)]
struct Received {
    distinct: u64,
    duplicates: u64,
    /// Messages with a lower sequence number than one before them.
    reordered: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// Receive and PUBACK until all `n` came or nothing came for [`IDLE`]; `count` follows the
/// distinct messages received.
fn receive(mut stream: TcpStream, mut buf: BytesMut, n: u64, count: &AtomicU64) -> Received {
    let mut seen = vec![false; n as usize];
    let mut got = Received::default();
    let mut highest = None;
    let mut packets = Vec::new();
    let mut out = BytesMut::new();
    let mut heard = Instant::now();
    while got.distinct < n && heard.elapsed() < IDLE {
        if let Err(e) = read_packets(&mut stream, &mut buf, &mut packets) {
            eprintln!("the root's subscriber: {e}");
            break;
        }
        for packet in packets.drain(..) {
            let Packet::Publish(p) = packet else { continue };
            heard = Instant::now();
            got.first.get_or_insert(heard);
            got.last = Some(heard);
            let seq = p
                .payload
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .filter(|s| *s < n);
            if let Some(seq) = seq {
                if std::mem::replace(&mut seen[seq as usize], true) {
                    got.duplicates += 1;
                } else {
                    got.distinct += 1;
                }
                if highest.is_some_and(|h| seq < h) {
                    got.reordered += 1;
                }
                highest = highest.max(Some(seq));
            }
            PubAck::new(p.pkid).write(&mut out).expect("encode PUBACK");
        }
        count.store(got.distinct, Ordering::Relaxed);
        if !out.is_empty() {
            if let Err(e) = stream.write_all(&out) {
                eprintln!("the root's subscriber: {e}");
                break;
            }
            out.clear();
        }
    }
    got
}

/// Publish `n` numbered QoS 1 messages on `topic`, at most [`WINDOW`] unacknowledged; when the
/// last PUBACK came, and how many the root had then (from `at_root`).
fn publish(
    stream: TcpStream,
    mut buf: BytesMut,
    n: u64,
    topic: &str,
    at_root: Arc<AtomicU64>,
) -> (Instant, u64) {
    let (slots, freed) = sync_channel::<()>(WINDOW);
    let mut reader = stream.try_clone().expect("clone the publisher's socket");
    let acks = std::thread::spawn(move || {
        let mut acked = 0u64;
        let mut packets = Vec::new();
        let mut heard = Instant::now();
        while acked < n {
            read_packets(&mut reader, &mut buf, &mut packets).expect("the child's PUBACKs");
            for packet in packets.drain(..) {
                if let Packet::PubAck(_) = packet {
                    heard = Instant::now();
                    acked += 1;
                    let _ = freed.recv();
                }
            }
            assert!(
                heard.elapsed() < IDLE,
                "no PUBACK from the child for {IDLE:?} ({acked} of {n})"
            );
        }
        (Instant::now(), at_root.load(Ordering::Relaxed))
    });
    let mut stream = stream;
    let mut out = BytesMut::with_capacity(BATCH * (BODY + 64));
    let mut body = vec![b'x'; BODY];
    let mut batched = 0;
    for seq in 0..n {
        match slots.try_send(()) {
            Ok(()) => {}
            Err(TrySendError::Full(())) => {
                stream.write_all(&out).expect("publish to the child");
                out.clear();
                batched = 0;
                slots.send(()).expect("the PUBACK reader is gone");
            }
            Err(TrySendError::Disconnected(())) => panic!("the PUBACK reader is gone"),
        }
        body[..8].copy_from_slice(&seq.to_le_bytes());
        let mut p = Publish::new(topic, QoS::AtLeastOnce, body.clone());
        p.pkid = (seq % 65_535) as u16 + 1;
        p.write(&mut out).expect("encode PUBLISH");
        batched += 1;
        if batched == BATCH {
            stream.write_all(&out).expect("publish to the child");
            out.clear();
            batched = 0;
        }
    }
    stream.write_all(&out).expect("publish to the child");
    acks.join().expect("the PUBACK reader")
}

/// The process `verge run -d DATA` of `daemon`.
fn pid_of(daemon: &Daemon) -> Option<u32> {
    let data = daemon.data_dir();
    let data = data.to_str()?;
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: BTreeSet<&[u8]> = cmdline.split(|b| *b == 0).collect();
            (args.contains(&b"run"[..]) && args.contains(data.as_bytes())).then_some(pid)
        })
}

/// CPU seconds of process `pid` so far.
fn cpu_of(pid: Option<u32>) -> f64 {
    pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .map_or(0.0, |s| stat_cpu(&s))
}

fn forward_scenario() -> Value {
    let n = env_or("VERGE_BENCH_UPSTREAM_MESSAGES", 200_000);
    let mut ext_cs = String::new();
    let pair = Pair::start("up-fwd", |root| {
        // Registered before its route, so that nothing routed to it waits for an identity.
        ext_cs = add_identity(root, "module", "ext");
        let routes = json!({ "fromChild": "FROM /messages/* WHERE $connectionDeviceId = 'child' INTO BrokeredEndpoint(\"/modules/ext/inputs/in\")" });
        let out = root.deploy("root.json", &deployment(json!({}), routes, json!({})));
        assert!(out.status.success(), "{}", mqtt::output_text(&out));
    });
    let up = deployment(
        json!({}),
        json!({ "up": "FROM /messages/* INTO $upstream" }),
        json!({}),
    );
    pair.deploy("up", &up, &[]);
    let pub_cs = add_identity(&pair.child, "module", "pub");

    let (mut sub, mut sub_buf) = connect(
        pair.root_plain,
        "edge/ext",
        &ext_cs,
        &format!("{}/edge/ext/?{API}", host_name(&ext_cs)),
    );
    let mut subscribe = BytesMut::new();
    Subscribe::new("devices/edge/modules/ext/inputs/#", QoS::AtLeastOnce)
        .write(&mut subscribe)
        .expect("encode SUBSCRIBE");
    sub.write_all(&subscribe).expect("subscribe at the root");
    let mut packets = Vec::new();
    while !packets.iter().any(|p| matches!(p, Packet::SubAck(_))) {
        read_packets(&mut sub, &mut sub_buf, &mut packets).expect("SUBACK");
    }
    let (publ, pub_buf) = connect(
        pair.child_plain,
        "child/pub",
        &pub_cs,
        &format!("{}/child/pub/?{API}", host_name(&pub_cs)),
    );

    let (root_pid, child_pid) = (pid_of(&pair.root), pid_of(&pair.child));
    let cpu_before = [
        cpu_of(root_pid),
        cpu_of(child_pid),
        process_cpu_seconds(),
        machine_seconds(&[4]),
    ];
    let at_root = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let receiver = {
        let at_root = Arc::clone(&at_root);
        std::thread::spawn(move || receive(sub, sub_buf, n, &at_root))
    };
    let (ingested, at_root_then) = publish(
        publ,
        pub_buf,
        n,
        "devices/child/modules/pub/messages/events/",
        Arc::clone(&at_root),
    );
    let got = receiver.join().expect("the root's subscriber");
    let wall = start.elapsed().as_secs_f64();
    let cpu_after = [
        cpu_of(root_pid),
        cpu_of(child_pid),
        process_cpu_seconds(),
        machine_seconds(&[4]),
    ];
    let cores: Vec<f64> = cpu_after
        .iter()
        .zip(cpu_before)
        .map(|(a, b)| (a - b) / wall)
        .collect();

    let ingest_s = (ingested - start).as_secs_f64();
    let e2e_s = got.last.map_or(f64::NAN, |l| (l - start).as_secs_f64());
    let first_ms = got
        .first
        .map_or(f64::NAN, |f| (f - start).as_secs_f64() * 1e3);
    let lost = n - got.distinct;
    let lag = n - at_root_then;
    println!(
        "forwarding: {n} QoS 1 messages of {BODY} B, publisher on the child (window {WINDOW}) → $upstream (TLS) → root → subscriber ext"
    );
    println!(
        "  ingest at the child  {:>8} msg/s  ({n} PUBACKed in {ingest_s:.2} s)",
        fmt_rate(n as f64 / ingest_s)
    );
    println!(
        "  end to end           {:>8} msg/s  ({} at the root in {e2e_s:.2} s; first after {first_ms:.0} ms)",
        fmt_rate(got.distinct as f64 / e2e_s),
        got.distinct
    );
    println!(
        "  when the child had acked all: {lag} not yet at the root; lost {lost}, duplicates {}, out of order {}",
        got.duplicates, got.reordered
    );
    println!(
        "  cores over the run: root {:.2}, child {:.2}, bench (clients) {:.2}, machine idle {:.2}",
        cores[0], cores[1], cores[2], cores[3]
    );
    json!({
        "scenario": "upstream-forward",
        "messages": n,
        "body_bytes": BODY,
        "publisher_window": WINDOW,
        "ingest_rate": (n as f64 / ingest_s).round(),
        "ingest_seconds": ingest_s,
        "end_to_end_rate": (got.distinct as f64 / e2e_s).round(),
        "end_to_end_seconds": e2e_s,
        "first_at_root_ms": first_ms,
        "not_at_root_when_ingest_done": lag,
        "lost": lost,
        "duplicates": got.duplicates,
        "out_of_order": got.reordered,
        "cores": { "root": cores[0], "child": cores[1], "bench": cores[2], "machine_idle": cores[3] },
    })
}

fn main() {
    let filter = Filter::from_args();
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let loadavg: Vec<&str> = loadavg.split_whitespace().take(3).collect();
    let machine = Machine::this();
    println!(
        "machine: {machine}, load average {}; root and child `verge run` (the test kit's dev-profile build), durable stores, loopback",
        loadavg.join(" ")
    );
    let mut scenarios = Vec::new();
    if filter.matches("twin") {
        scenarios.push(twin_scenario());
    }
    if filter.matches("forward") {
        scenarios.push(forward_scenario());
    }
    write_json(
        "upstream",
        &json!({
            "machine": machine.json(vec![("load_average_at_start", json!(loadavg.join(" ")))]),
            "daemon": "verge_tests::daemon::verge_bin (dev profile)",
            "scenarios": scenarios,
        }),
    );
}
