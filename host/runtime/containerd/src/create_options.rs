//! A container module's `createOptions` (IoT Edge's `settings.createOptions`, joined from its
//! chunks: Docker Engine API `ContainerCreate` JSON) translated into the OCI runtime spec
//! [`crate::spec::build`] makes. Verge honours what it can and **refuses, by name, what it
//! cannot**: no option is ignored without a word. What is accepted without taking effect (a
//! restart policy, a log driver, a port mapping on the host network) gives a
//! [`CreateOptions::notes`] line, which the runtime writes to the module's log.
//!
//! ```ignore
//! let options = create_options::parse(&json!({"Env": ["A=1"], "HostConfig": {"Memory": 134217728}}))?;
//! let run = options.run_config(&image.config.run); // Entrypoint, Cmd, Env, WorkingDir, User
//! let spec = spec::build(&SpecInput { run: &run, create_options: Some(&options), .. })?;
//! ```
//!
//! Keys are matched **case-insensitively**, as Docker's Go JSON decoding does, and reported as
//! written (`createOptions.HostConfig.IpcMode is not supported by Verge`); the same key in two
//! spellings is refused. A key Verge does not know is refused unless its value is Docker's zero
//! value (`null`, `false`, `0`, `""`, `[]`, `{}`), which Docker treats as not given (except
//! `MaskedPaths`, `ReadonlyPaths` and `MemorySwappiness`, whose zero values mean something).
//!
//! # Supported
//!
//! | Key | Effect |
//! |---|---|
//! | `Env` | `["K=V"]` over the image's; `"K"` alone removes `K` (Docker's rule). The module's variables (IoT Edge's `IOTEDGE_*` and the manifest's `env`) win over both |
//! | `Cmd`, `Entrypoint` | a string or an array. Docker's merge: a non-empty `Entrypoint` replaces the image's and drops the image's `Cmd`; `Entrypoint: []` clears the image's entrypoint |
//! | `WorkingDir`, `User` | replace the image's (before the user is resolved) |
//! | `Labels` | container labels ([`CreateOptions::labels`]); `verge.*` is refused |
//! | `Hostname` | the container's hostname (it has its own UTS namespace) |
//! | `ExposedPorts` | accepted with a note: the container is on the host network |
//! | `StopTimeout` | [`CreateOptions::stop_timeout`]; not applied by the runtime yet (a note says so) |
//! | `NetworkingConfig.EndpointsConfig` | `host` accepted; `azure-iot-edge`, `bridge`, `default` with a note; endpoint settings refused |
//! | `HostConfig.Binds` | `/host:/container[:ro\|rw,propagation,z\|Z]` bind mounts (`rbind`); a missing host directory is created, as Docker does. Named and anonymous volumes are refused |
//! | `HostConfig.Mounts` | `Type` `bind` (the source must exist) and `tmpfs`; `volume` refused |
//! | `HostConfig.Tmpfs` | `{"/path": "size=…,mode=…"}`, with `noexec,nosuid,nodev` first, as Docker |
//! | `HostConfig.Memory`, `MemorySwap` | `linux.resources.memory.limit` / `.swap` (only when given: Docker's default swap of 2 × `Memory` is not applied) |
//! | `HostConfig.NanoCpus` | CFS quota over a 100 ms period (`quota = NanoCpus / 10⁴`) |
//! | `HostConfig.CpuShares` | `linux.resources.cpu.shares` |
//! | `HostConfig.Privileged` | every capability (Verge's bounding set), every host device (`/dev`, as containerd's `WithHostDevices`) allowed `rwm`, no masked or read-only paths, `/sys` and cgroups writable, new privileges allowed |
//! | `HostConfig.CapAdd`, `CapDrop` | `NET_ADMIN` or `CAP_NET_ADMIN`, `ALL`; Docker's rules over containerd's default set |
//! | `HostConfig.Devices` | `PathOnHost` (a device, a symlink to one, or a directory of them) read on the host at start: `linux.devices` plus a cgroup allow rule with `CgroupPermissions` |
//! | `HostConfig.NetworkMode` | `host`, `default`, `""`; `bridge` and `azure-iot-edge` with a note (Verge runs every container on the host network); anything else refused |
//! | `HostConfig.PortBindings` | accepted when `HostPort` is empty or the container's port (with a note); another host port, or a `HostIp`, refused |
//! | `HostConfig.RestartPolicy`, `LogConfig` | accepted with a note: the deployment's `restartPolicy` and the module's log (`verge logs`) apply |
//! | `HostConfig.ShmSize` | the size of `/dev/shm` |
//! | `HostConfig.ReadonlyRootfs` | `root.readonly` |
//! | `HostConfig.Ulimits` | `process.rlimits` (`-1`: unlimited) |
//!
//! Everything else is refused, among others `IpcMode`, `PidMode`, `Sysctls`, `StopSignal`,
//! `ExtraHosts`, `Dns`, `DeviceRequests`, `Runtime`, `Healthcheck`, `Volumes`.
//!
//! # Validation as Docker's
//!
//! `Memory` at least 6 MiB; `MemorySwap` needs `Memory` and is `-1` or at least `Memory`;
//! `NanoCpus` at least 0.01 CPU; `CpuShares` 2…262144; `WorkingDir` and mount targets absolute;
//! one mount per target; `CgroupPermissions` made of `r`, `w`, `m`; ulimit soft ≤ hard; unknown
//! capabilities refused.
//!
//! [`parse`] is pure. [`CreateOptions::apply`] reads the host: device numbers, bind sources
//! (and creates a missing `Binds` source directory), Verge's own capability bounding set
//! (`CapBnd` in `/proc/self/status`: "every capability" is every one of those, and a `CapAdd`
//! outside it is refused by name rather than left to fail in runc as "operation not
//! permitted").

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value, json};

use verge_message::json::json_type;

use crate::image::RunConfig;
use crate::spec::DEFAULT_CAPABILITIES;

/// The root of every key path in messages.
const ROOT: &str = "createOptions";

/// Top-level keys Verge reads.
const TOP_LEVEL: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "Labels",
    "Hostname",
    "ExposedPorts",
    "StopTimeout",
    "HostConfig",
    "NetworkingConfig",
];

/// `HostConfig` keys Verge reads.
const HOST_CONFIG: &[&str] = &[
    "Binds",
    "Mounts",
    "Tmpfs",
    "Memory",
    "MemorySwap",
    "NanoCpus",
    "CpuShares",
    "Privileged",
    "CapAdd",
    "CapDrop",
    "Devices",
    "NetworkMode",
    "PortBindings",
    "RestartPolicy",
    "LogConfig",
    "ShmSize",
    "ReadonlyRootfs",
    "Ulimits",
];

/// Keys whose zero value is not "not given" in Docker (an empty `MaskedPaths` unmasks every
/// path; `MemorySwappiness: 0` disables swapping).
const ZERO_MEANS_SOMETHING: &[&str] = &["MaskedPaths", "ReadonlyPaths", "MemorySwappiness"];

/// Docker's smallest memory limit (`linuxMinMemory`).
pub const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// The CFS period `NanoCpus` is applied over, in µs (Docker's).
pub const CPU_PERIOD: u64 = 100_000;

/// Linux capabilities, by number (`CAP_CHOWN` = 0 … `CAP_CHECKPOINT_RESTORE` = 40).
pub const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// `HostConfig.Ulimits` names and their rlimits.
const RLIMITS: &[(&str, &str)] = &[
    ("as", "RLIMIT_AS"),
    ("core", "RLIMIT_CORE"),
    ("cpu", "RLIMIT_CPU"),
    ("data", "RLIMIT_DATA"),
    ("fsize", "RLIMIT_FSIZE"),
    ("locks", "RLIMIT_LOCKS"),
    ("memlock", "RLIMIT_MEMLOCK"),
    ("msgqueue", "RLIMIT_MSGQUEUE"),
    ("nice", "RLIMIT_NICE"),
    ("nofile", "RLIMIT_NOFILE"),
    ("nproc", "RLIMIT_NPROC"),
    ("rss", "RLIMIT_RSS"),
    ("rtprio", "RLIMIT_RTPRIO"),
    ("rttime", "RLIMIT_RTTIME"),
    ("sigpending", "RLIMIT_SIGPENDING"),
    ("stack", "RLIMIT_STACK"),
];

/// tmpfs mount flags accepted in `HostConfig.Tmpfs`.
const TMPFS_FLAGS: &[&str] = &[
    "rw",
    "ro",
    "exec",
    "noexec",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "sync",
    "async",
    "dirsync",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
];

/// tmpfs `key=value` options accepted in `HostConfig.Tmpfs`.
const TMPFS_DATA: &[&str] = &[
    "size",
    "mode",
    "uid",
    "gid",
    "nr_inodes",
    "nr_blocks",
    "mpol",
    "huge",
];

/// Docker's options for every tmpfs, before the user's.
const TMPFS_DEFAULTS: &[&str] = &["noexec", "nosuid", "nodev"];

const PROPAGATIONS: &[&str] = &[
    "private", "rprivate", "shared", "rshared", "slave", "rslave",
];

/// Why `createOptions` cannot be honoured. Every message names the key path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateOptionsError {
    /// Keys Verge does not support, given a value other than Docker's zero value.
    #[error("{}", unsupported_message(.keys))]
    Unsupported {
        /// Full key paths, as written (`createOptions.HostConfig.IpcMode`).
        keys: Vec<String>,
    },
    /// A supported key whose value is malformed or cannot be honoured.
    #[error("{key}: {message}")]
    Invalid {
        /// Full key path.
        key: String,
        /// Why.
        message: String,
    },
    /// One key given twice in two spellings (keys are matched case-insensitively).
    #[error("{key} and {other} are the same option (keys are matched case-insensitively)")]
    Duplicate {
        /// The first spelling's path.
        key: String,
        /// The second's.
        other: String,
    },
}

fn unsupported_message(keys: &[String]) -> String {
    let verb = if keys.len() == 1 { "is" } else { "are" };
    format!("{} {verb} not supported by Verge", keys.join(", "))
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> CreateOptionsError {
    CreateOptionsError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// A mount `createOptions` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The key it comes from (`createOptions.HostConfig.Binds[0]`).
    pub key: String,
    /// The path in the container.
    pub destination: String,
    /// What is mounted.
    pub kind: MountKind,
}

/// What a [`Mount`] mounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountKind {
    /// A host path.
    Bind {
        /// The host path (absolute).
        source: String,
        /// OCI mount options (`rbind`, propagation, `ro`/`rw`).
        options: Vec<String>,
        /// Create the source directory when missing (`Binds`, as Docker); otherwise a missing
        /// source is an error (`Mounts`).
        create_source: bool,
    },
    /// A tmpfs.
    Tmpfs {
        /// OCI mount options.
        options: Vec<String>,
    },
}

