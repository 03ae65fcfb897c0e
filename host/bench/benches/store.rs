//! The durable store under an outage: `cargo bench -p verge-bench --bench store`.
//!
//! A hub on a fresh redb store under `target/bench/` (default options: 16 MiB page cache, 8192
//! entries per queue in memory), the route `FROM /messages/* INTO $upstream`, 256-byte messages
//! stamped as a leaf device's, release build, in this process.
//!
//! 1. `backlog`: upstream is away (no consumer). A producer task commits batches of 256 messages
//!    and waits for each to be durable (`Hub::commit`), eight commits in flight, until 1 000 000
//!    messages are queued. Reported: the ingest rate, the process's RSS (`VmRSS`) before, at
//!    100 k, 500 k and 1 M queued, and the store file's size.
//! 2. `drain`: upstream comes back: a consumer task takes up to 512 entries, acks them, and goes
//!    on, while a live producer keeps committing 5 000 msg/s (batches of 50 every 10 ms, each
//!    awaited to disk on its own task). Drain rate = messages delivered ÷ time until the backlog
//!    is gone; the live producer's rate and its commits' latency (submit → durable, p50/p99) over
//!    the same time are reported next to it: live traffic must not stall behind the drain.
//! 3. `reuse`: once drained, the store compacts itself (its file is over 64 MiB and empty); a
//!    second backlog of 1 000 000 is written and drained again; reported: the file size after each
//!    drain and after the second fill (freed pages are reused, so it does not grow without bound).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use verge_bench::BODY;
use verge_bench::report::{bench_dir, write_json};
use verge_hub::{Commit, Hub, HubOptions, Identity, RouteSet, RouteSpec, Target};
use verge_message::Message;

const BACKLOG: u64 = 1_000_000;
const BATCH: usize = 256;
const IN_FLIGHT: usize = 8;
const LIVE_RATE: u64 = 5_000;

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn batch(hub: &Hub, from: u64) -> Vec<Arc<Message>> {
    let leaf = Identity::device("leaf");
    (0..BATCH as u64)
        .map(|i| {
            let mut body = format!("{:08}", from + i).into_bytes();
            body.resize(BODY, b'x');
            let mut m = Message::new(body).with_property("n", "1");
            hub.stamp(&leaf, None, &mut m);
            Arc::new(m)
        })
        .collect()
}

/// Commit `n` messages, `IN_FLIGHT` commits at a time; calls `at` after each batch with the
/// count so far.
async fn fill(hub: &Arc<Hub>, n: u64, mut at: impl FnMut(u64)) -> Duration {
    let started = Instant::now();
    let mut pending = std::collections::VecDeque::new();
    let mut sent = 0;
    while sent < n {
        let submitted = hub
            .submit(Commit {
                messages: batch(hub, sent),
                ..Commit::default()
            })
            .await
            .expect("the store accepts");
        pending.push_back(submitted.durable);
        if pending.len() >= IN_FLIGHT
            && let Some(durable) = pending.pop_front()
        {
            durable.await.expect("durable");
        }
        sent += BATCH as u64;
        at(sent);
    }
    for durable in pending {
        durable.await.expect("durable");
    }
    started.elapsed()
}

/// What the live producer saw while a backlog drained.
struct Live {
    messages: u64,
    /// Submit → durable of each live commit, µs.
    latencies: Vec<u64>,
}

/// Drain the upstream queue while a live producer commits `LIVE_RATE` msg/s (a batch every
/// 10 ms, each awaited to disk on its own task, as MQTT sessions pipeline their commits); returns
/// (drain seconds, backlog delivered, what the live producer saw meanwhile).
async fn drain(hub: &Arc<Hub>, backlog: u64) -> (f64, u64, Live) {
    let stop = Arc::new(AtomicBool::new(false));
    let live = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let producer = {
        let (hub, stop, live, latencies) = (
            Arc::clone(hub),
            Arc::clone(&stop),
            Arc::clone(&live),
            Arc::clone(&latencies),
        );
        tokio::spawn(async move {
            let per_tick = (LIVE_RATE / 100) as usize;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let mut messages = batch(&hub, 0);
                messages.truncate(per_tick);
                let started = Instant::now();
                let submitted = hub
                    .submit(Commit {
                        messages,
                        ..Commit::default()
                    })
                    .await
                    .expect("live commit");
                let (live, latencies) = (Arc::clone(&live), Arc::clone(&latencies));
                tokio::spawn(async move {
                    submitted.durable.await.expect("live commit durable");
                    let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    latencies.lock().expect("latencies").push(us);
                    live.fetch_add(per_tick as u64, Ordering::Relaxed);
                });
            }
        })
    };
    let mut consumer = hub.consume(&Target::Upstream).expect("upstream consumer");
    let started = Instant::now();
    let mut delivered = 0u64;
    let mut out = Vec::with_capacity(512);
    // Backlog entries carry n=1 in their body prefix order; live ones come after them in the
    // same lane, so the backlog is gone once `backlog` entries were delivered.
    while delivered < backlog {
        out.clear();
        consumer.take(512, &mut out).await;
        delivered += consumer.ack_all(out.iter().map(|e| e.seq)) as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    let live_during = live.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let _ = producer.await;
    // Whatever live traffic is left.
    tokio::time::sleep(Duration::from_millis(200)).await;
    while consumer.try_take(512, &mut out) > 0 {
        consumer.ack_all(out.drain(..).map(|e| e.seq));
    }
    let latencies = std::mem::take(&mut *latencies.lock().expect("latencies"));
    (
        seconds,
        delivered,
        Live {
            messages: live_during,
            latencies,
        },
    )
}

