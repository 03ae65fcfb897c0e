//! The workload API's routes, answered as IoT Edge's security daemon (aziot-edged) answers them
//! (`edgelet/api/workloadVersion_2020_07_07.yaml`; iotedge.md §5.2). Every request needs an
//! `api-version` query parameter of a known version; errors are `{"message": …}`.
//!
//! | Route | Answer |
//! |---|---|
//! | `GET /trust-bundle` | `200 {"certificate": PEM}`: the edge CA |
//! | `POST /modules/{name}/genid/{genid}/sign` `{"keyId","algo","data": base64}` | `200 {"digest": base64 HMAC-SHA256 by the module's primary key}` |
//! | `POST /modules/{name}/genid/{genid}/certificate/server` `{"commonName","expiration"?}` | `201 {"privateKey": {"type": "key", "bytes": PEM}, "certificate": PEM chain, "expiration"}` |
//!
//! `{name}` (percent-decoded, a leading `$` dropped) must be the module the socket belongs to:
//! a module acts only for itself. As in aziot-edged, `{genid}` is not compared with anything.
//! Which process may call at all is decided before a request gets here (`lib.rs`).

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::{Value, json};

/// The `api-version`s IoT Edge's workload API knows (`edgelet-http/src/version.rs`).
pub const API_VERSIONS: &[&str] = &[
    "2018-06-28",
    "2019-01-30",
    "2019-10-22",
    "2019-11-05",
    "2020-07-07",
    "2021-12-07",
    "2022-08-03",
];

/// The version Verge tells modules (`IOTEDGE_APIVERSION`).
pub const API_VERSION: &str = "2022-08-03";

/// A server certificate's lifetime when the request names no expiration.
const DEFAULT_SERVER_CERT_VALIDITY: Duration = Duration::from_secs(90 * 86_400);

/// A certificate with its private key, both PEM.
#[derive(Clone)]
pub struct IssuedServerCert {
    /// The certificate then the edge CA, PEM.
    pub certificate: String,
    /// The private key, PKCS#8 PEM.
    pub private_key: String,
    /// When the certificate expires.
    pub not_after: SystemTime,
}

impl std::fmt::Debug for IssuedServerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedServerCert")
            .field("certificate", &self.certificate)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// What answers need: the modules' keys and the edge CA.
pub trait Authority: Send + Sync + 'static {
    /// HMAC-SHA256 of `data` by module `module`'s primary key.
    fn sign(&self, module: &str, data: &[u8]) -> Result<[u8; 32], String>;
    /// The trust bundle (PEM).
    fn trust_bundle(&self) -> String;
    /// A server certificate for `names` (the first is the CN) with a new key, valid until at
    /// most `not_after`.
    fn server_certificate(
        &self,
        names: &[String],
        not_after: SystemTime,
    ) -> Result<IssuedServerCert, String>;
}

/// An answer: status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Value,
}

impl Answer {
    fn ok(status: u16, body: Value) -> Self {
        Self { status, body }
    }

    /// An error in IoT Edge's shape.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({ "message": message.into() }),
        }
    }
}

/// Answers one request on module `module`'s socket.
pub fn handle(
    authority: &dyn Authority,
    module: &str,
    method: &str,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> Answer {
    match api_version(query) {
        Some(version) if API_VERSIONS.contains(&version.as_str()) => {}
        Some(version) => return Answer::error(400, format!("Invalid API version {version:?}")),
        None => return Answer::error(400, "The api-version query parameter is required"),
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["trust-bundle"] => match method {
            "GET" => Answer::ok(200, json!({ "certificate": authority.trust_bundle() })),
            _ => not_allowed(method, path),
        },
        ["modules", name, "genid", _genid, rest @ ..] => {
            let name = percent_decode(name);
            let name = name.strip_prefix('$').unwrap_or(&name);
            if name != module.strip_prefix('$').unwrap_or(module) {
                return Answer::error(
                    403,
                    format!("Module {module:?} is not authorized to act for module {name:?}"),
                );
            }
            match (rest, method) {
                (["sign"], "POST") => sign(authority, module, body),
                (["certificate", "server"], "POST") => server_certificate(authority, module, body),
                (["sign"] | ["certificate", "server"], _) => not_allowed(method, path),
                _ => not_found(path),
            }
        }
        _ => not_found(path),
    }
}

fn not_found(path: &str) -> Answer {
    Answer::error(404, format!("No workload API route {path}"))
}

fn not_allowed(method: &str, path: &str) -> Answer {
    Answer::error(405, format!("{method} is not allowed on {path}"))
}

#[derive(Deserialize)]
struct SignRequest {
    data: String,
}

fn sign(authority: &dyn Authority, module: &str, body: &[u8]) -> Answer {
    let request: SignRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => return Answer::error(400, format!("Invalid sign request: {e}")),
    };
    let data = match BASE64.decode(request.data.as_bytes()) {
        Ok(data) => data,
        Err(e) => return Answer::error(400, format!("Invalid sign request: data: {e}")),
    };
    match authority.sign(module, &data) {
        Ok(digest) => Answer::ok(200, json!({ "digest": BASE64.encode(digest) })),
        Err(e) => Answer::error(500, format!("Could not sign for module {module:?}: {e}")),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServerCertRequest {
    common_name: String,
    #[serde(default)]
    expiration: Option<String>,
}

fn server_certificate(authority: &dyn Authority, module: &str, body: &[u8]) -> Answer {
    let request: ServerCertRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => return Answer::error(400, format!("Invalid certificate request: {e}")),
    };
    let not_after = match &request.expiration {
        None => SystemTime::now() + DEFAULT_SERVER_CERT_VALIDITY,
        Some(text) => match verge_message::time::parse_rfc3339(text) {
            Some(t) => t,
            None => {
                return Answer::error(
                    400,
                    format!("Invalid certificate request: expiration {text:?} is not RFC 3339"),
                );
            }
        },
    };
    // As aziot-edged: the CN, then the module id as a DNS name (when it is one).
    let mut names = vec![request.common_name.clone()];
    let id = module
        .strip_prefix('$')
        .unwrap_or(module)
        .to_ascii_lowercase();
    if !id.is_empty()
        && id != names[0].to_ascii_lowercase()
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        names.push(id);
    }
    match authority.server_certificate(&names, not_after) {
        Ok(cert) => Answer::ok(
            201,
            json!({
                "privateKey": { "type": "key", "bytes": cert.private_key },
                "certificate": cert.certificate,
                "expiration": verge_message::time::rfc3339(cert.not_after),
            }),
        ),
        Err(e) => Answer::error(400, format!("Could not issue the certificate: {e}")),
    }
}

