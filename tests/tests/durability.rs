//! Store-and-forward under crashes: the daemon killed with SIGKILL mid-stream and started again.
//! Nothing acknowledged is lost, nothing is processed twice by a wasm module, duplicates to MQTT
//! subscribers stay within the last commit window, and a damaged store stops the daemon with a
//! clear error instead of an empty start.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mqttbytes::QoS;
use mqttbytes::v4::{Connect, Login, Packet, PubAck, Publish, Subscribe};
use serde_json::{Value, json};
use verge_tests::daemon::{Daemon, deployment, verge_bin, wasm_module};
use verge_tests::guest;
use verge_tests::mqtt::{self, add_identity, child_config};

const API: &str = "api-version=2021-04-12";
const EXT_INPUTS: &str = "devices/edge/modules/ext/inputs/#";

/// A raw MQTT connection whose every read or write may fail (the daemon gets killed under it).
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    fn open(port: u16, client_id: &str, username: &str, password: &str) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut conn = Self {
            stream,
            buf: BytesMut::new(),
        };
        let mut connect = Connect::new(client_id);
        connect.login = Some(Login::new(username, password));
        connect.keep_alive = 60;
        let mut out = BytesMut::new();
        connect.write(&mut out).unwrap();
        conn.stream.write_all(&out).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match conn.read() {
                Some(Some(Packet::ConnAck(_))) => return conn,
                Some(_) if Instant::now() < deadline => {}
                other => panic!("no CONNACK: {other:?}"),
            }
        }
    }

    /// `None`: the connection is gone; `Some(None)`: nothing within the read timeout.
    fn read(&mut self) -> Option<Option<Packet>> {
        loop {
            match mqttbytes::v4::read(&mut self.buf, 1 << 20) {
                Ok(p) => return Some(Some(p)),
                Err(mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(_) => return None,
            }
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Some(None);
                }
                Err(_) => return None,
            }
        }
    }

    fn write(&mut self, write: impl FnOnce(&mut BytesMut)) -> bool {
        let mut out = BytesMut::new();
        write(&mut out);
        self.stream.write_all(&out).is_ok()
    }

    fn subscribe(&mut self, filter: &str) {
        assert!(self.write(|o| {
            Subscribe::new(filter, QoS::AtLeastOnce).write(o).unwrap();
        }));
    }
}

/// What a subscriber saw: each message's properties, when it came.
#[derive(Default)]
struct Seen {
    messages: Vec<(Instant, HashMap<String, String>, Vec<u8>)>,
}

/// Receive and PUBACK everything until the connection goes, `stop` is set, or (with `idle`)
/// nothing came for that long.
fn subscribe_until(mut conn: Conn, seen: &Mutex<Seen>, stop: &AtomicBool, idle: Option<Duration>) {
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match conn.read() {
            None => return,
            Some(None) => {
                if idle.is_some_and(|idle| last.elapsed() > idle) {
                    return;
                }
            }
            Some(Some(Packet::Publish(p))) => {
                last = Instant::now();
                let props = properties(&p.topic);
                seen.lock()
                    .unwrap()
                    .messages
                    .push((last, props, p.payload.to_vec()));
                if !conn.write(|o| {
                    PubAck::new(p.pkid).write(o).unwrap();
                }) {
                    return;
                }
            }
            Some(Some(_)) => {}
        }
    }
}

/// The property bag at the end of an inputs topic.
fn properties(topic: &str) -> HashMap<String, String> {
    let bag = topic
        .strip_prefix("devices/edge/modules/ext/inputs/in/")
        .unwrap_or("");
    bag.split('&')
        .filter_map(|kv| kv.split_once('='))
        // Keys and values here are plain but for the `$` of system properties.
        .map(|(k, v)| (k.replace("%24", "$"), v.to_owned()))
        .collect()
}

fn deploy_routes(daemon: &Daemon, modules: Value, routes: Value) {
    let manifest = deployment(modules, routes, json!({}));
    let out = daemon.deploy("crash", &manifest);
    assert!(out.status.success(), "{}", mqtt::output_text(&out));
}

struct Ext {
    port: u16,
    user: String,
    key: String,
}

impl Ext {
    /// Register external module `ext` on `daemon` (device `edge` on `ip`, plain MQTT on `port`).
    fn register(daemon: &Daemon, ip: &str, port: u16) -> Self {
        Self {
            port,
            user: format!("{ip}/edge/ext/?{API}"),
            key: add_identity(daemon, "module", "ext"),
        }
    }

