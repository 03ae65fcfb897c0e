//! IoT Edge's module restart policy, as pure functions.
//!
//! [`RestartPolicyManager`] holds edgeAgent's parameters (max restart count, cool-off unit and
//! cap, intensive care time) and decides, from a module's observed state and a `now` passed in:
//! the status to report ([`RestartPolicyManager::compute_module_status`]), how long it waits
//! before a restart ([`RestartPolicyManager::cool_off_period`]), whether it is restarted now
//! ([`RestartPolicyManager::should_restart`], [`RestartPolicyManager::apply_restart_policy`]),
//! and the planner's decisions for modules the deployment did not change
//! ([`RestartPolicyManager::state_change_action`], [`RestartPolicyManager::should_reset_stats`],
//! [`shutdown_plan`]). Sources: iotedge.md §2.3–§2.4, checked against the vectors in
//! `conformance/iotedge/restart_policy.json`.
//!
//! Nothing here reads the clock or touches a runtime; the agent feeds in state and applies the
//! decisions.

mod manager;
mod planner;
mod status;

pub use manager::{RestartError, RestartPolicyManager};
pub use planner::{
    ModuleRestartStats, ModuleRuntimeState, PlannedAction, StateChangeAction, is_edge_agent,
    shutdown_plan, stats_reset_by_change,
};
pub use status::RuntimeStatus;
pub use verge_manifest::{DesiredStatus, RestartPolicy};
