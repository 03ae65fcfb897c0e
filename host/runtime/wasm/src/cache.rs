//! Compiled components, kept in memory and on disk.
//!
//! Compiling a component is slow (tens of milliseconds for a Rust module, seconds for Python or
//! JavaScript), loading a precompiled one is not. A component is compiled once per content and
//! engine: the file `{sha256 of the .wasm}-{engine compatibility hash}.cwasm` in the cache
//! directory holds it, written atomically, and is memory-mapped on load. A file that no longer
//! loads (a different wasmtime, a damaged file) is compiled again.
//!
//! Loading a `.cwasm` runs the native code it contains, so only files this cache wrote are
//! loaded, from a directory only the daemon's user can write (created 0700).
//!
//! Where compiling happens is a [`Compiler`]: in this process, or in a short-lived child process
//! (the daemon runs `verge compile-component`). The child keeps Cranelift's code and heap out of
//! the daemon for good (measured on the quickstart: ~24 MB resident after compiling in-process,
//! ~14 MB when the child compiles), and a compiler that crashes or runs out of memory on a hostile
//! component takes only the child down.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};
use verge_runtime::RuntimeError;
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::engine::EngineSettings;

/// A loaded component and the digest of its bytes.
#[derive(Clone)]
pub struct Loaded {
    pub component: Component,
    pub digest: String,
}

/// Where components are compiled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Compiler {
    /// In this process.
    #[default]
    InProcess,
    /// In a child process: `PROGRAM compile-component --max-modules N --max-memory-bytes B
    /// --pooling BOOL INPUT OUTPUT` (the `verge` binary), which exits 0 on success, 2 when the
    /// component is invalid (its stderr says why), 1 otherwise.
    Subprocess(PathBuf),
}

/// The component cache.
pub struct ComponentCache {
    dir: PathBuf,
    engine_key: String,
    settings: EngineSettings,
    compiler: Compiler,
    loaded: Mutex<HashMap<String, Component>>,
}

/// A stable hash of the engine's compatibility, for file names.
fn engine_key(engine: &Engine) -> String {
    struct Sha(Sha256);
    impl Hasher for Sha {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut sha = Sha(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut sha);
    hex(&sha.0.finalize()[..8])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl ComponentCache {
    /// A cache in `dir` (created if missing) for an engine built from `settings`.
    pub fn new(
        dir: PathBuf,
        engine: &Engine,
        settings: EngineSettings,
        compiler: Compiler,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(Self {
            dir,
            engine_key: engine_key(engine),
            settings,
            compiler,
            loaded: Mutex::new(HashMap::new()),
        })
    }

    /// Load the component at `path`, compiling it if this content was never compiled.
    pub async fn load(
        self: &Arc<Self>,
        engine: &Engine,
        path: &Path,
    ) -> Result<Loaded, RuntimeError> {
        let bytes = tokio::fs::read(path).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RuntimeError::NotFound(path.display().to_string()),
            _ => RuntimeError::Failed(format!("cannot read {}: {e}", path.display())),
        })?;
        let digest = hex(&Sha256::digest(&bytes));
        let memo = self
            .loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&digest)
            .cloned();
        if let Some(component) = memo {
            return Ok(Loaded { component, digest });
        }
        let this = Arc::clone(self);
        let engine = engine.clone();
        let key = digest.clone();
        let component =
            tokio::task::spawn_blocking(move || this.load_blocking(&engine, &key, &bytes))
                .await
                .map_err(|e| RuntimeError::Failed(format!("compiling failed: {e}")))??;
        self.loaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(digest.clone(), component.clone());
        Ok(Loaded { component, digest })
    }

    fn load_blocking(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: &[u8],
    ) -> Result<Component, RuntimeError> {
        let file = self.dir.join(format!("{digest}-{}.cwasm", self.engine_key));
        if file.exists() {
            // SAFETY: the file was written by `compile_to` below from a component this engine
            // compiled, in a directory only this user can write; wasmtime checks that it
            // matches the engine before using it.
            match unsafe { Component::deserialize_file(engine, &file) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "cached component unusable; recompiling");
                    let _ = std::fs::remove_file(&file);
                }
            }
        }
        self.compile_to(engine, bytes, &file)?;
        release_compiler_memory();
        // SAFETY: as above; the file was just written by this engine.
        unsafe { Component::deserialize_file(engine, &file) }
            .map_err(|e| RuntimeError::Failed(format!("cannot load compiled component: {e}")))
    }

    fn compile_to(&self, engine: &Engine, bytes: &[u8], file: &Path) -> Result<(), RuntimeError> {
        check_component(bytes)?;
        let Compiler::Subprocess(program) = &self.compiler else {
            compile_bytes(engine, bytes, file)?;
            release_compiler_memory();
            return Ok(());
        };
        // Hand the child the very bytes that were hashed.
        let input = file.with_extension("wasm.tmp");
        std::fs::write(&input, bytes)
            .map_err(|e| RuntimeError::Failed(format!("cannot write {}: {e}", input.display())))?;
        let output = std::process::Command::new(program)
            .arg("compile-component")
            .arg("--max-modules")
            .arg(self.settings.max_modules.to_string())
            .arg("--max-memory-bytes")
            .arg(self.settings.max_memory_bytes.to_string())
            .arg("--pooling")
            .arg(self.settings.pooling.to_string())
            .arg(&input)
            .arg(file)
            .output();
        let _ = std::fs::remove_file(&input);
        let output = output.map_err(|e| {
            RuntimeError::Failed(format!(
                "cannot run the compiler {}: {e}",
                program.display()
            ))
        })?;
        let why = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        match output.status.code() {
            Some(0) => Ok(()),
            Some(2) => Err(RuntimeError::Invalid(why)),
            _ => Err(RuntimeError::Failed(format!(
                "the compiler process failed ({}): {why}",
                output.status
            ))),
        }
    }
}