    fn connect(&self) -> Conn {
        let mut conn = Conn::open(
            self.port,
            "edge/ext",
            &self.user,
            &mqtt::token(&self.key, 600),
        );
        conn.subscribe(EXT_INPUTS);
        conn
    }
}

#[test]
fn every_acknowledged_message_is_delivered_after_kill_9_at_several_points() {
    let ip = mqtt::loopback_ip();
    let plain = mqtt::free_port();
    let mut daemon = Daemon::start("crash-mqtt", &mqtt::config(&ip, plain), None);
    deploy_routes(
        &daemon,
        json!({}),
        json!({ "toExt": "FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) INTO BrokeredEndpoint(\"/modules/ext/inputs/in\")" }),
    );
    let leaf = add_identity(&daemon, "device", "leaf1");
    let ext = Ext::register(&daemon, &ip, plain);
    let leaf_user = format!("{ip}/leaf1/?{API}");

    for (round, kill_after) in [150u64, 700, 1500].into_iter().enumerate() {
        let base = (round as u64 + 1) * 1_000_000;
        let acked = Arc::new(Mutex::new(HashSet::new()));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));

        let subscriber = {
            let conn = ext.connect();
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            std::thread::spawn(move || subscribe_until(conn, &seen, &stop, None))
        };
        // The publisher: numbered QoS 1 messages, up to 200 unacknowledged, PUBACKs read on a
        // second thread.
        let publisher = {
            let mut conn = Conn::open(plain, "leaf1", &leaf_user, &mqtt::token(&leaf, 600));
            let mut reader = Conn {
                stream: conn.stream.try_clone().unwrap(),
                buf: BytesMut::new(),
            };
            let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
            let pending = Arc::new(Mutex::new(BTreeMap::new()));
            let acks = Arc::new(AtomicU64::new(0));
            let gone = Arc::new(AtomicBool::new(false));
            let reading = {
                let gone = Arc::clone(&gone);
                let (pending, acks, acked, stop) = (
                    Arc::clone(&pending),
                    Arc::clone(&acks),
                    Arc::clone(&acked),
                    Arc::clone(&stop),
                );
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match reader.read() {
                            None => {
                                gone.store(true, Ordering::Relaxed);
                                return;
                            }
                            Some(Some(Packet::PubAck(ack))) => {
                                if let Some(n) = pending.lock().unwrap().remove(&ack.pkid) {
                                    acked.lock().unwrap().insert(n);
                                    acks.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Some(_) => {}
                        }
                    }
                })
            };
            std::thread::spawn(move || {
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) && !gone.load(Ordering::Relaxed) {
                    if sent - acks.load(Ordering::Relaxed) >= 200 {
                        std::thread::sleep(Duration::from_micros(200));
                        continue;
                    }
                    let n = base + sent;
                    let pkid = (sent % 60_000) as u16 + 1;
                    pending.lock().unwrap().insert(pkid, n);
                    let topic = format!("devices/leaf1/messages/events/n={n}");
                    let mut publish = Publish::new(topic, QoS::AtLeastOnce, format!("{n:064}"));
                    publish.pkid = pkid;
                    if !conn.write(|o| {
                        publish.write(o).unwrap();
                    }) {
                        break;
                    }
                    sent += 1;
                }
                let _ = reading.join();
                sent
            })
        };

        std::thread::sleep(Duration::from_millis(kill_after));
        let killed = Instant::now();
        daemon.kill();
        let sent = publisher.join().unwrap();
        subscriber.join().unwrap();
        let before = seen.lock().unwrap().messages.len();

        daemon.start_again();
        let stop_after = Arc::new(AtomicBool::new(false));
        subscribe_until(
            ext.connect(),
            &seen,
            &stop_after,
            Some(Duration::from_secs(2)),
        );

        let seen = seen.lock().unwrap();
        let number = |props: &HashMap<String, String>| -> u64 { props["n"].parse().unwrap() };
        let mut count: HashMap<u64, usize> = HashMap::new();
        for (_, props, _) in &seen.messages {
            *count.entry(number(props)).or_default() += 1;
        }
        let acked = acked.lock().unwrap();
        let missing: Vec<&u64> = acked.iter().filter(|n| !count.contains_key(n)).collect();
        assert!(
            missing.is_empty(),
            "round {round}: {} acknowledged messages lost, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        // A duplicate is a message the subscriber acked before the kill whose removal had not
        // committed yet: only the last commit window before the kill.
        let window: HashSet<u64> = seen.messages[..before]
            .iter()
            .filter(|(at, _, _)| killed.duration_since(*at) < Duration::from_millis(500))
            .map(|(_, props, _)| number(props))
            .collect();
        let duplicates: Vec<u64> = count
            .iter()
            .filter(|(_, c)| **c > 1)
            .map(|(n, _)| *n)
            .collect();
        assert!(
            duplicates.iter().all(|n| window.contains(n)),
            "round {round}: duplicates from outside the last commit window"
        );
        // After the restart the rest comes in the order it was published.
        let after: Vec<u64> = seen.messages[before..]
            .iter()
            .map(|(_, p, _)| number(p))
            .collect();
        assert!(
            after.windows(2).all(|w| w[0] < w[1]),
            "round {round}: out of order"
        );
        assert!(
            acked.len() > 50,
            "round {round}: too little traffic to mean anything"
        );
        eprintln!(
            "round {round}: killed after {kill_after} ms; sent {sent}, acknowledged {}, delivered \
             before the kill {before}, after {}, duplicates {}",
            acked.len(),
            after.len(),
            duplicates.len()
        );
    }
}

