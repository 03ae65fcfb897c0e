//! The registry of identities this edge device serves: itself, the modules the agent deploys,
//! modules that run elsewhere and connect over MQTT, and leaf devices behind the gateway.
//!
//! - Records ([`Record`]) are kept in one JSON file, rewritten atomically (0600) on every
//!   change. Keys are not in it: only their labels in the [`KeyStore`].
//! - Agent-managed modules and the edge device get SAS keys generated inside the store, never
//!   exported ([`Registry::ensure_module`], [`Registry::ensure_edge_device`]).
//! - Leaf devices and external modules with SAS get two random keys made here, imported into the
//!   store and returned once as connection strings ([`Credentials`]); nothing else keeps them.
//! - Ids follow IoT Hub's rules ([`ids`]); an identity can be registered once.
//! - [`Registry::authenticate_sas`] checks a client's SAS token ([`crate::sas::authenticate`]);
//!   [`Registry::authenticate_x509`] checks a client certificate TLS has already validated.
//!   Failures are logged at debug level with the identity and the reason, never the token.

pub mod ids;
pub mod record;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use verge_message::Identity;

use crate::auth::{AuthError, AuthMethod, KeySlot};
use crate::fsutil;
use crate::keys::{KeyError, KeyStore};
use crate::sas::{self, AudienceRules, SasToken};
pub use ids::{IdError, validate_id};
pub use record::{Auth, ConnectionString, Credentials, IdentityKind, NewAuth, Record};
use record::{FILE_VERSION, RegistryFile, StoredRecord};

