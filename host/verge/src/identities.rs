//! Module identities follow the deployment: every module of the `$edgeAgent` desired properties
//! has an identity in the registry (keys generated in the store, a generation id), and a module
//! removed from the deployment loses it. IoT Edge's agent does the same through its identity
//! service; the workload API (containers) signs with these keys.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;
use verge_identity::{IdentityKind, Registry};
use verge_manifest::EDGE_AGENT_TWIN as EDGE_AGENT;
use verge_twin::TwinStore;

/// Keep the registry's module identities in step with the deployment, until the store closes.
pub async fn follow(registry: Arc<Registry>, twins: Arc<TwinStore>) {
    let mut watch = twins.watch_desired(EDGE_AGENT);
    reconcile(&registry, &twins.desired(EDGE_AGENT));
    while watch.changed(&twins).await.is_some() {
        reconcile(&registry, &twins.desired(EDGE_AGENT));
    }
}

/// The modules the `$edgeAgent` desired properties `desired` name (none if they do not parse).
pub fn deployed_modules(desired: &Value) -> BTreeSet<String> {
    desired
        .get("modules")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Make the identities match the modules `desired` names.
fn reconcile(registry: &Registry, desired: &Value) {
    let wanted = deployed_modules(desired);
    for module in &wanted {
        if let Err(e) = registry.ensure_module(module) {
            tracing::warn!(module, "cannot create the module's identity: {e}");
        }
    }
    for record in registry.list() {
        let stale = record.kind == IdentityKind::Module
            && record
                .identity
                .module_id()
                .is_some_and(|m| !wanted.contains(m));
        if stale {
            match registry.remove(&record.identity) {
                Ok(_) => tracing::info!(identity = %record.identity, "module identity removed"),
                Err(e) => tracing::warn!(identity = %record.identity, "cannot remove: {e}"),
            }
        }
    }
}
