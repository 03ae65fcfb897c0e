//! The guest's stdout and stderr, captured line by line into the module's log.

use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use verge_runtime::{ModuleLog, Stream};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// A partial line longer than this is written out as a line of its own.
const MAX_LINE: usize = 16 * 1024;

/// A WASI output stream that writes whole lines into a [`ModuleLog`].
#[derive(Clone, Debug)]
pub struct LogStream {
    log: ModuleLog,
    stream: Stream,
}

impl LogStream {
    pub fn new(log: ModuleLog, stream: Stream) -> Self {
        Self { log, stream }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            target: self.clone(),
            partial: Mutex::new(Vec::new()),
        })
    }
}

struct LineWriter {
    target: LogStream,
    partial: Mutex<Vec<u8>>,
}

impl LineWriter {
    fn emit(&self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.target.log.push(
            self.target.stream,
            String::from_utf8_lossy(line).into_owned(),
        );
    }

    fn write_bytes(&self, buf: &[u8]) {
        let mut partial = self
            .partial
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        partial.extend_from_slice(buf);
        let mut start = 0;
        while let Some(nl) = partial[start..].iter().position(|&b| b == b'\n') {
            self.emit(&partial[start..start + nl]);
            start += nl + 1;
        }
        partial.drain(..start);
        if partial.len() > MAX_LINE {
            self.emit(&partial);
            partial.clear();
        }
    }

    fn flush_partial(&self) {
        let mut partial = self
            .partial
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !partial.is_empty() {
            self.emit(&partial);
            partial.clear();
        }
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.flush_partial();
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.flush_partial();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_across_writes() {
        let log = ModuleLog::new(1 << 16);
        let writer = LineWriter {
            target: LogStream::new(log.clone(), Stream::Stdout),
            partial: Mutex::new(Vec::new()),
        };
        writer.write_bytes(b"hel");
        writer.write_bytes(b"lo\r\nwor");
        writer.write_bytes(b"ld\nrest");
        drop(writer);
        let lines: Vec<_> = log.tail(None).into_iter().map(|l| l.text).collect();
        assert_eq!(lines, ["hello", "world", "rest"]);
    }
}
