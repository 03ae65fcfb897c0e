//! The filter of IoT Edge's tutorial: forwards on `output1` only the readings whose
//! `machine.temperature` is above the twin's desired `TemperatureThreshold` (default 25), marked
//! with the application property `MessageType=Alert`, and reports the threshold it uses.
//!
//! The reading is forwarded as the same message: its body is not copied, only its properties
//! change.

use serde_json::{Value, json};
use verge_sdk::{Error, InputError, Message, Module, log, twin};

const DEFAULT_THRESHOLD: f64 = 25.0;

struct Filter {
    threshold: f64,
    forwarded: u64,
}

impl Filter {
    fn apply(&mut self, desired: &Value) -> Result<(), Error> {
        if let Some(t) = desired.get("TemperatureThreshold").and_then(Value::as_f64) {
            self.threshold = t;
        }
        twin::report(&json!({ "TemperatureThreshold": self.threshold }))
    }
}

impl Module for Filter {
    fn init() -> Result<Self, Error> {
        let mut filter = Filter {
            threshold: DEFAULT_THRESHOLD,
            forwarded: 0,
        };
        filter.apply(&twin::desired_json())?;
        log::info(&format!("forwarding readings above {}", filter.threshold));
        Ok(filter)
    }

    fn on_input(&mut self, _input: &str, message: Message) -> Result<(), InputError> {
        let body = message.body_json().map_err(InputError::reject)?;
        let Some(temperature) = body.pointer("/machine/temperature").and_then(Value::as_f64) else {
            return Err(InputError::reject("no machine.temperature in the message"));
        };
        if temperature > self.threshold {
            message.set_property("MessageType", "Alert");
            verge_sdk::send("output1", &message).map_err(InputError::retry)?;
            self.forwarded += 1;
        }
        Ok(())
    }

    fn on_desired_changed(&mut self, patch: &str) -> Result<(), Error> {
        let patch: Value =
            serde_json::from_str(patch).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        self.apply(&patch)?;
        log::info(&format!("threshold is now {}", self.threshold));
        Ok(())
    }
}

verge_sdk::export_module!(Filter);
