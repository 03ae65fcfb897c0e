//! The management API server: HTTP/1.1 on a Unix socket (see [`crate::api`] for the routes).
//!
//! Streaming answers (`logs?follow=true`, `monitor`) are newline-delimited JSON written as the
//! lines come; they end when the client goes away.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::UnixListener;
use tokio::sync::{broadcast, mpsc};
use verge_hub::Identity;
use verge_message::json::MessageDoc;
use verge_message::time::rfc3339;
use verge_runtime::{LogLine, Stream};

use crate::Services;
use crate::api::{
    AddedIdentity, ApiError, IdentityInfo, MethodAnswer, MethodRequest, ModuleList, NewIdentity,
    Stats, TrustBundle, Twin,
};
use verge_identity::{IdentityKind, NewAuth, RegistryError};

type Answer = Response<BoxBody<Bytes, Infallible>>;

/// Largest request body accepted (a deployment manifest).
const MAX_REQUEST: usize = 4 << 20;

/// A body fed by a channel: each item is a chunk (a line).
struct Lines(mpsc::Receiver<Bytes>);

impl Body for Lines {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|line| line.map(|b| Ok(Frame::data(b))))
    }
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Answer {
    let body = serde_json::to_vec(value).unwrap_or_default();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)).boxed())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

fn error(status: StatusCode, message: impl Into<String>) -> Answer {
    json(
        status,
        &ApiError {
            message: message.into(),
        },
    )
}

fn empty(status: StatusCode) -> Answer {
    let mut r = Response::new(Full::new(Bytes::new()).boxed());
    *r.status_mut() = status;
    r
}

fn ndjson(rx: mpsc::Receiver<Bytes>) -> Answer {
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(BodyExt::boxed(Lines(rx)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed()))
}

fn line<T: Serialize>(value: &T) -> Bytes {
    let mut v = serde_json::to_vec(value).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// Decode `%XX` escapes (module ids and `$edgeAgent` travel in paths).
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (p.to_owned(), "true".to_owned()),
        })
        .collect()
}

async fn read_json(req: Request<Incoming>) -> Result<serde_json::Value, Answer> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_REQUEST);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("cannot read the request: {e}"),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("the request is not JSON: {e}"),
        )
    })
}

fn log_entry(l: &LogLine) -> crate::api::LogEntry {
    crate::api::LogEntry {
        time: rfc3339(l.at),
        stream: match l.stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Runtime => "verge",
        }
        .to_owned(),
        text: l.text.clone(),
    }
}

