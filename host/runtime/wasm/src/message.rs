//! The `message` resource of `verge:module/types`, defined on the linker by hand.
//!
//! A guest's message handle points at a [`GuestMessage`] in the store's resource table, which
//! holds an `Arc<Message>`: a received message is the very allocation the hub queued (shared with
//! every other receiver), a message the guest made is its own. Changing properties goes through
//! `Arc::make_mut`, which clones the property maps when shared and never the body.
//!
//! `body` is the reason this interface is not left to `bindgen!`: bindgen's host functions
//! return `Vec<u8>`, which would copy the body once on the host before wasmtime copies it into
//! the guest. Defined here, `body` hands wasmtime the shared `Bytes`, so the guest's copy into
//! its own memory is the only one, and a guest that never calls `body` never pays for it.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use verge_message::{Message, system};
use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime::{Result, StoreContextMut};

use crate::bindings::verge::module::types::{Error as GuestError, SystemProperty};
use crate::host::Host;

/// The host side of a guest's `message` handle.
#[derive(Debug)]
pub struct GuestMessage {
    /// The message; shared with the hub's queues when received.
    pub message: Arc<Message>,
    /// The input it arrived on, for received messages.
    pub input: Option<Arc<str>>,
    /// When the hub accepted it, for received messages.
    pub enqueued: Option<SystemTime>,
}

impl GuestMessage {
    /// A message the guest received on `input`.
    pub fn received(message: Arc<Message>, input: Option<Arc<str>>, enqueued: SystemTime) -> Self {
        Self {
            message,
            input,
            enqueued: Some(enqueued),
        }
    }
}

/// The IoT Edge name of a system property.
pub fn system_name(p: SystemProperty) -> &'static str {
    match p {
        SystemProperty::MessageId => system::MESSAGE_ID,
        SystemProperty::CorrelationId => system::CORRELATION_ID,
        SystemProperty::UserId => system::USER_ID,
        SystemProperty::ContentType => system::CONTENT_TYPE,
        SystemProperty::ContentEncoding => system::CONTENT_ENCODING,
        SystemProperty::CreationTime => system::CREATION_TIME,
        SystemProperty::MessageSchema => system::MESSAGE_SCHEMA,
        SystemProperty::AbsoluteExpiryTime => system::ABSOLUTE_EXPIRY_TIME,
        SystemProperty::ComponentName => system::COMPONENT_NAME,
        SystemProperty::ConnectionDeviceId => system::CONNECTION_DEVICE_ID,
        SystemProperty::ConnectionModuleId => system::CONNECTION_MODULE_ID,
        SystemProperty::OutputName => system::OUTPUT_NAME,
        SystemProperty::InputName => system::INPUT_NAME,
        SystemProperty::EnqueuedTime => system::ENQUEUED_TIME,
    }
}

fn get<'a>(
    store: &'a StoreContextMut<'_, Host>,
    r: &Resource<GuestMessage>,
) -> Result<&'a GuestMessage> {
    Ok(store.data().table.get(r)?)
}

fn get_mut<'a>(
    store: &'a mut StoreContextMut<'_, Host>,
    r: &Resource<GuestMessage>,
) -> Result<&'a mut GuestMessage> {
    Ok(store.data_mut().table.get_mut(r)?)
}

/// Define `verge:module/types` (the `message` resource and its methods) on `linker`.
pub fn add_to_linker(linker: &mut Linker<Host>) -> Result<()> {
    let mut types = linker.instance("verge:module/types@0.1.0")?;
    types.resource(
        "message",
        ResourceType::host::<GuestMessage>(),
        |mut store, rep| {
            store
                .data_mut()
                .table
                .delete(Resource::<GuestMessage>::new_own(rep))?;
            Ok(())
        },
    )?;

    types.func_wrap(
        "[constructor]message",
        |mut store: StoreContextMut<'_, Host>, (body,): (Bytes,)| {
            let max = store.data().limits.max_message_bytes;
            if body.len() as u64 > max {
                // The constructor cannot fail in WIT; an oversized body is refused by
                // `send-event` (too-large) so the guest sees it where it can act on it.
                tracing::debug!(size = body.len(), "message body exceeds the hub's limit");
            }
            let message = GuestMessage {
                message: Arc::new(Message::new(body)),
                input: None,
                enqueued: None,
            };
            Ok((store.data_mut().table.push(message)?,))
        },
    )?;

    types.func_wrap(
        "[method]message.body",
        |mut store: StoreContextMut<'_, Host>, (this,): (Resource<GuestMessage>,)| {
            let body = get(&store, &this)?.message.body().clone();
            store.data_mut().body_bytes_read += body.len() as u64;
            Ok((body,))
        },
    )?;

    types.func_wrap(
        "[method]message.body-size",
        |store: StoreContextMut<'_, Host>, (this,): (Resource<GuestMessage>,)| {
            Ok((get(&store, &this)?.message.body().len() as u64,))
        },
    )?;

    types.func_wrap(
        "[method]message.property",
        |store: StoreContextMut<'_, Host>, (this, name): (Resource<GuestMessage>, String)| {
            let value = get(&store, &this)?
                .message
                .properties()
                .get(&name)
                .map(str::to_owned);
            Ok((value,))
        },
    )?;

    types.func_wrap(
        "[method]message.properties",
        |store: StoreContextMut<'_, Host>, (this,): (Resource<GuestMessage>,)| {
            let props: Vec<(String, String)> = get(&store, &this)?
                .message
                .properties()
                .iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned())))
                .collect();
            Ok((props,))
        },
    )?;

    types.func_wrap(
        "[method]message.set-property",
        |mut store: StoreContextMut<'_, Host>,
         (this, name, value): (Resource<GuestMessage>, String, String)| {
            let m = get_mut(&mut store, &this)?;
            Arc::make_mut(&mut m.message)
                .properties_mut()
                .insert(&name, &value);
            Ok(())
        },
    )?;

    types.func_wrap(
        "[method]message.remove-property",
        |mut store: StoreContextMut<'_, Host>, (this, name): (Resource<GuestMessage>, String)| {
            let m = get_mut(&mut store, &this)?;
            if m.message.properties().contains(&name) {
                Arc::make_mut(&mut m.message).properties_mut().remove(&name);
            }
            Ok(())
        },
    )?;

    types.func_wrap(
        "[method]message.system-property",
        |store: StoreContextMut<'_, Host>,
         (this, name): (Resource<GuestMessage>, SystemProperty)| {
            let m = get(&store, &this)?;
            let value = match name {
                SystemProperty::InputName => m.input.as_deref().map(str::to_owned),
                SystemProperty::EnqueuedTime => m.enqueued.map(verge_message::time::rfc3339),
                other => m
                    .message
                    .system()
                    .get(system_name(other))
                    .map(str::to_owned),
            };
            Ok((value,))
        },
    )?;

    types.func_wrap(
        "[method]message.set-system-property",
        |mut store: StoreContextMut<'_, Host>,
         (this, name, value): (Resource<GuestMessage>, SystemProperty, Option<String>)| {
            let key = system_name(name);
            if system::is_hub_set(key) {
                let err = GuestError::NotPermitted(format!("{key} is set by the hub"));
                return Ok((Err::<(), _>(err),));
            }
            let m = get_mut(&mut store, &this)?;
            let sys = Arc::make_mut(&mut m.message).system_mut();
            match value {
                Some(v) => sys.insert(key, &v),
                None => {
                    sys.remove(key);
                }
            }
            Ok((Ok(()),))
        },
    )?;
    Ok(())
}
