//! What the benches print and write: a result [`Row`] (the fields every bench reports, plus its
//! own), the table cells and notes, and the JSON report under `target/bench/`.

use std::path::PathBuf;

use serde_json::{Map, Value, json};

use crate::stats::{Pct, round};

/// JSON fields in the order they are written: (name, value).
pub type Fields = Vec<(&'static str, Value)>;

/// What a bench reports beyond the shared [`Row`] fields. Each method gives the fields that go
/// at one place of the row's JSON object (none by default), so that a bench's JSON keeps its
/// field order: `scenario`, [`names`](Extra::names), `messages`, `seconds`, `rate`, `unit`,
/// [`counts`](Extra::counts), `latency_us`, [`cpu`](Extra::cpu), `goal`, `pass`,
/// [`verdicts`](Extra::verdicts), `notes` (serde_json's `preserve_order`, on in the workspace,
/// writes them in that order).
pub trait Extra {
    /// After `scenario`: what else names the row (the MQTT bench's `broker`).
    fn names(&self) -> Fields {
        Fields::new()
    }

    /// After `unit`: further counts (sent, lost, ...).
    fn counts(&self) -> Fields {
        Fields::new()
    }

    /// After `latency_us`: the cores busy, and stolen, over the run.
    fn cpu(&self) -> Fields {
        Fields::new()
    }

    /// After `pass`: further verdicts (a comparison, an error).
    fn verdicts(&self) -> Fields {
        Fields::new()
    }
}

/// One scenario's result: a line of the table (and its notes under it) and an object of the
/// JSON's `scenarios`.
#[derive(Debug, Default)]
pub struct Row<X> {
    /// The scenario's name, as the filter arguments match it.
    pub scenario: String,
    /// Messages (deliveries for fan-out) counted.
    pub messages: u64,
    /// The time `messages` were counted in.
    pub seconds: f64,
    /// `messages` / `seconds`.
    pub rate: f64,
    /// `msg/s`, or `deliveries/s` for fan-out.
    pub unit: &'static str,
    /// Latency percentiles, for the scenarios that time messages.
    pub latency: Option<Pct>,
    /// What the row is held to (`>= 1.00M msg/s`, `p99 < 50 µs`, `reference`, ...).
    pub goal: String,
    /// Whether it met the goal; `None` for a row without one.
    pub pass: Option<bool>,
    /// How the figures came about, for a person reading the table.
    pub notes: String,
    /// The bench's own fields.
    pub extra: X,
}

impl<X: Extra> Row<X> {
    /// The row's JSON object (see [`Extra`] for the field order).
    pub fn json(&self) -> Value {
        let mut fields: Fields = vec![("scenario", json!(self.scenario))];
        fields.extend(self.extra.names());
        fields.extend([
            ("messages", json!(self.messages)),
            ("seconds", json!(round(self.seconds, 3))),
            ("rate", json!(self.rate.round())),
            ("unit", json!(self.unit)),
        ]);
        fields.extend(self.extra.counts());
        fields.push(("latency_us", json!(self.latency.map(|l| l.json()))));
        fields.extend(self.extra.cpu());
        fields.extend([("goal", json!(self.goal)), ("pass", json!(self.pass))]);
        fields.extend(self.extra.verdicts());
        fields.push(("notes", json!(self.notes)));
        Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect::<Map<_, _>>(),
        )
    }
}

impl<X> Row<X> {
    /// The rate cell: `1.23M msg/s`, or `... dlv/s` for deliveries.
    pub fn rate_cell(&self) -> String {
        let unit = if self.unit == "msg/s" {
            "msg/s"
        } else {
            "dlv/s"
        };
        format!("{} {unit}", fmt_rate(self.rate))
    }

    /// The pass cell: `PASS`, `FAIL` or `-`.
    pub fn pass_cell(&self) -> &'static str {
        match self.pass {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "-",
        }
    }
}

/// A rate in a few characters: `2.50M`, `12.3k`, `950`.
pub fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2}M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1}k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

/// A table cell of `v` to `decimals` decimals, `-` for none.
pub fn or_dash(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// Shares as whole percentages: `97%/12%`.
pub fn percentages(shares: &[f64]) -> String {
    shares
        .iter()
        .map(|s| format!("{:.0}%", s * 100.0))
        .collect::<Vec<_>>()
        .join("/")
}

/// What a row's notes add when the hypervisor stole 0.05 cores or more on average over the run:
/// ` [hypervisor stole 0.12 cores]`; else nothing.
pub fn stolen_note(stolen: Option<f64>) -> String {
    stolen
        .filter(|s| *s >= 0.05)
        .map_or_else(String::new, |s| format!(" [hypervisor stole {s:.2} cores]"))
}

/// `target/bench/` (under `CARGO_TARGET_DIR` when set): where the benches write.
pub fn bench_dir() -> PathBuf {
    verge_tests::target_dir().join("bench")
}

/// Writes `report` as pretty JSON to `target/bench/{name}.json` and says where, or why not (a
/// bench's figures are on the console either way).
pub fn write_json(name: &str, report: &Value) {
    let dir = bench_dir();
    let path = dir.join(format!("{name}.json"));
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        std::fs::write(
            &path,
            serde_json::to_string_pretty(report).unwrap_or_default() + "\n",
        )
    });
    match written {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_cells() {
        assert_eq!(fmt_rate(2_500_000.0), "2.50M");
        assert_eq!(fmt_rate(12_345.0), "12.3k");
        assert_eq!(fmt_rate(950.4), "950");
        assert_eq!(or_dash(Some(1.25), 1), "1.2");
        assert_eq!(or_dash(None, 0), "-");
        assert_eq!(percentages(&[0.974, 0.12]), "97%/12%");
        assert_eq!(stolen_note(Some(0.01)), "");
        assert_eq!(stolen_note(Some(0.5)), " [hypervisor stole 0.50 cores]");
    }

    #[test]
    fn json_keeps_the_field_order() {
        struct Broker;
        impl Extra for Broker {
            fn names(&self) -> Fields {
                vec![("broker", json!("verge"))]
            }
            fn verdicts(&self) -> Fields {
                vec![("error", Value::Null)]
            }
        }
        let row = Row {
            scenario: "s".into(),
            unit: "msg/s",
            extra: Broker,
            messages: 0,
            seconds: 0.0,
            rate: 0.0,
            latency: None,
            goal: String::new(),
            pass: None,
            notes: String::new(),
        };
        let json = row.json();
        let keys: Vec<&str> = json
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "scenario",
                "broker",
                "messages",
                "seconds",
                "rate",
                "unit",
                "latency_us",
                "goal",
                "pass",
                "error",
                "notes"
            ]
        );
    }
}
