//! Runs every case of `conformance/iotedge/restart_policy.json` (from IoT Edge's
//! `RestartPolicyManagerTest` and `HealthRestartPlannerTest`), collects all failures, prints the
//! counts per section, and checks that the number of cases run equals the file's `counts`.
//!
//! The file is found through `$VERGE_CONFORMANCE_DIR` (the `iotedge` folder or its parent), else
//! at `<CARGO_MANIFEST_DIR>/../../../shared/conformance/iotedge`. A missing file fails the test.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use verge_restart::{
    DesiredStatus, ModuleRuntimeState, RestartPolicy, RestartPolicyManager, RuntimeStatus,
    StateChangeAction, shutdown_plan,
};

fn vectors_path() -> PathBuf {
    verge_tests::conformance_dir().join("restart_policy.json")
}

/// A fixed "now"; `*_secs_ago` values are relative to it.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

type Check = Result<(), String>;

fn ensure(ok: bool, message: impl FnOnce() -> String) -> Check {
    if ok { Ok(()) } else { Err(message()) }
}

fn text<'a>(case: &'a Value, key: &str) -> Result<&'a str, String> {
    case[key]
        .as_str()
        .ok_or_else(|| format!("field {key} is not a string"))
}

fn int(case: &Value, key: &str) -> Result<i64, String> {
    case[key]
        .as_i64()
        .ok_or_else(|| format!("field {key} is not an integer"))
}

fn count(case: &Value, key: &str) -> Result<u32, String> {
    u32::try_from(int(case, key)?).map_err(|e| format!("field {key}: {e}"))
}

fn flag(case: &Value, key: &str) -> Result<bool, String> {
    case[key]
        .as_bool()
        .ok_or_else(|| format!("field {key} is not a boolean"))
}

/// `*_secs_ago`: `null` is "never", negative is in the future.
fn time_ago(case: &Value, key: &str) -> Result<Option<SystemTime>, String> {
    match &case[key] {
        Value::Null => Ok(None),
        value => {
            let secs = value
                .as_i64()
                .ok_or_else(|| format!("field {key} is not an integer"))?;
            let offset = Duration::from_secs(secs.unsigned_abs());
            Ok(Some(if secs >= 0 {
                now() - offset
            } else {
                now() + offset
            }))
        }
    }
}

fn policy(case: &Value, key: &str) -> Result<RestartPolicy, String> {
    let name = text(case, key)?;
    RestartPolicy::parse(&name.replace('_', "-")).ok_or_else(|| format!("unknown policy {name}"))
}

fn status(case: &Value, key: &str) -> Result<RuntimeStatus, String> {
    let name = text(case, key)?;
    RuntimeStatus::parse(name).ok_or_else(|| format!("unknown status {name}"))
}

fn desired(case: &Value, key: &str) -> Result<DesiredStatus, String> {
    let name = text(case, key)?;
    DesiredStatus::parse(name).ok_or_else(|| format!("unknown desired status {name}"))
}

fn startup_order(case: &Value) -> Result<u32, String> {
    match case.get("startup_order").and_then(Value::as_str) {
        None | Some("default") => Ok(u32::MAX),
        Some("highest") => Ok(0),
        Some("highest+1") => Ok(1),
        Some(other) => Err(format!("unknown startup_order {other}")),
    }
}

/// A planner module from a `planner_*` row.
fn runtime_module(case: &Value) -> Result<ModuleRuntimeState, String> {
    Ok(ModuleRuntimeState {
        name: text(case, "name")?.to_owned(),
        desired_status: desired(case, "desired_status")?,
        restart_policy: policy(case, "restart_policy")?,
        runtime_status: status(case, "runtime_status")?,
        restart_count: count(case, "restart_count")?,
        last_start_time: time_ago(case, "last_start_secs_ago")?,
        last_exit_time: time_ago(case, "last_exit_secs_ago")?,
        last_restart_time: time_ago(case, "last_restart_secs_ago")?,
        startup_order: startup_order(case)?,
    })
}

