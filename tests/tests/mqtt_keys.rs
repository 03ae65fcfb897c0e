//! Keys and certificates end to end: a daemon whose keys live in a SoftHSM2 token serves MQTT
//! over TLS (its server key signs inside the token), and leaf devices authenticate with X.509
//! client certificates (thumbprint and CA-signed), made by `openssl` as a device owner would.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Output;

use serde_json::json;
use verge_tests::certs::{self_signed, signed_by, thumbprint};
use verge_tests::daemon::{Daemon, deployment};
use verge_tests::mqtt::{self, output_text as text};
use verge_tests::softhsm::SoftHsm;

const API: &str = "api-version=2021-04-12";

fn upstream_everything(daemon: &Daemon) {
    let manifest = deployment(
        json!({}),
        json!({ "all": "FROM /messages/* INTO $upstream" }),
        json!({}),
    );
    let out = daemon.deploy("everything", &manifest);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `mosquitto_pub` over TLS to `ip`:8883 trusting `ca`; `auth` adds -P or --cert/--key.
fn publish_tls(ip: &str, ca: &Path, client: &str, auth: &[&str], body: &str) -> Output {
    let (ca, user) = (ca.display().to_string(), format!("{ip}/{client}/?{API}"));
    let topic = format!("devices/{client}/messages/events/");
    let mut args = vec![
        "-h", ip, "-p", "8883", "--cafile", &ca, "-i", client, "-u", &user,
    ];
    args.extend_from_slice(auth);
    args.extend_from_slice(&["-t", &topic, "-m", body]);
    mqtt::mosquitto_pub(&args)
}

#[test]
fn a_daemon_with_keys_in_a_pkcs11_token_serves_tls_and_keeps_them_across_restarts() {
    let hsm = SoftHsm::new();
    let ip = mqtt::loopback_ip();
    let config = format!(
        "{}[keys]\npkcs11_library = \"{}\"\npkcs11_uri = \"{}\"\n",
        mqtt::config(&ip, 0),
        SoftHsm::library().display(),
        hsm.uri()
    );
    let (var, conf) = hsm.env();
    let mut daemon = Daemon::start_with_env("mqtt-pkcs11", &config, None, &[(var, conf)]);
    upstream_everything(&daemon);
    assert!(
        !daemon.data_dir().join("keys").exists(),
        "keys were written to files"
    );
    let leaf = daemon
        .cli_ok(&["identity", "add", "device", "leaf1"])
        .trim()
        .to_owned();
    let bundle = daemon.cli_ok(&["trust-bundle"]);
    let ca = daemon.dir().join("ca.pem");
    std::fs::write(&ca, &bundle).unwrap();

    let token = mqtt::token(&leaf, 600);
    let out = publish_tls(&ip, &ca, "leaf1", &["-P", &token], r#"{"n":1}"#);
    assert!(out.status.success(), "{}\n{}", text(&out), daemon.log());
    let up = daemon.monitor(1, 10.0, true);
    assert_eq!(up.len(), 1, "{}", daemon.log());
    assert_eq!(up[0]["systemProperties"]["connectionDeviceId"], "leaf1");

    // Restart: the CA, the server key and the leaf's key all come back from the token.
    daemon.restart();
    assert_eq!(daemon.cli_ok(&["trust-bundle"]), bundle);
    let out = publish_tls(
        &ip,
        &ca,
        "leaf1",
        &["-P", &mqtt::token(&leaf, 600)],
        r#"{"n":2}"#,
    );
    assert!(out.status.success(), "{}\n{}", text(&out), daemon.log());
    // A client that does not trust the edge CA refuses the server.
    let other = daemon.dir().join("other-ca.pem");
    let (cert, _) = self_signed(daemon.dir(), "someone-else");
    std::fs::copy(daemon.dir().join(cert), &other).unwrap();
    let out = publish_tls(&ip, &other, "leaf1", &["-P", &mqtt::token(&leaf, 600)], "x");
    assert!(!out.status.success(), "{}", text(&out));
}

#[test]
fn leaf_devices_authenticate_with_thumbprints_and_ca_signed_certificates() {
    let ip = mqtt::loopback_ip();
    let certs = std::env::temp_dir().join(format!("verge-x509-{}-{}", std::process::id(), ip));
    let _ = std::fs::remove_dir_all(&certs);
    std::fs::create_dir_all(&certs).unwrap();
    // The device owner's CA, trusted for client certificates; and a CA nobody trusts.
    let _ = self_signed(&certs, "owner-ca");
    std::fs::rename(certs.join("owner-ca.pem"), certs.join("owner.pem")).unwrap();
    std::fs::rename(certs.join("owner-ca.key"), certs.join("owner.key")).unwrap();
    let _ = self_signed(&certs, "rogue-ca");
    std::fs::rename(certs.join("rogue-ca.pem"), certs.join("rogue.pem")).unwrap();
    std::fs::rename(certs.join("rogue-ca.key"), certs.join("rogue.key")).unwrap();
    let config = format!(
        "{}client_ca_file = \"{}\"\n",
        mqtt::config(&ip, 0),
        certs.join("owner.pem").display()
    );
    let daemon = Daemon::start("mqtt-x509", &config, None);
    upstream_everything(&daemon);
    let ca = daemon.dir().join("ca.pem");
    std::fs::write(&ca, daemon.cli_ok(&["trust-bundle"])).unwrap();
    let with_cert = |cert: &str, key: &str| -> Vec<String> {
        let (c, k) = (certs.join(cert), certs.join(key));
        vec![
            "--cert".into(),
            c.display().to_string(),
            "--key".into(),
            k.display().to_string(),
        ]
    };
    let publish = |client: &str, cert: &str, key: &str| {
        let args = with_cert(cert, key);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        publish_tls(
            &ip,
            &ca,
            client,
            &args,
            &format!(r#"{{"from":"{client}"}}"#),
        )
    };

    // Thumbprint identity: a self-signed certificate registered by its SHA-256 thumbprint.
    let (cert, key) = self_signed(&certs, "thumb1");
    let print = thumbprint(&certs, &cert);
    daemon.cli_ok(&[
        "identity",
        "add",
        "device",
        "thumb1",
        "--thumbprint",
        &print,
    ]);
    let out = publish("thumb1", &cert, &key);
    assert!(out.status.success(), "{}\n{}", text(&out), daemon.log());
    // Another self-signed certificate with the same CN is not that identity.
    let (cert2, key2) = self_signed(&certs, "thumb1-impostor");
    std::fs::rename(certs.join(&cert2), certs.join("impostor.pem")).unwrap();
    let out = publish("thumb1", "impostor.pem", &key2);
    assert!(!out.status.success(), "impostor accepted: {}", text(&out));

    // CA identity: CN = the device id, issued by a trusted CA.
    let (cert, key) = signed_by(&certs, "owner", "ca1");
    daemon.cli_ok(&["identity", "add", "device", "ca1", "--ca"]);
    let out = publish("ca1", &cert, &key);
    assert!(out.status.success(), "{}\n{}", text(&out), daemon.log());
    // The same CN from a CA nobody trusts fails the TLS handshake.
    std::fs::rename(certs.join(&cert), certs.join("ca1-owner.pem")).unwrap();
    let (cert, key) = signed_by(&certs, "rogue", "ca1");
    let out = publish("ca1", &cert, &key);
    assert!(!out.status.success(), "rogue CA accepted: {}", text(&out));
    // A trusted certificate for another device id is not ca1.
    let (cert, key) = signed_by(&certs, "owner", "ca2");
    let out = publish("ca1", &cert, &key);
    assert!(!out.status.success(), "wrong CN accepted: {}", text(&out));

    let up = daemon.monitor(2, 10.0, true);
    let from: Vec<&str> = up
        .iter()
        .filter_map(|m| m["systemProperties"]["connectionDeviceId"].as_str())
        .collect();
    assert_eq!(from, ["thumb1", "ca1"], "{}", daemon.log());
    let _ = std::fs::remove_dir_all(&certs);
}
