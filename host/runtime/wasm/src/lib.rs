//! Runs Verge modules that are WebAssembly components, in-process, with wasmtime.
//!
//! One [`WasmRuntime`] per process holds the engine (pooling allocator, epoch interruption), the
//! linker with the `verge:module` world and WASI p2, and the compiled-component cache. Each
//! module is one long-lived instance with its own `Store`: its memory cap, its call deadlines,
//! its outbox, its log (see [`instance`]).
//!
//! Nothing is granted by default: WASI p2 is linked (every guest toolchain imports parts of it),
//! but a module gets no preopened directories, no sockets (wasmtime 48 denies them), and only the
//! environment the manifest gives it. Its stdout and stderr are its log.
//!
//! `define_unknown_imports_as_traps` is deliberately not used: with WASI linked it replaces
//! semver-matched WASI imports by traps (see the reference notes). A component whose imports the
//! linker cannot satisfy is refused at `prepare`, with wasmtime's message naming the import.
//!
//! `settings.image` is a local component file or an OCI reference (see [`fetch`] for the rule
//! and for how references are fetched: [`ComponentFetcher`], `WasmOptions::fetcher`).

mod bindings;
mod cache;
mod engine;
pub mod fetch;
mod host;
pub mod instance;
mod message;
mod options;
mod stdio;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use verge_runtime::{
    BoxFuture, ModuleContext, ModuleHandle, ModuleRuntime, ModuleSpec, Prepared, RuntimeError,
};
use wasmtime::Engine;
use wasmtime::component::{HasSelf, InstancePre, Linker};
use wasmtime_wasi_config::WasiConfig;

pub use cache::{Compiler, compile_file};
pub use engine::EngineSettings;
pub use fetch::{ComponentFetcher, Fetched};
pub use instance::{EXIT_DEADLINE, EXIT_INIT_ERROR, EXIT_MEMORY, EXIT_TRAP, POISON_ATTEMPTS};
pub use options::ModuleOptions;

use cache::ComponentCache;
use host::{CallLimits, Host};

/// How the wasm runtime is set up.
#[derive(Clone, Debug)]
pub struct WasmOptions {
    /// Where compiled components are cached.
    pub cache_dir: PathBuf,
    /// Modules that can run at once (sizes the pooling allocator).
    pub max_modules: u32,
    /// The largest memory cap any module may ask for, in bytes.
    pub max_memory_bytes: u64,
    /// Per-module settings when `createOptions` does not say.
    pub defaults: ModuleOptions,
    /// Largest message body a module may send.
    pub max_message_bytes: u64,
    /// Most messages one call may send.
    pub max_messages_per_call: usize,
    /// Where components are compiled.
    pub compiler: Compiler,
    /// Brings components named by OCI references into local files; `None`: references are
    /// refused (see [`fetch`]).
    pub fetcher: Option<Arc<dyn ComponentFetcher>>,
}

impl WasmOptions {
    /// Defaults, with the cache in `cache_dir`.
    pub fn new(cache_dir: PathBuf) -> Self {
        Self {
            cache_dir,
            max_modules: 64,
            max_memory_bytes: 4 << 30,
            defaults: ModuleOptions {
                memory_limit: 128 << 20,
                call_timeout: Duration::from_secs(1),
                init_timeout: Duration::from_secs(10),
                env: Vec::new(),
            },
            max_message_bytes: 256 * 1024,
            max_messages_per_call: 10_000,
            compiler: Compiler::InProcess,
            fetcher: None,
        }
    }
}

struct Shared {
    engine: Engine,
    linker: Linker<Host>,
    cache: Arc<ComponentCache>,
    options: WasmOptions,
    /// What the fetcher gave for each OCI reference at its last `prepare`.
    fetched: Mutex<HashMap<String, Fetched>>,
    pooling: bool,
    _ticker: engine::EpochTicker,
}

/// The wasm module runtime.
#[derive(Clone)]
pub struct WasmRuntime {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for WasmRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmRuntime")
            .field("pooling", &self.shared.pooling)
            .finish_non_exhaustive()
    }
}

fn failed(what: &str) -> impl FnOnce(wasmtime::Error) -> RuntimeError + '_ {
    move |e| RuntimeError::Failed(format!("{what}: {e:#}"))
}

impl WasmRuntime {
    /// Build the engine, linker and cache.
    pub fn new(options: WasmOptions) -> Result<Self, RuntimeError> {
        let (engine, settings) = engine::build(options.max_modules, options.max_memory_bytes)
            .map_err(failed("wasm engine"))?;
        let mut linker = Linker::<Host>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(failed("linking WASI"))?;
        message::add_to_linker(&mut linker).map_err(failed("linking verge:module/types"))?;
        use bindings::verge::module::{outputs, timer, twin};
        outputs::add_to_linker::<Host, HasSelf<Host>>(&mut linker, |h| h)
            .map_err(failed("linking verge:module/outputs"))?;
        twin::add_to_linker::<Host, HasSelf<Host>>(&mut linker, |h| h)
            .map_err(failed("linking verge:module/twin"))?;
        timer::add_to_linker::<Host, HasSelf<Host>>(&mut linker, |h| h)
            .map_err(failed("linking verge:module/timer"))?;
        bindings::wasi::logging::logging::add_to_linker::<Host, HasSelf<Host>>(&mut linker, |h| h)
            .map_err(failed("linking wasi:logging"))?;
        wasmtime_wasi_config::add_to_linker(&mut linker, |h| WasiConfig::from(&h.config))
            .map_err(failed("linking wasi:config"))?;
        let cache = ComponentCache::new(
            options.cache_dir.clone(),
            &engine,
            settings,
            options.compiler.clone(),
        )
        .map_err(|e| {
            RuntimeError::Failed(format!(
                "component cache {}: {e}",
                options.cache_dir.display()
            ))
        })?;
        let ticker = engine::EpochTicker::start(engine.clone())
            .map_err(|e| RuntimeError::Failed(format!("epoch ticker: {e}")))?;
        Ok(Self {
            shared: Arc::new(Shared {
                engine,
                linker,
                cache: Arc::new(cache),
                options,
                fetched: Mutex::new(HashMap::new()),
                pooling: settings.pooling,
                _ticker: ticker,
            }),
        })
    }

