//! What the MQTT tests share: the Python clients' virtualenv (`tests/setup --clients` makes it),
//! SAS tokens computed by Python (independently of Verge's code), and loopback addresses, so that
//! daemons of tests running at once each own IoT Hub's fixed ports 8883 and 443.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::workspace;

/// The Python of `target/py-clients` (azure-iot-device, paho-mqtt).
pub fn python() -> PathBuf {
    let python = workspace().join("target/py-clients/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run tests/setup --clients",
        python.display()
    );
    python
}

/// `tests/clients/iothub_client.py`.
pub fn client_script() -> PathBuf {
    workspace().join("tests/clients/iothub_client.py")
}

/// A SAS token for the identity of `connection_string`, valid for `ttl_secs` (negative: expired).
pub fn token(connection_string: &str, ttl_secs: i64) -> String {
    let out = Command::new(python())
        .arg(client_script())
        .args(["token", connection_string, &ttl_secs.to_string()])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A loopback address of its own (`127.0.0.N`) for each call in this process.
pub fn loopback_ip() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let host = 2 + (std::process::id().wrapping_mul(7).wrapping_add(n * 31)) % 250;
    format!("127.0.0.{host}")
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A daemon configuration (device `edge`) with MQTT over TLS on `ip`:8883 and HTTPS (direct
/// methods) on `ip`:443 (its host name is `ip`, so the server certificate names it) and plain
/// MQTT on 127.0.0.1:`plain_port`.
pub fn config(ip: &str, plain_port: u16) -> String {
    format!(
        "device_id = \"edge\"\nhostname = \"{ip}\"\n\
         [agent]\ncool_off_time_unit_secs = 1\nstop_grace_secs = 2\ndeploy_timeout_secs = 60\n\
         [mqtt]\nbind = \"{ip}\"\ntls_port = 8883\nhttps_port = 443\n\
         plain_port = {plain_port}\n"
    )
}
