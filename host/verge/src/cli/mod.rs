//! The commands that talk to a running daemon, and `verge route test`, which needs none.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use verge_message::json::MessageDoc;
use verge_mgmt::api::{
    AddedIdentity, DeployReport, IdentityInfo, LogEntry, MethodAnswer, MethodRequest, ModuleInfo,
    ModuleList, NewIdentity, Stats, TrustBundle, Twin,
};
use verge_mgmt::client::{Client, ClientError, encode_segment};
use verge_route::{Bool3, Evaluation, Route};

const USAGE: u8 = 2;

/// Write a line to stdout; a reader that went away (`verge … | head`) ends the command quietly.
fn out(line: &str) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{line}").and_then(|()| stdout.flush())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

/// `verge deploy FILE [--device CHILD]`
pub async fn deploy(
    client: &Client,
    file: &Path,
    device: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let manifest = crate::daemon::read_manifest(file)?;
    let path = match device {
        Some(child) => format!(
            "/devices/{}/deployment",
            verge_mgmt::client::encode_segment(child)
        ),
        None => "/deployment".into(),
    };
    let report: DeployReport = client.post_report(&path, &manifest).await?;
    if let Some(child) = device {
        if report.code != 200 {
            eprintln!(
                "deployment refused ({}): {}",
                report.code, report.description
            );
            return Ok(ExitCode::FAILURE);
        }
        out(&format!(
            "deployment set for {child} ($edgeAgent version {}, $edgeHub version {}); {}",
            report.version, report.hub_version, report.description
        ));
        return Ok(ExitCode::SUCCESS);
    }
    let ok = report.code == 200;
    if report.version == 0 {
        eprintln!(
            "deployment refused ({}): {}",
            report.code, report.description
        );
        return Ok(ExitCode::FAILURE);
    }
    let versions = format!(
        "$edgeAgent version {}, $edgeHub version {}",
        report.version, report.hub_version
    );
    if ok {
        out(&format!("deployment applied ({versions})"));
    } else {
        eprintln!(
            "deployment applied with errors ({}): {} [{versions}]",
            report.code, report.description
        );
    }
    print_modules(&report.modules);
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn description(m: &ModuleInfo) -> String {
    match (m.status.as_str(), m.uptime_secs) {
        ("running", Some(secs)) if m.kind != "system" => {
            format!("Up {}", verge_agent::human(Duration::from_secs(secs)))
        }
        _ => m.description.clone(),
    }
}

fn print_modules(modules: &[ModuleInfo]) {
    let rows: Vec<[String; 4]> = modules
        .iter()
        .map(|m| {
            [
                m.name.clone(),
                m.status.clone(),
                description(m),
                m.image.clone(),
            ]
        })
        .collect();
    let header = ["NAME", "STATUS", "DESCRIPTION", "CONFIG"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        out(line.trim_end());
    }
}

/// `verge list`
pub async fn list(client: &Client, as_json: bool) -> anyhow::Result<ExitCode> {
    let list: ModuleList = client.get("/modules").await?;
    if as_json {
        out(&serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    print_modules(&list.modules);
    let d = &list.deployment;
    if d.code != 200 {
        eprintln!("deployment {}: {} {}", d.version, d.code, d.description);
    }
    Ok(ExitCode::SUCCESS)
}

/// `verge logs MODULE`
pub async fn logs(
    client: &Client,
    module: &str,
    tail: Option<usize>,
    follow: bool,
    timestamps: bool,
) -> anyhow::Result<ExitCode> {
    let mut path = format!("/modules/{module}/logs?follow={follow}");
    if let Some(n) = tail {
        path.push_str(&format!("&tail={n}"));
    }
    client
        .stream_lines(&path, |line| {
            let Ok(entry) = serde_json::from_str::<LogEntry>(line) else {
                return true;
            };
            let text = if timestamps {
                format!("{} {}", entry.time, entry.text)
            } else {
                entry.text
            };
            // As `docker logs`: the module's stdout on stdout, the rest on stderr.
            if entry.stream == "stdout" {
                out(&text);
            } else {
                eprintln!("{text}");
            }
            true
        })
        .await?;
    Ok(ExitCode::SUCCESS)
}

/// `verge restart MODULE`
pub async fn restart(client: &Client, module: &str) -> anyhow::Result<ExitCode> {
    client
        .post_empty(&format!("/modules/{module}/restart"), &json!({}))
        .await?;
    out(&format!("{module} restarted"));
    Ok(ExitCode::SUCCESS)
}

/// `verge monitor`
pub async fn monitor(
    client: &Client,
    count: Option<usize>,
    timeout: Option<f64>,
    queued: bool,
) -> anyhow::Result<ExitCode> {
    let mut seen = 0usize;
    let path = format!("/monitor?queued={queued}");
    let stream = client.stream_lines(&path, |line| {
        out(line);
        seen += 1;
        count.is_none_or(|n| seen < n)
    });
    let finished = match timeout {
        Some(secs) => {
            let limit = Duration::try_from_secs_f64(secs)
                .context("--timeout must be a positive number of seconds")?;
            tokio::time::timeout(limit, stream).await.ok()
        }
        None => Some(stream.await),
    };
    match finished {
        Some(result) => result?,
        None => {
            if let Some(n) = count {
                eprintln!("timed out after {seen} of {n} messages");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `verge invoke MODULE METHOD [PAYLOAD]` (a module of this device) or `verge invoke --device D
/// [--module M] METHOD [PAYLOAD]` (a leaf device, or a client behind a child edge device).
pub async fn invoke(
    client: &Client,
    device: Option<&str>,
    module: Option<&str>,
    args: &[String],
    timeout: u64,
) -> anyhow::Result<ExitCode> {
    let (path, rest) = match (device, module, args) {
        (None, _, [module, rest @ ..]) if !rest.is_empty() => {
            (format!("/modules/{}/methods", encode_segment(module)), rest)
        }
        (Some(d), Some(m), rest) if rest.len() <= 2 => (
            format!(
                "/devices/{}/modules/{}/methods",
                encode_segment(d),
                encode_segment(m)
            ),
            rest,
        ),
        (Some(d), None, rest) if rest.len() <= 2 => {
            (format!("/devices/{}/methods", encode_segment(d)), rest)
        }
        _ => {
            eprintln!(
                "usage: verge invoke MODULE METHOD [PAYLOAD] | verge invoke --device D [--module M] METHOD [PAYLOAD]"
            );
            return Ok(ExitCode::from(USAGE));
        }
    };
    let Some(method) = rest.first() else {
        eprintln!("error: no method name");
        return Ok(ExitCode::from(USAGE));
    };
    let payload = rest.get(1).map_or("{}", String::as_str);
    let payload: Value = match serde_json::from_str(payload) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: the payload is not JSON: {e}");
            return Ok(ExitCode::from(USAGE));
        }
    };
    let request = MethodRequest {
        method_name: method.clone(),
        payload,
        response_timeout_in_seconds: Some(timeout),
    };
    match client.post::<_, MethodAnswer>(&path, &request).await {
        Ok(answer) => {
            out(&serde_json::to_string(&answer)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(ClientError::Api { status, message }) => {
            eprintln!("method failed ({status}): {message}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

/// `verge send --device D BODY [--property K=V]... [--message-id ID]`
pub async fn send(
    client: &Client,
    device: &str,
    body: &str,
    properties: &[String],
    message_id: Option<String>,
) -> anyhow::Result<ExitCode> {
    let mut doc = MessageDoc {
        body: Value::String(body.to_owned()),
        body_encoding: Some(verge_message::json::BodyEncoding::Utf8),
        ..MessageDoc::default()
    };
    for property in properties {
        let Some((name, value)) = property.split_once('=') else {
            eprintln!("error: --property {property:?} is not NAME=VALUE");
            return Ok(ExitCode::from(USAGE));
        };
        doc.properties
            .insert(name.to_owned(), Value::String(value.to_owned()));
    }
    if let Some(id) = message_id {
        doc.system_properties.insert(
            verge_message::system::MESSAGE_ID.to_owned(),
            Value::String(id),
        );
    }
    client
        .post_empty(
            &format!("/devices/{}/messages", encode_segment(device)),
            &doc,
        )
        .await?;
    Ok(ExitCode::SUCCESS)
}

/// `verge identity add device|module NAME [--thumbprint T [--secondary-thumbprint T]] [--ca]`
pub async fn identity_add(client: &Client, request: &NewIdentity) -> anyhow::Result<ExitCode> {
    let added: AddedIdentity = client.post("/identities", request).await?;
    match (&added.connection_string, &added.secondary_connection_string) {
        (Some(primary), secondary) => {
            out(primary);
            if let Some(secondary) = secondary {
                eprintln!("secondary: {secondary}");
            }
            if primary.contains("SharedAccessKey=") {
                eprintln!(
                    "{} registered; this is the only time its keys are shown",
                    added.identity.id
                );
            } else {
                eprintln!(
                    "{} registered ({}); give it this connection string with its certificate",
                    added.identity.id, added.identity.auth
                );
            }
        }
        (None, _) => out(&format!(
            "{} registered ({})",
            added.identity.id, added.identity.auth
        )),
    }
    Ok(ExitCode::SUCCESS)
}

/// `verge identity list [--json]`
pub async fn identity_list(client: &Client, as_json: bool) -> anyhow::Result<ExitCode> {
    let list: Vec<IdentityInfo> = client.get("/identities").await?;
    if as_json {
        out(&serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    let width = list.iter().map(|i| i.id.len()).max().unwrap_or(0).max(2);
    out(&format!("{:width$}  {:16}  AUTH", "ID", "KIND"));
    for i in &list {
        out(&format!("{:width$}  {:16}  {}", i.id, i.kind, i.auth));
    }
    Ok(ExitCode::SUCCESS)
}

/// `verge identity remove ID`
pub async fn identity_remove(client: &Client, id: &str) -> anyhow::Result<ExitCode> {
    let path: Vec<String> = id.split('/').map(encode_segment).collect();
    client
        .delete(&format!("/identities/{}", path.join("/")))
        .await?;
    Ok(ExitCode::SUCCESS)
}

/// `verge stats`
pub async fn stats(client: &Client) -> anyhow::Result<ExitCode> {
    let stats: Stats = client.get("/stats").await?;
    out(&serde_json::to_string_pretty(&stats)?);
    Ok(ExitCode::SUCCESS)
}

/// `verge trust-bundle`
pub async fn trust_bundle(client: &Client) -> anyhow::Result<ExitCode> {
    let bundle: TrustBundle = client.get("/trust-bundle").await?;
    out(bundle.pem.trim_end());
    Ok(ExitCode::SUCCESS)
}

/// `verge twin update ID PATCH`
pub async fn twin_update(client: &Client, id: &str, patch: &str) -> anyhow::Result<ExitCode> {
    let patch: Value = match serde_json::from_str(patch) {
        Ok(p @ Value::Object(_)) => p,
        Ok(_) => {
            eprintln!("error: the patch must be a JSON object");
            return Ok(ExitCode::from(USAGE));
        }
        Err(e) => {
            eprintln!("error: the patch is not JSON: {e}");
            return Ok(ExitCode::from(USAGE));
        }
    };
    let twin: Twin = client
        .post(&format!("/twins/{}/desired", encode_segment(id)), &patch)
        .await?;
    out(&serde_json::to_string_pretty(&twin)?);
    Ok(ExitCode::SUCCESS)
}

/// `verge twin show ID`
pub async fn twin_show(client: &Client, id: &str) -> anyhow::Result<ExitCode> {
    let twin: Twin = client
        .get(&format!("/twins/{}", encode_segment(id)))
        .await?;
    out(&serde_json::to_string_pretty(&twin)?);
    Ok(ExitCode::SUCCESS)
}

/// `verge route test ROUTE --message FILE`: true, false or undefined, exit 0; a route or message
/// that does not parse, exit 2.
pub fn route_test(route: &str, message: &Path) -> ExitCode {
    let route = match Route::parse(route) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: the route does not compile: {e}");
            return ExitCode::from(USAGE);
        }
    };
    let message = std::fs::read_to_string(message)
        .map_err(|e| format!("cannot read {}: {e}", message.display()))
        .and_then(|text| MessageDoc::parse(&text).map_err(|e| e.to_string()))
        .and_then(|doc| doc.to_message().map_err(|e| e.to_string()));
    let message = match message {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(USAGE);
        }
    };
    let mut evaluation = Evaluation::new(&message);
    let result = if !route.source().matches(evaluation.source()) {
        Bool3::False
    } else {
        route.condition().evaluate(&mut evaluation)
    };
    if route.condition().reads_body()
        && message
            .system()
            .get(verge_message::system::CONTENT_TYPE)
            .is_none()
    {
        eprintln!(
            "note: $body queries need the system properties contentType \"application/json\" and \
             contentEncoding \"utf-8\"; this message has no contentType, so they are undefined"
        );
    }
    out(match result {
        Bool3::True => "true",
        Bool3::False => "false",
        Bool3::Undefined => "undefined",
    });
    ExitCode::SUCCESS
}
