//! A test guest. Its `Mode` setting (manifest `env`) chooses what it does:
//!
//! | Mode | behaviour |
//! |---|---|
//! | `relay` (default) | forwards every input unchanged on `output`; with `Stamp=1` it first sets property `t1` (see below) |
//! | `props` | forwards every input on `output` after reading only its properties, tagging `seen=1` |
//! | `count` | consumes inputs, reports `{"received": n, "bodyBytes": m}` in its twin every `ReportEvery` inputs |
//! | `source` | sends `Burst` messages of `Size` bytes per tick on `output`, ticking every `TickMs` ms, up to `Total`; each carries property `n` (1, 2, …), and with `Stamp=1` also `t0` (see below) |
//! | `trap` | panics (a trap) on every input |
//! | `trap-after` | relays, but panics on the input whose body is `boom` |
//! | `loop` | loops forever on every input |
//! | `sleep` | sleeps (blocked in WASI) for 10 s on every input |
//! | `oom` | allocates until the memory cap stops it, on every input |
//! | `init-fail` | `init` returns an error |
//! | `exit` | calls `exit(3)` on every input |
//! | `reject` | rejects every input |
//! | `retry` | asks for a retry of every input until it has seen it `RetryTimes` times, then relays it |
//!
//! Latency stamps (`host/bench`, `Stamp=1`): `t0`, set by `source` as each message is sent, and `t1`, set by
//! `relay` with `Stamp=1` when it starts handling an input, are wall-clock nanoseconds since the
//! Unix epoch (`SystemTime`, WASI's wall clock), so `t1 - t0` is the hop through the hub.
//!
//! Processing tags (the crash tests, `Tag=1`): `source` sets `run` (this instance's start, in
//! nanoseconds) on each message, `relay` sets `proc` to `{its start}-{inputs handled}`: an input
//! handled twice gives two outputs with different `proc`, a message delivered twice the same one.
//!
//! It answers the direct method `echo` with its payload and `crash` by panicking, and reports
//! its desired properties' `$version` when they change.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use verge_sdk::{Error, InputError, Message, MethodResponse, Module, log, timer, twin};

struct Misbehave {
    mode: String,
    received: u64,
    body_bytes: u64,
    report_every: u64,
    burst: u64,
    size: usize,
    tick: Duration,
    total: Option<u64>,
    sent: u64,
    retries: HashMap<String, u32>,
    retry_times: u32,
    hoard: Vec<Vec<u8>>,
    stamp: bool,
    tag: Option<String>,
}

/// Wall-clock nanoseconds since the Unix epoch, as the latency stamps carry them.
fn now_nanos() -> String {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        .to_string()
}

fn setting<T: std::str::FromStr>(key: &str, default: T) -> T {
    verge_sdk::config(key)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

impl Module for Misbehave {
    fn init() -> Result<Self, Error> {
        let mode = verge_sdk::config("Mode").unwrap_or_else(|| "relay".into());
        if mode == "init-fail" {
            return Err(Error::Other("told to fail".into()));
        }
        let module = Misbehave {
            received: 0,
            body_bytes: 0,
            report_every: setting("ReportEvery", 1),
            burst: setting("Burst", 1),
            size: setting("Size", 256),
            tick: Duration::from_millis(setting("TickMs", 10)),
            total: verge_sdk::config("Total").and_then(|v| v.parse().ok()),
            sent: 0,
            retries: HashMap::new(),
            retry_times: setting("RetryTimes", 2),
            hoard: Vec::new(),
            stamp: setting("Stamp", 0u8) == 1,
            tag: (setting("Tag", 0u8) == 1).then(now_nanos),
            mode,
        };
        log::info(&format!("mode {}", module.mode));
        if module.mode == "source" {
            timer::schedule(module.tick);
        }
        Ok(module)
    }

    fn on_input(&mut self, _input: &str, message: Message) -> Result<(), InputError> {
        let started = self.stamp.then(now_nanos);
        self.received += 1;
        match self.mode.as_str() {
            "relay" => {
                if let Some(t1) = started {
                    message.set_property("t1", &t1);
                }
                if let Some(run) = &self.tag {
                    message.set_property("proc", &format!("{run}-{}", self.received));
                }
                verge_sdk::send("output", &message).map_err(InputError::retry)
            }
            "props" => {
                let _ = message.properties();
                message.set_property("seen", "1");
                verge_sdk::send("output", &message).map_err(InputError::retry)
            }
            "count" => {
                self.body_bytes += message.body().len() as u64;
                if self.received.is_multiple_of(self.report_every) {
                    twin::report(&json!({"received": self.received, "bodyBytes": self.body_bytes}))
                        .map_err(InputError::retry)?;
                }
                Ok(())
            }
            "trap" => panic!("told to trap"),
            "trap-after" => {
                if message.body() == b"boom" {
                    panic!("boom");
                }
                verge_sdk::send("output", &message).map_err(InputError::retry)
            }
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "sleep" => {
                std::thread::sleep(Duration::from_secs(10));
                Ok(())
            }
            "oom" => loop {
                self.hoard.push(vec![1u8; 1 << 20]);
            },
            "exit" => std::process::exit(3),
            "reject" => Err(InputError::reject("told to reject")),
            "retry" => {
                let key = String::from_utf8_lossy(&message.body()).into_owned();
                let seen = self.retries.entry(key).or_insert(0);
                *seen += 1;
                if *seen <= self.retry_times {
                    Err(InputError::retry(format!("attempt {seen}")))
                } else {
                    verge_sdk::send("output", &message).map_err(InputError::retry)
                }
            }
            other => Err(InputError::reject(format!("unknown mode {other}"))),
        }
    }

    fn on_timer(&mut self) -> Result<(), Error> {
        let body = vec![b'x'; self.size];
        for _ in 0..self.burst {
            if self.total.is_some_and(|t| self.sent >= t) {
                return Ok(());
            }
            self.sent += 1;
            let message = Message::new(&body).with_property("n", &self.sent.to_string());
            if self.stamp {
                message.set_property("t0", &now_nanos());
            }
            if let Some(run) = &self.tag {
                message.set_property("run", run);
            }
            verge_sdk::send("output", &message)?;
        }
        timer::schedule(self.tick);
        Ok(())
    }

    fn on_desired_changed(&mut self, patch: &str) -> Result<(), Error> {
        let patch: Value =
            serde_json::from_str(patch).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        twin::report(&json!({"seenDesiredVersion": patch["$version"]}))
    }

    fn on_method(&mut self, name: &str, payload: &str) -> Result<MethodResponse, Error> {
        match name {
            "echo" => Ok(MethodResponse {
                status: 200,
                payload: payload.to_owned(),
            }),
            "crash" => panic!("told to crash"),
            _ => Ok(MethodResponse {
                status: 404,
                payload: json!({"message": "no such method"}).to_string(),
            }),
        }
    }
}

verge_sdk::export_module!(Misbehave);
