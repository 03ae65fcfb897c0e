//! The machine a bench runs on and where its CPU time goes: `/proc` accounting (this process, its
//! threads, the whole machine, the hypervisor's steal) and tokio workers' busy time.
//!
//! `/proc` counts in clock ticks of 1/100 s (Linux's `USER_HZ`); every function here answers in
//! seconds, and 0 where `/proc` cannot be read.

use std::fmt;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::runtime::Handle;

use crate::report::Fields;

/// The CPUs a bench runs on.
#[derive(Clone, Debug)]
pub struct Machine {
    /// CPUs this process may use (0 if unknown).
    pub cpus: usize,
    /// The first `model name` of `/proc/cpuinfo` (`unknown` without one).
    pub model: String,
}

impl Machine {
    /// The machine this process runs on.
    pub fn this() -> Self {
        let cpus = std::thread::available_parallelism().map_or(0, usize::from);
        let model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, m)| m.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        Self { cpus, model }
    }

    /// The report's `machine` object: `cpus`, `model`, then the bench's `more`.
    pub fn json(&self, more: Fields) -> Value {
        let mut machine = json!({
            "cpus": self.cpus,
            "model": self.model,
        });
        if let Some(fields) = machine.as_object_mut() {
            fields.extend(more.into_iter().map(|(k, v)| (k.to_owned(), v)));
        }
        machine
    }
}

/// `2 cpus, AMD EPYC`: how the benches' first line describes the machine.
impl fmt::Display for Machine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} cpus, {}", self.cpus, self.model)
    }
}

/// CPU seconds (user + system) in a `/proc/.../stat` line (of a process or a thread).
pub fn stat_cpu(stat: &str) -> f64 {
    // Fields after the command name: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, f)| f)
        .split_whitespace()
        .collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

/// CPU seconds (user + system) this process used so far.
pub fn process_cpu_seconds() -> f64 {
    stat_cpu(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default())
}

/// CPU seconds this process's threads whose name starts with `prefix` used so far.
pub fn threads_cpu(prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter(|stat| {
            stat.split_once('(')
                .is_some_and(|(_, rest)| rest.starts_with(prefix))
        })
        .map(|stat| stat_cpu(&stat))
        .sum()
}

/// The `steal` column of `/proc/stat`'s `cpu` line, for [`machine_seconds`].
const STEAL: usize = 8;

/// CPU seconds of the whole machine so far in the `/proc/stat` columns `columns` (1 user,
/// 2 nice, 3 system, 4 idle, 5 iowait, 6 irq, 7 softirq, 8 steal).
pub fn machine_seconds(columns: &[usize]) -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    cpu.split_whitespace()
        .enumerate()
        .filter(|(i, _)| columns.contains(i))
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum::<f64>()
        / 100.0
}

/// CPU seconds the hypervisor stole from this machine so far (`steal` of `/proc/stat`).
pub fn steal_seconds() -> f64 {
    machine_seconds(&[STEAL])
}

/// Each of `runtime`'s workers' busy time so far.
pub fn workers_busy(runtime: &Handle) -> Vec<Duration> {
    let metrics = runtime.metrics();
    (0..metrics.num_workers())
        .map(|w| metrics.worker_total_busy_duration(w))
        .collect()
}

/// Each worker's busy share of `wall` seconds, from [`workers_busy`] `before` and `after`.
pub fn busy_shares(before: &[Duration], after: &[Duration], wall: f64) -> Vec<f64> {
    after
        .iter()
        .zip(before)
        .map(|(b, a)| b.saturating_sub(*a).as_secs_f64() / wall)
        .collect()
}
