//! The management API client the CLI uses.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use crate::api::ApiError;

/// Why a management request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon answers on the socket.
    #[error(
        "cannot reach the Verge daemon at {socket}: {source} (is `verge run` running with this data directory?)"
    )]
    Connect {
        /// The socket tried.
        socket: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The exchange broke.
    #[error("talking to the daemon failed: {0}")]
    Http(String),
    /// The daemon answered with an error.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The daemon's message.
        message: String,
    },
}

fn http(e: impl std::fmt::Display) -> ClientError {
    ClientError::Http(e.to_string())
}

/// A client of one daemon's socket.
#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client for the daemon listening on `socket`.
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_path_buf(),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response<Incoming>, ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "verge")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(http)?;
        sender.send_request(request).await.map_err(http)
    }

    async fn read(response: Response<Incoming>) -> Result<(StatusCode, Bytes), ClientError> {
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(http)?
            .to_bytes();
        Ok((status, body))
    }

    fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
        let message = serde_json::from_slice::<ApiError>(body)
            .map(|e| e.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
        ClientError::Api {
            status: status.as_u16(),
            message,
        }
    }

    /// `GET path`, decoded.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let (status, body) = Self::read(self.send(Method::GET, path, None).await?).await?;
        if !status.is_success() {
            return Err(Self::api_error(status, &body));
        }
        serde_json::from_slice(&body).map_err(http)
    }

    async fn post_raw<B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let payload = serde_json::to_vec(body).map_err(http)?;
        Self::read(self.send(Method::POST, path, Some(payload)).await?).await
    }

    /// `POST path` with a JSON body; the decoded answer, or the daemon's error.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self.post_raw(path, body).await?;
        if !status.is_success() {
            return Err(Self::api_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(http)
    }

    /// `POST path` with a JSON body, expecting no answer body.
    pub async fn post_empty<B: Serialize>(&self, path: &str, body: &B) -> Result<(), ClientError> {
        let (status, bytes) = self.post_raw(path, body).await?;
        if !status.is_success() {
            return Err(Self::api_error(status, &bytes));
        }
        Ok(())
    }

    /// `DELETE path`, expecting no answer body.
    pub async fn delete(&self, path: &str) -> Result<(), ClientError> {
        let (status, bytes) = Self::read(self.send(Method::DELETE, path, None).await?).await?;
        if !status.is_success() {
            return Err(Self::api_error(status, &bytes));
        }
        Ok(())
    }

    /// `POST path` for requests whose refusals (HTTP 400) carry the same report as successes.
    pub async fn post_report<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self.post_raw(path, body).await?;
        match serde_json::from_slice::<T>(&bytes) {
            Ok(report) if status.is_success() || status == StatusCode::BAD_REQUEST => Ok(report),
            _ if !status.is_success() => Err(Self::api_error(status, &bytes)),
            Err(e) => Err(http(e)),
            Ok(_) => Err(Self::api_error(status, &bytes)),
        }
    }

    /// `GET path` as a stream of lines: `on_line` is called for each; return `false` to stop.
    pub async fn stream_lines(
        &self,
        path: &str,
        mut on_line: impl FnMut(&str) -> bool,
    ) -> Result<(), ClientError> {
        let response = self.send(Method::GET, path, None).await?;
        let status = response.status();
        if !status.is_success() {
            let (_, body) = Self::read(response).await?;
            return Err(Self::api_error(status, &body));
        }
        let mut body = response.into_body();
        let mut pending = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(http)?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.extend_from_slice(data);
            while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                let text = String::from_utf8_lossy(&line[..line.len() - 1]);
                if !on_line(&text) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// Encode one path segment of a request: ids may hold `$`, `%`, `#`, `?` and the like (the
/// server decodes `%XX` in every segment).
pub fn encode_segment(segment: &str) -> String {
    let mut encoded = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    encoded
}
