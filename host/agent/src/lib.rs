//! Verge's agent: it makes the modules that run match the deployment.
//!
//! The deployment is the desired properties of the `$edgeAgent` twin (set by `verge deploy`
//! today, by the upstream connection later). Whenever they change, or a module exits, or every
//! tick, the agent reconciles, in IoT Edge's order (iotedge.md §2.4):
//!
//! 1. modules no longer in the deployment are stopped and removed;
//! 2. the others, by ascending `startupOrder`: a new or changed definition is prepared (the
//!    runtime compiles or pulls) and, if that works, replaces the running one; a changed
//!    `status` starts or stops it; then IoT Edge's restart policy applies
//!    ([`verge_restart`]): a module that exited is restarted after its cool-off
//!    (`min(10·2ⁿ s, 300 s)`), is `failed` after `MaxRestartCount` restarts, and its counters
//!    reset after `IntensiveCareTimeInMinutes` of running.
//!
//! A deployment that does not parse is refused with IoT Edge's status (400, 412, 417) and the
//! running modules are left alone. A definition that cannot be prepared leaves the module's
//! previous definition running and makes the deployment's status 500, as an image that does not
//! pull does in IoT Edge. `MaxRestartCount`, `CoolOffTimeUnitInSeconds` and
//! `IntensiveCareTimeInMinutes` are read, as in IoT Edge, from the `env` of the deployment's
//! `systemModules.edgeAgent`, over the daemon's settings.
//!
//! After every pass the agent writes the `$edgeAgent` reported properties ([`report`]) and
//! publishes an [`AgentStatus`] for the CLI.

mod module;
pub mod report;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use verge_hub::{Hub, Identity};
use verge_manifest::{
    AgentConfig, EDGE_AGENT_TWIN, ImagePullPolicy, ModuleChange, ModuleConfig, StatusCode,
};
use verge_restart::{RestartPolicyManager, StateChangeAction};
use verge_runtime::{
    Exit, ModuleContext, ModuleLog, ModuleRuntime, ModuleSpec, PullPolicy, RegistryCredentials,
    Stream,
};
use verge_twin::TwinStore;

pub use module::human;
pub use report::VersionInfo;

use module::{Life, Module};

/// How the agent is set up.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// The edge device's id.
    pub device_id: String,
    /// `IOTEDGE_IOTHUBHOSTNAME` for modules.
    pub iothub_hostname: String,
    /// `IOTEDGE_GATEWAYHOSTNAME` for modules.
    pub gateway_hostname: String,
    /// Restart policy parameters, unless the deployment's edgeAgent `env` says otherwise.
    pub restart: RestartPolicyManager,
    /// How long a module may take to stop before it is killed.
    pub stop_grace: Duration,
    /// How often the agent reconciles without a reason (drives backoff restarts).
    pub tick: Duration,
    /// Bytes of log kept per module.
    pub log_bytes: usize,
    /// The build reporting.
    pub version: VersionInfo,
}

/// One row of `verge list`.
#[derive(Clone, Debug, PartialEq)]
pub struct ModuleView {
    /// Module id.
    pub name: String,
    /// `wasm`, `docker`, or `system` for edgeAgent and edgeHub (Verge itself).
    pub kind: String,
    /// IoT Edge's `runtimeStatus`.
    pub status: String,
    /// `statusDescription`.
    pub description: String,
    /// Last exit code.
    pub exit_code: i64,
    /// Restarts counted by the restart policy.
    pub restart_count: u32,
    /// When it last started.
    pub last_start: Option<SystemTime>,
    /// When it last exited.
    pub last_exit: Option<SystemTime>,
    /// `settings.image`.
    pub image: String,
    /// `version`.
    pub version: String,
}

/// What the agent last did, for the CLI.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentStatus {
    /// The `$edgeAgent` desired `$version` last acted on.
    pub last_desired_version: u64,
    /// `lastDesiredStatus.code`.
    pub code: u16,
    /// `lastDesiredStatus.description`.
    pub description: String,
    /// Every module, system modules first.
    pub modules: Vec<ModuleView>,
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// No module by that name.
    #[error("no module named {0:?} in the deployment")]
    NoSuchModule(String),
    /// The agent has stopped.
    #[error("the agent is not running")]
    Stopped,
}