#[test]
fn a_wasm_chain_killed_mid_stream_processes_no_input_twice_and_loses_no_output() {
    let ip = mqtt::loopback_ip();
    let plain = mqtt::free_port();
    let mut daemon = Daemon::start("crash-chain", &mqtt::config(&ip, plain), None);
    let misbehave = guest("misbehave");
    let modules = json!({
        "source": wasm_module(&misbehave, &[("Mode", json!("source")), ("Tag", json!("1")),
            ("Burst", json!("20")), ("TickMs", json!("5")), ("Size", json!("32"))], json!({})),
        "relay": wasm_module(&misbehave, &[("Mode", json!("relay")), ("Tag", json!("1"))], json!({})),
    });
    let routes = json!({
        "toRelay": "FROM /messages/modules/source/outputs/* INTO BrokeredEndpoint(\"/modules/relay/inputs/in\")",
        "toExt": "FROM /messages/modules/relay/outputs/* INTO BrokeredEndpoint(\"/modules/ext/inputs/in\")",
    });
    // Registered before the deployment, so that nothing routed to it waits for an identity.
    let ext = Ext::register(&daemon, &ip, plain);
    deploy_routes(&daemon, modules, routes);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let subscriber = {
        let conn = ext.connect();
        let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
        std::thread::spawn(move || subscribe_until(conn, &seen, &stop, None))
    };
    std::thread::sleep(Duration::from_millis(1500));
    daemon.kill();
    subscriber.join().unwrap();
    let before = seen.lock().unwrap().messages.len();
    daemon.start_again();
    // The new source run goes on producing; collect for a while, then stop the daemon and take
    // what is left.
    {
        let stop = Arc::new(AtomicBool::new(false));
        let conn = ext.connect();
        let collector = {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            std::thread::spawn(move || subscribe_until(conn, &seen, &stop, None))
        };
        std::thread::sleep(Duration::from_millis(1500));
        daemon.stop();
        collector.join().unwrap();
    }

    let seen = seen.lock().unwrap();
    // run → n → the processings (proc tags) seen for it
    let mut runs: BTreeMap<String, BTreeMap<u64, HashSet<String>>> = BTreeMap::new();
    let mut deliveries = 0;
    for (_, props, _) in &seen.messages {
        let n: u64 = props["n"].parse().unwrap();
        runs.entry(props["run"].clone())
            .or_default()
            .entry(n)
            .or_default()
            .insert(props["proc"].clone());
        deliveries += 1;
    }
    assert!(
        runs.len() >= 2,
        "no source run before and after the kill: {runs:?}"
    );
    for (run, numbers) in &runs {
        let twice: Vec<&u64> = numbers
            .iter()
            .filter(|(_, procs)| procs.len() > 1)
            .map(|(n, _)| n)
            .collect();
        assert!(
            twice.is_empty(),
            "run {run}: inputs processed twice: {twice:?}"
        );
        // The source's durable outputs are a prefix of what it sent; every one of them reached
        // the end of the chain.
        let max = *numbers.keys().last().unwrap();
        assert_eq!(
            numbers.len() as u64,
            max,
            "run {run}: outputs lost (got {} of 1..={max})",
            numbers.len()
        );
    }
    let distinct: usize = runs.values().map(BTreeMap::len).sum();
    eprintln!(
        "chain: {} runs, {distinct} messages, {deliveries} deliveries ({} before the kill)",
        runs.len(),
        before
    );
}

