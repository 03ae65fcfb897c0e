//! Twins: the desired and reported properties of every identity (the edge device's modules,
//! `$edgeAgent`, `$edgeHub`, and later leaf devices), as IoT Hub keeps them.
//!
//! Desired properties are written by whoever plays the cloud's part (a local `verge deploy`
//! today, the upstream connection later) and read by the identity; reported properties go the
//! other way. Each side carries a `$version` that grows by one with every change.
//!
//! A change to the desired properties is sent to subscribers as a patch (the JSON merge patch
//! from the old document to the new one, plus `$version`), which is what IoT Hub sends to a
//! device. A subscriber that falls behind gets the whole document instead, which is a valid patch
//! for every key still present.
//!
//! [`patch`] holds the JSON merge-patch and diff functions; [`validate`] holds IoT Hub's rules
//! for property documents.

pub mod patch;
pub mod validate;

/// A JSON object literal as a map, for tests.
#[cfg(test)]
pub(crate) fn obj(v: serde_json::Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("not an object"),
    }
}

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::{Map, Value};
use tokio::sync::broadcast;

pub use validate::TwinError;

/// The key of the version in a property document.
pub const VERSION_KEY: &str = "$version";

/// How many unread patches a subscriber may have before it is sent the whole document.
const PATCH_BACKLOG: usize = 32;

#[derive(Debug)]
struct Twin {
    desired: Map<String, Value>,
    desired_version: u64,
    reported: Map<String, Value>,
    reported_version: u64,
    desired_changes: broadcast::Sender<Arc<Value>>,
}

impl Twin {
    fn new() -> Self {
        Self {
            desired: Map::new(),
            desired_version: 0,
            reported: Map::new(),
            reported_version: 0,
            desired_changes: broadcast::channel(PATCH_BACKLOG).0,
        }
    }

    fn desired_doc(&self) -> Value {
        with_version(&self.desired, self.desired_version)
    }

    fn apply_desired(&mut self, new: Map<String, Value>) -> u64 {
        let version = self.desired_version + 1;
        self.apply_desired_at(new, version)
    }

    fn apply_desired_at(&mut self, new: Map<String, Value>, version: u64) -> u64 {
        let mut diff = patch::diff(&self.desired, &new);
        self.desired = new;
        self.desired_version = version;
        diff.insert(VERSION_KEY.into(), self.desired_version.into());
        // No receivers is fine: nobody is listening yet.
        let _ = self.desired_changes.send(Arc::new(Value::Object(diff)));
        self.desired_version
    }
}

/// A twin as saved: both documents and both versions.
fn export(t: &Twin) -> Value {
    serde_json::json!({
        "desired": t.desired,
        "desiredVersion": t.desired_version,
        "reported": t.reported,
        "reportedVersion": t.reported_version,
    })
}

fn with_version(props: &Map<String, Value>, version: u64) -> Value {
    let mut doc = props.clone();
    doc.insert(VERSION_KEY.into(), version.into());
    Value::Object(doc)
}

/// Strip `$version` and `$metadata`, which twins carry but are not properties.
fn without_meta(mut props: Map<String, Value>) -> Map<String, Value> {
    props.remove(VERSION_KEY);
    props.remove("$metadata");
    props
}

/// Every twin this device knows, by identity (`moduleId`, `$edgeAgent`, `deviceId`, ...).
#[derive(Debug, Default)]
pub struct TwinStore {
    twins: Mutex<HashMap<String, Twin>>,
    /// Twins changed since [`TwinStore::take_changed`] last ran, and a wake-up for whoever
    /// keeps them on disk.
    changed: Mutex<HashSet<String>>,
    wake: tokio::sync::Notify,
}

/// The desired and reported documents of one twin, each with its `$version`.
#[derive(Clone, Debug, PartialEq)]
pub struct TwinDocs {
    /// Desired properties.
    pub desired: Value,
    /// Reported properties.
    pub reported: Value,
}

impl TwinStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Twin>> {
        // A panic while holding the lock leaves consistent JSON maps: keep going.
        self.twins.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn with_twin<R>(&self, id: &str, f: impl FnOnce(&mut Twin) -> R) -> R {
        let mut twins = self.lock();
        let twin = twins.entry(id.to_owned()).or_insert_with(Twin::new);
        f(twin)
    }

