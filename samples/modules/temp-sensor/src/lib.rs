//! A simulated temperature sensor, with the contract of IoT Edge's SimulatedTemperatureSensor:
//!
//! - sends on output `temperatureOutput` a JSON body
//!   `{"machine":{"temperature","pressure"},"ambient":{"temperature","humidity"},"timeCreated"}`
//!   with content type `application/json`, encoding `utf-8`, and the application properties
//!   `sequenceNumber` and `batchId`;
//! - reads the twin's desired `SendData` (default true) and `SendInterval` (seconds, default 5;
//!   fractions allowed) and follows changes to them;
//! - sends `MessageCount` messages (env, default 500; -1 for no end);
//! - on input `control`, `{"command":"reset"}` sets the machine temperature back to its minimum;
//!   so does the direct method `reset`.
//!
//! The machine temperature climbs from 21 °C by a random step per reading and wraps at 100 °C;
//! the pressure follows it between 1 and 10 bar, as in the original.

use std::time::Duration;

use serde_json::{Value, json};
use verge_sdk::{Error, InputError, Message, MethodResponse, Module, log, time, timer, twin};

const OUTPUT: &str = "temperatureOutput";
const MIN_TEMP: f64 = 21.0;
const MAX_TEMP: f64 = 100.0;
const MIN_PRESSURE: f64 = 1.0;
const MAX_PRESSURE: f64 = 10.0;

struct Sensor {
    send_data: bool,
    interval: Duration,
    /// Messages still to send; `None` sends forever.
    remaining: Option<u64>,
    sequence: u64,
    batch_id: String,
    temperature: f64,
    rng: XorShift,
    scheduled: bool,
}

/// A small pseudo-random generator; a sensor simulation needs no more.
struct XorShift(u64);

impl XorShift {
    fn seeded() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9E37_79B9, |d| d.as_nanos() as u64);
        Self(nanos | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Sensor {
    fn apply_desired(&mut self, desired: &Value) {
        if let Some(send) = desired.get("SendData").and_then(Value::as_bool) {
            self.send_data = send;
        }
        if let Some(secs) = desired.get("SendInterval").and_then(Value::as_f64)
            && secs > 0.0
        {
            self.interval = Duration::from_secs_f64(secs);
        }
    }

    fn schedule(&mut self) {
        let more = self.remaining != Some(0);
        if self.send_data && more {
            timer::schedule(self.interval);
            self.scheduled = true;
        } else {
            timer::cancel();
            self.scheduled = false;
        }
    }

    fn reading(&mut self) -> Value {
        let pressure = MIN_PRESSURE
            + (self.temperature - MIN_TEMP) * (MAX_PRESSURE - MIN_PRESSURE) / (MAX_TEMP - MIN_TEMP);
        let body = json!({
            "machine": { "temperature": self.temperature, "pressure": pressure },
            "ambient": {
                "temperature": 20.5 + self.rng.unit(),
                "humidity": 24 + (self.rng.next_u64() % 3) as i64,
            },
            "timeCreated": time::now_rfc3339(),
        });
        self.temperature += self.rng.unit();
        if self.temperature > MAX_TEMP {
            self.temperature = MIN_TEMP;
        }
        body
    }

    fn send_one(&mut self) -> Result<(), Error> {
        self.sequence += 1;
        let message = Message::json(&self.reading())
            .with_property("sequenceNumber", &self.sequence.to_string())
            .with_property("batchId", &self.batch_id);
        verge_sdk::send(OUTPUT, &message)?;
        if let Some(left) = self.remaining.as_mut() {
            *left -= 1;
            if *left == 0 {
                log::info(&format!("sent all {} messages", self.sequence));
            }
        }
        Ok(())
    }
}

impl Module for Sensor {
    fn init() -> Result<Self, Error> {
        let count = verge_sdk::config("MessageCount")
            .map(|v| {
                v.trim().parse::<i64>().map_err(|_| {
                    Error::InvalidArgument(format!("MessageCount {v:?} is not a number"))
                })
            })
            .transpose()?
            .unwrap_or(500);
        let mut rng = XorShift::seeded();
        let batch_id = format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            rng.next_u64() as u32,
            rng.next_u64() as u16,
            rng.next_u64() as u16 & 0xfff,
            (rng.next_u64() as u16 & 0x3fff) | 0x8000,
            rng.next_u64() & 0xffff_ffff_ffff
        );
        let mut sensor = Sensor {
            send_data: true,
            interval: Duration::from_secs(5),
            remaining: u64::try_from(count).ok(),
            sequence: 0,
            batch_id,
            temperature: MIN_TEMP,
            rng,
            scheduled: false,
        };
        sensor.apply_desired(&twin::desired_json());
        log::info(&format!(
            "sending {} messages every {:?}",
            sensor
                .remaining
                .map_or("unlimited".into(), |n| n.to_string()),
            sensor.interval
        ));
        sensor.schedule();
        Ok(sensor)
    }

    fn on_timer(&mut self) -> Result<(), Error> {
        if self.send_data && self.remaining != Some(0) {
            self.send_one()?;
        }
        self.schedule();
        Ok(())
    }

    fn on_desired_changed(&mut self, patch: &str) -> Result<(), Error> {
        let patch: Value =
            serde_json::from_str(patch).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let was_sending = self.send_data;
        self.apply_desired(&patch);
        log::info(&format!("desired properties changed: {patch}"));
        if self.send_data != was_sending || !self.scheduled {
            self.schedule();
        }
        Ok(())
    }

    fn on_input(&mut self, input: &str, message: Message) -> Result<(), InputError> {
        if input != "control" {
            return Err(InputError::reject(format!("no input named {input:?}")));
        }
        let body = message.body_json().map_err(InputError::reject)?;
        match body.get("command").and_then(Value::as_str) {
            Some("reset") => {
                self.temperature = MIN_TEMP;
                log::info("reset by control message");
                Ok(())
            }
            other => Err(InputError::reject(format!("unknown command {other:?}"))),
        }
    }

    fn on_method(&mut self, name: &str, _payload: &str) -> Result<MethodResponse, Error> {
        Ok(match name {
            "reset" => {
                self.temperature = MIN_TEMP;
                MethodResponse {
                    status: 200,
                    payload: json!({ "temperature": self.temperature }).to_string(),
                }
            }
            _ => MethodResponse {
                status: 404,
                payload: json!({ "message": format!("no method {name:?}") }).to_string(),
            },
        })
    }
}

verge_sdk::export_module!(Sensor);
