//! What a wasm module's `createOptions` may say.
//!
//! The keys mean what they mean for a container, where there is a meaning to keep:
//! `HostConfig.Memory` is the module's memory cap in bytes, `Env` adds `NAME=value` pairs to its
//! environment, `Labels` are kept for the user. `Wasm` holds what only wasm has:
//! `CallTimeoutMs`, the deadline of each handler call, and `InitTimeoutMs`, the deadline of
//! `init`. Any other key is refused by name, never silently ignored.

use std::time::Duration;

use serde_json::Value;

/// Settings of one wasm module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleOptions {
    /// Cap on the module's linear memory, in bytes.
    pub memory_limit: u64,
    /// Deadline of each handler call.
    pub call_timeout: Duration,
    /// Deadline of instantiation plus `init`.
    pub init_timeout: Duration,
    /// `NAME=value` pairs from `Env`.
    pub env: Vec<(String, String)>,
}

impl ModuleOptions {
    /// Read `createOptions` over `defaults`.
    pub fn parse(create_options: Option<&Value>, defaults: &ModuleOptions) -> Result<Self, String> {
        let mut options = defaults.clone();
        let Some(value) = create_options else {
            return Ok(options);
        };
        let Value::Object(top) = value else {
            return Err("createOptions must be a JSON object".into());
        };
        for (key, value) in top {
            match key.as_str() {
                "HostConfig" => host_config(value, &mut options)?,
                "Env" => options.env.extend(env(value)?),
                "Labels" => {}
                "Wasm" => wasm(value, &mut options)?,
                other => return Err(unsupported(other)),
            }
        }
        Ok(options)
    }
}

fn unsupported(key: &str) -> String {
    format!(
        "createOptions.{key} is not supported for wasm modules \
         (supported: HostConfig.Memory, Env, Labels, Wasm.CallTimeoutMs, Wasm.InitTimeoutMs)"
    )
}

fn object<'a>(value: &'a Value, key: &str) -> Result<&'a serde_json::Map<String, Value>, String> {
    value
        .as_object()
        .ok_or_else(|| format!("createOptions.{key} must be an object"))
}

fn positive(value: &Value, key: &str) -> Result<u64, String> {
    value
        .as_u64()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("createOptions.{key} must be a positive integer, found {value}"))
}

fn host_config(value: &Value, options: &mut ModuleOptions) -> Result<(), String> {
    for (key, value) in object(value, "HostConfig")? {
        match key.as_str() {
            "Memory" => options.memory_limit = positive(value, "HostConfig.Memory")?,
            other => return Err(unsupported(&format!("HostConfig.{other}"))),
        }
    }
    Ok(())
}

fn wasm(value: &Value, options: &mut ModuleOptions) -> Result<(), String> {
    for (key, value) in object(value, "Wasm")? {
        match key.as_str() {
            "CallTimeoutMs" => {
                options.call_timeout =
                    Duration::from_millis(positive(value, "Wasm.CallTimeoutMs")?);
            }
            "InitTimeoutMs" => {
                options.init_timeout =
                    Duration::from_millis(positive(value, "Wasm.InitTimeoutMs")?);
            }
            other => return Err(unsupported(&format!("Wasm.{other}"))),
        }
    }
    Ok(())
}

fn env(value: &Value) -> Result<Vec<(String, String)>, String> {
    let list = value
        .as_array()
        .ok_or("createOptions.Env must be a list of \"NAME=value\" strings")?;
    list.iter()
        .map(|item| {
            let text = item.as_str().ok_or_else(|| {
                format!("createOptions.Env entries must be strings, found {item}")
            })?;
            match text.split_once('=') {
                Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
                _ => Err(format!(
                    "createOptions.Env entry {text:?} is not NAME=value"
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defaults() -> ModuleOptions {
        ModuleOptions {
            memory_limit: 64 << 20,
            call_timeout: Duration::from_secs(1),
            init_timeout: Duration::from_secs(10),
            env: Vec::new(),
        }
    }

    #[test]
    fn reads_the_supported_keys() {
        let v = json!({"HostConfig": {"Memory": 1048576}, "Env": ["A=1", "B=x=y"],
                       "Labels": {"k": "v"}, "Wasm": {"CallTimeoutMs": 250}});
        let o = ModuleOptions::parse(Some(&v), &defaults()).unwrap();
        assert_eq!(o.memory_limit, 1 << 20);
        assert_eq!(o.call_timeout, Duration::from_millis(250));
        assert_eq!(o.init_timeout, Duration::from_secs(10));
        assert_eq!(
            o.env,
            [("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
        assert_eq!(ModuleOptions::parse(None, &defaults()).unwrap(), defaults());
    }

    #[test]
    fn refuses_what_it_cannot_honour_by_name() {
        for (v, needle) in [
            (
                json!({"HostConfig": {"Privileged": true}}),
                "createOptions.HostConfig.Privileged",
            ),
            (json!({"Cmd": ["x"]}), "createOptions.Cmd"),
            (json!({"Wasm": {"Fuel": 1}}), "createOptions.Wasm.Fuel"),
            (json!({"HostConfig": {"Memory": 0}}), "positive integer"),
            (json!({"Env": ["NOEQUALS"]}), "not NAME=value"),
            (json!([1]), "must be a JSON object"),
        ] {
            let err = ModuleOptions::parse(Some(&v), &defaults()).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }
}
