//! `verge run`: the daemon. Wires the hub, the twin store, the module runtimes and the agent,
//! serves the management API, applies the startup deployment, and shuts down cleanly on
//! SIGINT or SIGTERM (modules stopped in reverse startup order).
//!
//! One daemon per data directory: a lock file in it keeps a second daemon out.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use verge_hub::{Hub, HubOptions, QueueLimits};
use verge_mgmt::Services;
use verge_runtime::ModuleRuntime;
use verge_runtime_wasm::WasmRuntime;
use verge_twin::TwinStore;

use crate::config::Config;

/// Create the data directory (0700) and take its lock.
fn lock_data_dir(dir: &Path) -> anyhow::Result<File> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", dir.display()))?;
    }
    let lock = File::create(dir.join("verge.lock"))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => {
            bail!(
                "another verge daemon is running with the data directory {}",
                dir.display()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e).context("cannot lock the data directory"),
    }
}

/// Read a manifest file and make its relative component paths absolute.
pub fn read_manifest(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut manifest: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let base = path
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    verge_manifest::resolve_local_images(&mut manifest, &base);
    Ok(manifest)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Run the daemon until a signal. The management API opens once the startup deployment (the one
/// given, else the saved one) is applied, so that the first `verge list` shows it.
pub async fn run(
    config: Config,
    data_dir: PathBuf,
    deployment: Option<PathBuf>,
) -> anyhow::Result<()> {
    let _lock = lock_data_dir(&data_dir)?;
    let data_dir = data_dir.canonicalize().unwrap_or(data_dir);
    let (store_path, store_options) = config.store_options(&data_dir);
    let (store, recovered) =
        verge_store::Store::open(&store_path, store_options).map_err(anyhow::Error::from)?;
    let hub = Hub::with_store(
        HubOptions {
            device_id: config.device_id.clone(),
            queue_limits: QueueLimits {
                max_messages: config.hub.max_queue_messages,
                max_bytes: config.hub.max_queue_bytes,
            },
            resident_per_queue: config.store.resident_per_queue,
        },
        Arc::clone(&store),
        &recovered,
    );
    let twins = Arc::new(TwinStore::new());
    let restored = crate::twins::restore(&store, &twins).context("reading the saved twins")?;
    tracing::info!(twins = restored, "twins restored");
    tokio::spawn(crate::twins::persist(
        Arc::clone(&store),
        Arc::clone(&twins),
    ));
    let wasm =
        WasmRuntime::new(config.wasm_options(&data_dir)).context("starting the wasm runtime")?;
    tracing::info!(pooling = wasm.pooling(), "wasm runtime ready");
    let security = crate::security::start(&config, &data_dir, &hub, &twins).await?;
    let mut runtimes: Vec<Arc<dyn ModuleRuntime>> = vec![Arc::new(wasm)];
    match crate::containers::start(&config, &data_dir, &security, &twins) {
        Ok(containers) => runtimes.push(Arc::new(containers)),
        Err(e) => tracing::warn!("container modules are not available: {e:#}"),
    }
    let agent = verge_agent::spawn(
        config.agent_options()?,
        runtimes,
        Arc::clone(&hub),
        Arc::clone(&twins),
    );
    tokio::spawn(verge_hub::config::serve(
        Arc::clone(&hub),
        Arc::clone(&twins),
    ));

    tokio::spawn(crate::identities::follow(
        Arc::clone(&security.registry),
        Arc::clone(&twins),
    ));

    let services = Services {
        hub,
        twins,
        agent: agent.clone(),
        data_dir: data_dir.clone(),
        deploy_timeout: Duration::from_secs(config.agent.deploy_timeout_secs),
        identities: security.registry,
        trust_bundle: security.trust_bundle,
        mqtt: security.broker,
    };
    let startup = match deployment {
        Some(path) => Some((read_manifest(&path)?, path.display().to_string())),
        None => {
            let saved = verge_mgmt::deploy::saved_path(&data_dir);
            match std::fs::read_to_string(&saved) {
                Ok(text) => Some((
                    serde_json::from_str(&text).with_context(|| {
                        format!("the saved deployment {} is damaged", saved.display())
                    })?,
                    format!("{} (saved)", saved.display()),
                )),
                Err(_) => None,
            }
        }
    };
    if let Some((manifest, from)) = startup {
        let report = verge_mgmt::deploy::deploy(&services, &manifest).await;
        match report.code {
            200 => tracing::info!(version = report.version, %from, "deployment applied"),
            _ if report.version == 0 => {
                agent.shutdown().await;
                bail!(
                    "the deployment {from} was refused ({}): {}",
                    report.code,
                    report.description
                )
            }
            code => {
                tracing::warn!(code, %from, description = %report.description, "deployment applied with errors")
            }
        }
    }

    if config.metrics.port != 0 {
        let addr = std::net::SocketAddr::new(config.metrics.bind, config.metrics.port);
        let services = services.clone();
        tokio::spawn(async move {
            if let Err(e) = verge_mgmt::metrics::serve(services, addr).await {
                tracing::error!(%addr, error = %e, "metrics endpoint not available");
            }
        });
    }
    let socket = data_dir.join(verge_mgmt::SOCKET);
    let server = tokio::spawn({
        let services = services.clone();
        let socket = socket.clone();
        async move { verge_mgmt::server::serve(services, &socket).await }
    });
    tracing::info!(device = %config.device_id, data_dir = %data_dir.display(), "verge is running");

    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutting down"),
        result = server => {
            agent.shutdown().await;
            return match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e).context("the management API failed"),
                Err(e) => Err(e).context("the management API task failed"),
            };
        }
    }
    agent.shutdown().await;
    let _ = std::fs::remove_file(&socket);
    let _ = crate::twins::save_changed(&store, &services.twins).await;
    // Everything accepted is committed; close the file cleanly so the next start needs no repair.
    store.close();
    Ok(())
}
