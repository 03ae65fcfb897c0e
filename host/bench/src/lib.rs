//! What Verge's benchmarks (`benches/foundation.rs`, `benches/mqtt.rs`, `benches/rss.rs`) share:
//! the workload constants, the settings a run takes from its arguments and environment, latency
//! statistics, the machine's description and CPU accounting, and the table and JSON output.
//!
//! - [`settings`]: scenario filters, `VERGE_BENCH_SCALE`, `VERGE_BENCH_PACE`.
//! - [`stats`]: latency percentiles, the median of several runs, rounding.
//! - [`machine`]: the CPUs, CPU time from `/proc` (process, threads, machine, hypervisor steal)
//!   and tokio workers' busy time.
//! - [`report`]: a result row, the table cells and notes, and the JSON under `target/bench/`.

use std::time::Duration;

pub mod machine;
pub mod report;
pub mod settings;
pub mod stats;

/// Bytes in every benchmark message's body.
pub const BODY: usize = 256;

/// Runs of a scenario whose median is reported.
pub const RUNS: usize = 3;

/// How long a paced producer thread sleeps when no message is due (the kernel adds its timer
/// slack: a wake-up comes about every 130 µs on the reference VM).
pub const PACE_SLEEP: Duration = Duration::from_micros(50);
