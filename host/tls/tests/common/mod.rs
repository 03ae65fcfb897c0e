//! Shared test helpers: the key store, TLS client/server plumbing, external tools.
//!
//! `key_store` is the one place that chooses the KeyStore the tests run on: verge-identity's
//! `FileKeyStore`. (`tests/pkcs11.rs` runs the main flows on a SoftHSM2 token.)
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use verge_identity::keys::{KeyError, KeyStore};
use verge_tls::{ClientAuth, ClientCert};

/// The key store the tests use, keeping its keys under `dir`.
pub fn key_store(dir: &Path) -> Arc<dyn KeyStore> {
    Arc::new(verge_identity::keys::FileKeyStore::open(dir.join("keys")).unwrap())
}

/// Wraps a store; while `fail_signing` is set, every signature fails (a token gone away).
#[derive(Debug)]
pub struct FlakyStore {
    pub inner: Arc<dyn KeyStore>,
    pub fail_signing: AtomicBool,
}

impl FlakyStore {
    pub fn new(inner: Arc<dyn KeyStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            fail_signing: AtomicBool::new(false),
        })
    }
}

impl KeyStore for FlakyStore {
    fn generate_hmac_key(&self, label: &str) -> Result<(), KeyError> {
        self.inner.generate_hmac_key(label)
    }
    fn import_hmac_key(&self, label: &str, secret: &[u8]) -> Result<(), KeyError> {
        self.inner.import_hmac_key(label, secret)
    }
    fn hmac_sha256(&self, label: &str, data: &[u8]) -> Result<[u8; 32], KeyError> {
        self.inner.hmac_sha256(label, data)
    }
    fn generate_ec_p256_key(&self, label: &str) -> Result<(), KeyError> {
        self.inner.generate_ec_p256_key(label)
    }
    fn ec_p256_public_key(&self, label: &str) -> Result<Vec<u8>, KeyError> {
        self.inner.ec_p256_public_key(label)
    }
    fn ecdsa_p256_sha256_sign(&self, label: &str, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        if self.fail_signing.load(Ordering::SeqCst) {
            return Err(KeyError::Store("token removed".into()));
        }
        self.inner.ecdsa_p256_sha256_sign(label, message)
    }
    fn exists(&self, label: &str) -> Result<bool, KeyError> {
        self.inner.exists(label)
    }
    fn delete(&self, label: &str) -> Result<(), KeyError> {
        self.inner.delete(label)
    }
}

/// What the test server saw of one connection.
#[derive(Debug)]
pub enum Served {
    /// The handshake finished; the client's certificate as identified (if any).
    Ok(Option<ClientCert>),
    /// The handshake failed on the server side.
    HandshakeFailed(String),
}

/// Accepts one TLS connection on a fresh loopback port, answers "hello\n" and reports.
pub async fn serve_once(
    config: rustls::ServerConfig,
    auth: Option<Arc<ClientAuth>>,
) -> (SocketAddr, tokio::task::JoinHandle<Served>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = match acceptor.accept(tcp).await {
            Ok(tls) => tls,
            Err(e) => return Served::HandshakeFailed(e.to_string()),
        };
        let cert = match &auth {
            Some(auth) => ClientCert::from_connection(tls.get_ref().1, auth).unwrap(),
            None => None,
        };
        let _ = tls.write_all(b"hello\n").await;
        let _ = tls.flush().await;
        let _ = tls.shutdown().await;
        Served::Ok(cert)
    });
    (addr, task)
}

/// Connects with rustls as `server_name`, reads the greeting; the error text on failure.
pub async fn rustls_client(
    addr: SocketAddr,
    server_name: &str,
    config: rustls::ClientConfig,
) -> Result<String, String> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(server_name.to_owned()).map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    tls.read_to_string(&mut out)
        .await
        .map_err(|e| e.to_string())?;
    if out.is_empty() {
        return Err("no greeting".into());
    }
    Ok(out)
}

/// A rustls client config (ring) trusting the certificates in `trust_pem`.
pub fn client_config_builder(
    trust_pem: &str,
) -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in verge_tls::certs_from_pem(trust_pem).unwrap() {
        roots.add(cert).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(verge_tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
}

/// A client config with a software certificate and key (PEM).
pub fn client_config_with_cert(
    trust_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> rustls::ClientConfig {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let certs = verge_tls::certs_from_pem(cert_pem).unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    client_config_builder(trust_pem)
        .with_client_auth_cert(certs, key)
        .unwrap()
}

/// Whether a program can be run.
pub fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        || Command::new(program)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path
}

/// Reads a file to a string.
pub fn read(path: &Path) -> String {
    let mut s = String::new();
    std::fs::File::open(path)
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    s
}

/// The first certificate of PEM text, DER.
pub fn der(pem: &str) -> CertificateDer<'static> {
    verge_tls::certs_from_pem(pem).unwrap().remove(0)
}

/// Python's `ssl` (OpenSSL) with only the trust bundle as CA file.
const PY_CLIENT: &str = r#"
import socket, ssl, sys
port, cafile, name = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile)
if len(sys.argv) > 5:
    ctx.load_cert_chain(sys.argv[4], sys.argv[5])
with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
    with ctx.wrap_socket(sock, server_hostname=name) as tls:
        data = b""
        while not data.endswith(b"\n"):
            chunk = tls.recv(64)
            if not chunk:
                break
            data += chunk
        print(tls.version(), data.decode().strip())
"#;

/// Runs the Python client; `Ok(stdout)` or `Err(stderr)`; `None` without python3.
pub async fn python_client(
    port: u16,
    cafile: &std::path::Path,
    name: &str,
    client_cert: Option<(&std::path::Path, &std::path::Path)>,
) -> Option<Result<String, String>> {
    if !have("python3") {
        return None;
    }
    let mut cmd = std::process::Command::new("python3");
    cmd.arg("-c")
        .arg(PY_CLIENT)
        .arg(port.to_string())
        .arg(cafile)
        .arg(name);
    if let Some((cert, key)) = client_cert {
        cmd.arg(cert).arg(key);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    Some(if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    })
}
