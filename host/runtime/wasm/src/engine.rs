//! The one wasmtime `Engine` of the process and its epoch ticker.
//!
//! The engine uses the pooling allocator, sized for `max_instances` modules, and falls back to
//! on-demand allocation where the pool's address space cannot be reserved (small 32-bit or
//! VA-limited boards). Epoch interruption drives per-call deadlines: a ticker thread advances the
//! epoch every [`TICK`], and each call checks its deadline at every tick (see
//! [`crate::instance`]). The ticker is an OS thread, not a task, so that guests stuck in loops on
//! every runtime worker cannot stop it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the granularity of call deadlines.
pub const TICK: Duration = Duration::from_millis(10);

/// What an engine is built from. Compiled code is only valid for an engine built from the same
/// settings, so the compiler process (see [`crate::Compiler`]) gets them too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineSettings {
    /// Modules that can run at once (sizes the pooling allocator).
    pub max_modules: u32,
    /// The largest memory any module may have.
    pub max_memory_bytes: u64,
    /// Whether the pooling allocator is used.
    pub pooling: bool,
}

/// Build the engine exactly as `settings` say (no fallback).
pub fn build_exact(settings: &EngineSettings) -> wasmtime::Result<Engine> {
    if !settings.pooling {
        return Engine::new(&base_config());
    }
    let mut config = base_config();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool(
        settings.max_modules,
        settings.max_memory_bytes,
    )));
    Engine::new(&config)
}

/// Build the engine, with the pooling allocator if it can be had. Returns it and the settings
/// it was built from.
pub fn build(
    max_instances: u32,
    max_memory_bytes: u64,
) -> wasmtime::Result<(Engine, EngineSettings)> {
    let mut settings = EngineSettings {
        max_modules: max_instances,
        max_memory_bytes,
        pooling: true,
    };
    match build_exact(&settings) {
        Ok(engine) => Ok((engine, settings)),
        Err(e) => {
            tracing::warn!(error = %e, "pooling allocator unavailable; using on-demand allocation");
            settings.pooling = false;
            Ok((build_exact(&settings)?, settings))
        }
    }
}

fn pool(max_instances: u32, max_memory_bytes: u64) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::new();
    let n = max_instances.max(1);
    pool.total_component_instances(n)
        // componentize-py components hold ~14 core modules and ~65 core instances each.
        .total_core_instances(n.saturating_mul(80))
        .max_core_instances_per_component(200)
        .total_memories(n.saturating_mul(4))
        .max_memories_per_component(16)
        .total_tables(n.saturating_mul(8))
        .max_tables_per_component(32)
        .table_elements(100_000)
        .total_stacks(n)
        .max_component_instance_size(10 << 20)
        .max_core_instance_size(10 << 20)
        .max_memory_size(usize::try_from(max_memory_bytes).unwrap_or(usize::MAX));
    pool
}

fn base_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config
}

/// Advances the engine's epoch every [`TICK`] until dropped.
#[derive(Debug)]
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("verge-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