async fn handle(services: Services, req: Request<Incoming>) -> Result<Answer, Infallible> {
    let path: Vec<String> = req
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    let answer = match (req.method().clone(), segments.as_slice()) {
        (Method::GET, ["modules"]) => {
            let status = services.agent.status();
            json(
                StatusCode::OK,
                &ModuleList {
                    deployment: crate::deployment_state(&status),
                    modules: crate::module_infos(&status),
                },
            )
        }
        (Method::POST, ["devices", child, "deployment"]) => match read_json(req).await {
            Err(answer) => answer,
            Ok(manifest) => {
                let report = crate::deploy::deploy_to_child(&services, child, &manifest);
                let status = if report.code == 200 {
                    StatusCode::OK
                } else {
                    StatusCode::BAD_REQUEST
                };
                json(status, &report)
            }
        },
        (Method::POST, ["deployment"]) => match read_json(req).await {
            Err(answer) => answer,
            Ok(manifest) => {
                let report = crate::deploy::deploy(&services, &manifest).await;
                let status = if report.version == 0 {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::OK
                };
                json(status, &report)
            }
        },
        (Method::GET, ["twins", id]) => {
            let docs = services.twins.docs(id);
            json(
                StatusCode::OK,
                &Twin {
                    desired: docs.desired,
                    reported: docs.reported,
                },
            )
        }
        (Method::POST, ["twins", id, "desired"]) => {
            let id = (*id).to_owned();
            match read_json(req).await {
                Err(answer) => answer,
                Ok(serde_json::Value::Object(patch)) => {
                    match services.twins.patch_desired(&id, &patch) {
                        Ok(_) => {
                            let docs = services.twins.docs(&id);
                            json(
                                StatusCode::OK,
                                &Twin {
                                    desired: docs.desired,
                                    reported: docs.reported,
                                },
                            )
                        }
                        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
                    }
                }
                Ok(_) => error(StatusCode::BAD_REQUEST, "the patch must be a JSON object"),
            }
        }
        (Method::GET, ["modules", name, "logs"]) => logs(&services, name, &query(&req)),
        (Method::POST, ["modules", name, "restart"]) => match services.agent.restart(name).await {
            Ok(()) => empty(StatusCode::NO_CONTENT),
            Err(e @ verge_agent::AgentError::NoSuchModule(_)) => {
                error(StatusCode::NOT_FOUND, e.to_string())
            }
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        },
        (Method::POST, ["modules", name, "methods"]) => {
            let who = Identity::module(services.hub.device_id(), name);
            match read_json(req).await {
                Err(answer) => answer,
                Ok(body) => invoke(&services, &who, body).await,
            }
        }
        (Method::POST, ["devices", device, "methods"]) => {
            let who = Identity::device(device);
            match read_json(req).await {
                Err(answer) => answer,
                Ok(body) => invoke(&services, &who, body).await,
            }
        }
        (Method::POST, ["devices", device, "modules", module, "methods"]) => {
            let who = Identity::module(device, module);
            match read_json(req).await {
                Err(answer) => answer,
                Ok(body) => invoke(&services, &who, body).await,
            }
        }
        (Method::POST, ["devices", device, "messages"]) => {
            let device = (*device).to_owned();
            match read_json(req).await {
                Err(answer) => answer,
                Ok(body) => cloud_to_device(&services, &device, body).await,
            }
        }
        (Method::GET, ["monitor"]) => monitor(&services, &query(&req)),
        (Method::GET, ["identities"]) => {
            let list: Vec<IdentityInfo> = services
                .identities
                .list()
                .iter()
                .map(identity_info)
                .collect();
            json(StatusCode::OK, &list)
        }
        (Method::POST, ["identities"]) => match read_json(req).await {
            Err(answer) => answer,
            Ok(body) => add_identity(&services, body),
        },
        (Method::DELETE, ["identities", device]) => {
            remove_identity(&services, &Identity::device(device))
        }
        (Method::DELETE, ["identities", device, module]) => {
            remove_identity(&services, &Identity::module(device, module))
        }
        (Method::GET, ["stats"]) => json(StatusCode::OK, &stats(&services)),
        (Method::GET, ["trust-bundle"]) => json(
            StatusCode::OK,
            &TrustBundle {
                pem: services.trust_bundle.to_string(),
            },
        ),
        _ => error(StatusCode::NOT_FOUND, "no such management endpoint"),
    };
    Ok(answer)
}

