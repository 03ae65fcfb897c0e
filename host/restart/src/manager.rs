//! `RestartPolicyManager`: the status a module reports, its cool-off period, and whether it is
//! restarted now (iotedge.md §2.4, `Agent.Core/RestartPolicyManager.cs`).
//!
//! - **Status.** A module that is not running, whose policy is above `never`, and whose policy is
//!   `always` or whose status is `failed` or `unhealthy`, reports `failed` once its restart count
//!   reached the maximum and `backoff` before that. Otherwise the status is kept.
//! - **Cool-off.** `min(unit × 2^restartCount, 300 s)`: 10, 20, 40, 80, 160, 300, 300 … s.
//! - **Restart.** Only a `backoff` module is restarted, once the time since its last exit is
//!   longer than the cool-off, or at once if it never exited or its exit time is not in the past
//!   (clock skew).
//! - `unknown` is refused by both rules, as IoT Edge does.
//!
//! Time is passed in: nothing here reads the clock.

use std::time::{Duration, SystemTime};

use verge_manifest::RestartPolicy;

use crate::planner::ModuleRuntimeState;
use crate::status::RuntimeStatus;

/// Why a manager cannot be built or a rule cannot be applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestartError {
    /// `MaxRestartCount` must be at least 1.
    #[error("max restart count must be between 1 and {max}, got {0}", max = u32::MAX)]
    MaxRestartCount(i64),
    /// `CoolOffTimeUnitInSeconds` must not be negative.
    #[error("cool-off time unit must be between 0 and {max} seconds, got {0}", max = u32::MAX)]
    CoolOffTimeUnit(i64),
    /// `IntensiveCareTimeInMinutes` must not be negative.
    #[error("intensive care time must be between 0 and {max} minutes, got {0}", max = u32::MAX)]
    IntensiveCareTime(i64),
    /// The rules are undefined for `unknown` (IoT Edge throws `ArgumentException`).
    #[error("runtime status unknown is not a valid status{}", module_suffix(.module))]
    UnknownStatus {
        /// The module, when known.
        module: Option<String>,
    },
}

fn module_suffix(module: &Option<String>) -> String {
    module
        .as_deref()
        .map(|m| format!(" (module {m})"))
        .unwrap_or_default()
}

/// IoT Edge's restart policy parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartPolicyManager {
    max_restart_count: u32,
    cool_off_time_unit: Duration,
    max_cool_off: Duration,
    intensive_care_time: Duration,
}

impl Default for RestartPolicyManager {
    fn default() -> Self {
        Self {
            max_restart_count: Self::DEFAULT_MAX_RESTART_COUNT,
            cool_off_time_unit: Self::DEFAULT_COOL_OFF_TIME_UNIT,
            max_cool_off: Self::MAX_COOL_OFF,
            intensive_care_time: Self::DEFAULT_INTENSIVE_CARE_TIME,
        }
    }
}

impl RestartPolicyManager {
    /// `MaxRestartCount` default: restarts allowed before a module is marked failed.
    pub const DEFAULT_MAX_RESTART_COUNT: u32 = 20;
    /// `CoolOffTimeUnitInSeconds` default.
    pub const DEFAULT_COOL_OFF_TIME_UNIT: Duration = Duration::from_secs(10);
    /// The cool-off cap (`MaxCoolOffPeriodSecs`).
    pub const MAX_COOL_OFF: Duration = Duration::from_secs(300);
    /// `IntensiveCareTimeInMinutes` default: running time after which restart stats are cleared.
    pub const DEFAULT_INTENSIVE_CARE_TIME: Duration = Duration::from_secs(10 * 60);

    /// A manager as IoT Edge's constructor builds it: `max_restart_count ≥ 1`,
    /// `cool_off_time_unit_secs ≥ 0`; the intensive care time is the default.
    pub fn new(max_restart_count: i64, cool_off_time_unit_secs: i64) -> Result<Self, RestartError> {
        let max_restart_count = u32::try_from(max_restart_count)
            .ok()
            .filter(|n| *n >= 1)
            .ok_or(RestartError::MaxRestartCount(max_restart_count))?;
        let unit = u32::try_from(cool_off_time_unit_secs)
            .map_err(|_| RestartError::CoolOffTimeUnit(cool_off_time_unit_secs))?;
        Ok(Self {
            max_restart_count,
            cool_off_time_unit: Duration::from_secs(u64::from(unit)),
            ..Self::default()
        })
    }

