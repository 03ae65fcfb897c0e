//! Verge's foundation benchmarks: `cargo bench -p verge-bench [-- FILTER...]`.
//!
//! 256-byte messages, routes as a deployment writes them (`FROM /messages/modules/src/outputs/*
//! INTO ...`), the hub's default queue limits, tokio's multi-thread runtime. Queues in memory, except
//! `wasm-relay-durable` (a fresh redb store under `target/bench/`, the daemon's store defaults).
//!
//! - `hub-1to1`, `hub-1to4`: the hub alone. One producer task commits batches of 64 stamped
//!   messages (`Hub::commit`, no ack) as fast as it can; each consumer task takes up to 256
//!   entries (`Consumer::take`) and acks each. Rate = deliveries / (first commit .. last ack);
//!   median of 3 runs.
//! - `hub-1to1-lat`, `hub-1to4-lat`: a producer thread (one core) commits batches of 8 to consumer
//!   tasks on a 1-worker runtime (the other core), paced at half the rate this setup reaches
//!   unpaced. Hop latency = `SystemTime::now()` after the take − the entry's `enqueued` (stamped
//!   as the commit starts); the run with the median p99 of 3 is reported. `mpsc-1to1-lat` is the
//!   same harness through a bare `tokio::sync::mpsc`: this machine's floor.
//! - `wasm-relay`: live instances. misbehave `source` (Burst=1000 per tick) → misbehave `relay` →
//!   `$upstream`, taken and acked by a harness task; rate counted at `$upstream`; median of 3.
//!   `wasm-stage-relay` and `wasm-stage-source` run each stage alone, to see which one limits.
//!   `wasm-relay-durable` is `wasm-relay` on the durable store: each relay input is taken and its
//!   output queued in one store batch.
//! - `wasm-hop-lat-*`: sources sending one message per call; the relay (`Stamp=1`) sets `t1` as
//!   it starts handling a message, the source set `t0` as it sent it (wall-clock ns): hop = t1 − t0.
//!
//! Arguments that do not start with `-` select scenarios whose name contains one of them.
//! `VERGE_BENCH_SCALE` multiplies every duration; `VERGE_BENCH_PACE` (messages/s) fixes the
//! hub latency runs' pace; `VERGE_BENCH_LAT_FEEDS` (`count:burst:tick,...`) sets the wasm latency
//! runs' sources. The figures also go to `target/bench/foundation.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio::runtime::Handle;
use tokio::sync::Notify;
use verge_bench::machine::{
    Machine, busy_shares, process_cpu_seconds, steal_seconds, workers_busy,
};
use verge_bench::report::{
    self, Extra, Fields, fmt_rate, or_dash, percentages, stolen_note, write_json,
};
use verge_bench::settings::{Filter, fixed_pace, scaled};
use verge_bench::stats::{Pct, median, round};
use verge_bench::{BODY, PACE_SLEEP, RUNS};
use verge_hub::{
    Commit, Consumer, Hub, HubOptions, Identity, QueueLimits, RouteSet, RouteSpec, Target,
};
use verge_message::Message;
use verge_runtime::{ModuleContext, ModuleHandle, ModuleLog, ModuleRuntime, ModuleSpec};
use verge_runtime_wasm::{WasmOptions, WasmRuntime};
use verge_twin::TwinStore;

const DEVICE: &str = "bench";
/// Messages per producer commit in the hub scenarios.
const COMMIT_BATCH: usize = 64;
/// Most entries a consumer takes at once.
const TAKE_MAX: usize = 256;
/// Messages per commit of the paced producer in the latency scenarios.
const PACED_BATCH: usize = 8;
/// The in-process hop goal (messaging.md §6.4): p99 under 50 µs at half load.
const HOP_P99_GOAL_US: f64 = 50.0;

/// Foundation's own row fields: (cores busy in this process, cores stolen by the hypervisor)
/// over the run: CPU time over wall time (2.0 = both cores busy).
#[derive(Debug, Default)]
struct Cores(Option<(f64, f64)>);

impl Extra for Cores {
    fn cpu(&self) -> Fields {
        vec![
            ("cores_busy", json!(self.0.map(|c| round(c.0, 2)))),
            ("cores_stolen", json!(self.0.map(|c| round(c.1, 2)))),
        ]
    }
}

/// One line of the table (and of the JSON).
type Row = report::Row<Cores>;

/// Measures how busy the process kept the machine since it started, and how much CPU the
/// hypervisor took away meanwhile.
struct CpuMeter(f64, f64, Instant);

impl CpuMeter {
    fn start() -> Self {
        Self(process_cpu_seconds(), steal_seconds(), Instant::now())
    }

