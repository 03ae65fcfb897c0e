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

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};
use verge_runtime::RuntimeError;
use wasmtime::Engine;
use wasmtime::component::Component;

/// A loaded component and the digest of its bytes.
#[derive(Clone)]
pub struct Loaded {
    pub component: Component,
    pub digest: String,
}

/// The component cache.
pub struct ComponentCache {
    dir: PathBuf,
    engine_key: String,
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
    /// A cache in `dir` (created if missing).
    pub fn new(dir: PathBuf, engine: &Engine) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(Self {
            dir,
            engine_key: engine_key(engine),
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
        // SAFETY: as above; the file was just written by this engine.
        unsafe { Component::deserialize_file(engine, &file) }
            .map_err(|e| RuntimeError::Failed(format!("cannot load compiled component: {e}")))
    }

    fn compile_to(&self, engine: &Engine, bytes: &[u8], file: &Path) -> Result<(), RuntimeError> {
        if !is_component(bytes) {
            return Err(RuntimeError::Invalid(
                "not a WebAssembly component (a core module or another file); build it with \
                 the wasm32-wasip2 target or a component toolchain"
                    .into(),
            ));
        }
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
}

/// A component starts with the wasm magic and layer 1 in its version field.
fn is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [1, 0]
}
