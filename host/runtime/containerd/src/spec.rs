//! The OCI runtime spec (runc's `config.json`) of a container module, built from its image's
//! config and the module's environment, with defaults close to containerd's own
//! (`oci.populateDefaultUnixSpec`):
//!
//! - process: `Entrypoint` + `Cmd` as args; the image's `Env`, `PATH` added when the image has
//!   none, then the module's variables (which win over the image's); `WorkingDir` (or `/`);
//!   `User` (see [`resolve_user`]); no new privileges; containerd's default capability set
//!   ([`DEFAULT_CAPABILITIES`]) as bounding, effective and permitted; `RLIMIT_NOFILE` 1024.
//! - namespaces: pid, ipc, uts, mount. **No network namespace: the container shares the host's
//!   network** (Docker's `NetworkMode: host`), and gets the host's `/etc/resolv.conf` and
//!   `/etc/hosts` bind-mounted read-only when they exist. Module-to-hub traffic goes over
//!   loopback; a bridge network is not built.
//! - mounts: `/proc`, `/dev` (tmpfs; runc makes the standard device nodes), `/dev/pts`,
//!   `/dev/shm`, `/dev/mqueue`, `/sys` (read-only), `/sys/fs/cgroup` (read-only: the
//!   container's own cgroups, so a program sees its memory and CPU limits), `/run` (tmpfs);
//!   containerd's masked and read-only paths; devices denied but runc's defaults.
//! - `createOptions` ([`crate::create_options`]): the caller passes the run config they give
//!   ([`CreateOptions::run_config`]) as [`SpecInput::run`], and the options themselves as
//!   [`SpecInput::create_options`], applied last ([`CreateOptions::apply`]).
//! - `root.path` is `rootfs`: containerd mounts the task's rootfs there in the bundle.
//! - `cgroupsPath` is `/<namespace>/<container id>`, as ctr's.

use serde_json::{Value, json};

use crate::create_options::{CreateOptions, CreateOptionsError};
use crate::image::RunConfig;

/// containerd's default capabilities (`oci.defaultUnixCaps`).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// `PATH` when the image sets none (containerd's default).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The type URL containerd expects for a runtime spec in `Container.spec`.
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// A process's user: uid, gid and supplementary groups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
    /// Supplementary gids.
    pub additional_gids: Vec<u32>,
}

/// What the spec is built from.
#[derive(Clone, Debug)]
pub struct SpecInput<'a> {
    /// The image's run config.
    pub run: &'a RunConfig,
    /// The module's variables (IoT Edge's and the manifest's), in order; they override the
    /// image's of the same name.
    pub env: &'a [(String, String)],
    /// The resolved user.
    pub user: User,
    /// The container's hostname.
    pub hostname: &'a str,
    /// `/<namespace>/<id>`.
    pub cgroups_path: String,
    /// Host files bind-mounted read-only (`/etc/resolv.conf`, `/etc/hosts`): host path and
    /// container path.
    pub host_files: Vec<(String, String)>,
    /// The module's workload API directory (host path, container path), bind-mounted
    /// read-write (a client connecting to a socket needs write access to it).
    pub workload: Option<(String, String)>,
    /// The module's `createOptions`, applied to the spec last. `run` must already be
    /// [`CreateOptions::run_config`] of the image's.
    pub create_options: Option<&'a CreateOptions>,
}

/// Why a spec cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The image has neither `Entrypoint` nor `Cmd`.
    #[error("the image has no Entrypoint and no Cmd: nothing to run")]
    NoCommand,
    /// `User` names a user or group the image's `/etc/passwd` / `/etc/group` lacks, or is
    /// malformed.
    #[error("cannot resolve the image's User {user:?}: {message}")]
    User {
        /// The `User` field.
        user: String,
        /// Why.
        message: String,
    },
    /// `createOptions` cannot be applied (a device or a bind source on the host).
    #[error(transparent)]
    CreateOptions(#[from] CreateOptionsError),
}