/// The `p`-th percentile of `v` (sorted in place), ms.
fn pct_ms(v: &mut [u64], p: f64) -> f64 {
    v.sort_unstable();
    let at = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(at).map_or(0.0, |us| *us as f64 / 1e3)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = bench_dir().join(format!("store-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("messages.redb");
    let result = runtime.block_on(async {
        let rss_start = rss_mb();
        let (store, recovered) =
            verge_store::Store::open(&path, verge_store::StoreOptions::default())
                .expect("open the store");
        let hub = Hub::with_store(HubOptions::new("bench-edge"), Arc::clone(&store), &recovered);
        let route = RouteSpec {
            name: "up".into(),
            route: "FROM /messages/* INTO $upstream".into(),
            priority: None,
            time_to_live_secs: None,
        };
        hub.install(RouteSet::compile(&[route], 7200).expect("route"));
        let mut rss_at = Vec::new();
        let took = fill(&hub, BACKLOG, |n| {
            if [100_352, 499_968, 1_000_192].contains(&n) || n == BACKLOG {
                rss_at.push((n, rss_mb()));
            }
        })
        .await;
        let ingest = BACKLOG as f64 / took.as_secs_f64();
        let file_full = store.stats().file_bytes;
        println!(
            "backlog: {BACKLOG} messages queued at {:.0} msg/s (durable, {BATCH}/commit, {IN_FLIGHT} in flight); RSS {rss_start:.1} MB before, {} ; file {:.1} MB",
            ingest,
            rss_at
                .iter()
                .map(|(n, r)| format!("{r:.1} MB at {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            mb(file_full)
        );
        let (secs, delivered, mut live) = drain(&hub, BACKLOG).await;
        store.flush().await.expect("flush");
        let file_drained = store.stats().file_bytes;
        let (p50, p99) = (pct_ms(&mut live.latencies, 0.5), pct_ms(&mut live.latencies, 0.99));
        println!(
            "drain: {delivered} messages in {secs:.2} s = {:.0} msg/s, while live traffic committed {} ({:.0} msg/s, commit p50 {p50:.1} ms, p99 {p99:.1} ms); RSS {:.1} MB; file {:.1} MB after the drain ({} compactions)",
            delivered as f64 / secs,
            live.messages,
            live.messages as f64 / secs,
            rss_mb(),
            mb(file_drained),
            store.stats().compactions
        );
        fill(&hub, BACKLOG, |_| {}).await;
        let file_refilled = store.stats().file_bytes;
        let (secs2, delivered2, _) = drain(&hub, BACKLOG).await;
        store.flush().await.expect("flush");
        let file_after = store.stats().file_bytes;
        println!(
            "reuse: second backlog file {:.1} MB; drained at {:.0} msg/s; file {:.1} MB after",
            mb(file_refilled),
            delivered2 as f64 / secs2,
            mb(file_after)
        );
        json!({
            "backlog": { "messages": BACKLOG, "ingest_msg_s": ingest.round(), "rss_mb_start": rss_start,
                "rss_mb": rss_at.iter().map(|(n, r)| json!({"queued": n, "rss_mb": r})).collect::<Vec<_>>(),
                "file_mb": mb(file_full) },
            "drain": { "msg_s": (delivered as f64 / secs).round(), "live_msg_s": (live.messages as f64 / secs).round(),
                "live_commit_ms_p50": p50, "live_commit_ms_p99": p99, "file_mb_after": mb(file_drained) },
            "reuse": { "file_mb_refilled": mb(file_refilled), "file_mb_after": mb(file_after),
                "drain_msg_s": (delivered2 as f64 / secs2).round() },
        })
    });
    write_json("store", &result);
    let _ = std::fs::remove_dir_all(&dir);
}