/// The `api-version` query parameter, percent-decoded.
fn api_version(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "api-version")
        .map(|(_, value)| percent_decode(value))
}

/// `%XX` decoded (`+` kept: paths, not forms); invalid escapes are kept as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            // Two hex digits: at most 0xFF.
            out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake;

    impl Authority for Fake {
        fn sign(&self, module: &str, data: &[u8]) -> Result<[u8; 32], String> {
            let mut digest = [0u8; 32];
            digest[0] = data.len() as u8;
            digest[1] = module.len() as u8;
            Ok(digest)
        }
        fn trust_bundle(&self) -> String {
            "PEM".into()
        }
        fn server_certificate(
            &self,
            names: &[String],
            not_after: SystemTime,
        ) -> Result<IssuedServerCert, String> {
            Ok(IssuedServerCert {
                certificate: names.join(","),
                private_key: "KEY".into(),
                not_after,
            })
        }
    }

    const V: Option<&str> = Some("api-version=2019-01-30");

    #[test]
    fn trust_bundle_and_api_versions() {
        let answer = handle(&Fake, "m", "GET", "/trust-bundle", V, b"");
        assert_eq!(answer, Answer::ok(200, json!({"certificate": "PEM"})));
        let answer = handle(&Fake, "m", "GET", "/trust-bundle", None, b"");
        assert_eq!(answer.status, 400);
        let answer = handle(
            &Fake,
            "m",
            "GET",
            "/trust-bundle",
            Some("api-version=1999-01-01"),
            b"",
        );
        assert_eq!(answer.status, 400);
        assert!(answer.body["message"].as_str().unwrap().contains("1999"));
        assert_eq!(
            handle(&Fake, "m", "POST", "/trust-bundle", V, b"").status,
            405
        );
        assert_eq!(handle(&Fake, "m", "GET", "/nothing", V, b"").status, 404);
    }

    #[test]
    fn sign_answers_for_the_sockets_module_only() {
        let body = br#"{"keyId":"primary","algo":"HMACSHA256","data":"aGVsbG8="}"#;
        let answer = handle(
            &Fake,
            "filter",
            "POST",
            "/modules/filter/genid/7/sign",
            V,
            body,
        );
        assert_eq!(answer.status, 200, "{answer:?}");
        let digest = BASE64
            .decode(answer.body["digest"].as_str().unwrap())
            .unwrap();
        assert_eq!((digest[0], digest[1]), (5, 6));
        // Percent-encoded and `$`-prefixed names are the same module.
        let answer = handle(
            &Fake,
            "$edgeHub",
            "POST",
            "/modules/%24edgeHub/genid/1/sign",
            V,
            body,
        );
        assert_eq!(answer.status, 200, "{answer:?}");
        // Another module's name: refused.
        let answer = handle(
            &Fake,
            "filter",
            "POST",
            "/modules/sensor/genid/7/sign",
            V,
            body,
        );
        assert_eq!(answer.status, 403);
        // Bad bodies.
        for bad in [&b"{}"[..], b"not json", br#"{"data":"***"}"#] {
            let answer = handle(
                &Fake,
                "filter",
                "POST",
                "/modules/filter/genid/7/sign",
                V,
                bad,
            );
            assert_eq!(answer.status, 400, "{answer:?}");
        }
        let answer = handle(
            &Fake,
            "filter",
            "GET",
            "/modules/filter/genid/7/sign",
            V,
            body,
        );
        assert_eq!(answer.status, 405);
    }

    #[test]
    fn server_certificates_name_the_cn_and_the_module() {
        let body = br#"{"commonName":"myhost","expiration":"2030-01-01T00:00:00Z"}"#;
        let answer = handle(
            &Fake,
            "filter",
            "POST",
            "/modules/filter/genid/7/certificate/server",
            V,
            body,
        );
        assert_eq!(answer.status, 201, "{answer:?}");
        assert_eq!(answer.body["certificate"], "myhost,filter");
        assert_eq!(answer.body["privateKey"]["type"], "key");
        assert_eq!(answer.body["expiration"], "2030-01-01T00:00:00.000Z");
        let bad = br#"{"commonName":"myhost","expiration":"tomorrow"}"#;
        let answer = handle(
            &Fake,
            "filter",
            "POST",
            "/modules/filter/genid/7/certificate/server",
            V,
            bad,
        );
        assert_eq!(answer.status, 400);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("%24edgeHub"), "$edgeHub");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