    /// A manager from edgeAgent's settings (`MaxRestartCount`, `CoolOffTimeUnitInSeconds`,
    /// `IntensiveCareTimeInMinutes`), each validated.
    pub fn from_settings(
        max_restart_count: i64,
        cool_off_time_unit_secs: i64,
        intensive_care_time_minutes: i64,
    ) -> Result<Self, RestartError> {
        let minutes = u32::try_from(intensive_care_time_minutes)
            .map_err(|_| RestartError::IntensiveCareTime(intensive_care_time_minutes))?;
        Ok(Self::new(max_restart_count, cool_off_time_unit_secs)?
            .with_intensive_care_time(Duration::from_secs(u64::from(minutes) * 60)))
    }

    /// The same manager with another intensive care time.
    pub fn with_intensive_care_time(self, intensive_care_time: Duration) -> Self {
        Self {
            intensive_care_time,
            ..self
        }
    }

    /// Restarts allowed before a module is marked failed.
    pub fn max_restart_count(&self) -> u32 {
        self.max_restart_count
    }

    /// The cool-off time unit.
    pub fn cool_off_time_unit(&self) -> Duration {
        self.cool_off_time_unit
    }

    /// The cool-off cap (300 s).
    pub fn max_cool_off(&self) -> Duration {
        self.max_cool_off
    }

    /// Running time after which a module's restart stats are cleared.
    pub fn intensive_care_time(&self) -> Duration {
        self.intensive_care_time
    }

    /// The status to report for a module with this observed status, policy and restart count
    /// (`ComputeModuleStatusFromRestartPolicy`).
    pub fn compute_module_status(
        &self,
        status: RuntimeStatus,
        policy: RestartPolicy,
        restart_count: u32,
    ) -> Result<RuntimeStatus, RestartError> {
        if status == RuntimeStatus::Unknown {
            return Err(RestartError::UnknownStatus { module: None });
        }
        let restartable = status != RuntimeStatus::Running
            && policy > RestartPolicy::Never
            && (policy == RestartPolicy::Always
                || matches!(status, RuntimeStatus::Failed | RuntimeStatus::Unhealthy));
        Ok(match restartable {
            false => status,
            true if restart_count >= self.max_restart_count => RuntimeStatus::Failed,
            true => RuntimeStatus::Backoff,
        })
    }

    /// How long a module with this restart count waits before its next restart.
    pub fn cool_off_period(&self, restart_count: u32) -> Duration {
        if self.cool_off_time_unit.is_zero() {
            return Duration::ZERO;
        }
        2u32.checked_pow(restart_count)
            .and_then(|factor| self.cool_off_time_unit.checked_mul(factor))
            .map_or(self.max_cool_off, |period| period.min(self.max_cool_off))
    }

    /// Whether a module is restarted now (`ShouldRestart`): only in `backoff`, and only once the
    /// cool-off since `last_exit_time` has passed (`None`: never exited; restart at once).
    pub fn should_restart(
        &self,
        runtime_status: RuntimeStatus,
        restart_count: u32,
        last_exit_time: Option<SystemTime>,
        now: SystemTime,
    ) -> Result<bool, RestartError> {
        match runtime_status {
            RuntimeStatus::Unknown => Err(RestartError::UnknownStatus { module: None }),
            RuntimeStatus::Backoff => Ok(match last_exit_time.map(|t| now.duration_since(t)) {
                Some(Ok(elapsed)) if !elapsed.is_zero() => {
                    elapsed > self.cool_off_period(restart_count)
                }
                // Never exited, exited just now, or the exit time is in the future (clock skew).
                _ => true,
            }),
            _ => Ok(false),
        }
    }

