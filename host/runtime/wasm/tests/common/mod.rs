//! The rig the wasm runtime's integration tests share: a real hub, twin store and wasm runtime
//! (compile cache in a temporary directory), and no agent: tests start modules themselves.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use verge_hub::{Commit, Hub, HubOptions, Identity, QueueLimits, RouteSet, RouteSpec, Target};
use verge_message::Message;
use verge_runtime::{ModuleContext, ModuleHandle, ModuleLog, ModuleRuntime, ModuleSpec};
use verge_runtime_wasm::{WasmOptions, WasmRuntime};
use verge_twin::TwinStore;

pub const DEVICE: &str = "dev1";

pub struct Rig {
    pub hub: Arc<Hub>,
    pub twins: Arc<TwinStore>,
    pub runtime: WasmRuntime,
    pub dir: PathBuf,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Rig {
    /// A rig whose hub has `routes` (name, route) and queues bounded by `limits`.
    pub fn new(tag: &str, routes: &[(&str, &str)], limits: QueueLimits) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "verge-wasm-{tag}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let hub = Hub::new(HubOptions {
            device_id: DEVICE.into(),
            queue_limits: limits,
            resident_per_queue: usize::MAX,
        });
        let specs: Vec<RouteSpec> = routes
            .iter()
            .map(|(name, route)| RouteSpec {
                name: (*name).into(),
                route: (*route).into(),
                priority: None,
                time_to_live_secs: None,
            })
            .collect();
        hub.install(RouteSet::compile(&specs, 7200).unwrap());
        let runtime = WasmRuntime::new(WasmOptions::new(dir.join("cache"))).unwrap();
        Self {
            hub,
            twins: Arc::new(TwinStore::new()),
            runtime,
            dir,
        }
    }

    /// A wasm module spec for `component`.
    pub fn spec(
        name: &str,
        component: &Path,
        env: &[(&str, &str)],
        create_options: Option<Value>,
    ) -> ModuleSpec {
        ModuleSpec {
            name: name.into(),
            kind: "wasm".into(),
            image: component.display().to_string(),
            version: "1".into(),
            create_options,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            ..ModuleSpec::default()
        }
    }

    /// Prepare and start a module; its handle and log.
    pub async fn start(&self, spec: &ModuleSpec) -> (ModuleHandle, ModuleLog) {
        let log = ModuleLog::new(1 << 20);
        self.runtime.prepare(spec).await.unwrap();
        let context = ModuleContext {
            identity: Identity::module(DEVICE, &spec.name),
            generation_id: "gen1".into(),
            iothub_hostname: "hub.example".into(),
            gateway_hostname: "edge.example".into(),
            hub: Arc::clone(&self.hub),
            twins: Arc::clone(&self.twins),
            log: log.clone(),
        };
        (self.runtime.start(spec, context).await.unwrap(), log)
    }

    /// Send `body` (marked JSON) as if module `from` sent it on `output`.
    pub async fn inject(&self, from: &str, output: &str, body: &[u8]) -> Arc<Message> {
        let mut m = Message::new(body.to_vec()).with_system("contentType", "application/json");
        self.hub
            .stamp(&Identity::module(DEVICE, from), Some(output.into()), &mut m);
        let m = Arc::new(m);
        self.hub
            .commit(Commit {
                messages: vec![Arc::clone(&m)],
                ack: None,
                ..Commit::default()
            })
            .await
            .expect("an in-memory hub accepts");
        m
    }

    /// Call direct method `name` of `module`; its status and parsed payload.
    pub async fn method(&self, module: &str, name: &str) -> (i32, Value) {
        let who = Identity::module(DEVICE, module);
        let answer = self
            .hub
            .methods()
            .invoke(&who, name, "{}", Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let payload = serde_json::from_str(&answer.payload)
            .unwrap_or_else(|e| panic!("{name}: {e}: {}", answer.payload));
        (answer.status, payload)
    }

    /// Wait until `module` has taken all `n` messages sent to it off its queue.
    pub async fn drained(&self, module: &str, n: u64) {
        let queue = self.hub.queue(&Target::Module(module.into()));
        wait_for(
            &format!("{n} inputs handled by {module}"),
            Duration::from_secs(20),
            || {
                let s = queue.stats();
                (s.queued == 0 && s.delivered == n).then_some(())
            },
        )
        .await;
    }
}

/// Poll `f` until it gives a value; panics after `timeout`.
pub async fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A module log's text.
pub fn lines(log: &ModuleLog) -> String {
    log.tail(None).into_iter().map(|l| l.text + "\n").collect()
}