fn check_component(bytes: &[u8]) -> Result<(), RuntimeError> {
    if is_component(bytes) {
        Ok(())
    } else {
        Err(RuntimeError::Invalid(
            "not a WebAssembly component (a core module or another file); build it with the \
             wasm32-wasip2 target or a component toolchain"
                .into(),
        ))
    }
}

/// Compile `bytes` with `engine` into `file`, atomically.
fn compile_bytes(engine: &Engine, bytes: &[u8], file: &Path) -> Result<(), RuntimeError> {
    let compiled = engine
        .precompile_component(bytes)
        .map_err(|e| RuntimeError::Invalid(format!("not a valid component: {e:#}")))?;
    let tmp = file.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&compiled)?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)
    };
    write().map_err(|e| RuntimeError::Failed(format!("cannot write {}: {e}", file.display())))
}

/// Compile the component in `input` into `output` for an engine built from `settings`: what the
/// compiler process ([`Compiler::Subprocess`]) does.
pub fn compile_file(
    settings: &EngineSettings,
    input: &Path,
    output: &Path,
) -> Result<(), RuntimeError> {
    let bytes = std::fs::read(input).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => RuntimeError::NotFound(input.display().to_string()),
        _ => RuntimeError::Failed(format!("cannot read {}: {e}", input.display())),
    })?;
    check_component(&bytes)?;
    let engine = crate::engine::build_exact(settings)
        .map_err(|e| RuntimeError::Failed(format!("wasm engine: {e:#}")))?;
    compile_bytes(&engine, &bytes, output)
}

/// Give back to the system the heap Cranelift freed. glibc keeps freed memory in its per-thread
/// arenas, and compiling runs on a pool of threads, so without this a daemon that compiled its
/// modules at start stays ~14 MB larger for the rest of its life (measured on the quickstart).
fn release_compiler_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas; it touches
    // no memory in use and has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A component starts with the wasm magic and layer 1 in its version field.
fn is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [1, 0]
}