/// A host device (`HostConfig.Devices`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// The key it comes from (`createOptions.HostConfig.Devices[0]`).
    pub key: String,
    /// `PathOnHost`: a device node, a symlink to one, or a directory of them.
    pub path_on_host: String,
    /// `PathInContainer` (`PathOnHost` when empty).
    pub path_in_container: String,
    /// `CgroupPermissions` (`rwm` when empty).
    pub permissions: String,
}

/// A resource limit (`HostConfig.Ulimits`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ulimit {
    /// `RLIMIT_NOFILE`…
    pub kind: String,
    /// Soft limit (`u64::MAX`: unlimited).
    pub soft: u64,
    /// Hard limit (`u64::MAX`: unlimited).
    pub hard: u64,
}

/// `createOptions`, parsed ([`parse`]). The default is "no options".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// `Env` (`K=V`, or `K` to remove the image's `K`).
    pub env: Option<Vec<String>>,
    /// `Cmd`.
    pub cmd: Option<Vec<String>>,
    /// `Entrypoint` (`Some(vec![])` clears the image's).
    pub entrypoint: Option<Vec<String>>,
    /// `WorkingDir` (absolute).
    pub working_dir: Option<String>,
    /// `User`.
    pub user: Option<String>,
    /// `Hostname`.
    pub hostname: Option<String>,
    /// `Labels`, for the containerd container (never `verge.*`).
    pub labels: BTreeMap<String, String>,
    /// `HostConfig.Binds`, `Mounts` and `Tmpfs`, in that order.
    pub mounts: Vec<Mount>,
    /// `HostConfig.Memory`, bytes.
    pub memory: Option<i64>,
    /// `HostConfig.MemorySwap`, bytes of memory + swap (`-1`: unlimited swap).
    pub memory_swap: Option<i64>,
    /// `HostConfig.NanoCpus`, 10⁻⁹ CPUs.
    pub nano_cpus: Option<i64>,
    /// `HostConfig.CpuShares`.
    pub cpu_shares: Option<u64>,
    /// `HostConfig.Privileged`.
    pub privileged: bool,
    /// `HostConfig.CapAdd`, normalised (`CAP_NET_ADMIN`, `ALL`).
    pub cap_add: Vec<String>,
    /// `HostConfig.CapDrop`, normalised.
    pub cap_drop: Vec<String>,
    /// `HostConfig.Devices`.
    pub devices: Vec<Device>,
    /// `HostConfig.ShmSize`, bytes.
    pub shm_size: Option<i64>,
    /// `HostConfig.ReadonlyRootfs`.
    pub readonly_rootfs: bool,
    /// `HostConfig.Ulimits`.
    pub ulimits: Vec<Ulimit>,
    /// `StopTimeout`. The runtime does not apply it: a stop waits the grace period the agent
    /// gives (a note says so); a caller may use it.
    pub stop_timeout: Option<Duration>,
    /// What was accepted without taking effect as under Docker, for the module's log.
    pub notes: Vec<String>,
}

/// Parses `createOptions` (`null` or `{}`: no options).
pub fn parse(value: &Value) -> Result<CreateOptions, CreateOptionsError> {
    let mut options = CreateOptions::default();
    let top = match value {
        Value::Null => return Ok(options),
        Value::Object(map) => Fields {
            path: ROOT.to_owned(),
            map,
        },
        other => {
            return Err(invalid(
                ROOT,
                format!("must be a JSON object, not {}", json_type(other)),
            ));
        }
    };
    let host = top.get("HostConfig")?.map(|f| f.object()).transpose()?;
    let mut unknown = top.unknown(TOP_LEVEL);
    if let Some(host) = &host {
        unknown.extend(host.unknown(HOST_CONFIG));
    }
    if !unknown.is_empty() {
        return Err(CreateOptionsError::Unsupported { keys: unknown });
    }
    parse_top(&top, &mut options)?;
    if let Some(host) = &host {
        parse_host(host, &mut options)?;
    }
    check_mount_points(&options.mounts)?;
    Ok(options)
}

impl CreateOptions {
    /// The run config in effect: the image's with `Entrypoint`, `Cmd`, `Env`, `WorkingDir` and
    /// `User` applied by Docker's rules. Resolve the user and build the environment from it.
    pub fn run_config(&self, image: &RunConfig) -> RunConfig {
        let user_cmd = self.cmd.clone().unwrap_or_default();
        let (entrypoint, cmd) = match &self.entrypoint {
            Some(entrypoint) if !entrypoint.is_empty() => (entrypoint.clone(), user_cmd),
            entrypoint => {
                let cmd = if user_cmd.is_empty() {
                    image.cmd.clone()
                } else {
                    user_cmd
                };
                let entrypoint = match entrypoint {
                    None => image.entrypoint.clone(),
                    Some(_) => Vec::new(),
                };
                (entrypoint, cmd)
            }
        };
        let env = match &self.env {
            Some(overrides) => merge_env(&image.env, overrides),
            None => image.env.clone(),
        };
        let pick = |given: &Option<String>, image: &String| {
            given
                .as_ref()
                .filter(|s| !s.is_empty())
                .unwrap_or(image)
                .clone()
        };
        RunConfig {
            entrypoint,
            cmd,
            env,
            working_dir: pick(&self.working_dir, &image.working_dir),
            user: pick(&self.user, &image.user),
        }
    }

    /// Applies the options to a runtime spec made by [`crate::spec::build`] (process args,
    /// env, cwd and user come from [`CreateOptions::run_config`], not from here). Reads the
    /// host: device nodes, bind sources (a missing `Binds` source directory is created).
    pub fn apply(&self, spec: &mut Value) -> Result<(), CreateOptionsError> {
        if let Some(hostname) = &self.hostname {
            *at(spec, &["hostname"]) = json!(hostname);
        }
        if self.readonly_rootfs {
            *at(spec, &["root", "readonly"]) = json!(true);
        }
        self.apply_mounts(spec)?;
        self.apply_resources(spec);
        let available = bounding_set();
        if let Some(missing) = self
            .cap_add
            .iter()
            .find(|c| !capability_available(c, available))
        {
            return Err(invalid(
                "createOptions.HostConfig.CapAdd",
                format!(
                    "{missing} is not in Verge's own capability bounding set: it cannot be given"
                ),
            ));
        }
        if let Some(capabilities) = self.capabilities(available) {
            for set in ["bounding", "effective", "permitted"] {
                *at(spec, &["process", "capabilities", set]) = json!(capabilities);
            }
        }
        if self.privileged {
            apply_privileged(spec);
        }
        self.apply_devices(spec)?;
        let rlimits = array_at(spec, &["process", "rlimits"]);
        for ulimit in &self.ulimits {
            rlimits.retain(|r| r["type"] != ulimit.kind.as_str());
            rlimits.push(json!({"type": ulimit.kind, "soft": ulimit.soft, "hard": ulimit.hard}));
        }
        Ok(())
    }

    /// The capability set (`None`: containerd's default stays), by Docker's rules
    /// (`TweakCapabilities`): privileged → all; `ALL` added → all but the dropped; `ALL`
    /// dropped → only the added; else the default set minus the dropped plus the added.
    /// "All" is those of `available` (a mask by capability number: Verge's own bounding set,
    /// `CapBnd` in `/proc/self/status`, as containerd's `cap.Current`), every known one if
    /// `None`.
    pub fn capabilities(&self, available: Option<u64>) -> Option<Vec<String>> {
        let all = || {
            ALL_CAPABILITIES
                .iter()
                .filter(|c| capability_available(c, available))
                .map(|c| (*c).to_owned())
        };
        if self.privileged {
            return Some(all().collect());
        }
        if self.cap_add.is_empty() && self.cap_drop.is_empty() {
            return None;
        }
        let is_all = |list: &[String]| list.iter().any(|c| c == "ALL");
        let mut caps: Vec<String> = if is_all(&self.cap_add) {
            all().filter(|c| !self.cap_drop.contains(c)).collect()
        } else if is_all(&self.cap_drop) {
            self.cap_add.clone()
        } else {
            DEFAULT_CAPABILITIES
                .iter()
                .map(|c| (*c).to_owned())
                .filter(|c| !self.cap_drop.contains(c))
                .chain(self.cap_add.iter().cloned())
                .collect()
        };
        let mut seen = std::collections::HashSet::new();
        caps.retain(|c| seen.insert(c.clone()));
        Some(caps)
    }

    fn apply_mounts(&self, spec: &mut Value) -> Result<(), CreateOptionsError> {
        let mut user: Vec<&Mount> = self.mounts.iter().collect();
        // Parents before children, as Docker sorts them.
        user.sort_by_key(|m| Path::new(&m.destination).components().count());
        let mut entries = Vec::new();
        for mount in &user {
            entries.push(match &mount.kind {
                MountKind::Bind {
                    source,
                    options,
                    create_source,
                } => {
                    let path = Path::new(source);
                    if !path.exists() {
                        if *create_source {
                            std::fs::create_dir_all(path).map_err(|e| {
                                invalid(
                                    &mount.key,
                                    format!("cannot create the host directory {source}: {e}"),
                                )
                            })?;
                        } else {
                            return Err(invalid(
                                &mount.key,
                                format!("the bind source {source} does not exist on the host"),
                            ));
                        }
                    }
                    json!({
                        "destination": mount.destination,
                        "type": "bind",
                        "source": source,
                        "options": options,
                    })
                }
                MountKind::Tmpfs { options } => json!({
                    "destination": mount.destination,
                    "type": "tmpfs",
                    "source": "tmpfs",
                    "options": options,
                }),
            });
        }
        let mounts = array_at(spec, &["mounts"]);
        mounts.retain(|m| {
            !user.iter().any(|u| {
                same_path(
                    m["destination"].as_str().unwrap_or_default(),
                    &u.destination,
                )
            })
        });
        if let Some(size) = self.shm_size {
            for mount in mounts.iter_mut() {
                if mount["destination"] == "/dev/shm"
                    && let Some(options) = mount.get_mut("options").and_then(Value::as_array_mut)
                {
                    options.retain(|o| !o.as_str().is_some_and(|o| o.starts_with("size=")));
                    options.push(json!(format!("size={size}")));
                }
            }
        }
        mounts.extend(entries);
        Ok(())
    }

