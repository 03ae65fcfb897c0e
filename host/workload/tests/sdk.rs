//! The workload socket as the Azure IoT Python SDK uses it: its own `IoTEdgeHsm` (from
//! `azure-iot-device`, `tests/setup --clients`) fetches the trust bundle and signs a SAS token
//! through the socket; the token must authenticate the module at the registry. The caller check
//! is exercised with real PIDs: here a process is "the module's" when this test process is its
//! parent (in Verge, when it is in the module's container).
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use verge_identity::{FileKeyStore, KeyStore, Registry};
use verge_message::Identity;
use verge_tls::EdgeCa;
use verge_workload::{API_VERSION, Callers, EdgeAuthority, SOCKET, Workload};

const HUB: &str = "hub.example";
const DEVICE: &str = "edge1";

/// Children of this process belong to `module` while `allow` is set.
struct Children {
    module: &'static str,
    allow: AtomicBool,
}

impl Callers for Children {
    fn module_of(&self, pid: u32) -> Option<String> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // pid (comm) state ppid …: comm may hold spaces; it ends at the last ')'.
        let ppid: u32 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (self.allow.load(Ordering::SeqCst) && ppid == std::process::id())
            .then(|| self.module.to_owned())
    }
}

const SCRIPT: &str = r#"
import sys
from azure.iot.device.iothub import edge_hsm
from azure.iot.device.common.auth import sastoken
hsm = edge_hsm.IoTEdgeHsm(module_id=sys.argv[2], generation_id="g1",
                          workload_uri="unix://" + sys.argv[1], api_version=sys.argv[3])
try:
    bundle = hsm.get_certificate()
except edge_hsm.IoTEdgeError as e:
    print("REFUSED", e.__cause__)
    sys.exit(3)
token = sastoken.RenewableSasToken(sys.argv[4], hsm, ttl=3600)
print(bundle.count("BEGIN CERTIFICATE"))
print(str(token))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_gets_the_trust_bundle_and_a_token_that_authenticates() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn KeyStore> = Arc::new(FileKeyStore::open(dir.path().join("keys")).unwrap());
    let registry = Arc::new(
        Registry::open(dir.path().join("ids.json"), Arc::clone(&store), HUB, DEVICE).unwrap(),
    );
    registry.ensure_module("filter").unwrap();
    let ca = EdgeCa::load_or_create(Arc::clone(&store), dir.path(), "Test CA").unwrap();
    let callers = Arc::new(Children {
        module: "filter",
        allow: AtomicBool::new(true),
    });
    let workload = Workload::new(
        dir.path().join("wl"),
        Arc::new(EdgeAuthority::new(Arc::clone(&registry), ca)),
        callers.clone(),
    )
    .unwrap();
    let mount = workload.listen("filter").unwrap();
    assert_eq!(workload.listen("filter").unwrap(), mount, "idempotent");
    let socket = mount.join(SOCKET);
    let uri = format!("{HUB}/devices/{DEVICE}/modules/filter");

    let run = |module: &str| {
        Command::new(verge_tests::mqtt::python())
            .args([
                "-c",
                SCRIPT,
                socket.to_str().unwrap(),
                module,
                API_VERSION,
                &uri,
            ])
            .output()
            .unwrap()
    };
    let out = run("filter");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("1"), "the bundle is the edge CA");
    let token = lines.next().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    registry
        .authenticate_sas(&Identity::module(DEVICE, "filter"), token, now)
        .expect("the token the socket signed authenticates the module");

    // Asking to sign for another module through this module's socket: 403.
    let out = run("sensor");
    assert!(!out.status.success());

    // A process that is not the module's: every request refused.
    callers.allow.store(false, Ordering::SeqCst);
    let out = run("filter");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains("403"), "{stdout}");

    // Removed from the deployment: the socket goes.
    workload.retain(|m| m != "filter");
    assert!(!socket.exists());
}
