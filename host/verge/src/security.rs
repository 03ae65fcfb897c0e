//! The daemon's security set-up: the key store, the identity registry, the edge CA and the hub's
//! server certificate, and the MQTT listeners that use them.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use tokio::net::TcpListener;
use verge_hub::Hub;
use verge_identity::{FileKeyStore, KeyStore, Pkcs11KeyStore, Registry};
use verge_mqtt::{Broker, BrokerOptions, RegistryAuthenticator};
use verge_tls::{ClientAuth, EdgeCa, ServerCert, ServerCertResolver};
use verge_twin::TwinStore;

use crate::config::Config;

/// What the rest of the daemon needs from the set-up.
pub struct Security {
    /// The identity registry.
    pub registry: Arc<Registry>,
    /// The edge CA certificate, PEM.
    pub trust_bundle: Arc<str>,
}

/// The key store the configuration names: a PKCS#11 token, else files in the data directory.
fn key_store(config: &Config, data_dir: &Path) -> anyhow::Result<Arc<dyn KeyStore>> {
    let keys = &config.keys;
    Ok(match (&keys.pkcs11_library, &keys.pkcs11_uri) {
        (Some(library), Some(uri)) => Arc::new(
            Pkcs11KeyStore::open(library, uri)
                .with_context(|| format!("opening the PKCS#11 token ({})", library.display()))?,
        ),
        (None, None) => Arc::new(
            FileKeyStore::open(data_dir.join("keys")).context("opening the key directory")?,
        ),
        _ => bail!("[keys] needs both pkcs11_library and pkcs11_uri"),
    })
}

/// Open the registry and certificates, and start the MQTT listeners the configuration asks for.
pub async fn start(
    config: &Config,
    data_dir: &Path,
    hub: &Arc<Hub>,
    twins: &Arc<TwinStore>,
) -> anyhow::Result<Security> {
    let store = key_store(config, data_dir)?;
    let registry = Registry::open(
        data_dir.join("identities.json"),
        Arc::clone(&store),
        config.iothub_hostname(),
        &config.device_id,
    )
    .context("opening the identity registry")?
    .with_gateway_host_name(&config.hostname);
    registry
        .ensure_edge_device()
        .context("creating the edge device's identity")?;
    let registry = Arc::new(registry);

    let certs = data_dir.join("certs");
    let ca = EdgeCa::load_or_create(
        store,
        &certs,
        &format!("Verge edge CA ({})", config.device_id),
    )
    .context("the edge CA")?;
    let mut hostnames = vec![config.hostname.clone()];
    if !config.mqtt.bind.is_unspecified() {
        hostnames.push(config.mqtt.bind.to_string());
    }
    let server = ServerCert::load_or_issue(&ca, &certs, &hostnames)
        .context("the hub's server certificate")?;
    let client_auth = Arc::new(
        ClientAuth::new([ca.certificate_der().clone()]).context("client certificate checks")?,
    );
    let tls = verge_tls::server_config(
        Arc::new(ServerCertResolver::new(&server)),
        Some(Arc::clone(&client_auth)),
    )
    .context("the TLS configuration")?;

    let auth = RegistryAuthenticator::new(Arc::clone(&registry), Some(client_auth));
    let broker = Broker::new(
        Arc::clone(hub),
        Arc::clone(twins),
        Arc::new(auth),
        BrokerOptions::default(),
    );
    let mqtt = &config.mqtt;
    if mqtt.tls_port != 0 {
        let addr = SocketAddr::new(mqtt.bind, mqtt.tls_port);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("MQTT over TLS: cannot listen on {addr}"))?;
        tracing::info!(%addr, "MQTT over TLS listening");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        tokio::spawn(Arc::clone(&broker).serve_tls(listener, acceptor));
    }
    if mqtt.plain_port != 0 {
        let addr = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), mqtt.plain_port);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("plain MQTT: cannot listen on {addr}"))?;
        tracing::info!(%addr, "plain MQTT listening (loopback only)");
        tokio::spawn(Arc::clone(&broker).serve_plain(listener));
    }
    Ok(Security {
        registry,
        trust_bundle: ca.trust_bundle_pem().into(),
    })
}
