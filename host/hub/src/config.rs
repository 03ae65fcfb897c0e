//! The hub's configuration comes from the `$edgeHub` twin, as edgeHub's does: its desired
//! properties hold the routes and the store-and-forward settings ([`verge_manifest::HubConfig`]).
//!
//! [`serve`] watches them: each change is parsed and compiled, then swapped in whole; a change
//! that does not parse or compile leaves the running routes alone. Either way the outcome goes
//! into the `$edgeHub` reported properties (`lastDesiredVersion`, `lastDesiredStatus` with 200 or
//! 400, as edgeHub reports). The same task drops expired messages from the queues every
//! [`EXPIRY_SWEEP`].

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use verge_manifest::{EDGE_HUB_TWIN, HubConfig, StatusCode};
use verge_twin::TwinStore;

use crate::{Hub, RouteConfigError, RouteSet, RouteSpec};

/// How often expired messages are dropped from the queues.
pub const EXPIRY_SWEEP: Duration = Duration::from_secs(30);

/// Compile the routes of a hub configuration.
pub fn compile(config: &HubConfig) -> Result<RouteSet, RouteConfigError> {
    let specs: Vec<RouteSpec> = config
        .routes
        .iter()
        .map(|r| RouteSpec {
            name: r.name.clone(),
            route: r.route.clone(),
            priority: r.priority,
            time_to_live_secs: r.time_to_live_secs,
        })
        .collect();
    RouteSet::compile(&specs, config.store_and_forward.time_to_live_secs)
}

/// Parse and compile `$edgeHub` desired properties; the error is edgeHub's status and text.
pub fn load(desired: &Value) -> Result<RouteSet, (StatusCode, String)> {
    let config = HubConfig::from_desired(desired).map_err(|e| (e.code, e.description))?;
    compile(&config).map_err(|e| {
        (
            StatusCode::ConfigFormatError,
            format!("{}{e}", verge_manifest::HUB_ERROR_PREFIX),
        )
    })
}

fn report(twins: &TwinStore, version: u64, code: StatusCode, description: &str) {
    // The clients' connection status is the MQTT front's to keep; a new status keeps it.
    let clients = twins
        .reported(EDGE_HUB_TWIN)
        .get("clients")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let reported = json!({
        "schemaVersion": "1.0",
        "version": { "version": env!("CARGO_PKG_VERSION") },
        "lastDesiredVersion": version,
        "lastDesiredStatus": { "code": u16::from(code), "description": description },
        "clients": clients,
    });
    if let Value::Object(map) = reported {
        twins.set_reported(EDGE_HUB_TWIN, map);
    }
}

fn apply(hub: &Hub, twins: &TwinStore) {
    let desired = twins.desired(EDGE_HUB_TWIN);
    let version = desired
        .get(verge_twin::VERSION_KEY)
        .and_then(Value::as_u64)
        .unwrap_or(0);
    if version == 0 {
        // No deployment yet: no routes.
        report(twins, 0, StatusCode::Successful, "");
        return;
    }
    match load(&desired) {
        Ok(routes) => {
            let n = routes.len();
            hub.install(routes);
            tracing::info!(version, routes = n, "routes installed");
            report(twins, version, StatusCode::Successful, "");
        }
        Err((code, description)) => {
            tracing::warn!(version, %description, "hub configuration refused; routes unchanged");
            report(twins, version, code, &description);
        }
    }
}

/// Follow the `$edgeHub` twin and keep the hub's routes in line with it, until the twin store
/// goes away.
pub async fn serve(hub: Arc<Hub>, twins: Arc<TwinStore>) {
    let mut changes = twins.watch_desired(EDGE_HUB_TWIN);
    apply(&hub, &twins);
    let mut sweep = tokio::time::interval(EXPIRY_SWEEP);
    loop {
        tokio::select! {
            change = changes.changed(&twins) => match change {
                Some(_) => apply(&hub, &twins),
                None => return,
            },
            _ = sweep.tick() => {
                let expired = hub.expire();
                if expired > 0 {
                    tracing::info!(expired, "expired messages dropped");
                }
            }
        }
    }
}

/// The `$edgeHub` reported status: `(lastDesiredVersion, code, description)`.
pub fn reported_status(twins: &TwinStore) -> (u64, u16, String) {
    let reported = twins.reported(EDGE_HUB_TWIN);
    let get = |path: &str| reported.pointer(path).cloned().unwrap_or(Value::Null);
    (
        get("/lastDesiredVersion").as_u64().unwrap_or(0),
        get("/lastDesiredStatus/code").as_u64().unwrap_or(0) as u16,
        get("/lastDesiredStatus/description")
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}