    /// (cores busy in this process, cores stolen by the hypervisor), on average.
    fn cores(&self) -> (f64, f64) {
        let wall = self.2.elapsed().as_secs_f64();
        (
            (process_cpu_seconds() - self.0) / wall,
            (steal_seconds() - self.1) / wall,
        )
    }
}

/// Pauses a spinning thread sees on an otherwise idle machine (hypervisor, kernel): (pauses
/// over 100 µs per core-second, longest in µs). Context for the latency tails.
fn stalls() -> (f64, f64) {
    let spin = Duration::from_millis(500);
    let threads: Vec<_> = (0..std::thread::available_parallelism().map_or(1, usize::from))
        .map(|_| {
            std::thread::spawn(move || {
                let start = Instant::now();
                let (mut last, mut count, mut longest) = (start, 0u32, Duration::ZERO);
                while last - start < spin {
                    let now = Instant::now();
                    let gap = now - last;
                    if gap > Duration::from_micros(100) {
                        count += 1;
                        longest = longest.max(gap);
                    }
                    last = now;
                }
                (count, longest)
            })
        })
        .collect();
    let cores = threads.len() as f64;
    let (count, longest) = threads
        .into_iter()
        .filter_map(|t| t.join().ok())
        .fold((0, Duration::ZERO), |(c, l), (c2, l2)| (c + c2, l.max(l2)));
    (
        f64::from(count) / cores / spin.as_secs_f64(),
        longest.as_secs_f64() * 1e6,
    )
}

fn hub_with(routes: &[String]) -> Arc<Hub> {
    let hub = Hub::new(HubOptions {
        device_id: DEVICE.into(),
        queue_limits: QueueLimits::default(),
        resident_per_queue: usize::MAX,
    });
    hub.install(RouteSet::compile(&route_specs(routes), 7200).expect("bench routes compile"));
    hub
}

/// Routes from module `src` (any output) to `sinks` module inputs.
fn fanout_routes(sinks: usize) -> Vec<String> {
    (0..sinks)
        .map(|i| format!("FROM /messages/modules/src/outputs/* INTO BrokeredEndpoint(\"/modules/sink{i}/inputs/in\")"))
        .collect()
}

/// Stamped 256-byte messages from `src` on `out`, as a module's host would hand them to the hub.
fn message_pool(hub: &Hub, n: usize) -> Vec<Arc<Message>> {
    let src = Identity::module(DEVICE, "src");
    (0..n)
        .map(|i| {
            let mut m = Message::new(vec![b'x'; BODY]).with_property("n", &i.to_string());
            hub.stamp(&src, Some("out".into()), &mut m);
            Arc::new(m)
        })
        .collect()
}

/// What one consumer saw.
#[derive(Debug, Default)]
struct Consumed {
    deliveries: u64,
    takes: u64,
    latencies: Vec<u64>,
}

/// Take and ack until `expected` (set when the producers are done) deliveries arrived.
/// With `latency`, records `now - enqueued` of every entry enqueued after that time.
async fn consume(
    mut consumer: Consumer,
    expected: Arc<AtomicU64>,
    done: Arc<Notify>,
    latency: Option<SystemTime>,
) -> Consumed {
    let mut out = Vec::with_capacity(TAKE_MAX);
    let mut seen = Consumed::default();
    if latency.is_some() {
        seen.latencies.reserve(4 << 20);
    }
    loop {
        let mut finished = pin!(done.notified());
        finished.as_mut().enable();
        if seen.deliveries >= expected.load(Ordering::Acquire) {
            return seen;
        }
        tokio::select! {
            biased;
            n = consumer.take(TAKE_MAX, &mut out) => {
                if let Some(warmup) = latency {
                    let now = SystemTime::now();
                    for e in &out {
                        if e.enqueued >= warmup
                            && let Ok(d) = now.duration_since(e.enqueued)
                        {
                            seen.latencies.push(d.as_nanos() as u64);
                        }
                    }
                }
                for e in out.drain(..) {
                    consumer.ack(e.seq);
                }
                seen.deliveries += n as u64;
                seen.takes += 1;
            }
            () = &mut finished => {}
        }
    }
}

struct HubRun {
    messages: u64,
    deliveries: u64,
    seconds: f64,
    takes: u64,
    wakeups: u64,
    latencies: Vec<u64>,
}

