//! The daemon's configuration file (TOML). Every key is optional; the defaults are the embedded
//! set-up the quickstart uses: wasm modules in-process, state in `./.verge`.
//!
//! ```toml
//! data_dir = "/var/lib/verge"
//! device_id = "my-edge-device"
//! hostname = "my-edge-device.local"     # IOTEDGE_GATEWAYHOSTNAME for modules
//! iothub_hostname = "myhub.example"     # IOTEDGE_IOTHUBHOSTNAME for modules
//!
//! [hub]
//! max_queue_messages = 10000000         # per destination queue; a full queue holds its producers
//! max_queue_bytes = 4294967296
//!
//! [store]                               # the durable message store (redb)
//! path = "messages.redb"                # relative to data_dir
//! max_size_mb = 0                       # stored messages beyond which new ones are refused; 0 = no limit
//! cache_mb = 16                         # redb's page cache
//! resident_per_queue = 8192             # queued messages per queue kept in memory; the rest stays on disk
//!
//! [wasm]
//! max_modules = 64                      # sizes the pooling allocator
//! memory_limit_mb = 128                 # default cap per module (createOptions HostConfig.Memory)
//! max_memory_mb = 4096                  # the largest cap a module may ask for
//! call_timeout_ms = 1000                # default deadline per call (createOptions Wasm.CallTimeoutMs)
//! init_timeout_ms = 10000
//! max_message_bytes = 262144
//!
//! [mqtt]
//! bind = "0.0.0.0"                      # the TLS listener's address
//! tls_port = 8883                       # MQTT over TLS (IoT Hub's port); 0 turns it off
//! plain_port = 0                        # plain MQTT on 127.0.0.1 only, for development; 0 = off
//! https_port = 443                      # HTTPS on `bind`: direct methods (SDK invoke_method); 0 = off
//! client_ca_file = "/etc/verge/device-ca.pem"  # CAs (PEM) whose client certificates prove
//!                                       # X.509 CA identities, besides the edge CA
//!
//! [metrics]                             # Prometheus text on http://bind:port/metrics
//! bind = "0.0.0.0"
//! port = 9600                           # IoT Edge's; 0 turns it off
//!
//! [upstream]                            # absent: this device is a root (no parent)
//! connection_string = "HostName=…;DeviceId=…;SharedAccessKey=…;GatewayHostName=…"
//! trust_bundle = "/etc/verge/parent-ca.pem"   # the parent's CA (`verge trust-bundle` on it)
//! port = 8883
//!
//! [keys]                                # absent: keys in files under data_dir/keys (mode 0600)
//! pkcs11_library = "/usr/lib/softhsm/libsofthsm2.so"
//! pkcs11_uri = "pkcs11:token=verge?pin-value=1234"   # or pin-source=file:/path, slot-id=N
//!
//! [containerd]                          # container modules (`"type": "docker"`)
//! socket = "/run/containerd/containerd.sock"  # connected when first needed; absent: wasm only
//! namespace = "verge"                   # one per daemon on a host (runc's state and cgroups)
//! snapshotter = "overlayfs"
//! run_dir = "/run/verge"                # stdio FIFOs, the modules' workload API sockets
//!                                       # (default: data_dir/run)
//! runc_root = "/run/containerd/runc"    # runc's state (the shim's default when absent)
//! plain_http = ["registry.local:5000"]  # registries over plain HTTP (loopback ones always are)
//!
//! [agent]
//! max_restart_count = 20                # also MaxRestartCount in edgeAgent's env
//! cool_off_time_unit_secs = 10          # also CoolOffTimeUnitInSeconds
//! intensive_care_time_mins = 10         # also IntensiveCareTimeInMinutes
//! stop_grace_secs = 10
//! deploy_timeout_secs = 120
//! module_log_kb = 256
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;

/// The data directory when nothing says otherwise.
pub const DEFAULT_DATA_DIR: &str = ".verge";