fn logs(services: &Services, name: &str, query: &HashMap<String, String>) -> Answer {
    let Some(log) = services.agent.log(name) else {
        return error(StatusCode::NOT_FOUND, format!("no module named {name:?}"));
    };
    let tail = query.get("tail").and_then(|t| t.parse().ok());
    let follow = query.get("follow").is_some_and(|f| f == "true");
    let (lines, mut follower) = log.tail_and_follow(tail);
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        for l in &lines {
            if tx.send(line(&log_entry(l))).await.is_err() {
                return;
            }
        }
        if !follow {
            return;
        }
        loop {
            match follower.recv().await {
                Ok(l) => {
                    if tx.send(line(&log_entry(&l))).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let skipped = LogLine {
                        at: SystemTime::now(),
                        stream: Stream::Runtime,
                        text: format!("... {n} lines skipped (the reader fell behind)"),
                    };
                    if tx.send(line(&log_entry(&skipped))).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    ndjson(rx)
}

fn monitor_line(tapped: &verge_hub::Tapped) -> Bytes {
    let mut doc = MessageDoc::from_message(&tapped.message).with_origin(&tapped.message);
    doc.enqueued_time = Some(rfc3339(tapped.enqueued));
    line(&doc)
}

fn monitor(services: &Services, query: &HashMap<String, String>) -> Answer {
    let queued = query.get("queued").is_some_and(|q| q == "true");
    // Subscribe before taking the backlog, so that nothing falls between them (a message may
    // show twice, never not at all).
    let mut taps = services.hub.monitor();
    let backlog = if queued {
        services.hub.queued_upstream()
    } else {
        Vec::new()
    };
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        for t in &backlog {
            if tx.send(monitor_line(t)).await.is_err() {
                return;
            }
        }
        loop {
            match taps.recv().await {
                Ok(t) => {
                    if tx.send(monitor_line(&t)).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "verge monitor fell behind");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    ndjson(rx)
}

/// A cloud-to-device message for `device`: a leaf device registered here or a device behind a
/// child edge device. Stored in the device's queue until the device (or the child it is behind)
/// takes it; 202 once durable.
async fn cloud_to_device(services: &Services, device: &str, body: serde_json::Value) -> Answer {
    let registered = services
        .identities
        .get(&Identity::device(device))
        .is_some_and(|r| {
            matches!(
                r.kind,
                verge_identity::IdentityKind::LeafDevice
                    | verge_identity::IdentityKind::ChildEdgeDevice
            )
        });
    if !registered && services.mqtt.behind().child_of(device).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "{device:?} is not a device of this one: neither registered here nor seen behind a child edge device"
            ),
        );
    }
    let message = match serde_json::from_value::<MessageDoc>(body)
        .map_err(|e| e.to_string())
        .and_then(|doc| doc.to_message().map_err(|e| e.to_string()))
    {
        Ok(m) => m,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("not a message: {e}")),
    };
    let commit = verge_hub::Commit {
        messages: vec![std::sync::Arc::new(message)],
        to: Some(verge_hub::Target::Device(device.into())),
        ..verge_hub::Commit::default()
    };
    match services.hub.commit(commit).await {
        Ok(_) => empty(StatusCode::ACCEPTED),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn invoke(services: &Services, who: &Identity, body: serde_json::Value) -> Answer {
    let request: MethodRequest = match serde_json::from_value(body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("not a method request: {e}"),
            );
        }
    };
    let timeout = Duration::from_secs(request.response_timeout_in_seconds.unwrap_or(30));
    let payload = request.payload.to_string();
    match services
        .hub
        .methods()
        .invoke(who, &request.method_name, &payload, timeout)
        .await
    {
        Ok(answer) => json(
            StatusCode::OK,
            &MethodAnswer {
                status: answer.status,
                payload: serde_json::from_str(&answer.payload)
                    .unwrap_or(serde_json::Value::String(answer.payload)),
            },
        ),
        Err(e) => {
            let status =
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            error(status, e.to_string())
        }
    }
}

/// Serve the management API on `socket` until the task is dropped. The socket is replaced if a
/// stale one is there (the caller holds the data directory's lock).
pub async fn serve(services: Services, socket: &Path) -> std::io::Result<()> {
    if socket.exists() {
        std::fs::remove_file(socket)?;
    }
    let listener = UnixListener::bind(socket)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))?;
    }
    tracing::info!(socket = %socket.display(), "management API listening");
    loop {
        let (stream, _) = listener.accept().await?;
        let services = services.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(services.clone(), req));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "management connection ended");
            }
        });
    }
}

fn stats(services: &Services) -> Stats {
    let hub = services.hub.stats();
    let mqtt = services.mqtt.stats();
    Stats {
        messages_received: hub.received,
        messages_routed: hub.routed,
        messages_dropped_no_route: hub.dropped_no_route,
        mqtt_connected: mqtt.connected,
        mqtt_connections_accepted: mqtt.connections_accepted,
        mqtt_connections_refused: mqtt.connections_refused,
        mqtt_publishes_refused: mqtt.publishes_refused,
        mqtt_subscriptions_refused: mqtt.subscriptions_refused,
        mqtt_malformed: mqtt.malformed,
        mqtt_messages_in: mqtt.messages_in,
        mqtt_messages_out: mqtt.messages_out,
    }
}

