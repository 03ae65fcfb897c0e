//! containerd's content store: whether a blob is there (`Content.Info`), streaming one in
//! (`Content.Write`: WRITE chunks, then COMMIT with the expected digest and size, so
//! containerd verifies what it stores), reading a small one back (`Content.Read`), and setting
//! GC labels on one that is already there (`Content.Update`).

use std::collections::HashMap;

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::{
    Info, InfoRequest, ReadContentRequest, UpdateRequest, WriteAction, WriteContentRequest,
};
use containerd_client::tonic::Code;
use futures_util::StreamExt as _;

use crate::client::{Containerd, Lease};
use crate::error::{Error, PullError};
use crate::image::Descriptor;
use crate::registry::BlobStream;

/// What one `Content.Write` message carries, at most (the registry's chunks are gathered up to
/// it; runwasi uses the same).
const CHUNK: usize = 1 << 20;

/// The most [`Containerd::read_blob`] reads: manifests and configs are small.
const MAX_READ: i64 = 16 << 20;

/// What [`Containerd::write_blob`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Written {
    /// The blob was written and committed.
    Committed,
    /// It was there already (written meanwhile by another pull).
    Exists,
    /// Another writer holds the same ingest ref: try again later.
    Locked,
}

impl Containerd {
    fn content(&self) -> ContentClient<containerd_client::tonic::transport::Channel> {
        ContentClient::new(self.channel.clone())
            .max_decoding_message_size(usize::try_from(MAX_READ).unwrap_or(usize::MAX) + 4096)
    }

    /// The content store's record of `digest`, if it has the blob.
    pub(crate) async fn blob_info(&self, digest: &str) -> Result<Option<Info>, Error> {
        match self
            .content()
            .info(self.request(InfoRequest {
                digest: digest.to_owned(),
            }))
            .await
        {
            Ok(response) => Ok(response.into_inner().info),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(Error::call("Content.Info", status)),
        }
    }

    /// Streams `data` into the content store as `descriptor` under `lease`, with `labels`.
    /// containerd checks the digest and size at commit. A blob that is there already
    /// (AlreadyExists), or that another pull is writing (its ingest ref is locked:
    /// Unavailable), is not an error: see [`Written`].
    pub(crate) async fn write_blob(
        &self,
        lease: &Lease,
        descriptor: &Descriptor,
        mut data: BlobStream,
        labels: HashMap<String, String>,
    ) -> Result<Written, PullError> {
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(4);
        let requests = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|message| (message, rx))
        });
        let base = WriteContentRequest {
            action: WriteAction::Write as i32,
            r#ref: format!("verge-pull-{}", descriptor.digest),
            total: descriptor.size,
            expected: descriptor.digest.clone(),
            ..WriteContentRequest::default()
        };
        // The first message opens the writer; containerd answers every message, so the answers
        // are read while chunks are sent (an unread answer stream would stall the call).
        let first = WriteContentRequest {
            action: WriteAction::Stat as i32,
            ..base.clone()
        };
        if tx.send(first).await.is_err() {
            return Err(write_closed());
        }
        let mut client = self.content();
        let call = client.write(self.leased(requests, lease));
        let feed = async {
            let mut offset: i64 = 0;
            let mut buffer: Vec<u8> = Vec::with_capacity(CHUNK);
            let mut ended = false;
            while !ended {
                match data.next().await {
                    Some(chunk) => {
                        let chunk = chunk?;
                        buffer.extend_from_slice(&chunk);
                        if buffer.len() < CHUNK {
                            continue;
                        }
                    }
                    None => ended = true,
                }
                if buffer.is_empty() {
                    continue;
                }
                let bytes = std::mem::replace(&mut buffer, Vec::with_capacity(CHUNK));
                let len = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
                let message = WriteContentRequest {
                    offset,
                    data: bytes,
                    ..base.clone()
                };
                offset = offset.saturating_add(len);
                if tx.send(message).await.is_err() {
                    return Ok::<i64, PullError>(offset);
                }
            }
            let commit = WriteContentRequest {
                action: WriteAction::Commit as i32,
                offset,
                labels,
                ..base.clone()
            };
            let _ = tx.send(commit).await;
            drop(tx);
            Ok(offset)
        };
        let answers = async {
            let outcome = |status: containerd_client::tonic::Status| match status.code() {
                Code::AlreadyExists => Ok(Some(Written::Exists)),
                Code::Unavailable => Ok(Some(Written::Locked)),
                _ => Err(Error::call("Content.Write", status)),
            };
            let mut stream = match call.await {
                Ok(response) => response.into_inner(),
                Err(status) => return outcome(status),
            };
            let mut last = None;
            loop {
                match stream.message().await {
                    Ok(Some(answer)) => last = Some(answer),
                    Ok(None) => break,
                    Err(status) => return outcome(status),
                }
            }
            Ok::<_, Error>(
                last.filter(|a| a.action == WriteAction::Commit as i32)
                    .map(|_| Written::Committed),
            )
        };
        let (fed, answered) = tokio::join!(feed, answers);
        let answered = answered?;
        if let Some(other @ (Written::Exists | Written::Locked)) = answered {
            return Ok(other);
        }
        let offset = fed?;
        if answered.is_none() {
            return Err(PullError::Containerd(Error::Protocol {
                call: "Content.Write",
                message: format!(
                    "{} was not committed ({offset} of {} bytes sent)",
                    descriptor.digest, descriptor.size
                ),
            }));
        }
        Ok(Written::Committed)
    }

    /// Reads a whole blob (at most 16 MiB: manifests and configs).
    pub(crate) async fn read_blob(&self, digest: &str) -> Result<Vec<u8>, Error> {
        let mut stream = self
            .content()
            .read(self.request(ReadContentRequest {
                digest: digest.to_owned(),
                offset: 0,
                size: 0,
            }))
            .await
            .map_err(|s| Error::call("Content.Read", s))?
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| Error::call("Content.Read", s))?
        {
            bytes.extend_from_slice(&chunk.data);
            if i64::try_from(bytes.len()).unwrap_or(i64::MAX) > MAX_READ {
                return Err(Error::Protocol {
                    call: "Content.Read",
                    message: format!("{digest} is larger than {MAX_READ} bytes"),
                });
            }
        }
        Ok(bytes)
    }

    /// Sets `labels` on a blob that is there (the others are kept).
    pub(crate) async fn label_blob(
        &self,
        digest: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), Error> {
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        self.content()
            .update(self.request(UpdateRequest {
                info: Some(Info {
                    digest: digest.to_owned(),
                    labels,
                    ..Info::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths }),
            }))
            .await
            .map_err(|s| Error::call("Content.Update", s))?;
        Ok(())
    }
}

fn write_closed() -> PullError {
    PullError::Containerd(Error::Protocol {
        call: "Content.Write",
        message: "the request stream closed".into(),
    })
}