    /// [`with_twin`](Self::with_twin) for a change: the twin is marked for saving.
    fn change<R>(&self, id: &str, f: impl FnOnce(&mut Twin) -> R) -> R {
        let result = self.with_twin(id, f);
        self.changed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_owned());
        self.wake.notify_one();
        result
    }

    /// Wait until a twin changed since the last [`take_changed`](Self::take_changed).
    pub async fn wait_changed(&self) {
        if self
            .changed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
        {
            self.wake.notified().await;
        }
    }

    /// The twins changed since the last call, each as [`TwinStore::export`] writes it.
    pub fn take_changed(&self) -> Vec<(String, Value)> {
        let ids = std::mem::take(&mut *self.changed.lock().unwrap_or_else(PoisonError::into_inner));
        let twins = self.lock();
        let mut out: Vec<(String, Value)> = ids
            .into_iter()
            .filter_map(|id| twins.get(&id).map(|t| (id, export(t))))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Put back a twin saved by [`take_changed`](Self::take_changed), with its versions, before
    /// anyone watches it. A document that is not one is refused (`false`).
    pub fn import(&self, id: &str, saved: &Value) -> bool {
        let object = |key: &str| saved.get(key).and_then(Value::as_object).cloned();
        let version = |key: &str| saved.get(key).and_then(Value::as_u64);
        let (Some(desired), Some(dv), Some(reported), Some(rv)) = (
            object("desired"),
            version("desiredVersion"),
            object("reported"),
            version("reportedVersion"),
        ) else {
            return false;
        };
        self.with_twin(id, |t| {
            t.desired = desired;
            t.desired_version = dv;
            t.reported = reported;
            t.reported_version = rv;
        });
        true
    }

    /// The desired properties of `id`, with `$version` (`{"$version":0}` for an unknown twin).
    pub fn desired(&self, id: &str) -> Value {
        self.with_twin(id, |t| t.desired_doc())
    }

    /// The reported properties of `id`, with `$version`.
    pub fn reported(&self, id: &str) -> Value {
        self.with_twin(id, |t| with_version(&t.reported, t.reported_version))
    }

    /// Both documents of `id`.
    pub fn docs(&self, id: &str) -> TwinDocs {
        self.with_twin(id, |t| TwinDocs {
            desired: t.desired_doc(),
            reported: with_version(&t.reported, t.reported_version),
        })
    }

    /// The reported version of `id` (0 for an unknown twin).
    pub fn reported_version(&self, id: &str) -> u64 {
        self.lock().get(id).map_or(0, |t| t.reported_version)
    }

    /// The desired version of `id`.
    pub fn desired_version(&self, id: &str) -> u64 {
        self.with_twin(id, |t| t.desired_version)
    }

    /// Identities with a twin.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.lock().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Check a desired document as [`set_desired`](Self::set_desired) would, without storing it.
    pub fn check_desired(desired: &Map<String, Value>) -> Result<(), TwinError> {
        validate::document(&without_meta(desired.clone()))
    }

    /// Replace the desired properties of `id` (`$version`/`$metadata` in `desired` are
    /// ignored). Returns the new version; an identical document changes nothing and returns the
    /// current version.
    pub fn set_desired(&self, id: &str, desired: Map<String, Value>) -> Result<u64, TwinError> {
        let desired = without_meta(desired);
        validate::document(&desired)?;
        Ok(self.change(id, |t| {
            if t.desired == desired && t.desired_version > 0 {
                t.desired_version
            } else {
                t.apply_desired(desired)
            }
        }))
    }

    /// Replace the desired properties of `id` with a parent's document at the parent's
    /// `version` (a twin mirrored from upstream keeps upstream's versions, so that what this
    /// device reports as `lastDesiredVersion` means the same upstream). Nothing changes if the
    /// document and version are the ones held.
    pub fn mirror_desired(
        &self,
        id: &str,
        desired: Map<String, Value>,
        version: u64,
    ) -> Result<u64, TwinError> {
        let desired = without_meta(desired);
        validate::document(&desired)?;
        Ok(self.change(id, |t| {
            if t.desired == desired && t.desired_version == version {
                version
            } else {
                t.apply_desired_at(desired, version)
            }
        }))
    }

    /// Merge `patch` into the desired properties of `id`; returns the new version.
    pub fn patch_desired(&self, id: &str, patch: &Map<String, Value>) -> Result<u64, TwinError> {
        let patch = without_meta(patch.clone());
        self.change(id, |t| {
            let mut merged = t.desired.clone();
            patch::merge(&mut merged, &patch);
            validate::document(&merged)?;
            Ok(t.apply_desired(merged))
        })
    }

    /// Merge `patch` into the reported properties of `id` (`null` deletes a key); returns the
    /// new reported version. The patch is checked against IoT Hub's rules first, and nothing
    /// changes if it is refused.
    pub fn patch_reported(&self, id: &str, patch: &Map<String, Value>) -> Result<u64, TwinError> {
        let patch = without_meta(patch.clone());
        validate::keys(&patch)?;
        self.change(id, |t| {
            let mut merged = t.reported.clone();
            patch::merge(&mut merged, &patch);
            validate::document(&merged)?;
            t.reported = merged;
            t.reported_version += 1;
            Ok(t.reported_version)
        })
    }

    /// Replace the reported properties of `id` wholesale (used by the agent and hub for their
    /// own twins, which they rebuild on every report).
    pub fn set_reported(&self, id: &str, reported: Map<String, Value>) -> u64 {
        self.change(id, |t| {
            if t.reported != reported {
                t.reported = reported;
                t.reported_version += 1;
            }
            t.reported_version
        })
    }

    /// Subscribe to changes of the desired properties of `id`.
    pub fn watch_desired(&self, id: &str) -> DesiredWatch {
        let (rx, version) =
            self.with_twin(id, |t| (t.desired_changes.subscribe(), t.desired_version));
        DesiredWatch {
            rx,
            id: id.to_owned(),
            seen: version,
        }
    }
}