#[test]
fn a_damaged_store_stops_the_daemon_with_the_recovery_in_the_error() {
    let mut daemon = Daemon::start("damaged-store", verge_tests::daemon::TEST_CONFIG, None);
    let data = daemon.data_dir();
    daemon.stop();
    let store = data.join("messages.redb");
    let len = std::fs::metadata(&store).unwrap().len();
    let mut bytes = std::fs::read(&store).unwrap();
    // Keep redb's header, scramble everything behind it.
    for (i, b) in bytes.iter_mut().enumerate().skip(512) {
        *b = (i as u8).wrapping_mul(31) ^ 0x5a;
    }
    std::fs::write(&store, &bytes).unwrap();
    let out = Command::new(verge_bin())
        .arg("run")
        .arg("-d")
        .arg(&data)
        .arg("-c")
        .arg(daemon.dir().join("verge.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started on a damaged store:\n{stderr}"
    );
    assert!(stderr.contains("messages.redb"), "{stderr}");
    assert!(
        stderr.contains("damaged") && stderr.contains("mv "),
        "{stderr}"
    );
    assert_eq!(
        std::fs::metadata(&store).unwrap().len(),
        len,
        "the damaged file was changed"
    );
    // The documented recovery: move it aside and start with an empty store.
    std::fs::rename(&store, data.join("messages.redb.damaged")).unwrap();
    daemon.start_again();
    assert!(data.join("messages.redb").exists());
}

/// `GET /metrics` on `ip`:9600.
fn metrics(ip: &str) -> String {
    let mut stream = TcpStream::connect((ip, 9600)).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

/// The value of the sample `name{labels}` (exactly as written).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn metrics_count_queues_by_priority_expiry_no_route_and_store_commits() {
    let ip = mqtt::loopback_ip();
    let plain = mqtt::free_port();
    let daemon = Daemon::start("metrics", &mqtt::config(&ip, plain), None);
    let manifest = deployment(
        json!({}),
        json!({
            "urgent": { "route": "FROM /messages/* WHERE kind = 'urgent' INTO BrokeredEndpoint(\"/modules/ext/inputs/in\")", "priority": 2, "timeToLiveSecs": 1 },
            "normal": "FROM /messages/* WHERE kind = 'normal' INTO BrokeredEndpoint(\"/modules/ext/inputs/in\")",
        }),
        json!({}),
    );
    assert!(daemon.deploy("metrics", &manifest).status.success());
    let leaf = add_identity(&daemon, "device", "leaf1");
    let ext = Ext::register(&daemon, &ip, plain);
    let mut conn = Conn::open(
        plain,
        "leaf1",
        &format!("{ip}/leaf1/?{API}"),
        &mqtt::token(&leaf, 600),
    );
    for (i, kind) in ["urgent", "urgent", "urgent", "normal", "normal", "other"]
        .iter()
        .enumerate()
    {
        let mut p = Publish::new(
            format!("devices/leaf1/messages/events/kind={kind}"),
            QoS::AtLeastOnce,
            "{}",
        );
        p.pkid = i as u16 + 1;
        assert!(conn.write(|o| {
            p.write(o).unwrap();
        }));
    }
    let mut acks = 0;
    while acks < 6 {
        if let Some(Some(Packet::PubAck(_))) = conn.read() {
            acks += 1;
        }
    }
    let text = metrics(&ip);
    assert_eq!(sample(&text, "edgehub_messages_received_total"), 6.0);
    assert_eq!(
        sample(&text, "edgehub_messages_dropped_total{reason=\"no_route\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "edgehub_queue_length{endpoint=\"modules/ext\",priority=\"2\"}"
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            "edgehub_queue_length{endpoint=\"modules/ext\",priority=\"2000000000\"}"
        ),
        2.0
    );
    assert!(sample(&text, "verge_store_commit_duration_seconds_count") >= 1.0);
    assert!(sample(&text, "verge_store_file_bytes") > 0.0);
    assert!(text.contains("# TYPE verge_store_commit_duration_seconds histogram"));

    // The urgent ones expire before anyone takes them; the subscriber gets the other two.
    std::thread::sleep(Duration::from_millis(1200));
    let seen = Mutex::new(Seen::default());
    subscribe_until(
        ext.connect(),
        &seen,
        &AtomicBool::new(false),
        Some(Duration::from_millis(700)),
    );
    assert_eq!(seen.lock().unwrap().messages.len(), 2);
    let text = metrics(&ip);
    assert_eq!(
        sample(
            &text,
            "edgehub_messages_dropped_total{reason=\"ttl_expiry\"}"
        ),
        3.0
    );
    assert_eq!(
        sample(&text, "edgehub_messages_sent_total{to=\"modules/ext\"}"),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            "edgehub_queue_length{endpoint=\"modules/ext\",priority=\"2\"}"
        ),
        0.0
    );
    assert_eq!(
        sample(
            &text,
            "edgehub_message_process_duration_seconds_count{to=\"modules/ext\"}"
        ),
        2.0
    );
}

#[test]
fn a_full_store_refuses_a_publisher_without_puback_and_keeps_what_it_accepted() {
    let ip = mqtt::loopback_ip();
    let plain = mqtt::free_port();
    let config =
        mqtt::config(&ip, plain).replace("[metrics]", "[store]\nmax_size_mb = 1\n[metrics]");
    let daemon = Daemon::start("store-full", &config, None);
    deploy_routes(
        &daemon,
        json!({}),
        json!({ "toExt": "FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) INTO BrokeredEndpoint(\"/modules/ext/inputs/in\")" }),
    );
    let leaf = add_identity(&daemon, "device", "leaf1");
    let ext = Ext::register(&daemon, &ip, plain);
    // 64 KiB messages, one at a time, until one gets no PUBACK.
    let mut conn = Conn::open(
        plain,
        "leaf1",
        &format!("{ip}/leaf1/?{API}"),
        &mqtt::token(&leaf, 600),
    );
    let body = "x".repeat(64 * 1024);
    let mut acked = 0u16;
    let closed = loop {
        let mut p = Publish::new(
            format!("devices/leaf1/messages/events/n={acked}"),
            QoS::AtLeastOnce,
            body.clone(),
        );
        p.pkid = acked + 1;
        assert!(conn.write(|o| {
            p.write(o).unwrap();
        }));
        let deadline = Instant::now() + Duration::from_secs(5);
        let answer = loop {
            match conn.read() {
                Some(Some(Packet::PubAck(a))) => break Some(a.pkid),
                Some(Some(_)) => {}
                Some(None) if Instant::now() < deadline => {}
                Some(None) => panic!("neither PUBACK nor close within 5 s"),
                None => break None,
            }
        };
        match answer {
            Some(pkid) => {
                assert_eq!(pkid, acked + 1);
                acked += 1;
                assert!(acked < 64, "1 MiB store took 64 MiB");
            }
            None => break acked,
        }
    };
    assert!(closed >= 10, "refused after only {closed} messages");
    let log = daemon.log();
    assert!(
        log.contains("message store is full"),
        "no reason in the log:\n{log}"
    );
    assert!(sample(&metrics(&ip), "verge_mqtt_publishes_refused_total") >= 1.0);
    // Everything acknowledged is still delivered.
    let seen = Mutex::new(Seen::default());
    subscribe_until(
        ext.connect(),
        &seen,
        &AtomicBool::new(false),
        Some(Duration::from_millis(700)),
    );
    let got: Vec<String> = seen
        .lock()
        .unwrap()
        .messages
        .iter()
        .map(|(_, p, _)| p["n"].clone())
        .collect();
    let expected: Vec<String> = (0..closed).map(|n| n.to_string()).collect();
    assert_eq!(got, expected);
    // And with the store drained, the publisher is accepted again.
    let mut again = Conn::open(
        plain,
        "leaf1",
        &format!("{ip}/leaf1/?{API}"),
        &mqtt::token(&leaf, 600),
    );
    let mut p = Publish::new(
        "devices/leaf1/messages/events/n=again",
        QoS::AtLeastOnce,
        body,
    );
    p.pkid = 1;
    assert!(again.write(|o| {
        p.write(o).unwrap();
    }));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match again.read() {
            Some(Some(Packet::PubAck(a))) if a.pkid == 1 => break,
            Some(_) if Instant::now() < deadline => {}
            other => panic!("not accepted after the drain: {other:?}"),
        }
    }
}