/// The configuration file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// State: the management socket, the saved deployment, compiled components.
    pub data_dir: Option<PathBuf>,
    /// The edge device's id.
    pub device_id: String,
    /// This device's host name, as modules and devices reach it.
    pub hostname: String,
    /// The IoT Hub host name modules are told.
    pub iothub_hostname: Option<String>,
    /// Hub settings.
    pub hub: HubSection,
    /// The durable message store.
    pub store: StoreSection,
    /// Wasm runtime settings.
    pub wasm: WasmSection,
    /// Agent settings.
    pub agent: AgentSection,
    /// The MQTT front.
    pub mqtt: MqttSection,
    /// Where keys live.
    pub keys: KeysSection,
    /// The Prometheus endpoint.
    pub metrics: MetricsSection,
    /// The parent, if any.
    pub upstream: Option<UpstreamSection>,
    /// Container modules.
    pub containerd: ContainerdSection,
}

/// `[containerd]`: how container modules (`type docker`) are run.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ContainerdSection {
    /// containerd's gRPC socket.
    pub socket: PathBuf,
    /// The containerd namespace of this daemon's images and containers.
    pub namespace: String,
    /// The snapshotter images are unpacked with.
    pub snapshotter: String,
    /// Runtime files: the containers' stdio FIFOs and the modules' workload API sockets (a
    /// Unix socket path must stay under 108 bytes: keep it short). Default `data_dir/run`.
    pub run_dir: Option<PathBuf>,
    /// runc's state directory (runc options `root`); absent: the shim's default.
    pub runc_root: Option<PathBuf>,
    /// Registries (`host[:port]`) reached over plain HTTP, besides loopback ones.
    pub plain_http: Vec<String>,
}

impl Default for ContainerdSection {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/run/containerd/containerd.sock"),
            namespace: "verge".into(),
            snapshotter: "overlayfs".into(),
            run_dir: None,
            runc_root: None,
            plain_http: Vec::new(),
        }
    }
}

/// `[upstream]`: the parent this edge device forwards `$upstream` to.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// This device's connection string, as the parent's `verge identity add edge-device` (or
    /// IoT Hub) printed it.
    pub connection_string: String,
    /// CA certificates (PEM) trusted for the parent's server certificate.
    pub trust_bundle: PathBuf,
    /// With `x509=true` in the connection string: this device's client certificate (PEM, with
    /// its chain)...
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// ...and its private key (PEM).
    #[serde(default)]
    pub private_key: Option<PathBuf>,
    /// The parent's MQTT-over-TLS port.
    #[serde(default = "default_upstream_port")]
    pub port: u16,
    /// What the parent is: `verge` (a parent Verge: the one connection also carries the twins,
    /// methods and cloud-to-device messages of every client behind this device) or `iothub`
    /// (an IoT-Hub-style endpoint: telemetry only, IoT Hub's topics only).
    #[serde(default)]
    pub parent: ParentKind,
}

/// `[upstream] parent`
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ParentKind {
    /// A parent Verge.
    #[default]
    Verge,
    /// An IoT-Hub-style endpoint.
    Iothub,
}

fn default_upstream_port() -> u16 {
    8883
}

/// `[metrics]`
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// Address of the listener.
    pub bind: std::net::IpAddr,
    /// Its port; 0 turns it off.
    pub port: u16,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            bind: std::net::IpAddr::from([0, 0, 0, 0]),
            port: 9600,
        }
    }
}

/// `[mqtt]`
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MqttSection {
    /// Address of the TLS listener.
    pub bind: std::net::IpAddr,
    /// Port of MQTT over TLS; 0 turns it off.
    pub tls_port: u16,
    /// Port of plain MQTT on 127.0.0.1; 0 (the default) turns it off.
    pub plain_port: u16,
    /// Port of HTTPS on `bind` (direct methods the SDKs invoke, IoT Hub's 443); 0 turns it off.
    pub https_port: u16,
    /// CA certificates (PEM) trusted for client certificates, besides the edge CA.
    pub client_ca_file: Option<PathBuf>,
}

impl Default for MqttSection {
    fn default() -> Self {
        Self {
            bind: std::net::IpAddr::from([0, 0, 0, 0]),
            tls_port: 8883,
            plain_port: 0,
            https_port: 443,
            client_ca_file: None,
        }
    }
}