    fn apply_resources(&self, spec: &mut Value) {
        if let Some(limit) = self.memory {
            *at(spec, &["linux", "resources", "memory", "limit"]) = json!(limit);
        }
        if let Some(swap) = self.memory_swap {
            *at(spec, &["linux", "resources", "memory", "swap"]) = json!(swap);
        }
        if let Some(nano) = self.nano_cpus {
            let quota = i128::from(nano) * i128::from(CPU_PERIOD) / 1_000_000_000;
            let quota = i64::try_from(quota).unwrap_or(i64::MAX);
            *at(spec, &["linux", "resources", "cpu", "quota"]) = json!(quota);
            *at(spec, &["linux", "resources", "cpu", "period"]) = json!(CPU_PERIOD);
        }
        if let Some(shares) = self.cpu_shares {
            *at(spec, &["linux", "resources", "cpu", "shares"]) = json!(shares);
        }
    }

    fn apply_devices(&self, spec: &mut Value) -> Result<(), CreateOptionsError> {
        let mut nodes = Vec::new();
        for device in &self.devices {
            let key = format!("{}.PathOnHost", device.key);
            let host = Path::new(&device.path_on_host);
            let metadata = std::fs::metadata(host)
                .map_err(|e| invalid(&key, format!("cannot read {}: {e}", host.display())))?;
            if metadata.is_dir() {
                let mut found = Vec::new();
                walk_devices(host, &[], &mut found);
                if found.is_empty() {
                    return Err(invalid(
                        &key,
                        format!("{} holds no device node", host.display()),
                    ));
                }
                for (path, node) in found {
                    let relative = path.strip_prefix(host).unwrap_or(&path);
                    let inside = Path::new(&device.path_in_container).join(relative);
                    nodes.push((inside.display().to_string(), node, &device.permissions));
                }
            } else {
                let node = DeviceNode::from_metadata(&metadata).ok_or_else(|| {
                    invalid(
                        &key,
                        format!("{} is not a character or block device", host.display()),
                    )
                })?;
                nodes.push((device.path_in_container.clone(), node, &device.permissions));
            }
        }
        for (path, node, permissions) in nodes {
            add_device(spec, &path, &node);
            array_at(spec, &["linux", "resources", "devices"]).push(json!({
                "allow": true,
                "type": node.kind,
                "major": node.major,
                "minor": node.minor,
                "access": permissions,
            }));
        }
        Ok(())
    }
}

/// Docker's `ReplaceOrAppendEnvValues`: `K=V` replaces `K` or is appended; `K` removes it.
fn merge_env(base: &[String], overrides: &[String]) -> Vec<String> {
    let mut env = base.to_vec();
    for entry in overrides {
        let name = entry.split('=').next().unwrap_or_default();
        let prefix = format!("{name}=");
        let same = |e: &String| e == name || e.starts_with(&prefix);
        if entry.contains('=') {
            match env.iter_mut().find(|e| same(e)) {
                Some(slot) => slot.clone_from(entry),
                None => env.push(entry.clone()),
            }
        } else {
            env.retain(|e| !same(e));
        }
    }
    env
}

/// Privileged: every host device and all of them allowed, nothing masked or read-only,
/// `/sys` and cgroups writable, new privileges allowed (capabilities are set apart).
fn apply_privileged(spec: &mut Value) {
    *at(spec, &["linux", "maskedPaths"]) = json!([]);
    *at(spec, &["linux", "readonlyPaths"]) = json!([]);
    *at(spec, &["process", "noNewPrivileges"]) = json!(false);
    for mount in array_at(spec, &["mounts"]).iter_mut() {
        let writable = matches!(mount["type"].as_str(), Some("sysfs" | "cgroup"));
        if writable && let Some(options) = mount.get_mut("options").and_then(Value::as_array_mut) {
            options.retain(|o| o != "ro");
        }
    }
    *at(spec, &["linux", "resources", "devices"]) = json!([{"allow": true, "access": "rwm"}]);
    let mut found = Vec::new();
    walk_devices(
        Path::new("/dev"),
        &["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"],
        &mut found,
    );
    for (path, node) in found {
        if path.file_name().is_some_and(|n| n == "console") {
            continue;
        }
        add_device(spec, &path.display().to_string(), &node);
    }
}

/// A device node on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
struct DeviceNode {
    kind: &'static str,
    major: u64,
    minor: u64,
    mode: u32,
    uid: u32,
    gid: u32,
}

impl DeviceNode {
    fn from_metadata(metadata: &std::fs::Metadata) -> Option<Self> {
        let file_type = metadata.file_type();
        let kind = if file_type.is_char_device() {
            "c"
        } else if file_type.is_block_device() {
            "b"
        } else {
            return None;
        };
        let rdev = metadata.rdev();
        Some(Self {
            kind,
            major: u64::from(libc::major(rdev)),
            minor: u64::from(libc::minor(rdev)),
            mode: metadata.mode() & 0o7777,
            uid: metadata.uid(),
            gid: metadata.gid(),
        })
    }
}

/// The device nodes under `dir` (symlinks not followed), skipping the subdirectories named in
/// `skip`; unreadable entries are skipped (devices come and go).
fn walk_devices(dir: &Path, skip: &[&str], out: &mut Vec<(PathBuf, DeviceNode)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(std::fs::DirEntry::path);
    for entry in entries {
        let path = entry.path();
        let Ok(metadata) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if metadata.is_dir() {
            if !skip.iter().any(|s| entry.file_name() == *s) {
                walk_devices(&path, skip, out);
            }
        } else if let Some(node) = DeviceNode::from_metadata(&metadata) {
            out.push((path, node));
        }
    }
}

/// Adds (or replaces, by path) a `linux.devices` entry.
fn add_device(spec: &mut Value, path: &str, node: &DeviceNode) {
    let devices = array_at(spec, &["linux", "devices"]);
    devices.retain(|d| d["path"] != path);
    devices.push(json!({
        "path": path,
        "type": node.kind,
        "major": node.major,
        "minor": node.minor,
        "fileMode": node.mode,
        "uid": node.uid,
        "gid": node.gid,
    }));
}

/// This process's capability bounding set (`CapBnd` in `/proc/self/status`): what runc,
/// started by containerd as root, can give.
fn bounding_set() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
    u64::from_str_radix(line.trim(), 16).ok()
}

/// Whether `capability` (`CAP_…`; `ALL` is) is in `available` (`None`: all are).
fn capability_available(capability: &str, available: Option<u64>) -> bool {
    let Some(mask) = available else {
        return true;
    };
    match ALL_CAPABILITIES.iter().position(|c| *c == capability) {
        Some(bit) => mask >> bit & 1 == 1,
        None => capability == "ALL",
    }
}

/// The value at `path` in `value`, objects made on the way (a non-object is replaced).
fn at<'v>(value: &'v mut Value, path: &[&str]) -> &'v mut Value {
    let mut current = value;
    for key in path {
        if !current.is_object() {
            *current = Value::Object(Map::new());
        }
        current = match current {
            Value::Object(map) => map.entry(*key).or_insert(Value::Null),
            other => other,
        };
    }
    current
}

/// The array at `path` (made if absent or not an array).
fn array_at<'v>(value: &'v mut Value, path: &[&str]) -> &'v mut Vec<Value> {
    let slot = at(value, path);
    if !slot.is_array() {
        *slot = Value::Array(Vec::new());
    }
    match slot {
        Value::Array(items) => items,
        _ => unreachable!("the slot was just made an array"),
    }
}

fn same_path(a: &str, b: &str) -> bool {
    let trim = |s: &str| {
        let t = s.trim_end_matches('/');
        if t.is_empty() {
            "/".to_owned()
        } else {
            t.to_owned()
        }
    };
    trim(a) == trim(b)
}