#[test]
fn a_child_forwards_upstream_to_its_root_in_order_across_a_root_outage() {
    let (mut root, ext) = root_for_child("root");
    let child = Daemon::start("child", &child_config(&root, "child"), None);
    let total = 400u64;
    let manifest = deployment(
        json!({ "source": wasm_module(&guest("misbehave"), &[("Mode", json!("source")), ("Tag", json!("1")),
            ("Burst", json!("4")), ("TickMs", json!("20")), ("Size", json!("32")), ("Total", json!(total.to_string()))], json!({})) }),
        json!({ "up": "FROM /messages/modules/source/outputs/* INTO $upstream" }),
        json!({}),
    );
    let out = child.deploy("child", &manifest);
    assert!(out.status.success(), "{}", mqtt::output_text(&out));

    // Some arrive; then the root goes away for a while and comes back.
    let seen = Mutex::new(Seen::default());
    let stop = AtomicBool::new(false);
    let conn = ext.connect();
    std::thread::scope(|s| {
        s.spawn(|| subscribe_until(conn, &seen, &stop, None));
        let started = Instant::now();
        while seen.lock().unwrap().messages.len() < 50 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "nothing from the child:\n{}",
                child.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        root.stop();
    });
    std::thread::sleep(Duration::from_secs(2));
    root.start_again();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (seen
        .lock()
        .unwrap()
        .messages
        .iter()
        .map(|(_, p, _)| p["n"].clone())
        .collect::<HashSet<_>>()
        .len() as u64)
        < total
    {
        assert!(
            Instant::now() < deadline,
            "not everything arrived:\n{}",
            child.log()
        );
        subscribe_until(
            ext.connect(),
            &seen,
            &AtomicBool::new(false),
            Some(Duration::from_secs(2)),
        );
    }
    let seen = seen.lock().unwrap();
    let mut first = Vec::new();
    let mut distinct = HashSet::new();
    for (_, props, _) in &seen.messages {
        assert_eq!(
            props.get("$.cdid").map(String::as_str),
            Some("child"),
            "{props:?}"
        );
        assert_eq!(
            props.get("$.cmid").map(String::as_str),
            Some("source"),
            "{props:?}"
        );
        let n: u64 = props["n"].parse().unwrap();
        if distinct.insert(n) {
            first.push(n);
        }
    }
    assert_eq!(
        first,
        (1..=total).collect::<Vec<_>>(),
        "out of order or missing"
    );
    let log = child.log();
    assert!(
        log.matches("upstream connected").count() >= 2 && log.contains("upstream connection ended"),
        "the child never lost its parent:\n{log}"
    );
    eprintln!(
        "upstream: {total} messages from the child's module, {} deliveries at the root",
        seen.messages.len()
    );
}

