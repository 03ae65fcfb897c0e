//! The wasm runtime with real components (the samples and `tests/guests/misbehave`), a real hub
//! and twin store, and no agent: each test starts modules itself and checks what a user would
//! see — messages routed, exits with the documented codes, logs, twins, methods.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{DEVICE, Rig, lines, wait_for};
use serde_json::{Value, json};
use verge_hub::{Identity, QueueLimits, Target};
use verge_runtime::{ModuleLog, ModuleRuntime};
use verge_runtime_wasm::{EXIT_DEADLINE, EXIT_INIT_ERROR, EXIT_MEMORY, EXIT_TRAP};

fn spec(
    name: &str,
    guest: &str,
    env: &[(&str, &str)],
    options: Option<Value>,
) -> verge_runtime::ModuleSpec {
    Rig::spec(name, &verge_tests::guest(guest), env, options)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensor_feeds_filter_and_alerts_go_upstream() {
    let rig = Rig::new(
        "quickstart",
        &[
            (
                "sensorToFilter",
                "FROM /messages/modules/sensor/outputs/temperatureOutput INTO BrokeredEndpoint(\"/modules/filter/inputs/input1\")",
            ),
            (
                "filterToUpstream",
                "FROM /messages/modules/filter/outputs/* INTO $upstream",
            ),
        ],
        QueueLimits::default(),
    );
    let obj = |v: Value| v.as_object().unwrap().clone();
    rig.twins
        .set_desired("sensor", obj(json!({"SendInterval": 0.005})))
        .unwrap();
    rig.twins
        .set_desired("filter", obj(json!({"TemperatureThreshold": 23.0})))
        .unwrap();
    let sensor = spec("sensor", "temp-sensor", &[("MessageCount", "40")], None);
    let filter = spec("filter", "filter", &[], None);
    let (_f, filter_log) = rig.start(&filter).await;
    let (_s, sensor_log) = rig.start(&sensor).await;

    // 40 readings climbing from 21 by [0,1) each: some end above 23.
    wait_for("the sensor to finish", Duration::from_secs(20), || {
        lines(&sensor_log)
            .contains("sent all 40 messages")
            .then_some(())
    })
    .await;
    let upstream = wait_for("alerts upstream", Duration::from_secs(10), || {
        let q = rig.hub.queued_upstream();
        let filter_q = rig.hub.queue(&Target::Module("filter".into())).stats();
        (filter_q.queued == 0 && filter_q.delivered == 40).then_some(q)
    })
    .await;
    assert!(
        !upstream.is_empty(),
        "no alert went upstream; filter log:\n{}",
        lines(&filter_log)
    );
    for tapped in &upstream {
        let m = &tapped.message;
        let body: Value = serde_json::from_slice(m.body()).unwrap();
        let t = body["machine"]["temperature"].as_f64().unwrap();
        assert!(t > 23.0, "forwarded {t}, below the threshold");
        assert_eq!(m.properties().get("MessageType"), Some("Alert"));
        assert!(m.properties().get("sequenceNumber").is_some());
        assert!(m.properties().get("batchId").is_some());
        assert_eq!(m.system().get("connectionModuleId"), Some("filter"));
        assert_eq!(m.system().get("connectionDeviceId"), Some(DEVICE));
        assert_eq!(m.system().get("outputName"), Some("output1"));
        assert_eq!(m.system().get("contentType"), Some("application/json"));
        for key in ["ambient", "timeCreated"] {
            assert!(body.get(key).is_some(), "body lacks {key}: {body}");
        }
    }
    // The filter reported the threshold it uses.
    assert_eq!(
        rig.twins.reported("filter")["TemperatureThreshold"],
        json!(23.0)
    );
    // A twin change reaches the filter without a restart.
    rig.twins
        .set_desired("filter", obj(json!({"TemperatureThreshold": 99.0})))
        .unwrap();
    wait_for("the new threshold reported", Duration::from_secs(5), || {
        (rig.twins.reported("filter")["TemperatureThreshold"] == json!(99.0)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_shares_the_body_buffer() {
    let rig = Rig::new(
        "zerocopy",
        &[
            (
                "in",
                "FROM /messages/modules/test/* INTO BrokeredEndpoint(\"/modules/props/inputs/in\")",
            ),
            ("out", "FROM /messages/modules/props/* INTO $upstream"),
        ],
        QueueLimits::default(),
    );
    let (_h, _log) = rig
        .start(&spec("props", "misbehave", &[("Mode", "props")], None))
        .await;
    let sent = rig.inject("test", "o", &[7u8; 4096]).await;
    let got = wait_for("the relayed message", Duration::from_secs(5), || {
        rig.hub.queued_upstream().pop()
    })
    .await;
    assert_eq!(got.message.properties().get("seen"), Some("1"));
    assert_eq!(
        got.message.system().get("connectionModuleId"),
        Some("props")
    );
    // The same body buffer, end to end: the hub and the host never copied it.
    assert_eq!(got.message.body().as_ptr(), sent.body().as_ptr());
}

async fn exit_of(
    mode: &str,
    env: &[(&str, &str)],
    options: Option<Value>,
) -> (verge_runtime::Exit, ModuleLog, Duration) {
    let rig = Rig::new(
        mode,
        &[(
            "in",
            "FROM /messages/* INTO BrokeredEndpoint(\"/modules/m/inputs/in\")",
        )],
        QueueLimits::default(),
    );
    let mut env = env.to_vec();
    env.push(("Mode", mode));
    let (mut handle, log) = rig.start(&spec("m", "misbehave", &env, options)).await;
    let start = Instant::now();
    if handle.exit().is_none() {
        rig.inject("test", "o", b"payload").await;
    }
    let exit = tokio::time::timeout(Duration::from_secs(20), handle.exited())
        .await
        .expect("no exit");
    // The input that ended the module is back in its queue, not lost.
    if exit.code != EXIT_INIT_ERROR {
        let q = rig.hub.queue(&Target::Module("m".into())).stats();
        assert_eq!(q.queued, 1, "input lost after {mode}");
    }
    (exit, log, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_ends_the_module_with_its_message() {
    let (exit, log, _) = exit_of("trap", &[], None).await;
    assert_eq!(exit.code, EXIT_TRAP);
    assert!(exit.description.contains("handle-input"), "{exit:?}");
    assert!(
        lines(&log).contains("told to trap"),
        "panic message not in the log:\n{}",
        lines(&log)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_hits_the_deadline() {
    let opts = json!({"Wasm": {"CallTimeoutMs": 200}});
    let (exit, _, took) = exit_of("loop", &[], Some(opts)).await;
    assert_eq!(exit.code, EXIT_DEADLINE, "{exit:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_blocked_in_the_host_hits_the_deadline() {
    let opts = json!({"Wasm": {"CallTimeoutMs": 200}});
    let (exit, _, took) = exit_of("sleep", &[], Some(opts)).await;
    assert_eq!(exit.code, EXIT_DEADLINE, "{exit:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_hits_the_cap() {
    let opts = json!({"HostConfig": {"Memory": 16 << 20}});
    let (exit, _, _) = exit_of("oom", &[], Some(opts)).await;
    assert_eq!(exit.code, EXIT_MEMORY, "{exit:?}");
    assert!(
        exit.description.contains(&(16u64 << 20).to_string()),
        "{exit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_failed_init() {
    // WASI p2's `exit` carries only success or failure: `process::exit(3)` arrives as 1.
    let (exit, _, _) = exit_of("exit", &[], None).await;
    assert_eq!(exit.code, 1);
    assert!(exit.description.contains("exited with code 1"), "{exit:?}");
    let (exit, _, _) = exit_of("init-fail", &[], None).await;
    assert_eq!(exit.code, EXIT_INIT_ERROR);
    assert!(exit.description.contains("told to fail"), "{exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_create_options_are_refused_by_name() {
    let rig = Rig::new("opts", &[], QueueLimits::default());
    let spec = spec(
        "m",
        "misbehave",
        &[],
        Some(json!({"HostConfig": {"Privileged": true}})),
    );
    let err = rig.runtime.prepare(&spec).await.unwrap_err();
    assert!(err.to_string().contains("HostConfig.Privileged"), "{err}");
    let mut missing = spec.clone();
    missing.create_options = None;
    missing.image = "/nonexistent/x.wasm".into();
    let err = rig.runtime.prepare(&missing).await.unwrap_err();
    assert!(
        matches!(err, verge_runtime::RuntimeError::NotFound(_)),
        "{err}"
    );
    let mut core = missing.clone();
    let not_component = rig.dir.join("core.wasm");
    std::fs::write(&not_component, b"\0asm\x01\0\0\0").unwrap();
    core.image = not_component.display().to_string();
    let err = rig.runtime.prepare(&core).await.unwrap_err();
    assert!(
        err.to_string().contains("not a WebAssembly component"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_twins_and_stop() {
    let rig = Rig::new("methods", &[], QueueLimits::default());
    let (mut handle, _log) = rig.start(&spec("m", "misbehave", &[], None)).await;
    let who = Identity::module(DEVICE, "m");
    let answer = rig
        .hub
        .methods()
        .invoke(&who, "echo", "{\"a\":1}", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!((answer.status, answer.payload.as_str()), (200, "{\"a\":1}"));
    let answer = rig
        .hub
        .methods()
        .invoke(&who, "nope", "{}", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(answer.status, 404);

    let obj = |v: Value| v.as_object().unwrap().clone();
    let version = rig.twins.set_desired("m", obj(json!({"x": 1}))).unwrap();
    wait_for(
        "the desired version reported",
        Duration::from_secs(5),
        || (rig.twins.reported("m")["seenDesiredVersion"] == json!(version)).then_some(()),
    )
    .await;

    let exit = handle.stop(Duration::from_secs(5)).await;
    assert_eq!(exit.code, 0);
    let err = rig
        .hub
        .methods()
        .invoke(&who, "echo", "{}", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(err.status(), 404, "a stopped module still answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_method_answers_500_and_ends_the_module() {
    let rig = Rig::new("crash", &[], QueueLimits::default());
    let (mut handle, _log) = rig.start(&spec("m", "misbehave", &[], None)).await;
    let who = Identity::module(DEVICE, "m");
    let answer = rig
        .hub
        .methods()
        .invoke(&who, "crash", "{}", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(answer.status, 500);
    assert_eq!(handle.exited().await.code, EXIT_TRAP);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_pauses_a_source_and_loses_nothing() {
    let rig = Rig::new(
        "backpressure",
        &[("out", "FROM /messages/modules/src/* INTO $upstream")],
        QueueLimits {
            max_messages: 50,
            max_bytes: 1 << 20,
        },
    );
    let env = [
        ("Mode", "source"),
        ("Burst", "10"),
        ("TickMs", "1"),
        ("Total", "400"),
        ("Size", "64"),
    ];
    let (_h, _log) = rig.start(&spec("src", "misbehave", &env, None)).await;
    let queue = rig.hub.queue(&Target::Upstream);
    wait_for("the queue to fill", Duration::from_secs(5), || {
        (queue.stats().queued >= 50).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        queue.stats().queued <= 50,
        "queue grew past its limit: {:?}",
        queue.stats()
    );

    let mut consumer = rig.hub.consume(&Target::Upstream).unwrap();
    let mut seen = Vec::new();
    while seen.len() < 400 {
        let entry = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("stalled");
        seen.push(
            entry
                .message
                .properties()
                .get("n")
                .unwrap()
                .parse::<u64>()
                .unwrap(),
        );
        consumer.ack(entry.seq);
    }
    assert_eq!(
        seen,
        (1..=400).collect::<Vec<_>>(),
        "lost or reordered under backpressure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_keeps_order_and_reject_drops() {
    let rig = Rig::new(
        "retry",
        &[
            (
                "in",
                "FROM /messages/modules/test/* INTO BrokeredEndpoint(\"/modules/m/inputs/in\")",
            ),
            ("out", "FROM /messages/modules/m/* INTO $upstream"),
        ],
        QueueLimits::default(),
    );
    let (_h, log) = rig
        .start(&spec(
            "m",
            "misbehave",
            &[("Mode", "retry"), ("RetryTimes", "1")],
            None,
        ))
        .await;
    rig.inject("test", "o", b"\"a\"").await;
    rig.inject("test", "o", b"\"b\"").await;
    let got = wait_for("both relayed", Duration::from_secs(10), || {
        let q = rig.hub.queued_upstream();
        (q.len() == 2).then_some(q)
    })
    .await;
    let bodies: Vec<_> = got.iter().map(|t| t.message.body().to_vec()).collect();
    assert_eq!(bodies, [b"\"a\"".to_vec(), b"\"b\"".to_vec()]);
    assert!(lines(&log).contains("will retry"), "{}", lines(&log));
}
