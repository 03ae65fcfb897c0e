//! Latency percentiles, the median of several runs, rounding for the JSON.

use serde_json::{Value, json};

use crate::report::fmt_rate;

/// Latency percentiles, in µs.
#[derive(Clone, Copy, Debug)]
pub struct Pct {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// The largest sample.
    pub max: f64,
}

impl Pct {
    /// Of nanosecond samples (sorts them); `None` without samples.
    pub fn of(samples: &mut [u64]) -> Option<Self> {
        samples.sort_unstable();
        let n = samples.len();
        let at = |per_mille: usize| {
            samples
                .get((n * per_mille / 1000).min(n.checked_sub(1)?))
                .map(|&v| v as f64 / 1000.0)
        };
        Some(Self {
            p50: at(500)?,
            p90: at(900)?,
            p99: at(990)?,
            p999: at(999)?,
            max: at(1000)?,
        })
    }

    /// `{"p50", "p90", "p99", "p99.9", "max"}`, to 0.1 µs.
    pub fn json(&self) -> Value {
        json!({
            "p50": round(self.p50, 1),
            "p90": round(self.p90, 1),
            "p99": round(self.p99, 1),
            "p99.9": round(self.p999, 1),
            "max": round(self.max, 1),
        })
    }
}

/// `v` rounded to `digits` decimals.
pub fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// The median of `runs` by `key`, with every run's key (sorted, as [`fmt_rate`] writes them)
/// for the notes.
pub fn median<T>(mut runs: Vec<T>, key: impl Fn(&T) -> f64) -> (T, String) {
    runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let keys: Vec<String> = runs.iter().map(|r| fmt_rate(key(r))).collect();
    let middle = runs.len() / 2;
    let run = runs.swap_remove(middle);
    (run, keys.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_nanoseconds_in_microseconds() {
        let mut samples: Vec<u64> = (1..=1000).rev().map(|v| v * 1000).collect();
        let p = Pct::of(&mut samples).expect("samples");
        assert_eq!(
            (p.p50, p.p90, p.p99, p.p999, p.max),
            (501.0, 901.0, 991.0, 1000.0, 1000.0)
        );
        assert!(Pct::of(&mut []).is_none());
    }

    #[test]
    fn median_names_every_run() {
        let (run, keys) = median(vec![2_500_000.0, 45.3, 1500.0], |v| *v);
        assert_eq!(run, 1500.0);
        assert_eq!(keys, "45, 1.5k, 2.50M");
    }
}
