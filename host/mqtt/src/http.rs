//! Direct methods over HTTPS: the endpoint on IoT Hub's port 443 that the SDKs' `invoke_method`
//! calls (edgeHub's `TwinsController`).
//!
//! - `POST /twins/{deviceId}/methods` and `POST /twins/{deviceId}/modules/{moduleId}/methods`
//!   (ids URL-encoded, any `api-version`), body `{"methodName": "...", "payload": <json>,
//!   "responseTimeoutInSeconds": n, "connectTimeoutInSeconds": n}`.
//! - The caller proves who it is with `Authorization: SharedAccessSignature sr=…`, a SAS token of
//!   its own identity: the identity is `x-ms-edge-moduleId: {device}/{module}` when the SDK sends
//!   it, else the token's audience (`{host}/devices/{d}[/modules/{m}]`); the [`Authenticator`]
//!   checks the token for it. Without an `Authorization` header, a client certificate on the TLS
//!   connection proves the identity `x-ms-edge-moduleId` names.
//! - The target is invoked through the hub's method registry, so wasm modules and MQTT clients
//!   answer alike. `200 {"status": <the method's status>, "payload": <json>}` when it answered
//!   (a payload that is not JSON comes back as a JSON string); otherwise IoT Hub's statuses with
//!   `{"message": "..."}`: 400 bad request, 401 bad credentials, 404 target not connected (or no
//!   such resource), 405, 413 body too large, 504 no answer in time.
//! - Bounded: request bodies ([`MAX_BODY`]), connections at once, handshake, header and body
//!   deadlines; the method's answer waits at most 300 s (IoT Hub's limit).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};
use verge_hub::{Hub, MethodError};
use verge_identity::SasToken;
use verge_identity::sas::url_decode;
use verge_message::Identity;

use crate::auth::{Authenticator, Credentials, Refused};

/// Largest request body accepted.
const MAX_BODY: usize = 128 * 1024;
/// Connections served at once; the listener waits for one to end beyond that.
const MAX_CONNECTIONS: usize = 256;
/// Time for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a request's headers to arrive (also closes idle keep-alive connections).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Time for a request's body to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// `responseTimeoutInSeconds` when the request has none (IoT Hub's default).
const DEFAULT_RESPONSE_TIMEOUT: u64 = 30;
/// The longest `responseTimeoutInSeconds` and `connectTimeoutInSeconds` (IoT Hub's limit).
const MAX_TIMEOUT: u64 = 300;
/// How often a call waiting for its target to connect (`connectTimeoutInSeconds`) tries again.
const CONNECT_POLL: Duration = Duration::from_millis(250);
/// The header in which the SDKs name the calling module, `{device}/{module}`.
const EDGE_MODULE_ID: &str = "x-ms-edge-moduleid";

/// Why a request was not answered with the method's result.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("no such resource: {0}")]
    NoRoute(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("only POST is allowed here")]
    MethodNotAllowed,
    #[error("the request body is larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Method(#[from] MethodError),
}

impl Failure {
    fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute(_) => StatusCode::NOT_FOUND,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Method(e) => {
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }
}

/// What every connection shares.
#[derive(Debug)]
struct Endpoint {
    hub: Arc<Hub>,
    auth: Arc<dyn Authenticator>,
}

/// Serve direct-method invocations over HTTPS on `listener` until it fails, checking callers
/// with `auth` (the MQTT listener's authenticator) and TLS with `acceptor` (its TLS set-up).
pub async fn serve_https(
    hub: Arc<Hub>,
    auth: Arc<dyn Authenticator>,
    listener: TcpListener,
    acceptor: TlsAcceptor,
) {
    let endpoint = Arc::new(Endpoint { hub, auth });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!("HTTPS accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            debug!("TCP_NODELAY: {e}");
        }
        let endpoint = Arc::clone(&endpoint);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    debug!(%peer, "HTTPS: TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    debug!(%peer, "HTTPS: TLS handshake timed out");
                    return;
                }
            };
            let certificates: Vec<Vec<u8>> = tls
                .get_ref()
                .1
                .peer_certificates()
                .map(|chain| chain.iter().map(|c| c.as_ref().to_vec()).collect())
                .unwrap_or_default();
            serve_connection(endpoint, tls, Arc::new(certificates), peer.to_string()).await;
        });
    }
}