/// One mount target per mount.
fn check_mount_points(mounts: &[Mount]) -> Result<(), CreateOptionsError> {
    for (i, mount) in mounts.iter().enumerate() {
        if let Some(earlier) = mounts[..i]
            .iter()
            .find(|m| same_path(&m.destination, &mount.destination))
        {
            return Err(invalid(
                &mount.key,
                format!(
                    "duplicate mount point {} (also in {})",
                    mount.destination, earlier.key
                ),
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Parsing.

fn parse_top(top: &Fields<'_>, options: &mut CreateOptions) -> Result<(), CreateOptionsError> {
    if let Some(f) = top.get("Env")? {
        let env = f.strings()?;
        for (i, entry) in env.iter().enumerate() {
            if entry.split('=').next().is_none_or(str::is_empty) {
                return Err(invalid(
                    format!("{}[{i}]", f.key),
                    format!("{entry:?} has no variable name"),
                ));
            }
        }
        options.env = Some(env);
    }
    if let Some(f) = top.get("Cmd")? {
        options.cmd = Some(f.str_slice()?);
    }
    if let Some(f) = top.get("Entrypoint")? {
        options.entrypoint = Some(f.str_slice()?);
    }
    if let Some(f) = top.get("WorkingDir")? {
        let dir = f.str()?;
        if !dir.is_empty() {
            if !dir.starts_with('/') {
                return Err(f.invalid(format!("{dir:?} is not an absolute path")));
            }
            options.working_dir = Some(dir.to_owned());
        }
    }
    if let Some(f) = top.get("User")? {
        let user = f.str()?;
        if !user.is_empty() {
            options.user = Some(user.to_owned());
        }
    }
    if let Some(f) = top.get("Hostname")? {
        let name = f.str()?;
        if !name.is_empty() {
            if name.len() > 64 || name.chars().any(|c| c.is_whitespace() || c == '/') {
                return Err(f.invalid(format!(
                    "{name:?} is not a hostname (at most 64 characters, no spaces or /)"
                )));
            }
            options.hostname = Some(name.to_owned());
        }
    }
    if let Some(f) = top.get("Labels")? {
        for label in f.object()?.entries() {
            let name = label.name;
            if name
                .get(..6)
                .is_some_and(|p| p.eq_ignore_ascii_case("verge."))
            {
                return Err(label.invalid("labels verge.* are Verge's own"));
            }
            let value = label.str()?;
            options.labels.insert(name.to_owned(), value.to_owned());
        }
    }
    if let Some(f) = top.get("ExposedPorts")? {
        let mut ports = Vec::new();
        for port in f.object()?.entries() {
            ports.push(parse_port(&port.key, port.name)?);
            if !is_zero("", port.value) {
                return Err(port.invalid("must be {}"));
            }
        }
        if !ports.is_empty() {
            options.notes.push(format!(
                "{}: containers run on the host network in Verge: {} {} the host's own, nothing is exposed apart",
                f.key,
                ports.join(", "),
                if ports.len() == 1 { "is" } else { "are" },
            ));
        }
    }
    if let Some(f) = top.get("StopTimeout")? {
        let seconds = u64::try_from(f.i64()?)
            .map_err(|_| f.invalid("must be a number of seconds, 0 or more"))?;
        options.stop_timeout = Some(Duration::from_secs(seconds));
        options.notes.push(format!(
            "{} ({seconds} s) is not applied: a stop sends SIGTERM and waits the agent's grace period before SIGKILL",
            f.key
        ));
    }
    if let Some(f) = top.get("NetworkingConfig")? {
        let networking = f.object()?;
        networking.only(&["EndpointsConfig"])?;
        if let Some(endpoints) = networking.get("EndpointsConfig")? {
            for endpoint in endpoints.object()?.entries() {
                if let Some(note) = network(&endpoint.key, endpoint.name)? {
                    options.notes.push(note);
                }
                if !endpoint.value.is_null() {
                    endpoint.object()?.only(&[])?;
                }
            }
        }
    }
    Ok(())
}

fn parse_host(host: &Fields<'_>, options: &mut CreateOptions) -> Result<(), CreateOptionsError> {
    if let Some(f) = host.get("Binds")? {
        for (i, bind) in f.strings()?.iter().enumerate() {
            let key = format!("{}[{i}]", f.key);
            let (mount, relabel) = parse_bind(&key, bind)?;
            if let Some(option) = relabel {
                options.notes.push(format!(
                    "{key}: the SELinux relabel option {option} is not applied (Verge does not relabel)"
                ));
            }
            options.mounts.push(mount);
        }
    }
    if let Some(f) = host.get("Mounts")? {
        for mount in f.array()? {
            options.mounts.push(parse_mount(&mount)?);
        }
    }
    if let Some(f) = host.get("Tmpfs")? {
        for entry in f.object()?.entries() {
            let destination = absolute_target(&entry.key, entry.name)?;
            let mut mount_options: Vec<String> =
                TMPFS_DEFAULTS.iter().map(|o| (*o).to_owned()).collect();
            for option in entry.str()?.split(',').filter(|o| !o.is_empty()) {
                let name = option.split('=').next().unwrap_or_default();
                let known = if option.contains('=') {
                    TMPFS_DATA.contains(&name)
                } else {
                    TMPFS_FLAGS.contains(&option)
                };
                if !known {
                    return Err(entry.invalid(format!("unknown tmpfs option {option:?}")));
                }
                mount_options.push(option.to_owned());
            }
            options.mounts.push(Mount {
                key: entry.key.clone(),
                destination,
                kind: MountKind::Tmpfs {
                    options: mount_options,
                },
            });
        }
    }
    if let Some(f) = host.get("Memory")? {
        let memory = f.i64()?;
        if memory != 0 {
            if memory < MIN_MEMORY {
                return Err(f.invalid(format!(
                    "{memory} bytes: the minimum memory limit is 6 MiB ({MIN_MEMORY} bytes)"
                )));
            }
            options.memory = Some(memory);
        }
    }
    if let Some(f) = host.get("MemorySwap")? {
        let swap = f.i64()?;
        if swap != 0 {
            let Some(memory) = options.memory else {
                return Err(f.invalid("needs HostConfig.Memory (MemorySwap is memory + swap)"));
            };
            if swap < -1 || (swap != -1 && swap < memory) {
                return Err(f.invalid(format!(
                    "{swap}: must be -1 (unlimited swap) or at least Memory ({memory}), being memory + swap"
                )));
            }
            options.memory_swap = Some(swap);
        }
    }
    if let Some(f) = host.get("NanoCpus")? {
        let nano = f.i64()?;
        if nano != 0 {
            if nano < 10_000_000 {
                return Err(f.invalid(format!("{nano}: at least 0.01 CPU (10000000) when given")));
            }
            options.nano_cpus = Some(nano);
        }
    }
    if let Some(f) = host.get("CpuShares")? {
        let shares = f.i64()?;
        if shares != 0 {
            match u64::try_from(shares) {
                Ok(shares @ 2..=262_144) => options.cpu_shares = Some(shares),
                _ => return Err(f.invalid(format!("{shares}: must be between 2 and 262144"))),
            }
        }
    }
    if let Some(f) = host.get("Privileged")? {
        options.privileged = f.bool()?;
    }
    if let Some(f) = host.get("CapAdd")? {
        options.cap_add = capabilities(&f)?;
    }
    if let Some(f) = host.get("CapDrop")? {
        options.cap_drop = capabilities(&f)?;
    }
    if let Some(f) = host.get("Devices")? {
        for device in f.array()? {
            options.devices.push(parse_device(&device)?);
        }
    }
    if let Some(f) = host.get("NetworkMode")?
        && let Some(note) = network(&f.key, f.str()?)?
    {
        options.notes.push(note);
    }
    if let Some(f) = host.get("PortBindings")? {
        let mut ports = Vec::new();
        for entry in f.object()?.entries() {
            let port = parse_port(&entry.key, entry.name)?;
            let number = port.split('/').next().unwrap_or_default().to_owned();
            if !entry.value.is_null() {
                for binding in entry.array()? {
                    let fields = binding.object()?;
                    fields.only(&["HostIp", "HostPort"])?;
                    if let Some(ip) = fields.get("HostIp")? {
                        let ip = ip.str()?;
                        if !matches!(ip, "" | "0.0.0.0" | "::") {
                            return Err(invalid(
                                format!("{}.HostIp", binding.key),
                                format!(
                                    "{ip}: binding to one host address cannot be honoured: containers run on the host network in Verge, the program in the container chooses its addresses"
                                ),
                            ));
                        }
                    }
                    if let Some(host_port) = fields.get("HostPort")? {
                        let host_port = host_port.str()?;
                        if !host_port.is_empty() && host_port != number {
                            return Err(invalid(
                                format!("{}.HostPort", binding.key),
                                format!(
                                    "maps container port {port} to host port {host_port}: containers run on the host network in Verge, where a container's port is the host's; use HostPort {number:?} (or none) and make the program listen on {host_port}"
                                ),
                            ));
                        }
                    }
                }
            }
            ports.push(port);
        }
        if !ports.is_empty() {
            options.notes.push(format!(
                "{}: containers run on the host network in Verge: {} {} the host's own, no mapping is made",
                f.key,
                ports.join(", "),
                if ports.len() == 1 { "is" } else { "are" },
            ));
        }
    }
    if let Some(f) = host.get("RestartPolicy")? {
        let policy = f.object()?;
        policy.only(&["Name", "MaximumRetryCount"])?;
        let name = match policy.get("Name")? {
            Some(name) => name.str()?,
            None => "",
        };
        if let Some(count) = policy.get("MaximumRetryCount")? {
            count.i64()?;
        }
        if !name.is_empty() && name != "no" {
            options.notes.push(format!(
                "{} {name:?} is not used: the module's restartPolicy in the deployment decides restarts (as in IoT Edge)",
                f.key
            ));
        }
    }
    if let Some(f) = host.get("LogConfig")? {
        let log = f.object()?;
        log.only(&["Type", "Config"])?;
        let driver = match log.get("Type")? {
            Some(driver) => driver.str()?,
            None => "",
        };
        let mut settings = Vec::new();
        if let Some(config) = log.get("Config")? {
            for entry in config.object()?.entries() {
                entry.str()?;
                settings.push(entry.name);
            }
        }
        if !driver.is_empty() || !settings.is_empty() {
            options.notes.push(format!(
                "{} ({}) is not used: a container's stdout and stderr go to the module's log (verge logs)",
                f.key,
                if driver.is_empty() {
                    settings.join(", ")
                } else {
                    driver.to_owned()
                }
            ));
        }
    }
    if let Some(f) = host.get("ShmSize")? {
        let size = f.i64()?;
        if size < 0 {
            return Err(f.invalid(format!("{size}: a size in bytes, 0 or more")));
        }
        if size > 0 {
            if let Some(mount) = options
                .mounts
                .iter()
                .find(|m| same_path(&m.destination, "/dev/shm"))
            {
                return Err(f.invalid(format!("/dev/shm is mounted by {}", mount.key)));
            }
            options.shm_size = Some(size);
        }
    }
    if let Some(f) = host.get("ReadonlyRootfs")? {
        options.readonly_rootfs = f.bool()?;
    }
    if let Some(f) = host.get("Ulimits")? {
        for ulimit in f.array()? {
            options.ulimits.push(parse_ulimit(&ulimit)?);
        }
    }
    Ok(())
}

/// `src:dst[:options]`; the mount and the SELinux relabel option if given.
fn parse_bind(key: &str, bind: &str) -> Result<(Mount, Option<String>), CreateOptionsError> {
    let parts: Vec<&str> = bind.split(':').collect();
    let (source, destination, mode) = match parts.as_slice() {
        [single] => {
            return Err(invalid(
                key,
                format!(
                    "{single:?} is an anonymous volume: Verge mounts host paths only (/host/path:{single})"
                ),
            ));
        }
        [source, destination] => (*source, *destination, None),
        [source, destination, mode] => (*source, *destination, Some(*mode)),
        _ => {
            return Err(invalid(
                key,
                format!("{bind:?} is not host-path:container-path[:options]"),
            ));
        }
    };
    if !source.starts_with('/') {
        return Err(invalid(
            key,
            format!(
                "{source:?} is a named volume: Verge mounts host paths only (an absolute path, e.g. /srv/{source}:{destination})"
            ),
        ));
    }
    let destination = absolute_target(key, destination)?;
    let (mut access, mut propagation, mut relabel) = (None, None, None);
    for option in mode
        .map(|m| m.split(',').collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let twice = || invalid(key, format!("{bind:?}: conflicting options"));
        match option {
            "ro" | "rw" => {
                if access.replace(option).is_some() {
                    return Err(twice());
                }
            }
            "z" | "Z" => relabel = Some(option.to_owned()),
            p if PROPAGATIONS.contains(&p) => {
                if propagation.replace(p).is_some() {
                    return Err(twice());
                }
            }
            "nocopy" => {
                return Err(invalid(
                    key,
                    "nocopy applies to volumes, which Verge does not support",
                ));
            }
            other => {
                return Err(invalid(
                    key,
                    format!("unknown bind option {other:?} in {bind:?}"),
                ));
            }
        }
    }
    let options = vec![
        "rbind".to_owned(),
        propagation.unwrap_or("rprivate").to_owned(),
        access.unwrap_or("rw").to_owned(),
    ];
    Ok((
        Mount {
            key: key.to_owned(),
            destination,
            kind: MountKind::Bind {
                source: source.to_owned(),
                options,
                create_source: true,
            },
        },
        relabel,
    ))
}

/// One of `HostConfig.Mounts`.
fn parse_mount(field: &Field<'_>) -> Result<Mount, CreateOptionsError> {
    let mount = field.object()?;
    mount.only(&[
        "Type",
        "Source",
        "Target",
        "ReadOnly",
        "Consistency",
        "BindOptions",
        "TmpfsOptions",
        "VolumeOptions",
    ])?;
    let string = |name: &str| -> Result<(String, String), CreateOptionsError> {
        Ok(match mount.get(name)? {
            Some(f) => (f.str()?.to_owned(), f.key),
            None => (String::new(), format!("{}.{name}", mount.path)),
        })
    };
    let (kind, kind_key) = string("Type")?;
    let (target, target_key) = string("Target")?;
    let (source, source_key) = string("Source")?;
    let destination = absolute_target(&target_key, &target)?;
    let read_only = match mount.get("ReadOnly")? {
        Some(f) => f.bool()?,
        None => false,
    };
    let (consistency, consistency_key) = string("Consistency")?;
    if !matches!(consistency.as_str(), "" | "default" | "consistent") {
        return Err(invalid(
            consistency_key,
            format!("{consistency:?}: only \"consistent\" on Linux"),
        ));
    }
    let not_for = |name: &str| -> Result<(), CreateOptionsError> {
        match mount.get(name)? {
            Some(f) if !is_zero("", f.value) => {
                Err(f.invalid(format!("does not apply to a {kind} mount")))
            }
            _ => Ok(()),
        }
    };
    let access = if read_only { "ro" } else { "rw" };
    match kind.as_str() {
        "bind" => {
            not_for("TmpfsOptions")?;
            not_for("VolumeOptions")?;
            if !source.starts_with('/') {
                return Err(invalid(
                    source_key,
                    format!("{source:?}: a bind mount needs an absolute host path"),
                ));
            }
            let (mut propagation, mut recursive, mut create) = ("rprivate".to_owned(), true, false);
            if let Some(f) = mount.get("BindOptions")? {
                let bind = f.object()?;
                bind.only(&["Propagation", "NonRecursive", "CreateMountpoint"])?;
                if let Some(p) = bind.get("Propagation")? {
                    let value = p.str()?;
                    if !value.is_empty() {
                        if !PROPAGATIONS.contains(&value) {
                            return Err(p.invalid(format!("unknown propagation {value:?}")));
                        }
                        value.clone_into(&mut propagation);
                    }
                }
                if let Some(f) = bind.get("NonRecursive")? {
                    recursive = !f.bool()?;
                }
                if let Some(f) = bind.get("CreateMountpoint")? {
                    create = f.bool()?;
                }
            }
            let bind = if recursive { "rbind" } else { "bind" };
            Ok(Mount {
                key: field.key.clone(),
                destination,
                kind: MountKind::Bind {
                    source,
                    options: vec![bind.to_owned(), propagation, access.to_owned()],
                    create_source: create,
                },
            })
        }
        "tmpfs" => {
            not_for("BindOptions")?;
            not_for("VolumeOptions")?;
            if !source.is_empty() {
                return Err(invalid(source_key, "a tmpfs mount has no source"));
            }
            let mut options: Vec<String> = TMPFS_DEFAULTS.iter().map(|o| (*o).to_owned()).collect();
            options.push(access.to_owned());
            if let Some(f) = mount.get("TmpfsOptions")? {
                let tmpfs = f.object()?;
                tmpfs.only(&["SizeBytes", "Mode"])?;
                if let Some(size) = tmpfs.get("SizeBytes")? {
                    let bytes = size.i64()?;
                    if bytes < 0 {
                        return Err(size.invalid("a size in bytes, 0 or more"));
                    }
                    if bytes > 0 {
                        options.push(format!("size={bytes}"));
                    }
                }
                if let Some(mode) = tmpfs.get("Mode")? {
                    let bits = mode.i64()?;
                    if bits < 0 {
                        return Err(mode.invalid("a file mode"));
                    }
                    if bits > 0 {
                        // Docker keeps the permission bits only.
                        options.push(format!("mode={:o}", bits & 0o777));
                    }
                }
            }
            Ok(Mount {
                key: field.key.clone(),
                destination,
                kind: MountKind::Tmpfs { options },
            })
        }
        "volume" => Err(invalid(
            kind_key,
            "volume: named volumes are not supported by Verge; mount a host directory (Type bind)",
        )),
        "" => Err(invalid(kind_key, "missing (bind or tmpfs)")),
        other => Err(invalid(
            kind_key,
            format!("{other:?} mounts are not supported by Verge (bind and tmpfs are)"),
        )),
    }
}

fn parse_device(field: &Field<'_>) -> Result<Device, CreateOptionsError> {
    let device = field.object()?;
    device.only(&["PathOnHost", "PathInContainer", "CgroupPermissions"])?;
    let host = match device.get("PathOnHost")? {
        Some(f) => {
            let path = f.str()?;
            if !path.starts_with('/') {
                return Err(f.invalid(format!("{path:?} is not an absolute path")));
            }
            path.to_owned()
        }
        None => return Err(invalid(format!("{}.PathOnHost", field.key), "missing")),
    };
    let inside = match device.get("PathInContainer")? {
        Some(f) if !f.str()?.is_empty() => absolute_target(&f.key, f.str()?)?,
        _ => host.clone(),
    };
    let permissions = match device.get("CgroupPermissions")? {
        Some(f) if !f.str()?.is_empty() => {
            let value = f.str()?;
            let mut seen = String::new();
            for c in value.chars() {
                if !"rwm".contains(c) || seen.contains(c) {
                    return Err(f.invalid(format!(
                        "{value:?}: r, w and m, each at most once (e.g. rwm)"
                    )));
                }
                seen.push(c);
            }
            value.to_owned()
        }
        _ => "rwm".to_owned(),
    };
    Ok(Device {
        key: field.key.clone(),
        path_on_host: host,
        path_in_container: inside,
        permissions,
    })
}

fn parse_ulimit(field: &Field<'_>) -> Result<Ulimit, CreateOptionsError> {
    let ulimit = field.object()?;
    ulimit.only(&["Name", "Soft", "Hard"])?;
    let Some(name) = ulimit.get("Name")? else {
        return Err(invalid(format!("{}.Name", field.key), "missing"));
    };
    let name_value = name.str()?;
    let Some((_, kind)) = RLIMITS.iter().find(|(n, _)| *n == name_value) else {
        return Err(name.invalid(format!("unknown ulimit {name_value:?}")));
    };
    let limit = |which: &str| -> Result<u64, CreateOptionsError> {
        let Some(f) = ulimit.get(which)? else {
            return Ok(0);
        };
        match f.i64()? {
            -1 => Ok(u64::MAX),
            n => u64::try_from(n).map_err(|_| f.invalid(format!("{n}: 0 or more, or -1"))),
        }
    };
    let (soft, hard) = (limit("Soft")?, limit("Hard")?);
    if soft > hard {
        return Err(invalid(
            field.key.clone(),
            "the soft limit is above the hard limit",
        ));
    }
    Ok(Ulimit {
        kind: (*kind).to_owned(),
        soft,
        hard,
    })
}

/// `CapAdd` / `CapDrop`, normalised as Docker's `NormalizeLegacyCapabilities`.
fn capabilities(field: &Field<'_>) -> Result<Vec<String>, CreateOptionsError> {
    field
        .strings()?
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let upper = name.trim().to_ascii_uppercase();
            if upper == "ALL" {
                return Ok(upper);
            }
            let full = if upper.starts_with("CAP_") {
                upper
            } else {
                format!("CAP_{upper}")
            };
            if ALL_CAPABILITIES.contains(&full.as_str()) {
                Ok(full)
            } else {
                Err(invalid(
                    format!("{}[{i}]", field.key),
                    format!("unknown capability {name:?}"),
                ))
            }
        })
        .collect()
}

/// `NetworkMode` or an `EndpointsConfig` network name; a note for a network Verge replaces by
/// the host's.
fn network(key: &str, name: &str) -> Result<Option<String>, CreateOptionsError> {
    match name {
        "" | "default" | "host" => Ok(None),
        "bridge" | "azure-iot-edge" => Ok(Some(format!(
            "{key} {name}: Verge runs containers on the host network; ports are the host's"
        ))),
        other => Err(invalid(
            key,
            format!(
                "network {other:?} cannot be honoured: Verge runs every container on the host network (\"host\")"
            ),
        )),
    }
}

/// `port[/proto]` or `from-to[/proto]`, as `port/proto`.
fn parse_port(key: &str, spec: &str) -> Result<String, CreateOptionsError> {
    let (ports, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
    let proto = proto.to_ascii_lowercase();
    let number = |s: &str| s.parse::<u16>().ok().filter(|p| *p > 0);
    let valid_ports = match ports.split_once('-') {
        Some((from, to)) => matches!((number(from), number(to)), (Some(a), Some(b)) if a <= b),
        None => number(ports).is_some(),
    };
    if !valid_ports || !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(invalid(
            key,
            format!("{spec:?} is not a port (8080, 8080/tcp, 5000-5010/udp)"),
        ));
    }
    Ok(format!("{ports}/{proto}"))
}

/// A mount target: absolute, not `/`.
fn absolute_target(key: &str, target: &str) -> Result<String, CreateOptionsError> {
    if !target.starts_with('/') {
        return Err(invalid(
            key,
            format!("{target:?}: the container path must be absolute"),
        ));
    }
    if same_path(target, "/") {
        return Err(invalid(key, "the container path cannot be /"));
    }
    Ok(target.to_owned())
}

/// Docker's zero value: what its Go decoding leaves as "not given".
fn is_zero(name: &str, value: &Value) -> bool {
    if ZERO_MEANS_SOMETHING
        .iter()
        .any(|k| k.eq_ignore_ascii_case(name))
    {
        return value.is_null();
    }
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
    }
}

/// An object of `createOptions` at `path`.
struct Fields<'a> {
    path: String,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    /// `name`'s value, matched case-insensitively (`null`: absent); two spellings: an error.
    fn get(&self, name: &str) -> Result<Option<Field<'a>>, CreateOptionsError> {
        let mut found: Option<Field<'a>> = None;
        for (key, value) in self.map {
            if key.eq_ignore_ascii_case(name) {
                let field = self.field(key, value);
                if let Some(first) = &found {
                    return Err(CreateOptionsError::Duplicate {
                        key: first.key.clone(),
                        other: field.key,
                    });
                }
                found = Some(field);
            }
        }
        Ok(found.filter(|f| !f.value.is_null()))
    }

    /// The paths of keys not in `supported` with a value other than Docker's zero value.
    fn unknown(&self, supported: &[&str]) -> Vec<String> {
        self.map
            .iter()
            .filter(|(key, value)| {
                !supported.iter().any(|s| s.eq_ignore_ascii_case(key)) && !is_zero(key, value)
            })
            .map(|(key, _)| format!("{}.{key}", self.path))
            .collect()
    }

    /// Refuses the keys not in `supported`.
    fn only(&self, supported: &[&str]) -> Result<(), CreateOptionsError> {
        let keys = self.unknown(supported);
        if keys.is_empty() {
            Ok(())
        } else {
            Err(CreateOptionsError::Unsupported { keys })
        }
    }

    /// Every entry (of a map such as `Labels`).
    fn entries(&self) -> impl Iterator<Item = Field<'a>> + '_ {
        self.map.iter().map(|(key, value)| self.field(key, value))
    }

    fn field(&self, name: &'a str, value: &'a Value) -> Field<'a> {
        Field {
            key: format!("{}.{name}", self.path),
            name,
            value,
        }
    }
}