/// What went wrong with the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry file could not be read or written.
    #[error("registry file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The registry file is not a registry.
    #[error("registry file {path} is unusable: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A device or module id IoT Hub would refuse.
    #[error("invalid id {id:?}: {reason}")]
    InvalidId {
        /// The id (at most 140 characters of it).
        id: String,
        /// Why.
        reason: String,
    },
    /// A host name is blank.
    #[error("the IoT Hub host name is blank")]
    MissingHubHostName,
    /// The identity is already registered.
    #[error("identity {0} is already registered")]
    Duplicate(Identity),
    /// The identity is registered as another kind (e.g. an external module where the agent
    /// wants to manage one).
    #[error("identity {identity} is registered as {existing:?}")]
    KindConflict {
        /// The identity.
        identity: Identity,
        /// What it is registered as.
        existing: IdentityKind,
    },
    /// No such identity.
    #[error("unknown identity {0}")]
    UnknownIdentity(Identity),
    /// The identity has no SAS keys.
    #[error("identity {0} does not use SAS keys")]
    NotSas(Identity),
    /// A thumbprint that is not hex SHA-1 (40 digits) or SHA-256 (64 digits).
    #[error("thumbprint {0:?} is not hex SHA-1 or SHA-256")]
    InvalidThumbprint(String),
    /// The combination is not supported.
    #[error("{0}")]
    Unsupported(&'static str),
    /// The key store failed.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// The identity registry.
pub struct Registry {
    path: PathBuf,
    store: Arc<dyn KeyStore>,
    rules: AudienceRules,
    edge_device_id: String,
    device_key_for_module: bool,
    rng: SystemRandom,
    records: Mutex<BTreeMap<String, Record>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("path", &self.path)
            .field("hub_host_name", &self.rules.hub_host())
            .field("gateway_host_name", &self.rules.gateway_host())
            .field("edge_device_id", &self.edge_device_id)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Opens the registry in `path` (a JSON file; none yet means an empty registry), with keys
    /// in `store`, for the edge device `edge_device_id` of IoT Hub `hub_host_name`.
    pub fn open(
        path: impl AsRef<Path>,
        store: Arc<dyn KeyStore>,
        hub_host_name: &str,
        edge_device_id: &str,
    ) -> Result<Self, RegistryError> {
        let path = path.as_ref().to_path_buf();
        let rules =
            AudienceRules::new(hub_host_name).map_err(|_| RegistryError::MissingHubHostName)?;
        check_id(edge_device_id)?;
        let records = load(&path)?;
        Ok(Self {
            path,
            store,
            rules,
            edge_device_id: edge_device_id.to_owned(),
            device_key_for_module: false,
            rng: SystemRandom::new(),
            records: Mutex::new(records),
        })
    }

    /// The host name clients reach this gateway by: it goes into connection strings
    /// (`GatewayHostName=`) and is accepted in token audiences besides the hub's.
    pub fn with_gateway_host_name(mut self, gateway_host_name: &str) -> Self {
        self.rules = self.rules.with_gateway_host(gateway_host_name);
        self
    }

    /// Whether a module may present a token signed with its device's key (IoT Edge's
    /// `allowDeviceAuthForModule`); off by default.
    pub fn with_device_key_for_modules(mut self, allow: bool) -> Self {
        self.device_key_for_module = allow;
        self
    }

    /// The IoT Hub host name.
    pub fn hub_host_name(&self) -> &str {
        self.rules.hub_host()
    }

    /// The gateway host name, if set.
    pub fn gateway_host_name(&self) -> Option<&str> {
        self.rules.gateway_host()
    }

    /// The edge device's id.
    pub fn edge_device_id(&self) -> &str {
        &self.edge_device_id
    }

    /// The edge device's identity.
    pub fn edge_device(&self) -> Identity {
        Identity::device(&self.edge_device_id)
    }

    /// The edge device's record, created with keys generated in the store if missing.
    pub fn ensure_edge_device(&self) -> Result<Record, RegistryError> {
        self.ensure_managed(self.edge_device(), IdentityKind::EdgeDevice)
    }

    /// The record of agent-managed module `module_id` of the edge device, created with keys
    /// generated in the store if missing. Idempotent.
    pub fn ensure_module(&self, module_id: &str) -> Result<Record, RegistryError> {
        check_id(module_id)?;
        self.ensure_managed(
            Identity::module(&self.edge_device_id, module_id),
            IdentityKind::Module,
        )
    }

    /// Registers leaf device `device_id`. With [`NewAuth::Sas`], its keys are returned once.
    pub fn add_leaf_device(
        &self,
        device_id: &str,
        auth: NewAuth,
    ) -> Result<(Record, Option<Credentials>), RegistryError> {
        self.add_device(device_id, IdentityKind::LeafDevice, auth)
    }

    /// Register a child edge device (one whose upstream is this device): like a leaf device,
    /// and its connection may carry the messages of its modules.
    pub fn add_child_edge_device(
        &self,
        device_id: &str,
        auth: NewAuth,
    ) -> Result<(Record, Option<Credentials>), RegistryError> {
        self.add_device(device_id, IdentityKind::ChildEdgeDevice, auth)
    }

    fn add_device(
        &self,
        device_id: &str,
        kind: IdentityKind,
        auth: NewAuth,
    ) -> Result<(Record, Option<Credentials>), RegistryError> {
        check_id(device_id)?;
        let identity = Identity::device(device_id);
        if device_id == self.edge_device_id {
            return Err(RegistryError::Duplicate(identity));
        }
        self.add_with_shared_keys(identity, kind, auth)
    }

    /// Registers module `module_id` of the edge device, run elsewhere and connecting over MQTT.
    /// With [`NewAuth::Sas`], its keys are returned once. Ids starting with `$` are reserved for
    /// system modules.
    pub fn add_external_module(
        &self,
        module_id: &str,
        auth: NewAuth,
    ) -> Result<(Record, Option<Credentials>), RegistryError> {
        check_id(module_id)?;
        if module_id.starts_with('$') {
            return Err(RegistryError::InvalidId {
                id: module_id.to_owned(),
                reason: "module ids starting with '$' are reserved for system modules".into(),
            });
        }
        if auth == NewAuth::X509Ca {
            return Err(RegistryError::Unsupported(
                "X.509 CA authentication is for devices; give a module thumbprints or SAS keys",
            ));
        }
        let identity = Identity::module(&self.edge_device_id, module_id);
        self.add_with_shared_keys(identity, IdentityKind::ExternalModule, auth)
    }

    /// Removes `identity` and deletes its keys; `None` if it was not registered.
    pub fn remove(&self, identity: &Identity) -> Result<Option<Record>, RegistryError> {
        let mut records = self.lock();
        let key = identity.to_string();
        let Some(record) = records.get(&key).cloned() else {
            return Ok(None);
        };
        let mut next = records.clone();
        next.remove(&key);
        self.persist(&next)?;
        *records = next;
        drop(records);
        if let Auth::Sas { primary, secondary } = &record.auth {
            for label in [primary, secondary] {
                // The record is gone, so the key can no longer authenticate anyone: a failure
                // here leaves an orphan key, not an open door.
                if let Err(e) = self.store.delete(label) {
                    tracing::warn!(identity = %identity, error = %e, "could not delete a removed identity's key");
                }
            }
        }
        tracing::info!(identity = %identity, "identity removed");
        Ok(Some(record))
    }

    /// Every record, by identity.
    pub fn list(&self) -> Vec<Record> {
        self.lock().values().cloned().collect()
    }

    /// Whether `identity` is registered (without copying its record: a parent asks for every
    /// message a child forwards for a device behind it).
    pub fn contains(&self, identity: &Identity) -> bool {
        self.lock().contains_key(&identity.to_string())
    }

    /// The record of `identity`.
    pub fn get(&self, identity: &Identity) -> Option<Record> {
        self.lock().get(&identity.to_string()).cloned()
    }

    /// Authenticates `identity` with the SAS token `token` at `now` (Unix seconds).
    pub fn authenticate_sas(
        &self,
        identity: &Identity,
        token: &str,
        now: u64,
    ) -> Result<AuthMethod, AuthError> {
        let result = self.check_sas(identity, token, now);
        if let Err(e) = &result {
            tracing::debug!(identity = %identity, reason = %e, "SAS authentication failed");
        }
        result
    }

    fn check_sas(
        &self,
        identity: &Identity,
        token: &str,
        now: u64,
    ) -> Result<AuthMethod, AuthError> {
        let token = SasToken::parse(token)?;
        // The modules of a child edge device ($edgeAgent, $edgeHub, ...) are not registered
        // here: the child proves them with its device key.
        let child_module = identity.module_id().is_some()
            && self.get(identity).is_none()
            && self
                .get(&Identity::device(identity.device_id()))
                .is_some_and(|r| r.kind == IdentityKind::ChildEdgeDevice);
        if !child_module {
            self.sas_labels(identity)?;
        }
        sas::authenticate(
            &token,
            identity,
            &self.rules,
            now,
            self.device_key_for_module || child_module,
            |who, data| {
                let (primary, secondary) = self.sas_labels(who)?;
                Ok(vec![
                    self.store.hmac_sha256(&primary, data)?,
                    self.store.hmac_sha256(&secondary, data)?,
                ])
            },
        )
    }

    /// The labels of the SAS keys of `identity`.
    fn sas_labels(&self, identity: &Identity) -> Result<(String, String), AuthError> {
        match self.get(identity) {
            None => Err(AuthError::UnknownIdentity(identity.clone())),
            Some(Record {
                auth: Auth::Sas { primary, secondary },
                ..
            }) => Ok((primary, secondary)),
            Some(_) => Err(AuthError::WrongAuthMethod {
                identity: identity.clone(),
                method: "SAS",
            }),
        }
    }

    /// Authenticates `identity` with a client certificate that TLS has validated (chain and
    /// validity period): `certificate` is its DER, `common_name` its subject CN.
    ///
    /// - Thumbprint identities: the SHA-1 or SHA-256 of `certificate` must be a registered
    ///   thumbprint (ignoring case).
    /// - CA identities: `common_name` must be the device id.
    pub fn authenticate_x509(
        &self,
        identity: &Identity,
        certificate: &[u8],
        common_name: Option<&str>,
    ) -> Result<AuthMethod, AuthError> {
        let result = self.check_x509(identity, certificate, common_name);
        if let Err(e) = &result {
            tracing::debug!(identity = %identity, reason = %e, "X.509 authentication failed");
        }
        result
    }

    fn check_x509(
        &self,
        identity: &Identity,
        certificate: &[u8],
        common_name: Option<&str>,
    ) -> Result<AuthMethod, AuthError> {
        let record = self
            .get(identity)
            .ok_or_else(|| AuthError::UnknownIdentity(identity.clone()))?;
        match &record.auth {
            Auth::X509Thumbprint { primary, secondary } => {
                let sha1 = fsutil::hex(
                    digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, certificate).as_ref(),
                );
                let sha256 = fsutil::hex(digest::digest(&digest::SHA256, certificate).as_ref());
                let matches = |thumbprint: &str| {
                    thumbprint.eq_ignore_ascii_case(&sha1)
                        || thumbprint.eq_ignore_ascii_case(&sha256)
                };
                if matches(primary) {
                    Ok(AuthMethod::X509Thumbprint {
                        key: KeySlot::Primary,
                    })
                } else if secondary.as_deref().is_some_and(matches) {
                    Ok(AuthMethod::X509Thumbprint {
                        key: KeySlot::Secondary,
                    })
                } else {
                    Err(AuthError::ThumbprintMismatch)
                }
            }
            Auth::X509Ca => {
                if common_name == Some(identity.device_id()) {
                    Ok(AuthMethod::X509Ca)
                } else {
                    Err(AuthError::CommonNameMismatch)
                }
            }
            Auth::Sas { .. } => Err(AuthError::WrongAuthMethod {
                identity: identity.clone(),
                method: "X.509",
            }),
        }
    }

    /// HMAC-SHA256 of `data` with the primary key of `identity` (the workload API's `sign`).
    pub fn sign(&self, identity: &Identity, data: &[u8]) -> Result<[u8; 32], RegistryError> {
        let (primary, _) = self.registry_sas_labels(identity)?;
        Ok(self.store.hmac_sha256(&primary, data)?)
    }

    /// A SAS token for `identity`'s own primary key, for the hub host name, valid from `now`
    /// (Unix seconds) for `ttl`.
    pub fn token_for(
        &self,
        identity: &Identity,
        ttl: Duration,
        now: u64,
    ) -> Result<String, RegistryError> {
        let (primary, _) = self.registry_sas_labels(identity)?;
        let sr = sas::audience_for(self.rules.hub_host(), identity);
        let expiry = now.saturating_add(ttl.as_secs());
        Ok(sas::sign_audience(
            self.store.as_ref(),
            &primary,
            &sr,
            expiry,
        )?)
    }

    fn registry_sas_labels(&self, identity: &Identity) -> Result<(String, String), RegistryError> {
        match self.get(identity) {
            None => Err(RegistryError::UnknownIdentity(identity.clone())),
            Some(Record {
                auth: Auth::Sas { primary, secondary },
                ..
            }) => Ok((primary, secondary)),
            Some(_) => Err(RegistryError::NotSas(identity.clone())),
        }
    }

    /// The record of a store-managed identity, (re)created if missing or if its keys are gone.
    fn ensure_managed(
        &self,
        identity: Identity,
        kind: IdentityKind,
    ) -> Result<Record, RegistryError> {
        let mut records = self.lock();
        let key = identity.to_string();
        let stale = match records.get(&key) {
            Some(existing) if existing.kind != kind => {
                return Err(RegistryError::KindConflict {
                    identity,
                    existing: existing.kind,
                });
            }
            Some(existing) => match &existing.auth {
                Auth::Sas { primary, secondary }
                    if self.store.exists(primary)? && self.store.exists(secondary)? =>
                {
                    return Ok(existing.clone());
                }
                _ => {
                    tracing::warn!(identity = %identity, "identity's keys are missing from the key store: making new ones");
                    Some(existing.auth.clone())
                }
            },
            None => None,
        };
        let generation_id = self.generation_id()?;
        let (primary, secondary) = key_labels(&identity, &generation_id);
        self.store.generate_hmac_key(&primary)?;
        if let Err(e) = self.store.generate_hmac_key(&secondary) {
            let _ = self.store.delete(&primary);
            return Err(e.into());
        }
        let record = Record {
            identity: identity.clone(),
            kind,
            generation_id,
            auth: Auth::Sas {
                primary: primary.clone(),
                secondary: secondary.clone(),
            },
            created: unix_now(),
        };
        let mut next = records.clone();
        next.insert(key, record.clone());
        if let Err(e) = self.persist(&next) {
            let _ = self.store.delete(&primary);
            let _ = self.store.delete(&secondary);
            return Err(e);
        }
        *records = next;
        drop(records);
        if let Some(Auth::Sas { primary, secondary }) = stale {
            for label in [primary, secondary] {
                let _ = self.store.delete(&label);
            }
        }
        tracing::info!(identity = %identity, kind = ?kind, "identity created");
        Ok(record)
    }

    /// Registers an identity whose SAS keys (if any) are shared with its holder.
    fn add_with_shared_keys(
        &self,
        identity: Identity,
        kind: IdentityKind,
        auth: NewAuth,
    ) -> Result<(Record, Option<Credentials>), RegistryError> {
        let mut records = self.lock();
        let key = identity.to_string();
        if records.contains_key(&key) {
            return Err(RegistryError::Duplicate(identity));
        }
        let generation_id = self.generation_id()?;
        let mut imported: Vec<String> = Vec::new();
        let (auth, credentials) = match auth {
            NewAuth::Sas => {
                if identity.device_id().contains(';')
                    || identity.module_id().is_some_and(|m| m.contains(';'))
                {
                    return Err(RegistryError::InvalidId {
                        id: identity.to_string(),
                        reason: "';' cannot appear in a connection string".into(),
                    });
                }
                let (primary, secondary) = key_labels(&identity, &generation_id);
                let primary_cs = self.import_shared_key(&primary, &identity)?;
                imported.push(primary.clone());
                let secondary_cs = match self.import_shared_key(&secondary, &identity) {
                    Ok(cs) => cs,
                    Err(e) => {
                        let _ = self.store.delete(&primary);
                        return Err(e);
                    }
                };
                imported.push(secondary.clone());
                let credentials = Credentials {
                    primary: primary_cs,
                    secondary: secondary_cs,
                };
                (Auth::Sas { primary, secondary }, Some(credentials))
            }
            NewAuth::X509Thumbprint { primary, secondary } => (
                Auth::X509Thumbprint {
                    primary: thumbprint(&primary)?,
                    secondary: secondary.as_deref().map(thumbprint).transpose()?,
                },
                None,
            ),
            NewAuth::X509Ca => (Auth::X509Ca, None),
        };
        let record = Record {
            identity: identity.clone(),
            kind,
            generation_id,
            auth,
            created: unix_now(),
        };
        let mut next = records.clone();
        next.insert(key, record.clone());
        if let Err(e) = self.persist(&next) {
            for label in &imported {
                let _ = self.store.delete(label);
            }
            return Err(e);
        }
        *records = next;
        tracing::info!(identity = %identity, kind = ?kind, auth = record.auth.method(), "identity added");
        Ok((record, credentials))
    }

    /// Makes 32 random bytes, imports them as key `label`, and returns them in a connection
    /// string for `identity`: the only copy outside the store.
    fn import_shared_key(
        &self,
        label: &str,
        identity: &Identity,
    ) -> Result<ConnectionString, RegistryError> {
        let mut secret = [0u8; 32];
        self.rng
            .fill(&mut secret)
            .map_err(|_| RegistryError::Key(KeyError::Store("no randomness for a key".into())))?;
        let imported = self.store.import_hmac_key(label, &secret);
        let encoded = BASE64.encode(secret);
        secret.fill(0);
        imported?;
        Ok(ConnectionString::new(
            self.rules.hub_host(),
            identity,
            &encoded,
            self.rules.gateway_host(),
        ))
    }

    fn generation_id(&self) -> Result<String, RegistryError> {
        let mut bytes = [0u8; 16];
        self.rng
            .fill(&mut bytes)
            .map_err(|_| RegistryError::Key(KeyError::Store("no randomness".into())))?;
        Ok(fsutil::hex(&bytes))
    }

    fn persist(&self, records: &BTreeMap<String, Record>) -> Result<(), RegistryError> {
        let file = RegistryFile {
            version: FILE_VERSION,
            identities: records.values().map(StoredRecord::from).collect(),
        };
        let mut json = serde_json::to_vec_pretty(&file).map_err(|e| RegistryError::Corrupt {
            path: self.path.clone(),
            reason: format!("cannot serialise: {e}"),
        })?;
        json.push(b'\n');
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| RegistryError::Io {
                path: self.path.clone(),
                source,
            })?;
        }
        fsutil::write_private(&self.path, &json).map_err(|source| RegistryError::Io {
            path: self.path.clone(),
            source,
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Record>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The labels of the SAS keys of `identity` in generation `generation_id`.
fn key_labels(identity: &Identity, generation_id: &str) -> (String, String) {
    let base = format!("verge/sas/{identity}/{generation_id}");
    (format!("{base}/primary"), format!("{base}/secondary"))
}

/// A thumbprint, checked and lower-cased.
fn thumbprint(text: &str) -> Result<String, RegistryError> {
    let ok = matches!(text.len(), 40 | 64) && text.bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(RegistryError::InvalidThumbprint(
            text.chars().take(80).collect(),
        ))
    }
}

fn check_id(id: &str) -> Result<(), RegistryError> {
    validate_id(id).map_err(|e| RegistryError::InvalidId {
        id: id.chars().take(140).collect(),
        reason: e.to_string(),
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reads the registry file; a missing file is an empty registry.
fn load(path: &Path) -> Result<BTreeMap<String, Record>, RegistryError> {
    let corrupt = |reason: String| RegistryError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let Some(bytes) = fsutil::read_optional(path).map_err(|source| RegistryError::Io {
        path: path.to_path_buf(),
        source,
    })?
    else {
        return Ok(BTreeMap::new());
    };
    let file: RegistryFile =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("not a registry: {e}")))?;
    if file.version != FILE_VERSION {
        return Err(corrupt(format!(
            "version {} (this Verge reads version {FILE_VERSION})",
            file.version
        )));
    }
    let mut records = BTreeMap::new();
    for stored in file.identities {
        for id in [Some(&stored.device_id), stored.module_id.as_ref()]
            .into_iter()
            .flatten()
        {
            validate_id(id).map_err(|e| corrupt(format!("id {id:?}: {e}")))?;
        }
        let record = Record::from(stored);
        let key = record.identity.to_string();
        if records.insert(key, record.clone()).is_some() {
            return Err(corrupt(format!("{} appears twice", record.identity)));
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_are_checked_and_lower_cased() {
        let sha1 = "AB".repeat(20);
        assert_eq!(thumbprint(&sha1).expect("sha1"), "ab".repeat(20));
        assert!(thumbprint(&"0".repeat(64)).is_ok());
        assert!(thumbprint(&"0".repeat(63)).is_err());
        assert!(thumbprint(&"g".repeat(40)).is_err());
        assert!(thumbprint("").is_err());
    }

    #[test]
    fn key_labels_are_distinct_per_identity_and_generation() {
        let (p, s) = key_labels(&Identity::module("d", "m"), "g1");
        assert_eq!(p, "verge/sas/d/m/g1/primary");
        assert_eq!(s, "verge/sas/d/m/g1/secondary");
        assert_ne!(key_labels(&Identity::module("d", "m"), "g2").0, p);
    }
}