    /// The modules to restart now, in input order (`ApplyRestartPolicy`). A module whose runtime
    /// status is `unknown` makes the whole call fail, as in IoT Edge.
    pub fn apply_restart_policy<'a>(
        &self,
        modules: impl IntoIterator<Item = &'a ModuleRuntimeState>,
        now: SystemTime,
    ) -> Result<Vec<&'a ModuleRuntimeState>, RestartError> {
        let mut restart = Vec::new();
        for module in modules {
            let due = self
                .should_restart(
                    module.runtime_status,
                    module.restart_count,
                    module.last_exit_time,
                    now,
                )
                .map_err(|_| RestartError::UnknownStatus {
                    module: Some(module.name.clone()),
                })?;
            if due {
                restart.push(module);
            }
        }
        Ok(restart)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn defaults() {
        let m = RestartPolicyManager::default();
        assert_eq!(m.max_restart_count(), 20);
        assert_eq!(m.cool_off_time_unit(), secs(10));
        assert_eq!(m.max_cool_off(), secs(300));
        assert_eq!(m.intensive_care_time(), secs(600));
    }

    #[test]
    fn construction_is_validated() {
        assert_eq!(
            RestartPolicyManager::new(0, 10),
            Err(RestartError::MaxRestartCount(0))
        );
        assert_eq!(
            RestartPolicyManager::new(-1, 10),
            Err(RestartError::MaxRestartCount(-1))
        );
        assert_eq!(
            RestartPolicyManager::new(5, -5),
            Err(RestartError::CoolOffTimeUnit(-5))
        );
        assert!(RestartPolicyManager::new(i64::from(u32::MAX) + 1, 10).is_err());
        assert!(RestartPolicyManager::new(5, 0).is_ok());
        let m = RestartPolicyManager::from_settings(3, 7, 2).unwrap();
        assert_eq!(
            (m.max_restart_count(), m.cool_off_time_unit()),
            (3, secs(7))
        );
        assert_eq!(m.intensive_care_time(), secs(120));
        assert_eq!(
            RestartPolicyManager::from_settings(3, 7, -1),
            Err(RestartError::IntensiveCareTime(-1))
        );
    }

    #[test]
    fn cool_off_doubles_then_caps() {
        let m = RestartPolicyManager::default();
        let periods: Vec<u64> = (0..8).map(|n| m.cool_off_period(n).as_secs()).collect();
        assert_eq!(periods, [10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(m.cool_off_period(u32::MAX), secs(300));
        assert_eq!(
            RestartPolicyManager::new(5, 0).unwrap().cool_off_period(40),
            Duration::ZERO
        );
    }

    #[test]
    fn dead_follows_the_formula() {
        // IoT Edge applies the same rule to every non-running status.
        let m = RestartPolicyManager::default();
        let s = m.compute_module_status(RuntimeStatus::Dead, RestartPolicy::Always, 0);
        assert_eq!(s, Ok(RuntimeStatus::Backoff));
        let s = m.compute_module_status(RuntimeStatus::Dead, RestartPolicy::OnFailure, 0);
        assert_eq!(s, Ok(RuntimeStatus::Dead));
    }

    #[test]
    fn restart_timing_edges() {
        let m = RestartPolicyManager::default();
        let now = SystemTime::UNIX_EPOCH + secs(1_000_000);
        let backoff = RuntimeStatus::Backoff;
        assert_eq!(
            m.should_restart(backoff, 0, Some(now), now),
            Ok(true),
            "zero elapsed"
        );
        assert_eq!(
            m.should_restart(backoff, 0, Some(now - secs(10)), now),
            Ok(false),
            "not longer than"
        );
        assert_eq!(
            m.should_restart(backoff, 0, Some(now - secs(11)), now),
            Ok(true)
        );
        assert_eq!(
            m.should_restart(backoff, 0, Some(now + secs(5)), now),
            Ok(true),
            "future"
        );
        assert_eq!(
            m.should_restart(backoff, 0, None, now),
            Ok(true),
            "never exited"
        );
        assert_eq!(
            m.should_restart(RuntimeStatus::Failed, 0, None, now),
            Ok(false)
        );
        assert!(
            m.should_restart(RuntimeStatus::Unknown, 0, None, now)
                .is_err()
        );
    }
}
