//! Prometheus text on `/metrics` (port 9600 by default, as IoT Edge's), with edgeHub's metric
//! names where they exist (`edgehub_*`, see IoT Edge's `doc/BuiltInMetrics.md`) and Verge's own
//! for the store and the MQTT front (`verge_*`).
//!
//! Priorities are labelled as edgeHub labels them: `0`–`9`, and `2000000000` for routes without
//! one. Endpoints are `$upstream` and `modules/{id}`.

use std::fmt::Write as _;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use verge_hub::{DEFAULT_LANE, LANES};

use crate::Services;

/// edgeHub's value for "no priority".
const DEFAULT_PRIORITY: &str = "2000000000";

fn priority(lane: usize) -> String {
    if lane == usize::from(DEFAULT_LANE) {
        DEFAULT_PRIORITY.into()
    } else {
        lane.to_string()
    }
}

/// Escape a label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The metrics, as Prometheus text.
pub fn render(services: &Services) -> String {
    let mut out = String::with_capacity(4096);
    let hub = services.hub.stats();
    let mut queues = services.hub.queue_stats();
    queues.sort_by_key(|(target, _, _)| target.to_string());

    header(
        &mut out,
        "edgehub_messages_received_total",
        "counter",
        "Messages that entered the hub.",
    );
    let _ = writeln!(out, "edgehub_messages_received_total {}", hub.received);

    header(
        &mut out,
        "edgehub_messages_sent_total",
        "counter",
        "Messages delivered and acknowledged, by destination.",
    );
    for (target, stats, _) in &queues {
        let _ = writeln!(
            out,
            "edgehub_messages_sent_total{{to=\"{}\"}} {}",
            label(&target.to_string()),
            stats.delivered
        );
    }

    header(
        &mut out,
        "edgehub_messages_dropped_total",
        "counter",
        "Messages dropped: no route selected them, or their time to live passed.",
    );
    let _ = writeln!(
        out,
        "edgehub_messages_dropped_total{{reason=\"no_route\"}} {}",
        hub.dropped_no_route
    );
    let expired: u64 = queues.iter().map(|(_, s, _)| s.expired).sum();
    let _ = writeln!(
        out,
        "edgehub_messages_dropped_total{{reason=\"ttl_expiry\"}} {expired}"
    );

    header(
        &mut out,
        "edgehub_queue_length",
        "gauge",
        "Messages queued or in flight, by endpoint and priority.",
    );
    for (target, _, lengths) in &queues {
        for (lane, length) in lengths.iter().enumerate().take(LANES) {
            let _ = writeln!(
                out,
                "edgehub_queue_length{{endpoint=\"{}\",priority=\"{}\"}} {length}",
                label(&target.to_string()),
                priority(lane)
            );
        }
    }

    header(
        &mut out,
        "edgehub_message_process_duration_seconds",
        "summary",
        "Time from admission to acknowledgement of delivered messages.",
    );
    for (target, stats, _) in &queues {
        let to = label(&target.to_string());
        let _ = writeln!(
            out,
            "edgehub_message_process_duration_seconds_sum{{to=\"{to}\"}} {:.6}",
            stats.process_ns as f64 / 1e9
        );
        let _ = writeln!(
            out,
            "edgehub_message_process_duration_seconds_count{{to=\"{to}\"}} {}",
            stats.delivered
        );
    }

    header(
        &mut out,
        "verge_messages_redelivered_total",
        "counter",
        "Messages handed out again after a nack or a consumer leaving.",
    );
    for (target, stats, _) in &queues {
        let _ = writeln!(
            out,
            "verge_messages_redelivered_total{{to=\"{}\"}} {}",
            label(&target.to_string()),
            stats.redelivered
        );
    }

    if let Some(store) = services.hub.store() {
        let s = store.stats();
        header(
            &mut out,
            "verge_store_commit_duration_seconds",
            "histogram",
            "Durable commits of the message store (one fsync each).",
        );
        let mut cumulative = 0;
        for (le, n) in verge_store::COMMIT_BUCKETS_MS.iter().zip(&s.commit_buckets) {
            cumulative += n;
            let _ = writeln!(
                out,
                "verge_store_commit_duration_seconds_bucket{{le=\"{}\"}} {cumulative}",
                le / 1e3
            );
        }
        let _ = writeln!(
            out,
            "verge_store_commit_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            s.commits
        );
        let _ = writeln!(
            out,
            "verge_store_commit_duration_seconds_sum {:.6}",
            s.commit_ns as f64 / 1e9
        );
        let _ = writeln!(
            out,
            "verge_store_commit_duration_seconds_count {}",
            s.commits
        );
        for (name, kind, help, value) in [
            (
                "verge_store_file_bytes",
                "gauge",
                "Size of the store's file.",
                s.file_bytes,
            ),
            (
                "verge_store_message_bytes",
                "gauge",
                "Bytes of messages stored.",
                s.message_bytes,
            ),
            (
                "verge_store_entries",
                "gauge",
                "Queue entries stored.",
                s.entries,
            ),
            (
                "verge_store_messages_written_total",
                "counter",
                "Messages written to the store.",
                s.messages_written,
            ),
            (
                "verge_store_entries_elided_total",
                "counter",
                "Entries delivered before their commit, so never written.",
                s.entries_elided,
            ),
            (
                "verge_store_compactions_total",
                "counter",
                "Compactions of the store's file.",
                s.compactions,
            ),
        ] {
            header(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
    }

    let mqtt = services.mqtt.stats();
    header(
        &mut out,
        "edgehub_connected_clients",
        "gauge",
        "MQTT clients connected.",
    );
    let _ = writeln!(out, "edgehub_connected_clients {}", mqtt.connected);
    for (name, help, value) in [
        (
            "edgehub_client_connect_success_total",
            "MQTT CONNECTs accepted.",
            mqtt.connections_accepted,
        ),
        (
            "verge_mqtt_connections_refused_total",
            "MQTT CONNECTs refused and failed TLS handshakes.",
            mqtt.connections_refused,
        ),
        (
            "verge_mqtt_publishes_refused_total",
            "PUBLISHes refused (not allowed, or the store is full).",
            mqtt.publishes_refused,
        ),
        (
            "verge_mqtt_malformed_total",
            "Connections closed for a malformed packet.",
            mqtt.malformed,
        ),
        (
            "verge_mqtt_messages_in_total",
            "Messages MQTT clients sent.",
            mqtt.messages_in,
        ),
        (
            "verge_mqtt_messages_out_total",
            "Messages delivered to MQTT clients.",
            mqtt.messages_out,
        ),
    ] {
        header(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
    out
}

/// Serve `/metrics` on `addr` until the task is dropped.
pub async fn serve(services: Services, addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics on /metrics");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                continue;
            }
        };
        let services = services.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let response = match (request.method(), request.uri().path()) {
                    (&Method::GET, "/metrics") => Response::builder()
                        .header("content-type", "text/plain; version=0.0.4")
                        .body(Full::new(Bytes::from(render(&services)))),
                    _ => Response::builder()
                        .status(StatusCode::NOT_FOUND)
                        .body(Full::new(Bytes::from_static(b"only GET /metrics\n"))),
                };
                async move { response }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}
