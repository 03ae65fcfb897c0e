//! What the person running a bench chooses: which scenarios (arguments) and the
//! `VERGE_BENCH_*` environment variables every bench reads.

use std::time::Duration;

/// The scenarios to run: the arguments that do not start with `-` (cargo's and libtest's
/// options do); a scenario runs if its name contains one of them, or if there are none.
#[derive(Debug, Default)]
pub struct Filter(Vec<String>);

impl Filter {
    /// This process's arguments.
    pub fn from_args() -> Self {
        Self(
            std::env::args()
                .skip(1)
                .filter(|a| !a.starts_with('-'))
                .collect(),
        )
    }

    /// Whether the scenario (or row) `name` is selected.
    pub fn matches(&self, name: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|f| name.contains(f.as_str()))
    }
}

/// `secs`, times `VERGE_BENCH_SCALE` (1 when unset or not a number).
pub fn scaled(secs: f64) -> Duration {
    let scale = std::env::var("VERGE_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(1.0);
    Duration::from_secs_f64(secs * scale)
}

/// `VERGE_BENCH_PACE`: the messages/s the latency runs are paced at instead of the bench's own
/// choice; `None` when unset or not a number.
pub fn fixed_pace() -> Option<f64> {
    std::env::var("VERGE_BENCH_PACE")
        .ok()
        .and_then(|v| v.parse().ok())
}
