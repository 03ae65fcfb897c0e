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

/// Build the engine. Returns it and whether the pooling allocator is in use.
pub fn build(max_instances: u32, max_memory_bytes: u64) -> wasmtime::Result<(Engine, bool)> {
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
    let mut config = base_config();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    match Engine::new(&config) {
        Ok(engine) => Ok((engine, true)),
        Err(e) => {
            tracing::warn!(error = %e, "pooling allocator unavailable; using on-demand allocation");
            Ok((Engine::new(&base_config())?, false))
        }
    }
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