enum Command {
    Restart(String, oneshot::Sender<Result<(), AgentError>>),
    Shutdown(oneshot::Sender<()>),
}

struct Exited {
    name: String,
    instance: u64,
    exit: Exit,
}

/// A number no other start of any module had: an exit report names the start it ends, so that
/// the late report of an instance that was stopped, or replaced by a new definition of the same
/// module, is never taken for the current instance's.
fn next_instance() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

type Logs = Arc<Mutex<HashMap<String, ModuleLog>>>;

/// The handle to the agent.
#[derive(Clone, Debug)]
pub struct AgentHandle {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<AgentStatus>,
    logs: Logs,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Restart(name, _) => write!(f, "Restart({name})"),
            Self::Shutdown(_) => f.write_str("Shutdown"),
        }
    }
}

impl AgentHandle {
    /// The latest status.
    pub fn status(&self) -> AgentStatus {
        self.status.borrow().clone()
    }

    /// Wait until the agent has acted on desired version `version` (or a later one).
    pub async fn acted_on(&self, version: u64, timeout: Duration) -> Option<AgentStatus> {
        let mut status = self.status.clone();
        let wait = status.wait_for(|s| s.last_desired_version >= version);
        tokio::time::timeout(timeout, wait)
            .await
            .ok()
            .and_then(Result::ok)
            .map(|s| s.clone())
    }

    /// Stop and start a module now (its restart count is not touched).
    pub async fn restart(&self, module: &str) -> Result<(), AgentError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Restart(module.to_owned(), tx))
            .await
            .map_err(|_| AgentError::Stopped)?;
        rx.await.map_err(|_| AgentError::Stopped)?
    }

    /// The log of a module (kept across its restarts).
    pub fn log(&self, module: &str) -> Option<ModuleLog> {
        self.logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(module)
            .cloned()
    }

    /// Stop every module and the agent.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// What stays the same while the agent runs.
struct Ctx {
    options: AgentOptions,
    runtimes: HashMap<&'static str, Arc<dyn ModuleRuntime>>,
    hub: Arc<Hub>,
    twins: Arc<TwinStore>,
    exits: mpsc::UnboundedSender<Exited>,
    started: SystemTime,
}

struct Agent {
    ctx: Ctx,
    manager: RestartPolicyManager,
    config: Option<AgentConfig>,
    version: u64,
    /// The desired version the last whole reconcile pass acted on: what the status reports (a
    /// report in the middle of a pass, while an image is fetched, must not say the new version
    /// is applied).
    acted: u64,
    rejected: Option<(StatusCode, String)>,
    errors: Vec<String>,
    modules: BTreeMap<String, Module>,
    /// The definition being prepared (an image being pulled or compiled), for `verge list`.
    preparing: Option<ModuleSpec>,
    logs: Logs,
    status: watch::Sender<AgentStatus>,
}

/// Start the agent on the current tokio runtime.
pub fn spawn(
    options: AgentOptions,
    runtimes: Vec<Arc<dyn ModuleRuntime>>,
    hub: Arc<Hub>,
    twins: Arc<TwinStore>,
) -> AgentHandle {
    let (commands_tx, commands_rx) = mpsc::channel(16);
    let (exits_tx, exits_rx) = mpsc::unbounded_channel();
    let (status_tx, status_rx) = watch::channel(AgentStatus {
        last_desired_version: 0,
        code: StatusCode::Unknown.into(),
        description: String::new(),
        modules: Vec::new(),
    });
    let logs: Logs = Arc::default();
    let agent = Agent {
        manager: options.restart,
        ctx: Ctx {
            runtimes: runtimes.into_iter().map(|r| (r.kind(), r)).collect(),
            options,
            hub,
            twins,
            exits: exits_tx,
            started: SystemTime::now(),
        },
        config: None,
        version: 0,
        acted: 0,
        rejected: None,
        errors: Vec::new(),
        modules: BTreeMap::new(),
        preparing: None,
        logs: Arc::clone(&logs),
        status: status_tx,
    };
    tokio::spawn(agent.run(commands_rx, exits_rx));
    AgentHandle {
        commands: commands_tx,
        status: status_rx,
        logs,
    }
}