/// The manager of the vectors' `parameters`.
fn manager(params: &Value) -> Result<RestartPolicyManager, String> {
    let m = RestartPolicyManager::new(
        int(params, "max_restart_count")?,
        int(params, "cool_off_time_unit_secs")?,
    )
    .map_err(|e| e.to_string())?
    .with_intensive_care_time(Duration::from_secs(
        count(params, "intensive_care_secs")?.into(),
    ));
    ensure(
        m.max_cool_off().as_secs() == u64::from(count(params, "max_cool_off_secs")?),
        || "max cool-off differs from the vectors' parameters".to_owned(),
    )?;
    Ok(m)
}

fn compute_module_status(m: &RestartPolicyManager, case: &Value) -> Check {
    let got = m
        .compute_module_status(
            status(case, "status")?,
            policy(case, "restart_policy")?,
            count(case, "restart_count")?,
        )
        .map_err(|e| e.to_string())?;
    let want = status(case, "expected_status")?;
    ensure(got == want, || format!("got {got}, want {want}"))
}

fn should_restart(m: &RestartPolicyManager, case: &Value) -> Check {
    let module = ModuleRuntimeState {
        name: "m".to_owned(),
        desired_status: DesiredStatus::Running,
        restart_policy: policy(case, "restart_policy")?,
        runtime_status: status(case, "runtime_status")?,
        restart_count: count(case, "restart_count")?,
        last_start_time: None,
        last_exit_time: time_ago(case, "last_exit_secs_ago")?,
        last_restart_time: None,
        startup_order: u32::MAX,
    };
    let want = flag(case, "restart")?;
    let direct = m
        .should_restart(
            module.runtime_status,
            module.restart_count,
            module.last_exit_time,
            now(),
        )
        .map_err(|e| e.to_string())?;
    let applied = m
        .apply_restart_policy([&module], now())
        .map_err(|e| e.to_string())?;
    ensure(direct == want && applied.len() == usize::from(want), || {
        format!(
            "should_restart {direct}, apply_restart_policy picked {}, want {want}",
            applied.len()
        )
    })
}

fn invalid_status(m: &RestartPolicyManager, case: &Value) -> Check {
    ensure(text(case, "expected")? == "error", || {
        "only error cases are expected".to_owned()
    })?;
    let result = match text(case, "call")? {
        "compute_module_status" => m
            .compute_module_status(
                status(case, "status")?,
                policy(case, "restart_policy")?,
                count(case, "restart_count")?,
            )
            .map(|_| ()),
        "apply_restart_policy" => {
            let module = ModuleRuntimeState {
                name: "m".to_owned(),
                desired_status: DesiredStatus::Running,
                restart_policy: policy(case, "restart_policy")?,
                runtime_status: status(case, "runtime_status")?,
                restart_count: count(case, "restart_count")?,
                last_start_time: None,
                last_exit_time: None,
                last_restart_time: None,
                startup_order: u32::MAX,
            };
            m.apply_restart_policy([&module], now()).map(|_| ())
        }
        other => return Err(format!("unknown call {other}")),
    };
    ensure(result.is_err(), || "accepted an unknown status".to_owned())
}

fn cool_off_period(case: &Value) -> Check {
    // The section's own manager: max restart count 20, unit 10 s.
    let m = RestartPolicyManager::new(20, 10).map_err(|e| e.to_string())?;
    let got = m.cool_off_period(count(case, "restart_count")?).as_secs();
    let want = u64::from(count(case, "cool_off_secs")?);
    ensure(got == want, || format!("got {got} s, want {want} s"))
}

fn manager_construction(case: &Value) -> Check {
    let result = RestartPolicyManager::new(
        int(case, "max_restart_count")?,
        int(case, "cool_off_time_unit_secs")?,
    );
    let want = flag(case, "valid")?;
    ensure(result.is_ok() == want, || {
        format!("got {result:?}, want valid = {want}")
    })
}

fn planner_state_change(m: &RestartPolicyManager, case: &Value) -> Check {
    let module = runtime_module(case)?;
    let action = m.state_change_action(&module, now());
    let want = flag(case, "expected_stop_start")?;
    ensure((action == StateChangeAction::Restart) == want, || {
        format!("got {action:?}, want stop+start = {want}")
    })
}