/// Changes to one twin's desired properties, as patches.
#[derive(Debug)]
pub struct DesiredWatch {
    rx: broadcast::Receiver<Arc<Value>>,
    id: String,
    seen: u64,
}

impl DesiredWatch {
    /// The next patch. After falling behind, the whole desired document (with `$version`).
    /// `None` when the store is gone.
    pub async fn changed(&mut self, store: &TwinStore) -> Option<Arc<Value>> {
        loop {
            match self.rx.recv().await {
                Ok(patch) => {
                    let version = patch.get(VERSION_KEY).and_then(Value::as_u64).unwrap_or(0);
                    if version > self.seen {
                        self.seen = version;
                        return Some(patch);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let doc = store.desired(&self.id);
                    self.seen = doc.get(VERSION_KEY).and_then(Value::as_u64).unwrap_or(0);
                    // Drain what is queued: the full document covers it.
                    while self.rx.try_recv().is_ok() {}
                    return Some(Arc::new(doc));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changed_twins_are_taken_once_and_import_with_their_versions() {
        let store = TwinStore::new();
        store.desired("read-only");
        store.set_desired("m", obj(json!({"a": 1}))).unwrap();
        store.set_desired("m", obj(json!({"a": 2}))).unwrap();
        store
            .patch_reported("devices/d", &obj(json!({"r": true})))
            .unwrap();
        let changed = store.take_changed();
        let ids: Vec<&str> = changed.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["devices/d", "m"], "reads are not changes");
        assert!(store.take_changed().is_empty());

        let restored = TwinStore::new();
        for (id, saved) in &changed {
            assert!(restored.import(id, saved));
        }
        assert_eq!(restored.desired("m"), json!({"a": 2, "$version": 2}));
        assert_eq!(
            restored.reported("devices/d"),
            json!({"r": true, "$version": 1})
        );
        assert!(
            restored.take_changed().is_empty(),
            "an import is not a change"
        );
        assert!(!restored.import("x", &json!({"desired": 1})));
    }

    #[test]
    fn desired_versions_grow_only_on_change() {
        let store = TwinStore::new();
        assert_eq!(store.desired("m"), json!({"$version": 0}));
        assert_eq!(store.set_desired("m", obj(json!({"a": 1}))).unwrap(), 1);
        assert_eq!(
            store
                .set_desired("m", obj(json!({"a": 1, "$version": 9})))
                .unwrap(),
            1
        );
        assert_eq!(store.set_desired("m", obj(json!({"a": 2}))).unwrap(), 2);
        assert_eq!(store.desired("m"), json!({"a": 2, "$version": 2}));
    }

    #[tokio::test]
    async fn watchers_get_the_diff_as_a_patch() {
        let store = TwinStore::new();
        store
            .set_desired("m", obj(json!({"a": 1, "b": {"c": 1, "d": 2}})))
            .unwrap();
        let mut watch = store.watch_desired("m");
        store
            .set_desired("m", obj(json!({"b": {"c": 1, "d": 3}, "e": true})))
            .unwrap();
        let patch = watch.changed(&store).await.unwrap();
        assert_eq!(
            *patch,
            json!({"a": null, "b": {"d": 3}, "e": true, "$version": 2})
        );
    }

    #[tokio::test]
    async fn a_lagging_watcher_gets_the_whole_document() {
        let store = TwinStore::new();
        let mut watch = store.watch_desired("m");
        for i in 0..(PATCH_BACKLOG as i64 + 5) {
            store.set_desired("m", obj(json!({"n": i}))).unwrap();
        }
        let doc = watch.changed(&store).await.unwrap();
        assert_eq!(doc["n"], json!(PATCH_BACKLOG as i64 + 4));
        assert_eq!(doc[VERSION_KEY], json!(PATCH_BACKLOG as i64 + 5));
    }

    #[test]
    fn reported_patches_merge_and_bad_ones_change_nothing() {
        let store = TwinStore::new();
        store
            .patch_reported("m", &obj(json!({"a": 1, "b": {"c": 2}})))
            .unwrap();
        let v = store
            .patch_reported("m", &obj(json!({"a": null, "b": {"d": 3}})))
            .unwrap();
        assert_eq!(v, 2);
        assert_eq!(
            store.reported("m"),
            json!({"b": {"c": 2, "d": 3}, "$version": 2})
        );
        let err = store
            .patch_reported("m", &obj(json!({"bad key": 1})))
            .unwrap_err();
        assert!(err.to_string().contains("bad key"), "{err}");
        assert_eq!(store.reported("m")[VERSION_KEY], json!(2));
    }
}