    /// Whether the pooling allocator is in use (else on-demand allocation).
    pub fn pooling(&self) -> bool {
        self.shared.pooling
    }

    fn module_options(&self, spec: &ModuleSpec) -> Result<ModuleOptions, RuntimeError> {
        let options =
            ModuleOptions::parse(spec.create_options.as_ref(), &self.shared.options.defaults)
                .map_err(RuntimeError::Invalid)?;
        let ceiling = self.shared.options.max_memory_bytes;
        if options.memory_limit > ceiling {
            return Err(RuntimeError::Invalid(format!(
                "createOptions.HostConfig.Memory {} exceeds the runtime's ceiling of {ceiling} bytes",
                options.memory_limit
            )));
        }
        Ok(options)
    }

    /// The component file of `spec`, and what the fetcher said when it came from a registry. A
    /// local path is used as it is; an OCI reference goes to the fetcher on `prepare`
    /// (`fresh`), while `start` uses what the last successful `prepare` of that reference
    /// fetched ([`WasmRuntime::remember`]).
    async fn component(
        &self,
        spec: &ModuleSpec,
        fresh: bool,
    ) -> Result<(PathBuf, Option<Fetched>), RuntimeError> {
        if fetch::is_local(&spec.image) {
            return Ok((PathBuf::from(&spec.image), None));
        }
        if !fresh {
            let known = self
                .shared
                .fetched
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&spec.image)
                .cloned();
            if let Some(known) = known
                && known.path.exists()
            {
                return Ok((known.path.clone(), Some(known)));
            }
        }
        let fetcher = self
            .shared
            .options
            .fetcher
            .as_ref()
            .ok_or_else(|| fetch::no_fetcher(&spec.image))?;
        let found = fetcher.fetch(spec).await?;
        tracing::info!(module = %spec.name, image = %spec.image, digest = %found.digest,
            path = %found.path.display(), "component fetched");
        Ok((found.path.clone(), Some(found)))
    }

    /// Remember what `spec`'s reference was fetched as, once it loaded: later starts run it.
    /// (Only then: a component that fails to load must not replace, for restarts of a module
    /// still running, the one that was prepared before.)
    fn remember(&self, spec: &ModuleSpec, fetched: Option<Fetched>) {
        if let Some(fetched) = fetched {
            self.shared
                .fetched
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(spec.image.clone(), fetched);
        }
    }

    async fn instance_pre(
        &self,
        spec: &ModuleSpec,
        path: &Path,
    ) -> Result<(InstancePre<Host>, String), RuntimeError> {
        let loaded = self.shared.cache.load(&self.shared.engine, path).await?;
        tracing::debug!(module = %spec.name, digest = %loaded.digest, "component loaded");
        let pre = self
            .shared
            .linker
            .instantiate_pre(&loaded.component)
            .map_err(|e| RuntimeError::Invalid(format!("the component cannot run here: {e:#}")))?;
        Ok((pre, loaded.digest))
    }
}

impl ModuleRuntime for WasmRuntime {
    fn kind(&self) -> &'static str {
        "wasm"
    }

    fn prepare<'a>(
        &'a self,
        spec: &'a ModuleSpec,
    ) -> BoxFuture<'a, Result<Prepared, RuntimeError>> {
        Box::pin(async move {
            self.module_options(spec)?;
            let (path, fetched) = self.component(spec, true).await?;
            let (_, digest) = self.instance_pre(spec, &path).await?;
            let image_hash = match &fetched {
                Some(fetched) => fetched.digest.clone(),
                None => format!("sha256:{digest}"),
            };
            self.remember(spec, fetched);
            Ok(Prepared {
                image_hash: Some(image_hash),
            })
        })
    }

    fn start<'a>(
        &'a self,
        spec: &'a ModuleSpec,
        context: ModuleContext,
    ) -> BoxFuture<'a, Result<ModuleHandle, RuntimeError>> {
        Box::pin(async move {
            let options = self.module_options(spec)?;
            let (path, fetched) = self.component(spec, false).await?;
            let (pre, _) = self.instance_pre(spec, &path).await?;
            self.remember(spec, fetched);
            let limits = CallLimits {
                max_message_bytes: self.shared.options.max_message_bytes,
                max_outbox: self.shared.options.max_messages_per_call,
            };
            let setup = instance::Setup {
                pre,
                options,
                limits,
            };
            Ok(instance::start(&self.shared.engine, spec, context, setup).await)
        })
    }
}
