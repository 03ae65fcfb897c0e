//! What the agent knows of one module: its desired definition, the running instance if any, and
//! the facts IoT Edge reports (exit code, start/exit/restart times, restart count).

use std::time::{Duration, SystemTime};

use verge_manifest::{DesiredStatus, ModuleConfig};
use verge_restart::{ModuleRuntimeState, RestartPolicyManager, RuntimeStatus};
use verge_runtime::{Exit, ModuleHandle, ModuleLog, ModuleSpec};

/// Where a module is in its life.
#[derive(Clone, Debug)]
pub enum Life {
    /// Accepted but not started (desired stopped, or about to start).
    Created,
    /// Running: the handle reports when it exits.
    Running(ModuleHandle),
    /// Exited (by itself, or stopped by the agent).
    Exited(Exit),
    /// Cannot run until its definition changes: no runtime for its type, or its image does not
    /// prepare. The text says why.
    Blocked(String),
}

/// One module.
#[derive(Debug)]
pub struct Module {
    pub name: String,
    pub config: ModuleConfig,
    pub spec: ModuleSpec,
    pub life: Life,
    /// The current start (unique in the process), so that a late exit report of an earlier
    /// instance is ignored.
    pub instance: u64,
    /// IoT Hub's module generation id: new each time the module is created.
    pub generation_id: String,
    pub image_hash: Option<String>,
    pub restart_count: u32,
    pub last_start: Option<SystemTime>,
    pub last_exit: Option<SystemTime>,
    pub last_restart: Option<SystemTime>,
    pub exit_code: i64,
    pub log: ModuleLog,
    /// A newer definition that failed to prepare while this one kept running, and why.
    pub failed_update: Option<(ModuleSpec, String)>,
}

impl Module {
    pub fn new(name: &str, config: ModuleConfig, spec: ModuleSpec, log: ModuleLog) -> Self {
        Self {
            name: name.to_owned(),
            config,
            spec,
            life: Life::Created,
            instance: 0,
            generation_id: generation_id(),
            image_hash: None,
            restart_count: 0,
            last_start: None,
            last_exit: None,
            last_restart: None,
            exit_code: 0,
            log,
            failed_update: None,
        }
    }

    /// The status IoT Edge would report, with the restart policy applied (`backoff`, `failed`).
    pub fn runtime_status(&self, manager: &RestartPolicyManager) -> RuntimeStatus {
        let observed = match &self.life {
            Life::Running(_) => return RuntimeStatus::Running,
            Life::Blocked(_) => return RuntimeStatus::Failed,
            Life::Created => RuntimeStatus::Stopped,
            Life::Exited(exit) if exit.code == 0 => RuntimeStatus::Stopped,
            Life::Exited(_) => RuntimeStatus::Failed,
        };
        // The restart policy concerns modules that should run; one desired stopped is stopped.
        if self.config.status == DesiredStatus::Stopped {
            return observed;
        }
        manager
            .compute_module_status(observed, self.config.restart_policy, self.restart_count)
            .unwrap_or(observed)
    }

    /// `statusDescription`.
    pub fn status_description(&self, manager: &RestartPolicyManager, now: SystemTime) -> String {
        match &self.life {
            Life::Running(_) => "running".into(),
            Life::Created => "created".into(),
            Life::Blocked(why) => why.clone(),
            Life::Exited(exit) => match self.runtime_status(manager) {
                RuntimeStatus::Backoff => {
                    let due = self
                        .last_exit
                        .map(|t| t + manager.cool_off_period(self.restart_count));
                    let wait = due
                        .and_then(|due| due.duration_since(now).ok())
                        .map_or(String::new(), |d| format!(", next start in {}", human(d)));
                    format!(
                        "backing off after exit {}: {}{wait}",
                        exit.code, exit.description
                    )
                }
                RuntimeStatus::Failed if self.restart_count >= manager.max_restart_count() => {
                    format!(
                        "failed after {} restarts; last exit {}: {}",
                        self.restart_count, exit.code, exit.description
                    )
                }
                _ => format!("exited {}: {}", exit.code, exit.description),
            },
        }
    }

    /// The planner's view of this module.
    pub fn planner_state(&self, manager: &RestartPolicyManager) -> ModuleRuntimeState {
        ModuleRuntimeState {
            name: self.name.clone(),
            desired_status: self.config.status,
            restart_policy: self.config.restart_policy,
            runtime_status: self.runtime_status(manager),
            restart_count: self.restart_count,
            last_start_time: self.last_start,
            last_exit_time: self.last_exit,
            last_restart_time: self.last_restart,
            startup_order: self.config.startup_order,
        }
    }

    /// The handle, if running.
    pub fn handle(&self) -> Option<&ModuleHandle> {
        match &self.life {
            Life::Running(h) => Some(h),
            _ => None,
        }
    }
}

/// A generation id in IoT Hub's style: a decimal number that grows with time.
fn generation_id() -> String {
    let ticks = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() / 100);
    // .NET ticks since year 1, as IoT Hub's generation ids are.
    (ticks + 621_355_968_000_000_000).to_string()
}

/// "3 seconds", "2 minutes", "5 hours".
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (n, unit) = match s {
        0..60 => (s, "second"),
        60..3600 => (s / 60, "minute"),
        3600..86_400 => (s / 3600, "hour"),
        _ => (s / 86_400, "day"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(1)), "1 second");
        assert_eq!(human(Duration::from_secs(59)), "59 seconds");
        assert_eq!(human(Duration::from_secs(120)), "2 minutes");
        assert_eq!(human(Duration::from_secs(7200)), "2 hours");
        assert_eq!(human(Duration::from_secs(200_000)), "2 days");
    }

    #[test]
    fn generation_ids_look_like_iot_hubs() {
        let id = generation_id();
        assert_eq!(id.len(), 18, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_digit()));
    }
}