/// What a runtime gets of module `name`: its definition and the deployment's registry
/// credentials.
fn to_spec(name: &str, config: &ModuleConfig, deployment: &AgentConfig) -> ModuleSpec {
    ModuleSpec {
        name: name.to_owned(),
        kind: config.module_type.as_str().to_owned(),
        image: config.settings.image.clone(),
        version: config.version.clone(),
        create_options: config.create_options().cloned().map(Value::Object),
        env: config.env.clone(),
        pull_policy: match config.image_pull_policy {
            ImagePullPolicy::OnCreate => PullPolicy::OnCreate,
            ImagePullPolicy::Never => PullPolicy::Never,
        },
        registry_credentials: deployment
            .runtime
            .settings
            .registry_credentials
            .values()
            .map(|c| RegistryCredentials {
                address: c.address.clone(),
                username: c.username.clone(),
                password: c.password.clone(),
            })
            .collect(),
    }
}

/// The restart manager the deployment asks for (edgeAgent's `env`), over the daemon's.
fn manager_for(config: &AgentConfig, base: &RestartPolicyManager) -> RestartPolicyManager {
    let env = &config.system_modules.edge_agent.env;
    let get = |key: &str, default: i64| {
        env.get(key)
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(default)
    };
    let max = get("MaxRestartCount", i64::from(base.max_restart_count()));
    let unit = get(
        "CoolOffTimeUnitInSeconds",
        base.cool_off_time_unit().as_secs() as i64,
    );
    let care = get(
        "IntensiveCareTimeInMinutes",
        (base.intensive_care_time().as_secs() / 60) as i64,
    );
    RestartPolicyManager::from_settings(max, unit, care).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "edgeAgent restart settings ignored");
        *base
    })
}

impl Ctx {
    fn unsupported(kind: &str) -> String {
        match kind {
            "docker" => "type docker: container modules need containerd, which this daemon could \
                         not set up (see [containerd] in its configuration and its log)"
                .into(),
            other => format!("no runtime for modules of type {other:?}"),
        }
    }

    async fn start(&self, m: &mut Module, restart: bool) {
        let now = SystemTime::now();
        if restart {
            m.restart_count += 1;
            m.last_restart = Some(now);
        }
        let Some(runtime) = self.runtimes.get(m.spec.kind.as_str()) else {
            m.life = Life::Blocked(Self::unsupported(&m.spec.kind));
            return;
        };
        m.instance = next_instance();
        let o = &self.options;
        let context = ModuleContext {
            identity: Identity::module(&o.device_id, &m.name),
            generation_id: m.generation_id.clone(),
            iothub_hostname: o.iothub_hostname.clone(),
            gateway_hostname: o.gateway_hostname.clone(),
            hub: Arc::clone(&self.hub),
            twins: Arc::clone(&self.twins),
            log: m.log.clone(),
        };
        m.last_start = Some(now);
        match runtime.start(&m.spec, context).await {
            Ok(handle) => {
                let mut watcher = handle.clone();
                let (name, instance, exits) = (m.name.clone(), m.instance, self.exits.clone());
                tokio::spawn(async move {
                    let exit = watcher.exited().await;
                    let _ = exits.send(Exited {
                        name,
                        instance,
                        exit,
                    });
                });
                m.exit_code = 0;
                m.life = Life::Running(handle);
                tracing::info!(module = %m.name, restart, "module started");
            }
            Err(e) => {
                m.log.push(Stream::Runtime, format!("failed to start: {e}"));
                Self::record_exit(m, Exit::new(1, e.to_string()));
            }
        }
    }

    async fn stop(&self, m: &mut Module, why: &str) {
        let Life::Running(handle) = &m.life else {
            return;
        };
        let mut handle = handle.clone();
        m.instance = next_instance(); // its exit report is ours to record
        let grace = self.options.stop_grace;
        let exit = tokio::time::timeout(grace + Duration::from_secs(2), handle.stop(grace))
            .await
            .unwrap_or_else(|_| Exit::new(-1, "did not stop in time"));
        m.log.push(Stream::Runtime, format!("stopped: {why}"));
        tracing::info!(module = %m.name, why, "module stopped");
        Self::record_exit(m, exit);
    }

