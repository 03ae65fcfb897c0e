//! A Python module (`samples/modules/py-averager`, built by componentize-py) on the real wasm
//! runtime, with a real hub and twin store and no agent: the test feeds it sensor readings
//! through the hub and checks what a user would see — the averages it sends, their properties,
//! its twin, its direct methods, its log — and that a bad input does not stop it.
//!
//! The first load compiles the ~18 MB component with Cranelift (7-12 s on 2 cores) in `prepare`;
//! instantiating it then takes ~20 ms and a call tens of microseconds, but the deadlines are
//! generous for slow, loaded machines. The build itself (`build.sh`) runs once per test run and
//! is skipped when the component is fresh.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Rig, lines, wait_for};
use serde_json::{Value, json};
use verge_hub::QueueLimits;

const MODULE: &str = "averager";

/// A SimulatedTemperatureSensor reading.
fn reading(temperature: f64) -> Vec<u8> {
    json!({
        "machine": {"temperature": temperature, "pressure": 1.0 + (temperature - 21.0) * 9.0 / 79.0},
        "ambient": {"temperature": 20.7, "humidity": 25},
        "timeCreated": "2026-11-22T10:00:00.0000000Z",
    })
    .to_string()
    .into_bytes()
}

/// Average, min and max.
fn stats(temperatures: &[f64]) -> (f64, f64, f64) {
    let average = temperatures.iter().sum::<f64>() / temperatures.len() as f64;
    let min = temperatures.iter().copied().fold(f64::INFINITY, f64::min);
    let max = temperatures
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    (average, min, max)
}

fn assert_stats(got: &Value, temperatures: &[f64], window_size: u64) {
    let (average, min, max) = stats(temperatures);
    let close = |key: &str, want: f64| {
        let v = got[key]
            .as_f64()
            .unwrap_or_else(|| panic!("no {key} in {got}"));
        assert!((v - want).abs() < 1e-9, "{key} is {v}, want {want}: {got}");
    };
    close("average", average);
    close("min", min);
    close("max", max);
    assert_eq!(got["count"], json!(temperatures.len()), "{got}");
    assert_eq!(got["windowSize"], json!(window_size), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_averager_averages_windows_and_answers_methods() {
    let image = verge_tests::python_guest("py-averager");
    let rig = Rig::new(
        "python",
        &[
            (
                "sensorToAverager",
                "FROM /messages/modules/sensor/outputs/temperatureOutput INTO BrokeredEndpoint(\"/modules/averager/inputs/input1\")",
            ),
            (
                "averagerToUpstream",
                "FROM /messages/modules/averager/* INTO $upstream",
            ),
        ],
        QueueLimits::default(),
    );
    let options = json!({
        // The interpreter's snapshot needs ~12.5 MB; 13 MB holds a 10,000-reading window.
        "HostConfig": {"Memory": 32 << 20},
        "Wasm": {"InitTimeoutMs": 30_000, "CallTimeoutMs": 5_000},
    });
    let spec = Rig::spec(MODULE, &image, &[], Some(options));
    // The first load compiles the component (in `prepare`); starting then only instantiates it.
    let (handle, log) = rig.start(&spec).await;
    assert!(
        handle.exit().is_none(),
        "did not start: {:?}\n{}",
        handle.exit(),
        lines(&log)
    );

    // Without a desired WindowSize the module reports the default; a twin change is followed live.
    wait_for(
        "the default window size reported",
        Duration::from_secs(5),
        || (rig.twins.reported(MODULE)["WindowSize"] == json!(10)).then_some(()),
    )
    .await;
    let obj = |v: Value| v.as_object().unwrap().clone();
    rig.twins
        .set_desired(MODULE, obj(json!({"WindowSize": 4})))
        .unwrap();
    wait_for("WindowSize 4 reported", Duration::from_secs(10), || {
        (rig.twins.reported(MODULE)["WindowSize"] == json!(4)).then_some(())
    })
    .await;
    assert!(
        lines(&log).contains("INFO [py-averager] window size changed from 10 to 4"),
        "the change is not in the log:\n{}",
        lines(&log)
    );

    // 3 windows of readings: one average per window, on averageOutput, as JSON.
    let temperatures: Vec<f64> = (0..14)
        .map(|i| 21.0 + f64::from((i * 7) % 13) * 0.75)
        .collect();
    for &t in &temperatures[..12] {
        rig.inject("sensor", "temperatureOutput", &reading(t)).await;
    }
    let sent = wait_for("3 averages upstream", Duration::from_secs(20), || {
        let q = rig.hub.queued_upstream();
        (q.len() >= 3).then_some(q)
    })
    .await;
    assert_eq!(sent.len(), 3, "one message per window of 4 readings");
    for (tapped, window) in sent.iter().zip(temperatures[..12].chunks(4)) {
        let m = &tapped.message;
        assert_stats(&serde_json::from_slice(m.body()).unwrap(), window, 4);
        assert_eq!(m.system().get("contentType"), Some("application/json"));
        assert_eq!(m.system().get("contentEncoding"), Some("utf-8"));
        assert_eq!(m.properties().get("source"), Some("py-averager"));
        assert_eq!(m.system().get("outputName"), Some("averageOutput"));
        assert_eq!(m.system().get("connectionModuleId"), Some(MODULE));
    }

    // The window slides: after 2 more readings it holds the last 4, and nothing more was sent.
    for &t in &temperatures[12..] {
        rig.inject("sensor", "temperatureOutput", &reading(t)).await;
    }
    rig.drained(MODULE, 14).await;
    let (status, payload) = rig.method(MODULE, "GetStats").await;
    assert_eq!(status, 200, "{payload}");
    assert_stats(&payload, &temperatures[10..14], 4);
    assert_eq!(rig.hub.queued_upstream().len(), 3);

    // Reset empties the window.
    let (status, payload) = rig.method(MODULE, "Reset").await;
    assert_eq!((status, &payload["count"]), (200, &json!(0)), "{payload}");
    let (status, payload) = rig.method(MODULE, "GetStats").await;
    assert_eq!(status, 200);
    assert_eq!(
        payload,
        json!({"average": null, "min": null, "max": null, "count": 0, "windowSize": 4})
    );
    assert_eq!(rig.method(MODULE, "NoSuchMethod").await.0, 404);

    // A body that is not JSON is rejected: logged, consumed, not forwarded.
    rig.inject("sensor", "temperatureOutput", b"21.5 degrees")
        .await;
    rig.drained(MODULE, 15).await;
    assert!(
        lines(&log).contains("rejected a message on \"input1\": not a temperature reading"),
        "no rejection in the log:\n{}",
        lines(&log)
    );
    assert_eq!(
        rig.hub.queued_upstream().len(),
        3,
        "the bad input was forwarded"
    );

    // The module keeps running: the next full window (after the reset) is averaged alone.
    let next = [40.0, 41.5, 39.25, 42.0];
    for &t in &next {
        rig.inject("sensor", "temperatureOutput", &reading(t)).await;
    }
    let sent = wait_for("a 4th average", Duration::from_secs(10), || {
        let q = rig.hub.queued_upstream();
        (q.len() >= 4).then_some(q)
    })
    .await;
    assert_stats(
        &serde_json::from_slice(sent[3].message.body()).unwrap(),
        &next,
        4,
    );
    assert!(
        handle.exit().is_none(),
        "the module exited: {:?}\n{}",
        handle.exit(),
        lines(&log)
    );
}