/// `[keys]`: a PKCS#11 token, or (both absent) files in the data directory.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KeysSection {
    /// The PKCS#11 module (a `.so`).
    pub pkcs11_library: Option<PathBuf>,
    /// The token, as a PKCS#11 URI (RFC 7512).
    pub pkcs11_uri: Option<String>,
}

/// `[hub]`
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HubSection {
    /// Messages per destination queue.
    pub max_queue_messages: usize,
    /// Bytes per destination queue.
    pub max_queue_bytes: usize,
}

/// `[store]`
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// The redb file, relative to the data directory.
    pub path: PathBuf,
    /// MiB of stored messages beyond which new ones are refused; 0 = no limit.
    pub max_size_mb: u64,
    /// redb's page cache, MiB.
    pub cache_mb: usize,
    /// Queued messages per queue kept in memory.
    pub resident_per_queue: usize,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            path: PathBuf::from("messages.redb"),
            max_size_mb: 0,
            cache_mb: 16,
            resident_per_queue: 8192,
        }
    }
}

/// `[wasm]`
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WasmSection {
    /// Modules that can run at once.
    pub max_modules: u32,
    /// Default memory cap per module, MiB.
    pub memory_limit_mb: u64,
    /// Largest memory cap a module may ask for, MiB.
    pub max_memory_mb: u64,
    /// Default deadline of a call, ms.
    pub call_timeout_ms: u64,
    /// Default deadline of instantiation plus `init`, ms.
    pub init_timeout_ms: u64,
    /// Largest message body a module may send.
    pub max_message_bytes: u64,
}

/// `[agent]`
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSection {
    /// Restarts before a module is marked failed.
    pub max_restart_count: i64,
    /// The backoff unit: waits are `min(unit·2ⁿ, 300 s)`.
    pub cool_off_time_unit_secs: i64,
    /// Running time after which restart counters reset.
    pub intensive_care_time_mins: i64,
    /// Time a module gets to stop.
    pub stop_grace_secs: u64,
    /// How long `verge deploy` waits for the deployment to be applied.
    pub deploy_timeout_secs: u64,
    /// Log kept per module, KiB.
    pub module_log_kb: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: None,
            device_id: "verge-device".into(),
            hostname: "localhost".into(),
            iothub_hostname: None,
            hub: HubSection::default(),
            store: StoreSection::default(),
            wasm: WasmSection::default(),
            agent: AgentSection::default(),
            mqtt: MqttSection::default(),
            keys: KeysSection::default(),
            metrics: MetricsSection::default(),
            upstream: None,
            containerd: ContainerdSection::default(),
        }
    }
}

impl Default for HubSection {
    fn default() -> Self {
        let limits = verge_hub::QueueLimits::default();
        Self {
            max_queue_messages: limits.max_messages,
            max_queue_bytes: limits.max_bytes,
        }
    }
}

impl Default for WasmSection {
    fn default() -> Self {
        Self {
            max_modules: 64,
            memory_limit_mb: 128,
            max_memory_mb: 4096,
            call_timeout_ms: 1000,
            init_timeout_ms: 10_000,
            max_message_bytes: 256 * 1024,
        }
    }
}

impl Default for AgentSection {
    fn default() -> Self {
        Self {
            max_restart_count: 20,
            cool_off_time_unit_secs: 10,
            intensive_care_time_mins: 10,
            stop_grace_secs: 10,
            deploy_timeout_secs: 120,
            module_log_kb: 256,
        }
    }
}

