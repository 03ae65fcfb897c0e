//! Twins kept in the message store, so that a device boots offline with its last deployment
//! and a root keeps the twins of the devices below it.
//!
//! Each twin is one record `twin/{id}` in the store's file (both documents and both versions,
//! [`TwinStore::take_changed`]). Changes are written through the store's group commit as they
//! happen: while one commit syncs, the next changes gather, so a burst of reports costs one
//! write. The start-up restores every saved twin before the agent and the hub look at them.

use std::sync::Arc;

use verge_store::{Batch, Store};
use verge_twin::TwinStore;

const PREFIX: &str = "twin/";

/// Put the saved twins back into `twins`; returns how many.
pub fn restore(store: &Store, twins: &TwinStore) -> anyhow::Result<usize> {
    let mut restored = 0;
    for (name, bytes) in store.records(PREFIX)? {
        let id = &name[PREFIX.len()..];
        let saved = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        if twins.import(id, &saved) {
            restored += 1;
        } else {
            tracing::warn!(twin = id, "a saved twin is unreadable; skipped");
        }
    }
    Ok(restored)
}

/// Write every change of `twins` into `store`, until the store closes.
pub async fn persist(store: Arc<Store>, twins: Arc<TwinStore>) {
    loop {
        twins.wait_changed().await;
        if let Err(verge_store::StoreError::Closed) = save_changed(&store, &twins).await {
            return;
        }
    }
}

/// Write the twins changed since the last save (at shutdown: the agent's last reports).
pub async fn save_changed(store: &Store, twins: &TwinStore) -> Result<(), verge_store::StoreError> {
    let changed = twins.take_changed();
    if changed.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = changed.iter().map(|(id, _)| id.clone()).collect();
    let records = changed
        .into_iter()
        .map(|(id, doc)| (format!("{PREFIX}{id}"), Some(doc.to_string().into_bytes())))
        .collect();
    let batch = Batch {
        records,
        ..Batch::default()
    };
    store.submit(batch).await.inspect_err(|e| {
        tracing::warn!(error = %e, ?ids, "twins not saved: a restart brings back their previous state");
    })
}
