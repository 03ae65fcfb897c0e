//! The restart decisions of IoT Edge's health restart planner (iotedge.md §2.4,
//! `planners/HealthRestartPlanner.cs`), as pure functions.
//!
//! For a module the deployment did not change but whose runtime status differs from its desired
//! status ([`RestartPolicyManager::state_change_action`]):
//! - desired `stopped` → stop it;
//! - desired `running`, runtime `stopped` → start it, if its policy is above `never` or it never
//!   started (so an `on-failure` module that exited 0 is started again, as IoT Edge's code does);
//! - desired `running`, runtime `backoff`, cool-off passed → restart it (stop + start, then
//!   restart count + 1 and last restart time = now, see [`ModuleRestartStats::after_restart`]);
//! - anything else → nothing. edgeAgent is never acted on here.
//!
//! A module running as desired has its restart stats cleared once it has been up longer than the
//! intensive care time ([`RestartPolicyManager::should_reset_stats`]). A deployment change or a
//! desired-status change also clears them ([`stats_reset_by_change`]). The shutdown plan stops
//! every module except edgeAgent ([`shutdown_plan`]).

use std::time::SystemTime;

use verge_manifest::{DesiredStatus, EDGE_AGENT, ModuleChange, RestartPolicy};

use crate::manager::RestartPolicyManager;
use crate::status::RuntimeStatus;

/// What the planner knows about one current module: its desired state and what it is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleRuntimeState {
    /// The module name.
    pub name: String,
    /// The desired status from the deployment.
    pub desired_status: DesiredStatus,
    /// The restart policy from the deployment.
    pub restart_policy: RestartPolicy,
    /// The runtime status, as computed by [`RestartPolicyManager::compute_module_status`].
    pub runtime_status: RuntimeStatus,
    /// Restarts since the stats were last cleared.
    pub restart_count: u32,
    /// When the module last started; `None` if it never did.
    pub last_start_time: Option<SystemTime>,
    /// When the module last exited; `None` if it never did.
    pub last_exit_time: Option<SystemTime>,
    /// When the agent last restarted it; `None` if it never did.
    pub last_restart_time: Option<SystemTime>,
    /// `startupOrder`: actions are ordered by it.
    pub startup_order: u32,
}

/// What to do with a module whose runtime status differs from its desired status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StateChangeAction {
    /// Nothing now.
    None,
    /// Stop it (desired `stopped`).
    Stop,
    /// Start it (desired `running`, runtime `stopped`).
    Start,
    /// Stop then start it, and record the restart (desired `running`, `backoff`, cool-off over).
    Restart,
}

/// A module's stored restart statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleRestartStats {
    /// Restarts since the stats were last cleared.
    pub restart_count: u32,
    /// When the agent last restarted the module.
    pub last_restart_time: SystemTime,
}

impl ModuleRestartStats {
    /// The stats to store after restarting `module` at `now`.
    pub fn after_restart(module: &ModuleRuntimeState, now: SystemTime) -> Self {
        Self {
            restart_count: module.restart_count.saturating_add(1),
            last_restart_time: now,
        }
    }
}

/// One action of a plan, for [`RestartPolicyManager::plan_state_changes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlannedAction<'a> {
    /// The module acted on.
    pub module: &'a ModuleRuntimeState,
    /// The action (never [`StateChangeAction::None`]).
    pub action: StateChangeAction,
}

/// Whether `name` is the agent itself (compared ignoring ASCII case, as IoT Edge does).
pub fn is_edge_agent(name: &str) -> bool {
    name.eq_ignore_ascii_case(EDGE_AGENT)
}

/// Whether a deployment change clears a module's restart stats: an update (definition or
/// policy) or a desired-status change does; an unchanged module keeps them.
pub fn stats_reset_by_change(change: ModuleChange) -> bool {
    change != ModuleChange::Unchanged
}

/// The modules the shutdown plan stops: all but edgeAgent, in input order.
pub fn shutdown_plan<'a>(running: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    running
        .into_iter()
        .filter(|name| !is_edge_agent(name))
        .collect()
}

fn runtime_matches(desired: DesiredStatus, runtime: RuntimeStatus) -> bool {
    matches!(
        (desired, runtime),
        (DesiredStatus::Running, RuntimeStatus::Running)
            | (DesiredStatus::Stopped, RuntimeStatus::Stopped)
    )
}

impl RestartPolicyManager {
    /// The action for a module the deployment did not change (see the module docs).
    pub fn state_change_action(
        &self,
        module: &ModuleRuntimeState,
        now: SystemTime,
    ) -> StateChangeAction {
        if is_edge_agent(&module.name)
            || runtime_matches(module.desired_status, module.runtime_status)
        {
            return StateChangeAction::None;
        }
        match (module.desired_status, module.runtime_status) {
            (DesiredStatus::Stopped, _) => StateChangeAction::Stop,
            (DesiredStatus::Running, RuntimeStatus::Stopped) => {
                if module.restart_policy > RestartPolicy::Never || module.last_start_time.is_none()
                {
                    StateChangeAction::Start
                } else {
                    StateChangeAction::None
                }
            }
            (DesiredStatus::Running, RuntimeStatus::Backoff) => {
                // Backoff is a valid status, so `should_restart` cannot fail here.
                let due = self
                    .should_restart(
                        module.runtime_status,
                        module.restart_count,
                        module.last_exit_time,
                        now,
                    )
                    .unwrap_or(false);
                if due {
                    StateChangeAction::Restart
                } else {
                    StateChangeAction::None
                }
            }
            (DesiredStatus::Running, _) => StateChangeAction::None,
        }
    }

