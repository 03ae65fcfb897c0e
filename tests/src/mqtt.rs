//! What the MQTT tests share: the Python clients' virtualenv (`tests/setup --clients` makes it),
//! SAS tokens computed by Python (independently of Verge's code), and loopback addresses, so that
//! daemons of tests running at once each own IoT Hub's fixed ports 8883 and 443.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::daemon::Daemon;
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

/// A daemon configuration (device `edge`) with MQTT over TLS on `ip`:8883, HTTPS (direct
/// methods) on `ip`:443 (its host name is `ip`, so the server certificate names it), metrics on
/// `ip`:9600 and plain MQTT on 127.0.0.1:`plain_port`. `[mqtt]` comes last so that tests may
/// append keys to it.
pub fn config(ip: &str, plain_port: u16) -> String {
    format!(
        "device_id = \"edge\"\nhostname = \"{ip}\"\n\
         [agent]\ncool_off_time_unit_secs = 1\nstop_grace_secs = 2\ndeploy_timeout_secs = 60\n\
         [metrics]\nbind = \"{ip}\"\n\
         [mqtt]\nbind = \"{ip}\"\ntls_port = 8883\nhttps_port = 443\n\
         plain_port = {plain_port}\n"
    )
}

/// A child daemon whose `[upstream]` is `root`, with its own loopback address.
///
/// Registers edge device `name` on `root` (`verge identity add edge-device`) and writes the
/// root's trust bundle into the root's directory. The child opens no TLS, HTTPS or metrics port;
/// `[agent]` comes last so that callers may append keys to it.
pub fn child_config(root: &Daemon, name: &str) -> String {
    let cs = add_identity(root, "edge-device", name);
    let ca = root.dir().join(format!("{name}-parent-ca.pem"));
    std::fs::write(&ca, root.cli_ok(&["trust-bundle"])).expect("write the parent's trust bundle");
    format!(
        "device_id = \"{name}\"\n[mqtt]\ntls_port = 0\nhttps_port = 0\n[metrics]\nport = 0\n\
         [upstream]\nconnection_string = \"{cs}\"\ntrust_bundle = \"{}\"\n\
         [agent]\ncool_off_time_unit_secs = 1\nstop_grace_secs = 2\ndeploy_timeout_secs = 60\n",
        ca.display()
    )
}

/// `verge identity add KIND NAME` on `daemon`: the connection string it prints.
pub fn add_identity(daemon: &Daemon, kind: &str, name: &str) -> String {
    let cs = daemon
        .cli_ok(&["identity", "add", kind, name])
        .trim()
        .to_owned();
    assert!(
        cs.starts_with("HostName=") && cs.contains("SharedAccessKey="),
        "{cs}"
    );
    cs
}

/// `connection_string` with its key replaced by another valid key: tokens from it are wrong.
pub fn with_wrong_key(connection_string: &str) -> String {
    let key = connection_string
        .split("SharedAccessKey=")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .expect("a SharedAccessKey");
    connection_string.replace(key, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
}

/// `mosquitto_pub -V mqttv311 -q 1 ARGS`.
pub fn mosquitto_pub(args: &[&str]) -> Output {
    Command::new("mosquitto_pub")
        .args(["-V", "mqttv311", "-q", "1"])
        .args(args)
        .output()
        .expect("mosquitto_pub (tests/setup --clients installs it)")
}

/// A command's stdout and stderr, for assertions and failure messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A Python SDK client (`iothub_client.py device|module`); its events (JSON lines) arrive on a
/// channel.
pub struct SdkClient {
    child: Child,
    stdin: Option<ChildStdin>,
    events: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl SdkClient {
    /// Start `iothub_client.py KIND CONNECTION_STRING CA`.
    pub fn start(kind: &str, connection_string: &str, ca: &Path) -> Self {
        let mut child = Command::new(python())
            .arg(client_script())
            .args([kind, connection_string, &ca.display().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the SDK client");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        Self {
            child,
            stdin,
            events,
            seen: Vec::new(),
        }
    }

    /// The first event (seen before or arriving within 30 s) matching `pred`; panics with the
    /// client's stderr otherwise.
    pub fn expect(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        loop {
            match self.events.recv_timeout(Duration::from_secs(30)) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    let mut err = String::new();
                    if let Some(mut e) = self.child.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    panic!(
                        "no {what} from the SDK client; saw {:?}\nstderr:\n{err}",
                        self.seen
                    );
                }
            }
        }
    }

    /// The event named `name`.
    pub fn event(&mut self, name: &str) -> Value {
        self.expect(name, |v| v["event"] == name)
    }

    /// Close its stdin and wait for it to disconnect and exit.
    pub fn close(mut self) {
        drop(self.stdin.take());
        self.event("closed");
        let _ = self.child.wait();
    }
}

/// A bare MQTT 3.1.1 client on a socket, to misbehave on purpose (withhold PUBACKs, drop the
/// connection).
pub struct RawClient {
    /// The socket.
    pub stream: TcpStream,
    buf: bytes::BytesMut,
}

impl RawClient {
    /// Connect with a clean session, expecting CONNACK success.
    pub fn connect(port: u16, client_id: &str, username: &str, password: &str) -> Self {
        use mqttbytes::v4::{Connect, Login, Packet};
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("raw MQTT client");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("raw MQTT client");
        let mut connect = Connect::new(client_id);
        connect.login = Some(Login::new(username, password));
        let mut out = bytes::BytesMut::new();
        connect.write(&mut out).expect("raw MQTT client");
        stream.write_all(&out).expect("raw MQTT client");
        let mut client = Self {
            stream,
            buf: bytes::BytesMut::new(),
        };
        match client.packet() {
            Packet::ConnAck(ack) => {
                assert_eq!(ack.code, mqttbytes::v4::ConnectReturnCode::Success)
            }
            other => panic!("{other:?}"),
        }
        client
    }

    /// Write packets.
    pub fn send(&mut self, write: impl FnOnce(&mut bytes::BytesMut)) {
        let mut out = bytes::BytesMut::new();
        write(&mut out);
        self.stream.write_all(&out).expect("raw MQTT client");
    }

    /// The next packet.
    pub fn packet(&mut self) -> mqttbytes::v4::Packet {
        loop {
            match mqttbytes::v4::read(&mut self.buf, 1 << 20) {
                Ok(p) => return p,
                Err(mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("{e:?}"),
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).expect("raw MQTT client");
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next PUBLISH (skipping SUBACKs and the like).
    pub fn publish(&mut self) -> mqttbytes::v4::Publish {
        loop {
            if let mqttbytes::v4::Packet::Publish(p) = self.packet() {
                return p;
            }
        }
    }
}