/// The paced producer: a plain thread (as a producer on its own core) that wakes every
/// `PACE_SLEEP` and calls `send` (one commit of `PACED_BATCH`) until `rate` messages/s are due;
/// with an infinite `rate` it sends without pause. Returns (messages, wake-ups).
fn paced(
    rate: f64,
    duration: Duration,
    mut send: impl FnMut() + Send + 'static,
) -> std::thread::JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let (mut sent, mut wakeups) = (0u64, 0u64);
        while t0.elapsed() < duration {
            let due = if rate.is_finite() {
                std::thread::sleep(PACE_SLEEP);
                wakeups += 1;
                (t0.elapsed().as_secs_f64() * rate) as u64
            } else {
                sent + PACED_BATCH as u64
            };
            while sent + PACED_BATCH as u64 <= due {
                send();
                sent += PACED_BATCH as u64;
            }
        }
        (sent, wakeups)
    })
}

async fn join<T: Send + 'static>(thread: std::thread::JoinHandle<T>) -> T {
    tokio::task::spawn_blocking(move || thread.join().expect("producer thread"))
        .await
        .expect("join")
}

/// `sinks` consumer tasks take and ack. Without `pace`, one producer task commits batches of
/// `COMMIT_BATCH` as fast as it can for `duration`; with `pace` (messages/s), [`paced`] commits
/// batches of `PACED_BATCH` from its thread.
async fn hub_run(sinks: usize, duration: Duration, pace: Option<f64>) -> HubRun {
    let hub = hub_with(&fanout_routes(sinks));
    let pool = message_pool(&hub, 4096);
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let done = Arc::new(Notify::new());
    let start = Instant::now();
    let warmup = pace.map(|_| SystemTime::now() + duration / 10);
    let consumers: Vec<_> = (0..sinks)
        .map(|i| {
            let consumer = hub
                .consume(&Target::Module(format!("sink{i}").into()))
                .expect("one consumer per sink");
            tokio::spawn(consume(
                consumer,
                Arc::clone(&expected),
                Arc::clone(&done),
                warmup,
            ))
        })
        .collect();
    let mut next = 0usize;
    let mut batch_of = move |n: usize| -> Vec<Arc<Message>> {
        let messages = (0..n)
            .map(|k| Arc::clone(&pool[(next + k) % pool.len()]))
            .collect();
        next = (next + n) % pool.len();
        messages
    };
    let (messages, wakeups) = match pace {
        Some(rate) => {
            let (hub, runtime) = (Arc::clone(&hub), tokio::runtime::Handle::current());
            join(paced(rate, duration, move || {
                runtime
                    .block_on(hub.commit(Commit {
                        messages: batch_of(PACED_BATCH),
                        ack: None,
                        ..Commit::default()
                    }))
                    .expect("an in-memory hub accepts");
            }))
            .await
        }
        None => {
            let hub = Arc::clone(&hub);
            let producer = tokio::spawn(async move {
                let deadline = Instant::now() + duration;
                let mut sent = 0u64;
                while Instant::now() < deadline {
                    let messages = batch_of(COMMIT_BATCH);
                    hub.commit(Commit {
                        messages,
                        ack: None,
                        ..Commit::default()
                    })
                    .await
                    .expect("an in-memory hub accepts");
                    sent += COMMIT_BATCH as u64;
                }
                sent
            });
            (producer.await.expect("producer"), 0)
        }
    };
    expected.store(messages, Ordering::Release);
    done.notify_waiters();
    let mut run = HubRun {
        messages,
        deliveries: 0,
        seconds: 0.0,
        takes: 0,
        wakeups,
        latencies: Vec::new(),
    };
    for c in consumers {
        let seen = c.await.expect("consumer");
        run.deliveries += seen.deliveries;
        run.takes += seen.takes;
        run.latencies.extend(seen.latencies);
    }
    run.seconds = start.elapsed().as_secs_f64();
    run
}

/// The floor of this machine for the paced hop: the same producer thread, pacing and batches,
/// through a bounded `tokio::sync::mpsc` of `(message, sent)` instead of the hub.
async fn mpsc_run(duration: Duration, rate: f64) -> HubRun {
    let hub = hub_with(&[]);
    let pool = message_pool(&hub, 4096);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Arc<Message>, SystemTime)>(
        QueueLimits::default().max_messages,
    );
    let warmup = SystemTime::now() + duration / 10;
    let start = Instant::now();
    let consumer = tokio::spawn(async move {
        let mut seen = Consumed::default();
        seen.latencies.reserve(4 << 20);
        let mut out = Vec::with_capacity(TAKE_MAX);
        while rx.recv_many(&mut out, TAKE_MAX).await > 0 {
            let now = SystemTime::now();
            for (_, sent) in &out {
                if *sent >= warmup
                    && let Ok(d) = now.duration_since(*sent)
                {
                    seen.latencies.push(d.as_nanos() as u64);
                }
            }
            seen.deliveries += out.len() as u64;
            seen.takes += 1;
            out.clear();
        }
        seen
    });
    let mut next = 0usize;
    let (messages, wakeups) = join(paced(rate, duration, move || {
        let now = SystemTime::now();
        for _ in 0..PACED_BATCH {
            let _ = tx.blocking_send((Arc::clone(&pool[next]), now));
            next = (next + 1) % pool.len();
        }
    }))
    .await;
    let seen = consumer.await.expect("consumer");
    HubRun {
        messages,
        deliveries: seen.deliveries,
        seconds: start.elapsed().as_secs_f64(),
        takes: seen.takes,
        wakeups,
        latencies: seen.latencies,
    }
}

