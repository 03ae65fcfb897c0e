//! Who a client is: the CONNECT credentials, checked by an [`Authenticator`].
//!
//! The MQTT front knows IoT Hub's CONNECT rules (client id, username); whether a SAS token or a
//! certificate proves an identity is the identity registry's business, behind this trait;
//! [`RegistryAuthenticator`] is the daemon's implementation.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_rustls::rustls::pki_types::CertificateDer;
use verge_identity::sas::MAX_CLOCK_SKEW_SECS;
use verge_identity::{AuthError, Registry};
use verge_message::Identity;
use verge_tls::ClientAuth;

/// What a client presented in CONNECT and the TLS handshake.
#[derive(Debug)]
pub struct Credentials<'a> {
    /// The identity the username names.
    pub identity: &'a Identity,
    /// The password: a SAS token, or empty with a client certificate.
    pub password: Option<&'a str>,
    /// The client certificate chain (DER, end-entity first), when TLS carried one.
    pub certificates: &'a [Vec<u8>],
}

/// How a client proved its identity (`connectionAuthMethod`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// A SAS token signed with the identity's key; the connection may last until `valid_until`
    /// (Unix seconds: the token's expiry plus the allowed clock skew), as IoT Hub's does.
    Sas {
        /// When the session must end.
        valid_until: u64,
    },
    /// A client certificate whose thumbprint is registered.
    X509Thumbprint,
    /// A client certificate chained to a trusted CA, with CN = the device id.
    X509Ca,
}

impl AuthMethod {
    /// The name IoT Hub uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sas { .. } => "sasToken",
            Self::X509Thumbprint => "selfSigned",
            Self::X509Ca => "certificateAuthority",
        }
    }
}

/// Why a client was refused; the CONNACK says only "bad credentials" or "not authorised".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Unknown identity, bad or expired token, wrong certificate.
    #[error("bad credentials: {0}")]
    BadCredentials(String),
    /// The identity exists but may not connect here.
    #[error("not authorised: {0}")]
    NotAuthorised(String),
}

/// Checks CONNECT credentials.
pub trait Authenticator: Send + Sync + fmt::Debug {
    /// The method that proved `credentials.identity`, or why it was refused.
    fn authenticate(&self, credentials: &Credentials<'_>) -> Result<AuthMethod, Refused>;

    /// Whether `identity` is a child edge device: its connection carries its modules' messages
    /// too, each naming its module (`$.cmid`).
    fn is_child_edge(&self, identity: &Identity) -> bool {
        let _ = identity;
        false
    }

    /// Whether device `device_id` is registered here (a child edge device may not act for it).
    fn is_registered_device(&self, device_id: &str) -> bool {
        let _ = device_id;
        false
    }

    /// The clients registered here that connect to this device over MQTT: leaf devices and
    /// modules run elsewhere (`false`), child edge devices (`true`). The upstream link acts for
    /// them at the parent.
    fn downstream_clients(&self) -> Vec<(Identity, bool)> {
        Vec::new()
    }
}

/// The daemon's authenticator: SAS tokens and client certificates checked against the identity
/// registry; certificate chains against the TLS listener's trusted CAs.
#[derive(Debug)]
pub struct RegistryAuthenticator {
    registry: Arc<Registry>,
    client_auth: Option<Arc<ClientAuth>>,
}

impl RegistryAuthenticator {
    /// Check clients against `registry`; certificates with `client_auth` (the verifier the TLS
    /// listener uses; `None` refuses every certificate).
    pub fn new(registry: Arc<Registry>, client_auth: Option<Arc<ClientAuth>>) -> Self {
        Self {
            registry,
            client_auth,
        }
    }

    fn certificate(&self, identity: &Identity, chain: &[Vec<u8>]) -> Result<AuthMethod, Refused> {
        let bad = |why: String| Refused::BadCredentials(why);
        let Some((end_entity, intermediates)) = chain.split_first() else {
            return Err(bad("neither a SAS token nor a client certificate".into()));
        };
        let Some(client_auth) = &self.client_auth else {
            return Err(bad("client certificates are not accepted here".into()));
        };
        let intermediates: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        let cert = client_auth
            .identify(&CertificateDer::from(end_entity.as_slice()), &intermediates)
            .map_err(|e| bad(format!("client certificate: {e}")))?;
        let now = SystemTime::now();
        if now < cert.not_before || now > cert.not_after {
            return Err(bad(
                "the client certificate is outside its validity period".into()
            ));
        }
        match self
            .registry
            .authenticate_x509(identity, end_entity, cert.common_name.as_deref())
        {
            Ok(verge_identity::AuthMethod::X509Ca) if !cert.chained_to_trusted_ca => Err(bad(
                "the client certificate is not issued by a trusted CA".into(),
            )),
            Ok(verge_identity::AuthMethod::X509Ca) => Ok(AuthMethod::X509Ca),
            Ok(_) => Ok(AuthMethod::X509Thumbprint),
            Err(e) => Err(refusal(e)),
        }
    }
}

/// An unknown identity or a wrong secret is "bad credentials"; a store failure is not the
/// client's fault but still refuses it.
fn refusal(e: AuthError) -> Refused {
    match e {
        AuthError::WrongAuthMethod { .. } => Refused::NotAuthorised(e.to_string()),
        other => Refused::BadCredentials(other.to_string()),
    }
}

impl Authenticator for RegistryAuthenticator {
    fn is_child_edge(&self, identity: &Identity) -> bool {
        identity.module_id().is_none()
            && self
                .registry
                .get(identity)
                .is_some_and(|r| r.kind == verge_identity::IdentityKind::ChildEdgeDevice)
    }

    fn is_registered_device(&self, device_id: &str) -> bool {
        self.registry.contains(&Identity::device(device_id))
    }

    fn downstream_clients(&self) -> Vec<(Identity, bool)> {
        use verge_identity::IdentityKind;
        self.registry
            .list()
            .into_iter()
            .filter_map(|r| match r.kind {
                IdentityKind::LeafDevice | IdentityKind::ExternalModule => {
                    Some((r.identity, false))
                }
                IdentityKind::ChildEdgeDevice => Some((r.identity, true)),
                _ => None,
            })
            .collect()
    }

    fn authenticate(&self, credentials: &Credentials<'_>) -> Result<AuthMethod, Refused> {
        match credentials.password {
            Some(token) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                self.registry
                    .authenticate_sas(credentials.identity, token, now)
                    .map(|method| match method {
                        verge_identity::AuthMethod::Sas { expiry, .. } => AuthMethod::Sas {
                            valid_until: expiry.saturating_add(MAX_CLOCK_SKEW_SECS),
                        },
                        _ => AuthMethod::Sas {
                            valid_until: u64::MAX,
                        },
                    })
                    .map_err(refusal)
            }
            None => self.certificate(credentials.identity, credentials.certificates),
        }
    }
}