    fn record_exit(m: &mut Module, exit: Exit) {
        m.last_exit = Some(exit.at);
        m.exit_code = exit.code;
        m.life = Life::Exited(exit);
    }
}

impl Agent {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut exits: mpsc::UnboundedReceiver<Exited>,
    ) {
        let twins = Arc::clone(&self.ctx.twins);
        let mut desired = twins.watch_desired(EDGE_AGENT_TWIN);
        self.load_desired();
        let mut tick = tokio::time::interval(self.ctx.options.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.reconcile().await;
            self.acted = self.version;
            self.report();
            tokio::select! {
                Some(_) = desired.changed(&twins) => self.load_desired(),
                Some(exited) = exits.recv() => self.on_exit(exited),
                command = commands.recv() => match command {
                    Some(Command::Restart(name, reply)) => {
                        let _ = reply.send(self.restart(&name).await);
                    }
                    Some(Command::Shutdown(reply)) => {
                        self.shutdown().await;
                        let _ = reply.send(());
                        return;
                    }
                    None => {
                        self.shutdown().await;
                        return;
                    }
                },
                _ = tick.tick() => {}
            }
        }
    }

    fn load_desired(&mut self) {
        let doc = self.ctx.twins.desired(EDGE_AGENT_TWIN);
        self.version = doc
            .get(verge_twin::VERSION_KEY)
            .and_then(Value::as_u64)
            .unwrap_or(0);
        match AgentConfig::from_desired(&doc) {
            Ok(config) => {
                self.manager = manager_for(&config, &self.ctx.options.restart);
                self.config = Some(config);
                self.rejected = None;
            }
            Err(e) if self.version == 0 => {
                tracing::info!("no deployment yet");
                self.rejected = Some((e.code, e.description));
            }
            Err(e) => {
                tracing::warn!(version = self.version, code = %e.code, error = %e.description, "deployment refused");
                self.rejected = Some((e.code, e.description));
            }
        }
    }

    fn on_exit(&mut self, exited: Exited) {
        let Some(m) = self.modules.get_mut(&exited.name) else {
            return;
        };
        if m.instance != exited.instance {
            return;
        }
        tracing::warn!(module = %m.name, code = exited.exit.code, why = %exited.exit.description, "module exited");
        Ctx::record_exit(m, exited.exit);
    }

    fn log_for(&self, name: &str) -> ModuleLog {
        let mut logs = self.logs.lock().unwrap_or_else(PoisonError::into_inner);
        logs.entry(name.to_owned())
            .or_insert_with(|| ModuleLog::new(self.ctx.options.log_bytes))
            .clone()
    }

    async fn reconcile(&mut self) {
        let Some(config) = self.config.clone() else {
            return;
        };
        let removed: Vec<String> = self
            .modules
            .keys()
            .filter(|name| !config.modules.contains_key(*name))
            .cloned()
            .collect();
        for name in removed {
            if let Some(mut m) = self.modules.remove(&name) {
                self.ctx.stop(&mut m, "removed from the deployment").await;
            }
            self.logs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&name);
        }
        let mut order: Vec<(&String, &ModuleConfig)> = config.modules.iter().collect();
        order.sort_by_key(|(name, c)| (c.startup_order, (*name).clone()));
        let mut errors = Vec::new();
        for (name, desired) in order {
            if let Err(e) = self.reconcile_module(name, desired, &config).await {
                errors.push(format!("{name}: {e}"));
            }
        }
        self.errors = errors;
    }

    /// Bring one module in line with `desired`; an error is a failure to apply its definition.
    async fn reconcile_module(
        &mut self,
        name: &str,
        desired: &ModuleConfig,
        deployment: &AgentConfig,
    ) -> Result<(), String> {
        let change = self.modules.get(name).map(|m| {
            let change = desired.change_from(&m.config);
            // A module that could not be prepared is tried again when what it is prepared with
            // changes, even if its definition does not (new registry credentials).
            if matches!(m.life, Life::Blocked(_))
                && change != ModuleChange::Definition
                && m.spec != to_spec(name, desired, deployment)
            {
                ModuleChange::Definition
            } else {
                change
            }
        });
        match change {
            None | Some(ModuleChange::Definition) => {
                self.replace(name, desired, deployment).await?;
            }
            Some(ModuleChange::Policy | ModuleChange::DesiredStatus) => {
                if let Some(m) = self.modules.get_mut(name) {
                    let started_again = m.config.status == verge_manifest::DesiredStatus::Stopped
                        && desired.status == verge_manifest::DesiredStatus::Running;
                    m.config = desired.clone();
                    m.restart_count = 0;
                    m.last_restart = None;
                    // Desired running again: a start, as for a new module, not a restart.
                    if started_again && m.handle().is_none() && !matches!(m.life, Life::Blocked(_))
                    {
                        m.life = Life::Created;
                    }
                }
            }
            Some(ModuleChange::Unchanged) => {}
        }
        let now = SystemTime::now();
        let Some(m) = self.modules.get_mut(name) else {
            return Ok(());
        };
        if let Life::Blocked(why) = &m.life {
            return Err(why.clone());
        }
        // A module just created is started by the plan, not by the restart policy.
        if matches!(m.life, Life::Created) {
            if m.config.status == verge_manifest::DesiredStatus::Running {
                self.ctx.start(m, false).await;
            }
            return Ok(());
        }
        let state = m.planner_state(&self.manager);
        let has_stats = m.restart_count > 0 || m.last_restart.is_some();
        if self.manager.should_reset_stats(&state, has_stats, now) {
            m.restart_count = 0;
            m.last_restart = None;
        }
        match self.manager.state_change_action(&state, now) {
            StateChangeAction::Stop => self.ctx.stop(m, "desired status is stopped").await,
            StateChangeAction::Start => self.ctx.start(m, false).await,
            StateChangeAction::Restart => self.ctx.start(m, true).await,
            StateChangeAction::None => {}
        }
        Ok(())
    }

    /// Prepare `desired` and put it in place of the module's current definition.
    async fn replace(
        &mut self,
        name: &str,
        desired: &ModuleConfig,
        deployment: &AgentConfig,
    ) -> Result<(), String> {
        let spec = to_spec(name, desired, deployment);
        if let Some(m) = self.modules.get(name) {
            // This exact definition (with the same registry credentials) already failed to
            // prepare: do not try again every tick.
            if let Some((failed, why)) = &m.failed_update
                && *failed == spec
            {
                return Err(why.clone());
            }
            if let Life::Blocked(why) = &m.life
                && m.spec == spec
            {
                return Err(why.clone());
            }
        }
        let log = self.log_for(name);
        // `verge list` shows the module as being prepared while its image is fetched.
        self.preparing = Some(spec.clone());
        self.publish_status();
        let prepared = match self.ctx.runtimes.get(spec.kind.as_str()) {
            None => Err(Ctx::unsupported(&spec.kind)),
            Some(runtime) => runtime
                .prepare_logged(&spec, &log)
                .await
                .map_err(|e| e.to_string()),
        };
        self.preparing = None;
        match prepared {
            Err(why) => {
                log.push(
                    Stream::Runtime,
                    format!("cannot apply the deployment: {why}"),
                );
                match self.modules.get_mut(name) {
                    Some(m) if m.handle().is_some() => {
                        m.failed_update = Some((spec.clone(), why.clone()));
                    }
                    _ => {
                        if let Some(mut old) = self.modules.remove(name) {
                            self.ctx.stop(&mut old, "replaced").await;
                        }
                        let mut m = Module::new(name, desired.clone(), spec, log);
                        m.life = Life::Blocked(why.clone());
                        self.modules.insert(name.to_owned(), m);
                    }
                }
                Err(why)
            }
            Ok(prepared) => {
                if let Some(mut old) = self.modules.remove(name) {
                    self.ctx.stop(&mut old, "its definition changed").await;
                }
                log.push(
                    Stream::Runtime,
                    format!("deployed (version {:?})", desired.version),
                );
                let mut m = Module::new(name, desired.clone(), spec, log);
                m.image_hash = prepared.image_hash;
                self.modules.insert(name.to_owned(), m);
                Ok(())
            }
        }
    }

    async fn restart(&mut self, name: &str) -> Result<(), AgentError> {
        let m = self
            .modules
            .get_mut(name)
            .ok_or_else(|| AgentError::NoSuchModule(name.to_owned()))?;
        if let Life::Blocked(_) = m.life {
            return Ok(());
        }
        self.ctx.stop(m, "restart requested").await;
        self.ctx.start(m, false).await;
        Ok(())
    }

    async fn shutdown(&mut self) {
        let mut names: Vec<(u32, String)> = self
            .modules
            .values()
            .map(|m| (m.config.startup_order, m.name.clone()))
            .collect();
        names.sort();
        for (_, name) in names.into_iter().rev() {
            if let Some(m) = self.modules.get_mut(&name) {
                self.ctx.stop(m, "the daemon is shutting down").await;
            }
        }
        self.rejected = Some((StatusCode::Unknown, "Agent is not running".into()));
        self.report();
    }

    fn status(&self) -> (StatusCode, String) {
        if let Some((code, why)) = &self.rejected {
            return (*code, why.clone());
        }
        match &self.config {
            None => (
                StatusCode::ConfigEmptyError,
                verge_manifest::AGENT_EMPTY_ERROR.to_owned(),
            ),
            Some(_) if !self.errors.is_empty() => (StatusCode::Failed, self.errors.join("; ")),
            Some(_) => (StatusCode::Successful, String::new()),
        }
    }

    fn report(&self) {
        let now = SystemTime::now();
        let (code, description) = self.status();
        let modules: Vec<&Module> = self.modules.values().collect();
        let input = report::ReportInput {
            version: &self.ctx.options.version,
            last_desired_version: self.acted,
            status: (code, &description),
            config: self.config.as_ref(),
            modules: &modules,
            manager: &self.manager,
            started: self.ctx.started,
            now,
        };
        self.ctx
            .twins
            .set_reported(EDGE_AGENT_TWIN, report::reported(&input));
        self.publish_status();
    }

    /// The [`AgentStatus`] `verge list` shows (the twin is written by [`Agent::report`] only,
    /// after whole passes).
    fn publish_status(&self) {
        let now = SystemTime::now();
        let (code, description) = self.status();
        let modules: Vec<&Module> = self.modules.values().collect();
        let mut views = Vec::with_capacity(modules.len() + 2);
        if let Some(config) = &self.config {
            for (name, m) in [
                ("edgeAgent", &config.system_modules.edge_agent),
                ("edgeHub", &config.system_modules.edge_hub),
            ] {
                views.push(ModuleView {
                    name: name.into(),
                    kind: "system".into(),
                    status: "running".into(),
                    description: "running (Verge itself)".into(),
                    exit_code: 0,
                    restart_count: 0,
                    last_start: Some(self.ctx.started),
                    last_exit: None,
                    image: m.settings.image.clone(),
                    version: m.version.clone(),
                });
            }
        }
        let preparing = self.preparing.as_ref();
        let note = |name: &str| {
            format!(
                "preparing a new definition (fetching its image): `verge logs {name}` shows how it goes"
            )
        };
        if let Some(spec) = preparing.filter(|p| !self.modules.contains_key(&p.name)) {
            views.push(ModuleView {
                name: spec.name.clone(),
                kind: spec.kind.clone(),
                status: "unknown".into(),
                description: note(&spec.name),
                exit_code: 0,
                restart_count: 0,
                last_start: None,
                last_exit: None,
                image: spec.image.clone(),
                version: spec.version.clone(),
            });
        }
        for m in modules {
            let mut description = m.status_description(&self.manager, now);
            if preparing.is_some_and(|p| p.name == m.name) {
                description = format!("{description}; {}", note(&m.name));
            }
            views.push(ModuleView {
                name: m.name.clone(),
                kind: m.spec.kind.clone(),
                status: m.runtime_status(&self.manager).as_str().to_owned(),
                description,
                exit_code: m.exit_code,
                restart_count: m.restart_count,
                last_start: m.last_start,
                last_exit: m.last_exit,
                image: m.config.settings.image.clone(),
                version: m.config.version.clone(),
            });
        }
        let status = AgentStatus {
            last_desired_version: self.acted,
            code: code.into(),
            description,
            modules: views,
        };
        self.status.send_if_modified(|current| {
            if *current == status {
                false
            } else {
                *current = status;
                true
            }
        });
    }
}
