//! The hub on its durable store: what was accepted survives a restart, in order and by priority,
//! with inputs and outputs committed together; backlogs live on disk; TTL and the size limit.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use verge_hub::{
    Commit, Consumer, Entry, Hub, HubOptions, Identity, RouteSet, RouteSpec, Store, StoreError,
    Target,
};
use verge_message::{Message, Text};
use verge_store::StoreOptions;

const SINK: &str = "sink";

fn route(name: &str, text: &str, priority: Option<u8>, ttl: Option<u32>) -> RouteSpec {
    RouteSpec {
        name: name.into(),
        route: text.into(),
        priority,
        time_to_live_secs: ttl,
    }
}

/// A hub on the store in `dir` with `routes`, keeping `resident` entries per queue in memory.
fn hub(dir: &Path, routes: &[RouteSpec], resident: usize, max_bytes: Option<u64>) -> Arc<Hub> {
    let options = StoreOptions {
        max_bytes,
        ..StoreOptions::default()
    };
    let (store, recovered) = Store::open(&dir.join("messages.redb"), options).expect("opens");
    let hub = Hub::with_store(
        HubOptions {
            resident_per_queue: resident,
            ..HubOptions::new("edge")
        },
        store,
        &recovered,
    );
    hub.install(RouteSet::compile(routes, 7200).expect("routes compile"));
    hub
}

fn to_sink(priority: Option<u8>) -> Vec<RouteSpec> {
    vec![
        route(
            "high",
            "FROM /messages/* WHERE prio = 'high' INTO BrokeredEndpoint(\"/modules/sink/inputs/in\")",
            Some(0),
            None,
        ),
        route(
            "rest",
            "FROM /messages/* WHERE prio <> 'high' INTO BrokeredEndpoint(\"/modules/sink/inputs/in\")",
            priority,
            None,
        ),
    ]
}

fn message(hub: &Hub, body: &str, prio: &str) -> Arc<Message> {
    let mut m = Message::new(body.as_bytes().to_vec()).with_property("prio", prio);
    hub.stamp(&Identity::device("leaf"), None, &mut m);
    Arc::new(m)
}

async fn send(hub: &Hub, bodies: impl IntoIterator<Item = String>, prio: &str) {
    let messages = bodies.into_iter().map(|b| message(hub, &b, prio)).collect();
    hub.commit(Commit {
        messages,
        ack: None,
        ..Commit::default()
    })
    .await
    .expect("committed");
}

fn body(entry: &Entry) -> String {
    String::from_utf8_lossy(entry.message.body()).into_owned()
}

/// Take and ack `n` entries, returning their bodies.
async fn drain(consumer: &mut Consumer, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        let entry = tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await
            .expect("an entry within 5 s");
        out.push(body(&entry));
        assert!(consumer.ack(entry.seq));
    }
    out
}

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

#[tokio::test]
async fn a_backlog_beyond_memory_comes_back_from_disk_in_priority_then_arrival_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = hub(dir.path(), &to_sink(None), 8, None);
    send(&hub, numbered("low", 0..300), "low").await;
    send(&hub, numbered("high", 0..300), "high").await;
    send(&hub, numbered("low", 300..400), "low").await;
    let sink = hub.queue(&Target::Module(SINK.into()));
    let lengths = sink.lengths();
    assert_eq!((lengths[0], lengths[10]), (300, 400));
    assert!(sink.snapshot().len() <= 8, "more than 8 entries in memory");
    let mut consumer = hub.consume(&Target::Module(SINK.into())).expect("consumer");
    let got = drain(&mut consumer, 700).await;
    let mut expected = numbered("high", 0..300);
    expected.extend(numbered("low", 0..400));
    assert_eq!(got, expected);
    let store = hub.store().expect("store");
    store.flush().await.expect("flushed");
    assert_eq!(store.stats().entries, 0, "acked entries left in the store");
}

#[tokio::test]
async fn a_restart_resumes_every_queue_where_it_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut routes = to_sink(Some(3));
    routes.push(route("up", "FROM /messages/* INTO $upstream", None, None));
    {
        let hub = hub(dir.path(), &routes, 16, None);
        send(&hub, numbered("m", 0..100), "low").await;
        send(&hub, numbered("h", 0..10), "high").await;
        let mut consumer = hub.consume(&Target::Module(SINK.into())).expect("consumer");
        assert_eq!(drain(&mut consumer, 15).await[..2], ["h0", "h1"]);
        // Taken but not acked: must come back.
        let unacked = consumer.next().await;
        assert_eq!(body(&unacked), "m5");
        hub.store().expect("store").flush().await.expect("flushed");
    }
    let hub = hub(dir.path(), &routes, 16, None);
    let mut consumer = hub.consume(&Target::Module(SINK.into())).expect("consumer");
    assert_eq!(drain(&mut consumer, 95).await, numbered("m", 5..100));
    let mut upstream = hub.consume(&Target::Upstream).expect("upstream");
    let up = drain(&mut upstream, 110).await;
    assert_eq!(up[..3], ["m0", "m1", "m2"]);
    assert_eq!(up[100..], numbered("h", 0..10)[..]);
    // New messages go after the recovered ones.
    send(&hub, ["new".to_string()], "low").await;
    assert_eq!(drain(&mut consumer, 1).await, ["new"]);
}

