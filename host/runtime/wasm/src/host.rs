//! The host side of one module instance: the data of its `Store`, and the imports it calls
//! (`outputs`, `twin`, `timer`, `wasi:logging`; `wasi:config` and WASI p2 come from
//! wasmtime-wasi).
//!
//! Messages sent during a call go to the call's outbox; the instance loop commits the outbox to
//! the hub when the call returns (see [`crate::instance`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use verge_hub::{Hub, Identity};
use verge_message::{Message, Text};
use verge_runtime::{ModuleLog, Stream};
use verge_twin::TwinStore;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{ResourceLimiter, Result};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::WasiConfigVariables;

use crate::bindings::verge::module::types::Error as GuestError;
use crate::bindings::verge::module::{outputs, timer, twin};
use crate::bindings::wasi::logging::logging;
use crate::message::GuestMessage;

/// Limits a module's calls live under.
#[derive(Clone, Copy, Debug)]
pub struct CallLimits {
    /// Largest message body a module may send (IoT Edge's `MaxInboundMessageSize`).
    pub max_message_bytes: u64,
    /// Most messages one call may send.
    pub max_outbox: usize,
}

/// The memory cap of one instance, across all its linear memories.
#[derive(Debug)]
pub struct MemoryCap {
    limit: u64,
    used: u64,
    /// Set when the cap refused a growth: the trap that follows is the cap's.
    pub hit: bool,
}

impl MemoryCap {
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            used: 0,
            hit: false,
        }
    }

    /// The cap in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> Result<bool> {
        let growth = desired.saturating_sub(current) as u64;
        if self.used.saturating_add(growth) > self.limit {
            self.hit = true;
            return Err(wasmtime::Error::msg(format!(
                "memory limit of {} bytes reached (asked for {} more)",
                self.limit, growth
            )));
        }
        self.used += growth;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> Result<bool> {
        // Tables hold pointers; a million entries is 8 MB, far beyond any real module.
        Ok(desired <= 1_000_000)
    }
}

/// A pending `on-timer` request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimerRequest(pub Option<Instant>);

/// The data of a module instance's `Store`.
pub struct Host {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub config: WasiConfigVariables,
    pub memory: MemoryCap,
    pub limits: CallLimits,
    pub identity: Identity,
    pub hub: Arc<Hub>,
    pub twins: Arc<TwinStore>,
    pub log: ModuleLog,
    /// Messages sent during the current call, stamped.
    pub outbox: Vec<Arc<Message>>,
    /// The module's output names, shared, so that stamping a message copies no text.
    pub outputs: Vec<Text>,
    pub timer: TimerRequest,
    /// Body bytes the guest has copied into its memory (`message.body`), over its lifetime.
    pub body_bytes_read: u64,
    /// When the current call must end.
    pub deadline: Instant,
    /// Set when the epoch check interrupted a call at its deadline.
    pub deadline_hit: bool,
}

impl Host {
    /// Start a call: set its deadline and clear the outbox.
    pub fn begin_call(&mut self, limit: Duration) {
        self.deadline = Instant::now() + limit;
        self.deadline_hit = false;
        self.outbox.clear();
    }

    /// `output` as shared text, from the module's own list of outputs.
    fn output_text(&mut self, output: &str) -> Text {
        if let Some(known) = self.outputs.iter().find(|o| &***o == output) {
            return known.clone();
        }
        let text = Text::from(output);
        // A module has a handful of outputs; a module inventing names per message gets no cache.
        if self.outputs.len() < 64 {
            self.outputs.push(text.clone());
        }
        text
    }

    fn module_id(&self) -> &str {
        self.identity.module_id().unwrap_or_default()
    }
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Output names end up in route sources (`…/outputs/{name}`) and later MQTT topics.
fn output_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name
            .chars()
            .any(|c| c.is_control() || matches!(c, '/' | '#' | '+' | '*'))
}