/// The runtime of the latency runs: one worker for the consumers, so that with the producer's
/// thread the two cores each run one side of the hop.
fn latency_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn hub_scenarios(runtime: &tokio::runtime::Runtime, rows: &mut Vec<Row>, filter: &Filter) {
    // VERGE_BENCH_PACE (messages/s in) paces the latency runs instead of half the measured max.
    let fixed_pace = fixed_pace();
    for (sinks, goal) in [(1usize, 1_000_000f64), (4, 3_000_000f64)] {
        let name = format!("hub-1to{sinks}");
        let unit = if sinks == 1 { "msg/s" } else { "deliveries/s" };
        if filter.matches(&name) {
            let runs: Vec<_> = (0..RUNS)
                .map(|_| {
                    let cpu = CpuMeter::start();
                    let run = runtime.block_on(hub_run(sinks, scaled(2.0), None));
                    (run, cpu.cores())
                })
                .collect();
            let ((run, cores), rates) = median(runs, |(r, _)| r.deliveries as f64 / r.seconds);
            let rate = run.deliveries as f64 / run.seconds;
            rows.push(Row {
                scenario: name.clone(),
                messages: run.deliveries,
                seconds: run.seconds,
                rate,
                unit,
                extra: Cores(Some(cores)),
                goal: format!(">= {} {unit}", fmt_rate(goal)),
                pass: Some(rate >= goal),
                notes: format!(
                    "median of {RUNS} ({rates}); 1 producer task, commits of {COMMIT_BATCH}; {sinks} consumer task(s), take <= {TAKE_MAX} (avg {:.0}), ack each",
                    run.deliveries as f64 / run.takes.max(1) as f64
                ),
                ..Row::default()
            });
        }
        let lat_name = format!("{name}-lat");
        if !filter.matches(&lat_name) {
            continue;
        }
        // Half the most this configuration (producer thread, commits of 8, consumers on one
        // worker) carries.
        let (pace, max) = match fixed_pace {
            Some(pace) => (pace, None),
            None => {
                let max =
                    latency_runtime().block_on(hub_run(sinks, scaled(1.5), Some(f64::INFINITY)));
                let max = max.messages as f64 / max.seconds;
                (max / 2.0, Some(max))
            }
        };
        let runs: Vec<_> = (0..RUNS)
            .map(|_| {
                let cpu = CpuMeter::start();
                let mut run = latency_runtime().block_on(hub_run(sinks, scaled(2.0), Some(pace)));
                let cores = cpu.cores();
                let latency = Pct::of(&mut run.latencies);
                (run, cores, latency)
            })
            .collect();
        let ((lat, cores, latency), p99s) = median(runs, |(_, _, l)| l.map_or(f64::MAX, |l| l.p99));
        rows.push(Row {
            scenario: lat_name,
            messages: lat.deliveries,
            seconds: lat.seconds,
            rate: lat.deliveries as f64 / lat.seconds,
            unit,
            latency,
            extra: Cores(Some(cores)),
            goal: format!("p99 < {HOP_P99_GOAL_US} µs"),
            pass: latency.map(|l| l.p99 < HOP_P99_GOAL_US),
            notes: format!(
                "run with the median p99 of {RUNS} (p99s in µs: {p99s}); producer thread at {}/s in{} (wakes every {:.0} µs, commits of {PACED_BATCH}); consumers on 1 worker; avg take {:.1}",
                fmt_rate(pace),
                max.map_or_else(String::new, |m| format!(" = 50% of this setup's max {}/s", fmt_rate(m))),
                lat.seconds * 1e6 / lat.wakeups.max(1) as f64,
                lat.deliveries as f64 / lat.takes.max(1) as f64
            ),
        });
        if sinks == 1 && filter.matches("mpsc-1to1-lat") {
            let runs: Vec<_> = (0..RUNS)
                .map(|_| {
                    let cpu = CpuMeter::start();
                    let mut run = latency_runtime().block_on(mpsc_run(scaled(2.0), pace));
                    let cores = cpu.cores();
                    let latency = Pct::of(&mut run.latencies);
                    (run, cores, latency)
                })
                .collect();
            let ((base, cores, latency), p99s) =
                median(runs, |(_, _, l)| l.map_or(f64::MAX, |l| l.p99));
            rows.push(Row {
                scenario: "mpsc-1to1-lat".into(),
                messages: base.deliveries,
                seconds: base.seconds,
                rate: base.deliveries as f64 / base.seconds,
                unit,
                latency,
                extra: Cores(Some(cores)),
                goal: "reference".into(),
                pass: None,
                notes: format!(
                    "this machine's floor: hub-1to1-lat's harness and pace through a tokio mpsc(10000) instead of the hub; p99s {p99s}"
                ),
            });
        }
    }
}