fn identity_info(record: &verge_identity::Record) -> IdentityInfo {
    let kind = match record.kind {
        IdentityKind::EdgeDevice => "edge_device",
        IdentityKind::Module => "module",
        IdentityKind::ExternalModule => "external_module",
        IdentityKind::LeafDevice => "leaf_device",
        IdentityKind::ChildEdgeDevice => "edge_device_child",
    };
    IdentityInfo {
        id: record.identity.to_string(),
        kind: kind.into(),
        auth: record.auth.method().into(),
        generation_id: record.generation_id.clone(),
    }
}

fn add_identity(services: &Services, body: serde_json::Value) -> Answer {
    let request: NewIdentity = match serde_json::from_value(body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("not an identity request: {e}"),
            );
        }
    };
    let auth = match (&request.thumbprint, request.ca) {
        (None, false) => NewAuth::Sas,
        (Some(primary), false) => NewAuth::X509Thumbprint {
            primary: primary.clone(),
            secondary: request.secondary_thumbprint.clone(),
        },
        (None, true) => NewAuth::X509Ca,
        (Some(_), true) => {
            return error(
                StatusCode::BAD_REQUEST,
                "choose a thumbprint or CA authentication, not both",
            );
        }
    };
    let registry = &services.identities;
    let added = match request.kind.as_str() {
        "device" => registry.add_leaf_device(&request.id, auth),
        "edge-device" => registry.add_child_edge_device(&request.id, auth),
        "module" => registry.add_external_module(&request.id, auth),
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown identity kind {other:?}: use device, module or edge-device"),
            );
        }
    };
    match added {
        Ok((record, credentials)) => json(
            StatusCode::CREATED,
            &AddedIdentity {
                identity: identity_info(&record),
                connection_string: credentials
                    .as_ref()
                    .map(|c| c.primary.expose().to_owned())
                    .or_else(|| x509_connection_string(services, &request.kind, &request.id)),
                secondary_connection_string: credentials
                    .as_ref()
                    .map(|c| c.secondary.expose().to_owned()),
            },
        ),
        Err(e @ RegistryError::Duplicate(_)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(
            e @ (RegistryError::Io { .. } | RegistryError::Key(_) | RegistryError::Corrupt { .. }),
        ) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// What a child edge device proved by a certificate puts in its `[upstream] connection_string`
/// (IoT Hub's form for X.509 devices): no key, `x509=true`.
fn x509_connection_string(services: &Services, kind: &str, id: &str) -> Option<String> {
    if kind != "edge-device" {
        return None;
    }
    let registry = &services.identities;
    let mut cs = format!(
        "HostName={};DeviceId={id};x509=true",
        registry.hub_host_name()
    );
    if let Some(gateway) = registry.gateway_host_name() {
        cs.push_str(";GatewayHostName=");
        cs.push_str(gateway);
    }
    Some(cs)
}

fn remove_identity(services: &Services, identity: &Identity) -> Answer {
    match services.identities.get(identity).map(|r| r.kind) {
        None => return error(StatusCode::NOT_FOUND, format!("no identity {identity}")),
        Some(IdentityKind::EdgeDevice | IdentityKind::Module) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{identity} belongs to this edge device or its deployment; change the deployment instead"
                ),
            );
        }
        Some(_) => {}
    }
    match services.identities.remove(identity) {
        Ok(_) => empty(StatusCode::NO_CONTENT),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_client_encodes_the_server_decodes() {
        for id in [
            "$edgeAgent",
            "a b",
            "100%",
            "n#1?x=y&z",
            "edge/ext",
            "été",
            "-._~",
        ] {
            assert_eq!(percent_decode(&crate::client::encode_segment(id)), id);
        }
    }

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(percent_decode("%24edgeAgent"), "$edgeAgent");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("bad%2"), "bad%2");
        assert_eq!(percent_decode("%e2%82%ac"), "\u{20ac}");
    }
}