/// HTTP/1.1 on one (TLS) connection until either side closes it.
async fn serve_connection<S>(
    endpoint: Arc<Endpoint>,
    stream: S,
    certificates: Arc<Vec<Vec<u8>>>,
    peer: String,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let endpoint = Arc::clone(&endpoint);
        let certificates = Arc::clone(&certificates);
        async move { Ok::<_, Infallible>(endpoint.handle(req, &certificates).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        debug!(%peer, "HTTPS connection ended: {e}");
    }
}

impl Endpoint {
    async fn handle(
        &self,
        req: Request<Incoming>,
        certificates: &[Vec<u8>],
    ) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        match self.invoke(req, certificates).await {
            Ok(answer) => reply(StatusCode::OK, &answer),
            Err(failure) => {
                let status = failure.status();
                match &failure {
                    Failure::Unauthorized(_) => info!(%path, "HTTPS request refused: {failure}"),
                    _ => debug!(%path, status = status.as_u16(), "HTTPS request failed: {failure}"),
                }
                reply(status, &json!({"message": failure.to_string()}))
            }
        }
    }

    async fn invoke(
        &self,
        req: Request<Incoming>,
        certificates: &[Vec<u8>],
    ) -> Result<Value, Failure> {
        let target = route(req.uri().path())?;
        let caller = self.caller(req.headers(), certificates)?;
        if req.method() != Method::POST {
            return Err(Failure::MethodNotAllowed);
        }
        let body = read_body(req.into_body()).await?;
        let call = MethodRequest::parse(&body)?;
        let payload = call.payload.to_string();
        debug!(%caller, %target, method = %call.name, "invoking a direct method");
        let methods = self.hub.methods();
        let connect_deadline = tokio::time::Instant::now() + call.connect_timeout;
        let answer = loop {
            match methods
                .invoke(&target, &call.name, &payload, call.response_timeout)
                .await
            {
                Err(MethodError::NotConnected(_))
                    if tokio::time::Instant::now() + CONNECT_POLL <= connect_deadline =>
                {
                    tokio::time::sleep(CONNECT_POLL).await;
                }
                other => break other?,
            }
        };
        debug!(%caller, %target, method = %call.name, status = answer.status, "direct method answered");
        let payload = match answer.payload.trim() {
            "" => Value::Null,
            text => serde_json::from_str(text).unwrap_or(Value::String(answer.payload)),
        };
        Ok(json!({"status": answer.status, "payload": payload}))
    }

    /// Who is calling, proved by a SAS token or a client certificate.
    fn caller(&self, headers: &HeaderMap, certificates: &[Vec<u8>]) -> Result<Identity, Failure> {
        let unauthorized = |why: String| Failure::Unauthorized(why);
        let named = match headers.get(EDGE_MODULE_ID) {
            Some(value) => Some(
                value
                    .to_str()
                    .ok()
                    .and_then(parse_module_header)
                    .ok_or_else(|| {
                        Failure::BadRequest(format!(
                            "{EDGE_MODULE_ID} must be {{deviceId}}/{{moduleId}}"
                        ))
                    })?,
            ),
            None => None,
        };
        let (identity, password) = match headers.get(AUTHORIZATION) {
            Some(value) => {
                let token = value
                    .to_str()
                    .map_err(|_| unauthorized("the Authorization header is not text".into()))?;
                let identity = match named {
                    Some(identity) => identity,
                    None => {
                        let parsed = SasToken::parse(token)
                            .map_err(|e| unauthorized(format!("Authorization: {e}")))?;
                        audience_identity(&parsed.audience()).ok_or_else(|| {
                            unauthorized(
                                "the SAS token's audience names no device or module".into(),
                            )
                        })?
                    }
                };
                (identity, Some(token))
            }
            None if certificates.is_empty() => {
                return Err(unauthorized(
                    "neither an Authorization header nor a client certificate".into(),
                ));
            }
            None => {
                let identity = named.ok_or_else(|| {
                    unauthorized(format!(
                        "a client certificate needs the {EDGE_MODULE_ID} header to name the caller"
                    ))
                })?;
                (identity, None)
            }
        };
        let credentials = Credentials {
            identity: &identity,
            password,
            certificates: if password.is_some() {
                &[]
            } else {
                certificates
            },
        };
        match self.auth.authenticate(&credentials) {
            Ok(_) => Ok(identity),
            Err(Refused::BadCredentials(why) | Refused::NotAuthorised(why)) => {
                Err(unauthorized(format!("{identity}: {why}")))
            }
        }
    }
}