/// A hub, twins and the wasm runtime, with modules started as the agent would.
struct WasmRig {
    hub: Arc<Hub>,
    twins: Arc<TwinStore>,
    runtime: WasmRuntime,
    image: String,
}

/// A hub on a fresh durable store under `target/bench/`, with `routes`.
fn durable_hub_with(routes: &[String]) -> Arc<Hub> {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let dir = report::bench_dir().join(format!(
        "store-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let (store, recovered) = verge_store::Store::open(
        &dir.join("messages.redb"),
        verge_store::StoreOptions::default(),
    )
    .expect("open a bench store");
    let hub = Hub::with_store(HubOptions::new(DEVICE), store, &recovered);
    hub.install(RouteSet::compile(&route_specs(routes), 7200).expect("bench routes compile"));
    hub
}

fn route_specs(routes: &[String]) -> Vec<RouteSpec> {
    routes
        .iter()
        .enumerate()
        .map(|(i, route)| RouteSpec {
            name: format!("r{i}"),
            route: route.clone(),
            priority: None,
            time_to_live_secs: None,
        })
        .collect()
}

impl WasmRig {
    fn new(routes: &[String], durable: bool) -> Self {
        let cache = report::bench_dir().join("wasm-cache");
        let runtime = WasmRuntime::new(WasmOptions::new(cache)).expect("wasm runtime");
        Self {
            hub: if durable {
                durable_hub_with(routes)
            } else {
                hub_with(routes)
            },
            twins: Arc::new(TwinStore::new()),
            runtime,
            image: verge_tests::guest("misbehave").display().to_string(),
        }
    }

    async fn start(&self, name: &str, env: &[(&str, String)]) -> (ModuleHandle, ModuleLog) {
        let spec = ModuleSpec {
            name: name.into(),
            kind: "wasm".into(),
            image: self.image.clone(),
            version: "1".into(),
            create_options: None,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
            ..ModuleSpec::default()
        };
        self.runtime
            .prepare(&spec)
            .await
            .expect("prepare misbehave");
        let log = ModuleLog::new(1 << 20);
        let context = ModuleContext {
            identity: Identity::module(DEVICE, name),
            generation_id: "bench".into(),
            iothub_hostname: "hub.example".into(),
            gateway_hostname: "edge.example".into(),
            hub: Arc::clone(&self.hub),
            twins: Arc::clone(&self.twins),
            log: log.clone(),
        };
        let handle = self
            .runtime
            .start(&spec, context)
            .await
            .expect("start module");
        (handle, log)
    }
}

/// What feeds the pipeline.
#[derive(Clone, Copy, Debug)]
enum Feed {
    /// `count` misbehave `source` modules, each `Burst` messages per tick of `TickMs`.
    Source {
        burst: u32,
        tick_ms: u32,
        count: usize,
    },
    /// A harness task committing batches of `COMMIT_BATCH` messages stamped as from `src`.
    Harness,
}

struct WasmRun {
    messages: u64,
    seconds: f64,
    first_queue_avg: f64,
    /// Each runtime worker's busy share of the measured window.
    workers_busy: Vec<f64>,
    /// Takes from `$upstream` in the measured window.
    takes: u64,
    /// Worker parks in the measured window.
    parks: u64,
    hops: Vec<u64>,
    e2e: Vec<u64>,
}

/// Times the runtime's workers parked (went to sleep for lack of work) so far.
fn workers_parked() -> u64 {
    let metrics = Handle::current().metrics();
    (0..metrics.num_workers())
        .map(|w| metrics.worker_park_count(w))
        .sum()
}

fn nanos_property(m: &Message, name: &str) -> Option<u64> {
    m.properties().get(name).and_then(|v| v.parse().ok())
}

const RELAY_TO_UPSTREAM: &str = "FROM /messages/modules/relay/outputs/* INTO $upstream";

/// The source modules' names: `src`, or `src0`… for several.
fn source_names(feed: Feed) -> Vec<String> {
    match feed {
        Feed::Source { count, .. } if count > 1 => (0..count).map(|i| format!("src{i}")).collect(),
        _ => vec!["src".into()],
    }
}

/// `feed` → (relay →) `$upstream`, taken and acked by the harness; counts what reaches upstream
/// in `measure` after `warmup`. With `stamp`, collects `t1 - t0` and `now - t0` per message.
/// Runs as a task: the harness's consumer is a task on the runtime's workers, as an upstream link
/// would be (not the thread that called `block_on`).
async fn wasm_run(
    feed: Feed,
    relay: bool,
    stamp: bool,
    warmup: Duration,
    measure: Duration,
) -> WasmRun {
    wasm_run_on(feed, relay, stamp, false, warmup, measure).await
}

async fn wasm_run_on(
    feed: Feed,
    relay: bool,
    stamp: bool,
    durable: bool,
    warmup: Duration,
    measure: Duration,
) -> WasmRun {
    tokio::spawn(wasm_pipeline(feed, relay, stamp, durable, warmup, measure))
        .await
        .expect("wasm run")
}

async fn wasm_pipeline(
    feed: Feed,
    relay: bool,
    stamp: bool,
    durable: bool,
    warmup: Duration,
    measure: Duration,
) -> WasmRun {
    let into = if relay {
        "BrokeredEndpoint(\"/modules/relay/inputs/in\")"
    } else {
        "$upstream"
    };
    let mut routes: Vec<String> = source_names(feed)
        .iter()
        .map(|src| format!("FROM /messages/modules/{src}/outputs/* INTO {into}"))
        .collect();
    if relay {
        routes.push(RELAY_TO_UPSTREAM.into());
    }
    let rig = WasmRig::new(&routes, durable);
    let mut upstream = rig
        .hub
        .consume(&Target::Upstream)
        .expect("upstream consumer");
    let mut logs = Vec::new();
    let mut modules = Vec::new();
    if relay {
        let env = [
            ("Mode", "relay".to_owned()),
            ("Stamp", if stamp { "1" } else { "0" }.to_owned()),
        ];
        let (handle, log) = rig.start("relay", &env).await;
        modules.push(handle);
        logs.push(("relay", log));
    }
    let feeder = match feed {
        Feed::Source { burst, tick_ms, .. } => {
            let env = [
                ("Mode", "source".to_owned()),
                ("Burst", burst.to_string()),
                ("TickMs", tick_ms.to_string()),
                ("Size", BODY.to_string()),
                ("Stamp", if stamp { "1" } else { "0" }.to_owned()),
            ];
            for name in source_names(feed) {
                let (handle, log) = rig.start(&name, &env).await;
                modules.insert(0, handle);
                logs.push(("src", log));
            }
            None
        }
        Feed::Harness => {
            let hub = Arc::clone(&rig.hub);
            let pool = message_pool(&hub, 4096);
            Some(tokio::spawn(async move {
                let mut next = 0;
                loop {
                    let messages = (0..COMMIT_BATCH)
                        .map(|k| Arc::clone(&pool[(next + k) % pool.len()]))
                        .collect();
                    next = (next + COMMIT_BATCH) % pool.len();
                    hub.commit(Commit {
                        messages,
                        ack: None,
                        ..Commit::default()
                    })
                    .await
                    .expect("an in-memory hub accepts");
                }
            }))
        }
    };
    let first_queue = rig.hub.queue(&if relay {
        Target::Module("relay".into())
    } else {
        Target::Upstream
    });

    let started = Instant::now();
    let measure_from = started + warmup;
    let measure_until = measure_from + measure;
    let mut out = Vec::with_capacity(TAKE_MAX);
    let mut run = WasmRun {
        messages: 0,
        seconds: measure.as_secs_f64(),
        first_queue_avg: 0.0,
        workers_busy: Vec::new(),
        takes: 0,
        parks: 0,
        hops: Vec::new(),
        e2e: Vec::new(),
    };
    let mut busy_at_start = None;
    let mut queue_samples = (0u64, 0u64);
    let mut next_sample = measure_from;
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), upstream.take(TAKE_MAX, &mut out))
            .await
            .unwrap_or_else(|_| {
                let logs: String = logs
                    .iter()
                    .map(|(name, log)| format!("{name} log:\n{}", tail(log)))
                    .collect();
                panic!("nothing reached $upstream for 5 s\n{logs}")
            });
        let now = Instant::now();
        if now >= measure_from {
            let busy_then = busy_at_start
                .get_or_insert_with(|| (now, workers_busy(&Handle::current()), workers_parked()));
            if now >= measure_until {
                let window = (now - busy_then.0).as_secs_f64();
                run.workers_busy =
                    busy_shares(&busy_then.1, &workers_busy(&Handle::current()), window);
                run.parks = workers_parked() - busy_then.2;
                break;
            }
            if now >= next_sample {
                queue_samples.0 += first_queue.stats().queued;
                queue_samples.1 += 1;
                next_sample = now + Duration::from_millis(10);
            }
            run.messages += n as u64;
            run.takes += 1;
            if stamp {
                let wall = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                for e in &out {
                    if let (Some(t0), Some(t1)) = (
                        nanos_property(&e.message, "t0"),
                        nanos_property(&e.message, "t1"),
                    ) {
                        run.hops.push(t1.saturating_sub(t0));
                        run.e2e.push(wall.saturating_sub(t0));
                    }
                }
            }
        }
        // One ack for what was taken, as an upstream link acks a batch.
        upstream.ack_all(out.drain(..).map(|e| e.seq));
    }
    run.first_queue_avg = queue_samples.0 as f64 / queue_samples.1.max(1) as f64;
    if let Some(feeder) = feeder {
        feeder.abort();
    }
    for mut module in modules {
        module.stop(Duration::from_secs(2)).await;
    }
    drop(upstream);
    run
}