fn planner_start_stopped(m: &RestartPolicyManager, case: &Value) -> Check {
    let mut module = runtime_module(&case["running"])?;
    // The desired side of the test sets the policy and status the planner acts on.
    module.restart_policy = policy(&case["desired"], "restart_policy")?;
    module.desired_status = desired(&case["desired"], "desired_status")?;
    let action = m.state_change_action(&module, now());
    let want = flag(case, "expected_start")?;
    let expected = if want {
        StateChangeAction::Start
    } else {
        StateChangeAction::None
    };
    ensure(action == expected, || {
        format!("got {action:?}, want {expected:?}")
    })
}

fn planner_reset_stats(m: &RestartPolicyManager, case: &Value) -> Check {
    let module = ModuleRuntimeState {
        name: text(case, "name")?.to_owned(),
        desired_status: desired(case, "desired_status")?,
        restart_policy: RestartPolicy::Always,
        runtime_status: status(case, "runtime_status")?,
        restart_count: 1,
        last_start_time: time_ago(case, "last_start_secs_ago")?,
        last_exit_time: None,
        last_restart_time: None,
        startup_order: u32::MAX,
    };
    let got = m.should_reset_stats(&module, flag(case, "has_saved_stats")?, now());
    let want = flag(case, "expected_clear_stats")?;
    ensure(got == want, || format!("got {got}, want {want}"))
}

fn planner_shutdown(case: &Value) -> Check {
    let names = |key: &str| -> Result<Vec<&str>, String> {
        case[key]
            .as_array()
            .ok_or_else(|| format!("field {key} is not an array"))?
            .iter()
            .map(|n| n.as_str().ok_or_else(|| format!("{key}: not a string")))
            .collect()
    };
    let got = shutdown_plan(names("running_modules")?);
    let want = names("expected_stopped")?;
    ensure(got == want, || format!("got {got:?}, want {want:?}"))
}

#[test]
fn every_restart_policy_vector() {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "restart_policy.json not found at {} ({e}); set VERGE_CONFORMANCE_DIR",
            path.display()
        )
    });
    let doc: Value = serde_json::from_str(&text).expect("restart_policy.json is JSON");
    let planner = manager(&doc["parameters"]).expect("parameters build a manager");

    let cases = |section: &str| -> Vec<Value> {
        match &doc[section] {
            Value::Array(rows) => rows.clone(),
            Value::Object(obj) if obj.contains_key("cases") => {
                obj["cases"].as_array().cloned().unwrap_or_default()
            }
            // A single-case section (planner_shutdown) is the case itself.
            Value::Object(_) => vec![doc[section].clone()],
            _ => Vec::new(),
        }
    };

    type Runner<'a> = Box<dyn Fn(&Value) -> Check + 'a>;
    let sections: Vec<(&str, Runner<'_>)> = vec![
        (
            "compute_module_status",
            Box::new(|c| compute_module_status(&planner, c)),
        ),
        ("should_restart", Box::new(|c| should_restart(&planner, c))),
        ("invalid_status", Box::new(|c| invalid_status(&planner, c))),
        ("cool_off_period", Box::new(cool_off_period)),
        ("manager_construction", Box::new(manager_construction)),
        (
            "planner_state_change",
            Box::new(|c| planner_state_change(&planner, c)),
        ),
        (
            "planner_start_stopped",
            Box::new(|c| planner_start_stopped(&planner, c)),
        ),
        (
            "planner_reset_stats",
            Box::new(|c| planner_reset_stats(&planner, c)),
        ),
        ("planner_shutdown", Box::new(planner_shutdown)),
    ];

    let mut failures = Vec::new();
    let mut run: BTreeMap<&str, u64> = BTreeMap::new();
    for (section, runner) in &sections {
        let rows = cases(section);
        let mut passed = 0;
        for (index, case) in rows.iter().enumerate() {
            match runner(case) {
                Ok(()) => passed += 1,
                Err(why) => failures.push(format!(
                    "{section}[{index}] (line {}): {why}",
                    case.get("line")
                        .map_or_else(|| "?".to_owned(), Value::to_string)
                )),
            }
        }
        println!("{section:24} {passed:3}/{:3} passed", rows.len());
        run.insert(section, rows.len() as u64);
    }

    let expected: BTreeMap<&str, u64> = doc["counts"]
        .as_object()
        .expect("counts")
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_u64().expect("count")))
        .collect();
    println!(
        "total {} cases, {} failures",
        run.values().sum::<u64>(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        run, expected,
        "cases run per section differ from the file's counts"
    );
}
