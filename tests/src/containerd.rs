//! A private containerd for the container tests: Debian's containerd 1.6 and runc, started by
//! the test with its own configuration, socket, root and state in a temporary directory.
//!
//! ```ignore
//! let containerd = Containerd::start();          // waits until the socket answers
//! let sock = containerd.socket();                // give this to Verge ([containerd] socket)
//! let ns = containerd.namespace();               // "verge-<pid>-<n>": see "Isolation" below
//! let out = containerd.ctr_ok(&["images", "ls"]); // `ctr --address SOCK -n NS images ls`
//! // dropped: tasks killed and deleted, containerd stopped, shims killed, mounts undone,
//! // the directory removed
//! ```
//!
//! The configuration (`config.toml`, `version = 2`): `root`, `state`, the gRPC socket
//! `containerd.sock` and the `opt` plugin's directory are all inside the temporary directory; the
//! CRI plugin (`io.containerd.grpc.v1.cri`) and the snapshotters that cannot work here (aufs,
//! btrfs, devmapper, zfs) are disabled. containerd's log is `containerd.log` in that directory
//! ([`Containerd::log`]); it is printed when a test panics while the rig is alive.
//!
//! # What was found on the test machine (Debian bookworm, kernel 6.18, 2 cores, root)
//!
//! - Packages: containerd 1.6.20~ds1-1+deb12u3 (`/usr/bin/containerd`, `ctr`,
//!   `containerd-shim-runc-v2`), runc 1.1.5+ds1 (**`/usr/sbin/runc`**: the shim finds it on
//!   `PATH`, so the kit puts `/usr/sbin` there). `tests/setup --containers` installs them with
//!   `--no-install-recommends` (which skips criu, netavark…): 18 s with the downloads, 12 s
//!   with the packages already in apt's cache, `apt-get update` included. Debian's postinst does
//!   not start a system containerd here (no systemd).
//! - **Snapshotter: overlayfs works** (the temporary directory is on ext4): `ctr plugins ls`
//!   says `ok` for overlayfs and native, `skip`/`error` for the rest. containerd 1.6's overlayfs
//!   plugin test-mounts an overlay in its root when it loads, so `ok` means it really mounts;
//!   [`Containerd::start`] reads that list and falls back to `native` when overlayfs is not
//!   `ok` (e.g. a temporary directory on overlayfs itself). [`Containerd::snapshotter`] says which.
//!   `VERGE_TEST_SNAPSHOTTER` forces one.
//! - **cgroups: v1** (hybrid: v1 controllers under `/sys/fs/cgroup/{cpu,memory,pids,…}`, an empty
//!   v2 hierarchy at `/sys/fs/cgroup/unified`), so runc uses cgroup v1 and `Tasks.Metrics`
//!   returns v1 stats. runc works in this sandbox with no special configuration: `ctr run` of a
//!   busybox image runs, a memory limit is enforced (OOM → exit status 137), the container gets
//!   `/dev/{null,zero,…}`, pid/ipc/uts/mount/network namespaces. The container's cgroup is
//!   `/<namespace>/<id>` under each controller's root (ctr's default `cgroupsPath`): outside the
//!   test process's own cgroup.
//! - runc's benign warning after every delete ("failed to remove runc container … exit status
//!   255") shows in containerd's log, as peers.md §2.7 says.
//! - Times on the 2-core VM (`cargo test --test containerd_rig -- --nocapture` prints them):
//!   containerd answers 0.055–0.085 s after spawn; `ctr images pull` (resolve, fetch, unpack) of
//!   the 1 MB gzipped busybox image from the loopback registry 0.15–0.31 s; `ctr run --rm` of
//!   `echo hello` 0.09–0.25 s; `ctr images import` of the same image as a tarball 0.25 s. The
//!   five rig tests take 3.5 s together.
//!
//! # Isolation: global paths containerd 1.6 shares between instances (traps)
//!
//! Root, state and socket are private, but three things are not:
//! - **runc's state** is `/run/containerd/runc/<namespace>/<container id>` (the runc v2 shim's
//!   default `root`) whatever containerd's `state` is. Two rigs running a container with the same
//!   namespace and id collide: the second `Tasks.Create` fails with "container with given ID
//!   already exists", **and its cleanup kills the first rig's container** (tested). A client can
//!   move it with the runc options (`io.containerd.runc.v1.Options { root }`, ctr's
//!   `--runc-root`): [`Containerd::runc_root`] is a directory for that.
//! - **cgroups**: the conventional `cgroupsPath` `/<namespace>/<id>` is global too; two
//!   containers with the same namespace and id share one cgroup.
//! - **shim sockets** live in `/run/containerd/s/<sha256(address, namespace, id)>`: distinct per
//!   rig because the address is.
//!
//! Hence [`Containerd::namespace`]: a namespace unique to this rig (`verge-<pid>-<n>`) for tests
//! to give Verge, so that tests running in parallel (cargo runs a file's tests on several
//! threads) with modules of the same name never meet. Verge's own default is
//! [`Containerd::NAMESPACE`] (`verge`); its namespace should be configurable, and it should
//! derive its cgroup paths from it.
//!
//! Also: the `opt` plugin creates `/opt/containerd/{bin,lib}` unless configured (the kit points
//! it into the temporary directory); ctr keeps its stdio FIFOs in `/run/containerd/fifo` and
//! removes them itself. Killing containerd does not stop containers: each has its own
//! `containerd-shim-runc-v2` process. So dropping a rig deletes every task (`ctr tasks delete
//! --force`) while containerd still runs, stops containerd (SIGTERM, then SIGKILL after 5 s),
//! kills any shim still naming this rig's socket and the shim's children (a container outlives
//! a killed shim), lazily unmounts what is left under the rig's directory, removes the cgroups
//! and the runc state of the rig's namespace, and removes the directory; a test checks that a
//! container is gone even when containerd was killed first.
//!
//! containerd needs root: [`Containerd::start`] panics (rather than skipping) without it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::images::TempDir;