fn tail(log: &ModuleLog) -> String {
    log.tail(Some(20))
        .into_iter()
        .fold(String::new(), |mut s, l| {
            let _ = writeln!(s, "{}", l.text);
            s
        })
}

async fn wasm_scenarios(rows: &mut Vec<Row>, filter: &Filter) {
    let warmup = Duration::from_millis(500);
    // tokio's timer has 1 ms granularity, so a source ticks at most about 1000 times a second.
    let burst = 1000;
    let source = Feed::Source {
        burst,
        tick_ms: 0,
        count: 1,
    };
    if filter.matches("wasm-relay") {
        let goal = 250_000.0;
        let mut runs = Vec::new();
        for _ in 0..RUNS {
            let cpu = CpuMeter::start();
            let run = wasm_run(source, true, false, warmup, scaled(3.0)).await;
            runs.push((run, cpu.cores()));
        }
        let ((run, cores), rates) = median(runs, |(r, _)| r.messages as f64 / r.seconds);
        let rate = run.messages as f64 / run.seconds;
        rows.push(Row {
            scenario: "wasm-relay".into(),
            messages: run.messages,
            seconds: run.seconds,
            rate,
            unit: "msg/s",
            extra: Cores(Some(cores)),
            goal: format!(">= {} msg/s", fmt_rate(goal)),
            pass: Some(rate >= goal),
            notes: format!(
                "median of {RUNS} ({rates}); source Burst={burst} TickMs=0 -> relay -> $upstream; relay queue avg {:.0}/{}; harness avg take {:.0}; worker parks/1k msgs {:.1}; workers busy {}",
                run.first_queue_avg,
                QueueLimits::default().max_messages,
                run.messages as f64 / run.takes.max(1) as f64,
                run.parks as f64 * 1000.0 / run.messages.max(1) as f64,
                percentages(&run.workers_busy)
            ),
            ..Row::default()
        });
    }
    if filter.matches("wasm-relay-durable") {
        let mut runs = Vec::new();
        for _ in 0..RUNS {
            let cpu = CpuMeter::start();
            let run = wasm_run_on(source, true, false, true, warmup, scaled(3.0)).await;
            runs.push((run, cpu.cores()));
        }
        let ((run, cores), rates) = median(runs, |(r, _)| r.messages as f64 / r.seconds);
        rows.push(Row {
            scenario: "wasm-relay-durable".into(),
            messages: run.messages,
            seconds: run.seconds,
            rate: run.messages as f64 / run.seconds,
            unit: "msg/s",
            extra: Cores(Some(cores)),
            goal: "report vs wasm-relay".into(),
            notes: format!(
                "median of {RUNS} ({rates}); as wasm-relay on the durable store: every relay input is taken and its output queued in one store batch (exactly once); relay queue avg {:.0}; workers busy {}",
                run.first_queue_avg,
                percentages(&run.workers_busy)
            ),
            ..Row::default()
        });
    }
    // Each stage alone, to see which one limits the pipeline.
    for (name, feed, relay, what) in [
        (
            "wasm-stage-relay",
            Feed::Harness,
            true,
            "relay alone: a harness task commits batches of 64 -> relay -> $upstream",
        ),
        (
            "wasm-stage-source",
            source,
            false,
            "source alone: source Burst=1000 -> $upstream",
        ),
    ] {
        if !filter.matches(name) {
            continue;
        }
        let cpu = CpuMeter::start();
        let run = wasm_run(feed, relay, false, warmup, scaled(2.0)).await;
        rows.push(Row {
            scenario: name.into(),
            messages: run.messages,
            seconds: run.seconds,
            rate: run.messages as f64 / run.seconds,
            unit: "msg/s",
            extra: Cores(Some(cpu.cores())),
            goal: "diagnostic".into(),
            notes: format!(
                "{what}; its input queue avg {:.0}; workers busy {}",
                run.first_queue_avg,
                percentages(&run.workers_busy)
            ),
            ..Row::default()
        });
    }
    // (sources, Burst, TickMs), every message sent by its own call: one source ticking every
    // 1 ms (about 500 msg/s), and 16 sources ticking as fast as the timer allows (about 14 k
    // msg/s). VERGE_BENCH_LAT_FEEDS="count:burst:tick,..." overrides.
    let feeds: Vec<(usize, u32, u32)> = std::env::var("VERGE_BENCH_LAT_FEEDS")
        .ok()
        .map(|v| {
            v.split(',')
                .filter_map(|f| {
                    let mut it = f.split(':').map(str::parse::<u32>);
                    Some((
                        it.next()?.ok()? as usize,
                        it.next()?.ok()?,
                        it.next()?.ok()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_else(|| vec![(1, 1, 1), (16, 1, 0)]);
    for (count, burst, tick) in feeds {
        let name = format!("wasm-hop-lat-{count}x{burst}");
        if !filter.matches(&name) {
            continue;
        }
        let feed = Feed::Source {
            burst,
            tick_ms: tick,
            count,
        };
        let cpu = CpuMeter::start();
        let mut run = wasm_run(feed, true, true, warmup, scaled(3.0)).await;
        let cores = cpu.cores();
        let latency = Pct::of(&mut run.hops);
        let e2e = Pct::of(&mut run.e2e);
        rows.push(Row {
            scenario: name,
            messages: run.messages,
            seconds: run.seconds,
            rate: run.messages as f64 / run.seconds,
            unit: "msg/s",
            latency,
            extra: Cores(Some(cores)),
            goal: format!("p99 < {HOP_P99_GOAL_US} µs"),
            pass: latency.map(|l| l.p99 < HOP_P99_GOAL_US),
            notes: format!(
                "{count} source(s) Burst={burst} TickMs={tick}; hop = relay's t1 - source's t0; source -> harness take p50 {:.1} p99 {:.1} µs",
                e2e.map_or(f64::NAN, |l| l.p50),
                e2e.map_or(f64::NAN, |l| l.p99)
            ),
        });
    }
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<18} {:>10} {:>6} {:>14} {:>8} {:>8} {:>5} {:<20} {:<4}",
        "scenario", "messages", "secs", "rate", "p50 µs", "p99 µs", "cores", "goal", "pass"
    );
    for r in rows {
        println!(
            "{:<18} {:>10} {:>6.2} {:>14} {:>8} {:>8} {:>5} {:<20} {:<4}",
            r.scenario,
            r.messages,
            r.seconds,
            r.rate_cell(),
            or_dash(r.latency.map(|l| l.p50), 1),
            or_dash(r.latency.map(|l| l.p99), 1),
            or_dash(r.extra.0.map(|c| c.0), 2),
            r.goal,
            r.pass_cell()
        );
        let stolen = stolen_note(r.extra.0.map(|c| c.1));
        println!("{:<18} {}{stolen}", "", r.notes);
    }
}

fn main() {
    let filter = Filter::from_args();
    let machine = Machine::this();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let workers = runtime.metrics().num_workers();
    let (stalls_per_s, longest_stall) = stalls();
    println!("machine: {machine}; tokio multi_thread, {workers} workers");
    println!(
        "idle machine: a spinning thread is paused > 100 µs {stalls_per_s:.0} times/s, longest {longest_stall:.0} µs"
    );
    let mut rows = Vec::new();
    hub_scenarios(&runtime, &mut rows, &filter);
    runtime.block_on(wasm_scenarios(&mut rows, &filter));
    print_table(&rows);
    let report = json!({
        "machine": machine.json(vec![
            ("tokio_workers", json!(workers)),
            ("idle_stalls_over_100us_per_s", json!(round(stalls_per_s, 1))),
            ("idle_longest_stall_us", json!(longest_stall.round())),
        ]),
        "body_bytes": BODY,
        "scenarios": rows.iter().map(Row::json).collect::<Vec<_>>(),
    });
    write_json("foundation", &report);
}