/// One value of `createOptions`, with its key path.
struct Field<'a> {
    key: String,
    name: &'a str,
    value: &'a Value,
}

impl<'a> Field<'a> {
    fn invalid(&self, message: impl Into<String>) -> CreateOptionsError {
        invalid(&self.key, message)
    }

    fn expected(&self, what: &str) -> CreateOptionsError {
        self.invalid(format!("must be {what}, not {}", json_type(self.value)))
    }

    fn str(&self) -> Result<&'a str, CreateOptionsError> {
        self.value.as_str().ok_or_else(|| self.expected("a string"))
    }

    fn bool(&self) -> Result<bool, CreateOptionsError> {
        self.value
            .as_bool()
            .ok_or_else(|| self.expected("a boolean"))
    }

    fn i64(&self) -> Result<i64, CreateOptionsError> {
        self.value
            .as_i64()
            .ok_or_else(|| self.expected("an integer"))
    }

    fn object(&self) -> Result<Fields<'a>, CreateOptionsError> {
        match self.value {
            Value::Object(map) => Ok(Fields {
                path: self.key.clone(),
                map,
            }),
            _ => Err(self.expected("an object")),
        }
    }

    fn array(&self) -> Result<Vec<Field<'a>>, CreateOptionsError> {
        match self.value {
            Value::Array(items) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, value)| Field {
                    key: format!("{}[{i}]", self.key),
                    name: "",
                    value,
                })
                .collect()),
            _ => Err(self.expected("an array")),
        }
    }

    /// An array of strings.
    fn strings(&self) -> Result<Vec<String>, CreateOptionsError> {
        self.array()?
            .iter()
            .map(|f| f.str().map(str::to_owned))
            .collect()
    }

    /// Docker's `StrSlice`: a string or an array of strings.
    fn str_slice(&self) -> Result<Vec<String>, CreateOptionsError> {
        match self.value {
            Value::String(s) => Ok(vec![s.clone()]),
            Value::Array(_) => self.strings(),
            _ => Err(self.expected("a string or an array of strings")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{self, SpecInput, User};
    use verge_tests::images::TempDir;

    fn parsed(value: Value) -> CreateOptions {
        parse(&value).unwrap_or_else(|e| panic!("{value}: {e}"))
    }

    fn refused(value: Value) -> String {
        match parse(&value) {
            Ok(options) => panic!("{value} accepted: {options:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn image() -> RunConfig {
        RunConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["image-cmd".into()],
            env: vec!["PATH=/bin".into(), "A=image".into(), "B=image".into()],
            working_dir: "/image".into(),
            user: "1000".into(),
        }
    }

    /// The spec `spec::build` makes with these options (`run` from `run_config`).
    fn spec_with(value: Value) -> Value {
        let options = parsed(value);
        let run = options.run_config(&image());
        spec::build(&SpecInput {
            run: &run,
            env: &[("B".into(), "module".into())],
            user: User::default(),
            hostname: "module",
            cgroups_path: "/ns/id".into(),
            host_files: vec![],
            workload: None,
            create_options: Some(&options),
        })
        .expect("spec")
    }

    fn mount<'s>(spec: &'s Value, destination: &str) -> Option<&'s Value> {
        spec["mounts"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["destination"] == destination))
    }

    #[test]
    fn nothing_is_the_default() {
        assert_eq!(parsed(Value::Null), CreateOptions::default());
        assert_eq!(parsed(json!({})), CreateOptions::default());
        assert_eq!(
            parsed(json!({"HostConfig": null, "Env": null})),
            CreateOptions::default()
        );
        let plain = spec_with(json!({}));
        assert_eq!(plain["process"]["args"], json!(["/entry", "image-cmd"]));
        assert_eq!(
            refused(json!("Env")),
            "createOptions: must be a JSON object, not a string"
        );
    }

    #[test]
    fn the_docker_example_is_honoured() {
        let host = TempDir::new("create-options");
        let bind = format!("{}:/c:ro", host.path().display());
        let spec = spec_with(json!({
            "HostConfig": {
                "Binds": [bind],
                "Memory": 134217728,
                "NanoCpus": 500000000,
                "CapAdd": ["NET_ADMIN"],
                "Devices": [{"PathOnHost": "/dev/null", "PathInContainer": "/dev/mynull", "CgroupPermissions": "rwm"}],
                "PortBindings": {"8080/tcp": [{"HostPort": "8080"}]},
            },
            "Env": ["A=1"],
            "Cmd": ["sh", "-c", "echo hi"],
        }));
        assert_eq!(
            spec["process"]["args"],
            json!(["/entry", "sh", "-c", "echo hi"])
        );
        assert_eq!(
            spec["process"]["env"],
            json!(["PATH=/bin", "A=1", "B=module"])
        );
        let c = mount(&spec, "/c").expect("the bind");
        assert_eq!(c["type"], "bind");
        assert_eq!(c["source"], host.path().display().to_string());
        assert_eq!(c["options"], json!(["rbind", "rprivate", "ro"]));
        assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 134_217_728);
        assert_eq!(spec["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(spec["linux"]["resources"]["cpu"]["period"], 100_000);
        let caps = spec["process"]["capabilities"]["bounding"].to_string();
        assert!(
            caps.contains("CAP_NET_ADMIN") && caps.contains("CAP_CHOWN"),
            "{caps}"
        );
        assert_eq!(
            spec["process"]["capabilities"]["effective"],
            spec["process"]["capabilities"]["bounding"]
        );
        let devices = spec["linux"]["devices"].as_array().expect("devices");
        assert_eq!(
            devices[0],
            json!({"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3,
                   "fileMode": devices[0]["fileMode"], "uid": 0, "gid": 0})
        );
        let rules = spec["linux"]["resources"]["devices"]
            .as_array()
            .expect("rules");
        assert_eq!(rules[0], json!({"allow": false, "access": "rwm"}));
        assert_eq!(
            rules[1],
            json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"})
        );
        // Nothing else changed: no privilege, the default masks.
        assert_eq!(spec["process"]["noNewPrivileges"], true);
        assert!(
            !spec["linux"]["maskedPaths"]
                .as_array()
                .expect("masked")
                .is_empty()
        );
    }

    #[test]
    fn the_notes_say_what_takes_no_effect() {
        let options = parsed(json!({
            "ExposedPorts": {"8080/tcp": {}},
            "HostConfig": {
                "PortBindings": {"8080/tcp": [{"HostPort": "8080"}], "9000/udp": [{"HostIp": "0.0.0.0", "HostPort": ""}]},
                "NetworkMode": "azure-iot-edge",
                "RestartPolicy": {"Name": "always"},
                "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m"}},
            },
            "NetworkingConfig": {"EndpointsConfig": {"host": {}}},
            "StopTimeout": 30,
        }));
        let notes = options.notes.join("\n");
        for expected in [
            "createOptions.ExposedPorts: containers run on the host network in Verge: 8080/tcp is the host's own",
            "createOptions.HostConfig.PortBindings: containers run on the host network in Verge: 8080/tcp, 9000/udp are the host's own",
            "createOptions.HostConfig.NetworkMode azure-iot-edge: Verge runs containers on the host network; ports are the host's",
            "createOptions.HostConfig.RestartPolicy \"always\" is not used",
            "createOptions.HostConfig.LogConfig (json-file) is not used",
            "createOptions.StopTimeout (30 s) is not applied",
        ] {
            assert!(notes.contains(expected), "{expected:?} not in\n{notes}");
        }
        assert_eq!(options.notes.len(), 6, "{notes}");
        assert_eq!(options.stop_timeout, Some(Duration::from_secs(30)));
        // Defaults say nothing.
        let quiet = parsed(
            json!({"HostConfig": {"NetworkMode": "host", "RestartPolicy": {"Name": "no"}, "LogConfig": {"Type": ""}}}),
        );
        assert!(quiet.notes.is_empty(), "{:?}", quiet.notes);
        let endpoint =
            parsed(json!({"NetworkingConfig": {"EndpointsConfig": {"azure-iot-edge": null}}}));
        assert_eq!(endpoint.notes.len(), 1);
    }

    #[test]
    fn entrypoint_cmd_and_env_follow_dockers_merge() {
        let image = image();
        let run = |value| parsed(value).run_config(&image);
        // Cmd alone keeps the image's entrypoint.
        let r = run(json!({"Cmd": "x"}));
        assert_eq!(
            (r.entrypoint, r.cmd),
            (vec!["/entry".into()], vec!["x".into()])
        );
        // Entrypoint drops the image's Cmd.
        let r = run(json!({"Entrypoint": ["sh", "-c"]}));
        assert_eq!(
            (r.entrypoint, r.cmd),
            (vec!["sh".into(), "-c".into()], vec![])
        );
        let r = run(json!({"Entrypoint": "sh", "Cmd": ["-c", "true"]}));
        assert_eq!(r.entrypoint, ["sh"]);
        assert_eq!(r.cmd, ["-c", "true"]);
        // An empty Entrypoint clears the image's and keeps its Cmd.
        let r = run(json!({"Entrypoint": []}));
        assert_eq!((r.entrypoint, r.cmd), (vec![], vec!["image-cmd".into()]));
        // Env: replace, append, and "K" alone removes K.
        let r = run(json!({"Env": ["B=opts", "C=opts", "A"]}));
        assert_eq!(r.env, ["PATH=/bin", "B=opts", "C=opts"]);
        // WorkingDir and User replace the image's; empty ones do not.
        let r = run(json!({"WorkingDir": "/work", "User": "app:app"}));
        assert_eq!(
            (r.working_dir.as_str(), r.user.as_str()),
            ("/work", "app:app")
        );
        let r = run(json!({"WorkingDir": "", "User": ""}));
        assert_eq!(
            (r.working_dir.as_str(), r.user.as_str()),
            ("/image", "1000")
        );
        // The module's variables win over createOptions' Env, which wins over the image's.
        let spec = spec_with(json!({"Env": ["B=opts", "D=opts"], "WorkingDir": "/work"}));
        assert_eq!(
            spec["process"]["env"],
            json!(["PATH=/bin", "A=image", "B=module", "D=opts"])
        );
        assert_eq!(spec["process"]["cwd"], "/work");
        assert!(refused(json!({"WorkingDir": "rel"})).starts_with("createOptions.WorkingDir: "));
        assert_eq!(
            refused(json!({"Env": ["=x"]})),
            "createOptions.Env[0]: \"=x\" has no variable name"
        );
        assert_eq!(
            refused(json!({"Env": "A=1"})),
            "createOptions.Env: must be an array, not a string"
        );
    }

    #[test]
    fn keys_match_case_insensitively_and_are_reported_as_written() {
        let options = parsed(json!({"env": ["A=1"], "hostconfig": {"memory": 7340032}}));
        assert_eq!(options.env, Some(vec!["A=1".into()]));
        assert_eq!(options.memory, Some(7_340_032));
        assert_eq!(
            refused(json!({"hostConfig": {"ipcMode": "host"}})),
            "createOptions.hostConfig.ipcMode is not supported by Verge"
        );
        assert_eq!(
            refused(json!({"Env": [], "ENV": []})),
            "createOptions.Env and createOptions.ENV are the same option (keys are matched case-insensitively)"
        );
    }

    #[test]
    fn unsupported_keys_are_refused_by_full_name() {
        assert_eq!(
            refused(json!({"HostConfig": {"IpcMode": "host"}})),
            "createOptions.HostConfig.IpcMode is not supported by Verge"
        );
        assert_eq!(
            refused(
                json!({"StopSignal": "SIGINT", "HostConfig": {"Sysctls": {"net.core.somaxconn": "1024"}, "PidMode": "host"}})
            ),
            "createOptions.StopSignal, createOptions.HostConfig.Sysctls, createOptions.HostConfig.PidMode are not supported by Verge"
        );
        assert_eq!(
            refused(json!({"Volumes": {"/data": {}}})),
            "createOptions.Volumes is not supported by Verge"
        );
        // Docker's zero values are "not given", except where they mean something.
        parsed(
            json!({"Tty": false, "Volumes": {}, "HostConfig": {"IpcMode": "", "PidsLimit": 0, "Dns": [], "MaskedPaths": null}}),
        );
        assert_eq!(
            refused(json!({"HostConfig": {"MaskedPaths": []}})),
            "createOptions.HostConfig.MaskedPaths is not supported by Verge"
        );
        assert_eq!(
            refused(json!({"HostConfig": {"MemorySwappiness": 0}})),
            "createOptions.HostConfig.MemorySwappiness is not supported by Verge"
        );
        // Inside supported objects too.
        assert_eq!(
            refused(json!({"HostConfig": {"Devices": [{"PathOnHost": "/dev/null", "Foo": 1}]}})),
            "createOptions.HostConfig.Devices[0].Foo is not supported by Verge"
        );
        assert_eq!(
            refused(
                json!({"NetworkingConfig": {"EndpointsConfig": {"azure-iot-edge": {"Aliases": ["a"]}}}})
            ),
            "createOptions.NetworkingConfig.EndpointsConfig.azure-iot-edge.Aliases is not supported by Verge"
        );
        assert_eq!(
            refused(json!({"HostConfig": "x"})),
            "createOptions.HostConfig: must be an object, not a string"
        );
    }

    #[test]
    fn binds_are_host_paths_and_missing_ones_are_created() {
        let host = TempDir::new("create-options");
        let missing = host.path().join("made/here");
        let spec = spec_with(json!({"HostConfig": {"Binds": [
            format!("{}:/data", missing.display()),
            format!("{}:/data/ro:ro,rshared,z", host.path().display()),
        ]}}));
        assert!(missing.is_dir(), "Docker creates a missing Binds source");
        assert_eq!(
            mount(&spec, "/data").expect("data")["options"],
            json!(["rbind", "rprivate", "rw"])
        );
        assert_eq!(
            mount(&spec, "/data/ro").expect("ro")["options"],
            json!(["rbind", "rshared", "ro"])
        );
        let options = parsed(json!({"HostConfig": {"Binds": ["/a:/b:Z"]}}));
        assert_eq!(
            options.notes,
            [
                "createOptions.HostConfig.Binds[0]: the SELinux relabel option Z is not applied (Verge does not relabel)"
            ]
        );
        let named = refused(json!({"HostConfig": {"Binds": ["data:/data"]}}));
        assert!(
            named.starts_with("createOptions.HostConfig.Binds[0]: \"data\" is a named volume"),
            "{named}"
        );
        let anonymous = refused(json!({"HostConfig": {"Binds": ["/data"]}}));
        assert!(anonymous.contains("anonymous volume"), "{anonymous}");
        for bad in [
            "/a:rel",
            "/a:/",
            "/a:/b:ro,rw",
            "/a:/b:nocopy",
            "/a:/b:bogus",
            "/a:/b:c:d",
        ] {
            let message = refused(json!({"HostConfig": {"Binds": [bad]}}));
            assert!(
                message.starts_with("createOptions.HostConfig.Binds[0]: "),
                "{message}"
            );
        }
        let duplicate = refused(json!({"HostConfig": {"Binds": ["/a:/x", "/b:/x/"]}}));
        assert_eq!(
            duplicate,
            "createOptions.HostConfig.Binds[1]: duplicate mount point /x/ (also in createOptions.HostConfig.Binds[0])"
        );
    }

    #[test]
    fn mounts_bind_and_tmpfs_but_not_volumes() {
        let host = TempDir::new("create-options");
        let spec = spec_with(json!({"HostConfig": {"Mounts": [
            {"Type": "bind", "Source": host.path().display().to_string(), "Target": "/b", "ReadOnly": true,
             "BindOptions": {"Propagation": "rslave", "NonRecursive": true}},
            {"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1048576, "Mode": 1023}},
        ]}}));
        assert_eq!(
            mount(&spec, "/b").expect("bind")["options"],
            json!(["bind", "rslave", "ro"])
        );
        let t = mount(&spec, "/t").expect("tmpfs");
        assert_eq!(t["type"], "tmpfs");
        assert_eq!(
            t["options"],
            json!([
                "noexec",
                "nosuid",
                "nodev",
                "rw",
                "size=1048576",
                "mode=777"
            ])
        );
        let volume = refused(
            json!({"HostConfig": {"Mounts": [{"Type": "volume", "Source": "v", "Target": "/v"}]}}),
        );
        assert!(
            volume.starts_with(
                "createOptions.HostConfig.Mounts[0].Type: volume: named volumes are not supported"
            ),
            "{volume}"
        );
        let tmpfs_source = refused(
            json!({"HostConfig": {"Mounts": [{"Type": "tmpfs", "Source": "/x", "Target": "/t"}]}}),
        );
        assert!(
            tmpfs_source.starts_with("createOptions.HostConfig.Mounts[0].Source: "),
            "{tmpfs_source}"
        );
        let wrong_options = refused(
            json!({"HostConfig": {"Mounts": [{"Type": "bind", "Source": "/x", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1}}]}}),
        );
        assert!(
            wrong_options.starts_with("createOptions.HostConfig.Mounts[0].TmpfsOptions: "),
            "{wrong_options}"
        );
        // A Mounts bind source must exist (Docker's rule; Binds create it).
        let options = parsed(json!({"HostConfig": {"Mounts": [
            {"Type": "bind", "Source": host.path().join("absent").display().to_string(), "Target": "/b"}]}}));
        let mut spec = json!({"mounts": []});
        let error = options.apply(&mut spec).expect_err("absent source");
        assert!(
            error
                .to_string()
                .starts_with("createOptions.HostConfig.Mounts[0]: the bind source"),
            "{error}"
        );
    }

    #[test]
    fn tmpfs_and_shm_size() {
        let spec = spec_with(
            json!({"HostConfig": {"Tmpfs": {"/cache": "size=64m,exec"}, "ShmSize": 268435456}}),
        );
        assert_eq!(
            mount(&spec, "/cache").expect("tmpfs")["options"],
            json!(["noexec", "nosuid", "nodev", "size=64m", "exec"])
        );
        let shm = mount(&spec, "/dev/shm").expect("shm")["options"].to_string();
        assert!(
            shm.contains("size=268435456") && !shm.contains("65536k"),
            "{shm}"
        );
        assert!(
            refused(json!({"HostConfig": {"Tmpfs": {"/c": "bogus"}}}))
                .starts_with("createOptions.HostConfig.Tmpfs./c: unknown tmpfs option")
        );
        assert!(
            refused(json!({"HostConfig": {"Tmpfs": {"/dev/shm": ""}, "ShmSize": 1}}))
                .starts_with("createOptions.HostConfig.ShmSize: /dev/shm is mounted by")
        );
        // A user mount replaces the default at the same place.
        let spec = spec_with(json!({"HostConfig": {"Tmpfs": {"/run": "size=1m"}}}));
        let runs: Vec<_> = spec["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .filter(|m| m["destination"] == "/run")
            .collect();
        assert_eq!(runs.len(), 1);
        assert!(runs[0]["options"].to_string().contains("size=1m"));
    }

    #[test]
    fn memory_swap_cpu_shares_and_their_limits() {
        let spec = spec_with(
            json!({"HostConfig": {"Memory": 67108864, "MemorySwap": -1, "CpuShares": 512}}),
        );
        assert_eq!(
            spec["linux"]["resources"]["memory"],
            json!({"limit": 67108864, "swap": -1})
        );
        assert_eq!(spec["linux"]["resources"]["cpu"], json!({"shares": 512}));
        let spec = spec_with(
            json!({"HostConfig": {"Memory": 67108864, "MemorySwap": 134217728, "NanoCpus": 1500000000}}),
        );
        assert_eq!(spec["linux"]["resources"]["memory"]["swap"], 134_217_728);
        assert_eq!(
            spec["linux"]["resources"]["cpu"],
            json!({"quota": 150000, "period": 100000})
        );
        // Zero is "not given".
        let spec = spec_with(json!({"HostConfig": {"Memory": 0, "NanoCpus": 0, "CpuShares": 0}}));
        assert!(spec["linux"]["resources"].get("memory").is_none());
        for (options, start) in [
            (
                json!({"Memory": 1024}),
                "createOptions.HostConfig.Memory: 1024 bytes: the minimum",
            ),
            (
                json!({"Memory": "1g"}),
                "createOptions.HostConfig.Memory: must be an integer",
            ),
            (
                json!({"MemorySwap": 1}),
                "createOptions.HostConfig.MemorySwap: needs HostConfig.Memory",
            ),
            (
                json!({"Memory": 67108864, "MemorySwap": 1}),
                "createOptions.HostConfig.MemorySwap: 1: must be -1",
            ),
            (
                json!({"NanoCpus": 1000}),
                "createOptions.HostConfig.NanoCpus: 1000: at least 0.01 CPU",
            ),
            (
                json!({"CpuShares": 1}),
                "createOptions.HostConfig.CpuShares: 1: must be between 2 and 262144",
            ),
        ] {
            let message = refused(json!({"HostConfig": options}));
            assert!(message.starts_with(start), "{message}");
        }
    }

    #[test]
    fn capabilities_follow_dockers_rules() {
        let every = (1u64 << ALL_CAPABILITIES.len()) - 1;
        let caps = |value| parsed(json!({"HostConfig": value})).capabilities(Some(every));
        assert_eq!(caps(json!({})), None);
        let added = caps(json!({"CapAdd": ["net_admin", "CAP_SYS_TIME"], "CapDrop": ["CHOWN"]}))
            .expect("changed");
        assert!(added.contains(&"CAP_NET_ADMIN".to_owned()));
        assert!(added.contains(&"CAP_SYS_TIME".to_owned()));
        assert!(!added.contains(&"CAP_CHOWN".to_owned()));
        assert_eq!(added.len(), DEFAULT_CAPABILITIES.len() + 1);
        let all = caps(json!({"CapAdd": ["ALL"], "CapDrop": ["SYS_ADMIN"]})).expect("all");
        assert_eq!(all.len(), ALL_CAPABILITIES.len() - 1);
        assert!(!all.contains(&"CAP_SYS_ADMIN".to_owned()));
        assert_eq!(
            caps(json!({"CapAdd": ["NET_RAW"], "CapDrop": ["all"]})),
            Some(vec!["CAP_NET_RAW".to_owned()])
        );
        // Verge's own bounding set bounds "all" (here without CAP_SYS_RESOURCE, 24).
        let bounded = parsed(json!({"HostConfig": {"CapAdd": ["ALL"]}}))
            .capabilities(Some(every & !(1 << 24)))
            .expect("all");
        assert_eq!(bounded.len(), ALL_CAPABILITIES.len() - 1);
        assert!(!bounded.contains(&"CAP_SYS_RESOURCE".to_owned()));
        assert_eq!(parsed(json!({})).capabilities(Some(0)), None);
        assert!(!capability_available(
            "CAP_SYS_RESOURCE",
            Some(every & !(1 << 24))
        ));
        assert!(capability_available(
            "CAP_NET_ADMIN",
            Some(every & !(1 << 24))
        ));
        assert!(capability_available("ALL", Some(0)));
        assert_eq!(
            refused(json!({"HostConfig": {"CapAdd": ["NET_ADMIN", "FLY"]}})),
            "createOptions.HostConfig.CapAdd[1]: unknown capability \"FLY\""
        );
        let spec = spec_with(json!({"HostConfig": {"CapDrop": ["ALL"]}}));
        assert_eq!(spec["process"]["capabilities"]["permitted"], json!([]));
    }

    #[test]
    fn privileged_gets_everything() {
        let spec = spec_with(json!({"HostConfig": {"Privileged": true}}));
        let bounding = spec["process"]["capabilities"]["bounding"]
            .as_array()
            .expect("caps");
        assert!(bounding.len() > DEFAULT_CAPABILITIES.len());
        assert!(bounding.contains(&json!("CAP_SYS_ADMIN")));
        assert_eq!(spec["linux"]["maskedPaths"], json!([]));
        assert_eq!(spec["linux"]["readonlyPaths"], json!([]));
        assert_eq!(spec["process"]["noNewPrivileges"], false);
        assert_eq!(
            spec["linux"]["resources"]["devices"],
            json!([{"allow": true, "access": "rwm"}])
        );
        assert!(
            !mount(&spec, "/sys").expect("sys")["options"]
                .to_string()
                .contains("\"ro\"")
        );
        assert!(
            !mount(&spec, "/sys/fs/cgroup").expect("cgroup")["options"]
                .to_string()
                .contains("\"ro\"")
        );
        // The host's devices, /dev/null among them, but not the console nor /dev/pts.
        let devices = spec["linux"]["devices"].to_string();
        assert!(devices.contains("\"/dev/null\""), "{devices}");
        assert!(!devices.contains("/dev/pts/") && !devices.contains("\"/dev/console\""));
    }

    #[test]
    fn devices_are_read_on_the_host() {
        let options = parsed(
            json!({"HostConfig": {"Devices": [{"PathOnHost": "/dev/zero", "CgroupPermissions": "r"}]}}),
        );
        assert_eq!(options.devices[0].path_in_container, "/dev/zero");
        let spec = spec_with(
            json!({"HostConfig": {"Devices": [{"PathOnHost": "/dev/zero", "CgroupPermissions": "r"}]}}),
        );
        assert_eq!(spec["linux"]["devices"][0]["path"], "/dev/zero");
        assert_eq!(spec["linux"]["devices"][0]["minor"], 5);
        assert_eq!(spec["linux"]["resources"]["devices"][1]["access"], "r");
        for (device, start) in [
            (
                json!({"PathOnHost": "dev/null"}),
                "createOptions.HostConfig.Devices[0].PathOnHost: \"dev/null\" is not an absolute path",
            ),
            (
                json!({"PathInContainer": "/x"}),
                "createOptions.HostConfig.Devices[0].PathOnHost: missing",
            ),
            (
                json!({"PathOnHost": "/dev/null", "CgroupPermissions": "rwx"}),
                "createOptions.HostConfig.Devices[0].CgroupPermissions: \"rwx\"",
            ),
        ] {
            let message = refused(json!({"HostConfig": {"Devices": [device]}}));
            assert!(message.starts_with(start), "{message}");
        }
        // A missing device or a plain file fails when applied.
        for path in ["/dev/no-such-device", "/etc/hostname"] {
            let options = parsed(json!({"HostConfig": {"Devices": [{"PathOnHost": path}]}}));
            let error = options.apply(&mut json!({})).expect_err("not a device");
            assert!(
                error
                    .to_string()
                    .starts_with("createOptions.HostConfig.Devices[0].PathOnHost: "),
                "{error}"
            );
        }
    }

    #[test]
    fn network_and_ports_are_the_hosts() {
        for mode in ["", "default", "host"] {
            assert!(
                parsed(json!({"HostConfig": {"NetworkMode": mode}}))
                    .notes
                    .is_empty()
            );
        }
        assert!(
            !parsed(json!({"HostConfig": {"NetworkMode": "bridge"}}))
                .notes
                .is_empty()
        );
        assert_eq!(
            refused(json!({"HostConfig": {"NetworkMode": "mynet"}})),
            "createOptions.HostConfig.NetworkMode: network \"mynet\" cannot be honoured: Verge runs every container on the host network (\"host\")"
        );
        assert!(
            refused(json!({"NetworkingConfig": {"EndpointsConfig": {"mynet": {}}}})).starts_with(
                "createOptions.NetworkingConfig.EndpointsConfig.mynet: network \"mynet\""
            )
        );
        let mapped =
            refused(json!({"HostConfig": {"PortBindings": {"8080/tcp": [{"HostPort": "9090"}]}}}));
        assert!(
            mapped.starts_with("createOptions.HostConfig.PortBindings.8080/tcp[0].HostPort: maps container port 8080/tcp to host port 9090"),
            "{mapped}"
        );
        let ip = refused(
            json!({"HostConfig": {"PortBindings": {"80": [{"HostIp": "127.0.0.1", "HostPort": "80"}]}}}),
        );
        assert!(
            ip.starts_with("createOptions.HostConfig.PortBindings.80[0].HostIp: 127.0.0.1"),
            "{ip}"
        );
        assert!(
            refused(json!({"ExposedPorts": {"http": {}}}))
                .starts_with("createOptions.ExposedPorts.http: \"http\" is not a port")
        );
        let ports =
            parsed(json!({"HostConfig": {"PortBindings": {"5000-5001/udp": null, "80": []}}}));
        assert!(
            ports.notes[0].contains("5000-5001/udp, 80/tcp"),
            "{:?}",
            ports.notes
        );
    }

    #[test]
    fn labels_hostname_readonly_rootfs_and_ulimits() {
        let options = parsed(json!({"Labels": {"app": "x", "tier": "edge"}}));
        assert_eq!(options.labels.get("app").map(String::as_str), Some("x"));
        assert_eq!(
            refused(json!({"Labels": {"verge.module": "other"}})),
            "createOptions.Labels.verge.module: labels verge.* are Verge's own"
        );
        assert_eq!(
            refused(json!({"Labels": {"a": 1}})),
            "createOptions.Labels.a: must be a string, not a number"
        );
        let spec = spec_with(json!({
            "Hostname": "edge-box",
            "HostConfig": {
                "ReadonlyRootfs": true,
                "Ulimits": [{"Name": "nofile", "Soft": 4096, "Hard": 8192}, {"Name": "core", "Soft": -1, "Hard": -1}],
            },
        }));
        assert_eq!(spec["hostname"], "edge-box");
        assert_eq!(spec["root"]["readonly"], true);
        assert_eq!(
            spec["process"]["rlimits"],
            json!([
                {"type": "RLIMIT_NOFILE", "soft": 4096, "hard": 8192},
                {"type": "RLIMIT_CORE", "soft": u64::MAX, "hard": u64::MAX},
            ])
        );
        for (ulimit, start) in [
            (
                json!({"Name": "bogus", "Soft": 1, "Hard": 1}),
                "createOptions.HostConfig.Ulimits[0].Name: unknown ulimit",
            ),
            (
                json!({"Name": "nofile", "Soft": 2, "Hard": 1}),
                "createOptions.HostConfig.Ulimits[0]: the soft limit",
            ),
            (
                json!({"Soft": 1}),
                "createOptions.HostConfig.Ulimits[0].Name: missing",
            ),
        ] {
            let message = refused(json!({"HostConfig": {"Ulimits": [ulimit]}}));
            assert!(message.starts_with(start), "{message}");
        }
        assert!(refused(json!({"Hostname": "a b"})).starts_with("createOptions.Hostname: "));
        assert!(
            refused(json!({"StopTimeout": -1}))
                .starts_with("createOptions.StopTimeout: must be a number of seconds")
        );
    }
}