/// How long [`Containerd::start`] waits for the socket to answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running private containerd, stopped and cleaned up on drop.
#[derive(Debug)]
pub struct Containerd {
    dir: TempDir,
    socket: PathBuf,
    namespace: String,
    snapshotter: String,
    child: Option<Child>,
    startup: Duration,
}

impl Containerd {
    /// Verge's default containerd namespace.
    pub const NAMESPACE: &'static str = "verge";
    /// The runtime Verge's containers use.
    pub const RUNTIME: &'static str = "io.containerd.runc.v2";

    /// Starts containerd with a fresh configuration and waits (up to 20 s) until its socket
    /// answers `ctr version`. Panics, with containerd's log, if it cannot start: containerd and
    /// runc must be installed (`tests/setup --containers`) and the process must be root.
    pub fn start() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        assert!(
            is_root(),
            "containerd needs root: run the container tests as root"
        );
        let dir = TempDir::new("containerd");
        let socket = dir.join("containerd.sock");
        // sockaddr_un.sun_path is 108 bytes with its NUL; the ttrpc socket adds ".ttrpc".
        assert!(
            socket.as_os_str().len() + ".ttrpc".len() < 108,
            "the containerd socket path {} is too long for a Unix socket: set TMPDIR shorter",
            socket.display()
        );
        for sub in ["root", "state", "opt", "runc"] {
            std::fs::create_dir_all(dir.join(sub)).expect("containerd directories");
        }
        let config = dir.join("config.toml");
        std::fs::write(&config, config_toml(dir.path(), &socket)).expect("containerd config");
        let log = std::fs::File::create(dir.join("containerd.log")).expect("containerd log");
        let log_err = log.try_clone().expect("containerd log");
        let begun = Instant::now();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .env("PATH", search_path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run containerd ({e}): install it with tests/setup --containers")
            });
        let mut rig = Self {
            dir,
            socket,
            namespace: format!(
                "{}-{}-{}",
                Self::NAMESPACE,
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ),
            snapshotter: String::new(),
            child: Some(child),
            startup: Duration::ZERO,
        };
        rig.wait_ready(begun);
        rig.startup = begun.elapsed();
        rig.snapshotter = match std::env::var("VERGE_TEST_SNAPSHOTTER") {
            Ok(forced) if !forced.is_empty() => forced,
            _ => rig.pick_snapshotter(),
        };
        rig
    }

    fn wait_ready(&mut self, begun: Instant) {
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!("containerd exited ({status}) at start:\n{}", self.log());
            }
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                let out = self.ctr_global().arg("version").output();
                if matches!(&out, Ok(out) if out.status.success()) {
                    return;
                }
            }
            assert!(
                begun.elapsed() < START_TIMEOUT,
                "containerd did not answer on {} within {START_TIMEOUT:?}:\n{}",
                self.socket.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// overlayfs if containerd loaded it (`ok` in `ctr plugins ls`), else native.
    fn pick_snapshotter(&self) -> String {
        let plugins = self.ctr_global_ok(&["plugins", "ls"]);
        let overlay_ok = plugins.lines().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.first() == Some(&"io.containerd.snapshotter.v1")
                && fields.get(1) == Some(&"overlayfs")
                && fields.last() == Some(&"ok")
        });
        if overlay_ok { "overlayfs" } else { "native" }.to_owned()
    }

    /// The gRPC socket (`containerd.sock` in the rig's directory).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The namespace tests should use: `verge-<pid>-<n>`, unique to this rig (see the module
    /// documentation, "Isolation"). Verge's default is [`Containerd::NAMESPACE`].
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The snapshotter that works here: `overlayfs`, or `native` where overlayfs cannot mount.
    pub fn snapshotter(&self) -> &str {
        &self.snapshotter
    }

    /// A directory in the rig for runc's state (the runc options' `root`, ctr's
    /// `--runc-root`), instead of the global `/run/containerd/runc`.
    pub fn runc_root(&self) -> PathBuf {
        self.dir.join("runc")
    }

    /// The rig's directory (configuration, root, state, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// containerd's `root` (content store, snapshots, metadata).
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// containerd's `state` (task bundles, with the container rootfs mounts).
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// containerd's process id, while it runs (a test may kill it to play a crash).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Imports an image archive (`ctr images import`, e.g. [`crate::images::OciLayout::tar`])
    /// into [`Containerd::namespace`] as `{name}:{tag of the layout}` and unpacks it: a way to
    /// have an image present without a registry.
    pub fn import(&self, archive: &Path, name: &str) -> String {
        let archive = archive.to_string_lossy().into_owned();
        self.ctr_ok(&[
            "images",
            "import",
            "--snapshotter",
            &self.snapshotter,
            "--base-name",
            name,
            &archive,
        ])
    }

    /// How long containerd took to answer after it was spawned.
    pub fn startup(&self) -> Duration {
        self.startup
    }

    /// containerd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// A `verge` daemon's `[containerd]` section for this rig (its socket, namespace,
    /// snapshotter and runc root), with the daemon's FIFOs and workload sockets in `run_dir`.
    pub fn daemon_config(&self, run_dir: &Path) -> String {
        format!(
            "[containerd]\nsocket = \"{}\"\nnamespace = \"{}\"\nsnapshotter = \"{}\"\n\
             runc_root = \"{}\"\nrun_dir = \"{}\"\n",
            self.socket().display(),
            self.namespace(),
            self.snapshotter(),
            self.runc_root().display(),
            run_dir.display(),
        )
    }

    /// `ctr --address SOCK --namespace NS` with NS = [`Containerd::namespace`]; add the
    /// subcommand and its arguments.
    pub fn ctr(&self) -> Command {
        self.ctr_in(&self.namespace)
    }

    /// `ctr --address SOCK --namespace namespace`.
    pub fn ctr_in(&self, namespace: &str) -> Command {
        let mut cmd = self.ctr_global();
        cmd.args(["--namespace", namespace]);
        cmd
    }

    fn ctr_global(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.socket)
            .env("PATH", search_path())
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `ctr` in [`Containerd::namespace`] with `args`; returns its stdout. Panics with its
    /// output and the tail of containerd's log if it fails.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self
            .ctr()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run ctr: {e}"));
        self.check(&out, args)
    }

    fn ctr_global_ok(&self, args: &[&str]) -> String {
        let out = self
            .ctr_global()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run ctr: {e}"));
        self.check(&out, args)
    }

    fn check(&self, out: &Output, args: &[&str]) -> String {
        assert!(
            out.status.success(),
            "ctr {} failed ({}):\n{}{}\n--- containerd log (tail) ---\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 30)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Kills and deletes every task in every namespace (SIGKILL, `ctr tasks delete --force`),
    /// so that no container outlives the rig. Called on drop.
    pub fn delete_all_tasks(&self) {
        let timeout = Duration::from_secs(10);
        let Some(namespaces) =
            output_within(self.ctr_global().args(["namespaces", "ls", "-q"]), timeout)
        else {
            return;
        };
        for ns in String::from_utf8_lossy(&namespaces.stdout).split_whitespace() {
            let Some(tasks) = output_within(self.ctr_in(ns).args(["tasks", "ls", "-q"]), timeout)
            else {
                continue;
            };
            for task in String::from_utf8_lossy(&tasks.stdout).split_whitespace() {
                let _ = output_within(
                    self.ctr_in(ns).args(["tasks", "delete", "--force", task]),
                    timeout,
                );
            }
        }
    }

    /// PIDs of the shims of this rig (processes whose command line is a `containerd-shim…`
    /// naming this rig's socket).
    fn shim_pids(&self) -> Vec<u32> {
        let socket = self.socket.to_string_lossy().into_owned();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        procs
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
                let args: Vec<String> = cmdline
                    .split(|b| *b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                let is_shim = args.first().is_some_and(|a| a.contains("containerd-shim"));
                (is_shim && args.iter().any(|a| a == &socket)).then_some(pid)
            })
            .collect()
    }

    /// Unmounts whatever is still mounted under the rig's directory (container rootfs
    /// overlays of tasks that could not be deleted), deepest first.
    fn unmount_all(&self) {
        let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return;
        };
        let prefix = self.dir.path().to_string_lossy().into_owned();
        let mut points: Vec<String> = mountinfo
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .map(unescape_mountinfo)
            .filter(|p| p.starts_with(&prefix))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&point)
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- containerd log ({}) tail ---\n{}",
                self.dir.join("containerd.log").display(),
                tail(&self.log(), 40)
            );
        }
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                self.delete_all_tasks();
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                let deadline = Instant::now() + Duration::from_secs(5);
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Shims left behind (containerd died, or a delete failed): their children (the
        // containers' first processes) first, since a container outlives its shim.
        for shim in self.shim_pids() {
            let mut pids = children(shim);
            pids.push(shim);
            for pid in pids {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        self.unmount_all();
        // runc's state for this rig's namespace, if a task escaped deletion (the namespace is
        // this rig's own).
        let _ = std::fs::remove_dir_all(Path::new("/run/containerd/runc").join(&self.namespace));
        // The cgroups `/<namespace>/…` under each v1 controller and at the v2 root: the parent
        // that `/<namespace>/<id>` paths leave behind, and the containers' own if they were not
        // deleted. A cgroup can be removed once its processes are gone, which takes a moment
        // after SIGKILL.
        let mut cgroups = vec![Path::new("/sys/fs/cgroup").join(&self.namespace)];
        if let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") {
            cgroups.extend(
                controllers
                    .flatten()
                    .map(|c| c.path().join(&self.namespace)),
            );
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            cgroups.retain(|cgroup| !remove_cgroup_tree(cgroup));
            if cgroups.is_empty() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // `self.dir` (a TempDir) removes the rest.
    }
}

/// The configuration: everything under `dir`, CRI off.
fn config_toml(dir: &Path, socket: &Path) -> String {
    let level = std::env::var("VERGE_CONTAINERD_LOG_LEVEL").unwrap_or_else(|_| "info".into());
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  level = "{level}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
        root = dir.join("root").display(),
        state = dir.join("state").display(),
        socket = socket.display(),
        opt = dir.join("opt").display(),
    )
}

/// The children of every thread of process `pid` (`/proc/PID/task/TID/children`).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Removes a cgroup directory and the cgroups below it (deepest first); true when it is gone.
fn remove_cgroup_tree(cgroup: &Path) -> bool {
    if !cgroup.is_dir() {
        return true;
    }
    if let Ok(entries) = std::fs::read_dir(cgroup) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    std::fs::remove_dir(cgroup).is_ok() || !cgroup.is_dir()
}

/// `PATH` with the sbin directories (runc is `/usr/sbin/runc` on Debian).
fn search_path() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    let mut dirs: Vec<&str> = path.split(':').filter(|d| !d.is_empty()).collect();
    for d in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    dirs.join(":")
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `/proc/self/mountinfo` escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(u8::try_from(value).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs `cmd` with its output captured, giving up (and killing it) after `timeout`.
fn output_within(cmd: &mut Command, timeout: Duration) -> Option<Output> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().ok(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}