#[tokio::test]
async fn taking_an_input_and_queueing_its_outputs_is_one_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let routes = [
        route(
            "in",
            "FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) INTO BrokeredEndpoint(\"/modules/relay/inputs/in\")",
            None,
            None,
        ),
        route(
            "out",
            "FROM /messages/modules/relay/outputs/* INTO BrokeredEndpoint(\"/modules/sink/inputs/in\")",
            None,
            None,
        ),
    ];
    let relay = Identity::module("edge", "relay");
    {
        let hub = hub(dir.path(), &routes, 1024, None);
        send(&hub, numbered("x", 0..3), "low").await;
        let mut consumer = hub
            .consume(&Target::Module("relay".into()))
            .expect("consumer");
        // x0 handled: its output and its ack commit together.
        let x0 = consumer.next().await;
        let mut y0 = Message::new(b"y0".to_vec());
        hub.stamp(&relay, Some(Text::from("out")), &mut y0);
        hub.commit(Commit {
            messages: vec![Arc::new(y0)],
            ack: Some(consumer.ack_token(x0.seq)),
            ..Commit::default()
        })
        .await
        .expect("committed");
        // x1 taken, handler "crashed" before its commit.
        assert_eq!(body(&consumer.next().await), "x1");
        hub.store().expect("store").flush().await.expect("flushed");
    }
    let hub = hub(dir.path(), &routes, 1024, None);
    let mut relay_in = hub
        .consume(&Target::Module("relay".into()))
        .expect("consumer");
    assert_eq!(
        drain(&mut relay_in, 2).await,
        ["x1", "x2"],
        "x0 processed twice or x1 lost"
    );
    let mut sink = hub.consume(&Target::Module(SINK.into())).expect("consumer");
    assert_eq!(drain(&mut sink, 1).await, ["y0"]);
    assert!(sink.try_take(10, &mut Vec::new()) == 0, "an output twice");
}

#[tokio::test]
async fn a_full_store_refuses_new_commits_and_keeps_what_it_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hub = hub(dir.path(), &to_sink(None), 1024, Some(4096));
    let mut accepted = 0;
    let refusal = loop {
        let m = message(&hub, &"x".repeat(200), "low");
        match hub
            .commit(Commit {
                messages: vec![m],
                ack: None,
                ..Commit::default()
            })
            .await
        {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 1000, "never refused");
    };
    assert!(matches!(refusal, StoreError::Full { .. }), "{refusal:?}");
    assert!(refusal.to_string().contains("full"), "{refusal}");
    let sink = Target::Module(SINK.into());
    assert_eq!(
        hub.queue(&sink).stats().queued,
        accepted,
        "accepted messages lost"
    );
    let mut consumer = hub.consume(&sink).expect("consumer");
    drain(&mut consumer, 5).await;
    hub.store().expect("store").flush().await.expect("flushed");
    let m = message(&hub, "fits again", "low");
    hub.commit(Commit {
        messages: vec![m],
        ack: None,
        ..Commit::default()
    })
    .await
    .expect("room after delivery");
}

#[tokio::test]
async fn expired_messages_are_dropped_from_memory_and_disk_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let routes = [route(
        "short",
        "FROM /messages/* INTO BrokeredEndpoint(\"/modules/sink/inputs/in\")",
        None,
        Some(1),
    )];
    let hub = hub(dir.path(), &routes, 4, None);
    send(&hub, numbered("old", 0..50), "low").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    send(&hub, ["fresh".to_string()], "low").await;
    assert_eq!(hub.expire(), 50);
    let sink = Target::Module(SINK.into());
    let stats = hub.queue(&sink).stats();
    assert_eq!((stats.queued, stats.expired), (1, 50));
    let mut consumer = hub.consume(&sink).expect("consumer");
    assert_eq!(drain(&mut consumer, 1).await, ["fresh"]);
    let store = hub.store().expect("store");
    store.flush().await.expect("flushed");
    assert_eq!(store.stats().entries, 0);
    assert_eq!(store.stats().message_bytes, 0);
}