impl Config {
    /// Read a configuration file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration {}", path.display()))?;
        toml::from_str(&text)
            .with_context(|| format!("configuration {} is not valid", path.display()))
    }

    /// The data directory: `override_dir`, else the file's `data_dir`, else `./.verge`.
    pub fn data_dir(&self, override_dir: Option<&Path>) -> PathBuf {
        override_dir
            .map(Path::to_path_buf)
            .or_else(|| self.data_dir.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
    }

    /// The IoT Hub host name for modules.
    pub fn iothub_hostname(&self) -> &str {
        self.iothub_hostname.as_deref().unwrap_or(&self.hostname)
    }

    /// `[containerd] run_dir`, by default `run` in the data directory.
    pub fn run_dir(&self, data_dir: &Path) -> PathBuf {
        self.containerd
            .run_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("run"))
    }

    /// The store's file and options.
    pub fn store_options(&self, data_dir: &Path) -> (PathBuf, verge_store::StoreOptions) {
        let s = &self.store;
        let options = verge_store::StoreOptions {
            cache_bytes: s.cache_mb << 20,
            max_bytes: (s.max_size_mb > 0).then_some(s.max_size_mb << 20),
            ..verge_store::StoreOptions::default()
        };
        (data_dir.join(&s.path), options)
    }

    /// The wasm runtime's options, caching compiled components under `data_dir`, and
    /// components named by OCI references in `data_dir/cache/oci` (fetched over plain HTTP from
    /// loopback registries and `[containerd] plain_http`).
    pub fn wasm_options(&self, data_dir: &Path) -> verge_runtime_wasm::WasmOptions {
        let mut o = verge_runtime_wasm::WasmOptions::new(data_dir.join("cache").join("wasm"));
        let w = &self.wasm;
        o.max_modules = w.max_modules;
        o.max_memory_bytes = w.max_memory_mb << 20;
        o.defaults.memory_limit = w.memory_limit_mb << 20;
        o.defaults.call_timeout = Duration::from_millis(w.call_timeout_ms);
        o.defaults.init_timeout = Duration::from_millis(w.init_timeout_ms);
        o.max_message_bytes = w.max_message_bytes;
        // Compile in a child process (this binary), so the daemon never holds the compiler.
        if let Ok(exe) = std::env::current_exe() {
            o.compiler = verge_runtime_wasm::Compiler::Subprocess(exe);
        }
        o.fetcher = Some(std::sync::Arc::new(crate::oci::OciFetcher::new(
            data_dir.join("cache").join("oci"),
            self.containerd.plain_http.clone(),
        )));
        o
    }

    /// The agent's options.
    pub fn agent_options(&self) -> anyhow::Result<verge_agent::AgentOptions> {
        let a = &self.agent;
        let restart = verge_restart::RestartPolicyManager::from_settings(
            a.max_restart_count,
            a.cool_off_time_unit_secs,
            a.intensive_care_time_mins,
        )
        .context("[agent] restart settings")?;
        Ok(verge_agent::AgentOptions {
            device_id: self.device_id.clone(),
            iothub_hostname: self.iothub_hostname().to_owned(),
            gateway_hostname: self.hostname.clone(),
            restart,
            stop_grace: Duration::from_secs(a.stop_grace_secs),
            tick: Duration::from_millis(500),
            log_bytes: a.module_log_kb * 1024,
            version: verge_agent::VersionInfo {
                version: env!("CARGO_PKG_VERSION").into(),
                build: option_env!("VERGE_BUILD").unwrap_or("dev").into(),
                commit: option_env!("VERGE_COMMIT").unwrap_or("unknown").into(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_defaults_and_typos_are_refused() {
        assert_eq!(toml::from_str::<Config>("").unwrap(), Config::default());
        let c: Config = toml::from_str("device_id = \"d\"\n[wasm]\ncall_timeout_ms = 5\n").unwrap();
        assert_eq!((c.device_id.as_str(), c.wasm.call_timeout_ms), ("d", 5));
        assert_eq!(c.wasm.memory_limit_mb, 128);
        let err = toml::from_str::<Config>("[wasm]\ncall_timeout = 5\n").unwrap_err();
        assert!(err.to_string().contains("call_timeout"), "{err}");
    }

    #[test]
    fn data_dir_precedence() {
        let mut c = Config::default();
        assert_eq!(c.data_dir(None), PathBuf::from(".verge"));
        c.data_dir = Some("/var/lib/verge".into());
        assert_eq!(c.data_dir(None), PathBuf::from("/var/lib/verge"));
        assert_eq!(c.data_dir(Some(Path::new("/x"))), PathBuf::from("/x"));
    }
}