    /// The actions for modules the deployment did not change, in IoT Edge's order: stops, then
    /// starts by startup order, then restarts by startup order.
    pub fn plan_state_changes<'a>(
        &self,
        modules: impl IntoIterator<Item = &'a ModuleRuntimeState>,
        now: SystemTime,
    ) -> Vec<PlannedAction<'a>> {
        let mut actions: Vec<PlannedAction<'a>> = modules
            .into_iter()
            .map(|module| PlannedAction {
                module,
                action: self.state_change_action(module, now),
            })
            .filter(|planned| planned.action != StateChangeAction::None)
            .collect();
        let rank = |action: StateChangeAction| match action {
            StateChangeAction::Stop => 0,
            StateChangeAction::Start => 1,
            StateChangeAction::Restart | StateChangeAction::None => 2,
        };
        // Stable: stops keep input order; starts and restarts are ordered by startup order.
        actions.sort_by_key(|p| {
            let order = if p.action == StateChangeAction::Stop {
                0
            } else {
                p.module.startup_order
            };
            (rank(p.action), order)
        });
        actions
    }

    /// Whether to clear a module's stored restart stats now: it runs as desired, has stats, and
    /// started more than the intensive care time ago.
    pub fn should_reset_stats(
        &self,
        module: &ModuleRuntimeState,
        has_saved_stats: bool,
        now: SystemTime,
    ) -> bool {
        has_saved_stats
            && module.desired_status == DesiredStatus::Running
            && module.runtime_status == RuntimeStatus::Running
            && module
                .last_start_time
                .and_then(|started| now.duration_since(started).ok())
                .is_some_and(|up| up > self.intensive_care_time())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn module(name: &str, desired: DesiredStatus, runtime: RuntimeStatus) -> ModuleRuntimeState {
        ModuleRuntimeState {
            name: name.into(),
            desired_status: desired,
            restart_policy: RestartPolicy::Always,
            runtime_status: runtime,
            restart_count: 0,
            last_start_time: None,
            last_exit_time: None,
            last_restart_time: None,
            startup_order: u32::MAX,
        }
    }

    #[test]
    fn desired_stopped_modules_are_stopped_and_edge_agent_is_left_alone() {
        let m = RestartPolicyManager::default();
        let failed = module("m", DesiredStatus::Stopped, RuntimeStatus::Failed);
        assert_eq!(
            m.state_change_action(&failed, now()),
            StateChangeAction::Stop
        );
        let stopped = module("m", DesiredStatus::Stopped, RuntimeStatus::Stopped);
        assert_eq!(
            m.state_change_action(&stopped, now()),
            StateChangeAction::None
        );
        let agent = module("EdgeAgent", DesiredStatus::Running, RuntimeStatus::Backoff);
        assert_eq!(
            m.state_change_action(&agent, now()),
            StateChangeAction::None
        );
    }

    #[test]
    fn plan_orders_stops_starts_restarts() {
        let m = RestartPolicyManager::default();
        let mut restart = module("r", DesiredStatus::Running, RuntimeStatus::Backoff);
        restart.startup_order = 0;
        let mut late = module("s2", DesiredStatus::Running, RuntimeStatus::Stopped);
        late.startup_order = 5;
        let mut early = module("s1", DesiredStatus::Running, RuntimeStatus::Stopped);
        early.startup_order = 1;
        let stop = module("x", DesiredStatus::Stopped, RuntimeStatus::Running);
        let fine = module("ok", DesiredStatus::Running, RuntimeStatus::Running);
        let all = [restart, late, early, stop, fine];
        let plan: Vec<(&str, StateChangeAction)> = m
            .plan_state_changes(&all, now())
            .iter()
            .map(|p| (p.module.name.as_str(), p.action))
            .collect();
        assert_eq!(
            plan,
            [
                ("x", StateChangeAction::Stop),
                ("s1", StateChangeAction::Start),
                ("s2", StateChangeAction::Start),
                ("r", StateChangeAction::Restart),
            ]
        );
    }

    #[test]
    fn restart_stats() {
        let mut m = module("m", DesiredStatus::Running, RuntimeStatus::Backoff);
        m.restart_count = 3;
        let stats = ModuleRestartStats::after_restart(&m, now());
        assert_eq!((stats.restart_count, stats.last_restart_time), (4, now()));
        assert!(stats_reset_by_change(ModuleChange::Definition));
        assert!(stats_reset_by_change(ModuleChange::DesiredStatus));
        assert!(!stats_reset_by_change(ModuleChange::Unchanged));
    }

    #[test]
    fn stats_reset_needs_a_past_start() {
        let m = RestartPolicyManager::default();
        let mut running = module("m", DesiredStatus::Running, RuntimeStatus::Running);
        running.last_start_time = Some(now() + Duration::from_secs(3600));
        assert!(!m.should_reset_stats(&running, true, now()));
        running.last_start_time = Some(now() - Duration::from_secs(601));
        assert!(m.should_reset_stats(&running, true, now()));
        assert!(!m.should_reset_stats(&running, false, now()));
    }

    #[test]
    fn shutdown_keeps_edge_agent() {
        assert_eq!(
            shutdown_plan(["mod1", "edgeAgent", "edgeHub"]),
            ["mod1", "edgeHub"]
        );
    }
}
