//! Direct methods: a request with a JSON payload to one identity, answered with a status and a
//! JSON payload, as in IoT Hub.
//!
//! Whoever serves an identity (a wasm module's host, later an MQTT session subscribed to
//! `$iothub/methods/POST/#`) listens for it; whoever invokes (the CLI, the HTTP endpoint the
//! SDKs use, upstream) goes through [`Methods::invoke`]. Statuses follow IoT Hub: 404 when
//! nobody serves the identity, 504 when the answer does not come in time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::Identity;

/// Calls waiting for a listener to pick them up.
const BACKLOG: usize = 16;

/// A method call for a listener to answer.
#[derive(Debug)]
pub struct MethodCall {
    /// Method name.
    pub name: String,
    /// JSON payload text.
    pub payload: String,
    reply: oneshot::Sender<MethodResponse>,
}

impl MethodCall {
    /// Answer the call (dropped silently if the caller gave up).
    pub fn respond(self, response: MethodResponse) {
        let _ = self.reply.send(response);
    }

    /// Whether the caller stopped waiting (timed out or went away).
    pub fn is_abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

/// A method's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MethodResponse {
    /// Application status (200 for success).
    pub status: i32,
    /// JSON payload text.
    pub payload: String,
}

/// Why a method call got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MethodError {
    /// Nobody serves the identity.
    #[error("{0} is not connected or does not handle methods")]
    NotConnected(String),
    /// No answer within the timeout.
    #[error("{0} did not answer within {1:?}")]
    Timeout(String, Duration),
}

impl MethodError {
    /// IoT Hub's HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            Self::NotConnected(_) => 404,
            Self::Timeout(..) => 504,
        }
    }
}

type Listeners = HashMap<String, (u64, mpsc::Sender<MethodCall>)>;

/// The registry of method listeners.
#[derive(Debug, Default)]
pub struct Methods {
    listeners: Arc<Mutex<Listeners>>,
}

fn lock(listeners: &Mutex<Listeners>) -> MutexGuard<'_, Listeners> {
    listeners.lock().unwrap_or_else(PoisonError::into_inner)
}

static NEXT_LISTENER: AtomicU64 = AtomicU64::new(1);

impl Methods {
    /// Serve methods for `identity`, replacing an earlier listener.
    pub fn listen(&self, identity: &Identity) -> MethodListener {
        let (tx, rx) = mpsc::channel(BACKLOG);
        let id = NEXT_LISTENER.fetch_add(1, Ordering::Relaxed);
        let key = identity.to_string();
        lock(&self.listeners).insert(key.clone(), (id, tx));
        MethodListener {
            rx,
            key,
            id,
            listeners: Arc::clone(&self.listeners),
        }
    }

    /// Call `name` on `identity` and wait up to `timeout` for the answer.
    pub async fn invoke(
        &self,
        identity: &Identity,
        name: &str,
        payload: &str,
        timeout: Duration,
    ) -> Result<MethodResponse, MethodError> {
        let key = identity.to_string();
        let sender = lock(&self.listeners).get(&key).map(|(_, tx)| tx.clone());
        let not_connected = || MethodError::NotConnected(key.clone());
        let sender = sender.ok_or_else(not_connected)?;
        let (reply, answer) = oneshot::channel();
        let call = MethodCall {
            name: name.to_owned(),
            payload: payload.to_owned(),
            reply,
        };
        let exchange = async {
            sender.send(call).await.map_err(|_| not_connected())?;
            answer.await.map_err(|_| not_connected())
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(MethodError::Timeout(key.clone(), timeout)))
    }
}

/// Method calls for one identity; unregisters when dropped.
#[derive(Debug)]
pub struct MethodListener {
    rx: mpsc::Receiver<MethodCall>,
    key: String,
    id: u64,
    listeners: Arc<Mutex<Listeners>>,
}

impl MethodListener {
    /// The next call.
    pub async fn next(&mut self) -> Option<MethodCall> {
        self.rx.recv().await
    }
}

impl Drop for MethodListener {
    fn drop(&mut self) {
        let mut listeners = lock(&self.listeners);
        if listeners
            .get(&self.key)
            .is_some_and(|(id, _)| *id == self.id)
        {
            listeners.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn invoke_reaches_the_listener_and_statuses_follow_iot_hub() {
        let methods = Methods::default();
        let who = Identity::module("dev", "m");
        let err = methods
            .invoke(&who, "x", "{}", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(err.status(), 404);

        let mut listener = methods.listen(&who);
        tokio::spawn(async move {
            while let Some(call) = listener.next().await {
                let payload = format!("{{\"echo\":{}}}", call.payload);
                call.respond(MethodResponse {
                    status: 200,
                    payload,
                });
            }
        });
        let answer = methods
            .invoke(&who, "echo", "7", Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(
            answer,
            MethodResponse {
                status: 200,
                payload: "{\"echo\":7}".into()
            }
        );

        let silent = Identity::module("dev", "silent");
        let _listener = methods.listen(&silent);
        let err = methods
            .invoke(&silent, "x", "{}", Duration::from_millis(20))
            .await
            .unwrap_err();
        assert_eq!(err.status(), 504);
    }

    #[tokio::test]
    async fn a_replaced_listener_does_not_unregister_its_successor() {
        let methods = Methods::default();
        let who = Identity::module("dev", "m");
        let old = methods.listen(&who);
        let mut new = methods.listen(&who);
        drop(old);
        tokio::spawn(async move {
            if let Some(call) = new.next().await {
                call.respond(MethodResponse {
                    status: 201,
                    payload: "null".into(),
                });
            }
        });
        let answer = methods
            .invoke(&who, "x", "{}", Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(answer.status, 201);
    }
}
