//! A private SoftHSM2 token for PKCS#11 tests.
//!
//! [`SoftHsm::new`] makes a temporary directory with its own `softhsm2.conf` (token directory
//! inside it, file object store), initialises a token labelled [`SoftHsm::TOKEN`] with
//! `softhsm2-util`, and removes the directory when dropped. It changes nothing global: SoftHSM
//! reads `SOFTHSM2_CONF` from the process environment when the library is initialised
//! (`C_Initialize`), so a test sets it once, before the first PKCS#11 call of the process:
//!
//! ```ignore
//! let hsm = SoftHsm::new();
//! let (name, value) = hsm.env();
//! // SAFETY: set once, before any thread loads the PKCS#11 library or reads the environment.
//! unsafe { std::env::set_var(name, value) };
//! let store = Pkcs11KeyStore::open(SoftHsm::library(), &hsm.uri())?;
//! ```
//!
//! SoftHSM reads its configuration and its token list once per process, so a test binary uses
//! one `SoftHsm` for all its PKCS#11 tests (each integration test file is its own process).
//! SoftHSM2 comes from Debian's `softhsm2` (`tests/setup --clients` installs it); the tests
//! fail, rather than skip, without it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The PKCS#11 module Debian's `softhsm2` installs.
pub const LIBRARY: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// A SoftHSM2 configuration and token in a temporary directory, removed on drop.
#[derive(Debug)]
pub struct SoftHsm {
    dir: PathBuf,
    conf: PathBuf,
}

impl SoftHsm {
    /// The token's label.
    pub const TOKEN: &'static str = "verge";
    /// The user PIN.
    pub const PIN: &'static str = "1234";
    /// The security officer's PIN.
    pub const SO_PIN: &'static str = "5678";

    /// A fresh configuration with one initialised token. Panics (with `softhsm2-util`'s output)
    /// if SoftHSM2 is not installed or the token cannot be made.
    pub fn new() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        assert!(
            Path::new(LIBRARY).exists(),
            "{LIBRARY} not found: install SoftHSM2 (tests/setup --clients, Debian package softhsm2)"
        );
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!(
            "verge-softhsm-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).expect("SoftHSM token directory");
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .expect("softhsm2.conf");
        let hsm = Self { dir, conf };
        let out = hsm
            .util()
            .args(["--init-token", "--free", "--label", Self::TOKEN])
            .args(["--pin", Self::PIN, "--so-pin", Self::SO_PIN])
            .output()
            .expect("cannot run softhsm2-util (install SoftHSM2: tests/setup --clients)");
        assert!(
            out.status.success(),
            "softhsm2-util --init-token failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        hsm
    }

    /// The configuration file: the value `SOFTHSM2_CONF` must have.
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// The environment variable to set before the library is initialised: `("SOFTHSM2_CONF",
    /// conf)`.
    pub fn env(&self) -> (&'static str, &Path) {
        ("SOFTHSM2_CONF", &self.conf)
    }

    /// The PKCS#11 module to load.
    pub fn library() -> &'static Path {
        Path::new(LIBRARY)
    }

    /// A PKCS#11 URI (RFC 7512) naming the token, with its user PIN.
    pub fn uri(&self) -> String {
        format!("pkcs11:token={}?pin-value={}", Self::TOKEN, Self::PIN)
    }

    /// `softhsm2-util` with this configuration in its environment.
    pub fn util(&self) -> Command {
        let mut cmd = Command::new("softhsm2-util");
        cmd.env("SOFTHSM2_CONF", &self.conf);
        cmd
    }

    /// The temporary directory (configuration and tokens).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Default for SoftHsm {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for SoftHsm {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
