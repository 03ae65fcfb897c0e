//! The daemon's security set-up: the key store, the identity registry, the edge CA and the hub's
//! server certificate, and the MQTT listeners (and the HTTPS endpoint of direct methods) that use
//! them.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use tokio::net::TcpListener;
use verge_hub::Hub;
use verge_identity::{FileKeyStore, KeyStore, Pkcs11KeyStore, Registry};
use verge_mqtt::{Authenticator, Broker, BrokerOptions, RegistryAuthenticator};
use verge_tls::{ClientAuth, EdgeCa, ServerCert, ServerCertResolver};
use verge_twin::TwinStore;

use crate::config::Config;

/// What the rest of the daemon needs from the set-up.
pub struct Security {
    /// The identity registry.
    pub registry: Arc<Registry>,
    /// The edge CA certificate, PEM.
    pub trust_bundle: Arc<str>,
    /// The edge CA (the workload API issues module server certificates from it).
    pub ca: EdgeCa,
    /// The MQTT front.
    pub broker: Arc<Broker>,
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
        Arc::clone(&store),
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
    let mut trusted = vec![ca.certificate_der().clone()];
    if let Some(file) = &config.mqtt.client_ca_file {
        let pem = std::fs::read_to_string(file)
            .with_context(|| format!("[mqtt] client_ca_file {}", file.display()))?;
        trusted.extend(
            verge_tls::certs_from_pem(&pem)
                .with_context(|| format!("[mqtt] client_ca_file {}", file.display()))?,
        );
    }
    let client_auth = Arc::new(ClientAuth::new(trusted).context("client certificate checks")?);
    let tls = verge_tls::server_config(
        Arc::new(ServerCertResolver::new(&server)),
        Some(Arc::clone(&client_auth)),
    )
    .context("the TLS configuration")?;

    let auth: Arc<dyn Authenticator> = Arc::new(RegistryAuthenticator::new(
        Arc::clone(&registry),
        Some(client_auth),
    ));
    let broker = Broker::new(
        Arc::clone(hub),
        Arc::clone(twins),
        Arc::clone(&auth),
        BrokerOptions::default(),
    );
    let mqtt = &config.mqtt;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    if mqtt.tls_port != 0 {
        let addr = SocketAddr::new(mqtt.bind, mqtt.tls_port);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("MQTT over TLS: cannot listen on {addr}"))?;
        tracing::info!(%addr, "MQTT over TLS listening");
        tokio::spawn(Arc::clone(&broker).serve_tls(listener, acceptor.clone()));
    }
    if mqtt.https_port != 0 {
        let addr = SocketAddr::new(mqtt.bind, mqtt.https_port);
        match TcpListener::bind(addr).await {
            Ok(listener) => {
                tracing::info!(%addr, "HTTPS (direct methods) listening");
                tokio::spawn(verge_mqtt::serve_https(
                    Arc::clone(hub),
                    auth,
                    listener,
                    acceptor,
                ));
            }
            // 443 needs root or CAP_NET_BIND_SERVICE: a daemon run as a user (the quickstart)
            // still starts, without this endpoint.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => tracing::warn!(
                %addr,
                "HTTPS (direct methods) is off: cannot listen on {addr}: {e} (a port below 1024 \
                 needs root or CAP_NET_BIND_SERVICE; set [mqtt] https_port, 0 = off)"
            ),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("HTTPS (direct methods): cannot listen on {addr}"));
            }
        }
    }
    if mqtt.plain_port != 0 {
        let addr = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), mqtt.plain_port);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("plain MQTT: cannot listen on {addr}"))?;
        tracing::info!(%addr, "plain MQTT listening (loopback only)");
        tokio::spawn(Arc::clone(&broker).serve_plain(listener));
    }
    if let Some(upstream) = &config.upstream {
        let options = upstream_options(config, upstream, &store)?;
        verge_mqtt::upstream::check(&options).map_err(|e| anyhow::anyhow!("[upstream]: {e}"))?;
        tracing::info!(parent = %options.endpoint, port = options.port, "upstream link starting");
        tokio::spawn(verge_mqtt::upstream::run(Arc::clone(&broker), options));
    }
    Ok(Security {
        registry,
        trust_bundle: ca.trust_bundle_pem().into(),
        ca,
        broker,
    })
}

/// The label of the edge device's own key (from the upstream connection string) in the store.
const UPSTREAM_KEY: &str = "upstream-device";

/// The upstream link's options; imports the connection string's key into the key store.
fn upstream_options(
    config: &Config,
    upstream: &crate::config::UpstreamSection,
    store: &Arc<dyn KeyStore>,
) -> anyhow::Result<verge_mqtt::upstream::UpstreamOptions> {
    use base64::Engine as _;
    let cs = verge_mqtt::upstream::ConnectionString::parse(&upstream.connection_string)?;
    if cs.device_id != config.device_id {
        bail!(
            "[upstream] connection_string is for device {:?}, but device_id is {:?}: set device_id = {:?}",
            cs.device_id,
            config.device_id,
            cs.device_id
        );
    }
    let auth = match (
        &cs.shared_access_key,
        &upstream.certificate,
        &upstream.private_key,
    ) {
        (_, Some(certificate), Some(private_key)) => {
            let read = |path: &std::path::PathBuf| {
                std::fs::read_to_string(path)
                    .with_context(|| format!("[upstream] reading {}", path.display()))
            };
            let chain = verge_tls::certs_from_pem(&read(certificate)?)
                .with_context(|| format!("[upstream] certificate {}", certificate.display()))?;
            if chain.is_empty() {
                bail!(
                    "[upstream] certificate {} holds no certificate",
                    certificate.display()
                );
            }
            let key = verge_tls::private_key_from_pem(&read(private_key)?)
                .with_context(|| format!("[upstream] private_key {}", private_key.display()))?;
            verge_mqtt::upstream::UpstreamAuth::X509 { chain, key }
        }
        (_, Some(_), None) | (_, None, Some(_)) => {
            bail!("[upstream] certificate and private_key go together")
        }
        (Some(key), None, None) => {
            let key = base64::engine::general_purpose::STANDARD
                .decode(key)
                .context("[upstream] connection_string: SharedAccessKey is not base64")?;
            if store.exists(UPSTREAM_KEY)? {
                store.delete(UPSTREAM_KEY)?;
            }
            store
                .import_hmac_key(UPSTREAM_KEY, &key)
                .context("importing the upstream device key into the key store")?;
            verge_mqtt::upstream::UpstreamAuth::Sas {
                keys: Arc::clone(store),
                key_label: UPSTREAM_KEY.into(),
            }
        }
        (None, None, None) => {
            bail!("[upstream] connection_string has x509=true: set certificate and private_key")
        }
    };
    let pem = std::fs::read_to_string(&upstream.trust_bundle).with_context(|| {
        format!(
            "reading the upstream trust bundle {}",
            upstream.trust_bundle.display()
        )
    })?;
    let trust_bundle = verge_tls::certs_from_pem(&pem)
        .with_context(|| format!("{} is not PEM", upstream.trust_bundle.display()))?;
    Ok(verge_mqtt::upstream::UpstreamOptions {
        endpoint: cs.endpoint().to_owned(),
        port: upstream.port,
        hub_host_name: cs.host_name.clone(),
        device_id: cs.device_id.clone(),
        auth,
        trust_bundle,
        act_for_clients: upstream.parent == crate::config::ParentKind::Verge,
    })
}