/// The JSON answer.
fn reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// The target of `/twins/{d}/methods` or `/twins/{d}/modules/{m}/methods`.
fn route(path: &str) -> Result<Identity, Failure> {
    let no_route = || Failure::NoRoute(path.chars().take(200).collect());
    let trimmed = path.strip_prefix('/').ok_or_else(no_route)?;
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    let segments: Vec<&str> = trimmed.split('/').collect();
    let id = |s: &str| percent_decode(s).filter(|id| !id.is_empty());
    match segments.as_slice() {
        ["twins", device, "methods"] => id(device).map(|d| Identity::device(&d)),
        ["twins", device, "modules", module, "methods"] => id(device)
            .zip(id(module))
            .map(|(d, m)| Identity::module(&d, &m)),
        _ => None,
    }
    .ok_or_else(no_route)
}

/// `%XX` escapes decoded (a `+` stays a `+`: this is a path); `None` if the result is not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |at: usize| bytes.get(at).and_then(|&h| (h as char).to_digit(16));
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                // Two hex digits: at most 255.
                out.push(u8::try_from(hi * 16 + lo).ok()?);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The identity of a URL-decoded audience `{host}/devices/{d}[/modules/{m}]` (ids decoded once
/// more, as IoT Edge builds them).
fn audience_identity(audience: &str) -> Option<Identity> {
    let parts: Vec<&str> = audience.split('/').collect();
    let nonempty = |s: &str| Some(url_decode(s)).filter(|s| !s.is_empty());
    match parts.as_slice() {
        [_host, "devices", device] => Some(Identity::device(&nonempty(device)?)),
        [_host, "devices", device, "modules", module] => {
            Some(Identity::module(&nonempty(device)?, &nonempty(module)?))
        }
        _ => None,
    }
}

/// `x-ms-edge-moduleId`: `{device}/{module}`.
fn parse_module_header(value: &str) -> Option<Identity> {
    let (device, module) = value.trim().split_once('/')?;
    (!device.is_empty() && !module.is_empty() && !module.contains('/'))
        .then(|| Identity::module(device, module))
}

/// The whole body, within [`MAX_BODY`] and [`BODY_TIMEOUT`].
async fn read_body(body: Incoming) -> Result<Bytes, Failure> {
    let collected = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect())
        .await
        .map_err(|_| {
            Failure::BadRequest(format!(
                "the request body did not arrive within {BODY_TIMEOUT:?}"
            ))
        })?;
    match collected {
        Ok(body) => Ok(body.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(Failure::TooLarge),
        Err(e) => Err(Failure::BadRequest(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

/// The body of a method invocation.
#[derive(Debug)]
struct MethodRequest {
    name: String,
    payload: Value,
    response_timeout: Duration,
    connect_timeout: Duration,
}

impl MethodRequest {
    fn parse(body: &[u8]) -> Result<Self, Failure> {
        let bad = |why: String| Failure::BadRequest(why);
        let value: Value =
            serde_json::from_slice(body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
        let Value::Object(mut fields) = value else {
            return Err(bad("the body is not a JSON object".into()));
        };
        let name = match fields.remove("methodName") {
            Some(Value::String(name)) if !name.trim().is_empty() => name,
            Some(_) => return Err(bad("methodName must be a non-empty string".into())),
            None => return Err(bad("the body has no methodName".into())),
        };
        let seconds = |key: &str| -> Result<Option<u64>, Failure> {
            match fields.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(|s| Some(s.min(MAX_TIMEOUT)))
                    .ok_or_else(|| bad(format!("{key} must be a whole number of seconds"))),
            }
        };
        let response = match seconds("responseTimeoutInSeconds")? {
            None | Some(0) => DEFAULT_RESPONSE_TIMEOUT,
            Some(s) => s,
        };
        let connect = seconds("connectTimeoutInSeconds")?.unwrap_or(0);
        Ok(Self {
            name,
            payload: fields.remove("payload").unwrap_or(Value::Null),
            response_timeout: Duration::from_secs(response),
            connect_timeout: Duration::from_secs(connect),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use verge_hub::MethodResponse;

    #[test]
    fn routes_name_devices_and_modules() {
        assert_eq!(
            route("/twins/edge/modules/sensor/methods").unwrap(),
            Identity::module("edge", "sensor")
        );
        assert_eq!(
            route("/twins/leaf%201/methods/").unwrap(),
            Identity::device("leaf 1")
        );
        assert_eq!(
            route("/twins/edge/modules/%24edgeAgent/methods").unwrap(),
            Identity::module("edge", "$edgeAgent")
        );
        assert_eq!(
            route("/twins/a+b/methods").unwrap(),
            Identity::device("a+b")
        );
        for bad in [
            "/",
            "",
            "/twins//methods",
            "/twins/edge/modules//methods",
            "/twins/edge/method",
            "/devices/edge/methods",
            "/twins/%ff/methods",
            "/twins/edge/modules/m/methods/x",
        ] {
            assert!(matches!(route(bad), Err(Failure::NoRoute(_))), "{bad}");
        }
        assert_eq!(percent_decode("%").unwrap(), "%");
        assert_eq!(percent_decode("a%2").unwrap(), "a%2");
        assert_eq!(percent_decode("%4a%4A").unwrap(), "JJ");
    }

    #[test]
    fn audiences_and_module_headers_name_callers() {
        assert_eq!(
            audience_identity("hub.net/devices/edge/modules/caller").unwrap(),
            Identity::module("edge", "caller")
        );
        assert_eq!(
            audience_identity("hub.net/devices/n%40m").unwrap(),
            Identity::device("n@m")
        );
        assert!(audience_identity("hub.net/devices/").is_none());
        assert!(audience_identity("hub.net/modules/x").is_none());
        assert!(audience_identity("").is_none());
        assert_eq!(
            parse_module_header("edge/caller").unwrap(),
            Identity::module("edge", "caller")
        );
        for bad in ["edge", "/m", "edge/", "a/b/c"] {
            assert!(parse_module_header(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn method_requests_are_checked() {
        let r = MethodRequest::parse(
            br#"{"methodName":"m","payload":{"a":1},"responseTimeoutInSeconds":5,"connectTimeoutInSeconds":1000}"#,
        )
        .unwrap();
        assert_eq!(r.name, "m");
        assert_eq!(r.payload, json!({"a": 1}));
        assert_eq!(r.response_timeout, Duration::from_secs(5));
        assert_eq!(r.connect_timeout, Duration::from_secs(MAX_TIMEOUT));
        let r = MethodRequest::parse(br#"{"methodName":"m"}"#).unwrap();
        assert_eq!(r.payload, Value::Null);
        assert_eq!(r.response_timeout, Duration::from_secs(30));
        for bad in [
            &b""[..],
            b"[]",
            b"{",
            br#"{"payload":1}"#,
            br#"{"methodName":""}"#,
            br#"{"methodName":7}"#,
            br#"{"methodName":"m","responseTimeoutInSeconds":-1}"#,
            br#"{"methodName":"m","connectTimeoutInSeconds":"5"}"#,
        ] {
            assert!(
                matches!(MethodRequest::parse(bad), Err(Failure::BadRequest(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// Accepts exactly one token for one identity; certificates never.
    #[derive(Debug)]
    struct OneToken(Identity, &'static str);

    impl Authenticator for OneToken {
        fn authenticate(&self, c: &Credentials<'_>) -> Result<crate::AuthMethod, Refused> {
            if *c.identity == self.0 && c.password == Some(self.1) {
                Ok(crate::AuthMethod::Sas {
                    valid_until: u64::MAX,
                })
            } else {
                Err(Refused::BadCredentials("no".into()))
            }
        }
    }

    /// A request (method, path, headers, body) and the status it gets.
    type Case<'a> = (Method, &'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u16);

    const TOKEN: &str =
        "SharedAccessSignature sr=hub.net%2Fdevices%2Fedge%2Fmodules%2Fcaller&sig=x&se=1";

    /// One request through a fresh connection: the status and the JSON body.
    async fn request(
        endpoint: &Arc<Endpoint>,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, Value) {
        let (client, server) = tokio::io::duplex(1 << 20);
        tokio::spawn(serve_connection(
            Arc::clone(endpoint),
            server,
            Arc::new(Vec::new()),
            "test".into(),
        ));
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "edge");
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let response = sender
            .send_request(builder.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn invocations_reach_the_target_and_failures_follow_iot_hub() {
        let hub = Hub::new(verge_hub::HubOptions {
            device_id: "edge".into(),
            queue_limits: verge_hub::QueueLimits::default(),
            resident_per_queue: usize::MAX,
        });
        let endpoint = Arc::new(Endpoint {
            hub: Arc::clone(&hub),
            auth: Arc::new(OneToken(Identity::module("edge", "caller"), TOKEN)),
        });
        let target = Identity::module("edge", "target");
        let mut listener = hub.methods().listen(&target);
        tokio::spawn(async move {
            while let Some(call) = listener.next().await {
                let payload = match call.name.as_str() {
                    "text" => "not json".to_owned(),
                    "slow" => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        "null".to_owned()
                    }
                    _ => format!("{{\"echo\":{}}}", call.payload),
                };
                call.respond(MethodResponse {
                    status: 201,
                    payload,
                });
            }
        });
        let auth = [("authorization", TOKEN)];
        let path = "/twins/edge/modules/target/methods?api-version=2020-09-30";
        let body = |v: Value| v.to_string().into_bytes();

        let (status, answer) = request(
            &endpoint,
            Method::POST,
            path,
            &auth,
            body(json!({"methodName": "echo", "payload": {"n": 7}, "responseTimeoutInSeconds": 5})),
        )
        .await;
        assert_eq!(
            (status, answer),
            (200, json!({"status": 201, "payload": {"echo": {"n": 7}}}))
        );

        let (status, answer) = request(
            &endpoint,
            Method::POST,
            path,
            &[
                ("authorization", TOKEN),
                ("x-ms-edge-moduleId", "edge/caller"),
            ],
            body(json!({"methodName": "text"})),
        )
        .await;
        assert_eq!(
            (status, answer),
            (200, json!({"status": 201, "payload": "not json"}))
        );

        let call = body(json!({"methodName": "echo"}));
        let cases: Vec<Case<'_>> = vec![
            (Method::POST, path, vec![], call.clone(), 401),
            (
                Method::POST,
                path,
                vec![("authorization", "SharedAccessSignature sr=x")],
                call.clone(),
                401,
            ),
            (
                Method::POST,
                path,
                vec![("authorization", "Bearer abc")],
                call.clone(),
                401,
            ),
            (
                Method::POST,
                path,
                vec![
                    ("authorization", TOKEN),
                    ("x-ms-edge-moduleId", "edge/other"),
                ],
                call.clone(),
                401,
            ),
            (
                Method::POST,
                path,
                vec![("authorization", TOKEN), ("x-ms-edge-moduleId", "nonsense")],
                call.clone(),
                400,
            ),
            (Method::GET, path, auth.to_vec(), Vec::new(), 405),
            (
                Method::POST,
                "/twins/edge/modules/nobody/methods",
                auth.to_vec(),
                call.clone(),
                404,
            ),
            (
                Method::POST,
                "/twins/leaf/methods",
                auth.to_vec(),
                call.clone(),
                404,
            ),
            (Method::POST, "/nowhere", auth.to_vec(), call.clone(), 404),
            (Method::POST, path, auth.to_vec(), b"{".to_vec(), 400),
            (Method::POST, path, auth.to_vec(), b"{}".to_vec(), 400),
            (
                Method::POST,
                path,
                auth.to_vec(),
                vec![b' '; MAX_BODY + 1],
                413,
            ),
            (
                Method::POST,
                path,
                auth.to_vec(),
                body(json!({"methodName": "slow", "responseTimeoutInSeconds": 1})),
                504,
            ),
        ];
        for (method, path, headers, body, expected) in cases {
            let (status, answer) = request(&endpoint, method, path, &headers, body).await;
            assert_eq!(status, expected, "{path} {headers:?}: {answer}");
            assert!(answer["message"].is_string(), "{answer}");
        }

        // A target that connects within connectTimeoutInSeconds is reached.
        let late = Identity::module("edge", "late");
        let hub2 = Arc::clone(&hub);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let mut listener = hub2.methods().listen(&late);
            if let Some(call) = listener.next().await {
                call.respond(MethodResponse {
                    status: 200,
                    payload: String::new(),
                });
            }
        });
        let (status, answer) = request(
            &endpoint,
            Method::POST,
            "/twins/edge/modules/late/methods",
            &auth,
            body(json!({"methodName": "m", "connectTimeoutInSeconds": 5})),
        )
        .await;
        assert_eq!(
            (status, answer),
            (200, json!({"status": 200, "payload": null}))
        );
    }
}