/// `verge deploy FILE --device CHILD` on `root`.
fn deploy_to(root: &Daemon, child: &str, name: &str, manifest: &Value) {
    let out = root.deploy_to(child, &format!("{name}.json"), manifest);
    assert!(out.status.success(), "{}", mqtt::output_text(&out));
}

/// A root whose route hands everything from device `child` to the external module `ext`.
fn root_for_child(tag: &str) -> (Daemon, Ext) {
    let ip = mqtt::loopback_ip();
    let plain = mqtt::free_port();
    let root = Daemon::start(tag, &mqtt::config(&ip, plain), None);
    deploy_routes(
        &root,
        json!({}),
        json!({ "fromChild": "FROM /messages/* WHERE $connectionDeviceId = 'child' INTO BrokeredEndpoint(\"/modules/ext/inputs/in\")" }),
    );
    let ext = Ext::register(&root, &ip, plain);
    (root, ext)
}

#[test]
fn a_root_deploys_to_its_child_through_twins_and_the_child_reports_back() {
    let (mut root, ext) = root_for_child("twin-root");
    // The child starts with nothing deployed: everything comes from the root.
    let mut child = Daemon::start("twin-child", &child_config(&root, "child"), None);
    let misbehave = guest("misbehave");
    let good = deployment(
        json!({
            "source": wasm_module(&misbehave, &[("Mode", json!("source")), ("Burst", json!("1")),
                ("TickMs", json!("50")), ("Size", json!("16")), ("Total", json!("20"))], json!({})),
            "relay": wasm_module(&misbehave, &[("Mode", json!("relay"))], json!({})),
        }),
        json!({
            "toRelay": "FROM /messages/modules/source/outputs/* INTO BrokeredEndpoint(\"/modules/relay/inputs/in\")",
            "up": "FROM /messages/modules/relay/outputs/* INTO $upstream",
        }),
        json!({}),
    );
    deploy_to(&root, "child", "good", &good);
    let agent_twin = "devices/child/modules/$edgeAgent";
    let reported = |root: &Daemon| root.twin(agent_twin)["reported"].clone();
    root.wait_until(
        "the child reports 200 with both modules running",
        Duration::from_secs(60),
        |root| {
            let r = reported(root);
            r["lastDesiredStatus"]["code"] == 200
                && r["modules"]["source"]["runtimeStatus"] == "running"
                && r["modules"]["relay"]["runtimeStatus"] == "running"
        },
    );
    let version = root.twin(agent_twin)["desired"]["$version"].clone();
    assert_eq!(
        reported(&root)["lastDesiredVersion"],
        version,
        "versions differ between root and child"
    );
    // The child's relay output reaches the root as the child's module's.
    let seen = Mutex::new(Seen::default());
    subscribe_until(
        ext.connect(),
        &seen,
        &AtomicBool::new(false),
        Some(Duration::from_secs(2)),
    );
    let seen = seen.lock().unwrap();
    assert!(
        !seen.messages.is_empty(),
        "nothing from the child's modules"
    );
    assert!(
        seen.messages
            .iter()
            .all(|(_, p, _)| p.get("$.cmid").map(String::as_str) == Some("relay"))
    );

    // A deployment the child must refuse: 412, and its modules keep running.
    let mut bad = good.clone();
    bad["modulesContent"]["$edgeAgent"]["properties.desired"]["schemaVersion"] = json!("2.0");
    deploy_to(&root, "child", "bad", &bad);
    root.wait_until("the child reports 412", Duration::from_secs(30), |root| {
        reported(root)["lastDesiredStatus"]["code"] == 412
    });
    let r = reported(&root);
    assert_eq!(r["modules"]["relay"]["runtimeStatus"], "running", "{r}");
    assert_eq!(child.module("relay").unwrap()["status"], "running");

    // Routes changed through the twin: the child's hub swaps them and says so; a route that does
    // not parse is refused there (400, the parse error in the description), the last good routes
    // stay.
    let hub_twin = "devices/child/modules/$edgeHub";
    let hub_reported = |root: &Daemon| root.twin(hub_twin)["reported"].clone();
    let mut rerouted = good.clone();
    rerouted["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]["up"] = json!(
        "FROM /messages/modules/relay/outputs/* WHERE NOT IS_DEFINED($body.nothing) INTO $upstream"
    );
    deploy_to(&root, "child", "rerouted", &rerouted);
    let version = || root.twin(hub_twin)["desired"]["$version"].clone();
    root.wait_until(
        "the child's hub applies the new routes",
        Duration::from_secs(30),
        |root| {
            let r = hub_reported(root);
            r["lastDesiredStatus"]["code"] == 200 && r["lastDesiredVersion"] == version()
        },
    );
    let mut unparsable = good.clone();
    unparsable["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]["up"] =
        json!("FROM /messages/* WHERE temp == 100 INTO $upstream");
    deploy_to(&root, "child", "unparsable", &unparsable);
    root.wait_until(
        "the child's hub refuses the route",
        Duration::from_secs(30),
        |root| {
            let r = hub_reported(root);
            r["lastDesiredStatus"]["code"] == 400 && r["lastDesiredVersion"] == version()
        },
    );
    let r = hub_reported(&root);
    assert!(
        r["lastDesiredStatus"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("up")),
        "{r}"
    );

    // A changed deployment: the relay goes away on the child.
    let mut smaller = good.clone();
    smaller["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]
        .as_object_mut()
        .unwrap()
        .remove("relay");
    deploy_to(&root, "child", "smaller", &smaller);
    root.wait_until(
        "the child reports 200 without the relay",
        Duration::from_secs(30),
        |root| {
            let r = reported(root);
            r["lastDesiredStatus"]["code"] == 200 && r["modules"].get("relay").is_none()
        },
    );
    assert!(
        child.module("relay").is_none(),
        "the relay still runs on the child"
    );

    // The child restarted while its parent is away starts with its last deployment.
    root.stop();
    child.restart();
    child.wait_until(
        "the cached deployment runs offline",
        Duration::from_secs(30),
        |c| c.module("source").is_some_and(|m| m["status"] == "running"),
    );
    assert!(child.module("relay").is_none());
}
