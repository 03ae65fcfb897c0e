//! Write Verge modules in Rust.
//!
//! A Verge module is a WebAssembly component for the `verge:module/module` world
//! (`wit/module.wit` in the Verge repository). This crate wraps the generated bindings in a
//! trait with defaults, so a module implements only what it uses:
//!
//! ```ignore
//! use verge_sdk::{Error, InputError, Message, Module};
//!
//! struct Upper;
//!
//! impl Module for Upper {
//!     fn init() -> Result<Self, Error> {
//!         Ok(Upper)
//!     }
//!
//!     fn on_input(&mut self, _input: &str, message: Message) -> Result<(), InputError> {
//!         let body = message.body().to_ascii_uppercase();
//!         verge_sdk::send("output1", &Message::new(&body)).map_err(InputError::retry)
//!     }
//! }
//!
//! verge_sdk::export_module!(Upper);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release` and a `cdylib` crate type; the
//! `.wasm` file is the component to name in a deployment manifest's `settings.image`.
//!
//! How calls work: the host calls one handler at a time, each under a deadline. Messages sent
//! with [`send`] during a call leave when the call returns `Ok`; an error discards them. If the
//! hub's queues toward a destination are full, the host holds the call's completion until there
//! is room, so a busy downstream slows the module down instead of losing messages.

/// The generated bindings, for what this crate does not wrap.
#[allow(missing_docs, clippy::all, unsafe_op_in_unsafe_fn)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "verge:module/module",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "verge_sdk::bindings",
        generate_all,
    });
}

pub mod time;

pub use bindings::exports::verge::module::handlers::{InputError, MethodResponse};
pub use bindings::verge::module::types::{Error, Message, SystemProperty};

/// A module. Implement the handlers you need; the others do nothing.
pub trait Module: Sized + 'static {
    /// Called once when the module starts: read configuration and the twin, schedule a first
    /// tick. An error fails the start (the agent restarts the module by its restart policy).
    fn init() -> Result<Self, Error>;

    /// A message arrived on `input`.
    fn on_input(&mut self, input: &str, message: Message) -> Result<(), InputError> {
        let _ = (input, message);
        Ok(())
    }

    /// The desired properties changed. `patch` is the JSON change, with `$version`.
    fn on_desired_changed(&mut self, patch: &str) -> Result<(), Error> {
        let _ = patch;
        Ok(())
    }

    /// A direct method call with a JSON payload. The default answers 501.
    fn on_method(&mut self, name: &str, payload: &str) -> Result<MethodResponse, Error> {
        let _ = payload;
        Ok(MethodResponse {
            status: 501,
            payload: format!(
                "{{\"message\":\"method {} is not implemented\"}}",
                json_escape(name)
            ),
        })
    }

    /// The timer asked for with [`timer::schedule`] fired.
    fn on_timer(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

/// `text` escaped for the inside of a JSON string.
pub fn json_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

impl InputError {
    /// Drop the message, logging `reason`.
    pub fn reject(reason: impl std::fmt::Display) -> Self {
        Self::Reject(reason.to_string())
    }

    /// Keep the message and have it offered again after a pause.
    pub fn retry(reason: impl std::fmt::Display) -> Self {
        Self::Retry(reason.to_string())
    }
}

impl Message {
    /// A message with a UTF-8 text body.
    pub fn text(body: &str) -> Self {
        Self::new(body.as_bytes())
    }

    /// Builder: set an application property.
    pub fn with_property(self, name: &str, value: &str) -> Self {
        self.set_property(name, value);
        self
    }

    /// Builder: set a system property the module may set (content type, message id, ...).
    /// Hub-set properties are ignored here; use [`Message::set_system_property`] to see errors.
    pub fn with_system(self, name: SystemProperty, value: &str) -> Self {
        let _ = self.set_system_property(name, Some(value));
        self
    }

    /// Builder: `contentType` `application/json` and `contentEncoding` `utf-8`, so that routes
    /// can query the body with `$body.…`.
    pub fn as_json(self) -> Self {
        self.with_system(SystemProperty::ContentType, "application/json")
            .with_system(SystemProperty::ContentEncoding, "utf-8")
    }
}

#[cfg(feature = "json")]
impl Message {
    /// A JSON message (body, content type and encoding).
    pub fn json(value: &serde_json::Value) -> Self {
        Self::new(value.to_string().as_bytes()).as_json()
    }

    /// The body parsed as JSON.
    pub fn body_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.body())
    }
}