/// The process environment: the image's, `PATH` if it has none, then the module's (a module
/// variable replaces the image's of the same name, in place).
pub fn environment(image: &[String], module: &[(String, String)]) -> Vec<String> {
    let mut env: Vec<String> = image.to_vec();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_owned());
    }
    for (name, value) in module {
        let entry = format!("{name}={value}");
        let prefix = format!("{name}=");
        match env.iter_mut().find(|e| e.starts_with(&prefix)) {
            Some(slot) => *slot = entry,
            None => env.push(entry),
        }
    }
    env
}

/// Resolves an image's `User` (`uid`, `uid:gid`, `name`, `name:group`, empty: root) against
/// the image's `/etc/passwd` and `/etc/group` contents (`None` when the image has no such
/// file). A numeric uid without a gid takes the gid from passwd if listed, else 0, as runc's
/// user lookup does; supplementary groups come from `/etc/group` for a named or listed user.
pub fn resolve_user(
    user: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<User, SpecError> {
    let user = user.trim();
    if user.is_empty() {
        return Ok(User::default());
    }
    let fail = |message: String| SpecError::User {
        user: user.to_owned(),
        message,
    };
    let (name, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd_entries: Vec<Vec<&str>> = passwd
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    let group_entries: Vec<Vec<&str>> = group
        .unwrap_or_default()
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect();
    let (uid, passwd_gid, user_name) = if let Ok(uid) = name.parse::<u32>() {
        let entry = passwd_entries
            .iter()
            .find(|f| f.get(2).and_then(|s| s.parse::<u32>().ok()) == Some(uid));
        let gid = entry.and_then(|f| f.get(3)).and_then(|s| s.parse().ok());
        (uid, gid, entry.and_then(|f| f.first()).copied())
    } else {
        let entry = passwd_entries
            .iter()
            .find(|f| f.first() == Some(&name))
            .ok_or_else(|| {
                fail(if passwd.is_some() {
                    format!("no user {name:?} in the image's /etc/passwd")
                } else {
                    "the image has no /etc/passwd to look the name up in".to_owned()
                })
            })?;
        let uid = entry
            .get(2)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| fail(format!("bad uid for {name:?} in /etc/passwd")))?;
        let gid = entry.get(3).and_then(|s| s.parse().ok());
        (uid, gid, Some(name))
    };
    let gid = match group_part {
        None => passwd_gid.unwrap_or(0),
        Some("") => return Err(fail("empty group".into())),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries
                .iter()
                .find(|f| f.first() == Some(&g))
                .and_then(|f| f.get(2))
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| fail(format!("no group {g:?} in the image's /etc/group")))?,
        },
    };
    let additional_gids = match user_name {
        Some(member) if group_part.is_none() => group_entries
            .iter()
            .filter(|f| {
                f.get(3)
                    .is_some_and(|members| members.split(',').any(|m| m == member))
            })
            .filter_map(|f| f.get(2).and_then(|s| s.parse::<u32>().ok()))
            .filter(|g| *g != gid)
            .collect(),
        _ => Vec::new(),
    };
    Ok(User {
        uid,
        gid,
        additional_gids,
    })
}

/// The runtime spec, as JSON.
pub fn build(input: &SpecInput<'_>) -> Result<Value, SpecError> {
    let args: Vec<&String> = input.run.entrypoint.iter().chain(&input.run.cmd).collect();
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    let cwd = if input.run.working_dir.is_empty() {
        "/"
    } else {
        input.run.working_dir.as_str()
    };
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
        mount(
            "/run",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
    ];
    for (host, container) in &input.host_files {
        mounts.push(json!({
            "destination": container,
            "type": "bind",
            "source": host,
            "options": ["rbind", "ro", "nosuid", "nodev", "noexec"],
        }));
    }
    if let Some((host, container)) = &input.workload {
        mounts.push(json!({
            "destination": container,
            "type": "bind",
            "source": host,
            "options": ["rbind", "rw", "nosuid", "nodev", "noexec"],
        }));
    }
    let mut spec = json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": {
                "uid": input.user.uid,
                "gid": input.user.gid,
                "additionalGids": input.user.additional_gids,
            },
            "args": args,
            "env": environment(&input.run.env, input.env),
            "cwd": cwd,
            "capabilities": {
                "bounding": DEFAULT_CAPABILITIES,
                "effective": DEFAULT_CAPABILITIES,
                "permitted": DEFAULT_CAPABILITIES,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs"},
        "hostname": input.hostname,
        "mounts": mounts,
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "cgroupsPath": input.cgroups_path,
            "namespaces": [
                {"type": "pid"},
                {"type": "ipc"},
                {"type": "uts"},
                {"type": "mount"},
            ],
            "maskedPaths": [
                "/proc/acpi",
                "/proc/asound",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/sys/firmware",
                "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger",
            ],
        },
    });
    if let Some(options) = input.create_options {
        options.apply(&mut spec)?;
    }
    Ok(spec)
}