impl outputs::Host for Host {
    fn send_event(
        &mut self,
        output: String,
        message: Resource<GuestMessage>,
    ) -> Result<Result<(), GuestError>> {
        if !output_name_ok(&output) {
            return Ok(Err(GuestError::InvalidArgument(format!(
                "output name {output:?} must be 1 to 128 characters without '/', '#', '+', '*'"
            ))));
        }
        let max = self.limits.max_message_bytes;
        let guest = self.table.get(&message)?;
        if guest.message.body().len() as u64 > max {
            return Ok(Err(GuestError::TooLarge(max)));
        }
        if self.outbox.len() >= self.limits.max_outbox {
            return Ok(Err(GuestError::Busy));
        }
        // Shares the body and the property maps; stamping copies the system map's entries only.
        let mut stamped = Message::clone(&guest.message);
        let output = self.output_text(&output);
        self.hub.stamp(&self.identity, Some(output), &mut stamped);
        self.outbox.push(Arc::new(stamped));
        Ok(Ok(()))
    }
}

impl twin::Host for Host {
    fn desired(&mut self) -> Result<String> {
        Ok(self.twins.desired(self.module_id()).to_string())
    }

    fn reported(&mut self) -> Result<String> {
        Ok(self.twins.reported(self.module_id()).to_string())
    }

    fn patch_reported(&mut self, patch: String) -> Result<Result<(), GuestError>> {
        let patch = match serde_json::from_str::<serde_json::Value>(&patch) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(_) => {
                return Ok(Err(GuestError::InvalidArgument(
                    "the reported patch must be a JSON object".into(),
                )));
            }
            Err(e) => {
                return Ok(Err(GuestError::InvalidArgument(format!(
                    "the reported patch is not JSON: {e}"
                ))));
            }
        };
        let module = self.module_id().to_owned();
        Ok(self
            .twins
            .patch_reported(&module, &patch)
            .map(|_| ())
            .map_err(|e| GuestError::InvalidArgument(e.to_string())))
    }
}

impl timer::Host for Host {
    fn schedule(&mut self, delay_ms: u64) -> Result<()> {
        // Saturate absurd delays at a year rather than overflow Instant.
        let delay = Duration::from_millis(delay_ms.min(365 * 24 * 3600 * 1000));
        self.timer = TimerRequest(Some(Instant::now() + delay));
        Ok(())
    }

    fn cancel(&mut self) -> Result<()> {
        self.timer = TimerRequest(None);
        Ok(())
    }
}

impl logging::Host for Host {
    fn log(&mut self, level: logging::Level, context: String, message: String) -> Result<()> {
        use logging::Level;
        let (name, stream) = match level {
            Level::Trace => ("TRACE", Stream::Stdout),
            Level::Debug => ("DEBUG", Stream::Stdout),
            Level::Info => ("INFO", Stream::Stdout),
            Level::Warn => ("WARN", Stream::Stderr),
            Level::Error => ("ERROR", Stream::Stderr),
            Level::Critical => ("CRITICAL", Stream::Stderr),
        };
        let text = if context.is_empty() {
            format!("{name} {message}")
        } else {
            format!("{name} [{context}] {message}")
        };
        self.log.push(stream, text);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names() {
        assert!(output_name_ok("temperatureOutput"));
        assert!(output_name_ok("out-1_a.b"));
        for bad in ["", "a/b", "a#", "+", "x*", "tab\t"] {
            assert!(!output_name_ok(bad), "{bad:?}");
        }
    }

    #[test]
    fn memory_cap_counts_every_memory_and_flags_the_hit() {
        let mut cap = MemoryCap::new(10 * 65536);
        assert!(cap.memory_growing(0, 4 * 65536, None).unwrap());
        assert!(cap.memory_growing(0, 4 * 65536, None).unwrap());
        assert!(!cap.hit);
        assert!(cap.memory_growing(4 * 65536, 7 * 65536, None).is_err());
        assert!(cap.hit);
    }
}