/// Send `message` on `output` (routes select it with
/// `FROM /messages/modules/{module}/outputs/{output}`). A received message can be forwarded as
/// is; its body is not copied.
pub fn send(output: &str, message: &Message) -> Result<(), Error> {
    bindings::verge::module::outputs::send_event(output, message)
}

/// A configuration value: the module's `env` from the deployment manifest, and IoT Edge's
/// module variables (`IOTEDGE_MODULEID`, `IOTEDGE_DEVICEID`, ...).
pub fn config(key: &str) -> Option<String> {
    bindings::wasi::config::store::get(key).ok().flatten()
}

/// This module's twin.
pub mod twin {
    use crate::Error;
    use crate::bindings::verge::module::twin as imp;

    /// The desired properties, JSON text with `$version`.
    pub fn desired() -> String {
        imp::desired()
    }

    /// The reported properties, JSON text with `$version`.
    pub fn reported() -> String {
        imp::reported()
    }

    /// Merge a JSON object into the reported properties (`null` deletes a key).
    pub fn patch_reported(patch: &str) -> Result<(), Error> {
        imp::patch_reported(patch)
    }

    /// The desired properties, parsed.
    #[cfg(feature = "json")]
    pub fn desired_json() -> serde_json::Value {
        serde_json::from_str(&desired()).unwrap_or(serde_json::Value::Null)
    }

    /// Merge a JSON object into the reported properties.
    #[cfg(feature = "json")]
    pub fn report(patch: &serde_json::Value) -> Result<(), Error> {
        patch_reported(&patch.to_string())
    }
}

/// The module's own schedule.
pub mod timer {
    use std::time::Duration;

    /// Have `on_timer` called once after `delay` (replacing a pending request).
    pub fn schedule(delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        crate::bindings::verge::module::timer::schedule(ms);
    }

    /// Drop the pending request.
    pub fn cancel() {
        crate::bindings::verge::module::timer::cancel();
    }
}

/// Logging into the module's log (`verge logs MODULE`), through `wasi:logging`.
pub mod log {
    use crate::bindings::wasi::logging::logging::{Level, log};

    /// Log at debug level.
    pub fn debug(message: &str) {
        log(Level::Debug, "", message);
    }

    /// Log at info level.
    pub fn info(message: &str) {
        log(Level::Info, "", message);
    }

    /// Log at warn level.
    pub fn warn(message: &str) {
        log(Level::Warn, "", message);
    }

    /// Log at error level.
    pub fn error(message: &str) {
        log(Level::Error, "", message);
    }
}

#[doc(hidden)]
pub mod __private {
    pub use std::cell::RefCell;
}

/// Export `$ty` (a [`Module`]) as the component's `handlers`.
#[macro_export]
macro_rules! export_module {
    ($ty:ty) => {
        const _: () = {
            use $crate::bindings::exports::verge::module::handlers::{
                Guest, InputError, MethodResponse,
            };
            use $crate::{Error, Message, Module};

            ::std::thread_local! {
                static INSTANCE: $crate::__private::RefCell<Option<$ty>> =
                    const { $crate::__private::RefCell::new(None) };
            }

            fn with<R>(f: impl FnOnce(&mut $ty) -> Result<R, Error>) -> Result<R, Error> {
                INSTANCE.with(|cell| match cell.borrow_mut().as_mut() {
                    Some(module) => f(module),
                    None => Err(Error::Other("the module is not initialised".into())),
                })
            }

            struct Exported;

            impl Guest for Exported {
                fn init() -> Result<(), Error> {
                    let module = <$ty as Module>::init()?;
                    INSTANCE.with(|cell| *cell.borrow_mut() = Some(module));
                    Ok(())
                }

                fn handle_input(input: String, message: Message) -> Result<(), InputError> {
                    INSTANCE.with(|cell| match cell.borrow_mut().as_mut() {
                        Some(module) => module.on_input(&input, message),
                        None => Err(InputError::Retry("the module is not initialised".into())),
                    })
                }

                fn desired_changed(patch: String) -> Result<(), Error> {
                    with(|module| module.on_desired_changed(&patch))
                }

                fn invoke_method(name: String, payload: String) -> Result<MethodResponse, Error> {
                    with(|module| module.on_method(&name, &payload))
                }

                fn on_timer() -> Result<(), Error> {
                    with(|module| module.on_timer())
                }
            }

            $crate::bindings::export! { Exported with_types_in $crate::bindings }
        };
    };
}