fn mount(destination: &str, kind: &str, source: &str, options: &[&str]) -> Value {
    json!({
        "destination": destination,
        "type": kind,
        "source": source,
        "options": options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\napp:x:1001:\nvideo:x:44:app,other\n";

    #[test]
    fn users_resolve_by_number_and_name() {
        let user = |u| resolve_user(u, Some(PASSWD), Some(GROUP));
        assert_eq!(user("").expect("root"), User::default());
        assert_eq!(
            user("1000").expect("uid"),
            User {
                uid: 1000,
                gid: 1001,
                additional_gids: vec![44]
            }
        );
        assert_eq!(
            user("app").expect("name"),
            User {
                uid: 1000,
                gid: 1001,
                additional_gids: vec![44]
            }
        );
        assert_eq!(
            user("app:video").expect("name:group"),
            User {
                uid: 1000,
                gid: 44,
                additional_gids: vec![]
            }
        );
        assert_eq!(
            resolve_user("1234:5678", None, None).expect("numbers need no files"),
            User {
                uid: 1234,
                gid: 5678,
                additional_gids: vec![]
            }
        );
        assert_eq!(resolve_user("42", None, None).expect("uid").gid, 0);
        assert!(matches!(user("nobody"), Err(SpecError::User { .. })));
        assert!(matches!(user("app:nogroup"), Err(SpecError::User { .. })));
        assert!(resolve_user("app", None, None).is_err());
    }

    #[test]
    fn module_variables_override_the_images() {
        let env = environment(
            &["A=1".into(), "B=2".into()],
            &[("B".into(), "3".into()), ("C".into(), "4".into())],
        );
        assert_eq!(env, [DEFAULT_PATH, "A=1", "B=3", "C=4"]);
        let env = environment(&["PATH=/bin".into()], &[]);
        assert_eq!(env, ["PATH=/bin"]);
    }

    #[test]
    fn the_spec_runs_entrypoint_and_cmd_without_a_network_namespace() {
        let run = RunConfig {
            entrypoint: vec!["sh".into(), "-c".into()],
            cmd: vec!["echo hi".into()],
            ..RunConfig::default()
        };
        let spec = build(&SpecInput {
            run: &run,
            env: &[],
            user: User::default(),
            hostname: "m",
            cgroups_path: "/ns/id".into(),
            host_files: vec![],
            workload: None,
            create_options: None,
        })
        .expect("spec");
        assert_eq!(spec["process"]["args"], json!(["sh", "-c", "echo hi"]));
        assert_eq!(spec["process"]["cwd"], "/");
        assert_eq!(spec["linux"]["cgroupsPath"], "/ns/id");
        let namespaces = spec["linux"]["namespaces"].to_string();
        assert!(!namespaces.contains("network"), "{namespaces}");
        let empty = RunConfig::default();
        assert_eq!(
            build(&SpecInput {
                run: &empty,
                env: &[],
                user: User::default(),
                hostname: "m",
                cgroups_path: String::new(),
                host_files: vec![],
                workload: None,
                create_options: None,
            }),
            Err(SpecError::NoCommand)
        );
    }
}
